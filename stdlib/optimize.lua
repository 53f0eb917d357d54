--- doppel.optimize: small derivative-free optimisers for setpoints.
---
--- Use golden-section for one bounded variable with one optimum (a pump
--- speed, a temperature setpoint), Nelder-Mead for a few continuous variables
--- within bounds, and grid search when the function is rough, has several
--- optima, or every point must be inspected. All minimise by default
--- (`maximize = true` to maximise). Constraints are functions g(x) that must
--- be <= 0 at a feasible point; infeasible points are never returned.
---
--- ```lua
--- local optimize = require "doppel.optimize"
--- local x, fx = optimize.golden(function(s) return (s - 1200) ^ 2 end, 900, 1500)
--- local best = optimize.grid(cost, { { 900, 1500, 13 }, { 40, 60, 5 } },
---                            { constraints = { function(x) return 100 - flow(x) end } })
--- ```
local M = {}

---@alias doppel.optimize.Constraint fun(x: any): number  feasible when <= 0

---@class doppel.optimize.Options
---@field maximize? boolean                      maximise instead of minimise
---@field tol? number                            stop when the bracket / simplex is this small
---@field max_iter? integer                      iteration cap (default 200)
---@field constraints? doppel.optimize.Constraint[]

---@class doppel.optimize.Info
---@field evaluations integer   function evaluations
---@field iterations integer
---@field converged boolean
---@field feasible boolean      the returned point satisfies every constraint

local function fail(fn, msg)
   error("optimize." .. fn .. ": " .. msg, 3)
end

local function finite(x)
   return type(x) == "number" and x == x and x ~= math.huge and x ~= -math.huge
end

local function check_opts(fn, opts)
   if opts == nil then return {} end
   if type(opts) ~= "table" then fail(fn, "opts must be a table") end
   if opts.tol ~= nil and not (finite(opts.tol) and opts.tol > 0) then
      fail(fn, "opts.tol must be a number > 0")
   end
   if opts.max_iter ~= nil and (math.type(opts.max_iter) ~= "integer" or opts.max_iter < 1) then
      fail(fn, "opts.max_iter must be an integer >= 1")
   end
   if opts.constraints ~= nil then
      if type(opts.constraints) ~= "table" then fail(fn, "opts.constraints must be a list") end
      for i, g in ipairs(opts.constraints) do
         if type(g) ~= "function" then
            fail(fn, "opts.constraints[" .. i .. "] must be a function")
         end
      end
   end
   return opts
end

-- Wraps f: sign for maximising, counts evaluations, and a penalty for
-- infeasible points (large and growing with the violation, so the search is
-- pushed back towards the feasible region).
local function objective(fn, f, opts)
   local sign = opts.maximize and -1 or 1
   local cons = opts.constraints or {}
   local n = 0
   local function violation(x)
      local v = 0
      for _, g in ipairs(cons) do
         local gv = g(x)
         if type(gv) ~= "number" or gv ~= gv then
            error("optimize." .. fn .. ": a constraint returned " .. tostring(gv) ..
               " (expected a number)", 0)
         end
         if gv > 0 then v = v + gv end
      end
      return v
   end
   local function eval(x)
      n = n + 1
      local v = violation(x)
      if v > 0 then return 1e30 * (1 + v), false end
      local y = f(x)
      if type(y) ~= "number" or y ~= y then
         error("optimize." .. fn .. ": f returned " .. tostring(y) .. " (expected a number)", 0)
      end
      return sign * y, true
   end
   return eval, function() return n end, sign
end

