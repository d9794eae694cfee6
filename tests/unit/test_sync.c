/*
 * test_sync.c: unit tests of the sync module (sync/) that need no upstream:
 * the config keys of [upstream:NAME] and the key engine they share with
 * [server], the string map, the worker's model of the upstream, and apply
 * (a batch of changes written into a store).
 *
 * The one thing to know: nothing here talks LDAP. The model and the batches
 * are built directly, the way sync_model.c builds them from entries, and
 * apply runs through gh_store_write on a store in a fresh mkdtemp directory
 * with rerun_writes on, so that an apply that is not safe to run twice (the
 * writer may run it again after a failed neighbour) fails here.
 */
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

#include "schema/confkey.h"
#include "schema/error.h"
#include "schema/log.h"
#include "schema/store.h"
#include "server/config.h"
#include "sync/sync-int.h"

/* ---- the key engine ---- */

typedef struct kv {
    unsigned u;
    size_t sz;
    uint64_t u64;
    int64_t i64;
    int b;
    unsigned mode;
    double ratio;
    char *s;
} kv;

#define O(f) offsetof(kv, f)
static const gh_confkey kv_keys[] = {{"u", GH_CONFKEY_UINT, O(u), 1, 100},
                                     {"sz", GH_CONFKEY_SIZE, O(sz), 0, 1ull << 40},
                                     {"u64", GH_CONFKEY_U64, O(u64), 0, UINT64_MAX},
                                     {"i64", GH_CONFKEY_I64, O(i64), 0, 1000},
                                     {"b", GH_CONFKEY_BOOL, O(b), 0, 1},
                                     {"mode", GH_CONFKEY_MODE, O(mode), 0, 0777},
                                     {"ratio", GH_CONFKEY_RATIO, O(ratio), 0, 1},
                                     {"s", GH_CONFKEY_STR, O(s), 0, 0},
                                     {NULL, GH_CONFKEY_STR, 0, 0, 0}};
#undef O

static int kv_set(kv *v, const char *key, const char *value, char *msg, size_t msglen)
{
    const gh_confkey *k = gh_confkey_find(kv_keys, key);
    assert_non_null(k);
    return gh_confkey_set(k, v, value, msg, msglen);
}

static void test_confkey_engine(void **state)
{
    (void)state;
    kv v = {0};
    char msg[256];

    assert_null(gh_confkey_find(kv_keys, "nope"));
    /* decimal, whatever the leading zeros; octal only for a mode */
    assert_int_equal(kv_set(&v, "u", "010", msg, sizeof(msg)), 0);
    assert_int_equal(v.u, 10);
    assert_int_equal(kv_set(&v, "mode", "010", msg, sizeof(msg)), 0);
    assert_int_equal(v.mode, 8);
    assert_int_equal(kv_set(&v, "mode", "0660", msg, sizeof(msg)), 0);
    assert_int_equal(v.mode, 0660);
    assert_int_equal(kv_set(&v, "mode", "0800", msg, sizeof(msg)), GH_EINVAL);
    assert_int_equal(kv_set(&v, "mode", "01000", msg, sizeof(msg)), GH_EINVAL);
    assert_int_equal(v.mode, 0660);
    assert_int_equal(kv_set(&v, "sz", "010", msg, sizeof(msg)), 0);
    assert_int_equal(v.sz, 10);
    assert_int_equal(kv_set(&v, "sz", "4K", msg, sizeof(msg)), 0);
    assert_int_equal(v.sz, 4096);
    assert_int_equal(kv_set(&v, "sz", "2m", msg, sizeof(msg)), 0);
    assert_int_equal(v.sz, 2u << 20);
    assert_int_equal(kv_set(&v, "sz", "1G", msg, sizeof(msg)), 0);
    assert_int_equal(v.sz, 1u << 30);
    assert_int_equal(kv_set(&v, "sz", "1T", msg, sizeof(msg)), GH_EINVAL);
    assert_int_equal(kv_set(&v, "u64", "18446744073709551615", msg, sizeof(msg)), 0);
    assert_true(v.u64 == UINT64_MAX);
    assert_int_equal(kv_set(&v, "u64", "18446744073709551616", msg, sizeof(msg)), GH_EINVAL);
    assert_int_equal(kv_set(&v, "i64", "0999", msg, sizeof(msg)), 0);
    assert_int_equal(v.i64, 999);
    /* what is not a decimal number in range is refused, the field untouched */
    const char *bad[] = {"0x10", "", "-1", "+5", " 5", "5 ", "1e3", "0", "101", "ten"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v.u = 42;
        msg[0] = '\0';
        assert_int_equal(kv_set(&v, "u", bad[i], msg, sizeof(msg)), GH_EINVAL);
        assert_int_equal(v.u, 42);
        assert_non_null(strstr(msg, "u must be a number from 1 to 100"));
    }
    /* the sizes' suffix belongs to sizes */
    assert_int_equal(kv_set(&v, "u", "1K", msg, sizeof(msg)), GH_EINVAL);
    const char *yes[] = {"yes", "true", "on", "1"}, *no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(kv_set(&v, "b", yes[i], msg, sizeof(msg)), 0);
        assert_int_equal(v.b, 1);
        assert_int_equal(kv_set(&v, "b", no[i], msg, sizeof(msg)), 0);
        assert_int_equal(v.b, 0);
    }
    assert_int_equal(kv_set(&v, "b", "Yes", msg, sizeof(msg)), GH_EINVAL);
    assert_non_null(strstr(msg, "b must be yes or no"));
    assert_int_equal(kv_set(&v, "ratio", "0.25", msg, sizeof(msg)), 0);
    assert_true(v.ratio == 0.25);
    assert_int_equal(kv_set(&v, "ratio", "1.5", msg, sizeof(msg)), GH_EINVAL);
    assert_int_equal(kv_set(&v, "ratio", "nan", msg, sizeof(msg)), GH_EINVAL);
    assert_true(v.ratio == 0.25);
    assert_int_equal(kv_set(&v, "s", "a", msg, sizeof(msg)), 0);
    assert_int_equal(kv_set(&v, "s", "bc", msg, sizeof(msg)), 0);
    assert_string_equal(v.s, "bc");
    free(v.s);
}

