/*
 * dispatch.c: one request line through its named steps, in one direction.
 *
 *   conn.c process_input -> gh__dispatch_line -> decode (decode_flat: a hot
 *   op's flat line through server/freq.c; else jansson) -> (park) ->
 *   execute: identify the peer (token_rank) -> authorize (class) -> the op's
 *   handler -> answer now | gh_op_write (writer) | gh_op_pend (Argon2,
 *   upstream bind) -> gh__pending_finish -> conn.c flush
 *
 * Every line gets a gh_pending in its connection's reply queue before
 * anything can fail, so replies always come back in request order. A
 * request has one state (gh_req_state in server.h): PARSED, PARKED (held
 * behind its connection's writes, kept as text, not as a parsed tree),
 * RUNNING, HASHING, WRITING, DONE; each transition is a function here.
 * Execute runs the handler with a read snapshot that ends when it returns.
 * gh__pending_finish only serializes the reply and marks the connection
 * dirty: reading on, resuming parked requests and writing happen in the
 * loop's flush phase (conn.c), so a completion never re-enters the parser.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "schema/log.h"
#include "server/server.h"

typedef struct opent {
    const gh_op_def *def;
} opent;

/* A decoded request: jansson's tree, or for a GH_OPF_FLAT op whose line
 * freq.c takes, the flat reading (the hot ops skip jansson). */
typedef struct reqv {
    json_t *j;
    gh_freq f;
    int flat;
} reqv;

static void reqv_free(reqv *rv)
{
    json_decref(rv->j);
    rv->j = NULL;
    if (rv->flat)
        gh_freq_free(&rv->f);
    rv->flat = 0;
}

/* Sorted op table (built once, read-only afterwards: not mutable state). */
static opent *table;
static size_t ntable;

static int cmp_ops(const void *a, const void *b)
{
    return strcmp(((const opent *)a)->def->name, ((const opent *)b)->def->name);
}

int gh__dispatch_init(gh_server *srv)
{
    const gh_op_def *lists[] = {gh__ops_core,   gh__ops_user, gh__ops_io,
                                gh__ops_authz,  gh__ops_sync, gh__ops_session,
                                gh__ops_backup, gh__ops_nss,  gh__ops_passwd};
    const size_t nlists = sizeof(lists) / sizeof(lists[0]);
    size_t n = 0;
    if (table == NULL) {
        for (size_t l = 0; l < nlists; l++)
            for (const gh_op_def *d = lists[l]; d->name; d++)
                n++;
        table = calloc(n, sizeof(*table));
        if (table == NULL)
            return GH_ENOMEM;
        for (size_t l = 0; l < nlists; l++)
            for (const gh_op_def *d = lists[l]; d->name; d++)
                table[ntable++].def = d;
        qsort(table, ntable, sizeof(*table), cmp_ops);
        for (size_t i = 1; i < ntable; i++)
            GH_ASSERT(strcmp(table[i - 1].def->name, table[i].def->name) != 0);
    }
    srv->nops = ntable;
    return 0;
}

gh_lat *gh__lat_new(const gh_server *srv)
{
    return calloc(srv->nops ? srv->nops : 1, sizeof(gh_lat));
}

size_t gh__op_count(void)
{
    return ntable;
}

