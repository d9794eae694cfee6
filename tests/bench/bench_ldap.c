/*
 * bench_ldap.c: the OpenLDAP side of --compare-slapd: a private slapd
 * (back-mdb, the argon2 password module) loaded with the same users and
 * groups by slapadd, and the LDAP analogues of the Gatehouse workloads,
 * driven through libldap with the same client concurrency:
 *
 *   check    -> compare on `member` of a groupOfNames (direct membership only:
 *               slapd evaluates no nesting and no roles here)
 *   auth     -> simple bind ({ARGON2} with the very verifier Gatehouse stores)
 *   user.get -> search (uid=...) one level under ou=people
 *   groupsearch -> a user's groups: (&(objectClass=groupOfNames)(member=DN))
 *   paged    -> every user through paged results (500 a page): one sweep, one op
 *
 * The same client also drives gatehoused's own LDAP front-end (a bn_slapd
 * whose side is "gatehouse-ldap", pointing at gatehoused's ldapi socket).
 *
 * Compare and search keep `depth` operations in flight per connection with
 * the asynchronous API (msgids); bind is synchronous, since LDAP allows one
 * bind at a time per connection. The one thing to know: slapd is started
 * from a temp dir with its own slapd.conf, on a loopback port and an ldapi
 * socket, and killed by pid (bench_util.c), also when the run fails; the
 * workloads use ldapi so that both servers are reached over a UNIX socket.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <unistd.h>

#include <ldap.h>

#include "tests/bench/bench_common.h"

static int free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
        port = ntohs(sin.sin_port);
    close(fd);
    return port;
}

static void url_encode_path(const char *in, char *out, size_t len)
{
    size_t o = 0;
    for (; *in && o + 4 < len; in++) {
        if (*in == '/' || *in == '%' || *in == ':' || *in == ' ')
            o += (size_t)snprintf(out + o, len - o, "%%%02X", (unsigned char)*in);
        else
            out[o++] = *in;
    }
    out[o] = '\0';
}

int bn_slapd_start(bn_slapd *s, const bn_data *d, const char *slapd_bin, const char *slapadd_bin)
{
    char path[700], enc[1000], hosts[1200];
    const char *dir = bn_tempdir("slapd");
    memset(s, 0, sizeof(*s));
    snprintf(s->side, sizeof(s->side), "slapd");
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    snprintf(s->conf, sizeof(s->conf), "%s/slapd.conf", dir);
    snprintf(s->ldapi_path, sizeof(s->ldapi_path), "%s/ldapi", dir);
    url_encode_path(s->ldapi_path, enc, sizeof(enc));
    snprintf(s->ldapi_url, sizeof(s->ldapi_url), "ldapi://%s", enc);
    int port = free_port();
    if (port <= 0)
        bn_die("no free loopback port for slapd");
    snprintf(s->ldap_url, sizeof(s->ldap_url), "ldap://127.0.0.1:%d", port);
    snprintf(path, sizeof(path), "%s/db", dir);
    if (mkdir(path, 0700) != 0)
        bn_die("mkdir %s: %s", path, strerror(errno));

    FILE *f = fopen(s->conf, "w");
    if (f == NULL)
        bn_die("cannot write %s", s->conf);
    fprintf(f,
            "# written by gatehouse-bench\n"
            "include /etc/ldap/schema/core.schema\n"
            "include /etc/ldap/schema/cosine.schema\n"
            "include /etc/ldap/schema/inetorgperson.schema\n"
            "include /etc/ldap/schema/nis.schema\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\nmoduleload argon2\n"
            "pidfile %s/slapd.pid\nargsfile %s/slapd.args\n"
            "loglevel 0\nsizelimit unlimited\n"
            "password-hash {ARGON2}\n"
            "database mdb\nsuffix \"dc=bench\"\nrootdn \"cn=admin,dc=bench\"\n"
            "rootpw bench-admin-secret\ndirectory %s/db\nmaxsize %llu\n"
            "index objectClass eq\nindex uid eq\nindex member eq\n"
            "access to attrs=userPassword by anonymous auth by * none\n"
            "access to * by * read\n",
            dir, dir, dir, 1073741824ull + (unsigned long long)d->nusers * 16384ull);
    fclose(f);

    snprintf(path, sizeof(path), "%s/data.ldif", dir);
    if (bn_ldif_write(d, path) != 0)
        bn_die("cannot write %s", path);
    char log[700];
    snprintf(log, sizeof(log), "%s/slapd.log", dir);
    uint64_t t0 = bn_now_ns();
    char *add_argv[] = {(char *)slapadd_bin, "-q", "-f", s->conf, "-l", path, NULL};
    int st = bn_child_wait(bn_spawn(add_argv, log));
    if (st != 0) {
        bn_log("slapadd failed (status %d); see %s", st, log);
        return -1;
    }
    s->load_secs = (double)(bn_now_ns() - t0) / 1e9;

    snprintf(hosts, sizeof(hosts), "%s/ %s/", s->ldap_url, s->ldapi_url);
    char *argv[] = {(char *)slapd_bin, "-d", "0", "-f", s->conf, "-h", hosts, NULL};
    s->pid = bn_spawn(argv, log);
    for (int waited = 0; waited < 30000; waited += 20) {
        if (!bn_child_alive(s->pid)) {
            bn_log("slapd exited at start; see %s", log);
            s->pid = 0;
            return -1;
        }
        int fd = bn_unix_connect(s->ldapi_path, 0);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        bn_sleep_ms(20);
    }
    bn_log("slapd did not listen on %s within 30 s", s->ldapi_path);
    return -1;
}

void bn_slapd_stop(bn_slapd *s)
{
    if (s->pid > 0)
        bn_child_stop(s->pid, SIGTERM, 15000);
    s->pid = 0;
}

/* ---- the load generator ---- */

