/*
 * store.h: the data model of Gatehouse and its LMDB layout behind one API.
 *
 * One LMDB environment in the state directory holds users, groups,
 * memberships (both directions plus each user's effective-group closure),
 * roles, bindings, tokens, the change log, per-upstream sync state and
 * metadata. Records are versioned JSON documents (field "v"); fields this
 * program does not know survive a read-modify-write.
 *
 * Reads go through a gh_store_reader that the caller owns and reuses
 * (mdb_txn_reset/renew: nanoseconds per use). Writes go through
 * gh_store_write_batch: every op runs in its own nested transaction inside one
 * durable commit (group commit), so one op's failure never undoes another's.
 * A write fn may run more than once (the batch is retried after the map grows
 * on MDB_MAP_FULL), so it must depend only on its argument and the txn.
 *
 * Every mutating gh_store_* call appends to the change log in the same
 * transaction, names its actor from gh_txn_set_actor, and on error leaves a
 * human message in gh_txn_errmsg(txn). A transaction never spans a callback.
 */
#ifndef GH_STORE_H
#define GH_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "schema/error.h"
#include "schema/schema.h"

typedef struct gh_store gh_store;
typedef struct gh_txn gh_txn;
typedef struct gh_store_reader gh_store_reader;

typedef struct gh_store_opts {
    const char *state_dir;    /* directory holding data.mdb; created 0700 if missing */
    size_t map_size;          /* initial map size in bytes (0: 64 MiB) */
    size_t map_max;           /* growth limit in bytes (0: 16 GiB) */
    unsigned int max_readers; /* 0: 126 */
    uint32_t uid_min;         /* first automatically assigned uid/gid number (0: 10000) */
    int no_sync;              /* tests only: skip fsync (never in the server) */
    int rerun_writes;         /* tests only: every write fn first runs in a nested txn
                                 that is aborted, then again for real (see store.c) */
} gh_store_opts;

/* ---- environment ---- */

/* Opens (creating if needed) the environment, runs mdb_reader_check, migrates
 * an older schema in one transaction, refuses a newer one with GH_EVERSION.
 * errbuf (may be NULL) receives a message on failure. */
int gh_store_open(gh_store **out, const gh_store_opts *opts, char *errbuf, size_t errlen);
void gh_store_close(gh_store *s);
/* Bytes used by the data file and the current map size. */
int gh_store_size(gh_store *s, uint64_t *used, uint64_t *mapsize);
/* Writes a compacted copy of the last committed state to fd (a data.mdb
 * another gh_store_open can open). Blocks for the length of the copy: run it
 * on a thread of its own, into a local file (store_backup.c says why). */
int gh_store_copy_fd(gh_store *s, int fd);
/* Unmaps the data file's pages from this process (MADV_DONTNEED over the
 * LMDB map, which is read-only): they stay in the kernel's page cache and the
 * next read faults them back in. Lowers the file pages VmRSS counts, not
 * what the machine caches. Safe with snapshots open on any thread. */
int gh_store_trim_map(gh_store *s);

/* ---- read transactions ---- */

int gh_store_reader_new(gh_store *s, gh_store_reader **out);
void gh_store_reader_free(gh_store_reader *r);
/* Starts a snapshot (renews the cached txn); pair with gh_store_read_end. */
int gh_store_read_begin(gh_store_reader *r, gh_txn **out);
void gh_store_read_end(gh_store_reader *r);

/* ---- write transactions ---- */

typedef int (*gh_store_write_fn)(gh_txn *txn, void *arg);

typedef struct gh_store_op {
    gh_store_write_fn fn;
    void *arg;
    int rc;                  /* out: fn's result (0 or GH_E*) */
    char err[GH_ERRMSG_MAX]; /* out: message when rc != 0 */
} gh_store_op;

/* Runs every op in its own nested txn and commits once (fsync). Returns 0 when
 * the commit is durable (individual ops may still have failed: see op->rc), or
 * a negative code when nothing was committed (then every op->rc is that code). */
int gh_store_write_batch(gh_store *s, gh_store_op *ops, size_t n);
/* One op, one commit: convenience for tools and tests. */
int gh_store_write(gh_store *s, gh_store_write_fn fn, void *arg, char *errbuf, size_t errlen);

