-- Fixture for stdlib/alarm_test.lua and stdlib/cmms_test.lua: twins without
-- devices, fed by the test with t:set.
twin "A" {
   script = "a.lua",
   tags = { level = { unit = "m" }, running = {}, trip = {}, wear = { unit = "mm/s" } },
}
twin "B" { script = "b.lua", tags = { level = { unit = "m" } } }
