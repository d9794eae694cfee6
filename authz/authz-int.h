/*
 * authz-int.h: the compiled per-user rule set, the request form matched
 * against it, and the bounded cache of sets. Private to authz/.
 *
 * The one thing to know: a gh__set is immutable once gh__set_finish has built
 * its indexes, and every offset in it points into its own string arena
 * (set->str), so matching never allocates and a set can be freed at any time
 * the cache drops it. Anything that changes a decision must go through the
 * store (which bumps gh_store_authz_gen) so the whole cache is dropped.
 */
#ifndef GH_AUTHZ_INT_H
#define GH_AUTHZ_INT_H

#include <stddef.h>
#include <stdint.h>

#include "authz/authz.h"
#include "schema/schema.h"
#include "schema/store.h"

/* A concrete resource has at most this many segments ("a/b/..." within
 * GH_PATTERN_MAX bytes). */
#define GH__SEGS_MAX (GH_PATTERN_MAX / 2 + 1)

enum { GH__ACT_EXACT = 0, GH__ACT_PREFIX = 1, GH__ACT_ANY = 2 };

/* Why a decision came out as it did. */
enum {
    GH__WHY_RULE = 0,     /* a rule matched (the deciding rule is known) */
    GH__WHY_DEFAULT = 1,  /* no rule matched: default deny */
    GH__WHY_LOCKED = 2,   /* the account is locked */
    GH__WHY_DISABLED = 3, /* the account is disabled or deleted upstream */
};

/* One segment of a compiled resource pattern. A literal is never empty, so
 * len 0 marks the single-segment wildcard "*". */
typedef struct gh__seg {
    uint32_t off; /* text in set->str */
    uint32_t len;
} gh__seg;

/* A resource pattern split once at compile time. A final "**" is not stored
 * as a segment: it sets rest (zero or more further segments). */
typedef struct gh__pat {
    uint32_t seg;  /* first segment in set->segs */
    uint32_t nseg; /* segments before a final "**" */
    uint32_t rest; /* the pattern ends with "**" */
    uint32_t text; /* the pattern as written (NUL-terminated in set->str) */
} gh__pat;

/* A binding that contributed to the set. */
typedef struct gh__bind {
    uint64_t id;
    gh_member subject;
    uint32_t role;   /* bound role's name in set->str */
    int32_t scope;   /* index in set->scopes, -1: unscoped */
    int32_t missing; /* the bound role does not exist (contributes nothing) */
} gh__bind;

/* A role reached from a binding: the bound role, or a parent inherited
 * through the role entry "via". Entries are per binding, so the chain
 * binding -> role -> parent -> ... is recovered by following via. */
typedef struct gh__rpath {
    uint32_t name; /* role name in set->str */
    int32_t via;   /* index of the child role entry, -1 for the bound role */
    uint32_t bind; /* index in set->binds */
} gh__rpath;

typedef struct gh__rule {
    uint32_t effect; /* GH_ALLOW or GH_DENY */
    uint32_t akind;  /* GH__ACT_* */
    uint32_t aoff;   /* exact action, or the prefix including ':' */
    uint32_t alen;
    gh__pat res;
    int32_t scope;   /* index in set->scopes, -1: unscoped */
    uint32_t role;   /* index in set->roles: the role that declares the rule */
    uint32_t action; /* action pattern as written (NUL-terminated in set->str) */
} gh__rule;

/* Exact actions of one effect, grouped: rule ids start..end of ids share the
 * action aoff/alen. Open addressing; alen 0 marks an empty slot. */
typedef struct gh__agrp {
    uint64_t hash;
    uint32_t aoff, alen;
    uint32_t start, end;
} gh__agrp;

/* The rules of one effect that take part in matching (duplicates removed).
 * ids[0..nexact) are exact-action rules grouped by action; ids[nexact..nids)
 * are "*" and "prefix:*" rules, tried for every action. Ids ascend within
 * each group so the first match is the lowest rule index. */
typedef struct gh__eidx {
    uint32_t *ids;
    uint32_t nexact, nids;
    gh__agrp *tab;
    uint32_t mask;  /* table size - 1 (size is a power of two) */
    uint32_t any;   /* holds a "*" rule: every action is a candidate */
    uint64_t amask; /* one bit (gh__abit) per exact action and per "prefix:"
                       of the rules: a request whose gh__req.amask shares no
                       bit with it matches none of them */
} gh__eidx;

/* The filter bit of an action or action prefix hash. */
static inline uint64_t gh__abit(uint64_t hash)
{
    return 1ULL << (hash >> 58);
}

