/*
 * sync_map.c: a small string-keyed hash map for the sync worker's model of
 * an upstream (key -> object, DN -> object, unresolved member -> groups).
 *
 * Chained buckets, doubled when the load passes 1. Keys are copied; values
 * belong to the caller. Not thread-safe: one worker owns each map.
 */
#include <stdlib.h>
#include <string.h>

#include "sync/sync-int.h"

static size_t hash_str(const char *s)
{
    size_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

void gh__sync_map_init(gh__sync_map *m)
{
    memset(m, 0, sizeof(*m));
}

void gh__sync_map_clear(gh__sync_map *m, void (*vfree)(void *))
{
    for (size_t i = 0; i < m->nb; i++) {
        gh__sync_map_ent *e = m->b[i];
        while (e != NULL) {
            gh__sync_map_ent *next = e->next;
            if (vfree != NULL)
                vfree(e->val);
            free(e);
            e = next;
        }
    }
    free(m->b);
    gh__sync_map_init(m);
}

static gh__sync_map_ent **slot(const gh__sync_map *m, const char *key, size_t h)
{
    gh__sync_map_ent **pp = &m->b[h & (m->nb - 1)];
    while (*pp != NULL && ((*pp)->hash != h || strcmp((*pp)->key, key) != 0))
        pp = &(*pp)->next;
    return pp;
}

void *gh__sync_map_get(const gh__sync_map *m, const char *key)
{
    if (m->nb == 0)
        return NULL;
    gh__sync_map_ent **pp = slot(m, key, hash_str(key));
    return *pp != NULL ? (*pp)->val : NULL;
}

static int grow(gh__sync_map *m)
{
    size_t nb = m->nb == 0 ? 64 : m->nb * 2;
    gh__sync_map_ent **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return -1;
    for (size_t i = 0; i < m->nb; i++) {
        gh__sync_map_ent *e = m->b[i];
        while (e != NULL) {
            gh__sync_map_ent *next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return 0;
}

int gh__sync_map_put(gh__sync_map *m, const char *key, void *val, void **old)
{
    size_t h = hash_str(key);
    if (old != NULL)
        *old = NULL;
    if (m->n >= m->nb && grow(m) != 0)
        return GH_ENOMEM;
    gh__sync_map_ent **pp = slot(m, key, h);
    if (*pp != NULL) {
        if (old != NULL)
            *old = (*pp)->val;
        (*pp)->val = val;
        return 0;
    }
    size_t len = strlen(key);
    gh__sync_map_ent *e = malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        return GH_ENOMEM;
    memcpy(e->key, key, len + 1);
    e->hash = h;
    e->val = val;
    e->next = NULL;
    *pp = e;
    m->n++;
    return 0;
}

void *gh__sync_map_del(gh__sync_map *m, const char *key)
{
    if (m->nb == 0)
        return NULL;
    gh__sync_map_ent **pp = slot(m, key, hash_str(key));
    gh__sync_map_ent *e = *pp;
    if (e == NULL)
        return NULL;
    void *val = e->val;
    *pp = e->next;
    free(e);
    m->n--;
    return val;
}

void gh__sync_map_each(const gh__sync_map *m, void (*cb)(const char *key, void *val, void *arg),
                       void *arg)
{
    for (size_t i = 0; i < m->nb; i++)
        for (gh__sync_map_ent *e = m->b[i]; e != NULL; e = e->next)
            cb(e->key, e->val, arg);
}

/* ---- string lists (parked references) ---- */

int gh__sync_keylist_add(gh__sync_keylist *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap == 0 ? 4 : l->cap * 2;
        char **v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return GH_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    if ((l->v[l->n] = strdup(s)) == NULL)
        return GH_ENOMEM;
    l->n++;
    return 0;
}

void gh__sync_keylist_free(gh__sync_keylist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

void gh__sync_keylist_vfree(void *p)
{
    gh__sync_keylist_free(p);
    free(p);
}
