/*
 * fuzz_request.c: the socket protocol as an untrusted peer drives it.
 *
 * Each input is written as is, plus a final "\n", into one end of a
 * socketpair whose other end is attached to an in-process gatehoused as an
 * admin connection (gh__conn_attach_fd), then the write side is half-closed.
 * Framing, decode, dispatch and every op handler run exactly as for a real
 * client, Argon2 on the libuv pool and commits on the writer thread included;
 * the server answers every line and closes, and the harness checks what came
 * back.
 *
 * The one thing to know before changing it: every input gets a fresh, empty
 * store (the state directory is made once per process and emptied before each
 * input), so a crashing input crashes again on its own and a minimized
 * reproducer stays one file. A stateful scenario is several lines of one
 * input. An empty line is a barrier: the harness sends the bytes up to it and
 * waits for every reply so far before sending the rest, so both pipelined and
 * one-at-a-time timings are reachable. The server still gets the input byte
 * for byte (empty lines are no requests), with one exception: tokens are
 * random, so after a barrier every TOKEN_PLACEHOLDER (43 '@', never a real
 * token) is replaced by the last token the server issued, which lets whoami,
 * logout, check and "auth" see a live token. An input that ends with three
 * newlines hangs up instead: the client closes its end right after the last
 * request line, with replies unread and work (Argon2, writes) in flight.
 *
 * Invariants (a violation aborts, so libFuzzer and `make check` both see it):
 *  - one reply line per non-empty request line, in request order; a line
 *    longer than max_request gets too_large, which is the last reply;
 *  - every reply is a JSON object with a boolean "ok"; a failure has an
 *    "error" object with a known protocol "code" and a string "message";
 *  - a reply carries its request's "id", and only that;
 *  - the server closes the connection by itself once it has answered, and
 *    frees it after a hang-up;
 *  - after gh__server_close no handle is left on the loop.
 * GH_FUZZ_STRICT=1 also fails on "internal" errors (worth a look, but not a
 * protocol violation); GH_FUZZ_LAX_MESSAGE=1 tolerates an error without its
 * message (to fuzz past such a bug while it is open); GH_FUZZ_VERBOSE=1 prints
 * the exchange and debug logs.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>
#include <uv.h>

#include "schema/log.h"
#include "server/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small enough that a fuzz input can overflow them and reach too_large and
 * the paused-reading path; the protocol's defaults are 64 KiB and 1 MiB. */
#define FUZZ_MAX_REQUEST 8192
#define FUZZ_MAX_OUTPUT 4096
#define FUZZ_DEADLINE_MS 10000
#define TOKEN_LEN 43
#define TOKEN_PLACEHOLDER "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@"

static struct {
    int ready;
    int strict;
    int lax_message;
    int verbose;
    char dir[PATH_MAX];
} g;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void remove_state_dir(void);

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_request: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    remove_state_dir();
    abort();
}

/* Removes every file of the state directory (LMDB files, token key); 0, or
 * -1 with errno. */
static int empty_state_dir(void)
{
    DIR *d = opendir(g.dir);
    struct dirent *e;
    int rc = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        char path[PATH_MAX + 256];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", g.dir, e->d_name);
        if (unlink(path) != 0)
            rc = -1;
    }
    closedir(d);
    return rc;
}

/* At exit, and on a sanitizer report or a failed check, so that crashing
 * inputs do not leave state directories behind on tmpfs. */
static void remove_state_dir(void)
{
    if (g.dir[0] != '\0') {
        empty_state_dir();
        rmdir(g.dir);
    }
}

/* Provided by ASan/UBSan runtimes (gcc's and clang's), absent otherwise. */
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static void init_once(void)
{
    if (g.ready)
        return;
    if (sodium_init() < 0)
        fail("sodium_init failed");
    signal(SIGPIPE, SIG_IGN); /* as gatehoused does */
    setenv("UV_THREADPOOL_SIZE", "2", 0);
    g.strict = getenv("GH_FUZZ_STRICT") && strcmp(getenv("GH_FUZZ_STRICT"), "0") != 0;
    g.lax_message =
        getenv("GH_FUZZ_LAX_MESSAGE") && strcmp(getenv("GH_FUZZ_LAX_MESSAGE"), "0") != 0;
    g.verbose = getenv("GH_FUZZ_VERBOSE") && strcmp(getenv("GH_FUZZ_VERBOSE"), "0") != 0;
    gh_log_setup(g.verbose ? GH_LOG_DEBUG : GH_LOG_ERROR, 0);
    /* tmpfs when there is one: every write op commits with fsync. */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(g.dir, sizeof(g.dir), "%s/gh-fuzz-request.XXXXXX", base ? base : "/tmp");
    if (mkdtemp(g.dir) == NULL)
        fail("mkdtemp %s: %s", g.dir, strerror(errno));
    atexit(remove_state_dir);
    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback(remove_state_dir);
    g.ready = 1;
}

