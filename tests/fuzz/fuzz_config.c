/*
 * fuzz_config.c: gatehoused.conf as arbitrary bytes, through the same calls
 * main() makes: gh_config_defaults, gh_config_load, gh_config_finish,
 * gh_config_free.
 *
 * The file is read by inih through our own line reader, and [upstream:NAME]
 * sections go to the sync module's key parser, so both are covered. The
 * input is written to one temporary file per process, rewritten per input.
 *
 * Invariants: no crash, no leak (ASan/LSan), a refusal is GH_EINVAL with a
 * "path:..." message, and an accepted file leaves every bounded setting
 * within the bounds the key table documents (conf/gatehoused.conf).
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "schema/error.h"
#include "schema/log.h"
#include "server/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[PATH_MAX];

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_config: %s\n", what);
    abort();
}

static void remove_file(void)
{
    unlink(path);
}

static void write_input(const uint8_t *data, size_t size)
{
    if (path[0] == '\0') {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(path, sizeof(path), "%s/gh-fuzz-config.XXXXXX", base ? base : "/tmp");
        int fd = mkstemp(path);
        if (fd < 0)
            fail("mkstemp failed");
        close(fd);
        atexit(remove_file);
        gh_log_setup(GH_LOG_ERROR, 0); /* the sync parser warns on odd files */
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL || (size > 0 && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
        fail("cannot write the input file");
}

static void check_bounds(const gh_config *c)
{
    if (c->max_request < 256 || c->max_request > (64u << 20) || c->max_output < 4096 ||
        c->socket_mode > 0777 || c->max_connections < 1 || c->argon2_opslimit > 64 ||
        c->threadpool_size < 1 || c->threadpool_size > 128 || c->argon2_queue_max < 1 ||
        c->password_min_length < 1 || c->token_ttl < 1 || c->lockout_threshold < 1 ||
        c->map_size < (1u << 20) || c->uid_min < 1 || c->write_batch_max < 1)
        fail("an accepted file left a setting out of its bounds");
    if (gh_log_level_parse(c->log_level) < 0)
        fail("an accepted file left an unknown log level");
    if (c->state_dir == NULL || c->socket_path == NULL || c->tcp_listen == NULL ||
        c->admin_unix_group == NULL || c->admin_group == NULL)
        fail("an accepted file left a string setting NULL");
    if (c->sync.nupstreams > 0 && c->sync.upstreams == NULL)
        fail("upstream count without upstreams");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gh_config cfg;
    char err[1024];

    write_input(data, size);
    if (gh_config_defaults(&cfg) != 0)
        fail("gh_config_defaults failed");
    err[0] = '\0';
    int rc = gh_config_load(&cfg, path, err, sizeof(err));
    if (rc != 0) {
        if (rc != GH_EINVAL)
            fail("gh_config_load returned something other than GH_EINVAL");
        if (strncmp(err, path, strlen(path)) != 0 || err[strlen(path)] != ':')
            fail("a refusal does not start with \"path:\"");
    } else {
        check_bounds(&cfg);
        err[0] = '\0';
        rc = gh_config_finish(&cfg, err, sizeof(err));
        if (rc != 0 && err[0] == '\0')
            fail("gh_config_finish refused without a message");
        if (rc == 0) {
            check_bounds(&cfg);
            if (cfg.state_dir[0] == '\0' || cfg.socket_path[0] == '\0' ||
                cfg.map_max < cfg.map_size || cfg.lockout_max_delay < cfg.lockout_base_delay)
                fail("gh_config_finish accepted inconsistent settings");
        }
    }
    gh_config_free(&cfg);
    return 0;
}
