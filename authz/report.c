/*
 * report.c: the answers for people rather than programs: explain (which rule
 * decided and how it reached the user), perms (every effective rule and its
 * origin) and who_can (the reverse query).
 *
 * The one thing to know: all three read the same compiled sets and call the
 * same gh__set_decide as gh_authz_check, so a report can never disagree with
 * a decision. Names (users, groups) are looked up here, off the hot path; the
 * sets only hold ids.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz/authz-int.h"
#include "schema/error.h"
#include "schema/log.h"

/* ---- small helpers ---- */

static int subject_name(gh_txn *txn, gh_member m, char *buf, size_t len)
{
    gh_user u;
    gh_group g;
    int rc;

    if (m.kind == GH_MEMBER_USER) {
        rc = gh_store_user_get_by_id(txn, m.id, &u);
        if (rc == 0)
            snprintf(buf, len, "%s", u.name);
    } else {
        rc = gh_store_group_get_by_id(txn, m.id, &g);
        if (rc == 0)
            snprintf(buf, len, "%s", g.name);
    }
    if (rc == GH_ENOTFOUND) {
        snprintf(buf, len, "#%llu", (unsigned long long)m.id); /* raced with a delete */
        rc = 0;
    }
    return rc;
}

static int set_new(json_t *obj, const char *key, json_t *v)
{
    if (v == NULL || json_object_set_new(obj, key, v) != 0)
        return GH_ENOMEM;
    return 0;
}

static int push_new(json_t *arr, json_t *v)
{
    if (v == NULL || json_array_append_new(arr, v) != 0)
        return GH_ENOMEM;
    return 0;
}

static json_t *scope_json(const gh__set *s, int32_t scope)
{
    return scope < 0 ? json_null() : json_string(gh__str(s, s->scopes[scope].text));
}

/* {"user": name} or {"group": name}: the subject holding a binding. */
static int via_json(gh_txn *txn, gh_member m, json_t **out)
{
    char name[GH_NAME_MAX + 24];
    int rc;

    *out = NULL;
    if ((rc = subject_name(txn, m, name, sizeof(name))) != 0)
        return rc;
    *out = json_pack("{ss}", m.kind == GH_MEMBER_USER ? "user" : "group", name);
    return *out ? 0 : GH_ENOMEM;
}

/* Role entries from the bound role down to rp (the declaring role). */
static size_t role_chain(const gh__set *s, uint32_t rp, uint32_t *chain, size_t max)
{
    size_t n = 0;

    for (int32_t i = (int32_t)rp; i >= 0 && n < max; i = s->roles[i].via)
        chain[n++] = (uint32_t)i;
    for (size_t k = 0; k < n / 2; k++) {
        uint32_t t = chain[k];
        chain[k] = chain[n - 1 - k];
        chain[n - 1 - k] = t;
    }
    return n;
}

static const char *effect_name(uint32_t effect)
{
    return effect == GH_DENY ? "deny" : "allow";
}

/* The common description of a rule (perms entries, explain's "rule"). */
static int rule_json(gh_txn *txn, const gh__set *s, uint32_t ri, json_t **out)
{
    const gh__rule *r = &s->rules[ri];
    const gh__bind *b = &s->binds[s->roles[r->role].bind];
    uint32_t chain[64];
    size_t n = role_chain(s, r->role, chain, 64);
    json_t *o = NULL, *roles = NULL, *via = NULL;
    int rc = GH_ENOMEM;

    *out = NULL;
    o = json_pack("{sssssssssI}", "effect", effect_name(r->effect), "action", gh__str(s, r->action),
                  "resource", gh__str(s, r->res.text), "role", gh__str(s, s->roles[r->role].name),
                  "binding", (json_int_t)b->id);
    roles = json_array();
    if (o == NULL || roles == NULL)
        goto done;
    for (size_t i = 0; i < n; i++)
        if ((rc = push_new(roles, json_string(gh__str(s, s->roles[chain[i]].name)))) != 0)
            goto done;
    if ((rc = set_new(o, "roles", roles)) != 0) {
        roles = NULL;
        goto done;
    }
    roles = NULL;
    if ((rc = via_json(txn, b->subject, &via)) != 0)
        goto done;
    if ((rc = set_new(o, "via", via)) != 0 ||
        (rc = set_new(o, "scope", scope_json(s, b->scope))) != 0)
        goto done;
    *out = o;
    o = NULL;
done:
    json_decref(o);
    json_decref(roles);
    return rc;
}

