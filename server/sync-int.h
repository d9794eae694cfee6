/*
 * sync-int.h: internals of the LDAP federation module (server/sync*.c).
 *
 * Files: sync.c (loop side: start, stop, status, run, auth entry point),
 * sync_worker.c (the worker thread per upstream), sync_model.c (the worker's
 * model of the upstream, entries into changes), sync_apply.c (changes into
 * the store, on the writer thread), sync_auth.c (bind threads), sync_ldap.c
 * (libldap helpers), sync_config.c ([upstream:NAME]), sync_map.c (hash map).
 *
 * Three kinds of thread touch these structs, and each field belongs to one:
 *   - the loop thread: gh_sync itself, status reads, sync.run requests;
 *   - one worker per upstream: its LDAP handle, its model of the upstream and
 *     the batch it is building (no locks: nobody else reads them);
 *   - the writer thread: runs gh__sync_apply on a batch while the worker waits
 *     in gh_writer_submit_wait, so the batch is never touched by two at once.
 * Fields shared between the loop and a worker (requests, status) live under
 * gh__upstream.mu. The thing to know before changing anything: a sync cookie
 * is only ever written by the same apply call as the entries it covers.
 */
#ifndef GH_SYNC_INT_H
#define GH_SYNC_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <ldap.h>

#include "server/sync.h"

enum { GH__MODE_PERSIST = 0, GH__MODE_POLL = 1, GH__MODE_SEARCH = 2 };
enum { GH__MEMBER_DN = 0, GH__MEMBER_UID = 1 };
enum { GH__KIND_USER = 0, GH__KIND_GROUP = 1 };
/* flavor: what the upstream is; auto is decided from the RootDSE at connect */
enum { GH__FLAVOR_AUTO = 0, GH__FLAVOR_GENERIC = 1, GH__FLAVOR_AD = 2, GH__FLAVOR_389 = 3 };
/* gh__key_text forms of a binary key */
enum { GH__KEY_TEXT = 0, GH__KEY_UUID = 1, GH__KEY_GUID = 2 };

/* One [upstream:NAME] section. Strings are malloc'd; "" disables an optional
 * attribute mapping. */
struct gh_upstream_cfg {
    char name[GH_NAME_MAX + 1];
    char *uri;
    char *bind_dn;
    char *bind_password_file;
    char *bind_password; /* read by gh_upstream_config_finish; wiped on free */
    char *base_dn;
    char *user_filter;
    char *group_filter;
    char *login_attr;
    char *member_attr;
    char *uid_number_attr;
    char *gid_number_attr;
    char *display_name_attr;
    char *mail_attr;
    char *home_attr; /* POSIX fields (issue 12); "" = not mirrored */
    char *shell_attr;
    char *gecos_attr;
    char *key_attr;
    char *group_name_attr;
    char *description_attr;
    char *ca_file;
    char *uri_where;         /* "file:line: " of the uri key, for checks at finish */
    char *space_replacement; /* "" = names with spaces are skipped */
    int flavor;              /* GH__FLAVOR_* */
    unsigned set_keys;       /* str_keys given in the file (bit per index) */
    int mode_set;
    int starttls;
    int scope;       /* LDAP_SCOPE_SUBTREE or LDAP_SCOPE_ONELEVEL */
    int mode;        /* GH__MODE_* */
    int member_kind; /* GH__MEMBER_* */
    unsigned interval;
    unsigned page_size;
    unsigned timeout;
    unsigned bind_timeout;
    unsigned full_interval;       /* AD: seconds between full runs (0: always full) */
    unsigned max_binds;           /* binds queued or running for this upstream */
    unsigned max_binds_per_login; /* ... for one user */
    unsigned max_binds_per_peer;  /* ... for one client (the auth request's peer) */
    int offline_auth;
    int64_t offline_max_age;
    int64_t delete_grace;
    double max_delete_ratio;
    unsigned seen; /* keys given, for the required-key check */
};

