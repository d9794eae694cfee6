/*
 * store_hot.c: the hot-path indices of users and groups, read in place.
 *
 * check, check.batch, whoami, auth's lookup and user.get need a handful of
 * fields of a user (state, tombstone, name, verifier) or a group's name, but
 * the records are JSON documents that cost microseconds to decode. So each
 * user and group also has a small binary value in DB_USER_HOT / DB_GROUP_HOT,
 * written in the same txn as the record, that a reader decodes with a few
 * byte loads and whose strings it borrows straight from the LMDB page.
 *
 * The one thing to know: the JSON record stays the truth. Every path that
 * writes DB_USERS or DB_GROUPS calls gh__user_hot_put / gh__group_hot_put (or
 * the matching delete) in the same txn; migrate.c rebuilds both indices from
 * the records (schema version 3, and the users' again at version 4, when
 * their value gained gid, display name and mail). Strings handed out here
 * point into the read snapshot and die with it; they are not NUL-terminated.
 *
 * User value (version 2), integers big-endian:
 *   [0] version  [1] state  [2] flags (bit 0: upstream origin)
 *   [3] name length  [4] verifier length  [5..8] uid
 *   [9..16] tombstone  [17..24] verifier_time  [25..28] gid
 *   [29..30] display name length  [31..32] mail length
 *   [33..] name, verifier, display name, mail
 * (version 1, schema 3, ended at verifier_time: [25..] name, verifier)
 * Group value (version 2): [0] version [1] name length [2..5] gid
 *   [6..13] tombstone [14..] name
 * (version 1 had no tombstone: [6..] name. Such values are still read, and
 * the tombstone is then unknown, -1: a reader that needs it decodes the
 * record; the next write of the group stores version 2.)
 */
#include <string.h>

#include "schema/log.h"
#include "schema/store-int.h"

#define HOT_VERSION 1       /* groups, without their tombstone */
#define GROUP_HOT_VERSION 2 /* groups, with it */
#define GROUP_HDR2 14
#define USER_HOT_VERSION 2 /* users */
#define USER_HDR 33
#define GROUP_HDR 6
#define HOT_UPSTREAM 0x01

int gh__user_hot_put(gh_txn *txn, const gh_user *u)
{
    uint8_t buf[USER_HDR + GH_NAME_MAX + GH_VERIFIER_MAX + 2 * GH_TEXT_MAX], key[8];
    size_t nl = strlen(u->name), vl = strlen(u->verifier);
    size_t dl = strlen(u->display_name), ml = strlen(u->mail), off;

    GH_ASSERT(nl <= GH_NAME_MAX && vl <= GH_VERIFIER_MAX && dl <= GH_TEXT_MAX && ml <= GH_TEXT_MAX);
    buf[0] = USER_HOT_VERSION;
    buf[1] = (uint8_t)u->state;
    buf[2] = u->origin[0] != '\0' ? HOT_UPSTREAM : 0;
    buf[3] = (uint8_t)nl;
    buf[4] = (uint8_t)vl;
    gh__put_u32(buf + 5, u->uid);
    gh__put_u64(buf + 9, (uint64_t)u->tombstone);
    gh__put_u64(buf + 17, (uint64_t)u->verifier_time);
    gh__put_u32(buf + 25, u->gid);
    buf[29] = (uint8_t)(dl >> 8);
    buf[30] = (uint8_t)dl;
    buf[31] = (uint8_t)(ml >> 8);
    buf[32] = (uint8_t)ml;
    off = USER_HDR;
    memcpy(buf + off, u->name, nl);
    off += nl;
    memcpy(buf + off, u->verifier, vl);
    off += vl;
    memcpy(buf + off, u->display_name, dl);
    off += dl;
    memcpy(buf + off, u->mail, ml);
    off += ml;
    gh__put_u64(key, u->id);
    return gh__put(txn, DB_USER_HOT, key, sizeof(key), buf, off, 0);
}

