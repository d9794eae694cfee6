/*
 * error.c: the table behind error.h. The strings are the protocol's stable
 * error codes; docs/PROTOCOL.md lists the same table and must stay in step.
 */
#include <string.h>

#include "schema/error.h"

static const struct {
    int err;
    const char *code;
    const char *text;
} table[] = {
    {GH_OK, "ok", "success"},
    {GH_EBADREQ, "bad_request", "malformed request"},
    {GH_EUNKNOWNOP, "unknown_op", "unknown operation"},
    {GH_ENOTFOUND, "not_found", "no such object"},
    {GH_EEXISTS, "exists", "object already exists"},
    {GH_EINVAL, "invalid_argument", "invalid argument"},
    {GH_EPERM, "permission_denied", "permission denied"},
    {GH_ECREDS, "invalid_credentials", "invalid credentials"},
    {GH_ELOCKED, "account_locked", "account is locked"},
    {GH_EDISABLED, "account_disabled", "account is disabled"},
    {GH_ERATE, "rate_limited", "too many attempts, retry later"},
    {GH_ETOKEN, "invalid_token", "invalid or expired token"},
    {GH_EINTERNAL, "internal", "internal error"},
    {GH_ECYCLE, "cycle", "the change would create a cycle"},
    {GH_EINUSE, "in_use", "object is still referenced"},
    {GH_ETOOBIG, "too_large", "over the size limit"},
    {GH_EFULL, "storage_full", "database reached its maximum size"},
    {GH_EVERSION, "version_mismatch", "database schema is newer than this program"},
    {GH_EUNAVAIL, "unavailable", "service unavailable"},
    {GH_ENOMEM, "internal", "out of memory"},
    {GH_EIO, "internal", "input/output error"},
};

#define NTABLE (sizeof(table) / sizeof(table[0]))

const char *gh_error_code(int err)
{
    for (size_t i = 0; i < NTABLE; i++)
        if (table[i].err == err)
            return table[i].code;
    return "internal";
}

const char *gh_strerror(int err)
{
    for (size_t i = 0; i < NTABLE; i++)
        if (table[i].err == err)
            return table[i].text;
    return "unknown error";
}

int gh_error_from_code(const char *code)
{
    if (code == NULL)
        return GH_EINTERNAL;
    for (size_t i = 0; i < NTABLE; i++)
        if (strcmp(table[i].code, code) == 0)
            return table[i].err;
    return GH_EINTERNAL;
}
