-- A twin using doppel.stats, detect, predict and signal from its handlers, as a
-- plant would: used by tests/lua/analytics_test.lua.
local stats = require "doppel.stats"
local detect = require "doppel.detect"
local predict = require "doppel.predict"
local signal = require "doppel.signal"

twin.tag("temp_mean")
twin.tag("temp_anomaly")
twin.tag("rul_h")
twin.tag("vib_rms")

local w = stats.window { span = "10min" }
local d = detect.zscore { size = 60 }
local tr = predict.trend { span = "6h" }

twin.on_change("temperature", function(v, tag)
   w:push(v, tag.ts)
   tags.temp_mean = w:mean()
   tags.temp_anomaly = d:update(v, tag.ts)
end)

twin.on_change("wear", function(v)
   tr:push(v) -- time from the twin's clock
   local r = tr:rul(params.wear_limit)
   if r then tags.rul_h = r.rul / 3600 end
end)

twin.every("1min", function()
   local block = {}
   for i = 1, 256 do block[i] = 2 * math.sin(2 * math.pi * 8 * i / 256) end
   tags.vib_rms = signal.rms(block)
end)
