/*
 * test_errors.c: ties libgatehouse's status enum (clients/gatehouse.h) to the
 * server's error table (schema/error.c). The client promises the same numbers
 * and strings as the server for every code the server can send; a code added
 * to one side and not the other fails here, not in an application.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "clients/gatehouse.h"
#include "schema/error.h"

/* Every code the server can put on the wire is known to the client by the
 * same number and string. */
static void test_server_codes_known_to_client(void **state)
{
    (void)state;
    int seen = 0;
    for (int err = -1; err > GH_E_LAST; err--) {
        const char *code = gh_error_code(err);
        if (gh_error_from_code(code) != err)
            continue; /* an alias on the wire ("internal" for ENOMEM, EIO) */
        int st = gh_client_status_from_code(code);
        if (st != err)
            fail_msg("server code %d \"%s\": client maps it to %d", err, code, st);
        assert_string_equal(gh_client_status_code(st), code);
        seen++;
    }
    assert_true(seen >= 18);
}

/* And the client invents no server code the server does not have. */
static void test_client_codes_exist_on_server(void **state)
{
    (void)state;
    for (int st = -1; st > GH_ERR_SERVER_OTHER; st--) {
        const char *code = gh_client_status_code(st);
        if (strcmp(code, "unknown") == 0)
            continue;
        if (gh_error_from_code(code) != st)
            fail_msg("client status %d \"%s\" is server code %d", st, code,
                     gh_error_from_code(code));
    }
    /* the client's own codes never collide with a server string */
    for (int st = GH_ERR_SERVER_OTHER; st >= GH_ERR_TIMEOUT; st--) {
        const char *code = gh_client_status_code(st);
        if (strcmp(code, "unknown") == 0)
            continue;
        assert_int_equal(gh_client_status_from_code(code), GH_ERR_SERVER_OTHER);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_codes_known_to_client),
        cmocka_unit_test(test_client_codes_exist_on_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
