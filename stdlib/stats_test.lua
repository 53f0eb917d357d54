-- Tests of doppel.stats: exact results on known data, the quantile sketch's
-- error bound, bounded memory, and errors naming the bad argument.
local test = require "doppel.test"
local stats = require "doppel.stats"

-- A deterministic pseudo-random sequence (LCG), so results do not depend on math.random.
local function lcg(seed)
   local s = seed
   return function()
      s = (s * 1103515245 + 12345) % 2147483648
      return s / 2147483648
   end
end

local function exact_stats(xs)
   local n, sum = #xs, 0
   for _, x in ipairs(xs) do sum = sum + x end
   local mean, ss = sum / n, 0
   for _, x in ipairs(xs) do ss = ss + (x - mean) ^ 2 end
   local lo, hi = math.huge, -math.huge
   for _, x in ipairs(xs) do lo, hi = math.min(lo, x), math.max(hi, x) end
   return mean, n > 1 and ss / (n - 1) or 0, lo, hi
end

test.case("count window: mean, variance, min, max match a brute-force window", function(t)
   local w = stats.window { size = 7 }
   local rnd, all = lcg(1), {}
   for i = 1, 500 do
      local x = math.floor(rnd() * 1000) / 10 - 50
      all[i] = x
      w:push(x)
      local lo = math.max(1, i - 6)
      local m, v, mn, mx = exact_stats(table.move(all, lo, i, 1, {}))
      t:eq(w:count(), i - lo + 1)
      t:near(w:mean(), m, 1e-9)
      t:near(w:variance(), v, 1e-7)
      t:eq(w:min(), mn)
      t:eq(w:max(), mx)
   end
end)

test.case("count window: monotonic deques on sorted and constant input", function(t)
   local w = stats.window { size = 3 }
   for i = 1, 10 do w:push(i) end
   t:eq(w:min(), 8)
   t:eq(w:max(), 10)
   for _ = 1, 5 do w:push(5) end
   t:eq(w:min(), 5)
   t:eq(w:max(), 5)
   t:near(w:variance(), 0, 1e-9)
   t:eq(w:values(), { 5, 5, 5 })
end)

test.case("count window: min and max first asked after the window wrapped", function(t)
   -- The deques are built only when min or max is first asked for: from then
   -- on they must agree with a window that kept them from the start.
   for _, first in ipairs({ 1, 12, 37, 300 }) do
      local w = stats.window { size = 9 }
      local rnd, all = lcg(first), {}
      for i = 1, 400 do
         local x = math.floor(rnd() * 40) -- repeats: ties in the deques
         all[i] = x
         w:push(x)
         if i >= first then
            local lo = math.max(1, i - 8)
            local _, _, mn, mx = exact_stats(table.move(all, lo, i, 1, {}))
            t:eq(w:min(), mn, "min after " .. i .. " samples, asked from " .. first)
            t:eq(w:max(), mx, "max after " .. i .. " samples, asked from " .. first)
         end
      end
   end
end)

test.case("count window: moments() is count(), mean() and stddev()", function(t)
   local w = stats.window { size = 5 }
   local n, mean, sd = w:moments()
   t:eq(n, 0)
   t:eq(mean, nil)
   t:eq(sd, nil)
   local rnd = lcg(7)
   for _ = 1, 20 do
      w:push(rnd() * 100)
      n, mean, sd = w:moments()
      t:eq(n, w:count())
      t:eq(mean, w:mean())
      t:eq(sd, w:stddev())
   end
end)

test.case("time window: samples older than the span leave it", function(t)
   local w = stats.window { span = "10s" }
   for s = 0, 30 do w:push(s, 1000 + s) end
   -- (1020, 1030] is 21..30
   t:eq(w:count(), 10)
   t:eq(w:min(), 21)
   t:eq(w:max(), 30)
   t:near(w:mean(), 25.5, 1e-12)
   w:expire(1100)
   t:eq(w:count(), 0)
   t:eq(w:mean(), nil)
   t:raises(function() w:push(1, 900) end, "t must not go back in time")
   t:eq(stats.window { span = "1h30min" }.span, 5400)
end)

test.case("time window: max_count bounds memory", function(t)
   local w = stats.window { span = 1e9, max_count = 50 }
   for i = 1, 1000 do w:push(i, i) end
   t:eq(w:count(), 50)
   t:eq(w:min(), 951)
end)

test.case("window quantile is exact (type 7 interpolation)", function(t)
   local w = stats.window { size = 5 }
   for _, x in ipairs { 10, 1, 4, 3, 2 } do w:push(x) end
   t:eq(w:quantile(0), 1)
   t:eq(w:quantile(0.5), 3)
   t:eq(w:quantile(1), 10)
   t:near(w:quantile(0.25), 2, 1e-12)
   t:near(w:quantile(0.9), 4 + 0.6 * 6, 1e-12)
end)

