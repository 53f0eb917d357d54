-- The station twin: total flow through the header and the station's
-- specific energy (kWh per m3 pumped), from both pump twins' tags.
-- Edit this file while the plant runs: it reloads and keeps its state.

twin.tag("total_flow", { unit = "m3/h", history = 3600 })
twin.tag("specific_energy", { unit = "kWh/m3", history = 3600 })

local pumps = params.pumps

local function update()
   local flow, power = 0, 0
   for _, p in ipairs(pumps) do
      if tags[p .. ".running"].value then
         flow = flow + (tags[p .. ".flow"].value or 0)
         power = power + (tags[p .. ".power"].value or 0)
      end
   end
   tags.total_flow = flow
   if flow > 1 then tags.specific_energy = power / flow end
end

for _, p in ipairs(pumps) do
   twin.on_change({ p .. ".flow", p .. ".power" }, update)
end

-- Report the station's output once an hour.
twin.every("1h", function()
   local f = tags.total_flow
   if f.value then log.info("total flow %.1f m3/h, %.3f kWh/m3", f.value,
                            tags.specific_energy.value or 0) end
end)
