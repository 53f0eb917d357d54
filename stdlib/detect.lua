--- doppel.detect: streaming anomaly detectors with one interface.
---
--- Every detector has `d:update(value, t) -> score`, a score in [0, 1] (0:
--- ordinary, close to 1: anomalous), computed from past samples only: the
--- sample is scored against what came before it, then learned. `t` is the
--- sample time in seconds (default: the twin clock); only the seasonal
--- detector and time-based windows need it. Work per sample is O(1) or
--- O(window) at worst for the ensemble of its members; memory is bounded.
---
--- Which one to use:
--- * `zscore`      a level jump or spike against a rolling window: the default.
--- * `ewma`        small persistent shifts of the mean (EWMA control chart).
--- * `cusum`       small shifts of a known in-control mean, detected quickly.
--- * `page_hinkley` a drift or change of the mean, without knowing its size.
--- * `seasonal`    signals with a daily / weekly pattern: compares each sample
---                 with what is usual at that phase of the period.
--- * `auto`        a signal you know little about: level and seasonal
---                 deviations, each calibrated by its own history, with a
---                 hold-off (the configuration benchmarked on NAB).
--- * `likelihood`  turns another detector's noisy scores into how improbable
---                 their recent average is (Numenta's anomaly likelihood).
--- * `ensemble`    several of the above combined (max, mean or vote), with an
---                 optional hold-off so one event gives one alert.
--- * `hotelling`   several tags of one asset at once against a learned healthy
---                 baseline (Hotelling T2): catches broken correlations that
---                 no single tag shows.
---
--- ```lua
--- local detect = require "doppel.detect"
--- local d = detect.zscore { size = 288 }
--- twin.on_change("temperature", function(v, tag)
---    tags.temperature_anomaly = d:update(v, tag.ts)
--- end)
--- ```
local stats = require "doppel.stats"
local linalg = require "doppel._linalg"

local M = {}

local abs, sqrt, exp, log, floor = math.abs, math.sqrt, math.exp, math.log, math.floor
local type, tostring, error, setmetatable = type, tostring, error, setmetatable

local huge_n = 2 ^ 53

local function fail(fn, msg, level)
   error("doppel.detect." .. fn .. ": " .. msg, level or 3)
end

local function show(v)
   if type(v) == "string" then return string.format("%q", v) end
   return tostring(v)
end

local function num(fn, name, v, lo, hi)
   if type(v) ~= "number" or v ~= v or (lo and v < lo) or (hi and v > hi) then
      local range = ""
      if lo and hi then range = " in [" .. lo .. ", " .. hi .. "]"
      elseif lo then range = " >= " .. lo end
      fail(fn, name .. " must be a number" .. range .. ", got " .. show(v), 4)
   end
   return v
end

local function posint(fn, name, v)
   if type(v) ~= "number" or v ~= floor(v) or v < 1 then
      fail(fn, name .. " must be a positive integer, got " .. show(v), 4)
   end
   return floor(v)
end

local function opts_of(fn, opts)
   if opts == nil then return {} end
   if type(opts) ~= "table" then fail(fn, "options must be a table, got " .. show(opts), 4) end
   return opts
end

local function now_or(t)
   if t ~= nil then return t end
   local c = rawget(_G, "clock")
   if c and c.now then return c.now() end
   return 0
end

--- erfc with fractional error below 1.2e-7 (Chebyshev fit, Numerical Recipes).
local function erfc(x)
   local z = x -- abs(x), written out (-0 and 0 give the same result)
   if z < 0 then z = -z end
   local t = 1 / (1 + 0.5 * z)
   local r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
      + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
      + t * (-0.82215223 + t * 0.17087277)))))))))
   if x >= 0 then return r end
   return 2 - r
end

--- Score of a standardised deviation z: P(|Z| < |z|) for a normal Z.
---@param z number
---@return number in [0, 1)
function M.zscore_to_score(z)
   if z ~= z then return 0 end
   if z < 0 then z = -z end -- abs(z), written out
   local s = 1 - erfc(z / 1.4142135623730951)
   if s < 0 then return 0 end
   return s
