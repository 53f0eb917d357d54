/* HTTP settings from the plant file, bearer tokens and their hashes. */
#include <ctype.h>
#include <errno.h>
#include <lauxlib.h>
#include <uv.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http.h"
#include "settings.h"

static const char *const role_names[] = {"none", "viewer", "operator", "engineer"};

const char *dp_role_name(dp_role_t role)
{
    return (unsigned)role < DP_ARRAY_LEN(role_names) ? role_names[role] : "none";
}

int dp_role_parse(const char *s)
{
    for (int i = DP_ROLE_VIEWER; i <= DP_ROLE_ENGINEER; i++) {
        if (s != NULL && strcmp(s, role_names[i]) == 0)
            return i;
    }
    return DP_EINVAL;
}

void dp_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

int dp_hex_decode(const char *hex, unsigned char *out, size_t n)
{
    if (strlen(hex) != 2 * n)
        return DP_EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = (char)tolower((unsigned char)hex[2 * i + (size_t)k]);
            if (c >= '0' && c <= '9')
                v = v * 16 + (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v = v * 16 + (unsigned)(c - 'a' + 10);
            else
                return DP_EINVAL;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

/* Checks and appends one token. */
static int add_token(dp_http_cfg_t *cfg, const char *name, const char *role, const char *hash,
                     char **err)
{
    if (name == NULL || name[0] == '\0' || strlen(name) >= sizeof cfg->tokens[0].name)
        return dp_fail(err, DP_EINVAL, "token name must be 1 to 63 characters");
    for (const char *c = name; *c; c++) {
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.')
            return dp_fail(err, DP_EINVAL, "token name \"%s\": use letters, digits, _ - .", name);
    }
    int r = dp_role_parse(role);
    if (r < 0)
        return dp_fail(err, DP_EINVAL, "token %s: role \"%s\" is not viewer, operator or engineer",
                       name, role ? role : "");
    dp_http_token_t t = {.role = (dp_role_t)r};
    snprintf(t.name, sizeof t.name, "%s", name);
    if (hash == NULL || dp_hex_decode(hash, t.hash, sizeof t.hash) < 0)
        return dp_fail(err, DP_EINVAL,
                       "token %s: sha256 must be 64 hex digits (the SHA-256 of the token, e.g. "
                       "printf %%s TOKEN | sha256sum)",
                       name);
    for (int i = 0; i < cfg->ntokens; i++) {
        if (strcmp(cfg->tokens[i].name, name) == 0)
            return dp_fail(err, DP_EEXIST, "token %s is declared twice", name);
    }
    cfg->tokens = dp_xrealloc(cfg->tokens, sizeof *cfg->tokens * (size_t)(cfg->ntokens + 1));
    cfg->tokens[cfg->ntokens++] = t;
    return 0;
}

int dp_http_tokens_load(dp_http_cfg_t *cfg, const char *path, char **err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return dp_fail(err, DP_ENOENT, "tokens file %s: %s", path, strerror(errno));
    char line[512];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
        lineno++;
        char *hash_sign = strchr(line, '#');
        if (hash_sign != NULL)
            *hash_sign = '\0';
        char *save = NULL;
        char *name = strtok_r(line, " \t\r\n", &save);
        if (name == NULL)
            continue;
        char *role = strtok_r(NULL, " \t\r\n", &save);
        char *hash = strtok_r(NULL, " \t\r\n", &save);
        char *extra = strtok_r(NULL, " \t\r\n", &save);
        char *inner = NULL;
        if (role == NULL || hash == NULL || extra != NULL)
            rc = dp_fail(&inner, DP_EINVAL, "expected NAME ROLE SHA256HEX");
        else
            rc = add_token(cfg, name, role, hash, &inner);
        if (rc < 0)
            dp_fail(err, rc, "%s:%d: %s", path, lineno, inner);
        free(inner);
    }
    fclose(f);
    return rc;
}

const dp_http_token_t *dp_http_token_find(const dp_http_cfg_t *cfg, const char *token, size_t len)
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(token, len, md, &n, EVP_sha256(), NULL);
    const dp_http_token_t *found = NULL;
    for (int i = 0; i < cfg->ntokens; i++) {
        if (CRYPTO_memcmp(md, cfg->tokens[i].hash, sizeof md) == 0)
            found = &cfg->tokens[i];
    }
    return found;
}

