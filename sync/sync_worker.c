/*
 * sync_worker.c: the thread that mirrors one upstream (gh__sync_worker):
 * connect, refresh, persist or poll, hand batches to the writer, retry with
 * backoff, purge tombstones past their grace.
 *
 * The worker keeps a model of the upstream in memory (sync_model.c), rebuilt
 * from the store at start and after any error, so the store stays the only
 * truth. Changes go to the writer in batches (sync_apply.c); a batch that
 * carries a cookie carries every change the cookie covers, so a restart
 * resumes exactly where the last commit ended.
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
#include "sync/sync-int.h"

#define BATCH_FLUSH 500 /* changes per batch during a refresh */
#define BACKOFF_MAX 60  /* seconds between reconnect attempts, at most */
#define PERSIST_POLL_MS 250
#define AD_SHOW_DELETED_OID "1.2.840.113556.1.4.417" /* LDAP_SERVER_SHOW_DELETED_OID */

int64_t gh__sync_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}

int64_t gh__sync_wall_s(void)
{
    return (int64_t)time(NULL);
}

static void set_state(gh__sync_upstream *up, const char *state)
{
    pthread_mutex_lock(&up->mu);
    up->st.state = state;
    pthread_mutex_unlock(&up->mu);
}

static void set_error(gh__sync_upstream *up, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_error(gh__sync_upstream *up, const char *fmt, ...)
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

static int stopping(gh__sync_upstream *up)
{
    pthread_mutex_lock(&up->mu);
    int s = up->stop;
    pthread_mutex_unlock(&up->mu);
    return s;
}

static void progress(gh__sync_upstream *up)
{
    pthread_mutex_lock(&up->mu);
    up->progress_at = gh__sync_mono_s();
    pthread_mutex_unlock(&up->mu);
}

static void set_busy(gh__sync_upstream *up, int busy)
{
    pthread_mutex_lock(&up->mu);
    up->busy = busy;
    up->progress_at = gh__sync_mono_s();
    pthread_mutex_unlock(&up->mu);
}

typedef struct count_ctx {
    const char *origin;
    uint64_t live, tomb;
} count_ctx;

static int count_user(const gh_user *u, void *arg)
{
    count_ctx *cc = arg;
    if (strcmp(u->origin, cc->origin) == 0) {
        if (u->tombstone != 0)
            cc->tomb++;
        else
            cc->live++;
    }
    return 0;
}

static int count_group(const gh_group *g, void *arg)
{
    count_ctx *cc = arg;
    if (strcmp(g->origin, cc->origin) == 0) {
        if (g->tombstone != 0)
            cc->tomb++;
        else
            cc->live++;
    }
    return 0;
}

/* sync.status's users, groups and tombstones, counted in the store (not in
 * the worker's model, which runs ahead of it during a halt or a failure).
 * A scan: done at the end of a run, a halt, a load, and after persist
 * changes that add or remove entries; not per batch of a refresh. */
static void recount(gh__sync_upstream *up)
{
    up->recount_due = 0;
    gh_store_reader *r = NULL;
    gh_txn *txn;
    count_ctx u = {up->cfg->name, 0, 0}, g = {up->cfg->name, 0, 0};
    if (gh_store_reader_new(up->s->store, &r) != 0)
        return;
    if (gh_store_read_begin(r, &txn) == 0) {
        int rc = gh_store_user_list(txn, NULL, NULL, 0, count_user, &u);
        if (rc == 0)
            rc = gh_store_group_list(txn, NULL, NULL, 0, count_group, &g);
        gh_store_read_end(r);
        if (rc == 0) {
            pthread_mutex_lock(&up->mu);
            up->st.users = u.live;
            up->st.groups = g.live;
            up->st.tombstones = u.tomb + g.tomb;
            pthread_mutex_unlock(&up->mu);
        }
    }
    gh_store_reader_free(r);
}

static void publish_counts(gh__sync_upstream *up)
{
    pthread_mutex_lock(&up->mu);
    up->st.last_run = up->run;
    pthread_mutex_unlock(&up->mu);
}

static void counts_add(gh__sync_counts *a, const gh__sync_counts *b)
{
    a->added += b->added;
    a->modified += b->modified;
    a->renamed += b->renamed;
    a->disabled += b->disabled;
    a->purged += b->purged;
    a->skipped += b->skipped;
    a->foreign += b->foreign;
}

int gh__sync_cookie_show(const char *name, const char *cookie, size_t len, char *out, size_t outlen)
{
    int printable = len <= 1000;
    for (size_t j = 0; j < len && printable; j++)
        if ((unsigned char)cookie[j] < 0x20 || (unsigned char)cookie[j] > 0x7e)
            printable = 0;
    if (printable)
        return snprintf(out, outlen, "%s:%.*s", name, (int)len, cookie);
    unsigned char h[16];
    char hex[33];
    crypto_generichash(h, sizeof(h), (const unsigned char *)cookie, len, NULL, 0);
    sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
    return snprintf(out, outlen, "%s:blake2b-128:%s/%zu", name, hex, len);
}

/* Cookie as shown by sync.status: whole when printable (OpenLDAP's is
 * "rid=...,csn=..."), else a hash and the length; never cut. */
static void show_cookie(gh__sync_upstream *up)
{
    char buf[sizeof(up->st.cookie)] = "";
    size_t off = 0;
    for (int i = 0; i < 2; i++) {
        gh__sync_session *ss = &up->sess[i];
        int n;
        if (ss->cookie == NULL)
            continue;
        if (off > 0)
            buf[off++] = ' ';
        n = gh__sync_cookie_show(i == 0 ? "users" : "groups", ss->cookie, ss->cookielen, buf + off,
                                 sizeof(buf) - off);
        if (n < 0 || (size_t)n >= sizeof(buf) - off)
            break; /* cannot happen: sized for two whole cookies */
        off += (size_t)n;
    }
    buf[off] = '\0';
    pthread_mutex_lock(&up->mu);
    snprintf(up->st.cookie, sizeof(up->st.cookie), "%s", buf);
    pthread_mutex_unlock(&up->mu);
}

/* Waits up to secs, or until a stop or run request. 1 when stopping. */
static int wait_for(gh__sync_upstream *up, unsigned secs)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)secs;
    pthread_mutex_lock(&up->mu);
    up->st.next_run = gh__sync_wall_s() + (int64_t)secs;
    while (!up->stop && !up->run_req)
        if (pthread_cond_timedwait(&up->cv, &up->mu, &ts) == ETIMEDOUT)
            break;
    up->st.next_run = 0;
    int s = up->stop;
    pthread_mutex_unlock(&up->mu);
    return s;
}

