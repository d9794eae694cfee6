/*
 * store_role.c: roles (rules, inheritance) and bindings (role -> user/group,
 * optionally scoped).
 *
 * The one thing to know: DB_ROLE_CHILDREN mirrors every role's "parents"
 * list (parent -> child) and is what cycle checks and deletes walk; a change
 * to a role's parents must update both in the same txn. Likewise a binding
 * lives in DB_BINDINGS and in its two dupsort indices (subject, role).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/log.h"
#include "schema/store-int.h"

/* ---- small helpers ---- */

typedef struct names {
    char (*v)[GH_NAME_MAX + 1];
    size_t n, cap;
} names;

static int names_has(const names *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return 1;
    return 0;
}

static int names_add(names *l, const void *s, size_t len)
{
    if (len > GH_NAME_MAX)
        return GH_EINTERNAL;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        void *p = realloc(l->v, cap * sizeof(*l->v));
        if (p == NULL)
            return GH_ENOMEM;
        l->v = p;
        l->cap = cap;
    }
    memcpy(l->v[l->n], s, len);
    l->v[l->n][len] = '\0';
    l->n++;
    return 0;
}

/* Collects the dup values of key in db: names (as strings) or ids. */
static int collect(gh_txn *txn, int db, const void *key, size_t klen, names *nl, gh__idset *ids)
{
    MDB_cursor *cur = NULL;
    MDB_val k = {klen, (void *)key}, v;
    int rc;

    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, db), &cur), "cursor");
    if (rc != 0)
        goto done;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        if (nl != NULL) {
            rc = names_add(nl, v.mv_data, v.mv_size);
        } else if (v.mv_size != 8) {
            rc = GH_EINTERNAL;
        } else {
            rc = gh__idset_add(ids, gh__get_u64(v.mv_data));
            rc = rc < 0 ? rc : 0;
        }
        if (rc != 0)
            goto done;
    }
    rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "dup cursor");
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

/* ---- roles ---- */

static int role_valid(gh_txn *txn, const gh_role *r)
{
    int rc;

    if ((rc = gh__terminated(txn, "role name", r->name, sizeof(r->name))) != 0 ||
        (rc = gh__terminated(txn, "description", r->description, sizeof(r->description))) != 0)
        return rc;
    if (gh_schema_name_valid(r->name, txn->err, sizeof(txn->err)) != 0 ||
        gh_schema_text_valid("description", r->description, GH_TEXT_MAX, txn->err,
                             sizeof(txn->err)) != 0)
        return GH_EINVAL;
    if (r->nrules > GH_ROLE_RULES_MAX)
        return gh_txn_fail(txn, GH_ETOOBIG, "more than %d rules", GH_ROLE_RULES_MAX);
    if (r->nparents > GH_ROLE_PARENTS_MAX)
        return gh_txn_fail(txn, GH_ETOOBIG, "more than %d parent roles", GH_ROLE_PARENTS_MAX);
    for (size_t i = 0; i < r->nrules; i++) {
        const gh_rule *ru = &r->rules[i];
        if (ru->effect != GH_ALLOW && ru->effect != GH_DENY)
            return gh_txn_fail(txn, GH_EINVAL, "rule %zu: invalid effect", i + 1);
        if (ru->action == NULL || ru->resource == NULL)
            return gh_txn_fail(txn, GH_EINVAL, "rule %zu: missing action or resource", i + 1);
        if (strlen(ru->action) > GH_PATTERN_MAX || strlen(ru->resource) > GH_PATTERN_MAX)
            return gh_txn_fail(txn, GH_ETOOBIG, "rule %zu: pattern longer than %d bytes", i + 1,
                               GH_PATTERN_MAX);
        char why[GH_ERRMSG_MAX - 32];
        if (gh_schema_action_valid(ru->action, why, sizeof(why)) != 0 ||
            gh_schema_resource_valid(ru->resource, why, sizeof(why)) != 0)
            return gh_txn_fail(txn, GH_EINVAL, "rule %zu: %s", i + 1, why);
    }
    for (size_t i = 0; i < r->nparents; i++) {
        if ((rc = gh__terminated(txn, "parent role", r->parents[i], GH_NAME_MAX + 1)) != 0)
            return rc;
        if (gh_schema_name_valid(r->parents[i], txn->err, sizeof(txn->err)) != 0)
            return GH_EINVAL;
        if (strcmp(r->parents[i], r->name) == 0)
            return gh_txn_fail(txn, GH_ECYCLE, "role %s cannot inherit from itself", r->name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->parents[i], r->parents[j]) == 0)
                return gh_txn_fail(txn, GH_EINVAL, "parent role %s listed twice", r->parents[i]);
    }
    return 0;
}

