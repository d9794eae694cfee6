/*
 * libgatehouse.c: the client side of protocol v1 (docs/PROTOCOL.md).
 *
 * A gh_client owns one non-blocking UNIX socket, an output buffer holding the
 * serialized lines of every request not yet answered (oldest first), a ring of
 * those requests, and an input buffer of bytes read but not yet returned.
 * Requests stay in the output buffer until their response is consumed because
 * a broken connection may oblige us to send some of them again: the ones not
 * completely written (the server only acts on a complete line) and the
 * read-only ones. A written request that changes state is never repeated; it
 * is marked lost and its gh_recv reports GH_ERR_CONNECTION_LOST.
 *
 * Writes and reads are interleaved by one poll loop (io_step) so that a client
 * that pipelines thousands of requests keeps draining the server's replies and
 * never deadlocks against the server's output limit.
 *
 * Before changing it, know that buffers may hold passwords and tokens: they
 * are wiped when consumed and never given back to malloc unwiped (grow_buf
 * copies instead of realloc).
 */
#include "gh-config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clients/gatehouse.h"
#include "clients/paths-int.h"

#define READ_CHUNK 65536
#define EAGER_FLUSH 65536     /* gh_send writes once this many bytes wait */
#define MAX_RECONNECTS 3      /* per wait, so a server that drops us cannot loop us */
#define COMPACT_AT 65536      /* answered bytes at the front worth a memmove */
#define READ_BURST (4u << 20) /* bytes read per poll round before limits are checked */

typedef struct req {
    size_t len;         /* bytes of its line in out (0 once failed) */
    unsigned char idem; /* read-only: safe to send again */
    int failed;         /* 0, or the status its gh_recv reports without reading */
} req;

struct gh_client {
    char *path;
    int fd; /* -1 while disconnected */
    int timeout_ms;
    int reconnect;
    size_t max_response;
    char *token;

    char *out; /* lines of the unanswered requests, from out_head to out_len */
    size_t out_head, out_len, out_cap;
    size_t out_sent; /* out[out_head..out_sent) is written on this connection */

    req *reqs; /* ring: reqs[(req_head + i) % req_cap], i < req_count */
    size_t req_head, req_count, req_cap;

    char *in; /* in[in_start..in_len) read, not yet consumed */
    size_t in_start, in_len, in_cap;
    size_t in_scan; /* no newline in in[in_start..in_scan) */

    int err;
    char errcode[64];
    char errmsg[512];
};

/* ---- errors ---- */

static const struct {
    int status;
    const char *code;
} codes[] = {
    {0, "ok"},
    {GH_ERR_BAD_REQUEST, "bad_request"},
    {GH_ERR_UNKNOWN_OP, "unknown_op"},
    {GH_ERR_NOT_FOUND, "not_found"},
    {GH_ERR_EXISTS, "exists"},
    {GH_ERR_INVALID_ARGUMENT, "invalid_argument"},
    {GH_ERR_PERMISSION_DENIED, "permission_denied"},
    {GH_ERR_INVALID_CREDENTIALS, "invalid_credentials"},
    {GH_ERR_ACCOUNT_LOCKED, "account_locked"},
    {GH_ERR_ACCOUNT_DISABLED, "account_disabled"},
    {GH_ERR_RATE_LIMITED, "rate_limited"},
    {GH_ERR_INVALID_TOKEN, "invalid_token"},
    {GH_ERR_INTERNAL, "internal"},
    {GH_ERR_CYCLE, "cycle"},
    {GH_ERR_IN_USE, "in_use"},
    {GH_ERR_TOO_LARGE, "too_large"},
    {GH_ERR_STORAGE_FULL, "storage_full"},
    {GH_ERR_VERSION_MISMATCH, "version_mismatch"},
    {GH_ERR_UNAVAILABLE, "unavailable"},
    {GH_ERR_SERVER_OTHER, "server_error"},
    {GH_ERR_CONNECT, "connect_failed"},
    {GH_ERR_CONNECTION_LOST, "connection_lost"},
    {GH_ERR_PROTOCOL, "protocol_error"},
    {GH_ERR_NOMEM, "out_of_memory"},
    {GH_ERR_USAGE, "bad_usage"},
    {GH_ERR_TIMEOUT, "timeout"},
};

#define NCODES (sizeof(codes) / sizeof(codes[0]))

const char *gh_client_status_code(int status)
{
    for (size_t i = 0; i < NCODES; i++)
        if (codes[i].status == status)
            return codes[i].code;
    return "unknown";
}

int gh_client_status_from_code(const char *code)
{
    if (code == NULL)
        return GH_ERR_SERVER_OTHER;
    /* only the server's codes: a server never sends the client's */
    for (size_t i = 1; i < NCODES && codes[i].status >= GH_ERR_UNAVAILABLE; i++)
        if (strcmp(codes[i].code, code) == 0)
            return codes[i].status;
    return GH_ERR_SERVER_OTHER;
}

const char *gh_client_version(void)
{
    return PACKAGE_VERSION;
}

static void clear_error(gh_client *c)
{
    c->err = 0;
    c->errcode[0] = '\0';
    c->errmsg[0] = '\0';
}

