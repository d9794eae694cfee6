/*
 * metrics.c: Prometheus text format at http://metrics_listen/metrics.
 *
 * libmicrohttpd serves HTTP on a thread of its own; that thread never reads
 * the server's state. A scrape asks the loop for a fresh rendering (uv_async)
 * and waits at most GH_METRICS_WAIT_MS for it; the loop renders everything
 * through gh__metrics_render (the one place that knows the counters) into a
 * new buffer and swaps it in under the mutex. If the loop does not answer in
 * time (busy, shutting down) the scrape gets the previous rendering.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "schema/log.h"
#include "server/metrics.h"
#include "server/server.h"

#define GH_METRICS_WAIT_MS 1000

typedef struct gh_metrics {
    gh_server *srv;
    struct MHD_Daemon *daemon;
    uv_async_t wake; /* a scrape wants a fresh rendering */
    uv_mutex_t lock;
    uv_cond_t cond;
    char *text; /* the last rendering, under lock */
    size_t len;
    uint64_t gen; /* renderings so far, under lock */
    int stopping; /* under lock */
} gh_metrics;

/* ---- rendering (loop thread) ---- */

int gh__mbuf_printf(gh_mbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return GH_EINTERNAL;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return 0;
        }
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return GH_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
}

/* A label value: backslash, double quote and newline escaped. */
static void label(gh_mbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            gh__mbuf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            gh__mbuf_printf(b, "\\n");
        else
            gh__mbuf_printf(b, "%c", *s);
    }
}

static void head(gh_mbuf *b, const char *name, const char *type, const char *help)
{
    gh__mbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(gh_mbuf *b, const char *name, const char *type, const char *help, double v)
{
    head(b, name, type, help);
    gh__mbuf_printf(b, "%s %.15g\n", name, v);
}

/* Latency buckets of the histogram, seconds. */
static const double le_s[] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                              0.0025,  0.005,    0.01,    0.025,  0.05,    0.1,    0.25,
                              0.5,     1,        2.5,     5,      10};
#define NLE (sizeof(le_s) / sizeof(le_s[0]))

/* Every loop's histograms, summed (relaxed loads: each loop adds to its own). */
static gh_lat *sum_lat(gh_server *srv)
{
    gh_lat *all = calloc(srv->nops ? srv->nops : 1, sizeof(*all));
    for (size_t i = 0; all != NULL && i < srv->nops; i++)
        gh__lat_sum(srv, i, &all[i]);
    return all;
}

static void requests(gh_mbuf *b, gh_server *srv)
{
    gh_lat *lat = sum_lat(srv);
    if (lat == NULL)
        return;
    head(b, "gatehouse_requests_total", "counter", "Requests answered, per operation.");
    for (size_t i = 0; i < srv->nops; i++) {
        if (lat[i].count == 0)
            continue;
        gh__mbuf_printf(b, "gatehouse_requests_total{op=\"");
        label(b, gh__op_at(i)->name);
        gh__mbuf_printf(b, "\"} %llu\n", (unsigned long long)lat[i].count);
    }
    head(b, "gatehouse_request_errors_total", "counter",
         "Requests answered with an error, per operation.");
    for (size_t i = 0; i < srv->nops; i++) {
        if (lat[i].count == 0)
            continue;
        gh__mbuf_printf(b, "gatehouse_request_errors_total{op=\"");
        label(b, gh__op_at(i)->name);
        gh__mbuf_printf(b, "\"} %llu\n", (unsigned long long)lat[i].errors);
    }
    head(b, "gatehouse_request_duration_seconds", "histogram",
         "Time from decoding a request to its reply, per operation (the server's "
         "buckets are within 25%; the sum is estimated from their bounds).");
    for (size_t i = 0; i < srv->nops; i++) {
        const gh_lat *l = &lat[i];
        if (l->count == 0)
            continue;
        uint64_t cum = 0, seen = 0;
        double sum_us = 0;
        unsigned bk = 0;
        for (size_t k = 0; k < NLE; k++) {
            double bound_us = le_s[k] * 1e6;
            while (bk < GH_LAT_BUCKETS && (double)gh__lat_bucket_upper(bk) <= bound_us) {
                cum += l->buckets[bk];
                bk++;
            }
            gh__mbuf_printf(b, "gatehouse_request_duration_seconds_bucket{op=\"");
            label(b, gh__op_at(i)->name);
            gh__mbuf_printf(b, "\",le=\"%g\"} %llu\n", le_s[k], (unsigned long long)cum);
        }
        for (unsigned k = 0; k < GH_LAT_BUCKETS; k++) {
            seen += l->buckets[k];
            sum_us += (double)l->buckets[k] * (double)gh__lat_bucket_upper(k);
        }
        uint64_t count = seen > l->count ? seen : l->count;
        gh__mbuf_printf(b, "gatehouse_request_duration_seconds_bucket{op=\"");
        label(b, gh__op_at(i)->name);
        gh__mbuf_printf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)count);
        gh__mbuf_printf(b, "gatehouse_request_duration_seconds_sum{op=\"");
        label(b, gh__op_at(i)->name);
        gh__mbuf_printf(b, "\"} %.9g\n", sum_us / 1e6);
        gh__mbuf_printf(b, "gatehouse_request_duration_seconds_count{op=\"");
        label(b, gh__op_at(i)->name);
        gh__mbuf_printf(b, "\"} %llu\n", (unsigned long long)count);
    }
    free(lat);
}

