/*
 * paths-int.h: where gatehoused and libgatehouse look when nothing says
 * otherwise, for an installed build and for one run from its build tree.
 *
 * An installed program uses the directories configure was given: state in
 * $(localstatedir)/lib/gatehouse, the socket in $(runstatedir)/gatehouse/,
 * the configuration $(sysconfdir)/gatehouse/gatehoused.conf when it exists.
 * A program that runs from the build directory make put it in (checked
 * against the absolute build directory compiled in, through /proc/self/exe
 * for gatehoused and the library's own file for libgatehouse) keeps the
 * source checkout's embedded default: ./var, ./var/gatehoused.sock, no
 * configuration file. Header-only so that libgatehouse (which does not link
 * the server's code) and gatehoused share one rule.
 */
#ifndef GH_PATHS_INT_H
#define GH_PATHS_INT_H

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifndef GH_LOCALSTATEDIR
#define GH_LOCALSTATEDIR "/var"
#endif
#ifndef GH_RUNSTATEDIR
#define GH_RUNSTATEDIR "/run"
#endif
#ifndef GH_SYSCONFDIR
#define GH_SYSCONFDIR "/etc"
#endif

#define GH_INSTALLED_STATE_DIR GH_LOCALSTATEDIR "/lib/gatehouse"
#define GH_INSTALLED_RUN_DIR GH_RUNSTATEDIR "/gatehouse"
#define GH_INSTALLED_SOCKET GH_INSTALLED_RUN_DIR "/gatehoused.sock"
#define GH_INSTALLED_CONFIG GH_SYSCONFDIR "/gatehouse/gatehoused.conf"
#define GH_CHECKOUT_STATE_DIR "./var"
#define GH_CHECKOUT_SOCKET "./var/gatehoused.sock"

/* 1 when file (a program or a shared library) lies in the build directory
 * or its .libs/, 0 otherwise (installed, copied elsewhere, or unknown). */
static inline int gh__in_build_tree(const char *file)
{
#ifdef GH_ABS_BUILDDIR
    char real[PATH_MAX], top[PATH_MAX];
    if (file == NULL || realpath(file, real) == NULL || realpath(GH_ABS_BUILDDIR, top) == NULL)
        return 0;
    char *slash = strrchr(real, '/');
    if (slash == NULL)
        return 0;
    *slash = '\0';
    size_t n = strlen(top);
    if (strncmp(real, top, n) != 0)
        return 0;
    return real[n] == '\0' || strcmp(real + n, "/.libs") == 0;
#else
    (void)file;
    return 0;
#endif
}

#endif
