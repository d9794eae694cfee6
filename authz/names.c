/*
 * names.c: the loop's map login name -> user id, in front of the store's
 * name index, so that a check naming its user does not walk the LMDB B-tree
 * every time.
 *
 * The one thing to know: an entry is only ever a name the store resolved
 * (misses are not kept), and the map is emptied with the decision sets
 * whenever the store's authorization generation moves, which renaming or
 * deleting a user does (schema/store_user.c). Adding a user does not bump
 * it and needs nothing: a name the map does not hold is looked up in the
 * store. So a hit is what the store would answer in the same generation.
 */
#include <stdlib.h>
#include <string.h>

#include "authz/authz-int.h"
#include "schema/error.h"

void gh__names_clear(gh__names *m)
{
    m->n = 0;
    m->nstr = 0;
    if (m->tab)
        memset(m->tab, 0, (m->mask + 1) * sizeof(*m->tab));
}

void gh__names_free(gh__names *m)
{
    free(m->e);
    free(m->tab);
    free(m->str);
    memset(m, 0, sizeof(*m));
}

int gh__names_get(const gh__names *m, const char *name, size_t len, uint64_t hash, uint64_t *id)
{
    if (m->tab == NULL)
        return GH_ENOTFOUND;
    for (size_t j = hash & m->mask; m->tab[j]; j = (j + 1) & m->mask) {
        const gh__nent *e = &m->e[m->tab[j] - 1];
        if (e->hash == hash && e->len == len && memcmp(m->str + e->off, name, len) == 0) {
            *id = e->id;
            return 0;
        }
    }
    return GH_ENOTFOUND;
}

static int rehash(gh__names *m, size_t size)
{
    uint32_t *tab = calloc(size, sizeof(*tab));

    if (tab == NULL)
        return GH_ENOMEM;
    free(m->tab);
    m->tab = tab;
    m->mask = size - 1;
    for (size_t i = 0; i < m->n; i++) {
        size_t j = m->e[i].hash & m->mask;
        while (m->tab[j])
            j = (j + 1) & m->mask;
        m->tab[j] = (uint32_t)i + 1;
    }
    return 0;
}

int gh__names_put(gh__names *m, const char *name, size_t len, uint64_t hash, uint64_t id)
{
    int rc;

    if (m->n >= m->max)
        gh__names_clear(m); /* bounded: start over rather than evict */
    if ((rc = gh__grow(&m->e, &m->cape, m->n + 1, sizeof(*m->e))) != 0 ||
        (rc = gh__grow(&m->str, &m->capstr, m->nstr + len, 1)) != 0)
        return rc;
    if (m->tab == NULL || (m->n + 1) * 2 > m->mask + 1)
        if ((rc = rehash(m, m->tab ? (m->mask + 1) * 2 : 128)) != 0)
            return rc;
    memcpy(m->str + m->nstr, name, len);
    m->e[m->n] = (gh__nent){hash, id, (uint32_t)m->nstr, (uint32_t)len};
    m->nstr += len;
    size_t j = hash & m->mask;
    while (m->tab[j])
        j = (j + 1) & m->mask;
    m->tab[j] = (uint32_t)m->n + 1;
    m->n++;
    return 0;
}

size_t gh__names_bytes(const gh__names *m)
{
    return m->cape * sizeof(*m->e) + m->capstr + (m->tab ? (m->mask + 1) * sizeof(*m->tab) : 0);
}
