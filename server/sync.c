/*
 * sync.c: LDAP federation. One worker thread per [upstream:NAME] mirrors the
 * upstream's users and groups into the store; the loop thread only starts and
 * stops workers, reads their status and forwards sync.run requests.
 *
 * A worker keeps a model of the upstream in memory (entry key -> kind, DN,
 * login; member references that did not resolve yet; tombstones) so that it
 * can turn member DNs into upstream keys and find deletions by difference.
 * The model is rebuilt from the store at start and after any error, so the
 * store stays the only truth. Changes go to the writer in batches
 * (sync_apply.c); a batch that carries a cookie carries every change the
 * cookie covers, so a restart resumes exactly where the last commit ended.
 *
 * Users and groups are two searches (two ldap_sync sessions on one
 * connection) because only the upstream can tell which filter an entry
 * matched. In syncrepl-persist both searches stay open and the worker
 * multiplexes them with ldap_sync_poll (timeout 0) and poll(2).
 *
 * Before changing anything, know that:
 *   - a cookie may only be stored once every change before it is in the same
 *     or an earlier batch; during a refresh no cookie is stored until the
 *     refresh ends, because present-phase deletions are only known then;
 *   - libldap's ldap_sync_init/poll dispatch every message of a chain with the
 *     chain's head (2.5 passes `res`, not `msg`); ldap_result(LDAP_MSG_RECEIVED)
 *     returns one message per call in practice, and on_entry detects a chain
 *     and restarts the session from its last cookie rather than miss entries;
 *   - gh_sync_stop may shut the worker's socket down from the loop thread to
 *     break a blocking libldap call: fd is published under mu and cleared
 *     before unbind.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "schema/log.h"
#include "server/sync-int.h"

#define BATCH_FLUSH 500 /* changes per batch during a refresh */
#define BACKOFF_MAX 60  /* seconds between reconnect attempts, at most */
#define AUTH_THREADS 4
#define PERSIST_POLL_MS 250

typedef struct keylist {
    char **v;
    size_t n, cap;
} keylist;

typedef struct obj {
    int kind;
    char key[GH_KEY_MAX + 1];
    char *ndn;                   /* normalized DN, "" when unknown */
    char login[GH_NAME_MAX + 1]; /* users: for memberUid */
    size_t pending;              /* groups: index + 1 of its change in the batch */
    keylist unres;               /* groups: member references not resolved yet */
} obj;

typedef struct model {
    gh__map by_key;   /* key -> obj (owned) */
    gh__map by_dn;    /* ndn -> obj */
    gh__map by_login; /* login -> obj (users) */
    gh__map parked;   /* unresolved member ref -> keylist of group keys */
    gh__map tomb;     /* key -> int64_t* tombstone time */
    size_t nusers, ngroups;
} model;

struct upstream;

typedef struct session {
    struct upstream *up;
    int kind;
    ldap_sync_t ls;
    int live;             /* ls initialised (ldap_sync_initialize) */
    int refreshing;       /* refresh phase not finished */
    int refresh_present;  /* the refresh ended in the present phase */
    int done;             /* searchResultDone seen */
    int refresh_required; /* e-syncRefreshRequired */
    int chain;            /* a message chain reached a callback */
    int failed;           /* a callback failed (memory, writer): restart */
    LDAPMessage *chain_head;
    unsigned long events;
    gh__map present; /* keys present or added during this refresh */
    char *cookie;    /* last stored cookie (NULL: none) */
    size_t cookielen;
} session;

typedef struct status {
    const char *state;
    int connected;
    int64_t last_success, last_attempt, current_at, next_run;
    char last_error[GH_ERRMSG_MAX];
    uint64_t users, groups, tombstones;
    char cookie[160];
    gh__counts last_run, total;
    uint64_t entries_received, runs;
} status;

typedef struct upstream {
    gh_sync *s;
    struct gh_upstream_cfg *cfg;
    char actor[GH_NAME_MAX + 8];
    char fp[33];
    pthread_t th;
    int started;

    pthread_mutex_t mu; /* guards the block below */
    pthread_cond_t cv;
    int stop, run_req, run_full, run_force;
    int fd;              /* connected socket or -1 */
    int busy;            /* inside a blocking refresh or search */
    int64_t progress_at; /* last message seen while busy (monotonic s) */
    status st;

    /* worker thread only */
    LDAP *ld;
    session sess[2];
    model m;
    gh__batch b;
    gh__map del_held; /* deletions seen during a refresh, applied at its end */
    gh__counts run;   /* counts of the current run */
    int force;        /* this run may exceed max_delete_ratio */
    int halted;
    int64_t next_purge;
} upstream;

struct gh_sync {
    uv_loop_t *loop;
    gh_store *store;
    gh_writer *writer;
    upstream **ups;
    size_t nups;
    gh__auth *auth;
    uv_timer_t watchdog;
    int have_timer;
};

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static int64_t mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}

static int64_t wall_s(void)
{
    return (int64_t)time(NULL);
}

static int keylist_add(keylist *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap == 0 ? 4 : l->cap * 2;
        char **v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return GH_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    if ((l->v[l->n] = strdup(s)) == NULL)
        return GH_ENOMEM;
    l->n++;
    return 0;
}

static void keylist_free(keylist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static void keylist_vfree(void *p)
{
    keylist_free(p);
    free(p);
}

static void set_state(upstream *up, const char *state)
{
    pthread_mutex_lock(&up->mu);
    up->st.state = state;
    pthread_mutex_unlock(&up->mu);
}

static void set_error(upstream *up, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(upstream *up, const char *fmt, ...)
{
    char msg[GH_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&up->mu);
    snprintf(up->st.last_error, sizeof(up->st.last_error), "%s", msg);
    pthread_mutex_unlock(&up->mu);
    GH_LOGW("sync %s: %s", up->cfg->name, msg);
}

static int stopping(upstream *up)
{
    pthread_mutex_lock(&up->mu);
    int s = up->stop;
    pthread_mutex_unlock(&up->mu);
    return s;
}

static void progress(upstream *up)
{
    pthread_mutex_lock(&up->mu);
    up->progress_at = mono_s();
    pthread_mutex_unlock(&up->mu);
}

static void set_busy(upstream *up, int busy)
{
    pthread_mutex_lock(&up->mu);
    up->busy = busy;
    up->progress_at = mono_s();
    pthread_mutex_unlock(&up->mu);
}

static void publish_counts(upstream *up)
{
    pthread_mutex_lock(&up->mu);
    up->st.users = up->m.nusers;
    up->st.groups = up->m.ngroups;
    up->st.tombstones = up->m.tomb.n;
    up->st.last_run = up->run;
    pthread_mutex_unlock(&up->mu);
}

static void counts_add(gh__counts *a, const gh__counts *b)
{
    a->added += b->added;
    a->modified += b->modified;
    a->renamed += b->renamed;
    a->disabled += b->disabled;
    a->purged += b->purged;
    a->skipped += b->skipped;
}

/* Cookie as shown by sync.status: the text when printable (OpenLDAP's is
 * "rid=...,csn=..."), else a note. */
static void show_cookie(upstream *up)
{
    char buf[160] = "";
    size_t off = 0;
    for (int i = 0; i < 2; i++) {
        session *ss = &up->sess[i];
        if (ss->cookie == NULL)
            continue;
        int printable = 1;
        for (size_t j = 0; j < ss->cookielen; j++)
            if ((unsigned char)ss->cookie[j] < 0x20 || (unsigned char)ss->cookie[j] > 0x7e)
                printable = 0;
        int n = snprintf(buf + off, sizeof(buf) - off, "%s%s:%.*s", off > 0 ? " " : "",
                         i == 0 ? "users" : "groups", printable ? (int)ss->cookielen : 8,
                         printable ? ss->cookie : "(binary)");
        if (n < 0 || (size_t)n >= sizeof(buf) - off)
            break;
        off += (size_t)n;
    }
    pthread_mutex_lock(&up->mu);
    snprintf(up->st.cookie, sizeof(up->st.cookie), "%s", buf);
    pthread_mutex_unlock(&up->mu);
}

/* Waits up to secs, or until a stop or run request. 1 when stopping. */
static int wait_for(upstream *up, unsigned secs)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)secs;
    pthread_mutex_lock(&up->mu);
    up->st.next_run = wall_s() + (int64_t)secs;
    while (!up->stop && !up->run_req)
        if (pthread_cond_timedwait(&up->cv, &up->mu, &ts) == ETIMEDOUT)
            break;
    up->st.next_run = 0;
    int s = up->stop;
    pthread_mutex_unlock(&up->mu);
    return s;
}

