/*
 * error.h: the one error space of Gatehouse.
 *
 * Every function in every module returns 0 or a negative GH_E* code. Each code
 * maps to exactly one stable protocol string (gh_error_code) that clients and
 * scripts match on; never renumber or rename a code, only append. Library
 * errors (LMDB, libuv, libldap) are converted at the module boundary and the
 * original is logged there.
 */
#ifndef GH_ERROR_H
#define GH_ERROR_H

enum {
    GH_OK = 0,
    GH_EBADREQ = -1,    /* "bad_request": not JSON, not an object, bad framing */
    GH_EUNKNOWNOP = -2, /* "unknown_op" */
    GH_ENOTFOUND = -3,  /* "not_found" */
    GH_EEXISTS = -4,    /* "exists" */
    GH_EINVAL = -5,     /* "invalid_argument": a field is missing, mistyped or out of range */
    GH_EPERM = -6,      /* "permission_denied" */
    GH_ECREDS = -7,     /* "invalid_credentials" */
    GH_ELOCKED = -8,    /* "account_locked" */
    GH_EDISABLED = -9,  /* "account_disabled" */
    GH_ERATE = -10,     /* "rate_limited" */
    GH_ETOKEN = -11,    /* "invalid_token" */
    GH_EINTERNAL = -12, /* "internal" */
    GH_ECYCLE = -13,    /* "cycle": a group nesting or role inheritance loop */
    GH_EINUSE = -14,    /* "in_use": still referenced (bound role, parent role) */
    GH_ETOOBIG = -15,   /* "too_large": request or field over its limit */
    GH_EFULL = -16,     /* "storage_full": map size reached its configured maximum */
    GH_EVERSION = -17,  /* "version_mismatch": database written by a newer Gatehouse */
    GH_EUNAVAIL = -18,  /* "unavailable": shutting down, upstream unreachable */
    GH_ENOMEM = -19,    /* "internal" on the wire, but kept apart for tests */
    GH_EIO = -20,       /* "internal" on the wire: disk or OS error */
    GH_E_LAST = -21
};

/* Stable protocol string of a code ("not_found"); "internal" for unknown codes. */
const char *gh_error_code(int err);
/* Short human description of a code. */
const char *gh_strerror(int err);
/* Inverse of gh_error_code: GH_EINTERNAL for an unknown string. */
int gh_error_from_code(const char *code);

#endif
