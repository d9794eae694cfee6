/*
 * pam_gatehouse.c: pam_gatehouse.so, Linux-PAM's way to Gatehouse accounts.
 *
 *   auth      the password through the conversation (or use_first_pass /
 *             try_first_pass), checked by the server's "auth" with the PAM
 *             service, tty and remote host as the end client
 *   account   locked and disabled accounts refused; with "hbac", roles
 *             decide: "check USER login host/<hostname>/<service>"
 *   password  self-service change with the old password (passwd.change)
 *   session   nothing (stack pam_mkhomedir for home directories)
 *
 * The one thing to know: a user Gatehouse does not know is PAM_USER_UNKNOWN,
 * never PAM_AUTH_ERR, so that "[default=ignore]" stacking with pam_unix keeps
 * local accounts working; and a server that cannot be reached is
 * PAM_AUTHINFO_UNAVAIL (within the timeout), never success. Options are
 * documented in pam_gatehouse(8).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <security/pam_ext.h>
#include <security/pam_modules.h>

#include <jansson.h>

#include "clients/os_client.h"

#ifndef GH_PAM_SOCKET_DEFAULT
#define GH_PAM_SOCKET_DEFAULT "/run/gatehouse/gatehoused.sock"
#endif
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_ACTION "login"
#define DEFAULT_RESOURCE "host/%h/%s"

#define EXPORT __attribute__((visibility("default")))

typedef struct opts {
    int debug;
    int use_first_pass, try_first_pass, use_authtok;
    int hbac;
    int timeout_ms;
    const char *socket;
    const char *action;
    const char *resource;
    const char *host; /* hbac_host=, default gethostname() */
} opts;

static void parse_opts(pam_handle_t *pamh, int argc, const char **argv, opts *o)
{
    memset(o, 0, sizeof(*o));
    o->timeout_ms = DEFAULT_TIMEOUT_MS;
    o->socket = GH_PAM_SOCKET_DEFAULT;
    o->action = DEFAULT_ACTION;
    o->resource = DEFAULT_RESOURCE;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "debug") == 0)
            o->debug = 1;
        else if (strcmp(a, "use_first_pass") == 0)
            o->use_first_pass = 1;
        else if (strcmp(a, "try_first_pass") == 0)
            o->try_first_pass = 1;
        else if (strcmp(a, "use_authtok") == 0)
            o->use_authtok = 1;
        else if (strcmp(a, "hbac") == 0)
            o->hbac = 1;
        else if (strncmp(a, "socket=", 7) == 0)
            o->socket = a + 7;
        else if (strncmp(a, "hbac_action=", 12) == 0)
            o->action = a + 12;
        else if (strncmp(a, "hbac_resource=", 14) == 0)
            o->resource = a + 14;
        else if (strncmp(a, "hbac_host=", 10) == 0)
            o->host = a + 10;
        else if (strncmp(a, "timeout=", 8) == 0 && atoi(a + 8) > 0)
            o->timeout_ms = atoi(a + 8) * 1000;
        else
            pam_syslog(pamh, LOG_ERR, "unknown option '%s'", a);
    }
}

/* One request on a fresh connection (PAM calls are rare, and a module
 * must keep nothing open in a process that may fork or chroot). */
static int call(const opts *o, json_t *req, json_t **resp)
{
    gh_os_conn c;
    gh_os_init(&c);
    *resp = NULL;
    if (req == NULL)
        return GH_OS_NOMEM;
    int rc = gh_os_call(&c, o->socket, o->timeout_ms, req, resp);
    gh_os_close(&c);
    return rc;
}

static int code_is(json_t *resp, const char *code)
{
    return strcmp(gh_os_error_code(resp), code) == 0;
}

static const char *item_str(pam_handle_t *pamh, int item)
{
    const void *v = NULL;
    if (pam_get_item(pamh, item, &v) != PAM_SUCCESS || v == NULL)
        return "";
    return v;
}

/* auth's "client": who the end client is, so that the server's lockout
 * keys on it rather than on sshd ("sshd:203.0.113.9", "su:local:bob"). Not
 * the tty: a new ssh connection gets a new one, and must not buy guesses. */
static json_t *client_json(pam_handle_t *pamh)
{
    char buf[129];
    const char *rhost = item_str(pamh, PAM_RHOST), *ruser = item_str(pamh, PAM_RUSER);
    if (rhost[0] != '\0')
        snprintf(buf, sizeof(buf), "%s:%s", item_str(pamh, PAM_SERVICE), rhost);
    else
        snprintf(buf, sizeof(buf), "%s:local%s%s", item_str(pamh, PAM_SERVICE), ruser[0] ? ":" : "",
                 ruser);
    for (char *p = buf; *p; p++) /* printable ASCII only: always a JSON string */
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    return json_string(buf);
}

