/*
 * ops_passwd.c: passwd.change, a user changing their own password with the
 * old one (what pam_gatehouse's password stack calls).
 *
 * The one thing to know: this is a public operation that verifies a
 * password, so it is an oracle exactly like auth and must cost what auth
 * costs: the attempt is admitted by auth's lockout (gh__lockout_admit, keyed
 * on the client a trusted front-end names) and settled with its outcome, an
 * unknown user is verified against the dummy verifier, and
 * every Argon2 runs on the pool (verify the old password here, then hash the
 * new one with gh__hash_password), never on the loop. The write re-checks
 * inside the write txn that the verifier is still the one verified, so two
 * racing changes cannot both win.
 *
 * Steps: handler (lockout, lookups, length) -> verify job on the pool ->
 * hash job (gh__hash_password) -> writer (store the verifier, revoke the
 * user's tokens) -> reply.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <sodium.h>

#include "schema/log.h"
#include "server/server.h"

typedef struct pwjob {
    uv_work_t work;
    gh_server *srv;
    gh_pending *p;
    char name[GH_NAME_MAX + 1];
    char peer[GH_CLIENT_KEY_MAX]; /* the lockout's client key */
    gh_admission adm;
    int success;
    char actor[96];
    uint64_t user_id; /* 0: unknown user (verified against the dummy) */
    gh_user_state state;
    char *old_pw; /* sodium_malloc'd */
    size_t old_len;
    char *new_pw; /* sodium_malloc'd */
    size_t new_len;
    int verify_ok;
    char verifier[GH_VERIFIER_MAX + 1];     /* the one verified */
    char new_verifier[GH_VERIFIER_MAX + 1]; /* the one written */
    size_t revoked;
} pwjob;

static void job_free(void *arg) /* also gh_op_write's free_arg */
{
    pwjob *j = arg;
    gh__lockout_settle(j->srv, &j->adm, j->success);
    if (j->old_pw)
        sodium_free(j->old_pw);
    if (j->new_pw)
        sodium_free(j->new_pw);
    sodium_memzero(j, sizeof(*j));
    free(j);
}

