--- Centrifugal pump twin.
---
--- Input tags (declared in the plant; those marked optional may be left out):
---   flow (m3/h), head (m), power (kW, shaft or motor input), vibration (mm/s RMS),
---   running (bool), speed (rpm, optional), suction_pressure (kPa absolute, optional),
---   temperature (liquid, C, optional: for the vapour pressure).
--- Derived tags:
---   efficiency (%)          hydraulic power over shaft power
---   bep_ratio               flow / best-efficiency flow at the current speed
---   expected_head (m)       the pump curve's head at this flow and speed
---   head_deviation (%)      measured head against the curve (wear shows as a falling head)
---   expected_power (kW)     the curve's power at this flow and speed
---   npsh_available (m), npsh_margin (ratio NPSHa / NPSHr), cavitation_risk (bool)
---   run_hours (h), starts, vibration_alarm (bool)
---   vibration_anomaly (0..1: rolling z-score of each sample, doppel.detect)
---   vibration_rul (d: time until the hourly vibration trend reaches vib_alarm, with
---   vibration_rul_low as the lower bound of its 90 % interval, doppel.predict)
---   health (0..1: the worst of vibration and head deviation against their limits)
---   recommended_speed (rpm), predicted_saving (kW)  with params.recommend, and
---   setpoint_outcome (the guard's verdict on the last write) with allow_write
--- Alarms (plant alarm list): vibration_high, cavitation_risk, low_efficiency.
--- Work orders (doppel.cmms): "vibration high" when vibration_high stays active
--- longer than wo_after; "vibration trend" when vibration_rul falls below rul_wo_days.
---
--- Params:
---   rated_flow (m3/h, required), rated_head (m; without it no curve: no expected_head,
---   head_deviation, expected_power, cavitation or recommendation), rated_power (kW)
---   shutoff_head (m, default 1.25 * rated_head), rated_speed (rpm, default 1480)
---   best_efficiency (0..1, default from the rated point: rho g Q H / P)
---   density (kg/m3, default 998), npshr (m at rated flow, default 3)
---   vapour_pressure (kPa, default from temperature, else 2.34: water at 20 C)
---   npsh_margin (default 1.3: minimum NPSHa / NPSHr, ANSI/HI 9.6.1 typical)
---   vib_alarm (mm/s, default 7.1: ISO 10816-3 zone C/D for medium machines)
---   vib_hysteresis (mm/s, default 0.6), vib_on_delay (default "30s")
---   min_efficiency (%, optional: low_efficiency alarm below it)
---   wo_after (default "10min"): vibration alarm duration that raises a work order
---   anomaly_window (samples, default 360), rul_wo_days (default 7), vib_good (mm/s,
---   default 2.8: ISO 10816-3 zone A/B)
---   recommend (optional table): { every = "15min", demand = m3/h or tag name,
---     static_head = m, min_speed = rpm, max_speed = rpm, horizon = "1h",
---     setpoint = "speed_sp" (a writable tag, written through the guard when
---     allow_write), allow_write = false, min_change = 10 (rpm) }
local alarm = require "doppel.alarm"
local cmms = require "doppel.cmms"
local detect = require "doppel.detect"
local predict = require "doppel.predict"
local sim = require "doppel.sim"

local G = 9.81

local function need(name)
   local v = params[name]
   if type(v) ~= "number" or v <= 0 then
      error(("params.%s is required: a number > 0"):format(name), 0)
   end
   return v
end

local rated_flow = need("rated_flow")
-- Without rated_head the pump curve is unknown: the curve-based tags,
-- cavitation risk and the what-if recommendation are left out.
local rated_head = params.rated_head ~= nil and need("rated_head") or nil
local rated_power = params.rated_power ~= nil and need("rated_power") or nil
local density = params.density or 998
local rated_speed = params.rated_speed or 1480
local curve
if rated_head then
   local best_eff = params.best_efficiency or (rated_power and
      math.min(0.95, density * G * (rated_flow / 3600) * rated_head / 1000 / rated_power)) or 0.75
   curve = sim.pump_curve {
      rated_flow = rated_flow, rated_head = rated_head, shutoff_head = params.shutoff_head,
      best_efficiency = best_eff, rated_speed = rated_speed, density = density,
      npshr = params.npshr,
   }
end

local function has(tag)
   return (pcall(function() return tags[tag] end))
end

twin.tag("efficiency", { unit = "%", history = 3600 })
twin.tag("bep_ratio", { history = 3600 })
if curve then
   twin.tag("expected_head", { unit = "m" })
   twin.tag("head_deviation", { unit = "%", history = 3600 })
   twin.tag("expected_power", { unit = "kW" })
end
twin.tag("run_hours", { unit = "h" })
twin.tag("starts")

local vibration = alarm.limit {
   name = "vibration_high",
   high = params.vib_alarm or 7.1,
   hysteresis = params.vib_hysteresis or 0.6,
   on_delay = params.vib_on_delay or "30s",
   severity = "high",
   message = "vibration above the ISO 10816 limit: check bearings and alignment",
   tag = "vibration_alarm",
}

local low_eff = params.min_efficiency and alarm.limit {
   name = "low_efficiency", low = params.min_efficiency, hysteresis = 2, on_delay = "10min",
   severity = "low", message = "efficiency below its minimum: impeller wear or recirculation",
   suppress_when = function() return tags.running.value ~= true end,
}

local wo_after = duration(params.wo_after or "10min")

twin.on_start(function()
   state.run_hours = state.run_hours or 0
   state.starts = state.starts or 0
   twin.set("run_hours", state.run_hours)
   twin.set("starts", state.starts)
end)

-- Tag objects read the live value on every access: look them up once.
local t_flow, t_head, t_power, t_running = tags.flow, tags.head, tags.power, tags.running
local has_speed = has("speed")
local t_speed = has_speed and tags.speed or nil
local function speed()
   if has_speed and t_speed.good then return t_speed.value end
   return rated_speed
end

twin.on_update({ "flow", "head", "power" }, function()
   if not (t_flow.good and t_head.good and t_power.good) or not t_running.value then return end
   local fv, hv, pv = t_flow.value, t_head.value, t_power.value
   local n = rated_speed
   if has_speed and t_speed.good then n = t_speed.value end
   -- Hydraulic efficiency: water power over shaft power (%).
   if not (pv <= 0.1 or fv <= 0) then
      local water_kw = density * G * (fv / 3600) * hv / 1000
      local eta = 100 * water_kw / pv
      tags.efficiency = eta
      tags.bep_ratio = fv / (rated_flow * n / rated_speed)
      if low_eff then low_eff:update(eta) end
   end
   if not curve then return end
   -- One curve evaluation gives both: the same values as curve:head and curve:power.
   local eh, ep = curve:head_power(fv > 0 and fv or 0, n) -- math.max(0, fv)
   tags.expected_head = eh
   if eh > 0 then tags.head_deviation = 100 * (hv - eh) / eh end
   tags.expected_power = ep
end)

-- Cavitation risk from the NPSH margin, when the suction pressure is measured.
if curve and has("suction_pressure") then
   twin.tag("npsh_available", { unit = "m" })
   twin.tag("npsh_margin")
   local margin_min = params.npsh_margin or 1.3
   local cav = alarm.discrete {
      name = "cavitation_risk", on_delay = "20s", off_delay = "20s", severity = "high",
      message = ("NPSH margin below %.2g: raise suction level or reduce flow"):format(margin_min),
      tag = "cavitation_risk",
      suppress_when = function() return tags.running.value ~= true end,
   }
   local has_temp = has("temperature")
   local function vapour_kpa()
      if params.vapour_pressure then return params.vapour_pressure end
      if has_temp and tags.temperature.good then
         -- Antoine equation for water (1..100 C), mmHg -> kPa.
         local tc = tags.temperature.value
         return 10 ^ (8.07131 - 1730.63 / (233.426 + tc)) * 0.133322
      end
      return 2.34
   end
   twin.on_update({ "suction_pressure", "flow" }, function()
      local ps, f = tags.suction_pressure, tags.flow
      if not (ps.good and f.good) then return end
      local npsha = (ps.value - vapour_kpa()) * 1000 / (density * G)
      local npshr = curve:npshr(math.max(0, f.value), speed())
      tags.npsh_available = npsha
      tags.npsh_margin = npsha / npshr
      cav:update(npsha / npshr < margin_min)
   end)
end

-- Predictive maintenance on vibration: an anomaly score per sample, and an
-- hourly trend towards the alarm limit giving the remaining useful life.
twin.tag("vibration_anomaly", { history = 3600 })
twin.tag("vibration_rul", { unit = "d" })
twin.tag("vibration_rul_low", { unit = "d" })
twin.tag("health", { history = 1440 })
local vib_limit = params.vib_alarm or 7.1
local anomaly = detect.zscore { size = params.anomaly_window or 360 }
local trend = predict.trend { span = "7d", model = "linear", min_points = 6 }
local indicators = { { name = "vibration", good = params.vib_good or 2.8, bad = vib_limit } }
if curve then indicators[2] = { name = "head_deviation", good = 0, bad = -15 } end
local health = predict.health_index { indicators = indicators, combine = "min" }
local vib_sum, vib_n = 0, 0

twin.on_change("vibration", function(v, tag)
   if not tag.good then return end
   vibration:update(v)
   tags.vibration_anomaly = anomaly:update(v)
   vib_sum, vib_n = vib_sum + v, vib_n + 1
end)

twin.every("1h", function()
   if vib_n > 0 then
      trend:push(vib_sum / vib_n, clock.now())
      vib_sum, vib_n = 0, 0
   end
   local r = trend:rul(vib_limit)
   if r then
      tags.vibration_rul = r.rul / 86400
      tags.vibration_rul_low = r.lower / 86400
      if r.rul / 86400 < (params.rul_wo_days or 7) then
         cmms.work_order {
            asset = twin.name, reason = "vibration trend", priority = 3,
            description = "vibration rising towards its alarm limit: plan a bearing inspection",
            evidence = { vibration = tags.vibration.value, limit = vib_limit,
                         rul_days = r.rul / 86400, rul_low_days = r.lower / 86400,
                         slope_per_day = r.slope * 86400, r2 = r.r2 },
         }
      end
   end
   local h = health:compute { vibration = tags.vibration.value,
                              head_deviation = curve and tags.head_deviation.value or nil }
   if h then tags.health = h end
end)

-- A vibration alarm that persists becomes a work order (deduplicated).
twin.every("1min", function()
   if vibration.active and vibration.since and clock.now() - vibration.since >= wo_after then
      cmms.work_order {
         asset = twin.name, reason = "vibration high", priority = 2,
         description = "vibration above its alarm limit for " .. (params.wo_after or "10min") ..
            ": inspect bearings, alignment and balance",
         evidence = { vibration = tags.vibration.value, limit = params.vib_alarm or 7.1,
                      since = clock.iso(vibration.since), run_hours = state.run_hours },
      }
   end
end)

twin.on_change("running", function(running)
   if running then
      state.starts = state.starts + 1
      twin.set("starts", state.starts)
   end
end)

-- Run hours advance once a minute while the pump runs.
twin.every("1min", function()
   if tags.running.value then
      state.run_hours = state.run_hours + 1 / 60
      twin.set("run_hours", state.run_hours)
   end
end)

-- What-if: the pump on its system curve at a candidate speed; the lowest
-- power speed that still meets the demand is recommended.
local rec = params.recommend
if rec ~= nil then
   if type(rec) ~= "table" then error("params.recommend must be a table", 0) end
   if not curve then error("params.recommend needs the pump curve: give params.rated_head", 0) end
   twin.tag("recommended_speed", { unit = "rpm", history = 100 })
   -- The guard's verdict on the last setpoint written: "done", "rejected: ...", ...
   if rec.allow_write then twin.tag("setpoint_outcome") end
   local function on_outcome(r)
      tags.setpoint_outcome = r.ok and r.outcome or (r.outcome .. ": " .. tostring(r.reason))
   end
   twin.tag("predicted_saving", { unit = "kW", history = 100 })
   local static = rec.static_head or 0.4 * rated_head
   local function demand()
      if type(rec.demand) == "string" then return twin.get(rec.demand) end
      return rec.demand or tags.flow.value
   end
   local model = {
      init = function()
         return { k = sim.system_k(tags.flow.value, tags.head.value, static) }
      end,
      step = function() end,
      outputs = function(x, u)
         local q = curve:operating_point(static, x.k, u.speed)
         return { flow = q, power = curve:power(q, u.speed) }
      end,
   }
   local function recommend()
      if not (tags.running.value and tags.flow.good and tags.head.good) then return end
      if tags.flow.value <= 1 or tags.head.value <= static then return end
      local need_flow = demand()
      if type(need_flow) ~= "number" then return end
      local r = sim.recommend {
         model = model, setpoint = "speed", current = speed(),
         bounds = { rec.min_speed or 0.6 * rated_speed, rec.max_speed or rated_speed },
         objective = function(p) return p.integral.power end,
         constraints = { function(p) return need_flow - p.mean.flow end },
         horizon = rec.horizon or "1h", step = rec.horizon or "1h",
         write = { tag = rec.setpoint or "speed_sp", allow = rec.allow_write == true,
                   current = rec.allow_write and twin.get(rec.setpoint or "speed_sp") or nil,
                   on_outcome = on_outcome },
         min_change = rec.min_change or 10,
      }
      if r.value == nil then
         -- Demand above what the pump gives at full speed: nothing to recommend.
         log.debug("no speed meets a demand of %.1f m3/h: %s", need_flow, r.reason)
         return
      end
      tags.recommended_speed = r.value
      local saving = (r.baseline.mean.power or 0) - r.predicted.mean.power
      tags.predicted_saving = saving
      twin.event("recommendation", {
         setpoint = "speed", value = math.floor(r.value + 0.5), current = speed(),
         demand = need_flow, predicted_flow = r.predicted.mean.flow,
         predicted_power = r.predicted.mean.power, saving_kw = saving,
         issued = r.issued, reason = r.reason, command = r.command,
      })
   end
   twin.every(rec.every or "15min", recommend)
end
