/*
 * log.c: the sink behind log.h. The level and sink are written once at
 * start-up (or SIGHUP) before any worker thread logs, then only read; a log
 * line is formatted into one buffer and written with one call so lines from
 * different threads never interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "schema/log.h"

static int log_level = GH_LOG_INFO;
static int log_syslog;

static const char *const names[] = {"error", "warn", "info", "debug"};

void gh_log_setup(int level, int use_syslog)
{
    log_level = level;
    if (use_syslog && !log_syslog)
        openlog("gatehoused", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    log_syslog = use_syslog;
}

int gh_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

int gh_log_enabled(int level)
{
    return level <= log_level;
}

void gh_log(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n;

    if (level > log_level)
        return;
    if (log_syslog) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        syslog(prio[level], "%s", line);
        return;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                 names[level]);
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void gh_assert_fail(const char *expr, const char *file, int line)
{
    gh_log(GH_LOG_ERROR, "assertion failed: %s (%s:%d)", expr, file, line);
    abort();
}
