-- Tests of the centrifugal pump twin class (twins/centrifugal_pump.lua), one
-- pump on its own with tags fed by the test: performance against its curve,
-- cavitation, vibration alarm and work order, counters, what-if.
local test = require "doppel.test"

local function pump(t, extra_params, extra_tags)
   local params = { rated_flow = 130, rated_head = 48, rated_power = 22, shutoff_head = 60,
                    vib_alarm = 7.1 }
   for k, v in pairs(extra_params or {}) do params[k] = v end
   local tg = {
      flow = { unit = "m3/h" }, head = { unit = "m" }, power = { unit = "kW" },
      vibration = { unit = "mm/s" }, running = {},
   }
   for k, v in pairs(extra_tags or {}) do tg[k] = v end
   t:twin { name = "P1", class = "centrifugal_pump", params = params, tags = tg }
end

local function operate(t, flow, head, power)
   t:set("P1.running", true)
   t:set("P1.flow", flow)
   t:set("P1.head", head)
   t:set("P1.power", power)
   t:set("P1.vibration", 2.0)
   t:advance("1s")
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
   local t0 = t:now()
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
   -- The on-delay is re-checked by a timer: active exactly 30 s after the first sample.
   t:eq(ev[1].ts, t0 + 30)
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

test.case("efficiency, BEP ratio and head against the curve", function(t)
   pump(t)
   operate(t, 130, 45, 22)
   local hyd = 998 * 9.81 * (130 / 3600) * 45 / 1000
   t:near(t:get("P1.efficiency"), 100 * hyd / 22, 1e-6)
   t:near(t:get("P1.bep_ratio"), 1, 1e-12)
   t:near(t:get("P1.expected_head"), 48, 1e-9)
   t:near(t:get("P1.head_deviation"), 100 * (45 - 48) / 48, 1e-9)
   t:ok(t:get("P1.expected_power") > 20 and t:get("P1.expected_power") < 23)
end)

test.case("speed moves the curve by the affinity laws", function(t)
   pump(t, { rated_speed = 1480 }, { speed = { unit = "rpm" } })
   t:set("P1.speed", 1184)
   operate(t, 104, 30.72, 11.3)
   t:near(t:get("P1.bep_ratio"), 1, 1e-12)
   t:near(t:get("P1.expected_head"), 48 * 0.64, 1e-9)
   t:near(t:get("P1.head_deviation"), 0, 1e-9)
end)

