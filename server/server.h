/*
 * server.h: gatehoused's context, loop and connection structs (internal to
 * server/).
 *
 * gatehoused runs loop_threads libuv loops (server/loop.c). Each connection
 * belongs to the loop that adopted it and is touched only by that loop's
 * thread; so is everything in its gh_loop (connection lists, read handle,
 * authz cache, counters). Loop 0 is the main thread's: it also owns the
 * listeners, signals, housekeeping, the writer's and the sync workers'
 * completions, and what is in gh_server but not marked otherwise. Other
 * threads (writer, libuv pool, sync workers, other loops) reach a loop only
 * through gh__loop_post. Fields of gh_server shared by every loop say how
 * they are guarded. A connection is freed only in its close callback and only
 * when no request of it is still pending (Argon2 job, write in flight): see
 * conn.c.
 */
#ifndef GH_SERVER_H
#define GH_SERVER_H

#include "gh-config.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <uv.h>

#include "authz/authz.h"
#include "schema/store.h"
#include "server/config.h"
#include "server/tls.h"
#include "server/jarena.h"
#include "server/ops.h"
#include "server/reply.h"
#include "server/writer.h"
#include "sync/sync.h"

#define GH_VERSION_STRING PACKAGE_VERSION
#define GH_MAX_DEPTH 32
#define GH_CONN_MAX_PENDING 4096 /* requests in flight per connection before reads pause */
#define GH_CONN_MAX_PARKED 256   /* requests held behind writes before reads pause */
#define GH_FLUSH_ROUNDS 8        /* flush passes per loop phase before yielding to I/O */
#define GH_NSS_IDLE_MS 10000     /* idle NSS-socket connections are closed after this */
#define GH_LAT_BUCKETS 160       /* 0-7 us exact, then 4 sub-buckets per power of two */
#define GH_LOOPS_MAX 64          /* loop_threads maximum */

struct gh_conn;
struct gh_loop;

/* A message for a loop from any thread (gh__loop_post). It lives in the
 * sender's own struct, so posting never allocates and cannot fail; it must
 * not be posted again before its fn ran. */
typedef struct gh_post {
    struct gh_post *next;
    void (*fn)(void *arg);
    void *arg;
} gh_post;

/* A request's one state. Each transition has its own function in dispatch.c
 * (gh__req_*), and the connection's counters follow from the states:
 *   npending = requests not DONE; nparked = PARKED; barriers = requests
 *   holding a barrier (a write not yet durable), hard_barriers = of those,
 *   the ones not yet handed to the writer (Argon2 first).
 *
 *   PARSED -> PARKED (waits behind the connection's writes) -> PARSED
 *   PARSED -> RUNNING (its handler, on the connection's loop)
 *   RUNNING -> HASHING (off the loop: Argon2 on the pool, an upstream bind
 *     on the sync threads, or a GH_OPF_LOOP0 handler on loop 0) -> DONE
 *   HASHING -> WRITING (a write after Argon2) -> DONE
 *   RUNNING -> WRITING (deferred write) -> DONE;  RUNNING -> DONE
 * A request's handler never runs inside another's: gh_loop.in_handler is
 * asserted zero wherever input is read or parked requests resume. */
typedef enum gh_req_state {
    GH_REQ_PARSED = 0,
    GH_REQ_PARKED,
    GH_REQ_RUNNING,
    GH_REQ_HASHING,
    GH_REQ_WRITING,
    GH_REQ_DONE,
} gh_req_state;

/* One request's place in its connection's reply order ("gh_pending" in ops.h). */
typedef struct gh_pending {
    struct gh_pending *next;
    struct gh_conn *conn;
    gh_req_state state;
    json_t *id;      /* the request's id (owned ref) or NULL */
    int op;          /* index into the op table, -1 before decode */
    uint64_t t0;     /* uv_hrtime at decode, for latency stats */
    int barrier;     /* 0, or 1 (write queued) / 2 (write not queued yet): later requests wait */
    int secret;      /* the reply carries a secret (a token): wiped before it is freed */
    uv_work_t *work; /* queued Argon2 job, cancelled if the connection closes first */
    char *held;      /* PARKED: a copy of the request line (re-parsed when it runs) */
    size_t held_len;
    char *out; /* serialized reply line, once done */
    size_t outlen;
    gh_reply reply; /* fixed fields a handler wrote (gh_op_reply_*), consumed by
                       gh__pending_finish in the same loop pass */
    /* finished on another loop's thread: the finish is posted to the owner */
    gh_post xpost;
    int xrc;
    char *xmsg;
    json_t *xresp;
} gh_pending;

