/*
 * authz_bench.c: micro-benchmark of the policy engine, in process, on one
 * core. It builds its own store in a temporary directory and measures
 *   1. warm decisions per second for a user with 50 rules reached through 3
 *      groups (target: >= 1,000,000/s), inside one read snapshot and with a
 *      snapshot per decision as the server does per request;
 *   2. the cold compile of a user with 1,000 rules (target: < 1 ms).
 *
 * The one thing to know: it is a tool, not a test (make builds it, make check
 * does not run it); numbers depend on the machine. It still checks that the
 * decisions it times are the right ones, so a fast wrong engine fails.
 * Usage: authz_bench [decisions] (default 5,000,000).
 *
 * authz_bench --store DIR [--users N] [--seed S] [--checks N] replays instead
 * the checks gatehouse-bench draws (tests/bench/bench_data.c) against the
 * store a `gatehouse-bench --keep` run left in DIR (gatehoused stopped):
 * decisions per second over many users, what the server's check path pays
 * in the policy engine per request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authz/authz.h"
#include "schema/error.h"
#include "schema/store.h"
#include "tests/bench/bench_common.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this thread: steadier than wall time on a shared machine. */
static double cpu_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc, const char *err)
{
    fprintf(stderr, "authz_bench: %s: %s%s%s\n", what, gh_strerror(rc), err ? ": " : "",
            err ? err : "");
    exit(1);
}

/* ---- building the data set (one write per call) ---- */

typedef struct job {
    const char *kind;
    const char *a, *b, *c;
    char spec[65536];
} job;

static int apply(gh_txn *txn, void *arg)
{
    job *j = arg;
    int rc;

    if (strcmp(j->kind, "user") == 0) {
        gh_user u;
        memset(&u, 0, sizeof(u));
        snprintf(u.name, sizeof(u.name), "%s", j->a);
        return gh_store_user_add(txn, &u);
    }
    if (strcmp(j->kind, "group") == 0) {
        gh_group g;
        memset(&g, 0, sizeof(g));
        snprintf(g.name, sizeof(g.name), "%s", j->a);
        return gh_store_group_add(txn, &g);
    }
    if (strcmp(j->kind, "member") == 0 || strcmp(j->kind, "subgroup") == 0) {
        gh_group g;
        gh_member m;
        if ((rc = gh_store_group_get(txn, j->a, &g)) != 0)
            return rc;
        if (strcmp(j->kind, "member") == 0) {
            gh_user u;
            if ((rc = gh_store_user_get(txn, j->b, &u)) != 0)
                return rc;
            m.kind = GH_MEMBER_USER;
            m.id = u.id;
        } else {
            gh_group s;
            if ((rc = gh_store_group_get(txn, j->b, &s)) != 0)
                return rc;
            m.kind = GH_MEMBER_GROUP;
            m.id = s.id;
        }
        return gh_store_member_add(txn, g.id, m);
    }
    if (strcmp(j->kind, "role") == 0) {
        /* spec: "effect action resource;..." ; c: parent or NULL */
        gh_role *r = gh_role_new(j->a);
        char *spec = strdup(j->spec), *save = NULL, *tok;
        if (r == NULL || spec == NULL) {
            gh_role_free(r);
            free(spec);
            return GH_ENOMEM;
        }
        rc = 0;
        for (tok = strtok_r(spec, ";", &save); tok && rc == 0; tok = strtok_r(NULL, ";", &save)) {
            char eff[8], act[128], res[256];
            if (sscanf(tok, "%7s %127s %255s", eff, act, res) != 3)
                rc = GH_EINVAL;
            else
                rc = gh_role_add_rule(r, eff[0] == 'd' ? GH_DENY : GH_ALLOW, act, res);
        }
        if (rc == 0 && j->c)
            rc = gh_role_add_parent(r, j->c);
        if (rc == 0)
            rc = gh_store_role_add(txn, r);
        gh_role_free(r);
        free(spec);
        return rc;
    }
    if (strcmp(j->kind, "bind") == 0) {
        gh_binding b;
        gh_group g;
        memset(&b, 0, sizeof(b));
        snprintf(b.role, sizeof(b.role), "%s", j->a);
        snprintf(b.scope, sizeof(b.scope), "%s", j->c ? j->c : "");
        if ((rc = gh_store_group_get(txn, j->b, &g)) != 0)
            return rc;
        b.subject.kind = GH_MEMBER_GROUP;
        b.subject.id = g.id;
        return gh_store_binding_add(txn, &b);
    }
    return GH_EINVAL;
}

static void run(gh_store *s, const char *kind, const char *a, const char *b, const char *c,
                const char *spec)
{
    static job j;
    char err[256];
    int rc;

    memset(&j, 0, sizeof(j));
    j.kind = kind;
    j.a = a;
    j.b = b;
    j.c = c;
    snprintf(j.spec, sizeof(j.spec), "%s", spec ? spec : "");
    rc = gh_store_write(s, apply, &j, err, sizeof(err));
    if (rc)
        die(kind, rc, err);
}

