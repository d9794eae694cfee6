/*
 * sync-int.h: internals of the LDAP federation module (sync/sync*.c).
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
 *     in the writer's submit_wait, so the batch is never touched by two at once.
 * Fields shared between the loop and a worker (requests, status) live under
 * gh__sync_upstream.mu. The thing to know before changing anything: a sync cookie
 * is only ever written by the same apply call as the entries it covers.
 */
#ifndef GH_SYNC_INT_H
#define GH_SYNC_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <ldap.h>

#include "sync/sync.h"

#define GH__SYNC_MAX_DCS 16 /* AD domain controllers whose marks are kept */

enum { GH__SYNC_MODE_PERSIST = 0, GH__SYNC_MODE_POLL = 1, GH__SYNC_MODE_SEARCH = 2 };
enum { GH__SYNC_MEMBER_DN = 0, GH__SYNC_MEMBER_UID = 1 };
enum { GH__SYNC_KIND_USER = 0, GH__SYNC_KIND_GROUP = 1 };
/* flavor: what the upstream is; auto is decided from the RootDSE at connect */
enum {
    GH__SYNC_FLAVOR_AUTO = 0,
    GH__SYNC_FLAVOR_GENERIC = 1,
    GH__SYNC_FLAVOR_AD = 2,
    GH__SYNC_FLAVOR_389 = 3
};
/* gh__sync_key_text forms of a binary key */
enum { GH__SYNC_KEY_TEXT = 0, GH__SYNC_KEY_UUID = 1, GH__SYNC_KEY_GUID = 2 };

/* One [upstream:NAME] section. Strings are malloc'd; "" disables an optional
 * attribute mapping. */
