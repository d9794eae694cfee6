/*
 * ops_io.c: dump and import, the bulk paths behind `gatehouse export` and
 * `gatehouse import`.
 *
 * import applies each record through the very handler of the operation it
 * stands for (user -> user.add, group -> group.add, member ->
 * group.add_member, role -> role.add, binding -> grant), so a record is
 * validated exactly like a single request and applied whole or not at all
 * (its own nested transaction); all records of one request are queued to the
 * writer together and share its group commits. The reply waits for the last.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/log.h"
#include "server/server.h"

#define DUMP_MAX 1000
#define IMPORT_MAX 1000

/* ---- dump ---- */

typedef struct dump_page {
    gh_txn *txn;
    json_t *arr;
    size_t limit, n;
    char last[GH_NAME_MAX + 1];
    uint64_t last_id;
    int more;
} dump_page;

static int member_name(gh_member m, void *arg)
{
    dump_page *d = arg;
    json_t *o = json_array_get(d->arr, json_array_size(d->arr) - 1);
    json_t *users = json_object_get(o, "users"), *groups = json_object_get(o, "subgroups");
    if (m.kind == GH_MEMBER_USER) {
        gh_user u;
        if (gh_store_user_get_by_id(d->txn, m.id, &u) == 0)
            json_array_append_new(users, json_string(u.name));
    } else {
        gh_group g;
        if (gh_store_group_get_by_id(d->txn, m.id, &g) == 0)
            json_array_append_new(groups, json_string(g.name));
    }
    return 0;
}

static int dump_user(const gh_user *u, void *arg)
{
    dump_page *d = arg;
    if (d->n == d->limit) {
        d->more = 1;
        return 1;
    }
    json_t *o = gh_json_user(u);
    json_object_set_new(o, "type", json_string("user"));
    json_object_del(o, "has_password");
    if (u->verifier[0])
        json_object_set_new(o, "verifier", json_string(u->verifier));
    json_array_append_new(d->arr, o);
    snprintf(d->last, sizeof(d->last), "%s", u->name);
    d->n++;
    return 0;
}

static int dump_group(const gh_group *g, void *arg)
{
    dump_page *d = arg;
    if (d->n == d->limit) {
        d->more = 1;
        return 1;
    }
    json_t *o = gh_json_group(g);
    json_object_set_new(o, "type", json_string("group"));
    json_object_set_new(o, "users", json_array());
    json_object_set_new(o, "subgroups", json_array());
    json_array_append_new(d->arr, o);
    gh_store_group_members(d->txn, g->id, member_name, d);
    snprintf(d->last, sizeof(d->last), "%s", g->name);
    d->n++;
    return 0;
}

static int dump_role(const gh_role *r, void *arg)
{
    dump_page *d = arg;
    json_t *o = gh_json_role(r);
    json_object_set_new(o, "type", json_string("role"));
    json_array_append_new(d->arr, o);
    d->n++;
    return 0;
}

/* Appends role i of all after its parents (depth first), so that an import
 * in record order never meets a parent it has not created yet. */
static void emit_parents_first(json_t *all, json_t *by_name, size_t i, json_t *done, json_t *out)
{
    json_t *r = json_array_get(all, i);
    const char *name = json_string_value(json_object_get(r, "name"));
    if (name == NULL || json_object_get(done, name))
        return;
    json_object_set_new(done, name, json_true());
    json_t *parents = json_object_get(r, "parents");
    size_t k;
    json_t *p;
    json_array_foreach(parents, k, p)
    {
        json_t *idx = json_object_get(by_name, json_string_value(p) ? json_string_value(p) : "");
        if (json_is_integer(idx))
            emit_parents_first(all, by_name, (size_t)json_integer_value(idx), done, out);
    }
    json_array_append(out, r);
}

