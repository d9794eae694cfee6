/*
 * schema.h: the records of the data model, their limits, and the validation
 * rules every entry point shares (store, server, sync, CLI import).
 *
 * Records are plain structs with fixed-size text fields so that a record read
 * on the hot path costs no allocation; roles, whose rule lists are unbounded,
 * are the exception and live on the heap (gh_role_new / gh_role_free).
 * Validation functions return 0 or GH_EINVAL and write a reason into msg.
 */
#ifndef GH_SCHEMA_H
#define GH_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#define GH_SCHEMA_VERSION 4 /* on-disk layout version kept in the meta db */
#define GH_RECORD_VERSION 1 /* "v" of records this program writes */

#define GH_NAME_MAX 64      /* login, group, role and upstream names (bytes) */
#define GH_TEXT_MAX 256     /* display name, mail, description */
#define GH_VERIFIER_MAX 127 /* crypto_pwhash_STRBYTES - 1 */
#define GH_KEY_MAX 128      /* upstream stable key (entryUUID, objectGUID) */
#define GH_DN_MAX 1024      /* upstream DN */
#define GH_PATTERN_MAX 512  /* action and resource patterns, scopes */
#define GH_PATH_MAX 255     /* POSIX home directory and login shell */
#define GH_ERRMSG_MAX 256
#define GH_TOKEN_HASH_BYTES 32
#define GH_TOKEN_PEER_MAX 63 /* bytes of the peer that logged in, kept with a token */
#define GH_ROLE_RULES_MAX 4096
#define GH_ROLE_PARENTS_MAX 64

typedef enum gh_user_state {
    GH_USER_ACTIVE = 0,
    GH_USER_LOCKED = 1,
    GH_USER_DISABLED = 2
} gh_user_state;

/* Fields of gh_user for gh_store_user_update's mask. */
enum {
    GH_UF_NAME = 1u << 0,
    GH_UF_UID = 1u << 1,
    GH_UF_DISPLAY = 1u << 2,
    GH_UF_MAIL = 1u << 3,
    GH_UF_STATE = 1u << 4,
    GH_UF_VERIFIER = 1u << 5, /* verifier and verifier_time */
    GH_UF_ORIGIN = 1u << 6,   /* origin, origin_key, origin_dn */
    GH_UF_TOMBSTONE = 1u << 7,
    GH_UF_GID = 1u << 8,
    GH_UF_UPSTREAM = 1u << 9, /* upstream_flags, upstream_expires, origin_sid (sync only) */
    GH_UF_HOME = 1u << 10,
    GH_UF_SHELL = 1u << 11,
    GH_UF_GECOS = 1u << 12
};

/* Account state owned by an upstream (gh_user.upstream_flags): kept apart
 * from the local administrator's state so that neither overwrites the other. */
enum {
    GH_UPSTREAM_DISABLED = 1u << 0, /* AD ACCOUNTDISABLE, 389-ds nsAccountLock */
    GH_UPSTREAM_EXPIRED = 1u << 1,  /* AD accountExpires in the past */
    GH_UPSTREAM_LOCKED = 1u << 2    /* AD lockoutTime: locked out upstream (shown only) */
};

typedef struct gh_user {
    uint64_t id; /* immutable, assigned by the store */
    char name[GH_NAME_MAX + 1];
    uint32_t uid; /* numeric uid; 0 on add = assign the next free */
    uint32_t gid; /* primary gid number (0: none) */
    /* state is the effective state every reader checks; the store computes
     * it from admin_state (set by user.add/user.set: a write with
     * GH_UF_STATE sets admin_state to state), upstream_flags and tombstone
     * (gh_user_effective_state). */
    gh_user_state state;
    gh_user_state admin_state;
    uint32_t upstream_flags;         /* GH_UPSTREAM_* */
    char origin_sid[GH_KEY_MAX + 1]; /* AD objectSid, "" when none */
    int64_t upstream_expires;        /* AD accountExpires (unix s; 0: never), re-checked each run */
    char display_name[GH_TEXT_MAX + 1];
    char mail[GH_TEXT_MAX + 1];
    char verifier[GH_VERIFIER_MAX + 1]; /* crypto_pwhash_str string; "" = no password */
    int64_t verifier_time;              /* when verifier was set (offline verifier age) */
    char origin[GH_NAME_MAX + 1];       /* "" = local, else the upstream's name */
    char origin_key[GH_KEY_MAX + 1];    /* upstream stable key (entryUUID) */
    char origin_dn[GH_DN_MAX + 1];      /* upstream DN, used for binds */
    int64_t tombstone;                  /* upstream deleted it at this time (0: live) */
    int64_t created;
    int64_t modified;
    /* POSIX account fields ("" = the server's default: home_template,
     * default_shell, display_name); absent in records written before them */
    char home[GH_PATH_MAX + 1];
    char shell[GH_PATH_MAX + 1];
    char gecos[GH_TEXT_MAX + 1];
} gh_user;

enum {
    GH_GF_NAME = 1u << 0,
    GH_GF_GID = 1u << 1,
    GH_GF_DESCRIPTION = 1u << 2,
    GH_GF_ORIGIN = 1u << 3,
    GH_GF_TOMBSTONE = 1u << 4,
    GH_GF_UPSTREAM = 1u << 5 /* origin_sid (written by sync only) */
};

