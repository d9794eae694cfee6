/*
 * bench_data.c: the generated directory both servers are loaded with, and
 * the requests drawn from it.
 *
 * Shape for U users (the standard set is U = 10,000): U/20 groups of
 * 50 members (80% leaf groups of 50 users, 16% holding 5 leaf subgroups,
 * 4% holding 4 of those: nesting three levels deep), 50 roles (20 of them
 * inheriting, chains up to three deep) of 2-4 allow rules and sometimes a
 * deny, U/5 bindings (80% to groups, a quarter scoped to one application).
 * Everything comes from --seed, so two runs load the same directory.
 *
 * The one thing to know: a check is drawn half from a binding the user
 * really has (instantiating one of the role's allow patterns inside the
 * binding's scope: mostly allowed, unless a deny overrides) and half at
 * random (mostly denied), so the fast path sees both outcomes; the run
 * reports the allow share it got.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tests/bench/bench_common.h"

const char *const bn_actions[BN_ACTIONS] = {
    "read",       "write",        "deploy",      "restart",     "delete",
    "audit:read", "audit:export", "admin:users", "admin:roles", "billing:view",
};

static const char *const envs[3] = {"prod", "stage", "dev"};
static const char *const comps[6] = {"api", "db", "web", "logs", "config", "queue"};

#define GROUP_SIZE 50
#define NROLES 50

void bn_user_name(char *buf, size_t len, uint32_t u)
{
    snprintf(buf, len, "u%07u", u);
}

void bn_group_name(char *buf, size_t len, uint32_t g)
{
    snprintf(buf, len, "g%05u", g);
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (p == NULL)
        bn_die("out of memory generating the data set");
    return p;
}

/* Builds CSR (off[n+1], idx[]) from (key, value) pairs. */
static void csr_build(uint32_t n, const uint32_t *keys, const uint32_t *vals, size_t npairs,
                      uint32_t **off_out, uint32_t **idx_out)
{
    uint32_t *off = xcalloc((size_t)n + 1, sizeof(*off));
    uint32_t *idx = xcalloc(npairs, sizeof(*idx));
    uint32_t *fill = xcalloc((size_t)n + 1, sizeof(*fill));
    for (size_t i = 0; i < npairs; i++)
        off[keys[i] + 1]++;
    for (uint32_t i = 0; i < n; i++)
        off[i + 1] += off[i];
    for (size_t i = 0; i < npairs; i++)
        idx[off[keys[i]] + fill[keys[i]]++] = vals[i];
    free(fill);
    *off_out = off;
    *idx_out = idx;
}

static void gen_rule(bn_rng *r, uint32_t napps, bn_rule *ru, int deny)
{
    uint32_t app = bn_rng_below(r, napps);
    ru->deny = deny;
    if (deny) {
        if (bn_rng_below(r, 2) == 0) {
            snprintf(ru->action, sizeof(ru->action), "delete");
            snprintf(ru->resource, sizeof(ru->resource), "app/*/prod/**");
        } else {
            snprintf(ru->action, sizeof(ru->action), "write");
            snprintf(ru->resource, sizeof(ru->resource), "app/a%03u/prod/db", app);
        }
        return;
    }
    const char *act = bn_actions[bn_rng_below(r, 5)]; /* read .. delete */
    switch (bn_rng_below(r, 6)) {
    case 0:
        snprintf(ru->action, sizeof(ru->action), "%s", act);
        snprintf(ru->resource, sizeof(ru->resource), "app/a%03u/**", app);
        break;
    case 1:
        snprintf(ru->action, sizeof(ru->action), "read");
        snprintf(ru->resource, sizeof(ru->resource), "app/*/dev/**");
        break;
    case 2:
        snprintf(ru->action, sizeof(ru->action), "%s", act);
        snprintf(ru->resource, sizeof(ru->resource), "app/a%03u/*/logs", app);
        break;
    case 3:
        snprintf(ru->action, sizeof(ru->action), "audit:*");
        snprintf(ru->resource, sizeof(ru->resource), "app/a%03u/**", app);
        break;
    case 4:
        snprintf(ru->action, sizeof(ru->action), "%s", act);
        snprintf(ru->resource, sizeof(ru->resource), "app/a%03u/prod/config", app);
        break;
    default:
        snprintf(ru->action, sizeof(ru->action), "*");
        snprintf(ru->resource, sizeof(ru->resource), "app/a%03u/stage/**", app);
        break;
    }
}

