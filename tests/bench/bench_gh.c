/*
 * bench_gh.c: the Gatehouse side of gatehouse-bench: starting a private
 * gatehoused, loading the data set with `import`, and the closed-loop load
 * generator (N threads, one blocking socket each, D requests in flight).
 *
 * A worker keeps exactly `depth` requests outstanding: after each read it
 * classifies the complete reply lines (replies come in request order, so a
 * ring of send times is enough), then sends as many new requests as replies
 * arrived, in one write(). Latency is reply-read time minus request-write
 * time; only replies read inside the measured window (after the warm-up)
 * count. The one thing to know: replies are classified by scanning for
 * `"ok":true`, `"allow":true` and `"code":"...` in the compact JSON the
 * server writes, which is what the protocol fixes; a JSON parser here would
 * cost the server a good share of the second core.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/bench/bench_common.h"

#define RBUF_SIZE (256 * 1024)

/* ---- starting and stopping a private gatehoused ---- */

static int wait_ready(const char *sock, pid_t pid, int timeout_ms)
{
    static const char ping[] = "{\"op\":\"ping\"}\n";
    char buf[256];
    for (int waited = 0; waited < timeout_ms; waited += 2) {
        if (pid > 0 && !bn_child_alive(pid))
            return -1;
        int fd = bn_unix_connect(sock, 0);
        if (fd >= 0) {
            ssize_t n = -1;
            if (bn_write_all(fd, ping, sizeof(ping) - 1) == 0)
                n = read(fd, buf, sizeof(buf) - 1);
            close(fd);
            if (n > 0) {
                buf[n] = '\0';
                if (strstr(buf, "\"ok\":true"))
                    return 0;
            }
        }
        bn_sleep_ms(2);
    }
    return -1;
}

static int spawn_server(bn_gh_server *s)
{
    char *argv[] = {s->bin, "--config", s->conf, NULL};
    uint64_t t0 = bn_now_ns();
    s->pid = bn_spawn(argv, s->log);
    if (wait_ready(s->sock, s->pid, 600000) != 0) {
        bn_log("gatehoused did not become ready; its log (%s) follows", s->log);
        FILE *f = fopen(s->log, "r");
        char line[512];
        while (f && fgets(line, sizeof(line), f))
            fputs(line, stderr);
        if (f)
            fclose(f);
        return -1;
    }
    s->startup_ms = (double)(bn_now_ns() - t0) / 1e6;
    return 0;
}

int bn_gh_start(bn_gh_server *s, const char *bin, const bn_ctx *x)
{
    const char *dir = bn_tempdir("gh");
    memset(s, 0, sizeof(*s));
    s->ours = 1;
    snprintf(s->bin, sizeof(s->bin), "%s", bin);
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    snprintf(s->sock, sizeof(s->sock), "%s/gh.sock", dir);
    snprintf(s->conf, sizeof(s->conf), "%s/gatehoused.conf", dir);
    snprintf(s->log, sizeof(s->log), "%s/gatehoused.log", dir);
    FILE *f = fopen(s->conf, "w");
    if (f == NULL)
        bn_die("cannot write %s", s->conf);
    /* Lockout thresholds are raised so that the auth workload's wrong
     * passwords measure Argon2, not the (cheap) rate_limited answer. */
    fprintf(f,
            "; written by gatehouse-bench\n[server]\nstate_dir = %s/state\nsocket = %s\n"
            "log_level = warn\nidle_timeout = 0\nmax_request = 4M\nmax_output = 16M\n"
            "argon2_opslimit = %llu\nargon2_memlimit = %zu\nthreadpool_size = %d\n"
            "argon2_queue_max = %u\nlockout_threshold = 1000000\n"
            "peer_failure_threshold = 1000000\nmap_size = %lluM\n"
            "ldap_listen = ldapi://%s/ldapi\nldap_suffix = dc=bench\nldap_max_scan = 10000000\n",
            dir, s->sock, x->opslimit, x->memlimit, x->threadpool, x->argon2_queue_max,
            64ull + (unsigned long long)x->data.nusers / 200, dir);
    fclose(f);
    return spawn_server(s);
}

int bn_gh_restart(bn_gh_server *s, const bn_ctx *x)
{
    (void)x;
    if (!s->ours)
        return -1;
    bn_child_stop(s->pid, SIGTERM, 30000);
    s->pid = 0;
    return spawn_server(s);
}

