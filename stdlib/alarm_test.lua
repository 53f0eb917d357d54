-- doppel.alarm on the plant's alarm list (fixture: tests/lua/stdlib).
local test = require "doppel.test"
local alarm = require "doppel.alarm"

local PLANT = "../tests/lua/stdlib/plant.lua"

local function states(t)
   local out = {}
   for _, e in ipairs(t:events("alarm")) do out[#out + 1] = e.data.name .. ":" .. e.data.state end
   return out
end

test.case("a limit alarm waits for its on-delay and clears after its off-delay", function(t)
   t:plant(PLANT)
   t:set("A.level", 9)
   t:advance("9s")
   t:eq(#t:events("alarm"), 0, "still in the on-delay")
   t:advance("2s")
   local ev = t:events("alarm")
   t:eq(#ev, 1)
   t:eq(ev[1].twin, "A")
   t:eq(ev[1].data.name, "level_high")
   t:eq(ev[1].data.state, "active")
   t:eq(ev[1].data.severity, "high")
   t:eq(ev[1].data.priority, 2)
   t:eq(ev[1].data.first_out, true)
   t:eq(t:get("A.level_alarm"), true)
   -- Inside the hysteresis band: stays active.
   t:set("A.level", 7.8)
   t:advance("30s")
   t:eq(#t:events("alarm"), 1)
   t:set("A.level", 7)
   t:advance("4s")
   t:eq(#t:events("alarm"), 1, "off-delay")
   t:advance("2s")
   t:eq(states(t), { "level_high:active", "level_high:cleared" })
   t:eq(t:get("A.level_alarm"), false)
end)

test.case("another twin lists, acknowledges and shelves; shelving expires", function(t)
   t:plant(PLANT)
   t:set("A.level", 9)
   t:advance("12s")
   t:eq(t:get("B.active_alarms"), 1)
   t:set("B.level", 100)
   t:advance("1s")
   t:eq(t:get("B.acked"), true)
   t:set("B.level", 200)
   t:advance("1s")
   t:advance("60s")
   t:eq(states(t), { "level_high:active", "level_high:acknowledged", "level_high:shelved",
                     "level_high:unshelved" })
   local ev = t:events("alarm")
   t:eq(ev[2].data.by, "twin:B (for operator)")
   t:eq(ev[4].data.by, "expiry")
end)

test.case("first-out, discrete alarms and suppression", function(t)
   t:plant(PLANT)
   t:set("A.trip", true)
   t:set("A.level", 0.5)
   t:advance("1s")
   local ev = t:events("alarm")
   t:eq(#ev, 2)
   t:eq(ev[1].data.name, "trip")
   t:eq(ev[1].data.first_out, true)
   t:eq(ev[1].data.severity, "critical")
   t:eq(ev[1].data.priority, 1)
   t:eq(ev[2].data.name, "level_low")
   t:eq(ev[2].data.first_out, false)
   -- A stopped tank's high level is suppressed by design.
   t:set("A.running", false)
   t:set("A.level", 9)
   t:advance("20s")
   -- (suppress_when is evaluated at each update; level_high updates before level_low)
   t:eq(states(t), { "trip:active", "level_low:active", "level_high:suppressed",
                     "level_low:cleared", "level_high:active" })
end)

test.case("bad arguments name what is wrong", function(t)
   t:raises(function() alarm.limit "x" end, "alarm.limit: expected a table of options")
   t:raises(function() alarm.limit { high = 1 } end, "alarm.limit: name must be a non-empty string")
   t:raises(function() alarm.limit { name = "a.b", high = 1 } end, "without dots")
   t:raises(function() alarm.limit { name = "a", high = 1, severity = "urgent" } end,
      "severity must be low, medium, high or critical")
   t:raises(function() alarm.limit { name = "a", high = 1, priority = 9 } end,
      "priority must be an integer from 1")
   t:raises(function() alarm.limit { name = "a", high = 1, on_delay = "soon" } end,
      "alarm.limit: on_delay")
   t:raises(function() alarm.limit { name = "a", high = 1, hysteresis = -1 } end,
      "hysteresis must be a number >= 0")
   t:raises(function() alarm.limit { name = "a", high = "x" } end, "high must be a number")
   t:raises(function() alarm.limit { name = "a", high = 1, suppress_when = true } end,
      "suppress_when must be a function")
   t:raises(function() alarm.list(5) end, "alarm.list: filter must be a table")
   t:raises(function() alarm.ack(5) end, "alarm.ack: name must be")
end)
