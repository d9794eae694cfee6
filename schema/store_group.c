/*
 * store_group.c: group records, direct memberships (both directions) and the
 * per-user effective-group closure.
 *
 * The one thing to know: DB_USER_GROUPS_EFF is derived data kept exact at
 * write time. Every change to a membership edge or a group's existence must
 * recompute (or extend) the closure of every user below the changed edge, in
 * the same txn; reads trust it blindly. Nesting cycles are refused on insert,
 * so upward and downward walks terminate; they still keep a visited set.
 */
#include <stdio.h>
#include <string.h>

#include "schema/log.h"
#include "schema/store-int.h"

#define ALL_GROUP_FIELDS                                                                           \
    (GH_GF_NAME | GH_GF_GID | GH_GF_DESCRIPTION | GH_GF_ORIGIN | GH_GF_TOMBSTONE | GH_GF_UPSTREAM)

/* ---- dupsort walks ---- */

typedef int (*dup_fn)(const MDB_val *v, void *arg);

/* Calls fn for every duplicate of key in db; fn must not write to db. */
static const gh__ident_kind ident_kind = {"group", "gid", DB_GROUP_NAME, DB_GROUP_GID,
                                          DB_GROUP_ORIGIN};

static int dup_walk(gh_txn *txn, int db, const void *key, size_t klen, dup_fn fn, void *arg)
{
    MDB_cursor *cur = NULL;
    MDB_val k = {klen, (void *)key}, v;
    int rc;

    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, db), &cur), "cursor");
    if (rc != 0)
        goto done;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        rc = fn(&v, arg);
        if (rc != 0)
            goto done;
    }
    rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "dup cursor");
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

static int add_id(const MDB_val *v, void *arg)
{
    if (v->mv_size != 8)
        return GH_EINTERNAL;
    return gh__idset_add(arg, gh__get_u64(v->mv_data)) < 0 ? GH_ENOMEM : 0;
}

/* Adds to set every group reachable upward from the groups already in it. */
static int ancestors(gh_txn *txn, gh__idset *set)
{
    uint8_t key[GH_MEMBER_KEY_LEN];
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < set->n; i++) {
        gh__member_key(key, (gh_member){GH_MEMBER_GROUP, set->ids[i]});
        rc = dup_walk(txn, DB_MEMBER_OF, key, sizeof(key), add_id, set);
    }
    return rc;
}

struct down {
    gh__idset groups, users;
};

static int down_add(const MDB_val *v, void *arg)
{
    struct down *d = arg;
    gh_member m;

    if (gh__member_from_key(v->mv_data, v->mv_size, &m) != 0)
        return GH_EINTERNAL;
    return gh__idset_add(m.kind == GH_MEMBER_USER ? &d->users : &d->groups, m.id) < 0 ? GH_ENOMEM
                                                                                      : 0;
}

/* Users below group_id (directly or through subgroups), each once. */
static int effective_users(gh_txn *txn, uint64_t group_id, gh__idset *users)
{
    struct down d;
    uint8_t key[8];
    int rc;

    gh__idset_init(&d.groups);
    d.users = *users;
    rc = gh__idset_add(&d.groups, group_id) < 0 ? GH_ENOMEM : 0;
    for (size_t i = 0; rc == 0 && i < d.groups.n; i++) {
        gh__put_u64(key, d.groups.ids[i]);
        rc = dup_walk(txn, DB_MEMBERS, key, sizeof(key), down_add, &d);
    }
    *users = d.users;
    gh__idset_free(&d.groups);
    return rc;
}

int gh__closure_recompute(gh_txn *txn, uint64_t user_id)
{
    uint8_t mkey[GH_MEMBER_KEY_LEN], ukey[8], gkey[8];
    gh__idset set;
    int rc;

    gh__idset_init(&set);
    gh__member_key(mkey, (gh_member){GH_MEMBER_USER, user_id});
    rc = dup_walk(txn, DB_MEMBER_OF, mkey, sizeof(mkey), add_id, &set);
    if (rc == 0)
        rc = ancestors(txn, &set);
    if (rc != 0)
        goto done;
    gh__put_u64(ukey, user_id);
    rc = gh__del(txn, DB_USER_GROUPS_EFF, ukey, 8, NULL, 0);
    if (rc != 0 && rc != GH_ENOTFOUND)
        goto done;
    rc = 0;
    for (size_t i = 0; rc == 0 && i < set.n; i++) {
        gh__put_u64(gkey, set.ids[i]);
        rc = gh__put(txn, DB_USER_GROUPS_EFF, ukey, 8, gkey, 8, 0);
    }
done:
    gh__idset_free(&set);
    return rc;
}

