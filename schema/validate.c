/*
 * validate.c: the validation rules of schema.h, shared by the store, the
 * server, sync and import.
 *
 * The one thing to know: names end up in LDAP DNs, NSS lines, log lines and
 * shell scripts, so the rules are deny-by-default on anything that is special
 * in one of those places; loosening a rule here is a protocol change.
 *
 * Resource segments are built from [A-Za-z0-9._:@~+=-]; "." and ".." are not
 * segments (no path tricks), and in patterns "*" is one whole segment, "**"
 * only the last one.
 */
#include <stdio.h>
#include <string.h>

#include "schema/error.h"
#include "schema/schema.h"

static int fail(char *msg, size_t msglen, const char *text)
{
    if (msg != NULL && msglen > 0)
        snprintf(msg, msglen, "%s", text);
    return GH_EINVAL;
}

/* Decodes one UTF-8 sequence at s (len bytes left): code point or -1. */
static long utf8_next(const unsigned char *s, size_t len, size_t *adv)
{
    unsigned char c = s[0];
    long cp;
    size_t n;

    if (c < 0x80) {
        *adv = 1;
        return c;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return -1; /* continuation byte, C0/C1 overlong lead, or > U+10FFFF */
    }
    if (len < n)
        return -1;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return -1;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return -1; /* overlong, out of range, or a surrogate */
    *adv = n;
    return cp;
}

int gh_schema_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, adv;

    while (i < len) {
        if (utf8_next(p + i, len - i, &adv) < 0)
            return 0;
        i += adv;
    }
    return 1;
}

static int is_control(long cp)
{
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

static int is_space(long cp)
{
    return cp == ' ' || cp == 0xA0 || cp == 0x1680 || cp == 0x180E ||
           (cp >= 0x2000 && cp <= 0x200B) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
}

int gh_schema_name_valid(const char *name, char *msg, size_t msglen)
{
    const unsigned char *p = (const unsigned char *)name;
    size_t len, i = 0, adv;

    if (name == NULL || name[0] == '\0')
        return fail(msg, msglen, "name is empty");
    len = strlen(name);
    if (len > GH_NAME_MAX)
        return fail(msg, msglen, "name is longer than 64 bytes");
    if (name[0] == '-' || name[0] == '.')
        return fail(msg, msglen, "name must not start with '-' or '.'");
    while (i < len) {
        long cp = utf8_next(p + i, len - i, &adv);
        if (cp < 0)
            return fail(msg, msglen, "name is not valid UTF-8");
        if (is_control(cp))
            return fail(msg, msglen, "name contains a control character");
        if (is_space(cp))
            return fail(msg, msglen, "name contains whitespace");
        if (cp < 0x80 && strchr("/,=*()\\+<>;\"#", (int)cp) != NULL) {
            if (msg != NULL && msglen > 0)
                snprintf(msg, msglen, "name contains the forbidden character '%c'", (int)cp);
            return GH_EINVAL;
        }
        i += adv;
    }
    return 0;
}

int gh_schema_text_valid(const char *what, const char *s, size_t max, char *msg, size_t msglen)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len, i = 0, adv;

    if (what == NULL)
        what = "text";
    if (s == NULL) {
        if (msg != NULL && msglen > 0)
            snprintf(msg, msglen, "%s is missing", what);
        return GH_EINVAL;
    }
    len = strlen(s);
    if (len > max) {
        if (msg != NULL && msglen > 0)
            snprintf(msg, msglen, "%s is longer than %zu bytes", what, max);
        return GH_EINVAL;
    }
    while (i < len) {
        long cp = utf8_next(p + i, len - i, &adv);
        if (cp < 0 || is_control(cp)) {
            if (msg != NULL && msglen > 0)
                snprintf(msg, msglen, "%s %s", what,
                         cp < 0 ? "is not valid UTF-8" : "contains a control character");
            return GH_EINVAL;
        }
        i += adv;
    }
    return 0;
}

static int action_char(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
}

