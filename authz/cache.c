/*
 * cache.c: the bounded map user id -> decision set (gh__uset). A
 * linear-probing table maps ids to sets; the sets are also listed in a dense
 * array, where the CLOCK hand picks a victim (a set not used since the hand
 * last passed) when the map is full. The map is bounded by a count and by
 * the bytes its sets hold.
 *
 * The one thing to know: a table slot holds the user id and the set's
 * pointer, so a lookup reads one table line and then the set (no hop through
 * the dense array), and a removal shifts the following probe run back (no
 * tombstones), so lookups stay short however many evictions happen. Invalidation is wholesale
 * (gh__cache_clear) and belongs to the caller, who watches the store's
 * authorization generation.
 */
#include <stdlib.h>
#include <string.h>

#include "authz/authz-int.h"
#include "schema/error.h"

static size_t slot_of(const gh__cache *c, uint64_t id)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ULL) >> 17) & c->mask;
}

void gh__cache_init(gh__cache *c, size_t max, size_t max_bytes)
{
    memset(c, 0, sizeof(*c));
    c->max = max ? max : 1;
    c->max_bytes = max_bytes ? max_bytes : 1;
}

gh__uset *gh__cache_get(gh__cache *c, uint64_t user_id)
{
    if (c->tab == NULL)
        return NULL;
    for (size_t j = slot_of(c, user_id); c->tab[j].set; j = (j + 1) & c->mask) {
        if (c->tab[j].user_id == user_id) {
            gh__uset *s = c->tab[j].set; /* no hop through the dense array */
            s->ref = 1;
            return s;
        }
    }
    return NULL;
}

static void tab_insert(gh__cache *c, size_t dense)
{
    uint64_t id = c->sets[dense]->user_id;
    size_t j = slot_of(c, id);

    while (c->tab[j].set)
        j = (j + 1) & c->mask;
    c->tab[j].user_id = id;
    c->tab[j].set = c->sets[dense];
}

/* Removes the table entry pointing at dense, shifting the rest of its probe
 * run back so no lookup stops early. */
static void tab_remove(gh__cache *c, size_t dense)
{
    size_t i = slot_of(c, c->sets[dense]->user_id), j, k;

    while (c->tab[i].set != c->sets[dense])
        i = (i + 1) & c->mask;
    c->tab[i].set = NULL;
    for (j = (i + 1) & c->mask; c->tab[j].set; j = (j + 1) & c->mask) {
        k = slot_of(c, c->tab[j].user_id);
        /* move j into the hole at i unless its home k lies cyclically in (i, j] */
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            c->tab[i] = c->tab[j];
            c->tab[j].set = NULL;
            i = j;
        }
    }
}

static int tab_resize(gh__cache *c, size_t size)
{
    gh__cslot *tab = calloc(size, sizeof(*tab));

    if (tab == NULL)
        return GH_ENOMEM;
    free(c->tab);
    c->tab = tab;
    c->mask = size - 1;
    for (size_t i = 0; i < c->n; i++)
        tab_insert(c, i);
    return 0;
}

/* CLOCK: clears reference bits until an unreferenced set comes up, frees
 * it, and moves the last dense entry into its place. */
static void evict_one(gh__cache *c)
{
    size_t v, last = c->n - 1;

    for (;;) {
        if (c->hand >= c->n)
            c->hand = 0;
        if (!c->sets[c->hand]->ref)
            break;
        c->sets[c->hand]->ref = 0;
        c->hand++;
    }
    v = c->hand;
    tab_remove(c, v);
    c->bytes -= gh__uset_bytes(c->sets[v]);
    gh__uset_free(c->sets[v]);
    if (v != last) /* the table points at the set, not its place */
        c->sets[v] = c->sets[last];
    c->n--;
}

int gh__cache_put(gh__cache *c, gh__uset *s)
{
    size_t bytes = gh__uset_bytes(s);
    int rc = 0;

    s->ref = 1;
    /* room by count and by bytes (a set larger than the budget still gets
     * in, alone: the next put evicts it) */
    while (c->n > 0 && (c->n >= c->max || c->bytes + bytes > c->max_bytes))
        evict_one(c);
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 64;
        gh__uset **ns;

        if (ncap > c->max)
            ncap = c->max;
        ns = realloc(c->sets, ncap * sizeof(*ns));
        if (ns == NULL) {
            rc = GH_ENOMEM;
            goto fail;
        }
        c->sets = ns;
        c->cap = ncap;
    }
    if (c->tab == NULL || (c->n + 1) * 2 > c->mask + 1) {
        size_t size = c->tab ? (c->mask + 1) * 2 : 128;
        if ((rc = tab_resize(c, size)) != 0)
            goto fail;
    }
    c->sets[c->n] = s;
    tab_insert(c, c->n);
    c->n++;
    c->bytes += bytes;
    return 0;
fail:
    gh__uset_free(s);
    return rc;
}

void gh__cache_clear(gh__cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        gh__uset_free(c->sets[i]);
    c->n = 0;
    c->hand = 0;
    c->bytes = 0;
    if (c->tab)
        memset(c->tab, 0, (c->mask + 1) * sizeof(*c->tab));
}

void gh__cache_destroy(gh__cache *c)
{
    gh__cache_clear(c);
    free(c->sets);
    free(c->tab);
    memset(c, 0, sizeof(*c));
}
