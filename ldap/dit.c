/*
 * dit.c: the directory tree Gatehouse shows over LDAP, and its schema.
 *
 *   <suffix>                         dcObject + organization
 *   ou=people,<suffix>               uid=NAME: inetOrgPerson + posixAccount
 *   ou=groups,<suffix>               cn=NAME: groupOfNames + posixGroup
 *   ""  (RootDSE), cn=Subschema
 *
 * Entries are never stored: each is a view computed from a user or group
 * record inside the caller's read transaction. The one thing to know: every
 * value compared in a filter goes through gh__ldap_normalize for its
 * attribute's syntax, on both sides, so DNs, case and spaces compare the way
 * slapd compares them; a userPassword is known only to be refused.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <ldap.h>

#include "ldap/ldap-int.h"

/* clang-format off */
const gh_ldap_attrdef gh__ldap_attrs[LA_COUNT] = {
    [LA_OBJECTCLASS] = {"objectClass", NULL, "2.5.4.0", SX_OID, 0, 0},
    [LA_UID] = {"uid", "userid", "0.9.2342.19200300.100.1.1", SX_CI, 0, 0},
    [LA_CN] = {"cn", "commonName", "2.5.4.3", SX_CI, 0, 0},
    [LA_SN] = {"sn", "surname", "2.5.4.4", SX_CI, 0, 0},
    [LA_DISPLAYNAME] = {"displayName", NULL, "2.16.840.1.113730.3.1.241", SX_CI, 0, 1},
    [LA_GECOS] = {"gecos", NULL, "1.3.6.1.1.1.1.2", SX_CI, 0, 1},
    [LA_MAIL] = {"mail", "rfc822Mailbox", "0.9.2342.19200300.100.1.3", SX_CI, 0, 0},
    [LA_UIDNUMBER] = {"uidNumber", NULL, "1.3.6.1.1.1.1.0", SX_INT, 0, 1},
    [LA_GIDNUMBER] = {"gidNumber", NULL, "1.3.6.1.1.1.1.1", SX_INT, 0, 1},
    [LA_HOMEDIR] = {"homeDirectory", NULL, "1.3.6.1.1.1.1.3", SX_CE, 0, 1},
    [LA_LOGINSHELL] = {"loginShell", NULL, "1.3.6.1.1.1.1.4", SX_CE, 0, 1},
    [LA_MEMBEROF] = {"memberOf", NULL, "1.2.840.113556.1.2.102", SX_DN, 0, 0},
    [LA_MEMBER] = {"member", NULL, "2.5.4.31", SX_DN, 0, 0},
    [LA_MEMBERUID] = {"memberUid", NULL, "1.3.6.1.1.1.1.12", SX_CE, 0, 0},
    [LA_DESCRIPTION] = {"description", NULL, "2.5.4.13", SX_CI, 0, 0},
    [LA_OU] = {"ou", "organizationalUnitName", "2.5.4.11", SX_CI, 0, 0},
    [LA_DC] = {"dc", "domainComponent", "0.9.2342.19200300.100.1.25", SX_CI, 0, 1},
    [LA_O] = {"o", "organizationName", "2.5.4.10", SX_CI, 0, 0},
    [LA_USERPASSWORD] = {"userPassword", NULL, "2.5.4.35", SX_CE, 0, 0},
    [LA_ENTRYUUID] = {"entryUUID", NULL, "1.3.6.1.1.16.4", SX_CI, 1, 1},
    [LA_ENTRYDN] = {"entryDN", NULL, "1.3.6.1.1.20", SX_DN, 1, 1},
    [LA_CREATETS] = {"createTimestamp", NULL, "2.5.18.1", SX_TIME, 1, 1},
    [LA_MODIFYTS] = {"modifyTimestamp", NULL, "2.5.18.2", SX_TIME, 1, 1},
    [LA_STRUCTURALOC] = {"structuralObjectClass", NULL, "2.5.21.9", SX_OID, 1, 1},
    [LA_SUBSCHEMASUBENTRY] = {"subschemaSubentry", NULL, "2.5.18.10", SX_DN, 1, 1},
    [LA_HASSUBORDINATES] = {"hasSubordinates", NULL, "2.5.18.9", SX_BOOL, 1, 1},
    [LA_NAMINGCONTEXTS] = {"namingContexts", NULL, "1.3.6.1.4.1.1466.101.120.5", SX_DN, 1, 0},
    [LA_SUPPORTEDCONTROL] = {"supportedControl", NULL, "1.3.6.1.4.1.1466.101.120.13", SX_OID, 1, 0},
    [LA_SUPPORTEDEXTENSION] = {"supportedExtension", NULL, "1.3.6.1.4.1.1466.101.120.7", SX_OID, 1, 0},
    [LA_SUPPORTEDFEATURES] = {"supportedFeatures", NULL, "1.3.6.1.4.1.4203.1.3.5", SX_OID, 1, 0},
    [LA_SUPPORTEDLDAPVERSION] = {"supportedLDAPVersion", NULL, "1.3.6.1.4.1.1466.101.120.15", SX_INT, 1, 0},
    [LA_SUPPORTEDSASL] = {"supportedSASLMechanisms", NULL, "1.3.6.1.4.1.1466.101.120.14", SX_CI, 1, 0},
    [LA_VENDORNAME] = {"vendorName", NULL, "1.3.6.1.1.4", SX_CE, 1, 1},
    [LA_VENDORVERSION] = {"vendorVersion", NULL, "1.3.6.1.1.5", SX_CE, 1, 1},
    [LA_OBJECTCLASSES] = {"objectClasses", NULL, "2.5.21.6", SX_DESC, 1, 0},
    [LA_ATTRIBUTETYPES] = {"attributeTypes", NULL, "2.5.21.5", SX_DESC, 1, 0},
    [LA_LDAPSYNTAXES] = {"ldapSyntaxes", NULL, "1.3.6.1.4.1.1466.101.120.16", SX_DESC, 1, 0},
    [LA_MATCHINGRULES] = {"matchingRules", NULL, "2.5.21.4", SX_DESC, 1, 0},
};