typedef struct lslot {
    int msgid; /* 0: free */
    uint64_t t0;
    int entries;
} lslot;

typedef struct lworker {
    bn_ctx *x;
    const bn_slapd *s;
    int op, depth;
    bn_rng rng;
    LDAP *ld;
    lslot *slots;
    bn_series ops[BN_OP_N];
    bn_codes codes;
    uint64_t all;
    const volatile uint64_t *t_start, *t_end;
    pthread_barrier_t *bar;
    char err[200];
} lworker;

static int issue(lworker *k, lslot *sl)
{
    const bn_data *d = &k->x->data;
    char dn[96], udn[96], filter[64], name[32];
    int rc;
    if (k->op == BN_OP_COMPARE) {
        bn_check c;
        bn_check_pick(d, &k->rng, UINT32_MAX, &c);
        bn_group_name(name, sizeof(name), c.group);
        snprintf(dn, sizeof(dn), "cn=%s,ou=groups,dc=bench", name);
        bn_user_name(name, sizeof(name), c.user);
        snprintf(udn, sizeof(udn), "uid=%s,ou=people,dc=bench", name);
        struct berval bv = {strlen(udn), udn};
        rc = ldap_compare_ext(k->ld, dn, "member", &bv, NULL, NULL, &sl->msgid);
    } else if (k->op == BN_OP_GSEARCH) {
        static char *attrs[] = {"cn", NULL};
        char gf[160];
        bn_user_name(name, sizeof(name), bn_rng_below(&k->rng, d->nusers));
        snprintf(gf, sizeof(gf), "(&(objectClass=groupOfNames)(member=uid=%s,ou=people,dc=bench))",
                 name);
        rc = ldap_search_ext(k->ld, "ou=groups,dc=bench", LDAP_SCOPE_ONELEVEL, gf, attrs, 0, NULL,
                             NULL, NULL, 0, &sl->msgid);
    } else {
        bn_user_name(name, sizeof(name), bn_rng_below(&k->rng, d->nusers));
        snprintf(filter, sizeof(filter), "(uid=%s)", name);
        rc = ldap_search_ext(k->ld, "ou=people,dc=bench", LDAP_SCOPE_ONELEVEL, filter, NULL, 0,
                             NULL, NULL, NULL, 0, &sl->msgid);
    }
    sl->t0 = bn_now_ns();
    sl->entries = 0;
    if (rc != LDAP_SUCCESS) {
        snprintf(k->err, sizeof(k->err), "send: %s", ldap_err2string(rc));
        return -1;
    }
    return 0;
}

static void count_code(lworker *k, bn_series *se, int rc)
{
    const char *s = ldap_err2string(rc);
    se->errors++;
    bn_codes_add(&k->codes, s, strlen(s), 1);
}

