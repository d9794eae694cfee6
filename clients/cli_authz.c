/*
 * cli_authz.c: roles, grants and decisions (PROTOCOL.md "Authorization").
 *
 * `role allow|deny|inherit` are read-modify-write: role.get, then role.set of
 * the one list that changed, carrying the existing entries as the server
 * returned them so that fields this CLI does not know survive. Two admins
 * editing the same role at once can lose an update; the protocol has no
 * compare-and-set yet. A `role set` that would drop rules or parents asks for
 * confirmation first.
 */
#include "gh-config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients/cli-int.h"

/* "ACTION=RESOURCE" (actions never contain '=') into {"action","resource"}. */
static json_t *parse_rule(cli *x, const char *opt, const char *s, int *rc)
{
    const char *eq = strchr(s, '=');
    json_t *r;
    char *action;

    *rc = 0;
    if (eq == NULL || eq == s || eq[1] == '\0') {
        *rc = cli_usage(x, "--%s expects ACTION=RESOURCE, not '%s'", opt, s);
        return NULL;
    }
    action = strndup(s, (size_t)(eq - s));
    r = json_object();
    if (action == NULL || r == NULL) {
        free(action);
        json_decref(r);
        *rc = cli_fail(CLI_EXIT_SERVER, "out_of_memory");
        return NULL;
    }
    cli_set_str(x, r, "action", action);
    cli_set_str(x, r, "resource", eq + 1);
    free(action);
    return r;
}

/* --allow/--deny values into an array; NULL + *rc on error. */
static json_t *rules_from_opts(cli *x, const char *opt, int *rc)
{
    const char *vals[CLI_MAX_OPTS];
    size_t n = cli_opt_all(x, opt, vals, CLI_MAX_OPTS);
    json_t *arr = json_array();

    *rc = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *r = parse_rule(x, opt, vals[i], rc);
        if (r == NULL) {
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, r);
    }
    return arr;
}

static json_t *parents_from_opts(cli *x)
{
    const char *vals[CLI_MAX_OPTS];
    size_t n = cli_opt_all(x, "parent", vals, CLI_MAX_OPTS);
    json_t *arr = json_array();

    for (size_t i = 0; i < n; i++) {
        json_t *s = json_string(vals[i]);
        if (s == NULL)
            x->bad_arg = 1;
        else
            json_array_append_new(arr, s);
    }
    return arr;
}

static void print_role(json_t *r)
{
    static const char *const hdr[] = {"EFFECT", "ACTION", "RESOURCE"};
    char buf[64], *parents = cli_join(json_object_get(r, "parents"));
    cli_table *t = cli_table_new(3, hdr);
    json_t *rule;
    size_t i;

    cli_kv("name", cli_str(r, "name"));
    cli_kv("description", cli_str(r, "description"));
    cli_kv("parents", parents);
    free(parents);
    cli_kv("created", cli_time(r, "created", buf, sizeof(buf)));
    cli_kv("modified", cli_time(r, "modified", buf, sizeof(buf)));
    json_array_foreach(json_object_get(r, "deny"), i, rule)
    {
        const char *row[3] = {"deny", cli_str(rule, "action"), cli_str(rule, "resource")};
        cli_table_row(t, row);
    }
    json_array_foreach(json_object_get(r, "allow"), i, rule)
    {
        const char *row[3] = {"allow", cli_str(rule, "action"), cli_str(rule, "resource")};
        cli_table_row(t, row);
    }
    if (json_array_size(json_object_get(r, "allow")) +
        json_array_size(json_object_get(r, "deny"))) {
        printf("\n");
        cli_table_print(t, stdout);
    } else {
        cli_kv("rules", "-");
    }
    cli_table_free(t);
}

static int show_role(cli *x, json_t *resp)
{
    if (!cli_json_out(x, resp))
        print_role(json_object_get(resp, "role"));
    return CLI_EXIT_OK;
}