/* ---- a config file through gh_config_load: both sections, one engine ---- */

static int load_conf(const char *text, gh_config *cfg, char *err, size_t errlen)
{
    char path[] = "/tmp/ghsyncconf-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(gh_config_defaults(cfg), 0);
    int rc = gh_config_load(cfg, path, err, errlen);
    unlink(path);
    return rc;
}

static void test_config_sections_agree(void **state)
{
    (void)state;
    gh_config cfg;
    char err[512] = "";

    int rc = load_conf("[server]\n"
                       "idle_timeout = 010\n"
                       "socket_mode = 010\n"
                       "max_request = 0300\n"
                       "tcp_tls = yes\n"
                       "[upstream:corp]\n"
                       "uri = ldap://127.0.0.1:3890\n"
                       "base_dn = dc=example,dc=org\n"
                       "interval = 010\n"
                       "delete_grace = 010\n"
                       "starttls = yes\n"
                       "max_delete_ratio = 0.5\n",
                       &cfg, err, sizeof(err));
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.idle_timeout, 10);
    assert_int_equal(cfg.socket_mode, 8);
    assert_int_equal(cfg.max_request, 300);
    assert_int_equal(cfg.tcp_tls, 1);
    assert_int_equal(cfg.sync.nupstreams, 1);
    struct gh_sync_upstream_cfg *u = cfg.sync.upstreams[0];
    assert_string_equal(u->name, "corp");
    assert_int_equal(u->interval, 10);
    assert_int_equal(u->delete_grace, 10);
    assert_int_equal(u->starttls, 1);
    assert_true(u->max_delete_ratio == 0.5);
    gh_config_free(&cfg);

    /* the same refusals, in the same words, in both sections */
    rc = load_conf("[server]\nidle_timeout = 0x10\n", &cfg, err, sizeof(err));
    assert_int_equal(rc, GH_EINVAL);
    assert_non_null(strstr(err, ":2: idle_timeout must be a number from"));
    gh_config_free(&cfg);
    rc = load_conf("[upstream:corp]\nuri = ldap://127.0.0.1\nbase_dn = dc=x\ninterval = 0x10\n",
                   &cfg, err, sizeof(err));
    assert_int_equal(rc, GH_EINVAL);
    assert_non_null(strstr(err, ":4: interval must be a number from 1 to 86400"));
    gh_config_free(&cfg);
    rc = load_conf("[upstream:corp]\nuri = ldap://127.0.0.1\nbase_dn = dc=x\nstarttls = maybe\n",
                   &cfg, err, sizeof(err));
    assert_int_equal(rc, GH_EINVAL);
    assert_non_null(strstr(err, ":4: starttls must be yes or no"));
    gh_config_free(&cfg);
    rc = load_conf("[server]\ntcp_tls = maybe\n", &cfg, err, sizeof(err));
    assert_int_equal(rc, GH_EINVAL);
    assert_non_null(strstr(err, ":2: tcp_tls must be yes or no"));
    gh_config_free(&cfg);
}

/* ---- [upstream:NAME] keys through gh_sync_config_set ---- */

static int up_set(gh_sync_config *sc, const char *name, const char *key, const char *value,
                  char *msg)
{
    return gh_sync_config_set(sc, "test.conf", 7, name, key, value, msg, 256);
}

