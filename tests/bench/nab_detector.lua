local detect = require "doppel.detect"
return function()
   return detect.zscore { size = 200 }
end
