/*
 * sync.c: LDAP federation, the loop thread's side. gh_sync_start copies each
 * [upstream:NAME] section and starts one worker thread per upstream
 * (sync_worker.c) and the auth threads (sync_auth.c); sync.status and
 * sync.run read and poke the workers under their locks; gh_sync_auth hands
 * a bind to the auth threads. Nothing here blocks.
 *
 * The thing to know: a worker may sit in a blocking libldap call; stopping
 * it, and the watchdog for an upstream that stops answering in the middle of
 * a refresh, shut its socket down (the fd is published under the upstream's
 * lock and cleared before unbind), which makes that call fail at once.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <jansson.h>

#include "schema/log.h"
#include "sync/sync-int.h"

#define AUTH_THREADS 4

static gh__sync_upstream *find_up(gh_sync *s, const char *name)
{
    if (s == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < s->nups; i++)
        if (strcmp(s->ups[i]->cfg->name, name) == 0)
            return s->ups[i];
    return NULL;
}

static void up_free(gh__sync_upstream *up)
{
    if (up == NULL)
        return;
    for (int i = 0; i < 2; i++)
        gh__sync_session_release(&up->sess[i]);
    gh__sync_model_free(&up->m);
    gh__sync_map_clear(&up->del_held, NULL);
    gh__sync_map_clear(&up->alias, free);
    gh__sync_batch_free(&up->b);
    gh__sync_upstream_cfg_free(up->cfg);
    pthread_mutex_destroy(&up->mu);
    pthread_cond_destroy(&up->cv);
    free(up);
}

/* A blocking refresh or search that stopped making progress for longer than
 * the upstream's timeout is cut by shutting its socket down. */
static void on_watchdog(uv_timer_t *t)
{
    gh_sync *s = t->data;
    int64_t now = gh__sync_mono_s();
    for (size_t i = 0; i < s->nups; i++) {
        gh__sync_upstream *up = s->ups[i];
        pthread_mutex_lock(&up->mu);
        if (up->busy && up->fd >= 0 && now - up->progress_at > (int64_t)up->cfg->timeout) {
            GH_LOGW("sync %s: no answer for %u s; dropping the connection", up->cfg->name,
                    up->cfg->timeout);
            snprintf(up->st.last_error, sizeof(up->st.last_error),
                     "the upstream stopped answering for %u s", up->cfg->timeout);
            shutdown(up->fd, SHUT_RDWR);
            up->progress_at = now;
        }
        pthread_mutex_unlock(&up->mu);
    }
}

static unsigned owned_mask(const struct gh_sync_upstream_cfg *cfg)
{
    unsigned m = GH_UF_NAME | GH_UF_ORIGIN | GH_UF_TOMBSTONE | GH_UF_VERIFIER;
    if (cfg == NULL)
        return m | GH_UF_UID | GH_UF_GID | GH_UF_DISPLAY | GH_UF_MAIL | GH_UF_HOME | GH_UF_SHELL |
               GH_UF_GECOS;
    if (cfg->uid_number_attr[0] != '\0')
        m |= GH_UF_UID;
    if (cfg->gid_number_attr[0] != '\0')
        m |= GH_UF_GID;
    if (cfg->display_name_attr[0] != '\0')
        m |= GH_UF_DISPLAY;
    if (cfg->mail_attr[0] != '\0')
        m |= GH_UF_MAIL;
    if (cfg->home_attr[0] != '\0')
        m |= GH_UF_HOME;
    if (cfg->shell_attr[0] != '\0')
        m |= GH_UF_SHELL;
    if (cfg->gecos_attr[0] != '\0')
        m |= GH_UF_GECOS;
    return m;
}