/* Open-addressing set of 64-bit keys (bindings must be unique). */
typedef struct kset {
    uint64_t *k;
    size_t mask;
} kset;

static int kset_add(kset *s, uint64_t key)
{
    key |= 1ull << 63; /* never 0 */
    size_t i = (size_t)(key * 0x9e3779b97f4a7c15ull) & s->mask;
    while (s->k[i]) {
        if (s->k[i] == key)
            return 0;
        i = (i + 1) & s->mask;
    }
    s->k[i] = key;
    return 1;
}

void bn_data_generate(bn_data *d, uint32_t nusers, uint64_t seed)
{
    bn_rng r;
    memset(d, 0, sizeof(*d));
    bn_rng_seed(&r, seed);
    d->seed = seed;
    d->nusers = nusers < 100 ? 100 : nusers;
    d->ngroups = d->nusers / 20 < 10 ? 10 : d->nusers / 20;
    d->nroles = NROLES;
    d->nbindings = d->nusers / 5 < 50 ? 50 : d->nusers / 5;
    d->napps = 200;
    snprintf(d->password, sizeof(d->password), "bench-Passw0rd-%u", (unsigned)(seed % 1000));

    uint32_t nleaf = d->ngroups * 80 / 100, nl1 = d->ngroups * 16 / 100;
    uint32_t nl2 = d->ngroups - nleaf - nl1;
    (void)nl2;

    /* memberships */
    size_t cap = (size_t)d->ngroups * GROUP_SIZE;
    uint32_t *mk = xcalloc(cap, sizeof(*mk)), *mv = xcalloc(cap, sizeof(*mv));
    uint32_t *sk = xcalloc((size_t)d->ngroups * 5, sizeof(*sk));
    uint32_t *sv = xcalloc((size_t)d->ngroups * 5, sizeof(*sv));
    size_t nm = 0, ns = 0;
    for (uint32_t g = 0; g < d->ngroups; g++) {
        uint32_t nsub = g < nleaf ? 0 : g < nleaf + nl1 ? 5 : 4;
        uint32_t nuser = GROUP_SIZE - nsub;
        size_t first = nm;
        while (nm - first < nuser) {
            uint32_t u = bn_rng_below(&r, d->nusers);
            int dup = 0;
            for (size_t i = first; i < nm; i++)
                dup |= mv[i] == u;
            if (!dup) {
                mk[nm] = g;
                mv[nm++] = u;
            }
        }
        size_t sfirst = ns;
        while (ns - sfirst < nsub) {
            /* level 1 holds leaves, level 2 holds level 1: acyclic by construction */
            uint32_t s =
                g < nleaf + nl1 ? bn_rng_below(&r, nleaf) : nleaf + bn_rng_below(&r, nl1 ? nl1 : 1);
            int dup = 0;
            for (size_t i = sfirst; i < ns; i++)
                dup |= sv[i] == s;
            if (!dup) {
                sk[ns] = g;
                sv[ns++] = s;
            }
        }
    }
    d->nmembers = nm;
    d->nsubgroups = ns;
    csr_build(d->ngroups, mk, mv, nm, &d->gm_off, &d->gm_user);
    csr_build(d->nusers, mv, mk, nm, &d->ug_off, &d->ug_group);
    csr_build(d->ngroups, sk, sv, ns, &d->gs_off, &d->gs_sub);
    csr_build(d->ngroups, sv, sk, ns, &d->gp_off, &d->gp_parent);
    free(mk);
    free(mv);
    free(sk);
    free(sv);

    /* roles */
    d->roles = xcalloc(d->nroles, sizeof(*d->roles));
    for (uint32_t k = 0; k < d->nroles; k++) {
        bn_role *ro = &d->roles[k];
        snprintf(ro->name, sizeof(ro->name), "r%02u", k);
        ro->parent = k >= 10 && k < 30 ? (int)k - 10 : -1;
        int nallow = 2 + (int)bn_rng_below(&r, 3);
        for (int i = 0; i < nallow; i++)
            gen_rule(&r, d->napps, &ro->rules[ro->nrules++], 0);
        if (bn_rng_below(&r, 10) < 4)
            gen_rule(&r, d->napps, &ro->rules[ro->nrules++], 1);
    }

    /* bindings, unique per (role, subject, scope) */
    kset set;
    size_t ssize = 1;
    while (ssize < (size_t)d->nbindings * 2)
        ssize *= 2;
    set.k = xcalloc(ssize, sizeof(*set.k));
    set.mask = ssize - 1;
    d->bindings = xcalloc(d->nbindings, sizeof(*d->bindings));
    for (uint32_t b = 0; b < d->nbindings;) {
        bn_binding *bi = &d->bindings[b];
        bi->role = (int)bn_rng_below(&r, d->nroles);
        bi->is_group = bn_rng_below(&r, 10) < 8;
        bi->subject = bn_rng_below(&r, bi->is_group ? d->ngroups : d->nusers);
        bi->scope_app = bn_rng_below(&r, 4) == 0 ? (int)bn_rng_below(&r, d->napps) : -1;
        uint64_t key = ((uint64_t)bi->role << 56) ^ ((uint64_t)bi->is_group << 55) ^
                       ((uint64_t)bi->subject << 16) ^ (uint64_t)(bi->scope_app + 1);
        if (kset_add(&set, key))
            b++;
    }
    free(set.k);
    uint32_t *bk = xcalloc(d->nbindings, sizeof(*bk)), *bv = xcalloc(d->nbindings, sizeof(*bv));
    size_t nu = 0, ng = 0;
    for (uint32_t b = 0; b < d->nbindings; b++)
        if (!d->bindings[b].is_group) {
            bk[nu] = d->bindings[b].subject;
            bv[nu++] = b;
        }
    csr_build(d->nusers, bk, bv, nu, &d->bu_off, &d->bu_idx);
    for (uint32_t b = 0; b < d->nbindings; b++)
        if (d->bindings[b].is_group) {
            bk[ng] = d->bindings[b].subject;
            bv[ng++] = b;
        }
    csr_build(d->ngroups, bk, bv, ng, &d->bg_off, &d->bg_idx);
    free(bk);
    free(bv);
}

