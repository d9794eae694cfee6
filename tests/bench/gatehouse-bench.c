/*
 * gatehouse-bench: drives a running gatehoused (or one it starts on a temp
 * state dir) over its socket and reports throughput, latency percentiles,
 * errors and the server's memory for each workload; optionally runs the same
 * data set and concurrency against a private slapd, measures the physical
 * floors (socket echo, raw Argon2 verification) in the same run, and checks
 * the figures against the targets of docs/PERFORMANCE.md.
 *
 *   gatehouse-bench --server-bin ./gatehoused --compare-slapd --auth-storm \
 *                   --duration 5 --markdown bench-results.md
 *   gatehouse-bench --socket ./var/gatehoused.sock --workload check --conns 8 --depth 32
 *
 * The one thing to know: every figure printed comes from this run; nothing
 * is remembered from earlier runs, and a target that is not met is printed as
 * such with the measured ratio. The parts: bench_data.c (the directory),
 * bench_gh.c (Gatehouse load), bench_ldap.c (slapd), bench_base.c (floors),
 * bench_util.c (samples, processes, placement).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "tests/bench/bench_common.h"

typedef struct opts {
    const char *socket, *server_bin, *markdown, *workloads;
    const char *slapd_bin, *slapadd_bin;
    int conns, depth, auth_conns, storm_auth_conns, storm_auth_depth, storm_check_conns;
    double duration;
    uint32_t users;
    uint64_t seed;
    int compare_slapd, auth_storm, baselines, keep, skip_load;
    int ldap; /* --ldap: gatehoused's LDAP front-end against slapd */
    pid_t server_pid;
} opts;

/* Everything measured, for the report. */
#define RESULTS_MAX 64
typedef struct report {
    char machine[512];
    char command[2048];
    char date[64];
    char loadavg[64];
    bn_result res[RESULTS_MAX];
    int nres;
    /* load and start-up */
    double import_secs, slapadd_secs, startup_ms;
    uint64_t import_records, import_failed;
    bn_rss rss_empty, rss_loaded, rss_restarted, rss_warm, rss_end;
    double warm_secs;   /* the permission-cache warm pass, 0: not run */
    double pwhash_rate; /* the higher of the two */
    double pwhash[2], pwhash_other[2];
    int pwhash_threads;
    /* placement pairs: echo result index and check result index */
    int place_echo[3], place_check[3], place_pinned[3];
    char place_name[3][24];
    int nplace;
    int storm_auth, storm_check;
    int echo_pipe; /* the pipelined echo (conns x depth of the check run), -1: not run */
    char stats_note[1024], warm_note[1024];
} report;

static report R;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gatehouse-bench (--socket PATH | --server-bin PATH) [options]\n"
            "  --socket PATH        drive a running gatehoused (needs admin: run as its uid/root)\n"
            "  --server-bin PATH    start PATH on a temp state dir; killed by pid at the end\n"
            "  --conns N            client connections (threads), default 4\n"
            "  --depth D            pipeline depth of the pipelined runs, default 16\n"
            "  --duration S         measured seconds per run, default 5 (plus --warmup)\n"
            "  --warmup S           seconds before measuring, default 1\n"
            "  --workload LIST      all (default), none, or a comma list of check, batch, auth,\n"
            "                       whoami, user.get, mixed, write\n"
            "  --users N            users in the data set (10000; groups, bindings scale)\n"
            "  --seed N             data set and request seed, default 1\n"
            "  --markdown FILE      also write the report as Markdown to FILE\n"
            "  --compare-slapd      run the LDAP equivalents against a private slapd\n"
            "  --ldap               with --compare-slapd and --server-bin: the same LDAP\n"
            "                       client against gatehoused's LDAP front-end and slapd\n"
            "                       (compare, group search, bind, paged search of all users)\n"
            "  --slapd PATH, --slapadd PATH   default /usr/sbin/slapd, /usr/sbin/slapadd\n"
            "  --auth-storm         check latency while auth saturates Argon2\n"
            "  --no-baselines       skip the echo and raw Argon2 measurements\n"
            "  --batch N            checks per check.batch, default 20\n"
            "  --wrong-ratio F      share of wrong passwords in auth, default 0.2\n"
            "  --opslimit N --memlimit BYTES --threadpool N   the server's Argon2 settings\n"
            "                       (defaults 2, 64M, 2: gatehoused's defaults)\n"
            "  --server-pid PID     the server's pid when --socket cannot tell it\n"
            "  --skip-load          the data set (same --users and --seed) is already loaded\n"
            "  --keep               keep the temp dirs (server logs, slapd.conf, LDIF)\n");
}

static size_t parse_size(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end == 'K' || *end == 'k')
        v <<= 10;
    else if (*end == 'M' || *end == 'm')
        v <<= 20;
    else if (*end == 'G' || *end == 'g')
        v <<= 30;
    return (size_t)v;
}

static int wants(const opts *o, const char *w)
{
    if (strcmp(o->workloads, "all") == 0)
        return 1;
    size_t n = strlen(w);
    for (const char *p = o->workloads; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, w, n) == 0)
            return 1;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

static bn_result *next_result(void)
{
    if (R.nres == RESULTS_MAX)
        bn_die("too many runs");
    return &R.res[R.nres++];
}

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static double rate(const bn_result *r, int op)
{
    return r->seconds > 0 ? (double)r->ops[op].n / r->seconds : 0;
}

/* The op a single-op result is about. */
static int main_op(const bn_result *r)
{
    int best = 0;
    for (int o = 1; o < BN_OP_N; o++)
        if (r->ops[o].n > r->ops[best].n)
            best = o;
    return best;
}

static void progress(const bn_result *r)
{
    for (int o = 0; o < BN_OP_N; o++) {
        const bn_series *s = &r->ops[o];
        if (s->n == 0 && s->errors == 0)
            continue;
        fprintf(stderr,
                "  %-9s %-22s c=%-3d d=%-3d %-10s %10.0f/s  p50 %8.1f  p99 %8.1f  p99.9 %8.1f  "
                "max %9.1f us  err %llu  other-CPU %.0f%%\n",
                r->side, bn_op_names[o], r->conns, r->depth, r->placement, rate(r, o),
                us(bn_series_pct(s, 0.5)), us(bn_series_pct(s, 0.99)), us(bn_series_pct(s, 0.999)),
                us(bn_series_pct(s, 1.0)), (unsigned long long)s->errors, 100 * r->other_cpu_share);
    }
    for (int i = 0; i < BN_CODES_MAX && r->codes.count[i]; i++)
        fprintf(stderr, "            error %s x%llu\n", r->codes.code[i],
                (unsigned long long)r->codes.count[i]);
}

