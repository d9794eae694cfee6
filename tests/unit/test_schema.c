/*
 * test_schema.c: unit tests of the validation rules and gh_role helpers of
 * schema/schema.h.
 *
 * The one thing to know: the tables below are the specification; a rule that
 * is loosened or tightened must show up as a changed line here.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "schema/error.h"
#include "schema/schema.h"

static void test_utf8(void **state)
{
    static const char *good[] = {"",
                                 "abc",
                                 "\xc3\xa9",
                                 "\xe2\x82\xac",
                                 "\xf0\x9f\x98\x80",
                                 "\xef\xbf\xbf",
                                 "\xf4\x8f\xbf\xbf"};
    static const char *bad[] = {
        "\x80",             /* lone continuation */
        "\xc0\xaf",         /* overlong '/' */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\xaf",     /* overlong 3-byte */
        "\xf0\x80\x80\xaf", /* overlong 4-byte */
        "\xed\xa0\x80",     /* surrogate D800 */
        "\xed\xbf\xbf",     /* surrogate DFFF */
        "\xf4\x90\x80\x80", /* > U+10FFFF */
        "\xf5\x80\x80\x80", /* invalid lead */
        "\xff",             /* invalid byte */
        "\xc3",             /* truncated */
        "\xe2\x82",         /* truncated */
        "a\xc3(",           /* bad continuation */
    };
    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(gh_schema_utf8_valid(good[i], strlen(good[i])));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (gh_schema_utf8_valid(bad[i], strlen(bad[i])))
            fail_msg("accepted bad UTF-8 #%zu", i);
}

static void test_names(void **state)
{
    static const char *good[] = {"alice", "a",   "Bob.Smith", "svc_deploy-1", "a-b",
                                 "x.y",   "zoë", "名前",      "user@example", "a:b",
                                 "a~b",   "a'b", "a!b",       "0day"};
    static const char *bad[] = {
        "",
        "-lead",
        ".lead",
        "a/b",
        "a,b",
        "a=b",
        "a*",
        "a(b",
        "a)b",
        "a\\b",
        "a+b",
        "a<b",
        "a>b",
        "a;b",
        "a\"b",
        "a#b",
        "a b",
        "a\tb",
        "a\nb",
        "a\rb",
        "\x01x",
        "a\x7f",
        "\xc2\x80x", /* C1 control U+0080 */
        "a\xc2\xa0"
        "b", /* no-break space */
        "a\xe3\x80\x80"
        "b", /* ideographic space */
        "a\xe2\x80\xa8"
        "b",             /* line separator */
        "\xef\xbb\xbfx", /* BOM */
        "\xc0\xaf",      /* overlong */
        "\xed\xa0\x80",  /* surrogate */
    };
    char msg[GH_ERRMSG_MAX];
    char n64[65], n65[66];

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (gh_schema_name_valid(good[i], msg, sizeof(msg)) != 0)
            fail_msg("rejected good name '%s': %s", good[i], msg);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msg[0] = '\0';
        if (gh_schema_name_valid(bad[i], msg, sizeof(msg)) != GH_EINVAL)
            fail_msg("accepted bad name #%zu", i);
        assert_true(msg[0] != '\0');
    }
    assert_int_equal(gh_schema_name_valid(NULL, NULL, 0), GH_EINVAL);
    memset(n64, 'a', 64);
    n64[64] = '\0';
    memset(n65, 'a', 65);
    n65[65] = '\0';
    assert_int_equal(gh_schema_name_valid(n64, NULL, 0), 0);
    assert_int_equal(gh_schema_name_valid(n65, msg, sizeof(msg)), GH_EINVAL);
    assert_non_null(strstr(msg, "64"));
}

