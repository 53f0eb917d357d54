-- Tests of doppel.predict: time to threshold on exact linear and exponential
-- degradation, intervals that widen with noise, health index, the offline
-- linear model on exact data, similarity on known curves, bad arguments.
local test = require "doppel.test"
local predict = require "doppel.predict"

local function noise(seed)
   local s = seed
   return function()
      s = (s * 1103515245 + 12345) % 2147483648
      return s / 2147483648 - 0.5
   end
end

test.case("normal quantile", function(t)
   t:near(predict.normal_quantile(0.5), 0, 1e-9)
   t:near(predict.normal_quantile(0.95), 1.644853627, 1e-8)
   t:near(predict.normal_quantile(0.975), 1.959963985, 1e-8)
   t:near(predict.normal_quantile(0.001), -3.090232306, 1e-7)
end)

test.case("linear trend: exact time to threshold", function(t)
   local tr = predict.trend { size = 50 }
   local t0 = 1.767e9
   -- vibration rises 0.1 mm/s per hour from 2.0
   for h = 0, 40 do tr:push(2.0 + 0.1 * h, t0 + h * 3600) end
   local r = tr:rul(7.1)
   t:eq(r.model, "linear")
   -- now 6.0 at h = 40; 7.1 at h = 51
   t:near(r.rul, 11 * 3600, 0.01)
   t:near(r.lower, r.rul, 0.01)
   t:near(r.upper, r.rul, 0.01)
   t:near(r.r2, 1, 1e-12)
   t:near(r.at, t0 + 51 * 3600, 0.01)
   -- a falling indicator toward a low threshold
   local f = predict.trend { size = 20 }
   for i = 1, 20 do f:push(100 - 2 * i, i) end
   t:near(f:rul(20).rul, 20, 1e-9)
   -- away from the threshold: no estimate, with the reason
   local r2, why = f:rul(200)
   t:eq(r2, nil)
   t:ok(why:find("does not move toward"))
end)

test.case("exponential trend: exact and auto model choice", function(t)
   local tr = predict.trend { size = 60, model = "exponential", offset = 1 }
   for i = 0, 59 do tr:push(1 + 0.5 * math.exp(0.05 * i), i) end
   local r = tr:rul(1 + 0.5 * math.exp(0.05 * 100))
   t:near(r.rul, 41, 1e-6)
   t:eq(r.model, "exponential")
   local au = predict.trend { size = 60, model = "auto", offset = 1 }
   for i = 0, 59 do au:push(1 + 0.5 * math.exp(0.05 * i), i) end
   t:eq(au:rul(50).model, "exponential")
end)

test.case("noisy trend: the interval contains the truth and widens with noise", function(t)
   local function width(amp)
      local n = noise(3)
      local tr = predict.trend { size = 100 }
      for i = 1, 100 do tr:push(i * 0.05 + amp * n(), i) end
      local r = tr:rul(10, 0.9)
      t:ok(r.lower <= 100 and r.upper >= 100,
         "true rul 100 in [" .. r.lower .. ", " .. r.upper .. "]")
      return r.upper - r.lower
   end
   local a, b = width(0.2), width(1.0)
   t:ok(a > 0 and b > a, "widths " .. a .. " < " .. b)
   -- no trend at all: the upper bound is infinite
   local n = noise(5)
   local flat = predict.trend { size = 30 }
   for i = 1, 30 do flat:push(5 + 0.001 * i + n(), i) end
   local r = flat:rul(6)
   t:ok(r == nil or r.upper == math.huge)
end)