--- Golden-section search for the minimum of f on [lo, hi] (f unimodal there).
---@param f fun(x: number): number
---@param lo number
---@param hi number
---@param opts? doppel.optimize.Options  tol defaults to 1e-6 * (hi - lo)
---@return number|nil x    best point, nil when no feasible point was found
---@return number|string fx f(x), or the reason
---@return doppel.optimize.Info info
function M.golden(f, lo, hi, opts)
   if type(f) ~= "function" then fail("golden", "f must be a function") end
   if not finite(lo) then fail("golden", "lo must be a finite number") end
   if not finite(hi) then fail("golden", "hi must be a finite number") end
   if hi <= lo then fail("golden", "hi must be greater than lo") end
   opts = check_opts("golden", opts)
   local tol = opts.tol or 1e-6 * (hi - lo)
   local max_iter = opts.max_iter or 200
   local eval, count, sign = objective("golden", f, opts)
   local r = (math.sqrt(5) - 1) / 2
   local a, b = lo, hi
   local c, d = b - r * (b - a), a + r * (b - a)
   local fc, fd = eval(c), eval(d)
   local it = 0
   while b - a > tol and it < max_iter do
      it = it + 1
      if fc < fd then
         b, d, fd = d, c, fc
         c = b - r * (b - a)
         fc = eval(c)
      else
         a, c, fc = c, d, fd
         d = a + r * (b - a)
         fd = eval(d)
      end
   end
   -- The bracket's best point, compared with the ends (a monotone f on a
   -- bounded interval has its optimum at an end).
   local best, fbest = c, fc
   if fd < fbest then best, fbest = d, fd end
   for _, x in ipairs({ lo, hi }) do
      local y = eval(x)
      if y < fbest then best, fbest = x, y end
   end
   local ok = fbest < 1e30
   local info = { evaluations = count(), iterations = it, converged = b - a <= tol, feasible = ok }
   if not ok then return nil, "no feasible point in [lo, hi]", info end
   return best, sign * fbest, info
end

--- Bounded Nelder-Mead: minimises f(x) for a vector x (an array of numbers).
--- Points are kept inside [lower, upper] by projection.
---@param f fun(x: number[]): number
---@param x0 number[] starting point
---@param opts? doppel.optimize.Options|{lower?: number[], upper?: number[], step?: number[]}
---@return number[]|nil x
---@return number|string fx
---@return doppel.optimize.Info info
function M.nelder_mead(f, x0, opts)
   if type(f) ~= "function" then fail("nelder_mead", "f must be a function") end
   if type(x0) ~= "table" or #x0 == 0 then fail("nelder_mead", "x0 must be a non-empty array") end
   local n = #x0
   for i = 1, n do
      if not finite(x0[i]) then fail("nelder_mead", "x0[" .. i .. "] must be a finite number") end
   end
   opts = check_opts("nelder_mead", opts)
   local lower, upper, step = opts.lower or {}, opts.upper or {}, opts.step or {}
   for name, v in pairs({ lower = lower, upper = upper, step = step }) do
      if type(v) ~= "table" then fail("nelder_mead", "opts." .. name .. " must be an array") end
      for i = 1, n do
         if v[i] ~= nil and not finite(v[i]) then
            fail("nelder_mead", "opts." .. name .. "[" .. i .. "] must be a finite number")
         end
      end
   end
   for i = 1, n do
      if lower[i] and upper[i] and upper[i] <= lower[i] then
         fail("nelder_mead", "opts.upper[" .. i .. "] must be greater than opts.lower[" .. i .. "]")
      end
   end
   local tol = opts.tol or 1e-8
   local max_iter = opts.max_iter or 200 * n
   local eval, count, sign = objective("nelder_mead", f, opts)
   local function clamp(x)
      for i = 1, n do
         if lower[i] and x[i] < lower[i] then x[i] = lower[i] end
         if upper[i] and x[i] > upper[i] then x[i] = upper[i] end
      end
      return x
   end
   local simplex = {}
   local start = clamp({ table.unpack(x0) })
   simplex[1] = { x = start, f = eval(start) }
   for i = 1, n do
      local x = { table.unpack(start) }
      local h = step[i]
      if h == nil then
         if lower[i] and upper[i] then h = 0.1 * (upper[i] - lower[i])
         else h = x[i] ~= 0 and 0.1 * math.abs(x[i]) or 0.1 end
      end
      x[i] = x[i] + h
      if upper[i] and x[i] > upper[i] then x[i] = start[i] - h end
      clamp(x)
      simplex[i + 1] = { x = x, f = eval(x) }
   end
   local function point(c, d, t)
      local x = {}
      for i = 1, n do x[i] = c[i] + t * (d[i] - c[i]) end
      return clamp(x)
   end
   local it, converged = 0, false
   while it < max_iter do
      it = it + 1
      table.sort(simplex, function(p, q) return p.f < q.f end)
      local best, worst = simplex[1], simplex[n + 1]
      local spread = 0
      for k = 2, n + 1 do
         for i = 1, n do
            spread = math.max(spread, math.abs(simplex[k].x[i] - best.x[i]))
         end
      end
      if spread < tol and math.abs(worst.f - best.f) <= tol * (1 + math.abs(best.f)) then
         converged = true
         break
      end
      local c = {}
      for i = 1, n do
         local s = 0
         for k = 1, n do s = s + simplex[k].x[i] end
         c[i] = s / n
      end
      local xr = point(c, worst.x, -1)
      local fr = eval(xr)
      if fr < best.f then
         local xe = point(c, worst.x, -2)
         local fe = eval(xe)
         if fe < fr then simplex[n + 1] = { x = xe, f = fe }
         else simplex[n + 1] = { x = xr, f = fr } end
      elseif fr < simplex[n].f then
         simplex[n + 1] = { x = xr, f = fr }
      else
         local xc = fr < worst.f and point(c, xr, 0.5) or point(c, worst.x, 0.5)
         local fcv = eval(xc)
         if fcv < math.min(fr, worst.f) then
            simplex[n + 1] = { x = xc, f = fcv }
         else
            for k = 2, n + 1 do
               local x = point(best.x, simplex[k].x, 0.5)
               simplex[k] = { x = x, f = eval(x) }
            end
         end
      end
   end
   table.sort(simplex, function(p, q) return p.f < q.f end)
   local b = simplex[1]
   local ok = b.f < 1e30
   local info = { evaluations = count(), iterations = it, converged = converged, feasible = ok }
   if not ok then return nil, "no feasible point found", info end
   return b.x, sign * b.f, info
