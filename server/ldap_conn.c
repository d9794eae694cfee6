/*
 * ldap_conn.c: the LDAP listeners (ldapi, ldap with StartTLS, ldaps) and
 * their connections, over the protocol core in ldap/.
 *
 * A connection reads into its input buffer and hands the bytes (decrypted
 * first when TLS is on) to its gh_ldap_session, one request at a time.
 * Searches, compares and WhoAmI run at once in a read transaction; a bind or
 * a password change goes to the Argon2 pool and the connection stops
 * decoding until it completes, so replies keep request order and a request
 * after a bind runs as the new identity (RFC 4511 4.2.1).
 *
 * The one thing to know: a connection is freed only in its close callback
 * and only when no job of it is pending (c->pending); a job that completes
 * after the connection closed just drops its result.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "ldap/ldap.h"
#include "schema/log.h"
#include "server/server.h"
#include "server/tls.h"

enum { L_LDAPI = 1, L_LDAP, L_LDAPS };
#define LDAP_NCODES 81
#define LDAP_NOPS 11

typedef struct lconn lconn;

typedef struct llistener {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } h;
    struct gh_ldap_srv *ls;
    int kind;
    char path[256]; /* ldapi: unlinked on stop */
    struct llistener *next;
} llistener;

typedef struct gh_ldap_srv {
    gh_server *srv;
    gh_ldap *core;
    gh_tls_ctx *tls;
    llistener *listeners;
    lconn *conns;
    unsigned nconns;
    uint64_t total;
    uint64_t ops[LDAP_NOPS];
    uint64_t codes[LDAP_NCODES];
    uint64_t binds_ok, binds_fail;
} gh_ldap_srv;

struct lconn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } h;
    gh_ldap_srv *ls;
    lconn *prev, *next;
    gh_ldap_session *sess;
    gh_tls *tls;
    int kind;
    char peer[64];    /* for logs: "ldapi:uid=1000", "tcp:127.0.0.5" */
    char peerkey[64]; /* limits and lockout: the JSON listeners' key (gh__peer_key) */
    int peer_counted; /* in the per-peer table (gh__peer_add) */
    gh_tls_buf in;    /* plaintext not yet decoded */
    size_t in_off;
    /* identity */
    int bound;
    uint64_t user_id;
    char user[GH_NAME_MAX + 1];
    gh_ldap_access acc; /* what it may see, valid while acc_gen is the store's authz gen */
    uint64_t acc_gen;
    int acc_valid;
    gh_ldap_out out; /* replies of this turn, written once by conn_flush */
    /* state */
    unsigned pending; /* Argon2 jobs and writes of this connection in flight */
    int busy;         /* a bind or password change is running: decoding waits */
    int in_process;   /* conn_process is on the stack */
    int closing, closed, reading;
    size_t out_bytes;
};

static void conn_close(lconn *c);
static void conn_process(lconn *c);
static int start_reading(lconn *c);

/* ---- output ---- */

typedef struct wreq {
    uv_write_t req;
    lconn *c;
    size_t len;
    char data[];
} wreq;

static void conn_maybe_free(lconn *c);

static void on_written(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    lconn *c = w->c;
    c->pending--;
    c->out_bytes -= w->len;
    free(w);
    if (status != 0 && !c->closing)
        conn_close(c);
    else if (c->closing)
        conn_maybe_free(c);
    else if (!c->reading && !c->busy && c->out_bytes < c->ls->srv->cfg->max_output) {
        conn_process(c);
    }
}

static int send_raw(lconn *c, const char *p, size_t n)
{
    if (n == 0 || c->closed)
        return 0;
    wreq *w = malloc(sizeof(*w) + n);
    if (w == NULL)
        return GH_ENOMEM;
    memcpy(w->data, p, n);
    w->c = c;
    w->len = n;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, &c->h.stream, &b, 1, on_written) != 0) {
        free(w);
        return GH_EIO;
    }
    c->pending++;
    c->out_bytes += n;
    return 0;
}

/* Writes the replies gathered this turn (through TLS when on): one write
 * per batch of pipelined requests. */
static int conn_flush(lconn *c)
{
    gh_ldap_out *out = &c->out;
    int rc = 0;
    if (out->len == 0)
        return 0;
    if (c->tls) {
        gh_tls_buf wire = {0};
        rc = gh_tls_write(c->tls, out->buf, out->len);
        if (rc == 0)
            rc = gh_tls_take(c->tls, &wire);
        if (rc == 0)
            rc = send_raw(c, wire.buf, wire.len);
        gh_tls_buf_free(&wire);
    } else {
        rc = send_raw(c, out->buf, out->len);
    }
    out->len = 0;
    if (out->cap > (1u << 20)) /* do not keep a huge search's buffer */
        gh_ldap_out_free(out);
    return rc;
}

/* Queues out's bytes behind the replies of this turn and empties out. */
static int conn_send(lconn *c, gh_ldap_out *out)
{
    if (out->len == 0)
        return 0;
    if (c->out.len == 0 && c->out.cap == 0) {
        /* take the buffer itself: no copy */
        c->out = *out;
        memset(out, 0, sizeof(*out));
        return 0;
    }
    if (c->out.len + out->len > c->out.cap) {
        size_t cap = c->out.cap ? c->out.cap : 4096;
        while (cap < c->out.len + out->len)
            cap *= 2;
        char *p = realloc(c->out.buf, cap);
        if (p == NULL)
            return GH_ENOMEM;
        c->out.buf = p;
        c->out.cap = cap;
    }
    memcpy(c->out.buf + c->out.len, out->buf, out->len);
    c->out.len += out->len;
    out->len = 0;
    return 0;
}