/* ---- sync_config.c ---- */
struct gh_upstream_cfg *gh__upstream_cfg_dup(const struct gh_upstream_cfg *u);
const char *gh__mode_name(int mode);
/* Fingerprint of everything that shapes the searches: a cookie taken under
 * another fingerprint is dropped (new base or filter: full reload). */
void gh__upstream_fingerprint(const struct gh_upstream_cfg *u, char out[33]);

/* ---- sync_map.c: string-keyed hash map (values owned by the caller) ---- */
typedef struct gh__map_ent {
    struct gh__map_ent *next;
    void *val;
    size_t hash;
    char key[]; /* NUL-terminated */
} gh__map_ent;

typedef struct gh__map {
    gh__map_ent **b;
    size_t nb, n;
} gh__map;

void gh__map_init(gh__map *m);
/* Frees the entries; vfree (may be NULL) is called on each value. */
void gh__map_clear(gh__map *m, void (*vfree)(void *));
void *gh__map_get(const gh__map *m, const char *key);
/* Inserts or replaces; *old (may be NULL) gets the replaced value. */
int gh__map_put(gh__map *m, const char *key, void *val, void **old);
/* Removes key; returns its value (NULL when absent). */
void *gh__map_del(gh__map *m, const char *key);
/* Calls cb for each entry; cb must not modify the map. */
void gh__map_each(const gh__map *m, void (*cb)(const char *key, void *val, void *arg), void *arg);

/* ---- sync_apply.c: the batch handed to the writer ---- */
enum {
    GH__CH_USER = 1,   /* add or update a mirrored user */
    GH__CH_GROUP = 2,  /* add or update a mirrored group (members reconciled) */
    GH__CH_DELETE = 3, /* upstream deleted key: tombstone it */
    GH__CH_LINK = 4,   /* add one member that was unresolved when its group came */
    GH__CH_PURGE = 5   /* tombstone past its grace: delete for good */
};

typedef struct gh__ref {
    int kind; /* GH__KIND_* */
    char key[GH_KEY_MAX + 1];
} gh__ref;

typedef struct gh__change {
    int type;
    char key[GH_KEY_MAX + 1];
    gh_user u;        /* GH__CH_USER: mapped fields, origin_dn */
    gh_group g;       /* GH__CH_GROUP: mapped fields, origin_dn */
    gh__ref *members; /* GH__CH_GROUP: resolved members */
    size_t nmembers;
    int superseded; /* a later change of the same group carries its members */
    gh__ref link;   /* GH__CH_LINK: member to add to group key */
} gh__change;

typedef struct gh__counts {
    uint64_t added, modified, renamed, disabled, purged, skipped;
    uint64_t foreign; /* AD ForeignSecurityPrincipal members, skipped by design */
} gh__counts;

/* A tombstone set (time > 0) or cleared (time == 0) or purged (time < 0). */
typedef struct gh__tombfx {
    char key[GH_KEY_MAX + 1];
    int64_t time;
} gh__tombfx;

typedef struct gh__batch {
    const struct gh_upstream_cfg *cfg;
    gh__change *ch;
    size_t n, cap;
    char *blob; /* sync state to store with these entries (NULL: none) */
    size_t bloblen;
    uint64_t pre_skipped; /* counted by the worker (bad entries, unresolved members) */
    uint64_t pre_foreign; /* ForeignSecurityPrincipal members seen by the worker */
    char pre_err[GH_ERRMSG_MAX];
    /* results, reset by every apply (it may run more than once) */
    gh__counts res;
    char err[GH_ERRMSG_MAX];
    gh__tombfx *fx;
    size_t nfx, capfx;
} gh__batch;

void gh__batch_reset(gh__batch *b);
void gh__batch_free(gh__batch *b);
/* Appends a zeroed change; NULL on ENOMEM. */
gh__change *gh__batch_add(gh__batch *b, int type, const char *key);
/* The write fn: runs on the writer thread inside a nested txn. */
int gh__sync_apply(gh_txn *txn, void *arg);