/* Records a client-side failure and returns status. */
__attribute__((format(printf, 3, 4))) static int fail(gh_client *c, int status, const char *fmt,
                                                      ...)
{
    va_list ap;

    c->err = status;
    snprintf(c->errcode, sizeof(c->errcode), "%s", gh_client_status_code(status));
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
    va_end(ap);
    return status;
}

int gh_client_error(const gh_client *c)
{
    return c ? c->err : GH_ERR_USAGE;
}

const char *gh_client_error_code(const gh_client *c)
{
    return c ? c->errcode : "bad_usage";
}

const char *gh_client_error_message(const gh_client *c)
{
    return c ? c->errmsg : "no client";
}

/* ---- buffers ---- */

static void wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        explicit_bzero(p, n);
}

/* Wipes the text of a jansson string that held a secret before it is freed. */
static void wipe_json_string(json_t *s)
{
    if (json_is_string(s))
        wipe((char *)json_string_value(s), json_string_length(s));
}

/* Grows *buf to hold need bytes, keeping [0, used). Copies rather than
 * realloc so that the old block is wiped before it goes back to malloc. */
static int grow_buf(char **buf, size_t *cap, size_t used, size_t need)
{
    size_t ncap;
    char *n;

    if (need <= *cap)
        return 0;
    ncap = *cap ? *cap : 4096;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return GH_ERR_NOMEM;
        ncap *= 2;
    }
    n = malloc(ncap);
    if (n == NULL)
        return GH_ERR_NOMEM;
    if (used > 0)
        memcpy(n, *buf, used);
    wipe(*buf, *cap);
    free(*buf);
    *buf = n;
    *cap = ncap;
    return 0;
}

/* Makes room for n more bytes at out + out_len. Never moves bytes within
 * the buffer (offsets of a line being built stay valid); req_pop compacts. */
static int out_reserve(gh_client *c, size_t n)
{
    if (c->out_len + n <= c->out_cap)
        return 0;
    return grow_buf(&c->out, &c->out_cap, c->out_len, c->out_len + n);
}

static int out_append(gh_client *c, const char *s, size_t n)
{
    int rc = out_reserve(c, n);
    if (rc < 0)
        return rc;
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
    return 0;
}

static int out_str(gh_client *c, const char *s)
{
    return out_append(c, s, strlen(s));
}

/* Appends s as a JSON string. Bytes >= 0x80 pass through: the server checks
 * UTF-8 and answers bad_request for invalid text. */
static int out_json_string(gh_client *c, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(s);
    int rc = out_reserve(c, n * 6 + 2);
    char *p;

    if (rc < 0)
        return rc;
    p = c->out + c->out_len;
    *p++ = '"';
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if (*q == '"' || *q == '\\') {
            *p++ = '\\';
            *p++ = (char)*q;
        } else if (*q < 0x20 || *q == 0x7f) {
            *p++ = '\\';
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[*q >> 4];
            *p++ = hex[*q & 15];
        } else {
            *p++ = (char)*q;
        }
    }
    *p++ = '"';
    c->out_len = (size_t)(p - c->out);
    return 0;
}

static req *req_at(gh_client *c, size_t i)
{
    return &c->reqs[(c->req_head + i) % c->req_cap];
}

static int req_push(gh_client *c, size_t len, int idem)
{
    req *r;

    if (c->req_count == c->req_cap) {
        size_t ncap = c->req_cap ? c->req_cap * 2 : 64;
        req *n = calloc(ncap, sizeof(*n));
        if (n == NULL)
            return GH_ERR_NOMEM;
        for (size_t i = 0; i < c->req_count; i++)
            n[i] = *req_at(c, i);
        free(c->reqs);
        c->reqs = n;
        c->req_cap = ncap;
        c->req_head = 0;
    }
    r = req_at(c, c->req_count);
    r->len = len;
    r->idem = (unsigned char)(idem != 0);
    r->failed = 0;
    c->req_count++;
    return 0;
}

/* Drops the oldest request and wipes its bytes. */
static void req_pop(gh_client *c)
{
    req *r = req_at(c, 0);

    wipe(c->out + c->out_head, r->len);
    c->out_head += r->len;
    if (c->out_sent < c->out_head)
        c->out_sent = c->out_head;
    if (c->out_head == c->out_len) {
        c->out_head = c->out_len = c->out_sent = 0;
    } else if (c->out_head >= COMPACT_AT && c->out_head >= c->out_len - c->out_head) {
        /* the answered front is bigger than what is left: move the rest down
         * (the vacated front was wiped request by request) */
        size_t live = c->out_len - c->out_head;
        memmove(c->out, c->out + c->out_head, live);
        wipe(c->out + live, c->out_len - live);
        c->out_sent -= c->out_head;
        c->out_len = live;
        c->out_head = 0;
    }
    c->req_head = (c->req_head + 1) % c->req_cap;
    c->req_count--;
}

/* ---- the connection ---- */

/* The installed server's socket, or ./var's when this library was loaded
 * from its build tree (paths-int.h). */
