/*
 * ldap.h: the LDAPv3 front-end's protocol core (public names gh_ldap_*).
 *
 * Requests are framed and decoded with OpenLDAP's liblber (ber_get_next on a
 * memory Sockbuf, ber_scanf), replies encoded with ber_printf: no BER is
 * written by hand. A session is one connection's protocol state (its
 * resumable decoder, its bound identity's view, its paged-results cookies);
 * it knows nothing of sockets or libuv. The listener (server/ldap_conn.c)
 * feeds it bytes, runs each decoded request against a read transaction and
 * writes the bytes the session appends to a gh_ldap_out.
 *
 * The one thing to know: a gh_ldap_req points into the BerElement it was
 * decoded from (in-place strings); it lives until gh_ldap_req_free, and the
 * bind password in it is wiped there.
 */
#ifndef GH_LDAP_H
#define GH_LDAP_H

#include <stddef.h>
#include <stdint.h>

#include <lber.h>

#include "schema/store.h"

#define GH_LDAP_OID_PAGED "1.2.840.113556.1.4.319"
#define GH_LDAP_OID_WHOAMI "1.3.6.1.4.1.4203.1.11.3"
#define GH_LDAP_OID_PASSWD "1.3.6.1.4.1.4203.1.11.1"
#define GH_LDAP_OID_STARTTLS "1.3.6.1.4.1.1466.20037"
#define GH_LDAP_OID_IN_CHAIN "1.2.840.113556.1.4.1941"
#define GH_LDAP_MAX_CTRLS 16
#define GH_LDAP_FILTER_DEPTH 32 /* nesting of and/or/not */
#define GH_LDAP_FILTER_NODES 512
#define GH_LDAP_MAX_ATTRS 256 /* attribute names in one search */

/* Request kinds (the protocolOp), independent of liblber's tag values. */
typedef enum gh_ldap_op {
    GH_LDAP_BIND = 1,
    GH_LDAP_UNBIND,
    GH_LDAP_SEARCH,
    GH_LDAP_MODIFY,
    GH_LDAP_ADD,
    GH_LDAP_DELETE,
    GH_LDAP_MODDN,
    GH_LDAP_COMPARE,
    GH_LDAP_ABANDON,
    GH_LDAP_EXTENDED
} gh_ldap_op;

typedef struct gh_ldap gh_ldap;
typedef struct gh_ldap_session gh_ldap_session;
typedef struct gh_ldap_filter gh_ldap_filter;

typedef struct gh_ldap_opts {
    const char *suffix; /* "dc=gatehouse" when NULL */
    size_t max_message; /* bytes per request (0: 1 MiB) */
    size_t max_scan;    /* entries a search may examine without an index (0: 100000) */
    /* homeDirectory, loginShell, gecos and a user's gidNumber: what NSS serves
     * (gh_user_posix_*), from these and the user's own fields */
    gh_posix_defaults posix; /* NULL strings: "/home/%u", "/bin/sh" */
    const char *vendor_ver;  /* vendorVersion in the RootDSE */
} gh_ldap_opts;

typedef struct gh_ldap_ctrl {
    struct berval oid;
    int critical;
    int has_value;
    struct berval value;
} gh_ldap_ctrl;

typedef struct gh_ldap_req {
    int msgid;
    gh_ldap_op op;
    int bad;         /* 0, or the LDAP result code to answer (protocolError...) */
    const char *why; /* text for bad */
    BerElement *ber; /* owns the bytes every berval below points into */
    size_t nctrls;
    gh_ldap_ctrl ctrls[GH_LDAP_MAX_CTRLS];
    struct {
        int version;
        int simple; /* 0: SASL (not supported) */
        struct berval dn;
        struct berval cred; /* the password: wiped by gh_ldap_req_free */
    } bind;
    struct {
        struct berval base;
        int scope; /* 0 base, 1 one, 2 sub */
        int sizelimit, timelimit, typesonly;
        gh_ldap_filter *filter;
        uint64_t filter_hash; /* of the filter's encoding (paging cookies) */
        struct berval *attrs;
        size_t nattrs;
    } search;
    struct {
        struct berval dn, attr, value;
    } compare;
    int abandon_id;
    struct {
        struct berval oid;
        int has_value;
        struct berval value;
    } ext;
} gh_ldap_req;

/* Reply bytes appended by the session; the server takes them. */
typedef struct gh_ldap_out {
    char *buf;
    size_t len, cap;
} gh_ldap_out;

