/*
 * store_user.c: user records and their unique indices (login, uid, origin).
 *
 * The one thing to know: the record in DB_USERS is the truth and the indices
 * follow it inside the same txn; every path that changes name, uid or origin
 * must delete the old index entry and insert the new one, or lookups and
 * duplicate checks drift apart. Updates are read-modify-write on the stored
 * JSON object so unknown keys survive.
 */
#include <stdio.h>
#include <string.h>

#include "schema/log.h"
#include "schema/store-int.h"

#define ALL_USER_FIELDS                                                                            \
    (GH_UF_NAME | GH_UF_UID | GH_UF_DISPLAY | GH_UF_MAIL | GH_UF_STATE | GH_UF_VERIFIER |          \
     GH_UF_ORIGIN | GH_UF_TOMBSTONE | GH_UF_GID | GH_UF_UPSTREAM | GH_UF_HOME | GH_UF_SHELL |      \
     GH_UF_GECOS)

int gh__terminated(gh_txn *txn, const char *what, const char *s, size_t size)
{
    if (memchr(s, '\0', size) == NULL)
        return gh_txn_fail(txn, GH_ETOOBIG, "%s is longer than %zu bytes", what, size - 1);
    return 0;
}

int gh__origin_valid(gh_txn *txn, const char *origin, const char *key, const char *dn)
{
    int rc;

    if ((rc = gh__terminated(txn, "origin", origin, GH_NAME_MAX + 1)) != 0 ||
        (rc = gh__terminated(txn, "origin_key", key, GH_KEY_MAX + 1)) != 0 ||
        (rc = gh__terminated(txn, "origin_dn", dn, GH_DN_MAX + 1)) != 0)
        return rc;
    if (origin[0] == '\0') {
        if (key[0] != '\0' || dn[0] != '\0')
            return gh_txn_fail(txn, GH_EINVAL, "origin_key and origin_dn need an origin");
        return 0;
    }
    if (gh_schema_name_valid(origin, txn->err, sizeof(txn->err)) != 0)
        return GH_EINVAL;
    if (key[0] == '\0')
        return gh_txn_fail(txn, GH_EINVAL, "an upstream record needs its origin_key");
    if (gh_schema_text_valid("origin_key", key, GH_KEY_MAX, txn->err, sizeof(txn->err)) != 0 ||
        gh_schema_text_valid("origin_dn", dn, GH_DN_MAX, txn->err, sizeof(txn->err)) != 0)
        return GH_EINVAL;
    return 0;
}

static const gh__ident_kind ident_kind = {"user", "uid", DB_USER_NAME, DB_USER_UID, DB_USER_ORIGIN};

static int user_valid(gh_txn *txn, const gh_user *u)
{
    int rc;

    if ((rc = gh__terminated(txn, "name", u->name, sizeof(u->name))) != 0 ||
        (rc = gh__terminated(txn, "display_name", u->display_name, sizeof(u->display_name))) != 0 ||
        (rc = gh__terminated(txn, "mail", u->mail, sizeof(u->mail))) != 0 ||
        (rc = gh__terminated(txn, "verifier", u->verifier, sizeof(u->verifier))) != 0 ||
        (rc = gh__terminated(txn, "home", u->home, sizeof(u->home))) != 0 ||
        (rc = gh__terminated(txn, "shell", u->shell, sizeof(u->shell))) != 0 ||
        (rc = gh__terminated(txn, "gecos", u->gecos, sizeof(u->gecos))) != 0)
        return rc;
    if (gh_schema_posix_valid("home", u->home, GH_PATH_MAX, 1, txn->err, sizeof(txn->err)) != 0 ||
        gh_schema_posix_valid("shell", u->shell, GH_PATH_MAX, 1, txn->err, sizeof(txn->err)) != 0 ||
        gh_schema_posix_valid("gecos", u->gecos, GH_TEXT_MAX, 0, txn->err, sizeof(txn->err)) != 0)
        return GH_EINVAL;
    if (gh_schema_name_valid(u->name, txn->err, sizeof(txn->err)) != 0 ||
        gh_schema_text_valid("display_name", u->display_name, GH_TEXT_MAX, txn->err,
                             sizeof(txn->err)) != 0 ||
        gh_schema_text_valid("mail", u->mail, GH_TEXT_MAX, txn->err, sizeof(txn->err)) != 0)
        return GH_EINVAL;
    if ((unsigned)u->state > GH_USER_DISABLED || (unsigned)u->admin_state > GH_USER_DISABLED)
        return gh_txn_fail(txn, GH_EINVAL, "invalid user state %d", (int)u->state);
    if ((rc = gh__terminated(txn, "origin_sid", u->origin_sid, sizeof(u->origin_sid))) != 0)
        return rc;
    if (u->verifier[0] != '\0') {
        if (strncmp(u->verifier, "$argon2id$", 10) != 0)
            return gh_txn_fail(txn, GH_EINVAL, "password verifier is not an Argon2id string");
        for (const char *p = u->verifier; *p; p++)
            if (*p < 0x21 || *p > 0x7e)
                return gh_txn_fail(txn, GH_EINVAL, "password verifier is not printable ASCII");
    }
    return gh__origin_valid(txn, u->origin, u->origin_key, u->origin_dn);
}

