/*
 * test_lockout.c: the lockout tables and the rehash write-back (issue 10,
 * audit gaps G1 and G7), against the real auth.c.
 *
 * The one thing to know: the tables are fixed-size, so what matters is who
 * can fill them. These tests play the attacker: one peer spraying distinct
 * logins, then very many clients (a trusted front-end naming them, or
 * remote addresses) each failing once; after either, another peer's first
 * attempt must still be admitted, a delay already running must survive,
 * and an attempt in flight must never be forgotten. The rehash test runs
 * gh__auth_rehash_apply on a real store with a verifier changed meanwhile.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "schema/store.h"
#include "server/config.h"
#include "server/server.h"

/* more distinct keys than a table holds (65536 slots, 3/4 usable) */
#define FLOOD 100000

typedef struct fx {
    gh_config cfg;
    gh_server srv;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    gh_config_defaults(&f->cfg);
    f->cfg.lockout_threshold = 5;
    f->cfg.peer_failure_threshold = 20;
    f->cfg.lockout_base_delay = 60;
    f->cfg.lockout_max_delay = 600;
    f->srv.cfg = &f->cfg;
    pthread_mutex_init(&f->srv.fail_mu, NULL);
    randombytes_buf(f->srv.fail_key, sizeof(f->srv.fail_key));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    gh__auth_fini(&f->srv);
    pthread_mutex_destroy(&f->srv.fail_mu);
    gh_config_free(&f->cfg);
    free(f);
    return 0;
}

/* One attempt that is admitted and fails (or is refused): 0 if admitted. */
static int attempt(fx *f, const char *login, const char *client, int success)
{
    gh_admission a;
    int rc = gh__lockout_admit(&f->srv, login, client, &a);
    if (rc == 0)
        gh__lockout_settle(&f->srv, &a, success);
    return rc;
}

static size_t used(fx *f)
{
    return f->srv.user_fails.used + f->srv.login_fails.used + f->srv.peer_fails.used;
}

/* One uid sprays distinct logins as fast as it can: after its
 * peer_failure_threshold it is refused, and a refused attempt takes no slot,
 * so the tables hold about threshold entries and another uid logs in. */
static void test_spraying_peer_takes_no_slots(void **state)
{
    fx *f = *state;
    char login[32];
    unsigned admitted = 0;

    for (int i = 0; i < FLOOD; i++) {
        snprintf(login, sizeof(login), "x%06d", i);
        admitted += attempt(f, login, "uid:65534", 0) == 0;
    }
    assert_int_equal(admitted, f->cfg.peer_failure_threshold);
    assert_true(f->srv.user_fails.used <= f->cfg.peer_failure_threshold);
    assert_int_equal(f->srv.login_fails.used, 0); /* nothing in flight */
    assert_int_equal(f->srv.peer_fails.used, 1);
    /* the sprayer stays refused; another uid (and root) are admitted */
    assert_int_equal(attempt(f, "alice", "uid:65534", 1), GH_ERATE);
    assert_int_equal(attempt(f, "alice", "uid:65533", 1), 0);
    assert_int_equal(attempt(f, "alice", "uid:0", 1), 0);
}

/* Very many clients, each failing once on its own login (an attacker behind
 * a front-end that names arbitrary clients, or many remote addresses): the
 * tables stay at their size and a new client is still admitted. */
static void test_many_clients_cannot_fill_the_tables(void **state)
{
    fx *f = *state;
    char login[32], client[48];

    for (int i = 0; i < FLOOD; i++) {
        snprintf(login, sizeof(login), "x%06d", i);
        snprintf(client, sizeof(client), "uid:0/client:ssh:%d", i);
        assert_int_equal(attempt(f, login, client, 0), 0);
    }
    assert_true(f->srv.user_fails.used <= f->srv.user_fails.cap * 3 / 4);
    assert_true(f->srv.peer_fails.used <= f->srv.peer_fails.cap * 3 / 4);
    assert_true(f->srv.user_fails.evicted > 0);
    assert_int_equal(attempt(f, "alice", "uid:65533", 1), 0);
    assert_int_equal(attempt(f, "alice", "uid:0/client:ssh:victim", 1), 0);
}

