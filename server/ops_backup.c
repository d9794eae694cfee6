/*
 * ops_backup.c: the `backup` operation and `gatehoused --restore`.
 *
 * backup runs in two stages so that neither the loop nor the database ever
 * waits for the client. First a thread of its own copies the database
 * (mdb_env_copyfd2, compacted, one snapshot) into an unlinked temporary file
 * in the state directory and hashes it; the request that started it is
 * answered when the copy is complete (id, size, SHA-256). Then the client
 * fetches the file in chunks, `backup` with the id and an offset, each chunk
 * read from the file on the thread pool and sent base64-encoded. The copy
 * holds the store's map lock while it runs, so it must go to local storage,
 * never straight into a socket whose reader may stall (store_backup.c). One
 * backup at a time; one left unread for GH_BACKUP_IDLE_MS is dropped.
 *
 * restore (gatehoused --restore FILE, server stopped) copies FILE into a
 * temporary directory beside the state, opens it as a store (which refuses a
 * newer schema and migrates an older one), counts its records, and only then
 * renames it over data.mdb; the previous file is kept as data.mdb.pre-restore.
 * It holds LMDB's lock on the state directory meanwhile, so a server that has
 * it open (however started) is refused, and one starting waits.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "schema/log.h"
#include "server/server.h"

#define GH_BACKUP_CHUNK (256u * 1024)
#define GH_BACKUP_IDLE_MS 60000
#define GH_BACKUP_ID_LEN 32 /* hex of 16 random bytes */

typedef struct gh_backup {
    gh_server *srv;
    char id[GH_BACKUP_ID_LEN + 1];
    int fd; /* the unlinked copy */
    uv_thread_t thread;
    int thread_live;
    uv_async_t done; /* the copy thread finished */
    uv_timer_t idle;
    unsigned handles_open;
    gh_pending *starter; /* the request that asked for the backup */
    /* written by the thread before uv_async_send, read on the loop after */
    int copy_rc;
    uint64_t size;
    char sha256[crypto_hash_sha256_BYTES * 2 + 1];
    int ready;       /* copied: chunks may be read */
    unsigned reads;  /* chunk reads in flight on the pool */
    int closing;     /* dropped: free once reads and handles are gone */
    uint64_t served; /* bytes handed out, for the log */
} gh_backup;

typedef struct chunk_read {
    uv_fs_t fs;
    gh_backup *b;
    gh_pending *p;
    uint64_t offset;
    size_t len;
    unsigned char buf[];
} chunk_read;

static void backup_free_if_idle(gh_backup *b)
{
    if (!b->closing || b->reads > 0 || b->handles_open > 0 || b->thread_live)
        return;
    if (b->fd >= 0)
        close(b->fd);
    free(b);
}

static void on_handle_closed(uv_handle_t *h)
{
    gh_backup *b = h->data;
    b->handles_open--;
    backup_free_if_idle(b);
}

/* Drops the job: it no longer answers, and is freed once its thread, its
 * reads and its handles are done. */
static void backup_drop(gh_backup *b)
{
    if (b->closing)
        return;
    b->closing = 1;
    if (b->srv->backup == b)
        b->srv->backup = NULL;
    uv_close((uv_handle_t *)&b->idle, on_handle_closed);
    if (!b->thread_live)
        uv_close((uv_handle_t *)&b->done, on_handle_closed);
    backup_free_if_idle(b);
}

static void on_idle(uv_timer_t *t)
{
    gh_backup *b = t->data;
    GH_LOGW("backup %s dropped: not read for %d s (%llu of %llu bytes fetched)", b->id,
            GH_BACKUP_IDLE_MS / 1000, (unsigned long long)b->served, (unsigned long long)b->size);
    backup_drop(b);
}

/* ---- the copy thread ---- */

static void copy_thread(void *arg)
{
    gh_backup *b = arg;
    crypto_hash_sha256_state st;
    unsigned char buf[65536], digest[crypto_hash_sha256_BYTES];
    uint64_t off = 0;
    ssize_t n;

    b->copy_rc = gh_store_copy_fd(b->srv->store, b->fd);
    if (b->copy_rc == 0) {
        crypto_hash_sha256_init(&st);
        while ((n = pread(b->fd, buf, sizeof(buf), (off_t)off)) > 0) {
            crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
            off += (uint64_t)n;
        }
        if (n < 0) {
            GH_LOGE("backup: reading the copy back: %s", strerror(errno));
            b->copy_rc = GH_EIO;
        }
        crypto_hash_sha256_final(&st, digest);
        sodium_bin2hex(b->sha256, sizeof(b->sha256), digest, sizeof(digest));
        b->size = off;
    }
    uv_async_send(&b->done);
}