static const char *const object_classes[] = {
    "( 2.5.6.0 NAME 'top' ABSTRACT MUST objectClass )",
    "( 2.5.6.6 NAME 'person' SUP top STRUCTURAL MUST ( sn $ cn ) MAY ( userPassword $ description ) )",
    "( 2.5.6.7 NAME 'organizationalPerson' SUP person STRUCTURAL MAY ( ou ) )",
    "( 2.16.840.1.113730.3.2.2 NAME 'inetOrgPerson' SUP organizationalPerson STRUCTURAL "
    "MAY ( displayName $ mail $ uid ) )",
    "( 1.3.6.1.1.1.2.0 NAME 'posixAccount' SUP top AUXILIARY MUST ( cn $ uid $ uidNumber $ "
    "gidNumber $ homeDirectory ) MAY ( userPassword $ loginShell $ gecos $ description ) )",
    "( 1.3.6.1.1.1.2.2 NAME 'posixGroup' SUP top AUXILIARY MUST gidNumber "
    "MAY ( userPassword $ memberUid $ description ) )",
    "( 2.5.6.9 NAME 'groupOfNames' SUP top STRUCTURAL MUST cn MAY ( member $ description $ o $ ou ) )",
    "( 2.5.6.5 NAME 'organizationalUnit' SUP top STRUCTURAL MUST ou MAY description )",
    "( 2.5.6.4 NAME 'organization' SUP top STRUCTURAL MUST o MAY description )",
    "( 1.3.6.1.4.1.1466.344 NAME 'dcObject' SUP top AUXILIARY MUST dc )",
    "( 2.5.20.1 NAME 'subschema' AUXILIARY MAY ( objectClasses $ attributeTypes $ "
    "ldapSyntaxes $ matchingRules ) )",
    NULL,
};
/* clang-format on */

static const char *syntax_rules(gh_ldap_syntax sx)
{
    switch (sx) {
    case SX_CI:
        return "EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch "
               "SYNTAX 1.3.6.1.4.1.1466.115.121.1.15";
    case SX_CE:
        return "EQUALITY caseExactIA5Match SUBSTR caseExactIA5SubstringsMatch "
               "SYNTAX 1.3.6.1.4.1.1466.115.121.1.26";
    case SX_INT:
        return "EQUALITY integerMatch ORDERING integerOrderingMatch "
               "SYNTAX 1.3.6.1.4.1.1466.115.121.1.27";
    case SX_DN:
        return "EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12";
    case SX_TIME:
        return "EQUALITY generalizedTimeMatch ORDERING generalizedTimeOrderingMatch "
               "SYNTAX 1.3.6.1.4.1.1466.115.121.1.24";
    case SX_OID:
        return "EQUALITY objectIdentifierMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.38";
    case SX_BOOL:
        return "EQUALITY booleanMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.7";
    default:
        return "EQUALITY objectIdentifierFirstComponentMatch "
               "SYNTAX 1.3.6.1.4.1.1466.115.121.1.3";
    }
}

static const char *const syntaxes[] = {
    "( 1.3.6.1.4.1.1466.115.121.1.15 DESC 'Directory String' )",
    "( 1.3.6.1.4.1.1466.115.121.1.26 DESC 'IA5 String' )",
    "( 1.3.6.1.4.1.1466.115.121.1.27 DESC 'INTEGER' )",
    "( 1.3.6.1.4.1.1466.115.121.1.12 DESC 'Distinguished Name' )",
    "( 1.3.6.1.4.1.1466.115.121.1.24 DESC 'Generalized Time' )",
    "( 1.3.6.1.4.1.1466.115.121.1.38 DESC 'OID' )",
    "( 1.3.6.1.4.1.1466.115.121.1.7 DESC 'Boolean' )",
    "( 1.3.6.1.4.1.1466.115.121.1.3 DESC 'Attribute Type Description' )",
    NULL,
};

