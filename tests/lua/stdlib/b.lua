-- Reads the plant's alarm list and acts on another twin's alarms.
local alarm = require "doppel.alarm"

twin.tag("active_alarms")
twin.tag("acked")
twin.every("1s", function()
   tags.active_alarms = #alarm.list { active = true }
end)
twin.on_change("level", function(v)
   -- level set to 100: acknowledge A's high alarm; 200: shelve it for 1 min.
   if v == 100 then twin.set("acked", alarm.ack("A.level_high", "operator") == true) end
   if v == 200 then alarm.shelve("A.level_high", "1min", "operator") end
end)
