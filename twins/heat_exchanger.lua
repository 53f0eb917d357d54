--- Heat exchanger twin (shell-and-tube or plate, liquid on both sides).
---
--- Input tags: hot_in, hot_out, cold_in, cold_out (C), and the flow of one side:
---   cold_flow or hot_flow (m3/h).
--- Derived tags:
---   duty (kW, heat transferred, from the metered side), lmtd (K, log-mean temperature
---   difference), ua (kW/K, duty / lmtd), ua_ratio (% of the clean UA), fouling (K/kW:
---   1/UA - 1/UA_clean; times the area it is the fouling resistance), fouling_trend
---   (% of clean UA per day, least squares over `trend_window`), days_to_clean (days
---   until ua_ratio reaches clean_at at that trend; nil when not falling).
--- Alarm: fouled (ua_ratio below clean_at). Work order (doppel.cmms): "cleaning due"
---   when days_to_clean falls below wo_days or the exchanger is fouled.
---
--- Params: ua_clean (kW/K, required: from the datasheet or a clean-state test),
---   flow_side ("cold" default or "hot"), arrangement ("counter" default, "parallel"),
---   cp (kJ/(kg K), default 4.186), density (kg/m3, default 998), clean_at (% default 75),
---   trend_window ("7d"), wo_days (default 14), min_duty (kW, default 1: below it the
---   exchanger is idle and nothing is computed).
local alarm = require "doppel.alarm"
local cmms = require "doppel.cmms"

local ua_clean = params.ua_clean
if type(ua_clean) ~= "number" or ua_clean <= 0 then
   error("params.ua_clean is required: a number > 0 (kW/K)", 0)
end
local side = params.flow_side or "cold"
if side ~= "cold" and side ~= "hot" then
   error("params.flow_side must be \"cold\" or \"hot\"", 0)
end
local arrangement = params.arrangement or "counter"
if arrangement ~= "counter" and arrangement ~= "parallel" then
   error("params.arrangement must be \"counter\" or \"parallel\"", 0)
end
local cp, density = params.cp or 4.186, params.density or 998
local clean_at = params.clean_at or 75
local trend_window = duration(params.trend_window or "7d")
local wo_days = params.wo_days or 14
local min_duty = params.min_duty or 1
local flow_tag = side .. "_flow"

twin.tag("duty", { unit = "kW", history = 1440 })
twin.tag("lmtd", { unit = "K" })
twin.tag("ua", { unit = "kW/K", history = 1440 })
twin.tag("ua_ratio", { unit = "%", history = 1440 })
twin.tag("fouling", { unit = "K/kW" })
twin.tag("fouling_trend", { unit = "%/d" })
twin.tag("days_to_clean", { unit = "d" })

local fouled = alarm.limit {
   name = "fouled", low = clean_at, hysteresis = 3, on_delay = "1h", severity = "low",
   message = "heat transfer below its cleaning threshold: schedule cleaning",
}

twin.on_start(function() state.trend = state.trend or {} end)

--- Log-mean temperature difference (the arithmetic mean when both ends are equal).
local function lmtd(d1, d2)
   if d1 <= 0 or d2 <= 0 then return nil end
   if math.abs(d1 - d2) < 1e-6 * math.max(d1, d2) then return (d1 + d2) / 2 end
   return (d1 - d2) / math.log(d1 / d2)
end

local function compute()
   local hi, ho, ci, co = tags.hot_in, tags.hot_out, tags.cold_in, tags.cold_out
   local f = tags[flow_tag]
   if not (hi.good and ho.good and ci.good and co.good and f.good) then return end
   local dt = side == "cold" and (co.value - ci.value) or (hi.value - ho.value)
   local q = f.value / 3600 * density * cp * dt
   if q < min_duty then return end
   local d1, d2
   if arrangement == "counter" then
      d1, d2 = hi.value - co.value, ho.value - ci.value
   else
      d1, d2 = hi.value - ci.value, ho.value - co.value
   end
   local lm = lmtd(d1, d2)
   if not lm then return end
   local ua = q / lm
   tags.duty = q
   tags.lmtd = lm
   tags.ua = ua
   tags.ua_ratio = 100 * ua / ua_clean
   tags.fouling = 1 / ua - 1 / ua_clean
   fouled:update(100 * ua / ua_clean)
end

twin.on_update({ "hot_in", "hot_out", "cold_in", "cold_out", flow_tag }, compute)

-- Hourly: one trend point, a least-squares slope over the window, and the
-- time left before cleaning.
twin.every("1h", function()
   local r = tags.ua_ratio
   if not r.good or r.age == nil or r.age > 3600 then return end
   local now = clock.now()
   local pts = {}
   for _, p in ipairs(state.trend) do
      if p[1] > now - trend_window then pts[#pts + 1] = p end
   end
   pts[#pts + 1] = { now, r.value }
   state.trend = pts
   if #pts < 6 then return end
   local n, sx, sy = #pts, 0, 0
   for _, p in ipairs(pts) do sx, sy = sx + p[1], sy + p[2] end
   local mx, my = sx / n, sy / n
   local sxx, sxy = 0, 0
   for _, p in ipairs(pts) do
      sxx = sxx + (p[1] - mx) ^ 2
      sxy = sxy + (p[1] - mx) * (p[2] - my)
   end
   if sxx <= 0 then return end
   local per_day = sxy / sxx * 86400
   tags.fouling_trend = per_day
   local days
   if per_day < 0 then
      local at_now = my + sxy / sxx * (now - mx)
      days = math.max(0, (at_now - clean_at) / -per_day)
      tags.days_to_clean = days
   end
   if (days and days < wo_days) or fouled.active then
      cmms.work_order {
         asset = twin.name, reason = "cleaning due", priority = fouled.active and 2 or 3,
         description = "heat transfer falling: clean the exchanger",
         evidence = { ua_ratio = r.value, trend_pct_per_day = per_day, days_to_clean = days,
                      clean_at = clean_at },
      }
   end
end)
