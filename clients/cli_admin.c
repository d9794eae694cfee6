/*
 * cli_admin.c: authentication, tokens, server counters, the change log and
 * upstream sync.
 *
 * `auth` goes through libgatehouse's typed gh_auth so the password never
 * enters a json_t; in human mode it prints only the token so that
 * TOKEN=$(gatehouse auth alice) works. `audit --follow` polls the audit
 * operation (there is no server push in protocol v1) and tolerates either
 * reading of "since" (exclusive or inclusive) by never printing a sequence
 * number twice.
 */
#include "gh-config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clients/cli-int.h"

int cli_auth(cli *x)
{
    char pw[CLI_PASSWORD_MAX], prompt[128], token[GH_CLIENT_TOKEN_MAX + 1];
    long long ttl = 0;
    int64_t expires = 0;
    int have, rc;
    gh_client *c;

    if ((rc = cli_opt_int(x, "ttl", 1, 4294967295LL, &ttl, &have)) != 0)
        return rc;
    json_t *probe = json_string(x->pos[0]);
    if (probe == NULL)
        return cli_usage(x, "USER is not valid UTF-8");
    json_decref(probe);
    if ((c = cli_client(x, &rc)) == NULL)
        return rc;
    snprintf(prompt, sizeof(prompt), "Password for %s: ", x->pos[0]);
    if ((rc = cli_password(x, prompt, 0, pw, sizeof(pw))) != 0)
        return rc;
    rc = gh_auth(c, x->pos[0], pw, (unsigned)ttl, token, sizeof(token), &expires);
    cli_wipe(pw, sizeof(pw));
    if (rc < 0)
        return cli_report(x, rc);
    if (x->json) {
        json_t *out = json_pack("{sbsssssI}", "ok", 1, "user", x->pos[0], "token", token,
                                "expires_at", (json_int_t)expires);
        cli_print_json(out);
        cli_wipe_json_string(json_object_get(out, "token"));
        json_decref(out);
    } else {
        printf("%s\n", token);
    }
    cli_wipe(token, sizeof(token));
    return CLI_EXIT_OK;
}

/* The token: the first line of stdin for "-", else $GATEHOUSE_TOKEN. Never
 * an argument: every local user can read another process's argv (ps,
 * /proc/PID/cmdline), and a token is as good as the password. */
