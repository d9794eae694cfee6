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

/* Upstream authentication: binds as dn with password off the loop thread and
 * calls cb on the loop thread with 0 (bound), GH_ECREDS (upstream said no) or
 * GH_EUNAVAIL (unreachable or timed out). password is copied and wiped.
 * Returns 0 when cb will be called exactly once, later; otherwise cb is never
 * called: GH_ENOTFOUND (unknown upstream), GH_ECREDS (empty password or DN, a
 * DN outside the upstream's base_dn), GH_EUNAVAIL (stopping, queue full). */
typedef void (*gh_sync_auth_cb)(void *arg, int rc);
int gh_sync_auth(gh_sync *s, const char *upstream, const char *dn, const char *password,
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
