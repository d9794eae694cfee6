/*
 * reply.c: the fixed-shape reply writer (see reply.h).
 *
 * Why it exists: building a jansson object for {"id":7,"ok":true,"allow":true}
 * and dumping it cost several allocations and a tree walk per request, more
 * than the decision itself. Here a reply is appended into one buffer.
 *
 * The one thing to know: the UTF-8 check below must accept exactly what
 * jansson's parser accepts (no overlong forms, no surrogates, nothing above
 * U+10FFFF); anything else becomes '?', byte by byte, as does NUL (which
 * jansson refuses inside strings by default). Clients parse these lines.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "server/reply.h"

static int reserve(gh_reply *r, size_t more)
{
    size_t cap;
    char *nb;

    if (r->oom)
        return -1;
    if (r->len + more + 2 <= r->cap) /* + '\n' and NUL at take */
        return 0;
    cap = r->cap ? r->cap : 128;
    while (cap < r->len + more + 2)
        cap *= 2;
    /* not realloc: a reply may carry a token, and the old block must not
     * stay behind in freed memory */
    nb = malloc(cap);
    if (nb == NULL) {
        r->oom = 1;
        return -1;
    }
    if (r->buf != NULL) {
        memcpy(nb, r->buf, r->len);
        sodium_memzero(r->buf, r->cap);
        free(r->buf);
    }
    r->buf = nb;
    r->cap = cap;
    return 0;
}

void gh__reply_raw(gh_reply *r, const char *s, size_t len)
{
    if (reserve(r, len) != 0)
        return;
    memcpy(r->buf + r->len, s, len);
    r->len += len;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void gh__reply_str(gh_reply *r, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    /* worst case: every byte becomes \u00XX */
    if (reserve(r, len * 6 + 2) != 0)
        return;
    char *o = r->buf + r->len;
    *o++ = '"';
    while (i < len) {
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8_seq(p + i, len - i);
            if (n == 0) {
                *o++ = '?';
                i++;
            } else {
                memcpy(o, p + i, n);
                o += n;
                i += n;
            }
            continue;
        }
        i++;
        switch (c) {
        case '"':
            *o++ = '\\';
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            *o++ = '\\';
            break;
        case '\n':
            *o++ = '\\';
            *o++ = 'n';
            break;
        case '\r':
            *o++ = '\\';
            *o++ = 'r';
            break;
        case '\t':
            *o++ = '\\';
            *o++ = 't';
            break;
        case '\b':
            *o++ = '\\';
            *o++ = 'b';
            break;
        case '\f':
            *o++ = '\\';
            *o++ = 'f';
            break;
        case 0:
            *o++ = '?';
            break;
        default:
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        }
    }
    *o++ = '"';
    r->len = (size_t)(o - r->buf);
}

static void dump(gh_reply *r, const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    if (s == NULL) {
        r->oom = 1;
        return;
    }
    gh__reply_raw(r, s, strlen(s));
    free(s);
}

void gh__reply_json(gh_reply *r, const json_t *v)
{
    char num[32];
    int n;

    switch (json_typeof(v)) {
    case JSON_STRING:
        gh__reply_str(r, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        gh__reply_raw(r, num, (size_t)n);
        break;
    case JSON_TRUE:
        gh__reply_raw(r, "true", 4);
        break;
    case JSON_FALSE:
        gh__reply_raw(r, "false", 5);
        break;
    case JSON_NULL:
        gh__reply_raw(r, "null", 4);
        break;
    default: /* reals (jansson's own formatting), objects, arrays */
        dump(r, v);
    }
}

static void key(gh_reply *r, const char *k)
{
    size_t n = strlen(k);

    if (reserve(r, n + 4) != 0)
        return;
    char *o = r->buf + r->len;
    *o++ = ',';
    *o++ = '"';
    memcpy(o, k, n);
    o += n;
    *o++ = '"';
    *o++ = ':';
    r->len = (size_t)(o - r->buf);
}

void gh__reply_begin_ok(gh_reply *r, const json_t *id)
{
    if (id != NULL) {
        gh__reply_raw(r, "{\"id\":", 6);
        gh__reply_json(r, id);
        gh__reply_raw(r, ",\"ok\":true", 10);
    } else {
        gh__reply_raw(r, "{\"ok\":true", 10);
    }
}

void gh__reply_bool(gh_reply *r, const char *k, int v)
{
    key(r, k);
    if (v)
        gh__reply_raw(r, "true", 4);
    else
        gh__reply_raw(r, "false", 5);
}

void gh__reply_int(gh_reply *r, const char *k, int64_t v)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%" PRId64, v);

    key(r, k);
    gh__reply_raw(r, num, (size_t)n);
}

void gh__reply_string(gh_reply *r, const char *k, const char *s, size_t len)
{
    key(r, k);
    gh__reply_str(r, s, len);
}

void gh__reply_bools(gh_reply *r, const char *k, const int *v, size_t n)
{
    key(r, k);
    if (reserve(r, n * 6 + 2) != 0)
        return;
    char *o = r->buf + r->len;
    *o++ = '[';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *o++ = ',';
        if (v[i]) {
            memcpy(o, "true", 4);
            o += 4;
        } else {
            memcpy(o, "false", 5);
            o += 5;
        }
    }
    *o++ = ']';
    r->len = (size_t)(o - r->buf);
}

void gh__reply_member(gh_reply *r, const char *k, const json_t *v)
{
    key(r, k);
    gh__reply_json(r, v);
}

void gh__reply_error(gh_reply *r, const json_t *id, const char *code, const char *msg)
{
    if (id != NULL) {
        gh__reply_raw(r, "{\"id\":", 6);
        gh__reply_json(r, id);
        gh__reply_raw(r, ",\"ok\":false", 11);
    } else {
        gh__reply_raw(r, "{\"ok\":false", 11);
    }
    gh__reply_raw(r, ",\"error\":{\"code\":", 17);
    gh__reply_str(r, code, strlen(code));
    gh__reply_raw(r, ",\"message\":", 11);
    gh__reply_str(r, msg, strlen(msg));
    gh__reply_raw(r, "}}\n", 3);
}

void gh__reply_end(gh_reply *r)
{
    gh__reply_raw(r, "}\n", 2);
}

char *gh__reply_take(gh_reply *r, size_t *len)
{
    char *s;

    if (r->oom || r->buf == NULL || reserve(r, 0) != 0) {
        gh__reply_free(r);
        *len = 0;
        return NULL;
    }
    r->buf[r->len] = '\0';
    s = r->buf;
    *len = r->len;
    memset(r, 0, sizeof(*r));
    return s;
}

void gh__reply_free(gh_reply *r)
{
    if (r->buf != NULL)
        sodium_memzero(r->buf, r->cap);
    free(r->buf);
    memset(r, 0, sizeof(*r));
}
