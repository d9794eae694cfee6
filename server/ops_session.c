/*
 * ops_session.c: session.list and session.revoke, an administrator's view of
 * the tokens (sessions) a user holds.
 *
 * The one thing to know: a session is named by an id that is a keyed hash of
 * the stored token hash (which is itself a keyed hash of the token), cut to
 * 8 bytes of hex. The id is stable for the token's life, lets an operator
 * revoke one session, and cannot be turned back into the token or its hash:
 * nothing here ever puts the token or its hash on the wire or in the log.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "schema/log.h"
#include "server/server.h"

#define SESSION_ID_BYTES 8
#define SESSION_ID_HEX (SESSION_ID_BYTES * 2 + 1)

static void session_id(gh_server *srv, const uint8_t hash[GH_TOKEN_HASH_BYTES],
                       char out[SESSION_ID_HEX])
{
    uint8_t id[SESSION_ID_BYTES];

    crypto_generichash(id, sizeof(id), hash, GH_TOKEN_HASH_BYTES, srv->token_key,
                       sizeof(srv->token_key));
    sodium_bin2hex(out, SESSION_ID_HEX, id, sizeof(id));
}

static int session_user(gh_opctx *c, gh_user *u)
{
    const char *name;
    int rc = gh_arg_str(c, "user", 1, GH_NAME_MAX, &name);
    if (rc != 0)
        return rc;
    rc = gh_store_user_get(c->txn, name, u);
    if (rc == GH_ENOTFOUND)
        return gh_op_fail(c, rc, "no user named '%s'", name);
    if (rc != 0)
        return gh_op_fail(c, rc, "cannot read user '%s'", name);
    return 0;
}

/* ---- session.list ---- */

typedef struct session_vec {
    gh_token *v;
    size_t n, cap;
    int64_t now;
    int nomem;
} session_vec;

static int collect(const gh_token *t, void *arg)
{
    session_vec *sv = arg;
    if (t->expires != 0 && t->expires <= sv->now)
        return 0; /* dead already; housekeeping purges it */
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 16;
        gh_token *p = realloc(sv->v, cap * sizeof(*p));
        if (p == NULL) {
            sv->nomem = 1;
            return 1;
        }
        sv->v = p;
        sv->cap = cap;
    }
    sv->v[sv->n++] = *t;
    return 0;
}

static int by_created(const void *a, const void *b)
{
    const gh_token *x = a, *y = b;
    if (x->created != y->created)
        return x->created < y->created ? -1 : 1;
    return memcmp(x->hash, y->hash, sizeof(x->hash));
}

static int op_session_list(gh_opctx *c)
{
    gh_user u;
    session_vec sv = {.now = c->now};
    int rc = session_user(c, &u);
    if (rc != 0)
        return rc;
    rc = gh_store_token_list_user(c->txn, u.id, collect, &sv);
    if (rc == 0 && sv.nomem)
        rc = GH_ENOMEM;
    if (rc != 0) {
        free(sv.v);
        return gh_op_fail(c, rc, "cannot read the sessions of '%s'", u.name);
    }
    if (sv.n > 1)
        qsort(sv.v, sv.n, sizeof(*sv.v), by_created);
    json_t *arr = json_array();
    for (size_t i = 0; i < sv.n; i++) {
        char id[SESSION_ID_HEX];
        session_id(c->srv, sv.v[i].hash, id);
        json_array_append_new(arr, json_pack("{s:s, s:I, s:I, s:s}", "id", id, "created",
                                             (json_int_t)sv.v[i].created, "expires_at",
                                             (json_int_t)sv.v[i].expires, "peer", sv.v[i].peer));
    }
    if (sv.v != NULL)
        sodium_memzero(sv.v, sv.n * sizeof(*sv.v));
    free(sv.v);
    json_object_set_new(c->resp, "user", json_string(u.name));
    json_object_set_new(c->resp, "sessions", arr);
    return 0;
}

/* ---- session.revoke ---- */

typedef struct revoke_arg {
    /* input, never written by apply (it may run more than once) */
    char user[GH_NAME_MAX + 1];
    int one;
    uint8_t hash[GH_TOKEN_HASH_BYTES];
    char id[SESSION_ID_HEX];
    /* output of the last run */
    size_t revoked;
} revoke_arg;

