/*
 * nss_stress.c: libnss_gatehouse through glibc from a multithreaded caller
 * and from a caller that forks (run by test_os_login.py).
 *
 *   nss_stress threads N LOOKUPS NAME1:UID1 NAME2:UID2
 *       N threads, each doing LOOKUPS getpwnam_r alternating the two names;
 *       every answer must carry the right uid.
 *   nss_stress fork LOOKUPS NAME1:UID1 NAME2:UID2
 *       the parent resolves once (opening its connection), forks, and then
 *       parent and child both resolve LOOKUPS times at the same moment: a
 *       connection shared across fork would mix their replies up.
 *   nss_stress closefds NAME1:UID1 NAME2:UID2
 *       resolves, closes every descriptor above 2 (as a daemon does), opens
 *       files that take the freed numbers, resolves again: the answers must
 *       be right and the program's files untouched.
 *   nss_stress idle SECONDS NAME1:UID1 NAME2:UID2
 *       resolves, sleeps (the server closes idle NSS connections), resolves
 *       again on a fresh connection.
 *   nss_stress hung N NAME
 *       against a server that never answers: N threads each getpwnam_r NAME
 *       once (all must find nothing); while they wait the main thread
 *       forks (the child exits at once) and a 2nd lookup after them must
 *       fail fast. Prints "lookups_ms A fork_ms B again_ms C", where A is
 *       the slowest lookup; the caller judges the times.
 *   nss_stress initgroups NAME [split]
 *       getpwnam, then initgroups(NAME, its gid) and getgroups(): prints the
 *       process's groups, sorted (needs root, or cwrap's uid_wrapper). With
 *       "split", getgrouplist + setgroups, the two halves of initgroups:
 *       nss_wrapper's own initgroups asks its files backend alone.
 *   nss_stress grouplist LOOKUPS NAME
 *       getgrouplist(NAME) LOOKUPS times, what `id` does for the groups;
 *       prints the number of groups, p50 and p99 in microseconds.
 *   nss_stress bench LOOKUPS NAME
 *       getpwnam_r LOOKUPS times; prints p50 and p99 in microseconds.
 *
 * Exit 0 when every lookup was right; prints what went wrong otherwise.
 */
#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct who {
    const char *name;
    uid_t uid;
} who;

static who users[2];
static long lookups;

static int parse_who(const char *arg, who *w)
{
    const char *colon = strchr(arg, ':');
    if (colon == NULL)
        return -1;
    w->name = strndup(arg, (size_t)(colon - arg));
    w->uid = (uid_t)strtoul(colon + 1, NULL, 10);
    return 0;
}

/* Number of wrong answers in lookups calls. */
static long resolve_many(long n, long salt)
{
    long bad = 0;
    for (long i = 0; i < n; i++) {
        const who *w = &users[(i + salt) & 1];
        struct passwd pw, *res = NULL;
        char buf[1024];
        int rc = getpwnam_r(w->name, &pw, buf, sizeof(buf), &res);
        if (rc != 0 || res == NULL || pw.pw_uid != w->uid || strcmp(pw.pw_name, w->name) != 0) {
            if (bad < 5)
                fprintf(stderr, "pid %d: %s -> rc %d %s uid %ld\n", (int)getpid(), w->name, rc,
                        res ? pw.pw_name : "(none)", res ? (long)pw.pw_uid : -1L);
            bad++;
        }
    }
    return bad;
}

static void *thread_main(void *arg)
{
    long bad = resolve_many(lookups, (long)(intptr_t)arg);
    return (void *)(intptr_t)bad;
}

static double ms_since(const struct timespec *a)
{
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a->tv_sec) * 1e3 + (double)(b.tv_nsec - a->tv_nsec) / 1e6;
}

static const char *hung_name;

/* One lookup against the hung server: its time in ms, negative when it
 * (wrongly) found an entry. */
