/*
 * auth.c: password verification, lockout, tokens.
 *
 * Argon2 never runs on the loop: a job copies what it needs (the password in
 * sodium_malloc'd memory, the verifier or a dummy one) and the pool thread
 * only hashes. The after-work callback wipes the password, handles
 * UV_ECANCELED, and continues on the loop. The number of jobs in flight is
 * bounded by argon2_queue_max; past it auth answers rate_limited at once, so
 * a login storm costs bounded memory and never slows checks.
 *
 * Lockout is kept in memory, keyed by (login, client) and by client alone,
 * so a noisy client delays only itself. An attempt is counted when it is
 * admitted, before Argon2 or an upstream bind runs, so pipelining or
 * reconnecting buys no extra verified guesses; a success gives back only
 * that login's count. Delays double per attempt past the threshold up to a
 * cap (never a permanent lock). Unknown users are verified against a dummy
 * hash so that "no such user" and "wrong password" cost the same. The
 * tables have a fixed size and must never be fillable into a denial of
 * service: a refused attempt creates no entry, an entry that remembers
 * nothing is deleted at once, and a full table forgets its least useful
 * entry rather than refuse everyone (fail_evict).
 *
 * Threads: a request's auth runs on its connection's loop; the lockout
 * tables are shared by every loop under srv->fail_mu (taken only when a
 * password attempt is admitted or settled, never by a check); the Argon2
 * bound is one atomic counter; an upstream bind's answer, delivered on loop
 * 0, is posted back to the request's loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "schema/log.h"
#include "server/server.h"

#define FAILTAB_CAP 65536
/* slots fail_evict looks at (more only while it has found nothing evictable) */
#define GH_FAIL_EVICT_SAMPLE 1024

uint64_t gh__now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* ---- failure tables ---- */

/* Keys are SipHash-2-4 of the key text under a random per-start key: fixed
 * size, and a peer cannot aim at one probe sequence. 0 marks an empty slot. */
static uint64_t fail_keyhash(const gh_server *srv, const char *text)
{
    uint64_t h;
    crypto_shorthash((unsigned char *)&h, (const unsigned char *)text, strlen(text), srv->fail_key);
    return h ? h : 1;
}

/* Lookup only: NULL when key has no entry. */
static gh_fail *fail_lookup(gh_failtab *t, uint64_t key)
{
    if (t->slots == NULL)
        return NULL;
    size_t mask = t->cap - 1;
    for (size_t n = 0, i = key & mask; n < t->cap; n++, i = (i + 1) & mask) {
        if (t->slots[i].key == key)
            return &t->slots[i];
        if (t->slots[i].key == 0)
            return NULL;
    }
    return NULL;
}

/* Removes f, shifting back the entries of its probe run so that lookups
 * still find them (linear probing without tombstones). Moves other entries:
 * pointers into this table other than f are stale afterwards. */
static void fail_delete(gh_failtab *t, gh_fail *f)
{
    size_t mask = t->cap - 1;
    size_t hole = (size_t)(f - t->slots), j = hole;
    for (;;) {
        j = (j + 1) & mask;
        if (t->slots[j].key == 0)
            break;
        size_t home = t->slots[j].key & mask;
        /* the entry at j may fill the hole unless its home lies in (hole, j] */
        int stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (stays)
            continue;
        t->slots[hole] = t->slots[j];
        hole = j;
    }
    memset(&t->slots[hole], 0, sizeof(t->slots[hole]));
    t->used--;
}

/* An entry that remembers nothing (no failures, no delay, nothing in flight)
 * is dropped at once: only attempts leave entries behind. */
static void fail_drop_idle(gh_failtab *t, gh_fail *f, uint64_t now)
{
    if (f != NULL && f->failures == 0 && f->inflight == 0 && f->until_ms <= now)
        fail_delete(t, f);
}

/* The table is full: frees one slot. Never an entry with an attempt in
 * flight (its settle must find it). Prefers the entry that protects least:
 * one not delaying anybody, last used longest ago; failing that the delay
 * that ends first. The search samples a window from a random place (as
 * Redis samples for its LRU), so a full table costs a bounded scan per new
 * entry. Forgetting one entry gives its peer back at most its own
 * threshold; refusing instead would let whoever fills the table lock out
 * everyone (issue 10 audit, G1). */
static int fail_evict(gh_failtab *t, uint64_t now)
{
    size_t mask = t->cap - 1, best = SIZE_MAX;
    size_t i = randombytes_uniform((uint32_t)t->cap);
    int best_free = 0;
    for (size_t n = 0; n < t->cap; n++, i = (i + 1) & mask) {
        if (n >= GH_FAIL_EVICT_SAMPLE && best != SIZE_MAX)
            break;
        const gh_fail *f = &t->slots[i];
        if (f->key == 0 || f->inflight > 0)
            continue;
        int is_free = f->until_ms <= now;
        if (best == SIZE_MAX || (is_free && !best_free) ||
            (is_free == best_free && (is_free ? f->last_ms < t->slots[best].last_ms
                                              : f->until_ms < t->slots[best].until_ms))) {
            best = i;
            best_free = is_free;
        }
    }
    if (best == SIZE_MAX)
        return GH_ERATE; /* every entry is in flight: the Argon2 and bind caps bound that */
    fail_delete(t, &t->slots[best]);
    t->evicted++;
    return 0;
}

/* Finds key's entry or makes one, evicting when the table is full. NULL only
 * when nothing can be evicted or the table cannot be allocated. */