static unsigned locked_out(const gh_failtab *t, uint64_t now)
{
    unsigned n = 0;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].until_ms > now) /* empty slots hold 0 */
            n++;
    return n;
}

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

/* Per upstream, from the same status the sync.status operation reports. */
static void upstreams(gh_mbuf *b, gh_server *srv)
{
    json_t *st = json_object();
    size_t i;
    json_t *u;
    static const char *const states[] = {"starting", "connecting", "refreshing",   "persisting",
                                         "running",  "idle",       "reconnecting", "down",
                                         "halted",   "stopped"};

    if (st == NULL || srv->sync == NULL || gh_sync_status(srv->sync, st) != 0) {
        json_decref(st);
        return;
    }
    json_t *arr = json_object_get(st, "upstreams");
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        json_decref(st);
        return;
    }
    static const struct {
        const char *metric, *type, *help, *field;
    } nums[] = {
        {"gatehouse_upstream_connected", "gauge", "1 when the sync worker holds a connection.",
         "connected"},
        {"gatehouse_upstream_last_success_timestamp_seconds", "gauge",
         "End of the last successful refresh (Unix time; 0 never).", "last_success"},
        {"gatehouse_upstream_lag_seconds", "gauge",
         "Seconds since the mirror was last known current (the age of its cookie).", "lag_s"},
        {"gatehouse_upstream_users", "gauge", "Users mirrored from the upstream.", "users"},
        {"gatehouse_upstream_groups", "gauge", "Groups mirrored from the upstream.", "groups"},
        {"gatehouse_upstream_entries_received_total", "counter",
         "Entries received from the upstream since start.", "entries_received"},
        {"gatehouse_upstream_runs_total", "counter", "Refresh runs since start.", "runs"},
    };
    for (size_t m = 0; m < sizeof(nums) / sizeof(nums[0]); m++) {
        head(b, nums[m].metric, nums[m].type, nums[m].help);
        json_array_foreach(arr, i, u)
        {
            json_t *v = json_object_get(u, nums[m].field);
            gh__mbuf_printf(b, "%s{upstream=\"", nums[m].metric);
            label(b, json_string_value(json_object_get(u, "name")) ?: "");
            gh__mbuf_printf(b, "\"} %.17g\n",
                            json_is_boolean(v) ? (json_is_true(v) ? 1.0 : 0.0)
                                               : num(u, nums[m].field));
        }
    }
    head(b, "gatehouse_upstream_skipped_total", "counter",
         "Entries refused since start (collisions, bad values): each names the reason in "
         "last_error.");
    json_array_foreach(arr, i, u)
    {
        gh__mbuf_printf(b, "gatehouse_upstream_skipped_total{upstream=\"");
        label(b, json_string_value(json_object_get(u, "name")) ?: "");
        gh__mbuf_printf(b, "\"} %.17g\n", num(json_object_get(u, "totals"), "skipped"));
    }
    head(b, "gatehouse_upstream_bind_errors_total", "counter",
         "Pass-through binds for auth that failed: kind network (sent, no answer: the case "
         "offline verifiers cover) or other (an upstream error, not a refusal).");
    json_array_foreach(arr, i, u)
    {
        json_t *binds = json_object_get(u, "binds");
        static const char *const kinds[][2] = {{"network", "network_errors"}, {"other", "errors"}};
        for (size_t k = 0; k < 2; k++) {
            gh__mbuf_printf(b, "gatehouse_upstream_bind_errors_total{upstream=\"");
            label(b, json_string_value(json_object_get(u, "name")) ?: "");
            gh__mbuf_printf(b, "\",kind=\"%s\"} %.17g\n", kinds[k][0], num(binds, kinds[k][1]));
        }
    }
    head(b, "gatehouse_upstream_error", "gauge",
         "1 while the upstream's last attempt left an error (sync.status last_error).");
    json_array_foreach(arr, i, u)
    {
        json_t *e = json_object_get(u, "last_error");
        gh__mbuf_printf(b, "gatehouse_upstream_error{upstream=\"");
        label(b, json_string_value(json_object_get(u, "name")) ?: "");
        gh__mbuf_printf(b, "\"} %d\n", json_is_string(e) && json_string_length(e) > 0);
    }
    head(b, "gatehouse_upstream_state", "gauge", "1 for the state the sync worker is in.");
    json_array_foreach(arr, i, u)
    {
        const char *cur = json_string_value(json_object_get(u, "state"));
        for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
            gh__mbuf_printf(b, "gatehouse_upstream_state{upstream=\"");
            label(b, json_string_value(json_object_get(u, "name")) ?: "");
            gh__mbuf_printf(b, "\",state=\"%s\"} %d\n", states[k],
                            cur != NULL && strcmp(cur, states[k]) == 0);
        }
    }
    json_decref(st);
}