/* ---- accounting and logging ---- */

static void count(lconn *c, const gh_ldap_req *r, int code, const char *what)
{
    gh_ldap_srv *ls = c->ls;
    if ((unsigned)r->op < LDAP_NOPS)
        ls->ops[r->op]++;
    if (code >= 0 && code < LDAP_NCODES)
        ls->codes[code]++;
    GH_LOGD("ldap %s: %s #%d%s%s -> %s", c->peer, gh_ldap_op_name(r->op), r->msgid,
            what && what[0] ? " " : "", what ? what : "", gh_ldap_result_name(code));
}

static int reply(lconn *c, const gh_ldap_req *r, int code, const char *text)
{
    gh_ldap_out out = {0};
    int rc = gh_ldap_reply_result(&out, r, code, "", text);
    if (rc == 0)
        rc = conn_send(c, &out);
    gh_ldap_out_free(&out);
    count(c, r, code, text);
    return rc;
}

static int reply_ext(lconn *c, const gh_ldap_req *r, int code, const char *text,
                     const struct berval *value)
{
    gh_ldap_out out = {0};
    int rc = gh_ldap_reply_ext(&out, r->msgid, code, text, NULL, value);
    if (rc == 0)
        rc = conn_send(c, &out);
    gh_ldap_out_free(&out);
    count(c, r, code, text);
    return rc;
}

/* What the bound identity may see: decided per request, so a role granted or
 * revoked applies to open connections at once. */
static void access_of(lconn *c, gh_txn *txn, gh_ldap_access *a)
{
    gh_server *srv = c->ls->srv;
    gh_user u;
    uint64_t gen = 0;
    /* every write that can change the answer (roles, bindings, memberships,
     * user state, deletions) bumps the authz generation */
    int have_gen = gh_store_authz_gen(txn, &gen) == 0;
    if (have_gen && c->acc_valid && c->acc_gen == gen) {
        *a = c->acc;
        return;
    }
    memset(a, 0, sizeof(*a));
    if (have_gen) {
        c->acc_gen = gen;
        c->acc_valid = 1;
    }
    c->acc = *a;
    if (!c->bound || gh_store_user_get_by_id(txn, c->user_id, &u) != 0 ||
        u.state != GH_USER_ACTIVE || u.tombstone)
        return;
    a->bound = 1;
    a->user_id = c->user_id;
    int allow = 0;
    if (gh__user_is_admin(srv, txn, c->user_id) == 1)
        a->see_all = 1;
    else if (gh_authz_check(srv->authz, txn, c->user_id, "read", "ldap/directory", &allow) == 0)
        a->see_all = allow;
    c->acc = *a;
}

/* ---- bind ---- */

typedef struct bind_job {
    lconn *c;
    gh_ldap_req *r;
} bind_job;

static void bind_done(void *arg, int rc, const gh_user *u)
{
    bind_job *j = arg;
    lconn *c = j->c;
    c->pending--;
    c->busy = 0;
    if (c->closing) {
        gh_ldap_req_free(j->r);
        free(j);
        conn_maybe_free(c);
        return;
    }
    if (rc == 0) {
        c->bound = 1;
        c->acc_valid = 0;
        c->user_id = u->id;
        snprintf(c->user, sizeof(c->user), "%s", u->name);
        c->ls->binds_ok++;
        reply(c, j->r, 0, NULL);
    } else {
        c->ls->binds_fail++;
        int code = rc == GH_ERATE                          ? 51
                   : rc == GH_EUNAVAIL                     ? 52
                   : rc == GH_ENOMEM || rc == GH_EINTERNAL ? 80
                                                           : 49;
        reply(c, j->r, code,
              rc == GH_ELOCKED     ? "account is locked"
              : rc == GH_EDISABLED ? "account is disabled"
              : code == 51         ? "too many failed attempts; retry later"
              : code == 52         ? "the upstream directory is unreachable"
                                   : NULL);
    }
    gh_ldap_req_free(j->r);
    free(j);
    conn_process(c);
}

/* uid is caseIgnore in LDAP, logins are case-sensitive in the store: the
 * login as stored (gh_ldap_user_canonical), or name unchanged when there is
 * none or several (then the bind fails like an unknown user's, after the
 * same Argon2 cost). */
static void canonical_login(gh_server *srv, char *name, size_t size)
{
    gh_txn *txn;
    if (gh_store_read_begin(srv->reader, &txn) != 0)
        return;
    gh_ldap_user_canonical(txn, name, size);
    gh_store_read_end(srv->reader);
}

