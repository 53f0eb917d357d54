-- doppel.sim: PID, FOPDT, affinity laws, pump curves, whatif and recommend.
local test = require "doppel.test"
local sim = require "doppel.sim"

test.case("FOPDT step response matches the analytic solution", function(t)
   local m = sim.fopdt { gain = 2, tau = 10, dead_time = 5 }
   local y = {}
   for k = 1, 40 do y[k] = m:step(1, 1) end     -- y[k] is the output at t = k
   t:near(y[5], 0, 1e-12, "nothing before the dead time")
   for _, k in ipairs({ 6, 10, 15, 25, 40 }) do
      t:near(y[k], 2 * (1 - math.exp(-(k - 5) / 10)), 1e-9, "t = " .. k)
   end
   local z = sim.fopdt { gain = -1, tau = 0, y0 = 50, u0 = 10 }
   t:near(z:step(12, 0.5), 48, 1e-12, "no lag, no dead time")
end)

test.case("PID drives a FOPDT process to its setpoint without offset", function(t)
   local plant = sim.fopdt { gain = 1.5, tau = 20, dead_time = 2 }
   local pid = sim.pid { kp = 0.8, ki = 0.05, setpoint = 30, out_min = 0, out_max = 100 }
   local y = 0
   for _ = 1, 600 do y = plant:step(pid:update(y, 1), 1) end
   t:near(y, 30, 1e-3)
   t:near(pid.output, 20, 1e-2, "steady output = setpoint / gain")
end)

test.case("anti-windup: a saturated PID recovers at once", function(t)
   local pid = sim.pid { kp = 1, ki = 1, setpoint = 10, out_min = 0, out_max = 5 }
   for _ = 1, 100 do pid:update(0, 1) end
   t:eq(pid.output, 5)
   t:ok(pid.saturated)
   t:ok(pid.integral <= 5, "integral held at " .. pid.integral)
   -- The measurement overshoots: the output must leave the limit on the next step.
   t:ok(pid:update(12, 1) < 5, "no windup")
   -- Reverse acting: output rises when the measurement is above the setpoint.
   local cool = sim.pid { kp = 2, setpoint = 20, reverse = true }
   t:near(cool:update(25, 1), 10, 1e-12)
   -- Bumpless: after reset(out) the next output continues from out.
   local p = sim.pid { kp = 1, ki = 0.1, setpoint = 50 }
   p:update(40, 1)
   p:reset(70)
   t:near(p:update(40, 1e-9), 70, 1e-6)
end)

test.case("affinity laws scale flow, head and power", function(t)
   local r = sim.affinity({ speed = 1480, flow = 130, head = 48, power = 22 }, 1184)
   t:near(r.flow, 104, 1e-9)
   t:near(r.head, 48 * 0.64, 1e-9)
   t:near(r.power, 22 * 0.512, 1e-9)
   local fan = sim.affinity({ speed = 1, pressure = 1000, power = 5 }, 0.5)
   t:near(fan.pressure, 250, 1e-9)
   t:near(fan.power, 0.625, 1e-12)
end)

test.case("pump curve: rated point, shut-off, operating point", function(t)
   local c = sim.pump_curve { rated_flow = 130, rated_head = 48, shutoff_head = 60,
                              best_efficiency = 0.78, rated_speed = 1480 }
   t:near(c:head(0), 60, 1e-9)
   t:near(c:head(130), 48, 1e-9)
   t:near(c:efficiency(130), 0.78, 1e-12)
   t:near(c:efficiency(104, 1184), 0.78, 1e-12, "the BEP moves with speed")
   t:near(c:head(104, 1184), 48 * 0.64, 1e-9, "affinity at the BEP")
   local k = sim.system_k(130, 48, 20)
   local q, h = c:operating_point(20, k, 1480)
   t:near(q, 130, 1e-9)
   t:near(h, 48, 1e-9)
   t:eq((c:operating_point(70, k, 1480)), 0, "cannot lift above shut-off")
   t:near(c:power(130), 998 * 9.81 * (130 / 3600) * 48 / 1000 / 0.78, 1e-9)
   t:ok(c:npshr(150) > c:npshr(130), "NPSHr grows with flow")
   for _, flow in ipairs({ 0, 20, 104, 130, 170, 400 }) do
      for _, n in ipairs({ 0, 900, 1184, 1480, 1600 }) do
         local head, power = c:head_power(flow, n)
         t:eq(head, c:head(flow, n), "head_power head at " .. flow .. ", " .. n)
         t:eq(power, c:power(flow, n), "head_power power at " .. flow .. ", " .. n)
      end
   end
   t:eq(select(2, c:head_power(130)), c:power(130))
end)

