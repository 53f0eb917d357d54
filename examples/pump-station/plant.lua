-- The demo plant: a pump station with two centrifugal pumps feeding one
-- header, simulated by the sim driver so it runs on a bare machine.
--
--   doppel run examples/pump-station/plant.lua
--
-- P101 runs continuously and its vibration drifts up (bearing wear) with a
-- fault injected at 14:00 that raises its vibration alarm; P102 cycles on
-- and off every four hours.

plant { name = "pump-station", description = "Two centrifugal pumps feeding a header",
        http = { listen = "127.0.0.1:8080" } }

device "plant_sim" { driver = "sim", seed = 42 }

local function pump(name, o)
   twin (name) {
      class = "centrifugal_pump",
      params = { rated_flow = 130, rated_head = 48, rated_power = 22, vib_alarm = 7.1,
                 -- What-if: every 15 min, the lowest-power speed that still meets the
                 -- station's demand; P101 writes it to speed_sp through the guard,
                 -- P102 only recommends (allow_write = false).
                 recommend = { every = "15min", demand = o.demand, static_head = 20,
                               setpoint = "speed_sp", allow_write = o.allow_write } },
      tags = {
         flow = { device = "plant_sim", wave = "sine", mean = o.flow, amplitude = 15,
                  period = "6h", phase = o.phase, noise = 0.8, every = "1s", unit = "m3/h",
                  history = 3600 },
         -- Head falls as flow rises: the same sine, half a period later.
         head = { device = "plant_sim", wave = "sine", mean = 46, amplitude = 4, period = "6h",
                  phase = o.head_phase, noise = 0.3, every = "1s", unit = "m", history = 3600 },
         power = { device = "plant_sim", wave = "sine", mean = o.power, amplitude = 1.6,
                   period = "6h", phase = o.phase, noise = 0.2, every = "1s", unit = "kW",
                   history = 3600 },
         vibration = { device = "plant_sim", wave = "const", mean = 2.4, noise = 0.12,
                       drift = o.wear, every = "10s", unit = "mm/s", history = 8640,
                       faults = o.faults },
         running = { device = "plant_sim", wave = o.run_wave, mean = 0.5, amplitude = 0.5,
                     period = "8h", type = "bool", every = "10s" },
         -- The speed setpoint the what-if recommendation writes, through the guard.
         speed_sp = { writable = true, min = 900, max = 1480, max_rate = 5, unit = "rpm" },
      },
   }
end

pump("P101", { flow = 120, power = 20.5, demand = 105, allow_write = true, phase = "0s",
               head_phase = "3h", wear = 0.05,
               run_wave = "const", faults = { { at = "14h", duration = "40min", kind = "spike",
                                                value = 6 } } })
pump("P102", { flow = 110, power = 19.0, demand = 100, phase = "1h", head_phase = "4h", wear = 0.01,
               run_wave = "square" })

twin "station" {
   script = "station.lua",
   params = { pumps = { "P101", "P102" },
              -- Time-of-use tariff (per kWh): peak on weekdays 07:00-23:00.
              tariff = { rate = 0.11, periods = { { from = "07:00", to = "23:00", rate = 0.24,
                                                    days = { 1, 2, 3, 4, 5 } } } } },
}
