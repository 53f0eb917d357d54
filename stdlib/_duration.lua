--- Internal to the doppel stdlib: durations ("250ms", "5s", "10min", "1h30min",
--- "7d", "1.5s", or a number of seconds) to seconds. In a twin it is the
--- runtime's duration(); elsewhere (test files, the plant file) the same
--- grammar parsed here. Raises on a malformed or negative duration.
local units = { us = 1e-6, ms = 1e-3, s = 1, min = 60, h = 3600, d = 86400 }

---@param d string|number
---@return number seconds
return function(d)
   if type(d) == "number" then
      if d ~= d or d < 0 then error("bad duration: must be >= 0", 2) end
      return d
   end
   if type(duration) == "function" then return duration(d) end
   if type(d) ~= "string" or d == "" then error("bad duration " .. tostring(d), 2) end
   if tonumber(d) then return tonumber(d) >= 0 and tonumber(d) or error("bad duration " .. d, 2) end
   local total, pos = 0, 1
   while pos <= #d do
      local num, unit, nxt = d:match("^(%d+%.?%d*)(%a+)()", pos)
      if not num or not units[unit] then error(("bad duration %q"):format(d), 2) end
      total = total + tonumber(num) * units[unit]
      pos = nxt
   end
   return total
end
