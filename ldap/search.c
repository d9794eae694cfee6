/*
 * search.c: Search and Compare over the DIT view, with paged results.
 *
 * A search runs in three steps: locate the base, plan the candidates, then
 * walk them in one fixed order (containers, users by name, groups by name)
 * testing scope, visibility and the filter. Planning asks the filter tree for
 * a complete candidate list per kind from the store's indices (uid, cn,
 * uidNumber, gidNumber, entryUUID, entryDN, and member/memberOf through the
 * membership tables, nested with IN_CHAIN); only a kind with no such list is
 * scanned, and a scan stops at max_scan examined records. Because the order
 * is fixed, a paged-results cookie needs only the last entry sent: it is a
 * random token naming a slot of the session, bound to the search's base,
 * scope and filter.
 *
 * The one thing to know: filters are three-valued (TRUE, FALSE, Undefined)
 * as RFC 4511 says; an entry is returned only on TRUE, so NOT of an unknown
 * attribute matches nothing.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ldap.h>
#include <sodium.h>

#include "ldap/ldap-int.h"

enum { F_FALSE = 0, F_TRUE = 1, F_UNDEF = -1 };
enum { K_USER = 1, K_GROUP = 2 };
#define KEY(kind, id) (((uint64_t)(id) << 1) | ((kind) == K_GROUP))
#define STOP 1 /* a walk callback's "enough" (never a GH_E* code) */

typedef struct idset {
    uint64_t *v;
    size_t n, cap;
} idset;

static int set_add(idset *s, uint64_t k)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        uint64_t *p = realloc(s->v, cap * sizeof(*p));
        if (p == NULL)
            return GH_ENOMEM;
        s->v = p;
        s->cap = cap;
    }
    s->v[s->n++] = k;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void set_sort(idset *s)
{
    size_t o = 0;
    if (s->n == 0)
        return;
    qsort(s->v, s->n, sizeof(*s->v), cmp_u64);
    for (size_t i = 1; i < s->n; i++)
        if (s->v[i] != s->v[o])
            s->v[++o] = s->v[i];
    s->n = o + 1;
}