static const char *default_socket(void)
{
    Dl_info info;
    if (dladdr((void *)&default_socket, &info) != 0 && gh__in_build_tree(info.dli_fname))
        return GH_CHECKOUT_SOCKET;
    return GH_CLIENT_DEFAULT_SOCKET;
}

int gh_client_new(gh_client **out, const char *socket_path)
{
    struct sockaddr_un sa;
    gh_client *c;

    if (out == NULL)
        return GH_ERR_USAGE;
    *out = NULL;
    if (socket_path == NULL || socket_path[0] == '\0') {
        socket_path = getenv(GH_CLIENT_SOCKET_ENV);
        if (socket_path == NULL || socket_path[0] == '\0')
            socket_path = default_socket();
    }
    if (strlen(socket_path) >= sizeof(sa.sun_path))
        return GH_ERR_USAGE;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return GH_ERR_NOMEM;
    c->path = strdup(socket_path);
    if (c->path == NULL) {
        free(c);
        return GH_ERR_NOMEM;
    }
    c->fd = -1;
    c->reconnect = 1;
    c->max_response = GH_CLIENT_DEFAULT_MAX_RESPONSE;
    *out = c;
    return 0;
}

static void close_fd(gh_client *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

void gh_client_free(gh_client *c)
{
    if (c == NULL)
        return;
    close_fd(c);
    wipe(c->out, c->out_cap);
    wipe(c->in, c->in_cap);
    free(c->out);
    free(c->in);
    free(c->reqs);
    if (c->token != NULL) {
        wipe(c->token, strlen(c->token));
        free(c->token);
    }
    free(c->path);
    free(c);
}

const char *gh_client_socket_path(const gh_client *c)
{
    return c ? c->path : NULL;
}

int gh_client_set_timeout(gh_client *c, int timeout_ms)
{
    if (c == NULL || timeout_ms < 0)
        return GH_ERR_USAGE;
    c->timeout_ms = timeout_ms;
    return 0;
}

int gh_client_set_max_response(gh_client *c, size_t bytes)
{
    if (c == NULL || bytes < 64)
        return GH_ERR_USAGE;
    c->max_response = bytes;
    return 0;
}

int gh_client_set_reconnect(gh_client *c, int enabled)
{
    if (c == NULL)
        return GH_ERR_USAGE;
    c->reconnect = enabled != 0;
    return 0;
}

int gh_client_set_token(gh_client *c, const char *token)
{
    char *t = NULL;

    if (c == NULL)
        return GH_ERR_USAGE;
    if (token != NULL && (t = strdup(token)) == NULL)
        return GH_ERR_NOMEM;
    if (c->token != NULL) {
        wipe(c->token, strlen(c->token));
        free(c->token);
    }
    c->token = t;
    return 0;
}

size_t gh_client_pending(const gh_client *c)
{
    return c ? c->req_count : 0;
}

static int do_connect(gh_client *c)
{
    struct sockaddr_un sa;
    int fd, flags;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, c->path, strlen(c->path) + 1); /* length checked in gh_client_new */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail(c, GH_ERR_CONNECT, "cannot create a socket: %s", strerror(errno));
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno == EINTR)
            continue;
        int e = errno;
        close(fd);
        return fail(c, GH_ERR_CONNECT, "cannot connect to %s: %s", c->path, strerror(e));
    }
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        int e = errno;
        close(fd);
        return fail(c, GH_ERR_CONNECT, "cannot set up the socket: %s", strerror(e));
    }
    c->fd = fd;
    return 0;
}

int gh_client_connect(gh_client *c)
{
    if (c == NULL)
        return GH_ERR_USAGE;
    clear_error(c);
    if (c->fd >= 0)
        return 0;
    return do_connect(c);
}

/* Offset in in[] just past the k-th complete line after in_start, or 0. */
static size_t complete_lines(gh_client *c, size_t *count)
{
    size_t pos = c->in_start, n = 0;
    const char *nl;

    while (pos < c->in_len && (nl = memchr(c->in + pos, '\n', c->in_len - pos)) != NULL) {
        pos = (size_t)(nl - c->in) + 1;
        n++;
    }
    *count = n;
    return pos;
}

/*
 * The connection is gone. Responses already buffered stay valid for the
 * oldest requests; of the others, those fully written that change state are
 * marked lost (their bytes removed), the rest are kept to be sent again on
 * the next connection. Partial response bytes are dropped.
 */
