/*
 * cli_user.c: the user and group commands of the CLI.
 *
 * Each command builds one request of docs/PROTOCOL.md ("Users", "Groups")
 * from its arguments; lists read every page (limit 1000, "after" = "next")
 * so that a human sees everything and --json prints one merged response.
 * Passwords travel in a json_t only for the time of the call and are wiped
 * before it is freed.
 */
#include "gh-config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients/cli-int.h"

static int is_state(const char *s)
{
    return strcmp(s, "active") == 0 || strcmp(s, "locked") == 0 || strcmp(s, "disabled") == 0;
}

static void print_user(json_t *u)
{
    char buf[64];
    char *groups;
    json_t *g = json_object_get(u, "groups");

    cli_kv("name", cli_str(u, "name"));
    cli_kv("id", cli_num(u, "id", buf, sizeof(buf)));
    cli_kv("uid", cli_num(u, "uid", buf, sizeof(buf)));
    cli_kv("gid", cli_num(u, "gid", buf, sizeof(buf)));
    cli_kv("display name", cli_str(u, "display_name"));
    cli_kv("mail", cli_str(u, "mail"));
    cli_kv("home", cli_str(u, "home"));
    cli_kv("shell", cli_str(u, "shell"));
    cli_kv("gecos", cli_str(u, "gecos"));
    cli_kv("state", cli_str(u, "state"));
    cli_kv("origin", cli_str(u, "origin"));
    if (json_object_get(u, "origin_dn"))
        cli_kv("origin dn", cli_str(u, "origin_dn"));
    cli_kv("password", json_is_true(json_object_get(u, "has_password")) ? "set" : "none");
    if (json_is_array(json_object_get(u, "direct_groups"))) {
        groups = cli_join(json_object_get(u, "direct_groups"));
        cli_kv("direct groups", groups);
        free(groups);
    }
    if (json_is_array(g)) {
        groups = cli_join(g);
        cli_kv("groups", groups);
        free(groups);
    }
    cli_kv("created", cli_time(u, "created", buf, sizeof(buf)));
    cli_kv("modified", cli_time(u, "modified", buf, sizeof(buf)));
}

/* Prints a response holding one user (add, get, set). */
static int show_user(cli *x, json_t *resp)
{
    if (!cli_json_out(x, resp))
        print_user(json_object_get(resp, "user"));
    return CLI_EXIT_OK;
}

/* Fields shared by add and set. */
static int user_fields(cli *x, json_t *req)
{
    long long v;
    int have, rc;
    const char *state = cli_opt(x, "state");

    if ((rc = cli_opt_int(x, "uid", 0, 4294967295LL, &v, &have)) != 0)
        return rc;
    if (have)
        cli_set_int(req, "uid", v);
    if ((rc = cli_opt_int(x, "gid", 0, 4294967295LL, &v, &have)) != 0)
        return rc;
    if (have)
        cli_set_int(req, "gid", v);
    cli_set_str(x, req, "display_name", cli_opt(x, "display-name"));
    cli_set_str(x, req, "mail", cli_opt(x, "mail"));
    cli_set_str(x, req, "home", cli_opt(x, "home"));
    cli_set_str(x, req, "shell", cli_opt(x, "shell"));
    cli_set_str(x, req, "gecos", cli_opt(x, "gecos"));
    if (state != NULL) {
        if (!is_state(state))
            return cli_usage(x, "--state must be active, locked or disabled, not '%s'", state);
        cli_set_str(x, req, "state", state);
    }
    return 0;
}

/* Calls req, which may hold a "password", and wipes it afterwards. */
static int call_secret(cli *x, json_t *req, json_t **resp)
{
    int rc = cli_call(x, req, resp);
    cli_wipe_json_string(json_object_get(req, "password"));
    return rc;
}