static int find_op(const char *name)
{
    size_t lo = 0, hi = ntable;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(name, table[mid].def->name);
        if (c == 0)
            return (int)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

const gh_op_def *gh__op_find(const char *name)
{
    int i = find_op(name);
    return i < 0 ? NULL : table[i].def;
}

const gh_op_def *gh__op_at(size_t i)
{
    return i < ntable ? table[i].def : NULL;
}

unsigned gh__lat_bucket(uint64_t us)
{
    if (us < 8)
        return (unsigned)us;
    unsigned e = 63u - (unsigned)__builtin_clzll(us); /* floor(log2 us) >= 3 */
    unsigned b = 8 + (e - 3) * 4 + (unsigned)((us >> (e - 2)) & 3);
    return b < GH_LAT_BUCKETS ? b : GH_LAT_BUCKETS - 1;
}

uint64_t gh__lat_bucket_upper(unsigned b)
{
    if (b < 8)
        return b;
    unsigned e = (b - 8) / 4 + 3, s = (b - 8) % 4;
    return ((4ull + s) << (e - 2)) + (1ull << (e - 2)) - 1;
}

/* The loop's own histogram: only this thread adds, stats on any loop reads. */
static void record_latency(gh_loop *lp, int op, uint64_t t0, int failed)
{
    if (op < 0 || (size_t)op >= lp->srv->nops)
        return;
    gh_lat *l = &lp->lat[op];
    GH_STAT_ADD(l->count, 1);
    GH_STAT_ADD(l->buckets[gh__lat_bucket((uv_hrtime() - t0) / 1000)], 1);
    if (failed)
        GH_STAT_ADD(l->errors, 1);
}

/* Messages may quote what the peer sent (an op name, a parser's excerpt),
 * possibly cut inside a UTF-8 sequence: bytes that do not form valid UTF-8
 * become '?', so the reply is always valid JSON with a message. */
json_t *gh__message_json(const char *msg)
{
    size_t n = strlen(msg);
    if (gh_schema_utf8_valid(msg, n))
        return json_string(msg);
    char buf[GH_ERRMSG_MAX * 2];
    size_t i = 0, o = 0;
    while (i < n && o + 1 < sizeof(buf)) {
        unsigned char ch = (unsigned char)msg[i];
        size_t len = ch < 0x80         ? 1
                     : (ch >> 5) == 6  ? 2
                     : (ch >> 4) == 14 ? 3
                     : (ch >> 3) == 30 ? 4
                                       : 0;
        if (len > 0 && i + len <= n && gh_schema_utf8_valid(msg + i, len) &&
            o + len < sizeof(buf)) {
            memcpy(buf + o, msg + i, len);
            o += len;
            i += len;
        } else {
            buf[o++] = '?';
            i++;
        }
    }
    buf[o] = '\0';
    return json_string(buf);
}

/* ---- request state transitions ---- */

static void barrier_take(gh_conn *c, gh_pending *p, int hard)
{
    GH_ASSERT(p->barrier == 0);
    p->barrier = hard ? 2 : 1;
    c->barriers++;
    if (hard)
        c->hard_barriers++;
}

/* A hard barrier's write reached the writer: later plain writes may follow. */
static void barrier_soften(gh_conn *c, gh_pending *p)
{
    if (p->barrier != 2)
        return;
    GH_ASSERT(c->hard_barriers > 0);
    c->hard_barriers--;
    p->barrier = 1;
}

static void barrier_release(gh_conn *c, gh_pending *p)
{
    if (p->barrier == 0)
        return;
    barrier_soften(c, p);
    GH_ASSERT(c->barriers > 0);
    c->barriers--;
    p->barrier = 0;
    if (c->nparked > 0)
        gh__conn_mark_dirty(c); /* the flush phase resumes what waited on it */
}

static void park(gh_conn *c, gh_pending *p, const char *line, size_t len)
{
    GH_ASSERT(p->state == GH_REQ_PARSED || p->state == GH_REQ_RUNNING);
    p->held = malloc(len ? len : 1);
    if (p->held == NULL) {
        gh__pending_finish(p, GH_ENOMEM, "out of memory", NULL);
        return;
    }
    memcpy(p->held, line, len);
    p->held_len = len;
    p->state = GH_REQ_PARKED;
    c->nparked++;
    c->held_bytes += len;
}

/* PARKED -> PARSED: hands back the held line (the caller wipes and frees
 * it: it may carry a password). */
static char *unpark(gh_conn *c, gh_pending *p, size_t *len)
{
    char *line = p->held;
    GH_ASSERT(p->state == GH_REQ_PARKED && c->nparked > 0 && c->held_bytes >= p->held_len);
    *len = p->held_len;
    c->nparked--;
    c->held_bytes -= p->held_len;
    p->held = NULL;
    p->held_len = 0;
    p->state = GH_REQ_PARSED;
    return line;
}

static void wipe_free(char *line, size_t len)
{
    sodium_memzero(line, len);
    free(line);
}

static void finish_posted(void *arg)
{
    gh_pending *p = arg;
    char *msg = p->xmsg;
    json_t *resp = p->xresp;
    p->xmsg = NULL;
    p->xresp = NULL;
    gh__pending_finish(p, p->xrc, msg, resp); /* may free p: nothing of it after */
    free(msg);
    json_decref(resp);
}

/* A completion on another loop's thread (a handler run on loop 0): the
 * finish is the owner's, posted with copies of the message and of resp (a
 * jansson value is never shared between threads: its reference count is not
 * read atomically). */
static void finish_on_owner(gh_pending *p, int rc, const char *msg, json_t *resp)
{
    p->xrc = rc;
    p->xmsg = msg != NULL && msg[0] != '\0' ? strdup(msg) : NULL;
    p->xresp = resp != NULL ? json_deep_copy(resp) : NULL;
    if (resp != NULL && p->xresp == NULL && rc == 0)
        p->xrc = GH_ENOMEM;
    gh__loop_post(p->conn->lp, &p->xpost, finish_posted, p);
}

/* Serializes the reply (an error when rc < 0, else resp's fields) and marks
 * the request DONE and its connection dirty: nothing else. Reading, resuming
 * parked requests and writing happen in the flush phase (conn.c). Called on
 * another loop's thread, it posts itself to the connection's loop. */
void gh__pending_finish(gh_pending *p, int rc, const char *msg, json_t *resp)
{
    gh_conn *c = p->conn;

    if (gh__loop_self() != c->lp) {
        finish_on_owner(p, rc, msg, resp);
        return;
    }
    GH_ASSERT(p->state != GH_REQ_DONE);
    if (p->state == GH_REQ_PARKED) {
        size_t held_len;
        char *held = unpark(c, p, &held_len);
        wipe_free(held, held_len);
    }
    gh_reply *r = &p->reply;
    size_t len;

    /* the line is written, not built: fields a handler wrote with
     * gh_op_reply_* are already in p->reply, resp's members follow */
    if (rc == 0) {
        const char *key;
        json_t *v;
        if (r->len == 0)
            gh__reply_begin_ok(r, p->id);
        if (resp)
            json_object_foreach(resp, key, v) gh__reply_member(r, key, v);
        gh__reply_end(r);
    } else {
        gh__reply_free(r);
        gh__reply_error(r, p->id, gh_error_code(rc), msg && msg[0] ? msg : gh_strerror(rc));
    }
    char *line = gh__reply_take(r, &len);
    if (line == NULL) {
        static const char oom[] =
            "{\"ok\":false,\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n";
        line = strdup(oom);
        len = line ? strlen(line) : 0;
    }
    p->out = line;
    p->outlen = line ? len : 0;
    c->queued_bytes += p->outlen;
    p->state = GH_REQ_DONE;
    barrier_release(c, p);
    record_latency(c->lp, p->op, p->t0, rc != 0);
    if (gh_log_enabled(GH_LOG_DEBUG)) {
        const gh_op_def *d = gh__op_at((size_t)p->op);
        GH_LOGD("%s %s -> %s (%lluus)", c->peer, d ? d->name : "?", rc ? gh_error_code(rc) : "ok",
                (unsigned long long)((uv_hrtime() - p->t0) / 1000));
    }
    gh__conn_request_done(c); /* may free c when it is closing: touch nothing after */
}

/* Frees a slot whose reply went out (or never will): secrets are wiped. */
void gh__pending_free(gh_pending *p)
{
    free(p->xmsg); /* set only between a cross-loop finish and its post */
    json_decref(p->xresp);
    if (p->held) {
        sodium_memzero(p->held, p->held_len);
        free(p->held);
    }
    if (p->out && p->secret)
        sodium_memzero(p->out, p->outlen);
    free(p->out);
    gh__reply_free(&p->reply);
    json_decref(p->id);
    free(p);
}

/* Scans a JSON text outside strings: nesting depth (stops past max_depth)
 * and the number of values, bounded before jansson allocates a node each. */
static int scan_shape(const char *s, size_t len, int max_depth, size_t max_elems, const char **why)
{
    int depth = 0, in_str = 0;
    size_t elems = 1;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '{' || ch == '[') {
            if (++depth > max_depth) {
                *why = "depth";
                return GH_EBADREQ;
            }
        } else if (ch == '}' || ch == ']') {
            depth--;
        } else if (ch == ',') {
            if (++elems > max_elems) {
                *why = "elements";
                return GH_ETOOBIG;
            }
        }
    }
    return 0;
}

