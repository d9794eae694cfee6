"""LDAP front-end limits shared with the JSON listeners: the lockout (every
loopback address is one peer; a uid is one peer on ldapi and the JSON socket;
a JSON lockout refuses the LDAP bind and the reverse), max_connections and
max_connections_per_peer (one pool for both protocols), and ldap_max_scan
(a filter without an index past it answers adminLimitExceeded, an indexed
one never scans).

Binds from chosen 127.x source addresses are sent on raw sockets (ldap-utils
cannot pick a source address); everything else goes through ldap-utils.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import unittest

import ghtest

SUFFIX = "dc=gatehouse"
PW = "right-password-1"
UTILS = shutil.which("ldapsearch") is not None
NOTICE_OID = b"1.3.6.1.4.1.1466.20036"


def ber_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, value):
    return bytes([tag]) + ber_len(len(value)) + value


def bind_request(msgid, dn, password):
    """An LDAPv3 simple BindRequest (RFC 4511 4.2)."""
    op = tlv(0x60, tlv(0x02, b"\x03") + tlv(0x04, dn.encode()) + tlv(0x80, password.encode()))
    return tlv(0x30, tlv(0x02, bytes([msgid])) + op)


def recv_message(s):
    """One whole LDAPMessage (short or long form length), or b"" at EOF."""
    data = b""
    while True:
        if len(data) >= 2:
            n = data[1]
            if n < 0x80:
                need = 2 + n
            else:
                k = n & 0x7f
                need = 2 + k + int.from_bytes(data[2:2 + k], "big") if len(data) >= 2 + k else None
            if need is not None and len(data) >= need:
                return data[:need]
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk


def result_code(msg):
    """resultCode of a BindResponse / ExtendedResponse: the first ENUMERATED."""
    i = msg.find(b"\x0a\x01")
    return msg[i + 2] if i >= 0 else None


def user_dn(name):
    return "uid=%s,ou=people,%s" % (name, SUFFIX)


class LockoutShared(ghtest.TestCase):
    """lockout_threshold counts every bind of a login from a peer, whatever
    listener or loopback address it comes through."""

    THRESHOLD = 3

    def setUp(self):
        self.port = ghtest.free_port()
        self.tport = ghtest.free_port()
        self.srv = self.start_server(config={
            "ldap_listen": "ldapi:// ldap://127.0.0.1:%d" % self.port,
            "tcp_listen": "127.0.0.1:%d" % self.tport,
            "ldap_suffix": SUFFIX,
            "lockout_threshold": str(self.THRESHOLD),
            "lockout_base_delay": "120",
            "peer_failure_threshold": "1000",
        })
        self.ldapi = os.path.join(self.srv.state_dir, "ldapi")
        self.c = self.client(self.srv)
        for name in ("alice", "bob", "carol", "erin", "frank"):
            self.assertOk(self.c.call("user.add", name=name, password=PW))

    def bind_from(self, source, name, password):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=ghtest.scaled(30),
                                     source_address=(source, 0))
        try:
            s.sendall(bind_request(1, user_dn(name), password))
            return result_code(recv_message(s))
        finally:
            s.close()

    def ldapi_bind(self, name, password):
        p = subprocess.run(["ldapwhoami", "-x", "-H", "ldapi://" + self.ldapi.replace("/", "%2F"),
                            "-D", user_dn(name), "-w", password],
                           env=dict(os.environ, LDAPCONF="/dev/null"), capture_output=True,
                           text=True, timeout=ghtest.scaled(30))
        return p.returncode

    def ldap_stats(self):
        return self.c.call("stats")["ldap"]

    def test_loopback_addresses_are_one_peer(self):
        before = self.ldap_stats()["results"].get("invalidCredentials", 0)
        codes = [self.bind_from("127.0.0.%d" % (10 + i), "alice", "wrong-%d" % i)
                 for i in range(30)]
        verified = codes.count(49)  # 49 comes only from an Argon2 verification
        self.assertLessEqual(verified, self.THRESHOLD, codes)
        self.assertEqual(codes.count(51), 30 - verified, codes)
        after = self.ldap_stats()["results"].get("invalidCredentials", 0)
        self.assertLessEqual(after - before, self.THRESHOLD)
        # the right password, from yet another loopback address: still locked
        self.assertEqual(self.bind_from("127.0.0.200", "alice", PW), 51)
        # and over JSON TCP from loopback, the same peer
        with socket.create_connection(("127.0.0.1", self.tport), timeout=ghtest.scaled(30),
                                      source_address=("127.0.0.201", 0)) as s:
            f = s.makefile("rwb")
            f.write(b'{"op":"auth","user":"alice","password":"%s"}\n' % PW.encode())
            f.flush()
            self.assertIn(b'"rate_limited"', f.readline())
        # another login is not locked by alice's failures
        self.assertEqual(self.bind_from("127.0.0.9", "bob", PW), 0)

    @unittest.skipUnless(UTILS, "ldap-utils not installed")
    def test_json_socket_lockout_refuses_ldapi_bind(self):
        # the same uid on the JSON UNIX socket and on ldapi: one peer
        for i in range(self.THRESHOLD):
            self.assertError(self.c.call("auth", user="carol", password="bad-%d" % i),
                             "invalid_credentials")
        self.assertEqual(self.ldapi_bind("carol", PW), 51)

    @unittest.skipUnless(UTILS, "ldap-utils not installed")
    def test_ldapi_lockout_refuses_json_auth(self):
        for i in range(self.THRESHOLD):
            self.assertEqual(self.ldapi_bind("erin", "bad-%d" % i), 49)
        self.assertEqual(self.ldapi_bind("erin", PW), 51)
        self.assertError(self.c.call("auth", user="erin", password=PW), "rate_limited")

    def test_json_tcp_lockout_refuses_ldap_tcp_bind(self):
        with socket.create_connection(("127.0.0.1", self.tport), timeout=ghtest.scaled(30),
                                      source_address=("127.0.0.50", 0)) as s:
            f = s.makefile("rwb")
            for i in range(self.THRESHOLD):
                f.write(b'{"op":"auth","user":"frank","password":"bad-%d"}\n' % i)
                f.flush()
                self.assertIn(b'"invalid_credentials"', f.readline())
        self.assertEqual(self.bind_from("127.0.0.51", "frank", PW), 51)


class ConnectionLimits(ghtest.TestCase):
    """LDAP connections count toward max_connections and
    max_connections_per_peer with the JSON ones (one pool, one peer key)."""

    def test_per_peer_shared_with_json_tcp(self):
        port, tport = ghtest.free_port(), ghtest.free_port()
        srv = self.start_server(config={
            "ldap_listen": "ldap://127.0.0.1:%d" % port,
            "tcp_listen": "127.0.0.1:%d" % tport,
            "max_connections_per_peer": "3",
        })
        held = []
        self.addCleanup(lambda: [s.close() for s in held])
        for i in range(2):  # two JSON connections from loopback
            s = socket.create_connection(("127.0.0.1", tport), timeout=ghtest.scaled(10),
                                         source_address=("127.0.0.%d" % (2 + i), 0))
            f = s.makefile("rwb")
            f.write(b'{"op":"ping"}\n')
            f.flush()
            self.assertIn(b'"ok":true', f.readline())
            held.append(s)
        s = socket.create_connection(("127.0.0.1", port), timeout=ghtest.scaled(10),
                                     source_address=("127.0.0.4", 0))
        held.append(s)
        s.sendall(bind_request(1, "", ""))  # anonymous: served
        self.assertEqual(result_code(recv_message(s)), 0)
        # a fourth loopback connection, over LDAP: refused with a Notice of
        # Disconnection (unavailable, 52) that says why
        s = socket.create_connection(("127.0.0.1", port), timeout=ghtest.scaled(10),
                                     source_address=("127.0.0.5", 0))
        held.append(s)
        msg = recv_message(s)
        self.assertIn(NOTICE_OID, msg)
        self.assertEqual(result_code(msg), 52)
        self.assertIn(b"max_connections_per_peer", msg)
        self.assertEqual(s.recv(100), b"")
        # and over JSON too, now that an LDAP connection holds a slot
        held[0].close()

        def ldap_slot():  # the slot the close frees, once the server has seen it
            s = socket.create_connection(("127.0.0.1", port), timeout=ghtest.scaled(10),
                                         source_address=("127.0.0.6", 0))
            s.sendall(bind_request(1, "", ""))
            if result_code(recv_message(s)) == 0:
                held.append(s)
                return True
            s.close()
            return False
        self.assertTrue(ghtest.wait_until(ldap_slot, ghtest.scaled(5)))
        s = socket.create_connection(("127.0.0.1", tport), timeout=ghtest.scaled(10),
                                     source_address=("127.0.0.7", 0))
        held.append(s)
        self.assertIn(b"max_connections_per_peer", s.makefile("rb").readline())
        # the server's own uid over its UNIX socket is exempt, as before
        self.assertOk(srv.call("ping"))

    def test_max_connections_shared(self):
        port = ghtest.free_port()
        srv = self.start_server(config={"ldap_listen": "ldap://127.0.0.1:%d" % port,
                                        "max_connections": "3",
                                        "max_connections_per_peer": "0"})
        held = []
        self.addCleanup(lambda: [s.close() for s in held])
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=ghtest.scaled(10))
            s.sendall(bind_request(1, "", ""))
            self.assertEqual(result_code(recv_message(s)), 0)
            held.append(s)
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(ghtest.scaled(10))
        s.connect(srv.socket_path)
        held.append(s)
        self.assertIn(b"too many connections", s.makefile("rb").readline())
        s = socket.create_connection(("127.0.0.1", port), timeout=ghtest.scaled(10))
        held.append(s)
        msg = recv_message(s)  # an LDAP one over the limit: told why
        self.assertIn(NOTICE_OID, msg)
        self.assertEqual(result_code(msg), 52)
        self.assertIn(b"(max_connections)", msg)
        held.pop(0).close()
        got = []

        def stats():  # on one connection, once the LDAP close has freed a slot
            c = ghtest.Client(srv.socket_path, timeout=ghtest.scaled(5))
            try:
                r = c.call("stats")
            except (ghtest.ProtocolError, OSError):
                r = None
            c.close()
            if r and r.get("ok"):
                got.append(r)
            return bool(got)
        self.assertTrue(ghtest.wait_until(stats, ghtest.scaled(5)))
        self.assertEqual(got[0]["connections"]["current"], 3)  # 2 LDAP + the one asking
        self.assertEqual(got[0]["ldap"]["connections"], 2)


@unittest.skipUnless(UTILS, "ldap-utils not installed")
class MaxScan(ghtest.TestCase):
    """ldap_max_scan bounds a search without an index (adminLimitExceeded,
    11); searches the store has an index for never scan, so they work with a
    bound far below the number of users."""

    def test_indexed_filters_do_not_scan(self):
        base = tempfile.mkdtemp(prefix="gh-ldap-scan-")
        self.addCleanup(shutil.rmtree, base, True)
        path = os.path.join(base, "ldapi")
        srv = self.start_server(config={"ldap_listen": "ldapi://" + path,
                                        "ldap_suffix": SUFFIX, "ldap_max_scan": "5"})
        c = self.client(srv)
        self.assertOk(c.call("user.add", name="svc", password=PW))
        self.assertOk(c.call("role.add", name="ldap-reader",
                             allow=[{"action": "read", "resource": "ldap/directory"}]))
        self.assertOk(c.call("grant", role="ldap-reader", user="svc"))
        for g in ("git", "eng"):
            self.assertOk(c.call("group.add", name=g))
        self.assertOk(c.call("group.add_member", group="eng", subgroup="git"))
        for i in range(25):
            self.assertOk(c.call("user.add", name="u%02d" % i, mail="u%02d@example.org" % i))
        self.assertOk(c.call("user.add", name="Mixed"))
        self.assertOk(c.call("group.add_member", group="git", user="u07"))
        uid = self.assertOk(c.call("user.get", name="u07"))["user"]["uid"]
        env = dict(os.environ, LDAPCONF="/dev/null")
        uri = "ldapi://" + path.replace("/", "%2F")

        def search(flt, base=SUFFIX):
            p = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", uri, "-D", user_dn("svc"),
                                "-w", PW, "-b", base, flt, "1.1"], env=env,
                               capture_output=True, text=True, timeout=ghtest.scaled(30))
            return p.returncode, [ln[4:] for ln in p.stdout.splitlines()
                                  if ln.startswith("dn: ")]
        u07 = user_dn("u07")
        git = "cn=git,ou=groups," + SUFFIX
        uuid = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", uri, "-D", user_dn("svc"),
                               "-w", PW, "-b", u07, "-s", "base", "entryUUID"], env=env,
                              capture_output=True, text=True).stdout.split("entryUUID: ")[1].split()[0]
        for flt, want in (
                ("(uid=u07)", [u07]),
                ("(uid=U07)", [u07]),
                ("(uid=mixed)", [user_dn("Mixed")]),
                ("(cn=MIXED)", [user_dn("Mixed")]),
                ("(cn=git)", [git]),
                ("(uidNumber=%d)" % uid, [u07]),
                ("(entryUUID=%s)" % uuid, [u07]),
                ("(memberOf=%s)" % git, [u07]),
                ("(memberOf:1.2.840.113556.1.4.1941:=cn=eng,ou=groups,%s)" % SUFFIX, [git, u07]),
                ("(&(objectClass=posixAccount)(uid=u07))", [u07]),
                ("(&(objectClass=posixAccount)(uid=u07)(memberOf=%s))" % git, [u07]),
                ("(entryDN=%s)" % u07, [u07])):
            rc, dns = search(flt)
            self.assertEqual((rc, sorted(dns)), (0, sorted(want)), flt)
        # no index: mail, substrings, presence, a bare objectClass
        for flt in ("(mail=u07@example.org)", "(uid=u*)", "(objectClass=posixAccount)",
                    "(|(uid=u07)(mail=u07@example.org))"):
            rc, _ = search(flt)
            self.assertEqual(rc, 11, flt)
        # the bound is counted per search: the server still serves
        self.assertEqual(search("(uid=u07)"), (0, [u07]))


if __name__ == "__main__":
    ghtest.main()