static void on_copy_done(uv_async_t *a)
{
    gh_backup *b = a->data;
    json_t *resp;

    if (!b->thread_live)
        return;
    uv_thread_join(&b->thread);
    b->thread_live = 0;
    if (b->closing) {
        uv_close((uv_handle_t *)&b->done, on_handle_closed);
        backup_free_if_idle(b);
        return;
    }
    gh_pending *p = b->starter;
    b->starter = NULL;
    if (b->copy_rc != 0) {
        if (p)
            gh_op_complete(p, b->copy_rc, "the backup copy failed (see the server log)", NULL);
        backup_drop(b);
        return;
    }
    b->ready = 1;
    GH_LOGI("backup %s: %llu bytes copied, sha256 %s", b->id, (unsigned long long)b->size,
            b->sha256);
    resp = json_object();
    json_object_set_new(resp, "backup", json_string(b->id));
    json_object_set_new(resp, "size", json_integer((json_int_t)b->size));
    json_object_set_new(resp, "sha256", json_string(b->sha256));
    json_object_set_new(resp, "chunk", json_integer(GH_BACKUP_CHUNK));
    if (p)
        gh_op_complete(p, 0, NULL, resp);
    else
        json_decref(resp);
    uv_timer_start(&b->idle, on_idle, GH_BACKUP_IDLE_MS, 0);
}

/* Opens an unlinked file in the state directory (same filesystem as the
 * data: no surprise tmpfs limits, and nothing left behind by a crash). */
static int open_spool(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd;
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/.backup-XXXXXX", dir) >= (int)sizeof(path))
        return -1;
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    return fd;
}

static int backup_start(gh_opctx *c)
{
    gh_server *srv = c->srv;
    unsigned char rnd[GH_BACKUP_ID_LEN / 2];

    if (srv->backup != NULL)
        return gh_op_fail(c, GH_EUNAVAIL, "a backup is already in progress (%s)", srv->backup->id);
    if (srv->stopping)
        return gh_op_fail(c, GH_EUNAVAIL, "the server is shutting down");
    gh_backup *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    b->srv = srv;
    b->fd = open_spool(c->cfg->state_dir);
    if (b->fd < 0) {
        int e = errno;
        free(b);
        GH_LOGE("backup: cannot create a temporary file in %s: %s", c->cfg->state_dir, strerror(e));
        return gh_op_fail(c, GH_EIO, "cannot create a temporary file in the state directory: %s",
                          strerror(e));
    }
    randombytes_buf(rnd, sizeof(rnd));
    sodium_bin2hex(b->id, sizeof(b->id), rnd, sizeof(rnd));
    uv_async_init(srv->loop, &b->done, on_copy_done);
    uv_timer_init(srv->loop, &b->idle);
    b->done.data = b->idle.data = b;
    b->handles_open = 2;
    if (uv_thread_create(&b->thread, copy_thread, b) != 0) {
        b->closing = 1;
        uv_close((uv_handle_t *)&b->idle, on_handle_closed);
        uv_close((uv_handle_t *)&b->done, on_handle_closed);
        return gh_op_fail(c, GH_EINTERNAL, "cannot start the backup thread");
    }
    b->thread_live = 1;
    b->starter = gh_op_pend(c);
    srv->backup = b;
    GH_LOGI("backup %s started by %s", b->id, c->actor);
    return 0;
}

/* ---- chunks ---- */

