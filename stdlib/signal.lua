--- doppel.signal: vibration block analysis (FFT in C).
---
--- Use it on blocks of samples taken at a fixed rate (a vibration sensor's
--- waveform, a current signature): time-domain features that track bearing
--- and gear wear (RMS, peak, crest factor, kurtosis) and the spectrum (band
--- energy around a fault frequency, the strongest spectral peaks). The
--- transforms run in C on any block length up to 4,194,304 samples (powers of
--- two are fastest); the rest is O(n) Lua on the spectrum.
---
--- ```lua
--- local signal = require "doppel.signal"
--- local f = signal.features(block)                  -- rms, peak, crest, kurtosis
--- local e = signal.band_energy(block, 25600, 100, 200)
--- for _, p in ipairs(signal.peaks(block, 25600, 3)) do print(p.freq, p.amp) end
--- ```
local core = require "doppel._signal"

local M = {}

local type, tostring, error, log, exp = type, tostring, error, math.log, math.exp
local tiny = 1e-300

local function fail(fn, msg)
   error("doppel.signal." .. fn .. ": " .. msg, 3)
end

local function show(v)
   if type(v) == "string" then return string.format("%q", v) end
   return tostring(v)
end

local function rate_of(fn, rate)
   if type(rate) ~= "number" or rate ~= rate or rate <= 0 or rate == math.huge then
      fail(fn, "rate must be a positive number of samples per second, got " .. show(rate))
   end
   return rate
end

--- Discrete Fourier transform X[k] = sum_j x[j] e^(-2 pi i jk/n) (k, j from 0,
--- stored from index 1).
---@param re number[]     real parts
---@param im? number[]    imaginary parts (default zeros)
---@return number[] re
---@return number[] im
function M.fft(re, im)
   return core.fft(re, im, false)
end

--- Inverse transform, including the 1/n factor: ifft(fft(x)) == x.
---@param re number[]
---@param im number[]
---@return number[] re
---@return number[] im
function M.ifft(re, im)
   return core.fft(re, im, true)
end

---@class doppel.signal.Spectrum
---@field amp number[]   single-sided amplitude per bin (bin k at frequency (k-1) * df)
---@field df number      bin width in Hz
---@field rate number    sample rate
---@field n integer      block length
local Spectrum = {}
Spectrum.__index = Spectrum

-- Equivalent noise bandwidth of each window in bins: a windowed sine's
-- energy spreads over this many bins' worth of A^2 / 2.
local enbw = { hann = 1.5, hamming = (0.54 ^ 2 + 0.46 ^ 2 / 2) / 0.54 ^ 2, rect = 1, none = 1 }

---@class doppel.signal.SpectrumOptions
---@field window? "hann"|"hamming"|"rect"   (default "hann")

--- Amplitude spectrum of a real block: a sine of amplitude A reads about A at
--- its frequency (exactly A on a bin centre).
---@param block number[]
---@param rate number   samples per second
---@param opts? doppel.signal.SpectrumOptions
---@return doppel.signal.Spectrum
function M.spectrum(block, rate, opts)
   rate_of("spectrum", rate)
   if opts ~= nil and type(opts) ~= "table" then
      fail("spectrum", "options must be a table, got " .. show(opts))
   end
   local window = opts and opts.window or "hann"
   local amp = core.spectrum(block, window)
   return setmetatable({ amp = amp, n = #block, rate = rate, df = rate / #block,
      enbw = enbw[window] or 1 }, Spectrum)
end

--- Frequency of bin k (1-based).
---@param k integer
---@return number hz
function Spectrum:freq(k) return (k - 1) * self.df end

--- Energy (mean square) of the band [lo, hi] Hz: sum of A^2 / 2 over its bins
--- (the DC bin counts A^2), divided by the window's equivalent noise
--- bandwidth, so a sine of amplitude A inside the band reads A^2 / 2. A
--- windowed sine spreads over about three bins: give bands a few bins wide.
---@param lo number
---@param hi number
---@return number
function Spectrum:band_energy(lo, hi)
   if type(lo) ~= "number" or lo < 0 then
      fail("band_energy", "lo must be a frequency >= 0, got " .. show(lo))
   end
   if type(hi) ~= "number" or hi < lo then
      fail("band_energy", "hi must be a frequency >= lo, got " .. show(hi))
   end
   local amp, df = self.amp, self.df
   local k0 = math.max(1, math.ceil(lo / df) + 1)
   local k1 = math.min(#amp, math.floor(hi / df) + 1)
   local e = 0
   for k = k0, k1 do
      local a = amp[k]
      e = e + (k == 1 and a * a or a * a / 2)
   end
   return e / self.enbw
end

--- The n strongest local maxima (by amplitude), frequency and amplitude
--- refined by interpolating a parabola through the log amplitudes of the
--- peak bin and its neighbours, strongest first.
---@param n? integer  how many (default 5)
---@return { freq: number, amp: number }[]
function Spectrum:peaks(n)
   n = n or 5
   if math.type(n) ~= "integer" or n < 1 then
      fail("peaks", "n must be a positive integer, got " .. show(n))
   end
   local amp, df, found = self.amp, self.df, {}
   for k = 2, #amp - 1 do
      local a = amp[k]
      if a > amp[k - 1] and a >= amp[k + 1] then
         -- Gaussian (log-parabolic) interpolation: nearly unbiased for Hann.
         local l, c, r = log(amp[k - 1] + tiny), log(a + tiny), log(amp[k + 1] + tiny)
         local den = l - 2 * c + r
         local off = den < 0 and 0.5 * (l - r) / den or 0
         found[#found + 1] = { freq = (k - 1 + off) * df, amp = exp(c - 0.25 * (l - r) * off) }
      end
   end
   table.sort(found, function(x, y) return x.amp > y.amp end)
   for i = #found, n + 1, -1 do found[i] = nil end
   return found
end

---@class doppel.signal.Features
---@field mean number
---@field rms number        root mean square of the raw block
---@field std number        standard deviation
---@field peak number       largest |x|
---@field crest number      peak / rms (about 1.41 for a sine, > 3 for impacts)
---@field kurtosis number   m4 / m2^2 of the mean-removed block (3 Gaussian, 1.5 sine)

--- All time-domain features in one pass (C).
---@param block number[]
---@return doppel.signal.Features
function M.features(block)
   return core.features(block)
end

---@param block number[]
---@return number
function M.rms(block) return core.features(block, "rms").rms end

---@param block number[]
---@return number
function M.peak(block) return core.features(block, "peak").peak end

---@param block number[]
---@return number
function M.crest_factor(block) return core.features(block, "crest_factor").crest end

---@param block number[]
---@return number
function M.kurtosis(block) return core.features(block, "kurtosis").kurtosis end

--- Band energy of a block (see Spectrum:band_energy).
---@param block number[]
---@param rate number
---@param lo number
---@param hi number
---@param opts? doppel.signal.SpectrumOptions
---@return number
function M.band_energy(block, rate, lo, hi, opts)
   return M.spectrum(block, rate, opts):band_energy(lo, hi)
end

--- Strongest spectral peaks of a block (see Spectrum:peaks).
---@param block number[]
---@param rate number
---@param n? integer
---@param opts? doppel.signal.SpectrumOptions
---@return { freq: number, amp: number }[]
function M.peaks(block, rate, n, opts)
   return M.spectrum(block, rate, opts):peaks(n)
end

return M
