/*
 * freq.h: the flat request, the shape of the hot operations (`check`,
 * `whoami`, `auth`, the `nss.*` lookups): one JSON object of scalar members,
 * read through cJSON, which parses it in a quarter of jansson's time.
 *
 * The one thing to know: gh_freq_parse takes only what it can read exactly
 * as jansson would (printable ASCII, no escapes, integers in canonical form,
 * no duplicate keys, at most GH_FREQ_MAX members) and answers
 * GH_FREQ_GENERAL for everything else, which then takes the general path (jansson, with its
 * errors). It never refuses a request of its own accord, so both paths give
 * the same answers; tests/fuzz/fuzz_freq holds it to that.
 */
#ifndef GH_FREQ_H
#define GH_FREQ_H

#include <stddef.h>
#include <stdint.h>

#define GH_FREQ_MAX 16    /* members of a flat request */
#define GH_FREQ_GENERAL 1 /* gh_freq_parse: take the general path */

enum gh_fval_type {
    GH_FV_NULL = 1,
    GH_FV_STRING,
    GH_FV_INT,
    GH_FV_TRUE,
    GH_FV_FALSE,
    GH_FV_OTHER /* a real, an object or an array: never in a flat request */
};

typedef struct gh_fval {
    const char *key;
    int type;      /* enum gh_fval_type */
    const char *s; /* GH_FV_STRING: NUL-terminated (no NUL inside) */
    size_t len;
    int64_t i; /* GH_FV_INT */
} gh_fval;

#define GH_FREQ_ARENA 2048 /* bytes of the tree kept inside gh_freq */

typedef struct gh_freq {
    void *root; /* the cJSON tree the values point into */
    size_t n;
    gh_fval v[GH_FREQ_MAX];
    /* cJSON's allocations during the parse come from here (what does not
     * fit from malloc): no malloc per value; wiped by gh_freq_free. */
    size_t used;
    _Alignas(16) unsigned char arena[GH_FREQ_ARENA];
} gh_freq;

/* Installs the allocator cJSON uses beyond a gh_freq's own arena
 * (process-wide, like jansson's): call once before any parse. free_fn should
 * wipe (requests carry passwords). */
void gh_freq_init(void *(*malloc_fn)(size_t), void (*free_fn)(void *));
/* 0: f holds the request (gh_freq_free it); GH_FREQ_GENERAL: not a flat
 * request this reader takes, or out of memory (f is empty: read the line
 * with jansson, which gives the error when there is one). */
int gh_freq_parse(gh_freq *f, const char *line, size_t len);
/* The member named key, or NULL. */
const gh_fval *gh_freq_get(const gh_freq *f, const char *key);
void gh_freq_free(gh_freq *f);

#endif
