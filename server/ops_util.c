/*
 * ops_util.c: what every op handler shares: argument readers with uniform
 * error messages, the protocol objects for records, deferral and pending
 * completion, token and admin resolution.
 *
 * Argument readers never trust a type: a string field that arrives as a
 * number is invalid_argument with the field's name, never a crash or a cast.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "schema/log.h"
#include "server/server.h"

int gh_op_fail(gh_opctx *c, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
    va_end(ap);
    return err;
}

int gh_op_defer(gh_opctx *c, gh_store_write_fn apply, int (*reply)(void *arg, json_t *resp),
                void (*free_arg)(void *arg), void *arg)
{
    GH_ASSERT(c->request_ == NULL || c->request_->reply.len == 0);
    c->deferred = 1;
    c->apply = apply;
    c->reply = reply;
    c->free_arg = free_arg;
    c->arg = arg;
    return 0;
}

/* The request's reply line, opened with its id on first use; NULL outside a
 * dispatched request (the fields then go to c->resp). */
static gh_reply *fixed_reply(gh_opctx *c)
{
    gh_pending *p = c->request_;

    if (p == NULL)
        return NULL;
    if (p->reply.len == 0)
        gh__reply_begin_ok(&p->reply, p->id);
    return &p->reply;
}

void gh_op_reply_bool(gh_opctx *c, const char *key, int v)
{
    gh_reply *r = fixed_reply(c);

    if (r != NULL)
        gh__reply_bool(r, key, v);
    else
        json_object_set_new(c->resp, key, json_boolean(v));
}

void gh_op_reply_int(gh_opctx *c, const char *key, int64_t v)
{
    gh_reply *r = fixed_reply(c);

    if (r != NULL)
        gh__reply_int(r, key, v);
    else
        json_object_set_new(c->resp, key, json_integer((json_int_t)v));
}

void gh_op_reply_string(gh_opctx *c, const char *key, const char *s, size_t len)
{
    gh_reply *r = fixed_reply(c);

    if (r != NULL)
        gh__reply_string(r, key, s, len);
    else
        json_object_set_new(c->resp, key, json_stringn(s, len));
}

void gh_op_reply_bools(gh_opctx *c, const char *key, const int *v, size_t n)
{
    gh_reply *r = fixed_reply(c);
    json_t *a;

    if (r != NULL) {
        gh__reply_bools(r, key, v, n);
        return;
    }
    a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_boolean(v[i]));
    json_object_set_new(c->resp, key, a);
}

struct gh_pending *gh_op_pend(gh_opctx *c)
{
    GH_ASSERT(c->request_ == NULL || c->request_->reply.len == 0);
    c->pending = c->request_;
    if (c->pending->state == GH_REQ_RUNNING)
        c->pending->state = GH_REQ_HASHING;
    return c->pending;
}

void gh_op_complete(struct gh_pending *p, int rc, const char *msg, json_t *resp)
{
    gh__pending_finish(p, rc, msg, resp);
    json_decref(resp);
}

int gh_arg_view(const gh_opctx *c, const char *key, gh_fval *out)
{
    json_t *v;

    memset(out, 0, sizeof(*out));
    out->key = key;
    if (c->freq != NULL) {
        const gh_fval *f = gh_freq_get(c->freq, key);
        if (f == NULL)
            return GH_ENOTFOUND;
        *out = *f;
        return 0;
    }
    if ((v = json_object_get(c->req, key)) == NULL)
        return GH_ENOTFOUND;
    switch (json_typeof(v)) {
    case JSON_STRING:
        out->type = GH_FV_STRING;
        out->s = json_string_value(v);
        out->len = json_string_length(v);
        break;
    case JSON_INTEGER:
        out->type = GH_FV_INT;
        out->i = (int64_t)json_integer_value(v);
        break;
    case JSON_TRUE:
        out->type = GH_FV_TRUE;
        break;
    case JSON_FALSE:
        out->type = GH_FV_FALSE;
        break;
    case JSON_NULL:
        out->type = GH_FV_NULL;
        break;
    default:
        out->type = GH_FV_OTHER;
        break;
    }
    return 0;
}

const char *gh_arg_peek(const gh_opctx *c, const char *key)
{
    gh_fval v;
    return gh_arg_view(c, key, &v) == 0 && v.type == GH_FV_STRING ? v.s : NULL;
}

