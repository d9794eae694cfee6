/*
 * compile.c: turns what the store says about a user (state, effective groups,
 * bindings, roles and their parents) into a gh__set that match.c can decide
 * against without touching the store again.
 *
 * The one thing to know: the set records where every rule came from (binding,
 * bound role, the inheritance chain) as indices, because explain, perms and
 * who_can read the same set the fast path decides with; they must never
 * disagree. A stored pattern that does not compile fails the whole set
 * (GH_EINTERNAL): silently skipping a deny rule would turn into an allow.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz/authz-int.h"
#include "schema/error.h"
#include "schema/log.h"

/* ---- growable arrays and the string arena ---- */

int gh__grow(void *pp, size_t *cap, size_t need, size_t elsz)
{
    void **p = pp;
    size_t ncap = *cap ? *cap : 8;
    void *np;

    if (need <= *cap)
        return 0;
    while (ncap < need)
        ncap *= 2;
    if (ncap > UINT32_MAX / 2)
        return GH_ETOOBIG;
    np = realloc(*p, ncap * elsz);
    if (np == NULL)
        return GH_ENOMEM;
    *p = np;
    *cap = ncap;
    return 0;
}

static int put_str(gh__set *s, const char *p, size_t len, uint32_t *off)
{
    int rc = gh__grow(&s->str, &s->capstr, s->nstr + len + 1, 1);

    if (rc)
        return rc;
    memcpy(s->str + s->nstr, p, len);
    s->str[s->nstr + len] = '\0';
    *off = (uint32_t)s->nstr;
    s->nstr += len + 1;
    return 0;
}

static int put_seg(gh__set *s, uint32_t off, uint32_t len)
{
    int rc = gh__grow(&s->segs, &s->capsegs, s->nsegs + 1, sizeof(*s->segs));

    if (rc)
        return rc;
    s->segs[s->nsegs].off = off;
    s->segs[s->nsegs].len = len;
    s->nsegs++;
    return 0;
}

/* ---- patterns ---- */

int gh__pat_compile(gh__set *s, const char *pattern, gh__pat *out)
{
    size_t len = strlen(pattern), start = 0, i;
    uint32_t text;
    int rc;

    memset(out, 0, sizeof(*out));
    if (len == 0 || len > GH_PATTERN_MAX)
        return GH_EINVAL;
    rc = put_str(s, pattern, len, &text);
    if (rc)
        return rc;
    out->text = text;
    out->seg = (uint32_t)s->nsegs;
    for (i = 0; i <= len; i++) {
        const char *seg = s->str + text + start;
        size_t n = i - start;

        if (i < len && pattern[i] != '/')
            continue;
        if (n == 0 || out->rest)
            return GH_EINVAL; /* empty segment, or "**" not last */
        if (n == 2 && seg[0] == '*' && seg[1] == '*') {
            out->rest = 1;
        } else if (n == 1 && seg[0] == '*') {
            rc = put_seg(s, 0, 0);
            out->nseg++;
        } else if (memchr(seg, '*', n) != NULL) {
            return GH_EINVAL;
        } else {
            rc = put_seg(s, text + (uint32_t)start, (uint32_t)n);
            out->nseg++;
        }
        if (rc)
            return rc;
        start = i + 1;
    }
    return 0;
}

static int act_compile(gh__set *s, const char *pattern, gh__rule *r)
{
    size_t len = strlen(pattern);
    const char *star = memchr(pattern, '*', len);
    int rc;

    if (len == 0 || len > GH_PATTERN_MAX)
        return GH_EINVAL;
    rc = put_str(s, pattern, len, &r->action);
    if (rc)
        return rc;
    r->aoff = r->action;
    r->alen = (uint32_t)len;
    if (star == NULL) {
        r->akind = GH__ACT_EXACT;
    } else if (len == 1) {
        r->akind = GH__ACT_ANY;
    } else if (star == pattern + len - 1 && len >= 3 && pattern[len - 2] == ':') {
        r->akind = GH__ACT_PREFIX;
        r->alen = (uint32_t)(len - 1); /* "prefix:" */
    } else {
        return GH_EINVAL;
    }
    return 0;
}

