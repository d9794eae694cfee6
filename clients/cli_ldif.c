/*
 * cli_ldif.c: LDIF (RFC 2849) out of and into Gatehouse records.
 *
 * Out: users become inetOrgPerson + posixAccount entries under
 * ou=people,BASE; groups become groupOfNames + posixGroup under
 * ou=groups,BASE with `member` DNs for direct members (users and nested
 * groups) and `memberUid` for direct users. That combination needs
 * posixGroup to be AUXILIARY, as in rfc2307bis (389-ds, FreeIPA, most
 * OpenLDAP deployments that nest groups); the stock nis.schema (RFC 2307)
 * makes it STRUCTURAL, so --rfc2307 writes groups as posixGroup alone with
 * memberUid listing the effective (nested) users. groupOfNames requires a
 * member: an empty group carries one empty `member:` value. Passwords are
 * written only with --with-verifiers, as OpenLDAP's argon2 module reads them:
 * "{ARGON2}" followed by the $argon2id$ string.
 *
 * In: any entry with objectClass posixAccount, inetOrgPerson, account or
 * person and a uid becomes a user; posixGroup, groupOfNames or
 * groupOfUniqueNames with a cn becomes a group; member, uniqueMember and
 * memberUid become member records, resolved against the entries of the file
 * (a DN not in the file is taken by its first RDN: uid= is a user, cn= a
 * group). Values that RFC 2849 requires to be base64 are decoded/encoded.
 */
#include "gh-config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clients/cli-int.h"

#define LDIF_WIDTH 76

/* ---- writing ---- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64(const unsigned char *s, size_t n)
{
    char *out = malloc((n + 2) / 3 * 4 + 1), *p = out;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        *p++ = b64chars[(v >> 18) & 63];
        *p++ = b64chars[(v >> 12) & 63];
        *p++ = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
        *p++ = i + 2 < n ? b64chars[v & 63] : '=';
    }
    *p = '\0';
    return out;
}

/* RFC 2849 SAFE-STRING, and no trailing space (which readers may strip). */
static int safe_string(const char *s)
{
    size_t n = strlen(s);

    if (n == 0)
        return 1;
    if (s[0] == ' ' || s[0] == ':' || s[0] == '<' || s[n - 1] == ' ')
        return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p >= 0x80 || *p == '\n' || *p == '\r')
            return 0;
    return 1;
}

static int is_ia5(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p >= 0x80)
            return 0;
    return 1;
}

/* Writes "attr: value" (or "attr:: base64"), folded at 76 columns. */
static void put_attr(FILE *f, const char *attr, const char *value)
{
    char *enc = NULL, *line;
    size_t len, col;
    int safe = safe_string(value);

    if (!safe)
        enc = base64((const unsigned char *)value, strlen(value));
    if (asprintf(&line, "%s:%s%s%s", attr, safe ? "" : ":", value[0] || !safe ? " " : "",
                 safe ? value : (enc ? enc : "")) < 0) {
        free(enc);
        return;
    }
    len = strlen(line);
    col = 0;
    for (size_t i = 0; i < len; i++) {
        size_t limit = col == 0 && i == 0 ? LDIF_WIDTH : LDIF_WIDTH - 1;
        if (col == limit) {
            fputs("\n ", f);
            col = 0;
        }
        fputc(line[i], f);
        col++;
    }
    fputc('\n', f);
    free(line);
    free(enc);
}

/* RFC 4514 escaping of an attribute value inside a DN. Caller frees. */
static char *dn_escape(const char *v)
{
    size_t n = strlen(v);
    char *out = malloc(n * 3 + 1), *p = out;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        if (strchr(",+\"\\<>;=", ch) != NULL || (i == 0 && (ch == '#' || ch == ' ')) ||
            (i == n - 1 && ch == ' '))
            *p++ = '\\';
        *p++ = ch;
    }
    *p = '\0';
    return out;
}

static char *user_dn(const cli_ldif_opts *o, const char *name)
{
    char *e = dn_escape(name), *dn = NULL;
    if (e && asprintf(&dn, "uid=%s,ou=people,%s", e, o->base_dn) < 0)
        dn = NULL;
    free(e);
    return dn;
}

