/* `doppel repl`: the client side of the REPL (repl_server.h is the plant's
 * side; docs/repl.md describes both and the protocol between them). */
#ifndef DP_CMD_REPL_H
#define DP_CMD_REPL_H

#include <stdbool.h>

typedef struct {
    const char *data_dir; /* the plant's data dir: its socket is DATA_DIR/repl.sock */
    const char *eval;    /* -e EXPR: evaluate, print, exit (non-zero on error); NULL: interactive */
    const char *connect; /* "HOST:PORT": TCP instead of the Unix socket (token from
                            DOPPEL_REPL_TOKEN); NULL: Unix socket */
    bool tls;            /* TLS over `connect`, the plant's certificate checked */
    const char *ca;      /* PEM file of CAs to trust; NULL: the system's */
} dp_repl_client_opts_t;

/* Runs the client; returns the process exit status. */
int dp_cmd_repl(int argc, char **argv, const dp_repl_client_opts_t *opts);

#endif
