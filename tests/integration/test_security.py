#!/usr/bin/env python3
"""Integration tests of issue 10's defences in the request core: the lockout
counted at admission (pipelining, spraying, another account's good login,
a second peer, trusted front-ends naming their end client), peer classes
(service peers, no enumeration of users), bounded memory for requests held
behind writes, the element limit, connections per peer, the idle timeout
measured from the last complete request, and passwords not left in the
server's memory. Each test fails on the code before issue 10."""

import grp
import os
import shutil
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ghtest  # noqa: E402

PW = "correct horse battery"
OTHER = 65533


def service_group():
    """An OS group other than root's to act as service_unix_group."""
    for name in ("users", "staff", "daemon", "games"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    return None


class Lockout(ghtest.TestCase):

    def server(self, **cfg):
        base = {"lockout_threshold": 5, "peer_failure_threshold": 1000,
                "lockout_base_delay": 30, "lockout_max_delay": 60}
        base.update(cfg)
        srv = self.start_server(config=base, world_access=ghtest.is_root())
        admin = self.client(srv)
        for name in ("alice", "bob"):
            self.assertOk(admin.call("user.add", name=name, password=PW))
        return srv, admin

    def verifications(self, admin):
        return self.assertOk(admin.call("stats"))["auth"]["verifications"]

    def test_pipelined_guesses_counted_at_admission(self):
        srv, admin = self.server()
        before = self.verifications(admin)
        c = self.client(srv)
        reqs = [{"id": i, "op": "auth", "user": "alice", "password": "guess-%d" % i}
                for i in range(64)]
        rs = c.pipeline(reqs)
        codes = [r["error"]["code"] for r in rs]
        # at most lockout_threshold verified guesses, however it pipelines
        self.assertLessEqual(codes.count("invalid_credentials"), 5, codes)
        self.assertGreaterEqual(codes.count("invalid_credentials"), 1, codes)
        self.assertEqual(codes.count("rate_limited") + codes.count("invalid_credentials"), 64)
        self.assertLessEqual(self.verifications(admin) - before, 5)
        # reconnecting buys nothing either: five verified guesses in all
        for i in range(10):
            c2 = self.client(srv)
            r = c2.call("auth", user="alice", password="again-%d" % i)
            codes.append(r["error"]["code"])
            c2.close()
        self.assertEqual(codes.count("invalid_credentials"), 5, codes)
        self.assertEqual(self.verifications(admin) - before, 5)
        self.assertError(self.client(srv).call("auth", user="alice", password=PW),
                         "rate_limited")

    def test_good_login_of_another_account_keeps_the_peer_count(self):
        srv, admin = self.server(lockout_threshold=100, peer_failure_threshold=6)
        c = self.client(srv)
        for i in range(4):
            self.assertError(c.call("auth", user="user%d" % i, password="x"),
                             "invalid_credentials")
        c.login("bob", PW)     # does not reset the peer's (spraying) count
        self.assertError(c.call("auth", user="user8", password="x"), "invalid_credentials")
        self.assertError(c.call("auth", user="user9", password="x"), "invalid_credentials")
        self.assertError(c.call("auth", user="user10", password="x"), "rate_limited")
        # the successful login itself was not counted against the peer
        st = self.assertOk(admin.call("stats"))["auth"]
        self.assertEqual(st["verifications"], 7)

    def test_spraying_200_logins_is_stopped(self):
        srv, admin = self.server(lockout_threshold=100, peer_failure_threshold=20)
        before = self.verifications(admin)
        c = self.client(srv)
        rs = c.pipeline([{"op": "auth", "user": "u%03d" % i, "password": "Summer2026!"}
                         for i in range(200)])
        codes = [r["error"]["code"] for r in rs]
        self.assertEqual(codes.count("invalid_credentials"), 20)
        self.assertLessEqual(self.verifications(admin) - before, 20)

    def test_second_peer_not_locked_out(self):
        if not ghtest.is_root():
            self.skipTest("needs root to connect as another uid")
        srv, admin = self.server()
        attacker = self.uid_client(srv, ghtest.NOBODY)
        for i in range(8):
            attacker.call("auth", user="alice", password="bad-%d" % i)
        self.assertError(attacker.call("auth", user="alice", password=PW), "rate_limited")
        victim = self.uid_client(srv, OTHER)
        victim.login("alice", PW)

    def test_failure_table_cannot_be_filled(self):
        # audit G1: one uid sprays 52,000 distinct logins (more than the
        # lockout tables hold); refused attempts used to take slots until
        # the tables were full, and then every login of every peer answered
        # rate_limited. Now the sprayer is stopped and costs no slots.
        if not ghtest.is_root():
            self.skipTest("needs root to connect as other uids")
        srv, admin = self.server(lockout_threshold=5, peer_failure_threshold=20)
        before = self.verifications(admin)
        attacker = self.uid_client(srv, ghtest.NOBODY)
        codes = []
        for chunk in range(0, 52000, 4000):
            rs = attacker.pipeline([{"op": "auth", "user": "x%06d" % i, "password": "p"}
                                    for i in range(chunk, chunk + 4000)])
            codes += [r["error"]["code"] for r in rs]
        self.assertEqual(codes.count("invalid_credentials"), 20)
        self.assertEqual(codes.count("rate_limited"), 52000 - 20)
        self.assertLessEqual(self.verifications(admin) - before, 20)
        # the sprayer stays stopped, even with a right password
        self.assertError(attacker.call("auth", user="alice", password=PW), "rate_limited")
        # another uid and root still log in at once
        self.uid_client(srv, OTHER).login("alice", PW)
        self.assertTrue(self.assertOk(admin.call("auth", user="bob", password=PW))["token"])

    def test_front_end_names_its_end_client(self):
        # root is a trusted front-end (sshd + PAM): an attacker behind it
        # locks out only itself, not every user of the front-end
        srv, admin = self.server()
        for i in range(6):
            admin.call("auth", user="alice", password="bad-%d" % i, client="ssh:203.0.113.9")
        self.assertError(admin.call("auth", user="alice", password=PW,
                                    client="ssh:203.0.113.9"), "rate_limited")
        r = self.assertOk(admin.call("auth", user="alice", password=PW,
                                     client="ssh:198.51.100.7"))
        self.assertTrue(r["token"])

    def test_untrusted_peer_cannot_pick_a_client(self):
        if not ghtest.is_root():
            self.skipTest("needs root to connect as another uid")
        srv, admin = self.server()
        c = self.uid_client(srv, ghtest.NOBODY)
        for i in range(6):
            c.call("auth", user="alice", password="bad-%d" % i, client="fresh-%d" % i)
        # every claimed client was the same peer: it is locked out
        self.assertError(c.call("auth", user="alice", password=PW, client="another"),
                         "rate_limited")

    def test_loopback_tcp_addresses_are_one_peer(self):
        port = ghtest.free_port() if hasattr(ghtest, "free_port") else None
        if port is None:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
        srv, admin = self.server(tcp_listen="127.0.0.1:%d" % port)
        for i in range(6):
            s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.%d" % (i + 2), 0))
            f = s.makefile("rwb")
            f.write(b'{"op":"auth","user":"alice","password":"bad"}\n')
            f.flush()
            f.readline()
            s.close()
        s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.77", 0))
        f = s.makefile("rwb")
        f.write(('{"op":"auth","user":"alice","password":"%s"}\n' % PW).encode())
        f.flush()
        self.assertIn(b'"rate_limited"', f.readline())
        s.close()


class Counting(ghtest.TestCase):
    """stats' auth counters see every front-end (audit G4): LDAP simple
    binds and passwd.change verify with Argon2 like auth, and count."""

    def ldap_bind(self, srv, user, password):
        uri = "ldapi://" + os.path.join(srv.state_dir, "ldapi").replace("/", "%2F")
        return subprocess.run(["ldapwhoami", "-x", "-H", uri, "-D",
                               "uid=%s,ou=people,dc=gatehouse" % user, "-w", password],
                              env=dict(os.environ, LDAPCONF="/dev/null"), capture_output=True,
                              text=True, timeout=ghtest.scaled(30)).returncode

    def test_ldap_binds_and_passwd_change_are_verifications(self):
        if shutil.which("ldapwhoami") is None:
            self.skipTest("ldap-utils not installed")
        srv = self.start_server(config={"lockout_threshold": 100,
                                        "peer_failure_threshold": 1000})
        admin = self.client(srv)
        self.assertOk(admin.call("user.add", name="dave", password=PW))

        def auth_stats():
            return self.assertOk(admin.call("stats"))["auth"]

        s0 = auth_stats()
        self.assertEqual(self.ldap_bind(srv, "dave", PW), 0)
        self.assertEqual(self.ldap_bind(srv, "dave", "wrong password"), 49)
        self.assertEqual(self.ldap_bind(srv, "nosuch", "whatever"), 49)  # the dummy verifier
        s1 = auth_stats()
        self.assertEqual(s1["verifications"] - s0["verifications"], 3, (s0, s1))
        self.assertEqual(s1["success"] - s0["success"], 1, (s0, s1))
        self.assertEqual(s1["failure"] - s0["failure"], 2, (s0, s1))
        c = self.client(srv)
        self.assertError(c.call("passwd.change", user="dave", old_password="wrong",
                                new_password="a new long password"), "invalid_credentials")
        self.assertOk(c.call("passwd.change", user="dave", old_password=PW,
                             new_password="a new long password"))
        s2 = auth_stats()
        # the old password's verification (hashing the new one is not one)
        self.assertEqual(s2["verifications"] - s1["verifications"], 2, (s1, s2))
        self.assertEqual(s2["upstream_binds"], s0["upstream_binds"])  # local users only
        print("# auth stats after 3 LDAP binds and 2 passwd.change: %s" % s2)


class PeerClasses(ghtest.TestCase):

    def setUp(self):
        if not ghtest.is_root():
            self.skipTest("needs root to connect as other uids (setpriv)")
        self.g = service_group()
        if self.g is None:
            self.skipTest("no OS group to use as service_unix_group")

    def test_service_peer_checks_anyone_without_learning_who_exists(self):
        srv = self.start_server(config={"service_unix_group": self.g.gr_name},
                                world_access=True)
        admin = self.client(srv)
        self.assertOk(admin.call("role.add", name="reader",
                                 allow=[{"action": "read", "resource": "docs/**"}]))
        self.assertOk(admin.call("user.add", name="alice", password=PW))
        self.assertOk(admin.call("grant", role="reader", user="alice"))
        svc = self.uid_client(srv, ghtest.NOBODY, gid=self.g.gr_gid)
        r = self.assertOk(svc.call("check", user="alice", action="read", resource="docs/a"))
        self.assertIs(r["allow"], True)
        # an unknown user answers exactly like a user nothing allows
        known = self.assertOk(svc.call("check", user="alice", action="write",
                                       resource="docs/a"))
        ghost = self.assertOk(svc.call("check", user="ghost", action="write",
                                       resource="docs/a"))
        self.assertEqual((known["allow"], ghost["allow"]), (False, False))
        r = self.assertOk(svc.call("check.batch", user="ghost",
                                   checks=[{"action": "read", "resource": "docs/a"}]))
        self.assertEqual(r["results"], [False])
        r = self.assertOk(svc.call("check", user="ghost", action="read", resource="docs/a",
                                   explain=True))
        self.assertEqual(r["explain"]["reason"], "default_deny")
        # fields are validated before anyone is looked up
        for name in ("alice", "ghost"):
            self.assertError(svc.call("check", user=name, action="read"), "invalid_argument")
            self.assertError(svc.call("check", user=name, action="re*d", resource="x"),
                             "invalid_argument")
        # a service is not an administrator
        self.assertError(svc.call("perms", user="alice"), "permission_denied")
        self.assertError(svc.call("user.get", name="alice"), "permission_denied")
        # administrators still learn that a user does not exist
        self.assertError(admin.call("check", user="ghost", action="read", resource="x"),
                         "not_found")

    def test_service_group_token(self):
        srv = self.start_server(world_access=True)
        admin = self.client(srv)
        self.assertOk(admin.call("user.add", name="app", password=PW))
        self.assertOk(admin.call("user.add", name="alice", password=PW))
        self.assertOk(admin.call("group.add", name="gatehouse-services"))
        self.assertOk(admin.call("group.add_member", group="gatehouse-services", user="app"))
        c = self.uid_client(srv, ghtest.NOBODY)
        tok = c.login("app", PW)
        self.assertError(c.call("check", user="alice", action="read", resource="x"),
                         "permission_denied")
        r = self.assertOk(c.call("check", user="alice", action="read", resource="x", auth=tok))
        self.assertIs(r["allow"], False)
        self.assertError(c.call("user.list", auth=tok), "permission_denied")


class Bounds(ghtest.TestCase):

    def test_element_limit(self):
        srv = self.start_server(config={"max_request_elements": 1000})
        c = self.client(srv)
        pad = ",".join(["{}"] * 2000)
        c.send_raw(('{"op":"ping","pad":[%s]}\n' % pad).encode())
        r = c.recv()
        self.assertEqual(r["error"]["code"], "too_large")
        self.assertOk(c.call("ping"))

    def test_held_requests_cost_bytes_not_parsed_trees(self):
        # A write that hashes first holds every later request of its
        # connection. 16 connections each send three user.add, then two
        # 42 KB lines of "{}" (~5 MB each if kept parsed: 160 MB in all)
        # and 100 lines of 60 KB of text. If max_held_bytes were ignored a
        # connection would hold up to 256 lines (GH_CONN_MAX_PARKED), ~6 MB
        # of text here (measured: +75 MiB in all); with it a connection
        # holds max_held_bytes of text, the line being read and its replies.
        n_conns, held_max = 16, 256 << 10
        cfg = {"argon2_opslimit": "8", "argon2_memlimit": "8M", "threadpool_size": "1",
               "max_held_bytes": str(held_max)}
        # ASan's quarantine would keep every freed line resident: keep it small
        asan = ":".join(o for o in (os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=4") if o)
        srv = self.start_server(config=cfg, env={"ASAN_OPTIONS": asan})
        admin = self.client(srv)
        self.assertOk(admin.call("ping"))
        rss0 = srv.rss_kib()
        tree = ('{"op":"check","user":"nobody","action":"a","resource":"b","pad":[%s]}\n'
                % ",".join(["{}"] * 14000)).encode()
        text = ('{"op":"check","user":"nobody","action":"a","resource":"b","pad":"%s"}\n'
                % ("x" * 60000)).encode()
        pending = {}
        for k in range(n_conns):
            s = socket.socket(socket.AF_UNIX)
            s.connect(srv.socket_path)
            s.setblocking(False)
            pending[s] = b''.join(('{"op":"user.add","name":"u%d-%d","password":"%s"}\n'
                                   % (k, j, PW)).encode() for j in range(3)) \
                + tree * 2 + text * 100
        conns = list(pending)
        peak = rss0
        deadline = time.time() + ghtest.scaled(4)
        while pending and time.time() < deadline:
            for s in list(pending):
                try:
                    n = s.send(pending[s])
                    pending[s] = pending[s][n:]
                except BlockingIOError:
                    pass
                if not pending[s]:
                    del pending[s]
            peak = max(peak, srv.rss_kib())
            time.sleep(0.005)
        for _ in range(10):
            time.sleep(0.05)
            peak = max(peak, srv.rss_kib())
        grew_mib = (peak - rss0) / 1024
        for s in conns:
            s.close()
        # per connection max_request + max_held_bytes + max_output, plus the
        # Argon2 buffer (8 MiB) and 8 MiB of allocator slack per loop thread
        # (an arena each); ASan's shadow and redzones double it (TSan's
        # shadow is not bounded that way)
        bound = n_conns * (64 + held_max // 1024 + 1024) / 1024 + 8 + 8 * ghtest.loop_threads()
        bound *= {"asan": 2}.get(ghtest.SANITIZED, 1)
        print("# RSS grew by %.1f MiB under %d connections of held requests (bound %.0f MiB)"
              % (grew_mib, n_conns, bound))
        if ghtest.SANITIZED != "tsan":
            self.assertLess(grew_mib, bound)
        self.assertOk(admin.call("ping"))

    def test_connections_per_peer(self):
        if not ghtest.is_root():
            self.skipTest("needs root to connect as another uid")
        srv = self.start_server(config={"max_connections_per_peer": 3}, world_access=True)
        cs = [self.uid_client(srv, ghtest.NOBODY) for _ in range(3)]
        for c in cs:
            self.assertOk(c.call("ping"))
        extra = self.uid_client(srv, ghtest.NOBODY)
        line = extra.recv_line(timeout=ghtest.scaled(5))
        self.assertIn(b"max_connections_per_peer", line)
        other = self.uid_client(srv, OTHER)      # another uid is not affected
        self.assertOk(other.call("ping"))
        admins = [self.client(srv) for _ in range(5)]   # admins are exempt
        for c in admins:
            self.assertOk(c.call("ping"))

    def test_idle_timeout_counts_complete_requests(self):
        srv = self.start_server(config={"idle_timeout": 2})
        s = socket.socket(socket.AF_UNIX)
        s.connect(srv.socket_path)
        s.sendall(b'{"op":')
        t0 = time.time()
        closed = None
        while time.time() - t0 < 6 * ghtest.SCALE:
            try:
                s.sendall(b' ')       # a byte, never a whole request
            except (BrokenPipeError, ConnectionResetError):
                closed = time.time() - t0
                break
            time.sleep(0.25)
        self.assertIsNotNone(closed, "a trickling peer kept its connection")
        self.assertLess(closed, 4 * ghtest.SCALE)


class Secrets(ghtest.TestCase):

    def scan(self, pid, needle):
        hits = 0
        with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb", 0) as mem:
            for ln in maps:
                parts = ln.split()
                if "rw" not in parts[1]:
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if hi - lo > (1 << 30):
                    continue
                try:
                    mem.seek(lo)
                    hits += mem.read(hi - lo).count(needle)
                except (OSError, ValueError, OverflowError):
                    continue
        return hits

    def test_password_not_left_in_memory(self):
        if not ghtest.is_root():
            self.skipTest("needs root to read the server's memory")
        srv = self.start_server()
        c = self.client(srv)
        # long, and searched by its tail: a freed small block's first 16
        # bytes are overwritten by malloc's own links, the rest is not
        secret = "Pw-%s-zz" % os.urandom(32).hex()
        tail = secret[24:].encode()
        self.assertOk(c.call("user.add", name="alice", password=secret))
        tok = c.login("alice", secret)
        self.assertError(c.call("auth", user="alice", password=secret + "x"),
                         "invalid_credentials")
        self.assertOk(c.call("user.passwd", name="alice", password=secret[::-1]))
        time.sleep(0.2)
        self.assertEqual(self.scan(srv.pid, tail), 0, "the password is in the server's memory")
        self.assertEqual(self.scan(srv.pid, secret[::-1][24:].encode()), 0)
        self.assertEqual(self.scan(srv.pid, tok[12:].encode()), 0, "the token is in memory")


if __name__ == "__main__":
    ghtest.main()
