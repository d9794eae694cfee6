/*
 * cli_os.c: `gatehouse hbac-test USER HOST SERVICE`, the decision
 * pam_gatehouse's `hbac` option would take, and why (FreeIPA's hbactest).
 *
 * The one thing to know: it must ask exactly what the PAM module asks (the
 * same action and the same resource template, %h host and %s service, with
 * the same defaults), or it would explain a decision the module never makes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clients/cli-int.h"

#define HBAC_ACTION "login"
#define HBAC_RESOURCE "host/%h/%s"

/* Expands %h, %s and %% of tmpl; 0, or -1 when it does not fit. */
static int expand(const char *tmpl, const char *host, const char *service, char *out, size_t len)
{
    size_t o = 0;
    for (const char *p = tmpl; *p; p++) {
        const char *ins = NULL;
        char one[2] = {*p, '\0'};
        if (p[0] == '%' && (p[1] == 'h' || p[1] == 's' || p[1] == '%')) {
            ins = p[1] == 'h' ? host : p[1] == 's' ? service : "%";
            p++;
        } else {
            ins = one;
        }
        size_t n = strlen(ins);
        if (o + n >= len)
            return -1;
        memcpy(out + o, ins, n);
        o += n;
    }
    out[o] = '\0';
    return 0;
}

int cli_hbac_test(cli *x)
{
    const char *action = cli_opt(x, "action"), *tmpl = cli_opt(x, "resource");
    char resource[1024];
    json_t *req = NULL, *resp = NULL, *allow;
    int rc;

    if (expand(tmpl ? tmpl : HBAC_RESOURCE, x->pos[1], x->pos[2], resource, sizeof(resource)) != 0)
        return cli_usage(x, "the resource is too long");
    req = cli_req("check");
    cli_set_str(x, req, "user", x->pos[0]);
    cli_set_str(x, req, "action", action ? action : HBAC_ACTION);
    cli_set_str(x, req, "resource", resource);
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
        printf("%s: %s %s log in to %s through %s (%s %s)\n",
               json_is_true(allow) ? "allow" : "deny", x->pos[0],
               json_is_true(allow) ? "may" : "may not", x->pos[1], x->pos[2],
               action ? action : HBAC_ACTION, resource);
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
