/*
 * sync_auth.c: authentication of upstream users by an LDAP simple bind, on a
 * small pool of dedicated threads (never the loop, never a sync worker, whose
 * persistent search must not wait behind a login).
 *
 * A job carries copies of the DN and the password; the password copy is wiped
 * as soon as the bind returns. Each bind runs with bind_timeout as both the
 * connect timeout (LDAP_OPT_NETWORK_TIMEOUT) and the operation timeout
 * (LDAP_OPT_TIMEOUT), and a job that waited in the queue past that same
 * deadline is answered GH_EUNAVAIL without trying, so an unreachable upstream
 * costs a login at most about bind_timeout. Results go back to the loop
 * through a queue and uv_async_send; the callback runs on the loop thread.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "schema/log.h"
#include "server/sync-int.h"

#define AUTH_QUEUE_MAX 1024

typedef struct job {
    struct job *next;
    const struct gh_upstream_cfg *cfg;
    char *dn;
    char *pw;
    size_t pwlen;
    gh_sync_auth_cb cb;
    void *arg;
    int rc;
    uint64_t deadline_ms;
} job;

struct gh__auth {
    uv_loop_t *loop;
    uv_async_t async;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *qhead, *qtail;
    size_t qlen;
    job *dhead, *dtail;
    pthread_t *th;
    unsigned nth;
    int stop;
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
    free(j->dn);
    free(j);
}

/* An LDAP result of a bind, in the auth callback's terms: the upstream said
 * no (GH_ECREDS), or could not be asked (GH_EUNAVAIL). */
static int map_bind_rc(int rc)
{
    switch (rc) {
    case LDAP_SUCCESS:
        return 0;
    case LDAP_SERVER_DOWN:
    case LDAP_TIMEOUT:
    case LDAP_CONNECT_ERROR:
    case LDAP_UNAVAILABLE:
    case LDAP_BUSY:
    case LDAP_TIMELIMIT_EXCEEDED:
    case LDAP_ADMINLIMIT_EXCEEDED:
    case LDAP_OTHER:
    case LDAP_LOCAL_ERROR:
    case LDAP_NO_MEMORY:
    case LDAP_ENCODING_ERROR:
    case LDAP_DECODING_ERROR:
        return GH_EUNAVAIL;
    default:
        /* invalidCredentials, unwillingToPerform (locked by a password
         * policy), noSuchObject, inappropriateAuthentication, ... */
        return rc > 0 ? GH_ECREDS : GH_EUNAVAIL;
    }
}

static void deliver(gh__auth *a, job *j)
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
    gh__auth *a = arg;
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
        a->qlen--;
        int stopping = a->stop;
        pthread_mutex_unlock(&a->mu);

        if (stopping || now_ms() > j->deadline_ms) {
            j->rc = GH_EUNAVAIL;
        } else {
            LDAP *ld = NULL;
            char err[GH_ERRMSG_MAX];
            int rc = gh__ldap_open(j->cfg, j->cfg->bind_timeout, j->dn, j->pw, j->pwlen, &ld, err,
                                   sizeof(err));
            j->rc = map_bind_rc(rc);
            if (rc != LDAP_SUCCESS)
                GH_LOGD("upstream %s: bind as %s: %s", j->cfg->name, j->dn, err);
            if (ld != NULL)
                ldap_unbind_ext(ld, NULL, NULL);
        }
        sodium_memzero(j->pw, j->pwlen);
        deliver(a, j);
    }
    return NULL;
}

static void on_async(uv_async_t *h)
{
    gh__auth *a = h->data;
    job *list;
    pthread_mutex_lock(&a->mu);
    list = a->dhead;
    a->dhead = a->dtail = NULL;
    pthread_mutex_unlock(&a->mu);
    while (list != NULL) {
        job *next = list->next;
        list->cb(list->arg, list->rc);
        job_free(list);
        list = next;
    }
}

int gh__auth_start(gh__auth **out, uv_loop_t *loop, unsigned nthreads)
{
    gh__auth *a = calloc(1, sizeof(*a));
    *out = NULL;
    if (a == NULL)
        return GH_ENOMEM;
    a->loop = loop;
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
        gh__auth_stop(a);
        *out = NULL;
        return GH_EINTERNAL;
    }
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    gh__auth *a = h->data;
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a->th);
    free(a);
}

void gh__auth_stop(gh__auth *a)
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

int gh__auth_submit(gh__auth *a, const struct gh_upstream_cfg *cfg, const char *dn,
                    const char *password, gh_sync_auth_cb cb, void *arg)
{
    job *j;
    int rc = GH_ENOMEM;

    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return GH_ENOMEM;
    j->cfg = cfg;
    j->cb = cb;
    j->arg = arg;
    j->pwlen = strlen(password);
    j->dn = strdup(dn);
    j->pw = malloc(j->pwlen + 1);
    if (j->dn == NULL || j->pw == NULL)
        goto fail;
    memcpy(j->pw, password, j->pwlen + 1);
    j->deadline_ms = now_ms() + (uint64_t)cfg->bind_timeout * 1000;

    pthread_mutex_lock(&a->mu);
    if (a->stop || a->qlen >= AUTH_QUEUE_MAX) {
        pthread_mutex_unlock(&a->mu);
        rc = GH_EUNAVAIL;
        goto fail;
    }
    if (a->qtail != NULL)
        a->qtail->next = j;
    else
        a->qhead = j;
    a->qtail = j;
    a->qlen++;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return 0;
fail:
    job_free(j);
    return rc;
}
