/*
 * record.c: key encodings, raw get/put helpers, and the JSON form of records.
 *
 * The one thing to know: a record's JSON object is updated in place, key by
 * key, so keys written by a newer Gatehouse survive a read-modify-write; never
 * build a fresh object for an update. Reading ignores keys it does not know and
 * treats a missing key as its zero value.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/log.h"
#include "schema/store-int.h"

/* ---- keys ---- */

void gh__put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t gh__get_u64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

void gh__put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

uint32_t gh__get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void gh__member_key(uint8_t key[GH_MEMBER_KEY_LEN], gh_member m)
{
    key[0] = (uint8_t)m.kind;
    gh__put_u64(key + 1, m.id);
}

int gh__member_from_key(const void *key, size_t len, gh_member *m)
{
    const uint8_t *p = key;

    if (len != GH_MEMBER_KEY_LEN || (p[0] != GH_MEMBER_USER && p[0] != GH_MEMBER_GROUP))
        return GH_EINTERNAL;
    m->kind = (gh_member_kind)p[0];
    m->id = gh__get_u64(p + 1);
    return 0;
}

size_t gh__origin_key(char *buf, const char *upstream, const char *key)
{
    size_t a = strlen(upstream), b = strlen(key);

    memcpy(buf, upstream, a);
    buf[a] = '\0';
    memcpy(buf + a + 1, key, b);
    return a + 1 + b;
}

/* ---- raw access ---- */

int gh__get(gh_txn *txn, int db, const void *key, size_t klen, MDB_val *val)
{
    MDB_val k = {klen, (void *)key};

    return gh__mdb_err(txn, mdb_get(txn->txn, DBI(txn, db), &k, val), "get");
}

int gh__put(gh_txn *txn, int db, const void *key, size_t klen, const void *data, size_t dlen,
            unsigned flags)
{
    MDB_val k = {klen, (void *)key}, d = {dlen, (void *)data};

    return gh__mdb_err(txn, mdb_put(txn->txn, DBI(txn, db), &k, &d, flags), "put");
}

int gh__del(gh_txn *txn, int db, const void *key, size_t klen, const void *data, size_t dlen)
{
    MDB_val k = {klen, (void *)key}, d = {dlen, (void *)data};

    return gh__mdb_err(txn, mdb_del(txn->txn, DBI(txn, db), &k, data ? &d : NULL), "del");
}

int gh__get_id(gh_txn *txn, int db, const void *key, size_t klen, uint64_t *id)
{
    MDB_val v;
    int rc = gh__get(txn, db, key, klen, &v);

    if (rc != 0)
        return rc;
    if (v.mv_size != 8) {
        GH_LOGE("store: index entry of size %zu, expected 8", v.mv_size);
        return gh_txn_fail(txn, GH_EINTERNAL, "corrupt index entry");
    }
    *id = gh__get_u64(v.mv_data);
    return 0;
}

int gh__json_get(gh_txn *txn, int db, const void *key, size_t klen, json_t **out)
{
    json_error_t jerr;
    MDB_val v;
    int rc;

    *out = NULL;
    rc = gh__get(txn, db, key, klen, &v);
    if (rc != 0)
        return rc;
    *out = json_loadb(v.mv_data, v.mv_size, 0, &jerr);
    if (*out == NULL || !json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        GH_LOGE("store: unreadable record: %s", jerr.text);
        return gh_txn_fail(txn, GH_EINTERNAL, "unreadable record in the database");
    }
    return 0;
}

int gh__json_put(gh_txn *txn, int db, const void *key, size_t klen, json_t *obj)
{
    char *buf;
    int rc;

    json_object_set_new(obj, "v", json_integer(GH_RECORD_VERSION));
    buf = json_dumps(obj, JSON_COMPACT);
    if (buf == NULL)
        return GH_ENOMEM;
    rc = gh__put(txn, db, key, klen, buf, strlen(buf), 0);
    free(buf);
    return rc;
}

/* ---- JSON field helpers ---- */

static int set_str(json_t *obj, const char *key, const char *v)
{
    return json_object_set_new(obj, key, json_string(v)) == 0 ? 0 : GH_ENOMEM;
}

