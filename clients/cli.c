/*
 * cli.c: the gatehouse provisioning CLI: command table, argument parsing,
 * help, and the helpers every command uses to call the server and print.
 *
 * Command words mirror the protocol (NOUN VERB), options are long options
 * accepted anywhere after the command (and the global ones anywhere), and
 * every outcome maps to one of the documented exit codes. Before changing a
 * command name, an option or an exit code, know that scripts depend on them:
 * gatehouse(1) and docs/CLI.md document them as a contract.
 */
#include "gh-config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clients/cli-int.h"

#define CONFIRM_NOTE "asks for confirmation on a terminal unless --yes"

static const cli_cmd commands[] = {
    {"user", "add", cli_user_add,
     "NAME [--uid N] [--gid N] [--display-name TEXT] [--mail ADDR] [--state STATE]\n"
     "       [--home DIR] [--shell PATH] [--gecos TEXT] [--no-password | --password-stdin]",
     "create a user; asks the password twice on the terminal",
     "  --uid N              numeric uid (default: the next free one)\n"
     "  --gid N              primary gid number\n"
     "  --display-name TEXT  display name\n"
     "  --mail ADDR          mail address\n"
     "  --state STATE        active (default), locked or disabled\n"
     "  --home DIR           home directory (default: the server's home_template)\n"
     "  --shell PATH         login shell (default: the server's default_shell)\n"
     "  --gecos TEXT         GECOS field (default: the display name)\n"
     "  --no-password        create the user without a password\n"
     "  --password-stdin     read the password from the first line of stdin\n",
     "uid= gid= display-name= mail= state= home= shell= gecos= no-password password-stdin", 1, 1},
    {"user", "get", cli_user_get, "NAME", "show a user and its effective groups", NULL, "", 1, 1},
    {"user", "list", cli_user_list, "[--prefix TEXT] [--limit N]", "list users",
     "  --prefix TEXT  only names starting with TEXT\n"
     "  --limit N      at most N users (default: all)\n",
     "prefix= limit=", 0, 0},
    {"user", "set", cli_user_set,
     "NAME [--rename NEW] [--uid N] [--gid N] [--display-name TEXT] [--mail ADDR]\n"
     "       [--state STATE] [--home DIR] [--shell PATH] [--gecos TEXT]",
     "change a user's attributes",
     "  --rename NEW         new login name\n"
     "  --uid N, --gid N     numbers\n"
     "  --display-name TEXT  display name (\"\" clears it)\n"
     "  --mail ADDR          mail address (\"\" clears it)\n"
     "  --state STATE        active, locked or disabled\n"
     "  --home DIR, --shell PATH, --gecos TEXT   POSIX fields (\"\" restores the default)\n",
     "rename= uid= gid= display-name= mail= state= home= shell= gecos=", 1, 1},
    {"user", "passwd", cli_user_passwd, "NAME [--password-stdin]",
     "set a user's password; asks it twice on the terminal",
     "  --password-stdin  read the password from the first line of stdin\n", "password-stdin", 1,
     1},
    {"user", "lock", cli_user_state, "NAME", "lock an account (state locked)", NULL, "", 1, 1},
    {"user", "unlock", cli_user_state, "NAME", "unlock an account (state active)", NULL, "", 1, 1},
    {"user", "disable", cli_user_state, "NAME", "disable an account (state disabled)", NULL, "", 1,
     1},
    {"user", "enable", cli_user_state, "NAME", "enable an account (state active)", NULL, "", 1, 1},
    {"user", "del", cli_user_del, "NAME",
     "delete a user with its memberships, bindings and tokens; " CONFIRM_NOTE, NULL, "", 1, 1},
    {"user", "sessions", cli_user_sessions, "NAME",
     "list a user's sessions (id, created, expires, peer; never the token)", NULL, "", 1, 1},
    {"user", "logout-all", cli_user_logout_all, "NAME", "end every session (token) of a user", NULL,
     "", 1, 1},

    {"group", "add", cli_group_add, "NAME [--gid N] [--description TEXT]", "create a group",
     "  --gid N             gid number (default: the next free one)\n"
     "  --description TEXT  description\n",
     "gid= description=", 1, 1},
    {"group", "get", cli_group_get, "NAME", "show a group, its members and effective users", NULL,
     "", 1, 1},
    {"group", "list", cli_group_list, "[--prefix TEXT] [--limit N]", "list groups",
     "  --prefix TEXT  only names starting with TEXT\n"
     "  --limit N      at most N groups (default: all)\n",
     "prefix= limit=", 0, 0},
    {"group", "del", cli_group_del, "NAME", "delete a group; " CONFIRM_NOTE, NULL, "", 1, 1},
    {"group", "add-member", cli_group_member, "GROUP USER | GROUP --group SUBGROUP",
     "add a user or a nested group to a group",
     "  --group SUBGROUP  add a group instead of a user\n", "group=", 1, 2},
    {"group", "remove-member", cli_group_member, "GROUP USER | GROUP --group SUBGROUP",
     "remove a direct member from a group",
     "  --group SUBGROUP  remove a group instead of a user\n", "group=", 1, 2},

    {"role", "add", cli_role_add,
     "NAME [--description TEXT] [--allow ACTION=RESOURCE]... [--deny ACTION=RESOURCE]...\n"
     "       [--parent ROLE]...",
     "create a role",
     "  --description TEXT         description\n"
     "  --allow ACTION=RESOURCE    an allow rule (repeatable)\n"
     "  --deny ACTION=RESOURCE     a deny rule (repeatable)\n"
     "  --parent ROLE              inherit ROLE's rules (repeatable)\n",
     "description= allow= deny= parent=", 1, 1},
    {"role", "get", cli_role_get, "NAME", "show a role and its rules", NULL, "", 1, 1},
    {"role", "list", cli_role_list, "", "list roles", NULL, "", 0, 0},
    {"role", "set", cli_role_set,
     "NAME [--description TEXT] [--allow ACTION=RESOURCE]... [--no-allow]\n"
     "       [--deny ACTION=RESOURCE]... [--no-deny] [--parent ROLE]... [--no-parents]",
     "replace the given fields of a role; removing rules or parents " CONFIRM_NOTE,
     "  --description TEXT       new description\n"
     "  --allow ACTION=RESOURCE  the new allow rules (repeatable; replaces them all)\n"
     "  --no-allow               remove every allow rule\n"
     "  --deny ACTION=RESOURCE   the new deny rules (repeatable; replaces them all)\n"
     "  --no-deny                remove every deny rule\n"
     "  --parent ROLE            the new parents (repeatable; replaces them all)\n"
     "  --no-parents             remove every parent\n",
     "description= allow= no-allow deny= no-deny parent= no-parents", 1, 1},
    {"role", "del", cli_role_del, "NAME [--force]", "delete a role; " CONFIRM_NOTE,
     "  --force  also remove its bindings and the references of child roles\n", "force", 1, 1},
    {"role", "allow", cli_role_rule, "ROLE ACTION RESOURCE", "add an allow rule to a role", NULL,
     "", 3, 3},
    {"role", "deny", cli_role_rule, "ROLE ACTION RESOURCE", "add a deny rule to a role", NULL, "",
     3, 3},
    {"role", "inherit", cli_role_inherit, "ROLE PARENT", "make ROLE inherit PARENT's rules", NULL,
     "", 2, 2},

    {"grant", NULL, cli_grant, "ROLE --user USER | --group GROUP [--scope PATTERN]",
     "grant a role to a user or a group",
     "  --user USER        the user to grant the role to\n"
     "  --group GROUP      the group to grant the role to\n"
     "  --scope PATTERN    limit the grant to resources matching PATTERN\n",
     "user= group= scope=", 1, 1},
    {"revoke", NULL, cli_revoke, "BINDING_ID | ROLE --user USER | --group GROUP [--scope PATTERN]",
     "remove a grant; " CONFIRM_NOTE,
     "  --user USER, --group GROUP, --scope PATTERN   name the grant instead of its id\n",
     "user= group= scope=", 1, 1},
    {"bindings", NULL, cli_bindings, "[--user USER | --group GROUP | --role ROLE]",
     "list grants (all, or of one user, group or role)",
     "  --user USER    grants to USER\n"
     "  --group GROUP  grants to GROUP\n"
     "  --role ROLE    grants of ROLE\n",
     "user= group= role=", 0, 0},
    {"check", NULL, cli_check, "USER ACTION RESOURCE [--explain]",
     "may USER do ACTION on RESOURCE? exit 0 allow, 1 deny",
     "  --explain  show the chain that decided\n", "explain", 3, 3},
    {"hbac-test", NULL, cli_hbac_test, "USER HOST SERVICE [--action A] [--resource TEMPLATE]",
     "would pam_gatehouse's hbac option let USER log in to HOST through SERVICE? exit 0 yes, 1 no",
     "  --action A           action checked (default: login, as pam_gatehouse)\n"
     "  --resource TEMPLATE  resource, %h host and %s service (default: host/%h/%s)\n",
     "action= resource=", 3, 3},
    {"perms", NULL, cli_perms, "USER", "list the rules that apply to a user", NULL, "", 1, 1},
    {"who-can", NULL, cli_who_can, "ACTION RESOURCE", "list who may do ACTION on RESOURCE", NULL,
     "", 2, 2},

    {"auth", NULL, cli_auth, "USER [--password-stdin] [--ttl SECONDS]",
     "check a password and print a token; asks the password on the terminal",
     "  --password-stdin  read the password from the first line of stdin\n"
     "  --ttl SECONDS     shorter token lifetime\n",
     "password-stdin ttl=", 1, 1},
    {"whoami", NULL, cli_whoami, "[-]",
     "show the holder of a token: - reads it from stdin, else $GATEHOUSE_TOKEN", NULL, "", 0, 1},
    {"logout", NULL, cli_logout, "[-]",
     "revoke a token: - reads it from stdin, else $GATEHOUSE_TOKEN", NULL, "", 0, 1},
    {"ping", NULL, cli_ping, "", "check that the server answers", NULL, "", 0, 0},
    {"stats", NULL, cli_stats, "", "show server counters", NULL, "", 0, 0},
    {"audit", NULL, cli_audit, "[--since SEQ] [--limit N] [--follow] [--interval SECONDS]",
     "show the change log",
     "  --since SEQ         entries after sequence number SEQ (default 0)\n"
     "  --limit N           at most N entries\n"
     "  --follow            keep polling for new entries until interrupted\n"
     "  --interval SECONDS  polling interval with --follow (default 1)\n",
     "since= limit= follow interval=", 0, 0},
    {"sync", "status", cli_sync_status, "", "show the state of upstream directories", NULL, "", 0,
     0},
    {"sync", "run", cli_sync_run, "[UPSTREAM] [--full] [--force]",
     "start a refresh now (of every upstream by default)",
     "  --full   reload everything, ignoring the stored cookie\n"
     "  --force  apply deletions the deletion guard halted\n",
     "full force", 0, 1},

    {"doctor", NULL, cli_doctor, "[--config FILE]",
     "say what is wrong with this installation and how to fix it",
     "  --config FILE  the server's configuration (default: what gatehoused reads)\n", "config=", 0,
     0},
    {"backup", NULL, cli_backup, "FILE [--force]",
     "write a consistent copy of the server's database to FILE (restore it with "
     "gatehoused --restore)",
     "  --force  replace FILE if it exists\n", "force", 1, 1},
    {"import", NULL, cli_import, "FILE | - [--format jsonl|ldif] [--batch N] [--max-request BYTES]",
     "load records (JSON lines as written by export, or LDIF)",
     "  --format jsonl|ldif    input format (default: ldif for *.ldif files, else jsonl)\n"
     "  --batch N              records per request, at most 1000 (default 1000)\n"
     "  --max-request BYTES    the server's max_request (default 65536)\n",
     "format= batch= max-request=", 1, 1},
    {"export", NULL, cli_export,
     "[--format jsonl|ldif] [--base-dn DN] [--with-verifiers] [--rfc2307]\n"
     "       [--no-containers] [--home-base DIR]",
     "write every record to stdout",
     "  --format jsonl|ldif  output format (default jsonl: users, groups, members,\n"
     "                       roles, bindings; verifiers included)\n"
     "  --base-dn DN         LDIF suffix (default dc=example,dc=com)\n"
     "  --with-verifiers     LDIF: add userPassword as {ARGON2}$argon2id$...\n"
     "  --rfc2307            LDIF: groups as structural posixGroup (nis.schema)\n"
     "                       instead of groupOfNames+posixGroup (rfc2307bis)\n"
     "  --no-containers      LDIF: omit the ou=people and ou=groups entries\n"
     "  --home-base DIR      LDIF: homeDirectory prefix (default /home)\n",
     "format= base-dn= with-verifiers rfc2307 no-containers home-base=", 0, 0},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const char *const global_opts = "socket= json yes help";

static const char global_help[] =
    "Global options (accepted anywhere):\n"
    "  --socket PATH  server socket (default: $GATEHOUSE_SOCKET, then " GH_CLIENT_DEFAULT_SOCKET
    ";\n"
    "                 ./var/gatehoused.sock when run from its build directory)\n"
    "  --json         print the server's responses as JSON\n"
    "  --yes          do not ask for confirmation (required without a terminal)\n"
    "  --help         help on the command given before it\n";

static const char exit_help[] =
    "Exit codes: 0 success, 1 denied or not found, 2 usage error, 3 server\n"
    "unreachable, 4 permission denied, 5 other server error.\n";

/* ---- errors ---- */

int cli_fail(int code, const char *fmt, ...)
{
    va_list ap;

    fputs("gatehouse: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

static void command_name(const cli_cmd *c, char *buf, size_t len)
{
    if (c == NULL)
        snprintf(buf, len, "gatehouse");
    else if (c->verb)
        snprintf(buf, len, "gatehouse %s %s", c->noun, c->verb);
    else
        snprintf(buf, len, "gatehouse %s", c->noun);
}

int cli_usage(const cli *x, const char *fmt, ...)
{
    char name[64];
    va_list ap;

    fputs("gatehouse: usage: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    command_name(x ? x->cmd : NULL, name, sizeof(name));
    fprintf(stderr, "\nTry '%s --help'.\n", name);
    return CLI_EXIT_USAGE;
}

int cli_exit_code(int status)
{
    switch (status) {
    case 0:
        return CLI_EXIT_OK;
    case GH_ERR_NOT_FOUND:
    case GH_ERR_INVALID_CREDENTIALS:
    case GH_ERR_ACCOUNT_LOCKED:
    case GH_ERR_ACCOUNT_DISABLED:
    case GH_ERR_INVALID_TOKEN:
        return CLI_EXIT_DENIED;
    case GH_ERR_PERMISSION_DENIED:
        return CLI_EXIT_PERM;
    case GH_ERR_CONNECT:
    case GH_ERR_CONNECTION_LOST:
        return CLI_EXIT_UNREACHABLE;
    case GH_ERR_USAGE:
        return CLI_EXIT_USAGE;
    default:
        return CLI_EXIT_SERVER;
    }
}

int cli_report(cli *x, int status)
{
    const char *code = x->client ? gh_client_error_code(x->client) : "";
    const char *msg = x->client ? gh_client_error_message(x->client) : "";

    if (code[0] == '\0')
        code = gh_client_status_code(status);
    fprintf(stderr, "gatehouse: %s: %s\n", code, msg[0] ? msg : "failed");
    return cli_exit_code(status);
}

int cli_report_response(cli *x, int status, json_t *resp)
{
    if (x->json && resp != NULL)
        cli_print_json(resp);
    return cli_report(x, status);
}

/* ---- options ---- */

const char *cli_opt(const cli *x, const char *name)
{
    const char *v = NULL;

    for (size_t i = 0; i < x->nopts; i++)
        if (strcmp(x->opts[i].name, name) == 0)
            v = x->opts[i].value;
    return v;
}

int cli_flag(const cli *x, const char *name)
{
    return cli_opt(x, name) != NULL;
}

size_t cli_opt_all(const cli *x, const char *name, const char **vals, size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < x->nopts; i++)
        if (strcmp(x->opts[i].name, name) == 0 && n < max)
            vals[n++] = x->opts[i].value;
    return n;
}

int cli_parse_int(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int cli_opt_int(cli *x, const char *name, long long min, long long max, long long *out,
                int *present)
{
    const char *s = cli_opt(x, name);

    *present = 0;
    *out = 0;
    if (s == NULL)
        return 0;
    if (cli_parse_int(s, min, max, out) < 0)
        return cli_usage(x, "--%s: expected an integer from %lld to %lld, got '%s'", name, min, max,
                         s);
    *present = 1;
    return 0;
}

/* Is name in the space-separated spec? *takes_value tells whether it ends
 * with '='. */
static int spec_has(const char *spec, const char *name, size_t namelen, int *takes_value)
{
    const char *p = spec;

    while (*p) {
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        size_t len = (size_t)(e - p);
        int val = len > 0 && p[len - 1] == '=';
        if ((val ? len - 1 : len) == namelen && strncmp(p, name, namelen) == 0) {
            *takes_value = val;
            return 1;
        }
        p = *e ? e + 1 : e;
    }
    return 0;
}

/* A NUL-terminated copy of an option name that lives until exit (the CLI
 * runs one command; the names are few and short). */
static const char *intern_name(const char *name, size_t len)
{
    static char names[CLI_MAX_OPTS][40];
    static size_t used;

    for (size_t i = 0; i < used; i++)
        if (strlen(names[i]) == len && strncmp(names[i], name, len) == 0)
            return names[i];
    if (used == CLI_MAX_OPTS || len >= sizeof(names[0]))
        return NULL;
    memcpy(names[used], name, len);
    names[used][len] = '\0';
    return names[used++];
}

static int add_opt(cli *x, const char *name, const char *value)
{
    if (x->nopts == CLI_MAX_OPTS)
        return cli_usage(x, "too many options");
    x->opts[x->nopts].name = name;
    x->opts[x->nopts].value = value;
    x->nopts++;
    return 0;
}

/* Handles a global option; returns 1 when it was one, or an exit code + 10. */
static int handle_global(cli *x, const char *name, const char *value)
{
    if (strcmp(name, "socket") == 0)
        x->socket = value;
    else if (strcmp(name, "json") == 0)
        x->json = 1;
    else if (strcmp(name, "yes") == 0)
        x->yes = 1;
    else
        return 0;
    return 1;
}

/* ---- help ---- */

static void print_command_usage(FILE *f, const cli_cmd *c)
{
    char name[64];

    command_name(c, name, sizeof(name));
    fprintf(f, "  %s%s%s\n", name + strlen("gatehouse "), c->args[0] ? " " : "", c->args);
}

static void help_all(FILE *f)
{
    fprintf(f, "usage: gatehouse [--socket PATH] [--json] [--yes] COMMAND ...\n\n"
               "Provision and query a Gatehouse server (gatehoused).\n\nCommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        char name[64];
        command_name(&commands[i], name, sizeof(name));
        fprintf(f, "  %-22s %s\n", name + strlen("gatehouse "), commands[i].summary);
    }
    fprintf(f,
            "\n%s\n%s\nRun 'gatehouse COMMAND --help' for a command's options; see gatehouse(1).\n",
            global_help, exit_help);
}

static void help_noun(FILE *f, const char *noun)
{
    fprintf(f, "usage: gatehouse %s VERB ...\n\nVerbs:\n", noun);
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].noun, noun) == 0)
            fprintf(f, "  %-14s %s\n", commands[i].verb, commands[i].summary);
    fprintf(f, "\nSynopsis:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].noun, noun) == 0)
            print_command_usage(f, &commands[i]);
    fprintf(f, "\nRun 'gatehouse %s VERB --help' for a verb's options.\n", noun);
}

static void help_command(FILE *f, const cli_cmd *c)
{
    char name[64];

    command_name(c, name, sizeof(name));
    fprintf(f, "usage: %s%s%s\n\n%s.\n", name, c->args[0] ? " " : "", c->args, c->summary);
    if (c->help)
        fprintf(f, "\nOptions:\n%s", c->help);
    fprintf(f, "\n%s\n%s", global_help, exit_help);
}

static int noun_has_verbs(const char *noun)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].noun, noun) == 0)
            return commands[i].verb != NULL;
    return -1;
}