static gh_fail *fail_insert(gh_failtab *t, uint64_t key, uint64_t now)
{
    if (t->slots == NULL) {
        t->slots = calloc(FAILTAB_CAP, sizeof(gh_fail));
        if (t->slots == NULL)
            return NULL;
        t->cap = FAILTAB_CAP;
    }
    gh_fail *f = fail_lookup(t, key);
    if (f != NULL)
        return f;
    if (t->used >= t->cap * 3 / 4 && fail_evict(t, now) != 0)
        return NULL;
    size_t mask = t->cap - 1;
    for (size_t n = 0, i = key & mask; n < t->cap; n++, i = (i + 1) & mask) {
        if (t->slots[i].key == 0) {
            f = &t->slots[i];
            memset(f, 0, sizeof(*f));
            f->key = key;
            f->last_ms = now;
            t->used++;
            return f;
        }
    }
    return NULL;
}

/* Drops entries that have served their delay, gone quiet and have nothing in
 * flight; rebuilds the table (cheaper than one delete per dropped entry).
 * Time is the only thing that forgets failures. */
static void fail_gc(gh_failtab *t, uint64_t now, uint64_t quiet_ms)
{
    if (t->slots == NULL || t->used == 0)
        return;
    gh_fail *old = t->slots;
    size_t cap = t->cap;
    t->slots = calloc(cap, sizeof(gh_fail));
    if (t->slots == NULL) {
        t->slots = old;
        return;
    }
    t->used = 0;
    for (size_t i = 0; i < cap; i++) {
        if (old[i].key == 0)
            continue;
        if (old[i].inflight == 0 && old[i].until_ms <= now && now - old[i].last_ms > quiet_ms)
            continue;
        /* at most as many entries as before: no eviction can happen */
        gh_fail *f = fail_insert(t, old[i].key, now);
        if (f)
            *f = old[i];
    }
    free(old);
}

static uint64_t delay_ms(const gh_config *cfg, unsigned over)
{
    uint64_t d = (uint64_t)cfg->lockout_base_delay * 1000;
    uint64_t cap = (uint64_t)cfg->lockout_max_delay * 1000;
    for (unsigned i = 0; i < over && d < cap; i++)
        d *= 2;
    return d < cap ? d : cap;
}

/* Counts one more attempt against f; past threshold a delay starts, doubling
 * per attempt up to lockout_max_delay (never a permanent lock). */
static void fail_count(const gh_config *cfg, gh_fail *f, unsigned threshold, uint64_t now)
{
    f->failures++;
    f->last_ms = now;
    if (f->failures >= threshold)
        f->until_ms = now + delay_ms(cfg, f->failures - threshold);
}

void gh__lockout_client(const gh_opctx *c, const char *client, char *out, size_t outlen)
{
    /* Only a trusted front-end may say on whose behalf it asks; anyone else
     * is its own client, whatever it claims. */
    if (c->frontend && client != NULL && client[0] != '\0')
        snprintf(out, outlen, "%s/client:%s", c->peerkey, client);
    else
        snprintf(out, outlen, "%s", c->peerkey);
}

/* The peer's entry is looked at first and a refused attempt creates nothing
 * more: a delayed peer spraying distinct logins costs no slots. Entries for
 * (login, client) and login are made only for an admitted attempt, so one
 * client holds at most about peer_failure_threshold of them per window; a
 * full table evicts (fail_evict) rather than refuse everyone. */
int gh__lockout_admit(gh_server *srv, const char *login, const char *client, gh_admission *a)
{
    const gh_config *cfg = srv->cfg;
    char text[GH_NAME_MAX + GH_CLIENT_KEY_MAX + 8];
    uint64_t now = gh__now_ms();
    gh_fail *uf, *lf, *pf;

    memset(a, 0, sizeof(*a));
    snprintf(text, sizeof(text), "u|%s|%s", login, client);
    a->user_key = fail_keyhash(srv, text);
    snprintf(text, sizeof(text), "l|%s", login);
    a->login_key = fail_keyhash(srv, text);
    snprintf(text, sizeof(text), "p|%s", client);
    a->peer_key = fail_keyhash(srv, text);

    int rc = GH_ERATE;
    pthread_mutex_lock(&srv->fail_mu);
    pf = fail_insert(&srv->peer_fails, a->peer_key, now);
    if (pf == NULL)
        goto done; /* nothing evictable: every entry has an attempt in flight */
    if (pf->until_ms > now)
        goto done;
    uf = fail_lookup(&srv->user_fails, a->user_key);
    if (uf != NULL && uf->until_ms > now)
        goto refused;
    lf = fail_lookup(&srv->login_fails, a->login_key);
    if (lf != NULL && lf->inflight >= cfg->auth_max_inflight_per_login) {
        a->busy = 1; /* not a failure: this login is being checked already */
        goto refused;
    }
    if (uf == NULL && (uf = fail_insert(&srv->user_fails, a->user_key, now)) == NULL)
        goto refused;
    if (lf == NULL && (lf = fail_insert(&srv->login_fails, a->login_key, now)) == NULL) {
        fail_drop_idle(&srv->user_fails, uf, now);
        goto refused;
    }
    /* counted now, before any Argon2: a success gives it back */
    fail_count(cfg, uf, cfg->lockout_threshold, now);
    fail_count(cfg, pf, cfg->peer_failure_threshold, now);
    uf->inflight++;
    lf->inflight++;
    pf->inflight++;
    a->held = 1;
    rc = 0;
    goto done;
refused:
    fail_drop_idle(&srv->peer_fails, pf, now); /* a new peer refused for others' reasons */
done:
    pthread_mutex_unlock(&srv->fail_mu);
    return rc;
}