/* ---- decoded roles, fetched from the store once per generation ---- */

static void set_release(gh__set *s);

void gh__roles_clear(gh__roles *rc)
{
    for (size_t i = 0; i < rc->n; i++) {
        gh_role_free(rc->e[i].role);
        gh__set_free(rc->e[i].block);
    }
    rc->n = 0;
    if (rc->tab)
        memset(rc->tab, 0, (rc->mask + 1) * sizeof(*rc->tab));
    if (rc->scopes) {
        set_release(rc->scopes);
        memset(rc->scopes, 0, sizeof(*rc->scopes));
    }
    if (rc->stab)
        memset(rc->stab, 0, (rc->smask + 1) * sizeof(*rc->stab));
}

void gh__roles_free(gh__roles *rc)
{
    gh__roles_clear(rc);
    free(rc->e);
    free(rc->tab);
    free(rc->scopes);
    free(rc->stab);
    memset(rc, 0, sizeof(*rc));
}

static int rc_rehash(gh__roles *rc)
{
    size_t size = (rc->mask + 1) * 2;
    uint32_t *tab;

    if (size < 32)
        size = 32;
    tab = calloc(size, sizeof(*tab));
    if (tab == NULL)
        return GH_ENOMEM;
    for (size_t i = 0; i < rc->n; i++) {
        size_t j = rc->e[i].hash & (size - 1);
        while (tab[j])
            j = (j + 1) & (size - 1);
        tab[j] = (uint32_t)i + 1;
    }
    free(rc->tab);
    rc->tab = tab;
    rc->mask = size - 1;
    return 0;
}

/* The role named name (fetched from the store on first use); *out is NULL
 * inside a returned entry when the role does not exist. */
static int rc_get(gh__roles *rc, gh_txn *txn, const char *name, gh__rent **out)
{
    size_t len = strlen(name), j;
    uint64_t h = gh__hash(name, len);
    gh_role *role = NULL;
    gh__rent *e;
    int err;

    *out = NULL;
    if (len > GH_NAME_MAX)
        return GH_EINTERNAL;
    if (rc->tab) {
        for (j = h & rc->mask; rc->tab[j]; j = (j + 1) & rc->mask) {
            e = &rc->e[rc->tab[j] - 1];
            if (e->hash == h && strcmp(e->name, name) == 0) {
                *out = e;
                return 0;
            }
        }
    }
    err = gh_store_role_get(txn, name, &role);
    if (err == GH_ENOTFOUND)
        role = NULL;
    else if (err)
        return err;
    if ((rc->n + 1) * 2 > rc->mask + 1 && (err = rc_rehash(rc)) != 0)
        goto fail;
    if ((err = gh__grow(&rc->e, &rc->cap, rc->n + 1, sizeof(*rc->e))) != 0)
        goto fail;
    e = &rc->e[rc->n];
    memset(e, 0, sizeof(*e));
    e->role = role;
    role = NULL;
    memcpy(e->name, name, len + 1);
    e->hash = h;
    for (j = h & rc->mask; rc->tab[j]; j = (j + 1) & rc->mask)
        ;
    rc->tab[j] = (uint32_t)rc->n + 1;
    rc->n++;
    *out = e;
    return 0;
fail:
    gh_role_free(role);
    return err;
}

/* ---- building a set ---- */

typedef struct cstate {
    gh_txn *txn;
    gh__set *s;
    gh__roles *roles;
    struct qent {
        uint32_t ent; /* index in roles.e (stable: the array may move) */
        int32_t via;
    } * q;
    size_t capq;
} cstate;