static void fuzz_config(gh_config *cfg)
{
    char err[512] = "";
    if (gh_config_defaults(cfg) != 0)
        fail("gh_config_defaults: out of memory");
    free(cfg->state_dir);
    cfg->state_dir = strdup(g.dir);
    if (cfg->state_dir == NULL)
        fail("out of memory");
    cfg->argon2_opslimit = 1;
    cfg->argon2_memlimit = 8192;
    cfg->argon2_queue_max = 4; /* a pipelined burst of auth reaches rate_limited */
    cfg->max_request = FUZZ_MAX_REQUEST;
    cfg->max_output = FUZZ_MAX_OUTPUT;
    cfg->map_size = 1u << 20;
    cfg->loop_threads = 1; /* the connection is attached to loop 0 on this thread */
    if (gh_config_finish(cfg, err, sizeof(err)) != 0)
        fail("gh_config_finish: %s", err);
}

/* ---- what the server must answer ---- */

typedef struct barrier {
    size_t off;     /* input bytes up to and including the empty line */
    size_t replies; /* replies due for them */
} barrier;

typedef struct expect {
    size_t n;          /* replies expected */
    int too_large;     /* the last one is too_large */
    json_t **ids;      /* per reply: the request's id (owned) or NULL */
    barrier *barriers; /* in input order */
    size_t nbarriers;
    size_t abort_at; /* close the client here (SIZE_MAX: never) */
} expect;

/* The request's id if the line is a JSON object with a scalar "id"; the
 * server may still refuse the line before reading it (bad_request). */
static json_t *request_id(const char *line, size_t len)
{
    if (memchr(line, '\0', len) != NULL)
        return NULL;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *id = json_object_get(req, "id");
    if (id != NULL && !json_is_object(id) && !json_is_array(id))
        json_incref(id);
    else
        id = NULL;
    json_decref(req);
    return id;
}

/* Mirrors conn.c's framing: lines end at '\n', a trailing '\r' is dropped,
 * empty lines get no reply, and a line that cannot fit max_request bytes with
 * its newline gets too_large and ends the connection. */
static void expect_replies(const char *in, size_t len, expect *e)
{
    size_t start = 0;
    memset(e, 0, sizeof(*e));
    e->abort_at = SIZE_MAX;
    if (len >= 4 && memcmp(in + len - 4, "\n\n\n\n", 4) == 0) {
        /* the input ends with three newlines: hang up after its last line */
        size_t k = len;
        while (k > 0 && in[k - 1] == '\n')
            k--;
        e->abort_at = k + 1;
    }
    e->ids = calloc(len + 1, sizeof(*e->ids));
    e->barriers = calloc(len + 1, sizeof(*e->barriers));
    if (e->ids == NULL || e->barriers == NULL)
        fail("out of memory");
    while (start < len) {
        const char *nl = memchr(in + start, '\n', len - start);
        size_t n = (size_t)(nl - (in + start)); /* in always ends with '\n' */
        if (n + 1 > FUZZ_MAX_REQUEST) {
            e->too_large = 1;
            e->n++;
            return;
        }
        if (n == 0 && start > 0)
            e->barriers[e->nbarriers++] = (barrier){(size_t)(nl - in) + 1, e->n};
        if (n > 0 && in[start + n - 1] == '\r')
            n--;
        if (n > 0)
            e->ids[e->n++] = request_id(in + start, n);
        start = (size_t)(nl - in) + 1;
    }
}

static void expect_free(expect *e)
{
    for (size_t i = 0; i < e->n; i++)
        json_decref(e->ids[i]);
    free(e->ids);
    free(e->barriers);
}

/* An {"ok":false,...} object (a reply or an import result): its error code,
 * or NULL when ok is true. */
static const char *check_outcome(json_t *o, size_t i, const char *what, const char *line,
                                 size_t len)
{
    json_t *ok = json_object_get(o, "ok");
    if (!json_is_boolean(ok))
        fail("reply %zu: %s has no boolean 'ok': %.*s", i + 1, what, (int)len, line);
    if (json_is_true(ok))
        return NULL;
    json_t *err = json_object_get(o, "error");
    const char *code = json_string_value(json_object_get(err, "code"));
    if (!json_is_object(err) || code == NULL)
        fail("reply %zu: %s fails without an error code: %.*s", i + 1, what, (int)len, line);
    if (gh_error_from_code(code) == GH_EINTERNAL && strcmp(code, "internal") != 0)
        fail("reply %zu: %s has the unknown error code '%s'", i + 1, what, code);
    if (!g.lax_message && !json_is_string(json_object_get(err, "message")))
        fail("reply %zu: %s has an error without a string message: %.*s", i + 1, what, (int)len,
             line);
    if (g.strict && strcmp(code, "internal") == 0)
        fail("reply %zu: %s is an internal error (GH_FUZZ_STRICT): %.*s", i + 1, what, (int)len,
             line);
    return code;
}

