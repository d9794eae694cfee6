/*
 * gatehouse.h: libgatehouse, the C client library of the Gatehouse server.
 *
 * This is the one installed header. It speaks protocol version 1 of
 * docs/PROTOCOL.md (one JSON object per line over a UNIX stream socket) and
 * hides the framing, pipelining and reconnection. What a reader must know
 * before changing it: every name here is ABI. Add functions and enumerators,
 * never change or remove one; bump GH_LT_VERSION in configure.ac as libtool
 * prescribes.
 *
 * Threads: the library has no global state. A gh_client is one connection and
 * must be used by one thread at a time; give each thread its own gh_client
 * (they are cheap: one socket and two buffers).
 *
 * Errors: every function that can fail returns 0 (or a documented
 * non-negative result) on success and a negative GH_ERR_* status otherwise.
 * The server's error codes keep the numbers of the protocol table; the stable
 * string code ("not_found") and the server's message of the last failure are
 * kept on the connection (gh_client_error_code, gh_client_error_message).
 *
 * Secrets: the library wipes every buffer of its own that held a password or
 * a token before it frees or reuses it. Wiping the caller's copies (and the
 * strings inside a json_t the caller built) is the caller's business.
 *
 * Example (compile with `cc ex.c $(pkg-config --cflags --libs gatehouse)`):
 *
 *     gh_client *c;
 *     if (gh_client_new(&c, NULL) < 0)
 *         return 1;
 *     int rc = gh_check(c, "alice", "deploy", "service/billing");
 *     if (rc < 0)
 *         fprintf(stderr, "%s: %s\n", gh_client_error_code(c), gh_client_error_message(c));
 *     else
 *         puts(rc ? "allow" : "deny");
 *     gh_client_free(c);
 */
