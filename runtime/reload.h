/* Hot reload: watches script files through libuv fs events on their
 * directories (editors often replace a file by renaming, which a watch on the
 * file itself would miss) and reports each changed file once its writes have
 * settled for a short debounce interval. */
#ifndef DP_RELOAD_H
#define DP_RELOAD_H

#include <uv.h>

typedef struct dp_reload dp_reload_t;
/* `path` is the canonical path given to dp_reload_watch(). */
typedef void (*dp_reload_cb)(const char *path, void *ud);

/* debounce_ms 0: 50 ms. */
dp_reload_t *dp_reload_new(uv_loop_t *loop, unsigned debounce_ms, dp_reload_cb cb, void *ud);
/* Watches a file (idempotent). Files inside the binary ("embed:") are ignored.
 * Returns 0 or a UV_E* error. */
int dp_reload_watch(dp_reload_t *r, const char *path);
/* Closes handles; memory is freed once their close callbacks ran. */
void dp_reload_free(dp_reload_t *r);

/* Canonical form of a path for comparisons (realpath of its directory plus the
 * file name); writes into buf and returns it, or the input when it fails. */
const char *dp_reload_canonical(const char *path, char *buf, size_t size);

#endif