/* Takes a pending sync.run request: 1 when there was one. */
static int take_run_request(upstream *up)
{
    pthread_mutex_lock(&up->mu);
    int req = up->run_req;
    if (req) {
        if (up->run_full) {
            for (int i = 0; i < 2; i++) {
                free(up->sess[i].cookie);
                up->sess[i].cookie = NULL;
                up->sess[i].cookielen = 0;
            }
        }
        up->force = up->run_force;
        up->run_req = up->run_full = up->run_force = 0;
    }
    pthread_mutex_unlock(&up->mu);
    return req;
}

static int run_requested(upstream *up)
{
    pthread_mutex_lock(&up->mu);
    int r = up->run_req;
    pthread_mutex_unlock(&up->mu);
    return r;
}

/* ------------------------------------------------------------------ */
/* the model                                                           */

static void obj_free(void *p)
{
    obj *o = p;
    free(o->ndn);
    keylist_free(&o->unres);
    free(o);
}

static void model_free(model *m)
{
    gh__map_clear(&m->by_dn, NULL);
    gh__map_clear(&m->by_login, NULL);
    gh__map_clear(&m->parked, keylist_vfree);
    gh__map_clear(&m->tomb, free);
    gh__map_clear(&m->by_key, obj_free);
    m->nusers = m->ngroups = 0;
}

static int tomb_set(model *m, const char *key, int64_t t)
{
    if (t <= 0) {
        free(gh__map_del(&m->tomb, key));
        return 0;
    }
    int64_t *v = malloc(sizeof(*v));
    void *old;
    if (v == NULL)
        return GH_ENOMEM;
    *v = t;
    if (gh__map_put(&m->tomb, key, v, &old) != 0) {
        free(v);
        return GH_ENOMEM;
    }
    free(old);
    return 0;
}

/* Drops the group's parked references. */
static void unpark_group(model *m, obj *g)
{
    for (size_t i = 0; i < g->unres.n; i++) {
        keylist *l = gh__map_get(&m->parked, g->unres.v[i]);
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
            keylist_vfree(gh__map_del(&m->parked, g->unres.v[i]));
    }
    keylist_free(&g->unres);
}

static void model_unlink(model *m, obj *o)
{
    if (o->ndn != NULL && o->ndn[0] != '\0' && gh__map_get(&m->by_dn, o->ndn) == o)
        gh__map_del(&m->by_dn, o->ndn);
    if (o->kind == GH__KIND_USER && o->login[0] != '\0' && gh__map_get(&m->by_login, o->login) == o)
        gh__map_del(&m->by_login, o->login);
}

static void model_remove(model *m, const char *key)
{
    obj *o = gh__map_del(&m->by_key, key);
    if (o == NULL)
        return;
    model_unlink(m, o);
    if (o->kind == GH__KIND_GROUP) {
        unpark_group(m, o);
        m->ngroups--;
    } else {
        m->nusers--;
    }
    obj_free(o);
}

/* Inserts or updates an object; *changed_ref is set when it became reachable
 * under a new DN or login (parked references may now resolve). */
static obj *model_put(model *m, int kind, const char *key, const char *dn, const char *login,
                      int *changed_ref)
{
    obj *o = gh__map_get(&m->by_key, key);
    char *ndn = gh__dn_norm(dn);
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
        if (o == NULL || gh__map_put(&m->by_key, key, o, NULL) != 0) {
            free(o);
            free(ndn);
            return NULL;
        }
        o->kind = kind;
        snprintf(o->key, sizeof(o->key), "%s", key);
        if (kind == GH__KIND_USER)
            m->nusers++;
        else
            m->ngroups++;
    }
    if (o->ndn == NULL || strcmp(o->ndn, ndn) != 0 ||
        (kind == GH__KIND_USER && strcmp(o->login, login) != 0)) {
        model_unlink(m, o);
        free(o->ndn);
        o->ndn = ndn;
        ndn = NULL;
        if (o->ndn[0] != '\0')
            gh__map_put(&m->by_dn, o->ndn, o, NULL);
        if (kind == GH__KIND_USER) {
            snprintf(o->login, sizeof(o->login), "%s", login);
            gh__map_put(&m->by_login, o->login, o, NULL);
        }
        *changed_ref = 1;
    }
    free(ndn);
    return o;
}

typedef struct load_ctx {
    upstream *up;
    int rc;
} load_ctx;

static int load_user(const gh_user *u, void *arg)
{
    load_ctx *lc = arg;
    int changed;
    if (strcmp(u->origin, lc->up->cfg->name) != 0)
        return 0;
    if (u->tombstone != 0)
        lc->rc = tomb_set(&lc->up->m, u->origin_key, u->tombstone);
    else if (model_put(&lc->up->m, GH__KIND_USER, u->origin_key, u->origin_dn, u->name, &changed) ==
             NULL)
        lc->rc = GH_ENOMEM;
    return lc->rc;
}

static int load_group(const gh_group *g, void *arg)
{
    load_ctx *lc = arg;
    int changed;
    if (strcmp(g->origin, lc->up->cfg->name) != 0)
        return 0;
    if (g->tombstone != 0)
        lc->rc = tomb_set(&lc->up->m, g->origin_key, g->tombstone);
    else if (model_put(&lc->up->m, GH__KIND_GROUP, g->origin_key, g->origin_dn, "", &changed) ==
             NULL)
        lc->rc = GH_ENOMEM;
    return lc->rc;
}

static void set_cookie(session *ss, const char *data, size_t len)
{
    free(ss->cookie);
    ss->cookie = NULL;
    ss->cookielen = 0;
    if (data == NULL || len == 0)
        return;
    ss->cookie = malloc(len + 1);
    if (ss->cookie == NULL)
        return;
    memcpy(ss->cookie, data, len);
    ss->cookie[len] = '\0';
    ss->cookielen = len;
}

/* Stored state: {"v":1,"fp":"...","users":"<base64>","groups":"<base64>"}. */
static void parse_state(upstream *up, const char *blob, size_t len)
{
    json_error_t jerr;
    json_t *o = json_loadb(blob, len, 0, &jerr);
    const char *fp = json_string_value(json_object_get(o, "fp"));
    if (o == NULL || fp == NULL || strcmp(fp, up->fp) != 0) {
        if (o != NULL)
            GH_LOGI("sync %s: the search settings changed since the last sync; full reload",
                    up->cfg->name);
        json_decref(o);
        return;
    }
    static const char *names[2] = {"users", "groups"};
    for (int i = 0; i < 2; i++) {
        const char *b64 = json_string_value(json_object_get(o, names[i]));
        size_t n = 0;
        if (b64 == NULL)
            continue;
        size_t cap = strlen(b64);
        char *bin = malloc(cap + 1);
        if (bin == NULL)
            continue;
        if (sodium_base642bin((unsigned char *)bin, cap, b64, strlen(b64), NULL, &n, NULL,
                              sodium_base64_VARIANT_ORIGINAL) == 0)
            set_cookie(&up->sess[i], bin, n);
        free(bin);
    }
    json_decref(o);
}

