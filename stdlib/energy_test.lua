-- doppel.energy: integration on irregular samples, tariffs, specific energy, baselines.
local test = require "doppel.test"
local energy = require "doppel.energy"

local T0 = 1767225600 -- 2026-01-01T00:00:00Z, a Thursday

test.case("trapezoidal integration on irregular samples is exact for ramps", function(t)
   -- 0 -> 60 kW linearly over 30 min, sampled irregularly: 15 kWh exactly.
   local times, kw = {}, {}
   for _, s in ipairs({ 0, 7, 100, 101, 900, 1333, 1800 }) do
      times[#times + 1] = T0 + s
      kw[#kw + 1] = 60 * s / 1800
   end
   t:near(energy.integrate(times, kw), 15, 1e-9)
   local m = energy.meter()
   for i = 1, #times do m:add(kw[i], times[i]) end
   t:near(m.kwh, 15, 1e-9)
   t:eq(m.samples, 7)
   t:near(m.peak_kw, 60, 1e-12)
end)

test.case("gaps longer than max_gap are left out and counted", function(t)
   local m = energy.meter { max_gap = "5min" }
   m:add(10, T0)
   m:add(10, T0 + 60)        -- 1 min at 10 kW
   m:add(10, T0 + 3660)      -- 1 h gap: not integrated
   m:add(10, T0 + 3720)      -- 1 min
   t:near(m.kwh, 2 * 10 / 60, 1e-12)
   t:near(m.gap_s, 3600, 1e-9)
   t:near(energy.integrate({ 0, 60, 3660 }, { 10, 10, 10 }, 300), 10 / 60, 1e-12)
end)

test.case("time-of-use cost splits segments at tariff changes", function(t)
   local tariff = energy.tariff { rate = 0.10, periods = {
      { from = "07:00", to = "23:00", rate = 0.30, days = { 1, 2, 3, 4, 5 } },
   } }
   -- Thursday: 06:00 off-peak, 12:00 peak, 23:30 off-peak; Saturday noon off-peak.
   t:near(tariff:rate(T0 + 6 * 3600), 0.10, 1e-12)
   t:near(tariff:rate(T0 + 12 * 3600), 0.30, 1e-12)
   t:near(tariff:rate(T0 + 23.5 * 3600), 0.10, 1e-12)
   t:near(tariff:rate(T0 + 2 * 86400 + 12 * 3600), 0.10, 1e-12)
   -- 100 kW from 06:00 to 08:00: 100 kWh at 0.10 and 100 kWh at 0.30.
   local cost, kwh = tariff:cost(100, T0 + 6 * 3600, T0 + 8 * 3600)
   t:near(kwh, 200, 1e-9)
   t:near(cost, 40, 1e-9)
   local m = energy.meter { tariff = tariff, max_gap = "2h" }
   m:add(100, T0 + 6 * 3600)
   m:add(100, T0 + 6.5 * 3600)
   m:add(100, T0 + 7.5 * 3600)
   m:add(100, T0 + 8 * 3600)
   t:near(m.cost, 40, 1e-9)
   t:near(m.kwh, 200, 1e-9)
end)

test.case("a night period runs past midnight and belongs to the day it starts", function(t)
   local tariff = energy.tariff { rate = 0.2, utc_offset = 1, periods = {
      { from = "22:00", to = "06:00", rate = 0.05, days = { 4 } },   -- Thursday nights
   } }
   -- 2026-01-01 is a Thursday; local 23:00 = 22:00 UTC; local Friday 03:00 = Fri 02:00 UTC.
   t:near(tariff:rate(T0 + 22 * 3600), 0.05, 1e-12)
   t:near(tariff:rate(T0 + 26 * 3600), 0.05, 1e-12)
   -- Friday 23:00 local is not a Thursday night.
   t:near(tariff:rate(T0 + 86400 + 22 * 3600), 0.2, 1e-12)
end)

test.case("specific energy and a saved meter", function(t)
   local m = energy.meter { max_gap = "1h" }
   m:add(20, T0)
   m:add(20, T0 + 3600)
   t:eq(m:specific(), nil)
   m:produced(100)
   t:near(m:specific(), 0.2, 1e-12)
   t:near(energy.specific(50, 200), 0.25, 1e-12)
   t:eq(energy.specific(5, 0), nil)
   local m2 = energy.meter_from(m:save(), { max_gap = "1h" })
   m2:add(20, T0 + 7200)
   t:near(m2.kwh, 40, 1e-9)
   local totals = m2:reset()
   t:near(totals.kwh, 40, 1e-9)
   t:eq(m2.kwh, 0)
end)

test.case("a baseline fitted on exact data predicts and tracks savings", function(t)
   -- E = 120 + 0.35 * units exactly.
   local units, kwh = {}, {}
   for i = 1, 10 do
      units[i] = 100 * i
      kwh[i] = 120 + 0.35 * units[i]
   end
   local b = energy.baseline(units, kwh)
   t:near(b.intercept, 120, 1e-9)
   t:near(b.slope, 0.35, 1e-12)
   t:near(b.r2, 1, 1e-12)
   t:near(b:expected(400), 260, 1e-9)
   local c = b:compare(400, 247)
   t:near(c.savings, 13, 1e-9)
   t:near(c.percent, 5, 1e-9)
   c = b:compare(400, 270)
   t:near(c.cusum, 3, 1e-9)
end)

test.case("bad arguments name what is wrong", function(t)
   t:raises(function() energy.tariff {} end, "energy.tariff: rate must be a number >= 0")
   t:raises(function()
      energy.tariff { rate = 1, periods = { { from = "7", to = "8:00", rate = 1 } } }
   end, "periods[1].from must be \"HH:MM\"")
   t:raises(function()
      energy.tariff { rate = 1,
                      periods = { { from = "07:00", to = "08:00", rate = 1, days = { 8 } } } }
   end, "periods[1].days holds ISO weekdays")
   t:raises(function() energy.tariff { rate = 1, utc_offset = 20 } end, "utc_offset")
   t:raises(function() energy.meter { tariff = {} } end, "tariff must come from energy.tariff")
   t:raises(function() energy.meter { max_gap = "soon" } end, "energy.meter: max_gap")
   local m = energy.meter()
   t:raises(function() m:add("x", T0) end, "meter:add: kw must be a finite number")
   m:add(1, T0 + 10)
   t:raises(function() m:add(1, T0) end, "is before the previous sample")
   t:raises(function() m:produced(-1) end, "meter:produced: units must be a number >= 0")
   t:raises(function() energy.integrate({ 1, 2 }, { 1 }) end, "same length")
   t:raises(function() energy.integrate({ 2, 1 }, { 1, 1 }) end, "times must increase")
   t:raises(function() energy.specific(1, -1) end, "energy.specific: units must be")
   t:raises(function() energy.baseline({ 1 }, { 1 }) end, "needs at least 2 points")
   t:raises(function() energy.baseline({ 1, 1 }, { 1, 2 }) end, "units must not all be equal")
end)
