#!/bin/bash
# `doppel test` itself: results per case, failures with file:line, exit
# statuses, broken test files, discovery of *_test.lua files.
set -u
. "$(dirname "$(realpath "$0")")/lib/expect.sh"
DOPPEL=$(realpath "$1")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK" || exit 1
failures=0

mkdir -p suite/nested other
cat > suite/pass_test.lua <<'LUA'
local test = require "doppel.test"
test.case("adds", function(t) t:eq(1 + 1, 2) end)
test.case("prints", function(t) print("hello from a test"); t:ok(true) end)
LUA
cat > suite/nested/fail_test.lua <<'LUA'
local test = require "doppel.test"
test.case("passes", function(t) t:ok(true) end)
test.case("fails", function(t)
   t:eq(1, 2)
end)
test.case("plain assert", function() assert(false, "plain") end)
LUA
cat > suite/helper.lua <<'LUA'
error("not a test file: never run")
LUA

expect 0 "ok   suite/pass_test.lua: adds (" "hello from a test" "2 passed, 0 failed" -- \
    "$DOPPEL" test suite/pass_test.lua
expect 1 "FAIL suite/nested/fail_test.lua: fails" "suite/nested/fail_test.lua:4: expected 2, got 1" \
    "suite/nested/fail_test.lua:6: plain" "ok   suite/nested/fail_test.lua: passes" \
    "3 passed, 2 failed" -- "$DOPPEL" test suite
# No PATH: the current directory, recursively; helper.lua is not a test.
(cd suite && expect 1 "nested/fail_test.lua: fails" "3 passed, 2 failed" -- "$DOPPEL" test)
expect 2 "no-such-dir" -- "$DOPPEL" test no-such-dir
# A test file that cannot be read (a dangling link) fails with status 2.
mkdir -p unreadable
ln -s nowhere.lua unreadable/gone_test.lua
expect 2 "FAIL unreadable/gone_test.lua: cannot read the file" "No such file" -- \
    "$DOPPEL" test unreadable
rm -r unreadable
expect 0 "no *_test.lua files found" "0 passed, 0 failed" -- "$DOPPEL" test other
expect 0 "Usage: doppel test" -- "$DOPPEL" test --help

# Broken files: a syntax error, an error at the top level, no cases.
printf 'local test = require "doppel.test"\ntest.case("x", function(t)\n' > other/syntax_test.lua
expect 1 "FAIL other/syntax_test.lua: the file did not load" "other/syntax_test.lua:3:" \
    "0 passed, 1 failed" -- "$DOPPEL" test other/syntax_test.lua
printf 'local x = nil\nlocal y = x.field\n' > other/toplevel_test.lua
expect 1 "the file did not load" "other/toplevel_test.lua:2: attempt to index a nil value" -- \
    "$DOPPEL" test other/toplevel_test.lua
printf 'local t = 1\nreturn t\n' > other/nocases_test.lua
expect 1 "FAIL other/nocases_test.lua: no test cases" -- "$DOPPEL" test other/nocases_test.lua
printf 'local test = require "doppel.test"\ntest.case("x", { strat = 1 }, function() end)\n' \
    > other/badopt_test.lua
expect 1 'unknown option "strat"' "other/badopt_test.lua:2:" -- "$DOPPEL" test other/badopt_test.lua
printf 'local test = require "doppel.test"\ntest.case("x", { start = "yesterday" }, function() end)\n' \
    > other/badstart_test.lua
expect 1 'FAIL other/badstart_test.lua: x' 'start: bad time "yesterday"' -- \
    "$DOPPEL" test other/badstart_test.lua
rm other/*_test.lua

# A runaway loop in a test ends with file:line; the next case still runs.
cat > other/loop_test.lua <<'LUA'
local test = require "doppel.test"
test.case("spins", function()
   while true do end
end)
test.case("after", function(t) t:ok(true) end)
LUA
expect 1 "instruction budget" "other/loop_test.lua:3" "1 passed, 1 failed" -- \
    "$DOPPEL" test other/loop_test.lua
rm other/loop_test.lua

# A twin's handler error fails the case unless the case allows it; the
# error names the twin script's file:line in the log.
cat > other/bad_twin.lua <<'LUA'
twin.on_change("x", function(v)
   if v > 1 then error("too big") end
end)
LUA
cat > other/twin_test.lua <<'LUA'
local test = require "doppel.test"
local spec = { name = "A", script = "bad_twin.lua", tags = { x = {} } }
test.case("handler error fails", function(t)
   t:twin(spec)
   t:set("A.x", 5)
end)
test.case("handler error allowed", function(t)
   t:twin(spec)
   t:allow_errors()
   t:set("A.x", 5)
end)
test.case("unknown class", function(t)
   t:twin { name = "B", class = "no_such_class" }
   t:set("B.x", 1)
end)
LUA
expect 1 "FAIL other/twin_test.lua: handler error fails" "other/bad_twin.lua:2: too big" \
    "twin handlers raised 1 error" "ok   other/twin_test.lua: handler error allowed" \
    'other/twin_test.lua:14: building the plant from t:twin: twin B: class: no class "no_such_class"' \
    "1 passed, 2 failed" -- "$DOPPEL" test other/twin_test.lua

# A recording fed to a twin; a malformed recording names file:line:column.
cat > other/feed_test.lua <<'LUA'
local test = require "doppel.test"
test.case("feed", function(t)
   t:twin { name = "A", script = "sum.lua", tags = { x = {} } }
   t:eq(t:feed("rec.csv"), 3)
   t:eq(t:get("A.sum"), 6)
   t:eq(t:now(), 1767225603)
end)
test.case("bad feed", function(t)
   t:twin { name = "A", script = "sum.lua", tags = { x = {} } }
   t:feed("bad.csv")
end)
LUA
cat > other/sum.lua <<'LUA'
twin.tag("sum")
twin.on_change("x", function(v) tags.sum = (tags.sum.value or 0) + v end)
LUA
printf 'timestamp,tag,value\n2026-01-01T00:00:01Z,A.x,1\n2026-01-01T00:00:02Z,A.x,2\n1767225603,A.x,3\n' \
    > other/rec.csv
printf 'timestamp,A.x\n2026-01-01T00:00:01Z,1\n2026-01-01T00:00:02Z,two\n' > other/bad.csv
expect 1 "ok   other/feed_test.lua: feed" \
    'other/feed_test.lua:10: t:feed: other/bad.csv:3:22: bad value "two"' "1 passed, 1 failed" -- \
    "$DOPPEL" test other/feed_test.lua

[ "$failures" -eq 0 ] || { echo "$failures failures"; exit 1; }
echo "all doppel test checks passed"