static const cli_cmd *find_command(const char *noun, const char *verb)
{
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].noun, noun) != 0)
            continue;
        if (commands[i].verb == NULL || (verb && strcmp(commands[i].verb, verb) == 0))
            return &commands[i];
    }
    return NULL;
}

/* ---- parsing ---- */

/* Splits "--name=value" / "--name". */
static void split_long(const char *arg, const char **name, size_t *namelen, const char **value)
{
    const char *eq = strchr(arg + 2, '=');

    *name = arg + 2;
    *namelen = eq ? (size_t)(eq - *name) : strlen(*name);
    *value = eq ? eq + 1 : NULL;
}

/* Leading global options (before the command words). Returns the index of
 * the first non-option, or -(exit code + 1). */
static int parse_leading(cli *x, int argc, char **argv, int i, int *help)
{
    while (i < argc && argv[i][0] == '-' && argv[i][1] != '\0') {
        const char *name, *value;
        size_t len;
        int takes;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            *help = 1;
            i++;
            continue;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("gatehouse %s (libgatehouse %s)\n", PACKAGE_VERSION, gh_client_version());
            return -(CLI_EXIT_OK + 1);
        }
        if (argv[i][1] != '-' ||
            !spec_has(global_opts, argv[i] + 2, strcspn(argv[i] + 2, "="), &takes))
            return -(cli_usage(x, "unknown option '%s'", argv[i]) + 1);
        split_long(argv[i], &name, &len, &value);
        if (takes && value == NULL) {
            if (i + 1 >= argc)
                return -(cli_usage(x, "option '--%.*s' needs a value", (int)len, name) + 1);
            value = argv[++i];
        } else if (!takes && value != NULL) {
            return -(cli_usage(x, "option '--%.*s' takes no value", (int)len, name) + 1);
        }
        char nb[40];
        snprintf(nb, sizeof(nb), "%.*s", (int)len, name);
        handle_global(x, nb, value ? value : "");
        i++;
    }
    return i;
}

