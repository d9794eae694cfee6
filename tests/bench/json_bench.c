/*
 * json_bench.c: what parsing one request line costs (issue 11, item 3):
 * jansson as gatehoused used it (JSON_REJECT_DUPLICATES, every free wiped),
 * jansson with the per-thread arena of server/jarena.c (begin, parse, end,
 * decref, reset), and, as a measurement only, other Debian-packaged parsers.
 * Each iteration parses the line, looks up "op" and frees the tree; the
 * figure is the best of seven rounds, in ns of thread CPU time and mallocs
 * per parse.
 *
 * The one thing to know: mallocs are counted by interposing malloc and free
 * in this program, so the count is "n/a" in sanitizer builds (the
 * sanitizer owns malloc there), and the make-built program knows jansson
 * only. The other parsers are compiled in by hand after
 * `apt-get install libcjson-dev libjson-c-dev libyajl-dev`, from the source
 * tree root with a normal build in build/normal:
 *
 *   cc -O2 -D_GNU_SOURCE -I. -DJB_CJSON -DJB_YAJL \
 *      tests/bench/json_bench.c build/normal/.libs/libghcore.a \
 *      $(pkg-config --cflags --libs jansson libsodium libcjson yajl) \
 *      -lpthread -o /tmp/json_bench_all
 *   cc -O2 -D_GNU_SOURCE -I. -DJB_JSONC tests/bench/json_bench.c \
 *      $(pkg-config --cflags --libs libsodium json-c) -o /tmp/json_bench_jsonc
 *
 * json-c gets a program of its own: its names (json_object_get, ...) clash
 * with jansson's, so JB_JSONC leaves jansson and the arena out.
 *
 * Usage: json_bench [iterations per round and mode, default 200000]
 *                   [--conformance]
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#ifndef JB_JSONC
#define JB_JANSSON 1
#include <jansson.h>

#include "server/jarena.h"
#endif

#ifdef JB_CJSON
#include <cJSON.h>
#endif
#ifdef JB_JSONC
#include <json.h>
#endif
#ifdef JB_YAJL
#include <yajl_tree.h>
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define JB_NO_COUNT 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define JB_NO_COUNT 1
#endif
#endif

/* ---- counting malloc: this program's malloc, forwarding to glibc ---- */

static uint64_t nmalloc;

#ifndef JB_NO_COUNT
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t m);
void *__libc_realloc(void *p, size_t n);
void __libc_free(void *p);
void *malloc(size_t n);
void *calloc(size_t n, size_t m);
void *realloc(void *p, size_t n);
void free(void *p);

void *malloc(size_t n)
{
    nmalloc++;
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    nmalloc++;
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    nmalloc++;
    return __libc_realloc(p, n);
}

void free(void *p)
{
    __libc_free(p);
}
#endif

/* ---- the lines: what a pipelined check and whoami client sends ---- */

typedef struct line {
    const char *name;
    const char *text;
} line;

static const line lines[] = {
    {"check", "{\"op\":\"check\",\"user\":\"u0001234\",\"action\":\"read\","
              "\"resource\":\"app/a017/prod/db\"}"},
    {"whoami",
     "{\"id\":7,\"op\":\"whoami\",\"auth\":\"q3Xv0-9kJtLrP2mWcY8aZbN4sF6hDgE1uT7oKiQ5Vw0\"}"},
    {"auth", "{\"id\":\"r-19\",\"op\":\"auth\",\"user\":\"alice\",\"password\":\"correct horse "
             "battery staple\",\"peer\":\"10.1.2.3\"}"},
};

