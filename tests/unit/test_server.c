/*
 * test_server.c: unit tests of server pieces that need no running loop: the
 * latency histogram behind `stats`, the configuration loader, the error
 * table that is the protocol's list of stable codes, and the class of every
 * op (who may call it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "schema/error.h"
#include "server/config.h"
#include "server/server.h"

static void test_latency_buckets(void **state)
{
    (void)state;
    for (uint64_t v = 0; v < 3000000; v += (v < 100000 ? 1 : 997)) {
        unsigned b = gh__lat_bucket(v);
        uint64_t up = gh__lat_bucket_upper(b);
        assert_true(b < GH_LAT_BUCKETS);
        assert_true(up >= v); /* the bound covers the value */
        if (b > 0)
            assert_true(gh__lat_bucket_upper(b - 1) < v); /* and is the tightest one */
        if (v >= 8)
            assert_true(up <= v + v / 4 + 1); /* within 25% */
    }
    assert_int_equal(gh__lat_bucket(UINT64_MAX), GH_LAT_BUCKETS - 1);
}

static char *write_conf(const char *text)
{
    char *path = strdup("/tmp/gh-test-conf-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static int load(const char *text, gh_config *cfg, char *err, size_t errlen)
{
    char *path = write_conf(text);
    gh_config_defaults(cfg);
    int rc = gh_config_load(cfg, path, err, errlen);
    if (rc == 0)
        rc = gh_config_finish(cfg, err, errlen);
    unlink(path);
    free(path);
    return rc;
}

static void test_config_values(void **state)
{
    gh_config cfg;
    char err[512] = "";
    (void)state;
    assert_int_equal(load("; comment\n[server]\nmax_request = 4K\nmap_size = 2M\n"
                          "socket_mode = 0600\nlog_syslog = yes\nidle_timeout = 0\n"
                          "state_dir = /tmp/x ; trailing comment\n",
                          &cfg, err, sizeof(err)),
                     0);
    assert_int_equal(cfg.max_request, 4096);
    assert_int_equal(cfg.map_size, 2u << 20);
    assert_int_equal(cfg.socket_mode, 0600);
    assert_int_equal(cfg.log_syslog, 1);
    assert_int_equal(cfg.idle_timeout, 0);
    assert_string_equal(cfg.state_dir, "/tmp/x");
    assert_string_equal(cfg.socket_path, "/tmp/x/gatehoused.sock"); /* derived */
    assert_int_equal(cfg.token_ttl, 3600);                          /* default kept */
    /* OS login defaults: the NSS socket next to the main one */
    assert_string_equal(cfg.nss_socket, "/tmp/x/nss.sock");
    assert_string_equal(cfg.home_template, "/home/%u");
    assert_string_equal(cfg.default_shell, "/bin/sh");
    assert_int_equal(cfg.gid_min, 1000);
    assert_int_equal(cfg.user_private_groups, 1);
    assert_int_equal(cfg.nss_enumerate, 0);
    gh_config_free(&cfg);
    assert_int_equal(
        load("socket = /run/gh/main.sock\nnss_enumerate = yes\n", &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.nss_socket, "/run/gh/nss.sock");
    assert_int_equal(cfg.nss_enumerate, 1);
    gh_config_free(&cfg);
    assert_int_equal(load("nss_socket = none\n", &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.nss_socket, "");
    gh_config_free(&cfg);
    assert_int_equal(load("home_template = home/%u\n", &cfg, err, sizeof(err)), GH_EINVAL);
    gh_config_free(&cfg);
}

static void test_config_errors(void **state)
{
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        {"[server]\nbogus = 1\n", ":2: unknown key 'bogus'"},
        {"\n\n[server]\nmax_request = -1\n", ":4: max_request must be a number"},
        {"max_request = 10\n", ":1: max_request must be a number from 256"},
        {"[server]\nmap_size = 1G\nmap_max = 2M\n", "map_max"},
        {"[server]\nlog_level = loud\n", "log_level must be"},
        {"[server]\nsocket_mode = rw\n", "octal mode"},
        {"[server]\ntcp_allow_non_loopback = perhaps\n", "yes or no"},
        {"[nope]\nx = 1\n", "unknown section [nope]"},
        {"[server\nx = 1\n", "syntax error"},
        {"[server]\nargon2_memlimit = 1K\n", "argon2_memlimit"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gh_config cfg;
        char err[512] = "";
        int rc = load(cases[i].text, &cfg, err, sizeof(err));
        if (rc != GH_EINVAL || strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: rc=%d err='%s', wanted '%s'", i, rc, err, cases[i].want);
        gh_config_free(&cfg);
    }
}

static void test_error_table(void **state)
{
    (void)state;
    /* every code has a distinct stable string that maps back (but the two
     * internal-only codes, which travel as "internal") */
    for (int e = GH_EBADREQ; e > GH_E_LAST; e--) {
        const char *code = gh_error_code(e);
        assert_non_null(code);
        if (e == GH_ENOMEM || e == GH_EIO)
            assert_string_equal(code, "internal");
        else
            assert_int_equal(gh_error_from_code(code), e);
    }
    assert_string_equal(gh_error_code(GH_ENOTFOUND), "not_found");
    assert_string_equal(gh_error_code(GH_ECREDS), "invalid_credentials");
    assert_string_equal(gh_error_code(-9999), "internal");
    assert_int_equal(gh_error_from_code("no_such_code"), GH_EINTERNAL);
}

/* Every op of the table with the class it must have (docs/SECURITY.md). An
 * op added without a line here fails the test: its class is a decision. */
static const struct {
    const char *name;
    enum gh_op_class cls;
} pinned[] = {
    {"ping", GH_CLASS_PUBLIC},
    {"auth", GH_CLASS_PUBLIC},
    {"whoami", GH_CLASS_PUBLIC},
    {"logout", GH_CLASS_PUBLIC},
    {"check", GH_CLASS_SUBJECT},
    {"check.batch", GH_CLASS_SUBJECT},
    {"perms", GH_CLASS_SUBJECT},
    {"stats", GH_CLASS_ADMIN},
    {"audit", GH_CLASS_ADMIN},
    {"user.add", GH_CLASS_ADMIN},
    {"user.get", GH_CLASS_ADMIN},
    {"user.list", GH_CLASS_ADMIN},
    {"user.set", GH_CLASS_ADMIN},
    {"user.passwd", GH_CLASS_ADMIN},
    {"user.del", GH_CLASS_ADMIN},
    {"group.add", GH_CLASS_ADMIN},
    {"group.get", GH_CLASS_ADMIN},
    {"group.list", GH_CLASS_ADMIN},
    {"group.del", GH_CLASS_ADMIN},
    {"group.add_member", GH_CLASS_ADMIN},
    {"group.remove_member", GH_CLASS_ADMIN},
    {"dump", GH_CLASS_ADMIN},
    {"import", GH_CLASS_ADMIN},
    {"role.add", GH_CLASS_ADMIN},
    {"role.get", GH_CLASS_ADMIN},
    {"role.list", GH_CLASS_ADMIN},
    {"role.set", GH_CLASS_ADMIN},
    {"role.del", GH_CLASS_ADMIN},
    {"grant", GH_CLASS_ADMIN},
    {"revoke", GH_CLASS_ADMIN},
    {"bindings", GH_CLASS_ADMIN},
    {"who_can", GH_CLASS_ADMIN},
    {"sync.status", GH_CLASS_ADMIN},
    {"sync.run", GH_CLASS_ADMIN},
    {"session.list", GH_CLASS_ADMIN},
    {"session.revoke", GH_CLASS_ADMIN},
    {"backup", GH_CLASS_ADMIN},
    /* OS login (issue 12): what /etc/passwd shows, and a self-service change
     * that costs what auth costs */
    {"nss.getpwnam", GH_CLASS_PUBLIC},
    {"nss.getpwuid", GH_CLASS_PUBLIC},
    {"nss.getgrnam", GH_CLASS_PUBLIC},
    {"nss.getgrgid", GH_CLASS_PUBLIC},
    {"nss.initgroups", GH_CLASS_PUBLIC},
    {"nss.enumerate", GH_CLASS_PUBLIC},
    {"passwd.change", GH_CLASS_PUBLIC},
};

static void test_op_classes(void **state)
{
    gh_server srv;
    (void)state;
    memset(&srv, 0, sizeof(srv));
    assert_int_equal(gh__dispatch_init(&srv), 0);
    size_t n = gh__op_count(), npinned = sizeof(pinned) / sizeof(pinned[0]);
    for (size_t i = 0; i < n; i++) {
        const gh_op_def *d = gh__op_at(i);
        size_t k = 0;
        while (k < npinned && strcmp(pinned[k].name, d->name) != 0)
            k++;
        if (k == npinned)
            fail_msg("op '%s' has no pinned class in test_op_classes", d->name);
        if (d->cls != pinned[k].cls)
            fail_msg("op '%s' has class %d, pinned %d", d->name, (int)d->cls, (int)pinned[k].cls);
    }
    for (size_t k = 0; k < npinned; k++)
        if (gh__op_find(pinned[k].name) == NULL)
            fail_msg("pinned op '%s' is not in the table", pinned[k].name);
    /* fail-closed: the zero value of the class is admin */
    assert_int_equal(GH_CLASS_ADMIN, 0);
    (void)srv;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latency_buckets), cmocka_unit_test(test_config_values),
        cmocka_unit_test(test_config_errors),   cmocka_unit_test(test_error_table),
        cmocka_unit_test(test_op_classes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
