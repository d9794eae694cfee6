/*
 * ops_authz.c: the authorization operations of the protocol: role.*, grant,
 * revoke, bindings (admin writes and reads), check and check.batch (every
 * peer), perms and who_can (admin reports).
 *
 * The one thing to know: writes are deferred. The handler validates the
 * request on the loop thread (so most mistakes are answered without touching
 * the writer), copies what it needs into a heap arg, and the apply function
 * re-reads whatever it depends on inside the write transaction (names are
 * resolved to ids there, role.set merges there), because apply may run more
 * than once and the snapshot the handler saw may be stale by then.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/log.h"
#include "server/ops.h"

#define CHECK_BATCH_MAX 1000

/* ---- protocol objects ---- */

static json_t *rules_json(const gh_role *r, gh_effect effect)
{
    json_t *arr = json_array();

    for (size_t i = 0; arr && i < r->nrules; i++)
        if (r->rules[i].effect == effect)
            json_array_append_new(arr, json_pack("{ssss}", "action", r->rules[i].action, "resource",
                                                 r->rules[i].resource));
    return arr;
}

json_t *gh_json_role(const gh_role *r)
{
    json_t *parents = json_array();

    for (size_t i = 0; parents && i < r->nparents; i++)
        json_array_append_new(parents, json_string(r->parents[i]));
    return json_pack("{sssssosososIsI}", "name", r->name, "description", r->description, "allow",
                     rules_json(r, GH_ALLOW), "deny", rules_json(r, GH_DENY), "parents", parents,
                     "created", (json_int_t)r->created, "modified", (json_int_t)r->modified);
}

/* {"id","role","user"|"group","scope","created"}; names are looked up now. */
json_t *gh_json_binding(gh_txn *txn, const gh_binding *b)
{
    char name[GH_NAME_MAX + 24];
    const char *key = b->subject.kind == GH_MEMBER_USER ? "user" : "group";
    int rc;

    if (b->subject.kind == GH_MEMBER_USER) {
        gh_user u;
        rc = gh_store_user_get_by_id(txn, b->subject.id, &u);
        snprintf(name, sizeof(name), "%s", rc == 0 ? u.name : "");
    } else {
        gh_group g;
        rc = gh_store_group_get_by_id(txn, b->subject.id, &g);
        snprintf(name, sizeof(name), "%s", rc == 0 ? g.name : "");
    }
    if (rc != 0)
        snprintf(name, sizeof(name), "#%llu", (unsigned long long)b->subject.id);
    return json_pack("{sIsssssosI}", "id", (json_int_t)b->id, "role", b->role, key, name, "scope",
                     b->scope[0] ? json_string(b->scope) : json_null(), "created",
                     (json_int_t)b->created);
}

/* ---- request parsing ---- */

enum { RF_DESC = 1u << 0, RF_ALLOW = 1u << 1, RF_DENY = 1u << 2, RF_PARENTS = 1u << 3 };