static const char *const matching_rules[] = {
    "( 2.5.13.2 NAME 'caseIgnoreMatch' SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )",
    "( 2.5.13.4 NAME 'caseIgnoreSubstringsMatch' SYNTAX 1.3.6.1.4.1.1466.115.121.1.58 )",
    "( 1.3.6.1.4.1.1466.109.114.1 NAME 'caseExactIA5Match' SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 "
    ")",
    "( 2.5.13.14 NAME 'integerMatch' SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 )",
    "( 2.5.13.15 NAME 'integerOrderingMatch' SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 )",
    "( 2.5.13.1 NAME 'distinguishedNameMatch' SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )",
    "( 2.5.13.27 NAME 'generalizedTimeMatch' SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 )",
    "( 2.5.13.0 NAME 'objectIdentifierMatch' SYNTAX 1.3.6.1.4.1.1466.115.121.1.38 )",
    "( 1.2.840.113556.1.4.1941 NAME 'inChainMatch' SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )",
    NULL,
};

int gh__ldap_attr_id(const char *name, size_t len)
{
    const char *semi = memchr(name, ';', len); /* options ("userCertificate;binary") */
    if (semi)
        len = (size_t)(semi - name);
    if (len == 0)
        return LA_UNKNOWN;
    int first = tolower((unsigned char)name[0]);
    for (int i = 0; i < LA_COUNT; i++) {
        const gh_ldap_attrdef *d = &gh__ldap_attrs[i];
        /* the first character rules out nearly every entry cheaply */
        if ((tolower((unsigned char)d->name[0]) == first && strlen(d->name) == len &&
             strncasecmp(d->name, name, len) == 0) ||
            (d->alias && tolower((unsigned char)d->alias[0]) == first && strlen(d->alias) == len &&
             strncasecmp(d->alias, name, len) == 0) ||
            (d->oid[0] == name[0] && strlen(d->oid) == len && memcmp(d->oid, name, len) == 0))
            return i;
    }
    return LA_UNKNOWN;
}

/* ---- normalisation ---- */

static char *fold(const char *v, size_t len, size_t *outlen, int casefold)
{
    char *o = malloc(len + 1);
    size_t n = 0;
    int space = 0;
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch == ' ') {
            space = n > 0;
            continue;
        }
        if (space)
            o[n++] = ' ';
        space = 0;
        o[n++] = casefold && ch < 0x80 ? (char)tolower(ch) : (char)ch;
    }
    o[n] = '\0';
    *outlen = n;
    return o;
}

/* Appends s (escaped where a DN needs it) to buf. */
static int dn_put(char *buf, size_t cap, size_t *n, const char *s, size_t len, int lower)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (*n + 4 >= cap)
            return -1;
        if (ch < 0x20 || strchr(",=+\\\"<>;#", ch) != NULL) {
            *n += (size_t)snprintf(buf + *n, cap - *n, "\\%02x", ch);
            continue;
        }
        buf[(*n)++] = lower && ch < 0x80 ? (char)tolower(ch) : (char)ch;
    }
    buf[*n] = '\0';
    return 0;
}

/* Whether v is a DN in the plain form clients usually send (ASCII, no
 * spaces, escapes, quotes or multi-valued RDNs, one '=' per RDN): then its
 * normal form is computed without liblber's parser, with the same result. */
static int dn_plain(const char *v, size_t len)
{
    int eq = 0, attr = 0, value = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '\\' || ch == '"' || ch == '+' || ch == ';' ||
            ch == '<' || ch == '>' || ch == '#')
            return 0;
        if (ch == ',') {
            if (!eq || !attr || !value)
                return 0;
            eq = attr = value = 0;
        } else if (ch == '=') {
            if (eq++ || !attr)
                return 0;
        } else if (eq) {
            value = 1;
        } else {
            if (!isalnum(ch) && ch != '-' && ch != '.')
                return 0;
            attr = 1;
        }
    }
    return eq == 1 && attr && value;
}