static void test_sync_config_keys(void **state)
{
    (void)state;
    gh_sync_config sc = {0};
    char msg[256] = "";

    /* defaults of a section with only the required keys */
    assert_int_equal(up_set(&sc, "corp", "uri", "ldap://127.0.0.1:3890", msg), 0);
    assert_int_equal(up_set(&sc, "corp", "base_dn", "dc=example,dc=org", msg), 0);
    assert_int_equal(sc.nupstreams, 1);
    struct gh_sync_upstream_cfg *u = sc.upstreams[0];
    assert_string_equal(u->login_attr, "uid");
    assert_string_equal(u->key_attr, "entryUUID");
    assert_string_equal(u->member_attr, "member");
    assert_int_equal(u->member_kind, GH__SYNC_MEMBER_DN);
    assert_int_equal(u->mode, GH__SYNC_MODE_PERSIST);
    assert_int_equal(u->interval, 30);
    assert_int_equal(u->max_binds, 32);
    assert_int_equal(u->offline_auth, 0);
    assert_int_equal(u->delete_grace, 7 * 86400);
    assert_true(u->max_delete_ratio == 0.2);
    assert_int_equal(gh_sync_config_finish(&sc, msg, sizeof(msg)), 0);

    /* values */
    assert_int_equal(up_set(&sc, "corp", "member_attr", "memberUid", msg), 0);
    assert_int_equal(u->member_kind, GH__SYNC_MEMBER_UID);
    assert_int_equal(up_set(&sc, "corp", "mode", "search-poll", msg), 0);
    assert_int_equal(u->mode, GH__SYNC_MODE_SEARCH);
    assert_string_equal(gh__sync_mode_name(u->mode), "search-poll");
    assert_int_equal(up_set(&sc, "corp", "scope", "one", msg), 0);
    assert_int_equal(up_set(&sc, "corp", "mail_attr", "", msg), 0); /* "" = not mirrored */
    assert_string_equal(u->mail_attr, "");
    assert_int_equal(up_set(&sc, "corp", "max_binds_per_peer", "0100", msg), 0);
    assert_int_equal(u->max_binds_per_peer, 100);
    assert_int_equal(up_set(&sc, "corp", "offline_max_age", "3600", msg), 0);
    assert_int_equal(u->offline_max_age, 3600);

    /* refusals */
    assert_int_equal(up_set(&sc, "corp", "colour", "blue", msg), GH_EINVAL);
    assert_non_null(strstr(msg, "unknown key 'colour' in [upstream:corp]"));
    assert_int_equal(up_set(&sc, "corp", "interval", "0", msg), GH_EINVAL);
    assert_int_equal(u->interval, 30);
    assert_int_equal(up_set(&sc, "corp", "mode", "push", msg), GH_EINVAL);
    assert_int_equal(up_set(&sc, "corp", "login_attr", "u id", msg), GH_EINVAL);
    assert_int_equal(up_set(&sc, "corp", "key_attr", "", msg), GH_EINVAL);
    assert_int_equal(up_set(&sc, "corp", "user_filter", "objectClass=person", msg), GH_EINVAL);
    assert_int_equal(up_set(&sc, "corp", "user_filter", "(a=b))(", msg), GH_EINVAL);
    assert_int_equal(up_set(&sc, "corp", "uri", "http://x", msg), GH_EINVAL);
    assert_int_equal(up_set(&sc, "corp", "space_replacement", "/", msg), GH_EINVAL);
    assert_int_equal(up_set(&sc, "corp", "max_delete_ratio", "2", msg), GH_EINVAL);
    assert_int_equal(up_set(&sc, "bad name", "uri", "ldap://127.0.0.1", msg), GH_EINVAL);
    assert_int_equal(sc.nupstreams, 1);

    /* the fingerprint follows what shapes the searches, not the rest */
    char fp1[33], fp2[33], fp3[33];
    gh__sync_upstream_fingerprint(u, fp1);
    assert_int_equal(up_set(&sc, "corp", "interval", "60", msg), 0);
    gh__sync_upstream_fingerprint(u, fp2);
    assert_string_equal(fp1, fp2);
    assert_int_equal(up_set(&sc, "corp", "base_dn", "ou=people,dc=example,dc=org", msg), 0);
    gh__sync_upstream_fingerprint(u, fp3);
    assert_string_not_equal(fp1, fp3);
    assert_int_equal(strlen(fp3), 32);

    /* a copy is deep and equal */
    struct gh_sync_upstream_cfg *d = gh__sync_upstream_cfg_dup(u);
    assert_non_null(d);
    assert_ptr_not_equal(d->base_dn, u->base_dn);
    assert_string_equal(d->base_dn, u->base_dn);
    gh__sync_upstream_fingerprint(d, fp2);
    assert_string_equal(fp2, fp3);
    gh__sync_upstream_cfg_free(d);
    gh_sync_config_free(&sc);
    assert_int_equal(sc.nupstreams, 0);
    assert_null(sc.upstreams);
}