int gh_arg_str(gh_opctx *c, const char *key, int required, size_t maxlen, const char **out)
{
    gh_fval v;
    if (gh_arg_view(c, key, &v) != 0 || v.type == GH_FV_NULL) {
        if (required)
            return gh_op_fail(c, GH_EINVAL, "'%s' is required", key);
        return GH_ENOTFOUND;
    }
    if (v.type != GH_FV_STRING)
        return gh_op_fail(c, GH_EINVAL, "'%s' must be a string", key);
    if (v.len > maxlen)
        return gh_op_fail(c, GH_EINVAL, "'%s' is longer than %zu bytes", key, maxlen);
    if (strlen(v.s) != v.len)
        return gh_op_fail(c, GH_EINVAL, "'%s' contains a NUL character", key);
    *out = v.s;
    return 0;
}

int gh_arg_int(gh_opctx *c, const char *key, int required, int64_t min, int64_t max, int64_t *out)
{
    gh_fval v;
    if (gh_arg_view(c, key, &v) != 0 || v.type == GH_FV_NULL) {
        if (required)
            return gh_op_fail(c, GH_EINVAL, "'%s' is required", key);
        return GH_ENOTFOUND;
    }
    if (v.type != GH_FV_INT)
        return gh_op_fail(c, GH_EINVAL, "'%s' must be an integer", key);
    if (v.i < min || v.i > max)
        return gh_op_fail(c, GH_EINVAL, "'%s' must be from %lld to %lld", key, (long long)min,
                          (long long)max);
    *out = v.i;
    return 0;
}

int gh_arg_bool(gh_opctx *c, const char *key, int required, int *out)
{
    gh_fval v;
    if (gh_arg_view(c, key, &v) != 0 || v.type == GH_FV_NULL) {
        if (required)
            return gh_op_fail(c, GH_EINVAL, "'%s' is required", key);
        return GH_ENOTFOUND;
    }
    if (v.type != GH_FV_TRUE && v.type != GH_FV_FALSE)
        return gh_op_fail(c, GH_EINVAL, "'%s' must be true or false", key);
    *out = v.type == GH_FV_TRUE;
    return 0;
}

int gh_arg_name(gh_opctx *c, const char *key, int required, const char **out)
{
    const char *s;
    char msg[GH_ERRMSG_MAX];
    int rc = gh_arg_str(c, key, required, GH_NAME_MAX, &s);
    if (rc != 0)
        return rc;
    if (gh_schema_name_valid(s, msg, sizeof(msg)) != 0)
        return gh_op_fail(c, GH_EINVAL, "'%s': %s", key, msg);
    *out = s;
    return 0;
}

json_t *gh_json_user(const gh_user *u)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)u->id));
    json_object_set_new(o, "name", json_string(u->name));
    json_object_set_new(o, "uid", json_integer(u->uid));
    json_object_set_new(o, "gid", json_integer(u->gid));
    json_object_set_new(o, "display_name", json_string(u->display_name));
    json_object_set_new(o, "mail", json_string(u->mail));
    json_object_set_new(o, "home", json_string(u->home));
    json_object_set_new(o, "shell", json_string(u->shell));
    json_object_set_new(o, "gecos", json_string(u->gecos));
    json_object_set_new(o, "state", json_string(gh_user_state_name(u->state)));
    json_object_set_new(o, "origin", json_string(u->origin[0] ? u->origin : "local"));
    if (u->origin[0]) {
        json_object_set_new(o, "origin_dn", json_string(u->origin_dn));
        json_object_set_new(o, "origin_key", json_string(u->origin_key));
        if (u->tombstone)
            json_object_set_new(o, "tombstone", json_integer(u->tombstone));
        /* state is the effective one; say which side set what */
        json_object_set_new(o, "admin_state", json_string(gh_user_state_name(u->admin_state)));
        json_t *up = json_array();
        if (u->tombstone)
            json_array_append_new(up, json_string("deleted"));
        if (u->upstream_flags & GH_UPSTREAM_DISABLED)
            json_array_append_new(up, json_string("disabled"));
        if (u->upstream_flags & GH_UPSTREAM_EXPIRED)
            json_array_append_new(up, json_string("expired"));
        if (u->upstream_flags & GH_UPSTREAM_LOCKED)
            json_array_append_new(up, json_string("locked"));
        json_object_set_new(o, "upstream_state", up);
        if (u->origin_sid[0])
            json_object_set_new(o, "origin_sid", json_string(u->origin_sid));
        if (u->upstream_expires != 0)
            json_object_set_new(o, "upstream_expires", json_integer(u->upstream_expires));
    }
    json_object_set_new(o, "has_password", json_boolean(u->verifier[0] != '\0'));
    json_object_set_new(o, "created", json_integer(u->created));
    json_object_set_new(o, "modified", json_integer(u->modified));
    return o;
}

