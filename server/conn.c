/*
 * conn.c: listeners and connections.
 *
 * A connection owns its stream handle, an idle timer, an input buffer that
 * never grows past max_request, and an ordered list of pending replies.
 * Replies are serialized as their requests complete but written only in
 * request order, once per loop turn (the flush check handle), so a pipelined
 * burst becomes one write. Reading pauses while queued reply bytes exceed
 * max_output or too many requests are in flight, so a client that does not
 * read cannot make the server buffer without bound. A connection is closed
 * through gh__conn_close only and freed in the last close callback, never
 * while a request of it is still pending.
 *
 * Only two places parse input: the read callback, and the flush phase
 * (gh__flush_all, run by the loop's prepare and check handles). Completions,
 * write callbacks and closes only mark a connection dirty, so no handler ever
 * runs inside another handler's completion.
 *
 * A connection belongs to one loop (c->lp) and only that loop's thread
 * touches it. The listeners live on loop 0, whose acceptor hands each
 * accepted socket to the next loop in turn (a duplicate of the descriptor,
 * posted to the loop, which opens its own handle on it): round-robin spreads
 * connections evenly and predictably, where every loop polling the listening
 * socket would let whichever loop wakes first take a whole burst.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "schema/log.h"
#include "server/server.h"

#define IN_INITIAL 4096
#define TLS_RBUF 16384

typedef struct wreq {
    uv_write_t req;
    gh_conn *conn;
    size_t n;
    size_t bytes;
    int secret; /* a buffer carries a token: wiped before free */
    uv_buf_t bufs[];
} wreq;

static void maybe_free(gh_conn *c);

static void on_flush_idle(uv_idle_t *h)
{
    (void)h; /* its only job: the loop polls without blocking while it runs */
}

/* ---- connections per peer, over every loop (accept and close only) ---- */

void gh__peer_key(const struct sockaddr *sa, uid_t uid, char *key, size_t keylen, char *peer,
                  size_t peerlen)
{
    char host[INET6_ADDRSTRLEN] = "?", text[INET6_ADDRSTRLEN + 8];
    if (sa == NULL) {
        snprintf(text, sizeof(text), "uid:%u", (unsigned)uid);
        snprintf(key, keylen, "%s", text);
    } else {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(text, sizeof(text), "tcp:%s", host);
        int loop4 = sa->sa_family == AF_INET && (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
        int loop6 =
            sa->sa_family == AF_INET6 &&
            (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) ||
             (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && sin6->sin6_addr.s6_addr[12] == 127));
        snprintf(key, keylen, "%s", loop4 || loop6 ? "tcp:loopback" : text);
    }
    if (peer != NULL)
        snprintf(peer, peerlen, "%s", text);
}

/* Counts one more connection of key; returns how many are open now. */
unsigned gh__peer_add(gh_server *srv, const char *key)
{
    unsigned n = 0;
    pthread_mutex_lock(&srv->peers_mu);
    for (size_t i = 0; i < srv->npeers; i++) {
        if (strcmp(srv->peers[i].key, key) == 0) {
            n = ++srv->peers[i].n;
            goto done;
        }
    }
    if (srv->npeers == srv->peers_cap) {
        size_t cap = srv->peers_cap ? srv->peers_cap * 2 : 16;
        gh_peercount *p = realloc(srv->peers, cap * sizeof(*p));
        if (p == NULL)
            goto done; /* not counted: 0 never refuses */
        srv->peers = p;
        srv->peers_cap = cap;
    }
    snprintf(srv->peers[srv->npeers].key, sizeof(srv->peers[0].key), "%s", key);
    srv->peers[srv->npeers].n = n = 1;
    srv->npeers++;
done:
    pthread_mutex_unlock(&srv->peers_mu);
    return n;
}

void gh__peer_drop(gh_server *srv, const char *key)
{
    pthread_mutex_lock(&srv->peers_mu);
    for (size_t i = 0; i < srv->npeers; i++) {
        if (strcmp(srv->peers[i].key, key) == 0) {
            if (--srv->peers[i].n == 0)
                srv->peers[i] = srv->peers[--srv->npeers];
            break;
        }
    }
    pthread_mutex_unlock(&srv->peers_mu);
}

