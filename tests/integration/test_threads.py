#!/usr/bin/env python3
"""Threads meeting on shared server state, with loop_threads = 4: LDAP simple
binds (served on loop 0) and JSON auths (on every loop) at the same time.

Both kinds share the Argon2 in-flight bound and the auth counters; a plain
`++` on one side and an atomic add on the other lose updates (the bound can
wrap and refuse every later login). The counters must add up exactly once
the storm is over, and in the ThreadSanitizer build (make check-tsan) ghtest
fails the test if the server printed a race report.
"""
import os
import shutil
import subprocess
import tempfile
import threading
import unittest

import ghtest

SUFFIX = "dc=example,dc=org"
USERS = 6
ROUNDS = 8


def pw(i):
    return "pw-thread-%02d-secret" % i


@unittest.skipUnless(shutil.which("ldapwhoami"), "ldap-utils not installed")
class Threads(ghtest.TestCase):
    def test_ldap_binds_and_json_auths_at_once(self):
        base = tempfile.mkdtemp(prefix="gh-thr-")
        self.addCleanup(shutil.rmtree, base, True)
        ldapi = os.path.join(base, "ldapi")
        srv = self.start_server(config={
            "loop_threads": 4, "ldap_listen": "ldapi://" + ldapi, "ldap_suffix": SUFFIX,
            "ldap_bind_by_uid": "yes", "lockout_threshold": 100000,
            "peer_failure_threshold": 1000000, "argon2_queue_max": 64})
        c = self.client(srv)
        for i in range(USERS):
            self.assertOk(c.call("user.add", name="t%02d" % i, password=pw(i)))
        before = self.assertOk(c.call("stats"))["auth"]

        errors = []
        tally = {"ok": 0, "fail": 0, "limited": 0}
        lock = threading.Lock()

        def count(kind):
            with lock:
                tally[kind] += 1

        def json_auths(k):
            try:
                with ghtest.Client(srv.socket_path) as cl:
                    for r in range(ROUNDS):
                        i = (k + r) % USERS
                        good = r % 2 == 0
                        resp = cl.call("auth", user="t%02d" % i,
                                       password=pw(i) if good else "wrong-password")
                        code = None if resp.get("ok") else resp["error"]["code"]
                        if code == "rate_limited":
                            count("limited")
                        elif (code is None) == good:
                            count("ok" if good else "fail")
                        else:
                            errors.append("json auth %d/%d: %r" % (k, r, resp))
            except Exception as e:  # reported below, not lost in the thread
                errors.append("json auth %d: %r" % (k, e))

        def ldap_binds(k):
            env = dict(os.environ, LDAPCONF="/dev/null")
            for r in range(ROUNDS // 2):
                i = (k + r) % USERS
                good = r % 2 == 0
                p = subprocess.run(
                    ["ldapwhoami", "-x", "-H", "ldapi://" + ldapi.replace("/", "%2F"), "-D",
                     "uid=t%02d,ou=people,%s" % (i, SUFFIX), "-w",
                     pw(i) if good else "wrong-password"],
                    env=env, capture_output=True, text=True, timeout=ghtest.scaled(30))
                if p.returncode == 0 and good:
                    count("ok")
                elif p.returncode == 49 and not good:  # invalidCredentials
                    count("fail")
                elif p.returncode == 51:  # busy: the Argon2 bound
                    count("limited")
                else:
                    errors.append("ldap bind %d/%d: exit %d %s" % (k, r, p.returncode,
                                                                    p.stderr.strip()))

        threads = ([threading.Thread(target=json_auths, args=(k,)) for k in range(8)]
                   + [threading.Thread(target=ldap_binds, args=(k,)) for k in range(4)])
        for t in threads:
            t.start()
        for t in threads:
            t.join(ghtest.scaled(120))
        self.assertFalse(any(t.is_alive() for t in threads), "a client thread hung")
        self.assertEqual(errors, [])
        self.assertGreater(tally["ok"], 0)

        # every Argon2 job returned its slot, and every attempt was counted once
        st = self.assertOk(c.call("stats"))["auth"]
        self.assertEqual(st["argon2_inflight"], 0, st)
        for field, kind in (("success", "ok"), ("failure", "fail"), ("rate_limited", "limited")):
            self.assertEqual(st[field] - before[field], tally[kind], (field, st, before, tally))
        # and a login still works afterwards
        self.assertTrue(c.login("t00", pw(0)))


if __name__ == "__main__":
    ghtest.main()
