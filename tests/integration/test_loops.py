#!/usr/bin/env python3
"""Integration tests of loop_threads (issue 11): several event loops, each
owning the connections loop 0's acceptor hands it in turn. Many connections
opened at once are spread over every loop (stats lists each loop's
connections and requests); on every loop a pipelined burst still reads its
own writes, auth (Argon2 on the pool, its token written by the writer, both
completing on the connection's own loop) and whoami work; stats sums every
loop; SIGTERM with connections busy on every loop drains them and exits 0
(every loop closed with no handle left open)."""

import os
import socket
import sys
import threading

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ghtest  # noqa: E402

LOOPS = 4


def run_threads(fns):
    """Runs every fn in its own thread at once; re-raises the first failure."""
    errors = []
    barrier = threading.Barrier(len(fns))

    def wrap(fn):
        try:
            barrier.wait(ghtest.scaled(10))
            fn()
        except BaseException as e:  # reported on the main thread
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(fn,), daemon=True) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(ghtest.scaled(60))
    if errors:
        raise errors[0]


class Loops(ghtest.TestCase):

    def start(self, loops=LOOPS, **config):
        config["loop_threads"] = loops
        return self.start_server(config=config)

    def open(self, srv, n):
        conns = [self.client(srv) for _ in range(n)]
        for c in conns:  # each adopted by its loop and answering
            self.assertOk(c.call("ping"))
        return conns

    def loops_stats(self, c):
        s = self.assertOk(c.call("stats"))
        self.assertIn("loops", s)
        return s

    def test_connections_spread_over_every_loop(self):
        srv = self.start()
        conns = self.open(srv, 4 * LOOPS)
        s = self.loops_stats(conns[0])
        loops = s["loops"]
        self.assertEqual(len(loops), LOOPS)
        # round-robin: every loop holds its share of the 16 connections (the
        # start-up ping's connection, closed since, went to one of them)
        for i, lp in enumerate(loops):
            self.assertEqual(lp["connections"], 4, "loop %d: %r" % (i, loops))
            self.assertIn(lp["connections_total"], (4, 5), "loop %d: %r" % (i, loops))
            self.assertGreaterEqual(lp["requests"], 4, "loop %d: %r" % (i, loops))
        self.assertEqual(sum(lp["connections"] for lp in loops), s["connections"]["current"])
        self.assertEqual(sum(lp["connections_total"] for lp in loops),
                         s["connections"]["total"])
        # the per-op counts sum every loop's requests
        self.assertEqual(sum(lp["requests"] for lp in loops),
                         sum(r["count"] for r in s["requests"].values()))
        self.assertEqual(sum(lp["connections_total"] for lp in loops), 4 * LOOPS + 1)
        self.assertEqual(s["requests"]["ping"]["count"], 4 * LOOPS + 1)

    def test_pipelined_read_your_writes_on_every_loop(self):
        srv = self.start()
        conns = self.open(srv, 2 * LOOPS)

        def burst(i, c):
            def run():
                reqs = []
                for k in range(20):
                    name = "u%d-%d" % (i, k)
                    reqs += [{"op": "user.add", "name": name, "id": name},
                             {"op": "user.get", "name": name},
                             {"op": "user.set", "name": name, "display_name": "D" + name},
                             {"op": "user.get", "name": name}]
                g = "g%d" % i
                reqs += [{"op": "group.add", "name": g},
                         {"op": "group.add_member", "group": g, "user": "u%d-0" % i},
                         {"op": "group.get", "name": g},
                         {"op": "role.add", "name": "r%d" % i,
                          "allow": [{"action": "read", "resource": "doc/%d/*" % i}]},
                         {"op": "grant", "role": "r%d" % i, "group": g},
                         {"op": "check", "user": "u%d-0" % i, "action": "read",
                          "resource": "doc/%d/x" % i},
                         {"op": "check", "user": "u%d-1" % i, "action": "read",
                          "resource": "doc/%d/x" % i}]
                out = c.pipeline(reqs, timeout=ghtest.scaled(30))
                for k in range(20):
                    name = "u%d-%d" % (i, k)
                    add, get1, st, get2 = out[4 * k:4 * k + 4]
                    self.assertOk(add)
                    self.assertEqual(add.get("id"), name)
                    self.assertEqual(self.assertOk(get1)["user"]["name"], name)
                    self.assertOk(st)
                    self.assertEqual(self.assertOk(get2)["user"]["display_name"], "D" + name)
                tail = out[80:]
                for r in tail[:2]:
                    self.assertOk(r)
                self.assertIn("u%d-0" % i, self.assertOk(tail[2])["group"]["members"]["users"])
                self.assertOk(tail[3])
                self.assertOk(tail[4])
                self.assertIs(self.assertOk(tail[5])["allow"], True, tail[5])
                self.assertIs(self.assertOk(tail[6])["allow"], False, tail[6])
            return run

        run_threads([burst(i, c) for i, c in enumerate(conns)])
        s = self.loops_stats(conns[0])
        for i, lp in enumerate(s["loops"]):
            self.assertGreater(lp["requests"], 80, "loop %d served no burst: %r" % (i, s["loops"]))
        self.assertEqual(s["store"]["users"], 20 * 2 * LOOPS)
        # the permission caches of every loop count in the sum
        self.assertGreaterEqual(s["authz_cache"]["misses"], 2 * LOOPS)

    def test_auth_and_whoami_on_every_loop(self):
        srv = self.start()
        admin = self.client(srv)
        conns = self.open(srv, 2 * LOOPS)
        # one login per connection: the lockout counts (login, client), and
        # every connection here is the same client (uid 0)
        for i in range(len(conns)):
            self.assertOk(admin.call("user.add", name="alice%d" % i, password="correct horse"))

        def login(i, c):
            def run():
                user = "alice%d" % i
                out = c.pipeline([{"op": "auth", "user": user, "password": "correct horse"},
                                  {"op": "auth", "user": user, "password": "wrong one!"},
                                  {"op": "ping"}], timeout=ghtest.scaled(30))
                tok = self.assertOk(out[0])["token"]
                self.assertError(out[1], "invalid_credentials")
                self.assertOk(out[2])
                who = self.assertOk(c.call("whoami", token=tok))
                self.assertEqual(who["user"], user)
                self.assertOk(c.call("logout", token=tok))
                self.assertError(c.call("whoami", token=tok), "invalid_token")
            return run

        run_threads([login(i, c) for i, c in enumerate(conns)])
        s = self.loops_stats(admin)
        self.assertEqual(s["auth"]["success"], 2 * LOOPS)
        self.assertEqual(s["auth"]["failure"], 2 * LOOPS)
        self.assertEqual(s["auth"]["argon2_inflight"], 0)
        self.assertEqual(s["requests"]["auth"]["count"], 4 * LOOPS)
        served = [lp["requests"] for lp in s["loops"]]
        self.assertTrue(all(n >= 2 for n in served), served)

    def test_loop0_ops_from_every_loop(self):
        # sync.status and sync.run run on loop 0 (GH_OPF_LOOP0), whichever
        # loop owns the connection; their answers keep the pipeline's order
        srv = self.start_server(config={"loop_threads": LOOPS}, world_access=True)
        conns = self.open(srv, LOOPS)
        for c in conns:
            out = c.pipeline([{"op": "ping", "id": 1}, {"op": "sync.status", "id": 2},
                              {"op": "sync.run", "upstream": "nope", "id": 3},
                              {"op": "bad op", "id": 4}, {"op": "sync.status", "id": 5},
                              {"op": "ping", "id": 6}] * 5)
            self.assertEqual([r.get("id") for r in out], [1, 2, 3, 4, 5, 6] * 5)
            for k in range(5):
                self.assertOk(out[6 * k])
                self.assertEqual(self.assertOk(out[6 * k + 1])["upstreams"], [])
                self.assertError(out[6 * k + 2], "not_found")
                self.assertError(out[6 * k + 3], "unknown_op")
                self.assertOk(out[6 * k + 4])
                self.assertOk(out[6 * k + 5])
        s = self.loops_stats(conns[0])
        self.assertEqual(s["requests"]["sync.status"]["count"], 10 * LOOPS)
        # answered (and counted) by the loop of each connection
        for i, lp in enumerate(s["loops"]):
            self.assertGreaterEqual(lp["requests"], 25, "loop %d: %r" % (i, s["loops"]))
        # a non-admin peer is refused on its own loop, before any hop
        for c in [self.uid_client(srv, 65534) for _ in range(LOOPS)]:
            self.assertError(c.call("sync.status"), "permission_denied")

    def test_lockout_shared_by_every_loop(self):
        # the failure count of a login is one table for all loops: spreading
        # guesses over connections on every loop buys nothing
        srv = self.start(lockout_threshold=3, lockout_base_delay=60)
        admin = self.client(srv)
        self.assertOk(admin.call("user.add", name="bob", password="right password"))
        conns = self.open(srv, LOOPS)
        for c in conns[:3]:
            self.assertError(c.call("auth", user="bob", password="wrong password"),
                             "invalid_credentials")
        self.assertError(conns[3].call("auth", user="bob", password="right password"),
                         "rate_limited")

    def test_map_grows_while_every_loop_reads(self):
        # a resize excludes every loop's reader (each holds its own lock):
        # writes that outgrow a 1 MiB map while all loops read must neither
        # deadlock nor fail
        srv = self.start(map_size="1M")
        conns = self.open(srv, 2 * LOOPS)
        writer = self.client(srv)
        pad = "x" * 200

        def reads(c):
            def run():
                for _ in range(30):
                    out = c.pipeline([{"op": "user.list", "limit": 50}] * 10 + [{"op": "stats"}],
                                     timeout=ghtest.scaled(30))
                    for r in out:
                        self.assertOk(r)
            return run

        def writes():
            for k in range(6):
                out = writer.pipeline([{"op": "user.add", "name": "m%d-%d" % (k, i),
                                        "display_name": pad, "mail": "m%d@example.org" % i}
                                       for i in range(400)], timeout=ghtest.scaled(60))
                for r in out:
                    self.assertOk(r)

        run_threads([reads(c) for c in conns] + [writes])
        s = self.assertOk(writer.call("stats"))
        self.assertEqual(s["store"]["users"], 2400)
        self.assertGreater(s["store"]["map_bytes"], 1 << 20)
        self.assertIn("map grown", srv.stderr_text())

    def test_sighup_reload_reaches_every_loop(self):
        # the reload runs while the other loops wait; each then sees it
        srv = self.start(password_min_length=8)
        conns = self.open(srv, LOOPS)
        stop = threading.Event()

        def busy(c):
            def run():
                while not stop.is_set():
                    for r in c.pipeline([{"op": "ping"}] * 20):
                        self.assertOk(r)
            return run

        threads = [threading.Thread(target=busy(c), daemon=True) for c in conns[1:]]
        for t in threads:
            t.start()
        with open(srv.config_path) as f:
            text = f.read()
        with open(srv.config_path, "w") as f:
            f.write(text.replace("password_min_length = 8", "password_min_length = 20"))
        for k in range(1, 4):  # one at a time: pending signals coalesce
            srv.proc.send_signal(1)
            self.assertTrue(ghtest.wait_until(
                lambda: srv.stderr_text().count("configuration reloaded") >= k, ghtest.scaled(5)))
        stop.set()
        for t in threads:
            t.join(ghtest.scaled(20))
        for i, c in enumerate(conns):
            self.assertError(c.call("user.add", name="short%d" % i, password="twelve chars"),
                             "invalid_argument")
            self.assertOk(c.call("user.add", name="long%d" % i, password="a" * 20))

    def test_sigterm_drains_every_loop(self):
        srv = self.start()
        conns = self.open(srv, 2 * LOOPS)
        # requests in flight on every loop when the signal comes
        for i, c in enumerate(conns):
            c.send_raw(b"".join(b'{"op":"user.add","name":"t%d-%d"}\n' % (i, k)
                                for k in range(10)))
        srv.proc.send_signal(15)
        for c in conns:
            answered = 0
            while True:
                try:
                    line = c.recv_line(ghtest.scaled(20))
                except (ConnectionResetError, socket.timeout):
                    break
                if line is None:
                    break
                answered += 1
            self.assertLessEqual(answered, 10)
        code = srv.proc.wait(ghtest.scaled(30))
        self.assertEqual(code, 0, srv.stderr_text()[-3000:])
        self.assertNotIn("handle still open", srv.stderr_text())

    def test_one_loop(self):
        srv = self.start(loops=1)
        c = self.client(srv)
        s = self.loops_stats(c)
        self.assertEqual(len(s["loops"]), 1)
        self.assertEqual(s["loops"][0]["connections"], 1)

    def test_default_is_one_loop_per_cpu(self):
        srv = self.start(loops=0)
        c = self.client(srv)
        want = min(len(os.sched_getaffinity(0)), 64)
        self.assertEqual(len(self.loops_stats(c)["loops"]), want)

    def test_config_bounds(self):
        srv = ghtest.Server(config={"loop_threads": 65}, start=False)
        self.addCleanup(srv.close)
        srv.start(wait=False)
        code = srv.proc.wait(ghtest.scaled(20))
        self.assertEqual(code, 2)
        self.assertIn("loop_threads", srv.stderr_text())


if __name__ == "__main__":
    ghtest.main()