/* Options and positional arguments after the command words. */
static int parse_rest(cli *x, int argc, char **argv, int i, int *help)
{
    int dashdash = 0;

    for (; i < argc; i++) {
        const char *a = argv[i], *name, *value;
        size_t len;
        int takes;

        if (!dashdash && strcmp(a, "--") == 0) {
            dashdash = 1;
            continue;
        }
        if (dashdash || a[0] != '-' || a[1] == '\0') {
            if (x->npos == CLI_MAX_POS)
                return cli_usage(x, "too many arguments");
            x->pos[x->npos++] = a;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            *help = 1;
            continue;
        }
        if (strcmp(a, "-y") == 0) {
            x->yes = 1;
            continue;
        }
        if (a[1] != '-')
            return cli_usage(x, "unknown option '%s'", a);
        split_long(a, &name, &len, &value);
        if (spec_has(global_opts, name, len, &takes) || spec_has(x->cmd->opts, name, len, &takes)) {
            if (takes && value == NULL) {
                if (i + 1 >= argc)
                    return cli_usage(x, "option '--%.*s' needs a value", (int)len, name);
                value = argv[++i];
            } else if (!takes && value != NULL) {
                return cli_usage(x, "option '--%.*s' takes no value", (int)len, name);
            }
            const char *n = intern_name(name, len);
            if (n == NULL)
                return cli_usage(x, "too many options");
            if (!handle_global(x, n, value ? value : "")) {
                int rc = add_opt(x, n, value ? value : "");
                if (rc)
                    return rc;
            }
            continue;
        }
        return cli_usage(x, "unknown option '--%.*s'", (int)len, name);
    }
    return 0;
}

