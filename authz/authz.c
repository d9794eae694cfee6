/*
 * authz.c: the engine's front door: lifecycle, the generation check that keeps
 * the cache honest, and the decision calls the server makes per request.
 *
 * The one thing to know: every entry point reads gh_store_authz_gen in the
 * caller's transaction before it trusts a cached set, and drops the whole
 * cache when it moved. Per-entry invalidation would need to know which users
 * a role or group change touches; a generation counter needs nothing, and a
 * recompile costs microseconds.
 */
#include <stdlib.h>
#include <string.h>

#include "authz/authz-int.h"
#include "schema/error.h"

int gh_authz_new(gh_authz **out, const gh_authz_opts *opts)
{
    gh_authz *a;

    *out = NULL;
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return GH_ENOMEM;
    gh__cache_init(&a->cache, opts && opts->cache_users ? opts->cache_users : (size_t)1 << 20,
                   opts && opts->cache_bytes ? opts->cache_bytes : (size_t)64 << 20);
    a->names.max = a->cache.max;
    *out = a;
    return 0;
}

void gh_authz_free(gh_authz *a)
{
    if (a == NULL)
        return;
    gh__cache_destroy(&a->cache);
    gh__roles_free(&a->roles);
    gh__names_free(&a->names);
    free(a);
}

void gh_authz_flush(gh_authz *a)
{
    gh__cache_clear(&a->cache);
    gh__roles_clear(&a->roles);
    gh__names_clear(&a->names);
    a->have_gen = 0;
    a->have_snap = 0;
}

void gh_authz_get_stats(const gh_authz *a, gh_authz_stats *st)
{
    *st = a->st;
    st->cached = a->cache.n;
    st->cached_bytes =
        a->cache.bytes + gh__roles_block_bytes(&a->roles) + gh__names_bytes(&a->names);
}

/* Drops the cache when the store's authorization generation moved (in either
 * direction: a set must have been compiled at exactly the reader's state). */
int gh__authz_sync(gh_authz *a, gh_txn *txn)
{
    uint64_t gen, snap;
    int rc, have_snap = gh_store_snapshot_id(txn, &snap) == 0;

    /* a snapshot equal to the last one holds the same generation: no read */
    if (a->have_gen && have_snap && a->have_snap && snap == a->snap)
        return 0;
    rc = gh_store_authz_gen(txn, &gen);
    if (rc)
        return rc;
    a->have_snap = have_snap;
    a->snap = have_snap ? snap : 0;
    if (a->have_gen && gen == a->gen)
        return 0;
    if (a->have_gen) {
        a->st.flushes++;
        gh__cache_clear(&a->cache);
        gh__roles_clear(&a->roles);
        gh__names_clear(&a->names);
    }
    a->gen = gen;
    a->have_gen = 1;
    return 0;
}

static int lookup(gh_authz *a, gh_txn *txn, uint64_t user_id, gh__uset **out)
{
    gh__uset *s = gh__cache_get(&a->cache, user_id);
    int rc;

    if (s) {
        a->st.hits++;
        *out = s;
        return 0;
    }
    a->st.misses++;
    rc = gh__uset_compile(txn, &a->roles, user_id, &s);
    if (rc)
        return rc;
    a->st.compiles++;
    if ((rc = gh__cache_put(&a->cache, s)) != 0)
        return rc; /* s already freed */
    *out = s;
    return 0;
}

int gh__authz_user_uset(gh_authz *a, gh_txn *txn, uint64_t user_id, gh__uset **out)
{
    int rc;

    *out = NULL;
    if ((rc = gh__authz_sync(a, txn)) != 0)
        return rc;
    return lookup(a, txn, user_id, out);
}

int gh__authz_user_set(gh_authz *a, gh_txn *txn, uint64_t user_id, gh__set **out)
{
    int rc;

    *out = NULL;
    if ((rc = gh__authz_sync(a, txn)) != 0)
        return rc;
    return gh__set_compile_user(txn, &a->roles, user_id, out);
}

int gh_authz_check(gh_authz *a, gh_txn *txn, uint64_t user_id, const char *action,
                   const char *resource, int *allow)
{
    gh__req q;
    gh__uset *s;
    int rc;

    *allow = 0;
    if ((rc = gh__req_init(&q, action, resource)) != 0)
        return rc;
    if ((rc = gh__authz_user_uset(a, txn, user_id, &s)) != 0)
        return rc;
    *allow = gh__uset_decide(s, &q);
    return 0;
}

int gh_authz_check_many(gh_authz *a, gh_txn *txn, uint64_t user_id, size_t n,
                        const char *const *actions, const char *const *resources, int *allow,
                        size_t *bad)
{
    gh__req q;
    gh__uset *s;
    size_t i;
    int rc;

    for (i = 0; i < n; i++)
        allow[i] = 0;
    if (bad)
        *bad = 0;
    if ((rc = gh__authz_user_uset(a, txn, user_id, &s)) != 0)
        return rc;
    for (i = 0; i < n; i++) {
        if ((rc = gh__req_init(&q, actions[i], resources[i])) != 0) {
            if (bad)
                *bad = i;
            for (size_t k = 0; k < i; k++)
                allow[k] = 0; /* all or nothing */
            return rc;
        }
        allow[i] = gh__uset_decide(s, &q);
    }
    return 0;
}

int gh_authz_user_id(gh_authz *a, gh_txn *txn, const char *name, uint64_t *id)
{
    size_t len = strlen(name);
    uint64_t h = gh__hash(name, len);
    int rc;

    if ((rc = gh__authz_sync(a, txn)) != 0)
        return rc;
    if (gh__names_get(&a->names, name, len, h, id) == 0)
        return 0;
    if ((rc = gh_store_user_id(txn, name, id)) != 0)
        return rc;
    if (gh__names_put(&a->names, name, len, h, *id) != 0)
        gh__names_clear(&a->names); /* out of memory: answer, keep nothing */
    return 0;
}