/* Returns 1 when the request was taken by an asynchronous job. */
static int do_bind(lconn *c, gh_ldap_req *r)
{
    gh_server *srv = c->ls->srv;
    char name[GH_NAME_MAX + 1] = "";
    c->bound = 0; /* a bind, even a failing one, drops the previous identity */
    c->user[0] = '\0';
    c->acc_valid = 0;
    if (r->bind.version != 3) {
        reply(c, r, 2, "only LDAPv3 is supported");
        return 0;
    }
    if (!r->bind.simple) {
        reply(c, r, 7, "only simple binds are supported");
        return 0;
    }
    if (r->bind.cred.bv_len == 0) {
        /* anonymous, or an unauthenticated bind (refused, RFC 4513 5.1.2) */
        reply(c, r, r->bind.dn.bv_len ? 53 : 0,
              r->bind.dn.bv_len ? "unauthenticated bind is not allowed" : NULL);
        return 0;
    }
    if (gh_ldap_dn_user(c->ls->core, &r->bind.dn, srv->cfg->ldap_bind_by_uid, name, sizeof(name)) !=
        0)
        name[0] = '\0'; /* verified against the dummy hash: same cost, fails */
    else
        canonical_login(srv, name, sizeof(name));
    bind_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        reply(c, r, 80, "out of memory");
        return 0;
    }
    j->c = c;
    j->r = r;
    /* counted before the call: the callback may run inside it (an upstream
     * that cannot be asked answers at once) */
    c->pending++;
    c->busy = 1;
    int rc = gh__auth_verify(srv, name, c->peerkey, r->bind.cred.bv_val, r->bind.cred.bv_len,
                             bind_done, j);
    if (rc != 0) {
        c->pending--;
        c->busy = 0;
        free(j);
        c->ls->binds_fail++;
        reply(c, r, rc == GH_ERATE ? 51 : 80,
              rc == GH_ERATE ? "too many authentications in progress or failed attempts" : NULL);
        return 0;
    }
    return 1;
}

/* ---- Password Modify ---- */

typedef struct pw_job {
    lconn *c;
    gh_ldap_req *r;
    uint64_t target;
    char name[GH_NAME_MAX + 1];
    char *newpw; /* sodium_malloc'd */
    size_t newlen;
    char expect[GH_VERIFIER_MAX + 1];   /* the verifier verified (or read): compare-and-set */
    char verifier[GH_VERIFIER_MAX + 1]; /* the new one */
} pw_job;

static void pw_job_free(pw_job *j)
{
    if (j->newpw)
        sodium_free(j->newpw);
    gh_ldap_req_free(j->r);
    sodium_memzero(j, sizeof(*j));
    free(j);
}

static void pw_finish(pw_job *j, int code, const char *text)
{
    lconn *c = j->c;
    c->pending--;
    c->busy = 0;
    if (!c->closing)
        reply_ext(c, j->r, code, text, NULL);
    pw_job_free(j);
    if (c->closing)
        conn_maybe_free(c);
    else
        conn_process(c);
}

/* Exactly what passwd.change and user.passwd write: the new verifier only if
 * the stored one is still the one verified (or read, for an admin reset),
 * and every token of the user revoked in the same txn. Reads j only. */
static int pw_apply(gh_txn *txn, void *arg)
{
    const pw_job *j = arg;
    gh_user u;
    int rc = gh_store_user_get_by_id(txn, j->target, &u);
    if (rc == 0 && u.tombstone)
        rc = GH_ENOTFOUND;
    if (rc == 0)
        rc = gh__password_store(txn, &u, j->expect, j->verifier, NULL);
    else if (rc == GH_ENOTFOUND)
        rc = gh_txn_fail(txn, rc, "the user is gone");
    sodium_memzero(&u, sizeof(u));
    return rc;
}

static void pw_written(void *arg, int rc, const char *err)
{
    pw_job *j = arg;
    if (rc != 0)
        GH_LOGW("ldap password change of %s failed: %s", j->name, err);
    else
        GH_LOGI("ldap: password of %s changed by %s", j->name, j->c->user);
    pw_finish(j,
              rc == 0              ? 0
              : rc == GH_ENOTFOUND ? 32
              : rc == GH_ECREDS    ? 49
                                   : 80,
              rc == 0           ? NULL
              : rc == GH_ECREDS ? err
                                : "cannot store the password");
}

static void pw_hashed(void *arg, int rc, const char *verifier)
{
    pw_job *j = arg;
    gh_server *srv = j->c->ls->srv;
    if (rc != 0) {
        pw_finish(j, rc == GH_ERATE ? 51 : 80, "cannot hash the password");
        return;
    }
    snprintf(j->verifier, sizeof(j->verifier), "%s", verifier);
    char actor[GH_NAME_MAX + 16];
    snprintf(actor, sizeof(actor), "user:%s", j->c->user);
    if (gh_writer_submit(srv->writer, actor, pw_apply, j, pw_written, j) != 0)
        pw_finish(j, 52, "the server is shutting down");
}

static void pw_old_verified(void *arg, int rc, const gh_user *u)
{
    pw_job *j = arg;
    gh_server *srv = j->c->ls->srv;
    if (rc != 0) {
        pw_finish(j, rc == GH_ERATE ? 51 : 49, "the old password is wrong");
        return;
    }
    if (j->c->closing) {
        pw_finish(j, 80, NULL);
        return;
    }
    if (u->id != j->target) { /* renamed since: another user now has that name */
        pw_finish(j, 49, "the user changed meanwhile; try again");
        return;
    }
    memcpy(j->expect, u->verifier, sizeof(j->expect));
    if (gh__hash_password(srv, j->newpw, j->newlen, pw_hashed, j) != 0)
        pw_finish(j, 51, "too many password operations in progress");
}

