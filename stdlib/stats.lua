--- doppel.stats: streaming statistics with bounded memory.
---
--- Every object here takes one sample at a time in O(1) amortised work (the
--- quantile sketch and histogram in O(1) too) and holds a bounded amount of
--- memory, so it can run inside a twin handler for ever.
---
--- * `stats.window`     rolling window by count (`size`) or by time (`span`):
---                      mean, variance, min, max (monotonic deques), exact
---                      quantiles of the window on demand.
--- * `stats.sketch`     streaming quantiles over the whole stream (DDSketch):
---                      every quantile is within a relative error `alpha` of
---                      a true sample value of that rank.
--- * `stats.ewma`       exponentially weighted mean and variance, by factor
---                      or by half-life in seconds for irregular samples.
--- * `stats.regression` online least squares y = a + b x (slope, intercept,
---                      r2, standard errors), cumulative or on a window.
--- * `stats.histogram`  fixed bins between `min` and `max`.
---
--- ```lua
--- local stats = require "doppel.stats"
--- local w = stats.window { span = "10min" }
--- twin.on_change("flow", function(v, tag)
---    w:push(v, tag.ts)
---    tags.flow_mean = w:mean()
--- end)
--- ```
local M = {}

local huge, floor, sqrt, log, exp = math.huge, math.floor, math.sqrt, math.log, math.exp
local type, tostring, error, setmetatable = type, tostring, error, setmetatable

-- Argument checks shared by this module. Each raises "doppel.stats.FN: ARG ...".
local function fail(fn, msg, level)
   -- Other modules borrow the checks below with their own "doppel.x.fn" name.
   local prefix = fn:sub(1, 7) == "doppel." and "" or "doppel.stats."
   error(prefix .. fn .. ": " .. msg, level or 3)
end

local function show(v)
   if type(v) == "string" then return string.format("%q", v) end
   return tostring(v)
end

local function check_num(fn, name, v)
   if type(v) ~= "number" or v ~= v then
      fail(fn, name .. " must be a number, got " .. show(v), 4)
   end
   return v
end

local to_seconds = require "doppel._duration"

--- Seconds from a positive number or a duration string ("250ms", "10min", "1h30min").
local function seconds(fn, name, v)
   if type(v) == "number" and v > 0 and v < huge then return v end
   if type(v) == "string" then
      local ok, d = pcall(to_seconds, v)
      if ok and type(d) == "number" and d > 0 and d < huge then return d end
   end
   fail(fn, name .. " must be a positive number of seconds or a duration like \"10min\", got "
      .. show(v), 4)
end

local function check_opts(fn, opts)
   if opts == nil then return {} end
   if type(opts) ~= "table" then fail(fn, "options must be a table, got " .. show(opts), 4) end
   return opts
end

local function posint(fn, name, v)
   if math.type(v) ~= "integer" and not (type(v) == "number" and v == floor(v)) or v < 1 then
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

M._seconds = seconds

-------------------------------------------------------------------------------
-- Rolling window
-------------------------------------------------------------------------------

---@class doppel.stats.WindowOptions
---@field size? integer          keep the last `size` samples (a count window)
---@field span? number|string    keep samples newer than `span` seconds (a time window)
---@field max_count? integer     memory bound of a time window (default 100000 samples;
---                              beyond it the oldest samples are dropped early)

---@class doppel.stats.Window
---@field size integer           capacity in samples
---@field span number?           time span in seconds (time windows)
local Window = {}
Window.__index = Window

