/*
 * store_misc.c: metadata counters, the change log, tokens and per-upstream
 * sync state.
 *
 * The one thing to know: the change log is the audit trail and (later) the
 * replication stream, so an entry names what changed but never carries a
 * secret: no password, verifier or token ever goes into op or target. Token
 * writes are deliberately not logged at all.
 *
 * Meta keys: "schema_version", "next_user_id", "next_group_id",
 * "next_binding_id", "next_uid", "next_gid", "changelog_seq", "authz_gen";
 * all u64 big-endian.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/log.h"
#include "schema/store-int.h"

/* ---- meta ---- */

int gh__meta_get_u64(gh_txn *txn, const char *key, uint64_t *v)
{
    MDB_val val;
    int rc;

    *v = 0;
    rc = gh__get(txn, DB_META, key, strlen(key), &val);
    if (rc != 0)
        return rc;
    if (val.mv_size != 8)
        return gh_txn_fail(txn, GH_EINTERNAL, "corrupt meta value %s", key);
    *v = gh__get_u64(val.mv_data);
    return 0;
}

int gh__meta_put_u64(gh_txn *txn, const char *key, uint64_t v)
{
    uint8_t buf[8];

    gh__put_u64(buf, v);
    return gh__put(txn, DB_META, key, strlen(key), buf, sizeof(buf), 0);
}

int gh__next_id(gh_txn *txn, const char *metakey, int db, uint64_t *id)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint64_t next;
    int rc;

    rc = gh__meta_get_u64(txn, metakey, &next);
    if (rc == GH_ENOTFOUND) {
        /* No counter yet (new or migrated db): continue after the last key. */
        next = 1;
        rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, db), &cur), "cursor");
        if (rc != 0)
            goto done;
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        if (rc == 0 && k.mv_size == 8)
            next = gh__get_u64(k.mv_data) + 1;
        rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "cursor last");
    }
    if (rc != 0)
        goto done;
    if (next == 0)
        next = 1;
    *id = next;
    rc = gh__meta_put_u64(txn, metakey, next + 1);
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

int gh__authz_bump(gh_txn *txn)
{
    uint64_t gen;
    int rc = gh__meta_get_u64(txn, "authz_gen", &gen);

    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    return gh__meta_put_u64(txn, "authz_gen", gen + 1);
}

int gh_store_authz_gen(gh_txn *txn, uint64_t *gen)
{
    int rc = gh__meta_get_u64(txn, "authz_gen", gen);

    return rc == GH_ENOTFOUND ? 0 : rc;
}

int gh_store_schema_version(gh_txn *txn, uint32_t *version)
{
    uint64_t v;
    int rc = gh__meta_get_u64(txn, "schema_version", &v);

    *version = rc == 0 ? (uint32_t)v : 0;
    return rc == GH_ENOTFOUND ? 0 : rc;
}

/* ---- change log ---- */

/* Last sequence number: meta "changelog_seq", or the last entry's key. */
static int last_seq(gh_txn *txn, uint64_t *seq)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = gh__meta_get_u64(txn, "changelog_seq", seq);

    if (rc != GH_ENOTFOUND)
        return rc;
    *seq = 0;
    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, DB_CHANGELOG), &cur), "cursor");
    if (rc != 0)
        return rc;
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 8)
        *seq = gh__get_u64(k.mv_data);
    rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "cursor last");
    mdb_cursor_close(cur);
    return rc;
}

