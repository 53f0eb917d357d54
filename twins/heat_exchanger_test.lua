-- Heat exchanger twin: LMTD, UA, fouling trend, cleaning work order.
local test = require "doppel.test"

local function hx(t, params)
   local p = { ua_clean = 8, clean_at = 75, wo_days = 14 }
   for k, v in pairs(params or {}) do p[k] = v end
   t:twin { name = "E1", class = "heat_exchanger", params = p,
            tags = { hot_in = {}, hot_out = {}, cold_in = {}, cold_out = {},
                     cold_flow = { unit = "m3/h" } } }
end

local function temps(t, hi, ho, ci, co, flow)
   t:set("E1.hot_in", hi)
   t:set("E1.hot_out", ho)
   t:set("E1.cold_in", ci)
   t:set("E1.cold_out", co)
   t:set("E1.cold_flow", flow)
end

test.case("duty, LMTD and UA in counterflow", function(t)
   hx(t)
   temps(t, 90, 50, 20, 40, 10)
   t:advance("1s")
   local q = 10 / 3600 * 998 * 4.186 * 20
   local lm = (50 - 30) / math.log(50 / 30)
   t:near(t:get("E1.duty"), q, 1e-9)
   t:near(t:get("E1.lmtd"), lm, 1e-9)
   t:near(t:get("E1.ua"), q / lm, 1e-9)
   t:near(t:get("E1.ua_ratio"), 100 * q / lm / 8, 1e-9)
   t:near(t:get("E1.fouling"), lm / q - 1 / 8, 1e-12)
   -- Equal terminal differences: the LMTD is that difference.
   temps(t, 80, 60, 20, 40, 10)
   t:advance("1s")
   t:near(t:get("E1.lmtd"), 40, 1e-9)
end)

test.case("a falling UA gives a trend, days to cleaning and a work order", function(t)
   hx(t, { ua_clean = 6 })
   -- The cold outlet drops 0.4 K a day: less heat through the same temperatures.
   for day = 0, 9 do
      for h = 0, 23 do
         temps(t, 80, 60, 20, 40 - 0.4 * (day + h / 24), 10)
         t:advance("1h")
      end
   end
   local trend = t:get("E1.fouling_trend")
   t:ok(trend < -1 and trend > -10, "trend " .. tostring(trend))
   local days = t:get("E1.days_to_clean")
   t:ok(days ~= nil and days >= 0, "days to clean")
   -- Deduplicated: raised once, then again as a reminder after the 7 d window.
   local wo = t:events("work_order")
   t:eq(#wo, 2)
   t:eq(wo[1].data.reason, "cleaning due")
   t:ok(wo[1].data.evidence.days_to_clean < 14)
   t:ok(wo[2].ts - wo[1].ts >= 7 * 86400, "reminder after the window")
end)

for _, bad in ipairs({ { { ua_clean = 0 }, "params.ua_clean is required" },
                       { { flow_side = "left" }, "params.flow_side must be" },
                       { { arrangement = "cross" }, "params.arrangement must be" } }) do
   test.case("bad params are refused: " .. bad[2], function(t)
      t:raises(function()
         hx(t, bad[1])
         t:get("E1.hot_in")
      end, bad[2])
   end)
end
