--- doppel.predict: degradation trends, remaining useful life, health indices.
---
--- * `predict.trend`        fits a linear or exponential trend to a rolling
---                          window of a degradation indicator and returns the
---                          time left until it crosses a threshold, with a
---                          confidence interval. Use it on one indicator that
---                          drifts monotonically (vibration RMS, fouling, a
---                          pressure drop).
--- * `predict.health_index` maps several indicators, each between its "good"
---                          and "bad" value, onto one index in [0, 1] (1 =
---                          healthy).
--- * `predict.linear`       a ridge linear regression fitted offline (for
---                          example from features to remaining life on
---                          run-to-failure data); evaluate it online.
--- * `predict.similarity`   a library of run-to-failure health-index curves:
---                          a running unit's recent curve is matched against
---                          each, and the remaining lives of the closest
---                          matches give the estimate and its spread.
---
--- ```lua
--- local predict = require "doppel.predict"
--- local tr = predict.trend { span = "7d", model = "auto" }
--- twin.every("1h", function()
---    tr:push(tags.vibration_rms.value, clock.now())
---    local r = tr:rul(7.1)              -- ISO 10816 zone D
---    if r then tags.rul_days = r.rul / 86400 end
--- end)
--- ```
local stats = require "doppel.stats"
local linalg = require "doppel._linalg"

local M = {}

local sqrt, log, exp, floor, huge = math.sqrt, math.log, math.exp, math.floor, math.huge
local type, tostring, error, setmetatable = type, tostring, error, setmetatable

local function fail(fn, msg, level)
   error("doppel.predict." .. fn .. ": " .. msg, level or 3)
end

local function show(v)
   if type(v) == "string" then return string.format("%q", v) end
   return tostring(v)
end

local function num(fn, name, v)
   if type(v) ~= "number" or v ~= v then
      fail(fn, name .. " must be a number, got " .. show(v), 4)
   end
   return v
end

local function posint(fn, name, v)
   if type(v) ~= "number" or v ~= floor(v) or v < 1 then
      fail(fn, name .. " must be a positive integer, got " .. show(v), 4)
   end
   return floor(v)
end

local function now_or(t)
   if t ~= nil then return t end
   local c = rawget(_G, "clock")
   if c and c.now then return c.now() end
   return nil
end

