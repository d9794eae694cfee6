/*
 * fuzz_schema.c: the validation rules of schema/validate.c on arbitrary bytes.
 *
 * Every name, pattern and text that reaches the store, an LDAP DN or a log
 * line passes these functions, so they are checked two ways: against small
 * reference implementations written here from the rules as documented
 * (schema.h, PROTOCOL.md) rather than from the code, and against invariants
 * that must hold whatever the rule details (a valid name never holds '/',
 * ',', '=' or a control character; a concrete resource is also a valid
 * pattern; the answer does not depend on whether a message buffer is given
 * or how small it is).
 *
 * The one thing to know: the C-string functions see a NUL-terminated copy of
 * the input (cut at its first NUL), gh_schema_utf8_valid sees every byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/error.h"
#include "schema/schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *s)
{
    fprintf(stderr, "fuzz_schema: %s: \"", what);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        fprintf(stderr, *p >= 0x20 && *p < 0x7F && *p != '"' ? "%c" : "\\x%02x", *p);
    fprintf(stderr, "\"\n");
    abort();
}

/* ---- reference UTF-8: the well-formed byte sequences of Unicode's table
 * 3-7, decoded one code point at a time (-1: ill-formed) ---- */

static long ref_next(const unsigned char *s, size_t len, size_t *adv)
{
    static const struct {
        unsigned char lead_lo, lead_hi, second_lo, second_hi;
        size_t n;
    } rows[] = {
        {0x00, 0x7F, 0, 0, 1},       {0xC2, 0xDF, 0x80, 0xBF, 2}, {0xE0, 0xE0, 0xA0, 0xBF, 3},
        {0xE1, 0xEC, 0x80, 0xBF, 3}, {0xED, 0xED, 0x80, 0x9F, 3}, {0xEE, 0xEF, 0x80, 0xBF, 3},
        {0xF0, 0xF0, 0x90, 0xBF, 4}, {0xF1, 0xF3, 0x80, 0xBF, 4}, {0xF4, 0xF4, 0x80, 0x8F, 4},
    };
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        if (s[0] < rows[r].lead_lo || s[0] > rows[r].lead_hi)
            continue;
        size_t n = rows[r].n;
        if (n == 1) {
            *adv = 1;
            return s[0];
        }
        if (len < n || s[1] < rows[r].second_lo || s[1] > rows[r].second_hi)
            return -1;
        long cp = s[0] & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
        for (size_t i = 1; i < n; i++) {
            if (i > 1 && (s[i] < 0x80 || s[i] > 0xBF))
                return -1;
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        *adv = n;
        return cp;
    }
    return -1;
}

static int ref_utf8(const unsigned char *s, size_t len)
{
    size_t adv;
    for (size_t i = 0; i < len; i += adv)
        if (ref_next(s + i, len - i, &adv) < 0)
            return 0;
    return 1;
}

static int ref_control(long cp)
{
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

/* Unicode White_Space. */
static int ref_space(long cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

/* Invisible separators a stricter rule may also refuse (not White_Space). */
static int maybe_space(long cp)
{
    return cp == 0x180E || cp == 0x200B || cp == 0xFEFF;
}

/* 1: valid name, 0: invalid, -1: valid but for a maybe_space character. */
static int ref_name(const char *s)
{
    size_t len = strlen(s), adv;
    int doubtful = 0;
    if (len == 0 || len > GH_NAME_MAX || s[0] == '-' || s[0] == '.')
        return 0;
    for (size_t i = 0; i < len; i += adv) {
        long cp = ref_next((const unsigned char *)s + i, len - i, &adv);
        if (cp < 0 || ref_control(cp) || ref_space(cp))
            return 0;
        if (cp < 0x80 && strchr("/,=*()\\+<>;\"#", (int)cp) != NULL)
            return 0;
        if (maybe_space(cp))
            doubtful = 1;
    }
    return doubtful ? -1 : 1;
}

static int ref_text(const char *s, size_t max)
{
    size_t len = strlen(s), adv;
    if (len > max)
        return 0;
    for (size_t i = 0; i < len; i += adv) {
        long cp = ref_next((const unsigned char *)s + i, len - i, &adv);
        if (cp < 0 || ref_control(cp))
            return 0;
    }
    return 1;
}

static int action_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
}

/* "deploy", "*", or "prefix:*" with a non-empty prefix; at most 512 bytes. */
static int ref_action(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > GH_PATTERN_MAX)
        return 0;
    if (strcmp(s, "*") == 0)
        return 1;
    if (len >= 3 && strcmp(s + len - 2, ":*") == 0)
        len -= 2;
    for (size_t i = 0; i < len; i++)
        if (!action_char(s[i]))
            return 0;
    return 1;
}