int gh__metrics_render(gh_server *srv, gh_mbuf *b)
{
    uint64_t used = 0, map = 0, users = 0, groups = 0, seq = 0, commits = 0, ops = 0;
    uint64_t now = gh__now_ms();
    gh_txn *txn = NULL;
    gh_loop_sums sums;
    unsigned lock_user, lock_peer;

    gh__loops_sum(srv, &sums);         /* every loop's counters (relaxed loads) */
    pthread_mutex_lock(&srv->fail_mu); /* every loop admits password checks */
    lock_user = locked_out(&srv->user_fails, now);
    lock_peer = locked_out(&srv->peer_fails, now);
    pthread_mutex_unlock(&srv->fail_mu);

    b->len = 0;
    head(b, "gatehouse_build_info", "gauge", "The running version (value 1).");
    gh__mbuf_printf(b, "gatehouse_build_info{version=\"%s\"} 1\n", GH_VERSION_STRING);
    one(b, "gatehouse_uptime_seconds", "gauge", "Seconds since the server started.",
        (double)(now - srv->started) / 1000.0);
    one(b, "gatehouse_connections", "gauge", "Open client connections.",
        __atomic_load_n(&srv->nconns, __ATOMIC_RELAXED));
    one(b, "gatehouse_connections_total", "counter", "Client connections accepted.",
        (double)sums.conns_total);
    one(b, "gatehouse_connections_rejected_total", "counter",
        "Connections refused over max_connections.", (double)sums.conns_rejected);
    requests(b, srv);
    head(b, "gatehouse_auth_total", "counter", "Password checks by outcome.");
    gh__mbuf_printf(b, "gatehouse_auth_total{outcome=\"success\"} %llu\n",
                    (unsigned long long)GH_STAT_GET(srv->auth_ok));
    gh__mbuf_printf(b, "gatehouse_auth_total{outcome=\"failure\"} %llu\n",
                    (unsigned long long)GH_STAT_GET(srv->auth_fail));
    gh__mbuf_printf(b, "gatehouse_auth_total{outcome=\"rate_limited\"} %llu\n",
                    (unsigned long long)GH_STAT_GET(srv->auth_limited));
    one(b, "gatehouse_auth_verifications_total", "counter",
        "Argon2 password verifications admitted (auth and offline).",
        (double)GH_STAT_GET(srv->auth_verifications));
    one(b, "gatehouse_auth_upstream_binds_total", "counter",
        "Password checks handed to an upstream directory.",
        (double)GH_STAT_GET(srv->auth_upstream_binds));
    head(b, "gatehouse_lockouts", "gauge",
         "Logins and peers currently delayed after repeated failures.");
    gh__mbuf_printf(b, "gatehouse_lockouts{kind=\"user\"} %u\n", lock_user);
    gh__mbuf_printf(b, "gatehouse_lockouts{kind=\"peer\"} %u\n", lock_peer);
    one(b, "gatehouse_argon2_queue_depth", "gauge", "Argon2 jobs queued or running.",
        __atomic_load_n(&srv->argon2_inflight, __ATOMIC_RELAXED));
    one(b, "gatehouse_argon2_queue_max", "gauge", "argon2_queue_max: the bound of the queue.",
        srv->cfg->argon2_queue_max);
    if (srv->writer) {
        uint64_t sizes[GH_WRITER_BATCH_BUCKETS], below = 0;
        gh_writer_batch_sizes(srv->writer, sizes, &commits, &ops);
        one(b, "gatehouse_writer_commits_total", "counter", "Durable group commits.",
            (double)commits);
        one(b, "gatehouse_writer_ops_total", "counter",
            "Writes committed (ops / commits = the average batch size).", (double)ops);
        head(b, "gatehouse_writer_batch_size", "histogram",
             "Writes per group commit (one fsync each).");
        for (size_t i = 0; i + 1 < GH_WRITER_BATCH_BUCKETS; i++) {
            below += sizes[i];
            gh__mbuf_printf(b, "gatehouse_writer_batch_size_bucket{le=\"%zu\"} %llu\n",
                            (size_t)1 << i, (unsigned long long)below);
        }
        gh__mbuf_printf(b, "gatehouse_writer_batch_size_bucket{le=\"+Inf\"} %llu\n",
                        (unsigned long long)commits);
        gh__mbuf_printf(b, "gatehouse_writer_batch_size_sum %llu\n", (unsigned long long)ops);
        gh__mbuf_printf(b, "gatehouse_writer_batch_size_count %llu\n", (unsigned long long)commits);
    }
    if (srv->store) {
        gh_store_size(srv->store, &used, &map);
        one(b, "gatehouse_store_used_bytes", "gauge", "Bytes of the map in use.", (double)used);
        one(b, "gatehouse_store_map_bytes", "gauge", "Current LMDB map size.", (double)map);
        one(b, "gatehouse_store_map_max_bytes", "gauge", "map_max: the map's growth limit.",
            (double)srv->cfg->map_max);
    }
    if (srv->reader && gh_store_read_begin(srv->reader, &txn) == 0) {
        gh_store_user_count(txn, &users);
        gh_store_group_count(txn, &groups);
        gh_store_changelog_seq(txn, &seq);
        gh_store_read_end(srv->reader);
        one(b, "gatehouse_users", "gauge", "Users in the directory.", (double)users);
        one(b, "gatehouse_groups", "gauge", "Groups in the directory.", (double)groups);
        one(b, "gatehouse_changelog_sequence", "gauge", "Last change-log sequence number.",
            (double)seq);
    }
    if (srv->authz) {
        const gh_authz_stats az = sums.authz;
        one(b, "gatehouse_authz_cache_hits_total", "counter", "Permission-set cache hits.",
            (double)az.hits);
        one(b, "gatehouse_authz_cache_misses_total", "counter", "Permission-set cache misses.",
            (double)az.misses);
        one(b, "gatehouse_authz_compiles_total", "counter", "Permission sets compiled.",
            (double)az.compiles);
        one(b, "gatehouse_authz_cache_flushes_total", "counter", "Whole-cache invalidations.",
            (double)az.flushes);
        one(b, "gatehouse_authz_cache_sets", "gauge", "Permission sets cached.", (double)az.cached);
        one(b, "gatehouse_authz_cache_bytes", "gauge", "Bytes of cached permission sets.",
            (double)az.cached_bytes);
    }
    upstreams(b, srv);
    return b->p == NULL ? GH_ENOMEM : 0;
}

