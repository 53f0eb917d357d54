--- Conveyor / production line twin: throughput, availability and OEE.
---
--- Input tags: running (bool), count (units, a cumulative counter: resets and
---   rollovers are handled), rejects (cumulative counter, optional), planned (bool,
---   optional: false outside planned production time; default always planned).
--- Derived tags:
---   throughput (units/h over `window`), availability (% run time of planned time),
---   performance (% of the ideal rate while running), quality (% good units),
---   oee (% = availability x performance x quality), downtime (min), stops
---   (all per shift, reset at each shift boundary, which also raises a "shift_report"
---   event with the final figures).
--- Alarm: low_oee (below min_oee for 30 min, when set).
---
--- Params: ideal_rate (units/h, required), shift ("8h"), shift_start ("06:00" UTC,
---   boundaries are shift_start + k * shift), window ("10min"), min_oee (%, optional).
local alarm = require "doppel.alarm"

local ideal = params.ideal_rate
if type(ideal) ~= "number" or ideal <= 0 then
   error("params.ideal_rate is required: a number > 0 (units/h)", 0)
end
local shift_len = duration(params.shift or "8h")
if shift_len <= 0 then error("params.shift must be a duration > 0", 0) end
local h, m = tostring(params.shift_start or "06:00"):match("^(%d%d?):(%d%d)$")
if not h then error("params.shift_start must be \"HH:MM\"", 0) end
local shift_offset = tonumber(h) * 3600 + tonumber(m) * 60
local window = duration(params.window or "10min")

local function has(tag)
   return (pcall(function() return tags[tag] end))
end
local has_rejects, has_planned = has("rejects"), has("planned")

twin.tag("throughput", { unit = "units/h", history = 1440 })
twin.tag("availability", { unit = "%" })
twin.tag("performance", { unit = "%" })
twin.tag("quality", { unit = "%" })
twin.tag("oee", { unit = "%", history = 1440 })
twin.tag("downtime", { unit = "min" })
twin.tag("stops")

local low_oee = params.min_oee and alarm.limit {
   name = "low_oee", low = params.min_oee, hysteresis = 2, on_delay = "30min", severity = "low",
   message = "OEE below target",
}

local function shift_of(t) return math.floor((t - shift_offset) / shift_len) end

local function new_shift(t)
   return { index = shift_of(t), t = t, planned_s = 0, run_s = 0, units = 0, rejects = 0,
            stops = 0 }
end

twin.on_start(function()
   state.shift = state.shift or new_shift(clock.now())
   state.tp = state.tp or {}
end)

local function is_planned() return not has_planned or tags.planned.value ~= false end
local function is_running() return tags.running.value == true end

-- Accounts the time since the last call to the state that held during it.
local function account(t)
   local s = state.shift
   local dt = t - s.t
   if dt > 0 and state.was_planned ~= false then
      s.planned_s = s.planned_s + dt
      if state.was_running then s.run_s = s.run_s + dt end
   end
   s.t = t
   state.was_planned, state.was_running = is_planned(), is_running()
end

local function figures(s)
   local a = s.planned_s > 0 and s.run_s / s.planned_s or nil
   local p = s.run_s > 0 and (s.units / (s.run_s / 3600)) / ideal or nil
   local q = s.units > 0 and (s.units - s.rejects) / s.units or nil
   return a, p, q
end

local function publish()
   local s = state.shift
   local a, p, q = figures(s)
   if a then tags.availability = 100 * a end
   if p then tags.performance = 100 * p end
   if q then tags.quality = 100 * q end
   tags.downtime = (s.planned_s - s.run_s) / 60
   tags.stops = s.stops
   if a and p and q then
      local oee = 100 * a * p * q
      tags.oee = oee
      if low_oee then low_oee:update(oee) end
   end
end

-- Counter increments, with resets and rollovers taken as a restart from 0.
local function delta(key, v)
   local last = state[key]
   state[key] = v
   if last == nil then return 0 end
   if v >= last then return v - last end
   return v
end

twin.on_change("running", function(v)
   account(clock.now())
   if v == false and is_planned() then state.shift.stops = state.shift.stops + 1 end
end)
if has_planned then twin.on_change("planned", function() account(clock.now()) end) end

twin.on_change("count", function(v, tag)
   if not tag.good or type(v) ~= "number" then return end
   local now = clock.now()
   account(now)
   state.shift.units = state.shift.units + delta("last_count", v)
   -- Throughput over the window from the counter's own samples (units
   -- counted since the twin started, across shifts).
   local tp = state.tp
   tp[#tp + 1] = { now, state.shift.units + (state.done_units or 0) }
   while #tp > 2 and tp[2][1] <= now - window do table.remove(tp, 1) end
   local first, last = tp[1], tp[#tp]
   if last[1] > first[1] then
      tags.throughput = (last[2] - first[2]) * 3600 / (last[1] - first[1])
   end
end)
if has_rejects then
   twin.on_change("rejects", function(v, tag)
      if not tag.good or type(v) ~= "number" then return end
      state.shift.rejects = state.shift.rejects + delta("last_rejects", v)
   end)
end

twin.every("1min", function()
   local now = clock.now()
   if shift_of(now) ~= state.shift.index then
      -- Close the shift at its boundary and report it.
      local boundary = (shift_of(now)) * shift_len + shift_offset
      account(boundary)
      publish()
      local s = state.shift
      local a, p, q = figures(s)
      twin.event("shift_report", {
         start = clock.iso(s.index * shift_len + shift_offset), units = s.units,
         rejects = s.rejects, stops = s.stops, run_h = s.run_s / 3600,
         availability = a and 100 * a, performance = p and 100 * p, quality = q and 100 * q,
         oee = (a and p and q) and 100 * a * p * q or nil,
      })
      state.done_units = (state.done_units or 0) + s.units
      state.shift = new_shift(boundary)
   end
   account(now)
   publish()
end)