void bn_gh_stop(bn_gh_server *s)
{
    if (s->ours && s->pid > 0) {
        bn_child_stop(s->pid, SIGTERM, 15000);
        s->pid = 0;
    }
}

/* ---- one-off calls ---- */

/* Reads one line (allocated) from fd; NULL on EOF/error. */
static char *read_line(int fd, char **pending, size_t *plen)
{
    for (;;) {
        char *nl = *plen ? memchr(*pending, '\n', *plen) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - *pending);
            char *line = malloc(n + 1);
            if (line == NULL)
                bn_die("out of memory");
            memcpy(line, *pending, n);
            line[n] = '\0';
            memmove(*pending, nl + 1, *plen - n - 1);
            *plen -= n + 1;
            return line;
        }
        char *p = realloc(*pending, *plen + 65536);
        if (p == NULL)
            bn_die("out of memory");
        *pending = p;
        ssize_t r = read(fd, *pending + *plen, 65536);
        if (r <= 0)
            return NULL;
        *plen += (size_t)r;
    }
}

char *bn_gh_call(const char *sock, const char *req)
{
    int fd = bn_unix_connect(sock, 1000);
    char *pending = NULL, *line = NULL;
    size_t plen = 0;
    if (fd < 0)
        return NULL;
    if (bn_write_all(fd, req, strlen(req)) == 0 && bn_write_all(fd, "\n", 1) == 0)
        line = read_line(fd, &pending, &plen);
    free(pending);
    close(fd);
    return line;
}

/* ---- import ---- */

static uint64_t count_failed(const char *line, char *first_err, size_t errlen)
{
    uint64_t n = 0;
    const char *p = line;
    if (strncmp(line, "{\"ok\":false", 11) == 0 || strstr(line, "\"results\"") == NULL) {
        if (first_err[0] == '\0')
            snprintf(first_err, errlen, "%.200s", line);
        return UINT64_MAX;
    }
    while ((p = strstr(p, "{\"ok\":false")) != NULL) {
        if (first_err[0] == '\0')
            snprintf(first_err, errlen, "%.200s", p);
        n++;
        p += 11;
    }
    return n;
}

int bn_gh_import(const bn_ctx *x, const bn_data *d, double *secs, uint64_t *nrec, uint64_t *failed)
{
    const int window = 4; /* requests in flight */
    const size_t max_bytes = 4u << 20;
    char err[256] = "";
    char *pending = NULL;
    size_t plen = 0;
    int fd = bn_unix_connect(x->sock, 1000);
    uint64_t t0 = bn_now_ns();
    bn_buf b = {0};

    *nrec = *failed = 0;
    if (fd < 0)
        return -1;
    for (int phase = 0; phase <= 4; phase++) {
        uint64_t total = bn_import_count(d, phase), i = 0;
        int inflight = 0;
        while (i < total || inflight > 0) {
            while (i < total && inflight < window) {
                b.len = 0;
                BN_PUTS(&b, "{\"op\":\"import\",\"records\":[");
                for (int k = 0; k < 1000 && i < total && b.len < max_bytes - 4096; k++, i++) {
                    if (k)
                        BN_PUTS(&b, ",");
                    bn_import_record(d, phase, i, &b);
                }
                BN_PUTS(&b, "]}\n");
                if (bn_write_all(fd, b.p, b.len) != 0)
                    goto fail;
                inflight++;
            }
            char *line = read_line(fd, &pending, &plen);
            if (line == NULL)
                goto fail;
            uint64_t nf = count_failed(line, err, sizeof(err));
            free(line);
            if (nf == UINT64_MAX) {
                bn_log("import refused: %s", err);
                goto fail;
            }
            *failed += nf;
            inflight--;
        }
        *nrec += total;
    }
    *secs = (double)(bn_now_ns() - t0) / 1e9;
    if (*failed)
        bn_log("import: %llu records failed; first: %s", (unsigned long long)*failed, err);
    bn_buf_free(&b);
    free(pending);
    close(fd);
    return 0;
fail:
    bn_buf_free(&b);
    free(pending);
    close(fd);
    return -1;
}