static void check_reply(const char *line, size_t len, size_t i, const expect *e)
{
    json_error_t jerr;
    json_t *r = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (r == NULL)
        fail("reply %zu is not JSON (%s): %.*s", i + 1, jerr.text, (int)len, line);
    if (!json_is_object(r))
        fail("reply %zu is not an object: %.*s", i + 1, (int)len, line);
    const char *code = check_outcome(r, i, "the reply", line, len);
    /* import answers one outcome per record */
    json_t *results = json_object_get(r, "results");
    for (size_t k = 0; k < json_array_size(results); k++)
        if (json_is_object(json_array_get(results, k)))
            check_outcome(json_array_get(results, k), i, "an import result", line, len);
    int last_too_large = e->too_large && i + 1 == e->n;
    if (last_too_large && (code == NULL || strcmp(code, "too_large") != 0))
        fail("reply %zu: expected too_large for the over-long line: %.*s", i + 1, (int)len, line);
    json_t *id = json_object_get(r, "id");
    json_t *want = last_too_large ? NULL : e->ids[i];
    if (id != NULL && (want == NULL || !json_equal(id, want)))
        fail("reply %zu carries an id its request did not have: %.*s", i + 1, (int)len, line);
    if (id == NULL && want != NULL && (code == NULL || strcmp(code, "bad_request") != 0))
        fail("reply %zu lost its request's id: %.*s", i + 1, (int)len, line);
    json_decref(r);
}

static void check_replies(const char *out, size_t len, const expect *e)
{
    size_t start = 0, i = 0;
    if (len > 0 && out[len - 1] != '\n')
        fail("the last reply is not terminated by a newline");
    while (start < len) {
        const char *nl = memchr(out + start, '\n', len - start);
        size_t n = (size_t)(nl - (out + start));
        if (g.verbose)
            fprintf(stderr, "< %.*s\n", (int)n, out + start);
        if (i >= e->n)
            fail("more replies than requests (%zu expected): %.*s", e->n, (int)n, out + start);
        check_reply(out + start, n, i, e);
        i++;
        start = (size_t)(nl - out) + 1;
    }
    if (i != e->n)
        fail("%zu replies for %zu requests", i, e->n);
}

/* ---- one exchange ---- */

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* The last token issued in out[0..len): "token":"<43 base64url chars>". */
static const char *last_token(const char *out, size_t len)
{
    static const char key[] = "\"token\":\"";
    const char *found = NULL;
    for (const char *p = out; p != NULL && (size_t)(out + len - p) > sizeof(key) + TOKEN_LEN;) {
        p = memmem(p, (size_t)(out + len - p), key, sizeof(key) - 1);
        if (p == NULL)
            break;
        p += sizeof(key) - 1;
        if (p[TOKEN_LEN] == '"' && strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                             "0123456789-_") >= TOKEN_LEN)
            found = p;
    }
    return found;
}

/* Replaces each placeholder in in[0..len) by the token (same length). */
static void put_token(char *in, size_t len, const char *token)
{
    char *p = in;
    while (token != NULL &&
           (p = memmem(p, (size_t)(in + len - p), TOKEN_PLACEHOLDER, TOKEN_LEN)) != NULL) {
        memcpy(p, token, TOKEN_LEN);
        p += TOKEN_LEN;
    }
}

/* Writes in[] to fd (holding back at each barrier until its replies are in),
 * half-closes, runs the loop and collects the replies until the server closes
 * its end. With e->abort_at set, closes fd as soon as the bytes before it are
 * sent instead and returns 1. */
