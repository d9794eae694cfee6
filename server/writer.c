/*
 * writer.c: the single writer thread and its group commit.
 *
 * The queue is a mutex-protected list. The writer takes everything queued (up
 * to batch_max), runs it as one gh_store_write_batch (one fsync), then hands
 * loop jobs back through a second list and one uv_async_send, and wakes
 * blocking submitters. While a commit is in flight new jobs pile up and form
 * the next batch: that is the whole of group commit. Jobs are completed only
 * after the commit returned, so nothing is acknowledged before it is durable.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "schema/log.h"
#include "server/writer.h"

typedef struct job {
    struct job *next;
    gh_store_write_fn fn;
    void *arg;
    char actor[96];
    /* loop completion */
    gh_writer_done_cb done;
    void *cbarg;
    /* blocking completion */
    int waiting;
    int finished;
    int rc;
    char err[GH_ERRMSG_MAX];
} job;

struct gh_writer {
    uv_loop_t *loop;
    gh_store *store;
    unsigned batch_max;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* writer waits for jobs */
    pthread_cond_t done_cv;     /* blocking submitters wait for completion */
    job *head, *tail;           /* queued */
    job *done_head, *done_tail; /* committed, for the loop */
    int stop;
    int started;
    uv_async_t async;
    uint64_t commits, ops;
    uint64_t sizes[GH_WRITER_BATCH_BUCKETS]; /* commits by batch size (under mu) */
    unsigned loop_outstanding;               /* loop jobs submitted and not yet completed */
    void (*hook)(void *);                    /* after every commit (under mu) */
    void *hook_arg;
};

static int trampoline(gh_txn *txn, void *arg)
{
    job *j = arg;
    gh_txn_set_actor(txn, j->actor);
    return j->fn(txn, j->arg);
}

static void *writer_main(void *arg)
{
    gh_writer *w = arg;
    gh_store_op *ops = calloc(w->batch_max, sizeof(*ops));
    job **jobs = calloc(w->batch_max, sizeof(*jobs));

    GH_ASSERT(ops != NULL && jobs != NULL);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->head == NULL && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->head == NULL && w->stop)
            break;
        size_t n = 0;
        while (w->head != NULL && n < w->batch_max) {
            job *j = w->head;
            w->head = j->next;
            j->next = NULL;
            jobs[n++] = j;
        }
        if (w->head == NULL)
            w->tail = NULL;
        void (*hook)(void *) = w->hook;
        void *hook_arg = w->hook_arg;
        pthread_mutex_unlock(&w->mu);

        for (size_t i = 0; i < n; i++) {
            memset(&ops[i], 0, sizeof(ops[i]));
            ops[i].fn = trampoline;
            ops[i].arg = jobs[i];
        }
        int rc = gh_store_write_batch(w->store, ops, n);
        if (rc != 0)
            GH_LOGE("writer: commit of %zu ops failed: %s", n, gh_strerror(rc));
        if (hook != NULL)
            hook(hook_arg);

        pthread_mutex_lock(&w->mu);
        w->commits++;
        w->ops += n;
        size_t bucket = 0;
        while (bucket < GH_WRITER_BATCH_BUCKETS - 1 && ((size_t)1 << bucket) < n)
            bucket++;
        w->sizes[bucket]++;
        int notify_loop = 0, wake = 0;
        for (size_t i = 0; i < n; i++) {
            job *j = jobs[i];
            j->rc = ops[i].rc;
            memcpy(j->err, ops[i].err, sizeof(j->err));
            if (j->waiting) {
                j->finished = 1;
                wake = 1;
            } else {
                if (w->done_tail)
                    w->done_tail->next = j;
                else
                    w->done_head = j;
                w->done_tail = j;
                notify_loop = 1;
            }
        }
        if (wake)
            pthread_cond_broadcast(&w->done_cv);
        if (notify_loop)
            uv_async_send(&w->async);
    }
    pthread_mutex_unlock(&w->mu);
    free(ops);
    free(jobs);
    return NULL;
}