test.case("vibration alarm after its on-delay; a lasting one raises a work order", function(t)
   pump(t, { vib_alarm = 7.1, wo_after = "5min" })
   operate(t, 120, 46, 20)
   t:set("P1.vibration", 9.5)
   t:advance("29s")
   t:eq(t:get("P1.vibration_alarm"), false)
   t:advance("2s")
   t:eq(t:get("P1.vibration_alarm"), true)
   local ev = t:events("alarm")
   t:eq(#ev, 1)
   t:eq(ev[1].data.name, "vibration_high")
   t:eq(ev[1].data.severity, "high")
   t:eq(#t:events("work_order"), 0)
   t:advance("6min")
   local wo = t:events("work_order")
   t:eq(#wo, 1)
   t:eq(wo[1].data.reason, "vibration high")
   t:eq(wo[1].data.evidence.vibration, 9.5)
   t:advance("1h")
   t:eq(#t:events("work_order"), 1, "deduplicated")
   -- Back below the limit minus hysteresis: cleared.
   t:set("P1.vibration", 6.0)
   t:advance("1s")
   t:eq(t:get("P1.vibration_alarm"), false)
   t:eq(#t:events("alarm"), 2)
end)

test.case("cavitation risk from the NPSH margin", function(t)
   pump(t, { npshr = 4, npsh_margin = 1.3, vapour_pressure = 2.34 },
        { suction_pressure = { unit = "kPa" } })
   operate(t, 130, 46, 21)
   -- 101.3 kPa abs: NPSHa = (101.3 - 2.34) / (998 * 9.81) * 1000 = 10.1 m; margin 2.5.
   t:set("P1.suction_pressure", 101.3)
   t:advance("1s")
   t:near(t:get("P1.npsh_available"), (101.3 - 2.34) * 1000 / (998 * 9.81), 1e-9)
   t:near(t:get("P1.npsh_margin"), (101.3 - 2.34) * 1000 / (998 * 9.81) / 4, 1e-9)
   t:eq(t:get("P1.cavitation_risk"), false)
   -- Suction drawn down to 60 kPa abs: margin 1.47, still fine; 50 kPa: 1.22, at risk.
   t:set("P1.suction_pressure", 60)
   t:advance("30s")
   t:eq(t:get("P1.cavitation_risk"), false)
   t:set("P1.suction_pressure", 50)
   t:advance("19s")
   t:eq(t:get("P1.cavitation_risk"), false, "on-delay")
   t:advance("2s")
   t:eq(t:get("P1.cavitation_risk"), true)
   local ev = t:events("alarm")
   t:eq(ev[#ev].data.name, "cavitation_risk")
end)

test.case("a whatif recommendation of a lower speed for a lower demand", function(t)
   pump(t, { recommend = { every = "15min", demand = 100, static_head = 20, allow_write = false } })
   operate(t, 130, 48, 22)
   t:advance("15min")
   local ev = t:events("recommendation")
   t:eq(#ev, 1)
   local r = ev[1].data
   t:near(r.predicted_flow, 100, 0.2)
   t:ok(r.value < 1480 and r.value > 1000, "speed " .. r.value)
   t:ok(r.saving_kw > 3, "saving " .. r.saving_kw)
   t:eq(r.issued, false)
   t:eq(r.reason, "recommendation only (writing not allowed)")
   t:near(t:get("P1.recommended_speed"), r.value, 0.5)
   t:eq(#t:commands(), 0)
end)

test.case("a bad rated_head is refused naming the param", function(t)
   t:raises(function()
      t:twin { name = "P1", class = "centrifugal_pump",
               params = { rated_flow = 130, rated_head = -4 },
               tags = { flow = {}, head = {}, power = {}, vibration = {}, running = {} } }
      t:get("P1.flow")
   end, "params.rated_head is required: a number > 0")
end)

test.case("a shut-off head below the rated head is refused", function(t)
   t:raises(function()
      t:twin { name = "P1", class = "centrifugal_pump",
               params = { rated_flow = 130, rated_head = 48, rated_power = 22, shutoff_head = 40 },
               tags = { flow = {}, head = {}, power = {}, vibration = {}, running = {} } }
      t:get("P1.flow")
   end, "shutoff_head must be a number > rated_head")
end)

test.case("a rising vibration trend gives its remaining life and a work order", function(t)
   pump(t, { rul_wo_days = 7 })
   t:set("P1.running", true)
   -- 2.0 mm/s rising 0.1 mm/s per hour: 7.1 is reached 51 h after the start.
   for h = 0, 11 do
      t:set("P1.vibration", 2.0 + 0.1 * h)
      t:advance("1h")
   end
   -- Hourly means are pushed at the end of each hour: 2.0 at 1 h, ..., 3.1 at 12 h.
   t:near(t:get("P1.vibration_rul"), (7.1 - 3.1) / 0.1 / 24, 0.01)
   t:ok(t:get("P1.vibration_rul_low") <= t:get("P1.vibration_rul"))
   local wo = t:events("work_order")
   t:eq(#wo, 1)
   t:eq(wo[1].data.reason, "vibration trend")
   t:near(wo[1].data.evidence.slope_per_day, 2.4, 1e-6)
   local h = t:get("P1.health")
   t:near(h, 1 - (3.1 - 2.8) / (7.1 - 2.8), 1e-9, "health from vibration alone")
end)

test.case("a vibration spike scores as an anomaly", function(t)
   pump(t, { anomaly_window = 60 })
   t:set("P1.running", true)
   for i = 1, 60 do
      t:set("P1.vibration", 2.0 + 0.05 * (i % 3))
      t:advance("10s")
   end
   t:ok(t:get("P1.vibration_anomaly") < 0.9, "ordinary samples")
   t:set("P1.vibration", 5.0)
   t:advance("10s")
   t:ok(t:get("P1.vibration_anomaly") > 0.99, "spike " .. t:get("P1.vibration_anomaly"))
end)

test.case("an allowed recommendation is issued through the guard, once per change", function(t)
   pump(t, { recommend = { every = "15min", demand = 100, static_head = 20, allow_write = true,
                           setpoint = "speed_sp" } },
        { speed_sp = { writable = true, min = 900, max = 1480, unit = "rpm" } })
   operate(t, 130, 48, 22)
   t:advance("15min")
   t:advance("1s")
   t:eq(t:get("P1.setpoint_outcome"), "done")
   t:near(t:get("P1.speed_sp"), t:get("P1.recommended_speed"), 1e-9)
   local r = t:events("recommendation")[1].data
   t:eq(r.issued, true)
   t:eq(r.reason, "issued through the guard")
   t:eq(r.command, 1)
   -- Same conditions 15 min later: the same speed, below min_change: nothing issued.
   t:advance("15min")
   t:eq(t:events("recommendation")[2].data.reason, "change below min_change")
   t:eq(t:events("recommendation")[2].data.command, nil)
end)

test.case("a setpoint outside the guard's limits is rejected, nothing written", function(t)
   pump(t, { recommend = { every = "15min", demand = 100, static_head = 20, allow_write = true,
                           setpoint = "speed_sp", min_speed = 800 } },
        { speed_sp = { writable = true, min = 1400, max = 1480, unit = "rpm" } })
   operate(t, 130, 48, 22)
   t:advance("15min")
   t:advance("1s")
   local outcome = t:get("P1.setpoint_outcome")
   t:ok(outcome:find("rejected: min:", 1, true) == 1, outcome)
   t:eq(t:get("P1.speed_sp"), nil)
end)
