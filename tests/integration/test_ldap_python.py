"""LDAP front-end through python-ldap (Debian's python3-ldap, a binding of
libldap): paged-results cookies, abandon, controls, and malformed requests
sent on raw sockets (truncated BER, huge lengths, garbage, deep filters),
after each of which the server must still serve.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import ghtest

try:
    import ldap
    from ldap.controls import LDAPControl, SimplePagedResultsControl
except ImportError:  # pragma: no cover
    ldap = None
    # Debian's python3-ldap is built for Debian's python3: when the suite runs
    # under another interpreter (pyenv, a venv), run this file with that one.
    DEB = "/usr/bin/python3"
    if (os.path.exists(DEB) and os.path.realpath(sys.executable) != os.path.realpath(DEB)
            and not os.environ.get("GH_LDAP_NO_REEXEC")
            and subprocess.run([DEB, "-c", "import ldap"], capture_output=True).returncode == 0):
        os.environ["GH_LDAP_NO_REEXEC"] = "1"
        os.execv(DEB, [DEB] + sys.argv)

SUFFIX = "dc=gatehouse"
SVC_PW = "svc-secret-123"
NOTICE_OID = b"1.3.6.1.4.1.1466.20036"


@unittest.skipUnless(ldap is not None, "python3-ldap not installed")
class PythonLdap(ghtest.TestCase):
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.base = tempfile.mkdtemp(prefix="gh-pyldap-")
        cls.path = os.path.join(cls.base, "ldapi")
        cls.srv = ghtest.Server(config={"ldap_listen": "ldapi://" + cls.path,
                                        "ldap_max_message": "65536",
                                        "peer_failure_threshold": "1000"})
        c = cls.srv.client()
        assert c.call("user.add", name="svc", password=SVC_PW)["ok"]
        assert c.call("role.add", name="ldap-reader",
                      allow=[{"action": "read", "resource": "ldap/directory"}])["ok"]
        assert c.call("grant", role="ldap-reader", user="svc")["ok"]
        for i in range(23):
            assert c.call("user.add", name="p%02d" % i)["ok"]
        c.close()
        cls.uri = "ldapi://" + cls.path.replace("/", "%2F")

    @classmethod
    def tearDownClass(cls):
        if cls.srv:
            rc = cls.srv.stop()
            err = cls.srv.stderr_text()
            cls.srv.close()
            assert rc == 0, err[-3000:]
            assert "AddressSanitizer" not in err and "LeakSanitizer" not in err \
                and "runtime error" not in err, err
        shutil.rmtree(cls.base, ignore_errors=True)

    def conn(self, bind=True):
        lc = ldap.initialize(self.uri)
        lc.protocol_version = 3
        lc.set_option(ldap.OPT_NETWORK_TIMEOUT, ghtest.scaled(10))
        lc.set_option(ldap.OPT_TIMEOUT, ghtest.scaled(10))
        if bind:
            lc.simple_bind_s("uid=svc,ou=people," + SUFFIX, SVC_PW)
        self.addCleanup(lc.unbind_s)
        return lc

    def assertServing(self):
        lc = ldap.initialize(self.uri)
        lc.set_option(ldap.OPT_TIMEOUT, ghtest.scaled(10))
        lc.simple_bind_s("uid=svc,ou=people," + SUFFIX, SVC_PW)
        self.assertEqual(lc.whoami_s(), "dn:uid=svc,ou=people," + SUFFIX)
        lc.unbind_s()

    def raw(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(ghtest.scaled(10))
        s.connect(self.path)
        self.addCleanup(s.close)
        return s

    @staticmethod
    def read_until_closed(s):
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                return data, False
            if not chunk:
                return data, True
            data += chunk

    # ---- paging

    def paged(self, lc, size, filt="(uid=p*)"):
        ctrl = SimplePagedResultsControl(True, size=size, cookie=b"")
        dns, pages = [], 0
        while True:
            msgid = lc.search_ext(SUFFIX, ldap.SCOPE_SUBTREE, filt, ["1.1"], serverctrls=[ctrl])
            _, data, _, rctrls = lc.result3(msgid)
            pages += 1
            dns += [dn for dn, _ in data]
            pc = [c for c in rctrls if c.controlType == SimplePagedResultsControl.controlType]
            self.assertEqual(len(pc), 1)
            if not pc[0].cookie:
                return dns, pages
            self.assertLessEqual(len(data), size)
            ctrl.cookie = pc[0].cookie

    def test_paged_cookies(self):
        lc = self.conn()
        dns, pages = self.paged(lc, 5)
        self.assertEqual(len(dns), 23)
        self.assertEqual(len(set(dns)), 23)
        self.assertEqual(pages, 5)
        dns, pages = self.paged(lc, 100)
        self.assertEqual((len(dns), pages), (23, 1))

    def test_paged_cookie_bound_to_connection_and_search(self):
        a, b = self.conn(), self.conn()
        ctrl = SimplePagedResultsControl(True, size=5, cookie=b"")
        msgid = a.search_ext(SUFFIX, ldap.SCOPE_SUBTREE, "(uid=p*)", ["1.1"], serverctrls=[ctrl])
        _, _, _, rctrls = a.result3(msgid)
        cookie = rctrls[0].cookie
        self.assertTrue(cookie)
        ctrl.cookie = cookie
        # another connection cannot continue it
        with self.assertRaises(ldap.PROTOCOL_ERROR):
            msgid = b.search_ext(SUFFIX, ldap.SCOPE_SUBTREE, "(uid=p*)", ["1.1"],
                                 serverctrls=[ctrl])
            b.result3(msgid)
        # nor a different search on the same connection
        with self.assertRaises(ldap.PROTOCOL_ERROR):
            msgid = a.search_ext(SUFFIX, ldap.SCOPE_SUBTREE, "(uid=p1*)", ["1.1"],
                                 serverctrls=[ctrl])
            a.result3(msgid)
        # a forged cookie neither
        ctrl.cookie = b"x" * len(cookie)
        with self.assertRaises(ldap.PROTOCOL_ERROR):
            msgid = a.search_ext(SUFFIX, ldap.SCOPE_SUBTREE, "(uid=p*)", ["1.1"],
                                 serverctrls=[ctrl])
            a.result3(msgid)
        # size 0 ends the paged search: the cookie is gone afterwards
        ctrl.cookie, ctrl.size = cookie, 0
        msgid = a.search_ext(SUFFIX, ldap.SCOPE_SUBTREE, "(uid=p*)", ["1.1"], serverctrls=[ctrl])
        _, data, _, rctrls = a.result3(msgid)
        self.assertEqual(data, [])
        self.assertFalse(rctrls[0].cookie)
        ctrl.size = 5
        with self.assertRaises(ldap.PROTOCOL_ERROR):
            msgid = a.search_ext(SUFFIX, ldap.SCOPE_SUBTREE, "(uid=p*)", ["1.1"],
                                 serverctrls=[ctrl])
            a.result3(msgid)

    # ---- controls

    def test_unknown_critical_control(self):
        lc = self.conn()
        with self.assertRaises(ldap.UNAVAILABLE_CRITICAL_EXTENSION):
            lc.search_ext_s(SUFFIX, ldap.SCOPE_SUBTREE, "(uid=svc)",
                            serverctrls=[LDAPControl("1.2.3.4.5.6", True, None)])
        res = lc.search_ext_s(SUFFIX, ldap.SCOPE_SUBTREE, "(uid=svc)", ["1.1"],
                              serverctrls=[LDAPControl("1.2.3.4.5.6", False, None)])
        self.assertEqual(len(res), 1)

    def test_bind_with_ppolicy_request(self):
        # SSSD sends the password-policy request control on every bind
        lc = ldap.initialize(self.uri)
        lc.simple_bind_s("uid=svc,ou=people," + SUFFIX, SVC_PW,
                         serverctrls=[LDAPControl("1.3.6.1.4.1.42.2.27.8.5.1", False, None)])
        self.assertEqual(lc.whoami_s(), "dn:uid=svc,ou=people," + SUFFIX)
        lc.unbind_s()
        with self.assertRaises(ldap.INVALID_CREDENTIALS):
            ldap.initialize(self.uri).simple_bind_s("uid=svc,ou=people," + SUFFIX, "nope",
                                                    serverctrls=[LDAPControl(
                                                        "1.3.6.1.4.1.42.2.27.8.5.1", False,
                                                        None)])

    def test_abandon(self):
        lc = self.conn()
        msgid = lc.search(SUFFIX, ldap.SCOPE_SUBTREE, "(objectClass=*)")
        lc.abandon(msgid)
        self.assertEqual(lc.whoami_s(), "dn:uid=svc,ou=people," + SUFFIX)
        self.assertServing()

    def test_writes_unwilling(self):
        lc = self.conn()
        with self.assertRaises(ldap.UNWILLING_TO_PERFORM):
            lc.add_s("uid=x,ou=people," + SUFFIX, [("objectClass", [b"person"])])
        with self.assertRaises(ldap.UNWILLING_TO_PERFORM):
            lc.modify_s("uid=svc,ou=people," + SUFFIX, [(ldap.MOD_REPLACE, "mail", [b"a@b"])])
        with self.assertRaises(ldap.UNWILLING_TO_PERFORM):
            lc.delete_s("uid=svc,ou=people," + SUFFIX)
        with self.assertRaises(ldap.UNWILLING_TO_PERFORM):
            lc.rename_s("uid=svc,ou=people," + SUFFIX, "uid=svc2")

    def test_unknown_extended_operation(self):
        lc = self.conn()
        with self.assertRaises(ldap.PROTOCOL_ERROR):
            lc.extop_s(ldap.extop.ExtendedRequest("1.2.3.4.99", None))

    # ---- malformed input

    def test_deep_filter_protocol_error(self):
        lc = self.conn()
        deep = "(!" * 200 + "(uid=svc)" + ")" * 200
        with self.assertRaises(ldap.PROTOCOL_ERROR):
            lc.search_s(SUFFIX, ldap.SCOPE_SUBTREE, deep)
        # the same connection still works
        self.assertEqual(len(lc.search_s(SUFFIX, ldap.SCOPE_SUBTREE, "(uid=svc)", ["1.1"])), 1)
        wide = "(|" + "(uid=x)" * 2000 + ")"
        with self.assertRaises(ldap.PROTOCOL_ERROR):
            lc.search_s(SUFFIX, ldap.SCOPE_SUBTREE, wide)
        self.assertServing()

    def test_truncated_message(self):
        s = self.raw()
        # a bind request cut in the middle, then the peer goes away
        s.sendall(bytes.fromhex("300c020101600702010304008000")[:7])
        s.shutdown(socket.SHUT_WR)
        data, closed = self.read_until_closed(s)
        self.assertTrue(closed)
        self.assertEqual(data, b"")
        self.assertServing()

    def test_split_message_is_resumed(self):
        s = self.raw()
        # anonymous bind: SEQUENCE { 1, [APPLICATION 0] { 3, "", [0] "" } }, byte by byte
        msg = bytes.fromhex("300c020101600702010304008000")
        for b in msg:
            s.sendall(bytes([b]))
            time.sleep(0.002)
        resp = s.recv(100)
        self.assertEqual(resp[:2], b"\x30\x0c")  # a BindResponse
        self.assertIn(b"\x61\x07\x0a\x01\x00", resp)  # resultCode success

    def test_huge_length(self):
        s = self.raw()
        s.sendall(b"\x30\x84\x7f\xff\xff\xff\x02\x01\x01")
        data, closed = self.read_until_closed(s)
        self.assertTrue(closed)
        self.assertIn(NOTICE_OID, data)
        self.assertServing()

    def test_over_max_message(self):
        s = self.raw()
        s.sendall(b"\x30\x83\x01\x00\x10" + b"\x00" * 100)  # over 64 KiB declared
        data, closed = self.read_until_closed(s)
        self.assertTrue(closed)
        self.assertIn(NOTICE_OID, data)
        self.assertServing()

    def test_starttls_where_not_offered(self):
        # on ldapi (and on ldaps, or a second time): operationsError (1), and
        # the connection keeps serving in clear
        lc = self.conn()
        with self.assertRaises(ldap.OPERATIONS_ERROR):
            lc.start_tls_s()
        self.assertEqual(lc.whoami_s(), "dn:uid=svc,ou=people," + SUFFIX)

    def test_garbage(self):
        # a whole frame (or bytes that cannot start one) that is not an
        # LDAPMessage: a Notice of Disconnection with protocolError (2), then
        # the server closes
        for junk in (b"GET / HTTP/1.0\r\n\r\n", b"\x00\x00\x00\x00",
                     bytes.fromhex("3003020101"),            # no protocolOp
                     bytes.fromhex("30050201017f00"),        # unknown op tag
                     bytes.fromhex("30050201ff4a00")):       # delete, negative msgid
            s = self.raw()
            s.sendall(junk)
            data, closed = self.read_until_closed(s)
            self.assertTrue(closed, junk)
            self.assertIn(NOTICE_OID, data, junk)
            self.assertIn(b"\x0a\x01\x02", data, junk)  # resultCode protocolError
        self.assertServing()

    def test_malformed_search_answered(self):
        s = self.raw()
        # search with a filter of unknown tag 0x8f: framing holds, so the
        # request gets a SearchResultDone with protocolError (2)
        body = bytes.fromhex("0400" "0a0102" "0a0100" "020100" "020100" "010100"
                             "8f0161" "3000")
        op = b"\x63" + bytes([len(body)]) + body
        msg = b"\x02\x01\x07" + op
        s.sendall(b"\x30" + bytes([len(msg)]) + msg)
        resp = s.recv(200)
        self.assertIn(b"\x65", resp[:8])  # SearchResultDone
        self.assertIn(b"\x0a\x01\x02", resp)  # protocolError
        self.assertServing()


if __name__ == "__main__":
    ghtest.main()
