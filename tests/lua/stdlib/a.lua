-- Alarms and work orders driven by tags the test sets.
local alarm = require "doppel.alarm"
local cmms = require "doppel.cmms"

local high = alarm.limit { name = "level_high", high = 8, hysteresis = 0.5, on_delay = "10s",
                           off_delay = "5s", severity = "high", group = "tank", tag = "level_alarm",
                           suppress_when = function() return tags.running.value == false end }
local low = alarm.limit { name = "level_low", low = 1, severity = "low", group = "tank" }
local trip = alarm.discrete { name = "trip", severity = "critical", group = "tank" }

twin.on_change("level", function(v)
   high:update(v)
   low:update(v)
end)
twin.on_change("trip", function(v) trip:update(v) end)
twin.on_change("wear", function(v)
   if v > 7 then
      local id, new = cmms.work_order { asset = "A", reason = "bearing wear", priority = 2,
                                        evidence = { vibration = v, limit = 7 } }
      state.last_order, state.last_new = id, new
   end
   if v < 0 then cmms.close(state.last_order) end
end)
