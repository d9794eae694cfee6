/*
 * store.c: the LMDB environment, read snapshots, the write batch and the
 * conversion of LMDB errors at the module boundary.
 *
 * The one thing to know: mdb_env_set_mapsize needs no live transaction in the
 * process, so every txn runs with a lock held that a resize must take
 * exclusively: a reader snapshot its reader's own lock (so the loop threads,
 * each with its reader, share no lock on the read path), a write batch the
 * read side of s->maplock; the map grows only with maplock's write side and
 * every reader's lock held. A thread holding a read snapshot must therefore
 * not start a write that needs the map to grow: that case is detected and
 * fails with GH_EFULL instead of deadlocking.
 *
 * A batch runs its ops flat in one txn first and falls back to one nested txn
 * per op only when some op fails (see batch_once): same result, far cheaper.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

#include "schema/log.h"
#include "schema/store-int.h"

#define DEFAULT_MAP_SIZE ((size_t)64 << 20)
#define DEFAULT_MAP_MAX ((size_t)16 << 30)
#define DEFAULT_READERS 126
#define DEFAULT_UID_MIN 10000
#define DEFAULT_ACTOR "system"

static const struct {
    const char *name;
    unsigned flags;
} dbdefs[DB_COUNT] = {
    [DB_USERS] = {"users", 0},
    [DB_USER_NAME] = {"user_name", 0},
    [DB_USER_UID] = {"user_uid", 0},
    [DB_USER_ORIGIN] = {"user_origin", 0},
    [DB_GROUPS] = {"groups", 0},
    [DB_GROUP_NAME] = {"group_name", 0},
    [DB_GROUP_GID] = {"group_gid", 0},
    [DB_GROUP_ORIGIN] = {"group_origin", 0},
    [DB_MEMBER_OF] = {"member_of", MDB_DUPSORT | MDB_DUPFIXED},
    [DB_MEMBERS] = {"members", MDB_DUPSORT | MDB_DUPFIXED},
    [DB_USER_GROUPS_EFF] = {"user_groups_eff", MDB_DUPSORT | MDB_DUPFIXED},
    [DB_ROLES] = {"roles", 0},
    [DB_ROLE_CHILDREN] = {"role_children", MDB_DUPSORT},
    [DB_BINDINGS] = {"bindings", 0},
    [DB_BINDING_SUBJECT] = {"binding_subject", MDB_DUPSORT | MDB_DUPFIXED},
    [DB_BINDING_ROLE] = {"binding_role", MDB_DUPSORT | MDB_DUPFIXED},
    [DB_TOKENS] = {"tokens", 0},
    [DB_TOKEN_USER] = {"token_user", MDB_DUPSORT | MDB_DUPFIXED},
    [DB_CHANGELOG] = {"changelog", 0},
    [DB_SYNC] = {"sync", 0},
    [DB_META] = {"meta", 0},
    [DB_USER_HOT] = {"user_hot", 0},
    [DB_GROUP_HOT] = {"group_hot", 0},
};

/* What keeps one store's map from a resize, as held by the calling thread:
 * counted so that a thread holding a snapshot can open another one or write
 * without taking a lock again (a queued resize would then deadlock it). The
 * outermost hold took held_by's lock, or maplock's read side (NULL). */
static __thread gh_store *held_store;
static __thread int held_depth;
static __thread gh_store_reader *held_by;

/* r: the reader whose snapshot this is (its own lock), or NULL (maplock). */
static void hold(gh_store *s, gh_store_reader *r)
{
    if (held_depth > 0 && held_store == s) {
        held_depth++;
        return;
    }
    if (r != NULL)
        pthread_mutex_lock(&r->lock);
    else
        pthread_rwlock_rdlock(&s->maplock);
    if (held_depth == 0) {
        held_store = s;
        held_depth = 1;
        held_by = r;
    }
}