static int log_append(gh_txn *txn, const char *op, const char *target)
{
    uint8_t key[8];
    uint64_t seq;
    json_t *obj = NULL;
    char tgt[GH_DN_MAX + 1];
    int rc;

    rc = last_seq(txn, &seq);
    if (rc != 0)
        goto done;
    seq++;
    /* Targets are bounded like gh_change.target; cut at a UTF-8 boundary. */
    snprintf(tgt, sizeof(tgt), "%s", target);
    for (size_t n = strlen(tgt); n > 0 && !gh_schema_utf8_valid(tgt, n); n--)
        tgt[n - 1] = '\0';
    obj = json_pack("{s:I, s:I, s:s, s:s, s:s}", "seq", (json_int_t)seq, "time",
                    (json_int_t)txn->now, "actor", txn->actor, "op", op, "target", tgt);
    if (obj == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    gh__put_u64(key, seq);
    rc = gh__json_put(txn, DB_CHANGELOG, key, sizeof(key), obj);
    if (rc == 0)
        rc = gh__meta_put_u64(txn, "changelog_seq", seq);
done:
    json_decref(obj);
    return rc;
}

int gh__log(gh_txn *txn, const char *op, const char *fmt, ...)
{
    char target[GH_DN_MAX + 1];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(target, sizeof(target), fmt, ap);
    va_end(ap);
    return log_append(txn, op, target);
}

int gh_store_changelog_append(gh_txn *txn, const char *op, const char *target)
{
    if (op == NULL || op[0] == '\0' || strlen(op) >= sizeof(((gh_change *)0)->op))
        return gh_txn_fail(txn, GH_EINVAL, "invalid change-log op");
    if (target == NULL)
        target = "";
    if (gh_schema_text_valid("target", target, GH_DN_MAX, txn->err, sizeof(txn->err)) != 0)
        return GH_EINVAL;
    return log_append(txn, op, target);
}

int gh_store_changelog_prune(gh_txn *txn, int64_t before, size_t max, size_t *pruned)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint64_t first = 0, last = 0;
    size_t n = 0;
    int rc;

    *pruned = 0;
    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, DB_CHANGELOG), &cur), "cursor");
    if (rc != 0)
        goto done;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && n < max;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        json_error_t jerr;
        json_t *obj = json_loadb(v.mv_data, v.mv_size, 0, &jerr);
        json_int_t t = obj ? json_integer_value(json_object_get(obj, "time")) : 0;

        json_decref(obj);
        if (obj != NULL && t >= before)
            break; /* entries are in time order: the rest are younger */
        if (k.mv_size == 8) {
            if (n == 0)
                first = gh__get_u64(k.mv_data);
            last = gh__get_u64(k.mv_data);
        }
        rc = gh__mdb_err(txn, mdb_cursor_del(cur, 0), "cursor del");
        if (rc != 0)
            goto done;
        n++;
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
        rc = gh__mdb_err(txn, rc, "changelog cursor");
        goto done;
    }
    rc = 0;
    mdb_cursor_close(cur);
    cur = NULL;
    if (n > 0) {
        rc = gh__log(txn, "audit.prune", "%llu..%llu", (unsigned long long)first,
                     (unsigned long long)last);
        if (rc == 0)
            *pruned = n;
    }
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

int gh_store_changelog_seq(gh_txn *txn, uint64_t *seq)
{
    return last_seq(txn, seq);
}

int gh_store_changelog_list(gh_txn *txn, uint64_t since, size_t limit, gh_store_change_cb cb,
                            void *arg)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint8_t key[8];
    size_t count = 0;
    int rc;

    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, DB_CHANGELOG), &cur), "cursor");
    if (rc != 0)
        goto done;
    if (since == UINT64_MAX)
        goto done;
    gh__put_u64(key, since + 1);
    k.mv_size = sizeof(key);
    k.mv_data = key;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        json_error_t jerr;
        json_t *obj;
        gh_change c;
        int64_t seq = 0, t = 0;

        if (limit != 0 && count >= limit)
            break;
        obj = json_loadb(v.mv_data, v.mv_size, 0, &jerr);
        memset(&c, 0, sizeof(c));
        if (obj == NULL || json_unpack(obj, "{s:I, s:I}", "seq", &seq, "time", &t) != 0 ||
            gh__json_str(obj, "actor", c.actor, sizeof(c.actor)) != 0 ||
            gh__json_str(obj, "op", c.op, sizeof(c.op)) != 0 ||
            gh__json_str(obj, "target", c.target, sizeof(c.target)) != 0) {
            json_decref(obj);
            GH_LOGE("store: malformed change-log entry");
            rc = gh_txn_fail(txn, GH_EINTERNAL, "malformed change-log entry");
            goto done;
        }
        json_decref(obj);
        c.seq = (uint64_t)seq;
        c.time = t;
        count++;
        rc = cb(&c, arg);
        if (rc != 0) {
            rc = rc < 0 ? rc : 0;
            goto done;
        }
    }
    rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "changelog cursor");
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

