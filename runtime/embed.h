/* Files embedded in the binary at build time: the Lua stdlib, the bundled
 * twin classes and the demo plant. */
#ifndef DP_EMBED_H
#define DP_EMBED_H

#include <stddef.h>

typedef struct {
    const char *path; /* relative to the source root: "twins/centrifugal_pump.lua" */
    const char *data; /* NUL-terminated */
    size_t len;
} dp_embed_file_t;

/* Terminated by an entry with path NULL. */
extern const dp_embed_file_t dp_embed_files[];

/* The embedded file at `path`, or NULL. */
const dp_embed_file_t *dp_embed_find(const char *path);

#endif