void bn_data_hash(bn_data *d, unsigned long long opslimit, size_t memlimit)
{
    if (crypto_pwhash_str(d->verifier, d->password, strlen(d->password), opslimit, memlimit) != 0)
        bn_die("crypto_pwhash_str failed (opslimit %llu, memlimit %zu): out of memory?", opslimit,
               memlimit);
}

void bn_data_free(bn_data *d)
{
    free(d->gm_off);
    free(d->gm_user);
    free(d->gs_off);
    free(d->gs_sub);
    free(d->ug_off);
    free(d->ug_group);
    free(d->gp_off);
    free(d->gp_parent);
    free(d->roles);
    free(d->bindings);
    free(d->bu_off);
    free(d->bu_idx);
    free(d->bg_off);
    free(d->bg_idx);
    memset(d, 0, sizeof(*d));
}

/* ---- requests ---- */

static void random_resource(const bn_data *d, bn_rng *r, char *buf, size_t len)
{
    snprintf(buf, len, "app/a%03u/%s/%s", bn_rng_below(r, d->napps), envs[bn_rng_below(r, 3)],
             comps[bn_rng_below(r, 6)]);
}

/* A concrete resource matching pattern (and scope_app when it can). */
static void instantiate(const bn_data *d, bn_rng *r, const char *pattern, int scope_app, char *buf,
                        size_t len)
{
    char seg[4][16];
    const char *p = pattern;
    snprintf(seg[0], sizeof(seg[0]), "app");
    if (scope_app >= 0)
        snprintf(seg[1], sizeof(seg[1]), "a%03d", scope_app);
    else
        snprintf(seg[1], sizeof(seg[1]), "a%03u", bn_rng_below(r, d->napps));
    snprintf(seg[2], sizeof(seg[2]), "%s", envs[bn_rng_below(r, 3)]);
    snprintf(seg[3], sizeof(seg[3]), "%s", comps[bn_rng_below(r, 6)]);
    for (int i = 0; i < 4 && *p; i++) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '*' && p[1] == '*')
            break; /* the rest stays random */
        if (!(n == 1 && p[0] == '*') && !(i == 1 && scope_app >= 0) && n < sizeof(seg[i])) {
            memcpy(seg[i], p, n);
            seg[i][n] = '\0';
        }
        p += n;
        if (*p == '/')
            p++;
    }
    snprintf(buf, len, "%s/%s/%s/%s", seg[0], seg[1], seg[2], seg[3]);
}

