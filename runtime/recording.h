/* Recordings: CSV files of timestamped samples, read one sample at a time in
 * time order. Used by `doppel replay` and by `t:feed` in `doppel test`.
 *
 * Two layouts, told apart by the header (the first line that is neither
 * blank nor a '#' comment):
 *
 *   long:  timestamp,tag,value[,quality]
 *          2026-01-01T00:00:01Z,P101.flow,121.4
 *          2026-01-01T00:00:01Z,P101.running,true,good
 *
 *   wide:  timestamp,P101.flow,P101.head       (one column per tag)
 *          2026-01-01T00:00:01Z,121.4,46.2     (an empty cell: no sample)
 *
 * The first header field is "timestamp" (or "time" or "ts"). A timestamp is
 * ISO 8601 UTC ("2026-01-01T00:00:01Z", optional fraction, "Z" or nothing) or
 * seconds since the epoch ("1767225601.5"). Rows must be in time order (equal
 * timestamps are fine). A value is a number, true or false, or a string in
 * double quotes ("" inside quotes is one quote); anything else is an error.
 * Quality is good (default), uncertain or bad.
 *
 * Every malformed line is an error "path:line:column: what was wrong". */
#ifndef DP_RECORDING_H
#define DP_RECORDING_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "store.h"

typedef struct dp_recording dp_recording_t;

typedef struct {
    dp_time_t ts;
    /* The tag, as a small dense key (0, 1, ...): the column in a wide file,
     * the n-th distinct tag name seen in a long file. Its name is
     * dp_recording_key_name(). Callers map keys to store handles once. */
    int key;
    dp_value_t v; /* a string value is valid until the next call */
    int quality;  /* DP_Q_* */
    int line;     /* where the value was read, for messages */
    int col;
} dp_rec_sample_t;

/* Opens a recording and reads its header. Returns NULL with *err naming the
 * file (and line:column for a bad header). */
dp_recording_t *dp_recording_open(const char *path, char **err);
/* Accepts NULL. */
void dp_recording_free(dp_recording_t *r);

/* Reads the next sample: returns 1 with *out filled, 0 at the end, or a
 * negative error with *err = "path:line:column: what was wrong". After an
 * error the recording stays at the end. */
int dp_recording_next(dp_recording_t *r, dp_rec_sample_t *out, char **err);

bool dp_recording_wide(const dp_recording_t *r);
/* Number of keys so far (wide: every column is known after open). */
int dp_recording_keys(const dp_recording_t *r);
const char *dp_recording_key_name(const dp_recording_t *r, int key);
/* Column (1-based character position) of a wide file's header cell for
 * `key`, for messages about unknown tags; 0 in a long file. */
int dp_recording_key_col(const dp_recording_t *r, int key);
const char *dp_recording_path(const dp_recording_t *r);
/* Bytes read so far and the file's size, for progress. */
uint64_t dp_recording_offset(const dp_recording_t *r);
uint64_t dp_recording_size(const dp_recording_t *r);

/* Parses a plain decimal ("-12.5", "3e4") exactly as strtod would, without
 * strtod's cost, for the common short forms; false for anything else. */
bool dp__parse_decimal(const char *s, double *out);

#endif
