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
#include <malloc.h>
#include <sys/stat.h>
#include <pthread.h>
#include <time.h>

#include <sodium.h>

#include "schema/log.h"
#include "server/jarena.h"
#include "server/memtrim.h"
#include "server/metrics.h"
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
    const char *rerun = getenv("GATEHOUSE_TEST_RERUN_WRITES");
    gh_store_opts so = {
        .state_dir = cfg->state_dir,
        .map_size = cfg->map_size,
        .map_max = cfg->map_max,
        .uid_min = cfg->uid_min,
        /* tests only: every write op runs twice, the first run thrown away */
        .rerun_writes = rerun != NULL && strcmp(rerun, "1") == 0,
    };
    struct stat st;
    if (mkdir_p(cfg->state_dir) != 0) {
        GH_LOGE("cannot create state directory %s: %s", cfg->state_dir, strerror(errno));
        return GH_EIO;
    }
    /* The directory holds the database and token.key: whoever may write it
     * may replace either, and so become anyone. */
    if (stat(cfg->state_dir, &st) != 0) {
        GH_LOGE("cannot stat state directory %s: %s", cfg->state_dir, strerror(errno));
        return GH_EIO;
    }
    if (!S_ISDIR(st.st_mode) || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        GH_LOGE("state directory %s is %s (mode %04o): refusing to start; fix it with "
                "'chmod go-w %s' (0700 is best)",
                cfg->state_dir, S_ISDIR(st.st_mode) ? "group- or world-writable" : "no directory",
                (unsigned)(st.st_mode & 07777), cfg->state_dir);
        return GH_EPERM;
    }
    if (so.rerun_writes)
        GH_LOGW("GATEHOUSE_TEST_RERUN_WRITES=1: every write runs twice (tests only)");
    int rc = gh_store_open(store, &so, err, sizeof(err));
    if (rc != 0)
        GH_LOGE("cannot open the store in %s: %s", cfg->state_dir, err[0] ? err : gh_strerror(rc));
    return rc;
}

/* ---- audit retention: the writer prunes the change log in small batches,
 * each its own commit, so requests interleave with a long backlog. ---- */

#define AUDIT_PRUNE_BATCH 512

typedef struct audit_prune {
    gh_server *srv;
    int64_t before;
    size_t pruned;
} audit_prune;

static int audit_prune_apply(gh_txn *txn, void *arg)
{
    audit_prune *a = arg;
    return gh_store_changelog_prune(txn, a->before, AUDIT_PRUNE_BATCH, &a->pruned);
}

static void audit_prune_submit(gh_server *srv, int64_t before);

static void audit_prune_done(void *cbarg, int rc, const char *err)
{
    audit_prune *a = cbarg;
    if (rc != 0)
        GH_LOGW("audit: pruning the change log failed: %s", err);
    else if (a->pruned > 0)
        GH_LOGD("audit: pruned %zu change-log entries", a->pruned);
    /* a full batch: more may be due; go on unless the server is stopping */
    if (rc == 0 && a->pruned == AUDIT_PRUNE_BATCH && !a->srv->stopping)
        audit_prune_submit(a->srv, a->before);
    free(a);
}

static void audit_prune_submit(gh_server *srv, int64_t before)
{
    audit_prune *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return;
    a->srv = srv;
    a->before = before;
    if (gh_writer_submit(srv->writer, "housekeeping", audit_prune_apply, a, audit_prune_done, a) !=
        0)
        free(a);
}

static void on_housekeeping(uv_timer_t *t)
{
    gh_server *srv = t->data;
    gh__housekeeping(srv);
    if (srv->cfg->audit_retention > 0)
        audit_prune_submit(srv, (int64_t)time(NULL) - (int64_t)srv->cfg->audit_retention);
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    gh__loops_force_close(t->data);
}

/* jansson's memory is wiped when freed: request strings (passwords) and the
 * parser's scratch buffers must not survive in freed heap. Process-wide by
 * jansson's design; set once, before any request is parsed. */
static void wiping_free(void *p)
{
    if (p == NULL)
        return;
    sodium_memzero(p, malloc_usable_size(p));
    free(p);
}

/* The writer, as the sync module sees it (sync/ knows nothing of server/). */
static int sync_submit(void *ctx, const char *actor, gh_store_write_fn fn, void *arg,
                       gh_sync_write_done_cb done, void *cbarg)
{
    return gh_writer_submit(ctx, actor, fn, arg, done, cbarg);
}

static int sync_submit_wait(void *ctx, const char *actor, gh_store_write_fn fn, void *arg,
                            char *err, size_t errlen)
{
    return gh_writer_submit_wait(ctx, actor, fn, arg, err, errlen);
}