--- Creates a rolling window, by count (`size`) or by time (`span`).
---@param opts doppel.stats.WindowOptions
---@return doppel.stats.Window
function M.window(opts)
   local fn = "window"
   if type(opts) ~= "table" then fail(fn, "options must be a table, got " .. show(opts)) end
   local size, span = opts.size, opts.span
   if (size == nil) == (span == nil) then fail(fn, "give exactly one of size or span") end
   local cap
   if size ~= nil then
      cap = posint(fn, "size", size)
   else
      span = seconds(fn, "span", span)
      cap = posint(fn, "max_count", opts.max_count or 100000)
   end
   local self = setmetatable({
      size = cap, span = span,
      v = {}, ts = {},      -- ring of values and times, indexed by seq % cap
      first = 1, last = 0,  -- live sequence numbers [first, last]
      mean_ = 0, m2 = 0,    -- Welford sums over the live samples
      timed = span ~= nil,  -- a time window (span may be nil: a field read per push)
      -- Monotonic deques for min and max, kept only once min() or max() has
      -- been asked for (built then from the live samples): most users never ask.
      mm = false,
      mx = {}, mxh = 1, mxt = 0, -- monotonic deque of seqs, values decreasing (max at head)
      mn = {}, mnh = 1, mnt = 0, -- values increasing (min at head)
   }, Window)
   return self
end

-- Monotonic deques: a new sample (sequence number i, value x) evicts every
-- queued sample it dominates.
local function deques_push(self, i, x)
   local cap, v, mx, mn = self.size, self.v, self.mx, self.mn
   while self.mxt >= self.mxh and v[(mx[(self.mxt - 1) % cap + 1] - 1) % cap + 1] <= x do
      self.mxt = self.mxt - 1
   end
   self.mxt = self.mxt + 1
   mx[(self.mxt - 1) % cap + 1] = i
   while self.mnt >= self.mnh and v[(mn[(self.mnt - 1) % cap + 1] - 1) % cap + 1] >= x do
      self.mnt = self.mnt - 1
   end
   self.mnt = self.mnt + 1
   mn[(self.mnt - 1) % cap + 1] = i
end

-- Starts keeping the deques: the same deques as if kept from the start, since
-- they hold exactly the live samples larger (smaller) than every later one.
local function deques_build(self)
   self.mm = true
   self.mxh, self.mxt, self.mnh, self.mnt = 1, 0, 1, 0
   local cap, v = self.size, self.v
   for i = self.first, self.last do deques_push(self, i, v[(i - 1) % cap + 1]) end
end

local function drop_oldest(self)
   local cap, i = self.size, self.first
   local x = self.v[(i - 1) % cap + 1]
   local n = self.last - i + 1
   if n == 1 then
      self.mean_, self.m2 = 0, 0
   else
      local mean = self.mean_
      local nm = (n * mean - x) / (n - 1)
      self.m2 = self.m2 - (x - mean) * (x - nm)
      if self.m2 < 0 then self.m2 = 0 end
      self.mean_ = nm
   end
   if self.mm then
      if self.mxh <= self.mxt and self.mx[(self.mxh - 1) % cap + 1] == i then
         self.mxh = self.mxh + 1
      end
      if self.mnh <= self.mnt and self.mn[(self.mnh - 1) % cap + 1] == i then
         self.mnh = self.mnh + 1
      end
   end
   self.first = i + 1
end

--- Adds a sample. `t` (seconds) is required by time windows; it defaults to
--- the twin clock. Samples must come in time order.
---@param x number
---@param t? number
---@return doppel.stats.Window self
function Window:push(x, t)
   if type(x) ~= "number" or x ~= x then
      fail("window.push", "value must be a number, got " .. show(x))
   end
   local cap, timed = self.size, self.timed
   if timed then
      t = now_or(t)
      check_num("window.push", "t", t)
      local lt = self.last_t
      if lt and t < lt then
         fail("window.push", "t must not go back in time (" .. t .. " < " .. lt .. ")")
      end
      self:expire(t)
      self.last_t = t
   end
   local first, i = self.first, self.last + 1
   local v, mean, m2 = self.v, self.mean_, self.m2
   if i - first >= cap then
      if self.mm then
         drop_oldest(self)
         first, mean, m2 = self.first, self.mean_, self.m2
      else
         -- drop_oldest(self) written out for a full window (n >= 1 samples).
         local old = v[(first - 1) % cap + 1]
         local n = i - first
         if n == 1 then
            mean, m2 = 0, 0
         else
            local nm = (n * mean - old) / (n - 1)
            m2 = m2 - (old - mean) * (old - nm)
            if m2 < 0 then m2 = 0 end
            mean = nm
         end
         first = first + 1
         self.first = first
      end
   end
   self.last = i
   local slot = (i - 1) % cap + 1
   v[slot] = x
   if timed then self.ts[slot] = t end
   local n = i - first + 1
   local d = x - mean
   mean = mean + d / n
   self.mean_ = mean
   self.m2 = m2 + d * (x - mean)
   if self.mm then deques_push(self, i, x) end
   return self
