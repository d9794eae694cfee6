/*
 * cli_term.c: everything the CLI asks or shows on the terminal: passwords
 * without echo, confirmations of destructive commands, the import progress
 * bar.
 *
 * Questions go to /dev/tty, never to stdout or stdin, so that they work while
 * stdin and stdout are redirected and never end up in a script's output. A
 * process without a controlling terminal (cron, CI, setsid) cannot be asked:
 * passwords then need --password-stdin and confirmations --yes. Echo is
 * turned off with termios and restored even when a signal interrupts the
 * prompt; password buffers are wiped by their owners.
 */
#include "gh-config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "clients/cli-int.h"

/* The terminal state to restore if a signal arrives while echo is off. */
static int saved_fd = -1;
static struct termios saved_tio;
static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    got_signal = sig;
    if (saved_fd >= 0)
        tcsetattr(saved_fd, TCSAFLUSH, &saved_tio);
}

static int open_tty(void)
{
    return open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
}

static void put(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Reads one line from fd into buf (without the newline) byte by byte, so
 * that nothing after the line is consumed and no stdio buffer keeps a copy.
 * Returns the length, -1 on EOF before any byte or error, -2 if too long. */
static ssize_t read_line(int fd, char *buf, size_t len)
{
    size_t n = 0;
    int any = 0;

    for (;;) {
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r < 0 && errno == EINTR) {
            if (got_signal)
                return -1;
            continue;
        }
        if (r <= 0)
            break;
        any = 1;
        if (ch == '\n')
            break;
        if (n + 1 >= len) {
            cli_wipe(buf, len);
            /* drain the rest of the line */
            while (read(fd, &ch, 1) == 1 && ch != '\n')
                ;
            return -2;
        }
        buf[n++] = ch;
    }
    if (!any)
        return -1;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    return (ssize_t)n;
}

/* Prompts on the terminal with echo off. */
static ssize_t ask_hidden(int fd, const char *prompt, char *buf, size_t len)
{
    struct termios tio;
    struct sigaction sa, old[4];
    static const int sigs[4] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    ssize_t n;
    int have_tio = tcgetattr(fd, &saved_tio) == 0;

    if (have_tio) {
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        got_signal = 0;
        for (int i = 0; i < 4; i++)
            sigaction(sigs[i], &sa, &old[i]);
        tio = saved_tio;
        tio.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
        tio.c_lflag |= ECHONL;
        saved_fd = fd;
        tcsetattr(fd, TCSAFLUSH, &tio);
    }
    put(fd, prompt);
    n = read_line(fd, buf, len);
    if (have_tio) {
        tcsetattr(fd, TCSAFLUSH, &saved_tio);
        saved_fd = -1;
        for (int i = 0; i < 4; i++)
            sigaction(sigs[i], &old[i], NULL);
        if (got_signal) {
            cli_wipe(buf, len);
            put(fd, "\n");
            raise(got_signal);
            return -1;
        }
    }
    return n;
}

int cli_password(cli *x, const char *prompt, int confirm, char *buf, size_t len)
{
    char again[CLI_PASSWORD_MAX];
    ssize_t n;
    int fd, rc = 0;

    if (cli_flag(x, "password-stdin")) {
        n = read_line(STDIN_FILENO, buf, len);
        if (n == -2)
            return cli_fail(CLI_EXIT_USAGE, "usage: the password is longer than %zu bytes",
                            len - 1);
        if (n <= 0) {
            cli_wipe(buf, len);
            return cli_fail(CLI_EXIT_USAGE, "usage: no password on stdin");
        }
        return 0;
    }
    fd = open_tty();
    if (fd < 0)
        return cli_fail(CLI_EXIT_USAGE,
                        "usage: no terminal to ask the password on; pass --password-stdin");
    n = ask_hidden(fd, prompt, buf, len);
    if (n == -2) {
        rc = cli_fail(CLI_EXIT_USAGE, "usage: the password is longer than %zu bytes", len - 1);
    } else if (n < 0) {
        rc = cli_fail(CLI_EXIT_USAGE, "usage: no password given");
    } else if (n == 0) {
        rc = cli_fail(CLI_EXIT_USAGE, "usage: empty password");
    } else if (confirm) {
        ssize_t m = ask_hidden(fd, "Repeat the password: ", again, sizeof(again));
        if (m != n || memcmp(buf, again, (size_t)n) != 0)
            rc = cli_fail(CLI_EXIT_USAGE, "usage: the passwords do not match");
        cli_wipe(again, sizeof(again));
    }
    close(fd);
    if (rc != 0)
        cli_wipe(buf, len);
    return rc;
}

int cli_confirm(const cli *x, const char *fmt, ...)
{
    char q[512], answer[16];
    va_list ap;
    ssize_t n;
    int fd;

    if (x->yes)
        return 0;
    va_start(ap, fmt);
    vsnprintf(q, sizeof(q), fmt, ap);
    va_end(ap);
    fd = open_tty();
    if (fd < 0)
        return cli_fail(CLI_EXIT_USAGE, "usage: %s: no terminal to confirm on; pass --yes", q);
    put(fd, q);
    put(fd, " [y/N] ");
    n = read_line(fd, answer, sizeof(answer));
    close(fd);
    if (n > 0 && (strcmp(answer, "y") == 0 || strcmp(answer, "Y") == 0 ||
                  strcmp(answer, "yes") == 0 || strcmp(answer, "YES") == 0))
        return 0;
    return cli_fail(CLI_EXIT_DENIED, "aborted: not confirmed");
}

/* ---- progress ---- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cli_progress_start(cli_progress *p, uint64_t total)
{
    p->active = isatty(STDERR_FILENO);
    p->total = total;
    p->last_ms = 0;
}

void cli_progress_update(cli_progress *p, uint64_t done, uint64_t records, int force)
{
    char bar[41];
    int64_t now;

    if (!p->active)
        return;
    now = mono_ms();
    if (!force && now - p->last_ms < 100)
        return;
    p->last_ms = now;
    if (p->total > 0) {
        uint64_t pct = done >= p->total ? 100 : done * 100 / p->total;
        size_t fill = (size_t)(pct * 40 / 100);
        memset(bar, '#', fill);
        memset(bar + fill, '.', 40 - fill);
        bar[40] = '\0';
        fprintf(stderr, "\rimporting [%s] %3u%%  %llu records", bar, (unsigned)pct,
                (unsigned long long)records);
    } else {
        fprintf(stderr, "\rimporting  %llu records", (unsigned long long)records);
    }
    fflush(stderr);
}

void cli_progress_end(cli_progress *p)
{
    if (p->active && p->last_ms != 0) {
        fputc('\n', stderr);
        fflush(stderr);
    }
}
