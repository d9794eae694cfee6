/*
 * cli-int.h: what the files of the gatehouse CLI share.
 *
 * cli.c parses the command line into a cli struct (global options, the
 * command, its options and positional arguments), runs the command and maps
 * the outcome to an exit code. Each cli_*.c file implements the commands of
 * one noun group with the helpers declared here. A command returns an exit
 * code (CLI_EXIT_*) and has already printed what went wrong: helpers that
 * fail print the error themselves, so callers only propagate the code.
 */
#ifndef GH_CLI_INT_H
#define GH_CLI_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "clients/gatehouse.h"

/* Exit codes: a contract with scripts, documented in gatehouse(1). */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_DENIED = 1,      /* check denied, not found, bad credentials, declined */
    CLI_EXIT_USAGE = 2,       /* bad command line */
    CLI_EXIT_UNREACHABLE = 3, /* no server at the socket, or it went away */
    CLI_EXIT_PERM = 4,        /* permission_denied */
    CLI_EXIT_SERVER = 5       /* any other error */
};

#define CLI_MAX_OPTS 64
#define CLI_MAX_POS 16
#define CLI_PASSWORD_MAX 1024
#define CLI_PAGE 1000 /* list and dump page size: the protocol's maximum */

typedef struct cli cli;

typedef struct cli_cmd {
    const char *noun;
    const char *verb; /* NULL when the noun is the whole command (grant, check) */
    int (*run)(cli *x);
    const char *args;    /* synopsis after the command words */
    const char *summary; /* one line */
    const char *help;    /* option descriptions, or NULL */
    const char *opts;    /* accepted options: "uid= no-password" ('=' takes a value) */
    int min_args, max_args;
} cli_cmd;

struct cli {
    const char *socket;
    int json;
    int yes;
    gh_client *client;
    const cli_cmd *cmd;

    int npos;
    const char *pos[CLI_MAX_POS];
    size_t nopts;
    struct {
        const char *name;
        const char *value; /* "" for a flag */
    } opts[CLI_MAX_OPTS];

    int bad_arg; /* a value could not go into a request (not UTF-8) */
};

/* ---- cli.c: options, calls, output ---- */

const char *cli_opt(const cli *x, const char *name);
int cli_flag(const cli *x, const char *name);
/* Every value of a repeatable option, in order; returns how many. */
size_t cli_opt_all(const cli *x, const char *name, const char **vals, size_t max);
/* Parses an integer option; 0 when absent (*present = 0), CLI_EXIT_USAGE. */
int cli_opt_int(cli *x, const char *name, long long min, long long max, long long *out,
                int *present);
int cli_parse_int(const char *s, long long min, long long max, long long *out);

__attribute__((format(printf, 2, 3))) int cli_usage(const cli *x, const char *fmt, ...);
__attribute__((format(printf, 2, 3))) int cli_fail(int code, const char *fmt, ...);

gh_client *cli_client(cli *x, int *rc);
/* {"op": op} */
json_t *cli_req(const char *op);
/* Sets key to a string (not UTF-8: marks x->bad_arg); NULL value: no-op. */
void cli_set_str(cli *x, json_t *obj, const char *key, const char *value);
void cli_set_int(json_t *obj, const char *key, long long v);
/* Sends req (not stolen) and waits. 0 with *resp set, or an exit code after
 * printing the error (in --json mode the server's error object goes to
 * stdout too). */
int cli_call(cli *x, json_t *req, json_t **resp);
/* Exit code for a library status. */
int cli_exit_code(int status);
/* Prints "gatehouse: CODE: MESSAGE" for the client's last error; returns
 * the exit code. */
int cli_report(cli *x, int status);
/* Prints the client's error and, in --json mode, resp to stdout. */
int cli_report_response(cli *x, int status, json_t *resp);

/* --json output: v indented, then a newline. The "id" member is dropped. */
void cli_print_json(json_t *v);
/* Prints the response when --json is set; returns 1 if it did. */
int cli_json_out(const cli *x, json_t *resp);

/* Strings for human output: values of members, "" when absent or null. */
const char *cli_str(json_t *obj, const char *key);
/* Integer or string member formatted into buf. */
const char *cli_num(json_t *obj, const char *key, char *buf, size_t len);
/* Unix seconds as "2026-01-02 15:04:05Z" ("-" for 0 or absent). */
const char *cli_time(json_t *obj, const char *key, char *buf, size_t len);
/* Array of strings joined with ", ". Caller frees. */
char *cli_join(json_t *arr);