static void pick_binding(const bn_data *d, bn_rng *r, uint32_t u, int *out, uint32_t *seen)
{
    /* reservoir over the user's own bindings and its groups' (three levels) */
    uint32_t n = 0;
    for (uint32_t i = d->bu_off[u]; i < d->bu_off[u + 1]; i++)
        if (bn_rng_below(r, ++n) == 0)
            *out = (int)d->bu_idx[i];
    for (uint32_t i = d->ug_off[u]; i < d->ug_off[u + 1]; i++) {
        uint32_t lvl[3] = {d->ug_group[i], UINT32_MAX, UINT32_MAX};
        if (d->gp_off[lvl[0]] < d->gp_off[lvl[0] + 1]) {
            lvl[1] = d->gp_parent[d->gp_off[lvl[0]] +
                                  bn_rng_below(r, d->gp_off[lvl[0] + 1] - d->gp_off[lvl[0]])];
            if (d->gp_off[lvl[1]] < d->gp_off[lvl[1] + 1])
                lvl[2] = d->gp_parent[d->gp_off[lvl[1]]];
        }
        for (int l = 0; l < 3 && lvl[l] != UINT32_MAX; l++) {
            uint32_t g = lvl[l];
            for (uint32_t k = d->bg_off[g]; k < d->bg_off[g + 1]; k++)
                if (bn_rng_below(r, ++n) == 0)
                    *out = (int)d->bg_idx[k];
        }
    }
    *seen = n;
}

void bn_check_pick(const bn_data *d, bn_rng *r, uint32_t user, bn_check *c)
{
    int b = -1;
    uint32_t seen = 0;
    c->user = user < d->nusers ? user : bn_rng_below(r, d->nusers);
    c->likely = bn_rng_below(r, 2) == 0;
    uint32_t ng = d->ug_off[c->user + 1] - d->ug_off[c->user];
    if (c->likely && ng > 0)
        c->group = d->ug_group[d->ug_off[c->user] + bn_rng_below(r, ng)];
    else
        c->group = bn_rng_below(r, d->ngroups);
    if (c->likely)
        pick_binding(d, r, c->user, &b, &seen);
    if (b < 0) {
        c->likely = 0;
        snprintf(c->action, sizeof(c->action), "%s", bn_actions[bn_rng_below(r, BN_ACTIONS)]);
        random_resource(d, r, c->resource, sizeof(c->resource));
        return;
    }
    /* an allow rule of the bound role or one of its ancestors */
    const bn_binding *bi = &d->bindings[b];
    const bn_rule *pick = NULL;
    uint32_t n = 0;
    for (int k = bi->role; k >= 0; k = d->roles[k].parent)
        for (int i = 0; i < d->roles[k].nrules; i++)
            if (!d->roles[k].rules[i].deny && bn_rng_below(r, ++n) == 0)
                pick = &d->roles[k].rules[i];
    if (pick == NULL) {
        snprintf(c->action, sizeof(c->action), "read");
        random_resource(d, r, c->resource, sizeof(c->resource));
        return;
    }
    if (strcmp(pick->action, "*") == 0)
        snprintf(c->action, sizeof(c->action), "%s", bn_actions[bn_rng_below(r, BN_ACTIONS)]);
    else if (strcmp(pick->action, "audit:*") == 0)
        snprintf(c->action, sizeof(c->action), "%s",
                 bn_rng_below(r, 2) ? "audit:read" : "audit:export");
    else
        snprintf(c->action, sizeof(c->action), "%s", pick->action);
    instantiate(d, r, pick->resource, bi->scope_app, c->resource, sizeof(c->resource));
}

