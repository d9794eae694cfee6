#!/usr/bin/env python3
"""Upstream authentication against a real slapd: when the offline verifier
may be used, and how many binds a login or a client may have in flight.

The offline verifier is a copy of a password the upstream once accepted. It
may answer only when a bind was actually sent and the network failed (slapd
stopped: connection refused; slapd paused with SIGSTOP: the bind times out).
A bind that could not be attempted (caps reached, a wait in the queue past
bind_timeout) answers rate_limited, and a refusal by the upstream deletes the
verifier. Run one test by hand with

    GH_BUILDDIR=build GH_SRCDIR=. python3 tests/sync/test_sync_auth.py Fallback
"""
import json
import os
import shutil
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_sync  # noqa: E402  (sets up sys.path for ghtest)
import ghtest  # noqa: E402
import gen_ldif  # noqa: E402
import slapd  # noqa: E402

# lockout delays would answer rate_limited before any bind: keep them out of
# the way, these tests count binds
SERVER = {"log_level": "info", "lockout_threshold": 1000, "peer_failure_threshold": 100000}


class AuthBase(test_sync.SyncTest):
    mode = "syncrepl-poll"

    def start_gh(self, ldap, **kw):
        cfg = self.upstream_cfg(ldap, interval=60, offline_auth="yes", offline_max_age=600,
                                bind_timeout=2)
        cfg.update(kw)
        srv = self.start_server(config={"server": SERVER, "upstream:corp": cfg})
        c = self.client(srv)
        self.wait_runs(c, 1)
        return srv, c

    def binds(self, c):
        return self.status(c)["binds"]

    def has_password(self, c, name):
        return self.assertOk(c.call("user.get", name=name))["user"]["has_password"]


