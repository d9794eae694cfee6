/*
 * sync_ldap.c: libldap helpers shared by the sync workers and the auth
 * threads: opening a connection with the upstream's TLS and timeout settings,
 * normalising DNs for comparison, and turning upstream keys into text.
 *
 * Everything here blocks (that is why only worker and auth threads call it).
 * A simple bind is never sent with an empty password: RFC 4513 makes it an
 * unauthenticated bind, which "succeeds" without checking anything.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "schema/log.h"
#include "sync/sync-int.h"

static void diag(LDAP *ld, int rc, const char *what, char *err, size_t errlen)
{
    char *msg = NULL;
    if (ld != NULL)
        ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &msg);
    snprintf(err, errlen, "%s: %s%s%s", what, ldap_err2string(rc),
             msg != NULL && msg[0] != '\0' ? " - " : "", msg != NULL ? msg : "");
    ldap_memfree(msg);
}

/* The system's trust store (Debian's ca-certificates), used without ca_file. */
#define SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"
#define SYSTEM_CA_DIR "/etc/ssl/certs"

/* A TLS context of this handle's own, built from our settings only: every
 * TLS option that ldap.conf, ~/.ldaprc or LDAPTLS_* may have put in the
 * defaults is overridden (trust anchors, both file and directory, client
 * certificate, certificate checking, protocol floor), then NEWCTX builds the
 * context. Certificate and host name checks are always on (demand). */
static int tls_setup(LDAP *ld, const struct gh_sync_upstream_cfg *cfg, char *err, size_t errlen)
{
    int demand = LDAP_OPT_X_TLS_DEMAND, server = 0;
    int min = LDAP_OPT_X_TLS_PROTOCOL_TLS1_2;
    const char *cafile = cfg->ca_file[0] != '\0' ? cfg->ca_file : NULL;
    const char *cadir = NULL;
    int ok = 1;

    if (cafile == NULL) {
        if (access(SYSTEM_CA_FILE, R_OK) == 0)
            cafile = SYSTEM_CA_FILE;
        else
            cadir = SYSTEM_CA_DIR;
    }
    ok &= ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand) == LDAP_OPT_SUCCESS;
    ok &= ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, cafile) == LDAP_OPT_SUCCESS;
    ok &= ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTDIR, cadir) == LDAP_OPT_SUCCESS;
    ok &= ldap_set_option(ld, LDAP_OPT_X_TLS_CERTFILE, NULL) == LDAP_OPT_SUCCESS;
    ok &= ldap_set_option(ld, LDAP_OPT_X_TLS_KEYFILE, NULL) == LDAP_OPT_SUCCESS;
    ok &= ldap_set_option(ld, LDAP_OPT_X_TLS_PROTOCOL_MIN, &min) == LDAP_OPT_SUCCESS;
    ok &= ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &server) == LDAP_OPT_SUCCESS;
    if (!ok) {
        snprintf(err, errlen, "cannot set up TLS with %s %s",
                 cadir != NULL ? "the CA directory" : "ca_file", cadir != NULL ? cadir : cafile);
        return LDAP_LOCAL_ERROR;
    }
    return LDAP_SUCCESS;
}

int gh__sync_ldap_open(const struct gh_sync_upstream_cfg *cfg, unsigned timeout, const char *dn,
                       const char *password, size_t pwlen, LDAP **out, char *err, size_t errlen)
{
    LDAP *ld = NULL;
    int v3 = LDAP_VERSION3;
    struct timeval tv = {(time_t)timeout, 0};
    int rc, tls = cfg->starttls || strncasecmp(cfg->uri, "ldaps://", 8) == 0;

    *out = NULL;
    err[0] = '\0';
    if (dn != NULL && pwlen == 0) {
        snprintf(err, errlen, "refusing a simple bind with an empty password");
        return LDAP_INAPPROPRIATE_AUTH;
    }
    rc = ldap_initialize(&ld, cfg->uri);
    if (rc != LDAP_SUCCESS) {
        diag(NULL, rc, cfg->uri, err, errlen);
        return rc;
    }
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    ldap_set_option(ld, LDAP_OPT_RESTART, LDAP_OPT_ON);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    {
        /* a silently dead peer of a persistent search is found by keepalive */
        int idle = 60, probes = 3, interval = 10;
        ldap_set_option(ld, LDAP_OPT_X_KEEPALIVE_IDLE, &idle);
        ldap_set_option(ld, LDAP_OPT_X_KEEPALIVE_PROBES, &probes);
        ldap_set_option(ld, LDAP_OPT_X_KEEPALIVE_INTERVAL, &interval);
    }
    if (tls) {
        rc = tls_setup(ld, cfg, err, errlen);
        if (rc != LDAP_SUCCESS)
            goto fail;
    }
    if (cfg->starttls) {
        rc = ldap_start_tls_s(ld, NULL, NULL);
        if (rc != LDAP_SUCCESS) {
            diag(ld, rc, "StartTLS", err, errlen);
            goto fail;
        }
    }
    if (dn != NULL) {
        struct berval cred;
        cred.bv_val = (char *)password;
        cred.bv_len = pwlen;
        rc = ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
        if (rc != LDAP_SUCCESS) {
            diag(ld, rc, "bind", err, errlen);
            goto fail;
        }
    } else {
        rc = ldap_connect(ld);
        if (rc != LDAP_SUCCESS) {
            diag(ld, rc, "connect", err, errlen);
            goto fail;
        }
    }
    *out = ld;
    return LDAP_SUCCESS;
fail:
    if (tls && (rc == LDAP_CONNECT_ERROR || rc == LDAP_SERVER_DOWN)) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n,
                 " (with TLS: is the server's certificate signed by %s, and does it name the "
                 "host in uri?)",
                 cfg->ca_file[0] != '\0' ? cfg->ca_file : "a CA of the system store");
    }
    ldap_unbind_ext(ld, NULL, NULL);
    return rc;
}