static int in_sorted(const uint64_t *v, size_t n, uint64_t k)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v[mid] == k)
            return 1;
        if (v[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

typedef struct sctx {
    gh_ldap_session *s;
    gh_ldap *l;
    gh_txn *txn;
    const gh_ldap_req *r;
    const gh_ldap_access *a;
    gh_ldap_out *out;
    idset mine; /* effective groups of the bound user (visibility) */
    /* attribute selection */
    int all_user, all_oper;
    uint8_t want[LA_COUNT];
    /* users: the filter (hot_filter) or the selected attributes (hot_attrs)
     * need only what a user's hot value holds */
    int hot_filter, hot_attrs;
    /* groups: both need only a group's id, name and gid (its hot value) */
    int group_hot;
    /* limits and counts */
    size_t returned, examined;
    uint64_t deadline;
    int code;
    const char *text;
    /* paging */
    int paged;
    size_t page_size;
    gh_ldap_page *page;
    int more;
    int last_phase;
    char last[GH_NAME_MAX + 1];
    int resume_phase;
    char resume[GH_NAME_MAX + 1];
    gh_ldap_entry *scratch; /* the entry a scan fills, reused */
    /* values being collected for one attribute */
    struct berval *vals;
    size_t nvals, capvals;
    int rc;
} sctx;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Names are case-sensitive in the store but caseIgnore in LDAP. A DN names
 * the record spelled as written (one index lookup), else the one record whose
 * name equals it ignoring case (gh_store_*_ids_nocase); two names differing
 * only in case make a third spelling ambiguous, and it names neither. An
 * equality filter takes every spelling instead (plan). */
typedef struct one_id {
    uint64_t id;
    int n;
} one_id;

static int one_id_cb(uint64_t id, void *arg)
{
    one_id *o = arg;
    if (o->n++ == 0)
        o->id = id;
    return o->n > 1; /* a second one: ambiguous, stop */
}

static int find_user_id(gh_txn *txn, const char *name, uint64_t *id)
{
    one_id o = {0, 0};
    if (gh_store_user_id(txn, name, id) == 0)
        return 0;
    if (gh_store_user_ids_nocase(txn, name, one_id_cb, &o) != 0 || o.n != 1)
        return GH_ENOTFOUND;
    *id = o.id;
    return 0;
}

static int find_user(gh_txn *txn, const char *name, gh_user *u)
{
    uint64_t id;
    if (find_user_id(txn, name, &id) != 0 || gh_store_user_get_by_id(txn, id, u) != 0)
        return GH_ENOTFOUND;
    return u->tombstone ? GH_ENOTFOUND : 0;
}

static int find_group_id(gh_txn *txn, const char *name, uint64_t *id)
{
    one_id o = {0, 0};
    if (gh_store_group_id(txn, name, &o.id) != 0) {
        if (gh_store_group_ids_nocase(txn, name, one_id_cb, &o) != 0 || o.n != 1)
            return GH_ENOTFOUND;
    }
    *id = o.id;
    return 0;
}

static int find_group(gh_txn *txn, const char *name, gh_group *g)
{
    uint64_t id;
    if (find_group_id(txn, name, &id) != 0 || gh_store_group_get_by_id(txn, id, g) != 0)
        return GH_ENOTFOUND;
    return g->tombstone ? GH_ENOTFOUND : 0;
}

/* A live group's id, name and gid from its hot value, without decoding its
 * record (the record only when the value predates the tombstone it now
 * carries). g's other fields stay zero: only for what reads id, name, gid
 * (gh__ldap_group_attr_hot). */
static int find_group_hot(gh_txn *txn, const char *name, gh_group *g)
{
    uint64_t id;
    const char *gname;
    size_t len;
    int64_t tombstone;
    if (find_group_id(txn, name, &id) != 0 ||
        gh_store_group_hot_tomb(txn, id, &g->gid, &gname, &len, &tombstone) != 0)
        return GH_ENOTFOUND;
    if (tombstone < 0)
        return find_group(txn, name, g);
    if (tombstone > 0 || len > GH_NAME_MAX)
        return GH_ENOTFOUND;
    g->id = id;
    memcpy(g->name, gname, len);
    g->name[len] = '\0';
    return 0;
}

int gh_ldap_user_canonical(gh_txn *txn, char *name, size_t size)
{
    uint64_t id;
    gh_user_hot h;
    if (find_user_id(txn, name, &id) != 0 || gh_store_user_hot(txn, id, &h) != 0 ||
        h.name_len >= size)
        return GH_ENOTFOUND;
    memcpy(name, h.name, h.name_len);
    name[h.name_len] = '\0';
    return 0;
}

/* ---- resolution of DN-valued assertions into id sets ---- */

typedef struct walk {
    gh_txn *txn;
    idset *set;
    int kind;
} walk;

static int add_id_cb(uint64_t id, void *arg)
{
    return set_add(arg, id);
}

static int add_group_cb(uint64_t id, void *arg)
{
    return set_add(((walk *)arg)->set, KEY(K_GROUP, id));
}

static int add_user_cb(uint64_t id, void *arg)
{
    return set_add(((walk *)arg)->set, KEY(K_USER, id));
}

static int add_member_cb(gh_member m, void *arg)
{
    return set_add(((walk *)arg)->set, KEY(m.kind == GH_MEMBER_GROUP ? K_GROUP : K_USER, m.id));
}

/* Groups nested (down: subgroups, up: parents) from group id, transitively. */
static int group_closure(gh_txn *txn, uint64_t id, int down, idset *out)
{
    idset todo = {0};
    walk w = {txn, &todo, 0};
    int rc = set_add(&todo, KEY(K_GROUP, id));
    size_t guard = 0;
    while (rc == 0 && todo.n > 0 && guard++ < 100000) {
        uint64_t k = todo.v[--todo.n];
        gh_member m = {GH_MEMBER_GROUP, k >> 1};
        if (k != KEY(K_GROUP, id)) {
            if (in_sorted(out->v, out->n, k))
                continue;
            if ((rc = set_add(out, k)) != 0)
                break;
            set_sort(out);
        }
        if (down) {
            idset sub = {0};
            walk ws = {txn, &sub, 0};
            rc = gh_store_group_members(txn, m.id, add_member_cb, &ws);
            for (size_t i = 0; rc == 0 && i < sub.n; i++)
                if (sub.v[i] & 1)
                    rc = set_add(&todo, sub.v[i]);
            free(sub.v);
        } else {
            rc = gh_store_member_of(txn, m, add_group_cb, &w);
        }
        if (rc == GH_ENOTFOUND)
            rc = 0;
    }
    free(todo.v);
    return rc;
}

static int resolve(sctx *c, gh_ldap_filter *f)
{
    char name[GH_NAME_MAX + 1];
    idset set = {0};
    walk w = {c->txn, &set, 0};
    int rc = 0;
    if (f->resolved)
        return 0;
    f->resolved = 1;
    int where = gh__ldap_dn_locate(c->l, f->raw, f->rawlen, name, sizeof(name));
    uint64_t id = 0;
    int kind = 0;
    if (where == DL_USER) {
        if (find_user_id(c->txn, name, &id) == 0)
            kind = K_USER;
    } else if (where == DL_GROUP) {
        gh_group g;
        memset(&g, 0, sizeof(g));
        if (find_group_hot(c->txn, name, &g) == 0) {
            kind = K_GROUP;
            id = g.id;
        }
    }
    if (kind == 0)
        goto done; /* no such entry: the set is empty, nothing matches */
    gh_member m = {kind == K_USER ? GH_MEMBER_USER : GH_MEMBER_GROUP, id};
    if (f->attr == LA_MEMBER && f->type == LF_EQ) {
        rc = gh_store_member_of(c->txn, m, add_group_cb, &w); /* groups holding it directly */
    } else if (f->attr == LA_MEMBEROF && f->type == LF_EQ) {
        if (kind == K_GROUP)
            rc = gh_store_group_members(c->txn, id, add_member_cb, &w);
    } else if (f->attr == LA_MEMBEROF) { /* chain: everything nested in the group */
        if (kind == K_GROUP) {
            rc = gh_store_group_effective_users(c->txn, id, add_user_cb, &w);
            if (rc == 0 || rc == GH_ENOTFOUND)
                rc = group_closure(c->txn, id, 1, &set);
        }
    } else { /* member chain: every group holding it at any depth */
        if (kind == K_USER)
            rc = gh_store_user_groups(c->txn, id, add_group_cb, &w);
        else
            rc = group_closure(c->txn, id, 0, &set);
    }
    if (rc == GH_ENOTFOUND)
        rc = 0;
done:
    set_sort(&set);
    f->set = set.v;
    f->nset = set.n;
    return rc;
}

static int dn_node(const gh_ldap_filter *f)
{
    return f->type == LF_CHAIN ||
           (f->type == LF_EQ && (f->attr == LA_MEMBER || f->attr == LA_MEMBEROF));
}

/* ---- filter evaluation ---- */

typedef struct mval {
    const gh_ldap_filter *f;
    gh_ldap_syntax sx;
    int result;
} mval;

static int int_cmp(const char *a, const char *b)
{
    int na = a[0] == '-', nb = b[0] == '-';
    if (na != nb)
        return na ? -1 : 1;
    size_t la = strlen(a), lb = strlen(b);
    int r = la != lb ? (la < lb ? -1 : 1) : strcmp(a, b);
    return na ? -r : r;
}

static int sub_match(const gh_ldap_filter *f, const char *v, size_t len)
{
    const char *p = v, *end = v + len;
    if (f->initial) {
        size_t n = strlen(f->initial);
        if (len < n || memcmp(v, f->initial, n) != 0)
            return 0;
        p += n;
    }
    for (size_t i = 0; i < f->nany; i++) {
        size_t n = strlen(f->any[i]);
        const char *q = n ? memmem(p, (size_t)(end - p), f->any[i], n) : p;
        if (q == NULL)
            return 0;
        p = q + n;
    }
    if (f->final) {
        size_t n = strlen(f->final);
        if ((size_t)(end - p) < n || memcmp(end - n, f->final, n) != 0)
            return 0;
    }
    return 1;
}

static int match_value_cb(void *arg, const char *v, size_t len)
{
    mval *m = arg;
    const gh_ldap_filter *f = m->f;
    size_t nl;
    char *n = gh__ldap_normalize(f->type == LF_SUB ? SX_CI : m->sx, v, len, &nl);
    int hit = 0;
    if (n == NULL)
        return 0;
    switch (f->type) {
    case LF_EQ:
        hit = nl == f->vlen && memcmp(n, f->value, nl) == 0;
        break;
    case LF_GE:
    case LF_LE: {
        int r;
        if (m->sx == SX_DN || m->sx == SX_BOOL || m->sx == SX_OID) {
            m->result = m->result == F_TRUE ? F_TRUE : F_UNDEF;
            break;
        }
        r = m->sx == SX_INT ? int_cmp(n, f->value) : strcmp(n, f->value);
        hit = f->type == LF_GE ? r >= 0 : r <= 0;
        break;
    }
    case LF_SUB:
        hit = sub_match(f, n, nl);
        break;
    default:
        break;
    }
    free(n);
    if (hit) {
        m->result = F_TRUE;
        return STOP;
    }
    return 0;
}

static int present_cb(void *arg, const char *v, size_t len)
{
    *(int *)arg = 1;
    return STOP;
}

static int entry_key(const gh_ldap_entry *e, uint64_t *k)
{
    if (e->kind == DL_USER)
        *k = KEY(K_USER, e->u.id);
    else if (e->kind == DL_GROUP)
        *k = KEY(K_GROUP, e->g.id);
    else
        return 0;
    return 1;
}

static int eval(sctx *c, const gh_ldap_entry *e, gh_ldap_filter *f)
{
    int r, v;
    switch (f->type) {
    case LF_AND:
        r = F_TRUE;
        for (gh_ldap_filter *ch = f->child; ch; ch = ch->next) {
            v = eval(c, e, ch);
            if (v == F_FALSE)
                return F_FALSE;
            if (v == F_UNDEF)
                r = F_UNDEF;
        }
        return r;
    case LF_OR:
        r = F_FALSE;
        for (gh_ldap_filter *ch = f->child; ch; ch = ch->next) {
            v = eval(c, e, ch);
            if (v == F_TRUE)
                return F_TRUE;
            if (v == F_UNDEF)
                r = F_UNDEF;
        }
        return r;
    case LF_NOT:
        v = f->child ? eval(c, e, f->child) : F_UNDEF;
        return v == F_UNDEF ? F_UNDEF : !v;
    case LF_UNDEFINED:
        return F_UNDEF;
    case LF_PRESENT: {
        int found = 0;
        if (f->attr == LA_UNKNOWN)
            return F_FALSE;
        if (gh__ldap_entry_values(c->l, c->txn, e, f->attr, present_cb, &found) < 0)
            c->rc = GH_EINTERNAL;
        return found ? F_TRUE : F_FALSE;
    }
    default:
        break;
    }
    if (dn_node(f)) {
        uint64_t k;
        if (resolve(c, f) != 0)
            c->rc = GH_EINTERNAL;
        if (!entry_key(e, &k))
            return F_FALSE;
        /* member=X holds on groups only; memberOf on users and groups */
        if (f->attr == LA_MEMBER && e->kind != DL_GROUP)
            return F_FALSE;
        return in_sorted(f->set, f->nset, k) ? F_TRUE : F_FALSE;
    }
    mval m = {f, gh__ldap_attrs[f->attr].syntax, F_FALSE};
    int rc = gh__ldap_entry_values(c->l, c->txn, e, f->attr, match_value_cb, &m);
    if (rc < 0)
        c->rc = rc;
    return m.result;
}

/* ---- planning ---- */

static const char *const user_classes[] = {"top",           "person",       "organizationalperson",
                                           "inetorgperson", "posixaccount", NULL};
static const char *const group_classes[] = {"top", "groupofnames", "posixgroup", NULL};

static int class_of(const char *v, int kind)
{
    const char *const *list = kind == K_USER ? user_classes : group_classes;
    for (size_t i = 0; list[i]; i++)
        if (strcmp(v, list[i]) == 0)
            return 1;
    return 0;
}

/* 1 when f yields every candidate of kind that can match (ids into *out),
 * 0 when the kind must be scanned. */
static int plan(sctx *c, gh_ldap_filter *f, int kind, idset *out, int *err)
{
    char name[GH_NAME_MAX + 1];
    switch (f->type) {
    case LF_AND:
        for (gh_ldap_filter *ch = f->child; ch; ch = ch->next)
            if (plan(c, ch, kind, out, err))
                return 1;
        return 0;
    case LF_OR: {
        idset u = {0};
        for (gh_ldap_filter *ch = f->child; ch; ch = ch->next) {
            if (!plan(c, ch, kind, &u, err)) {
                free(u.v);
                return 0;
            }
        }
        for (size_t i = 0; i < u.n; i++)
            if (set_add(out, u.v[i]) != 0)
                *err = GH_ENOMEM;
        free(u.v);
        return 1;
    }
    case LF_UNDEFINED:
        return 1; /* never TRUE: no candidate */
    case LF_EQ:
    case LF_CHAIN:
        break;
    default:
        return 0;
    }
    if (dn_node(f)) {
        if (resolve(c, f) != 0)
            *err = GH_EINTERNAL;
        if (f->attr == LA_MEMBER && kind == K_USER)
            return 1;
        for (size_t i = 0; i < f->nset; i++)
            if ((int)(f->set[i] & 1) == (kind == K_GROUP) && set_add(out, f->set[i] >> 1) != 0)
                *err = GH_ENOMEM;
        return 1;
    }
    switch (f->attr) {
    case LA_OBJECTCLASS:
        return class_of(f->value, kind) ? 0 : 1;
    case LA_UID:
    case LA_CN: {
        if (f->rawlen > GH_NAME_MAX || (f->attr == LA_UID && kind != K_USER))
            return 1;
        /* every spelling equal ignoring case, as a scan would match (the
         * filter still runs on each candidate: tombstones drop out there) */
        idset names = {0};
        int rc = kind == K_USER ? gh_store_user_ids_nocase(c->txn, f->raw, add_id_cb, &names)
                                : gh_store_group_ids_nocase(c->txn, f->raw, add_id_cb, &names);
        for (size_t i = 0; rc == 0 && i < names.n; i++)
            rc = set_add(out, names.v[i]);
        free(names.v);
        if (rc == GH_ETOOBIG)
            return 0; /* too many spellings to follow: scanned, within ldap_max_scan */
        if (rc != 0)
            *err = rc;
        return 1;
    }
    case LA_UIDNUMBER:
        if (kind == K_USER) {
            gh_user u;
            unsigned long n = strtoul(f->value, NULL, 10);
            if (f->value[0] != '-' && n <= UINT32_MAX &&
                gh_store_user_get_by_uid(c->txn, (uint32_t)n, &u) == 0 && set_add(out, u.id) != 0)
                *err = GH_ENOMEM;
        }
        return 1;
    case LA_GIDNUMBER:
        if (kind == K_GROUP) {
            gh_group g;
            unsigned long n = strtoul(f->value, NULL, 10);
            if (f->value[0] != '-' && n <= UINT32_MAX &&
                gh_store_group_get_by_gid(c->txn, (uint32_t)n, &g) == 0 && set_add(out, g.id) != 0)
                *err = GH_ENOMEM;
            return 1;
        }
        return 0; /* a user's gidNumber has no index */
    case LA_ENTRYUUID: {
        int k;
        uint64_t id;
        if (gh__ldap_uuid_parse(f->value, &k, &id) == 0 && (k == DL_USER) == (kind == K_USER) &&
            set_add(out, id) != 0)
            *err = GH_ENOMEM;
        return 1;
    }
    case LA_ENTRYDN: {
        int where = gh__ldap_dn_locate(c->l, f->raw, f->rawlen, name, sizeof(name));
        if (where == DL_USER && kind == K_USER) {
            gh_user u;
            if (find_user(c->txn, name, &u) == 0 && set_add(out, u.id) != 0)
                *err = GH_ENOMEM;
        } else if (where == DL_GROUP && kind == K_GROUP) {
            gh_group g;
            memset(&g, 0, sizeof(g));
            if (find_group_hot(c->txn, name, &g) == 0 && set_add(out, g.id) != 0)
                *err = GH_ENOMEM;
        }
        return 1;
    }
    case LA_MAIL: /* no index in the store: scanned */
    default:
        return 0;
    }
}

/* ---- output ---- */

static int collect_cb(void *arg, const char *v, size_t len)
{
    sctx *c = arg;
    if (c->nvals == c->capvals) {
        size_t cap = c->capvals ? c->capvals * 2 : 16;
        struct berval *p = realloc(c->vals, cap * sizeof(*p));
        if (p == NULL)
            return GH_ENOMEM;
        c->vals = p;
        c->capvals = cap;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return GH_ENOMEM;
    memcpy(copy, v, len);
    copy[len] = '\0';
    c->vals[c->nvals].bv_val = copy;
    c->vals[c->nvals++].bv_len = len;
    return 0;
}

static void vals_clear(sctx *c)
{
    for (size_t i = 0; i < c->nvals; i++)
        free(c->vals[i].bv_val);
    c->nvals = 0;
}

static int send_entry(sctx *c, const gh_ldap_entry *e)
{
    char dn[GH_DN_MAX + 64];
    BerElement *ber = ber_alloc_t(LBER_USE_DER);
    int err = 0, rc = 0;
    if (ber == NULL)
        return GH_ENOMEM;
    gh__ldap_entry_dn(c->l, e, dn, sizeof(dn));
    err |= ber_printf(ber, "{it{s{" /*}}}*/, c->r->msgid, LDAP_RES_SEARCH_ENTRY, dn) == -1;
    for (int i = 0; i < LA_COUNT && !err; i++) {
        const gh_ldap_attrdef *d = &gh__ldap_attrs[i];
        if (!c->want[i] && !(d->oper ? c->all_oper : c->all_user))
            continue;
        rc = gh__ldap_entry_values(c->l, c->txn, e, i, collect_cb, c);
        if (rc < 0) {
            vals_clear(c);
            break;
        }
        rc = 0;
        if (c->nvals == 0)
            continue;
        err |= ber_printf(ber, "{s[" /*]}*/, d->name) == -1;
        for (size_t v = 0; v < c->nvals && !c->r->search.typesonly && !err; v++)
            err |= ber_printf(ber, "O", &c->vals[v]) == -1;
        err |= ber_printf(ber, /*{[*/ "]}") == -1;
        vals_clear(c);
    }
    err |= ber_printf(ber, /*{{{*/ "}}}") == -1;
    if (err || rc != 0) {
        ber_free(ber, 1);
        return rc ? rc : GH_ENOMEM;
    }
    return gh__ldap_out_ber(c->out, ber);
}

/* Which attributes an entry's hot value answers: gh__ldap_user_attr_hot
 * for users, gh__ldap_group_attr_hot for groups. */
typedef int (*attr_hot_fn)(int attr);

/* 1 when f can be evaluated on an entry read from its hot value: every
 * attribute it tests is hot (the DN-valued member/memberOf tests use the
 * id only). */
static int filter_hot(const gh_ldap_filter *f, attr_hot_fn hot)
{
    switch (f->type) {
    case LF_AND:
    case LF_OR:
    case LF_NOT:
        for (const gh_ldap_filter *ch = f->child; ch; ch = ch->next)
            if (!filter_hot(ch, hot))
                return 0;
        return 1;
    case LF_UNDEFINED:
        return 1;
    default:
        return dn_node(f) || hot(f->attr);
    }
}

/* 1 when every attribute the search returns is hot. */
static int attrs_hot(const sctx *c, attr_hot_fn hot)
{
    if (c->all_user || c->all_oper)
        return 0;
    for (int i = 0; i < LA_COUNT; i++)
        if (c->want[i] && !hot(i))
            return 0;
    return 1;
}

/* A partial user entry becomes whole: its record decoded. */
static int fill(sctx *c, gh_ldap_entry *e)
{
    int rc;
    if (!e->partial)
        return 0;
    rc = gh_store_user_get_by_id(c->txn, e->u.id, &e->u);
    if (rc != 0)
        return rc == GH_ENOTFOUND ? GH_EINTERNAL : rc; /* the hot index named it */
    e->partial = 0;
    return 0;
}

static int visible(sctx *c, const gh_ldap_entry *e)
{
    if (e->kind == DL_ROOTDSE || e->kind == DL_SUBSCHEMA)
        return 1;
    if (!c->a->bound)
        return 0;
    if (c->a->see_all)
        return 1;
    if (e->kind == DL_USER)
        return e->u.id == c->a->user_id;
    if (e->kind == DL_GROUP)
        return in_sorted(c->mine.v, c->mine.n, e->g.id);
    return 1; /* the containers */
}

/* Tests one candidate; STOP when the search must end here. */
static int consider(sctx *c, gh_ldap_entry *e, int phase, const char *pos)
{
    int rc;
    if (phase < c->resume_phase || (phase == c->resume_phase && strcmp(pos, c->resume) <= 0))
        return 0; /* sent in an earlier page */
    if (c->deadline && (c->examined & 63) == 0 && now_ms() > c->deadline) {
        c->code = LR_TIMELIMIT;
        return STOP;
    }
    if (!visible(c, e))
        return 0;
    if (e->partial && !c->hot_filter && (rc = fill(c, e)) != 0) {
        c->rc = rc;
        return STOP;
    }
    if (eval(c, e, c->r->search.filter) != F_TRUE)
        return c->rc ? STOP : 0;
    if (c->paged && c->returned == c->page_size) {
        c->more = 1;
        return STOP;
    }
    if (c->r->search.sizelimit && c->returned == (size_t)c->r->search.sizelimit) {
        c->code = LR_SIZELIMIT;
        return STOP;
    }
    if ((e->partial && !c->hot_attrs && (rc = fill(c, e)) != 0) || (rc = send_entry(c, e)) != 0) {
        c->rc = rc;
        return STOP;
    }
    c->returned++;
    c->last_phase = phase;
    snprintf(c->last, sizeof(c->last), "%s", pos);
    return 0;
}

/* The step every scan callback shares: the ldap_max_scan bound, tombstones
 * skipped, the one scratch entry. NULL when the callback must return *rc. */
static gh_ldap_entry *scan_next(sctx *c, int64_t tombstone, int *rc)
{
    *rc = 0;
    if (++c->examined > c->l->max_scan) {
        c->code = LR_ADMINLIMIT;
        c->text = "the search needs more than ldap_max_scan entries; narrow its filter";
        *rc = STOP;
        return NULL;
    }
    if (tombstone)
        return NULL;
    if (c->scratch == NULL && (c->scratch = malloc(sizeof(*c->scratch))) == NULL)
        *rc = GH_ENOMEM;
    return c->scratch;
}

static int scan_user_cb(const gh_user *u, void *arg)
{
    sctx *c = arg;
    int rc;
    gh_ldap_entry *e = scan_next(c, u->tombstone, &rc);
    if (e == NULL)
        return rc;
    e->kind = DL_USER;
    e->partial = 0;
    e->u = *u;
    return consider(c, e, 1, u->name);
}

/* A partial entry from a user's hot value (no record decoded). */
static void hot_entry(gh_ldap_entry *e, const gh_user_hot *h)
{
    e->kind = DL_USER;
    e->partial = 1;
    e->u.id = h->id;
    e->u.uid = h->uid;
    e->u.tombstone = h->tombstone;
    memcpy(e->u.name, h->name, h->name_len);
    e->u.name[h->name_len] = '\0';
    e->u.gid = h->gid;
    memcpy(e->u.display_name, h->display_name, h->display_name_len);
    e->u.display_name[h->display_name_len] = '\0';
    memcpy(e->u.mail, h->mail, h->mail_len);
    e->u.mail[h->mail_len] = '\0';
}

/* Copies what a partial entry holds (the rest of src is unset). */
static void partial_copy(gh_ldap_entry *dst, const gh_ldap_entry *src)
{
    dst->kind = DL_USER;
    dst->partial = 1;
    dst->u.id = src->u.id;
    dst->u.uid = src->u.uid;
    dst->u.gid = src->u.gid;
    dst->u.tombstone = src->u.tombstone;
    memcpy(dst->u.name, src->u.name, strlen(src->u.name) + 1);
    memcpy(dst->u.display_name, src->u.display_name, strlen(src->u.display_name) + 1);
    memcpy(dst->u.mail, src->u.mail, strlen(src->u.mail) + 1);
}

static int scan_user_hot_cb(const gh_user_hot *h, void *arg)
{
    sctx *c = arg;
    int rc;
    if (scan_next(c, h->tombstone, &rc) == NULL)
        return rc;
    hot_entry(c->scratch, h);
    return consider(c, c->scratch, 1, c->scratch->u.name);
}

static int scan_group_cb(const gh_group *g, void *arg)
{
    sctx *c = arg;
    int rc;
    gh_ldap_entry *e = scan_next(c, g->tombstone, &rc);
    if (e == NULL)
        return rc;
    e->kind = DL_GROUP;
    e->partial = 0;
    e->g = *g;
    return consider(c, e, 2, g->name);
}

/* A group by id from its hot value (id, name, gid, tombstone; the rest
 * zero), or from its record when the value predates the tombstone. */
static int group_from_hot(gh_txn *txn, uint64_t id, gh_group *g)
{
    const char *name;
    size_t len;
    int64_t tombstone;
    int rc = gh_store_group_hot_tomb(txn, id, &g->gid, &name, &len, &tombstone);
    if (rc != 0)
        return rc;
    if (tombstone < 0)
        return gh_store_group_get_by_id(txn, id, g);
    if (len > GH_NAME_MAX)
        return GH_EINTERNAL;
    g->id = id;
    g->tombstone = tombstone;
    memcpy(g->name, name, len);
    g->name[len] = '\0';
    return 0;
}

typedef struct named {
    const char *name; /* inside rec */
    void *rec;        /* gh_user or gh_group; a partial gh_ldap_entry when hot */
} named;

static int cmp_named(const void *a, const void *b)
{
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

/* Walks a planned candidate list of one kind in name order; each record is
 * decoded once, users not at all when the filter needs only their hot value
 * (then only those sent with attributes beyond it are). */
static int walk_list(sctx *c, int kind, idset *ids)
{
    named *v = NULL;
    size_t n = 0;
    int rc = 0, hot = kind == K_USER && c->hot_filter;
    gh_ldap_entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return GH_ENOMEM;
    set_sort(ids);
    if (ids->n > 0 && (v = calloc(ids->n, sizeof(*v))) == NULL) {
        free(e);
        return GH_ENOMEM;
    }
    for (size_t i = 0; i < ids->n; i++) {
        if (hot) {
            gh_user_hot h;
            gh_ldap_entry *pe;
            if (gh_store_user_hot(c->txn, ids->v[i], &h) != 0 || h.tombstone)
                continue;
            if ((pe = malloc(sizeof(*pe))) == NULL) {
                rc = GH_ENOMEM;
                goto done;
            }
            hot_entry(pe, &h);
            v[n].rec = pe;
            v[n++].name = pe->u.name;
            continue;
        }
        void *rec = kind == K_USER ? malloc(sizeof(gh_user)) : calloc(1, sizeof(gh_group));
        if (rec == NULL) {
            rc = GH_ENOMEM;
            goto done;
        }
        int grc;
        if (kind == K_GROUP && c->group_hot)
            grc = group_from_hot(c->txn, ids->v[i], rec);
        else if (kind == K_USER)
            grc = gh_store_user_get_by_id(c->txn, ids->v[i], rec);
        else
            grc = gh_store_group_get_by_id(c->txn, ids->v[i], rec);
        if (grc != 0 ||
            (kind == K_USER ? ((gh_user *)rec)->tombstone : ((gh_group *)rec)->tombstone)) {
            free(rec);
            continue;
        }
        v[n].rec = rec;
        v[n++].name = kind == K_USER ? ((gh_user *)rec)->name : ((gh_group *)rec)->name;
    }
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_named);
    for (size_t i = 0; i < n; i++) {
        e->kind = kind == K_USER ? DL_USER : DL_GROUP;
        e->partial = 0;
        if (hot)
            partial_copy(e, v[i].rec);
        else if (kind == K_USER)
            e->u = *(gh_user *)v[i].rec;
        else
            e->g = *(gh_group *)v[i].rec;
        c->examined++;
        if ((rc = consider(c, e, kind == K_USER ? 1 : 2, v[i].name)) != 0)
            break;
    }
done:
    for (size_t i = 0; i < n; i++)
        free(v[i].rec);
    free(v);
    free(e);
    return rc;
}

static int walk_kind(sctx *c, int kind)
{
    idset ids = {0};
    int err = 0, rc;
    int phase = kind == K_USER ? 1 : 2;
    if (phase < c->resume_phase)
        return 0;
    const char *after = phase == c->resume_phase && c->resume[0] ? c->resume : NULL;
    if (plan(c, c->r->search.filter, kind, &ids, &err)) {
        rc = err ? err : walk_list(c, kind, &ids);
    } else if (kind == K_USER && c->hot_filter) {
        rc = gh_store_user_list_hot(c->txn, after, scan_user_hot_cb, c);
    } else if (kind == K_USER) {
        rc = gh_store_user_list(c->txn, NULL, after, 0, scan_user_cb, c);
    } else {
        rc = gh_store_group_list(c->txn, NULL, after, 0, scan_group_cb, c);
    }
    free(ids.v);
    if (rc == GH_ENOTFOUND)
        rc = 0;
    return rc;
}

static int walk_container(sctx *c, int kind, int index)
{
    gh_ldap_entry *e = calloc(1, sizeof(*e));
    char pos[2] = {(char)('0' + index), '\0'};
    if (e == NULL)
        return GH_ENOMEM;
    e->kind = kind;
    int rc = consider(c, e, 0, pos);
    free(e);
    return rc;
}

/* ---- attribute selection ---- */

static void select_attrs(sctx *c)
{
    const gh_ldap_req *r = c->r;
    int none = 0;
    if (r->search.nattrs == 0)
        c->all_user = 1;
    for (size_t i = 0; i < r->search.nattrs; i++) {
        const struct berval *a = &r->search.attrs[i];
        if (a->bv_len == 1 && a->bv_val[0] == '*')
            c->all_user = 1;
        else if (a->bv_len == 1 && a->bv_val[0] == '+')
            c->all_oper = 1;
        else if (a->bv_len == 3 && memcmp(a->bv_val, "1.1", 3) == 0)
            none = 1;
        else {
            int id = gh__ldap_attr_id(a->bv_val, a->bv_len);
            if (id >= 0 && id != LA_USERPASSWORD)
                c->want[id] = 1;
        }
    }
    (void)none; /* "1.1" alone: no attribute at all (the defaults above stay off) */
}

/* ---- paging ---- */

static int paged_setup(sctx *c, const gh_ldap_ctrl *ctl)
{
    BerElement *ber;
    ber_int_t size;
    struct berval cookie = {0, NULL};
    gh_ldap_session *s = c->s;
    int rc = 0;

    if (!ctl->has_value || ctl->value.bv_len == 0) /* liblber cannot read an empty buffer */
        return LR_PROTOCOL_ERROR;
    ber = ber_init((struct berval *)&ctl->value);
    if (ber == NULL)
        return LR_OTHER;
    if (ber_scanf(ber, "{im}", &size, &cookie) == LBER_ERROR || size < 0 ||
        (cookie.bv_len != 0 && cookie.bv_len != sizeof(s->pages[0].cookie))) {
        rc = LR_PROTOCOL_ERROR;
        goto done;
    }
    c->paged = 1;
    c->page_size = (size_t)size;
    if (cookie.bv_len) {
        for (int i = 0; i < LDAP_PAGES; i++) {
            gh_ldap_page *p = &s->pages[i];
            if (p->used && sodium_memcmp(p->cookie, cookie.bv_val, sizeof(p->cookie)) == 0 &&
                p->key == c->r->search.filter_hash)
                c->page = p;
        }
        if (c->page == NULL) {
            c->text = "paged results cookie is invalid";
            rc = LR_PROTOCOL_ERROR;
            goto done;
        }
        c->resume_phase = c->page->phase;
        snprintf(c->resume, sizeof(c->resume), "%s", c->page->last);
    } else {
        /* a new paged search: the free or least recently used slot */
        gh_ldap_page *p = &s->pages[0];
        for (int i = 1; i < LDAP_PAGES; i++)
            if (!s->pages[i].used || (p->used && s->pages[i].stamp < p->stamp))
                p = &s->pages[i];
        memset(p, 0, sizeof(*p));
        p->key = c->r->search.filter_hash;
        c->page = p;
        c->resume_phase = -1;
    }
done:
    ber_free(ber, 1);
    return rc;
}

static int send_done(sctx *c)
{
    BerElement *ber = ber_alloc_t(LBER_USE_DER);
    int err = 0;
    if (ber == NULL)
        return GH_ENOMEM;
    err |= ber_printf(ber, "{it{ess}" /*}*/, c->r->msgid, LDAP_RES_SEARCH_RESULT, c->code, "",
                      c->text ? c->text : "") == -1;
    if (c->paged) {
        struct berval cookie = {0, NULL}, *val = NULL;
        BerElement *vb = ber_alloc_t(LBER_USE_DER);
        if (c->more && c->code == LR_SUCCESS && c->page) {
            gh_ldap_page *p = c->page;
            p->used = 1;
            p->phase = c->last_phase;
            snprintf(p->last, sizeof(p->last), "%s", c->last);
            p->stamp = ++c->s->page_clock;
            randombytes_buf(p->cookie, sizeof(p->cookie));
            cookie.bv_val = (char *)p->cookie;
            cookie.bv_len = sizeof(p->cookie);
        } else if (c->page) {
            memset(c->page, 0, sizeof(*c->page));
        }
        err |= vb == NULL || ber_printf(vb, "{iO}", 0, &cookie) == -1 || ber_flatten(vb, &val) != 0;
        if (!err)
            err |= ber_printf(ber, "t{{sO}}", LDAP_TAG_CONTROLS, GH_LDAP_OID_PAGED, val) == -1;
        if (vb)
            ber_free(vb, 1);
        if (val)
            ber_bvfree(val);
    }
    err |= ber_printf(ber, /*{*/ "}") == -1;
    if (err) {
        ber_free(ber, 1);
        return GH_ENOMEM;
    }
    return gh__ldap_out_ber(c->out, ber);
}

static int load_base(sctx *c, int where, const char *name, gh_ldap_entry *e)
{
    e->kind = where;
    if (where == DL_USER)
        return find_user(c->txn, name, &e->u);
    if (where == DL_GROUP)
        return find_group(c->txn, name, &e->g);
    return 0;
}

static int mine_cb(uint64_t id, void *arg)
{
    return set_add(arg, id);
}

int gh_ldap_search(gh_ldap_session *s, gh_txn *txn, const gh_ldap_req *r, const gh_ldap_access *a,
                   gh_ldap_out *out, int *code)
{
    sctx *c = calloc(1, sizeof(*c));
    char name[GH_NAME_MAX + 1];
    gh_ldap_entry *base = NULL;
    int rc = 0;
    if (c == NULL)
        return GH_ENOMEM;
    c->s = s;
    c->l = s->l;
    c->txn = txn;
    c->r = r;
    c->a = a;
    c->out = out;
    c->resume_phase = -1;
    if (r->search.timelimit)
        c->deadline = now_ms() + (uint64_t)r->search.timelimit * 1000;
    select_attrs(c);
    c->hot_attrs = attrs_hot(c, gh__ldap_user_attr_hot);
    c->hot_filter = filter_hot(r->search.filter, gh__ldap_user_attr_hot);
    c->group_hot = attrs_hot(c, gh__ldap_group_attr_hot) &&
                   filter_hot(r->search.filter, gh__ldap_group_attr_hot);

    const gh_ldap_ctrl *pc = gh_ldap_req_ctrl(r, GH_LDAP_OID_PAGED);
    if (pc && (c->code = paged_setup(c, pc)) != 0)
        goto reply;
    if (c->paged && c->page_size == 0) {
        /* size 0: the client abandons the paged search */
        c->more = 0;
        goto reply;
    }
    if (a->bound && !a->see_all) {
        rc = gh_store_user_groups(txn, a->user_id, mine_cb, &c->mine);
        if (rc != 0 && rc != GH_ENOTFOUND)
            goto done;
        rc = 0;
        set_sort(&c->mine);
    }

    int where =
        gh__ldap_dn_locate(c->l, r->search.base.bv_val, r->search.base.bv_len, name, sizeof(name));
    int scope = r->search.scope;
    switch (where) {
    case DL_INVALID:
        c->code = LR_INVALID_DN;
        c->text = "invalid DN";
        goto reply;
    case DL_OUTSIDE:
    case DL_NOSUCH:
    case DL_NOSUCH_UNDER:
        c->code = LR_NO_SUCH_OBJECT;
        goto reply;
    case DL_ROOTDSE:
        if (scope == 0)
            break;
        where = DL_SUFFIX; /* a subtree search from "": the naming context */
        scope = 2;
        break;
    default:
        break;
    }
    base = calloc(1, sizeof(*base));
    if (base == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    if (load_base(c, where, name, base) != 0 ||
        (!visible(c, base) && where != DL_SUFFIX && where != DL_PEOPLE && where != DL_GROUPS)) {
        c->code = LR_NO_SUCH_OBJECT;
        goto reply;
    }
    if (scope == 0 || where == DL_USER || where == DL_GROUP) {
        /* the base alone (users and groups have no children) */
        if (scope != 1)
            consider(c, base, 0, "0");
        goto reply;
    }
    int users = 0, groups = 0;
    if (where == DL_SUFFIX) {
        if (scope == 2 && walk_container(c, DL_SUFFIX, 0) == STOP)
            goto reply;
        if (walk_container(c, DL_PEOPLE, 1) == STOP || walk_container(c, DL_GROUPS, 2) == STOP)
            goto reply;
        users = groups = scope == 2;
    } else if (where == DL_PEOPLE || where == DL_GROUPS) {
        if (scope == 2 && walk_container(c, where, where == DL_PEOPLE ? 1 : 2) == STOP)
            goto reply;
        users = where == DL_PEOPLE;
        groups = where == DL_GROUPS;
    }
    if (users && (rc = walk_kind(c, K_USER)) < 0)
        goto done;
    if (rc != STOP && groups && (rc = walk_kind(c, K_GROUP)) < 0)
        goto done;
    rc = 0;
reply:
    if (c->rc) {
        rc = c->rc;
        goto done;
    }
    rc = send_done(c);
done:
    if (code)
        *code = c->code;
    vals_clear(c);
    free(c->vals);
    free(c->mine.v);
    free(c->scratch);
    free(base);
    free(c);
    return rc;
}

int gh_ldap_compare(gh_ldap_session *s, gh_txn *txn, const gh_ldap_req *r, const gh_ldap_access *a,
                    gh_ldap_out *out, int *code)
{
    sctx *c = calloc(1, sizeof(*c));
    gh_ldap_entry *e = calloc(1, sizeof(*e));
    gh_ldap_filter f;
    char name[GH_NAME_MAX + 1];
    int rc = 0, res = LR_SUCCESS;
    memset(&f, 0, sizeof(f));
    if (c == NULL || e == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    c->s = s;
    c->l = s->l;
    c->txn = txn;
    c->r = r;
    c->a = a;
    if (a->bound && !a->see_all) {
        rc = gh_store_user_groups(txn, a->user_id, mine_cb, &c->mine);
        if (rc != 0 && rc != GH_ENOTFOUND)
            goto done;
        rc = 0;
        set_sort(&c->mine);
    }
    int where =
        gh__ldap_dn_locate(c->l, r->compare.dn.bv_val, r->compare.dn.bv_len, name, sizeof(name));
    if (where == DL_INVALID) {
        res = LR_INVALID_DN;
        goto reply;
    }
    f.type = LF_EQ;
    f.attr = gh__ldap_attr_id(r->compare.attr.bv_val, r->compare.attr.bv_len);
    /* a group compared on what its hot value holds (member, cn, gidNumber,
     * ...) is not decoded; anything else reads its record */
    int found = 0;
    if (where == DL_GROUP && gh__ldap_group_attr_hot(f.attr)) {
        e->kind = DL_GROUP;
        found = find_group_hot(c->txn, name, &e->g) == 0;
    } else if (where != DL_OUTSIDE && where != DL_NOSUCH && where != DL_NOSUCH_UNDER) {
        found = load_base(c, where, name, e) == 0;
    }
    if (!found || !visible(c, e)) {
        res = LR_NO_SUCH_OBJECT;
        goto reply;
    }
    if (f.attr == LA_UNKNOWN) {
        res = LR_UNDEFINED_TYPE;
        goto reply;
    }
    if (f.attr == LA_USERPASSWORD) {
        res = LR_INSUFFICIENT_ACCESS;
        goto reply;
    }
    f.value = gh__ldap_normalize(gh__ldap_attrs[f.attr].syntax, r->compare.value.bv_val,
                                 r->compare.value.bv_len, &f.vlen);
    f.raw = strndup(r->compare.value.bv_val, r->compare.value.bv_len);
    f.rawlen = f.raw ? strlen(f.raw) : 0;
    if (f.value == NULL || f.raw == NULL) {
        res = LR_COMPARE_FALSE;
        goto reply;
    }
    int v = eval(c, e, &f);
    if (c->rc) {
        rc = c->rc;
        goto done;
    }
    res = v == F_TRUE ? LR_COMPARE_TRUE : LR_COMPARE_FALSE;
reply:
    rc = gh_ldap_reply_result(out, r, res, "", NULL);
done:
    if (code)
        *code = res;
    free(f.value);
    free(f.raw);
    free(f.set);
    if (c) {
        free(c->mine.v);
        free(c);
    }
    free(e);
    return rc;
}
