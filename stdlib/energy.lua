--- doppel.energy: energy from power, its cost, and how well it is used.
---
--- Use a meter to turn power samples (kW, at any irregular times) into energy
--- (kWh) by the trapezoidal rule, priced by a time-of-use tariff and divided
--- by what was produced (kWh per m3, per tonne, per part: the specific energy
--- consumption). Use a baseline to compare consumption with what a reference
--- period predicts for the same production (IPMVP-style savings).
---
--- ```lua
--- local energy = require "doppel.energy"
--- local tariff = energy.tariff { rate = 0.12, periods = {
---    { from = "07:00", to = "23:00", rate = 0.21, days = { 1, 2, 3, 4, 5 } } } }
--- local meter = energy.meter { tariff = tariff, max_gap = "5min" }
--- twin.on_change("power", function(kw, tag) meter:add(kw, tag.ts) end)
--- twin.on_change("volume", function(m3) meter:produced(m3) end)
--- -- meter.kwh, meter.cost, meter:specific()  (kWh per m3)
--- ```
local to_seconds = require "doppel._duration"

local M = {}

local function fail(fn, msg)
   error("energy." .. fn .. ": " .. msg, 3)
end

local function finite(x)
   return type(x) == "number" and x == x and x ~= math.huge and x ~= -math.huge
end

local function seconds(fn, field, d)
   if type(d) == "number" then
      if not (finite(d) and d >= 0) then fail(fn, field .. " must be a duration >= 0") end
      return d
   end
   if type(d) ~= "string" then fail(fn, field .. " must be a duration (\"5min\" or seconds)") end
   local ok, s = pcall(to_seconds, d)
   if not ok then fail(fn, field .. ": " .. tostring(s)) end
   return s
end

local function clock_of(hhmm, fn, field)
   if type(hhmm) ~= "string" then fail(fn, field .. " must be \"HH:MM\"") end
   local h, m = hhmm:match("^(%d%d?):(%d%d)$")
   h, m = tonumber(h), tonumber(m)
   if not h or h > 24 or m > 59 or (h == 24 and m > 0) then
      fail(fn, field .. " must be \"HH:MM\" (00:00 to 24:00)")
   end
   return h * 3600 + m * 60
end

-- ---------------------------------------------------------------------------
-- Tariffs

---@class doppel.energy.Period
---@field from string   "HH:MM" local time, inclusive
---@field to string     "HH:MM", exclusive; earlier than from: runs past midnight
---@field rate number   price per kWh in this period
---@field days? integer[] ISO weekdays (1 Monday .. 7 Sunday); default every day

---@class doppel.energy.TariffOptions
---@field rate number                 price per kWh outside every period
---@field periods? doppel.energy.Period[] first matching period wins
---@field utc_offset? number          local time = UTC + utc_offset hours (default 0)

---@class doppel.energy.Tariff
local Tariff = {}
Tariff.__index = Tariff

