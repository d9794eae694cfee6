/*
 * bench_util.c: clocks, samples and percentiles, child processes, temporary
 * directories, CPU placement and socket helpers for gatehouse-bench.
 *
 * The one thing to know: every process the tool starts (gatehoused, slapd,
 * the echo server) is registered here and killed by its pid when the tool
 * exits, dies on an error, or gets SIGINT/SIGTERM, so a failed run leaves
 * nothing behind; nothing is ever killed by name.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/bench/bench_common.h"

const char *const bn_op_names[BN_OP_N] = {
    "check",
    "check.batch",
    "auth",
    "whoami",
    "user.get",
    "group.add_member",
    "group.remove_member",
    "compare",
    "bind",
    "search",
    "echo",
    "group search",
    "paged search",
};

int bn_verbose;

uint64_t bn_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bn_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void bn_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("gatehouse-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void bn_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("gatehouse-bench: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1); /* the atexit handler stops the children */
}

/* ---- samples ---- */

void bn_series_add(bn_series *s, uint64_t ns)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        uint64_t *p = realloc(s->ns, cap * sizeof(*p));
        if (p == NULL)
            bn_die("out of memory for latency samples");
        s->ns = p;
        s->cap = cap;
    }
    s->ns[s->n++] = ns;
}

void bn_series_merge(bn_series *dst, const bn_series *src)
{
    if (src->n > 0) {
        if (dst->n + src->n > dst->cap) {
            size_t cap = dst->n + src->n;
            uint64_t *p = realloc(dst->ns, cap * sizeof(*p));
            if (p == NULL)
                bn_die("out of memory for latency samples");
            dst->ns = p;
            dst->cap = cap;
        }
        memcpy(dst->ns + dst->n, src->ns, src->n * sizeof(*src->ns));
        dst->n += src->n;
    }
    dst->ok += src->ok;
    dst->errors += src->errors;
    dst->yes += src->yes;
    dst->no += src->no;
    dst->items += src->items;
}

void bn_series_free(bn_series *s)
{
    free(s->ns);
    memset(s, 0, sizeof(*s));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void bn_series_sort(bn_series *s)
{
    if (s->n > 1)
        qsort(s->ns, s->n, sizeof(*s->ns), cmp_u64);
}

/* Nearest rank on sorted samples. */
uint64_t bn_series_pct(const bn_series *s, double q)
{
    if (s->n == 0)
        return 0;
    if (q >= 1.0)
        return s->ns[s->n - 1];
    size_t rank = (size_t)(q * (double)s->n + 0.999999);
    if (rank == 0)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return s->ns[rank - 1];
}

void bn_codes_add(bn_codes *c, const char *code, size_t len, uint64_t n)
{
    if (len >= sizeof(c->code[0]))
        len = sizeof(c->code[0]) - 1;
    for (int i = 0; i < BN_CODES_MAX; i++) {
        if (c->count[i] == 0) {
            memcpy(c->code[i], code, len);
            c->code[i][len] = '\0';
            c->count[i] = n;
            return;
        }
        if (strlen(c->code[i]) == len && memcmp(c->code[i], code, len) == 0) {
            c->count[i] += n;
            return;
        }
    }
}

void bn_codes_merge(bn_codes *dst, const bn_codes *src)
{
    for (int i = 0; i < BN_CODES_MAX && src->count[i]; i++)
        bn_codes_add(dst, src->code[i], strlen(src->code[i]), src->count[i]);
}

void bn_result_free(bn_result *r)
{
    for (int i = 0; i < BN_OP_N; i++)
        bn_series_free(&r->ops[i]);
}

uint64_t bn_result_ops(const bn_result *r)
{
    uint64_t n = 0;
    for (int i = 0; i < BN_OP_N; i++)
        n += r->ops[i].n;
    return n;
}

uint64_t bn_result_errors(const bn_result *r)
{
    uint64_t n = 0;
    for (int i = 0; i < BN_OP_N; i++)
        n += r->ops[i].errors;
    return n;
}

/* ---- random numbers: splitmix64 seeding a xorshift64* ---- */

void bn_rng_seed(bn_rng *r, uint64_t seed)
{
    uint64_t z = seed + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    r->s = (z ^ (z >> 31)) | 1;
}

uint64_t bn_rng_next(bn_rng *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dull;
}

uint32_t bn_rng_below(bn_rng *r, uint32_t n)
{
    return n ? (uint32_t)(((bn_rng_next(r) >> 32) * (uint64_t)n) >> 32) : 0;
}

/* ---- /proc ---- */

int bn_rss_read(pid_t pid, bn_rss *out)
{
    char path[64], line[256];
    out->rss = out->anon = out->file = out->hwm = -1;
    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        long v;
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            out->rss = v;
        else if (sscanf(line, "RssAnon: %ld", &v) == 1)
            out->anon = v;
        else if (sscanf(line, "RssFile: %ld", &v) == 1)
            out->file = v;
        else if (sscanf(line, "VmHWM: %ld", &v) == 1)
            out->hwm = v;
    }
    fclose(f);
    return out->rss >= 0 ? 0 : -1;
}