int gh_sync_start(gh_sync **out, uv_loop_t *loop, gh_store *store, const gh_sync_writer *writer,
                  const gh_sync_config *cfg)
{
    gh_sync *s = calloc(1, sizeof(*s));
    int rc = GH_ENOMEM;

    *out = NULL;
    if (s == NULL)
        return GH_ENOMEM;
    s->loop = loop;
    s->store = store;
    s->writer = *writer;
    if (cfg->nupstreams > 0) {
        s->ups = calloc(cfg->nupstreams, sizeof(*s->ups));
        if (s->ups == NULL)
            goto fail;
    }
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        gh__sync_upstream *up = calloc(1, sizeof(*up));
        if (up == NULL)
            goto fail;
        pthread_mutex_init(&up->mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&up->cv, &ca);
        pthread_condattr_destroy(&ca);
        up->s = s;
        up->fd = -1;
        up->backoff = 1;
        up->st.state = "starting";
        s->ups[s->nups++] = up;
        up->cfg = gh__sync_upstream_cfg_dup(cfg->upstreams[i]);
        if (up->cfg == NULL)
            goto fail;
        snprintf(up->actor, sizeof(up->actor), "sync:%s", up->cfg->name);
        gh__sync_upstream_fingerprint(up->cfg, up->fp);
        up->b.cfg = up->cfg;
        for (int k = 0; k < 2; k++) {
            up->sess[k].up = up;
            up->sess[k].kind = k;
        }
    }
    /* libldap sets up its global options on first use, without a lock of
     * its own: do it here, on this one thread, before any worker or bind
     * thread can race to it (ThreadSanitizer saw two workers' ldap_create). */
    if (s->nups > 0) {
        int version = 0;
        ldap_get_option(NULL, LDAP_OPT_PROTOCOL_VERSION, &version);
    }
    if (s->nups > 0 && (rc = gh__sync_auth_start(&s->auth, loop, writer, AUTH_THREADS)) != 0)
        goto fail;
    if (uv_timer_init(loop, &s->watchdog) != 0) {
        rc = GH_EINTERNAL;
        goto fail;
    }
    s->have_timer = 1;
    s->watchdog.data = s;
    if (s->nups > 0)
        uv_timer_start(&s->watchdog, on_watchdog, 1000, 1000);
    uv_unref((uv_handle_t *)&s->watchdog);
    for (size_t i = 0; i < s->nups; i++) {
        gh__sync_upstream *up = s->ups[i];
        if (pthread_create(&up->th, NULL, gh__sync_worker, up) != 0) {
            rc = GH_EINTERNAL;
            goto fail;
        }
        up->started = 1;
        GH_LOGI("sync %s: %s from %s (%s)", up->cfg->name, gh__sync_mode_name(up->cfg->mode),
                up->cfg->uri, up->cfg->base_dn);
    }
    *out = s;
    return 0;
fail:
    gh_sync_stop(s);
    return rc;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void gh_sync_stop(gh_sync *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nups; i++) {
        gh__sync_upstream *up = s->ups[i];
        pthread_mutex_lock(&up->mu);
        up->stop = 1;
        if (up->fd >= 0)
            shutdown(up->fd, SHUT_RDWR); /* breaks a blocking libldap call */
        pthread_cond_broadcast(&up->cv);
        pthread_mutex_unlock(&up->mu);
    }
    /* the bind threads and their answers use the upstreams: stop them first */
    gh__sync_auth_stop(s->auth);
    s->auth = NULL;
    for (size_t i = 0; i < s->nups; i++) {
        if (s->ups[i]->started)
            pthread_join(s->ups[i]->th, NULL);
        up_free(s->ups[i]);
    }
    free(s->ups);
    s->ups = NULL;
    s->nups = 0;
    if (s->have_timer) {
        uv_timer_stop(&s->watchdog);
        uv_close((uv_handle_t *)&s->watchdog, on_timer_closed);
    } else {
        free(s);
    }
}

int gh_sync_auth_user(gh_sync *s, const gh_user *u, const char *peer, const char *password,
                      gh_sync_auth_cb cb, void *arg)
{
    gh__sync_upstream *up;
    LDAPDN parsed = NULL;
    const char *dn = u != NULL ? u->origin_dn : NULL;

    if (s == NULL || s->auth == NULL)
        return GH_EUNAVAIL;
    if (u == NULL || (up = find_up(s, u->origin)) == NULL)
        return GH_ENOTFOUND;
    /* an empty password would make an unauthenticated bind, which succeeds */
    if (password == NULL || password[0] == '\0' || dn[0] == '\0' || cb == NULL)
        return GH_ECREDS;
    if (ldap_str2dn(dn, &parsed, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
        return GH_ECREDS;
    ldap_dnfree(parsed);
    /* only DNs inside the mirrored base: never bind as anything else */
    char *ndn = gh__sync_dn_norm(dn), *nbase = gh__sync_dn_norm(up->cfg->base_dn);
    int inside = 0;
    if (ndn != NULL && nbase != NULL && ndn[0] != '\0') {
        size_t a = strlen(ndn), b = strlen(nbase);
        inside = a == b ? strcmp(ndn, nbase) == 0
                        : (a > b && strcmp(ndn + a - b, nbase) == 0 && ndn[a - b - 1] == ',');
    }
    free(ndn);
    free(nbase);
    if (!inside)
        return GH_ECREDS;
    return gh__sync_auth_submit(s->auth, up, u, peer, password, cb, arg);
}

int64_t gh_sync_offline_max_age(gh_sync *s, const char *upstream_name)
{
    gh__sync_upstream *up = find_up(s, upstream_name);
    if (up == NULL || !up->cfg->offline_auth)
        return 0;
    return up->cfg->offline_max_age;
}

unsigned gh_sync_owned_user_fields(gh_sync *s, const char *upstream_name)
{
    if (upstream_name == NULL || upstream_name[0] == '\0')
        return 0;
    gh__sync_upstream *up = find_up(s, upstream_name);
    return owned_mask(up != NULL ? up->cfg : NULL);
}

int gh_sync_run_ex(gh_sync *s, const char *upstream_name, int full, int force)
{
    gh__sync_upstream *up = find_up(s, upstream_name);
    if (up == NULL)
        return GH_ENOTFOUND;
    pthread_mutex_lock(&up->mu);
    up->run_req = 1;
    up->run_full |= full;
    up->run_force |= force;
    pthread_cond_broadcast(&up->cv);
    pthread_mutex_unlock(&up->mu);
    return 0;
}

int gh_sync_run(gh_sync *s, const char *upstream_name)
{
    return gh_sync_run_ex(s, upstream_name, 0, 0);
}

static json_t *counts_json(const gh__sync_counts *c)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "added", (json_int_t)c->added, "modified",
                     (json_int_t)c->modified, "renamed", (json_int_t)c->renamed, "disabled",
                     (json_int_t)c->disabled, "purged", (json_int_t)c->purged, "skipped",
                     (json_int_t)c->skipped, "foreign", (json_int_t)c->foreign);
}