/* ---- the one deferred-write path ---- */

typedef struct wjob {
    gh_pending *p;
    int (*reply)(void *arg, json_t *resp);
    void (*free_arg)(void *arg);
    void *arg;
} wjob;

static void on_write_done(void *cbarg, int rc, const char *err)
{
    wjob *j = cbarg;
    json_t *resp = json_object();
    char msg[GH_ERRMSG_MAX];
    snprintf(msg, sizeof(msg), "%s", err ? err : "");
    if (rc == 0 && j->reply)
        rc = j->reply(j->arg, resp);
    gh__pending_finish(j->p, rc, msg, resp);
    json_decref(resp);
    if (j->free_arg)
        j->free_arg(j->arg);
    free(j);
}

int gh_op_write(gh_pending *p, const char *actor, gh_store_write_fn apply,
                int (*reply)(void *arg, json_t *resp), void (*free_arg)(void *arg), void *arg)
{
    gh_conn *c = p->conn;
    wjob *j = calloc(1, sizeof(*j));
    int rc = GH_ENOMEM;
    if (j != NULL) {
        j->p = p;
        j->reply = reply;
        j->free_arg = free_arg;
        j->arg = arg;
        rc = gh__submit_write(c->srv, actor, apply, arg, on_write_done, j); /* back on c's loop */
    }
    if (rc != 0) {
        if (free_arg)
            free_arg(arg);
        free(j);
        gh__pending_finish(p, rc, rc == GH_ENOMEM ? NULL : "the server is shutting down", NULL);
        return rc;
    }
    p->state = GH_REQ_WRITING;
    barrier_soften(c, p); /* it reached the writer: later plain writes may follow */
    return 0;
}