static bn_result *run_gh(bn_ctx *x, const char *wl, int conns, int depth, double secs)
{
    bn_result *r = next_result();
    if (bn_gh_run(x, wl, conns, depth, secs, r) != 0)
        bn_log("gatehouse %s run had failures (see above)", wl);
    progress(r);
    return r;
}

static bn_result *run_ldap(bn_ctx *x, const bn_slapd *s, const char *wl, int conns, int depth,
                           double secs)
{
    bn_result *r = next_result();
    if (bn_ldap_run(x, s, wl, conns, depth, secs, r) != 0)
        bn_log("slapd %s run had failures (see above)", wl);
    progress(r);
    return r;
}

/* A check request line of the data set, for the echo's message size. */
static void sample_check_line(const bn_ctx *x, char *buf, size_t len)
{
    bn_rng r;
    bn_check c;
    char name[32];
    bn_rng_seed(&r, x->data.seed);
    bn_check_pick(&x->data, &r, UINT32_MAX, &c);
    bn_user_name(name, sizeof(name), c.user);
    snprintf(buf, len, "{\"op\":\"check\",\"user\":\"%s\",\"action\":\"%s\",\"resource\":\"%s\"}\n",
             name, c.action, c.resource);
}

/* Adds run b into a (same side and op): samples, counters, CPU, wall. */
static void merge_into(bn_result *a, bn_result *b)
{
    for (int o = 0; o < BN_OP_N; o++)
        bn_series_merge(&a->ops[o], &b->ops[o]);
    bn_codes_merge(&a->codes, &b->codes);
    double w = a->wall_s + b->wall_s;
    if (w > 0 && a->other_cpu_share >= 0 && b->other_cpu_share >= 0)
        a->other_cpu_share = (a->other_cpu_share * a->wall_s + b->other_cpu_share * b->wall_s) / w;
    a->seconds += b->seconds;
    a->wall_s = w;
    a->ops_all += b->ops_all;
    a->server_cpu_s += b->server_cpu_s;
    a->client_cpu_s += b->client_cpu_s;
    if (b->rss_after_kb > 0)
        a->rss_after_kb = b->rss_after_kb;
    bn_result_free(b);
}

/* Echo and check, 1 connection, no pipelining, at fixed CPU placements.
 * The two alternate in short slices so that both see the same machine (a
 * VM's cross-CPU wake-up cost drifts from minute to minute). */
static void placements(bn_ctx *x, const opts *o)
{
    enum { ROUNDS = 4 };
    char msg[256];
    int ncpu = bn_ncpus();
    double slice = o->duration / ROUNDS, warmup = x->warmup;
    struct {
        const char *name;
        int server, client;
    } pl[3] = {{"same-cpu", 0, 0}, {"cross-cpu", 0, 1}, {"unpinned", -1, -1}};
    sample_check_line(x, msg, sizeof(msg));
    for (int i = 0; i < 3; i++) {
        if (pl[i].client >= ncpu)
            continue;
        if (pl[i].server >= 0 && bn_pin_process(x->gh_pid, pl[i].server) != 0) {
            bn_log("cannot pin gatehoused (pid %d): skipping placement %s", (int)x->gh_pid,
                   pl[i].name);
            continue;
        }
        bn_log("placement %s: echo and check on 1 connection, no pipelining, %d slices each",
               pl[i].name, ROUNDS);
        bn_result *e = next_result(), *c = next_result(), tmp;
        x->warmup = 0.2;
        for (int r = 0; r < ROUNDS; r++) {
            bn_echo_run(msg, pl[i].server, pl[i].client, slice, r ? &tmp : e);
            if (r)
                merge_into(e, &tmp);
            x->client_cpu = pl[i].client;
            if (bn_gh_run(x, "check", 1, 1, slice, r ? &tmp : c) != 0)
                bn_log("check run had failures (see above)");
            x->client_cpu = -1;
            if (r)
                merge_into(c, &tmp);
        }
        x->warmup = warmup;
        bn_series_sort(&e->ops[BN_OP_ECHO]);
        bn_series_sort(&c->ops[BN_OP_CHECK]);
        snprintf(e->placement, sizeof(e->placement), "%s", pl[i].name);
        snprintf(c->placement, sizeof(c->placement), "%s", pl[i].name);
        progress(e);
        progress(c);
        bn_pin_process(x->gh_pid, -1);
        R.place_echo[R.nplace] = (int)(e - R.res);
        R.place_check[R.nplace] = (int)(c - R.res);
        R.place_pinned[R.nplace] = pl[i].server >= 0;
        snprintf(R.place_name[R.nplace], sizeof(R.place_name[0]), "%s", pl[i].name);
        R.nplace++;
    }
}

static void pwhash_floor(const bn_ctx *x, int which, double secs)
{
    double busy0 = bn_sys_busy(), cpu0 = bn_self_cpu();
    uint64_t t0 = bn_now_ns();
    R.pwhash_threads = x->threadpool;
    bn_log("raw crypto_pwhash_str_verify, %d threads", x->threadpool);
    R.pwhash[which] = bn_pwhash_rate(x->data.verifier, x->data.password, x->threadpool, secs);
    R.pwhash_other[which] = bn_other_share(bn_sys_busy() - busy0, 0, bn_self_cpu() - cpu0,
                                           (double)(bn_now_ns() - t0) / 1e9);
    if (R.pwhash[which] > R.pwhash_rate)
        R.pwhash_rate = R.pwhash[which];
    bn_log("  %.1f verifications/s", R.pwhash[which]);
}

static void fetch_stats(const bn_ctx *x, char *note, size_t notelen)
{
    char *line = bn_gh_call(x->sock, "{\"op\":\"stats\"}");
    json_error_t err;
    json_t *j = line ? json_loads(line, 0, &err) : NULL;
    json_t *cache = json_object_get(j, "authz_cache");
    if (cache) {
        char *s = json_dumps(cache, JSON_COMPACT);
        snprintf(note, notelen, "`%s`", s ? s : "?");
        free(s);
    }
    json_decref(j);
    free(line);
}

/* ---- the report ---- */

static const char *fmt_rate(char *buf, size_t len, double v)
{
    snprintf(buf, len, "%.0f", v);
    return buf;
}