typedef struct gh__set {
    uint64_t user_id;
    gh_user_state state;
    int64_t tombstone;
    int ref;      /* cache CLOCK bit */
    size_t bytes; /* heap held, charged to the cache's byte budget */

    char *str;
    size_t nstr, capstr;
    gh__seg *segs;
    size_t nsegs, capsegs;
    gh__rule *rules;
    size_t nrules, caprules;
    gh__bind *binds;
    size_t nbinds, capbinds;
    gh__pat *scopes;
    size_t nscopes, capscopes;
    gh__rpath *roles;
    size_t nroles, caproles;
    gh__eidx idx[2]; /* [GH_ALLOW], [GH_DENY] */
} gh__set;

/* A request, split once per check on the caller's stack. */
typedef struct gh__req {
    const char *action;
    uint32_t alen;
    uint64_t ahash;
    uint64_t amask; /* gh__abit of the action and of each prefix ending in ':' */
    uint32_t nseg;
    struct {
        const char *p;
        uint32_t len;
    } seg[GH__SEGS_MAX];
} gh__req;

/* Grows the array *pp of *cap elements of elsz bytes (doubling) to hold
 * need: 0, GH_ENOMEM, or GH_ETOOBIG past 2^31 elements (compile.c). */
int gh__grow(void *pp, size_t *cap, size_t need, size_t elsz);

/* ---- match.c: the hot path (no allocation) ---- */

/* FNV-1a, one byte at a time so a prefix's hash falls out of the action's. */
#define GH__HASH_SEED 1469598103934665603ULL
static inline uint64_t gh__hash_step(uint64_t h, unsigned char ch)
{
    return (h ^ ch) * 1099511628211ULL;
}
uint64_t gh__hash(const char *s, size_t len);
/* Validates and splits a concrete (action, resource): 0 or GH_EINVAL. */
int gh__req_init(gh__req *q, const char *action, const char *resource);
int gh__pat_match(const gh__set *s, const gh__pat *p, const gh__req *q);
/* First rule of effect matching q (lowest index), or -1. */
int32_t gh__set_find(const gh__set *s, gh_effect effect, const gh__req *q);
/* The decision: returns 1 (allow) or 0 (deny); *why gets GH__WHY_*, *rule the
 * deciding rule or -1. Either pointer may be NULL. */
int gh__set_decide(const gh__set *s, const gh__req *q, int *why, int32_t *rule);

/* ---- compile.c ---- */

/* Roles decoded from the store, shared by every compile of one authorization
 * generation (decoding a role record costs more than compiling it). A NULL
 * role marks a name that does not exist. Cleared with the set cache. */
typedef struct gh__rent {
    gh_role *role;
    gh__set *block; /* the role with its inherited rules, compiled unscoped once
                       per generation and shared by every user set holding it */
    int compiled;   /* block was built (NULL then means: grants nothing) */
    char name[GH_NAME_MAX + 1];
    uint64_t hash;
    uint32_t stamp; /* last expansion (gh__roles.stamp) that visited it */
} gh__rent;

typedef struct gh__roles {
    gh__rent *e;
    size_t n, cap;
    uint32_t *tab; /* index + 1; 0 empty */
    size_t mask;
    uint32_t stamp;
    /* the scopes of the generation's bindings, each compiled once into
     * scopes (str, segs, scopes only) and shared by every gh__uset */
    gh__set *scopes;
    uint32_t *stab; /* index in scopes->scopes + 1; 0 empty */
    size_t smask;
} gh__roles;

void gh__roles_clear(gh__roles *rc);
void gh__roles_free(gh__roles *rc);

/* Compiles the rule set of a user: bindings of the user and of every
 * effective group, with inherited roles and scopes. roles may be NULL (decode
 * privately). GH_ENOTFOUND when the user does not exist; GH_EINTERNAL when a
 * stored pattern does not compile. */
int gh__set_compile_user(gh_txn *txn, gh__roles *roles, uint64_t user_id, gh__set **out);
/* Compiles the rules of one subject's own bindings only (no user state, no
 * group closure): who_can's view of a group. */
int gh__set_compile_subject(gh_txn *txn, gh__roles *roles, gh_member subject, gh__set **out);
void gh__set_free(gh__set *s);
/* Splits a resource pattern into s: 0 or GH_EINVAL. */
int gh__pat_compile(gh__set *s, const char *pattern, gh__pat *out);
/* The text at offset off of s's arena. */
static inline const char *gh__str(const gh__set *s, uint32_t off)
{
    return s->str + off;
}

/* A user's decision set for the fast path: references to shared role blocks
 * (each a gh__set of one role and its ancestors, compiled unscoped) with the
 * binding's scope, instead of a copy of every inherited rule. A request is
 * denied when some reference whose scope matches has a matching deny rule,
 * else allowed when one has a matching allow rule: the same decision as the
 * flat set of gh__set_compile_user, which explain, perms and who_can read for
 * the deciding rule. Valid until the generation moves (blocks and the shared
 * scopes die then). One allocation of 32 bytes plus 8 per (role, scope) the
 * user holds: blocks and scopes are indices into the loop's gh__roles. */
