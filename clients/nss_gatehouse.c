/*
 * nss_gatehouse.c: libnss_gatehouse.so.2, glibc's "gatehouse" source for the
 * passwd and group databases (nsswitch.conf: "passwd: files gatehouse").
 *
 * The one thing to know: this code runs inside every process on the machine
 * that resolves a user or a group, so it must never hang, crash or surprise
 * it. No lock is ever held across socket I/O: a call borrows an idle
 * connection from a small pool (or opens its own when every pooled one is
 * busy), so N threads against a hung server each wait one deadline at the
 * same time, not N deadlines in turn, and fork() never waits behind a call.
 * Every call is bounded by a short deadline (os_client.c); when the server
 * does not answer in time the answer is NSS_STATUS_UNAVAIL so that "files"
 * keeps working, and for GH_NSS_DOWN_MS afterwards every thread answers
 * UNAVAIL at once without trying (a shared atomic timestamp, as SSSD's
 * client does), so that `id` or a busy daemon does not pay one deadline per
 * lookup. A child after fork() drops every pooled connection (pthread_atfork
 * plus a pid check). Inside gatehoused itself
 * (_GATEHOUSE_NSS_LOOPS set) it answers UNAVAIL at once rather than asking
 * the server that is asking. Only the _nss_gatehouse_* entry points are
 * exported (nss_gatehouse.map).
 *
 * A buffer too small for an entry is ERANGE + NSS_STATUS_TRYAGAIN, and glibc
 * calls again with a larger one; in enumeration the entry is then not
 * consumed.
 */
#include <errno.h>
#include <grp.h>
#include <nss.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "clients/os_client.h"

#ifndef GH_NSS_SOCKET_DEFAULT
#define GH_NSS_SOCKET_DEFAULT "/run/gatehouse/nss.sock"
#endif
#define GH_NSS_TIMEOUT_MS 3000
#define GH_NSS_DOWN_MS 5000 /* after a timeout: answer UNAVAIL at once this long */
#define POOL_SLOTS 8        /* connections kept per process */
#define GH_NSS_LOOP_ENV "_GATEHOUSE_NSS_LOOPS"
#define NAME_MAX_BYTES 64
#define ENUM_PAGE 500

#define EXPORT __attribute__((visibility("default")))

/* The entry points glibc looks up by name (no header declares them). */
EXPORT enum nss_status _nss_gatehouse_getpwnam_r(const char *, struct passwd *, char *, size_t,
                                                 int *);
EXPORT enum nss_status _nss_gatehouse_getpwuid_r(uid_t, struct passwd *, char *, size_t, int *);
EXPORT enum nss_status _nss_gatehouse_getgrnam_r(const char *, struct group *, char *, size_t,
                                                 int *);
EXPORT enum nss_status _nss_gatehouse_getgrgid_r(gid_t, struct group *, char *, size_t, int *);
EXPORT enum nss_status _nss_gatehouse_initgroups_dyn(const char *, gid_t, long int *, long int *,
                                                     gid_t **, long int, int *);
EXPORT enum nss_status _nss_gatehouse_setpwent(int);
EXPORT enum nss_status _nss_gatehouse_endpwent(void);
EXPORT enum nss_status _nss_gatehouse_getpwent_r(struct passwd *, char *, size_t, int *);
EXPORT enum nss_status _nss_gatehouse_setgrent(int);
EXPORT enum nss_status _nss_gatehouse_endgrent(void);
EXPORT enum nss_status _nss_gatehouse_getgrent_r(struct group *, char *, size_t, int *);

/* Neither lock is ever held across socket I/O. Lock order: enum_lock, then
 * pool_lock. */
static pthread_mutex_t enum_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* A slot is empty (fd -1, not busy), idle (fd open, not busy) or lent to a
 * call (busy). A call that finds no idle slot takes an empty one, or when
 * all are busy uses a connection of its own, closed after the call. */
typedef struct slot {
    gh_os_conn conn;
    int busy;
} slot;
static slot pool[POOL_SLOTS]; /* fds set to -1 by init_once */

/* CLOCK_MONOTONIC ms until which calls answer UNAVAIL without trying. */
static _Atomic int64_t down_until;

/* Enumeration state (glibc serializes set/get/end per database). gen moves
 * on every reset, so a page fetched across a reset is thrown away. */
