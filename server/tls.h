/*
 * tls.h: TLS for any byte stream of the server, OpenSSL 3 over memory BIOs.
 *
 * The layer never touches a socket: the connection feeds it the ciphertext it
 * read and writes out whatever ciphertext the layer produced (handshake
 * records included), so it fits libuv's read and write callbacks and any
 * protocol (LDAP's ldaps and StartTLS, the JSON TCP listener with tcp_tls).
 * The one thing to know: after every gh_tls_read or gh_tls_write, call
 * gh_tls_take and send what it returns, or the handshake stalls.
 */
#ifndef GH_TLS_H
#define GH_TLS_H

#include <stddef.h>

typedef struct gh_tls_ctx gh_tls_ctx;
typedef struct gh_tls gh_tls;

typedef struct gh_tls_buf {
    char *buf;
    size_t len, cap;
} gh_tls_buf;

/* A server context: certificate chain and key (PEM), optional CA file for
 * client certificates (requested, not required), TLS 1.2 minimum.
 * GH_EINVAL with a message in err when a file cannot be used. */
int gh_tls_ctx_new(gh_tls_ctx **out, const char *cert_file, const char *key_file,
                   const char *ca_file, char *err, size_t errlen);
void gh_tls_ctx_free(gh_tls_ctx *ctx);

int gh_tls_new(gh_tls_ctx *ctx, gh_tls **out);
void gh_tls_free(gh_tls *t);
/* Ciphertext from the peer in; the plaintext it carried appended to plain.
 * GH_EIO when the session failed (handshake or record error): close. */
int gh_tls_read(gh_tls *t, const char *in, size_t len, gh_tls_buf *plain);
/* Plaintext to send: encrypted into the pending ciphertext. */
int gh_tls_write(gh_tls *t, const char *plain, size_t len);
/* Moves the pending ciphertext to the end of wire. */
int gh_tls_take(gh_tls *t, gh_tls_buf *wire);
/* Queues a close_notify (take it and send it before closing). */
void gh_tls_shutdown(gh_tls *t);
int gh_tls_buf_append(gh_tls_buf *b, const char *p, size_t n);
void gh_tls_buf_free(gh_tls_buf *b);

#endif