static char *b64(const char *data, size_t len)
{
    size_t n = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
    char *out = malloc(n);
    if (out != NULL)
        sodium_bin2base64(out, n, (const unsigned char *)data, len, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

/* Rebuilds the model and the stored cookies from the store. */
static int load_state(upstream *up)
{
    gh_store_reader *r = NULL;
    gh_txn *txn;
    load_ctx lc = {up, 0};
    char *blob = NULL;
    size_t bloblen = 0;
    int rc;

    model_free(&up->m);
    rc = gh_store_reader_new(up->s->store, &r);
    if (rc != 0)
        return rc;
    rc = gh_store_read_begin(r, &txn);
    if (rc != 0)
        goto done;
    rc = gh_store_user_list(txn, NULL, NULL, 0, load_user, &lc);
    if (rc == 0 && lc.rc == 0)
        rc = gh_store_group_list(txn, NULL, NULL, 0, load_group, &lc);
    if (rc == 0)
        rc = lc.rc;
    if (rc == 0) {
        int grc = gh_store_sync_get(txn, up->cfg->name, &blob, &bloblen);
        for (int i = 0; i < 2; i++)
            set_cookie(&up->sess[i], NULL, 0);
        if (grc == 0)
            parse_state(up, blob, bloblen);
        else if (grc != GH_ENOTFOUND)
            rc = grc;
        free(blob);
    }
    gh_store_read_end(r);
done:
    gh_store_reader_free(r);
    publish_counts(up);
    show_cookie(up);
    return rc;
}

/* ------------------------------------------------------------------ */
/* batches                                                             */

static int cur_cookie(session *ss, char **data, size_t *len)
{
    /* during a refresh the new cookie covers deletions not known yet */
    if (!ss->refreshing && ss->ls.ls_cookie.bv_val != NULL && ss->ls.ls_cookie.bv_len > 0) {
        *data = ss->ls.ls_cookie.bv_val;
        *len = ss->ls.ls_cookie.bv_len;
    } else {
        *data = ss->cookie;
        *len = ss->cookielen;
    }
    return 0;
}

static int cookies_moved(upstream *up)
{
    for (int i = 0; i < 2; i++) {
        char *d;
        size_t n;
        session *ss = &up->sess[i];
        cur_cookie(ss, &d, &n);
        if (d != ss->cookie &&
            (n != ss->cookielen || ss->cookie == NULL || memcmp(d, ss->cookie, n) != 0))
            return 1;
    }
    return 0;
}

static int make_blob(upstream *up)
{
    json_t *o = json_object();
    int rc = GH_ENOMEM;
    if (o == NULL)
        return GH_ENOMEM;
    json_object_set_new(o, "v", json_integer(1));
    json_object_set_new(o, "fp", json_string(up->fp));
    json_object_set_new(o, "time", json_integer(wall_s()));
    for (int i = 0; i < 2; i++) {
        char *d;
        size_t n;
        cur_cookie(&up->sess[i], &d, &n);
        if (d == NULL || n == 0)
            continue;
        char *e = b64(d, n);
        if (e == NULL)
            goto done;
        json_object_set_new(o, i == 0 ? "users" : "groups", json_string(e));
        free(e);
    }
    up->b.blob = json_dumps(o, JSON_COMPACT);
    if (up->b.blob != NULL) {
        up->b.bloblen = strlen(up->b.blob);
        rc = 0;
    }
done:
    json_decref(o);
    return rc;
}

/* Counts member references of the batch's groups that point outside the
 * mirror: they are skipped, once per group change. */
static void count_parked(upstream *up)
{
    for (size_t i = 0; i < up->b.n; i++) {
        gh__change *c = &up->b.ch[i];
        if (c->type != GH__CH_GROUP || c->superseded)
            continue;
        obj *g = gh__map_get(&up->m.by_key, c->key);
        if (g != NULL && g->unres.n > 0) {
            up->b.pre_skipped += g->unres.n;
            snprintf(up->b.pre_err, sizeof(up->b.pre_err),
                     "group '%s': %zu member(s) outside the base or filter skipped (e.g. %s)",
                     c->g.name, g->unres.n, g->unres.v[0]);
        }
    }
}

/* Hands the batch to the writer. with_cookies: store the sessions' cookies
 * with it. */
static int flush(upstream *up, int with_cookies)
{
    gh__batch *b = &up->b;
    char err[GH_ERRMSG_MAX] = "";
    int rc;

    count_parked(up);
    if (with_cookies && (rc = make_blob(up)) != 0)
        return rc;
    if (b->n == 0 && b->blob == NULL && b->pre_skipped == 0)
        return 0;
    for (size_t i = 0; i < b->n; i++) {
        obj *g = b->ch[i].type == GH__CH_GROUP ? gh__map_get(&up->m.by_key, b->ch[i].key) : NULL;
        if (g != NULL)
            g->pending = 0;
    }
    /* the writer's time is not the upstream's silence: pause the watchdog */
    pthread_mutex_lock(&up->mu);
    int was_busy = up->busy;
    up->busy = 0;
    pthread_mutex_unlock(&up->mu);
    rc = gh_writer_submit_wait(up->s->writer, up->actor, gh__sync_apply, b, err, sizeof(err));
    pthread_mutex_lock(&up->mu);
    up->busy = was_busy;
    up->progress_at = mono_s();
    pthread_mutex_unlock(&up->mu);
    if (rc != 0) {
        set_error(up, "writing the mirror failed: %s",
                  err[0] != '\0' ? err : (b->err[0] != '\0' ? b->err : gh_strerror(rc)));
        gh__batch_reset(b);
        return rc;
    }
    for (size_t i = 0; i < b->nfx; i++)
        tomb_set(&up->m, b->fx[i].key, b->fx[i].time);
    counts_add(&up->run, &b->res);
    pthread_mutex_lock(&up->mu);
    counts_add(&up->st.total, &b->res);
    if (b->err[0] != '\0')
        snprintf(up->st.last_error, sizeof(up->st.last_error), "%s", b->err);
    pthread_mutex_unlock(&up->mu);
    if (with_cookies) {
        for (int i = 0; i < 2; i++) {
            char *d;
            size_t n;
            session *ss = &up->sess[i];
            cur_cookie(ss, &d, &n);
            if (d != ss->cookie)
                set_cookie(ss, d, n);
        }
        show_cookie(up);
    }
    gh__batch_reset(b);
    publish_counts(up);
    return 0;
}

static int maybe_flush(upstream *up)
{
    /* groups wait for the end of a refresh: a nested group may come later */
    if (up->b.n < BATCH_FLUSH || up->sess[GH__KIND_GROUP].refreshing)
        return 0;
    return flush(up, 0);
}

/* ------------------------------------------------------------------ */
/* turning entries into changes                                        */

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

static void entry_skipped(upstream *up, const char *dn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void entry_skipped(upstream *up, const char *dn, const char *fmt, ...)
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
static int wake_parked(upstream *up, obj *o)
{
    char ref[GH_NAME_MAX + 8];
    const char *refs[2] = {o->ndn, NULL};
    int rc = 0;
    if (o->kind == GH__KIND_USER && up->cfg->member_kind == GH__MEMBER_UID) {
        snprintf(ref, sizeof(ref), "uid:%s", o->login);
        refs[0] = ref;
    } else if (up->cfg->member_kind == GH__MEMBER_UID) {
        return 0;
    }
    for (int i = 0; i < 2 && refs[i] != NULL && refs[i][0] != '\0'; i++) {
        keylist *l = gh__map_del(&up->m.parked, refs[i]);
        if (l == NULL)
            continue;
        for (size_t j = 0; j < l->n && rc == 0; j++) {
            obj *g = gh__map_get(&up->m.by_key, l->v[j]);
            if (g == NULL)
                continue;
            for (size_t k = 0; k < g->unres.n; k++) {
                if (strcmp(g->unres.v[k], refs[i]) == 0) {
                    free(g->unres.v[k]);
                    g->unres.v[k] = g->unres.v[--g->unres.n];
                    break;
                }
            }
            gh__change *c = gh__batch_add(&up->b, GH__CH_LINK, g->key);
            if (c == NULL) {
                rc = GH_ENOMEM;
                break;
            }
            c->link.kind = o->kind;
            snprintf(c->link.key, sizeof(c->link.key), "%s", o->key);
        }
        keylist_vfree(l);
    }
    return rc;
}

static int queue_user(upstream *up, LDAP *ld, LDAPMessage *e, const char *key, const char *dn)
{
    const struct gh_upstream_cfg *cfg = up->cfg;
    char login[GH_NAME_MAX + 1];
    int changed;

    if (strlen(dn) > GH_DN_MAX) {
        entry_skipped(up, dn, "DN longer than %d bytes", GH_DN_MAX);
        return 0;
    }
    if (first_value(ld, e, cfg->login_attr, login, sizeof(login)) != 0) {
        entry_skipped(up, dn, "no usable %s", cfg->login_attr);
        return 0;
    }
    if (gh_schema_name_valid(login, NULL, 0) != 0) {
        entry_skipped(up, dn, "%s '%s' is not a valid login name", cfg->login_attr, login);
        return 0;
    }
    gh__change *c = gh__batch_add(&up->b, GH__CH_USER, key);
    if (c == NULL)
        return GH_ENOMEM;
    gh_user *u = &c->u;
    snprintf(u->name, sizeof(u->name), "%s", login);
    u->uid = number_value(ld, e, cfg->uid_number_attr);
    u->gid = number_value(ld, e, cfg->gid_number_attr);
    text_value(ld, e, cfg->display_name_attr, u->display_name, sizeof(u->display_name));
    text_value(ld, e, cfg->mail_attr, u->mail, sizeof(u->mail));
    snprintf(u->origin, sizeof(u->origin), "%s", cfg->name);
    snprintf(u->origin_key, sizeof(u->origin_key), "%s", key);
    snprintf(u->origin_dn, sizeof(u->origin_dn), "%s", dn);

    obj *o = model_put(&up->m, GH__KIND_USER, key, dn, login, &changed);
    if (o == NULL)
        return GH_ENOMEM;
    return changed ? wake_parked(up, o) : 0;
}

static int park(upstream *up, obj *g, const char *ref)
{
    keylist *l = gh__map_get(&up->m.parked, ref);
    if (l == NULL) {
        l = calloc(1, sizeof(*l));
        if (l == NULL || gh__map_put(&up->m.parked, ref, l, NULL) != 0) {
            free(l);
            return GH_ENOMEM;
        }
    }
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], g->key) == 0)
            return 0;
    int rc = keylist_add(l, g->key);
    if (rc == 0)
        rc = keylist_add(&g->unres, ref);
    return rc;
}

