-- Tests of doppel.signal: FFT of known signals (against the direct DFT and
-- closed forms), spectra, features with known values, bad arguments.
local test = require "doppel.test"
local signal = require "doppel.signal"

local pi = math.pi

local function dft(re, im)
   local n, outr, outi = #re, {}, {}
   for k = 0, n - 1 do
      local sr, si = 0, 0
      for j = 0, n - 1 do
         local a = -2 * pi * j * k / n
         local c, s = math.cos(a), math.sin(a)
         sr = sr + re[j + 1] * c - im[j + 1] * s
         si = si + re[j + 1] * s + im[j + 1] * c
      end
      outr[k + 1], outi[k + 1] = sr, si
   end
   return outr, outi
end

local function sine(n, rate, f, amp, phase)
   local x = {}
   for i = 0, n - 1 do x[i + 1] = amp * math.sin(2 * pi * f * i / rate + (phase or 0)) end
   return x
end

test.case("fft matches the direct DFT for power-of-two and other lengths", function(t)
   for _, n in ipairs { 1, 2, 3, 5, 8, 12, 17, 64, 100, 127 } do
      local re, im = {}, {}
      for i = 1, n do re[i], im[i] = math.sin(i * 1.3) + i % 3, math.cos(i * 0.7) end
      local fr, fi = signal.fft(re, im)
      local dr, di = dft(re, im)
      for k = 1, n do
         t:near(fr[k], dr[k], 1e-9 * n, "re n=" .. n .. " k=" .. k)
         t:near(fi[k], di[k], 1e-9 * n, "im n=" .. n .. " k=" .. k)
      end
   end
end)

test.case("fft of an impulse is flat; of a constant is a DC spike", function(t)
   local re = { 1, 0, 0, 0, 0, 0, 0, 0 }
   local fr, fi = signal.fft(re)
   for k = 1, 8 do
      t:near(fr[k], 1, 1e-15)
      t:near(fi[k], 0, 1e-15)
   end
   local c = {}
   for i = 1, 10 do c[i] = 2.5 end
   fr, fi = signal.fft(c)
   t:near(fr[1], 25, 1e-12)
   for k = 2, 10 do t:near(math.abs(fr[k]) + math.abs(fi[k]), 0, 1e-12) end
end)

test.case("fft of a cosine puts n/2 at +-f; ifft inverts", function(t)
   local n, x = 1024, {}
   for i = 0, n - 1 do x[i + 1] = math.cos(2 * pi * 37 * i / n) end
   local fr, fi = signal.fft(x)
   t:near(fr[38], n / 2, 1e-9)
   t:near(fr[n - 37 + 1], n / 2, 1e-9)
   t:near(fi[38], 0, 1e-9)
   local br, bi = signal.ifft(fr, fi)
   for i = 1, n do
      t:near(br[i], x[i], 1e-12)
      t:near(bi[i], 0, 1e-12)
   end
   -- A 1000-point (non power of two) round trip through Bluestein.
   local y = {}
   for i = 1, 1000 do y[i] = (i * 7919) % 101 / 10 end
   local yr, yi = signal.fft(y)
   br = signal.ifft(yr, yi)
   for i = 1, 1000 do t:near(br[i], y[i], 1e-9) end
end)

test.case("Parseval: energy is preserved", function(t)
   local x, e = {}, 0
   for i = 1, 300 do
      x[i] = math.sin(i) * math.exp(-i / 100)
      e = e + x[i] ^ 2
   end
   local fr, fi = signal.fft(x)
   local ef = 0
   for k = 1, 300 do ef = ef + fr[k] ^ 2 + fi[k] ^ 2 end
   t:near(ef / 300, e, 1e-9)
end)

test.case("spectrum reads a sine's amplitude and frequency", function(t)
   local rate, n = 1024, 1024
   local x = sine(n, rate, 50, 3)
   for i = 1, n do x[i] = x[i] + 1.5 * math.sin(2 * pi * 120 * (i - 1) / rate) + 0.5 end
   local s = signal.spectrum(x, rate)
   t:eq(s.df, 1)
   t:near(s.amp[51], 3, 1e-9)
   t:near(s.amp[121], 1.5, 1e-9)
   t:near(s.amp[1], 0.5, 1e-9)
   local r = signal.spectrum(x, rate, { window = "rect" })
   t:near(r.amp[51], 3, 1e-9)
   t:near(r.amp[100], 0, 1e-9)
   -- Off-bin frequency: peak interpolation finds it.
   local y = sine(4096, 4096, 100.3, 2)
   local p = signal.peaks(y, 4096, 1)
   t:near(p[1].freq, 100.3, 0.05)
   t:near(p[1].amp, 2, 0.2)
end)