/* ---- explain ---- */

typedef struct gnode {
    uint64_t id;
    int64_t parent; /* index of the group it was reached from, -1: the user's own */
} gnode;

typedef struct gbfs {
    gnode *v;
    size_t n, cap;
    int64_t from;
    int err;
} gbfs;

static int gbfs_push(uint64_t id, void *arg)
{
    gbfs *b = arg;

    for (size_t i = 0; i < b->n; i++)
        if (b->v[i].id == id)
            return 0;
    if (b->n == b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 16;
        gnode *nv = realloc(b->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            b->err = GH_ENOMEM;
            return 1;
        }
        b->v = nv;
        b->cap = ncap;
    }
    b->v[b->n].id = id;
    b->v[b->n].parent = b->from;
    b->n++;
    return 0;
}

/* Appends {"type":"group"} steps from the user's direct group to target: the
 * shortest nesting chain through which the user is in target. */
static int group_steps(gh_txn *txn, uint64_t user_id, uint64_t target, json_t *path)
{
    gbfs b = {0};
    gh_member m = {GH_MEMBER_USER, user_id};
    int64_t hit = -1, chain[64];
    size_t n = 0;
    int rc;

    b.from = -1;
    rc = gh_store_member_of(txn, m, gbfs_push, &b);
    for (size_t i = 0; rc == 0 && b.err == 0 && i < b.n; i++) {
        if (b.v[i].id == target) {
            hit = (int64_t)i;
            break;
        }
        m.kind = GH_MEMBER_GROUP;
        m.id = b.v[i].id;
        b.from = (int64_t)i;
        rc = gh_store_member_of(txn, m, gbfs_push, &b);
    }
    if (rc == 0)
        rc = b.err;
    if (rc)
        goto done;
    if (hit < 0) {
        chain[n++] = -1; /* no chain found (should not happen): name the group alone */
    } else {
        for (int64_t i = hit; i >= 0 && n < 64; i = b.v[i].parent)
            chain[n++] = i;
    }
    while (n-- > 0) {
        char name[GH_NAME_MAX + 24];
        gh_member g = {GH_MEMBER_GROUP, chain[n] < 0 ? target : b.v[chain[n]].id};
        if ((rc = subject_name(txn, g, name, sizeof(name))) != 0)
            goto done;
        if ((rc = push_new(path, json_pack("{ssss}", "type", "group", "name", name))) != 0)
            goto done;
    }
done:
    free(b.v);
    return rc;
}

/* path: user -> group(s) -> binding -> role -> parent role(s) -> rule, and
 * the same chain as one line of text. */
