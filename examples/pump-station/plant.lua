-- The demo plant: a pump station with two centrifugal pumps feeding one
-- header. The station's field signals are simulated (the sim driver) and
-- served by doppel's own Modbus TCP server on 127.0.0.1, the way a PLC would
-- serve them; the pump twins poll that server over real TCP, so the demo
-- runs the real Modbus path on a bare machine:
--
--   doppel run examples/pump-station/plant.lua
--   mbpoll -m tcp -a 1 -t 3:float -B -r 1 -1 -p 1502 127.0.0.1   (P101 flow, m3/h)
--
-- In virtual time (doppel run --virtual, tests) there are no sockets: the
-- "plc" client reads the "station_plc" server in process, through the same
-- register images.
--
-- P101 runs continuously and its vibration drifts up (bearing wear) with a
-- fault injected at 14:00 that raises its vibration alarm; P102 cycles on
-- and off every four hours.

plant { name = "pump-station", description = "Two centrifugal pumps feeding a header",
        http = { listen = "127.0.0.1:8080" } }

device "plant_sim" { driver = "sim", seed = 42 }

-- Register map of the station PLC, per pump (P101 from address 0, P102 from
-- 10): input registers flow (f32), head (u16, cm), power (f32, word-swapped
-- as many PLCs send it), vibration (i16, um/s); discrete input 0/1: running.
local function plc_map(map, pump, base, di)
   local f = "field." .. pump .. "_"
   map[#map + 1] = { tag = f .. "flow", area = "input", address = base, type = "f32" }
   map[#map + 1] = { tag = f .. "head", area = "input", address = base + 2, type = "u16",
                     scale = 0.01 }
   map[#map + 1] = { tag = f .. "power", area = "input", address = base + 3, type = "f32",
                     order = "CDAB" }
   map[#map + 1] = { tag = f .. "vibration", area = "input", address = base + 5, type = "i16",
                     scale = 0.001 }
   map[#map + 1] = { tag = f .. "running", area = "discrete", address = di }
   return map
end

-- The station PLC: port 1502 (a free port instead if another program holds it).
device "station_plc" {
   driver = "modbus_server", listen = "127.0.0.1:1502", fallback_port = true,
   map = plc_map(plc_map({}, "P101", 0, 0), "P102", 10, 1),
}

-- The pump twins' link to the PLC.
device "plc" { driver = "modbus", server = "station_plc", timeout = "500ms" }

-- The simulated field signals, as the PLC's I/O sees them.
local field = {}
local function simulate(pump, o)
   local f = pump .. "_"
   field[f .. "flow"] = { device = "plant_sim", wave = "sine", mean = o.flow, amplitude = 15,
                          period = "6h", phase = o.phase, noise = 0.8, every = "1s",
                          unit = "m3/h" }
   -- Head falls as flow rises: the same sine, half a period later.
   field[f .. "head"] = { device = "plant_sim", wave = "sine", mean = 46, amplitude = 4,
                          period = "6h", phase = o.head_phase, noise = 0.3, every = "1s",
                          unit = "m" }
   field[f .. "power"] = { device = "plant_sim", wave = "sine", mean = o.power, amplitude = 1.6,
                           period = "6h", phase = o.phase, noise = 0.2, every = "1s",
                           unit = "kW" }
   field[f .. "vibration"] = { device = "plant_sim", wave = "const", mean = 2.4, noise = 0.12,
                               drift = o.wear, every = "10s", unit = "mm/s",
                               faults = o.faults }
   field[f .. "running"] = { device = "plant_sim", wave = o.run_wave, mean = 0.5,
                             amplitude = 0.5, period = "8h", type = "bool", every = "10s" }
end

simulate("P101", { flow = 120, power = 20.5, phase = "0s", head_phase = "3h", wear = 0.05,
                   run_wave = "const", faults = { { at = "14h", duration = "40min",
                                                    kind = "spike", value = 6 } } })
simulate("P102", { flow = 110, power = 19.0, phase = "1h", head_phase = "4h", wear = 0.01,
                   run_wave = "square" })

twin "field" { script = "field.lua", tags = field }

local function pump(name, base, di, o)
   twin (name) {
      class = "centrifugal_pump",
      params = { rated_flow = 130, rated_head = 48, rated_power = 22, vib_alarm = 7.1,
                 -- What-if: every 15 min, the lowest-power speed that still meets the
                 -- station's demand; P101 writes it to speed_sp through the guard,
                 -- P102 only recommends (allow_write = false).
                 recommend = { every = "15min", demand = o.demand, static_head = 20,
                               setpoint = "speed_sp", allow_write = o.allow_write } },
      tags = {
         flow = { device = "plc", area = "input", address = base, type = "f32", every = "1s",
                  unit = "m3/h", history = 3600 },
         head = { device = "plc", area = "input", address = base + 2, type = "u16",
                  scale = 0.01, every = "1s", unit = "m", history = 3600 },
         power = { device = "plc", area = "input", address = base + 3, type = "f32",
                   order = "CDAB", every = "1s", unit = "kW", history = 3600 },
         vibration = { device = "plc", area = "input", address = base + 5, type = "i16",
                       scale = 0.001, every = "10s", unit = "mm/s", history = 8640 },
         running = { device = "plc", area = "discrete", address = di, every = "10s" },
         -- The speed setpoint the what-if recommendation writes, through the guard.
         speed_sp = { writable = true, min = 900, max = 1480, max_rate = 5, unit = "rpm" },
      },
   }
end

pump("P101", 0, 0, { demand = 105, allow_write = true })
pump("P102", 10, 1, { demand = 100 })

twin "station" {
   script = "station.lua",
   params = { pumps = { "P101", "P102" },
              -- Time-of-use tariff (per kWh): peak on weekdays 07:00-23:00.
              tariff = { rate = 0.11, periods = { { from = "07:00", to = "23:00", rate = 0.24,
                                                    days = { 1, 2, 3, 4, 5 } } } } },
}
