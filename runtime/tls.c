#include "tls.h"

#include <openssl/err.h>

#include "common.h"

const char *dp_tls_reason(const char *fallback)
{
    const char *r = NULL;
    unsigned long e;
    while (r == NULL && (e = ERR_get_error()) != 0)
        r = ERR_reason_error_string(e);
    ERR_clear_error();
    return r != NULL ? r : fallback;
}

SSL_CTX *dp_tls_server_new(const char *cert, const char *key, const char *prefix, char **err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        dp_fail(err, DP_EIO, "%s: %s", prefix, dp_tls_reason("no TLS context"));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);
    int rc = 0;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        rc = dp_fail(err, DP_EINVAL, "%s: cannot load certificate %s: %s", prefix, cert,
                     dp_tls_reason("not a readable PEM file"));
    else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        rc = dp_fail(err, DP_EINVAL, "%s: cannot load key %s: %s", prefix, key,
                     dp_tls_reason("not a readable PEM file"));
    else if (SSL_CTX_check_private_key(ctx) != 1)
        rc = dp_fail(err, DP_EINVAL, "%s: key %s does not match certificate %s", prefix, key, cert);
    ERR_clear_error();
    if (rc < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}
