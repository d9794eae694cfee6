/*
 * test_store.c: unit tests of the LMDB store (schema/store.h).
 *
 * The one thing to know: every test opens its own store in a fresh mkdtemp
 * directory and removes it in teardown; tests that check the on-disk format
 * (v0 migration, unknown fields, newer schema) write with raw mdb_* calls and
 * spell the layout out here on purpose, independently of the store's code.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <lmdb.h>

#include "schema/log.h"
#include "schema/store-int.h"
#include "schema/store.h"

#define ARGON "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"

typedef struct fx {
    char root[64];
    char dir[96];
    gh_store_opts opts;
    gh_store *s;
    gh_store_reader *r;
} fx;

/* ---- fixture ---- */

static void fx_open(fx *f)
{
    char err[256] = "";
    int rc = gh_store_open(&f->s, &f->opts, err, sizeof(err));
    if (rc != 0)
        fail_msg("gh_store_open: %d %s", rc, err);
    assert_int_equal(gh_store_reader_new(f->s, &f->r), 0);
}

static void fx_close(fx *f)
{
    gh_store_reader_free(f->r);
    f->r = NULL;
    gh_store_close(f->s);
    f->s = NULL;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->root, sizeof(f->root), "/tmp/ghstore-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->dir, sizeof(f->dir), "%s/state", f->root);
    f->opts.state_dir = f->dir;
    f->opts.no_sync = 1;
    f->opts.uid_min = 10000;
    *state = f;
    return 0;
}

