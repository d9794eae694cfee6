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
/* Stops and joins the workers (loop thread). */
void gh_sync_stop(gh_sync *s);

/* Upstream authentication: binds as dn with password off the loop thread and
 * calls cb on the loop thread with 0 (bound), GH_ECREDS (upstream said no) or
 * GH_EUNAVAIL (unreachable or timed out). password is copied and wiped. */
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
/* Upstream-owned fields of users (GH_UF_* mask) for user.set refusals. */
unsigned gh_sync_owned_user_fields(gh_sync *s, const char *upstream);

#endif
