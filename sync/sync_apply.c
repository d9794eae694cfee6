/*
 * sync_apply.c: applies one batch of upstream changes to the store. Runs on
 * the writer thread, inside the nested transaction the writer opens for the
 * batch, while the worker that built the batch waits in submit_wait.
 *
 * Before changing it, know that:
 *   - it may run more than once for the same batch (the writer retries after
 *     growing the map), so it reads only the batch's inputs and rewrites all
 *     of its outputs from scratch;
 *   - one bad entry (name collision, invalid value) is skipped and counted,
 *     never allowed to undo the rest: the store refuses such writes before
 *     touching anything. Any other error fails the whole batch, cookie
 *     included, and the worker retries from the last stored cookie;
 *   - a mirrored object is only ever updated in place (never deleted and
 *     re-added on a modify), so local bindings naming it survive;
 *   - only members whose origin is this upstream are managed: a member an
 *     administrator added locally to a mirrored group stays.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/log.h"
#include "sync/sync-int.h"

void gh__sync_batch_reset(gh__sync_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->ch[i].members);
    b->n = 0;
    free(b->blob);
    b->blob = NULL;
    b->bloblen = 0;
    b->pre_skipped = 0;
    b->pre_foreign = 0;
    b->pre_err[0] = '\0';
    b->nfx = 0;
    memset(&b->res, 0, sizeof(b->res));
    b->err[0] = '\0';
}

void gh__sync_batch_free(gh__sync_batch *b)
{
    gh__sync_batch_reset(b);
    free(b->ch);
    free(b->fx);
    b->ch = NULL;
    b->fx = NULL;
    b->cap = b->capfx = 0;
}

gh__sync_change *gh__sync_batch_add(gh__sync_batch *b, int type, const char *key)
{
    if (b->n == b->cap) {
        size_t cap = b->cap == 0 ? 64 : b->cap * 2;
        gh__sync_change *v = realloc(b->ch, cap * sizeof(*v));
        if (v == NULL)
            return NULL;
        b->ch = v;
        b->cap = cap;
    }
    gh__sync_change *c = &b->ch[b->n++];
    memset(c, 0, sizeof(*c));
    c->type = type;
    snprintf(c->key, sizeof(c->key), "%s", key);
    return c;
}

static int fx_add(gh__sync_batch *b, const char *key, int64_t t)
{
    if (b->nfx == b->capfx) {
        size_t cap = b->capfx == 0 ? 16 : b->capfx * 2;
        gh__sync_tombfx *v = realloc(b->fx, cap * sizeof(*v));
        if (v == NULL)
            return GH_ENOMEM;
        b->fx = v;
        b->capfx = cap;
    }
    snprintf(b->fx[b->nfx].key, sizeof(b->fx[b->nfx].key), "%s", key);
    b->fx[b->nfx++].time = t;
    return 0;
}

/* Errors a single entry may meet without the batch failing. */
static int soft(int rc)
{
    return rc == GH_EINVAL || rc == GH_EEXISTS || rc == GH_ECYCLE || rc == GH_ENOTFOUND ||
           rc == GH_ETOOBIG || rc == GH_EPERM;
}

