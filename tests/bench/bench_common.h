/*
 * bench_common.h: what the parts of gatehouse-bench share (internal to
 * tests/bench/).
 *
 * The tool is a client: it links no server code, speaks the line protocol
 * over a UNIX socket (bench_gh.c) and LDAP through libldap (bench_ldap.c),
 * and runs on the same cores as the servers it measures. The one thing to
 * know before changing it: every cycle the client spends is a cycle the
 * server on a 2-core machine does not get, so the hot loops build requests
 * with snprintf into one buffer, send a batch with one write(), and classify
 * replies by scanning bytes, never with a JSON parser.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* ---- operations measured (one latency series each) ---- */

enum {
    BN_OP_CHECK,
    BN_OP_BATCH,
    BN_OP_AUTH,
    BN_OP_WHOAMI,
    BN_OP_USERGET,
    BN_OP_ADDMEM,
    BN_OP_DELMEM,
    BN_OP_COMPARE, /* LDAP compare on member */
    BN_OP_BIND,    /* LDAP simple bind */
    BN_OP_SEARCH,  /* LDAP search by uid */
    BN_OP_ECHO,
    BN_OP_GSEARCH, /* LDAP search of a user's groups (member=DN) */
    BN_OP_PAGED,   /* LDAP paged search of every user (one sweep = one op) */
    BN_OP_N
};

extern const char *const bn_op_names[BN_OP_N];

/* Latency samples (ns) and outcome counters of one operation. */
typedef struct bn_series {
    uint64_t *ns;
    size_t n, cap;
    uint64_t ok;      /* expected answers */
    uint64_t errors;  /* anything unexpected (wrong code, refused, broken) */
    uint64_t yes, no; /* check/compare: allow/deny; auth/bind: accepted/refused */
    uint64_t items;   /* check.batch: checks carried */
} bn_series;

#define BN_CODES_MAX 8
typedef struct bn_codes {
    char code[BN_CODES_MAX][32];
    uint64_t count[BN_CODES_MAX];
} bn_codes;

/* One measured run: a workload on one side at one concurrency. */
typedef struct bn_result {
    char side[16]; /* gatehouse, slapd, echo, libsodium */
    char workload[32];
    char placement[24]; /* "" or same-cpu / cross-cpu / unpinned */
    int conns, depth;
    double seconds; /* measured window */
    bn_series ops[BN_OP_N];
    bn_codes codes; /* error codes seen */
    long rss_before_kb, rss_after_kb;
    /* CPU spent over the whole run (warm-up and drain included), per
     * answer of the whole run: the cost of one operation on each side */
    uint64_t ops_all;
    double wall_s, server_cpu_s, client_cpu_s;
    /* CPU the rest of the machine used meanwhile (other processes), as a
     * share of all CPUs: figures taken on a busy machine say so */
    double other_cpu_share;
    char note[256];
} bn_result;

void bn_series_add(bn_series *s, uint64_t ns);
void bn_series_merge(bn_series *dst, const bn_series *src);
void bn_series_free(bn_series *s);
/* Sorts the samples; q in [0,1]; 0 when empty. */
void bn_series_sort(bn_series *s);
uint64_t bn_series_pct(const bn_series *s, double q);
void bn_codes_add(bn_codes *c, const char *code, size_t len, uint64_t n);
void bn_codes_merge(bn_codes *dst, const bn_codes *src);
void bn_result_free(bn_result *r);
/* Totals over the series of r. */
uint64_t bn_result_ops(const bn_result *r);
uint64_t bn_result_errors(const bn_result *r);

/* ---- utilities (bench_util.c) ---- */

uint64_t bn_now_ns(void);
void bn_sleep_ms(unsigned ms);
void bn_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void bn_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern int bn_verbose;

typedef struct bn_rng {
    uint64_t s;
} bn_rng;
void bn_rng_seed(bn_rng *r, uint64_t seed);
uint64_t bn_rng_next(bn_rng *r);
/* Uniform in [0, n). */
uint32_t bn_rng_below(bn_rng *r, uint32_t n);

/* VmRSS / RssAnon / RssFile of pid in kB; -1 when unreadable. */
typedef struct bn_rss {
    long rss, anon, file, hwm;
} bn_rss;
int bn_rss_read(pid_t pid, bn_rss *out);
/* utime + stime of every thread of pid, seconds; -1 when unreadable. */
double bn_proc_cpu(pid_t pid);
/* CPU time of this process, seconds. */
double bn_self_cpu(void);
/* Busy CPU seconds of the whole machine (all CPUs, /proc/stat). */
double bn_sys_busy(void);
/* Share of all CPUs used by processes other than server and client. */
double bn_other_share(double busy_delta, double server_cpu, double client_cpu, double wall);