end
local z2s = M.zscore_to_score

---@class doppel.detect.Detector
---@field score number       the last score (0 before the first update)
---@field kind string        "zscore", "ewma", ...
---@field update fun(self: doppel.detect.Detector, value: number, t?: number): number
---  scores a sample against the past (in [0, 1]), then learns it

local function class(kind)
   local c = {}
   c.__index = c
   c.kind = kind
   c.update = function(self, value, t)
      if type(value) ~= "number" or value ~= value then
         fail(kind .. ".update", "value must be a number, got " .. show(value))
      end
      if t ~= nil and type(t) ~= "number" then
         fail(kind .. ".update", "t must be a number of seconds, got " .. show(t))
      end
      local s = c.step(self, value, t)
      if s ~= s or s < 0 then s = 0 elseif s > 1 then s = 1 end
      self.score = s
      return s
   end
   return c
end

-------------------------------------------------------------------------------
-- Rolling z-score
-------------------------------------------------------------------------------

---@class doppel.detect.ZscoreOptions
---@field size? integer        window length in samples (default 100)
---@field span? number|string  or a time window
---@field warmup? integer      samples before scoring (default min(size, 10) or 10)
---@field min_std? number      floor on the standard deviation (default 1e-9)

local Zscore = class("zscore")

--- Rolling z-score: |x - mean| / std over a rolling window, as a probability.
---@param opts? doppel.detect.ZscoreOptions
---@return doppel.detect.Detector
function M.zscore(opts)
   opts = opts_of("zscore", opts)
   local w
   if opts.span ~= nil then
      w = stats.window { span = opts.span }
   else
      w = stats.window { size = posint("zscore", "size", opts.size or 100) }
   end
   local warm = posint("zscore", "warmup", opts.warmup or math.min(w.size, 10))
   -- timed: a time window (a field that always exists, read on every sample)
   return setmetatable({ score = 0, w = w, warmup = warm, timed = w.span ~= nil,
      min_std = num("zscore", "min_std", opts.min_std or 1e-9, 0) }, Zscore)
end

function Zscore.step(self, x, t)
   local w, timed = self.w, self.timed
   if timed then w:expire(now_or(t)) end
   local s = 0
   local n, mean, sd = w:moments()
   if n >= self.warmup then
      if sd < self.min_std then sd = self.min_std end
      s = z2s((x - mean) / sd)
   end
   w:push(x, timed and now_or(t) or nil)
   return s
end

-------------------------------------------------------------------------------
-- EWMA control chart
-------------------------------------------------------------------------------

---@class doppel.detect.EwmaOptions
---@field lambda? number     smoothing of the chart statistic in (0, 1] (default 0.2)
---@field alpha? number      how fast the in-control mean and std adapt (default 0.01)
---@field warmup? integer    samples before scoring (default 30)

local Ewma = class("ewma")

--- EWMA control chart: the smoothed statistic z = lambda x + (1 - lambda) z
--- against the in-control mean, in units of its own standard deviation
--- sigma sqrt(lambda / (2 - lambda)). The in-control mean and sigma adapt
--- slowly (alpha), so persistent shifts eventually become the new normal.
---@param opts? doppel.detect.EwmaOptions
---@return doppel.detect.Detector
function M.ewma(opts)
   opts = opts_of("ewma", opts)
   local lambda = num("ewma", "lambda", opts.lambda or 0.2, 1e-6, 1)
   local alpha = num("ewma", "alpha", opts.alpha or 0.01, 1e-9, 1)
   return setmetatable({ score = 0, lambda = lambda, alpha = alpha, mean = 0, var = 0,
      warmup = posint("ewma", "warmup", opts.warmup or 30), n = 0 }, Ewma)
end