/* Parents must exist and none may be a descendant of r (inheritance cycle). */
static int parents_ok(gh_txn *txn, const gh_role *r)
{
    names desc = {0};
    MDB_val v;
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < r->nparents; i++) {
        rc = gh__get(txn, DB_ROLES, r->parents[i], strlen(r->parents[i]), &v);
        if (rc == GH_ENOTFOUND)
            rc = gh_txn_fail(txn, rc, "parent role %s does not exist", r->parents[i]);
    }
    if (rc != 0 || r->nparents == 0)
        goto done;
    /* Everything that inherits from r, transitively. */
    rc = collect(txn, DB_ROLE_CHILDREN, r->name, strlen(r->name), &desc, NULL);
    for (size_t i = 0; rc == 0 && i < desc.n; i++) {
        names more = {0};
        rc = collect(txn, DB_ROLE_CHILDREN, desc.v[i], strlen(desc.v[i]), &more, NULL);
        for (size_t j = 0; rc == 0 && j < more.n; j++)
            if (!names_has(&desc, more.v[j]))
                rc = names_add(&desc, more.v[j], strlen(more.v[j]));
        free(more.v);
    }
    for (size_t i = 0; rc == 0 && i < r->nparents; i++)
        if (names_has(&desc, r->parents[i]))
            rc = gh_txn_fail(txn, GH_ECYCLE, "role %s inherits from %s: cycle", r->parents[i],
                             r->name);
done:
    free(desc.v);
    return rc;
}

static int edges(gh_txn *txn, const gh_role *r, int add)
{
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < r->nparents; i++) {
        const char *p = r->parents[i];
        if (add) {
            rc = gh__put(txn, DB_ROLE_CHILDREN, p, strlen(p), r->name, strlen(r->name), 0);
        } else {
            rc = gh__del(txn, DB_ROLE_CHILDREN, p, strlen(p), r->name, strlen(r->name));
            if (rc == GH_ENOTFOUND)
                rc = 0;
        }
    }
    return rc;
}

static int role_load(gh_txn *txn, const char *name, json_t **obj, gh_role **r)
{
    int rc;

    *obj = NULL;
    if (r != NULL)
        *r = NULL;
    if (name == NULL || name[0] == '\0' || strlen(name) > GH_NAME_MAX)
        return gh_txn_fail(txn, GH_ENOTFOUND, "no such role");
    rc = gh__json_get(txn, DB_ROLES, name, strlen(name), obj);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no role named %s", name);
    if (rc == 0 && r != NULL) {
        rc = gh__role_from_json(*obj, r);
        if (rc != 0) {
            json_decref(*obj);
            *obj = NULL;
        }
    }
    return rc;
}

