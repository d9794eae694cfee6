/*
 * bench_base.c: the two physical limits the Gatehouse figures are held
 * against, measured by the tool itself in the same run:
 *
 *  - an echo round trip over a UNIX stream socket with the message size of a
 *    check request, to a forked process that waits in epoll_wait, read()s
 *    and write()s the bytes back: the least any event-loop server can cost
 *    per request (gatehoused's libuv loop makes the same three calls);
 *  - crypto_pwhash_str_verify per second at the server's Argon2 cost with
 *    as many threads as the server's pool: the most `auth` can do.
 *
 * The one thing to know: the echo process is pinned where gatehoused is
 * pinned and the client thread where the benchmark client is pinned, so the
 * comparison holds the scheduler's placement fixed (same CPU: every round
 * trip is two context switches on one core; cross CPU: two wake-ups across
 * cores).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "tests/bench/bench_common.h"

/* One thread, one epoll set: the listening socket and every connection.
 * Whatever a read() returns is written back (pipelined messages come back
 * in batches, as a pipelining server answers them). */
static void echo_serve(int lfd, int cpu)
{
    char buf[65536];
    struct epoll_event ev = {.events = EPOLLIN}, out[64];
    int open_conns = 0, served = 0;
    /* the benchmark's handlers kill its registered children (gatehoused,
     * slapd) on a fatal signal: this child's SIGTERM must only end it */
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGSEGV, SIGABRT};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], SIG_DFL);
    if (cpu >= 0)
        bn_pin_self(cpu);
    int ep = epoll_create1(0);
    if (ep < 0)
        _exit(1);
    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    for (;;) {
        int n = epoll_wait(ep, out, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        for (int i = 0; i < n; i++) {
            int fd = out[i].data.fd;
            if (fd == lfd) {
                int cfd = accept(lfd, NULL, NULL);
                if (cfd < 0)
                    continue;
                ev.data.fd = cfd;
                epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
                open_conns++;
                served = 1;
                continue;
            }
            ssize_t r = read(fd, buf, sizeof(buf));
            if (r <= 0 || bn_write_all(fd, buf, (size_t)r) != 0) {
                close(fd);
                if (--open_conns == 0 && served)
                    _exit(0);
            }
        }
    }
}

typedef struct echo_client {
    const char *path, *msg;
    int cpu;
    double seconds;
    bn_series s;
    uint64_t all;
    char err[128];
} echo_client;

static void *echo_client_main(void *arg)
{
    echo_client *e = arg;
    size_t len = strlen(e->msg);
    char buf[65536];
    if (e->cpu >= 0)
        bn_pin_self(e->cpu);
    int fd = bn_unix_connect(e->path, 2000);
    if (fd < 0) {
        snprintf(e->err, sizeof(e->err), "connect: %s", strerror(errno));
        return NULL;
    }
    uint64_t t_start = bn_now_ns() + 300000000ull; /* 0.3 s warm-up */
    uint64_t t_end = t_start + (uint64_t)(e->seconds * 1e9);
    for (;;) {
        uint64_t t0 = bn_now_ns();
        if (bn_write_all(fd, e->msg, len) != 0) {
            snprintf(e->err, sizeof(e->err), "write: %s", strerror(errno));
            break;
        }
        size_t got = 0;
        while (got < len) {
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n <= 0) {
                snprintf(e->err, sizeof(e->err), "read: %s", n ? strerror(errno) : "EOF");
                close(fd);
                return NULL;
            }
            got += (size_t)n;
        }
        uint64_t t = bn_now_ns();
        e->all++;
        if (t >= t_start) {
            bn_series_add(&e->s, t - t0);
            e->s.ok++;
        }
        if (t > t_end)
            break;
    }
    close(fd);
    return NULL;
}