static int queue_group(upstream *up, LDAP *ld, LDAPMessage *e, const char *key, const char *dn)
{
    const struct gh_upstream_cfg *cfg = up->cfg;
    char name[GH_NAME_MAX + 1];
    struct berval **vals = NULL;
    int changed, rc = 0;

    if (strlen(dn) > GH_DN_MAX) {
        entry_skipped(up, dn, "DN longer than %d bytes", GH_DN_MAX);
        return 0;
    }
    if (first_value(ld, e, cfg->group_name_attr, name, sizeof(name)) != 0) {
        entry_skipped(up, dn, "no usable %s", cfg->group_name_attr);
        return 0;
    }
    if (gh_schema_name_valid(name, NULL, 0) != 0) {
        entry_skipped(up, dn, "%s '%s' is not a valid group name", cfg->group_name_attr, name);
        return 0;
    }
    obj *g = model_put(&up->m, GH__KIND_GROUP, key, dn, "", &changed);
    if (g == NULL)
        return GH_ENOMEM;
    if (changed && (rc = wake_parked(up, g)) != 0)
        return rc;
    /* this change carries the whole member list: an earlier one in the
     * batch need not reconcile, and the old parked references go */
    if (g->pending != 0 && g->pending <= up->b.n && strcmp(up->b.ch[g->pending - 1].key, key) == 0)
        up->b.ch[g->pending - 1].superseded = 1;
    unpark_group(&up->m, g);

    gh__change *c = gh__batch_add(&up->b, GH__CH_GROUP, key);
    if (c == NULL)
        return GH_ENOMEM;
    g->pending = up->b.n;
    gh_group *gr = &c->g;
    snprintf(gr->name, sizeof(gr->name), "%s", name);
    gr->gid = number_value(ld, e, cfg->gid_number_attr);
    text_value(ld, e, cfg->description_attr, gr->description, sizeof(gr->description));
    snprintf(gr->origin, sizeof(gr->origin), "%s", cfg->name);
    snprintf(gr->origin_key, sizeof(gr->origin_key), "%s", key);
    snprintf(gr->origin_dn, sizeof(gr->origin_dn), "%s", dn);

    vals = ldap_get_values_len(ld, e, cfg->member_attr);
    size_t nv = ldap_count_values_len(vals);
    if (nv > 0) {
        c->members = calloc(nv, sizeof(*c->members));
        if (c->members == NULL) {
            rc = GH_ENOMEM;
            goto done;
        }
    }
    for (size_t i = 0; i < nv && rc == 0; i++) {
        char *ref;
        obj *m;
        if (cfg->member_kind == GH__MEMBER_UID) {
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
            m = gh__map_get(&up->m.by_login, ref + 4);
        } else {
            char *dnv = strndup(vals[i]->bv_val, vals[i]->bv_len);
            ref = dnv != NULL ? gh__dn_norm(dnv) : NULL;
            free(dnv);
            if (ref == NULL) {
                rc = GH_ENOMEM;
                break;
            }
            m = ref[0] != '\0' ? gh__map_get(&up->m.by_dn, ref) : NULL;
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
done:
    ldap_value_free_len(vals);
    return rc;
}

static int queue_delete(upstream *up, const char *key)
{
    if (gh__map_get(&up->m.by_key, key) == NULL && gh__map_get(&up->m.tomb, key) != NULL)
        return 0; /* already a tombstone */
    model_remove(&up->m, key);
    return gh__batch_add(&up->b, GH__CH_DELETE, key) != NULL ? 0 : GH_ENOMEM;
}

static int queue_entry(upstream *up, int kind, LDAP *ld, LDAPMessage *e, const char *key)
{
    char *dn = ldap_get_dn(ld, e);
    int rc;
    if (dn == NULL)
        return 0;
    pthread_mutex_lock(&up->mu);
    up->st.entries_received++;
    pthread_mutex_unlock(&up->mu);
    rc = kind == GH__KIND_USER ? queue_user(up, ld, e, key, dn) : queue_group(up, ld, e, key, dn);
    ldap_memfree(dn);
    return rc;
}

/* ------------------------------------------------------------------ */
/* end of a refresh: deletions, the guard, the final batch             */

typedef struct diff_ctx {
    upstream *up;
    keylist gone;
    int rc;
} diff_ctx;

static void diff_one(const char *key, void *val, void *arg)
{
    diff_ctx *d = arg;
    obj *o = val;
    session *ss = &d->up->sess[o->kind];
    if (d->rc != 0 || !ss->refresh_present)
        return;
    if (gh__map_get(&ss->present, key) == NULL && gh__map_get(&d->up->del_held, key) == NULL)
        d->rc = keylist_add(&d->gone, key);
}

static void held_one(const char *key, void *val, void *arg)
{
    diff_ctx *d = arg;
    (void)val;
    if (d->rc == 0 && gh__map_get(&d->up->m.by_key, key) != NULL)
        d->rc = keylist_add(&d->gone, key);
}

/* Applies the deletions of the refresh that just ended (explicit ones held
 * back, and by difference for sessions that ended in the present phase),
 * unless they exceed max_delete_ratio of the mirror. Then commits the last
 * batch with the cookies. GH_EPERM when the guard stopped the run. */
static int finish_refresh(upstream *up)
{
    diff_ctx d = {up, {0}, 0};
    int rc;
    size_t mirror = up->m.nusers + up->m.ngroups;

    gh__map_each(&up->del_held, held_one, &d);
    gh__map_each(&up->m.by_key, diff_one, &d);
    rc = d.rc;
    if (rc != 0)
        goto done;
    size_t limit = (size_t)(up->cfg->max_delete_ratio * (double)mirror); /* rounds down */
    if (limit < 1)
        limit = 1;
    if (d.gone.n > limit && !up->force) {
        /* keep what was added or changed, store no cookie: the next run
         * sees the same deletions again until an administrator decides */
        up->halted = 1;
        for (int i = 0; i < 2; i++)
            up->sess[i].refreshing = 1; /* keeps the old cookies */
        rc = flush(up, 0);
        set_error(up,
                  "refusing to delete %zu of %zu mirrored entries (max_delete_ratio %.2f): "
                  "check the upstream and its filters, then sync.run with force",
                  d.gone.n, mirror, up->cfg->max_delete_ratio);
        if (rc == 0)
            rc = GH_EPERM;
        goto done;
    }
    for (size_t i = 0; i < d.gone.n && rc == 0; i++)
        rc = queue_delete(up, d.gone.v[i]);
    for (int i = 0; i < 2; i++) {
        up->sess[i].refreshing = 0;
        gh__map_clear(&up->sess[i].present, NULL);
    }
    gh__map_clear(&up->del_held, NULL);
    if (rc == 0)
        rc = flush(up, 1);
    if (rc == 0) {
        up->halted = 0;
        up->force = 0;
    }
done:
    keylist_free(&d.gone);
    return rc;
}

/* ------------------------------------------------------------------ */
/* ldap_sync callbacks                                                 */

/* libldap hands every message of a chain to the callbacks with the chain's
 * head; see the comment at the top. Returns 1 when msg must be ignored. */
static int chained(session *ss, LDAPMessage *msg)
{
    if (ldap_next_message(ss->ls.ls_ld, msg) == NULL)
        return 0;
    ss->chain = 1;
    if (ss->chain_head == msg)
        return 1;
    ss->chain_head = msg;
    return 0;
}

/* A callback cannot stop libldap's refresh loop: shutting the socket down
 * makes its next read fail, and the worker retries from the stored cookie. */
static void abort_session(session *ss)
{
    upstream *up = ss->up;
    ss->failed = 1;
    pthread_mutex_lock(&up->mu);
    if (up->fd >= 0)
        shutdown(up->fd, SHUT_RDWR);
    pthread_mutex_unlock(&up->mu);
}

static int add_present(session *ss, const char *key)
{
    return gh__map_put(&ss->present, key, (void *)1, NULL);
}

static int on_entry(ldap_sync_t *ls, LDAPMessage *msg, struct berval *uuid,
                    ldap_sync_refresh_t phase)
{
    session *ss = ls->ls_private;
    upstream *up = ss->up;
    char key[GH_KEY_MAX + 1];
    int rc = 0;

    ss->events++;
    progress(up);
    if (ss->failed || chained(ss, msg))
        return 0;
    if (gh__key_text(uuid, 1, key, sizeof(key)) != 0)
        return 0;
    switch (phase) {
    case LDAP_SYNC_CAPI_PRESENT:
        rc = add_present(ss, key);
        break;
    case LDAP_SYNC_CAPI_ADD:
    case LDAP_SYNC_CAPI_MODIFY:
        if (ss->refreshing)
            rc = add_present(ss, key);
        if (rc == 0)
            rc = queue_entry(up, ss->kind, ls->ls_ld, msg, key);
        if (rc == 0)
            rc = maybe_flush(up);
        break;
    case LDAP_SYNC_CAPI_DELETE:
        if (ss->refreshing)
            rc = gh__map_put(&up->del_held, key, (void *)1, NULL);
        else
            rc = queue_delete(up, key);
        break;
    default:
        break;
    }
    if (rc != 0)
        abort_session(ss); /* out of memory or writer error: restart */
    return rc;
}

static int on_reference(ldap_sync_t *ls, LDAPMessage *msg)
{
    (void)ls;
    (void)msg;
    return 0; /* referrals are not chased */
}

/* refreshPresent (1) or refreshDelete (0) of a syncInfo message, -1 else. */
static int info_kind(LDAP *ld, LDAPMessage *msg)
{
    char *oid = NULL;
    struct berval *data = NULL;
    int kind = -1;
    if (ldap_parse_intermediate(ld, msg, &oid, &data, NULL, 0) == LDAP_SUCCESS && data != NULL) {
        BerElement *ber = ber_init(data);
        ber_len_t len;
        if (ber != NULL) {
            ber_tag_t tag = ber_peek_tag(ber, &len);
            if (tag == LDAP_TAG_SYNC_REFRESH_PRESENT)
                kind = 1;
            else if (tag == LDAP_TAG_SYNC_REFRESH_DELETE)
                kind = 0;
            ber_free(ber, 1);
        }
    }
    ldap_memfree(oid);
    ber_bvfree(data);
    return kind;
}

static int on_intermediate(ldap_sync_t *ls, LDAPMessage *msg, BerVarray uuids,
                           ldap_sync_refresh_t phase)
{
    session *ss = ls->ls_private;
    upstream *up = ss->up;
    char key[GH_KEY_MAX + 1];
    int rc = 0;

    ss->events++;
    progress(up);
    if (ss->failed || chained(ss, msg))
        return 0;
    switch (phase) {
    case LDAP_SYNC_CAPI_PRESENTS_IDSET:
    case LDAP_SYNC_CAPI_DELETES_IDSET:
        for (size_t i = 0; uuids != NULL && uuids[i].bv_val != NULL && rc == 0; i++) {
            if (gh__key_text(&uuids[i], 1, key, sizeof(key)) != 0)
                continue;
            if (phase == LDAP_SYNC_CAPI_PRESENTS_IDSET)
                rc = add_present(ss, key);
            else if (ss->refreshing)
                rc = gh__map_put(&up->del_held, key, (void *)1, NULL);
            else
                rc = queue_delete(up, key);
        }
        break;
    case LDAP_SYNC_CAPI_PRESENTS:
        ss->refresh_present = 1; /* end of a present phase, more follows */
        break;
    case LDAP_SYNC_CAPI_DONE:
        /* refreshDone of refreshAndPersist */
        if (info_kind(ls->ls_ld, msg) == 1)
            ss->refresh_present = 1;
        break;
    default:
        break;
    }
    if (rc != 0)
        abort_session(ss);
    return rc;
}

static int on_result(ldap_sync_t *ls, LDAPMessage *msg, int refresh_deletes)
{
    session *ss = ls->ls_private;
    (void)msg;
    ss->events++;
    ss->done = 1;
    if (refresh_deletes == -1)
        ss->refresh_required = 1;
    else if (refresh_deletes == 0)
        ss->refresh_present = 1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* sessions                                                            */

static char **attr_list(const struct gh_upstream_cfg *cfg, int kind)
{
    const char *u[] = {cfg->login_attr,
                       cfg->uid_number_attr,
                       cfg->gid_number_attr,
                       cfg->display_name_attr,
                       cfg->mail_attr,
                       cfg->key_attr,
                       NULL};
    const char *g[] = {cfg->group_name_attr, cfg->gid_number_attr, cfg->description_attr,
                       cfg->member_attr,     cfg->key_attr,        NULL};
    const char **src = kind == GH__KIND_USER ? u : g;
    size_t n = 0;
    char **v = ldap_memcalloc(8, sizeof(char *));
    if (v == NULL)
        return NULL;
    for (size_t i = 0; src[i] != NULL; i++) {
        if (src[i][0] == '\0')
            continue;
        if ((v[n] = ldap_strdup(src[i])) == NULL) {
            ldap_memvfree((void **)v);
            return NULL;
        }
        n++;
    }
    return v;
}

static void session_end(session *ss)
{
    if (ss->live) {
        ss->ls.ls_ld = NULL; /* the connection is the worker's */
        ldap_sync_destroy(&ss->ls, 0);
        ss->live = 0;
    }
    gh__map_clear(&ss->present, NULL);
    ss->refreshing = ss->refresh_present = ss->done = ss->refresh_required = 0;
    ss->chain = ss->failed = 0;
    ss->chain_head = NULL;
}

static int session_begin(upstream *up, session *ss)
{
    const struct gh_upstream_cfg *cfg = up->cfg;
    session_end(ss);
    ldap_sync_initialize(&ss->ls);
    ss->live = 1;
    ss->ls.ls_base = ldap_strdup(cfg->base_dn);
    ss->ls.ls_filter =
        ldap_strdup(ss->kind == GH__KIND_USER ? cfg->user_filter : cfg->group_filter);
    ss->ls.ls_attrs = attr_list(cfg, ss->kind);
    ss->ls.ls_scope = cfg->scope;
    ss->ls.ls_timeout = 0; /* ldap_sync_poll never blocks: poll(2) waits */
    ss->ls.ls_search_entry = on_entry;
    ss->ls.ls_search_reference = on_reference;
    ss->ls.ls_intermediate = on_intermediate;
    ss->ls.ls_search_result = on_result;
    ss->ls.ls_private = ss;
    ss->ls.ls_ld = up->ld;
    if (ss->ls.ls_base == NULL || ss->ls.ls_filter == NULL || ss->ls.ls_attrs == NULL)
        return GH_ENOMEM;
    if (ss->cookie != NULL) {
        struct berval bv = {ss->cookielen, ss->cookie};
        if (ber_dupbv(&ss->ls.ls_cookie, &bv) == NULL)
            return GH_ENOMEM;
    } else {
        /* a reload without a cookie sends all content: whatever the mirror
         * holds beyond it is gone, even though syncprov ends such a refresh
         * with refreshDeletes TRUE */
        ss->refresh_present = 1;
    }
    ss->refreshing = 1;
    return 0;
}

/* Runs a session's refresh phase (blocking). 0, or an error with last_error
 * set. A refresh the upstream refused as too old is retried from scratch. */
static int session_refresh(upstream *up, session *ss, int mode)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = session_begin(up, ss);
        if (rc != 0)
            return rc;
        set_busy(up, 1);
        rc = ldap_sync_init(&ss->ls, mode);
        set_busy(up, 0);
        if (stopping(up) || ss->failed)
            return GH_EUNAVAIL; /* last_error says why */
        if (ss->chain) {
            set_error(up, "%s refresh interrupted; retrying", ss->kind ? "group" : "user");
            return GH_EUNAVAIL;
        }
        if (ss->refresh_required || rc == LDAP_SYNC_REFRESH_REQUIRED) {
            GH_LOGI("sync %s: the upstream asks for a full reload of the %s", up->cfg->name,
                    ss->kind ? "groups" : "users");
            set_cookie(ss, NULL, 0);
            gh__map_clear(&up->del_held, NULL);
            continue;
        }
        if (rc != LDAP_SUCCESS) {
            char *msg = NULL;
            ldap_get_option(up->ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &msg);
            set_error(up, "%s sync search: %s%s%s", ss->kind ? "group" : "user",
                      ldap_err2string(rc), msg != NULL && msg[0] ? " - " : "",
                      msg != NULL ? msg : "");
            ldap_memfree(msg);
            return GH_EUNAVAIL;
        }
        if (mode == LDAP_SYNC_REFRESH_ONLY && !ss->done) {
            set_error(up, "%s refresh ended without its result", ss->kind ? "group" : "user");
            return GH_EUNAVAIL;
        }
        if (mode == LDAP_SYNC_REFRESH_AND_PERSIST && ss->done) {
            set_error(up, "the upstream ended the persistent %s search",
                      ss->kind ? "group" : "user");
            return GH_EUNAVAIL;
        }
        return 0;
    }
    set_error(up, "the upstream keeps asking for a reload");
    return GH_EUNAVAIL;
}

/* ------------------------------------------------------------------ */
/* connections                                                         */

static int connect_upstream(upstream *up)
{
    char err[GH_ERRMSG_MAX];
    const struct gh_upstream_cfg *cfg = up->cfg;
    LDAP *ld = NULL;
    int fd = -1;

    set_state(up, "connecting");
    set_busy(up, 1);
    int rc = gh__ldap_open(cfg, cfg->timeout, cfg->bind_dn[0] != '\0' ? cfg->bind_dn : NULL,
                           cfg->bind_password, strlen(cfg->bind_password), &ld, err, sizeof(err));
    set_busy(up, 0);
    if (rc != LDAP_SUCCESS) {
        set_error(up, "%s: %s", cfg->uri, err);
        return GH_EUNAVAIL;
    }
    ldap_get_option(ld, LDAP_OPT_DESC, &fd);
    up->ld = ld;
    pthread_mutex_lock(&up->mu);
    up->fd = fd;
    up->st.connected = 1;
    pthread_mutex_unlock(&up->mu);
    return 0;
}

static void disconnect(upstream *up)
{
    for (int i = 0; i < 2; i++)
        session_end(&up->sess[i]);
    pthread_mutex_lock(&up->mu);
    up->fd = -1;
    up->st.connected = 0;
    pthread_mutex_unlock(&up->mu);
    if (up->ld != NULL) {
        ldap_unbind_ext(up->ld, NULL, NULL);
        up->ld = NULL;
    }
}

static void run_begins(upstream *up)
{
    memset(&up->run, 0, sizeof(up->run));
    gh__map_clear(&up->del_held, NULL);
    pthread_mutex_lock(&up->mu);
    up->st.last_attempt = wall_s();
    pthread_mutex_unlock(&up->mu);
}

static void run_ok(upstream *up)
{
    pthread_mutex_lock(&up->mu);
    up->st.last_success = wall_s();
    up->st.current_at = mono_s();
    up->st.runs++;
    up->st.last_run = up->run;
    if (up->run.skipped == 0)
        up->st.last_error[0] = '\0'; /* a clean run: nothing left to report */
    pthread_mutex_unlock(&up->mu);
    publish_counts(up);
}

/* ------------------------------------------------------------------ */
/* the three modes                                                     */

static int run_syncrepl_poll(upstream *up)
{
    int rc;
    for (int i = 0; i < 2; i++) {
        rc = session_refresh(up, &up->sess[i], LDAP_SYNC_REFRESH_ONLY);
        if (rc != 0)
            return rc;
    }
    rc = finish_refresh(up);
    if (rc == 0)
        run_ok(up);
    return rc;
}

static int purge_due(upstream *up);

/* Whether bytes wait in the socket or in libldap's read buffer. */
static int readable(LDAP *ld)
{
    Sockbuf *sb = NULL;
    int fd = -1, n = 0;
    if (ldap_get_option(ld, LDAP_OPT_SOCKBUF, &sb) == LDAP_OPT_SUCCESS && sb != NULL &&
        ber_sockbuf_ctrl(sb, LBER_SB_OPT_DATA_READY, NULL) > 0)
        return 1;
    if (ldap_get_option(ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS || fd < 0)
        return 0;
    return ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

static int run_syncrepl_persist(upstream *up)
{
    int rc;
    for (int i = 0; i < 2; i++) {
        rc = session_refresh(up, &up->sess[i], LDAP_SYNC_REFRESH_AND_PERSIST);
        if (rc != 0)
            return rc;
    }
    rc = finish_refresh(up);
    if (rc != 0)
        return rc;
    run_ok(up);
    set_state(up, "persisting");

    for (;;) {
        int any = 0;
        if (stopping(up) || run_requested(up))
            return 0;
        if (mono_s() >= up->next_purge && (rc = purge_due(up)) != 0)
            return rc;
        /* Read everything available on both searches. With a zero timeout
         * libldap may read a message off the socket into its queue and still
         * report a timeout (its deadline passed while reading), and a call for
         * one search may read the other's message; the next calls deliver
         * them. So "nothing more" is a round that delivered nothing although
         * nothing was readable when it began. */
        for (int round = 0; round < 1000; round++) {
            int moved = 0, idle = !readable(up->ld);
            for (int i = 0; i < 2; i++) {
                session *ss = &up->sess[i];
                unsigned long before = ss->events;
                char *cb = ss->ls.ls_cookie.bv_val;
                size_t cl = ss->ls.ls_cookie.bv_len;
                rc = ldap_sync_poll(&ss->ls);
                if (ss->failed)
                    return GH_EUNAVAIL; /* last_error says why */
                if (rc != LDAP_SUCCESS) {
                    set_error(up, "persistent %s search: %s", i ? "group" : "user",
                              ldap_err2string(rc));
                    return GH_EUNAVAIL;
                }
                if (ss->chain || ss->done) {
                    /* keep what was read, then resume from its cookie */
                    rc = flush(up, 1);
                    if (ss->done)
                        set_error(up, "the upstream ended the persistent search");
                    return rc != 0 ? rc : GH_EUNAVAIL;
                }
                if (ss->events != before || ss->ls.ls_cookie.bv_val != cb ||
                    ss->ls.ls_cookie.bv_len != cl)
                    moved = 1;
            }
            any |= moved;
            if (!moved && idle)
                break;
            if (up->b.n >= BATCH_FLUSH)
                break;
        }
        if (up->b.n > 0 || up->b.pre_skipped > 0 || cookies_moved(up)) {
            rc = flush(up, 1);
            if (rc != 0)
                return rc;
            pthread_mutex_lock(&up->mu);
            up->st.last_success = wall_s();
            up->st.last_run = up->run;
            pthread_mutex_unlock(&up->mu);
        }
        pthread_mutex_lock(&up->mu);
        up->st.current_at = mono_s();
        pthread_mutex_unlock(&up->mu);
        if (any)
            continue;
        struct pollfd pfd;
        ldap_get_option(up->ld, LDAP_OPT_DESC, &pfd.fd);
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, PERSIST_POLL_MS) < 0 && errno != EINTR) {
            set_error(up, "poll: %s", strerror(errno));
            return GH_EUNAVAIL;
        }
    }
}

/* One paged search; each entry is queued and marked present. */
static int paged_search(upstream *up, int kind)
{
    const struct gh_upstream_cfg *cfg = up->cfg;
    session *ss = &up->sess[kind];
    struct berval cookie = {0, NULL};
    char **attrs = attr_list(cfg, kind);
    int lrc = LDAP_SUCCESS, grc = 0, raw = strcasecmp(cfg->key_attr, "objectGUID") == 0;

    if (attrs == NULL)
        return GH_ENOMEM;
    ss->refreshing = 1;
    ss->refresh_present = 1;
    do {
        LDAPControl *page = NULL, *ctrls[2] = {NULL, NULL}, **rctrls = NULL;
        LDAPMessage *res = NULL;
        int err = 0;
        lrc = ldap_create_page_control(up->ld, (ber_int_t)cfg->page_size, &cookie, 0, &page);
        if (lrc != LDAP_SUCCESS)
            break;
        ctrls[0] = page;
        set_busy(up, 1);
        lrc = ldap_search_ext_s(up->ld, cfg->base_dn, cfg->scope,
                                kind == GH__KIND_USER ? cfg->user_filter : cfg->group_filter, attrs,
                                0, ctrls, NULL, NULL, 0, &res);
        set_busy(up, 0);
        ldap_control_free(page);
        if (lrc != LDAP_SUCCESS) {
            ldap_msgfree(res);
            break;
        }
        for (LDAPMessage *e = ldap_first_entry(up->ld, res); e != NULL && grc == 0;
             e = ldap_next_entry(up->ld, e)) {
            char key[GH_KEY_MAX + 1];
            struct berval **kv = ldap_get_values_len(up->ld, e, cfg->key_attr);
            int krc = kv != NULL && kv[0] != NULL ? gh__key_text(kv[0], raw, key, sizeof(key))
                                                  : GH_ENOTFOUND;
            ldap_value_free_len(kv);
            if (krc != 0) {
                char *dn = ldap_get_dn(up->ld, e);
                entry_skipped(up, dn != NULL ? dn : "?", "no usable %s", cfg->key_attr);
                ldap_memfree(dn);
                continue;
            }
            grc = add_present(ss, key);
            if (grc == 0)
                grc = queue_entry(up, kind, up->ld, e, key);
            if (grc == 0)
                grc = maybe_flush(up);
            progress(up);
        }
        if (grc != 0) {
            ldap_msgfree(res);
            break;
        }
        ber_memfree(cookie.bv_val);
        cookie.bv_val = NULL;
        cookie.bv_len = 0;
        lrc = ldap_parse_result(up->ld, res, &err, NULL, NULL, NULL, &rctrls, 1);
        if (lrc == LDAP_SUCCESS)
            lrc = err;
        if (lrc == LDAP_SUCCESS && rctrls != NULL) {
            LDAPControl *pr = ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, rctrls, NULL);
            ber_int_t count;
            if (pr != NULL)
                ldap_parse_pageresponse_control(up->ld, pr, &count, &cookie);
        }
        ldap_controls_free(rctrls);
    } while (lrc == LDAP_SUCCESS && cookie.bv_val != NULL && cookie.bv_len > 0);
    ber_memfree(cookie.bv_val);
    ldap_memvfree((void **)attrs);
    if (grc != 0) {
        set_error(up, "%s search: %s", kind ? "group" : "user", gh_strerror(grc));
        return grc;
    }
    if (lrc != LDAP_SUCCESS) {
        char *msg = NULL;
        ldap_get_option(up->ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &msg);
        set_error(up, "%s search: %s%s%s", kind ? "group" : "user", ldap_err2string(lrc),
                  msg != NULL && msg[0] ? " - " : "", msg != NULL ? msg : "");
        ldap_memfree(msg);
        return GH_EUNAVAIL;
    }
    return 0;
}

