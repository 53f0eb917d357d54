--- doppel.alarm: ISA-18.2 style alarms on the plant's alarm list.
---
--- A twin evaluates each alarm's condition (a limit with hysteresis, or any
--- boolean condition) with on and off delays; the plant's alarm list keeps
--- what operators act on: active or not, acknowledged or not, shelved (with
--- expiry), suppressed by design, first-out within a group. Every transition
--- is an "alarm" event (logged, journaled, streamed) with a payload
--- { name, state, severity, priority, value, limit, message, group, first_out, by }.
---
--- ```lua
--- local alarm = require "doppel.alarm"
--- local vib = alarm.limit { name = "vibration_high", high = 7.1, hysteresis = 0.6,
---                           on_delay = "30s", severity = "high", tag = "vibration_alarm",
---                           suppress_when = function() return not tags.running.value end }
--- twin.on_change("vibration", function(v) vib:update(v) end)
--- alarm.list { active = true }            -- the plant's active alarms
--- alarm.ack("P101.vibration_high")        -- or vib:ack()
--- ```
local to_seconds = require "doppel._duration"

local M = {}

local severities = { low = 4, medium = 3, high = 2, critical = 1 }

local function fail(fn, msg)
   error("alarm." .. fn .. ": " .. msg, 3)
end

local function seconds(fn, field, d)
   if d == nil then return 0 end
   if type(d) == "number" then
      if d ~= d or d < 0 then fail(fn, field .. " must be a duration >= 0") end
      return d
   end
   if type(d) ~= "string" then fail(fn, field .. " must be a duration (\"30s\" or seconds)") end
   local ok, s = pcall(to_seconds, d)
   if not ok then fail(fn, field .. ": " .. tostring(s)) end
   return s
end

local function alarmlist(fn)
   local ok, l = pcall(require, "doppel.alarmlist")
   if not ok then fail(fn, "no plant alarm list here (alarms live in a plant's twins)") end
   return l
end

---@class doppel.alarm.Options
---@field name string              alarm name, unique within the twin (no dots)
---@field on_delay? string|number  time the condition must hold before activating (default 0)
---@field off_delay? string|number time it must be gone before clearing (default 0)
---@field severity? string         "low", "medium", "high" or "critical" (default "medium")
---@field priority? integer        1 (highest) .. 4; default from severity (critical 1 .. low 4)
---@field message? string          text for operators
---@field group? string            first-out group: the first of the group to activate is marked
---@field tag? string              derived boolean tag mirroring whether the alarm is active
---@field suppress_when? fun():boolean suppression by design: while it returns true, not annunciated

---@class doppel.alarm.LimitOptions: doppel.alarm.Options
---@field high? number             active when value > high
---@field low? number              active when value < low
---@field hysteresis? number       distance back inside the limit needed to clear (default 0)

---@class doppel.alarm.Info
---@field twin string
---@field name string
---@field message string
---@field group? string
---@field severity string
---@field priority integer
---@field state string             "normal", "unacked", "acked" or "rtn_unacked"
---@field active boolean
---@field shelved boolean
---@field shelved_until? number
---@field suppressed boolean
---@field first_out boolean
---@field since? number            clock time of the last transition
---@field value? number
---@field limit? number
---@field acked_by? string

---@class doppel.alarm.Alarm
---@field name string
---@field active boolean           true while the condition holds (after delays)
---@field activations integer      times it became active since this script version loaded
---@field since number?            clock time of the last activation or clearing
local Alarm = {}
Alarm.__index = Alarm

