-- luacheck configuration: the globals a twin, module or plant file sees.
std = "lua54"
max_line_length = 100
read_globals = {
   "twin", "params", "log", "clock", "duration",
   "plant", "device",
   -- tags.x = v writes a derived tag, so fields of tags may be set.
   tags = { other_fields = true, read_only = false },
}
globals = { "state" }