static void unlink_conn(gh_conn *c)
{
    gh_loop *lp = c->lp;
    if (c->prev)
        c->prev->next = c->next;
    else if (lp->conns == c)
        lp->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void on_handle_closed(uv_handle_t *h)
{
    gh_conn *c = h->data;
    c->handles_open--;
    maybe_free(c);
}

static void maybe_free(gh_conn *c)
{
    if (!c->closing || c->handles_open > 0 || c->npending > 0 || c->out_bytes > 0)
        return;
    gh_loop *lp = c->lp;
    while (c->head) {
        gh_pending *p = c->head;
        c->head = p->next;
        gh__pending_free(p);
    }
    if (c->dirty) {
        /* still on the flush list: unlink */
        gh_conn **pp = &lp->dirty;
        while (*pp && *pp != c)
            pp = &(*pp)->dirty_next;
        if (*pp)
            *pp = c->dirty_next;
    }
    unlink_conn(c);
    GH_STAT_SUB(lp->nconns, 1);
    __atomic_fetch_sub(&c->srv->nconns, 1, __ATOMIC_RELAXED);
    if (c->in != NULL)
        sodium_memzero(c->in, c->in_cap);
    free(c->in);
    gh_tls_free(c->tls);
    gh_tls_buf_free(&c->tls_plain); /* wipes */
    free(c->tls_rbuf);
    free(c);
    gh__loop_check_drained(lp);
}

void gh__conn_close(gh_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->peer_counted) {
        gh__peer_drop(c->srv, c->peerkey);
        c->peer_counted = 0;
    }
    /* Argon2 jobs not started yet would only hold queue slots other clients
     * need: cancel them (their after-work callback sees UV_ECANCELED). */
    for (gh_pending *p = c->head; p; p = p->next)
        if (p->state != GH_REQ_DONE && p->work != NULL && uv_cancel((uv_req_t *)p->work) == 0)
            p->work = NULL;
    /* requests held behind writes will never run: answer them (nowhere) */
    for (gh_pending *p = c->head; p && c->nparked > 0; p = p->next)
        if (p->state == GH_REQ_PARKED)
            gh__pending_finish(p, GH_EUNAVAIL, "connection closed", NULL);
    uv_close(&c->h.handle, on_handle_closed);
    uv_close((uv_handle_t *)&c->idle, on_handle_closed);
}

void gh__conn_mark_dirty(gh_conn *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    c->dirty_next = c->lp->dirty;
    c->lp->dirty = c;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static int over_budget(const gh_conn *c);
static void process_input(gh_conn *c);

/* Nothing more will be read or answered: the connection may close. */
static int finished(const gh_conn *c)
{
    int no_more_input = c->close_after_write || c->lp->stopping ||
                        (c->eof && c->tls_plain.len == 0 && memchr(c->in, '\n', c->in_len) == NULL);
    return no_more_input && c->npending == 0 && c->out_bytes == 0 && c->queued_bytes == 0;
}

/* Pauses or resumes reading by the connection's budget; lines held back
 * while over budget are parsed here (called from the flush phase only). */
static void update_reading(gh_conn *c)
{
    if (c->closing || c->close_after_write)
        return;
    int over = over_budget(c);
    if (over && !c->paused) {
        uv_read_stop(&c->h.stream);
        c->paused = 1;
    } else if (!over && c->paused &&
               c->out_bytes + c->queued_bytes <= c->srv->cfg->max_output / 2) {
        if ((c->in_len > 0 && memchr(c->in, '\n', c->in_len) != NULL) || c->tls_plain.len > 0) {
            process_input(c); /* lines held back while over budget */
            if (c->closing || over_budget(c))
                return;
        }
        if (!c->eof) {
            c->paused = 0;
            uv_read_start(&c->h.stream, on_alloc, on_read);
        }
    }
}

static void on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    gh_conn *c = w->conn;
    for (size_t i = 0; i < w->n; i++) {
        if (w->secret)
            sodium_memzero(w->bufs[i].base, w->bufs[i].len);
        free(w->bufs[i].base);
    }
    c->out_bytes -= w->bytes;
    free(w);
    if (status < 0 && !c->closing) {
        GH_LOGD("conn %s: write failed: %s", c->peer, uv_strerror(status));
        gh__conn_close(c);
    }
    if (c->closing) {
        maybe_free(c);
        return;
    }
    gh__conn_mark_dirty(c); /* the flush phase reads on, or closes when finished */
}

/* A lone reply on an idle stream is written directly: no write request, no
 * extra loop pass, and no epoll re-registration (libuv 1.44 re-arms the
 * watcher after every queued write). Returns 1 when it went out whole;
 * otherwise what was written is dropped from the buffer and 0 returned. */
static int write_now(gh_conn *c, gh_pending *p)
{
    if (c->out_bytes > 0 || uv_stream_get_write_queue_size(&c->h.stream) > 0)
        return 0;
    uv_buf_t b = uv_buf_init(p->out, (unsigned)p->outlen);
    int w = uv_try_write(&c->h.stream, &b, 1);
    if (w <= 0)
        return 0;
    c->queued_bytes -= (size_t)w;
    if ((size_t)w == p->outlen)
        return 1;
    memmove(p->out, p->out + w, p->outlen - (size_t)w);
    p->outlen -= (size_t)w;
    return 0;
}

