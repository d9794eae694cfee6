/*
 * confkey.c: parsing of configuration values (schema/confkey.h), one parser
 * per kind, used by every section of gatehoused.conf so that a value means
 * the same thing wherever it is written. Decimal everywhere but modes.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/confkey.h"
#include "schema/error.h"

const gh_confkey *gh_confkey_find(const gh_confkey *table, const char *key)
{
    for (const gh_confkey *k = table; k->name != NULL; k++)
        if (strcmp(k->name, key) == 0)
            return k;
    return NULL;
}

int gh_confkey_parse_u64(const char *v, int allow_suffix, uint64_t *out)
{
    char *end;
    if (*v < '0' || *v > '9') /* no sign, no space */
        return -1;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno != 0)
        return -1;
    if (allow_suffix && *end != '\0') {
        unsigned shift = 0;
        switch (*end) {
        case 'k':
        case 'K':
            shift = 10;
            break;
        case 'm':
        case 'M':
            shift = 20;
            break;
        case 'g':
        case 'G':
            shift = 30;
            break;
        default:
            return -1;
        }
        if (n > (ULLONG_MAX >> shift))
            return -1;
        n <<= shift;
        end++;
    }
    if (*end != '\0')
        return -1;
    *out = n;
    return 0;
}

int gh_confkey_parse_bool(const char *v, int *out)
{
    if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1"))
        *out = 1;
    else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0"))
        *out = 0;
    else
        return -1;
    return 0;
}

int gh_confkey_parse_mode(const char *v, unsigned *out)
{
    char *end;
    if (*v < '0' || *v > '7')
        return -1;
    errno = 0;
    unsigned long m = strtoul(v, &end, 8);
    if (errno != 0 || *end != '\0' || m > UINT_MAX)
        return -1;
    *out = (unsigned)m;
    return 0;
}

static int set_str(char **dst, const char *v)
{
    char *s = strdup(v);
    if (s == NULL)
        return GH_ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        if (msg != NULL && msglen > 0)                                                             \
            snprintf(msg, msglen, __VA_ARGS__);                                                    \
        return GH_EINVAL;                                                                          \
    } while (0)

int gh_confkey_set(const gh_confkey *k, void *base, const char *v, char *msg, size_t msglen)
{
    char *field = (char *)base + k->off;
    uint64_t n = 0;

    switch (k->kind) {
    case GH_CONFKEY_STR:
        return set_str((char **)(void *)field, v);
    case GH_CONFKEY_BOOL: {
        int b;
        if (gh_confkey_parse_bool(v, &b) != 0)
            FAIL("%s must be yes or no, not '%s'", k->name, v);
        *(int *)(void *)field = b;
        return 0;
    }
    case GH_CONFKEY_MODE: {
        unsigned m;
        if (gh_confkey_parse_mode(v, &m) != 0 || m > k->max)
            FAIL("%s must be an octal mode such as 0660, not '%s'", k->name, v);
        *(unsigned *)(void *)field = m;
        return 0;
    }
    case GH_CONFKEY_RATIO: {
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (errno != 0 || *end != '\0' || end == v || !(d >= 0.0 && d <= 1.0))
            FAIL("%s must be a number from 0 to 1, not '%s'", k->name, v);
        *(double *)(void *)field = d;
        return 0;
    }
    case GH_CONFKEY_UINT:
    case GH_CONFKEY_SIZE:
    case GH_CONFKEY_U64:
    case GH_CONFKEY_I64:
        if (gh_confkey_parse_u64(v, k->kind == GH_CONFKEY_SIZE, &n) != 0 || n < k->min ||
            n > k->max)
            FAIL("%s must be a number from %llu to %llu, not '%s'", k->name,
                 (unsigned long long)k->min, (unsigned long long)k->max, v);
        if (k->kind == GH_CONFKEY_UINT)
            *(unsigned *)(void *)field = (unsigned)n;
        else if (k->kind == GH_CONFKEY_SIZE)
            *(size_t *)(void *)field = (size_t)n;
        else if (k->kind == GH_CONFKEY_U64)
            *(uint64_t *)(void *)field = n;
        else
            *(int64_t *)(void *)field = (int64_t)n;
        return 0;
    }
    return GH_EINTERNAL;
}
