/* The REPL wire protocol: frames between `doppel repl` and a running plant.
 *
 * A frame is a 4-byte big-endian payload length followed by that many bytes
 * holding exactly one msgpack map with string keys. Key "t" names the message
 * type; the other keys depend on it (docs/repl.md lists them). Unknown keys
 * are ignored, so later versions can add fields; an unknown type, a known key
 * holding the wrong msgpack type, a missing required key, a payload that is
 * not exactly one map, or a length of 0 or above DP_REPL_MAX_FRAME is
 * malformed.
 *
 * The first frame on a connection is the client's "hello" carrying the
 * protocol version (DP_REPL_VERSION); the server answers "hello" or "error".
 *
 * This is a pure codec: no I/O, no Lua, no global state. */
#ifndef DP_REPLPROTO_H
#define DP_REPLPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define DP_REPL_VERSION   1
#define DP_REPL_MAX_FRAME (1u << 20) /* payload bytes */
#define DP_REPL_MAX_ITEMS 4096       /* entries in an "items" array */

typedef enum {
    DP_RM_HELLO = 1, /* both ways: version (client: token; server: text = plant, where) */
    DP_RM_EVAL,      /* client: id, text = Lua source or a .command line */
    DP_RM_COMPLETE,  /* client: id, text = the line up to the cursor */
    DP_RM_CANCEL,    /* client: id of the request to stop (a .watch) */
    DP_RM_OUT,       /* server: id, text = output of a request (print, watch lines) */
    DP_RM_RESULT,    /* server: id, ok, text = result or error with traceback, where */
    DP_RM_ITEMS,     /* server: id, text = the word completed, items = candidates */
    DP_RM_ERROR,     /* server: text; the server closes the connection after it */
} dp_repl_type_t;

/* One message. Strings are NUL-terminated (msgpack strings holding a NUL are
 * refused) and owned by the message after a decode; for an encode the caller
 * owns them. Fields not used by the type are NULL / 0. */
typedef struct {
    dp_repl_type_t type;
    uint32_t version; /* hello */
    uint64_t id;      /* request id chosen by the client, echoed by the server */
    bool ok;          /* result */
    char *text;
    char *where; /* result, hello: "plant" or a twin name (for the prompt) */
    char *token; /* hello (client): the TCP token; NULL on the Unix socket */
    char **items;
    size_t nitems;
} dp_repl_msg_t;

/* "eval", "result", ... or NULL for an invalid type. */
const char *dp_repl_type_name(int type);

/* Encodes one frame (length prefix included) into a malloc'd buffer.
 * DP_EINVAL with *err set for an invalid type, a missing required string, or
 * a payload over DP_REPL_MAX_FRAME. */
int dp_repl_encode(const dp_repl_msg_t *m, char **out, size_t *len, char **err);

/* Decodes the first frame of buf[0..len). Returns 1 with *m filled and
 * *used set to the frame's size, 0 when more bytes are needed (nothing set),
 * or DP_EINVAL with *err saying what is wrong: the connection cannot be
 * resynchronised after that. Free *m with dp_repl_msg_clear(). */
int dp_repl_decode(const char *buf, size_t len, dp_repl_msg_t *m, size_t *used, char **err);

/* Frees what a decode allocated and zeroes *m. Accepts NULL. */
void dp_repl_msg_clear(dp_repl_msg_t *m);

#endif