static void release(gh_store *s, gh_store_reader *r)
{
    if (held_depth > 0 && held_store == s) {
        if (--held_depth > 0)
            return;
        held_store = NULL;
        r = held_by; /* holds nest: the outermost lock goes last */
        held_by = NULL;
    }
    if (r != NULL)
        pthread_mutex_unlock(&r->lock);
    else
        pthread_rwlock_unlock(&s->maplock);
}

static void map_hold(gh_store *s)
{
    hold(s, NULL);
}

static void map_release(gh_store *s)
{
    release(s, NULL);
}

/* No txn of the process is live once this returns: a resize may run. */
static void map_exclusive(gh_store *s)
{
    pthread_rwlock_wrlock(&s->maplock);
    pthread_mutex_lock(&s->readers_mu);
    for (gh_store_reader *r = s->readers; r != NULL; r = r->next)
        pthread_mutex_lock(&r->lock);
}

static void map_exclusive_end(gh_store *s)
{
    for (gh_store_reader *r = s->readers; r != NULL; r = r->next)
        pthread_mutex_unlock(&r->lock);
    pthread_mutex_unlock(&s->readers_mu);
    pthread_rwlock_unlock(&s->maplock);
}

static int map_held(gh_store *s)
{
    return held_depth > 0 && held_store == s;
}

/* Another process grew the map (MDB_MAP_RESIZED): adopt its size. */
static int map_adopt(gh_store *s)
{
    int rc;

    if (map_held(s)) {
        GH_LOGE("store: map resized by another process while this thread holds a snapshot");
        return GH_EUNAVAIL;
    }
    map_exclusive(s);
    rc = mdb_env_set_mapsize(s->env, 0);
    map_exclusive_end(s);
    return gh__mdb_err(NULL, rc, "set_mapsize");
}

int gh__mdb_err(gh_txn *txn, int rc, const char *what)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_NOTFOUND:
        return GH_ENOTFOUND;
    case MDB_KEYEXIST:
        return GH_EEXISTS;
    case MDB_MAP_FULL:
        if (txn != NULL)
            txn->map_full = 1;
        GH_LOGD("store: %s: %s", what, mdb_strerror(rc));
        return GH_EFULL;
    default:
        break;
    }
    GH_LOGE("store: %s: %s", what, mdb_strerror(rc));
    if (txn != NULL && txn->err[0] == '\0')
        snprintf(txn->err, sizeof(txn->err), "storage error: %s: %s", what, mdb_strerror(rc));
    switch (rc) {
    case ENOMEM:
        return GH_ENOMEM;
    case MDB_TXN_FULL:
        return GH_EFULL;
    case MDB_BAD_VALSIZE:
        return GH_ETOOBIG;
    case EIO:
    case ENOSPC:
    case EROFS:
    case MDB_PANIC:
    case MDB_CORRUPTED:
        return GH_EIO;
    case MDB_VERSION_MISMATCH:
    case MDB_INVALID:
        return GH_EVERSION;
    default:
        return GH_EINTERNAL;
    }
}

/* ---- gh_txn ---- */

static void txn_init(gh_txn *t, gh_store *s, MDB_txn *mtxn, int rdonly, int64_t now)
{
    t->txn = mtxn;
    t->store = s;
    t->rdonly = rdonly;
    t->map_full = 0;
    t->now = now;
    snprintf(t->actor, sizeof(t->actor), "%s", DEFAULT_ACTOR);
    t->err[0] = '\0';
}

void gh_txn_set_actor(gh_txn *txn, const char *actor)
{
    snprintf(txn->actor, sizeof(txn->actor), "%s",
             actor != NULL && actor[0] != '\0' ? actor : DEFAULT_ACTOR);
}

const char *gh_txn_errmsg(gh_txn *txn)
{
    return txn->err;
}

int gh_txn_fail(gh_txn *txn, int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(txn->err, sizeof(txn->err), fmt, ap);
    va_end(ap);
    return err;
}

