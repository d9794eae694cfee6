/*
 * store_backup.c: a consistent, compacted copy of the environment into a file
 * descriptor (mdb_env_copyfd2 with MDB_CP_COMPACT), for `backup`.
 *
 * The copy reads one snapshot: every transaction committed before it started
 * is in it, nothing committed later. It holds the read side of the map lock
 * for its whole length (its read transaction must not see the map resized
 * under it), and that lock prefers writers: a map growth waiting behind a
 * copy also holds back new readers. So copy only to local storage (a
 * temporary file), never straight into a peer that may stall.
 */
#include <pthread.h>

#include "schema/log.h"
#include "schema/store-int.h"

int gh_store_copy_fd(gh_store *s, int fd)
{
    int rc;

    if (s == NULL || fd < 0)
        return GH_EINVAL;
    pthread_rwlock_rdlock(&s->maplock);
    rc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&s->maplock);
    if (rc != 0) {
        GH_LOGE("store: backup copy: %s", mdb_strerror(rc));
        return rc == MDB_MAP_FULL ? GH_EFULL : GH_EIO;
    }
    return 0;
}