static void on_chunk_read(uv_fs_t *fs)
{
    chunk_read *r = fs->data;
    gh_backup *b = r->b;
    ssize_t n = fs->result;
    uv_fs_req_cleanup(fs);
    b->reads--;
    if (n < 0 || (size_t)n != r->len) {
        GH_LOGE("backup %s: reading offset %llu: %s", b->id, (unsigned long long)r->offset,
                n < 0 ? uv_strerror((int)n) : "short read");
        gh_op_complete(r->p, GH_EIO, "cannot read the backup copy", NULL);
    } else {
        size_t b64len = sodium_base64_ENCODED_LEN(r->len, sodium_base64_VARIANT_ORIGINAL);
        char *b64 = malloc(b64len);
        if (b64 == NULL) {
            gh_op_complete(r->p, GH_ENOMEM, "out of memory", NULL);
        } else {
            sodium_bin2base64(b64, b64len, r->buf, r->len, sodium_base64_VARIANT_ORIGINAL);
            json_t *resp = json_object();
            int last = r->offset + r->len == b->size;
            json_object_set_new(resp, "backup", json_string(b->id));
            json_object_set_new(resp, "offset", json_integer((json_int_t)r->offset));
            json_object_set_new(resp, "data", json_string(b64));
            json_object_set_new(resp, "done", json_boolean(last));
            free(b64);
            b->served += r->len;
            gh_op_complete(r->p, 0, NULL, resp);
            if (last && !b->closing) {
                GH_LOGI("backup %s: fetched", b->id);
                backup_drop(b); /* the client has every byte: the spool goes */
            }
        }
    }
    free(r);
    backup_free_if_idle(b);
}

static int backup_chunk(gh_opctx *c, const char *id)
{
    gh_backup *b = c->srv->backup;
    int64_t offset;
    int rc;

    if (b == NULL || strlen(id) != GH_BACKUP_ID_LEN ||
        sodium_memcmp(b->id, id, GH_BACKUP_ID_LEN) != 0)
        return gh_op_fail(c, GH_ENOTFOUND,
                          "no backup '%s' (finished, dropped after %d s "
                          "unread, or never started)",
                          id, GH_BACKUP_IDLE_MS / 1000);
    if (!b->ready)
        return gh_op_fail(c, GH_EUNAVAIL, "backup '%s' is still being copied", id);
    rc = gh_arg_int(c, "offset", 1, 0, INT64_MAX, &offset);
    if (rc != 0)
        return rc;
    if ((uint64_t)offset >= b->size && !(offset == 0 && b->size == 0))
        return gh_op_fail(c, GH_EINVAL, "'offset' %lld is past the end of the backup (%llu bytes)",
                          (long long)offset, (unsigned long long)b->size);
    size_t len = b->size - (uint64_t)offset < GH_BACKUP_CHUNK ? (size_t)(b->size - (uint64_t)offset)
                                                              : GH_BACKUP_CHUNK;
    chunk_read *r = malloc(sizeof(*r) + len);
    if (r == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    r->b = b;
    r->offset = (uint64_t)offset;
    r->len = len;
    r->fs.data = r;
    uv_buf_t buf = uv_buf_init((char *)r->buf, (unsigned)len);
    rc = uv_fs_read(c->srv->loop, &r->fs, b->fd, &buf, 1, offset, on_chunk_read);
    if (rc != 0) {
        free(r);
        return gh_op_fail(c, GH_EIO, "cannot read the backup copy: %s", uv_strerror(rc));
    }
    b->reads++;
    r->p = gh_op_pend(c);
    uv_timer_start(&b->idle, on_idle, GH_BACKUP_IDLE_MS, 0);
    return 0;
}

static int op_backup(gh_opctx *c)
{
    const char *id;
    int rc = gh_arg_str(c, "backup", 0, 64, &id);
    if (rc == GH_ENOTFOUND)
        return backup_start(c);
    if (rc != 0)
        return rc;
    return backup_chunk(c, id);
}

void gh__backup_stop(gh_server *srv)
{
    gh_backup *b = srv->backup;
    if (b == NULL)
        return;
    if (b->thread_live) { /* a local copy: bounded; wait for it */
        uv_thread_join(&b->thread);
        b->thread_live = 0;
        if (b->starter) {
            gh_op_complete(b->starter, GH_EUNAVAIL, "the server is shutting down", NULL);
            b->starter = NULL;
        }
    }
    backup_drop(b);
}

/* Admin only (the default class): a backup holds every verifier. */
const gh_op_def gh__ops_backup[] = {
    {.name = "backup",
     .fn = op_backup,
     /* pends on its copy thread, writes nothing; srv->backup and its handles
      * are loop 0's (server/loop.c) */
     .flags = GH_OPF_ARGON2 | GH_OPF_UNORDERED_WRITE | GH_OPF_LOOP0,
     .cls = GH_CLASS_ADMIN},
    {.name = NULL},
};

/* ---- restore (server stopped) ---- */

static int copy_file(const char *from, const char *to)
{
    char buf[65536];
    int in = -1, out = -1, rc = -1;
    ssize_t n;

    in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        fprintf(stderr, "gatehoused: --restore: cannot open %s: %s\n", from, strerror(errno));
        goto done;
    }
    out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        fprintf(stderr, "gatehoused: --restore: cannot create %s: %s\n", to, strerror(errno));
        goto done;
    }
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        for (ssize_t w = 0; w < n;) {
            ssize_t k = write(out, buf + w, (size_t)(n - w));
            if (k < 0) {
                if (errno == EINTR)
                    continue;
                fprintf(stderr, "gatehoused: --restore: writing %s: %s\n", to, strerror(errno));
                goto done;
            }
            w += k;
        }
    }
    if (n < 0) {
        fprintf(stderr, "gatehoused: --restore: reading %s: %s\n", from, strerror(errno));
        goto done;
    }
    if (fsync(out) != 0) {
        fprintf(stderr, "gatehoused: --restore: fsync %s: %s\n", to, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return rc;
}

/* 1 when a server answers on the socket. */
static int server_running(const char *sock)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (sock == NULL || strlen(sock) >= sizeof(sa.sun_path))
        return 0;
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int up = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return up;
}

