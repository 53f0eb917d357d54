-- A tiny twin used by tests/lua/doppel_test_test.lua: doubles x and counts seconds.
twin.tag("double")
twin.tag("ticks")
twin.on_start(function() state.ticks = state.ticks or 0 end)
twin.on_change("x", function(v) tags.double = 2 * v end)
twin.every("1s", function()
   state.ticks = state.ticks + 1
   tags.ticks = state.ticks
   if state.ticks == 5 then twin.event("tick", { n = 5 }) end
end)