/* First number >= max(uid_min, stored hint) not in the index db. */
int gh__assign_number(gh_txn *txn, const char *metakey, int db, uint32_t *out)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint8_t key[4];
    uint64_t hint, n;
    int rc;

    rc = gh__meta_get_u64(txn, metakey, &hint);
    if (rc != 0 && rc != GH_ENOTFOUND)
        goto done;
    n = hint > txn->store->uid_min ? hint : txn->store->uid_min;
    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, db), &cur), "cursor");
    if (rc != 0)
        goto done;
    gh__put_u32(key, (uint32_t)(n > UINT32_MAX ? UINT32_MAX : n));
    k.mv_size = sizeof(key);
    k.mv_data = key;
    /* Taken numbers are consecutive keys: step over the run starting at n. */
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && n < UINT32_MAX;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 4 || gh__get_u32(k.mv_data) != n)
            break;
        n++;
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
        rc = gh__mdb_err(txn, rc, "number cursor");
        goto done;
    }
    if (n >= UINT32_MAX) {
        rc =
            gh_txn_fail(txn, GH_EFULL, "no free %s number left", db == DB_USER_UID ? "uid" : "gid");
        goto done;
    }
    *out = (uint32_t)n;
    rc = gh__meta_put_u64(txn, metakey, n + 1);
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

static int name_len_ok(const char *name)
{
    return name != NULL && name[0] != '\0' && strlen(name) <= GH_NAME_MAX;
}

static int load(gh_txn *txn, uint64_t id, json_t **obj, gh_user *u)
{
    uint8_t key[8];
    int rc;

    gh__put_u64(key, id);
    rc = gh__json_get(txn, DB_USERS, key, sizeof(key), obj);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no user with id %llu", (unsigned long long)id);
    if (rc == 0 && u != NULL) {
        rc = gh__user_from_json(*obj, u);
        if (rc != 0) {
            json_decref(*obj);
            *obj = NULL;
        }
    }
    return rc;
}

int gh_store_user_get_by_id(gh_txn *txn, uint64_t id, gh_user *out)
{
    json_t *obj = NULL;
    int rc = load(txn, id, &obj, out);

    json_decref(obj);
    return rc;
}

int gh_store_user_get(gh_txn *txn, const char *name, gh_user *out)
{
    uint64_t id;
    int rc;

    if (!name_len_ok(name))
        return gh_txn_fail(txn, GH_ENOTFOUND, "no such user");
    rc = gh__get_id(txn, DB_USER_NAME, name, strlen(name), &id);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no user named %s", name);
    if (rc != 0)
        return rc;
    return gh_store_user_get_by_id(txn, id, out);
}

int gh_store_user_id(gh_txn *txn, const char *name, uint64_t *id)
{
    if (!name_len_ok(name))
        return gh_txn_fail(txn, GH_ENOTFOUND, "no such user");
    return gh__get_id(txn, DB_USER_NAME, name, strlen(name), id);
}

int gh_store_user_get_by_uid(gh_txn *txn, uint32_t uid, gh_user *out)
{
    uint8_t key[4];
    uint64_t id;
    int rc;

    gh__put_u32(key, uid);
    rc = gh__get_id(txn, DB_USER_UID, key, sizeof(key), &id);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no user with uid %u", uid);
    if (rc != 0)
        return rc;
    return gh_store_user_get_by_id(txn, id, out);
}