json_t *gh_json_group(const gh_group *g)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)g->id));
    json_object_set_new(o, "name", json_string(g->name));
    json_object_set_new(o, "gid", json_integer(g->gid));
    json_object_set_new(o, "description", json_string(g->description));
    json_object_set_new(o, "origin", json_string(g->origin[0] ? g->origin : "local"));
    if (g->origin[0]) {
        json_object_set_new(o, "origin_dn", json_string(g->origin_dn));
        json_object_set_new(o, "origin_key", json_string(g->origin_key));
        if (g->origin_sid[0])
            json_object_set_new(o, "origin_sid", json_string(g->origin_sid));
    }
    json_object_set_new(o, "created", json_integer(g->created));
    json_object_set_new(o, "modified", json_integer(g->modified));
    return o;
}

int gh__token_hot(gh_server *srv, gh_txn *txn, const char *token, int64_t now, gh_user_hot *u,
                  int64_t *expires)
{
    uint8_t hash[GH_TOKEN_HASH_BYTES];
    gh_token t;
    int rc;

    rc = gh__token_hash(srv, token, hash);
    if (rc != 0)
        return GH_ETOKEN;
    rc = gh_store_token_get(txn, hash, &t);
    if (rc != 0)
        return GH_ETOKEN;
    /* the lookup was by keyed hash; compare again in constant time */
    if (sodium_memcmp(t.hash, hash, sizeof(hash)) != 0 || t.expires <= now)
        return GH_ETOKEN;
    rc = gh_store_user_hot(txn, t.user_id, u);
    if (rc != 0)
        return GH_ETOKEN;
    /* Tokens die with the account (the store revokes them on the change);
     * checked here too so that no path can ever honour a stale one. */
    if (u->state != GH_USER_ACTIVE || u->tombstone != 0)
        return GH_ETOKEN;
    *expires = t.expires;
    return 0;
}

int gh__token_user(gh_server *srv, gh_txn *txn, const char *token, int64_t now, gh_user *u,
                   int64_t *expires)
{
    gh_user_hot h;
    int rc = gh__token_hot(srv, txn, token, now, &h, expires);

    if (rc != 0)
        return rc;
    memset(u, 0, sizeof(*u));
    u->id = h.id;
    u->uid = h.uid;
    u->state = h.state;
    u->tombstone = h.tombstone;
    memcpy(u->name, h.name, h.name_len);
    return 0;
}

/* Admin through a token: an active user in the local admin_group. A group of
 * that name mirrored from an upstream never grants admin: whoever controls
 * the upstream would otherwise control Gatehouse. */
int gh__user_is_admin(gh_server *srv, gh_txn *txn, uint64_t user_id)
{
    uint64_t gid;
    gh_group g;
    gh_user_hot u;

    if (srv->cfg->admin_group[0] == '\0')
        return 0;
    if (gh_store_group_id(txn, srv->cfg->admin_group, &gid) != 0)
        return 0;
    if (gh_store_user_in_group(txn, user_id, gid) != 1)
        return 0;
    /* members only (an ordinary whoami decodes nothing): the group must be
     * local and the user active */
    if (gh_store_group_get_by_id(txn, gid, &g) != 0 || g.origin[0] != '\0' || g.tombstone != 0)
        return 0;
    if (gh_store_user_hot(txn, user_id, &u) != 0 || u.state != GH_USER_ACTIVE || u.tombstone != 0)
        return 0;
    return 1;
}

int gh_op_resolve_subject(gh_opctx *c, uint64_t *user_id)
{
    const char *name = NULL, *token = NULL;
    int rc;

    rc = gh_arg_str(c, "user", 0, GH_NAME_MAX, &name);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    rc = gh_arg_str(c, "token", 0, 128, &token);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    if ((name == NULL) == (token == NULL))
        return gh_op_fail(c, GH_EINVAL, "give exactly one of 'user' or 'token'");
    if (name != NULL) {
        /* naming any user is for services and administrators; everyone else
         * asks about the user whose token it holds */
        if (c->rank < GH_PEER_SERVICE)
            return gh_op_fail(c, GH_EPERM,
                              "naming a 'user' needs a service or administrator peer; present "
                              "the user's 'token' instead");
        rc = c->authz ? gh_authz_user_id(c->authz, c->txn, name, user_id)
                      : gh_store_user_id(c->txn, name, user_id);
        if (rc == GH_ENOTFOUND)
            return gh_op_fail(c, rc, "no user named '%s'", name);
        if (rc != 0)
            return gh_op_fail(c, rc, "cannot read user '%s'", name);
        return 0;
    }
    gh_user_hot u;
    int64_t exp;
    rc = gh__token_hot(c->srv, c->txn, token, c->now, &u, &exp);
    if (rc != 0)
        return gh_op_fail(c, GH_ETOKEN, "invalid or expired token");
    *user_id = u.id;
    return 0;
}
