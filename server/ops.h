/*
 * ops.h: how an operation of the protocol is written.
 *
 * A request moves through named steps (server/dispatch.c): decode -> identify
 * the peer -> authorize the op -> execute -> log. "Execute" calls the op's
 * handler on the loop thread with a read snapshot (c->txn) that is valid only
 * during the call. A handler either
 *   - answers at once: adds its fields to c->resp and returns 0, or returns a
 *     GH_E* code with a message in c->msg (gh_op_fail), or
 *   - defers a write: calls gh_op_defer(c, apply, reply, free, arg) and
 *     returns 0. apply(txn, arg) later runs on the writer thread inside a
 *     nested write txn (it may run more than once: depend only on arg);
 *     reply(arg, resp) runs on the loop thread after the commit is durable and
 *     adds the success fields; free(arg) releases arg in every case.
 *   - or goes asynchronous in its own way (auth: Argon2 on the thread pool) by
 *     taking c->pending (gh_op_pend) and completing it with gh_op_complete.
 * Handlers never block: no fsync, no Argon2, no network.
 */
#ifndef GH_OPS_H
#define GH_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "authz/authz.h"
#include "schema/store.h"
#include "server/config.h"
#include "server/freq.h"

struct gh_server;
struct gh_pending;

typedef struct gh_opctx {
    struct gh_server *srv;
    const gh_config *cfg;
    gh_authz *authz;
    gh_txn *txn;         /* read snapshot, valid during the handler call only */
    json_t *req;         /* the request object (borrowed); NULL when freq holds it */
    const gh_freq *freq; /* a GH_OPF_FLAT op's flat reading (borrowed), or NULL */
    json_t *resp;        /* success fields go here (borrowed) */
    int admin;           /* the peer may call admin operations (rank == GH_PEER_ADMIN) */
    int rank;            /* enum gh_peer_rank of the peer for this request */
    int frontend;        /* a trusted front-end: may name its end client ("client") */
    uid_t peer_uid;      /* (uid_t)-1 for TCP peers */
    const char *peer;    /* "uid:1000" or "tcp:127.0.0.1", for logs */
    const char *peerkey; /* what lockout and limits key on ("tcp:loopback" for 127/8) */
    char actor[96];      /* change-log actor: "uid:0", "user:alice" */
    int64_t now;         /* wall clock seconds */
    int importing;       /* a record of import: users may precede their groups */
    char msg[GH_ERRMSG_MAX];
    /* set by gh_op_defer */
    int deferred;
    gh_store_write_fn apply;
    int (*reply)(void *arg, json_t *resp);
    void (*free_arg)(void *arg);
    void *arg;
    /* set by gh_op_pend */
    struct gh_pending *pending;
    struct gh_pending *request_; /* internal: this request's reply slot */
} gh_opctx;

typedef int (*gh_op_fn)(gh_opctx *c);

/* Who may call an op (docs/SECURITY.md has the table). An op that declares
 * nothing is GH_CLASS_ADMIN: the table fails closed. A peer's class is the
 * highest it holds: from its socket credentials, or from the token it
 * presents as "auth". */
enum gh_op_class {
    GH_CLASS_ADMIN = 0, /* administrators only (the default) */
    GH_CLASS_PUBLIC,    /* every peer: ping, auth, whoami, logout */
    GH_CLASS_SUBJECT,   /* every peer, about the user of a token it presents */
    GH_CLASS_SERVICE,   /* service peers (and admins), about any user */
};
/* The rank of a peer: what it holds, compared with >=. */
enum gh_peer_rank { GH_PEER_ANY = 0, GH_PEER_SERVICE = 1, GH_PEER_ADMIN = 2 };

enum {
    GH_OPF_ADMIN = 0, /* kept for readability: admin is the default class */
    /* A plain deferred write whose apply re-validates everything inside the
     * write txn: it may run behind the connection's earlier writes without
     * waiting for them (a failure against the stale snapshot is retried
     * once they are durable). Reads, and writes that answer from the
     * snapshot (import), wait instead. */
    GH_OPF_WRITE = 1u << 1,
    /* Pends first (Argon2, an upstream bind) and may write afterwards: until
     * its write reaches the writer, every later request of the connection
     * waits (a hard barrier)... */
    GH_OPF_ARGON2 = 1u << 2,
    /* ...unless what it writes is nothing a pipelined request can name yet
     * (auth's new token): then it waits like a read and holds no barrier. */
    GH_OPF_UNORDERED_WRITE = 1u << 3,
    /* The handler runs on loop 0 whichever loop owns the connection: for
     * ops that use what only loop 0's thread may touch (the sync module,
     * a backup in progress). It answers, or pends and completes later on
     * loop 0 (the completion is posted to the connection's loop); it never
     * defers a write. (A high bit: other branches take 4-7.) */
    GH_OPF_LOOP0 = 1u << 8,
    /* Callable on the NSS socket (server/ops_nss.c); public everywhere.
     * (A high bit: main's GH_OPF_ARGON2 / _UNORDERED_WRITE take 2 and 3.) */
    GH_OPF_NSS = 1u << 6,
    /* The handler reads its arguments through gh_arg_* only, never c->req:
     * a flat request (server/freq.h) reaches it without jansson. */
    GH_OPF_FLAT = 1u << 9,
};