function Ewma.step(self, x)
   self.n = self.n + 1
   local s = 0
   if self.z == nil then self.z = x else self.z = self.lambda * x + (1 - self.lambda) * self.z end
   if self.n > self.warmup then
      local sd = sqrt(self.var) * sqrt(self.lambda / (2 - self.lambda))
      if sd < 1e-12 then sd = 1e-12 end
      s = z2s((self.z - self.mean) / sd)
   end
   -- In-control estimates: plain averages at first, then exponentially
   -- weighted (weight never below alpha), so the start is not biased.
   local a = math.max(self.alpha, 1 / self.n)
   local d = x - self.mean
   self.mean = self.mean + a * d
   self.var = (1 - a) * (self.var + a * d * d)
   if self.n == 2 then self.var = d * d / 2 end
   return s
end

-------------------------------------------------------------------------------
-- CUSUM
-------------------------------------------------------------------------------

---@class doppel.detect.CusumOptions
---@field k? number          allowance in standard deviations (default 0.5)
---@field h? number          decision interval in standard deviations (default 5)
---@field mean? number       in-control mean (default: learned during warmup)
---@field std? number        in-control standard deviation (default: learned)
---@field warmup? integer    samples to learn mean and std (default 30)
---@field reset? boolean     restart the sums after reaching h (default true)

local Cusum = class("cusum")

--- Two-sided tabular CUSUM on standardised samples. Score max(S+, S-) / h.
---@param opts? doppel.detect.CusumOptions
---@return doppel.detect.Detector
function M.cusum(opts)
   opts = opts_of("cusum", opts)
   local self = setmetatable({ score = 0,
      k = num("cusum", "k", opts.k or 0.5, 0), h = num("cusum", "h", opts.h or 5, 1e-9),
      warmup = posint("cusum", "warmup", opts.warmup or 30), reset = opts.reset ~= false,
      sp = 0, sn = 0, n = 0, m = 0, m2 = 0 }, Cusum)
   if opts.mean ~= nil then self.mean = num("cusum", "mean", opts.mean) end
   if opts.std ~= nil then self.std = num("cusum", "std", opts.std, 1e-12) end
   return self
end

function Cusum.step(self, x)
   if self.mean == nil or self.std == nil then
      self.n = self.n + 1
      local d = x - self.m
      self.m = self.m + d / self.n
      self.m2 = self.m2 + d * (x - self.m)
      if self.n >= self.warmup then
         self.mean = self.mean or self.m
         self.std = self.std or math.max(sqrt(self.m2 / math.max(1, self.n - 1)), 1e-12)
      end
      return 0
   end
   local z = (x - self.mean) / self.std
   self.sp = math.max(0, self.sp + z - self.k)
   self.sn = math.max(0, self.sn - z - self.k)
   local s = math.max(self.sp, self.sn) / self.h
   if s >= 1 and self.reset then self.sp, self.sn = 0, 0 end
   return s
end

-------------------------------------------------------------------------------
-- Page-Hinkley
-------------------------------------------------------------------------------

---@class doppel.detect.PageHinkleyOptions
---@field delta? number      magnitude of changes to ignore (default 0.005)
---@field lambda? number     detection threshold (default 50)
---@field forget? number     forgetting factor of the running mean in (0, 1] (default 1)
---@field warmup? integer    samples before scoring (default 30)

local PH = class("page_hinkley")

--- Page-Hinkley test for a change of the mean (both directions). Score
--- (m - min m) / lambda, clipped to 1; the test restarts after a detection.
---@param opts? doppel.detect.PageHinkleyOptions
---@return doppel.detect.Detector
function M.page_hinkley(opts)
   opts = opts_of("page_hinkley", opts)
   return setmetatable({ score = 0,
      delta = num("page_hinkley", "delta", opts.delta or 0.005, 0),
      lambda = num("page_hinkley", "lambda", opts.lambda or 50, 1e-12),
      forget = num("page_hinkley", "forget", opts.forget or 1, 1e-9, 1),
      warmup = posint("page_hinkley", "warmup", opts.warmup or 30),
      n = 0, mean = 0, up = 0, upmin = 0, dn = 0, dnmax = 0 }, PH)
end