static int run_search_poll(upstream *up)
{
    int rc;
    for (int i = 0; i < 2; i++) {
        gh__map_clear(&up->sess[i].present, NULL);
        rc = paged_search(up, i);
        if (rc != 0)
            return rc;
    }
    rc = finish_refresh(up);
    if (rc == 0)
        run_ok(up);
    return rc;
}

typedef struct purge_ctx {
    upstream *up;
    int64_t now;
    int rc;
} purge_ctx;

static void purge_one(const char *key, void *val, void *arg)
{
    purge_ctx *p = arg;
    if (p->rc == 0 && *(int64_t *)val + p->up->cfg->delete_grace <= p->now)
        p->rc = gh__batch_add(&p->up->b, GH__CH_PURGE, key) != NULL ? 0 : GH_ENOMEM;
}

/* Tombstones past delete_grace are deleted for good. */
static int purge_due(upstream *up)
{
    purge_ctx p = {up, wall_s(), 0};
    up->next_purge = mono_s() + (up->cfg->interval < 60 ? up->cfg->interval : 60);
    if (up->b.n != 0)
        return 0;
    gh__map_each(&up->m.tomb, purge_one, &p);
    if (p.rc != 0) {
        gh__batch_reset(&up->b);
        return p.rc;
    }
    return up->b.n > 0 ? flush(up, 0) : 0;
}

