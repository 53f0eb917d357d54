-- A tiny twin used by tests/lua/doppel_test_test.lua: sum = a + b, once per batch.
twin.tag("sum")
state.calls = 0
twin.on_update({ "a", "b" }, function(changed)
   state.calls = state.calls + 1
   local names = {}
   for i, tag in ipairs(changed) do names[i] = tag.name end
   state.last = table.concat(names, ",")
   tags.sum = (tags.a.value or 0) + (tags.b.value or 0)
end)