typedef struct gh__uref {
    uint32_t block; /* index in rc->e of the role whose block this is */
    int32_t scope;  /* index in rc->scopes->scopes, -1: unscoped */
} gh__uref;

typedef struct gh__uset {
    uint64_t user_id;
    const gh__roles *rc; /* the blocks and scopes the refs index */
    uint32_t nrefs, ndeny;
    uint8_t state;     /* gh_user_state */
    uint8_t tombstone; /* the user is deleted upstream (tombstone != 0) */
    uint8_t ref;       /* cache CLOCK bit */
    gh__uref refs[];   /* blocks holding deny rules first: refs[0..ndeny) */
} gh__uset;

static inline const gh__set *gh__uref_block(const gh__uset *u, const gh__uref *r)
{
    return u->rc->e[r->block].block;
}

static inline const gh__set *gh__uref_scopes(const gh__uset *u)
{
    return u->rc->scopes;
}

/* The user's decision set with blocks from roles (compiled there on first
 * use). GH_ENOTFOUND when the user does not exist. */
int gh__uset_compile(gh_txn *txn, gh__roles *roles, uint64_t user_id, gh__uset **out);
void gh__uset_free(gh__uset *u);
/* Heap held by u (with malloc's per-chunk overhead): what the cache charges. */
size_t gh__uset_bytes(const gh__uset *u);
/* Heap held by the compiled blocks of roles. */
size_t gh__roles_block_bytes(const gh__roles *rc);
/* match.c: 1 allow, 0 deny (no allocation). */
int gh__uset_decide(const gh__uset *u, const gh__req *q);

/* ---- cache.c: bounded map user id -> decision set, CLOCK eviction ---- */

typedef struct gh__cslot {
    uint64_t user_id; /* kept here so a lookup touches one line, not the set */
    gh__uset *set;    /* NULL: empty */
} gh__cslot;

typedef struct gh__cache {
    gh__uset **sets; /* dense */
    size_t n, cap, max;
    size_t bytes, max_bytes; /* heap of the cached sets, and its budget */
    gh__cslot *tab;          /* open addressing */
    size_t mask;
    size_t hand;
} gh__cache;

void gh__cache_init(gh__cache *c, size_t max, size_t max_bytes);
/* Heap held by a compiled set (what the cache's byte budget counts). */
size_t gh__set_bytes(const gh__set *s);
gh__uset *gh__cache_get(gh__cache *c, uint64_t user_id);
/* Takes ownership of s (freed when evicted, or at once on failure). */
int gh__cache_put(gh__cache *c, gh__uset *s);
void gh__cache_clear(gh__cache *c);
void gh__cache_destroy(gh__cache *c);

/* ---- names.c: the loop's map login name -> user id ---- */

typedef struct gh__nent {
    uint64_t hash;
    uint64_t id;
    uint32_t off, len; /* the name in gh__names.str */
} gh__nent;

typedef struct gh__names {
    gh__nent *e; /* dense */
    size_t n, cape, max;
    char *str;
    size_t nstr, capstr;
    uint32_t *tab; /* index + 1; 0 empty */
    size_t mask;
} gh__names;

int gh__names_get(const gh__names *m, const char *name, size_t len, uint64_t hash, uint64_t *id);
int gh__names_put(gh__names *m, const char *name, size_t len, uint64_t hash, uint64_t id);
void gh__names_clear(gh__names *m);
void gh__names_free(gh__names *m);
size_t gh__names_bytes(const gh__names *m);

/* ---- authz.c ---- */

struct gh_authz {
    gh__cache cache;
    gh__roles roles;
    gh__names names; /* cleared with cache: renames and deletes move the generation */
    uint64_t gen;    /* gh_store_authz_gen the cached sets were compiled at */
    int have_gen;
    uint64_t snap; /* read snapshot gen was last read in (same snapshot: same gen) */
    int have_snap;
    gh_authz_stats st;
};

/* Drops the cache when gh_store_authz_gen(txn) differs from the generation
 * the cached sets were compiled at. */
int gh__authz_sync(gh_authz *a, gh_txn *txn);
/* The decision set of a user, from the cache or compiled into it; valid until
 * the next call on a (borrowed). Drops the cache first when the store's
 * authorization generation moved. */
int gh__authz_user_uset(gh_authz *a, gh_txn *txn, uint64_t user_id, gh__uset **out);
/* The flat set of a user (every rule with where it came from) for explain,
 * perms and who_can: compiled for the call, caller frees (gh__set_free). */
int gh__authz_user_set(gh_authz *a, gh_txn *txn, uint64_t user_id, gh__set **out);

#endif