int64_t gh_txn_now(gh_txn *txn)
{
    return txn->now;
}

/* ---- environment ---- */

static int grow(gh_store *s, size_t seen);

static void seterr(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errbuf == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

/* Opens every named db, checks the schema version and migrates, in one txn.
 * Returns 1 when the map filled up (the caller grows it and retries). */
static int open_dbs(gh_store *s, char *errbuf, size_t errlen)
{
    MDB_txn *mtxn = NULL;
    gh_txn t = {0};
    uint64_t ver = 0;
    int rc;

    rc = mdb_txn_begin(s->env, NULL, 0, &mtxn);
    if (rc != 0) {
        seterr(errbuf, errlen, "cannot begin transaction: %s", mdb_strerror(rc));
        rc = gh__mdb_err(NULL, rc, "txn_begin");
        goto done;
    }
    for (int i = 0; i < DB_COUNT; i++) {
        rc = mdb_dbi_open(mtxn, dbdefs[i].name, dbdefs[i].flags | MDB_CREATE, &s->dbi[i]);
        if (rc != 0) {
            seterr(errbuf, errlen, "cannot open database %s: %s", dbdefs[i].name, mdb_strerror(rc));
            rc = gh__mdb_err(NULL, rc, "dbi_open");
            goto done;
        }
    }
    txn_init(&t, s, mtxn, 0, (int64_t)time(NULL));
    rc = gh__meta_get_u64(&t, "schema_version", &ver);
    if (rc == GH_ENOTFOUND) {
        ver = 0;
        rc = 0;
    }
    if (rc != 0) {
        seterr(errbuf, errlen, "cannot read schema version: %s", gh_strerror(rc));
        goto done;
    }
    if (ver > GH_SCHEMA_VERSION) {
        seterr(errbuf, errlen,
               "database schema version %llu is newer than this program supports (%d): "
               "upgrade Gatehouse or restore a matching backup",
               (unsigned long long)ver, GH_SCHEMA_VERSION);
        GH_LOGE("store: database schema version %llu is newer than supported %d",
                (unsigned long long)ver, GH_SCHEMA_VERSION);
        rc = GH_EVERSION;
        goto done;
    }
    if (ver < GH_SCHEMA_VERSION) {
        rc = gh__migrate(&t, (uint32_t)ver);
        if (rc == 0)
            rc = gh__meta_put_u64(&t, "schema_version", GH_SCHEMA_VERSION);
        if (rc != 0) {
            seterr(errbuf, errlen, "migration from schema version %llu failed: %s",
                   (unsigned long long)ver, t.err[0] ? t.err : gh_strerror(rc));
            goto done;
        }
    }
    rc = mdb_txn_commit(mtxn);
    mtxn = NULL;
    if (rc == MDB_MAP_FULL) {
        rc = 1;
    } else if (rc != 0) {
        seterr(errbuf, errlen, "cannot commit: %s", mdb_strerror(rc));
        rc = gh__mdb_err(NULL, rc, "commit");
    }
done:
    if (rc < 0 && t.map_full)
        rc = 1;
    if (mtxn != NULL)
        mdb_txn_abort(mtxn);
    return rc;
}

/* Creates and opens s->env (s->env stays NULL or is closed by the caller). */
static int env_open(gh_store *s, const gh_store_opts *opts, size_t map_size, char *errbuf,
                    size_t errlen)
{
    unsigned readers = opts->max_readers ? opts->max_readers : DEFAULT_READERS;
    int rc;

    rc = mdb_env_create(&s->env);
    if (rc != 0)
        s->env = NULL;
    if (rc == 0)
        rc = mdb_env_set_maxdbs(s->env, DB_COUNT + 4);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(s->env, readers);
    if (rc == 0)
        rc = mdb_env_set_mapsize(s->env, map_size);
    if (rc == 0)
        rc = mdb_env_open(s->env, opts->state_dir, MDB_NOTLS | (s->no_sync ? MDB_NOSYNC : 0), 0600);
    if (rc != 0) {
        seterr(errbuf, errlen, "cannot open database in %s: %s", opts->state_dir, mdb_strerror(rc));
        rc = gh__mdb_err(NULL, rc, "env_open");
    }
    return rc;
}

int gh_store_open(gh_store **out, const gh_store_opts *opts, char *errbuf, size_t errlen)
{
    gh_store *s = NULL;
    int rc, dead = 0;
    size_t map_size;
    MDB_envinfo info;

    *out = NULL;
    if (opts == NULL || opts->state_dir == NULL || opts->state_dir[0] == '\0') {
        seterr(errbuf, errlen, "no state directory");
        return GH_EINVAL;
    }
    if (mkdir(opts->state_dir, 0700) != 0 && errno != EEXIST) {
        seterr(errbuf, errlen, "cannot create %s: %s", opts->state_dir, strerror(errno));
        return GH_EIO;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        seterr(errbuf, errlen, "out of memory");
        return GH_ENOMEM;
    }
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* Writer preference: a map resize must not starve behind a stream of reads. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->maplock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&s->readers_mu, NULL);

    map_size = opts->map_size ? opts->map_size : DEFAULT_MAP_SIZE;
    s->map_max = opts->map_max ? opts->map_max : DEFAULT_MAP_MAX;
    if (s->map_max < map_size)
        s->map_max = map_size;
    s->uid_min = opts->uid_min ? opts->uid_min : DEFAULT_UID_MIN;
    s->no_sync = opts->no_sync;
    s->rerun_writes = opts->rerun_writes;

    rc = env_open(s, opts, map_size, errbuf, errlen);
    if (rc != 0)
        goto fail;
    mdb_reader_check(s->env, &dead);
    if (dead > 0)
        GH_LOGW("store: cleared %d stale reader slot(s)", dead);
    /* An existing file may be larger than the configured start size. */
    if (mdb_env_info(s->env, &info) == 0 && info.me_mapsize > s->map_max)
        s->map_max = info.me_mapsize;
    while ((rc = open_dbs(s, errbuf, errlen)) == 1) {
        rc = grow(s, 0);
        if (rc != 0) {
            seterr(errbuf, errlen, "database full while opening (map_max %zu bytes)", s->map_max);
            goto fail;
        }
    }
    if (rc != 0)
        goto fail;
    *out = s;
    return 0;

fail:
    if (s->env != NULL)
        mdb_env_close(s->env);
    pthread_rwlock_destroy(&s->maplock);
    pthread_mutex_destroy(&s->readers_mu);
    free(s);
    return rc;
}