void gh__lockout_settle(gh_server *srv, gh_admission *a, int success)
{
    if (!a->held)
        return;
    a->held = 0;
    uint64_t now = gh__now_ms();
    pthread_mutex_lock(&srv->fail_mu);
    gh_fail *uf = fail_lookup(&srv->user_fails, a->user_key);
    gh_fail *lf = fail_lookup(&srv->login_fails, a->login_key);
    gh_fail *pf = fail_lookup(&srv->peer_fails, a->peer_key);
    if (uf && uf->inflight)
        uf->inflight--;
    if (lf && lf->inflight)
        lf->inflight--;
    if (pf && pf->inflight)
        pf->inflight--;
    /* A success clears that login's record for this client only. The
     * client's own count (spraying) forgets only this attempt: another
     * account's good password does not buy more guesses. */
    if (success && uf) {
        uf->failures = 0;
        uf->until_ms = 0;
    }
    if (success && pf && pf->failures > 0) {
        pf->failures--;
        if (pf->failures < srv->cfg->peer_failure_threshold)
            pf->until_ms = 0;
    }
    /* A failure past the threshold delays from its answer, not only from its
     * admission: an Argon2 run longer than the delay must not let the next
     * guess straight in. */
    if (!success) {
        const gh_config *cfg = srv->cfg;
        if (uf && uf->failures >= cfg->lockout_threshold) {
            uint64_t until = now + delay_ms(cfg, uf->failures - cfg->lockout_threshold);
            if (until > uf->until_ms)
                uf->until_ms = until;
        }
        if (pf && pf->failures >= cfg->peer_failure_threshold) {
            uint64_t until = now + delay_ms(cfg, pf->failures - cfg->peer_failure_threshold);
            if (until > pf->until_ms)
                pf->until_ms = until;
        }
    }
    /* the login table only counts what is in flight */
    fail_drop_idle(&srv->user_fails, uf, now);
    fail_drop_idle(&srv->login_fails, lf, now);
    fail_drop_idle(&srv->peer_fails, pf, now);
    pthread_mutex_unlock(&srv->fail_mu);
}

/* ---- tokens ---- */

int gh__token_hash(gh_server *srv, const char *token, uint8_t hash[GH_TOKEN_HASH_BYTES])
{
    uint8_t raw[32];
    size_t rawlen = 0;
    size_t len = strlen(token);
    if (len != 43)
        return GH_ETOKEN;
    if (sodium_base642bin(raw, sizeof(raw), token, len, NULL, &rawlen, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        rawlen != sizeof(raw))
        return GH_ETOKEN;
    crypto_generichash(hash, GH_TOKEN_HASH_BYTES, raw, sizeof(raw), srv->token_key,
                       sizeof(srv->token_key));
    sodium_memzero(raw, sizeof(raw));
    return 0;
}

static int load_token_key(gh_server *srv)
{
    char path[4096];
    int fd, rc = 0;
    snprintf(path, sizeof(path), "%s/token.key", srv->cfg->state_dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, srv->token_key, sizeof(srv->token_key));
        close(fd);
        if (n != (ssize_t)sizeof(srv->token_key)) {
            GH_LOGE("%s is damaged (expected %zu bytes)", path, sizeof(srv->token_key));
            return GH_EIO;
        }
        return 0;
    }
    if (errno != ENOENT) {
        GH_LOGE("open %s: %s", path, strerror(errno));
        return GH_EIO;
    }
    randombytes_buf(srv->token_key, sizeof(srv->token_key));
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 ||
        write(fd, srv->token_key, sizeof(srv->token_key)) != (ssize_t)sizeof(srv->token_key) ||
        fsync(fd) != 0) {
        GH_LOGE("write %s: %s", tmp, strerror(errno));
        rc = GH_EIO;
    }
    if (fd >= 0)
        close(fd);
    if (rc == 0 && rename(tmp, path) != 0) {
        GH_LOGE("rename %s: %s", tmp, strerror(errno));
        rc = GH_EIO;
    }
    /* the new name must survive a crash too, or every token dies with it */
    int dfd = rc == 0 ? open(srv->cfg->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (rc == 0 && (dfd < 0 || fsync(dfd) != 0)) {
        GH_LOGE("fsync %s: %s", srv->cfg->state_dir, strerror(errno));
        rc = GH_EIO;
    }
    if (dfd >= 0)
        close(dfd);
    return rc;
}

int gh__auth_init(gh_server *srv)
{
    char pw[33];
    int rc = load_token_key(srv);
    if (rc != 0)
        return rc;
    randombytes_buf(srv->fail_key, sizeof(srv->fail_key));
    /* The dummy verifier has the configured cost, so that verifying against
     * it takes as long as verifying a real user. */
    randombytes_buf(pw, sizeof(pw) - 1);
    pw[32] = '\0';
    for (int i = 0; i < 32; i++)
        pw[i] = (char)('a' + ((unsigned char)pw[i] % 26));
    if (crypto_pwhash_str(srv->dummy_verifier, pw, 32, srv->cfg->argon2_opslimit,
                          srv->cfg->argon2_memlimit) != 0) {
        GH_LOGE("argon2: cannot hash with opslimit=%llu memlimit=%zu (out of memory?)",
                (unsigned long long)srv->cfg->argon2_opslimit, srv->cfg->argon2_memlimit);
        return GH_ENOMEM;
    }
    sodium_memzero(pw, sizeof(pw));
    return 0;
}

void gh__auth_fini(gh_server *srv)
{
    free(srv->user_fails.slots);
    free(srv->login_fails.slots);
    free(srv->peer_fails.slots);
    srv->user_fails.slots = srv->login_fails.slots = srv->peer_fails.slots = NULL;
    sodium_memzero(srv->token_key, sizeof(srv->token_key));
}