/* ---- the client and calls ---- */

gh_client *cli_client(cli *x, int *rc)
{
    const char *token;

    *rc = 0;
    if (x->client != NULL)
        return x->client;
    if (gh_client_new(&x->client, x->socket) < 0) {
        *rc = cli_usage(x, "socket path too long: %s", x->socket ? x->socket : "");
        return NULL;
    }
    token = getenv("GATEHOUSE_TOKEN");
    if (token != NULL && token[0] != '\0' && gh_client_set_token(x->client, token) < 0) {
        *rc = cli_fail(CLI_EXIT_SERVER, "out_of_memory: cannot keep the token");
        return NULL;
    }
    return x->client;
}

json_t *cli_req(const char *op)
{
    json_t *r = json_object();
    if (r == NULL || json_object_set_new(r, "op", json_string(op)) < 0) {
        fputs("gatehouse: out_of_memory: cannot build a request\n", stderr);
        exit(CLI_EXIT_SERVER);
    }
    return r;
}

void cli_set_str(cli *x, json_t *obj, const char *key, const char *value)
{
    json_t *s;

    if (value == NULL)
        return;
    s = json_string(value);
    if (s == NULL) {
        x->bad_arg = 1;
        return;
    }
    json_object_set_new(obj, key, s);
}

void cli_set_int(json_t *obj, const char *key, long long v)
{
    json_object_set_new(obj, key, json_integer(v));
}