static void *hung_main(void *arg)
{
    struct timespec a;
    struct passwd pw, *res = NULL;
    char buf[1024];
    clock_gettime(CLOCK_MONOTONIC, &a);
    getpwnam_r(hung_name, &pw, buf, sizeof(buf), &res);
    double *ms = arg;
    *ms = res != NULL ? -1.0 : ms_since(&a);
    return NULL;
}

static int hung(int n, const char *name)
{
    pthread_t *th = calloc((size_t)n, sizeof(*th));
    double *ms = calloc((size_t)n, sizeof(*ms)), worst = 0, fork_ms;
    struct timespec a;
    hung_name = name;
    for (int i = 0; i < n; i++)
        pthread_create(&th[i], NULL, hung_main, &ms[i]);
    usleep(300 * 1000); /* the lookups are waiting on the server now */
    clock_gettime(CLOCK_MONOTONIC, &a);
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    fork_ms = ms_since(&a);
    waitpid(pid, NULL, 0);
    int wrong = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        if (ms[i] < 0)
            wrong++;
        else if (ms[i] > worst)
            worst = ms[i];
    }
    struct passwd pw, *res = NULL;
    char buf[1024];
    clock_gettime(CLOCK_MONOTONIC, &a);
    getpwnam_r(name, &pw, buf, sizeof(buf), &res);
    double again = ms_since(&a);
    printf("lookups_ms %.0f fork_ms %.0f again_ms %.0f\n", worst, fork_ms, again);
    free(th);
    free(ms);
    if (wrong || res != NULL) {
        fprintf(stderr, "a lookup found an entry on a server that never answers\n");
        return 1;
    }
    return 0;
}

static int cmp_gid(const void *a, const void *b)
{
    gid_t x = *(const gid_t *)a, y = *(const gid_t *)b;
    return x < y ? -1 : x > y;
}