-- A tank filled by a pump: level rises with (inflow - outflow).
local tank = {
   init = function() return { level = 2.0 } end,
   step = function(x, u, dt) x.level = x.level + (u.inflow - 10) * dt / 3600 / 5 end,
   outputs = function(x, u) return { level = x.level, power = 0.5 * u.inflow } end,
}

test.case("whatif forks the model and runs candidates forward in virtual time", function(t)
   local t0 = t:now()
   local r = sim.whatif(tank, { { inflow = 10 }, { inflow = 15 } },
      { horizon = "1h", step = "1min", start = t0 })
   t:eq(#r, 2)
   t:near(r[1].final.level, 2.0, 1e-12)
   t:near(r[2].final.level, 3.0, 1e-9)
   t:near(r[2].max.level, 3.0, 1e-9)
   t:near(r[2].min.level, 2.0, 1e-12)
   t:near(r[2].integral.power, 7.5, 1e-9, "kW over 1 h is kWh")
   t:near(r[2].mean.power, 7.5, 1e-9)
   t:eq(#r[2].series.t, 61)
   t:eq(r[2].series.t[1], t0)
   t:near(r[2].series.t[61], t0 + 3600, 1e-6)
   t:near(r[2].series.level[31], 2.5, 1e-9)
   t:eq(t:now(), t0, "no time passed")
   -- One candidate in, one prediction out; inputs may follow a schedule.
   local one = sim.whatif(tank, { inflow = function(tt) return tt < t0 + 1800 and 20 or 10 end },
      { horizon = 3600, step = 60, series = false, start = t0 })
   t:near(one.final.level, 3.0, 1e-9)
   t:eq(one.series, nil)
end)

test.case("recommend finds the lowest power speed that still delivers the demand", function(t)
   local curve = sim.pump_curve { rated_flow = 130, rated_head = 48, shutoff_head = 60,
                                  best_efficiency = 0.78, rated_speed = 1480 }
   local static, k = 20, sim.system_k(130, 48, 20)
   local pump = {
      step = function() end,
      outputs = function(_, u)
         local q = curve:operating_point(static, k, u.speed)
         return { flow = q, power = curve:power(q, u.speed) }
      end,
   }
   local rec = sim.recommend {
      model = pump, setpoint = "speed", bounds = { 1000, 1480 }, current = 1480,
      objective = function(p) return p.mean.power end,
      constraints = { function(p) return 100 - p.mean.flow end },
      horizon = "10min", step = "1min",
      write = { tag = "speed_sp", allow = false },
   }
   -- Flow 100 m3/h needs (H0 r^2 - static) = (c + k) * 100^2.
   local c = (60 - 48) / 130 ^ 2
   local expect = 1480 * math.sqrt(((c + k) * 100 ^ 2 + static) / 60)
   t:near(rec.value, expect, 0.5)
   t:near(rec.predicted.mean.flow, 100, 0.05)
   t:ok(rec.improvement > 0, "uses less power than the current speed")
   t:eq(rec.issued, false)
   t:eq(rec.reason, "recommendation only (writing not allowed)")
   t:eq(#t:commands(), 0)
   local grid = sim.recommend { model = pump, setpoint = "speed", bounds = { 1000, 1480 },
      method = "grid", points = 49, objective = function(p) return p.mean.power end,
      constraints = { function(p) return 100 - p.mean.flow end }, horizon = 60, step = 60 }
   t:ok(grid.value >= expect and grid.value < expect + 10, "grid " .. grid.value)
   -- Writing allowed, but the change is below min_change: nothing is issued.
   local small = sim.recommend { model = pump, setpoint = "speed", bounds = { 1000, 1480 },
      objective = function(p) return p.mean.power end,
      constraints = { function(p) return 100 - p.mean.flow end }, horizon = 60, step = 60,
      min_change = 10, write = { tag = "speed_sp", allow = true, current = expect + 3 } }
   t:eq(small.issued, false)
   t:eq(small.reason, "change below min_change")
   -- Allowed and large enough, but outside a twin there is no twin.write.
   local nowrite = sim.recommend { model = pump, setpoint = "speed", bounds = { 1000, 1480 },
      objective = function(p) return p.mean.power end,
      constraints = { function(p) return 100 - p.mean.flow end }, horizon = 60, step = 60,
      min_change = 10, write = { tag = "speed_sp", allow = true, current = 1480 } }
   t:eq(nowrite.issued, false)
   t:eq(nowrite.reason, "twin.write is not available here (twin scripts only)")
   local none = sim.recommend { model = pump, setpoint = "speed", bounds = { 1000, 1100 },
      objective = function(p) return p.mean.power end,
      constraints = { function(p) return 200 - p.mean.flow end }, horizon = 60, step = 60 }
   t:eq(none.value, nil)
   t:eq(none.reason, "no feasible setpoint in [1000, 1100]")
end)

test.case("bad arguments name what is wrong", function(t)
   t:raises(function() sim.pid {} end, "sim.pid: kp is required")
   t:raises(function() sim.pid { kp = 1, ki = -1 } end, "sim.pid: ki must be a number >= 0")
   t:raises(function() sim.pid { kp = 1, out_min = 5, out_max = 1 } end, "out_max must be greater")
   local pid = sim.pid { kp = 1 }
   t:raises(function() pid:update(1, 0) end, "pid:update: dt must be a number > 0")
   t:raises(function() pid:update("x", 1) end, "pid:update: pv must be a finite number")
   t:raises(function() sim.fopdt { gain = 1 } end, "sim.fopdt: tau is required")
   t:raises(function() sim.fopdt { gain = 1, tau = -2 } end, "tau must be a number >= 0")
   t:raises(function() sim.affinity({ flow = 1 }, 2) end, "sim.affinity: ref.speed must be > 0")
   t:raises(function() sim.affinity({ speed = 1 }, -2) end, "speed must be a number >= 0")
   t:raises(function() sim.pump_curve { rated_flow = 1 } end,
      "sim.pump_curve: rated_head is required")
   t:raises(function() sim.pump_curve { rated_flow = 1, rated_head = 10, shutoff_head = 5 } end,
      "shutoff_head must be a number > rated_head")
   local curve = sim.pump_curve { rated_flow = 130, rated_head = 48 }
   t:raises(function() curve:head(-1) end, "pump_curve:head: q must be a number >= 0")
   t:raises(function() curve:power(0 / 0) end, "pump_curve:power: q must be a number >= 0")
   t:raises(function() curve:efficiency(math.huge) end, "pump_curve:efficiency: q must be")
   t:raises(function() curve:head_power("10") end, "pump_curve:head_power: q must be")
   t:raises(function() curve:head_power(10, -5) end,
      "pump_curve:head_power: speed must be a number >= 0")
   t:raises(function() curve:power(10, "fast") end, "pump_curve:power: speed must be")
   t:raises(function() sim.whatif({}, {}) end, "sim.whatif: model.step must be a function")
   t:raises(function() sim.whatif(tank, 5) end, "candidates must be a table")
   t:raises(function() sim.whatif(tank, {}, { horizon = "forever" }) end, "sim.whatif: horizon")
   t:raises(function() sim.whatif(tank, {}, { step = 0 }) end, "step must be > 0")
   t:raises(function()
      sim.whatif({ step = function() end, outputs = function() return { x = "a" } end }, {})
   end, "model.outputs returned x = a (expected a number)")
   t:raises(function() sim.recommend { model = tank, setpoint = "inflow", bounds = { 2, 1 } } end,
      "bounds must be { lo, hi } with lo < hi")
   t:raises(function()
      sim.recommend { model = tank, setpoint = "inflow", bounds = { 1, 2 },
                      objective = function() return 0 end, write = { tag = "x" } }
   end, "write.allow must be a boolean")
end)