typedef struct gh_group {
    uint64_t id;
    char name[GH_NAME_MAX + 1];
    uint32_t gid; /* 0 on add = assign the next free */
    char description[GH_TEXT_MAX + 1];
    char origin[GH_NAME_MAX + 1];
    char origin_key[GH_KEY_MAX + 1];
    char origin_dn[GH_DN_MAX + 1];
    char origin_sid[GH_KEY_MAX + 1]; /* AD objectSid, "" when none */
    int64_t tombstone;
    int64_t created;
    int64_t modified;
} gh_group;

typedef enum gh_member_kind { GH_MEMBER_USER = 1, GH_MEMBER_GROUP = 2 } gh_member_kind;

typedef struct gh_member {
    gh_member_kind kind;
    uint64_t id;
} gh_member;

typedef enum gh_effect { GH_ALLOW = 0, GH_DENY = 1 } gh_effect;

typedef struct gh_rule {
    gh_effect effect;
    char *action; /* validated pattern, owned by the role */
    char *resource;
} gh_rule;

typedef struct gh_role {
    char name[GH_NAME_MAX + 1];
    char description[GH_TEXT_MAX + 1];
    size_t nrules;
    gh_rule *rules;
    size_t nparents;
    char (*parents)[GH_NAME_MAX + 1];
    int64_t created;
    int64_t modified;
} gh_role;

typedef struct gh_binding {
    uint64_t id;
    char role[GH_NAME_MAX + 1];
    gh_member subject;              /* a user or a group */
    char scope[GH_PATTERN_MAX + 1]; /* "" = unscoped */
    int64_t created;
} gh_binding;

typedef struct gh_token {
    uint8_t hash[GH_TOKEN_HASH_BYTES]; /* keyed hash of the secret token */
    uint64_t user_id;
    int64_t created;
    int64_t expires;
    char peer[GH_TOKEN_PEER_MAX + 1]; /* who logged in ("uid:1000", "tcp:127.0.0.1"); "" unknown */
} gh_token;

/* ---- roles on the heap ---- */
/* NULL when out of memory or name is longer than GH_NAME_MAX. Rules and
 * parents must be appended only through the functions below. */
gh_role *gh_role_new(const char *name);
/* Appends a rule (strings copied). 0 or GH_ENOMEM / GH_ETOOBIG. */
int gh_role_add_rule(gh_role *r, gh_effect effect, const char *action, const char *resource);
int gh_role_add_parent(gh_role *r, const char *parent);
gh_role *gh_role_dup(const gh_role *r);
void gh_role_free(gh_role *r);

/* ---- validation (msg may be NULL; msglen bytes) ---- */

/* Login, group, role and upstream names: 1..GH_NAME_MAX bytes of valid UTF-8,
 * no control characters, no '/', ',', '=', '*', '(', ')', '\\', '+', '<', '>',
 * ';', '"', '#', NUL or whitespace, no leading '-' or '.'. */
int gh_schema_name_valid(const char *name, char *msg, size_t msglen);
/* Free text (display name, mail, description): valid UTF-8, no control chars,
 * at most max bytes. */
int gh_schema_text_valid(const char *what, const char *s, size_t max, char *msg, size_t msglen);
int gh_schema_utf8_valid(const char *s, size_t len);
/* A POSIX account field as it goes into a passwd line: text as above without
 * ':' (the field separator); with path set it must also be "" or absolute. */
int gh_schema_posix_valid(const char *what, const char *s, size_t max, int path, char *msg,
                          size_t msglen);
/* Action pattern: "deploy", "*", or "prefix:*"; [A-Za-z0-9._:-] otherwise. */
int gh_schema_action_valid(const char *pattern, char *msg, size_t msglen);
/* Resource pattern: '/'-separated non-empty segments; "*" matches one segment,
 * a final "**" matches zero or more; no '*' inside a literal segment.
 * Literal segments use [A-Za-z0-9._:@~+=-] and are never "." or "..";
 * at most GH_PATTERN_MAX bytes. */
int gh_schema_resource_valid(const char *pattern, char *msg, size_t msglen);
/* A concrete resource in a request (no wildcards, non-empty segments). */
int gh_schema_resource_concrete_valid(const char *resource, char *msg, size_t msglen);

const char *gh_user_state_name(gh_user_state s); /* "active", "locked", "disabled" */
int gh_user_state_parse(const char *s, gh_user_state *out);

/* A user's passwd view (schema/posix.c), the one rule of every front-end
 * (NSS, LDAP): home = the user's home, else home_template with %u (login),
 * %U (uid) and %% expanded; shell = the user's, else default_shell; gecos =
 * the user's, else the display name (may be ""); gid = the user's, else its
 * uid with user_private_groups, else 0 (none: NSS does not serve the user). */
typedef struct gh_posix_defaults {
    const char *home_template; /* "/home/%u" */
    const char *default_shell; /* "/bin/sh" */
    int user_private_groups;
} gh_posix_defaults;
uint32_t gh_user_posix_gid(const gh_user *u, const gh_posix_defaults *d);
void gh_user_posix_home(const gh_user *u, const gh_posix_defaults *d, char *out, size_t outlen);
const char *gh_user_posix_shell(const gh_user *u, const gh_posix_defaults *d);
const char *gh_user_posix_gecos(const gh_user *u);
/* The local administrator's lock or disable wins; else an upstream tombstone,
 * GH_UPSTREAM_DISABLED or _EXPIRED make it disabled (_LOCKED is only shown:
 * the upstream's bind enforces a lockout, which ends by time). */
gh_user_state gh_user_effective_state(const gh_user *u);

#endif