class Fallback(AuthBase):
    def test_queue_saturation_never_uses_the_offline_verifier(self):
        ldap = self.start_upstream(users=30, groups=1)
        srv, c = self.start_gh(ldap, max_binds=2, max_binds_per_peer=100,
                               max_binds_per_login=100)
        self.assertTrue(c.login("u00003", gen_ldif.password(3)))
        self.assertTrue(self.has_password(c, "u00003"))
        ldap.pause()  # accepts connections, never answers: binds hang
        # two binds of other logins hold every slot of this upstream
        holders = [self.client(srv) for _ in range(2)]
        for i, h in enumerate(holders):
            h.send({"op": "auth", "user": gen_ldif.login(10 + i), "password": "whatever"})
        self.wait_for(lambda: self.binds(c)["in_flight"] == 2, 2, "binds in flight")
        t0 = time.time()
        r = c.call("auth", user="u00003", password=gen_ldif.password(3))
        self.assertError(r, "rate_limited")  # not the offline verifier
        self.assertLess(time.time() - t0, 1.0)  # refused at admission, not after a wait
        self.assertGreaterEqual(self.binds(c)["rate_limited"], 1)
        for h in holders:  # their binds time out: no verifier, unavailable
            self.assertError(h.recv(ghtest.scaled(10)), "unavailable")
        # the same login once a bind can be sent: it times out at the network
        # level, and only now the offline verifier answers
        b0 = self.binds(c)
        t0 = time.time()
        self.assertTrue(c.login("u00003", gen_ldif.password(3)))
        self.assertGreaterEqual(time.time() - t0, 1.5)  # the bind really waited
        b1 = self.binds(c)
        self.assertEqual(b1["attempted"] - b0["attempted"], 1)
        self.assertEqual(b1["network_errors"] - b0["network_errors"], 1)
        ldap.resume()

    def test_wait_in_queue_past_bind_timeout_is_rate_limited(self):
        # Two upstreams share the four bind threads: binds to "slow" (bind_timeout
        # 5) hold all four on a hung slapd, so a login of "corp" (bind_timeout 1)
        # waits in the queue past its deadline and is never attempted.
        ldap = self.start_upstream(users=30, groups=1)
        corp = self.upstream_cfg(ldap, interval=60, offline_auth="yes", offline_max_age=600,
                                 bind_timeout=1,
                                 user_filter="(&(objectClass=posixAccount)(!(uid=u0001*)))")
        slow = self.upstream_cfg(ldap, interval=60, bind_timeout=5, max_binds_per_peer=100,
                                 user_filter="(&(objectClass=posixAccount)(uid=u0001*))",
                                 group_filter="(cn=none)")
        srv = self.start_server(config={"server": SERVER, "upstream:corp": corp,
                                        "upstream:slow": slow})
        c = self.client(srv)

        def ups():
            return {u["name"]: u for u in self.assertOk(c.call("sync.status"))["upstreams"]}
        self.wait_for(lambda: all(u["runs"] >= 1 for u in ups().values()), 30, "first runs")
        # a run can end without its entries (a timeout on a loaded machine):
        # the four "slow" users must be mirrored before their binds can hang
        self.wait_for(lambda: all(self.user(c, gen_ldif.login(10 + i)) for i in range(4)), 30,
                      "slow's users mirrored")
        self.assertTrue(c.login("u00003", gen_ldif.password(3)))
        ldap.pause()
        holders = [self.client(srv) for _ in range(4)]
        for i, h in enumerate(holders):
            h.send({"op": "auth", "user": gen_ldif.login(10 + i), "password": "whatever"})
        self.wait_for(lambda: ups()["slow"]["binds"]["in_flight"] == 4, 5, "threads held")
        t0 = time.time()
        r = c.call("auth", user="u00003", password=gen_ldif.password(3))
        self.assertError(r, "rate_limited")  # the offline verifier was not consulted
        self.assertGreaterEqual(time.time() - t0, 3.0)  # it waited for a thread
        b = ups()["corp"]["binds"]
        self.assertEqual((b["attempted"] - 1, b["rate_limited"]), (0, 1))  # 1: the first login
        for h in holders:
            self.assertError(h.recv(ghtest.scaled(10)), "unavailable")
        ldap.resume()

    def test_explicit_refusal_deletes_the_offline_verifier(self):
        ldap = self.start_upstream(users=30, groups=1)
        srv, c = self.start_gh(ldap)
        old = gen_ldif.password(5)
        self.assertTrue(c.login("u00005", old))
        self.assertTrue(self.has_password(c, "u00005"))
        ldap.modify("dn: %s\nchangetype: modify\nreplace: userPassword\nuserPassword: brand-new\n"
                    % test_sync.udn("u00005"))
        # the upstream says no to the old password: the copy of it goes
        self.assertError(c.call("auth", user="u00005", password=old), "invalid_credentials")
        self.assertFalse(self.has_password(c, "u00005"))
        self.assertEqual(self.binds(c)["offline_cleared"], 1)
        # and with the upstream down the old password opens nothing
        ldap.stop()
        self.assertError(c.call("auth", user="u00005", password=old), "unavailable")
        self.assertError(c.call("auth", user="u00005", password="brand-new"), "unavailable")
        ldap.start()
        self.assertTrue(c.login("u00005", "brand-new"))
        self.assertTrue(self.has_password(c, "u00005"))

    def test_offline_verifier_when_the_upstream_is_down(self):
        ldap = self.start_upstream(users=30, groups=1)
        srv, c = self.start_gh(ldap)
        self.assertTrue(c.login("u00007", gen_ldif.password(7)))
        ldap.stop()  # connection refused
        b0 = self.binds(c)
        self.assertTrue(c.login("u00007", gen_ldif.password(7)))
        self.assertError(c.call("auth", user="u00007", password="wrong"), "invalid_credentials")
        b1 = self.binds(c)
        self.assertEqual(b1["network_errors"] - b0["network_errors"], 2)
        self.assertEqual(b1["rate_limited"], b0["rate_limited"])
        self.assertTrue(self.has_password(c, "u00007"))  # a wrong guess offline deletes nothing


