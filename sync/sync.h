/*
 * sync.h: the sync module's one public header (LDAP federation). One worker thread per configured
 * upstream mirrors users and groups (RFC 4533 syncrepl through libldap's ldap_sync API, or paged
 * search-poll) and hands batches to the single writer, storing the sync cookie in the same
 * transaction as the entries it covers. Upstream users authenticate by an LDAP bind made on a
 * worker thread, never on the loop.
 *
 * The loop thread calls gh_sync_*; results come back to it through uv_async.
 * The module knows nothing of the server: the config loader hands it the keys
 * of [upstream:NAME] sections, and the server injects its writer as the two
 * functions of a gh_sync_writer.
 */
#ifndef GH_SYNC_H
#define GH_SYNC_H

#include <jansson.h>
#include <uv.h>

#include "schema/store.h"

typedef struct gh_sync gh_sync;

/* The [upstream:NAME] sections of a config file, one struct per name. */
struct gh_sync_upstream_cfg; /* sync/sync-int.h */
typedef struct gh_sync_config {
    struct gh_sync_upstream_cfg **upstreams;
    size_t nupstreams;
} gh_sync_config;

/* [upstream:NAME] keys, called by the config loader for each key of such a
 * section (creates the upstream on first use). path and line (path may be
 * NULL) say where the key was read, for messages given at finish. 0, or
 * GH_EINVAL with msg. */
int gh_sync_config_set(gh_sync_config *sc, const char *path, int line, const char *name,
                       const char *key, const char *value, char *msg, size_t msglen);
/* After the whole file: required keys present, files readable. */
int gh_sync_config_finish(gh_sync_config *sc, char *msg, size_t msglen);
/* Frees every upstream (wiping the bind passwords) and empties sc. */
void gh_sync_config_free(gh_sync_config *sc);

/* The single writer, injected by the server. submit (any loop thread): runs
 * fn(txn, arg) on the writer thread and calls done(cbarg, rc, err) on the loop
 * given to gh_sync_start once the commit is durable; arg stays valid until
 * then; 0 when done will be called. submit_wait (a worker thread, never a
 * loop): blocks until fn's commit is durable, returns fn's rc and copies its
 * message into err. actor is copied by both. */
typedef void (*gh_sync_write_done_cb)(void *cbarg, int rc, const char *err);
typedef struct gh_sync_writer {
    void *ctx;
    int (*submit)(void *ctx, const char *actor, gh_store_write_fn fn, void *arg,
                  gh_sync_write_done_cb done, void *cbarg);
    int (*submit_wait)(void *ctx, const char *actor, gh_store_write_fn fn, void *arg, char *err,
                       size_t errlen);
} gh_sync_writer;

/* Starts one worker per upstream in cfg (none: *out is a valid empty object).
 * writer is copied. */
int gh_sync_start(gh_sync **out, uv_loop_t *loop, gh_store *store, const gh_sync_writer *writer,
                  const gh_sync_config *cfg);
/* Stops and joins the workers and the auth threads (loop thread; before
 * the writer stops, since a worker may be waiting on the writer). Pending auth
 * callbacks are called with GH_EUNAVAIL. The struct is freed in a close
 * callback: run the loop once more afterwards, as after stopping the writer. */
void gh_sync_stop(gh_sync *s);

/* Upstream authentication: binds as the user's origin_dn with password off
 * the loop thread and calls cb on the loop thread, exactly once, with:
 *   0           the upstream accepted the password;
 *   GH_ECREDS   the upstream refused it (invalidCredentials, account disabled
 *               or expired, ...): the user's offline verifier is deleted
 *               (compare-and-set on the verifier u held) before cb runs;
 *   GH_EUNAVAIL the upstream could not say: offline_ok is 1 only when a bind
 *               was actually sent and failed at the network level (connect
 *               refused or timed out, the bind timed out, server down), the
 *               one case where an offline verifier may be used; 0 for any
 *               other failure (the upstream answered busy, stopping, ...);
 *   GH_ERATE    no bind was attempted: the job waited past bind_timeout in
 *               the queue. Never fall back to the offline verifier.
 * peer names the client for the in-flight caps (max_binds_per_peer).
 * password is copied and wiped. Returns 0 when cb will be called; otherwise
 * cb is never called: GH_ENOTFOUND (unknown upstream), GH_ECREDS (empty
 * password, a DN outside the upstream's base_dn), GH_ERATE (max_binds,
 * max_binds_per_login or max_binds_per_peer in flight already), GH_EUNAVAIL
 * (stopping). */
typedef void (*gh_sync_auth_cb)(void *arg, int rc, int offline_ok);
int gh_sync_auth_user(gh_sync *s, const gh_user *u, const char *peer, const char *password,
                      gh_sync_auth_cb cb, void *arg);
/* Whether a local offline verifier may be kept for this upstream, and for how
 * long it stays valid (seconds; 0 = never keep one). */
int64_t gh_sync_offline_max_age(gh_sync *s, const char *upstream);

/* sync.status body: appends {"upstreams":[...]} fields to out. */
int gh_sync_status(gh_sync *s, json_t *out);
/* sync.run: GH_ENOTFOUND for an unknown upstream. */
int gh_sync_run(gh_sync *s, const char *upstream);
/* sync.run with options: full drops the stored cookies (a full reload, with
 * deletions found by difference); force lets this one run delete more than
 * max_delete_ratio of the mirror. */
int gh_sync_run_ex(gh_sync *s, const char *upstream, int full, int force);
/* Upstream-owned fields of users (GH_UF_* mask) for user.set refusals. */
unsigned gh_sync_owned_user_fields(gh_sync *s, const char *upstream);

#endif