static void run_async(lworker *k)
{
    uint64_t t_start = *k->t_start, t_end = *k->t_end;
    int outstanding = 0;
    for (int i = 0; i < k->depth; i++) {
        if (issue(k, &k->slots[i]) != 0)
            return;
        outstanding++;
    }
    while (outstanding > 0) {
        LDAPMessage *msg = NULL;
        struct timeval tv = {30, 0};
        int type = ldap_result(k->ld, LDAP_RES_ANY, LDAP_MSG_ONE, &tv, &msg);
        uint64_t t = bn_now_ns();
        if (type <= 0) {
            snprintf(k->err, sizeof(k->err), "ldap_result: %s",
                     type == 0 ? "timeout" : ldap_err2string(type));
            if (msg)
                ldap_msgfree(msg);
            return;
        }
        int id = ldap_msgid(msg);
        lslot *sl = NULL;
        for (int i = 0; i < k->depth; i++)
            if (k->slots[i].msgid == id)
                sl = &k->slots[i];
        if (sl == NULL) {
            ldap_msgfree(msg);
            continue;
        }
        if (type == LDAP_RES_SEARCH_ENTRY || type == LDAP_RES_SEARCH_REFERENCE) {
            sl->entries++;
            ldap_msgfree(msg);
            continue;
        }
        int rc = LDAP_OTHER;
        if (ldap_parse_result(k->ld, msg, &rc, NULL, NULL, NULL, NULL, 1) != LDAP_SUCCESS)
            rc = LDAP_OTHER;
        int in_window = t >= t_start && t <= t_end;
        bn_series *se = &k->ops[k->op];
        k->all++;
        if (in_window) {
            bn_series_add(se, t - sl->t0);
            if (k->op == BN_OP_COMPARE && (rc == LDAP_COMPARE_TRUE || rc == LDAP_COMPARE_FALSE)) {
                se->ok++;
                if (rc == LDAP_COMPARE_TRUE)
                    se->yes++;
                else
                    se->no++;
            } else if (k->op == BN_OP_SEARCH && rc == LDAP_SUCCESS && sl->entries == 1) {
                se->ok++;
            } else if (k->op == BN_OP_GSEARCH && rc == LDAP_SUCCESS) {
                se->ok++;
                if (sl->entries > 0)
                    se->yes++;
                else
                    se->no++;
            } else {
                count_code(k, se, rc == LDAP_SUCCESS ? LDAP_NO_SUCH_OBJECT : rc);
            }
        }
        sl->msgid = 0;
        outstanding--;
        if (t < t_end) {
            if (issue(k, sl) != 0)
                return;
            outstanding++;
        }
    }
}