int cli_role_add(cli *x)
{
    json_t *req = cli_req("role.add"), *resp = NULL, *a;
    int rc;

    cli_set_str(x, req, "name", x->pos[0]);
    cli_set_str(x, req, "description", cli_opt(x, "description"));
    if ((a = rules_from_opts(x, "allow", &rc)) == NULL)
        goto done;
    if (json_array_size(a))
        json_object_set(req, "allow", a);
    json_decref(a);
    if ((a = rules_from_opts(x, "deny", &rc)) == NULL)
        goto done;
    if (json_array_size(a))
        json_object_set(req, "deny", a);
    json_decref(a);
    a = parents_from_opts(x);
    if (json_array_size(a))
        json_object_set(req, "parents", a);
    json_decref(a);
    if ((rc = cli_call(x, req, &resp)) == 0)
        rc = show_role(x, resp);
done:
    json_decref(req);
    json_decref(resp);
    return rc;
}

static int role_get(cli *x, const char *name, json_t **resp)
{
    json_t *req = cli_req("role.get");
    int rc;

    cli_set_str(x, req, "name", name);
    rc = cli_call(x, req, resp);
    json_decref(req);
    if (rc == 0 && !json_is_object(json_object_get(*resp, "role"))) {
        json_decref(*resp);
        *resp = NULL;
        rc = cli_fail(CLI_EXIT_SERVER, "protocol_error: role.get response without \"role\"");
    }
    return rc;
}

int cli_role_get(cli *x)
{
    json_t *resp = NULL;
    int rc = role_get(x, x->pos[0], &resp);

    if (rc == 0)
        rc = show_role(x, resp);
    json_decref(resp);
    return rc;
}

