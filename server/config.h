/*
 * config.h: gatehoused's settings. Defaults are embedded (the server runs with
 * no file at all); a file given by --config is INI, parsed by inih. Unknown
 * keys and bad values are refused with file:line. Sections: [server] (also
 * accepted with no section header) and [upstream:NAME], whose keys belong to
 * the sync module (gh_sync_config_set in sync/sync.h).
 */
#ifndef GH_CONFIG_H
#define GH_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "sync/sync.h"

typedef struct gh_config {
    char *state_dir;        /* default "./var" */
    char *socket_path;      /* default "<state_dir>/gatehoused.sock" */
    unsigned socket_mode;   /* default 0660 */
    char *tcp_listen;       /* "" = off; "127.0.0.1:7636" */
    int tcp_any;            /* allow a non-loopback tcp_listen */
    int tcp_tls;            /* TLS on tcp_listen (tls_cert_file, tls_key_file) */
    char *admin_unix_group; /* OS group whose members are admin on the socket ("" none) */
    char *admin_group;      /* Gatehouse group whose tokens are admin ("gatehouse-admins") */
    char *log_level;        /* error|warn|info|debug */
    int log_syslog;

    size_t max_request;       /* bytes per request line, 65536 */
    size_t max_output;        /* queued reply bytes before reads pause, 1 MiB */
    unsigned idle_timeout;    /* seconds, 300; 0 = none */
    unsigned max_connections; /* 1024 */

    uint64_t argon2_opslimit;        /* crypto_pwhash_OPSLIMIT_INTERACTIVE */
    size_t argon2_memlimit;          /* crypto_pwhash_MEMLIMIT_INTERACTIVE */
    unsigned threadpool_size;        /* libuv pool (UV_THREADPOOL_SIZE), default 2 */
    unsigned argon2_queue_max;       /* jobs queued or running before rate_limited, 64 */
    unsigned password_min_length;    /* 8 */
    unsigned token_ttl;              /* seconds, 3600 */
    unsigned lockout_threshold;      /* consecutive failures before delays, 5 */
    unsigned lockout_base_delay;     /* seconds, 1 */
    unsigned lockout_max_delay;      /* seconds, 300 */
    unsigned peer_failure_threshold; /* failures per peer per window, 20 */

    size_t map_size;          /* initial LMDB map, 64 MiB */
    size_t map_max;           /* growth limit, 16 GiB */
    uint32_t uid_min;         /* first auto uid/gid, 10000 */
    unsigned write_batch_max; /* ops per group commit, 256 */
    size_t authz_cache_size;  /* bytes of compiled permission sets kept, 256 MiB */
    unsigned argon2_nice;     /* nice value of Argon2 pool threads, 19 */
    /* issue 10 (sessions, bounds): verifiers given or imported must stay within
     * these costs; the change log keeps audit_retention seconds (0: forever). */
    size_t argon2_memlimit_max;   /* bytes, 256 MiB (raised to argon2_memlimit) */
    uint64_t argon2_opslimit_max; /* passes, 8 (raised to argon2_opslimit) */
    unsigned audit_retention;     /* seconds, 90 days */

    /* peer classes and limits (docs/SECURITY.md) */
    char *service_unix_group;          /* OS group of service peers on the socket ("" none) */
    char *service_group;               /* Gatehouse group whose tokens are service peers */
    char *frontend_unix_group;         /* OS group of trusted front-ends (may pass "client") */
    size_t max_request_elements;       /* JSON values per request, 16384 */
    size_t max_held_bytes;             /* request bytes held behind writes per connection, 1 MiB */
    unsigned max_connections_per_peer; /* per UNIX uid or TCP address (admins exempt), 64 */
    unsigned auth_max_inflight_per_login; /* password checks of one login at once, 4 */

    /* issue 11: event loops (threads) serving connections; 0 = one per CPU
     * (at most 64), 1 = a single loop on the main thread */
    unsigned loop_threads;
    /* issue 11 (RSS): data file pages kept mapped beyond start-up's, checked
     * each second and after each commit, trimmed above it (server/memtrim.c);
     * 0 = never trim */
    size_t map_resident_max; /* 64 MiB */
    /* Prometheus metrics (server/metrics.c) */
    char *metrics_listen; /* "" = off; "127.0.0.1:9464" */
    int metrics_any;      /* allow a non-loopback metrics_listen */
    /* LDAP front-end and TLS (server/ldap_conn.c, server/tls.c); NULL/0 = default */
    char *ldap_listen;       /* NULL: "ldapi://" (<state_dir>/ldapi); "": off */
    int ldap_any;            /* ldap_allow_non_loopback */
    char *ldap_suffix;       /* "dc=gatehouse" */
    int ldap_bind_by_uid;    /* a bare login as bind DN */
    size_t ldap_max_scan;    /* 100000 */
    size_t ldap_max_message; /* 1 MiB */
    char *tls_cert_file, *tls_key_file, *tls_ca_file;
    /* OS login (PAM and NSS, docs/OS-LOGIN.md) */
    char *home_template;     /* "/home/%u" (%u login, %U uid) */
    char *default_shell;     /* "/bin/sh" */
    uint32_t gid_min;        /* NSS serves no group below it, 1000 (users: uid_min) */
    int user_private_groups; /* a user whose gid names no group gets one of its own, yes */
    int nss_enumerate;       /* nss.enumerate answers (getent passwd), no */
    char *nss_socket;        /* "" = nss.sock next to socket; "none" = off */

    gh_sync_config sync; /* the [upstream:NAME] sections, the sync module's */
} gh_config;

/* Fills every default. */
int gh_config_defaults(gh_config *cfg);
/* Parses path over the defaults already in cfg. On error writes
 * "path:line: message" to err and returns GH_EINVAL. */
int gh_config_load(gh_config *cfg, const char *path, char *err, size_t errlen);
/* Cross-field checks and derived defaults (socket under state dir). */
int gh_config_finish(gh_config *cfg, char *err, size_t errlen);
void gh_config_free(gh_config *cfg);

#endif
