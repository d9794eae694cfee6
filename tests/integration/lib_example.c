/*
 * lib_example.c: a client of libgatehouse driven by test_lib.py.
 *
 * `lib_example SCENARIO [ARGS]` runs one scenario against the socket named by
 * $GATEHOUSE_SOCKET (so the library's default resolution is exercised too),
 * prints what it checks, and exits 0 only when every expectation held. The
 * scenarios that need the server restarted, or a misbehaving server, print a
 * line and wait for one on stdin while the test does its part.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gatehouse.h>

static int failures;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                 \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

static void wait_line(const char *say)
{
    char buf[64];
    printf("%s\n", say);
    fflush(stdout);
    if (fgets(buf, sizeof(buf), stdin) == NULL)
        exit(3);
}

static const char *err(gh_client *c)
{
    static char buf[700];
    snprintf(buf, sizeof(buf), "%s: %s", gh_client_error_code(c), gh_client_error_message(c));
    return buf;
}

/* auth, whoami, check, check.batch, logout: the typed calls. */
static void typed(gh_client *c, const char *user, const char *password)
{
    char token[GH_CLIENT_TOKEN_MAX + 1];
    int64_t expires = 0;
    gh_identity id;
    int proto = 0, rc;

    EXPECT(gh_ping(c, &proto) == 0 && proto == GH_CLIENT_PROTOCOL, "ping: %s", err(c));

    rc = gh_auth(c, user, "wrong password!", 0, token, sizeof(token), &expires);
    EXPECT(rc == GH_ERR_INVALID_CREDENTIALS, "bad password gave %d", rc);
    EXPECT(strcmp(gh_client_error_code(c), "invalid_credentials") == 0, "code %s",
           gh_client_error_code(c));
    EXPECT(token[0] == '\0', "token left on failure");

    rc = gh_auth(c, user, password, 600, token, sizeof(token), &expires);
    EXPECT(rc == 0, "auth: %s", err(c));
    EXPECT(strlen(token) == 43, "token length %zu", strlen(token));
    EXPECT(expires > 0, "expires_at %lld", (long long)expires);
    EXPECT(gh_client_error(c) == 0 && gh_client_error_code(c)[0] == '\0', "error not cleared");

    rc = gh_whoami(c, token, &id);
    EXPECT(rc == 0 && strcmp(id.user, user) == 0, "whoami: %d %s %s", rc, id.user, err(c));
    EXPECT(id.expires_at == expires, "whoami expires %lld", (long long)id.expires_at);

    EXPECT(gh_check(c, user, "deploy", "service/billing") == 1, "check allow: %s", err(c));
    EXPECT(gh_check(c, user, "deploy", "service/payroll") == 0, "check deny: %s", err(c));
    EXPECT(gh_check(c, user, "read", "docs/x") == 0, "check default deny");
    EXPECT(gh_check_token(c, token, "deploy", "service/billing") == 1, "check token: %s", err(c));
    rc = gh_check(c, "nobody-here", "deploy", "service/billing");
    EXPECT(rc == GH_ERR_NOT_FOUND, "unknown user gave %d", rc);
    EXPECT(strcmp(gh_client_error_code(c), "not_found") == 0, "code %s", gh_client_error_code(c));
    EXPECT(gh_client_error_message(c)[0] != '\0', "no message");
    rc = gh_check(c, user, "deploy", "a//b");
    EXPECT(rc == GH_ERR_INVALID_ARGUMENT, "bad resource gave %d", rc);

    /* 2500 checks: three pipelined check.batch requests */
    enum { N = 2500 };
    static gh_check_item items[N];
    static int results[N];
    static char res[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(res[i], sizeof(res[i]), i % 2 ? "service/payroll" : "service/s%d", i);
        items[i].action = "deploy";
        items[i].resource = res[i];
    }
    rc = gh_check_batch(c, user, items, N, results);
    EXPECT(rc == 0, "check_batch: %s", err(c));
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += results[i] != (i % 2 == 0);
    EXPECT(bad == 0, "%d wrong batch results", bad);
    EXPECT(gh_check_batch_token(c, token, items, 3, results) == 0 && results[0] == 1 &&
               results[1] == 0,
           "check_batch_token: %s", err(c));

    EXPECT(gh_logout(c, token) == 0, "logout: %s", err(c));
    rc = gh_whoami(c, token, &id);
    EXPECT(rc == GH_ERR_INVALID_TOKEN, "whoami after logout gave %d", rc);
    printf("typed calls done\n");
}