static int add_rule(cstate *cs, uint32_t bind, uint32_t rpath, const gh_rule *gr)
{
    gh__set *s = cs->s;
    gh__rule r;
    int rc;

    memset(&r, 0, sizeof(r));
    r.effect = gr->effect == GH_DENY ? GH_DENY : GH_ALLOW;
    r.scope = s->binds[bind].scope;
    r.role = rpath;
    if ((rc = act_compile(s, gr->action, &r)) != 0 ||
        (rc = gh__pat_compile(s, gr->resource, &r.res)) != 0) {
        if (rc == GH_EINVAL) {
            GH_LOGE("authz: role '%s' holds an invalid rule (%s on %s)",
                    gh__str(s, s->roles[rpath].name), gr->action, gr->resource);
            rc = GH_EINTERNAL;
        }
        return rc;
    }
    if ((rc = gh__grow(&s->rules, &s->caprules, s->nrules + 1, sizeof(*s->rules))) != 0)
        return rc;
    s->rules[s->nrules++] = r;
    return 0;
}

/* Expands one binding: the bound role, then its ancestors breadth first, each
 * role once per binding, with every rule tagged with where it came from. */
static int add_binding(cstate *cs, const gh_binding *b)
{
    gh__set *s = cs->s;
    gh__bind *bd;
    uint32_t bi, name;
    size_t head = 0, tail = 0;
    gh__rent *e;
    int rc;

    if ((rc = gh__grow(&s->binds, &s->capbinds, s->nbinds + 1, sizeof(*s->binds))) != 0)
        return rc;
    if ((rc = put_str(s, b->role, strlen(b->role), &name)) != 0)
        return rc;
    bi = (uint32_t)s->nbinds++;
    bd = &s->binds[bi];
    memset(bd, 0, sizeof(*bd));
    bd->id = b->id;
    bd->subject = b->subject;
    bd->role = name;
    bd->scope = -1;
    if (b->scope[0] != '\0') {
        if ((rc = gh__grow(&s->scopes, &s->capscopes, s->nscopes + 1, sizeof(*s->scopes))) != 0)
            return rc;
        rc = gh__pat_compile(s, b->scope, &s->scopes[s->nscopes]);
        if (rc == GH_EINVAL) {
            GH_LOGE("authz: binding %llu has an invalid scope '%s'", (unsigned long long)b->id,
                    b->scope);
            return GH_EINTERNAL;
        }
        if (rc)
            return rc;
        s->binds[bi].scope = (int32_t)s->nscopes++;
    }

    if ((rc = rc_get(cs->roles, cs->txn, b->role, &e)) != 0)
        return rc;
    if (e->role == NULL) {
        s->binds[bi].missing = 1; /* a dangling binding grants nothing */
        return 0;
    }
    if (++cs->roles->stamp == 0) { /* wrapped: forget every old visit */
        for (size_t i = 0; i < cs->roles->n; i++)
            cs->roles->e[i].stamp = 0;
        cs->roles->stamp = 1;
    }
    e->stamp = cs->roles->stamp;
    if ((rc = gh__grow(&cs->q, &cs->capq, tail + 1, sizeof(*cs->q))) != 0)
        return rc;
    cs->q[tail].ent = (uint32_t)(e - cs->roles->e);
    cs->q[tail].via = -1;
    tail++;
    while (head < tail) {
        struct qent qe = cs->q[head++];
        const gh_role *role = cs->roles->e[qe.ent].role;
        uint32_t rp;

        if ((rc = gh__grow(&s->roles, &s->caproles, s->nroles + 1, sizeof(*s->roles))) != 0)
            return rc;
        rp = (uint32_t)s->nroles;
        if ((rc = put_str(s, role->name, strlen(role->name), &s->roles[rp].name)) != 0)
            return rc;
        s->roles[rp].via = qe.via;
        s->roles[rp].bind = bi;
        s->nroles++;
        for (size_t i = 0; i < role->nrules; i++)
            if ((rc = add_rule(cs, bi, rp, &role->rules[i])) != 0)
                return rc;
        for (size_t i = 0; i < role->nparents; i++) {
            /* rc_get may move the entries (never the gh_role they point to) */
            if ((rc = rc_get(cs->roles, cs->txn, role->parents[i], &e)) != 0)
                return rc;
            if (e->role == NULL || e->stamp == cs->roles->stamp)
                continue; /* missing parent, or met already through another path */
            e->stamp = cs->roles->stamp;
            if ((rc = gh__grow(&cs->q, &cs->capq, tail + 1, sizeof(*cs->q))) != 0)
                return rc;
            cs->q[tail].ent = (uint32_t)(e - cs->roles->e);
            cs->q[tail].via = (int32_t)rp;
            tail++;
        }
    }
    return 0;
}

