/*
 * sync_model.c: the worker's model of an upstream, and the turning of
 * upstream entries into the changes of a batch (sync_apply.c applies them).
 *
 * The model maps each mirrored entry's key to its kind, normalized DN and
 * login, so that member DNs (or memberUid logins) become upstream keys, and
 * so that deletions can be found by difference. Member references that name
 * nothing yet are parked per group; when an entry with that DN or login
 * appears, a LINK change adds the membership. It is a model of the upstream,
 * not of the store: the store decides what is accepted (apply skips
 * collisions), and the worker rebuilds the model from the store after any
 * error. One worker owns it: no locks.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "schema/log.h"
#include "sync/sync-int.h"

static void obj_free(void *p)
{
    gh__sync_obj *o = p;
    free(o->ndn);
    free(o->psid);
    free(o->sid);
    gh__sync_keylist_free(&o->unres);
    free(o);
}

void gh__sync_model_free(gh__sync_model *m)
{
    gh__sync_map_clear(&m->by_dn, NULL);
    gh__sync_map_clear(&m->by_login, NULL);
    gh__sync_map_clear(&m->parked, gh__sync_keylist_vfree);
    gh__sync_map_clear(&m->tomb, free);
    gh__sync_map_clear(&m->by_psid, gh__sync_keylist_vfree);
    gh__sync_map_clear(&m->by_sid, NULL);
    gh__sync_map_clear(&m->by_key, obj_free);
    m->nusers = m->ngroups = 0;
}

int gh__sync_tomb_set(gh__sync_model *m, const char *key, int64_t t)
{
    if (t <= 0) {
        free(gh__sync_map_del(&m->tomb, key));
        return 0;
    }
    int64_t *v = malloc(sizeof(*v));
    void *old;
    if (v == NULL)
        return GH_ENOMEM;
    *v = t;
    if (gh__sync_map_put(&m->tomb, key, v, &old) != 0) {
        free(v);
        return GH_ENOMEM;
    }
    free(old);
    return 0;
}

/* Drops the group's parked references. */
static void unpark_group(gh__sync_model *m, gh__sync_obj *g)
{
    for (size_t i = 0; i < g->unres.n; i++) {
        gh__sync_keylist *l = gh__sync_map_get(&m->parked, g->unres.v[i]);
        if (l == NULL)
            continue;
        for (size_t j = 0; j < l->n; j++) {
            if (strcmp(l->v[j], g->key) == 0) {
                free(l->v[j]);
                l->v[j] = l->v[--l->n];
                break;
            }
        }
        if (l->n == 0)
            gh__sync_keylist_vfree(gh__sync_map_del(&m->parked, g->unres.v[i]));
    }
    gh__sync_keylist_free(&g->unres);
}

/* Takes key out of the user list of primary group psid. */
static void primary_drop(gh__sync_model *m, const char *psid, const char *key)
{
    gh__sync_keylist *l = psid != NULL ? gh__sync_map_get(&m->by_psid, psid) : NULL;
    if (l == NULL)
        return;
    for (size_t j = 0; j < l->n; j++) {
        if (strcmp(l->v[j], key) == 0) {
            free(l->v[j]);
            l->v[j] = l->v[--l->n];
            break;
        }
    }
    if (l->n == 0)
        gh__sync_keylist_vfree(gh__sync_map_del(&m->by_psid, psid));
}

static void model_unlink(gh__sync_model *m, gh__sync_obj *o)
{
    if (o->ndn != NULL && o->ndn[0] != '\0' && gh__sync_map_get(&m->by_dn, o->ndn) == o)
        gh__sync_map_del(&m->by_dn, o->ndn);
    if (o->kind == GH__SYNC_KIND_USER && o->login[0] != '\0' &&
        gh__sync_map_get(&m->by_login, o->login) == o)
        gh__sync_map_del(&m->by_login, o->login);
}

static void model_remove(gh__sync_model *m, const char *key)
{
    gh__sync_obj *o = gh__sync_map_del(&m->by_key, key);
    if (o == NULL)
        return;
    model_unlink(m, o);
    primary_drop(m, o->psid, o->key);
    if (o->sid != NULL && gh__sync_map_get(&m->by_sid, o->sid) == o)
        gh__sync_map_del(&m->by_sid, o->sid);
    if (o->kind == GH__SYNC_KIND_GROUP) {
        unpark_group(m, o);
        m->ngroups--;
    } else {
        m->nusers--;
    }
    obj_free(o);
}

/* Inserts or updates an object; *changed_ref is set when it became reachable
 * under a new DN or login (parked references may now resolve). */
