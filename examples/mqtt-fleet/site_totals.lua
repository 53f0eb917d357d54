-- Site totals from the gateways' published tags: specific energy (kWh per
-- m3) over what the site receives, logged every 10 s.
twin.tag("specific_energy", { unit = "kWh/m3" })

local function update()
   local flow, power = twin.get("gw1_flow"), twin.get("gw1_power")
   if flow and power and flow > 1 then
      twin.set("specific_energy", power / flow)
   end
end

twin.on_change("gw1_flow", update)
twin.on_change("gw1_power", update)

twin.every("10s", function()
   local e = twin.get("specific_energy")
   if e then
      log.info("gw1: %.1f m3/h, %.3f kWh/m3, efficiency %.1f %%", twin.get("gw1_flow") or 0, e,
               twin.get("gw1_efficiency") or 0)
   end
end)