int gh_store_role_add(gh_txn *txn, const gh_role *r)
{
    json_t *obj = NULL;
    gh_role *n = NULL;
    MDB_val v;
    int rc;

    rc = role_valid(txn, r);
    if (rc != 0)
        goto done;
    rc = gh__get(txn, DB_ROLES, r->name, strlen(r->name), &v);
    if (rc == 0)
        rc = gh_txn_fail(txn, GH_EEXISTS, "role %s already exists", r->name);
    else if (rc == GH_ENOTFOUND)
        rc = parents_ok(txn, r);
    if (rc != 0)
        goto done;
    n = gh_role_dup(r);
    obj = json_object();
    if (n == NULL || obj == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    n->created = n->modified = txn->now;
    if ((rc = gh__role_to_json(obj, n)) != 0 ||
        (rc = gh__json_put(txn, DB_ROLES, n->name, strlen(n->name), obj)) != 0 ||
        (rc = edges(txn, n, 1)) != 0 || (rc = gh__authz_bump(txn)) != 0)
        goto done;
    rc = gh__log(txn, "role.add", "%s", n->name);
done:
    gh_role_free(n);
    json_decref(obj);
    return rc;
}

int gh_store_role_get(gh_txn *txn, const char *name, gh_role **out)
{
    json_t *obj = NULL;
    int rc = role_load(txn, name, &obj, out);

    json_decref(obj);
    return rc;
}

int gh_store_role_set(gh_txn *txn, const gh_role *r)
{
    json_t *obj = NULL;
    gh_role *old = NULL, *n = NULL;
    int rc;

    rc = role_valid(txn, r);
    if (rc == 0)
        rc = role_load(txn, r->name, &obj, &old);
    if (rc == 0)
        rc = parents_ok(txn, r);
    if (rc != 0)
        goto done;
    n = gh_role_dup(r);
    if (n == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    n->created = old->created;
    n->modified = txn->now;
    if ((rc = edges(txn, old, 0)) != 0 || (rc = edges(txn, n, 1)) != 0 ||
        (rc = gh__role_to_json(obj, n)) != 0 ||
        (rc = gh__json_put(txn, DB_ROLES, n->name, strlen(n->name), obj)) != 0 ||
        (rc = gh__authz_bump(txn)) != 0)
        goto done;
    rc = gh__log(txn, "role.set", "%s", n->name);
done:
    gh_role_free(old);
    gh_role_free(n);
    json_decref(obj);
    return rc;
}

static int binding_drop(gh_txn *txn, uint64_t id, gh_binding *out);

/* Removes parent from the stored "parents" array of child, keeping other keys. */
static int unparent(gh_txn *txn, const char *child, const char *parent)
{
    json_t *obj = NULL, *arr;
    size_t i;
    int rc;

    rc = role_load(txn, child, &obj, NULL);
    if (rc != 0)
        goto done;
    arr = json_object_get(obj, "parents");
    for (i = 0; json_is_array(arr) && i < json_array_size(arr);) {
        const char *p = json_string_value(json_array_get(arr, i));
        if (p != NULL && strcmp(p, parent) == 0)
            json_array_remove(arr, i);
        else
            i++;
    }
    json_object_set_new(obj, "modified", json_integer(txn->now));
    rc = gh__json_put(txn, DB_ROLES, child, strlen(child), obj);
done:
    json_decref(obj);
    return rc;
}

int gh_store_role_del(gh_txn *txn, const char *name, int force)
{
    names children = {0};
    gh__idset bindings;
    json_t *obj = NULL;
    gh_role *r = NULL;
    int rc;

    gh__idset_init(&bindings);
    rc = role_load(txn, name, &obj, &r);
    if (rc == 0)
        rc = collect(txn, DB_BINDING_ROLE, name, strlen(name), NULL, &bindings);
    if (rc == 0)
        rc = collect(txn, DB_ROLE_CHILDREN, name, strlen(name), &children, NULL);
    if (rc != 0)
        goto done;
    if (!force && bindings.n > 0) {
        rc = gh_txn_fail(txn, GH_EINUSE, "role %s is still bound (%zu binding%s)", name, bindings.n,
                         bindings.n == 1 ? "" : "s");
        goto done;
    }
    if (!force && children.n > 0) {
        rc = gh_txn_fail(txn, GH_EINUSE, "role %s is inherited by %s", name, children.v[0]);
        goto done;
    }
    for (size_t i = 0; rc == 0 && i < bindings.n; i++)
        rc = binding_drop(txn, bindings.ids[i], NULL);
    for (size_t i = 0; rc == 0 && i < children.n; i++)
        rc = unparent(txn, children.v[i], name);
    if (rc == 0 && children.n > 0)
        rc = gh__del(txn, DB_ROLE_CHILDREN, name, strlen(name), NULL, 0);
    if (rc == 0)
        rc = edges(txn, r, 0);
    if (rc == 0)
        rc = gh__del(txn, DB_ROLES, name, strlen(name), NULL, 0);
    if (rc == 0)
        rc = gh__authz_bump(txn);
    if (rc == 0)
        rc = gh__log(txn, "role.del", "%s", name);
done:
    free(children.v);
    gh__idset_free(&bindings);
    gh_role_free(r);
    json_decref(obj);
    return rc;
}

int gh_store_role_list(gh_txn *txn, gh_store_role_cb cb, void *arg)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc;

    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, DB_ROLES), &cur), "cursor");
    if (rc != 0)
        goto done;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        json_t *obj = json_loadb(v.mv_data, v.mv_size, 0, NULL);
        gh_role *r = NULL;

        rc = obj == NULL ? GH_EINTERNAL : gh__role_from_json(obj, &r);
        json_decref(obj);
        if (rc != 0) {
            gh_txn_fail(txn, rc, "unreadable role record");
            goto done;
        }
        rc = cb(r, arg);
        gh_role_free(r);
        if (rc != 0) {
            rc = rc < 0 ? rc : 0;
            goto done;
        }
    }
    rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "role cursor");
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

int gh_store_role_children(gh_txn *txn, const char *name, gh_store_name_cb cb, void *arg)
{
    names children = {0};
    int rc;

    if (name == NULL || name[0] == '\0' || strlen(name) > GH_NAME_MAX)
        return 0;
    rc = collect(txn, DB_ROLE_CHILDREN, name, strlen(name), &children, NULL);
    for (size_t i = 0; rc == 0 && i < children.n; i++) {
        rc = cb(children.v[i], arg);
        if (rc > 0) {
            rc = 0;
            break;
        }
    }
    free(children.v);
    return rc;
}

