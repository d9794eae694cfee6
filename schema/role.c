/*
 * role.c: gh_role heap objects (variable rule and parent lists).
 *
 * The one thing to know: arrays grow by doubling whenever the count reaches a
 * power of two, so no capacity field is needed; a role's rules and parents
 * must only be appended through these functions.
 */
#include <stdlib.h>
#include <string.h>

#include "schema/error.h"
#include "schema/schema.h"

gh_role *gh_role_new(const char *name)
{
    gh_role *r;

    if (name == NULL)
        name = "";
    if (strlen(name) > GH_NAME_MAX)
        return NULL;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    memcpy(r->name, name, strlen(name) + 1);
    return r;
}

/* Room for one more element in an array holding n (grown at 0 and powers of 2). */
static int reserve(void **arr, size_t n, size_t elsize)
{
    size_t cap;
    void *p;

    if (n != 0 && (n & (n - 1)) != 0)
        return 0;
    cap = n ? n * 2 : 4;
    if (n != 0 && n < 4)
        return 0; /* first allocation holds 4 */
    p = realloc(*arr, cap * elsize);
    if (p == NULL)
        return GH_ENOMEM;
    *arr = p;
    return 0;
}

int gh_role_add_rule(gh_role *r, gh_effect effect, const char *action, const char *resource)
{
    gh_rule *rule;
    char *a, *res;

    if (action == NULL || resource == NULL || (effect != GH_ALLOW && effect != GH_DENY))
        return GH_EINVAL;
    if (r->nrules >= GH_ROLE_RULES_MAX || strlen(action) > GH_PATTERN_MAX ||
        strlen(resource) > GH_PATTERN_MAX)
        return GH_ETOOBIG;
    if (reserve((void **)&r->rules, r->nrules, sizeof(*r->rules)) != 0)
        return GH_ENOMEM;
    a = strdup(action);
    res = strdup(resource);
    if (a == NULL || res == NULL) {
        free(a);
        free(res);
        return GH_ENOMEM;
    }
    rule = &r->rules[r->nrules++];
    rule->effect = effect;
    rule->action = a;
    rule->resource = res;
    return 0;
}

int gh_role_add_parent(gh_role *r, const char *parent)
{
    if (parent == NULL)
        return GH_EINVAL;
    if (r->nparents >= GH_ROLE_PARENTS_MAX || strlen(parent) > GH_NAME_MAX)
        return GH_ETOOBIG;
    if (reserve((void **)&r->parents, r->nparents, sizeof(*r->parents)) != 0)
        return GH_ENOMEM;
    memcpy(r->parents[r->nparents++], parent, strlen(parent) + 1);
    return 0;
}

gh_role *gh_role_dup(const gh_role *r)
{
    gh_role *d;

    if (r == NULL)
        return NULL;
    d = gh_role_new(r->name);
    if (d == NULL)
        return NULL;
    memcpy(d->description, r->description, sizeof(d->description));
    d->created = r->created;
    d->modified = r->modified;
    for (size_t i = 0; i < r->nrules; i++)
        if (gh_role_add_rule(d, r->rules[i].effect, r->rules[i].action, r->rules[i].resource) != 0)
            goto fail;
    for (size_t i = 0; i < r->nparents; i++)
        if (gh_role_add_parent(d, r->parents[i]) != 0)
            goto fail;
    return d;
fail:
    gh_role_free(d);
    return NULL;
}

void gh_role_free(gh_role *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nrules; i++) {
        free(r->rules[i].action);
        free(r->rules[i].resource);
    }
    free(r->rules);
    free(r->parents);
    free(r);
}