static void *worker_main(void *arg)
{
    upstream *up = arg;
    unsigned backoff = 1;
    int loaded = 0;

    while (!stopping(up)) {
        int rc = 0;
        if (!loaded) {
            rc = load_state(up);
            if (rc != 0)
                set_error(up, "reading the mirror: %s", gh_strerror(rc));
            else
                loaded = 1;
        }
        if (rc == 0)
            rc = purge_due(up);
        take_run_request(up);
        if (rc == 0) {
            run_begins(up);
            rc = connect_upstream(up);
        }
        if (rc == 0) {
            set_state(up, up->cfg->mode == GH__MODE_PERSIST ? "refreshing" : "running");
            switch (up->cfg->mode) {
            case GH__MODE_PERSIST:
                rc = run_syncrepl_persist(up);
                break;
            case GH__MODE_POLL:
                rc = run_syncrepl_poll(up);
                break;
            default:
                rc = run_search_poll(up);
                break;
            }
        }
        disconnect(up);
        gh__batch_reset(&up->b);
        if (stopping(up))
            break;
        if (rc == 0) {
            backoff = 1;
            if (up->cfg->mode == GH__MODE_PERSIST) {
                /* purge or sync.run: reconnect at once from the cookie */
                set_state(up, "reconnecting");
                continue;
            }
            set_state(up, "idle");
            if (wait_for(up, up->cfg->interval))
                break;
            continue;
        }
        /* something failed: the model may be ahead of the store */
        loaded = 0;
        for (int i = 0; i < 2; i++)
            up->sess[i].refreshing = 0;
        if (rc == GH_EPERM) {
            set_state(up, "halted");
            if (wait_for(up, up->cfg->interval))
                break;
            continue;
        }
        set_state(up, "down");
        unsigned delay = backoff;
        if (up->cfg->mode != GH__MODE_PERSIST && delay > up->cfg->interval)
            delay = up->cfg->interval;
        if (wait_for(up, delay))
            break;
        if (backoff < BACKOFF_MAX)
            backoff *= 2;
    }
    disconnect(up);
    set_state(up, "stopped");
    return NULL;
}