int cli_user_add(cli *x)
{
    char pw[CLI_PASSWORD_MAX];
    json_t *req = cli_req("user.add"), *resp = NULL;
    int rc;

    cli_set_str(x, req, "name", x->pos[0]);
    if ((rc = user_fields(x, req)) != 0)
        goto done;
    if (cli_flag(x, "no-password") && cli_flag(x, "password-stdin")) {
        rc = cli_usage(x, "--no-password and --password-stdin exclude each other");
        goto done;
    }
    if (!cli_flag(x, "no-password")) {
        char prompt[128];
        snprintf(prompt, sizeof(prompt), "Password for %s: ", x->pos[0]);
        if ((rc = cli_password(x, prompt, 1, pw, sizeof(pw))) != 0)
            goto done;
        cli_set_str(x, req, "password", pw);
        cli_wipe(pw, sizeof(pw));
    }
    if ((rc = call_secret(x, req, &resp)) == 0)
        rc = show_user(x, resp);
done:
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_user_get(cli *x)
{
    json_t *req = cli_req("user.get"), *resp = NULL;
    int rc;

    cli_set_str(x, req, "name", x->pos[0]);
    if ((rc = cli_call(x, req, &resp)) == 0)
        rc = show_user(x, resp);
    json_decref(req);
    json_decref(resp);
    return rc;
}

/*
 * Reads every page of op ("user.list" or "group.list") into one array.
 * *merged receives the last response with its array replaced by all items
 * (and "next" the server's last answer, null at the end).
 */
static int list_all(cli *x, const char *op, const char *key, json_t **merged)
{
    json_t *all = json_array(), *after = NULL, *resp = NULL;
    long long limit = 0;
    int have, rc;

    *merged = NULL;
    if ((rc = cli_opt_int(x, "limit", 1, 1LL << 40, &limit, &have)) != 0)
        goto done;
    for (;;) {
        json_t *req = cli_req(op), *items;
        size_t want = CLI_PAGE;
        if (have && (long long)(json_array_size(all) + want) > limit)
            want = (size_t)(limit - (long long)json_array_size(all));
        cli_set_str(x, req, "prefix", cli_opt(x, "prefix"));
        cli_set_int(req, "limit", (long long)want);
        if (after != NULL)
            json_object_set(req, "after", after);
        json_decref(resp);
        rc = cli_call(x, req, &resp);
        json_decref(req);
        if (rc != 0)
            goto done;
        items = json_object_get(resp, key);
        if (!json_is_array(items)) {
            rc = cli_fail(CLI_EXIT_SERVER, "protocol_error: %s response without \"%s\"", op, key);
            goto done;
        }
        json_array_extend(all, items);
        json_decref(after);
        after = json_incref(json_object_get(resp, "next"));
        if (after == NULL || json_is_null(after) || json_array_size(items) == 0 ||
            (have && (long long)json_array_size(all) >= limit))
            break;
    }
    json_object_set(resp, key, all);
    *merged = resp;
    resp = NULL;
done:
    json_decref(all);
    json_decref(after);
    json_decref(resp);
    return rc;
}

int cli_user_list(cli *x)
{
    static const char *const hdr[] = {"NAME",   "UID",          "GID", "STATE",
                                      "ORIGIN", "DISPLAY NAME", "MAIL"};
    json_t *resp, *u;
    size_t i;
    int rc = list_all(x, "user.list", "users", &resp);

    if (rc != 0)
        return rc;
    if (!cli_json_out(x, resp)) {
        cli_table *t = cli_table_new(7, hdr);
        json_array_foreach(json_object_get(resp, "users"), i, u)
        {
            char uid[24], gid[24];
            const char *row[7] = {cli_str(u, "name"),
                                  cli_num(u, "uid", uid, sizeof(uid)),
                                  cli_num(u, "gid", gid, sizeof(gid)),
                                  cli_str(u, "state"),
                                  cli_str(u, "origin"),
                                  cli_str(u, "display_name"),
                                  cli_str(u, "mail")};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(resp);
    return CLI_EXIT_OK;
}

int cli_user_set(cli *x)
{
    json_t *req = cli_req("user.set"), *resp = NULL;
    int rc;

    cli_set_str(x, req, "name", x->pos[0]);
    cli_set_str(x, req, "rename", cli_opt(x, "rename"));
    if ((rc = user_fields(x, req)) != 0)
        goto done;
    if (json_object_size(req) == 2) {
        rc = cli_usage(x, "nothing to change: give at least one of --rename, --uid, --gid, "
                          "--display-name, --mail, --state");
        goto done;
    }
    if ((rc = cli_call(x, req, &resp)) == 0)
        rc = show_user(x, resp);
done:
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_user_passwd(cli *x)
{
    char pw[CLI_PASSWORD_MAX], prompt[128];
    json_t *req = cli_req("user.passwd"), *resp = NULL;
    int rc;

    cli_set_str(x, req, "name", x->pos[0]);
    snprintf(prompt, sizeof(prompt), "New password for %s: ", x->pos[0]);
    if ((rc = cli_password(x, prompt, 1, pw, sizeof(pw))) != 0)
        goto done;
    cli_set_str(x, req, "password", pw);
    cli_wipe(pw, sizeof(pw));
    if ((rc = call_secret(x, req, &resp)) == 0 && !cli_json_out(x, resp))
        printf("password of %s changed\n", x->pos[0]);
done:
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_user_state(cli *x)
{
    const char *verb = x->cmd->verb, *state;
    json_t *req, *resp = NULL;
    int rc;

    if (strcmp(verb, "lock") == 0)
        state = "locked";
    else if (strcmp(verb, "disable") == 0)
        state = "disabled";
    else
        state = "active"; /* unlock, enable */
    req = cli_req("user.set");
    cli_set_str(x, req, "name", x->pos[0]);
    cli_set_str(x, req, "state", state);
    if ((rc = cli_call(x, req, &resp)) == 0 && !cli_json_out(x, resp))
        printf("user %s is %s\n", x->pos[0], state);
    json_decref(req);
    json_decref(resp);
    return rc;
}

/* Deletes a user or a group after confirmation. */
static int del(cli *x, const char *op, const char *what, const char *consequence)
{
    json_t *req, *resp = NULL;
    int rc = cli_confirm(x, "Delete %s '%s'%s?", what, x->pos[0], consequence);

    if (rc != 0)
        return rc;
    req = cli_req(op);
    cli_set_str(x, req, "name", x->pos[0]);
    if ((rc = cli_call(x, req, &resp)) == 0 && !cli_json_out(x, resp))
        printf("%s %s deleted\n", what, x->pos[0]);
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_user_del(cli *x)
{
    return del(x, "user.del", "user", " with its memberships, bindings and tokens");
}

/* ---- sessions ---- */

int cli_user_sessions(cli *x)
{
    json_t *req = cli_req("session.list"), *resp = NULL, *s;
    static const char *const hdr[] = {"ID", "CREATED", "EXPIRES", "PEER"};
    size_t i;
    int rc;

    cli_set_str(x, req, "user", x->pos[0]);
    if ((rc = cli_call(x, req, &resp)) == 0 && !cli_json_out(x, resp)) {
        cli_table *t = cli_table_new(4, hdr);
        json_array_foreach(json_object_get(resp, "sessions"), i, s)
        {
            char created[64], expires[64];
            const char *row[4] = {
                cli_str(s, "id"), cli_time(s, "created", created, sizeof(created)),
                cli_time(s, "expires_at", expires, sizeof(expires)), cli_str(s, "peer")};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_user_logout_all(cli *x)
{
    unsigned n = 0;
    int rc, st;
    gh_client *c = cli_client(x, &rc);

    if (c == NULL)
        return rc;
    if ((st = gh_logout_all(c, x->pos[0], &n)) < 0)
        return cli_report(x, st);
    if (x->json) {
        json_t *out = json_pack("{s:b, s:I}", "ok", 1, "revoked", (json_int_t)n);
        cli_print_json(out);
        json_decref(out);
    } else {
        printf("%u session%s of %s ended\n", n, n == 1 ? "" : "s", x->pos[0]);
    }
    return CLI_EXIT_OK;
}

/* ---- groups ---- */

static void print_group(json_t *g)
{
    char buf[64], *s;
    json_t *m = json_object_get(g, "members"), *eff = json_object_get(g, "effective_users");

    cli_kv("name", cli_str(g, "name"));
    cli_kv("id", cli_num(g, "id", buf, sizeof(buf)));
    cli_kv("gid", cli_num(g, "gid", buf, sizeof(buf)));
    cli_kv("description", cli_str(g, "description"));
    cli_kv("origin", cli_str(g, "origin"));
    if (json_object_get(g, "origin_dn"))
        cli_kv("origin dn", cli_str(g, "origin_dn"));
    if (json_is_object(m)) {
        s = cli_join(json_object_get(m, "users"));
        cli_kv("member users", s);
        free(s);
        s = cli_join(json_object_get(m, "groups"));
        cli_kv("member groups", s);
        free(s);
    }
    if (json_is_array(eff)) {
        s = cli_join(eff);
        cli_kv("effective users", s);
        free(s);
    }
    cli_kv("created", cli_time(g, "created", buf, sizeof(buf)));
    cli_kv("modified", cli_time(g, "modified", buf, sizeof(buf)));
}

static int show_group(cli *x, json_t *resp)
{
    if (!cli_json_out(x, resp))
        print_group(json_object_get(resp, "group"));
    return CLI_EXIT_OK;
}

int cli_group_add(cli *x)
{
    json_t *req = cli_req("group.add"), *resp = NULL;
    long long gid;
    int have, rc;

    cli_set_str(x, req, "name", x->pos[0]);
    if ((rc = cli_opt_int(x, "gid", 0, 4294967295LL, &gid, &have)) != 0)
        goto done;
    if (have)
        cli_set_int(req, "gid", gid);
    cli_set_str(x, req, "description", cli_opt(x, "description"));
    if ((rc = cli_call(x, req, &resp)) == 0)
        rc = show_group(x, resp);
done:
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_group_get(cli *x)
{
    json_t *req = cli_req("group.get"), *resp = NULL;
    int rc;

    cli_set_str(x, req, "name", x->pos[0]);
    if ((rc = cli_call(x, req, &resp)) == 0)
        rc = show_group(x, resp);
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_group_list(cli *x)
{
    static const char *const hdr[] = {"NAME", "GID", "ORIGIN", "DESCRIPTION"};
    json_t *resp, *g;
    size_t i;
    int rc = list_all(x, "group.list", "groups", &resp);

    if (rc != 0)
        return rc;
    if (!cli_json_out(x, resp)) {
        cli_table *t = cli_table_new(4, hdr);
        json_array_foreach(json_object_get(resp, "groups"), i, g)
        {
            char gid[24];
            const char *row[4] = {cli_str(g, "name"), cli_num(g, "gid", gid, sizeof(gid)),
                                  cli_str(g, "origin"), cli_str(g, "description")};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(resp);
    return CLI_EXIT_OK;
}

int cli_group_del(cli *x)
{
    return del(x, "group.del", "group", "");
}

int cli_group_member(cli *x)
{
    int add = strcmp(x->cmd->verb, "add-member") == 0;
    const char *sub = cli_opt(x, "group");
    json_t *req, *resp = NULL;
    int rc;

    if ((sub == NULL) == (x->npos < 2))
        return cli_usage(x, "give either USER or --group SUBGROUP");
    req = cli_req(add ? "group.add_member" : "group.remove_member");
    cli_set_str(x, req, "group", x->pos[0]);
    if (sub)
        cli_set_str(x, req, "subgroup", sub);
    else
        cli_set_str(x, req, "user", x->pos[1]);
    if ((rc = cli_call(x, req, &resp)) == 0 && !cli_json_out(x, resp))
        printf("%s %s %s %s %s\n", sub ? "group" : "user", sub ? sub : x->pos[1],
               add ? "added to" : "removed from", "group", x->pos[0]);
    json_decref(req);
    json_decref(resp);
    return rc;
}
