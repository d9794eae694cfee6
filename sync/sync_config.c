/*
 * sync_config.c: the [upstream:NAME] sections of gatehoused.conf.
 *
 * The config loader hands us each key of such a section; we keep one
 * gh_sync_upstream_cfg per name in cfg->upstreams and check the whole section
 * once the file is read (gh_sync_config_finish), which is also when the
 * bind password file is read. The password then lives only in this struct
 * and is wiped when the struct is freed. Every key is documented in
 * docs/SYNC.md; keep the two in step.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "schema/confkey.h"
#include "schema/error.h"
#include "schema/log.h"
#include "schema/schema.h"
#include "sync/sync-int.h"

enum {
    K_URI = 1u << 0,
    K_BASE = 1u << 1,
    K_BIND_DN = 1u << 2,
    K_PWFILE = 1u << 3,
    K_KEY = 1u << 4
};

typedef struct str_key {
    const char *name;
    size_t off;
    unsigned flag;
} str_key;

#define S(field) offsetof(struct gh_sync_upstream_cfg, field)
static const str_key str_keys[] = {{"uri", S(uri), K_URI},
                                   {"bind_dn", S(bind_dn), K_BIND_DN},
                                   {"bind_password_file", S(bind_password_file), K_PWFILE},
                                   {"base_dn", S(base_dn), K_BASE},
                                   {"user_filter", S(user_filter), 0},
                                   {"group_filter", S(group_filter), 0},
                                   {"login_attr", S(login_attr), 0},
                                   {"uid_number_attr", S(uid_number_attr), 0},
                                   {"gid_number_attr", S(gid_number_attr), 0},
                                   {"display_name_attr", S(display_name_attr), 0},
                                   {"mail_attr", S(mail_attr), 0},
                                   {"home_attr", S(home_attr), 0},
                                   {"shell_attr", S(shell_attr), 0},
                                   {"gecos_attr", S(gecos_attr), 0},
                                   {"key_attr", S(key_attr), K_KEY},
                                   {"group_name_attr", S(group_name_attr), 0},
                                   {"description_attr", S(description_attr), 0},
                                   {"ca_file", S(ca_file), 0},
                                   {"space_replacement", S(space_replacement), 0},
                                   {NULL, 0, 0}};
#undef S

/* Numbers and booleans, through the engine [server] uses too. */
#define N(field) offsetof(struct gh_sync_upstream_cfg, field)
#define YEARS10 (10ull * 365 * 86400)
static const gh_confkey num_keys[] = {
    {"interval", GH_CONFKEY_UINT, N(interval), 1, 86400},
    {"page_size", GH_CONFKEY_UINT, N(page_size), 1, 100000},
    {"timeout", GH_CONFKEY_UINT, N(timeout), 1, 3600},
    {"bind_timeout", GH_CONFKEY_UINT, N(bind_timeout), 1, 120},
    {"offline_max_age", GH_CONFKEY_I64, N(offline_max_age), 0, YEARS10},
    {"delete_grace", GH_CONFKEY_I64, N(delete_grace), 0, YEARS10},
    {"max_binds", GH_CONFKEY_UINT, N(max_binds), 1, 4096},
    {"max_binds_per_login", GH_CONFKEY_UINT, N(max_binds_per_login), 1, 4096},
    {"max_binds_per_peer", GH_CONFKEY_UINT, N(max_binds_per_peer), 1, 4096},
    {"full_interval", GH_CONFKEY_UINT, N(full_interval), 0, YEARS10},
    {"starttls", GH_CONFKEY_BOOL, N(starttls), 0, 1},
    {"offline_auth", GH_CONFKEY_BOOL, N(offline_auth), 0, 1},
    {"max_delete_ratio", GH_CONFKEY_RATIO, N(max_delete_ratio), 0, 1},
    {NULL, GH_CONFKEY_STR, 0, 0, 0}};
#undef YEARS10
#undef N

static char **str_field(struct gh_sync_upstream_cfg *u, size_t off)
{
    return (char **)(void *)((char *)u + off);
}

static void cfg_init_defaults(struct gh_sync_upstream_cfg *u)
{
    u->scope = LDAP_SCOPE_SUBTREE;
    u->mode = GH__SYNC_MODE_PERSIST;
    u->member_kind = GH__SYNC_MEMBER_DN;
    u->interval = 30;
    u->page_size = 500;
    u->timeout = 10;
    u->bind_timeout = 3;
    u->full_interval = 3600;
    u->max_binds = 32;
    u->max_binds_per_login = 2;
    u->max_binds_per_peer = 8;
    u->offline_auth = 0;
    u->offline_max_age = 86400;
    u->delete_grace = 7 * 86400;
    u->max_delete_ratio = 0.2;
}