/* Whether Gatehouse serves this login to the OS: 1 yes, 0 unknown user,
 * -1 the server could not say. */
static int user_known(const opts *o, const char *user)
{
    json_t *resp;
    int rc = call(o, json_pack("{s:s, s:s}", "op", "nss.getpwnam", "name", user), &resp);
    int known = rc == GH_OS_OK ? 1 : (rc == GH_OS_ERROR && code_is(resp, "not_found")) ? 0 : -1;
    json_decref(resp);
    return known;
}

/* A password from the stack or the conversation, as the options say. */
static int get_password(pam_handle_t *pamh, const opts *o, int item, const char *prompt,
                        const char **out)
{
    const void *v = NULL;
    *out = NULL;
    if (o->use_first_pass || o->try_first_pass) {
        if (pam_get_item(pamh, item, &v) == PAM_SUCCESS && v != NULL) {
            *out = v;
            return PAM_SUCCESS;
        }
        if (o->use_first_pass)
            return PAM_AUTHTOK_RECOVERY_ERR;
    }
    char *resp = NULL;
    int rc = pam_prompt(pamh, PAM_PROMPT_ECHO_OFF, &resp, "%s", prompt);
    if (rc != PAM_SUCCESS || resp == NULL)
        return rc == PAM_SUCCESS ? PAM_CONV_ERR : rc;
    rc = pam_set_item(pamh, item, resp);
    explicit_bzero(resp, strlen(resp));
    free(resp);
    if (rc != PAM_SUCCESS)
        return rc;
    if (pam_get_item(pamh, item, &v) != PAM_SUCCESS || v == NULL)
        return PAM_CONV_ERR;
    *out = v;
    return PAM_SUCCESS;
}

/* Maps an error reply of auth / passwd.change. */
static int map_error(pam_handle_t *pamh, json_t *resp, int creds_rc)
{
    const char *code = gh_os_error_code(resp);
    if (strcmp(code, "invalid_credentials") == 0)
        return creds_rc;
    if (strcmp(code, "rate_limited") == 0)
        return PAM_MAXTRIES;
    if (strcmp(code, "account_locked") == 0)
        return PAM_ACCT_EXPIRED;
    if (strcmp(code, "account_disabled") == 0)
        return PAM_PERM_DENIED;
    if (strcmp(code, "unavailable") == 0)
        return PAM_AUTHINFO_UNAVAIL;
    pam_syslog(pamh, LOG_ERR, "server error %s: %s", code, gh_os_error_message(resp));
    return PAM_AUTHINFO_UNAVAIL;
}

/* Checks user's password with "auth", asking for no token ("token": false):
 * no session is made, so nothing is written (a rehash aside) and nothing
 * needs a logout. */
static int verify(pam_handle_t *pamh, const opts *o, const char *user, const char *password)
{
    json_t *resp;
    json_t *req = json_pack("{s:s, s:s, s:s, s:o, s:b}", "op", "auth", "user", user, "password",
                            password, "client", client_json(pamh), "token", 0);
    int rc = call(o, req, &resp);
    json_decref(req);
    if (rc == GH_OS_OK) {
        json_decref(resp);
        return PAM_SUCCESS;
    }
    if (rc != GH_OS_ERROR) {
        pam_syslog(pamh, LOG_ERR, "cannot reach gatehoused at %s", o->socket);
        return PAM_AUTHINFO_UNAVAIL;
    }
    rc = map_error(pamh, resp, PAM_AUTH_ERR);
    if (o->debug)
        pam_syslog(pamh, LOG_DEBUG, "auth %s: %s", user, gh_os_error_code(resp));
    json_decref(resp);
    return rc;
}

/* ---- auth ---- */

EXPORT int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    opts o;
    const char *user = NULL, *password = NULL;
    (void)flags;
    parse_opts(pamh, argc, argv, &o);
    int rc = pam_get_user(pamh, &user, NULL);
    if (rc != PAM_SUCCESS || user == NULL || user[0] == '\0')
        return rc == PAM_SUCCESS ? PAM_USER_UNKNOWN : rc;
    int known = user_known(&o, user);
    if (known < 0) {
        pam_syslog(pamh, LOG_ERR, "cannot reach gatehoused at %s", o.socket);
        return PAM_AUTHINFO_UNAVAIL;
    }
    if (known == 0)
        return PAM_USER_UNKNOWN;
    rc = get_password(pamh, &o, PAM_AUTHTOK, "Password: ", &password);
    if (rc != PAM_SUCCESS)
        return rc;
    rc = verify(pamh, &o, user, password);
    if (rc == PAM_SUCCESS || o.debug)
        pam_syslog(pamh, rc == PAM_SUCCESS ? LOG_INFO : LOG_DEBUG, "auth %s: %s", user,
                   pam_strerror(pamh, rc));
    return rc;
}