/* ---- bindings ---- */

static int binding_load(gh_txn *txn, uint64_t id, gh_binding *out)
{
    uint8_t key[8];
    json_t *obj = NULL;
    int rc;

    gh__put_u64(key, id);
    rc = gh__json_get(txn, DB_BINDINGS, key, 8, &obj);
    if (rc == GH_ENOTFOUND)
        rc = gh_txn_fail(txn, rc, "no binding with id %llu", (unsigned long long)id);
    if (rc == 0)
        rc = gh__binding_from_json(obj, out);
    json_decref(obj);
    return rc;
}

int gh_store_binding_get(gh_txn *txn, uint64_t id, gh_binding *out)
{
    return binding_load(txn, id, out);
}

/* Label for change-log targets: "binding:7 editor->alice @project/42". */
static void binding_label(gh_txn *txn, const gh_binding *b, char *buf, size_t len)
{
    char who[GH_NAME_MAX + 16];

    gh__member_label(txn, b->subject, who, sizeof(who));
    snprintf(buf, len, "binding:%llu %s->%s%s%s", (unsigned long long)b->id, b->role, who,
             b->scope[0] ? " @" : "", b->scope);
}

static int binding_drop(gh_txn *txn, uint64_t id, gh_binding *out)
{
    uint8_t key[8], skey[GH_MEMBER_KEY_LEN];
    gh_binding b;
    int rc;

    rc = binding_load(txn, id, &b);
    if (rc != 0)
        return rc;
    gh__put_u64(key, id);
    gh__member_key(skey, b.subject);
    rc = gh__del(txn, DB_BINDINGS, key, 8, NULL, 0);
    if (rc == 0) {
        rc = gh__del(txn, DB_BINDING_SUBJECT, skey, sizeof(skey), key, 8);
        rc = rc == GH_ENOTFOUND ? 0 : rc;
    }
    if (rc == 0) {
        rc = gh__del(txn, DB_BINDING_ROLE, b.role, strlen(b.role), key, 8);
        rc = rc == GH_ENOTFOUND ? 0 : rc;
    }
    if (rc == 0 && out != NULL)
        *out = b;
    return rc;
}

int gh_store_binding_find(gh_txn *txn, const gh_binding *like, gh_binding *out)
{
    uint8_t skey[GH_MEMBER_KEY_LEN];
    gh__idset ids;
    int rc;

    gh__idset_init(&ids);
    gh__member_key(skey, like->subject);
    rc = collect(txn, DB_BINDING_SUBJECT, skey, sizeof(skey), NULL, &ids);
    for (size_t i = 0; rc == 0 && i < ids.n; i++) {
        gh_binding b;
        rc = binding_load(txn, ids.ids[i], &b);
        if (rc == 0 && strncmp(b.role, like->role, sizeof(b.role)) == 0 &&
            strncmp(b.scope, like->scope, sizeof(b.scope)) == 0) {
            if (out != NULL)
                *out = b;
            goto done;
        }
    }
    if (rc == 0)
        rc = gh_txn_fail(txn, GH_ENOTFOUND, "no such binding");
done:
    gh__idset_free(&ids);
    return rc;
}

