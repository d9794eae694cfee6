/*
 * fuzz_freq.c: the flat request reader (server/freq.c) against jansson on
 * arbitrary bytes.
 *
 * Whatever gh_freq_parse takes, jansson (as dispatch.c calls it, with
 * JSON_REJECT_DUPLICATES) must take too and read the same object: the same
 * members, each of the same type and value. A line the flat reader takes
 * and jansson refuses, or reads differently, is a second dialect: a bug.
 *
 * The one thing to know: the reader may decline anything (GH_FREQ_GENERAL:
 * jansson then answers), so only its acceptances are checked here; the
 * unit test tests/unit/test_freq.c pins that the hot shapes are accepted.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/freq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const uint8_t *data, size_t size)
{
    fprintf(stderr, "fuzz_freq: %s\nline: %.*s\n", what, (int)size, (const char *)data);
    abort();
}

static int same(const gh_fval *v, json_t *j)
{
    switch (v->type) {
    case GH_FV_STRING:
        return json_is_string(j) && json_string_length(j) == v->len &&
               memcmp(json_string_value(j), v->s, v->len) == 0 && strlen(v->s) == v->len;
    case GH_FV_INT:
        return json_is_integer(j) && json_integer_value(j) == (json_int_t)v->i;
    case GH_FV_TRUE:
        return json_is_true(j);
    case GH_FV_FALSE:
        return json_is_false(j);
    case GH_FV_NULL:
        return json_is_null(j);
    default:
        return 0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gh_freq f;
    json_error_t jerr;
    json_t *j;

    if (memchr(data, '\0', size) != NULL) /* dispatch.c refuses NUL first */
        return 0;
    if (gh_freq_parse(&f, (const char *)data, size) != 0) {
        if (f.root != NULL || f.n != 0)
            fail("a declined line left a tree behind", data, size);
        return 0;
    }
    j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        fail("the flat reader took a line jansson refuses", data, size);
    if (!json_is_object(j) || json_object_size(j) != f.n)
        fail("the flat reader read another number of members", data, size);
    for (size_t i = 0; i < f.n; i++) {
        json_t *m = json_object_get(j, f.v[i].key);
        if (m == NULL || !same(&f.v[i], m))
            fail("a member reads differently", data, size);
        if (gh_freq_get(&f, f.v[i].key) != &f.v[i])
            fail("gh_freq_get does not find a member", data, size);
    }
    json_decref(j);
    gh_freq_free(&f);
    return 0;
}