@unittest.skipUnless(shutil.which("ldapwhoami"), "ldap-utils not installed")
class Counting(AuthBase):
    def ldap_bind(self, srv, user, password):
        uri = "ldapi://" + os.path.join(srv.state_dir, "ldapi").replace("/", "%2F")
        return subprocess.run(["ldapwhoami", "-x", "-H", uri, "-D",
                               "uid=%s,ou=people,dc=gatehouse" % user, "-w", password],
                              env=dict(os.environ, LDAPCONF="/dev/null"), capture_output=True,
                              text=True, timeout=ghtest.scaled(30)).returncode

    def test_ldap_binds_of_upstream_users_are_counted(self):
        # stats' auth counters see the LDAP front-end's pass-through binds
        # (audit G4): before, only the JSON auth counted them
        ldap = self.start_upstream(users=10, groups=1)
        srv, c = self.start_gh(ldap)
        s0 = self.assertOk(c.call("stats"))["auth"]
        self.assertEqual(self.ldap_bind(srv, "u00005", gen_ldif.password(5)), 0)
        self.assertEqual(self.ldap_bind(srv, "u00005", "wrong"), 49)
        s1 = self.assertOk(c.call("stats"))["auth"]
        self.assertEqual(s1["upstream_binds"] - s0["upstream_binds"], 2, (s0, s1))
        # the offline copy hashed after the accepted bind
        self.assertEqual(s1["verifications"] - s0["verifications"], 1, (s0, s1))
        self.assertTrue(c.login("u00005", gen_ldif.password(5)))
        s2 = self.assertOk(c.call("stats"))["auth"]
        self.assertEqual(s2["upstream_binds"] - s1["upstream_binds"], 1, (s1, s2))


class Caps(AuthBase):
    def test_binds_in_flight_per_login_and_per_peer(self):
        ldap = self.start_upstream(users=60, groups=1)
        srv, c = self.start_gh(ldap, max_binds_per_login=2, max_binds_per_peer=5, max_binds=64,
                               offline_auth="no")
        ldap.pause()
        b0 = self.binds(c)
        # one login, twenty connections of the same peer at once
        conns = [self.client(srv) for _ in range(20)]
        for h in conns:
            h.send({"op": "auth", "user": "u00020", "password": gen_ldif.password(20)})
        codes = [h.recv(ghtest.scaled(10)).get("error", {}).get("code") for h in conns]
        b1 = self.binds(c)
        self.assertLessEqual(b1["attempted"] - b0["attempted"], 2, codes)
        self.assertGreaterEqual(codes.count("rate_limited"), 18, codes)
        # twenty logins from one peer: at most max_binds_per_peer binds at once
        for i, h in enumerate(conns):
            h.send({"op": "auth", "user": gen_ldif.login(30 + i),
                    "password": gen_ldif.password(30 + i)})
        self.wait_for(lambda: self.binds(c)["in_flight"] == 0, 10, "binds done")
        codes = [h.recv(ghtest.scaled(10)).get("error", {}).get("code") for h in conns]
        b2 = self.binds(c)
        self.assertLessEqual(b2["attempted"] - b1["attempted"], 5, codes)
        self.assertGreaterEqual(codes.count("rate_limited"), 15, codes)
        ldap.resume()
        # with the upstream back, the caps cost nothing to an honest login
        self.assertTrue(c.login("u00020", gen_ldif.password(20)))


class Pipelined(AuthBase):
    def test_upstream_auth_refused_at_once_in_a_pipeline(self):
        # every bind slot of the upstream is held: each pipelined auth of an
        # upstream user is refused at admission, on loop 0, and its answer
        # only marks the connection dirty; the pings between them answer in
        # order (issue 11: this path once re-entered the parser)
        ldap = self.start_upstream(users=30, groups=1)
        srv, c = self.start_gh(ldap, max_binds=1, max_binds_per_peer=100,
                               max_binds_per_login=100, offline_auth="no")
        ldap.pause()
        holder = self.client(srv)
        holder.send({"op": "auth", "user": gen_ldif.login(10), "password": "whatever"})
        self.wait_for(lambda: self.binds(c)["in_flight"] == 1, 2, "bind in flight")
        p = self.client(srv)
        lines = []
        for i in range(20):
            lines.append({"op": "auth", "id": 2 * i, "user": gen_ldif.login(3),
                          "password": gen_ldif.password(3)})
            lines.append({"op": "ping", "id": 2 * i + 1})
        p.send_raw(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
        for x in lines:
            r = p.recv(ghtest.scaled(10))
            self.assertEqual(r.get("id"), x["id"])
            if x["op"] == "auth":
                self.assertError(r, "rate_limited")
            else:
                self.assertOk(r)
        ldap.resume()
        self.assertError(holder.recv(ghtest.scaled(10)), ("invalid_credentials", "unavailable"))


if __name__ == "__main__":
    ghtest.main()