/* Hands a buffer (malloc'd, taken) to uv_write; closes c on failure. */
static void write_buf(gh_conn *c, char *buf, size_t len)
{
    wreq *w = malloc(sizeof(*w) + sizeof(uv_buf_t));
    if (w == NULL) {
        free(buf);
        gh__conn_close(c);
        return;
    }
    w->conn = c;
    w->n = 1;
    w->bytes = len;
    w->secret = 0; /* ciphertext */
    w->bufs[0] = uv_buf_init(buf, (unsigned)len);
    c->out_bytes += len;
    if (uv_write(&w->req, &c->h.stream, w->bufs, 1, on_write) != 0) {
        c->out_bytes -= len;
        free(buf);
        free(w);
        gh__conn_close(c);
    }
}

/* Sends the ciphertext the session has pending (handshake, replies). */
static void tls_send(gh_conn *c)
{
    gh_tls_buf wire = {0};
    if (gh_tls_take(c->tls, &wire) != 0) {
        gh_tls_buf_free(&wire);
        gh__conn_close(c);
        return;
    }
    if (wire.len == 0) {
        gh_tls_buf_free(&wire);
        return;
    }
    write_buf(c, wire.buf, wire.len);
}

/* The TLS flush: the n finished replies at the head are encrypted, in
 * order, into one write. */
static void flush_tls(gh_conn *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        gh_pending *p = c->head;
        c->head = p->next;
        if (c->head == NULL)
            c->tail = NULL;
        c->queued_bytes -= p->outlen;
        int rc = gh_tls_write(c->tls, p->out, p->outlen);
        gh__pending_free(p); /* wipes a reply that carried a token */
        if (rc != 0) {
            gh__conn_close(c);
            return;
        }
    }
    tls_send(c);
}

/* Moves decrypted plaintext into the input buffer, as far as max_request
 * lets it grow; the rest waits in tls_plain for the next parse. */
static void tls_feed(gh_conn *c)
{
    size_t max = c->srv->cfg->max_request;
    while (c->tls_plain.len > 0 && c->in_len < max) {
        if (c->in_len == c->in_cap) {
            size_t cap = c->in_cap ? c->in_cap * 2 : IN_INITIAL;
            if (cap > max)
                cap = max;
            char *q = malloc(cap);
            if (q == NULL)
                return;
            if (c->in != NULL) {
                memcpy(q, c->in, c->in_len);
                sodium_memzero(c->in, c->in_cap);
                free(c->in);
            }
            c->in = q;
            c->in_cap = cap;
        }
        size_t n = c->in_cap - c->in_len;
        if (n > c->tls_plain.len)
            n = c->tls_plain.len;
        memcpy(c->in + c->in_len, c->tls_plain.buf, n);
        c->in_len += n;
        memmove(c->tls_plain.buf, c->tls_plain.buf + n, c->tls_plain.len - n);
        sodium_memzero(c->tls_plain.buf + c->tls_plain.len - n, n);
        c->tls_plain.len -= n;
    }
}

/* Writes every completed reply at the head of the queue, in order. */
static void flush(gh_conn *c)
{
    size_t n = 0;
    for (gh_pending *p = c->head; p && p->state == GH_REQ_DONE; p = p->next)
        n++;
    if (n == 0 || c->closing)
        return;
    if (c->tls != NULL) {
        flush_tls(c, n);
        return;
    }
    if (n == 1 && write_now(c, c->head)) {
        gh_pending *p = c->head;
        c->head = p->next;
        if (c->head == NULL)
            c->tail = NULL;
        gh__pending_free(p);
        return;
    }
    wreq *w = malloc(sizeof(*w) + n * sizeof(uv_buf_t));
    if (w == NULL) {
        gh__conn_close(c);
        return;
    }
    w->conn = c;
    w->n = n;
    w->bytes = 0;
    w->secret = 0;
    for (size_t i = 0; i < n; i++) {
        gh_pending *p = c->head;
        c->head = p->next;
        if (c->head == NULL)
            c->tail = NULL;
        w->bufs[i] = uv_buf_init(p->out, (unsigned)p->outlen);
        w->bytes += p->outlen;
        w->secret |= p->secret;
        c->queued_bytes -= p->outlen;
        p->out = NULL;
        gh__pending_free(p);
    }
    c->out_bytes += w->bytes;
    int rc = uv_write(&w->req, &c->h.stream, w->bufs, (unsigned)n, on_write);
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) {
            if (w->secret)
                sodium_memzero(w->bufs[i].base, w->bufs[i].len);
            free(w->bufs[i].base);
        }
        c->out_bytes -= w->bytes;
        free(w);
        gh__conn_close(c);
        return;
    }
}

