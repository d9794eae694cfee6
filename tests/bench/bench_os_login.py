#!/usr/bin/env python3
"""The issue 12 targets, measured through the real glibc and Linux-PAM (not a
test: run by hand, as root, on an idle machine; it prints the figures).

    GH_BUILDDIR=$PWD/build/normal GH_SRCDIR=$PWD nice python3 tests/bench/bench_os_login.py

One gatehoused at the configured Argon2 cost (fast_argon2 off: the shipped
defaults), a user in 1,000 groups, 10,000 more users, and, in a private mount
namespace with a test nsswitch.conf and /etc/pam.d (as test_os_login.py):

- getpwnam through glibc: `nss_stress bench` (20,000 lookups in one process)
- `id` of the user in 1,000 groups: getgrouplist in one process
  (`nss_stress grouplist`), and `id -G` as a whole process
- enumerating 10,000 users: `getent passwd` as a whole process
- a PAM login: `pamtester ... authenticate` through pam_gatehouse, minus the
  same pamtester run against a pam_permit-only service (process start and
  PAM's own set-up), against one raw Argon2id verification of the same
  verifier (libsodium through ctypes, in this process).

The one thing to know: every figure is a median of this run; the machine is
shared, so run it twice and keep both.
"""
import ctypes
import ctypes.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import ghtest  # noqa: E402
import test_os_login as tol  # noqa: E402

PW = "correct horse 42"


def median_wall(fn, n):
    t = []
    for _ in range(n):
        t0 = time.monotonic()
        fn()
        t.append(time.monotonic() - t0)
    return statistics.median(t)


class BenchOsLogin(ghtest.TestCase):

    def test_figures(self):
        if not ghtest.is_root():
            self.skipTest("needs root (unshare -m)")
        srv = self.start_server(config={"nss_enumerate": "yes"}, fast_argon2=False,
                                world_access=True)
        c = self.client(srv)
        tmp = tempfile.mkdtemp(prefix="gh-bench-os-")
        env = tol.OsEnv(srv, tmp, cwrap=False)
        exe = tol.stress_exe(tmp)
        self.assertOk(c.call("user.add", name="gh-bench", uid=20001, password=PW))
        reqs = [{"op": "group.add", "name": "gh-g%04d" % i, "gid": 40000 + i} for i in range(1000)]
        reqs += [{"op": "group.add_member", "group": "gh-g%04d" % i, "user": "gh-bench"}
                 for i in range(1000)]
        for r in c.pipeline(reqs):
            self.assertOk(r)
        recs = [{"type": "user", "name": "gh-u%05d" % i, "uid": 100000 + i} for i in range(10000)]
        for i in range(0, len(recs), 1000):
            self.assertOk(c.call("import", records=recs[i:i + 1000]))
        out = []

        def run(argv):
            r = env.run(argv, timeout=600)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            return r.stdout.strip()

        out.append(run([exe, "bench", "20000", "gh-bench"]))
        out.append(run([exe, "grouplist", "200", "gh-bench"]))
        t = median_wall(lambda: run(["id", "-G", "gh-bench"]), 11)
        out.append("id -G (1,001 groups, whole process) median %.1f ms" % (t * 1000))
        t = median_wall(lambda: run(["getent", "passwd"]), 5)
        out.append("getent passwd (10,001 Gatehouse users, whole process) median %.0f ms"
                   % (t * 1000))
        # PAM login against a raw verification
        with open(os.path.join(env.pamd, "gh-permit"), "w") as f:
            f.write("auth required pam_permit.so\naccount required pam_permit.so\n")
        n = 15

        def pam(service):
            r = env.run(["pamtester", service, "gh-bench", "authenticate"], input=PW + "\n")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        t_pam = median_wall(lambda: pam(tol.SERVICE), n)
        t_permit = median_wall(lambda: pam("gh-permit"), n)
        rec = [r for r in self.assertOk(c.call("dump", kind="users"))["records"]
               if r["name"] == "gh-bench"][0]
        sodium = ctypes.CDLL(ctypes.util.find_library("sodium"))
        self.assertEqual(sodium.sodium_init() >= 0, True)
        ver = rec["verifier"].encode()
        pw = PW.encode()
        t_raw = median_wall(lambda: self.assertEqual(
            sodium.crypto_pwhash_str_verify(ver, pw, ctypes.c_ulonglong(len(pw))), 0), n)
        t_auth = median_wall(lambda: self.assertOk(c.call("auth", user="gh-bench", password=PW)),
                             n)
        out.append("PAM authenticate (pamtester) median %.1f ms; pam_permit-only pamtester "
                   "%.1f ms; PAM login = %.1f ms" % (t_pam * 1000, t_permit * 1000,
                                                     (t_pam - t_permit) * 1000))
        out.append("raw Argon2id verify (libsodium, %s) median %.1f ms; auth op median %.1f ms"
                   % (ver.split(b"$")[3].decode(), t_raw * 1000, t_auth * 1000))
        out.append("PAM login / raw verify = %.2f" % ((t_pam - t_permit) / t_raw))
        for line in out:
            sys.stdout.write("# %s\n" % line)


if __name__ == "__main__":
    os.environ.setdefault("GH_TEST_TIMEOUT", "1200")
    ghtest.main()
