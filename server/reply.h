/*
 * reply.h: the fixed-shape reply writer. Produces protocol reply lines
 * ({"id":…,"ok":true,"allow":true}\n and error replies) straight into a byte
 * buffer, without building a jansson tree and dumping it.
 *
 * The one thing to know: every string goes through gh__reply_str, which makes
 * any bytes valid JSON (bytes that do not form valid UTF-8 become '?', control
 * characters are escaped), so a reply line always parses, whatever a peer or a
 * record put in it. tests/fuzz/fuzz_reply.c holds the writer to that.
 */
#ifndef GH_REPLY_H
#define GH_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct gh_reply {
    char *buf; /* malloc'd; NULL until the first byte */
    size_t len, cap;
    int oom; /* an append failed: the line is incomplete */
} gh_reply;

/* Appends raw bytes (already JSON). */
void gh__reply_raw(gh_reply *r, const char *s, size_t len);
/* Appends s[0..len) as a quoted JSON string (see above). */
void gh__reply_str(gh_reply *r, const char *s, size_t len);
/* Appends a JSON scalar exactly as jansson writes it (compact): a string,
 * integer, real, true, false or null. Objects and arrays are dumped too. */
void gh__reply_json(gh_reply *r, const json_t *v);
/* {"id":<id>,"ok":true  (id may be NULL: no "id" member). Close with _end. */
void gh__reply_begin_ok(gh_reply *r, const json_t *id);
/* ,"key":value members; key is a literal the server chose (not escaped). */
void gh__reply_bool(gh_reply *r, const char *key, int v);
void gh__reply_int(gh_reply *r, const char *key, int64_t v);
void gh__reply_string(gh_reply *r, const char *key, const char *s, size_t len);
/* ,"key":[true,false,...] */
void gh__reply_bools(gh_reply *r, const char *key, const int *v, size_t n);
/* ,"key":<any JSON value> (compound values through json_dumps). */
void gh__reply_member(gh_reply *r, const char *key, const json_t *v);
/* A whole error line: {"id":…,"ok":false,"error":{"code":…,"message":…}}\n */
void gh__reply_error(gh_reply *r, const json_t *id, const char *code, const char *msg);
/* Closes the object and adds the newline. */
void gh__reply_end(gh_reply *r);
/* The finished line (NUL-terminated, caller frees) and its length; NULL when
 * the writer ran out of memory (then nothing is left to free). */
char *gh__reply_take(gh_reply *r, size_t *len);
void gh__reply_free(gh_reply *r);

#endif
