"""map_resident_max (issue 11, RSS): the data file's pages gatehoused keeps
mapped are trimmed back once a second when they exceed the bound, checks keep
deciding right while their pages are unmapped under them, and with
map_resident_max = 0 nothing is trimmed.

The one thing to know: the figure is the Rss of the data.mdb mapping in
/proc/PID/smaps (what VmRSS counts of the LMDB file), read from outside.
"""
import os
import time
import unittest

import ghtest

USERS = 8000
GROUPS = 200


def records():
    """Users, groups, one membership each, two roles, scoped and unscoped
    bindings: user u is in group g = u % GROUPS; `reader` (read doc/**) is
    granted to every even group scoped to doc/g<g>/**, `blocker` (deny read
    doc/*/secret/**) to every group with g % 4 == 0."""
    recs = [{"type": "role", "name": "reader",
             "allow": [{"action": "read", "resource": "doc/**"}]},
            {"type": "role", "name": "blocker",
             "deny": [{"action": "read", "resource": "doc/*/secret/**"}]}]
    for g in range(GROUPS):
        recs.append({"type": "group", "name": "g%d" % g})
    for u in range(USERS):
        recs.append({"type": "user", "name": "u%05d" % u,
                     "display_name": "Trim Test User %d" % u,
                     "mail": "u%05d@trim.example" % u})
    for u in range(USERS):
        recs.append({"type": "member", "group": "g%d" % (u % GROUPS), "user": "u%05d" % u})
    for g in range(0, GROUPS, 2):
        recs.append({"type": "binding", "role": "reader", "group": "g%d" % g,
                     "scope": "doc/g%d/**" % g})
    for g in range(0, GROUPS, 4):
        recs.append({"type": "binding", "role": "blocker", "group": "g%d" % g})
    return recs


def mapped_kib(pid, path):
    """Rss of pid's mappings of path, in KiB."""
    total, inside = 0, False
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:
                inside = len(head) >= 6 and head[5] == path
            elif inside and line.startswith("Rss:"):
                total += int(head[1])
    return total


class MemTrim(ghtest.TestCase):
    def load(self, srv):
        c = self.client(srv)
        recs = records()
        for i in range(0, len(recs), 1000):
            r = self.assertOk(c.call("import", records=recs[i:i + 1000]))
            bad = [x for x in r["results"] if not x["ok"]]
            self.assertEqual(bad, [])
        return c

    def checks(self, c):
        """Every user's three decisions, pipelined; asserts each."""
        reqs, want = [], []
        for u in range(USERS):
            g = u % GROUPS
            for res, allow in (("doc/g%d/a" % g, g % 2 == 0),
                               ("doc/g%d/a" % ((g + 1) % GROUPS), False),
                               ("doc/g%d/secret/x" % g, g % 4 == 2)):
                reqs.append({"op": "check", "user": "u%05d" % u, "action": "read",
                             "resource": res})
                want.append(allow)
        got = c.pipeline(reqs)
        for req, w, r in zip(reqs, want, got):
            self.assertOk(r)
            self.assertEqual(r["allow"], w, req)

    def read_everything(self, c):
        """Walks the user records (touching most of the file), then checks."""
        after, n = None, 0
        while True:
            fields = {"limit": 1000}
            if after:
                fields["after"] = after
            r = self.assertOk(c.call("user.list", **fields))
            names = [u["name"] if isinstance(u, dict) else u for u in r["users"]]
            if not names:
                break
            n += len(names)
            after = names[-1]
        self.assertEqual(n, USERS)
        self.checks(c)

    def test_trimmed_under_the_bound(self):
        srv = self.start_server(config={"map_resident_max": "1M", "max_request": "4M"})
        c = self.load(srv)
        data = os.path.join(srv.state_dir, "data.mdb")
        self.assertGreater(os.path.getsize(data), 6 << 20)
        self.read_everything(c)
        # reads stopped: the next tick (each second) trims what they mapped
        # (slack for pages touched again between a tick and the sample, e.g.
        # by another loop's reader or the writer's housekeeping: untrimmed,
        # the file's 6+ MiB stay mapped)
        self.assertTrue(ghtest.wait_until(lambda: mapped_kib(srv.pid, data) <= 1024 + 512,
                                          ghtest.scaled(5)),
                        "data.mdb still has %d KiB mapped" % mapped_kib(srv.pid, data))

    def test_decisions_while_trimmed(self):
        # a bound so low that every tick unmaps the pages the checks use
        srv = self.start_server(config={"map_resident_max": "4K", "max_request": "4M"})
        c = self.load(srv)
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            self.checks(c)
        self.assertOk(c.call("ping"))

    def test_zero_never_trims(self):
        srv = self.start_server(config={"map_resident_max": "0", "max_request": "4M"})
        c = self.load(srv)
        data = os.path.join(srv.state_dir, "data.mdb")
        self.read_everything(c)
        before = mapped_kib(srv.pid, data)
        self.assertGreater(before, 4096)
        time.sleep(2.5)
        self.assertGreater(mapped_kib(srv.pid, data), before * 0.9)


if __name__ == "__main__":
    ghtest.main()
