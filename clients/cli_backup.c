/*
 * cli_backup.c: `gatehouse backup FILE`, the client side of the backup
 * operation (docs/PROTOCOL.md "backup").
 *
 * The server first makes a compacted copy of its database and answers with
 * its size and SHA-256; the CLI then fetches it chunk by chunk into
 * FILE.partial, checks size and digest, fsyncs and renames it to FILE. A
 * FILE that exists is kept unless --force. The file is created 0600: it
 * holds every password verifier.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "clients/cli-int.h"

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int cli_backup(cli *x)
{
    const char *file = x->pos[0];
    char partial[4096], id[80] = "", want_sha[80] = "", got_hex[80];
    unsigned char digest[crypto_hash_sha256_BYTES], *bin = NULL;
    crypto_hash_sha256_state st;
    json_t *req = NULL, *resp = NULL;
    cli_progress prog;
    uint64_t size = 0, off = 0;
    int fd = -1, rc, have_partial = 0;

    if (sodium_init() < 0)
        return cli_fail(CLI_EXIT_SERVER, "libsodium failed to initialize");
    if (snprintf(partial, sizeof(partial), "%s.partial", file) >= (int)sizeof(partial))
        return cli_usage(x, "FILE is too long");
    if (!cli_flag(x, "force") && access(file, F_OK) == 0)
        return cli_fail(CLI_EXIT_USAGE, "%s exists (--force replaces it)", file);

    req = cli_req("backup");
    rc = cli_call(x, req, &resp);
    json_decref(req);
    req = NULL;
    if (rc != 0)
        goto done;
    json_t *jsize = json_object_get(resp, "size");
    if (!json_is_string(json_object_get(resp, "backup")) || !json_is_integer(jsize) ||
        json_integer_value(jsize) < 0 || !json_is_string(json_object_get(resp, "sha256"))) {
        rc = cli_fail(CLI_EXIT_SERVER, "the server's backup answer lacks backup, size or sha256");
        goto done;
    }
    snprintf(id, sizeof(id), "%s", cli_str(resp, "backup"));
    snprintf(want_sha, sizeof(want_sha), "%s", cli_str(resp, "sha256"));
    size = (uint64_t)json_integer_value(jsize);
    json_decref(resp);
    resp = NULL;

    fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = cli_fail(CLI_EXIT_SERVER, "cannot create %s: %s", partial, strerror(errno));
        goto done;
    }
    have_partial = 1;
    crypto_hash_sha256_init(&st);
    cli_progress_start(&prog, size);
    while (off < size) {
        req = cli_req("backup");
        cli_set_str(x, req, "backup", id);
        cli_set_int(req, "offset", (long long)off);
        rc = cli_call(x, req, &resp);
        json_decref(req);
        req = NULL;
        if (rc != 0)
            goto done;
        json_t *data = json_object_get(resp, "data");
        json_t *joff = json_object_get(resp, "offset");
        if (!json_is_string(data) || !json_is_integer(joff) ||
            (uint64_t)json_integer_value(joff) != off) {
            rc = cli_fail(CLI_EXIT_SERVER, "bad backup chunk at offset %llu",
                          (unsigned long long)off);
            goto done;
        }
        size_t b64len = json_string_length(data), binlen = 0;
        free(bin);
        bin = malloc(b64len / 4 * 3 + 3);
        if (bin == NULL) {
            rc = cli_fail(CLI_EXIT_SERVER, "out of memory");
            goto done;
        }
        if (sodium_base642bin(bin, b64len / 4 * 3 + 3, json_string_value(data), b64len, NULL,
                              &binlen, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
            binlen == 0 || binlen > size - off) {
            rc = cli_fail(CLI_EXIT_SERVER, "bad base64 in the backup chunk at offset %llu",
                          (unsigned long long)off);
            goto done;
        }
        if (write_all(fd, bin, binlen) != 0) {
            rc = cli_fail(CLI_EXIT_SERVER, "writing %s: %s", partial, strerror(errno));
            goto done;
        }
        crypto_hash_sha256_update(&st, bin, binlen);
        off += binlen;
        cli_progress_update(&prog, off, 0, 0);
        json_decref(resp);
        resp = NULL;
    }
    cli_progress_update(&prog, off, 0, 1);
    cli_progress_end(&prog);
    crypto_hash_sha256_final(&st, digest);
    sodium_bin2hex(got_hex, sizeof(got_hex), digest, sizeof(digest));
    if (strcmp(got_hex, want_sha) != 0) {
        rc = cli_fail(CLI_EXIT_SERVER, "the backup's SHA-256 %s differs from the server's %s",
                      got_hex, want_sha);
        goto done;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        rc = cli_fail(CLI_EXIT_SERVER, "writing %s: %s", partial, strerror(errno));
        goto done;
    }
    fd = -1;
    if (rename(partial, file) != 0) {
        rc =
            cli_fail(CLI_EXIT_SERVER, "cannot rename %s to %s: %s", partial, file, strerror(errno));
        goto done;
    }
    have_partial = 0;
    if (x->json) {
        json_t *o =
            json_pack("{s:s, s:I, s:s}", "file", file, "size", (json_int_t)size, "sha256", got_hex);
        cli_print_json(o);
        json_decref(o);
    } else {
        printf("backup written to %s: %llu bytes, sha256 %s\n", file, (unsigned long long)size,
               got_hex);
    }
    rc = CLI_EXIT_OK;
done:
    if (fd >= 0)
        close(fd);
    if (have_partial)
        unlink(partial);
    free(bin);
    json_decref(req);
    json_decref(resp);
    return rc;
}