static void flush_phase_one(gh_conn *c)
{
    GH_ASSERT(c->nparked <= c->npending && c->hard_barriers <= c->barriers &&
              c->barriers <= c->npending);
    if (c->nparked > 0)
        gh__resume_parked(c);
    if (c->closing)
        return;
    flush(c);
    if (c->closing)
        return;
    update_reading(c);
    if (!c->closing && !c->dirty && finished(c))
        gh__conn_close(c);
}

void gh__flush_all(gh_loop *lp)
{
    /* Work done here can dirty connections again (a resumed request that
     * completes at once, input parsed after a drain): a few rounds, then
     * the idle handle keeps the loop from sleeping on what is left. */
    for (int round = 0; round < GH_FLUSH_ROUNDS && lp->dirty != NULL; round++) {
        gh_conn *c = lp->dirty;
        lp->dirty = NULL;
        while (c) {
            gh_conn *next = c->dirty_next;
            c->dirty = 0;
            c->dirty_next = NULL;
            if (!c->closing)
                flush_phase_one(c);
            c = next;
        }
    }
    if (lp->have_handles) {
        if (lp->dirty != NULL)
            uv_idle_start(&lp->flush_idle, on_flush_idle);
        else
            uv_idle_stop(&lp->flush_idle);
    }
}