/* The server's free before this work (server.c wiping_free). */
__attribute__((unused)) static void wiping_free(void *p)
{
    if (p == NULL)
        return;
    sodium_memzero(p, malloc_usable_size(p));
    free(p);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* preemption by other load is not counted */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One parse + lookup of "op" + free; returns 0 when the line parsed. */
typedef int (*parse_fn)(const char *s, size_t len);

static volatile size_t sink;

#ifdef JB_JANSSON
static gh_jarena arena;

static int p_jansson(const char *s, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(s, len, JSON_REJECT_DUPLICATES, &jerr);
    if (req == NULL)
        return -1;
    sink += strlen(json_string_value(json_object_get(req, "op")));
    json_decref(req);
    return 0;
}

static int p_jansson_arena(const char *s, size_t len)
{
    json_error_t jerr;
    if (gh_jarena_begin(&arena) != 0)
        return -1;
    json_t *req = json_loadb(s, len, JSON_REJECT_DUPLICATES, &jerr);
    gh_jarena_end(&arena);
    if (req == NULL)
        return -1;
    sink += strlen(json_string_value(json_object_get(req, "op")));
    json_decref(req);
    return gh_jarena_reset(&arena);
}

/* What JSON_REJECT_DUPLICATES costs (a lookup before each member's insert):
 * a measurement, the server keeps the flag. */
static int p_jansson_arena_dups(const char *s, size_t len)
{
    json_error_t jerr;
    if (gh_jarena_begin(&arena) != 0)
        return -1;
    json_t *req = json_loadb(s, len, 0, &jerr);
    gh_jarena_end(&arena);
    if (req == NULL)
        return -1;
    sink += strlen(json_string_value(json_object_get(req, "op")));
    json_decref(req);
    return gh_jarena_reset(&arena);
}
#endif

#ifdef JB_CJSON
static int p_cjson(const char *s, size_t len)
{
    cJSON *req = cJSON_ParseWithLength(s, len);
    if (req == NULL)
        return -1;
    sink += strlen(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req, "op")));
    cJSON_Delete(req);
    return 0;
}
#endif

#ifdef JB_JSONC
static struct json_tokener *tok;

static int p_jsonc(const char *s, size_t len)
{
    struct json_object *req, *op;
    json_tokener_reset(tok);
    req = json_tokener_parse_ex(tok, s, (int)len);
    if (req == NULL)
        return -1;
    if (json_object_object_get_ex(req, "op", &op))
        sink += strlen(json_object_get_string(op));
    json_object_put(req);
    return 0;
}
#endif

#ifdef JB_YAJL
static int p_yajl(const char *s, size_t len)
{
    /* yajl_tree_parse wants a NUL-terminated text: the line is one */
    static const char *path[] = {"op", NULL};
    char err[128];
    (void)len;
    yajl_val req = yajl_tree_parse(s, err, sizeof(err));
    if (req == NULL)
        return -1;
    const char *op = YAJL_GET_STRING(yajl_tree_get(req, path, yajl_t_string));
    sink += op ? strlen(op) : 0;
    yajl_tree_free(req);
    return op ? 0 : -1;
}
#endif

typedef struct mode {
    const char *name;
    parse_fn fn;
    void (*setup)(void);
} mode;

#ifdef JB_JANSSON
static void setup_today(void)
{
    json_set_alloc_funcs(malloc, wiping_free);
}

static void setup_plain(void)
{
    json_set_alloc_funcs(malloc, free);
}

static void setup_arena(void)
{
    gh_jarena_install();
}
#endif

#ifdef JB_CJSON
static void setup_cjson(void)
{
    cJSON_Hooks h = {malloc, wiping_free};
    cJSON_InitHooks(&h);
}
#endif

static const mode modes[] = {
#ifdef JB_JANSSON
    {"jansson today (wiping free)", p_jansson, setup_today},
    {"jansson, plain free (no wipe)", p_jansson, setup_plain},
    {"jansson + jarena", p_jansson_arena, setup_arena},
    {"jansson + jarena, duplicates let in", p_jansson_arena_dups, setup_arena},
    /* jarena installed, no arena begun: what every other jansson use pays */
    {"jansson, jarena pair, no arena", p_jansson, setup_arena},
#endif
#ifdef JB_CJSON
    {"cJSON (wiping free hook)", p_cjson, setup_cjson},
#endif
#ifdef JB_JSONC
    {"json-c (tokener reused, no wipe)", p_jsonc, NULL},
#endif
#ifdef JB_YAJL
    {"yajl tree (no wipe)", p_yajl, NULL},
#endif
};

