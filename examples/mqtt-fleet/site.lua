-- The site plant of the MQTT fleet example: it consumes the gateway's
-- published pump through the broker (format "doppel": the gateway's own
-- timestamps and qualities, duplicates dropped) and aggregates it. Start
-- gateway.lua first; see there.

plant { name = "site", description = "Site view over the gateways' pumps" }

device "broker" {
   driver = "mqtt", host = "127.0.0.1", port = 1883, client_id = "doppel-site",
   publish = true,
}

twin "site" {
   script = "site_totals.lua",
   tags = {
      gw1_flow = { device = "broker", topic = "doppel/gw1/P101/data/flow", format = "doppel",
                   unit = "m3/h" },
      gw1_power = { device = "broker", topic = "doppel/gw1/P101/data/power", format = "doppel",
                    unit = "kW" },
      gw1_efficiency = { device = "broker", topic = "doppel/gw1/P101/data/efficiency",
                         format = "doppel", unit = "%" },
   },
}
