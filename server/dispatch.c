/*
 * dispatch.c: one request line through its named steps.
 *
 *   decode -> identify the peer -> authorize the op -> execute -> log
 *
 * Every line gets a gh_pending in its connection's reply queue before
 * anything can fail, so replies always come back in request order. Execute
 * runs the op's handler with a read snapshot that ends when the handler
 * returns; a handler that defers a write is completed by the writer's done
 * callback after the commit is durable. The reply is serialized at once and
 * written by the connection's next flush.
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

/* Sorted op table (built once, read-only afterwards: not mutable state). */
static opent *table;
static size_t ntable;

static int cmp_ops(const void *a, const void *b)
{
    return strcmp(((const opent *)a)->def->name, ((const opent *)b)->def->name);
}

int gh__dispatch_init(gh_server *srv)
{
    const gh_op_def *lists[] = {gh__ops_core, gh__ops_user, gh__ops_io,    gh__ops_authz,
                                gh__ops_sync, gh__ops_nss,  gh__ops_passwd};
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
    srv->lat = calloc(ntable, sizeof(*srv->lat));
    return srv->lat ? 0 : GH_ENOMEM;
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

static void record_latency(gh_server *srv, int op, uint64_t t0, int failed)
{
    if (op < 0 || (size_t)op >= srv->nops)
        return;
    gh_lat *l = &srv->lat[op];
    l->count++;
    l->buckets[gh__lat_bucket((uv_hrtime() - t0) / 1000)]++;
    if (failed)
        l->errors++;
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

void gh__pending_finish(gh_pending *p, int rc, const char *msg, json_t *resp)
{
    gh_conn *c = p->conn;
    json_t *out = json_object();

    if (p->id)
        json_object_set(out, "id", p->id);
    if (rc == 0) {
        json_object_set_new(out, "ok", json_true());
        if (resp)
            json_object_update(out, resp);
    } else {
        json_t *err = json_object();
        json_object_set_new(out, "ok", json_false());
        json_object_set_new(err, "code", json_string(gh_error_code(rc)));
        json_object_set_new(err, "message",
                            gh__message_json(msg && msg[0] ? msg : gh_strerror(rc)));
        json_object_set_new(out, "error", err);
    }
    char *s = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    size_t len = s ? strlen(s) : 0;
    char *line = s ? realloc(s, len + 2) : NULL;
    if (line == NULL) {
        free(s);
        static const char oom[] =
            "{\"ok\":false,\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        line = strdup(oom);
        len = line ? strlen(line) : 0;
        line = line ? realloc(line, len + 2) : NULL;
    }
    if (line) {
        line[len++] = '\n';
        line[len] = '\0';
    }
    p->out = line;
    p->outlen = line ? len : 0;
    c->queued_bytes += p->outlen;
    p->done = 1;
    int was_barrier = p->barrier;
    if (p->barrier) {
        if (p->barrier == 2)
            c->hard_barriers--;
        p->barrier = 0;
        c->barriers--;
    }
    record_latency(c->srv, p->op, p->t0, rc != 0);
    if (gh_log_enabled(GH_LOG_DEBUG)) {
        const gh_op_def *d = gh__op_at((size_t)p->op);
        GH_LOGD("%s %s -> %s (%lluus)", c->peer, d ? d->name : "?", rc ? gh_error_code(rc) : "ok",
                (unsigned long long)((uv_hrtime() - p->t0) / 1000));
    }
    /* decide before request_done: on a closing connection it may free c */
    int resume = was_barrier && c->nparked > 0 && !c->closing;
    gh__conn_request_done(c);
    if (resume)
        gh__resume_parked(c);
}

/* Nesting depth of a JSON text, outside strings; stops counting past max. */
static int too_deep(const char *s, size_t len, int max)
{
    int depth = 0, in_str = 0;
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
            if (++depth > max)
                return 1;
        } else if (ch == '}' || ch == ']') {
            depth--;
        }
    }
    return 0;
}

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