int gh__group_hot_put(gh_txn *txn, const gh_group *g)
{
    uint8_t buf[GROUP_HDR2 + GH_NAME_MAX], key[8];
    size_t nl = strlen(g->name);

    GH_ASSERT(nl <= GH_NAME_MAX);
    buf[0] = GROUP_HOT_VERSION;
    buf[1] = (uint8_t)nl;
    gh__put_u32(buf + 2, g->gid);
    gh__put_u64(buf + 6, (uint64_t)g->tombstone);
    memcpy(buf + GROUP_HDR2, g->name, nl);
    gh__put_u64(key, g->id);
    return gh__put(txn, DB_GROUP_HOT, key, sizeof(key), buf, GROUP_HDR2 + nl, 0);
}

int gh__hot_del(gh_txn *txn, int db, uint64_t id)
{
    uint8_t key[8];
    int rc;

    gh__put_u64(key, id);
    rc = gh__del(txn, db, key, sizeof(key), NULL, 0);
    return rc == GH_ENOTFOUND ? 0 : rc;
}

static int corrupt(gh_txn *txn, const char *what, uint64_t id)
{
    GH_LOGE("store: corrupt %s hot index value for id %llu", what, (unsigned long long)id);
    return gh_txn_fail(txn, GH_EINTERNAL, "corrupt %s index entry", what);
}

int gh_store_user_hot(gh_txn *txn, uint64_t id, gh_user_hot *out)
{
    uint8_t key[8];
    const uint8_t *p;
    size_t dl, ml;
    MDB_val v;
    int rc;

    memset(out, 0, sizeof(*out));
    gh__put_u64(key, id);
    rc = gh__get(txn, DB_USER_HOT, key, sizeof(key), &v);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no user with id %llu", (unsigned long long)id);
    if (rc != 0)
        return rc;
    p = v.mv_data;
    if (v.mv_size < USER_HDR || p[0] != USER_HOT_VERSION || p[1] > GH_USER_DISABLED)
        return corrupt(txn, "user", id);
    dl = (size_t)p[29] << 8 | p[30];
    ml = (size_t)p[31] << 8 | p[32];
    if (dl > GH_TEXT_MAX || ml > GH_TEXT_MAX ||
        v.mv_size != USER_HDR + (size_t)p[3] + p[4] + dl + ml)
        return corrupt(txn, "user", id);
    out->id = id;
    out->state = (gh_user_state)p[1];
    out->upstream = (p[2] & HOT_UPSTREAM) != 0;
    out->uid = gh__get_u32(p + 5);
    out->tombstone = (int64_t)gh__get_u64(p + 9);
    out->verifier_time = (int64_t)gh__get_u64(p + 17);
    out->name = (const char *)p + USER_HDR;
    out->name_len = p[3];
    out->verifier = (const char *)p + USER_HDR + p[3];
    out->verifier_len = p[4];
    out->gid = gh__get_u32(p + 25);
    out->display_name = out->verifier + p[4];
    out->display_name_len = dl;
    out->mail = out->display_name + dl;
    out->mail_len = ml;
    return 0;
}

int gh_store_user_hot_by_name(gh_txn *txn, const char *name, gh_user_hot *out)
{
    uint64_t id;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = gh_store_user_id(txn, name, &id);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no user named %s", name);
    if (rc != 0)
        return rc;
    return gh_store_user_hot(txn, id, out);
}

struct hot_walk {
    gh_store_user_hot_cb cb;
    void *arg;
};

static int hot_walk_one(gh_txn *txn, uint64_t id, void *arg)
{
    struct hot_walk *w = arg;
    gh_user_hot h;
    int rc = gh_store_user_hot(txn, id, &h);
    return rc != 0 ? rc : w->cb(&h, w->arg);
}

int gh_store_user_list_hot(gh_txn *txn, const char *after, gh_store_user_hot_cb cb, void *arg)
{
    struct hot_walk w = {cb, arg};
    return gh__name_walk(txn, DB_USER_NAME, NULL, after, 0, hot_walk_one, &w);
}