test.case("health index: mean, min, geometric, clamping, missing values", function(t)
   local hi = predict.health_index { indicators = {
      { name = "vibration", good = 2, bad = 7, weight = 2 },
      { name = "temperature", good = 60, bad = 90 },
      { name = "efficiency", good = 0.8, bad = 0.5 },
   } }
   local v, parts = hi:compute { vibration = 4.5, temperature = 75, efficiency = 0.8 }
   t:near(parts.vibration, 0.5, 1e-12)
   t:near(parts.temperature, 0.5, 1e-12)
   t:near(parts.efficiency, 1, 1e-12)
   t:near(v, (2 * 0.5 + 0.5 + 1) / 4, 1e-12)
   t:near((hi:compute { vibration = 100 }), 0, 0)
   t:near((hi:compute { vibration = -1 }), 1, 0)
   t:eq((hi:compute {}), nil)
   local mn = predict.health_index { combine = "min", indicators = {
      { name = "a", good = 0, bad = 1 }, { name = "b", good = 0, bad = 1 } } }
   t:near((mn:compute { a = 0.2, b = 0.6 }), 0.4, 1e-12)
   local g = predict.health_index { combine = "geometric", indicators = {
      { name = "a", good = 0, bad = 1 }, { name = "b", good = 0, bad = 1 } } }
   t:near((g:compute { a = 0.75, b = 0 }), 0.5, 1e-9)
end)

test.case("linear model recovers exact coefficients", function(t)
   local X, y = {}, {}
   for i = 1, 50 do
      local a, b, c = i, (i * 7) % 11, math.sin(i)
      X[i] = { a, b, c }
      y[i] = 3 + 2 * a - 0.5 * b + 10 * c
   end
   local m = predict.linear(X, y, { ridge = 0 })
   t:near(m.intercept, 3, 1e-8)
   t:near(m.coef[1], 2, 1e-9)
   t:near(m.coef[2], -0.5, 1e-9)
   t:near(m.coef[3], 10, 1e-8)
   t:near(m.rmse, 0, 1e-8)
   t:near(m:predict({ 1, 1, 0 }), 4.5, 1e-8)
   -- a constant column is harmless
   for i = 1, 50 do X[i][4] = 7 end
   local m2 = predict.linear(X, y)
   t:near(m2:predict({ 1, 1, 0, 7 }), 4.5, 1e-3)
end)

test.case("similarity: a unit following a library curve gets its remaining life", function(t)
   local runs = {}
   for r = 1, 12 do
      local len = 100 + 10 * r
      local c = {}
      for i = 1, len do c[i] = 1 - ((i / len) ^ 2) end  -- each run ends at 0
      runs[r] = c
   end
   local sim = predict.similarity(runs, { neighbours = 1, window = 30 })
   -- a unit on run 5's curve, 40 cycles from the end
   local c5 = runs[5]
   local unit = table.move(c5, 1, #c5 - 40, 1, {})
   local e = sim:estimate(unit)
   t:near(e.rul, 40, 1e-9)
   t:eq(e.matches, 1)
   local sim3 = predict.similarity(runs, { neighbours = 3, window = 30, max_rul = 30 })
   local e3 = sim3:estimate(unit)
   t:ok(e3.rul <= 30 and e3.lower <= e3.rul and e3.upper >= e3.rul)
end)

test.case("bad arguments raise errors naming the argument", function(t)
   t:raises(function() predict.trend { size = -3 } end,
      "doppel.predict.trend: size must be a positive integer, got -3")
   t:raises(function() predict.trend { model = "cubic" } end, "model must be")
   t:raises(function() predict.trend():push("x", 1) end, "value must be a number")
   t:raises(function() predict.trend():push(1) end, "t must be a number")
   t:raises(function() predict.trend():rul("high") end, "threshold must be a number")
   t:raises(function() predict.trend():rul(1, 1.5) end, "confidence must be in (0, 1)")
   t:raises(function() predict.health_index { indicators = {} } end, "indicators must be")
   t:raises(function() predict.health_index { indicators = { { name = "a", good = 1, bad = 1 } } }
   end, "good and bad must differ")
   t:raises(function() predict.health_index { indicators = { { name = "a", good = 1 } } } end,
      "indicators[1].bad must be a number")
   t:raises(function() predict.linear({ { 1 } }, { 1, 2 }) end, "y must be a list of 1 numbers")
   t:raises(function() predict.linear({ { 1 }, { "a" } }, { 1, 2 }) end, "X[2][1] must be a number")
   t:raises(function() predict.similarity({}) end, "runs must be a non-empty list")
   t:raises(function() predict.similarity({ { 1, 2 } }, { neighbours = 0 }) end,
      "neighbours must be a positive integer")
   t:raises(function() predict.similarity({ { 1, 2 } }):estimate({}) end, "curve must be")
   t:raises(function() predict.normal_quantile(1) end, "p must be in (0, 1)")
end)