static void revoke_free(void *arg)
{
    sodium_memzero(arg, sizeof(revoke_arg));
    free(arg);
}

static int revoke_reply(void *arg, json_t *resp)
{
    revoke_arg *a = arg;
    json_object_set_new(resp, "revoked", json_integer((json_int_t)a->revoked));
    return 0;
}

/* An administrator ending sessions is audited (the user, and the session id
 * when one): a login is not, which is why the store leaves tokens unlogged. */
static int log_revoke(gh_txn *txn, const char *user, const char *id)
{
    char target[GH_NAME_MAX + SESSION_ID_HEX + 2];
    snprintf(target, sizeof(target), "%s%s%s", user, id ? "#" : "", id ? id : "");
    return gh_store_changelog_append(txn, "session.revoke", target);
}

static int revoke_apply(gh_txn *txn, void *arg)
{
    revoke_arg *a = arg;
    gh_user u;
    gh_token t;
    size_t n = 0;
    int rc = gh_store_user_get(txn, a->user, &u);

    a->revoked = 0;
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no user named '%s'", a->user);
    if (rc != 0)
        return rc;
    if (a->one) {
        rc = gh_store_token_get(txn, a->hash, &t);
        if (rc == 0 && t.user_id != u.id)
            rc = GH_ENOTFOUND;
        if (rc == 0)
            rc = gh_store_token_del(txn, a->hash);
        if (rc == GH_ENOTFOUND)
            return gh_txn_fail(txn, rc, "no session %s of user '%s'", a->id, a->user);
        if (rc != 0)
            return rc;
        n = 1;
        rc = log_revoke(txn, a->user, a->id);
    } else {
        rc = gh_store_token_revoke_user(txn, u.id, &n);
        if (rc == 0)
            rc = log_revoke(txn, a->user, NULL);
    }
    if (rc == 0)
        a->revoked = n;
    return rc;
}

typedef struct find_id {
    gh_server *srv;
    const char *want;
    uint8_t hash[GH_TOKEN_HASH_BYTES];
    int found;
} find_id;

static int match_id(const gh_token *t, void *arg)
{
    find_id *f = arg;
    char id[SESSION_ID_HEX];
    session_id(f->srv, t->hash, id);
    if (strcmp(id, f->want) != 0)
        return 0;
    memcpy(f->hash, t->hash, sizeof(f->hash));
    f->found = 1;
    return 1;
}

static int op_session_revoke(gh_opctx *c)
{
    gh_user u;
    const char *id = NULL;
    int rc = session_user(c, &u);
    if (rc != 0)
        return rc;
    rc = gh_arg_str(c, "id", 0, SESSION_ID_HEX - 1, &id);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    revoke_arg *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    snprintf(a->user, sizeof(a->user), "%s", u.name);
    if (id != NULL) {
        /* The id names a token of this user in the snapshot; the write
         * checks again that it is still there and still this user's. */
        find_id f = {.srv = c->srv, .want = id};
        rc = gh_store_token_list_user(c->txn, u.id, match_id, &f);
        if (rc == 0 && !f.found)
            rc = gh_op_fail(c, GH_ENOTFOUND, "no session %s of user '%s'", id, u.name);
        else if (rc != 0)
            rc = gh_op_fail(c, rc, "cannot read the sessions of '%s'", u.name);
        if (rc != 0) {
            revoke_free(a);
            return rc;
        }
        a->one = 1;
        memcpy(a->hash, f.hash, sizeof(a->hash));
        snprintf(a->id, sizeof(a->id), "%s", id);
        sodium_memzero(f.hash, sizeof(f.hash));
    }
    return gh_op_defer(c, revoke_apply, revoke_reply, revoke_free, a);
}

const gh_op_def gh__ops_session[] = {
    {"session.list", op_session_list, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {"session.revoke", op_session_revoke, GH_OPF_ADMIN | GH_OPF_WRITE, GH_CLASS_ADMIN},
    {NULL, NULL, 0, GH_CLASS_ADMIN},
};
