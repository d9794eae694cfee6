/*
 * test_jarena.c: the per-thread jansson arena (server/jarena.c) through
 * jansson itself: values parsed in the arena are right and cost no malloc,
 * a free inside the arena is a no-op, allocations that do not fit fall back
 * to malloc, reset wipes what requests left, nested begins are refused, a
 * value kept past the request pins the arena instead of being overwritten,
 * and a value freed on another thread is counted. The one thing to know:
 * the allocator is installed process-wide once (group setup), as the server
 * does; under AddressSanitizer the tests read arena bytes through
 * peek_zero/peek_find, which unpoison first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>
#include <jansson.h>

#include "schema/error.h"
#include "server/jarena.h"

#if defined(__SANITIZE_ADDRESS__)
#define T_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define T_ASAN 1
#endif
#endif
#ifdef T_ASAN
#include <sanitizer/asan_interface.h>
#endif

static const char CHECK_LINE[] = "{\"op\":\"check\",\"user\":\"u0001234\",\"action\":\"read\","
                                 "\"resource\":\"app/a017/prod/db\"}";
static const char AUTH_LINE[] =
    "{\"id\":7,\"op\":\"auth\",\"user\":\"alice\",\"password\":\"hunter2-SECRET-pw\"}";

/* Reading arena bytes that ASan keeps poisoned (freed or unused parts). */
static void unpoison(const void *p, size_t n)
{
#ifdef T_ASAN
    __asan_unpoison_memory_region(p, n);
#else
    (void)p;
    (void)n;
#endif
}

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

static int group_setup(void **state)
{
    gh_jarena_install();
    return 0;
}

static int setup(void **state)
{
    gh_jarena *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    assert_int_equal(gh_jarena_init(a, 0), 0);
    *state = a;
    return 0;
}

static int teardown(void **state)
{
    gh_jarena *a = *state;
    assert_int_equal(gh_jarena_live(a), 0);
    gh_jarena_free(a);
    free(a);
    return 0;
}

static json_t *parse(const char *line)
{
    json_error_t jerr;
    return json_loadb(line, strlen(line), JSON_REJECT_DUPLICATES, &jerr);
}

static void test_parse_in_arena(void **state)
{
    gh_jarena *a = *state;

    assert_int_equal(gh_jarena_begin(a), 0);
    json_t *req = parse(CHECK_LINE);
    gh_jarena_end(a);
    assert_non_null(req);
    assert_true(gh_jarena_owns(req));
    assert_int_equal(a->st_fallback, 0);
    assert_true(a->used > 0 && a->used < 4096);
    assert_true(gh_jarena_live(a) > 0);
    assert_string_equal(json_string_value(json_object_get(req, "op")), "check");
    assert_string_equal(json_string_value(json_object_get(req, "user")), "u0001234");
    assert_string_equal(json_string_value(json_object_get(req, "action")), "read");
    assert_string_equal(json_string_value(json_object_get(req, "resource")), "app/a017/prod/db");
    assert_true(gh_jarena_owns(json_object_get(req, "resource")));
    assert_true(gh_jarena_owns(json_string_value(json_object_get(req, "resource"))));
    assert_int_equal(json_object_size(req), 4);
    json_decref(req);
    assert_int_equal(gh_jarena_live(a), 0);
    assert_int_equal(gh_jarena_reset(a), 0);
    assert_int_equal(a->used, 0);

    /* the same arena serves the next request from its start, the same way */
    assert_int_equal(gh_jarena_begin(a), 0);
    req = parse("{\"id\":7,\"op\":\"whoami\",\"auth\":\"AAAA\"}");
    /* jansson's errors and duplicate rejection still hold in the arena */
    json_t *dup = parse("{\"op\":\"a\",\"op\":\"b\"}");
    json_t *bad = parse("{\"op\":\"\xff\"}");
    gh_jarena_end(a);
    assert_null(dup);
    assert_null(bad);
    assert_int_equal(json_integer_value(json_object_get(req, "id")), 7);
    json_decref(req);
    assert_int_equal(gh_jarena_reset(a), 0);

    /* outside begin/end jansson is back on malloc */
    req = parse(CHECK_LINE);
    assert_non_null(req);
    assert_false(gh_jarena_owns(req));
    assert_int_equal(gh_jarena_live(a), 0);
    json_decref(req);
}

