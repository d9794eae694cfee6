/*
 * migrate.c: brings an older database up to GH_SCHEMA_VERSION on open, in the
 * one write txn that gh_store_open commits (all or nothing).
 *
 * The one thing to know: each step upgrades exactly one version and must be
 * safe on an empty (just created) database. Version 0 is the pre-release
 * layout: no meta "schema_version", records without "v", user logins under
 * "login" instead of "name" and no "state" (meaning active). The unique
 * indices are rebuilt from the records, since v0 writers did not keep them
 * reliably. Version 1 -> 2: token records may carry the peer that logged in
 * (v1 records still read), and the user -> token index is rebuilt from the
 * tokens, because revoking a user's sessions trusts it to name every token.
 * Version 2 -> 3 builds the binary hot-path values of users and
 * groups (store_hot.c) from the records; 3 -> 4 rebuilds the users' values,
 * which gained gid, display name and mail (read by the LDAP front-end).
 */
#include <stdlib.h>
#include <string.h>

#include "schema/log.h"
#include "schema/store-int.h"

typedef struct keylist {
    MDB_val *v;
    size_t n, cap;
} keylist;

static void keys_free(keylist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].mv_data);
    free(l->v);
}

static int keys_collect(gh_txn *txn, int db, keylist *l)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc;

    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, db), &cur), "cursor");
    if (rc != 0)
        goto done;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (l->n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 64;
            MDB_val *p = realloc(l->v, cap * sizeof(*p));
            if (p == NULL) {
                rc = GH_ENOMEM;
                goto done;
            }
            l->v = p;
            l->cap = cap;
        }
        l->v[l->n].mv_data = malloc(k.mv_size ? k.mv_size : 1);
        if (l->v[l->n].mv_data == NULL) {
            rc = GH_ENOMEM;
            goto done;
        }
        memcpy(l->v[l->n].mv_data, k.mv_data, k.mv_size);
        l->v[l->n].mv_size = k.mv_size;
        l->n++;
    }
    rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "migrate cursor");
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

static int drop(gh_txn *txn, int db)
{
    return gh__mdb_err(txn, mdb_drop(txn->txn, DBI(txn, db), 0), "drop");
}

static int user_v0(json_t *obj)
{
    json_t *login = json_object_get(obj, "login");

    if (login != NULL && json_object_get(obj, "name") == NULL) {
        if (json_object_set(obj, "name", login) != 0)
            return GH_ENOMEM;
        json_object_del(obj, "login");
    }
    if (json_object_get(obj, "state") == NULL &&
        json_object_set_new(obj, "state", json_string("active")) != 0)
        return GH_ENOMEM;
    return 0;
}

/* Index entries of one user or group record (rebuilt from scratch). */
static int index_record(gh_txn *txn, int kind, json_t *obj, const MDB_val *idkey)
{
    char okey[GH_ORIGIN_KEY_MAX];
    uint8_t num[4];
    gh_user u;
    gh_group g;
    int rc;

    if (kind == GH_MEMBER_USER) {
        rc = gh__user_from_json(obj, &u);
        if (rc != 0)
            return gh_txn_fail(txn, rc, "unreadable user record");
        if (u.name[0] == '\0')
            return gh_txn_fail(txn, GH_EINVAL, "user id %llu has no login name",
                               (unsigned long long)u.id);
        gh__put_u32(num, u.uid);
        rc = gh__put(txn, DB_USER_NAME, u.name, strlen(u.name), idkey->mv_data, 8, MDB_NOOVERWRITE);
        if (rc == 0)
            rc = gh__put(txn, DB_USER_UID, num, 4, idkey->mv_data, 8, MDB_NOOVERWRITE);
        if (rc == 0 && u.origin[0] != '\0')
            rc = gh__put(txn, DB_USER_ORIGIN, okey, gh__origin_key(okey, u.origin, u.origin_key),
                         idkey->mv_data, 8, MDB_NOOVERWRITE);
        if (rc == GH_EEXISTS)
            rc = gh_txn_fail(txn, rc, "duplicate login, uid or origin key for user %s", u.name);
        return rc;
    }
    rc = gh__group_from_json(obj, &g);
    if (rc != 0)
        return gh_txn_fail(txn, rc, "unreadable group record");
    gh__put_u32(num, g.gid);
    rc = gh__put(txn, DB_GROUP_NAME, g.name, strlen(g.name), idkey->mv_data, 8, MDB_NOOVERWRITE);
    if (rc == 0)
        rc = gh__put(txn, DB_GROUP_GID, num, 4, idkey->mv_data, 8, MDB_NOOVERWRITE);
    if (rc == 0 && g.origin[0] != '\0')
        rc = gh__put(txn, DB_GROUP_ORIGIN, okey, gh__origin_key(okey, g.origin, g.origin_key),
                     idkey->mv_data, 8, MDB_NOOVERWRITE);
    if (rc == GH_EEXISTS)
        rc = gh_txn_fail(txn, rc, "duplicate name, gid or origin key for group %s", g.name);
    return rc;
}

/* Rewrites every record of db at the current record version. kind: the
 * record's member kind when its indices are rebuilt, else 0. */