function PH.step(self, x)
   self.n = self.n + 1
   self.mean = self.mean + (x - self.mean) / self.n
   local d = x - self.mean
   self.up = self.forget * self.up + d - self.delta
   self.dn = self.forget * self.dn + d + self.delta
   if self.up < self.upmin then self.upmin = self.up end
   if self.dn > self.dnmax then self.dnmax = self.dn end
   if self.n < self.warmup then return 0 end
   local s = math.max(self.up - self.upmin, self.dnmax - self.dn) / self.lambda
   if s >= 1 then
      self.n, self.mean, self.up, self.upmin, self.dn, self.dnmax = 0, 0, 0, 0, 0, 0
   end
   return s
end

-------------------------------------------------------------------------------
-- Seasonal (contextual)
-------------------------------------------------------------------------------

---@class doppel.detect.SeasonalOptions
---@field period? number|string   season length in time (default "1d")
---@field slots? integer          phases per period (default 24)
---@field alpha? number           adaptation of each slot's mean and spread (default 0.1)
---@field warmup? integer         samples a slot needs before it scores (default 3)

local Seasonal = class("seasonal")

--- Contextual detector: the period is split into slots (24 hourly slots of a
--- day by default); each slot keeps an exponentially weighted mean and spread
--- of the samples that fell into it, and a sample is scored against its own
--- slot, so "high for 3 am" is caught even when it is normal for 3 pm.
---@param opts? doppel.detect.SeasonalOptions
---@return doppel.detect.Detector
function M.seasonal(opts)
   opts = opts_of("seasonal", opts)
   local period = stats._seconds("doppel.detect.seasonal", "period", opts.period or 86400)
   local slots = posint("seasonal", "slots", opts.slots or 24)
   if slots > 100000 then fail("seasonal", "slots must be at most 100000, got " .. slots) end
   local alpha = num("seasonal", "alpha", opts.alpha or 0.1, 1e-9, 1)
   local self = setmetatable({ score = 0, period = period, slots = slots,
      warmup = posint("seasonal", "warmup", opts.warmup or 3),
      mean = {}, var = {}, n = {}, alpha = alpha,
      global = stats.ewma { alpha = 0.01 } }, Seasonal)
   return self
end

function Seasonal.step(self, x, t)
   t = now_or(t)
   local slot = floor((t % self.period) / self.period * self.slots) + 1
   if slot > self.slots then slot = self.slots end
   local n = self.n[slot] or 0
   local s = 0
   local g = self.global
   if n >= self.warmup then
      -- Floor the slot's spread by a fraction of the overall spread, so a slot
      -- that was constant does not make every small wiggle an anomaly.
      local sd = sqrt(self.var[slot])
      local floor_sd = 0.1 * (g:stddev() or 0) + 1e-9
      if sd < floor_sd then sd = floor_sd end
      s = z2s((x - self.mean[slot]) / sd)
   end
   g:push(x)
   if n == 0 then
      self.mean[slot], self.var[slot] = x, 0
   else
      local a = math.max(self.alpha, 1 / (n + 1))
      local d = x - self.mean[slot]
      self.mean[slot] = self.mean[slot] + a * d
      self.var[slot] = (1 - a) * (self.var[slot] + a * d * d)
   end
   self.n[slot] = n + 1
   return s
end

-------------------------------------------------------------------------------
-- Ensemble
-------------------------------------------------------------------------------

---@class doppel.detect.EnsembleOptions
---@field detectors doppel.detect.Detector[]   members (at least one)
---@field combine? "max"|"mean"|"vote"        how scores combine (default "max")
---@field weights? number[]                   weights for "mean"
---@field threshold? number                   member score counted as a vote (default 0.99)
---@field hold? number                        after a score >= threshold, later scores are
---                                           scaled by (elapsed / hold) for `hold` seconds
---                                           (default 0: no hold-off)

local Ensemble = class("ensemble")