static char *secret_dup(const char *s, size_t len)
{
    char *p = sodium_malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

static void finish(pwjob *j, int rc, const char *msg)
{
    gh__pending_finish(j->p, rc, msg, NULL);
    job_free(j);
}

/* ---- step 4: the write ---- */

int gh__password_store(gh_txn *txn, gh_user *u, const char expect[GH_VERIFIER_MAX + 1],
                       const char new_verifier[GH_VERIFIER_MAX + 1], size_t *revoked)
{
    /* changed (or removed) since it was verified or read: the old password we
     * checked is no longer the password */
    if (sodium_memcmp(u->verifier, expect, sizeof(u->verifier)) != 0) {
        sodium_memzero(u->verifier, sizeof(u->verifier));
        return gh_txn_fail(txn, GH_ECREDS, "the password changed meanwhile; try again");
    }
    memcpy(u->verifier, new_verifier, sizeof(u->verifier));
    u->verifier_time = gh_txn_now(txn);
    int rc = gh_store_user_update(txn, u, GH_UF_VERIFIER);
    sodium_memzero(u->verifier, sizeof(u->verifier));
    if (rc != 0)
        return rc;
    /* sessions end with the old password, as for user.passwd */
    return gh_store_token_revoke_user(txn, u->id, revoked);
}

static int change_apply(gh_txn *txn, void *arg)
{
    pwjob *j = arg;
    gh_user u;
    int rc = gh_store_user_get_by_id(txn, j->user_id, &u);
    if (rc == GH_ENOTFOUND || (rc == 0 && strcmp(u.name, j->name) != 0))
        rc = gh_txn_fail(txn, GH_ECREDS, "invalid user name or password");
    if (rc == 0)
        rc = gh__password_store(txn, &u, j->verifier, j->new_verifier, &j->revoked);
    sodium_memzero(u.verifier, sizeof(u.verifier));
    return rc;
}

/* After the commit is durable: the success has no fields but a log line. */
static int change_reply(void *arg, json_t *resp)
{
    pwjob *j = arg;
    (void)resp;
    GH_LOGI("passwd.change %s by %s: password changed", j->name, j->peer);
    return 0;
}

/* ---- step 3: the new verifier ---- */

static void new_hashed(void *arg, int rc, const char *verifier)
{
    pwjob *j = arg;
    if (rc != 0) {
        finish(j, rc, rc == GH_ERATE ? "too much Argon2 work queued; retry later" : NULL);
        return;
    }
    snprintf(j->new_verifier, sizeof(j->new_verifier), "%s", verifier);
    /* the one deferred-write path: answers p and frees j in every case */
    gh_op_write(j->p, j->actor, change_apply, change_reply, job_free, j);
}

/* ---- step 2: verify the old password on the pool ---- */

static void verify_work(uv_work_t *w)
{
    pwjob *j = w->data;
    if (j->srv->cfg->argon2_nice > 0)
        setpriority(PRIO_PROCESS, (id_t)gettid(), (int)j->srv->cfg->argon2_nice);
    j->verify_ok = crypto_pwhash_str_verify(j->verifier, j->old_pw, j->old_len) == 0;
}

static void verify_after(uv_work_t *w, int status)
{
    pwjob *j = w->data;
    gh_server *srv = j->srv;
    gh__argon2_give(srv);
    j->p->work = NULL;
    sodium_free(j->old_pw);
    j->old_pw = NULL;
    if (status == UV_ECANCELED) {
        finish(j, GH_EUNAVAIL, "connection closed");
        return;
    }
    int ok = j->verify_ok && j->user_id != 0;
    j->success = ok; /* settled when the job is freed */
    if (!ok) {
        GH_STAT_SHARED_ADD(srv->auth_fail, 1);
        finish(j, GH_ECREDS, "invalid user name or password");
        return;
    }
    if (j->state != GH_USER_ACTIVE) {
        int rc = j->state == GH_USER_LOCKED ? GH_ELOCKED : GH_EDISABLED;
        finish(j, rc, rc == GH_ELOCKED ? "account is locked" : "account is disabled");
        return;
    }
    int rc = gh__hash_password(srv, j->new_pw, j->new_len, new_hashed, j);
    sodium_free(j->new_pw);
    j->new_pw = NULL;
    if (rc != 0)
        finish(j, rc,
               rc == GH_ERATE ? "too much Argon2 work queued; retry later"
                              : "cannot hash the password");
}

/* ---- step 1: the handler ---- */

static int check_length(gh_opctx *c, const char *pw)
{
    size_t n = strlen(pw), chars = 0;
    if (!gh_schema_utf8_valid(pw, n))
        return gh_op_fail(c, GH_EINVAL, "the new password is not valid UTF-8");
    for (size_t i = 0; i < n; i++)
        chars += ((unsigned char)pw[i] & 0xC0) != 0x80;
    if (chars < c->cfg->password_min_length)
        return gh_op_fail(c, GH_EINVAL, "the new password must be at least %u characters",
                          c->cfg->password_min_length);
    return 0;
}

static int op_passwd_change(gh_opctx *c)
{
    gh_server *srv = c->srv;
    const char *name, *old_pw, *new_pw, *client = NULL;
    char ckey[GH_CLIENT_KEY_MAX];
    gh_user u;
    int rc;

    if ((rc = gh_arg_str(c, "user", 1, GH_NAME_MAX, &name)) != 0 ||
        (rc = gh_arg_str(c, "old_password", 1, 4096, &old_pw)) != 0 ||
        (rc = gh_arg_str(c, "new_password", 1, 4096, &new_pw)) != 0)
        return rc;
    rc = gh_arg_str(c, "client", 0, GH_CLIENT_MAX, &client);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    if ((rc = check_length(c, new_pw)) != 0)
        return rc;
    if (__atomic_load_n(&srv->argon2_inflight, __ATOMIC_RELAXED) >= srv->cfg->argon2_queue_max) {
        GH_STAT_SHARED_ADD(srv->auth_limited, 1);
        return gh_op_fail(c, GH_ERATE, "too many authentications in progress; retry later");
    }
    rc = gh_store_user_get(c->txn, name, &u);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return gh_op_fail(c, GH_EINTERNAL, "cannot read the user");
    int exists = rc == 0 && u.tombstone == 0;
    /* NSS already tells any local process that the login exists; which
     * upstream holds it is left out (nothing has been proven yet) */
    if (exists && u.origin[0] != '\0')
        return gh_op_fail(c, GH_EPERM,
                          "the password of '%s' is managed by upstream directory; "
                          "change it there",
                          u.name);
    pwjob *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    j->srv = srv;
    snprintf(j->name, sizeof(j->name), "%s", name);
    gh__lockout_client(c, client, ckey, sizeof(ckey));
    snprintf(j->peer, sizeof(j->peer), "%s", ckey);
    if (gh__lockout_admit(srv, name, ckey, &j->adm) != 0) {
        free(j);
        GH_STAT_SHARED_ADD(srv->auth_limited, 1);
        return gh_op_fail(c, GH_ERATE, "too many failed attempts; retry later");
    }
    snprintf(j->actor, sizeof(j->actor), "user:%s", name);
    j->old_len = strlen(old_pw);
    j->new_len = strlen(new_pw);
    j->old_pw = secret_dup(old_pw, j->old_len);
    j->new_pw = secret_dup(new_pw, j->new_len);
    if (j->old_pw == NULL || j->new_pw == NULL) {
        job_free(j);
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    }
    if (exists && u.verifier[0] != '\0') {
        j->user_id = u.id;
        j->state = u.state;
        snprintf(j->verifier, sizeof(j->verifier), "%s", u.verifier);
    } else {
        snprintf(j->verifier, sizeof(j->verifier), "%s", srv->dummy_verifier);
    }
    sodium_memzero(&u, sizeof(u));
    j->work.data = j;
    /* on this connection's loop: the after-work callback comes back to it */
    rc = gh__verify_queue(srv, gh__loop_self()->loop, &j->work, verify_work, verify_after);
    if (rc == GH_ERATE) {
        job_free(j);
        GH_STAT_SHARED_ADD(srv->auth_limited, 1);
        return gh_op_fail(c, GH_ERATE, "too many authentications in progress; retry later");
    }
    if (rc != 0) {
        job_free(j);
        return gh_op_fail(c, GH_EINTERNAL, "cannot queue the verification");
    }
    j->p = gh_op_pend(c);
    j->p->work = &j->work; /* cancelled if the connection closes first */
    return 0;
}

const gh_op_def gh__ops_passwd[] = {
    {"passwd.change", op_passwd_change, GH_OPF_ARGON2, GH_CLASS_PUBLIC},
    {NULL, NULL, 0, GH_CLASS_ADMIN},
};
