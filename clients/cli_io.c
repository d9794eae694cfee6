/*
 * cli_io.c: `gatehouse import` and `gatehouse export` (JSON lines; LDIF is
 * in cli_ldif.c).
 *
 * The JSON-lines format is the `dump` records with a "type" member first, in
 * an order that import can apply front to back: users, groups, members (one
 * record per direct membership, after every group so nesting resolves),
 * roles (parents before children), bindings.
 *
 * Import sends `import` requests of at most --batch records and at most
 * --max-request bytes (the server closes the connection on a longer line),
 * several in flight at once for throughput. Pipelined batches must not
 * depend on each other, so the pipeline is drained whenever the record type
 * changes (groups before members before bindings). The server applies each
 * record whole or not at all; a rejected line is reported with its number
 * and reason, the rest go on. Lines may carry passwords: the line buffer,
 * the stdio buffer and the request strings are wiped.
 */
#include "gh-config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clients/cli-int.h"

#define MAX_INFLIGHT 4
#define REQUEST_OVERHEAD 128 /* {"op":"import","records":[]} and "auth" beside the token */

/* ---- export ---- */

typedef int (*record_fn)(cli *x, json_t *rec, void *arg);

/* Reads every page of dump kind, calling fn for each record. */
static int dump_kind(cli *x, const char *kind, record_fn fn, void *arg)
{
    json_t *after = NULL, *resp = NULL;
    int rc = 0;

    for (;;) {
        json_t *req = cli_req("dump"), *recs, *r;
        size_t i;

        cli_set_str(x, req, "kind", kind);
        cli_set_int(req, "limit", CLI_PAGE);
        if (after != NULL)
            json_object_set(req, "after", after);
        json_decref(resp);
        rc = cli_call(x, req, &resp);
        json_decref(req);
        if (rc != 0)
            break;
        recs = json_object_get(resp, "records");
        if (!json_is_array(recs)) {
            rc = cli_fail(CLI_EXIT_SERVER, "protocol_error: dump response without \"records\"");
            break;
        }
        json_array_foreach(recs, i, r)
        {
            if ((rc = fn(x, r, arg)) != 0)
                goto done;
        }
        json_decref(after);
        after = json_incref(json_object_get(resp, "next"));
        if (after == NULL || json_is_null(after) || json_array_size(recs) == 0)
            break;
    }
done:
    json_decref(after);
    json_decref(resp);
    return rc;
}

static int collect(cli *x, json_t *rec, void *arg)
{
    (void)x;
    return json_array_append(arg, rec) == 0 ? 0 : cli_fail(CLI_EXIT_SERVER, "out_of_memory");
}

/* Writes {"type": type, ...rec}; a group's member lists are left out (they
 * travel as member records). */
