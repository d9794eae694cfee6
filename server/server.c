/*
 * server.c: building and tearing down a gh_server on a loop.
 *
 * gh__server_open wires the store, the writer, authz, sync workers and the
 * loop-side handles (housekeeping timer, flush check); main adds listeners
 * and signals, in-process harnesses (fuzzing) attach connections directly.
 * Shutdown is one sequence: stop accepting and reading, let requests in
 * flight finish and their replies go out, drain the writer, stop sync, close
 * the handles; the loop then ends on its own.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "schema/log.h"
#include "server/server.h"

static int mkdir_p(const char *dir)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

int gh__open_store(gh_config *cfg, gh_store **store)
{
    char err[512] = "";
    gh_store_opts so = {
        .state_dir = cfg->state_dir,
        .map_size = cfg->map_size,
        .map_max = cfg->map_max,
        .uid_min = cfg->uid_min,
    };
    if (mkdir_p(cfg->state_dir) != 0) {
        GH_LOGE("cannot create state directory %s: %s", cfg->state_dir, strerror(errno));
        return GH_EIO;
    }
    int rc = gh_store_open(store, &so, err, sizeof(err));
    if (rc != 0)
        GH_LOGE("cannot open the store in %s: %s", cfg->state_dir, err[0] ? err : gh_strerror(rc));
    return rc;
}

static void on_housekeeping(uv_timer_t *t)
{
    gh__housekeeping(t->data);
}

/* Replies are flushed once per loop turn, before the loop sleeps (prepare:
 * completions from write callbacks, which run in the pending phase) and
 * after it wakes (check: completions from reads, the writer and the pool). */
static void on_flush_check(uv_check_t *h)
{
    gh__flush_all(h->data);
}

static void on_flush_prepare(uv_prepare_t *h)
{
    gh__flush_all(h->data);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    gh_server *srv = t->data;
    GH_LOGW("shutdown: closing %u connections that did not finish in time", srv->nconns);
    for (gh_conn *c = srv->conns; c; c = c->next)
        gh__conn_close(c);
}

int gh__server_open(gh_server *srv, gh_config *cfg, uv_loop_t *loop)
{
    int rc;
    gh_authz_opts ao = {.cache_bytes = cfg->authz_cache_size};

    memset(srv, 0, sizeof(*srv));
    srv->cfg = cfg;
    srv->loop = loop;
    srv->started = gh__now_ms();
    if ((rc = gh__open_store(cfg, &srv->store)) != 0)
        return rc;
    if ((rc = gh_store_reader_new(srv->store, &srv->reader)) != 0)
        return rc;
    if ((rc = gh__auth_init(srv)) != 0)
        return rc;
    if ((rc = gh__dispatch_init(srv)) != 0)
        return rc;
    if ((rc = gh_authz_new(&srv->authz, &ao)) != 0)
        return rc;
    if ((rc = gh_writer_start(&srv->writer, loop, srv->store, cfg->write_batch_max)) != 0)
        return rc;
    if ((rc = gh_sync_start(&srv->sync, loop, srv->store, srv->writer, cfg)) != 0) {
        GH_LOGE("cannot start the upstream sync workers: %s", gh_strerror(rc));
        return rc;
    }
    uv_timer_init(loop, &srv->housekeeping);
    srv->housekeeping.data = srv;
    uv_timer_start(&srv->housekeeping, on_housekeeping, 30000, 30000);
    uv_timer_init(loop, &srv->shutdown_timer);
    srv->shutdown_timer.data = srv;
    uv_check_init(loop, &srv->flush_check);
    srv->flush_check.data = srv;
    uv_check_start(&srv->flush_check, on_flush_check);
    uv_prepare_init(loop, &srv->flush_prepare);
    srv->flush_prepare.data = srv;
    uv_prepare_start(&srv->flush_prepare, on_flush_prepare);
    srv->have_handles = 1;
    return 0;
}

void gh__maybe_finish_shutdown(gh_server *srv)
{
    if (srv->stopping != 1 || srv->nconns > 0 || gh__ldap_busy(srv))
        return;
    srv->stopping = 2;
    GH_LOGI("all connections closed; stopping sync, draining writes");
    if (srv->sync) { /* first: its workers may still hand batches to the writer */
        gh_sync_stop(srv->sync);
        srv->sync = NULL;
    }
    gh_writer_stop(srv->writer);
    srv->writer = NULL;
    if (srv->have_handles) {
        uv_close((uv_handle_t *)&srv->housekeeping, NULL);
        uv_close((uv_handle_t *)&srv->shutdown_timer, NULL);
        uv_close((uv_handle_t *)&srv->flush_check, NULL);
        uv_close((uv_handle_t *)&srv->flush_prepare, NULL);
        srv->have_handles = 0;
    }
    if (srv->have_signals) {
        uv_close((uv_handle_t *)&srv->sig_term, NULL);
        uv_close((uv_handle_t *)&srv->sig_int, NULL);
        uv_close((uv_handle_t *)&srv->sig_hup, NULL);
        srv->have_signals = 0;
    }
}

void gh__server_shutdown(gh_server *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = 1;
    GH_LOGI("shutting down: no new connections, finishing requests in flight");
    gh__listen_stop(srv);
    gh__ldap_stop(srv);
    gh__close_idle_for_shutdown(srv);
    if (srv->have_handles)
        uv_timer_start(&srv->shutdown_timer, on_shutdown_timeout, 10000, 0);
    gh__maybe_finish_shutdown(srv);
}

void gh__server_close(gh_server *srv)
{
    /* Normally the loop ran the whole shutdown; after a failed open, or when
     * a harness stops early, run it here. */
    if (srv->stopping == 0 && srv->loop != NULL) {
        gh__server_shutdown(srv);
        while (srv->nconns > 0 && uv_run(srv->loop, UV_RUN_ONCE))
            ;
        gh__maybe_finish_shutdown(srv);
    }
    if (srv->sync) {
        gh_sync_stop(srv->sync);
        srv->sync = NULL;
    }
    if (srv->writer) {
        gh_writer_stop(srv->writer);
        srv->writer = NULL;
    }
    if (srv->loop)
        uv_run(srv->loop, UV_RUN_NOWAIT);
    gh__ldap_free(srv);
    if (srv->authz)
        gh_authz_free(srv->authz);
    if (srv->reader)
        gh_store_reader_free(srv->reader);
    if (srv->store)
        gh_store_close(srv->store);
    gh__auth_fini(srv);
    free(srv->lat);
    srv->authz = NULL;
    srv->reader = NULL;
    srv->store = NULL;
    srv->lat = NULL;
}
