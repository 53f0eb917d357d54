-- The whole demo plant (plant.lua) with its simulated devices, in virtual time.
local test = require "doppel.test"

-- The whole demo plant with its simulated devices: P101's vibration fault at
-- 14:00 raises the alarm after the 30 s on-delay and clears after the fault.
test.case("demo plant: P101 vibration alarm from 14:00", function(t)
   t:plant("plant.lua")
   t:advance_to("2026-01-01T13:59:00Z")
   t:eq(t:get("P101.vibration_alarm"), false)
   t:eq(#t:events("alarm"), 0)
   t:advance_to("2026-01-01T14:05:00Z")
   t:eq(t:get("P101.vibration_alarm"), true)
   local ev = t:events("alarm")
   t:eq(#ev, 1)
   t:eq(ev[1].twin, "P101")
   t:eq(ev[1].data.state, "active")
   t:ok(ev[1].ts >= t:now() - 300 and ev[1].ts <= t:now() - 240, "raised shortly after 14:00")
   t:advance_to("2026-01-01T14:45:00Z")
   t:eq(t:get("P101.vibration_alarm"), false)
   t:eq(t:events("alarm")[2].data.state, "cleared")
   t:eq(t:get("P102.vibration_alarm"), false)
   -- P101 runs all the time.
   t:near(t:get("P101.run_hours"), 14.75, 1 / 60)
end)

test.case("demo plant: P102 cycles and the station follows", function(t)
   t:plant("plant.lua")
   t:advance("9h")
   t:ok(t:get("P102.starts") >= 1, "P102 started at least once")
   local flow = t:get("station.total_flow")
   t:ok(flow > 80 and flow < 300, "a plausible total flow")
   t:near(t:get("P101.efficiency"), 70, 10)
end)