static void test_sync_config_finish(void **state)
{
    (void)state;
    gh_sync_config sc = {0};
    char msg[256] = "";

    /* required keys */
    assert_int_equal(up_set(&sc, "a", "uri", "ldap://127.0.0.1", msg), 0);
    assert_int_equal(gh_sync_config_finish(&sc, msg, sizeof(msg)), GH_EINVAL);
    assert_non_null(strstr(msg, "[upstream:a]: base_dn is required"));
    assert_int_equal(up_set(&sc, "a", "base_dn", "not a dn", msg), 0);
    assert_int_equal(gh_sync_config_finish(&sc, msg, sizeof(msg)), GH_EINVAL);
    assert_non_null(strstr(msg, "is not a DN"));
    assert_int_equal(up_set(&sc, "a", "base_dn", "dc=x", msg), 0);
    assert_int_equal(gh_sync_config_finish(&sc, msg, sizeof(msg)), 0);
    /* a bind DN needs a password file */
    assert_int_equal(up_set(&sc, "a", "bind_dn", "cn=admin,dc=x", msg), 0);
    assert_int_equal(gh_sync_config_finish(&sc, msg, sizeof(msg)), GH_EINVAL);
    assert_non_null(strstr(msg, "bind_dn needs bind_password_file"));
    gh_sync_config_free(&sc);

    /* clear text to a remote host is refused, with where the uri was given */
    assert_int_equal(up_set(&sc, "b", "uri", "ldap://ldap.example.org", msg), 0);
    assert_int_equal(up_set(&sc, "b", "base_dn", "dc=x", msg), 0);
    assert_int_equal(gh_sync_config_finish(&sc, msg, sizeof(msg)), GH_EINVAL);
    assert_non_null(strstr(msg, "test.conf:7: [upstream:b]: uri ldap://ldap.example.org"));
    assert_int_equal(up_set(&sc, "b", "starttls", "yes", msg), 0);
    assert_int_equal(gh_sync_config_finish(&sc, msg, sizeof(msg)), 0);
    assert_int_equal(up_set(&sc, "b", "uri", "ldaps://ldap.example.org", msg), 0);
    assert_int_equal(gh_sync_config_finish(&sc, msg, sizeof(msg)), GH_EINVAL);
    assert_non_null(strstr(msg, "starttls applies to ldap:// URIs only"));
    gh_sync_config_free(&sc);

    /* flavor = ad: AD's attribute names for keys not given, search-poll */
    assert_int_equal(up_set(&sc, "ad", "uri", "ldaps://dc.example.org", msg), 0);
    assert_int_equal(up_set(&sc, "ad", "base_dn", "dc=example,dc=org", msg), 0);
    assert_int_equal(up_set(&sc, "ad", "flavor", "ad", msg), 0);
    assert_int_equal(up_set(&sc, "ad", "display_name_attr", "cn", msg), 0);
    assert_int_equal(gh_sync_config_finish(&sc, msg, sizeof(msg)), 0);
    struct gh_sync_upstream_cfg *u = sc.upstreams[0];
    assert_int_equal(u->flavor, GH__SYNC_FLAVOR_AD);
    assert_int_equal(u->mode, GH__SYNC_MODE_SEARCH);
    assert_string_equal(u->login_attr, "sAMAccountName");
    assert_string_equal(u->key_attr, "objectGUID");
    assert_string_equal(u->display_name_attr, "cn"); /* given: kept */
    assert_int_equal(up_set(&sc, "ad", "mode", "syncrepl-poll", msg), 0);
    assert_int_equal(gh_sync_config_finish(&sc, msg, sizeof(msg)), GH_EINVAL);
    assert_non_null(strstr(msg, "flavor = ad needs mode = search-poll"));
    gh_sync_config_free(&sc);

    /* syncrepl keys entries by entryUUID */
    assert_int_equal(up_set(&sc, "c", "uri", "ldap://127.0.0.1", msg), 0);
    assert_int_equal(up_set(&sc, "c", "base_dn", "dc=x", msg), 0);
    assert_int_equal(up_set(&sc, "c", "key_attr", "uid", msg), 0);
    assert_int_equal(gh_sync_config_finish(&sc, msg, sizeof(msg)), GH_EINVAL);
    assert_non_null(strstr(msg, "key_attr uid needs mode = search-poll"));
    assert_int_equal(up_set(&sc, "c", "offline_auth", "yes", msg), 0);
    assert_int_equal(up_set(&sc, "c", "mode", "search-poll", msg), 0);
    assert_int_equal(up_set(&sc, "c", "offline_max_age", "0", msg), 0);
    assert_int_equal(gh_sync_config_finish(&sc, msg, sizeof(msg)), GH_EINVAL);
    assert_non_null(strstr(msg, "offline_auth = yes needs offline_max_age > 0"));
    gh_sync_config_free(&sc);
}

/* ---- the map ---- */

static void count_cb(const char *key, void *val, void *arg)
{
    size_t *sum = arg;
    assert_int_equal(atoi(key), (int)(intptr_t)val);
    *sum += (size_t)(intptr_t)val;
}

static void test_map(void **state)
{
    (void)state;
    gh__sync_map m;
    char key[32];
    void *old = (void *)1;

    gh__sync_map_init(&m);
    assert_null(gh__sync_map_get(&m, "x"));
    assert_null(gh__sync_map_del(&m, "x"));
    for (intptr_t i = 1; i <= 5000; i++) {
        snprintf(key, sizeof(key), "%ld", (long)i);
        assert_int_equal(gh__sync_map_put(&m, key, (void *)i, &old), 0);
        assert_null(old);
    }
    assert_int_equal(m.n, 5000);
    for (intptr_t i = 1; i <= 5000; i++) {
        snprintf(key, sizeof(key), "%ld", (long)i);
        assert_ptr_equal(gh__sync_map_get(&m, key), (void *)i);
    }
    size_t sum = 0;
    gh__sync_map_each(&m, count_cb, &sum);
    assert_int_equal(sum, 5000u * 5001u / 2);
    /* replace hands back the old value; delete returns the value */
    assert_int_equal(gh__sync_map_put(&m, "7", (void *)(intptr_t)7, &old), 0);
    assert_ptr_equal(old, (void *)(intptr_t)7);
    assert_int_equal(m.n, 5000);
    assert_ptr_equal(gh__sync_map_del(&m, "7"), (void *)(intptr_t)7);
    assert_null(gh__sync_map_get(&m, "7"));
    assert_int_equal(m.n, 4999);
    /* keys are compared whole */
    assert_null(gh__sync_map_get(&m, "70 "));
    assert_null(gh__sync_map_get(&m, ""));
    gh__sync_map_clear(&m, NULL);
    assert_int_equal(m.n, 0);
    assert_null(gh__sync_map_get(&m, "1"));

    /* values freed by clear */
    gh__sync_map_init(&m);
    gh__sync_keylist *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    assert_int_equal(gh__sync_keylist_add(l, "a"), 0);
    assert_int_equal(gh__sync_keylist_add(l, "b"), 0);
    assert_int_equal(l->n, 2);
    assert_string_equal(l->v[1], "b");
    assert_int_equal(gh__sync_map_put(&m, "k", l, NULL), 0);
    gh__sync_map_clear(&m, gh__sync_keylist_vfree);
}

/* ---- the model ---- */