/* Takes a pending sync.run request: 1 when there was one. */
static int take_run_request(gh__sync_upstream *up)
{
    pthread_mutex_lock(&up->mu);
    int req = up->run_req;
    if (req) {
        if (up->run_full) {
            up->nmarks = 0;
            up->full_at = 0;
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

static int run_requested(gh__sync_upstream *up)
{
    pthread_mutex_lock(&up->mu);
    int r = up->run_req;
    pthread_mutex_unlock(&up->mu);
    return r;
}

typedef struct load_ctx {
    gh__sync_upstream *up;
    int rc;
} load_ctx;

static int load_user(const gh_user *u, void *arg)
{
    load_ctx *lc = arg;
    int changed;
    if (strcmp(u->origin, lc->up->cfg->name) != 0)
        return 0;
    if (u->tombstone != 0)
        lc->rc = gh__sync_tomb_set(&lc->up->m, u->origin_key, u->tombstone);
    else {
        gh__sync_obj *o = gh__sync_model_put(&lc->up->m, GH__SYNC_KIND_USER, u->origin_key,
                                             u->origin_dn, u->name, &changed);
        if (o == NULL) {
            lc->rc = GH_ENOMEM;
        } else {
            o->expires = u->upstream_expires;
            o->expired = (u->upstream_flags & GH_UPSTREAM_EXPIRED) != 0;
        }
    }
    return lc->rc;
}

static int load_group(const gh_group *g, void *arg)
{
    load_ctx *lc = arg;
    int changed;
    if (strcmp(g->origin, lc->up->cfg->name) != 0)
        return 0;
    if (g->tombstone != 0)
        lc->rc = gh__sync_tomb_set(&lc->up->m, g->origin_key, g->tombstone);
    else if (gh__sync_model_put(&lc->up->m, GH__SYNC_KIND_GROUP, g->origin_key, g->origin_dn, "",
                                &changed) == NULL)
        lc->rc = GH_ENOMEM;
    return lc->rc;
}

static void set_cookie(gh__sync_session *ss, const char *data, size_t len)
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
static void parse_state(gh__sync_upstream *up, const char *blob, size_t len)
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
    json_t *ad = json_object_get(o, "ad");
    up->nmarks = 0;
    up->full_at = 0;
    if (json_is_object(ad)) {
        /* {"full_at":T,"dcs":[{"dc","inv","usn","seen"}...]}; before one
         * mark per DC: {"usn","inv","dc","full_at"} */
        json_t *dcs = json_object_get(ad, "dcs");
        size_t i, n = json_is_array(dcs) ? json_array_size(dcs) : 1;
        up->full_at = json_integer_value(json_object_get(ad, "full_at"));
        for (i = 0; i < n && up->nmarks < GH__SYNC_MAX_DCS; i++) {
            json_t *m = json_is_array(dcs) ? json_array_get(dcs, i) : ad;
            const char *inv = json_string_value(json_object_get(m, "inv"));
            const char *dc = json_string_value(json_object_get(m, "dc"));
            json_int_t usn = json_integer_value(json_object_get(m, "usn"));
            struct gh__sync_admark *mk = &up->marks[up->nmarks];
            if (inv == NULL || dc == NULL || usn <= 0)
                continue;
            mk->usn = (uint64_t)usn;
            snprintf(mk->inv, sizeof(mk->inv), "%s", inv);
            snprintf(mk->dc, sizeof(mk->dc), "%s", dc);
            mk->seen = json_integer_value(json_object_get(m, "seen"));
            up->nmarks++;
        }
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
static int load_state(gh__sync_upstream *up)
{
    gh_store_reader *r = NULL;
    gh_txn *txn;
    load_ctx lc = {up, 0};
    char *blob = NULL;
    size_t bloblen = 0;
    int rc;

    gh__sync_model_free(&up->m);
    up->primary_known = 0; /* not in the store: the next AD run is a full one */
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
    recount(up);
    show_cookie(up);
    return rc;
}

static int cur_cookie(gh__sync_session *ss, char **data, size_t *len)
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

static int cookies_moved(gh__sync_upstream *up)
{
    for (int i = 0; i < 2; i++) {
        char *d;
        size_t n;
        gh__sync_session *ss = &up->sess[i];
        cur_cookie(ss, &d, &n);
        if (d != ss->cookie &&
            (n != ss->cookielen || ss->cookie == NULL || memcmp(d, ss->cookie, n) != 0))
            return 1;
    }
    return 0;
}

/* The DC marks as they will be once this run's pending mark is stored: this
 * DC's entry replaced (or dropped when mark_next has no USN), a new DC added,
 * the DC not seen for longest dropped when the table is full. */
static size_t marks_after(const gh__sync_upstream *up, struct gh__sync_admark *out,
                          int64_t *full_at)
{
    size_t n = up->nmarks, i;
    memmove(out, up->marks, n * sizeof(*out));
    *full_at = up->full_at;
    if (!up->mark_pending)
        return n;
    *full_at = up->full_at_next;
    for (i = 0; i < n && strcmp(out[i].dc, up->mark_next.dc) != 0; i++)
        ;
    if (i == n && up->mark_next.usn == 0)
        return n;
    if (i == n && n == GH__SYNC_MAX_DCS) {
        i = 0;
        for (size_t j = 1; j < n; j++)
            if (out[j].seen < out[i].seen)
                i = j;
    } else if (i == n) {
        n++;
    }
    if (up->mark_next.usn == 0) {
        out[i] = out[--n];
        return n;
    }
    out[i] = up->mark_next;
    return n;
}

static const struct gh__sync_admark *mark_find(const gh__sync_upstream *up, const char *dc)
{
    for (size_t i = 0; i < up->nmarks; i++)
        if (strcmp(up->marks[i].dc, dc) == 0)
            return &up->marks[i];
    return NULL;
}

static int make_blob(gh__sync_upstream *up)
{
    json_t *o = json_object();
    int rc = GH_ENOMEM;
    if (o == NULL)
        return GH_ENOMEM;
    json_object_set_new(o, "v", json_integer(1));
    json_object_set_new(o, "fp", json_string(up->fp));
    json_object_set_new(o, "time", json_integer(gh__sync_wall_s()));
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
    struct gh__sync_admark mk[GH__SYNC_MAX_DCS];
    int64_t full_at;
    size_t nmk = marks_after(up, mk, &full_at);
    if (nmk > 0) {
        json_t *dcs = json_array();
        for (size_t i = 0; i < nmk && dcs != NULL; i++)
            json_array_append_new(dcs, json_pack("{s:s,s:s,s:I,s:I}", "dc", mk[i].dc, "inv",
                                                 mk[i].inv, "usn", (json_int_t)mk[i].usn, "seen",
                                                 (json_int_t)mk[i].seen));
        json_object_set_new(o, "ad",
                            json_pack("{s:I,s:o*}", "full_at", (json_int_t)full_at, "dcs", dcs));
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

/* Hands the batch to the writer. with_cookies: store the sessions' cookies
 * with it. */
static int flush(gh__sync_upstream *up, int with_cookies)
{
    gh__sync_batch *b = &up->b;
    char err[GH_ERRMSG_MAX] = "";
    int rc;

    gh__sync_count_parked(up);
    if (with_cookies && (rc = make_blob(up)) != 0)
        return rc;
    if (b->n == 0 && b->blob == NULL && b->pre_skipped == 0 && b->pre_foreign == 0)
        return 0;
    for (size_t i = 0; i < b->n; i++) {
        gh__sync_obj *g = b->ch[i].type == GH__SYNC_CH_GROUP
                              ? gh__sync_map_get(&up->m.by_key, b->ch[i].key)
                              : NULL;
        if (g != NULL)
            g->pending = 0;
    }
    /* the writer's time is not the upstream's silence: pause the watchdog */
    pthread_mutex_lock(&up->mu);
    int was_busy = up->busy;
    up->busy = 0;
    pthread_mutex_unlock(&up->mu);
    rc = up->s->writer.submit_wait(up->s->writer.ctx, up->actor, gh__sync_apply, b, err,
                                   sizeof(err));
    pthread_mutex_lock(&up->mu);
    up->busy = was_busy;
    up->progress_at = gh__sync_mono_s();
    pthread_mutex_unlock(&up->mu);
    if (rc != 0) {
        set_error(up, "writing the mirror failed: %s",
                  err[0] != '\0' ? err : (b->err[0] != '\0' ? b->err : gh_strerror(rc)));
        gh__sync_batch_reset(b);
        return rc;
    }
    for (size_t i = 0; i < b->nfx; i++)
        gh__sync_tomb_set(&up->m, b->fx[i].key, b->fx[i].time);
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
            gh__sync_session *ss = &up->sess[i];
            cur_cookie(ss, &d, &n);
            if (d != ss->cookie)
                set_cookie(ss, d, n);
        }
        if (up->mark_pending) {
            up->nmarks = marks_after(up, up->marks, &up->full_at);
            up->mark_pending = 0;
        }
        show_cookie(up);
    }
    /* a persist change that adds or removes entries: the counts move; they
     * are recounted once the searches are drained (not per change) */
    if (!up->sess[0].refreshing && !up->sess[1].refreshing &&
        b->res.added + b->res.disabled + b->res.purged > 0) {
        if (up->cfg->mode == GH__SYNC_MODE_PERSIST)
            up->recount_due = 1;
        else
            recount(up); /* a purge between poll runs */
    }
    gh__sync_batch_reset(b);
    publish_counts(up);
    return 0;
}

static int maybe_flush(gh__sync_upstream *up)
{
    /* groups wait for the end of a refresh: a nested group may come later */
    if (up->b.n < BATCH_FLUSH || up->sess[GH__SYNC_KIND_GROUP].refreshing)
        return 0;
    return flush(up, 0);
}

typedef struct diff_ctx {
    gh__sync_upstream *up;
    gh__sync_keylist gone;
    int rc;
} diff_ctx;

static void diff_one(const char *key, void *val, void *arg)
{
    diff_ctx *d = arg;
    gh__sync_obj *o = val;
    gh__sync_session *ss = &d->up->sess[o->kind];
    if (d->rc != 0 || !ss->refresh_present)
        return;
    if (gh__sync_map_get(&ss->present, key) == NULL &&
        gh__sync_map_get(&d->up->del_held, key) == NULL)
        d->rc = gh__sync_keylist_add(&d->gone, key);
}

static void held_one(const char *key, void *val, void *arg)
{
    diff_ctx *d = arg;
    (void)val;
    if (d->rc == 0 && gh__sync_map_get(&d->up->m.by_key, key) != NULL)
        d->rc = gh__sync_keylist_add(&d->gone, key);
}

/* Applies the deletions of the refresh that just ended (explicit ones held
 * back, and by difference for sessions that ended in the present phase),
 * unless they exceed max_delete_ratio of the mirror. Then commits the last
 * batch with the cookies. GH_EPERM when the guard stopped the run. */
static int finish_refresh(gh__sync_upstream *up)
{
    diff_ctx d = {up, {0}, 0};
    int rc;
    size_t mirror = up->m.nusers + up->m.ngroups;

    if (up->rekeyed > 0)
        GH_LOGI("sync %s: %d entries kept their ids: their stored keys were of an older "
                "version's scheme (%s) and are rewritten in place",
                up->cfg->name, up->rekeyed,
                up->ad ? "objectGUID in raw byte order" : "389-ds sync UUIDs");
    up->rekeyed = 0;

    gh__sync_map_each(&up->del_held, held_one, &d);
    gh__sync_map_each(&up->m.by_key, diff_one, &d);
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
        recount(up);
        set_error(up,
                  "refusing to delete %zu of %zu mirrored entries (max_delete_ratio %.2f): "
                  "check the upstream and its filters, then sync.run with force",
                  d.gone.n, mirror, up->cfg->max_delete_ratio);
        if (rc == 0)
            rc = GH_EPERM;
        goto done;
    }
    for (size_t i = 0; i < d.gone.n && rc == 0; i++)
        rc = gh__sync_queue_delete(up, d.gone.v[i]);
    for (int i = 0; i < 2; i++) {
        up->sess[i].refreshing = 0;
        gh__sync_map_clear(&up->sess[i].present, NULL);
    }
    gh__sync_map_clear(&up->del_held, NULL);
    if (rc == 0)
        rc = flush(up, 1);
    if (rc == 0) {
        up->halted = 0;
        up->force = 0;
    }
done:
    gh__sync_keylist_free(&d.gone);
    return rc;
}

/* ldap_sync callbacks                                                 */

/* libldap hands every message of a chain to the callbacks with the chain's
 * head; see the comment at the top. Returns 1 when msg must be ignored. */
static int chained(gh__sync_session *ss, LDAPMessage *msg)
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
static void abort_session(gh__sync_session *ss)
{
    gh__sync_upstream *up = ss->up;
    ss->failed = 1;
    pthread_mutex_lock(&up->mu);
    if (up->fd >= 0)
        shutdown(up->fd, SHUT_RDWR);
    pthread_mutex_unlock(&up->mu);
}

static int add_present(gh__sync_session *ss, const char *key)
{
    return gh__sync_map_put(&ss->present, key, (void *)1, NULL);
}

/* 389-ds's sync UUIDs are its nsUniqueId, not the entryUUID that search-poll
 * and docs/SYNC.md key on: entries carry both (the sync UUID learnt here),
 * deletions and present lists only the sync UUID (translated back). So one
 * entry has one key whatever the mode. In-memory; see detect_flavor for the
 * full refresh that fills it after a start. */
static int sync_key(gh__sync_upstream *up, LDAP *ld, LDAPMessage *msg, char *key, size_t keylen)
{
    struct berval **v;
    char ek[GH_KEY_MAX + 1];
    if (!up->ds389)
        return 0;
    v = msg != NULL ? ldap_get_values_len(ld, msg, "entryUUID") : NULL;
    if (v != NULL && v[0] != NULL &&
        gh__sync_key_text(v[0], GH__SYNC_KEY_TEXT, ek, sizeof(ek)) == 0) {
        ldap_value_free_len(v);
        if (strcmp(ek, key) != 0) {
            char *dup = strdup(ek);
            void *old = NULL;
            if (dup == NULL || gh__sync_map_put(&up->alias, key, dup, &old) != 0) {
                free(dup);
                return GH_ENOMEM;
            }
            free(old);
        }
        snprintf(key, keylen, "%s", ek);
        return 0;
    }
    ldap_value_free_len(v);
    const char *ek2 = gh__sync_map_get(&up->alias, key);
    if (ek2 != NULL)
        snprintf(key, keylen, "%s", ek2);
    return 0;
}

static int on_entry(ldap_sync_t *ls, LDAPMessage *msg, struct berval *uuid,
                    ldap_sync_refresh_t phase)
{
    gh__sync_session *ss = ls->ls_private;
    gh__sync_upstream *up = ss->up;
    char key[GH_KEY_MAX + 1];
    int rc = 0;

    ss->events++;
    progress(up);
    if (ss->failed || chained(ss, msg))
        return 0;
    if (gh__sync_key_text(uuid, GH__SYNC_KEY_UUID, key, sizeof(key)) != 0)
        return 0;
    if (sync_key(up, ls->ls_ld,
                 phase == LDAP_SYNC_CAPI_ADD || phase == LDAP_SYNC_CAPI_MODIFY ? msg : NULL, key,
                 sizeof(key)) != 0) {
        abort_session(ss);
        return GH_ENOMEM;
    }
    switch (phase) {
    case LDAP_SYNC_CAPI_PRESENT:
        rc = add_present(ss, key);
        break;
    case LDAP_SYNC_CAPI_ADD:
    case LDAP_SYNC_CAPI_MODIFY:
        if (ss->refreshing)
            rc = add_present(ss, key);
        if (rc == 0)
            rc = gh__sync_queue_entry(up, ss->kind, ls->ls_ld, msg, key);
        if (rc == 0)
            rc = maybe_flush(up);
        break;
    case LDAP_SYNC_CAPI_DELETE:
        if (ss->refreshing)
            rc = gh__sync_map_put(&up->del_held, key, (void *)1, NULL);
        else
            rc = gh__sync_queue_delete(up, key);
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
    gh__sync_session *ss = ls->ls_private;
    gh__sync_upstream *up = ss->up;
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
            if (gh__sync_key_text(&uuids[i], GH__SYNC_KEY_UUID, key, sizeof(key)) != 0)
                continue;
            sync_key(up, NULL, NULL, key, sizeof(key));
            if (phase == LDAP_SYNC_CAPI_PRESENTS_IDSET)
                rc = add_present(ss, key);
            else if (ss->refreshing)
                rc = gh__sync_map_put(&up->del_held, key, (void *)1, NULL);
            else
                rc = gh__sync_queue_delete(up, key);
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
    gh__sync_session *ss = ls->ls_private;
    (void)msg;
    ss->events++;
    ss->done = 1;
    if (refresh_deletes == -1)
        ss->refresh_required = 1;
    else if (refresh_deletes == 0)
        ss->refresh_present = 1;
    return 0;
}

static char **attr_list(const gh__sync_upstream *up, int kind)
{
    const struct gh_sync_upstream_cfg *cfg = up->cfg;
    const char *u[] = {cfg->login_attr,
                       cfg->uid_number_attr,
                       cfg->gid_number_attr,
                       cfg->display_name_attr,
                       cfg->mail_attr,
                       cfg->home_attr,
                       cfg->shell_attr,
                       cfg->gecos_attr,
                       cfg->key_attr,
                       up->ad ? "userAccountControl" : "",
                       up->ad ? "accountExpires" : "",
                       up->ad ? "objectSid" : "",
                       up->ad ? "primaryGroupID" : "",
                       up->ad ? "lockoutTime" : "",
                       up->ds389 ? "nsAccountLock" : "",
                       up->ds389 ? "entryUUID" : "",
                       up->ds389 ? "nsUniqueId" : "",
                       NULL};
    const char *g[] = {cfg->group_name_attr,
                       cfg->gid_number_attr,
                       cfg->description_attr,
                       cfg->member_attr,
                       cfg->key_attr,
                       up->ds389 ? "entryUUID" : "",
                       up->ds389 ? "nsUniqueId" : "",
                       up->ad ? "objectSid" : "",
                       up->ad ? "uSNChanged" : "",
                       NULL};
    const char **src = kind == GH__SYNC_KIND_USER ? u : g;
    size_t n = 0;
    char **v = ldap_memcalloc(20, sizeof(char *));
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

static void session_end(gh__sync_session *ss)
{
    if (ss->live) {
        ss->ls.ls_ld = NULL; /* the connection is the worker's */
        ldap_sync_destroy(&ss->ls, 0);
        ss->live = 0;
    }
    gh__sync_map_clear(&ss->present, NULL);
    ss->refreshing = ss->refresh_present = ss->done = ss->refresh_required = 0;
    ss->chain = ss->failed = 0;
    ss->chain_head = NULL;
}

static int session_begin(gh__sync_upstream *up, gh__sync_session *ss)
{
    const struct gh_sync_upstream_cfg *cfg = up->cfg;
    session_end(ss);
    ldap_sync_initialize(&ss->ls);
    ss->live = 1;
    ss->ls.ls_base = ldap_strdup(cfg->base_dn);
    ss->ls.ls_filter =
        ldap_strdup(ss->kind == GH__SYNC_KIND_USER ? cfg->user_filter : cfg->group_filter);
    ss->ls.ls_attrs = attr_list(up, ss->kind);
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
static int session_refresh(gh__sync_upstream *up, gh__sync_session *ss, int mode)
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
            gh__sync_map_clear(&up->del_held, NULL);
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

/* flavor = auto: Active Directory announces LDAP_CAP_ACTIVE_DIRECTORY_OID in
 * supportedCapabilities, 389-ds names itself in vendorName. */
static void detect_flavor(gh__sync_upstream *up)
{
    char *attrs[] = {"supportedCapabilities", "vendorName", NULL};
    LDAPMessage *res = NULL;
    struct berval **v;
    int ad = 0, ds = 0;

    up->ad = up->cfg->flavor == GH__SYNC_FLAVOR_AD;
    up->ds389 = up->cfg->flavor == GH__SYNC_FLAVOR_389;
    if (up->ds389 && up->alias.n == 0 && up->cfg->mode != GH__SYNC_MODE_SEARCH)
        for (int i = 0; i < 2; i++)
            set_cookie(&up->sess[i], NULL, 0);
    if (up->cfg->flavor != GH__SYNC_FLAVOR_AUTO)
        return;
    if (ldap_search_ext_s(up->ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL, NULL,
                          NULL, 1, &res) == LDAP_SUCCESS) {
        LDAPMessage *e = ldap_first_entry(up->ld, res);
        if (e != NULL && (v = ldap_get_values_len(up->ld, e, "supportedCapabilities")) != NULL) {
            for (size_t i = 0; v[i] != NULL; i++)
                if (v[i]->bv_len == 22 && memcmp(v[i]->bv_val, "1.2.840.113556.1.4.800", 22) == 0)
                    ad = 1;
            ldap_value_free_len(v);
        }
        if (e != NULL && (v = ldap_get_values_len(up->ld, e, "vendorName")) != NULL) {
            if (v[0] != NULL && memmem(v[0]->bv_val, v[0]->bv_len, "389 Project", 11) != NULL)
                ds = 1;
            ldap_value_free_len(v);
        }
    }
    ldap_msgfree(res);
    if (ad != up->ad || ds != up->ds389)
        GH_LOGI("sync %s: the upstream is %s", up->cfg->name,
                ad ? "Active Directory" : (ds ? "389 Directory Server" : "a generic LDAP server"));
    up->ad = ad;
    up->ds389 = ds;
    if (ds && up->alias.n == 0 && up->cfg->mode != GH__SYNC_MODE_SEARCH) {
        /* the sync UUID -> entryUUID map is not stored: learn it again */
        for (int i = 0; i < 2; i++)
            set_cookie(&up->sess[i], NULL, 0);
    }
    if (ad && up->cfg->mode != GH__SYNC_MODE_SEARCH)
        set_error(up, "the upstream is Active Directory, which has no syncrepl: set flavor = ad "
                      "(docs/SYNC.md)");
    else if (ad && strcasecmp(up->cfg->key_attr, "objectGUID") != 0)
        set_error(up, "the upstream is Active Directory: set flavor = ad, or key_attr = "
                      "objectGUID (docs/SYNC.md)");
}

static int connect_upstream(gh__sync_upstream *up)
{
    char err[GH_ERRMSG_MAX];
    const struct gh_sync_upstream_cfg *cfg = up->cfg;
    LDAP *ld = NULL;
    int fd = -1;

    set_state(up, "connecting");
    set_busy(up, 1);
    int rc =
        gh__sync_ldap_open(cfg, cfg->timeout, cfg->bind_dn[0] != '\0' ? cfg->bind_dn : NULL,
                           cfg->bind_password, strlen(cfg->bind_password), &ld, err, sizeof(err));
    set_busy(up, 0);
    if (rc != LDAP_SUCCESS) {
        set_error(up, "%s: %s", cfg->uri, err);
        return GH_EUNAVAIL;
    }
    ldap_get_option(ld, LDAP_OPT_DESC, &fd);
    up->ld = ld;
    detect_flavor(up);
    pthread_mutex_lock(&up->mu);
    up->fd = fd;
    up->st.connected = 1;
    pthread_mutex_unlock(&up->mu);
    return 0;
}

static void disconnect(gh__sync_upstream *up)
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

static void run_begins(gh__sync_upstream *up)
{
    memset(&up->run, 0, sizeof(up->run));
    gh__sync_map_clear(&up->del_held, NULL);
    pthread_mutex_lock(&up->mu);
    up->st.last_attempt = gh__sync_wall_s();
    pthread_mutex_unlock(&up->mu);
}

static void run_ok(gh__sync_upstream *up)
{
    recount(up); /* before runs moves: a reader of runs sees the counts */
    pthread_mutex_lock(&up->mu);
    up->st.last_success = gh__sync_wall_s();
    up->st.current_at = gh__sync_mono_s();
    up->st.runs++;
    up->backoff = 1; /* a failure after a good run retries quickly again */
    up->st.last_run = up->run;
    if (up->run.skipped == 0)
        up->st.last_error[0] = '\0'; /* a clean run: nothing left to report */
    pthread_mutex_unlock(&up->mu);
    publish_counts(up);
}

static int run_syncrepl_poll(gh__sync_upstream *up)
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

static int purge_due(gh__sync_upstream *up);

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

static int run_syncrepl_persist(gh__sync_upstream *up)
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
        if (gh__sync_mono_s() >= up->next_purge && (rc = purge_due(up)) != 0)
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
                gh__sync_session *ss = &up->sess[i];
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
            up->st.last_success = gh__sync_wall_s();
            up->st.last_run = up->run;
            pthread_mutex_unlock(&up->mu);
        }
        pthread_mutex_lock(&up->mu);
        up->st.current_at = gh__sync_mono_s();
        pthread_mutex_unlock(&up->mu);
        if (any)
            continue;
        if (up->recount_due) {
            up->recount_due = 0;
            recount(up);
        }
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
static int paged_search(gh__sync_upstream *up, int kind, const char *filter, int diff)
{
    const struct gh_sync_upstream_cfg *cfg = up->cfg;
    gh__sync_session *ss = &up->sess[kind];
    struct berval cookie = {0, NULL};
    char **attrs = attr_list(up, kind);
    int lrc = LDAP_SUCCESS, grc = 0;
    /* objectGUID exists only in AD (and Samba): always AD's text form */
    int form = strcasecmp(cfg->key_attr, "objectGUID") == 0 ? GH__SYNC_KEY_GUID : GH__SYNC_KEY_TEXT;

    if (attrs == NULL)
        return GH_ENOMEM;
    ss->refreshing = 1;
    ss->refresh_present = diff;
    do {
        LDAPControl *page = NULL, *ctrls[2] = {NULL, NULL}, **rctrls = NULL;
        LDAPMessage *res = NULL;
        int err = 0;
        lrc = ldap_create_page_control(up->ld, (ber_int_t)cfg->page_size, &cookie, 0, &page);
        if (lrc != LDAP_SUCCESS)
            break;
        ctrls[0] = page;
        set_busy(up, 1);
        lrc = ldap_search_ext_s(up->ld, cfg->base_dn, cfg->scope, filter, attrs, 0, ctrls, NULL,
                                NULL, 0, &res);
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
            int krc = kv != NULL && kv[0] != NULL ? gh__sync_key_text(kv[0], form, key, sizeof(key))
                                                  : GH_ENOTFOUND;
            ldap_value_free_len(kv);
            if (krc != 0) {
                char *dn = ldap_get_dn(up->ld, e);
                gh__sync_entry_skipped(up, dn != NULL ? dn : "?", "no usable %s", cfg->key_attr);
                ldap_memfree(dn);
                continue;
            }
            grc = add_present(ss, key);
            if (grc == 0)
                grc = gh__sync_queue_entry(up, kind, up->ld, e, key);
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

/* First value of attr in the single entry of a base search of dn ("" for
 * the RootDSE), as text (form GH__SYNC_KEY_TEXT keeps it; GH__SYNC_KEY_GUID for a
 * binary GUID). */
static int base_value(gh__sync_upstream *up, const char *dn, const char *attr, int form, char *out,
                      size_t outlen)
{
    char *attrs[2] = {(char *)attr, NULL};
    LDAPMessage *res = NULL, *e;
    struct berval **v = NULL;
    int rc = GH_ENOTFOUND;

    out[0] = '\0';
    if (ldap_search_ext_s(up->ld, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL, NULL,
                          NULL, 1, &res) == LDAP_SUCCESS &&
        (e = ldap_first_entry(up->ld, res)) != NULL &&
        (v = ldap_get_values_len(up->ld, e, attr)) != NULL && v[0] != NULL) {
        if (form == GH__SYNC_KEY_GUID)
            rc = gh__sync_key_text(v[0], GH__SYNC_KEY_GUID, out, outlen);
        else if (v[0]->bv_len < outlen) {
            memcpy(out, v[0]->bv_val, v[0]->bv_len);
            out[v[0]->bv_len] = '\0';
            rc = 0;
        } else {
            rc = GH_ETOOBIG;
        }
    }
    ldap_value_free_len(v);
    ldap_msgfree(res);
    return rc;
}

/* Reads the DC's position before this run searches: its highestCommittedUSN,
 * which DC it is (dsServiceName) and its database's identity (invocationId
 * of that object: a restore or another DC changes it). */
static int ad_position(gh__sync_upstream *up, struct gh__sync_admark *m, char *nc, size_t nclen)
{
    char usn[32];
    memset(m, 0, sizeof(*m));
    if (base_value(up, "", "highestCommittedUSN", GH__SYNC_KEY_TEXT, usn, sizeof(usn)) != 0 ||
        base_value(up, "", "dsServiceName", GH__SYNC_KEY_TEXT, m->dc, sizeof(m->dc)) != 0 ||
        base_value(up, m->dc, "invocationId", GH__SYNC_KEY_GUID, m->inv, sizeof(m->inv)) != 0)
        return GH_ENOTFOUND;
    m->usn = strtoull(usn, NULL, 10);
    if (base_value(up, "", "defaultNamingContext", GH__SYNC_KEY_TEXT, nc, nclen) != 0)
        snprintf(nc, nclen, "%s", up->cfg->base_dn);
    return m->usn > 0 ? 0 : GH_ENOTFOUND;
}

/* Objects deleted since the mark: AD keeps them as tombstones (isDeleted,
 * objectGUID kept) in Deleted Objects, visible with the Show Deleted control.
 * Paged like the main searches: Windows refuses an unpaged search of more
 * than MaxPageSize (1,000) entries. Their keys go to del_held;
 * finish_refresh applies those it mirrors. */
static int ad_deleted(gh__sync_upstream *up, const char *nc, uint64_t from)
{
    char filter[96];
    char *attrs[] = {"objectGUID", NULL};
    struct berval empty = {0, NULL}, cookie = {0, NULL};
    LDAPControl show = {AD_SHOW_DELETED_OID, empty, 1};
    int lrc = LDAP_SUCCESS, rc = 0;

    snprintf(filter, sizeof(filter), "(&(isDeleted=TRUE)(uSNChanged>=%llu))",
             (unsigned long long)from);
    do {
        LDAPControl *page = NULL, *ctrls[3] = {&show, NULL, NULL}, **rctrls = NULL;
        LDAPMessage *res = NULL;
        int err = 0;
        lrc = ldap_create_page_control(up->ld, (ber_int_t)up->cfg->page_size, &cookie, 0, &page);
        if (lrc != LDAP_SUCCESS)
            break;
        ctrls[1] = page;
        set_busy(up, 1);
        lrc = ldap_search_ext_s(up->ld, nc, LDAP_SCOPE_SUBTREE, filter, attrs, 0, ctrls, NULL, NULL,
                                0, &res);
        set_busy(up, 0);
        ldap_control_free(page);
        if (lrc != LDAP_SUCCESS) {
            ldap_msgfree(res);
            break;
        }
        for (LDAPMessage *e = ldap_first_entry(up->ld, res); e != NULL && rc == 0;
             e = ldap_next_entry(up->ld, e)) {
            char key[GH_KEY_MAX + 1];
            struct berval **kv = ldap_get_values_len(up->ld, e, "objectGUID");
            if (kv != NULL && kv[0] != NULL &&
                gh__sync_key_text(kv[0], GH__SYNC_KEY_GUID, key, sizeof(key)) == 0)
                rc = gh__sync_map_put(&up->del_held, key, (void *)1, NULL);
            ldap_value_free_len(kv);
            progress(up);
        }
        ber_memfree(cookie.bv_val);
        cookie.bv_val = NULL;
        cookie.bv_len = 0;
        if (rc == 0) {
            lrc = ldap_parse_result(up->ld, res, &err, NULL, NULL, NULL, &rctrls, 0);
            if (lrc == LDAP_SUCCESS)
                lrc = err;
            LDAPControl *pr = lrc == LDAP_SUCCESS && rctrls != NULL
                                  ? ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, rctrls, NULL)
                                  : NULL;
            ber_int_t count;
            if (pr != NULL)
                ldap_parse_pageresponse_control(up->ld, pr, &count, &cookie);
            ldap_controls_free(rctrls);
        }
        ldap_msgfree(res);
    } while (rc == 0 && lrc == LDAP_SUCCESS && cookie.bv_val != NULL && cookie.bv_len > 0);
    ber_memfree(cookie.bv_val);
    if (rc != 0)
        return rc;
    if (lrc != LDAP_SUCCESS) {
        set_error(up, "deleted objects since USN %llu: %s", (unsigned long long)from,
                  ldap_err2string(lrc));
        return GH_EUNAVAIL;
    }
    return 0;
}

static int run_search_poll(gh__sync_upstream *up)
{
    const struct gh_sync_upstream_cfg *cfg = up->cfg;
    char nc[GH_DN_MAX + 1] = "";
    int rc, incremental = 0;
    uint64_t from = 0;

    up->mark_pending = 0;
    up->hold_usn = 0;
    up->hold_nousn = 0;
    up->rekeyed = 0;
    if (up->ad) {
        /* the lockout duration says whether a lockoutTime still locks */
        char dur[32];
        char ncb[GH_DN_MAX + 1];
        if (base_value(up, "", "defaultNamingContext", GH__SYNC_KEY_TEXT, ncb, sizeof(ncb)) != 0)
            snprintf(ncb, sizeof(ncb), "%s", cfg->base_dn);
        up->ad_lockout_duration =
            base_value(up, ncb, "lockoutDuration", GH__SYNC_KEY_TEXT, dur, sizeof(dur)) == 0
                ? strtoll(dur, NULL, 10)
                : -1800ll * 10000000; /* AD's default: 30 minutes */
        /* expiry times read by earlier runs that have passed since */
        if ((rc = gh__sync_queue_expired(up)) != 0)
            return rc;
    }
    if (up->ad && ad_position(up, &up->mark_next, nc, sizeof(nc)) == 0) {
        int64_t now = gh__sync_wall_s();
        /* this DC's own mark: its database (invocationId) unchanged, its USN
         * not gone back, and a full run recently enough */
        const struct gh__sync_admark *mk = mark_find(up, up->mark_next.dc);
        int same =
            mk != NULL && strcmp(mk->inv, up->mark_next.inv) == 0 && up->mark_next.usn >= mk->usn;
        incremental = up->primary_known && same && cfg->full_interval > 0 &&
                      now - up->full_at < (int64_t)cfg->full_interval;
        from = incremental ? mk->usn : 0;
        up->full_at_next = incremental ? up->full_at : now;
        up->mark_next.seen = now;
        up->mark_pending = 1;
        if (!incremental && up->nmarks > 0)
            GH_LOGI("sync %s: full run (%s)", cfg->name,
                    mk == NULL ? "a domain controller without a mark"
                    : !same    ? "a restored database: new invocationId or a USN gone back"
                    : !up->primary_known ? "the first run since the start"
                                         : "full_interval");
    }
    for (int i = 0; i < 2; i++) {
        const char *base = i == GH__SYNC_KIND_USER ? cfg->user_filter : cfg->group_filter;
        char *filter = NULL;
        gh__sync_map_clear(&up->sess[i].present, NULL);
        if (incremental &&
            asprintf(&filter, "(&%s(uSNChanged>=%llu))", base, (unsigned long long)from + 1) < 0) {
            up->mark_pending = 0;
            return GH_ENOMEM;
        }
        rc = paged_search(up, i, filter != NULL ? filter : base, !incremental);
        free(filter);
        if (rc != 0) {
            up->mark_pending = 0;
            return rc;
        }
    }
    if (incremental && (rc = ad_deleted(up, nc, from + 1)) != 0) {
        up->mark_pending = 0;
        return rc;
    }
    if (up->mark_pending && (up->hold_nousn || up->hold_usn > 0)) {
        /* an entry to read again (a group whose ranges failed): the mark
         * stays below it, so the next run on this DC reads it again */
        if (up->hold_nousn || up->hold_usn - 1 <= from)
            up->mark_next.usn = incremental ? from : 0; /* 0: no mark, a full run */
        else if (up->hold_usn - 1 < up->mark_next.usn)
            up->mark_next.usn = up->hold_usn - 1;
    }
    rc = finish_refresh(up);
    up->mark_pending = 0;
    if (rc == 0 && up->ad && !incremental)
        up->primary_known = 1;
    if (rc == 0)
        run_ok(up);
    return rc;
}

typedef struct purge_ctx {
    gh__sync_upstream *up;
    int64_t now;
    int rc;
} purge_ctx;

static void purge_one(const char *key, void *val, void *arg)
{
    purge_ctx *p = arg;
    if (p->rc == 0 && *(int64_t *)val + p->up->cfg->delete_grace <= p->now)
        p->rc = gh__sync_batch_add(&p->up->b, GH__SYNC_CH_PURGE, key) != NULL ? 0 : GH_ENOMEM;
}

/* Tombstones past delete_grace are deleted for good. */
static int purge_due(gh__sync_upstream *up)
{
    purge_ctx p = {up, gh__sync_wall_s(), 0};
    up->next_purge = gh__sync_mono_s() + (up->cfg->interval < 60 ? up->cfg->interval : 60);
    if (up->b.n != 0)
        return 0;
    gh__sync_map_each(&up->m.tomb, purge_one, &p);
    if (p.rc != 0) {
        gh__sync_batch_reset(&up->b);
        return p.rc;
    }
    return up->b.n > 0 ? flush(up, 0) : 0;
}

void *gh__sync_worker(void *arg)
{
    gh__sync_upstream *up = arg;
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
            set_state(up, up->cfg->mode == GH__SYNC_MODE_PERSIST ? "refreshing" : "running");
            switch (up->cfg->mode) {
            case GH__SYNC_MODE_PERSIST:
                rc = run_syncrepl_persist(up);
                break;
            case GH__SYNC_MODE_POLL:
                rc = run_syncrepl_poll(up);
                break;
            default:
                rc = run_search_poll(up);
                break;
            }
        }
        disconnect(up);
        gh__sync_batch_reset(&up->b);
        if (stopping(up))
            break;
        if (rc == 0) {
            if (up->cfg->mode == GH__SYNC_MODE_PERSIST) {
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
        unsigned delay = up->backoff;
        if (up->cfg->mode != GH__SYNC_MODE_PERSIST && delay > up->cfg->interval)
            delay = up->cfg->interval;
        if (wait_for(up, delay))
            break;
        if (up->backoff < BACKOFF_MAX)
            up->backoff *= 2;
    }
    disconnect(up);
    set_state(up, "stopped");
    return NULL;
}

/* Frees what a session holds (the worker has stopped). */
void gh__sync_session_release(gh__sync_session *ss)
{
    session_end(ss);
    set_cookie(ss, NULL, 0);
}