void gh__conn_request_done(gh_conn *c)
{
    GH_ASSERT(c->npending > 0);
    c->npending--;
    if (c->closing) {
        maybe_free(c);
        return;
    }
    gh__conn_mark_dirty(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    gh_conn *c = h->data;
    size_t max = c->srv->cfg->max_request;
    (void)suggested;
    if (c->tls != NULL) { /* ciphertext goes to its own buffer */
        if (c->tls_rbuf == NULL)
            c->tls_rbuf = malloc(TLS_RBUF);
        if (c->in == NULL && (c->in = malloc(IN_INITIAL)) != NULL)
            c->in_cap = IN_INITIAL; /* never NULL once reading: memchr needs it */
        *buf = uv_buf_init(c->tls_rbuf, c->tls_rbuf ? TLS_RBUF : 0);
        return;
    }
    if (c->in_len == c->in_cap && c->in_cap < max) {
        size_t cap = c->in_cap ? c->in_cap * 2 : IN_INITIAL;
        if (cap > max)
            cap = max;
        char *p = realloc(c->in, cap);
        if (p != NULL) {
            c->in = p;
            c->in_cap = cap;
        }
    }
    *buf = uv_buf_init(c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void too_large(gh_conn *c)
{
    /* The framing is lost: answer once, then close after the reply is out. */
    gh__dispatch_line(c, NULL, 0);
    sodium_memzero(c->in, c->in_len);
    c->in_len = 0;
    uv_read_stop(&c->h.stream);
    c->paused = 1;
    c->close_after_write = 1; /* the flush phase writes the reply, then closes */
}

/* Over budget: replies queued (serialized or in uv_write) past max_output,
 * too many requests in flight, or the server is stopping. */
static int over_budget(const gh_conn *c)
{
    return c->out_bytes + c->queued_bytes > c->srv->cfg->max_output ||
           c->npending >= GH_CONN_MAX_PENDING || c->lp->stopping ||
           c->nparked >= GH_CONN_MAX_PARKED || c->held_bytes > c->srv->cfg->max_held_bytes;
}

/* Parses and dispatches complete lines from the input buffer until it runs
 * out of lines or the connection goes over budget; the rest stays buffered
 * and is parsed when the replies drain (update_reading). */
static void process_input(gh_conn *c)
{
    size_t start;
again:
    start = 0;
    if (c->tls != NULL)
        tls_feed(c);
    while (!c->closing && !c->close_after_write && !over_budget(c)) {
        char *nl = memchr(c->in + start, '\n', c->in_len - start);
        if (nl == NULL)
            break;
        size_t len = (size_t)(nl - (c->in + start));
        if (len > 0 && c->in[start + len - 1] == '\r')
            len--;
        if (len > 0) {
            c->last_request_ms = uv_now(c->lp->loop);
            gh__dispatch_line(c, c->in + start, len);
        }
        start = (size_t)(nl - c->in) + 1;
    }
    if (start > 0 && !c->closing) {
        /* The parsed lines may have carried passwords: nothing of them stays
         * behind in the buffer (the moved tail is wiped too). */
        size_t rest = c->in_len - start;
        memmove(c->in, c->in + start, rest);
        sodium_memzero(c->in + rest, start);
        c->in_len = rest;
        if (c->tls_plain.len > 0 && !c->close_after_write && !over_budget(c))
            goto again; /* room again for plaintext the session decrypted */
    }
    if (c->closing)
        return;
    if (c->in_len >= c->srv->cfg->max_request && memchr(c->in, '\n', c->in_len) == NULL) {
        too_large(c);
        return;
    }
    if (over_budget(c) && !c->paused) {
        uv_read_stop(&c->h.stream);
        c->paused = 1;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    gh_conn *c = s->data;
    (void)buf;
    if (nread == UV_EOF) {
        /* Half-close: the peer sent everything. Answer what it asked (the
         * lines already received), then close. */
        uv_read_stop(&c->h.stream);
        c->paused = 1;
        c->eof = 1;
        process_input(c);
        if (!c->closing && finished(c) && !c->dirty)
            gh__conn_close(c);
        return;
    }
    if (nread < 0) {
        GH_LOGD("conn %s: read: %s", c->peer, uv_strerror((int)nread));
        /* The peer is gone: requests in flight complete, replies go nowhere. */
        gh__conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    if (c->tls != NULL) {
        int rc = gh_tls_read(c->tls, c->tls_rbuf, (size_t)nread, &c->tls_plain);
        tls_send(c); /* the handshake's answers, before anything else */
        if (rc != 0) {
            GH_LOGD("conn %s: TLS session failed", c->peer);
            gh__conn_close(c);
            return;
        }
        if (c->closing)
            return;
    } else {
        c->in_len += (size_t)nread;
    }
    process_input(c);
}

/* The idle timeout counts from the last complete request, not the last
 * byte: a peer trickling a line a byte at a time is still idle. */
/* NSS-socket connections idle out quickly: every process of the machine may
 * keep one, and they must not pile up against the connection limits. */
static uint64_t conn_idle_ms(const gh_conn *c)
{
    return c->nss_only ? GH_NSS_IDLE_MS : (uint64_t)c->srv->cfg->idle_timeout * 1000;
}

static void on_idle(uv_timer_t *t)
{
    gh_conn *c = t->data;
    uint64_t ms = conn_idle_ms(c);
    uint64_t since = uv_now(c->lp->loop) - c->last_request_ms;
    if (c->npending > 0 || since < ms) { /* working for the peer, or not idle long enough */
        uv_timer_start(&c->idle, on_idle, c->npending > 0 ? ms : ms - since, 0);
        return;
    }
    GH_LOGD("conn %s: idle timeout", c->peer);
    gh__conn_close(c);
}

/* Whether the peer on fd (uid, gid) is a member of the OS group want. */
static int peer_in_group(int fd, uid_t uid, gid_t gid, gid_t want)
{
    if (gid == want)
        return 1;
    /* the peer process's supplementary groups, as the kernel saw them when
     * it connected (Linux >= 4.13) */
    gid_t pg[256];
    socklen_t pglen = sizeof(pg);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, pg, &pglen) == 0) {
        for (size_t i = 0; i < pglen / sizeof(gid_t); i++)
            if (pg[i] == want)
                return 1;
        return 0;
    }
    /* older kernels: the supplementary groups of the peer's account */
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
        return 0;
    gid_t groups[256];
    int ng = 256;
    if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &ng) < 0)
        return 0;
    for (int i = 0; i < ng; i++)
        if (groups[i] == want)
            return 1;
    return 0;
}

/* A UNIX peer's rank from its credentials: root and the server's own uid
 * are admins, then members of admin_unix_group; members of
 * service_unix_group are service peers; admins and members of
 * frontend_unix_group are trusted front-ends (they may name an end client). */
static void classify_unix_peer(gh_conn *c, int fd)
{
    gh_server *srv = c->srv;
    c->admin = c->uid == 0 || c->uid == geteuid() ||
               (srv->have_admin_gid && peer_in_group(fd, c->uid, c->gid, srv->admin_gid));
    c->service =
        !c->admin && srv->have_service_gid && peer_in_group(fd, c->uid, c->gid, srv->service_gid);
    c->frontend = c->admin ||
                  (srv->have_frontend_gid && peer_in_group(fd, c->uid, c->gid, srv->frontend_gid));
}

/* A connection of lp with its stream (not yet connected) and idle timer,
 * linked into lp->conns and counted; from here on it is closed through
 * gh__conn_close. On lp's thread. */
static gh_conn *conn_new(gh_loop *lp, int is_tcp)
{
    gh_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->srv = lp->srv;
    c->lp = lp;
    c->is_tcp = is_tcp;
    if (is_tcp)
        uv_tcp_init(lp->loop, &c->h.tcp);
    else
        uv_pipe_init(lp->loop, &c->h.pipe, 0);
    c->h.handle.data = c;
    uv_timer_init(lp->loop, &c->idle);
    c->idle.data = c;
    c->handles_open = 2;
    c->next = lp->conns;
    if (lp->conns)
        lp->conns->prev = c;
    lp->conns = c;
    GH_STAT_ADD(lp->nconns, 1);
    __atomic_fetch_add(&lp->srv->nconns, 1, __ATOMIC_RELAXED);
    return c;
}

static void conn_set_unix_peer(gh_conn *c, uid_t uid, gid_t gid)
{
    c->uid = uid;
    c->gid = gid;
    gh__peer_key(NULL, uid, c->peerkey, sizeof(c->peerkey), c->peer, sizeof(c->peer));
}

/* The stream is connected and the peer identified: refuse the connection when
 * over max_connections or stopping (0 or GH_EUNAVAIL), else start reading. */
static int conn_start(gh_conn *c)
{
    gh_server *srv = c->srv;
    gh_loop *lp = c->lp;
    /* connections open from the same peer (UNIX uid, or TCP address with
     * every loopback address counted as one), on every loop */
    unsigned same_peer = gh__peer_add(srv, c->peerkey);
    c->peer_counted = 1;
    int per_peer = !c->admin && srv->cfg->max_connections_per_peer > 0 &&
                   same_peer > srv->cfg->max_connections_per_peer;
    if (__atomic_load_n(&srv->nconns, __ATOMIC_RELAXED) > srv->cfg->max_connections ||
        lp->stopping || per_peer) {
        /* Tell the peer why, then close. */
        GH_STAT_ADD(lp->conns_rejected, 1);
        static const char msg[] = "{\"ok\":false,\"error\":{\"code\":\"unavailable\","
                                  "\"message\":\"too many connections\"}}\n";
        static const char msg_peer[] =
            "{\"ok\":false,\"error\":{\"code\":\"unavailable\","
            "\"message\":\"too many connections from this peer (max_connections_per_peer)\"}}\n";
        uv_buf_t b = per_peer ? uv_buf_init((char *)msg_peer, sizeof(msg_peer) - 1)
                              : uv_buf_init((char *)msg, sizeof(msg) - 1);
        uv_try_write(&c->h.stream, &b, 1);
        gh__conn_close(c);
        return GH_EUNAVAIL;
    }
    c->last_request_ms = uv_now(lp->loop);
    if (srv->cfg->idle_timeout || c->nss_only)
        uv_timer_start(&c->idle, on_idle, conn_idle_ms(c), 0);
    uv_read_start(&c->h.stream, on_alloc, on_read);
    return 0;
}

/* The stream is connected: who the peer is, then conn_start. On c's loop. */
static void conn_setup(gh_conn *c, int is_tcp, int nss_only)
{
    GH_STAT_ADD(c->lp->conns_total, 1);
    if (is_tcp) {
        struct sockaddr_storage ss = {0};
        int len = sizeof(ss);
        c->uid = (uid_t)-1;
        c->gid = (gid_t)-1;
        uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len);
        /* every loopback address is one peer for limits and lockout */
        gh__peer_key((struct sockaddr *)&ss, 0, c->peerkey, sizeof(c->peerkey), c->peer,
                     sizeof(c->peer));
        if (c->srv->tcp_tls != NULL && gh_tls_new(c->srv->tcp_tls, &c->tls) != 0) {
            GH_LOGW("conn %s: cannot start a TLS session", c->peer);
            gh__conn_close(c);
            return;
        }
        uv_tcp_nodelay(&c->h.tcp, 1);
    } else {
        uv_os_fd_t fd;
        struct ucred cred;
        socklen_t clen = sizeof(cred);
        if (uv_fileno(&c->h.handle, &fd) != 0 ||
            getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
            GH_LOGW("cannot read peer credentials: refusing connection");
            gh__conn_close(c);
            return;
        }
        conn_set_unix_peer(c, cred.uid, cred.gid);
        c->nss_only = nss_only;
        if (!c->nss_only) /* no class on the NSS socket, whoever connects */
            classify_unix_peer(c, fd);
    }
    conn_start(c);
}