static void on_async(uv_async_t *a)
{
    gh_writer *w = a->data;
    pthread_mutex_lock(&w->mu);
    job *j = w->done_head;
    w->done_head = w->done_tail = NULL;
    for (job *k = j; k != NULL; k = k->next)
        w->loop_outstanding--; /* under mu: every loop thread submits */
    pthread_mutex_unlock(&w->mu);
    while (j != NULL) {
        job *next = j->next;
        j->done(j->cbarg, j->rc, j->err);
        free(j);
        j = next;
    }
}

static void on_closed(uv_handle_t *h)
{
    gh_writer *w = h->data;
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_cond_destroy(&w->done_cv);
    free(w);
}

int gh_writer_start(gh_writer **out, uv_loop_t *loop, gh_store *store, unsigned batch_max)
{
    gh_writer *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return GH_ENOMEM;
    w->loop = loop;
    w->store = store;
    w->batch_max = batch_max ? batch_max : 256;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    pthread_cond_init(&w->done_cv, NULL);
    if (uv_async_init(loop, &w->async, on_async) != 0) {
        free(w);
        return GH_EINTERNAL;
    }
    w->async.data = w;
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        /* w is freed in the close callback, when libuv is done with async */
        uv_close((uv_handle_t *)&w->async, on_closed);
        return GH_EINTERNAL;
    }
    w->started = 1;
    *out = w;
    return 0;
}

void gh_writer_set_commit_hook(gh_writer *w, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&w->mu);
    w->hook = fn;
    w->hook_arg = arg;
    pthread_mutex_unlock(&w->mu);
}

static void enqueue(gh_writer *w, job *j)
{
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->cv);
}

int gh_writer_submit(gh_writer *w, const char *actor, gh_store_write_fn fn, void *arg,
                     gh_writer_done_cb done, void *cbarg)
{
    job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return GH_ENOMEM;
    j->fn = fn;
    j->arg = arg;
    j->done = done;
    j->cbarg = cbarg;
    snprintf(j->actor, sizeof(j->actor), "%s", actor ? actor : "");
    pthread_mutex_lock(&w->mu);
    if (w->stop) {
        pthread_mutex_unlock(&w->mu);
        free(j);
        return GH_EUNAVAIL;
    }
    w->loop_outstanding++;
    enqueue(w, j);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int gh_writer_submit_wait(gh_writer *w, const char *actor, gh_store_write_fn fn, void *arg,
                          char *err, size_t errlen)
{
    job j;
    int rc;

    memset(&j, 0, sizeof(j));
    j.fn = fn;
    j.arg = arg;
    j.waiting = 1;
    snprintf(j.actor, sizeof(j.actor), "%s", actor ? actor : "");
    pthread_mutex_lock(&w->mu);
    if (w->stop) {
        pthread_mutex_unlock(&w->mu);
        return GH_EUNAVAIL;
    }
    enqueue(w, &j);
    while (!j.finished)
        pthread_cond_wait(&w->done_cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    rc = j.rc;
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", j.err);
    return rc;
}

void gh_writer_stats(gh_writer *w, uint64_t *commits, uint64_t *ops)
{
    pthread_mutex_lock(&w->mu);
    *commits = w->commits;
    *ops = w->ops;
    pthread_mutex_unlock(&w->mu);
}

void gh_writer_batch_sizes(gh_writer *w, uint64_t sizes[GH_WRITER_BATCH_BUCKETS], uint64_t *commits,
                           uint64_t *ops)
{
    pthread_mutex_lock(&w->mu);
    memcpy(sizes, w->sizes, sizeof(w->sizes));
    *commits = w->commits;
    *ops = w->ops;
    pthread_mutex_unlock(&w->mu);
}

void gh_writer_stop(gh_writer *w)
{
    if (w == NULL)
        return;
    /* No uv_run here: this runs inside loop callbacks. The thread commits
     * everything queued before it exits (it stops only on an empty queue),
     * and the completions are then delivered right here, on the loop thread.
     * Submissions after the stop flag get GH_EUNAVAIL. */
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (w->started)
        pthread_join(w->thread, NULL);
    on_async(&w->async);
    pthread_mutex_lock(&w->mu);
    GH_ASSERT(w->loop_outstanding == 0);
    pthread_mutex_unlock(&w->mu);
    uv_close((uv_handle_t *)&w->async, on_closed);
}