/* What the bound identity may see, decided by the server per request. */
typedef struct gh_ldap_access {
    int bound; /* a user is bound (else anonymous) */
    uint64_t user_id;
    int see_all; /* admin, or read on ldap/directory */
} gh_ldap_access;

/* ---- the shared front-end (suffix, schema), read-only after creation ---- */
int gh_ldap_new(gh_ldap **out, const gh_ldap_opts *opts);
void gh_ldap_free(gh_ldap *l);
const char *gh_ldap_suffix(const gh_ldap *l);

/* ---- sessions ---- */
int gh_ldap_session_new(gh_ldap *l, gh_ldap_session **out);
void gh_ldap_session_free(gh_ldap_session *s);

/* Decodes the next request from buf[0..len): *used gets the bytes consumed
 * (the decoder keeps a partial message between calls). Returns 1 with *req
 * set (caller frees with gh_ldap_req_free; req->bad may ask for an error
 * reply), 0 when more input is needed (all of buf consumed), GH_ETOOBIG for
 * a message over max_message, GH_EBADREQ when the stream is not LDAP (then
 * the connection must be closed after gh_ldap_notice_disconnect). */
int gh_ldap_session_next(gh_ldap_session *s, const char *buf, size_t len, size_t *used,
                         gh_ldap_req **req);
void gh_ldap_req_free(gh_ldap_req *r);
/* The request's control with this OID, or NULL. */
const gh_ldap_ctrl *gh_ldap_req_ctrl(const gh_ldap_req *r, const char *oid);
/* First critical control that is not one of the NULL-terminated known OIDs. */
const gh_ldap_ctrl *gh_ldap_req_unknown_critical(const gh_ldap_req *r, const char *const *known);

/* Decodes one request from a whole buffer, without a session (fuzzing). */
int gh_ldap_decode(const char *buf, size_t len, size_t max_message, size_t *used,
                   gh_ldap_req **req);

/* ---- names ---- */
/* The login a bind DN names: "uid=NAME,ou=people,<suffix>", or a bare
 * NAME when bare is set. GH_ENOTFOUND when the DN is not a user's. */
int gh_ldap_dn_user(const gh_ldap *l, const struct berval *dn, int bare, char *name, size_t len);
/* A user's DN into buf. */
void gh_ldap_user_dn(const gh_ldap *l, const char *name, char *buf, size_t len);
/* Rewrites name (a login from a DN or a bind, uid being caseIgnore) to the
 * stored spelling: the name as written when it exists, else the one login
 * equal to it ignoring ASCII case; GH_ENOTFOUND when none, or when several
 * logins differ from it only in case (ambiguous: name is left as it was). */
int gh_ldap_user_canonical(gh_txn *txn, char *name, size_t size);

/* ---- operations on a read transaction ---- */
/* Appends the entries and the SearchResultDone (with the paged-results
 * response control when asked). *code gets the result code. */
int gh_ldap_search(gh_ldap_session *s, gh_txn *txn, const gh_ldap_req *r, const gh_ldap_access *a,
                   gh_ldap_out *out, int *code);
/* Appends the CompareResponse. */
int gh_ldap_compare(gh_ldap_session *s, gh_txn *txn, const gh_ldap_req *r, const gh_ldap_access *a,
                    gh_ldap_out *out, int *code);

/* Password Modify request value: identity (may be empty), old, new (berval
 * pointing into r; lengths 0 when absent). GH_EINVAL when malformed. */
typedef struct gh_ldap_passwd {
    struct berval id, oldpw, newpw;
    BerElement *ber; /* owns the above; free with gh_ldap_passwd_free */
} gh_ldap_passwd;
int gh_ldap_passwd_parse(const gh_ldap_req *r, gh_ldap_passwd *p);
void gh_ldap_passwd_free(gh_ldap_passwd *p);

/* ---- replies ---- */
/* LDAPResult of the response matching req op (BindResponse, ...). */
int gh_ldap_reply_result(gh_ldap_out *out, const gh_ldap_req *r, int code, const char *matched,
                         const char *text);
/* ExtendedResponse: oid and value may be NULL. */
int gh_ldap_reply_ext(gh_ldap_out *out, int msgid, int code, const char *text, const char *oid,
                      const struct berval *value);
/* Notice of Disconnection (unsolicited, msgid 0). */
int gh_ldap_notice_disconnect(gh_ldap_out *out, int code, const char *text);
void gh_ldap_out_free(gh_ldap_out *out);

/* Result code names for logs and stats ("success", "noSuchObject"...). */
const char *gh_ldap_result_name(int code);
const char *gh_ldap_op_name(gh_ldap_op op);

#endif