int gh_store_binding_add(gh_txn *txn, gh_binding *b)
{
    uint8_t key[8], skey[GH_MEMBER_KEY_LEN];
    char label[GH_DN_MAX];
    gh_binding n = *b, old;
    json_t *obj = NULL;
    MDB_val v;
    int rc;

    if ((rc = gh__terminated(txn, "role", n.role, sizeof(n.role))) != 0 ||
        (rc = gh__terminated(txn, "scope", n.scope, sizeof(n.scope))) != 0)
        goto done;
    if (gh_schema_name_valid(n.role, txn->err, sizeof(txn->err)) != 0 ||
        (n.scope[0] != '\0' &&
         gh_schema_resource_valid(n.scope, txn->err, sizeof(txn->err)) != 0)) {
        rc = GH_EINVAL;
        goto done;
    }
    rc = gh__get(txn, DB_ROLES, n.role, strlen(n.role), &v);
    if (rc == GH_ENOTFOUND)
        rc = gh_txn_fail(txn, rc, "no role named %s", n.role);
    if (rc == 0)
        rc = gh__subject_exists(txn, n.subject);
    if (rc != 0)
        goto done;
    rc = gh_store_binding_find(txn, &n, &old);
    if (rc == 0)
        rc = gh_txn_fail(txn, GH_EEXISTS, "the same binding exists (id %llu)",
                         (unsigned long long)old.id);
    else if (rc == GH_ENOTFOUND)
        rc = 0;
    if (rc != 0)
        goto done;
    txn->err[0] = '\0';
    rc = gh__next_id(txn, "next_binding_id", DB_BINDINGS, &n.id);
    if (rc != 0)
        goto done;
    n.created = txn->now;
    obj = gh__binding_to_json(&n);
    if (obj == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    gh__put_u64(key, n.id);
    gh__member_key(skey, n.subject);
    if ((rc = gh__json_put(txn, DB_BINDINGS, key, 8, obj)) != 0 ||
        (rc = gh__put(txn, DB_BINDING_SUBJECT, skey, sizeof(skey), key, 8, 0)) != 0 ||
        (rc = gh__put(txn, DB_BINDING_ROLE, n.role, strlen(n.role), key, 8, 0)) != 0 ||
        (rc = gh__authz_bump(txn)) != 0)
        goto done;
    binding_label(txn, &n, label, sizeof(label));
    rc = gh__log(txn, "grant", "%s", label);
    if (rc == 0)
        *b = n;
done:
    json_decref(obj);
    return rc;
}

int gh_store_binding_del(gh_txn *txn, uint64_t id)
{
    char label[GH_DN_MAX];
    gh_binding b;
    int rc;

    rc = binding_drop(txn, id, &b);
    if (rc == 0)
        rc = gh__authz_bump(txn);
    if (rc == 0) {
        binding_label(txn, &b, label, sizeof(label));
        rc = gh__log(txn, "revoke", "%s", label);
    }
    return rc;
}

int gh__bindings_drop_subject(gh_txn *txn, gh_member m)
{
    uint8_t skey[GH_MEMBER_KEY_LEN];
    gh__idset ids;
    int rc;

    gh__idset_init(&ids);
    gh__member_key(skey, m);
    rc = collect(txn, DB_BINDING_SUBJECT, skey, sizeof(skey), NULL, &ids);
    for (size_t i = 0; rc == 0 && i < ids.n; i++)
        rc = binding_drop(txn, ids.ids[i], NULL);
    gh__idset_free(&ids);
    return rc;
}

static int each_binding(gh_txn *txn, const gh__idset *ids, gh_store_binding_cb cb, void *arg)
{
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < ids->n; i++) {
        gh_binding b;
        rc = binding_load(txn, ids->ids[i], &b);
        if (rc == 0)
            rc = cb(&b, arg);
    }
    return rc > 0 ? 0 : rc;
}

int gh_store_bindings_of_subject(gh_txn *txn, gh_member subject, gh_store_binding_cb cb, void *arg)
{
    uint8_t skey[GH_MEMBER_KEY_LEN];
    gh__idset ids;
    int rc;

    gh__idset_init(&ids);
    gh__member_key(skey, subject);
    rc = collect(txn, DB_BINDING_SUBJECT, skey, sizeof(skey), NULL, &ids);
    if (rc == 0)
        rc = each_binding(txn, &ids, cb, arg);
    gh__idset_free(&ids);
    return rc;
}

int gh_store_bindings_of_role(gh_txn *txn, const char *role, gh_store_binding_cb cb, void *arg)
{
    gh__idset ids;
    int rc;

    if (role == NULL || role[0] == '\0' || strlen(role) > GH_NAME_MAX)
        return 0;
    gh__idset_init(&ids);
    rc = collect(txn, DB_BINDING_ROLE, role, strlen(role), NULL, &ids);
    if (rc == 0)
        rc = each_binding(txn, &ids, cb, arg);
    gh__idset_free(&ids);
    return rc;
}

int gh_store_binding_list(gh_txn *txn, gh_store_binding_cb cb, void *arg)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc;

    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, DB_BINDINGS), &cur), "cursor");
    if (rc != 0)
        goto done;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        json_t *obj = json_loadb(v.mv_data, v.mv_size, 0, NULL);
        gh_binding b;

        rc = obj == NULL ? GH_EINTERNAL : gh__binding_from_json(obj, &b);
        json_decref(obj);
        if (rc != 0) {
            gh_txn_fail(txn, rc, "unreadable binding record");
            goto done;
        }
        rc = cb(&b, arg);
        if (rc != 0) {
            rc = rc < 0 ? rc : 0;
            goto done;
        }
    }
    rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "binding cursor");
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}
