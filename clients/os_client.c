/*
 * os_client.c: one request, one reply, within a deadline (see os_client.h).
 *
 * The one thing to know: this runs inside getent, sshd, su and every other
 * process that resolves a name, so nothing here may block past the deadline,
 * leave a signal behind, or leak a descriptor into an exec'd program.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clients/os_client.h"

/* What the modules' copy of libjansson.a reads instead of glibc's stdin
 * (clients/local.mk): only json_loadf, never called, compares with it. */
GH_OS_HIDDEN FILE *gh_os_jansson_stdin;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until the deadline: 1 ready, 0 timeout or error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n > 0)
            return (p.revents & (events | POLLHUP | POLLERR)) != 0;
        if (n == 0 || errno != EINTR)
            return 0;
    }
}

void gh_os_init(gh_os_conn *c)
{
    c->fd = -1;
    c->pid = 0;
    c->dev = 0;
    c->ino = 0;
}

/* Whether c->fd is still the socket we opened (not a number the program
 * closed and reused for a file of its own). */
static int still_ours(const gh_os_conn *c)
{
    struct stat st;
    return c->fd >= 0 && fstat(c->fd, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == c->dev &&
           st.st_ino == c->ino;
}

void gh_os_close(gh_os_conn *c)
{
    /* A descriptor inherited across fork belongs to the parent's
     * conversation: the child drops its copy without touching the stream. */
    if (still_ours(c))
        close(c->fd);
    gh_os_init(c);
}

static int open_conn(gh_os_conn *c, const char *path, int64_t deadline)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(sun.sun_path))
        return GH_OS_UNAVAIL;
    memcpy(sun.sun_path, path, len + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return GH_OS_UNAVAIL;
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        /* a full backlog answers EAGAIN on AF_UNIX: wait for room once */
        int err = 0;
        socklen_t elen = sizeof(err);
        if ((errno != EINPROGRESS && errno != EAGAIN) || !wait_fd(fd, POLLOUT, deadline) ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0) {
            close(fd);
            return GH_OS_UNAVAIL;
        }
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return GH_OS_UNAVAIL;
    }
    c->fd = fd;
    c->pid = getpid();
    c->dev = st.st_dev;
    c->ino = st.st_ino;
    return GH_OS_OK;
}

static int send_all(int fd, const char *buf, size_t len, int64_t deadline)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(fd, POLLOUT, deadline))
            continue;
        return GH_OS_UNAVAIL;
    }
    return GH_OS_OK;
}

/* Reads one line into *out (malloc'd, NUL-terminated, newline dropped). */
static int recv_line(int fd, char **out, size_t *outlen, int64_t deadline)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        return GH_OS_NOMEM;
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= GH_OS_MAX_REPLY)
                goto fail;
            char *p = realloc(buf, cap * 2);
            if (p == NULL) {
                free(buf);
                return GH_OS_NOMEM;
            }
            buf = p;
            cap *= 2;
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n > 0) {
            char *nl = memchr(buf + len, '\n', (size_t)n);
            len += (size_t)n;
            if (nl != NULL) {
                /* one request in flight: nothing may follow its reply */
                if (nl != buf + len - 1)
                    goto fail;
                *nl = '\0';
                *out = buf;
                *outlen = (size_t)(nl - buf);
                return GH_OS_OK;
            }
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(fd, POLLIN, deadline))
            continue;
        goto fail; /* EOF, error or timeout */
    }
fail:
    free(buf);
    return GH_OS_UNAVAIL;
}

static int exchange(gh_os_conn *c, const char *line, size_t len, int64_t deadline, json_t **resp)
{
    char *in = NULL;
    size_t inlen = 0;
    int rc = send_all(c->fd, line, len, deadline);
    if (rc == GH_OS_OK)
        rc = recv_line(c->fd, &in, &inlen, deadline);
    if (rc != GH_OS_OK)
        return rc;
    *resp = json_loadb(in, inlen, 0, NULL);
    free(in);
    if (*resp == NULL || !json_is_object(*resp)) {
        json_decref(*resp);
        *resp = NULL;
        return GH_OS_UNAVAIL;
    }
    return json_is_true(json_object_get(*resp, "ok")) ? GH_OS_OK : GH_OS_ERROR;
}

int gh_os_call(gh_os_conn *c, const char *path, int timeout_ms, json_t *req, json_t **resp)
{
    int64_t deadline = now_ms() + timeout_ms;
    *resp = NULL;
    if (c->fd >= 0 && c->pid != getpid())
        gh_os_close(c);
    /* a daemon that closed all its descriptors owns that number now:
     * forget it without touching it */
    if (c->fd >= 0 && !still_ours(c))
        gh_os_init(c);
    char *line = json_dumps(req, JSON_COMPACT);
    if (line == NULL)
        return GH_OS_NOMEM;
    size_t len = strlen(line);
    char *nl = realloc(line, len + 2);
    if (nl == NULL) {
        free(line);
        return GH_OS_NOMEM;
    }
    line = nl;
    line[len++] = '\n';
    line[len] = '\0';
    int rc = GH_OS_UNAVAIL;
    /* a kept connection may have been closed by the server (idle timeout,
     * restart): one more try on a fresh one */
    for (int attempt = 0; attempt < 2 && rc == GH_OS_UNAVAIL; attempt++) {
        int fresh = c->fd < 0;
        if (fresh && open_conn(c, path, deadline) != GH_OS_OK)
            break;
        rc = exchange(c, line, len, deadline, resp);
        if (rc == GH_OS_UNAVAIL || rc == GH_OS_NOMEM)
            gh_os_close(c);
        if (fresh || now_ms() >= deadline)
            break;
    }
    /* the line may hold a password */
    explicit_bzero(line, len);
    free(line);
    return rc;
}

const char *gh_os_error_code(json_t *resp)
{
    const char *s = json_string_value(json_object_get(json_object_get(resp, "error"), "code"));
    return s ? s : "";
}

const char *gh_os_error_message(json_t *resp)
{
    const char *s = json_string_value(json_object_get(json_object_get(resp, "error"), "message"));
    return s ? s : "";
}
