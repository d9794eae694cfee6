#!/usr/bin/env python3
"""bench_sync.py: sync figures for docs/PERFORMANCE.md (not run by make check).

    GH_BUILDDIR=build GH_SRCDIR=. python3 tests/sync/bench_sync.py [--users 2000] [--samples 50]

Starts a private slapd with the gen_ldif fixture and a gatehoused mirroring it
in syncrepl-persist mode, then reports
  - the initial full sync: from gatehoused's start to the first completed
    refresh (sync.status runs >= 1), and a forced full reload
    (sync.run full:true) on the already populated mirror;
  - the lag of one change: ldapmodify of one user's mail over ldapi, then
    user.get every millisecond until the mirror shows it (median, p95, max;
    the ldapmodify process start is included).
"""
import argparse
import io
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("GH_SRCDIR", os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "integration"))
sys.path.insert(0, HERE)

import ghtest  # noqa: E402
import gen_ldif  # noqa: E402
import slapd  # noqa: E402


def status(c):
    return c.call("sync.status")["upstreams"][0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--samples", type=int, default=50)
    a = ap.parse_args()
    buf = io.StringIO()
    gen_ldif.generate(buf, a.users, a.groups)
    with slapd.Slapd(ldif=buf.getvalue()) as ldap:
        cfg = {"server": {"log_level": "warn"},
               "upstream:corp": {"uri": ldap.uri, "bind_dn": slapd.ADMIN_DN,
                                 "bind_password_file": ldap.pwfile, "base_dn": slapd.SUFFIX,
                                 "mode": "syncrepl-persist"}}
        srv = ghtest.Server(config=cfg, start=False)
        try:
            t0 = time.time()
            srv.start()
            c = srv.client()
            while status(c)["runs"] < 1:
                time.sleep(0.002)
            initial = time.time() - t0
            u = status(c)
            print("initial full sync: %d users, %d groups in %.3f s (server start included)"
                  % (u["users"], u["groups"], initial))
            n = u["runs"]
            t0 = time.time()
            c.call("sync.run", upstream="corp", full=True)
            while status(c)["runs"] <= n:
                time.sleep(0.002)
            print("forced full reload (nothing changed): %.3f s" % (time.time() - t0))
            lags = []
            for i in range(a.samples):
                login = gen_ldif.login(1 + i % a.users)
                mail = "lag%d@example.com" % i
                t0 = time.time()
                ldap.modify("dn: uid=%s,ou=people,%s\nchangetype: modify\nreplace: mail\n"
                            "mail: %s\n" % (login, slapd.SUFFIX, mail))
                while c.call("user.get", name=login)["user"]["mail"] != mail:
                    time.sleep(0.001)
                lags.append(time.time() - t0)
            lags.sort()
            print("persist lag of one change over %d samples: median %.1f ms, p95 %.1f ms, "
                  "max %.1f ms" % (len(lags), statistics.median(lags) * 1000,
                                   lags[int(len(lags) * 0.95) - 1] * 1000, lags[-1] * 1000))
            t0 = time.time()
            ldap.modify("dn: uid=u00001,ou=people,%s\nchangetype: modify\nreplace: mail\n"
                        "mail: noop@example.com\n" % slapd.SUFFIX)
            print("ldapmodify alone: %.1f ms" % ((time.time() - t0) * 1000))
        finally:
            srv.close()


if __name__ == "__main__":
    main()