static int set_int(json_t *obj, const char *key, int64_t v)
{
    return json_object_set_new(obj, key, json_integer(v)) == 0 ? 0 : GH_ENOMEM;
}

/* Sets key to v, or removes it when v is "" (an optional field). */
static int set_opt_str(json_t *obj, const char *key, const char *v)
{
    if (v[0] != '\0')
        return set_str(obj, key, v);
    json_object_del(obj, key); /* -1 only when it was absent */
    return 0;
}

/* Copies string key into dst. Missing: "". Not a string or too long: error. */
int gh__json_str(const json_t *obj, const char *key, char *dst, size_t dstsize)
{
    const json_t *v = json_object_get(obj, key);
    size_t len;

    dst[0] = '\0';
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return GH_EINTERNAL;
    len = json_string_length(v);
    if (len >= dstsize)
        return GH_EINTERNAL;
    memcpy(dst, json_string_value(v), len + 1);
    return 0;
}

static int get_int(const json_t *obj, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(obj, key);

    *out = 0;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return GH_EINTERNAL;
    *out = json_integer_value(v);
    return 0;
}

static int get_u32(const json_t *obj, const char *key, uint32_t *out)
{
    int64_t v;

    *out = 0;
    if (get_int(obj, key, &v) != 0 || v < 0 || v > UINT32_MAX)
        return GH_EINTERNAL;
    *out = (uint32_t)v;
    return 0;
}

static int get_u64(const json_t *obj, const char *key, uint64_t *out)
{
    int64_t v;

    *out = 0;
    if (get_int(obj, key, &v) != 0 || v < 0)
        return GH_EINTERNAL;
    *out = (uint64_t)v;
    return 0;
}

/* ---- users ---- */

int gh__user_to_json(json_t *obj, const gh_user *u, unsigned mask)
{
    int rc = 0;

    rc |= set_int(obj, "id", (int64_t)u->id);
    if (mask & GH_UF_NAME)
        rc |= set_str(obj, "name", u->name);
    if (mask & GH_UF_UID)
        rc |= set_int(obj, "uid", u->uid);
    if (mask & GH_UF_GID)
        rc |= set_int(obj, "gid", u->gid);
    if (mask & (GH_UF_STATE | GH_UF_TOMBSTONE | GH_UF_UPSTREAM)) {
        rc |= set_str(obj, "state", gh_user_state_name(u->state));
        rc |= set_str(obj, "admin_state", gh_user_state_name(u->admin_state));
    }
    if (mask & GH_UF_UPSTREAM) {
        rc |= set_int(obj, "upstream_flags", u->upstream_flags);
        rc |= set_str(obj, "origin_sid", u->origin_sid);
        if (u->upstream_expires != 0)
            rc |= set_int(obj, "upstream_expires", u->upstream_expires);
        else
            json_object_del(obj, "upstream_expires");
    }
    if (mask & GH_UF_DISPLAY)
        rc |= set_str(obj, "display_name", u->display_name);
    if (mask & GH_UF_MAIL)
        rc |= set_str(obj, "mail", u->mail);
    if (mask & GH_UF_VERIFIER) {
        rc |= set_str(obj, "verifier", u->verifier);
        rc |= set_int(obj, "verifier_time", u->verifier_time);
    }
    if (mask & GH_UF_ORIGIN) {
        rc |= set_str(obj, "origin", u->origin);
        rc |= set_str(obj, "origin_key", u->origin_key);
        rc |= set_str(obj, "origin_dn", u->origin_dn);
    }
    if (mask & GH_UF_TOMBSTONE)
        rc |= set_int(obj, "tombstone", u->tombstone);
    /* POSIX fields are written only when set, so that a record without them
     * stays byte-identical to one written before they existed */
    if (mask & GH_UF_HOME)
        rc |= set_opt_str(obj, "home", u->home);
    if (mask & GH_UF_SHELL)
        rc |= set_opt_str(obj, "shell", u->shell);
    if (mask & GH_UF_GECOS)
        rc |= set_opt_str(obj, "gecos", u->gecos);
    rc |= set_int(obj, "created", u->created);
    rc |= set_int(obj, "modified", u->modified);
    return rc ? GH_ENOMEM : 0;
}

