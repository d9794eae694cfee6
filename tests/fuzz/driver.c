/*
 * driver.c: the main() of a fuzz target in the ordinary (gcc) build, so that
 * `make check` replays every corpus file through the target's
 * LLVMFuzzerTestOneInput and a regression shows up as a failed test.
 *
 * With no argument it runs $GH_SRCDIR/tests/fuzz/corpus/<target>/, where
 * <target> is the program name without its "fuzz_" prefix; arguments may
 * name files or directories instead (e.g. a crash file written by libFuzzer).
 * Output is TAP, one test per input. Each input runs in its own child
 * process with a time limit, as libuv's test runner does, so an input that
 * crashes, leaks (LSan reports at the child's exit) or hangs is one "not ok"
 * line naming it and the others still run. GH_FUZZ_NOFORK=1 runs them in this
 * process instead (for a debugger). The libFuzzer build
 * (tests/fuzz/build-libfuzzer.sh) does not link this file.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define INPUT_TIMEOUT_S 60

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct list {
    char **v;
    size_t n, cap;
} list;

static void die(const char *what, const char *path)
{
    fprintf(stderr, "fuzz driver: %s %s: %s\n", what, path, strerror(errno));
    exit(99); /* "hard error" for the automake harness */
}

static void add(list *l, const char *path)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
        if (l->v == NULL)
            die("out of memory adding", path);
    }
    l->v[l->n] = strdup(path);
    if (l->v[l->n] == NULL)
        die("out of memory adding", path);
    l->n++;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Regular files of dir (not recursive, dot files skipped), sorted. */
static void add_dir(list *l, const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t first = l->n;
    if (d == NULL)
        die("cannot open corpus directory", dir);
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            add(l, path);
    }
    closedir(d);
    qsort(l->v + first, l->n - first, sizeof(*l->v), cmp_str);
}

static void add_arg(list *l, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        die("cannot stat", path);
    if (S_ISDIR(st.st_mode))
        add_dir(l, path);
    else
        add(l, path);
}

static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    if (f == NULL)
        die("cannot open", path);
    for (;;) {
        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
            if (buf == NULL)
                die("out of memory reading", path);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    if (ferror(f))
        die("cannot read", path);
    fclose(f);
    *size = n;
    return buf;
}

/* "fuzz_request" (or libtool's "lt-fuzz_request") -> "request". */
static const char *target_name(const char *argv0)
{
    const char *base = strrchr(argv0, '/');
    base = base ? base + 1 : argv0;
    if (strncmp(base, "lt-", 3) == 0)
        base += 3;
    if (strncmp(base, "fuzz_", 5) == 0)
        base += 5;
    return base;
}

/* Runs one input; returns 0 when it passed, else a description in why. */
static int run_one(const char *path, int nofork, char *why, size_t whylen)
{
    size_t size;
    uint8_t *data = slurp(path, &size);
    fprintf(stderr, "running %s (%zu bytes)\n", path, size);
    fflush(stderr);
    if (nofork) {
        LLVMFuzzerTestOneInput(data, size);
        free(data);
        return 0;
    }
    pid_t pid = fork();
    if (pid < 0)
        die("cannot fork for", path);
    if (pid == 0) {
        alarm(INPUT_TIMEOUT_S);
        LLVMFuzzerTestOneInput(data, size);
        free(data);
        exit(0); /* atexit handlers and LSan run here */
    }
    free(data);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            die("waitpid for", path);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFSIGNALED(status))
        snprintf(why, whylen, "%s",
                 WTERMSIG(status) == SIGALRM ? "timed out" : strsignal(WTERMSIG(status)));
    else
        snprintf(why, whylen, "exit status %d", WEXITSTATUS(status));
    return -1;
}

int main(int argc, char **argv)
{
    list l = {0};
    const char *nf = getenv("GH_FUZZ_NOFORK");
    int nofork = nf != NULL && strcmp(nf, "0") != 0;
    int failed = 0;

    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            add_arg(&l, argv[i]);
    } else {
        const char *src = getenv("GH_SRCDIR");
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", src ? src : ".",
                 target_name(argv[0]));
        add_dir(&l, dir);
    }
    printf("1..%zu\n", l.n);
    fflush(stdout);
    for (size_t i = 0; i < l.n; i++) {
        char why[128] = "";
        if (run_one(l.v[i], nofork, why, sizeof(why)) == 0) {
            printf("ok %zu - %s\n", i + 1, l.v[i]);
        } else {
            printf("not ok %zu - %s (%s)\n", i + 1, l.v[i], why);
            failed = 1;
        }
        fflush(stdout);
        free(l.v[i]);
    }
    free(l.v);
    return failed;
}
