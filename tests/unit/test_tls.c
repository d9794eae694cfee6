/*
 * test_tls.c: unit tests of the server's TLS layer (server/tls.h) with no
 * socket and no LDAP: an OpenSSL client over memory BIOs talks to a gh_tls
 * session, the bytes carried by hand between them, as a connection would.
 *
 * The certificate is made here with OpenSSL (a self-signed P-256 key) and
 * written to a temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "schema/error.h"
#include "server/tls.h"

static char dir[256], cert[300], key[300];

static int make_cert(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "%s/gh-tls-test.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    if (pk == NULL || x == NULL)
        return -1;
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, n);
    if (X509_sign(x, pk, EVP_sha256()) == 0)
        return -1;
    FILE *f = fopen(cert, "w");
    FILE *g = fopen(key, "w");
    if (f == NULL || g == NULL)
        return -1;
    PEM_write_X509(f, x);
    PEM_write_PrivateKey(g, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    fclose(g);
    X509_free(x);
    EVP_PKEY_free(pk);
    return 0;
}

static int cleanup(void **state)
{
    (void)state;
    unlink(cert);
    unlink(key);
    rmdir(dir);
    return 0;
}

typedef struct client {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio;
} client;

static void client_new(client *c, int max_version)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(c->ctx);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    if (max_version) {
        SSL_CTX_set_min_proto_version(c->ctx, TLS1_VERSION);
        SSL_CTX_set_max_proto_version(c->ctx, max_version);
        SSL_CTX_set_security_level(c->ctx, 0);
    }
    c->ssl = SSL_new(c->ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
}

static void client_free(client *c)
{
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
}

/* Carries bytes both ways until nothing moves; returns the server's last
 * gh_tls_read code. plain gets what the server decrypted. */
static int pump(client *c, gh_tls *t, gh_tls_buf *plain)
{
    int rc = 0;
    for (int round = 0; round < 50; round++) {
        char buf[16384];
        int moved = 0;
        SSL_do_handshake(c->ssl);
        int n;
        while ((n = BIO_read(c->wbio, buf, sizeof(buf))) > 0) {
            moved = 1;
            rc = gh_tls_read(t, buf, (size_t)n, plain);
        }
        gh_tls_buf wire = {0};
        assert_int_equal(gh_tls_take(t, &wire), 0);
        if (wire.len) {
            moved = 1;
            BIO_write(c->rbio, wire.buf, (int)wire.len);
        }
        gh_tls_buf_free(&wire);
        if (!moved || rc != 0)
            break;
    }
    return rc;
}

static void test_handshake_and_data(void **state)
{
    gh_tls_ctx *ctx;
    gh_tls *t;
    client c;
    gh_tls_buf plain = {0};
    char err[256] = "", buf[64];
    (void)state;
    assert_int_equal(gh_tls_ctx_new(&ctx, cert, key, NULL, err, sizeof(err)), 0);
    assert_int_equal(gh_tls_new(ctx, &t), 0);
    client_new(&c, 0);
    assert_int_equal(pump(&c, t, &plain), 0);
    assert_int_equal(SSL_is_init_finished(c.ssl), 1);
    assert_true(SSL_version(c.ssl) >= TLS1_2_VERSION);
    /* client -> server */
    assert_int_equal(SSL_write(c.ssl, "ping", 4), 4);
    assert_int_equal(pump(&c, t, &plain), 0);
    assert_int_equal(plain.len, 4);
    assert_memory_equal(plain.buf, "ping", 4);
    /* server -> client */
    assert_int_equal(gh_tls_write(t, "pong!", 5), 0);
    assert_int_equal(pump(&c, t, &plain), 0);
    assert_int_equal(SSL_read(c.ssl, buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "pong!", 5);
    /* close_notify from the client: the session is over */
    SSL_shutdown(c.ssl);
    assert_int_equal(pump(&c, t, &plain), GH_EIO);
    gh_tls_buf_free(&plain);
    gh_tls_free(t);
    client_free(&c);
    gh_tls_ctx_free(ctx);
}

static void test_old_protocol_refused(void **state)
{
    gh_tls_ctx *ctx;
    gh_tls *t;
    client c;
    gh_tls_buf plain = {0};
    char err[256] = "";
    (void)state;
    assert_int_equal(gh_tls_ctx_new(&ctx, cert, key, NULL, err, sizeof(err)), 0);
    assert_int_equal(gh_tls_new(ctx, &t), 0);
    client_new(&c, TLS1_1_VERSION);
    assert_int_equal(pump(&c, t, &plain), GH_EIO);
    assert_int_equal(SSL_is_init_finished(c.ssl), 0);
    /* once failed, it stays failed */
    assert_int_equal(gh_tls_write(t, "x", 1), GH_EIO);
    gh_tls_buf_free(&plain);
    gh_tls_free(t);
    client_free(&c);
    gh_tls_ctx_free(ctx);
}

static void test_garbage_refused(void **state)
{
    gh_tls_ctx *ctx;
    gh_tls *t;
    gh_tls_buf plain = {0};
    char err[256] = "";
    (void)state;
    assert_int_equal(gh_tls_ctx_new(&ctx, cert, key, NULL, err, sizeof(err)), 0);
    assert_int_equal(gh_tls_new(ctx, &t), 0);
    assert_int_equal(gh_tls_read(t, "GET / HTTP/1.0\r\n\r\n", 18, &plain), GH_EIO);
    assert_int_equal(plain.len, 0);
    gh_tls_buf_free(&plain);
    gh_tls_free(t);
    gh_tls_ctx_free(ctx);
}

static void test_bad_files(void **state)
{
    gh_tls_ctx *ctx = NULL;
    char err[256] = "";
    (void)state;
    assert_int_equal(gh_tls_ctx_new(&ctx, "/nonexistent.pem", key, NULL, err, sizeof(err)),
                     GH_EINVAL);
    assert_non_null(strstr(err, "tls_cert_file"));
    assert_int_equal(gh_tls_ctx_new(&ctx, cert, cert, NULL, err, sizeof(err)), GH_EINVAL);
    assert_non_null(strstr(err, "tls_key_file"));
    assert_int_equal(gh_tls_ctx_new(&ctx, cert, NULL, NULL, err, sizeof(err)), GH_EINVAL);
    assert_int_equal(gh_tls_ctx_new(&ctx, cert, key, "/nonexistent-ca.pem", err, sizeof(err)),
                     GH_EINVAL);
    assert_non_null(strstr(err, "tls_ca_file"));
    assert_null(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_data),
        cmocka_unit_test(test_old_protocol_refused),
        cmocka_unit_test(test_garbage_refused),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, make_cert, cleanup);
}