static int do_passwd(lconn *c, gh_ldap_req *r)
{
    gh_txn *txn = NULL;
    gh_server *srv = c->ls->srv;
    gh_ldap_passwd p;
    gh_user target;
    gh_ldap_access a;
    char name[GH_NAME_MAX + 1];
    int code = 0, taken = 0;
    const char *text = NULL;
    pw_job *j = NULL;

    if (gh_ldap_passwd_parse(r, &p) != 0) {
        gh_ldap_passwd_free(&p);
        reply_ext(c, r, 2, "malformed Password Modify request", NULL);
        return 0;
    }
    if (gh_store_read_begin(srv->reader, &txn) != 0) {
        txn = NULL;
        code = 80;
        goto done;
    }
    access_of(c, txn, &a);
    if (!a.bound) {
        code = 50;
        text = "bind first";
        goto done;
    }
    if (p.id.bv_len == 0) {
        snprintf(name, sizeof(name), "%s", c->user);
    } else {
        struct berval id = p.id;
        if (id.bv_len > 3 && strncmp(id.bv_val, "dn:", 3) == 0) {
            id.bv_val += 3;
            id.bv_len -= 3;
        } else if (id.bv_len > 2 && strncmp(id.bv_val, "u:", 2) == 0) {
            id.bv_val += 2;
            id.bv_len -= 2;
        }
        if (gh_ldap_dn_user(c->ls->core, &id, 1, name, sizeof(name)) != 0) {
            code = 32;
            text = "no such user";
            goto done;
        }
    }
    if (gh_ldap_user_canonical(txn, name, sizeof(name)) != 0 ||
        gh_store_user_get(txn, name, &target) != 0 || target.tombstone) {
        code = 32;
        text = "no such user";
        goto done;
    }
    int self = target.id == c->user_id;
    int admin = gh__user_is_admin(srv, txn, c->user_id) == 1;
    if (!self && !admin) {
        code = 50;
        text = "only an administrator may change another user's password";
        goto done;
    }
    if (target.origin[0] != '\0') {
        code = 53;
        text = "the password is owned by the upstream directory";
        goto done;
    }
    if (p.newpw.bv_len == 0) {
        code = 53;
        text = "password generation is not supported: send the new password";
        goto done;
    }
    if (p.newpw.bv_len < srv->cfg->password_min_length || p.newpw.bv_len > 4096) {
        code = 19;
        text = "the new password is too short or too long";
        goto done;
    }
    if (!admin && p.oldpw.bv_len == 0) {
        code = 53;
        text = "the old password is required";
        goto done;
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL || (j->newpw = sodium_malloc(p.newpw.bv_len + 1)) == NULL) {
        free(j);
        j = NULL;
        code = 80;
        goto done;
    }
    memcpy(j->newpw, p.newpw.bv_val, p.newpw.bv_len);
    j->newpw[p.newpw.bv_len] = '\0';
    j->newlen = p.newpw.bv_len;
    j->c = c;
    j->r = r;
    j->target = target.id;
    snprintf(j->name, sizeof(j->name), "%s", target.name);
    memcpy(j->expect, target.verifier, sizeof(j->expect)); /* an admin reset's; a verify's own */
    gh_store_read_end(srv->reader); /* gh__auth_verify reads with the same reader */
    txn = NULL;
    int rc;
    c->pending++; /* before the call: its callback may run inside it */
    c->busy = 1;
    taken = 1;
    if (!admin || p.oldpw.bv_len > 0)
        rc = gh__auth_verify(srv, target.name, c->peerkey, p.oldpw.bv_val, p.oldpw.bv_len,
                             pw_old_verified, j);
    else
        rc = gh__hash_password(srv, j->newpw, j->newlen, pw_hashed, j);
    if (rc != 0) {
        c->pending--;
        c->busy = 0;
        taken = 0;
        j->r = NULL;
        pw_job_free(j);
        code = 51;
        text = "too many password operations in progress";
        goto done;
    }
done:
    if (txn)
        gh_store_read_end(srv->reader);
    sodium_memzero(target.verifier, sizeof(target.verifier));
    gh_ldap_passwd_free(&p);
    if (!taken)
        reply_ext(c, r, code, text, NULL);
    return taken;
}

/* ---- StartTLS ---- */

static int do_starttls(lconn *c, gh_ldap_req *r)
{
    if (c->tls || c->kind != L_LDAP) {
        reply_ext(c, r, 1, "TLS is already on or not available here", NULL);
        return 0;
    }
    if (c->ls->tls == NULL) {
        reply_ext(c, r, 52, "no TLS certificate is configured", NULL);
        return 0;
    }
    gh_ldap_out out = {0};
    int rc = gh_ldap_reply_ext(&out, r->msgid, 0, NULL, GH_LDAP_OID_STARTTLS, NULL);
    if (rc == 0)
        rc = conn_send(c, &out);
    if (rc == 0)
        rc = conn_flush(c); /* in clear: TLS starts after this response */
    gh_ldap_out_free(&out);
    count(c, r, 0, "StartTLS");
    if (rc == 0)
        rc = gh_tls_new(c->ls->tls, &c->tls);
    if (rc != 0) {
        conn_close(c);
        return 0;
    }
    /* bytes after the request were the client's first TLS records */
    if (c->in_off < c->in.len) {
        gh_tls_buf plain = {0};
        gh_tls_buf wire = {0};
        size_t left = c->in.len - c->in_off;
        char *rest = malloc(left);
        if (rest == NULL) {
            conn_close(c);
            return 0;
        }
        memcpy(rest, c->in.buf + c->in_off, left);
        c->in.len = c->in_off = 0;
        rc = gh_tls_read(c->tls, rest, left, &plain);
        free(rest);
        if (rc == 0)
            rc = gh_tls_take(c->tls, &wire);
        if (rc == 0)
            rc = send_raw(c, wire.buf, wire.len);
        if (rc == 0 && plain.len)
            rc = gh_tls_buf_append(&c->in, plain.buf, plain.len);
        gh_tls_buf_free(&plain);
        gh_tls_buf_free(&wire);
        if (rc != 0)
            conn_close(c);
    }
    return 0;
}