static int emit(const char *type, json_t *rec, int is_group)
{
    json_t *out = json_object();
    int rc;

    json_object_set_new(out, "type", json_string(type));
    json_object_update_missing(out, rec);
    if (is_group) {
        json_object_del(out, "members");
        json_object_del(out, "users");
        json_object_del(out, "subgroups");
    }
    rc = json_dumpf(out, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(out);
    return rc == 0 ? 0 : cli_fail(CLI_EXIT_SERVER, "io_error: cannot write: %s", strerror(errno));
}

static int emit_user(cli *x, json_t *rec, void *arg)
{
    json_t *gid = json_object_get(rec, "gid");

    (void)x;
    (void)arg;
    /* dump says "gid":0 for "no primary group", which user.add (and so
     * import) refuses: leave it out, it means the same */
    if (json_is_integer(gid) && json_integer_value(gid) == 0)
        json_object_del(rec, "gid");
    return emit("user", rec, 0);
}

static int emit_binding(cli *x, json_t *rec, void *arg)
{
    (void)x;
    (void)arg;
    return emit("binding", rec, 0);
}

/* The direct members of a dump group record as member records: the group's
 * "users" and "subgroups" (PROTOCOL.md, dump); group.get's
 * "members":{"users","groups"} is accepted too. */
static void group_members(json_t *g, json_t *out)
{
    json_t *m = json_object_get(g, "members"), *v;
    const char *gname = json_string_value(json_object_get(g, "name"));
    size_t i;

    if (gname == NULL)
        return;
    if (json_is_array(json_object_get(g, "users")) ||
        json_is_array(json_object_get(g, "subgroups"))) {
        json_array_foreach(json_object_get(g, "users"), i, v) json_array_append_new(
            out, json_pack("{sss ssO}", "type", "member", "group", gname, "user", v));
        json_array_foreach(json_object_get(g, "subgroups"), i, v) json_array_append_new(
            out, json_pack("{sss ssO}", "type", "member", "group", gname, "subgroup", v));
    } else if (json_is_object(m)) {
        json_array_foreach(json_object_get(m, "users"), i, v) json_array_append_new(
            out, json_pack("{sss ssO}", "type", "member", "group", gname, "user", v));
        json_array_foreach(json_object_get(m, "groups"), i, v) json_array_append_new(
            out, json_pack("{sss ssO}", "type", "member", "group", gname, "subgroup", v));
    } else if (json_is_array(m)) {
        json_array_foreach(m, i, v)
        {
            json_t *u = json_object_get(v, "user");
            json_t *s = json_object_get(v, "subgroup");
            if (s == NULL)
                s = json_object_get(v, "group");
            if (json_is_string(v))
                u = v;
            if (u)
                json_array_append_new(
                    out, json_pack("{sss ssO}", "type", "member", "group", gname, "user", u));
            else if (s)
                json_array_append_new(
                    out, json_pack("{sss ssO}", "type", "member", "group", gname, "subgroup", s));
        }
    }
}

/* Emits roles so that every role comes after its parents. */
static int emit_role_dfs(json_t *roles, json_t *byname, json_t *state, json_t *r)
{
    const char *name = json_string_value(json_object_get(r, "name"));
    json_t *p;
    size_t i;
    int rc;

    if (name == NULL || json_object_get(state, name))
        return 0; /* done, or on the stack (a cycle the server should have refused) */
    json_object_set_new(state, name, json_true());
    json_array_foreach(json_object_get(r, "parents"), i, p)
    {
        json_t *parent = json_is_string(p) ? json_object_get(byname, json_string_value(p)) : NULL;
        if (parent && (rc = emit_role_dfs(roles, byname, state, parent)) != 0)
            return rc;
    }
    return emit("role", r, 0);
}

static int export_jsonl(cli *x)
{
    json_t *groups = json_array(), *roles = json_array(), *members = json_array();
    json_t *byname = json_object(), *state = json_object(), *g;
    size_t i;
    int rc;

    if ((rc = dump_kind(x, "users", emit_user, NULL)) != 0)
        goto done;
    if ((rc = dump_kind(x, "groups", collect, groups)) != 0)
        goto done;
    json_array_foreach(groups, i, g)
    {
        if ((rc = emit("group", g, 1)) != 0)
            goto done;
        group_members(g, members);
    }
    json_array_foreach(members, i, g)
    {
        if ((rc = emit("member", g, 0)) != 0)
            goto done;
    }
    if ((rc = dump_kind(x, "roles", collect, roles)) != 0)
        goto done;
    json_array_foreach(roles, i, g)
    {
        const char *n = json_string_value(json_object_get(g, "name"));
        if (n)
            json_object_set(byname, n, g);
    }
    json_array_foreach(roles, i, g)
    {
        if ((rc = emit_role_dfs(roles, byname, state, g)) != 0)
            goto done;
    }
    rc = dump_kind(x, "bindings", emit_binding, NULL);
done:
    json_decref(groups);
    json_decref(roles);
    json_decref(members);
    json_decref(byname);
    json_decref(state);
    return rc;
}

int cli_export(cli *x)
{
    const char *format = cli_opt(x, "format");
    cli_ldif_opts o;
    json_t *users, *groups;
    int rc;

    if (format == NULL || strcmp(format, "jsonl") == 0 || strcmp(format, "json") == 0) {
        if (cli_flag(x, "with-verifiers") || cli_flag(x, "rfc2307") || cli_opt(x, "base-dn") ||
            cli_flag(x, "no-containers") || cli_opt(x, "home-base"))
            return cli_usage(x, "--base-dn, --with-verifiers, --rfc2307, --no-containers and "
                                "--home-base apply to --format ldif");
        return export_jsonl(x);
    }
    if (strcmp(format, "ldif") != 0)
        return cli_usage(x, "--format must be jsonl or ldif, not '%s'", format);
    o.base_dn = cli_opt(x, "base-dn") ? cli_opt(x, "base-dn") : "dc=example,dc=com";
    o.home_base = cli_opt(x, "home-base") ? cli_opt(x, "home-base") : "/home";
    o.with_verifiers = cli_flag(x, "with-verifiers");
    o.rfc2307 = cli_flag(x, "rfc2307");
    o.containers = !cli_flag(x, "no-containers");
    if (o.base_dn[0] == '\0')
        return cli_usage(x, "--base-dn must not be empty");
    users = json_array();
    groups = json_array();
    if ((rc = dump_kind(x, "users", collect, users)) == 0 &&
        (rc = dump_kind(x, "groups", collect, groups)) == 0)
        rc = cli_ldif_write(stdout, &o, users, groups);
    /* the verifiers are not secrets of the strength of passwords, but do not
     * leave them in freed memory either */
    {
        json_t *u;
        size_t i;
        json_array_foreach(users, i, u) cli_wipe_json_string(json_object_get(u, "verifier"));
    }
    json_decref(users);
    json_decref(groups);
    return rc;
}

/* ---- import ---- */

typedef struct inflight {
    size_t n;
    unsigned long *lines;
} inflight;

typedef struct importer {
    cli *x;
    gh_client *c;
    size_t batch_max, budget;

    json_t *cur; /* records of the batch being filled */
    unsigned long *cur_lines;
    size_t cur_bytes;
    char last_type[32];

    inflight q[MAX_INFLIGHT];
    size_t qhead, qcount;

    uint64_t lines, imported, rejected;
    json_t *rejects; /* --json: [{"line", "error"}] */
    int fatal;       /* exit code once the import cannot go on */
    cli_progress progress;
    uint64_t bytes_done;
} importer;

static void reject(importer *im, unsigned long line, const char *code, const char *msg)
{
    im->rejected++;
    fprintf(stderr, "gatehouse: line %lu: %s: %s\n", line, code, msg);
    if (im->rejects)
        json_array_append_new(im->rejects, json_pack("{sIs{ssss}}", "line", (json_int_t)line,
                                                     "error", "code", code, "message", msg));
}

static void wipe_records(json_t *recs)
{
    json_t *r;
    size_t i;

    json_array_foreach(recs, i, r) cli_wipe_json_string(json_object_get(r, "password"));
}

/* Receives the oldest in-flight batch. */
static int recv_batch(importer *im)
{
    inflight *b = &im->q[im->qhead];
    json_t *resp = NULL, *results, *r;
    size_t i;
    int rc = gh_recv(im->c, &resp);

    im->qhead = (im->qhead + 1) % MAX_INFLIGHT;
    im->qcount--;
    if (rc < 0 && resp == NULL) {
        /* no answer: the outcome of these lines is unknown */
        cli_report(im->x, rc);
        fprintf(stderr, "gatehouse: lines %lu-%lu: %s\n", b->lines[0], b->lines[b->n - 1],
                rc == GH_ERR_CONNECT ? "not applied (never sent)"
                                     : "outcome unknown (the connection broke)");
        if (!im->fatal)
            im->fatal = cli_exit_code(rc);
    } else if (rc < 0) {
        const char *code = gh_client_error_code(im->c), *msg = gh_client_error_message(im->c);
        for (i = 0; i < b->n; i++)
            reject(im, b->lines[i], code, msg);
        if (rc == GH_ERR_PERMISSION_DENIED || rc == GH_ERR_TOO_LARGE || rc == GH_ERR_UNAVAILABLE ||
            rc == GH_ERR_UNKNOWN_OP) {
            if (!im->fatal)
                im->fatal = cli_exit_code(rc);
        }
    } else {
        results = json_object_get(resp, "results");
        if (!json_is_array(results) || json_array_size(results) != b->n) {
            fprintf(stderr,
                    "gatehouse: protocol_error: import answered %zu results for %zu records\n",
                    json_array_size(results), b->n);
            if (!im->fatal)
                im->fatal = CLI_EXIT_SERVER;
        } else {
            json_array_foreach(results, i, r)
            {
                if (json_is_true(json_object_get(r, "ok"))) {
                    im->imported++;
                } else {
                    json_t *e = json_object_get(r, "error");
                    const char *code = json_string_value(json_object_get(e, "code"));
                    const char *msg = json_string_value(json_object_get(e, "message"));
                    reject(im, b->lines[i], code ? code : "rejected", msg ? msg : "rejected");
                }
            }
        }
    }
    json_decref(resp);
    free(b->lines);
    b->lines = NULL;
    cli_progress_update(&im->progress, im->bytes_done, im->imported + im->rejected, 0);
    return im->fatal;
}

static int drain(importer *im)
{
    while (im->qcount > 0)
        recv_batch(im);
    return im->fatal;
}

/* Sends the batch being filled. */
static int send_batch(importer *im)
{
    size_t n = json_array_size(im->cur);
    json_t *req;
    int rc;

    if (n == 0)
        return im->fatal;
    if (im->qcount == MAX_INFLIGHT)
        recv_batch(im);
    if (im->fatal)
        return im->fatal;
    req = cli_req("import");
    json_object_set(req, "records", im->cur);
    rc = gh_send(im->c, req);
    wipe_records(im->cur);
    json_decref(req);
    json_decref(im->cur);
    im->cur = json_array();
    if (rc < 0) {
        free(im->cur_lines);
        im->cur_lines = NULL;
        im->cur_bytes = 0;
        return im->fatal = cli_report(im->x, rc);
    }
    inflight *b = &im->q[(im->qhead + im->qcount) % MAX_INFLIGHT];
    b->n = n;
    b->lines = im->cur_lines;
    im->cur_lines = NULL;
    im->cur_bytes = 0;
    im->qcount++;
    return 0;
}

/* Adds one record (reference stolen) read at line. */
static int add_record(importer *im, json_t *rec, unsigned long line)
{
    const char *type = json_string_value(json_object_get(rec, "type"));
    size_t size, n;

    if (type == NULL) {
        reject(im, line, "invalid_argument", "record without a \"type\" string");
        json_decref(rec);
        return 0;
    }
    if (strncmp(type, im->last_type, sizeof(im->last_type)) != 0) {
        /* the new type may depend on the records before: apply them first */
        if (send_batch(im) != 0 || drain(im) != 0) {
            json_decref(rec);
            return im->fatal;
        }
        snprintf(im->last_type, sizeof(im->last_type), "%s", type);
    }
    size = json_dumpb(rec, NULL, 0, JSON_COMPACT) + 1;
    if (size > im->budget) {
        char msg[128];
        snprintf(msg, sizeof(msg), "record of %zu bytes does not fit in a request of %zu bytes",
                 size, im->budget + REQUEST_OVERHEAD);
        reject(im, line, "too_large", msg);
        cli_wipe_json_string(json_object_get(rec, "password"));
        json_decref(rec);
        return 0;
    }
    n = json_array_size(im->cur);
    if (n == im->batch_max || im->cur_bytes + size > im->budget) {
        if (send_batch(im) != 0) {
            json_decref(rec);
            return im->fatal;
        }
        n = 0;
    }
    if (n % 64 == 0) {
        unsigned long *l = realloc(im->cur_lines, (n + 64) * sizeof(*l));
        if (l == NULL) {
            json_decref(rec);
            return im->fatal = cli_fail(CLI_EXIT_SERVER, "out_of_memory");
        }
        im->cur_lines = l;
    }
    im->cur_lines[n] = line;
    json_array_append_new(im->cur, rec);
    im->cur_bytes += size;
    return 0;
}

static int only_space(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

static int import_jsonl(importer *im, FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long lineno = 0;

    while (!im->fatal && (n = getline(&line, &cap, f)) >= 0) {
        json_error_t jerr;
        json_t *rec;

        lineno++;
        im->bytes_done += (uint64_t)n;
        if (only_space(line, (size_t)n)) {
            cli_wipe(line, (size_t)n);
            continue;
        }
        im->lines++;
        rec = json_loadb(line, (size_t)n, 0, &jerr);
        cli_wipe(line, (size_t)n);
        if (rec == NULL) {
            char msg[200];
            snprintf(msg, sizeof(msg), "not valid JSON: %s (column %d)", jerr.text, jerr.column);
            reject(im, lineno, "bad_request", msg);
            continue;
        }
        if (!json_is_object(rec)) {
            reject(im, lineno, "bad_request", "not a JSON object");
            json_decref(rec);
            continue;
        }
        add_record(im, rec, lineno);
        cli_progress_update(&im->progress, im->bytes_done, im->imported + im->rejected, 0);
    }
    if (line)
        cli_wipe(line, cap);
    free(line);
    if (ferror(f) && !im->fatal)
        im->fatal = cli_fail(CLI_EXIT_USAGE, "cannot read the input: %s", strerror(errno));
    return im->fatal;
}

static int import_ldif(importer *im, FILE *f, const char *name)
{
    json_t *recs = NULL, *r;
    size_t i, skipped = 0;
    int rc = cli_ldif_read(f, name, &recs, &skipped);

    if (rc != 0)
        return im->fatal = rc;
    im->bytes_done = im->progress.total;
    im->lines = json_array_size(recs);
    json_array_foreach(recs, i, r)
    {
        unsigned long line = (unsigned long)json_integer_value(json_object_get(r, "_line"));
        json_t *copy;
        if (strcmp(cli_str(r, "type"), "_error") == 0) {
            reject(im, line, "invalid_argument", cli_str(r, "message"));
            continue;
        }
        copy = json_copy(r);
        json_object_del(copy, "_line");
        if (add_record(im, copy, line) != 0)
            break;
    }
    wipe_records(recs);
    json_decref(recs);
    if (skipped > 0 && !im->x->json)
        fprintf(stderr, "gatehouse: %zu LDIF entr%s neither user nor group skipped\n", skipped,
                skipped == 1 ? "y" : "ies");
    return im->fatal;
}

int cli_import(cli *x)
{
    const char *path = x->pos[0], *format = cli_opt(x, "format");
    long long batch = 1000, maxreq = 65536;
    int have, rc, ldif;
    importer im;
    FILE *f;
    static char iobuf[1 << 16];
    struct stat st;

    if ((rc = cli_opt_int(x, "batch", 1, 1000, &batch, &have)) != 0)
        return rc;
    if (!have)
        batch = 1000;
    if ((rc = cli_opt_int(x, "max-request", 1024, 1LL << 30, &maxreq, &have)) != 0)
        return rc;
    if (!have)
        maxreq = 65536;
    if (format == NULL) {
        size_t l = strlen(path);
        ldif = l > 5 && strcmp(path + l - 5, ".ldif") == 0;
    } else if (strcmp(format, "ldif") == 0) {
        ldif = 1;
    } else if (strcmp(format, "jsonl") == 0 || strcmp(format, "json") == 0) {
        ldif = 0;
    } else {
        return cli_usage(x, "--format must be jsonl or ldif, not '%s'", format);
    }
    memset(&im, 0, sizeof(im));
    im.x = x;
    if ((im.c = cli_client(x, &rc)) == NULL)
        return rc;
    if ((rc = gh_client_connect(im.c)) < 0)
        return cli_report(x, rc);
    if (strcmp(path, "-") == 0) {
        f = stdin;
    } else if ((f = fopen(path, "re")) == NULL) {
        return cli_usage(x, "cannot open %s: %s", path, strerror(errno));
    }
    setvbuf(f, iobuf, _IOFBF, sizeof(iobuf));
    im.batch_max = (size_t)batch;
    im.budget = (size_t)maxreq - REQUEST_OVERHEAD - 64;
    im.cur = json_array();
    im.rejects = x->json ? json_array() : NULL;
    cli_progress_start(
        &im.progress, fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0);
    if (ldif)
        import_ldif(&im, f, path);
    else
        import_jsonl(&im, f);
    if (!im.fatal)
        send_batch(&im);
    drain(&im);
    cli_progress_update(&im.progress, im.bytes_done, im.imported + im.rejected, 1);
    cli_progress_end(&im.progress);
    if (f != stdin)
        fclose(f);
    cli_wipe(iobuf, sizeof(iobuf));
    json_decref(im.cur);
    free(im.cur_lines);

    if (x->json) {
        json_t *out = json_pack("{sbsIsIsO}", "ok", !im.fatal && im.rejected == 0, "imported",
                                (json_int_t)im.imported, "rejected_count", (json_int_t)im.rejected,
                                "rejected", im.rejects);
        cli_print_json(out);
        json_decref(out);
    } else {
        printf("imported %llu record%s, rejected %llu\n", (unsigned long long)im.imported,
               im.imported == 1 ? "" : "s", (unsigned long long)im.rejected);
    }
    json_decref(im.rejects);
    if (im.fatal)
        return im.fatal;
    return im.rejected ? CLI_EXIT_DENIED : CLI_EXIT_OK;
}
