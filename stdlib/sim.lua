--- doppel.sim: process models and what-if simulation.
---
--- Building blocks: a PID controller (anti-windup by conditional
--- integration, derivative on measurement, bumpless manual-to-auto), a
--- first-order-plus-dead-time process model, the affinity laws of pumps and
--- fans, and a centrifugal pump curve with a system curve. With them a twin
--- describes its asset as a model (init / step / outputs) and `whatif` forks
--- that model from the twin's current state and runs it forward in virtual
--- time under candidate setpoints, returning the predicted tags. `recommend`
--- searches the setpoint (doppel.optimize) and, only when allowed, issues it
--- as a command through the guard with twin.write.
---
--- ```lua
--- local sim = require "doppel.sim"
--- local model = { init = function() return { level = tags.level.value } end,
---                 step = function(x, u, dt) x.level = x.level + (u.inflow - 10) * dt / 3600 end,
---                 outputs = function(x) return { level = x.level } end }
--- local r = sim.whatif(model, { inflow = 12 }, { horizon = "2h", step = "1min" })
--- -- r.final.level, r.max.level, r.series.level[i] at r.series.t[i]
--- ```
local optimize = require "doppel.optimize"

local to_seconds = require "doppel._duration"

local M = {}

local function fail(fn, msg)
   error("sim." .. fn .. ": " .. msg, 3)
end

local function finite(x)
   return type(x) == "number" and x == x and x ~= math.huge and x ~= -math.huge
end

local function num(fn, opts, field, default, cond, what)
   local v = opts[field]
   if v == nil then v = default end
   if v == nil then fail(fn, field .. " is required (" .. what .. ")") end
   if not finite(v) or (cond and not cond(v)) then fail(fn, field .. " must be " .. what) end
   return v
end

local function seconds(fn, field, d)
   if type(d) == "number" then
      if not (finite(d) and d >= 0) then fail(fn, field .. " must be a duration >= 0") end
      return d
   end
   if type(d) ~= "string" then fail(fn, field .. " must be a duration (\"10s\" or seconds)") end
   local ok, s = pcall(to_seconds, d)
   if not ok then fail(fn, field .. ": " .. tostring(s)) end
   return s
end

local function positive(v) return v > 0 end
local function nonneg(v) return v >= 0 end

-- ---------------------------------------------------------------------------
-- PID

---@class doppel.sim.PidOptions
---@field kp number            proportional gain
---@field ki? number           integral gain (per second; default 0)
---@field kd? number           derivative gain (seconds; default 0)
---@field setpoint? number     default 0
---@field out_min? number      output limits (default -inf, +inf)
---@field out_max? number
---@field reverse? boolean     reverse acting: output rises when the measurement is above setpoint
---@field d_filter? number     derivative filter time constant (s; default 0: none)

---@class doppel.sim.Pid
---@field setpoint number
---@field output number        last output
---@field integral number      integral term (in output units)
---@field saturated boolean    the last output hit a limit
local Pid = {}
Pid.__index = Pid

--- A PID controller.
---@param opts doppel.sim.PidOptions
---@return doppel.sim.Pid
function M.pid(opts)
   if type(opts) ~= "table" then fail("pid", "expected a table of options") end
   local self = setmetatable({
      kp = num("pid", opts, "kp", nil, nil, "a number"),
      ki = num("pid", opts, "ki", 0, nonneg, "a number >= 0"),
      kd = num("pid", opts, "kd", 0, nonneg, "a number >= 0"),
      setpoint = num("pid", opts, "setpoint", 0, nil, "a number"),
      out_min = opts.out_min or -math.huge,
      out_max = opts.out_max or math.huge,
      d_filter = num("pid", opts, "d_filter", 0, nonneg, "a number >= 0"),
      sign = opts.reverse and -1 or 1,
      integral = 0, output = 0, saturated = false, d = 0,
   }, Pid)
   if type(self.out_min) ~= "number" or self.out_min ~= self.out_min then
      fail("pid", "out_min must be a number")
   end
   if type(self.out_max) ~= "number" or self.out_max ~= self.out_max then
      fail("pid", "out_max must be a number")
   end
   if self.out_max <= self.out_min then fail("pid", "out_max must be greater than out_min") end
   return self
end