static const struct {
    const char *key;
    const char *value;
} str_defaults[] = {{"uri", ""},
                    {"bind_dn", ""},
                    {"bind_password_file", ""},
                    {"base_dn", ""},
                    {"user_filter", "(objectClass=posixAccount)"},
                    {"group_filter", "(objectClass=groupOfNames)"},
                    {"login_attr", "uid"},
                    {"member_attr", "member"},
                    {"uid_number_attr", "uidNumber"},
                    {"gid_number_attr", "gidNumber"},
                    {"display_name_attr", "cn"},
                    {"mail_attr", "mail"},
                    {"home_attr", "homeDirectory"},
                    {"shell_attr", "loginShell"},
                    {"gecos_attr", "gecos"},
                    {"key_attr", "entryUUID"},
                    {"group_name_attr", "cn"},
                    {"description_attr", "description"},
                    {"ca_file", ""},
                    {"space_replacement", ""},
                    {NULL, NULL}};

/* flavor = ad: what an Active Directory needs, for every key not given. The
 * user filter leaves out computer accounts (they are objectClass=user too). */
static const struct {
    const char *key;
    const char *value;
} ad_defaults[] = {{"user_filter", "(&(objectCategory=person)(objectClass=user))"},
                   {"group_filter", "(objectClass=group)"},
                   {"login_attr", "sAMAccountName"},
                   {"key_attr", "objectGUID"},
                   {"display_name_attr", "displayName"},
                   {"group_name_attr", "sAMAccountName"},
                   {NULL, NULL}};

static int set_str(char **dst, const char *value)
{
    char *s = strdup(value);
    if (s == NULL)
        return GH_ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

static struct gh_sync_upstream_cfg *cfg_new(const char *name)
{
    struct gh_sync_upstream_cfg *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    snprintf(u->name, sizeof(u->name), "%s", name);
    cfg_init_defaults(u);
    for (size_t i = 0; str_defaults[i].key != NULL; i++) {
        char **dst = NULL;
        if (strcmp(str_defaults[i].key, "member_attr") == 0) {
            dst = &u->member_attr;
        } else {
            for (const str_key *k = str_keys; k->name != NULL; k++)
                if (strcmp(k->name, str_defaults[i].key) == 0)
                    dst = str_field(u, k->off);
        }
        if (dst == NULL || set_str(dst, str_defaults[i].value) != 0) {
            gh__sync_upstream_cfg_free(u);
            return NULL;
        }
    }
    return u;
}

void gh__sync_upstream_cfg_free(struct gh_sync_upstream_cfg *u)
{
    if (u == NULL)
        return;
    for (const str_key *k = str_keys; k->name != NULL; k++)
        free(*str_field(u, k->off));
    free(u->member_attr);
    free(u->uri_where);
    if (u->bind_password != NULL) {
        sodium_memzero(u->bind_password, strlen(u->bind_password));
        free(u->bind_password);
    }
    free(u);
}

void gh_sync_config_free(gh_sync_config *sc)
{
    for (size_t i = 0; i < sc->nupstreams; i++)
        gh__sync_upstream_cfg_free(sc->upstreams[i]);
    free(sc->upstreams);
    sc->upstreams = NULL;
    sc->nupstreams = 0;
}

struct gh_sync_upstream_cfg *gh__sync_upstream_cfg_dup(const struct gh_sync_upstream_cfg *src)
{
    struct gh_sync_upstream_cfg *u = malloc(sizeof(*u));
    if (u == NULL)
        return NULL;
    *u = *src;
    for (const str_key *k = str_keys; k->name != NULL; k++)
        *str_field(u, k->off) = NULL;
    u->member_attr = NULL;
    u->bind_password = NULL;
    u->uri_where = NULL;
    int bad = 0;
    for (const str_key *k = str_keys; k->name != NULL; k++) {
        const char *v = *str_field((struct gh_sync_upstream_cfg *)src, k->off);
        if (set_str(str_field(u, k->off), v != NULL ? v : "") != 0)
            bad = 1;
    }
    if (set_str(&u->member_attr, src->member_attr) != 0 ||
        set_str(&u->bind_password, src->bind_password != NULL ? src->bind_password : "") != 0)
        bad = 1;
    if (bad) {
        gh__sync_upstream_cfg_free(u);
        return NULL;
    }
    return u;
}

const char *gh__sync_mode_name(int mode)
{
    switch (mode) {
    case GH__SYNC_MODE_PERSIST:
        return "syncrepl-persist";
    case GH__SYNC_MODE_POLL:
        return "syncrepl-poll";
    default:
        return "search-poll";
    }
}

/* An attribute description: a name or an OID, options allowed. */
static int attr_valid(const char *v, int may_be_empty)
{
    if (v[0] == '\0')
        return may_be_empty ? 0 : -1;
    if (strlen(v) > 128)
        return -1;
    for (const char *p = v; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.' || *p == ';'))
            return -1;
    return 0;
}

/* A filter is checked for shape only (parenthesised, balanced): the upstream
 * parses it, and a bad one surfaces in sync.status at the first run. */
static int filter_valid(const char *v)
{
    size_t n = strlen(v);
    int depth = 0;
    if (n < 3 || v[0] != '(' || v[n - 1] != ')')
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '\\') {
            i++;
            continue;
        }
        if (v[i] == '(')
            depth++;
        else if (v[i] == ')' && --depth < 0)
            return -1;
        if (depth == 0 && i != n - 1)
            return -1;
    }
    return depth == 0 ? 0 : -1;
}