test.case("peaks: strongest first", function(t)
   local rate = 2000
   local x = sine(2000, rate, 60, 1)
   local y = sine(2000, rate, 180, 4)
   local z = sine(2000, rate, 400, 2)
   for i = 1, 2000 do x[i] = x[i] + y[i] + z[i] end
   local p = signal.peaks(x, rate, 3)
   t:eq(#p, 3)
   t:near(p[1].freq, 180, 0.01)
   t:near(p[2].freq, 400, 0.01)
   t:near(p[3].freq, 60, 0.01)
end)

test.case("band energy of a sine is A^2/2 in its band and ~0 elsewhere", function(t)
   local rate = 4096
   local x = sine(4096, rate, 300, 2)
   t:near(signal.band_energy(x, rate, 290, 310), 2, 1e-6)
   t:near(signal.band_energy(x, rate, 290, 310, { window = "hamming" }), 2, 1e-6)
   t:near(signal.band_energy(x, rate, 290, 310, { window = "rect" }), 2, 1e-9)
   t:ok(signal.band_energy(x, rate, 500, 1000) < 1e-12)
   -- The whole band holds the signal's mean square (Parseval).
   t:near(signal.band_energy(x, rate, 0, rate / 2, { window = "rect" }), 2, 1e-9)
end)

test.case("time features of a sine, a square wave and an impulse train", function(t)
   local x = sine(1000, 1000, 10, 2)
   local f = signal.features(x)
   t:near(f.rms, 2 / math.sqrt(2), 1e-9)
   t:near(f.peak, 2, 1e-9)
   t:near(f.crest, math.sqrt(2), 1e-9)
   t:near(f.kurtosis, 1.5, 1e-9)
   t:near(f.mean, 0, 1e-12)
   local sq = {}
   for i = 1, 100 do sq[i] = (i % 2 == 0) and 1 or -1 end
   t:near(signal.rms(sq), 1, 1e-12)
   t:near(signal.crest_factor(sq), 1, 1e-12)
   t:near(signal.kurtosis(sq), 1, 1e-12)
   local imp = {}
   for i = 1, 100 do imp[i] = (i % 10 == 0) and 10 or 0 end
   t:eq(signal.peak(imp), 10)
   t:near(signal.crest_factor(imp), 10 / math.sqrt(10), 1e-12)
   -- kurtosis of a 1-in-10 impulse train: (p(1-p)^4 + (1-p)p^4) / (p(1-p))^2 with p = 0.1
   local p = 0.1
   t:near(signal.kurtosis(imp), (p * (1 - p) ^ 4 + (1 - p) * p ^ 4) / (p * (1 - p)) ^ 2, 1e-9)
   t:eq(signal.kurtosis { 3, 3, 3 }, 0)
end)

test.case("bad arguments raise errors naming the argument", function(t)
   t:raises(function() signal.fft("x") end, "doppel.signal.fft: re must be a list of numbers")
   t:raises(function() signal.fft({}) end, "re must hold 1 to")
   t:raises(function() signal.fft({ 1, 2 }, { 1 }) end, "im must have as many numbers as re")
   t:raises(function() signal.fft({ 1, "a" }) end, "re[2] must be a finite number")
   t:raises(function() signal.rms({ 1, 0 / 0 }) end, "block[2] must be a finite number")
   t:raises(function() signal.spectrum({ 1, 2 }, 0) end,
      "doppel.signal.spectrum: rate must be a positive number")
   t:raises(function() signal.spectrum({ 1, 2 }, 10, { window = "kaiser" }) end,
      "window must be \"hann\", \"hamming\" or \"rect\"")
   t:raises(function() signal.band_energy({ 1, 2 }, 10, 5, 1) end, "hi must be a frequency >= lo")
   t:raises(function() signal.peaks({ 1, 2 }, 10, 0) end, "n must be a positive integer")
end)