local function common(fn, opts)
   if type(opts) ~= "table" then fail(fn, "expected a table of options") end
   if type(opts.name) ~= "string" or opts.name == "" or opts.name:find(".", 1, true) then
      fail(fn, "name must be a non-empty string without dots")
   end
   local severity = opts.severity or "medium"
   if not severities[severity] then
      fail(fn, "severity must be low, medium, high or critical")
   end
   local priority = opts.priority or severities[severity]
   if math.type(priority) ~= "integer" or priority < 1 or priority > 4 then
      fail(fn, "priority must be an integer from 1 (highest) to 4")
   end
   if opts.message ~= nil and type(opts.message) ~= "string" then
      fail(fn, "message must be a string")
   end
   if opts.group ~= nil and type(opts.group) ~= "string" then fail(fn, "group must be a string") end
   if opts.tag ~= nil and type(opts.tag) ~= "string" then fail(fn, "tag must be a string") end
   if opts.suppress_when ~= nil and type(opts.suppress_when) ~= "function" then
      fail(fn, "suppress_when must be a function")
   end
   return {
      name = opts.name,
      severity = severity,
      priority = priority,
      message = opts.message,
      group = opts.group,
      tag = opts.tag,
      on_delay = seconds(fn, "on_delay", opts.on_delay),
      off_delay = seconds(fn, "off_delay", opts.off_delay),
      suppress_when = opts.suppress_when,
      activations = 0,
      -- Per-sample state kept in fields that always exist (a missing field
      -- costs a metatable lookup on every read): the condition's kind (0
      -- discrete, 1 high limit, 2 low limit), the suppression function or
      -- false, and the time a pending delay started or false.
      _kind = 0,
      _sw = opts.suppress_when or false,
      pending_since = false,
   }
end

local function register(fn, self, limit)
   local list = alarmlist(fn)
   self._list = list
   self._id = list.declare(self.name, {
      message = self.message, group = self.group, severity = self.severity,
      priority = self.priority, limit = limit,
   })
   -- A reload declares the alarm again: pick up the state the list kept.
   local info = list.get(self.name)
   self.active = info.active
   self.suppressed = info.suppressed
   self.since = info.since
   if self.tag then
      twin.tag(self.tag)
      twin.set(self.tag, self.active)
   end
   return setmetatable(self, Alarm)
end

--- Creates a limit alarm: active when the value is above `high` (or below
--- `low`) for `on_delay`; clears when it is back inside by more than
--- `hysteresis` for `off_delay`.
---@param opts doppel.alarm.LimitOptions
---@return doppel.alarm.Alarm
function M.limit(opts)
   local self = common("limit", opts)
   if (opts.high == nil) == (opts.low == nil) then
      fail("limit", "give exactly one of high or low")
   end
   local lim = opts.high or opts.low
   if type(lim) ~= "number" or lim ~= lim then
      fail("limit", (opts.high and "high" or "low") .. " must be a number")
   end
   local hyst = opts.hysteresis or 0
   if type(hyst) ~= "number" or hyst ~= hyst or hyst < 0 then
      fail("limit", "hysteresis must be a number >= 0")
   end
   self.high, self.low, self.hysteresis = opts.high, opts.low, hyst
   self._kind = opts.high ~= nil and 1 or 2
   return register("limit", self, lim)
end

--- Creates a discrete alarm on a boolean condition (a trip, a fault bit, a
--- derived verdict), with the same delays, severity and actions.
---@param opts doppel.alarm.Options
---@return doppel.alarm.Alarm
function M.discrete(opts)
   return register("discrete", common("discrete", opts), nil)
end

function Alarm:_transition(active, v, t)
   self.active = active
   self.since = t
   self.pending_since = false
   if active then self.activations = self.activations + 1 end
   if self.tag then twin.set(self.tag, active) end
   self._list.condition(self._id, active, type(v) == "number" and v or nil)
end

--- Feeds a value (a number for a limit alarm, a boolean for a discrete
--- one); returns true when the alarm became active or cleared. Without `t`,
--- a pending delay is also re-checked by a timer, so the alarm changes state
--- on time even when no further sample arrives.
---@param v number|boolean
---@param t? number clock time in seconds (default clock.now())
---@return boolean changed
function Alarm:update(v, t)
   local kind = self._kind
   if kind == 0 then
      if type(v) ~= "boolean" then
         error("alarm:update: v must be a boolean (discrete alarm)", 2)
      end
   elseif type(v) ~= "number" or v ~= v then
      error("alarm:update: v must be a number", 2)
   end
   if t ~= nil and type(t) ~= "number" then error("alarm:update: t must be a number", 2) end
   local timed = t == nil
   t = t or clock.now()
   self.last = v
   -- Suppression by design, then the state the value asks for (written out
   -- here rather than in helper methods: this runs on every sample).
   local suppress_when = self._sw
   if suppress_when then
      local s = suppress_when() and true or false
      if s ~= self.suppressed then
         self.suppressed = s
         self._list.suppress(self._id, s)
      end
   end
   local active = self.active
   local wanted
   if kind == 0 then
      wanted = v
   elseif kind == 1 then
      if active then wanted = v >= self.high - self.hysteresis else wanted = v > self.high end
   elseif active then
      wanted = v <= self.low + self.hysteresis
   else
      wanted = v < self.low
   end
   if wanted == active then
      self.pending_since = false
      return false
   end
   local delay = wanted and self.on_delay or self.off_delay
   if delay > 0 then
      if not self.pending_since then
         self.pending_since = t
         if timed then
            if self._timer then self._timer:cancel() end
            self._timer = twin.after(delay, function()
               self._timer = nil
               if self.pending_since then self:update(self.last) end
            end)
         end
         return false
      end
      -- (a tolerance: clock times are microseconds shown as float seconds)
      if t - self.pending_since < delay - 1e-6 then return false end
   end
   self:_transition(wanted, v, t)
   return true