static void break_connection(gh_client *c)
{
    size_t answered, keep_in, pos, i;

    close_fd(c);
    keep_in = complete_lines(c, &answered);
    wipe(c->in + keep_in, c->in_len - keep_in);
    c->in_len = keep_in;
    if (c->in_scan > c->in_len)
        c->in_scan = c->in_len;

    /* lines answer the requests that did not fail earlier, in order */
    pos = c->out_head;
    for (i = 0; i < c->req_count && answered > 0; i++) {
        if (req_at(c, i)->failed)
            continue;
        pos += req_at(c, i)->len;
        answered--;
    }
    size_t first_open = i;
    size_t sent_end = c->out_sent;
    size_t resend_from = pos;
    for (; i < c->req_count; i++) {
        req *r = req_at(c, i);
        if (r->failed)
            continue;
        if (pos + r->len <= sent_end && (!r->idem || !c->reconnect)) {
            /* written in full: the server may have applied it */
            memmove(c->out + pos, c->out + pos + r->len, c->out_len - pos - r->len);
            wipe(c->out + c->out_len - r->len, r->len);
            c->out_len -= r->len;
            sent_end = sent_end > r->len ? sent_end - r->len : 0;
            r->len = 0;
            r->failed = GH_ERR_CONNECTION_LOST;
        } else {
            if (!c->reconnect)
                r->failed = GH_ERR_CONNECTION_LOST;
            pos += r->len;
        }
    }
    if (!c->reconnect) {
        /* nothing will be sent again: drop the unwritten bytes too */
        pos = resend_from;
        for (i = first_open; i < c->req_count; i++) {
            req *r = req_at(c, i);
            if (r->len > 0) {
                memmove(c->out + pos, c->out + pos + r->len, c->out_len - pos - r->len);
                wipe(c->out + c->out_len - r->len, r->len);
                c->out_len -= r->len;
                r->len = 0;
            }
        }
    }
    c->out_sent = resend_from;
}

void gh_client_disconnect(gh_client *c)
{
    if (c != NULL && c->fd >= 0)
        break_connection(c);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum { IO_OK = 0, IO_BROKEN = 1, IO_TIMEOUT = 2 };

/* Writes what the socket takes. IO_OK or IO_BROKEN. */
static int write_some(gh_client *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return IO_OK;
        return IO_BROKEN;
    }
    return IO_OK;
}

/* Reads what is there. IO_OK or IO_BROKEN (EOF or error); *rc is set to a
 * negative status for a fatal local condition (memory). */
static int read_some(gh_client *c, int *rc)
{
    size_t burst = 0;

    while (burst < READ_BURST) {
        if (c->in_cap - c->in_len < READ_CHUNK) {
            if (c->in_start > 0) {
                size_t live = c->in_len - c->in_start;
                memmove(c->in, c->in + c->in_start, live);
                wipe(c->in + live, c->in_len - live);
                c->in_scan -= c->in_start;
                c->in_len = live;
                c->in_start = 0;
            }
            if (c->in_cap - c->in_len < READ_CHUNK) {
                int g = grow_buf(&c->in, &c->in_cap, c->in_len, c->in_len + READ_CHUNK);
                if (g < 0) {
                    *rc = g;
                    return IO_OK;
                }
            }
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n > 0) {
            size_t room = c->in_cap - c->in_len;
            c->in_len += (size_t)n;
            burst += (size_t)n;
            if ((size_t)n < room)
                return IO_OK; /* short read: nothing more for now */
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return IO_OK;
        return IO_BROKEN;
    }
    return IO_OK;
}

/* One round of poll: writes pending bytes, reads available ones. */
static int io_step(gh_client *c, int want_read, int64_t deadline, int *rc)
{
    struct pollfd p;
    int timeout = -1, n;

    p.fd = c->fd;
    p.events = 0;
    if (want_read)
        p.events |= POLLIN;
    if (c->out_sent < c->out_len)
        p.events |= POLLOUT;
    if (p.events == 0)
        return IO_OK;
    if (deadline >= 0) {
        int64_t left = deadline - now_ms();
        timeout = left > 0 ? (int)(left > INT32_MAX ? INT32_MAX : left) : 0;
    }
    n = poll(&p, 1, timeout);
    if (n < 0) {
        if (errno == EINTR)
            return IO_OK;
        return IO_BROKEN;
    }
    if (n == 0)
        return deadline >= 0 && now_ms() >= deadline ? IO_TIMEOUT : IO_OK;
    if (p.revents & POLLOUT) {
        if (write_some(c) == IO_BROKEN)
            return IO_BROKEN;
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
        if (read_some(c, rc) == IO_BROKEN)
            return IO_BROKEN;
    } else if (p.revents & POLLNVAL) {
        return IO_BROKEN;
    }
    return IO_OK;
}

/* A connection idle with nothing pending that the server closed (idle
 * timeout, restart) reads as EOF: notice it before writing to it. */
static void check_idle_connection(gh_client *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};

    if (c->fd < 0 || c->req_count != 0)
        return;
    if (poll(&p, 1, 0) > 0)
        break_connection(c); /* EOF, or bytes nobody asked for: start afresh */
}

/* Queues a finished line of len bytes (already appended, newline included). */
static int queue_line(gh_client *c, size_t start, int idem)
{
    int rc = req_push(c, c->out_len - start, idem);
    if (rc < 0) {
        wipe(c->out + start, c->out_len - start);
        c->out_len = start;
        return fail(c, rc, "out of memory");
    }
    if (c->out_len - c->out_sent >= EAGER_FLUSH && c->fd >= 0) {
        int dummy = 0;
        if (io_step(c, 1, 0, &dummy) == IO_BROKEN)
            break_connection(c);
    }
    return 0;
}