static char *group_dn(const cli_ldif_opts *o, const char *name)
{
    char *e = dn_escape(name), *dn = NULL;
    if (e && asprintf(&dn, "cn=%s,ou=groups,%s", e, o->base_dn) < 0)
        dn = NULL;
    free(e);
    return dn;
}

static void put_num(FILE *f, const char *attr, json_int_t v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, v);
    put_attr(f, attr, buf);
}

static void write_user(FILE *f, const cli_ldif_opts *o, json_t *u)
{
    const char *name = cli_str(u, "name"), *display = cli_str(u, "display_name");
    const char *mail = cli_str(u, "mail"), *verifier = cli_str(u, "verifier");
    json_int_t uid = json_integer_value(json_object_get(u, "uid"));
    json_int_t gid = json_integer_value(json_object_get(u, "gid"));
    char *dn = user_dn(o, name), *home = NULL, *sn, *pw = NULL;
    const char *last;

    if (dn == NULL)
        return;
    put_attr(f, "dn", dn);
    put_attr(f, "objectClass", "top");
    put_attr(f, "objectClass", "person");
    put_attr(f, "objectClass", "organizationalPerson");
    put_attr(f, "objectClass", "inetOrgPerson");
    put_attr(f, "objectClass", "posixAccount");
    put_attr(f, "uid", name);
    put_attr(f, "cn", display[0] ? display : name);
    /* sn is required by person: the last word of the display name */
    last = strrchr(display, ' ');
    sn = strdup(display[0] ? (last && last[1] ? last + 1 : display) : name);
    put_attr(f, "sn", sn ? sn : name);
    free(sn);
    if (display[0])
        put_attr(f, "displayName", display);
    if (mail[0] && is_ia5(mail))
        put_attr(f, "mail", mail);
    else if (mail[0])
        fprintf(stderr, "gatehouse: warning: user %s: mail is not ASCII, left out of LDIF\n", name);
    put_num(f, "uidNumber", uid);
    /* posixAccount requires gidNumber: without a primary group, the user
     * private group convention (gid = uid) */
    put_num(f, "gidNumber", gid > 0 ? gid : uid);
    const char *uhome = cli_str(u, "home"), *shell = cli_str(u, "shell");
    const char *gecos = cli_str(u, "gecos");
    if (uhome[0] && is_ia5(uhome)) { /* the user's own (docs/OS-LOGIN.md) */
        put_attr(f, "homeDirectory", uhome);
    } else if (is_ia5(name) && asprintf(&home, "%s/%s", o->home_base, name) >= 0) {
        put_attr(f, "homeDirectory", home);
    } else if (asprintf(&home, "%s/%" JSON_INTEGER_FORMAT, o->home_base, uid) >= 0) {
        put_attr(f, "homeDirectory", home);
    }
    free(home);
    if (shell[0] && is_ia5(shell))
        put_attr(f, "loginShell", shell);
    if (gecos[0] && is_ia5(gecos))
        put_attr(f, "gecos", gecos);
    if (o->with_verifiers && verifier[0]) {
        if (asprintf(&pw, "{ARGON2}%s", verifier) >= 0) {
            put_attr(f, "userPassword", pw);
            cli_wipe(pw, strlen(pw));
            free(pw);
        }
    }
    fputc('\n', f);
    free(dn);
}

/* Direct members of a dump group: users and groups arrays (borrowed or
 * new, released by the caller through *hold). */
static void members_of(json_t *g, json_t **users, json_t **groups, json_t *hold)
{
    json_t *m = json_object_get(g, "members"), *v;
    size_t i;

    if (json_is_array(json_object_get(g, "users")) ||
        json_is_array(json_object_get(g, "subgroups"))) {
        *users = json_object_get(g, "users"); /* dump: "users", "subgroups" */
        *groups = json_object_get(g, "subgroups");
        return;
    }
    if (json_is_object(m)) {
        *users = json_object_get(m, "users");
        *groups = json_object_get(m, "groups");
        return;
    }
    *users = json_array();
    *groups = json_array();
    json_array_append_new(hold, *users);
    json_array_append_new(hold, *groups);
    json_array_foreach(m, i, v)
    {
        json_t *s = json_object_get(v, "subgroup");
        if (s == NULL)
            s = json_object_get(v, "group");
        if (json_is_string(v))
            json_array_append(*users, v);
        else if (json_object_get(v, "user"))
            json_array_append(*users, json_object_get(v, "user"));
        else if (s)
            json_array_append(*groups, s);
    }
}