double bn_proc_cpu(pid_t pid)
{
    char path[64], buf[2048];
    unsigned long long ut, st;
    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

double bn_self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

double bn_sys_busy(void)
{
    unsigned long long v[10] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8)
        return -1;
    /* user nice system [idle iowait] irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

double bn_other_share(double busy_delta, double server_cpu, double client_cpu, double wall)
{
    if (busy_delta < 0 || server_cpu < 0 || wall <= 0)
        return -1;
    double other = busy_delta - server_cpu - client_cpu;
    if (other < 0)
        other = 0;
    return other / (wall * bn_ncpus());
}

void bn_machine(char *buf, size_t len)
{
    char line[512], model[256] = "unknown";
    struct utsname u;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof(line), f)) {
            char *colon = strchr(line, ':');
            if (strncmp(line, "model name", 10) == 0 && colon) {
                snprintf(model, sizeof(model), "%s", colon + 2);
                model[strcspn(model, "\n")] = '\0';
                break;
            }
        }
        fclose(f);
    }
    if (uname(&u) != 0)
        snprintf(u.release, sizeof(u.release), "?");
    snprintf(buf, len, "%d CPUs (nproc), CPU model \"%s\", Linux %s", bn_ncpus(), model, u.release);
}

/* ---- children ---- */

#define CHILDREN_MAX 16
static volatile pid_t children[CHILDREN_MAX];

void bn_children_register(pid_t pid)
{
    for (int i = 0; i < CHILDREN_MAX; i++)
        if (children[i] == 0) {
            children[i] = pid;
            return;
        }
}

static void children_forget(pid_t pid)
{
    for (int i = 0; i < CHILDREN_MAX; i++)
        if (children[i] == pid)
            children[i] = 0;
}

int bn_child_alive(pid_t pid)
{
    int st;
    if (pid <= 0)
        return 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
        children_forget(pid);
        return 0;
    }
    return r == 0;
}

void bn_child_stop(pid_t pid, int sig, unsigned wait_ms)
{
    int st;
    if (pid <= 0)
        return;
    kill(pid, sig);
    for (unsigned waited = 0; waited < wait_ms; waited += 10) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
            children_forget(pid);
            return;
        }
        bn_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    children_forget(pid);
}