/* ---- dispatch of one request ---- */

static const char *const known_ctrls[] = {GH_LDAP_OID_PAGED, NULL};

/* A search or a compare decodes user and group records with jansson: from
 * this loop's arena (no malloc and no wiping free per value), wiped and
 * rewound once the operation has answered. NULL: the arena is not used. */
static gh_jarena *op_arena_begin(int op)
{
    gh_loop *lp = gh__loop_self();
    if ((op != GH_LDAP_SEARCH && op != GH_LDAP_COMPARE) || lp == NULL ||
        gh_jarena_begin(&lp->jarena) != 0)
        return NULL;
    return &lp->jarena;
}

static void op_arena_end(gh_jarena *a)
{
    if (a == NULL)
        return;
    gh_jarena_end(a);
    if (a->used > 0 && gh_jarena_reset(a) == GH_EINUSE)
        GH_LOGD("ldap: a record value outlived its operation (jansson arena pinned)");
}

/* Returns 1 when r was taken by a job (do not free it), 0 otherwise. */
static int handle(lconn *c, gh_ldap_req *r)
{
    gh_server *srv = c->ls->srv;
    gh_txn *txn = NULL;
    gh_ldap_access a;
    gh_ldap_out out = {0};
    int code = 0, taken = 0, rc;

    if (r->op == GH_LDAP_UNBIND) {
        count(c, r, 0, NULL);
        conn_close(c);
        return 0;
    }
    if (r->op == GH_LDAP_ABANDON) {
        /* every operation here completes before the next is read: nothing to
         * stop, and abandon has no response */
        count(c, r, 0, NULL);
        return 0;
    }
    if (r->bad) {
        if (r->op == GH_LDAP_EXTENDED)
            reply_ext(c, r, r->bad, r->why, NULL);
        else
            reply(c, r, r->bad, r->why);
        return 0;
    }
    if (gh_ldap_req_unknown_critical(r, known_ctrls) != NULL) {
        if (r->op == GH_LDAP_EXTENDED)
            reply_ext(c, r, 12, "unsupported critical control", NULL);
        else
            reply(c, r, 12, "unsupported critical control");
        return 0;
    }
    switch (r->op) {
    case GH_LDAP_BIND:
        return do_bind(c, r);
    case GH_LDAP_MODIFY:
    case GH_LDAP_ADD:
    case GH_LDAP_DELETE:
    case GH_LDAP_MODDN:
        reply(c, r, 53, "the directory is read-only over LDAP; use the gatehouse CLI");
        return 0;
    default:
        break;
    }
    if (r->op == GH_LDAP_EXTENDED && r->ext.oid.bv_len == strlen(GH_LDAP_OID_STARTTLS) &&
        memcmp(r->ext.oid.bv_val, GH_LDAP_OID_STARTTLS, r->ext.oid.bv_len) == 0)
        return do_starttls(c, r);
    if (r->op == GH_LDAP_EXTENDED && r->ext.oid.bv_len == strlen(GH_LDAP_OID_PASSWD) &&
        memcmp(r->ext.oid.bv_val, GH_LDAP_OID_PASSWD, r->ext.oid.bv_len) == 0)
        return do_passwd(c, r);
    if ((rc = gh_store_read_begin(srv->reader, &txn)) != 0) {
        if (r->op == GH_LDAP_EXTENDED)
            reply_ext(c, r, 80, "cannot read the store", NULL);
        else
            reply(c, r, 80, "cannot read the store");
        return 0;
    }
    gh_jarena *arena = op_arena_begin(r->op);
    switch (r->op) {
    case GH_LDAP_SEARCH:
        access_of(c, txn, &a);
        rc = gh_ldap_search(c->sess, txn, r, &a, &out, &code);
        op_arena_end(arena); /* before anything else runs on this loop */
        arena = NULL;
        if (rc == 0) {
            conn_send(c, &out);
            count(c, r, code, r->search.base.bv_val);
        } else {
            reply(c, r, 80, "internal error");
        }
        break;
    case GH_LDAP_COMPARE:
        access_of(c, txn, &a);
        rc = gh_ldap_compare(c->sess, txn, r, &a, &out, &code);
        op_arena_end(arena); /* before anything else runs on this loop */
        arena = NULL;
        if (rc == 0) {
            conn_send(c, &out);
            count(c, r, code, r->compare.dn.bv_val);
        } else {
            reply(c, r, 80, "internal error");
        }
        break;
    case GH_LDAP_EXTENDED: {
        struct berval *oid = &r->ext.oid;
        if (oid->bv_len == strlen(GH_LDAP_OID_WHOAMI) &&
            memcmp(oid->bv_val, GH_LDAP_OID_WHOAMI, oid->bv_len) == 0) {
            char dn[GH_DN_MAX + 8] = "";
            access_of(c, txn, &a);
            if (a.bound) {
                memcpy(dn, "dn:", 3);
                gh_ldap_user_dn(c->ls->core, c->user, dn + 3, sizeof(dn) - 3);
            }
            struct berval v = {strlen(dn), dn};
            reply_ext(c, r, 0, NULL, &v);
        } else {
            reply_ext(c, r, 2, "unsupported extended operation", NULL);
        }
        break;
    }
    default:
        reply(c, r, 2, "unsupported operation");
        break;
    }
    op_arena_end(arena);
    gh_store_read_end(srv->reader);
    gh_ldap_out_free(&out);
    return taken;
}

static void conn_process_now(lconn *c);

/* Decodes and runs requests until the input runs out or a job is pending.
 * A job that completes inside a request's handler (synchronously) finds the
 * loop already running and leaves the rest to it. */