/* gh_send many, then gh_recv many: order and ids preserved. */
static void pipelined(gh_client *c, const char *user)
{
    enum { N = 5000 };
    json_t *resp;
    int rc;

    for (int i = 0; i < N; i++) {
        json_t *req = json_pack("{sssissssss}", "op", "check", "id", i, "user", user, "action",
                                "deploy", "resource", i % 3 ? "service/a" : "service/payroll");
        EXPECT(req != NULL, "json_pack");
        rc = gh_send(c, req);
        json_decref(req);
        EXPECT(rc == 0, "send %d: %s", i, err(c));
    }
    EXPECT(gh_client_pending(c) == N, "pending %zu", gh_client_pending(c));
    /* a typed call now would steal a response: refused */
    EXPECT(gh_check(c, user, "deploy", "service/a") == GH_ERR_USAGE, "typed call while pipelined");
    int bad = 0;
    for (int i = 0; i < N; i++) {
        rc = gh_recv(c, &resp);
        if (rc != 0 || json_integer_value(json_object_get(resp, "id")) != i ||
            json_is_true(json_object_get(resp, "allow")) != (i % 3 != 0))
            bad++;
        json_decref(resp);
    }
    EXPECT(bad == 0, "%d bad pipelined responses", bad);
    EXPECT(gh_client_pending(c) == 0, "pending after");
    EXPECT(gh_recv(c, &resp) == GH_ERR_USAGE && resp == NULL, "recv with nothing pending");
    printf("pipelined %d requests\n", N);
}

/* gh_call: success and server error both hand back the response. */
static void generic(gh_client *c, const char *user)
{
    json_t *req, *resp = NULL;
    int rc;

    req = json_pack("{ssss}", "op", "user.get", "name", user);
    rc = gh_call(c, req, &resp);
    EXPECT(rc == 0, "user.get: %s", err(c));
    EXPECT(strcmp(json_string_value(json_object_get(json_object_get(resp, "user"), "name")),
                  user) == 0,
           "user.get name");
    json_decref(req);
    json_decref(resp);

    req = json_pack("{ssss}", "op", "user.get", "name", "no-such-user");
    rc = gh_call(c, req, &resp);
    EXPECT(rc == GH_ERR_NOT_FOUND, "user.get unknown gave %d", rc);
    EXPECT(resp != NULL && json_is_false(json_object_get(resp, "ok")), "error response kept");
    json_decref(req);
    json_decref(resp);

    req = json_pack("{ss}", "op", "no.such.op");
    rc = gh_call(c, req, &resp);
    EXPECT(rc == GH_ERR_UNKNOWN_OP && strcmp(gh_client_error_code(c), "unknown_op") == 0,
           "unknown op gave %d", rc);
    json_decref(req);
    json_decref(resp);

    req = json_pack("{si}", "op", 5);
    rc = gh_call(c, req, &resp);
    EXPECT(rc == GH_ERR_USAGE && resp == NULL, "op not a string gave %d", rc);
    json_decref(req);
    printf("generic calls done\n");
}

/* The server restarts between two calls: both a read and a write go
 * through on a new connection, since neither was written to the old one. */
static void restart(gh_client *c, const char *user)
{
    json_t *req, *resp = NULL;
    int rc;

    EXPECT(gh_check(c, user, "deploy", "service/billing") == 1, "before restart: %s", err(c));
    wait_line("RESTART");
    EXPECT(gh_check(c, user, "deploy", "service/billing") == 1, "after restart: %s", err(c));
    wait_line("RESTART");
    req = json_pack("{ssss}", "op", "group.add", "name", "after-restart");
    rc = gh_call(c, req, &resp);
    EXPECT(rc == 0, "write after restart: %s", err(c));
    json_decref(req);
    json_decref(resp);
    printf("reconnected\n");
}

