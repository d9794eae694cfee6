/*
 * ops_nss.c: the nss.* operations, what libnss_gatehouse asks on behalf of
 * getent, id, sshd and every other local process.
 *
 * The one thing to know: these operations are public and are also served on
 * the world-connectable nss_socket, so they return exactly what /etc/passwd
 * and /etc/group would show (name, numbers, gecos, home, shell, member
 * names) and nothing else: no state, mail, origin or policy. An account the
 * OS must never take from here (root, a uid below uid_min, a group below
 * gid_min, a tombstoned mirror) answers not_found, as if it did not exist.
 *
 * Defaults come from the configuration: home from home_template (%u the
 * login, %U the uid), shell from default_shell, gecos from the display name.
 * With user_private_groups a user whose gid is 0 gets gid = uid, and a group
 * of that number and the user's name exists for getgrnam/getgrgid as long as
 * no real group has that number.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"

#define ENUM_DEFAULT 500
#define ENUM_MAX 1000

/* ---- what is served ---- */

static int user_served(const gh_config *cfg, const gh_user *u)
{
    return u->tombstone == 0 && u->uid != 0 && u->uid >= cfg->uid_min &&
           strcmp(u->name, "root") != 0;
}

static int group_served(const gh_config *cfg, const gh_group *g)
{
    return g->tombstone == 0 && g->gid != 0 && g->gid >= cfg->gid_min &&
           strcmp(g->name, "root") != 0;
}

/* The passwd view is schema/posix.c's, shared with the LDAP DIT. */
static gh_posix_defaults posix_defaults(const gh_config *cfg)
{
    gh_posix_defaults d = {cfg->home_template, cfg->default_shell, cfg->user_private_groups};
    return d;
}

/* The primary gid a user is served with: 0 means the user is not served
 * (no group and no user-private group). */
static uint32_t user_gid(const gh_config *cfg, const gh_user *u)
{
    gh_posix_defaults d = posix_defaults(cfg);
    return gh_user_posix_gid(u, &d);
}

static json_t *passwd_json(const gh_config *cfg, const gh_user *u)
{
    gh_posix_defaults d = posix_defaults(cfg);
    char home[GH_PATH_MAX + 1];
    gh_user_posix_home(u, &d, home, sizeof(home));
    return json_pack("{s:s, s:I, s:I, s:s, s:s, s:s}", "name", u->name, "uid", (json_int_t)u->uid,
                     "gid", (json_int_t)gh_user_posix_gid(u, &d), "gecos", gh_user_posix_gecos(u),
                     "home", home, "shell", gh_user_posix_shell(u, &d));
}

typedef struct members {
    gh_opctx *c;
    json_t *names;
} members;

static int add_member(uint64_t id, void *arg)
{
    members *m = arg;
    gh_user u;
    if (gh_store_user_get_by_id(m->c->txn, id, &u) == 0 && user_served(m->c->cfg, &u))
        json_array_append_new(m->names, json_string(u.name));
    return 0;
}

static json_t *group_json(gh_opctx *c, const gh_group *g)
{
    members m = {c, json_array()};
    gh_store_group_effective_users(c->txn, g->id, add_member, &m);
    return json_pack("{s:s, s:I, s:o}", "name", g->name, "gid", (json_int_t)g->gid, "members",
                     m.names);
}

/* The user-private group of u, when u has one: 0 or GH_ENOTFOUND. */
static int private_group(gh_opctx *c, const gh_user *u)
{
    gh_group g;
    if (!c->cfg->user_private_groups || !user_served(c->cfg, u) || user_gid(c->cfg, u) != u->uid ||
        u->uid < c->cfg->gid_min)
        return GH_ENOTFOUND;
    if (gh_store_group_get_by_gid(c->txn, u->uid, &g) == 0)
        return GH_ENOTFOUND; /* a real group owns that number */
    return 0;
}

static int private_group_reply(gh_opctx *c, const gh_user *u)
{
    json_object_set_new(
        c->resp, "group",
        json_pack("{s:s, s:I, s:[]}", "name", u->name, "gid", (json_int_t)u->uid, "members"));
    return 0;
}

