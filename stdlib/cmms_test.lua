-- doppel.cmms: work orders as events, deduplicated (fixture: tests/lua/stdlib).
local test = require "doppel.test"
local cmms = require "doppel.cmms"

test.case("a work order is an event with asset, reason and evidence, raised once", function(t)
   t:plant("../tests/lua/stdlib/plant.lua")
   t:set("A.wear", 7.5)
   t:advance("1s")
   local wo = t:events("work_order")
   t:eq(#wo, 1)
   t:eq(wo[1].twin, "A")
   t:eq(wo[1].data.asset, "A")
   t:eq(wo[1].data.reason, "bearing wear")
   t:eq(wo[1].data.priority, 2)
   t:eq(wo[1].data.evidence, { vibration = 7.5, limit = 7 })
   t:eq(wo[1].data.id, "A-20260101000000-1")
   t:eq(t:state("A").last_new, true)
   -- The condition persists: deduplicated, no new event.
   t:set("A.wear", 7.9)
   t:advance("1h")
   t:eq(#t:events("work_order"), 1)
   t:eq(t:state("A").last_new, false)
   t:eq(t:state("A")._cmms.open["A/bearing wear"].repeats, 1)
   -- Closed: the next occurrence raises a new order.
   t:set("A.wear", -1)
   t:advance("1s")
   t:eq(#t:events("work_order_closed"), 1)
   t:set("A.wear", 8)
   t:advance("1s")
   wo = t:events("work_order")
   t:eq(#wo, 2)
   t:eq(wo[2].data.id, "A-20260101010002-2")
end)

test.case("bad arguments name what is wrong", function(t)
   t:raises(function() cmms.work_order() end, "cmms.work_order: expected a table of options")
   t:raises(function() cmms.work_order { reason = "x" } end, "asset must be a non-empty string")
   t:raises(function() cmms.work_order { asset = "P1" } end, "reason must be a non-empty string")
   t:raises(function() cmms.work_order { asset = "P1", reason = "x", priority = 0 } end,
      "priority must be an integer from 1 (urgent) to 4")
   t:raises(function() cmms.work_order { asset = "P1", reason = "x", evidence = 3 } end,
      "evidence must be a table")
   t:raises(function()
      cmms.work_order { asset = "P1", reason = "x", evidence = { f = print } }
   end, "evidence.f must hold numbers, strings, booleans or tables, not function")
   t:raises(function() cmms.work_order { asset = "P1", reason = "x", dedup_window = "never" } end,
      "dedup_window")
   t:raises(function() cmms.close(5) end, "cmms.close: id must be a string")
end)
