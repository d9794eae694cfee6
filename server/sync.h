/*
 * sync.h: LDAP federation. One worker thread per configured upstream mirrors
 * users and groups (RFC 4533 syncrepl through libldap's ldap_sync API, or
 * paged search-poll) and hands batches to the single writer, storing the sync
 * cookie in the same transaction as the entries it covers. Upstream users
 * authenticate by an LDAP bind made on a worker thread, never on the loop.
 *
 * The loop thread calls gh_sync_*; results come back to it through uv_async.
 */
#ifndef GH_SYNC_H
#define GH_SYNC_H

#include <jansson.h>
#include <uv.h>

#include "schema/store.h"
#include "server/config.h"
#include "server/writer.h"

typedef struct gh_sync gh_sync;

/* [upstream:NAME] keys, called by the config loader for each key of such a
 * section (creates the upstream on first use). 0, or GH_EINVAL with msg. */
int gh_upstream_config_set(gh_config *cfg, const char *name, const char *key, const char *value,
                           char *msg, size_t msglen);
/* After the whole file: required keys present, files readable. */
int gh_upstream_config_finish(gh_config *cfg, char *msg, size_t msglen);
void gh_upstream_config_free(struct gh_upstream_cfg *u);

/* Starts one worker per upstream in cfg (none: *out is a valid empty object). */
int gh_sync_start(gh_sync **out, uv_loop_t *loop, gh_store *store, gh_writer *writer,
                  const gh_config *cfg);
/* Stops and joins the workers and the auth threads (loop thread; before
 * gh_writer_stop, since a worker may be waiting on the writer). Pending auth
 * callbacks are called with GH_EUNAVAIL. The struct is freed in a close
 * callback: run the loop once more afterwards, as after gh_writer_stop. */
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
