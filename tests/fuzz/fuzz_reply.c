/*
 * fuzz_reply.c: the fixed-shape reply writer (server/reply.c) on arbitrary
 * bytes.
 *
 * The input is cut at its first two '\n' into an id text, a string value and
 * a message. The id text is parsed as JSON when it is one (any kind; a
 * compound goes through the writer's fallback) and used as a string id
 * otherwise (when it holds no NUL, as no parsed request id can). Every line the writer produces
 * must be one line, parse with jansson, and give back what went in: the id equal (json_equal), the
 * strings equal to a reference sanitisation built on gh_schema_utf8_valid
 * (invalid UTF-8 bytes and NUL become '?'), numbers and booleans exact.
 *
 * The one thing to know: the reference here decides validity with the
 * schema's UTF-8 validator, not the writer's own decoder, so the two must
 * agree byte for byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "schema/schema.h"
#include "server/reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *line)
{
    fprintf(stderr, "fuzz_reply: %s\nline: %s\n", what, line ? line : "(null)");
    abort();
}

/* The expected text of a string after the writer: valid sequences kept,
 * every other byte (and NUL) as '?'. out has room for n bytes. */
static size_t sanitize(const char *s, size_t n, char *out)
{
    size_t i = 0, o = 0;

    while (i < n) {
        unsigned char ch = (unsigned char)s[i];
        size_t len = ch < 0x80         ? 1
                     : (ch >> 5) == 6  ? 2
                     : (ch >> 4) == 14 ? 3
                     : (ch >> 3) == 30 ? 4
                                       : 0;
        if (ch != 0 && len > 0 && i + len <= n && gh_schema_utf8_valid(s + i, len)) {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        } else {
            out[o++] = '?';
            i++;
        }
    }
    return o;
}

static json_t *parse_line(char *line, size_t len)
{
    json_error_t err;
    json_t *v;

    if (len == 0 || line[len - 1] != '\n')
        fail("line does not end with a newline", line);
    if (memchr(line, '\n', len - 1) != NULL)
        fail("newline inside the line", line);
    v = json_loadb(line, len - 1, JSON_REJECT_DUPLICATES, &err);
    if (v == NULL) {
        fprintf(stderr, "jansson: %s\n", err.text);
        fail("reply does not parse", line);
    }
    if (!json_is_object(v))
        fail("reply is not an object", line);
    return v;
}

static void expect_str(json_t *o, const char *key, const char *want, size_t wlen, const char *line)
{
    json_t *v = json_object_get(o, key);

    if (!json_is_string(v) || json_string_length(v) != wlen ||
        memcmp(json_string_value(v), want, wlen) != 0)
        fail(key, line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data, *nl1, *nl2;
    const char *idtext, *str, *msg;
    size_t idlen, slen, mlen;
    json_t *id = NULL, *v = NULL, *e;
    char *line = NULL, *want = NULL, *cmsg = NULL;
    int bools[4];
    int64_t num = 0;
    gh_reply r = {0};
    size_t len;

    nl1 = memchr(in, '\n', size);
    idtext = in;
    idlen = nl1 ? (size_t)(nl1 - in) : size;
    str = nl1 ? nl1 + 1 : in + size;
    nl2 = memchr(str, '\n', (size_t)(in + size - str));
    slen = nl2 ? (size_t)(nl2 - str) : (size_t)(in + size - str);
    msg = nl2 ? nl2 + 1 : in + size;
    mlen = (size_t)(in + size - msg);
    for (size_t i = 0; i < size && i < 8; i++)
        num = num * 251 + (int8_t)data[i];
    for (int i = 0; i < 4; i++)
        bools[i] = size > (size_t)i && (data[i] & 1);

    id = json_loadb(idtext, idlen, JSON_DECODE_ANY, NULL);
    /* a request's id went through the parser, which refuses NUL in strings */
    if (id == NULL && gh_schema_utf8_valid(idtext, idlen) && memchr(idtext, 0, idlen) == NULL)
        id = json_stringn(idtext, idlen);
    want = malloc(slen + mlen + 1);
    if (want == NULL)
        return 0;

    /* a success line: id, fixed fields, a member of any kind */
    gh__reply_begin_ok(&r, id);
    gh__reply_string(&r, "s", str, slen);
    gh__reply_bool(&r, "b", bools[0]);
    gh__reply_int(&r, "n", num);
    gh__reply_bools(&r, "a", bools, (size_t)(size % 5));
    if (id != NULL)
        gh__reply_member(&r, "m", id);
    gh__reply_end(&r);
    line = gh__reply_take(&r, &len);
    if (line == NULL)
        fail("out of memory", NULL);
    v = parse_line(line, len);
    if (id != NULL ? !json_equal(json_object_get(v, "id"), id) : json_object_get(v, "id") != NULL)
        fail("id differs", line);
    if (id != NULL && !json_equal(json_object_get(v, "m"), id))
        fail("member differs", line);
    if (!json_is_true(json_object_get(v, "ok")))
        fail("ok", line);
    expect_str(v, "s", want, sanitize(str, slen, want), line);
    if (json_is_true(json_object_get(v, "b")) != bools[0])
        fail("b", line);
    if (!json_is_integer(json_object_get(v, "n")) ||
        json_integer_value(json_object_get(v, "n")) != num)
        fail("n", line);
    e = json_object_get(v, "a");
    if (!json_is_array(e) || json_array_size(e) != size % 5)
        fail("a", line);
    for (size_t i = 0; i < json_array_size(e); i++)
        if (json_is_true(json_array_get(e, i)) != bools[i])
            fail("a[i]", line);
    json_decref(v);
    free(line);

    /* an error line: the message is a C string (cut at its first NUL) */
    cmsg = malloc(mlen + 1);
    if (cmsg == NULL)
        fail("out of memory", NULL);
    memcpy(cmsg, msg, mlen);
    cmsg[mlen] = '\0';
    gh__reply_error(&r, id, "internal", cmsg);
    line = gh__reply_take(&r, &len);
    if (line == NULL)
        fail("out of memory", NULL);
    v = parse_line(line, len);
    if (json_is_false(json_object_get(v, "ok")) == 0)
        fail("ok false", line);
    e = json_object_get(v, "error");
    if (!json_is_object(e))
        fail("error object", line);
    expect_str(e, "code", "internal", 8, line);
    expect_str(e, "message", want, sanitize(cmsg, strlen(cmsg), want), line);
    json_decref(v);
    free(line);

    free(cmsg);
    free(want);
    json_decref(id);
    return 0;
}
