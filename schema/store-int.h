/*
 * store-int.h: private declarations shared by the schema/store*.c files.
 *
 * The one thing to know: every LMDB call's error goes through gh__mdb_err(),
 * which converts it to a GH_E* code, logs the original, and flags the txn when
 * the map is full so gh_store_write_batch can grow the map and retry. A
 * function that swallows an MDB_MAP_FULL without passing it through there
 * turns an automatic retry into a silent GH_EFULL.
 */
#ifndef GH_STORE_INT_H
#define GH_STORE_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <lmdb.h>

#include "schema/store.h"

/* Named databases. The names are the on-disk layout: never rename one. */
enum {
    DB_USERS,           /* u64 id BE -> JSON user */
    DB_USER_NAME,       /* login -> u64 id BE */
    DB_USER_UID,        /* u32 uid BE -> u64 id BE */
    DB_USER_ORIGIN,     /* "upstream\0key" -> u64 id BE */
    DB_GROUPS,          /* u64 id BE -> JSON group */
    DB_GROUP_NAME,      /* name -> u64 id BE */
    DB_GROUP_GID,       /* u32 gid BE -> u64 id BE */
    DB_GROUP_ORIGIN,    /* "upstream\0key" -> u64 id BE */
    DB_MEMBER_OF,       /* dup: member key -> group id BE */
    DB_MEMBERS,         /* dup: group id BE -> member key */
    DB_USER_GROUPS_EFF, /* dup: user id BE -> group id BE (effective closure) */
    DB_ROLES,           /* name -> JSON role */
    DB_ROLE_CHILDREN,   /* dup: parent name -> child name */
    DB_BINDINGS,        /* u64 id BE -> JSON binding */
    DB_BINDING_SUBJECT, /* dup: member key -> binding id BE */
    DB_BINDING_ROLE,    /* dup: role name -> binding id BE */
    DB_TOKENS,          /* 32-byte hash -> fixed binary record */
    DB_TOKEN_USER,      /* dup: user id BE -> 32-byte hash */
    DB_CHANGELOG,       /* u64 seq BE -> JSON change */
    DB_SYNC,            /* upstream name -> opaque blob */
    DB_META,            /* key string -> value (see store_misc.c) */
    DB_COUNT
};

#define GH_MEMBER_KEY_LEN 9 /* 1 byte kind + u64 id BE */
#define GH_TOKEN_REC_LEN 25 /* 1 byte version + user id + created + expires */
/* v2 adds 1 byte of peer length and the peer's bytes */
#define GH_TOKEN_REC_MAX (GH_TOKEN_REC_LEN + 1 + GH_TOKEN_PEER_MAX)

struct gh_store {
    MDB_env *env;
    MDB_dbi dbi[DB_COUNT];
    /* Readers and the writer hold the read side while a txn is live;
     * mdb_env_set_mapsize takes the write side (it needs no live txn). */
    pthread_rwlock_t maplock;
    size_t map_max;
    uint32_t uid_min;
    int no_sync;
    int rerun_writes;
};

struct gh_txn {
    MDB_txn *txn;
    gh_store *store;
    int rdonly;
    int map_full; /* an LMDB call hit MDB_MAP_FULL: grow and retry */
    int64_t now;
    char actor[GH_NAME_MAX + 16];
    char err[GH_ERRMSG_MAX];
};

struct gh_store_reader {
    gh_store *store;
    MDB_txn *txn; /* reset between uses, renewed by read_begin */
    int active;
    struct gh_txn t;
};

/* ---- store.c ---- */
int gh__mdb_err(gh_txn *txn, int rc, const char *what);
#define DBI(txn, db) ((txn)->store->dbi[(db)])

/* ---- record.c: keys ---- */
void gh__put_u64(uint8_t *p, uint64_t v);
uint64_t gh__get_u64(const uint8_t *p);
void gh__put_u32(uint8_t *p, uint32_t v);
uint32_t gh__get_u32(const uint8_t *p);
void gh__member_key(uint8_t key[GH_MEMBER_KEY_LEN], gh_member m);
int gh__member_from_key(const void *key, size_t len, gh_member *m);
/* "upstream\0key" into buf (at least GH_NAME_MAX + GH_KEY_MAX + 2); returns length. */
size_t gh__origin_key(char *buf, const char *upstream, const char *key);

/* ---- record.c: raw get/put ---- */
/* 0, GH_ENOTFOUND, or another GH_E*. */
int gh__get(gh_txn *txn, int db, const void *key, size_t klen, MDB_val *val);
int gh__put(gh_txn *txn, int db, const void *key, size_t klen, const void *data, size_t dlen,
            unsigned flags);
/* Deletes key (data NULL: every duplicate). GH_ENOTFOUND when absent. */
int gh__del(gh_txn *txn, int db, const void *key, size_t klen, const void *data, size_t dlen);
int gh__get_id(gh_txn *txn, int db, const void *key, size_t klen, uint64_t *id);
/* GH_EEXISTS when key is in db under another id than self. */
int gh__taken(gh_txn *txn, int db, const void *key, size_t klen, uint64_t self);
/* Moves one unique index entry from oldkey to newkey (either may be NULL). */
int gh__reindex(gh_txn *txn, int db, const void *oldkey, size_t oldlen, const void *newkey,
                size_t newlen, const uint8_t idkey[8]);
