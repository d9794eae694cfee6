/*
 * test_sessions.c: sessions die with the account (issue 10), on the real
 * store: the user -> token index and its revocation, the state and tombstone
 * changes that revoke, the token records with their peer (and v1 records),
 * the schema 1 -> 2 migration that rebuilds the index, the change-log prune,
 * and the server's token and admin resolution (gh__token_user,
 * gh__user_is_admin) including an upstream group named like admin_group.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>
#include <sodium.h>

#include "schema/store.h"
#include "server/config.h"
#include "server/server.h"

typedef struct fx {
    char dir[64];
    gh_store *s;
    gh_store_reader *r;
    gh_config cfg;
    gh_server srv;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    char err[256];
    gh_store_opts o = {0};

    snprintf(f->dir, sizeof(f->dir), "/tmp/gh-test-sess-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    o.state_dir = f->dir;
    o.no_sync = 1;
    assert_int_equal(gh_store_open(&f->s, &o, err, sizeof(err)), 0);
    assert_int_equal(gh_store_reader_new(f->s, &f->r), 0);
    gh_config_defaults(&f->cfg);
    f->srv.cfg = &f->cfg;
    f->srv.store = f->s;
    randombytes_buf(f->srv.token_key, sizeof(f->srv.token_key));
    *state = f;
    return 0;
}

static void rm_dir(const char *dir)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/data.mdb", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/lock.mdb", dir);
    unlink(p);
    rmdir(dir);
}

static int teardown(void **state)
{
    fx *f = *state;
    if (f->r)
        gh_store_reader_free(f->r);
    if (f->s)
        gh_store_close(f->s);
    gh_config_free(&f->cfg);
    rm_dir(f->dir);
    free(f);
    return 0;
}

/* ---- write helpers ---- */

typedef struct wr {
    gh_user u;
    gh_group g;
    gh_token t;
    unsigned mask;
    uint64_t gid;
    size_t n;
} wr;

static int w_user_add(gh_txn *t, void *arg)
{
    return gh_store_user_add(t, &((wr *)arg)->u);
}

static int w_group_add(gh_txn *t, void *arg)
{
    return gh_store_group_add(t, &((wr *)arg)->g);
}

static int w_member(gh_txn *t, void *arg)
{
    wr *w = arg;
    return gh_store_member_add(t, w->gid, (gh_member){GH_MEMBER_USER, w->u.id});
}

static int w_user_update(gh_txn *t, void *arg)
{
    wr *w = arg;
    return gh_store_user_update(t, &w->u, w->mask);
}

static int w_token_put(gh_txn *t, void *arg)
{
    return gh_store_token_put(t, &((wr *)arg)->t);
}

static int w_revoke(gh_txn *t, void *arg)
{
    wr *w = arg;
    return gh_store_token_revoke_user(t, w->u.id, &w->n);
}

static void wr_ok(fx *f, gh_store_write_fn fn, wr *w)
{
    char err[256] = "";
    int rc = gh_store_write(f->s, fn, w, err, sizeof(err));
    if (rc != 0)
        fail_msg("write failed: %s (%s)", gh_strerror(rc), err);
}

static uint64_t add_user(fx *f, const char *name)
{
    wr w = {0};
    snprintf(w.u.name, sizeof(w.u.name), "%s", name);
    wr_ok(f, w_user_add, &w);
    return w.u.id;
}