static int not_found(gh_opctx *c, const char *what)
{
    return gh_op_fail(c, GH_ENOTFOUND, "no such %s", what);
}

/* ---- lookups ---- */

static int reply_user(gh_opctx *c, int rc, const gh_user *u)
{
    if (rc == GH_ENOTFOUND || (rc == 0 && (!user_served(c->cfg, u) || user_gid(c->cfg, u) == 0)))
        return not_found(c, "user");
    if (rc != 0)
        return gh_op_fail(c, rc, "cannot read the user");
    json_object_set_new(c->resp, "passwd", passwd_json(c->cfg, u));
    return 0;
}

static int op_getpwnam(gh_opctx *c)
{
    const char *name;
    gh_user u;
    int rc = gh_arg_str(c, "name", 1, GH_NAME_MAX, &name);
    if (rc != 0)
        return rc;
    return reply_user(c, gh_store_user_get(c->txn, name, &u), &u);
}

static int arg_id(gh_opctx *c, const char *key, uint32_t *out)
{
    int64_t v;
    int rc = gh_arg_int(c, key, 1, 0, 4294967295ll, &v);
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

static int op_getpwuid(gh_opctx *c)
{
    uint32_t uid;
    gh_user u;
    int rc = arg_id(c, "uid", &uid);
    if (rc != 0)
        return rc;
    if (uid == 0)
        return not_found(c, "user");
    return reply_user(c, gh_store_user_get_by_uid(c->txn, uid, &u), &u);
}

static int reply_group(gh_opctx *c, int rc, const gh_group *g)
{
    if (rc == GH_ENOTFOUND || (rc == 0 && !group_served(c->cfg, g)))
        return not_found(c, "group");
    if (rc != 0)
        return gh_op_fail(c, rc, "cannot read the group");
    json_object_set_new(c->resp, "group", group_json(c, g));
    return 0;
}

static int op_getgrnam(gh_opctx *c)
{
    const char *name;
    gh_group g;
    gh_user u;
    int rc = gh_arg_str(c, "name", 1, GH_NAME_MAX, &name);
    if (rc != 0)
        return rc;
    rc = gh_store_group_get(c->txn, name, &g);
    if (rc == GH_ENOTFOUND && gh_store_user_get(c->txn, name, &u) == 0 && private_group(c, &u) == 0)
        return private_group_reply(c, &u);
    return reply_group(c, rc, &g);
}

static int op_getgrgid(gh_opctx *c)
{
    uint32_t gid;
    gh_group g;
    gh_user u;
    int rc = arg_id(c, "gid", &gid);
    if (rc != 0)
        return rc;
    if (gid == 0)
        return not_found(c, "group");
    rc = gh_store_group_get_by_gid(c->txn, gid, &g);
    if (rc == GH_ENOTFOUND && gh_store_user_get_by_uid(c->txn, gid, &u) == 0 &&
        private_group(c, &u) == 0)
        return private_group_reply(c, &u);
    return reply_group(c, rc, &g);
}

typedef struct gids {
    gh_opctx *c;
    json_t *arr;
} gids;

/* group_served from the group's hot value (no JSON decoded): a user in a
 * thousand groups costs a thousand of these. No tombstone there: a group is
 * emptied when it is tombstoned (sync_apply.c), so it is in no closure. */
static int add_gid(uint64_t id, void *arg)
{
    gids *l = arg;
    uint32_t gid;
    const char *name;
    size_t len;
    if (gh_store_group_hot(l->c->txn, id, &gid, &name, &len) == 0 && gid != 0 &&
        gid >= l->c->cfg->gid_min && !(len == 4 && memcmp(name, "root", 4) == 0))
        json_array_append_new(l->arr, json_integer(gid));
    return 0;
}

/* The user's groups (nested included) for initgroups: numbers only. */
static int op_initgroups(gh_opctx *c)
{
    const char *name;
    gh_user u;
    int rc = gh_arg_str(c, "user", 1, GH_NAME_MAX, &name);
    if (rc != 0)
        return rc;
    rc = gh_store_user_get(c->txn, name, &u);
    if (rc == GH_ENOTFOUND || (rc == 0 && !user_served(c->cfg, &u)))
        return not_found(c, "user");
    if (rc != 0)
        return gh_op_fail(c, rc, "cannot read the user");
    gids l = {c, json_array()};
    rc = gh_store_user_groups(c->txn, u.id, add_gid, &l);
    if (rc != 0) {
        json_decref(l.arr);
        return gh_op_fail(c, rc, "cannot read the user's groups");
    }
    json_object_set_new(c->resp, "gids", l.arr);
    return 0;
}

/* ---- enumeration (paged) ---- */

typedef struct epage {
    gh_opctx *c;
    json_t *arr;
    size_t limit;
    char last[GH_NAME_MAX + 1];
    int more;
} epage;

static int push(epage *pg, const char *name, json_t *entry)
{
    if (json_array_size(pg->arr) == pg->limit) {
        json_decref(entry);
        pg->more = 1;
        return 1;
    }
    json_array_append_new(pg->arr, entry);
    snprintf(pg->last, sizeof(pg->last), "%s", name);
    return 0;
}

static int enum_user(const gh_user *u, void *arg)
{
    epage *pg = arg;
    if (!user_served(pg->c->cfg, u) || user_gid(pg->c->cfg, u) == 0)
        return 0;
    return push(pg, u->name, passwd_json(pg->c->cfg, u));
}

static int enum_group(const gh_group *g, void *arg)
{
    epage *pg = arg;
    if (!group_served(pg->c->cfg, g))
        return 0;
    return push(pg, g->name, group_json(pg->c, g));
}

static int op_enumerate(gh_opctx *c)
{
    const char *db, *after = NULL;
    int64_t limit = ENUM_DEFAULT;
    int rc;
    if (!c->cfg->nss_enumerate)
        return gh_op_fail(c, GH_EPERM, "enumeration is off (nss_enumerate = no)");
    if ((rc = gh_arg_str(c, "db", 1, 16, &db)) != 0)
        return rc;
    if ((rc = gh_arg_str(c, "after", 0, GH_NAME_MAX, &after)) != 0 && rc != GH_ENOTFOUND)
        return rc;
    if ((rc = gh_arg_int(c, "limit", 0, 1, ENUM_MAX, &limit)) != 0 && rc != GH_ENOTFOUND)
        return rc;
    int groups = strcmp(db, "group") == 0;
    if (!groups && strcmp(db, "passwd") != 0)
        return gh_op_fail(c, GH_EINVAL, "'db' must be passwd or group");
    epage pg = {.c = c, .arr = json_array(), .limit = (size_t)limit};
    if (groups)
        rc = gh_store_group_list(c->txn, NULL, after, 0, enum_group, &pg);
    else
        rc = gh_store_user_list(c->txn, NULL, after, 0, enum_user, &pg);
    if (rc != 0) {
        json_decref(pg.arr);
        return gh_op_fail(c, rc, "cannot enumerate");
    }
    json_object_set_new(c->resp, db, pg.arr);
    json_object_set_new(c->resp, "next", pg.more ? json_string(pg.last) : json_null());
    return 0;
}

int gh__op_nss_allowed(const gh_op_def *def)
{
    return (def->flags & GH_OPF_NSS) != 0;
}

const gh_op_def gh__ops_nss[] = {
    {"nss.getpwnam", op_getpwnam, GH_OPF_NSS | GH_OPF_FLAT, GH_CLASS_PUBLIC},
    {"nss.getpwuid", op_getpwuid, GH_OPF_NSS | GH_OPF_FLAT, GH_CLASS_PUBLIC},
    {"nss.getgrnam", op_getgrnam, GH_OPF_NSS | GH_OPF_FLAT, GH_CLASS_PUBLIC},
    {"nss.getgrgid", op_getgrgid, GH_OPF_NSS | GH_OPF_FLAT, GH_CLASS_PUBLIC},
    {"nss.initgroups", op_initgroups, GH_OPF_NSS | GH_OPF_FLAT, GH_CLASS_PUBLIC},
    {"nss.enumerate", op_enumerate, GH_OPF_NSS, GH_CLASS_PUBLIC},
    {NULL, NULL, 0, GH_CLASS_ADMIN},
};