/* An accepted socket on its way from loop 0's acceptor to its loop. */
typedef struct adopt_msg {
    gh_post post;
    gh_loop *lp;
    int fd;
    int is_tcp, nss_only;
} adopt_msg;

static void adopt_here(void *arg)
{
    adopt_msg *m = arg;
    gh__conn_adopt(m->lp, m->fd, m->is_tcp, m->nss_only);
    free(m);
}

void gh__conn_adopt(gh_loop *lp, int fd, int is_tcp, int nss_only)
{
    GH_ASSERT(gh__loop_self() == lp);
    gh_conn *c = conn_new(lp, is_tcp);
    if (c == NULL) {
        close(fd);
        return;
    }
    int rc = is_tcp ? uv_tcp_open(&c->h.tcp, fd) : uv_pipe_open(&c->h.pipe, fd);
    if (rc != 0) {
        GH_LOGW("accept: cannot open the connection: %s", uv_strerror(rc));
        close(fd);
        gh__conn_close(c);
        return;
    }
    conn_setup(c, is_tcp, nss_only);
}

static void on_tmp_closed(uv_handle_t *h)
{
    free(h);
}

/* Accepts on a handle of loop 0 and hands a duplicate of the socket to lp
 * (the handle is closed: the duplicate keeps the connection). */