static void test_free_is_noop(void **state)
{
    gh_jarena *a = *state;

    assert_int_equal(gh_jarena_begin(a), 0);
    unsigned char *p = gh__jarena_malloc(40);
    unsigned char *q = gh__jarena_malloc(40);
    assert_true(gh_jarena_owns(p) && gh_jarena_owns(q));
    memset(p, 0xA5, 40);
    size_t used = a->used;
    gh__jarena_free(p);
    assert_int_equal(gh_jarena_live(a), 1);
    /* nothing handed p back: the next block is further on, p keeps its bytes */
    unsigned char *r = gh__jarena_malloc(40);
    assert_true(r > q && q > p);
    assert_true(a->used > used);
#ifdef T_ASAN
    assert_true(__asan_address_is_poisoned(p)); /* a use after free is reported */
    assert_false(__asan_address_is_poisoned(q));
#endif
    unpoison(p, 40);
    for (int i = 0; i < 40; i++)
        assert_int_equal(p[i], 0xA5);
    gh__jarena_free(q);
    gh__jarena_free(r);
    gh_jarena_end(a);
    assert_int_equal(gh_jarena_live(a), 0);
    assert_int_equal(gh_jarena_reset(a), 0);
}

static void test_fallback(void **state)
{
    gh_jarena small;
    (void)state;

    assert_int_equal(gh_jarena_init(&small, 4096), 0);
    assert_int_equal(small.size, 4096);
    assert_int_equal(gh_jarena_begin(&small), 0);
    /* oversize: more than a quarter of the arena goes to malloc at once */
    void *big = gh__jarena_malloc(2000);
    assert_non_null(big);
    assert_false(gh_jarena_owns(big));
    assert_int_equal(small.st_fallback, 1);
    /* overflow: the arena fills, then malloc takes over */
    void *blocks[64];
    int n_in = 0, n_out = 0;
    for (int i = 0; i < 64; i++) {
        blocks[i] = gh__jarena_malloc(256);
        assert_non_null(blocks[i]);
        memset(blocks[i], i, 256);
        if (gh_jarena_owns(blocks[i]))
            n_in++;
        else
            n_out++;
    }
    assert_true(n_in >= 8 && n_out > 0);
    assert_true(small.used <= small.size);
    for (int i = 0; i < 64; i++)
        gh__jarena_free(blocks[i]); /* malloc'd ones get the wiping free */
    gh__jarena_free(big);

    /* a request bigger than the arena parses right, partly on malloc */
    char line[12000];
    char longs[10001];
    memset(longs, 'x', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = '\0';
    snprintf(line, sizeof(line), "{\"op\":\"user.set\",\"a\":[1,2,3],\"note\":\"%s\"}", longs);
    assert_int_equal(gh_jarena_reset(&small), GH_EINVAL); /* active: refused */
    gh_jarena_end(&small);
    assert_int_equal(gh_jarena_reset(&small), 0);
    assert_int_equal(gh_jarena_begin(&small), 0);
    json_t *req = parse(line);
    gh_jarena_end(&small);
    assert_non_null(req);
    assert_string_equal(json_string_value(json_object_get(req, "note")), longs);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(req, "a"), 2)), 3);
    assert_true(small.st_fallback > 1);
    json_decref(req);
    assert_int_equal(gh_jarena_reset(&small), 0);
    gh_jarena_free(&small);
}

static void test_reset_wipes(void **state)
{
    gh_jarena *a = *state;

    assert_int_equal(gh_jarena_begin(a), 0);
    json_t *req = parse(AUTH_LINE);
    gh_jarena_end(a);
    assert_string_equal(json_string_value(json_object_get(req, "password")), "hunter2-SECRET-pw");
    json_decref(req);
    /* the freed tree (and the parser's scratch) are still in the arena... */
    size_t used = a->used;
    unsigned char *base = a->base;
    unpoison(base, used);
    assert_non_null(memmem(base, used, "hunter2-SECRET-pw", 17));
    /* ...until reset, which zeroes every byte that was used */
    assert_int_equal(gh_jarena_reset(a), 0);
#ifdef T_ASAN
    /* the rewound part is poisoned again: a kept pointer would be reported */
    assert_true(__asan_address_is_poisoned(base));
#endif
    unpoison(base, used);
    assert_true(all_zero(base, used));
    assert_int_equal(a->used, 0);
}

