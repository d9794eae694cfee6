/*
 * match.c: the hot path of a decision. A request is validated and split into
 * segments on the caller's stack once; each candidate rule is then a few
 * length compares and memcmps against segments split at compile time.
 *
 * The one thing to know: nothing here may allocate or touch the store. The
 * exact-action table narrows the rules to those naming the request's action
 * (plus the "*" / "prefix:*" ones), and the lowest matching rule index wins,
 * so explanations are deterministic whatever the table layout.
 */
#include <string.h>

#include "authz/authz-int.h"
#include "schema/error.h"

uint64_t gh__hash(const char *s, size_t len)
{
    uint64_t h = GH__HASH_SEED;

    for (size_t i = 0; i < len; i++)
        h = gh__hash_step(h, (unsigned char)s[i]);
    return h;
}

/* Characters of a concrete action (the action pattern alphabet minus '*'). */
static int action_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == ':' || ch == '-';
}

int gh__req_init(gh__req *q, const char *action, const char *resource)
{
    size_t i, start;

    q->nseg = 0;
    q->alen = 0;
    if (action == NULL || resource == NULL)
        return GH_EINVAL;
    uint64_t h = GH__HASH_SEED, amask = 0;
    for (i = 0; action[i]; i++) {
        if (i >= GH_PATTERN_MAX || !action_char((unsigned char)action[i]))
            return GH_EINVAL;
        h = gh__hash_step(h, (unsigned char)action[i]);
        if (action[i] == ':')
            amask |= gh__abit(h); /* "prefix:" as a "prefix:*" rule stores it */
    }
    if (i == 0)
        return GH_EINVAL;
    q->action = action;
    q->alen = (uint32_t)i;
    q->ahash = h;
    q->amask = amask | gh__abit(h);

    /* Split on '/', refusing empty segments and wildcards; the schema's own
     * rule for a concrete resource (characters, UTF-8) has the last word. */
    start = 0;
    for (i = 0;; i++) {
        char ch = resource[i];
        if (ch == '/' || ch == '\0') {
            if (i == start || q->nseg >= GH__SEGS_MAX)
                return GH_EINVAL;
            q->seg[q->nseg].p = resource + start;
            q->seg[q->nseg].len = (uint32_t)(i - start);
            q->nseg++;
            if (ch == '\0')
                break;
            start = i + 1;
        } else if (ch == '*' || i >= GH_PATTERN_MAX) {
            return GH_EINVAL;
        }
    }
    if (gh_schema_resource_concrete_valid(resource, NULL, 0) != 0)
        return GH_EINVAL;
    return 0;
}

int gh__pat_match(const gh__set *s, const gh__pat *p, const gh__req *q)
{
    const gh__seg *sg;

    if (p->rest ? q->nseg < p->nseg : q->nseg != p->nseg)
        return 0;
    if (p->nseg == 0)
        return 1; /* "**": a set of such rules alone has no segments (segs NULL) */
    sg = s->segs + p->seg;
    for (uint32_t i = 0; i < p->nseg; i++) {
        if (sg[i].len == 0)
            continue; /* "*": any one segment (request segments are never empty) */
        const char *t = s->str + sg[i].off;
        uint32_t n = sg[i].len;
        /* the last byte first: names that differ mostly differ at the end
         * ("a017" against "a033"), and it spares the call */
        if (n != q->seg[i].len || t[n - 1] != q->seg[i].p[n - 1] || memcmp(t, q->seg[i].p, n) != 0)
            return 0;
    }
    return 1;
}

static int rule_match(const gh__set *s, const gh__rule *r, const gh__req *q)
{
    if (!gh__pat_match(s, &r->res, q))
        return 0;
    return r->scope < 0 || gh__pat_match(s, &s->scopes[r->scope], q);
}

