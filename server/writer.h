/*
 * writer.h: the single writer. Requests from the loop (and batches from the
 * sync workers) queue here; one thread drains the queue, runs the queued ops
 * in one LMDB write transaction (each op nested, so one failure undoes only
 * itself), commits with fsync, and only then completes the ops: loop ops
 * through uv_async on the loop thread, blocking submitters by waking them.
 * An acknowledged write is therefore always durable.
 */
#ifndef GH_WRITER_H
#define GH_WRITER_H

#include <uv.h>

#include "schema/store.h"

typedef struct gh_writer gh_writer;

/* Called on the loop thread after the op's commit is durable (rc = op's
 * result), or with the failure of the whole commit. err: message when rc < 0. */
typedef void (*gh_writer_done_cb)(void *cbarg, int rc, const char *err);

int gh_writer_start(gh_writer **out, uv_loop_t *loop, gh_store *store, unsigned batch_max);
/* Any loop thread (done runs on the writer's loop, loop 0: server/loop.c's
 * gh__submit_write brings it back to the submitting loop). fn(txn, arg) runs
 * on the writer thread; arg must stay valid until done runs. actor is copied. */
int gh_writer_submit(gh_writer *w, const char *actor, gh_store_write_fn fn, void *arg,
                     gh_writer_done_cb done, void *cbarg);
/* Any thread but the loop's: blocks until the op is durable; returns its rc
 * and copies its message into err. Used by sync workers. */
int gh_writer_submit_wait(gh_writer *w, const char *actor, gh_store_write_fn fn, void *arg,
                          char *err, size_t errlen);
/* fn(arg) runs on the writer thread after every commit, before the ops are
 * completed (server/memtrim.c trims the map there). Set once, any thread. */
void gh_writer_set_commit_hook(gh_writer *w, void (*fn)(void *), void *arg);
/* Counters for stats. */
void gh_writer_stats(gh_writer *w, uint64_t *commits, uint64_t *ops);
/* Commits by batch size, one consistent reading: sizes[i] counts the commits
 * of at most 2^i ops and more than 2^(i-1) (the last bucket: all larger
 * ones); commits and ops as gh_writer_stats. For the metrics histogram. */
#define GH_WRITER_BATCH_BUCKETS 11
void gh_writer_batch_sizes(gh_writer *w, uint64_t sizes[GH_WRITER_BATCH_BUCKETS], uint64_t *commits,
                           uint64_t *ops);
/* Drains the queue (every queued op is committed and completed), stops the
 * thread, and delivers the last completions before returning. Loop thread;
 * safe inside a loop callback (it does not run the loop). */
void gh_writer_stop(gh_writer *w);

#endif