/* A request that fans out into several writes (import): each part goes to
 * the writer through here, done(cbarg, rc, err) comes back on the
 * connection's loop, and the handler answers p once every part is back. The
 * first part handed over makes p WRITING (execute then holds later reads
 * behind it, like a deferred write). */
int gh_op_write_part(gh_pending *p, const char *actor, gh_store_write_fn apply, void *arg,
                     void (*done)(void *cbarg, int rc, const char *err), void *cbarg)
{
    int rc = gh__submit_write(p->conn->srv, actor, apply, arg, done, cbarg);
    if (rc == 0 && p->state != GH_REQ_WRITING) {
        GH_ASSERT(p->state == GH_REQ_HASHING && p->barrier == 0);
        p->state = GH_REQ_WRITING;
    }
    return rc;
}

/* ---- identify and authorize ---- */

/* Whether user_id is a member (directly or through nesting) of the
 * local-origin group named name: an upstream group of that name never counts. */
struct group_find {
    uint64_t gid;
    int found;
};

static int find_group(uint64_t id, void *arg)
{
    struct group_find *f = arg;
    f->found = id == f->gid;
    return f->found; /* stop at the first match */
}

static int user_in_local_group(gh_txn *txn, const char *name, uint64_t user_id)
{
    gh_group g;
    struct group_find f = {0, 0};
    if (name == NULL || name[0] == '\0' || gh_store_group_get(txn, name, &g) != 0 ||
        g.origin[0] != '\0')
        return 0;
    f.gid = g.id;
    gh_store_user_groups(txn, user_id, find_group, &f);
    return f.found;
}

/* The rank a token presented as "auth" gives: admin, service, or nothing
 * more than any peer. A token of a user who is not active is invalid. */
static int token_rank(gh_opctx *ctx, const gh_fval *auth, int *rank)
{
    gh_user u;
    int64_t exp;
    if (auth->type != GH_FV_STRING)
        return gh_op_fail(ctx, GH_EINVAL, "'auth' must be a token string");
    if (gh__token_user(ctx->srv, ctx->txn, auth->s, ctx->now, &u, &exp) != 0 ||
        u.state != GH_USER_ACTIVE || u.tombstone)
        return gh_op_fail(ctx, GH_ETOKEN, "the 'auth' token is invalid or expired");
    *rank = GH_PEER_ANY;
    if (gh__user_is_admin(ctx->srv, ctx->txn, u.id) == 1)
        *rank = GH_PEER_ADMIN;
    else if (user_in_local_group(ctx->txn, ctx->cfg->service_group, u.id))
        *rank = GH_PEER_SERVICE;
    if (*rank > ctx->rank)
        snprintf(ctx->actor, sizeof(ctx->actor), "user:%s", u.name);
    return 0;
}