int gh_store_user_get_by_origin(gh_txn *txn, const char *upstream, const char *key, gh_user *out)
{
    char okey[GH_ORIGIN_KEY_MAX];
    uint64_t id;
    int rc;

    if (!name_len_ok(upstream) || key == NULL || key[0] == '\0' || strlen(key) > GH_KEY_MAX)
        return gh_txn_fail(txn, GH_ENOTFOUND, "no such user");
    rc = gh__get_id(txn, DB_USER_ORIGIN, okey, gh__origin_key(okey, upstream, key), &id);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no user from %s with key %s", upstream, key);
    if (rc != 0)
        return rc;
    return gh_store_user_get_by_id(txn, id, out);
}

int gh_store_user_add(gh_txn *txn, gh_user *u)
{
    char okey[GH_ORIGIN_KEY_MAX];
    uint8_t idkey[8], uidkey[4];
    json_t *obj = NULL;
    gh_user n = *u;
    int rc;

    n.admin_state = u->state; /* the caller's state is the administrator's */
    n.state = gh_user_effective_state(&n);
    rc = user_valid(txn, &n);
    if (rc != 0)
        goto done;
    rc = gh__taken(txn, DB_USER_NAME, n.name, strlen(n.name), 0);
    if (rc == GH_EEXISTS) {
        rc = gh_txn_fail(txn, rc, "user %s already exists", n.name);
        goto done;
    }
    if (rc != 0)
        goto done;
    if (n.origin[0] != '\0') {
        rc = gh__taken(txn, DB_USER_ORIGIN, okey, gh__origin_key(okey, n.origin, n.origin_key), 0);
        if (rc == GH_EEXISTS)
            rc = gh_txn_fail(txn, rc, "a user from %s with key %s already exists", n.origin,
                             n.origin_key);
        if (rc != 0)
            goto done;
    }
    if (n.uid == 0) {
        rc = gh__assign_number(txn, "next_uid", DB_USER_UID, &n.uid);
        if (rc != 0)
            goto done;
    } else {
        gh__put_u32(uidkey, n.uid);
        rc = gh__taken(txn, DB_USER_UID, uidkey, sizeof(uidkey), 0);
        if (rc == GH_EEXISTS)
            rc = gh_txn_fail(txn, rc, "uid %u is already taken", n.uid);
        if (rc != 0)
            goto done;
    }
    rc = gh__next_id(txn, "next_user_id", DB_USERS, &n.id);
    if (rc != 0)
        goto done;
    n.created = n.modified = txn->now;
    if (n.verifier[0] == '\0')
        n.verifier_time = 0;
    else if (n.verifier_time == 0)
        n.verifier_time = txn->now;
    obj = json_object();
    if (obj == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    gh__put_u64(idkey, n.id);
    gh__put_u32(uidkey, n.uid);
    if ((rc = gh__user_to_json(obj, &n, ALL_USER_FIELDS)) != 0 ||
        (rc = gh__json_put(txn, DB_USERS, idkey, sizeof(idkey), obj)) != 0 ||
        (rc = gh__user_hot_put(txn, &n)) != 0 ||
        (rc = gh__put(txn, DB_USER_NAME, n.name, strlen(n.name), idkey, 8, 0)) != 0 ||
        (rc = gh__put(txn, DB_USER_UID, uidkey, 4, idkey, 8, 0)) != 0)
        goto done;
    if (n.origin[0] != '\0') {
        rc = gh__put(txn, DB_USER_ORIGIN, okey, gh__origin_key(okey, n.origin, n.origin_key), idkey,
                     8, 0);
        if (rc != 0)
            goto done;
    }
    rc = gh__log(txn, "user.add", "%s", n.name);
    if (rc == 0)
        *u = n;
done:
    json_decref(obj);
    return rc;
}

int gh_store_user_update(gh_txn *txn, const gh_user *u, unsigned mask)
{
    uint8_t idkey[8];
    json_t *obj = NULL;
    gh_user old, n;
    int rc, logged = 0;

    if (mask & ~(unsigned)ALL_USER_FIELDS)
        return gh_txn_fail(txn, GH_EINVAL, "unknown user field in update mask");
    rc = load(txn, u->id, &obj, &old);
    if (rc != 0)
        goto done;
    n = old;
    if (mask & GH_UF_NAME)
        memcpy(n.name, u->name, sizeof(n.name));
    if (mask & GH_UF_UID)
        n.uid = u->uid;
    if (mask & GH_UF_GID)
        n.gid = u->gid;
    if (mask & GH_UF_DISPLAY)
        memcpy(n.display_name, u->display_name, sizeof(n.display_name));
    if (mask & GH_UF_MAIL)
        memcpy(n.mail, u->mail, sizeof(n.mail));
    if (mask & GH_UF_STATE)
        n.admin_state = u->state;
    if (mask & GH_UF_UPSTREAM) {
        n.upstream_flags = u->upstream_flags;
        n.upstream_expires = u->upstream_expires;
        memcpy(n.origin_sid, u->origin_sid, sizeof(n.origin_sid));
    }
    if (mask & GH_UF_VERIFIER) {
        memcpy(n.verifier, u->verifier, sizeof(n.verifier));
        n.verifier_time = u->verifier_time;
        if (n.verifier[0] == '\0')
            n.verifier_time = 0;
        else if (n.verifier_time == 0)
            n.verifier_time = txn->now;
    }
    if (mask & GH_UF_ORIGIN) {
        memcpy(n.origin, u->origin, sizeof(n.origin));
        memcpy(n.origin_key, u->origin_key, sizeof(n.origin_key));
        memcpy(n.origin_dn, u->origin_dn, sizeof(n.origin_dn));
    }
    if (mask & GH_UF_TOMBSTONE)
        n.tombstone = u->tombstone;
    if (mask & GH_UF_HOME)
        memcpy(n.home, u->home, sizeof(n.home));
    if (mask & GH_UF_SHELL)
        memcpy(n.shell, u->shell, sizeof(n.shell));
    if (mask & GH_UF_GECOS)
        memcpy(n.gecos, u->gecos, sizeof(n.gecos));
    n.state = gh_user_effective_state(&n);
    if (n.state != old.state)
        mask |= GH_UF_STATE; /* rewritten, and caches invalidated */
    rc = user_valid(txn, &n);
    if (rc != 0)
        goto done;
    if ((mask & GH_UF_UID) && n.uid == 0) {
        rc = gh_txn_fail(txn, GH_EINVAL, "uid 0 is not a valid uid");
        goto done;
    }
    gh__put_u64(idkey, n.id);
    rc = gh__ident_move(txn, &ident_kind, n.id,
                        &(gh__ident){old.name, old.uid, old.origin, old.origin_key},
                        &(gh__ident){n.name, n.uid, n.origin, n.origin_key});
    if (rc != 0)
        goto done;
    n.modified = txn->now;
    rc = gh__user_to_json(obj, &n, mask);
    if (rc == 0)
        rc = gh__json_put(txn, DB_USERS, idkey, sizeof(idkey), obj);
    if (rc == 0)
        rc = gh__user_hot_put(txn, &n);
    if (rc != 0)
        goto done;
    if (mask & (GH_UF_STATE | GH_UF_TOMBSTONE | GH_UF_NAME)) {
        rc = gh__authz_bump(txn);
        if (rc != 0)
            goto done;
    }
    /* Sessions die with the account: locked, disabled or deleted upstream. */
    if ((mask & (GH_UF_STATE | GH_UF_TOMBSTONE)) &&
        (n.state != GH_USER_ACTIVE || n.tombstone != 0)) {
        rc = gh_store_token_revoke_user(txn, n.id, NULL);
        if (rc != 0)
            goto done;
    }
    /* One entry per kind of change; a verifier change logs the name only. */
    if (strcmp(n.name, old.name) != 0) {
        rc = gh__log(txn, "user.rename", "%s->%s", old.name, n.name);
        logged = 1;
    }
    if (rc == 0 && (mask & GH_UF_VERIFIER)) {
        rc = gh__log(txn, "user.passwd", "%s", n.name);
        logged = 1;
    }
    if (rc == 0 && (!logged || (mask & ~(unsigned)(GH_UF_VERIFIER | GH_UF_NAME))))
        rc = gh__log(txn, "user.set", "%s", n.name);
done:
    json_decref(obj);
    return rc;
}

int gh_store_user_del(gh_txn *txn, uint64_t id)
{
    char okey[GH_ORIGIN_KEY_MAX];
    uint8_t idkey[8], uidkey[4];
    gh_member m = {GH_MEMBER_USER, id};
    json_t *obj = NULL;
    gh_user u;
    int rc;

    rc = load(txn, id, &obj, &u);
    if (rc != 0)
        goto done;
    gh__put_u64(idkey, id);
    gh__put_u32(uidkey, u.uid);
    if ((rc = gh__del(txn, DB_USERS, idkey, 8, NULL, 0)) != 0 ||
        (rc = gh__hot_del(txn, DB_USER_HOT, id)) != 0 ||
        (rc = gh__reindex(txn, DB_USER_NAME, u.name, strlen(u.name), NULL, 0, idkey)) != 0 ||
        (rc = gh__reindex(txn, DB_USER_UID, uidkey, 4, NULL, 0, idkey)) != 0)
        goto done;
    if (u.origin[0] != '\0') {
        rc = gh__reindex(txn, DB_USER_ORIGIN, okey, gh__origin_key(okey, u.origin, u.origin_key),
                         NULL, 0, idkey);
        if (rc != 0)
            goto done;
    }
    if ((rc = gh__member_drop_all(txn, m)) != 0 || (rc = gh__bindings_drop_subject(txn, m)) != 0 ||
        (rc = gh_store_token_revoke_user(txn, id, NULL)) != 0 || (rc = gh__authz_bump(txn)) != 0)
        goto done;
    rc = gh__log(txn, "user.del", "%s", u.name);
done:
    json_decref(obj);
    return rc;
}

struct user_walk {
    gh_store_user_cb cb;
    void *arg;
};

static int user_walk_one(gh_txn *txn, uint64_t id, void *arg)
{
    struct user_walk *w = arg;
    gh_user rec;
    int rc = gh_store_user_get_by_id(txn, id, &rec);
    return rc != 0 ? rc : w->cb(&rec, w->arg);
}

int gh_store_user_list(gh_txn *txn, const char *prefix, const char *after, size_t limit,
                       gh_store_user_cb cb, void *arg)
{
    struct user_walk w = {cb, arg};
    return gh__name_walk(txn, DB_USER_NAME, prefix, after, limit, user_walk_one, &w);
}

int gh_store_user_count(gh_txn *txn, uint64_t *count)
{
    MDB_stat st;
    int rc = gh__mdb_err(txn, mdb_stat(txn->txn, DBI(txn, DB_USERS), &st), "stat");

    *count = rc == 0 ? st.ms_entries : 0;
    return rc;
}

int gh__subject_exists(gh_txn *txn, gh_member m)
{
    uint8_t key[8];
    MDB_val v;
    int rc;

    if (m.kind != GH_MEMBER_USER && m.kind != GH_MEMBER_GROUP)
        return gh_txn_fail(txn, GH_EINVAL, "member kind must be user or group");
    gh__put_u64(key, m.id);
    rc = gh__get(txn, m.kind == GH_MEMBER_USER ? DB_USERS : DB_GROUPS, key, 8, &v);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no %s with id %llu",
                           m.kind == GH_MEMBER_USER ? "user" : "group", (unsigned long long)m.id);
    return rc;
}

void gh__member_label(gh_txn *txn, gh_member m, char *buf, size_t len)
{
    char err[GH_ERRMSG_MAX];

    /* Lookups here must not overwrite the txn's error message. */
    memcpy(err, txn->err, sizeof(err));
    if (m.kind == GH_MEMBER_USER) {
        gh_user u;
        if (gh_store_user_get_by_id(txn, m.id, &u) == 0)
            snprintf(buf, len, "%s", u.name);
        else
            snprintf(buf, len, "user:%llu", (unsigned long long)m.id);
    } else {
        gh_group g;
        if (gh_store_group_get_by_id(txn, m.id, &g) == 0)
            snprintf(buf, len, "group:%s", g.name);
        else
            snprintf(buf, len, "group:%llu", (unsigned long long)m.id);
    }
    memcpy(txn->err, err, sizeof(err));
}