/* Child processes started by the tool: killed by pid at exit, also on a
 * fatal error or a signal. */
pid_t bn_spawn(char *const argv[], const char *log_path);
void bn_child_stop(pid_t pid, int sig, unsigned wait_ms);
int bn_child_alive(pid_t pid);
void bn_children_install_cleanup(void);
void bn_children_register(pid_t pid);
/* Waits for a child started with bn_spawn; its exit status or -1. */
int bn_child_wait(pid_t pid);

/* Temporary directories removed at exit (unless keep). */
char *bn_tempdir(const char *tag);
void bn_tempdirs_keep(int keep);

/* CPU placement: every thread of pid (cpu < 0: all CPUs). */
int bn_pin_process(pid_t pid, int cpu);
int bn_pin_self(int cpu);
int bn_ncpus(void);

/* Blocking UNIX-socket helpers. */
int bn_unix_connect(const char *path, int timeout_ms);
int bn_write_all(int fd, const char *buf, size_t len);
pid_t bn_socket_peer_pid(const char *path);

/* A growable byte buffer. */
typedef struct bn_buf {
    char *p;
    size_t len, cap;
} bn_buf;
void bn_buf_reserve(bn_buf *b, size_t extra);
void bn_buf_printf(bn_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bn_buf_put(bn_buf *b, const char *s, size_t n);
void bn_buf_free(bn_buf *b);
#define BN_PUTS(b, lit) bn_buf_put((b), (lit), sizeof(lit) - 1)

/* Machine description: nproc, CPU model, kernel. */
void bn_machine(char *buf, size_t len);

/* ---- the data set (bench_data.c) ---- */

#define BN_ACTIONS 10
extern const char *const bn_actions[BN_ACTIONS];

typedef struct bn_rule {
    int deny;
    char action[24];
    char resource[48];
} bn_rule;

typedef struct bn_role {
    char name[16];
    int parent; /* -1 or index */
    int nrules;
    bn_rule rules[6];
} bn_role;

typedef struct bn_binding {
    int role;
    int is_group;
    uint32_t subject; /* user or group index */
    int scope_app;    /* -1: unscoped; else scope app/aNNN/ ** */
} bn_binding;

typedef struct bn_data {
    uint32_t nusers, ngroups, nroles, nbindings, napps;
    uint64_t seed;
    /* group members (CSR): users then subgroups */
    uint32_t *gm_off;  /* ngroups + 1 */
    uint32_t *gm_user; /* member user indices */
    uint32_t *gs_off;  /* ngroups + 1 */
    uint32_t *gs_sub;  /* subgroup indices */
    /* user -> direct groups (CSR) */
    uint32_t *ug_off; /* nusers + 1 */
    uint32_t *ug_group;
    /* group -> groups that contain it (CSR) */
    uint32_t *gp_off;
    uint32_t *gp_parent;
    bn_role *roles;
    bn_binding *bindings;
    /* bindings per subject (CSR) */
    uint32_t *bu_off, *bu_idx; /* per user */
    uint32_t *bg_off, *bg_idx; /* per group */
    uint64_t nmembers;         /* user memberships */
    uint64_t nsubgroups;
    char password[32];  /* the one correct password */
    char verifier[160]; /* its Argon2id string (crypto_pwhash_str) */
} bn_data;

/* Generates the data set for nusers users (groups, roles, bindings scale). */
void bn_data_generate(bn_data *d, uint32_t nusers, uint64_t seed);
/* Hashes d->password at the server's cost into d->verifier. */
void bn_data_hash(bn_data *d, unsigned long long opslimit, size_t memlimit);
void bn_data_free(bn_data *d);

void bn_user_name(char *buf, size_t len, uint32_t u);
void bn_group_name(char *buf, size_t len, uint32_t g);

/* A check request: user, action, resource; likely = derived from a binding
 * the user has (mostly allowed) rather than random (mostly denied). */
typedef struct bn_check {
    uint32_t user;
    uint32_t group; /* for LDAP: a direct group (likely) or a random one */
    int likely;
    char action[24];
    char resource[64];
} bn_check;
/* user: UINT32_MAX for a random user. */
void bn_check_pick(const bn_data *d, bn_rng *r, uint32_t user, bn_check *c);

/* The records of import phase (0: users+groups, 1: roles, 2: members and
 * bindings) as JSON objects without separators; *count set; NULL at end.
 * Appends record i of phase to b; returns 0, or 1 past the end. */
int bn_import_record(const bn_data *d, int phase, uint64_t i, bn_buf *b);
uint64_t bn_import_count(const bn_data *d, int phase);

/* Writes the LDIF of users and groups under dc=bench. */
int bn_ldif_write(const bn_data *d, const char *path);

/* ---- Gatehouse side (bench_gh.c) ---- */

typedef struct bn_ctx bn_ctx;

typedef struct bn_gh_server {
    char sock[512];
    char dir[512]; /* temp dir when the tool started the server */
    char conf[600];
    char log[600];
    char bin[512];
    pid_t pid; /* 0 when not ours; the peer's pid otherwise */
    int ours;
    double startup_ms;
} bn_gh_server;

int bn_gh_start(bn_gh_server *s, const char *bin, const bn_ctx *x);
int bn_gh_restart(bn_gh_server *s, const bn_ctx *x);
void bn_gh_stop(bn_gh_server *s);
/* One request, one reply (allocated, caller frees) on a fresh connection. */
char *bn_gh_call(const char *sock, const char *req);
int bn_gh_import(const bn_ctx *x, const bn_data *d, double *secs, uint64_t *nrec, uint64_t *failed);
/* Authenticates n users and keeps their tokens in x. */
int bn_gh_tokens(bn_ctx *x, unsigned n);
/* Checks every user once on each of conns connections (all at once), so that
 * every loop's permission cache holds every user's set: 0, or -1 when a
 * check failed. */
int bn_gh_warm(const bn_ctx *x, int conns, double *secs);

/* Workload names: check, batch, auth, whoami, user.get, mixed, write. */
int bn_gh_run(bn_ctx *x, const char *workload, int conns, int depth, double seconds,
              bn_result *out);
/* check (1 conn, depth 1) on check_conns while auth_conns saturate Argon2. */
int bn_gh_auth_storm(bn_ctx *x, int auth_conns, int auth_depth, int check_conns, double seconds,
                     bn_result *auth_out, bn_result *check_out);

/* ---- LDAP side (bench_ldap.c) ---- */

typedef struct bn_slapd {
    char dir[512];
    char conf[600];
    char ldapi_url[1024];
    char ldap_url[64];
    char ldapi_path[600];
    pid_t pid;
    double load_secs;
    char side[16]; /* "slapd", or "gatehouse-ldap" for gatehoused's LDAP front-end */
} bn_slapd;

int bn_slapd_start(bn_slapd *s, const bn_data *d, const char *slapd_bin, const char *slapadd_bin);
void bn_slapd_stop(bn_slapd *s);
/* Workloads: compare, bind, search, groupsearch, paged. Every connection
 * binds first as the data set's first user (Gatehouse's LDAP view shows
 * nothing to anonymous peers; slapd gives every peer read access). */
int bn_ldap_run(bn_ctx *x, const bn_slapd *s, const char *workload, int conns, int depth,
                double seconds, bn_result *out);

/* ---- baselines (bench_base.c) ---- */

/* Echo round trips of msg over a UNIX socket to a forked epoll echo
 * process on server_cpu, client on client_cpu (-1: unpinned). */
int bn_echo_run(const char *msg, int server_cpu, int client_cpu, double seconds, bn_result *out);
/* The same echo with conns client threads each keeping depth messages in
 * flight, unpinned like the pipelined check runs: round trips/s. */
int bn_echo_pipelined_run(const char *msg, int conns, int depth, double seconds, bn_result *out);
/* crypto_pwhash_str_verify per second with nthreads threads. */
double bn_pwhash_rate(const char *verifier, const char *password, int nthreads, double seconds);

/* ---- the run's context ---- */

struct bn_ctx {
    bn_data data;
    bn_gh_server gh;
    const char *sock; /* gatehoused socket */
    pid_t gh_pid;     /* for RSS and placement; 0 unknown */
    double warmup;
    int batch;          /* checks per check.batch */
    double wrong_ratio; /* auth: share of wrong passwords */
    int client_cpu;     /* -1: unpinned */
    char **tokens;
    unsigned ntokens;
    unsigned long long opslimit;
    size_t memlimit;
    int threadpool;
    unsigned argon2_queue_max;
};

#endif