/* Ends a hand-built request: adds "auth", "}" and the newline. */
static int finish_line(gh_client *c, size_t start, int idem)
{
    int rc = 0;

    if (c->token != NULL) {
        rc = out_str(c, ",\"auth\":");
        if (rc == 0)
            rc = out_json_string(c, c->token);
    }
    if (rc == 0)
        rc = out_str(c, "}\n");
    if (rc < 0) {
        wipe(c->out + start, c->out_len - start);
        c->out_len = start;
        return fail(c, rc, "out of memory");
    }
    return queue_line(c, start, idem);
}

/* Operations that only read: safe to send again after a broken connection. */
static int op_is_idempotent(const char *op)
{
    static const char *const ro[] = {
        "ping",      "whoami",     "check",    "check.batch", "user.get",    "user.list",
        "group.get", "group.list", "role.get", "role.list",   "bindings",    "perms",
        "who_can",   "stats",      "audit",    "dump",        "sync.status",
    };
    if (op == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(ro) / sizeof(ro[0]); i++)
        if (strcmp(op, ro[i]) == 0)
            return 1;
    return 0;
}

int gh_send(gh_client *c, json_t *request)
{
    size_t need, start, got;
    int rc;

    if (c == NULL)
        return GH_ERR_USAGE;
    clear_error(c);
    if (!json_is_object(request))
        return fail(c, GH_ERR_USAGE, "the request must be a JSON object");
    if (!json_is_string(json_object_get(request, "op")))
        return fail(c, GH_ERR_USAGE, "the request has no \"op\" string");
    check_idle_connection(c);
    need = json_dumpb(request, NULL, 0, JSON_COMPACT);
    if (need == 0)
        return fail(c, GH_ERR_USAGE, "the request cannot be encoded as JSON");
    start = c->out_len;
    rc = out_reserve(c, need + 1);
    if (rc < 0)
        return fail(c, rc, "out of memory");
    got = json_dumpb(request, c->out + start, need, JSON_COMPACT);
    if (got != need || got < 2 || c->out[start + got - 1] != '}') {
        wipe(c->out + start, need);
        return fail(c, GH_ERR_USAGE, "the request cannot be encoded as JSON");
    }
    c->out_len = start + got;
    if (c->token != NULL && json_object_get(request, "auth") == NULL) {
        /* reopen the object to add "auth" */
        c->out_len--;
        if (got > 2)
            rc = out_str(c, ",");
        if (rc == 0)
            rc = out_str(c, "\"auth\":");
        if (rc == 0)
            rc = out_json_string(c, c->token);
        if (rc == 0)
            rc = out_str(c, "}");
    }
    if (rc == 0)
        rc = out_str(c, "\n");
    if (rc < 0) {
        wipe(c->out + start, c->out_len - start);
        c->out_len = start;
        return fail(c, rc, "out of memory");
    }
    return queue_line(c, start,
                      op_is_idempotent(json_string_value(json_object_get(request, "op"))));
}

/* Makes sure a connection is up when requests need one. */
static int ensure_connected(gh_client *c, int *reconnects)
{
    if (c->fd >= 0)
        return 0;
    if (*reconnects >= MAX_RECONNECTS)
        return fail(c, GH_ERR_CONNECTION_LOST, "the server keeps closing the connection");
    (*reconnects)++;
    return do_connect(c);
}

int gh_flush(gh_client *c)
{
    int reconnects = 0, rc = 0;
    int64_t deadline;

    if (c == NULL)
        return GH_ERR_USAGE;
    clear_error(c);
    check_idle_connection(c);
    deadline = c->timeout_ms > 0 ? now_ms() + c->timeout_ms : -1;
    while (c->out_sent < c->out_len) {
        rc = ensure_connected(c, &reconnects);
        if (rc < 0)
            return rc;
        int memrc = 0;
        int io = io_step(c, 1, deadline, &memrc);
        if (memrc < 0)
            return fail(c, memrc, "out of memory");
        if (io == IO_BROKEN)
            break_connection(c);
        else if (io == IO_TIMEOUT)
            return fail(c, GH_ERR_TIMEOUT, "timed out writing to %s", c->path);
    }
    return 0;
}

/* Turns the oldest complete line into a response for the oldest request. */
static int take_response(gh_client *c, size_t nl, json_t **response)
{
    size_t len = nl - c->in_start;
    json_error_t jerr;
    json_t *r, *ok, *e;
    int rc = 0;

    r = json_loadb(c->in + c->in_start, len, 0, &jerr);
    wipe(c->in + c->in_start, len + 1);
    c->in_start = nl + 1;
    c->in_scan = c->in_start;
    if (c->in_start == c->in_len)
        c->in_start = c->in_len = c->in_scan = 0;
    req_pop(c);
    if (r == NULL)
        return fail(c, GH_ERR_PROTOCOL, "response is not JSON: %s", jerr.text);
    ok = json_object_get(r, "ok");
    if (!json_is_object(r) || !json_is_boolean(ok)) {
        json_decref(r);
        return fail(c, GH_ERR_PROTOCOL, "response has no \"ok\" member");
    }
    if (json_is_false(ok)) {
        const char *code, *msg;
        e = json_object_get(r, "error");
        code = json_string_value(json_object_get(e, "code"));
        msg = json_string_value(json_object_get(e, "message"));
        rc = gh_client_status_from_code(code);
        c->err = rc;
        snprintf(c->errcode, sizeof(c->errcode), "%s", code ? code : "server_error");
        snprintf(c->errmsg, sizeof(c->errmsg), "%s", msg ? msg : "(no message)");
    }
    *response = r;
    return rc;
}

