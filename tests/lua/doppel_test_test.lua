-- Tests of doppel.test itself: its assertions pass and fail as documented,
-- with the messages docs/testing.md shows.
local test = require "doppel.test"

test.case("eq compares deeply and names the first difference", function(t)
   t:eq({ a = { 1, 2 }, b = "x" }, { a = { 1, 2 }, b = "x" })
   t:eq(1, 1.0)
   t:raises(function() t:eq(1, 2) end, "expected 2, got 1")
   t:raises(function() t:eq({ a = { 1, 2 } }, { a = { 1, 3 } }) end,
            "expected 3, got 2 at value.a[2]")
   t:raises(function() t:eq({ a = 1, b = 2 }, { a = 1 }) end, "expected nil, got 2 at value.b")
   t:raises(function() t:eq("x", "y", "names") end, 'names: expected "y", got "x"')
end)

test.case("near, ok and raises", function(t)
   t:near(0.705, 0.71, 0.01)
   t:raises(function() t:near(0.8, 0.71, 0.01) end, "expected 0.71 ± 0.01, got 0.8")
   t:raises(function() t:near(nil, 1, 0.1) end, "got nil")
   t:raises(function() t:near(0 / 0, 1, 0.1) end, "expected 1 ± 0.1")
   t:ok(true)
   t:raises(function() t:ok(false, "the pump runs") end, "assertion failed: the pump runs")
   t:raises(function() t:ok(nil) end, "expected a true value, got nil")
   t:raises(function() t:raises(function() end) end, "expected an error, none was raised")
   t:raises(function() t:raises(function() error("abc") end, "xyz") end,
            'expected an error containing "xyz", got:')
end)

test.case("a failure points at the line of the test", function(t)
   local err = t:raises(function() t:eq(1, 2) end)
   t:ok(tostring(err):find("doppel_test_test.lua:%d+: expected 2, got 1"), tostring(err))
end)

test.case("time starts on 2026-01-01 without a plant", function(t)
   t:eq(t:now(), 1767225600)
   t:eq(#t:events(), 0)
   t:eq(#t:commands(), 0)
end)

test.case("a case may start at another time", { start = "2026-06-01T12:00:00Z" }, function(t)
   t:eq(t:now(), 1780315200)
   t:eq(os.date("!%Y-%m-%d %H:%M", os.time()), "2026-06-01 12:00")
end)

test.case("t:twin validates before building", function(t)
   t:raises(function() t:twin "P1" end, "expected a table")
   t:raises(function() t:twin { class = "centrifugal_pump" } end, "name is required")
   t:raises(function() t:get("P1.flow") end, "no plant in this case")
end)

test.case("the plant is built from t:twin declarations", function(t)
   t:twin { name = "A", script = "fixture_twin.lua", tags = { x = {} } }
   t:set("A.x", 2)
   t:eq(t:get("A.double"), 4)
   t:advance("10s")
   t:eq(t:get("A.ticks"), 10)
   t:raises(function() t:twin { name = "B", script = "x.lua" } end, "already built")
   t:raises(function() t:advance("-1s") end, "bad duration")
   t:raises(function() t:advance_to("2025-01-01T00:00:00Z") end, "cannot go back in time")
   t:raises(function() t:set("A.nope", 1) end, 'no tag "A.nope"')
   t:raises(function() t:set("A.x", {}) end, "number, boolean or string")
   t:raises(function() t:state("Z") end, 'no twin "Z"')
   t:eq(t:state("A"), { ticks = 10 })
   local tag = t:tag("A.x")
   t:eq(tag.value, 2)
   t:eq(tag.quality, "good")
   t:eq(tag.ts, 1767225600)
   t:eq(#t:events("tick"), 1)
   t:eq(t:events("tick")[1].data, { n = 5 })
end)

test.case("t:set{...} delivers one batch: on_update runs once", function(t)
   t:twin { name = "U", script = "update_twin.lua", tags = { a = {}, b = {}, c = {} } }
   t:set { ["U.b"] = 2, ["U.a"] = 1, ["U.c"] = 7 }
   t:eq(t:get("U.sum"), 3)
   t:eq(t:state("U").calls, 1)
   t:eq(t:state("U").last, "U.a,U.b")
   t:set("U.a", 5)
   t:set("U.c", 8)
   t:eq(t:get("U.sum"), 7)
   t:eq(t:state("U").calls, 2)
   t:eq(t:state("U").last, "U.a")
   t:raises(function() t:set { ["U.a"] = 1, ["U.zz"] = 2 } end, 'no tag "U.zz"')
   t:raises(function() t:set { 1, 2 } end, "keys are tag names")
end)

test.case("commands are judged and recorded; device-less setpoints are written", function(t)
   t:twin { name = "W", script = "writer_twin.lua",
            tags = { x = {}, sp = { writable = true, min = 0, max = 50 } } }
   t:set("W.sp", 1)
   t:set("W.x", 10)
   t:set("W.x", 40) -- 80 is above max
   t:advance("1s")
   local cmds = t:commands()
   t:eq(#cmds, 2)
   t:eq(cmds[1].tag, "W.sp")
   t:eq(cmds[1].value, 20)
   t:eq(cmds[1].origin, "twin:W")
   t:eq(cmds[1].outcome, "done")
   t:eq(cmds[2].outcome, "rejected")
   t:ok(cmds[2].reason:find("max"), cmds[2].reason)
   t:eq(t:get("W.sp"), 20, "dry run: a writable tag without a device is written")
   t:eq(t:state("W").last, "rejected")
end)