static uint64_t user_id(gh_store_reader *rd, const char *name)
{
    gh_txn *txn;
    gh_user u;
    int rc;

    if ((rc = gh_store_read_begin(rd, &txn)) != 0)
        die("read", rc, NULL);
    if ((rc = gh_store_user_get(txn, name, &u)) != 0)
        die("user", rc, name);
    gh_store_read_end(rd);
    return u.id;
}

/* ---- the 50-rule user ---- */

/* u50 is in g1 and g2 directly and in g3 through g2: 3 effective groups.
 * 50 rules over 10 actions, exact, prefix and "*" actions, "*" and "**"
 * resources, denies and one scoped binding. */
static void build_50(gh_store *s)
{
    char spec[8192];
    size_t off = 0;

    run(s, "user", "u50", NULL, NULL, NULL);
    run(s, "group", "g1", NULL, NULL, NULL);
    run(s, "group", "g2", NULL, NULL, NULL);
    run(s, "group", "g3", NULL, NULL, NULL);
    run(s, "member", "g1", "u50", NULL, NULL);
    run(s, "member", "g2", "u50", NULL, NULL);
    run(s, "subgroup", "g3", "g2", NULL, NULL);

    /* r-base: 15 rules, inherited by r-app */
    for (int i = 0; i < 15; i++)
        off += (size_t)snprintf(spec + off, sizeof(spec) - off, "%sallow read%d docs/team%d/**",
                                i ? ";" : "", i % 5, i);
    run(s, "role", "r-base", NULL, NULL, spec);
    /* r-app: 15 rules + parent r-base, bound to g1 */
    off = 0;
    for (int i = 0; i < 13; i++)
        off += (size_t)snprintf(spec + off, sizeof(spec) - off,
                                "%sallow deploy%d service/app%d/*/prod", i ? ";" : "", i % 3, i);
    off += (size_t)snprintf(spec + off, sizeof(spec) - off,
                            ";deny deploy0 service/app0/blocked/prod;allow ops:* service/**");
    run(s, "role", "r-app", NULL, "r-base", spec);
    run(s, "bind", "r-app", "g1", NULL, NULL);
    /* r-data: 15 rules bound to g2, scoped */
    off = 0;
    for (int i = 0; i < 14; i++)
        off += (size_t)snprintf(spec + off, sizeof(spec) - off, "%sallow write db/shard%d/*",
                                i ? ";" : "", i);
    off += (size_t)snprintf(spec + off, sizeof(spec) - off, ";deny write db/shard13/secret");
    run(s, "role", "r-data", NULL, NULL, spec);
    run(s, "bind", "r-data", "g2", "db/**", NULL);
    /* r-guard: 5 rules bound to g3 */
    run(s, "role", "r-guard", NULL, NULL,
        "deny * vault/**;deny read0 docs/team0/private/**;allow audit:* logs/**;"
        "allow * public/*;deny ops:shutdown service/**");
    run(s, "bind", "r-guard", "g3", NULL, NULL);
}

typedef struct req {
    const char *action, *resource;
    int allow;
} req;

static const req reqs[] = {
    {"read0", "docs/team0/a/b", 1},
    {"read1", "docs/team1/x", 1},
    {"read2", "docs/team7/x/y/z", 1},
    {"read3", "docs/team2/x", 0},
    {"read0", "docs/team0/private/x", 0},
    {"deploy0", "service/app0/eu/prod", 1},
    {"deploy1", "service/app1/us/prod", 1},
    {"deploy0", "service/app0/blocked/prod", 0},
    {"deploy2", "service/app5/eu/prod", 1},
    {"deploy2", "service/app5/eu/staging", 0},
    {"ops:restart", "service/app3/eu/prod", 1},
    {"ops:shutdown", "service/app3", 0},
    {"write", "db/shard3/t1", 1},
    {"write", "db/shard13/secret", 0},
    {"write", "db/shard20/t1", 0},
    {"audit:read", "logs/2025/01", 1},
    {"anything", "public/index", 1},
    {"read0", "vault/keys", 0},
    {"delete", "service/app0/eu/prod", 0},
    {"read4", "docs/team4", 1},
};
#define NREQS (sizeof(reqs) / sizeof(reqs[0]))

/* ---- the 1,000-rule user ---- */