/* Eviction takes entries that delay nobody first: a client locked out of
 * alice stays locked out however many other clients fail meanwhile. */
static void test_running_delay_survives_a_flood(void **state)
{
    fx *f = *state;
    char login[32], client[48];

    for (unsigned i = 0; i < f->cfg.lockout_threshold; i++)
        assert_int_equal(attempt(f, "alice", "tcp:192.0.2.1", 0), 0);
    assert_int_equal(attempt(f, "alice", "tcp:192.0.2.1", 1), GH_ERATE);
    for (int i = 0; i < FLOOD; i++) {
        snprintf(login, sizeof(login), "x%06d", i);
        snprintf(client, sizeof(client), "tcp:2001:db8::%x", i);
        attempt(f, login, client, 0);
    }
    assert_true(f->srv.user_fails.evicted > 0);
    assert_int_equal(attempt(f, "alice", "tcp:192.0.2.1", 1), GH_ERATE);
}

/* Entries with an attempt in flight. */
static unsigned in_flight(const gh_failtab *t)
{
    unsigned n = 0;
    for (size_t i = 0; i < t->cap; i++)
        n += t->slots[i].key != 0 && t->slots[i].inflight > 0;
    return n;
}

/* An attempt in flight keeps its entries through a flood: its settle finds
 * them, and the per-login in-flight cap still holds meanwhile. */
static void test_in_flight_entries_are_never_evicted(void **state)
{
    fx *f = *state;
    char login[32], client[48];
    gh_admission held;

    f->cfg.auth_max_inflight_per_login = 1;
    assert_int_equal(gh__lockout_admit(&f->srv, "alice", "uid:1000", &held), 0);
    for (int i = 0; i < FLOOD; i++) {
        snprintf(login, sizeof(login), "x%06d", i);
        snprintf(client, sizeof(client), "uid:0/client:%d", i);
        attempt(f, login, client, 0);
    }
    assert_true(f->srv.user_fails.evicted > 0 && f->srv.peer_fails.evicted > 0);
    assert_int_equal(in_flight(&f->srv.user_fails), 1);
    assert_int_equal(in_flight(&f->srv.peer_fails), 1);
    gh_admission a;
    assert_int_equal(gh__lockout_admit(&f->srv, "alice", "uid:1001", &a), GH_ERATE);
    assert_true(a.busy);
    gh__lockout_settle(&f->srv, &held, 1);
    assert_int_equal(attempt(f, "alice", "uid:1001", 1), 0);
}

/* Entries that remember nothing are deleted at settle (the login table only
 * holds attempts in flight). Settling many interleaved admissions in a
 * shuffled order checks that deletion keeps every probe run findable: a
 * lost entry would stay behind with an attempt in flight. */
static void test_settled_successes_leave_nothing(void **state)
{
    fx *f = *state;
    enum { N = 5000 };
    gh_admission *a = calloc(N, sizeof(*a));
    unsigned *order = calloc(N, sizeof(*order));
    char login[32], client[32];

    f->cfg.peer_failure_threshold = N + 1;
    f->cfg.lockout_threshold = N + 1;
    f->cfg.auth_max_inflight_per_login = N;
    for (unsigned i = 0; i < N; i++) {
        snprintf(login, sizeof(login), "u%u", i % 997);
        snprintf(client, sizeof(client), "uid:%u", i % 13);
        assert_int_equal(gh__lockout_admit(&f->srv, login, client, &a[i]), 0);
        order[i] = i;
    }
    assert_true(used(f) > 0);
    for (unsigned i = N - 1; i > 0; i--) {
        unsigned k = randombytes_uniform(i + 1), t = order[i];
        order[i] = order[k];
        order[k] = t;
    }
    for (unsigned i = 0; i < N; i++)
        gh__lockout_settle(&f->srv, &a[order[i]], 1);
    assert_int_equal(used(f), 0);
    free(a);
    free(order);
}

/* ---- G7: the rehash write-back is compare-and-set ---- */

typedef struct store_fx {
    char dir[64];
    gh_store *s;
    gh_store_reader *r;
} store_fx;

typedef struct rehash {
    gh_user u;
    const char *verified, *rehash;
} rehash;