end

--- Sets or lifts suppression by design (instead of, or besides, suppress_when).
---@param on boolean
function Alarm:suppress(on)
   if type(on) ~= "boolean" then error("alarm:suppress: on must be a boolean", 2) end
   self.suppressed = on
   self._list.suppress(self._id, on)
end

--- Acknowledges the alarm. Returns true, or nil and why not.
---@param who? string recorded with the acknowledgement (default "twin:<name>")
---@return boolean|nil ok
---@return string? err
function Alarm:ack(who) return self._list.ack(self.name, who) end

--- Shelves the alarm for `d` (it unshelves itself when that expires).
---@param d string|number
---@param who? string
---@return boolean|nil ok
---@return string? err
function Alarm:shelve(d, who)
   if seconds("shelve", "d", d) <= 0 then fail("shelve", "d must be a duration > 0") end
   return self._list.shelve(self.name, d, who)
end

---@param who? string
---@return boolean|nil ok
---@return string? err
function Alarm:unshelve(who) return self._list.unshelve(self.name, who) end

--- The alarm as the plant's list holds it.
---@return doppel.alarm.Info
function Alarm:info() return self._list.get(self.name) end

---@class doppel.alarm.Filter
---@field twin? string    only this twin's alarms
---@field active? boolean only active (true) or inactive (false) alarms
---@field state? string   only alarms in this state ("unacked", ...)
---@field shelved? boolean

--- The plant's alarm list (every twin's), highest priority first, then the
--- most recent transition first.
---@param filter? doppel.alarm.Filter
---@return doppel.alarm.Info[]
function M.list(filter)
   if filter ~= nil and type(filter) ~= "table" then fail("list", "filter must be a table") end
   filter = filter or {}
   local out = {}
   for _, a in ipairs(alarmlist("list").list()) do
      if (filter.twin == nil or a.twin == filter.twin)
         and (filter.active == nil or a.active == filter.active)
         and (filter.state == nil or a.state == filter.state)
         and (filter.shelved == nil or a.shelved == filter.shelved) then
         out[#out + 1] = a
      end
   end
   table.sort(out, function(x, y)
      if x.priority ~= y.priority then return x.priority < y.priority end
      return (x.since or 0) > (y.since or 0)
   end)
   return out
end

local function named(fn, name)
   if type(name) ~= "string" or name == "" then
      fail(fn, "name must be \"alarm\" or \"twin.alarm\"")
   end
   return alarmlist(fn)
end

--- One alarm of the plant ("vibration_high" for this twin's, "P101.vibration_high").
---@param name string
---@return doppel.alarm.Info|nil
function M.get(name) return named("get", name).get(name) end

--- Acknowledges an alarm. Returns true, or nil and why not.
---@param name string
---@param who? string
---@return boolean|nil ok
---@return string? err
function M.ack(name, who) return named("ack", name).ack(name, who) end

--- Shelves an alarm for a duration.
---@param name string
---@param d string|number
---@param who? string
---@return boolean|nil ok
---@return string? err
function M.shelve(name, d, who)
   local list = named("shelve", name)
   if seconds("shelve", "d", d) <= 0 then fail("shelve", "d must be a duration > 0") end
   return list.shelve(name, d, who)
end

---@param name string
---@param who? string
---@return boolean|nil ok
---@return string? err
function M.unshelve(name, who) return named("unshelve", name).unshelve(name, who) end

return M
