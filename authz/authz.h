/*
 * authz.h: the policy engine. Roles, inheritance, scoped bindings, decisions
 * with deny-overrides, explanations and reverse queries.
 *
 * authz/ reads the store and knows nothing of sockets or libuv. Decisions come
 * from a compiled per-user rule set (patterns pre-split, roles flattened,
 * scopes attached) kept in a cache that is dropped whenever the store's
 * authorization generation (gh_store_authz_gen) moves, so a committed write to
 * roles, bindings, memberships or user state is seen by the next check.
 *
 * Threads: a gh_authz is owned by one thread and takes no lock, hit or miss.
 * With several loop threads, give each loop its own gh_authz (its cache, its
 * decoded roles and compiled role blocks) and split the byte budget between
 * them (cache_bytes = authz_cache_size / loop_threads); the store's
 * authorization generation keeps every instance honest on its own.
 *
 * Memory: a user's cached decision set references role blocks (a role with
 * its inherited rules, compiled once per generation and shared by every user
 * holding it) plus the binding's scope, so it costs tens of bytes per binding
 * instead of a copy of every inherited rule.
 */
#ifndef GH_AUTHZ_H
#define GH_AUTHZ_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "schema/store.h"

typedef struct gh_authz gh_authz;

typedef struct gh_authz_opts {
    size_t cache_users; /* user decision sets kept (0: 1,048,576; the byte budget binds first) */
    size_t cache_bytes; /* heap those sets may hold (0: 64 MiB) */
} gh_authz_opts;

typedef struct gh_authz_stats {
    uint64_t hits, misses, compiles, flushes;
    size_t cached;
    size_t cached_bytes;
} gh_authz_stats;

int gh_authz_new(gh_authz **out, const gh_authz_opts *opts);
void gh_authz_free(gh_authz *a);

/* Decision for (user, action, resource): *allow = 1 or 0. GH_ENOTFOUND when
 * the user does not exist; GH_EINVAL for a malformed action or resource. */
int gh_authz_check(gh_authz *a, gh_txn *txn, uint64_t user_id, const char *action,
                   const char *resource, int *allow);

/* Decisions for n (action, resource) pairs of one user: allow[i] = 1 or 0.
 * The generation check and the cache lookup are done once for the batch. On
 * GH_EINVAL *bad (may be NULL) is the index of the first malformed pair. */
int gh_authz_check_many(gh_authz *a, gh_txn *txn, uint64_t user_id, size_t n,
                        const char *const *actions, const char *const *resources, int *allow,
                        size_t *bad);

/* Same decision plus *explain: {"decision":"allow"|"deny","reason":...,
 * "rule":{...},"path":[...]} (see docs/AUTHZ.md). Caller owns *explain. */
int gh_authz_explain(gh_authz *a, gh_txn *txn, uint64_t user_id, const char *action,
                     const char *resource, int *allow, json_t **explain);

/* Effective rules of a user with where each comes from. Caller owns *out (array). */
int gh_authz_perms(gh_authz *a, gh_txn *txn, uint64_t user_id, json_t **out);

/* Users and groups allowed (action, resource), each with the binding that
 * allows it. Caller owns *out ({"users":[...],"groups":[...]}). */
int gh_authz_who_can(gh_authz *a, gh_txn *txn, const char *action, const char *resource,
                     json_t **out);

/* The id of the user named name (what gh_store_user_id answers in txn), from
 * the engine's map of names already resolved this authorization generation,
 * or from the store (kept then). GH_ENOTFOUND when there is no such user. */
int gh_authz_user_id(gh_authz *a, gh_txn *txn, const char *name, uint64_t *id);

void gh_authz_get_stats(const gh_authz *a, gh_authz_stats *st);
/* Drops every compiled set now (benchmarks and tests; writes never need it). */
void gh_authz_flush(gh_authz *a);

#endif