#define NMODES (sizeof(modes) / sizeof(modes[0]))
#define ROUNDS 7

/* The modes take turns within each round, so a burst of load from the
 * rest of the machine hits all of them alike; the best round counts. */
static void run_line(const line *l, long iters)
{
    size_t len = strlen(l->text);
    double best[NMODES] = {0};
    uint64_t mallocs[NMODES] = {0};

    for (size_t m = 0; m < NMODES; m++) {
        if (modes[m].setup)
            modes[m].setup();
        for (long i = 0; i < iters / 10 + 1; i++) /* warm up */
            if (modes[m].fn(l->text, len) != 0) {
                printf("%-8s %-36s parse failed\n", l->name, modes[m].name);
                return;
            }
    }
    for (int round = 0; round < ROUNDS; round++) {
        for (size_t m = 0; m < NMODES; m++) {
            if (modes[m].setup)
                modes[m].setup();
            uint64_t m0 = nmalloc, t0 = now_ns();
            for (long i = 0; i < iters; i++)
                modes[m].fn(l->text, len);
            double ns = (double)(now_ns() - t0) / (double)iters;
            if (round == 0 || ns < best[m])
                best[m] = ns;
            mallocs[m] = nmalloc - m0;
        }
    }
    for (size_t m = 0; m < NMODES; m++) {
#ifdef JB_NO_COUNT
        (void)mallocs;
        printf("%-8s %-36s %8.1f ns/parse  %8s mallocs/parse\n", l->name, modes[m].name, best[m],
               "n/a");
#else
        printf("%-8s %-36s %8.1f ns/parse  %8.2f mallocs/parse\n", l->name, modes[m].name, best[m],
               (double)mallocs[m] / (double)iters);
#endif
    }
}

/* ---- conformance: what each parser accepts that jansson refuses ---- */

typedef struct probe {
    const char *what;
    const char *text;
    size_t len; /* 0: strlen */
} probe;

static const probe probes[] = {
    {"valid request", "{\"op\":\"check\",\"n\":-1.5e3}", 0},
    {"duplicate key", "{\"op\":\"check\",\"op\":\"admin\"}", 0},
    {"invalid UTF-8 (0xff)", "{\"op\":\"\xff\"}", 0},
    {"overlong UTF-8 (C0 AF)", "{\"op\":\"\xc0\xaf\"}", 0},
    {"UTF-8 surrogate (ED A0 80)", "{\"op\":\"\xed\xa0\x80\"}", 0},
    {"lone surrogate escape", "{\"op\":\"\\ud800\"}", 0},
    {"escaped NUL \\u0000", "{\"op\":\"a\\u0000b\"}", 0},
    {"raw NUL inside string", "{\"op\":\"a\0b\"}", 12},
    {"raw control char in string", "{\"op\":\"a\tb\"}", 0},
    {"leading zero 01", "{\"n\":01}", 0},
    {"leading plus +1", "{\"n\":+1}", 0},
    {"bare dot .5", "{\"n\":.5}", 0},
    {"trailing dot 1.", "{\"n\":1.}", 0},
    {"exponent without digits 1e", "{\"n\":1e}", 0},
    {"hex 0x10", "{\"n\":0x10}", 0},
    {"NaN", "{\"n\":NaN}", 0},
    {"Infinity", "{\"n\":Infinity}", 0},
    {"huge 1e400", "{\"n\":1e400}", 0},
    {"integer past int64", "{\"n\":99999999999999999999}", 0},
    {"trailing comma", "{\"op\":\"x\",}", 0},
    {"comment", "/*c*/{\"op\":\"x\"}", 0},
    {"single quotes", "{'op':'x'}", 0},
    {"trailing garbage", "{\"op\":\"x\"} x", 0},
    {"two objects", "{\"op\":\"x\"}{\"op\":\"y\"}", 0},
};

