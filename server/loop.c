/*
 * loop.c: gatehoused's loop threads (loop_threads) and the one way between
 * them.
 *
 * Each loop is a libuv loop on its own thread with its own connections,
 * LMDB read handle, permission cache and counters; loop 0 is the main
 * thread's and also keeps the listeners (its acceptor hands each accepted
 * socket to the loops in turn, see conn.c), signals, housekeeping, and the
 * completions of the writer and the sync workers. A check therefore runs
 * start to end on one thread and takes no lock.
 *
 * The one thing to know: a thread that is not a loop's own never touches the
 * loop's connections or requests. It posts a message (gh__loop_post: a
 * mutex-guarded queue and uv_async_send), and the message's function runs
 * on the loop's thread, where it may only complete a request (mark it done
 * and its connection dirty); the loop's flush phase does the rest, exactly
 * as for a completion that arrived on the right loop. Writer completions go
 * through gh__submit_write, upstream binds through auth.c's post; Argon2
 * (uv_queue_work on the connection's own loop) comes back by itself.
 *
 * Shutdown is driven by loop 0: every loop drains its connections and tells
 * loop 0 when it has none; then loop 0 stops sync and the writer, and every
 * loop closes its handles, so its uv_run returns and its thread ends.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "schema/log.h"
#include "server/server.h"

static __thread gh_loop *self;

gh_loop *gh__loop_self(void)
{
    return self;
}

void gh__loop_set_self(gh_loop *lp)
{
    self = lp;
}

unsigned gh__loops_wanted(const gh_config *cfg)
{
    unsigned n = cfg->loop_threads;
    if (n == 0) {
        cpu_set_t set;
        /* the CPUs this process may run on (taskset, cgroup cpusets) */
        if (sched_getaffinity(0, sizeof(set), &set) == 0)
            n = (unsigned)CPU_COUNT(&set);
        if (n == 0)
            n = uv_available_parallelism();
    }
    if (n < 1)
        n = 1;
    return n > GH_LOOPS_MAX ? GH_LOOPS_MAX : n;
}

/* ---- posts ---- */

void gh__loop_post(gh_loop *lp, gh_post *m, void (*fn)(void *arg), void *arg)
{
    m->fn = fn;
    m->arg = arg;
    m->next = NULL;
    pthread_mutex_lock(&lp->post_mu);
    if (lp->post_tail)
        lp->post_tail->next = m;
    else
        lp->post_head = m;
    lp->post_tail = m;
    pthread_mutex_unlock(&lp->post_mu);
    uv_async_send(&lp->wake);
}

void gh__loop_run_on(gh_loop *lp, gh_post *m, void (*fn)(void *arg), void *arg)
{
    if (self == lp)
        fn(arg);
    else
        gh__loop_post(lp, m, fn, arg);
}

static void on_wake(uv_async_t *a)
{
    gh_loop *lp = a->data;
    pthread_mutex_lock(&lp->post_mu);
    gh_post *m = lp->post_head;
    lp->post_head = lp->post_tail = NULL;
    pthread_mutex_unlock(&lp->post_mu);
    while (m != NULL) {
        gh_post *next = m->next; /* fn may free m */
        m->fn(m->arg);
        m = next;
    }
}

/* ---- writes from any loop ---- */

typedef struct submitted {
    gh_post post;
    gh_loop *owner;
    gh_writer_done_cb done;
    void *cbarg;
    int rc;
    char err[GH_ERRMSG_MAX];
} submitted;

static void submitted_deliver(void *arg)
{
    submitted *s = arg;
    s->done(s->cbarg, s->rc, s->err);
    free(s);
}

/* On loop 0 (the writer's completion handle): on to the submitting loop. */
static void submitted_done(void *cbarg, int rc, const char *err)
{
    submitted *s = cbarg;
    s->rc = rc;
    snprintf(s->err, sizeof(s->err), "%s", err ? err : "");
    gh__loop_run_on(s->owner, &s->post, submitted_deliver, s);
}

