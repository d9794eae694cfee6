/*
 * fuzz_ldap.c: the LDAP protocol core on arbitrary bytes from a peer.
 *
 * The input's first byte picks how the rest is split into reads (1 to 64
 * bytes each), so the resumable decoder is exercised at every boundary.
 * Each decoded request is answered as the listener would: searches and
 * compares run against a small store (users, groups, nesting) once with an
 * unrestricted view and once as a plain user, Password Modify values are
 * parsed, every other request gets an LDAPResult.
 *
 * Invariants: no crash, no leak, a decode either yields a request or a
 * GH_E* code, consumed bytes never exceed what was given, no reply ever
 * carries a password verifier ("$argon2"), no reply ever names the
 * tombstoned group (a compare or search that reads groups from their hot
 * values must see the tombstone), and a search base normalises the same
 * through the plain-DN short cut as through liblber's DN parser.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ldap/ldap-int.h"
#include "schema/log.h"
#include "schema/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static gh_store *store;
static gh_store_reader *reader;
static gh_ldap *core;
static uint64_t alice_id;
static char dir[256];

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_ldap: %s\n", what);
    abort();
}

static int add_user(gh_txn *t, void *arg)
{
    gh_user u;
    memset(&u, 0, sizeof(u));
    snprintf(u.name, sizeof(u.name), "%s", (const char *)arg);
    snprintf(u.mail, sizeof(u.mail), "%s@example.org", (const char *)arg);
    /* a verifier that must never come out */
    snprintf(u.verifier, sizeof(u.verifier), "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA");
    return gh_store_user_add(t, &u);
}

static int add_group(gh_txn *t, void *arg)
{
    gh_group g;
    memset(&g, 0, sizeof(g));
    snprintf(g.name, sizeof(g.name), "%s", (const char *)arg);
    return gh_store_group_add(t, &g);
}

/* A group deleted upstream and kept as a tombstone: never visible. */
#define TOMBSTONED "gone-xq7"

static int tombstone_group(gh_txn *t, void *arg)
{
    gh_group g;
    int rc = gh_store_group_get(t, (const char *)arg, &g);
    if (rc != 0)
        return rc;
    g.tombstone = 1796300000;
    return gh_store_group_update(t, &g, GH_GF_TOMBSTONE);
}

static int link_members(gh_txn *t, void *arg)
{
    gh_user a, b;
    gh_group git, eng;
    int rc;
    (void)arg;
    if ((rc = gh_store_user_get(t, "alice", &a)) || (rc = gh_store_user_get(t, "bob", &b)) ||
        (rc = gh_store_group_get(t, "git", &git)) || (rc = gh_store_group_get(t, "eng", &eng)))
        return rc;
    gh_member ma = {GH_MEMBER_USER, a.id}, mb = {GH_MEMBER_USER, b.id};
    gh_member mg = {GH_MEMBER_GROUP, git.id};
    if ((rc = gh_store_member_add(t, git.id, ma)) || (rc = gh_store_member_add(t, eng.id, mg)) ||
        (rc = gh_store_member_add(t, eng.id, mb)))
        return rc;
    alice_id = a.id;
    return 0;
}

static void cleanup(void)
{
    char path[300];
    gh_store_reader_free(reader);
    gh_store_close(store);
    gh_ldap_free(core);
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

static void setup(void)
{
    char err[256];
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    gh_store_opts o = {0};
    gh_log_setup(GH_LOG_ERROR, 0);
    snprintf(dir, sizeof(dir), "%s/gh-fuzz-ldap.XXXXXX", base);
    if (mkdtemp(dir) == NULL)
        fail("mkdtemp");
    o.state_dir = dir;
    o.no_sync = 1;
    o.map_size = 8u << 20;
    if (gh_store_open(&store, &o, err, sizeof(err)) != 0 || gh_store_reader_new(store, &reader))
        fail("cannot open the store");
    const char *users[] = {"alice", "bob", "Carol", "u1", "u2"};
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++)
        if (gh_store_write(store, add_user, (void *)users[i], err, sizeof(err)) != 0)
            fail("cannot add a user");
    const char *groups[] = {"git", "eng", "staff", TOMBSTONED};
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
        if (gh_store_write(store, add_group, (void *)groups[i], err, sizeof(err)) != 0)
            fail("cannot add a group");
    if (gh_store_write(store, link_members, NULL, err, sizeof(err)) != 0)
        fail("cannot add members");
    if (gh_store_write(store, tombstone_group, (void *)TOMBSTONED, err, sizeof(err)) != 0)
        fail("cannot tombstone a group");
    gh_ldap_opts lo = {.max_message = 8192, .max_scan = 1000};
    if (gh_ldap_new(&core, &lo) != 0)
        fail("gh_ldap_new");
    atexit(cleanup);
}

