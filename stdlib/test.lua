--- doppel.test: twin tests, run by `doppel test` in virtual time.
---
--- ```lua
--- local test = require "doppel.test"
--- test.case("vibration alarm raises after the on-delay", function(t)
---    t:twin { name = "P1", class = "centrifugal_pump", params = { rated_flow = 130 },
---             tags = { vibration = { unit = "mm/s" }, running = {} } }
---    t:set("P1.vibration", 9.5)
---    t:advance("45s")
---    t:set("P1.vibration", 9.6)
---    t:eq(t:get("P1.vibration_alarm"), true)
--- end)
--- ```
---
--- Every case runs in a fresh plant (and a fresh run of its file) in virtual
--- time starting at 2026-01-01T00:00:00Z, or at `opts.start` when the case is
--- declared as `test.case(name, { start = "..." }, fn)`. See docs/testing.md.
local M = {}

local cases = {}

--- Declares a test case.
---@param name string
---@param a table|function options ({ start = ISO time }) or the case function
---@param b? function the case function, when options are given
function M.case(name, a, b)
   local opts, fn = a, b
   if type(a) == "function" then opts, fn = {}, a end
   if type(name) ~= "string" or name == "" then
      error("test.case: the first argument is the case's name (a string)", 2)
   end
   if type(opts) ~= "table" or type(fn) ~= "function" then
      error("test.case: expected test.case(name, fn) or test.case(name, options, fn)", 2)
   end
   for k in pairs(opts) do
      if k ~= "start" then error(string.format('test.case: unknown option "%s" (known: start)',
                                               tostring(k)), 2) end
   end
   for _, c in ipairs(cases) do
      if c.name == name then error(string.format('test.case: "%s" is declared twice', name), 2) end
   end
   cases[#cases + 1] = { name = name, fn = fn, opts = opts }
end

-- ---- showing values in messages ---------------------------------------

local function show(v, depth)
   depth = depth or 0
   local ty = type(v)
   if ty == "string" then return string.format("%q", v) end
   if ty == "number" then
      if math.type(v) == "integer" then return tostring(v) end
      local s = string.format("%.15g", v)
      if tonumber(s) ~= v then s = string.format("%.17g", v) end
      return s
   end
   if ty ~= "table" then return tostring(v) end
   if depth >= 3 then return "{...}" end
   local keys = {}
   for k in pairs(v) do keys[#keys + 1] = k end
   table.sort(keys, function(x, y)
      if type(x) == type(y) and (type(x) == "number" or type(x) == "string") then return x < y end
      return type(x) < type(y)
   end)
   local parts, n = {}, #v
   for i = 1, n do parts[#parts + 1] = show(v[i], depth + 1) end
   for _, k in ipairs(keys) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then
         local ks = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. show(k) .. "]"
         parts[#parts + 1] = ks .. " = " .. show(v[k], depth + 1)
         if #parts > 20 then
            parts[#parts + 1] = "..."
            break
         end
      end
   end
   return "{ " .. table.concat(parts, ", ") .. " }"
end
M.show = show

local function path_of(path, k)
   if type(k) == "string" and k:match("^[%a_][%w_]*$") then return path .. "." .. k end
   return path .. "[" .. show(k) .. "]"
end

-- Returns nil when a and b are deeply equal, else the path of the first
-- difference and the two values there.
local function diff(a, b, path, seen)
   if a == b then return nil end
   if type(a) ~= "table" or type(b) ~= "table" then return path, a, b end
   seen = seen or {}
   if seen[a] == b then return nil end
   seen[a] = b
   for k, bv in pairs(b) do
      local p, x, y = diff(a[k], bv, path_of(path, k), seen)
      if p then return p, x, y end
   end
   for k, av in pairs(a) do
      if b[k] == nil then return path_of(path, k), av, nil end
   end
   return nil
end

local function prefix(msg)
   return msg and (tostring(msg) .. ": ") or ""
end

-- ---- the case object --------------------------------------------------

---@class doppel.test.T
local T = {}
T.__index = T
T.__name = "doppel.test case"

-- Calls a host primitive; a failure is raised at the test's line.
local function call(self, method, ...)
   local h = self._h
   local ok, v = h[method](h, ...)
   if not ok then error(v, 3) end
   return v
end

-- Plant source from the t:twin declarations (Lua literals, keys sorted so
-- the plant is the same every run).
local function literal(v, depth)
   local ty = type(v)
   if ty == "string" or ty == "number" then return string.format("%q", v) end
   if ty == "boolean" then return tostring(v) end
   if ty ~= "table" then error("cannot use a " .. ty .. " in t:twin", 0) end
   if depth > 32 then error("t:twin: tables nested too deeply", 0) end
   local keys = {}
   for k in pairs(v) do
      if type(k) ~= "string" and math.type(k) ~= "integer" then
         error("t:twin: table keys must be strings or integers", 0)
      end
      keys[#keys + 1] = k
   end
   table.sort(keys, function(x, y)
      if type(x) == type(y) then return x < y end
      return type(x) == "number"
   end)
   local parts = {}
   for _, k in ipairs(keys) do
      parts[#parts + 1] = "[" .. literal(k, depth + 1) .. "]=" .. literal(v[k], depth + 1)
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

function T:_ensure()
   if self._built then return end
   self._built = true
   if #self._twins == 0 then
      error("no plant in this case: call t:plant(file) or t:twin { ... } first", 3)
   end
   local src = { 'plant { name = "test" }' }
   for _, spec in ipairs(self._twins) do
      local body = {}
      for k, v in pairs(spec) do
         if k ~= "name" then body[k] = v end
      end
      -- A class next to the test file (twins/x_test.lua tests twins/x.lua)
      -- wins over the copy built into the binary.
      if type(body.class) == "string" and body.class:match("^[%w_]+$") and
         self._h:exists(body.class .. ".lua") then
         body.script, body.class = body.class .. ".lua", nil
      end
      local ok, lit = pcall(literal, body, 0)
      if not ok then error(lit, 3) end
      src[#src + 1] = string.format("twin %q %s", spec.name, lit)
   end
   local ok, err = self._h:open_plant(nil, table.concat(src, "\n"))
   if not ok then error("building the plant from t:twin: " .. err, 3) end
end

--- Builds the case's plant from a plant file (relative to the test file);
--- its devices (e.g. sim) run in virtual time.
---@param path string
function T:plant(path)
   if type(path) ~= "string" then error("t:plant: expected a file name", 2) end
   if self._built or #self._twins > 0 then
      error("t:plant: this case already has a plant (one t:plant, or t:twin calls, per case)", 2)
   end
   self._built = true
   local ok, err = self._h:open_plant(path)
   if not ok then error(err, 2) end
end

--- Declares one twin with tags that no device feeds (set them with t:set).
--- `class` finds <class>.lua next to the test file, then twins/<class>.lua
--- there, then the bundled class; `script` is relative to the test file.
--- Call it several times for several twins, before any other t: call.
---@param spec table { name=, class= or script=, params=, tags= }
function T:twin(spec)
   if type(spec) ~= "table" then
      error("t:twin: expected a table { name = ..., class = ... }", 2)
   end
   if type(spec.name) ~= "string" then error("t:twin: name is required (a string)", 2) end
   if self._built then
      error("t:twin: the plant is already built; declare every twin before other t: calls", 2)
   end
   local copy = {}
   for k, v in pairs(spec) do copy[k] = v end
   spec = copy
   for _, v in ipairs(self._twins) do
      if v.name == spec.name then error(string.format('t:twin: twin "%s" is declared twice',
                                                      spec.name), 2) end
   end
   self._twins[#self._twins + 1] = spec
   return spec
end

--- Writes a sample now (quality "good" unless given) and delivers it;
--- t:set({name = value, ...} [, quality]) writes several as one batch.
function T:set(name, value, quality)
   self:_ensure()
   local v = call(self, "set", name, value, quality)
   return v
end

--- Runs virtual time forward by a duration ("45s", "2h", or seconds).
function T:advance(d)
   self:_ensure()
   local v = call(self, "advance", d)
   return v
end

--- Runs virtual time forward to a time (ISO 8601 UTC or epoch seconds).
function T:advance_to(when)
   self:_ensure()
   local v = call(self, "advance_to", when)
   return v
end

--- Feeds a CSV recording (same formats as doppel replay), in time order.
---@return integer samples fed
function T:feed(path)
   self:_ensure()
   local v = call(self, "feed", path)
   return v
end

--- The value of a tag (nil before its first sample).
function T:get(name)
   self:_ensure()
   local v = call(self, "get", name)
   return v
end

--- A tag as { value=, quality=, ts=, unit= }.
function T:tag(name)
   self:_ensure()
   local v = call(self, "tag", name)
   return v
end

--- Events raised so far (optionally only of one kind), oldest first, each
--- { ts=, twin=, kind=, text=, data= }.
function T:events(kind)
   if not self._built then return {} end
   local v = call(self, "events", kind)
   return v
end

--- Commands issued so far, each { tag=, value=, origin=, outcome=, reason= }.
function T:commands()
   if not self._built then return {} end
   local v = call(self, "commands")
   return v
end

--- A copy of a twin's `state`.
function T:state(twin)
   self:_ensure()
   local v = call(self, "state", twin)
   return v
end

--- The current virtual time in seconds since the epoch.
function T:now()
   local v = call(self, "now")
   return v
end

--- Twin handler errors fail the case unless the case expects them.
function T:allow_errors()
   self._allow_errors = true
end

-- ---- assertions -------------------------------------------------------

--- Deep equality (tables compared key by key).
function T.eq(_, actual, expected, msg)
   local p, a, b = diff(actual, expected, "value")
   if p then
      local where = p == "value" and "" or (" at " .. p)
      error(string.format("%sexpected %s, got %s%s", prefix(msg), show(b), show(a), where), 2)
   end
end

--- |actual - expected| <= tol.
function T.near(_, actual, expected, tol, msg)
   if type(expected) ~= "number" or type(tol) ~= "number" then
      error("t:near(actual, expected, tolerance): expected and tolerance must be numbers", 2)
   end
   if type(actual) ~= "number" or actual ~= actual or math.abs(actual - expected) > tol then
      local off = type(actual) == "number" and string.format(" (off by %.6g)",
                                                             math.abs(actual - expected)) or ""
      error(string.format("%sexpected %s ± %s, got %s%s", prefix(msg), show(expected), show(tol),
                          show(actual), off), 2)
   end
end

--- cond must be true (not nil or false).
function T.ok(_, cond, msg)
   if not cond then
      error(msg and ("assertion failed: " .. tostring(msg)) or
            ("expected a true value, got " .. show(cond)), 2)
   end
end

--- fn must raise an error (containing `text`, when given).
function T.raises(_, fn, text)
   if type(fn) ~= "function" then error("t:raises: expected a function", 2) end
   local ok, err = pcall(fn)
   if ok then
      error(text and string.format("expected an error containing %q, none was raised", text) or
            "expected an error, none was raised", 2)
   end
   if text and not string.find(tostring(err), text, 1, true) then
      error(string.format("expected an error containing %q, got: %s", text, tostring(err)), 2)
   end
   return err
end

-- ---- called by the runner (doppel test) --------------------------------

function M._count()
   return #cases
end

function M._name(i)
   return cases[i] and cases[i].name
end

function M._start(i)
   return cases[i] and cases[i].opts.start
end

function M._run(i, host)
   local c = cases[i]
   local t = setmetatable({ _h = host, _twins = {}, _built = false, _allow_errors = false }, T)
   c.fn(t)
   return t._allow_errors
end

return M