int gh__submit_write(gh_server *srv, const char *actor, gh_store_write_fn fn, void *arg,
                     gh_writer_done_cb done, void *cbarg)
{
    gh_loop *owner = self;
    if (owner == NULL || owner == &srv->loops[0]) /* the writer completes on loop 0 */
        return gh_writer_submit(srv->writer, actor, fn, arg, done, cbarg);
    submitted *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return GH_ENOMEM;
    s->owner = owner;
    s->done = done;
    s->cbarg = cbarg;
    int rc = gh_writer_submit(srv->writer, actor, fn, arg, submitted_done, s);
    if (rc != 0)
        free(s);
    return rc;
}

/* ---- the loops ---- */

/* Replies are flushed once per loop turn, before the loop sleeps (prepare:
 * completions from write callbacks, which run in the pending phase) and
 * after it wakes (check: completions from reads, posts, the writer and the
 * pool). */
static void on_flush_check(uv_check_t *h)
{
    gh_loop *lp = h->data;
    gh__flush_all(lp);
    if (lp->srv->nloops > 1) {
        /* for other loops' stats ops: a few relaxed stores per loop turn */
        gh_authz_stats st;
        gh_authz_get_stats(lp->authz, &st);
        __atomic_store_n(&lp->authz_pub.hits, st.hits, __ATOMIC_RELAXED);
        __atomic_store_n(&lp->authz_pub.misses, st.misses, __ATOMIC_RELAXED);
        __atomic_store_n(&lp->authz_pub.compiles, st.compiles, __ATOMIC_RELAXED);
        __atomic_store_n(&lp->authz_pub.flushes, st.flushes, __ATOMIC_RELAXED);
        __atomic_store_n(&lp->authz_pub.cached, st.cached, __ATOMIC_RELAXED);
        __atomic_store_n(&lp->authz_pub.cached_bytes, st.cached_bytes, __ATOMIC_RELAXED);
    }
}

static void on_flush_prepare(uv_prepare_t *h)
{
    gh__flush_all(h->data);
}

static int loop_init(gh_server *srv, gh_loop *lp, unsigned index, uv_loop_t *loop)
{
    gh_authz_opts ao = {.cache_bytes = srv->cfg->authz_cache_size / srv->nloops};
    int rc;

    lp->srv = srv;
    lp->index = index;
    pthread_mutex_init(&lp->post_mu, NULL);
    if (loop == NULL) {
        if (uv_loop_init(&lp->own) != 0)
            return GH_EINTERNAL;
        loop = &lp->own;
    }
    lp->loop = loop;
    /* MDB_NOTLS: a read handle may be made here and used on the loop's thread */
    if ((rc = gh_store_reader_new(srv->store, &lp->reader)) != 0)
        return rc;
    if ((rc = gh_authz_new(&lp->authz, &ao)) != 0)
        return rc;
    if ((rc = gh_jarena_init(&lp->jarena, 0)) != 0)
        return rc;
    if ((lp->lat = gh__lat_new(srv)) == NULL)
        return GH_ENOMEM;
    uv_check_init(loop, &lp->flush_check);
    lp->flush_check.data = lp;
    uv_check_start(&lp->flush_check, on_flush_check);
    uv_prepare_init(loop, &lp->flush_prepare);
    lp->flush_prepare.data = lp;
    uv_prepare_start(&lp->flush_prepare, on_flush_prepare);
    uv_idle_init(loop, &lp->flush_idle);
    lp->flush_idle.data = lp;
    uv_async_init(loop, &lp->wake, on_wake);
    lp->wake.data = lp;
    lp->have_handles = 1;
    return 0;
}

int gh__loops_open(gh_server *srv, uv_loop_t *loop0)
{
    srv->nloops = gh__loops_wanted(srv->cfg);
    srv->loops = calloc(srv->nloops, sizeof(*srv->loops));
    if (srv->loops == NULL)
        return GH_ENOMEM;
    for (unsigned i = 0; i < srv->nloops; i++) {
        int rc = loop_init(srv, &srv->loops[i], i, i == 0 ? loop0 : NULL);
        if (rc != 0)
            return rc;
    }
    srv->reader = srv->loops[0].reader;
    srv->authz = srv->loops[0].authz;
    self = &srv->loops[0];
    return 0;
}

static void loop_main(void *arg)
{
    gh_loop *lp = arg;
    char name[16];
    snprintf(name, sizeof(name), "gh-loop-%u", lp->index);
    pthread_setname_np(pthread_self(), name);
    self = lp;
    uv_run(lp->loop, UV_RUN_DEFAULT);
    self = NULL;
}