int gh_recv(gh_client *c, json_t **response)
{
    int reconnects = 0, rc;
    int64_t deadline;

    if (response != NULL)
        *response = NULL;
    if (c == NULL || response == NULL)
        return c ? fail(c, GH_ERR_USAGE, "response is NULL") : GH_ERR_USAGE;
    clear_error(c);
    if (c->req_count == 0)
        return fail(c, GH_ERR_USAGE, "no request is waiting for a response");
    deadline = c->timeout_ms > 0 ? now_ms() + c->timeout_ms : -1;
    for (;;) {
        req *head = req_at(c, 0);
        const char *nl;

        /* a failed request has no line: the next line answers a later one */
        if (head->failed) {
            rc = head->failed;
            req_pop(c);
            if (rc == GH_ERR_CONNECTION_LOST)
                return fail(c, rc,
                            "the connection to %s broke after the request was sent; "
                            "it may or may not have been applied",
                            c->path);
            return fail(c, rc, "request failed");
        }
        if (c->in_scan < c->in_len &&
            (nl = memchr(c->in + c->in_scan, '\n', c->in_len - c->in_scan)) != NULL) {
            size_t end = (size_t)(nl - c->in);
            if (end - c->in_start > c->max_response) {
                /* complete, so the framing holds: skip it, keep the connection */
                wipe(c->in + c->in_start, end + 1 - c->in_start);
                c->in_start = c->in_scan = end + 1;
                req_pop(c);
                return fail(c, GH_ERR_PROTOCOL, "response longer than the limit of %zu bytes",
                            c->max_response);
            }
            return take_response(c, end, response);
        }
        c->in_scan = c->in_len;
        if (c->in_len - c->in_start > c->max_response) {
            break_connection(c);
            req_pop(c);
            return fail(c, GH_ERR_PROTOCOL, "response longer than the limit of %zu bytes",
                        c->max_response);
        }
        if (c->fd < 0) {
            rc = ensure_connected(c, &reconnects);
            if (rc < 0) {
                /* this request fails; later ones may succeed on a later try */
                req_pop(c);
                return rc;
            }
        }
        int memrc = 0;
        int io = io_step(c, 1, deadline, &memrc);
        if (memrc < 0)
            return fail(c, memrc, "out of memory");
        if (io == IO_BROKEN) {
            break_connection(c);
        } else if (io == IO_TIMEOUT) {
            break_connection(c);
            if (c->in_scan < c->in_len && memchr(c->in + c->in_scan, '\n', c->in_len - c->in_scan))
                continue; /* the answer arrived together with the timeout */
            req_pop(c);
            return fail(c, GH_ERR_TIMEOUT, "no response from %s within %d ms", c->path,
                        c->timeout_ms);
        }
    }
}

int gh_call(gh_client *c, json_t *request, json_t **response)
{
    int rc;

    if (response != NULL)
        *response = NULL;
    if (c == NULL || response == NULL)
        return c ? fail(c, GH_ERR_USAGE, "response is NULL") : GH_ERR_USAGE;
    if (c->req_count != 0)
        return fail(c, GH_ERR_USAGE, "gh_call while pipelined responses are pending");
    rc = gh_send(c, request);
    if (rc < 0)
        return rc;
    return gh_recv(c, response);
}

/* ---- typed calls ---- */

/* Starts a hand-built request: "{\"op\":OP". */
static int begin_line(gh_client *c, const char *op, size_t *start)
{
    clear_error(c);
    if (c->req_count != 0)
        return fail(c, GH_ERR_USAGE, "typed call while pipelined responses are pending");
    check_idle_connection(c);
    *start = c->out_len;
    if (out_str(c, "{\"op\":") < 0 || out_json_string(c, op) < 0) {
        wipe(c->out + *start, c->out_len - *start);
        c->out_len = *start;
        return fail(c, GH_ERR_NOMEM, "out of memory");
    }
    return 0;
}

static int add_str(gh_client *c, const char *key, const char *value)
{
    if (out_str(c, ",") < 0 || out_json_string(c, key) < 0 || out_str(c, ":") < 0 ||
        out_json_string(c, value) < 0)
        return GH_ERR_NOMEM;
    return 0;
}

static int add_raw(gh_client *c, const char *key, const char *raw)
{
    if (out_str(c, ",") < 0 || out_json_string(c, key) < 0 || out_str(c, ":") < 0 ||
        out_str(c, raw) < 0)
        return GH_ERR_NOMEM;
    return 0;
}

static int abort_line(gh_client *c, size_t start)
{
    wipe(c->out + start, c->out_len - start);
    c->out_len = start;
    return fail(c, GH_ERR_NOMEM, "out of memory");
}

/* Sends the built line and waits for its response. */
static int roundtrip(gh_client *c, size_t start, int idem, json_t **resp)
{
    int rc = finish_line(c, start, idem);
    if (rc < 0)
        return rc;
    return gh_recv(c, resp);
}

