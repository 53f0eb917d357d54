--- doppel.alarm: limit alarms with hysteresis and on/off delays.
---
--- An alarm watches one value against a limit. It becomes active when the
--- value has been beyond the limit for `on_delay` seconds, and clears when the
--- value has been back inside the limit by more than `hysteresis` for
--- `off_delay` seconds. Each transition raises a twin event of kind "alarm"
--- and, when `tag` is given, writes a derived boolean tag.
---
--- ```lua
--- local alarm = require "doppel.alarm"
--- local vib = alarm.limit { name = "vibration_high", high = 7.1, hysteresis = 0.6,
---                           on_delay = "30s", severity = "high", tag = "vibration_alarm" }
--- twin.on_change("vibration", function(v) vib:update(v) end)
--- ```
local M = {}

---@class doppel.alarm.LimitOptions
---@field name string             alarm name, unique within the twin
---@field high? number            active when value > high
---@field low? number             active when value < low
---@field hysteresis? number      distance back inside the limit needed to clear (default 0)
---@field on_delay? string|number time beyond the limit before activating (default 0)
---@field off_delay? string|number time back inside before clearing (default 0)
---@field severity? string        "low", "medium", "high" or "critical" (default "medium")
---@field message? string         text for operators
---@field tag? string             derived boolean tag mirroring the alarm state

---@class doppel.alarm.Limit
---@field name string
---@field active boolean          true while the alarm is active
---@field activations integer     number of times it became active
---@field since number?           clock time of the last transition
local Limit = {}
Limit.__index = Limit

local function seconds(d)
   if d == nil then return 0 end
   if type(d) == "number" then return d end
   return duration(d)
end

local severities = { low = true, medium = true, high = true, critical = true }

--- Creates a limit alarm.
---@param opts doppel.alarm.LimitOptions
---@return doppel.alarm.Limit
function M.limit(opts)
   assert(type(opts) == "table", "alarm.limit: expected a table of options")
   assert(type(opts.name) == "string", "alarm.limit: name is required")
   assert((opts.high == nil) ~= (opts.low == nil), "alarm.limit: give exactly one of high or low")
   local severity = opts.severity or "medium"
   assert(severities[severity], "alarm.limit: severity must be low, medium, high or critical")
   local self = setmetatable({
      name = opts.name,
      high = opts.high,
      low = opts.low,
      hysteresis = opts.hysteresis or 0,
      on_delay = seconds(opts.on_delay),
      off_delay = seconds(opts.off_delay),
      severity = severity,
      message = opts.message,
      tag = opts.tag,
      active = false,
      activations = 0,
      pending_since = nil,
      since = nil,
   }, Limit)
   if self.tag then
      twin.tag(self.tag)
      twin.set(self.tag, false)
   end
   return self
end

function Limit:_beyond(v)
   if self.high then return v > self.high end
   return v < self.low
end

function Limit:_back(v)
   if self.high then return v < self.high - self.hysteresis end
   return v > self.low + self.hysteresis
end

function Limit:_transition(active, v, t)
   self.active = active
   self.since = t
   self.pending_since = nil
   if active then self.activations = self.activations + 1 end
   if self.tag then twin.set(self.tag, active) end
   twin.event("alarm", {
      name = self.name,
      state = active and "active" or "cleared",
      severity = self.severity,
      value = v,
      limit = self.high or self.low,
      message = self.message,
   })
end

--- Feeds a value; returns true when the alarm changed state.
---@param v number
---@param t? number clock time in seconds (default clock.now())
---@return boolean changed
function Limit:update(v, t)
   t = t or clock.now()
   local wanted
   if self.active then
      wanted = not self:_back(v)
   else
      wanted = self:_beyond(v)
   end
   if wanted == self.active then
      self.pending_since = nil
      return false
   end
   local delay = wanted and self.on_delay or self.off_delay
   if delay > 0 then
      if self.pending_since == nil then
         self.pending_since = t
         return false
      end
      if t - self.pending_since < delay then return false end
   end
   self:_transition(wanted, v, t)
   return true
end

return M