static void test_model(void **state)
{
    (void)state;
    gh__sync_model m;
    int changed;
    memset(&m, 0, sizeof(m));
    gh__sync_map_init(&m.by_key);
    gh__sync_map_init(&m.by_dn);
    gh__sync_map_init(&m.by_login);
    gh__sync_map_init(&m.parked);
    gh__sync_map_init(&m.tomb);
    gh__sync_map_init(&m.by_psid);
    gh__sync_map_init(&m.by_sid);

    /* DNs are kept normalized: found whatever their case and spacing */
    char *n = gh__sync_dn_norm("UID=Alice, OU=People,DC=Example,DC=Org");
    assert_non_null(n);
    assert_string_equal(n, "uid=alice,ou=people,dc=example,dc=org");
    free(n);
    n = gh__sync_dn_norm("not a dn");
    assert_non_null(n);
    assert_string_equal(n, "");
    free(n);

    gh__sync_obj *a =
        gh__sync_model_put(&m, GH__SYNC_KIND_USER, "k-alice",
                           "uid=Alice,ou=People,dc=example,dc=org", "alice", &changed);
    assert_non_null(a);
    assert_int_equal(changed, 1);
    assert_int_equal(m.nusers, 1);
    assert_ptr_equal(gh__sync_map_get(&m.by_key, "k-alice"), a);
    assert_ptr_equal(gh__sync_map_get(&m.by_dn, "uid=alice,ou=people,dc=example,dc=org"), a);
    assert_ptr_equal(gh__sync_map_get(&m.by_login, "alice"), a);
    gh__sync_obj *g = gh__sync_model_put(&m, GH__SYNC_KIND_GROUP, "k-ops",
                                         "cn=ops,ou=groups,dc=example,dc=org", "", &changed);
    assert_non_null(g);
    assert_int_equal(m.ngroups, 1);
    assert_null(gh__sync_map_get(&m.by_login, ""));

    /* the same entry again: nothing a member reference depends on changed */
    assert_ptr_equal(gh__sync_model_put(&m, GH__SYNC_KIND_USER, "k-alice",
                                        "uid=alice,ou=people,dc=example,dc=org", "alice", &changed),
                     a);
    assert_int_equal(changed, 0);
    assert_int_equal(m.nusers, 1);
    /* a rename moves it in every index */
    assert_ptr_equal(gh__sync_model_put(&m, GH__SYNC_KIND_USER, "k-alice",
                                        "uid=alice2,ou=people,dc=example,dc=org", "alice2",
                                        &changed),
                     a);
    assert_int_equal(changed, 1);
    assert_null(gh__sync_map_get(&m.by_dn, "uid=alice,ou=people,dc=example,dc=org"));
    assert_null(gh__sync_map_get(&m.by_login, "alice"));
    assert_ptr_equal(gh__sync_map_get(&m.by_dn, "uid=alice2,ou=people,dc=example,dc=org"), a);
    assert_ptr_equal(gh__sync_map_get(&m.by_login, "alice2"), a);
    assert_int_equal(m.nusers, 1);
    /* an entry that moves from the users' filter to the groups' */
    gh__sync_obj *x = gh__sync_model_put(&m, GH__SYNC_KIND_GROUP, "k-alice",
                                         "cn=alice2,ou=groups,dc=example,dc=org", "", &changed);
    assert_non_null(x);
    assert_int_equal(x->kind, GH__SYNC_KIND_GROUP);
    assert_int_equal(m.nusers, 0);
    assert_int_equal(m.ngroups, 2);
    assert_null(gh__sync_map_get(&m.by_login, "alice2"));

    /* tombstones */
    assert_int_equal(gh__sync_tomb_set(&m, "k-gone", 1000), 0);
    int64_t *t = gh__sync_map_get(&m.tomb, "k-gone");
    assert_non_null(t);
    assert_int_equal(*t, 1000);
    assert_int_equal(gh__sync_tomb_set(&m, "k-gone", 2000), 0);
    assert_int_equal(*(int64_t *)gh__sync_map_get(&m.tomb, "k-gone"), 2000);
    assert_int_equal(m.tomb.n, 1);
    assert_int_equal(gh__sync_tomb_set(&m, "k-gone", 0), 0);
    assert_null(gh__sync_map_get(&m.tomb, "k-gone"));
    assert_int_equal(gh__sync_tomb_set(&m, "k-gone2", 5), 0);

    gh__sync_model_free(&m);
    assert_int_equal(m.nusers + m.ngroups, 0);
    assert_null(gh__sync_map_get(&m.by_key, "k-ops"));
    assert_null(gh__sync_map_get(&m.tomb, "k-gone2"));
}

/* ---- apply ---- */

typedef struct afx {
    char root[64];
    gh_store *s;
    gh_store_reader *r;
    gh_sync_config sc;
    gh__sync_batch b;
} afx;

