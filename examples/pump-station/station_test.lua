-- Tests of the demo station twin (station.lua) with both pump twins, their
-- tags fed by the test.
local test = require "doppel.test"

local function station(t)
   for _, name in ipairs({ "P101", "P102" }) do
      t:twin { name = name, class = "centrifugal_pump", params = { rated_flow = 130 },
               tags = { flow = {}, head = {}, power = {}, vibration = {}, running = {} } }
   end
   t:twin { name = "station", script = "station.lua", params = { pumps = { "P101", "P102" } } }
end

local function run(t, pump, on, flow, power)
   t:set(pump .. ".running", on)
   t:set(pump .. ".flow", flow)
   t:set(pump .. ".power", power)
end

test.case("station totals add up the running pumps", function(t)
   station(t)
   run(t, "P101", true, 120, 20)
   run(t, "P102", true, 110, 19)
   t:near(t:get("station.total_flow"), 230, 1e-9)
   t:near(t:get("station.specific_energy"), 39 / 230, 1e-9)
   t:eq(t:tag("station.specific_energy").unit, "kWh/m3")
end)

test.case("a stopped pump does not count", function(t)
   station(t)
   run(t, "P101", true, 120, 20)
   run(t, "P102", false, 110, 19)
   t:near(t:get("station.total_flow"), 120, 1e-9)
   t:near(t:get("station.specific_energy"), 20 / 120, 1e-9)
end)

test.case("no specific energy without flow", function(t)
   station(t)
   run(t, "P101", false, 0, 0)
   run(t, "P102", false, 0, 0)
   t:eq(t:get("station.total_flow"), 0)
   t:eq(t:get("station.specific_energy"), nil)
end)

test.case("the station keeps only its energy meter in state and raises no events", function(t)
   station(t)
   run(t, "P101", true, 120, 20)
   run(t, "P102", false, 0, 0)
   t:advance("1h")
   local meter = t:state("station").meter
   t:near(meter.kwh, 20, 0.1, "20 kW for an hour (sampled every 10 s)")
   t:near(meter.units, 120, 0.5, "m3 pumped")
   t:near(t:get("station.energy_per_m3"), 20 / 120, 1e-3)
   t:eq(t:get("station.active_alarms"), 0)
   t:eq(#t:events(), 0, "no events without alarms")
end)