static json_t *roles_parents_first(json_t *all)
{
    json_t *by_name = json_object(), *done = json_object(), *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(all, i, r)
    {
        const char *name = json_string_value(json_object_get(r, "name"));
        if (name)
            json_object_set_new(by_name, name, json_integer((json_int_t)i));
    }
    for (i = 0; i < json_array_size(all); i++)
        emit_parents_first(all, by_name, i, done, out);
    json_decref(by_name);
    json_decref(done);
    json_decref(all);
    return out;
}

static int dump_binding(const gh_binding *b, void *arg)
{
    dump_page *d = arg;
    json_t *o = gh_json_binding(d->txn, b);
    json_object_set_new(o, "type", json_string("binding"));
    json_array_append_new(d->arr, o);
    d->n++;
    return 0;
}

static int op_dump(gh_opctx *c)
{
    const char *kind, *after = NULL;
    int64_t limit = DUMP_MAX;
    int rc;

    if ((rc = gh_arg_str(c, "kind", 1, 16, &kind)) != 0)
        return rc;
    if ((rc = gh_arg_str(c, "after", 0, GH_NAME_MAX, &after)) != 0 && rc != GH_ENOTFOUND)
        return rc;
    if ((rc = gh_arg_int(c, "limit", 0, 1, DUMP_MAX, &limit)) != 0 && rc != GH_ENOTFOUND)
        return rc;
    dump_page d = {.txn = c->txn, .arr = json_array(), .limit = (size_t)limit};
    if (strcmp(kind, "users") == 0)
        rc = gh_store_user_list(c->txn, NULL, after, (size_t)limit + 1, dump_user, &d);
    else if (strcmp(kind, "groups") == 0)
        rc = gh_store_group_list(c->txn, NULL, after, (size_t)limit + 1, dump_group, &d);
    else if (strcmp(kind, "roles") == 0) /* roles and bindings are few: one page */
        rc = gh_store_role_list(c->txn, dump_role, &d);
    else if (strcmp(kind, "bindings") == 0)
        rc = gh_store_binding_list(c->txn, dump_binding, &d);
    else {
        json_decref(d.arr);
        return gh_op_fail(c, GH_EINVAL, "'kind' must be users, groups, roles or bindings");
    }
    if (rc != 0) {
        json_decref(d.arr);
        return gh_op_fail(c, rc, "cannot read %s", kind);
    }
    if (strcmp(kind, "roles") == 0)
        d.arr = roles_parents_first(d.arr);
    json_object_set_new(c->resp, "records", d.arr);
    json_object_set_new(c->resp, "next", d.more ? json_string(d.last) : json_null());
    return 0;
}

/* ---- import ---- */

typedef struct import_req {
    gh_pending *p;
    json_t *results; /* one slot per record, filled as they complete */
    size_t outstanding;
    int submitted_all;
} import_req;

typedef struct import_item {
    import_req *ir;
    size_t index;
    void (*free_arg)(void *arg);
    void *arg;
} import_item;

static void set_result(import_req *ir, size_t i, int rc, const char *msg)
{
    json_t *r = json_object();
    json_object_set_new(r, "ok", json_boolean(rc == 0));
    if (rc != 0) {
        json_t *e = json_object();
        json_object_set_new(e, "code", json_string(gh_error_code(rc)));
        json_object_set_new(e, "message", gh__message_json(msg && msg[0] ? msg : gh_strerror(rc)));
        json_object_set_new(r, "error", e);
    }
    json_array_set_new(ir->results, i, r);
}

static void import_maybe_finish(import_req *ir)
{
    if (!ir->submitted_all || ir->outstanding > 0)
        return;
    json_t *resp = json_object();
    json_object_set_new(resp, "results", ir->results);
    ir->results = NULL;
    gh__pending_finish(ir->p, 0, NULL, resp);
    json_decref(resp);
    free(ir);
}

static void import_done(void *cbarg, int rc, const char *err)
{
    import_item *it = cbarg;
    import_req *ir = it->ir;
    set_result(ir, it->index, rc, err);
    if (it->free_arg)
        it->free_arg(it->arg);
    free(it);
    ir->outstanding--;
    import_maybe_finish(ir);
}