static void run_bind(lworker *k)
{
    const bn_data *d = &k->x->data;
    uint64_t t_start = *k->t_start, t_end = *k->t_end;
    char dn[96], name[32];
    for (;;) {
        int wrong = (double)bn_rng_below(&k->rng, 1000000) < k->x->wrong_ratio * 1e6;
        const char *pw = wrong ? "not-the-Passw0rd" : d->password;
        struct berval cred = {strlen(pw), (char *)pw};
        bn_user_name(name, sizeof(name), bn_rng_below(&k->rng, d->nusers));
        snprintf(dn, sizeof(dn), "uid=%s,ou=people,dc=bench", name);
        uint64_t t0 = bn_now_ns();
        int rc = ldap_sasl_bind_s(k->ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
        uint64_t t = bn_now_ns();
        bn_series *se = &k->ops[BN_OP_BIND];
        k->all++;
        if (t >= t_start && t <= t_end) {
            bn_series_add(se, t - t0);
            if (!wrong && rc == LDAP_SUCCESS) {
                se->ok++;
                se->yes++;
            } else if (wrong && rc == LDAP_INVALID_CREDENTIALS) {
                se->ok++;
                se->no++;
            } else {
                count_code(k, se, rc);
            }
        }
        if (rc == LDAP_SERVER_DOWN) {
            snprintf(k->err, sizeof(k->err), "bind: %s", ldap_err2string(rc));
            return;
        }
        if (t >= t_end)
            return;
    }
}

/* Paged sweeps over every user, one after the other; a sweep that does not
 * see every user counts as an error. */
static void run_paged(lworker *k)
{
    const bn_data *d = &k->x->data;
    uint64_t t_start = *k->t_start, t_end = *k->t_end;
    static char *attrs[] = {"uid", NULL};
    for (;;) {
        struct berval *cookie = NULL;
        uint64_t entries = 0, t0 = bn_now_ns();
        int rc;
        for (;;) {
            LDAPControl *pc = NULL, *ctrls[2] = {NULL, NULL}, **sctrls = NULL;
            LDAPMessage *res = NULL;
            ber_int_t est = 0;
            rc = ldap_create_page_control(k->ld, 500, cookie, 0, &pc);
            if (rc != LDAP_SUCCESS)
                break;
            ctrls[0] = pc;
            rc = ldap_search_ext_s(k->ld, "ou=people,dc=bench", LDAP_SCOPE_ONELEVEL,
                                   "(objectClass=inetOrgPerson)", attrs, 0, ctrls, NULL, NULL, 0,
                                   &res);
            ldap_control_free(pc);
            if (res)
                entries += (uint64_t)ldap_count_entries(k->ld, res);
            int prc = LDAP_OTHER;
            if (rc == LDAP_SUCCESS && res &&
                ldap_parse_result(k->ld, res, &prc, NULL, NULL, NULL, &sctrls, 0) == LDAP_SUCCESS)
                rc = prc;
            if (res)
                ldap_msgfree(res);
            if (cookie) {
                ber_bvfree(cookie);
                cookie = NULL;
            }
            LDAPControl *rc_ctl =
                sctrls ? ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, sctrls, NULL) : NULL;
            struct berval ck = {0, NULL};
            if (rc == LDAP_SUCCESS && rc_ctl &&
                ldap_parse_pageresponse_control(k->ld, rc_ctl, &est, &ck) == LDAP_SUCCESS &&
                ck.bv_len > 0) {
                cookie = ber_bvdup(&ck);
            }
            if (ck.bv_val)
                ber_memfree(ck.bv_val);
            if (sctrls)
                ldap_controls_free(sctrls);
            if (rc != LDAP_SUCCESS || cookie == NULL)
                break;
        }
        if (cookie)
            ber_bvfree(cookie);
        uint64_t t = bn_now_ns();
        bn_series *se = &k->ops[BN_OP_PAGED];
        k->all++;
        if (t >= t_start && t <= t_end) {
            bn_series_add(se, t - t0);
            if (rc == LDAP_SUCCESS && entries == d->nusers)
                se->ok++;
            else
                count_code(k, se, rc == LDAP_SUCCESS ? LDAP_SIZELIMIT_EXCEEDED : rc);
        }
        if (rc == LDAP_SERVER_DOWN) {
            snprintf(k->err, sizeof(k->err), "paged: %s", ldap_err2string(rc));
            return;
        }
        if (t >= t_end)
            return;
    }
}