/* ------------------------------------------------------------------ */
/* the loop side                                                       */

static upstream *find_up(gh_sync *s, const char *name)
{
    if (s == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < s->nups; i++)
        if (strcmp(s->ups[i]->cfg->name, name) == 0)
            return s->ups[i];
    return NULL;
}

static void up_free(upstream *up)
{
    if (up == NULL)
        return;
    for (int i = 0; i < 2; i++) {
        session_end(&up->sess[i]);
        set_cookie(&up->sess[i], NULL, 0);
    }
    model_free(&up->m);
    gh__map_clear(&up->del_held, NULL);
    gh__batch_free(&up->b);
    gh_upstream_config_free(up->cfg);
    pthread_mutex_destroy(&up->mu);
    pthread_cond_destroy(&up->cv);
    free(up);
}

/* A blocking refresh or search that stopped making progress for longer than
 * the upstream's timeout is cut by shutting its socket down. */
static void on_watchdog(uv_timer_t *t)
{
    gh_sync *s = t->data;
    int64_t now = mono_s();
    for (size_t i = 0; i < s->nups; i++) {
        upstream *up = s->ups[i];
        pthread_mutex_lock(&up->mu);
        if (up->busy && up->fd >= 0 && now - up->progress_at > (int64_t)up->cfg->timeout) {
            GH_LOGW("sync %s: no answer for %u s; dropping the connection", up->cfg->name,
                    up->cfg->timeout);
            snprintf(up->st.last_error, sizeof(up->st.last_error),
                     "the upstream stopped answering for %u s", up->cfg->timeout);
            shutdown(up->fd, SHUT_RDWR);
            up->progress_at = now;
        }
        pthread_mutex_unlock(&up->mu);
    }
}

static unsigned owned_mask(const struct gh_upstream_cfg *cfg)
{
    unsigned m = GH_UF_NAME | GH_UF_ORIGIN | GH_UF_TOMBSTONE | GH_UF_VERIFIER;
    if (cfg == NULL)
        return m | GH_UF_UID | GH_UF_GID | GH_UF_DISPLAY | GH_UF_MAIL;
    if (cfg->uid_number_attr[0] != '\0')
        m |= GH_UF_UID;
    if (cfg->gid_number_attr[0] != '\0')
        m |= GH_UF_GID;
    if (cfg->display_name_attr[0] != '\0')
        m |= GH_UF_DISPLAY;
    if (cfg->mail_attr[0] != '\0')
        m |= GH_UF_MAIL;
    return m;
}