/* Reads key (an array of {"action","resource"}) into r with effect. */
static int parse_rules(gh_opctx *c, const char *key, gh_effect effect, gh_role *r, unsigned *given,
                       unsigned flag)
{
    json_t *arr = json_object_get(c->req, key), *it;
    char msg[GH_ERRMSG_MAX];
    size_t i;
    int rc;

    if (arr == NULL || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return gh_op_fail(c, GH_EINVAL, "'%s' must be an array of {\"action\",\"resource\"}", key);
    *given |= flag;
    json_array_foreach(arr, i, it)
    {
        json_t *ja = json_object_get(it, "action"), *jr = json_object_get(it, "resource");
        const char *action, *resource;

        if (!json_is_object(it) || !json_is_string(ja) || !json_is_string(jr) ||
            json_object_size(it) != 2)
            return gh_op_fail(c, GH_EINVAL,
                              "'%s[%zu]' must be an object with string 'action' and 'resource'",
                              key, i);
        action = json_string_value(ja);
        resource = json_string_value(jr);
        if (strlen(action) != json_string_length(ja) ||
            gh_schema_action_valid(action, msg, sizeof(msg)) != 0)
            return gh_op_fail(c, GH_EINVAL, "'%s[%zu].action' \"%.64s\": %s", key, i, action,
                              strlen(action) != json_string_length(ja) ? "contains a NUL" : msg);
        if (strlen(resource) != json_string_length(jr) ||
            gh_schema_resource_valid(resource, msg, sizeof(msg)) != 0)
            return gh_op_fail(c, GH_EINVAL, "'%s[%zu].resource' \"%.64s\": %s", key, i, resource,
                              strlen(resource) != json_string_length(jr) ? "contains a NUL" : msg);
        rc = gh_role_add_rule(r, effect, action, resource);
        if (rc == GH_ETOOBIG)
            return gh_op_fail(c, rc, "a role holds at most %d rules", GH_ROLE_RULES_MAX);
        if (rc)
            return gh_op_fail(c, rc, "cannot add rule");
    }
    return 0;
}

static int parse_role(gh_opctx *c, gh_role **out, unsigned *given)
{
    const char *name, *desc;
    char msg[GH_ERRMSG_MAX];
    json_t *parents, *it;
    gh_role *r = NULL;
    size_t i;
    int rc;

    *out = NULL;
    *given = 0;
    if ((rc = gh_arg_name(c, "name", 1, &name)) != 0)
        return rc;
    if ((r = gh_role_new(name)) == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    rc = gh_arg_str(c, "description", 0, GH_TEXT_MAX, &desc);
    if (rc == 0) {
        if (gh_schema_text_valid("description", desc, GH_TEXT_MAX, msg, sizeof(msg)) != 0) {
            rc = gh_op_fail(c, GH_EINVAL, "%s", msg);
            goto fail;
        }
        snprintf(r->description, sizeof(r->description), "%s", desc);
        *given |= RF_DESC;
    } else if (rc != GH_ENOTFOUND) {
        goto fail;
    }
    if ((rc = parse_rules(c, "allow", GH_ALLOW, r, given, RF_ALLOW)) != 0 ||
        (rc = parse_rules(c, "deny", GH_DENY, r, given, RF_DENY)) != 0)
        goto fail;
    parents = json_object_get(c->req, "parents");
    if (parents != NULL && !json_is_null(parents)) {
        if (!json_is_array(parents)) {
            rc = gh_op_fail(c, GH_EINVAL, "'parents' must be an array of role names");
            goto fail;
        }
        *given |= RF_PARENTS;
        json_array_foreach(parents, i, it)
        {
            const char *p = json_string_value(it);
            if (p == NULL || strlen(p) != json_string_length(it) ||
                gh_schema_name_valid(p, msg, sizeof(msg)) != 0) {
                rc = gh_op_fail(c, GH_EINVAL, "'parents[%zu]': %s", i,
                                p == NULL ? "must be a string" : msg);
                goto fail;
            }
            if (strcmp(p, name) == 0) {
                rc = gh_op_fail(c, GH_ECYCLE, "role '%s' cannot inherit from itself", name);
                goto fail;
            }
            rc = gh_role_add_parent(r, p);
            if (rc) {
                rc = gh_op_fail(c, rc, "a role has at most %d parents", GH_ROLE_PARENTS_MAX);
                goto fail;
            }
        }
    }
    *out = r;
    return 0;
fail:
    gh_role_free(r);
    return rc;
}

/* ---- role.add, role.set, role.del ---- */

typedef struct role_arg {
    gh_role *in;    /* the request's fields */
    unsigned given; /* RF_* present in the request */
    int force;
    gh_role *out; /* the role as stored, for the reply */
} role_arg;

static void role_arg_free(void *p)
{
    role_arg *ra = p;

    gh_role_free(ra->in);
    gh_role_free(ra->out);
    free(ra);
}

static int role_reply(void *p, json_t *resp)
{
    role_arg *ra = p;

    if (ra->out == NULL)
        return GH_EINTERNAL;
    return json_object_set_new(resp, "role", gh_json_role(ra->out)) ? GH_ENOMEM : 0;
}

/* Reads back the stored role for the reply (apply may run twice). */
static int reread(gh_txn *txn, role_arg *ra)
{
    gh_role_free(ra->out);
    ra->out = NULL;
    return gh_store_role_get(txn, ra->in->name, &ra->out);
}

static int role_add_apply(gh_txn *txn, void *p)
{
    role_arg *ra = p;
    gh_role *old = NULL;
    int rc;

    if (gh_store_role_get(txn, ra->in->name, &old) == 0) {
        gh_role_free(old);
        return gh_txn_fail(txn, GH_EEXISTS, "a role named '%s' already exists", ra->in->name);
    }
    if ((rc = gh_store_role_add(txn, ra->in)) != 0)
        return rc;
    return reread(txn, ra);
}

/* Merges the given fields over the stored role, then replaces it. */
static int role_set_apply(gh_txn *txn, void *p)
{
    role_arg *ra = p;
    gh_role *old = NULL, *r = NULL;
    int rc;

    rc = gh_store_role_get(txn, ra->in->name, &old);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no role named '%s'", ra->in->name);
    if (rc)
        return rc;
    rc = GH_ENOMEM;
    if ((r = gh_role_new(old->name)) == NULL)
        goto done;
    r->created = old->created;
    memcpy(r->description, (ra->given & RF_DESC) ? ra->in->description : old->description,
           sizeof(r->description));
    for (int e = GH_ALLOW; e <= GH_DENY; e++) {
        const gh_role *from = (ra->given & (e == GH_ALLOW ? RF_ALLOW : RF_DENY)) ? ra->in : old;
        for (size_t i = 0; i < from->nrules; i++)
            if (from->rules[i].effect == (gh_effect)e &&
                (rc = gh_role_add_rule(r, from->rules[i].effect, from->rules[i].action,
                                       from->rules[i].resource)) != 0)
                goto done;
    }
    {
        const gh_role *from = (ra->given & RF_PARENTS) ? ra->in : old;
        for (size_t i = 0; i < from->nparents; i++)
            if ((rc = gh_role_add_parent(r, from->parents[i])) != 0)
                goto done;
    }
    if ((rc = gh_store_role_set(txn, r)) != 0)
        goto done;
    rc = reread(txn, ra);
done:
    gh_role_free(old);
    gh_role_free(r);
    return rc;
}

static int role_del_apply(gh_txn *txn, void *p)
{
    role_arg *ra = p;
    gh_role *old = NULL;
    int rc = gh_store_role_get(txn, ra->in->name, &old);

    gh_role_free(old);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no role named '%s'", ra->in->name);
    if (rc)
        return rc;
    return gh_store_role_del(txn, ra->in->name, ra->force);
}

static int defer_role(gh_opctx *c, gh_store_write_fn apply, int with_reply, gh_role *in,
                      unsigned given, int force)
{
    role_arg *ra = calloc(1, sizeof(*ra));

    if (ra == NULL) {
        gh_role_free(in);
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    }
    ra->in = in;
    ra->given = given;
    ra->force = force;
    return gh_op_defer(c, apply, with_reply ? role_reply : NULL, role_arg_free, ra);
}

static int op_role_add(gh_opctx *c)
{
    gh_role *r;
    unsigned given;
    int rc = parse_role(c, &r, &given);

    if (rc)
        return rc;
    return defer_role(c, role_add_apply, 1, r, given, 0);
}

static int op_role_set(gh_opctx *c)
{
    gh_role *r;
    unsigned given;
    int rc = parse_role(c, &r, &given);

    if (rc)
        return rc;
    return defer_role(c, role_set_apply, 1, r, given, 0);
}

static int op_role_del(gh_opctx *c)
{
    const char *name;
    gh_role *r;
    int force = 0, rc;

    if ((rc = gh_arg_name(c, "name", 1, &name)) != 0)
        return rc;
    rc = gh_arg_bool(c, "force", 0, &force);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    if ((r = gh_role_new(name)) == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    return defer_role(c, role_del_apply, 0, r, 0, force);
}

/* ---- role.get, role.list ---- */

static int op_role_get(gh_opctx *c)
{
    const char *name;
    gh_role *r = NULL;
    int rc;

    if ((rc = gh_arg_name(c, "name", 1, &name)) != 0)
        return rc;
    rc = gh_store_role_get(c->txn, name, &r);
    if (rc == GH_ENOTFOUND)
        return gh_op_fail(c, rc, "no role named '%s'", name);
    if (rc)
        return gh_op_fail(c, rc, "cannot read role '%s'", name);
    rc = json_object_set_new(c->resp, "role", gh_json_role(r)) ? GH_ENOMEM : 0;
    gh_role_free(r);
    return rc;
}

static int list_role(const gh_role *r, void *arg)
{
    return json_array_append_new(arg, gh_json_role(r)) ? 1 : 0;
}

static int op_role_list(gh_opctx *c)
{
    json_t *arr = json_array();
    int rc;

    if (arr == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    rc = gh_store_role_list(c->txn, list_role, arr);
    if (rc) {
        json_decref(arr);
        return gh_op_fail(c, rc, "cannot list roles");
    }
    return json_object_set_new(c->resp, "roles", arr) ? GH_ENOMEM : 0;
}

/* ---- grant, revoke ---- */

typedef struct grant_arg {
    char role[GH_NAME_MAX + 1];
    gh_member_kind kind;
    char subject[GH_NAME_MAX + 1];
    char scope[GH_PATTERN_MAX + 1];
    uint64_t binding; /* input: revoke by id (0: by fields); never written by apply */
    uint64_t out;     /* output of the last run: the binding granted or revoked */
} grant_arg;

static void grant_arg_free(void *p)
{
    free(p);
}

static int grant_reply(void *p, json_t *resp)
{
    grant_arg *ga = p;

    return json_object_set_new(resp, "binding", json_integer((json_int_t)ga->out)) ? GH_ENOMEM : 0;
}

/* The binding the request's fields describe (subject resolved now). */
static int grant_like(gh_txn *txn, const grant_arg *ga, gh_binding *b)
{
    int rc;

    memset(b, 0, sizeof(*b));
    snprintf(b->role, sizeof(b->role), "%s", ga->role);
    snprintf(b->scope, sizeof(b->scope), "%s", ga->scope);
    b->subject.kind = ga->kind;
    if (ga->kind == GH_MEMBER_USER) {
        gh_user u;
        if ((rc = gh_store_user_get(txn, ga->subject, &u)) == 0)
            b->subject.id = u.id;
    } else {
        gh_group g;
        if ((rc = gh_store_group_get(txn, ga->subject, &g)) == 0)
            b->subject.id = g.id;
    }
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no %s named '%s'",
                           ga->kind == GH_MEMBER_USER ? "user" : "group", ga->subject);
    return rc;
}

static int grant_apply(gh_txn *txn, void *p)
{
    grant_arg *ga = p;
    gh_binding b, old;
    gh_role *r = NULL;
    int rc;

    ga->out = 0;
    if ((rc = grant_like(txn, ga, &b)) != 0)
        return rc;
    rc = gh_store_role_get(txn, ga->role, &r);
    gh_role_free(r);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no role named '%s'", ga->role);
    if (rc)
        return rc;
    if (gh_store_binding_find(txn, &b, &old) == 0)
        return gh_txn_fail(txn, GH_EEXISTS,
                           "role '%s' is already granted to %s '%s'%s%s (binding %llu)", ga->role,
                           ga->kind == GH_MEMBER_USER ? "user" : "group", ga->subject,
                           ga->scope[0] ? " on " : "", ga->scope, (unsigned long long)old.id);
    if ((rc = gh_store_binding_add(txn, &b)) != 0)
        return rc;
    ga->out = b.id;
    return 0;
}

static int revoke_apply(gh_txn *txn, void *p)
{
    grant_arg *ga = p;
    gh_binding b, found;
    uint64_t id = ga->binding;
    int rc;

    ga->out = 0;
    if (ga->subject[0] != '\0') {
        if ((rc = grant_like(txn, ga, &b)) != 0)
            return rc;
        rc = gh_store_binding_find(txn, &b, &found);
        if (rc == GH_ENOTFOUND)
            return gh_txn_fail(txn, rc, "role '%s' is not granted to %s '%s'%s%s", ga->role,
                               ga->kind == GH_MEMBER_USER ? "user" : "group", ga->subject,
                               ga->scope[0] ? " on " : "", ga->scope);
        if (rc)
            return rc;
        id = found.id;
    }
    rc = gh_store_binding_del(txn, id);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no binding %llu", (unsigned long long)id);
    if (rc == 0)
        ga->out = id;
    return rc;
}

/* {"role","user"|"group","scope"?} into ga. */
static int parse_grant(gh_opctx *c, grant_arg *ga)
{
    const char *role, *user = NULL, *group = NULL, *scope = NULL;
    char msg[GH_ERRMSG_MAX];
    int rc;

    if ((rc = gh_arg_name(c, "role", 1, &role)) != 0)
        return rc;
    rc = gh_arg_name(c, "user", 0, &user);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    rc = gh_arg_name(c, "group", 0, &group);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    if ((user == NULL) == (group == NULL))
        return gh_op_fail(c, GH_EINVAL, "give exactly one of 'user' or 'group'");
    rc = gh_arg_str(c, "scope", 0, GH_PATTERN_MAX, &scope);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    if (scope != NULL && gh_schema_resource_valid(scope, msg, sizeof(msg)) != 0)
        return gh_op_fail(c, GH_EINVAL, "'scope' \"%.64s\": %s", scope, msg);
    snprintf(ga->role, sizeof(ga->role), "%s", role);
    ga->kind = user ? GH_MEMBER_USER : GH_MEMBER_GROUP;
    snprintf(ga->subject, sizeof(ga->subject), "%s", user ? user : group);
    snprintf(ga->scope, sizeof(ga->scope), "%s", scope ? scope : "");
    return 0;
}

static int op_grant(gh_opctx *c)
{
    grant_arg *ga = calloc(1, sizeof(*ga));
    int rc;

    if (ga == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    if ((rc = parse_grant(c, ga)) != 0) {
        free(ga);
        return rc;
    }
    return gh_op_defer(c, grant_apply, grant_reply, grant_arg_free, ga);
}

static int op_revoke(gh_opctx *c)
{
    grant_arg *ga = calloc(1, sizeof(*ga));
    int64_t id;
    int rc;

    if (ga == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    rc = gh_arg_int(c, "binding", 0, 1, INT64_MAX, &id);
    if (rc == 0) {
        if (json_object_get(c->req, "role") || json_object_get(c->req, "user") ||
            json_object_get(c->req, "group") || json_object_get(c->req, "scope")) {
            rc = gh_op_fail(c, GH_EINVAL, "give either 'binding' or 'role' with 'user'|'group'");
            goto fail;
        }
        ga->binding = (uint64_t)id;
    } else if (rc == GH_ENOTFOUND) {
        if ((rc = parse_grant(c, ga)) != 0)
            goto fail;
    } else {
        goto fail;
    }
    return gh_op_defer(c, revoke_apply, grant_reply, grant_arg_free, ga);
fail:
    free(ga);
    return rc;
}

/* ---- bindings ---- */

typedef struct blist {
    gh_txn *txn;
    json_t *arr;
} blist;

static int list_binding(const gh_binding *b, void *arg)
{
    blist *bl = arg;

    return json_array_append_new(bl->arr, gh_json_binding(bl->txn, b)) ? 1 : 0;
}

static int op_bindings(gh_opctx *c)
{
    const char *user = NULL, *group = NULL, *role = NULL;
    blist bl = {c->txn, NULL};
    int rc, n = 0;

    if ((rc = gh_arg_name(c, "user", 0, &user)) != 0 && rc != GH_ENOTFOUND)
        return rc;
    if ((rc = gh_arg_name(c, "group", 0, &group)) != 0 && rc != GH_ENOTFOUND)
        return rc;
    if ((rc = gh_arg_name(c, "role", 0, &role)) != 0 && rc != GH_ENOTFOUND)
        return rc;
    n = (user != NULL) + (group != NULL) + (role != NULL);
    if (n > 1)
        return gh_op_fail(c, GH_EINVAL, "give at most one of 'user', 'group' or 'role'");
    if ((bl.arr = json_array()) == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    if (user || group) {
        gh_member m;
        m.kind = user ? GH_MEMBER_USER : GH_MEMBER_GROUP;
        m.id = 0;
        if (user) {
            gh_user u;
            if ((rc = gh_store_user_get(c->txn, user, &u)) == 0)
                m.id = u.id;
        } else {
            gh_group g;
            if ((rc = gh_store_group_get(c->txn, group, &g)) == 0)
                m.id = g.id;
        }
        if (rc == GH_ENOTFOUND) {
            rc =
                gh_op_fail(c, rc, "no %s named '%s'", user ? "user" : "group", user ? user : group);
            goto fail;
        }
        if (rc == 0)
            rc = gh_store_bindings_of_subject(c->txn, m, list_binding, &bl);
    } else if (role) {
        gh_role *r = NULL;
        rc = gh_store_role_get(c->txn, role, &r);
        gh_role_free(r);
        if (rc == GH_ENOTFOUND) {
            rc = gh_op_fail(c, rc, "no role named '%s'", role);
            goto fail;
        }
        if (rc == 0)
            rc = gh_store_bindings_of_role(c->txn, role, list_binding, &bl);
    } else {
        rc = gh_store_binding_list(c->txn, list_binding, &bl);
    }
    if (rc) {
        rc = gh_op_fail(c, rc, "cannot list bindings");
        goto fail;
    }
    return json_object_set_new(c->resp, "bindings", bl.arr) ? GH_ENOMEM : 0;
fail:
    json_decref(bl.arr);
    return rc;
}

/* ---- check, check.batch ---- */

/* The message for a (action, resource) pair gh_authz_* refused. */
static int bad_pair(gh_opctx *c, const char *where, const char *action, const char *resource)
{
    char msg[GH_ERRMSG_MAX];

    if (strchr(action, '*') != NULL)
        return gh_op_fail(c, GH_EINVAL,
                          "%saction \"%.64s\": a check names one action, not a "
                          "pattern",
                          where, action);
    if (gh_schema_action_valid(action, msg, sizeof(msg)) != 0)
        return gh_op_fail(c, GH_EINVAL, "%saction \"%.64s\": %s", where, action, msg);
    if (gh_schema_resource_concrete_valid(resource, msg, sizeof(msg)) != 0)
        return gh_op_fail(c, GH_EINVAL, "%sresource \"%.64s\": %s", where, resource, msg);
    return gh_op_fail(c, GH_EINVAL, "%sresource \"%.64s\" is not a concrete resource", where,
                      resource);
}

/* An unknown user, to a peer that is not an administrator, looks like a
 * user every check denies: the answer must not tell who exists. */
static int deny_unknown(gh_opctx *c, const char *action, const char *resource, int want)
{
    const char *name = gh_arg_peek(c, "user");
    char buf[GH_ERRMSG_MAX + 64];
    json_object_set_new(c->resp, "allow", json_false());
    if (!want)
        return 0;
    snprintf(buf, sizeof(buf), "no rule of user %s matches %.64s on %.64s: default deny",
             name ? name : "?", action, resource);
    json_object_set_new(c->resp, "explain",
                        json_pack("{sssss[{ssss}]ss}", "decision", "deny", "reason", "default_deny",
                                  "path", "type", "user", "name", name ? name : "?", "summary",
                                  buf));
    return 0;
}

/* The syntax gh_authz_* demands of a checked pair, tested before any lookup. */
static int pair_valid(const char *action, const char *resource)
{
    char msg[GH_ERRMSG_MAX];
    return strchr(action, '*') == NULL && gh_schema_action_valid(action, msg, sizeof(msg)) == 0 &&
           gh_schema_resource_concrete_valid(resource, msg, sizeof(msg)) == 0;
}

static int op_check(gh_opctx *c)
{
    const char *action, *resource;
    json_t *explain = NULL;
    uint64_t user_id;
    int want = 0, allow = 0, rc;

    /* every field is validated before anyone is looked up */
    if ((rc = gh_arg_str(c, "action", 1, GH_PATTERN_MAX, &action)) != 0 ||
        (rc = gh_arg_str(c, "resource", 1, GH_PATTERN_MAX, &resource)) != 0)
        return rc;
    rc = gh_arg_bool(c, "explain", 0, &want);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    if (!pair_valid(action, resource))
        return bad_pair(c, "", action, resource);
    if ((rc = gh_op_resolve_subject(c, &user_id)) != 0) {
        if (rc == GH_ENOTFOUND && !c->admin)
            return deny_unknown(c, action, resource, want);
        return rc;
    }
    if (want)
        rc = gh_authz_explain(c->authz, c->txn, user_id, action, resource, &allow, &explain);
    else
        rc = gh_authz_check(c->authz, c->txn, user_id, action, resource, &allow);
    if (rc == GH_EINVAL)
        return bad_pair(c, "", action, resource);
    if (rc == GH_ENOTFOUND)
        return gh_op_fail(c, rc, "the user no longer exists");
    if (rc)
        return gh_op_fail(c, rc, "authorization check failed (see the server log)");
    gh_op_reply_bool(c, "allow", allow);
    if (explain)
        json_object_set_new(c->resp, "explain", explain);
    return 0;
}

static int op_check_batch(gh_opctx *c)
{
    json_t *checks = json_object_get(c->req, "checks"), *it;
    const char **actions = NULL, **resources = NULL;
    int *allow = NULL;
    uint64_t user_id;
    size_t n, i, bad = 0;
    char where[48];
    int rc;

    int unknown = 0;
    if (!json_is_array(checks))
        return gh_op_fail(c, GH_EINVAL, "'checks' must be an array of {\"action\",\"resource\"}");
    if ((rc = gh_op_resolve_subject(c, &user_id)) != 0) {
        if (rc != GH_ENOTFOUND || c->admin)
            return rc;
        unknown = 1; /* validated below, then denied like a user with no rules */
        user_id = 0;
    }
    n = json_array_size(checks);
    if (n > CHECK_BATCH_MAX)
        return gh_op_fail(c, GH_ETOOBIG, "'checks' holds %zu checks; at most %d", n,
                          CHECK_BATCH_MAX);
    actions = calloc(n + 1, sizeof(*actions));
    resources = calloc(n + 1, sizeof(*resources));
    allow = calloc(n + 1, sizeof(*allow));
    if (actions == NULL || resources == NULL || allow == NULL) {
        rc = gh_op_fail(c, GH_ENOMEM, "out of memory");
        goto done;
    }
    json_array_foreach(checks, i, it)
    {
        json_t *ja = json_object_get(it, "action"), *jr = json_object_get(it, "resource");
        if (!json_is_string(ja) || !json_is_string(jr) ||
            strlen(json_string_value(ja)) != json_string_length(ja) ||
            strlen(json_string_value(jr)) != json_string_length(jr)) {
            rc = gh_op_fail(c, GH_EINVAL,
                            "'checks[%zu]' must be an object with string 'action' and 'resource'",
                            i);
            goto done;
        }
        actions[i] = json_string_value(ja);
        resources[i] = json_string_value(jr);
        if (unknown && !pair_valid(actions[i], resources[i])) {
            snprintf(where, sizeof(where), "checks[%zu]: ", i);
            rc = bad_pair(c, where, actions[i], resources[i]);
            goto done;
        }
    }
    rc = gh_authz_check_many(c->authz, c->txn, user_id, n, actions, resources, allow, &bad);
    if (unknown && rc == GH_ENOTFOUND)
        rc = 0; /* allow[] stays all false */
    if (rc == GH_EINVAL) {
        snprintf(where, sizeof(where), "checks[%zu]: ", bad);
        rc = bad_pair(c, where, actions[bad], resources[bad]);
        goto done;
    }
    if (rc == GH_ENOTFOUND) {
        rc = gh_op_fail(c, rc, "the user no longer exists");
        goto done;
    }
    if (rc) {
        rc = gh_op_fail(c, rc, "authorization check failed (see the server log)");
        goto done;
    }
    gh_op_reply_bools(c, "results", allow, n);
done:
    free(actions);
    free(resources);
    free(allow);
    return rc;
}

/* ---- perms, who_can ---- */

static int op_perms(gh_opctx *c)
{
    const char *name;
    json_t *rules = NULL;
    uint64_t user_id;
    gh_user u;
    int rc;

    /* an administrator's question about anyone, or a token holder's about
     * itself (a service may check others, but not read their rules) */
    if (json_object_get(c->req, "user") != NULL && !c->admin)
        return gh_op_fail(c, GH_EPERM,
                          "'perms' of a named user needs an administrator; present "
                          "the user's 'token'");
    if ((rc = gh_op_resolve_subject(c, &user_id)) != 0)
        return rc;
    rc = gh_store_user_get_by_id(c->txn, user_id, &u);
    name = u.name;
    if (rc == GH_ENOTFOUND)
        return gh_op_fail(c, rc, "the user no longer exists");
    if (rc)
        return gh_op_fail(c, rc, "cannot read the user");
    rc = gh_authz_perms(c->authz, c->txn, u.id, &rules);
    if (rc)
        return gh_op_fail(c, rc, "cannot compute the permissions of '%s' (see the server log)",
                          name);
    json_object_set_new(c->resp, "user", json_string(u.name));
    json_object_set_new(c->resp, "state", json_string(gh_user_state_name(u.state)));
    json_object_set_new(c->resp, "rules", rules);
    return 0;
}

static int op_who_can(gh_opctx *c)
{
    const char *action, *resource;
    json_t *out = NULL;
    int rc;

    if ((rc = gh_arg_str(c, "action", 1, GH_PATTERN_MAX, &action)) != 0 ||
        (rc = gh_arg_str(c, "resource", 1, GH_PATTERN_MAX, &resource)) != 0)
        return rc;
    rc = gh_authz_who_can(c->authz, c->txn, action, resource, &out);
    if (rc == GH_EINVAL)
        return bad_pair(c, "", action, resource);
    if (rc)
        return gh_op_fail(c, rc, "who_can failed (see the server log)");
    rc = json_object_update(c->resp, out) ? GH_ENOMEM : 0;
    json_decref(out);
    return rc;
}

const gh_op_def gh__ops_authz[] = {
    {"role.add", op_role_add, GH_OPF_ADMIN | GH_OPF_WRITE, GH_CLASS_ADMIN},
    {"role.get", op_role_get, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {"role.list", op_role_list, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {"role.set", op_role_set, GH_OPF_ADMIN | GH_OPF_WRITE, GH_CLASS_ADMIN},
    {"role.del", op_role_del, GH_OPF_ADMIN | GH_OPF_WRITE, GH_CLASS_ADMIN},
    {"grant", op_grant, GH_OPF_ADMIN | GH_OPF_WRITE, GH_CLASS_ADMIN},
    {"revoke", op_revoke, GH_OPF_ADMIN | GH_OPF_WRITE, GH_CLASS_ADMIN},
    {"bindings", op_bindings, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {"check", op_check, GH_OPF_FLAT, GH_CLASS_SUBJECT},
    {"check.batch", op_check_batch, 0, GH_CLASS_SUBJECT},
    {"perms", op_perms, 0, GH_CLASS_SUBJECT},
    {"who_can", op_who_can, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {NULL, NULL, 0, GH_CLASS_ADMIN},
};
