/*
 * ops_user.c: user.* and group.* operations.
 *
 * Reads answer from the handler's snapshot. Writes copy their arguments into
 * a heap struct and are applied by the writer (gh_op_defer); the apply
 * function looks the target up again inside the write txn, because the
 * snapshot the handler saw may be stale by then. A password is hashed on the
 * thread pool first (gh__hash_password) and only its verifier is written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "schema/log.h"
#include "server/server.h"

#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define GH_ARGON2_LANES_MAX 16 /* lanes (p) of an accepted verifier */

/* ---- write with an optional password: hash first, then the writer ---- */

typedef struct hashed_write {
    gh_server *srv;
    gh_pending *p;
    char actor[96];
    gh_store_write_fn apply;
    int (*reply)(void *arg, json_t *resp);
    void (*free_arg)(void *arg);
    void *arg;
    char *verifier_dst; /* inside arg, GH_VERIFIER_MAX + 1 bytes */
} hashed_write;

static void hw_hashed(void *cbarg, int rc, const char *verifier)
{
    hashed_write *h = cbarg;
    if (rc == 0) {
        snprintf(h->verifier_dst, GH_VERIFIER_MAX + 1, "%s", verifier);
        gh_op_write(h->p, h->actor, h->apply, h->reply, h->free_arg, h->arg);
    } else {
        gh__pending_finish(h->p, rc, rc == GH_ERATE ? "too much Argon2 work queued" : NULL, NULL);
        h->free_arg(h->arg);
    }
    free(h);
}

static int defer_hashed(gh_opctx *c, const char *password, char *verifier_dst,
                        gh_store_write_fn apply, int (*reply)(void *, json_t *),
                        void (*free_arg)(void *), void *arg)
{
    hashed_write *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        free_arg(arg);
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    }
    h->srv = c->srv;
    snprintf(h->actor, sizeof(h->actor), "%s", c->actor);
    h->apply = apply;
    h->reply = reply;
    h->free_arg = free_arg;
    h->arg = arg;
    h->verifier_dst = verifier_dst;
    int rc = gh__hash_password(c->srv, password, strlen(password), hw_hashed, h);
    if (rc != 0) {
        free(h);
        free_arg(arg);
        return gh_op_fail(c, rc,
                          rc == GH_ERATE ? "too much Argon2 work queued; retry later"
                                         : "cannot hash the password");
    }
    h->p = gh_op_pend(c);
    return 0;
}

static int check_password(gh_opctx *c, const char *pw)
{
    size_t n = strlen(pw), chars = 0;
    if (!gh_schema_utf8_valid(pw, n))
        return gh_op_fail(c, GH_EINVAL, "password is not valid UTF-8");
    for (size_t i = 0; i < n; i++) /* characters, not bytes: count non-continuation bytes */
        chars += ((unsigned char)pw[i] & 0xC0) != 0x80;
    if (chars < c->cfg->password_min_length)
        return gh_op_fail(c, GH_EINVAL, "password must be at least %u characters",
                          c->cfg->password_min_length);
    return 0;
}

/* A verifier's Argon2 cost ($argon2id$v=19$m=KIB,t=PASSES,p=LANES$...) within
 * argon2_memlimit_max and argon2_opslimit_max: every auth of the user pays
 * it, so an unbounded one lets a single record exhaust the server's memory. */
static int verifier_cost_ok(gh_opctx *c, const char *v)
{
    unsigned long long m, t, p;
    int used = 0;

    if (sscanf(v, "$argon2id$v=19$m=%llu,t=%llu,p=%llu$%n", &m, &t, &p, &used) != 3 || used == 0)
        return gh_op_fail(c, GH_EINVAL, "'verifier' must be $argon2id$v=19$m=..,t=..,p=..$..");
    if (m > c->cfg->argon2_memlimit_max / 1024 || t > c->cfg->argon2_opslimit_max || p < 1 ||
        p > GH_ARGON2_LANES_MAX)
        return gh_op_fail(c, GH_EINVAL,
                          "'verifier' costs more than allowed (m=%llu KiB, t=%llu, p=%llu; "
                          "argon2_memlimit_max %zu KiB, argon2_opslimit_max %llu, p at most %d)",
                          m, t, p, c->cfg->argon2_memlimit_max / 1024,
                          (unsigned long long)c->cfg->argon2_opslimit_max, GH_ARGON2_LANES_MAX);
    return 0;
}

