/*
 * posix.c: a user's passwd view (home, shell, gecos, primary gid), the one
 * rule every front-end serves: libnss_gatehouse through the nss.* operations
 * (server/ops_nss.c) and the LDAP DIT (ldap/dit.c).
 *
 * The one thing to know: a field the user has wins, else the server's
 * default; change the rule here and both front-ends follow, so `getent
 * passwd` through NSS and through SSSD over LDAP never disagree.
 */
#include <stdio.h>
#include <string.h>

#include "schema/schema.h"

uint32_t gh_user_posix_gid(const gh_user *u, const gh_posix_defaults *d)
{
    if (u->gid != 0)
        return u->gid;
    return d->user_private_groups ? u->uid : 0;
}

void gh_user_posix_home(const gh_user *u, const gh_posix_defaults *d, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return;
    if (u->home[0] != '\0' || d->home_template == NULL) {
        snprintf(out, outlen, "%s", u->home);
        return;
    }
    for (const char *p = d->home_template; *p && o + 1 < outlen; p++) {
        char num[16];
        const char *ins = NULL;
        if (p[0] == '%' && p[1] == 'u') {
            ins = u->name;
        } else if (p[0] == '%' && p[1] == 'U') {
            snprintf(num, sizeof(num), "%u", (unsigned)u->uid);
            ins = num;
        } else if (p[0] == '%' && p[1] == '%') {
            ins = "%";
        }
        if (ins == NULL) {
            out[o++] = *p;
            continue;
        }
        p++;
        size_t n = strlen(ins);
        if (n > outlen - 1 - o)
            n = outlen - 1 - o;
        memcpy(out + o, ins, n);
        o += n;
    }
    out[o] = '\0';
}

const char *gh_user_posix_shell(const gh_user *u, const gh_posix_defaults *d)
{
    return u->shell[0] || d->default_shell == NULL ? u->shell : d->default_shell;
}

const char *gh_user_posix_gecos(const gh_user *u)
{
    return u->gecos[0] ? u->gecos : u->display_name;
}