static int w_user_add(gh_txn *t, void *arg)
{
    return gh_store_user_add(t, &((rehash *)arg)->u);
}

static int w_set_verifier(gh_txn *t, void *arg)
{
    return gh_store_user_update(t, &((rehash *)arg)->u, GH_UF_VERIFIER);
}

static int w_rehash(gh_txn *t, void *arg)
{
    rehash *w = arg;
    return gh__auth_rehash_apply(t, w->u.id, w->verified, w->rehash);
}

static void stored_verifier(store_fx *s, uint64_t id, char out[GH_VERIFIER_MAX + 1])
{
    gh_txn *t;
    gh_user u;
    assert_int_equal(gh_store_read_begin(s->r, &t), 0);
    assert_int_equal(gh_store_user_get_by_id(t, id, &u), 0);
    gh_store_read_end(s->r);
    memcpy(out, u.verifier, GH_VERIFIER_MAX + 1);
}

static void hash(const char *pw, unsigned long long ops, char out[crypto_pwhash_STRBYTES])
{
    assert_int_equal(crypto_pwhash_str(out, pw, strlen(pw), ops, crypto_pwhash_MEMLIMIT_MIN), 0);
}

static void test_rehash_is_compare_and_set(void **state)
{
    (void)state;
    store_fx s = {0};
    gh_store_opts o = {0};
    char err[256], v_old[crypto_pwhash_STRBYTES], v_rehash[crypto_pwhash_STRBYTES];
    char v_reset[crypto_pwhash_STRBYTES], v_next[crypto_pwhash_STRBYTES];
    char now[GH_VERIFIER_MAX + 1];
    rehash w = {0};

    snprintf(s.dir, sizeof(s.dir), "/tmp/gh-test-lockout-XXXXXX");
    assert_non_null(mkdtemp(s.dir));
    o.state_dir = s.dir;
    o.no_sync = 1;
    assert_int_equal(gh_store_open(&s.s, &o, err, sizeof(err)), 0);
    assert_int_equal(gh_store_reader_new(s.s, &s.r), 0);

    hash("old password", 1, v_old);     /* stored at a cost below the configured one */
    hash("old password", 2, v_rehash);  /* what the login computed meanwhile */
    hash("reset password", 2, v_reset); /* the admin's reset that won the race */
    hash("reset password", 3, v_next);
    snprintf(w.u.name, sizeof(w.u.name), "alice");
    snprintf(w.u.verifier, sizeof(w.u.verifier), "%s", v_old);
    assert_int_equal(gh_store_write(s.s, w_user_add, &w, err, sizeof(err)), 0);

    /* the reset commits between the login's verification and its write-back */
    snprintf(w.u.verifier, sizeof(w.u.verifier), "%s", v_reset);
    assert_int_equal(gh_store_write(s.s, w_set_verifier, &w, err, sizeof(err)), 0);
    w.verified = v_old;
    w.rehash = v_rehash;
    assert_int_equal(gh_store_write(s.s, w_rehash, &w, err, sizeof(err)), 0);
    stored_verifier(&s, w.u.id, now);
    assert_string_equal(now, v_reset); /* the old password did not come back */
    assert_int_not_equal(crypto_pwhash_str_verify(now, "old password", 12), 0);

    /* unchanged since verified: the rehash is stored */
    w.verified = v_reset;
    w.rehash = v_next;
    assert_int_equal(gh_store_write(s.s, w_rehash, &w, err, sizeof(err)), 0);
    stored_verifier(&s, w.u.id, now);
    assert_string_equal(now, v_next);

    /* a user deleted meanwhile: nothing written, no error */
    w.u.id += 1000;
    assert_int_equal(gh_store_write(s.s, w_rehash, &w, err, sizeof(err)), 0);

    gh_store_reader_free(s.r);
    gh_store_close(s.s);
    char p[128];
    snprintf(p, sizeof(p), "%s/data.mdb", s.dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/lock.mdb", s.dir);
    unlink(p);
    rmdir(s.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_spraying_peer_takes_no_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_clients_cannot_fill_the_tables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_running_delay_survives_a_flood, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_flight_entries_are_never_evicted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settled_successes_leave_nothing, setup, teardown),
        cmocka_unit_test(test_rehash_is_compare_and_set),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