--- A time-of-use tariff.
---@param opts doppel.energy.TariffOptions
---@return doppel.energy.Tariff
function M.tariff(opts)
   if type(opts) ~= "table" then fail("tariff", "expected a table of options") end
   if not (finite(opts.rate) and opts.rate >= 0) then
      fail("tariff", "rate must be a number >= 0")
   end
   local off = opts.utc_offset or 0
   if not (finite(off) and off >= -14 and off <= 14) then
      fail("tariff", "utc_offset must be hours between -14 and 14")
   end
   local periods, bounds = {}, { [0] = true }
   if opts.periods ~= nil and type(opts.periods) ~= "table" then
      fail("tariff", "periods must be a list")
   end
   for i, p in ipairs(opts.periods or {}) do
      local where = "periods[" .. i .. "]"
      if type(p) ~= "table" then fail("tariff", where .. " must be a table") end
      local from = clock_of(p.from, "tariff", where .. ".from")
      local to = clock_of(p.to, "tariff", where .. ".to")
      if from == to then fail("tariff", where .. ": from and to are the same time") end
      if not (finite(p.rate) and p.rate >= 0) then
         fail("tariff", where .. ".rate must be a number >= 0")
      end
      local days
      if p.days ~= nil then
         if type(p.days) ~= "table" then fail("tariff", where .. ".days must be a list") end
         days = {}
         for _, d in ipairs(p.days) do
            if math.type(d) ~= "integer" or d < 1 or d > 7 then
               fail("tariff", where .. ".days holds ISO weekdays 1 (Monday) to 7")
            end
            days[d] = true
         end
      end
      periods[#periods + 1] = { from = from, to = to % 86400, rate = p.rate, days = days }
      bounds[from % 86400], bounds[to % 86400] = true, true
   end
   local list = {}
   for b in pairs(bounds) do list[#list + 1] = b end
   table.sort(list)
   return setmetatable({ rate0 = opts.rate, periods = periods, bounds = list,
                         offset = off * 3600 }, Tariff)
end

-- Local seconds of day and ISO weekday of clock time t.
local function local_time(self, t)
   local lt = t + self.offset
   local day = math.floor(lt / 86400)
   -- 1970-01-01 was a Thursday (ISO 4).
   return lt - day * 86400, (day + 3) % 7 + 1
end

--- The price per kWh at clock time t (seconds).
---@param t number
---@return number
function Tariff:rate(t)
   if not finite(t) then error("tariff:rate: t must be a number (clock seconds)", 2) end
   local sod, wd = local_time(self, t)
   for _, p in ipairs(self.periods) do
      local inside
      if p.from < p.to then inside = sod >= p.from and sod < p.to
      else inside = sod >= p.from or sod < p.to end
      -- A period past midnight belongs to the day it started on.
      local day = wd
      if p.from > p.to and sod < p.to then day = (wd + 5) % 7 + 1 end
      if inside and (p.days == nil or p.days[day]) then return p.rate end
   end
   return self.rate0
end

--- The next time after t at which the rate may change.
---@param t number
---@return number
function Tariff:next_change(t)
   local sod = local_time(self, t)
   for _, b in ipairs(self.bounds) do
      if b > sod + 1e-9 then return t + (b - sod) end
   end
   return t + (86400 - sod)
end

--- The cost of a constant power `kw` from t0 to t1 (seconds).
---@param kw number
---@param t0 number
---@param t1 number
---@return number cost
---@return number kwh
function Tariff:cost(kw, t0, t1)
   if not finite(kw) then error("tariff:cost: kw must be a number", 2) end
   if not (finite(t0) and finite(t1) and t1 >= t0) then
      error("tariff:cost: t0 and t1 must be clock seconds with t1 >= t0", 2)
   end
   local cost, t = 0, t0
   while t < t1 do
      local e = math.min(self:next_change(t), t1)
      cost = cost + kw * (e - t) / 3600 * self:rate(t)
      t = e
   end
   return cost, kw * (t1 - t0) / 3600
end

-- ---------------------------------------------------------------------------
-- Meters

---@class doppel.energy.MeterOptions
---@field tariff? doppel.energy.Tariff  prices the energy (meter.cost)
---@field max_gap? string|number        longer gaps between samples are not integrated
---                                     (counted in meter.gap_s); default "15min"

---@class doppel.energy.Meter
---@field kwh number       energy integrated so far
---@field cost number      its cost (0 without a tariff)
---@field units number     production counted with :produced()
---@field samples integer
---@field gap_s number     seconds left out because samples were too far apart
---@field peak_kw number
local Meter = {}
Meter.__index = Meter

--- A meter integrating power (kW) samples into energy (kWh).
---@param opts? doppel.energy.MeterOptions
---@return doppel.energy.Meter
function M.meter(opts)
   if opts ~= nil and type(opts) ~= "table" then fail("meter", "opts must be a table") end
   opts = opts or {}
   if opts.tariff ~= nil and getmetatable(opts.tariff) ~= Tariff then
      fail("meter", "tariff must come from energy.tariff{...}")
   end
   return setmetatable({
      tariff = opts.tariff,
      max_gap = seconds("meter", "max_gap", opts.max_gap or "15min"),
      kwh = 0, cost = 0, units = 0, samples = 0, gap_s = 0, peak_kw = 0,
   }, Meter)
end

--- Adds a power sample (kW) at clock time t (default clock.now()). The
--- segment from the previous sample is integrated as a straight line.
---@param kw number
---@param t? number
---@return number kwh the energy of the segment just added
function Meter:add(kw, t)
   if not finite(kw) then error("meter:add: kw must be a finite number", 2) end
   if t ~= nil and not finite(t) then error("meter:add: t must be a number (clock seconds)", 2) end
   if t == nil then
      if type(clock) ~= "table" then error("meter:add: t is required outside a twin", 2) end
      t = clock.now()
   end
   if self.t ~= nil and t < self.t then
      error(("meter:add: t (%.3f) is before the previous sample (%.3f)"):format(t, self.t), 2)
   end
   local e = 0
   if self.t ~= nil then
      local dt = t - self.t
      if dt > self.max_gap then
         self.gap_s = self.gap_s + dt
      elseif dt > 0 then
         e = (self.kw + kw) / 2 * dt / 3600
         self.kwh = self.kwh + e
         if self.tariff then
            -- Split at tariff changes; power is linear within the segment.
            local a = self.t
            while a < t do
               local b = math.min(self.tariff:next_change(a), t)
               local pa = self.kw + (kw - self.kw) * (a - self.t) / dt
               local pb = self.kw + (kw - self.kw) * (b - self.t) / dt
               self.cost = self.cost + (pa + pb) / 2 * (b - a) / 3600 * self.tariff:rate(a)
               a = b
            end
         end
      end
   end
   self.t, self.kw = t, kw
   self.samples = self.samples + 1
   if kw > self.peak_kw then self.peak_kw = kw end
   return e
end

--- Counts production (m3, tonnes, parts) for the specific energy.
---@param units number
function Meter:produced(units)
   if not (finite(units) and units >= 0) then
      error("meter:produced: units must be a number >= 0", 2)
   end
   self.units = self.units + units
end

--- Energy per unit produced (kWh/unit), or nil when nothing was produced.
---@return number|nil
function Meter:specific()
   return M.specific(self.kwh, self.units)
end

--- Starts again from zero (keeps the tariff); returns the totals it had.
---@return {kwh: number, cost: number, units: number, gap_s: number, peak_kw: number}
function Meter:reset()
   local r = { kwh = self.kwh, cost = self.cost, units = self.units, gap_s = self.gap_s,
               peak_kw = self.peak_kw }
   self.kwh, self.cost, self.units, self.gap_s, self.peak_kw, self.samples = 0, 0, 0, 0, 0, 0
   self.t, self.kw = nil, nil
   return r
end

--- The meter's totals as a storable table (for `state`); restore with energy.meter_from.
---@return table
function Meter:save()
   return { kwh = self.kwh, cost = self.cost, units = self.units, gap_s = self.gap_s,
            peak_kw = self.peak_kw, samples = self.samples, t = self.t, kw = self.kw }
end

--- A meter continuing from saved totals (twin state survives reloads; a meter does not).
---@param saved table|nil from meter:save()
---@param opts? doppel.energy.MeterOptions
---@return doppel.energy.Meter
function M.meter_from(saved, opts)
   local m = M.meter(opts)
   if saved ~= nil then
      if type(saved) ~= "table" then
         fail("meter_from", "saved must be a table from meter:save()")
      end
      for _, k in ipairs({ "kwh", "cost", "units", "gap_s", "peak_kw", "samples", "t", "kw" }) do
         if saved[k] ~= nil then
            if not finite(saved[k]) then
               fail("meter_from", "saved." .. k .. " must be a number")
            end
            m[k] = saved[k]
         end
      end
   end
   return m
end

-- ---------------------------------------------------------------------------
-- One-shot functions

--- Energy (kWh) of power samples (kW) at times (s), by the trapezoidal rule.
---@param times number[]  increasing clock seconds
---@param kw number[]     same length
---@param max_gap? string|number gaps longer than this are left out
---@return number kwh
function M.integrate(times, kw, max_gap)
   if type(times) ~= "table" then fail("integrate", "times must be an array") end
   if type(kw) ~= "table" then fail("integrate", "kw must be an array") end
   if #times ~= #kw then fail("integrate", "times and kw must have the same length") end
   local gap = max_gap ~= nil and seconds("integrate", "max_gap", max_gap) or math.huge
   local e = 0
   for i = 1, #times do
      if not finite(times[i]) then fail("integrate", "times[" .. i .. "] must be a number") end
      if not finite(kw[i]) then fail("integrate", "kw[" .. i .. "] must be a number") end
      if i > 1 then
         local dt = times[i] - times[i - 1]
         if dt < 0 then fail("integrate", "times must increase (at " .. i .. ")") end
         if dt <= gap then e = e + (kw[i] + kw[i - 1]) / 2 * dt / 3600 end
      end
   end
   return e
end

--- Specific energy consumption: kWh per unit produced (nil when units is 0).
---@param kwh number
---@param units number
---@return number|nil
function M.specific(kwh, units)
   if not finite(kwh) then fail("specific", "kwh must be a number") end
   if not (finite(units) and units >= 0) then fail("specific", "units must be a number >= 0") end
   if units == 0 then return nil end
   return kwh / units
end

-- ---------------------------------------------------------------------------
-- Baselines

---@class doppel.energy.Baseline
---@field intercept number  kWh at zero production (the fixed load)
---@field slope number      kWh per unit produced
---@field r2 number         fit quality (1: perfect)
---@field n integer
local Baseline = {}
Baseline.__index = Baseline

--- Fits a baseline E = intercept + slope * units by least squares over a
--- reference period (pairs of production and energy, e.g. one per day).
---@param units number[]
---@param kwh number[]
---@return doppel.energy.Baseline
function M.baseline(units, kwh)
   if type(units) ~= "table" then fail("baseline", "units must be an array") end
   if type(kwh) ~= "table" then fail("baseline", "kwh must be an array") end
   local n = #units
   if n ~= #kwh then fail("baseline", "units and kwh must have the same length") end
   if n < 2 then fail("baseline", "needs at least 2 points") end
   local sx, sy = 0, 0
   for i = 1, n do
      if not finite(units[i]) then fail("baseline", "units[" .. i .. "] must be a number") end
      if not finite(kwh[i]) then fail("baseline", "kwh[" .. i .. "] must be a number") end
      sx, sy = sx + units[i], sy + kwh[i]
   end
   local mx, my = sx / n, sy / n
   local sxx, sxy, syy = 0, 0, 0
   for i = 1, n do
      local dx, dy = units[i] - mx, kwh[i] - my
      sxx, sxy, syy = sxx + dx * dx, sxy + dx * dy, syy + dy * dy
   end
   if sxx == 0 then fail("baseline", "units must not all be equal") end
   local slope = sxy / sxx
   local r2 = syy > 0 and (sxy * sxy) / (sxx * syy) or 1
   return setmetatable({ intercept = my - slope * mx, slope = slope, r2 = r2, n = n,
                         cusum = 0 }, Baseline)
end

--- The energy the baseline expects for this production.
---@param units number
---@return number kwh
function Baseline:expected(units)
   if not finite(units) then error("baseline:expected: units must be a number", 2) end
   return self.intercept + self.slope * units
end

---@class doppel.energy.Comparison
---@field expected number   kWh the baseline predicts
---@field actual number
---@field savings number    expected - actual (positive: less energy than the baseline)
---@field percent number    savings as % of expected
---@field cusum number      running sum of savings over every compare() so far

--- Compares actual energy with the baseline for the same production, and
--- keeps a running sum (CUSUM) of savings.
---@param units number
---@param actual number kWh
---@return doppel.energy.Comparison
function Baseline:compare(units, actual)
   if not finite(units) then error("baseline:compare: units must be a number", 2) end
   if not finite(actual) then error("baseline:compare: actual must be a number", 2) end
   local exp = self:expected(units)
   local s = exp - actual
   self.cusum = self.cusum + s
   return { expected = exp, actual = actual, savings = s,
            percent = exp ~= 0 and 100 * s / exp or 0, cusum = self.cusum }
end

return M
