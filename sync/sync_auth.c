/*
 * sync_auth.c: authentication of upstream users by an LDAP simple bind, on a
 * small pool of dedicated threads (never the loop, never a sync worker, whose
 * persistent search must not wait behind a login).
 *
 * The one thing to know: the offline verifier is a copy of an old password,
 * so the result of a job says exactly why a bind did not succeed, and only
 * "a bind was sent and the network failed" (offline_ok) lets auth.c use it.
 * A job that could not even be attempted (the caps below, or a wait in the
 * queue past bind_timeout) is GH_ERATE; an explicit refusal by the upstream
 * deletes the offline verifier (compare-and-set) before the caller hears it.
 *
 * Admission runs on the loop thread when a job is submitted: the binds in
 * flight (queued or running) are capped per upstream (max_binds), per user
 * (max_binds_per_login) and per client (max_binds_per_peer), so no client can
 * hold every bind thread, and no login can cost the upstream more than a
 * couple of binds at once (an upstream's own lockout, e.g. AD's, counts
 * every bind). The counts live in maps owned by the loop thread; the threads
 * only see the queue. A job carries copies of the DN and the password; the
 * password copy is wiped as soon as the bind returns. Each bind runs with
 * bind_timeout as both the connect and the operation timeout.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "schema/log.h"
#include "sync/sync-int.h"

typedef struct job {
    struct job *next;
    gh__sync_upstream *up;
    char *dn;
    char *pw;
    size_t pwlen;
    gh_sync_auth_cb cb;
    void *arg;
    int rc;
    int offline_ok;
    int attempted;
    uint64_t deadline_ms;
    uint64_t user_id;
    char upstream[GH_NAME_MAX + 1]; /* copies: the clear may outlive up */
    char actor[GH_NAME_MAX + 8];
    char verifier[GH_VERIFIER_MAX + 1]; /* the offline verifier the caller saw */
    char login_key[GH_NAME_MAX * 2 + 4];
    char peer_key[96];
} job;

struct gh__sync_auth {
    uv_loop_t *loop;
    gh_sync_writer writer;
    uv_async_t async;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *qhead, *qtail;
    job *dhead, *dtail;
    pthread_t *th;
    unsigned nth;
    int stop;
    /* loop thread only: binds in flight per login and per peer (uintptr_t) */
    gh__sync_map by_login, by_peer;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void job_free(job *j)
{
    if (j->pw != NULL) {
        sodium_memzero(j->pw, j->pwlen);
        free(j->pw);
    }
    sodium_memzero(j->verifier, sizeof(j->verifier));
    free(j->dn);
    free(j);
}

/* An LDAP result of a bind in the callback's terms. Network level (the only
 * failures that allow the offline verifier): the connection could not be
 * made or was lost, or the bind timed out. TLS failures surface as
 * LDAP_CONNECT_ERROR and count as network (an attacker who can break TLS can
 * as well drop the packets). */
static int map_bind_rc(int rc, int *offline_ok)
{
    *offline_ok = 0;
    switch (rc) {
    case LDAP_SUCCESS:
        return 0;
    case LDAP_SERVER_DOWN:
    case LDAP_TIMEOUT:
    case LDAP_CONNECT_ERROR:
        *offline_ok = 1;
        return GH_EUNAVAIL;
    case LDAP_INVALID_CREDENTIALS:
    case LDAP_INAPPROPRIATE_AUTH:
    case LDAP_UNWILLING_TO_PERFORM: /* locked by a password policy */
    case LDAP_NO_SUCH_OBJECT:
    case LDAP_INSUFFICIENT_ACCESS:
    case LDAP_CONSTRAINT_VIOLATION:
        return GH_ECREDS;
    default:
        /* busy, unavailable, other, local errors: the upstream did not say
         * no, but nothing proves it is unreachable either */
        return GH_EUNAVAIL;
    }
}

static void deliver(gh__sync_auth *a, job *j)
{
    pthread_mutex_lock(&a->mu);
    j->next = NULL;
    if (a->dtail != NULL)
        a->dtail->next = j;
    else
        a->dhead = j;
    a->dtail = j;
    pthread_mutex_unlock(&a->mu);
    uv_async_send(&a->async);
}

static void *auth_thread(void *arg)
{
    gh__sync_auth *a = arg;
    for (;;) {
        job *j;
        pthread_mutex_lock(&a->mu);
        while (a->qhead == NULL && !a->stop)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->qhead == NULL) {
            pthread_mutex_unlock(&a->mu);
            break;
        }
        j = a->qhead;
        a->qhead = j->next;
        if (a->qhead == NULL)
            a->qtail = NULL;
        int stopping = a->stop;
        pthread_mutex_unlock(&a->mu);

        if (stopping) {
            j->rc = GH_EUNAVAIL;
        } else if (now_ms() > j->deadline_ms) {
            j->rc = GH_ERATE; /* queued too long: never attempted */
        } else {
            const struct gh_sync_upstream_cfg *cfg = j->up->cfg;
            LDAP *ld = NULL;
            char err[GH_ERRMSG_MAX];
            int rc = gh__sync_ldap_open(cfg, cfg->bind_timeout, j->dn, j->pw, j->pwlen, &ld, err,
                                        sizeof(err));
            j->attempted = 1;
            j->rc = map_bind_rc(rc, &j->offline_ok);
            if (rc != LDAP_SUCCESS)
                GH_LOGD("upstream %s: bind as %s: %s", cfg->name, j->dn, err);
            if (ld != NULL)
                ldap_unbind_ext(ld, NULL, NULL);
        }
        sodium_memzero(j->pw, j->pwlen);
        deliver(a, j);
    }
    return NULL;
}

