/*
 * freq.c: reads a flat request (one object of scalar members) with cJSON.
 *
 * The one thing to know: this is a fast path, never a second dialect. A line
 * is taken only when reading it with cJSON cannot differ from jansson's
 * reading (see freq.h); the checks that make it so run on the raw bytes
 * first (printable ASCII and no backslash, so strings are the spans between
 * quotes and hold no escape) and on the tokens between strings after the
 * parse (every number an integer written canonically, small enough that a
 * double holds it exactly). Anything else is GH_FREQ_GENERAL.
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "schema/error.h"
#include "server/freq.h"

/* cJSON's hooks take no context: the request being parsed or freed on this
 * thread is named here for the length of that call only. */
static _Thread_local gh_freq *cur;
static void *(*heap_malloc)(size_t) = malloc;
static void (*heap_free)(void *) = free;

static void *arena_malloc(size_t n)
{
    gh_freq *f = cur;
    if (f != NULL && n <= GH_FREQ_ARENA - f->used) {
        void *p = f->arena + f->used;
        f->used += (n + 15) & ~(size_t)15;
        if (f->used > GH_FREQ_ARENA)
            f->used = GH_FREQ_ARENA;
        return p;
    }
    return heap_malloc(n);
}

static void arena_free(void *p)
{
    gh_freq *f = cur;
    if (f != NULL && (unsigned char *)p >= f->arena &&
        (unsigned char *)p < f->arena + GH_FREQ_ARENA)
        return; /* the arena goes as a whole */
    heap_free(p);
}

void gh_freq_init(void *(*malloc_fn)(size_t), void (*free_fn)(void *))
{
    cJSON_Hooks h = {arena_malloc, arena_free};
    heap_malloc = malloc_fn;
    heap_free = free_fn;
    cJSON_InitHooks(&h);
}

/* Printable ASCII without backslash: no escapes, no control characters, no
 * UTF-8 to validate. */
static int plain_bytes(const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch < 0x20 || ch > 0x7e || ch == '\\')
            return 0;
    }
    return 1;
}

/* A literal or number token between strings, as jansson would read it into
 * the same value cJSON did: true, false, null, or -?(0|[1-9][0-9]*) of at
 * most 15 digits (below 2^53). */
static int token_ok(const char *t, size_t n)
{
    size_t i = 0, digits;

    if ((n == 4 && memcmp(t, "true", 4) == 0) || (n == 5 && memcmp(t, "false", 5) == 0) ||
        (n == 4 && memcmp(t, "null", 4) == 0))
        return 1;
    if (i < n && t[i] == '-')
        i++;
    digits = n - i;
    if (digits == 0 || digits > 15 || (t[i] == '0' && digits > 1))
        return 0;
    for (; i < n; i++)
        if (t[i] < '0' || t[i] > '9')
            return 0;
    return 1;
}

static int tokens_ok(const char *line, size_t len)
{
    size_t i = 0;

    while (i < len) {
        char ch = line[i];
        if (ch == '"') { /* no escapes: the string ends at the next quote */
            const char *q = memchr(line + i + 1, '"', len - i - 1);
            if (q == NULL)
                return 0;
            i = (size_t)(q - line) + 1;
        } else if (ch == ' ' || ch == '{' || ch == '}' || ch == ':' || ch == ',') {
            i++;
        } else {
            size_t start = i;
            while (i < len && line[i] != ' ' && line[i] != '{' && line[i] != '}' &&
                   line[i] != ':' && line[i] != ',' && line[i] != '"')
                i++;
            if (!token_ok(line + start, i - start))
                return 0;
        }
    }
    return 1;
}

static int member(gh_fval *v, const cJSON *it)
{
    v->key = it->string;
    if (cJSON_IsString(it)) {
        v->type = GH_FV_STRING;
        v->s = it->valuestring;
        v->len = strlen(it->valuestring);
    } else if (cJSON_IsNumber(it)) {
        /* tokens_ok ran first: an integer below 2^53, exact in a double */
        if (!(it->valuedouble > -9007199254740992.0 && it->valuedouble < 9007199254740992.0))
            return 0;
        v->type = GH_FV_INT;
        v->i = (int64_t)it->valuedouble;
    } else if (cJSON_IsTrue(it)) {
        v->type = GH_FV_TRUE;
    } else if (cJSON_IsFalse(it)) {
        v->type = GH_FV_FALSE;
    } else if (cJSON_IsNull(it)) {
        v->type = GH_FV_NULL;
    } else {
        return 0; /* an object or an array: not flat */
    }
    return v->key != NULL;
}

int gh_freq_parse(gh_freq *f, const char *line, size_t len)
{
    const char *end = NULL;
    cJSON *root, *it;

    f->root = NULL;
    f->n = 0;
    f->used = 0;
    if (len == 0 || !plain_bytes(line, len))
        return GH_FREQ_GENERAL;
    cur = f;
    root = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    cur = NULL;
    if (root == NULL) { /* not JSON, or out of memory: jansson says which */
        sodium_memzero(f->arena, f->used);
        f->used = 0;
        return GH_FREQ_GENERAL;
    }
    f->root = root;
    if (!cJSON_IsObject(root))
        goto general;
    while (end != NULL && end < line + len && *end == ' ')
        end++;
    if (end != line + len || !tokens_ok(line, len))
        goto general;
    for (it = root->child; it != NULL; it = it->next) {
        if (f->n == GH_FREQ_MAX || !member(&f->v[f->n], it))
            goto general;
        for (size_t k = 0; k < f->n; k++)
            if (strcmp(f->v[k].key, it->string) == 0)
                goto general; /* a duplicate: jansson refuses it */
        f->n++;
    }
    return 0;
general:
    gh_freq_free(f);
    return GH_FREQ_GENERAL;
}

const gh_fval *gh_freq_get(const gh_freq *f, const char *key)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->v[i].key, key) == 0)
            return &f->v[i];
    return NULL;
}

void gh_freq_free(gh_freq *f)
{
    if (f->root != NULL) {
        cur = f;
        cJSON_Delete(f->root);
        cur = NULL;
    }
    sodium_memzero(f->arena, f->used); /* request strings: passwords */
    f->root = NULL;
    f->n = 0;
    f->used = 0;
}
