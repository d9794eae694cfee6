/*
 * store_fold.c: users and groups by name with ASCII letters compared without
 * case (LDAP's uid and cn are caseIgnore; the store's names are not).
 *
 * The one thing to know: there is no second, folded index. The lookup is a
 * skip scan of the ordered name index over the name's spellings (each letter
 * upper or lower case; upper sorts first): seek the smallest spelling, and
 * from the key found compute the smallest spelling after it, seek again,
 * until none is left. A name with one spelling in the store costs a few
 * seeks whatever its length; the walk gives up with GH_ETOOBIG past
 * GH_STORE_FOLD_SEEKS (many names that differ only in case), and the caller
 * falls back to what it does without an index.
 */
#include <string.h>

#include "schema/store-int.h"

typedef struct fwalk {
    const unsigned char *name;
    size_t len;
    unsigned char lo[GH_NAME_MAX], hi[GH_NAME_MAX]; /* each position's spellings, lo <= hi */
    unsigned char t[GH_NAME_MAX];                   /* the next spelling to seek */
} fwalk;

/* t = k[0..q) + (the spelling after k[q] at q) + the smallest spellings after
 * it; 0, or 1 when no position before p can grow (no spelling is left). */
static int fold_next(fwalk *w, const unsigned char *k, size_t p)
{
    while (p-- > 0) {
        if (k[p] < w->hi[p]) { /* k[p] is lo[p] here: the one larger spelling */
            memcpy(w->t, k, p);
            w->t[p] = w->hi[p];
            memcpy(w->t + p + 1, w->lo + p + 1, w->len - p - 1);
            return 0;
        }
    }
    return 1;
}

/* Calls cb for every key that is a spelling of w->name, in index order. */
static int fold_scan(gh_txn *txn, MDB_cursor *cur, fwalk *w, gh_store_id_cb cb, void *arg)
{
    memcpy(w->t, w->lo, w->len);
    for (unsigned seeks = 1;; seeks++) {
        if (seeks > GH_STORE_FOLD_SEEKS)
            return GH_ETOOBIG;
        MDB_val k = {w->len, w->t}, v;
        int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND)
            return 0;
        if (rc != 0)
            return gh__mdb_err(txn, rc, "name cursor");
        const unsigned char *key = k.mv_data;
        size_t n = k.mv_size < w->len ? k.mv_size : w->len, p = 0;
        while (p < n && (key[p] == w->lo[p] || key[p] == w->hi[p]))
            p++;
        if (p < n) { /* key[p] is no spelling: the next one above it */
            if (key[p] < w->lo[p] || key[p] < w->hi[p]) {
                memcpy(w->t, key, p);
                w->t[p] = key[p] < w->lo[p] ? w->lo[p] : w->hi[p];
                memcpy(w->t + p + 1, w->lo + p + 1, w->len - p - 1);
                continue;
            }
            if (fold_next(w, key, p))
                return 0;
            continue;
        }
        if (k.mv_size < w->len) { /* a shorter name: the spellings it starts */
            memcpy(w->t, key, p);
            memcpy(w->t + p, w->lo + p, w->len - p);
            continue;
        }
        if (k.mv_size == w->len) { /* a spelling */
            if (v.mv_size != 8)
                return gh_txn_fail(txn, GH_EINTERNAL, "corrupt name index");
            if ((rc = cb(gh__get_u64(v.mv_data), arg)) != 0)
                return rc;
        }
        /* past the spelling key[0..len): the next one */
        if (fold_next(w, key, w->len))
            return 0;
    }
}

static int ids_nocase(gh_txn *txn, int db, const char *name, gh_store_id_cb cb, void *arg)
{
    fwalk w;
    MDB_cursor *cur = NULL;
    int rc;
    w.name = (const unsigned char *)name;
    w.len = name ? strlen(name) : 0;
    if (w.len == 0 || w.len > GH_NAME_MAX)
        return 0;
    for (size_t i = 0; i < w.len; i++) {
        unsigned char ch = w.name[i];
        w.lo[i] = w.hi[i] = ch;
        if (ch >= 'a' && ch <= 'z')
            w.lo[i] = (unsigned char)(ch - 'a' + 'A');
        else if (ch >= 'A' && ch <= 'Z')
            w.hi[i] = (unsigned char)(ch - 'A' + 'a');
    }
    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, db), &cur), "cursor");
    if (rc != 0)
        return rc;
    rc = fold_scan(txn, cur, &w, cb, arg);
    mdb_cursor_close(cur);
    return rc > 0 ? 0 : rc;
}

int gh_store_user_ids_nocase(gh_txn *txn, const char *name, gh_store_id_cb cb, void *arg)
{
    return ids_nocase(txn, DB_USER_NAME, name, cb, arg);
}

int gh_store_group_ids_nocase(gh_txn *txn, const char *name, gh_store_id_cb cb, void *arg)
{
    return ids_nocase(txn, DB_GROUP_NAME, name, cb, arg);
}