/* Actor recorded in change-log entries written through this txn ("uid:0",
 * "user:alice", "sync:corp"). Copied. */
void gh_txn_set_actor(gh_txn *txn, const char *actor);
const char *gh_txn_errmsg(gh_txn *txn);
/* Sets the txn's error message (printf-style) and returns err. */
int gh_txn_fail(gh_txn *txn, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int64_t gh_txn_now(gh_txn *txn); /* wall-clock seconds, fixed per txn */

/* ---- users ---- */

/* Fills u->id, u->uid (when 0), created, modified. Validates everything;
 * refuses duplicates of name, uid and (upstream) origin key. */
int gh_store_user_add(gh_txn *txn, gh_user *u);
int gh_store_user_get(gh_txn *txn, const char *name, gh_user *out);
int gh_store_user_get_by_id(gh_txn *txn, uint64_t id, gh_user *out);
/* The id behind a login: one index lookup, no record decoded (hot path). */
int gh_store_user_id(gh_txn *txn, const char *name, uint64_t *id);
int gh_store_user_get_by_uid(gh_txn *txn, uint32_t uid, gh_user *out);
int gh_store_user_get_by_origin(gh_txn *txn, const char *upstream, const char *key, gh_user *out);
/* Rewrites the fields named in mask (GH_UF_*) of the user with u->id; a
 * GH_UF_NAME change renames (index updated, id kept). Unknown fields kept.
 * A user left not active, or tombstoned, loses every token in the same txn. */
int gh_store_user_update(gh_txn *txn, const gh_user *u, unsigned mask);
/* Deletes the user and, in the same txn, its memberships, bindings, tokens. */
int gh_store_user_del(gh_txn *txn, uint64_t id);
/* Users in login order, name > after (NULL: from the start) and starting with
 * prefix (NULL: all); stops after limit or when cb returns non-zero. */
typedef int (*gh_store_user_cb)(const gh_user *u, void *arg);
int gh_store_user_list(gh_txn *txn, const char *prefix, const char *after, size_t limit,
                       gh_store_user_cb cb, void *arg);
int gh_store_user_count(gh_txn *txn, uint64_t *count);

/* Hot paths (check, whoami, auth): the fields they need, read in place from a
 * binary index value without decoding the JSON record. name and verifier
 * point into the read snapshot (valid until the txn ends, no NUL). */
typedef struct gh_user_hot {
    uint64_t id;
    uint32_t uid;
    gh_user_state state;
    int upstream; /* origin is an upstream (origin, key and DN need the record) */
    int64_t tombstone;
    int64_t verifier_time;
    const char *name;
    size_t name_len;
    const char *verifier; /* "" (len 0) when the user has no password */
    size_t verifier_len;
    uint32_t gid;             /* primary gid (0: none) */
    const char *display_name; /* "" (len 0) when unset */
    size_t display_name_len;
    const char *mail;
    size_t mail_len;
} gh_user_hot;
int gh_store_user_hot(gh_txn *txn, uint64_t id, gh_user_hot *out);
int gh_store_user_hot_by_name(gh_txn *txn, const char *name, gh_user_hot *out);
/* Users' hot values in login order, name > after (NULL: from the start), no
 * record decoded (the LDAP front-end's scans); stops when cb returns non-zero
 * (a negative value is returned, a positive one means "enough": 0). */
typedef int (*gh_store_user_hot_cb)(const gh_user_hot *h, void *arg);
int gh_store_user_list_hot(gh_txn *txn, const char *after, gh_store_user_hot_cb cb, void *arg);
/* What auth needs in out (id, name, uid, state, tombstone, verifier and its
 * time; other text fields empty) from the hot value; the whole record for a
 * user from an upstream (its bind needs origin and DN). */
int gh_store_user_get_auth(gh_txn *txn, const char *name, gh_user *out);

/* ---- groups and memberships ---- */

int gh_store_group_add(gh_txn *txn, gh_group *g);
int gh_store_group_get(gh_txn *txn, const char *name, gh_group *out);
int gh_store_group_get_by_id(gh_txn *txn, uint64_t id, gh_group *out);
int gh_store_group_get_by_gid(gh_txn *txn, uint32_t gid, gh_group *out);
int gh_store_group_get_by_origin(gh_txn *txn, const char *upstream, const char *key, gh_group *out);
int gh_store_group_update(gh_txn *txn, const gh_group *g, unsigned mask); /* GH_GF_* */
/* Deletes the group, its memberships both ways (closures recomputed) and bindings. */
int gh_store_group_del(gh_txn *txn, uint64_t id);
typedef int (*gh_store_group_cb)(const gh_group *g, void *arg);
int gh_store_group_list(gh_txn *txn, const char *prefix, const char *after, size_t limit,
                        gh_store_group_cb cb, void *arg);
int gh_store_group_count(gh_txn *txn, uint64_t *count);
/* Hot paths: a group's id by name (index only) and its name by id, in place
 * (valid until the txn ends, no NUL). */
int gh_store_group_id(gh_txn *txn, const char *name, uint64_t *id);
int gh_store_group_name(gh_txn *txn, uint64_t id, const char **name, size_t *len);
/* The same with the group's gid (nss.initgroups: a thousand groups a call). */
int gh_store_group_hot(gh_txn *txn, uint64_t id, uint32_t *gid, const char **name, size_t *len);
/* The same with the group's tombstone (0: live), or -1 when the stored value
 * predates it (then only the record says: gh_store_group_get_by_id). */
int gh_store_group_hot_tomb(gh_txn *txn, uint64_t id, uint32_t *gid, const char **name, size_t *len,
                            int64_t *tombstone);

/* Adds member (a user, or a subgroup: nesting) to group. GH_EEXISTS when
 * already a direct member, GH_ECYCLE when a subgroup would contain itself.
 * Maintains every affected user's effective-group closure. */
int gh_store_member_add(gh_txn *txn, uint64_t group_id, gh_member m);
int gh_store_member_remove(gh_txn *txn, uint64_t group_id, gh_member m);
typedef int (*gh_store_id_cb)(uint64_t id, void *arg);
typedef int (*gh_store_member_cb)(gh_member m, void *arg);
/* Direct members (users and subgroups) of a group. */
int gh_store_group_members(gh_txn *txn, uint64_t group_id, gh_store_member_cb cb, void *arg);
/* Users that are members directly or through nested subgroups (each once). */
int gh_store_group_effective_users(gh_txn *txn, uint64_t group_id, gh_store_id_cb cb, void *arg);
/* Groups that directly contain member m. */
int gh_store_member_of(gh_txn *txn, gh_member m, gh_store_id_cb cb, void *arg);
/* Every user (group) whose name equals name when ASCII letters are compared
 * without case, in name order, through the name index (schema/store_fold.c:
 * seeks along the spellings that exist, no second index); cb returning > 0
 * stops with 0, < 0 with that code. GH_ETOOBIG past GH_STORE_FOLD_SEEKS
 * seeks (many names differing only in case): the caller must not take the
 * matches so far as all of them. */
#define GH_STORE_FOLD_SEEKS 128
int gh_store_user_ids_nocase(gh_txn *txn, const char *name, gh_store_id_cb cb, void *arg);
int gh_store_group_ids_nocase(gh_txn *txn, const char *name, gh_store_id_cb cb, void *arg);
/* A user's effective groups (closure, kept at write time): one index lookup. */
int gh_store_user_groups(gh_txn *txn, uint64_t user_id, gh_store_id_cb cb, void *arg);
/* 1 when group_id is among the user's effective groups, 0 when not, or < 0. */
int gh_store_user_in_group(gh_txn *txn, uint64_t user_id, uint64_t group_id);

/* ---- roles ---- */

/* Roles are heap objects (variable rules/parents): free with gh_role_free. */
int gh_store_role_add(gh_txn *txn, const gh_role *r); /* parents must exist; no cycle */
int gh_store_role_get(gh_txn *txn, const char *name, gh_role **out);
int gh_store_role_set(gh_txn *txn, const gh_role *r); /* replaces all fields of r->name */
/* force = 0: GH_EINUSE while bound or inherited from; force = 1: removes the
 * bindings and the parent references too. */
int gh_store_role_del(gh_txn *txn, const char *name, int force);
typedef int (*gh_store_role_cb)(const gh_role *r, void *arg);
int gh_store_role_list(gh_txn *txn, gh_store_role_cb cb, void *arg);
/* Names of roles that list name among their parents. */
typedef int (*gh_store_name_cb)(const char *name, void *arg);
int gh_store_role_children(gh_txn *txn, const char *name, gh_store_name_cb cb, void *arg);

/* ---- bindings ---- */

int gh_store_binding_add(gh_txn *txn, gh_binding *b); /* fills b->id, b->created */
int gh_store_binding_get(gh_txn *txn, uint64_t id, gh_binding *out);
int gh_store_binding_find(gh_txn *txn, const gh_binding *like,
                          gh_binding *out); /* same role, subject, scope */
int gh_store_binding_del(gh_txn *txn, uint64_t id);
typedef int (*gh_store_binding_cb)(const gh_binding *b, void *arg);
int gh_store_bindings_of_subject(gh_txn *txn, gh_member subject, gh_store_binding_cb cb, void *arg);
int gh_store_bindings_of_role(gh_txn *txn, const char *role, gh_store_binding_cb cb, void *arg);
int gh_store_binding_list(gh_txn *txn, gh_store_binding_cb cb, void *arg);

/* Bumped by every write that can change an authorization decision (roles,
 * bindings, memberships, user state, deletions). Caches compare it. */
int gh_store_authz_gen(gh_txn *txn, uint64_t *gen);
/* The id of a read snapshot: two snapshots with the same id see the same
 * data (a cache may skip re-reading what it read in an equal one).
 * GH_ENOTFOUND for a write txn. */
int gh_store_snapshot_id(gh_txn *txn, uint64_t *id);

/* ---- tokens (stored by keyed hash only) ---- */

int gh_store_token_put(gh_txn *txn, const gh_token *t);
int gh_store_token_get(gh_txn *txn, const uint8_t hash[GH_TOKEN_HASH_BYTES], gh_token *out);
int gh_store_token_del(gh_txn *txn, const uint8_t hash[GH_TOKEN_HASH_BYTES]);
/* Deletes tokens expired at or before now; *purged gets the count. */
int gh_store_token_purge(gh_txn *txn, int64_t now, size_t *purged);
/* Revokes every token (session) of a user in this txn; *revoked (may be NULL)
 * gets the count. The store calls it itself when a user's state leaves active
 * or the user is tombstoned or deleted; a password change calls it explicitly
 * (a rehash of the same password must not log anyone out). */
int gh_store_token_revoke_user(gh_txn *txn, uint64_t user_id, size_t *revoked);
/* A user's tokens (expired ones too, until purged), through the user->token
 * index; cb returning non-zero stops (a negative value is returned). */
typedef int (*gh_store_token_cb)(const gh_token *t, void *arg);
int gh_store_token_list_user(gh_txn *txn, uint64_t user_id, gh_store_token_cb cb, void *arg);

/* ---- change log ---- */

typedef struct gh_change {
    uint64_t seq;
    int64_t time;
    char actor[GH_NAME_MAX + 16];
    char op[32];                /* "user.add", "group.add_member", "role.del", ... */
    char target[GH_DN_MAX + 1]; /* "alice", "admins<-alice", "binding:7" */
} gh_change;

int gh_store_changelog_seq(gh_txn *txn, uint64_t *seq); /* last sequence (0: empty) */
typedef int (*gh_store_change_cb)(const gh_change *c, void *arg);
/* Entries with seq > since, in order, at most limit (0: no limit). */
int gh_store_changelog_list(gh_txn *txn, uint64_t since, size_t limit, gh_store_change_cb cb,
                            void *arg);
/* Appends an entry for a write made outside the gh_store_* record calls
 * (for example "sync.run"). */
int gh_store_changelog_append(gh_txn *txn, const char *op, const char *target);
/* Deletes the oldest entries whose time is before `before`, at most max of
 * them (a small batch: the writer is not held long); *pruned gets the count.
 * Sequence numbers are never reused. Logs one "audit.prune" entry when any. */
int gh_store_changelog_prune(gh_txn *txn, int64_t before, size_t max, size_t *pruned);

/* ---- per-upstream sync state and metadata (opaque blobs) ---- */

/* *out is malloc'd (caller frees); GH_ENOTFOUND when absent. */
int gh_store_sync_get(gh_txn *txn, const char *upstream, char **out, size_t *len);
int gh_store_sync_put(gh_txn *txn, const char *upstream, const char *data, size_t len);
int gh_store_schema_version(gh_txn *txn, uint32_t *version);

#endif
