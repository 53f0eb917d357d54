/* The HTTP server: JSON API, live stream (Server-Sent Events), dashboard,
 * /metrics and /healthz, on the plant's own libuv loop (h2o, libuv flavour).
 *
 * Configured in the plant file:
 *
 *   plant { http = { listen = "127.0.0.1:8080",
 *                    tls = { cert = "server.crt", key = "server.key" },
 *                    tokens = "tokens.txt" } }
 *
 * HTTP/1.1 always; HTTP/2 over TLS (ALPN). Bearer tokens carry a role:
 * viewer (read), operator (commands, alarm acknowledgement and shelving) or
 * engineer (reload, guard switches). Tokens are configured as SHA-256 hashes;
 * with none configured, only read access from loopback is allowed. The API is
 * described in docs/openapi.yaml and docs/http.md. */
#ifndef DP_HTTP_H
#define DP_HTTP_H

#include <lua.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "embed.h"

struct dp_plant;

typedef enum { DP_ROLE_NONE = 0, DP_ROLE_VIEWER, DP_ROLE_OPERATOR, DP_ROLE_ENGINEER } dp_role_t;

typedef struct {
    char name[64];
    dp_role_t role;
    unsigned char hash[32]; /* SHA-256 of the token */
} dp_http_token_t;

/* Settings of plant { http = { ... } }. Paths are as written; relative ones
 * are resolved against the plant file's folder by dp_http_cfg_set_dir(). */
typedef struct dp_http_cfg {
    char *listen;      /* "HOST:PORT"; default "127.0.0.1:8080" */
    char *cert, *key;  /* TLS when both are set */
    char *tokens_file; /* lines "NAME ROLE SHA256HEX" */
    dp_http_token_t *tokens;
    int ntokens;
    int64_t max_body;    /* bytes; default 65536 */
    double rate;         /* requests per second per client address; default 50 */
    double burst;        /* default 100 */
    int64_t max_streams; /* concurrent live streams; default 256 */
    int64_t max_conns;   /* open connections; default 512 */
    int64_t history_max; /* samples per history request; default 10000 */
    char *dir;           /* folder for relative paths */
} dp_http_cfg_t;

/* DP_SET_CUSTOM parser for the plant's `http` field: `field` is a
 * dp_http_cfg_t ** that receives a new configuration. */
int dp_http_cfg_parse(lua_State *L, int idx, void *field, char **err);
/* DP_SET_CUSTOM free: frees *(dp_http_cfg_t **)field and sets it NULL. */
void dp_http_cfg_field_free(void *field);
void dp_http_cfg_free(dp_http_cfg_t *cfg);
void dp_http_cfg_set_dir(dp_http_cfg_t *cfg, const char *dir);

/* Parses "HOST:PORT" or "[V6]:PORT" ("localhost" is 127.0.0.1). */
int dp_http_parse_listen(const char *s, struct sockaddr_storage *ss, char **err);
/* Checks the settings as a whole once tokens are loaded: a listen address
 * beyond loopback needs TLS and at least one token. */
int dp_http_cfg_check(const dp_http_cfg_t *cfg, char **err);

/* Reads a token file (lines "NAME ROLE SHA256HEX", '#' comments) and appends
 * its tokens to cfg. Errors name the file and line. */
int dp_http_tokens_load(dp_http_cfg_t *cfg, const char *path, char **err);
/* The token matching `token` (compared by hash in constant time) or NULL. */
const dp_http_token_t *dp_http_token_find(const dp_http_cfg_t *cfg, const char *token, size_t len);
const char *dp_role_name(dp_role_t role);
int dp_role_parse(const char *s); /* DP_ROLE_* or DP_EINVAL */
/* SHA-256 as 64 lowercase hex digits into out[65]. */
void dp_sha256_hex(const void *data, size_t len, char out[65]);
int dp_hex_decode(const char *hex, unsigned char *out, size_t n);

typedef struct dp_http dp_http_t;

/* Starts listening on the plant's loop. Returns NULL with *err when the
 * address cannot be bound or TLS files cannot be loaded. */
dp_http_t *dp_http_start(uv_loop_t *loop, struct dp_plant *plant, const dp_http_cfg_t *cfg,
                         char **err);
/* Stops listening, ends live streams and closes every connection; the
 * memory is freed once the loop has closed the handles (run the loop
 * afterwards). After this returns, the plant is no longer used. Accepts NULL. */
void dp_http_stop(dp_http_t *http);
/* The bound port (useful with port 0). */
int dp_http_port(const dp_http_t *http);

/* Dashboard files embedded at build time (runtime/web and npm packages). */
extern const dp_embed_file_t dp_http_assets[];

#endif
