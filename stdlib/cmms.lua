--- doppel.cmms: maintenance work orders raised by twins.
---
--- When a twin concludes that an asset needs a technician (a bearing trend,
--- a fouled exchanger, a leak), it raises a work order: an event of kind
--- "work_order" with the asset, the reason, the evidence that led to it and a
--- priority, which a north-bound connector (CMMS webhook, MQTT) delivers.
--- Orders are deduplicated: the same asset and reason (or the same `key`)
--- raises one order until it is closed or the dedup window has passed, so a
--- condition that persists does not flood the maintenance system. Open
--- orders live in the twin's `state`, so they survive reloads.
---
--- ```lua
--- local cmms = require "doppel.cmms"
--- local id, new = cmms.work_order { asset = "P101", reason = "bearing wear",
---    priority = 2, evidence = { vibration = 7.4, trend_mm_s_per_day = 0.05 } }
--- cmms.close(id)    -- when the CMMS reports it done (or a technician says so)
--- ```
local to_seconds = require "doppel._duration"

local M = {}

local function fail(fn, msg)
   error("cmms." .. fn .. ": " .. msg, 3)
end

local function store()
   if type(state) ~= "table" then fail("work_order", "needs a twin's state") end
   state._cmms = state._cmms or { seq = 0, open = {} }
   return state._cmms
end

local function storable(v, path, depth)
   local t = type(v)
   if t == "number" or t == "string" or t == "boolean" then return end
   if t ~= "table" then
      fail("work_order", path .. " must hold numbers, strings, booleans or tables, not " .. t)
   end
   if depth > 8 then fail("work_order", path .. " is nested too deeply") end
   for k, x in pairs(v) do
      if type(k) ~= "string" and math.type(k) ~= "integer" then
         fail("work_order", path .. " has a key that is not a string or integer")
      end
      storable(x, path .. "." .. tostring(k), depth + 1)
   end
end

---@class doppel.cmms.WorkOrderOptions
---@field asset string           the asset (a twin or equipment tag)
---@field reason string          short cause, also the default deduplication key
---@field evidence? table        values, trends, thresholds that led to it (storable)
---@field priority? integer      1 (urgent) .. 4 (planned); default 3
---@field description? string    longer text for the technician
---@field key? string            deduplication key (default asset .. "/" .. reason)
---@field dedup_window? string|number a closed-or-not order older than this no longer
---                              blocks a new one (default "7d")

---@class doppel.cmms.Order
---@field id string
---@field asset string
---@field reason string
---@field priority integer
---@field raised number          clock time
---@field repeats integer        times it was raised again while open (deduplicated)
---@field last number            clock time of the last repeat

--- Raises a work order (an event of kind "work_order"), unless the same one
--- is already open. Returns its id and whether it is new.
---@param opts doppel.cmms.WorkOrderOptions
---@return string id
---@return boolean new
function M.work_order(opts)
   if type(opts) ~= "table" then fail("work_order", "expected a table of options") end
   if type(opts.asset) ~= "string" or opts.asset == "" then
      fail("work_order", "asset must be a non-empty string")
   end
   if type(opts.reason) ~= "string" or opts.reason == "" then
      fail("work_order", "reason must be a non-empty string")
   end
   local prio = opts.priority or 3
   if math.type(prio) ~= "integer" or prio < 1 or prio > 4 then
      fail("work_order", "priority must be an integer from 1 (urgent) to 4")
   end
   if opts.evidence ~= nil then
      if type(opts.evidence) ~= "table" then fail("work_order", "evidence must be a table") end
      storable(opts.evidence, "evidence", 0)
   end
   if opts.description ~= nil and type(opts.description) ~= "string" then
      fail("work_order", "description must be a string")
   end
   if opts.key ~= nil and type(opts.key) ~= "string" then
      fail("work_order", "key must be a string")
   end
   local window = opts.dedup_window or "7d"
   if type(window) == "string" then
      local ok, s = pcall(to_seconds, window)
      if not ok then fail("work_order", "dedup_window: " .. tostring(s)) end
      window = s
   elseif type(window) ~= "number" or window ~= window or window < 0 then
      fail("work_order", "dedup_window must be a duration")
   end
   local st = store()
   local key = opts.key or (opts.asset .. "/" .. opts.reason)
   local now = clock.now()
   local o = st.open[key]
   if o and now - o.raised < window then
      o.repeats = o.repeats + 1
      o.last = now
      return o.id, false
   end
   st.seq = st.seq + 1
   local id = ("%s-%s-%d"):format(opts.asset, os.date("!%Y%m%d%H%M%S", math.floor(now)), st.seq)
   o = { id = id, asset = opts.asset, reason = opts.reason, priority = prio, raised = now,
         repeats = 0, last = now, key = key }
   st.open[key] = o
   twin.event("work_order", {
      id = id, asset = opts.asset, reason = opts.reason, priority = prio,
      evidence = opts.evidence, description = opts.description, key = key,
      raised = clock.iso(now),
   })
   return id, true
end

--- Closes an open order (by id or key); a new one may then be raised.
--- Returns true, or nil and a message when there is no such open order.
---@param id string
---@return boolean|nil ok
---@return string? err
function M.close(id)
   if type(id) ~= "string" then fail("close", "id must be a string") end
   local st = store()
   for key, o in pairs(st.open) do
      if o.id == id or key == id then
         st.open[key] = nil
         twin.event("work_order_closed", { id = o.id, asset = o.asset, reason = o.reason })
         return true
      end
   end
   return nil, "no open work order " .. id
end

--- This twin's open orders, oldest first.
---@return doppel.cmms.Order[]
function M.open()
   local out = {}
   for _, o in pairs(store().open) do out[#out + 1] = o end
   table.sort(out, function(a, b) return a.raised < b.raised end)
   return out
end

return M