/* ---- import records ---- */

static int role_depth(const bn_data *d, int k)
{
    int n = 0;
    while (d->roles[k].parent >= 0) {
        k = d->roles[k].parent;
        n++;
    }
    return n;
}

/* phase 0: users, groups; 1-3: roles of inheritance depth 0-2; 4: members, bindings */
uint64_t bn_import_count(const bn_data *d, int phase)
{
    uint64_t n = 0;
    if (phase == 0)
        return (uint64_t)d->nusers + d->ngroups;
    if (phase >= 1 && phase <= 3) {
        for (uint32_t k = 0; k < d->nroles; k++)
            n += role_depth(d, (int)k) == phase - 1;
        return n;
    }
    if (phase == 4)
        return d->nmembers + d->nsubgroups + d->nbindings;
    return 0;
}

static uint32_t csr_find(const uint32_t *off, uint32_t n, uint64_t i)
{
    uint32_t lo = 0, hi = n; /* largest k with off[k] <= i */
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (off[mid] <= i)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static void rules_json(bn_buf *b, const bn_role *ro, int deny)
{
    int first = 1;
    BN_PUTS(b, "[");
    for (int i = 0; i < ro->nrules; i++) {
        if (ro->rules[i].deny != deny)
            continue;
        bn_buf_printf(b, "%s{\"action\":\"%s\",\"resource\":\"%s\"}", first ? "" : ",",
                      ro->rules[i].action, ro->rules[i].resource);
        first = 0;
    }
    BN_PUTS(b, "]");
}

int bn_import_record(const bn_data *d, int phase, uint64_t i, bn_buf *b)
{
    char n1[32], n2[32];
    if (i >= bn_import_count(d, phase))
        return 1;
    if (phase == 0) {
        if (i < d->nusers) {
            bn_user_name(n1, sizeof(n1), (uint32_t)i);
            bn_buf_printf(b,
                          "{\"type\":\"user\",\"name\":\"%s\",\"uid\":%u,\"gid\":100000,"
                          "\"display_name\":\"Bench User %u\",\"mail\":\"%s@bench.example\","
                          "\"verifier\":\"%s\"}",
                          n1, 100000u + (uint32_t)i, (uint32_t)i, n1, d->verifier);
        } else {
            uint32_t g = (uint32_t)(i - d->nusers);
            bn_group_name(n1, sizeof(n1), g);
            bn_buf_printf(b, "{\"type\":\"group\",\"name\":\"%s\",\"gid\":%u}", n1, 200000u + g);
        }
        return 0;
    }
    if (phase >= 1 && phase <= 3) {
        uint64_t seen = 0;
        for (uint32_t k = 0; k < d->nroles; k++) {
            if (role_depth(d, (int)k) != phase - 1 || seen++ != i)
                continue;
            const bn_role *ro = &d->roles[k];
            bn_buf_printf(b,
                          "{\"type\":\"role\",\"name\":\"%s\",\"description\":\"bench role\","
                          "\"allow\":",
                          ro->name);
            rules_json(b, ro, 0);
            BN_PUTS(b, ",\"deny\":");
            rules_json(b, ro, 1);
            if (ro->parent >= 0)
                bn_buf_printf(b, ",\"parents\":[\"%s\"]", d->roles[ro->parent].name);
            BN_PUTS(b, "}");
            return 0;
        }
        return 1;
    }
    if (i < d->nmembers) {
        uint32_t g = csr_find(d->gm_off, d->ngroups, i);
        bn_group_name(n1, sizeof(n1), g);
        bn_user_name(n2, sizeof(n2), d->gm_user[i]);
        bn_buf_printf(b, "{\"type\":\"member\",\"group\":\"%s\",\"user\":\"%s\"}", n1, n2);
        return 0;
    }
    i -= d->nmembers;
    if (i < d->nsubgroups) {
        uint32_t g = csr_find(d->gs_off, d->ngroups, i);
        bn_group_name(n1, sizeof(n1), g);
        bn_group_name(n2, sizeof(n2), d->gs_sub[i]);
        bn_buf_printf(b, "{\"type\":\"member\",\"group\":\"%s\",\"subgroup\":\"%s\"}", n1, n2);
        return 0;
    }
    i -= d->nsubgroups;
    const bn_binding *bi = &d->bindings[i];
    if (bi->is_group)
        bn_group_name(n1, sizeof(n1), bi->subject);
    else
        bn_user_name(n1, sizeof(n1), bi->subject);
    bn_buf_printf(b, "{\"type\":\"binding\",\"role\":\"%s\",\"%s\":\"%s\"", d->roles[bi->role].name,
                  bi->is_group ? "group" : "user", n1);
    if (bi->scope_app >= 0)
        bn_buf_printf(b, ",\"scope\":\"app/a%03d/**\"", bi->scope_app);
    BN_PUTS(b, "}");
    return 0;
}

/* ---- LDIF ---- */

int bn_ldif_write(const bn_data *d, const char *path)
{
    char n[32], m[32];
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "dn: dc=bench\nobjectClass: dcObject\nobjectClass: organization\no: bench\n"
               "dc: bench\n\n"
               "dn: ou=people,dc=bench\nobjectClass: organizationalUnit\nou: people\n\n"
               "dn: ou=groups,dc=bench\nobjectClass: organizationalUnit\nou: groups\n\n");
    for (uint32_t u = 0; u < d->nusers; u++) {
        bn_user_name(n, sizeof(n), u);
        fprintf(f,
                "dn: uid=%s,ou=people,dc=bench\nobjectClass: inetOrgPerson\n"
                "objectClass: posixAccount\nuid: %s\ncn: Bench User %u\nsn: %u\n"
                "mail: %s@bench.example\nuidNumber: %u\ngidNumber: 100000\n"
                "homeDirectory: /home/%s\nuserPassword: {ARGON2}%s\n\n",
                n, n, u, u, n, 100000u + u, n, d->verifier);
    }
    for (uint32_t g = 0; g < d->ngroups; g++) {
        bn_group_name(n, sizeof(n), g);
        fprintf(f, "dn: cn=%s,ou=groups,dc=bench\nobjectClass: groupOfNames\ncn: %s\n", n, n);
        for (uint32_t i = d->gm_off[g]; i < d->gm_off[g + 1]; i++) {
            bn_user_name(m, sizeof(m), d->gm_user[i]);
            fprintf(f, "member: uid=%s,ou=people,dc=bench\n", m);
        }
        for (uint32_t i = d->gs_off[g]; i < d->gs_off[g + 1]; i++) {
            bn_group_name(m, sizeof(m), d->gs_sub[i]);
            fprintf(f, "member: cn=%s,ou=groups,dc=bench\n", m);
        }
        fputc('\n', f);
    }
    return fclose(f) == 0 ? 0 : -1;
}