static void conn_process(lconn *c)
{
    if (c->in_process)
        return;
    c->in_process = 1;
    conn_process_now(c);
    c->in_process = 0;
}

static void conn_process_now(lconn *c)
{
    gh_server *srv = c->ls->srv;
    while (!c->closing && !c->busy && c->in_off < c->in.len &&
           c->out_bytes < srv->cfg->max_output) {
        gh_ldap_req *r = NULL;
        size_t used = 0;
        int rc =
            gh_ldap_session_next(c->sess, c->in.buf + c->in_off, c->in.len - c->in_off, &used, &r);
        c->in_off += used;
        if (rc == 0)
            break;
        if (rc < 0) {
            gh_ldap_out out = {0};
            GH_LOGD("ldap %s: %s; disconnecting", c->peer,
                    rc == GH_ETOOBIG ? "message over ldap_max_message" : "not LDAP");
            c->ls->codes[2]++;
            if (gh_ldap_notice_disconnect(
                    &out, 2, rc == GH_ETOOBIG ? "message too large" : "malformed message") == 0)
                conn_send(c, &out);
            gh_ldap_out_free(&out);
            conn_close(c);
            return;
        }
        if (!handle(c, r))
            gh_ldap_req_free(r);
        if (c->out.len > 65536 && conn_flush(c) != 0) {
            conn_close(c);
            return;
        }
    }
    if (!c->closed && conn_flush(c) != 0) {
        conn_close(c);
        return;
    }
    if (c->in_off == c->in.len)
        c->in.len = c->in_off = 0;
    if (c->closing)
        return;
    /* read more only when the input is used up and replies are flowing */
    int want = !c->busy && c->in_off == c->in.len && c->out_bytes < srv->cfg->max_output;
    if (want && !c->reading) {
        start_reading(c);
    } else if (!want && c->reading) {
        uv_read_stop(&c->h.stream);
        c->reading = 0;
    }
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char slab[65536]; /* the loop thread's: consumed before the next read */
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(slab, sizeof(slab));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    lconn *c = s->data;
    int rc = 0;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0 || c->closing)
        return;
    if (c->tls) {
        gh_tls_buf wire = {0};
        rc = gh_tls_read(c->tls, buf->base, (size_t)n, &c->in);
        int trc = gh_tls_take(c->tls, &wire); /* handshake records, alerts */
        if (trc == 0)
            send_raw(c, wire.buf, wire.len);
        gh_tls_buf_free(&wire);
    } else {
        rc = gh_tls_buf_append(&c->in, buf->base, (size_t)n);
    }
    if (rc != 0) {
        conn_close(c);
        return;
    }
    conn_process(c);
}

static int start_reading(lconn *c)
{
    int rc = uv_read_start(&c->h.stream, on_alloc, on_read);
    c->reading = rc == 0;
    return rc;
}

/* ---- lifetime ---- */

static void conn_free(lconn *c)
{
    gh_ldap_srv *ls = c->ls;
    if (c->prev)
        c->prev->next = c->next;
    else
        ls->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ls->nconns--;
    __atomic_fetch_sub(&ls->srv->nconns, 1, __ATOMIC_RELAXED);
    if (c->peer_counted)
        gh__peer_drop(ls->srv, c->peerkey);
    gh_ldap_session_free(c->sess);
    gh_tls_free(c->tls);
    gh_ldap_out_free(&c->out);
    if (c->in.buf)
        sodium_memzero(c->in.buf, c->in.cap);
    gh_tls_buf_free(&c->in);
    free(c);
    if (ls->srv->stopping == 1)
        gh__maybe_finish_shutdown(ls->srv);
}

static void on_conn_closed(uv_handle_t *h)
{
    lconn *c = h->data;
    c->closed = 1;
    conn_maybe_free(c);
}

static void conn_maybe_free(lconn *c)
{
    if (c->closed && c->pending == 0)
        conn_free(c);
}