/* ---- indexes ---- */

static int rule_cmp(const void *a, const void *b, void *arg)
{
    const gh__set *s = arg;
    const gh__rule *ra = &s->rules[*(const uint32_t *)a], *rb = &s->rules[*(const uint32_t *)b];
    int c;

    if (ra->alen != rb->alen)
        return ra->alen < rb->alen ? -1 : 1;
    c = memcmp(s->str + ra->aoff, s->str + rb->aoff, ra->alen);
    if (c)
        return c;
    return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

static uint64_t rule_key_hash(const gh__set *s, const gh__rule *r)
{
    const char *act = gh__str(s, r->action), *res = gh__str(s, r->res.text);
    uint64_t h = gh__hash(act, strlen(act)) * 31 + gh__hash(res, strlen(res));

    if (r->scope >= 0) {
        const char *sc = gh__str(s, s->scopes[r->scope].text);
        h = h * 31 + gh__hash(sc, strlen(sc));
    }
    return h * 2 + r->effect;
}

static int rule_same(const gh__set *s, const gh__rule *a, const gh__rule *b)
{
    const char *sa = a->scope >= 0 ? gh__str(s, s->scopes[a->scope].text) : "";
    const char *sb = b->scope >= 0 ? gh__str(s, s->scopes[b->scope].text) : "";

    return a->effect == b->effect && strcmp(gh__str(s, a->action), gh__str(s, b->action)) == 0 &&
           strcmp(gh__str(s, a->res.text), gh__str(s, b->res.text)) == 0 && strcmp(sa, sb) == 0;
}

static int build_index(gh__set *s, gh__eidx *x, const uint32_t *ids, uint32_t n)
{
    uint32_t nw = 0, ngroups = 0, size = 4;

    x->ids = malloc((n ? n : 1) * sizeof(*x->ids));
    if (x->ids == NULL)
        return GH_ENOMEM;
    /* exact first (then sorted by action), wildcards after in rule order */
    x->nexact = 0;
    for (uint32_t i = 0; i < n; i++)
        if (s->rules[ids[i]].akind == GH__ACT_EXACT)
            x->ids[x->nexact++] = ids[i];
    nw = x->nexact;
    for (uint32_t i = 0; i < n; i++)
        if (s->rules[ids[i]].akind != GH__ACT_EXACT)
            x->ids[nw++] = ids[i];
    x->nids = nw;
    x->any = 0;
    x->amask = 0;
    for (uint32_t i = 0; i < nw; i++) {
        const gh__rule *r = &s->rules[x->ids[i]];
        if (r->akind == GH__ACT_ANY)
            x->any = 1;
        else /* the exact action, or the prefix with its ':' */
            x->amask |= gh__abit(gh__hash(s->str + r->aoff, r->alen));
    }
    if (x->nexact == 0)
        return 0;
    qsort_r(x->ids, x->nexact, sizeof(*x->ids), rule_cmp, s);
    for (uint32_t i = 0; i < x->nexact; i++) {
        const gh__rule *a = i ? &s->rules[x->ids[i - 1]] : NULL, *b = &s->rules[x->ids[i]];
        if (a == NULL || a->alen != b->alen || memcmp(s->str + a->aoff, s->str + b->aoff, b->alen))
            ngroups++;
    }
    while (size < ngroups * 2)
        size *= 2;
    x->tab = calloc(size, sizeof(*x->tab));
    if (x->tab == NULL)
        return GH_ENOMEM;
    x->mask = size - 1;
    for (uint32_t i = 0; i < x->nexact;) {
        const gh__rule *r = &s->rules[x->ids[i]];
        uint32_t end = i + 1, j;
        uint64_t h = gh__hash(s->str + r->aoff, r->alen);

        while (end < x->nexact && s->rules[x->ids[end]].alen == r->alen &&
               memcmp(s->str + s->rules[x->ids[end]].aoff, s->str + r->aoff, r->alen) == 0)
            end++;
        for (j = (uint32_t)h & x->mask; x->tab[j].alen; j = (j + 1) & x->mask)
            ;
        x->tab[j].hash = h;
        x->tab[j].aoff = r->aoff;
        x->tab[j].alen = r->alen;
        x->tab[j].start = i;
        x->tab[j].end = end;
        i = end;
    }
    return 0;
}

/* Builds the match indexes: duplicates (same effect, action, resource and
 * scope reached through several bindings or roles) keep their first copy. */
static int set_finish(gh__set *s)
{
    uint32_t *tab = NULL, *ids[2] = {NULL, NULL}, nids[2] = {0, 0};
    size_t size = 16, mask;
    int rc = GH_ENOMEM;

    while (size < s->nrules * 2)
        size *= 2;
    mask = size - 1;
    tab = calloc(size, sizeof(*tab));
    ids[0] = malloc((s->nrules ? s->nrules : 1) * sizeof(uint32_t));
    ids[1] = malloc((s->nrules ? s->nrules : 1) * sizeof(uint32_t));
    if (tab == NULL || ids[0] == NULL || ids[1] == NULL)
        goto done;
    for (uint32_t i = 0; i < s->nrules; i++) {
        const gh__rule *r = &s->rules[i];
        size_t j = rule_key_hash(s, r) & mask;
        int dup = 0;

        for (; tab[j]; j = (j + 1) & mask) {
            if (rule_same(s, &s->rules[tab[j] - 1], r)) {
                dup = 1;
                break;
            }
        }
        if (dup)
            continue;
        tab[j] = i + 1;
        ids[r->effect][nids[r->effect]++] = i;
    }
    if ((rc = build_index(s, &s->idx[GH_ALLOW], ids[GH_ALLOW], nids[GH_ALLOW])) != 0)
        goto done;
    rc = build_index(s, &s->idx[GH_DENY], ids[GH_DENY], nids[GH_DENY]);
done:
    free(tab);
    free(ids[0]);
    free(ids[1]);
    return rc;
}

/* Gives back the slack of the doubling arrays: a cached set lives long and
 * the cache's byte budget counts capacity, not use. */
static void shrink1(void *pp, size_t *cap, size_t n, size_t elsz)
{
    void **p = pp;
    if (*p == NULL || n == 0 || *cap <= n)
        return;
    void *q = realloc(*p, n * elsz);
    if (q != NULL) {
        *p = q;
        *cap = n;
    }
}

static void set_shrink(gh__set *s)
{
    shrink1(&s->str, &s->capstr, s->nstr, 1);
    shrink1(&s->segs, &s->capsegs, s->nsegs, sizeof(*s->segs));
    shrink1(&s->rules, &s->caprules, s->nrules, sizeof(*s->rules));
    shrink1(&s->binds, &s->capbinds, s->nbinds, sizeof(*s->binds));
    shrink1(&s->scopes, &s->capscopes, s->nscopes, sizeof(*s->scopes));
    shrink1(&s->roles, &s->caproles, s->nroles, sizeof(*s->roles));
}

size_t gh__set_bytes(const gh__set *s)
{
    size_t n = sizeof(*s) + s->capstr + s->capsegs * sizeof(gh__seg) +
               s->caprules * sizeof(gh__rule) + s->capbinds * sizeof(gh__bind) +
               s->capscopes * sizeof(gh__pat) + s->caproles * sizeof(gh__rpath);
    for (int i = 0; i < 2; i++) {
        n += (size_t)s->idx[i].nids * sizeof(uint32_t);
        if (s->idx[i].tab != NULL)
            n += ((size_t)s->idx[i].mask + 1) * sizeof(gh__agrp);
    }
    return n;
}

static void set_release(gh__set *s)
{
    for (int i = 0; i < 2; i++) {
        free(s->idx[i].ids);
        free(s->idx[i].tab);
    }
    free(s->str);
    free(s->segs);
    free(s->rules);
    free(s->binds);
    free(s->scopes);
    free(s->roles);
}

void gh__set_free(gh__set *s)
{
    if (s == NULL)
        return;
    set_release(s);
    free(s);
}

/* ---- collecting from the store ---- */

typedef struct idvec {
    uint64_t *v;
    size_t n, cap;
    int err;
} idvec;

static int collect_id(uint64_t id, void *arg)
{
    idvec *iv = arg;

    if ((iv->err = gh__grow(&iv->v, &iv->cap, iv->n + 1, sizeof(*iv->v))) != 0)
        return 1;
    iv->v[iv->n++] = id;
    return 0;
}

typedef struct bvec {
    gh_binding *v;
    size_t n, cap;
    int err;
} bvec;

static int collect_binding(const gh_binding *b, void *arg)
{
    bvec *bv = arg;

    if ((bv->err = gh__grow(&bv->v, &bv->cap, bv->n + 1, sizeof(*bv->v))) != 0)
        return 1;
    bv->v[bv->n++] = *b;
    return 0;
}

/* Compiles the bindings of subjects[0..n) into a new set. */
static int compile(gh_txn *txn, gh__roles *roles, const gh_member *subjects, size_t n,
                   gh__set **out)
{
    cstate cs;
    gh__roles local;
    bvec bv = {0};
    int rc = GH_ENOMEM;

    *out = NULL;
    memset(&cs, 0, sizeof(cs));
    memset(&local, 0, sizeof(local));
    cs.txn = txn;
    cs.roles = roles ? roles : &local;
    cs.s = calloc(1, sizeof(*cs.s));
    if (cs.s == NULL)
        goto done;
    cs.s->ref = 1;
    for (size_t i = 0; i < n; i++) {
        rc = gh_store_bindings_of_subject(txn, subjects[i], collect_binding, &bv);
        if (rc == 0)
            rc = bv.err;
        if (rc)
            goto done;
    }
    for (size_t i = 0; i < bv.n; i++)
        if ((rc = add_binding(&cs, &bv.v[i])) != 0)
            goto done;
    if ((rc = set_finish(cs.s)) != 0)
        goto done;
    set_shrink(cs.s);
    *out = cs.s;
    cs.s = NULL;
done:
    gh__set_free(cs.s);
    gh__roles_free(&local);
    free(cs.q);
    free(bv.v);
    return rc;
}

int gh__set_compile_user(gh_txn *txn, gh__roles *roles, uint64_t user_id, gh__set **out)
{
    gh_user_hot u;
    idvec groups = {0};
    gh_member *subjects = NULL;
    int rc;

    *out = NULL;
    rc = gh_store_user_hot(txn, user_id, &u);
    if (rc)
        goto done;
    rc = gh_store_user_groups(txn, user_id, collect_id, &groups);
    if (rc == 0)
        rc = groups.err;
    if (rc)
        goto done;
    subjects = malloc((groups.n + 1) * sizeof(*subjects));
    if (subjects == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    subjects[0].kind = GH_MEMBER_USER;
    subjects[0].id = user_id;
    for (size_t i = 0; i < groups.n; i++) {
        subjects[i + 1].kind = GH_MEMBER_GROUP;
        subjects[i + 1].id = groups.v[i];
    }
    rc = compile(txn, roles, subjects, groups.n + 1, out);
    if (rc)
        goto done;
    (*out)->user_id = user_id;
    (*out)->state = u.state;
    (*out)->tombstone = u.tombstone;
done:
    free(subjects);
    free(groups.v);
    return rc;
}

int gh__set_compile_subject(gh_txn *txn, gh__roles *roles, gh_member subject, gh__set **out)
{
    return compile(txn, roles, &subject, 1, out);
}

/* ---- shared role blocks and the per-user decision set ---- */

/* The block of role name: its rules and its ancestors', compiled as one
 * unscoped binding, once per generation. *out is NULL when the role does not
 * exist or grants nothing. */
static int block_get(gh__roles *roles, gh_txn *txn, const char *name, const gh__set **out,
                     uint32_t *idx)
{
    gh_binding b;
    gh__rent *e;
    cstate cs;
    int rc;

    *out = NULL;
    if ((rc = rc_get(roles, txn, name, &e)) != 0)
        return rc;
    *idx = (uint32_t)(e - roles->e);
    if (e->compiled) {
        *out = e->block;
        return 0;
    }
    if (e->role == NULL) {
        e->compiled = 1;
        return 0;
    }
    memset(&cs, 0, sizeof(cs));
    memset(&b, 0, sizeof(b));
    snprintf(b.role, sizeof(b.role), "%s", name);
    cs.txn = txn;
    cs.roles = roles;
    cs.s = calloc(1, sizeof(*cs.s));
    if (cs.s == NULL)
        return GH_ENOMEM;
    rc = add_binding(&cs, &b);
    if (rc == 0)
        rc = set_finish(cs.s);
    free(cs.q);
    if (rc != 0) {
        gh__set_free(cs.s);
        return rc;
    }
    set_shrink(cs.s);
    /* add_binding may have moved the entries: find ours again (cached now) */
    if ((rc = rc_get(roles, txn, name, &e)) != 0) {
        gh__set_free(cs.s);
        return rc;
    }
    e->compiled = 1;
    if (cs.s->idx[GH_ALLOW].nids == 0 && cs.s->idx[GH_DENY].nids == 0) {
        gh__set_free(cs.s); /* no rule: contributes nothing */
        return 0;
    }
    e->block = cs.s;
    *out = cs.s;
    *idx = (uint32_t)(e - roles->e);
    return 0;
}

size_t gh__roles_block_bytes(const gh__roles *rc)
{
    size_t n = 0;
    for (size_t i = 0; i < rc->n; i++)
        if (rc->e[i].block != NULL)
            n += gh__set_bytes(rc->e[i].block);
    if (rc->scopes != NULL)
        n += gh__set_bytes(rc->scopes) + (rc->smask + 1) * sizeof(*rc->stab);
    return n;
}

void gh__uset_free(gh__uset *u)
{
    free(u);
}

size_t gh__uset_bytes(const gh__uset *u)
{
    /* one malloc chunk: the request plus its size word, in 16-byte steps */
    size_t n = (sizeof(*u) + u->nrefs * sizeof(u->refs[0]) + sizeof(size_t) + 15) & ~(size_t)15;
    return n < 32 ? 32 : n;
}

/* The index of scope in the roles' shared scope patterns, compiled there on
 * first use. */
static int scope_get(gh__roles *rc, const char *scope, int32_t *out)
{
    size_t len = strlen(scope), j;
    uint64_t h = gh__hash(scope, len);
    gh__set *s;
    int err;

    if (rc->scopes == NULL && (rc->scopes = calloc(1, sizeof(*rc->scopes))) == NULL)
        return GH_ENOMEM;
    s = rc->scopes;
    if (rc->stab) {
        for (j = h & rc->smask; rc->stab[j]; j = (j + 1) & rc->smask) {
            uint32_t i = rc->stab[j] - 1;
            if (strcmp(gh__str(s, s->scopes[i].text), scope) == 0) {
                *out = (int32_t)i;
                return 0;
            }
        }
    }
    if (rc->stab == NULL || (s->nscopes + 1) * 2 > rc->smask + 1) {
        size_t size = rc->stab ? (rc->smask + 1) * 2 : 16;
        uint32_t *tab = calloc(size, sizeof(*tab));
        if (tab == NULL)
            return GH_ENOMEM;
        for (size_t i = 0; i < s->nscopes; i++) {
            const char *t = gh__str(s, s->scopes[i].text);
            for (j = gh__hash(t, strlen(t)) & (size - 1); tab[j]; j = (j + 1) & (size - 1))
                ;
            tab[j] = (uint32_t)i + 1;
        }
        free(rc->stab);
        rc->stab = tab;
        rc->smask = size - 1;
    }
    if ((err = gh__grow(&s->scopes, &s->capscopes, s->nscopes + 1, sizeof(*s->scopes))) != 0)
        return err;
    err = gh__pat_compile(s, scope, &s->scopes[s->nscopes]);
    if (err == GH_EINVAL) {
        GH_LOGE("authz: a binding has an invalid scope '%s'", scope);
        return GH_EINTERNAL;
    }
    if (err)
        return err;
    for (j = h & rc->smask; rc->stab[j]; j = (j + 1) & rc->smask)
        ;
    rc->stab[j] = (uint32_t)s->nscopes + 1;
    *out = (int32_t)s->nscopes++;
    return 0;
}

typedef struct urefs {
    gh__uref *v;
    size_t n, cap;
} urefs;

/* Adds (block, scope) unless the set holds it already (a role bound to
 * several of the user's groups with the same scope counts once: equal scope
 * texts share one index). */
static int uref_add(gh__roles *rc, urefs *u, uint32_t block, const char *scope)
{
    int32_t si = -1;
    int err;

    if (scope[0] != '\0' && (err = scope_get(rc, scope, &si)) != 0)
        return err;
    for (size_t i = 0; i < u->n; i++)
        if (u->v[i].block == block && u->v[i].scope == si)
            return 0;
    if ((err = gh__grow(&u->v, &u->cap, u->n + 1, sizeof(*u->v))) != 0)
        return err;
    u->v[u->n].block = block;
    u->v[u->n].scope = si;
    u->n++;
    return 0;
}

int gh__uset_compile(gh_txn *txn, gh__roles *roles, uint64_t user_id, gh__uset **out)
{
    gh_user_hot hot;
    idvec groups = {0};
    bvec bv = {0};
    urefs r = {0};
    gh__uset *u;
    size_t ndeny = 0;
    int rc;

    *out = NULL;
    if ((rc = gh_store_user_hot(txn, user_id, &hot)) != 0)
        goto done;
    rc = gh_store_user_groups(txn, user_id, collect_id, &groups);
    if (rc == 0)
        rc = groups.err;
    if (rc)
        goto done;
    rc = gh_store_bindings_of_subject(txn, (gh_member){GH_MEMBER_USER, user_id}, collect_binding,
                                      &bv);
    for (size_t i = 0; rc == 0 && i < groups.n; i++)
        rc = gh_store_bindings_of_subject(txn, (gh_member){GH_MEMBER_GROUP, groups.v[i]},
                                          collect_binding, &bv);
    if (rc == 0)
        rc = bv.err;
    if (rc)
        goto done;
    for (size_t i = 0; i < bv.n; i++) {
        const gh__set *block;
        uint32_t bi;
        if ((rc = block_get(roles, txn, bv.v[i].role, &block, &bi)) != 0)
            goto done;
        if (block != NULL && (rc = uref_add(roles, &r, bi, bv.v[i].scope)) != 0)
            goto done;
    }
    /* blocks that can deny first, so that a decision stops at the first
     * allow once every possible deny has been looked at */
    for (size_t i = 0; i < r.n; i++) {
        if (roles->e[r.v[i].block].block->idx[GH_DENY].nids == 0)
            continue;
        gh__uref t = r.v[i];
        memmove(&r.v[ndeny + 1], &r.v[ndeny], (i - ndeny) * sizeof(t));
        r.v[ndeny++] = t;
    }
    if (r.n > UINT32_MAX / 2) {
        rc = GH_ETOOBIG;
        goto done;
    }
    if ((u = malloc(sizeof(*u) + r.n * sizeof(u->refs[0]))) == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    u->user_id = user_id;
    u->rc = roles;
    u->state = (uint8_t)hot.state;
    u->tombstone = hot.tombstone != 0;
    u->ref = 0;
    u->nrefs = (uint32_t)r.n;
    u->ndeny = (uint32_t)ndeny;
    if (r.n)
        memcpy(u->refs, r.v, r.n * sizeof(u->refs[0]));
    *out = u;
done:
    free(r.v);
    free(groups.v);
    free(bv.v);
    return rc;
}
