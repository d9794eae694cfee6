/*
 * tls.c: OpenSSL 3 sessions over memory BIOs (see tls.h).
 *
 * Each session has a read BIO (ciphertext the peer sent, written by us) and a
 * write BIO (ciphertext OpenSSL produced, read by us). SSL_read drives the
 * handshake; the after-read of the connection then sends the write BIO's
 * content. Errors are logged here with OpenSSL's reason, returned as GH_EIO.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "schema/error.h"
#include "schema/log.h"
#include "server/tls.h"

struct gh_tls_ctx {
    SSL_CTX *ctx;
};

struct gh_tls {
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    int failed;
};

int gh_tls_buf_append(gh_tls_buf *b, const char *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + n)
            cap *= 2;
        /* not realloc: the buffer may hold plaintext (passwords) */
        char *q = malloc(cap);
        if (q == NULL)
            return GH_ENOMEM;
        if (b->buf != NULL) {
            memcpy(q, b->buf, b->len);
            OPENSSL_cleanse(b->buf, b->cap);
            free(b->buf);
        }
        b->buf = q;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return 0;
}

void gh_tls_buf_free(gh_tls_buf *b)
{
    if (b->buf != NULL)
        OPENSSL_cleanse(b->buf, b->cap);
    free(b->buf);
    memset(b, 0, sizeof(*b));
}

static void ssl_error(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char reason[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, reason, sizeof(reason));
    snprintf(err, errlen, "%s %s: %s", what, file ? file : "", reason);
    ERR_clear_error();
}

int gh_tls_ctx_new(gh_tls_ctx **out, const char *cert_file, const char *key_file,
                   const char *ca_file, char *err, size_t errlen)
{
    gh_tls_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return GH_ENOMEM;
    c->ctx = SSL_CTX_new(TLS_server_method());
    if (c->ctx == NULL) {
        ssl_error(err, errlen, "SSL_CTX_new", NULL);
        goto fail;
    }
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(c->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
    if (cert_file == NULL || key_file == NULL || !cert_file[0] || !key_file[0]) {
        snprintf(err, errlen, "tls_cert_file and tls_key_file must both be set");
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(c->ctx, cert_file) != 1) {
        ssl_error(err, errlen, "tls_cert_file", cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(c->ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(c->ctx) != 1) {
        ssl_error(err, errlen, "tls_key_file", key_file);
        goto fail;
    }
    if (ca_file && ca_file[0]) {
        if (SSL_CTX_load_verify_locations(c->ctx, ca_file, NULL) != 1) {
            ssl_error(err, errlen, "tls_ca_file", ca_file);
            goto fail;
        }
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL); /* asked, not required */
    }
    *out = c;
    return 0;
fail:
    gh_tls_ctx_free(c);
    return GH_EINVAL;
}

void gh_tls_ctx_free(gh_tls_ctx *c)
{
    if (c == NULL)
        return;
    if (c->ctx)
        SSL_CTX_free(c->ctx);
    free(c);
}

int gh_tls_new(gh_tls_ctx *ctx, gh_tls **out)
{
    gh_tls *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return GH_ENOMEM;
    t->ssl = SSL_new(ctx->ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        if (t->rbio)
            BIO_free(t->rbio);
        if (t->wbio)
            BIO_free(t->wbio);
        if (t->ssl)
            SSL_free(t->ssl);
        free(t);
        return GH_ENOMEM;
    }
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    *out = t;
    return 0;
}

void gh_tls_free(gh_tls *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl);
    free(t);
}

int gh_tls_read(gh_tls *t, const char *in, size_t len, gh_tls_buf *plain)
{
    char buf[16384];
    if (t->failed)
        return GH_EIO;
    if (len > 0 && BIO_write(t->rbio, in, (int)len) != (int)len)
        return GH_ENOMEM;
    for (;;) {
        int n = SSL_read(t->ssl, buf, sizeof(buf));
        if (n > 0) {
            int rc = gh_tls_buf_append(plain, buf, (size_t)n);
            OPENSSL_cleanse(buf, (size_t)n);
            if (rc != 0)
                return rc;
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return 0;
        if (e == SSL_ERROR_ZERO_RETURN)
            return GH_EIO; /* close_notify: the peer is done */
        unsigned long err = ERR_get_error();
        char reason[256] = "connection error";
        if (err)
            ERR_error_string_n(err, reason, sizeof(reason));
        GH_LOGD("tls: %s", reason);
        ERR_clear_error();
        t->failed = 1;
        return GH_EIO;
    }
}

int gh_tls_write(gh_tls *t, const char *plain, size_t len)
{
    size_t off = 0;
    if (t->failed)
        return GH_EIO;
    while (off < len) {
        int n = SSL_write(t->ssl, plain + off, (int)(len - off > 1u << 30 ? 1u << 30 : len - off));
        if (n <= 0) {
            ERR_clear_error();
            t->failed = 1;
            return GH_EIO;
        }
        off += (size_t)n;
    }
    return 0;
}

int gh_tls_take(gh_tls *t, gh_tls_buf *wire)
{
    char *p;
    long n = BIO_get_mem_data(t->wbio, &p);
    if (n <= 0)
        return 0;
    int rc = gh_tls_buf_append(wire, p, (size_t)n);
    (void)BIO_reset(t->wbio);
    return rc;
}

void gh_tls_shutdown(gh_tls *t)
{
    if (!t->failed && SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl);
    ERR_clear_error();
}