static int authorize(gh_opctx *ctx, const gh_op_def *def)
{
    switch (def->cls) {
    case GH_CLASS_PUBLIC:
    case GH_CLASS_SUBJECT:
        return 0;
    case GH_CLASS_SERVICE:
        if (ctx->rank >= GH_PEER_SERVICE)
            return 0;
        return gh_op_fail(ctx, GH_EPERM, "'%s' needs a service or administrator peer", def->name);
    case GH_CLASS_ADMIN:
    default:
        if (ctx->rank >= GH_PEER_ADMIN)
            return 0;
        return gh_op_fail(ctx, GH_EPERM, "'%s' needs an administrator", def->name);
    }
}

/* Whether a request must wait for its connection's writes: everything behind
 * a held request waits too (order), and only plain writes may run ahead. */
static int must_wait(const gh_conn *c, const gh_op_def *def)
{
    return c->hard_barriers > 0 || (c->barriers > 0 && !(def->flags & GH_OPF_WRITE));
}

/* ---- execute ---- */

/* A request of an op flagged GH_OPF_LOOP0, on its way to loop 0: what the
 * handler needs of its connection, copied (the connection stays its loop's). */
typedef struct hop {
    gh_post post;
    gh_server *srv;
    gh_pending *p;
    const gh_op_def *def;
    json_t *req; /* a deep copy: jansson values are not shared between threads */
    int rank, frontend;
    uid_t peer_uid;
    char peer[64], peerkey[64], actor[96];
    int64_t now;
} hop;

/* On loop 0: the handler with loop 0's snapshot and permission cache. Its
 * answer (now, or later from loop 0) is posted to the connection's loop. */
static void hop_run(void *arg)
{
    hop *h = arg;
    gh_loop *lp0 = &h->srv->loops[0];
    gh_opctx ctx;
    gh_txn *txn = NULL;
    int rc;

    memset(&ctx, 0, sizeof(ctx));
    ctx.srv = h->srv;
    ctx.cfg = h->srv->cfg;
    ctx.authz = lp0->authz;
    ctx.req = h->req;
    ctx.rank = h->rank;
    ctx.admin = h->rank >= GH_PEER_ADMIN;
    ctx.frontend = h->frontend;
    ctx.peer_uid = h->peer_uid;
    ctx.peer = h->peer;
    ctx.peerkey = h->peerkey;
    ctx.now = h->now;
    snprintf(ctx.actor, sizeof(ctx.actor), "%s", h->actor);
    rc = gh_store_read_begin(lp0->reader, &txn);
    if (rc != 0) {
        gh__pending_finish(h->p, rc, "cannot open a read transaction", NULL);
        goto done;
    }
    ctx.txn = txn;
    ctx.resp = json_object();
    ctx.request_ = h->p;
    lp0->in_handler++;
    rc = h->def->fn(&ctx);
    lp0->in_handler--;
    gh_store_read_end(lp0->reader);
    if (rc == 0 && ctx.deferred) { /* against the flag's contract */
        if (ctx.free_arg)
            ctx.free_arg(ctx.arg);
        rc = gh_op_fail(&ctx, GH_EINTERNAL, "'%s' cannot write from loop 0", h->def->name);
    }
    if (rc != 0)
        gh__pending_finish(h->p, rc, ctx.msg, NULL);
    else if (ctx.pending == NULL)
        gh__pending_finish(h->p, 0, NULL, ctx.resp);
    json_decref(ctx.resp);
done:
    json_decref(h->req);
    free(h);
}

/* Hands p to loop 0 (GH_OPF_LOOP0); 0, or a GH_E* code with p untouched. */
static int hop_to_loop0(gh_conn *c, gh_pending *p, const gh_opctx *ctx, const gh_op_def *def)
{
    hop *h;
    GH_ASSERT(ctx->freq == NULL); /* a loop-0 op is never GH_OPF_FLAT */
    if ((h = calloc(1, sizeof(*h))) == NULL)
        return GH_ENOMEM;
    h->req = json_deep_copy(ctx->req);
    if (h->req == NULL) {
        free(h);
        return GH_ENOMEM;
    }
    h->srv = c->srv;
    h->p = p;
    h->def = def;
    h->rank = ctx->rank;
    h->frontend = ctx->frontend;
    h->peer_uid = ctx->peer_uid;
    snprintf(h->peer, sizeof(h->peer), "%s", ctx->peer);
    snprintf(h->peerkey, sizeof(h->peerkey), "%s", ctx->peerkey);
    snprintf(h->actor, sizeof(h->actor), "%s", ctx->actor);
    h->now = ctx->now;
    p->state = GH_REQ_HASHING; /* off this loop (on loop 0) until its answer is posted */
    if ((def->flags & GH_OPF_ARGON2) && !(def->flags & GH_OPF_UNORDERED_WRITE))
        barrier_take(c, p, 1); /* like any op that pends and may write after */
    gh__loop_post(&c->srv->loops[0], &h->post, hop_run, h);
    return 0;
}