int cli_role_list(cli *x)
{
    static const char *const hdr[] = {"NAME", "PARENTS", "ALLOW", "DENY", "DESCRIPTION"};
    json_t *req = cli_req("role.list"), *resp = NULL, *r;
    size_t i;
    int rc = cli_call(x, req, &resp);

    json_decref(req);
    if (rc != 0)
        return rc;
    if (!cli_json_out(x, resp)) {
        cli_table *t = cli_table_new(5, hdr);
        json_array_foreach(json_object_get(resp, "roles"), i, r)
        {
            char na[24], nd[24], *parents = cli_join(json_object_get(r, "parents"));
            snprintf(na, sizeof(na), "%zu", json_array_size(json_object_get(r, "allow")));
            snprintf(nd, sizeof(nd), "%zu", json_array_size(json_object_get(r, "deny")));
            const char *row[5] = {cli_str(r, "name"), parents, na, nd, cli_str(r, "description")};
            cli_table_row(t, row);
            free(parents);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(resp);
    return CLI_EXIT_OK;
}

static int same_rule(json_t *a, json_t *b)
{
    return strcmp(cli_str(a, "action"), cli_str(b, "action")) == 0 &&
           strcmp(cli_str(a, "resource"), cli_str(b, "resource")) == 0;
}

/* Entries of old that are not in new (rules by action+resource, parents by
 * name). */
static size_t count_removed(json_t *old, json_t *new, int rules)
{
    size_t i, j, n = 0;
    json_t *o, *m;

    json_array_foreach(old, i, o)
    {
        int found = 0;
        json_array_foreach(new, j, m)
        {
            if (rules ? same_rule(o, m) : json_equal(o, m)) {
                found = 1;
                break;
            }
        }
        n += !found;
    }
    return n;
}

int cli_role_set(cli *x)
{
    json_t *req = cli_req("role.set"), *resp = NULL, *cur = NULL, *role, *v;
    size_t removed_rules = 0, removed_parents = 0;
    const char *lists[2] = {"allow", "deny"};
    int rc = 0;

    cli_set_str(x, req, "name", x->pos[0]);
    cli_set_str(x, req, "description", cli_opt(x, "description"));
    for (int k = 0; k < 2; k++) {
        char no[16];
        snprintf(no, sizeof(no), "no-%s", lists[k]);
        if (cli_flag(x, no) && cli_opt(x, lists[k])) {
            rc = cli_usage(x, "--%s and --%s exclude each other", lists[k], no);
            goto done;
        }
        if (cli_flag(x, no)) {
            json_object_set_new(req, lists[k], json_array());
        } else if (cli_opt(x, lists[k])) {
            if ((v = rules_from_opts(x, lists[k], &rc)) == NULL)
                goto done;
            json_object_set_new(req, lists[k], v);
        }
    }
    if (cli_flag(x, "no-parents") && cli_opt(x, "parent")) {
        rc = cli_usage(x, "--parent and --no-parents exclude each other");
        goto done;
    }
    if (cli_flag(x, "no-parents"))
        json_object_set_new(req, "parents", json_array());
    else if (cli_opt(x, "parent"))
        json_object_set_new(req, "parents", parents_from_opts(x));
    if (json_object_size(req) == 2) {
        rc = cli_usage(x, "nothing to change: give --description, --allow, --deny or --parent");
        goto done;
    }
    /* what would go away? */
    if ((rc = role_get(x, x->pos[0], &cur)) != 0)
        goto done;
    role = json_object_get(cur, "role");
    for (int k = 0; k < 2; k++)
        if ((v = json_object_get(req, lists[k])) != NULL)
            removed_rules += count_removed(json_object_get(role, lists[k]), v, 1);
    if ((v = json_object_get(req, "parents")) != NULL)
        removed_parents = count_removed(json_object_get(role, "parents"), v, 0);
    if (removed_rules + removed_parents > 0 &&
        (rc = cli_confirm(x, "Role '%s': remove %zu rule(s) and %zu parent(s)?", x->pos[0],
                          removed_rules, removed_parents)) != 0)
        goto done;
    if ((rc = cli_call(x, req, &resp)) == 0)
        rc = show_role(x, resp);
done:
    json_decref(req);
    json_decref(cur);
    json_decref(resp);
    return rc;
}

int cli_role_del(cli *x)
{
    json_t *req, *resp = NULL;
    int force = cli_flag(x, "force");
    int rc = cli_confirm(x, "Delete role '%s'%s?", x->pos[0],
                         force ? " with its bindings and parent references" : "");

    if (rc != 0)
        return rc;
    req = cli_req("role.del");
    cli_set_str(x, req, "name", x->pos[0]);
    if (force)
        json_object_set_new(req, "force", json_true());
    if ((rc = cli_call(x, req, &resp)) == 0 && !cli_json_out(x, resp))
        printf("role %s deleted\n", x->pos[0]);
    json_decref(req);
    json_decref(resp);
    return rc;
}

/* role.set NAME with list key replaced by list. */
static int role_set_list(cli *x, const char *name, const char *key, json_t *list)
{
    json_t *req = cli_req("role.set"), *resp = NULL;
    int rc;

    cli_set_str(x, req, "name", name);
    json_object_set(req, key, list);
    if ((rc = cli_call(x, req, &resp)) == 0)
        rc = show_role(x, resp);
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_role_rule(cli *x)
{
    const char *key = strcmp(x->cmd->verb, "allow") == 0 ? "allow" : "deny";
    json_t *cur = NULL, *list, *rule, *r;
    size_t i;
    int rc;

    rule = json_object();
    cli_set_str(x, rule, "action", x->pos[1]);
    cli_set_str(x, rule, "resource", x->pos[2]);
    if ((rc = role_get(x, x->pos[0], &cur)) != 0)
        goto done;
    list = json_object_get(json_object_get(cur, "role"), key);
    list = json_is_array(list) ? json_copy(list) : json_array();
    json_array_foreach(list, i, r)
    {
        if (same_rule(r, rule)) {
            if (!cli_json_out(x, cur))
                printf("role %s already has %s %s %s\n", x->pos[0], key, x->pos[1], x->pos[2]);
            json_decref(list);
            goto done;
        }
    }
    json_array_append(list, rule);
    rc = role_set_list(x, x->pos[0], key, list);
    json_decref(list);
done:
    json_decref(rule);
    json_decref(cur);
    return rc;
}

int cli_role_inherit(cli *x)
{
    json_t *cur = NULL, *list, *p;
    size_t i;
    int rc;

    if ((rc = role_get(x, x->pos[0], &cur)) != 0)
        return rc;
    list = json_object_get(json_object_get(cur, "role"), "parents");
    list = json_is_array(list) ? json_copy(list) : json_array();
    json_array_foreach(list, i, p)
    {
        if (json_is_string(p) && strcmp(json_string_value(p), x->pos[1]) == 0) {
            if (!cli_json_out(x, cur))
                printf("role %s already inherits %s\n", x->pos[0], x->pos[1]);
            goto done;
        }
    }
    p = json_string(x->pos[1]);
    if (p == NULL) {
        rc = cli_usage(x, "PARENT is not valid UTF-8");
        goto done;
    }
    json_array_append_new(list, p);
    rc = role_set_list(x, x->pos[0], "parents", list);
done:
    json_decref(list);
    json_decref(cur);
    return rc;
}

/* --user / --group (exactly one when required). */
static int subject(cli *x, json_t *req, int required)
{
    const char *u = cli_opt(x, "user"), *g = cli_opt(x, "group");

    if (u && g)
        return cli_usage(x, "--user and --group exclude each other");
    if (required && !u && !g)
        return cli_usage(x, "give --user USER or --group GROUP");
    cli_set_str(x, req, "user", u);
    cli_set_str(x, req, "group", g);
    return 0;
}

int cli_grant(cli *x)
{
    json_t *req = cli_req("grant"), *resp = NULL;
    char id[32];
    int rc;

    cli_set_str(x, req, "role", x->pos[0]);
    if ((rc = subject(x, req, 1)) != 0)
        goto done;
    cli_set_str(x, req, "scope", cli_opt(x, "scope"));
    if ((rc = cli_call(x, req, &resp)) == 0 && !cli_json_out(x, resp)) {
        const char *u = cli_opt(x, "user"), *s = cli_opt(x, "scope");
        printf("binding %s: role %s granted to %s %s%s%s\n",
               cli_num(resp, "binding", id, sizeof(id)), x->pos[0], u ? "user" : "group",
               u ? u : cli_opt(x, "group"), s ? " on " : "", s ? s : "");
    }
done:
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_revoke(cli *x)
{
    json_t *req = cli_req("revoke"), *resp = NULL;
    const char *u = cli_opt(x, "user"), *g = cli_opt(x, "group");
    long long id;
    int rc;

    if (!u && !g) {
        if (cli_opt(x, "scope")) {
            rc = cli_usage(x, "--scope needs --user or --group");
            goto done;
        }
        if (cli_parse_int(x->pos[0], 1, (1LL << 53), &id) < 0) {
            rc = cli_usage(x,
                           "'%s' is not a binding id; to name a grant give ROLE with --user or "
                           "--group",
                           x->pos[0]);
            goto done;
        }
        cli_set_int(req, "binding", id);
        rc = cli_confirm(x, "Revoke binding %s?", x->pos[0]);
    } else {
        cli_set_str(x, req, "role", x->pos[0]);
        if ((rc = subject(x, req, 1)) != 0)
            goto done;
        cli_set_str(x, req, "scope", cli_opt(x, "scope"));
        rc = cli_confirm(x, "Revoke role '%s' from %s '%s'?", x->pos[0], u ? "user" : "group",
                         u ? u : g);
    }
    if (rc != 0)
        goto done;
    if ((rc = cli_call(x, req, &resp)) == 0 && !cli_json_out(x, resp))
        printf("revoked\n");
done:
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_bindings(cli *x)
{
    static const char *const hdr[] = {"ID", "ROLE", "SUBJECT", "SCOPE", "CREATED"};
    json_t *req = cli_req("bindings"), *resp = NULL, *b;
    size_t i;
    int n = !!cli_opt(x, "user") + !!cli_opt(x, "group") + !!cli_opt(x, "role");
    int rc;

    if (n > 1) {
        rc = cli_usage(x, "give at most one of --user, --group, --role");
        goto done;
    }
    cli_set_str(x, req, "user", cli_opt(x, "user"));
    cli_set_str(x, req, "group", cli_opt(x, "group"));
    cli_set_str(x, req, "role", cli_opt(x, "role"));
    if ((rc = cli_call(x, req, &resp)) != 0 || cli_json_out(x, resp))
        goto done;
    cli_table *t = cli_table_new(5, hdr);
    json_array_foreach(json_object_get(resp, "bindings"), i, b)
    {
        char id[32], subj[160], created[40];
        if (json_object_get(b, "user"))
            snprintf(subj, sizeof(subj), "user:%s", cli_str(b, "user"));
        else
            snprintf(subj, sizeof(subj), "group:%s", cli_str(b, "group"));
        const char *row[5] = {cli_num(b, "id", id, sizeof(id)), cli_str(b, "role"), subj,
                              cli_str(b, "scope"),
                              cli_time(b, "created", created, sizeof(created))};
        cli_table_row(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
done:
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_check(cli *x)
{
    json_t *req = cli_req("check"), *resp = NULL, *allow;
    int rc;

    cli_set_str(x, req, "user", x->pos[0]);
    cli_set_str(x, req, "action", x->pos[1]);
    cli_set_str(x, req, "resource", x->pos[2]);
    if (cli_flag(x, "explain"))
        json_object_set_new(req, "explain", json_true());
    if ((rc = cli_call(x, req, &resp)) != 0)
        goto done;
    allow = json_object_get(resp, "allow");
    if (!json_is_boolean(allow)) {
        rc = cli_fail(CLI_EXIT_SERVER, "protocol_error: check response without \"allow\"");
        goto done;
    }
    rc = json_is_true(allow) ? CLI_EXIT_OK : CLI_EXIT_DENIED;
    if (!cli_json_out(x, resp)) {
        json_t *ex = json_object_get(resp, "explain");
        printf("%s\n", json_is_true(allow) ? "allow" : "deny");
        if (json_is_string(json_object_get(ex, "summary")))
            printf("  %s\n", cli_str(ex, "summary"));
        else if (ex != NULL)
            cli_print_tree(ex, 2);
    }
done:
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_perms(cli *x)
{
    static const char *const hdr[] = {"EFFECT", "ACTION",  "RESOURCE", "ROLE",
                                      "VIA",    "BINDING", "SCOPE"};
    json_t *req = cli_req("perms"), *resp = NULL, *r;
    size_t i;
    int rc;

    cli_set_str(x, req, "user", x->pos[0]);
    if ((rc = cli_call(x, req, &resp)) == 0 && !cli_json_out(x, resp)) {
        cli_table *t = cli_table_new(7, hdr);
        json_array_foreach(json_object_get(resp, "rules"), i, r)
        {
            char b[32], via[160];
            json_t *v = json_object_get(r, "via");
            if (json_is_string(v) || v == NULL)
                snprintf(via, sizeof(via), "%s", cli_str(r, "via"));
            else if (json_object_get(v, "user"))
                snprintf(via, sizeof(via), "user:%s", cli_str(v, "user"));
            else if (json_object_get(v, "group"))
                snprintf(via, sizeof(via), "group:%s", cli_str(v, "group"));
            else {
                char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                snprintf(via, sizeof(via), "%s", d ? d : "?");
                free(d);
            }
            const char *row[7] = {cli_str(r, "effect"),
                                  cli_str(r, "action"),
                                  cli_str(r, "resource"),
                                  cli_str(r, "role"),
                                  via,
                                  cli_num(r, "binding", b, sizeof(b)),
                                  cli_str(r, "scope")};
            cli_table_row(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(req);
    json_decref(resp);
    return rc;
}

int cli_who_can(cli *x)
{
    static const char *const hdr[] = {"KIND", "NAME", "ROLE", "BINDING"};
    static const char *const kinds[2] = {"users", "groups"};
    json_t *req = cli_req("who_can"), *resp = NULL, *e;
    size_t i;
    int rc;

    cli_set_str(x, req, "action", x->pos[0]);
    cli_set_str(x, req, "resource", x->pos[1]);
    if ((rc = cli_call(x, req, &resp)) == 0 && !cli_json_out(x, resp)) {
        cli_table *t = cli_table_new(4, hdr);
        for (int k = 0; k < 2; k++) {
            json_array_foreach(json_object_get(resp, kinds[k]), i, e)
            {
                char b[32];
                const char *name = json_is_string(e) ? json_string_value(e) : cli_str(e, "name");
                const char *row[4] = {k == 0 ? "user" : "group", name, cli_str(e, "role"),
                                      cli_num(e, "binding", b, sizeof(b))};
                cli_table_row(t, row);
            }
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(req);
    json_decref(resp);
    return rc;
}
