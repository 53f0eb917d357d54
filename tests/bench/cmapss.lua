-- C-MAPSS FD001 with doppel.predict, run by bench_cmapss in a twin sandbox.
--
-- 1. A ridge model (predict.linear) maps the 14 informative sensors of one
--    cycle to the remaining life capped at 125 cycles: a noisy health index.
-- 2. Each training engine's run to failure becomes a curve of that index,
--    smoothed; the curves form a predict.similarity library.
-- 3. A test engine's own smoothed curve is matched against the library; the
--    closest runs' remaining lives give the estimate (--blend B < 1 mixes in
--    the smoothed index at the last cycle; it does worse on FD001).
-- Only training data are used to fit; the test engines' true RUL is read by
-- the C side after the predictions are made.
local predict = require "doppel.predict"

local SENSORS = { 2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21 }
local CAP = 125

local M = {}

-- Parses "engine cycle op1 op2 op3 s1..s21" rows into engines[id] = list of rows.
local function parse(text)
   local engines, order = {}, {}
   for line in text:gmatch("[^\n]+") do
      local f = {}
      for v in line:gmatch("%S+") do f[#f + 1] = tonumber(v) end
      if #f >= 26 then
         local id = f[1]
         if not engines[id] then
            engines[id] = {}
            order[#order + 1] = id
         end
         local row = {}
         for i, s in ipairs(SENSORS) do row[i] = f[5 + s] end
         local e = engines[id]
         e[#e + 1] = row
      end
   end
   return engines, order
end

-- Exponential smoothing of a curve (causal: each point uses the past only).
local function smooth(xs, a)
   local out, m = {}, nil
   for i, x in ipairs(xs) do
      m = m and (m + a * (x - m)) or x
      out[i] = m
   end
   return out
end

---@param train_text string
---@param test_text string
---@param opts table { limit = n test engines (0: all), neighbours, window, alpha, blend }
---@return number[] predictions, in the order of the test engines
function M.run(train_text, test_text, opts)
   local alpha = opts.alpha or 0.2
   local train, train_ids = parse(train_text)
   local X, y = {}, {}
   for _, id in ipairs(train_ids) do
      local e = train[id]
      for c, row in ipairs(e) do
         X[#X + 1] = row
         y[#y + 1] = math.min(#e - c, CAP)
      end
   end
   local model = predict.linear(X, y, { ridge = 1e-3 })
   local library = {}
   for _, id in ipairs(train_ids) do
      local hi = {}
      for c, row in ipairs(train[id]) do hi[c] = model:predict(row) end
      library[#library + 1] = smooth(hi, alpha)
   end
   local sim = predict.similarity(library, { neighbours = opts.neighbours or 10,
      window = opts.window or 80, max_rul = CAP })
   local test, test_ids = parse(test_text)
   local out = {}
   local limit = opts.limit or 0
   for i, id in ipairs(test_ids) do
      if limit > 0 and i > limit then break end
      local hi = {}
      for c, row in ipairs(test[id]) do hi[c] = model:predict(row) end
      local curve = smooth(hi, alpha)
      local est = sim:estimate(curve)
      local direct = math.max(0, math.min(CAP, curve[#curve]))
      local b = opts.blend or 1
      out[i] = b * est.rul + (1 - b) * direct
   end
   return out, model.rmse
end

return M