typedef struct enum_state {
    json_t *page; /* array of entries, or NULL */
    size_t idx;
    char next[NAME_MAX_BYTES + 1]; /* cursor for the next page ("" = none) */
    int started, ended;
    unsigned gen;
} enum_state;

static enum_state pw_enum, gr_enum;

static void enum_reset(enum_state *e)
{
    unsigned gen = e->gen + 1;
    json_decref(e->page);
    memset(e, 0, sizeof(*e));
    e->gen = gen;
}

/* Fork: both locks are only ever held for a few instructions, so taking
 * them here never waits behind a call. The child closes its copies of every
 * pooled connection: the idle ones so that it never shares a stream with
 * its parent, the busy ones because the threads that borrowed them do not
 * exist in the child. (A call's own overflow connection is close-on-exec
 * and left to the child's exit.) */
static void at_prepare(void)
{
    pthread_mutex_lock(&enum_lock);
    pthread_mutex_lock(&pool_lock);
}

static void at_parent(void)
{
    pthread_mutex_unlock(&pool_lock);
    pthread_mutex_unlock(&enum_lock);
}

static void at_child(void)
{
    for (int i = 0; i < POOL_SLOTS; i++) {
        gh_os_close(&pool[i].conn);
        pool[i].busy = 0;
    }
    atomic_store(&down_until, 0);
    pthread_mutex_unlock(&pool_lock);
    pthread_mutex_unlock(&enum_lock);
}

static void init_once(void)
{
    for (int i = 0; i < POOL_SLOTS; i++)
        gh_os_init(&pool[i].conn);
    pthread_atfork(at_prepare, at_parent, at_child);
}

static int64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A pooled connection to use (idle first, then an empty slot), or NULL when
 * every slot is busy. */
static slot *borrow(void)
{
    slot *s = NULL;
    pthread_mutex_lock(&pool_lock);
    for (int i = 0; i < POOL_SLOTS && s == NULL; i++)
        if (!pool[i].busy && pool[i].conn.fd >= 0)
            s = &pool[i];
    for (int i = 0; i < POOL_SLOTS && s == NULL; i++)
        if (!pool[i].busy)
            s = &pool[i];
    if (s != NULL)
        s->busy = 1;
    pthread_mutex_unlock(&pool_lock);
    return s;
}

static void give_back(slot *s)
{
    pthread_mutex_lock(&pool_lock);
    s->busy = 0;
    pthread_mutex_unlock(&pool_lock);
}

static const char *socket_path(void)
{
    const char *p = secure_getenv("GATEHOUSE_NSS_SOCKET");
    return p && p[0] ? p : GH_NSS_SOCKET_DEFAULT;
}

/* One request: NSS_STATUS_SUCCESS with *resp, NOTFOUND, or UNAVAIL. */
static enum nss_status call(json_t *req, json_t **resp, int *errnop)
{
    enum nss_status st;
    int rc;
    *resp = NULL;
    if (req == NULL) {
        *errnop = ENOMEM;
        return NSS_STATUS_TRYAGAIN;
    }
    if (getenv(GH_NSS_LOOP_ENV) != NULL) {
        json_decref(req);
        *errnop = ENOENT;
        return NSS_STATUS_UNAVAIL;
    }
    pthread_once(&once, init_once);
    int64_t t0 = clock_ms();
    if (t0 < atomic_load(&down_until)) {
        rc = GH_OS_UNAVAIL; /* the server did not answer a moment ago */
    } else {
        slot *s = borrow();
        gh_os_conn own;
        gh_os_init(&own);
        rc = gh_os_call(s ? &s->conn : &own, socket_path(), GH_NSS_TIMEOUT_MS, req, resp);
        if (s != NULL)
            give_back(s);
        else
            gh_os_close(&own);
        /* the whole deadline spent: a hung server, not a missing one (that
         * one answers ECONNREFUSED at once) */
        int64_t t1 = clock_ms();
        if (rc == GH_OS_UNAVAIL && t1 - t0 >= GH_NSS_TIMEOUT_MS)
            atomic_store(&down_until, t1 + GH_NSS_DOWN_MS);
    }
    json_decref(req);
    switch (rc) {
    case GH_OS_OK:
        return NSS_STATUS_SUCCESS;
    case GH_OS_ERROR:
        st = strcmp(gh_os_error_code(*resp), "not_found") == 0 ? NSS_STATUS_NOTFOUND
                                                               : NSS_STATUS_UNAVAIL;
        *errnop = st == NSS_STATUS_NOTFOUND ? ENOENT : EAGAIN;
        break;
    case GH_OS_NOMEM:
        *errnop = ENOMEM;
        st = NSS_STATUS_TRYAGAIN;
        break;
    default:
        *errnop = ENOENT;
        st = NSS_STATUS_UNAVAIL;
        break;
    }
    json_decref(*resp);
    *resp = NULL;
    return st;
}