/* Effective users of group name (nested), for --rfc2307's memberUid. */
static void effective(json_t *byname, const char *name, json_t *seen, json_t *out, json_t *hold)
{
    json_t *g = json_object_get(byname, name), *users, *groups, *v;
    size_t i;

    if (g == NULL || json_object_get(seen, name))
        return;
    json_object_set_new(seen, name, json_true());
    members_of(g, &users, &groups, hold);
    json_array_foreach(users, i, v)
    {
        if (json_is_string(v) && !json_object_get(out, json_string_value(v)))
            json_object_set_new(out, json_string_value(v), json_true());
    }
    json_array_foreach(groups, i, v)
    {
        if (json_is_string(v))
            effective(byname, json_string_value(v), seen, out, hold);
    }
}

static void write_group(FILE *f, const cli_ldif_opts *o, json_t *g, json_t *byname)
{
    const char *name = cli_str(g, "name"), *descr = cli_str(g, "description");
    json_t *hold = json_array(), *users, *groups, *v;
    char *dn = group_dn(o, name);
    size_t i;

    if (dn == NULL) {
        json_decref(hold);
        return;
    }
    members_of(g, &users, &groups, hold);
    put_attr(f, "dn", dn);
    put_attr(f, "objectClass", "top");
    if (!o->rfc2307)
        put_attr(f, "objectClass", "groupOfNames");
    put_attr(f, "objectClass", "posixGroup");
    put_attr(f, "cn", name);
    put_num(f, "gidNumber", json_integer_value(json_object_get(g, "gid")));
    if (descr[0])
        put_attr(f, "description", descr);
    if (!o->rfc2307) {
        size_t nmembers = 0;
        json_array_foreach(users, i, v)
        {
            char *m = json_is_string(v) ? user_dn(o, json_string_value(v)) : NULL;
            if (m) {
                put_attr(f, "member", m);
                nmembers++;
            }
            free(m);
        }
        json_array_foreach(groups, i, v)
        {
            char *m = json_is_string(v) ? group_dn(o, json_string_value(v)) : NULL;
            if (m) {
                put_attr(f, "member", m);
                nmembers++;
            }
            free(m);
        }
        if (nmembers == 0)
            put_attr(f, "member", ""); /* groupOfNames: MUST member */
        json_array_foreach(users, i, v)
        {
            if (json_is_string(v) && is_ia5(json_string_value(v)))
                put_attr(f, "memberUid", json_string_value(v));
        }
    } else {
        json_t *seen = json_object(), *eff = json_object();
        const char *u;
        effective(byname, name, seen, eff, hold);
        json_object_foreach(eff, u, v)
        {
            if (is_ia5(u))
                put_attr(f, "memberUid", u);
        }
        json_decref(seen);
        json_decref(eff);
    }
    fputc('\n', f);
    free(dn);
    json_decref(hold);
}

int cli_ldif_write(FILE *f, const cli_ldif_opts *o, json_t *users, json_t *groups)
{
    json_t *byname = json_object(), *v;
    size_t i;
    char *dn;

    /* no "version: 1": ldapadd accepts it, but slapadd refuses it */
    fprintf(f, "# Gatehouse export under %s\n\n", o->base_dn);
    if (o->containers) {
        static const char *const ous[2] = {"people", "groups"};
        for (int k = 0; k < 2; k++) {
            if (asprintf(&dn, "ou=%s,%s", ous[k], o->base_dn) < 0)
                break;
            put_attr(f, "dn", dn);
            put_attr(f, "objectClass", "top");
            put_attr(f, "objectClass", "organizationalUnit");
            put_attr(f, "ou", ous[k]);
            fputc('\n', f);
            free(dn);
        }
    }
    json_array_foreach(users, i, v) write_user(f, o, v);
    json_array_foreach(groups, i, v)
    {
        const char *n = json_string_value(json_object_get(v, "name"));
        if (n)
            json_object_set(byname, n, v);
    }
    json_array_foreach(groups, i, v) write_group(f, o, v, byname);
    json_decref(byname);
    if (fflush(f) != 0)
        return cli_fail(CLI_EXIT_SERVER, "io_error: cannot write: %s", strerror(errno));
    return 0;
}