/* ---- tokens ----
 * v1: [1][user id][created][expires], integers big-endian (25 bytes)
 * v2: [2][user id][created][expires][peer length][peer bytes]
 * Every token has an entry user id -> hash in DB_TOKEN_USER, so that all of a
 * user's sessions can be listed and revoked without a scan. */

static size_t token_encode(uint8_t rec[GH_TOKEN_REC_MAX], const gh_token *t)
{
    size_t plen = strnlen(t->peer, GH_TOKEN_PEER_MAX);

    rec[0] = 2;
    gh__put_u64(rec + 1, t->user_id);
    gh__put_u64(rec + 9, (uint64_t)t->created);
    gh__put_u64(rec + 17, (uint64_t)t->expires);
    rec[GH_TOKEN_REC_LEN] = (uint8_t)plen;
    memcpy(rec + GH_TOKEN_REC_LEN + 1, t->peer, plen);
    return GH_TOKEN_REC_LEN + 1 + plen;
}

static int token_decode(gh_txn *txn, const MDB_val *v, const uint8_t *hash, gh_token *t)
{
    const uint8_t *p = v->mv_data;
    size_t plen = 0;

    memset(t, 0, sizeof(*t));
    if (v->mv_size < GH_TOKEN_REC_LEN || (p[0] != 1 && p[0] != 2))
        return gh_txn_fail(txn, GH_EINTERNAL, "malformed token record");
    if (p[0] == 2) {
        if (v->mv_size < GH_TOKEN_REC_LEN + 1)
            return gh_txn_fail(txn, GH_EINTERNAL, "malformed token record");
        plen = p[GH_TOKEN_REC_LEN];
        if (plen > GH_TOKEN_PEER_MAX || v->mv_size < GH_TOKEN_REC_LEN + 1 + plen)
            return gh_txn_fail(txn, GH_EINTERNAL, "malformed token record");
        memcpy(t->peer, p + GH_TOKEN_REC_LEN + 1, plen);
    }
    memcpy(t->hash, hash, GH_TOKEN_HASH_BYTES);
    t->user_id = gh__get_u64(p + 1);
    t->created = (int64_t)gh__get_u64(p + 9);
    t->expires = (int64_t)gh__get_u64(p + 17);
    return 0;
}

static int user_active(gh_txn *txn, const MDB_val *rec)
{
    json_error_t jerr;
    json_t *obj = json_loadb(rec->mv_data, rec->mv_size, 0, &jerr);
    gh_user u;
    int rc = obj != NULL ? gh__user_from_json(obj, &u) : GH_EINTERNAL;

    json_decref(obj);
    if (rc != 0)
        return gh_txn_fail(txn, GH_EINTERNAL, "unreadable user record");
    rc = u.state == GH_USER_LOCKED                       ? GH_ELOCKED
         : u.state != GH_USER_ACTIVE || u.tombstone != 0 ? GH_EDISABLED
                                                         : 0;
    if (rc != 0)
        return gh_txn_fail(txn, rc, "user %s is not active", u.name);
    return 0;
}

int gh_store_token_put(gh_txn *txn, const gh_token *t)
{
    uint8_t rec[GH_TOKEN_REC_MAX], ukey[8];
    gh_token tmp = *t;
    size_t len;
    MDB_val v;
    int rc;

    gh__put_u64(ukey, t->user_id);
    rc = gh__get(txn, DB_USERS, ukey, sizeof(ukey), &v);
    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no user with id %llu", (unsigned long long)t->user_id);
    if (rc != 0)
        return rc;
    /* No session for an account that is not active: a login that raced a
     * lock, disable or upstream deletion must not leave a token behind. */
    rc = user_active(txn, &v);
    if (rc != 0)
        return rc;
    if (tmp.created == 0)
        tmp.created = txn->now;
    len = token_encode(rec, &tmp);
    rc = gh__put(txn, DB_TOKENS, t->hash, GH_TOKEN_HASH_BYTES, rec, len, MDB_NOOVERWRITE);
    if (rc == GH_EEXISTS)
        return gh_txn_fail(txn, rc, "token already exists");
    if (rc != 0)
        return rc;
    return gh__put(txn, DB_TOKEN_USER, ukey, sizeof(ukey), t->hash, GH_TOKEN_HASH_BYTES, 0);
}