static void outcome(const bn_result *r, int o, char *buf, size_t len)
{
    const bn_series *s = &r->ops[o];
    buf[0] = '\0';
    if ((o == BN_OP_CHECK || o == BN_OP_COMPARE) && s->yes + s->no > 0)
        snprintf(buf, len, "%.0f%% allow", 100.0 * (double)s->yes / (double)(s->yes + s->no));
    else if (o == BN_OP_BATCH && s->items > 0)
        snprintf(buf, len, "%.0f checks/s, %.0f%% allow", (double)s->items / r->seconds,
                 100.0 * (double)s->yes / (double)s->items);
    else if ((o == BN_OP_AUTH || o == BN_OP_BIND) && s->yes + s->no > 0)
        snprintf(buf, len, "%llu accepted, %llu refused", (unsigned long long)s->yes,
                 (unsigned long long)s->no);
}

static void result_rows(bn_buf *b, const bn_result *r)
{
    char out[96], rt[32], rss[48], cpu[48], errs[160];
    for (int o = 0; o < BN_OP_N; o++) {
        const bn_series *s = &r->ops[o];
        if (s->n == 0 && s->errors == 0)
            continue;
        outcome(r, o, out, sizeof(out));
        errs[0] = '\0';
        snprintf(errs, sizeof(errs), "%llu", (unsigned long long)s->errors);
        if (s->errors)
            for (int i = 0; i < BN_CODES_MAX && r->codes.count[i]; i++) {
                size_t l = strlen(errs);
                snprintf(errs + l, sizeof(errs) - l, "%s%s x%llu", i ? ", " : " (",
                         r->codes.code[i], (unsigned long long)r->codes.count[i]);
                if (i + 1 == BN_CODES_MAX || r->codes.count[i + 1] == 0)
                    strncat(errs, ")", sizeof(errs) - strlen(errs) - 1);
            }
        if (r->rss_before_kb > 0)
            snprintf(rss, sizeof(rss), "%.1f → %.1f", r->rss_before_kb / 1024.0,
                     r->rss_after_kb / 1024.0);
        else
            snprintf(rss, sizeof(rss), "-");
        if (r->ops_all > 0 && r->server_cpu_s >= 0)
            snprintf(cpu, sizeof(cpu), "%.1f / %.1f", r->server_cpu_s * 1e6 / (double)r->ops_all,
                     r->client_cpu_s * 1e6 / (double)r->ops_all);
        else
            snprintf(cpu, sizeof(cpu), "-");
        int mixed = strcmp(r->workload, "mixed") == 0;
        char other[16] = "-";
        if (r->other_cpu_share >= 0)
            snprintf(other, sizeof(other), "%.0f%%", 100 * r->other_cpu_share);
        bn_buf_printf(b,
                      "| %s | %s%s%s%s%s | %d | %d | %s | %.1f | %.1f | %.1f | %.1f | %s | %s | %s "
                      "| %s | %s |\n",
                      r->side, mixed ? "mixed: " : "", bn_op_names[o],
                      mixed && o == main_op(r) ? " (CPU, RSS: whole mix)" : "",
                      r->placement[0] ? ", " : "", r->placement, r->conns, r->depth,
                      fmt_rate(rt, sizeof(rt), rate(r, o)), us(bn_series_pct(s, 0.5)),
                      us(bn_series_pct(s, 0.99)), us(bn_series_pct(s, 0.999)),
                      us(bn_series_pct(s, 1.0)), errs, out, cpu, rss, other);
    }
}

static const bn_result *find_res(const char *side, int op, int conns, int depth, int placed)
{
    for (int i = 0; i < R.nres; i++) {
        const bn_result *r = &R.res[i];
        if (strcmp(r->side, side) == 0 && main_op(r) == op && r->conns == conns &&
            r->depth == depth && (r->placement[0] != '\0') == placed &&
            strcmp(r->workload, "mixed") != 0 && r->ops[op].n > 0 &&
            (int)(r - R.res) != R.storm_check)
            return r;
    }
    return NULL;
}

static void verdict(bn_buf *b, const char *target, const char *figure, int met)
{
    bn_buf_printf(b, "| %s | %s | %s |\n", target, figure,
                  met < 0 ? "not measured"
                  : met   ? "met"
                          : "**not met**");
}

static void compare_row(bn_buf *b, const char *what, const bn_result *g, int gop,
                        const bn_result *l, int lop, double target)
{
    char tgt[32] = "-";
    if (g == NULL || l == NULL)
        return;
    double gr = rate(g, gop), lr = rate(l, lop), ratio = lr > 0 ? gr / lr : 0;
    if (target > 0)
        snprintf(tgt, sizeof(tgt), "≥ %.0fx: %s", target, ratio >= target ? "met" : "**not met**");
    bn_buf_printf(b, "| %s | %s c=%d d=%d | %.0f | %s c=%d d=%d | %.0f | %.2fx | %s |\n", what,
                  bn_op_names[gop], g->conns, g->depth, gr, bn_op_names[lop], l->conns, l->depth,
                  lr, ratio, tgt);
}