static void test_text(void **state)
{
    char msg[GH_ERRMSG_MAX];

    (void)state;
    assert_int_equal(gh_schema_text_valid("mail", "", 10, msg, sizeof(msg)), 0);
    assert_int_equal(gh_schema_text_valid("mail", "Jörg Ünder, O'Neil (ops)", 64, NULL, 0), 0);
    assert_int_equal(gh_schema_text_valid("mail", "0123456789", 10, NULL, 0), 0);
    assert_int_equal(gh_schema_text_valid("mail", "01234567890", 10, msg, sizeof(msg)), GH_EINVAL);
    assert_non_null(strstr(msg, "mail"));
    assert_int_equal(gh_schema_text_valid("x", "a\nb", 10, NULL, 0), GH_EINVAL);
    assert_int_equal(gh_schema_text_valid("x", "a\x1b[31m", 10, NULL, 0), GH_EINVAL);
    assert_int_equal(gh_schema_text_valid("x", "\xc2\x9b", 10, NULL, 0), GH_EINVAL);
    assert_int_equal(gh_schema_text_valid("x", "\xff", 10, NULL, 0), GH_EINVAL);
    assert_int_equal(gh_schema_text_valid("x", NULL, 10, NULL, 0), GH_EINVAL);
}

/* home, shell, gecos: what may go into a passwd line (issue 12) */
static void test_posix(void **state)
{
    char msg[GH_ERRMSG_MAX];

    (void)state;
    assert_int_equal(gh_schema_posix_valid("home", "", GH_PATH_MAX, 1, NULL, 0), 0);
    assert_int_equal(gh_schema_posix_valid("home", "/home/jörg", GH_PATH_MAX, 1, NULL, 0), 0);
    assert_int_equal(gh_schema_posix_valid("home", "home/x", GH_PATH_MAX, 1, msg, sizeof(msg)),
                     GH_EINVAL);
    assert_non_null(strstr(msg, "absolute"));
    assert_int_equal(gh_schema_posix_valid("shell", "/bin/a:b", GH_PATH_MAX, 1, msg, sizeof(msg)),
                     GH_EINVAL);
    assert_non_null(strstr(msg, "':'"));
    assert_int_equal(gh_schema_posix_valid("gecos", "Jörg Ü,Room 1,,", GH_TEXT_MAX, 0, NULL, 0), 0);
    assert_int_equal(gh_schema_posix_valid("gecos", "a:b", GH_TEXT_MAX, 0, NULL, 0), GH_EINVAL);
    assert_int_equal(gh_schema_posix_valid("gecos", "a\nb", GH_TEXT_MAX, 0, NULL, 0), GH_EINVAL);
    assert_int_equal(gh_schema_posix_valid("gecos", "relative ok", GH_TEXT_MAX, 0, NULL, 0), 0);
}

static void test_actions(void **state)
{
    static const char *good[] = {"deploy", "*",     "deploy:*", "svc.read",
                                 "a_b-c",  "a:b:c", "a:b:*",    "X9"};
    static const char *bad[] = {"",   "de ploy", "deploy*", "*:deploy", "de*ploy",
                                ":*", "a/b",     "a:*:b",   "**",       "é"};
    char msg[GH_ERRMSG_MAX];
    char big[GH_PATTERN_MAX + 2];

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (gh_schema_action_valid(good[i], msg, sizeof(msg)) != 0)
            fail_msg("rejected action '%s': %s", good[i], msg);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (gh_schema_action_valid(bad[i], msg, sizeof(msg)) != GH_EINVAL)
            fail_msg("accepted action '%s'", bad[i]);
    assert_int_equal(gh_schema_action_valid(NULL, NULL, 0), GH_EINVAL);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(gh_schema_action_valid(big, NULL, 0), GH_EINVAL);
}

static void test_resources(void **state)
{
    static const char *good[] = {"service/billing",
                                 "service/*",
                                 "service/billing/**",
                                 "*",
                                 "**",
                                 "*/x",
                                 "project/42/*",
                                 "a.b/c_d/e-f/g:h/i@j/k~l/m+n=o"};
    static const char *bad[] = {"",    "/a",    "a/",     "a//b", "a/**/b", "a/b*", "a/*b", "a/***",
                                "a b", "a/./b", "a/../b", "..",   "a/é",    "a\\b", "a?b"};
    static const char *concrete_good[] = {"service/billing", "a", "project/42/doc.txt"};
    static const char *concrete_bad[] = {"",     "service/*", "*",      "a/**",
                                         "a//b", "a/",        "a/../b", "a b"};
    char msg[GH_ERRMSG_MAX];

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (gh_schema_resource_valid(good[i], msg, sizeof(msg)) != 0)
            fail_msg("rejected resource pattern '%s': %s", good[i], msg);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (gh_schema_resource_valid(bad[i], msg, sizeof(msg)) != GH_EINVAL)
            fail_msg("accepted resource pattern '%s'", bad[i]);
    for (size_t i = 0; i < sizeof(concrete_good) / sizeof(concrete_good[0]); i++)
        if (gh_schema_resource_concrete_valid(concrete_good[i], msg, sizeof(msg)) != 0)
            fail_msg("rejected resource '%s': %s", concrete_good[i], msg);
    for (size_t i = 0; i < sizeof(concrete_bad) / sizeof(concrete_bad[0]); i++)
        if (gh_schema_resource_concrete_valid(concrete_bad[i], NULL, 0) != GH_EINVAL)
            fail_msg("accepted resource '%s'", concrete_bad[i]);
    assert_int_equal(gh_schema_resource_valid(NULL, NULL, 0), GH_EINVAL);
}

