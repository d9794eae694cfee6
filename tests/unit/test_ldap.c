/*
 * test_ldap.c: unit tests of the LDAP protocol core (ldap/): framing across
 * reads, request decoding, the filter tree, value and DN normalisation,
 * locating DNs in the tree, and replies read back with liblber.
 *
 * Requests are built with liblber's ber_printf, as a client library would.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ldap.h>

#include "ldap/ldap-int.h"

static gh_ldap *core;

static int setup(void **state)
{
    gh_ldap_opts o = {.suffix = "dc=Example,dc=org", .max_message = 4096};
    (void)state;
    return gh_ldap_new(&core, &o);
}

static int teardown(void **state)
{
    (void)state;
    gh_ldap_free(core);
    return 0;
}

static struct berval *bind_msg(int msgid, const char *dn, const char *pw)
{
    BerElement *ber = ber_alloc_t(LBER_USE_DER);
    struct berval *bv = NULL;
    assert_int_not_equal(ber_printf(ber, "{it{istO}}", msgid, LDAP_REQ_BIND, 3, dn,
                                    LDAP_AUTH_SIMPLE, &(struct berval){strlen(pw), (char *)pw}),
                         -1);
    assert_int_equal(ber_flatten(ber, &bv), 0);
    ber_free(ber, 1);
    return bv;
}

/* Search with an equality filter (attr=value) and attributes list. */
static struct berval *search_eq(int msgid, const char *base, const char *attr, const char *value)
{
    BerElement *ber = ber_alloc_t(LBER_USE_DER);
    struct berval *bv = NULL;
    assert_int_not_equal(ber_printf(ber, "{it{seeiib", msgid, LDAP_REQ_SEARCH, base, 2, 0, 0, 0, 0),
                         -1);
    assert_int_not_equal(ber_printf(ber, "t{ss}", LDAP_FILTER_EQUALITY, attr, value), -1);
    assert_int_not_equal(ber_printf(ber, "{ss}}}", "uid", "+"), -1);
    assert_int_equal(ber_flatten(ber, &bv), 0);
    ber_free(ber, 1);
    return bv;
}

static void test_bind_decoded_across_reads(void **state)
{
    gh_ldap_session *s;
    gh_ldap_req *r = NULL;
    struct berval *bv = bind_msg(7, "uid=alice,ou=people,dc=example,dc=org", "pw-1234");
    (void)state;
    assert_int_equal(gh_ldap_session_new(core, &s), 0);
    /* one byte at a time: every call but the last asks for more */
    for (size_t i = 0; i < bv->bv_len; i++) {
        size_t used = 0;
        int rc = gh_ldap_session_next(s, bv->bv_val + i, 1, &used, &r);
        assert_int_equal(used, 1);
        if (i + 1 < bv->bv_len) {
            assert_int_equal(rc, 0);
            assert_null(r);
        } else {
            assert_int_equal(rc, 1);
        }
    }
    assert_non_null(r);
    assert_int_equal(r->op, GH_LDAP_BIND);
    assert_int_equal(r->msgid, 7);
    assert_int_equal(r->bind.version, 3);
    assert_true(r->bind.simple);
    assert_int_equal(r->bind.cred.bv_len, 7);
    assert_memory_equal(r->bind.cred.bv_val, "pw-1234", 7);
    char name[GH_NAME_MAX + 1];
    assert_int_equal(gh_ldap_dn_user(core, &r->bind.dn, 0, name, sizeof(name)), 0);
    assert_string_equal(name, "alice");
    gh_ldap_req_free(r);
    gh_ldap_session_free(s);
    ber_bvfree(bv);
}