static json_t *binds_json(const gh__sync_bindstats *b)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "attempted", (json_int_t)b->attempted,
                     "accepted", (json_int_t)b->accepted, "refused", (json_int_t)b->refused,
                     "network_errors", (json_int_t)b->network_errors, "errors",
                     (json_int_t)b->errors, "rate_limited", (json_int_t)b->rate_limited,
                     "offline_cleared", (json_int_t)b->cleared, "in_flight",
                     (json_int_t)b->in_flight);
}

static json_t *time_or_null(int64_t t)
{
    return t > 0 ? json_integer(t) : json_null();
}

int gh_sync_status(gh_sync *s, json_t *out)
{
    json_t *arr = json_array();
    int64_t now = gh__sync_mono_s();
    if (arr == NULL)
        return GH_ENOMEM;
    for (size_t i = 0; s != NULL && i < s->nups; i++) {
        gh__sync_upstream *up = s->ups[i];
        gh__sync_status st;
        pthread_mutex_lock(&up->mu);
        st = up->st;
        pthread_mutex_unlock(&up->mu);
        json_t *o = json_object();
        if (o == NULL) {
            json_decref(arr);
            return GH_ENOMEM;
        }
        json_object_set_new(o, "name", json_string(up->cfg->name));
        json_object_set_new(o, "mode", json_string(gh__sync_mode_name(up->cfg->mode)));
        json_object_set_new(o, "uri", json_string(up->cfg->uri));
        /* how the link is protected, for gatehouse doctor (TLS always verifies the peer) */
        json_object_set_new(o, "tls",
                            json_string(strncasecmp(up->cfg->uri, "ldaps://", 8) == 0   ? "ldaps"
                                        : up->cfg->starttls                             ? "starttls"
                                        : strncasecmp(up->cfg->uri, "ldapi://", 8) == 0 ? "ldapi"
                                                                                        : "none"));
        json_object_set_new(o, "state", json_string(st.state));
        json_object_set_new(o, "connected", json_boolean(st.connected));
        json_object_set_new(o, "last_success", time_or_null(st.last_success));
        json_object_set_new(o, "last_attempt", time_or_null(st.last_attempt));
        json_object_set_new(o, "last_error",
                            st.last_error[0] != '\0' ? json_string(st.last_error) : json_null());
        json_object_set_new(o, "users", json_integer((json_int_t)st.users));
        json_object_set_new(o, "groups", json_integer((json_int_t)st.groups));
        json_object_set_new(o, "tombstones", json_integer((json_int_t)st.tombstones));
        json_object_set_new(o, "cookie",
                            st.cookie[0] != '\0' ? json_string(st.cookie) : json_null());
        json_object_set_new(o, "lag_s",
                            st.current_at > 0 ? json_integer(now - st.current_at) : json_null());
        json_object_set_new(o, "entries_received", json_integer((json_int_t)st.entries_received));
        json_object_set_new(o, "runs", json_integer((json_int_t)st.runs));
        json_object_set_new(o, "next_run", time_or_null(st.next_run));
        json_object_set_new(o, "last_run", counts_json(&st.last_run));
        json_object_set_new(o, "totals", counts_json(&st.total));
        json_object_set_new(o, "binds", binds_json(&up->binds));
        json_array_append_new(arr, o);
    }
    json_object_set_new(out, "upstreams", arr);
    return 0;
}