int bn_gh_tokens(bn_ctx *x, unsigned n)
{
    char *pending = NULL, name[32];
    size_t plen = 0;
    bn_buf b = {0};
    bn_rng r;
    int fd = bn_unix_connect(x->sock, 1000);
    if (fd < 0)
        return -1;
    bn_rng_seed(&r, x->data.seed ^ 0x70c3);
    x->tokens = calloc(n, sizeof(*x->tokens));
    x->ntokens = 0;
    for (unsigned done = 0; done < n;) {
        unsigned chunk = n - done < 16 ? n - done : 16; /* under argon2_queue_max */
        b.len = 0;
        for (unsigned i = 0; i < chunk; i++) {
            bn_user_name(name, sizeof(name), bn_rng_below(&r, x->data.nusers));
            bn_buf_printf(&b, "{\"op\":\"auth\",\"user\":\"%s\",\"password\":\"%s\"}\n", name,
                          x->data.password);
        }
        if (bn_write_all(fd, b.p, b.len) != 0)
            break;
        for (unsigned i = 0; i < chunk; i++) {
            char *line = read_line(fd, &pending, &plen);
            if (line == NULL)
                goto done;
            char *t = strstr(line, "\"token\":\"");
            if (t) {
                t += 9;
                t[strcspn(t, "\"")] = '\0';
                x->tokens[x->ntokens++] = strdup(t);
            } else if (x->ntokens == 0 && i == 0) {
                bn_log("auth for a token failed: %s", line);
            }
            free(line);
        }
        done += chunk;
    }
done:
    bn_buf_free(&b);
    free(pending);
    close(fd);
    return x->ntokens > 0 ? 0 : -1;
}

/* ---- warming the permission cache ---- */

typedef struct warm_arg {
    const bn_ctx *x;
    uint32_t start;
    int ok;
} warm_arg;

/* One connection checks every user once, 256 requests per write. */
static void *warm_main(void *arg)
{
    warm_arg *w = arg;
    const uint32_t n = w->x->data.nusers, chunk = 256;
    char *pending = NULL, name[32];
    size_t plen = 0;
    bn_buf b = {0};
    int fd = bn_unix_connect(w->x->sock, 1000);

    w->ok = fd >= 0;
    for (uint32_t done = 0; w->ok && done < n; done += chunk) {
        uint32_t k = n - done < chunk ? n - done : chunk;
        b.len = 0;
        for (uint32_t i = 0; i < k; i++) {
            bn_user_name(name, sizeof(name), (w->start + done + i) % n);
            bn_buf_printf(&b,
                          "{\"op\":\"check\",\"user\":\"%s\",\"action\":\"read\","
                          "\"resource\":\"warm\"}\n",
                          name);
        }
        if (bn_write_all(fd, b.p, b.len) != 0)
            w->ok = 0;
        for (uint32_t i = 0; w->ok && i < k; i++) {
            char *line = read_line(fd, &pending, &plen);
            if (line == NULL || strstr(line, "\"ok\":true") == NULL)
                w->ok = 0;
            free(line);
        }
    }
    bn_buf_free(&b);
    free(pending);
    if (fd >= 0)
        close(fd);
    return NULL;
}

int bn_gh_warm(const bn_ctx *x, int conns, double *secs)
{
    pthread_t th[64];
    warm_arg wa[64];
    uint64_t t0 = bn_now_ns();
    int ok = 1;

    if (conns > 64)
        conns = 64;
    for (int i = 0; i < conns; i++) {
        wa[i].x = x;
        wa[i].start = (uint32_t)((uint64_t)x->data.nusers * (uint64_t)i / (uint64_t)conns);
        wa[i].ok = 0;
        if (pthread_create(&th[i], NULL, warm_main, &wa[i]) != 0)
            bn_die("pthread_create failed");
    }
    for (int i = 0; i < conns; i++) {
        pthread_join(th[i], NULL);
        ok &= wa[i].ok;
    }
    *secs = (double)(bn_now_ns() - t0) / 1e9;
    return ok ? 0 : -1;
}

/* ---- the load generator ---- */

typedef struct wl_def {
    const char *name;
    int w[BN_OP_N]; /* weights; ADDMEM stands for the membership churn */
} wl_def;

static const wl_def workloads[] = {
    {"check", {[BN_OP_CHECK] = 1}},
    {"batch", {[BN_OP_BATCH] = 1}},
    {"auth", {[BN_OP_AUTH] = 1}},
    {"whoami", {[BN_OP_WHOAMI] = 1}},
    {"user.get", {[BN_OP_USERGET] = 1}},
    {"write", {[BN_OP_ADDMEM] = 1}},
    /* what a busy application tier sends: mostly checks, some token
     * lookups and profile reads, and a trickle of membership changes (each
     * one invalidates the compiled permission cache) */
    {"mixed",
     {[BN_OP_CHECK] = 800,
      [BN_OP_BATCH] = 50,
      [BN_OP_WHOAMI] = 50,
      [BN_OP_USERGET] = 90,
      [BN_OP_ADDMEM] = 10}},
};