static int dn_norm_plain(const char *v, size_t len, char *buf, size_t cap)
{
    size_t n = 0, i = 0;
    while (i < len) {
        size_t eq = i, end;
        while (v[eq] != '=')
            eq++;
        for (end = eq; end < len && v[end] != ','; end++)
            ;
        int id = gh__ldap_attr_id(v + i, eq - i);
        const char *an = id >= 0 ? gh__ldap_attrs[id].name : v + i;
        size_t al = id >= 0 ? strlen(an) : eq - i;
        if (n + al + (end - eq) + 2 >= cap)
            return GH_ETOOBIG;
        if (n > 0)
            buf[n++] = ',';
        for (size_t k = 0; k < al; k++)
            buf[n++] = (char)tolower((unsigned char)an[k]);
        for (size_t k = eq; k < end; k++) /* '=' and the value */
            buf[n++] = (char)tolower((unsigned char)v[k]);
        i = end + 1;
    }
    buf[n] = '\0';
    return 0;
}

/* "UID=Alice , OU=People,dc=X" -> "uid=alice,ou=people,dc=x". */
int gh__ldap_dn_norm(const char *v, size_t len, char *buf, size_t cap)
{
    if (len > 0 && dn_plain(v, len))
        return dn_norm_plain(v, len, buf, cap);
    return gh__ldap_dn_norm_parsed(v, len, buf, cap);
}

int gh__ldap_dn_norm_parsed(const char *v, size_t len, char *buf, size_t cap)
{
    LDAPDN dn = NULL;
    struct berval bv = {len, (char *)v};
    size_t n = 0;
    int rc = 0;
    buf[0] = '\0';
    if (len == 0)
        return 0;
    if (ldap_bv2dn(&bv, &dn, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
        return GH_EINVAL;
    for (int i = 0; dn && dn[i]; i++) {
        for (int j = 0; dn[i][j]; j++) {
            LDAPAVA *ava = dn[i][j];
            int id = gh__ldap_attr_id(ava->la_attr.bv_val, ava->la_attr.bv_len);
            const char *an = id >= 0 ? gh__ldap_attrs[id].name : ava->la_attr.bv_val;
            size_t al = id >= 0 ? strlen(an) : ava->la_attr.bv_len;
            if ((i > 0 || j > 0) && n + 1 < cap)
                buf[n++] = j > 0 ? '+' : ',';
            if (dn_put(buf, cap, &n, an, al, 1) != 0 || n + 1 >= cap) {
                rc = GH_ETOOBIG;
                goto done;
            }
            buf[n++] = '=';
            size_t vl;
            char *fv = fold(ava->la_value.bv_val, ava->la_value.bv_len, &vl, 1);
            if (fv == NULL) {
                rc = GH_ENOMEM;
                goto done;
            }
            rc = dn_put(buf, cap, &n, fv, vl, 1);
            free(fv);
            if (rc != 0) {
                rc = GH_ETOOBIG;
                goto done;
            }
        }
    }
done:
    ldap_dnfree(dn);
    return rc;
}

char *gh__ldap_normalize(gh_ldap_syntax sx, const char *v, size_t len, size_t *outlen)
{
    switch (sx) {
    case SX_INT: {
        char tmp[32];
        size_t i = 0;
        int neg = 0;
        uint64_t x = 0;
        while (i < len && v[i] == ' ')
            i++;
        if (i < len && v[i] == '-') {
            neg = 1;
            i++;
        }
        if (i == len)
            return NULL;
        for (; i < len; i++) {
            if (v[i] < '0' || v[i] > '9' || x > UINT64_MAX / 100)
                return NULL;
            x = x * 10 + (uint64_t)(v[i] - '0');
        }
        if (neg && x == 0)
            neg = 0;
        snprintf(tmp, sizeof(tmp), "%s%" PRIu64, neg ? "-" : "", x);
        *outlen = strlen(tmp);
        return strdup(tmp);
    }
    case SX_DN: {
        char buf[GH_DN_MAX + 1];
        if (gh__ldap_dn_norm(v, len, buf, sizeof(buf)) != 0)
            return NULL;
        *outlen = strlen(buf);
        return strdup(buf);
    }
    case SX_BOOL:
        if (len == 4 && strncasecmp(v, "TRUE", 4) == 0)
            return *outlen = 4, strdup("true");
        if (len == 5 && strncasecmp(v, "FALSE", 5) == 0)
            return *outlen = 5, strdup("false");
        return NULL;
    case SX_CE:
        return fold(v, len, outlen, 0);
    default:
        return fold(v, len, outlen, 1);
    }
}

/* ---- the front-end ---- */

int gh_ldap_new(gh_ldap **out, const gh_ldap_opts *opts)
{
    gh_ldap *l = calloc(1, sizeof(*l));
    const char *sfx = opts && opts->suffix && opts->suffix[0] ? opts->suffix : "dc=gatehouse";
    if (l == NULL)
        return GH_ENOMEM;
    if (strlen(sfx) >= sizeof(l->suffix) ||
        gh__ldap_dn_norm(sfx, strlen(sfx), l->suffix_norm, sizeof(l->suffix_norm)) != 0 ||
        l->suffix_norm[0] == '\0') {
        free(l);
        return GH_EINVAL;
    }
    snprintf(l->suffix, sizeof(l->suffix), "%s", sfx);
    l->max_message = opts && opts->max_message ? opts->max_message : 1u << 20;
    l->max_scan = opts && opts->max_scan ? opts->max_scan : 100000;
    snprintf(l->home_template, sizeof(l->home_template), "%s",
             opts && opts->posix.home_template ? opts->posix.home_template : "/home/%u");
    snprintf(l->shell, sizeof(l->shell), "%s",
             opts && opts->posix.default_shell ? opts->posix.default_shell : "/bin/sh");
    l->posix.home_template = l->home_template;
    l->posix.default_shell = l->shell;
    l->posix.user_private_groups = opts ? opts->posix.user_private_groups : 0;
    snprintf(l->vendor_ver, sizeof(l->vendor_ver), "%s",
             opts && opts->vendor_ver ? opts->vendor_ver : "");
    *out = l;
    return 0;
}

void gh_ldap_free(gh_ldap *l)
{
    free(l);
}

const char *gh_ldap_suffix(const gh_ldap *l)
{
    return l->suffix;
}

void gh_ldap_user_dn(const gh_ldap *l, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "uid=%s,ou=people,%s", name, l->suffix);
}

static void group_dn(const gh_ldap *l, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "cn=%s,ou=groups,%s", name, l->suffix);
}

