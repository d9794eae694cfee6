/*
 * ops_core.c: ping, auth, whoami, logout, stats, audit.
 *
 * These are the operations every peer may call (but stats and audit) and
 * the hot path of applications: whoami is one keyed hash and two LMDB reads.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "schema/log.h"
#include "server/server.h"

static int op_ping(gh_opctx *c)
{
    json_object_set_new(c->resp, "version", json_string(GH_VERSION_STRING));
    json_object_set_new(c->resp, "protocol", json_integer(1));
    json_object_set_new(c->resp, "max_request", json_integer((json_int_t)c->cfg->max_request));
    return 0;
}

static int op_whoami(gh_opctx *c)
{
    const char *token;
    gh_user u;
    int64_t exp;
    int rc = gh_arg_str(c, "token", 1, 128, &token);
    if (rc != 0)
        return rc;
    rc = gh__token_user(c->srv, c->txn, token, c->now, &u, &exp);
    if (rc != 0)
        return gh_op_fail(c, GH_ETOKEN, "invalid or expired token");
    json_object_set_new(c->resp, "user", json_string(u.name));
    json_object_set_new(c->resp, "expires_at", json_integer(exp));
    json_object_set_new(c->resp, "admin",
                        json_boolean(gh__user_is_admin(c->srv, c->txn, u.id) == 1));
    return 0;
}

typedef struct logout_arg {
    uint8_t hash[GH_TOKEN_HASH_BYTES];
} logout_arg;

static int logout_apply(gh_txn *txn, void *arg)
{
    logout_arg *a = arg;
    int rc = gh_store_token_del(txn, a->hash);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, GH_ETOKEN, "invalid or expired token");
    return rc;
}

static void logout_free(void *arg)
{
    free(arg);
}

static int op_logout(gh_opctx *c)
{
    const char *token;
    gh_user u;
    int64_t exp;
    int rc = gh_arg_str(c, "token", 1, 128, &token);
    if (rc != 0)
        return rc;
    rc = gh__token_user(c->srv, c->txn, token, c->now, &u, &exp);
    if (rc != 0)
        return gh_op_fail(c, GH_ETOKEN, "invalid or expired token");
    logout_arg *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    gh__token_hash(c->srv, token, a->hash);
    return gh_op_defer(c, logout_apply, NULL, logout_free, a);
}

static uint64_t percentile(const gh_lat *l, double q)
{
    uint64_t want = (uint64_t)((double)l->count * q + 0.5), acc = 0;
    if (want == 0)
        want = 1;
    for (unsigned b = 0; b < GH_LAT_BUCKETS; b++) {
        acc += l->buckets[b];
        if (acc >= want)
            return gh__lat_bucket_upper(b); /* upper bound of the bucket, in us */
    }
    return 0;
}