/* ---- sync_auth.c: binds for upstream users, on their own threads ---- */
typedef struct gh__auth gh__auth;
struct gh__upstream;
/* Counts of upstream binds, kept and read on the loop thread only. */
typedef struct gh__bindstats {
    uint64_t attempted, accepted, refused, network_errors, errors, rate_limited, cleared;
    unsigned in_flight;
} gh__bindstats;
int gh__auth_start(gh__auth **out, uv_loop_t *loop, gh_writer *writer, unsigned nthreads);
/* Joins the threads; jobs not yet answered get GH_EUNAVAIL (offline_ok 0). */
void gh__auth_stop(gh__auth *a);
/* Loop thread. Admission (the in-flight caps) happens here: GH_ERATE when a
 * cap is reached, and cb is then never called. */
int gh__auth_submit(gh__auth *a, struct gh__upstream *up, const gh_user *u, const char *peer,
                    const char *password, gh_sync_auth_cb cb, void *arg);
/* ---- sync_ldap.c: connection helpers shared by the worker and auth ---- */
/* Opens a connection with the upstream's TLS settings and the given network
 * and operation timeout (seconds); binds when dn is non-NULL. Returns an LDAP
 * result code (LDAP_SUCCESS) and a message in err. */
int gh__ldap_open(const struct gh_upstream_cfg *cfg, unsigned timeout, const char *dn,
                  const char *password, size_t pwlen, LDAP **out, char *err, size_t errlen);
/* Normalized form of a DN for comparisons ("" when it does not parse): LDAPv3
 * string form, ASCII lower-cased. Caller frees. */
char *gh__dn_norm(const char *dn);
/* Upstream key as text (form GH__KEY_*): 16 raw bytes as a UUID string in
 * RFC 4122 byte order (syncUUID, entryUUID) or Active Directory's GUID order
 * (objectGUID: first three fields little-endian), otherwise the value. */
int gh__key_text(const struct berval *bv, int form, char *out, size_t outlen);
/* A binary SID as "S-1-5-21-...". */
int gh__sid_text(const struct berval *bv, char *out, size_t outlen);

/* ---- the worker's state (sync.c, sync_worker.c, sync_model.c) ---- */

typedef struct gh__keylist {
    char **v;
    size_t n, cap;
} gh__keylist;

typedef struct gh__obj {
    int kind;
    char key[GH_KEY_MAX + 1];
    char *ndn;                   /* normalized DN, "" when unknown */
    char login[GH_NAME_MAX + 1]; /* users: for memberUid */
    size_t pending;              /* groups: index + 1 of its change in the batch */
    gh__keylist unres;           /* groups: member references not resolved yet */
    char *psid;                  /* AD users: SID of the primary group (NULL: unknown) */
    char *sid;                   /* AD groups: objectSid (NULL: unknown) */
} gh__obj;

typedef struct gh__model {
    gh__map by_key;   /* key -> obj (owned) */
    gh__map by_dn;    /* ndn -> obj */
    gh__map by_login; /* login -> obj (users) */
    gh__map parked;   /* unresolved member ref -> gh__keylist of group keys */
    gh__map tomb;     /* key -> int64_t* tombstone time */
    /* AD primary groups (primaryGroupID is not in the group's member list):
     * group SID -> gh__keylist of user keys, and group SID -> group obj */
    gh__map by_psid;
    gh__map by_sid;
    size_t nusers, ngroups;
} gh__model;

struct gh__upstream;

typedef struct gh__session {
    struct gh__upstream *up;
    int kind;
    ldap_sync_t ls;
    int live;             /* ls initialised (ldap_sync_initialize) */
    int refreshing;       /* refresh phase not finished */
    int refresh_present;  /* the refresh ended in the present phase */
    int done;             /* searchResultDone seen */
    int refresh_required; /* e-syncRefreshRequired */
    int chain;            /* a message chain reached a callback */
    int failed;           /* a callback failed (memory, writer): restart */
    LDAPMessage *chain_head;
    unsigned long events;
    gh__map present; /* keys present or added during this refresh */
    char *cookie;    /* last stored cookie (NULL: none) */
    size_t cookielen;
} gh__session;