EXPORT int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh, (void)flags, (void)argc, (void)argv;
    return PAM_SUCCESS;
}

/* ---- account ---- */

static void expand(const char *tmpl, const char *host, const char *service, char *out, size_t len)
{
    size_t o = 0;
    for (const char *p = tmpl; *p && o + 1 < len; p++) {
        const char *ins;
        char one[2] = {*p, '\0'};
        if (p[0] == '%' && (p[1] == 'h' || p[1] == 's' || p[1] == '%')) {
            ins = p[1] == 'h' ? host : p[1] == 's' ? service : "%";
            p++;
        } else {
            ins = one;
        }
        size_t n = strlen(ins);
        if (n > len - 1 - o)
            n = len - 1 - o;
        memcpy(out + o, ins, n);
        o += n;
    }
    out[o] = '\0';
}

static int hbac(pam_handle_t *pamh, const opts *o, const char *user)
{
    char host[256] = "", resource[1024];
    const char *service = item_str(pamh, PAM_SERVICE);
    if (o->host != NULL)
        snprintf(host, sizeof(host), "%s", o->host);
    else if (gethostname(host, sizeof(host) - 1) != 0)
        return PAM_AUTHINFO_UNAVAIL;
    expand(o->resource, host, service, resource, sizeof(resource));
    json_t *resp;
    json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:b}", "op", "check", "user", user, "action",
                            o->action, "resource", resource, "explain", o->debug);
    int rc = call(o, req, &resp);
    json_decref(req);
    if (rc == GH_OS_OK) {
        int allow = json_is_true(json_object_get(resp, "allow"));
        if (!allow) {
            pam_syslog(pamh, LOG_NOTICE, "access denied for %s: %s %s", user, o->action, resource);
            if (o->debug) {
                char *ex = json_dumps(json_object_get(resp, "explain"), JSON_COMPACT);
                pam_syslog(pamh, LOG_DEBUG, "explain: %s", ex ? ex : "?");
                free(ex);
            }
        }
        json_decref(resp);
        return allow ? PAM_SUCCESS : PAM_PERM_DENIED;
    }
    if (rc == GH_OS_ERROR) {
        int r = code_is(resp, "not_found") ? PAM_USER_UNKNOWN : PAM_AUTHINFO_UNAVAIL;
        if (r != PAM_USER_UNKNOWN)
            pam_syslog(pamh, LOG_ERR, "check: %s: %s", gh_os_error_code(resp),
                       gh_os_error_message(resp));
        json_decref(resp);
        return r;
    }
    pam_syslog(pamh, LOG_ERR, "cannot reach gatehoused at %s", o->socket);
    return PAM_AUTHINFO_UNAVAIL;
}

EXPORT int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    opts o;
    const char *user = NULL;
    (void)flags;
    parse_opts(pamh, argc, argv, &o);
    int rc = pam_get_user(pamh, &user, NULL);
    if (rc != PAM_SUCCESS || user == NULL || user[0] == '\0')
        return rc == PAM_SUCCESS ? PAM_USER_UNKNOWN : rc;
    int known = user_known(&o, user);
    if (known < 0) {
        pam_syslog(pamh, LOG_ERR, "cannot reach gatehoused at %s", o.socket);
        return PAM_AUTHINFO_UNAVAIL;
    }
    if (known == 0)
        return PAM_USER_UNKNOWN;
    /* the account's state: user.get needs an admin peer (root, as sshd, su
     * and login run PAM's account stack) */
    json_t *resp;
    rc = call(&o, json_pack("{s:s, s:s}", "op", "user.get", "name", user), &resp);
    if (rc != GH_OS_OK) {
        if (rc == GH_OS_ERROR)
            pam_syslog(pamh, LOG_ERR, "account %s: %s: %s", user, gh_os_error_code(resp),
                       gh_os_error_message(resp));
        rc = rc == GH_OS_ERROR && code_is(resp, "not_found")           ? PAM_USER_UNKNOWN
             : rc == GH_OS_ERROR && code_is(resp, "permission_denied") ? PAM_PERM_DENIED
                                                                       : PAM_AUTHINFO_UNAVAIL;
        json_decref(resp);
        return rc;
    }
    const char *state = json_string_value(json_object_get(json_object_get(resp, "user"), "state"));
    rc = state && strcmp(state, "active") == 0   ? PAM_SUCCESS
         : state && strcmp(state, "locked") == 0 ? PAM_ACCT_EXPIRED
                                                 : PAM_PERM_DENIED;
    json_decref(resp);
    if (rc != PAM_SUCCESS) {
        pam_syslog(pamh, LOG_NOTICE, "account %s is %s", user, state ? state : "unusable");
        pam_error(pamh, "Your account is %s.",
                  state && strcmp(state, "locked") == 0 ? "locked" : "disabled");
        return rc;
    }
    return o.hbac ? hbac(pamh, &o, user) : PAM_SUCCESS;
}