static void write_report(const opts *o, const bn_ctx *x, bn_buf *b)
{
    char line[256];
    bn_buf_printf(b, "## Results of this run\n\n");
    bn_buf_printf(b,
                  "- date: %s\n- machine: %s\n- load average at the start: %s\n- command: `%s`\n",
                  R.date, R.machine, R.loadavg, R.command);
    {
        double worst = 0;
        for (int i = 0; i < R.nres; i++)
            if (R.res[i].other_cpu_share > worst)
                worst = R.res[i].other_cpu_share;
        if (worst > 0.05)
            bn_buf_printf(b,
                          "- **the machine was not quiet**: other processes used up to %.0f%% "
                          "of all CPUs during a run (column \"other CPU\"); those figures "
                          "understate both servers\n",
                          100 * worst);
    }
    bn_buf_printf(b,
                  "- data set: %u users, %u groups (%llu user memberships, %llu nested "
                  "groups), %u roles, %u bindings; seed %llu\n",
                  x->data.nusers, x->data.ngroups, (unsigned long long)x->data.nmembers,
                  (unsigned long long)x->data.nsubgroups, x->data.nroles, x->data.nbindings,
                  (unsigned long long)x->data.seed);
    bn_buf_printf(b, "- Argon2id: opslimit %llu, memlimit %zu MiB, server pool %d threads\n",
                  x->opslimit, x->memlimit >> 20, x->threadpool);
    if (R.import_records)
        bn_buf_printf(b,
                      "- import into gatehoused: %llu records in %.2f s (%.0f records/s), "
                      "%llu failed\n",
                      (unsigned long long)R.import_records, R.import_secs,
                      (double)R.import_records / R.import_secs,
                      (unsigned long long)R.import_failed);
    if (R.slapadd_secs > 0)
        bn_buf_printf(b, "- slapadd of the same users and groups: %.2f s\n", R.slapadd_secs);
    if (R.startup_ms > 0)
        bn_buf_printf(b,
                      "- gatehoused start-up on the loaded database (exec to first ping "
                      "answered): %.1f ms\n",
                      R.startup_ms);
    if (R.rss_loaded.rss > 0)
        bn_buf_printf(b,
                      "- gatehoused RSS (VmRSS; anon + file-backed LMDB pages): empty %.1f MB, "
                      "after import %.1f MB (%.1f + %.1f), after restart %.1f MB, at the end "
                      "%.1f MB (%.1f + %.1f), peak VmHWM %.1f MB\n",
                      R.rss_empty.rss / 1024.0, R.rss_loaded.rss / 1024.0,
                      R.rss_loaded.anon / 1024.0, R.rss_loaded.file / 1024.0,
                      R.rss_restarted.rss / 1024.0, R.rss_end.rss / 1024.0, R.rss_end.anon / 1024.0,
                      R.rss_end.file / 1024.0, R.rss_end.hwm / 1024.0);
    if (R.pwhash_rate > 0)
        bn_buf_printf(b,
                      "- raw crypto_pwhash_str_verify in-process, %d threads: %.1f "
                      "verifications/s before the auth run (other CPU %.0f%%), %.1f/s after it "
                      "(other CPU %.0f%%)\n",
                      R.pwhash_threads, R.pwhash[0], 100 * R.pwhash_other[0], R.pwhash[1],
                      100 * R.pwhash_other[1]);
    if (R.warm_secs > 0)
        bn_buf_printf(b,
                      "- permission cache warmed before the check runs (every user checked once "
                      "on each of the %d connections) in %.1f s: RSS %.1f MB (%.1f + %.1f), "
                      "server `stats` authz_cache then: %s\n",
                      o->conns, R.warm_secs, R.rss_warm.rss / 1024.0, R.rss_warm.anon / 1024.0,
                      R.rss_warm.file / 1024.0, R.warm_note);
    if (R.stats_note[0])
        bn_buf_printf(b, "- server `stats` authz_cache at the end: %s\n", R.stats_note);

    bn_buf_printf(b, "\n### Every run\n\n"
                     "Latencies in µs, from the request's write() to the reply's read() in the "
                     "client. CPU µs/op = server process CPU (all threads) / client process CPU, "
                     "divided by every answer of the run. RSS in MB, before → after the run. "
                     "Other CPU: the share of all CPUs that other processes on the machine used "
                     "during the run (0%% on a quiet machine).\n\n"
                     "| side | op | conns | depth | ops/s | p50 | p99 | p99.9 | max | errors | "
                     "outcome | CPU µs/op srv / cli | RSS MB | other CPU |\n"
                     "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- "
                     "| --- | --- | ---: |\n");
    for (int i = 0; i < R.nres; i++) {
        const bn_result *r = &R.res[i];
        if (i == R.storm_auth || i == R.storm_check)
            continue;
        result_rows(b, r);
    }

    if (o->ldap) {
        bn_buf_printf(b, "\n### Gatehouse's LDAP front-end against slapd, same LDAP client\n\n"
                         "| workload | Gatehouse | ops/s | slapd | ops/s | ratio | target |\n"
                         "| --- | --- | ---: | --- | ---: | ---: | --- |\n");
        compare_row(b, "compare member, no pipelining",
                    find_res("gatehouse-ldap", BN_OP_COMPARE, o->conns, 1, 0), BN_OP_COMPARE,
                    find_res("slapd", BN_OP_COMPARE, o->conns, 1, 0), BN_OP_COMPARE, 2);
        compare_row(b, "compare member, pipelined",
                    find_res("gatehouse-ldap", BN_OP_COMPARE, o->conns, o->depth, 0), BN_OP_COMPARE,
                    find_res("slapd", BN_OP_COMPARE, o->conns, o->depth, 0), BN_OP_COMPARE, 2);
        compare_row(b, "group-membership search",
                    find_res("gatehouse-ldap", BN_OP_GSEARCH, o->conns, 1, 0), BN_OP_GSEARCH,
                    find_res("slapd", BN_OP_GSEARCH, o->conns, 1, 0), BN_OP_GSEARCH, 2);
        compare_row(b, "simple bind (Argon2id)",
                    find_res("gatehouse-ldap", BN_OP_BIND, o->auth_conns, 1, 0), BN_OP_BIND,
                    find_res("slapd", BN_OP_BIND, o->auth_conns, 1, 0), BN_OP_BIND, 0);
        compare_row(b, "paged search of every user (sweeps)",
                    find_res("gatehouse-ldap", BN_OP_PAGED, 1, 1, 0), BN_OP_PAGED,
                    find_res("slapd", BN_OP_PAGED, 1, 1, 0), BN_OP_PAGED, 1);
        const bn_result *gb = find_res("gatehouse-ldap", BN_OP_BIND, o->auth_conns, 1, 0);
        if (gb && R.pwhash_rate > 0) {
            double rate = (double)gb->ops[BN_OP_BIND].n / gb->seconds;
            double floor = R.pwhash[0] > R.pwhash[1] ? R.pwhash[0] : R.pwhash[1];
            bn_buf_printf(b,
                          "\nLDAP bind against raw in-process libsodium verify (%d threads): "
                          "%.1f/s vs %.1f/s = %.0f%% (target ≥ 95%%)\n",
                          R.pwhash_threads, rate, floor, floor > 0 ? 100 * rate / floor : 0);
        }
    }

    if (o->compare_slapd) {
        bn_buf_printf(b, "\n### Gatehouse against slapd, same client concurrency\n\n"
                         "| workload | Gatehouse | ops/s | slapd | ops/s | ratio | target |\n"
                         "| --- | --- | ---: | --- | ---: | ---: | --- |\n");
        const bn_result *c1 = find_res("gatehouse", BN_OP_CHECK, o->conns, 1, 0);
        const bn_result *cd = find_res("gatehouse", BN_OP_CHECK, o->conns, o->depth, 0);
        const bn_result *l1 = find_res("slapd", BN_OP_COMPARE, o->conns, 1, 0);
        const bn_result *ld = find_res("slapd", BN_OP_COMPARE, o->conns, o->depth, 0);
        compare_row(b, "permission check, no pipelining", c1, BN_OP_CHECK, l1, BN_OP_COMPARE, 0);
        compare_row(b, "permission check, pipelined (ours)", cd, BN_OP_CHECK, l1, BN_OP_COMPARE, 0);
        compare_row(b, "permission check, both pipelined", cd, BN_OP_CHECK, ld, BN_OP_COMPARE, 0);
        compare_row(b, "token lookup vs compare",
                    find_res("gatehouse", BN_OP_WHOAMI, o->conns, 1, 0), BN_OP_WHOAMI, l1,
                    BN_OP_COMPARE, 5);
        compare_row(b, "token lookup vs compare, both pipelined",
                    find_res("gatehouse", BN_OP_WHOAMI, o->conns, o->depth, 0), BN_OP_WHOAMI, ld,
                    BN_OP_COMPARE, 5);
        compare_row(b, "password check", find_res("gatehouse", BN_OP_AUTH, o->auth_conns, 1, 0),
                    BN_OP_AUTH, find_res("slapd", BN_OP_BIND, o->auth_conns, 1, 0), BN_OP_BIND, 0);
        compare_row(b, "user lookup", find_res("gatehouse", BN_OP_USERGET, o->conns, 1, 0),
                    BN_OP_USERGET, find_res("slapd", BN_OP_SEARCH, o->conns, 1, 0), BN_OP_SEARCH,
                    0);
        compare_row(b, "user lookup, both pipelined",
                    find_res("gatehouse", BN_OP_USERGET, o->conns, o->depth, 0), BN_OP_USERGET,
                    find_res("slapd", BN_OP_SEARCH, o->conns, o->depth, 0), BN_OP_SEARCH, 0);
    }

    if (R.nplace > 0) {
        bn_buf_printf(b,
                      "\n### Check latency against a socket echo, 1 connection, no pipelining\n\n"
                      "| placement | echo p50 | check p50 | ratio (≤ 1.25x) | echo p99 | check p99 "
                      "| ratio |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (int i = 0; i < R.nplace; i++) {
            const bn_series *e = &R.res[R.place_echo[i]].ops[BN_OP_ECHO];
            const bn_series *c = &R.res[R.place_check[i]].ops[BN_OP_CHECK];
            double e50 = us(bn_series_pct(e, 0.5)), c50 = us(bn_series_pct(c, 0.5));
            double e99 = us(bn_series_pct(e, 0.99)), c99 = us(bn_series_pct(c, 0.99));
            bn_buf_printf(b, "| %s | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx |\n",
                          R.place_name[i], e50, c50, e50 > 0 ? c50 / e50 : 0, e99, c99,
                          e99 > 0 ? c99 / e99 : 0);
        }
    }

    if (R.storm_auth >= 0) {
        const bn_result *a = &R.res[R.storm_auth], *c = &R.res[R.storm_check];
        bn_buf_printf(b,
                      "\n### Auth storm\n\n%d connections keep %d auth requests each in flight "
                      "(Argon2 saturated) while %d connection(s) send checks one at a time.\n\n"
                      "| side | op | conns | depth | ops/s | p50 | p99 | p99.9 | max | errors | "
                      "outcome | CPU µs/op srv / cli | RSS MB | other CPU |\n"
                      "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- "
                      "| --- | --- | ---: |\n",
                      a->conns, a->depth, c->conns);
        result_rows(b, a);
        result_rows(b, c);
    }

    bn_buf_printf(b, "\n### Targets\n\n| target | this run | verdict |\n| --- | --- | --- |\n");
    {
        /* issue 11's targets; the concurrency of each ratio is named */
        const bn_result *cd = find_res("gatehouse", BN_OP_CHECK, o->conns, o->depth, 0);
        const bn_result *ld = find_res("slapd", BN_OP_COMPARE, o->conns, o->depth, 0);
        const bn_result *ep = R.echo_pipe >= 0 ? &R.res[R.echo_pipe] : NULL;
        char t[160];
        snprintf(t, sizeof(t), "check, %d connections x %d in flight: ≥ 500 k/s", o->conns,
                 o->depth);
        if (cd) {
            snprintf(line, sizeof(line), "%.0f/s", rate(cd, BN_OP_CHECK));
            verdict(b, t, line, rate(cd, BN_OP_CHECK) >= 500000);
        } else {
            verdict(b, t, "-", -1);
        }
        snprintf(t, sizeof(t), "check ≥ 25%% of the echo's round trips/s (%d x %d)", o->conns,
                 o->depth);
        if (cd && ep && rate(ep, BN_OP_ECHO) > 0) {
            double share = rate(cd, BN_OP_CHECK) / rate(ep, BN_OP_ECHO);
            snprintf(line, sizeof(line), "%.0f / %.0f round trips/s = %.1f%%",
                     rate(cd, BN_OP_CHECK), rate(ep, BN_OP_ECHO), 100 * share);
            verdict(b, t, line, share >= 0.25);
        } else {
            verdict(b, t, "-", -1);
        }
        if (cd && cd->ops_all > 0 && cd->server_cpu_s > 0) {
            double cpu_us = cd->server_cpu_s * 1e6 / (double)cd->ops_all;
            snprintf(line, sizeof(line),
                     "%.2f µs (server process CPU from /proc/PID/stat over the pipelined run "
                     "/ answers)",
                     cpu_us);
            verdict(b, "server CPU per check ≤ 2 µs", line, cpu_us <= 2.0);
        } else {
            verdict(b, "server CPU per check ≤ 2 µs", "-", -1);
        }
        for (int i = 0; i < R.nplace; i++) {
            const bn_series *e = &R.res[R.place_echo[i]].ops[BN_OP_ECHO];
            const bn_series *c = &R.res[R.place_check[i]].ops[BN_OP_CHECK];
            double r50 = (double)bn_series_pct(c, 0.5) / (double)bn_series_pct(e, 0.5);
            snprintf(t, sizeof(t), "check p50 ≤ 1.25x echo p50, 1 connection (%s)",
                     R.place_name[i]);
            snprintf(line, sizeof(line), "%.1f / %.1f µs = %.2fx%s", us(bn_series_pct(c, 0.5)),
                     us(bn_series_pct(e, 0.5)), r50,
                     R.place_pinned[i] ? ""
                                       : " (unpinned: the scheduler may put echo and check on "
                                         "different CPUs; no verdict)");
            verdict(b, t, line, R.place_pinned[i] && c->n > 0 && e->n > 0 ? r50 <= 1.25 : -1);
        }
        const bn_result *a = find_res("gatehouse", BN_OP_AUTH, o->auth_conns, 1, 0);
        if (a && R.pwhash_rate > 0) {
            double ar = rate(a, BN_OP_AUTH);
            snprintf(line, sizeof(line), "%.1f/s = %.0f%% of %.1f/s (the higher floor)", ar,
                     100 * ar / R.pwhash_rate, R.pwhash_rate);
            verdict(b, "auth throughput ≥ 95% of raw crypto_pwhash_str_verify", line,
                    ar >= 0.95 * R.pwhash_rate);
        } else {
            verdict(b, "auth throughput ≥ 95% of raw crypto_pwhash_str_verify", "-", -1);
        }
        if (R.storm_check >= 0) {
            const bn_series *c = &R.res[R.storm_check].ops[BN_OP_CHECK];
            snprintf(line, sizeof(line), "p99 %.1f µs (p99.9 %.1f, max %.1f)",
                     us(bn_series_pct(c, 0.99)), us(bn_series_pct(c, 0.999)),
                     us(bn_series_pct(c, 1.0)));
            verdict(b, "check p99 ≤ 1 ms during an auth storm", line,
                    bn_series_pct(c, 0.99) <= 1000000);
        } else {
            verdict(b, "check p99 ≤ 1 ms during an auth storm", "-", -1);
        }
        const bn_result *wd = find_res("gatehouse", BN_OP_WHOAMI, o->conns, o->depth, 0);
        if (wd && cd) {
            double rw = rate(wd, BN_OP_WHOAMI), rc = rate(cd, BN_OP_CHECK);
            snprintf(line, sizeof(line), "%.0f/s vs check %.0f/s (%d x %d)", rw, rc, o->conns,
                     o->depth);
            verdict(b, "whoami ≥ check throughput", line, rw >= rc);
        } else {
            verdict(b, "whoami ≥ check throughput", "-", -1);
        }
        if (wd && ld) {
            double r = rate(wd, BN_OP_WHOAMI) / rate(ld, BN_OP_COMPARE);
            snprintf(line, sizeof(line), "%.1fx, both %d x %d", r, o->conns, o->depth);
            verdict(b, "whoami ≥ 5x slapd compare, same concurrency", line, r >= 5);
        } else {
            verdict(b, "whoami ≥ 5x slapd compare, same concurrency", "-", -1);
        }
        if (x->data.nusers >= 100000 && R.rss_end.rss > 0) {
            long worst = R.rss_end.rss > R.rss_loaded.rss ? R.rss_end.rss : R.rss_loaded.rss;
            if (R.rss_warm.rss > worst)
                worst = R.rss_warm.rss;
            snprintf(
                line, sizeof(line),
                "%.1f MB at %u users (largest of after import / warm / at the end; anon %.1f MB at "
                "the end)",
                worst / 1024.0, x->data.nusers, R.rss_end.anon / 1024.0);
            verdict(b, "server RSS with 100,000 users ≤ 150 MB (without Argon2 memory)", line,
                    x->data.nusers == 100000 ? worst <= 150 * 1024 : -1);
        } else {
            verdict(b, "server RSS with 100,000 users ≤ 150 MB (without Argon2 memory)",
                    "run with --users 100000", -1);
        }
        if (x->data.nusers >= 1000000 && R.startup_ms > 0) {
            snprintf(line, sizeof(line), "%.1f ms", R.startup_ms);
            verdict(b, "start-up on a 1,000,000-user database ≤ 1 s", line, R.startup_ms <= 1000);
        } else {
            verdict(b, "start-up on a 1,000,000-user database ≤ 1 s", "run with --users 1000000",
                    -1);
        }
    }
}

