#!/usr/bin/env python3
"""Integration tests of durability: an acknowledged write survives kill -9
of the server while many clients write, and a SIGTERM with requests in flight
exits 0 without losing acknowledged writes."""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ghtest  # noqa: E402


class Writers:
    """n threads, each on its own connection, adding users in windows of
    `window` pipelined requests until stopped or the connection ends.
    Records every acknowledged name and every error response."""

    def __init__(self, srv, n=4, window=4, prefix="w"):
        self.srv = srv
        self.acked = [[] for _ in range(n)]
        self.errors = [[] for _ in range(n)]
        self.ended = [None] * n
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(k, window, prefix), daemon=True)
                        for k in range(n)]
        for t in self.threads:
            t.start()

    def run(self, k, window, prefix):
        seq = 0
        try:
            c = ghtest.Client(self.srv.socket_path, timeout=ghtest.scaled(20))
        except OSError as e:
            self.ended[k] = "connect: %r" % e
            return
        try:
            while not self.stop.is_set():
                names = ["%s%d-%05d" % (prefix, k, seq + i) for i in range(window)]
                seq += window
                for n in names:
                    c.send({"op": "user.add", "name": n, "mail": n + "@example.com"})
                for n in names:
                    r = c.recv()
                    if r.get("ok") is True:
                        if r["user"]["name"] != n:
                            self.errors[k].append(("wrong answer", n, r))
                        self.acked[k].append(n)
                    else:
                        self.errors[k].append((n, r))
        except Exception as e:  # the server went away
            self.ended[k] = repr(e)
        finally:
            c.close()

    def join(self, timeout):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        return not any(t.is_alive() for t in self.threads)

    def all_acked(self):
        return [n for a in self.acked for n in a]

    def all_errors(self):
        return [e for es in self.errors for e in es]

    def count(self):
        return sum(len(a) for a in self.acked)


class Durability(ghtest.TestCase):

    def check_present(self, srv, names):
        c = self.client(srv, timeout=ghtest.scaled(60))
        missing = []
        for i in range(0, len(names), 500):
            chunk = names[i:i + 500]
            resps = c.pipeline([{"op": "user.get", "name": n} for n in chunk])
            for n, r in zip(chunk, resps):
                if r.get("ok") is not True or r["user"]["name"] != n or \
                        r["user"]["mail"] != n + "@example.com":
                    missing.append((n, r))
        self.assertEqual(missing[:10], [], "%d acknowledged writes lost" % len(missing))
        return c

    def test_kill9_keeps_acknowledged_writes(self):
        srv = self.start_server()
        acked = []
        for rnd in range(3):
            w = Writers(srv, n=4, window=4, prefix="r%d-" % rnd)
            ok = ghtest.wait_until(lambda: w.count() >= 200, ghtest.scaled(10))
            self.assertTrue(ok, "writers made no progress: %d acked, errors %r"
                            % (w.count(), w.all_errors()[:3]))
            time.sleep(0.2)
            srv.kill9()
            self.assertTrue(w.join(ghtest.scaled(10)), "writer threads hung after kill -9")
            self.assertEqual(w.all_errors(), [])
            acked += w.all_acked()
            self.assertEqual(len(acked), len(set(acked)))
            srv.start()        # opens the database left by kill -9 (and a stale socket)
            c = self.check_present(srv, acked)
            self.assertOk(c.call("user.add", name="after-round-%d" % rnd,
                                 mail="after-round-%d@example.com" % rnd))
            n = self.assertOk(c.call("stats"))["store"]["users"]
            self.assertGreaterEqual(n, len(acked) + 1)
            c.close()
        # and once more after a clean stop
        self.assertEqual(srv.stop(), 0)
        srv.start()
        self.check_present(srv, acked + ["after-round-%d" % r for r in range(3)])

    def test_sigterm_with_requests_in_flight(self):
        srv = self.start_server()
        w = Writers(srv, n=4, window=8, prefix="t")
        self.assertTrue(ghtest.wait_until(lambda: w.count() >= 100, ghtest.scaled(10)),
                        "writers made no progress: %r" % w.all_errors()[:3])
        t = time.monotonic()
        code = srv.stop(timeout=ghtest.scaled(15))
        took = time.monotonic() - t
        self.assertEqual(code, 0, "exit code on SIGTERM\n" + srv.stderr_text()[-3000:])
        self.assertLess(took, ghtest.scaled(10))
        self.assertTrue(w.join(ghtest.scaled(10)))
        # answers during shutdown are successes or `unavailable`
        for name, r in w.all_errors():
            self.assertError(r, "unavailable", name)
        acked = w.all_acked()
        self.assertGreaterEqual(len(acked), 100)
        srv.start()
        self.check_present(srv, acked)

    def test_sigterm_during_argon2(self):
        srv = self.start_server(config={"argon2_opslimit": 3,
                                        "argon2_memlimit": 32 * 1024 * 1024,
                                        "lockout_threshold": 100000,
                                        "peer_failure_threshold": 100000})
        c = self.client(srv)
        self.assertOk(c.call("user.add", name="alice", password="alice-password"))
        conns = [ghtest.Client(srv.socket_path) for _ in range(4)]
        try:
            for k, cc in enumerate(conns):
                pw = "alice-password" if k % 2 else "wrong-password"
                for _ in range(10):
                    cc.send({"op": "auth", "user": "alice", "password": pw})
            time.sleep(0.1)
            self.assertEqual(srv.stop(timeout=ghtest.scaled(15)), 0,
                             srv.stderr_text()[-3000:])
        finally:
            for cc in conns:
                cc.close()
        srv.start()
        c = self.client(srv)
        self.assertOk(c.call("auth", user="alice", password="alice-password"))


if __name__ == "__main__":
    ghtest.main()
