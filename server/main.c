/*
 * main.c: gatehoused's start, bootstrap and shutdown.
 *
 * Start: defaults, then --config, then command-line overrides; open the store
 * (migrating or refusing), start the writer, authz, sync workers, listeners,
 * signals. Shutdown (SIGTERM/SIGINT) stops accepting and reading, lets every
 * request in flight finish and its reply go out, drains the writer (every
 * acknowledged write is committed), stops sync, closes the store, exits 0.
 * Core dumps are disabled: the process holds passwords in memory while it
 * hashes them.
 */
#include "gh-config.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif

#include <sodium.h>

#include "clients/paths-int.h"
#include "schema/log.h"
#include "server/server.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: gatehoused [--config FILE] [--state-dir DIR] [--socket PATH] "
               "[--foreground]\n"
               "       gatehoused [--config FILE] [--state-dir DIR] --init-admin NAME  "
               "(password on stdin)\n"
               "       gatehoused [--config FILE] [--state-dir DIR] --restore FILE  "
               "(server stopped)\n"
               "       gatehoused [--config FILE] --check-config  (print the effective settings)\n"
               "       gatehoused --version | --help\n"
               "Installed defaults: state " GH_INSTALLED_STATE_DIR ", socket " GH_INSTALLED_SOCKET
               ",\nconfiguration " GH_INSTALLED_CONFIG " when it exists. Run from its build\n"
               "directory: state ./var, socket ./var/gatehoused.sock, no configuration.\n");
}

/* ---- file descriptors ---- */

/* Descriptors beside the connections: listeners, the database, the loop's
 * own (epoll, eventfd, signals, timers), logs, token.key while loading. */
#define GH_FD_RESERVE 64
#define GH_FD_PER_UPSTREAM 8 /* the sync connection and the bind threads' */

/* Raises RLIMIT_NOFILE so that max_connections connections can really be
 * open at once: past the limit, accept() fails and libuv stops accepting. */
static int raise_nofile(const gh_config *cfg)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)cfg->max_connections + GH_FD_RESERVE +
                  (rlim_t)cfg->sync.nupstreams * GH_FD_PER_UPSTREAM;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        GH_LOGE("getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return -1;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        struct rlimit want = rl;
        want.rlim_cur = need;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
            want.rlim_max = need; /* only with CAP_SYS_RESOURCE */
        if (setrlimit(RLIMIT_NOFILE, &want) != 0) {
            GH_LOGE("max_connections = %u needs %llu file descriptors, but the limit is %llu "
                    "(hard %llu) and cannot be raised: %s. Raise it (systemd: LimitNOFILE=%llu; "
                    "shell: ulimit -n %llu) or lower max_connections",
                    cfg->max_connections, (unsigned long long)need, (unsigned long long)rl.rlim_cur,
                    (unsigned long long)rl.rlim_max, strerror(errno), (unsigned long long)need,
                    (unsigned long long)need);
            return -1;
        }
        GH_LOGI("file descriptor limit raised from %llu to %llu", (unsigned long long)rl.rlim_cur,
                (unsigned long long)need);
    }
    return 0;
}

/* ---- --init-admin ---- */

typedef struct init_admin {
    const char *name;
    const char *group;
    char verifier[GH_VERIFIER_MAX + 1];
} init_admin;

static int init_admin_apply(gh_txn *txn, void *arg)
{
    init_admin *a = arg;
    gh_user u;
    gh_group g;
    int rc = gh_store_user_get(txn, a->name, &u);
    if (rc == GH_ENOTFOUND) {
        memset(&u, 0, sizeof(u));
        snprintf(u.name, sizeof(u.name), "%s", a->name);
        snprintf(u.verifier, sizeof(u.verifier), "%s", a->verifier);
        rc = gh_store_user_add(txn, &u);
    } else if (rc == 0) {
        snprintf(u.verifier, sizeof(u.verifier), "%s", a->verifier);
        u.verifier_time = gh_txn_now(txn);
        rc = gh_store_user_update(txn, &u, GH_UF_VERIFIER);
        if (rc == 0) /* a password reset ends the old password's sessions */
            rc = gh_store_token_revoke_user(txn, u.id, NULL);
    }
    if (rc != 0)
        return rc;
    rc = gh_store_group_get(txn, a->group, &g);
    if (rc == GH_ENOTFOUND) {
        memset(&g, 0, sizeof(g));
        snprintf(g.name, sizeof(g.name), "%s", a->group);
        snprintf(g.description, sizeof(g.description), "Gatehouse administrators");
        rc = gh_store_group_add(txn, &g);
    }
    if (rc != 0)
        return rc;
    rc = gh_store_member_add(txn, g.id, (gh_member){GH_MEMBER_USER, u.id});
    return rc == GH_EEXISTS ? 0 : rc;
}