static void skip(gh__sync_batch *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void skip(gh__sync_batch *b, const char *fmt, ...)
{
    va_list ap;
    b->res.skipped++;
    va_start(ap, fmt);
    vsnprintf(b->err, sizeof(b->err), fmt, ap);
    va_end(ap);
    GH_LOGI("sync %s: %s", b->cfg->name, b->err);
}

static int is_ours(const gh__sync_batch *b, const char *origin)
{
    return strcmp(origin, b->cfg->name) == 0;
}

/* Makes sure name is free for the user self_id (0: a new user). A tombstone
 * of this upstream holding the name is purged (the upstream re-created the
 * login under a new key); anything else is a collision: GH_EEXISTS. */
static int user_name_free(gh_txn *txn, gh__sync_batch *b, const char *name, uint64_t self_id,
                          gh_user_state *admin)
{
    gh_user o;
    int rc = gh_store_user_get(txn, name, &o);
    if (rc == GH_ENOTFOUND || (rc == 0 && o.id == self_id))
        return 0;
    if (rc != 0)
        return rc;
    if (is_ours(b, o.origin) && o.tombstone != 0) {
        /* an administrator's lock of that login outlives its re-creation */
        if (admin != NULL && o.admin_state != GH_USER_ACTIVE)
            *admin = o.admin_state;
        rc = gh_store_user_del(txn, o.id);
        if (rc != 0)
            return rc;
        b->res.purged++;
        return fx_add(b, o.origin_key, -1);
    }
    skip(b, "user '%s' from %s collides with %s user '%s'; skipped", name, b->cfg->name,
         o.origin[0] != '\0' ? o.origin : "the local", o.name);
    return GH_EEXISTS;
}

static int group_name_free(gh_txn *txn, gh__sync_batch *b, const char *name, uint64_t self_id)
{
    gh_group o;
    int rc = gh_store_group_get(txn, name, &o);
    if (rc == GH_ENOTFOUND || (rc == 0 && o.id == self_id))
        return 0;
    if (rc != 0)
        return rc;
    if (is_ours(b, o.origin) && o.tombstone != 0) {
        rc = gh_store_group_del(txn, o.id);
        if (rc != 0)
            return rc;
        b->res.purged++;
        return fx_add(b, o.origin_key, -1);
    }
    skip(b, "group '%s' from %s collides with %s group '%s'; skipped", name, b->cfg->name,
         o.origin[0] != '\0' ? o.origin : "the local", o.name);
    return GH_EEXISTS;
}

/* The store's refusal of one entry becomes a skip; anything else fails. */
static int entry_failed(gh_txn *txn, gh__sync_batch *b, int rc, const char *what, const char *name)
{
    if (!soft(rc))
        return rc;
    skip(b, "%s '%s' from %s: %s; skipped", what, name, b->cfg->name, gh_txn_errmsg(txn));
    return 0;
}

static int apply_user(gh_txn *txn, gh__sync_batch *b, const gh__sync_change *c)
{
    const struct gh_sync_upstream_cfg *cfg = b->cfg;
    gh_user cur, nu;
    unsigned mask = 0;
    int renamed = 0, resurrect;
    int rc = gh_store_user_get_by_origin(txn, cfg->name, c->key, &cur);

    if (rc == GH_ENOTFOUND) {
        gh_user_state admin = GH_USER_ACTIVE;
        rc = user_name_free(txn, b, c->u.name, 0, &admin);
        if (rc != 0)
            return rc == GH_EEXISTS ? 0 : rc;
        nu = c->u;
        nu.id = 0;
        nu.state = admin; /* the administrator's state; upstream_flags are c->u's */
        rc = gh_store_user_add(txn, &nu);
        if (rc != 0)
            return entry_failed(txn, b, rc, "user", c->u.name);
        b->res.added++;
        return 0;
    }
    if (rc != 0)
        return rc;

    nu = cur;
    if (strcmp(cur.name, c->u.name) != 0) {
        memcpy(nu.name, c->u.name, sizeof(nu.name));
        mask |= GH_UF_NAME;
        renamed = 1;
    }
    if (cfg->uid_number_attr[0] != '\0' && c->u.uid != 0 && c->u.uid != cur.uid) {
        nu.uid = c->u.uid;
        mask |= GH_UF_UID;
    }
    if (cfg->gid_number_attr[0] != '\0' && c->u.gid != cur.gid) {
        nu.gid = c->u.gid;
        mask |= GH_UF_GID;
    }
    if (cfg->display_name_attr[0] != '\0' && strcmp(cur.display_name, c->u.display_name) != 0) {
        memcpy(nu.display_name, c->u.display_name, sizeof(nu.display_name));
        mask |= GH_UF_DISPLAY;
    }
    if (cfg->mail_attr[0] != '\0' && strcmp(cur.mail, c->u.mail) != 0) {
        memcpy(nu.mail, c->u.mail, sizeof(nu.mail));
        mask |= GH_UF_MAIL;
    }
    if (cfg->home_attr[0] != '\0' && strcmp(cur.home, c->u.home) != 0) {
        memcpy(nu.home, c->u.home, sizeof(nu.home));
        mask |= GH_UF_HOME;
    }
    if (cfg->shell_attr[0] != '\0' && strcmp(cur.shell, c->u.shell) != 0) {
        memcpy(nu.shell, c->u.shell, sizeof(nu.shell));
        mask |= GH_UF_SHELL;
    }
    if (cfg->gecos_attr[0] != '\0' && strcmp(cur.gecos, c->u.gecos) != 0) {
        memcpy(nu.gecos, c->u.gecos, sizeof(nu.gecos));
        mask |= GH_UF_GECOS;
    }
    if (strcmp(cur.origin_dn, c->u.origin_dn) != 0) {
        memcpy(nu.origin_dn, c->u.origin_dn, sizeof(nu.origin_dn));
        mask |= GH_UF_ORIGIN;
        renamed = 1;
    }
    if (cur.upstream_flags != c->u.upstream_flags ||
        cur.upstream_expires != c->u.upstream_expires ||
        strcmp(cur.origin_sid, c->u.origin_sid) != 0) {
        nu.upstream_flags = c->u.upstream_flags;
        nu.upstream_expires = c->u.upstream_expires;
        memcpy(nu.origin_sid, c->u.origin_sid, sizeof(nu.origin_sid));
        mask |= GH_UF_UPSTREAM;
    }
    /* back from a deletion: the tombstone goes; the administrator's state
     * (admin_state) was never touched by it and stays what it was */
    resurrect = cur.tombstone != 0;
    if (resurrect) {
        nu.tombstone = 0;
        mask |= GH_UF_TOMBSTONE;
    }
    if (mask == 0)
        return 0;
    if (mask & GH_UF_NAME) {
        rc = user_name_free(txn, b, nu.name, cur.id, NULL);
        if (rc != 0)
            return rc == GH_EEXISTS ? 0 : rc;
    }
    rc = gh_store_user_update(txn, &nu, mask);
    if (rc != 0)
        return entry_failed(txn, b, rc, "user", c->u.name);
    if (resurrect && (rc = fx_add(b, c->key, 0)) != 0)
        return rc;
    if (renamed)
        b->res.renamed++;
    else
        b->res.modified++;
    return 0;
}

/* AD: an accountExpires read earlier has passed (no change upstream marks
 * that moment): the user becomes "expired", hence disabled, and its tokens
 * go as for any disable (gh_store_user_update). */
static int apply_expire(gh_txn *txn, gh__sync_batch *b, const gh__sync_change *c)
{
    gh_user cur;
    int rc = gh_store_user_get_by_origin(txn, b->cfg->name, c->key, &cur);
    if (rc == GH_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if ((cur.upstream_flags & GH_UPSTREAM_EXPIRED) != 0 || cur.upstream_expires == 0)
        return 0;
    cur.upstream_flags |= GH_UPSTREAM_EXPIRED;
    rc = gh_store_user_update(txn, &cur, GH_UF_UPSTREAM);
    if (rc != 0)
        return entry_failed(txn, b, rc, "user", cur.name);
    b->res.modified++;
    return 0;
}

/* A stored key of an older scheme becomes the entry's key of today, in
 * place: the same id, bindings, tokens and memberships. */
static int apply_rekey(gh_txn *txn, gh__sync_batch *b, const gh__sync_change *c)
{
    int rc;
    if (c->link.kind == GH__SYNC_KIND_USER) {
        gh_user u;
        rc = gh_store_user_get_by_origin(txn, b->cfg->name, c->key, &u);
        if (rc == 0) {
            snprintf(u.origin_key, sizeof(u.origin_key), "%s", c->link.key);
            rc = gh_store_user_update(txn, &u, GH_UF_ORIGIN);
            if (rc != 0)
                return entry_failed(txn, b, rc, "user", u.name);
        }
    } else {
        gh_group g;
        rc = gh_store_group_get_by_origin(txn, b->cfg->name, c->key, &g);
        if (rc == 0) {
            snprintf(g.origin_key, sizeof(g.origin_key), "%s", c->link.key);
            rc = gh_store_group_update(txn, &g, GH_GF_ORIGIN);
            if (rc != 0)
                return entry_failed(txn, b, rc, "group", g.name);
        }
    }
    return rc == GH_ENOTFOUND ? 0 : rc;
}

/* Returns 1 in *counted when the group itself was added or changed. */
static int apply_group(gh_txn *txn, gh__sync_batch *b, const gh__sync_change *c, int *counted)
{
    const struct gh_sync_upstream_cfg *cfg = b->cfg;
    gh_group cur, ng;
    unsigned mask = 0;
    int renamed = 0, resurrect;
    int rc = gh_store_group_get_by_origin(txn, cfg->name, c->key, &cur);

    *counted = 0;
    if (rc == GH_ENOTFOUND) {
        rc = group_name_free(txn, b, c->g.name, 0);
        if (rc != 0)
            return rc == GH_EEXISTS ? 0 : rc;
        ng = c->g;
        ng.id = 0;
        rc = gh_store_group_add(txn, &ng);
        if (rc != 0)
            return entry_failed(txn, b, rc, "group", c->g.name);
        b->res.added++;
        *counted = 1;
        return 0;
    }
    if (rc != 0)
        return rc;
    ng = cur;
    if (strcmp(cur.name, c->g.name) != 0) {
        memcpy(ng.name, c->g.name, sizeof(ng.name));
        mask |= GH_GF_NAME;
        renamed = 1;
    }
    if (cfg->gid_number_attr[0] != '\0' && c->g.gid != 0 && c->g.gid != cur.gid) {
        ng.gid = c->g.gid;
        mask |= GH_GF_GID;
    }
    if (cfg->description_attr[0] != '\0' && strcmp(cur.description, c->g.description) != 0) {
        memcpy(ng.description, c->g.description, sizeof(ng.description));
        mask |= GH_GF_DESCRIPTION;
    }
    if (strcmp(cur.origin_dn, c->g.origin_dn) != 0) {
        memcpy(ng.origin_dn, c->g.origin_dn, sizeof(ng.origin_dn));
        mask |= GH_GF_ORIGIN;
        renamed = 1;
    }
    if (strcmp(cur.origin_sid, c->g.origin_sid) != 0) {
        memcpy(ng.origin_sid, c->g.origin_sid, sizeof(ng.origin_sid));
        mask |= GH_GF_UPSTREAM;
    }
    resurrect = cur.tombstone != 0;
    if (resurrect) {
        ng.tombstone = 0;
        mask |= GH_GF_TOMBSTONE;
    }
    if (mask == 0)
        return 0;
    if (mask & GH_GF_NAME) {
        rc = group_name_free(txn, b, ng.name, cur.id);
        if (rc != 0)
            return rc == GH_EEXISTS ? 0 : rc;
    }
    rc = gh_store_group_update(txn, &ng, mask);
    if (rc != 0)
        return entry_failed(txn, b, rc, "group", c->g.name);
    if (resurrect && (rc = fx_add(b, c->key, 0)) != 0)
        return rc;
    if (renamed)
        b->res.renamed++;
    else
        b->res.modified++;
    *counted = 1;
    return 0;
}

/* ---- memberships ---- */

typedef struct mvec {
    gh_member *v;
    size_t n, cap;
    int nomem;
} mvec;

static int mvec_push(mvec *m, gh_member x)
{
    if (m->n == m->cap) {
        size_t cap = m->cap == 0 ? 64 : m->cap * 2;
        gh_member *v = realloc(m->v, cap * sizeof(*v));
        if (v == NULL) {
            m->nomem = 1;
            return GH_ENOMEM;
        }
        m->v = v;
        m->cap = cap;
    }
    m->v[m->n++] = x;
    return 0;
}

static int collect_member(gh_member m, void *arg)
{
    return mvec_push(arg, m);
}

static int member_cmp(const void *a, const void *b)
{
    const gh_member *x = a, *y = b;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id ? 1 : 0);
}

static int member_in(const mvec *m, gh_member x)
{
    return m->n > 0 && bsearch(&x, m->v, m->n, sizeof(x), member_cmp) != NULL;
}

/* Looks up a mirrored member by its upstream key; GH_ENOTFOUND when it is
 * not mirrored (outside base or filter, skipped, or tombstoned). */
static int resolve_ref(gh_txn *txn, const gh__sync_batch *b, const gh__sync_ref *r, gh_member *out)
{
    int rc;
    if (r->kind == GH__SYNC_KIND_USER) {
        gh_user u;
        rc = gh_store_user_get_by_origin(txn, b->cfg->name, r->key, &u);
        if (rc == 0) {
            out->kind = GH_MEMBER_USER;
            out->id = u.id;
        }
    } else {
        gh_group g;
        rc = gh_store_group_get_by_origin(txn, b->cfg->name, r->key, &g);
        if (rc == 0 && g.tombstone != 0)
            rc = GH_ENOTFOUND;
        if (rc == 0) {
            out->kind = GH_MEMBER_GROUP;
            out->id = g.id;
        }
    }
    return rc;
}

/* Whether a current member was put there by this upstream. */
static int member_is_ours(gh_txn *txn, const gh__sync_batch *b, gh_member m, int *ours)
{
    int rc;
    *ours = 0;
    if (m.kind == GH_MEMBER_USER) {
        gh_user u;
        rc = gh_store_user_get_by_id(txn, m.id, &u);
        if (rc == 0)
            *ours = is_ours(b, u.origin);
    } else {
        gh_group g;
        rc = gh_store_group_get_by_id(txn, m.id, &g);
        if (rc == 0)
            *ours = is_ours(b, g.origin);
    }
    return rc == GH_ENOTFOUND ? 0 : rc;
}

static int add_member(gh_txn *txn, gh__sync_batch *b, const gh_group *g, gh_member m, int *changed)
{
    int rc = gh_store_member_add(txn, g->id, m);
    if (rc == 0) {
        *changed = 1;
        return 0;
    }
    if (rc == GH_EEXISTS)
        return 0;
    if (!soft(rc))
        return rc;
    skip(b, "member of group '%s' from %s: %s; skipped", g->name, b->cfg->name, gh_txn_errmsg(txn));
    return 0;
}

/* Makes the group's upstream-owned members exactly c->members. */
static int reconcile(gh_txn *txn, gh__sync_batch *b, const gh__sync_change *c, int counted)
{
    mvec want = {0}, have = {0};
    gh_group g;
    int changed = 0;
    int rc = gh_store_group_get_by_origin(txn, b->cfg->name, c->key, &g);

    if (rc == GH_ENOTFOUND)
        return 0; /* skipped above */
    if (rc != 0)
        return rc;
    if (g.tombstone != 0)
        return 0;
    for (size_t i = 0; i < c->nmembers; i++) {
        gh_member m;
        rc = resolve_ref(txn, b, &c->members[i], &m);
        if (rc == GH_ENOTFOUND) {
            b->res.skipped++;
            continue;
        }
        if (rc != 0)
            goto done;
        if (m.kind == GH_MEMBER_GROUP && m.id == g.id)
            continue; /* a group listing itself */
        if ((rc = mvec_push(&want, m)) != 0)
            goto done;
    }
    rc = gh_store_group_members(txn, g.id, collect_member, &have);
    if (have.nomem)
        rc = GH_ENOMEM;
    if (rc != 0)
        goto done;
    if (want.n > 0)
        qsort(want.v, want.n, sizeof(gh_member), member_cmp);
    if (have.n > 0)
        qsort(have.v, have.n, sizeof(gh_member), member_cmp);
    for (size_t i = 0; i < want.n; i++) {
        if (i > 0 && member_cmp(&want.v[i], &want.v[i - 1]) == 0)
            continue;
        if (member_in(&have, want.v[i]))
            continue;
        if ((rc = add_member(txn, b, &g, want.v[i], &changed)) != 0)
            goto done;
    }
    for (size_t i = 0; i < have.n; i++) {
        int ours;
        if (member_in(&want, have.v[i]))
            continue;
        if ((rc = member_is_ours(txn, b, have.v[i], &ours)) != 0)
            goto done;
        if (!ours)
            continue;
        rc = gh_store_member_remove(txn, g.id, have.v[i]);
        if (rc == GH_ENOTFOUND)
            rc = 0;
        if (rc != 0)
            goto done;
        changed = 1;
    }
    if (changed && !counted)
        b->res.modified++;
    rc = 0;
done:
    free(want.v);
    free(have.v);
    return rc;
}

static int apply_link(gh_txn *txn, gh__sync_batch *b, const gh__sync_change *c)
{
    gh_group g;
    gh_member m;
    int changed = 0;
    int rc = gh_store_group_get_by_origin(txn, b->cfg->name, c->key, &g);
    if (rc == GH_ENOTFOUND || (rc == 0 && g.tombstone != 0))
        return 0;
    if (rc != 0)
        return rc;
    rc = resolve_ref(txn, b, &c->link, &m);
    if (rc == GH_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (m.kind == GH_MEMBER_GROUP && m.id == g.id)
        return 0;
    return add_member(txn, b, &g, m, &changed);
}

/* Removes the upstream-owned members of a tombstoned group, so that it
 * grants nothing while it waits for its purge. */
static int empty_group(gh_txn *txn, gh__sync_batch *b, const gh_group *g)
{
    mvec have = {0};
    int rc = gh_store_group_members(txn, g->id, collect_member, &have);
    if (have.nomem)
        rc = GH_ENOMEM;
    for (size_t i = 0; rc == 0 && i < have.n; i++) {
        int ours;
        rc = member_is_ours(txn, b, have.v[i], &ours);
        if (rc == 0 && ours) {
            rc = gh_store_member_remove(txn, g->id, have.v[i]);
            if (rc == GH_ENOTFOUND)
                rc = 0;
        }
    }
    free(have.v);
    return rc;
}

static int apply_delete(gh_txn *txn, gh__sync_batch *b, const gh__sync_change *c)
{
    int64_t now = gh_txn_now(txn);
    gh_user u;
    gh_group g;
    int rc = gh_store_user_get_by_origin(txn, b->cfg->name, c->key, &u);

    if (rc == 0) {
        if (u.tombstone != 0)
            return 0;
        u.tombstone = now; /* the store makes the user disabled while it lasts */
        rc = gh_store_user_update(txn, &u, GH_UF_TOMBSTONE);
        if (rc != 0)
            return entry_failed(txn, b, rc, "user", u.name);
        b->res.disabled++;
        return fx_add(b, c->key, now);
    }
    if (rc != GH_ENOTFOUND)
        return rc;
    rc = gh_store_group_get_by_origin(txn, b->cfg->name, c->key, &g);
    if (rc == GH_ENOTFOUND)
        return 0; /* never mirrored (skipped) or already purged */
    if (rc != 0)
        return rc;
    if (g.tombstone != 0)
        return 0;
    if ((rc = empty_group(txn, b, &g)) != 0)
        return rc;
    g.tombstone = now;
    rc = gh_store_group_update(txn, &g, GH_GF_TOMBSTONE);
    if (rc != 0)
        return entry_failed(txn, b, rc, "group", g.name);
    b->res.disabled++;
    return fx_add(b, c->key, now);
}

static int apply_purge(gh_txn *txn, gh__sync_batch *b, const gh__sync_change *c)
{
    int64_t now = gh_txn_now(txn);
    gh_user u;
    gh_group g;
    int rc = gh_store_user_get_by_origin(txn, b->cfg->name, c->key, &u);

    if (rc == 0) {
        if (u.tombstone == 0)
            return fx_add(b, c->key, 0);
        if (now - u.tombstone < b->cfg->delete_grace)
            return 0;
        if ((rc = gh_store_user_del(txn, u.id)) != 0)
            return rc;
        b->res.purged++;
        return fx_add(b, c->key, -1);
    }
    if (rc != GH_ENOTFOUND)
        return rc;
    rc = gh_store_group_get_by_origin(txn, b->cfg->name, c->key, &g);
    if (rc == GH_ENOTFOUND)
        return fx_add(b, c->key, -1);
    if (rc != 0)
        return rc;
    if (g.tombstone == 0)
        return fx_add(b, c->key, 0);
    if (now - g.tombstone < b->cfg->delete_grace)
        return 0;
    if ((rc = gh_store_group_del(txn, g.id)) != 0)
        return rc;
    b->res.purged++;
    return fx_add(b, c->key, -1);
}

int gh__sync_apply(gh_txn *txn, void *arg)
{
    gh__sync_batch *b = arg;
    unsigned char *counted = NULL;
    int rc = 0;

    memset(&b->res, 0, sizeof(b->res));
    b->nfx = 0;
    snprintf(b->err, sizeof(b->err), "%s", b->pre_err);
    b->res.skipped = b->pre_skipped;
    b->res.foreign = b->pre_foreign;
    if (b->n > 0 && (counted = calloc(b->n, 1)) == NULL)
        return GH_ENOMEM;

    /* Entries in upstream order (an add then a delete of the same key must
     * end deleted), then memberships, once every group of the batch exists. */
    for (size_t i = 0; i < b->n && rc == 0; i++) {
        const gh__sync_change *c = &b->ch[i];
        int cnt = 0;
        switch (c->type) {
        case GH__SYNC_CH_USER:
            rc = apply_user(txn, b, c);
            break;
        case GH__SYNC_CH_GROUP:
            rc = apply_group(txn, b, c, &cnt);
            counted[i] = (unsigned char)cnt;
            break;
        case GH__SYNC_CH_DELETE:
            rc = apply_delete(txn, b, c);
            break;
        case GH__SYNC_CH_PURGE:
            rc = apply_purge(txn, b, c);
            break;
        case GH__SYNC_CH_EXPIRE:
            rc = apply_expire(txn, b, c);
            break;
        case GH__SYNC_CH_REKEY:
            rc = apply_rekey(txn, b, c);
            break;
        default:
            break;
        }
    }
    for (size_t i = 0; i < b->n && rc == 0; i++) {
        const gh__sync_change *c = &b->ch[i];
        if (c->type == GH__SYNC_CH_GROUP && !c->superseded)
            rc = reconcile(txn, b, c, counted[i]);
        else if (c->type == GH__SYNC_CH_LINK)
            rc = apply_link(txn, b, c);
    }
    if (rc == 0 && b->blob != NULL)
        rc = gh_store_sync_put(txn, b->cfg->name, b->blob, b->bloblen);
    free(counted);
    if (rc != 0)
        snprintf(b->err, sizeof(b->err), "%s", gh_strerror(rc));
    return rc;
}