static int resource_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("._:@~+=-", c) != NULL);
}

/* '/'-separated segments, none empty, "." or ".."; "*" a whole segment and
 * "**" only the last one (patterns only); at most 512 bytes. */
static int ref_resource(const char *s, int wild)
{
    size_t len = strlen(s);
    if (len == 0 || len > GH_PATTERN_MAX)
        return 0;
    const char *seg = s;
    for (;;) {
        const char *slash = strchr(seg, '/');
        size_t n = slash ? (size_t)(slash - seg) : strlen(seg);
        if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return 0;
        if (wild && n == 1 && seg[0] == '*') {
            /* one segment */
        } else if (wild && n == 2 && seg[0] == '*' && seg[1] == '*') {
            if (slash != NULL)
                return 0;
        } else {
            for (size_t i = 0; i < n; i++)
                if (!resource_char(seg[i]))
                    return 0;
        }
        if (slash == NULL)
            return 1;
        seg = slash + 1;
    }
}

/* ---- the same call with no message buffer, a 1-byte one and a full one
 * (heap-allocated to size, so ASan sees an overflow) must agree ---- */

typedef int (*validate_fn)(const char *s, char *msg, size_t msglen);

static int run(validate_fn fn, const char *s, const char *what)
{
    char *tiny = malloc(1), *full = malloc(GH_ERRMSG_MAX);
    if (tiny == NULL || full == NULL)
        abort();
    tiny[0] = 'x';
    full[0] = '\0';
    int a = fn(s, NULL, 0), b = fn(s, tiny, 1), c = fn(s, full, GH_ERRMSG_MAX);
    if (a != b || a != c)
        fail("answer depends on the message buffer", s);
    if (c != 0 && c != GH_EINVAL)
        fail(what, s);
    if (c != 0 && (tiny[0] != '\0' || full[0] == '\0' || memchr(full, '\0', GH_ERRMSG_MAX) == NULL))
        fail("refused without a message", s);
    free(tiny);
    free(full);
    return c == 0;
}

static int text_fn(const char *s, char *msg, size_t msglen)
{
    return gh_schema_text_valid("text", s, GH_TEXT_MAX, msg, msglen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    if (size > 0)
        memcpy(s, data, size);
    s[size] = '\0';

    /* UTF-8 over every byte, and over the C string */
    int u = gh_schema_utf8_valid((const char *)data, size);
    if (u != ref_utf8(data, size))
        fail(u ? "accepted ill-formed UTF-8" : "refused well-formed UTF-8", s);
    if (gh_schema_utf8_valid(s, strlen(s)) != ref_utf8((unsigned char *)s, strlen(s)))
        fail("UTF-8 check disagrees on the C string", s);

    /* names */
    int name = run(gh_schema_name_valid, s, "name: unexpected return code");
    int want = ref_name(s);
    if (name && want == 0)
        fail("accepted an invalid name", s);
    if (!name && want == 1)
        fail("refused a valid name", s);
    if (name) {
        size_t len = strlen(s);
        if (len == 0 || len > GH_NAME_MAX || strpbrk(s, "/,=*()\\+<>;\"# ") != NULL)
            fail("a valid name holds a forbidden character", s);
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7F)
                fail("a valid name holds a control character", s);
    }

    /* free text */
    if (run(text_fn, s, "text: unexpected return code") != ref_text(s, GH_TEXT_MAX))
        fail("text check disagrees with the reference", s);

    /* action patterns */
    int action = run(gh_schema_action_valid, s, "action: unexpected return code");
    if (action != ref_action(s))
        fail(action ? "accepted an invalid action" : "refused a valid action", s);

    /* resource patterns and concrete resources */
    int pattern = run(gh_schema_resource_valid, s, "resource: unexpected return code");
    int concrete = run(gh_schema_resource_concrete_valid, s, "resource: unexpected return code");
    if (pattern != ref_resource(s, 1))
        fail(pattern ? "accepted an invalid resource pattern" : "refused a valid resource pattern",
             s);
    if (concrete != ref_resource(s, 0))
        fail(concrete ? "accepted an invalid concrete resource"
                      : "refused a valid concrete resource",
             s);
    if (concrete && !pattern)
        fail("a concrete resource is not a valid pattern", s);
    if (concrete && strchr(s, '*') != NULL)
        fail("a concrete resource holds a wildcard", s);

    /* user states round-trip */
    gh_user_state st;
    if (gh_user_state_parse(s, &st) == 0 && strcmp(gh_user_state_name(st), s) != 0)
        fail("user state does not round-trip", s);

    free(s);
    return 0;
}