int gh_schema_action_valid(const char *pattern, char *msg, size_t msglen)
{
    size_t len;

    if (pattern == NULL || pattern[0] == '\0')
        return fail(msg, msglen, "action is empty");
    len = strlen(pattern);
    if (len > GH_PATTERN_MAX)
        return fail(msg, msglen, "action is longer than 512 bytes");
    if (strcmp(pattern, "*") == 0)
        return 0;
    /* "prefix:*": the star is allowed only as the whole last ':'-part. */
    if (len >= 3 && pattern[len - 1] == '*' && pattern[len - 2] == ':')
        len -= 2;
    for (size_t i = 0; i < len; i++)
        if (!action_char((unsigned char)pattern[i]))
            return fail(msg, msglen,
                        pattern[i] == '*' ? "action: '*' only as \"*\" or a final \":*\""
                                          : "action contains a character outside "
                                            "[A-Za-z0-9._:-]");
    return 0;
}

static int resource_char(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '@' || c == '~' || c == '+' || c == '=' || c == '-';
}

/* Shared walk: wild = 1 for patterns, 0 for concrete resources. */
static int resource_check(const char *s, int wild, char *msg, size_t msglen)
{
    const char *seg, *end;
    size_t len;

    if (s == NULL || s[0] == '\0')
        return fail(msg, msglen, "resource is empty");
    len = strlen(s);
    if (len > GH_PATTERN_MAX)
        return fail(msg, msglen, "resource is longer than 512 bytes");
    for (seg = s;; seg = end + 1) {
        size_t n;

        end = strchr(seg, '/');
        if (end == NULL)
            end = seg + strlen(seg);
        n = (size_t)(end - seg);
        if (n == 0)
            return fail(msg, msglen,
                        "resource has an empty segment (leading, trailing or "
                        "double '/')");
        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return fail(msg, msglen, "resource segments '.' and '..' are not allowed");
        if (wild && n == 1 && seg[0] == '*') {
            /* one whole segment */
        } else if (wild && n == 2 && seg[0] == '*' && seg[1] == '*') {
            if (*end != '\0')
                return fail(msg, msglen, "'**' is allowed only as the last segment");
        } else {
            for (size_t i = 0; i < n; i++) {
                if (seg[i] == '*')
                    return fail(msg, msglen,
                                wild ? "'*' must be a whole segment" : "resource has a wildcard");
                if (!resource_char((unsigned char)seg[i]))
                    return fail(msg, msglen,
                                "resource contains a character outside "
                                "[A-Za-z0-9._:@~+=-]");
            }
        }
        if (*end == '\0')
            break;
    }
    return 0;
}

int gh_schema_resource_valid(const char *pattern, char *msg, size_t msglen)
{
    return resource_check(pattern, 1, msg, msglen);
}

int gh_schema_resource_concrete_valid(const char *resource, char *msg, size_t msglen)
{
    return resource_check(resource, 0, msg, msglen);
}

static const char *const state_names[] = {"active", "locked", "disabled"};

const char *gh_user_state_name(gh_user_state s)
{
    if ((unsigned)s < sizeof(state_names) / sizeof(state_names[0]))
        return state_names[s];
    return "unknown";
}

gh_user_state gh_user_effective_state(const gh_user *u)
{
    if (u->admin_state != GH_USER_ACTIVE)
        return u->admin_state;
    if (u->tombstone != 0 || (u->upstream_flags & (GH_UPSTREAM_DISABLED | GH_UPSTREAM_EXPIRED)))
        return GH_USER_DISABLED;
    /* GH_UPSTREAM_LOCKED is shown, not enforced here: an AD lockout ends by
     * time, between two runs; the upstream's bind enforces it */
    return GH_USER_ACTIVE;
}

int gh_user_state_parse(const char *s, gh_user_state *out)
{
    for (unsigned i = 0; s != NULL && i < sizeof(state_names) / sizeof(state_names[0]); i++) {
        if (strcmp(s, state_names[i]) == 0) {
            *out = (gh_user_state)i;
            return 0;
        }
    }
    return GH_EINVAL;
}

int gh_schema_posix_valid(const char *what, const char *s, size_t max, int path, char *msg,
                          size_t msglen)
{
    int rc = gh_schema_text_valid(what, s, max, msg, msglen);
    if (rc != 0)
        return rc;
    if (strchr(s, ':') != NULL) {
        if (msg != NULL && msglen > 0)
            snprintf(msg, msglen, "%s must not contain ':'", what);
        return GH_EINVAL;
    }
    if (path && s[0] != '\0' && s[0] != '/') {
        if (msg != NULL && msglen > 0)
            snprintf(msg, msglen, "%s must be an absolute path", what);
        return GH_EINVAL;
    }
    return 0;
}
