-- Tests of doppel.detect: each detector stays quiet on in-control data and
-- scores a known anomaly high; scores are in [0, 1]; bad arguments.
local test = require "doppel.test"
local detect = require "doppel.detect"

-- Deterministic approximately-normal noise (sum of 12 uniforms - 6).
local function noise(seed)
   local s = seed
   local function u()
      s = (s * 1103515245 + 12345) % 2147483648
      return s / 2147483648
   end
   return function()
      local x = 0
      for _ = 1, 12 do x = x + u() end
      return x - 6
   end
end

local function run(d, n, f)
   local max_before, scores = 0, {}
   for i = 1, n do
      local s = d:update(f(i), i * 60)
      assert(s >= 0 and s <= 1, "score out of [0, 1]: " .. s)
      scores[i] = s
   end
   return scores, max_before
end

local function max_of(xs, a, b)
   local m = 0
   for i = a, b do if xs[i] > m then m = xs[i] end end
   return m
end

test.case("score of a standardised deviation follows the normal law", function(t)
   t:near(detect.zscore_to_score(0), 0, 1e-7)
   t:near(detect.zscore_to_score(1), 0.682689, 1e-6)
   t:near(detect.zscore_to_score(-2), 0.954500, 1e-6)
   t:near(detect.zscore_to_score(3), 0.997300, 1e-6)
   t:near(detect.chi2_cdf(3.841459, 1), 0.95, 1e-6)
   t:near(detect.chi2_cdf(5.991465, 2), 0.95, 1e-6)
   t:near(detect.chi2_cdf(23.209251, 10), 0.99, 1e-6)
end)

test.case("zscore: quiet on noise, high on a spike, scored before learning it", function(t)
   local n = noise(3)
   local d = detect.zscore { size = 100 }
   local s = run(d, 600, function(i) return i == 500 and 10 or n() end)
   t:ok(max_of(s, 101, 499) < 0.9999, "no false alarm at 4 sigma")
   t:ok(s[500] > 0.99999, "spike scored " .. s[500])
   t:eq(s[1], 0, "warm-up scores 0")
   local d2 = detect.zscore { span = "1h" }
   local s2 = run(d2, 300, function(i) return i == 250 and 10 or n() end)
   t:ok(s2[250] > 0.9999)
end)

test.case("ewma chart catches a small persistent shift", function(t)
   local n = noise(5)
   local d = detect.ewma { lambda = 0.1 }
   local s = run(d, 700, function(i) return (i > 500 and 1.5 or 0) + n() end)
   t:ok(max_of(s, 31, 500) < 0.9999, "quiet before the shift: " .. max_of(s, 31, 500))
   t:ok(max_of(s, 501, 540) > 0.9999, "shift found within 40 samples: " .. max_of(s, 501, 540))
end)

test.case("cusum: known mean and std; detects a 1-sigma shift", function(t)
   local n = noise(11)
   local d = detect.cusum { mean = 0, std = 1, k = 0.5, h = 8 }
   local s = run(d, 400, function(i) return (i > 300 and 1 or 0) + n() end)
   t:ok(max_of(s, 1, 300) < 1, "no signal in control")
   local first
   for i = 301, 400 do
      if s[i] >= 1 then first = i break end
   end
   t:ok(first and first < 340, "signal soon after the shift: " .. tostring(first))
   -- learned baseline
   local d2 = detect.cusum { warmup = 50 }
   local s2 = run(d2, 200, function(i) return 10 + (i > 150 and 3 or 0) + n() end)
   t:eq(s2[10], 0)
   t:ok(max_of(s2, 151, 200) >= 1)
end)

test.case("page-hinkley detects a drift of the mean", function(t)
   local n = noise(13)
   local d = detect.page_hinkley { delta = 0.1, lambda = 20 }
   local s = run(d, 800, function(i) return (i > 500 and (i - 500) * 0.02 or 0) + n() end)
   t:ok(max_of(s, 1, 500) < 1, "in control: " .. max_of(s, 1, 500))
   t:ok(max_of(s, 501, 800) >= 1, "drift detected")
end)