int main(int argc, char **argv)
{
    static const struct option lopts[] = {
        {"socket", required_argument, NULL, 's'},
        {"server-bin", required_argument, NULL, 'B'},
        {"conns", required_argument, NULL, 'c'},
        {"depth", required_argument, NULL, 'd'},
        {"duration", required_argument, NULL, 't'},
        {"warmup", required_argument, NULL, 'W'},
        {"workload", required_argument, NULL, 'w'},
        {"users", required_argument, NULL, 'u'},
        {"seed", required_argument, NULL, 'S'},
        {"markdown", required_argument, NULL, 'm'},
        {"compare-slapd", no_argument, NULL, 'L'},
        {"slapd", required_argument, NULL, 1},
        {"slapadd", required_argument, NULL, 2},
        {"auth-storm", no_argument, NULL, 'A'},
        {"no-baselines", no_argument, NULL, 3},
        {"batch", required_argument, NULL, 4},
        {"wrong-ratio", required_argument, NULL, 5},
        {"opslimit", required_argument, NULL, 6},
        {"memlimit", required_argument, NULL, 7},
        {"threadpool", required_argument, NULL, 8},
        {"server-pid", required_argument, NULL, 9},
        {"keep", no_argument, NULL, 10},
        {"auth-conns", required_argument, NULL, 11},
        {"skip-load", no_argument, NULL, 12},
        {"ldap", no_argument, NULL, 13},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    opts o = {
        .workloads = "all",
        .slapd_bin = "/usr/sbin/slapd",
        .slapadd_bin = "/usr/sbin/slapadd",
        .conns = 4,
        .depth = 16,
        .auth_conns = 4,
        .storm_auth_conns = 4,
        .storm_auth_depth = 4,
        .storm_check_conns = 1,
        .duration = 5,
        .users = 10000,
        .seed = 1,
        .baselines = 1,
    };
    static bn_ctx x;
    int ch;

    x.warmup = 1;
    x.batch = 20;
    x.wrong_ratio = 0.2;
    x.client_cpu = -1;
    x.opslimit = 2;
    x.memlimit = 64u << 20;
    x.threadpool = 2;
    x.argon2_queue_max = 256;
    while ((ch = getopt_long(argc, argv, "s:B:c:d:t:W:w:u:S:m:LAvh", lopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            o.socket = optarg;
            break;
        case 'B':
            o.server_bin = optarg;
            break;
        case 'c':
            o.conns = atoi(optarg);
            break;
        case 'd':
            o.depth = atoi(optarg);
            break;
        case 't':
            o.duration = atof(optarg);
            break;
        case 'W':
            x.warmup = atof(optarg);
            break;
        case 'w':
            o.workloads = optarg;
            break;
        case 'u':
            o.users = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'S':
            o.seed = strtoull(optarg, NULL, 10);
            break;
        case 'm':
            o.markdown = optarg;
            break;
        case 13:
            o.ldap = 1;
            break;
        case 'L':
            o.compare_slapd = 1;
            break;
        case 1:
            o.slapd_bin = optarg;
            break;
        case 2:
            o.slapadd_bin = optarg;
            break;
        case 'A':
            o.auth_storm = 1;
            break;
        case 3:
            o.baselines = 0;
            break;
        case 4:
            x.batch = atoi(optarg);
            break;
        case 5:
            x.wrong_ratio = atof(optarg);
            break;
        case 6:
            x.opslimit = strtoull(optarg, NULL, 10);
            break;
        case 7:
            x.memlimit = parse_size(optarg);
            break;
        case 8:
            x.threadpool = atoi(optarg);
            break;
        case 9:
            o.server_pid = (pid_t)atoi(optarg);
            break;
        case 10:
            o.keep = 1;
            break;
        case 11:
            o.auth_conns = atoi(optarg);
            break;
        case 12:
            o.skip_load = 1;
            break;
        case 'v':
            bn_verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if ((o.socket == NULL) == (o.server_bin == NULL) || optind != argc || o.conns < 1 ||
        o.depth < 1 || o.duration <= 0 || x.batch < 1 || x.batch > 1000 || o.users < 100 ||
        o.users > 10000000) {
        usage(stderr);
        return 2;
    }
    if (sodium_init() < 0)
        bn_die("libsodium failed to initialize");
    bn_children_install_cleanup();
    bn_tempdirs_keep(o.keep);
    R.storm_auth = R.storm_check = R.echo_pipe = -1;
    bn_machine(R.machine, sizeof(R.machine));
    {
        size_t n = 0;
        for (int i = 0; i < argc && n < sizeof(R.command) - 2; i++)
            n += (size_t)snprintf(R.command + n, sizeof(R.command) - n, "%s%s", i ? " " : "",
                                  argv[i]);
        time_t now = time(NULL);
        strftime(R.date, sizeof(R.date), "%Y-%m-%d %H:%M UTC", gmtime(&now));
    }
    {
        FILE *f = fopen("/proc/loadavg", "r");
        if (f == NULL || fgets(R.loadavg, sizeof(R.loadavg), f) == NULL)
            snprintf(R.loadavg, sizeof(R.loadavg), "?");
        R.loadavg[strcspn(R.loadavg, "\n")] = '\0';
        if (f)
            fclose(f);
    }
    bn_log("%s; load average %s", R.machine, R.loadavg);

    bn_log("generating %u users (seed %llu) and hashing the password (opslimit %llu, %zu MiB)",
           o.users, (unsigned long long)o.seed, x.opslimit, x.memlimit >> 20);
    bn_data_generate(&x.data, o.users, o.seed);
    bn_data_hash(&x.data, x.opslimit, x.memlimit);

    /* ---- Gatehouse: start or find, load ---- */
    if (o.server_bin) {
        if (bn_gh_start(&x.gh, o.server_bin, &x) != 0)
            bn_die("cannot start %s", o.server_bin);
        x.sock = x.gh.sock;
        x.gh_pid = x.gh.pid;
    } else {
        x.sock = o.socket;
        x.gh_pid = o.server_pid ? o.server_pid : bn_socket_peer_pid(o.socket);
        if (x.gh_pid <= 0)
            bn_log("cannot tell the server's pid from %s: no RSS figures", o.socket);
    }
    bn_rss_read(x.gh_pid, &R.rss_empty);
    if (!o.skip_load) {
        bn_log("importing into gatehoused (%s)", x.sock);
        if (bn_gh_import(&x, &x.data, &R.import_secs, &R.import_records, &R.import_failed) != 0)
            bn_die("import failed (is this client an admin of the server?)");
        bn_log("imported %llu records in %.2f s (%.0f/s), %llu failed",
               (unsigned long long)R.import_records, R.import_secs,
               (double)R.import_records / R.import_secs, (unsigned long long)R.import_failed);
    }
    bn_rss_read(x.gh_pid, &R.rss_loaded);
    if (x.gh.ours) {
        if (bn_gh_restart(&x.gh, &x) != 0)
            bn_die("gatehoused did not restart");
        x.gh_pid = x.gh.pid;
        R.startup_ms = x.gh.startup_ms;
        bn_rss_read(x.gh_pid, &R.rss_restarted);
        bn_log("restart on the loaded database: ready in %.1f ms, RSS %.1f MB", R.startup_ms,
               R.rss_restarted.rss / 1024.0);
    }

    bn_slapd slapd = {0};
    if (o.compare_slapd) {
        bn_log("starting slapd (slapadd of %u users, %u groups)", x.data.nusers, x.data.ngroups);
        if (bn_slapd_start(&slapd, &x.data, o.slapd_bin, o.slapadd_bin) != 0)
            bn_die("cannot start slapd");
        R.slapadd_secs = slapd.load_secs;
    }

    /* ---- workloads ---- */
    double d = o.duration;
    if (o.ldap && o.compare_slapd && x.gh.ours) {
        /* the LDAP client binds as the first user: let it read the directory */
        char req[512], name[32];
        bn_slapd ghl = {0};
        bn_user_name(name, sizeof(name), 0);
        free(bn_gh_call(x.sock,
                        "{\"op\":\"role.add\",\"name\":\"bench-ldap-reader\","
                        "\"allow\":[{\"action\":\"read\",\"resource\":\"ldap/directory\"}]}\n"));
        snprintf(req, sizeof(req),
                 "{\"op\":\"grant\",\"role\":\"bench-ldap-reader\",\"user\":\"%s\"}\n", name);
        free(bn_gh_call(x.sock, req));
        snprintf(ghl.side, sizeof(ghl.side), "gatehouse-ldap");
        snprintf(ghl.ldapi_path, sizeof(ghl.ldapi_path), "%s/ldapi", x.gh.dir);
        {
            size_t n = 0;
            n += (size_t)snprintf(ghl.ldapi_url, sizeof(ghl.ldapi_url), "ldapi://");
            for (const char *c = ghl.ldapi_path; *c && n + 4 < sizeof(ghl.ldapi_url); c++)
                n += (size_t)(*c == '/'
                                  ? snprintf(ghl.ldapi_url + n, sizeof(ghl.ldapi_url) - n, "%%2F")
                                  : snprintf(ghl.ldapi_url + n, sizeof(ghl.ldapi_url) - n, "%c",
                                             *c));
        }
        ghl.pid = x.gh_pid;
        bn_log("LDAP front-end: compare, group search, bind, paged search");
        const bn_slapd *sides[2] = {&ghl, &slapd};
        for (int i = 0; i < 2; i++) {
            run_ldap(&x, sides[i], "compare", o.conns, 1, d);
            run_ldap(&x, sides[i], "compare", o.conns, o.depth, d);
            run_ldap(&x, sides[i], "groupsearch", o.conns, 1, d);
            run_ldap(&x, sides[i], "paged", 1, 1, d);
        }
        if (o.baselines)
            pwhash_floor(&x, 0, d);
        for (int i = 0; i < 2; i++)
            run_ldap(&x, sides[i], "bind", o.auth_conns, 1, d);
        if (o.baselines)
            pwhash_floor(&x, 1, d);
    }
    if (wants(&o, "check")) {
        /* a warm permission cache: every user's set compiled on every loop
         * (each loop keeps its own cache, and connections are spread over
         * the loops), so the check runs measure hits and RSS the full cache */
        bn_log("warming the permission cache: every user checked once on each of %d connections",
               o.conns);
        if (bn_gh_warm(&x, o.conns, &R.warm_secs) != 0)
            bn_log("the warm pass had failures");
        bn_rss_read(x.gh_pid, &R.rss_warm);
        fetch_stats(&x, R.warm_note, sizeof(R.warm_note));
        bn_log("  warm in %.1f s, RSS %.1f MB (anon %.1f + file %.1f), authz_cache %s", R.warm_secs,
               R.rss_warm.rss / 1024.0, R.rss_warm.anon / 1024.0, R.rss_warm.file / 1024.0,
               R.warm_note);
        bn_log("check");
        run_gh(&x, "check", o.conns, 1, d);
        run_gh(&x, "check", o.conns, o.depth, d);
        if (o.compare_slapd) {
            run_ldap(&x, &slapd, "compare", o.conns, 1, d);
            run_ldap(&x, &slapd, "compare", o.conns, o.depth, d);
        }
        if (o.baselines) {
            char msg[256];
            bn_result *e = next_result();
            sample_check_line(&x, msg, sizeof(msg));
            bn_log("echo, %d connections x %d in flight", o.conns, o.depth);
            if (bn_echo_pipelined_run(msg, o.conns, o.depth, d, e) != 0)
                bn_log("the pipelined echo had failures (see above)");
            R.echo_pipe = (int)(e - R.res);
            progress(e);
        }
        if (o.baselines && x.gh_pid > 0)
            placements(&x, &o);
    }
    if (wants(&o, "batch")) {
        bn_log("check.batch (%d checks each)", x.batch);
        run_gh(&x, "batch", o.conns, 1, d);
    }
    if (wants(&o, "whoami") || wants(&o, "mixed")) {
        bn_log("authenticating 64 users for their tokens");
        if (bn_gh_tokens(&x, 64) != 0)
            bn_log("no tokens: whoami is skipped");
    }
    if (wants(&o, "whoami") && x.ntokens > 0) {
        bn_log("whoami");
        run_gh(&x, "whoami", o.conns, 1, d);
        run_gh(&x, "whoami", o.conns, o.depth, d);
        if (o.compare_slapd && !wants(&o, "check"))
            run_ldap(&x, &slapd, "compare", o.conns, 1, d);
    }
    if (wants(&o, "user.get")) {
        bn_log("user.get");
        run_gh(&x, "user.get", o.conns, 1, d);
        run_gh(&x, "user.get", o.conns, o.depth, d);
        if (o.compare_slapd) {
            run_ldap(&x, &slapd, "search", o.conns, 1, d);
            run_ldap(&x, &slapd, "search", o.conns, o.depth, d);
        }
    }
    if (wants(&o, "mixed") && x.ntokens > 0) {
        bn_log("mixed");
        bn_result *r = run_gh(&x, "mixed", o.conns, 1, d);
        snprintf(r->workload, sizeof(r->workload), "mixed");
    }
    if (wants(&o, "auth")) {
        /* the floor right before and right after the run it bounds, for as
         * long, so that both see the same machine; the higher one counts */
        if (o.baselines)
            pwhash_floor(&x, 0, d);
        bn_log("auth (%.0f%% wrong passwords)", x.wrong_ratio * 100);
        run_gh(&x, "auth", o.auth_conns, 1, d);
        if (o.baselines)
            pwhash_floor(&x, 1, d);
        if (o.compare_slapd)
            run_ldap(&x, &slapd, "bind", o.auth_conns, 1, d);
    }
    if (o.auth_storm) {
        bn_log("auth storm: %d x %d auth in flight, checks on %d connection(s)", o.storm_auth_conns,
               o.storm_auth_depth, o.storm_check_conns);
        bn_result *a = next_result(), *c = next_result();
        if (bn_gh_auth_storm(&x, o.storm_auth_conns, o.storm_auth_depth, o.storm_check_conns, d, a,
                             c) != 0)
            bn_log("auth storm had failures");
        snprintf(a->placement, sizeof(a->placement), "storm");
        snprintf(c->placement, sizeof(c->placement), "storm");
        R.storm_auth = (int)(a - R.res);
        R.storm_check = (int)(c - R.res);
        progress(a);
        progress(c);
    }
    if (wants(&o, "write")) {
        bn_log("write (membership churn)");
        run_gh(&x, "write", o.conns, 1, d);
        run_gh(&x, "write", o.conns, o.depth, d);
    }

    bn_rss_read(x.gh_pid, &R.rss_end);
    fetch_stats(&x, R.stats_note, sizeof(R.stats_note));

    bn_buf rep = {0};
    write_report(&o, &x, &rep);
    fwrite(rep.p, 1, rep.len, stdout);
    fflush(stdout);
    if (o.markdown) {
        FILE *f = fopen(o.markdown, "w");
        if (f == NULL || fwrite(rep.p, 1, rep.len, f) != rep.len || fclose(f) != 0)
            bn_die("cannot write %s: %s", o.markdown, strerror(errno));
        bn_log("report written to %s", o.markdown);
    }
    bn_buf_free(&rep);

    if (o.compare_slapd)
        bn_slapd_stop(&slapd);
    bn_gh_stop(&x.gh);
    for (int i = 0; i < R.nres; i++)
        bn_result_free(&R.res[i]);
    for (unsigned i = 0; i < x.ntokens; i++)
        free(x.tokens[i]);
    free(x.tokens);
    bn_data_free(&x.data);
    return 0;
}
