--- Load/unload air compressor twin.
---
--- Input tags: loaded (bool: delivering air), power (kW), pressure (bar g, optional),
---   flow (m3/min free air delivery, optional), demand (bool, optional: false while
---   the site uses no air, e.g. nights and weekends: the leak test periods).
--- Derived tags (over a rolling `window`, default 1 h):
---   duty (% of time loaded), cycles_per_hour (load cycles), avg_power (kW),
---   specific_power (kW per m3/min: from flow, else from duty * rated_flow),
---   energy (kWh, total), leak_percent and leak_flow (m3/min): the duty measured
---   while demand is false (the load/unload leak test), once `leak_min_time` has passed.
--- Alarms: short_cycling (cycles_per_hour above max_cycles), leakage (leak_percent above
---   leak_alarm).
---
--- Params: rated_flow (m3/min, required), rated_power (kW, required),
---   window ("1h"), max_cycles (per hour, default 15), leak_alarm (% default 20),
---   leak_min_time ("20min").
local alarm = require "doppel.alarm"
local energy = require "doppel.energy"

local function need(name)
   local v = params[name]
   if type(v) ~= "number" or v <= 0 then
      error(("params.%s is required: a number > 0"):format(name), 0)
   end
   return v
end
local rated_flow = need("rated_flow")
need("rated_power")
local window = duration(params.window or "1h")
local leak_min = duration(params.leak_min_time or "20min")

local function has(tag)
   return (pcall(function() return tags[tag] end))
end
local has_flow, has_demand = has("flow"), has("demand")

twin.tag("duty", { unit = "%", history = 1440 })
twin.tag("cycles_per_hour", { history = 1440 })
twin.tag("avg_power", { unit = "kW" })
twin.tag("specific_power", { unit = "kW/(m3/min)", history = 1440 })
twin.tag("energy", { unit = "kWh" })
twin.tag("leak_percent", { unit = "%", history = 100 })
twin.tag("leak_flow", { unit = "m3/min" })

local cycling = alarm.limit {
   name = "short_cycling", high = params.max_cycles or 15, hysteresis = 2, severity = "medium",
   message = "too many load cycles: check the pressure band and the receiver volume",
}
local leakage = alarm.limit {
   name = "leakage", high = params.leak_alarm or 20, hysteresis = 2, severity = "low",
   message = "compressed air leaks above target: schedule a leak survey",
}

local meter
twin.on_start(function()
   state.segs = state.segs or {}   -- closed { t0, t1, loaded, demand } within the window
   state.starts = state.starts or {} -- times it went loaded, within the window
   state.kwh_marks = state.kwh_marks or {}
   meter = energy.meter_from(state.meter, { max_gap = "10min" })
   twin.set("energy", meter.kwh)
end)

local function demand_now()
   if not has_demand then return true end
   return tags.demand.value ~= false
end

-- Closes the open segment at t and opens a new one with the current state.
local function cut(t)
   local open = state.open
   if open and t > open.t0 then
      state.segs[#state.segs + 1] = { t0 = open.t0, t1 = t, loaded = open.loaded,
                                      demand = open.demand }
      if not open.demand then
         state.leak = state.leak or { loaded = 0, total = 0 }
         state.leak.total = state.leak.total + (t - open.t0)
         if open.loaded then state.leak.loaded = state.leak.loaded + (t - open.t0) end
      end
   end
   state.open = { t0 = t, loaded = tags.loaded.value == true, demand = demand_now() }
end

twin.on_change("loaded", function(v)
   local t = clock.now()
   cut(t)
   if v == true then state.starts[#state.starts + 1] = t end
end)

if has_demand then
   twin.on_change("demand", function(v)
      local t = clock.now()
      local was = state.open and state.open.demand
      cut(t)
      if v == false and was ~= false then state.leak = { loaded = 0, total = 0 } end
   end)
end

twin.on_change("power", function(kw, tag)
   if tag.good then
      meter:add(kw)
      state.meter = meter:save()
   end
end)

local function report()
   local now = clock.now()
   cut(now)
   local from = now - window
   local keep = {}
   local loaded, covered = 0, 0
   for _, s in ipairs(state.segs) do
      if s.t1 > from then
         keep[#keep + 1] = s
         local d = s.t1 - math.max(s.t0, from)
         covered = covered + d
         if s.loaded then loaded = loaded + d end
      end
   end
   state.segs = keep
   local starts = {}
   for _, t in ipairs(state.starts) do if t >= from then starts[#starts + 1] = t end end
   state.starts = starts
   if covered <= 0 then return end
   local duty = 100 * loaded / covered
   tags.duty = duty
   -- Cycles per hour once half a window is covered (less extrapolates noise).
   if covered >= window / 2 then
      local cph = #starts * 3600 / covered
      tags.cycles_per_hour = cph
      cycling:update(cph)
   end
   -- Average power over the window from the meter's energy; the last power
   -- sample holds until now.
   if tags.power.good then
      meter:add(tags.power.value, now)
      state.meter = meter:save()
   end
   twin.set("energy", meter.kwh)
   local marks = state.kwh_marks
   marks[#marks + 1] = { t = now, kwh = meter.kwh }
   while #marks > 2 and marks[2].t <= from do table.remove(marks, 1) end
   local first = marks[1]
   if now > first.t then
      local avg = (meter.kwh - first.kwh) * 3600 / (now - first.t)
      tags.avg_power = avg
      local fad = duty / 100 * rated_flow
      if has_flow and tags.flow.good and tags.flow.value > 0 then fad = tags.flow.value end
      if fad > 0 then tags.specific_power = avg / fad end
   end
   local leak = state.leak
   if leak and leak.total >= leak_min then
      local pct = 100 * leak.loaded / leak.total
      tags.leak_percent = pct
      tags.leak_flow = pct / 100 * rated_flow
      leakage:update(pct)
   end
end

twin.every("1min", report)
