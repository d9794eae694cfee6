/*
 * fuzz_nss.c: libnss_gatehouse's decoding of server replies into the
 * caller's buffer (fill_passwd, fill_group), on arbitrary JSON and buffer
 * sizes.
 *
 * The one thing to know: the module's sources are included here whole (its
 * helpers are static), and the buffer is a heap block of exactly the size
 * glibc would pass, so writing one byte past it is caught by ASan. Input:
 * two bytes of buffer length (mod 4096), one byte choosing passwd or group,
 * then the JSON entry. On success every pointer must lie inside the buffer
 * and the strings must be the reply's; a short buffer must say ERANGE.
 */
#include "clients/nss_gatehouse.c"
#include "clients/os_client.c"

#include <assert.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const char *p, const char *buf, size_t len)
{
    return p >= buf && p < buf + len && memchr(p, '\0', (size_t)(buf + len - p)) != NULL;
}

static void check_str(const char *got, json_t *e, const char *key)
{
    const char *want = json_string_value(json_object_get(e, key));
    if (strcmp(got, want ? want : "") != 0) {
        fprintf(stderr, "fuzz_nss: %s: got '%s'\n", key, got);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t buflen = ((size_t)data[0] << 8 | data[1]) % 4096;
    int group = data[2] & 1;
    json_t *e = json_loadb((const char *)data + 3, size - 3, JSON_DECODE_ANY, NULL);
    if (e == NULL)
        return 0;
    char *buf = malloc(buflen ? buflen : 1);
    int err = 0;
    enum nss_status st;
    if (group) {
        struct group gr;
        st = fill_group(e, &gr, buf, buflen, &err);
        if (st == NSS_STATUS_SUCCESS) {
            assert(inside(gr.gr_name, buf, buflen) && inside(gr.gr_passwd, buf, buflen));
            check_str(gr.gr_name, e, "name");
            json_t *m = json_object_get(e, "members");
            size_t n = json_array_size(m);
            assert((char *)gr.gr_mem >= buf && (char *)(gr.gr_mem + n + 1) <= buf + buflen);
            assert(gr.gr_mem[n] == NULL);
            for (size_t i = 0; i < n; i++) {
                assert(inside(gr.gr_mem[i], buf, buflen));
                const char *want = json_string_value(json_array_get(m, i));
                assert(strcmp(gr.gr_mem[i], want ? want : "") == 0);
            }
        }
    } else {
        struct passwd pw;
        st = fill_passwd(e, &pw, buf, buflen, &err);
        if (st == NSS_STATUS_SUCCESS) {
            assert(inside(pw.pw_name, buf, buflen) && inside(pw.pw_dir, buf, buflen) &&
                   inside(pw.pw_shell, buf, buflen) && inside(pw.pw_gecos, buf, buflen));
            check_str(pw.pw_name, e, "name");
            check_str(pw.pw_dir, e, "home");
            check_str(pw.pw_shell, e, "shell");
            check_str(pw.pw_gecos, e, "gecos");
        }
    }
    assert(st == NSS_STATUS_SUCCESS || (st == NSS_STATUS_TRYAGAIN && err == ERANGE) ||
           (st == NSS_STATUS_UNAVAIL && err == ENOENT));
    free(buf);
    json_decref(e);
    return 0;
}