int gh_store_token_get(gh_txn *txn, const uint8_t hash[GH_TOKEN_HASH_BYTES], gh_token *out)
{
    MDB_val v;
    int rc = gh__get(txn, DB_TOKENS, hash, GH_TOKEN_HASH_BYTES, &v);

    if (rc == GH_ENOTFOUND)
        return gh_txn_fail(txn, rc, "no such token");
    if (rc != 0)
        return rc;
    return token_decode(txn, &v, hash, out);
}

static int token_drop(gh_txn *txn, const uint8_t *hash, uint64_t user_id)
{
    uint8_t ukey[8];
    int rc;

    gh__put_u64(ukey, user_id);
    rc = gh__del(txn, DB_TOKENS, hash, GH_TOKEN_HASH_BYTES, NULL, 0);
    if (rc == 0) {
        rc = gh__del(txn, DB_TOKEN_USER, ukey, sizeof(ukey), hash, GH_TOKEN_HASH_BYTES);
        if (rc == GH_ENOTFOUND)
            rc = 0;
    }
    return rc;
}

int gh_store_token_del(gh_txn *txn, const uint8_t hash[GH_TOKEN_HASH_BYTES])
{
    gh_token t;
    int rc = gh_store_token_get(txn, hash, &t);

    if (rc != 0)
        return rc;
    return token_drop(txn, hash, t.user_id);
}

int gh_store_token_purge(gh_txn *txn, int64_t now, size_t *purged)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    size_t n = 0;
    int rc;

    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, DB_TOKENS), &cur), "cursor");
    if (rc != 0)
        goto done;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        gh_token t;
        uint8_t ukey[8];

        if (k.mv_size != GH_TOKEN_HASH_BYTES)
            continue;
        rc = token_decode(txn, &v, k.mv_data, &t);
        if (rc != 0)
            goto done;
        if (t.expires == 0 || t.expires > now)
            continue;
        gh__put_u64(ukey, t.user_id);
        rc = gh__del(txn, DB_TOKEN_USER, ukey, sizeof(ukey), t.hash, GH_TOKEN_HASH_BYTES);
        if (rc != 0 && rc != GH_ENOTFOUND)
            goto done;
        rc = gh__mdb_err(txn, mdb_cursor_del(cur, 0), "cursor del");
        if (rc != 0)
            goto done;
        n++;
    }
    rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "token cursor");
done:
    if (purged != NULL)
        *purged = n;
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

int gh_store_token_revoke_user(gh_txn *txn, uint64_t user_id, size_t *revoked)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint8_t ukey[8];
    size_t n = 0;
    int rc;

    gh__put_u64(ukey, user_id);
    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, DB_TOKEN_USER), &cur), "cursor");
    if (rc != 0)
        goto done;
    k.mv_size = sizeof(ukey);
    k.mv_data = ukey;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        if (v.mv_size != GH_TOKEN_HASH_BYTES)
            continue;
        rc = gh__del(txn, DB_TOKENS, v.mv_data, v.mv_size, NULL, 0);
        if (rc == 0)
            n++;
        else if (rc != GH_ENOTFOUND)
            goto done;
    }
    if (rc != MDB_NOTFOUND) {
        rc = gh__mdb_err(txn, rc, "token_user cursor");
        goto done;
    }
    rc = gh__del(txn, DB_TOKEN_USER, ukey, sizeof(ukey), NULL, 0);
    if (rc == GH_ENOTFOUND)
        rc = 0;
done:
    if (revoked != NULL)
        *revoked = rc == 0 ? n : 0;
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

int gh_store_token_list_user(gh_txn *txn, uint64_t user_id, gh_store_token_cb cb, void *arg)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v, rec;
    uint8_t ukey[8];
    int rc;

    gh__put_u64(ukey, user_id);
    rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, DB_TOKEN_USER), &cur), "cursor");
    if (rc != 0)
        goto done;
    k.mv_size = sizeof(ukey);
    k.mv_data = ukey;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        gh_token t;

        if (v.mv_size != GH_TOKEN_HASH_BYTES)
            continue;
        rc = gh__get(txn, DB_TOKENS, v.mv_data, v.mv_size, &rec);
        if (rc == GH_ENOTFOUND)
            continue; /* a stale index entry: nothing to show */
        if (rc == 0)
            rc = token_decode(txn, &rec, v.mv_data, &t);
        if (rc == 0 && t.user_id != user_id)
            continue;
        if (rc == 0)
            rc = cb(&t, arg);
        if (rc != 0) {
            rc = rc < 0 ? rc : 0;
            goto done;
        }
    }
    rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "token_user cursor");
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