void gh_store_close(gh_store *s)
{
    if (s == NULL)
        return;
    GH_ASSERT(s->readers == NULL);
    mdb_env_close(s->env);
    pthread_rwlock_destroy(&s->maplock);
    pthread_mutex_destroy(&s->readers_mu);
    free(s);
}

int gh_store_size(gh_store *s, uint64_t *used, uint64_t *mapsize)
{
    MDB_envinfo info;
    MDB_stat st;
    int rc;

    map_hold(s);
    rc = mdb_env_info(s->env, &info);
    if (rc == 0)
        rc = mdb_env_stat(s->env, &st);
    map_release(s);
    if (rc != 0)
        return gh__mdb_err(NULL, rc, "env_info");
    if (used != NULL)
        *used = (uint64_t)(info.me_last_pgno + 1) * st.ms_psize;
    if (mapsize != NULL)
        *mapsize = info.me_mapsize;
    return 0;
}

/* The range of this process's mappings of the file (dev, ino), unmapped. */
static int unmap_file_pages(dev_t dev, ino_t ino)
{
    char line[512];
    FILE *f = fopen("/proc/self/maps", "r");
    int rc = 0;

    if (f == NULL)
        return errno;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long start, end, off, inode;
        unsigned maj, min;
        char perms[8];

        if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &off, &maj, &min,
                   &inode) != 7 ||
            inode != (unsigned long)ino || makedev(maj, min) != dev)
            continue;
        if (madvise((void *)start, end - start, MADV_DONTNEED) != 0)
            rc = errno;
    }
    fclose(f);
    return rc;
}