static void test_nested_begin_refused(void **state)
{
    gh_jarena *a = *state;
    gh_jarena b;

    assert_int_equal(gh_jarena_init(&b, 0), 0);
    assert_int_equal(gh_jarena_begin(a), 0);
    assert_int_equal(gh_jarena_begin(a), GH_EINVAL);
    assert_int_equal(gh_jarena_begin(&b), GH_EINVAL);
    /* the refused begins changed nothing: a still serves this thread */
    void *p = gh__jarena_malloc(8);
    assert_true(p >= (void *)a->base && p < (void *)(a->base + a->size));
    gh__jarena_free(p);
    gh_jarena_end(a);
    assert_int_equal(gh_jarena_begin(&b), 0);
    p = gh__jarena_malloc(8);
    assert_true(p >= (void *)b.base && p < (void *)(b.base + b.size));
    gh__jarena_free(p);
    gh_jarena_end(&b);
    assert_int_equal(gh_jarena_reset(&b), 0);
    gh_jarena_free(&b);
    assert_false(gh_jarena_owns(p)); /* the freed arena left the registry */
}

static void *begin_elsewhere(void *arg)
{
    return (void *)(intptr_t)gh_jarena_begin(arg);
}

static void test_begin_on_two_threads_refused(void **state)
{
    gh_jarena *a = *state;
    pthread_t t;
    void *rc;

    assert_int_equal(gh_jarena_begin(a), 0);
    assert_int_equal(pthread_create(&t, NULL, begin_elsewhere, a), 0);
    assert_int_equal(pthread_join(t, &rc), 0);
    assert_int_equal((intptr_t)rc, GH_EINVAL);
    gh_jarena_end(a);
}

static void test_kept_value_pins_arena(void **state)
{
    gh_jarena *a = *state;

    assert_int_equal(gh_jarena_begin(a), 0);
    json_t *req = parse(AUTH_LINE);
    gh_jarena_end(a);
    json_t *id = json_incref(json_object_get(req, "id"));
    json_t *user = json_incref(json_object_get(req, "user"));
    json_decref(req);
    /* a kept value is never wiped or reused under its holder */
    assert_int_equal(gh_jarena_reset(a), GH_EINUSE);
    assert_int_equal(a->st_busy, 1);
    size_t used = a->used;
    assert_int_equal(gh_jarena_begin(a), 0);
    json_t *next = parse(CHECK_LINE);
    gh_jarena_end(a);
    assert_true(a->used > used); /* the next request went after, not over */
    assert_int_equal(json_integer_value(id), 7);
    assert_string_equal(json_string_value(user), "alice");
    json_decref(next);
    json_decref(user);
    assert_int_equal(gh_jarena_reset(a), GH_EINUSE);
    json_decref(id);
    assert_int_equal(gh_jarena_reset(a), 0);
    assert_int_equal(a->used, 0);
}

static void *decref_elsewhere(void *arg)
{
    json_decref(arg);
    return NULL;
}

static void test_free_on_another_thread(void **state)
{
    gh_jarena *a = *state;
    pthread_t t;

    assert_int_equal(gh_jarena_begin(a), 0);
    json_t *req = parse(CHECK_LINE);
    gh_jarena_end(a);
    assert_int_equal(gh_jarena_reset(a), GH_EINUSE);
    /* e.g. a request handed to loop 0 and released there */
    assert_int_equal(pthread_create(&t, NULL, decref_elsewhere, req), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(gh_jarena_live(a), 0);
    assert_int_equal(gh_jarena_reset(a), 0);
}

static void test_outside_arena_is_plain_malloc(void **state)
{
    gh_jarena *a = *state;

    /* no begin: jansson's values come from malloc and are freed (wiped) */
    json_t *o = json_pack("{s:s, s:i}", "password", "not-in-any-arena", "n", 3);
    assert_non_null(o);
    assert_false(gh_jarena_owns(o));
    assert_int_equal(a->used, 0);
    json_decref(o);
    assert_false(gh_jarena_owns(NULL));
    gh__jarena_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parse_in_arena, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_is_noop, setup, teardown),
        cmocka_unit_test(test_fallback),
        cmocka_unit_test_setup_teardown(test_reset_wipes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nested_begin_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_begin_on_two_threads_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_value_pins_arena, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_on_another_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outside_arena_is_plain_malloc, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