static struct gh_sync_upstream_cfg *find_or_add(gh_sync_config *cfg, const char *name, int *rc)
{
    for (size_t i = 0; i < cfg->nupstreams; i++)
        if (strcmp(cfg->upstreams[i]->name, name) == 0)
            return cfg->upstreams[i];
    struct gh_sync_upstream_cfg **v =
        realloc(cfg->upstreams, (cfg->nupstreams + 1) * sizeof(*cfg->upstreams));
    if (v == NULL) {
        *rc = GH_ENOMEM;
        return NULL;
    }
    cfg->upstreams = v;
    struct gh_sync_upstream_cfg *u = cfg_new(name);
    if (u == NULL) {
        *rc = GH_ENOMEM;
        return NULL;
    }
    cfg->upstreams[cfg->nupstreams++] = u;
    return u;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        if (msg != NULL && msglen > 0)                                                             \
            snprintf(msg, msglen, __VA_ARGS__);                                                    \
        return GH_EINVAL;                                                                          \
    } while (0)

int gh_sync_config_set(gh_sync_config *cfg, const char *path, int line, const char *name,
                       const char *key, const char *value, char *msg, size_t msglen)
{
    int rc = 0;

    if (gh_schema_name_valid(name, NULL, 0) != 0)
        FAIL("invalid upstream name '%s' (it must be a valid name: no spaces, no '/', ...)", name);
    struct gh_sync_upstream_cfg *u = find_or_add(cfg, name, &rc);
    if (u == NULL)
        FAIL("out of memory");

    for (const str_key *k = str_keys; k->name != NULL; k++) {
        if (strcmp(key, k->name) != 0)
            continue;
        if (strcmp(k->name, "space_replacement") == 0 &&
            (strlen(value) > 4 || strpbrk(value, " \t/,=*()\\+<>;\"#") != NULL))
            FAIL("space_replacement: '%s' must be at most 4 characters valid in a name", value);
        if (strstr(k->name, "_attr") != NULL &&
            attr_valid(value, strcmp(k->name, "key_attr") != 0 &&
                                  strcmp(k->name, "login_attr") != 0 &&
                                  strcmp(k->name, "group_name_attr") != 0) != 0)
            FAIL("%s: '%s' is not an attribute name", key, value);
        if (strcmp(k->name, "user_filter") == 0 || strcmp(k->name, "group_filter") == 0) {
            if (filter_valid(value) != 0)
                FAIL("%s: '%s' is not a parenthesised LDAP filter", key, value);
        }
        if (strcmp(k->name, "uri") == 0 && !ldap_is_ldap_url(value) &&
            strncmp(value, "ldapi://", 8) != 0 && strncmp(value, "ldaps://", 8) != 0)
            FAIL("uri: '%s' is not an ldap://, ldaps:// or ldapi:// URI", value);
        if (set_str(str_field(u, k->off), value) != 0)
            FAIL("out of memory");
        if (k->flag == K_URI && path != NULL) {
            free(u->uri_where);
            u->uri_where = NULL;
            if (asprintf(&u->uri_where, "%s:%d: ", path, line) < 0)
                u->uri_where = NULL;
        }
        u->seen |= k->flag;
        u->set_keys |= 1u << (k - str_keys);
        return 0;
    }
    if (strcmp(key, "flavor") == 0) {
        if (strcmp(value, "auto") == 0)
            u->flavor = GH__SYNC_FLAVOR_AUTO;
        else if (strcmp(value, "generic") == 0 || strcmp(value, "openldap") == 0)
            u->flavor = GH__SYNC_FLAVOR_GENERIC;
        else if (strcmp(value, "ad") == 0)
            u->flavor = GH__SYNC_FLAVOR_AD;
        else if (strcmp(value, "389ds") == 0)
            u->flavor = GH__SYNC_FLAVOR_389;
        else
            FAIL("flavor: '%s' is not auto, generic, ad or 389ds", value);
        return 0;
    }

    if (strcmp(key, "member_attr") == 0) {
        if (attr_valid(value, 0) != 0)
            FAIL("member_attr: '%s' is not an attribute name", value);
        u->member_kind =
            strcasecmp(value, "memberUid") == 0 ? GH__SYNC_MEMBER_UID : GH__SYNC_MEMBER_DN;
        if (set_str(&u->member_attr, value) != 0)
            FAIL("out of memory");
        return 0;
    }
    if (strcmp(key, "mode") == 0) {
        u->mode_set = 1;
        if (strcmp(value, "syncrepl-persist") == 0)
            u->mode = GH__SYNC_MODE_PERSIST;
        else if (strcmp(value, "syncrepl-poll") == 0)
            u->mode = GH__SYNC_MODE_POLL;
        else if (strcmp(value, "search-poll") == 0)
            u->mode = GH__SYNC_MODE_SEARCH;
        else
            FAIL("mode: '%s' is not syncrepl-persist, syncrepl-poll or search-poll", value);
        return 0;
    }
    if (strcmp(key, "scope") == 0) {
        if (strcmp(value, "sub") == 0 || strcmp(value, "subtree") == 0)
            u->scope = LDAP_SCOPE_SUBTREE;
        else if (strcmp(value, "one") == 0 || strcmp(value, "onelevel") == 0)
            u->scope = LDAP_SCOPE_ONELEVEL;
        else
            FAIL("scope: '%s' is not sub or one", value);
        return 0;
    }
    if (strcmp(key, "collision") == 0) {
        if (strcmp(value, "refuse") != 0)
            FAIL("collision: only 'refuse' is supported");
        return 0;
    }
    const gh_confkey *k = gh_confkey_find(num_keys, key);
    if (k != NULL)
        return gh_confkey_set(k, u, value, msg, msglen);
    FAIL("unknown key '%s' in [upstream:%s]", key, name);
}