test.case("seasonal: normal for its hour is not anomalous; odd for its hour is", function(t)
   local n = noise(17)
   local d = detect.seasonal { period = "1d", slots = 24 }
   local function value(h) return (h >= 8 and h < 18) and 100 or 10 end
   local scores = {}
   for day = 0, 9 do
      for h = 0, 23 do
         local tt = day * 86400 + h * 3600 + 1800
         local v = value(h) + n()
         if day == 9 and h == 3 then v = 100 end -- day-time level at 3 am
         scores[#scores + 1] = { day = day, h = h, s = d:update(v, tt) }
      end
   end
   for _, r in ipairs(scores) do
      if r.day >= 5 and not (r.day == 9 and r.h == 3) then
         t:ok(r.s < 0.9999, "day " .. r.day .. " hour " .. r.h .. " scored " .. r.s)
      end
   end
   t:ok(scores[9 * 24 + 4].s > 0.9999, "3 am at the day-time level is anomalous")
   -- the same level at noon is not: a global z-score could not tell them apart
   t:ok(scores[9 * 24 + 13].s < 0.999)
end)

test.case("ensemble: max, mean, vote and hold-off", function(t)
   local a, b = detect.zscore { size = 50 }, detect.cusum { mean = 0, std = 1 }
   local e = detect.ensemble { detectors = { a, b }, combine = "max" }
   local n = noise(19)
   for i = 1, 100 do e:update(n(), i) end
   local s = e:update(8, 101)
   t:near(s, math.max(a.score, b.score), 1e-12)
   t:ok(s > 0.99, "max " .. s)
   local m = detect.ensemble { detectors = { detect.zscore { size = 50 },
      detect.zscore { size = 20 } }, combine = "mean", weights = { 1, 3 } }
   for i = 1, 100 do m:update(n(), i) end
   t:ok(m:update(8, 101) > 0.99)
   local v = detect.ensemble { detectors = { detect.zscore { size = 50 },
      detect.cusum { mean = 0, std = 1, h = 100 } }, combine = "vote", threshold = 0.99 }
   for i = 1, 100 do v:update(n(), i) end
   t:near(v:update(8, 101), 0.5, 1e-12)
   -- hold: a second spike one second after the first is damped
   local h = detect.ensemble { detectors = { detect.zscore { size = 50 } }, hold = 100,
      threshold = 0.9999 }
   for i = 1, 100 do h:update(n(), i) end
   t:ok(h:update(9, 101) > 0.99)
   t:ok(h:update(9, 102) < 0.02)
   for i = 103, 300 do h:update(n(), i) end
   t:ok(h:update(12, 301) > 0.99, "after the hold, alerts again")
end)

test.case("hotelling T2 catches a broken correlation no single variable shows", function(t)
   local n = noise(23)
   local d = detect.hotelling { vars = { "flow", "power" }, learn = 200 }
   -- healthy: power follows flow
   for _ = 1, 200 do
      local f = 100 + 10 * n()
      t:eq(d:update({ flow = f, power = 0.5 * f + 0.5 * n() }), 0)
   end
   t:ok(d.learned)
   local quiet = 0
   for _ = 1, 200 do
      local f = 100 + 10 * n()
      quiet = math.max(quiet, d:update({ flow = f, power = 0.5 * f + 0.5 * n() }))
   end
   t:ok(quiet < 0.99999, "healthy data stays below 0.99999: " .. quiet)
   -- each value inside its healthy range, but the pair is not
   local s = d:update({ flow = 110, power = 45 })
   t:ok(s > 0.99999, "score " .. s)
   t:ok(d.t2 > 50)
   -- lists work too, and an explicit learn/fit
   local d2 = detect.hotelling { vars = 2 }
   for i = 1, 10 do d2:learn({ i, 2 * i + (i % 2) }) end
   d2:fit()
   t:ok(d2:update({ 5, 10 }) < 0.99)
   t:raises(function() d2:learn({ 1, 2 }) end, "the baseline is already fixed")
end)

test.case("bad arguments raise errors naming the argument", function(t)
   t:raises(function() detect.zscore { size = -3 } end,
      "doppel.detect.zscore: size must be a positive integer, got -3")
   t:raises(function() detect.zscore(3) end, "options must be a table")
   t:raises(function() detect.zscore():update("x") end,
      "doppel.detect.zscore.update: value must be a number, got \"x\"")
   t:raises(function() detect.zscore():update(1, "noon") end, "t must be a number of seconds")
   t:raises(function() detect.ewma { lambda = 2 } end, "lambda must be a number in [1e-06, 1]")
   t:raises(function() detect.cusum { h = 0 } end, "h must be a number")
   t:raises(function() detect.cusum { std = -1 } end, "std must be a number")
   t:raises(function() detect.page_hinkley { lambda = "big" } end, "lambda must be a number")
   t:raises(function() detect.seasonal { period = "soon" } end, "period must be a positive")
   t:raises(function() detect.seasonal { slots = 0 } end, "slots must be a positive integer")
   t:raises(function() detect.ensemble { detectors = {} } end, "detectors must be a non-empty")
   t:raises(function() detect.ensemble { detectors = { 1 } } end, "detectors[1] must be a detector")
   t:raises(function() detect.ensemble { detectors = { detect.zscore() }, combine = "min" } end,
      "combine must be")
   t:raises(function() detect.hotelling { vars = {} } end, "vars must be a list of names")
   t:raises(function() detect.hotelling { vars = 2 }:update({ 1 }) end,
      "sample[2] must be a number")
   t:raises(function() detect.hotelling { vars = 2 }:fit() end, "needs at least 3 samples")
end)