/* The reply object of a request: the loop keeps one that came back empty
 * (fixed-shape replies never fill it) for the next request, instead of an
 * allocation and a wiped free per request. */
static json_t *resp_take(gh_loop *lp)
{
    json_t *r = lp->spare_resp;
    if (r == NULL)
        return json_object();
    lp->spare_resp = NULL;
    return r;
}

static void resp_give(gh_loop *lp, json_t *r)
{
    if (r != NULL && lp->spare_resp == NULL && r->refcount == 1 && json_object_size(r) == 0)
        lp->spare_resp = r;
    else
        json_decref(r);
}

static void execute(gh_conn *c, gh_pending *p, const char *line, size_t len, const reqv *rv,
                    const gh_op_def *def)
{
    gh_server *srv = c->srv;
    gh_opctx ctx;
    gh_txn *txn = NULL;
    json_t *resp = NULL;
    int rc;

    int optimistic = c->barriers > 0; /* earlier writes of c are not durable yet */

    GH_ASSERT(p->state == GH_REQ_PARSED && gh__loop_self() == c->lp);
    p->state = GH_REQ_RUNNING;
    memset(&ctx, 0, sizeof(ctx));
    ctx.srv = srv;
    ctx.cfg = srv->cfg;
    ctx.authz = c->lp->authz; /* the loop's own: no lock */
    ctx.req = rv->j;
    ctx.freq = rv->flat ? &rv->f : NULL;
    ctx.rank = c->admin ? GH_PEER_ADMIN : c->service ? GH_PEER_SERVICE : GH_PEER_ANY;
    ctx.frontend = c->frontend;
    ctx.peer_uid = c->uid;
    ctx.peer = c->peer;
    ctx.peerkey = c->peerkey;
    ctx.now = (int64_t)time(NULL);
    size_t alen = strnlen(c->peer, sizeof(c->peer));
    if (alen > sizeof(ctx.actor) - 1)
        alen = sizeof(ctx.actor) - 1;
    memcpy(ctx.actor, c->peer, alen); /* what snprintf("%s") did, without printf */
    ctx.actor[alen] = '\0';

    rc = gh_store_read_begin(c->lp->reader, &txn);
    if (rc != 0) {
        gh__pending_finish(p, rc, "cannot open a read transaction", NULL);
        return;
    }
    ctx.txn = txn;

    /* the NSS socket answers its lookups and ping only (server/ops_nss.c) */
    if (c->nss_only && !gh__op_nss_allowed(def)) {
        rc = gh_op_fail(&ctx, GH_EPERM, "the NSS socket answers nss.* lookups only");
        goto done;
    }
    /* identify: a token in "auth" may raise the request's rank */
    gh_fval auth;
    if (gh_arg_view(&ctx, "auth", &auth) == 0) {
        int trank = GH_PEER_ANY;
        if ((rc = token_rank(&ctx, &auth, &trank)) != 0)
            goto done;
        if (trank > ctx.rank)
            ctx.rank = trank;
    }
    ctx.admin = ctx.rank >= GH_PEER_ADMIN;
    /* authorize */
    if ((rc = authorize(&ctx, def)) != 0)
        goto done;
    if ((def->flags & GH_OPF_LOOP0) && c->lp != &srv->loops[0]) {
        /* execute, on loop 0 */
        if ((rc = hop_to_loop0(c, p, &ctx, def)) != 0)
            rc = gh_op_fail(&ctx, rc, "out of memory");
        gh_store_read_end(c->lp->reader);
        if (rc != 0)
            gh__pending_finish(p, rc, ctx.msg, NULL);
        return;
    }
    /* execute */
    resp = resp_take(c->lp);
    ctx.resp = resp;
    ctx.request_ = p; /* gh_op_pend hands it out */
    c->lp->in_handler++;
    rc = def->fn(&ctx);
    c->lp->in_handler--;
    GH_ASSERT(ctx.pending == NULL || rc == 0);
done:
    gh_store_read_end(c->lp->reader);
    if (rc != 0) {
        if (ctx.deferred && ctx.free_arg)
            ctx.free_arg(ctx.arg);
        resp_give(c->lp, resp);
        if (optimistic)            /* it may have failed on the stale snapshot: retry */
            park(c, p, line, len); /* once c's earlier writes are durable */
        else
            gh__pending_finish(p, rc, ctx.msg, NULL);
        return;
    }
    if (!ctx.deferred && ctx.pending == NULL) {
        gh__pending_finish(p, 0, NULL, resp);
        resp_give(c->lp, resp);
        return;
    }
    resp_give(c->lp, resp); /* a deferred or pending request answers later */
    if (ctx.pending != NULL) {
        /* The handler completes p itself (Argon2, an upstream bind). Until
         * its write reaches the writer, later requests wait (read-your-
         * writes), unless the op writes nothing they could name. A fan-out
         * already with the writer (gh_op_write_part) holds later reads. */
        if (p->state == GH_REQ_WRITING) {
            barrier_take(c, p, 0);
        } else if (p->state != GH_REQ_DONE) {
            GH_ASSERT(def->flags & GH_OPF_ARGON2);
            if (!(def->flags & GH_OPF_UNORDERED_WRITE))
                barrier_take(c, p, 1);
        }
        return;
    }
    /* A deferred write reaches the writer now, ahead of anything later, so
     * later plain writes may follow it; its reads wait until it is durable. */
    barrier_take(c, p, 0);
    gh_op_write(p, ctx.actor, ctx.apply, ctx.reply, ctx.free_arg, ctx.arg);
}