/* Where a DN points in the tree. For users and groups, name gets the RDN
 * value as written (names are case-sensitive in the store). */
int gh__ldap_dn_locate(const gh_ldap *l, const char *v, size_t len, char *name, size_t namelen)
{
    char norm[GH_DN_MAX + 1];
    LDAPDN dn = NULL;
    struct berval bv = {len, (char *)v};
    int where = DL_NONE;
    name[0] = '\0';
    if (gh__ldap_dn_norm(v, len, norm, sizeof(norm)) != 0)
        return DL_INVALID;
    if (norm[0] == '\0')
        return DL_ROOTDSE;
    if (strcmp(norm, "cn=subschema") == 0)
        return DL_SUBSCHEMA;
    size_t nl = strlen(norm), sl = strlen(l->suffix_norm);
    if (nl == sl && strcmp(norm, l->suffix_norm) == 0)
        return DL_SUFFIX;
    if (nl <= sl + 1 || norm[nl - sl - 1] != ',' || strcmp(norm + nl - sl, l->suffix_norm) != 0)
        return DL_OUTSIDE;
    norm[nl - sl - 1] = '\0';
    if (strcmp(norm, "ou=people") == 0)
        return DL_PEOPLE;
    if (strcmp(norm, "ou=groups") == 0)
        return DL_GROUPS;
    const char *comma = strchr(norm, ',');
    if (comma == NULL)
        return DL_NOSUCH;
    int kind = strcmp(comma + 1, "ou=people") == 0 && strncmp(norm, "uid=", 4) == 0 ? DL_USER
               : strcmp(comma + 1, "ou=groups") == 0 && strncmp(norm, "cn=", 3) == 0
                   ? DL_GROUP
                   : DL_NOSUCH_UNDER;
    if (kind == DL_NOSUCH_UNDER)
        return strstr(norm, ",ou=people") || strstr(norm, ",ou=groups") ? DL_NOSUCH_UNDER
                                                                        : DL_NOSUCH;
    /* the value as written: from the first RDN */
    if (dn_plain(v, len)) {
        const char *eq = memchr(v, '=', len), *end = memchr(v, ',', len);
        size_t vl = (size_t)(end - eq - 1);
        if (vl == 0 || vl >= namelen)
            return DL_NOSUCH_UNDER;
        memcpy(name, eq + 1, vl);
        name[vl] = '\0';
        return kind;
    }
    if (ldap_bv2dn(&bv, &dn, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS || dn == NULL || !dn[0] ||
        !dn[0][0] || dn[0][1] != NULL) {
        ldap_dnfree(dn);
        return DL_NOSUCH_UNDER;
    }
    struct berval *val = &dn[0][0]->la_value;
    if (val->bv_len == 0 || val->bv_len >= namelen || memchr(val->bv_val, '\0', val->bv_len)) {
        where = DL_NOSUCH_UNDER;
    } else {
        memcpy(name, val->bv_val, val->bv_len);
        name[val->bv_len] = '\0';
        where = kind;
    }
    ldap_dnfree(dn);
    return where;
}

int gh_ldap_dn_user(const gh_ldap *l, const struct berval *dn, int bare, char *name, size_t len)
{
    if (bare && dn->bv_len > 0 && dn->bv_len < len && memchr(dn->bv_val, '=', dn->bv_len) == NULL) {
        memcpy(name, dn->bv_val, dn->bv_len);
        name[dn->bv_len] = '\0';
        return 0;
    }
    return gh__ldap_dn_locate(l, dn->bv_val, dn->bv_len, name, len) == DL_USER ? 0 : GH_ENOTFOUND;
}

/* ---- entries ---- */

static void fmt_time(int64_t t, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, len, "%Y%m%d%H%M%SZ", &tm);
}