static int do_initgroups(const char *name, int split)
{
    struct passwd *pw = getpwnam(name);
    if (pw == NULL) {
        fprintf(stderr, "%s not found\n", name);
        return 1;
    }
    if (split) {
        gid_t all[4096];
        int na = 4096;
        if (getgrouplist(name, pw->pw_gid, all, &na) < 0 || setgroups((size_t)na, all) != 0) {
            perror("getgrouplist/setgroups");
            return 1;
        }
    } else if (initgroups(name, pw->pw_gid) != 0) {
        perror("initgroups");
        return 1;
    }
    int n = getgroups(0, NULL);
    gid_t *g = calloc((size_t)n + 1, sizeof(*g));
    if (n < 0 || g == NULL || getgroups(n, g) != n) {
        perror("getgroups");
        return 1;
    }
    qsort(g, (size_t)n, sizeof(*g), cmp_gid);
    for (int i = 0; i < n; i++)
        printf("%s%u", i ? " " : "", (unsigned)g[i]);
    printf("\n");
    free(g);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "initgroups") == 0)
        return do_initgroups(argv[2], argc == 4 && strcmp(argv[3], "split") == 0);
    if (argc == 4 && strcmp(argv[1], "grouplist") == 0) {
        long n = atol(argv[2]);
        struct passwd *pw = getpwnam(argv[3]);
        unsigned long long *t = calloc((size_t)n, sizeof(*t));
        int ng = 0;
        if (pw == NULL || t == NULL || n <= 0)
            return 1;
        for (long i = 0; i < n; i++) {
            struct timespec a;
            gid_t g[4096];
            ng = 4096;
            clock_gettime(CLOCK_MONOTONIC, &a);
            if (getgrouplist(argv[3], pw->pw_gid, g, &ng) < 0) {
                fprintf(stderr, "getgrouplist: more than 4096 groups\n");
                return 1;
            }
            t[i] = (unsigned long long)(ms_since(&a) * 1e6);
        }
        qsort(t, (size_t)n, sizeof(*t), cmp_u64);
        printf("getgrouplist %d groups p50 %.1f us p99 %.1f us (%ld calls)\n", ng,
               t[n / 2] / 1000.0, t[n * 99 / 100] / 1000.0, n);
        free(t);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "hung") == 0)
        return hung(atoi(argv[2]), argv[3]);
    if (argc >= 4 && strcmp(argv[1], "bench") == 0) {
        long n = atol(argv[2]);
        unsigned long long *t = calloc((size_t)n, sizeof(*t));
        for (long i = 0; i < n; i++) {
            struct timespec a, b;
            struct passwd pw, *res = NULL;
            char buf[1024];
            clock_gettime(CLOCK_MONOTONIC, &a);
            if (getpwnam_r(argv[3], &pw, buf, sizeof(buf), &res) != 0 || res == NULL) {
                fprintf(stderr, "%s not found\n", argv[3]);
                return 1;
            }
            clock_gettime(CLOCK_MONOTONIC, &b);
            t[i] =
                (unsigned long long)((b.tv_sec - a.tv_sec) * 1000000000LL + b.tv_nsec - a.tv_nsec);
        }
        qsort(t, (size_t)n, sizeof(*t), cmp_u64);
        printf("getpwnam p50 %.1f us p99 %.1f us (%ld lookups)\n", t[n / 2] / 1000.0,
               t[n * 99 / 100] / 1000.0, n);
        free(t);
        return 0;
    }
    if (argc < 4 || parse_who(argv[argc - 2], &users[0]) || parse_who(argv[argc - 1], &users[1])) {
        fprintf(stderr, "usage: see nss_stress.c\n");
        return 2;
    }
    long bad = 0;
    if (strcmp(argv[1], "threads") == 0 && argc == 6) {
        int n = atoi(argv[2]);
        lookups = atol(argv[3]);
        pthread_t *th = calloc((size_t)n, sizeof(*th));
        for (int i = 0; i < n; i++)
            pthread_create(&th[i], NULL, thread_main, (void *)(intptr_t)i);
        for (int i = 0; i < n; i++) {
            void *r;
            pthread_join(th[i], &r);
            bad += (long)(intptr_t)r;
        }
        free(th);
    } else if (strcmp(argv[1], "fork") == 0 && argc == 5) {
        lookups = atol(argv[2]);
        bad += resolve_many(1, 0); /* the parent's connection is open now */
        int go[2];
        if (pipe(go) != 0)
            return 2;
        pid_t pid = fork();
        if (pid == 0) {
            char ch;
            close(go[1]);
            if (read(go[0], &ch, 1) < 0)
                _exit(2);
            _exit(resolve_many(lookups, 1) == 0 ? 0 : 1);
        }
        close(go[0]);
        if (write(go[1], "g", 1) != 1) /* both start together */
            return 2;
        close(go[1]);
        bad += resolve_many(lookups, 0);
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child failed (status %d)\n", status);
            bad++;
        }
        bad += resolve_many(10, 0); /* the parent's connection still works */
    } else if (strcmp(argv[1], "idle") == 0 && argc == 5) {
        bad += resolve_many(2, 0);
        printf("resolved\n");
        fflush(stdout);
        sleep((unsigned)atoi(argv[2]));
        bad += resolve_many(2, 0);
    } else if (strcmp(argv[1], "closefds") == 0 && argc == 4) {
        bad += resolve_many(2, 0);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        int p[2];
        if (pipe(p) != 0) /* takes the numbers the module's socket had */
            return 2;
        bad += resolve_many(4, 0);
        if (write(p[1], "x", 1) != 1 || read(p[0], &(char){0}, 1) != 1) {
            fprintf(stderr, "the program's pipe was disturbed\n");
            bad++;
        }
    } else {
        fprintf(stderr, "usage: see nss_stress.c\n");
        return 2;
    }
    if (bad) {
        fprintf(stderr, "%ld wrong answers\n", bad);
        return 1;
    }
    printf("ok\n");
    return 0;
}
