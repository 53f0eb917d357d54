-- A twin used by tests/lua/doppel_test_test.lua: asks for a setpoint of
-- twice its input on every change, and records the guard's verdict.
twin.on_change("x", function(v)
   twin.write("sp", 2 * v, function(res)
      state.last = res.outcome
   end)
end)