static void test_two_messages_in_one_read(void **state)
{
    gh_ldap_session *s;
    gh_ldap_req *r = NULL;
    struct berval *a = bind_msg(1, "", ""), *b = search_eq(2, "dc=example,dc=org", "uid", "x");
    char buf[1024];
    size_t used, off = 0;
    (void)state;
    memcpy(buf, a->bv_val, a->bv_len);
    memcpy(buf + a->bv_len, b->bv_val, b->bv_len);
    size_t len = a->bv_len + b->bv_len;
    assert_int_equal(gh_ldap_session_new(core, &s), 0);
    assert_int_equal(gh_ldap_session_next(s, buf, len, &used, &r), 1);
    assert_int_equal(used, a->bv_len); /* the second message is left in buf */
    assert_int_equal(r->op, GH_LDAP_BIND);
    gh_ldap_req_free(r);
    off = used;
    assert_int_equal(gh_ldap_session_next(s, buf + off, len - off, &used, &r), 1);
    assert_int_equal(r->op, GH_LDAP_SEARCH);
    assert_int_equal(r->search.scope, 2);
    assert_int_equal(r->search.nattrs, 2);
    assert_non_null(r->search.filter);
    assert_int_equal(r->search.filter->type, LF_EQ);
    assert_int_equal(r->search.filter->attr, LA_UID);
    gh_ldap_req_free(r);
    gh_ldap_session_free(s);
    ber_bvfree(a);
    ber_bvfree(b);
}

static void test_limits_and_garbage(void **state)
{
    size_t used;
    gh_ldap_req *r = NULL;
    (void)state;
    /* a declared length over max_message */
    assert_int_equal(gh_ldap_decode("\x30\x84\x00\x10\x00\x00", 6, 4096, &used, &r), GH_ETOOBIG);
    /* not a SEQUENCE */
    assert_int_equal(gh_ldap_decode("GET / HTTP/1.0\r\n", 16, 4096, &used, &r), GH_EBADREQ);
    /* no protocolOp */
    assert_int_equal(gh_ldap_decode("\x30\x03\x02\x01\x01", 5, 4096, &used, &r), GH_EBADREQ);
    assert_null(r);
    /* a truncated message is only "more needed" */
    assert_int_equal(gh_ldap_decode("\x30\x0c\x02\x01", 4, 4096, &used, &r), 0);
}

static void test_unknown_attribute_is_undefined(void **state)
{
    gh_ldap_req *r = NULL;
    size_t used;
    struct berval *b = search_eq(3, "", "krbPrincipalName", "x");
    (void)state;
    assert_int_equal(gh_ldap_decode(b->bv_val, b->bv_len, 4096, &used, &r), 1);
    assert_int_equal(r->search.filter->type, LF_UNDEFINED);
    gh_ldap_req_free(r);
    ber_bvfree(b);
    b = search_eq(4, "", "userPassword", "secret");
    assert_int_equal(gh_ldap_decode(b->bv_val, b->bv_len, 4096, &used, &r), 1);
    assert_int_equal(r->search.filter->type, LF_UNDEFINED);
    gh_ldap_req_free(r);
    ber_bvfree(b);
}

static void test_member_value_normalised(void **state)
{
    gh_ldap_req *r = NULL;
    size_t used;
    struct berval *b = search_eq(5, "", "MEMBER", "UID=Alice , OU=People,DC=Example,DC=Org");
    (void)state;
    assert_int_equal(gh_ldap_decode(b->bv_val, b->bv_len, 4096, &used, &r), 1);
    assert_int_equal(r->search.filter->attr, LA_MEMBER);
    assert_string_equal(r->search.filter->value, "uid=alice,ou=people,dc=example,dc=org");
    assert_string_equal(r->search.filter->raw, "UID=Alice , OU=People,DC=Example,DC=Org");
    gh_ldap_req_free(r);
    ber_bvfree(b);
}