/* Reads the first line of path (trailing newline stripped) into *out. */
static int read_password(const char *path, char **out, char *msg, size_t msglen)
{
    char buf[1024];
    struct stat st;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        FAIL("bind_password_file %s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 0004) != 0)
        GH_LOGW("bind_password_file %s is readable by everyone; chmod 0600 it", path);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *nl = strpbrk(buf, "\r\n");
    if (nl != NULL)
        *nl = '\0';
    n = strlen(buf);
    if (n == 0) {
        sodium_memzero(buf, sizeof(buf));
        FAIL("bind_password_file %s is empty (an empty simple bind is anonymous)", path);
    }
    *out = malloc(n + 1);
    if (*out != NULL)
        memcpy(*out, buf, n + 1);
    sodium_memzero(buf, sizeof(buf));
    if (*out == NULL)
        FAIL("out of memory");
    return 0;
}

static int is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (host == NULL || host[0] == '\0' || strcasecmp(host, "localhost") == 0)
        return 1; /* ldap:/// is the local host */
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

/* 1 when uri (a list) has an ldap:// URI to a host that is not loopback:
 * binds there would carry passwords in clear text. remote gets the host. */
static int clear_text_remote(const char *uri, char *remote, size_t remotelen)
{
    char *copy = strdup(uri), *save = NULL;
    int found = 0;
    if (copy == NULL)
        return 0;
    /* libldap takes a list separated by spaces or commas */
    for (char *t = strtok_r(copy, " \t,", &save); t != NULL && !found;
         t = strtok_r(NULL, " \t,", &save)) {
        LDAPURLDesc *d = NULL;
        if (strncasecmp(t, "ldap://", 7) != 0 || ldap_url_parse(t, &d) != LDAP_SUCCESS)
            continue;
        if (!is_loopback(d->lud_host)) {
            snprintf(remote, remotelen, "%s", d->lud_host);
            found = 1;
        }
        ldap_free_urldesc(d);
    }
    free(copy);
    return found;
}

int gh_sync_config_finish(gh_sync_config *cfg, char *msg, size_t msglen)
{
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        struct gh_sync_upstream_cfg *u = cfg->upstreams[i];
        LDAPDN dn = NULL;
        char remote[256];

        if (!(u->seen & K_URI))
            FAIL("[upstream:%s]: uri is required", u->name);
        if (!(u->seen & K_BASE))
            FAIL("[upstream:%s]: base_dn is required", u->name);
        if (ldap_str2dn(u->base_dn, &dn, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
            FAIL("[upstream:%s]: base_dn '%s' is not a DN", u->name, u->base_dn);
        ldap_dnfree(dn);
        if (u->bind_dn[0] != '\0') {
            dn = NULL;
            if (ldap_str2dn(u->bind_dn, &dn, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
                FAIL("[upstream:%s]: bind_dn '%s' is not a DN", u->name, u->bind_dn);
            ldap_dnfree(dn);
            if (!(u->seen & K_PWFILE))
                FAIL("[upstream:%s]: bind_dn needs bind_password_file", u->name);
        }
        if (u->bind_password_file[0] != '\0' && u->bind_password == NULL) {
            char m[GH_ERRMSG_MAX];
            if (read_password(u->bind_password_file, &u->bind_password, m, sizeof(m)) != 0)
                FAIL("[upstream:%s]: %s", u->name, m);
        }
        if (u->flavor == GH__SYNC_FLAVOR_AD) {
            for (size_t d = 0; ad_defaults[d].key != NULL; d++)
                for (const str_key *k = str_keys; k->name != NULL; k++)
                    if (strcmp(k->name, ad_defaults[d].key) == 0 &&
                        !(u->set_keys & (1u << (k - str_keys))) &&
                        set_str(str_field(u, k->off), ad_defaults[d].value) != 0)
                        FAIL("out of memory");
            if (!u->mode_set)
                u->mode = GH__SYNC_MODE_SEARCH;
            if (u->mode != GH__SYNC_MODE_SEARCH)
                FAIL("[upstream:%s]: flavor = ad needs mode = search-poll (Active Directory "
                     "has no RFC 4533 syncrepl)",
                     u->name);
        }
        if (u->mode != GH__SYNC_MODE_SEARCH && strcasecmp(u->key_attr, "entryUUID") != 0)
            FAIL("[upstream:%s]: key_attr %s needs mode = search-poll (syncrepl keys entries "
                 "by entryUUID)",
                 u->name, u->key_attr);
        if (!u->starttls && clear_text_remote(u->uri, remote, sizeof(remote)))
            FAIL("%s[upstream:%s]: uri %s would send every password in clear text to %s: add "
                 "starttls = yes (with ca_file = the CA that signed its certificate), or use "
                 "ldaps://",
                 u->uri_where != NULL ? u->uri_where : "", u->name, u->uri, remote);
        if (u->starttls && strncmp(u->uri, "ldap://", 7) != 0)
            FAIL("[upstream:%s]: starttls applies to ldap:// URIs only", u->name);
        if (u->ca_file[0] != '\0' && access(u->ca_file, R_OK) != 0)
            FAIL("[upstream:%s]: ca_file %s: %s", u->name, u->ca_file, strerror(errno));
        if (u->offline_auth && u->offline_max_age == 0)
            FAIL("[upstream:%s]: offline_auth = yes needs offline_max_age > 0", u->name);
    }
    return 0;
}

void gh__sync_upstream_fingerprint(const struct gh_sync_upstream_cfg *u, char out[33])
{
    crypto_generichash_state st;
    unsigned char h[16];
    const char *parts[] = {u->uri,
                           u->base_dn,
                           u->user_filter,
                           u->group_filter,
                           u->login_attr,
                           u->member_attr,
                           u->uid_number_attr,
                           u->gid_number_attr,
                           u->display_name_attr,
                           u->mail_attr,
                           u->key_attr,
                           u->group_name_attr,
                           u->description_attr,
                           u->space_replacement,
                           "keys-v2" /* objectGUID in AD's form */};
    char scope[8];
    crypto_generichash_init(&st, NULL, 0, sizeof(h));
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        crypto_generichash_update(&st, (const unsigned char *)parts[i], strlen(parts[i]) + 1);
    snprintf(scope, sizeof(scope), "%d/%d", u->scope, u->flavor);
    crypto_generichash_update(&st, (const unsigned char *)scope, strlen(scope) + 1);
    crypto_generichash_final(&st, h, sizeof(h));
    sodium_bin2hex(out, 33, h, sizeof(h));
}