static void conn_close(lconn *c)
{
    if (c->closing)
        return;
    conn_flush(c); /* a Notice of Disconnection, the last replies */
    c->closing = 1;
    if (c->tls) {
        gh_tls_buf wire = {0};
        gh_tls_shutdown(c->tls);
        if (gh_tls_take(c->tls, &wire) == 0)
            send_raw(c, wire.buf, wire.len);
        gh_tls_buf_free(&wire);
    }
    if (c->reading)
        uv_read_stop(&c->h.stream);
    c->reading = 0;
    uv_close(&c->h.handle, on_conn_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    llistener *l = server->data;
    gh_ldap_srv *ls = l->ls;
    gh_server *srv = ls->srv;
    lconn *c;
    if (status != 0)
        return;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->ls = ls;
    c->kind = l->kind;
    if (l->kind == L_LDAPI)
        uv_pipe_init(srv->loop, &c->h.pipe, 0);
    else
        uv_tcp_init(srv->loop, &c->h.tcp);
    c->h.handle.data = c;
    c->next = ls->conns;
    if (ls->conns)
        ls->conns->prev = c;
    ls->conns = c;
    ls->nconns++;
    /* one pool with the JSON listeners: max_connections (and the descriptors
     * main.c reserves for it) and max_connections_per_peer cover both */
    __atomic_fetch_add(&srv->nconns, 1, __ATOMIC_RELAXED);
    if (uv_accept(server, &c->h.stream) != 0) {
        conn_close(c);
        return;
    }
    ls->total++;
    /* the peer as the JSON listeners key it (lockout, per-peer limit): a uid
     * is one peer on ldapi and the JSON socket, every loopback address one */
    int exempt = 0;
    if (l->kind == L_LDAPI) {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        uv_os_fd_t fd;
        if (uv_fileno(&c->h.handle, &fd) != 0 ||
            getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
            GH_LOGW("ldapi: cannot read peer credentials: refusing connection");
            conn_close(c);
            return;
        }
        gh__peer_key(NULL, cred.uid, c->peerkey, sizeof(c->peerkey), NULL, 0);
        snprintf(c->peer, sizeof(c->peer), "ldapi:uid=%u", (unsigned)cred.uid);
        exempt = cred.uid == 0 || cred.uid == geteuid(); /* as on the JSON socket */
    } else {
        struct sockaddr_storage ss = {0};
        int sl = sizeof(ss);
        uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &sl);
        gh__peer_key((struct sockaddr *)&ss, 0, c->peerkey, sizeof(c->peerkey), c->peer,
                     sizeof(c->peer));
        uv_tcp_nodelay(&c->h.tcp, 1);
    }
    unsigned same_peer = gh__peer_add(srv, c->peerkey);
    c->peer_counted = 1;
    const char *full = NULL;
    if (!exempt && srv->cfg->max_connections_per_peer > 0 &&
        same_peer > srv->cfg->max_connections_per_peer)
        full = "too many connections from this peer (max_connections_per_peer)";
    else if (__atomic_load_n(&srv->nconns, __ATOMIC_RELAXED) > srv->cfg->max_connections)
        full = "too many connections (max_connections)";
    if (full != NULL) { /* say why (in clear: not on ldaps), then close */
        gh_ldap_out out = {0};
        GH_LOGD("ldap %s: %s; disconnecting", c->peer, full);
        if (l->kind != L_LDAPS && gh_ldap_notice_disconnect(&out, 52, full) == 0)
            conn_send(c, &out);
        gh_ldap_out_free(&out);
        conn_close(c);
        return;
    }
    if (srv->stopping || gh_ldap_session_new(ls->core, &c->sess) != 0) {
        conn_close(c);
        return;
    }
    if (l->kind == L_LDAPS && gh_tls_new(ls->tls, &c->tls) != 0) {
        conn_close(c);
        return;
    }
    if (start_reading(c) != 0)
        conn_close(c);
}

/* ---- listeners ---- */

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return 0;
}

static void unescape(const char *in, char *out, size_t len)
{
    size_t n = 0;
    for (; *in && n + 1 < len; in++) {
        unsigned v;
        if (in[0] == '%' && in[1] && in[2] && sscanf(in + 1, "%2x", &v) == 1) {
            out[n++] = (char)v;
            in += 2;
        } else {
            out[n++] = *in;
        }
    }
    out[n] = '\0';
}

static int listen_one(gh_ldap_srv *ls, const char *url)
{
    gh_server *srv = ls->srv;
    llistener *l = calloc(1, sizeof(*l));
    int rc;
    if (l == NULL)
        return GH_ENOMEM;
    l->ls = ls;
    if (strncmp(url, "ldapi://", 8) == 0) {
        l->kind = L_LDAPI;
        if (url[8] == '\0')
            snprintf(l->path, sizeof(l->path), "%s/ldapi", srv->cfg->state_dir);
        else
            unescape(url + 8, l->path, sizeof(l->path));
        uv_pipe_init(srv->loop, &l->h.pipe, 0);
        unlink(l->path);
        rc = uv_pipe_bind(&l->h.pipe, l->path);
        if (rc == 0)
            chmod(l->path, 0666); /* anyone may connect: binds decide who they are */
    } else {
        const char *hp;
        char host[256];
        int port;
        struct sockaddr_storage ss;
        if (strncmp(url, "ldaps://", 8) == 0) {
            l->kind = L_LDAPS;
            hp = url + 8;
            port = 636;
        } else if (strncmp(url, "ldap://", 7) == 0) {
            l->kind = L_LDAP;
            hp = url + 7;
            port = 389;
        } else {
            GH_LOGE("ldap_listen: '%s' is not ldapi://, ldap:// or ldaps://", url);
            free(l);
            return GH_EINVAL;
        }
        if (l->kind == L_LDAPS && ls->tls == NULL) {
            GH_LOGE("ldap_listen: %s needs tls_cert_file and tls_key_file", url);
            free(l);
            return GH_EINVAL;
        }
        /* HOST, HOST:PORT, [V6]:PORT; a trailing '/' is allowed */
        snprintf(host, sizeof(host), "%s", hp);
        char *slash =
            strchr(host[0] == '[' ? strchr(host, ']') ? strchr(host, ']') : host : host, '/');
        if (slash)
            *slash = '\0';
        char *h = host, *colon;
        if (host[0] == '[') {
            char *end = strchr(host, ']');
            if (end == NULL) {
                free(l);
                return GH_EINVAL;
            }
            *end = '\0';
            h = host + 1;
            colon = end[1] == ':' ? end + 1 : NULL;
        } else {
            colon = strrchr(host, ':');
        }
        if (colon) {
            *colon = '\0';
            port = atoi(colon + 1);
        }
        if (h[0] == '\0' || strcmp(h, "localhost") == 0)
            h = "127.0.0.1";
        if (uv_ip4_addr(h, port, (struct sockaddr_in *)&ss) != 0 &&
            uv_ip6_addr(h, port, (struct sockaddr_in6 *)&ss) != 0) {
            GH_LOGE("ldap_listen: '%s': not an IP address", url);
            free(l);
            return GH_EINVAL;
        }
        if (!is_loopback((struct sockaddr *)&ss) && !srv->cfg->ldap_any) {
            GH_LOGE("ldap_listen: %s is not loopback; set ldap_allow_non_loopback = yes", url);
            free(l);
            return GH_EINVAL;
        }
        uv_tcp_init(srv->loop, &l->h.tcp);
        rc = uv_tcp_bind(&l->h.tcp, (struct sockaddr *)&ss, 0);
    }
    l->h.handle.data = l;
    if (rc == 0)
        rc = uv_listen(&l->h.stream, 128, on_connection);
    l->next = ls->listeners;
    ls->listeners = l;
    if (rc != 0) {
        GH_LOGE("ldap_listen: cannot listen on %s: %s", url, uv_strerror(rc));
        return GH_EIO;
    }
    GH_LOGI("ldap: listening on %s%s%s", url, l->kind == L_LDAPI ? " " : "",
            l->kind == L_LDAPI ? l->path : "");
    return 0;
}