int gh__loops_start(gh_server *srv)
{
    for (unsigned i = 1; i < srv->nloops; i++) {
        gh_loop *lp = &srv->loops[i];
        if (uv_thread_create(&lp->thread, loop_main, lp) != 0) {
            GH_LOGE("cannot start loop thread %u", i);
            return GH_EINTERNAL;
        }
        lp->have_thread = 1;
    }
    if (srv->nloops > 1)
        GH_LOGI("serving on %u loop threads", srv->nloops);
    return 0;
}

/* ---- shutdown ---- */

static void drained_at_loop0(void *arg)
{
    gh_server *srv = arg;
    srv->loops_drained++;
    gh__maybe_finish_shutdown(srv);
}

void gh__loop_check_drained(gh_loop *lp)
{
    if (!lp->stopping || lp->drained || lp->nconns > 0)
        return;
    lp->drained = 1;
    gh__loop_run_on(&lp->srv->loops[0], &lp->m_drained, drained_at_loop0, lp->srv);
}

static void stop_here(void *arg)
{
    gh_loop *lp = arg;
    if (lp->stopping)
        return;
    lp->stopping = 1;
    gh__close_idle_for_shutdown(lp);
    gh__loop_check_drained(lp);
}

/* Loops 1..N-1 whose thread never started (a failed start) have nothing to
 * drain and nobody to run their posts: loop 0 acts for them. */
static int ran(const gh_loop *lp)
{
    return lp->index == 0 || lp->have_thread;
}

void gh__loops_stop(gh_server *srv)
{
    for (unsigned i = 0; i < srv->nloops; i++) {
        gh_loop *lp = &srv->loops[i];
        if (!ran(lp)) {
            lp->stopping = lp->drained = 1;
            srv->loops_drained++;
            continue;
        }
        gh__loop_run_on(lp, &lp->m_stop, stop_here, lp);
    }
}

static void force_here(void *arg)
{
    gh__close_all(arg);
}

void gh__loops_force_close(gh_server *srv)
{
    for (unsigned i = 0; i < srv->nloops; i++)
        if (ran(&srv->loops[i]))
            gh__loop_run_on(&srv->loops[i], &srv->loops[i].m_force, force_here, &srv->loops[i]);
}

static void close_here(void *arg)
{
    gh_loop *lp = arg;
    if (!lp->have_handles)
        return;
    GH_ASSERT(lp->nconns == 0);
    uv_close((uv_handle_t *)&lp->flush_check, NULL);
    uv_close((uv_handle_t *)&lp->flush_prepare, NULL);
    uv_close((uv_handle_t *)&lp->flush_idle, NULL);
    uv_close((uv_handle_t *)&lp->wake, NULL);
    lp->have_handles = 0;
}

void gh__loops_close_handles(gh_server *srv)
{
    for (unsigned i = 0; i < srv->nloops; i++) {
        gh_loop *lp = &srv->loops[i];
        if (!ran(lp))
            close_here(lp); /* its uv loop never ran: gh__loops_free runs the closes */
        else
            gh__loop_run_on(lp, &lp->m_close, close_here, lp);
    }
}

static void report_open_handle(uv_handle_t *h, void *arg)
{
    GH_LOGE("loop %u: handle still open at exit: %s%s", *(unsigned *)arg,
            uv_handle_type_name(uv_handle_get_type(h)), uv_is_closing(h) ? " (closing)" : "");
}

void gh__loops_free(gh_server *srv)
{
    if (srv->loops == NULL)
        return;
    for (unsigned i = 0; i < srv->nloops; i++) {
        gh_loop *lp = &srv->loops[i];
        if (lp->have_thread) {
            uv_thread_join(&lp->thread);
            lp->have_thread = 0;
        } else if (i > 0 && lp->have_handles) {
            close_here(lp); /* never started */
        }
        if (i > 0 && lp->loop != NULL) {
            uv_run(lp->loop, UV_RUN_NOWAIT); /* close callbacks still due */
            if (uv_loop_close(lp->loop) != 0) {
                uv_walk(lp->loop, report_open_handle, &lp->index);
                srv->loop_close_failed = 1;
            }
        }
        if (lp->authz)
            gh_authz_free(lp->authz);
        json_decref(lp->spare_resp);
        lp->spare_resp = NULL;
        if (lp->reader)
            gh_store_reader_free(lp->reader);
        free(lp->lat);
        if (lp->jarena.base != NULL)
            gh_jarena_free(&lp->jarena);
        pthread_mutex_destroy(&lp->post_mu);
    }
    free(srv->loops);
    srv->loops = NULL;
    srv->reader = NULL;
    srv->authz = NULL;
    self = NULL;
}

