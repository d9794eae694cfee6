/*
 * test_authz.c: the policy engine against a real store in a temporary
 * directory: a table of decisions over one small world (every pattern form,
 * inheritance, nested groups, scopes, deny-overrides, account state), explain
 * output, perms and who_can cross-checked against the table, cache
 * invalidation after each kind of write, and refused patterns.
 *
 * The one thing to know: every test builds the same world from scratch
 * (setup), so tests that write can run in any order; perms is checked with
 * a separate, naive matcher written here, so a bug in authz/match.c cannot
 * hide behind itself.
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
#include <jansson.h>

#include "authz/authz-int.h"
#include "authz/authz.h"
#include "schema/error.h"
#include "schema/store.h"

typedef struct fx {
    char dir[64];
    gh_store *store;
    gh_store_reader *reader;
    gh_authz *authz;
} fx;

/* ---- writing the world ---- */

typedef struct wr {
    int kind;
    const char *a, *b, *c;
    int n;
    uint64_t id;
} wr;

enum {
    W_USER,
    W_GROUP,
    W_MEMBER_USER,
    W_MEMBER_GROUP,
    W_UNMEMBER_USER,
    W_UNMEMBER_GROUP,
    W_ROLE,
    W_ROLE_SET,
    W_ROLE_DEL,
    W_BIND_USER,
    W_BIND_GROUP,
    W_UNBIND,
    W_STATE,
    W_USER_DEL
};

