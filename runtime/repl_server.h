/* The REPL server: `doppel repl` clients attached to a running plant.
 *
 * It listens on a Unix socket in the data dir (mode 0600: only the user
 * running the plant can attach) and, when asked, on a TCP address that
 * requires a token, with TLS when given a certificate and key (required for
 * an address that is not loopback). Each connection speaks the frame protocol of replproto.h
 * (documented in docs/repl.md): evaluation at plant level or in a twin's
 * environment (repl_eval.h), completion, and dot commands. A malformed frame
 * gets an "error" frame and closes that connection only.
 *
 * Everything runs on the loop thread; evaluations run under the instruction
 * budget, so a runaway loop typed at the REPL stalls the loop for at most one
 * budget and the plant keeps running. */
#ifndef DP_REPL_SERVER_H
#define DP_REPL_SERVER_H

#include <uv.h>

#include "plant.h"

typedef struct dp_repl_server dp_repl_server_t;

typedef struct {
    const char *socket_path; /* Unix socket; an existing stale socket is replaced */
    const char *listen;      /* "HOST:PORT" for TCP; NULL: no TCP listener */
    const char *token;       /* required (non-empty) when listen is set */
    const char *cert, *key;  /* PEM files: TLS on the TCP listener; NULL: plain text,
                                allowed on a loopback address only */
} dp_repl_opts_t;

/* Starts listening. Returns NULL with *err set when a listener cannot be
 * opened (path too long, socket in use by another running doppel, address
 * taken, TCP without a token, plain text on an address that is not loopback,
 * a certificate or key that cannot be loaded). The plant must outlive the server. */
dp_repl_server_t *dp_repl_server_new(uv_loop_t *loop, dp_plant_t *plant, const dp_repl_opts_t *opts,
                                     char **err);
/* Stops listening, removes the socket file and closes every connection
 * (their handles close when the loop runs next). Idempotent. Call it before
 * dp_plant_stop()/dp_plant_free(), then run the loop. */
void dp_repl_server_close(dp_repl_server_t *s);
/* Frees the server after dp_repl_server_close() and a loop run. Accepts NULL. */
void dp_repl_server_free(dp_repl_server_t *s);

/* Number of open client connections. */
int dp_repl_server_clients(const dp_repl_server_t *s);
/* The TCP port actually bound (useful with port 0), or 0. */
int dp_repl_server_tcp_port(const dp_repl_server_t *s);

#endif