typedef struct gh__status {
    const char *state;
    int connected;
    int64_t last_success, last_attempt, current_at, next_run;
    char last_error[GH_ERRMSG_MAX];
    uint64_t users, groups, tombstones;
    char cookie[2 * 1000 + 32]; /* both cookies whole, or their hashes */
    gh__counts last_run, total;
    uint64_t entries_received, runs;
} gh__status;

typedef struct gh__upstream {
    gh_sync *s;
    struct gh_upstream_cfg *cfg;
    char actor[GH_NAME_MAX + 8];
    char fp[33];
    pthread_t th;
    int started;

    pthread_mutex_t mu; /* guards the block below */
    pthread_cond_t cv;
    int stop, run_req, run_full, run_force;
    int fd;              /* connected socket or -1 */
    int busy;            /* inside a blocking refresh or search */
    int64_t progress_at; /* last message seen while busy (monotonic s) */
    gh__status st;

    /* worker thread only */
    LDAP *ld;
    int ad;        /* Active Directory: flavor = ad, or detected from the RootDSE */
    int ds389;     /* 389 Directory Server: flavor = 389ds, or detected */
    gh__map alias; /* 389-ds syncrepl: sync UUID (from nsUniqueId) -> entryUUID key */
    /* AD incremental runs: the high-water mark stored with the mirror, and
     * the one read from the DC before this run's searches */
    struct gh__admark {
        uint64_t usn;
        char inv[40];           /* the DC's invocationId */
        char dc[GH_DN_MAX + 1]; /* its dsServiceName */
        int64_t full_at;        /* last full run (wall clock) */
    } mark, mark_next;
    int mark_pending;              /* mark_next goes with the run's last batch */
    int recount_due;               /* persist: counts to take from the store when idle */
    long long ad_lockout_duration; /* AD domain's lockoutDuration (100 ns, <= 0) */
    int primary_known;             /* AD: a full run since the model was loaded saw every
                                      user's primary group, so incremental runs may follow */
    gh__session sess[2];
    gh__model m;
    gh__batch b;
    gh__map del_held; /* deletions seen during a refresh, applied at its end */
    gh__counts run;   /* counts of the current run */
    int force;        /* this run may exceed max_delete_ratio */
    int halted;
    unsigned backoff; /* seconds before the next reconnect after a failure */
    int64_t next_purge;

    /* loop thread only */
    gh__bindstats binds;
} gh__upstream;

struct gh_sync {
    uv_loop_t *loop;
    gh_store *store;
    gh_writer *writer;
    gh__upstream **ups;
    size_t nups;
    gh__auth *auth;
    uv_timer_t watchdog;
    int have_timer;
};

/* sync_map.c */
int gh__keylist_add(gh__keylist *l, const char *s);
void gh__keylist_free(gh__keylist *l);
void gh__keylist_vfree(void *l);

/* sync_model.c */
void gh__model_free(gh__model *m);
/* t > 0: tombstone time; t <= 0: no longer a tombstone. */
int gh__tomb_set(gh__model *m, const char *key, int64_t t);
gh__obj *gh__model_put(gh__model *m, int kind, const char *key, const char *dn, const char *login,
                       int *changed_ref);
/* Queues an add/modify of an upstream entry (users or groups by kind). */
int gh__queue_entry(gh__upstream *up, int kind, LDAP *ld, LDAPMessage *e, const char *key);
int gh__queue_delete(gh__upstream *up, const char *key);
void gh__entry_skipped(gh__upstream *up, const char *dn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Counts the batch's member references that point outside the mirror. */
void gh__count_parked(gh__upstream *up);

/* sync_worker.c */
void *gh__sync_worker(void *arg);
void gh__session_release(gh__session *ss);
int64_t gh__mono_s(void);
int64_t gh__wall_s(void);

#endif
