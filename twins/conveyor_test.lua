-- Conveyor twin: throughput, availability, performance, quality, OEE per shift.
local test = require "doppel.test"

local function line(t, params)
   local p = { ideal_rate = 600, shift = "8h", shift_start = "06:00" }
   for k, v in pairs(params or {}) do p[k] = v end
   t:twin { name = "L1", class = "conveyor", params = p,
            tags = { running = {}, count = {}, rejects = {}, planned = {} } }
end

-- Runs for `minutes` at `rate` units/h with `reject_pct` % rejects, counting every minute.
local function produce(t, minutes, rate, reject_pct, c)
   t:set("L1.running", true)
   for _ = 1, minutes do
      c.count = c.count + rate / 60
      c.rejects = c.rejects + rate / 60 * reject_pct / 100
      t:set("L1.count", c.count)
      t:set("L1.rejects", c.rejects)
      t:advance("1min")
   end
end

test.case("OEE = availability x performance x quality", function(t)
   line(t, { shift = "12h" })
   t:advance_to("2026-01-01T06:00:00Z")
   t:set("L1.planned", true)
   local c = { count = 1000, rejects = 10 }
   t:set("L1.count", c.count)
   t:set("L1.rejects", c.rejects)
   -- 6 h running at 540/h (90 %) with 2 % rejects, 2 h stopped: 75 % available.
   produce(t, 180, 540, 2, c)
   t:set("L1.running", false)
   t:advance("2h")
   produce(t, 180, 540, 2, c)
   t:near(t:get("L1.availability"), 75, 0.5)
   t:near(t:get("L1.performance"), 90, 0.5)
   t:near(t:get("L1.quality"), 98, 1e-6)
   t:near(t:get("L1.oee"), 0.75 * 0.9 * 0.98 * 100, 0.6)
   t:near(t:get("L1.downtime"), 120, 1.5)
   t:eq(t:get("L1.stops"), 1)
   t:near(t:get("L1.throughput"), 540, 1)
end)

test.case("a shift boundary reports the shift and starts again", function(t)
   line(t)
   t:advance_to("2026-01-01T06:00:00Z")
   local c = { count = 0, rejects = 0 }
   t:set("L1.count", 0)      -- the first sample sets the counter's base
   produce(t, 480, 600, 0, c)    -- a full shift at the ideal rate
   t:advance("1min")
   -- The night shift (22:00 - 06:00, nothing produced) and the day shift.
   local r = t:events("shift_report")
   t:eq(#r, 2)
   t:eq(r[1].data.start, "2025-12-31T22:00:00.000Z")
   t:eq(r[1].data.units, 0)
   t:eq(r[2].data.start, "2026-01-01T06:00:00.000Z")
   t:near(r[2].data.units, 4800, 1e-6)
   t:near(r[2].data.oee, 100, 0.5)
   t:ok(t:get("L1.stops") == 0)
end)

test.case("unplanned time does not count and counter resets are handled", function(t)
   line(t)
   t:advance_to("2026-01-01T06:00:00Z")
   local c = { count = 99990, rejects = 0 }
   t:set("L1.planned", true)
   t:set("L1.count", c.count)
   produce(t, 60, 600, 0, c)
   -- Not planned for an hour: stopped, but no downtime.
   t:set("L1.planned", false)
   t:set("L1.running", false)
   t:advance("1h")
   t:set("L1.planned", true)
   -- The counter rolls over to zero.
   c.count = 0
   produce(t, 60, 600, 0, c)
   t:near(t:get("L1.availability"), 100, 0.5)
   t:near(t:get("L1.downtime"), 0, 0.5)
   t:near(t:get("L1.performance"), 100, 1)
end)

test.case("a bad ideal_rate is refused naming the param", function(t)
   t:raises(function()
      line(t, { ideal_rate = "fast" })
      t:get("L1.count")
   end, "params.ideal_rate is required")
end)

test.case("a bad shift_start is refused naming the param", function(t)
   t:raises(function()
      line(t, { shift_start = "6am" })
      t:get("L1.count")
   end, "params.shift_start must be")
end)