/* ---- in-flight counts (loop thread) ---- */

static unsigned count_get(gh__sync_map *m, const char *key)
{
    return (unsigned)(uintptr_t)gh__sync_map_get(m, key);
}

static int count_add(gh__sync_map *m, const char *key, int delta)
{
    unsigned n = count_get(m, key);
    if (delta < 0 && n <= 1) {
        gh__sync_map_del(m, key);
        return 0;
    }
    return gh__sync_map_put(m, key, (void *)(uintptr_t)(n + (unsigned)delta), NULL);
}

static void release(gh__sync_auth *a, job *j)
{
    count_add(&a->by_login, j->login_key, -1);
    count_add(&a->by_peer, j->peer_key, -1);
    if (j->up->binds.in_flight > 0)
        j->up->binds.in_flight--;
}

/* ---- the verifier of a refused password goes (writer thread) ---- */

static int clear_apply(gh_txn *txn, void *arg)
{
    const job *j = arg;
    gh_user u;
    int rc = gh_store_user_get_by_id(txn, j->user_id, &u);
    if (rc == GH_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    /* only the verifier the refused login was checked against: a login that
     * succeeded meanwhile stored a verifier of the current password */
    if (strcmp(u.origin, j->upstream) != 0 ||
        sodium_memcmp(u.verifier, j->verifier, sizeof(u.verifier)) != 0 || u.verifier[0] == '\0')
        return 0;
    memset(u.verifier, 0, sizeof(u.verifier));
    u.verifier_time = 0;
    return gh_store_user_update(txn, &u, GH_UF_VERIFIER);
}

static void clear_done(void *cbarg, int rc, const char *err)
{
    job *j = cbarg;
    if (rc != 0)
        GH_LOGW("upstream %s: deleting the offline verifier of a refused login failed: %s",
                j->upstream, err);
    j->cb(j->arg, GH_ECREDS, 0);
    job_free(j);
}

static void finish(gh__sync_auth *a, job *j)
{
    gh__sync_bindstats *bs = &j->up->binds;
    release(a, j);
    if (j->attempted)
        bs->attempted++;
    switch (j->rc) {
    case 0:
        bs->accepted++;
        break;
    case GH_ECREDS:
        bs->refused++;
        break;
    case GH_ERATE:
        bs->rate_limited++;
        break;
    default:
        if (j->offline_ok)
            bs->network_errors++;
        else
            bs->errors++;
        break;
    }
    if (j->rc == GH_ECREDS && j->verifier[0] != '\0' && !a->stop) {
        if (a->writer.submit(a->writer.ctx, j->actor, clear_apply, j, clear_done, j) == 0) {
            bs->cleared++;
            return; /* clear_done answers; j->up may be gone by then */
        }
    }
    j->cb(j->arg, j->rc, j->offline_ok);
    job_free(j);
}

static void on_async(uv_async_t *h)
{
    gh__sync_auth *a = h->data;
    job *list;
    pthread_mutex_lock(&a->mu);
    list = a->dhead;
    a->dhead = a->dtail = NULL;
    pthread_mutex_unlock(&a->mu);
    while (list != NULL) {
        job *next = list->next;
        finish(a, list);
        list = next;
    }
}

int gh__sync_auth_start(gh__sync_auth **out, uv_loop_t *loop, const gh_sync_writer *writer,
                        unsigned nthreads)
{
    gh__sync_auth *a = calloc(1, sizeof(*a));
    *out = NULL;
    if (a == NULL)
        return GH_ENOMEM;
    a->loop = loop;
    a->writer = *writer;
    a->th = calloc(nthreads, sizeof(*a->th));
    if (a->th == NULL) {
        free(a);
        return GH_ENOMEM;
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    if (uv_async_init(loop, &a->async, on_async) != 0) {
        free(a->th);
        free(a);
        return GH_EINTERNAL;
    }
    a->async.data = a;
    for (unsigned i = 0; i < nthreads; i++) {
        if (pthread_create(&a->th[i], NULL, auth_thread, a) != 0)
            break;
        a->nth++;
    }
    *out = a;
    if (a->nth == 0) {
        gh__sync_auth_stop(a);
        *out = NULL;
        return GH_EINTERNAL;
    }
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    gh__sync_auth *a = h->data;
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    gh__sync_map_clear(&a->by_login, NULL);
    gh__sync_map_clear(&a->by_peer, NULL);
    free(a->th);
    free(a);
}

void gh__sync_auth_stop(gh__sync_auth *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    for (unsigned i = 0; i < a->nth; i++)
        pthread_join(a->th[i], NULL);
    /* the threads drained the queue with GH_EUNAVAIL; answer everyone now */
    on_async(&a->async);
    uv_close((uv_handle_t *)&a->async, on_closed);
}

int gh__sync_auth_submit(gh__sync_auth *a, gh__sync_upstream *up, const gh_user *u,
                         const char *peer, const char *password, gh_sync_auth_cb cb, void *arg)
{
    const struct gh_sync_upstream_cfg *cfg = up->cfg;
    job *j;
    int rc = GH_ENOMEM;

    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return GH_ENOMEM;
    j->up = up;
    j->cb = cb;
    j->arg = arg;
    j->user_id = u->id;
    snprintf(j->upstream, sizeof(j->upstream), "%s", cfg->name);
    snprintf(j->actor, sizeof(j->actor), "%s", up->actor);
    snprintf(j->verifier, sizeof(j->verifier), "%s", u->verifier);
    snprintf(j->login_key, sizeof(j->login_key), "%s/%s", cfg->name, u->name);
    snprintf(j->peer_key, sizeof(j->peer_key), "%s", peer != NULL ? peer : "");
    j->pwlen = strlen(password);
    j->dn = strdup(u->origin_dn);
    j->pw = malloc(j->pwlen + 1);
    if (j->dn == NULL || j->pw == NULL)
        goto fail;
    memcpy(j->pw, password, j->pwlen + 1);
    j->deadline_ms = now_ms() + (uint64_t)cfg->bind_timeout * 1000;

    if (a->stop) {
        rc = GH_EUNAVAIL;
        goto fail;
    }
    if (up->binds.in_flight >= cfg->max_binds ||
        count_get(&a->by_login, j->login_key) >= cfg->max_binds_per_login ||
        count_get(&a->by_peer, j->peer_key) >= cfg->max_binds_per_peer) {
        up->binds.rate_limited++;
        rc = GH_ERATE;
        goto fail;
    }
    if (count_add(&a->by_login, j->login_key, 1) != 0)
        goto fail;
    if (count_add(&a->by_peer, j->peer_key, 1) != 0) {
        count_add(&a->by_login, j->login_key, -1);
        goto fail;
    }
    up->binds.in_flight++;

    pthread_mutex_lock(&a->mu);
    if (a->qtail != NULL)
        a->qtail->next = j;
    else
        a->qhead = j;
    a->qtail = j;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return 0;
fail:
    job_free(j);
    return rc;
}