static const struct {
    const char *type;
    const char *op;
} import_ops[] = {
    {"user", "user.add"}, {"group", "group.add"}, {"member", "group.add_member"},
    {"role", "role.add"}, {"binding", "grant"},
};

/* Runs one record through its op's handler; queues the write it defers. */
static void import_one(gh_opctx *parent, import_req *ir, size_t i, json_t *rec)
{
    gh_opctx c;
    const char *type = json_string_value(json_object_get(rec, "type"));
    const gh_op_def *def = NULL;
    int rc;

    memset(&c, 0, sizeof(c));
    c.srv = parent->srv;
    c.cfg = parent->cfg;
    c.authz = parent->authz;
    c.txn = parent->txn;
    c.req = rec;
    c.admin = 1;
    c.peer_uid = parent->peer_uid;
    c.peer = parent->peer;
    c.now = parent->now;
    c.importing = 1;
    snprintf(c.actor, sizeof(c.actor), "%s", parent->actor);

    if (!json_is_object(rec) || type == NULL) {
        set_result(ir, i, GH_EINVAL, "a record must be an object with a string 'type'");
        return;
    }
    for (size_t k = 0; k < sizeof(import_ops) / sizeof(import_ops[0]); k++)
        if (strcmp(type, import_ops[k].type) == 0)
            def = gh__op_find(import_ops[k].op);
    if (def == NULL) {
        set_result(ir, i, GH_EINVAL, "unknown record type (user, group, member, role, binding)");
        return;
    }
    if (json_object_get(rec, "password") != NULL) {
        set_result(ir, i, GH_EINVAL,
                   "import takes password verifiers, not passwords (use user.passwd)");
        return;
    }
    c.resp = json_object();
    rc = def->fn(&c);
    json_decref(c.resp);
    GH_ASSERT(c.pending == NULL);
    if (rc != 0 || !c.deferred) {
        if (c.deferred && c.free_arg)
            c.free_arg(c.arg);
        set_result(ir, i, rc ? rc : GH_EINTERNAL, rc ? c.msg : "record was not applied");
        return;
    }
    import_item *it = calloc(1, sizeof(*it));
    if (it == NULL) {
        c.free_arg(c.arg);
        set_result(ir, i, GH_ENOMEM, NULL);
        return;
    }
    it->ir = ir;
    it->index = i;
    it->free_arg = c.free_arg;
    it->arg = c.arg;
    rc = gh_op_write_part(ir->p, c.actor, c.apply, c.arg, import_done, it); /* done: this loop */
    if (rc != 0) {
        c.free_arg(c.arg);
        free(it);
        set_result(ir, i, rc, "the server is shutting down");
        return;
    }
    ir->outstanding++;
}

static int op_import(gh_opctx *c)
{
    json_t *recs = json_object_get(c->req, "records");
    if (!json_is_array(recs))
        return gh_op_fail(c, GH_EINVAL, "'records' must be an array");
    size_t n = json_array_size(recs);
    if (n > IMPORT_MAX)
        return gh_op_fail(c, GH_ETOOBIG, "at most %d records per import request", IMPORT_MAX);
    import_req *ir = calloc(1, sizeof(*ir));
    if (ir == NULL)
        return gh_op_fail(c, GH_ENOMEM, "out of memory");
    ir->results = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(ir->results, json_null());
    ir->p = gh_op_pend(c);
    for (size_t i = 0; i < n; i++)
        import_one(c, ir, i, json_array_get(recs, i));
    ir->submitted_all = 1;
    import_maybe_finish(ir);
    return 0;
}

const gh_op_def gh__ops_io[] = {
    {"dump", op_dump, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    /* pends (its records' writes, gh_op_write_part) and answers from the
     * snapshot: no plain-write flag, so it waits for earlier writes */
    {"import", op_import, GH_OPF_ADMIN, GH_CLASS_ADMIN},
    {NULL, NULL, 0, GH_CLASS_ADMIN},
};