int gh__server_open(gh_server *srv, gh_config *cfg, uv_loop_t *loop)
{
    int rc;

    memset(srv, 0, sizeof(*srv));
    srv->cfg = cfg;
    srv->loop = loop;
    srv->started = gh__now_ms();
    pthread_mutex_init(&srv->peers_mu, NULL);
    pthread_mutex_init(&srv->fail_mu, NULL);
    pthread_mutex_init(&srv->quiesce_mu, NULL);
    pthread_cond_init(&srv->quiesce_cv, NULL);
    gh_jarena_install(); /* jansson: the loop's arena while it parses, else the wiping free */
    gh_freq_init(malloc, wiping_free); /* cJSON's, for the flat requests (server/freq.c) */
    if ((rc = gh__open_store(cfg, &srv->store)) != 0)
        return rc;
    if ((rc = gh__auth_init(srv)) != 0)
        return rc;
    if ((rc = gh__dispatch_init(srv)) != 0)
        return rc;
    /* every loop's read handle, authz and handles; loop 0 is this thread's */
    if ((rc = gh__loops_open(srv, loop)) != 0)
        return rc;
    if ((rc = gh_writer_start(&srv->writer, loop, srv->store, cfg->write_batch_max)) != 0)
        return rc;
    gh_sync_writer sw = {srv->writer, sync_submit, sync_submit_wait};
    if ((rc = gh_sync_start(&srv->sync, loop, srv->store, &sw, &cfg->sync)) != 0) {
        GH_LOGE("cannot start the upstream sync workers: %s", gh_strerror(rc));
        return rc;
    }
    uv_timer_init(loop, &srv->housekeeping);
    srv->housekeeping.data = srv;
    uv_timer_start(&srv->housekeeping, on_housekeeping, 30000, 30000);
    if (cfg->audit_retention > 0) /* a restarted server prunes at once */
        audit_prune_submit(srv, (int64_t)time(NULL) - (int64_t)cfg->audit_retention);
    uv_timer_init(loop, &srv->shutdown_timer);
    srv->shutdown_timer.data = srv;
    srv->have_handles = 1;
    gh__memtrim_start(srv);
    if ((rc = gh__loops_start(srv)) != 0)
        return rc;
    return gh__metrics_start(srv);
}

/* Loop 0, as each loop reports it drained: once all have, the writer and
 * sync stop and every loop closes its handles. */
void gh__maybe_finish_shutdown(gh_server *srv)
{
    if (srv->stopping != 1 || srv->loops_drained < srv->nloops || gh__ldap_busy(srv))
        return;
    srv->stopping = 2;
    GH_LOGI("all connections closed; stopping sync, draining writes");
    gh__backup_stop(srv);
    gh__metrics_stop(srv);
    if (srv->sync) { /* first: its workers may still hand batches to the writer */
        gh_sync_stop(srv->sync);
        srv->sync = NULL;
    }
    gh_writer_stop(srv->writer);
    srv->writer = NULL;
    gh__memtrim_stop(srv);
    if (srv->have_handles) {
        uv_close((uv_handle_t *)&srv->housekeeping, NULL);
        uv_close((uv_handle_t *)&srv->shutdown_timer, NULL);
        srv->have_handles = 0;
    }
    if (srv->have_signals) {
        uv_close((uv_handle_t *)&srv->sig_term, NULL);
        uv_close((uv_handle_t *)&srv->sig_int, NULL);
        uv_close((uv_handle_t *)&srv->sig_hup, NULL);
        srv->have_signals = 0;
    }
    gh__loops_close_handles(srv); /* their uv_run returns, their threads end */
}

void gh__server_shutdown(gh_server *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = 1;
    GH_LOGI("shutting down: no new connections, finishing requests in flight");
    gh__listen_stop(srv);
    gh__ldap_stop(srv);
    if (srv->have_handles)
        uv_timer_start(&srv->shutdown_timer, on_shutdown_timeout, 10000, 0);
    if (srv->loops != NULL)
        gh__loops_stop(srv); /* each loop drains, then reports to loop 0 */
    else
        srv->loops_drained = srv->nloops; /* a failed open: nothing to drain */
    gh__maybe_finish_shutdown(srv);
}

void gh__server_close(gh_server *srv)
{
    /* Normally the loop ran the whole shutdown; after a failed open, or when
     * a harness stops early, run it here. */
    if (srv->stopping == 0 && srv->loop != NULL) {
        gh__server_shutdown(srv);
        while (srv->stopping == 1 && uv_run(srv->loop, UV_RUN_ONCE))
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
    gh__backup_stop(srv);
    gh__metrics_stop(srv);
    if (srv->loops != NULL && srv->loops[0].have_handles)
        gh__loops_close_handles(srv); /* a failed shutdown: close what is left */
    if (srv->loop)
        uv_run(srv->loop, UV_RUN_NOWAIT);
    gh__ldap_free(srv);
    gh__loops_free(srv);           /* joins the loop threads */
    gh_tls_ctx_free(srv->tcp_tls); /* open sessions kept their own reference */
    srv->tcp_tls = NULL;
    if (srv->store)
        gh_store_close(srv->store);
    gh__auth_fini(srv);
    free(srv->peers);
    srv->peers = NULL;
    srv->store = NULL;
}