int cli_call(cli *x, json_t *req, json_t **resp)
{
    gh_client *c;
    int rc;

    *resp = NULL;
    if (x->bad_arg)
        return cli_usage(x, "an argument is not valid UTF-8 text");
    c = cli_client(x, &rc);
    if (c == NULL)
        return rc;
    rc = gh_call(c, req, resp);
    if (rc < 0) {
        int code = cli_report_response(x, rc, *resp);
        json_decref(*resp);
        *resp = NULL;
        return code;
    }
    return 0;
}

/* ---- output ---- */

void cli_print_json(json_t *v)
{
    json_t *copy = NULL;

    if (json_is_object(v) && json_object_get(v, "id") != NULL) {
        copy = json_copy(v);
        json_object_del(copy, "id");
        v = copy;
    }
    json_dumpf(v, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
    fputc('\n', stdout);
    json_decref(copy);
}

int cli_json_out(const cli *x, json_t *resp)
{
    if (!x->json)
        return 0;
    cli_print_json(resp);
    return 1;
}

const char *cli_str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

const char *cli_num(json_t *obj, const char *key, char *buf, size_t len)
{
    json_t *v = json_object_get(obj, key);

    if (json_is_integer(v))
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_string(v))
        snprintf(buf, len, "%s", json_string_value(v));
    else if (json_is_real(v))
        snprintf(buf, len, "%g", json_real_value(v));
    else if (json_is_boolean(v))
        snprintf(buf, len, "%s", json_is_true(v) ? "yes" : "no");
    else
        snprintf(buf, len, "-");
    return buf;
}