/* ---- reading ---- */

static int b64val(int ch)
{
    const char *p = ch ? strchr(b64chars, ch) : NULL;
    return p ? (int)(p - b64chars) : -1;
}

/* Decodes base64 (whitespace ignored). NULL if invalid. */
static char *unbase64(const char *s, size_t *outlen)
{
    size_t n = strlen(s), o = 0;
    char *out = malloc(n / 4 * 3 + 4);
    unsigned acc = 0;
    int bits = 0;

    if (out == NULL)
        return NULL;
    for (const char *p = s; *p; p++) {
        if (*p == '=' || isspace((unsigned char)*p))
            continue;
        int v = b64val(*p);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

typedef struct ldif_entry {
    unsigned long line;
    char *dn;
    json_t *attrs; /* lower-case name -> array of strings */
    char error[160];
} ldif_entry;

/* Adds one "attr: value" line (unfolded) to e. */
static void entry_line(ldif_entry *e, char *line)
{
    char *colon = strchr(line, ':'), *value, *name, *semi;
    int b64 = 0;
    json_t *arr, *s;

    if (colon == NULL || colon == line) {
        snprintf(e->error, sizeof(e->error), "malformed line '%.40s'", line);
        return;
    }
    *colon = '\0';
    value = colon + 1;
    if (*value == ':') {
        b64 = 1;
        value++;
    } else if (*value == '<') {
        snprintf(e->error, sizeof(e->error), "URL values are not supported");
        return;
    }
    while (*value == ' ')
        value++;
    name = line;
    if ((semi = strchr(name, ';')) != NULL)
        *semi = '\0'; /* attribute options (;binary, ;lang-x) */
    for (char *p = name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (b64) {
        size_t len;
        char *dec = unbase64(value, &len);
        if (dec == NULL || strlen(dec) != len) {
            free(dec);
            snprintf(e->error, sizeof(e->error), "attribute %s: bad base64 or binary value", name);
            return;
        }
        s = json_string(dec);
        cli_wipe(dec, len);
        free(dec);
    } else {
        s = json_string(value);
    }
    if (s == NULL) {
        snprintf(e->error, sizeof(e->error), "attribute %s: value is not UTF-8", name);
        return;
    }
    if (strcmp(name, "dn") == 0) {
        free(e->dn);
        e->dn = strdup(json_string_value(s));
        json_decref(s);
        return;
    }
    if (strcmp(name, "changetype") == 0) {
        if (strcasecmp(json_string_value(s), "add") != 0)
            snprintf(e->error, sizeof(e->error), "changetype %s is not supported",
                     json_string_value(s));
        json_decref(s);
        return;
    }
    arr = json_object_get(e->attrs, name);
    if (arr == NULL) {
        arr = json_array();
        json_object_set_new(e->attrs, name, arr);
    }
    json_array_append_new(arr, s);
}

/* Normalised DN for lookups: lower case, no spaces around ',' '=' '+'. */
static char *dn_norm(const char *dn)
{
    char *out = malloc(strlen(dn) + 1), *p = out;

    if (out == NULL)
        return NULL;
    for (const char *q = dn; *q; q++) {
        if (*q == ' ') {
            const char *r = q;
            while (*r == ' ')
                r++;
            if (p == out || p[-1] == ',' || p[-1] == '=' || p[-1] == '+' || *r == ',' ||
                *r == '=' || *r == '+' || *r == '\0') {
                q = r - 1;
                continue;
            }
        }
        *p++ = (char)tolower((unsigned char)*q);
    }
    *p = '\0';
    return out;
}

static const char *first(json_t *attrs, const char *name)
{
    return json_string_value(json_array_get(json_object_get(attrs, name), 0));
}

static int has_class(json_t *attrs, const char *cls)
{
    json_t *v;
    size_t i;

    json_array_foreach(json_object_get(attrs, "objectclass"), i, v)
    {
        if (json_is_string(v) && strcasecmp(json_string_value(v), cls) == 0)
            return 1;
    }
    return 0;
}

/* First RDN "attr=value" of a DN: copies value (unescaped) into buf and
 * returns the lower-case attribute in attr. */
static int first_rdn(const char *dn, char *attr, size_t alen, char *buf, size_t blen)
{
    const char *eq = strchr(dn, '=');
    size_t a = 0, b = 0;

    if (eq == NULL)
        return -1;
    for (const char *p = dn; p < eq && a + 1 < alen; p++)
        if (*p != ' ')
            attr[a++] = (char)tolower((unsigned char)*p);
    attr[a] = '\0';
    for (const char *p = eq + 1; *p && *p != ',' && *p != '+' && b + 1 < blen; p++) {
        if (*p == '\\' && p[1])
            p++;
        buf[b++] = *p;
    }
    while (b > 0 && buf[b - 1] == ' ')
        b--;
    buf[b] = '\0';
    return b > 0 ? 0 : -1;
}

static json_t *number_or_string(const char *s)
{
    long long v;
    if (s == NULL)
        return NULL;
    if (cli_parse_int(s, 0, 4294967295LL, &v) == 0)
        return json_integer(v);
    return json_string(s);
}

/* Maps one entry to a record (or NULL: neither user nor group). */
/* Whether an LDAP value can be a POSIX field as it is (the server's rule:
 * no ':' or control character, paths absolute); one that cannot is left
 * out so that the user is still imported, with the server's default. */
static int posix_ok(const char *v, size_t max, int path)
{
    size_t n = strlen(v);
    if (n == 0 || n > max || (path && v[0] != '/') || strchr(v, ':') != NULL)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return 0;
    return 1;
}

static json_t *entry_record(ldif_entry *e, json_t *dnmap, int *is_group)
{
    json_t *a = e->attrs, *rec;
    const char *v;
    char *norm;

    *is_group = 0;
    if ((has_class(a, "posixAccount") || has_class(a, "inetOrgPerson") || has_class(a, "account") ||
         has_class(a, "person")) &&
        first(a, "uid") != NULL) {
        char rattr[16], rval[256];
        const char *name = first(a, "uid");
        /* several uids: the one of the RDN names the entry */
        if (e->dn && first_rdn(e->dn, rattr, sizeof(rattr), rval, sizeof(rval)) == 0 &&
            strcmp(rattr, "uid") == 0)
            name = rval;
        rec = json_pack("{ssss}", "type", "user", "name", name);
        if ((v = first(a, "uidnumber")) != NULL)
            json_object_set_new(rec, "uid", number_or_string(v));
        if ((v = first(a, "gidnumber")) != NULL)
            json_object_set_new(rec, "gid", number_or_string(v));
        if ((v = first(a, "displayname")) != NULL || (v = first(a, "cn")) != NULL)
            json_object_set_new(rec, "display_name", json_string(v));
        if ((v = first(a, "mail")) != NULL)
            json_object_set_new(rec, "mail", json_string(v));
        /* POSIX fields, when they could go into a passwd line as they are */
        if ((v = first(a, "homedirectory")) != NULL && posix_ok(v, 255, 1))
            json_object_set_new(rec, "home", json_string(v));
        if ((v = first(a, "loginshell")) != NULL && posix_ok(v, 255, 1))
            json_object_set_new(rec, "shell", json_string(v));
        if ((v = first(a, "gecos")) != NULL && posix_ok(v, 256, 0))
            json_object_set_new(rec, "gecos", json_string(v));
        if (first(a, "pwdaccountlockedtime") != NULL ||
            (first(a, "nsaccountlock") && strcasecmp(first(a, "nsaccountlock"), "true") == 0))
            json_object_set_new(rec, "state", json_string("locked"));
        if ((v = first(a, "userpassword")) != NULL) {
            if (strncasecmp(v, "{ARGON2}$argon2id$", 18) == 0)
                json_object_set_new(rec, "verifier", json_string(v + 8));
            else
                fprintf(stderr,
                        "gatehouse: warning: line %lu: userPassword of %s is %.*s, not "
                        "{ARGON2}$argon2id$; the user is imported without a password\n",
                        e->line, name, v[0] == '{' ? (int)strcspn(v, "}") + 1 : 9,
                        v[0] == '{' ? v : "cleartext");
        }
        if (e->dn && (norm = dn_norm(e->dn)) != NULL) {
            json_object_set_new(dnmap, norm, json_pack("{ssss}", "user", name, "k", "u"));
            free(norm);
        }
        return rec;
    }
    if ((has_class(a, "posixGroup") || has_class(a, "groupOfNames") ||
         has_class(a, "groupOfUniqueNames")) &&
        first(a, "cn") != NULL) {
        char rattr[16], rval[256];
        const char *name = first(a, "cn");
        if (e->dn && first_rdn(e->dn, rattr, sizeof(rattr), rval, sizeof(rval)) == 0 &&
            strcmp(rattr, "cn") == 0)
            name = rval;
        rec = json_pack("{ssss}", "type", "group", "name", name);
        if ((v = first(a, "gidnumber")) != NULL)
            json_object_set_new(rec, "gid", number_or_string(v));
        if ((v = first(a, "description")) != NULL)
            json_object_set_new(rec, "description", json_string(v));
        if (e->dn && (norm = dn_norm(e->dn)) != NULL) {
            json_object_set_new(dnmap, norm, json_pack("{ss}", "subgroup", name));
            free(norm);
        }
        *is_group = 1;
        return rec;
    }
    return NULL;
}

/* Member records of a group entry (after every entry is known). */
static void entry_members(ldif_entry *e, const char *gname, json_t *dnmap, json_t *out)
{
    static const char *const dnattrs[2] = {"member", "uniquemember"};
    json_t *seen = json_object(), *v;
    size_t i;

    for (int k = 0; k < 2; k++) {
        json_array_foreach(json_object_get(e->attrs, dnattrs[k]), i, v)
        {
            char *dn = strdup(json_string_value(v)), *norm, rattr[16], rval[256], *hash;
            json_t *who;
            const char *key = NULL, *name = NULL;

            if (dn == NULL)
                continue;
            if (k == 1 && (hash = strrchr(dn, '#')) != NULL && hash[1] == '\'')
                *hash = '\0'; /* uniqueMember's optional #'bits'B */
            norm = dn_norm(dn);
            who = norm ? json_object_get(dnmap, norm) : NULL;
            if (who && json_object_get(who, "user")) {
                key = "user";
                name = cli_str(who, "user");
            } else if (who) {
                key = "subgroup";
                name = cli_str(who, "subgroup");
            } else if (dn[0] && first_rdn(dn, rattr, sizeof(rattr), rval, sizeof(rval)) == 0) {
                if (strcmp(rattr, "uid") == 0)
                    key = "user", name = rval;
                else if (strcmp(rattr, "cn") == 0)
                    key = "subgroup", name = rval;
            }
            if (key && name && name[0]) {
                char tag[300];
                snprintf(tag, sizeof(tag), "%s:%s", key, name);
                if (!json_object_get(seen, tag)) {
                    json_object_set_new(seen, tag, json_true());
                    json_array_append_new(out,
                                          json_pack("{sssssssI}", "type", "member", "group", gname,
                                                    key, name, "_line", (json_int_t)e->line));
                }
            } else if (dn[0]) {
                fprintf(stderr, "gatehouse: warning: line %lu: member %s of %s not understood\n",
                        e->line, dn, gname);
            }
            free(norm);
            free(dn);
        }
    }
    json_array_foreach(json_object_get(e->attrs, "memberuid"), i, v)
    {
        char tag[300];
        snprintf(tag, sizeof(tag), "user:%s", json_string_value(v));
        if (!json_object_get(seen, tag)) {
            json_object_set_new(seen, tag, json_true());
            json_array_append_new(out, json_pack("{sssssOsI}", "type", "member", "group", gname,
                                                 "user", v, "_line", (json_int_t)e->line));
        }
    }
    json_decref(seen);
}

static void entry_free(ldif_entry *e)
{
    free(e->dn);
    json_decref(e->attrs);
    memset(e, 0, sizeof(*e));
}

int cli_ldif_read(FILE *f, const char *fname, json_t **records, size_t *skipped)
{
    json_t *users = json_array(), *groups = json_array(), *members = json_array();
    json_t *dnmap = json_object();
    ldif_entry *ents = NULL, cur;
    size_t nents = 0, capents = 0;
    char *line = NULL, *logical = NULL;
    size_t cap = 0, lcap = 0, llen = 0;
    ssize_t n;
    unsigned long lineno = 0, logical_line = 0;
    int done = 0;

    (void)fname;
    *skipped = 0;
    memset(&cur, 0, sizeof(cur));
    /* one logical line at a time: physical lines joined by continuation */
    while (!done) {
        n = getline(&line, &cap, f);
        lineno++;
        if (n >= 0) {
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
            if (n > 0 && line[0] == ' ' && llen > 0) {
                /* continuation of the logical line */
                if (llen + (size_t)n > lcap) {
                    char *nl = malloc(llen + (size_t)n + 1);
                    if (nl == NULL)
                        break;
                    memcpy(nl, logical, llen);
                    cli_wipe(logical, lcap);
                    free(logical);
                    logical = nl;
                    lcap = llen + (size_t)n;
                }
                memcpy(logical + llen, line + 1, (size_t)n - 1);
                llen += (size_t)n - 1;
                logical[llen] = '\0';
                continue;
            }
        } else {
            done = 1;
        }
        /* the previous logical line is complete */
        if (llen > 0) {
            if (logical[0] != '#') {
                if (cur.attrs == NULL) {
                    cur.attrs = json_object();
                    cur.line = logical_line;
                }
                if (!(cur.dn == NULL && json_object_size(cur.attrs) == 0 &&
                      strncasecmp(logical, "version:", 8) == 0))
                    entry_line(&cur, logical);
            }
            cli_wipe(logical, llen);
            llen = 0;
        }
        if (done || n == 0) {
            /* blank line or end: the entry is complete */
            if (cur.attrs != NULL &&
                (cur.dn != NULL || json_object_size(cur.attrs) > 0 || cur.error[0])) {
                if (nents == capents) {
                    size_t nc = capents ? capents * 2 : 256;
                    ldif_entry *ne = realloc(ents, nc * sizeof(*ne));
                    if (ne == NULL)
                        break;
                    ents = ne;
                    capents = nc;
                }
                ents[nents++] = cur;
                memset(&cur, 0, sizeof(cur));
            } else {
                entry_free(&cur); /* only "version: 1" */
            }
            continue;
        }
        if ((size_t)n + 1 > lcap) {
            char *nl = malloc((size_t)n + 1);
            if (nl == NULL)
                break;
            cli_wipe(logical, lcap);
            free(logical);
            logical = nl;
            lcap = (size_t)n;
        }
        memcpy(logical, line, (size_t)n + 1);
        llen = (size_t)n;
        logical_line = lineno;
    }
    if (line)
        cli_wipe(line, cap);
    free(line);
    if (logical)
        cli_wipe(logical, lcap);
    free(logical);
    entry_free(&cur);

    /* map entries: users and groups first, so member DNs resolve */
    char **gname = calloc(nents ? nents : 1, sizeof(*gname));
    for (size_t i = 0; i < nents; i++) {
        int is_group;
        json_t *rec;
        if (ents[i].error[0]) {
            json_array_append_new(users,
                                  json_pack("{sssssI}", "type", "_error", "message", ents[i].error,
                                            "_line", (json_int_t)ents[i].line));
            continue;
        }
        rec = entry_record(&ents[i], dnmap, &is_group);
        if (rec == NULL) {
            (*skipped)++;
            continue;
        }
        json_object_set_new(rec, "_line", json_integer((json_int_t)ents[i].line));
        if (is_group && gname)
            gname[i] = strdup(cli_str(rec, "name"));
        json_array_append_new(is_group ? groups : users, rec);
    }
    for (size_t i = 0; i < nents; i++) {
        if (gname && gname[i])
            entry_members(&ents[i], gname[i], dnmap, members);
        free(gname ? gname[i] : NULL);
        entry_free(&ents[i]);
    }
    free(gname);
    free(ents);
    json_array_extend(users, groups);
    json_array_extend(users, members);
    json_decref(groups);
    json_decref(members);
    json_decref(dnmap);
    *records = users;
    return 0;
}
