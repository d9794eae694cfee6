#!/usr/bin/env python3
"""bench_ad.py: Active Directory sync figures for docs/PERFORMANCE.md (not run
by make check).

    GH_BUILDDIR=build GH_SRCDIR=. python3 tests/sync/bench_ad.py [--users 10000] [--groups 500] [--big 5000]

The AD stand-in of test_sync_ad.py (slapd with AD attributes behind
ldapproxy.py, which answers member;range=0-1499 like Windows): a gatehoused
with flavor = ad mirrors --users users and --groups groups, one of them with
--big members (read in ranges). Reports the full sync (server start to the
first completed run), then an incremental run after 10 changes (entries read,
time), then how long single changes take to become visible with --interval
(default 5 s): a change made at a random moment between runs, timed until
user.get shows it. "Entries read" is gatehoused's entries_received (entries
of the user and group searches queued for apply); the proxy also counts every
searchResEntry it sent in that run (RootDSE and base reads, Show Deleted
results included). The proxy is Python and decodes every entry that names
"member"; its cost is included.
"""
import argparse
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_sync_ad as ad  # noqa: E402
import ghtest  # noqa: E402
import ldapproxy  # noqa: E402
import slapd  # noqa: E402


def status(c):
    return c.call("sync.status")["upstreams"][0]


def wait_runs(c, n):
    while status(c)["runs"] < n:
        time.sleep(0.005)
    return status(c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--groups", type=int, default=500)
    ap.add_argument("--big", type=int, default=5000)
    ap.add_argument("--interval", type=int, default=5)
    ap.add_argument("--changes", type=int, default=5)
    a = ap.parse_args()
    ldif = ad.ad_fixture(users=a.users, big=a.big, extra_groups=a.groups - 3)
    with slapd.Slapd(ldif=ldif, schemas=[ad.SCHEMA]) as ldap:
        proxy = ldapproxy.LdapProxy("127.0.0.1", ldap.port)
        proxy.rootdse.update(ad.rootdse(100000))
        cfg = dict(ad.AD, uri=proxy.uri, bind_dn=slapd.ADMIN_DN, bind_password_file=ldap.pwfile,
                   interval=a.interval)
        srv = ghtest.Server(config={"server": {"log_level": "warn"}, "upstream:ad": cfg},
                            start=False)
        try:
            t0 = time.time()
            srv.start()
            c = srv.client()
            u = wait_runs(c, 1)
            print("full sync: %d users, %d groups (one of %d members, %d range requests) in "
                  "%.2f s (server start included)"
                  % (u["users"], u["groups"], a.big, proxy.ranged_requests, time.time() - t0))
            # one ldapmodify for the ten, so that no scheduled run splits them
            ldap.modify("\n".join("dn: %s\nchangetype: modify\nreplace: mail\n"
                                   "mail: b%d@example.com\n-\nreplace: uSNChanged\n"
                                   "uSNChanged: %d\n" % (ad.udn(100 + k), k, 100001 + k)
                                   for k in range(10)))
            proxy.rootdse.update(ad.rootdse(100010))
            u = status(c)
            before, sent = u["entries_received"], proxy.entries_sent
            t0 = time.time()
            c.call("sync.run", upstream="ad")
            u = wait_runs(c, u["runs"] + 1)
            print("incremental run after 10 changes: %d entries read (%d searchResEntry sent "
                  "by the proxy) in %.3f s"
                  % (u["entries_received"] - before, proxy.entries_sent - sent, time.time() - t0))
            # single changes at random moments between runs, timed until seen
            waits = []
            for k in range(a.changes):
                time.sleep(random.uniform(0, a.interval))
                usn = 100100 + k
                mail = "v%d@example.com" % k
                ldap.modify("dn: %s\nchangetype: modify\nreplace: mail\nmail: %s\n-\n"
                            "replace: uSNChanged\nuSNChanged: %d\n" % (ad.udn(200), mail, usn))
                proxy.rootdse.update(ad.rootdse(usn))
                t0 = time.time()
                while c.call("user.get", name="aduser0200")["user"]["mail"] != mail:
                    time.sleep(0.01)
                waits.append(time.time() - t0)
            print("a change visible (interval %d s, %d changes): mean %.2f s, max %.2f s"
                  % (a.interval, len(waits), sum(waits) / len(waits), max(waits)))
        finally:
            srv.close()
            proxy.close()


if __name__ == "__main__":
    main()
