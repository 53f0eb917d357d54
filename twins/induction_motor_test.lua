-- Induction motor twin: imbalance, load, slip, temperature rise.
local test = require "doppel.test"

local function motor(t, params, tg)
   local p = { rated_current = 40, rated_power = 22, insulation_class = "F" }
   for k, v in pairs(params or {}) do p[k] = v end
   local tags = { current_a = { unit = "A" }, current_b = { unit = "A" },
                  current_c = { unit = "A" }, running = {} }
   for k, v in pairs(tg or {}) do tags[k] = v end
   t:twin { name = "M1", class = "induction_motor", params = p, tags = tags }
end

local function phases(t, a, b, c)
   t:set("M1.current_a", a)
   t:set("M1.current_b", b)
   t:set("M1.current_c", c)
end

test.case("current imbalance by NEMA MG-1 and its alarm", function(t)
   motor(t)
   t:set("M1.running", true)
   phases(t, 30, 30, 30)
   t:advance("1s")
   t:near(t:get("M1.current"), 30, 1e-12)
   t:near(t:get("M1.current_imbalance"), 0, 1e-12)
   -- 33, 30, 27: mean 30, largest deviation 3 -> 10 %; 34, 30, 26 -> 13.3 %.
   phases(t, 34, 30, 26)
   t:advance("1s")
   t:near(t:get("M1.current_imbalance"), 100 * 4 / 30, 1e-9)
   t:advance("58s")   -- the samples arrived 59 s ago
   t:eq(#t:events("alarm"), 0, "on-delay")
   t:advance("2s")
   local ev = t:events("alarm")
   t:eq(#ev, 1)
   t:eq(ev[1].data.name, "current_imbalance")
end)

test.case("load from current above the no-load current", function(t)
   motor(t, { no_load_current = 10 })
   t:set("M1.running", true)
   phases(t, 25, 25, 25)
   t:advance("1s")
   t:near(t:get("M1.load"), 50, 1e-9)
end)

test.case("load from power, and the overload alarm", function(t)
   motor(t, {}, { power = { unit = "kW" } })
   t:set("M1.running", true)
   t:set("M1.power", 24.2)
   t:advance("1s")
   t:near(t:get("M1.load"), 110, 1e-9)
   t:advance("2min")
   t:advance("1s")
   local ev = t:events("alarm")
   t:eq(#ev, 1)
   t:eq(ev[1].data.name, "overload")
end)

test.case("slip and temperature rise against the insulation class", function(t)
   motor(t, { poles = 4, frequency = 50 },
         { speed = { unit = "rpm" }, winding_temp = { unit = "C" }, ambient_temp = { unit = "C" } })
   t:set("M1.speed", 1470)
   t:set("M1.ambient_temp", 30)
   t:set("M1.winding_temp", 110)
   t:advance("1s")
   t:near(t:get("M1.slip"), 2, 1e-9)
   t:near(t:get("M1.temp_rise"), 80, 1e-9)
   t:near(t:get("M1.thermal_margin"), 45, 1e-9)
   t:set("M1.winding_temp", 140)
   t:advance("31s")
   local ev = t:events("alarm")
   t:eq(#ev, 1)
   t:eq(ev[1].data.name, "overtemperature")
   t:eq(ev[1].data.severity, "critical")
end)

test.case("run hours count while running", function(t)
   motor(t)
   t:set("M1.running", true)
   t:advance("90min")
   t:near(t:get("M1.run_hours"), 1.5, 1e-9)
end)

test.case("a bad rated_current is refused", function(t)
   t:raises(function()
      motor(t, { rated_current = -1 })
      t:get("M1.running")
   end, "params.rated_current is required")
end)

test.case("an unknown insulation class is refused", function(t)
   t:raises(function()
      motor(t, { insulation_class = "Z" })
      t:get("M1.running")
   end, "params.insulation_class must be \"B\", \"F\" or \"H\"")
end)

test.case("a motor without current tags is refused", function(t)
   t:raises(function()
      t:twin { name = "M1", class = "induction_motor", params = { rated_current = 10 },
               tags = { running = {} } }
      t:get("M1.running")
   end, "the motor needs tags current_a, current_b, current_c or one tag current")
end)
