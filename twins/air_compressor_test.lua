-- Air compressor twin: duty, cycles, specific power, leak test.
local test = require "doppel.test"

local function compressor(t)
   t:twin { name = "C1", class = "air_compressor",
            params = { rated_flow = 10, rated_power = 55, max_cycles = 15, leak_alarm = 20 },
            tags = { loaded = {}, power = { unit = "kW" }, demand = {} } }
end

-- Runs `n` cycles of `on` minutes loaded at 55 kW and `off` minutes unloaded at 15 kW.
local function cycles(t, n, on, off)
   for _ = 1, n do
      t:set("C1.loaded", true)
      t:set("C1.power", 55)
      t:advance(on * 60)
      t:set("C1.loaded", false)
      t:set("C1.power", 15)
      t:advance(off * 60)
   end
end

test.case("duty, cycles per hour, average and specific power", function(t)
   compressor(t)
   t:set("C1.demand", true)
   cycles(t, 12, 2, 3)   -- one hour: 40 % loaded, 12 cycles
   t:near(t:get("C1.duty"), 40, 0.5)
   t:near(t:get("C1.cycles_per_hour"), 12, 0.3)
   -- Power steps: 0.4 * 55 + 0.6 * 15 = 31 kW (the minute hold points keep the
   -- trapezoids close to the steps).
   t:near(t:get("C1.avg_power"), 31, 1.5)
   t:near(t:get("C1.specific_power"), t:get("C1.avg_power") / 4, 0.5)
   t:ok(t:get("C1.energy") > 25, "energy " .. t:get("C1.energy"))
   t:eq(#t:events("alarm"), 0)
end)

test.case("short cycling raises its alarm", function(t)
   compressor(t)
   t:set("C1.demand", true)
   cycles(t, 24, 1, 1.5)  -- 24 cycles per hour
   t:advance("1min")
   local ev = t:events("alarm")
   t:ok(#ev >= 1, "an alarm")
   t:eq(ev[1].data.name, "short_cycling")
end)

test.case("leak test: duty with no demand estimates the leaks", function(t)
   compressor(t)
   t:set("C1.demand", false)
   cycles(t, 6, 1.5, 3.5)  -- 30 min, 30 % loaded with no air used: 30 % leaks
   t:advance("1min")
   t:near(t:get("C1.leak_percent"), 30, 2)
   t:near(t:get("C1.leak_flow"), 3, 0.2)
   local ev = t:events("alarm")
   t:eq(#ev, 1)
   t:eq(ev[1].data.name, "leakage")
end)

test.case("bad params are refused naming the param", function(t)
   t:raises(function()
      t:twin { name = "C1", class = "air_compressor", params = { rated_flow = 10 },
               tags = { loaded = {}, power = {} } }
      t:get("C1.power")
   end, "params.rated_power is required")
end)