/* The request id as the reply echoes it. */
static json_t *fval_json(const gh_fval *v)
{
    switch (v->type) {
    case GH_FV_STRING:
        return json_stringn(v->s, v->len);
    case GH_FV_INT:
        return json_integer((json_int_t)v->i);
    case GH_FV_TRUE:
        return json_true();
    case GH_FV_FALSE:
        return json_false();
    default:
        return json_null();
    }
}

/* The flat reading of a hot op's line: 0 with rv->flat set, or 1 to read
 * the line with jansson (not flat, or not an op that takes it). */
static int decode_flat(gh_pending *p, const char *line, size_t len, reqv *rv)
{
    const gh_fval *op, *id;
    int idx;

    if (gh_freq_parse(&rv->f, line, len) != 0)
        return 1;
    op = gh_freq_get(&rv->f, "op");
    idx = op != NULL && op->type == GH_FV_STRING ? find_op(op->s) : -1;
    if (idx < 0 || !(table[idx].def->flags & GH_OPF_FLAT)) {
        gh_freq_free(&rv->f);
        return 1;
    }
    id = gh_freq_get(&rv->f, "id");
    if (id != NULL && p->id == NULL && (p->id = fval_json(id)) == NULL) {
        gh_freq_free(&rv->f);
        return 1; /* out of memory: jansson's path answers it */
    }
    p->op = idx;
    rv->flat = 1;
    return 0;
}

/* decode: the line becomes a request (rv) and an op: 0, or -1 when p has
 * been answered with the error. */