/* Against the fake server of test_lib.py, which reads one request on its
 * first connection and closes without answering. */
static void lost_write(gh_client *c)
{
    json_t *req = json_pack("{ssss}", "op", "user.add", "name", "carol"), *resp = NULL;
    int rc = gh_call(c, req, &resp);

    EXPECT(rc == GH_ERR_CONNECTION_LOST, "write on a dropped connection gave %d", rc);
    EXPECT(strcmp(gh_client_error_code(c), "connection_lost") == 0, "code %s",
           gh_client_error_code(c));
    EXPECT(resp == NULL, "response on loss");
    json_decref(req);
    /* the next call reconnects (the fake answers the second connection) */
    EXPECT(gh_ping(c, NULL) == 0, "ping after loss: %s", err(c));
    printf("lost write reported\n");
}

static void retried_read(gh_client *c)
{
    json_t *req = json_pack("{ssss}", "op", "user.get", "name", "carol"), *resp = NULL;
    int rc = gh_call(c, req, &resp);

    EXPECT(rc == 0, "read on a dropped connection: %s", err(c));
    json_decref(req);
    json_decref(resp);
    printf("read retried\n");
}

static void timeout(gh_client *c)
{
    gh_client_set_timeout(c, 300);
    int rc = gh_ping(c, NULL);
    EXPECT(rc == GH_ERR_TIMEOUT, "silent server gave %d", rc);
    printf("timed out\n");
}

static void too_long(gh_client *c)
{
    gh_client_set_max_response(c, 4096);
    int rc = gh_ping(c, NULL);
    EXPECT(rc == GH_ERR_PROTOCOL, "huge response gave %d", rc);
    printf("limit enforced\n");
}

static void unreachable(void)
{
    gh_client *c;
    int rc;

    EXPECT(gh_client_new(&c, "/nonexistent/gh.sock") == 0, "new");
    rc = gh_ping(c, NULL);
    EXPECT(rc == GH_ERR_CONNECT, "ping gave %d", rc);
    EXPECT(strcmp(gh_client_error_code(c), "connect_failed") == 0, "code %s",
           gh_client_error_code(c));
    EXPECT(strstr(gh_client_error_message(c), "/nonexistent/gh.sock") != NULL, "message %s",
           gh_client_error_message(c));
    EXPECT(gh_client_connect(c) == GH_ERR_CONNECT, "connect");
    gh_client_free(c);
    EXPECT(strcmp(gh_client_status_code(GH_ERR_NOT_FOUND), "not_found") == 0, "status_code");
    EXPECT(gh_client_status_from_code("cycle") == GH_ERR_CYCLE, "from_code");
    EXPECT(gh_client_status_from_code("brand_new") == GH_ERR_SERVER_OTHER, "unknown code");
    printf("unreachable reported\n");
}

int main(int argc, char **argv)
{
    gh_client *c = NULL;
    const char *scenario = argc > 1 ? argv[1] : "";

    if (strcmp(scenario, "unreachable") == 0) {
        unreachable();
        goto out;
    }
    if (gh_client_new(&c, NULL) != 0) {
        printf("FAIL gh_client_new\n");
        return 2;
    }
    if (strcmp(scenario, "server") == 0 && argc == 4) {
        typed(c, argv[2], argv[3]);
        pipelined(c, argv[2]);
        generic(c, argv[2]);
    } else if (strcmp(scenario, "restart") == 0 && argc == 3) {
        restart(c, argv[2]);
    } else if (strcmp(scenario, "lost-write") == 0) {
        lost_write(c);
    } else if (strcmp(scenario, "retried-read") == 0) {
        retried_read(c);
    } else if (strcmp(scenario, "timeout") == 0) {
        timeout(c);
    } else if (strcmp(scenario, "too-long") == 0) {
        too_long(c);
    } else {
        fprintf(stderr, "usage: lib_example server USER PASSWORD | restart USER | lost-write | "
                        "retried-read | timeout | too-long | unreachable\n");
        return 2;
    }
out:
    gh_client_free(c);
    printf("%s (%d failure%s)\n", failures ? "FAILED" : "PASSED", failures,
           failures == 1 ? "" : "s");
    return failures ? 1 : 0;
}