/* ---- password ---- */

EXPORT int pam_sm_chauthtok(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    opts o;
    const char *user = NULL, *oldpw = NULL, *newpw = NULL;
    parse_opts(pamh, argc, argv, &o);
    if (flags & PAM_CHANGE_EXPIRED_AUTHTOK)
        return PAM_IGNORE; /* Gatehouse passwords do not expire */
    int rc = pam_get_user(pamh, &user, NULL);
    if (rc != PAM_SUCCESS || user == NULL || user[0] == '\0')
        return rc == PAM_SUCCESS ? PAM_USER_UNKNOWN : rc;
    if (flags & PAM_PRELIM_CHECK) {
        /* ready? the server answers and knows the user; then the old
         * password, verified now so that a wrong one stops here */
        int known = user_known(&o, user);
        if (known < 0)
            return PAM_TRY_AGAIN;
        if (known == 0)
            return PAM_USER_UNKNOWN;
        rc = get_password(pamh, &o, PAM_OLDAUTHTOK, "Current password: ", &oldpw);
        if (rc != PAM_SUCCESS)
            return rc;
        rc = verify(pamh, &o, user, oldpw);
        if (rc == PAM_AUTHINFO_UNAVAIL)
            return PAM_TRY_AGAIN;
        return rc;
    }
    if (!(flags & PAM_UPDATE_AUTHTOK))
        return PAM_SERVICE_ERR;
    const void *v = NULL;
    if (pam_get_item(pamh, PAM_OLDAUTHTOK, &v) != PAM_SUCCESS || v == NULL)
        return PAM_AUTHTOK_RECOVERY_ERR;
    oldpw = v;
    if (o.use_authtok) {
        if (pam_get_item(pamh, PAM_AUTHTOK, &v) != PAM_SUCCESS || v == NULL)
            return PAM_AUTHTOK_RECOVERY_ERR;
        newpw = v;
    } else {
        char *a = NULL, *b = NULL;
        rc = pam_prompt(pamh, PAM_PROMPT_ECHO_OFF, &a, "New password: ");
        if (rc == PAM_SUCCESS)
            rc = pam_prompt(pamh, PAM_PROMPT_ECHO_OFF, &b, "Retype new password: ");
        if (rc == PAM_SUCCESS && (a == NULL || b == NULL))
            rc = PAM_CONV_ERR;
        if (rc == PAM_SUCCESS && strcmp(a, b) != 0) {
            pam_error(pamh, "Sorry, passwords do not match.");
            rc = PAM_AUTHTOK_ERR;
        }
        if (rc == PAM_SUCCESS)
            rc = pam_set_item(pamh, PAM_AUTHTOK, a);
        if (a != NULL) {
            explicit_bzero(a, strlen(a));
            free(a);
        }
        if (b != NULL) {
            explicit_bzero(b, strlen(b));
            free(b);
        }
        if (rc != PAM_SUCCESS)
            return rc;
        if (pam_get_item(pamh, PAM_AUTHTOK, &v) != PAM_SUCCESS || v == NULL)
            return PAM_AUTHTOK_ERR;
        newpw = v;
    }
    json_t *resp;
    json_t *req =
        json_pack("{s:s, s:s, s:s, s:s, s:o}", "op", "passwd.change", "user", user, "old_password",
                  oldpw, "new_password", newpw, "client", client_json(pamh));
    rc = call(&o, req, &resp);
    json_decref(req);
    if (rc == GH_OS_OK) {
        json_decref(resp);
        pam_syslog(pamh, LOG_INFO, "password changed for %s", user);
        return PAM_SUCCESS;
    }
    if (rc != GH_OS_ERROR) {
        pam_syslog(pamh, LOG_ERR, "cannot reach gatehoused at %s", o.socket);
        return PAM_AUTHINFO_UNAVAIL;
    }
    const char *code = gh_os_error_code(resp);
    if (strcmp(code, "invalid_argument") == 0 || strcmp(code, "permission_denied") == 0) {
        /* too short, or managed upstream: the server's message says which */
        pam_error(pamh, "%s", gh_os_error_message(resp));
        rc = PAM_AUTHTOK_ERR;
    } else {
        rc = map_error(pamh, resp, PAM_AUTH_ERR);
    }
    json_decref(resp);
    return rc;
}

/* ---- session: nothing (pam_mkhomedir does homes) ---- */

EXPORT int pam_sm_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh, (void)flags, (void)argc, (void)argv;
    return PAM_SUCCESS;
}

EXPORT int pam_sm_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh, (void)flags, (void)argc, (void)argv;
    return PAM_SUCCESS;
}