/* ---- password hashing on the pool ---- */

/* Pool threads run only Argon2: at a high nice value they yield the CPU to
 * the loop thread, so checks stay fast during a login storm. (The kernel
 * takes the nice value per thread; a pool thread never needs it back.) */
static void pool_thread_priority(const gh_config *cfg)
{
    if (cfg->argon2_nice > 0)
        setpriority(PRIO_PROCESS, (id_t)gettid(), (int)cfg->argon2_nice);
}

int gh__argon2_take(gh_server *srv)
{
    unsigned n = __atomic_load_n(&srv->argon2_inflight, __ATOMIC_RELAXED);
    do {
        if (n >= srv->cfg->argon2_queue_max)
            return GH_ERATE;
    } while (!__atomic_compare_exchange_n(&srv->argon2_inflight, &n, n + 1, 1, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    return 0;
}

void gh__argon2_give(gh_server *srv)
{
    __atomic_fetch_sub(&srv->argon2_inflight, 1, __ATOMIC_RELAXED);
}

/* Every Argon2 run for a password attempt (auth, an LDAP bind,
 * passwd.change's old password, and the offline copy hashed after an
 * upstream accepted a bind) is queued here: the one place stats counts
 * auth.verifications, so no front-end can verify uncounted. */
int gh__verify_queue(gh_server *srv, uv_loop_t *loop, uv_work_t *w, uv_work_cb work,
                     uv_after_work_cb after)
{
    if (gh__argon2_take(srv) != 0)
        return GH_ERATE;
    if (uv_queue_work(loop, w, work, after) != 0) {
        gh__argon2_give(srv);
        return GH_EINTERNAL;
    }
    GH_STAT_SHARED_ADD(srv->auth_verifications, 1);
    return 0;
}

/* Every pass-through bind (auth, an LDAP bind) is handed to the sync module
 * here: the one place stats counts auth.upstream_binds (binds accepted for
 * an upstream; a refusal of the bind queue is counted as rate_limited by
 * the caller). */
static int upstream_bind(gh_server *srv, const gh_user *u, const char *peer, const char *pw,
                         gh_sync_auth_cb cb, void *arg)
{
    int rc = gh_sync_auth_user(srv->sync, u, peer, pw, cb, arg);
    if (rc == 0)
        GH_STAT_SHARED_ADD(srv->auth_upstream_binds, 1);
    return rc;
}

/* The loop of the calling thread: Argon2's after-work callback comes back to
 * it, which is the loop of the connection the request belongs to. */
static uv_loop_t *this_loop(gh_server *srv)
{
    gh_loop *lp = gh__loop_self();
    GH_ASSERT(lp != NULL && lp->srv == srv);
    return lp->loop;
}

typedef struct hash_job {
    uv_work_t work;
    gh_server *srv;
    char *pw; /* sodium_malloc'd */
    size_t pwlen;
    int rc;
    char verifier[crypto_pwhash_STRBYTES];
    gh_hash_cb cb;
    void *arg;
} hash_job;

static void hash_work(uv_work_t *w)
{
    hash_job *j = w->data;
    pool_thread_priority(j->srv->cfg);
    if (crypto_pwhash_str(j->verifier, j->pw, j->pwlen, j->srv->cfg->argon2_opslimit,
                          j->srv->cfg->argon2_memlimit) != 0)
        j->rc = GH_ENOMEM;
}

static void hash_after(uv_work_t *w, int status)
{
    hash_job *j = w->data;
    sodium_free(j->pw);
    gh__argon2_give(j->srv);
    if (status == UV_ECANCELED)
        j->rc = GH_EUNAVAIL;
    j->cb(j->arg, j->rc, j->rc == 0 ? j->verifier : NULL);
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

int gh__hash_password(gh_server *srv, const char *password, size_t len, gh_hash_cb cb, void *arg)
{
    if (gh__argon2_take(srv) != 0)
        return GH_ERATE;
    hash_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        gh__argon2_give(srv);
        return GH_ENOMEM;
    }
    j->pw = secret_dup(password, len);
    if (j->pw == NULL) {
        free(j);
        gh__argon2_give(srv);
        return GH_ENOMEM;
    }
    j->pwlen = len;
    j->srv = srv;
    j->cb = cb;
    j->arg = arg;
    j->work.data = j;
    if (uv_queue_work(this_loop(srv), &j->work, hash_work, hash_after) != 0) {
        sodium_free(j->pw);
        free(j);
        gh__argon2_give(srv);
        return GH_EINTERNAL;
    }
    return 0;
}

/* ---- the auth operation ---- */

typedef struct auth_job {
    uv_work_t work;
    gh_server *srv;
    gh_loop *lp; /* the request's loop: where every step after the first runs */
    gh_post post;
    int upstream_rc, upstream_offline_ok;
    gh_pending *p;
    char name[GH_NAME_MAX + 1];
    char peer[GH_CLIENT_KEY_MAX]; /* the client key: kept on the token for session.list */
    gh_admission adm;
    int success;
    char *pw; /* sodium_malloc'd, wiped by sodium_free */
    size_t pwlen;
    int exists; /* a real user with a usable verifier */
    gh_user u;
    int64_t ttl;
    int64_t offline_max_age;
    int upstream_ok; /* the upstream accepted the bind */
    int verify_ok;
    int new_verifier; /* u.verifier must be rewritten (rehash or offline copy) */
    int no_token;     /* "token": false: the password is checked, no session made */
    char verifier[crypto_pwhash_STRBYTES];
    char rehash[crypto_pwhash_STRBYTES];
    /* the write */
    gh_token tok;
    char token[48];
} auth_job;

static void auth_job_free(void *arg)
{
    auth_job *j = arg;
    gh__lockout_settle(j->srv, &j->adm, j->success);
    if (j->pw)
        sodium_free(j->pw);
    sodium_memzero(j, sizeof(*j));
    free(j);
}

int gh__auth_rehash_apply(gh_txn *txn, uint64_t user_id, const char *verified, const char *rehash)
{
    gh_user u;
    size_t n = strlen(verified);
    int rc = gh_store_user_get_by_id(txn, user_id, &u);
    if (rc == GH_ENOTFOUND) {
        rc = 0; /* deleted meanwhile: nothing to keep up */
        goto done;
    }
    if (rc != 0)
        goto done;
    /* compare-and-set: a password reset (or another rehash) won the race */
    if (strlen(u.verifier) != n || sodium_memcmp(u.verifier, verified, n) != 0)
        goto done;
    snprintf(u.verifier, sizeof(u.verifier), "%s", rehash);
    u.verifier_time = gh_txn_now(txn);
    rc = gh_store_user_update(txn, &u, GH_UF_VERIFIER);
done:
    sodium_memzero(&u, sizeof(u));
    return rc;
}

/* The token, and the rehash (compare-and-set, gh__auth_rehash_apply). Reads
 * j only: a re-run is the same. */
static int auth_apply(gh_txn *txn, void *arg)
{
    const auth_job *j = arg;
    int rc = j->no_token ? 0 : gh_store_token_put(txn, &j->tok);
    if (rc == 0 && j->new_verifier)
        rc = gh__auth_rehash_apply(txn, j->u.id, j->u.verifier, j->rehash);
    return rc;
}

static int auth_reply(void *arg, json_t *resp)
{
    auth_job *j = arg;
    json_object_set_new(resp, "user", json_string(j->u.name));
    if (j->no_token)
        return 0;
    j->p->secret = 1; /* the reply line carries the token */
    json_object_set_new(resp, "token", json_string(j->token));
    json_object_set_new(resp, "expires_at", json_integer(j->tok.expires));
    return 0;
}

/* Password accepted (locally or upstream): state checks, then the token. */
static void auth_succeeded(auth_job *j)
{
    gh_server *srv = j->srv;
    uint8_t raw[32];
    int rc;

    j->success = 1;
    if (j->u.state == GH_USER_LOCKED || j->u.state == GH_USER_DISABLED || j->u.tombstone) {
        GH_STAT_SHARED_ADD(srv->auth_fail, 1);
        rc = j->u.state == GH_USER_LOCKED ? GH_ELOCKED : GH_EDISABLED;
        gh__pending_finish(j->p, rc, rc == GH_ELOCKED ? "account is locked" : "account is disabled",
                           NULL);
        auth_job_free(j);
        return;
    }
    GH_STAT_SHARED_ADD(srv->auth_ok, 1);
    if (j->no_token && !j->new_verifier) {
        /* nothing to write: the answer is the check itself (a PAM login) */
        json_t *resp = json_object();
        json_object_set_new(resp, "user", json_string(j->u.name));
        gh__pending_finish(j->p, 0, NULL, resp);
        json_decref(resp);
        auth_job_free(j);
        return;
    }
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2base64(j->token, sizeof(j->token), raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    crypto_generichash(j->tok.hash, sizeof(j->tok.hash), raw, sizeof(raw), srv->token_key,
                       sizeof(srv->token_key));
    sodium_memzero(raw, sizeof(raw));
    int64_t now = (int64_t)time(NULL);
    j->tok.user_id = j->u.id;
    size_t plen = strnlen(j->peer, sizeof(j->tok.peer) - 1); /* for session.list (cut) */
    memcpy(j->tok.peer, j->peer, plen);
    j->tok.peer[plen] = '\0';
    j->tok.created = now;
    j->tok.expires = now + j->ttl;
    if (j->pw) {
        sodium_free(j->pw);
        j->pw = NULL;
    }
    gh_op_write(j->p, "auth", auth_apply, auth_reply, auth_job_free, j);
}

static void auth_failed(auth_job *j, int rc, const char *msg)
{
    GH_STAT_SHARED_ADD(j->srv->auth_fail, 1);
    gh__pending_finish(j->p, rc, msg, NULL);
    auth_job_free(j);
}

static void verify_work(uv_work_t *w)
{
    auth_job *j = w->data;
    const gh_config *cfg = j->srv->cfg;
    pool_thread_priority(cfg);
    if (j->upstream_ok) {
        /* keep an offline verifier of the password the upstream accepted */
        if (crypto_pwhash_str(j->rehash, j->pw, j->pwlen, cfg->argon2_opslimit,
                              cfg->argon2_memlimit) == 0)
            j->new_verifier = 1;
        return;
    }
    j->verify_ok = crypto_pwhash_str_verify(j->verifier, j->pw, j->pwlen) == 0;
    if (!j->exists || !j->verify_ok)
        return;
    if (crypto_pwhash_str_needs_rehash(j->verifier, cfg->argon2_opslimit, cfg->argon2_memlimit) !=
            0 &&
        crypto_pwhash_str(j->rehash, j->pw, j->pwlen, cfg->argon2_opslimit, cfg->argon2_memlimit) ==
            0)
        j->new_verifier = 1;
}

static void verify_after(uv_work_t *w, int status)
{
    auth_job *j = w->data;
    gh__argon2_give(j->srv);
    j->p->work = NULL;
    sodium_free(j->pw);
    j->pw = NULL;
    if (status == UV_ECANCELED) {
        gh__pending_finish(j->p, GH_EUNAVAIL, "the server is shutting down", NULL);
        auth_job_free(j);
        return;
    }
    if (j->upstream_ok) {
        auth_succeeded(j);
        return;
    }
    if (!j->exists || !j->verify_ok) {
        auth_failed(j, GH_ECREDS, "invalid user name or password");
        return;
    }
    auth_succeeded(j);
}

static int queue_verify(auth_job *j)
{
    j->work.data = j;
    int rc = gh__verify_queue(j->srv, j->lp->loop, &j->work, verify_work, verify_after);
    if (rc != 0)
        return rc;
    if (j->p != NULL) /* NULL on the first queueing: auth_run pends after */
        j->p->work = &j->work;
    return 0;
}

/* The upstream's answer (sync/sync.h says what each code means). The
 * offline verifier is used only when a bind was sent and the network failed:
 * never when the bind could not be attempted (rate_limited) or the upstream
 * refused the password (sync has then deleted the verifier). On the
 * request's loop. */
static void upstream_answered(void *arg)
{
    auth_job *j = arg;
    int rc = j->upstream_rc, offline_ok = j->upstream_offline_ok;
    int64_t now = (int64_t)time(NULL);

    if (rc == 0) {
        j->upstream_ok = 1;
        if (j->offline_max_age > 0) {
            /* hash a fresh offline verifier on the pool, then succeed */
            if (queue_verify(j) == 0)
                return;
        }
        auth_succeeded(j);
        return;
    }
    if (rc == GH_ECREDS) {
        auth_failed(j, GH_ECREDS, "invalid user name or password");
        return;
    }
    if (rc == GH_ERATE) {
        GH_STAT_SHARED_ADD(j->srv->auth_limited, 1);
        auth_failed(j, GH_ERATE, "too many upstream binds in progress; retry later");
        return;
    }
    /* upstream unreachable: the offline verifier, if fresh enough */
    if (offline_ok && j->offline_max_age > 0 && j->u.verifier[0] != '\0' &&
        now - j->u.verifier_time <= j->offline_max_age) {
        GH_LOGI("auth %s: upstream %s unreachable, using the offline verifier", j->name,
                j->u.origin);
        snprintf(j->verifier, sizeof(j->verifier), "%s", j->u.verifier);
        int qrc = queue_verify(j);
        if (qrc == 0)
            return;
        auth_failed(j, qrc, "too many authentications in progress");
        return;
    }
    GH_STAT_SHARED_ADD(j->srv->auth_fail, 1);
    gh__pending_finish(j->p, GH_EUNAVAIL,
                       offline_ok ? "the upstream directory is unreachable and no fresh offline "
                                    "verifier is kept"
                                  : "the upstream directory could not check the password",
                       NULL);
    auth_job_free(j);
}

/* gh_sync_auth_user's callback, on loop 0: on to the request's loop. */
static void upstream_done(void *arg, int rc, int offline_ok)
{
    auth_job *j = arg;
    j->upstream_rc = rc;
    j->upstream_offline_ok = offline_ok;
    gh__loop_run_on(j->lp, &j->post, upstream_answered, j);
}

/* On loop 0 (its thread owns the sync module's bind queue and counters). */
static void upstream_submit(void *arg)
{
    auth_job *j = arg;
    int rc = upstream_bind(j->srv, &j->u, j->peer, j->pw, upstream_done, j);
    if (rc != 0) /* j->post is free again: on_wake took it off the queue */
        upstream_done(j, rc == GH_ENOTFOUND ? GH_EUNAVAIL : rc, 0);
}

int gh__op_auth(gh_opctx *c)
{
    gh_server *srv = c->srv;
    const char *name, *password, *client = NULL;
    char ckey[GH_CLIENT_KEY_MAX];
    int64_t ttl = srv->cfg->token_ttl;
    int rc;

    rc = gh_arg_str(c, "user", 1, GH_NAME_MAX, &name);
    if (rc != 0)
        return rc;
    rc = gh_arg_str(c, "password", 1, 4096, &password);
    if (rc != 0)
        return rc;
    rc = gh_arg_int(c, "ttl", 0, 1, srv->cfg->token_ttl, &ttl);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    rc = gh_arg_str(c, "client", 0, GH_CLIENT_MAX, &client);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    int want_token = 1;
    rc = gh_arg_bool(c, "token", 0, &want_token);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    if (__atomic_load_n(&srv->argon2_inflight, __ATOMIC_RELAXED) >= srv->cfg->argon2_queue_max) {
        GH_STAT_SHARED_ADD(srv->auth_limited, 1);
        return gh_op_fail(c, GH_ERATE, "too many authentications in progress; retry later");
    }
    auth_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    j->srv = srv;
    j->no_token = !want_token;
    j->lp = gh__loop_self();
    GH_ASSERT(j->lp != NULL); /* runs on the loop of the request it answers */
    j->ttl = ttl;
    snprintf(j->name, sizeof(j->name), "%s", name);
    gh__lockout_client(c, client, ckey, sizeof(ckey));
    snprintf(j->peer, sizeof(j->peer), "%s", ckey);
    if (gh__lockout_admit(srv, name, ckey, &j->adm) != 0) {
        GH_STAT_SHARED_ADD(srv->auth_limited, 1);
        int busy = j->adm.busy;
        free(j);
        return gh_op_fail(c, GH_ERATE,
                          busy ? "too many password checks of this login in progress; retry later"
                               : "too many failed attempts; retry later");
    }
    j->pwlen = strlen(password);
    j->pw = secret_dup(password, j->pwlen);
    /* the request's own copy is no longer needed: wipe it in place */
    sodium_memzero((char *)password, j->pwlen);
    if (j->pw == NULL) {
        auth_job_free(j);
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    }
    rc = gh_store_user_get_auth(c->txn, name, &j->u);
    if (rc != 0 && rc != GH_ENOTFOUND) {
        auth_job_free(j);
        return gh_op_fail(c, GH_EINTERNAL, "cannot read the user");
    }
    j->exists = rc == 0;
    if (j->exists && j->u.origin[0] != '\0' && srv->sync != NULL && j->pwlen > 0) {
        j->offline_max_age = gh_sync_offline_max_age(srv->sync, j->u.origin);
        j->p = gh_op_pend(c);
        /* the sync module's bind bookkeeping is loop 0's */
        gh__loop_run_on(&srv->loops[0], &j->post, upstream_submit, j);
        return 0;
    }
    if (j->exists && j->u.verifier[0] != '\0') {
        snprintf(j->verifier, sizeof(j->verifier), "%s", j->u.verifier);
    } else {
        j->exists = 0;
        snprintf(j->verifier, sizeof(j->verifier), "%s", srv->dummy_verifier);
    }
    rc = queue_verify(j);
    if (rc != 0) {
        auth_job_free(j);
        GH_STAT_SHARED_ADD(srv->auth_limited, 1);
        return gh_op_fail(c, rc, "too many authentications in progress; retry later");
    }
    j->p = gh_op_pend(c);
    j->p->work = &j->work; /* a hang-up cancels the queued verification */
    return 0;
}

/* ---- housekeeping ---- */

static int purge_apply(gh_txn *txn, void *arg)
{
    size_t n = 0;
    int rc = gh_store_token_purge(txn, *(int64_t *)arg, &n);
    if (n > 0)
        GH_LOGD("purged %zu expired tokens", n);
    return rc;
}

static void purge_done(void *cbarg, int rc, const char *err)
{
    if (rc != 0)
        GH_LOGW("token purge failed: %s", err);
    free(cbarg);
}

void gh__housekeeping(gh_server *srv)
{
    uint64_t quiet = (uint64_t)srv->cfg->lockout_max_delay * 1000 * 2;
    pthread_mutex_lock(&srv->fail_mu);
    uint64_t evicted = srv->user_fails.evicted + srv->login_fails.evicted + srv->peer_fails.evicted;
    srv->user_fails.evicted = srv->login_fails.evicted = srv->peer_fails.evicted = 0;
    fail_gc(&srv->user_fails, gh__now_ms(), quiet);
    fail_gc(&srv->login_fails, gh__now_ms(), quiet);
    fail_gc(&srv->peer_fails, gh__now_ms(), quiet);
    pthread_mutex_unlock(&srv->fail_mu);
    if (evicted > 0)
        GH_LOGW("lockout tables full: %llu entries forgotten early (failed logins from very many "
                "clients)",
                (unsigned long long)evicted);
    int64_t *now = malloc(sizeof(*now));
    if (now == NULL)
        return;
    *now = (int64_t)time(NULL);
    if (gh_writer_submit(srv->writer, "housekeeping", purge_apply, now, purge_done, now) != 0)
        free(now);
}

/* ---- password verification for the other front-ends (LDAP bind) ---- */

/* Same lockout admission, dummy verifier, upstream pass-through, offline
 * fallback (on network failures only) and verifier upkeep (rehash at a new
 * cost, offline copy after an upstream success) as the auth operation,
 * without a token: the caller gets the user. */
typedef struct verify_job {
    uv_work_t work;
    gh_server *srv;
    char name[GH_NAME_MAX + 1];
    char peer[GH_CLIENT_KEY_MAX];
    gh_admission adm;
    char *pw; /* sodium_malloc'd */
    size_t pwlen;
    int exists, ok;
    int upstream_ok;  /* the upstream accepted the bind */
    int new_verifier; /* rehash must be stored */
    int64_t offline_max_age;
    gh_user u;
    char verifier[crypto_pwhash_STRBYTES];
    char rehash[crypto_pwhash_STRBYTES];
    gh_verify_cb cb;
    void *arg;
} verify_job;

static void vjob_finish(verify_job *j, int rc)
{
    gh_server *srv = j->srv;
    gh__lockout_settle(srv, &j->adm, rc == 0);
    if (rc == 0 &&
        (j->u.state == GH_USER_LOCKED || j->u.state == GH_USER_DISABLED || j->u.tombstone))
        rc = j->u.state == GH_USER_LOCKED ? GH_ELOCKED : GH_EDISABLED;
    if (rc == 0)
        GH_STAT_SHARED_ADD(srv->auth_ok, 1);
    else if (rc == GH_ERATE)
        GH_STAT_SHARED_ADD(srv->auth_limited, 1);
    else
        GH_STAT_SHARED_ADD(srv->auth_fail, 1);
    if (j->pw)
        sodium_free(j->pw);
    j->pw = NULL;
    j->cb(j->arg, rc, rc == 0 ? &j->u : NULL);
    sodium_memzero(j, sizeof(*j));
    free(j);
}

static void vjob_work(uv_work_t *w)
{
    verify_job *j = w->data;
    const gh_config *cfg = j->srv->cfg;
    pool_thread_priority(cfg);
    if (j->upstream_ok) { /* keep an offline verifier of what the upstream accepted */
        j->ok = 1;
        j->new_verifier = crypto_pwhash_str(j->rehash, j->pw, j->pwlen, cfg->argon2_opslimit,
                                            cfg->argon2_memlimit) == 0;
        return;
    }
    j->ok = crypto_pwhash_str_verify(j->verifier, j->pw, j->pwlen) == 0;
    if (j->ok && j->exists &&
        crypto_pwhash_str_needs_rehash(j->verifier, cfg->argon2_opslimit, cfg->argon2_memlimit) !=
            0)
        j->new_verifier = crypto_pwhash_str(j->rehash, j->pw, j->pwlen, cfg->argon2_opslimit,
                                            cfg->argon2_memlimit) == 0;
}

/* A new verifier only if the stored one is still the one we verified against
 * (compare-and-set, gh__auth_rehash_apply). */
static int vjob_apply(gh_txn *txn, void *arg)
{
    const verify_job *j = arg;
    return gh__auth_rehash_apply(txn, j->u.id, j->u.verifier, j->rehash);
}

static void vjob_written(void *cbarg, int rc, const char *err)
{
    verify_job *j = cbarg;
    if (rc != 0)
        GH_LOGW("bind %s: storing the new verifier failed: %s", j->name, err);
    else /* what the store now holds: a caller's compare-and-set expects it */
        snprintf(j->u.verifier, sizeof(j->u.verifier), "%s", j->rehash);
    vjob_finish(j, 0); /* the password was right either way */
}

static void vjob_after(uv_work_t *w, int status)
{
    verify_job *j = w->data;
    gh__argon2_give(j->srv);
    if (status == UV_ECANCELED) {
        vjob_finish(j, GH_EUNAVAIL);
        return;
    }
    if (!(j->exists && j->ok)) {
        vjob_finish(j, GH_ECREDS);
        return;
    }
    if (j->new_verifier &&
        gh_writer_submit(j->srv->writer, "auth", vjob_apply, j, vjob_written, j) == 0)
        return;
    vjob_finish(j, 0);
}

static int vjob_queue(verify_job *j)
{
    j->work.data = j;
    return gh__verify_queue(j->srv, j->srv->loop, &j->work, vjob_work, vjob_after);
}

static void vjob_upstream(void *arg, int rc, int offline_ok)
{
    verify_job *j = arg;
    if (rc == 0 && j->offline_max_age > 0) {
        j->upstream_ok = 1; /* hash an offline verifier on the pool, then succeed */
        if (vjob_queue(j) == 0)
            return;
        j->upstream_ok = 0;
    }
    if (rc == 0 || rc == GH_ECREDS || rc == GH_ERATE) {
        vjob_finish(j, rc);
        return;
    }
    if (offline_ok && j->offline_max_age > 0 && j->u.verifier[0] != '\0' &&
        (int64_t)time(NULL) - j->u.verifier_time <= j->offline_max_age) {
        snprintf(j->verifier, sizeof(j->verifier), "%s", j->u.verifier);
        if (vjob_queue(j) == 0)
            return;
    }
    vjob_finish(j, GH_EUNAVAIL);
}

int gh__auth_verify(gh_server *srv, const char *name, const char *peer, const char *pw,
                    size_t pwlen, gh_verify_cb cb, void *arg)
{
    gh_txn *txn;
    int rc;
    if (__atomic_load_n(&srv->argon2_inflight, __ATOMIC_RELAXED) >= srv->cfg->argon2_queue_max) {
        GH_STAT_SHARED_ADD(srv->auth_limited, 1);
        return GH_ERATE;
    }
    verify_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return GH_ENOMEM;
    j->srv = srv;
    j->cb = cb;
    j->arg = arg;
    snprintf(j->name, sizeof(j->name), "%s", name);
    snprintf(j->peer, sizeof(j->peer), "%s", peer);
    if (gh__lockout_admit(srv, name, j->peer, &j->adm) != 0) {
        gh__lockout_settle(srv, &j->adm, 0);
        free(j);
        GH_STAT_SHARED_ADD(srv->auth_limited, 1);
        return GH_ERATE;
    }
    j->pwlen = pwlen;
    j->pw = secret_dup(pw, pwlen);
    if (j->pw == NULL || (rc = gh_store_read_begin(srv->reader, &txn)) != 0) {
        if (j->pw)
            sodium_free(j->pw);
        gh__lockout_settle(srv, &j->adm, 0);
        free(j);
        return GH_ENOMEM;
    }
    rc = name[0] ? gh_store_user_get(txn, name, &j->u) : GH_ENOTFOUND;
    gh_store_read_end(srv->reader);
    j->exists = rc == 0;
    if (j->exists && j->u.origin[0] != '\0' && srv->sync != NULL && pwlen > 0) {
        j->offline_max_age = gh_sync_offline_max_age(srv->sync, j->u.origin);
        rc = upstream_bind(srv, &j->u, j->peer, j->pw, vjob_upstream, j);
        if (rc != 0) /* not asked: answered at once (the caller counts on it) */
            vjob_upstream(j, rc == GH_ERATE ? GH_ERATE : GH_EUNAVAIL, 0);
        return 0;
    }
    if (!j->exists || j->u.verifier[0] == '\0')
        j->exists = 0;
    snprintf(j->verifier, sizeof(j->verifier), "%s",
             j->exists ? j->u.verifier : srv->dummy_verifier);
    if ((rc = vjob_queue(j)) != 0) {
        sodium_free(j->pw);
        gh__lockout_settle(srv, &j->adm, 0);
        free(j);
        GH_STAT_SHARED_ADD(srv->auth_limited, 1);
        return rc;
    }
    return 0;
}