/* ---- plant { http = { ... } } ------------------------------------------ */

typedef struct {
    char *cert, *key;
} tls_cfg_t;

static const dp_setting_t tls_settings[] = {
    {.name = "cert",
     .type = DP_SET_STRING,
     .offset = offsetof(tls_cfg_t, cert),
     .required = true,
     .doc = "PEM certificate chain file."},
    {.name = "key",
     .type = DP_SET_STRING,
     .offset = offsetof(tls_cfg_t, key),
     .required = true,
     .doc = "PEM private key file."},
    DP_SETTINGS_END,
};

static int parse_tls(lua_State *L, int idx, void *field, char **err)
{
    dp_http_cfg_t *cfg = (dp_http_cfg_t *)((char *)field - offsetof(dp_http_cfg_t, cert));
    tls_cfg_t t = {0};
    int rc = dp_settings_parse(L, idx, tls_settings, &t, NULL, NULL, err);
    if (rc == 0) {
        cfg->cert = t.cert;
        cfg->key = t.key;
        t.cert = t.key = NULL;
    }
    dp_settings_free(tls_settings, &t);
    return rc;
}

/* tokens = "file" or { { name=, role=, sha256= }, ... } */
static int parse_tokens(lua_State *L, int idx, void *field, char **err)
{
    dp_http_cfg_t *cfg = (dp_http_cfg_t *)((char *)field - offsetof(dp_http_cfg_t, tokens_file));
    if (lua_type(L, idx) == LUA_TSTRING) {
        cfg->tokens_file = dp_xstrdup(lua_tostring(L, idx));
        return 0;
    }
    if (!lua_istable(L, idx))
        return dp_fail(err, DP_EINVAL, "expected a file name or a list of {name=, role=, sha256=}");
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            return dp_fail(err, DP_EINVAL, "token %lld: expected {name=, role=, sha256=}",
                           (long long)i);
        }
        lua_getfield(L, -1, "name");
        lua_getfield(L, -2, "role");
        lua_getfield(L, -3, "sha256");
        int rc = add_token(cfg, lua_tostring(L, -3), lua_tostring(L, -2), lua_tostring(L, -1), err);
        lua_pop(L, 4);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static const dp_setting_t http_settings[] = {
    {.name = "listen",
     .type = DP_SET_STRING,
     .offset = offsetof(dp_http_cfg_t, listen),
     .def = "127.0.0.1:8080",
     .doc = "Address and port (\"127.0.0.1:8080\", \"[::1]:8443\", \"0.0.0.0:8443\")."},
    {.name = "tls",
     .type = DP_SET_CUSTOM,
     .offset = offsetof(dp_http_cfg_t, cert),
     .parse = parse_tls,
     .doc = "{ cert = FILE, key = FILE }: serve HTTPS (HTTP/2 and HTTP/1.1)."},
    {.name = "tokens",
     .type = DP_SET_CUSTOM,
     .offset = offsetof(dp_http_cfg_t, tokens_file),
     .parse = parse_tokens,
     .doc = "A file of lines NAME ROLE SHA256HEX, or a list of { name=, role=, sha256= }."},
    {.name = "max_body",
     .type = DP_SET_INT,
     .offset = offsetof(dp_http_cfg_t, max_body),
     .def = "65536",
     .min = 64,
     .max = 16777216,
     .doc = "Largest request body, in bytes."},
    {.name = "rate",
     .type = DP_SET_NUMBER,
     .offset = offsetof(dp_http_cfg_t, rate),
     .def = "50",
     .min = 0.1,
     .max = 1e6,
     .doc = "Requests per second allowed per client address (token bucket)."},
    {.name = "burst",
     .type = DP_SET_NUMBER,
     .offset = offsetof(dp_http_cfg_t, burst),
     .def = "100",
     .min = 1,
     .max = 1e7,
     .doc = "Requests a client may make at once before the rate applies."},
    {.name = "max_streams",
     .type = DP_SET_INT,
     .offset = offsetof(dp_http_cfg_t, max_streams),
     .def = "256",
     .min = 1,
     .max = 100000,
     .doc = "Concurrent live streams."},
    {.name = "max_connections",
     .type = DP_SET_INT,
     .offset = offsetof(dp_http_cfg_t, max_conns),
     .def = "512",
     .min = 1,
     .max = 100000,
     .doc = "Open connections; more are closed as they come."},
    {.name = "history_max",
     .type = DP_SET_INT,
     .offset = offsetof(dp_http_cfg_t, history_max),
     .def = "10000",
     .min = 1,
     .max = 10000000,
     .doc = "Most samples one history request returns."},
    DP_SETTINGS_END,
};