static int decode(gh_conn *c, gh_pending *p, const char *line, size_t len, reqv *rv)
{
    json_error_t jerr;
    const char *why = NULL;
    json_t *req;
    int rc;

    rv->j = NULL; /* rv->f is gh_freq_parse's to fill (2 KiB: not cleared here) */
    rv->flat = 0;
    if (line == NULL) {
        gh__pending_finish(p, GH_ETOOBIG, "request line longer than max_request bytes", NULL);
        return -1;
    }
    if (memchr(line, '\0', len) != NULL) {
        gh__pending_finish(p, GH_EBADREQ, "NUL byte in request", NULL);
        return -1;
    }
    rc = scan_shape(line, len, GH_MAX_DEPTH, c->srv->cfg->max_request_elements, &why);
    if (rc != 0) {
        char msg[GH_ERRMSG_MAX];
        if (rc == GH_EBADREQ)
            snprintf(msg, sizeof(msg), "JSON nested deeper than %d levels", GH_MAX_DEPTH);
        else
            snprintf(msg, sizeof(msg), "request holds more than %zu values (max_request_elements)",
                     c->srv->cfg->max_request_elements);
        gh__pending_finish(p, rc, msg, NULL);
        return -1;
    }
    if (decode_flat(p, line, len, rv) == 0)
        return 0;
    /* jansson allocates from the loop's arena while it parses (no malloc
     * per value); the tree is freed with the request, the arena reset then */
    int in_arena = gh_jarena_begin(&c->lp->jarena) == 0;
    req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (in_arena)
        gh_jarena_end(&c->lp->jarena);
    if (req == NULL) {
        char msg[GH_ERRMSG_MAX];
        snprintf(msg, sizeof(msg), "invalid JSON at column %d: %s", jerr.column, jerr.text);
        gh__pending_finish(p, GH_EBADREQ, msg, NULL);
        return -1;
    }
    if (!json_is_object(req)) {
        gh__pending_finish(p, GH_EBADREQ, "a request must be a JSON object", NULL);
        goto fail;
    }
    json_t *id = json_object_get(req, "id");
    if (id != NULL && p->id == NULL) {
        if (json_is_object(id) || json_is_array(id)) {
            gh__pending_finish(p, GH_EBADREQ, "'id' must be a string, number, boolean or null",
                               NULL);
            goto fail;
        }
        p->id = json_deep_copy(id); /* outlives the request: not in the arena */
        if (p->id == NULL) {
            gh__pending_finish(p, GH_ENOMEM, "out of memory", NULL);
            goto fail;
        }
    }
    json_t *op = json_object_get(req, "op");
    if (!json_is_string(op)) {
        gh__pending_finish(p, GH_EBADREQ, "'op' is missing or not a string", NULL);
        goto fail;
    }
    int idx = find_op(json_string_value(op));
    if (idx < 0) {
        char msg[GH_ERRMSG_MAX];
        snprintf(msg, sizeof(msg), "unknown operation '%.64s'", json_string_value(op));
        gh__pending_finish(p, GH_EUNKNOWNOP, msg, NULL);
        goto fail;
    }
    p->op = idx;
    rv->j = req;
    return 0;
fail:
    json_decref(req);
    return -1;
}

/* The request's tree is gone (or was never built): the arena is wiped and
 * rewound. A value kept past its request would pin it (jansson then falls
 * back to malloc). */
static void arena_reset(gh_loop *lp)
{
    if (lp->jarena.used > 0 && gh_jarena_reset(&lp->jarena) == GH_EINUSE)
        GH_LOGD("dispatch: a request value outlived its request (jansson arena pinned)");
}

/* Runs one decoded request now. */
static void start(gh_conn *c, gh_pending *p, const char *line, size_t len)
{
    reqv rv;
    if (decode(c, p, line, len, &rv) == 0) {
        execute(c, p, line, len, &rv, table[p->op].def);
        reqv_free(&rv);
    }
    arena_reset(c->lp); /* also after a refused line: its bytes are wiped now */
}

void gh__dispatch_line(gh_conn *c, const char *line, size_t len)
{
    gh_pending *p;

    GH_ASSERT(c->lp->in_handler == 0); /* no handler, completion or close parses */
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        gh__conn_close(c);
        return;
    }
    p->conn = c;
    p->op = -1;
    p->t0 = uv_hrtime();
    p->state = GH_REQ_PARSED;
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    c->npending++;

    if (line != NULL && (c->nparked > 0 || c->barriers > 0)) {
        /* Behind held requests everything waits (order); behind writes
         * only plain writes may run. The op is known only after decoding,
         * so a line that may have to wait is decoded now and kept as text. */
        reqv rv;
        if (decode(c, p, line, len, &rv) == 0) {
            if (c->nparked > 0 || must_wait(c, table[p->op].def))
                park(c, p, line, len);
            else
                execute(c, p, line, len, &rv, table[p->op].def);
            reqv_free(&rv);
        }
        arena_reset(c->lp);
        return;
    }
    start(c, p, line, len);
}

void gh__resume_parked(gh_conn *c)
{
    GH_ASSERT(c->lp->in_handler == 0); /* the flush phase's, never a handler's */
    /* slots stay linked until the next flush, so p->next stays valid */
    for (gh_pending *p = c->head; p != NULL && c->nparked > 0 && !c->closing; p = p->next) {
        if (p->state != GH_REQ_PARKED)
            continue;
        if (must_wait(c, table[p->op].def))
            break;
        size_t len;
        char *line = unpark(c, p, &len);
        start(c, p, line, len);
        wipe_free(line, len);
        if (p->state == GH_REQ_PARKED) /* failed optimistically again: wait */
            break;
    }
}