int gh_sync_start(gh_sync **out, uv_loop_t *loop, gh_store *store, gh_writer *writer,
                  const gh_config *cfg)
{
    gh_sync *s = calloc(1, sizeof(*s));
    int rc = GH_ENOMEM;

    *out = NULL;
    if (s == NULL)
        return GH_ENOMEM;
    s->loop = loop;
    s->store = store;
    s->writer = writer;
    if (cfg->nupstreams > 0) {
        s->ups = calloc(cfg->nupstreams, sizeof(*s->ups));
        if (s->ups == NULL)
            goto fail;
    }
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        upstream *up = calloc(1, sizeof(*up));
        if (up == NULL)
            goto fail;
        pthread_mutex_init(&up->mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&up->cv, &ca);
        pthread_condattr_destroy(&ca);
        up->s = s;
        up->fd = -1;
        up->st.state = "starting";
        s->ups[s->nups++] = up;
        up->cfg = gh__upstream_cfg_dup(cfg->upstreams[i]);
        if (up->cfg == NULL)
            goto fail;
        snprintf(up->actor, sizeof(up->actor), "sync:%s", up->cfg->name);
        gh__upstream_fingerprint(up->cfg, up->fp);
        up->b.cfg = up->cfg;
        for (int k = 0; k < 2; k++) {
            up->sess[k].up = up;
            up->sess[k].kind = k;
        }
    }
    if (s->nups > 0 && (rc = gh__auth_start(&s->auth, loop, AUTH_THREADS)) != 0)
        goto fail;
    if (uv_timer_init(loop, &s->watchdog) != 0) {
        rc = GH_EINTERNAL;
        goto fail;
    }
    s->have_timer = 1;
    s->watchdog.data = s;
    if (s->nups > 0)
        uv_timer_start(&s->watchdog, on_watchdog, 1000, 1000);
    uv_unref((uv_handle_t *)&s->watchdog);
    for (size_t i = 0; i < s->nups; i++) {
        upstream *up = s->ups[i];
        if (pthread_create(&up->th, NULL, worker_main, up) != 0) {
            rc = GH_EINTERNAL;
            goto fail;
        }
        up->started = 1;
        GH_LOGI("sync %s: %s from %s (%s)", up->cfg->name, gh__mode_name(up->cfg->mode),
                up->cfg->uri, up->cfg->base_dn);
    }
    *out = s;
    return 0;
fail:
    gh_sync_stop(s);
    return rc;
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void gh_sync_stop(gh_sync *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nups; i++) {
        upstream *up = s->ups[i];
        pthread_mutex_lock(&up->mu);
        up->stop = 1;
        if (up->fd >= 0)
            shutdown(up->fd, SHUT_RDWR); /* breaks a blocking libldap call */
        pthread_cond_broadcast(&up->cv);
        pthread_mutex_unlock(&up->mu);
    }
    for (size_t i = 0; i < s->nups; i++) {
        if (s->ups[i]->started)
            pthread_join(s->ups[i]->th, NULL);
        up_free(s->ups[i]);
    }
    free(s->ups);
    s->ups = NULL;
    s->nups = 0;
    gh__auth_stop(s->auth);
    s->auth = NULL;
    if (s->have_timer) {
        uv_timer_stop(&s->watchdog);
        uv_close((uv_handle_t *)&s->watchdog, on_timer_closed);
    } else {
        free(s);
    }
}

int gh_sync_auth(gh_sync *s, const char *upstream_name, const char *dn, const char *password,
                 gh_sync_auth_cb cb, void *arg)
{
    upstream *up;
    LDAPDN parsed = NULL;

    if (s == NULL || s->auth == NULL)
        return GH_EUNAVAIL;
    if ((up = find_up(s, upstream_name)) == NULL)
        return GH_ENOTFOUND;
    /* an empty password would make an unauthenticated bind, which succeeds */
    if (password == NULL || password[0] == '\0' || dn == NULL || dn[0] == '\0' || cb == NULL)
        return GH_ECREDS;
    if (ldap_str2dn(dn, &parsed, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
        return GH_ECREDS;
    ldap_dnfree(parsed);
    /* only DNs inside the mirrored base: never bind as anything else */
    char *ndn = gh__dn_norm(dn), *nbase = gh__dn_norm(up->cfg->base_dn);
    int inside = 0;
    if (ndn != NULL && nbase != NULL && ndn[0] != '\0') {
        size_t a = strlen(ndn), b = strlen(nbase);
        inside = a == b ? strcmp(ndn, nbase) == 0
                        : (a > b && strcmp(ndn + a - b, nbase) == 0 && ndn[a - b - 1] == ',');
    }
    free(ndn);
    free(nbase);
    if (!inside)
        return GH_ECREDS;
    return gh__auth_submit(s->auth, up->cfg, dn, password, cb, arg);
}

int64_t gh_sync_offline_max_age(gh_sync *s, const char *upstream_name)
{
    upstream *up = find_up(s, upstream_name);
    if (up == NULL || !up->cfg->offline_auth)
        return 0;
    return up->cfg->offline_max_age;
}

unsigned gh_sync_owned_user_fields(gh_sync *s, const char *upstream_name)
{
    if (upstream_name == NULL || upstream_name[0] == '\0')
        return 0;
    upstream *up = find_up(s, upstream_name);
    return owned_mask(up != NULL ? up->cfg : NULL);
}

int gh_sync_run_ex(gh_sync *s, const char *upstream_name, int full, int force)
{
    upstream *up = find_up(s, upstream_name);
    if (up == NULL)
        return GH_ENOTFOUND;
    pthread_mutex_lock(&up->mu);
    up->run_req = 1;
    up->run_full |= full;
    up->run_force |= force;
    pthread_cond_broadcast(&up->cv);
    pthread_mutex_unlock(&up->mu);
    return 0;
}

int gh_sync_run(gh_sync *s, const char *upstream_name)
{
    return gh_sync_run_ex(s, upstream_name, 0, 0);
}

static json_t *counts_json(const gh__counts *c)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "added", (json_int_t)c->added, "modified",
                     (json_int_t)c->modified, "renamed", (json_int_t)c->renamed, "disabled",
                     (json_int_t)c->disabled, "purged", (json_int_t)c->purged, "skipped",
                     (json_int_t)c->skipped);
}

static json_t *time_or_null(int64_t t)
{
    return t > 0 ? json_integer(t) : json_null();
}

int gh_sync_status(gh_sync *s, json_t *out)
{
    json_t *arr = json_array();
    int64_t now = mono_s();
    if (arr == NULL)
        return GH_ENOMEM;
    for (size_t i = 0; s != NULL && i < s->nups; i++) {
        upstream *up = s->ups[i];
        status st;
        pthread_mutex_lock(&up->mu);
        st = up->st;
        pthread_mutex_unlock(&up->mu);
        json_t *o = json_object();
        if (o == NULL) {
            json_decref(arr);
            return GH_ENOMEM;
        }
        json_object_set_new(o, "name", json_string(up->cfg->name));
        json_object_set_new(o, "mode", json_string(gh__mode_name(up->cfg->mode)));
        json_object_set_new(o, "uri", json_string(up->cfg->uri));
        json_object_set_new(o, "state", json_string(st.state));
        json_object_set_new(o, "connected", json_boolean(st.connected));
        json_object_set_new(o, "last_success", time_or_null(st.last_success));
        json_object_set_new(o, "last_attempt", time_or_null(st.last_attempt));
        json_object_set_new(o, "last_error",
                            st.last_error[0] != '\0' ? json_string(st.last_error) : json_null());
        json_object_set_new(o, "users", json_integer((json_int_t)st.users));
        json_object_set_new(o, "groups", json_integer((json_int_t)st.groups));
        json_object_set_new(o, "tombstones", json_integer((json_int_t)st.tombstones));
        json_object_set_new(o, "cookie",
                            st.cookie[0] != '\0' ? json_string(st.cookie) : json_null());
        json_object_set_new(o, "lag_s",
                            st.current_at > 0 ? json_integer(now - st.current_at) : json_null());
        json_object_set_new(o, "entries_received", json_integer((json_int_t)st.entries_received));
        json_object_set_new(o, "runs", json_integer((json_int_t)st.runs));
        json_object_set_new(o, "next_run", time_or_null(st.next_run));
        json_object_set_new(o, "last_run", counts_json(&st.last_run));
        json_object_set_new(o, "totals", counts_json(&st.total));
        json_array_append_new(arr, o);
    }
    json_object_set_new(out, "upstreams", arr);
    return 0;
}