gh__sync_obj *gh__sync_model_put(gh__sync_model *m, int kind, const char *key, const char *dn,
                                 const char *login, int *changed_ref)
{
    gh__sync_obj *o = gh__sync_map_get(&m->by_key, key);
    char *ndn = gh__sync_dn_norm(dn);
    *changed_ref = 0;
    if (ndn == NULL)
        return NULL;
    if (o != NULL && o->kind != kind) {
        /* an entry that moved from one filter to the other */
        model_remove(m, key);
        o = NULL;
    }
    if (o == NULL) {
        o = calloc(1, sizeof(*o));
        if (o == NULL || gh__sync_map_put(&m->by_key, key, o, NULL) != 0) {
            free(o);
            free(ndn);
            return NULL;
        }
        o->kind = kind;
        snprintf(o->key, sizeof(o->key), "%s", key);
        if (kind == GH__SYNC_KIND_USER)
            m->nusers++;
        else
            m->ngroups++;
    }
    if (o->ndn == NULL || strcmp(o->ndn, ndn) != 0 ||
        (kind == GH__SYNC_KIND_USER && strcmp(o->login, login) != 0)) {
        model_unlink(m, o);
        free(o->ndn);
        o->ndn = ndn;
        ndn = NULL;
        if (o->ndn[0] != '\0')
            gh__sync_map_put(&m->by_dn, o->ndn, o, NULL);
        if (kind == GH__SYNC_KIND_USER) {
            snprintf(o->login, sizeof(o->login), "%s", login);
            gh__sync_map_put(&m->by_login, o->login, o, NULL);
        }
        *changed_ref = 1;
    }
    free(ndn);
    return o;
}

static int first_value(LDAP *ld, LDAPMessage *e, const char *attr, char *out, size_t outlen)
{
    struct berval **v;
    out[0] = '\0';
    if (attr[0] == '\0')
        return GH_ENOTFOUND;
    v = ldap_get_values_len(ld, e, attr);
    if (v == NULL || v[0] == NULL) {
        ldap_value_free_len(v);
        return GH_ENOTFOUND;
    }
    int rc = 0;
    if (v[0]->bv_len >= outlen || memchr(v[0]->bv_val, '\0', v[0]->bv_len) != NULL) {
        rc = GH_ETOOBIG;
    } else {
        memcpy(out, v[0]->bv_val, v[0]->bv_len);
        out[v[0]->bv_len] = '\0';
    }
    ldap_value_free_len(v);
    return rc;
}

static uint32_t number_value(LDAP *ld, LDAPMessage *e, const char *attr)
{
    char buf[32], *end;
    if (first_value(ld, e, attr, buf, sizeof(buf)) != 0)
        return 0;
    errno = 0;
    unsigned long v = strtoul(buf, &end, 10);
    if (errno != 0 || *end != '\0' || buf[0] == '-' || v > UINT32_MAX)
        return 0;
    return (uint32_t)v;
}

/* Free text: truncated on a UTF-8 boundary; dropped when not valid text. */
static void text_value(LDAP *ld, LDAPMessage *e, const char *attr, char *out, size_t outlen)
{
    char buf[4 * GH_TEXT_MAX];
    if (first_value(ld, e, attr, buf, sizeof(buf)) != 0) {
        out[0] = '\0';
        return;
    }
    size_t n = strlen(buf);
    if (n >= outlen) {
        n = outlen - 1;
        while (n > 0 && ((unsigned char)buf[n] & 0xc0) == 0x80)
            n--;
        buf[n] = '\0';
    }
    if (gh_schema_text_valid("text", buf, outlen - 1, NULL, 0) != 0)
        buf[0] = '\0';
    memcpy(out, buf, strlen(buf) + 1);
}

/* space_replacement: "Domain Users" -> "domain_users" (AD names are also
 * folded to lower case: AD compares them case-insensitively). Names with
 * spaces stay as they are without a replacement, and are then refused. */