static void check_out(const gh_ldap_out *out)
{
    if (out->len >= 7 && memmem(out->buf, out->len, "$argon2", 7) != NULL)
        fail("a verifier was sent");
    if (out->len >= strlen(TOMBSTONED) &&
        memmem(out->buf, out->len, TOMBSTONED, strlen(TOMBSTONED)) != NULL)
        fail("a tombstoned group was sent");
}

static void check_dn(const struct berval *dn)
{
    char a[GH_DN_MAX + 1], b[GH_DN_MAX + 1];
    if (dn->bv_len == 0 || memchr(dn->bv_val, '\0', dn->bv_len) != NULL)
        return;
    if (gh__ldap_dn_norm_parsed(dn->bv_val, dn->bv_len, b, sizeof(b)) != 0)
        return; /* liblber refuses it: the short cut may still take it */
    if (gh__ldap_dn_norm(dn->bv_val, dn->bv_len, a, sizeof(a)) != 0 || strcmp(a, b) != 0)
        fail("the plain-DN short cut disagrees with liblber's parser");
}

static void answer(gh_ldap_session *s, gh_ldap_req *r)
{
    gh_ldap_out out = {0};
    gh_txn *txn;
    int code;
    if (r->bad || r->op == GH_LDAP_BIND || r->op == GH_LDAP_MODIFY || r->op == GH_LDAP_ADD) {
        gh_ldap_reply_result(&out, r, r->bad ? r->bad : 53, "", r->why);
    } else if (r->op == GH_LDAP_SEARCH || r->op == GH_LDAP_COMPARE) {
        check_dn(r->op == GH_LDAP_SEARCH ? &r->search.base : &r->compare.dn);
        gh_ldap_access views[2] = {{1, 0, 1}, {1, alice_id, 0}};
        for (int v = 0; v < 2; v++) {
            if (gh_store_read_begin(reader, &txn) != 0)
                fail("read_begin");
            if (r->op == GH_LDAP_SEARCH)
                gh_ldap_search(s, txn, r, &views[v], &out, &code);
            else if (gh_ldap_compare(s, txn, r, &views[v], &out, &code) == 0 &&
                     (code == 5 || code == 6) && r->compare.dn.bv_len > 0 &&
                     memmem(r->compare.dn.bv_val, r->compare.dn.bv_len, TOMBSTONED,
                            strlen(TOMBSTONED)) != NULL)
                fail("a compare found the tombstoned group"); /* compareFalse/True */
            gh_store_read_end(reader);
        }
    } else if (r->op == GH_LDAP_EXTENDED) {
        gh_ldap_passwd p;
        gh_ldap_passwd_parse(r, &p);
        gh_ldap_passwd_free(&p);
        struct berval v = {5, "dn:x="};
        gh_ldap_reply_ext(&out, r->msgid, 0, NULL, NULL, &v);
    }
    (void)gh_ldap_req_ctrl(r, GH_LDAP_OID_PAGED);
    check_out(&out);
    gh_ldap_out_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gh_ldap_session *s;
    if (store == NULL)
        setup();
    if (size == 0)
        return 0;
    size_t chunk = 1 + data[0] % 64;
    data++;
    size--;
    if (gh_ldap_session_new(core, &s) != 0)
        fail("session_new");
    size_t off = 0;
    int dead = 0;
    while (off < size && !dead) {
        size_t n = size - off < chunk ? size - off : chunk;
        const char *p = (const char *)data + off;
        size_t left = n;
        while (left > 0 && !dead) {
            gh_ldap_req *r = NULL;
            size_t used = 0;
            int rc = gh_ldap_session_next(s, p, left, &used, &r);
            if (used > left)
                fail("consumed more than given");
            p += used;
            left -= used;
            if (rc < 0) {
                if (r != NULL)
                    fail("a request with an error");
                dead = 1;
            } else if (rc == 1) {
                if (r == NULL)
                    fail("no request");
                answer(s, r);
                gh_ldap_req_free(r);
            } else if (left != 0) {
                fail("more needed but input left");
            }
        }
        off += n;
    }
    gh_ldap_session_free(s);
    return 0;
}
