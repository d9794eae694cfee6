/*
 * config.c: embedded defaults plus an optional INI file parsed by inih.
 *
 * inih is driven through ini_parse_stream with our own line reader so that
 * every error can name file:line. The table below is the one list of [server]
 * keys: conf/gatehoused.conf documents the same keys and must stay in step.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>
#include <sodium.h>

#include "schema/confkey.h"
#include "schema/error.h"
#include "schema/log.h"
#include "server/config.h"
#include "sync/sync.h"

#define OFF(f) offsetof(gh_config, f)
static const gh_confkey keys[] = {
    {"state_dir", GH_CONFKEY_STR, OFF(state_dir), 0, 0},
    {"socket", GH_CONFKEY_STR, OFF(socket_path), 0, 0},
    {"socket_mode", GH_CONFKEY_MODE, OFF(socket_mode), 0, 0777},
    {"tcp_listen", GH_CONFKEY_STR, OFF(tcp_listen), 0, 0},
    {"tcp_allow_non_loopback", GH_CONFKEY_BOOL, OFF(tcp_any), 0, 1},
    {"tcp_tls", GH_CONFKEY_BOOL, OFF(tcp_tls), 0, 1},
    {"admin_unix_group", GH_CONFKEY_STR, OFF(admin_unix_group), 0, 0},
    {"admin_group", GH_CONFKEY_STR, OFF(admin_group), 0, 0},
    {"log_level", GH_CONFKEY_STR, OFF(log_level), 0, 0},
    {"log_syslog", GH_CONFKEY_BOOL, OFF(log_syslog), 0, 1},
    {"max_request", GH_CONFKEY_SIZE, OFF(max_request), 256, 64u << 20},
    {"max_output", GH_CONFKEY_SIZE, OFF(max_output), 4096, 1u << 30},
    {"idle_timeout", GH_CONFKEY_UINT, OFF(idle_timeout), 0, 86400 * 7},
    {"max_connections", GH_CONFKEY_UINT, OFF(max_connections), 1, 1000000},
    {"argon2_opslimit", GH_CONFKEY_U64, OFF(argon2_opslimit), crypto_pwhash_OPSLIMIT_MIN, 64},
    {"argon2_memlimit", GH_CONFKEY_SIZE, OFF(argon2_memlimit), crypto_pwhash_MEMLIMIT_MIN,
     4ull << 30},
    {"threadpool_size", GH_CONFKEY_UINT, OFF(threadpool_size), 1, 128},
    {"argon2_queue_max", GH_CONFKEY_UINT, OFF(argon2_queue_max), 1, 100000},
    {"password_min_length", GH_CONFKEY_UINT, OFF(password_min_length), 1, 1024},
    {"token_ttl", GH_CONFKEY_UINT, OFF(token_ttl), 1, 86400 * 365},
    {"lockout_threshold", GH_CONFKEY_UINT, OFF(lockout_threshold), 1, 1000000},
    {"lockout_base_delay", GH_CONFKEY_UINT, OFF(lockout_base_delay), 1, 86400},
    {"lockout_max_delay", GH_CONFKEY_UINT, OFF(lockout_max_delay), 1, 86400 * 30},
    {"peer_failure_threshold", GH_CONFKEY_UINT, OFF(peer_failure_threshold), 1, 1000000},
    {"map_size", GH_CONFKEY_SIZE, OFF(map_size), 1u << 20, 1ull << 44},
    {"map_max", GH_CONFKEY_SIZE, OFF(map_max), 1u << 20, 1ull << 44},
    {"uid_min", GH_CONFKEY_UINT, OFF(uid_min), 1, 2000000000},
    {"write_batch_max", GH_CONFKEY_UINT, OFF(write_batch_max), 1, 100000},
    {"authz_cache_size", GH_CONFKEY_SIZE, OFF(authz_cache_size), 64u << 10, 1ull << 40},
    {"argon2_nice", GH_CONFKEY_UINT, OFF(argon2_nice), 0, 19},
    /* peer classes and limits (docs/SECURITY.md) */
    {"service_unix_group", GH_CONFKEY_STR, OFF(service_unix_group), 0, 0},
    {"service_group", GH_CONFKEY_STR, OFF(service_group), 0, 0},
    {"frontend_unix_group", GH_CONFKEY_STR, OFF(frontend_unix_group), 0, 0},
    {"max_request_elements", GH_CONFKEY_SIZE, OFF(max_request_elements), 16, 1u << 24},
    {"max_held_bytes", GH_CONFKEY_SIZE, OFF(max_held_bytes), 4096, 1u << 30},
    {"max_connections_per_peer", GH_CONFKEY_UINT, OFF(max_connections_per_peer), 0, 1000000},
    {"auth_max_inflight_per_login", GH_CONFKEY_UINT, OFF(auth_max_inflight_per_login), 1, 100000},
    {"argon2_memlimit_max", GH_CONFKEY_SIZE, OFF(argon2_memlimit_max), crypto_pwhash_MEMLIMIT_MIN,
     4ull << 30},
    {"argon2_opslimit_max", GH_CONFKEY_U64, OFF(argon2_opslimit_max), crypto_pwhash_OPSLIMIT_MIN,
     64},
    {"audit_retention", GH_CONFKEY_UINT, OFF(audit_retention), 0, 4000000000u},
    /* issue 11: loops serving connections (0: one per CPU) */
    {"loop_threads", GH_CONFKEY_UINT, OFF(loop_threads), 0, 64},
    /* issue 11: data file pages kept mapped (0: never trimmed) */
    {"map_resident_max", GH_CONFKEY_SIZE, OFF(map_resident_max), 0, 1ull << 44},
    {"metrics_listen", GH_CONFKEY_STR, OFF(metrics_listen), 0, 0},
    {"metrics_allow_non_loopback", GH_CONFKEY_BOOL, OFF(metrics_any), 0, 1},
    {"ldap_listen", GH_CONFKEY_STR, OFF(ldap_listen), 0, 0},
    {"ldap_allow_non_loopback", GH_CONFKEY_BOOL, OFF(ldap_any), 0, 1},
    {"ldap_suffix", GH_CONFKEY_STR, OFF(ldap_suffix), 0, 0},
    {"ldap_bind_by_uid", GH_CONFKEY_BOOL, OFF(ldap_bind_by_uid), 0, 1},
    {"ldap_max_scan", GH_CONFKEY_SIZE, OFF(ldap_max_scan), 1, 1ull << 32},
    {"ldap_max_message", GH_CONFKEY_SIZE, OFF(ldap_max_message), 1024, 64u << 20},
    {"tls_cert_file", GH_CONFKEY_STR, OFF(tls_cert_file), 0, 0},
    {"tls_key_file", GH_CONFKEY_STR, OFF(tls_key_file), 0, 0},
    {"tls_ca_file", GH_CONFKEY_STR, OFF(tls_ca_file), 0, 0},
    {"home_template", GH_CONFKEY_STR, OFF(home_template), 0, 0},
    {"default_shell", GH_CONFKEY_STR, OFF(default_shell), 0, 0},
    {"gid_min", GH_CONFKEY_UINT, OFF(gid_min), 1, 2000000000},
    {"user_private_groups", GH_CONFKEY_BOOL, OFF(user_private_groups), 0, 1},
    {"nss_enumerate", GH_CONFKEY_BOOL, OFF(nss_enumerate), 0, 1},
    {"nss_socket", GH_CONFKEY_STR, OFF(nss_socket), 0, 0},
    {NULL, GH_CONFKEY_STR, 0, 0, 0},
};