static int run_init_admin(gh_config *cfg, const char *name)
{
    char msg[GH_ERRMSG_MAX];
    char *pw = NULL;
    size_t cap = 0;
    gh_store *store = NULL;
    init_admin a = {.name = name, .group = cfg->admin_group};
    int rc = 1;

    if (gh_schema_name_valid(name, msg, sizeof(msg)) != 0) {
        fprintf(stderr, "gatehoused: --init-admin: %s\n", msg);
        return 2;
    }
    if (cfg->admin_group[0] == '\0') {
        fprintf(stderr, "gatehoused: --init-admin needs admin_group to be set\n");
        return 2;
    }
    ssize_t n = getline(&pw, &cap, stdin);
    if (n < 0) {
        fprintf(stderr, "gatehoused: --init-admin reads the password from stdin; got nothing\n");
        goto done;
    }
    while (n > 0 && (pw[n - 1] == '\n' || pw[n - 1] == '\r'))
        pw[--n] = '\0';
    if ((size_t)n < cfg->password_min_length) {
        fprintf(stderr, "gatehoused: the password must be at least %u characters\n",
                cfg->password_min_length);
        goto done;
    }
    if (crypto_pwhash_str(a.verifier, pw, (size_t)n, cfg->argon2_opslimit, cfg->argon2_memlimit) !=
        0) {
        fprintf(stderr, "gatehoused: cannot hash the password (out of memory)\n");
        goto done;
    }
    if (gh__open_store(cfg, &store) != 0)
        goto done;
    char err[GH_ERRMSG_MAX] = "";
    int wrc = gh_store_write(store, init_admin_apply, &a, err, sizeof(err));
    if (wrc != 0) {
        fprintf(stderr, "gatehoused: --init-admin: %s: %s\n", gh_error_code(wrc),
                err[0] ? err : gh_strerror(wrc));
        goto done;
    }
    printf("admin user '%s' is a member of '%s'\n", name, cfg->admin_group);
    rc = 0;
done:
    if (pw) {
        sodium_memzero(pw, cap);
        free(pw);
    }
    sodium_memzero(a.verifier, sizeof(a.verifier));
    if (store)
        gh_store_close(store);
    return rc;
}

/* ---- signals and shutdown ---- */

/* SIGHUP's reload, while the other loops wait (they read these fields
 * without a lock); the lockout fields are also read under fail_mu. */
typedef struct reload {
    gh_server *srv;
    gh_config *fresh;
} reload;

static void apply_reload(void *arg)
{
    reload *r = arg;
    gh_server *srv = r->srv;
    gh_config *fresh = r->fresh;
    free(srv->cfg->log_level);
    srv->cfg->log_level = fresh->log_level;
    fresh->log_level = NULL;
    srv->cfg->log_syslog = fresh->log_syslog;
    srv->cfg->idle_timeout = fresh->idle_timeout;
    srv->cfg->max_connections = fresh->max_connections;
    pthread_mutex_lock(&srv->fail_mu);
    srv->cfg->lockout_threshold = fresh->lockout_threshold;
    srv->cfg->lockout_base_delay = fresh->lockout_base_delay;
    srv->cfg->lockout_max_delay = fresh->lockout_max_delay;
    srv->cfg->peer_failure_threshold = fresh->peer_failure_threshold;
    pthread_mutex_unlock(&srv->fail_mu);
    srv->cfg->password_min_length = fresh->password_min_length;
    srv->cfg->token_ttl = fresh->token_ttl;
    srv->cfg->argon2_queue_max = fresh->argon2_queue_max;
    /* OS login (server/ops_nss.c reads them per request); paths only
     * when gh_config_finish would take them */
    if (fresh->home_template[0] == '/' && !strchr(fresh->home_template, ':') &&
        fresh->default_shell[0] == '/' && !strchr(fresh->default_shell, ':')) {
        char *swap = srv->cfg->home_template;
        srv->cfg->home_template = fresh->home_template;
        fresh->home_template = swap;
        swap = srv->cfg->default_shell;
        srv->cfg->default_shell = fresh->default_shell;
        fresh->default_shell = swap;
    }
    srv->cfg->gid_min = fresh->gid_min;
    srv->cfg->user_private_groups = fresh->user_private_groups;
    srv->cfg->nss_enumerate = fresh->nss_enumerate;
    gh_log_setup(gh_log_level_parse(srv->cfg->log_level), srv->cfg->log_syslog);
}