--- Quantile function of the standard normal (Acklam; relative error < 1.2e-9).
---@param p number in (0, 1)
---@return number
function M.normal_quantile(p)
   num("normal_quantile", "p", p)
   if p <= 0 or p >= 1 then fail("normal_quantile", "p must be in (0, 1), got " .. p) end
   local a = { -3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
      1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00 }
   local b = { -5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
      6.680131188771972e+01, -1.328068155288572e+01 }
   local c = { -7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
      -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00 }
   local d = { 7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
      3.754408661907416e+00 }
   local q, r
   if p < 0.02425 then
      q = sqrt(-2 * log(p))
      return (((((c[1] * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) * q + c[6]) /
         ((((d[1] * q + d[2]) * q + d[3]) * q + d[4]) * q + 1)
   elseif p <= 1 - 0.02425 then
      q = p - 0.5
      r = q * q
      return (((((a[1] * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * r + a[6]) * q /
         (((((b[1] * r + b[2]) * r + b[3]) * r + b[4]) * r + b[5]) * r + 1)
   end
   q = sqrt(-2 * log(1 - p))
   return -(((((c[1] * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) * q + c[6]) /
      ((((d[1] * q + d[2]) * q + d[3]) * q + d[4]) * q + 1)
end

-------------------------------------------------------------------------------
-- Trend and time to threshold
-------------------------------------------------------------------------------

---@class doppel.predict.TrendOptions
---@field size? integer              fit the last `size` samples (default 100)
---@field span? number|string        or the samples of the last `span` seconds
---@field model? "linear"|"exponential"|"auto"  (default "linear"); "auto" takes the
---                                  better r2 of the two
---@field offset? number             exponential model: y = offset + e^(a + b t) (default 0)
---@field min_points? integer        fewer points give no estimate (default 5)

---@class doppel.predict.Trend
---@field model string
local Trend = {}
Trend.__index = Trend

---@class doppel.predict.Rul
---@field rul number        expected time to the threshold (seconds, or the unit of t)
---@field lower number      lower bound of the interval (>= 0)
---@field upper number      upper bound (math.huge when the trend may not reach it)
---@field at number         expected time of crossing
---@field model string      "linear" or "exponential"
---@field slope number      fitted slope (per unit of t; of log(y - offset) for exponential)
---@field r2 number         goodness of fit

--- A degradation trend on a rolling window.
---@param opts? doppel.predict.TrendOptions
---@return doppel.predict.Trend
function M.trend(opts)
   local fn = "trend"
   if opts == nil then opts = {} end
   if type(opts) ~= "table" then fail(fn, "options must be a table, got " .. show(opts)) end
   local model = opts.model or "linear"
   if model ~= "linear" and model ~= "exponential" and model ~= "auto" then
      fail(fn, "model must be \"linear\", \"exponential\" or \"auto\", got " .. show(model))
   end
   local wopts
   if opts.span ~= nil then
      if opts.size ~= nil then fail(fn, "give at most one of size or span") end
      wopts = { span = opts.span }
   else
      wopts = { size = posint(fn, "size", opts.size or 100) }
   end
   local self = setmetatable({ model = model, offset = num(fn, "offset", opts.offset or 0),
      min_points = posint(fn, "min_points", opts.min_points or 5),
      lin = stats.regression(wopts), expo = stats.regression(wopts), bad_log = 0 }, Trend)
   return self
end

--- Adds a sample of the indicator at time t (default: the twin clock).
---@param y number
---@param t? number
---@return doppel.predict.Trend self
function Trend:push(y, t)
   num("trend.push", "value", y)
   t = now_or(t)
   num("trend.push", "t", t)
   self.lin:push(y, t)
   -- log(y - offset) needs y > offset; such samples are clamped just above it.
   local d = y - self.offset
   if d <= 1e-12 then d = 1e-12 end
   self.expo:push(log(d), t)
   self.t = t
   return self
end

local function crossing(reg, target, now, z)
   local b, a, r2 = reg:fit()
   if not b then return nil, "not enough distinct points" end
   local se = reg:stderr() or 0
   local xbar = reg:mean_x()
   local ybar = a + b * xbar
   -- y(t) = ybar + b (t - xbar): the crossing moves with the slope; its
   -- interval comes from the slope's confidence interval.
   local function at(slope)
      if slope == 0 then return huge end
      local tc = xbar + (target - ybar) / slope
      return tc
   end
   local level_now = ybar + b * (now - xbar)
   local up = target > level_now
   if (up and b <= 0) or (not up and b >= 0) then
      return nil, "the trend does not move toward the threshold"
   end
   local tc = at(b)
   local b_fast, b_slow = b + z * se, b - z * se
   if not up then b_fast, b_slow = b - z * se, b + z * se end
   local lower = at(b_fast) - now
   local upper
   if (up and b_slow <= 0) or (not up and b_slow >= 0) then upper = huge
   else upper = at(b_slow) - now end
   local rul = tc - now
   if rul < 0 then rul = 0 end
   if lower < 0 then lower = 0 end
   if upper < rul then upper = rul end
   return { rul = rul, lower = math.min(lower, rul), upper = upper, at = tc, slope = b, r2 = r2 }
end

--- Time from the last sample until the trend crosses `threshold`, with a
--- `confidence` interval from the slope's standard error (default 0.9).
--- Returns nil and a reason when there is no usable trend toward it.
---@param threshold number
---@param confidence? number in (0, 1)
---@return doppel.predict.Rul?
---@return string? reason
function Trend:rul(threshold, confidence)
   num("trend.rul", "threshold", threshold)
   confidence = confidence or 0.9
   num("trend.rul", "confidence", confidence)
   if confidence <= 0 or confidence >= 1 then
      fail("trend.rul", "confidence must be in (0, 1), got " .. confidence)
   end
   if self.lin.n < self.min_points then return nil, "not enough points" end
   local z = M.normal_quantile(0.5 + confidence / 2)
   local lin, lerr, ex, eerr
   if self.model ~= "exponential" then
      lin, lerr = crossing(self.lin, threshold, self.t, z)
      if lin then lin.model = "linear" end
   end
   if self.model ~= "linear" then
      if threshold - self.offset <= 0 then
         eerr = "the threshold is not above the offset"
      else
         ex, eerr = crossing(self.expo, log(threshold - self.offset), self.t, z)
         if ex then ex.model = "exponential" end
      end
   end
   if self.model == "linear" then return lin, lerr end
   if self.model == "exponential" then return ex, eerr end
   if lin and ex then return (ex.r2 > lin.r2) and ex or lin end
   if lin or ex then return lin or ex end
   return nil, lerr or eerr
end

-------------------------------------------------------------------------------
-- Health index
-------------------------------------------------------------------------------

---@class doppel.predict.Indicator
---@field name string
---@field good number        value of a healthy asset (maps to 1)
---@field bad number         value at which it is worn out (maps to 0); may be below good
---@field weight? number     (default 1)

---@class doppel.predict.HealthIndexOptions
---@field indicators doppel.predict.Indicator[]
---@field combine? "mean"|"min"|"geometric"   weighted mean (default), worst, or
---                                           weighted geometric mean

---@class doppel.predict.HealthIndex
local HealthIndex = {}
HealthIndex.__index = HealthIndex

--- Composes several indicators into one health index in [0, 1].
---@param opts doppel.predict.HealthIndexOptions
---@return doppel.predict.HealthIndex
function M.health_index(opts)
   local fn = "health_index"
   if type(opts) ~= "table" then fail(fn, "options must be a table, got " .. show(opts)) end
   local ind = opts.indicators
   if type(ind) ~= "table" or #ind == 0 then
      fail(fn, "indicators must be a non-empty list, got " .. show(ind))
   end
   local list = {}
   for i, d in ipairs(ind) do
      local where = "indicators[" .. i .. "]"
      if type(d) ~= "table" then fail(fn, where .. " must be a table, got " .. show(d)) end
      if type(d.name) ~= "string" then fail(fn, where .. ".name must be a string") end
      num(fn, where .. ".good", d.good)
      num(fn, where .. ".bad", d.bad)
      if d.good == d.bad then fail(fn, where .. ": good and bad must differ") end
      local w = d.weight or 1
      num(fn, where .. ".weight", w)
      if w < 0 then fail(fn, where .. ".weight must be >= 0, got " .. w) end
      list[i] = { name = d.name, good = d.good, bad = d.bad, weight = w }
   end
   local combine = opts.combine or "mean"
   if combine ~= "mean" and combine ~= "min" and combine ~= "geometric" then
      fail(fn, "combine must be \"mean\", \"min\" or \"geometric\", got " .. show(combine))
   end
   return setmetatable({ indicators = list, combine = combine }, HealthIndex)
end

--- The index for a table of current values keyed by indicator name, and each
--- indicator's own index. Missing values are left out of the combination.
---@param values table<string, number>
---@return number? index   nil when no indicator has a value
---@return table<string, number> parts
function HealthIndex:compute(values)
   if type(values) ~= "table" then
      fail("health_index.compute", "values must be a table, got " .. show(values))
   end
   local parts, acc, tw, worst = {}, 0, 0, huge
   local geo = self.combine == "geometric"
   for _, d in ipairs(self.indicators) do
      local v = values[d.name]
      if v ~= nil then
         num("health_index.compute", "values." .. d.name, v)
         local h = (v - d.bad) / (d.good - d.bad)
         if h > 1 then h = 1 elseif h < 0 then h = 0 end
         parts[d.name] = h
         if geo then acc = acc + d.weight * log(h + 1e-12) else acc = acc + d.weight * h end
         tw = tw + d.weight
         if h < worst then worst = h end
      end
   end
   if worst == huge then return nil, parts end
   if self.combine == "min" then return worst, parts end
   if tw == 0 then return nil, parts end
   if geo then
      local g = exp(acc / tw)
      return g < 1e-9 and 0 or g, parts
   end
   return acc / tw, parts
end

-------------------------------------------------------------------------------
-- Linear model fitted offline (ridge regression)
-------------------------------------------------------------------------------

---@class doppel.predict.LinearOptions
---@field ridge? number   L2 penalty on the standardised coefficients (default 1e-6)

---@class doppel.predict.Linear
---@field coef number[]   coefficients in the original units
---@field intercept number
---@field rmse number     residual RMS error on the training data
local Linear = {}
Linear.__index = Linear

-- Solves A x = b (A symmetric positive definite, k x k) by Cholesky, in place.
local function solve_spd(A, b, k)
   linalg.cholesky(A, k)
   local y = {}
   for i = 1, k do
      local s = b[i]
      for p = 1, i - 1 do s = s - A[i][p] * y[p] end
      y[i] = s / A[i][i]
   end
   local x = {}
   for i = k, 1, -1 do
      local s = y[i]
      for p = i + 1, k do s = s - A[p][i] * x[p] end
      x[i] = s / A[i][i]
   end
   return x
end

--- Fits y = intercept + coef . x by least squares with a ridge penalty on
--- standardised features. X is a list of rows (lists of k numbers).
---@param X number[][]
---@param y number[]
---@param opts? doppel.predict.LinearOptions
---@return doppel.predict.Linear
function M.linear(X, y, opts)
   local fn = "linear"
   if type(X) ~= "table" or #X == 0 then fail(fn, "X must be a non-empty list of rows") end
   if type(y) ~= "table" or #y ~= #X then
      fail(fn, "y must be a list of " .. #X .. " numbers (one per row of X)")
   end
   opts = opts or {}
   if type(opts) ~= "table" then fail(fn, "options must be a table, got " .. show(opts)) end
   local ridge = num(fn, "ridge", opts.ridge or 1e-6)
   if ridge < 0 then fail(fn, "ridge must be >= 0, got " .. ridge) end
   local n = #X
   if type(X[1]) ~= "table" or #X[1] == 0 then fail(fn, "X[1] must be a non-empty list") end
   local k = #X[1]
   local mean, sd = {}, {}
   for j = 1, k do mean[j], sd[j] = 0, 0 end
   local ym = 0
   for i = 1, n do
      local row = X[i]
      if type(row) ~= "table" or #row ~= k then
         fail(fn, "X[" .. i .. "] must be a list of " .. k .. " numbers")
      end
      for j = 1, k do
         local v = row[j]
         if type(v) ~= "number" or v ~= v then
            fail(fn, "X[" .. i .. "][" .. j .. "] must be a number, got " .. show(v))
         end
         mean[j] = mean[j] + v
      end
      if type(y[i]) ~= "number" or y[i] ~= y[i] then
         fail(fn, "y[" .. i .. "] must be a number, got " .. show(y[i]))
      end
      ym = ym + y[i]
   end
   ym = ym / n
   for j = 1, k do mean[j] = mean[j] / n end
   for i = 1, n do
      local row = X[i]
      for j = 1, k do sd[j] = sd[j] + (row[j] - mean[j]) ^ 2 end
   end
   for j = 1, k do
      sd[j] = sqrt(sd[j] / n)
      if sd[j] < 1e-12 then sd[j] = 1 end
   end
   local A, b = {}, {}
   for p = 1, k do
      A[p] = {}
      for q = 1, k do A[p][q] = 0 end
      b[p] = 0
   end
   local z = {}
   for i = 1, n do
      local row = X[i]
      for j = 1, k do z[j] = (row[j] - mean[j]) / sd[j] end
      local yi = y[i] - ym
      for p = 1, k do
         local zp = z[p]
         b[p] = b[p] + zp * yi
         local Ap = A[p]
         for q = 1, p do Ap[q] = Ap[q] + zp * z[q] end
      end
   end
   for p = 1, k do
      for q = 1, p - 1 do A[q][p] = A[p][q] end
      A[p][p] = A[p][p] + ridge * n
   end
   local w = solve_spd(A, b, k)
   local coef, c0 = {}, ym
   for j = 1, k do
      coef[j] = w[j] / sd[j]
      c0 = c0 - coef[j] * mean[j]
   end
   local self = setmetatable({ coef = coef, intercept = c0, k = k }, Linear)
   local sse = 0
   for i = 1, n do sse = sse + (self:predict(X[i]) - y[i]) ^ 2 end
   self.rmse = sqrt(sse / n)
   return self
end

--- Evaluates the model on one row of k numbers.
---@param x number[]
---@return number
function Linear:predict(x)
   if type(x) ~= "table" or #x ~= self.k then
      fail("linear.predict", "x must be a list of " .. self.k .. " numbers, got " .. show(x))
   end
   local s = self.intercept
   for j = 1, self.k do s = s + self.coef[j] * x[j] end
   return s
end

-------------------------------------------------------------------------------
-- Similarity-based remaining life
-------------------------------------------------------------------------------

---@class doppel.predict.SimilarityOptions
---@field neighbours? integer   closest library matches combined (default 10)
---@field window? integer       most recent points of a unit compared (default 60)
---@field max_rul? number       estimates are capped here (default: none)
---@field scale? number         distance scale of the match weights (default: the
---                             median distance of the matches)

---@class doppel.predict.Similarity
---@field library number[][]    the run-to-failure health-index curves
local Similarity = {}
Similarity.__index = Similarity

---@class doppel.predict.SimilarityEstimate
---@field rul number        weighted estimate (in samples)
---@field lower number      10th percentile of the neighbours' estimates
---@field upper number      90th percentile
---@field matches integer   neighbours used

--- A similarity model: `runs` are health-index curves of units run to failure
--- (one value per cycle, the last at failure). A running unit's most recent
--- `window` values are slid along every curve; each curve's best alignment
--- (least mean squared difference) says how many cycles that unit had left,
--- and the `neighbours` best curves are averaged with weights e^(-d / scale).
---@param runs number[][]
---@param opts? doppel.predict.SimilarityOptions
---@return doppel.predict.Similarity
function M.similarity(runs, opts)
   local fn = "similarity"
   if type(runs) ~= "table" or #runs == 0 then
      fail(fn, "runs must be a non-empty list of curves, got " .. show(runs))
   end
   for i, r in ipairs(runs) do
      if type(r) ~= "table" or #r < 2 then
         fail(fn, "runs[" .. i .. "] must be a list of at least 2 numbers")
      end
      for j = 1, #r do
         if type(r[j]) ~= "number" or r[j] ~= r[j] then
            fail(fn, "runs[" .. i .. "][" .. j .. "] must be a number, got " .. show(r[j]))
         end
      end
   end
   opts = opts or {}
   if type(opts) ~= "table" then fail(fn, "options must be a table, got " .. show(opts)) end
   local self = setmetatable({ library = runs,
      neighbours = posint(fn, "neighbours", opts.neighbours or 10),
      window = posint(fn, "window", opts.window or 60) }, Similarity)
   if opts.max_rul ~= nil then self.max_rul = num(fn, "max_rul", opts.max_rul) end
   if opts.scale ~= nil then self.scale = num(fn, "scale", opts.scale) end
   return self
end

--- Estimates the remaining life of a unit from its health-index curve so far.
---@param curve number[]
---@return doppel.predict.SimilarityEstimate
function Similarity:estimate(curve)
   if type(curve) ~= "table" or #curve == 0 then
      fail("similarity.estimate", "curve must be a non-empty list of numbers")
   end
   local n = #curve
   local w = math.min(n, self.window)
   local seg = {}
   for i = 1, w do
      local v = curve[n - w + i]
      if type(v) ~= "number" or v ~= v then
         fail("similarity.estimate", "curve[" .. (n - w + i) .. "] must be a number")
      end
      seg[i] = v
   end
   local cands = {}
   for _, run in ipairs(self.library) do
      local m = #run
      -- The unit has lived n cycles: align its last point at cycle e of the
      -- run, e >= w; the run's remaining life there is m - e.
      local best, best_e = huge, nil
      for e = w, m do
         local d, base = 0, e - w
         for i = 1, w do
            local x = seg[i] - run[base + i]
            d = d + x * x
            if d >= best * w then break end
         end
         d = d / w
         if d < best then best, best_e = d, e end
      end
      if best_e then cands[#cands + 1] = { d = best, rul = m - best_e } end
   end
   table.sort(cands, function(a, b) return a.d < b.d end)
   local k = math.min(self.neighbours, #cands)
   local scale = self.scale
   if not scale then
      scale = cands[math.max(1, floor(k / 2))].d
      if scale <= 0 then scale = 1e-12 end
   end
   local acc, tw, ests = 0, 0, {}
   for i = 1, k do
      local c = cands[i]
      local wt = exp(-c.d / scale)
      local r = c.rul
      if self.max_rul and r > self.max_rul then r = self.max_rul end
      acc, tw = acc + wt * r, tw + wt
      ests[i] = r
   end
   table.sort(ests)
   local function pct(p)
      local h = (k - 1) * p + 1
      local lo = floor(h)
      if lo >= k then return ests[k] end
      return ests[lo] + (h - lo) * (ests[lo + 1] - ests[lo])
   end
   local rul = tw > 0 and acc / tw or pct(0.5)
   return { rul = rul, lower = pct(0.1), upper = pct(0.9), matches = k }
end

return M
