-- Tests of the centrifugal pump twin class (twins/centrifugal_pump.lua), one
-- pump on its own with tags fed by the test. Run: doppel test twins/
local test = require "doppel.test"

local function pump(t, params)
   local p = { rated_flow = 130, rated_head = 48, rated_power = 22, vib_alarm = 7.1 }
   for k, v in pairs(params or {}) do p[k] = v end
   t:twin { name = "P1", class = "centrifugal_pump", params = p,
            tags = { flow = { unit = "m3/h" }, head = { unit = "m" }, power = { unit = "kW" },
                     vibration = { unit = "mm/s" }, running = {} } }
end

-- Water power over shaft power, computed by hand for the numbers below:
-- 998 kg/m3 * 9.81 m/s2 * (120/3600) m3/s * 46 m = 15.012 kW; / 20.5 kW = 73.23 %.
test.case("efficiency and BEP ratio from flow, head and power", function(t)
   pump(t)
   t:set("P1.running", true)
   t:set("P1.flow", 120)
   t:set("P1.head", 46)
   t:set("P1.power", 20.5)
   t:near(t:get("P1.efficiency"), 73.23, 0.01)
   t:near(t:get("P1.bep_ratio"), 120 / 130, 1e-9)
   t:eq(t:tag("P1.efficiency").unit, "%")
   -- Efficiency is inversely proportional to shaft power.
   t:set("P1.power", 41)
   t:near(t:get("P1.efficiency"), 73.23 / 2, 0.01)
end)

test.case("no efficiency while stopped or with a bad sample", function(t)
   pump(t)
   t:set("P1.running", false)
   t:set("P1.flow", 120)
   t:set("P1.head", 46)
   t:set("P1.power", 20.5)
   t:eq(t:get("P1.efficiency"), nil, "stopped pump")
   t:set("P1.running", true)
   t:set("P1.power", 20.4, "bad")
   t:eq(t:get("P1.efficiency"), nil, "bad power sample")
   t:set("P1.power", 20.5)
   t:near(t:get("P1.efficiency"), 73.23, 0.01)
   -- Near-zero power gives no value rather than a huge one.
   t:set("P1.power", 0.05)
   t:near(t:get("P1.efficiency"), 73.23, 0.01, "kept from before")
end)

test.case("run hours advance only while running", function(t)
   pump(t)
   t:eq(t:get("P1.run_hours"), 0)
   t:set("P1.running", true)
   t:advance("2h")
   t:near(t:get("P1.run_hours"), 2, 1e-9)
   t:set("P1.running", false)
   t:advance("3h")
   t:near(t:get("P1.run_hours"), 2, 1e-9)
   t:set("P1.running", true)
   t:advance("30min")
   t:near(t:get("P1.run_hours"), 2.5, 1e-9)
   t:near(t:state("P1").run_hours, 2.5, 1e-9, "kept in state")
end)

test.case("starts count off-to-on transitions", function(t)
   pump(t)
   t:eq(t:get("P1.starts"), 0)
   t:set("P1.running", true)
   t:set("P1.running", true) -- no change, no start
   t:advance("1h")
   t:set("P1.running", false)
   t:advance("1h")
   t:set("P1.running", true)
   t:eq(t:get("P1.starts"), 2)
   t:eq(t:state("P1").starts, 2)
end)

test.case("vibration alarm waits for the on-delay", function(t)
   pump(t)
   t:set("P1.vibration", 9.5)
   t:advance("20s")
   t:set("P1.vibration", 9.6)
   t:eq(t:get("P1.vibration_alarm"), false, "20 s beyond the limit is not enough")
   t:advance("15s")
   t:set("P1.vibration", 9.7)
   t:eq(t:get("P1.vibration_alarm"), true, "35 s beyond the limit")
   local ev = t:events("alarm")
   t:eq(#ev, 1)
   t:eq(ev[1].twin, "P1")
   t:eq(ev[1].data.name, "vibration_high")
   t:eq(ev[1].data.state, "active")
   t:eq(ev[1].data.limit, 7.1)
   t:eq(ev[1].ts, t:now())
end)

test.case("a dip below the limit restarts the on-delay", function(t)
   pump(t)
   t:set("P1.vibration", 9.5)
   t:advance("20s")
   t:set("P1.vibration", 5.0)
   t:advance("5s")
   t:set("P1.vibration", 9.5)
   t:advance("20s")
   t:set("P1.vibration", 9.6)
   t:eq(t:get("P1.vibration_alarm"), false)
   t:eq(#t:events("alarm"), 0)
end)

test.case("vibration alarm clears only below the hysteresis band", function(t)
   pump(t, { vib_on_delay = 0 })
   t:set("P1.vibration", 8)
   t:eq(t:get("P1.vibration_alarm"), true)
   t:set("P1.vibration", 6.8) -- below 7.1 but inside the 0.6 band
   t:eq(t:get("P1.vibration_alarm"), true, "inside the hysteresis band")
   t:set("P1.vibration", 6.4)
   t:eq(t:get("P1.vibration_alarm"), false, "below 7.1 - 0.6")
   local states = {}
   for _, e in ipairs(t:events("alarm")) do states[#states + 1] = e.data.state end
   t:eq(states, { "active", "cleared" })
end)

test.case("bad vibration samples are ignored by the alarm", function(t)
   pump(t, { vib_on_delay = 0 })
   t:set("P1.vibration", 12, "bad")
   t:eq(t:get("P1.vibration_alarm"), false)
end)

test.case("rated_flow is required", function(t)
   t:twin { name = "P1", class = "centrifugal_pump", params = {},
            tags = { flow = {}, head = {}, power = {}, vibration = {}, running = {} } }
   t:raises(function() t:get("P1.flow") end, "params.rated_flow is required")
end)