static int map_name(const gh__sync_upstream *up, char *name, size_t size)
{
    const char *rep = up->cfg->space_replacement;
    char out[GH_NAME_MAX * 4 + 1];
    size_t o = 0, rl = strlen(rep);
    if (up->ad)
        for (char *p = name; *p != '\0'; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
    if (rl == 0 || strchr(name, ' ') == NULL)
        return 0;
    for (const char *p = name; *p != '\0'; p++) {
        if (o + rl + 1 >= sizeof(out))
            return GH_ETOOBIG;
        if (*p == ' ') {
            memcpy(out + o, rep, rl);
            o += rl;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    if (o >= size)
        return GH_ETOOBIG;
    memcpy(name, out, o + 1);
    return 0;
}

/* AD's accountExpires as unix seconds: 100 ns intervals since 1601; 0 and
 * 2^63-1 are never (0 here too). */
static int64_t ad_expiry(LDAP *ld, LDAPMessage *e)
{
    char buf[32], *end;
    if (first_value(ld, e, "accountExpires", buf, sizeof(buf)) != 0)
        return 0;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || v <= 0 || v == 9223372036854775807ll)
        return 0;
    int64_t t = v / 10000000 - 11644473600ll;
    return t > 0 ? t : 1; /* before 1970: long expired, still not "never" */
}

/* Account state the upstream owns (GH_UPSTREAM_*). */
/* AD lockout: lockoutTime (FILETIME) set, and within the domain's
 * lockoutDuration (0: until an administrator unlocks it). AD does not clear
 * lockoutTime when the duration ends, hence the computation. */
static int ad_locked(const gh__sync_upstream *up, LDAP *ld, LDAPMessage *e)
{
    char buf[32], *end;
    if (first_value(ld, e, "lockoutTime", buf, sizeof(buf)) != 0)
        return 0;
    errno = 0;
    long long t = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || t <= 0)
        return 0;
    if (up->ad_lockout_duration == 0)
        return 1;
    long long now = ((long long)time(NULL) + 11644473600ll) * 10000000ll;
    long long dur =
        up->ad_lockout_duration < 0 ? -up->ad_lockout_duration : up->ad_lockout_duration;
    return t > now - dur;
}

static uint32_t upstream_flags(const gh__sync_upstream *up, LDAP *ld, LDAPMessage *e,
                               int64_t *expires)
{
    char buf[32];
    uint32_t f = 0;
    *expires = 0;
    if (up->ad) {
        if (first_value(ld, e, "userAccountControl", buf, sizeof(buf)) == 0 &&
            (strtoul(buf, NULL, 10) & 0x2) != 0) /* ACCOUNTDISABLE */
            f |= GH_UPSTREAM_DISABLED;
        *expires = ad_expiry(ld, e);
        if (*expires != 0 && *expires <= (int64_t)time(NULL))
            f |= GH_UPSTREAM_EXPIRED;
        if (ad_locked(up, ld, e))
            f |= GH_UPSTREAM_LOCKED;
    }
    if (up->ds389 && first_value(ld, e, "nsAccountLock", buf, sizeof(buf)) == 0 &&
        strcasecmp(buf, "true") == 0)
        f |= GH_UPSTREAM_DISABLED;
    return f;
}

/* A POSIX field (homeDirectory, loginShell, gecos): one that could not go
 * into a passwd line is left empty (the server's default applies). */
static void posix_value(LDAP *ld, LDAPMessage *e, const char *attr, int path, char *out,
                        size_t outlen)
{
    text_value(ld, e, attr, out, outlen);
    if (gh_schema_posix_valid("text", out, outlen - 1, path, NULL, 0) != 0)
        out[0] = '\0';
}

void gh__sync_entry_skipped(gh__sync_upstream *up, const char *dn, const char *fmt, ...)
{
    char why[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    up->b.pre_skipped++;
    snprintf(up->b.pre_err, sizeof(up->b.pre_err), "entry %.100s: %.120s; skipped", dn, why);
    /* said once at info; later runs meet the same entries again */
    gh_log(up->st.runs == 0 ? GH_LOG_INFO : GH_LOG_DEBUG, "sync %s: entry %s: %s; skipped",
           up->cfg->name, dn, why);
}

/* Parked references that wait for an object under this DN or login. */
static int wake_parked(gh__sync_upstream *up, gh__sync_obj *o)
{
    char ref[GH_NAME_MAX + 8];
    const char *refs[2] = {o->ndn, NULL};
    int rc = 0;
    if (o->kind == GH__SYNC_KIND_USER && up->cfg->member_kind == GH__SYNC_MEMBER_UID) {
        snprintf(ref, sizeof(ref), "uid:%s", o->login);
        refs[0] = ref;
    } else if (up->cfg->member_kind == GH__SYNC_MEMBER_UID) {
        return 0;
    }
    for (int i = 0; i < 2 && refs[i] != NULL && refs[i][0] != '\0'; i++) {
        gh__sync_keylist *l = gh__sync_map_del(&up->m.parked, refs[i]);
        if (l == NULL)
            continue;
        for (size_t j = 0; j < l->n && rc == 0; j++) {
            gh__sync_obj *g = gh__sync_map_get(&up->m.by_key, l->v[j]);
            if (g == NULL)
                continue;
            for (size_t k = 0; k < g->unres.n; k++) {
                if (strcmp(g->unres.v[k], refs[i]) == 0) {
                    free(g->unres.v[k]);
                    g->unres.v[k] = g->unres.v[--g->unres.n];
                    break;
                }
            }
            gh__sync_change *c = gh__sync_batch_add(&up->b, GH__SYNC_CH_LINK, g->key);
            if (c == NULL) {
                rc = GH_ENOMEM;
                break;
            }
            c->link.kind = o->kind;
            snprintf(c->link.key, sizeof(c->link.key), "%s", o->key);
        }
        gh__sync_keylist_vfree(l);
    }
    return rc;
}

/* AD: a user's primary group (primaryGroupID, usually Domain Users) is not in
 * that group's member attribute. Its SID is the user's domain SID with the
 * RID replaced; the group's change adds the users listed under that SID
 * (queue_group), and a user whose primary group moves to a group already
 * known gets a LINK. Leaving a primary group shows at the group's next
 * change or full run. */
static int primary_group(gh__sync_upstream *up, gh__sync_obj *o, LDAP *ld, LDAPMessage *e)
{
    char buf[16], psid[GH_KEY_MAX + 24];
    struct berval **sid = ldap_get_values_len(ld, e, "objectSid");
    char usid[GH_KEY_MAX + 1];
    int ok = sid != NULL && sid[0] != NULL && gh__sync_sid_text(sid[0], usid, sizeof(usid)) == 0;
    ldap_value_free_len(sid);
    char *dash = ok ? strrchr(usid, '-') : NULL;
    if (dash == NULL || first_value(ld, e, "primaryGroupID", buf, sizeof(buf)) != 0)
        return 0;
    *dash = '\0';
    snprintf(psid, sizeof(psid), "%s-%lu", usid, strtoul(buf, NULL, 10));
    if (o->psid != NULL && strcmp(o->psid, psid) == 0)
        return 0;
    primary_drop(&up->m, o->psid, o->key);
    free(o->psid);
    if ((o->psid = strdup(psid)) == NULL)
        return GH_ENOMEM;
    gh__sync_keylist *l = gh__sync_map_get(&up->m.by_psid, psid);
    if (l == NULL) {
        l = calloc(1, sizeof(*l));
        if (l == NULL || gh__sync_map_put(&up->m.by_psid, psid, l, NULL) != 0) {
            free(l);
            return GH_ENOMEM;
        }
    }
    if (gh__sync_keylist_add(l, o->key) != 0)
        return GH_ENOMEM;
    gh__sync_obj *g = gh__sync_map_get(&up->m.by_sid, psid);
    if (g != NULL) {
        gh__sync_change *c = gh__sync_batch_add(&up->b, GH__SYNC_CH_LINK, g->key);
        if (c == NULL)
            return GH_ENOMEM;
        c->link.kind = GH__SYNC_KIND_USER;
        snprintf(c->link.key, sizeof(c->link.key), "%s", o->key);
    }
    return 0;
}

static int queue_user(gh__sync_upstream *up, LDAP *ld, LDAPMessage *e, const char *key,
                      const char *dn)
{
    const struct gh_sync_upstream_cfg *cfg = up->cfg;
    char login[GH_NAME_MAX + 1];
    int changed;

    if (strlen(dn) > GH_DN_MAX) {
        gh__sync_entry_skipped(up, dn, "DN longer than %d bytes", GH_DN_MAX);
        return 0;
    }
    if (first_value(ld, e, cfg->login_attr, login, sizeof(login)) != 0) {
        gh__sync_entry_skipped(up, dn, "no usable %s", cfg->login_attr);
        return 0;
    }
    if (map_name(up, login, sizeof(login)) != 0 || gh_schema_name_valid(login, NULL, 0) != 0) {
        gh__sync_entry_skipped(up, dn, "%s '%s' is not a valid login name", cfg->login_attr, login);
        return 0;
    }
    gh__sync_change *c = gh__sync_batch_add(&up->b, GH__SYNC_CH_USER, key);
    if (c == NULL)
        return GH_ENOMEM;
    gh_user *u = &c->u;
    snprintf(u->name, sizeof(u->name), "%s", login);
    u->uid = number_value(ld, e, cfg->uid_number_attr);
    u->gid = number_value(ld, e, cfg->gid_number_attr);
    text_value(ld, e, cfg->display_name_attr, u->display_name, sizeof(u->display_name));
    text_value(ld, e, cfg->mail_attr, u->mail, sizeof(u->mail));
    posix_value(ld, e, cfg->home_attr, 1, u->home, sizeof(u->home));
    posix_value(ld, e, cfg->shell_attr, 1, u->shell, sizeof(u->shell));
    posix_value(ld, e, cfg->gecos_attr, 0, u->gecos, sizeof(u->gecos));
    snprintf(u->origin, sizeof(u->origin), "%s", cfg->name);
    snprintf(u->origin_key, sizeof(u->origin_key), "%s", key);
    snprintf(u->origin_dn, sizeof(u->origin_dn), "%s", dn);
    u->upstream_flags = upstream_flags(up, ld, e, &u->upstream_expires);
    if (up->ad) {
        struct berval **sid = ldap_get_values_len(ld, e, "objectSid");
        if (sid != NULL && sid[0] != NULL)
            gh__sync_sid_text(sid[0], u->origin_sid, sizeof(u->origin_sid));
        ldap_value_free_len(sid);
    }

    gh__sync_obj *o = gh__sync_model_put(&up->m, GH__SYNC_KIND_USER, key, dn, login, &changed);
    if (o == NULL)
        return GH_ENOMEM;
    o->expires = u->upstream_expires;
    o->expired = (u->upstream_flags & GH_UPSTREAM_EXPIRED) != 0;
    int rc = changed ? wake_parked(up, o) : 0;
    if (rc == 0 && up->ad)
        rc = primary_group(up, o, ld, e);
    return rc;
}

static int park(gh__sync_upstream *up, gh__sync_obj *g, const char *ref)
{
    gh__sync_keylist *l = gh__sync_map_get(&up->m.parked, ref);
    if (l == NULL) {
        l = calloc(1, sizeof(*l));
        if (l == NULL || gh__sync_map_put(&up->m.parked, ref, l, NULL) != 0) {
            free(l);
            return GH_ENOMEM;
        }
    }
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], g->key) == 0)
            return 0;
    int rc = gh__sync_keylist_add(l, g->key);
    if (rc == 0)
        rc = gh__sync_keylist_add(&g->unres, ref);
    return rc;
}