/* ---- group records ---- */

static int group_valid(gh_txn *txn, const gh_group *g)
{
    int rc;

    if ((rc = gh__terminated(txn, "name", g->name, sizeof(g->name))) != 0 ||
        (rc = gh__terminated(txn, "description", g->description, sizeof(g->description))) != 0 ||
        (rc = gh__terminated(txn, "origin_sid", g->origin_sid, sizeof(g->origin_sid))) != 0)
        return rc;
    if (gh_schema_name_valid(g->name, txn->err, sizeof(txn->err)) != 0 ||
        gh_schema_text_valid("description", g->description, GH_TEXT_MAX, txn->err,
                             sizeof(txn->err)) != 0)
        return GH_EINVAL;
    return gh__origin_valid(txn, g->origin, g->origin_key, g->origin_dn);
}

static int load(gh_txn *txn, uint64_t id, json_t **obj, gh_group *g)
{
    uint8_t key[8];
    int rc;

    gh__put_u64(key, id);
    rc = gh__json_get(txn, DB_GROUPS, key, sizeof(key), obj);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no group with id %llu", (unsigned long long)id);
    if (rc == 0 && g != NULL) {
        rc = gh__group_from_json(*obj, g);
        if (rc != 0) {
            json_decref(*obj);
            *obj = NULL;
        }
    }
    return rc;
}

int gh_store_group_get_by_id(gh_txn *txn, uint64_t id, gh_group *out)
{
    json_t *obj = NULL;
    int rc = load(txn, id, &obj, out);

    json_decref(obj);
    return rc;
}

int gh_store_group_get(gh_txn *txn, const char *name, gh_group *out)
{
    uint64_t id;
    int rc;

    if (name == NULL || name[0] == '\0' || strlen(name) > GH_NAME_MAX)
        return gh_txn_fail(txn, GH_ENOTFOUND, "no such group");
    rc = gh__get_id(txn, DB_GROUP_NAME, name, strlen(name), &id);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no group named %s", name);
    if (rc != 0)
        return rc;
    return gh_store_group_get_by_id(txn, id, out);
}

int gh_store_group_get_by_gid(gh_txn *txn, uint32_t gid, gh_group *out)
{
    uint8_t key[4];
    uint64_t id;
    int rc;

    gh__put_u32(key, gid);
    rc = gh__get_id(txn, DB_GROUP_GID, key, sizeof(key), &id);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no group with gid %u", gid);
    if (rc != 0)
        return rc;
    return gh_store_group_get_by_id(txn, id, out);
}

int gh_store_group_get_by_origin(gh_txn *txn, const char *upstream, const char *key, gh_group *out)
{
    char okey[GH_ORIGIN_KEY_MAX];
    uint64_t id;
    int rc;

    if (upstream == NULL || upstream[0] == '\0' || strlen(upstream) > GH_NAME_MAX || key == NULL ||
        key[0] == '\0' || strlen(key) > GH_KEY_MAX)
        return gh_txn_fail(txn, GH_ENOTFOUND, "no such group");
    rc = gh__get_id(txn, DB_GROUP_ORIGIN, okey, gh__origin_key(okey, upstream, key), &id);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no group from %s with key %s", upstream, key);
    if (rc != 0)
        return rc;
    return gh_store_group_get_by_id(txn, id, out);
}