static int rewrite(gh_txn *txn, int db, int kind, size_t *count)
{
    keylist keys = {0};
    json_t *obj = NULL;
    int rc;

    rc = keys_collect(txn, db, &keys);
    if (rc != 0)
        goto done;
    for (size_t i = 0; i < keys.n; i++) {
        json_int_t v;
        rc = gh__json_get(txn, db, keys.v[i].mv_data, keys.v[i].mv_size, &obj);
        if (rc != 0)
            goto done;
        v = json_integer_value(json_object_get(obj, "v"));
        if (v < 1 && kind == GH_MEMBER_USER)
            rc = user_v0(obj);
        if (rc == 0 && kind != 0 && keys.v[i].mv_size == 8 && json_object_get(obj, "id") == NULL)
            rc = json_object_set_new(obj, "id",
                                     json_integer((json_int_t)gh__get_u64(keys.v[i].mv_data)))
                     ? GH_ENOMEM
                     : 0;
        if (rc == 0 && v < 1)
            rc = gh__json_put(txn, db, keys.v[i].mv_data, keys.v[i].mv_size, obj);
        if (rc == 0 && kind != 0)
            rc = index_record(txn, kind, obj, &keys.v[i]);
        json_decref(obj);
        obj = NULL;
        if (rc != 0)
            goto done;
    }
    *count += keys.n;
done:
    json_decref(obj);
    keys_free(&keys);
    return rc;
}

static int from_v0(gh_txn *txn)
{
    static const int indices[] = {DB_USER_NAME,  DB_USER_UID,  DB_USER_ORIGIN,
                                  DB_GROUP_NAME, DB_GROUP_GID, DB_GROUP_ORIGIN};
    size_t n = 0;
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < sizeof(indices) / sizeof(indices[0]); i++)
        rc = drop(txn, indices[i]);
    if (rc == 0)
        rc = rewrite(txn, DB_USERS, GH_MEMBER_USER, &n);
    if (rc == 0)
        rc = rewrite(txn, DB_GROUPS, GH_MEMBER_GROUP, &n);
    if (rc == 0)
        rc = rewrite(txn, DB_ROLES, 0, &n);
    if (rc == 0)
        rc = rewrite(txn, DB_BINDINGS, 0, &n);
    if (rc == 0 && n > 0) {
        GH_LOGI("store: migrated %zu records from schema version 0", n);
        rc = gh__log(txn, "schema.migrate", "0->1");
    }
    return rc;
}

static int from_v1(gh_txn *txn)
{
    size_t fixed = 0;
    int rc = gh__tokens_reindex(txn, &fixed);

    if (rc == 0 && fixed > 0) {
        GH_LOGI("store: user->token index rebuilt (%zu entries fixed)", fixed);
        rc = gh__log(txn, "schema.migrate", "1->2");
    }
    return rc;
}

/* Version 3 adds the binary hot-path values (store_hot.c) of every user and
 * group, built from the records. */
static int hot_build(gh_txn *txn, int db, size_t *count)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    json_t *obj = NULL;
    gh_user u;
    gh_group g;
    int rc;

    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, db), &cur), "cursor");
    if (rc != 0)
        goto done;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        json_error_t jerr;
        obj = json_loadb(v.mv_data, v.mv_size, 0, &jerr);
        if (obj == NULL || k.mv_size != 8) {
            rc = gh_txn_fail(txn, GH_EINTERNAL, "unreadable record in %s",
                             db == DB_USERS ? "users" : "groups");
            goto done;
        }
        /* Writes go to another db: the cursor over db stays valid. */
        if (db == DB_USERS) {
            rc = gh__user_from_json(obj, &u);
            u.id = gh__get_u64(k.mv_data);
            if (rc == 0)
                rc = gh__user_hot_put(txn, &u);
        } else {
            rc = gh__group_from_json(obj, &g);
            g.id = gh__get_u64(k.mv_data);
            if (rc == 0)
                rc = gh__group_hot_put(txn, &g);
        }
        json_decref(obj);
        obj = NULL;
        if (rc != 0)
            goto done;
        (*count)++;
    }
    rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "migrate cursor");
done:
    json_decref(obj);
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

static int from_v2(gh_txn *txn)
{
    size_t n = 0;
    int rc = drop(txn, DB_USER_HOT);

    if (rc == 0)
        rc = drop(txn, DB_GROUP_HOT);
    if (rc == 0)
        rc = hot_build(txn, DB_USERS, &n);
    if (rc == 0)
        rc = hot_build(txn, DB_GROUPS, &n);
    if (rc == 0 && n > 0) {
        GH_LOGI("store: built the hot-path index of %zu users and groups (schema version 3)", n);
        rc = gh__log(txn, "schema.migrate", "2->3");
    }
    return rc;
}

static int from_v3(gh_txn *txn)
{
    size_t n = 0;
    int rc = drop(txn, DB_USER_HOT);

    if (rc == 0)
        rc = hot_build(txn, DB_USERS, &n);
    if (rc == 0 && n > 0) {
        GH_LOGI("store: rebuilt the hot-path values of %zu users (schema version 4)", n);
        rc = gh__log(txn, "schema.migrate", "3->4");
    }
    return rc;
}

int gh__migrate(gh_txn *txn, uint32_t from)
{
    int rc = 0;

    GH_ASSERT(from < GH_SCHEMA_VERSION);
    if (from == 0)
        rc = from_v0(txn);
    if (rc == 0 && from <= 1)
        rc = from_v1(txn);
    if (rc == 0 && from <= 2)
        rc = from_v2(txn);
    if (rc == 0 && from == 3) /* from_v2 already built version-2 values */
        rc = from_v3(txn);
    /* Later steps: if (rc == 0 && from <= 4) rc = from_v4(txn); ... */
    return rc;
}