int gh_store_user_get_auth(gh_txn *txn, const char *name, gh_user *out)
{
    gh_user_hot h;
    int rc;

    rc = gh_store_user_hot_by_name(txn, name, &h);
    if (rc != 0)
        return rc;
    if (h.upstream) /* the upstream bind needs origin and DN: the whole record */
        return gh_store_user_get_by_id(txn, h.id, out);
    out->id = h.id;
    out->uid = h.uid;
    out->state = h.state;
    out->tombstone = h.tombstone;
    out->verifier_time = h.verifier_time;
    memcpy(out->name, h.name, h.name_len);
    out->name[h.name_len] = '\0';
    memcpy(out->verifier, h.verifier, h.verifier_len);
    out->verifier[h.verifier_len] = '\0';
    out->origin[0] = out->origin_key[0] = out->origin_dn[0] = '\0';
    return 0;
}

int gh_store_group_name(gh_txn *txn, uint64_t id, const char **name, size_t *len)
{
    uint32_t gid;
    return gh_store_group_hot(txn, id, &gid, name, len);
}

int gh_store_group_hot(gh_txn *txn, uint64_t id, uint32_t *gid, const char **name, size_t *len)
{
    int64_t tombstone;
    return gh_store_group_hot_tomb(txn, id, gid, name, len, &tombstone);
}

int gh_store_group_hot_tomb(gh_txn *txn, uint64_t id, uint32_t *gid, const char **name, size_t *len,
                            int64_t *tombstone)
{
    uint8_t key[8];
    const uint8_t *p;
    MDB_val v;
    int rc;

    *name = NULL;
    *len = 0;
    *gid = 0;
    *tombstone = -1;
    gh__put_u64(key, id);
    rc = gh__get(txn, DB_GROUP_HOT, key, sizeof(key), &v);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no group with id %llu", (unsigned long long)id);
    if (rc != 0)
        return rc;
    p = v.mv_data;
    if (v.mv_size >= GROUP_HDR2 && p[0] == GROUP_HOT_VERSION &&
        v.mv_size == GROUP_HDR2 + (size_t)p[1]) {
        *name = (const char *)p + GROUP_HDR2;
        *tombstone = (int64_t)gh__get_u64(p + 6);
    } else if (v.mv_size >= GROUP_HDR && p[0] == HOT_VERSION &&
               v.mv_size == GROUP_HDR + (size_t)p[1]) {
        *name = (const char *)p + GROUP_HDR; /* tombstone unknown: -1 */
    } else {
        return corrupt(txn, "group", id);
    }
    *len = p[1];
    *gid = gh__get_u32(p + 2);
    return 0;
}

int gh_store_group_id(gh_txn *txn, const char *name, uint64_t *id)
{
    if (name == NULL || name[0] == '\0' || strlen(name) > GH_NAME_MAX)
        return gh_txn_fail(txn, GH_ENOTFOUND, "no such group");
    return gh__get_id(txn, DB_GROUP_NAME, name, strlen(name), id);
}

int gh_store_user_in_group(gh_txn *txn, uint64_t user_id, uint64_t group_id)
{
    uint8_t ukey[8], gkey[8];
    MDB_cursor *cur = NULL;
    MDB_val k = {8, ukey}, d = {8, gkey};
    int rc;

    gh__put_u64(ukey, user_id);
    gh__put_u64(gkey, group_id);
    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, DB_USER_GROUPS_EFF), &cur), "cursor");
    if (rc != 0)
        return rc;
    rc = mdb_cursor_get(cur, &k, &d, MDB_GET_BOTH);
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND)
        return 0;
    return rc == 0 ? 1 : gh__mdb_err(txn, rc, "closure get");
}

int gh_store_snapshot_id(gh_txn *txn, uint64_t *id)
{
    if (!txn->rdonly)
        return GH_ENOTFOUND; /* a write txn changes under the same id */
    *id = (uint64_t)mdb_txn_id(txn->txn);
    return 0;
}
