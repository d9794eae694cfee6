/*
 * os_client.h: the small blocking client that the NSS and PAM modules carry
 * inside other people's processes (internal: hidden, never installed).
 *
 * The one thing to know: every call is bounded by one deadline (poll on
 * connect, send and receive), never raises SIGPIPE (MSG_NOSIGNAL), opens
 * its socket close-on-exec, and keeps no state but the gh_os_conn the
 * caller owns, so a module can decide how connections are shared across
 * threads and forks. Not libgatehouse: that one is for applications and
 * may block as long as they like.
 */
#ifndef GH_OS_CLIENT_H
#define GH_OS_CLIENT_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#define GH_OS_HIDDEN __attribute__((visibility("hidden")))
#define GH_OS_MAX_REPLY (16u << 20) /* a group of 100k members still fits */

typedef struct gh_os_conn {
    int fd;    /* -1 when closed */
    pid_t pid; /* process that opened fd: a forked child must not use it */
    dev_t dev; /* fd's identity: a program that closed every descriptor may */
    ino_t ino; /* have reused the number for a file of its own */
} gh_os_conn;

/* Results of gh_os_call. */
enum {
    GH_OS_OK = 0,       /* *resp holds a reply with "ok": true */
    GH_OS_ERROR = 1,    /* *resp holds a reply with "ok": false (see gh_os_error_code) */
    GH_OS_UNAVAIL = -1, /* no server, timeout, or the connection broke */
    GH_OS_NOMEM = -2,
};

GH_OS_HIDDEN void gh_os_init(gh_os_conn *c);
GH_OS_HIDDEN void gh_os_close(gh_os_conn *c);
/* Sends req (one line) and reads its reply within timeout_ms in total,
 * connecting to path first when c is closed (or was opened by another
 * process, which is then left alone). A stale connection (the server
 * restarted) is retried once on a fresh one. *resp is a new reference. */
GH_OS_HIDDEN int gh_os_call(gh_os_conn *c, const char *path, int timeout_ms, json_t *req,
                            json_t **resp);
/* The "code" of an error reply ("" when none). */
GH_OS_HIDDEN const char *gh_os_error_code(json_t *resp);
GH_OS_HIDDEN const char *gh_os_error_message(json_t *resp);

#endif