int gh__user_from_json(const json_t *obj, gh_user *u)
{
    char state[16];
    int rc = 0;

    memset(u, 0, sizeof(*u));
    rc |= get_u64(obj, "id", &u->id);
    rc |= gh__json_str(obj, "name", u->name, sizeof(u->name));
    rc |= get_u32(obj, "uid", &u->uid);
    rc |= get_u32(obj, "gid", &u->gid);
    rc |= gh__json_str(obj, "state", state, sizeof(state));
    if (rc == 0 && state[0] != '\0' && gh_user_state_parse(state, &u->state) != 0)
        rc = GH_EINTERNAL;
    rc |= gh__json_str(obj, "display_name", u->display_name, sizeof(u->display_name));
    rc |= gh__json_str(obj, "mail", u->mail, sizeof(u->mail));
    rc |= gh__json_str(obj, "verifier", u->verifier, sizeof(u->verifier));
    rc |= get_int(obj, "verifier_time", &u->verifier_time);
    rc |= gh__json_str(obj, "origin", u->origin, sizeof(u->origin));
    rc |= gh__json_str(obj, "origin_key", u->origin_key, sizeof(u->origin_key));
    rc |= gh__json_str(obj, "origin_dn", u->origin_dn, sizeof(u->origin_dn));
    rc |= get_int(obj, "tombstone", &u->tombstone);
    rc |= get_int(obj, "created", &u->created);
    rc |= get_int(obj, "modified", &u->modified);
    rc |= get_u32(obj, "upstream_flags", &u->upstream_flags);
    rc |= gh__json_str(obj, "origin_sid", u->origin_sid, sizeof(u->origin_sid));
    rc |= get_int(obj, "upstream_expires", &u->upstream_expires);
    rc |= gh__json_str(obj, "admin_state", state, sizeof(state));
    if (rc == 0 && state[0] != '\0') {
        if (gh_user_state_parse(state, &u->admin_state) != 0)
            rc = GH_EINVAL;
    } else if (rc == 0) {
        /* written before admin_state existed: sync disabled its tombstones
         * through state itself, which was no administrator's choice */
        u->admin_state = u->tombstone != 0 && u->origin[0] != '\0' && u->state == GH_USER_DISABLED
                             ? GH_USER_ACTIVE
                             : u->state;
    }
    rc |= gh__json_str(obj, "home", u->home, sizeof(u->home));
    rc |= gh__json_str(obj, "shell", u->shell, sizeof(u->shell));
    rc |= gh__json_str(obj, "gecos", u->gecos, sizeof(u->gecos));
    if (rc != 0) {
        GH_LOGE("store: malformed user record (id %llu)", (unsigned long long)u->id);
        return GH_EINTERNAL;
    }
    return 0;
}

/* ---- groups ---- */

int gh__group_to_json(json_t *obj, const gh_group *g, unsigned mask)
{
    int rc = 0;

    rc |= set_int(obj, "id", (int64_t)g->id);
    if (mask & GH_GF_NAME)
        rc |= set_str(obj, "name", g->name);
    if (mask & GH_GF_GID)
        rc |= set_int(obj, "gid", g->gid);
    if (mask & GH_GF_DESCRIPTION)
        rc |= set_str(obj, "description", g->description);
    if (mask & GH_GF_ORIGIN) {
        rc |= set_str(obj, "origin", g->origin);
        rc |= set_str(obj, "origin_key", g->origin_key);
        rc |= set_str(obj, "origin_dn", g->origin_dn);
    }
    if (mask & GH_GF_TOMBSTONE)
        rc |= set_int(obj, "tombstone", g->tombstone);
    if (mask & GH_GF_UPSTREAM)
        rc |= set_opt_str(obj, "origin_sid", g->origin_sid);
    rc |= set_int(obj, "created", g->created);
    rc |= set_int(obj, "modified", g->modified);
    return rc ? GH_ENOMEM : 0;
}