/* The unique identity of a user or group record and the indices keeping it. */
typedef struct gh__ident {
    const char *name;
    uint32_t num; /* uid or gid */
    const char *origin, *origin_key;
} gh__ident;
typedef struct gh__ident_kind {
    const char *what;    /* "user", "group" (messages) */
    const char *numword; /* "uid", "gid" */
    int name_db, num_db, origin_db;
} gh__ident_kind;
/* Moves record id's entries in the name, number and origin indices from old
 * to n, refusing (GH_EEXISTS, message set) what another record holds. */
int gh__ident_move(gh_txn *txn, const gh__ident_kind *k, uint64_t id, const gh__ident *old,
                   const gh__ident *n);
/* Walks a name -> id index in name order (see gh_store_user_list for the
 * meaning of prefix, after and limit); fn returning > 0 stops with 0, < 0
 * stops with that error. */
typedef int (*gh__id_fn)(gh_txn *txn, uint64_t id, void *arg);
int gh__name_walk(gh_txn *txn, int db, const char *prefix, const char *after, size_t limit,
                  gh__id_fn fn, void *arg);
int gh__json_get(gh_txn *txn, int db, const void *key, size_t klen, json_t **out);
int gh__json_put(gh_txn *txn, int db, const void *key, size_t klen, json_t *obj);

/* ---- record.c: records <-> JSON ---- */
/* Writes the fields named in mask into obj (keys other code wrote survive). */
int gh__user_to_json(json_t *obj, const gh_user *u, unsigned mask);
int gh__user_from_json(const json_t *obj, gh_user *u);
int gh__group_to_json(json_t *obj, const gh_group *g, unsigned mask);
int gh__group_from_json(const json_t *obj, gh_group *g);
int gh__role_to_json(json_t *obj, const gh_role *r);
int gh__role_from_json(const json_t *obj, gh_role **out);
json_t *gh__binding_to_json(const gh_binding *b);
int gh__binding_from_json(const json_t *obj, gh_binding *b);
int gh__json_str(const json_t *obj, const char *key, char *dst, size_t dstsize);

/* ---- store_misc.c: meta, change log ---- */
int gh__meta_get_u64(gh_txn *txn, const char *key, uint64_t *v); /* GH_ENOTFOUND */
int gh__meta_put_u64(gh_txn *txn, const char *key, uint64_t v);
/* Next value of a counter: meta key, or (absent) last key of db + 1. */
int gh__next_id(gh_txn *txn, const char *metakey, int db, uint64_t *id);
int gh__authz_bump(gh_txn *txn);
int gh__log(gh_txn *txn, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- store_user.c / store_group.c ---- */
/* A fixed-size text field must be NUL-terminated inside its array (GH_ETOOBIG). */
int gh__terminated(gh_txn *txn, const char *what, const char *s, size_t size);
/* origin "" (local, no key/dn) or an upstream name with a key. */
int gh__origin_valid(gh_txn *txn, const char *origin, const char *key, const char *dn);
/* First uid/gid >= max(uid_min, meta hint) free in index db (DB_USER_UID/DB_GROUP_GID). */
int gh__assign_number(gh_txn *txn, const char *metakey, int db, uint32_t *out);
#define GH_ORIGIN_KEY_MAX (GH_NAME_MAX + GH_KEY_MAX + 2)
int gh__subject_exists(gh_txn *txn, gh_member m);
/* Text naming a member for change-log targets ("alice", "group:devs"). */
void gh__member_label(gh_txn *txn, gh_member m, char *buf, size_t len);
/* Removes every membership of member m (both directions). */
int gh__member_drop_all(gh_txn *txn, gh_member m);
/* Recomputes user_groups_eff of one user from member_of edges. */
int gh__closure_recompute(gh_txn *txn, uint64_t user_id);

/* ---- store_role.c ---- */
/* Removes every binding of subject m (cascade on user/group delete). */
int gh__bindings_drop_subject(gh_txn *txn, gh_member m);

/* ---- store_misc.c: tokens ---- */
/* Rebuilds the user -> token index from the token records and drops tokens
 * of users that no longer exist (migration to schema version 2). */
int gh__tokens_reindex(gh_txn *txn, size_t *fixed);

/* ---- migrate.c ---- */
/* Brings a database at version from up to GH_SCHEMA_VERSION in txn. */
int gh__migrate(gh_txn *txn, uint32_t from);

/* ---- a set of u64 ids (open addressing) with insertion order kept ---- */
typedef struct gh__idset {
    uint64_t *ids; /* insertion order */
    size_t n, cap;
    uint64_t *slots; /* hash table of id + 1 (0 = empty) */
    size_t nslots;
} gh__idset;
void gh__idset_init(gh__idset *s);
void gh__idset_free(gh__idset *s);
/* 1 if added, 0 if already present, GH_ENOMEM. */
int gh__idset_add(gh__idset *s, uint64_t id);
int gh__idset_has(const gh__idset *s, uint64_t id);

#endif
