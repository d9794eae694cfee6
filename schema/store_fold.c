/*
 * store_fold.c: users and groups by name with ASCII letters compared without
 * case (LDAP's uid and cn are caseIgnore; the store's names are not).
 *
 * The one thing to know: there is no second, folded index. The lookup walks
 * the ordered name index along the spellings that exist: at each letter it
 * seeks (MDB_SET_RANGE) the prefix with that letter in upper and in lower
 * case and follows only those some name starts with. A name of k letters
 * with one spelling in the store costs at most 2k seeks; the walk gives up
 * with GH_ETOOBIG past GH_STORE_FOLD_SEEKS (many names that differ only in
 * case), and the caller falls back to what it does without an index.
 */
#include <string.h>

#include "schema/store-int.h"

typedef struct fwalk {
    gh_txn *txn;
    MDB_cursor *cur;
    const char *name;
    size_t len;
    char buf[GH_NAME_MAX + 1];
    unsigned seeks;
    gh_store_id_cb cb;
    void *arg;
} fwalk;

/* Follows every spelling of name[i..] after buf[0..i): 0 to go on, 1 when
 * cb said enough, or an error. */
static int fold_walk(fwalk *w, size_t i)
{
    unsigned char ch = (unsigned char)w->name[i];
    unsigned char alt[2] = {ch, ch};
    if (ch >= 'a' && ch <= 'z')
        alt[0] = (unsigned char)(ch - 'a' + 'A'); /* upper first: index order */
    else if (ch >= 'A' && ch <= 'Z')
        alt[1] = (unsigned char)(ch - 'A' + 'a');
    for (int a = 0; a < 2; a++) {
        if (a == 1 && alt[1] == alt[0])
            break;
        if (++w->seeks > GH_STORE_FOLD_SEEKS)
            return GH_ETOOBIG;
        w->buf[i] = (char)alt[a];
        MDB_val k = {i + 1, w->buf}, v;
        int rc = mdb_cursor_get(w->cur, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND)
            continue;
        if (rc != 0)
            return gh__mdb_err(w->txn, rc, "name cursor");
        if (k.mv_size < i + 1 || memcmp(k.mv_data, w->buf, i + 1) != 0)
            continue; /* no name starts with this spelling */
        if (i + 1 < w->len) {
            rc = fold_walk(w, i + 1);
        } else if (k.mv_size == w->len) { /* a prefix sorts before its extensions */
            if (v.mv_size != 8)
                return gh_txn_fail(w->txn, GH_EINTERNAL, "corrupt name index");
            rc = w->cb(gh__get_u64(v.mv_data), w->arg);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int ids_nocase(gh_txn *txn, int db, const char *name, gh_store_id_cb cb, void *arg)
{
    fwalk w = {.txn = txn, .name = name, .len = name ? strlen(name) : 0, .cb = cb, .arg = arg};
    int rc;
    if (w.len == 0 || w.len > GH_NAME_MAX)
        return 0;
    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, db), &w.cur), "cursor");
    if (rc != 0)
        return rc;
    rc = fold_walk(&w, 0);
    mdb_cursor_close(w.cur);
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