static const char *verdict(int rc)
{
    return rc == 0 ? "accepts" : "refuses";
}

#ifdef JB_JANSSON
static int c_jansson(const char *s, size_t len)
{
    json_error_t jerr;
    json_t *v = json_loadb(s, len, JSON_REJECT_DUPLICATES, &jerr);
    json_decref(v);
    return v ? 0 : -1;
}
#endif

#ifdef JB_CJSON
static int c_cjson(const char *s, size_t len)
{
    /* require_null_terminated=0: a parse that stops early is accepted */
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    int rc = v != NULL && end == s + len ? 0 : -1;
    cJSON_Delete(v);
    return rc;
}
#endif

#ifdef JB_JSONC
static int c_jsonc(const char *s, size_t len)
{
    struct json_tokener *t = json_tokener_new();
    json_tokener_set_flags(t, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *v = json_tokener_parse_ex(t, s, (int)len);
    int rc = v != NULL && json_tokener_get_error(t) == json_tokener_success &&
                     (size_t)json_tokener_get_parse_end(t) == len
                 ? 0
                 : -1;
    json_object_put(v);
    json_tokener_free(t);
    return rc;
}
#endif

#ifdef JB_YAJL
static int c_yajl(const char *s, size_t len)
{
    char err[128];
    char *z = malloc(len + 1);
    memcpy(z, s, len);
    z[len] = '\0';
    yajl_val v = yajl_tree_parse(z, err, sizeof(err));
    free(z);
    yajl_tree_free(v);
    return v ? 0 : -1;
}
#endif

static void conformance(void)
{
    printf("%-28s", "input");
#ifdef JB_JANSSON
    json_set_alloc_funcs(malloc, wiping_free);
    printf(" %-8s", "jansson");
#endif
#ifdef JB_CJSON
    printf(" %-8s", "cJSON");
#endif
#ifdef JB_JSONC
    printf(" %-8s", "json-c*");
#endif
#ifdef JB_YAJL
    printf(" %-8s", "yajl");
#endif
    printf("\n");
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        const probe *p = &probes[i];
        size_t len = p->len ? p->len : strlen(p->text);
        printf("%-28s", p->what);
#ifdef JB_JANSSON
        printf(" %-8s", verdict(c_jansson(p->text, len)));
#endif
#ifdef JB_CJSON
        printf(" %-8s", verdict(c_cjson(p->text, len)));
#endif
#ifdef JB_JSONC
        printf(" %-8s", verdict(c_jsonc(p->text, len)));
#endif
#ifdef JB_YAJL
        printf(" %-8s", verdict(c_yajl(p->text, len)));
#endif
        printf("\n");
    }
#ifdef JB_JSONC
    printf("* json-c with JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8\n");
#endif
}

int main(int argc, char **argv)
{
    long iters = 200000;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--conformance") == 0) {
            conformance();
            return 0;
        }
        iters = strtol(argv[i], NULL, 10);
    }
    if (iters <= 0 || sodium_init() < 0) {
        fprintf(stderr, "usage: json_bench [iterations] [--conformance]\n");
        return 2;
    }
#ifdef JB_JANSSON
    if (gh_jarena_init(&arena, 0) != 0)
        return 1;
#endif
#ifdef JB_JSONC
    tok = json_tokener_new();
#endif
    printf("%ld parses per round and mode, best of %d rounds\n", iters, ROUNDS);
    for (size_t l = 0; l < sizeof(lines) / sizeof(lines[0]); l++) {
        run_line(&lines[l], iters);
        printf("\n");
    }
#ifdef JB_JANSSON
    printf("arena: %zu bytes, %llu fallbacks, %llu refused resets\n", arena.size,
           (unsigned long long)arena.st_fallback, (unsigned long long)arena.st_busy);
    json_set_alloc_funcs(malloc, free);
    gh_jarena_free(&arena);
#endif
#ifdef JB_JSONC
    json_tokener_free(tok);
#endif
    return (int)(sink & 0);
}