end

--- Drops samples older than `t - span` (time windows); called by push.
---@param t? number  the current time (default: the twin clock)
function Window:expire(t)
   if not self.span then return end
   t = now_or(t)
   check_num("window.expire", "t", t)
   local cap, ts = self.size, self.ts
   while self.first <= self.last and ts[(self.first - 1) % cap + 1] <= t - self.span do
      drop_oldest(self)
   end
end

---@return integer number of samples in the window
function Window:count() return self.last - self.first + 1 end

---@return number? mean, nil when empty
function Window:mean()
   if self.last < self.first then return nil end
   return self.mean_
end

--- Sample variance (n - 1 denominator); 0 with one sample, nil when empty.
---@return number?
function Window:variance()
   local n = self.last - self.first + 1
   if n < 1 then return nil end
   if n == 1 then return 0 end
   return self.m2 / (n - 1)
end

---@return number? standard deviation, nil when empty
function Window:stddev()
   local var = self:variance()
   return var and sqrt(var)
end

--- count(), mean() and stddev() in one call.
---@return integer count
---@return number? mean, nil when empty
---@return number? standard deviation, nil when empty
function Window:moments()
   local n = self.last - self.first + 1
   if n < 1 then return n, nil, nil end
   if n == 1 then return n, self.mean_, sqrt(0) end
   return n, self.mean_, sqrt(self.m2 / (n - 1))
end

---@return number? largest sample in the window
function Window:max()
   if self.last < self.first then return nil end
   if not self.mm then deques_build(self) end
   local cap = self.size
   return self.v[(self.mx[(self.mxh - 1) % cap + 1] - 1) % cap + 1]
end

---@return number? smallest sample in the window
function Window:min()
   if self.last < self.first then return nil end
   if not self.mm then deques_build(self) end
   local cap = self.size
   return self.v[(self.mn[(self.mnh - 1) % cap + 1] - 1) % cap + 1]
end