static void fmt_uuid(int kind, uint64_t id, char *buf, size_t len)
{
    /* stable and distinct per record: a name-free UUID built from the id */
    snprintf(buf, len, "%08x-0000-4000-8000-%012" PRIx64,
             kind == DL_USER ? 0x75736572u : 0x67727570u, (uint64_t)(id & 0xffffffffffffull));
}

int gh__ldap_uuid_parse(const char *v, int *kind, uint64_t *id)
{
    unsigned tag;
    uint64_t x;
    char tail;
    if (sscanf(v, "%8x-0000-4000-8000-%12" SCNx64 "%c", &tag, &x, &tail) != 2)
        return GH_EINVAL;
    if (tag == 0x75736572u)
        *kind = DL_USER;
    else if (tag == 0x67727570u)
        *kind = DL_GROUP;
    else
        return GH_EINVAL;
    *id = x;
    return 0;
}

#define PUT(s) ((rc = cb(arg, (s), strlen(s))) != 0 ? rc : 0)

typedef struct mctx {
    gh_txn *txn;
    const gh_ldap *l;
    int attr;
    gh_ldap_value_cb cb;
    void *arg;
    int rc;
} mctx;

static int memberof_cb(uint64_t id, void *arg)
{
    mctx *m = arg;
    gh_group g;
    char dn[GH_DN_MAX + 1];
    if (gh_store_group_get_by_id(m->txn, id, &g) != 0)
        return 0;
    group_dn(m->l, g.name, dn, sizeof(dn));
    m->rc = m->cb(m->arg, dn, strlen(dn));
    return m->rc;
}

static int member_cb(gh_member mem, void *arg)
{
    mctx *m = arg;
    char dn[GH_DN_MAX + 1];
    if (mem.kind == GH_MEMBER_USER) {
        gh_user u;
        if (gh_store_user_get_by_id(m->txn, mem.id, &u) != 0)
            return 0;
        if (m->attr == LA_MEMBERUID) {
            m->rc = m->cb(m->arg, u.name, strlen(u.name));
            return m->rc;
        }
        gh_ldap_user_dn(m->l, u.name, dn, sizeof(dn));
    } else {
        gh_group g;
        if (m->attr == LA_MEMBERUID || gh_store_group_get_by_id(m->txn, mem.id, &g) != 0)
            return 0;
        group_dn(m->l, g.name, dn, sizeof(dn));
    }
    m->rc = m->cb(m->arg, dn, strlen(dn));
    return m->rc;
}

int gh__ldap_entry_dn(const gh_ldap *l, const gh_ldap_entry *e, char *buf, size_t len)
{
    switch (e->kind) {
    case DL_ROOTDSE:
        buf[0] = '\0';
        break;
    case DL_SUBSCHEMA:
        snprintf(buf, len, "cn=Subschema");
        break;
    case DL_SUFFIX:
        snprintf(buf, len, "%s", l->suffix);
        break;
    case DL_PEOPLE:
        snprintf(buf, len, "ou=people,%s", l->suffix);
        break;
    case DL_GROUPS:
        snprintf(buf, len, "ou=groups,%s", l->suffix);
        break;
    case DL_USER:
        gh_ldap_user_dn(l, e->u.name, buf, len);
        break;
    case DL_GROUP:
        group_dn(l, e->g.name, buf, len);
        break;
    default:
        return GH_EINVAL;
    }
    return 0;
}

static int dse_values(const gh_ldap *l, int attr, gh_ldap_value_cb cb, void *arg)
{
    int rc = 0;
    switch (attr) {
    case LA_OBJECTCLASS:
        return PUT("top");
    case LA_NAMINGCONTEXTS:
        return PUT(l->suffix);
    case LA_SUPPORTEDCONTROL:
        return PUT(GH_LDAP_OID_PAGED);
    case LA_SUPPORTEDEXTENSION:
        if (PUT(GH_LDAP_OID_WHOAMI) || PUT(GH_LDAP_OID_PASSWD))
            return rc;
        return PUT(GH_LDAP_OID_STARTTLS);
    case LA_SUPPORTEDFEATURES:
        /* all operational attributes ("+"), absolute true/false filters */
        if (PUT("1.3.6.1.4.1.4203.1.5.1"))
            return rc;
        return PUT("1.3.6.1.4.1.4203.1.5.3");
    case LA_SUPPORTEDLDAPVERSION:
        return PUT("3");
    case LA_SUBSCHEMASUBENTRY:
        return PUT("cn=Subschema");
    case LA_VENDORNAME:
        return PUT("Gatehouse");
    case LA_VENDORVERSION:
        return l->vendor_ver[0] ? PUT(l->vendor_ver) : 0;
    default:
        return 0;
    }
}