int gh_store_trim_map(gh_store *s)
{
    const char *dir = NULL;
    char path[4096];
    struct stat st;
    int rc;

    if (mdb_env_get_path(s->env, &dir) != 0 || dir == NULL)
        return GH_EINTERNAL;
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    if (stat(path, &st) != 0)
        return gh__mdb_err(NULL, errno, "trim the map: stat");
    /* the map cannot move (grow) while held; other threads reading it just
     * fault the pages back from the page cache (LMDB maps it read-only) */
    map_hold(s);
    rc = unmap_file_pages(st.st_dev, st.st_ino);
    map_release(s);
    if (rc != 0)
        return gh__mdb_err(NULL, rc, "trim the map");
    return 0;
}

/* ---- read snapshots ---- */

int gh_store_reader_new(gh_store *s, gh_store_reader **out)
{
    /* cache-line aligned and padded: readers of different threads never
     * share a line (their locks and txns are written on every read) */
    size_t size = (sizeof(gh_store_reader) + 63) & ~(size_t)63;
    gh_store_reader *r = NULL;

    *out = NULL;
    if (posix_memalign((void **)&r, 64, size) != 0)
        return GH_ENOMEM;
    memset(r, 0, size);
    pthread_mutex_init(&r->lock, NULL);
    r->store = s;
    pthread_mutex_lock(&s->readers_mu);
    r->next = s->readers;
    if (s->readers != NULL)
        s->readers->prev = r;
    s->readers = r;
    pthread_mutex_unlock(&s->readers_mu);
    *out = r;
    return 0;
}