static int opt_text(gh_opctx *c, const char *key, char *dst, size_t dstlen, unsigned bit,
                    unsigned *mask)
{
    const char *s;
    char msg[GH_ERRMSG_MAX];
    int rc = gh_arg_str(c, key, 0, dstlen - 1, &s);
    if (rc == GH_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (gh_schema_text_valid(key, s, dstlen - 1, msg, sizeof(msg)) != 0)
        return gh_op_fail(c, GH_EINVAL, "%s", msg);
    snprintf(dst, dstlen, "%s", s);
    *mask |= bit;
    return 0;
}

/* home, shell, gecos: text that goes into a passwd line ("" = the default). */
static int opt_posix(gh_opctx *c, const char *key, char *dst, size_t dstlen, unsigned bit,
                     unsigned *mask)
{
    const char *s;
    char msg[GH_ERRMSG_MAX];
    int rc = gh_arg_str(c, key, 0, dstlen - 1, &s);
    if (rc == GH_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (gh_schema_posix_valid(key, s, dstlen - 1, bit != GH_UF_GECOS, msg, sizeof(msg)) != 0)
        return gh_op_fail(c, GH_EINVAL, "%s", msg);
    snprintf(dst, dstlen, "%s", s);
    *mask |= bit;
    return 0;
}

static int opt_posix_all(gh_opctx *c, gh_user *u, unsigned *mask)
{
    int rc;
    if ((rc = opt_posix(c, "home", u->home, sizeof(u->home), GH_UF_HOME, mask)) != 0 ||
        (rc = opt_posix(c, "shell", u->shell, sizeof(u->shell), GH_UF_SHELL, mask)) != 0 ||
        (rc = opt_posix(c, "gecos", u->gecos, sizeof(u->gecos), GH_UF_GECOS, mask)) != 0)
        return rc;
    return 0;
}

static int opt_u32(gh_opctx *c, const char *key, uint32_t *dst, unsigned bit, unsigned *mask)
{
    int64_t v;
    /* uid 0 is root and never assigned; gid 0 means "no primary group" */
    int rc = gh_arg_int(c, key, 0, bit == GH_UF_GID ? 0 : 1, 4294967294ll, &v);
    if (rc == GH_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    *dst = (uint32_t)v;
    *mask |= bit;
    return 0;
}

/* ---- users ---- */

/* An apply may run more than once (a neighbour's failure or a map growth
 * reruns the batch): it reads only the input fields and writes only out. */
typedef struct user_arg {
    gh_user u; /* input: fields to write */
    unsigned mask;
    char name[GH_NAME_MAX + 1]; /* target of set / passwd / del */
    uint32_t gid_min;           /* the configuration when asked (check_primary_gid) */
    int upg;
    int any_gid; /* an import record: a dump or LDIF lists users before groups */
    /* output of the last run: the stored user, without its verifier */
    gh_user out;
    int out_has_password;
} user_arg;

static void user_arg_free(void *arg)
{
    user_arg *a = arg;
    sodium_memzero(a->u.verifier, sizeof(a->u.verifier));
    sodium_memzero(a->out.verifier, sizeof(a->out.verifier));
    free(a);
}

static void user_out(user_arg *a, const gh_user *stored)
{
    a->out = *stored;
    a->out_has_password = stored->verifier[0] != '\0';
    sodium_memzero(a->out.verifier, sizeof(a->out.verifier));
}

static int user_reply(void *arg, json_t *resp)
{
    user_arg *a = arg;
    json_t *o = gh_json_user(&a->out);
    json_object_set_new(o, "has_password", json_boolean(a->out_has_password));
    json_object_set_new(resp, "user", o);
    return 0;
}

/* A primary gid must name a group (issue 12): a Gatehouse group of that
 * number or, with user_private_groups, the user's own private group (gid =
 * uid). A gid below gid_min is a local system group (/etc/group's "users",
 * 100) that the server cannot see and takes as is; 0 means none. Checked in
 * the write transaction, after the store gave an added user its uid. Not for
 * import records: a dump or an LDIF file lists users before their groups. */
static int check_primary_gid(gh_txn *txn, const user_arg *a, const gh_user *u)
{
    gh_group g;
    if (a->any_gid || u->gid == 0 || u->gid < a->gid_min || (a->upg && u->gid == u->uid))
        return 0;
    int rc = gh_store_group_get_by_gid(txn, u->gid, &g);
    if (rc == 0 && g.tombstone == 0)
        return 0;
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    return gh_txn_fail(txn, GH_EINVAL, "gid %u names no group%s", (unsigned)u->gid,
                       a->upg ? " and is not the user's own uid (user-private group)"
                              : " (user_private_groups = no)");
}

static int user_add_apply(gh_txn *txn, void *arg)
{
    user_arg *a = arg;
    gh_user u = a->u;
    int rc = gh_store_user_add(txn, &u);
    if (rc == 0)
        rc = check_primary_gid(txn, a, &u);
    if (rc == 0)
        user_out(a, &u);
    sodium_memzero(u.verifier, sizeof(u.verifier));
    return rc;
}

static int parse_state(gh_opctx *c, gh_user_state *st, unsigned *mask)
{
    const char *s;
    int rc = gh_arg_str(c, "state", 0, 16, &s);
    if (rc == GH_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (gh_user_state_parse(s, st) != 0)
        return gh_op_fail(c, GH_EINVAL, "'state' must be active, locked or disabled");
    *mask |= GH_UF_STATE;
    return 0;
}

static int op_user_add(gh_opctx *c)
{
    const char *name, *password = NULL;
    unsigned mask = 0;
    int rc;

    rc = gh_arg_name(c, "name", 1, &name);
    if (rc != 0)
        return rc;
    rc = gh_arg_str(c, "password", 0, 4096, &password);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    if (password != NULL && (rc = check_password(c, password)) != 0)
        return rc;
    user_arg *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    snprintf(a->u.name, sizeof(a->u.name), "%s", name);
    a->gid_min = c->cfg->gid_min;
    a->upg = c->cfg->user_private_groups;
    a->any_gid = c->importing;
    if ((rc = opt_u32(c, "uid", &a->u.uid, GH_UF_UID, &mask)) != 0 ||
        (rc = opt_u32(c, "gid", &a->u.gid, GH_UF_GID, &mask)) != 0 ||
        (rc = opt_text(c, "display_name", a->u.display_name, sizeof(a->u.display_name),
                       GH_UF_DISPLAY, &mask)) != 0 ||
        (rc = opt_text(c, "mail", a->u.mail, sizeof(a->u.mail), GH_UF_MAIL, &mask)) != 0 ||
        (rc = opt_posix_all(c, &a->u, &mask)) != 0 ||
        (rc = parse_state(c, &a->u.state, &mask)) != 0) {
        free(a);
        return rc;
    }
    if (gh_store_user_get(c->txn, name, &(gh_user){0}) == 0) {
        free(a);
        return gh_op_fail(c, GH_EEXISTS, "a user named '%s' already exists", name);
    }
    /* A verifier (export/import) instead of a password: stored as is, once
     * its cost is known to be bounded. */
    const char *verifier;
    rc = gh_arg_str(c, "verifier", 0, GH_VERIFIER_MAX, &verifier);
    if (rc == 0) {
        /* needs_rehash parses the string: -1 means it is no Argon2id verifier */
        if (password != NULL || strncmp(verifier, "$argon2id$", 10) != 0 ||
            crypto_pwhash_str_needs_rehash(verifier, c->cfg->argon2_opslimit,
                                           c->cfg->argon2_memlimit) < 0) {
            free(a);
            return gh_op_fail(c, GH_EINVAL,
                              "'verifier' must be an $argon2id$ string, without 'password'");
        }
        if ((rc = verifier_cost_ok(c, verifier)) != 0) {
            free(a);
            return rc;
        }
        snprintf(a->u.verifier, sizeof(a->u.verifier), "%s", verifier);
    } else if (rc != GH_ENOTFOUND) {
        free(a);
        return rc;
    }
    if (password != NULL)
        return defer_hashed(c, password, a->u.verifier, user_add_apply, user_reply, user_arg_free,
                            a);
    return gh_op_defer(c, user_add_apply, user_reply, user_arg_free, a);
}

typedef struct name_list {
    gh_txn *txn;
    json_t *arr;
} name_list;

static int add_group_name(uint64_t id, void *arg)
{
    name_list *l = arg;
    const char *name;
    size_t len;
    if (gh_store_group_name(l->txn, id, &name, &len) == 0)
        json_array_append_new(l->arr, json_stringn(name, len));
    return 0;
}

static int add_user_name(uint64_t id, void *arg)
{
    name_list *l = arg;
    gh_user_hot u;
    if (gh_store_user_hot(l->txn, id, &u) == 0)
        json_array_append_new(l->arr, json_stringn(u.name, u.name_len));
    return 0;
}

static int get_user(gh_opctx *c, const char *key, gh_user *u)
{
    const char *name;
    int rc = gh_arg_str(c, key, 1, GH_NAME_MAX, &name);
    if (rc != 0)
        return rc;
    rc = gh_store_user_get(c->txn, name, u);
    if (rc == GH_ENOTFOUND)
        return gh_op_fail(c, rc, "no user named '%s'", name);
    if (rc != 0)
        return gh_op_fail(c, rc, "cannot read user '%s'", name);
    return 0;
}

static int op_user_get(gh_opctx *c)
{
    gh_user u;
    int rc = get_user(c, "name", &u);
    if (rc != 0)
        return rc;
    json_t *o = gh_json_user(&u);
    name_list l = {c->txn, json_array()};
    gh_store_user_groups(c->txn, u.id, add_group_name, &l);
    json_object_set_new(o, "groups", l.arr);
    l.arr = json_array();
    gh_store_member_of(c->txn, (gh_member){GH_MEMBER_USER, u.id}, add_group_name, &l);
    json_object_set_new(o, "direct_groups", l.arr);
    json_object_set_new(c->resp, "user", o);
    return 0;
}

typedef struct page {
    json_t *arr;
    size_t limit, n;
    char last[GH_NAME_MAX + 1];
    int more;
} page;

/* Adds a record to the page, or notes that one more exists past a full page
 * (the list is asked for limit + 1 records to know whether "next" is due). */
static int page_push(page *pg, const char *name, json_t *(*make)(const void *), const void *rec)
{
    if (pg->n == pg->limit) {
        pg->more = 1;
        return 1;
    }
    json_array_append_new(pg->arr, make(rec));
    snprintf(pg->last, sizeof(pg->last), "%s", name);
    pg->n++;
    return 0;
}

static json_t *user_obj(const void *u)
{
    return gh_json_user(u);
}

static json_t *group_obj(const void *g)
{
    return gh_json_group(g);
}

static int page_user(const gh_user *u, void *arg)
{
    return page_push(arg, u->name, user_obj, u);
}

static int page_group(const gh_group *g, void *arg)
{
    return page_push(arg, g->name, group_obj, g);
}

static int page_args(gh_opctx *c, const char **prefix, const char **after, int64_t *limit)
{
    int rc;
    *prefix = *after = NULL;
    *limit = LIST_DEFAULT;
    if ((rc = gh_arg_str(c, "prefix", 0, GH_NAME_MAX, prefix)) != 0 && rc != GH_ENOTFOUND)
        return rc;
    if ((rc = gh_arg_str(c, "after", 0, GH_NAME_MAX, after)) != 0 && rc != GH_ENOTFOUND)
        return rc;
    if ((rc = gh_arg_int(c, "limit", 0, 1, LIST_MAX, limit)) != 0 && rc != GH_ENOTFOUND)
        return rc;
    return 0;
}

/* user.list and group.list: a page in name order, and where the next begins. */
static int op_list(gh_opctx *c, int groups)
{
    const char *prefix, *after;
    int64_t limit;
    int rc = page_args(c, &prefix, &after, &limit);
    if (rc != 0)
        return rc;
    page pg = {.arr = json_array(), .limit = (size_t)limit};
    if (groups)
        rc = gh_store_group_list(c->txn, prefix, after, (size_t)limit + 1, page_group, &pg);
    else
        rc = gh_store_user_list(c->txn, prefix, after, (size_t)limit + 1, page_user, &pg);
    if (rc != 0) {
        json_decref(pg.arr);
        return gh_op_fail(c, rc, "cannot list %s", groups ? "groups" : "users");
    }
    json_object_set_new(c->resp, groups ? "groups" : "users", pg.arr);
    json_object_set_new(c->resp, "next", pg.more ? json_string(pg.last) : json_null());
    return 0;
}

static int op_user_list(gh_opctx *c)
{
    return op_list(c, 0);
}

static int user_set_apply(gh_txn *txn, void *arg)
{
    user_arg *a = arg;
    gh_user u;
    int rc = gh_store_user_get(txn, a->name, &u);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no user named '%s'", a->name);
    if (rc != 0)
        return rc;
    if (a->mask & GH_UF_NAME)
        memcpy(u.name, a->u.name, sizeof(u.name));
    if (a->mask & GH_UF_UID)
        u.uid = a->u.uid;
    if (a->mask & GH_UF_GID)
        u.gid = a->u.gid;
    if (a->mask & GH_UF_DISPLAY)
        memcpy(u.display_name, a->u.display_name, sizeof(u.display_name));
    if (a->mask & GH_UF_MAIL)
        memcpy(u.mail, a->u.mail, sizeof(u.mail));
    if (a->mask & GH_UF_STATE)
        u.state = a->u.state;
    if (a->mask & GH_UF_HOME)
        memcpy(u.home, a->u.home, sizeof(u.home));
    if (a->mask & GH_UF_SHELL)
        memcpy(u.shell, a->u.shell, sizeof(u.shell));
    if (a->mask & GH_UF_GECOS)
        memcpy(u.gecos, a->u.gecos, sizeof(u.gecos));
    if (a->mask & GH_UF_VERIFIER) {
        memcpy(u.verifier, a->u.verifier, sizeof(u.verifier));
        u.verifier_time = gh_txn_now(txn);
    }
    if (a->mask & (GH_UF_GID | GH_UF_UID))
        rc = check_primary_gid(txn, a, &u);
    if (rc == 0 && a->mask != 0)
        rc = gh_store_user_update(txn, &u, a->mask);
    /* A new password ends every session of the old one, in the same txn
     * (state changes are handled by the store itself). */
    if (rc == 0 && (a->mask & GH_UF_VERIFIER))
        rc = gh_store_token_revoke_user(txn, u.id, NULL);
    if (rc == 0)
        user_out(a, &u);
    sodium_memzero(u.verifier, sizeof(u.verifier));
    return rc;
}

/* Refuses changes to fields an upstream owns. */
static int check_owned(gh_opctx *c, const gh_user *u, unsigned mask)
{
    if (u->origin[0] == '\0' || c->srv->sync == NULL)
        return 0;
    unsigned owned = gh_sync_owned_user_fields(c->srv->sync, u->origin);
    if (mask & owned)
        return gh_op_fail(c, GH_EPERM,
                          "user '%s' is mirrored from upstream '%s', which owns "
                          "that field",
                          u->name, u->origin);
    return 0;
}

static int op_user_set(gh_opctx *c)
{
    gh_user cur;
    const char *rename;
    unsigned mask = 0;
    int rc = get_user(c, "name", &cur);
    if (rc != 0)
        return rc;
    user_arg *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    snprintf(a->name, sizeof(a->name), "%s", cur.name);
    a->gid_min = c->cfg->gid_min;
    a->upg = c->cfg->user_private_groups;
    rc = gh_arg_name(c, "rename", 0, &rename);
    if (rc == 0) {
        snprintf(a->u.name, sizeof(a->u.name), "%s", rename);
        mask |= GH_UF_NAME;
    } else if (rc != GH_ENOTFOUND) {
        free(a);
        return rc;
    }
    if ((rc = opt_u32(c, "uid", &a->u.uid, GH_UF_UID, &mask)) != 0 ||
        (rc = opt_u32(c, "gid", &a->u.gid, GH_UF_GID, &mask)) != 0 ||
        (rc = opt_text(c, "display_name", a->u.display_name, sizeof(a->u.display_name),
                       GH_UF_DISPLAY, &mask)) != 0 ||
        (rc = opt_text(c, "mail", a->u.mail, sizeof(a->u.mail), GH_UF_MAIL, &mask)) != 0 ||
        (rc = opt_posix_all(c, &a->u, &mask)) != 0 ||
        (rc = parse_state(c, &a->u.state, &mask)) != 0 || (rc = check_owned(c, &cur, mask)) != 0) {
        free(a);
        return rc;
    }
    if (json_object_get(c->req, "password") != NULL) {
        free(a);
        return gh_op_fail(c, GH_EINVAL, "use user.passwd to change a password");
    }
    a->mask = mask;
    return gh_op_defer(c, user_set_apply, user_reply, user_arg_free, a);
}

static int op_user_passwd(gh_opctx *c)
{
    gh_user cur;
    const char *password;
    int rc = get_user(c, "name", &cur);
    if (rc != 0)
        return rc;
    rc = gh_arg_str(c, "password", 1, 4096, &password);
    if (rc != 0)
        return rc;
    if ((rc = check_password(c, password)) != 0)
        return rc;
    if (cur.origin[0] != '\0')
        return gh_op_fail(c, GH_EPERM, "the password of '%s' is owned by upstream '%s'", cur.name,
                          cur.origin);
    user_arg *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    snprintf(a->name, sizeof(a->name), "%s", cur.name);
    a->mask = GH_UF_VERIFIER;
    return defer_hashed(c, password, a->u.verifier, user_set_apply, NULL, user_arg_free, a);
}

static int user_del_apply(gh_txn *txn, void *arg)
{
    user_arg *a = arg;
    gh_user u;
    int rc = gh_store_user_get(txn, a->name, &u);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no user named '%s'", a->name);
    if (rc != 0)
        return rc;
    return gh_store_user_del(txn, u.id);
}

static int op_user_del(gh_opctx *c)
{
    gh_user cur;
    int rc = get_user(c, "name", &cur);
    if (rc != 0)
        return rc;
    user_arg *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    snprintf(a->name, sizeof(a->name), "%s", cur.name);
    return gh_op_defer(c, user_del_apply, NULL, user_arg_free, a);
}

/* ---- groups ---- */

typedef struct group_arg {
    gh_group g;
    char name[GH_NAME_MAX + 1];
    char member[GH_NAME_MAX + 1];
    gh_member_kind kind;
    int add;
} group_arg;

static void plain_free(void *arg)
{
    free(arg);
}

static int group_reply(void *arg, json_t *resp)
{
    group_arg *a = arg;
    json_object_set_new(resp, "group", gh_json_group(&a->g));
    return 0;
}

static int group_add_apply(gh_txn *txn, void *arg)
{
    group_arg *a = arg;
    gh_group g = a->g;
    int rc = gh_store_group_add(txn, &g);
    if (rc == 0)
        a->g = g;
    return rc;
}

static int op_group_add(gh_opctx *c)
{
    const char *name;
    unsigned mask = 0;
    int rc = gh_arg_name(c, "name", 1, &name);
    if (rc != 0)
        return rc;
    group_arg *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    snprintf(a->g.name, sizeof(a->g.name), "%s", name);
    if ((rc = opt_u32(c, "gid", &a->g.gid, GH_GF_GID, &mask)) != 0 ||
        (rc = opt_text(c, "description", a->g.description, sizeof(a->g.description),
                       GH_GF_DESCRIPTION, &mask)) != 0) {
        free(a);
        return rc;
    }
    if (gh_store_group_get(c->txn, name, &(gh_group){0}) == 0) {
        free(a);
        return gh_op_fail(c, GH_EEXISTS, "a group named '%s' already exists", name);
    }
    return gh_op_defer(c, group_add_apply, group_reply, plain_free, a);
}

static int get_group(gh_opctx *c, const char *key, gh_group *g)
{
    const char *name;
    int rc = gh_arg_str(c, key, 1, GH_NAME_MAX, &name);
    if (rc != 0)
        return rc;
    rc = gh_store_group_get(c->txn, name, g);
    if (rc == GH_ENOTFOUND)
        return gh_op_fail(c, rc, "no group named '%s'", name);
    if (rc != 0)
        return gh_op_fail(c, rc, "cannot read group '%s'", name);
    return 0;
}

typedef struct members_out {
    gh_txn *txn;
    json_t *users, *groups;
} members_out;

static int add_member(gh_member m, void *arg)
{
    members_out *o = arg;
    if (m.kind == GH_MEMBER_USER) {
        gh_user u;
        if (gh_store_user_get_by_id(o->txn, m.id, &u) == 0)
            json_array_append_new(o->users, json_string(u.name));
    } else {
        gh_group g;
        if (gh_store_group_get_by_id(o->txn, m.id, &g) == 0)
            json_array_append_new(o->groups, json_string(g.name));
    }
    return 0;
}

static int op_group_get(gh_opctx *c)
{
    gh_group g;
    int rc = get_group(c, "name", &g);
    if (rc != 0)
        return rc;
    json_t *o = gh_json_group(&g);
    members_out mo = {c->txn, json_array(), json_array()};
    gh_store_group_members(c->txn, g.id, add_member, &mo);
    json_t *members = json_object();
    json_object_set_new(members, "users", mo.users);
    json_object_set_new(members, "groups", mo.groups);
    json_object_set_new(o, "members", members);
    name_list l = {c->txn, json_array()};
    gh_store_group_effective_users(c->txn, g.id, add_user_name, &l);
    json_object_set_new(o, "effective_users", l.arr);
    json_object_set_new(c->resp, "group", o);
    return 0;
}

static int op_group_list(gh_opctx *c)
{
    return op_list(c, 1);
}

static int group_del_apply(gh_txn *txn, void *arg)
{
    group_arg *a = arg;
    gh_group g;
    int rc = gh_store_group_get(txn, a->name, &g);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no group named '%s'", a->name);
    if (rc != 0)
        return rc;
    return gh_store_group_del(txn, g.id);
}

static int op_group_del(gh_opctx *c)
{
    gh_group g;
    int rc = get_group(c, "name", &g);
    if (rc != 0)
        return rc;
    group_arg *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    snprintf(a->name, sizeof(a->name), "%s", g.name);
    return gh_op_defer(c, group_del_apply, NULL, plain_free, a);
}

/* Applies a membership change by names, resolved inside the write txn. */
static int member_change(gh_txn *txn, const char *group, gh_member_kind kind, const char *member,
                         int add)
{
    gh_group g;
    gh_member m = {kind, 0};
    int rc = gh_store_group_get(txn, group, &g);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no group named '%s'", group);
    if (rc != 0)
        return rc;
    if (kind == GH_MEMBER_USER) {
        gh_user u;
        rc = gh_store_user_get(txn, member, &u);
        if (rc == GH_ENOTFOUND)
            return gh_txn_fail(txn, rc, "no user named '%s'", member);
        m.id = u.id;
    } else {
        gh_group sg;
        rc = gh_store_group_get(txn, member, &sg);
        if (rc == GH_ENOTFOUND)
            return gh_txn_fail(txn, rc, "no group named '%s'", member);
        m.id = sg.id;
    }
    if (rc != 0)
        return rc;
    rc = add ? gh_store_member_add(txn, g.id, m) : gh_store_member_remove(txn, g.id, m);
    if (rc == GH_EEXISTS && gh_txn_errmsg(txn)[0] == '\0')
        return gh_txn_fail(txn, rc, "'%s' is already a member of '%s'", member, group);
    if (rc == GH_ENOTFOUND && !add && gh_txn_errmsg(txn)[0] == '\0')
        return gh_txn_fail(txn, rc, "'%s' is not a direct member of '%s'", member, group);
    return rc;
}

static int member_apply(gh_txn *txn, void *arg)
{
    group_arg *a = arg;
    return member_change(txn, a->name, a->kind, a->member, a->add);
}

static int op_member(gh_opctx *c, int add)
{
    const char *group, *user = NULL, *sub = NULL;
    int rc = gh_arg_str(c, "group", 1, GH_NAME_MAX, &group);
    if (rc != 0)
        return rc;
    if ((rc = gh_arg_str(c, "user", 0, GH_NAME_MAX, &user)) != 0 && rc != GH_ENOTFOUND)
        return rc;
    if ((rc = gh_arg_str(c, "subgroup", 0, GH_NAME_MAX, &sub)) != 0 && rc != GH_ENOTFOUND)
        return rc;
    if ((user == NULL) == (sub == NULL))
        return gh_op_fail(c, GH_EINVAL, "give exactly one of 'user' or 'subgroup'");
    group_arg *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    snprintf(a->name, sizeof(a->name), "%s", group);
    snprintf(a->member, sizeof(a->member), "%s", user ? user : sub);
    a->kind = user ? GH_MEMBER_USER : GH_MEMBER_GROUP;
    a->add = add;
    return gh_op_defer(c, member_apply, NULL, plain_free, a);
}

static int op_group_add_member(gh_opctx *c)
{
    return op_member(c, 1);
}

static int op_group_remove_member(gh_opctx *c)
{
    return op_member(c, 0);
}

const gh_op_def gh__ops_user[] = {
    {"user.add", op_user_add, GH_OPF_ADMIN | GH_OPF_WRITE | GH_OPF_ARGON2, GH_CLASS_ADMIN},
    {"user.get", op_user_get, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {"user.list", op_user_list, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {"user.set", op_user_set, GH_OPF_ADMIN | GH_OPF_WRITE, GH_CLASS_ADMIN},
    {"user.passwd", op_user_passwd, GH_OPF_ADMIN | GH_OPF_WRITE | GH_OPF_ARGON2, GH_CLASS_ADMIN},
    {"user.del", op_user_del, GH_OPF_ADMIN | GH_OPF_WRITE, GH_CLASS_ADMIN},
    {"group.add", op_group_add, GH_OPF_ADMIN | GH_OPF_WRITE, GH_CLASS_ADMIN},
    {"group.get", op_group_get, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {"group.list", op_group_list, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {"group.del", op_group_del, GH_OPF_ADMIN | GH_OPF_WRITE, GH_CLASS_ADMIN},
    {"group.add_member", op_group_add_member, GH_OPF_ADMIN | GH_OPF_WRITE, GH_CLASS_ADMIN},
    {"group.remove_member", op_group_remove_member, GH_OPF_ADMIN | GH_OPF_WRITE, GH_CLASS_ADMIN},
    {NULL, NULL, 0, GH_CLASS_ADMIN},
};