end

--- Grid search: evaluates f at every point of a grid and returns the best
--- feasible one. `axes` is one { lo, hi, n } per variable (n points from lo to
--- hi inclusive) or a list of values { values = {...} }. With one axis, f and
--- the result take a number; with several, an array.
---@param f fun(x: number|number[]): number
---@param axes table
---@param opts? doppel.optimize.Options|{max_points?: integer}
---@return number|number[]|nil x
---@return number|string fx
---@return doppel.optimize.Info|{points: table} info  info.points: every {x=, f=, feasible=}
function M.grid(f, axes, opts)
   if type(f) ~= "function" then fail("grid", "f must be a function") end
   if type(axes) ~= "table" or #axes == 0 then
      fail("grid", "axes must be a non-empty list of { lo, hi, n } or { values = {...} }")
   end
   opts = check_opts("grid", opts)
   local values = {}
   local total = 1
   for k, ax in ipairs(axes) do
      if type(ax) ~= "table" then fail("grid", "axes[" .. k .. "] must be a table") end
      local v = {}
      if ax.values ~= nil then
         if type(ax.values) ~= "table" or #ax.values == 0 then
            fail("grid", "axes[" .. k .. "].values must be a non-empty array")
         end
         for i, x in ipairs(ax.values) do
            if not finite(x) then
               fail("grid", "axes[" .. k .. "].values[" .. i .. "] must be a finite number")
            end
            v[i] = x
         end
      else
         local lo, hi, n = ax[1], ax[2], ax[3]
         if not finite(lo) or not finite(hi) or hi < lo then
            fail("grid", "axes[" .. k .. "] must be { lo, hi, n } with lo <= hi")
         end
         if math.type(n) ~= "integer" or n < 1 or (n == 1 and hi > lo) then
            fail("grid", "axes[" .. k .. "][3] (n) must be an integer >= 2 (1 when lo == hi)")
         end
         for i = 1, n do v[i] = n == 1 and lo or lo + (hi - lo) * (i - 1) / (n - 1) end
      end
      values[k] = v
      total = total * #v
   end
   local max_points = opts.max_points or 100000
   if total > max_points then
      fail("grid", ("%d points exceed opts.max_points (%d)"):format(total, max_points))
   end
   local eval, count, sign = objective("grid", f, opts)
   local dims = #values
   local idx = {}
   for k = 1, dims do idx[k] = 1 end
   local best, fbest = nil, math.huge
   local points = {}
   for _ = 1, total do
      local x
      if dims == 1 then x = values[1][idx[1]]
      else
         x = {}
         for k = 1, dims do x[k] = values[k][idx[k]] end
      end
      local y, feasible = eval(x)
      points[#points + 1] = { x = x, f = feasible and sign * y or nil, feasible = feasible }
      if feasible and y < fbest then best, fbest = x, y end
      for k = 1, dims do
         idx[k] = idx[k] + 1
         if idx[k] <= #values[k] then break end
         idx[k] = 1
      end
   end
   local info = { evaluations = count(), iterations = total, converged = true,
                  feasible = best ~= nil, points = points }
   if best == nil then return nil, "no feasible point on the grid", info end
   return best, sign * fbest, info
end

return M