--- Combines detectors. "max": the largest member score; "mean": weighted
--- mean; "vote": the fraction of members at or above `threshold`. With
--- `hold`, one event raises one alert: after a score at or above the
--- threshold, scores are damped for `hold` seconds.
---@param opts doppel.detect.EnsembleOptions
---@return doppel.detect.Detector
function M.ensemble(opts)
   if type(opts) ~= "table" then fail("ensemble", "options must be a table, got " .. show(opts)) end
   local ds = opts.detectors
   if type(ds) ~= "table" or #ds == 0 then
      fail("ensemble", "detectors must be a non-empty list of detectors, got " .. show(ds))
   end
   for i, d in ipairs(ds) do
      if type(d) ~= "table" or type(d.update) ~= "function" then
         fail("ensemble", "detectors[" .. i .. "] must be a detector, got " .. show(d))
      end
   end
   local combine = opts.combine or "max"
   if combine ~= "max" and combine ~= "mean" and combine ~= "vote" then
      fail("ensemble", "combine must be \"max\", \"mean\" or \"vote\", got " .. show(combine))
   end
   local weights = opts.weights
   if weights ~= nil then
      if type(weights) ~= "table" or #weights ~= #ds then
         fail("ensemble", "weights must be a list of " .. #ds .. " numbers")
      end
      for i, w in ipairs(weights) do num("ensemble", "weights[" .. i .. "]", w, 0) end
   end
   return setmetatable({ score = 0, detectors = ds, combine = combine, weights = weights,
      threshold = num("ensemble", "threshold", opts.threshold or 0.99, 0, 1),
      hold = num("ensemble", "hold", opts.hold or 0, 0) }, Ensemble)
end

function Ensemble.step(self, x, t)
   local ds, s = self.detectors, 0
   if self.combine == "max" then
      for i = 1, #ds do
         local v = ds[i]:update(x, t)
         if v > s then s = v end
      end
   elseif self.combine == "mean" then
      local tw = 0
      for i = 1, #ds do
         local w = self.weights and self.weights[i] or 1
         s, tw = s + w * ds[i]:update(x, t), tw + w
      end
      s = tw > 0 and s / tw or 0
   else
      for i = 1, #ds do
         if ds[i]:update(x, t) >= self.threshold then s = s + 1 end
      end
      s = s / #ds
   end
   if self.hold > 0 then
      t = now_or(t)
      if self.last_alert ~= nil then
         local e = t - self.last_alert
         if e < self.hold then s = s * (e / self.hold) end
      end
      if s >= self.threshold then self.last_alert = t end
   end
   return s
end

-------------------------------------------------------------------------------
-- Auto: a general-purpose detector for signals you know little about
-------------------------------------------------------------------------------

---@class doppel.detect.AutoOptions
---@field size? integer           rolling window of the level z-score (default 3000 samples)
---@field period? number|string   season of the contextual part (default "1d")
---@field slots? integer          phases per season (default 96)
---@field alpha? number           adaptation of each phase's mean and spread (default 0.05)
---@field quantile? number        the deviation's own quantile that calibrates it (default 0.999)
---@field floor? number           lower bound of that quantile, in std units (default 3)
---@field gain? number            score = deviation / (quantile * gain) (default 5)
---@field hold? integer           samples during which scores are damped after an alert
---                               (default 300)
---@field trigger? number         score counted as an alert for the hold-off (default 0.15)

local Auto = class("auto")

--- A detector for a signal whose behaviour is not known in advance, tuned on
--- the NAB corpus (see docs/benchmarks.md). Two deviations are computed for
--- each sample: from the level of a long rolling window (z-score), and from
--- what is usual at this phase of the season (the seasonal detector's
--- slots). Each is divided by a high quantile of its own past values (a
--- quantile sketch), so a signal that is always spiky must spike harder to
--- alert, and the larger of the two is the score. After an alert, scores are
--- ramped back up over `hold` samples so that one event gives one alert.
---@param opts? doppel.detect.AutoOptions
---@return doppel.detect.Detector
function M.auto(opts)
   opts = opts_of("auto", opts)
   local slots = posint("auto", "slots", opts.slots or 96)
   if slots > 100000 then fail("auto", "slots must be at most 100000, got " .. slots) end
   return setmetatable({ score = 0, n = 0, last = -huge_n,
      w = stats.window { size = posint("auto", "size", opts.size or 3000) },
      period = stats._seconds("doppel.detect.auto", "period", opts.period or 86400), slots = slots,
      alpha = num("auto", "alpha", opts.alpha or 0.05, 1e-9, 1),
      q = num("auto", "quantile", opts.quantile or 0.999, 0, 1),
      floor = num("auto", "floor", opts.floor or 3, 0),
      gain = num("auto", "gain", opts.gain or 5, 1e-9),
      hold = posint("auto", "hold", opts.hold or 300),
      trigger = num("auto", "trigger", opts.trigger or 0.15, 0, 1),
      mean = {}, var = {}, cnt = {},
      level_q = stats.sketch { alpha = 0.02 }, season_q = stats.sketch { alpha = 0.02 } }, Auto)
end

local function calibrated(self, sk, z)
   local s = 0
   if sk:count() >= 100 then
      local q = sk:quantile(self.q)
      if q < self.floor then q = self.floor end
      s = z / q / self.gain
   end
   sk:add(z)
   return s
end

function Auto.step(self, x, t)
   t = now_or(t)
   self.n = self.n + 1
   local w, s, gsd = self.w, 0, nil
   if w:count() >= 20 then
      gsd = w:stddev()
      if gsd < 1e-9 then gsd = 1e-9 end
      s = calibrated(self, self.level_q, abs(x - w:mean()) / gsd)
   end
   w:push(x)
   local slot = floor((t % self.period) / self.period * self.slots) + 1
   if slot > self.slots then slot = self.slots end
   local c = self.cnt[slot] or 0
   if c >= 3 and gsd then
      local sd = sqrt(self.var[slot])
      if sd < 0.2 * gsd then sd = 0.2 * gsd end
      local ss = calibrated(self, self.season_q, abs(x - self.mean[slot]) / sd)
      if ss > s then s = ss end
   end
   if c == 0 then
      self.mean[slot], self.var[slot] = x, 0
   else
      local a = math.max(self.alpha, 1 / (c + 1))
      local d = x - self.mean[slot]
      self.mean[slot] = self.mean[slot] + a * d
      self.var[slot] = (1 - a) * (self.var[slot] + a * d * d)
   end
   self.cnt[slot] = c + 1
   if s > 1 then s = 1 end
   local e = self.n - self.last
   if e < self.hold then s = s * e / self.hold end
   if s > self.trigger then self.last = self.n end
   return s
end

-------------------------------------------------------------------------------
-- Anomaly likelihood
-------------------------------------------------------------------------------

---@class doppel.detect.LikelihoodOptions
---@field detector doppel.detect.Detector  the detector whose scores are judged
---@field short? integer     samples averaged into the current level (default 10)
---@field long? integer      samples of history the level is compared with (default 1000)
---@field learn? integer     samples before scoring (default 300)
---@field min_std? number    floor on the history's spread (default 0.01)
---@field log? boolean       report on a log scale (default true): the score is
---                          log(tail) / log(1e-10), so 0.5 means a tail probability
---                          of 1e-5 and scores do not saturate at 1

local Likelihood = class("likelihood")

--- Anomaly likelihood (as in Numenta's HTM detector): how improbable the
--- recent average of another detector's scores is, given the distribution of
--- those averages over a longer history (taken as normal). It turns a noisy
--- raw score into one comparable across signals, and a single stray spike
--- counts less than a run of unusual samples.
---@param opts doppel.detect.LikelihoodOptions
---@return doppel.detect.Detector
function M.likelihood(opts)
   if type(opts) ~= "table" then
      fail("likelihood", "options must be a table, got " .. show(opts))
   end
   local d = opts.detector
   if type(d) ~= "table" or type(d.update) ~= "function" then
      fail("likelihood", "detector must be a detector, got " .. show(d))
   end
   local short = posint("likelihood", "short", opts.short or 10)
   return setmetatable({ score = 0, detector = d, short = short, ring = {}, sum = 0, n = 0,
      hist = stats.window { size = posint("likelihood", "long", opts.long or 1000) },
      learn = posint("likelihood", "learn", opts.learn or 300),
      min_std = num("likelihood", "min_std", opts.min_std or 0.01, 0),
      log = opts.log ~= false }, Likelihood)
end

function Likelihood.step(self, x, t)
   local raw = self.detector:update(x, t)
   self.n = self.n + 1
   local slot = (self.n - 1) % self.short + 1
   self.sum = self.sum + raw - (self.ring[slot] or 0)
   self.ring[slot] = raw
   local avg = self.sum / math.min(self.n, self.short)
   local h = self.hist
   local s = 0
   if self.n > self.learn then
      local sd = h:stddev()
      if sd < self.min_std then sd = self.min_std end
      local z = (avg - h:mean()) / sd
      local tail = 0.5 * erfc(z / 1.4142135623730951)
      if self.log then
         s = log(tail + 1e-10) / log(1e-10)
      else
         s = 1 - tail
      end
   end
   h:push(avg)
   return s
end

-------------------------------------------------------------------------------
-- Multivariate: Hotelling T2
-------------------------------------------------------------------------------

---@class doppel.detect.HotellingOptions
---@field vars string[]|integer   names of the variables (for keyed samples) or their count
---@field learn? integer          healthy samples learned before scoring (default 100)
---@field ridge? number           added to the covariance diagonal, relative (default 1e-6)

---@class doppel.detect.Hotelling: doppel.detect.Detector
---@field learned boolean    true once the baseline is fixed
---@field t2 number          the last T2 statistic
local Hotelling = {}
Hotelling.__index = Hotelling
Hotelling.kind = "hotelling"

--- Hotelling T2 against a healthy baseline: the first `learn` samples (or
--- those given to `learn()`) fix the mean and covariance; afterwards each
--- sample's T2 = (x - mean)' S^-1 (x - mean) is scored with the chi-square
--- distribution of `k` degrees of freedom. Samples are lists of k numbers or
--- tables keyed by `vars`.
---@param opts doppel.detect.HotellingOptions
---@return doppel.detect.Hotelling
function M.hotelling(opts)
   if type(opts) ~= "table" then
      fail("hotelling", "options must be a table, got " .. show(opts))
   end
   local vars, k = opts.vars, nil
   if type(vars) == "number" then
      k = posint("hotelling", "vars", vars)
      vars = nil
   elseif type(vars) == "table" and #vars > 0 then
      k = #vars
      for i, v in ipairs(vars) do
         if type(v) ~= "string" then fail("hotelling", "vars[" .. i .. "] must be a string") end
      end
   else
      fail("hotelling", "vars must be a list of names or a count, got " .. show(vars))
   end
   if k > 64 then fail("hotelling", "vars must be at most 64 variables, got " .. k) end
   local mean, m2 = {}, {}
   for i = 1, k do
      mean[i] = 0
      m2[i] = {}
      for j = 1, k do m2[i][j] = 0 end
   end
   return setmetatable({ score = 0, t2 = 0, k = k, vars = vars, n = 0, mean = mean, m2 = m2,
      learn_n = posint("hotelling", "learn", opts.learn or 100),
      ridge = num("hotelling", "ridge", opts.ridge or 1e-6, 0), learned = false }, Hotelling)
end

local function vector(self, fn, x)
   if type(x) ~= "table" then fail(fn, "sample must be a table, got " .. show(x), 4) end
   local v = {}
   for i = 1, self.k do
      local e = self.vars and x[self.vars[i]] or x[i]
      if type(e) ~= "number" or e ~= e then
         fail(fn, "sample[" .. (self.vars and show(self.vars[i]) or i) .. "] must be a number, got "
            .. show(e), 4)
      end
      v[i] = e
   end
   return v
end

--- Adds one healthy sample to the baseline (before it is fixed).
---@param x number[]|table<string, number>
function Hotelling:learn(x)
   if self.learned then fail("hotelling.learn", "the baseline is already fixed") end
   local v = vector(self, "hotelling.learn", x)
   self.n = self.n + 1
   local d = {}
   for i = 1, self.k do
      d[i] = v[i] - self.mean[i]
      self.mean[i] = self.mean[i] + d[i] / self.n
   end
   for i = 1, self.k do
      local di = v[i] - self.mean[i]
      for j = 1, self.k do self.m2[i][j] = self.m2[i][j] + d[j] * di end
   end
end

--- Fixes the baseline from the samples learned so far (needs at least k + 1).
function Hotelling:fit()
   local k, n = self.k, self.n
   if n < k + 1 then
      fail("hotelling.fit", "needs at least " .. (k + 1) .. " samples, got " .. n)
   end
   -- Cholesky of the covariance (plus a small ridge so constant variables work).
   local L = {}
   for i = 1, k do
      L[i] = {}
      for j = 1, k do
         local c = self.m2[i][j] / (n - 1)
         if i == j then c = c + self.ridge * (math.abs(c) + 1e-12) + 1e-12 end
         L[i][j] = c
      end
   end
   linalg.cholesky(L, k)
   self.chol = L
   self.learned = true
end

--- Regularised lower incomplete gamma P(a, x) (series / continued fraction).
local function gammp(a, x)
   if x <= 0 then return 0 end
   local gln
   do -- log Gamma(a), Lanczos
      local cof = { 76.18009172947146, -86.50532032941677, 24.01409824083091,
         -1.231739572450155, 0.1208650973866179e-2, -0.5395239384953e-5 }
      local y, tmp = a, a + 5.5
      tmp = tmp - (a + 0.5) * log(tmp)
      local ser = 1.000000000190015
      for j = 1, 6 do y = y + 1; ser = ser + cof[j] / y end
      gln = -tmp + log(2.5066282746310005 * ser / a)
   end
   if x < a + 1 then
      local ap, sum = a, 1 / a
      local del = sum
      for _ = 1, 500 do
         ap = ap + 1
         del = del * x / ap
         sum = sum + del
         if abs(del) < abs(sum) * 1e-12 then break end
      end
      return sum * exp(-x + a * log(x) - gln)
   end
   local b = x + 1 - a
   local c, d = 1 / 1e-300, 1 / b
   local h = d
   for i = 1, 500 do
      local an = -i * (i - a)
      b = b + 2
      d = an * d + b
      if abs(d) < 1e-300 then d = 1e-300 end
      c = b + an / c
      if abs(c) < 1e-300 then c = 1e-300 end
      d = 1 / d
      local del = d * c
      h = h * del
      if abs(del - 1) < 1e-12 then break end
   end
   return 1 - exp(-x + a * log(x) - gln) * h
end
M._gammp = gammp

--- The chi-square CDF with k degrees of freedom.
---@param x number
---@param k integer
---@return number
function M.chi2_cdf(x, k)
   num("chi2_cdf", "x", x)
   posint("chi2_cdf", "k", k)
   return gammp(k / 2, x / 2)
end

--- Scores a sample (learns it instead while the baseline is not fixed, and
--- returns 0). Also sets `self.t2`.
---@param x number[]|table<string, number>
---@param t? number
---@return number score
function Hotelling:update(x, t) -- luacheck: ignore t
   if not self.learned then
      self:learn(x)
      if self.n >= self.learn_n and self.n >= self.k + 1 then self:fit() end
      self.score = 0
      return 0
   end
   local v = vector(self, "hotelling.update", x)
   local k, L = self.k, self.chol
   -- Solve L y = (x - mean); T2 = |y|^2.
   local y, t2 = {}, 0
   for i = 1, k do
      local s = v[i] - self.mean[i]
      for p = 1, i - 1 do s = s - L[i][p] * y[p] end
      y[i] = s / L[i][i]
      t2 = t2 + y[i] * y[i]
   end
   self.t2 = t2
   self.score = gammp(k / 2, t2 / 2)
   return self.score
end

return M