static void on_signal(uv_signal_t *s, int signum)
{
    gh_server *srv = s->data;
    if (signum == SIGHUP) {
        /* Reload what can change without a restart: logging and limits. */
        if (srv->config_path == NULL) {
            GH_LOGI("SIGHUP: no configuration file to reload");
            return;
        }
        gh_config fresh;
        char err[512] = "";
        if (gh_config_defaults(&fresh) != 0 ||
            gh_config_load(&fresh, srv->config_path, err, sizeof(err)) != 0) {
            GH_LOGE("SIGHUP: keeping the running configuration: %s", err);
            gh_config_free(&fresh);
            return;
        }
        reload r = {srv, &fresh};
        gh__loops_quiesce(srv, apply_reload, &r);
        gh_config_free(&fresh);
        GH_LOGI("SIGHUP: configuration reloaded from %s", srv->config_path);
        return;
    }
    gh__server_shutdown(srv);
}

static void report_open_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    GH_LOGE("handle still open at exit: %s%s", uv_handle_type_name(uv_handle_get_type(h)),
            uv_is_closing(h) ? " (closing)" : "");
}

static int run_server(gh_config *cfg, const char *config_path)
{
    gh_server srv;
    uv_loop_t loop;
    char nbuf[16];
    int rc;

    if (raise_nofile(cfg) != 0)
        return 1;
    snprintf(nbuf, sizeof(nbuf), "%u", cfg->threadpool_size);
    setenv("UV_THREADPOOL_SIZE", nbuf, 1);
    if (uv_loop_init(&loop) != 0)
        return 1;
    rc = gh__server_open(&srv, cfg, &loop);
    if (rc == 0)
        rc = gh__listen(&srv);
    if (rc == 0)
        rc = gh__ldap_start(&srv);
    if (rc == 0) {
        uv_signal_init(&loop, &srv.sig_term);
        uv_signal_init(&loop, &srv.sig_int);
        uv_signal_init(&loop, &srv.sig_hup);
        srv.sig_term.data = srv.sig_int.data = srv.sig_hup.data = &srv;
        uv_signal_start(&srv.sig_term, on_signal, SIGTERM);
        uv_signal_start(&srv.sig_int, on_signal, SIGINT);
        uv_signal_start(&srv.sig_hup, on_signal, SIGHUP);
        srv.have_signals = 1;
        srv.config_path = config_path;
        GH_LOGI("gatehoused %s ready (state %s)", GH_VERSION_STRING, cfg->state_dir);
        uv_run(&loop, UV_RUN_DEFAULT);
        GH_LOGI("stopped");
    }
    gh__server_close(&srv); /* joins the other loops' threads and closes their loops */
    if (srv.loop_close_failed) {
        GH_LOGE("a loop thread's event loop closed with handles still open");
        rc = 1;
    }
    if (uv_loop_close(&loop) != 0) {
        /* a handle nobody closed is a leak: fail the exit so that every
         * test stopping a server checks for it */
        uv_walk(&loop, report_open_handle, NULL);
        GH_LOGE("event loop closed with handles still open");
        return 1;
    }
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    /* libnss_gatehouse answers "unavailable" at once in a process carrying
     * this mark: gatehoused resolving a name (admin_unix_group, a peer's
     * groups) through NSS must never ask itself (SSSD's _SSS_LOOPS). */
    setenv("_GATEHOUSE_NSS_LOOPS", "NO", 1);
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"state-dir", required_argument, NULL, 'd'},
        {"socket", required_argument, NULL, 's'},
        {"foreground", no_argument, NULL, 'f'},
        {"init-admin", required_argument, NULL, 'a'},
        {"restore", required_argument, NULL, 'r'},
        {"check-config", no_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *state_dir = NULL, *sock = NULL, *admin = NULL;
    const char *restore = NULL;
    int check_config = 0;
    gh_config cfg;
    char err[1024] = "";
    int ch, rc;

    while ((ch = getopt_long(argc, argv, "c:d:s:fa:r:CVh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 'd':
            state_dir = optarg;
            break;
        case 's':
            sock = optarg;
            break;
        case 'f':
            break; /* always in the foreground: supervisors (systemd) daemonize */
        case 'a':
            admin = optarg;
            break;
        case 'r':
            restore = optarg;
            break;
        case 'C':
            check_config = 1;
            break;
        case 'V':
            printf("gatehoused %s\n", GH_VERSION_STRING);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "gatehoused: libsodium failed to initialize\n");
        return 1;
    }
#ifdef HAVE_SYS_PRCTL_H
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#endif
    struct rlimit nocore = {0, 0};
    setrlimit(RLIMIT_CORE, &nocore);
    signal(SIGPIPE, SIG_IGN);

    if (gh_config_defaults(&cfg) != 0)
        return 1;
    /* Installed: FHS defaults and the system configuration file when present;
     * from the build tree: the checkout's ./var (clients/paths-int.h). */
    int installed = !gh__in_build_tree("/proc/self/exe");
    if (installed) {
        free(cfg.state_dir);
        cfg.state_dir = strdup(GH_INSTALLED_STATE_DIR);
        if (cfg.state_dir == NULL)
            return 1;
        if (config_path == NULL && access(GH_INSTALLED_CONFIG, F_OK) == 0)
            config_path = GH_INSTALLED_CONFIG;
    }
    if (config_path && gh_config_load(&cfg, config_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "gatehoused: %s\n", err);
        gh_config_free(&cfg);
        return 2;
    }
    if (state_dir) {
        free(cfg.state_dir);
        cfg.state_dir = strdup(state_dir);
    }
    if (sock) {
        free(cfg.socket_path);
        cfg.socket_path = strdup(sock);
    }
    /* The installed state directory has its socket under the run directory;
     * any other state directory keeps <state_dir>/gatehoused.sock. */
    if (installed && cfg.socket_path && cfg.socket_path[0] == '\0' && cfg.state_dir &&
        strcmp(cfg.state_dir, GH_INSTALLED_STATE_DIR) == 0) {
        free(cfg.socket_path);
        cfg.socket_path = strdup(GH_INSTALLED_SOCKET);
    }
    if (gh_config_finish(&cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "gatehoused: %s%s%s\n", config_path ? config_path : "",
                config_path ? ": " : "", err);
        gh_config_free(&cfg);
        return 2;
    }
    if (check_config) {
        /* the effective settings gatehouse doctor checks, as key = value */
        printf("config = %s\nstate_dir = %s\nsocket = %s\nnss_socket = %s\n"
               "argon2_opslimit = %llu\nargon2_memlimit = %zu\nthreadpool_size = %u\n"
               "map_max = %zu\nmetrics_listen = %s\nupstreams = %zu\n",
               config_path ? config_path : "", cfg.state_dir, cfg.socket_path, cfg.nss_socket,
               (unsigned long long)cfg.argon2_opslimit, cfg.argon2_memlimit, cfg.threadpool_size,
               cfg.map_max, cfg.metrics_listen, cfg.sync.nupstreams);
        gh_config_free(&cfg);
        return 0;
    }
    gh_log_setup(gh_log_level_parse(cfg.log_level), cfg.log_syslog);
    /* Without systemd's RuntimeDirectory (or tmpfiles) nobody made the run
     * directory since boot: make it, like the state directory. */
    if (installed && strcmp(cfg.socket_path, GH_INSTALLED_SOCKET) == 0 &&
        mkdir(GH_INSTALLED_RUN_DIR, 0755) != 0 && errno != EEXIST)
        GH_LOGW("cannot create %s: %s", GH_INSTALLED_RUN_DIR, strerror(errno));
    if (admin && restore) {
        fprintf(stderr, "gatehoused: --init-admin and --restore do not go together\n");
        rc = 2;
    } else if (restore)
        rc = gh__restore(&cfg, restore);
    else if (admin)
        rc = run_init_admin(&cfg, admin);
    else
        rc = run_server(&cfg, config_path);
    gh_config_free(&cfg);
    return rc;
}