/* ---- quiescing (SIGHUP) ---- */

static void pause_here(void *arg)
{
    gh_loop *lp = arg;
    gh_server *srv = lp->srv;
    pthread_mutex_lock(&srv->quiesce_mu);
    srv->quiesce_paused++;
    pthread_cond_broadcast(&srv->quiesce_cv);
    while (!srv->quiesce_done)
        pthread_cond_wait(&srv->quiesce_cv, &srv->quiesce_mu);
    srv->quiesce_paused--;
    pthread_cond_broadcast(&srv->quiesce_cv);
    pthread_mutex_unlock(&srv->quiesce_mu);
}

void gh__loops_quiesce(gh_server *srv, void (*fn)(void *arg), void *arg)
{
    unsigned n = 0;
    GH_ASSERT(self == &srv->loops[0]);
    pthread_mutex_lock(&srv->quiesce_mu);
    srv->quiesce_done = 0;
    pthread_mutex_unlock(&srv->quiesce_mu);
    for (unsigned i = 1; i < srv->nloops; i++) {
        gh_loop *lp = &srv->loops[i];
        if (!lp->have_thread || lp->srv->stopping == 2) /* not running, or closing */
            continue;
        gh__loop_post(lp, &lp->m_pause, pause_here, lp);
        n++;
    }
    pthread_mutex_lock(&srv->quiesce_mu);
    while (srv->quiesce_paused < n)
        pthread_cond_wait(&srv->quiesce_cv, &srv->quiesce_mu);
    fn(arg); /* every other loop waits in pause_here */
    srv->quiesce_done = 1;
    pthread_cond_broadcast(&srv->quiesce_cv);
    while (srv->quiesce_paused > 0) /* all out before m_pause may be posted again */
        pthread_cond_wait(&srv->quiesce_cv, &srv->quiesce_mu);
    pthread_mutex_unlock(&srv->quiesce_mu);
}

/* ---- stats ---- */

void gh__lat_sum(gh_server *srv, size_t op, gh_lat *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned k = 0; k < srv->nloops; k++) {
        const gh_lat *l = &srv->loops[k].lat[op];
        out->count += GH_STAT_GET(l->count);
        out->errors += GH_STAT_GET(l->errors);
        for (unsigned b = 0; b < GH_LAT_BUCKETS; b++)
            out->buckets[b] += GH_STAT_GET(l->buckets[b]);
    }
}

uint64_t gh__loop_requests(const gh_loop *lp)
{
    uint64_t n = 0;
    for (size_t i = 0; i < lp->srv->nops; i++)
        n += GH_STAT_GET(lp->lat[i].count);
    return n;
}

void gh__loops_sum(gh_server *srv, gh_loop_sums *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < srv->nloops; i++) {
        gh_loop *lp = &srv->loops[i];
        gh_authz_stats st;
        if (lp == self) { /* the calling loop's own, live */
            gh_authz_get_stats(lp->authz, &st);
        } else {
            st.hits = GH_STAT_GET(lp->authz_pub.hits);
            st.misses = GH_STAT_GET(lp->authz_pub.misses);
            st.compiles = GH_STAT_GET(lp->authz_pub.compiles);
            st.flushes = GH_STAT_GET(lp->authz_pub.flushes);
            st.cached = GH_STAT_GET(lp->authz_pub.cached);
            st.cached_bytes = GH_STAT_GET(lp->authz_pub.cached_bytes);
        }
        out->conns_total += GH_STAT_GET(lp->conns_total);
        out->conns_rejected += GH_STAT_GET(lp->conns_rejected);
        out->requests += gh__loop_requests(lp);
        out->authz.hits += st.hits;
        out->authz.misses += st.misses;
        out->authz.compiles += st.compiles;
        out->authz.flushes += st.flushes;
        out->authz.cached += st.cached;
        out->authz.cached_bytes += st.cached_bytes;
    }
}
