-- doppel.optimize: known minima, constraints, bad arguments.
local test = require "doppel.test"
local optimize = require "doppel.optimize"

test.case("golden-section finds the minimum of a parabola", function(t)
   local x, fx, info = optimize.golden(function(s) return (s - 1234.5) ^ 2 + 7 end, 900, 1500)
   t:near(x, 1234.5, 1e-3)
   t:near(fx, 7, 1e-6)
   t:ok(info.converged, "converged")
   t:ok(info.evaluations < 80, "evaluations " .. info.evaluations)
end)

test.case("golden-section maximises and honours the ends of the interval", function(t)
   local x, fx = optimize.golden(function(s) return -(s - 2) ^ 2 end, 0, 5, { maximize = true })
   t:near(x, 2, 1e-5)
   t:near(fx, 0, 1e-9)
   -- Monotone: the optimum is the upper end.
   x = optimize.golden(function(s) return -s end, 0, 10)
   t:near(x, 10, 1e-9)
end)

test.case("golden-section with a constraint stops at its boundary", function(t)
   -- Minimise power ~ s^3 subject to flow ~ s >= 0.8 (of rated).
   local x = optimize.golden(function(s) return s ^ 3 end, 0.5, 1.2,
      { constraints = { function(s) return 0.8 - s end }, tol = 1e-7 })
   t:near(x, 0.8, 1e-5)
   local none, why = optimize.golden(function(s) return s end, 0, 1,
      { constraints = { function() return 1 end } })
   t:eq(none, nil)
   t:eq(why, "no feasible point in [lo, hi]")
end)

test.case("Nelder-Mead finds the Rosenbrock minimum within bounds", function(t)
   local rosen = function(x) return 100 * (x[2] - x[1] ^ 2) ^ 2 + (1 - x[1]) ^ 2 end
   local x, fx, info = optimize.nelder_mead(rosen, { -1.2, 1 },
      { lower = { -2, -2 }, upper = { 2, 2 }, max_iter = 2000, tol = 1e-10 })
   t:near(x[1], 1, 1e-3)
   t:near(x[2], 1, 2e-3)
   t:ok(fx < 1e-6, "fx " .. fx)
   t:ok(info.converged)
end)

test.case("Nelder-Mead keeps to its bounds", function(t)
   -- Unconstrained minimum at (3, -3); the box stops it at (1, -1).
   local x = optimize.nelder_mead(function(v) return (v[1] - 3) ^ 2 + (v[2] + 3) ^ 2 end, { 0, 0 },
      { lower = { -1, -1 }, upper = { 1, 1 } })
   t:near(x[1], 1, 1e-6)
   t:near(x[2], -1, 1e-6)
end)

test.case("grid search returns the best feasible point and every point", function(t)
   local x, fx, info = optimize.grid(function(v) return (v[1] - 2) ^ 2 + (v[2] - 30) ^ 2 end,
      { { 0, 4, 5 }, { values = { 10, 20, 30, 40 } } },
      { constraints = { function(v) return v[1] - 1 end } })   -- v[1] <= 1
   t:eq(x, { 1, 30 })
   t:near(fx, 1, 1e-12)
   t:eq(#info.points, 20)
   t:eq(info.evaluations, 20)
   local one = optimize.grid(function(s) return math.abs(s - 0.3) end, { { 0, 1, 11 } })
   t:near(one, 0.3, 1e-12)
end)

test.case("bad arguments name what is wrong", function(t)
   t:raises(function() optimize.golden(nil, 0, 1) end, "optimize.golden: f must be a function")
   t:raises(function() optimize.golden(math.abs, 1, 0) end, "hi must be greater than lo")
   t:raises(function() optimize.golden(math.abs, 0 / 0, 1) end, "lo must be a finite number")
   t:raises(function() optimize.golden(math.abs, 0, 1, { tol = -1 }) end, "opts.tol must be")
   t:raises(function() optimize.golden(math.abs, 0, 1, { max_iter = 0 }) end, "opts.max_iter")
   t:raises(function() optimize.golden(math.abs, 0, 1, { constraints = { 1 } }) end,
      "opts.constraints[1] must be a function")
   t:raises(function() optimize.golden(function() return "x" end, 0, 1) end,
      "f returned x (expected a number)")
   t:raises(function() optimize.nelder_mead(math.abs, {}) end, "x0 must be a non-empty array")
   t:raises(function() optimize.nelder_mead(math.abs, { 1, "a" }) end, "x0[2] must be a finite")
   t:raises(function()
      optimize.nelder_mead(math.abs, { 1 }, { lower = { 2 }, upper = { 1 } })
   end, "opts.upper[1] must be greater than opts.lower[1]")
   t:raises(function() optimize.grid(math.abs, {}) end, "axes must be a non-empty list")
   t:raises(function() optimize.grid(math.abs, { { 0, 1, 1 } }) end, "axes[1][3] (n)")
   t:raises(function() optimize.grid(math.abs, { { 0, 1, 1000 }, { 0, 1, 1000 } }) end,
      "exceed opts.max_points")
end)