int gh_ping(gh_client *c, int *protocol)
{
    size_t start;
    json_t *resp = NULL;
    int rc;

    if (c == NULL)
        return GH_ERR_USAGE;
    if ((rc = begin_line(c, "ping", &start)) < 0)
        return rc;
    rc = roundtrip(c, start, 1, &resp);
    if (rc == 0 && protocol != NULL)
        *protocol = (int)json_integer_value(json_object_get(resp, "protocol"));
    json_decref(resp);
    return rc;
}

int gh_auth(gh_client *c, const char *user, const char *password, unsigned ttl_s, char *token,
            size_t tokenlen, int64_t *expires_at)
{
    size_t start;
    json_t *resp = NULL, *t;
    char num[32];
    int rc;

    if (token != NULL && tokenlen > 0)
        token[0] = '\0';
    if (expires_at != NULL)
        *expires_at = 0;
    if (c == NULL)
        return GH_ERR_USAGE;
    if (user == NULL || password == NULL || token == NULL || tokenlen == 0)
        return fail(c, GH_ERR_USAGE, "gh_auth: user, password and token are required");
    if ((rc = begin_line(c, "auth", &start)) < 0)
        return rc;
    if (add_str(c, "user", user) < 0 || add_str(c, "password", password) < 0)
        return abort_line(c, start);
    if (ttl_s > 0) {
        snprintf(num, sizeof(num), "%u", ttl_s);
        if (add_raw(c, "ttl", num) < 0)
            return abort_line(c, start);
    }
    rc = roundtrip(c, start, 0, &resp);
    if (rc == 0) {
        t = json_object_get(resp, "token");
        if (!json_is_string(t)) {
            rc = fail(c, GH_ERR_PROTOCOL, "auth response without a token");
        } else if (json_string_length(t) >= tokenlen) {
            rc = fail(c, GH_ERR_USAGE, "token buffer too small (%zu bytes needed)",
                      json_string_length(t) + 1);
        } else {
            memcpy(token, json_string_value(t), json_string_length(t) + 1);
            if (expires_at != NULL)
                *expires_at = json_integer_value(json_object_get(resp, "expires_at"));
        }
        wipe_json_string(t);
    }
    json_decref(resp);
    return rc;
}

/* Requests whose only argument is a token. */
static int token_call(gh_client *c, const char *op, const char *token, int idem, json_t **resp)
{
    size_t start;
    int rc;

    if (token == NULL)
        return fail(c, GH_ERR_USAGE, "%s: token is required", op);
    if ((rc = begin_line(c, op, &start)) < 0)
        return rc;
    if (add_str(c, "token", token) < 0)
        return abort_line(c, start);
    return roundtrip(c, start, idem, resp);
}

int gh_whoami(gh_client *c, const char *token, gh_identity *out)
{
    json_t *resp = NULL;
    const char *u;
    int rc;

    if (c == NULL || out == NULL)
        return c ? fail(c, GH_ERR_USAGE, "gh_whoami: out is NULL") : GH_ERR_USAGE;
    memset(out, 0, sizeof(*out));
    rc = token_call(c, "whoami", token, 1, &resp);
    if (rc == 0) {
        u = json_string_value(json_object_get(resp, "user"));
        if (u == NULL || strlen(u) > GH_CLIENT_NAME_MAX) {
            rc = fail(c, GH_ERR_PROTOCOL, "whoami response without a valid user");
        } else {
            snprintf(out->user, sizeof(out->user), "%s", u);
            out->expires_at = json_integer_value(json_object_get(resp, "expires_at"));
            out->admin = json_is_true(json_object_get(resp, "admin"));
        }
    }
    json_decref(resp);
    return rc;
}

int gh_logout(gh_client *c, const char *token)
{
    json_t *resp = NULL;
    int rc;

    if (c == NULL)
        return GH_ERR_USAGE;
    rc = token_call(c, "logout", token, 0, &resp);
    json_decref(resp);
    return rc;
}

int gh_logout_all(gh_client *c, const char *user, unsigned *revoked)
{
    json_t *resp = NULL;
    size_t start;
    int rc;

    if (revoked != NULL)
        *revoked = 0;
    if (c == NULL)
        return GH_ERR_USAGE;
    if (user == NULL)
        return fail(c, GH_ERR_USAGE, "gh_logout_all: user is required");
    if ((rc = begin_line(c, "session.revoke", &start)) < 0)
        return rc;
    if (add_str(c, "user", user) < 0)
        return abort_line(c, start);
    /* idempotent: ending every session twice ends every session */
    rc = roundtrip(c, start, 1, &resp);
    if (rc == 0 && revoked != NULL)
        *revoked = (unsigned)json_integer_value(json_object_get(resp, "revoked"));
    json_decref(resp);
    return rc;
}