/* LMDB's own lock on the state directory: every process that has the
 * environment open holds byte 0 of lock.mdb shared (fcntl), and the first
 * opener takes it exclusively (liblmdb mdb_env_excl_lock). Restore takes it
 * exclusively for its whole run, so it sees a server however it was started
 * (another --socket, another config, still starting), and a server started
 * meanwhile waits in mdb_env_open until the restore is done. Returns 0 and
 * *fd (-1: no lock file yet, nothing ever opened the directory), or -1
 * with *holder the pid of a process that has it open (0: unknown). */
static int lock_state_dir(const char *dir, int *fd, pid_t *holder)
{
    char path[4200];
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};

    *fd = -1;
    *holder = 0;
    snprintf(path, sizeof(path), "%s/lock.mdb", dir);
    int lfd = open(path, O_RDWR | O_CLOEXEC);
    if (lfd < 0)
        return errno == ENOENT ? 0 : -1;
    if (fcntl(lfd, F_SETLK, &fl) == 0) {
        *fd = lfd;
        return 0;
    }
    struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    if (fcntl(lfd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK)
        *holder = who.l_pid;
    close(lfd);
    return -1;
}

static int count_role(const gh_role *r, void *arg)
{
    (void)r;
    (*(uint64_t *)arg)++;
    return 0;
}

/* Opens the copy as a store and reads what an operator checks. */
static int check_copy(gh_config *cfg, const char *dir, uint32_t *schema, uint64_t *users,
                      uint64_t *groups, uint64_t *roles, uint64_t *seq)
{
    char err[512] = "";
    gh_store *st = NULL;
    gh_store_reader *rd = NULL;
    gh_txn *txn = NULL;
    gh_store_opts so = {.state_dir = dir,
                        .map_size = cfg->map_size,
                        .map_max = cfg->map_max,
                        .uid_min = cfg->uid_min};
    int rc = gh_store_open(&st, &so, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "gatehoused: --restore: the file is not a usable Gatehouse database: %s\n",
                err[0] ? err : gh_strerror(rc));
        goto done;
    }
    if ((rc = gh_store_reader_new(st, &rd)) != 0 || (rc = gh_store_read_begin(rd, &txn)) != 0)
        goto done;
    if ((rc = gh_store_schema_version(txn, schema)) != 0 ||
        (rc = gh_store_user_count(txn, users)) != 0 ||
        (rc = gh_store_group_count(txn, groups)) != 0 ||
        (rc = gh_store_role_list(txn, count_role, roles)) != 0 ||
        (rc = gh_store_changelog_seq(txn, seq)) != 0)
        fprintf(stderr, "gatehoused: --restore: cannot read the copy: %s\n", gh_strerror(rc));
    gh_store_read_end(rd);
done:
    if (rd)
        gh_store_reader_free(rd);
    if (st)
        gh_store_close(st);
    return rc;
}