test.case("sketch: every quantile within the documented relative error", function(t)
   for _, alpha in ipairs { 0.01, 0.05 } do
      local sk = stats.sketch { alpha = alpha }
      local rnd, xs = lcg(7), {}
      for i = 1, 20000 do
         -- Log-normal-ish positive values over several decades, and some negatives.
         local x = math.exp(rnd() * 12 - 4)
         if i % 10 == 0 then x = -x end
         xs[i] = x
         sk:add(x)
      end
      table.sort(xs)
      for _, q in ipairs { 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999 } do
         local exact = xs[math.floor(q * (#xs - 1)) + 1]
         local est = sk:quantile(q)
         t:ok(math.abs(est - exact) <= alpha * math.abs(exact) + 1e-12,
            string.format("alpha %g q %g: %g vs %g", alpha, q, est, exact))
      end
      t:eq(sk:quantile(0), xs[1])
      t:eq(sk:quantile(1), xs[#xs])
      t:ok(sk.nbins < 2048, "bins stay bounded")
   end
end)

test.case("sketch: merge equals one sketch of everything; zeros", function(t)
   local a, b, c = stats.sketch(), stats.sketch(), stats.sketch()
   for i = 1, 1000 do
      local x = (i % 7 == 0) and 0 or i
      if i % 2 == 0 then a:add(x) else b:add(x) end
      c:add(x)
   end
   a:merge(b)
   for _, q in ipairs { 0.1, 0.5, 0.9 } do t:eq(a:quantile(q), c:quantile(q)) end
   t:eq(a:count(), 1000)
   t:eq(c:quantile(0), 0)
end)

test.case("sketch: max_bins is respected", function(t)
   local sk = stats.sketch { alpha = 0.001, max_bins = 100 }
   for i = 1, 5000 do sk:add(i * 1.37) end
   t:ok(sk.nbins <= 100, "nbins " .. sk.nbins)
   -- High quantiles stay accurate: only the lowest bins are merged.
   t:near(sk:quantile(0.99), 0.99 * 4999 * 1.37 + 1.37, 0.001 * 5000 * 1.37 + 1.37)
end)

test.case("ewma by factor and by half-life", function(t)
   local e = stats.ewma { alpha = 0.5 }
   t:eq(e:push(10), 10)
   t:eq(e:push(20), 15)
   t:eq(e:push(15), 15)
   local h = stats.ewma { halflife = "1min" }
   h:push(0, 0)
   -- After exactly one half-life a new sample carries half the weight.
   t:near(h:push(100, 60), 50, 1e-9)
   t:near(h:push(100, 120), 75, 1e-9)
   t:ok(h:stddev() > 0)
end)

test.case("regression on exact data recovers slope, intercept and r2", function(t)
   local r = stats.regression()
   for i = 0, 99 do r:push(3.5 - 0.25 * i, 1.7e9 + i) end
   local b, a, r2 = r:fit()
   t:near(b, -0.25, 1e-9)
   t:near(a + b * 1.7e9, 3.5, 1e-6)
   t:near(r2, 1, 1e-12)
   t:near(r:predict(1.7e9 + 200), 3.5 - 50, 1e-6)
   local se = r:stderr()
   t:near(se, 0, 1e-9)
end)

test.case("regression on a window forgets old points", function(t)
   local r = stats.regression { size = 10 }
   for i = 1, 50 do r:push(2 * i, i) end          -- slope 2
   for i = 51, 60 do r:push(100 - 5 * (i - 50), i) end -- then slope -5
   t:near(r:slope(), -5, 1e-9)
   t:near(r:r2(), 1, 1e-9)
   local s = stats.regression { span = 10 }
   for i = 1, 100 do s:push(i % 2 == 0 and 1 or -1, i) end
   t:ok(math.abs(s:slope()) < 0.2)
   t:eq(s.n, 10)
end)

test.case("regression r2 and stderr on noisy data", function(t)
   -- y = x + e with e alternating +-1: r2 = var(x)/(var(x)+1) approx.
   local r = stats.regression()
   for i = 1, 200 do r:push(i + (i % 2 == 0 and 1 or -1), i) end
   local b, _, r2 = r:fit()
   t:near(b, 1, 1e-3)
   t:ok(r2 > 0.999 and r2 < 1)
   local se, sd = r:stderr()
   t:ok(se > 0 and se < 0.01)
   t:near(sd, 1, 0.01)
end)

test.case("histogram counts, edges and quantile", function(t)
   local h = stats.histogram { min = 0, max = 10, bins = 10 }
   for i = 0, 99 do h:add(i / 10) end
   h:add(-1)
   h:add(10)
   t:eq(h.counts[1], 10)
   t:eq(h.counts[10], 10)
   t:eq(h.under, 1)
   t:eq(h.over, 1)
   local lo, hi = h:edges(3)
   t:eq(lo, 2)
   t:eq(hi, 3)
   t:near(h:quantile(0.5), 5, 0.11)
end)

test.case("bad arguments raise errors naming the argument", function(t)
   t:raises(function() stats.window { size = -3 } end,
      "doppel.stats.window: size must be a positive integer, got -3")
   t:raises(function() stats.window { size = 1.5 } end, "size must be a positive integer")
   t:raises(function() stats.window {} end, "give exactly one of size or span")
   t:raises(function() stats.window { span = "ten" } end, "span must be a positive number")
   t:raises(function() stats.window(5) end, "options must be a table")
   t:raises(function() stats.window { size = 3 }:push("x") end,
      "doppel.stats.window.push: value must be a number, got \"x\"")
   t:raises(function() stats.window { size = 3 }:quantile(2) end, "q must be in [0, 1]")
   t:raises(function() stats.sketch { alpha = 1.5 } end, "alpha must be in (0, 1)")
   t:raises(function() stats.sketch():add(0 / 0) end, "value must be a number")
   t:raises(function() stats.ewma {} end, "give exactly one of alpha or halflife")
   t:raises(function() stats.ewma { alpha = 0 } end, "alpha must be in (0, 1]")
   t:raises(function() stats.regression { size = 0 } end, "size must be a positive integer")
   t:raises(function() stats.regression():push(1, "now") end, "x must be a number")
   t:raises(function() stats.histogram { min = 1, max = 0, bins = 3 } end,
      "max must be greater than min")
   t:raises(function() stats.histogram { min = 0, max = 1 } end, "bins must be a positive integer")
end)