/* ---- the loop's side ---- */

static void on_wake(uv_async_t *a)
{
    gh_metrics *m = a->data;
    gh_mbuf b = {0};
    if (gh__metrics_render(m->srv, &b) != 0) {
        free(b.p);
        return;
    }
    uv_mutex_lock(&m->lock);
    free(m->text);
    m->text = b.p;
    m->len = b.len;
    m->gen++;
    uv_cond_broadcast(&m->cond);
    uv_mutex_unlock(&m->lock);
}

/* ---- the HTTP thread's side ---- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    gh_metrics *m = cls;
    static const char plain[] = "text/plain; charset=utf-8";

    if (*upload_data_size != 0)
        return MHD_NO; /* a body: nothing here takes one */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, plain, "GET /metrics\n", 13);
    if (strcmp(url, "/metrics") != 0)
        return reply(conn, MHD_HTTP_NOT_FOUND, plain, "not found: try /metrics\n", 24);

    uv_mutex_lock(&m->lock);
    uint64_t seen = m->gen;
    int stopping = m->stopping;
    uv_mutex_unlock(&m->lock);
    if (!stopping)
        uv_async_send(&m->wake);
    uv_mutex_lock(&m->lock);
    while (!m->stopping && m->gen == seen)
        if (uv_cond_timedwait(&m->cond, &m->lock, (uint64_t)GH_METRICS_WAIT_MS * 1000000) != 0)
            break;
    enum MHD_Result ret;
    if (m->text == NULL)
        ret = reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, plain, "not ready\n", 10);
    else
        ret = reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", m->text, m->len);
    uv_mutex_unlock(&m->lock);
    return ret;
}

