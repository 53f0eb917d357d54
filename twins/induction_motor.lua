--- Induction motor twin.
---
--- Input tags (optional ones may be left out of the plant):
---   current_a, current_b, current_c (A, phase currents; or one `current`),
---   winding_temp (C, optional), ambient_temp (C, optional, else params.ambient),
---   speed (rpm, optional), power (kW input, optional), running (bool, optional).
--- Derived tags:
---   current (A, mean of the phases), current_imbalance (%: largest deviation from
---   the mean over the mean, NEMA MG-1), load (% of rated, from current or power),
---   slip (%), temp_rise (K over ambient), thermal_margin (K below the insulation
---   class limit), thermal_margin_pct, run_hours (h)
--- Alarms: current_imbalance (above imbalance_alarm for 1 min), overload (load above
---   the service factor for 2 min), overtemperature (rise above the class limit).
---
--- Params:
---   rated_current (A, required), rated_power (kW), rated_speed (rpm),
---   sync_speed (rpm, default from poles and frequency: 120 f / p), poles (default 4),
---   frequency (Hz, default 50), insulation_class ("B", "F" default, "H"),
---   ambient (C, default 40), service_factor (default 1.0),
---   imbalance_alarm (% default 10), no_load_current (A, default 0.35 * rated_current)
local alarm = require "doppel.alarm"

local function need(name)
   local v = params[name]
   if type(v) ~= "number" or v <= 0 then
      error(("params.%s is required: a number > 0"):format(name), 0)
   end
   return v
end

local rated_current = need("rated_current")
local classes = { B = 130, F = 155, H = 180 }   -- hot-spot limits (IEC 60034-1), C
local class_rise = { B = 80, F = 105, H = 125 } -- permitted rise by resistance at 40 C ambient
local class = params.insulation_class or "F"
if not classes[class] then error("params.insulation_class must be \"B\", \"F\" or \"H\"", 0) end
local poles = params.poles or 4
local freq = params.frequency or 50
local sync = params.sync_speed or 120 * freq / poles
local sf = params.service_factor or 1.0
local no_load = params.no_load_current or 0.35 * rated_current

local function has(tag)
   return (pcall(function() return tags[tag] end))
end
local three = has("current_a") and has("current_b") and has("current_c")
if not three and not has("current") then
   error("the motor needs tags current_a, current_b, current_c or one tag current", 0)
end

if three then twin.tag("current", { unit = "A", history = 3600 }) end
twin.tag("current_imbalance", { unit = "%", history = 3600 })
twin.tag("load", { unit = "%", history = 3600 })
twin.tag("run_hours", { unit = "h" })

local imbalance = alarm.limit {
   name = "current_imbalance", high = params.imbalance_alarm or 10, hysteresis = 1,
   on_delay = "1min", severity = "medium",
   message = "phase current imbalance: check supply voltages, connections and windings",
}
local overload = alarm.limit {
   name = "overload", high = 100 * sf, hysteresis = 5, on_delay = "2min", severity = "high",
   message = "motor loaded above its service factor",
}

twin.on_start(function()
   state.run_hours = state.run_hours or 0
   twin.set("run_hours", state.run_hours)
end)

local has_running
local function running()
   if has_running == nil then has_running = has("running") end
   if has_running then return tags.running.value == true end
   return (twin.get("current") or 0) > 0.1 * rated_current
end

local function update_load()
   local pct
   if params.rated_power and has("power") and tags.power.good then
      pct = 100 * tags.power.value / params.rated_power
   else
      -- Current above the no-load (magnetising) current grows about linearly with load.
      local i = twin.get("current")
      if type(i) ~= "number" then return end
      pct = 100 * math.max(0, i - no_load) / (rated_current - no_load)
   end
   tags.load = pct
   if running() then overload:update(pct) end
end

if three then
   twin.on_update({ "current_a", "current_b", "current_c" }, function()
      local a, b, c = tags.current_a, tags.current_b, tags.current_c
      if not (a.good and b.good and c.good) then return end
      local mean = (a.value + b.value + c.value) / 3
      tags.current = mean
      if mean > 0.1 * rated_current then
         local dev = math.max(math.abs(a.value - mean), math.abs(b.value - mean),
                              math.abs(c.value - mean))
         local pct = 100 * dev / mean
         tags.current_imbalance = pct
         imbalance:update(pct)
      end
      update_load()
   end)
else
   twin.on_change("current", update_load)
end
if has("power") then twin.on_change("power", update_load) end

if has("speed") then
   twin.tag("slip", { unit = "%" })
   twin.on_change("speed", function(n)
      if type(n) == "number" and n > 0 then tags.slip = 100 * (sync - n) / sync end
   end)
end

if has("winding_temp") then
   twin.tag("temp_rise", { unit = "K", history = 3600 })
   twin.tag("thermal_margin", { unit = "K" })
   local hot = alarm.limit {
      name = "overtemperature", high = class_rise[class], hysteresis = 5, on_delay = "30s",
      severity = "critical",
      message = ("winding temperature rise above the class %s limit"):format(class),
   }
   local with_ambient = has("ambient_temp")
   local watched = with_ambient and { "winding_temp", "ambient_temp" } or { "winding_temp" }
   twin.on_change(watched, function()
      local w = tags.winding_temp
      if not w.good then return end
      local amb = params.ambient or 40
      if with_ambient and tags.ambient_temp.good then amb = tags.ambient_temp.value end
      local rise = w.value - amb
      tags.temp_rise = rise
      tags.thermal_margin = classes[class] - w.value
      hot:update(rise)
   end)
end

twin.every("1min", function()
   if running() then
      state.run_hours = state.run_hours + 1 / 60
      twin.set("run_hours", state.run_hours)
   end
end)