void gh_store_reader_free(gh_store_reader *r)
{
    if (r == NULL)
        return;
    if (r->active)
        gh_store_read_end(r);
    if (r->txn != NULL)
        mdb_txn_abort(r->txn);
    gh_store *s = r->store;
    pthread_mutex_lock(&s->readers_mu);
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        s->readers = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    pthread_mutex_unlock(&s->readers_mu);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

int gh_store_read_begin(gh_store_reader *r, gh_txn **out)
{
    int rc;

    GH_ASSERT(!r->active);
    *out = NULL;
    for (int tries = 0;; tries++) {
        hold(r->store, r);
        if (r->txn == NULL)
            rc = mdb_txn_begin(r->store->env, NULL, MDB_RDONLY, &r->txn);
        else
            rc = mdb_txn_renew(r->txn);
        if (rc == 0)
            break;
        if (r->txn != NULL) {
            mdb_txn_abort(r->txn);
            r->txn = NULL;
        }
        release(r->store, r);
        if (rc != MDB_MAP_RESIZED || tries > 0 || map_adopt(r->store) != 0)
            return gh__mdb_err(NULL, rc, "read txn");
    }
    r->active = 1;
    txn_init(&r->t, r->store, r->txn, 1, (int64_t)time(NULL));
    *out = &r->t;
    return 0;
}

void gh_store_read_end(gh_store_reader *r)
{
    if (!r->active)
        return;
    mdb_txn_reset(r->txn);
    r->active = 0;
    release(r->store, r);
}

/* ---- writes ---- */

static void ops_fail(gh_store_op *ops, size_t n, int rc, const char *msg)
{
    for (size_t i = 0; i < n; i++) {
        ops[i].rc = rc;
        snprintf(ops[i].err, sizeof(ops[i].err), "%s", msg);
    }
}

/* Doubles the map up to map_max. GH_EFULL when already there. seen: the map
 * size the failed attempt ran with (0: unknown); when another thread has grown
 * the map since, that growth is enough for a retry. */
static int grow(gh_store *s, size_t seen)
{
    MDB_envinfo info;
    size_t cur, next;
    int rc;

    if (map_held(s)) {
        GH_LOGE("store: map full and this thread holds a read snapshot: cannot grow");
        return GH_EFULL;
    }
    map_exclusive(s);
    rc = mdb_env_info(s->env, &info);
    if (rc != 0) {
        rc = gh__mdb_err(NULL, rc, "env_info");
        goto done;
    }
    cur = info.me_mapsize;
    if (seen != 0 && cur > seen)
        goto done;
    if (cur >= s->map_max) {
        GH_LOGE("store: map size %zu reached its maximum %zu", cur, s->map_max);
        rc = GH_EFULL;
        goto done;
    }
    next = cur > s->map_max / 2 ? s->map_max : cur * 2;
    rc = mdb_env_set_mapsize(s->env, next);
    if (rc != 0) {
        rc = gh__mdb_err(NULL, rc, "set_mapsize");
        goto done;
    }
    GH_LOGI("store: map grown from %zu to %zu bytes", cur, next);
done:
    map_exclusive_end(s);
    return rc;
}

enum { ATTEMPT_MAP_FULL = 1, ATTEMPT_OP_FAILED = 2, ATTEMPT_MAP_RESIZED = 3 };

/* Runs op i in its own nested txn (nested = 1) or directly in parent. */
static int run_op(gh_store *s, MDB_txn *parent, gh_store_op *op, int nested, int64_t now,
                  int *map_full)
{
    MDB_txn *child = NULL;
    gh_txn t;
    int rc;

    if (s->rerun_writes) {
        /* Tests: what a failing neighbour or a map growth does to a batch,
         * forced on every op: a first run whose writes are thrown away. An
         * op that changed its argument then writes something else. */
        rc = mdb_txn_begin(s->env, parent, 0, &child);
        if (rc != 0) {
            *map_full = rc == MDB_MAP_FULL;
            return gh__mdb_err(NULL, rc, "nested txn_begin");
        }
        txn_init(&t, s, child, 0, now);
        (void)op->fn(&t, op->arg);
        mdb_txn_abort(child);
        child = NULL;
    }
    if (nested) {
        rc = mdb_txn_begin(s->env, parent, 0, &child);
        if (rc != 0) {
            *map_full = rc == MDB_MAP_FULL;
            return gh__mdb_err(NULL, rc, "nested txn_begin");
        }
    }
    txn_init(&t, s, nested ? child : parent, 0, now);
    rc = op->fn(&t, op->arg);
    if (rc > 0)
        rc = GH_EINTERNAL; /* a write fn must return 0 or a GH_E* code */
    if (nested && rc == 0 && !t.map_full) {
        rc = mdb_txn_commit(child);
        child = NULL;
        if (rc == MDB_MAP_FULL)
            t.map_full = 1;
        rc = gh__mdb_err(&t, rc, "nested commit");
    }
    if (child != NULL)
        mdb_txn_abort(child);
    *map_full = t.map_full;
    op->rc = rc;
    if (rc != 0)
        snprintf(op->err, sizeof(op->err), "%s", t.err[0] ? t.err : gh_strerror(rc));
    else
        op->err[0] = '\0';
    return rc;
}

/* One attempt. 0: committed (or nothing to commit); ATTEMPT_MAP_FULL: nothing
 * written, grow and retry; ATTEMPT_OP_FAILED: flat mode only, an op failed
 * and everything was aborted; or a GH_E* code for the whole batch.
 *
 * Flat mode runs every op directly in the parent txn: a nested txn costs
 * LMDB a few MiB of bookkeeping allocations, so a batch first runs flat and is
 * rerun with one nested txn per op only when an op fails. Write fns may run
 * more than once (store.h), so the rerun gives exactly the nested result. */
static int batch_once(gh_store *s, gh_store_op *ops, size_t n, int nested, int64_t now,
                      size_t *mapsize, char *msg, size_t msglen)
{
    MDB_txn *parent = NULL;
    MDB_envinfo info;
    int rc, full = 0;

    map_hold(s);
    rc = mdb_txn_begin(s->env, NULL, 0, &parent);
    if (rc == MDB_MAP_RESIZED) {
        parent = NULL;
        rc = ATTEMPT_MAP_RESIZED;
        goto done;
    }
    *mapsize = rc == 0 && mdb_env_info(s->env, &info) == 0 ? info.me_mapsize : 0;
    if (rc != 0) {
        parent = NULL;
        snprintf(msg, msglen, "cannot begin write: %s", mdb_strerror(rc));
        rc = rc == MDB_MAP_FULL ? ATTEMPT_MAP_FULL : gh__mdb_err(NULL, rc, "txn_begin");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        rc = run_op(s, parent, &ops[i], nested, now, &full);
        if (full) {
            rc = ATTEMPT_MAP_FULL;
            goto done;
        }
        if (rc != 0 && !nested) {
            rc = ATTEMPT_OP_FAILED;
            goto done;
        }
    }
    rc = mdb_txn_commit(parent);
    parent = NULL;
    if (rc == MDB_MAP_FULL) {
        rc = ATTEMPT_MAP_FULL;
    } else if (rc != 0) {
        snprintf(msg, msglen, "commit failed: %s", mdb_strerror(rc));
        rc = gh__mdb_err(NULL, rc, "commit");
    }
done:
    if (parent != NULL)
        mdb_txn_abort(parent);
    map_release(s);
    return rc;
}

int gh_store_write_batch(gh_store *s, gh_store_op *ops, size_t n)
{
    int64_t now = (int64_t)time(NULL);
    char msg[GH_ERRMSG_MAX];
    size_t mapsize = 0;
    int rc, nested = 0, resized = 0;

    if (n == 0)
        return 0;
    for (;;) {
        msg[0] = '\0';
        rc = batch_once(s, ops, n, nested, now, &mapsize, msg, sizeof(msg));
        if (rc == ATTEMPT_OP_FAILED) {
            if (n == 1) {
                rc = 0; /* op->rc and op->err are set; nothing was written */
                break;
            }
            nested = 1;
            continue;
        }
        if (rc == ATTEMPT_MAP_RESIZED) {
            rc = resized++ == 0 ? map_adopt(s) : GH_EUNAVAIL;
            if (rc == 0)
                continue;
            snprintf(msg, sizeof(msg), "the map was resized by another process");
            break;
        }
        if (rc != ATTEMPT_MAP_FULL)
            break;
        rc = grow(s, mapsize);
        if (rc != 0) {
            snprintf(msg, sizeof(msg),
                     "storage full: the database reached its configured maximum size");
            break;
        }
    }
    if (rc != 0)
        ops_fail(ops, n, rc, msg[0] ? msg : gh_strerror(rc));
    return rc;
}

int gh_store_write(gh_store *s, gh_store_write_fn fn, void *arg, char *errbuf, size_t errlen)
{
    gh_store_op op = {.fn = fn, .arg = arg};
    int rc;

    rc = gh_store_write_batch(s, &op, 1);
    if (rc == 0)
        rc = op.rc;
    if (rc != 0)
        seterr(errbuf, errlen, "%s", op.err);
    else if (errbuf != NULL && errlen > 0)
        errbuf[0] = '\0';
    return rc;
}

int gh__name_walk(gh_txn *txn, int db, const char *prefix, const char *after, size_t limit,
                  gh__id_fn fn, void *arg)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    const char *start = after;
    size_t plen = prefix ? strlen(prefix) : 0, alen = after ? strlen(after) : 0, count = 0;
    int rc, op;

    /* start at whichever of prefix and after comes later */
    if (plen > 0 && (after == NULL || strcmp(prefix, after) > 0))
        start = prefix;
    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, db), &cur), "cursor");
    if (rc != 0)
        goto done;
    op = MDB_FIRST;
    if (start != NULL && start[0] != '\0') {
        k.mv_size = strlen(start);
        k.mv_data = (void *)start;
        op = MDB_SET_RANGE;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, op); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (after != NULL && k.mv_size == alen && memcmp(k.mv_data, after, alen) == 0)
            continue;
        if (plen > 0 && (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0))
            break;
        if (limit != 0 && count >= limit)
            break;
        if (v.mv_size != 8) {
            rc = gh_txn_fail(txn, GH_EINTERNAL, "corrupt name index");
            goto done;
        }
        count++;
        rc = fn(txn, gh__get_u64(v.mv_data), arg);
        if (rc != 0) {
            rc = rc < 0 ? rc : 0;
            goto done;
        }
    }
    rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "name cursor");
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