int gh__group_from_json(const json_t *obj, gh_group *g)
{
    int rc = 0;

    memset(g, 0, sizeof(*g));
    rc |= get_u64(obj, "id", &g->id);
    rc |= gh__json_str(obj, "name", g->name, sizeof(g->name));
    rc |= get_u32(obj, "gid", &g->gid);
    rc |= gh__json_str(obj, "description", g->description, sizeof(g->description));
    rc |= gh__json_str(obj, "origin", g->origin, sizeof(g->origin));
    rc |= gh__json_str(obj, "origin_key", g->origin_key, sizeof(g->origin_key));
    rc |= gh__json_str(obj, "origin_dn", g->origin_dn, sizeof(g->origin_dn));
    rc |= gh__json_str(obj, "origin_sid", g->origin_sid, sizeof(g->origin_sid));
    rc |= get_int(obj, "tombstone", &g->tombstone);
    rc |= get_int(obj, "created", &g->created);
    rc |= get_int(obj, "modified", &g->modified);
    if (rc != 0) {
        GH_LOGE("store: malformed group record (id %llu)", (unsigned long long)g->id);
        return GH_EINTERNAL;
    }
    return 0;
}

/* ---- roles ---- */

int gh__role_to_json(json_t *obj, const gh_role *r)
{
    json_t *rules = json_array(), *parents = json_array();
    int rc = 0;

    if (rules == NULL || parents == NULL)
        goto nomem;
    /* A rule is stored as ["allow"|"deny", action, resource]: compiling a
     * user decodes every rule of its roles, and arrays parse about twice as
     * fast as objects. Readers also take the {"effect","action","resource"}
     * objects written before. */
    for (size_t i = 0; i < r->nrules; i++) {
        json_t *o = json_pack("[sss]", r->rules[i].effect == GH_DENY ? "deny" : "allow",
                              r->rules[i].action, r->rules[i].resource);
        if (o == NULL || json_array_append_new(rules, o) != 0)
            goto nomem;
    }
    for (size_t i = 0; i < r->nparents; i++)
        if (json_array_append_new(parents, json_string(r->parents[i])) != 0)
            goto nomem;
    rc |= set_str(obj, "name", r->name);
    rc |= set_str(obj, "description", r->description);
    rc |= json_object_set_new(obj, "rules", rules) ? GH_ENOMEM : 0;
    rules = NULL;
    rc |= json_object_set_new(obj, "parents", parents) ? GH_ENOMEM : 0;
    parents = NULL;
    rc |= set_int(obj, "created", r->created);
    rc |= set_int(obj, "modified", r->modified);
    return rc ? GH_ENOMEM : 0;
nomem:
    json_decref(rules);
    json_decref(parents);
    return GH_ENOMEM;
}

int gh__role_from_json(const json_t *obj, gh_role **out)
{
    char name[GH_NAME_MAX + 1];
    gh_role *r = NULL;
    const json_t *a, *e;
    size_t i;
    int rc = GH_EINTERNAL;

    *out = NULL;
    if (gh__json_str(obj, "name", name, sizeof(name)) != 0)
        goto done;
    r = gh_role_new(name);
    if (r == NULL) {
        rc = GH_ENOMEM;
        goto done;
    }
    if (gh__json_str(obj, "description", r->description, sizeof(r->description)) != 0 ||
        get_int(obj, "created", &r->created) != 0 || get_int(obj, "modified", &r->modified) != 0)
        goto done;
    a = json_object_get(obj, "rules");
    if (a != NULL && !json_is_array(a))
        goto done;
    json_array_foreach(a, i, e)
    {
        const char *eff, *act, *res;
        if (json_is_array(e)) {
            eff = json_string_value(json_array_get(e, 0));
            act = json_string_value(json_array_get(e, 1));
            res = json_string_value(json_array_get(e, 2));
        } else {
            eff = json_string_value(json_object_get(e, "effect"));
            act = json_string_value(json_object_get(e, "action"));
            res = json_string_value(json_object_get(e, "resource"));
        }
        if (eff == NULL || act == NULL || res == NULL)
            goto done;
        rc = gh_role_add_rule(r, strcmp(eff, "deny") == 0 ? GH_DENY : GH_ALLOW, act, res);
        if (rc != 0)
            goto done;
    }
    a = json_object_get(obj, "parents");
    if (a != NULL && !json_is_array(a))
        goto done;
    json_array_foreach(a, i, e)
    {
        rc = json_is_string(e) ? gh_role_add_parent(r, json_string_value(e)) : GH_EINTERNAL;
        if (rc != 0)
            goto done;
    }
    *out = r;
    r = NULL;
    rc = 0;
done:
    if (rc != 0 && rc != GH_ENOMEM) {
        GH_LOGE("store: malformed role record");
        rc = GH_EINTERNAL;
    }
    gh_role_free(r);
    return rc;
}