static void build_1000(gh_store *s)
{
    char spec[65536], name[32], parent[32];

    run(s, "user", "u1000", NULL, NULL, NULL);
    run(s, "group", "big", NULL, NULL, NULL);
    run(s, "member", "big", "u1000", NULL, NULL);
    for (int r = 0; r < 10; r++) {
        size_t off = 0;
        for (int i = 0; i < 100; i++)
            off += (size_t)snprintf(spec + off, sizeof(spec) - off, "%s%s act%d res/r%d/%d/*/**",
                                    i ? ";" : "", i % 10 == 9 ? "deny" : "allow", i % 20, r, i);
        snprintf(name, sizeof(name), "big%d", r);
        snprintf(parent, sizeof(parent), "big%d", r - 1);
        run(s, "role", name, NULL, r ? parent : NULL, spec);
    }
    run(s, "bind", "big9", "big", NULL, NULL);
    /* a second holder of the same roles: its compile finds them decoded */
    run(s, "user", "u1000b", NULL, NULL, NULL);
    run(s, "group", "big-b", NULL, NULL, NULL);
    run(s, "member", "big-b", "u1000b", NULL, NULL);
    run(s, "bind", "big9", "big-b", NULL, NULL);
}

/* ---- the gatehouse-bench data set, replayed in process ---- */