typedef struct gh_conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } h;
    uv_timer_t idle;
    struct gh_server *srv;
    struct gh_loop *lp;          /* the loop that owns it: every access is on its thread */
    struct gh_conn *prev, *next; /* the loop's connection list */
    struct gh_conn *dirty_next;  /* the loop's flush list */
    int dirty;
    char *in;
    size_t in_len, in_cap;
    gh_pending *head, *tail; /* replies in request order */
    unsigned npending;       /* requests not yet DONE */
    unsigned barriers;       /* writes in flight (read-your-writes) */
    unsigned hard_barriers;  /* of which not yet handed to the writer (Argon2 first) */
    unsigned nparked;        /* requests held behind those writes */
    size_t held_bytes;       /* bytes of the lines those requests keep */
    size_t out_bytes;        /* reply bytes queued in uv_write */
    size_t queued_bytes;     /* serialized replies waiting for their turn */
    unsigned handles_open;   /* stream + timer */
    int closing;
    int close_after_write; /* framing lost: close once replies are out */
    int eof;               /* the peer half-closed: answer, then close */
    int paused;
    int admin;
    int service;  /* a member of service_unix_group */
    int frontend; /* trusted front-end (admin or frontend_unix_group): may name "client" */
    int is_tcp;
    int nss_only; /* accepted on the NSS socket: nss.* and ping only; idle
                   * after GH_NSS_IDLE_MS (every process of the machine may
                   * keep one: they must not pile up) */
    uid_t uid;
    gid_t gid;
    char peer[64];            /* "uid:1000", "tcp:127.0.0.1" (for logs) */
    char peerkey[64];         /* what limits key on: "uid:1000", "tcp:loopback", "tcp:10.0.0.2" */
    uint64_t last_request_ms; /* the idle timeout counts from the last complete request */
    int peer_counted;         /* counted in the server's per-peer table (conn_start) */
    struct gh_tls *tls;       /* tcp_tls: the session; NULL in clear */
    gh_tls_buf tls_plain;     /* plaintext decrypted but not yet in `in` (in was full) */
    char *tls_rbuf;           /* ciphertext read buffer */
} gh_conn;

typedef struct gh_lat {
    uint64_t count, errors;
    uint64_t buckets[GH_LAT_BUCKETS]; /* microseconds, see gh__lat_bucket */
} gh_lat;

/* Lockout bookkeeping: one slot per keyed hash of (login, client), login, or
 * client. Attempts are counted when admitted, before any Argon2 runs. */
typedef struct gh_fail {
    uint64_t key;      /* SipHash of the key string under srv->fail_key; 0 = empty */
    unsigned failures; /* admitted attempts not (yet) known to have succeeded */
    unsigned inflight; /* admitted attempts still verifying */
    uint64_t until_ms; /* refused until this monotonic time */
    uint64_t last_ms;
} gh_fail;

typedef struct gh_failtab {
    gh_fail *slots;
    size_t cap, used;
    uint64_t evicted; /* entries dropped because the table was full (logged) */
} gh_failtab;

/* One admitted password attempt (auth, passwd.change, LDAP bind): taken by
 * gh__lockout_admit, given back exactly once by gh__lockout_settle. */
typedef struct gh_admission {
    uint64_t user_key;  /* (login, client) */
    uint64_t login_key; /* login, any client: in-flight cap only */
    uint64_t peer_key;  /* client: spraying */
    int held;
    int busy; /* refused for the per-login in-flight cap (not for failures) */
} gh_admission;

/* Counters one thread writes and other threads read (stats): the owner adds
 * with GH_STAT_ADD (a relaxed load and store: no locked instruction), readers
 * use GH_STAT_GET. Counters several threads add to use GH_STAT_SHARED_ADD. */
