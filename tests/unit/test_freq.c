/*
 * test_freq.c: the flat request reader (server/freq.c). The hot shapes
 * must be taken (else the fast path silently never runs), and every shape
 * where cJSON and jansson could read differently must be declined.
 *
 * The one thing to know: declining is always safe (jansson answers); the
 * differential fuzz target tests/fuzz/fuzz_freq checks that what is taken
 * reads as jansson reads it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/freq.h"

static int take(const char *line, gh_freq *f)
{
    return gh_freq_parse(f, line, strlen(line));
}

static void test_hot_shapes_taken(void **state)
{
    gh_freq f;
    const gh_fval *v;
    (void)state;

    assert_int_equal(take("{\"op\":\"check\",\"user\":\"u0001234\",\"action\":\"read\","
                          "\"resource\":\"app/a017/prod/db\"}",
                          &f),
                     0);
    assert_int_equal(f.n, 4);
    v = gh_freq_get(&f, "resource");
    assert_non_null(v);
    assert_int_equal(v->type, GH_FV_STRING);
    assert_string_equal(v->s, "app/a017/prod/db");
    assert_int_equal(v->len, 16);
    assert_null(gh_freq_get(&f, "token"));
    gh_freq_free(&f);

    assert_int_equal(take(" { \"id\" : -42 , \"op\":\"whoami\",\"auth\":\"tok\", \"x\":null,"
                          "\"t\":true,\"f\":false,\"z\":0,\"big\":999999999999999 } ",
                          &f),
                     0);
    v = gh_freq_get(&f, "id");
    assert_int_equal(v->type, GH_FV_INT);
    assert_int_equal(v->i, -42);
    assert_int_equal(gh_freq_get(&f, "x")->type, GH_FV_NULL);
    assert_int_equal(gh_freq_get(&f, "t")->type, GH_FV_TRUE);
    assert_int_equal(gh_freq_get(&f, "f")->type, GH_FV_FALSE);
    assert_int_equal(gh_freq_get(&f, "z")->i, 0);
    assert_int_equal(gh_freq_get(&f, "big")->i, 999999999999999LL);
    gh_freq_free(&f);
    assert_null(f.root);
}

static void test_other_shapes_declined(void **state)
{
    static const char *const lines[] = {
        "{\"op\":\"pi\\u006eg\"}",            /* an escape */
        "{\"op\":\"p\xc3\xa9\"}",             /* UTF-8 */
        "{\"op\":\"ping\",\t\"a\":1}",        /* a tab (raw in a string jansson refuses) */
        "{\"op\":\"ping\",\"op\":\"check\"}", /* duplicate */
        "{\"id\":01,\"op\":\"ping\"}",        /* leading zero */
        "{\"id\":-01,\"op\":\"ping\"}",
        "{\"id\":1.5,\"op\":\"ping\"}", /* a real */
        "{\"id\":1e3,\"op\":\"ping\"}",
        "{\"id\":+1,\"op\":\"ping\"}",
        "{\"id\":-,\"op\":\"ping\"}",
        "{\"id\":9007199254740993,\"op\":\"ping\"}", /* past 2^53 */
        "{\"op\":\"ping\",\"x\":[1]}",               /* not flat */
        "{\"op\":\"ping\",\"x\":{}}",
        "[\"op\"]",
        "\"op\"",
        "{\"op\":\"ping\"} x", /* trailing bytes */
        "{\"op\":\"ping\"}{}",
        "{\"op\":\"ping\",}",
        "{\"op\":\"ping\"",
        "{\"a\":tru}",
        "",
        "{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,"
        "\"k9\":9,\"k10\":10,\"k11\":11,\"k12\":12,\"k13\":13,\"k14\":14,\"k15\":15,\"k16\":16}",
    };
    gh_freq f;
    (void)state;

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        assert_int_equal(take(lines[i], &f), GH_FREQ_GENERAL);
        assert_null(f.root);
        assert_int_equal(f.n, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hot_shapes_taken),
        cmocka_unit_test(test_other_shapes_declined),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