static int check_one(gh_client *c, const char *key, const char *subject, const char *action,
                     const char *resource)
{
    size_t start;
    json_t *resp = NULL, *allow;
    int rc;

    if (c == NULL)
        return GH_ERR_USAGE;
    if (subject == NULL || action == NULL || resource == NULL)
        return fail(c, GH_ERR_USAGE, "check: %s, action and resource are required", key);
    if ((rc = begin_line(c, "check", &start)) < 0)
        return rc;
    if (add_str(c, key, subject) < 0 || add_str(c, "action", action) < 0 ||
        add_str(c, "resource", resource) < 0)
        return abort_line(c, start);
    rc = roundtrip(c, start, 1, &resp);
    if (rc == 0) {
        allow = json_object_get(resp, "allow");
        if (!json_is_boolean(allow))
            rc = fail(c, GH_ERR_PROTOCOL, "check response without \"allow\"");
        else
            rc = json_is_true(allow) ? 1 : 0;
    }
    json_decref(resp);
    return rc;
}

int gh_check(gh_client *c, const char *user, const char *action, const char *resource)
{
    return check_one(c, "user", user, action, resource);
}

int gh_check_token(gh_client *c, const char *token, const char *action, const char *resource)
{
    return check_one(c, "token", token, action, resource);
}

/* Appends one complete check.batch request for items[0..m). */
static int build_batch(gh_client *c, const char *key, const char *subject,
                       const gh_check_item *items, size_t m, size_t first_index)
{
    size_t start = c->out_len;

    if (out_str(c, "{\"op\":\"check.batch\"") < 0 || add_str(c, key, subject) < 0 ||
        out_str(c, ",\"checks\":[") < 0)
        return abort_line(c, start);
    for (size_t i = 0; i < m; i++) {
        const gh_check_item *it = &items[i];
        if (it->action == NULL || it->resource == NULL) {
            wipe(c->out + start, c->out_len - start);
            c->out_len = start;
            return fail(c, GH_ERR_USAGE, "check.batch: item %zu has no action or resource",
                        first_index + i);
        }
        if ((i > 0 && out_str(c, ",") < 0) || out_str(c, "{\"action\":") < 0 ||
            out_json_string(c, it->action) < 0 || out_str(c, ",\"resource\":") < 0 ||
            out_json_string(c, it->resource) < 0 || out_str(c, "}") < 0)
            return abort_line(c, start);
    }
    if (out_str(c, "]") < 0)
        return abort_line(c, start);
    return finish_line(c, start, 1);
}

typedef struct saved_error {
    int err;
    char code[64];
    char msg[512];
} saved_error;

static void save_error(const gh_client *c, saved_error *s)
{
    s->err = c->err;
    memcpy(s->code, c->errcode, sizeof(s->code));
    memcpy(s->msg, c->errmsg, sizeof(s->msg));
}

static int restore_error(gh_client *c, const saved_error *s)
{
    c->err = s->err;
    memcpy(c->errcode, s->code, sizeof(c->errcode));
    memcpy(c->errmsg, s->msg, sizeof(c->errmsg));
    return s->err;
}

static int check_batch(gh_client *c, const char *key, const char *subject,
                       const gh_check_item *items, size_t n, int *results)
{
    size_t sent = 0, done = 0;
    saved_error first = {0};

    if (c == NULL)
        return GH_ERR_USAGE;
    clear_error(c);
    if (subject == NULL || (n > 0 && (items == NULL || results == NULL)))
        return fail(c, GH_ERR_USAGE, "check.batch: %s, items and results are required", key);
    if (c->req_count != 0)
        return fail(c, GH_ERR_USAGE, "typed call while pipelined responses are pending");
    check_idle_connection(c);
    for (size_t i = 0; i < n; i++)
        results[i] = 0; /* what a failed batch leaves: deny */
    /* one request per GH_CLIENT_CHECK_BATCH_MAX checks, all pipelined */
    while (sent < n) {
        size_t m = n - sent < GH_CLIENT_CHECK_BATCH_MAX ? n - sent : GH_CLIENT_CHECK_BATCH_MAX;
        if (build_batch(c, key, subject, items + sent, m, sent) < 0) {
            save_error(c, &first);
            break;
        }
        sent += m;
    }
    while (done < sent) {
        size_t m =
            sent - done < GH_CLIENT_CHECK_BATCH_MAX ? sent - done : GH_CLIENT_CHECK_BATCH_MAX;
        json_t *resp = NULL, *res;
        int r = gh_recv(c, &resp);
        if (r == 0) {
            res = json_object_get(resp, "results");
            if (!json_is_array(res) || json_array_size(res) != m)
                r = fail(c, GH_ERR_PROTOCOL, "check.batch response with %zu results for %zu checks",
                         json_array_size(res), m);
            else
                for (size_t i = 0; i < m; i++)
                    results[done + i] = json_is_true(json_array_get(res, i));
        }
        json_decref(resp);
        if (r < 0 && first.err == 0)
            save_error(c, &first);
        done += m;
    }
    if (first.err < 0)
        return restore_error(c, &first);
    clear_error(c);
    return 0;
}

int gh_check_batch(gh_client *c, const char *user, const gh_check_item *items, size_t n,
                   int *results)
{
    return check_batch(c, "user", user, items, n, results);
}

int gh_check_batch_token(gh_client *c, const char *token, const gh_check_item *items, size_t n,
                         int *results)
{
    return check_batch(c, "token", token, items, n, results);
}
