/*
 * metrics.h: the Prometheus endpoint (server/metrics.c). Everything the page
 * shows goes through gh__metrics_render, on the loop thread: when counters
 * move, adapt that one function.
 */
#ifndef GH_METRICS_H
#define GH_METRICS_H

#include <stddef.h>

struct gh_server;

/* A growing text buffer (p is malloc'ed; the caller frees it). */
typedef struct gh_mbuf {
    char *p;
    size_t len, cap;
} gh_mbuf;
int gh__mbuf_printf(gh_mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The whole page in the Prometheus text format (0.0.4), into b (reset
 * first). Loop thread only. 0 or GH_ENOMEM. */
int gh__metrics_render(struct gh_server *srv, gh_mbuf *b);
/* Starts the HTTP listener of metrics_listen (nothing when it is empty).
 * GH_EINVAL for a bad or non-loopback address, GH_EIO when it cannot listen. */
int gh__metrics_start(struct gh_server *srv);
/* Stops the listener (joins its thread); the rest is freed in a close
 * callback. Idempotent. */
void gh__metrics_stop(struct gh_server *srv);

#endif