static int token_arg(cli *x, char *buf, size_t len)
{
    const char *env = getenv("GATEHOUSE_TOKEN");

    if (x->npos > 0 && strcmp(x->pos[0], "-") != 0)
        return cli_usage(x, "a token on the command line is visible to every local user: give "
                            "'-' and the token on stdin, or set GATEHOUSE_TOKEN");
    if (x->npos == 0) {
        if (env == NULL || env[0] == '\0')
            return cli_usage(x, "no token: give '-' and the token on stdin, or set "
                                "GATEHOUSE_TOKEN");
        if (strlen(env) >= len)
            return cli_usage(x, "GATEHOUSE_TOKEN is too long");
        memcpy(buf, env, strlen(env) + 1);
        return 0;
    }
    if (fgets(buf, (int)len, stdin) == NULL)
        return cli_usage(x, "no token on stdin");
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

static int token_call(cli *x, const char *op)
{
    char token[1024];
    json_t *req, *resp = NULL;
    int rc;

    if ((rc = token_arg(x, token, sizeof(token))) != 0)
        return rc;
    req = cli_req(op);
    cli_set_str(x, req, "token", token);
    cli_wipe(token, sizeof(token));
    rc = cli_call(x, req, &resp);
    cli_wipe_json_string(json_object_get(req, "token"));
    json_decref(req);
    if (rc == 0 && !cli_json_out(x, resp)) {
        if (strcmp(op, "whoami") == 0) {
            char buf[64];
            cli_kv("user", cli_str(resp, "user"));
            cli_kv("expires", cli_time(resp, "expires_at", buf, sizeof(buf)));
            cli_kv("admin", json_is_true(json_object_get(resp, "admin")) ? "yes" : "no");
        } else {
            printf("token revoked\n");
        }
    }
    json_decref(resp);
    return rc;
}

int cli_whoami(cli *x)
{
    return token_call(x, "whoami");
}

int cli_logout(cli *x)
{
    return token_call(x, "logout");
}

int cli_ping(cli *x)
{
    json_t *req = cli_req("ping"), *resp = NULL;
    char buf[32];
    int rc = cli_call(x, req, &resp);

    if (rc == 0 && !cli_json_out(x, resp))
        printf("gatehoused %s, protocol %s\n", cli_str(resp, "version"),
               cli_num(resp, "protocol", buf, sizeof(buf)));
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_stats(cli *x)
{
    static const char *const hdr[] = {"OP", "COUNT", "ERRORS", "P50_US", "P99_US"};
    json_t *req = cli_req("stats"), *resp = NULL, *rest, *reqs, *o;
    const char *op;
    int rc = cli_call(x, req, &resp);

    json_decref(req);
    if (rc != 0 || cli_json_out(x, resp))
        goto done;
    rest = json_copy(resp);
    reqs = json_object_get(resp, "requests");
    json_object_del(rest, "requests");
    cli_print_tree(rest, 0);
    json_decref(rest);
    if (json_is_object(reqs) && json_object_size(reqs) > 0) {
        cli_table *t = cli_table_new(5, hdr);
        json_object_foreach(reqs, op, o)
        {
            char a[32], b[32], c[32], d[32];
            const char *row[5] = {
                op, cli_num(o, "count", a, sizeof(a)), cli_num(o, "errors", b, sizeof(b)),
                cli_num(o, "p50_us", c, sizeof(c)), cli_num(o, "p99_us", d, sizeof(d))};
            cli_table_row(t, row);
        }
        printf("\n");
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
done:
    json_decref(resp);
    return rc;
}

static volatile sig_atomic_t stop_follow;

static void on_interrupt(int sig)
{
    (void)sig;
    stop_follow = 1;
}

static void print_entry(json_t *e)
{
    char seq[32], when[40];

    printf("%-8s  %-20s  %-16s  %-20s  %s\n", cli_num(e, "seq", seq, sizeof(seq)),
           cli_time(e, "time", when, sizeof(when)), cli_str(e, "actor"), cli_str(e, "op"),
           cli_str(e, "target"));
}

int cli_audit(cli *x)
{
    long long since = 0, limit = 0, interval = 1;
    int have_since, have_limit, have_iv, rc, follow = cli_flag(x, "follow");
    json_t *all = json_array(), *last = NULL;
    long long printed = 0;

    if ((rc = cli_opt_int(x, "since", 0, (1LL << 62), &since, &have_since)) != 0 ||
        (rc = cli_opt_int(x, "limit", 1, (1LL << 40), &limit, &have_limit)) != 0 ||
        (rc = cli_opt_int(x, "interval", 1, 3600, &interval, &have_iv)) != 0)
        goto done;
    if (follow) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_interrupt;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        if (!x->json)
            printf("%-8s  %-20s  %-16s  %-20s  %s\n", "SEQ", "TIME", "ACTOR", "OP", "TARGET");
    }
    for (;;) {
        json_t *req = cli_req("audit"), *resp = NULL, *entries, *e;
        size_t i, fresh = 0;
        long long want = CLI_PAGE;

        if (have_limit && limit - printed < want)
            want = limit - printed;
        cli_set_int(req, "since", since);
        cli_set_int(req, "limit", want);
        rc = cli_call(x, req, &resp);
        json_decref(req);
        if (rc != 0)
            goto done;
        json_decref(last);
        last = json_incref(json_object_get(resp, "last"));
        entries = json_object_get(resp, "entries");
        json_array_foreach(entries, i, e)
        {
            long long seq = json_integer_value(json_object_get(e, "seq"));
            if (seq <= since && seq != 0)
                continue; /* "since" read inclusively: already shown */
            if (have_limit && printed >= limit)
                break;
            since = seq > since ? seq : since;
            fresh++;
            printed++;
            if (follow) {
                if (x->json) {
                    json_dumpf(e, stdout, JSON_COMPACT);
                    fputc('\n', stdout);
                } else {
                    print_entry(e);
                }
            } else {
                json_array_append(all, e);
            }
        }
        json_decref(resp);
        if (follow)
            fflush(stdout);
        if (have_limit && printed >= limit)
            break;
        if (fresh == 0 || (long long)json_array_size(entries) < want) {
            if (!follow)
                break;
            for (long long s = 0; s < interval * 10 && !stop_follow; s++)
                usleep(100000);
        }
        if (stop_follow)
            break;
    }
    if (!follow) {
        if (x->json) {
            json_t *out =
                json_pack("{sbsOsO}", "ok", 1, "entries", all, "last", last ? last : json_null());
            cli_print_json(out);
            json_decref(out);
        } else {
            json_t *e;
            size_t i;
            static const char *const hdr[] = {"SEQ", "TIME", "ACTOR", "OP", "TARGET"};
            cli_table *t = cli_table_new(5, hdr);
            json_array_foreach(all, i, e)
            {
                char seq[32], when[40];
                const char *row[5] = {cli_num(e, "seq", seq, sizeof(seq)),
                                      cli_time(e, "time", when, sizeof(when)), cli_str(e, "actor"),
                                      cli_str(e, "op"), cli_str(e, "target")};
                cli_table_row(t, row);
            }
            cli_table_print(t, stdout);
            cli_table_free(t);
        }
    }
    rc = CLI_EXIT_OK;
done:
    json_decref(all);
    json_decref(last);
    return rc;
}

int cli_sync_status(cli *x)
{
    static const char *const hdr[] = {"NAME",  "MODE",   "STATE", "LAST SUCCESS",
                                      "USERS", "GROUPS", "LAG_S", "LAST ERROR"};
    json_t *req = cli_req("sync.status"), *resp = NULL, *u;
    size_t i;
    int rc = cli_call(x, req, &resp);

    json_decref(req);
    if (rc == 0 && !cli_json_out(x, resp)) {
        cli_table *t = cli_table_new(8, hdr);
        json_array_foreach(json_object_get(resp, "upstreams"), i, u)
        {
            char when[40], users[24], groups[24], lag[24];
            const char *row[8] = {cli_str(u, "name"),
                                  cli_str(u, "mode"),
                                  cli_str(u, "state"),
                                  cli_time(u, "last_success", when, sizeof(when)),
                                  cli_num(u, "users", users, sizeof(users)),
                                  cli_num(u, "groups", groups, sizeof(groups)),
                                  cli_num(u, "lag_s", lag, sizeof(lag)),
                                  cli_str(u, "last_error")};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(resp);
    return rc;
}

static int run_one(cli *x, const char *upstream)
{
    json_t *req = cli_req("sync.run"), *resp = NULL;
    int rc;

    cli_set_str(x, req, "upstream", upstream);
    if (cli_flag(x, "full"))
        json_object_set_new(req, "full", json_true());
    if (cli_flag(x, "force"))
        json_object_set_new(req, "force", json_true());
    if ((rc = cli_call(x, req, &resp)) == 0 && !cli_json_out(x, resp))
        printf("refresh of %s started\n", upstream);
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_sync_run(cli *x)
{
    json_t *req, *resp = NULL, *u;
    size_t i;
    int rc, worst = 0;

    if (x->npos == 1)
        return run_one(x, x->pos[0]);
    req = cli_req("sync.status");
    rc = cli_call(x, req, &resp);
    json_decref(req);
    if (rc != 0)
        return rc;
    if (json_array_size(json_object_get(resp, "upstreams")) == 0 && !x->json)
        printf("no upstream configured\n");
    json_array_foreach(json_object_get(resp, "upstreams"), i, u)
    {
        rc = run_one(x, cli_str(u, "name"));
        if (rc > worst)
            worst = rc;
    }
    json_decref(resp);
    return worst;
}
