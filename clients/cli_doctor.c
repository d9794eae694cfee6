/*
 * cli_doctor.c: `gatehouse doctor`, one command that says what is wrong
 * with a Gatehouse installation and how to fix it.
 *
 * Every check adds one finding: ok, warn, fail or info, a message and, for
 * warn and fail, the fix. Nothing here needs admin rights to run: a check
 * the caller may not make (stats, sync.status without admin, a state
 * directory it cannot read) says so and how to get the answer. The server's
 * configuration is read by the server's own parser (`gatehoused
 * --check-config`), never parsed a second time here. Exit status: 0 when no
 * check failed, 3 when the server cannot be reached, 5 for other failures.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <glob.h>
#include <grp.h>
#include <link.h>
#include <limits.h>
#include <nss.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "clients/cli-int.h"
#include "clients/paths-int.h"

#ifndef GH_SBINDIR
#define GH_SBINDIR "/usr/sbin"
#endif

typedef struct doctor {
    cli *x;
    json_t *checks;
    int fails, warns;
    int unreachable;
} doctor;

__attribute__((format(printf, 5, 6))) static void
finding(doctor *d, const char *name, const char *status, const char *fix, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s, s:s, s:s}", "check", name, "status", status, "message", msg);
    if (fix)
        json_object_set_new(o, "fix", json_string(fix));
    json_array_append_new(d->checks, o);
    if (strcmp(status, "fail") == 0)
        d->fails++;
    else if (strcmp(status, "warn") == 0)
        d->warns++;
}

/* ---- the server's effective configuration ---- */

typedef struct settings {
    int have;
    char config[1024], state_dir[1024], socket[1024], nss_socket[1024];
    unsigned long long opslimit, memlimit, threadpool, map_max;
} settings;

static void gatehoused_path(char *out, size_t len)
{
    const char *env = getenv("GATEHOUSED");
    if (env && env[0]) {
        snprintf(out, len, "%s", env);
        return;
    }
    if (gh__in_build_tree("/proc/self/exe")) {
#ifdef GH_ABS_BUILDDIR
        snprintf(out, len, "%s/gatehoused", GH_ABS_BUILDDIR);
        return;
#endif
    }
    snprintf(out, len, "%s/gatehoused", GH_SBINDIR);
}