const char *cli_time(json_t *obj, const char *key, char *buf, size_t len)
{
    json_t *v = json_object_get(obj, key);
    time_t t;
    struct tm tm;

    if (!json_is_integer(v) || json_integer_value(v) <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    t = (time_t)json_integer_value(v);
    if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%d %H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return buf;
}

char *cli_join(json_t *arr)
{
    size_t i, len = 1;
    json_t *v;
    char *out;

    json_array_foreach(arr, i, v) len += strlen(json_is_string(v) ? json_string_value(v) : "?") + 2;
    out = malloc(len);
    if (out == NULL) {
        fputs("gatehouse: out_of_memory\n", stderr);
        exit(CLI_EXIT_SERVER);
    }
    out[0] = '\0';
    json_array_foreach(arr, i, v)
    {
        if (i > 0)
            strcat(out, ", ");
        strcat(out, json_is_string(v) ? json_string_value(v) : "?");
    }
    return out;
}

void cli_kv(const char *key, const char *value)
{
    char k[40];

    snprintf(k, sizeof(k), "%s:", key);
    printf("%-18s%s\n", k, value && value[0] ? value : "-");
}

void cli_print_tree(json_t *v, int indent)
{
    const char *key;
    json_t *m;
    size_t i;
    char num[64];

    if (json_is_object(v)) {
        json_object_foreach(v, key, m)
        {
            if (indent == 0 && (strcmp(key, "ok") == 0 || strcmp(key, "id") == 0))
                continue;
            if (json_is_object(m) || (json_is_array(m) && json_array_size(m) > 0 &&
                                      !json_is_string(json_array_get(m, 0)))) {
                printf("%*s%s:\n", indent, "", key);
                cli_print_tree(m, indent + 2);
            } else if (json_is_array(m)) {
                char *j = cli_join(m);
                printf("%*s%s: %s\n", indent, "", key, j[0] ? j : "-");
                free(j);
            } else if (json_is_string(m)) {
                printf("%*s%s: %s\n", indent, "", key, json_string_value(m));
            } else if (json_is_null(m)) {
                printf("%*s%s: -\n", indent, "", key);
            } else {
                json_t *tmp = json_pack("{sO}", "v", m);
                printf("%*s%s: %s\n", indent, "", key, cli_num(tmp, "v", num, sizeof(num)));
                json_decref(tmp);
            }
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, m)
        {
            if (json_is_object(m) || json_is_array(m)) {
                printf("%*s-\n", indent, "");
                cli_print_tree(m, indent + 2);
            } else {
                char *d = json_dumps(m, JSON_ENCODE_ANY);
                printf("%*s- %s\n", indent, "", d ? d : "?");
                free(d);
            }
        }
    }
}

struct cli_table {
    size_t ncols, nrows, cap;
    char **cells; /* nrows * ncols, row 0 = headers */
};

cli_table *cli_table_new(size_t ncols, const char *const *headers)
{
    cli_table *t = calloc(1, sizeof(*t));

    if (t == NULL) {
        fputs("gatehouse: out_of_memory\n", stderr);
        exit(CLI_EXIT_SERVER);
    }
    t->ncols = ncols;
    cli_table_row(t, headers);
    return t;
}

void cli_table_row(cli_table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 16;
        char **n = realloc(t->cells, ncap * t->ncols * sizeof(*n));
        if (n == NULL) {
            fputs("gatehouse: out_of_memory\n", stderr);
            exit(CLI_EXIT_SERVER);
        }
        t->cells = n;
        t->cap = ncap;
    }
    for (size_t i = 0; i < t->ncols; i++) {
        const char *s = cells[i] && cells[i][0] ? cells[i] : "-";
        t->cells[t->nrows * t->ncols + i] = strdup(s);
        if (t->cells[t->nrows * t->ncols + i] == NULL) {
            fputs("gatehouse: out_of_memory\n", stderr);
            exit(CLI_EXIT_SERVER);
        }
    }
    t->nrows++;
}

