-- The station twin: total flow through the header, the station's energy
-- (kWh, cost on a time-of-use tariff, kWh per m3 pumped) and the plant's
-- active alarms, from both pump twins' tags.
-- Edit this file while the plant runs: it reloads and keeps its state.
local alarm = require "doppel.alarm"
local energy = require "doppel.energy"

twin.tag("total_flow", { unit = "m3/h", history = 3600 })
twin.tag("specific_energy", { unit = "kWh/m3", history = 3600 })
twin.tag("energy", { unit = "kWh" })
twin.tag("energy_cost", { unit = "EUR" })
twin.tag("pumped", { unit = "m3" })
twin.tag("energy_per_m3", { unit = "kWh/m3" })
twin.tag("active_alarms")

local pumps = params.pumps
local tariff = params.tariff and energy.tariff(params.tariff)
-- The meter's totals live in `state`, so they survive reloads.
local meter = energy.meter_from(state.meter, { tariff = tariff, max_gap = "5min" })

-- Tag objects read the live value on every access: look them up once.
local inputs = {}
for i, p in ipairs(pumps) do
   inputs[i] = { running = tags[p .. ".running"], flow = tags[p .. ".flow"],
                 power = tags[p .. ".power"] }
end

local function update()
   local flow, power = 0, 0
   for i = 1, #inputs do
      local t = inputs[i]
      if t.running.value then
         flow = flow + (t.flow.value or 0)
         power = power + (t.power.value or 0)
      end
   end
   tags.total_flow = flow
   if flow > 1 then tags.specific_energy = power / flow end
end

-- Once per batch of new readings (one poll, one replay instant), whichever
-- of the pumps' flows and powers changed in it.
local watched = {}
for _, p in ipairs(pumps) do
   watched[#watched + 1] = p .. ".flow"
   watched[#watched + 1] = p .. ".power"
end
twin.on_update(watched, update)

-- Energy and volume every 10 s: total power into the meter, volume pumped as
-- the production it is divided by.
twin.every("10s", function()
   local power = 0
   for _, p in ipairs(pumps) do
      if tags[p .. ".running"].value then power = power + (tags[p .. ".power"].value or 0) end
   end
   local last = meter.t
   meter:add(power)
   if last then meter:produced((tags.total_flow.value or 0) * (meter.t - last) / 3600) end
   state.meter = meter:save()
   tags.energy = meter.kwh
   tags.energy_cost = meter.cost
   tags.pumped = meter.units
   local sec = meter:specific()
   if sec then tags.energy_per_m3 = sec end
   tags.active_alarms = #alarm.list { active = true }
end)

-- Report the station's state: every 10 s live, hourly in virtual time.
twin.every(clock.virtual and "1h" or "10s", function()
   local parts = {}
   for _, p in ipairs(pumps) do
      local eff = tags[p .. ".efficiency"].value
      parts[#parts + 1] = string.format("%s %s flow %.1f m3/h eff %s vib %.2f mm/s%s", p,
         tags[p .. ".running"].value and "on " or "off", tags[p .. ".flow"].value or 0,
         eff and string.format("%.1f%%", eff) or "-", tags[p .. ".vibration"].value or 0,
         tags[p .. ".vibration_alarm"].value and " ALARM" or "")
   end
   log.info("%s | total %.1f m3/h, %.3f kWh/m3 | %.0f kWh, %.2f EUR, %d alarm(s)",
            table.concat(parts, " | "), tags.total_flow.value or 0,
            tags.specific_energy.value or 0, meter.kwh, meter.cost, tags.active_alarms.value or 0)
end)