static int apply_setup(void **state)
{
    afx *f = calloc(1, sizeof(*f));
    char dir[96], msg[256], err[256] = "";
    assert_non_null(f);
    snprintf(f->root, sizeof(f->root), "/tmp/ghsync-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(dir, sizeof(dir), "%s/state", f->root);
    gh_store_opts o = {.state_dir = dir, .no_sync = 1, .uid_min = 10000, .rerun_writes = 1};
    if (gh_store_open(&f->s, &o, err, sizeof(err)) != 0)
        fail_msg("gh_store_open: %s", err);
    assert_int_equal(gh_store_reader_new(f->s, &f->r), 0);
    assert_int_equal(up_set(&f->sc, "corp", "uri", "ldap://127.0.0.1", msg), 0);
    assert_int_equal(up_set(&f->sc, "corp", "base_dn", "dc=example,dc=org", msg), 0);
    assert_int_equal(up_set(&f->sc, "corp", "delete_grace", "0", msg), 0);
    assert_int_equal(gh_sync_config_finish(&f->sc, msg, sizeof(msg)), 0);
    f->b.cfg = f->sc.upstreams[0];
    *state = f;
    return 0;
}

static int apply_teardown(void **state)
{
    afx *f = *state;
    char cmd[128];
    gh__sync_batch_free(&f->b);
    gh_sync_config_free(&f->sc);
    gh_store_reader_free(f->r);
    gh_store_close(f->s);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->root);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void add_user(afx *f, const char *key, const char *login, uint32_t uid, const char *mail)
{
    gh__sync_change *c = gh__sync_batch_add(&f->b, GH__SYNC_CH_USER, key);
    assert_non_null(c);
    snprintf(c->u.name, sizeof(c->u.name), "%s", login);
    c->u.uid = uid;
    c->u.gid = 500;
    snprintf(c->u.mail, sizeof(c->u.mail), "%s", mail);
    snprintf(c->u.display_name, sizeof(c->u.display_name), "%s", login);
    snprintf(c->u.origin, sizeof(c->u.origin), "corp");
    snprintf(c->u.origin_key, sizeof(c->u.origin_key), "%s", key);
    snprintf(c->u.origin_dn, sizeof(c->u.origin_dn), "uid=%s,dc=example,dc=org", login);
}

static void add_group(afx *f, const char *key, const char *name, const char **members, size_t n)
{
    gh__sync_change *c = gh__sync_batch_add(&f->b, GH__SYNC_CH_GROUP, key);
    assert_non_null(c);
    snprintf(c->g.name, sizeof(c->g.name), "%s", name);
    c->g.gid = 500;
    snprintf(c->g.origin, sizeof(c->g.origin), "corp");
    snprintf(c->g.origin_key, sizeof(c->g.origin_key), "%s", key);
    snprintf(c->g.origin_dn, sizeof(c->g.origin_dn), "cn=%s,dc=example,dc=org", name);
    c->members = calloc(n + 1, sizeof(*c->members));
    assert_non_null(c->members);
    for (size_t i = 0; i < n; i++) {
        c->members[i].kind = GH__SYNC_KIND_USER;
        snprintf(c->members[i].key, sizeof(c->members[i].key), "%s", members[i]);
    }
    c->nmembers = n;
}

static int apply(afx *f)
{
    char err[256] = "";
    int rc = gh_store_write(f->s, gh__sync_apply, &f->b, err, sizeof(err));
    return rc;
}

static int count_member(gh_member m, void *arg)
{
    (void)m;
    (*(int *)arg)++;
    return 0;
}

static int members_of(afx *f, const char *group)
{
    gh_txn *txn;
    gh_group g;
    int n = 0;
    assert_int_equal(gh_store_read_begin(f->r, &txn), 0);
    assert_int_equal(gh_store_group_get(txn, group, &g), 0);
    assert_int_equal(gh_store_group_members(txn, g.id, count_member, &n), 0);
    gh_store_read_end(f->r);
    return n;
}

static int user_by_key(afx *f, const char *key, gh_user *u)
{
    gh_txn *txn;
    assert_int_equal(gh_store_read_begin(f->r, &txn), 0);
    int rc = gh_store_user_get_by_origin(txn, "corp", key, u);
    gh_store_read_end(f->r);
    return rc;
}

/* A local user, dave, put into group arg by an administrator. */
static int add_local_member(gh_txn *txn, void *arg)
{
    gh_user u;
    gh_group g;
    memset(&u, 0, sizeof(u));
    snprintf(u.name, sizeof(u.name), "dave");
    int rc = gh_store_user_add(txn, &u);
    if (rc == 0)
        rc = gh_store_group_get(txn, arg, &g);
    if (rc == 0)
        rc = gh_store_member_add(txn, g.id, (gh_member){GH_MEMBER_USER, u.id});
    return rc;
}

static void test_apply(void **state)
{
    afx *f = *state;
    gh_user u;
    gh_txn *txn;
    const char *both[] = {"k-alice", "k-bob"}, *bob[] = {"k-bob"};

    /* a first batch: two users, a group of both, the cookie with them */
    add_user(f, "k-alice", "alice", 20001, "alice@example.org");
    add_user(f, "k-bob", "bob", 20002, "bob@example.org");
    add_group(f, "k-ops", "ops", both, 2);
    f->b.blob = strdup("cookie-1");
    f->b.bloblen = strlen("cookie-1");
    assert_int_equal(apply(f), 0);
    assert_int_equal(f->b.res.added, 3);
    assert_int_equal(f->b.res.skipped, 0);
    assert_int_equal(user_by_key(f, "k-alice", &u), 0);
    assert_string_equal(u.name, "alice");
    assert_int_equal(u.uid, 20001);
    assert_string_equal(u.mail, "alice@example.org");
    assert_string_equal(u.origin_dn, "uid=alice,dc=example,dc=org");
    assert_int_equal(u.state, GH_USER_ACTIVE);
    assert_int_equal(members_of(f, "ops"), 2);
    assert_int_equal(gh_store_read_begin(f->r, &txn), 0);
    char *blob = NULL;
    size_t len = 0;
    assert_int_equal(gh_store_sync_get(txn, "corp", &blob, &len), 0);
    gh_store_read_end(f->r);
    assert_int_equal(len, 8);
    assert_memory_equal(blob, "cookie-1", 8);
    free(blob);

    /* the same batch again changes nothing */
    assert_int_equal(apply(f), 0);
    assert_int_equal(f->b.res.added + f->b.res.modified + f->b.res.renamed, 0);
    gh__sync_batch_reset(&f->b);

    /* a rename and a new mail; the group loses alice; a local member of the
     * group is not the upstream's to remove */
    assert_int_equal(gh_store_write(f->s, add_local_member, (void *)"ops", NULL, 0), 0);
    assert_int_equal(members_of(f, "ops"), 3);
    add_user(f, "k-alice", "alice2", 20001, "a2@example.org");
    add_group(f, "k-ops", "ops", bob, 1);
    assert_int_equal(apply(f), 0);
    assert_int_equal(f->b.res.renamed, 1);
    assert_int_equal(user_by_key(f, "k-alice", &u), 0);
    assert_string_equal(u.name, "alice2");
    assert_string_equal(u.mail, "a2@example.org");
    assert_int_equal(members_of(f, "ops"), 2); /* bob and the local dave */
    gh__sync_batch_reset(&f->b);

    /* a local user already holding a login: the upstream's is skipped */
    gh__sync_batch_reset(&f->b);
    add_user(f, "k-carol", "alice2", 20003, "");
    assert_int_equal(apply(f), 0);
    assert_int_equal(f->b.res.added, 0);
    assert_int_equal(f->b.res.skipped, 1);
    assert_non_null(strstr(f->b.err, "collides"));
    assert_int_equal(user_by_key(f, "k-carol", &u), GH_ENOTFOUND);
    gh__sync_batch_reset(&f->b);

    /* deleted upstream: a tombstone (disabled, still a member while it lasts),
     * then purged (delete_grace = 0) */
    assert_non_null(gh__sync_batch_add(&f->b, GH__SYNC_CH_DELETE, "k-bob"));
    assert_int_equal(apply(f), 0);
    assert_int_equal(f->b.res.disabled, 1);
    assert_int_equal(f->b.nfx, 1);
    assert_string_equal(f->b.fx[0].key, "k-bob");
    assert_true(f->b.fx[0].time > 0);
    assert_int_equal(user_by_key(f, "k-bob", &u), 0);
    assert_true(u.tombstone != 0);
    assert_int_not_equal(u.state, GH_USER_ACTIVE);
    assert_int_equal(members_of(f, "ops"), 2);
    gh__sync_batch_reset(&f->b);
    assert_non_null(gh__sync_batch_add(&f->b, GH__SYNC_CH_PURGE, "k-bob"));
    assert_int_equal(apply(f), 0);
    assert_int_equal(f->b.res.purged, 1);
    assert_true(f->b.fx[0].time < 0);
    assert_int_equal(user_by_key(f, "k-bob", &u), GH_ENOTFOUND);
    assert_int_equal(members_of(f, "ops"), 1);
    gh__sync_batch_reset(&f->b);

    /* the same upstream key comes back: the user is added again */
    add_user(f, "k-bob", "bob", 20002, "");
    assert_non_null(gh__sync_batch_add(&f->b, GH__SYNC_CH_LINK, "k-ops"));
    gh__sync_change *c = &f->b.ch[f->b.n - 1];
    c->link.kind = GH__SYNC_KIND_USER;
    snprintf(c->link.key, sizeof(c->link.key), "k-bob");
    assert_int_equal(apply(f), 0);
    assert_int_equal(f->b.res.added, 1);
    assert_int_equal(user_by_key(f, "k-bob", &u), 0);
    assert_int_equal(u.tombstone, 0);
    assert_int_equal(members_of(f, "ops"), 2);
    gh__sync_batch_reset(&f->b);

    /* a deleted group keeps only what is not the upstream's */
    assert_non_null(gh__sync_batch_add(&f->b, GH__SYNC_CH_DELETE, "k-ops"));
    assert_int_equal(apply(f), 0);
    assert_int_equal(f->b.res.disabled, 1);
    assert_int_equal(members_of(f, "ops"), 1);
    gh_group g;
    assert_int_equal(gh_store_read_begin(f->r, &txn), 0);
    assert_int_equal(gh_store_group_get_by_origin(txn, "corp", "k-ops", &g), 0);
    gh_store_read_end(f->r);
    assert_true(g.tombstone != 0);
}

/* EXPIRE (an accountExpires that passed between runs) and REKEY (a key of
 * an older scheme rewritten in place), each safe to run twice. */
static void test_apply_expire_rekey(void **state)
{
    afx *f = *state;
    gh_user u;
    gh_group g;
    gh_txn *txn;
    const char *both[] = {"k-alice", "k-bob"};

    add_user(f, "k-alice", "alice", 20001, "alice@example.org");
    f->b.ch[0].u.upstream_expires = 2000000000;
    add_user(f, "k-bob", "bob", 20002, "bob@example.org");
    add_group(f, "k-ops", "ops", both, 2);
    snprintf(f->b.ch[2].g.origin_sid, sizeof(f->b.ch[2].g.origin_sid), "S-1-5-21-1-2-3-512");
    assert_int_equal(apply(f), 0);
    gh__sync_batch_reset(&f->b);
    assert_int_equal(user_by_key(f, "k-alice", &u), 0);
    assert_int_equal(u.upstream_expires, 2000000000);
    uint64_t alice = u.id;

    /* EXPIRE: alice becomes expired (disabled); bob, who has no expiry time,
     * is left alone; an unknown key is nothing */
    assert_non_null(gh__sync_batch_add(&f->b, GH__SYNC_CH_EXPIRE, "k-alice"));
    assert_non_null(gh__sync_batch_add(&f->b, GH__SYNC_CH_EXPIRE, "k-bob"));
    assert_non_null(gh__sync_batch_add(&f->b, GH__SYNC_CH_EXPIRE, "k-nobody"));
    assert_int_equal(apply(f), 0);
    assert_int_equal(f->b.res.modified, 1);
    gh__sync_batch_reset(&f->b);
    assert_int_equal(user_by_key(f, "k-alice", &u), 0);
    assert_int_equal(u.upstream_flags, GH_UPSTREAM_EXPIRED);
    assert_int_equal(u.state, GH_USER_DISABLED);
    assert_int_equal(u.admin_state, GH_USER_ACTIVE);
    assert_int_equal(user_by_key(f, "k-bob", &u), 0);
    assert_int_equal(u.state, GH_USER_ACTIVE);

    /* REKEY: the same user and group under their new keys */
    gh__sync_change *c = gh__sync_batch_add(&f->b, GH__SYNC_CH_REKEY, "k-alice");
    c->link.kind = GH__SYNC_KIND_USER;
    snprintf(c->link.key, sizeof(c->link.key), "n-alice");
    c = gh__sync_batch_add(&f->b, GH__SYNC_CH_REKEY, "k-ops");
    c->link.kind = GH__SYNC_KIND_GROUP;
    snprintf(c->link.key, sizeof(c->link.key), "n-ops");
    assert_int_equal(apply(f), 0);
    gh__sync_batch_reset(&f->b);
    assert_int_equal(user_by_key(f, "k-alice", &u), GH_ENOTFOUND);
    assert_int_equal(user_by_key(f, "n-alice", &u), 0);
    assert_int_equal(u.id, alice);
    assert_string_equal(u.name, "alice");
    assert_int_equal(gh_store_read_begin(f->r, &txn), 0);
    assert_int_equal(gh_store_group_get_by_origin(txn, "corp", "n-ops", &g), 0);
    assert_string_equal(g.origin_sid, "S-1-5-21-1-2-3-512");
    assert_int_equal(gh_store_group_get_by_origin(txn, "corp", "k-ops", &g), GH_ENOTFOUND);
    gh_store_read_end(f->r);
    assert_int_equal(members_of(f, "ops"), 2);
}

/* ---- what sync.status shows of a cookie; objectGUID byte orders ---- */

static void test_cookie_and_guid(void **state)
{
    (void)state;
    char out[2100], big[1001], hex[33];
    unsigned char h[16];

    assert_int_equal(gh__sync_cookie_show("users", "rid=001,csn=x", 13, out, sizeof(out)), 19);
    assert_string_equal(out, "users:rid=001,csn=x");
    /* printable and up to 1,000 bytes: whole (never cut at 159) */
    memset(big, 'c', sizeof(big));
    gh__sync_cookie_show("users", big, 300, out, sizeof(out));
    assert_int_equal(strlen(out), 6 + 300);
    gh__sync_cookie_show("users", big, 1000, out, sizeof(out));
    assert_int_equal(strlen(out), 6 + 1000);
    /* longer, or binary: blake2b-128 of the whole cookie and its length */
    gh__sync_cookie_show("groups", big, 1001, out, sizeof(out));
    crypto_generichash(h, sizeof(h), (const unsigned char *)big, 1001, NULL, 0);
    sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
    char want[100];
    snprintf(want, sizeof(want), "groups:blake2b-128:%s/1001", hex);
    assert_string_equal(out, want);
    gh__sync_cookie_show("users", "a\x01b", 3, out, sizeof(out));
    crypto_generichash(h, sizeof(h), (const unsigned char *)"a\x01b", 3, NULL, 0);
    sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
    snprintf(want, sizeof(want), "users:blake2b-128:%s/3", hex);
    assert_string_equal(out, want);

    /* raw byte order <-> AD's (first three fields little-endian), both ways */
    char g[40], back[40];
    assert_int_equal(gh__sync_guid_swap("1c0ab790-7e17-0546-0000-000000000001", g, sizeof(g)), 0);
    assert_string_equal(g, "90b70a1c-177e-4605-0000-000000000001");
    assert_int_equal(gh__sync_guid_swap(g, back, sizeof(back)), 0);
    assert_string_equal(back, "1c0ab790-7e17-0546-0000-000000000001");
    assert_int_equal(gh__sync_guid_swap("1C0AB790-7E17-0546-0000-00000000000A", g, sizeof(g)), 0);
    assert_string_equal(g, "90b70a1c-177e-4605-0000-00000000000a");
    assert_int_equal(gh__sync_guid_swap("not-a-guid", g, sizeof(g)), GH_EINVAL);
    assert_int_equal(gh__sync_guid_swap("1c0ab790x7e17-0546-0000-000000000001", g, sizeof(g)),
                     GH_EINVAL);
    assert_int_equal(gh__sync_guid_swap("1c0ab790-7e17-0546-0000-00000000000g", g, sizeof(g)),
                     GH_EINVAL);
    assert_int_equal(gh__sync_guid_swap("0x0ab790-7e17-0546-0000-000000000001", g, sizeof(g)),
                     GH_EINVAL);
    assert_int_equal(gh__sync_guid_swap("1c0ab790-7e17-0546-0000-000000000001", g, 36), GH_EINVAL);
}

int main(void)
{
    gh_log_setup(gh_log_level_parse("error"), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_confkey_engine),
        cmocka_unit_test(test_config_sections_agree),
        cmocka_unit_test(test_sync_config_keys),
        cmocka_unit_test(test_sync_config_finish),
        cmocka_unit_test(test_map),
        cmocka_unit_test(test_model),
        cmocka_unit_test_setup_teardown(test_apply, apply_setup, apply_teardown),
        cmocka_unit_test_setup_teardown(test_apply_expire_rekey, apply_setup, apply_teardown),
        cmocka_unit_test(test_cookie_and_guid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