/* ---- bindings ---- */

json_t *gh__binding_to_json(const gh_binding *b)
{
    return json_pack("{s:I, s:s, s:{s:s, s:I}, s:s, s:I}", "id", (json_int_t)b->id, "role", b->role,
                     "subject", "kind", b->subject.kind == GH_MEMBER_GROUP ? "group" : "user", "id",
                     (json_int_t)b->subject.id, "scope", b->scope, "created",
                     (json_int_t)b->created);
}

int gh__binding_from_json(const json_t *obj, gh_binding *b)
{
    const json_t *subj = json_object_get(obj, "subject");
    char kind[8];
    int rc = 0;

    memset(b, 0, sizeof(*b));
    rc |= get_u64(obj, "id", &b->id);
    rc |= gh__json_str(obj, "role", b->role, sizeof(b->role));
    rc |= gh__json_str(obj, "scope", b->scope, sizeof(b->scope));
    rc |= get_int(obj, "created", &b->created);
    if (!json_is_object(subj))
        rc = GH_EINTERNAL;
    rc |= gh__json_str(subj, "kind", kind, sizeof(kind));
    rc |= get_u64(subj, "id", &b->subject.id);
    if (rc == 0 && strcmp(kind, "user") == 0)
        b->subject.kind = GH_MEMBER_USER;
    else if (rc == 0 && strcmp(kind, "group") == 0)
        b->subject.kind = GH_MEMBER_GROUP;
    else
        rc = GH_EINTERNAL;
    if (rc != 0) {
        GH_LOGE("store: malformed binding record");
        return GH_EINTERNAL;
    }
    return 0;
}

/* ---- id sets ---- */

void gh__idset_init(gh__idset *s)
{
    memset(s, 0, sizeof(*s));
}

void gh__idset_free(gh__idset *s)
{
    free(s->ids);
    free(s->slots);
    memset(s, 0, sizeof(*s));
}

static size_t slot_of(uint64_t id, size_t nslots)
{
    uint64_t h = id * 0x9E3779B97F4A7C15ull;

    return (size_t)(h >> 17) & (nslots - 1);
}

static int rehash(gh__idset *s, size_t nslots)
{
    uint64_t *slots = calloc(nslots, sizeof(*slots));

    if (slots == NULL)
        return GH_ENOMEM;
    for (size_t i = 0; i < s->n; i++) {
        size_t j = slot_of(s->ids[i], nslots);
        while (slots[j] != 0)
            j = (j + 1) & (nslots - 1);
        slots[j] = s->ids[i] + 1;
    }
    free(s->slots);
    s->slots = slots;
    s->nslots = nslots;
    return 0;
}

int gh__idset_has(const gh__idset *s, uint64_t id)
{
    if (s->nslots == 0)
        return 0;
    for (size_t j = slot_of(id, s->nslots); s->slots[j] != 0; j = (j + 1) & (s->nslots - 1))
        if (s->slots[j] == id + 1)
            return 1;
    return 0;
}

int gh__idset_add(gh__idset *s, uint64_t id)
{
    size_t j;

    GH_ASSERT(id != UINT64_MAX);
    if (gh__idset_has(s, id))
        return 0;
    if (s->n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        uint64_t *ids = realloc(s->ids, cap * sizeof(*ids));
        if (ids == NULL)
            return GH_ENOMEM;
        s->ids = ids;
        s->cap = cap;
    }
    if ((s->n + 1) * 2 > s->nslots && rehash(s, s->nslots ? s->nslots * 2 : 32) != 0)
        return GH_ENOMEM;
    s->ids[s->n++] = id;
    for (j = slot_of(id, s->nslots); s->slots[j] != 0; j = (j + 1) & (s->nslots - 1))
        ;
    s->slots[j] = id + 1;
    return 1;
}