static const wl_def *find_workload(const char *name)
{
    for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++)
        if (strcmp(workloads[i].name, name) == 0 ||
            (strcmp(name, "check.batch") == 0 && strcmp(workloads[i].name, "batch") == 0))
            return &workloads[i];
    return NULL;
}

typedef struct slot {
    uint64_t t0;
    uint8_t op;
    uint8_t wrong; /* auth with a wrong password */
    uint32_t pair; /* churn: index in the worker's pair table */
} slot;

typedef struct pair {
    uint32_t user, group;
} pair;

typedef struct group_spec {
    const wl_def *w;
    int conns, depth;
    bn_result *out;
} group_spec;

typedef struct worker {
    bn_ctx *x;
    const wl_def *w;
    int idx, nworkers, depth;
    bn_rng rng;
    int fd;
    slot *ring;
    size_t head, count;
    uint32_t wsum;
    bn_series ops[BN_OP_N];
    bn_codes codes;
    uint64_t all; /* replies over the whole run */
    const volatile uint64_t *t_start, *t_end;
    pthread_barrier_t *bar;
    bn_buf wbuf;
    char *rbuf;
    size_t rlen;
    /* churn: pairs added and acknowledged (FIFO), pairs in flight */
    pair *acked;
    size_t acked_head, acked_n, acked_cap;
    pair *inflight; /* indexed by slot.pair */
    uint32_t inflight_next;
    int last_was_add;
    char err[160];
} worker;

static uint32_t pick_op(worker *k)
{
    uint32_t v = bn_rng_below(&k->rng, k->wsum);
    for (uint32_t i = 0; i < BN_OP_N; i++) {
        if (v < (uint32_t)k->w->w[i])
            return i;
        v -= (uint32_t)k->w->w[i];
    }
    return BN_OP_CHECK;
}

static int user_in_group(const bn_data *d, uint32_t u, uint32_t g)
{
    for (uint32_t i = d->ug_off[u]; i < d->ug_off[u + 1]; i++)
        if (d->ug_group[i] == g)
            return 1;
    return 0;
}

/* Appends one request; fills the slot. */
static void build(worker *k, slot *s)
{
    const bn_data *d = &k->x->data;
    bn_buf *b = &k->wbuf;
    char name[32], gname[32];
    bn_check c;
    uint32_t op = pick_op(k);

    s->op = (uint8_t)op;
    s->wrong = 0;
    switch (op) {
    case BN_OP_CHECK:
        bn_check_pick(d, &k->rng, UINT32_MAX, &c);
        bn_user_name(name, sizeof(name), c.user);
        bn_buf_printf(b,
                      "{\"op\":\"check\",\"user\":\"%s\",\"action\":\"%s\",\"resource\":\"%s\"}\n",
                      name, c.action, c.resource);
        break;
    case BN_OP_BATCH:
        bn_check_pick(d, &k->rng, UINT32_MAX, &c);
        bn_user_name(name, sizeof(name), c.user);
        bn_buf_printf(b, "{\"op\":\"check.batch\",\"user\":\"%s\",\"checks\":[", name);
        for (int i = 0; i < k->x->batch; i++) {
            if (i)
                bn_check_pick(d, &k->rng, c.user, &c);
            bn_buf_printf(b, "%s{\"action\":\"%s\",\"resource\":\"%s\"}", i ? "," : "", c.action,
                          c.resource);
        }
        BN_PUTS(b, "]}\n");
        break;
    case BN_OP_AUTH:
        s->wrong = (double)bn_rng_below(&k->rng, 1000000) < k->x->wrong_ratio * 1e6;
        bn_user_name(name, sizeof(name), bn_rng_below(&k->rng, d->nusers));
        bn_buf_printf(b, "{\"op\":\"auth\",\"user\":\"%s\",\"password\":\"%s\"}\n", name,
                      s->wrong ? "not-the-Passw0rd" : d->password);
        break;
    case BN_OP_WHOAMI:
        bn_buf_printf(b, "{\"op\":\"whoami\",\"token\":\"%s\"}\n",
                      k->x->tokens[bn_rng_below(&k->rng, k->x->ntokens)]);
        break;
    case BN_OP_USERGET:
        bn_user_name(name, sizeof(name), bn_rng_below(&k->rng, d->nusers));
        bn_buf_printf(b, "{\"op\":\"user.get\",\"name\":\"%s\"}\n", name);
        break;
    default: {
        /* churn: remove the oldest acknowledged pair, or add a new one;
         * users are partitioned by worker so workers never collide */
        pair p;
        int add = !(k->acked_n > 0 && (k->last_was_add || k->acked_n >= (size_t)k->depth));
        if (add) {
            uint32_t per = d->nusers / (uint32_t)k->nworkers;
            p.user =
                (uint32_t)k->idx + (uint32_t)k->nworkers * bn_rng_below(&k->rng, per ? per : 1);
            do
                p.group = bn_rng_below(&k->rng, d->ngroups);
            while (user_in_group(d, p.user, p.group));
        } else {
            p = k->acked[k->acked_head];
            k->acked_head = (k->acked_head + 1) % k->acked_cap;
            k->acked_n--;
        }
        k->last_was_add = add;
        s->op = add ? BN_OP_ADDMEM : BN_OP_DELMEM;
        s->pair = k->inflight_next;
        k->inflight[k->inflight_next] = p;
        k->inflight_next = (k->inflight_next + 1) % (uint32_t)(k->depth * 2 + 2);
        bn_user_name(name, sizeof(name), p.user);
        bn_group_name(gname, sizeof(gname), p.group);
        bn_buf_printf(b, "{\"op\":\"group.%s_member\",\"group\":\"%s\",\"user\":\"%s\"}\n",
                      add ? "add" : "remove", gname, name);
        break;
    }
    }
}

