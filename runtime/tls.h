/* OpenSSL pieces shared by the TLS servers (HTTP, the REPL's TCP listener)
 * and the REPL client. */
#ifndef DP_TLS_H
#define DP_TLS_H

#include <openssl/ssl.h>

/* The reason of the first queued OpenSSL error that has one (a system error,
 * such as a file that cannot be opened, has none), or `fallback`; the queue
 * is cleared. */
const char *dp_tls_reason(const char *fallback);

/* A server context: TLS 1.2 or newer, no compression, the certificate chain
 * and the key (PEM files) loaded and checked against each other. NULL with
 * *err = "PREFIX: cannot load certificate FILE: REASON" (or the key, or "key
 * FILE does not match certificate FILE"). */
SSL_CTX *dp_tls_server_new(const char *cert, const char *key, const char *prefix, char **err);

#endif