static void test_states(void **state)
{
    gh_user_state s;

    (void)state;
    assert_string_equal(gh_user_state_name(GH_USER_ACTIVE), "active");
    assert_string_equal(gh_user_state_name(GH_USER_LOCKED), "locked");
    assert_string_equal(gh_user_state_name(GH_USER_DISABLED), "disabled");
    assert_int_equal(gh_user_state_parse("locked", &s), 0);
    assert_int_equal(s, GH_USER_LOCKED);
    assert_int_equal(gh_user_state_parse("disabled", &s), 0);
    assert_int_equal(s, GH_USER_DISABLED);
    assert_int_equal(gh_user_state_parse("Locked", &s), GH_EINVAL);
    assert_int_equal(gh_user_state_parse(NULL, &s), GH_EINVAL);
}

static void test_role_heap(void **state)
{
    gh_role *r = gh_role_new("editor"), *d;
    char big[GH_PATTERN_MAX + 2];
    char name[80];

    (void)state;
    assert_non_null(r);
    assert_string_equal(r->name, "editor");
    assert_int_equal(r->nrules, 0);
    for (int i = 0; i < 100; i++) {
        char act[16];
        snprintf(act, sizeof(act), "act%d", i);
        assert_int_equal(gh_role_add_rule(r, i % 3 ? GH_ALLOW : GH_DENY, act, "res/*"), 0);
    }
    for (int i = 0; i < GH_ROLE_PARENTS_MAX; i++) {
        snprintf(name, sizeof(name), "p%d", i);
        assert_int_equal(gh_role_add_parent(r, name), 0);
    }
    assert_int_equal(gh_role_add_parent(r, "one-too-many"), GH_ETOOBIG);
    memset(name, 'n', 65);
    name[65] = '\0';
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(gh_role_add_rule(r, GH_ALLOW, big, "x"), GH_ETOOBIG);
    assert_int_equal(gh_role_add_rule(r, GH_ALLOW, "x", big), GH_ETOOBIG);
    assert_int_equal(gh_role_add_rule(r, GH_ALLOW, NULL, "x"), GH_EINVAL);
    assert_int_equal(r->nrules, 100);
    assert_string_equal(r->rules[99].action, "act99");
    assert_int_equal(r->rules[99].effect, GH_DENY);

    d = gh_role_dup(r);
    assert_non_null(d);
    assert_int_equal(d->nrules, 100);
    assert_int_equal(d->nparents, GH_ROLE_PARENTS_MAX);
    assert_string_equal(d->parents[63], "p63");
    assert_true(d->rules[5].action != r->rules[5].action);
    assert_string_equal(d->rules[5].action, "act5");
    gh_role_free(r);
    assert_string_equal(d->rules[42].resource, "res/*");
    gh_role_free(d);
    gh_role_free(NULL);

    /* Rule count limit. */
    r = gh_role_new("many");
    for (int i = 0; i < GH_ROLE_RULES_MAX; i++)
        assert_int_equal(gh_role_add_rule(r, GH_ALLOW, "a", "b"), 0);
    assert_int_equal(gh_role_add_rule(r, GH_ALLOW, "a", "b"), GH_ETOOBIG);
    gh_role_free(r);
    assert_null(gh_role_new(name)); /* name longer than GH_NAME_MAX */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8),      cmocka_unit_test(test_names),
        cmocka_unit_test(test_text),      cmocka_unit_test(test_actions),
        cmocka_unit_test(test_resources), cmocka_unit_test(test_states),
        cmocka_unit_test(test_role_heap), cmocka_unit_test(test_posix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