int gh__taken(gh_txn *txn, int db, const void *key, size_t klen, uint64_t self)
{
    uint64_t id;
    int rc = gh__get_id(txn, db, key, klen, &id);

    if (rc == GH_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    return id == self ? 0 : GH_EEXISTS;
}

int gh__reindex(gh_txn *txn, int db, const void *oldkey, size_t oldlen, const void *newkey,
                size_t newlen, const uint8_t idkey[8])
{
    int rc = 0;

    if (oldkey != NULL) {
        rc = gh__del(txn, db, oldkey, oldlen, NULL, 0);
        if (rc == GH_ENOTFOUND)
            rc = 0;
    }
    if (rc == 0 && newkey != NULL)
        rc = gh__put(txn, db, newkey, newlen, idkey, 8, 0);
    return rc;
}

int gh__ident_move(gh_txn *txn, const gh__ident_kind *k, uint64_t id, const gh__ident *old,
                   const gh__ident *n)
{
    char okey_old[GH_ORIGIN_KEY_MAX], okey_new[GH_ORIGIN_KEY_MAX];
    uint8_t idkey[8], num_old[4], num_new[4];
    int rc;

    gh__put_u64(idkey, id);
    if (strcmp(n->name, old->name) != 0) {
        rc = gh__taken(txn, k->name_db, n->name, strlen(n->name), id);
        if (rc == GH_EEXISTS)
            return gh_txn_fail(txn, rc, "%s %s already exists", k->what, n->name);
        if (rc == 0)
            rc = gh__reindex(txn, k->name_db, old->name, strlen(old->name), n->name,
                             strlen(n->name), idkey);
        if (rc != 0)
            return rc;
    }
    if (n->num != old->num) {
        gh__put_u32(num_old, old->num);
        gh__put_u32(num_new, n->num);
        rc = gh__taken(txn, k->num_db, num_new, 4, id);
        if (rc == GH_EEXISTS)
            return gh_txn_fail(txn, rc, "%s %u is already taken", k->numword, n->num);
        if (rc == 0)
            rc = gh__reindex(txn, k->num_db, num_old, 4, num_new, 4, idkey);
        if (rc != 0)
            return rc;
    }
    if (strcmp(n->origin, old->origin) != 0 || strcmp(n->origin_key, old->origin_key) != 0) {
        size_t ol = old->origin[0] ? gh__origin_key(okey_old, old->origin, old->origin_key) : 0;
        size_t nl = n->origin[0] ? gh__origin_key(okey_new, n->origin, n->origin_key) : 0;
        rc = nl ? gh__taken(txn, k->origin_db, okey_new, nl, id) : 0;
        if (rc == GH_EEXISTS)
            return gh_txn_fail(txn, rc, "a %s from %s with key %s already exists", k->what,
                               n->origin, n->origin_key);
        if (rc == 0)
            rc = gh__reindex(txn, k->origin_db, ol ? okey_old : NULL, ol, nl ? okey_new : NULL, nl,
                             idkey);
        if (rc != 0)
            return rc;
    }
    return 0;
}