static int subschema_values(int attr, gh_ldap_value_cb cb, void *arg)
{
    int rc = 0;
    char buf[512];
    switch (attr) {
    case LA_OBJECTCLASS:
        if (PUT("top"))
            return rc;
        return PUT("subschema");
    case LA_CN:
        return PUT("Subschema");
    case LA_STRUCTURALOC:
        return PUT("subentry");
    case LA_OBJECTCLASSES:
        for (int i = 0; object_classes[i]; i++)
            if (PUT(object_classes[i]))
                return rc;
        return 0;
    case LA_LDAPSYNTAXES:
        for (int i = 0; syntaxes[i]; i++)
            if (PUT(syntaxes[i]))
                return rc;
        return 0;
    case LA_MATCHINGRULES:
        for (int i = 0; matching_rules[i]; i++)
            if (PUT(matching_rules[i]))
                return rc;
        return 0;
    case LA_ATTRIBUTETYPES:
        for (int i = 0; i < LA_COUNT; i++) {
            const gh_ldap_attrdef *d = &gh__ldap_attrs[i];
            char names[128];
            if (d->alias)
                snprintf(names, sizeof(names), "( '%s' '%s' )", d->name, d->alias);
            else
                snprintf(names, sizeof(names), "'%s'", d->name);
            snprintf(buf, sizeof(buf), "( %s NAME %s %s%s%s )", d->oid, names,
                     syntax_rules(d->syntax), d->single ? " SINGLE-VALUE" : "",
                     d->oper ? " NO-USER-MODIFICATION USAGE directoryOperation" : "");
            if (PUT(buf))
                return rc;
        }
        return 0;
    case LA_SUBSCHEMASUBENTRY:
        return PUT("cn=Subschema");
    default:
        return 0;
    }
}

int gh__ldap_group_attr_hot(int attr)
{
    /* keep in step with the DL_GROUP case below: everything but these reads
     * only g->id, g->name or g->gid, or is not a group attribute at all */
    switch (attr) {
    case LA_DESCRIPTION:
    case LA_CREATETS:
    case LA_MODIFYTS:
        return 0;
    default:
        return 1;
    }
}

int gh__ldap_user_attr_hot(int attr)
{
    /* keep in step with the DL_USER case below: only what reads u->id,
     * u->name, u->uid, u->gid, u->display_name or u->mail (homeDirectory,
     * loginShell and gecos stay out: they come from the record's home, shell
     * and gecos) */
    switch (attr) {
    case LA_UNKNOWN:
    case LA_USERPASSWORD: /* never served */
    case LA_OBJECTCLASS:
    case LA_STRUCTURALOC:
    case LA_UID:
    case LA_CN:
    case LA_UIDNUMBER:
    case LA_GIDNUMBER:
    case LA_SN:
    case LA_DISPLAYNAME:
    case LA_MAIL:
    case LA_MEMBEROF:
    case LA_ENTRYUUID:
    case LA_ENTRYDN:
    case LA_SUBSCHEMASUBENTRY:
    case LA_HASSUBORDINATES:
        return 1;
    default:
        return 0;
    }
}

