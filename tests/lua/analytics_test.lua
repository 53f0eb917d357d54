-- The analytics modules inside a running twin, in virtual time: rolling
-- means on tag timestamps, a z-score anomaly, time to a wear limit from the
-- twin clock, and the C FFT kernel reached from a twin's require.
local test = require "doppel.test"

local function twin(t)
   t:twin { name = "M1", script = "analytics_twin.lua", params = { wear_limit = 100 },
            tags = { temperature = {}, wear = {} } }
end

test.case("rolling mean and anomaly score follow the samples' times", function(t)
   twin(t)
   for i = 1, 120 do
      t:set("M1.temperature", 50 + (i % 2))
      t:advance("10s")
   end
   -- the last 10 minutes: 60 samples alternating 50 and 51
   t:near(t:get("M1.temp_mean"), 50.5, 1e-9)
   t:ok(t:get("M1.temp_anomaly") < 0.9)
   t:set("M1.temperature", 80)
   t:ok(t:get("M1.temp_anomaly") > 0.9999, "a 60-sigma jump")
end)

test.case("remaining hours to the wear limit from the twin clock", function(t)
   twin(t)
   for h = 0, 10 do
      t:set("M1.wear", 40 + 2 * h) -- 2 units an hour: 60 at h = 10, 100 at h = 30
      t:advance("1h")
   end
   t:near(t:get("M1.rul_h"), 20, 1e-6)
end)

test.case("signal.rms from a twin timer", function(t)
   twin(t)
   t:advance("61s")
   t:near(t:get("M1.vib_rms"), math.sqrt(2), 1e-9)
end)
