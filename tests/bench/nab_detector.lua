-- The detector bench_nab streams every NAB series through (one per series).
local detect = require "doppel.detect"
return function()
   return detect.auto()
end