int gh__user_is_admin(gh_server *srv, gh_txn *txn, uint64_t user_id);

static void park(gh_conn *c, gh_pending *p, json_t *req)
{
    p->parked = json_incref(req);
    c->nparked++;
}

/* Whether a request must wait for its connection's writes: everything behind
 * a held request waits too (order), and only plain writes may run ahead. */
static int must_park(const gh_conn *c, const gh_op_def *def)
{
    return c->nparked > 0 || c->hard_barriers > 0 ||
           (c->barriers > 0 && !(def->flags & GH_OPF_WRITE));
}

static void execute(gh_conn *c, gh_pending *p, json_t *req, const gh_op_def *def)
{
    gh_server *srv = c->srv;
    gh_opctx ctx;
    gh_txn *txn = NULL;
    json_t *resp = NULL;
    int rc;

    int optimistic = c->barriers > 0; /* earlier writes of c are not durable yet */

    memset(&ctx, 0, sizeof(ctx));
    ctx.srv = srv;
    ctx.cfg = srv->cfg;
    ctx.authz = srv->authz;
    ctx.req = req;
    ctx.admin = c->admin;
    ctx.peer_uid = c->uid;
    ctx.peer = c->peer;
    ctx.now = (int64_t)time(NULL);
    snprintf(ctx.actor, sizeof(ctx.actor), "%s", c->peer);

    rc = gh_store_read_begin(srv->reader, &txn);
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
    /* identify: a token in "auth" may raise the request to admin */
    json_t *auth = json_object_get(req, "auth");
    if (auth != NULL) {
        gh_user u;
        int64_t exp;
        if (!json_is_string(auth)) {
            rc = gh_op_fail(&ctx, GH_EINVAL, "'auth' must be a token string");
            goto done;
        }
        rc = gh__token_user(srv, txn, json_string_value(auth), ctx.now, &u, &exp);
        if (rc != 0) {
            rc = gh_op_fail(&ctx, GH_ETOKEN, "the 'auth' token is invalid or expired");
            goto done;
        }
        if (gh__user_is_admin(srv, txn, u.id) == 1) {
            ctx.admin = 1;
            snprintf(ctx.actor, sizeof(ctx.actor), "user:%s", u.name);
        }
    }
    /* authorize */
    if ((def->flags & GH_OPF_ADMIN) && !ctx.admin) {
        rc = gh_op_fail(&ctx, GH_EPERM, "'%s' needs an administrator", def->name);
        goto done;
    }
    /* execute */
    resp = json_object();
    ctx.resp = resp;
    ctx.request_ = p; /* gh_op_pend hands it out */
    rc = def->fn(&ctx);
    GH_ASSERT(ctx.pending == NULL || rc == 0);
done:
    gh_store_read_end(srv->reader);
    if (rc != 0) {
        if (ctx.deferred && ctx.free_arg)
            ctx.free_arg(ctx.arg);
        json_decref(resp);
        if (optimistic)      /* it may have failed on the stale snapshot: retry */
            park(c, p, req); /* once c's earlier writes are durable */
        else
            gh__pending_finish(p, rc, ctx.msg, NULL);
        return;
    }
    if (!ctx.deferred && ctx.pending == NULL) {
        gh__pending_finish(p, 0, NULL, resp);
        json_decref(resp);
        return;
    }
    json_decref(resp); /* a deferred or pending request answers later */
    /* A request that writes holds back the connection's next reads until it
     * is durable, so a pipelined "add, then get" reads its own write. A
     * deferred write reaches the writer now, ahead of anything later, so
     * later plain writes may follow it; one that pends first (Argon2)
     * reaches the writer later, so everything behind it waits. auth is
     * exempt: what it writes (a token) no pipelined request can name yet. */
    if (!p->done && (ctx.deferred || def->fn != gh__op_auth)) {
        p->barrier = ctx.deferred ? 1 : 2;
        c->barriers++;
        if (p->barrier == 2)
            c->hard_barriers++;
    }
    if (!ctx.deferred)
        return; /* the handler completes p itself (Argon2, upstream bind) */
    wjob *j = calloc(1, sizeof(*j));
    int wrc = GH_ENOMEM;
    if (j != NULL) {
        j->p = p;
        j->reply = ctx.reply;
        j->free_arg = ctx.free_arg;
        j->arg = ctx.arg;
        wrc = gh_writer_submit(srv->writer, ctx.actor, ctx.apply, ctx.arg, on_write_done, j);
    }
    if (wrc != 0) {
        if (ctx.free_arg)
            ctx.free_arg(ctx.arg);
        free(j);
        gh__pending_finish(p, wrc, wrc == GH_ENOMEM ? NULL : "the server is shutting down", NULL);
    }
}