#ifndef GATEHOUSE_H
#define GATEHOUSE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Socket used when gh_client_new gets NULL and $GATEHOUSE_SOCKET is unset or
 * empty: the installed server's, $(runstatedir)/gatehouse/gatehoused.sock
 * (make install writes configure's value here). A libgatehouse loaded from
 * its build tree uses the source checkout's ./var/gatehoused.sock instead. */
#ifndef GH_CLIENT_DEFAULT_SOCKET
#define GH_CLIENT_DEFAULT_SOCKET "/run/gatehouse/gatehoused.sock"
#endif
#define GH_CLIENT_SOCKET_ENV "GATEHOUSE_SOCKET"

/* Default limit of one response line (gh_client_set_max_response). */
#define GH_CLIENT_DEFAULT_MAX_RESPONSE (64u * 1024 * 1024)

#define GH_CLIENT_PROTOCOL 1
#define GH_CLIENT_NAME_MAX 64          /* user, group and role names, in bytes */
#define GH_CLIENT_TOKEN_MAX 127        /* a token is 43 characters today; buffers of 128 are safe */
#define GH_CLIENT_CHECK_BATCH_MAX 1000 /* per request; gh_check_batch splits longer lists */

/*
 * Status codes. -1..-18 are the server's codes of docs/PROTOCOL.md (same
 * numbers as the server's own table); -100 and below happen in the client.
 */
typedef enum gh_status {
    GH_ERR_BAD_REQUEST = -1,         /* "bad_request" */
    GH_ERR_UNKNOWN_OP = -2,          /* "unknown_op" */
    GH_ERR_NOT_FOUND = -3,           /* "not_found" */
    GH_ERR_EXISTS = -4,              /* "exists" */
    GH_ERR_INVALID_ARGUMENT = -5,    /* "invalid_argument" */
    GH_ERR_PERMISSION_DENIED = -6,   /* "permission_denied" */
    GH_ERR_INVALID_CREDENTIALS = -7, /* "invalid_credentials" */
    GH_ERR_ACCOUNT_LOCKED = -8,      /* "account_locked" */
    GH_ERR_ACCOUNT_DISABLED = -9,    /* "account_disabled" */
    GH_ERR_RATE_LIMITED = -10,       /* "rate_limited" */
    GH_ERR_INVALID_TOKEN = -11,      /* "invalid_token" */
    GH_ERR_INTERNAL = -12,           /* "internal" */
    GH_ERR_CYCLE = -13,              /* "cycle" */
    GH_ERR_IN_USE = -14,             /* "in_use" */
    GH_ERR_TOO_LARGE = -15,          /* "too_large" */
    GH_ERR_STORAGE_FULL = -16,       /* "storage_full" */
    GH_ERR_VERSION_MISMATCH = -17,   /* "version_mismatch" */
    GH_ERR_UNAVAILABLE = -18,        /* "unavailable" */

    GH_ERR_SERVER_OTHER = -99,     /* a server code this library does not know (a newer server);
                                      gh_client_error_code still returns the server's string */
    GH_ERR_CONNECT = -100,         /* "connect_failed": the server could not be reached */
    GH_ERR_CONNECTION_LOST = -101, /* "connection_lost": the connection broke after this
                                      request was sent; it may or may not have been applied */
    GH_ERR_PROTOCOL = -102,        /* "protocol_error": a response that is not protocol v1,
                                      or one longer than the receive limit */
    GH_ERR_NOMEM = -103,           /* "out_of_memory" */
    GH_ERR_USAGE = -104,           /* "bad_usage": wrong use of this library (NULL argument,
                                      gh_call while pipelined responses are pending, ...) */
    GH_ERR_TIMEOUT = -105          /* "timeout": no response within gh_client_set_timeout */
} gh_status;

typedef struct gh_client gh_client;

/* ---- connections ---- */

/* Creates a client for socket_path (NULL: $GATEHOUSE_SOCKET, then
 * GH_CLIENT_DEFAULT_SOCKET). Does not connect: the connection is made on first
 * use (or by gh_client_connect). 0, GH_ERR_NOMEM or GH_ERR_USAGE (path too
 * long for a UNIX socket). */
int gh_client_new(gh_client **out, const char *socket_path);
/* Closes the connection and frees everything, wiping buffers. NULL is a no-op.
 * Responses still pending are dropped. */
void gh_client_free(gh_client *c);
/* Connects now (if not connected) so that an unreachable server shows up
 * early. 0 or GH_ERR_CONNECT. */
int gh_client_connect(gh_client *c);
/* Closes the socket; the next call reconnects. Pending requests that were
 * written and are not safe to repeat fail with GH_ERR_CONNECTION_LOST. */
void gh_client_disconnect(gh_client *c);
const char *gh_client_socket_path(const gh_client *c);

/* Per-wait limit in milliseconds for a response (0, the default: wait
 * forever). After a timeout the connection is dropped (a late answer would
 * desynchronise it) and the request fails with GH_ERR_TIMEOUT. */
int gh_client_set_timeout(gh_client *c, int timeout_ms);
/* Longest accepted response line in bytes (default
 * GH_CLIENT_DEFAULT_MAX_RESPONSE); a longer one fails with GH_ERR_PROTOCOL
 * (and drops the connection when it is still arriving). */
int gh_client_set_max_response(gh_client *c, size_t bytes);
/* Reconnect transparently when the connection broke (default on). When off,
 * a broken connection fails every pending request. */
int gh_client_set_reconnect(gh_client *c, int enabled);
/* Token sent as "auth" with every request that has none (admin by token,
 * PROTOCOL.md "Who may call what"); NULL clears it. The copy is wiped on
 * replacement and on gh_client_free. */
int gh_client_set_token(gh_client *c, const char *token);

/* ---- errors of the last failed call on this client ---- */

/* The last status (0 after a success). */
int gh_client_error(const gh_client *c);
/* Stable string code of the last failure: the server's code ("not_found")
 * or the client's ("connect_failed"); "" after a success. */
const char *gh_client_error_code(const gh_client *c);
/* Human message of the last failure (the server's message when it answered). */
const char *gh_client_error_message(const gh_client *c);
/* Stable string of a status ("not_found", "connect_failed", "ok" for 0). */
const char *gh_client_status_code(int status);
/* Inverse for the server's codes; GH_ERR_SERVER_OTHER for an unknown one. */
int gh_client_status_from_code(const char *code);
/* Library version string ("0.1.0"). */
const char *gh_client_version(void);

/* ---- typed calls (no pipelined request may be pending) ---- */

/* ping: 0 and the server's protocol number (if protocol != NULL). */
int gh_ping(gh_client *c, int *protocol);

/* auth: verifies user's password. On success returns 0, copies the token
 * (NUL-terminated) into token[tokenlen] and sets *expires_at (may be NULL).
 * ttl_s 0 = the server's default lifetime. Failure: GH_ERR_INVALID_CREDENTIALS,
 * GH_ERR_ACCOUNT_LOCKED, GH_ERR_ACCOUNT_DISABLED, GH_ERR_RATE_LIMITED, ...
 * token is cleared on failure. Never repeated after a broken connection. */
int gh_auth(gh_client *c, const char *user, const char *password, unsigned ttl_s, char *token,
            size_t tokenlen, int64_t *expires_at);

typedef struct gh_identity {
    char user[GH_CLIENT_NAME_MAX + 1];
    int64_t expires_at;
    int admin;
} gh_identity;

/* whoami: the holder of token. 0 or GH_ERR_INVALID_TOKEN, ... */
int gh_whoami(gh_client *c, const char *token, gh_identity *out);
/* logout: revokes token. 0 or GH_ERR_INVALID_TOKEN, ... */
int gh_logout(gh_client *c, const char *token);
/* logout_all (admin, "session.revoke"): ends every session (token) of user,
 * e.g. after a suspected compromise; *revoked (may be NULL) gets how many.
 * 0, GH_ERR_NOT_FOUND (no such user), GH_ERR_PERMISSION_DENIED, ... */
int gh_logout_all(gh_client *c, const char *user, unsigned *revoked);

/* check: may user do action on resource? 1 allowed, 0 denied, negative on
 * error (GH_ERR_NOT_FOUND for an unknown user). */
int gh_check(gh_client *c, const char *user, const char *action, const char *resource);
/* The same for the holder of a token (GH_ERR_INVALID_TOKEN if unknown). */
int gh_check_token(gh_client *c, const char *token, const char *action, const char *resource);

typedef struct gh_check_item {
    const char *action;
    const char *resource;
} gh_check_item;

/* check.batch: results[i] = 1 (allowed) or 0 for each of the n items. Lists
 * longer than GH_CLIENT_CHECK_BATCH_MAX are split into pipelined requests.
 * 0 or a negative status. */
int gh_check_batch(gh_client *c, const char *user, const gh_check_item *items, size_t n,
                   int *results);
int gh_check_batch_token(gh_client *c, const char *token, const gh_check_item *items, size_t n,
                         int *results);

/* ---- generic calls ---- */

/* Sends request (a JSON object with "op"; the library keeps no reference) and
 * waits for its response. *response receives the response object whenever
 * the server answered (release it with json_decref), NULL otherwise. Returns
 * 0 when the server answered "ok":true, the server's negative code when it
 * answered "ok":false, or a client status. No pipelined request may be
 * pending. */
int gh_call(gh_client *c, json_t *request, json_t **response);

/*
 * Pipelining: gh_send queues requests (writing them when the buffer grows),
 * gh_recv returns their responses one at a time in the order sent. Between
 * gh_send and the matching gh_recv the library keeps the request's bytes, so
 * that after a broken connection it can send again, on a new connection, the
 * requests that were not written yet and the read-only ones (get, list,
 * check, ...). A written request that changes state is never sent twice: its
 * gh_recv fails with GH_ERR_CONNECTION_LOST. Responses are buffered while
 * requests are written, so a long pipeline never deadlocks; keep the number
 * of requests in flight bounded (some thousands) to bound memory.
 */
int gh_send(gh_client *c, json_t *request);
/* Writes every queued request now (gh_recv does it too). */
int gh_flush(gh_client *c);
/* The next response, as gh_call. GH_ERR_USAGE when nothing is pending. */
int gh_recv(gh_client *c, json_t **response);
/* Requests sent whose response has not been returned by gh_recv yet. */
size_t gh_client_pending(const gh_client *c);

#ifdef __cplusplus
}
#endif

#endif