int bn_echo_run(const char *msg, int server_cpu, int client_cpu, double seconds, bn_result *out)
{
    static const char *dir; /* one for every echo run (removed at exit) */
    if (dir == NULL)
        dir = bn_tempdir("echo");
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    char path[600];
    snprintf(path, sizeof(path), "%s/echo.sock", dir);
    if (strlen(path) >= sizeof(sun.sun_path))
        bn_die("echo socket path too long: %s", path);
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || listen(lfd, 4) != 0)
        bn_die("echo socket %s: %s", path, strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        bn_die("fork: %s", strerror(errno));
    if (pid == 0)
        echo_serve(lfd, server_cpu);
    bn_children_register(pid);
    close(lfd);

    echo_client e = {.path = path, .msg = msg, .cpu = client_cpu, .seconds = seconds};
    pthread_t th;
    double scpu0 = bn_proc_cpu(pid), ccpu0 = bn_self_cpu(), busy0 = bn_sys_busy();
    uint64_t wall0 = bn_now_ns();
    if (pthread_create(&th, NULL, echo_client_main, &e) != 0)
        bn_die("pthread_create failed");
    pthread_join(th, NULL);
    double scpu = bn_proc_cpu(pid);
    memset(out, 0, sizeof(*out));
    snprintf(out->side, sizeof(out->side), "echo");
    snprintf(out->workload, sizeof(out->workload), "echo %zuB", strlen(msg));
    out->conns = 1;
    out->depth = 1;
    out->seconds = seconds;
    out->wall_s = (double)(bn_now_ns() - wall0) / 1e9;
    out->server_cpu_s = scpu - scpu0;
    out->client_cpu_s = bn_self_cpu() - ccpu0;
    out->ops_all = e.all;
    out->other_cpu_share =
        bn_other_share(bn_sys_busy() - busy0, out->server_cpu_s, out->client_cpu_s, out->wall_s);
    out->rss_before_kb = out->rss_after_kb = -1;
    bn_series_merge(&out->ops[BN_OP_ECHO], &e.s);
    bn_series_free(&e.s);
    bn_series_sort(&out->ops[BN_OP_ECHO]);
    bn_child_stop(pid, SIGTERM, 2000);
    unlink(path);
    if (e.err[0]) {
        bn_log("echo: %s", e.err);
        return -1;
    }
    return 0;
}

/* ---- echo, several connections, each keeping `depth` messages in flight ---- */

typedef struct echo_pipe {
    const char *path, *msg;
    int depth;
    uint64_t t_start, t_end;
    bn_series s;
    uint64_t all;
    char err[128];
} echo_pipe;

/* Like a pipelined benchmark client: depth messages out, then for every
 * message that came back whole, one more (the round trips/s of the socket
 * with this concurrency is the ceiling for any server on this machine). */
static void *echo_pipe_main(void *arg)
{
    echo_pipe *e = arg;
    size_t len = strlen(e->msg), got = 0;
    char buf[65536], *out = malloc(len * (size_t)e->depth);
    uint64_t *sent = calloc((size_t)e->depth, sizeof(*sent));
    size_t head = 0;
    int fd = bn_unix_connect(e->path, 2000);
    if (fd < 0 || out == NULL || sent == NULL) {
        snprintf(e->err, sizeof(e->err), "connect: %s", strerror(errno));
        goto done;
    }
    for (int i = 0; i < e->depth; i++) {
        memcpy(out + (size_t)i * len, e->msg, len);
        sent[i] = bn_now_ns();
    }
    if (bn_write_all(fd, out, len * (size_t)e->depth) != 0) {
        snprintf(e->err, sizeof(e->err), "write: %s", strerror(errno));
        goto done;
    }
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0) {
            snprintf(e->err, sizeof(e->err), "read: %s", n ? strerror(errno) : "EOF");
            goto done;
        }
        got += (size_t)n;
        size_t whole = got / len, k = 0;
        got %= len;
        uint64_t t = bn_now_ns();
        for (; k < whole; k++) {
            e->all++;
            if (t >= e->t_start) {
                bn_series_add(&e->s, t - sent[head]);
                e->s.ok++;
            }
            sent[head] = t;
            head = (head + 1) % (size_t)e->depth;
        }
        if (t > e->t_end)
            break;
        if (whole > 0 && bn_write_all(fd, out, len * whole) != 0) {
            snprintf(e->err, sizeof(e->err), "write: %s", strerror(errno));
            goto done;
        }
    }
done:
    if (fd >= 0)
        close(fd);
    free(out);
    free(sent);
    return NULL;
}

