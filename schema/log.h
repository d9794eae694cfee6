/*
 * log.h: leveled logging to stderr or syslog, shared by every module.
 *
 * The level and sink are process-wide settings chosen once at start-up (and on
 * SIGHUP) by the server; modules only call gh_log. Never pass a password,
 * token or verifier to these functions.
 */
#ifndef GH_LOG_H
#define GH_LOG_H

enum { GH_LOG_ERROR = 0, GH_LOG_WARN = 1, GH_LOG_INFO = 2, GH_LOG_DEBUG = 3 };

/* level: GH_LOG_*; use_syslog: send to syslog(3) instead of stderr. */
void gh_log_setup(int level, int use_syslog);
int gh_log_level_parse(const char *name); /* "error".."debug" or -1 */
int gh_log_enabled(int level);
void gh_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define GH_LOGE(...) gh_log(GH_LOG_ERROR, __VA_ARGS__)
#define GH_LOGW(...) gh_log(GH_LOG_WARN, __VA_ARGS__)
#define GH_LOGI(...) gh_log(GH_LOG_INFO, __VA_ARGS__)
#define GH_LOGD(...)                                                                               \
    do {                                                                                           \
        if (gh_log_enabled(GH_LOG_DEBUG))                                                          \
            gh_log(GH_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)

/* Cheap invariant checks that stay on in release builds. */
#define GH_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            gh_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)
void gh_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

#endif