static int replay_store(const char *dir, uint32_t nusers, uint64_t seed, long n)
{
    char err[256], name[32];
    gh_store_opts so;
    gh_store *s = NULL;
    gh_store_reader *rd = NULL;
    gh_authz *a = NULL;
    gh_authz_stats st;
    gh_txn *txn;
    bn_data d;
    bn_rng r;
    bn_check *cs;
    uint64_t *ids;
    long allowed = 0;
    double t0, t1;
    int rc, allow;

    memset(&so, 0, sizeof(so));
    so.state_dir = dir;
    so.no_sync = 1;
    if ((rc = gh_store_open(&s, &so, err, sizeof(err))) != 0)
        die("open", rc, err);
    if ((rc = gh_store_reader_new(s, &rd)) != 0 || (rc = gh_authz_new(&a, NULL)) != 0)
        die("init", rc, NULL);
    bn_data_generate(&d, nusers, seed);
    bn_rng_seed(&r, seed * 7 + 1);
    cs = calloc((size_t)n, sizeof(*cs));
    ids = calloc(nusers, sizeof(*ids));
    if (cs == NULL || ids == NULL)
        die("calloc", GH_ENOMEM, NULL);
    for (long i = 0; i < n; i++)
        bn_check_pick(&d, &r, UINT32_MAX, &cs[i]);
    gh_store_read_begin(rd, &txn);
    for (uint32_t u = 0; u < nusers; u++) {
        gh_user usr;
        bn_user_name(name, sizeof(name), u);
        if ((rc = gh_store_user_get(txn, name, &usr)) != 0)
            die("user", rc, name);
        ids[u] = usr.id;
        gh_authz_check(a, txn, usr.id, "read", "x", &allow); /* warm the cache */
    }
    gh_store_read_end(rd);
    for (int pass = 0; pass < 2; pass++) { /* a warm-up pass, then the timed one */
        allowed = 0;
        t0 = cpu_s();
        for (long i = 0; i < n; i++) {
            gh_store_read_begin(rd, &txn);
            if ((rc = gh_authz_check(a, txn, ids[cs[i].user], cs[i].action, cs[i].resource,
                                     &allow)) != 0)
                die("check", rc, cs[i].resource);
            gh_store_read_end(rd);
            allowed += allow;
        }
        t1 = cpu_s();
    }
    gh_authz_get_stats(a, &st);
    printf("gatehouse-bench checks, %u users, snapshot per check: %.0f /s of CPU (%.0f ns CPU "
           "each, %ld "
           "checks, %.0f%% allowed, %llu sets cached, %llu bytes)\n",
           nusers, (double)n / (t1 - t0), (t1 - t0) * 1e9 / (double)n, n,
           100.0 * (double)allowed / (double)n, (unsigned long long)st.cached,
           (unsigned long long)st.cached_bytes);
    free(cs);
    free(ids);
    bn_data_free(&d);
    gh_authz_free(a);
    gh_store_reader_free(rd);
    gh_store_close(s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "--store") == 0) {
        uint32_t users = 10000;
        uint64_t seed = 1;
        long checks = 2000000;
        for (int i = 3; i + 1 < argc; i += 2) {
            if (strcmp(argv[i], "--users") == 0)
                users = (uint32_t)atol(argv[i + 1]);
            else if (strcmp(argv[i], "--seed") == 0)
                seed = (uint64_t)atoll(argv[i + 1]);
            else if (strcmp(argv[i], "--checks") == 0)
                checks = atol(argv[i + 1]);
        }
        return replay_store(argv[2], users, seed, checks > 0 ? checks : 1);
    }
    long n = argc > 1 ? atol(argv[1]) : 5000000;
    char dir[] = "/tmp/gh-authz-bench-XXXXXX", cmd[128], err[256];
    gh_store_opts so;
    gh_store *s = NULL;
    gh_store_reader *rd = NULL;
    gh_authz *a = NULL;
    gh_authz_stats st;
    gh_txn *txn;
    uint64_t u50, u1000, u1000b;
    long allowed = 0, want = 0;
    double t0, t1, best = 1e9, total = 0, worst = 0, best2 = 1e9, total2 = 0, worst2 = 0;
    int rc, allow, compiles = 200;

    if (n <= 0)
        n = 5000000;
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    memset(&so, 0, sizeof(so));
    so.state_dir = dir;
    so.no_sync = 1;
    if ((rc = gh_store_open(&s, &so, err, sizeof(err))) != 0)
        die("open", rc, err);
    if ((rc = gh_store_reader_new(s, &rd)) != 0 || (rc = gh_authz_new(&a, NULL)) != 0)
        die("init", rc, NULL);
    build_50(s);
    build_1000(s);
    u50 = user_id(rd, "u50");
    u1000 = user_id(rd, "u1000");
    u1000b = user_id(rd, "u1000b");

    /* correctness first */
    gh_store_read_begin(rd, &txn);
    for (size_t i = 0; i < NREQS; i++) {
        rc = gh_authz_check(a, txn, u50, reqs[i].action, reqs[i].resource, &allow);
        if (rc || allow != reqs[i].allow) {
            fprintf(stderr, "authz_bench: wrong decision for %s %s (rc %d, allow %d)\n",
                    reqs[i].action, reqs[i].resource, rc, allow);
            return 1;
        }
    }

    /* 1a. warm decisions, one snapshot */
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        const req *q = &reqs[i % NREQS];
        gh_authz_check(a, txn, u50, q->action, q->resource, &allow);
        allowed += allow;
        want += q->allow;
    }
    t1 = now_s();
    gh_store_read_end(rd);
    if (allowed != want) {
        fprintf(stderr, "authz_bench: %ld allows, expected %ld\n", allowed, want);
        return 1;
    }
    printf("decisions (50 rules, 3 groups, one snapshot): %.0f /s (%.0f ns each, %ld checks)\n",
           (double)n / (t1 - t0), (t1 - t0) * 1e9 / (double)n, n);

    /* 1b. a snapshot per decision, as a server request does */
    t0 = now_s();
    for (long i = 0; i < n / 5; i++) {
        const req *q = &reqs[i % NREQS];
        gh_store_read_begin(rd, &txn);
        gh_authz_check(a, txn, u50, q->action, q->resource, &allow);
        gh_store_read_end(rd);
    }
    t1 = now_s();
    printf("decisions (50 rules, snapshot per check):     %.0f /s (%.0f ns each)\n",
           (double)(n / 5) / (t1 - t0), (t1 - t0) * 1e9 / (double)(n / 5));

    /* 2. cold compile of 1,000 rules */
    gh_store_read_begin(rd, &txn);
    gh_authz_check(a, txn, u1000, "act3", "res/r0/3/x", &allow);
    if (!allow) {
        fprintf(stderr, "authz_bench: wrong decision for the 1,000-rule user\n");
        return 1;
    }
    for (int i = 0; i < compiles; i++) {
        double d;
        gh_authz_flush(a); /* drops compiled sets and decoded roles */
        t0 = now_s();
        gh_authz_check(a, txn, u1000, "act3", "res/r0/3/x", &allow);
        d = now_s() - t0;
        total += d;
        if (d < best)
            best = d;
        if (d > worst)
            worst = d;
        /* same roles, another user: only the compile itself */
        t0 = now_s();
        gh_authz_check(a, txn, u1000b, "act3", "res/r0/3/x", &allow);
        d = now_s() - t0;
        total2 += d;
        if (d < best2)
            best2 = d;
        if (d > worst2)
            worst2 = d;
    }
    gh_store_read_end(rd);
    gh_authz_get_stats(a, &st);
    printf("cold compile, 1,000 rules in 10 inherited roles, nothing cached (roles decoded from "
           "the store):\n    mean %.1f us, best %.1f us, worst %.1f us (%d runs)\n",
           total * 1e6 / compiles, best * 1e6, worst * 1e6, compiles);
    printf("cold compile, 1,000 rules, roles already decoded this generation (another holder):\n"
           "    mean %.1f us, best %.1f us, worst %.1f us (%d runs)\n",
           total2 * 1e6 / compiles, best2 * 1e6, worst2 * 1e6, compiles);
    printf("cache: hits %llu misses %llu compiles %llu flushes %llu\n", (unsigned long long)st.hits,
           (unsigned long long)st.misses, (unsigned long long)st.compiles,
           (unsigned long long)st.flushes);

    gh_authz_free(a);
    gh_store_reader_free(rd);
    gh_store_close(s);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