/* "allow deploy service/x;deny x a/y" (rules separated by ";") into r */
static int parse_spec(gh_role *r, const char *spec)
{
    char buf[16384], *save = NULL, *tok;

    snprintf(buf, sizeof(buf), "%s", spec ? spec : "");
    for (tok = strtok_r(buf, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        char eff[16], act[600], res[600];
        int rc;
        if (sscanf(tok, " %15s %599s %599s", eff, act, res) != 3)
            return GH_EINVAL;
        rc = gh_role_add_rule(r, strcmp(eff, "deny") == 0 ? GH_DENY : GH_ALLOW, act, res);
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_parents(gh_role *r, const char *parents)
{
    char buf[512], *save = NULL, *tok;

    snprintf(buf, sizeof(buf), "%s", parents ? parents : "");
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if (gh_role_add_parent(r, tok) != 0)
            return GH_EINVAL;
    return 0;
}

static int group_id(gh_txn *txn, const char *name, uint64_t *id)
{
    gh_group g;
    int rc = gh_store_group_get(txn, name, &g);
    if (rc == 0)
        *id = g.id;
    return rc;
}

static int user_id_of(gh_txn *txn, const char *name, uint64_t *id)
{
    gh_user u;
    int rc = gh_store_user_get(txn, name, &u);
    if (rc == 0)
        *id = u.id;
    return rc;
}

static int apply(gh_txn *txn, void *arg)
{
    wr *w = arg;
    gh_user u;
    gh_group g;
    gh_binding b;
    gh_member m;
    gh_role *r = NULL;
    uint64_t gid = 0;
    int rc;

    switch (w->kind) {
    case W_USER:
        memset(&u, 0, sizeof(u));
        snprintf(u.name, sizeof(u.name), "%s", w->a);
        u.state = (gh_user_state)w->n;
        rc = gh_store_user_add(txn, &u);
        w->id = u.id;
        return rc;
    case W_GROUP:
        memset(&g, 0, sizeof(g));
        snprintf(g.name, sizeof(g.name), "%s", w->a);
        rc = gh_store_group_add(txn, &g);
        w->id = g.id;
        return rc;
    case W_MEMBER_USER:
    case W_UNMEMBER_USER:
    case W_MEMBER_GROUP:
    case W_UNMEMBER_GROUP:
        if ((rc = group_id(txn, w->a, &gid)) != 0)
            return rc;
        m.kind = (w->kind == W_MEMBER_USER || w->kind == W_UNMEMBER_USER) ? GH_MEMBER_USER
                                                                          : GH_MEMBER_GROUP;
        rc = m.kind == GH_MEMBER_USER ? user_id_of(txn, w->b, &m.id) : group_id(txn, w->b, &m.id);
        if (rc)
            return rc;
        if (w->kind == W_MEMBER_USER || w->kind == W_MEMBER_GROUP)
            return gh_store_member_add(txn, gid, m);
        return gh_store_member_remove(txn, gid, m);
    case W_ROLE:
    case W_ROLE_SET:
        r = gh_role_new(w->a);
        if (r == NULL)
            return GH_ENOMEM;
        rc = parse_spec(r, w->b);
        if (rc == 0)
            rc = parse_parents(r, w->c);
        if (rc == 0)
            rc = w->kind == W_ROLE ? gh_store_role_add(txn, r) : gh_store_role_set(txn, r);
        gh_role_free(r);
        return rc;
    case W_ROLE_DEL:
        return gh_store_role_del(txn, w->a, w->n);
    case W_BIND_USER:
    case W_BIND_GROUP:
        memset(&b, 0, sizeof(b));
        snprintf(b.role, sizeof(b.role), "%s", w->a);
        snprintf(b.scope, sizeof(b.scope), "%s", w->c ? w->c : "");
        b.subject.kind = w->kind == W_BIND_USER ? GH_MEMBER_USER : GH_MEMBER_GROUP;
        rc = b.subject.kind == GH_MEMBER_USER ? user_id_of(txn, w->b, &b.subject.id)
                                              : group_id(txn, w->b, &b.subject.id);
        if (rc)
            return rc;
        rc = gh_store_binding_add(txn, &b);
        w->id = b.id;
        return rc;
    case W_UNBIND:
        return gh_store_binding_del(txn, w->id);
    case W_STATE:
        if ((rc = gh_store_user_get(txn, w->a, &u)) != 0)
            return rc;
        u.state = (gh_user_state)w->n;
        return gh_store_user_update(txn, &u, GH_UF_STATE);
    case W_USER_DEL:
        if ((rc = gh_store_user_get(txn, w->a, &u)) != 0)
            return rc;
        return gh_store_user_del(txn, u.id);
    }
    return GH_EINVAL;
}

static char last_err[GH_ERRMSG_MAX];

static int wr_try(fx *f, wr *w)
{
    return gh_store_write(f->store, apply, w, last_err, sizeof(last_err));
}

static uint64_t wr_do(fx *f, int kind, const char *a, const char *b, const char *c, int n)
{
    wr w = {kind, a, b, c, n, 0};
    int rc = wr_try(f, &w);

    if (rc != 0)
        fail_msg("write %d %s %s: %s (%s)", kind, a, b ? b : "", gh_strerror(rc), last_err);
    return w.id;
}

#define USER(n) wr_do(f, W_USER, (n), NULL, NULL, GH_USER_ACTIVE)
#define USER_STATE(n, st) wr_do(f, W_USER, (n), NULL, NULL, (st))
#define GROUP(n) wr_do(f, W_GROUP, (n), NULL, NULL, 0)
#define MEMBER(g, u) wr_do(f, W_MEMBER_USER, (g), (u), NULL, 0)
#define SUBGROUP(g, s) wr_do(f, W_MEMBER_GROUP, (g), (s), NULL, 0)
#define ROLE(n, spec, parents) wr_do(f, W_ROLE, (n), (spec), (parents), 0)
#define BIND_USER(role, u, scope) wr_do(f, W_BIND_USER, (role), (u), (scope), 0)
#define BIND_GROUP(role, g, scope) wr_do(f, W_BIND_GROUP, (role), (g), (scope), 0)

/* The world every test starts from. */
static void build_world(fx *f)
{
    ROLE("reader", "allow read docs/**", NULL);
    ROLE("deployer", "allow deploy service/*/prod;allow deploy service/billing/**", NULL);
    ROLE("ops", "allow restart service/*;deny deploy service/payroll/**", "deployer,reader");
    ROLE("admin", "allow * **", NULL);
    ROLE("auditor", "allow audit:* **;deny audit:delete **", NULL);
    ROLE("editor", "allow edit project/*/docs/**;allow read project/**", NULL);
    ROLE("blocker", "deny * secret/**", NULL);
    ROLE("base", "allow view a/b", NULL);
    ROLE("mid", "allow view a/c", "base");
    ROLE("top", "", "mid");
    ROLE("diamond", "allow view a/b", "mid,base");
    ROLE("tmp", "allow tmp x", NULL);
    ROLE("exact", "allow deploy service", NULL);

    USER("alice");
    BIND_USER("ops", "alice", NULL);

    USER("bob");
    GROUP("devs");
    MEMBER("devs", "bob");
    BIND_GROUP("deployer", "devs", NULL);

    USER("carol");
    GROUP("eng");
    GROUP("team-a");
    SUBGROUP("eng", "team-a");
    MEMBER("team-a", "carol");
    BIND_GROUP("reader", "eng", NULL);
    BIND_GROUP("editor", "team-a", "project/42/**");

    USER_STATE("dave", GH_USER_LOCKED);
    BIND_USER("admin", "dave", NULL);
    USER_STATE("erin", GH_USER_DISABLED);
    BIND_USER("admin", "erin", NULL);

    USER("frank");

    USER("gina");
    BIND_USER("admin", "gina", NULL);
    BIND_USER("blocker", "gina", NULL);

    USER("hank");
    BIND_USER("auditor", "hank", NULL);

    USER("ivan");
    BIND_USER("top", "ivan", NULL);
    BIND_USER("diamond", "ivan", NULL);

    USER("judy");
    BIND_USER("tmp", "judy", NULL);

    USER("kim");
    BIND_USER("deployer", "kim", "service/billing/**");

    USER("lee");
    BIND_USER("admin", "lee", "tenant/*/public/**");

    USER("mia");
    GROUP("g1");
    GROUP("g2");
    GROUP("g3");
    SUBGROUP("g1", "g2");
    SUBGROUP("g2", "g3");
    MEMBER("g3", "mia");
    BIND_GROUP("exact", "g1", NULL);
}

static const char *const world_users[] = {"alice", "bob",  "carol", "dave", "erin", "frank", "gina",
                                          "hank",  "ivan", "judy",  "kim",  "lee",  "mia"};
#define NWORLD (sizeof(world_users) / sizeof(world_users[0]))

static const struct tcase {
    const char *user, *action, *resource;
    int allow;
    const char *why;
} table[] = {
    {"alice", "restart", "service/web", 1, "direct rule, '*' segment"},
    {"alice", "restart", "service/web/x", 0, "'*' matches exactly one segment"},
    {"alice", "restart", "service", 0, "'*' needs a segment"},
    {"alice", "deploy", "service/web/prod", 1, "inherited (ops -> deployer), '*' in the middle"},
    {"alice", "deploy", "service/billing", 1, "final '**' matches zero segments"},
    {"alice", "deploy", "service/billing/a/b/c", 1, "final '**' matches many segments"},
    {"alice", "deploy", "service/payroll/prod", 0, "deny overrides an inherited allow"},
    {"alice", "read", "docs/handbook/x", 1, "second parent (ops -> reader)"},
    {"alice", "read", "docs", 1, "'docs/**' matches 'docs'"},
    {"alice", "write", "docs/x", 0, "no rule: default deny"},
    {"alice", "deploy", "service/web/staging", 0, "literal segment mismatch"},
    {"bob", "deploy", "service/web/prod", 1, "through a group"},
    {"bob", "deploy", "service/billing/x", 1, "through a group, '**'"},
    {"bob", "restart", "service/web", 0, "not bound to ops"},
    {"bob", "read", "docs/a", 0, "not bound to reader"},
    {"bob", "deploy", "service/payroll/prod", 1, "ops' deny does not reach bob"},
    {"carol", "read", "docs/x", 1, "nested group (team-a in eng)"},
    {"carol", "edit", "project/42/docs/readme", 1, "scope matches"},
    {"carol", "edit", "project/43/docs/readme", 0, "outside the scope"},
    {"carol", "read", "project/42", 1, "scope 'project/42/**' matches 'project/42'"},
    {"carol", "read", "project/7", 0, "rule matches, scope does not"},
    {"carol", "edit", "project/42/src/x", 0, "scope matches, rule does not"},
    {"dave", "deploy", "service/web/prod", 0, "locked account"},
    {"dave", "read", "docs/x", 0, "locked account, admin role"},
    {"erin", "read", "docs/x", 0, "disabled account"},
    {"frank", "read", "docs/x", 0, "no bindings"},
    {"gina", "launch", "rockets/1", 1, "'*' action, '**' resource"},
    {"gina", "read", "secret/plans", 0, "deny '*' overrides allow '*'"},
    {"gina", "read", "secret", 0, "deny 'secret/**' matches 'secret'"},
    {"gina", "read", "secrets/x", 1, "'secret' is not 'secrets'"},
    {"hank", "audit:read", "logs/1", 1, "prefix action"},
    {"hank", "audit:delete", "logs/1", 0, "exact deny overrides prefix allow"},
    {"hank", "audit", "logs/1", 0, "'audit' does not start with 'audit:'"},
    {"hank", "auditx:read", "logs", 0, "prefix is whole"},
    {"hank", "audit:read:deep", "logs", 1, "prefix covers nested actions"},
    {"ivan", "view", "a/b", 1, "two levels of inheritance"},
    {"ivan", "view", "a/c", 1, "one level of inheritance"},
    {"ivan", "view", "a/d", 0, "no such rule"},
    {"ivan", "View", "a/b", 0, "actions are case-sensitive"},
    {"judy", "tmp", "x", 1, "role to be deleted"},
    {"kim", "deploy", "service/billing/prod", 1, "rule and scope both match"},
    {"kim", "deploy", "service/web/prod", 0, "rule matches, scope does not"},
    {"kim", "deploy", "service/billing", 1, "'**' zero segments in rule and scope"},
    {"lee", "write", "tenant/acme/public/site", 1, "scope with '*' and '**'"},
    {"lee", "write", "tenant/acme/private/site", 0, "scope literal mismatch"},
    {"lee", "write", "tenant/acme/public", 1, "scope '**' zero segments"},
    {"lee", "write", "tenant", 0, "too short for the scope"},
    {"mia", "deploy", "service", 1, "three levels of nested groups, literal resource"},
    {"mia", "deploy", "service/x", 0, "literal pattern has one segment"},
    {"mia", "deploy", "Service", 0, "resources are case-sensitive"},
};
#define NTABLE (sizeof(table) / sizeof(table[0]))

/* ---- fixture ---- */

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    gh_store_opts so;
    char err[256];

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/gh-authz-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    memset(&so, 0, sizeof(so));
    so.state_dir = f->dir;
    so.no_sync = 1;
    if (gh_store_open(&f->store, &so, err, sizeof(err)) != 0) {
        fprintf(stderr, "store: %s\n", err);
        return -1;
    }
    if (gh_store_reader_new(f->store, &f->reader) != 0 || gh_authz_new(&f->authz, NULL) != 0)
        return -1;
    *state = f;
    build_world(f);
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    char cmd[128];

    gh_authz_free(f->authz);
    gh_store_reader_free(f->reader);
    gh_store_close(f->store);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static gh_txn *rbegin(fx *f)
{
    gh_txn *txn = NULL;

    assert_int_equal(gh_store_read_begin(f->reader, &txn), 0);
    return txn;
}

static uint64_t uid_of(fx *f, const char *name)
{
    gh_txn *txn = rbegin(f);
    uint64_t id = 0;

    assert_int_equal(user_id_of(txn, name, &id), 0);
    gh_store_read_end(f->reader);
    return id;
}

/* Decision in a fresh snapshot; fails the test on an error. */
static int decide(fx *f, const char *user, const char *action, const char *resource)
{
    uint64_t id = uid_of(f, user);
    gh_txn *txn = rbegin(f);
    int allow = -1, rc;

    rc = gh_authz_check(f->authz, txn, id, action, resource, &allow);
    gh_store_read_end(f->reader);
    if (rc != 0)
        fail_msg("check %s %s %s: %s", user, action, resource, gh_strerror(rc));
    return allow;
}

static json_t *explain(fx *f, const char *user, const char *action, const char *resource,
                       int *allow)
{
    uint64_t id = uid_of(f, user);
    gh_txn *txn = rbegin(f);
    json_t *ex = NULL;

    assert_int_equal(gh_authz_explain(f->authz, txn, id, action, resource, allow, &ex), 0);
    gh_store_read_end(f->reader);
    assert_non_null(ex);
    return ex;
}

/* ---- a naive matcher, independent of authz/match.c ---- */

static int naive_res(const char *pat, const char *res)
{
    const char *ps = strchr(pat, '/'), *rs = strchr(res, '/');
    size_t pn = ps ? (size_t)(ps - pat) : strlen(pat), rn = rs ? (size_t)(rs - res) : strlen(res);

    if (strcmp(pat, "**") == 0)
        return 1;
    if (pn == 2 && strncmp(pat, "**", 2) == 0)
        return 0; /* not last: never valid */
    if (!(pn == 1 && pat[0] == '*') && (pn != rn || strncmp(pat, res, pn) != 0))
        return 0;
    if (ps == NULL)
        return rs == NULL;
    if (rs == NULL)
        return strcmp(ps + 1, "**") == 0;
    return naive_res(ps + 1, rs + 1);
}

static int naive_act(const char *pat, const char *act)
{
    size_t n = strlen(pat);

    if (strcmp(pat, "*") == 0)
        return 1;
    if (n >= 2 && pat[n - 1] == '*' && pat[n - 2] == ':')
        return strncmp(pat, act, n - 1) == 0;
    return strcmp(pat, act) == 0;
}

/* The decision a perms listing implies. */
static int perms_decide(json_t *rules, const char *action, const char *resource)
{
    size_t i;
    json_t *r;
    int allow = 0;

    json_array_foreach(rules, i, r)
    {
        json_t *scope = json_object_get(r, "scope");
        if (!naive_act(json_string_value(json_object_get(r, "action")), action) ||
            !naive_res(json_string_value(json_object_get(r, "resource")), resource))
            continue;
        if (json_is_string(scope) && !naive_res(json_string_value(scope), resource))
            continue;
        if (strcmp(json_string_value(json_object_get(r, "effect")), "deny") == 0)
            return 0;
        allow = 1;
    }
    return allow;
}

/* ---- tests ---- */

static void test_table(void **state)
{
    fx *f = *state;
    gh_authz_stats st;

    assert_true(NTABLE >= 40);
    for (int pass = 0; pass < 2; pass++) { /* cold, then from the cache */
        for (size_t i = 0; i < NTABLE; i++) {
            const struct tcase *t = &table[i];
            int got = decide(f, t->user, t->action, t->resource);
            if (got != t->allow)
                fail_msg("pass %d case %zu: %s %s %s: got %s, want %s (%s)", pass, i, t->user,
                         t->action, t->resource, got ? "allow" : "deny",
                         t->allow ? "allow" : "deny", t->why);
        }
    }
    gh_authz_get_stats(f->authz, &st);
    assert_true(st.compiles <= NWORLD);
    assert_true(st.hits >= NTABLE);
    assert_int_equal(st.flushes, 0);
}

static void test_table_fresh_engine(void **state)
{
    fx *f = *state;

    /* each case alone in a new engine: no state carried between decisions */
    for (size_t i = 0; i < NTABLE; i++) {
        const struct tcase *t = &table[i];
        gh_authz_free(f->authz);
        assert_int_equal(gh_authz_new(&f->authz, NULL), 0);
        assert_int_equal(decide(f, t->user, t->action, t->resource), t->allow);
    }
}

static void test_check_many(void **state)
{
    fx *f = *state;
    const char *acts[NTABLE], *ress[NTABLE];
    int allow[NTABLE];
    size_t n = 0, bad = 99;
    uint64_t id = uid_of(f, "alice");
    gh_txn *txn;

    for (size_t i = 0; i < NTABLE; i++) {
        if (strcmp(table[i].user, "alice") != 0)
            continue;
        acts[n] = table[i].action;
        ress[n] = table[i].resource;
        n++;
    }
    txn = rbegin(f);
    assert_int_equal(gh_authz_check_many(f->authz, txn, id, n, acts, ress, allow, &bad), 0);
    for (size_t i = 0, k = 0; i < NTABLE; i++)
        if (strcmp(table[i].user, "alice") == 0)
            assert_int_equal(allow[k++], table[i].allow);
    ress[2] = "a//b";
    assert_int_equal(gh_authz_check_many(f->authz, txn, id, n, acts, ress, allow, &bad), GH_EINVAL);
    assert_int_equal(bad, 2);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(allow[i], 0);
    gh_store_read_end(f->reader);
}

static void test_bad_requests(void **state)
{
    fx *f = *state;
    uint64_t id = uid_of(f, "gina");
    static const char *const bad[][2] = {
        {"", "docs"},      {"*", "docs"},      {"a:*", "docs"},   {"de ploy", "docs"},
        {"read", ""},      {"read", "/docs"},  {"read", "docs/"}, {"read", "a//b"},
        {"read", "a/*"},   {"read", "a/**"},   {"read", "a/b*"},  {"read", "a/../b"},
        {"read", "a/b c"}, {"read\n", "docs"},
    };
    char longres[GH_PATTERN_MAX + 8];
    gh_txn *txn = rbegin(f);
    int allow;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        allow = 1;
        if (gh_authz_check(f->authz, txn, id, bad[i][0], bad[i][1], &allow) != GH_EINVAL)
            fail_msg("'%s' on '%s' was accepted", bad[i][0], bad[i][1]);
        assert_int_equal(allow, 0);
    }
    memset(longres, 'a', sizeof(longres) - 1);
    longres[sizeof(longres) - 1] = '\0';
    assert_int_equal(gh_authz_check(f->authz, txn, id, "read", longres, &allow), GH_EINVAL);
    /* unknown user */
    assert_int_equal(gh_authz_check(f->authz, txn, 999999, "read", "docs", &allow), GH_ENOTFOUND);
    assert_int_equal(allow, 0);
    gh_store_read_end(f->reader);
}

/* The store refuses bad patterns with a message that names the problem. */
static void test_bad_patterns_refused(void **state)
{
    fx *f = *state;
    static const struct {
        const char *spec, *word;
    } bad[] = {
        {"allow read a//b", "empty segment"},
        {"allow read /a", "empty segment"},
        {"allow read a/", "empty segment"},
        {"allow read **/a", "**"},
        {"allow read a/**/b", "**"},
        {"allow read a*b", "*"},
        {"allow read a/b#c", "character"},
        {"allow de!ploy a", "character"},
        {"allow *x a", "*"},
        {"allow x:*:y a", "*"},
    };
    char msg[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        wr w = {W_ROLE, "badrole", bad[i].spec, NULL, 0, 0};
        int rc = wr_try(f, &w);
        if (rc != GH_EINVAL)
            fail_msg("'%s' gave %s", bad[i].spec, gh_strerror(rc));
        if (strstr(last_err, bad[i].word) == NULL)
            fail_msg("'%s': message '%s' lacks '%s'", bad[i].spec, last_err, bad[i].word);
    }
    /* a scope is a resource pattern too */
    {
        wr w = {W_BIND_USER, "reader", "frank", "a//b", 0, 0};
        assert_int_equal(wr_try(f, &w), GH_EINVAL);
    }
    /* the validators the ops layer uses */
    assert_int_equal(gh_schema_resource_valid("a/**/b", msg, sizeof(msg)), GH_EINVAL);
    assert_non_null(strstr(msg, "last"));
    assert_int_equal(gh_schema_resource_valid("a/*/**", msg, sizeof(msg)), 0);
    assert_int_equal(gh_schema_action_valid("audit:*", msg, sizeof(msg)), 0);
    assert_int_equal(decide(f, "frank", "read", "docs/x"), 0);
}

static void test_pattern_compile(void **state)
{
    gh__set s;
    gh__pat p;
    gh__req q;
    static const struct {
        const char *pat, *res;
        int match;
    } m[] = {
        {"a", "a", 1},        {"a", "b", 0},
        {"a", "a/b", 0},      {"*", "a", 1},
        {"*", "a/b", 0},      {"**", "a", 1},
        {"**", "a/b/c", 1},   {"a/**", "a", 1},
        {"a/**", "ab", 0},    {"a/*/c", "a/b/c", 1},
        {"a/*/c", "a/c", 0},  {"a/*/**", "a", 0},
        {"a/*/**", "a/b", 1}, {"a/*/**", "a/b/c/d", 1},
        {"ab/c", "a/bc", 0},  {"a/b", "a/bb", 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        memset(&s, 0, sizeof(s));
        assert_int_equal(gh__pat_compile(&s, m[i].pat, &p), 0);
        assert_string_equal(gh__str(&s, p.text), m[i].pat);
        assert_int_equal(gh__req_init(&q, "x", m[i].res), 0);
        if (gh__pat_match(&s, &p, &q) != m[i].match)
            fail_msg("'%s' vs '%s'", m[i].pat, m[i].res);
        free(s.str);
        free(s.segs);
    }
    static const char *const badp[] = {"",     "/",       "a//b", "a/",  "/a",
                                       "**/a", "a/**/**", "a*",   "*a/b"};
    for (size_t i = 0; i < sizeof(badp) / sizeof(badp[0]); i++) {
        memset(&s, 0, sizeof(s));
        if (gh__pat_compile(&s, badp[i], &p) != GH_EINVAL)
            fail_msg("'%s' compiled", badp[i]);
        free(s.str);
        free(s.segs);
    }
}

static json_t *path_step(json_t *ex, size_t i)
{
    return json_array_get(json_object_get(ex, "path"), i);
}

static void assert_step(json_t *ex, size_t i, const char *type, const char *name)
{
    json_t *st = path_step(ex, i);

    if (st == NULL)
        fail_msg("path has no step %zu: %s", i, json_dumps(ex, JSON_COMPACT));
    assert_string_equal(json_string_value(json_object_get(st, "type")), type);
    if (name)
        assert_string_equal(json_string_value(json_object_get(st, "name")), name);
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    if (s == NULL)
        fail_msg("no string '%s' in %s", key, json_dumps(o, JSON_COMPACT));
    return s;
}

static void test_explain(void **state)
{
    fx *f = *state;
    json_t *ex, *rule, *roles;
    int allow;

    /* inherited allow: alice -> binding -> ops -> deployer -> rule */
    ex = explain(f, "alice", "deploy", "service/web/prod", &allow);
    assert_int_equal(allow, 1);
    assert_string_equal(jstr(ex, "decision"), "allow");
    assert_string_equal(jstr(ex, "reason"), "allow_rule");
    rule = json_object_get(ex, "rule");
    assert_string_equal(jstr(rule, "role"), "deployer");
    assert_string_equal(jstr(rule, "action"), "deploy");
    assert_string_equal(jstr(rule, "resource"), "service/*/prod");
    roles = json_object_get(rule, "roles");
    assert_int_equal(json_array_size(roles), 2);
    assert_string_equal(json_string_value(json_array_get(roles, 0)), "ops");
    assert_string_equal(json_string_value(json_array_get(roles, 1)), "deployer");
    assert_string_equal(jstr(json_object_get(rule, "via"), "user"), "alice");
    assert_int_equal(json_array_size(json_object_get(ex, "path")), 5);
    assert_step(ex, 0, "user", "alice");
    assert_step(ex, 1, "binding", NULL);
    assert_step(ex, 2, "role", "ops");
    assert_step(ex, 3, "role", "deployer");
    assert_step(ex, 4, "rule", NULL);
    assert_string_equal(jstr(path_step(ex, 4), "resource"), "service/*/prod");
    assert_non_null(strstr(jstr(ex, "summary"), "role ops -> role deployer -> allow deploy"));
    json_decref(ex);

    /* nested groups: carol -> team-a -> eng -> binding -> reader */
    ex = explain(f, "carol", "read", "docs/x", &allow);
    assert_int_equal(allow, 1);
    assert_step(ex, 0, "user", "carol");
    assert_step(ex, 1, "group", "team-a");
    assert_step(ex, 2, "group", "eng");
    assert_step(ex, 3, "binding", NULL);
    assert_true(json_is_null(json_object_get(path_step(ex, 3), "scope")));
    assert_step(ex, 4, "role", "reader");
    assert_step(ex, 5, "rule", NULL);
    assert_string_equal(jstr(json_object_get(json_object_get(ex, "rule"), "via"), "group"), "eng");
    assert_non_null(strstr(jstr(ex, "summary"), "user carol -> group team-a -> group eng"));
    json_decref(ex);

    /* scoped binding shows its scope */
    ex = explain(f, "carol", "edit", "project/42/docs/readme", &allow);
    assert_int_equal(allow, 1);
    assert_step(ex, 2, "binding", NULL);
    assert_string_equal(jstr(path_step(ex, 2), "scope"), "project/42/**");
    assert_string_equal(jstr(json_object_get(ex, "rule"), "scope"), "project/42/**");
    json_decref(ex);

    /* deny overrides allow: the deny decides, the allow is named */
    ex = explain(f, "alice", "deploy", "service/payroll/prod", &allow);
    assert_int_equal(allow, 0);
    assert_string_equal(jstr(ex, "decision"), "deny");
    assert_string_equal(jstr(ex, "reason"), "deny_rule");
    rule = json_object_get(ex, "rule");
    assert_string_equal(jstr(rule, "effect"), "deny");
    assert_string_equal(jstr(rule, "role"), "ops");
    assert_string_equal(jstr(json_object_get(ex, "overrides"), "role"), "deployer");
    json_decref(ex);

    /* default deny */
    ex = explain(f, "frank", "read", "docs/x", &allow);
    assert_int_equal(allow, 0);
    assert_string_equal(jstr(ex, "reason"), "default_deny");
    assert_null(json_object_get(ex, "rule"));
    assert_int_equal(json_array_size(json_object_get(ex, "path")), 1);
    assert_non_null(strstr(jstr(ex, "summary"), "default deny"));
    json_decref(ex);

    /* locked and disabled accounts */
    ex = explain(f, "dave", "read", "docs/x", &allow);
    assert_int_equal(allow, 0);
    assert_string_equal(jstr(ex, "reason"), "account_locked");
    assert_string_equal(jstr(ex, "state"), "locked");
    json_decref(ex);
    ex = explain(f, "erin", "read", "docs/x", &allow);
    assert_string_equal(jstr(ex, "reason"), "account_disabled");
    json_decref(ex);

    /* explain agrees with check on every case */
    for (size_t i = 0; i < NTABLE; i++) {
        ex = explain(f, table[i].user, table[i].action, table[i].resource, &allow);
        assert_int_equal(allow, table[i].allow);
        assert_string_equal(jstr(ex, "decision"), table[i].allow ? "allow" : "deny");
        json_decref(ex);
    }
}

static void test_perms(void **state)
{
    fx *f = *state;

    for (size_t u = 0; u < NWORLD; u++) {
        uint64_t id = uid_of(f, world_users[u]);
        gh_txn *txn = rbegin(f);
        json_t *rules = NULL;
        int locked = strcmp(world_users[u], "dave") == 0 || strcmp(world_users[u], "erin") == 0;

        assert_int_equal(gh_authz_perms(f->authz, txn, id, &rules), 0);
        gh_store_read_end(f->reader);
        assert_true(json_is_array(rules));
        for (size_t i = 0; i < NTABLE; i++) {
            const struct tcase *t = &table[i];
            int want;
            if (strcmp(t->user, world_users[u]) != 0)
                continue;
            /* perms lists the rules; account state is applied on top */
            want = perms_decide(rules, t->action, t->resource) && !locked;
            if (want != t->allow)
                fail_msg("perms of %s imply %d for %s %s", t->user, want, t->action, t->resource);
        }
        if (strcmp(world_users[u], "frank") == 0)
            assert_int_equal(json_array_size(rules), 0);
        if (strcmp(world_users[u], "alice") == 0) {
            /* ops (2 rules) + deployer (2) + reader (1), each tagged with its origin */
            json_t *r0 = json_array_get(rules, 0);
            assert_int_equal(json_array_size(rules), 5);
            assert_string_equal(jstr(r0, "role"), "ops");
            assert_true(json_is_integer(json_object_get(r0, "binding")));
            assert_string_equal(jstr(json_object_get(r0, "via"), "user"), "alice");
            assert_true(json_is_null(json_object_get(r0, "scope")));
        }
        json_decref(rules);
    }
}

static int in_names(json_t *arr, const char *name)
{
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (strcmp(json_string_value(json_object_get(json_array_get(arr, i), "name")), name) == 0)
            return 1;
    return 0;
}

static void test_who_can(void **state)
{
    fx *f = *state;

    for (size_t i = 0; i < NTABLE; i++) {
        gh_txn *txn = rbegin(f);
        json_t *out = NULL, *users;

        assert_int_equal(gh_authz_who_can(f->authz, txn, table[i].action, table[i].resource, &out),
                         0);
        gh_store_read_end(f->reader);
        users = json_object_get(out, "users");
        assert_true(json_is_array(users));
        assert_true(json_is_array(json_object_get(out, "groups")));
        /* every world user is listed exactly when check allows */
        for (size_t u = 0; u < NWORLD; u++) {
            int want = decide(f, world_users[u], table[i].action, table[i].resource);
            if (in_names(users, world_users[u]) != want)
                fail_msg("who_can %s %s: %s listed=%d allowed=%d", table[i].action,
                         table[i].resource, world_users[u], !want, want);
        }
        json_decref(out);
    }
    /* groups and the allowing binding */
    {
        gh_txn *txn = rbegin(f);
        json_t *out = NULL, *g;
        assert_int_equal(gh_authz_who_can(f->authz, txn, "read", "docs/x", &out), 0);
        gh_store_read_end(f->reader);
        g = json_object_get(out, "groups");
        assert_int_equal(json_array_size(g), 1);
        assert_string_equal(jstr(json_array_get(g, 0), "name"), "eng");
        assert_string_equal(jstr(json_array_get(g, 0), "role"), "reader");
        assert_true(json_is_integer(json_object_get(json_array_get(g, 0), "binding")));
        json_decref(out);
    }
    {
        gh_txn *txn = rbegin(f);
        json_t *out = NULL;
        assert_int_equal(gh_authz_who_can(f->authz, txn, "read", "a//b", &out), GH_EINVAL);
        gh_store_read_end(f->reader);
        assert_null(out);
    }
}

/* ---- cache invalidation: each kind of write is seen by the next check ---- */

static uint64_t flushes(fx *f)
{
    gh_authz_stats st;
    gh_authz_get_stats(f->authz, &st);
    return st.flushes;
}

#define EXPECT(user, act, res, want) assert_int_equal(decide(f, user, act, res), want)

static void test_invalidate_role_change(void **state)
{
    fx *f = *state;
    uint64_t fl;

    EXPECT("bob", "deploy", "service/web/prod", 1);
    EXPECT("bob", "deploy", "service/web/prod", 1); /* cached */
    fl = flushes(f);
    wr_do(f, W_ROLE_SET, "deployer", "allow deploy service/billing/**", NULL, 0);
    EXPECT("bob", "deploy", "service/web/prod", 0);
    EXPECT("bob", "deploy", "service/billing/x", 1);
    assert_true(flushes(f) > fl);
    /* a parent's change reaches its children's holders */
    EXPECT("ivan", "view", "a/b", 1);
    wr_do(f, W_ROLE_SET, "base", "deny view a/b", NULL, 0);
    EXPECT("ivan", "view", "a/b", 0);
    /* a new parent link */
    EXPECT("judy", "read", "docs/x", 0);
    wr_do(f, W_ROLE_SET, "tmp", "allow tmp x", "reader", 0);
    EXPECT("judy", "read", "docs/x", 1);
}

static void test_invalidate_bindings(void **state)
{
    fx *f = *state;
    uint64_t b;

    EXPECT("frank", "read", "docs/x", 0);
    b = BIND_USER("reader", "frank", NULL);
    EXPECT("frank", "read", "docs/x", 1);
    {
        wr w = {W_UNBIND, NULL, NULL, NULL, 0, b};
        assert_int_equal(wr_try(f, &w), 0);
    }
    EXPECT("frank", "read", "docs/x", 0);
    /* a group binding revoked */
    EXPECT("bob", "deploy", "service/web/prod", 1);
    ROLE("nodeploy", "deny deploy **", NULL);
    b = BIND_GROUP("nodeploy", "devs", "service/web/**");
    EXPECT("bob", "deploy", "service/web/prod", 0);
    EXPECT("bob", "deploy", "service/billing/x", 1);
    {
        wr w = {W_UNBIND, NULL, NULL, NULL, 0, b};
        assert_int_equal(wr_try(f, &w), 0);
    }
    EXPECT("bob", "deploy", "service/web/prod", 1);
}

static void test_invalidate_membership(void **state)
{
    fx *f = *state;

    EXPECT("frank", "deploy", "service/web/prod", 0);
    MEMBER("devs", "frank");
    EXPECT("frank", "deploy", "service/web/prod", 1);
    wr_do(f, W_UNMEMBER_USER, "devs", "frank", NULL, 0);
    EXPECT("frank", "deploy", "service/web/prod", 0);
    /* nested: cutting team-a out of eng takes reader from carol */
    EXPECT("carol", "read", "docs/x", 1);
    wr_do(f, W_UNMEMBER_GROUP, "eng", "team-a", NULL, 0);
    EXPECT("carol", "read", "docs/x", 0);
    EXPECT("carol", "edit", "project/42/docs/a", 1);
    SUBGROUP("devs", "team-a");
    EXPECT("carol", "deploy", "service/web/prod", 1);
}

static void test_invalidate_user_state(void **state)
{
    fx *f = *state;

    EXPECT("bob", "deploy", "service/web/prod", 1);
    wr_do(f, W_STATE, "bob", NULL, NULL, GH_USER_LOCKED);
    EXPECT("bob", "deploy", "service/web/prod", 0);
    wr_do(f, W_STATE, "bob", NULL, NULL, GH_USER_DISABLED);
    EXPECT("bob", "deploy", "service/web/prod", 0);
    wr_do(f, W_STATE, "bob", NULL, NULL, GH_USER_ACTIVE);
    EXPECT("bob", "deploy", "service/web/prod", 1);
    EXPECT("dave", "read", "docs/x", 0);
    wr_do(f, W_STATE, "dave", NULL, NULL, GH_USER_ACTIVE);
    EXPECT("dave", "read", "docs/x", 1);
}

static void test_deleted_role(void **state)
{
    fx *f = *state;
    wr w = {W_ROLE_DEL, "tmp", NULL, NULL, 0, 0};

    EXPECT("judy", "tmp", "x", 1);
    assert_int_equal(wr_try(f, &w), GH_EINUSE); /* bound: refused without force */
    EXPECT("judy", "tmp", "x", 1);
    w.n = 1;
    assert_int_equal(wr_try(f, &w), 0);
    EXPECT("judy", "tmp", "x", 0);
    /* a parent deleted by force: its rules leave every child */
    EXPECT("ivan", "view", "a/b", 1);
    EXPECT("ivan", "view", "a/c", 1);
    {
        wr d = {W_ROLE_DEL, "base", NULL, NULL, 1, 0};
        assert_int_equal(wr_try(f, &d), 0);
    }
    EXPECT("ivan", "view", "a/b", 1); /* diamond still has its own a/b rule */
    {
        wr d = {W_ROLE_DEL, "diamond", NULL, NULL, 1, 0};
        assert_int_equal(wr_try(f, &d), 0);
    }
    EXPECT("ivan", "view", "a/b", 0);
    EXPECT("ivan", "view", "a/c", 1);
}

static void test_deleted_user(void **state)
{
    fx *f = *state;
    uint64_t id = uid_of(f, "bob");
    gh_txn *txn;
    int allow = 1;

    EXPECT("bob", "deploy", "service/web/prod", 1);
    wr_do(f, W_USER_DEL, "bob", NULL, NULL, 0);
    txn = rbegin(f);
    assert_int_equal(gh_authz_check(f->authz, txn, id, "deploy", "service/web/prod", &allow),
                     GH_ENOTFOUND);
    assert_int_equal(allow, 0);
    gh_store_read_end(f->reader);
}

static void test_cache_bound(void **state)
{
    fx *f = *state;
    gh_authz_opts o = {3};
    gh_authz_stats st;

    gh_authz_free(f->authz);
    assert_int_equal(gh_authz_new(&f->authz, &o), 0);
    for (int round = 0; round < 4; round++) {
        for (size_t i = 0; i < NTABLE; i++)
            assert_int_equal(decide(f, table[i].user, table[i].action, table[i].resource),
                             table[i].allow);
        gh_authz_get_stats(f->authz, &st);
        assert_true(st.cached <= 3);
    }
    gh_authz_get_stats(f->authz, &st);
    assert_true(st.compiles > NWORLD); /* evictions forced recompiles */
    gh_authz_flush(f->authz);
    gh_authz_get_stats(f->authz, &st);
    assert_int_equal(st.cached, 0);
}

/* The byte budget bounds the cache whatever the count allows, and decisions
 * stay right while sets are evicted. */
static void test_cache_byte_budget(void **state)
{
    fx *f = *state;
    gh_authz_opts o = {.cache_users = 1000, .cache_bytes = 1};
    gh_authz_stats st;

    gh_authz_free(f->authz);
    assert_int_equal(gh_authz_new(&f->authz, &o), 0);
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < NTABLE; i++) {
            assert_int_equal(decide(f, table[i].user, table[i].action, table[i].resource),
                             table[i].allow);
            gh_authz_get_stats(f->authz, &st);
            assert_true(st.cached <= 1); /* every set is over a 1-byte budget */
            assert_true(st.cached_bytes > 0);
        }
    gh_authz_free(f->authz);
    o.cache_bytes = (size_t)1 << 20;
    assert_int_equal(gh_authz_new(&f->authz, &o), 0);
    for (size_t i = 0; i < NTABLE; i++)
        decide(f, table[i].user, table[i].action, table[i].resource);
    gh_authz_get_stats(f->authz, &st);
    assert_true(st.cached > 1); /* a real budget keeps several */
    assert_true(st.cached_bytes <= ((size_t)1 << 20));
}

/* 1,000 rules across inherited roles: compiled once, decided right. */
static void test_large_user(void **state)
{
    fx *f = *state;
    char spec[8192], name[32], parents[64];
    size_t off;

    for (int r = 0; r < 10; r++) {
        off = 0;
        for (int i = 0; i < 100; i++)
            off += (size_t)snprintf(spec + off, sizeof(spec) - off, "%sallow act%d res/%d/%d/*",
                                    i ? ";" : "", i % 7, r, i);
        snprintf(name, sizeof(name), "big%d", r);
        if (r)
            snprintf(parents, sizeof(parents), "big%d", r - 1);
        ROLE(name, spec, r ? parents : NULL);
    }
    USER("zed");
    BIND_USER("big9", "zed", NULL);
    EXPECT("zed", "act3", "res/0/3/x", 1);
    EXPECT("zed", "act4", "res/0/3/x", 0);
    EXPECT("zed", "act1", "res/9/99/leaf", 1); /* 99 % 7 == 1 */
    EXPECT("zed", "act1", "res/9/99/leaf/more", 0);
    EXPECT("zed", "act1", "res/9/99", 0);
    {
        uint64_t id = uid_of(f, "zed");
        gh_txn *txn = rbegin(f);
        json_t *rules = NULL;
        assert_int_equal(gh_authz_perms(f->authz, txn, id, &rules), 0);
        gh_store_read_end(f->reader);
        assert_int_equal(json_array_size(rules), 1000);
        json_decref(rules);
    }
    /* 40 more holders of the 1,000 inherited rules share one compiled block:
     * the cache grows by a small set per user, not by a copy of every rule
     * (which costs over 100 KB per user). */
    {
        gh_authz_stats st0, st;
        char u[32];
        GROUP("crowd");
        BIND_GROUP("big9", "crowd", "res/**");
        EXPECT("zed", "act3", "res/0/3/x", 1);
        gh_authz_get_stats(f->authz, &st0);
        for (int i = 0; i < 40; i++) {
            snprintf(u, sizeof(u), "crowd%d", i);
            USER(u);
            MEMBER("crowd", u);
        }
        for (int i = 0; i < 40; i++) {
            snprintf(u, sizeof(u), "crowd%d", i);
            EXPECT(u, "act1", "res/9/99/leaf", 1);
            EXPECT(u, "act1", "other/9/99/leaf", 0);
        }
        gh_authz_get_stats(f->authz, &st);
        assert_true(st.cached >= 40);
        assert_true(st.cached_bytes < st0.cached_bytes + 40 * 2048);
    }
}

/* Scopes are compiled once per generation and shared by every user's set:
 * the same scope text through several groups or users, a role bound under
 * several scopes, a scoped deny, and new scopes after a binding change. */
static void test_shared_scopes(void **state)
{
    fx *f = *state;
    gh_authz_stats st0, st;
    char u[32], longscope[400];

    ROLE("sr", "allow read d/**", NULL);
    ROLE("sd", "deny read d/*/x", NULL);
    GROUP("sg1");
    GROUP("sg2");
    GROUP("sg3");
    USER("s1");
    USER("s2");
    USER("s3");
    MEMBER("sg1", "s1");
    MEMBER("sg2", "s1");
    MEMBER("sg2", "s2");
    MEMBER("sg3", "s2");
    BIND_GROUP("sr", "sg1", "d/a/**");
    BIND_GROUP("sr", "sg2", "d/b/**");
    BIND_GROUP("sr", "sg3", "d/a/**");
    BIND_USER("sr", "s1", "d/a/**"); /* the same (role, scope) as through sg1 */
    BIND_GROUP("sd", "sg2", "d/b/**");
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 2; i++) {
            const char *who = i ? "s2" : "s1";
            EXPECT(who, "read", "d/a/y", 1);
            EXPECT(who, "read", "d/a/x", 1); /* the deny's scope is d/b */
            EXPECT(who, "read", "d/b/y", 1);
            EXPECT(who, "read", "d/b/x", 0);
            EXPECT(who, "read", "d/c/y", 0);
            EXPECT(who, "read", "d", 0);
        }
        EXPECT("s3", "read", "d/a/y", 0);
    }
    /* a binding change: new generation, the scopes compiled again */
    BIND_GROUP("sr", "sg1", "d/c/**");
    EXPECT("s1", "read", "d/c/y", 1);
    EXPECT("s2", "read", "d/c/y", 0);
    EXPECT("s1", "read", "d/b/x", 0);
    EXPECT("s2", "read", "d/a/y", 1);
    /* 40 holders of one long scope: each set holds an index, not the text */
    memcpy(longscope, "d/", 2);
    memset(longscope + 2, 'l', 300);
    memcpy(longscope + 302, "/**", 4);
    GROUP("sg4");
    BIND_GROUP("sr", "sg4", longscope);
    for (int i = 0; i < 40; i++) {
        snprintf(u, sizeof(u), "sl%d", i);
        USER(u);
        MEMBER("sg4", u);
    }
    EXPECT("s1", "read", "d/c/y", 1);
    gh_authz_get_stats(f->authz, &st0);
    for (int i = 0; i < 40; i++) {
        snprintf(u, sizeof(u), "sl%d", i);
        EXPECT(u, "read", "d/a/y", 0);
    }
    gh_authz_get_stats(f->authz, &st);
    assert_int_equal(st.cached, st0.cached + 40);
    assert_true(st.cached_bytes < st0.cached_bytes + 40 * 64 + 1024);
    memcpy(longscope + 302, "/y", 3);
    EXPECT("sl7", "read", longscope, 1);
    EXPECT("sl7", "read", "d/a/y", 0);
    longscope[3] = 'm';
    EXPECT("sl7", "read", longscope, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pattern_compile),
        cmocka_unit_test_setup_teardown(test_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_table_fresh_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_patterns_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_explain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_perms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_who_can, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalidate_role_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalidate_bindings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalidate_membership, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalidate_user_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_role, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_byte_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_scopes, setup, teardown),
    };
    return cmocka_run_group_tests_name("authz", tests, NULL, NULL);
}