static int exchange(uv_loop_t *loop, int fd, char *in, size_t inlen, const expect *e, char **out,
                    size_t *outlen)
{
    size_t off = 0, cap = 0, next = 0, replies = 0;
    size_t subst = 0; /* input before this offset has its placeholders replaced */
    int writing = 1;
    uint64_t deadline = now_ms() + FUZZ_DEADLINE_MS;

    *out = NULL;
    *outlen = 0;
    for (;;) {
        int progress = 0;
        while (next < e->nbarriers && off == e->barriers[next].off &&
               replies >= e->barriers[next].replies)
            next++;
        size_t limit = next < e->nbarriers ? e->barriers[next].off : inlen;
        if (off >= e->abort_at) {
            close(fd);
            return 1;
        }
        if (limit > e->abort_at)
            limit = e->abort_at;
        if (next > 0 && off == e->barriers[next - 1].off && subst < limit) {
            /* a new chunk after a barrier: the replies before it are all in */
            put_token(in + off, limit - off, last_token(*out, *outlen));
            subst = limit;
        }
        if (writing && off < limit) {
            ssize_t n = send(fd, in + off, limit - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                off += (size_t)n;
                progress = 1;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                writing = 0; /* the server closed (too_large): replies still come */
            }
            if (off == inlen) {
                shutdown(fd, SHUT_WR);
                writing = 0;
            }
        }
        uv_run(loop, UV_RUN_NOWAIT);
        for (;;) {
            if (cap - *outlen < 4096) {
                cap = cap ? cap * 2 : 16384;
                *out = realloc(*out, cap);
                if (*out == NULL)
                    fail("out of memory");
            }
            ssize_t n = recv(fd, *out + *outlen, cap - *outlen, MSG_DONTWAIT);
            if (n > 0) {
                for (ssize_t i = 0; i < n; i++)
                    replies += (*out)[*outlen + (size_t)i] == '\n';
                *outlen += (size_t)n;
                progress = 1;
                continue;
            }
            if (n == 0 || (n < 0 && errno == ECONNRESET))
                return 0; /* the server closed: every reply is in */
            if (errno != EAGAIN && errno != EINTR)
                fail("recv: %s", strerror(errno));
            break;
        }
        if (now_ms() > deadline)
            fail("the server did not answer and close within %d ms (%zu of %zu bytes "
                 "written, %zu bytes of replies)",
                 FUZZ_DEADLINE_MS, off, inlen, *outlen);
        if (!progress) {
            struct pollfd p[2] = {
                {.fd = fd, .events = (short)(POLLIN | (writing && off < limit ? POLLOUT : 0))},
                {.fd = uv_backend_fd(loop), .events = POLLIN},
            };
            int t = uv_backend_timeout(loop);
            poll(p, 2, t < 0 || t > 50 ? 50 : t);
        }
    }
}

static void print_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "  leaked handle: %s%s\n", uv_handle_type_name(uv_handle_get_type(h)),
            uv_is_closing(h) ? " (closing)" : "");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gh_config cfg;
    gh_server srv;
    uv_loop_t loop;
    int sv[2];
    char *in, *out;
    size_t outlen;
    expect e;
    int rc;

    init_once();
    if (empty_state_dir() != 0)
        fail("cannot empty the state directory %s: %s", g.dir, strerror(errno));
    fuzz_config(&cfg);

    in = malloc(size + 1);
    if (in == NULL)
        fail("out of memory");
    if (size > 0)
        memcpy(in, data, size);
    in[size] = '\n';
    if (g.verbose)
        fprintf(stderr, "> %.*s", (int)size + 1, in);
    expect_replies(in, size + 1, &e);

    if (uv_loop_init(&loop) != 0)
        fail("uv_loop_init failed");
    rc = gh__server_open(&srv, &cfg, &loop);
    if (rc != 0)
        fail("gh__server_open: %s", gh_strerror(rc));
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        fail("socketpair: %s", strerror(errno));
    rc = gh__conn_attach_fd(&srv, sv[0], getuid(), getgid(), 1);
    if (rc != 0)
        fail("gh__conn_attach_fd: %s", gh_strerror(rc));

    if (exchange(&loop, sv[1], in, size + 1, &e, &out, &outlen) == 0) {
        expect_free(&e);
        expect_replies(in, size + 1, &e); /* again: ids may hold a substituted token */
        check_replies(out, outlen, &e);
        close(sv[1]);
    } else {
        /* the peer hung up: the server must still finish and free the
         * connection on its own, whatever was in flight */
        uint64_t deadline = now_ms() + FUZZ_DEADLINE_MS;
        while (srv.nconns > 0) {
            if (now_ms() > deadline)
                fail("the connection was not freed within %d ms of the peer hanging up",
                     FUZZ_DEADLINE_MS);
            uv_run(&loop, UV_RUN_NOWAIT);
            if (srv.nconns == 0)
                break;
            struct pollfd p = {.fd = uv_backend_fd(&loop), .events = POLLIN};
            int t = uv_backend_timeout(&loop);
            poll(&p, 1, t < 0 || t > 50 ? 50 : t);
        }
    }
    gh__server_close(&srv);
    if (uv_loop_close(&loop) != 0) {
        uv_walk(&loop, print_handle, NULL);
        fail("handles left on the loop after gh__server_close");
    }
    gh_config_free(&cfg);
    expect_free(&e);
    free(out);
    free(in);
    return 0;
}
