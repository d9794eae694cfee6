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
    gh_op_reply_string(c, "version", GH_VERSION_STRING, strlen(GH_VERSION_STRING));
    gh_op_reply_int(c, "protocol", 1);
    gh_op_reply_int(c, "max_request", (int64_t)c->cfg->max_request);
    return 0;
}

static int op_whoami(gh_opctx *c)
{
    const char *token;
    gh_user_hot u;
    int64_t exp;
    int rc = gh_arg_str(c, "token", 1, 128, &token);
    if (rc != 0)
        return rc;
    rc = gh__token_hot(c->srv, c->txn, token, c->now, &u, &exp);
    if (rc != 0)
        return gh_op_fail(c, GH_ETOKEN, "invalid or expired token");
    gh_op_reply_string(c, "user", u.name, u.name_len);
    gh_op_reply_int(c, "expires_at", exp);
    gh_op_reply_bool(c, "admin", gh__user_is_admin(c->srv, c->txn, u.id) == 1);
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

/* Counted from the buckets themselves: the loops add to count and to a
 * bucket one after the other, so a sum read while they answer may hold a
 * count whose bucket it has not seen (p99 then fell off the end as 0). */
static uint64_t percentile(const gh_lat *l, double q)
{
    uint64_t total = 0, want, acc = 0;
    for (unsigned b = 0; b < GH_LAT_BUCKETS; b++)
        total += l->buckets[b];
    want = (uint64_t)((double)total * q + 0.5);
    if (want == 0)
        want = 1;
    for (unsigned b = 0; b < GH_LAT_BUCKETS; b++) {
        acc += l->buckets[b];
        if (acc >= want)
            return gh__lat_bucket_upper(b); /* upper bound of the bucket, in us */
    }
    return 0;
}

/* Every loop's counters: each loop adds to its own, this sums them with
 * relaxed atomic loads (a snapshot, not a cut across loops). */
static int op_stats(gh_opctx *c)
{
    gh_server *srv = c->srv;
    json_t *conns = json_object(), *reqs = json_object(), *auth = json_object();
    json_t *store = json_object(), *cache = json_object(), *writer = json_object();
    json_t *loops = json_array();
    uint64_t used = 0, map = 0, users = 0, groups = 0, seq = 0, commits = 0, ops = 0;
    gh_loop_sums sums;
    gh_lat *l = malloc(sizeof(*l));

    if (l == NULL) {
        json_decref(conns), json_decref(reqs), json_decref(auth), json_decref(store);
        json_decref(cache), json_decref(writer), json_decref(loops);
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    }
    gh__loops_sum(srv, &sums);
    json_object_set_new(c->resp, "version", json_string(GH_VERSION_STRING));
    json_object_set_new(c->resp, "uptime",
                        json_integer((json_int_t)(gh__now_ms() - srv->started) / 1000));
    json_object_set_new(conns, "current",
                        json_integer(__atomic_load_n(&srv->nconns, __ATOMIC_RELAXED)));
    json_object_set_new(conns, "total", json_integer((json_int_t)sums.conns_total));
    json_object_set_new(conns, "rejected", json_integer((json_int_t)sums.conns_rejected));
    json_object_set_new(c->resp, "connections", conns);
    for (size_t i = 0; i < srv->nops; i++) {
        gh__lat_sum(srv, i, l);
        if (l->count == 0)
            continue;
        json_t *o = json_object();
        json_object_set_new(o, "count", json_integer((json_int_t)l->count));
        json_object_set_new(o, "errors", json_integer((json_int_t)l->errors));
        json_object_set_new(o, "p50_us", json_integer((json_int_t)percentile(l, 0.50)));
        json_object_set_new(o, "p99_us", json_integer((json_int_t)percentile(l, 0.99)));
        json_object_set_new(reqs, gh__op_at(i)->name, o);
    }
    free(l);
    json_object_set_new(c->resp, "requests", reqs);
    /* per loop: connections open now and accepted since start, requests answered */
    for (unsigned k = 0; k < srv->nloops; k++) {
        gh_loop *lp = &srv->loops[k];
        json_array_append_new(
            loops, json_pack("{s:I,s:I,s:I}", "connections", (json_int_t)GH_STAT_GET(lp->nconns),
                             "connections_total", (json_int_t)GH_STAT_GET(lp->conns_total),
                             "requests", (json_int_t)gh__loop_requests(lp)));
    }
    json_object_set_new(c->resp, "loops", loops);
    json_object_set_new(auth, "success", json_integer((json_int_t)GH_STAT_GET(srv->auth_ok)));
    json_object_set_new(auth, "failure", json_integer((json_int_t)GH_STAT_GET(srv->auth_fail)));
    json_object_set_new(auth, "rate_limited",
                        json_integer((json_int_t)GH_STAT_GET(srv->auth_limited)));
    json_object_set_new(auth, "verifications",
                        json_integer((json_int_t)GH_STAT_GET(srv->auth_verifications)));
    json_object_set_new(auth, "upstream_binds",
                        json_integer((json_int_t)GH_STAT_GET(srv->auth_upstream_binds)));
    json_object_set_new(auth, "argon2_inflight",
                        json_integer(__atomic_load_n(&srv->argon2_inflight, __ATOMIC_RELAXED)));
    json_object_set_new(c->resp, "auth", auth);
    json_object_set_new(c->resp, "ldap", gh__ldap_stats(srv));
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
    json_object_set_new(cache, "hits", json_integer((json_int_t)sums.authz.hits));
    json_object_set_new(cache, "misses", json_integer((json_int_t)sums.authz.misses));
    json_object_set_new(cache, "compiles", json_integer((json_int_t)sums.authz.compiles));
    json_object_set_new(cache, "flushes", json_integer((json_int_t)sums.authz.flushes));
    json_object_set_new(cache, "cached", json_integer((json_int_t)sums.authz.cached));
    json_object_set_new(cache, "cached_bytes", json_integer((json_int_t)sums.authz.cached_bytes));
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
    {"ping", op_ping, GH_OPF_FLAT | GH_OPF_NSS, GH_CLASS_PUBLIC},
    {"auth", gh__op_auth, GH_OPF_ARGON2 | GH_OPF_UNORDERED_WRITE | GH_OPF_FLAT, GH_CLASS_PUBLIC},
    {"whoami", op_whoami, GH_OPF_FLAT, GH_CLASS_PUBLIC},
    {"logout", op_logout, GH_OPF_WRITE, GH_CLASS_PUBLIC},
    /* on loop 0: the LDAP front-end's counters are its; other loops' are read atomically */
    {"stats", op_stats, GH_OPF_LOOP0, GH_CLASS_ADMIN},
    {"audit", op_audit, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {NULL, NULL, 0, GH_CLASS_ADMIN},
};