static int rule_path(gh_txn *txn, const gh__set *s, uint32_t ri, json_t *path, json_t **text)
{
    const gh__rule *r = &s->rules[ri];
    const gh__bind *b = &s->binds[s->roles[r->role].bind];
    uint32_t chain[64];
    size_t n = role_chain(s, r->role, chain, 64), i;
    char buf[2048];
    size_t off = 0;
    int rc;

    *text = NULL;
    if (b->subject.kind == GH_MEMBER_GROUP &&
        (rc = group_steps(txn, s->user_id, b->subject.id, path)) != 0)
        return rc;
    if ((rc = push_new(path, json_pack("{sssIso}", "type", "binding", "id", (json_int_t)b->id,
                                       "scope", scope_json(s, b->scope)))) != 0)
        return rc;
    for (i = 0; i < n; i++)
        if ((rc = push_new(path, json_pack("{ssss}", "type", "role", "name",
                                           gh__str(s, s->roles[chain[i]].name)))) != 0)
            return rc;
    if ((rc = push_new(path, json_pack("{ssssssss}", "type", "rule", "effect",
                                       effect_name(r->effect), "action", gh__str(s, r->action),
                                       "resource", gh__str(s, r->res.text)))) != 0)
        return rc;

    /* the one-line summary: "alice -> group devs -> binding 7 -> role ops -> ..." */
    for (i = 0; i < json_array_size(path); i++) {
        json_t *st = json_array_get(path, i);
        const char *type = json_string_value(json_object_get(st, "type"));
        const char *sep = i ? " -> " : "";
        int w;

        if (strcmp(type, "binding") == 0) {
            json_t *sc = json_object_get(st, "scope");
            w = snprintf(buf + off, sizeof(buf) - off, "%sbinding %lld%s%s%s", sep,
                         (long long)json_integer_value(json_object_get(st, "id")),
                         json_is_string(sc) ? " (scope " : "",
                         json_is_string(sc) ? json_string_value(sc) : "",
                         json_is_string(sc) ? ")" : "");
        } else if (strcmp(type, "rule") == 0) {
            w = snprintf(buf + off, sizeof(buf) - off, "%s%s %s on %s", sep, effect_name(r->effect),
                         gh__str(s, r->action), gh__str(s, r->res.text));
        } else {
            w = snprintf(buf + off, sizeof(buf) - off, "%s%s %s", sep, type,
                         json_string_value(json_object_get(st, "name")));
        }
        if (w < 0 || (size_t)w >= sizeof(buf) - off) {
            off = sizeof(buf) - 1;
            break;
        }
        off += (size_t)w;
    }
    *text = json_stringn(buf, off);
    return *text ? 0 : GH_ENOMEM;
}

int gh_authz_explain(gh_authz *a, gh_txn *txn, uint64_t user_id, const char *action,
                     const char *resource, int *allow, json_t **explain)
{
    gh__req q;
    gh__set *s = NULL;
    gh_user u;
    json_t *o = NULL, *path = NULL, *text = NULL, *rj = NULL;
    char buf[GH_PATTERN_MAX * 2 + 128];
    const char *reason;
    int32_t ri;
    int why, rc;

    *allow = 0;
    *explain = NULL;
    if ((rc = gh__req_init(&q, action, resource)) != 0)
        return rc;
    if ((rc = gh__authz_user_set(a, txn, user_id, &s)) != 0)
        return rc;
    if ((rc = gh_store_user_get_by_id(txn, user_id, &u)) != 0) {
        gh__set_free(s);
        return rc;
    }
    *allow = gh__set_decide(s, &q, &why, &ri);

    rc = GH_ENOMEM;
    o = json_object();
    path = json_pack("[{ssss}]", "type", "user", "name", u.name);
    if (o == NULL || path == NULL)
        goto done;
    switch (why) {
    case GH__WHY_LOCKED:
        reason = "account_locked";
        snprintf(buf, sizeof(buf), "user %s is locked: every check is denied", u.name);
        break;
    case GH__WHY_DISABLED:
        reason = "account_disabled";
        snprintf(buf, sizeof(buf), "user %s is %s: every check is denied", u.name,
                 s->tombstone ? "deleted upstream" : "disabled");
        break;
    case GH__WHY_DEFAULT:
        reason = "default_deny";
        snprintf(buf, sizeof(buf), "no rule of user %s matches %s on %s: default deny", u.name,
                 action, resource);
        break;
    default:
        reason = *allow ? "allow_rule" : "deny_rule";
        buf[0] = '\0';
        break;
    }
    if ((rc = set_new(o, "decision", json_string(*allow ? "allow" : "deny"))) != 0 ||
        (rc = set_new(o, "reason", json_string(reason))) != 0)
        goto done;
    if (why == GH__WHY_LOCKED || why == GH__WHY_DISABLED) {
        if ((rc = set_new(o, "state", json_string(gh_user_state_name(u.state)))) != 0)
            goto done;
        if (s->tombstone && (rc = set_new(o, "deleted_upstream", json_true())) != 0)
            goto done;
    }
    if (why == GH__WHY_RULE) {
        if ((rc = rule_json(txn, s, (uint32_t)ri, &rj)) != 0)
            goto done;
        if ((rc = set_new(o, "rule", rj)) != 0)
            goto done;
        if ((rc = rule_path(txn, s, (uint32_t)ri, path, &text)) != 0)
            goto done;
        if (!*allow) {
            /* deny overrides allow: name the allow it overrode, if any */
            int32_t ai = gh__set_find(s, GH_ALLOW, &q);
            if (ai >= 0) {
                if ((rc = rule_json(txn, s, (uint32_t)ai, &rj)) != 0)
                    goto done;
                if ((rc = set_new(o, "overrides", rj)) != 0)
                    goto done;
            }
        }
    } else {
        text = json_string(buf);
    }
    if ((rc = set_new(o, "path", path)) != 0) {
        path = NULL;
        goto done;
    }
    path = NULL;
    if ((rc = set_new(o, "summary", text)) != 0) {
        text = NULL;
        goto done;
    }
    text = NULL;
    *explain = o;
    o = NULL;
    rc = 0;
done:
    gh__set_free(s);
    json_decref(o);
    json_decref(path);
    json_decref(text);
    if (rc)
        *allow = 0;
    return rc;
}