static void test_normalize(void **state)
{
    size_t n;
    char *v;
    (void)state;
    v = gh__ldap_normalize(SX_CI, "  Alice   LIDDELL ", 18, &n);
    assert_string_equal(v, "alice liddell");
    free(v);
    v = gh__ldap_normalize(SX_INT, "0042", 4, &n);
    assert_string_equal(v, "42");
    free(v);
    assert_null(gh__ldap_normalize(SX_INT, "4x", 2, &n));
    assert_null(gh__ldap_normalize(SX_INT, "", 0, &n));
    v = gh__ldap_normalize(SX_INT, "-0", 2, &n);
    assert_string_equal(v, "0");
    free(v);
    assert_null(gh__ldap_normalize(SX_DN, "not a dn", 8, &n));
    /* the plain fast path and liblber's parser agree */
    const char *same[][2] = {
        {"UID=Bob,OU=People,DC=Example,DC=ORG", "uid=Bob, ou=People,  dc=example,dc=org"},
        {"userid=x,dc=a", "0.9.2342.19200300.100.1.1=X , DC=A"},
        {"cn=git,ou=groups,dc=example,dc=org", "CN=Git,OU=groups,DC=example,DC=org "},
        {"foo-bar=Q,dc=a", "FOO-BAR = q,dc=a"},
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        char a[256], b[256];
        assert_int_equal(gh__ldap_dn_norm(same[i][0], strlen(same[i][0]), a, sizeof(a)), 0);
        assert_int_equal(gh__ldap_dn_norm(same[i][1], strlen(same[i][1]), b, sizeof(b)), 0);
        assert_string_equal(a, b);
    }
    v = gh__ldap_normalize(SX_DN, "UID=Bob,OU=People,DC=Example,DC=ORG", 35, &n);
    assert_string_equal(v, "uid=bob,ou=people,dc=example,dc=org");
    free(v);
}

static void test_dn_locate(void **state)
{
    char name[GH_NAME_MAX + 1];
    (void)state;
#define LOC(s) gh__ldap_dn_locate(core, s, strlen(s), name, sizeof(name))
    assert_int_equal(LOC(""), DL_ROOTDSE);
    assert_int_equal(LOC("CN=Subschema"), DL_SUBSCHEMA);
    assert_int_equal(LOC("dc=example, dc=org"), DL_SUFFIX);
    assert_int_equal(LOC("ou=People,dc=example,dc=org"), DL_PEOPLE);
    assert_int_equal(LOC("ou=groups,dc=example,dc=org"), DL_GROUPS);
    assert_int_equal(LOC("uid=Bob,ou=people,dc=example,dc=org"), DL_USER);
    assert_string_equal(name, "Bob");
    assert_int_equal(LOC("cn=git,ou=groups,DC=EXAMPLE,dc=org"), DL_GROUP);
    assert_string_equal(name, "git");
    assert_int_equal(LOC("cn=bob,ou=people,dc=example,dc=org"), DL_NOSUCH_UNDER);
    assert_int_equal(LOC("ou=other,dc=example,dc=org"), DL_NOSUCH);
    assert_int_equal(LOC("dc=example,dc=com"), DL_OUTSIDE);
    assert_int_equal(LOC("uid=a+cn=b,ou=people,dc=example,dc=org"), DL_NOSUCH_UNDER);
    assert_int_equal(LOC("=="), DL_INVALID);
#undef LOC
    struct berval bare = {5, "alice"};
    assert_int_equal(gh_ldap_dn_user(core, &bare, 1, name, sizeof(name)), 0);
    assert_string_equal(name, "alice");
    assert_int_equal(gh_ldap_dn_user(core, &bare, 0, name, sizeof(name)), GH_ENOTFOUND);
}

static void test_reply_reads_back(void **state)
{
    gh_ldap_out out = {0};
    gh_ldap_req r;
    BerElement *ber;
    ber_int_t id, code;
    ber_tag_t tag;
    struct berval matched, text;
    (void)state;
    memset(&r, 0, sizeof(r));
    r.msgid = 9;
    r.op = GH_LDAP_COMPARE;
    assert_int_equal(gh_ldap_reply_result(&out, &r, 6, "", "yes"), 0);
    struct berval bv = {out.len, out.buf};
    ber = ber_init(&bv);
    assert_int_not_equal(ber_scanf(ber, "{it{emm}}", &id, &tag, &code, &matched, &text),
                         LBER_ERROR);
    assert_int_equal(id, 9);
    assert_int_equal(tag, LDAP_RES_COMPARE);
    assert_int_equal(code, 6);
    assert_int_equal(text.bv_len, 3);
    ber_free(ber, 1);
    gh_ldap_out_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bind_decoded_across_reads),
        cmocka_unit_test(test_two_messages_in_one_read),
        cmocka_unit_test(test_limits_and_garbage),
        cmocka_unit_test(test_unknown_attribute_is_undefined),
        cmocka_unit_test(test_member_value_normalised),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_dn_locate),
        cmocka_unit_test(test_reply_reads_back),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