int gh__ldap_start(gh_server *srv)
{
    gh_config *cfg = srv->cfg;
    const char *spec = cfg->ldap_listen ? cfg->ldap_listen : "ldapi://";
    char err[512] = "";
    int rc = 0;
    if (spec[0] == '\0')
        return 0;
    gh_ldap_srv *ls = calloc(1, sizeof(*ls));
    if (ls == NULL)
        return GH_ENOMEM;
    ls->srv = srv;
    srv->ldap = ls;
    gh_ldap_opts o = {
        .suffix = cfg->ldap_suffix,
        .max_message = cfg->ldap_max_message,
        .max_scan = cfg->ldap_max_scan,
        .posix = {cfg->home_template, cfg->default_shell, cfg->user_private_groups},
        .vendor_ver = GH_VERSION_STRING,
    };
    if ((rc = gh_ldap_new(&ls->core, &o)) != 0) {
        GH_LOGE("ldap_suffix '%s' is not a DN", cfg->ldap_suffix ? cfg->ldap_suffix : "");
        return rc;
    }
    if (cfg->tls_cert_file && cfg->tls_cert_file[0]) {
        rc = gh_tls_ctx_new(&ls->tls, cfg->tls_cert_file, cfg->tls_key_file, cfg->tls_ca_file, err,
                            sizeof(err));
        if (rc != 0) {
            GH_LOGE("tls: %s", err);
            return rc;
        }
    }
    char *copy = strdup(spec), *save = NULL;
    if (copy == NULL)
        return GH_ENOMEM;
    for (char *tok = strtok_r(copy, " ,\t", &save); tok && rc == 0;
         tok = strtok_r(NULL, " ,\t", &save))
        rc = listen_one(ls, tok);
    free(copy);
    return rc;
}

void gh__ldap_stop(gh_server *srv)
{
    gh_ldap_srv *ls = srv->ldap;
    if (ls == NULL)
        return;
    for (llistener *l = ls->listeners; l; l = l->next) {
        if (!uv_is_closing(&l->h.handle))
            uv_close(&l->h.handle, NULL);
        if (l->kind == L_LDAPI && l->path[0])
            unlink(l->path);
    }
    for (lconn *c = ls->conns, *next; c; c = next) {
        next = c->next;
        conn_close(c);
    }
}

int gh__ldap_busy(gh_server *srv)
{
    return srv->ldap != NULL && srv->ldap->nconns > 0;
}

void gh__ldap_free(gh_server *srv)
{
    gh_ldap_srv *ls = srv->ldap;
    if (ls == NULL)
        return;
    gh__ldap_stop(srv);
    for (int i = 0; i < 4 && ls->conns; i++)
        uv_run(srv->loop, UV_RUN_NOWAIT);
    if (srv->loop)
        uv_run(srv->loop, UV_RUN_NOWAIT); /* listener close callbacks */
    for (llistener *l = ls->listeners, *next; l; l = next) {
        next = l->next;
        free(l);
    }
    gh_tls_ctx_free(ls->tls);
    gh_ldap_free(ls->core);
    free(ls);
    srv->ldap = NULL;
}

json_t *gh__ldap_stats(gh_server *srv)
{
    gh_ldap_srv *ls = srv->ldap;
    json_t *o = json_object(), *ops, *codes;
    if (ls == NULL)
        return o;
    ops = json_object();
    codes = json_object();
    json_object_set_new(o, "connections", json_integer(ls->nconns));
    json_object_set_new(o, "connections_total", json_integer((json_int_t)ls->total));
    json_object_set_new(o, "binds_ok", json_integer((json_int_t)ls->binds_ok));
    json_object_set_new(o, "binds_failed", json_integer((json_int_t)ls->binds_fail));
    for (int i = 1; i < LDAP_NOPS; i++)
        if (ls->ops[i])
            json_object_set_new(ops, gh_ldap_op_name((gh_ldap_op)i),
                                json_integer((json_int_t)ls->ops[i]));
    for (int i = 0; i < LDAP_NCODES; i++) {
        char num[16];
        const char *name = gh_ldap_result_name(i);
        if (ls->codes[i] == 0)
            continue;
        if (strcmp(name, "other") == 0 && i != 80) { /* codes without a name here */
            snprintf(num, sizeof(num), "%d", i);
            name = num;
        }
        json_object_set_new(codes, name, json_integer((json_int_t)ls->codes[i]));
    }
    json_object_set_new(o, "ops", ops);
    json_object_set_new(o, "results", codes);
    return o;
}
