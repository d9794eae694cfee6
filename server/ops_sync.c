/*
 * ops_sync.c: the sync.* operations of the protocol (admin only).
 *
 * Both answer at once from the loop thread: sync.status copies the workers'
 * status under their locks, and sync.run only wakes a worker; the refresh
 * itself runs on that worker, never here.
 */
#include "server/ops.h"
#include "server/server.h"
#include "sync/sync.h"

static int op_sync_status(gh_opctx *c)
{
    int rc = gh_sync_status(c->srv->sync, c->resp);
    if (rc != 0)
        return gh_op_fail(c, rc, "cannot read the sync status");
    return 0;
}

static int op_sync_run(gh_opctx *c)
{
    const char *name;
    int full = 0, force = 0;
    int rc = gh_arg_str(c, "upstream", 1, GH_NAME_MAX, &name);
    if (rc != 0)
        return rc;
    rc = gh_arg_bool(c, "full", 0, &full);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    rc = gh_arg_bool(c, "force", 0, &force);
    if (rc != 0 && rc != GH_ENOTFOUND)
        return rc;
    rc = gh_sync_run_ex(c->srv->sync, name, full, force);
    if (rc == GH_ENOTFOUND)
        return gh_op_fail(c, rc, "no upstream named '%s'", name);
    if (rc != 0)
        return gh_op_fail(c, rc, "cannot start a sync of '%s'", name);
    return 0;
}

const gh_op_def gh__ops_sync[] = {
    /* the sync module is loop 0's */
    {"sync.status", op_sync_status, GH_OPF_LOOP0, GH_CLASS_ADMIN},
    {"sync.run", op_sync_run, GH_OPF_LOOP0, GH_CLASS_ADMIN},
    {NULL, NULL, 0, GH_CLASS_ADMIN},
};