/* ---- perms ---- */

int gh_authz_perms(gh_authz *a, gh_txn *txn, uint64_t user_id, json_t **out)
{
    gh__set *s = NULL;
    json_t *arr = NULL, *rj;
    int rc;

    *out = NULL;
    if ((rc = gh__authz_user_set(a, txn, user_id, &s)) != 0)
        return rc;
    rc = GH_ENOMEM;
    if ((arr = json_array()) == NULL)
        goto done;
    for (uint32_t i = 0; i < s->nrules; i++) {
        if ((rc = rule_json(txn, s, i, &rj)) != 0 || (rc = push_new(arr, rj)) != 0)
            goto done;
    }
    *out = arr;
    arr = NULL;
    rc = 0;
done:
    gh__set_free(s);
    json_decref(arr);
    return rc;
}

/* ---- who_can ---- */

typedef struct idset {
    uint64_t *v;
    size_t n, cap;
    int err;
} idset;

static int idset_add(uint64_t id, void *arg)
{
    idset *is = arg;

    if (is->n == is->cap) {
        size_t ncap = is->cap ? is->cap * 2 : 32;
        uint64_t *nv = realloc(is->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            is->err = GH_ENOMEM;
            return 1;
        }
        is->v = nv;
        is->cap = ncap;
    }
    is->v[is->n++] = id;
    return 0;
}

static int id_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void idset_uniq(idset *is)
{
    size_t k = 0;

    if (is->n == 0)
        return;
    qsort(is->v, is->n, sizeof(*is->v), id_cmp);
    for (size_t i = 1; i < is->n; i++)
        if (is->v[i] != is->v[k])
            is->v[++k] = is->v[i];
    is->n = k + 1;
}

typedef struct subjects {
    idset users, groups;
} subjects;

static int note_subject(const gh_binding *b, void *arg)
{
    subjects *sj = arg;

    return idset_add(b->subject.id, b->subject.kind == GH_MEMBER_USER ? &sj->users : &sj->groups);
}

static int name_cmp(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    return strcmp(json_string_value(json_object_get(x, "name")),
                  json_string_value(json_object_get(y, "name")));
}

/* Sorts an array of {"name",...} objects by name. */
static int sort_by_name(json_t *arr)
{
    size_t n = json_array_size(arr);
    json_t **v;

    if (n < 2)
        return 0;
    if ((v = malloc(n * sizeof(*v))) == NULL)
        return GH_ENOMEM;
    for (size_t i = 0; i < n; i++)
        v[i] = json_incref(json_array_get(arr, i));
    qsort(v, n, sizeof(*v), name_cmp);
    json_array_clear(arr);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, v[i]);
    free(v);
    return 0;
}