--- One control step: the measurement `pv` after `dt` seconds; returns the output.
---@param pv number
---@param dt number seconds since the previous update (> 0)
---@return number output
function Pid:update(pv, dt)
   if not finite(pv) then error("pid:update: pv must be a finite number", 2) end
   if not (finite(dt) and dt > 0) then error("pid:update: dt must be a number > 0", 2) end
   local e = self.sign * (self.setpoint - pv)
   local p = self.kp * e
   -- Derivative on the measurement: a setpoint step gives no kick.
   local d = 0
   if self.kd > 0 and self.pv ~= nil then
      local raw = -self.sign * self.kd * (pv - self.pv) / dt
      if self.d_filter > 0 then
         local a = dt / (self.d_filter + dt)
         d = self.d + a * (raw - self.d)
      else
         d = raw
      end
   end
   self.d, self.pv = d, pv
   local i = self.integral + self.ki * e * dt
   local u = p + i + d
   -- Anti-windup: integrate only while that does not drive the output
   -- further into a limit.
   if (u > self.out_max and e > 0) or (u < self.out_min and e < 0) then
      i = self.integral
      u = p + i + d
   end
   self.integral = i
   local out = math.min(self.out_max, math.max(self.out_min, u))
   self.saturated = out ~= u
   self.output = out
   return out
end

--- Bumpless transfer: the next update continues from `output` (e.g. the
--- manual value when switching to automatic).
---@param output? number default the last output
function Pid:reset(output)
   if output ~= nil and not finite(output) then error("pid:reset: output must be a number", 2) end
   output = output or self.output
   self.integral = output - (self.pv and self.kp * self.sign * (self.setpoint - self.pv) or 0)
   self.output = output
   self.d = 0
end

-- ---------------------------------------------------------------------------
-- First order plus dead time

---@class doppel.sim.FopdtOptions
---@field gain number        steady-state gain K (output units per input unit)
---@field tau number         time constant (s, >= 0)
---@field dead_time? number  (s, default 0)
---@field y0? number         initial output (default 0)
---@field u0? number         input at which the output rests at y0 (default 0)

---@class doppel.sim.Fopdt
---@field y number    current output
---@field t number    model time (s since creation)
local Fopdt = {}
Fopdt.__index = Fopdt

--- A first-order-plus-dead-time model: tau dy/dt = K (u(t - theta) - u0) - (y - y0).
---@param opts doppel.sim.FopdtOptions
---@return doppel.sim.Fopdt
function M.fopdt(opts)
   if type(opts) ~= "table" then fail("fopdt", "expected a table of options") end
   local u0 = num("fopdt", opts, "u0", 0, nil, "a number")
   return setmetatable({
      gain = num("fopdt", opts, "gain", nil, nil, "a number"),
      tau = num("fopdt", opts, "tau", nil, nonneg, "a number >= 0"),
      dead_time = num("fopdt", opts, "dead_time", 0, nonneg, "a number >= 0"),
      y0 = num("fopdt", opts, "y0", 0, nil, "a number"),
      u0 = u0,
      y = num("fopdt", opts, "y0", 0, nil, "a number"),
      t = 0,
      hist = { { t = -math.huge, u = u0 } },
   }, Fopdt)
end

-- The input applied at time t (the latest change at or before it).
local function input_at(self, t)
   local h = self.hist
   local u = h[1].u
   for k = #h, 1, -1 do
      if h[k].t <= t + 1e-9 then
         u = h[k].u
         break
      end
   end
   return u
end