/* Vertical "key: value" listing with aligned values. */
void cli_kv(const char *key, const char *value);
/* Any JSON value as an indented readable tree (for explain, stats). */
void cli_print_tree(json_t *v, int indent);

typedef struct cli_table cli_table;
cli_table *cli_table_new(size_t ncols, const char *const *headers);
/* ncols cells; NULL is printed as "-". */
void cli_table_row(cli_table *t, const char *const *cells);
void cli_table_print(cli_table *t, FILE *f);
void cli_table_free(cli_table *t);

/* Wipes a jansson string that held a secret (before json_decref). */
void cli_wipe_json_string(json_t *s);
void cli_wipe(void *p, size_t n);

/* ---- cli_term.c: the terminal ---- */

/* Reads a password: --password-stdin reads one line from stdin, otherwise
 * the terminal is asked without echo (twice when confirm). 0 or an exit code
 * (after printing why). */
int cli_password(cli *x, const char *prompt, int confirm, char *buf, size_t len);
/* Asks a yes/no question on the terminal unless --yes. 0 to proceed, or an
 * exit code: CLI_EXIT_DENIED when declined, CLI_EXIT_USAGE without terminal. */
__attribute__((format(printf, 2, 3))) int cli_confirm(const cli *x, const char *fmt, ...);

typedef struct cli_progress {
    int active;      /* stderr is a terminal */
    uint64_t total;  /* bytes, 0 = unknown */
    int64_t last_ms; /* last drawn */
} cli_progress;
void cli_progress_start(cli_progress *p, uint64_t total);
void cli_progress_update(cli_progress *p, uint64_t done, uint64_t records, int force);
void cli_progress_end(cli_progress *p);

/* ---- commands ---- */

int cli_user_add(cli *x);
int cli_user_get(cli *x);
int cli_user_list(cli *x);
int cli_user_set(cli *x);
int cli_user_passwd(cli *x);
int cli_user_state(cli *x); /* lock, unlock, disable, enable */
int cli_user_del(cli *x);
int cli_user_sessions(cli *x);   /* session.list */
int cli_user_logout_all(cli *x); /* session.revoke of every session */
int cli_group_add(cli *x);
int cli_group_get(cli *x);
int cli_group_list(cli *x);
int cli_group_del(cli *x);
int cli_group_member(cli *x); /* add-member, remove-member */

int cli_role_add(cli *x);
int cli_role_get(cli *x);
int cli_role_list(cli *x);
int cli_role_set(cli *x);
int cli_role_del(cli *x);
int cli_role_rule(cli *x); /* allow, deny */
int cli_role_inherit(cli *x);
int cli_grant(cli *x);
int cli_revoke(cli *x);
int cli_bindings(cli *x);
int cli_check(cli *x);
int cli_hbac_test(cli *x); /* clients/cli_os.c */
int cli_perms(cli *x);
int cli_who_can(cli *x);

int cli_auth(cli *x);
int cli_whoami(cli *x);
int cli_logout(cli *x);
int cli_ping(cli *x);
int cli_stats(cli *x);
int cli_audit(cli *x);
int cli_sync_status(cli *x);
int cli_sync_run(cli *x);

int cli_import(cli *x);
int cli_backup(cli *x); /* cli_backup.c */
int cli_doctor(cli *x); /* cli_doctor.c */
int cli_export(cli *x);

/* ---- cli_ldif.c ---- */

typedef struct cli_ldif_opts {
    const char *base_dn;
    const char *home_base;
    int with_verifiers;
    int rfc2307; /* posixGroup as the structural class (nis.schema) */
    int containers;
} cli_ldif_opts;

/* Writes users, groups (dump records, groups with "members") as LDIF. */
int cli_ldif_write(FILE *f, const cli_ldif_opts *o, json_t *users, json_t *groups);

/* Reads LDIF entries from f into import records (users, groups, then
 * members), each with "_line" (the entry's first line). Entries that map to
 * nothing are reported through *skipped. 0 or an exit code. */
int cli_ldif_read(FILE *f, const char *name, json_t **records, size_t *skipped);

#endif