static void check_config(doctor *d, settings *s)
{
    char prog[1024], buf[8192];
    const char *conf = cli_opt(d->x, "config");
    int pfd[2];
    size_t n = 0;

    gatehoused_path(prog, sizeof(prog));
    if (access(prog, X_OK) != 0) {
        finding(d, "config", "info", NULL,
                "gatehoused is not installed here (%s): the configuration is not checked", prog);
        return;
    }
    if (pipe(pfd) != 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        close(pfd[0]);
        close(pfd[1]);
        if (conf)
            execl(prog, prog, "--check-config", "--config", conf, (char *)NULL);
        else
            execl(prog, prog, "--check-config", (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    if (pid < 0) {
        close(pfd[0]);
        return;
    }
    ssize_t k;
    while (n < sizeof(buf) - 1 && (k = read(pfd[0], buf + n, sizeof(buf) - 1 - n)) > 0)
        n += (size_t)k;
    buf[n] = '\0';
    close(pfd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *nl = strchr(buf, '\n');
        if (nl)
            *nl = '\0';
        finding(d, "config", "fail",
                "correct the line named above (gatehoused.conf(5) lists every key), then "
                "restart or reload (SIGHUP) the server",
                "the configuration is refused: %s", buf[0] ? buf : "gatehoused failed");
        return;
    }
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        char key[64], val[1024] = "";
        if (sscanf(line, "%63s = %1023[^\n]", key, val) < 1)
            continue;
        if (strcmp(key, "config") == 0)
            snprintf(s->config, sizeof(s->config), "%s", val);
        else if (strcmp(key, "state_dir") == 0)
            snprintf(s->state_dir, sizeof(s->state_dir), "%s", val);
        else if (strcmp(key, "socket") == 0)
            snprintf(s->socket, sizeof(s->socket), "%s", val);
        else if (strcmp(key, "nss_socket") == 0)
            snprintf(s->nss_socket, sizeof(s->nss_socket), "%s", val);
        else if (strcmp(key, "argon2_opslimit") == 0)
            s->opslimit = strtoull(val, NULL, 10);
        else if (strcmp(key, "argon2_memlimit") == 0)
            s->memlimit = strtoull(val, NULL, 10);
        else if (strcmp(key, "threadpool_size") == 0)
            s->threadpool = strtoull(val, NULL, 10);
        else if (strcmp(key, "map_max") == 0)
            s->map_max = strtoull(val, NULL, 10);
    }
    s->have = 1;
    if (s->config[0])
        finding(d, "config", "ok", NULL, "%s is valid (state %s, socket %s)", s->config,
                s->state_dir, s->socket);
    else
        finding(d, "config", "info", NULL,
                "no configuration file: the embedded defaults apply (state %s, socket %s)",
                s->state_dir, s->socket);
}

/* ---- the socket and the caller's class ---- */

static int check_socket(doctor *d, const settings *s, json_t **stats)
{
    int rc;
    gh_client *c = cli_client(d->x, &rc);
    const char *path;
    int protocol = 0;

    if (c == NULL)
        return -1;
    path = gh_client_socket_path(c);
    if (s->have && s->socket[0] && !d->x->socket && !getenv(GH_CLIENT_SOCKET_ENV) &&
        strcmp(path, s->socket) != 0)
        finding(d, "socket", "warn",
                "pass --socket, or export GATEHOUSE_SOCKET=<the server's socket>",
                "the client's default socket %s is not the server's configured socket %s", path,
                s->socket);
    rc = gh_ping(c, &protocol);
    if (rc < 0) {
        struct stat st;
        const char *why = stat(path, &st) != 0    ? "it does not exist"
                          : !S_ISSOCK(st.st_mode) ? "it is not a socket"
                          : access(path, W_OK) != 0
                              ? "this user may not write to it (see socket_mode; join the "
                                "socket's group)"
                              : "nothing answers on it";
        finding(d, "socket", "fail",
                "start the server (systemctl start gatehoused), or point --socket at it",
                "cannot reach gatehoused at %s: %s (%s)", path, gh_client_error_message(c), why);
        d->unreachable = 1;
        return -1;
    }
    finding(d, "socket", "ok", NULL, "gatehoused answers on %s (protocol %d)", path, protocol);

    json_t *req = cli_req("stats"), *resp = NULL;
    rc = gh_call(c, req, &resp);
    json_decref(req);
    if (rc == 0) {
        const char *how = getenv("GATEHOUSE_TOKEN") && getenv("GATEHOUSE_TOKEN")[0]
                              ? "by $GATEHOUSE_TOKEN or this uid"
                              : "by this uid (root, the server's uid or admin_unix_group)";
        finding(d, "peer", "ok", NULL, "this caller (uid %u) is an admin, %s", (unsigned)getuid(),
                how);
        *stats = resp;
        return 0;
    }
    json_decref(resp);
    if (rc == GH_ERR_PERMISSION_DENIED)
        finding(d, "peer", "info",
                "run as root or the server's user, join admin_unix_group, or export "
                "GATEHOUSE_TOKEN=<token of a gatehouse-admins member> for admin checks",
                "this caller (uid %u) is not an admin: it may ping, auth, whoami, logout and "
                "check; the checks that need stats and sync.status are skipped",
                (unsigned)getuid());
    else
        finding(d, "peer", "warn", NULL, "stats failed: %s", gh_client_error_message(c));
    return 0;
}

/* ---- the state directory ---- */

static void check_state_dir(doctor *d, const settings *s)
{
    struct stat st, sock;
    char data[1200];

    if (!s->have || !s->state_dir[0])
        return;
    if (stat(s->state_dir, &st) != 0) {
        if (errno == EACCES)
            finding(d, "state_dir", "info", "run gatehouse doctor as root to inspect it",
                    "%s cannot be inspected by this user", s->state_dir);
        else
            finding(d, "state_dir", "warn",
                    "it is created at the first start; check state_dir in the configuration",
                    "%s does not exist (%s)", s->state_dir, strerror(errno));
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        finding(d, "state_dir", "fail", "point state_dir at a directory", "%s is not a directory",
                s->state_dir);
        return;
    }
    const struct passwd *pw = getpwuid(st.st_uid);
    const char *owner = pw ? pw->pw_name : "?";
    if (st.st_mode & 0077) {
        char fix[1200];
        snprintf(fix, sizeof(fix), "chmod 0700 %s", s->state_dir);
        finding(d, "state_dir", "fail", fix,
                "%s is mode %04o: other users may read the password verifiers and token key",
                s->state_dir, (unsigned)(st.st_mode & 07777));
        return;
    }
    /* the server runs as the owner of its socket */
    if (s->socket[0] && stat(s->socket, &sock) == 0 && sock.st_uid != st.st_uid) {
        const struct passwd *spw = getpwuid(sock.st_uid);
        char fix[1300];
        snprintf(fix, sizeof(fix), "chown -R %s: %s", spw ? spw->pw_name : "<server user>",
                 s->state_dir);
        finding(d, "state_dir", "fail", fix,
                "%s belongs to %s but the server runs as %s (the socket's owner)", s->state_dir,
                owner, spw ? spw->pw_name : "?");
        return;
    }
    snprintf(data, sizeof(data), "%s/data.mdb", s->state_dir);
    struct stat ds;
    if (stat(data, &ds) == 0 && ds.st_uid != st.st_uid) {
        const struct passwd *dpw = getpwuid(ds.st_uid);
        char fix[1300];
        snprintf(fix, sizeof(fix), "chown %s: %s", owner, data);
        finding(d, "state_dir", "fail", fix,
                "%s belongs to %s, not to %s who owns the state directory (made by "
                "--init-admin or --restore as another user?)",
                data, dpw ? dpw->pw_name : "?", owner);
        return;
    }
    finding(d, "state_dir", "ok", NULL, "%s: mode %04o, owner %s", s->state_dir,
            (unsigned)(st.st_mode & 07777), owner);
}

/* ---- store ---- */

static void check_store(doctor *d, const settings *s, json_t *stats)
{
    json_t *store = json_object_get(stats, "store");
    double used = json_number_value(json_object_get(store, "used_bytes"));
    double map = json_number_value(json_object_get(store, "map_bytes"));
    double max = s->have && s->map_max ? (double)s->map_max : map;
    if (!json_is_object(store) || max <= 0)
        return;
    double pct = 100.0 * used / max;
    if (pct >= 90)
        finding(d, "map", "fail", "raise map_max in the configuration and restart",
                "the database uses %.0f%% of map_max (%.1f of %.1f MiB): writes will fail with "
                "storage_full",
                pct, used / 1048576, max / 1048576);
    else if (pct >= 75)
        finding(d, "map", "warn", "raise map_max before it fills",
                "the database uses %.0f%% of map_max (%.1f of %.1f MiB)", pct, used / 1048576,
                max / 1048576);
    else
        finding(d, "map", "ok", NULL,
                "%.1f MiB used; map %.1f MiB, grows up to map_max %.1f MiB (%.1f%%)",
                used / 1048576, map / 1048576, max / 1048576, pct);
}

/* ---- upstreams ---- */

static void check_upstreams(doctor *d)
{
    int rc;
    gh_client *c = cli_client(d->x, &rc);
    json_t *req = cli_req("sync.status"), *resp = NULL, *u;
    size_t i;

    rc = gh_call(c, req, &resp);
    json_decref(req);
    if (rc != 0) {
        json_decref(resp);
        return;
    }
    json_t *arr = json_object_get(resp, "upstreams");
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        finding(d, "upstreams", "info", NULL, "no upstream LDAP directory is configured");
        json_decref(resp);
        return;
    }
    json_array_foreach(arr, i, u)
    {
        char name[128];
        const char *uname = cli_str(u, "name"), *state = cli_str(u, "state");
        const char *uri = cli_str(u, "uri"), *err = cli_str(u, "last_error");
        double last = json_number_value(json_object_get(u, "last_success"));
        double lag = json_number_value(json_object_get(u, "lag_s"));
        /* the server says how the link is protected; an older one only has the URI */
        const char *tls = cli_str(u, "tls");
        if (!tls[0])
            tls = strncmp(uri, "ldaps://", 8) == 0   ? "ldaps"
                  : strncmp(uri, "ldapi://", 8) == 0 ? "ldapi"
                                                     : "unknown";
        snprintf(name, sizeof(name), "upstream:%s", uname);
        if (strcmp(state, "down") == 0 || strcmp(state, "halted") == 0)
            finding(d, name, "fail",
                    strcmp(state, "halted") == 0
                        ? "check the upstream's deletions, then gatehouse sync run --force"
                        : "check the uri, the network, bind_dn and bind_password_file",
                    "%s is %s: %s", uri, state, err[0] ? err : "no detail");
        else if (last == 0)
            finding(d, name, "warn", "wait for the first refresh, or see gatehouse sync status",
                    "%s is %s and has never completed a sync%s%s", uri, state, err[0] ? ": " : "",
                    err);
        else
            finding(d, name, "ok", NULL, "%s is %s; last sync %.0f s ago, lag %.0f s%s%s", uri,
                    state, (double)time(NULL) - last, lag, err[0] ? "; last error: " : "", err);
        if (strcmp(tls, "ldaps") == 0 || strcmp(tls, "starttls") == 0)
            finding(d, name, "ok", NULL,
                    "%s is protected by TLS (%s, TLS 1.2 or later; the upstream's certificate "
                    "is verified)",
                    uri, strcmp(tls, "ldaps") == 0 ? "ldaps://" : "StartTLS");
        else if (strcmp(tls, "ldapi") == 0)
            finding(d, name, "ok", NULL, "%s is a local socket (ldapi)", uri);
        else if (strcmp(tls, "none") == 0)
            finding(d, name, "info", "use ldaps:// or starttls = yes unless the link is trusted",
                    "%s is plain LDAP (allowed to a loopback address only): the bind password "
                    "and user passwords cross it in clear",
                    uri);
        else
            finding(d, name, "info", "use ldaps:// or starttls = yes unless the link is trusted",
                    "%s: this server does not say whether it uses StartTLS (plain LDAP sends "
                    "passwords in clear unless starttls = yes)",
                    uri);
    }
    json_decref(resp);
}

/* ---- Argon2 cost on this machine ---- */

static void check_argon2(doctor *d, const settings *s)
{
    char out[crypto_pwhash_STRBYTES];
    struct timespec a, b;
    if (!s->have || s->opslimit == 0 || s->memlimit == 0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int rc = crypto_pwhash_str(out, "gatehouse doctor", 16, s->opslimit, (size_t)s->memlimit);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    if (rc != 0) {
        finding(d, "argon2", "fail", "lower argon2_memlimit",
                "one Argon2id hash with opslimit %llu, memlimit %llu MiB failed here (out of "
                "memory)",
                s->opslimit, s->memlimit >> 20);
        return;
    }
    double per_s = 1000.0 / ms * (double)(s->threadpool ? s->threadpool : 1);
    if (ms > 1000)
        finding(d, "argon2", "warn", "lower argon2_opslimit or argon2_memlimit",
                "one hash takes %.0f ms on this machine (opslimit %llu, memlimit %llu MiB): "
                "logins are slow, about %.1f per second",
                ms, s->opslimit, s->memlimit >> 20, per_s);
    else if (ms < 10)
        finding(d, "argon2", "warn", "raise argon2_opslimit or argon2_memlimit",
                "one hash takes %.1f ms on this machine (opslimit %llu, memlimit %llu MiB): "
                "cheap for an attacker holding a copy of the database",
                ms, s->opslimit, s->memlimit >> 20);
    else
        finding(d, "argon2", "ok", NULL,
                "one hash takes %.0f ms on this machine (opslimit %llu, memlimit %llu MiB): "
                "about %.0f logins per second with threadpool_size %llu",
                ms, s->opslimit, s->memlimit >> 20, per_s, s->threadpool);
}

/* ---- PAM and NSS: installed, configured, and pointing at this server ---- */

#ifndef GH_NSS_SOCKET_DEFAULT
#define GH_NSS_SOCKET_DEFAULT GH_INSTALLED_RUN_DIR "/nss.sock"
#endif
#ifndef GH_PAM_SOCKET_DEFAULT
#define GH_PAM_SOCKET_DEFAULT GH_INSTALLED_SOCKET
#endif
#ifndef GH_PAMLIBDIR
#define GH_PAMLIBDIR "/usr/local/lib/security"
#endif
#define NSSWITCH "/etc/nsswitch.conf"
#define PAMD "/etc/pam.d"

/* 1 when a and b name one file: the same path, or the same inode. */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (strcmp(a, b) == 0)
        return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* "This server": the one the client reached (--socket, $GATEHOUSE_SOCKET or
 * the default), else the configured socket. */
static const char *server_socket(doctor *d, const settings *s)
{
    int rc;
    gh_client *c = d->unreachable ? NULL : cli_client(d->x, &rc);
    if (c != NULL)
        return gh_client_socket_path(c);
    return s->have && s->socket[0] ? s->socket : NULL;
}

/* 1 when the nsswitch.conf line for db ("passwd", "group") names gatehouse. */
static int nsswitch_names(const char *db)
{
    char line[1024];
    int found = 0;
    size_t n = strlen(db);
    FILE *f = fopen(NSSWITCH, "r");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        char *p = line + strspn(line, " \t");
        if (strncmp(p, db, n) != 0 || p[n] != ':')
            continue;
        char *hash = strchr(p, '#');
        if (hash)
            *hash = '\0';
        char *save = NULL;
        for (char *t = strtok_r(p + n + 1, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save))
            if (strcmp(t, "gatehouse") == 0)
                found = 1;
    }
    fclose(f);
    return found;
}

static void check_nss(doctor *d, const settings *s)
{
    char srv_sock[1100], msg[2600];
    int pw = nsswitch_names("passwd"), gr = nsswitch_names("group");
    if (!pw && !gr) {
        finding(d, "nss", "info", NULL,
                "NSS does not use gatehouse (the passwd and group lines of " NSSWITCH
                " do not name it)");
        return;
    }
    if (!pw || !gr)
        finding(d, "nss", "warn", "add gatehouse to both the passwd and group lines of " NSSWITCH,
                NSSWITCH " names gatehouse for %s only: users %s", pw ? "passwd" : "group",
                pw ? "resolve without their gatehouse groups" : "do not resolve");

    /* the module as glibc finds it: the same dlopen by soname */
    void *mod = dlopen("libnss_gatehouse.so.2", RTLD_LAZY | RTLD_LOCAL);
    if (mod == NULL) {
        finding(d, "nss", "fail", "apt install libnss-gatehouse (or make install, then ldconfig)",
                NSSWITCH " names gatehouse but glibc cannot load libnss_gatehouse.so.2: %s",
                dlerror());
        return;
    }
    const char *where = "libnss_gatehouse.so.2";
    struct link_map *lm = NULL;
    if (dlinfo(mod, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name && lm->l_name[0])
        where = lm->l_name;

    /* the socket the module uses, against the server's nss_socket */
    const char *env = secure_getenv("GATEHOUSE_NSS_SOCKET");
    const char *mod_sock = env && env[0] ? env : GH_NSS_SOCKET_DEFAULT;
    const char *from = env && env[0] ? "$GATEHOUSE_NSS_SOCKET" : "its compiled-in default";
    const char *main_sock = server_socket(d, s);
    if (s->have && (main_sock == NULL || same_file(main_sock, s->socket)))
        snprintf(srv_sock, sizeof(srv_sock), "%s", s->nss_socket);
    else {
        /* started with another --socket: the server's rule, nss.sock beside it */
        const char *path = main_sock ? main_sock : "";
        const char *slash = strrchr(path, '/');
        snprintf(srv_sock, sizeof(srv_sock), "%.*snss.sock", slash ? (int)(slash - path + 1) : 0,
                 path);
    }
    int bad = 0;
    if (s->have && srv_sock[0] == '\0') {
        finding(d, "nss", "fail", "remove nss_socket = none from the configuration",
                "the server opens no NSS socket (nss_socket = none), but " NSSWITCH
                " names gatehouse");
        bad = 1;
    } else if (!same_file(mod_sock, srv_sock)) {
        snprintf(msg, sizeof(msg),
                 "set nss_socket = %s in the server's configuration (or a socket beside it), "
                 "or build the module with --with-nss-socket=%s",
                 mod_sock, srv_sock);
        finding(d, "nss", "fail", msg, "%s uses %s (%s), not this server's NSS socket %s", where,
                mod_sock, from, srv_sock);
        bad = 1;
    }

    /* and asks it, as glibc would: "not found" means the server answered */
    enum nss_status (*getpwnam_r)(const char *, struct passwd *, char *, size_t, int *);
    *(void **)&getpwnam_r = dlsym(mod, "_nss_gatehouse_getpwnam_r");
    if (getpwnam_r == NULL) {
        finding(d, "nss", "fail", "reinstall libnss-gatehouse",
                "%s has no _nss_gatehouse_getpwnam_r: not Gatehouse's module", where);
    } else {
        struct passwd pwd;
        char buf[4096];
        int err = 0;
        enum nss_status st = getpwnam_r("gatehouse-doctor-probe", &pwd, buf, sizeof(buf), &err);
        if (st == NSS_STATUS_UNAVAIL || st == NSS_STATUS_TRYAGAIN)
            finding(d, "nss", "fail",
                    bad ? "see above"
                        : "start the server, and check nss_socket and that the socket is "
                          "world-connectable",
                    "%s gets no answer on %s: users from gatehouse do not resolve", where,
                    mod_sock);
        else if (!bad)
            finding(d, "nss", "ok", NULL, "%s (for %s) answers on %s, this server's NSS socket",
                    where,
                    pw && gr ? "passwd and group"
                    : pw     ? "passwd"
                             : "group",
                    mod_sock);
    }
    dlclose(mod);
}

/* The directory Linux-PAM takes a module without a path from: where its
 * own pam_unix.so lives. */
static int pam_dir(char *out, size_t len)
{
    static const char *const pats[] = {"/lib/*/security",     "/usr/lib/*/security",
                                       "/lib64/security",     "/lib/security",
                                       "/usr/lib64/security", "/usr/lib/security"};
    for (size_t i = 0; i < sizeof(pats) / sizeof(pats[0]); i++) {
        glob_t g;
        if (glob(pats[i], GLOB_ONLYDIR, NULL, &g) != 0)
            continue;
        for (size_t k = 0; k < g.gl_pathc; k++) {
            char probe[PATH_MAX];
            snprintf(probe, sizeof(probe), "%s/pam_unix.so", g.gl_pathv[k]);
            if (access(probe, F_OK) == 0) {
                snprintf(out, len, "%s", g.gl_pathv[k]);
                globfree(&g);
                return 0;
            }
        }
        globfree(&g);
    }
    return -1;
}

#define PAM_REFS 16
typedef struct pam_ref {
    char module[512], socket[512], files[512];
} pam_ref;

/* Parses one pam.d line naming pam_gatehouse ("type control module args",
 * control possibly "[a=b c=d]"); 0 and the module and its socket= on a hit. */
static int pam_line(char *line, char *module, size_t mlen, char *sock, size_t slen)
{
    char *save = NULL, *t;
    if (strstr(line, "pam_gatehouse") == NULL)
        return -1;
    t = strtok_r(line, " \t\n", &save); /* type, maybe -type */
    if (t == NULL || t[0] == '#' || t[0] == '@')
        return -1;
    t = strtok_r(NULL, " \t\n", &save); /* control */
    if (t && t[0] == '[')
        while (t && strchr(t, ']') == NULL)
            t = strtok_r(NULL, " \t\n", &save);
    t = strtok_r(NULL, " \t\n", &save); /* module */
    if (t == NULL || strstr(t, "pam_gatehouse") == NULL)
        return -1;
    snprintf(module, mlen, "%s", t);
    snprintf(sock, slen, "%s", GH_PAM_SOCKET_DEFAULT);
    while ((t = strtok_r(NULL, " \t\n", &save)) != NULL)
        if (strncmp(t, "socket=", 7) == 0)
            snprintf(sock, slen, "%s", t + 7);
    return 0;
}

static void check_pam(doctor *d, const settings *s)
{
    pam_ref refs[PAM_REFS];
    size_t nrefs = 0;
    char line[2048], module[512], sock[512];
    DIR *dir = opendir(PAMD);
    struct dirent *e;

    while (dir && (e = readdir(dir)) != NULL) {
        char path[PATH_MAX];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), PAMD "/%s", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        while (fgets(line, sizeof(line), f)) {
            if (pam_line(line, module, sizeof(module), sock, sizeof(sock)) != 0)
                continue;
            size_t i;
            for (i = 0; i < nrefs; i++)
                if (strcmp(refs[i].module, module) == 0 && strcmp(refs[i].socket, sock) == 0)
                    break;
            if (i == nrefs) {
                if (nrefs == PAM_REFS)
                    continue;
                snprintf(refs[i].module, sizeof(refs[i].module), "%s", module);
                snprintf(refs[i].socket, sizeof(refs[i].socket), "%s", sock);
                refs[i].files[0] = '\0';
                nrefs++;
            }
            size_t used = strlen(refs[i].files);
            if (strstr(refs[i].files, e->d_name) == NULL && used < sizeof(refs[i].files) - 1)
                snprintf(refs[i].files + used, sizeof(refs[i].files) - used, "%s%s",
                         used ? ", " : "", e->d_name);
        }
        fclose(f);
    }
    if (dir)
        closedir(dir);
    if (nrefs == 0) {
        finding(d, "pam", "info", NULL, "PAM does not use pam_gatehouse (no file in " PAMD ")");
        return;
    }

    const char *srv_sock = server_socket(d, s);
    char sysdir[PATH_MAX] = "", modpath[PATH_MAX + 600], fix[3 * PATH_MAX];
    pam_dir(sysdir, sizeof(sysdir));
    for (size_t i = 0; i < nrefs; i++) {
        const pam_ref *r = &refs[i];
        int bad = 0;
        int mlen = (int)strnlen(r->module, sizeof(r->module));
        if (r->module[0] == '/')
            snprintf(modpath, sizeof(modpath), "%.*s", mlen, r->module);
        else
            snprintf(modpath, sizeof(modpath), "%s/%.*s", sysdir[0] ? sysdir : "?", mlen,
                     r->module);
        if (access(modpath, R_OK) != 0) {
            char local[PATH_MAX];
            snprintf(local, sizeof(local), "%s/pam_gatehouse.so", GH_PAMLIBDIR);
            if (r->module[0] != '/' && access(local, R_OK) == 0)
                snprintf(fix, sizeof(fix),
                         "make install put it in %s, where Linux-PAM does not look: configure "
                         "--with-pamlibdir=%s, or name %s in %s",
                         GH_PAMLIBDIR, sysdir, local, r->files);
            else
                snprintf(fix, sizeof(fix), "apt install libpam-gatehouse");
            finding(d, "pam", "fail", fix, "%s, named in " PAMD " (%s), is not installed: no %s",
                    r->module, r->files, modpath);
            bad = 1;
        }
        if (srv_sock == NULL || !same_file(r->socket, srv_sock)) {
            snprintf(fix, sizeof(fix),
                     "give socket=%s to pam_gatehouse in %s, or run the server on %s",
                     srv_sock ? srv_sock : "<the server's socket>", r->files, r->socket);
            finding(d, "pam", "fail", fix,
                    "pam_gatehouse in %s uses %s, not this server's socket %s", r->files, r->socket,
                    srv_sock ? srv_sock : "(unknown)");
            continue;
        }
        gh_client *c = NULL;
        int protocol = 0, rc = gh_client_new(&c, r->socket);
        if (rc == 0)
            rc = gh_ping(c, &protocol);
        if (rc != 0)
            finding(d, "pam", "fail", "start the server, and check socket_mode",
                    "pam_gatehouse in %s gets no answer on %s: %s", r->files, r->socket,
                    c ? gh_client_error_message(c) : "out of memory");
        else if (!bad)
            finding(d, "pam", "ok", NULL, "pam_gatehouse (%s) in %s uses this server on %s",
                    modpath, r->files, r->socket);
        gh_client_free(c);
    }
}

static void check_pam_nss(doctor *d, const settings *s)
{
    check_nss(d, s);
    check_pam(d, s);
}

static void print_human(doctor *d)
{
    size_t i;
    json_t *o;
    json_array_foreach(d->checks, i, o)
    {
        const char *st = cli_str(o, "status");
        printf("%-5s %-14s %s\n", strcmp(st, "ok") == 0 ? "ok" : st, cli_str(o, "check"),
               cli_str(o, "message"));
        if (json_object_get(o, "fix"))
            printf("      %-14s fix: %s\n", "", cli_str(o, "fix"));
    }
    printf("%d failed, %d warnings\n", d->fails, d->warns);
}

int cli_doctor(cli *x)
{
    doctor d = {.x = x, .checks = json_array()};
    settings s = {0};
    json_t *stats = NULL;
    int rc;

    if (sodium_init() < 0)
        return cli_fail(CLI_EXIT_SERVER, "libsodium failed to initialize");
    check_config(&d, &s);
    if (check_socket(&d, &s, &stats) == 0 && stats != NULL) {
        check_store(&d, &s, stats);
        check_upstreams(&d);
    }
    check_state_dir(&d, &s);
    check_argon2(&d, &s);
    check_pam_nss(&d, &s);
    if (x->json) {
        json_t *o = json_pack("{s:b, s:i, s:i, s:O}", "ok", d.fails == 0, "failed", d.fails,
                              "warnings", d.warns, "checks", d.checks);
        cli_print_json(o);
        json_decref(o);
    } else {
        print_human(&d);
    }
    rc = d.unreachable ? CLI_EXIT_UNREACHABLE : d.fails ? CLI_EXIT_SERVER : CLI_EXIT_OK;
    json_decref(stats);
    json_decref(d.checks);
    return rc;
}