void gh__dispatch_line(gh_conn *c, const char *line, size_t len)
{
    gh_pending *p = calloc(1, sizeof(*p));
    json_t *req = NULL;
    json_error_t jerr;

    if (p == NULL) {
        gh__conn_close(c);
        return;
    }
    p->conn = c;
    p->op = -1;
    p->t0 = uv_hrtime();
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    c->npending++;

    /* decode */
    if (line == NULL) {
        gh__pending_finish(p, GH_ETOOBIG, "request line longer than max_request bytes", NULL);
        return;
    }
    if (memchr(line, '\0', len) != NULL) {
        gh__pending_finish(p, GH_EBADREQ, "NUL byte in request", NULL);
        return;
    }
    if (too_deep(line, len, GH_MAX_DEPTH)) {
        gh__pending_finish(p, GH_EBADREQ, "JSON nested deeper than 32 levels", NULL);
        return;
    }
    req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (req == NULL) {
        char msg[GH_ERRMSG_MAX];
        snprintf(msg, sizeof(msg), "invalid JSON at column %d: %s", jerr.column, jerr.text);
        gh__pending_finish(p, GH_EBADREQ, msg, NULL);
        return;
    }
    if (!json_is_object(req)) {
        gh__pending_finish(p, GH_EBADREQ, "a request must be a JSON object", NULL);
        goto done;
    }
    json_t *id = json_object_get(req, "id");
    if (id != NULL) {
        if (json_is_object(id) || json_is_array(id)) {
            gh__pending_finish(p, GH_EBADREQ, "'id' must be a string, number, boolean or null",
                               NULL);
            goto done;
        }
        p->id = json_incref(id);
    }
    json_t *op = json_object_get(req, "op");
    if (!json_is_string(op)) {
        gh__pending_finish(p, GH_EBADREQ, "'op' is missing or not a string", NULL);
        goto done;
    }
    int idx = find_op(json_string_value(op));
    if (idx < 0) {
        char msg[GH_ERRMSG_MAX];
        snprintf(msg, sizeof(msg), "unknown operation '%.64s'", json_string_value(op));
        gh__pending_finish(p, GH_EUNKNOWNOP, msg, NULL);
        goto done;
    }
    p->op = idx;
    if (must_park(c, table[idx].def))
        park(c, p, req);
    else
        execute(c, p, req, table[idx].def);
done:
    json_decref(req);
}

void gh__resume_parked(gh_conn *c)
{
    if (c->resuming || c->closing)
        return;
    c->resuming = 1;
    /* slots stay linked until the next flush, so p->next stays valid */
    for (gh_pending *p = c->head; p != NULL && c->nparked > 0; p = p->next) {
        if (p->parked == NULL)
            continue;
        const gh_op_def *def = table[p->op].def;
        if (c->hard_barriers > 0 || (c->barriers > 0 && !(def->flags & GH_OPF_WRITE)))
            break;
        json_t *req = p->parked;
        p->parked = NULL;
        c->nparked--;
        execute(c, p, req, def);
        json_decref(req);
        if (p->parked != NULL) /* failed optimistically again: wait */
            break;
    }
    c->resuming = 0;
    if (!c->closing)
        gh__conn_mark_dirty(c);
}