/* A token for user id; returns the token string in tok (44 bytes). */
static void login(fx *f, uint64_t uid, const char *peer, char tok[48])
{
    uint8_t raw[32];
    wr w = {0};

    randombytes_buf(raw, sizeof(raw));
    sodium_bin2base64(tok, 48, raw, sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    assert_int_equal(gh__token_hash(&f->srv, tok, w.t.hash), 0);
    w.t.user_id = uid;
    w.t.expires = time(NULL) + 3600;
    snprintf(w.t.peer, sizeof(w.t.peer), "%s", peer);
    wr_ok(f, w_token_put, &w);
}

static int tok_count(const gh_token *t, void *arg)
{
    (void)t;
    (*(size_t *)arg)++;
    return 0;
}

static size_t sessions(fx *f, uint64_t uid)
{
    gh_txn *t;
    size_t n = 0;
    assert_int_equal(gh_store_read_begin(f->r, &t), 0);
    assert_int_equal(gh_store_token_list_user(t, uid, tok_count, &n), 0);
    gh_store_read_end(f->r);
    return n;
}

/* 0: token valid for an active user; GH_ETOKEN otherwise. */
static int token_ok(fx *f, const char *tok)
{
    gh_txn *t;
    gh_user u;
    int64_t exp;
    assert_int_equal(gh_store_read_begin(f->r, &t), 0);
    int rc = gh__token_user(&f->srv, t, tok, time(NULL), &u, &exp);
    gh_store_read_end(f->r);
    return rc;
}

static gh_user get_user(fx *f, uint64_t id)
{
    gh_txn *t;
    gh_user u;
    assert_int_equal(gh_store_read_begin(f->r, &t), 0);
    assert_int_equal(gh_store_user_get_by_id(t, id, &u), 0);
    gh_store_read_end(f->r);
    return u;
}

/* ---- tests ---- */

static void test_list_and_revoke(void **state)
{
    fx *f = *state;
    char a1[48], a2[48], b1[48];
    uint64_t alice = add_user(f, "alice"), bob = add_user(f, "bob");

    login(f, alice, "uid:1000", a1);
    login(f, alice, "tcp:127.0.0.1", a2);
    login(f, bob, "uid:0", b1);
    assert_int_equal(sessions(f, alice), 2);
    assert_int_equal(sessions(f, bob), 1);
    assert_int_equal(token_ok(f, a1), 0);

    wr w = {0};
    w.u.id = alice;
    wr_ok(f, w_revoke, &w);
    assert_int_equal(w.n, 2);
    assert_int_equal(sessions(f, alice), 0);
    assert_int_equal(token_ok(f, a1), GH_ETOKEN);
    assert_int_equal(token_ok(f, a2), GH_ETOKEN);
    assert_int_equal(token_ok(f, b1), 0); /* bob untouched */
    wr_ok(f, w_revoke, &w);
    assert_int_equal(w.n, 0);
}

static void test_peer_kept(void **state)
{
    fx *f = *state;
    char tok[48];
    uint8_t hash[GH_TOKEN_HASH_BYTES];
    gh_txn *t;
    gh_token out;
    uint64_t alice = add_user(f, "alice");

    login(f, alice, "tcp:127.0.0.1", tok);
    assert_int_equal(gh__token_hash(&f->srv, tok, hash), 0);
    assert_int_equal(gh_store_read_begin(f->r, &t), 0);
    assert_int_equal(gh_store_token_get(t, hash, &out), 0);
    gh_store_read_end(f->r);
    assert_string_equal(out.peer, "tcp:127.0.0.1");
    assert_int_equal(out.user_id, alice);
}

/* Every state change that takes an account away ends its sessions in the
 * same transaction; going back to active does not bring them back. */
static void test_state_changes_revoke(void **state)
{
    fx *f = *state;
    static const gh_user_state states[] = {GH_USER_LOCKED, GH_USER_DISABLED};
    char tok[48];
    uint64_t id = add_user(f, "carol");

    for (size_t i = 0; i < 2; i++) {
        login(f, id, "uid:1", tok);
        assert_int_equal(token_ok(f, tok), 0);
        wr w = {0};
        w.u = get_user(f, id);
        w.u.state = states[i];
        w.mask = GH_UF_STATE;
        wr_ok(f, w_user_update, &w);
        assert_int_equal(sessions(f, id), 0);
        w.u.state = GH_USER_ACTIVE;
        wr_ok(f, w_user_update, &w);
        assert_int_equal(token_ok(f, tok), GH_ETOKEN);
    }
    /* a change of another field keeps the sessions */
    login(f, id, "uid:1", tok);
    wr w = {0};
    w.u = get_user(f, id);
    snprintf(w.u.mail, sizeof(w.u.mail), "c@example.com");
    w.mask = GH_UF_MAIL;
    wr_ok(f, w_user_update, &w);
    assert_int_equal(token_ok(f, tok), 0);
}

/* The upstream tombstone (sync_apply's apply_delete makes exactly this
 * update: state disabled + tombstone) revokes the user's sessions. */
static void test_tombstone_revokes(void **state)
{
    fx *f = *state;
    char tok[48];
    wr w = {0};

    snprintf(w.u.name, sizeof(w.u.name), "dave");
    snprintf(w.u.origin, sizeof(w.u.origin), "corp");
    snprintf(w.u.origin_key, sizeof(w.u.origin_key), "uuid-1");
    snprintf(w.u.origin_dn, sizeof(w.u.origin_dn), "uid=dave,dc=x");
    wr_ok(f, w_user_add, &w);
    login(f, w.u.id, "uid:1", tok);
    assert_int_equal(token_ok(f, tok), 0);
    w.u.tombstone = time(NULL);
    w.u.state = GH_USER_DISABLED;
    w.mask = GH_UF_STATE | GH_UF_TOMBSTONE;
    wr_ok(f, w_user_update, &w);
    assert_int_equal(sessions(f, w.u.id), 0);
    assert_int_equal(token_ok(f, tok), GH_ETOKEN);
}

/* A login that raced a lock cannot leave a token behind: the store refuses
 * a token for a user who is not active. */
static void test_no_token_for_inactive_user(void **state)
{
    fx *f = *state;
    uint64_t id = add_user(f, "erin");
    wr w = {0};
    char err[256];

    w.u = get_user(f, id);
    w.u.state = GH_USER_LOCKED;
    w.mask = GH_UF_STATE;
    wr_ok(f, w_user_update, &w);
    memset(&w.t, 0, sizeof(w.t));
    randombytes_buf(w.t.hash, sizeof(w.t.hash));
    w.t.user_id = id;
    w.t.expires = time(NULL) + 60;
    assert_int_equal(gh_store_write(f->s, w_token_put, &w, err, sizeof(err)), GH_ELOCKED);
    w.u.state = GH_USER_DISABLED;
    wr_ok(f, w_user_update, &w);
    assert_int_equal(gh_store_write(f->s, w_token_put, &w, err, sizeof(err)), GH_EDISABLED);
    assert_int_equal(sessions(f, id), 0);
}

static void make_admin_group(fx *f, const char *origin, uint64_t member)
{
    wr w = {0};
    snprintf(w.g.name, sizeof(w.g.name), "gatehouse-admins");
    if (origin) {
        snprintf(w.g.origin, sizeof(w.g.origin), "%s", origin);
        snprintf(w.g.origin_key, sizeof(w.g.origin_key), "g-uuid");
        snprintf(w.g.origin_dn, sizeof(w.g.origin_dn), "cn=gatehouse-admins,dc=x");
    }
    wr_ok(f, w_group_add, &w);
    w.gid = w.g.id;
    w.u.id = member;
    wr_ok(f, w_member, &w);
}

static int is_admin(fx *f, uint64_t id)
{
    gh_txn *t;
    assert_int_equal(gh_store_read_begin(f->r, &t), 0);
    int rc = gh__user_is_admin(&f->srv, t, id);
    gh_store_read_end(f->r);
    return rc;
}

static void test_admin_needs_active_local(void **state)
{
    fx *f = *state;
    uint64_t id = add_user(f, "root1");
    make_admin_group(f, NULL, id);
    assert_int_equal(is_admin(f, id), 1);
    wr w = {0};
    w.u = get_user(f, id);
    w.u.state = GH_USER_DISABLED;
    w.mask = GH_UF_STATE;
    wr_ok(f, w_user_update, &w);
    assert_int_equal(is_admin(f, id), 0);
}

/* An upstream group that happens to be named like admin_group never grants
 * admin: whoever runs the upstream would otherwise run Gatehouse. */
static void test_upstream_admin_group_refused(void **state)
{
    fx *f = *state;
    uint64_t id = add_user(f, "mallory");
    make_admin_group(f, "corp", id);
    assert_int_equal(is_admin(f, id), 0);
}

/* A schema-1 database whose user -> token index lost an entry (and holds a
 * token of a deleted user): opening migrates to 2, re-indexes, drops the
 * orphan; revocation then finds every token. */
static void test_migrate_reindexes_tokens(void **state)
{
    fx *f = *state;
    char tok[48], tok2[48], err[256];
    uint8_t v[8];
    uint64_t id = add_user(f, "frank");
    gh_store_opts o = {.state_dir = f->dir, .no_sync = 1};
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi idx, meta, toks;

    login(f, id, "uid:1", tok);
    login(f, id, "uid:1", tok2);
    gh_store_reader_free(f->r);
    gh_store_close(f->s);
    f->r = NULL;
    f->s = NULL;

    /* Damage it as an older writer could have: empty index, a v1 record of
     * a user that does not exist, schema version 1. */
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 32);
    assert_int_equal(mdb_env_open(env, f->dir, MDB_NOSYNC, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "token_user", MDB_DUPSORT | MDB_DUPFIXED, &idx), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_dbi_open(txn, "tokens", 0, &toks), 0);
    assert_int_equal(mdb_drop(txn, idx, 0), 0);
    uint8_t orphan_key[32], rec[25] = {1};
    memset(orphan_key, 0x5a, sizeof(orphan_key));
    rec[8] = 99; /* user id 99 */
    MDB_val ok = {32, orphan_key}, ov = {25, rec};
    assert_int_equal(mdb_put(txn, toks, &ok, &ov, 0), 0);
    memset(v, 0, sizeof(v));
    v[7] = 1;
    MDB_val mk = {14, "schema_version"}, mv = {8, v};
    assert_int_equal(mdb_put(txn, meta, &mk, &mv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    assert_int_equal(gh_store_open(&f->s, &o, err, sizeof(err)), 0);
    assert_int_equal(gh_store_reader_new(f->s, &f->r), 0);
    gh_txn *t;
    uint32_t ver;
    gh_token out;
    assert_int_equal(gh_store_read_begin(f->r, &t), 0);
    assert_int_equal(gh_store_schema_version(t, &ver), 0);
    assert_int_equal(ver, GH_SCHEMA_VERSION);
    assert_int_equal(gh_store_token_get(t, orphan_key, &out), GH_ENOTFOUND);
    gh_store_read_end(f->r);
    assert_int_equal(sessions(f, id), 2);
    wr w = {0};
    w.u.id = id;
    wr_ok(f, w_revoke, &w);
    assert_int_equal(w.n, 2);
    assert_int_equal(token_ok(f, tok), GH_ETOKEN);
    assert_int_equal(token_ok(f, tok2), GH_ETOKEN);
}

/* ---- change-log retention ---- */

typedef struct prune {
    int64_t before;
    size_t max, n;
} prune;

static int w_prune(gh_txn *t, void *arg)
{
    prune *p = arg;
    return gh_store_changelog_prune(t, p->before, p->max, &p->n);
}

static int first_seq(const gh_change *c, void *arg)
{
    *(uint64_t *)arg = c->seq;
    return 1;
}

static void test_changelog_prune(void **state)
{
    fx *f = *state;
    gh_txn *t;
    uint64_t last0, last1, first;
    char name[16];

    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "u%d", i);
        add_user(f, name);
    }
    assert_int_equal(gh_store_read_begin(f->r, &t), 0);
    gh_store_changelog_seq(t, &last0);
    gh_store_read_end(f->r);
    /* nothing is older than an hour ago */
    prune p = {.before = time(NULL) - 3600, .max = 100};
    assert_int_equal(gh_store_write(f->s, w_prune, &p, NULL, 0), 0);
    assert_int_equal(p.n, 0);
    /* everything is older than an hour ahead: batches of 4 */
    p.before = time(NULL) + 3600;
    p.max = 4;
    assert_int_equal(gh_store_write(f->s, w_prune, &p, NULL, 0), 0);
    assert_int_equal(p.n, 4);
    assert_int_equal(gh_store_read_begin(f->r, &t), 0);
    first = 0;
    gh_store_changelog_list(t, 0, 0, first_seq, &first);
    gh_store_changelog_seq(t, &last1);
    gh_store_read_end(f->r);
    assert_int_equal(first, 5);         /* the oldest went first */
    assert_int_equal(last1, last0 + 1); /* plus the audit.prune entry; no seq reused */
}