char *gh__sync_dn_norm(const char *dn)
{
    char *n = NULL, *out;
    if (ldap_dn_normalize(dn, LDAP_DN_FORMAT_LDAP, &n, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS ||
        n == NULL) {
        ldap_memfree(n);
        return strdup("");
    }
    out = strdup(n);
    ldap_memfree(n);
    if (out != NULL)
        for (char *p = out; *p != '\0'; p++)
            *p = (char)tolower((unsigned char)*p);
    return out;
}

int gh__sync_key_text(const struct berval *bv, int form, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    /* AD's GUID text: Data1 (4 bytes), Data2, Data3 (2 each) little-endian */
    static const unsigned char guid_order[16] = {3, 2, 1,  0,  5,  4,  7,  6,
                                                 8, 9, 10, 11, 12, 13, 14, 15};
    size_t o = 0;

    if (bv == NULL || bv->bv_len == 0 || outlen < 37)
        return GH_EINVAL;
    if (form != GH__SYNC_KEY_TEXT && bv->bv_len == 16) {
        for (size_t i = 0; i < 16; i++) {
            unsigned char b =
                (unsigned char)bv->bv_val[form == GH__SYNC_KEY_GUID ? guid_order[i] : i];
            if (i == 4 || i == 6 || i == 8 || i == 10)
                out[o++] = '-';
            out[o++] = hex[b >> 4];
            out[o++] = hex[b & 15];
        }
        out[o] = '\0';
        return 0;
    }
    for (size_t i = 0; i < bv->bv_len; i++) {
        unsigned char ch = (unsigned char)bv->bv_val[i];
        if (ch < 0x21 || ch > 0x7e) {
            /* binary: hex of the whole value */
            if (bv->bv_len * 2 + 1 > outlen)
                return GH_EINVAL;
            for (size_t j = 0; j < bv->bv_len; j++) {
                out[2 * j] = hex[(unsigned char)bv->bv_val[j] >> 4];
                out[2 * j + 1] = hex[(unsigned char)bv->bv_val[j] & 15];
            }
            out[2 * bv->bv_len] = '\0';
            return 0;
        }
    }
    if (bv->bv_len + 1 > outlen)
        return GH_EINVAL;
    for (size_t i = 0; i < bv->bv_len; i++)
        out[i] = (char)tolower((unsigned char)bv->bv_val[i]);
    out[bv->bv_len] = '\0';
    return 0;
}

int gh__sync_sid_text(const struct berval *bv, char *out, size_t outlen)
{
    const unsigned char *p = (const unsigned char *)(bv != NULL ? bv->bv_val : NULL);
    uint64_t auth = 0;
    size_t off;
    int n;

    /* revision 1, count of sub-authorities, 48-bit big-endian authority,
     * then each sub-authority as 32 bits little-endian */
    if (p == NULL || bv->bv_len < 8 || p[0] != 1 || bv->bv_len != 8 + 4 * (size_t)p[1] || p[1] > 15)
        return GH_EINVAL;
    for (int i = 2; i < 8; i++)
        auth = auth << 8 | p[i];
    n = snprintf(out, outlen, "S-1-%llu", (unsigned long long)auth);
    if (n < 0 || (size_t)n >= outlen)
        return GH_ETOOBIG;
    off = (size_t)n;
    for (unsigned i = 0; i < p[1]; i++) {
        const unsigned char *s = p + 8 + 4 * i;
        uint32_t v =
            (uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 | (uint32_t)s[3] << 24;
        n = snprintf(out + off, outlen - off, "-%u", v);
        if (n < 0 || (size_t)n >= outlen - off)
            return GH_ETOOBIG;
        off += (size_t)n;
    }
    return 0;
}