static const char *find(const char *p, size_t len, const char *needle)
{
    return memmem(p, len, needle, strlen(needle));
}

static void note_code(worker *k, const char *line, size_t len)
{
    const char *c = find(line, len, "\"code\":\"");
    if (c == NULL) {
        bn_codes_add(&k->codes, "(no code)", 9, 1);
        return;
    }
    c += 8;
    const char *e = memchr(c, '"', len - (size_t)(c - line));
    bn_codes_add(&k->codes, c, e ? (size_t)(e - c) : 0, 1);
}

static void classify(worker *k, const slot *s, const char *line, size_t len, int count)
{
    bn_series *se = &k->ops[s->op];
    int ok = find(line, len < 24 ? len : 24, "\"ok\":true") != NULL;

    if (s->op == BN_OP_ADDMEM && ok) {
        /* acknowledged: may be removed from now on */
        if (k->acked_n == k->acked_cap)
            bn_die("churn queue overflow");
        k->acked[(k->acked_head + k->acked_n++) % k->acked_cap] = k->inflight[s->pair];
    }
    if (!count)
        return;
    switch (s->op) {
    case BN_OP_CHECK:
        if (ok) {
            se->ok++;
            if (find(line, len, "\"allow\":true"))
                se->yes++;
            else
                se->no++;
            return;
        }
        break;
    case BN_OP_BATCH:
        if (ok) {
            const char *r = find(line, len, "\"results\":[");
            se->ok++;
            for (const char *p = r; p && p < line + len; p++) {
                if (*p == 't') {
                    se->yes++;
                    se->items++;
                } else if (*p == 'f') {
                    se->no++;
                    se->items++;
                }
            }
            return;
        }
        break;
    case BN_OP_AUTH:
        if (s->wrong && !ok && find(line, len, "\"invalid_credentials\"")) {
            se->ok++;
            se->no++;
            return;
        }
        if (!s->wrong && ok) {
            se->ok++;
            se->yes++;
            return;
        }
        break;
    default:
        if (ok) {
            se->ok++;
            return;
        }
        break;
    }
    se->errors++;
    if (ok)
        bn_codes_add(&k->codes, "(unexpected success)", 20, 1);
    else
        note_code(k, line, len);
}