static int parse_listen(const char *spec, int any, struct sockaddr_storage *ss)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    char *end;

    if (colon == NULL || (size_t)(colon - spec) >= sizeof(host)) {
        GH_LOGE("metrics_listen must be HOST:PORT, not '%s'", spec);
        return GH_EINVAL;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    if (host[0] == '[' && strlen(host) > 1 && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535 || colon[1] == '\0' ||
        (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) != 0 &&
         uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) != 0)) {
        GH_LOGE("metrics_listen: bad address '%s' (HOST:PORT, numeric)", spec);
        return GH_EINVAL;
    }
    int loopback = ss->ss_family == AF_INET
                       ? (ntohl(((struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127
                       : IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)ss)->sin6_addr);
    if (!loopback && !any) {
        GH_LOGE("metrics_listen %s is not a loopback address; set metrics_allow_non_loopback = "
                "yes",
                spec);
        return GH_EINVAL;
    }
    return 0;
}

int gh__metrics_start(gh_server *srv)
{
    struct sockaddr_storage ss;
    const char *spec = srv->cfg->metrics_listen;
    int rc;

    if (spec == NULL || spec[0] == '\0')
        return 0;
    if ((rc = parse_listen(spec, srv->cfg->metrics_any, &ss)) != 0)
        return rc;
    gh_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return GH_ENOMEM;
    m->srv = srv;
    uv_mutex_init(&m->lock);
    uv_cond_init(&m->cond);
    uv_async_init(srv->loop, &m->wake, on_wake);
    m->wake.data = m;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    m->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, m, MHD_OPTION_SOCK_ADDR,
                                 (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, 64u,
                                 MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (m->daemon == NULL) {
        GH_LOGE("metrics_listen %s: cannot listen (%s)", spec, strerror(errno));
        srv->metrics = m;
        m->stopping = 1;
        gh__metrics_stop(srv);
        return GH_EIO;
    }
    srv->metrics = m;
    GH_LOGI("metrics on http://%s/metrics", spec);
    return 0;
}

static void on_wake_closed(uv_handle_t *h)
{
    gh_metrics *m = h->data;
    uv_cond_destroy(&m->cond);
    uv_mutex_destroy(&m->lock);
    free(m->text);
    free(m);
}

void gh__metrics_stop(gh_server *srv)
{
    gh_metrics *m = srv->metrics;
    if (m == NULL)
        return;
    srv->metrics = NULL;
    uv_mutex_lock(&m->lock);
    m->stopping = 1;
    uv_cond_broadcast(&m->cond);
    uv_mutex_unlock(&m->lock);
    if (m->daemon)
        MHD_stop_daemon(m->daemon); /* joins the HTTP thread: no uv_async_send after this */
    uv_close((uv_handle_t *)&m->wake, on_wake_closed);
}