--- Advances the model by dt seconds with input u held constant (zero-order
--- hold, exact within the step when dt divides the dead time); returns y.
---@param u number
---@param dt number
---@return number y
function Fopdt:step(u, dt)
   if not finite(u) then error("fopdt:step: u must be a finite number", 2) end
   if not (finite(dt) and dt > 0) then error("fopdt:step: dt must be a number > 0", 2) end
   local h = self.hist
   if h[#h].u ~= u then h[#h + 1] = { t = self.t, u = u } end
   local ud = input_at(self, self.t - self.dead_time)
   local target = self.y0 + self.gain * (ud - self.u0)
   if self.tau == 0 then
      self.y = target
   else
      self.y = target + (self.y - target) * math.exp(-dt / self.tau)
   end
   self.t = self.t + dt
   -- Forget inputs older than the dead time needs.
   while #h > 2 and h[2].t <= self.t - self.dead_time - dt do table.remove(h, 1) end
   return self.y
end

-- ---------------------------------------------------------------------------
-- Affinity laws and pump curves

---@class doppel.sim.Operating
---@field speed number
---@field flow? number       scales with speed
---@field head? number       scales with speed^2 (pumps)
---@field pressure? number   scales with speed^2 (fans)
---@field power? number      scales with speed^3
---@field torque? number     scales with speed^2

--- The affinity laws of pumps and fans (same impeller or rotor, same
--- fluid): flow ~ n, head and pressure ~ n^2, power ~ n^3, torque ~ n^2.
---@param ref doppel.sim.Operating a known operating point, with its speed
---@param speed number the new speed (same unit as ref.speed)
---@return doppel.sim.Operating
function M.affinity(ref, speed)
   if type(ref) ~= "table" then fail("affinity", "ref must be a table with speed and values") end
   if not (finite(ref.speed) and ref.speed > 0) then fail("affinity", "ref.speed must be > 0") end
   if not (finite(speed) and speed >= 0) then fail("affinity", "speed must be a number >= 0") end
   local r = speed / ref.speed
   local exps = { flow = 1, head = 2, pressure = 2, power = 3, torque = 2 }
   local out = { speed = speed }
   for k, e in pairs(exps) do
      if ref[k] ~= nil then
         if not finite(ref[k]) then fail("affinity", "ref." .. k .. " must be a number") end
         out[k] = ref[k] * r ^ e
      end
   end
   return out
end

---@class doppel.sim.PumpCurveOptions
---@field rated_flow number     best-efficiency flow at rated speed
---@field rated_head number     head at rated flow and speed
---@field shutoff_head? number  head at zero flow (default 1.25 * rated_head)
---@field best_efficiency? number fraction 0..1 (default 0.75)
---@field rated_speed? number   (default 1: speeds are then ratios)
---@field density? number       kg/m3 (default 998)
---@field npshr? number         NPSH required at rated flow (m; default 3)

---@class doppel.sim.PumpCurve
local PumpCurve = {}
PumpCurve.__index = PumpCurve

--- A centrifugal pump's curves (flow in m3/h, head in m, power in kW):
--- H = H0 (n/n0)^2 - c Q^2, efficiency a parabola through the best
--- efficiency point that moves with speed by the affinity laws.
---@param opts doppel.sim.PumpCurveOptions
---@return doppel.sim.PumpCurve
function M.pump_curve(opts)
   if type(opts) ~= "table" then fail("pump_curve", "expected a table of options") end
   local qb = num("pump_curve", opts, "rated_flow", nil, positive, "a number > 0")
   local hb = num("pump_curve", opts, "rated_head", nil, positive, "a number > 0")
   local h0 = num("pump_curve", opts, "shutoff_head", 1.25 * hb, function(v) return v > hb end,
      "a number > rated_head")
   local eta = num("pump_curve", opts, "best_efficiency", 0.75,
      function(v) return v > 0 and v <= 1 end, "a fraction in (0, 1]")
   local self = setmetatable({
      qb = qb, hb = hb, h0 = h0, eta = eta, c = (h0 - hb) / (qb * qb),
      n0 = num("pump_curve", opts, "rated_speed", 1, positive, "a number > 0"),
      rho = num("pump_curve", opts, "density", 998, positive, "a number > 0"),
      npshr0 = num("pump_curve", opts, "npshr", 3, positive, "a number > 0"),
   }, PumpCurve)
   -- Shaft power at the rated point (kW), for the shut-off power floor.
   self.rated_kw = self.rho * 9.81 * (self.qb / 3600) * self.hb / 1000 / self.eta
   return self
end

-- The checks of the public methods below (error level 3: their caller).
local huge = math.huge

local function bad_flow(fn)
   error("pump_curve:" .. fn .. ": q must be a number >= 0", 3)
end

local function bad_speed(fn)
   error("pump_curve:" .. fn .. ": speed must be a number >= 0", 3)
end

-- The curves at a checked flow q and speed ratio r (no checks: the public
-- methods check once). max(0, x) is written out: 0 unless 0 < x.
local function head_at(self, q, r)
   local h = self.h0 * r * r - self.c * q * q
   if 0 < h then return h end
   return 0
end

local function efficiency_at(self, q, r)
   if r == 0 then return 0 end
   local x = q / (r * self.qb)
   local e = self.eta * (2 * x - x * x)
   if 0 < e then return e end
   return 0
end

-- Shaft power given the head h at (q, r); the shut-off power is taken as 40 %
-- of the rated power (scaled by speed^3) so it stays positive near zero flow.
local function power_at(self, q, r, h)
   local eff = efficiency_at(self, q, r)
   local hyd = self.rho * 9.81 * (q / 3600) * h / 1000
   local floor = 0.4 * self.rated_kw * r ^ 3
   if eff <= 0 then return floor end
   local p = hyd / eff
   if floor < p then return p end
   return floor
end

--- Head (m) at flow q (m3/h) and speed (default rated).
function PumpCurve:head(q, speed)
   if type(q) ~= "number" or not (q >= 0 and q < huge) then bad_flow("head") end
   local r = 1
   if speed ~= nil then
      if type(speed) ~= "number" or not (speed >= 0 and speed < huge) then bad_speed("head") end
      r = speed / self.n0
   end
   return head_at(self, q, r)
end

--- Efficiency (0..1) at flow q and speed.
function PumpCurve:efficiency(q, speed)
   if type(q) ~= "number" or not (q >= 0 and q < huge) then bad_flow("efficiency") end
   local r = 1
   if speed ~= nil then
      if type(speed) ~= "number" or not (speed >= 0 and speed < huge) then
         bad_speed("efficiency")
      end
      r = speed / self.n0
   end
   return efficiency_at(self, q, r)
end

--- Shaft power (kW) at flow q and speed; the shut-off power is taken as 40 %
--- of the rated power (scaled by speed^3) so it stays positive near zero flow.
function PumpCurve:power(q, speed)
   if type(q) ~= "number" or not (q >= 0 and q < huge) then bad_flow("power") end
   local r = 1
   if speed ~= nil then
      if type(speed) ~= "number" or not (speed >= 0 and speed < huge) then bad_speed("power") end
      r = speed / self.n0
   end
   return power_at(self, q, r, head_at(self, q, r))
end

--- Head (m) and shaft power (kW) at flow q and speed: the same values as
--- head() and power(), computing the head once.
---@return number head
---@return number power
function PumpCurve:head_power(q, speed)
   if type(q) ~= "number" or not (q >= 0 and q < huge) then bad_flow("head_power") end
   local r = 1
   if speed ~= nil then
      if type(speed) ~= "number" or not (speed >= 0 and speed < huge) then
         bad_speed("head_power")
      end
      r = speed / self.n0
   end
   local h = head_at(self, q, r)
   return h, power_at(self, q, r, h)
end

local function flow_arg(q, fn)
   if not (finite(q) and q >= 0) then
      error("pump_curve:" .. fn .. ": q must be a number >= 0", 3)
   end
end

local function ratio(self, speed, fn)
   if speed == nil then return 1 end
   if not (finite(speed) and speed >= 0) then
      error("pump_curve:" .. fn .. ": speed must be a number >= 0", 3)
   end
   return speed / self.n0
end

--- NPSH required (m) at flow q and speed (grows with the square of flow).
function PumpCurve:npshr(q, speed)
   flow_arg(q, "npshr")
   local r = ratio(self, speed, "npshr")
   if r == 0 then return 0 end
   local x = q / (r * self.qb)
   return self.npshr0 * r * r * math.max(0.3, x * x)
end

--- The operating point against a system curve H = static + k Q^2: the flow
--- (m3/h) where pump and system heads meet at this speed (0 when the pump
--- cannot overcome the static head).
---@param static number  static head (m)
---@param k number       friction coefficient (m per (m3/h)^2)
---@param speed? number
---@return number flow
---@return number head
function PumpCurve:operating_point(static, k, speed)
   if not finite(static) then error("pump_curve:operating_point: static must be a number", 2) end
   if not (finite(k) and k >= 0) then
      error("pump_curve:operating_point: k must be a number >= 0", 2)
   end
   local r = ratio(self, speed, "operating_point")
   local lift = self.h0 * r * r - static
   if lift <= 0 then return 0, math.max(0, static) end
   local q = math.sqrt(lift / (self.c + k))
   return q, static + k * q * q
end

--- The system curve through a measured operating point (flow, head) with a
--- given static head: returns k for operating_point().
---@param flow number
---@param head number
---@param static number
---@return number k
function M.system_k(flow, head, static)
   if not (finite(flow) and flow > 0) then fail("system_k", "flow must be a number > 0") end
   if not finite(head) then fail("system_k", "head must be a number") end
   if not finite(static) then fail("system_k", "static must be a number") end
   return math.max(0, (head - static) / (flow * flow))
end

-- ---------------------------------------------------------------------------
-- What-if

---@class doppel.sim.Model
---@field init? fun(): table    the model state forked from the twin's current state (tags, state)
---@field step fun(x: table, u: table, dt: number, t: number): table|nil advance x by dt
---@field outputs fun(x: table, u: table, t: number): table<string, number> the predicted tags

---@class doppel.sim.WhatifOptions
---@field horizon string|number  how far to run (default "1h")
---@field step? string|number    model step (default horizon / 60)
---@field start? number          virtual start time (default clock.now())
---@field x0? table              initial model state instead of model.init()
---@field series? boolean        keep every step's outputs (default true)

---@class doppel.sim.Prediction
---@field inputs table           the candidate
---@field final table<string, number>    outputs at the end of the horizon
---@field mean table<string, number>     time-weighted means over the horizon
---@field min table<string, number>
---@field max table<string, number>
---@field integral table<string, number> sum of value * hours (kW -> kWh, m3/h -> m3)
---@field series? {t: number[], [string]: number[]}
---@field state table            the model state at the end

local function deepcopy(v, seen)
   if type(v) ~= "table" then return v end
   seen = seen or {}
   if seen[v] then return seen[v] end
   local c = {}
   seen[v] = c
   for k, x in pairs(v) do c[deepcopy(k, seen)] = deepcopy(x, seen) end
   return setmetatable(c, getmetatable(v))
end

local function check_model(fn, model)
   if type(model) ~= "table" then fail(fn, "model must be a table with step and outputs") end
   if model.init ~= nil and type(model.init) ~= "function" then
      fail(fn, "model.init must be a function")
   end
   if type(model.step) ~= "function" then fail(fn, "model.step must be a function") end
   if type(model.outputs) ~= "function" then fail(fn, "model.outputs must be a function") end
end

local function run_one(model, cand, x0, t0, horizon, dt, keep)
   local x = deepcopy(x0)
   local res = { inputs = cand, final = {}, mean = {}, min = {}, max = {}, integral = {} }
   local series = keep and { t = {} } or nil
   local t = t0
   local function record(out, w)
      if type(out) ~= "table" then
         error("sim.whatif: model.outputs must return a table of numbers", 0)
      end
      for k, v in pairs(out) do
         if type(v) ~= "number" then
            error("sim.whatif: model.outputs returned " .. tostring(k) .. " = " .. tostring(v) ..
               " (expected a number)", 0)
         end
         res.final[k] = v
         if w > 0 then res.integral[k] = (res.integral[k] or 0) + v * w / 3600 end
         if res.min[k] == nil or v < res.min[k] then res.min[k] = v end
         if res.max[k] == nil or v > res.max[k] then res.max[k] = v end
         if series then
            series[k] = series[k] or {}
            series[k][#series.t] = v
         end
      end
   end
   -- Inputs may be functions of time (a ramp, a schedule); constant inputs
   -- are one table for the whole run.
   local scheduled = false
   for _, v in pairs(cand) do
      if type(v) == "function" then scheduled = true end
   end
   local fixed
   local function inputs_at(tt)
      if fixed then return fixed end
      local u = {}
      for k, v in pairs(cand) do
         if type(v) == "function" then u[k] = v(tt, x) else u[k] = v end
      end
      if not scheduled then fixed = u end
      return u
   end
   local u = inputs_at(t)
   if series then series.t[1] = t end
   record(model.outputs(x, u, t), 0)
   local elapsed = 0
   while elapsed < horizon - 1e-9 do
      local h = math.min(dt, horizon - elapsed)
      u = inputs_at(t)
      local nx = model.step(x, u, h, t)
      if nx ~= nil then x = nx end
      t = t + h
      elapsed = elapsed + h
      if series then series.t[#series.t + 1] = t end
      record(model.outputs(x, u, t), h)
   end
   for k, v in pairs(res.integral) do
      res.mean[k] = horizon > 0 and v * 3600 / horizon or res.final[k]
   end
   for k, v in pairs(res.final) do if res.mean[k] == nil then res.mean[k] = v end end
   res.series = series
   res.state = x
   return res
end

--- Forks the model from the twin's current state and runs it forward in
--- virtual time under each candidate (a table of inputs, e.g. { speed = 1450 };
--- a value may be a function(t, x) for a schedule). Nothing is written and no
--- timer runs: this is a pure computation, so it is as fast as the model.
---@param model doppel.sim.Model
---@param candidates table one candidate, or an array of candidates
---@param opts? doppel.sim.WhatifOptions
---@return doppel.sim.Prediction|doppel.sim.Prediction[] prediction(s), one per candidate
function M.whatif(model, candidates, opts)
   check_model("whatif", model)
   if type(candidates) ~= "table" then
      fail("whatif", "candidates must be a table of inputs or an array of them")
   end
   if opts ~= nil and type(opts) ~= "table" then fail("whatif", "opts must be a table") end
   opts = opts or {}
   local horizon = seconds("whatif", "horizon", opts.horizon or "1h")
   local dt = opts.step ~= nil and seconds("whatif", "step", opts.step) or horizon / 60
   if dt <= 0 then fail("whatif", "step must be > 0") end
   if horizon / dt > 1e6 then fail("whatif", "horizon / step exceeds 1e6 steps") end
   local t0 = opts.start
   if t0 == nil then t0 = type(clock) == "table" and clock.now() or 0 end
   if not finite(t0) then fail("whatif", "start must be a number (clock seconds)") end
   if opts.x0 ~= nil and type(opts.x0) ~= "table" then fail("whatif", "x0 must be a table") end
   local x0 = opts.x0 or (model.init and model.init()) or {}
   if type(x0) ~= "table" then fail("whatif", "model.init must return a table") end
   local keep = opts.series ~= false
   local many = candidates[1] ~= nil
   if not many then return run_one(model, candidates, x0, t0, horizon, dt, keep) end
   local out = {}
   for i, c in ipairs(candidates) do
      if type(c) ~= "table" then fail("whatif", "candidates[" .. i .. "] must be a table") end
      out[i] = run_one(model, c, x0, t0, horizon, dt, keep)
   end
   return out
end

---@class doppel.sim.RecommendOptions
---@field model doppel.sim.Model
---@field setpoint string            the input to choose (a key of the candidate)
---@field bounds number[]            { lo, hi }
---@field inputs? table              the other inputs, held fixed
---@field objective fun(p: doppel.sim.Prediction): number  minimised (see maximize)
---@field maximize? boolean
---@field constraints? (fun(p: doppel.sim.Prediction): number)[]  feasible when <= 0
---@field method? string             "golden" (default, one optimum) or "grid"
---@field points? integer            grid points (default 21)
---@field tol? number                golden tolerance (default (hi - lo) / 1000)
---@field horizon? string|number
---@field step? string|number
---@field current? number            the setpoint in force, for comparison
---@field min_change? number         issue nothing when |best - current| is below this
---@field write? {tag: string, allow: boolean, current?: number, on_outcome?: fun(r: table)}
---   issue the result through twin.write when allow; `current` is the value the tag
---   holds (for min_change; default opts.current); on_outcome gets the guard's verdict

---@class doppel.sim.Recommendation
---@field value number|nil           the recommended setpoint (nil: no feasible one)
---@field objective number|nil
---@field predicted doppel.sim.Prediction|nil   the prediction at the recommended value
---@field baseline doppel.sim.Prediction|nil    the prediction at `current`, when given
---@field improvement number|nil     objective(current) - objective(value), in the objective's sense
---@field evaluations integer
---@field issued boolean             a command was submitted through twin.write
---@field command any                what twin.write returned
---@field reason string              why it was or was not issued

--- Recommends a setpoint by simulation and optimisation; issues it as a
--- command only when opts.write.allow is true (the guard still decides).
---@param opts doppel.sim.RecommendOptions
---@return doppel.sim.Recommendation
function M.recommend(opts)
   if type(opts) ~= "table" then fail("recommend", "expected a table of options") end
   check_model("recommend", opts.model)
   if type(opts.setpoint) ~= "string" then fail("recommend", "setpoint must be an input name") end
   local b = opts.bounds
   if type(b) ~= "table" or not finite(b[1]) or not finite(b[2]) or b[2] <= b[1] then
      fail("recommend", "bounds must be { lo, hi } with lo < hi")
   end
   if type(opts.objective) ~= "function" then fail("recommend", "objective must be a function") end
   if opts.inputs ~= nil and type(opts.inputs) ~= "table" then
      fail("recommend", "inputs must be a table")
   end
   local method = opts.method or "golden"
   if method ~= "golden" and method ~= "grid" then
      fail("recommend", "method must be \"golden\" or \"grid\"")
   end
   if opts.current ~= nil and not finite(opts.current) then
      fail("recommend", "current must be a number")
   end
   if opts.constraints ~= nil and type(opts.constraints) ~= "table" then
      fail("recommend", "constraints must be a list of functions")
   end
   local w = opts.write
   if w ~= nil then
      if type(w) ~= "table" or type(w.tag) ~= "string" then
         fail("recommend", "write must be { tag = \"name\", allow = true|false }")
      end
      if type(w.allow) ~= "boolean" then fail("recommend", "write.allow must be a boolean") end
      if w.current ~= nil and not finite(w.current) then
         fail("recommend", "write.current must be a number")
      end
      if w.on_outcome ~= nil and type(w.on_outcome) ~= "function" then
         fail("recommend", "write.on_outcome must be a function")
      end
   end
   local wopts = { horizon = opts.horizon, step = opts.step, series = false }
   local x0 = opts.model.init and opts.model.init() or {}
   wopts.x0 = x0
   local cache = {}
   local function predict(v)
      if cache[v] then return cache[v] end
      local cand = {}
      for k, x in pairs(opts.inputs or {}) do cand[k] = x end
      cand[opts.setpoint] = v
      local p = M.whatif(opts.model, cand, wopts)
      cache[v] = p
      return p
   end
   local cons = {}
   for i, g in ipairs(opts.constraints or {}) do
      if type(g) ~= "function" then
         fail("recommend", "constraints[" .. i .. "] must be a function")
      end
      cons[i] = function(v) return g(predict(v)) end
   end
   local f = function(v) return opts.objective(predict(v)) end
   local oo = { maximize = opts.maximize, constraints = cons }
   local best, fbest, info
   if method == "golden" then
      oo.tol = opts.tol or (b[2] - b[1]) / 1000
      best, fbest, info = optimize.golden(f, b[1], b[2], oo)
   else
      best, fbest, info = optimize.grid(f, { { b[1], b[2], opts.points or 21 } }, oo)
   end
   local rec = { evaluations = info.evaluations, issued = false }
   if best == nil then
      rec.reason = "no feasible setpoint in [" .. b[1] .. ", " .. b[2] .. "]"
      return rec
   end
   rec.value, rec.objective, rec.predicted = best, fbest, predict(best)
   if opts.current ~= nil then
      rec.baseline = predict(opts.current)
      local fc = opts.objective(rec.baseline)
      rec.improvement = opts.maximize and (fbest - fc) or (fc - fbest)
   end
   if w == nil then
      rec.reason = "recommendation only (no write)"
   elseif not w.allow then
      rec.reason = "recommendation only (writing not allowed)"
   elseif opts.min_change and (w.current or opts.current)
      and math.abs(best - (w.current or opts.current)) < opts.min_change then
      rec.reason = "change below min_change"
   elseif type(twin) ~= "table" or type(twin.write) ~= "function" then
      rec.reason = "twin.write is not available here (twin scripts only)"
   else
      -- The guard decides: rec.command is the command id, the outcome comes
      -- later to on_outcome. An unknown tag is an error at the call.
      local ok, id = pcall(twin.write, w.tag, best, w.on_outcome)
      if ok then
         rec.command, rec.issued, rec.reason = id, true, "issued through the guard"
      else
         rec.reason = "not issued: " .. tostring(id)
      end
   end
   return rec
end

return M