int bn_child_wait(pid_t pid)
{
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    children_forget(pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void children_kill_all(void)
{
    for (int i = 0; i < CHILDREN_MAX; i++) {
        pid_t p = children[i];
        if (p > 0) {
            children[i] = 0;
            bn_child_stop(p, SIGTERM, 3000);
        }
    }
}

static void on_fatal_signal(int sig)
{
    /* async-signal-safe: kill by pid, then die by the same signal */
    for (int i = 0; i < CHILDREN_MAX; i++)
        if (children[i] > 0)
            kill(children[i], SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static char *tempdirs[8];
static int keep_tempdirs;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void at_exit_cleanup(void)
{
    children_kill_all();
    for (int i = 0; i < 8; i++) {
        if (tempdirs[i] == NULL)
            continue;
        if (!keep_tempdirs)
            nftw(tempdirs[i], rm_one, 16, FTW_DEPTH | FTW_PHYS);
        else
            bn_log("kept %s", tempdirs[i]);
        free(tempdirs[i]);
        tempdirs[i] = NULL;
    }
}

void bn_children_install_cleanup(void)
{
    atexit(at_exit_cleanup);
    signal(SIGINT, on_fatal_signal);
    signal(SIGTERM, on_fatal_signal);
    signal(SIGHUP, on_fatal_signal);
    signal(SIGPIPE, SIG_IGN);
}

void bn_tempdirs_keep(int keep)
{
    keep_tempdirs = keep;
}

char *bn_tempdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof(tmpl), "%s/gh-bench-%s.XXXXXX", base && *base ? base : "/tmp", tag);
    int slot = 0;
    while (slot < 8 && tempdirs[slot] != NULL)
        slot++;
    if (slot == 8)
        bn_die("too many temporary directories");
    if (mkdtemp(tmpl) == NULL)
        bn_die("mkdtemp %s: %s", tmpl, strerror(errno));
    tempdirs[slot] = strdup(tmpl);
    return tempdirs[slot];
}

pid_t bn_spawn(char *const argv[], const char *log_path)
{
    pid_t pid = fork();
    if (pid < 0)
        bn_die("fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0600);
        int nul = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (nul >= 0)
            dup2(nul, 0);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    bn_children_register(pid);
    return pid;
}

/* ---- CPU placement ---- */

int bn_ncpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void cpuset_for(int cpu, cpu_set_t *set)
{
    CPU_ZERO(set);
    if (cpu >= 0) {
        CPU_SET(cpu, set);
        return;
    }
    for (int i = 0; i < bn_ncpus() && i < CPU_SETSIZE; i++)
        CPU_SET(i, set);
}

int bn_pin_process(pid_t pid, int cpu)
{
    char path[64];
    cpu_set_t set;
    int n = 0;
    cpuset_for(cpu, &set);
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        pid_t tid = (pid_t)atoi(e->d_name);
        if (sched_setaffinity(tid, sizeof(set), &set) == 0)
            n++;
    }
    closedir(d);
    return n > 0 ? 0 : -1;
}

int bn_pin_self(int cpu)
{
    cpu_set_t set;
    cpuset_for(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set);
}

/* ---- sockets ---- */

int bn_unix_connect(const char *path, int timeout_ms)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path))
        bn_die("socket path too long: %s", path);
    strcpy(sun.sun_path, path);
    for (int waited = 0;; waited += 10) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
            struct timeval tv = {30, 0}; /* a stalled server fails the run, not hangs it */
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            return fd;
        }
        close(fd);
        if (waited >= timeout_ms)
            return -1;
        bn_sleep_ms(10);
    }
}

int bn_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

pid_t bn_socket_peer_pid(const char *path)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    int fd = bn_unix_connect(path, 0);
    if (fd < 0)
        return 0;
    pid_t pid = 0;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
        pid = cred.pid;
    close(fd);
    return pid;
}

/* ---- buffers ---- */

void bn_buf_reserve(bn_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        bn_die("out of memory");
    b->p = p;
    b->cap = cap;
}

void bn_buf_printf(bn_buf *b, const char *fmt, ...)
{
    va_list ap;
    bn_buf_reserve(b, 256);
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        bn_die("vsnprintf failed");
    if ((size_t)n >= b->cap - b->len) {
        bn_buf_reserve(b, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void bn_buf_put(bn_buf *b, const char *s, size_t n)
{
    bn_buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void bn_buf_free(bn_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}