typedef struct gh_op_def {
    const char *name;
    gh_op_fn fn;
    unsigned flags;
    enum gh_op_class cls; /* omitted: GH_CLASS_ADMIN */
} gh_op_def;

/* Op tables, one per source file; server/dispatch.c concatenates them. */
extern const gh_op_def
    gh__ops_core[]; /* server/ops_core.c: ping, auth, whoami, logout, stats, audit */
extern const gh_op_def gh__ops_user[]; /* server/ops_user.c: user.*, group.*, dump, import */
extern const gh_op_def gh__ops_io[];   /* server/ops_io.c: dump, import */
extern const gh_op_def
    gh__ops_authz[]; /* server/ops_authz.c: role.*, grant, revoke, bindings, check... */
extern const gh_op_def gh__ops_sync[];    /* server/ops_sync.c: sync.status, sync.run */
extern const gh_op_def gh__ops_session[]; /* server/ops_session.c: session.list, session.revoke */
extern const gh_op_def gh__ops_backup[];  /* server/ops_backup.c: backup */
extern const gh_op_def gh__ops_nss[];     /* server/ops_nss.c: nss.* (passwd and group lookups) */
extern const gh_op_def gh__ops_passwd[];  /* server/ops_passwd.c: passwd.change */
/* Whether a connection of the NSS socket may call def (nss.* and ping). */
int gh__op_nss_allowed(const gh_op_def *def);

/* Sets c->msg (printf-style) and returns err. */
int gh_op_fail(gh_opctx *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int gh_op_defer(gh_opctx *c, gh_store_write_fn apply, int (*reply)(void *arg, json_t *resp),
                void (*free_arg)(void *arg), void *arg);

/* Field readers: 0, GH_ENOTFOUND when absent and optional (out untouched),
 * or GH_EINVAL with c->msg set (missing when required, wrong type, too long,
 * out of range). Strings are borrowed from c->req. */
/* The member key of the request, from whichever reading holds it (jansson's
 * tree or the flat one): 0 with *out filled (type GH_FV_OTHER for a real,
 * an object or an array), or GH_ENOTFOUND. */
int gh_arg_view(const gh_opctx *c, const char *key, gh_fval *out);
/* The string member key, or NULL (absent or not a string): never fails. */
const char *gh_arg_peek(const gh_opctx *c, const char *key);
int gh_arg_str(gh_opctx *c, const char *key, int required, size_t maxlen, const char **out);
int gh_arg_int(gh_opctx *c, const char *key, int required, int64_t min, int64_t max, int64_t *out);
int gh_arg_bool(gh_opctx *c, const char *key, int required, int *out);
/* A name field validated with gh_schema_name_valid. */
int gh_arg_name(gh_opctx *c, const char *key, int required, const char **out);

/* Protocol objects for records (new references). */
json_t *gh_json_user(const gh_user *u);
json_t *gh_json_group(const gh_group *g);
/* server/ops_authz.c: {"name","description","allow","deny","parents",...} and
 * {"id","role","user"|"group","scope","created"}. */
json_t *gh_json_role(const gh_role *r);
json_t *gh_json_binding(gh_txn *txn, const gh_binding *b);
/* Resolves a user by name or by {"token"} in the request: used by check. */
int gh_op_resolve_subject(gh_opctx *c, uint64_t *user_id);

/* Success fields written straight into the reply line (server/reply.c), in
 * call order and before any field of c->resp: the fast way for fixed-shape
 * answers (check, whoami, ping). Only for a handler that answers at once;
 * strings are copied (a snapshot's bytes may be passed). */
void gh_op_reply_bool(gh_opctx *c, const char *key, int v);
void gh_op_reply_int(gh_opctx *c, const char *key, int64_t v);
void gh_op_reply_string(gh_opctx *c, const char *key, const char *s, size_t len);
void gh_op_reply_bools(gh_opctx *c, const char *key, const int *v, size_t n);

/* Asynchronous completion for handlers that neither answer nor defer. */
struct gh_pending *gh_op_pend(gh_opctx *c);
/* The one deferred-write path, for a request that pended (gh_op_pend) and
 * now writes: apply runs on the writer; after the commit is durable
 * reply(arg, resp) adds the success fields and the request completes;
 * free_arg(arg) runs in every case. On a submit failure p is answered with
 * the error at once and the code returned. */
int gh_op_write(struct gh_pending *p, const char *actor, gh_store_write_fn apply,
                int (*reply)(void *arg, json_t *resp), void (*free_arg)(void *arg), void *arg);
/* The same path for a request that fans out into several writes (import):
 * each part's done(cbarg, rc, err) runs on the connection's loop; the
 * handler answers p (gh__pending_finish) when the last part is back. 0, or
 * the submit error (that part was not handed over). */
int gh_op_write_part(struct gh_pending *p, const char *actor, gh_store_write_fn apply, void *arg,
                     void (*done)(void *cbarg, int rc, const char *err), void *cbarg);
/* Completes the request later on the loop thread: rc 0 with resp fields, or
 * an error code and message. Takes ownership of resp (may be NULL). */
void gh_op_complete(struct gh_pending *p, int rc, const char *msg, json_t *resp);

#endif