/* ---- copying into the caller's buffer ---- */

typedef struct arena {
    char *p;
    size_t left;
} arena;

static char *put_str(arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    if (n > a->left)
        return NULL;
    char *d = a->p;
    memcpy(d, s, n);
    a->p += n;
    a->left -= n;
    return d;
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static int jid(json_t *o, const char *key, uint32_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
        return -1;
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

static enum nss_status fill_passwd(json_t *e, struct passwd *pw, char *buf, size_t buflen,
                                   int *errnop)
{
    arena a = {buf, buflen};
    uint32_t uid, gid;
    if (!json_is_object(e) || jid(e, "uid", &uid) != 0 || jid(e, "gid", &gid) != 0) {
        *errnop = ENOENT;
        return NSS_STATUS_UNAVAIL;
    }
    pw->pw_uid = uid;
    pw->pw_gid = gid;
    /* "*", not "x": "x" sends pam_unix's account check to /etc/shadow, where
     * it finds nothing and answers AUTHINFO_UNAVAIL (SSSD does the same) */
    if ((pw->pw_name = put_str(&a, jstr(e, "name"))) == NULL ||
        (pw->pw_passwd = put_str(&a, "*")) == NULL ||
        (pw->pw_gecos = put_str(&a, jstr(e, "gecos"))) == NULL ||
        (pw->pw_dir = put_str(&a, jstr(e, "home"))) == NULL ||
        (pw->pw_shell = put_str(&a, jstr(e, "shell"))) == NULL) {
        *errnop = ERANGE;
        return NSS_STATUS_TRYAGAIN;
    }
    return NSS_STATUS_SUCCESS;
}

static enum nss_status fill_group(json_t *e, struct group *gr, char *buf, size_t buflen,
                                  int *errnop)
{
    json_t *members = json_object_get(e, "members");
    uint32_t gid;
    if (!json_is_object(e) || jid(e, "gid", &gid) != 0 || !json_is_array(members)) {
        *errnop = ENOENT;
        return NSS_STATUS_UNAVAIL;
    }
    size_t n = json_array_size(members);
    /* the member pointer array first, aligned */
    uintptr_t mis = (uintptr_t)buf % sizeof(char *);
    size_t pad = mis ? sizeof(char *) - mis : 0;
    if (buflen < pad || (buflen - pad) / sizeof(char *) < n + 1) {
        *errnop = ERANGE;
        return NSS_STATUS_TRYAGAIN;
    }
    char **mem = (char **)(void *)(buf + pad);
    arena a = {buf + pad + (n + 1) * sizeof(char *), buflen - pad - (n + 1) * sizeof(char *)};
    gr->gr_gid = gid;
    if ((gr->gr_name = put_str(&a, jstr(e, "name"))) == NULL ||
        (gr->gr_passwd = put_str(&a, "*")) == NULL)
        goto erange;
    for (size_t i = 0; i < n; i++) {
        const char *m = json_string_value(json_array_get(members, i));
        if ((mem[i] = put_str(&a, m ? m : "")) == NULL)
            goto erange;
    }
    mem[n] = NULL;
    gr->gr_mem = mem;
    return NSS_STATUS_SUCCESS;
erange:
    *errnop = ERANGE;
    return NSS_STATUS_TRYAGAIN;
}

static int name_ok(const char *name)
{
    return name != NULL && name[0] != '\0' && strlen(name) <= NAME_MAX_BYTES;
}

/* ---- passwd ---- */

static enum nss_status pw_lookup(json_t *req, struct passwd *pw, char *buf, size_t buflen,
                                 int *errnop)
{
    json_t *resp;
    enum nss_status st = call(req, &resp, errnop);
    if (st != NSS_STATUS_SUCCESS)
        return st;
    st = fill_passwd(json_object_get(resp, "passwd"), pw, buf, buflen, errnop);
    json_decref(resp);
    return st;
}

EXPORT enum nss_status _nss_gatehouse_getpwnam_r(const char *name, struct passwd *pw, char *buf,
                                                 size_t buflen, int *errnop)
{
    if (!name_ok(name)) {
        *errnop = ENOENT;
        return NSS_STATUS_NOTFOUND;
    }
    return pw_lookup(json_pack("{s:s, s:s}", "op", "nss.getpwnam", "name", name), pw, buf, buflen,
                     errnop);
}

EXPORT enum nss_status _nss_gatehouse_getpwuid_r(uid_t uid, struct passwd *pw, char *buf,
                                                 size_t buflen, int *errnop)
{
    if (uid == 0) {
        *errnop = ENOENT;
        return NSS_STATUS_NOTFOUND;
    }
    return pw_lookup(json_pack("{s:s, s:I}", "op", "nss.getpwuid", "uid", (json_int_t)uid), pw, buf,
                     buflen, errnop);
}

/* ---- group ---- */

static enum nss_status gr_lookup(json_t *req, struct group *gr, char *buf, size_t buflen,
                                 int *errnop)
{
    json_t *resp;
    enum nss_status st = call(req, &resp, errnop);
    if (st != NSS_STATUS_SUCCESS)
        return st;
    st = fill_group(json_object_get(resp, "group"), gr, buf, buflen, errnop);
    json_decref(resp);
    return st;
}

EXPORT enum nss_status _nss_gatehouse_getgrnam_r(const char *name, struct group *gr, char *buf,
                                                 size_t buflen, int *errnop)
{
    if (!name_ok(name)) {
        *errnop = ENOENT;
        return NSS_STATUS_NOTFOUND;
    }
    return gr_lookup(json_pack("{s:s, s:s}", "op", "nss.getgrnam", "name", name), gr, buf, buflen,
                     errnop);
}

EXPORT enum nss_status _nss_gatehouse_getgrgid_r(gid_t gid, struct group *gr, char *buf,
                                                 size_t buflen, int *errnop)
{
    if (gid == 0) {
        *errnop = ENOENT;
        return NSS_STATUS_NOTFOUND;
    }
    return gr_lookup(json_pack("{s:s, s:I}", "op", "nss.getgrgid", "gid", (json_int_t)gid), gr, buf,
                     buflen, errnop);
}

/* Adds the user's groups (except skip, the primary one glibc already has) to
 * *groupsp from *start, growing it up to limit (limit <= 0: no limit). */
EXPORT enum nss_status _nss_gatehouse_initgroups_dyn(const char *user, gid_t skip, long int *start,
                                                     long int *size, gid_t **groupsp,
                                                     long int limit, int *errnop)
{
    json_t *resp;
    if (!name_ok(user)) {
        *errnop = ENOENT;
        return NSS_STATUS_NOTFOUND;
    }
    enum nss_status st =
        call(json_pack("{s:s, s:s}", "op", "nss.initgroups", "user", user), &resp, errnop);
    if (st != NSS_STATUS_SUCCESS)
        return st;
    json_t *gids = json_object_get(resp, "gids"), *v;
    size_t i;
    json_array_foreach(gids, i, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > UINT32_MAX)
            continue;
        gid_t g = (gid_t)json_integer_value(v);
        if (g == skip)
            continue;
        int dup = 0;
        for (long int k = 0; k < *start && !dup; k++)
            dup = (*groupsp)[k] == g;
        if (dup)
            continue;
        if (*start == *size) {
            if (limit > 0 && *size >= limit)
                break; /* glibc's limit (NGROUPS_MAX): the rest is dropped */
            long int nsize = *size * 2 + 16;
            if (limit > 0 && nsize > limit)
                nsize = limit;
            gid_t *ng = realloc(*groupsp, (size_t)nsize * sizeof(gid_t));
            if (ng == NULL) {
                json_decref(resp);
                *errnop = ENOMEM;
                return NSS_STATUS_TRYAGAIN;
            }
            *groupsp = ng;
            *size = nsize;
        }
        (*groupsp)[(*start)++] = g;
    }
    json_decref(resp);
    return NSS_STATUS_SUCCESS;
}

/* ---- enumeration (only when the server has nss_enumerate = yes) ---- */

/* Makes sure e has an unread entry: SUCCESS, NOTFOUND at the end (or when
 * the server does not enumerate), UNAVAIL. Called with enum_lock held,
 * which it drops while a page is asked for. */
static enum nss_status enum_fill(enum_state *e, const char *db, int *errnop)
{
    while (e->page == NULL || e->idx >= json_array_size(e->page)) {
        if (e->ended || (e->started && e->next[0] == '\0')) {
            e->ended = 1;
            *errnop = ENOENT;
            return NSS_STATUS_NOTFOUND;
        }
        json_t *req =
            json_pack("{s:s, s:s, s:i}", "op", "nss.enumerate", "db", db, "limit", ENUM_PAGE);
        if (req != NULL && e->next[0] != '\0')
            json_object_set_new(req, "after", json_string(e->next));
        json_t *resp;
        unsigned gen = e->gen;
        pthread_mutex_unlock(&enum_lock);
        enum nss_status st = call(req, &resp, errnop);
        pthread_mutex_lock(&enum_lock);
        if (e->gen != gen) { /* reset meanwhile: that page is not wanted */
            json_decref(resp);
            continue;
        }
        if (st != NSS_STATUS_SUCCESS) {
            /* off on the server, or gone: no (more) entries from us */
            e->ended = 1;
            return st == NSS_STATUS_UNAVAIL ? st : NSS_STATUS_NOTFOUND;
        }
        json_decref(e->page);
        e->page = json_incref(json_object_get(resp, db));
        e->idx = 0;
        e->started = 1;
        const char *next = json_string_value(json_object_get(resp, "next"));
        if (next != NULL && strlen(next) <= NAME_MAX_BYTES)
            strcpy(e->next, next);
        else
            e->next[0] = '\0';
        json_decref(resp);
        if (!json_is_array(e->page)) {
            e->ended = 1;
            *errnop = ENOENT;
            return NSS_STATUS_UNAVAIL;
        }
    }
    return NSS_STATUS_SUCCESS;
}

EXPORT enum nss_status _nss_gatehouse_setpwent(int stayopen)
{
    (void)stayopen;
    pthread_mutex_lock(&enum_lock);
    enum_reset(&pw_enum);
    pthread_mutex_unlock(&enum_lock);
    return NSS_STATUS_SUCCESS;
}

EXPORT enum nss_status _nss_gatehouse_endpwent(void)
{
    return _nss_gatehouse_setpwent(0);
}

EXPORT enum nss_status _nss_gatehouse_getpwent_r(struct passwd *pw, char *buf, size_t buflen,
                                                 int *errnop)
{
    pthread_mutex_lock(&enum_lock);
    enum nss_status st = enum_fill(&pw_enum, "passwd", errnop);
    if (st == NSS_STATUS_SUCCESS) {
        st = fill_passwd(json_array_get(pw_enum.page, pw_enum.idx), pw, buf, buflen, errnop);
        if (st != NSS_STATUS_TRYAGAIN) /* ERANGE: the same entry again */
            pw_enum.idx++;
    }
    pthread_mutex_unlock(&enum_lock);
    return st;
}

EXPORT enum nss_status _nss_gatehouse_setgrent(int stayopen)
{
    (void)stayopen;
    pthread_mutex_lock(&enum_lock);
    enum_reset(&gr_enum);
    pthread_mutex_unlock(&enum_lock);
    return NSS_STATUS_SUCCESS;
}

EXPORT enum nss_status _nss_gatehouse_endgrent(void)
{
    return _nss_gatehouse_setgrent(0);
}

EXPORT enum nss_status _nss_gatehouse_getgrent_r(struct group *gr, char *buf, size_t buflen,
                                                 int *errnop)
{
    pthread_mutex_lock(&enum_lock);
    enum nss_status st = enum_fill(&gr_enum, "group", errnop);
    if (st == NSS_STATUS_SUCCESS) {
        st = fill_group(json_array_get(gr_enum.page, gr_enum.idx), gr, buf, buflen, errnop);
        if (st != NSS_STATUS_TRYAGAIN)
            gr_enum.idx++;
    }
    pthread_mutex_unlock(&enum_lock);
    return st;
}
