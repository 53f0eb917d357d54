-- Internal: small dense linear algebra shared by doppel.detect and
-- doppel.predict. Not part of the documented API.

local sqrt = math.sqrt

local M = {}

--- Cholesky factorisation of a symmetric positive definite k x k matrix, in
--- place: on return the lower triangle of A holds L with A = L L^T. Pivots
--- that are not positive (a singular or nearly singular matrix) are clamped
--- to 1e-12, so the factor always exists.
---@param A number[][]
---@param k integer
function M.cholesky(A, k)
   for j = 1, k do
      local s = A[j][j]
      for p = 1, j - 1 do s = s - A[j][p] * A[j][p] end
      if s <= 0 then s = 1e-12 end
      A[j][j] = sqrt(s)
      for i = j + 1, k do
         local v = A[i][j]
         for p = 1, j - 1 do v = v - A[i][p] * A[j][p] end
         A[i][j] = v / A[j][j]
      end
   end
end

return M