static void hand_over(uv_stream_t *server, gh_loop *lp, int is_tcp, int nss_only)
{
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } *tmp = malloc(sizeof(*tmp));
    adopt_msg *m = malloc(sizeof(*m));
    uv_os_fd_t fd;
    int dup = -1;

    if (tmp == NULL || m == NULL) {
        free(tmp);
        free(m);
        return; /* libuv keeps it queued in the backlog */
    }
    if (is_tcp)
        uv_tcp_init(server->loop, &tmp->tcp);
    else
        uv_pipe_init(server->loop, &tmp->pipe, 0);
    if (uv_accept(server, &tmp->stream) == 0 && uv_fileno(&tmp->handle, &fd) == 0)
        dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    uv_close(&tmp->handle, on_tmp_closed);
    if (dup < 0) {
        free(m);
        return;
    }
    m->lp = lp;
    m->fd = dup;
    m->is_tcp = is_tcp;
    m->nss_only = nss_only;
    gh__loop_post(lp, &m->post, adopt_here, m);
}

/* Loop 0's acceptor: connections go to the loops in turn. */
static void on_connection(uv_stream_t *server, int status)
{
    gh_server *srv = server->data;
    int is_tcp = server == (uv_stream_t *)&srv->tcp_listener;
    int nss_only = server == (uv_stream_t *)&srv->nss_listener;
    if (status < 0) {
        GH_LOGW("accept: %s", uv_strerror(status));
        return;
    }
    gh_loop *lp = &srv->loops[srv->accept_next];
    srv->accept_next = (srv->accept_next + 1) % srv->nloops;
    if (lp != &srv->loops[0]) {
        hand_over(server, lp, is_tcp, nss_only);
        return;
    }
    gh_conn *c = conn_new(lp, is_tcp);
    if (c == NULL)
        return;
    if (uv_accept(server, &c->h.stream) != 0) {
        gh__conn_close(c);
        return;
    }
    conn_setup(c, is_tcp, nss_only);
}

int gh__conn_attach_fd(gh_server *srv, int fd, uid_t uid, gid_t gid, int admin)
{
    gh_conn *c = conn_new(&srv->loops[0], 0);
    if (c == NULL)
        return GH_ENOMEM;
    int rc = uv_pipe_open(&c->h.pipe, fd);
    if (rc != 0) {
        GH_LOGW("attach fd %d: %s", fd, uv_strerror(rc));
        gh__conn_close(c);
        return GH_EINVAL;
    }
    GH_STAT_ADD(c->lp->conns_total, 1);
    conn_set_unix_peer(c, uid, gid);
    c->admin = c->frontend = admin;
    return conn_start(c);
}

static int listen_unix(gh_server *srv, uv_pipe_t *lh, int *have, const char *path, unsigned mode)
{
    int rc;

    /* A stale socket from a crash is removed; a live server on it is not. */
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            GH_LOGE("%s exists and is not a socket", path);
            return GH_EINVAL;
        }
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
        int live = fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
        if (fd >= 0)
            close(fd);
        if (live) {
            GH_LOGE("another server is listening on %s", path);
            return GH_EEXISTS;
        }
        unlink(path);
    }
    uv_pipe_init(srv->loop, lh, 0);
    lh->data = srv;
    *have = 1;
    mode_t old = umask(0177);
    rc = uv_pipe_bind(lh, path);
    umask(old);
    if (rc != 0) {
        GH_LOGE("bind %s: %s", path, uv_strerror(rc));
        return GH_EIO;
    }
    if (chmod(path, mode) != 0)
        GH_LOGW("chmod %s: %s", path, strerror(errno));
    rc = uv_listen((uv_stream_t *)lh, 511, on_connection);
    if (rc != 0) {
        GH_LOGE("listen %s: %s", path, uv_strerror(rc));
        return GH_EIO;
    }
    GH_LOGI("listening on %s", path);
    return 0;
}