static int set_str(char **dst, const char *v)
{
    char *s = strdup(v);
    if (s == NULL)
        return GH_ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

int gh_config_defaults(gh_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    if (set_str(&cfg->state_dir, "./var") || set_str(&cfg->socket_path, "") ||
        set_str(&cfg->tcp_listen, "") || set_str(&cfg->admin_unix_group, "") ||
        set_str(&cfg->admin_group, "gatehouse-admins") || set_str(&cfg->log_level, "info") ||
        set_str(&cfg->service_unix_group, "") ||
        set_str(&cfg->service_group, "gatehouse-services") ||
        set_str(&cfg->frontend_unix_group, "") || set_str(&cfg->metrics_listen, ""))
        return GH_ENOMEM;
    cfg->max_request_elements = 16384;
    cfg->max_held_bytes = 1u << 20;
    cfg->max_connections_per_peer = 64;
    cfg->auth_max_inflight_per_login = 4;
    cfg->socket_mode = 0660;
    cfg->max_request = 65536;
    cfg->max_output = 1u << 20;
    cfg->idle_timeout = 300;
    cfg->max_connections = 1024;
    cfg->argon2_opslimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
    cfg->argon2_memlimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
    cfg->threadpool_size = 2;
    cfg->argon2_queue_max = 64;
    cfg->password_min_length = 8;
    cfg->token_ttl = 3600;
    cfg->lockout_threshold = 5;
    cfg->lockout_base_delay = 1;
    cfg->lockout_max_delay = 300;
    cfg->peer_failure_threshold = 20;
    cfg->map_size = 64u << 20;
    cfg->map_max = 16ull << 30;
    cfg->uid_min = 10000;
    cfg->write_batch_max = 256;
    cfg->authz_cache_size = 256u << 20;
    cfg->argon2_nice = 19;
    cfg->argon2_memlimit_max = 256u << 20;
    cfg->argon2_opslimit_max = 8;
    cfg->audit_retention = 90 * 86400;
    cfg->map_resident_max = 0; /* off: mapped file pages are page cache, not ours */
    if (set_str(&cfg->home_template, "/home/%u") || set_str(&cfg->default_shell, "/bin/sh") ||
        set_str(&cfg->nss_socket, ""))
        return GH_ENOMEM;
    cfg->gid_min = 1000;
    cfg->user_private_groups = 1;
    cfg->nss_enumerate = 0;
    return 0;
}

/* One [server] key through the engine shared with [upstream:NAME]
 * (schema/confkey.h); log_level is checked first. */
static int set_key(gh_config *cfg, const gh_confkey *k, const char *v, char *msg, size_t msglen)
{
    if (strcmp(k->name, "log_level") == 0 && gh_log_level_parse(v) < 0) {
        snprintf(msg, msglen, "%s must be error, warn, info or debug", k->name);
        return GH_EINVAL;
    }
    return gh_confkey_set(k, cfg, v, msg, msglen);
}

struct parse_state {
    gh_config *cfg;
    const char *path;
    FILE *fp;
    int line;
    int failed;
    int fail_line; /* line of the first error our handler found */
    char msg[512];
};

static char *reader(char *str, int num, void *stream)
{
    struct parse_state *ps = stream;
    char *r = fgets(str, num, ps->fp);
    if (r != NULL)
        ps->line++;
    return r;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct parse_state *ps = user;
    char msg[400] = "";
    int rc;

    if (section[0] == '\0' || strcmp(section, "server") == 0) {
        const gh_confkey *k = gh_confkey_find(keys, name);
        if (k != NULL) {
            rc = set_key(ps->cfg, k, value, msg, sizeof(msg));
            goto done;
        }
        snprintf(msg, sizeof(msg), "unknown key '%s' in [server]", name);
        rc = GH_EINVAL;
    } else if (strncmp(section, "upstream:", 9) == 0) {
        rc = gh_sync_config_set(&ps->cfg->sync, ps->path, ps->line, section + 9, name, value, msg,
                                sizeof(msg));
    } else {
        snprintf(msg, sizeof(msg), "unknown section [%s]", section);
        rc = GH_EINVAL;
    }
done:
    if (rc != 0) {
        if (msg[0] == '\0')
            snprintf(msg, sizeof(msg), "%s", gh_strerror(rc));
        if (!ps->failed) {
            snprintf(ps->msg, sizeof(ps->msg), "%d: %s", ps->line, msg);
            ps->fail_line = ps->line;
        }
        ps->failed = 1;
        return 0; /* inih stops at the first error only if told; we record the first */
    }
    return 1;
}

int gh_config_load(gh_config *cfg, const char *path, char *err, size_t errlen)
{
    struct parse_state ps = {.cfg = cfg, .path = path};
    int rc = 0;

    ps.fp = fopen(path, "r");
    if (ps.fp == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return GH_EINVAL;
    }
    /* inih returns the first line it could not parse; report whichever
     * error, its or ours, comes first in the file */
    int r = ini_parse_stream(reader, &ps, handler, &ps);
    if (r != 0 && (!ps.failed || (r > 0 && r < ps.fail_line))) {
        snprintf(err, errlen, "%s:%d: syntax error", path, r > 0 ? r : ps.line);
        rc = GH_EINVAL;
    } else if (ps.failed) {
        snprintf(err, errlen, "%s:%s", path, ps.msg);
        rc = GH_EINVAL;
    }
    fclose(ps.fp);
    return rc;
}

int gh_config_finish(gh_config *cfg, char *err, size_t errlen)
{
    if (cfg->state_dir[0] == '\0') {
        snprintf(err, errlen, "state_dir must not be empty");
        return GH_EINVAL;
    }
    if (cfg->socket_path[0] == '\0') {
        char *p = NULL;
        if (asprintf(&p, "%s/gatehoused.sock", cfg->state_dir) < 0)
            return GH_ENOMEM;
        free(cfg->socket_path);
        cfg->socket_path = p;
    }
    if (cfg->nss_socket[0] == '\0') {
        const char *slash = strrchr(cfg->socket_path, '/');
        char *p = NULL;
        if (asprintf(&p, "%.*snss.sock", slash ? (int)(slash - cfg->socket_path + 1) : 0,
                     cfg->socket_path) < 0)
            return GH_ENOMEM;
        free(cfg->nss_socket);
        cfg->nss_socket = p;
    } else if (strcmp(cfg->nss_socket, "none") == 0) {
        cfg->nss_socket[0] = '\0';
    }
    if (cfg->home_template[0] != '/' || cfg->default_shell[0] != '/' ||
        strchr(cfg->home_template, ':') || strchr(cfg->default_shell, ':')) {
        snprintf(err, errlen, "home_template and default_shell must be absolute paths without ':'");
        return GH_EINVAL;
    }
    if (cfg->map_max < cfg->map_size) {
        snprintf(err, errlen, "map_max (%zu) is smaller than map_size (%zu)", cfg->map_max,
                 cfg->map_size);
        return GH_EINVAL;
    }
    /* The maxima never refuse what this server itself writes. */
    if (cfg->argon2_memlimit_max < cfg->argon2_memlimit)
        cfg->argon2_memlimit_max = cfg->argon2_memlimit;
    if (cfg->argon2_opslimit_max < cfg->argon2_opslimit)
        cfg->argon2_opslimit_max = cfg->argon2_opslimit;
    if (cfg->lockout_max_delay < cfg->lockout_base_delay) {
        snprintf(err, errlen, "lockout_max_delay is smaller than lockout_base_delay");
        return GH_EINVAL;
    }
    return gh_sync_config_finish(&cfg->sync, err, errlen);
}

void gh_config_free(gh_config *cfg)
{
    free(cfg->state_dir);
    free(cfg->socket_path);
    free(cfg->tcp_listen);
    free(cfg->admin_unix_group);
    free(cfg->admin_group);
    free(cfg->log_level);
    free(cfg->service_unix_group);
    free(cfg->service_group);
    free(cfg->frontend_unix_group);
    free(cfg->metrics_listen);
    free(cfg->ldap_listen);
    free(cfg->ldap_suffix);
    free(cfg->tls_cert_file);
    free(cfg->tls_key_file);
    free(cfg->tls_ca_file);
    free(cfg->home_template);
    free(cfg->default_shell);
    free(cfg->nss_socket);
    gh_sync_config_free(&cfg->sync);
    memset(cfg, 0, sizeof(*cfg));
}