static int send_batch(worker *k, size_t n)
{
    k->wbuf.len = 0;
    size_t first = (k->head + k->count) % (size_t)k->depth;
    for (size_t i = 0; i < n; i++)
        build(k, &k->ring[(first + i) % (size_t)k->depth]);
    uint64_t t = bn_now_ns();
    for (size_t i = 0; i < n; i++)
        k->ring[(first + i) % (size_t)k->depth].t0 = t;
    k->count += n;
    if (bn_write_all(k->fd, k->wbuf.p, k->wbuf.len) != 0) {
        snprintf(k->err, sizeof(k->err), "write: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    worker *k = arg;
    if (k->x->client_cpu >= 0)
        bn_pin_self(k->x->client_cpu);
    k->fd = bn_unix_connect(k->x->sock, 2000);
    pthread_barrier_wait(k->bar);
    if (k->fd < 0) {
        snprintf(k->err, sizeof(k->err), "connect %s: %s", k->x->sock, strerror(errno));
        return NULL;
    }
    uint64_t t_start = *k->t_start, t_end = *k->t_end;
    if (send_batch(k, (size_t)k->depth) != 0)
        return NULL;
    while (k->count > 0) {
        ssize_t r = read(k->fd, k->rbuf + k->rlen, RBUF_SIZE - k->rlen);
        if (r <= 0) {
            snprintf(k->err, sizeof(k->err), "read: %s",
                     r == 0 ? "connection closed by the server" : strerror(errno));
            return NULL;
        }
        uint64_t t = bn_now_ns();
        int in_window = t >= t_start && t <= t_end;
        size_t len = k->rlen + (size_t)r, start = 0, done = 0;
        for (;;) {
            char *nl = memchr(k->rbuf + start, '\n', len - start);
            if (nl == NULL)
                break;
            size_t n = (size_t)(nl - (k->rbuf + start));
            slot *s = &k->ring[k->head];
            classify(k, s, k->rbuf + start, n, in_window);
            k->all++;
            if (in_window)
                bn_series_add(&k->ops[s->op], t - s->t0);
            k->head = (k->head + 1) % (size_t)k->depth;
            k->count--;
            done++;
            start += n + 1;
        }
        if (start < len)
            memmove(k->rbuf, k->rbuf + start, len - start);
        k->rlen = len - start;
        if (k->rlen == RBUF_SIZE) {
            snprintf(k->err, sizeof(k->err), "reply line longer than %d bytes", RBUF_SIZE);
            return NULL;
        }
        if (done > 0 && t < t_end && send_batch(k, done) != 0)
            return NULL;
    }
    return NULL;
}

/* Removes the memberships a churn worker added and did not remove. */
static void churn_cleanup(worker *k)
{
    char name[32], gname[32], *pending = NULL, *line;
    size_t plen = 0, n = k->acked_n;
    bn_buf b = {0};
    if (n == 0)
        return;
    int fd = bn_unix_connect(k->x->sock, 1000);
    if (fd < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        pair p = k->acked[(k->acked_head + i) % k->acked_cap];
        bn_user_name(name, sizeof(name), p.user);
        bn_group_name(gname, sizeof(gname), p.group);
        bn_buf_printf(&b, "{\"op\":\"group.remove_member\",\"group\":\"%s\",\"user\":\"%s\"}\n",
                      gname, name);
    }
    if (bn_write_all(fd, b.p, b.len) == 0)
        for (size_t i = 0; i < n && (line = read_line(fd, &pending, &plen)) != NULL; i++)
            free(line);
    k->acked_n = 0;
    free(pending);
    bn_buf_free(&b);
    close(fd);
}

/* Runs the groups at once (the auth storm runs two); fills each out. */
static int run_groups(bn_ctx *x, group_spec *g, int ngroups, double seconds)
{
    int total = 0, failed = 0;
    for (int i = 0; i < ngroups; i++)
        total += g[i].conns;
    worker *ks = calloc((size_t)total, sizeof(*ks));
    pthread_t *th = calloc((size_t)total, sizeof(*th));
    pthread_barrier_t bar;
    volatile uint64_t t_start = 0, t_end = 0;
    bn_rss before, after;

    if (ks == NULL || th == NULL)
        bn_die("out of memory");
    pthread_barrier_init(&bar, NULL, (unsigned)total + 1);
    bn_rss_read(x->gh_pid, &before);
    double scpu0 = bn_proc_cpu(x->gh_pid), ccpu0 = bn_self_cpu(), busy0 = bn_sys_busy();
    uint64_t wall0 = bn_now_ns();
    for (int gi = 0, n = 0; gi < ngroups; gi++) {
        for (int i = 0; i < g[gi].conns; i++, n++) {
            worker *k = &ks[n];
            k->x = x;
            k->w = g[gi].w;
            k->idx = i;
            k->nworkers = g[gi].conns;
            k->depth = g[gi].depth;
            k->ring = calloc((size_t)k->depth, sizeof(*k->ring));
            k->rbuf = malloc(RBUF_SIZE);
            k->acked_cap = (size_t)k->depth * 2 + 2;
            k->acked = calloc(k->acked_cap, sizeof(*k->acked));
            k->inflight = calloc(k->acked_cap, sizeof(*k->inflight));
            if (k->ring == NULL || k->rbuf == NULL || k->acked == NULL || k->inflight == NULL)
                bn_die("out of memory");
            for (int o = 0; o < BN_OP_N; o++)
                k->wsum += (uint32_t)k->w->w[o];
            bn_rng_seed(&k->rng, x->data.seed * 7919 + (uint64_t)n * 104729 + (uint64_t)gi);
            k->t_start = &t_start;
            k->t_end = &t_end;
            k->bar = &bar;
            if (pthread_create(&th[n], NULL, worker_main, k) != 0)
                bn_die("pthread_create failed");
        }
    }
    uint64_t now = bn_now_ns();
    t_start = now + (uint64_t)(x->warmup * 1e9);
    t_end = t_start + (uint64_t)(seconds * 1e9);
    pthread_barrier_wait(&bar);
    for (int n = 0; n < total; n++)
        pthread_join(th[n], NULL);
    bn_rss_read(x->gh_pid, &after);
    double wall = (double)(bn_now_ns() - wall0) / 1e9;
    double scpu = bn_proc_cpu(x->gh_pid) - scpu0, ccpu = bn_self_cpu() - ccpu0;
    double other = bn_other_share(bn_sys_busy() - busy0, scpu0 >= 0 ? scpu : 0, ccpu, wall);
    for (int gi = 0, n = 0; gi < ngroups; gi++) {
        bn_result *out = g[gi].out;
        memset(out, 0, sizeof(*out));
        snprintf(out->side, sizeof(out->side), "gatehouse");
        snprintf(out->workload, sizeof(out->workload), "%s", g[gi].w->name);
        out->conns = g[gi].conns;
        out->depth = g[gi].depth;
        out->seconds = seconds;
        out->rss_before_kb = before.rss;
        out->rss_after_kb = after.rss;
        out->wall_s = wall;
        out->server_cpu_s = scpu0 >= 0 ? scpu : -1;
        out->client_cpu_s = ccpu;
        out->other_cpu_share = other;
        for (int i = 0; i < g[gi].conns; i++, n++) {
            worker *k = &ks[n];
            out->ops_all += k->all;
            if (k->err[0]) {
                bn_log("%s worker %d: %s", g[gi].w->name, i, k->err);
                failed = 1;
            }
            for (int o = 0; o < BN_OP_N; o++) {
                bn_series_merge(&out->ops[o], &k->ops[o]);
                bn_series_free(&k->ops[o]);
            }
            bn_codes_merge(&out->codes, &k->codes);
            churn_cleanup(k);
            if (k->fd >= 0)
                close(k->fd);
            free(k->ring);
            free(k->rbuf);
            free(k->acked);
            free(k->inflight);
            bn_buf_free(&k->wbuf);
        }
        for (int o = 0; o < BN_OP_N; o++)
            bn_series_sort(&out->ops[o]);
    }
    pthread_barrier_destroy(&bar);
    free(ks);
    free(th);
    return failed ? -1 : 0;
}

int bn_gh_run(bn_ctx *x, const char *workload, int conns, int depth, double seconds, bn_result *out)
{
    group_spec g = {find_workload(workload), conns, depth, out};
    if (g.w == NULL)
        bn_die("unknown workload '%s'", workload);
    if ((g.w->w[BN_OP_WHOAMI] > 0) && x->ntokens == 0)
        bn_die("whoami needs tokens: authentication failed earlier");
    return run_groups(x, &g, 1, seconds);
}

int bn_gh_auth_storm(bn_ctx *x, int auth_conns, int auth_depth, int check_conns, double seconds,
                     bn_result *auth_out, bn_result *check_out)
{
    group_spec g[2] = {
        {find_workload("auth"), auth_conns, auth_depth, auth_out},
        {find_workload("check"), check_conns, 1, check_out},
    };
    return run_groups(x, g, 2, seconds);
}