static int listen_tcp(gh_server *srv)
{
    char host[256];
    const char *spec = srv->cfg->tcp_listen;
    const char *colon = strrchr(spec, ':');
    struct sockaddr_storage ss;
    int rc;

    if (colon == NULL || (size_t)(colon - spec) >= sizeof(host)) {
        GH_LOGE("tcp_listen must be HOST:PORT, not '%s'", spec);
        return GH_EINVAL;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    int port = atoi(colon + 1);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        GH_LOGE("tcp_listen: bad address '%s'", spec);
        return GH_EINVAL;
    }
    int loopback = 0;
    if (ss.ss_family == AF_INET)
        loopback = (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    else
        loopback = IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr);
    if (!loopback && !srv->cfg->tcp_any) {
        GH_LOGE("tcp_listen %s is not a loopback address; set tcp_allow_non_loopback = yes", spec);
        return GH_EINVAL;
    }
    if (srv->cfg->tcp_tls) {
        char err[GH_ERRMSG_MAX];
        const gh_config *cfg = srv->cfg;
        if (cfg->tls_cert_file == NULL || cfg->tls_cert_file[0] == '\0' ||
            cfg->tls_key_file == NULL || cfg->tls_key_file[0] == '\0') {
            GH_LOGE("tcp_tls = yes needs tls_cert_file and tls_key_file");
            return GH_EINVAL;
        }
        if (gh_tls_ctx_new(&srv->tcp_tls, cfg->tls_cert_file, cfg->tls_key_file, cfg->tls_ca_file,
                           err, sizeof(err)) != 0) {
            GH_LOGE("tcp_tls: %s", err);
            return GH_EINVAL;
        }
    } else if (!loopback) {
        GH_LOGW("tcp_listen %s: tokens and passwords cross the network in clear; set tcp_tls = yes",
                spec);
    }
    uv_tcp_init(srv->loop, &srv->tcp_listener);
    srv->tcp_listener.data = srv;
    srv->have_tcp = 1;
    rc = uv_tcp_bind(&srv->tcp_listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->tcp_listener, 511, on_connection);
    if (rc != 0) {
        GH_LOGE("listen %s: %s", spec, uv_strerror(rc));
        return GH_EIO;
    }
    GH_LOGI("listening on tcp %s", spec);
    return 0;
}

/* The gid of an OS group named by a config key ("" = none). */
static int resolve_group(const char *key, const char *name, gid_t *gid, int *have)
{
    struct group gr, *res = NULL;
    char buf[4096];
    *have = 0;
    if (name == NULL || name[0] == '\0')
        return 0;
    if (getgrnam_r(name, &gr, buf, sizeof(buf), &res) != 0 || res == NULL) {
        GH_LOGE("%s '%s' does not exist", key, name);
        return GH_EINVAL;
    }
    *gid = gr.gr_gid;
    *have = 1;
    return 0;
}

int gh__listen(gh_server *srv)
{
    int rc = resolve_group("admin_unix_group", srv->cfg->admin_unix_group, &srv->admin_gid,
                           &srv->have_admin_gid);
    if (rc == 0)
        rc = resolve_group("service_unix_group", srv->cfg->service_unix_group, &srv->service_gid,
                           &srv->have_service_gid);
    if (rc == 0)
        rc = resolve_group("frontend_unix_group", srv->cfg->frontend_unix_group, &srv->frontend_gid,
                           &srv->have_frontend_gid);
    if (rc != 0)
        return rc;
    rc = listen_unix(srv, &srv->unix_listener, &srv->have_unix, srv->cfg->socket_path,
                     srv->cfg->socket_mode);
    if (rc == 0 && srv->cfg->nss_socket[0] != '\0') /* world-connectable, nss.* only */
        rc = listen_unix(srv, &srv->nss_listener, &srv->have_nss, srv->cfg->nss_socket, 0666);
    if (rc == 0 && srv->cfg->tcp_listen[0] != '\0')
        rc = listen_tcp(srv);
    return rc;
}

void gh__listen_stop(gh_server *srv)
{
    if (srv->have_unix) {
        uv_close((uv_handle_t *)&srv->unix_listener, NULL);
        unlink(srv->cfg->socket_path);
        srv->have_unix = 0;
    }
    if (srv->have_nss) {
        uv_close((uv_handle_t *)&srv->nss_listener, NULL);
        unlink(srv->cfg->nss_socket);
        srv->have_nss = 0;
    }
    if (srv->have_tcp) {
        uv_close((uv_handle_t *)&srv->tcp_listener, NULL);
        srv->have_tcp = 0;
    }
    /* srv->tcp_tls stays until gh__server_close: a socket already handed to
     * another loop may still start its session with it */
}

void gh__close_idle_for_shutdown(gh_loop *lp)
{
    for (gh_conn *c = lp->conns; c; c = c->next) {
        update_reading(c);
        if (!c->closing && c->npending == 0 && c->out_bytes == 0 && !c->dirty)
            gh__conn_close(c);
    }
}

void gh__close_all(gh_loop *lp)
{
    if (lp->nconns > 0)
        GH_LOGW("shutdown: loop %u closes %u connections that did not finish in time", lp->index,
                lp->nconns);
    for (gh_conn *c = lp->conns; c; c = c->next)
        gh__conn_close(c);
}