static json_t *grant_json(const char *name, const gh__set *s, int32_t ri)
{
    const gh__bind *b = &s->binds[s->roles[s->rules[ri].role].bind];

    return json_pack("{sssIss}", "name", name, "binding", (json_int_t)b->id, "role",
                     gh__str(s, b->role));
}

int gh_authz_who_can(gh_authz *a, gh_txn *txn, const char *action, const char *resource,
                     json_t **out)
{
    gh__req q;
    subjects sj = {{0}, {0}};
    idset cand = {0};
    gh__set *gs = NULL, *us = NULL;
    json_t *users = NULL, *groups = NULL;
    char name[GH_NAME_MAX + 24];
    int32_t ri;
    int rc;

    *out = NULL;
    if ((rc = gh__req_init(&q, action, resource)) != 0)
        return rc;
    if ((rc = gh__authz_sync(a, txn)) != 0)
        return rc;
    rc = gh_store_binding_list(txn, note_subject, &sj);
    if (rc == 0)
        rc = sj.users.err ? sj.users.err : sj.groups.err;
    if (rc)
        goto done;
    idset_uniq(&sj.users);
    idset_uniq(&sj.groups);
    rc = GH_ENOMEM;
    users = json_array();
    groups = json_array();
    if (users == NULL || groups == NULL)
        goto done;

    /* A group is listed when its own bindings allow (and do not deny); its
     * members become candidates. An allowed user is allowed through a
     * binding of their own or of some group that allows, so the candidates
     * are complete; each is then decided in full (state, every deny). */
    for (size_t i = 0; i < sj.groups.n; i++) {
        gh_member g = {GH_MEMBER_GROUP, sj.groups.v[i]};
        if ((rc = gh__set_compile_subject(txn, &a->roles, g, &gs)) != 0)
            goto done;
        if (gh__set_decide(gs, &q, NULL, &ri)) {
            if ((rc = subject_name(txn, g, name, sizeof(name))) != 0 ||
                (rc = push_new(groups, grant_json(name, gs, ri))) != 0)
                goto done;
            rc = gh_store_group_effective_users(txn, g.id, idset_add, &cand);
            if (rc == 0)
                rc = cand.err;
            if (rc)
                goto done;
        }
        gh__set_free(gs);
        gs = NULL;
    }
    for (size_t i = 0; i < sj.users.n; i++)
        if ((rc = idset_add(sj.users.v[i], &cand)) != 0) {
            rc = cand.err;
            goto done;
        }
    idset_uniq(&cand);
    for (size_t i = 0; i < cand.n; i++) {
        gh_member m = {GH_MEMBER_USER, cand.v[i]};
        gh__uset *uu;
        /* the cached decision first; the flat set names the deciding binding */
        rc = gh__authz_user_uset(a, txn, cand.v[i], &uu);
        if (rc == GH_ENOTFOUND)
            continue;
        if (rc)
            goto done;
        if (!gh__uset_decide(uu, &q))
            continue;
        if ((rc = gh__set_compile_user(txn, &a->roles, cand.v[i], &us)) != 0)
            goto done;
        if (!gh__set_decide(us, &q, NULL, &ri)) {
            GH_LOGE("authz: decision sets disagree for user %llu", (unsigned long long)m.id);
            rc = GH_EINTERNAL;
        } else if ((rc = subject_name(txn, m, name, sizeof(name))) == 0) {
            rc = push_new(users, grant_json(name, us, ri));
        }
        gh__set_free(us);
        us = NULL;
        if (rc)
            goto done;
    }
    if ((rc = sort_by_name(users)) != 0 || (rc = sort_by_name(groups)) != 0)
        goto done;
    *out = json_pack("{soso}", "users", users, "groups", groups);
    users = groups = NULL;
    rc = *out ? 0 : GH_ENOMEM;
done:
    gh__set_free(gs);
    json_decref(users);
    json_decref(groups);
    free(sj.users.v);
    free(sj.groups.v);
    free(cand.v);
    return rc;
}