#define GH_STAT_GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define GH_STAT_ADD(x, n)                                                                          \
    __atomic_store_n(&(x), __atomic_load_n(&(x), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define GH_STAT_SUB(x, n)                                                                          \
    __atomic_store_n(&(x), __atomic_load_n(&(x), __ATOMIC_RELAXED) - (n), __ATOMIC_RELAXED)
#define GH_STAT_SHARED_ADD(x, n) __atomic_fetch_add(&(x), (n), __ATOMIC_RELAXED)

/* One loop thread's world (server/loop.c). Only its thread touches it, but
 * the stats counters (read by any loop's stats op) and the post queue. */
typedef struct gh_loop {
    struct gh_server *srv;
    unsigned index;
    uv_loop_t *loop; /* loop 0: srv->loop; the others: &own */
    uv_loop_t own;
    uv_thread_t thread;
    int have_thread;
    gh_store_reader *reader; /* this thread's LMDB read handle */
    gh_authz *authz;         /* this thread's permission cache (no locks) */
    json_t *spare_resp;      /* an empty reply object kept for the next request */
    gh_jarena jarena;        /* jansson's allocations while this loop parses a request */
    int in_handler;          /* an op handler is running: no input, no resume (asserted) */

    gh_conn *conns;  /* connections this loop owns */
    unsigned nconns; /* written with GH_STAT_ADD/SUB: stats reads it */
    gh_conn *dirty;
    uv_check_t flush_check;
    uv_prepare_t flush_prepare;
    uv_idle_t flush_idle; /* running while flush work is left over: the loop must not sleep */
    uv_async_t wake;      /* posts arrived */
    int have_handles;
    int stopping; /* draining: no new input, idle connections closed */
    int drained;  /* stopping and no connection left (told loop 0) */

    pthread_mutex_t post_mu; /* guards the queue only */
    gh_post *post_head, *post_tail;
    gh_post m_stop, m_force, m_close, m_drained; /* loop 0's shutdown messages */
    gh_post m_pause;                             /* gh__loops_quiesce */

    /* stats: GH_STAT_ADD by this loop, GH_STAT_GET by any */
    uint64_t conns_total, conns_rejected;
    gh_lat *lat;              /* one per op in the table */
    gh_authz_stats authz_pub; /* this loop's authz counters, published by its flush phase */
} gh_loop;

/* Connections open per peer key, for max_connections_per_peer (all loops). */
typedef struct gh_peercount {
    char key[64];
    unsigned n;
} gh_peercount;

typedef struct gh_server {
    gh_config *cfg;
    const char *config_path;
    uv_loop_t *loop; /* loop 0's */
    gh_store *store;
    gh_store_reader *reader; /* loop 0's (loops[0].reader): for code that runs on loop 0 only */
    gh_writer *writer;
    gh_authz *authz; /* loop 0's (loops[0].authz) */
    gh_sync *sync;
    struct gh_ldap_srv *ldap; /* ldap_conn.c */

    gh_loop *loops; /* loop_threads of them; [0] runs on the main thread */
    unsigned nloops;
    unsigned accept_next;       /* loop 0: round-robin position of the acceptor */
    unsigned loops_drained;     /* loop 0: loops that finished draining */
    int loop_close_failed;      /* a loop still had a handle open when it was closed */
    pthread_mutex_t quiesce_mu; /* gh__loops_quiesce's rendezvous */
    pthread_cond_t quiesce_cv;
    unsigned quiesce_paused;
    int quiesce_done;

    uv_pipe_t unix_listener;
    uv_tcp_t tcp_listener;
    gh_tls_ctx *tcp_tls;    /* tcp_tls = yes: the JSON TCP listener's TLS context */
    uv_pipe_t nss_listener; /* cfg->nss_socket, mode 0666 (server/ops_nss.c) */
    int have_unix, have_tcp, have_nss;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t housekeeping;
    uv_timer_t shutdown_timer;
    /* loop 0: map_resident_max (server/memtrim.c) */
    uv_timer_t memtrim;
    int have_memtrim;
    unsigned long memtrim_base; /* file pages resident right after the last trim */

    unsigned nconns;  /* every loop's (atomic): max_connections */
    int stopping;     /* loop 0: 0 running, 1 draining connections, 2 done */
    int have_handles; /* loop 0: housekeeping, shutdown timer are open */
    int have_signals;

    gid_t admin_gid, service_gid, frontend_gid;
    int have_admin_gid, have_service_gid, have_frontend_gid;
    /* read-only once the loops run */
    uint8_t token_key[32];
    char dummy_verifier[GH_VERIFIER_MAX + 1];
    unsigned argon2_inflight; /* every loop's Argon2 jobs (atomic, gh__argon2_take) */

    pthread_mutex_t peers_mu; /* guards peers (accept and close only) */
    gh_peercount *peers;
    size_t npeers, peers_cap;

    pthread_mutex_t fail_mu; /* guards the three tables (auth admission only) */
    gh_failtab user_fails;   /* (login, client) */
    gh_failtab login_fails;  /* login */
    gh_failtab peer_fails;   /* client */
    uint8_t fail_key[16];    /* SipHash key of the tables (random per start) */

    /* stats: shared counters (GH_STAT_SHARED_ADD); per-loop ones are in gh_loop */
    uint64_t started;
    uint64_t auth_ok, auth_fail, auth_limited;
    uint64_t auth_verifications, auth_upstream_binds;
    size_t nops;

    /* operations: backup in progress (ops_backup.c), metrics listener (metrics.c) */
    struct gh_backup *backup;
    struct gh_metrics *metrics;
} gh_server;

/* dispatch.c */
/* Latency histogram buckets: exact below 8 us, then four per power of two
 * (a bucket's bound is within 25% of any value in it). */
unsigned gh__lat_bucket(uint64_t us);
uint64_t gh__lat_bucket_upper(unsigned b);
int gh__dispatch_init(gh_server *srv);
/* The latency histograms of one loop (nops of them), zeroed. */
gh_lat *gh__lat_new(const gh_server *srv);
void gh__dispatch_line(gh_conn *c, const char *line, size_t len);
const gh_op_def *gh__op_at(size_t i);
const gh_op_def *gh__op_find(const char *name); /* NULL: no such op */
size_t gh__op_count(void);
/* Finishes p with either an error (rc < 0) or resp's fields: serializes the
 * reply, marks p DONE and its connection dirty; the flush phase writes it. */
void gh__pending_finish(gh_pending *p, int rc, const char *msg, json_t *resp);
/* Frees a slot (its reply written or dropped), wiping what may be secret. */
void gh__pending_free(gh_pending *p);
/* A JSON string of an error message, with invalid UTF-8 replaced by '?'. */
json_t *gh__message_json(const char *msg);
/* Runs the requests held behind a connection's writes, as far as allowed
 * (flush phase only: it runs handlers). */
void gh__resume_parked(gh_conn *c);
/* The user of a token (0) or GH_ETOKEN. gh__token_hot reads the hot index in
 * place (strings valid during the txn); gh__token_user copies id, name, uid,
 * state and tombstone into u (other fields empty). */
int gh__token_hot(gh_server *srv, gh_txn *txn, const char *token, int64_t now, gh_user_hot *u,
                  int64_t *expires);
int gh__token_user(gh_server *srv, gh_txn *txn, const char *token, int64_t now, gh_user *u,
                   int64_t *expires);
int gh__user_is_admin(gh_server *srv, gh_txn *txn, uint64_t user_id);

/* conn.c */
int gh__listen(gh_server *srv);
void gh__listen_stop(gh_server *srv);
void gh__conn_close(gh_conn *c);
void gh__conn_mark_dirty(gh_conn *c);
/* A request of c completed: counts it and marks c dirty (never reads). */
void gh__conn_request_done(gh_conn *c);
/* The flush phase of one loop: for every dirty connection, resume parked
 * requests, write finished replies in order, read and parse held-back input,
 * close when done. */
void gh__flush_all(gh_loop *lp);
/* lp starts draining: reading stops, idle connections close. */
void gh__close_idle_for_shutdown(gh_loop *lp);
/* Closes every connection of lp (the shutdown deadline passed). */
void gh__close_all(gh_loop *lp);
/* Makes an accepted stream socket (fd, owned from here on) a connection of
 * lp, on lp's thread: credentials, classes, limits, then reading. */
void gh__conn_adopt(gh_loop *lp, int fd, int is_tcp, int nss_only);
/* Wraps an already-connected UNIX stream socket as a connection of a peer with
 * these credentials, as if it had been accepted (in-process harnesses: the fuzz
 * targets), on loop 0. 0: the connection owns fd; GH_EUNAVAIL: refused like an
 * accepted peer over max_connections (told so, fd closed); other codes: fd
 * still the caller's. */
int gh__conn_attach_fd(gh_server *srv, int fd, uid_t uid, gid_t gid, int admin);

/* auth.c */
int gh__auth_init(gh_server *srv);
void gh__auth_fini(gh_server *srv);
/* Hashes password on the thread pool; cb(arg, rc, verifier) on the loop.
 * password is copied and wiped; rc GH_ERATE when the Argon2 queue is full. */
typedef void (*gh_hash_cb)(void *arg, int rc, const char *verifier);
int gh__hash_password(gh_server *srv, const char *password, size_t len, gh_hash_cb cb, void *arg);
/* A slot of the server-wide Argon2 bound (argon2_queue_max, every loop's
 * jobs): 0 taken, or GH_ERATE; gh__argon2_give returns it. */
int gh__argon2_take(gh_server *srv);
void gh__argon2_give(gh_server *srv);
/* Takes an Argon2 slot and queues a password attempt's Argon2 job on loop,
 * counting it in auth.verifications (every front-end verifies through it):
 * 0, GH_ERATE (queue full) or GH_EINTERNAL. */
int gh__verify_queue(gh_server *srv, uv_loop_t *loop, uv_work_t *w, uv_work_cb work,
                     uv_after_work_cb after);
/* The rehash write-back (new cost, or an offline copy after an upstream
 * bind): stores rehash as the user's verifier only if the stored one is
 * still `verified` (compare-and-set; a reset that raced the login wins).
 * 0 also when nothing was written. */
int gh__auth_rehash_apply(gh_txn *txn, uint64_t user_id, const char *verified, const char *rehash);
/* Token helpers: encode 32 random bytes as 43 base64url chars, keyed hash. */
int gh__token_hash(gh_server *srv, const char *token, uint8_t hash[GH_TOKEN_HASH_BYTES]);
void gh__housekeeping(gh_server *srv);
int gh__op_auth(gh_opctx *c); /* the auth operation */
/* Lockout admission, shared by every password check (auth, passwd.change,
 * LDAP binds, upstream binds): the client key is the peer, or for a trusted
 * front-end the end client it names. admit counts the attempt at once and
 * returns GH_ERATE when a delay runs or the login has too many checks in
 * flight; settle gives the admission back exactly once (success clears the
 * login's count for that client). */
#define GH_CLIENT_MAX 128                           /* "client" field, bytes */
#define GH_CLIENT_KEY_MAX (64 + GH_CLIENT_MAX + 16) /* peerkey/client:... */
void gh__lockout_client(const gh_opctx *c, const char *client, char *out, size_t outlen);
int gh__lockout_admit(gh_server *srv, const char *login, const char *client, gh_admission *a);
void gh__lockout_settle(gh_server *srv, gh_admission *a, int success);
/* Verifies a password like auth (lockout, upstream, Argon2 on the pool) but
 * issues no token: cb(arg, 0, user) on success, else a GH_E* code and NULL.
 * Returns GH_ERATE at once when locked out or the queue is full. */
typedef void (*gh_verify_cb)(void *arg, int rc, const gh_user *u);
int gh__auth_verify(gh_server *srv, const char *name, const char *peer, const char *pw,
                    size_t pwlen, gh_verify_cb cb, void *arg);

/* server.c */
int gh__open_store(gh_config *cfg, gh_store **store);
/* Store, writer, authz, sync and loop handles; no listeners, no signals. */
int gh__server_open(gh_server *srv, gh_config *cfg, uv_loop_t *loop);
void gh__server_shutdown(gh_server *srv);
void gh__maybe_finish_shutdown(gh_server *srv);
void gh__server_close(gh_server *srv);

/* loop.c */
/* The loops: loop 0 on the given uv loop (the caller's thread), the others
 * with their own uv loop, read handle and authz; threads not started yet. */
int gh__loops_open(gh_server *srv, uv_loop_t *loop0);
/* Starts loops 1..N-1 on their threads. */
int gh__loops_start(gh_server *srv);
/* Loop 0: every loop starts draining (gh__close_idle_for_shutdown on its own
 * thread); each reports to loop 0 once it has no connection left. */
void gh__loops_stop(gh_server *srv);
/* Loop 0: the shutdown deadline passed, every loop closes its connections. */
void gh__loops_force_close(gh_server *srv);
/* Loop 0, once every loop drained and the writer stopped: the loops close
 * their handles and their threads end. */
void gh__loops_close_handles(gh_server *srv);
/* Joins the threads, closes their uv loops (srv->loop_close_failed when a
 * handle was left open), frees the readers, authz caches and counters. */
void gh__loops_free(gh_server *srv);
/* A connection of lp went away: when lp is draining and has none left, it
 * tells loop 0 (once). */
void gh__loop_check_drained(gh_loop *lp);
/* Loop 0: runs fn(arg) while every other loop waits, so that fn may change
 * what the loops read without a lock (SIGHUP's reload of the configuration). */
void gh__loops_quiesce(gh_server *srv, void (*fn)(void *arg), void *arg);
/* The loop whose thread is calling (NULL on other threads). */
gh_loop *gh__loop_self(void);
void gh__loop_set_self(gh_loop *lp);
/* Runs fn(arg) on lp's thread: at once when called there, otherwise through
 * lp's queue (m is the message's storage, see gh_post). Any thread. */
void gh__loop_run_on(gh_loop *lp, gh_post *m, void (*fn)(void *arg), void *arg);
void gh__loop_post(gh_loop *lp, gh_post *m, void (*fn)(void *arg), void *arg);
/* gh_writer_submit for any loop: done(cbarg, rc, err) runs on the loop that
 * submitted (the writer itself completes on loop 0). For writes a request
 * waits for (its connection keeps the loop from stopping); a write nobody
 * waits for uses gh_writer_submit and completes on loop 0. */
int gh__submit_write(gh_server *srv, const char *actor, gh_store_write_fn fn, void *arg,
                     gh_writer_done_cb done, void *cbarg);
/* Sums over every loop (relaxed atomic loads: a snapshot, not a cut). */
typedef struct gh_loop_sums {
    uint64_t conns_total, conns_rejected, requests;
    gh_authz_stats authz;
} gh_loop_sums;
void gh__loops_sum(gh_server *srv, gh_loop_sums *out);
/* One op's latency histogram summed over every loop (op < srv->nops). */
void gh__lat_sum(gh_server *srv, size_t op, gh_lat *out);
/* Requests one loop answered (its histograms' counts). */
uint64_t gh__loop_requests(const gh_loop *lp);
/* The number of loops to run for a loop_threads setting (0: one per CPU). */
unsigned gh__loops_wanted(const gh_config *cfg);

uint64_t gh__now_ms(void);

/* ops_backup.c: drops a backup in progress (waits for its local copy);
 * restore: `gatehoused --restore FILE` with the server stopped, 0 or 1. */
void gh__backup_stop(gh_server *srv);
int gh__restore(gh_config *cfg, const char *file);
/* ldap_conn.c: the LDAP listeners and their connections (srv->ldap). */
struct gh_ldap_srv;
int gh__ldap_start(gh_server *srv); /* no-op when ldap_listen is empty */
void gh__ldap_stop(gh_server *srv); /* stop listening, close connections */
int gh__ldap_busy(gh_server *srv);  /* connections still open */
void gh__ldap_free(gh_server *srv);
json_t *gh__ldap_stats(gh_server *srv);
/* What every front-end shares with the JSON listener (the LDAP one uses them):
 * conn.c: a peer's key for max_connections_per_peer and the lockout, the
 * same on every listener: "uid:N" for a UNIX peer (sa NULL), "tcp:loopback"
 * for every loopback address (any local process can pick any 127.x source),
 * else "tcp:ADDR"; peer (NULL: not wanted) gets "uid:N" or "tcp:ADDR" for
 * logs. gh__peer_add counts one more open connection of key (all listeners,
 * all loops) and returns how many are open; gh__peer_drop gives it back.
 * ops_passwd.c: a password change in a write txn: u (read in txn) gets
 * new_verifier only if its verifier is still expect (compare-and-set: the
 * password verified or read is still the password, else GH_ECREDS), and
 * every token of the user is revoked in the same txn; u's verifier is wiped. */
void gh__peer_key(const struct sockaddr *sa, uid_t uid, char *key, size_t keylen, char *peer,
                  size_t peerlen);
unsigned gh__peer_add(gh_server *srv, const char *key);
void gh__peer_drop(gh_server *srv, const char *key);
int gh__password_store(gh_txn *txn, gh_user *u, const char expect[GH_VERIFIER_MAX + 1],
                       const char new_verifier[GH_VERIFIER_MAX + 1], size_t *revoked);

#endif