int gh_store_group_add(gh_txn *txn, gh_group *g)
{
    char okey[GH_ORIGIN_KEY_MAX];
    uint8_t idkey[8], gidkey[4];
    json_t *obj = NULL;
    gh_group n = *g;
    int rc;

    rc = group_valid(txn, &n);
    if (rc != 0)
        goto done;
    rc = gh__taken(txn, DB_GROUP_NAME, n.name, strlen(n.name), 0);
    if (rc == GH_EEXISTS) {
        rc = gh_txn_fail(txn, rc, "group %s already exists", n.name);
        goto done;
    }
    if (rc != 0)
        goto done;
    if (n.origin[0] != '\0') {
        rc = gh__taken(txn, DB_GROUP_ORIGIN, okey, gh__origin_key(okey, n.origin, n.origin_key), 0);
        if (rc == GH_EEXISTS)
            rc = gh_txn_fail(txn, rc, "a group from %s with key %s already exists", n.origin,
                             n.origin_key);
        if (rc != 0)
            goto done;
    }
    if (n.gid == 0) {
        rc = gh__assign_number(txn, "next_gid", DB_GROUP_GID, &n.gid);
        if (rc != 0)
            goto done;
    } else {
        gh__put_u32(gidkey, n.gid);
        rc = gh__taken(txn, DB_GROUP_GID, gidkey, sizeof(gidkey), 0);
        if (rc == GH_EEXISTS)
            rc = gh_txn_fail(txn, rc, "gid %u is already taken", n.gid);
        if (rc != 0)
            goto done;
    }
    rc = gh__next_id(txn, "next_group_id", DB_GROUPS, &n.id);
    if (rc != 0)
        goto done;
    n.created = n.modified = txn->now;
    obj = json_object();
    if (obj == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    gh__put_u64(idkey, n.id);
    gh__put_u32(gidkey, n.gid);
    if ((rc = gh__group_to_json(obj, &n, ALL_GROUP_FIELDS)) != 0 ||
        (rc = gh__json_put(txn, DB_GROUPS, idkey, sizeof(idkey), obj)) != 0 ||
        (rc = gh__group_hot_put(txn, &n)) != 0 ||
        (rc = gh__put(txn, DB_GROUP_NAME, n.name, strlen(n.name), idkey, 8, 0)) != 0 ||
        (rc = gh__put(txn, DB_GROUP_GID, gidkey, 4, idkey, 8, 0)) != 0)
        goto done;
    if (n.origin[0] != '\0') {
        rc = gh__put(txn, DB_GROUP_ORIGIN, okey, gh__origin_key(okey, n.origin, n.origin_key),
                     idkey, 8, 0);
        if (rc != 0)
            goto done;
    }
    rc = gh__log(txn, "group.add", "%s", n.name);
    if (rc == 0)
        *g = n;
done:
    json_decref(obj);
    return rc;
}

int gh_store_group_update(gh_txn *txn, const gh_group *g, unsigned mask)
{
    uint8_t idkey[8];
    json_t *obj = NULL;
    gh_group old, n;
    int rc, logged = 0;

    if (mask & ~(unsigned)ALL_GROUP_FIELDS)
        return gh_txn_fail(txn, GH_EINVAL, "unknown group field in update mask");
    rc = load(txn, g->id, &obj, &old);
    if (rc != 0)
        goto done;
    n = old;
    if (mask & GH_GF_NAME)
        memcpy(n.name, g->name, sizeof(n.name));
    if (mask & GH_GF_GID)
        n.gid = g->gid;
    if (mask & GH_GF_DESCRIPTION)
        memcpy(n.description, g->description, sizeof(n.description));
    if (mask & GH_GF_ORIGIN) {
        memcpy(n.origin, g->origin, sizeof(n.origin));
        memcpy(n.origin_key, g->origin_key, sizeof(n.origin_key));
        memcpy(n.origin_dn, g->origin_dn, sizeof(n.origin_dn));
    }
    if (mask & GH_GF_TOMBSTONE)
        n.tombstone = g->tombstone;
    if (mask & GH_GF_UPSTREAM)
        memcpy(n.origin_sid, g->origin_sid, sizeof(n.origin_sid));
    rc = group_valid(txn, &n);
    if (rc != 0)
        goto done;
    if ((mask & GH_GF_GID) && n.gid == 0) {
        rc = gh_txn_fail(txn, GH_EINVAL, "gid 0 is not a valid gid");
        goto done;
    }
    gh__put_u64(idkey, n.id);
    rc = gh__ident_move(txn, &ident_kind, n.id,
                        &(gh__ident){old.name, old.gid, old.origin, old.origin_key},
                        &(gh__ident){n.name, n.gid, n.origin, n.origin_key});
    if (rc != 0)
        goto done;
    n.modified = txn->now;
    rc = gh__group_to_json(obj, &n, mask);
    if (rc == 0)
        rc = gh__json_put(txn, DB_GROUPS, idkey, sizeof(idkey), obj);
    if (rc == 0)
        rc = gh__group_hot_put(txn, &n);
    if (rc == 0 && (mask & (GH_GF_NAME | GH_GF_TOMBSTONE)))
        rc = gh__authz_bump(txn);
    if (rc == 0 && strcmp(n.name, old.name) != 0) {
        rc = gh__log(txn, "group.rename", "%s->%s", old.name, n.name);
        logged = 1;
    }
    if (rc == 0 && (!logged || (mask & ~(unsigned)GH_GF_NAME)))
        rc = gh__log(txn, "group.set", "%s", n.name);
done:
    json_decref(obj);
    return rc;
}

int gh__member_drop_all(gh_txn *txn, gh_member m)
{
    uint8_t mkey[GH_MEMBER_KEY_LEN], gkey[8];
    gh__idset groups;
    int rc;

    gh__idset_init(&groups);
    gh__member_key(mkey, m);
    rc = dup_walk(txn, DB_MEMBER_OF, mkey, sizeof(mkey), add_id, &groups);
    for (size_t i = 0; rc == 0 && i < groups.n; i++) {
        gh__put_u64(gkey, groups.ids[i]);
        rc = gh__del(txn, DB_MEMBERS, gkey, 8, mkey, sizeof(mkey));
        if (rc == GH_ENOTFOUND)
            rc = 0;
    }
    if (rc == 0 && groups.n > 0)
        rc = gh__del(txn, DB_MEMBER_OF, mkey, sizeof(mkey), NULL, 0);
    if (rc == 0 && m.kind == GH_MEMBER_USER) {
        gh__put_u64(gkey, m.id);
        rc = gh__del(txn, DB_USER_GROUPS_EFF, gkey, 8, NULL, 0);
        if (rc == GH_ENOTFOUND)
            rc = 0;
    }
    gh__idset_free(&groups);
    return rc;
}

int gh_store_group_del(gh_txn *txn, uint64_t id)
{
    char okey[GH_ORIGIN_KEY_MAX];
    uint8_t idkey[8], gidkey[4], mkey[GH_MEMBER_KEY_LEN];
    struct down d;
    gh__idset affected;
    json_t *obj = NULL;
    gh_group g;
    int rc;

    gh__idset_init(&affected);
    gh__idset_init(&d.groups);
    gh__idset_init(&d.users);
    rc = load(txn, id, &obj, &g);
    if (rc != 0)
        goto done;
    /* Users below g lose g (and maybe its ancestors): recompute them last. */
    rc = effective_users(txn, id, &affected);
    if (rc != 0)
        goto done;
    /* Edges from g down to its direct members. */
    gh__put_u64(idkey, id);
    rc = dup_walk(txn, DB_MEMBERS, idkey, 8, down_add, &d);
    for (size_t i = 0; rc == 0 && i < d.users.n + d.groups.n; i++) {
        gh_member m = i < d.users.n ? (gh_member){GH_MEMBER_USER, d.users.ids[i]}
                                    : (gh_member){GH_MEMBER_GROUP, d.groups.ids[i - d.users.n]};
        gh__member_key(mkey, m);
        rc = gh__del(txn, DB_MEMBER_OF, mkey, sizeof(mkey), idkey, 8);
        if (rc == GH_ENOTFOUND)
            rc = 0;
    }
    if (rc == 0) {
        rc = gh__del(txn, DB_MEMBERS, idkey, 8, NULL, 0);
        if (rc == GH_ENOTFOUND)
            rc = 0;
    }
    /* Edges from g up to the groups containing it, then its bindings. */
    if (rc == 0)
        rc = gh__member_drop_all(txn, (gh_member){GH_MEMBER_GROUP, id});
    if (rc == 0)
        rc = gh__bindings_drop_subject(txn, (gh_member){GH_MEMBER_GROUP, id});
    if (rc != 0)
        goto done;
    gh__put_u32(gidkey, g.gid);
    if ((rc = gh__del(txn, DB_GROUPS, idkey, 8, NULL, 0)) != 0 ||
        (rc = gh__hot_del(txn, DB_GROUP_HOT, id)) != 0 ||
        (rc = gh__reindex(txn, DB_GROUP_NAME, g.name, strlen(g.name), NULL, 0, idkey)) != 0 ||
        (rc = gh__reindex(txn, DB_GROUP_GID, gidkey, 4, NULL, 0, idkey)) != 0)
        goto done;
    if (g.origin[0] != '\0') {
        rc = gh__reindex(txn, DB_GROUP_ORIGIN, okey, gh__origin_key(okey, g.origin, g.origin_key),
                         NULL, 0, idkey);
        if (rc != 0)
            goto done;
    }
    for (size_t i = 0; rc == 0 && i < affected.n; i++)
        rc = gh__closure_recompute(txn, affected.ids[i]);
    if (rc == 0)
        rc = gh__authz_bump(txn);
    if (rc == 0)
        rc = gh__log(txn, "group.del", "%s", g.name);
done:
    gh__idset_free(&affected);
    gh__idset_free(&d.groups);
    gh__idset_free(&d.users);
    json_decref(obj);
    return rc;
}

struct group_walk {
    gh_store_group_cb cb;
    void *arg;
};

static int group_walk_one(gh_txn *txn, uint64_t id, void *arg)
{
    struct group_walk *w = arg;
    gh_group rec;
    int rc = gh_store_group_get_by_id(txn, id, &rec);
    return rc != 0 ? rc : w->cb(&rec, w->arg);
}

int gh_store_group_list(gh_txn *txn, const char *prefix, const char *after, size_t limit,
                        gh_store_group_cb cb, void *arg)
{
    struct group_walk w = {cb, arg};
    return gh__name_walk(txn, DB_GROUP_NAME, prefix, after, limit, group_walk_one, &w);
}

int gh_store_group_count(gh_txn *txn, uint64_t *count)
{
    MDB_stat st;
    int rc = gh__mdb_err(txn, mdb_stat(txn->txn, DBI(txn, DB_GROUPS), &st), "stat");

    *count = rc == 0 ? st.ms_entries : 0;
    return rc;
}

/* ---- memberships ---- */

int gh_store_member_add(gh_txn *txn, uint64_t group_id, gh_member m)
{
    uint8_t mkey[GH_MEMBER_KEY_LEN], gkey[8], ukey[8], akey[8];
    char label[GH_NAME_MAX + 16];
    gh__idset anc, users;
    gh_group g;
    int rc;

    gh__idset_init(&anc);
    gh__idset_init(&users);
    rc = gh_store_group_get_by_id(txn, group_id, &g);
    if (rc == 0)
        rc = gh__subject_exists(txn, m);
    if (rc != 0)
        goto done;
    /* g and every group above it: the groups m's users gain. */
    rc = gh__idset_add(&anc, group_id) < 0 ? GH_ENOMEM : ancestors(txn, &anc);
    if (rc != 0)
        goto done;
    if (m.kind == GH_MEMBER_GROUP && gh__idset_has(&anc, m.id)) {
        gh__member_label(txn, m, label, sizeof(label));
        rc = gh_txn_fail(txn, GH_ECYCLE, "adding %s to %s would create a nesting cycle", label,
                         g.name);
        goto done;
    }
    gh__member_key(mkey, m);
    gh__put_u64(gkey, group_id);
    rc = gh__put(txn, DB_MEMBERS, gkey, 8, mkey, sizeof(mkey), MDB_NODUPDATA);
    if (rc == GH_EEXISTS) {
        gh__member_label(txn, m, label, sizeof(label));
        rc = gh_txn_fail(txn, rc, "%s is already a member of %s", label, g.name);
    }
    if (rc == 0)
        rc = gh__put(txn, DB_MEMBER_OF, mkey, sizeof(mkey), gkey, 8, MDB_NODUPDATA);
    if (rc != 0)
        goto done;
    if (m.kind == GH_MEMBER_USER)
        rc = gh__idset_add(&users, m.id) < 0 ? GH_ENOMEM : 0;
    else
        rc = effective_users(txn, m.id, &users);
    /* Adding an edge only extends closures: union in g and its ancestors. */
    for (size_t i = 0; rc == 0 && i < users.n; i++) {
        gh__put_u64(ukey, users.ids[i]);
        for (size_t j = 0; rc == 0 && j < anc.n; j++) {
            gh__put_u64(akey, anc.ids[j]);
            rc = gh__put(txn, DB_USER_GROUPS_EFF, ukey, 8, akey, 8, MDB_NODUPDATA);
            if (rc == GH_EEXISTS)
                rc = 0;
        }
    }
    if (rc == 0)
        rc = gh__authz_bump(txn);
    if (rc == 0) {
        gh__member_label(txn, m, label, sizeof(label));
        rc = gh__log(txn, "group.add_member", "%s<-%s", g.name, label);
    }
done:
    gh__idset_free(&anc);
    gh__idset_free(&users);
    return rc;
}

int gh_store_member_remove(gh_txn *txn, uint64_t group_id, gh_member m)
{
    uint8_t mkey[GH_MEMBER_KEY_LEN], gkey[8];
    char label[GH_NAME_MAX + 16];
    gh__idset users;
    gh_group g;
    int rc;

    gh__idset_init(&users);
    rc = gh_store_group_get_by_id(txn, group_id, &g);
    if (rc != 0)
        goto done;
    if (m.kind != GH_MEMBER_USER && m.kind != GH_MEMBER_GROUP) {
        rc = gh_txn_fail(txn, GH_EINVAL, "member kind must be user or group");
        goto done;
    }
    gh__member_key(mkey, m);
    gh__put_u64(gkey, group_id);
    gh__member_label(txn, m, label, sizeof(label));
    rc = gh__del(txn, DB_MEMBERS, gkey, 8, mkey, sizeof(mkey));
    if (rc == GH_ENOTFOUND)
        rc = gh_txn_fail(txn, rc, "%s is not a direct member of %s", label, g.name);
    if (rc == 0) {
        rc = gh__del(txn, DB_MEMBER_OF, mkey, sizeof(mkey), gkey, 8);
        if (rc == GH_ENOTFOUND)
            rc = 0;
    }
    if (rc != 0)
        goto done;
    if (m.kind == GH_MEMBER_USER)
        rc = gh__idset_add(&users, m.id) < 0 ? GH_ENOMEM : 0;
    else
        rc = effective_users(txn, m.id, &users);
    for (size_t i = 0; rc == 0 && i < users.n; i++)
        rc = gh__closure_recompute(txn, users.ids[i]);
    if (rc == 0)
        rc = gh__authz_bump(txn);
    if (rc == 0)
        rc = gh__log(txn, "group.remove_member", "%s<-%s", g.name, label);
done:
    gh__idset_free(&users);
    return rc;
}

struct member_cb_ctx {
    gh_store_member_cb cb;
    void *arg;
};

static int member_cb(const MDB_val *v, void *arg)
{
    struct member_cb_ctx *c = arg;
    gh_member m;
    int rc;

    if (gh__member_from_key(v->mv_data, v->mv_size, &m) != 0)
        return GH_EINTERNAL;
    rc = c->cb(m, c->arg);
    return rc < 0 ? rc : (rc > 0 ? 1 : 0);
}

int gh_store_group_members(gh_txn *txn, uint64_t group_id, gh_store_member_cb cb, void *arg)
{
    struct member_cb_ctx c = {cb, arg};
    uint8_t key[8];
    MDB_val v;
    int rc;

    gh__put_u64(key, group_id);
    rc = gh__get(txn, DB_GROUPS, key, 8, &v);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no group with id %llu", (unsigned long long)group_id);
    if (rc == 0)
        rc = dup_walk(txn, DB_MEMBERS, key, 8, member_cb, &c);
    return rc > 0 ? 0 : rc;
}

int gh_store_group_effective_users(gh_txn *txn, uint64_t group_id, gh_store_id_cb cb, void *arg)
{
    gh__idset users;
    uint8_t key[8];
    MDB_val v;
    int rc;

    gh__idset_init(&users);
    gh__put_u64(key, group_id);
    rc = gh__get(txn, DB_GROUPS, key, 8, &v);
    if (rc == GH_ENOTFOUND)
        rc = gh_txn_fail(txn, rc, "no group with id %llu", (unsigned long long)group_id);
    if (rc == 0)
        rc = effective_users(txn, group_id, &users);
    for (size_t i = 0; rc == 0 && i < users.n; i++) {
        rc = cb(users.ids[i], arg);
        if (rc > 0) {
            rc = 0;
            break;
        }
    }
    gh__idset_free(&users);
    return rc;
}

struct id_cb_ctx {
    gh_store_id_cb cb;
    void *arg;
};

static int id_cb(const MDB_val *v, void *arg)
{
    struct id_cb_ctx *c = arg;
    int rc;

    if (v->mv_size != 8)
        return GH_EINTERNAL;
    rc = c->cb(gh__get_u64(v->mv_data), c->arg);
    return rc < 0 ? rc : (rc > 0 ? 1 : 0);
}

int gh_store_member_of(gh_txn *txn, gh_member m, gh_store_id_cb cb, void *arg)
{
    struct id_cb_ctx c = {cb, arg};
    uint8_t key[GH_MEMBER_KEY_LEN];
    int rc;

    gh__member_key(key, m);
    rc = dup_walk(txn, DB_MEMBER_OF, key, sizeof(key), id_cb, &c);
    return rc > 0 ? 0 : rc;
}

int gh_store_user_groups(gh_txn *txn, uint64_t user_id, gh_store_id_cb cb, void *arg)
{
    struct id_cb_ctx c = {cb, arg};
    uint8_t key[8];
    int rc;

    gh__put_u64(key, user_id);
    rc = dup_walk(txn, DB_USER_GROUPS_EFF, key, 8, id_cb, &c);
    return rc > 0 ? 0 : rc;
}