/* ---- a password change: gh__password_store (passwd.change, LDAP Password Modify) ---- */

typedef struct pwstore {
    uint64_t id;
    char expect[GH_VERIFIER_MAX + 1];
    char nv[GH_VERIFIER_MAX + 1];
    size_t revoked;
} pwstore;

static int w_password_store(gh_txn *t, void *arg)
{
    pwstore *p = arg;
    gh_user u;
    int rc = gh_store_user_get_by_id(t, p->id, &u);
    return rc != 0 ? rc : gh__password_store(t, &u, p->expect, p->nv, &p->revoked);
}

/* The new verifier only over the one verified (compare-and-set: a change
 * verified against a password that was reset meanwhile must not win), and
 * every token of the user revoked in the same txn; a refused change revokes
 * nothing. */
static void test_password_store_cas_and_revoke(void **state)
{
    fx *f = *state;
    char a1[48], a2[48], b1[48];
    uint64_t alice = add_user(f, "alice"), bob = add_user(f, "bob");
    wr w = {0};
    pwstore p = {0};
    char err[256];

    w.u = get_user(f, alice);
    snprintf(w.u.verifier, sizeof(w.u.verifier), "$argon2id$v=19$m=8,t=1,p=1$old$old");
    w.mask = GH_UF_VERIFIER;
    wr_ok(f, w_user_update, &w);
    login(f, alice, "uid:1000", a1);
    login(f, alice, "ldapi:uid=1000", a2);
    login(f, bob, "uid:1001", b1);

    p.id = alice;
    snprintf(p.expect, sizeof(p.expect), "$argon2id$v=19$m=8,t=1,p=1$old$old");
    snprintf(p.nv, sizeof(p.nv), "$argon2id$v=19$m=8,t=1,p=1$new$new");
    assert_int_equal(gh_store_write(f->s, w_password_store, &p, err, sizeof(err)), 0);
    assert_string_equal(get_user(f, alice).verifier, p.nv);
    assert_int_equal(p.revoked, 2);
    assert_int_equal(token_ok(f, a1), GH_ETOKEN);
    assert_int_equal(token_ok(f, a2), GH_ETOKEN);
    assert_int_equal(token_ok(f, b1), 0); /* another user's sessions stay */

    /* a change verified against the old password, racing the one above */
    login(f, alice, "uid:1000", a1);
    snprintf(p.nv, sizeof(p.nv), "$argon2id$v=19$m=8,t=1,p=1$late$late");
    p.revoked = 0;
    assert_int_equal(gh_store_write(f->s, w_password_store, &p, err, sizeof(err)), GH_ECREDS);
    assert_non_null(strstr(err, "changed meanwhile"));
    assert_string_equal(get_user(f, alice).verifier, "$argon2id$v=19$m=8,t=1,p=1$new$new");
    assert_int_equal(token_ok(f, a1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_list_and_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_changes_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tombstone_revokes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_token_for_inactive_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_needs_active_local, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_admin_group_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_reindexes_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changelog_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_store_cas_and_revoke, setup, teardown),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