int32_t gh__set_find(const gh__set *s, gh_effect effect, const gh__req *q)
{
    const gh__eidx *x = &s->idx[effect];
    int32_t best = -1;
    uint32_t i;

    if (x->nids == 0 || (!x->any && (x->amask & q->amask) == 0))
        return -1; /* no rule names this action or a prefix of it */
    if (x->nexact > 0) {
        for (i = (uint32_t)q->ahash & x->mask;; i = (i + 1) & x->mask) {
            const gh__agrp *g = &x->tab[i];
            if (g->alen == 0)
                break;
            if (g->hash != q->ahash || g->alen != q->alen ||
                memcmp(s->str + g->aoff, q->action, q->alen) != 0)
                continue;
            for (uint32_t k = g->start; k < g->end; k++) {
                if (rule_match(s, &s->rules[x->ids[k]], q)) {
                    best = (int32_t)x->ids[k];
                    break;
                }
            }
            break;
        }
    }
    for (i = x->nexact; i < x->nids; i++) {
        const gh__rule *r = &s->rules[x->ids[i]];
        if (best >= 0 && x->ids[i] > (uint32_t)best)
            break; /* ids ascend: nothing lower can follow */
        if (r->akind == GH__ACT_PREFIX &&
            (q->alen < r->alen || memcmp(s->str + r->aoff, q->action, r->alen) != 0))
            continue;
        if (rule_match(s, r, q)) {
            best = (int32_t)x->ids[i];
            break;
        }
    }
    return best;
}

int gh__set_decide(const gh__set *s, const gh__req *q, int *why, int32_t *rule)
{
    int32_t r = -1;
    int allow = 0, w;

    if (s->state == GH_USER_LOCKED) {
        w = GH__WHY_LOCKED;
    } else if (s->state != GH_USER_ACTIVE || s->tombstone != 0) {
        w = GH__WHY_DISABLED;
    } else if ((r = gh__set_find(s, GH_DENY, q)) >= 0) {
        w = GH__WHY_RULE;
    } else if ((r = gh__set_find(s, GH_ALLOW, q)) >= 0) {
        w = GH__WHY_RULE;
        allow = 1;
    } else {
        w = GH__WHY_DEFAULT;
    }
    if (why)
        *why = w;
    if (rule)
        *rule = r;
    return allow;
}

static int ref_scope_ok(const gh__uset *u, const gh__uref *r, const gh__req *q)
{
    return r->scope < 0 ||
           gh__pat_match(gh__uref_scopes(u), &gh__uref_scopes(u)->scopes[r->scope], q);
}

/* Whether some rule of x may name q's action (the filter of gh__set_find,
 * asked first: blocks are shared and hot, a user's scopes are not). */
static int may_name(const gh__eidx *x, const gh__req *q)
{
    return x->nids > 0 && (x->any || (x->amask & q->amask) != 0);
}

int gh__uset_decide(const gh__uset *u, const gh__req *q)
{
    int allow = 0;
    size_t i;

    if (u->state != GH_USER_ACTIVE || u->tombstone != 0)
        return 0;
    for (i = 0; i < u->ndeny; i++) {
        const gh__uref *r = &u->refs[i];
        const gh__set *b = gh__uref_block(u, r);
        int d = may_name(&b->idx[GH_DENY], q);
        int a = !allow && may_name(&b->idx[GH_ALLOW], q);
        if ((!d && !a) || !ref_scope_ok(u, r, q))
            continue;
        if (d && gh__set_find(b, GH_DENY, q) >= 0)
            return 0; /* deny overrides */
        if (a && gh__set_find(b, GH_ALLOW, q) >= 0)
            allow = 1;
    }
    if (allow)
        return 1;
    for (; i < u->nrefs; i++) { /* no deny left: the first allow decides */
        const gh__uref *r = &u->refs[i];
        const gh__set *b = gh__uref_block(u, r);
        if (may_name(&b->idx[GH_ALLOW], q) && ref_scope_ok(u, r, q) &&
            gh__set_find(b, GH_ALLOW, q) >= 0)
            return 1;
    }
    return 0;
}