/* Display width: UTF-8 code points (continuation bytes do not count). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

void cli_table_print(cli_table *t, FILE *f)
{
    size_t *w = calloc(t->ncols, sizeof(*w));

    if (w == NULL)
        return;
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t cw = width(t->cells[r * t->ncols + c]);
            if (cw > w[c])
                w[c] = cw;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            fputs(s, f);
            if (c + 1 < t->ncols)
                fprintf(f, "%*s", (int)(w[c] - width(s) + 2), "");
        }
        fputc('\n', f);
    }
    free(w);
}

void cli_table_free(cli_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

void cli_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        explicit_bzero(p, n);
}

void cli_wipe_json_string(json_t *s)
{
    if (json_is_string(s))
        cli_wipe((char *)json_string_value(s), json_string_length(s));
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    cli x;
    int help = 0, i, rc;
    const char *noun, *verb = NULL;

    memset(&x, 0, sizeof(x));
    i = parse_leading(&x, argc, argv, 1, &help);
    if (i < 0)
        return -i - 1;
    if (i >= argc) {
        if (!help)
            fputs("gatehouse: usage: missing COMMAND\n", stderr);
        help_all(help ? stdout : stderr);
        return help ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    }
    noun = argv[i++];
    if (strcmp(noun, "help") == 0) {
        /* gatehouse help [NOUN [VERB]] */
        const cli_cmd *c = NULL;
        if (i < argc && noun_has_verbs(argv[i]) == 1 && i + 1 < argc)
            c = find_command(argv[i], argv[i + 1]);
        else if (i < argc && noun_has_verbs(argv[i]) == 0)
            c = find_command(argv[i], NULL);
        if (c)
            help_command(stdout, c);
        else if (i < argc && noun_has_verbs(argv[i]) == 1)
            help_noun(stdout, argv[i]);
        else
            help_all(stdout);
        return CLI_EXIT_OK;
    }
    switch (noun_has_verbs(noun)) {
    case -1:
        return cli_usage(NULL, "unknown command '%s'", noun);
    case 1:
        i = parse_leading(&x, argc, argv, i, &help);
        if (i < 0)
            return -i - 1;
        if (i >= argc) {
            if (!help)
                fprintf(stderr, "gatehouse: usage: missing VERB after '%s'\n", noun);
            help_noun(help ? stdout : stderr, noun);
            return help ? CLI_EXIT_OK : CLI_EXIT_USAGE;
        }
        verb = argv[i++];
        x.cmd = find_command(noun, verb);
        if (x.cmd == NULL) {
            fprintf(stderr, "gatehouse: usage: unknown verb '%s %s'\n", noun, verb);
            help_noun(stderr, noun);
            return CLI_EXIT_USAGE;
        }
        break;
    default:
        x.cmd = find_command(noun, NULL);
        break;
    }
    rc = parse_rest(&x, argc, argv, i, &help);
    if (rc != 0)
        return rc;
    if (help) {
        help_command(stdout, x.cmd);
        return CLI_EXIT_OK;
    }
    if (x.npos < x.cmd->min_args)
        return cli_usage(&x, "missing argument (expected %s)", x.cmd->args);
    if (x.npos > x.cmd->max_args)
        return cli_usage(&x, "unexpected argument '%s'", x.pos[x.cmd->max_args]);
    rc = x.cmd->run(&x);
    gh_client_free(x.client);
    if (fflush(stdout) != 0 && rc == CLI_EXIT_OK)
        rc = cli_fail(CLI_EXIT_SERVER, "io_error: cannot write the output: %s", strerror(errno));
    return rc;
}