int gh__ldap_entry_values(const gh_ldap *l, gh_txn *txn, const gh_ldap_entry *e, int attr,
                          gh_ldap_value_cb cb, void *arg)
{
    char buf[GH_DN_MAX + 64];
    int rc = 0;
    mctx m = {txn, l, attr, cb, arg, 0};

    if (attr < 0 || attr == LA_USERPASSWORD)
        return 0;
    if (e->kind == DL_USER && e->partial && !gh__ldap_user_attr_hot(attr))
        return GH_EINTERNAL; /* the caller had to decode the record first */
    if (e->kind == DL_ROOTDSE)
        return dse_values(l, attr, cb, arg);
    if (e->kind == DL_SUBSCHEMA)
        return subschema_values(attr, cb, arg);
    switch (attr) {
    case LA_ENTRYDN:
        gh__ldap_entry_dn(l, e, buf, sizeof(buf));
        return PUT(buf);
    case LA_SUBSCHEMASUBENTRY:
        return PUT("cn=Subschema");
    case LA_HASSUBORDINATES:
        return PUT(e->kind == DL_USER || e->kind == DL_GROUP ? "FALSE" : "TRUE");
    default:
        break;
    }
    switch (e->kind) {
    case DL_SUFFIX:
        if (attr == LA_OBJECTCLASS)
            return PUT("top") ?: PUT("dcObject") ?: PUT("organization");
        if (attr == LA_STRUCTURALOC)
            return PUT("organization");
        if (attr == LA_DC || attr == LA_O) {
            /* the value of the suffix's first RDN */
            const char *eq = strchr(l->suffix, '=');
            const char *end = strchr(l->suffix, ',');
            size_t n = end ? (size_t)(end - eq - 1) : strlen(eq + 1);
            return cb(arg, eq + 1, n);
        }
        return 0;
    case DL_PEOPLE:
    case DL_GROUPS:
        if (attr == LA_OBJECTCLASS)
            return PUT("top") ?: PUT("organizationalUnit");
        if (attr == LA_STRUCTURALOC)
            return PUT("organizationalUnit");
        if (attr == LA_OU)
            return PUT(e->kind == DL_PEOPLE ? "people" : "groups");
        return 0;
    case DL_USER: {
        const gh_user *u = &e->u;
        const char *display = u->display_name[0] ? u->display_name : u->name;
        switch (attr) {
        case LA_OBJECTCLASS:
            return PUT("top") ?: PUT("person") ?: PUT("organizationalPerson")
                                                     ?: PUT("inetOrgPerson") ?: PUT("posixAccount");
        case LA_STRUCTURALOC:
            return PUT("inetOrgPerson");
        case LA_UID:
        case LA_CN:
            return PUT(u->name);
        case LA_SN: {
            const char *sp = strrchr(display, ' ');
            return PUT(sp && sp[1] ? sp + 1 : display);
        }
        case LA_DISPLAYNAME:
            return PUT(display);
        case LA_GECOS: { /* as NSS: the user's gecos, else the display name */
            const char *g = gh_user_posix_gecos(u);
            return g[0] ? PUT(g) : 0;
        }
        case LA_MAIL:
            return u->mail[0] ? PUT(u->mail) : 0;
        case LA_UIDNUMBER:
            snprintf(buf, sizeof(buf), "%" PRIu32, u->uid);
            return PUT(buf);
        case LA_GIDNUMBER: {
            /* as NSS: the user's gid, else its uid with user_private_groups,
             * else none (NSS does not serve such a user at all) */
            uint32_t gid = gh_user_posix_gid(u, &l->posix);
            if (gid == 0)
                return 0;
            snprintf(buf, sizeof(buf), "%" PRIu32, gid);
            return PUT(buf);
        }
        case LA_HOMEDIR:
            gh_user_posix_home(u, &l->posix, buf, sizeof(buf));
            return PUT(buf);
        case LA_LOGINSHELL:
            return PUT(gh_user_posix_shell(u, &l->posix));
        case LA_MEMBEROF: {
            gh_member me = {GH_MEMBER_USER, u->id};
            rc = gh_store_member_of(txn, me, memberof_cb, &m);
            return m.rc ? m.rc : rc == GH_ENOTFOUND ? 0 : rc;
        }
        case LA_ENTRYUUID:
            fmt_uuid(DL_USER, u->id, buf, sizeof(buf));
            return PUT(buf);
        case LA_CREATETS:
            fmt_time(u->created, buf, sizeof(buf));
            return PUT(buf);
        case LA_MODIFYTS:
            fmt_time(u->modified, buf, sizeof(buf));
            return PUT(buf);
        default:
            return 0;
        }
    }
    case DL_GROUP: {
        const gh_group *g = &e->g;
        switch (attr) {
        case LA_OBJECTCLASS:
            return PUT("top") ?: PUT("groupOfNames") ?: PUT("posixGroup");
        case LA_STRUCTURALOC:
            return PUT("groupOfNames");
        case LA_CN:
            return PUT(g->name);
        case LA_DESCRIPTION:
            return g->description[0] ? PUT(g->description) : 0;
        case LA_GIDNUMBER:
            snprintf(buf, sizeof(buf), "%" PRIu32, g->gid);
            return PUT(buf);
        case LA_MEMBER:
        case LA_MEMBERUID:
            rc = gh_store_group_members(txn, g->id, member_cb, &m);
            return m.rc ? m.rc : rc == GH_ENOTFOUND ? 0 : rc;
        case LA_MEMBEROF: {
            gh_member me = {GH_MEMBER_GROUP, g->id};
            rc = gh_store_member_of(txn, me, memberof_cb, &m);
            return m.rc ? m.rc : rc == GH_ENOTFOUND ? 0 : rc;
        }
        case LA_ENTRYUUID:
            fmt_uuid(DL_GROUP, g->id, buf, sizeof(buf));
            return PUT(buf);
        case LA_CREATETS:
            fmt_time(g->created, buf, sizeof(buf));
            return PUT(buf);
        case LA_MODIFYTS:
            fmt_time(g->modified, buf, sizeof(buf));
            return PUT(buf);
        default:
            return 0;
        }
    }
    default:
        return 0;
    }
}