/* A growing list of member values (copies). */
typedef struct bvlist {
    struct berval **v;
    size_t n, cap;
} bvlist;

static void bvlist_free(bvlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        ber_bvfree(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static int bvlist_add(bvlist *l, struct berval **vals)
{
    for (size_t i = 0; vals != NULL && vals[i] != NULL; i++) {
        if (l->n == l->cap) {
            size_t cap = l->cap == 0 ? 64 : l->cap * 2;
            struct berval **v = realloc(l->v, cap * sizeof(*v));
            if (v == NULL)
                return GH_ENOMEM;
            l->v = v;
            l->cap = cap;
        }
        if ((l->v[l->n] = ber_dupbv(NULL, vals[i])) == NULL)
            return GH_ENOMEM;
        l->n++;
    }
    return 0;
}

/* Finds "<attr>;range=LOW-HIGH" among e's attributes: its values go to out,
 * *high gets HIGH (-1 for "*", the last slice). 1 when found. */
static int range_slice(LDAP *ld, LDAPMessage *e, const char *attr, bvlist *out, long *high, int *rc)
{
    BerElement *ber = NULL;
    size_t al = strlen(attr);
    int found = 0;
    *rc = 0;
    /* the loop ends by break once found: the next attribute's name is
     * never fetched (and so never leaked) */
    for (char *a = ldap_first_attribute(ld, e, &ber); a != NULL;
         a = ldap_next_attribute(ld, e, ber)) {
        const char *dash;
        if (strncasecmp(a, attr, al) == 0 && strncasecmp(a + al, ";range=", 7) == 0 &&
            (dash = strchr(a + al + 7, '-')) != NULL) {
            struct berval **v = ldap_get_values_len(ld, e, a);
            found = 1;
            *high = strcmp(dash + 1, "*") == 0 ? -1 : strtol(dash + 1, NULL, 10);
            *rc = bvlist_add(out, v);
            ldap_value_free_len(v);
        }
        ldap_memfree(a);
        if (found)
            break;
    }
    ber_free(ber, 0);
    return found;
}

/* Every value of the member attribute. Active Directory answers a group of
 * more than MaxValRange members with "member;range=0-1499" and the rest must
 * be asked for ("member;range=1500-*") until a slice ends with "*". Any
 * failure on the way is an error: a group is never applied from a partial
 * list. */
static int member_values(gh__sync_upstream *up, LDAP *ld, LDAPMessage *e, const char *dn,
                         bvlist *out, char *why, size_t whylen)
{
    const char *attr = up->cfg->member_attr;
    struct berval **v = ldap_get_values_len(ld, e, attr);
    long high;
    int rc;

    if (v != NULL) {
        rc = bvlist_add(out, v);
        ldap_value_free_len(v);
        return rc;
    }
    if (!range_slice(ld, e, attr, out, &high, &rc) || rc != 0)
        return rc; /* no members at all, or out of memory */
    for (int round = 0; high >= 0; round++) {
        char want[160];
        char *attrs[2] = {want, NULL};
        LDAPMessage *res = NULL;
        long next = high + 1;
        if (round > 100000) {
            snprintf(why, whylen, "ranged retrieval of %s does not end", attr);
            return GH_EUNAVAIL;
        }
        snprintf(want, sizeof(want), "%s;range=%ld-*", attr, next);
        int lrc = ldap_search_ext_s(ld, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL,
                                    NULL, NULL, 0, &res);
        LDAPMessage *ge = lrc == LDAP_SUCCESS ? ldap_first_entry(ld, res) : NULL;
        int arc = 0;
        int found = ge != NULL && range_slice(ld, ge, attr, out, &high, &arc);
        ldap_msgfree(res);
        if (arc != 0)
            return arc;
        if (!found || (high >= 0 && high < next)) {
            snprintf(why, whylen, "%s values from %ld on could not be read (%s)", attr, next,
                     lrc != LDAP_SUCCESS ? ldap_err2string(lrc) : "no range in the answer");
            return GH_EUNAVAIL;
        }
    }
    return 0;
}

static int queue_group(gh__sync_upstream *up, LDAP *ld, LDAPMessage *e, const char *key,
                       const char *dn)
{
    const struct gh_sync_upstream_cfg *cfg = up->cfg;
    char name[GH_NAME_MAX + 1], why[200] = "";
    bvlist mv = {0};
    struct berval **vals;
    int changed, rc = 0;

    if (strlen(dn) > GH_DN_MAX) {
        gh__sync_entry_skipped(up, dn, "DN longer than %d bytes", GH_DN_MAX);
        return 0;
    }
    if (first_value(ld, e, cfg->group_name_attr, name, sizeof(name)) != 0) {
        gh__sync_entry_skipped(up, dn, "no usable %s", cfg->group_name_attr);
        return 0;
    }
    if (map_name(up, name, sizeof(name)) != 0 || gh_schema_name_valid(name, NULL, 0) != 0) {
        gh__sync_entry_skipped(up, dn, "%s '%s' is not a valid group name", cfg->group_name_attr,
                               name);
        return 0;
    }
    rc = member_values(up, ld, e, dn, &mv, why, sizeof(why));
    if (rc == GH_EUNAVAIL) {
        /* keeps its previous members; the run reports it, and the AD mark
         * stays below the group's uSNChanged so that the next run reads it
         * again (sync_worker.c, run_search_poll) */
        char usn[32];
        gh__sync_entry_skipped(up, dn, "group '%s' not updated: %s", name, why);
        if (first_value(ld, e, "uSNChanged", usn, sizeof(usn)) == 0 &&
            strtoull(usn, NULL, 10) > 0) {
            uint64_t v = strtoull(usn, NULL, 10);
            if (up->hold_usn == 0 || v < up->hold_usn)
                up->hold_usn = v;
        } else {
            up->hold_nousn = 1;
        }
        rc = 0;
        goto done;
    }
    if (rc != 0)
        goto done;
    gh__sync_obj *g = gh__sync_model_put(&up->m, GH__SYNC_KIND_GROUP, key, dn, "", &changed);
    if (g == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    if (changed && (rc = wake_parked(up, g)) != 0)
        goto done;
    /* this change carries the whole member list: an earlier one in the
     * batch need not reconcile, and the old parked references go */
    if (g->pending != 0 && g->pending <= up->b.n && strcmp(up->b.ch[g->pending - 1].key, key) == 0)
        up->b.ch[g->pending - 1].superseded = 1;
    unpark_group(&up->m, g);

    gh__sync_change *c = gh__sync_batch_add(&up->b, GH__SYNC_CH_GROUP, key);
    if (c == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    g->pending = up->b.n;
    gh_group *gr = &c->g;
    snprintf(gr->name, sizeof(gr->name), "%s", name);
    gr->gid = number_value(ld, e, cfg->gid_number_attr);
    text_value(ld, e, cfg->description_attr, gr->description, sizeof(gr->description));
    snprintf(gr->origin, sizeof(gr->origin), "%s", cfg->name);
    snprintf(gr->origin_key, sizeof(gr->origin_key), "%s", key);
    snprintf(gr->origin_dn, sizeof(gr->origin_dn), "%s", dn);

    vals = mv.v;
    size_t nv = mv.n;
    gh__sync_keylist *prim = NULL;
    if (up->ad) {
        struct berval **gs = ldap_get_values_len(ld, e, "objectSid");
        char gsid[GH_KEY_MAX + 1];
        if (gs != NULL && gs[0] != NULL && gh__sync_sid_text(gs[0], gsid, sizeof(gsid)) == 0 &&
            (g->sid == NULL || strcmp(g->sid, gsid) != 0)) {
            if (g->sid != NULL && gh__sync_map_get(&up->m.by_sid, g->sid) == g)
                gh__sync_map_del(&up->m.by_sid, g->sid);
            free(g->sid);
            g->sid = strdup(gsid);
            if (g->sid == NULL || gh__sync_map_put(&up->m.by_sid, g->sid, g, NULL) != 0) {
                ldap_value_free_len(gs);
                rc = GH_ENOMEM;
                goto done;
            }
        }
        ldap_value_free_len(gs);
        if (g->sid != NULL)
            snprintf(gr->origin_sid, sizeof(gr->origin_sid), "%s", g->sid);
        prim = g->sid != NULL ? gh__sync_map_get(&up->m.by_psid, g->sid) : NULL;
    }
    if (nv + (prim != NULL ? prim->n : 0) > 0) {
        c->members = calloc(nv + (prim != NULL ? prim->n : 0), sizeof(*c->members));
        if (c->members == NULL) {
            rc = GH_ENOMEM;
            goto done;
        }
    }
    for (size_t i = 0; i < nv && rc == 0; i++) {
        char *ref;
        gh__sync_obj *m;
        if (cfg->member_kind == GH__SYNC_MEMBER_UID) {
            if (vals[i]->bv_len > GH_NAME_MAX || memchr(vals[i]->bv_val, '\0', vals[i]->bv_len))
                continue;
            ref = malloc(vals[i]->bv_len + 5);
            if (ref == NULL) {
                rc = GH_ENOMEM;
                break;
            }
            memcpy(ref, "uid:", 4);
            memcpy(ref + 4, vals[i]->bv_val, vals[i]->bv_len);
            ref[vals[i]->bv_len + 4] = '\0';
            m = gh__sync_map_get(&up->m.by_login, ref + 4);
        } else {
            char *dnv = strndup(vals[i]->bv_val, vals[i]->bv_len);
            ref = dnv != NULL ? gh__sync_dn_norm(dnv) : NULL;
            free(dnv);
            if (ref == NULL) {
                rc = GH_ENOMEM;
                break;
            }
            m = ref[0] != '\0' ? gh__sync_map_get(&up->m.by_dn, ref) : NULL;
            if (m == NULL && up->ad && strstr(ref, ",cn=foreignsecurityprincipals,") != NULL) {
                /* a principal of another domain (or a well-known SID such as
                 * Authenticated Users): nothing to mirror, nothing wrong */
                up->b.pre_foreign++;
                free(ref);
                continue;
            }
        }
        if (m != NULL) {
            if (m != g) {
                c->members[c->nmembers].kind = m->kind;
                snprintf(c->members[c->nmembers].key, sizeof(c->members[0].key), "%s", m->key);
                c->nmembers++;
            }
        } else if (ref[0] != '\0') {
            rc = park(up, g, ref);
        }
        free(ref);
    }
    for (size_t i = 0; rc == 0 && prim != NULL && i < prim->n; i++) {
        c->members[c->nmembers].kind = GH__SYNC_KIND_USER;
        snprintf(c->members[c->nmembers].key, sizeof(c->members[0].key), "%s", prim->v[i]);
        c->nmembers++;
    }
done:
    bvlist_free(&mv);
    return rc;
}

int gh__sync_queue_delete(gh__sync_upstream *up, const char *key)
{
    if (gh__sync_map_get(&up->m.by_key, key) == NULL && gh__sync_map_get(&up->m.tomb, key) != NULL)
        return 0; /* already a tombstone */
    model_remove(&up->m, key);
    return gh__sync_batch_add(&up->b, GH__SYNC_CH_DELETE, key) != NULL ? 0 : GH_ENOMEM;
}

int gh__sync_guid_swap(const char *key, char *out, size_t outlen)
{
    /* byte i of the text form comes from byte perm[i] of the other form */
    static const unsigned char perm[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
    unsigned char b[16], o[16];
    size_t n = 0;
    if (strlen(key) != 36 || outlen < 37)
        return GH_EINVAL;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (key[i] != '-')
                return GH_EINVAL;
            continue;
        }
        if (!isxdigit((unsigned char)key[i]) || !isxdigit((unsigned char)key[i + 1]) ||
            sscanf(key + i, "%2hhx", &b[n]) != 1)
            return GH_EINVAL;
        n++;
        i++;
    }
    for (size_t i = 0; i < 16; i++)
        o[i] = b[perm[i]];
    snprintf(out, outlen, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7], o[8], o[9], o[10], o[11], o[12], o[13],
             o[14], o[15]);
    return 0;
}

/* 389-ds's sync UUID (the key of its syncrepl entries before every mode
 * keyed by entryUUID) is its nsUniqueId's 32 hex digits as a UUID. */
static int ds389_sync_uuid(LDAP *ld, LDAPMessage *e, char *out, size_t outlen)
{
    char v[64], hex[33];
    size_t n = 0;
    if (first_value(ld, e, "nsUniqueId", v, sizeof(v)) != 0 || outlen < 37)
        return GH_ENOTFOUND;
    for (const char *p = v; *p != '\0'; p++) {
        if (*p == '-')
            continue;
        if (!isxdigit((unsigned char)*p) || n == 32)
            return GH_EINVAL;
        hex[n++] = (char)tolower((unsigned char)*p);
    }
    if (n != 32)
        return GH_EINVAL;
    hex[32] = '\0';
    snprintf(out, outlen, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
    return 0;
}

/* Keys of an older scheme name the same entry: AD keys before AD's text form
 * were the raw byte order of the same objectGUID; 389-ds syncrepl keys were
 * its sync UUID (from nsUniqueId). An entry unknown under its key but known
 * under the older one is that entry: its stored key is rewritten in place
 * (ids, bindings and tokens stay) by a REKEY change ahead of the entry's own
 * change. Both older keys are computed from the entry itself, never guessed
 * from a DN. */
static int adopt_old_key(gh__sync_upstream *up, int kind, LDAP *ld, LDAPMessage *e, const char *key)
{
    char old[GH_KEY_MAX + 1];
    gh__sync_obj *o;
    if ((!up->ad && !up->ds389) || gh__sync_map_get(&up->m.by_key, key) != NULL)
        return 0;
    if (up->ad ? gh__sync_guid_swap(key, old, sizeof(old)) != 0
               : ds389_sync_uuid(ld, e, old, sizeof(old)) != 0)
        return 0;
    if (strcmp(old, key) == 0 || (o = gh__sync_map_get(&up->m.by_key, old)) == NULL ||
        o->kind != kind)
        return 0;
    gh__sync_change *c = gh__sync_batch_add(&up->b, GH__SYNC_CH_REKEY, old);
    if (c == NULL)
        return GH_ENOMEM;
    c->link.kind = kind;
    snprintf(c->link.key, sizeof(c->link.key), "%s", key);
    /* the new key first: out of memory leaves the model as it was */
    if (gh__sync_map_put(&up->m.by_key, key, o, NULL) != 0)
        return GH_ENOMEM;
    gh__sync_map_del(&up->m.by_key, old);
    snprintf(o->key, sizeof(o->key), "%s", key);
    up->rekeyed++;
    return 0;
}

typedef struct expire_ctx {
    gh__sync_upstream *up;
    int64_t now;
    int rc;
} expire_ctx;

static void expire_one(const char *key, void *val, void *arg)
{
    expire_ctx *x = arg;
    gh__sync_obj *o = val;
    if (x->rc != 0 || o->kind != GH__SYNC_KIND_USER || o->expires == 0 || o->expired ||
        o->expires > x->now)
        return;
    if (gh__sync_batch_add(&x->up->b, GH__SYNC_CH_EXPIRE, key) == NULL) {
        x->rc = GH_ENOMEM;
        return;
    }
    o->expired = 1;
}

int gh__sync_queue_expired(gh__sync_upstream *up)
{
    expire_ctx x = {up, (int64_t)time(NULL), 0};
    gh__sync_map_each(&up->m.by_key, expire_one, &x);
    return x.rc;
}

int gh__sync_queue_entry(gh__sync_upstream *up, int kind, LDAP *ld, LDAPMessage *e, const char *key)
{
    char *dn = ldap_get_dn(ld, e);
    int rc;
    if (dn == NULL)
        return 0;
    pthread_mutex_lock(&up->mu);
    up->st.entries_received++;
    pthread_mutex_unlock(&up->mu);
    if ((rc = adopt_old_key(up, kind, ld, e, key)) != 0) {
        ldap_memfree(dn);
        return rc;
    }
    rc = kind == GH__SYNC_KIND_USER ? queue_user(up, ld, e, key, dn)
                                    : queue_group(up, ld, e, key, dn);
    ldap_memfree(dn);
    return rc;
}

/* Counts member references of the batch's groups that point outside the
 * mirror: they are skipped, once per group change. */
void gh__sync_count_parked(gh__sync_upstream *up)
{
    for (size_t i = 0; i < up->b.n; i++) {
        gh__sync_change *c = &up->b.ch[i];
        if (c->type != GH__SYNC_CH_GROUP || c->superseded)
            continue;
        gh__sync_obj *g = gh__sync_map_get(&up->m.by_key, c->key);
        if (g != NULL && g->unres.n > 0) {
            up->b.pre_skipped += g->unres.n;
            snprintf(up->b.pre_err, sizeof(up->b.pre_err),
                     "group '%s': %zu member(s) outside the base or filter skipped (e.g. %s)",
                     c->g.name, g->unres.n, g->unres.v[0]);
        }
    }
}
