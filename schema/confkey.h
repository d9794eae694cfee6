/*
 * confkey.h: the one engine for keys of gatehoused.conf, shared by [server]
 * (server/config.c) and [upstream:NAME] (sync/sync_config.c). A section is a
 * table of keys, each a kind, the offset of its field in the section's struct
 * and bounds; gh_confkey_set parses one value into its field.
 *
 * The thing to know: numbers are decimal ("010" is ten) except for a mode,
 * which is octal ("0660"); sizes take a K, M or G suffix (powers of 1024);
 * booleans are yes/no, true/false, on/off, 1/0.
 */
#ifndef GH_CONFKEY_H
#define GH_CONFKEY_H

#include <stddef.h>
#include <stdint.h>

typedef enum gh_confkey_kind {
    GH_CONFKEY_STR,   /* char *, strdup'd (the old value freed) */
    GH_CONFKEY_UINT,  /* unsigned, decimal, min..max */
    GH_CONFKEY_SIZE,  /* size_t, decimal with an optional K/M/G suffix, min..max */
    GH_CONFKEY_U64,   /* uint64_t, decimal, min..max */
    GH_CONFKEY_I64,   /* int64_t, decimal, min..max (never negative) */
    GH_CONFKEY_BOOL,  /* int, 0 or 1 */
    GH_CONFKEY_MODE,  /* unsigned, octal, 0..max */
    GH_CONFKEY_RATIO, /* double, from 0 to 1 */
} gh_confkey_kind;

typedef struct gh_confkey {
    const char *name;
    gh_confkey_kind kind;
    size_t off; /* of the field in the section's struct */
    uint64_t min, max;
} gh_confkey;

/* The key named key in table (ended by a NULL name), or NULL. */
const gh_confkey *gh_confkey_find(const gh_confkey *table, const char *key);
/* Parses value into k's field of base. 0; GH_EINVAL with "KEY must be ...,
 * not 'VALUE'" in msg (the field untouched); GH_ENOMEM. */
int gh_confkey_set(const gh_confkey *k, void *base, const char *value, char *msg, size_t msglen);

/* The parsers themselves, 0 or -1 (out untouched). */
int gh_confkey_parse_u64(const char *v, int allow_suffix, uint64_t *out);
int gh_confkey_parse_bool(const char *v, int *out);
int gh_confkey_parse_mode(const char *v, unsigned *out);

#endif