static int op_stats(gh_opctx *c)
{
    gh_server *srv = c->srv;
    json_t *conns = json_object(), *reqs = json_object(), *auth = json_object();
    json_t *store = json_object(), *cache = json_object(), *writer = json_object();
    uint64_t used = 0, map = 0, users = 0, groups = 0, seq = 0, commits = 0, ops = 0;

    json_object_set_new(c->resp, "version", json_string(GH_VERSION_STRING));
    json_object_set_new(c->resp, "uptime",
                        json_integer((json_int_t)(gh__now_ms() - srv->started) / 1000));
    json_object_set_new(conns, "current", json_integer(srv->nconns));
    json_object_set_new(conns, "total", json_integer((json_int_t)srv->conns_total));
    json_object_set_new(conns, "rejected", json_integer((json_int_t)srv->conns_rejected));
    json_object_set_new(c->resp, "connections", conns);
    for (size_t i = 0; i < srv->nops; i++) {
        const gh_lat *l = &srv->lat[i];
        if (l->count == 0)
            continue;
        json_t *o = json_object();
        json_object_set_new(o, "count", json_integer((json_int_t)l->count));
        json_object_set_new(o, "errors", json_integer((json_int_t)l->errors));
        json_object_set_new(o, "p50_us", json_integer((json_int_t)percentile(l, 0.50)));
        json_object_set_new(o, "p99_us", json_integer((json_int_t)percentile(l, 0.99)));
        json_object_set_new(reqs, gh__op_at(i)->name, o);
    }
    json_object_set_new(c->resp, "requests", reqs);
    json_object_set_new(auth, "success", json_integer((json_int_t)srv->auth_ok));
    json_object_set_new(auth, "failure", json_integer((json_int_t)srv->auth_fail));
    json_object_set_new(auth, "rate_limited", json_integer((json_int_t)srv->auth_limited));
    json_object_set_new(auth, "verifications", json_integer((json_int_t)srv->auth_verifications));
    json_object_set_new(auth, "upstream_binds", json_integer((json_int_t)srv->auth_upstream_binds));
    json_object_set_new(auth, "argon2_inflight", json_integer(srv->argon2_inflight));
    json_object_set_new(c->resp, "auth", auth);
    gh_store_size(srv->store, &used, &map);
    gh_store_user_count(c->txn, &users);
    gh_store_group_count(c->txn, &groups);
    gh_store_changelog_seq(c->txn, &seq);
    json_object_set_new(store, "used_bytes", json_integer((json_int_t)used));
    json_object_set_new(store, "map_bytes", json_integer((json_int_t)map));
    json_object_set_new(store, "users", json_integer((json_int_t)users));
    json_object_set_new(store, "groups", json_integer((json_int_t)groups));
    json_object_set_new(c->resp, "store", store);
    json_object_set_new(c->resp, "changelog_seq", json_integer((json_int_t)seq));
    gh_writer_stats(srv->writer, &commits, &ops);
    json_object_set_new(writer, "commits", json_integer((json_int_t)commits));
    json_object_set_new(writer, "ops", json_integer((json_int_t)ops));
    json_object_set_new(c->resp, "writer", writer);
    gh_authz_stats st;
    gh_authz_get_stats(srv->authz, &st);
    json_object_set_new(cache, "hits", json_integer((json_int_t)st.hits));
    json_object_set_new(cache, "misses", json_integer((json_int_t)st.misses));
    json_object_set_new(cache, "compiles", json_integer((json_int_t)st.compiles));
    json_object_set_new(cache, "flushes", json_integer((json_int_t)st.flushes));
    json_object_set_new(cache, "cached", json_integer((json_int_t)st.cached));
    json_object_set_new(cache, "cached_bytes", json_integer((json_int_t)st.cached_bytes));
    json_object_set_new(c->resp, "authz_cache", cache);
    return 0;
}

static int audit_cb(const gh_change *ch, void *arg)
{
    json_t *arr = arg;
    json_t *o = json_object();
    json_object_set_new(o, "seq", json_integer((json_int_t)ch->seq));
    json_object_set_new(o, "time", json_integer(ch->time));
    json_object_set_new(o, "actor", json_string(ch->actor));
    json_object_set_new(o, "op", json_string(ch->op));
    json_object_set_new(o, "target", json_string(ch->target));
    json_array_append_new(arr, o);
    return 0;
}

static int op_audit(gh_opctx *c)
{
    int64_t since = 0, limit = 100;
    uint64_t last = 0;
    int rc = gh_arg_int(c, "since", 0, 0, INT64_MAX, &since);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    rc = gh_arg_int(c, "limit", 0, 1, 1000, &limit);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    json_t *arr = json_array();
    rc = gh_store_changelog_list(c->txn, (uint64_t)since, (size_t)limit, audit_cb, arr);
    if (rc != 0) {
        json_decref(arr);
        return gh_op_fail(c, rc, "cannot read the change log");
    }
    gh_store_changelog_seq(c->txn, &last);
    json_object_set_new(c->resp, "entries", arr);
    json_object_set_new(c->resp, "last", json_integer((json_int_t)last));
    return 0;
}

const gh_op_def gh__ops_core[] = {
    {"ping", op_ping, 0, GH_CLASS_PUBLIC},
    {"auth", gh__op_auth, GH_OPF_ARGON2 | GH_OPF_UNORDERED_WRITE, GH_CLASS_PUBLIC},
    {"whoami", op_whoami, 0, GH_CLASS_PUBLIC},
    {"logout", op_logout, GH_OPF_WRITE, GH_CLASS_PUBLIC},
    {"stats", op_stats, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {"audit", op_audit, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {NULL, NULL, 0, GH_CLASS_ADMIN},
};