--- The samples, oldest first (a new table).
---@return number[] values
---@return number[]? times (time windows)
function Window:values()
   local out, ts, cap = {}, self.span and {} or nil, self.size
   for i = self.first, self.last do
      local s = (i - 1) % cap + 1
      out[#out + 1] = self.v[s]
      if ts then ts[#ts + 1] = self.ts[s] end
   end
   return out, ts
end

--- Exact quantile of the window, linear interpolation between order
--- statistics (type 7). Sorts a copy: O(n log n) per call, so query it on a
--- timer rather than on every sample for large windows.
---@param q number in [0, 1]
---@return number?
function Window:quantile(q)
   check_num("window.quantile", "q", q)
   if q < 0 or q > 1 then fail("window.quantile", "q must be in [0, 1], got " .. q) end
   local xs = self:values()
   local n = #xs
   if n == 0 then return nil end
   table.sort(xs)
   local h = (n - 1) * q + 1
   local lo = floor(h)
   if lo >= n then return xs[n] end
   return xs[lo] + (h - lo) * (xs[lo + 1] - xs[lo])
end

-------------------------------------------------------------------------------
-- Quantile sketch (DDSketch)
-------------------------------------------------------------------------------

---@class doppel.stats.SketchOptions
---@field alpha? number      relative accuracy in (0, 1) (default 0.01)
---@field max_bins? integer  memory bound (default 2048); when exceeded the lowest bins
---                          of each sign are merged, which only affects the lowest ranks
---@field min_value? number  magnitudes below it count as zero (default 1e-9)

---@class doppel.stats.Sketch
---@field alpha number
local Sketch = {}
Sketch.__index = Sketch

--- Creates a DDSketch: values go into logarithmic bins of ratio
--- gamma = (1 + alpha) / (1 - alpha), so the estimate of any quantile q is a
--- value x' with |x' - x| <= alpha |x|, where x is the true sample of rank
--- ceil(q (n - 1)) + 1 (as long as no bins were merged and |x| >= min_value).
---@param opts? doppel.stats.SketchOptions
---@return doppel.stats.Sketch
function M.sketch(opts)
   local fn = "sketch"
   opts = check_opts(fn, opts)
   local alpha = opts.alpha or 0.01
   check_num(fn, "alpha", alpha)
   if alpha <= 0 or alpha >= 1 then fail(fn, "alpha must be in (0, 1), got " .. alpha) end
   local min_value = opts.min_value or 1e-9
   check_num(fn, "min_value", min_value)
   if min_value <= 0 then fail(fn, "min_value must be positive, got " .. min_value) end
   local gamma = (1 + alpha) / (1 - alpha)
   return setmetatable({
      alpha = alpha, gamma = gamma, lg = log(gamma), min_value = min_value,
      max_bins = posint(fn, "max_bins", opts.max_bins or 2048),
      pos = {}, neg = {}, npos = 0, nneg = 0, zero = 0, n = 0, nbins = 0,
      lo = huge, hi = -huge,
   }, Sketch)
end

local function collapse(self, bins, which)
   -- Merge the lowest-magnitude bins of one sign into one until within bounds.
   local keys = {}
   for k in pairs(bins) do keys[#keys + 1] = k end
   table.sort(keys)
   local excess = self.nbins - self.max_bins
   if excess <= 0 or #keys < 2 then return end
   local take = math.min(excess, #keys - 1)
   local into = keys[take + 1]
   for i = 1, take do
      bins[into] = bins[into] + bins[keys[i]]
      bins[keys[i]] = nil
   end
   self.nbins = self.nbins - take
   self[which] = true
end

--- Adds a sample.
---@param x number
---@return doppel.stats.Sketch self
function Sketch:add(x)
   check_num("sketch.add", "value", x)
   self.n = self.n + 1
   if x < self.lo then self.lo = x end
   if x > self.hi then self.hi = x end
   local a = x < 0 and -x or x
   if a < self.min_value then
      self.zero = self.zero + 1
      return self
   end
   local k = math.ceil(log(a) / self.lg)
   local bins = x > 0 and self.pos or self.neg
   local c = bins[k]
   if c == nil then
      self.nbins = self.nbins + 1
      self.order = nil
      bins[k] = 1
      if self.nbins > self.max_bins then
         collapse(self, x > 0 and self.pos or self.neg, "collapsed")
      end
   else
      bins[k] = c + 1
   end
   if x > 0 then self.npos = self.npos + 1 else self.nneg = self.nneg + 1 end
   return self
end

---@return integer number of samples added
function Sketch:count() return self.n end

--- Estimated q-quantile (see M.sketch for the error bound); nil when empty.
---@param q number in [0, 1]
---@return number?
function Sketch:quantile(q)
   check_num("sketch.quantile", "q", q)
   if q < 0 or q > 1 then fail("sketch.quantile", "q must be in [0, 1], got " .. q) end
   if self.n == 0 then return nil end
   if q == 0 then return self.lo end
   if q == 1 then return self.hi end
   local rank = floor(q * (self.n - 1)) -- 0-based rank of the answer
   local g = self.gamma
   -- Sorted bin keys are cached until a bin is added (rare once the range is
   -- covered), so a query walks the bins from the nearer end: O(bins), and
   -- O(1) in practice for extreme quantiles.
   local order = self.order
   if order == nil then
      order = {}
      local neg = {}
      for k in pairs(self.neg) do neg[#neg + 1] = k end
      table.sort(neg, function(a, b) return a > b end)
      for _, k in ipairs(neg) do order[#order + 1] = { self.neg, k, -1 } end
      order[#order + 1] = false -- the zero bucket
      local pos = {}
      for k in pairs(self.pos) do pos[#pos + 1] = k end
      table.sort(pos)
      for _, k in ipairs(pos) do order[#order + 1] = { self.pos, k, 1 } end
      self.order = order
   end
   local function value(e)
      if not e then return 0 end
      local v = e[3] * 2 * g ^ e[2] / (g + 1) -- relative error <= alpha
      if v < self.lo then return self.lo end
      if v > self.hi then return self.hi end
      return v
   end
   local function count(e)
      if not e then return self.zero end
      return e[1][e[2]]
   end
   if rank < self.n / 2 then
      local acc = 0
      for i = 1, #order do
         acc = acc + count(order[i])
         if acc > rank then return value(order[i]) end
      end
   else
      local acc = self.n
      for i = #order, 1, -1 do
         acc = acc - count(order[i])
         if acc <= rank then return value(order[i]) end
      end
   end
   return self.hi
end

--- Adds every sample of another sketch with the same alpha into this one.
---@param other doppel.stats.Sketch
---@return doppel.stats.Sketch self
function Sketch:merge(other)
   if getmetatable(other) ~= Sketch then fail("sketch.merge", "other must be a sketch") end
   if other.alpha ~= self.alpha then fail("sketch.merge", "other must have the same alpha") end
   self.order = nil
   for _, side in ipairs { "pos", "neg" } do
      local mine = self[side]
      for k, c in pairs(other[side]) do
         if mine[k] == nil then self.nbins = self.nbins + 1 end
         mine[k] = (mine[k] or 0) + c
      end
   end
   self.npos, self.nneg = self.npos + other.npos, self.nneg + other.nneg
   self.zero, self.n = self.zero + other.zero, self.n + other.n
   self.lo, self.hi = math.min(self.lo, other.lo), math.max(self.hi, other.hi)
   return self
end

-------------------------------------------------------------------------------
-- EWMA
-------------------------------------------------------------------------------

---@class doppel.stats.EwmaOptions
---@field alpha? number             weight of each new sample in (0, 1]
---@field halflife? number|string   or: time for a sample's weight to halve (irregular samples)

---@class doppel.stats.Ewma
---@field value number?   the weighted mean (nil before the first sample)
---@field var number      the weighted variance
---@field n integer       samples seen
local Ewma = {}
Ewma.__index = Ewma

--- Exponentially weighted moving mean and variance.
---@param opts doppel.stats.EwmaOptions
---@return doppel.stats.Ewma
function M.ewma(opts)
   local fn = "ewma"
   if type(opts) ~= "table" then fail(fn, "options must be a table, got " .. show(opts)) end
   if (opts.alpha == nil) == (opts.halflife == nil) then
      fail(fn, "give exactly one of alpha or halflife")
   end
   local self = setmetatable({ n = 0, var = 0 }, Ewma)
   if opts.alpha ~= nil then
      check_num(fn, "alpha", opts.alpha)
      if opts.alpha <= 0 or opts.alpha > 1 then
         fail(fn, "alpha must be in (0, 1], got " .. opts.alpha)
      end
      self.alpha = opts.alpha
   else
      self.halflife = seconds(fn, "halflife", opts.halflife)
   end
   return self
end

--- Adds a sample; with a half-life `t` is needed (default: the twin clock).
---@param x number
---@param t? number
---@return number mean after the update
function Ewma:push(x, t)
   check_num("ewma.push", "value", x)
   local a = self.alpha
   if self.halflife then
      t = now_or(t)
      check_num("ewma.push", "t", t)
      if self.t ~= nil then
         local dt = t - self.t
         if dt < 0 then fail("ewma.push", "t must not go back in time") end
         a = 1 - exp(-dt * 0.6931471805599453 / self.halflife)
      end
      self.t = t
   end
   self.n = self.n + 1
   if self.value == nil then
      self.value = x
      return x
   end
   local d = x - self.value
   local incr = a * d
   self.value = self.value + incr
   self.var = (1 - a) * (self.var + d * incr)
   return self.value
end

---@return number? weighted standard deviation
function Ewma:stddev() return self.value and sqrt(self.var) end

-------------------------------------------------------------------------------
-- Online linear regression
-------------------------------------------------------------------------------

---@class doppel.stats.RegressionOptions
---@field size? integer        regress on the last `size` points only
---@field span? number|string  or on the points newer than `span` (x is time)

---@class doppel.stats.Regression
---@field n integer            points in the fit
local Regression = {}
Regression.__index = Regression

--- Online least squares y = intercept + slope x. Sums are kept relative to the
--- first x seen so time stamps in seconds since 1970 lose no precision.
---@param opts? doppel.stats.RegressionOptions
---@return doppel.stats.Regression
function M.regression(opts)
   local fn = "regression"
   opts = check_opts(fn, opts)
   local self = setmetatable({ n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0 }, Regression)
   if opts.size ~= nil and opts.span ~= nil then fail(fn, "give at most one of size or span") end
   if opts.size ~= nil then
      self.win = M.window { size = posint(fn, "size", opts.size) }
   elseif opts.span ~= nil then
      self.win = M.window { span = seconds(fn, "span", opts.span), max_count = opts.max_count }
   end
   if self.win then self.xs = {} end
   return self
end

local function reg_acc(self, x, y, s)
   self.n = self.n + s
   self.sx, self.sy = self.sx + s * x, self.sy + s * y
   self.sxx, self.sxy, self.syy = self.sxx + s * x * x, self.sxy + s * x * y, self.syy + s * y * y
end

--- Adds a point (x defaults to the twin clock's time).
---@param y number
---@param x? number
---@return doppel.stats.Regression self
function Regression:push(y, x)
   check_num("regression.push", "y", y)
   x = now_or(x)
   check_num("regression.push", "x", x)
   if self.x0 == nil then self.x0 = x end
   local xr = x - self.x0
   if self.win then
      local w = self.win
      local cap = w.size
      -- Points leaving the window leave the sums too.
      local before = w.first
      if w.span then w:expire(x) end
      if w.last - w.first + 1 >= cap then
         -- push below evicts the oldest
         local s = (w.first - 1) % cap + 1
         reg_acc(self, self.xs[s], w.v[s], -1)
      end
      for i = before, w.first - 1 do
         local s = (i - 1) % cap + 1
         reg_acc(self, self.xs[s], w.v[s], -1)
      end
      w:push(y, x)
      self.xs[(w.last - 1) % cap + 1] = xr
      if w.last - w.first + 1 == 1 then
         -- Re-anchor on a fresh window to keep the sums small.
         self.n, self.sx, self.sy, self.sxx, self.sxy, self.syy = 0, 0, 0, 0, 0, 0
      end
   end
   reg_acc(self, xr, y, 1)
   return self
end

local function moments(self)
   local n = self.n
   if n < 2 then return nil end
   local mx, my = self.sx / n, self.sy / n
   local cxx = self.sxx - n * mx * mx
   local cxy = self.sxy - n * mx * my
   local cyy = self.syy - n * my * my
   return n, mx, my, cxx, cxy, cyy
end

--- Slope, intercept and r2 of the fit; nil with fewer than two distinct x.
---@return number? slope
---@return number? intercept  (in the caller's x units)
---@return number? r2
function Regression:fit()
   local n, mx, my, cxx, cxy, cyy = moments(self)
   if not n or cxx <= 1e-12 * (self.sxx + 1e-300) then return nil end
   local b = cxy / cxx
   local a = my - b * mx - b * self.x0
   local r2 = cyy > 0 and (cxy * cxy) / (cxx * cyy) or 1
   if r2 > 1 then r2 = 1 end
   return b, a, r2
end

---@return number?
function Regression:slope() return (self:fit()) end

---@return number?
function Regression:intercept()
   local _, a = self:fit()
   return a
end

---@return number?
function Regression:r2()
   local _, _, r2 = self:fit()
   return r2
end

--- Standard error of the slope and residual standard deviation (n > 2).
---@return number? slope_se
---@return number? residual_sd
function Regression:stderr()
   local n, _, _, cxx, cxy, cyy = moments(self)
   if not n or n < 3 or cxx <= 0 then return nil end
   local sse = cyy - cxy * cxy / cxx
   if sse < 0 then sse = 0 end
   local s = sqrt(sse / (n - 2))
   return s / sqrt(cxx), s
end

--- Predicted y at x.
---@param x number
---@return number?
function Regression:predict(x)
   check_num("regression.predict", "x", x)
   local b, a = self:fit()
   return b and a + b * x
end

--- Mean of the x values in the fit (caller's units).
---@return number?
function Regression:mean_x()
   if self.n < 1 then return nil end
   return self.sx / self.n + self.x0
end

-------------------------------------------------------------------------------
-- Histogram
-------------------------------------------------------------------------------

---@class doppel.stats.HistogramOptions
---@field min number
---@field max number
---@field bins integer

---@class doppel.stats.Histogram
---@field counts integer[]  counts per bin
---@field under integer     samples below min
---@field over integer      samples at or above max
---@field n integer         all samples
local Histogram = {}
Histogram.__index = Histogram

--- A histogram of `bins` equal bins over [min, max).
---@param opts doppel.stats.HistogramOptions
---@return doppel.stats.Histogram
function M.histogram(opts)
   local fn = "histogram"
   if type(opts) ~= "table" then fail(fn, "options must be a table, got " .. show(opts)) end
   check_num(fn, "min", opts.min)
   check_num(fn, "max", opts.max)
   if opts.max <= opts.min then fail(fn, "max must be greater than min") end
   local bins = posint(fn, "bins", opts.bins)
   if bins > 100000 then fail(fn, "bins must be at most 100000, got " .. bins) end
   local counts = {}
   for i = 1, bins do counts[i] = 0 end
   return setmetatable({ min = opts.min, max = opts.max, bins = bins, counts = counts,
      under = 0, over = 0, n = 0, width = (opts.max - opts.min) / bins }, Histogram)
end

--- Adds a sample (or `weight` samples).
---@param x number
---@param weight? integer
---@return integer? bin the bin index, nil when out of range
function Histogram:add(x, weight)
   check_num("histogram.add", "value", x)
   weight = weight or 1
   check_num("histogram.add", "weight", weight)
   self.n = self.n + weight
   if x < self.min then self.under = self.under + weight return nil end
   if x >= self.max then self.over = self.over + weight return nil end
   local i = floor((x - self.min) / self.width) + 1
   if i > self.bins then i = self.bins end
   self.counts[i] = self.counts[i] + weight
   return i
end

--- Lower and upper edge of bin i.
---@param i integer
---@return number lo
---@return number hi
function Histogram:edges(i)
   if math.type(i) ~= "integer" or i < 1 or i > self.bins then
      fail("histogram.edges", "i must be a bin index in 1.." .. self.bins .. ", got " .. show(i))
   end
   return self.min + (i - 1) * self.width, self.min + i * self.width
end

--- Approximate quantile, interpolated inside the bin (clamped to [min, max]).
---@param q number in [0, 1]
---@return number?
function Histogram:quantile(q)
   check_num("histogram.quantile", "q", q)
   if q < 0 or q > 1 then fail("histogram.quantile", "q must be in [0, 1], got " .. q) end
   if self.n == 0 then return nil end
   local target = q * self.n
   local acc = self.under
   if target <= acc then return self.min end
   for i = 1, self.bins do
      local c = self.counts[i]
      if acc + c >= target and c > 0 then
         return self.min + (i - 1 + (target - acc) / c) * self.width
      end
      acc = acc + c
   end
   return self.max
end

return M
