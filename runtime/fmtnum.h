/* Doubles as text for machines: the shortest decimal that reads back (strtod)
 * to exactly the same double, without printf's cost. */
#ifndef DP_FMTNUM_H
#define DP_FMTNUM_H

#include <stddef.h>

/* Buffer size that holds any output, "-2.2250738585072014e-308" and the NUL
 * included. */
#define DP_FMTNUM_SIZE 32

/* Writes `d` into `buf` (NUL-terminated) and returns the length.
 *
 * The text has the fewest significant digits of any decimal that strtod reads
 * back as `d` (0.1 is "0.1"; never more than 17 digits), and of those the one
 * closest to `d`. Style, like "%g" without trailing zeros:
 *   - an integer with |d| < 2^53 as an integer ("42", "-7", "0", "-0");
 *   - plain notation when 1e-4 <= |d| < 1e17 ("0.001", "12.5",
 *     "36028797018963970");
 *   - otherwise an exponent with a sign and at least two digits ("1e+20",
 *     "2.5e-07", "4.9406564584124654e-324");
 *   - "nan", "-nan", "inf", "-inf" as glibc's printf writes them (JSON
 *     writers must handle non-finite values themselves).
 * The same double always gives the same text. Thread-safe, no allocation. */
size_t dp_fmtnum(double d, char buf[DP_FMTNUM_SIZE]);

#endif
