-- The station twin: total flow through the header and the station's
-- specific energy (kWh per m3 pumped), from both pump twins' tags.
-- Edit this file while the plant runs: it reloads and keeps its state.

twin.tag("total_flow", { unit = "m3/h", history = 3600 })
twin.tag("specific_energy", { unit = "kWh/m3", history = 3600 })

local pumps = params.pumps

-- Tag objects read the live value on every access: look them up once.
local inputs = {}
for i, p in ipairs(pumps) do
   inputs[i] = { running = tags[p .. ".running"], flow = tags[p .. ".flow"],
                 power = tags[p .. ".power"] }
end

local function update()
   local flow, power = 0, 0
   for _, t in ipairs(inputs) do
      if t.running.value then
         flow = flow + (t.flow.value or 0)
         power = power + (t.power.value or 0)
      end
   end
   tags.total_flow = flow
   if flow > 1 then tags.specific_energy = power / flow end
end

for _, p in ipairs(pumps) do
   twin.on_change({ p .. ".flow", p .. ".power" }, update)
end

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
   log.info("%s | total %.1f m3/h, %.3f kWh/m3", table.concat(parts, " | "),
            tags.total_flow.value or 0, tags.specific_energy.value or 0)
end)