int bn_echo_pipelined_run(const char *msg, int conns, int depth, double seconds, bn_result *out)
{
    static const char *dir;
    if (dir == NULL)
        dir = bn_tempdir("echo-pipe");
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    char path[600];
    int rc = 0;
    snprintf(path, sizeof(path), "%s/echo.sock", dir);
    if (strlen(path) >= sizeof(sun.sun_path))
        bn_die("echo socket path too long: %s", path);
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || listen(lfd, 64) != 0)
        bn_die("echo socket %s: %s", path, strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        bn_die("fork: %s", strerror(errno));
    if (pid == 0)
        echo_serve(lfd, -1);
    bn_children_register(pid);
    close(lfd);

    echo_pipe *es = calloc((size_t)conns, sizeof(*es));
    pthread_t *th = calloc((size_t)conns, sizeof(*th));
    if (es == NULL || th == NULL)
        bn_die("out of memory");
    uint64_t t_start = bn_now_ns() + 300000000ull; /* 0.3 s warm-up */
    double scpu0 = bn_proc_cpu(pid), ccpu0 = bn_self_cpu(), busy0 = bn_sys_busy();
    uint64_t wall0 = bn_now_ns();
    for (int i = 0; i < conns; i++) {
        es[i] = (echo_pipe){.path = path,
                            .msg = msg,
                            .depth = depth,
                            .t_start = t_start,
                            .t_end = t_start + (uint64_t)(seconds * 1e9)};
        if (pthread_create(&th[i], NULL, echo_pipe_main, &es[i]) != 0)
            bn_die("pthread_create failed");
    }
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < conns; i++) {
        pthread_join(th[i], NULL);
        out->ops_all += es[i].all;
        bn_series_merge(&out->ops[BN_OP_ECHO], &es[i].s);
        bn_series_free(&es[i].s);
        if (es[i].err[0]) {
            bn_log("echo (pipelined): %s", es[i].err);
            rc = -1;
        }
    }
    double scpu = bn_proc_cpu(pid);
    snprintf(out->side, sizeof(out->side), "echo");
    snprintf(out->workload, sizeof(out->workload), "echo %zuB", strlen(msg));
    out->conns = conns;
    out->depth = depth;
    out->seconds = seconds;
    out->wall_s = (double)(bn_now_ns() - wall0) / 1e9;
    out->server_cpu_s = scpu - scpu0;
    out->client_cpu_s = bn_self_cpu() - ccpu0;
    out->other_cpu_share =
        bn_other_share(bn_sys_busy() - busy0, out->server_cpu_s, out->client_cpu_s, out->wall_s);
    out->rss_before_kb = out->rss_after_kb = -1;
    bn_series_sort(&out->ops[BN_OP_ECHO]);
    bn_child_stop(pid, SIGTERM, 2000);
    unlink(path);
    free(es);
    free(th);
    return rc;
}

/* ---- Argon2 verification rate ---- */

typedef struct pw_thread {
    const char *verifier, *password;
    uint64_t t_end, last, n;
    int bad;
} pw_thread;

static void *pw_main(void *arg)
{
    pw_thread *p = arg;
    size_t len = strlen(p->password);
    for (;;) {
        if (crypto_pwhash_str_verify(p->verifier, p->password, len) != 0)
            p->bad = 1;
        p->n++;
        p->last = bn_now_ns();
        if (p->last >= p->t_end)
            return NULL;
    }
}

double bn_pwhash_rate(const char *verifier, const char *password, int nthreads, double seconds)
{
    pw_thread *ps = calloc((size_t)nthreads, sizeof(*ps));
    pthread_t *th = calloc((size_t)nthreads, sizeof(*th));
    uint64_t t0 = bn_now_ns(), n = 0, last = t0;
    if (ps == NULL || th == NULL)
        bn_die("out of memory");
    for (int i = 0; i < nthreads; i++) {
        ps[i].verifier = verifier;
        ps[i].password = password;
        ps[i].t_end = t0 + (uint64_t)(seconds * 1e9);
        if (pthread_create(&th[i], NULL, pw_main, &ps[i]) != 0)
            bn_die("pthread_create failed");
    }
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        n += ps[i].n;
        if (ps[i].last > last)
            last = ps[i].last;
        if (ps[i].bad)
            bn_die("crypto_pwhash_str_verify refused the benchmark's own verifier");
    }
    free(ps);
    free(th);
    return (double)n / ((double)(last - t0) / 1e9);
}