int gh__tokens_reindex(gh_txn *txn, size_t *fixed)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v, uv;
    MDB_stat before, after;
    size_t orphans = 0;
    int rc;

    *fixed = 0;
    rc = gh__mdb_err(txn, mdb_stat(txn->txn, DBI(txn, DB_TOKEN_USER), &before), "stat");
    if (rc == 0)
        rc = gh__mdb_err(txn, mdb_drop(txn->txn, DBI(txn, DB_TOKEN_USER), 0), "drop");
    if (rc == 0)
        rc = gh__mdb_err(txn, mdb_cursor_open(txn->txn, DBI(txn, DB_TOKENS), &cur), "cursor");
    if (rc != 0)
        goto done;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        gh_token t;
        uint8_t ukey[8];

        if (k.mv_size != GH_TOKEN_HASH_BYTES || token_decode(txn, &v, k.mv_data, &t) != 0) {
            rc = gh__mdb_err(txn, mdb_cursor_del(cur, 0), "cursor del"); /* unreadable */
            orphans++;
            if (rc != 0)
                goto done;
            continue;
        }
        gh__put_u64(ukey, t.user_id);
        rc = gh__get(txn, DB_USERS, ukey, sizeof(ukey), &uv);
        if (rc == GH_ENOTFOUND) { /* its user is gone: the token must die too */
            rc = gh__mdb_err(txn, mdb_cursor_del(cur, 0), "cursor del");
            orphans++;
            if (rc != 0)
                goto done;
            continue;
        }
        if (rc != 0)
            goto done;
        rc = gh__put(txn, DB_TOKEN_USER, ukey, sizeof(ukey), t.hash, GH_TOKEN_HASH_BYTES, 0);
        if (rc != 0)
            goto done;
    }
    rc = rc == MDB_NOTFOUND ? 0 : gh__mdb_err(txn, rc, "token cursor");
    if (rc == 0)
        rc = gh__mdb_err(txn, mdb_stat(txn->txn, DBI(txn, DB_TOKEN_USER), &after), "stat");
    if (rc == 0)
        *fixed =
            orphans + (after.ms_entries > before.ms_entries ? after.ms_entries - before.ms_entries
                                                            : before.ms_entries - after.ms_entries);
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

/* ---- sync state ---- */

int gh_store_sync_get(gh_txn *txn, const char *upstream, char **out, size_t *len)
{
    MDB_val v;
    int rc;

    *out = NULL;
    if (len != NULL)
        *len = 0;
    if (gh_schema_name_valid(upstream, txn->err, sizeof(txn->err)) != 0)
        return GH_EINVAL;
    rc = gh__get(txn, DB_SYNC, upstream, strlen(upstream), &v);
    if (rc != 0)
        return rc;
    /* One spare NUL so text blobs can be used as strings. */
    *out = malloc(v.mv_size + 1);
    if (*out == NULL)
        return GH_ENOMEM;
    memcpy(*out, v.mv_data, v.mv_size);
    (*out)[v.mv_size] = '\0';
    if (len != NULL)
        *len = v.mv_size;
    return 0;
}

int gh_store_sync_put(gh_txn *txn, const char *upstream, const char *data, size_t len)
{
    int rc;

    if (gh_schema_name_valid(upstream, txn->err, sizeof(txn->err)) != 0)
        return GH_EINVAL;
    if (data == NULL && len > 0)
        return gh_txn_fail(txn, GH_EINVAL, "no sync state data");
    rc = gh__put(txn, DB_SYNC, upstream, strlen(upstream), data ? data : "", len, 0);
    if (rc == 0)
        rc = gh__log(txn, "sync.state", "%s", upstream);
    return rc;
}