int dp_http_cfg_parse(lua_State *L, int idx, void *field, char **err)
{
    dp_http_cfg_t *cfg = dp_xcalloc(1, sizeof *cfg);
    int rc = dp_settings_parse(L, idx, http_settings, cfg, NULL, NULL, err);
    if (rc < 0) {
        dp_http_cfg_free(cfg);
        return rc;
    }
    *(dp_http_cfg_t **)field = cfg;
    return 0;
}

void dp_http_cfg_free(dp_http_cfg_t *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->listen);
    free(cfg->cert);
    free(cfg->key);
    free(cfg->tokens_file);
    free(cfg->tokens);
    free(cfg->dir);
    free(cfg);
}

void dp_http_cfg_field_free(void *field)
{
    dp_http_cfg_free(*(dp_http_cfg_t **)field);
    *(dp_http_cfg_t **)field = NULL;
}

void dp_http_cfg_set_dir(dp_http_cfg_t *cfg, const char *dir)
{
    free(cfg->dir);
    cfg->dir = dp_xstrdup(dir);
}

int dp_http_parse_listen(const char *s, struct sockaddr_storage *ss, char **err)
{
    char host[128];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s)
        return dp_fail(err, DP_EINVAL, "listen \"%s\": expected HOST:PORT", s);
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535 || end == colon + 1)
        return dp_fail(err, DP_EINVAL, "listen \"%s\": bad port", s);
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') {
        snprintf(host, sizeof host, "%.*s", (int)(hl - 2), s + 1);
        if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) != 0)
            return dp_fail(err, DP_EINVAL, "listen \"%s\": bad IPv6 address", s);
    } else {
        snprintf(host, sizeof host, "%.*s", (int)hl, s);
        if (strcmp(host, "localhost") == 0)
            snprintf(host, sizeof host, "127.0.0.1");
        if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) != 0)
            return dp_fail(err, DP_EINVAL,
                           "listen \"%s\": bad IPv4 address (use [::1]:PORT for IPv6)", s);
    }
    return 0;
}

/* A TLS file that cannot be read is a mistake `doppel check` can name; a
 * file that reads but is not a valid certificate or key is found when the
 * server starts. */
static int check_readable(const dp_http_cfg_t *cfg, const char *what, const char *path, char **err)
{
    if (path == NULL)
        return 0;
    char *full = path[0] == '/' || cfg->dir == NULL || strncmp(cfg->dir, "embed:", 6) == 0
                     ? dp_xstrdup(path)
                     : dp_xasprintf("%s/%s", cfg->dir, path);
    int rc = 0;
    if (access(full, R_OK) != 0)
        rc = dp_fail(err, DP_EINVAL, "http: tls: cannot read the %s %s: %s", what, full,
                     strerror(errno));
    free(full);
    return rc;
}

int dp_http_cfg_check(const dp_http_cfg_t *cfg, char **err)
{
    if (check_readable(cfg, "certificate", cfg->cert, err) < 0 ||
        check_readable(cfg, "key", cfg->key, err) < 0)
        return DP_EINVAL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    const char *listen = cfg->listen != NULL ? cfg->listen : "127.0.0.1:8080";
    int rc = dp_http_parse_listen(listen, &ss, err);
    if (rc < 0)
        return rc;
    /* Anything reachable beyond this machine needs TLS and a token. */
    if (!dp_is_loopback((const struct sockaddr *)&ss) && (cfg->cert == NULL || cfg->ntokens == 0))
        return dp_fail(err, DP_EINVAL,
                       "http: listen \"%s\" is not a loopback address: it needs tls = { cert =, "
                       "key = } and tokens (docs/http.md)",
                       listen);
    return 0;
}
