--- Centrifugal pump twin.
---
--- Inputs (tags declared in the plant): flow (m3/h), head (m), power (kW),
--- vibration (mm/s RMS), running (bool).
--- Derived tags: efficiency (%), bep_ratio (flow / rated flow), run_hours (h),
--- starts, vibration_alarm (bool).
---
--- Params:
---   rated_flow (m3/h), rated_head (m), rated_power (kW)
---   density (kg/m3, default 998)
---   vib_alarm (mm/s, default 7.1: ISO 10816-3 zone C/D for medium machines)
---   vib_hysteresis (mm/s, default 0.6), vib_on_delay (default "30s")
local alarm = require "doppel.alarm"

local G = 9.81
local density = params.density or 998
local rated_flow = assert(params.rated_flow, "params.rated_flow is required")

twin.tag("efficiency", { unit = "%", history = 3600 })
twin.tag("bep_ratio", { history = 3600 })
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

twin.on_start(function()
   state.run_hours = state.run_hours or 0
   state.starts = state.starts or 0
   twin.set("run_hours", state.run_hours)
   twin.set("starts", state.starts)
end)

--- Hydraulic efficiency: water power over shaft power.
local function efficiency(flow, head, power)
   if power <= 0.1 or flow <= 0 then return nil end
   local water_kw = density * G * (flow / 3600) * head / 1000
   return 100 * water_kw / power
end

-- Tag objects read the live value on every access: look them up once.
local f, h, p, run_tag = tags.flow, tags.head, tags.power, tags.running
twin.on_change({ "flow", "head", "power" }, function()
   if not (f.good and h.good and p.good) or not run_tag.value then return end
   local eta = efficiency(f.value, h.value, p.value)
   if eta then
      tags.efficiency = eta
      tags.bep_ratio = f.value / rated_flow
   end
end)

twin.on_change("vibration", function(v, tag)
   if tag.good then vibration:update(v) end
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