int gh__restore(gh_config *cfg, const char *file)
{
    char tmp[3900], path[4096], dst[4096], old[4096];
    uint32_t schema = 0;
    uint64_t users = 0, groups = 0, roles = 0, seq = 0;
    struct stat dirst;
    int rc = 1, have_tmp = 0, lockfd = -1;

    if (strlen(cfg->state_dir) > sizeof(tmp) - 32) {
        fprintf(stderr, "gatehoused: --restore: the state directory's path is too long\n");
        return 1;
    }
    if (server_running(cfg->socket_path)) {
        fprintf(stderr,
                "gatehoused: --restore: a server answers on %s; stop it first (the state "
                "directory must not be in use)\n",
                cfg->socket_path);
        return 1;
    }
    if (mkdir(cfg->state_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "gatehoused: --restore: cannot create %s: %s\n", cfg->state_dir,
                strerror(errno));
        return 1;
    }
    pid_t holder = 0;
    if (lock_state_dir(cfg->state_dir, &lockfd, &holder) != 0) {
        if (holder > 0)
            fprintf(stderr,
                    "gatehoused: --restore: process %ld has the database in %s open (a "
                    "gatehoused?); stop it first\n",
                    (long)holder, cfg->state_dir);
        else
            fprintf(stderr,
                    "gatehoused: --restore: cannot lock %s/lock.mdb: %s; stop the "
                    "server first\n",
                    cfg->state_dir, strerror(errno));
        return 1;
    }
    if (stat(cfg->state_dir, &dirst) != 0) {
        fprintf(stderr, "gatehoused: --restore: %s: %s\n", cfg->state_dir, strerror(errno));
        goto done;
    }
    if (snprintf(tmp, sizeof(tmp), "%s/.restore-XXXXXX", cfg->state_dir) >= (int)sizeof(tmp) ||
        mkdtemp(tmp) == NULL) {
        fprintf(stderr, "gatehoused: --restore: cannot create a directory in %s: %s\n",
                cfg->state_dir, strerror(errno));
        goto done;
    }
    have_tmp = 1;
    snprintf(path, sizeof(path), "%s/data.mdb", tmp);
    snprintf(dst, sizeof(dst), "%s/data.mdb", cfg->state_dir);
    snprintf(old, sizeof(old), "%s/data.mdb.pre-restore", cfg->state_dir);
    if (copy_file(file, path) != 0)
        goto done;
    if (check_copy(cfg, tmp, &schema, &users, &groups, &roles, &seq) != 0)
        goto done;
    /* the state directory's owner (the service account) keeps owning it */
    if (geteuid() == 0 && dirst.st_uid != 0 && chown(path, dirst.st_uid, dirst.st_gid) != 0) {
        fprintf(stderr, "gatehoused: --restore: chown %s: %s\n", path, strerror(errno));
        goto done;
    }
    if (access(dst, F_OK) == 0) {
        unlink(old);
        if (link(dst, old) != 0) {
            fprintf(stderr, "gatehoused: --restore: cannot keep the previous database as %s: %s\n",
                    old, strerror(errno));
            goto done;
        }
    }
    if (rename(path, dst) != 0) {
        fprintf(stderr, "gatehoused: --restore: cannot install %s: %s\n", dst, strerror(errno));
        goto done;
    }
    int dfd = open(cfg->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    /* lock.mdb stays: its reader table describes the old file, and the next
     * opener, the first to hold it exclusively, resets it (a server waiting
     * on our lock must find the same lock file as everyone after it) */
    printf("restored %s into %s: schema %u, %llu users, %llu groups, %llu roles, change log at "
           "%llu\n",
           file, cfg->state_dir, schema, (unsigned long long)users, (unsigned long long)groups,
           (unsigned long long)roles, (unsigned long long)seq);
    if (access(old, F_OK) == 0)
        printf("the previous database is kept as %s\n", old);
    rc = 0;
done:
    if (have_tmp) {
        snprintf(path, sizeof(path), "%s/data.mdb", tmp);
        unlink(path);
        snprintf(path, sizeof(path), "%s/lock.mdb", tmp);
        unlink(path);
        rmdir(tmp);
    }
    if (lockfd >= 0)
        close(lockfd); /* the state directory is free for a server */
    return rc;
}
