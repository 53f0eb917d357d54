-- A gateway of the MQTT fleet example: one simulated pump, published to a
-- broker on 127.0.0.1:1883 under doppel/gw1/... (see docs/mqtt.md).
--
--   mosquitto -p 1883 &
--   doppel --data-dir data-gw1 run examples/mqtt-fleet/gateway.lua
--   doppel --data-dir data-site run examples/mqtt-fleet/site.lua
--   mosquitto_sub -t 'doppel/#' -v
--
-- The broker may come and go: the gateway keeps journaling and sends what
-- it missed, in order, when it is back.

plant { name = "gw1", description = "One pump behind an edge gateway" }

device "plc" { driver = "sim", seed = 11 }
device "broker" {
   driver = "mqtt", host = "127.0.0.1", port = 1883,
   publish = true, batch = 20, derived = true,
   -- The site's SCADA may change the speed setpoint, nothing else.
   commands = { scada = { "P101.speed_sp" } },
}

twin "P101" {
   class = "centrifugal_pump",
   params = { rated_flow = 130, rated_head = 48, rated_power = 22, vib_alarm = 7.1 },
   tags = {
      flow = { device = "plc", wave = "sine", mean = 120, amplitude = 15, period = "6h",
               noise = 0.8, every = "1s", unit = "m3/h" },
      head = { device = "plc", wave = "sine", mean = 46, amplitude = 4, period = "6h",
               phase = "3h", noise = 0.3, every = "1s", unit = "m" },
      power = { device = "plc", wave = "sine", mean = 20.5, amplitude = 1.6, period = "6h",
                noise = 0.2, every = "1s", unit = "kW" },
      vibration = { device = "plc", wave = "const", mean = 2.4, noise = 0.12, drift = 0.05,
                    every = "10s", unit = "mm/s" },
      running = { device = "plc", wave = "const", mean = 1, type = "bool", every = "10s" },
      speed_sp = { writable = true, min = 600, max = 1480, max_rate = 50, unit = "rpm" },
   },
}