static void *lworker_main(void *arg)
{
    lworker *k = arg;
    int v3 = LDAP_VERSION3;
    if (k->x->client_cpu >= 0)
        bn_pin_self(k->x->client_cpu);
    int rc = ldap_initialize(&k->ld, k->s->ldapi_url);
    if (rc == LDAP_SUCCESS)
        rc = ldap_set_option(k->ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    if (rc == LDAP_SUCCESS) {
        /* connect now, outside the measured window, as the first user */
        char dn[96], name[32];
        struct berval cred = {strlen(k->x->data.password), (char *)k->x->data.password};
        bn_user_name(name, sizeof(name), 0);
        snprintf(dn, sizeof(dn), "uid=%s,ou=people,dc=bench", name);
        rc = ldap_sasl_bind_s(k->ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
    }
    pthread_barrier_wait(k->bar); /* every worker connected and bound */
    pthread_barrier_wait(k->bar); /* the main thread has set the window */
    if (rc != LDAP_SUCCESS) {
        snprintf(k->err, sizeof(k->err), "connect %.120s: %s", k->s->ldapi_url,
                 ldap_err2string(rc));
        return NULL;
    }
    if (k->op == BN_OP_BIND)
        run_bind(k);
    else if (k->op == BN_OP_PAGED)
        run_paged(k);
    else
        run_async(k);
    return NULL;
}

int bn_ldap_run(bn_ctx *x, const bn_slapd *s, const char *workload, int conns, int depth,
                double seconds, bn_result *out)
{
    int op, failed = 0;
    if (strcmp(workload, "compare") == 0 || strcmp(workload, "check") == 0)
        op = BN_OP_COMPARE;
    else if (strcmp(workload, "bind") == 0 || strcmp(workload, "auth") == 0)
        op = BN_OP_BIND;
    else if (strcmp(workload, "search") == 0 || strcmp(workload, "user.get") == 0)
        op = BN_OP_SEARCH;
    else if (strcmp(workload, "groupsearch") == 0)
        op = BN_OP_GSEARCH;
    else if (strcmp(workload, "paged") == 0)
        op = BN_OP_PAGED;
    else
        bn_die("no LDAP workload '%s'", workload);
    if (op == BN_OP_BIND || op == BN_OP_PAGED)
        depth = 1;
    lworker *ks = calloc((size_t)conns, sizeof(*ks));
    pthread_t *th = calloc((size_t)conns, sizeof(*th));
    pthread_barrier_t bar;
    volatile uint64_t t_start = 0, t_end = 0;
    bn_rss before, after;
    if (ks == NULL || th == NULL)
        bn_die("out of memory");
    pthread_barrier_init(&bar, NULL, (unsigned)conns + 1);
    double scpu0, ccpu0, busy0, gcpu0;
    uint64_t wall0;
    for (int i = 0; i < conns; i++) {
        lworker *k = &ks[i];
        k->x = x;
        k->s = s;
        k->op = op;
        k->depth = depth;
        k->slots = calloc((size_t)depth, sizeof(*k->slots));
        if (k->slots == NULL)
            bn_die("out of memory");
        bn_rng_seed(&k->rng, x->data.seed * 6151 + (uint64_t)i * 12289 + (uint64_t)op);
        k->t_start = &t_start;
        k->t_end = &t_end;
        k->bar = &bar;
        if (pthread_create(&th[i], NULL, lworker_main, k) != 0)
            bn_die("pthread_create failed");
    }
    /* the window opens once every worker is connected: a bind at a high
     * Argon2 cost on a busy machine can take longer than the warm-up */
    pthread_barrier_wait(&bar);
    bn_rss_read(s->pid, &before); /* CPU and RSS from here: not the binds */
    scpu0 = bn_proc_cpu(s->pid);
    ccpu0 = bn_self_cpu();
    busy0 = bn_sys_busy();
    gcpu0 = bn_proc_cpu(x->gh_pid);
    wall0 = bn_now_ns();
    uint64_t now = bn_now_ns();
    t_start = now + (uint64_t)(x->warmup * 1e9);
    t_end = t_start + (uint64_t)(seconds * 1e9);
    pthread_barrier_wait(&bar);
    for (int i = 0; i < conns; i++)
        pthread_join(th[i], NULL);
    bn_rss_read(s->pid, &after);
    memset(out, 0, sizeof(*out));
    snprintf(out->side, sizeof(out->side), "%s", s->side[0] ? s->side : "slapd");
    snprintf(out->workload, sizeof(out->workload), "%s", bn_op_names[op]);
    out->conns = conns;
    out->depth = depth;
    out->seconds = seconds;
    out->rss_before_kb = before.rss;
    out->rss_after_kb = after.rss;
    out->wall_s = (double)(bn_now_ns() - wall0) / 1e9;
    double scpu = bn_proc_cpu(s->pid);
    out->server_cpu_s = scpu0 >= 0 && scpu >= 0 ? scpu - scpu0 : -1;
    out->client_cpu_s = bn_self_cpu() - ccpu0;
    double gcpu =
        gcpu0 >= 0 ? bn_proc_cpu(x->gh_pid) - gcpu0 : 0; /* idle gatehoused: not "other" */
    out->other_cpu_share =
        bn_other_share(bn_sys_busy() - busy0 - gcpu, out->server_cpu_s >= 0 ? out->server_cpu_s : 0,
                       out->client_cpu_s, out->wall_s);
    for (int i = 0; i < conns; i++) {
        lworker *k = &ks[i];
        if (k->err[0]) {
            bn_log("%s %s worker %d: %s", s->side, bn_op_names[op], i, k->err);
            failed = 1;
        }
        out->ops_all += k->all;
        for (int o = 0; o < BN_OP_N; o++) {
            bn_series_merge(&out->ops[o], &k->ops[o]);
            bn_series_free(&k->ops[o]);
        }
        bn_codes_merge(&out->codes, &k->codes);
        if (k->ld)
            ldap_unbind_ext_s(k->ld, NULL, NULL);
        free(k->slots);
    }
    for (int o = 0; o < BN_OP_N; o++)
        bn_series_sort(&out->ops[o]);
    pthread_barrier_destroy(&bar);
    free(ks);
    free(th);
    return failed ? -1 : 0;
}