static int setup_open(void **state)
{
    setup(state);
    fx_open(*state);
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    char p[160];

    if (f->s != NULL)
        fx_close(f);
    snprintf(p, sizeof(p), "%s/data.mdb", f->dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/lock.mdb", f->dir);
    unlink(p);
    rmdir(f->dir);
    rmdir(f->root);
    free(f);
    return 0;
}

static gh_txn *rd(fx *f)
{
    gh_txn *t = NULL;
    assert_int_equal(gh_store_read_begin(f->r, &t), 0);
    return t;
}

static void rd_end(fx *f)
{
    gh_store_read_end(f->r);
}

/* ---- write fns ---- */

static int w_user_add(gh_txn *t, void *arg)
{
    return gh_store_user_add(t, arg);
}

static int w_group_add(gh_txn *t, void *arg)
{
    return gh_store_group_add(t, arg);
}

struct upd {
    gh_user u;
    gh_group g;
    unsigned mask;
};

static int w_user_update(gh_txn *t, void *arg)
{
    struct upd *u = arg;
    return gh_store_user_update(t, &u->u, u->mask);
}

static int w_group_update(gh_txn *t, void *arg)
{
    struct upd *u = arg;
    return gh_store_group_update(t, &u->g, u->mask);
}

static int w_user_del(gh_txn *t, void *arg)
{
    return gh_store_user_del(t, *(uint64_t *)arg);
}

static int w_group_del(gh_txn *t, void *arg)
{
    return gh_store_group_del(t, *(uint64_t *)arg);
}

struct mem {
    uint64_t group;
    gh_member m;
};

static int w_member_add(gh_txn *t, void *arg)
{
    struct mem *m = arg;
    return gh_store_member_add(t, m->group, m->m);
}

static int w_member_remove(gh_txn *t, void *arg)
{
    struct mem *m = arg;
    return gh_store_member_remove(t, m->group, m->m);
}

static int w_role_add(gh_txn *t, void *arg)
{
    return gh_store_role_add(t, arg);
}

static int w_role_set(gh_txn *t, void *arg)
{
    return gh_store_role_set(t, arg);
}

struct roledel {
    const char *name;
    int force;
};

static int w_role_del(gh_txn *t, void *arg)
{
    struct roledel *d = arg;
    return gh_store_role_del(t, d->name, d->force);
}

static int w_binding_add(gh_txn *t, void *arg)
{
    return gh_store_binding_add(t, arg);
}

static int w_binding_del(gh_txn *t, void *arg)
{
    return gh_store_binding_del(t, *(uint64_t *)arg);
}

static int w_token_put(gh_txn *t, void *arg)
{
    return gh_store_token_put(t, arg);
}

static int w_token_del(gh_txn *t, void *arg)
{
    return gh_store_token_del(t, arg);
}

static int w_token_purge(gh_txn *t, void *arg)
{
    return gh_store_token_purge(t, 1000, arg);
}

static int w_sync_put(gh_txn *t, void *arg)
{
    gh_txn_set_actor(t, "sync:corp");
    return gh_store_sync_put(t, "corp", arg, strlen(arg));
}

/* ---- helpers ---- */

static gh_user mkuser(const char *name)
{
    gh_user u;
    memset(&u, 0, sizeof(u));
    snprintf(u.name, sizeof(u.name), "%s", name);
    return u;
}

static gh_group mkgroup(const char *name)
{
    gh_group g;
    memset(&g, 0, sizeof(g));
    snprintf(g.name, sizeof(g.name), "%s", name);
    return g;
}

static uint64_t add_user(fx *f, const char *name)
{
    gh_user u = mkuser(name);
    char err[256];
    int rc = gh_store_write(f->s, w_user_add, &u, err, sizeof(err));
    if (rc != 0)
        fail_msg("add user %s: %d %s", name, rc, err);
    return u.id;
}

static uint64_t add_group(fx *f, const char *name)
{
    gh_group g = mkgroup(name);
    char err[256];
    int rc = gh_store_write(f->s, w_group_add, &g, err, sizeof(err));
    if (rc != 0)
        fail_msg("add group %s: %d %s", name, rc, err);
    return g.id;
}

static int member_add(fx *f, uint64_t group, gh_member_kind kind, uint64_t id)
{
    struct mem m = {group, {kind, id}};
    return gh_store_write(f->s, w_member_add, &m, NULL, 0);
}

static int member_remove(fx *f, uint64_t group, gh_member_kind kind, uint64_t id)
{
    struct mem m = {group, {kind, id}};
    return gh_store_write(f->s, w_member_remove, &m, NULL, 0);
}

static int user_add_rc(fx *f, gh_user *u, char *err, size_t errlen)
{
    return gh_store_write(f->s, w_user_add, u, err, errlen);
}

static int collect_id(uint64_t id, void *arg)
{
    uint64_t *v = arg;
    v[++v[0]] = id;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The user's effective groups, sorted, into out[1..]; out[0] = count. */
static void user_groups(fx *f, uint64_t uid, uint64_t *out)
{
    gh_txn *t = rd(f);
    out[0] = 0;
    assert_int_equal(gh_store_user_groups(t, uid, collect_id, out), 0);
    rd_end(f);
    qsort(out + 1, out[0], sizeof(uint64_t), cmp_u64);
}

static uint64_t changelog_seq(fx *f)
{
    uint64_t seq;
    gh_txn *t = rd(f);
    assert_int_equal(gh_store_changelog_seq(t, &seq), 0);
    rd_end(f);
    return seq;
}

static uint64_t authz_gen(fx *f)
{
    uint64_t gen;
    gh_txn *t = rd(f);
    assert_int_equal(gh_store_authz_gen(t, &gen), 0);
    rd_end(f);
    return gen;
}

static int last_change_cb(const gh_change *c, void *arg)
{
    *(gh_change *)arg = *c;
    return 0;
}

static gh_change last_change(fx *f)
{
    gh_change c;
    uint64_t seq = changelog_seq(f);
    gh_txn *t = rd(f);
    memset(&c, 0, sizeof(c));
    assert_true(seq > 0);
    assert_int_equal(gh_store_changelog_list(t, seq - 1, 0, last_change_cb, &c), 0);
    rd_end(f);
    assert_int_equal(c.seq, seq);
    return c;
}

/* ---- users ---- */

static void test_user_roundtrip(void **state)
{
    fx *f = *state;
    gh_user u = mkuser("alice"), out;
    gh_txn *t;

    snprintf(u.display_name, sizeof(u.display_name), "Alice Ærø");
    snprintf(u.mail, sizeof(u.mail), "alice@example.org");
    snprintf(u.verifier, sizeof(u.verifier), "%s", ARGON);
    snprintf(u.origin, sizeof(u.origin), "corp");
    snprintf(u.origin_key, sizeof(u.origin_key), "6f1c-uuid");
    snprintf(u.origin_dn, sizeof(u.origin_dn), "uid=alice,ou=people,dc=example,dc=org");
    u.state = GH_USER_LOCKED;
    u.gid = 4242;
    u.tombstone = 0;
    assert_int_equal(user_add_rc(f, &u, NULL, 0), 0);
    assert_true(u.id > 0);
    assert_int_equal(u.uid, 10000);
    assert_true(u.created > 0);
    assert_true(u.verifier_time > 0);

    t = rd(f);
    memset(&out, 0xAA, sizeof(out));
    assert_int_equal(gh_store_user_get(t, "alice", &out), 0);
    assert_int_equal(out.id, u.id);
    assert_string_equal(out.name, "alice");
    assert_int_equal(out.uid, 10000);
    assert_int_equal(out.gid, 4242);
    assert_int_equal(out.state, GH_USER_LOCKED);
    assert_string_equal(out.display_name, "Alice Ærø");
    assert_string_equal(out.mail, "alice@example.org");
    assert_string_equal(out.verifier, ARGON);
    assert_int_equal(out.verifier_time, u.verifier_time);
    assert_string_equal(out.origin, "corp");
    assert_string_equal(out.origin_key, "6f1c-uuid");
    assert_string_equal(out.origin_dn, "uid=alice,ou=people,dc=example,dc=org");
    assert_int_equal(out.created, u.created);
    assert_int_equal(out.modified, u.modified);

    memset(&out, 0, sizeof(out));
    assert_int_equal(gh_store_user_get_by_id(t, u.id, &out), 0);
    assert_string_equal(out.name, "alice");
    memset(&out, 0, sizeof(out));
    assert_int_equal(gh_store_user_get_by_uid(t, 10000, &out), 0);
    assert_string_equal(out.name, "alice");
    memset(&out, 0, sizeof(out));
    assert_int_equal(gh_store_user_get_by_origin(t, "corp", "6f1c-uuid", &out), 0);
    assert_string_equal(out.name, "alice");

    assert_int_equal(gh_store_user_get(t, "bob", &out), GH_ENOTFOUND);
    assert_true(strlen(gh_txn_errmsg(t)) > 0);
    assert_int_equal(gh_store_user_get_by_id(t, u.id + 1, &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_user_get_by_uid(t, 10001, &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_user_get_by_origin(t, "corp", "other", &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_user_get_by_origin(t, "other", "6f1c-uuid", &out), GH_ENOTFOUND);
    rd_end(f);
}

static void test_uid_assignment(void **state)
{
    fx *f = *state;
    gh_user a = mkuser("a"), b = mkuser("b"), c = mkuser("c"), d = mkuser("d");
    gh_group g = mkgroup("g");

    /* Taken numbers are skipped; explicit numbers below uid_min are fine. */
    a.uid = 10000;
    assert_int_equal(user_add_rc(f, &a, NULL, 0), 0);
    b.uid = 10001;
    assert_int_equal(user_add_rc(f, &b, NULL, 0), 0);
    assert_int_equal(user_add_rc(f, &c, NULL, 0), 0);
    assert_int_equal(c.uid, 10002);
    d.uid = 500;
    assert_int_equal(user_add_rc(f, &d, NULL, 0), 0);
    assert_int_equal(d.uid, 500);
    /* gids are a separate space. */
    assert_int_equal(gh_store_write(f->s, w_group_add, &g, NULL, 0), 0);
    assert_int_equal(g.gid, 10000);
    /* ids are distinct and increasing. */
    assert_true(a.id < b.id && b.id < c.id && c.id < d.id);
}

static void test_user_update(void **state)
{
    fx *f = *state;
    uint64_t aid = add_user(f, "alice");
    uint64_t bid = add_user(f, "bob");
    struct upd up;
    gh_user out;
    gh_txn *t;
    char err[256];
    uint64_t gen;

    /* Rename: index moves, id kept. */
    memset(&up, 0, sizeof(up));
    up.u.id = aid;
    snprintf(up.u.name, sizeof(up.u.name), "alicia");
    snprintf(up.u.mail, sizeof(up.u.mail), "should-not-change");
    up.mask = GH_UF_NAME;
    assert_int_equal(gh_store_write(f->s, w_user_update, &up, NULL, 0), 0);
    t = rd(f);
    assert_int_equal(gh_store_user_get(t, "alice", &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_user_get(t, "alicia", &out), 0);
    assert_int_equal(out.id, aid);
    assert_string_equal(out.mail, "");
    rd_end(f);
    assert_string_equal(last_change(f).op, "user.rename");
    assert_string_equal(last_change(f).target, "alice->alicia");

    /* Rename onto an existing name. */
    snprintf(up.u.name, sizeof(up.u.name), "bob");
    assert_int_equal(gh_store_write(f->s, w_user_update, &up, err, sizeof(err)), GH_EEXISTS);
    assert_non_null(strstr(err, "bob"));

    /* uid change and collision. */
    up.mask = GH_UF_UID;
    up.u.uid = 20000;
    assert_int_equal(gh_store_write(f->s, w_user_update, &up, NULL, 0), 0);
    up.u.id = bid;
    assert_int_equal(gh_store_write(f->s, w_user_update, &up, NULL, 0), GH_EEXISTS);
    up.u.uid = 0;
    assert_int_equal(gh_store_write(f->s, w_user_update, &up, NULL, 0), GH_EINVAL);
    t = rd(f);
    assert_int_equal(gh_store_user_get_by_uid(t, 20000, &out), 0);
    assert_int_equal(out.id, aid);
    assert_int_equal(gh_store_user_get_by_uid(t, 10000, &out), GH_ENOTFOUND);
    rd_end(f);

    /* State change bumps the authorization generation. */
    gen = authz_gen(f);
    up.u.id = bid;
    up.u.state = GH_USER_DISABLED;
    up.mask = GH_UF_STATE | GH_UF_DISPLAY;
    snprintf(up.u.display_name, sizeof(up.u.display_name), "Bob B");
    assert_int_equal(gh_store_write(f->s, w_user_update, &up, NULL, 0), 0);
    assert_true(authz_gen(f) > gen);
    t = rd(f);
    assert_int_equal(gh_store_user_get(t, "bob", &out), 0);
    assert_int_equal(out.state, GH_USER_DISABLED);
    assert_string_equal(out.display_name, "Bob B");
    rd_end(f);

    /* Origin change moves the origin index. */
    up.mask = GH_UF_ORIGIN;
    snprintf(up.u.origin, sizeof(up.u.origin), "corp");
    snprintf(up.u.origin_key, sizeof(up.u.origin_key), "k1");
    assert_int_equal(gh_store_write(f->s, w_user_update, &up, NULL, 0), 0);
    snprintf(up.u.origin_key, sizeof(up.u.origin_key), "k2");
    assert_int_equal(gh_store_write(f->s, w_user_update, &up, NULL, 0), 0);
    t = rd(f);
    assert_int_equal(gh_store_user_get_by_origin(t, "corp", "k1", &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_user_get_by_origin(t, "corp", "k2", &out), 0);
    assert_int_equal(out.id, bid);
    rd_end(f);
    up.u.id = aid;
    assert_int_equal(gh_store_write(f->s, w_user_update, &up, NULL, 0), GH_EEXISTS);

    /* Unknown user. */
    up.u.id = 999;
    up.mask = GH_UF_MAIL;
    assert_int_equal(gh_store_write(f->s, w_user_update, &up, NULL, 0), GH_ENOTFOUND);
}

/* state is computed from two owners: the administrator (GH_UF_STATE sets
 * admin_state) and the upstream (tombstone, GH_UF_UPSTREAM flags); neither
 * overwrites the other. */
static void test_user_state_owners(void **state)
{
    fx *f = *state;
    struct upd up;
    gh_user u = {0}, got;
    gh_txn *t;

    snprintf(u.name, sizeof(u.name), "mirrored");
    snprintf(u.origin, sizeof(u.origin), "corp");
    snprintf(u.origin_key, sizeof(u.origin_key), "k1");
    snprintf(u.origin_dn, sizeof(u.origin_dn), "uid=mirrored,dc=example,dc=com");
    u.upstream_flags = GH_UPSTREAM_DISABLED; /* disabled upstream from the start */
    assert_int_equal(gh_store_write(f->s, w_user_add, &u, NULL, 0), 0);
    t = rd(f);
    assert_int_equal(gh_store_user_get(t, "mirrored", &got), 0);
    rd_end(f);
    assert_int_equal(got.state, GH_USER_DISABLED);
    assert_int_equal(got.admin_state, GH_USER_ACTIVE);

#define SET(field_mask, ...)                                                                       \
    do {                                                                                           \
        memset(&up, 0, sizeof(up));                                                                \
        up.u = got;                                                                                \
        __VA_ARGS__;                                                                               \
        up.mask = (field_mask);                                                                    \
        assert_int_equal(gh_store_write(f->s, w_user_update, &up, NULL, 0), 0);                    \
        t = rd(f);                                                                                 \
        assert_int_equal(gh_store_user_get(t, "mirrored", &got), 0);                               \
        rd_end(f);                                                                                 \
    } while (0)

    SET(GH_UF_UPSTREAM, up.u.upstream_flags = 0);
    assert_int_equal(got.state, GH_USER_ACTIVE);
    SET(GH_UF_STATE, up.u.state = GH_USER_LOCKED); /* the administrator locks */
    assert_int_equal(got.state, GH_USER_LOCKED);
    SET(GH_UF_TOMBSTONE, up.u.tombstone = 1000); /* deleted upstream */
    assert_int_equal(got.state, GH_USER_LOCKED);
    assert_int_equal(got.admin_state, GH_USER_LOCKED);
    SET(GH_UF_TOMBSTONE, up.u.tombstone = 0); /* and back: still locked */
    assert_int_equal(got.state, GH_USER_LOCKED);
    SET(GH_UF_STATE, up.u.state = GH_USER_ACTIVE);
    assert_int_equal(got.state, GH_USER_ACTIVE);
    SET(GH_UF_UPSTREAM, up.u.upstream_flags = GH_UPSTREAM_EXPIRED;
        snprintf(up.u.origin_sid, sizeof(up.u.origin_sid), "S-1-5-21-1-2-3-1001"));
    assert_int_equal(got.state, GH_USER_DISABLED);
    assert_string_equal(got.origin_sid, "S-1-5-21-1-2-3-1001");
    SET(GH_UF_STATE, up.u.state = GH_USER_ACTIVE); /* an admin cannot open it */
    assert_int_equal(got.state, GH_USER_DISABLED);
    SET(GH_UF_UPSTREAM, up.u.upstream_flags = GH_UPSTREAM_LOCKED); /* shown, AD enforces */
    assert_int_equal(got.state, GH_USER_ACTIVE);
    assert_int_equal(got.upstream_flags, GH_UPSTREAM_LOCKED);
#undef SET

    /* records written before admin_state: a sync tombstone's "disabled" was
     * not an administrator's */
    json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:I}", "id", (json_int_t)7, "name", "old",
                          "state", "disabled", "origin", "corp", "origin_key", "k2", "origin_dn",
                          "uid=old,dc=example,dc=com", "tombstone", (json_int_t)1000);
    assert_int_equal(gh__user_from_json(o, &got), 0);
    assert_int_equal(got.admin_state, GH_USER_ACTIVE);
    json_object_set_new(o, "tombstone", json_integer(0));
    assert_int_equal(gh__user_from_json(o, &got), 0);
    assert_int_equal(got.admin_state, GH_USER_DISABLED); /* a live disabled user: the admin's */
    json_decref(o);
}

static void test_user_validation(void **state)
{
    fx *f = *state;
    static const char *bad[] = {
        "",     "-x",    ".x",       "a/b",          "a,b",           "a=b",
        "a*",   "a(b",   "a)b",      "a\\b",         "a+b",           "a<b",
        "a>b",  "a;b",   "a\"b",     "a#b",          "a b",           "a\tb",
        "a\nb", "a\x7f", "\xc0\xaf", "\xed\xa0\x80", "\xe2\x80\x83x", "\xc2\x85x"};
    gh_user u;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        u = mkuser(bad[i]);
        err[0] = '\0';
        assert_int_equal(user_add_rc(f, &u, err, sizeof(err)), GH_EINVAL);
        assert_true(err[0] != '\0');
    }
    /* 64 bytes is fine; 65 cannot even be terminated in the struct. */
    u = mkuser("");
    memset(u.name, 'x', 64);
    assert_int_equal(user_add_rc(f, &u, NULL, 0), 0);
    memset(u.name, 'y', sizeof(u.name));
    assert_int_equal(user_add_rc(f, &u, NULL, 0), GH_ETOOBIG);
    /* Unterminated fixed field. */
    u = mkuser("ok1");
    memset(u.display_name, 'd', sizeof(u.display_name));
    assert_int_equal(user_add_rc(f, &u, NULL, 0), GH_ETOOBIG);
    /* Bad text fields. */
    u = mkuser("ok1");
    snprintf(u.mail, sizeof(u.mail), "a\x01@b");
    assert_int_equal(user_add_rc(f, &u, NULL, 0), GH_EINVAL);
    u = mkuser("ok1");
    snprintf(u.display_name, sizeof(u.display_name), "\xff");
    assert_int_equal(user_add_rc(f, &u, NULL, 0), GH_EINVAL);
    /* Verifier must be an Argon2id string. */
    u = mkuser("ok1");
    snprintf(u.verifier, sizeof(u.verifier), "$2y$10$bcrypt");
    assert_int_equal(user_add_rc(f, &u, err, sizeof(err)), GH_EINVAL);
    assert_non_null(strstr(err, "Argon2id"));
    /* State out of range. */
    u = mkuser("ok1");
    u.state = (gh_user_state)7;
    assert_int_equal(user_add_rc(f, &u, NULL, 0), GH_EINVAL);
    /* Origin rules: key needs an origin, an origin needs a key. */
    u = mkuser("ok1");
    snprintf(u.origin_key, sizeof(u.origin_key), "k");
    assert_int_equal(user_add_rc(f, &u, NULL, 0), GH_EINVAL);
    u = mkuser("ok1");
    snprintf(u.origin, sizeof(u.origin), "corp");
    assert_int_equal(user_add_rc(f, &u, NULL, 0), GH_EINVAL);
    u = mkuser("ok1");
    snprintf(u.origin, sizeof(u.origin), "bad/up");
    snprintf(u.origin_key, sizeof(u.origin_key), "k");
    assert_int_equal(user_add_rc(f, &u, NULL, 0), GH_EINVAL);

    /* Duplicates: name, uid, origin key. */
    u = mkuser("dup");
    u.uid = 5000;
    snprintf(u.origin, sizeof(u.origin), "corp");
    snprintf(u.origin_key, sizeof(u.origin_key), "K");
    assert_int_equal(user_add_rc(f, &u, NULL, 0), 0);
    u = mkuser("dup");
    assert_int_equal(user_add_rc(f, &u, err, sizeof(err)), GH_EEXISTS);
    assert_non_null(strstr(err, "dup"));
    u = mkuser("dup2");
    u.uid = 5000;
    assert_int_equal(user_add_rc(f, &u, err, sizeof(err)), GH_EEXISTS);
    assert_non_null(strstr(err, "5000"));
    u = mkuser("dup3");
    snprintf(u.origin, sizeof(u.origin), "corp");
    snprintf(u.origin_key, sizeof(u.origin_key), "K");
    assert_int_equal(user_add_rc(f, &u, NULL, 0), GH_EEXISTS);
    /* Same key from another upstream is a different user. */
    snprintf(u.origin, sizeof(u.origin), "other");
    assert_int_equal(user_add_rc(f, &u, NULL, 0), 0);
    /* UTF-8 names are fine. */
    u = mkuser("zoë");
    assert_int_equal(user_add_rc(f, &u, NULL, 0), 0);
}

static int list_cb(const gh_user *u, void *arg)
{
    char *buf = arg;
    strcat(buf, u->name);
    strcat(buf, " ");
    return 0;
}

static int list_stop_cb(const gh_user *u, void *arg)
{
    list_cb(u, arg);
    return 1;
}

static void test_user_list(void **state)
{
    fx *f = *state;
    const char *names[] = {"carol", "alice", "bob", "alfred", "albert", "dave"};
    char buf[256];
    uint64_t n;
    gh_txn *t;

    for (size_t i = 0; i < 6; i++)
        add_user(f, names[i]);
    t = rd(f);
    buf[0] = '\0';
    assert_int_equal(gh_store_user_list(t, NULL, NULL, 0, list_cb, buf), 0);
    assert_string_equal(buf, "albert alfred alice bob carol dave ");
    buf[0] = '\0';
    assert_int_equal(gh_store_user_list(t, "al", NULL, 0, list_cb, buf), 0);
    assert_string_equal(buf, "albert alfred alice ");
    buf[0] = '\0';
    assert_int_equal(gh_store_user_list(t, "al", "alfred", 0, list_cb, buf), 0);
    assert_string_equal(buf, "alice ");
    buf[0] = '\0';
    assert_int_equal(gh_store_user_list(t, NULL, "alice", 2, list_cb, buf), 0);
    assert_string_equal(buf, "bob carol ");
    buf[0] = '\0';
    assert_int_equal(gh_store_user_list(t, NULL, NULL, 0, list_stop_cb, buf), 0);
    assert_string_equal(buf, "albert ");
    assert_int_equal(gh_store_user_count(t, &n), 0);
    assert_int_equal(n, 6);
    rd_end(f);
}

/* ---- groups and memberships ---- */

static int gname_cb(const gh_group *g, void *arg)
{
    strcat(arg, g->name);
    strcat(arg, " ");
    return 0;
}

static void test_group_roundtrip(void **state)
{
    fx *f = *state;
    gh_group g = mkgroup("admins"), out;
    struct upd up;
    char buf[128] = "";
    uint64_t n;
    gh_txn *t;

    snprintf(g.description, sizeof(g.description), "The admins");
    snprintf(g.origin, sizeof(g.origin), "corp");
    snprintf(g.origin_key, sizeof(g.origin_key), "gk");
    snprintf(g.origin_dn, sizeof(g.origin_dn), "cn=admins,dc=example");
    g.gid = 3000;
    assert_int_equal(gh_store_write(f->s, w_group_add, &g, NULL, 0), 0);
    add_group(f, "devs");

    t = rd(f);
    assert_int_equal(gh_store_group_get(t, "admins", &out), 0);
    assert_int_equal(out.id, g.id);
    assert_int_equal(out.gid, 3000);
    assert_string_equal(out.description, "The admins");
    assert_string_equal(out.origin, "corp");
    assert_string_equal(out.origin_key, "gk");
    assert_string_equal(out.origin_dn, "cn=admins,dc=example");
    assert_int_equal(out.created, g.created);
    assert_int_equal(gh_store_group_get_by_id(t, g.id, &out), 0);
    assert_string_equal(out.name, "admins");
    assert_int_equal(gh_store_group_get_by_gid(t, 3000, &out), 0);
    assert_string_equal(out.name, "admins");
    assert_int_equal(gh_store_group_get_by_origin(t, "corp", "gk", &out), 0);
    assert_string_equal(out.name, "admins");
    assert_int_equal(gh_store_group_get(t, "nope", &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_group_get_by_gid(t, 1, &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_group_list(t, NULL, NULL, 0, gname_cb, buf), 0);
    assert_string_equal(buf, "admins devs ");
    assert_int_equal(gh_store_group_count(t, &n), 0);
    assert_int_equal(n, 2);
    rd_end(f);

    /* Duplicates and validation. */
    g = mkgroup("admins");
    assert_int_equal(gh_store_write(f->s, w_group_add, &g, NULL, 0), GH_EEXISTS);
    g = mkgroup("x");
    g.gid = 3000;
    assert_int_equal(gh_store_write(f->s, w_group_add, &g, NULL, 0), GH_EEXISTS);
    g = mkgroup("a,b");
    assert_int_equal(gh_store_write(f->s, w_group_add, &g, NULL, 0), GH_EINVAL);
    g = mkgroup("y");
    memset(g.description, 'x', sizeof(g.description));
    assert_int_equal(gh_store_write(f->s, w_group_add, &g, NULL, 0), GH_ETOOBIG);

    /* Update: rename and gid. */
    memset(&up, 0, sizeof(up));
    up.g.id = out.id;
    snprintf(up.g.name, sizeof(up.g.name), "root");
    up.g.gid = 3001;
    up.mask = GH_GF_NAME | GH_GF_GID;
    assert_int_equal(gh_store_write(f->s, w_group_update, &up, NULL, 0), 0);
    t = rd(f);
    assert_int_equal(gh_store_group_get(t, "admins", &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_group_get(t, "root", &out), 0);
    assert_int_equal(out.gid, 3001);
    assert_string_equal(out.description, "The admins");
    assert_int_equal(gh_store_group_get_by_gid(t, 3000, &out), GH_ENOTFOUND);
    rd_end(f);
    snprintf(up.g.name, sizeof(up.g.name), "devs");
    assert_int_equal(gh_store_write(f->s, w_group_update, &up, NULL, 0), GH_EEXISTS);
}

static int member_collect(gh_member m, void *arg)
{
    uint64_t *v = arg;
    v[++v[0]] = (uint64_t)m.kind << 32 | m.id;
    return 0;
}

static void test_membership_closure(void **state)
{
    fx *f = *state;
    uint64_t a = add_group(f, "a"), b = add_group(f, "b"), c = add_group(f, "c");
    uint64_t d = add_group(f, "d");
    uint64_t u1 = add_user(f, "u1"), u2 = add_user(f, "u2");
    uint64_t v[16];
    gh_txn *t;

    /* a > b > c; u1 in c; u2 in b and d. */
    assert_int_equal(member_add(f, a, GH_MEMBER_GROUP, b), 0);
    assert_int_equal(member_add(f, b, GH_MEMBER_GROUP, c), 0);
    assert_int_equal(member_add(f, c, GH_MEMBER_USER, u1), 0);
    assert_int_equal(member_add(f, b, GH_MEMBER_USER, u2), 0);
    assert_int_equal(member_add(f, d, GH_MEMBER_USER, u2), 0);
    user_groups(f, u1, v);
    assert_int_equal(v[0], 3);
    assert_int_equal(v[1], a);
    assert_int_equal(v[2], b);
    assert_int_equal(v[3], c);
    user_groups(f, u2, v);
    assert_int_equal(v[0], 3);
    assert_int_equal(v[1], a);
    assert_int_equal(v[2], b);
    assert_int_equal(v[3], d);

    /* Adding a group above existing members extends their closures: d > a. */
    assert_int_equal(member_add(f, d, GH_MEMBER_GROUP, a), 0);
    user_groups(f, u1, v);
    assert_int_equal(v[0], 4);
    assert_int_equal(v[4], d);

    t = rd(f);
    v[0] = 0;
    assert_int_equal(gh_store_group_effective_users(t, a, collect_id, v), 0);
    qsort(v + 1, v[0], 8, cmp_u64);
    assert_int_equal(v[0], 2);
    assert_int_equal(v[1], u1);
    assert_int_equal(v[2], u2);
    v[0] = 0;
    assert_int_equal(gh_store_group_members(t, b, member_collect, v), 0);
    assert_int_equal(v[0], 2);
    v[0] = 0;
    assert_int_equal(gh_store_member_of(t, (gh_member){GH_MEMBER_USER, u2}, collect_id, v), 0);
    assert_int_equal(v[0], 2);
    v[0] = 0;
    assert_int_equal(gh_store_group_members(t, 999, member_collect, v), GH_ENOTFOUND);
    rd_end(f);

    /* Removing b from a: u1 keeps b, c; u2 keeps b, d (d directly) and loses a. */
    assert_int_equal(member_remove(f, a, GH_MEMBER_GROUP, b), 0);
    user_groups(f, u1, v);
    assert_int_equal(v[0], 2);
    assert_int_equal(v[1], b);
    assert_int_equal(v[2], c);
    user_groups(f, u2, v);
    assert_int_equal(v[0], 2);
    assert_int_equal(v[1], b);
    assert_int_equal(v[2], d);
    assert_int_equal(member_remove(f, a, GH_MEMBER_GROUP, b), GH_ENOTFOUND);
    assert_int_equal(member_remove(f, c, GH_MEMBER_USER, u1), 0);
    user_groups(f, u1, v);
    assert_int_equal(v[0], 0);
}

static void test_membership_errors(void **state)
{
    fx *f = *state;
    uint64_t a = add_group(f, "a"), b = add_group(f, "b"), c = add_group(f, "c");
    uint64_t u = add_user(f, "u");
    char err[256];
    struct mem m;

    assert_int_equal(member_add(f, a, GH_MEMBER_GROUP, b), 0);
    assert_int_equal(member_add(f, b, GH_MEMBER_GROUP, c), 0);
    /* Cycles: self, direct, transitive. */
    assert_int_equal(member_add(f, a, GH_MEMBER_GROUP, a), GH_ECYCLE);
    assert_int_equal(member_add(f, b, GH_MEMBER_GROUP, a), GH_ECYCLE);
    m = (struct mem){c, {GH_MEMBER_GROUP, a}};
    assert_int_equal(gh_store_write(f->s, w_member_add, &m, err, sizeof(err)), GH_ECYCLE);
    assert_non_null(strstr(err, "cycle"));
    /* Duplicate direct membership. */
    assert_int_equal(member_add(f, a, GH_MEMBER_USER, u), 0);
    assert_int_equal(member_add(f, a, GH_MEMBER_USER, u), GH_EEXISTS);
    assert_int_equal(member_add(f, a, GH_MEMBER_GROUP, b), GH_EEXISTS);
    /* Dangling references. */
    assert_int_equal(member_add(f, 999, GH_MEMBER_USER, u), GH_ENOTFOUND);
    assert_int_equal(member_add(f, a, GH_MEMBER_USER, 999), GH_ENOTFOUND);
    assert_int_equal(member_add(f, a, GH_MEMBER_GROUP, 999), GH_ENOTFOUND);
    assert_int_equal(member_add(f, a, (gh_member_kind)9, u), GH_EINVAL);
    assert_int_equal(member_remove(f, b, GH_MEMBER_USER, u), GH_ENOTFOUND);
}

static void test_user_delete_cascade(void **state)
{
    fx *f = *state;
    uint64_t a = add_group(f, "a"), b = add_group(f, "b");
    uint64_t u = add_user(f, "victim"), other = add_user(f, "other");
    gh_role *r = gh_role_new("viewer");
    gh_binding bnd;
    gh_token tok;
    uint64_t v[8], n, gen;
    gh_user out;
    gh_txn *t;

    assert_int_equal(member_add(f, a, GH_MEMBER_GROUP, b), 0);
    assert_int_equal(member_add(f, b, GH_MEMBER_USER, u), 0);
    assert_int_equal(member_add(f, b, GH_MEMBER_USER, other), 0);
    assert_int_equal(gh_store_write(f->s, w_role_add, r, NULL, 0), 0);
    memset(&bnd, 0, sizeof(bnd));
    snprintf(bnd.role, sizeof(bnd.role), "viewer");
    bnd.subject = (gh_member){GH_MEMBER_USER, u};
    assert_int_equal(gh_store_write(f->s, w_binding_add, &bnd, NULL, 0), 0);
    memset(&tok, 0, sizeof(tok));
    memset(tok.hash, 7, sizeof(tok.hash));
    tok.user_id = u;
    assert_int_equal(gh_store_write(f->s, w_token_put, &tok, NULL, 0), 0);

    gen = authz_gen(f);
    assert_int_equal(gh_store_write(f->s, w_user_del, &u, NULL, 0), 0);
    assert_true(authz_gen(f) > gen);
    assert_string_equal(last_change(f).op, "user.del");
    assert_string_equal(last_change(f).target, "victim");

    t = rd(f);
    assert_int_equal(gh_store_user_get(t, "victim", &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_user_get_by_id(t, u, &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_user_get_by_uid(t, 10000, &out), GH_ENOTFOUND);
    v[0] = 0;
    assert_int_equal(gh_store_group_members(t, b, member_collect, v), 0);
    assert_int_equal(v[0], 1);
    assert_int_equal(v[1] & 0xffffffff, other);
    v[0] = 0;
    assert_int_equal(gh_store_user_groups(t, u, collect_id, v), 0);
    assert_int_equal(v[0], 0);
    v[0] = 0;
    assert_int_equal(gh_store_member_of(t, (gh_member){GH_MEMBER_USER, u}, collect_id, v), 0);
    assert_int_equal(v[0], 0);
    assert_int_equal(gh_store_binding_get(t, bnd.id, &bnd), GH_ENOTFOUND);
    assert_int_equal(gh_store_token_get(t, tok.hash, &tok), GH_ENOTFOUND);
    assert_int_equal(gh_store_user_count(t, &n), 0);
    assert_int_equal(n, 1);
    rd_end(f);
    user_groups(f, other, v);
    assert_int_equal(v[0], 2);
    assert_int_equal(gh_store_write(f->s, w_user_del, &u, NULL, 0), GH_ENOTFOUND);
    gh_role_free(r);
}

static void test_group_delete_cascade(void **state)
{
    fx *f = *state;
    uint64_t top = add_group(f, "top"), mid = add_group(f, "mid"), low = add_group(f, "low");
    uint64_t u1 = add_user(f, "u1"), u2 = add_user(f, "u2");
    gh_role *r = gh_role_new("viewer");
    gh_binding bnd;
    uint64_t v[8];
    gh_group out;
    gh_txn *t;

    /* top > mid > low > u1; mid > u2; binding on mid. */
    assert_int_equal(member_add(f, top, GH_MEMBER_GROUP, mid), 0);
    assert_int_equal(member_add(f, mid, GH_MEMBER_GROUP, low), 0);
    assert_int_equal(member_add(f, low, GH_MEMBER_USER, u1), 0);
    assert_int_equal(member_add(f, mid, GH_MEMBER_USER, u2), 0);
    assert_int_equal(gh_store_write(f->s, w_role_add, r, NULL, 0), 0);
    memset(&bnd, 0, sizeof(bnd));
    snprintf(bnd.role, sizeof(bnd.role), "viewer");
    bnd.subject = (gh_member){GH_MEMBER_GROUP, mid};
    assert_int_equal(gh_store_write(f->s, w_binding_add, &bnd, NULL, 0), 0);
    user_groups(f, u1, v);
    assert_int_equal(v[0], 3);

    assert_int_equal(gh_store_write(f->s, w_group_del, &mid, NULL, 0), 0);
    assert_string_equal(last_change(f).op, "group.del");
    user_groups(f, u1, v);
    assert_int_equal(v[0], 1);
    assert_int_equal(v[1], low);
    user_groups(f, u2, v);
    assert_int_equal(v[0], 0);
    t = rd(f);
    assert_int_equal(gh_store_group_get(t, "mid", &out), GH_ENOTFOUND);
    v[0] = 0;
    assert_int_equal(gh_store_group_members(t, top, member_collect, v), 0);
    assert_int_equal(v[0], 0);
    v[0] = 0;
    assert_int_equal(gh_store_member_of(t, (gh_member){GH_MEMBER_GROUP, low}, collect_id, v), 0);
    assert_int_equal(v[0], 0);
    assert_int_equal(gh_store_binding_get(t, bnd.id, &bnd), GH_ENOTFOUND);
    rd_end(f);
    gh_role_free(r);
}

/* ---- roles and bindings ---- */

static void test_role_roundtrip(void **state)
{
    fx *f = *state;
    gh_role *base = gh_role_new("base"), *ed = gh_role_new("editor"), *out = NULL;
    gh_txn *t;

    snprintf(ed->description, sizeof(ed->description), "Edits things");
    assert_int_equal(gh_role_add_rule(base, GH_ALLOW, "read", "project/*"), 0);
    assert_int_equal(gh_role_add_rule(ed, GH_ALLOW, "edit:*", "project/**"), 0);
    assert_int_equal(gh_role_add_rule(ed, GH_DENY, "*", "project/secret/**"), 0);
    assert_int_equal(gh_role_add_parent(ed, "base"), 0);
    /* Parent must exist. */
    assert_int_equal(gh_store_write(f->s, w_role_add, ed, NULL, 0), GH_ENOTFOUND);
    assert_int_equal(gh_store_write(f->s, w_role_add, base, NULL, 0), 0);
    assert_int_equal(gh_store_write(f->s, w_role_add, ed, NULL, 0), 0);
    assert_int_equal(gh_store_write(f->s, w_role_add, ed, NULL, 0), GH_EEXISTS);
    assert_string_equal(last_change(f).op, "role.add");

    t = rd(f);
    assert_int_equal(gh_store_role_get(t, "editor", &out), 0);
    assert_string_equal(out->name, "editor");
    assert_string_equal(out->description, "Edits things");
    assert_int_equal(out->nrules, 2);
    assert_int_equal(out->rules[0].effect, GH_ALLOW);
    assert_string_equal(out->rules[0].action, "edit:*");
    assert_string_equal(out->rules[0].resource, "project/**");
    assert_int_equal(out->rules[1].effect, GH_DENY);
    assert_string_equal(out->rules[1].resource, "project/secret/**");
    assert_int_equal(out->nparents, 1);
    assert_string_equal(out->parents[0], "base");
    assert_true(out->created > 0);
    gh_role_free(out);
    out = NULL;
    assert_int_equal(gh_store_role_get(t, "nope", &out), GH_ENOTFOUND);
    assert_null(out);
    rd_end(f);

    /* role_set replaces the rules. */
    gh_role_free(ed);
    ed = gh_role_new("editor");
    assert_int_equal(gh_role_add_rule(ed, GH_ALLOW, "edit", "doc/x"), 0);
    assert_int_equal(gh_store_write(f->s, w_role_set, ed, NULL, 0), 0);
    assert_string_equal(last_change(f).op, "role.set");
    t = rd(f);
    assert_int_equal(gh_store_role_get(t, "editor", &out), 0);
    assert_int_equal(out->nrules, 1);
    assert_int_equal(out->nparents, 0);
    gh_role_free(out);
    rd_end(f);
    gh_role_free(ed);
    ed = gh_role_new("ghost");
    assert_int_equal(gh_store_write(f->s, w_role_set, ed, NULL, 0), GH_ENOTFOUND);
    gh_role_free(ed);
    gh_role_free(base);
}

static void test_role_validation(void **state)
{
    fx *f = *state;
    gh_role *r;
    char err[256];

    r = gh_role_new("r");
    gh_role_add_rule(r, GH_ALLOW, "de ploy", "x");
    assert_int_equal(gh_store_write(f->s, w_role_add, r, err, sizeof(err)), GH_EINVAL);
    assert_non_null(strstr(err, "rule 1"));
    gh_role_free(r);
    r = gh_role_new("r");
    gh_role_add_rule(r, GH_ALLOW, "deploy", "a/**/b");
    assert_int_equal(gh_store_write(f->s, w_role_add, r, NULL, 0), GH_EINVAL);
    gh_role_free(r);
    r = gh_role_new("r");
    gh_role_add_rule(r, GH_ALLOW, "deploy", "a/b*");
    assert_int_equal(gh_store_write(f->s, w_role_add, r, NULL, 0), GH_EINVAL);
    gh_role_free(r);
    r = gh_role_new("bad/name");
    assert_int_equal(gh_store_write(f->s, w_role_add, r, NULL, 0), GH_EINVAL);
    gh_role_free(r);
    r = gh_role_new("r");
    gh_role_add_parent(r, "r");
    assert_int_equal(gh_store_write(f->s, w_role_add, r, NULL, 0), GH_ECYCLE);
    gh_role_free(r);
    r = gh_role_new("r");
    r->description[0] = '\x01';
    assert_int_equal(gh_store_write(f->s, w_role_add, r, NULL, 0), GH_EINVAL);
    gh_role_free(r);
}

static void test_role_cycle(void **state)
{
    fx *f = *state;
    gh_role *r1 = gh_role_new("r1"), *r2 = gh_role_new("r2"), *r3 = gh_role_new("r3");
    char err[256];

    /* r3 <- r2 <- r1 (r1 inherits r2 inherits r3). */
    assert_int_equal(gh_store_write(f->s, w_role_add, r3, NULL, 0), 0);
    gh_role_add_parent(r2, "r3");
    assert_int_equal(gh_store_write(f->s, w_role_add, r2, NULL, 0), 0);
    gh_role_add_parent(r1, "r2");
    assert_int_equal(gh_store_write(f->s, w_role_add, r1, NULL, 0), 0);
    /* r3 inheriting r1 closes the loop. */
    gh_role_add_parent(r3, "r1");
    assert_int_equal(gh_store_write(f->s, w_role_set, r3, err, sizeof(err)), GH_ECYCLE);
    assert_non_null(strstr(err, "cycle"));
    gh_role_free(r3);
    r3 = gh_role_new("r3");
    gh_role_add_parent(r3, "r2");
    assert_int_equal(gh_store_write(f->s, w_role_set, r3, NULL, 0), GH_ECYCLE);
    gh_role_free(r3);
    r3 = gh_role_new("r3");
    gh_role_add_parent(r3, "r3");
    assert_int_equal(gh_store_write(f->s, w_role_set, r3, NULL, 0), GH_ECYCLE);
    /* A diamond is fine: r4 inherits r1 and r3. */
    gh_role *r4 = gh_role_new("r4");
    gh_role_add_parent(r4, "r1");
    gh_role_add_parent(r4, "r3");
    assert_int_equal(gh_store_write(f->s, w_role_add, r4, NULL, 0), 0);
    gh_role_free(r1);
    gh_role_free(r2);
    gh_role_free(r3);
    gh_role_free(r4);
}

static int name_cb(const char *name, void *arg)
{
    strcat(arg, name);
    strcat(arg, " ");
    return 0;
}

static int binding_count_cb(const gh_binding *b, void *arg)
{
    (void)b;
    (*(int *)arg)++;
    return 0;
}

static void test_role_delete(void **state)
{
    fx *f = *state;
    gh_role *base = gh_role_new("base"), *child = gh_role_new("child"), *out = NULL;
    struct roledel d = {"base", 0};
    uint64_t u = add_user(f, "u");
    gh_binding b;
    char err[256], buf[64] = "";
    gh_txn *t;
    int n = 0;
    json_t *unused = NULL;

    (void)unused;
    assert_int_equal(gh_store_write(f->s, w_role_add, base, NULL, 0), 0);
    gh_role_add_parent(child, "base");
    gh_role_add_rule(child, GH_ALLOW, "x", "y");
    assert_int_equal(gh_store_write(f->s, w_role_add, child, NULL, 0), 0);
    t = rd(f);
    assert_int_equal(gh_store_role_children(t, "base", name_cb, buf), 0);
    assert_string_equal(buf, "child ");
    rd_end(f);
    memset(&b, 0, sizeof(b));
    snprintf(b.role, sizeof(b.role), "base");
    b.subject = (gh_member){GH_MEMBER_USER, u};
    assert_int_equal(gh_store_write(f->s, w_binding_add, &b, NULL, 0), 0);

    /* In use (bound and inherited) without force. */
    assert_int_equal(gh_store_write(f->s, w_role_del, &d, err, sizeof(err)), GH_EINUSE);
    assert_non_null(strstr(err, "base"));
    /* Force: bindings gone, child no longer lists base, child's other fields kept. */
    d.force = 1;
    assert_int_equal(gh_store_write(f->s, w_role_del, &d, NULL, 0), 0);
    assert_string_equal(last_change(f).op, "role.del");
    t = rd(f);
    assert_int_equal(gh_store_role_get(t, "base", &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_binding_get(t, b.id, &b), GH_ENOTFOUND);
    assert_int_equal(
        gh_store_bindings_of_subject(t, (gh_member){GH_MEMBER_USER, u}, binding_count_cb, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(gh_store_role_get(t, "child", &out), 0);
    assert_int_equal(out->nparents, 0);
    assert_int_equal(out->nrules, 1);
    gh_role_free(out);
    rd_end(f);
    /* A child role deletes without force once nothing refers to it. */
    d.name = "child";
    d.force = 0;
    assert_int_equal(gh_store_write(f->s, w_role_del, &d, NULL, 0), 0);
    assert_int_equal(gh_store_write(f->s, w_role_del, &d, NULL, 0), GH_ENOTFOUND);
    gh_role_free(base);
    gh_role_free(child);
}

static void test_bindings(void **state)
{
    fx *f = *state;
    gh_role *r = gh_role_new("editor");
    uint64_t u = add_user(f, "alice"), g = add_group(f, "devs");
    gh_binding b1, b2, b3, out;
    char err[256];
    gh_txn *t;
    int n;
    uint64_t gen;

    assert_int_equal(gh_store_write(f->s, w_role_add, r, NULL, 0), 0);
    memset(&b1, 0, sizeof(b1));
    snprintf(b1.role, sizeof(b1.role), "editor");
    b1.subject = (gh_member){GH_MEMBER_USER, u};
    snprintf(b1.scope, sizeof(b1.scope), "project/42/**");
    gen = authz_gen(f);
    assert_int_equal(gh_store_write(f->s, w_binding_add, &b1, NULL, 0), 0);
    assert_true(authz_gen(f) > gen);
    assert_true(b1.id > 0);
    assert_string_equal(last_change(f).op, "grant");
    assert_non_null(strstr(last_change(f).target, "editor"));
    assert_non_null(strstr(last_change(f).target, "alice"));
    b2 = b1;
    b2.scope[0] = '\0';
    assert_int_equal(gh_store_write(f->s, w_binding_add, &b2, NULL, 0), 0);
    b3 = b1;
    b3.subject = (gh_member){GH_MEMBER_GROUP, g};
    assert_int_equal(gh_store_write(f->s, w_binding_add, &b3, NULL, 0), 0);
    assert_true(b1.id != b2.id && b2.id != b3.id);

    /* Duplicate, dangling, invalid. */
    out = b1;
    assert_int_equal(gh_store_write(f->s, w_binding_add, &out, err, sizeof(err)), GH_EEXISTS);
    out = b1;
    snprintf(out.role, sizeof(out.role), "nope");
    assert_int_equal(gh_store_write(f->s, w_binding_add, &out, NULL, 0), GH_ENOTFOUND);
    out = b1;
    out.subject.id = 999;
    assert_int_equal(gh_store_write(f->s, w_binding_add, &out, NULL, 0), GH_ENOTFOUND);
    out = b1;
    out.subject = (gh_member){GH_MEMBER_GROUP, 999};
    assert_int_equal(gh_store_write(f->s, w_binding_add, &out, NULL, 0), GH_ENOTFOUND);
    out = b1;
    snprintf(out.scope, sizeof(out.scope), "project//x");
    assert_int_equal(gh_store_write(f->s, w_binding_add, &out, NULL, 0), GH_EINVAL);

    t = rd(f);
    memset(&out, 0, sizeof(out));
    assert_int_equal(gh_store_binding_get(t, b1.id, &out), 0);
    assert_string_equal(out.role, "editor");
    assert_int_equal(out.subject.kind, GH_MEMBER_USER);
    assert_int_equal(out.subject.id, u);
    assert_string_equal(out.scope, "project/42/**");
    assert_int_equal(out.created, b1.created);
    assert_int_equal(gh_store_binding_find(t, &b3, &out), 0);
    assert_int_equal(out.id, b3.id);
    n = 0;
    assert_int_equal(gh_store_bindings_of_subject(t, b1.subject, binding_count_cb, &n), 0);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(gh_store_bindings_of_role(t, "editor", binding_count_cb, &n), 0);
    assert_int_equal(n, 3);
    n = 0;
    assert_int_equal(gh_store_binding_list(t, binding_count_cb, &n), 0);
    assert_int_equal(n, 3);
    rd_end(f);

    assert_int_equal(gh_store_write(f->s, w_binding_del, &b2.id, NULL, 0), 0);
    assert_string_equal(last_change(f).op, "revoke");
    assert_int_equal(gh_store_write(f->s, w_binding_del, &b2.id, NULL, 0), GH_ENOTFOUND);
    t = rd(f);
    assert_int_equal(gh_store_binding_find(t, &b2, &out), GH_ENOTFOUND);
    n = 0;
    assert_int_equal(gh_store_bindings_of_role(t, "editor", binding_count_cb, &n), 0);
    assert_int_equal(n, 2);
    rd_end(f);
    gh_role_free(r);
}

/* ---- tokens, sync, meta ---- */

static void test_tokens(void **state)
{
    fx *f = *state;
    uint64_t u = add_user(f, "alice"), seq;
    gh_token t1, t2, out;
    size_t purged = 0;
    gh_txn *t;

    memset(&t1, 0, sizeof(t1));
    memset(t1.hash, 1, sizeof(t1.hash));
    t1.user_id = u;
    t1.created = 100;
    t1.expires = 900;
    t2 = t1;
    memset(t2.hash, 2, sizeof(t2.hash));
    t2.expires = 0;
    gh_token t3 = t1, t4 = t1;
    memset(t3.hash, 0, sizeof(t3.hash)); /* sorts first */
    t3.expires = 1000;
    memset(t4.hash, 9, sizeof(t4.hash)); /* sorts last */
    t4.expires = 1;
    seq = changelog_seq(f);
    assert_int_equal(gh_store_write(f->s, w_token_put, &t1, NULL, 0), 0);
    assert_int_equal(gh_store_write(f->s, w_token_put, &t2, NULL, 0), 0);
    /* Tokens are not logged. */
    assert_int_equal(changelog_seq(f), seq);
    assert_int_equal(gh_store_write(f->s, w_token_put, &t1, NULL, 0), GH_EEXISTS);
    out = t1;
    out.user_id = 999;
    memset(out.hash, 3, sizeof(out.hash));
    assert_int_equal(gh_store_write(f->s, w_token_put, &out, NULL, 0), GH_ENOTFOUND);

    t = rd(f);
    memset(&out, 0, sizeof(out));
    assert_int_equal(gh_store_token_get(t, t1.hash, &out), 0);
    assert_memory_equal(&out, &t1, sizeof(out));
    rd_end(f);
    assert_int_equal(gh_store_write(f->s, w_token_put, &t3, NULL, 0), 0);
    assert_int_equal(gh_store_write(f->s, w_token_put, &t4, NULL, 0), 0);
    /* Purge at now=1000: t1, t3 (at now), t4 go; t2 (never expires) stays. */
    assert_int_equal(gh_store_write(f->s, w_token_purge, &purged, NULL, 0), 0);
    assert_int_equal(purged, 3);
    t = rd(f);
    assert_int_equal(gh_store_token_get(t, t1.hash, &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_token_get(t, t3.hash, &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_token_get(t, t4.hash, &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_token_get(t, t2.hash, &out), 0);
    rd_end(f);
    assert_int_equal(gh_store_write(f->s, w_token_del, t2.hash, NULL, 0), 0);
    assert_int_equal(gh_store_write(f->s, w_token_del, t2.hash, NULL, 0), GH_ENOTFOUND);
}

static void test_sync_and_meta(void **state)
{
    fx *f = *state;
    char *data = NULL;
    size_t len = 0;
    uint32_t ver = 0;
    gh_txn *t;

    t = rd(f);
    assert_int_equal(gh_store_sync_get(t, "corp", &data, &len), GH_ENOTFOUND);
    assert_null(data);
    assert_int_equal(gh_store_schema_version(t, &ver), 0);
    assert_int_equal(ver, GH_SCHEMA_VERSION);
    rd_end(f);
    assert_int_equal(gh_store_write(f->s, w_sync_put, "cookie=1", NULL, 0), 0);
    assert_int_equal(gh_store_write(f->s, w_sync_put, "cookie=22", NULL, 0), 0);
    assert_string_equal(last_change(f).actor, "sync:corp");
    t = rd(f);
    assert_int_equal(gh_store_sync_get(t, "corp", &data, &len), 0);
    assert_int_equal(len, 9);
    assert_memory_equal(data, "cookie=22", 9);
    free(data);
    rd_end(f);
}

/* ---- change log ---- */

static int w_passwd(gh_txn *t, void *arg)
{
    gh_user u = *(gh_user *)arg;
    gh_txn_set_actor(t, "uid:0");
    snprintf(u.verifier, sizeof(u.verifier), "%s", ARGON);
    return gh_store_user_update(t, &u, GH_UF_VERIFIER);
}

static int w_append(gh_txn *t, void *arg)
{
    gh_txn_set_actor(t, "sync:corp");
    return gh_store_changelog_append(t, "sync.run", arg);
}

struct logbuf {
    gh_change c[32];
    size_t n;
};

static int log_cb(const gh_change *c, void *arg)
{
    struct logbuf *l = arg;
    if (l->n < 32)
        l->c[l->n++] = *c;
    return 0;
}

static void test_changelog(void **state)
{
    fx *f = *state;
    gh_user u = mkuser("alice");
    struct logbuf lb = {.n = 0};
    uint64_t g;
    gh_txn *t;

    assert_int_equal(changelog_seq(f), 0);
    snprintf(u.verifier, sizeof(u.verifier), "%s", ARGON);
    assert_int_equal(user_add_rc(f, &u, NULL, 0), 0);
    assert_int_equal(changelog_seq(f), 1);
    g = add_group(f, "ops");
    assert_int_equal(changelog_seq(f), 2);
    assert_int_equal(member_add(f, g, GH_MEMBER_USER, u.id), 0);
    assert_int_equal(gh_store_write(f->s, w_passwd, &u, NULL, 0), 0);
    assert_int_equal(member_remove(f, g, GH_MEMBER_USER, u.id), 0);
    assert_int_equal(gh_store_write(f->s, w_append, "corp", NULL, 0), 0);
    /* Failed writes leave no entry. */
    assert_int_equal(member_remove(f, g, GH_MEMBER_USER, u.id), GH_ENOTFOUND);
    assert_int_equal(changelog_seq(f), 6);

    t = rd(f);
    assert_int_equal(gh_store_changelog_list(t, 0, 0, log_cb, &lb), 0);
    assert_int_equal(lb.n, 6);
    static const char *ops[] = {"user.add",    "group.add",           "group.add_member",
                                "user.passwd", "group.remove_member", "sync.run"};
    static const char *targets[] = {"alice", "ops", "ops<-alice", "alice", "ops<-alice", "corp"};
    for (size_t i = 0; i < lb.n; i++) {
        assert_int_equal(lb.c[i].seq, i + 1);
        assert_string_equal(lb.c[i].op, ops[i]);
        assert_string_equal(lb.c[i].target, targets[i]);
        assert_true(lb.c[i].time > 0);
        /* Never a verifier in the log. */
        assert_null(strstr(lb.c[i].target, "argon"));
    }
    assert_string_equal(lb.c[0].actor, "system");
    assert_string_equal(lb.c[3].actor, "uid:0");
    assert_string_equal(lb.c[5].actor, "sync:corp");
    lb.n = 0;
    assert_int_equal(gh_store_changelog_list(t, 2, 3, log_cb, &lb), 0);
    assert_int_equal(lb.n, 3);
    assert_int_equal(lb.c[0].seq, 3);
    assert_int_equal(lb.c[2].seq, 5);
    lb.n = 0;
    assert_int_equal(gh_store_changelog_list(t, 6, 0, log_cb, &lb), 0);
    assert_int_equal(lb.n, 0);
    rd_end(f);
}

/* ---- batches ---- */

static void test_batch_partial(void **state)
{
    fx *f = *state;
    gh_user a = mkuser("a"), dup = mkuser("a"), c = mkuser("c");
    gh_store_op ops[3] = {{.fn = w_user_add, .arg = &a},
                          {.fn = w_user_add, .arg = &dup},
                          {.fn = w_user_add, .arg = &c}};
    gh_user out;
    gh_txn *t;

    assert_int_equal(gh_store_write_batch(f->s, ops, 3), 0);
    assert_int_equal(ops[0].rc, 0);
    assert_int_equal(ops[1].rc, GH_EEXISTS);
    assert_non_null(strstr(ops[1].err, "already exists"));
    assert_int_equal(ops[2].rc, 0);
    t = rd(f);
    assert_int_equal(gh_store_user_get(t, "a", &out), 0);
    assert_int_equal(gh_store_user_get(t, "c", &out), 0);
    rd_end(f);
    /* The failed op left nothing behind: not its uid, not a log entry. */
    assert_int_equal(changelog_seq(f), 2);
    assert_int_equal(c.uid, a.uid + 1);
}

static int w_fail_after_write(gh_txn *t, void *arg)
{
    int rc = gh_store_user_add(t, arg);
    if (rc != 0)
        return rc;
    return gh_txn_fail(t, GH_EINVAL, "changed my mind");
}

static void test_batch_op_rollback(void **state)
{
    fx *f = *state;
    gh_user a = mkuser("half"), b = mkuser("whole");
    gh_store_op ops[2] = {{.fn = w_fail_after_write, .arg = &a}, {.fn = w_user_add, .arg = &b}};
    gh_user out;
    gh_txn *t;

    assert_int_equal(gh_store_write_batch(f->s, ops, 2), 0);
    assert_int_equal(ops[0].rc, GH_EINVAL);
    assert_string_equal(ops[0].err, "changed my mind");
    assert_int_equal(ops[1].rc, 0);
    t = rd(f);
    assert_int_equal(gh_store_user_get(t, "half", &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_user_get(t, "whole", &out), 0);
    rd_end(f);
}

static void test_reader_snapshot(void **state)
{
    fx *f = *state;
    gh_store_reader *r2;
    gh_txn *t, *t2;
    gh_user out;

    add_user(f, "before");
    assert_int_equal(gh_store_reader_new(f->s, &r2), 0);
    /* A snapshot taken before a write does not see it; the write does not wait. */
    t = rd(f);
    add_user(f, "after");
    assert_int_equal(gh_store_user_get(t, "before", &out), 0);
    assert_int_equal(gh_store_user_get(t, "after", &out), GH_ENOTFOUND);
    assert_int_equal(gh_store_read_begin(r2, &t2), 0);
    assert_int_equal(gh_store_user_get(t2, "after", &out), 0);
    gh_store_read_end(r2);
    rd_end(f);
    /* Reuse (reset/renew) many times. */
    for (int i = 0; i < 1000; i++) {
        t = rd(f);
        assert_int_equal(gh_store_user_get(t, "after", &out), 0);
        rd_end(f);
    }
    gh_store_reader_free(r2);
}

/* ---- persistence, format ---- */

static void test_reopen(void **state)
{
    fx *f = *state;
    uint64_t g = add_group(f, "g"), u = add_user(f, "alice"), v[4], seq, gen;
    gh_role *r = gh_role_new("viewer");
    gh_binding b;
    gh_user out;
    gh_txn *t;
    struct stat st;

    assert_int_equal(member_add(f, g, GH_MEMBER_USER, u), 0);
    assert_int_equal(gh_store_write(f->s, w_role_add, r, NULL, 0), 0);
    memset(&b, 0, sizeof(b));
    snprintf(b.role, sizeof(b.role), "viewer");
    b.subject = (gh_member){GH_MEMBER_GROUP, g};
    assert_int_equal(gh_store_write(f->s, w_binding_add, &b, NULL, 0), 0);
    seq = changelog_seq(f);
    gen = authz_gen(f);
    fx_close(f);
    assert_int_equal(stat(f->dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    fx_open(f);
    t = rd(f);
    assert_int_equal(gh_store_user_get(t, "alice", &out), 0);
    assert_int_equal(out.id, u);
    assert_int_equal(gh_store_binding_get(t, b.id, &b), 0);
    rd_end(f);
    user_groups(f, u, v);
    assert_int_equal(v[0], 1);
    assert_int_equal(v[1], g);
    assert_int_equal(changelog_seq(f), seq);
    assert_int_equal(authz_gen(f), gen);
    /* Counters continue: new ids do not reuse old ones. */
    assert_true(add_user(f, "bob") > u);
    assert_int_equal(changelog_seq(f), seq + 1);
    gh_role_free(r);
}

/* Raw LMDB access to the store's file, for format tests. */
typedef struct raw {
    MDB_env *env;
    MDB_txn *txn;
} raw;

static MDB_dbi raw_open(const char *dir, raw *r, const char *db, unsigned flags)
{
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&r->env), 0);
    assert_int_equal(mdb_env_set_maxdbs(r->env, 32), 0);
    assert_int_equal(mdb_env_open(r->env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(r->env, NULL, 0, &r->txn), 0);
    assert_int_equal(mdb_dbi_open(r->txn, db, flags | MDB_CREATE, &dbi), 0);
    return dbi;
}

static MDB_dbi raw_dbi(raw *r, const char *db, unsigned flags)
{
    MDB_dbi dbi;
    assert_int_equal(mdb_dbi_open(r->txn, db, flags | MDB_CREATE, &dbi), 0);
    return dbi;
}

static void raw_close(raw *r)
{
    assert_int_equal(mdb_txn_commit(r->txn), 0);
    mdb_env_close(r->env);
}

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static json_t *raw_get_user(raw *r, MDB_dbi users, uint64_t id)
{
    uint8_t k[8];
    MDB_val key = {8, k}, val;
    be64(k, id);
    assert_int_equal(mdb_get(r->txn, users, &key, &val), 0);
    json_t *o = json_loadb(val.mv_data, val.mv_size, 0, NULL);
    assert_non_null(o);
    return o;
}

static void raw_put_json(raw *r, MDB_dbi dbi, const void *k, size_t klen, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    MDB_val key = {klen, (void *)k}, val = {strlen(s), s};
    assert_int_equal(mdb_put(r->txn, dbi, &key, &val, 0), 0);
    free(s);
}

static int w_set_mail(gh_txn *t, void *arg)
{
    gh_user u;
    int rc = gh_store_user_get(t, arg, &u);
    if (rc != 0)
        return rc;
    snprintf(u.mail, sizeof(u.mail), "new@example.org");
    return gh_store_user_update(t, &u, GH_UF_MAIL);
}

static void test_unknown_field_survives(void **state)
{
    fx *f = *state;
    uint64_t id = add_user(f, "alice");
    raw r;
    MDB_dbi users;
    json_t *o;
    gh_user out;
    gh_txn *t;

    fx_close(f);
    users = raw_open(f->dir, &r, "users", 0);
    o = raw_get_user(&r, users, id);
    json_object_set_new(o, "x_future", json_pack("{s:i}", "a", 1));
    json_object_set_new(o, "pronouns", json_string("she/her"));
    uint8_t k[8];
    be64(k, id);
    raw_put_json(&r, users, k, 8, o);
    json_decref(o);
    raw_close(&r);

    fx_open(f);
    t = rd(f);
    assert_int_equal(gh_store_user_get(t, "alice", &out), 0); /* unknown keys ignored */
    rd_end(f);
    assert_int_equal(gh_store_write(f->s, w_set_mail, "alice", NULL, 0), 0);
    fx_close(f);

    users = raw_open(f->dir, &r, "users", 0);
    o = raw_get_user(&r, users, id);
    assert_string_equal(json_string_value(json_object_get(o, "mail")), "new@example.org");
    assert_string_equal(json_string_value(json_object_get(o, "pronouns")), "she/her");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "x_future"), "a")), 1);
    assert_int_equal(json_integer_value(json_object_get(o, "v")), GH_RECORD_VERSION);
    json_decref(o);
    raw_close(&r);
}

/* Role rules are written as ["allow"|"deny", action, resource]; records
 * written with {"effect","action","resource"} objects still read the same. */
static void test_role_rule_encodings(void **state)
{
    fx *f = *state;
    gh_role *r = gh_role_new("old"), *out = NULL;
    raw rw;
    MDB_dbi roles;
    MDB_val k = {3, "old"}, v;
    gh_txn *t;

    assert_int_equal(gh_role_add_rule(r, GH_ALLOW, "deploy", "service/*"), 0);
    assert_int_equal(gh_store_write(f->s, w_role_add, r, NULL, 0), 0);
    gh_role_free(r);
    fx_close(f);
    roles = raw_open(f->dir, &rw, "roles", 0);
    assert_int_equal(mdb_get(rw.txn, roles, &k, &v), 0);
    json_t *o = json_loadb(v.mv_data, v.mv_size, 0, NULL);
    assert_non_null(o);
    assert_true(json_is_array(json_array_get(json_object_get(o, "rules"), 0))); /* new form */
    json_object_set_new(o, "rules",
                        json_pack("[{s:s,s:s,s:s},[sss]]", "effect", "deny", "action", "ops:*",
                                  "resource", "a/**", "allow", "read", "b/c"));
    raw_put_json(&rw, roles, "old", 3, o);
    json_decref(o);
    raw_close(&rw);
    fx_open(f);
    t = rd(f);
    assert_int_equal(gh_store_role_get(t, "old", &out), 0);
    rd_end(f);
    assert_int_equal(out->nrules, 2);
    assert_int_equal(out->rules[0].effect, GH_DENY);
    assert_string_equal(out->rules[0].action, "ops:*");
    assert_string_equal(out->rules[0].resource, "a/**");
    assert_int_equal(out->rules[1].effect, GH_ALLOW);
    assert_string_equal(out->rules[1].resource, "b/c");
    gh_role_free(out);
}

static void test_newer_schema_refused(void **state)
{
    fx *f = *state;
    char err[256] = "";
    uint8_t v[8];
    raw r;
    MDB_dbi meta;
    MDB_val key = {14, "schema_version"}, val = {8, v};

    add_user(f, "alice");
    fx_close(f);
    meta = raw_open(f->dir, &r, "meta", 0);
    be64(v, GH_SCHEMA_VERSION + 1);
    assert_int_equal(mdb_put(r.txn, meta, &key, &val, 0), 0);
    raw_close(&r);
    assert_int_equal(gh_store_open(&f->s, &f->opts, err, sizeof(err)), GH_EVERSION);
    assert_null(f->s);
    assert_non_null(strstr(err, "newer"));
}

/* The hot-path values (store_hot.c) follow every write of their record, and
 * a schema-1 database gets them built on open. */
static void hot_expect(fx *f, uint64_t id, const char *name, gh_user_state st, const char *ver)
{
    gh_user_hot h;
    gh_txn *t = rd(f);
    assert_int_equal(gh_store_user_hot(t, id, &h), 0);
    assert_int_equal(h.id, id);
    assert_int_equal(h.name_len, strlen(name));
    assert_memory_equal(h.name, name, h.name_len);
    assert_int_equal(h.state, st);
    assert_int_equal(h.verifier_len, strlen(ver));
    if (h.verifier_len)
        assert_memory_equal(h.verifier, ver, h.verifier_len);
    rd_end(f);
}

struct hot_seen {
    char names[8][GH_NAME_MAX + 1];
    uint32_t uids[8];
    size_t n, stop_at;
};

static int hot_seen_cb(const gh_user_hot *h, void *arg)
{
    struct hot_seen *s = arg;
    assert_true(s->n < 8);
    memcpy(s->names[s->n], h->name, h->name_len);
    s->names[s->n][h->name_len] = '\0';
    s->uids[s->n] = h->uid;
    return ++s->n == s->stop_at;
}

/* The LDAP scans' walk: hot values in login order, resumed after a name,
 * stopped by the callback, equal to the records. */
static void test_hot_list(void **state)
{
    fx *f = *state;
    struct hot_seen s;
    uint64_t ids[3];
    const char *names[3] = {"carol", "alice", "bob"};
    gh_user u;
    gh_txn *t;

    for (int i = 0; i < 3; i++)
        ids[i] = add_user(f, names[i]);
    t = rd(f);
    memset(&s, 0, sizeof(s));
    assert_int_equal(gh_store_user_list_hot(t, NULL, hot_seen_cb, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.names[0], "alice");
    assert_string_equal(s.names[1], "bob");
    assert_string_equal(s.names[2], "carol");
    assert_int_equal(gh_store_user_get_by_id(t, ids[1], &u), 0);
    assert_int_equal(s.uids[0], u.uid);
    memset(&s, 0, sizeof(s));
    assert_int_equal(gh_store_user_list_hot(t, "alice", hot_seen_cb, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.names[0], "bob");
    memset(&s, 0, sizeof(s));
    s.stop_at = 1;
    assert_int_equal(gh_store_user_list_hot(t, NULL, hot_seen_cb, &s), 0);
    assert_int_equal(s.n, 1);
    rd_end(f);
}

static int w_users_spelled(gh_txn *t, void *arg)
{
    (void)arg;
    for (int i = 0; i < 256; i++) {
        gh_user u;
        memset(&u, 0, sizeof(u));
        for (int b = 0; b < 8; b++)
            u.name[b] = (char)((i >> b & 1 ? 'A' : 'a') + b);
        int rc = gh_store_user_add(t, &u);
        if (rc != 0)
            return rc;
    }
    return 0;
}

struct fold_seen {
    uint64_t ids[16];
    int n;
};

static int fold_seen_cb(uint64_t id, void *arg)
{
    struct fold_seen *s = arg;
    assert_true(s->n < 16);
    s->ids[s->n++] = id;
    return 0;
}

static int fold_count_cb(uint64_t id, void *arg)
{
    (void)id;
    ++*(size_t *)arg;
    return 0;
}

/* Names compared without ASCII case through the case-sensitive index (LDAP's
 * uid and cn): every spelling, in name order; none for a mere prefix or
 * extension; the seek bound for names that differ only in case. */
static void test_names_nocase(void **state)
{
    fx *f = *state;
    uint64_t alice_up = add_user(f, "Alice"), alice = add_user(f, "alice");
    uint64_t a2 = add_user(f, "ALICE2"), eve = add_user(f, "e.v-E_9");
    uint64_t staff = add_group(f, "Staff");
    struct fold_seen s;
    gh_txn *t;

    add_user(f, "alic");
    add_user(f, "alicea");
    /* 2^8 spellings of one name: more than the walk follows (one txn) */
    assert_int_equal(gh_store_write(f->s, w_users_spelled, NULL, NULL, 0), 0);
    t = rd(f);
    memset(&s, 0, sizeof(s));
    assert_int_equal(gh_store_user_ids_nocase(t, "ALICE", fold_seen_cb, &s), 0);
    assert_int_equal(s.n, 2);
    assert_true(s.ids[0] == alice_up && s.ids[1] == alice); /* "Alice" < "alice" */
    memset(&s, 0, sizeof(s));
    assert_int_equal(gh_store_user_ids_nocase(t, "alice2", fold_seen_cb, &s), 0);
    assert_true(s.n == 1 && s.ids[0] == a2);
    memset(&s, 0, sizeof(s));
    assert_int_equal(gh_store_user_ids_nocase(t, "E.V-e_9", fold_seen_cb, &s), 0);
    assert_true(s.n == 1 && s.ids[0] == eve);
    memset(&s, 0, sizeof(s));
    assert_int_equal(gh_store_user_ids_nocase(t, "alicf", fold_seen_cb, &s), 0);
    assert_int_equal(gh_store_user_ids_nocase(t, "", fold_seen_cb, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(gh_store_group_ids_nocase(t, "staff", fold_seen_cb, &s), 0);
    assert_true(s.n == 1 && s.ids[0] == staff);
    memset(&s, 0, sizeof(s));
    assert_int_equal(gh_store_user_ids_nocase(t, "staff", fold_seen_cb, &s), 0);
    assert_int_equal(s.n, 0);
    size_t found = 0;
    assert_int_equal(gh_store_user_ids_nocase(t, "abcdefgh", fold_count_cb, &found), GH_ETOOBIG);
    assert_true(found > 0 && found < 256); /* some, not all: the caller must not use them */
    rd_end(f);
}

/* Every string over {a, A, b, .} of length 1 to 4, numbered. */
static void fold_name(int i, char *out)
{
    static const char abc[] = "aAb.";
    int len = i < 4 ? 1 : i < 20 ? 2 : i < 84 ? 3 : 4;
    int k = i - (len == 1 ? 0 : len == 2 ? 4 : len == 3 ? 20 : 84);
    for (int b = 0; b < len; b++, k /= 4)
        out[b] = abc[k % 4];
    out[len] = '\0';
}

#define FOLD_NAMES 340

static int w_fold_names(gh_txn *t, void *arg)
{
    uint64_t *ids = arg;
    for (int i = 0; i < FOLD_NAMES; i++) {
        gh_user u;
        memset(&u, 0, sizeof(u));
        ids[i] = 0;
        fold_name(i, u.name);
        if ((i * 7 + 3) % 5 < 2 || u.name[0] == '.')
            continue; /* about 60% of the names exist ('.' may not start one) */
        int rc = gh_store_user_add(t, &u);
        if (rc != 0)
            return rc;
        ids[i] = u.id;
    }
    return 0;
}

/* The skip scan against brute force: for every string of the alphabet, the
 * users it finds are exactly those whose names equal it ignoring case, in
 * name order. */
static void test_names_nocase_exhaustive(void **state)
{
    fx *f = *state;
    static uint64_t ids[FOLD_NAMES];
    assert_int_equal(gh_store_write(f->s, w_fold_names, ids, NULL, 0), 0);
    gh_txn *t = rd(f);
    for (int q = 0; q < FOLD_NAMES; q++) {
        char qn[8], n[8], prev[GH_NAME_MAX + 1] = "";
        struct fold_seen s;
        int want = 0;
        fold_name(q, qn);
        memset(&s, 0, sizeof(s));
        assert_int_equal(gh_store_user_ids_nocase(t, qn, fold_seen_cb, &s), 0);
        for (int i = 0; i < FOLD_NAMES; i++) {
            fold_name(i, n);
            if (ids[i] != 0 && strlen(n) == strlen(qn) && strcasecmp(n, qn) == 0)
                want++;
        }
        assert_int_equal(s.n, want);
        for (int j = 0; j < s.n; j++) {
            gh_user u;
            assert_int_equal(gh_store_user_get_by_id(t, s.ids[j], &u), 0);
            assert_int_equal(strcasecmp(u.name, qn), 0);
            assert_true(strcmp(prev, u.name) < 0); /* name order, each once */
            snprintf(prev, sizeof(prev), "%s", u.name);
        }
    }
    rd_end(f);
}

static void hot_expect_more(fx *f, uint64_t id, uint32_t gid, const char *display, const char *mail)
{
    gh_user_hot h;
    gh_txn *t = rd(f);
    assert_int_equal(gh_store_user_hot(t, id, &h), 0);
    assert_int_equal(h.gid, gid);
    assert_int_equal(h.display_name_len, strlen(display));
    assert_memory_equal(h.display_name, display, h.display_name_len);
    assert_int_equal(h.mail_len, strlen(mail));
    assert_memory_equal(h.mail, mail, h.mail_len);
    rd_end(f);
}

/* Version-2 user values carry gid, display name and mail (the LDAP
 * front-end's sweeps); a schema-3 database's version-1 values are rebuilt
 * on open. */
static void test_hot_value_v2(void **state)
{
    fx *f = *state;
    gh_user u = mkuser("zoe");
    struct upd up;
    char big[GH_TEXT_MAX + 1];

    u.gid = 4242;
    snprintf(u.display_name, sizeof(u.display_name), "Zoe Q. Public");
    snprintf(u.mail, sizeof(u.mail), "zoe@example.org");
    assert_int_equal(gh_store_write(f->s, w_user_add, &u, NULL, 0), 0);
    hot_expect(f, u.id, "zoe", GH_USER_ACTIVE, "");
    hot_expect_more(f, u.id, 4242, "Zoe Q. Public", "zoe@example.org");
    /* an update rewrites the value; the longest texts fit */
    memset(big, 'x', GH_TEXT_MAX);
    big[GH_TEXT_MAX] = '\0';
    memset(&up, 0, sizeof(up));
    up.u = u;
    memcpy(up.u.display_name, big, sizeof(big));
    up.u.mail[0] = '\0';
    up.u.gid = 0;
    up.mask = GH_UF_DISPLAY | GH_UF_MAIL | GH_UF_GID;
    assert_int_equal(gh_store_write(f->s, w_user_update, &up, NULL, 0), 0);
    hot_expect_more(f, u.id, 0, big, "");
    hot_expect(f, u.id, "zoe", GH_USER_ACTIVE, "");

    /* a schema-3 database with a version-1 value (no gid, display, mail) */
    fx_close(f);
    {
        raw r;
        uint8_t v[8], key8[8], val1[25 + 3];
        MDB_val key = {14, "schema_version"}, val = {8, v};
        MDB_val hk = {8, key8}, hv = {sizeof(val1), val1};
        MDB_dbi meta = raw_open(f->dir, &r, "meta", 0);
        MDB_dbi uh = raw_dbi(&r, "user_hot", 0);
        memset(val1, 0, sizeof(val1));
        val1[0] = 1; /* version 1 */
        val1[3] = 3; /* name length */
        memcpy(val1 + 25, "zoe", 3);
        be64(key8, u.id);
        assert_int_equal(mdb_put(r.txn, uh, &hk, &hv, 0), 0);
        be64(v, 3);
        assert_int_equal(mdb_put(r.txn, meta, &key, &val, 0), 0);
        raw_close(&r);
    }
    fx_open(f);
    hot_expect_more(f, u.id, 0, big, "");
    assert_string_equal(last_change(f).op, "schema.migrate");
}

/* A group's hot value carries its tombstone (version 2), so a reader can
 * tell a live group without decoding its record; a version-1 value (no
 * tombstone) answers -1: unknown, read the record. */
static void group_hot_expect(fx *f, uint64_t id, const char *name, uint32_t gid, int64_t tomb)
{
    gh_txn *t = rd(f);
    const char *n;
    size_t len;
    uint32_t g;
    int64_t ts;
    assert_int_equal(gh_store_group_hot_tomb(t, id, &g, &n, &len, &ts), 0);
    assert_int_equal(len, strlen(name));
    assert_memory_equal(n, name, len);
    assert_int_equal(g, gid);
    if (tomb > 0)
        assert_true(ts > 0);
    else
        assert_int_equal(ts, tomb);
    rd_end(f);
}

static void test_group_hot_tombstone(void **state)
{
    fx *f = *state;
    gh_group g = mkgroup("ops");
    struct upd up;

    g.gid = 5100;
    assert_int_equal(gh_store_write(f->s, w_group_add, &g, NULL, 0), 0);
    group_hot_expect(f, g.id, "ops", 5100, 0);
    memset(&up, 0, sizeof(up));
    up.g = g;
    up.g.tombstone = 1796300000;
    up.mask = GH_GF_TOMBSTONE;
    assert_int_equal(gh_store_write(f->s, w_group_update, &up, NULL, 0), 0);
    group_hot_expect(f, g.id, "ops", 5100, 1);

    /* a value written before the tombstone was kept: version 1 */
    fx_close(f);
    {
        raw r;
        uint8_t key8[8], val1[6 + 3];
        MDB_val hk = {8, key8}, hv = {sizeof(val1), val1};
        raw_open(f->dir, &r, "meta", 0);
        MDB_dbi gh = raw_dbi(&r, "group_hot", 0);
        val1[0] = 1; /* version 1 */
        val1[1] = 3; /* name length */
        be32(val1 + 2, 5100);
        memcpy(val1 + 6, "ops", 3);
        be64(key8, g.id);
        assert_int_equal(mdb_put(r.txn, gh, &hk, &hv, 0), 0);
        raw_close(&r);
    }
    fx_open(f);
    group_hot_expect(f, g.id, "ops", 5100, -1);
}

static void test_hot_index(void **state)
{
    fx *f = *state;
    const char *v1 = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g";
    gh_user u = mkuser("alice"), out;
    struct upd up;
    const char *gname;
    size_t glen;
    uint64_t gid, g, gadm, bob;
    gh_user_hot h;
    gh_txn *t;

    snprintf(u.verifier, sizeof(u.verifier), "%s", v1);
    assert_int_equal(gh_store_write(f->s, w_user_add, &u, NULL, 0), 0);
    hot_expect(f, u.id, "alice", GH_USER_ACTIVE, v1);
    bob = add_user(f, "bob");
    hot_expect(f, bob, "bob", GH_USER_ACTIVE, "");
    /* rename, lock and password change show at once */
    memset(&up, 0, sizeof(up));
    up.u = u;
    snprintf(up.u.name, sizeof(up.u.name), "alicia");
    up.u.state = GH_USER_LOCKED;
    up.u.verifier[0] = '\0';
    up.mask = GH_UF_NAME | GH_UF_STATE | GH_UF_VERIFIER;
    assert_int_equal(gh_store_write(f->s, w_user_update, &up, NULL, 0), 0);
    hot_expect(f, u.id, "alicia", GH_USER_LOCKED, "");
    t = rd(f);
    assert_int_equal(gh_store_user_hot_by_name(t, "alicia", &h), 0);
    assert_int_equal(h.id, u.id);
    assert_int_equal(gh_store_user_hot_by_name(t, "alice", &h), GH_ENOTFOUND);
    assert_int_equal(gh_store_user_get_auth(t, "alicia", &out), 0);
    assert_string_equal(out.name, "alicia");
    assert_int_equal(out.state, GH_USER_LOCKED);
    rd_end(f);
    /* groups: name by id, id by name, closure membership */
    g = add_group(f, "devs");
    gadm = add_group(f, "admins");
    assert_int_equal(member_add(f, g, GH_MEMBER_USER, bob), 0);
    assert_int_equal(member_add(f, gadm, GH_MEMBER_GROUP, g), 0);
    memset(&up, 0, sizeof(up));
    up.g = mkgroup("developers");
    up.g.id = g;
    up.mask = GH_GF_NAME;
    assert_int_equal(gh_store_write(f->s, w_group_update, &up, NULL, 0), 0);
    t = rd(f);
    assert_int_equal(gh_store_group_name(t, g, &gname, &glen), 0);
    assert_int_equal(glen, 10);
    assert_memory_equal(gname, "developers", 10);
    assert_int_equal(gh_store_group_id(t, "admins", &gid), 0);
    assert_int_equal(gid, gadm);
    assert_int_equal(gh_store_user_in_group(t, bob, gadm), 1);
    assert_int_equal(gh_store_user_in_group(t, u.id, gadm), 0);
    rd_end(f);
    /* deletes remove the values */
    assert_int_equal(gh_store_write(f->s, w_user_del, &bob, NULL, 0), 0);
    assert_int_equal(gh_store_write(f->s, w_group_del, &g, NULL, 0), 0);
    t = rd(f);
    assert_int_equal(gh_store_user_hot(t, bob, &h), GH_ENOTFOUND);
    assert_int_equal(gh_store_group_name(t, g, &gname, &glen), GH_ENOTFOUND);
    rd_end(f);

    /* A schema-1 database (no hot values) gets them on open. */
    fx_close(f);
    {
        raw r;
        uint8_t v[8];
        MDB_val key = {14, "schema_version"}, val = {8, v};
        MDB_dbi meta = raw_open(f->dir, &r, "meta", 0);
        MDB_dbi uh = raw_dbi(&r, "user_hot", 0), gh = raw_dbi(&r, "group_hot", 0);
        assert_int_equal(mdb_drop(r.txn, uh, 0), 0);
        assert_int_equal(mdb_drop(r.txn, gh, 0), 0);
        be64(v, 1);
        assert_int_equal(mdb_put(r.txn, meta, &key, &val, 0), 0);
        raw_close(&r);
    }
    fx_open(f);
    hot_expect(f, u.id, "alicia", GH_USER_LOCKED, "");
    t = rd(f);
    assert_int_equal(gh_store_group_name(t, gadm, &gname, &glen), 0);
    assert_memory_equal(gname, "admins", 6);
    rd_end(f);
    assert_string_equal(last_change(f).op, "schema.migrate");
}

static void test_migrate_v0(void **state)
{
    fx *f = *state;
    raw r;
    MDB_dbi users, user_name, user_uid, groups;
    uint8_t k[8], idv[8], uk[4];
    gh_user out;
    gh_group gout;
    uint32_t ver;
    uint64_t n;
    gh_txn *t;

    /* A version-0 database: no schema_version, records without "v", logins under
     * "login", no "state". */
    mkdir(f->dir, 0700);
    users = raw_open(f->dir, &r, "users", 0);
    user_name = raw_dbi(&r, "user_name", 0);
    user_uid = raw_dbi(&r, "user_uid", 0);
    groups = raw_dbi(&r, "groups", 0);
    for (uint64_t id = 1; id <= 3; id++) {
        char login[16];
        snprintf(login, sizeof(login), "old%llu", (unsigned long long)id);
        json_t *o = json_pack("{s:I, s:s, s:i, s:s, s:I}", "id", (json_int_t)id, "login", login,
                              "uid", (int)(2000 + id), "mail", "m@x", "created", (json_int_t)7);
        if (id == 2)
            json_object_set_new(o, "legacy_flag", json_true());
        be64(k, id);
        raw_put_json(&r, users, k, 8, o);
        json_decref(o);
        MDB_val nk = {strlen(login), login}, iv = {8, idv};
        be64(idv, id);
        assert_int_equal(mdb_put(r.txn, user_name, &nk, &iv, 0), 0);
        be32(uk, (uint32_t)(2000 + id));
        MDB_val ukv = {4, uk};
        assert_int_equal(mdb_put(r.txn, user_uid, &ukv, &iv, 0), 0);
    }
    json_t *go = json_pack("{s:I, s:s, s:i}", "id", (json_int_t)1, "name", "staff", "gid", 100);
    be64(k, 1);
    raw_put_json(&r, groups, k, 8, go);
    json_decref(go);
    raw_close(&r);

    fx_open(f);
    t = rd(f);
    assert_int_equal(gh_store_schema_version(t, &ver), 0);
    assert_int_equal(ver, GH_SCHEMA_VERSION);
    assert_int_equal(gh_store_user_get(t, "old2", &out), 0);
    assert_int_equal(out.id, 2);
    assert_int_equal(out.uid, 2002);
    assert_int_equal(out.state, GH_USER_ACTIVE);
    assert_string_equal(out.mail, "m@x");
    assert_int_equal(out.created, 7);
    assert_int_equal(gh_store_user_get_by_uid(t, 2003, &out), 0);
    assert_string_equal(out.name, "old3");
    assert_int_equal(gh_store_group_get(t, "staff", &gout), 0);
    assert_int_equal(gh_store_group_get_by_gid(t, 100, &gout), 0);
    assert_int_equal(gh_store_user_count(t, &n), 0);
    assert_int_equal(n, 3);
    rd_end(f);
    assert_string_equal(last_change(f).op, "schema.migrate");
    /* New ids continue after the migrated ones; writes work. */
    assert_int_equal(add_user(f, "fresh"), 4);
    fx_close(f);

    /* On disk: v1 records, "name" instead of "login", unknown keys kept. */
    users = raw_open(f->dir, &r, "users", 0);
    json_t *o = raw_get_user(&r, users, 2);
    assert_int_equal(json_integer_value(json_object_get(o, "v")), 1);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "old2");
    assert_null(json_object_get(o, "login"));
    assert_string_equal(json_string_value(json_object_get(o, "state")), "active");
    assert_true(json_is_true(json_object_get(o, "legacy_flag")));
    json_decref(o);
    raw_close(&r);
    /* Opening again does not migrate again. */
    fx_open(f);
    assert_string_equal(last_change(f).op, "user.add");
}

/* ---- map growth ---- */

struct bulk {
    int from, n;
};

static int w_bulk(gh_txn *t, void *arg)
{
    struct bulk *b = arg;
    for (int i = b->from; i < b->from + b->n; i++) {
        gh_user u = mkuser("");
        snprintf(u.name, sizeof(u.name), "bulk%06d", i);
        memset(u.display_name, 'D', GH_TEXT_MAX);
        memset(u.mail, 'm', GH_TEXT_MAX);
        int rc = gh_store_user_add(t, &u);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void test_map_grows(void **state)
{
    fx *f = *state;
    uint64_t used, mapsize, n;
    struct bulk b = {0, 3000};
    gh_txn *t;
    char err[256];

    f->opts.map_size = 1 << 20;
    f->opts.map_max = 64 << 20;
    fx_open(f);
    assert_int_equal(gh_store_size(f->s, &used, &mapsize), 0);
    assert_int_equal(mapsize, 1 << 20);
    /* ~3000 records of ~700 bytes plus indices: several MiB in one op. */
    int rc = gh_store_write(f->s, w_bulk, &b, err, sizeof(err));
    if (rc != 0)
        fail_msg("bulk: %d %s", rc, err);
    assert_int_equal(gh_store_size(f->s, &used, &mapsize), 0);
    assert_true(mapsize > (1 << 20));
    assert_true(mapsize <= (64 << 20));
    assert_true(used > (1 << 20));
    t = rd(f);
    assert_int_equal(gh_store_user_count(t, &n), 0);
    assert_int_equal(n, 3000);
    rd_end(f);
    assert_int_equal(changelog_seq(f), 3000);
}

static int w_add_existing(gh_txn *t, void *arg)
{
    gh_user u = mkuser(arg);
    return gh_store_user_add(t, &u);
}

static void test_map_grows_partial_batch(void **state)
{
    fx *f = *state;
    struct bulk b1 = {0, 1500}, b2 = {1500, 1500};
    gh_store_op ops[3] = {{.fn = w_bulk, .arg = &b1},
                          {.fn = w_add_existing, .arg = "bulk000000"},
                          {.fn = w_bulk, .arg = &b2}};
    uint64_t used, mapsize, n;
    gh_txn *t;

    /* Growth and a failing op in one batch: the others still commit. */
    f->opts.map_size = 1 << 20;
    f->opts.map_max = 64 << 20;
    fx_open(f);
    assert_int_equal(gh_store_write_batch(f->s, ops, 3), 0);
    assert_int_equal(ops[0].rc, 0);
    assert_int_equal(ops[1].rc, GH_EEXISTS);
    assert_int_equal(ops[2].rc, 0);
    assert_int_equal(gh_store_size(f->s, &used, &mapsize), 0);
    assert_true(mapsize > (1 << 20));
    t = rd(f);
    assert_int_equal(gh_store_user_count(t, &n), 0);
    assert_int_equal(n, 3000);
    rd_end(f);
}

/* The readers and the test's thread share stop, reads and errors: atomics,
 * so that the ThreadSanitizer build sees the hand-over (volatile is not). */
struct spin {
    gh_store *s;
    int stop;
    long reads;
    int errors;
};

static void *reader_thread(void *arg)
{
    struct spin *sp = arg;
    gh_store_reader *r;
    gh_txn *t;
    gh_user u;

    if (gh_store_reader_new(sp->s, &r) != 0) {
        __atomic_fetch_add(&sp->errors, 1, __ATOMIC_RELEASE);
        return NULL;
    }
    while (!__atomic_load_n(&sp->stop, __ATOMIC_ACQUIRE)) {
        if (gh_store_read_begin(r, &t) != 0) {
            __atomic_fetch_add(&sp->errors, 1, __ATOMIC_RELEASE);
            break;
        }
        uint64_t n;
        if (gh_store_user_count(t, &n) != 0)
            __atomic_fetch_add(&sp->errors, 1, __ATOMIC_RELEASE);
        else if (n > 0 && gh_store_user_get(t, "bulk000000", &u) != 0)
            __atomic_fetch_add(&sp->errors, 1, __ATOMIC_RELEASE); /* the first bulk write */
        gh_store_read_end(r);
        __atomic_fetch_add(&sp->reads, 1, __ATOMIC_RELEASE);
    }
    gh_store_reader_free(r);
    return NULL;
}

static void test_map_grows_with_readers(void **state)
{
    fx *f = *state;
    struct spin sp[2];
    pthread_t th[2];
    uint64_t used, mapsize;

    f->opts.map_size = 1 << 20;
    f->opts.map_max = 64 << 20;
    fx_open(f);
    for (int i = 0; i < 2; i++) {
        sp[i] = (struct spin){.s = f->s};
        assert_int_equal(pthread_create(&th[i], NULL, reader_thread, &sp[i]), 0);
    }
    /* the map must grow while both readers are reading: wait for their
     * first read (a loaded machine may not have run them yet) */
    for (int i = 0; i < 2; i++)
        while (__atomic_load_n(&sp[i].reads, __ATOMIC_ACQUIRE) == 0 &&
               __atomic_load_n(&sp[i].errors, __ATOMIC_ACQUIRE) == 0)
            sched_yield();
    for (int i = 0; i < 30; i++) {
        struct bulk b = {i * 100, 100};
        assert_int_equal(gh_store_write(f->s, w_bulk, &b, NULL, 0), 0);
    }
    for (int i = 0; i < 2; i++) {
        __atomic_store_n(&sp[i].stop, 1, __ATOMIC_RELEASE);
        pthread_join(th[i], NULL);
        assert_int_equal(sp[i].errors, 0);
        assert_true(sp[i].reads > 0);
    }
    assert_int_equal(gh_store_size(f->s, &used, &mapsize), 0);
    assert_true(mapsize > (1 << 20));
}

static void test_map_grow_refused_while_reading(void **state)
{
    fx *f = *state;
    struct bulk b = {0, 3000};
    char err[256];
    gh_txn *t;

    /* Growing needs every snapshot closed; one held by the writing thread
     * itself makes the write fail cleanly instead of deadlocking. */
    f->opts.map_size = 1 << 20;
    f->opts.map_max = 64 << 20;
    fx_open(f);
    t = rd(f);
    assert_int_equal(gh_store_write(f->s, w_bulk, &b, err, sizeof(err)), GH_EFULL);
    rd_end(f);
    (void)t;
    assert_int_equal(gh_store_write(f->s, w_bulk, &b, err, sizeof(err)), 0);
}

static void test_map_full(void **state)
{
    fx *f = *state;
    uint64_t n, seq, used, mapsize;
    struct bulk small = {0, 10}, big = {100, 3000}, more = {5000, 10};
    gh_store_op ops[2] = {{.fn = w_bulk, .arg = &more}, {.fn = w_bulk, .arg = &big}};
    gh_txn *t;

    f->opts.map_size = 1 << 20;
    f->opts.map_max = 2 << 20;
    fx_open(f);
    assert_int_equal(gh_store_write(f->s, w_bulk, &small, NULL, 0), 0);
    seq = changelog_seq(f);
    /* The batch cannot fit in 2 MiB: nothing of it is written, not even op 0. */
    assert_int_equal(gh_store_write_batch(f->s, ops, 2), GH_EFULL);
    assert_int_equal(ops[0].rc, GH_EFULL);
    assert_int_equal(ops[1].rc, GH_EFULL);
    assert_true(ops[1].err[0] != '\0');
    assert_int_equal(gh_store_size(f->s, &used, &mapsize), 0);
    assert_int_equal(mapsize, 2 << 20);
    t = rd(f);
    assert_int_equal(gh_store_user_count(t, &n), 0);
    assert_int_equal(n, 10);
    rd_end(f);
    assert_int_equal(changelog_seq(f), seq);
    /* The store still works for writes that fit. */
    more.from = 9000;
    assert_int_equal(gh_store_write(f->s, w_bulk, &more, NULL, 0), 0);
    t = rd(f);
    assert_int_equal(gh_store_user_count(t, &n), 0);
    assert_int_equal(n, 20);
    rd_end(f);
}

/* ---- scale ---- */

#define N_USERS 100000
#define PER_BATCH 1000

struct mk {
    int i;
};

static int w_add_numbered(gh_txn *t, void *arg)
{
    gh_user u = mkuser("");
    snprintf(u.name, sizeof(u.name), "user%06d", ((struct mk *)arg)->i);
    return gh_store_user_add(t, &u);
}

static void test_100k_users(void **state)
{
    fx *f = *state;
    static gh_store_op ops[PER_BATCH];
    static struct mk args[PER_BATCH];
    struct timespec t0, t1;
    gh_user out;
    uint64_t n;
    gh_txn *t;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int b = 0; b < N_USERS / PER_BATCH; b++) {
        for (int i = 0; i < PER_BATCH; i++) {
            args[i].i = b * PER_BATCH + i;
            ops[i] = (gh_store_op){.fn = w_add_numbered, .arg = &args[i]};
        }
        assert_int_equal(gh_store_write_batch(f->s, ops, PER_BATCH), 0);
        for (int i = 0; i < PER_BATCH; i++)
            assert_int_equal(ops[i].rc, 0);
    }
    t = rd(f);
    assert_int_equal(gh_store_user_count(t, &n), 0);
    assert_int_equal(n, N_USERS);
    for (int i = 0; i < N_USERS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "user%06d", i);
        if (gh_store_user_get(t, name, &out) != 0 || strcmp(out.name, name) != 0 ||
            out.uid != 10000u + (uint32_t)i)
            fail_msg("user %s not read back", name);
    }
    rd_end(f);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("# 100k users written and read back in %.2f s\n", secs);
    assert_true(secs < 60.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_user_roundtrip, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_uid_assignment, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_user_update, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_user_state_owners, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_user_validation, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_user_list, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_group_roundtrip, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_membership_closure, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_membership_errors, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_user_delete_cascade, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_group_delete_cascade, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_role_roundtrip, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_role_validation, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_role_cycle, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_role_delete, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_bindings, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_tokens, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_sync_and_meta, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_changelog, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_batch_partial, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_batch_op_rollback, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_reader_snapshot, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_reopen, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_field_survives, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_role_rule_encodings, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_v0, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_grows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_grows_partial_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_grows_with_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_grow_refused_while_reading, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_100k_users, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_hot_index, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_hot_list, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_names_nocase, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_names_nocase_exhaustive, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_hot_value_v2, setup_open, teardown),
        cmocka_unit_test_setup_teardown(test_group_hot_tombstone, setup_open, teardown),
    };

    gh_log_setup(GH_LOG_WARN, 0);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