struct gh_sync_upstream_cfg {
    char name[GH_NAME_MAX + 1];
    char *uri;
    char *bind_dn;
    char *bind_password_file;
    char *bind_password; /* read by gh_sync_config_finish; wiped on free */
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
    int flavor;              /* GH__SYNC_FLAVOR_* */
    unsigned set_keys;       /* str_keys given in the file (bit per index) */
    int mode_set;
    int starttls;
    int scope;       /* LDAP_SCOPE_SUBTREE or LDAP_SCOPE_ONELEVEL */
    int mode;        /* GH__SYNC_MODE_* */
    int member_kind; /* GH__SYNC_MEMBER_* */
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
void gh__sync_upstream_cfg_free(struct gh_sync_upstream_cfg *u);
struct gh_sync_upstream_cfg *gh__sync_upstream_cfg_dup(const struct gh_sync_upstream_cfg *u);
const char *gh__sync_mode_name(int mode);
/* Fingerprint of everything that shapes the searches: a cookie taken under
 * another fingerprint is dropped (new base or filter: full reload). */
void gh__sync_upstream_fingerprint(const struct gh_sync_upstream_cfg *u, char out[33]);

/* ---- sync_map.c: string-keyed hash map (values owned by the caller) ---- */
typedef struct gh__sync_map_ent {
    struct gh__sync_map_ent *next;
    void *val;
    size_t hash;
    char key[]; /* NUL-terminated */
} gh__sync_map_ent;

typedef struct gh__sync_map {
    gh__sync_map_ent **b;
    size_t nb, n;
} gh__sync_map;

void gh__sync_map_init(gh__sync_map *m);
/* Frees the entries; vfree (may be NULL) is called on each value. */
void gh__sync_map_clear(gh__sync_map *m, void (*vfree)(void *));
void *gh__sync_map_get(const gh__sync_map *m, const char *key);
/* Inserts or replaces; *old (may be NULL) gets the replaced value. */
int gh__sync_map_put(gh__sync_map *m, const char *key, void *val, void **old);
/* Removes key; returns its value (NULL when absent). */
void *gh__sync_map_del(gh__sync_map *m, const char *key);
/* Calls cb for each entry; cb must not modify the map. */
void gh__sync_map_each(const gh__sync_map *m, void (*cb)(const char *key, void *val, void *arg),
                       void *arg);

/* ---- sync_apply.c: the batch handed to the writer ---- */
enum {
    GH__SYNC_CH_USER = 1,   /* add or update a mirrored user */
    GH__SYNC_CH_GROUP = 2,  /* add or update a mirrored group (members reconciled) */
    GH__SYNC_CH_DELETE = 3, /* upstream deleted key: tombstone it */
    GH__SYNC_CH_LINK = 4,   /* add one member that was unresolved when its group came */
    GH__SYNC_CH_PURGE = 5,  /* tombstone past its grace: delete for good */
    GH__SYNC_CH_EXPIRE = 6, /* AD: the stored accountExpires has passed: upstream "expired" */
    GH__SYNC_CH_REKEY = 7   /* key -> link.key (link.kind): a key of an older scheme */
};

typedef struct gh__sync_ref {
    int kind; /* GH__SYNC_KIND_* */
    char key[GH_KEY_MAX + 1];
} gh__sync_ref;

typedef struct gh__sync_change {
    int type;
    char key[GH_KEY_MAX + 1];
    gh_user u;             /* GH__SYNC_CH_USER: mapped fields, origin_dn */
    gh_group g;            /* GH__SYNC_CH_GROUP: mapped fields, origin_dn */
    gh__sync_ref *members; /* GH__SYNC_CH_GROUP: resolved members */
    size_t nmembers;
    int superseded;    /* a later change of the same group carries its members */
    gh__sync_ref link; /* GH__SYNC_CH_LINK: member to add to group key; _REKEY: new key */
} gh__sync_change;

typedef struct gh__sync_counts {
    uint64_t added, modified, renamed, disabled, purged, skipped;
    uint64_t foreign; /* AD ForeignSecurityPrincipal members, skipped by design */
} gh__sync_counts;

/* A tombstone set (time > 0) or cleared (time == 0) or purged (time < 0). */
typedef struct gh__sync_tombfx {
    char key[GH_KEY_MAX + 1];
    int64_t time;
} gh__sync_tombfx;

typedef struct gh__sync_batch {
    const struct gh_sync_upstream_cfg *cfg;
    gh__sync_change *ch;
    size_t n, cap;
    char *blob; /* sync state to store with these entries (NULL: none) */
    size_t bloblen;
    uint64_t pre_skipped; /* counted by the worker (bad entries, unresolved members) */
    uint64_t pre_foreign; /* ForeignSecurityPrincipal members seen by the worker */
    char pre_err[GH_ERRMSG_MAX];
    /* results, reset by every apply (it may run more than once) */
    gh__sync_counts res;
    char err[GH_ERRMSG_MAX];
    gh__sync_tombfx *fx;
    size_t nfx, capfx;
} gh__sync_batch;

void gh__sync_batch_reset(gh__sync_batch *b);
void gh__sync_batch_free(gh__sync_batch *b);
/* Appends a zeroed change; NULL on ENOMEM. */
gh__sync_change *gh__sync_batch_add(gh__sync_batch *b, int type, const char *key);
/* The write fn: runs on the writer thread inside a nested txn. */
int gh__sync_apply(gh_txn *txn, void *arg);

/* ---- sync_auth.c: binds for upstream users, on their own threads ---- */
typedef struct gh__sync_auth gh__sync_auth;
struct gh__sync_upstream;
/* Counts of upstream binds, kept and read on the loop thread only. */
typedef struct gh__sync_bindstats {
    uint64_t attempted, accepted, refused, network_errors, errors, rate_limited, cleared;
    unsigned in_flight;
} gh__sync_bindstats;
int gh__sync_auth_start(gh__sync_auth **out, uv_loop_t *loop, const gh_sync_writer *writer,
                        unsigned nthreads);
/* Joins the threads; jobs not yet answered get GH_EUNAVAIL (offline_ok 0). */
void gh__sync_auth_stop(gh__sync_auth *a);
/* Loop thread. Admission (the in-flight caps) happens here: GH_ERATE when a
 * cap is reached, and cb is then never called. */
int gh__sync_auth_submit(gh__sync_auth *a, struct gh__sync_upstream *up, const gh_user *u,
                         const char *peer, const char *password, gh_sync_auth_cb cb, void *arg);
/* ---- sync_ldap.c: connection helpers shared by the worker and auth ---- */
/* Opens a connection with the upstream's TLS settings and the given network
 * and operation timeout (seconds); binds when dn is non-NULL. Returns an LDAP
 * result code (LDAP_SUCCESS) and a message in err. */
int gh__sync_ldap_open(const struct gh_sync_upstream_cfg *cfg, unsigned timeout, const char *dn,
                       const char *password, size_t pwlen, LDAP **out, char *err, size_t errlen);
/* Normalized form of a DN for comparisons ("" when it does not parse): LDAPv3
 * string form, ASCII lower-cased. Caller frees. */
char *gh__sync_dn_norm(const char *dn);
/* Upstream key as text (form GH__SYNC_KEY_*): 16 raw bytes as a UUID string in
 * RFC 4122 byte order (syncUUID, entryUUID) or Active Directory's GUID order
 * (objectGUID: first three fields little-endian), otherwise the value. */
int gh__sync_key_text(const struct berval *bv, int form, char *out, size_t outlen);
/* A binary SID as "S-1-5-21-...". */
int gh__sync_sid_text(const struct berval *bv, char *out, size_t outlen);

/* ---- the worker's state (sync.c, sync_worker.c, sync_model.c) ---- */

typedef struct gh__sync_keylist {
    char **v;
    size_t n, cap;
} gh__sync_keylist;

typedef struct gh__sync_obj {
    int kind;
    char key[GH_KEY_MAX + 1];
    char *ndn;                   /* normalized DN, "" when unknown */
    char login[GH_NAME_MAX + 1]; /* users: for memberUid */
    size_t pending;              /* groups: index + 1 of its change in the batch */
    gh__sync_keylist unres;      /* groups: member references not resolved yet */
    char *psid;                  /* AD users: SID of the primary group (NULL: unknown) */
    char *sid;                   /* AD groups: objectSid (NULL: unknown) */
    int64_t expires;             /* AD users: accountExpires (unix s, 0: never) */
    int expired;                 /* ... and the store says "expired" already */
} gh__sync_obj;

typedef struct gh__sync_model {
    gh__sync_map by_key;   /* key -> obj (owned) */
    gh__sync_map by_dn;    /* ndn -> obj */
    gh__sync_map by_login; /* login -> obj (users) */
    gh__sync_map parked;   /* unresolved member ref -> gh__sync_keylist of group keys */
    gh__sync_map tomb;     /* key -> int64_t* tombstone time */
    /* AD primary groups (primaryGroupID is not in the group's member list):
     * group SID -> gh__sync_keylist of user keys, and group SID -> group obj */
    gh__sync_map by_psid;
    gh__sync_map by_sid;
    size_t nusers, ngroups;
} gh__sync_model;

struct gh__sync_upstream;

typedef struct gh__sync_session {
    struct gh__sync_upstream *up;
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
    gh__sync_map present; /* keys present or added during this refresh */
    char *cookie;         /* last stored cookie (NULL: none) */
    size_t cookielen;
} gh__sync_session;

typedef struct gh__sync_status {
    const char *state;
    int connected;
    int64_t last_success, last_attempt, current_at, next_run;
    char last_error[GH_ERRMSG_MAX];
    uint64_t users, groups, tombstones;
    char cookie[2 * 1000 + 32]; /* both cookies whole, or their hashes */
    gh__sync_counts last_run, total;
    uint64_t entries_received, runs;
} gh__sync_status;

typedef struct gh__sync_upstream {
    gh_sync *s;
    struct gh_sync_upstream_cfg *cfg;
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
    gh__sync_status st;

    /* worker thread only */
    LDAP *ld;
    int ad;             /* Active Directory: flavor = ad, or detected from the RootDSE */
    int ds389;          /* 389 Directory Server: flavor = 389ds, or detected */
    gh__sync_map alias; /* 389-ds syncrepl: sync UUID (from nsUniqueId) -> entryUUID key */
    /* AD incremental runs: one high-water mark per DC, stored with the
     * mirror, and the position read from this run's DC before its searches */
    struct gh__sync_admark {
        uint64_t usn;
        char inv[40];           /* the DC's invocationId */
        char dc[GH_DN_MAX + 1]; /* its dsServiceName */
        int64_t seen;           /* last run on it (wall clock): the oldest goes first */
    } marks[GH__SYNC_MAX_DCS], mark_next;
    size_t nmarks;
    int64_t full_at, full_at_next; /* last full run (wall clock), on any DC */
    int mark_pending;              /* mark_next goes with the run's last batch */
    uint64_t hold_usn;             /* lowest uSNChanged of an entry to read again (0: none) */
    int hold_nousn;                /* ... one without a readable uSNChanged: no mark */
    int rekeyed;                   /* entries adopted from an older key scheme this run */
    int recount_due;               /* persist: counts to take from the store when idle */
    long long ad_lockout_duration; /* AD domain's lockoutDuration (100 ns, <= 0) */
    int primary_known;             /* AD: a full run since the model was loaded saw every
                                      user's primary group, so incremental runs may follow */
    gh__sync_session sess[2];
    gh__sync_model m;
    gh__sync_batch b;
    gh__sync_map del_held; /* deletions seen during a refresh, applied at its end */
    gh__sync_counts run;   /* counts of the current run */
    int force;             /* this run may exceed max_delete_ratio */
    int halted;
    unsigned backoff; /* seconds before the next reconnect after a failure */
    int64_t next_purge;

    /* loop thread only */
    gh__sync_bindstats binds;
} gh__sync_upstream;

struct gh_sync {
    uv_loop_t *loop;
    gh_store *store;
    gh_sync_writer writer;
    gh__sync_upstream **ups;
    size_t nups;
    gh__sync_auth *auth;
    uv_timer_t watchdog;
    int have_timer;
};

/* sync_map.c */
int gh__sync_keylist_add(gh__sync_keylist *l, const char *s);
void gh__sync_keylist_free(gh__sync_keylist *l);
void gh__sync_keylist_vfree(void *l);

/* sync_model.c */
void gh__sync_model_free(gh__sync_model *m);
/* t > 0: tombstone time; t <= 0: no longer a tombstone. */
int gh__sync_tomb_set(gh__sync_model *m, const char *key, int64_t t);
gh__sync_obj *gh__sync_model_put(gh__sync_model *m, int kind, const char *key, const char *dn,
                                 const char *login, int *changed_ref);
/* Queues an add/modify of an upstream entry (users or groups by kind). */
int gh__sync_queue_entry(gh__sync_upstream *up, int kind, LDAP *ld, LDAPMessage *e,
                         const char *key);
int gh__sync_queue_delete(gh__sync_upstream *up, const char *key);
void gh__sync_entry_skipped(gh__sync_upstream *up, const char *dn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A cookie as sync.status shows it: "NAME:<cookie>" whole when printable
 * and at most 1,000 bytes, else "NAME:blake2b-128:<hex>/<length>"; never
 * cut. Returns what snprintf returns. */
int gh__sync_cookie_show(const char *name, const char *cookie, size_t len, char *out,
                         size_t outlen);
/* AD: queues an EXPIRE for each mirrored user whose stored accountExpires
 * has passed since it was read (no change upstream marks that moment). */
int gh__sync_queue_expired(gh__sync_upstream *up);
/* AD: objectGUID key text in the other byte order (the raw order that keys
 * had before AD's form); an involution. GH_EINVAL when key is no UUID. */
int gh__sync_guid_swap(const char *key, char *out, size_t outlen);
/* Counts the batch's member references that point outside the mirror. */
void gh__sync_count_parked(gh__sync_upstream *up);

/* sync_worker.c */
void *gh__sync_worker(void *arg);
void gh__sync_session_release(gh__sync_session *ss);
int64_t gh__sync_mono_s(void);
int64_t gh__sync_wall_s(void);

#endif
