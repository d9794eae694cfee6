#!/usr/bin/env python3
"""Integration tests of `tcp_tls = yes`: the JSON TCP listener speaks TLS
(the same OpenSSL layer as ldaps), so tokens and passwords never cross TCP in
clear. A client that trusts the test CA talks the protocol as usual (ping,
auth, whoami with the token, a pipelined burst, a request near max_request
whose plaintext outgrows one TLS record); a client speaking clear text gets
no answer; the server refuses to start without a certificate."""

import json
import os
import shutil
import socket
import ssl
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ghtest  # noqa: E402
from test_ldap import make_ca  # noqa: E402

PW = "correct horse battery"


class TcpTls(ghtest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.pki = tempfile.mkdtemp(prefix="gh-tcp-tls-")
        make_ca(cls.pki)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.pki, ignore_errors=True)

    def server(self):
        port = ghtest.free_port()
        srv = self.start_server(config={
            "tcp_listen": "127.0.0.1:%d" % port, "tcp_tls": "yes",
            "tls_cert_file": os.path.join(self.pki, "server.pem"),
            "tls_key_file": os.path.join(self.pki, "server.key")})
        return srv, port

    def tls_client(self, port):
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "ca.pem"))
        raw = socket.create_connection(("127.0.0.1", port), timeout=ghtest.scaled(10))
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.addCleanup(s.close)
        return s, s.makefile("rwb")

    @staticmethod
    def call(f, **req):
        f.write((json.dumps(req) + "\n").encode())
        f.flush()
        return json.loads(f.readline())

    def test_protocol_over_tls(self):
        srv, port = self.server()
        admin = self.client(srv)
        self.assertOk(admin.call("user.add", name="alice", password=PW))
        s, f = self.tls_client(port)
        self.assertEqual(s.version() in ("TLSv1.2", "TLSv1.3"), True)
        r = self.call(f, op="ping")
        self.assertTrue(r["ok"], r)
        r = self.call(f, op="auth", user="alice", password=PW)
        self.assertTrue(r["ok"], r)
        tok = r["token"]
        r = self.call(f, op="whoami", token=tok)
        self.assertEqual(r["user"], "alice")
        # a pipelined burst: replies in order, in as few records as the
        # server likes
        f.write("".join(json.dumps({"id": i, "op": "ping"}) + "\n" for i in range(300)).encode())
        f.flush()
        ids = [json.loads(f.readline())["id"] for _ in range(300)]
        self.assertEqual(ids, list(range(300)))
        # one request line larger than a TLS record (16 KiB) but under
        # max_request: answered (unknown user -> denied like any other)
        big = {"op": "check", "token": tok, "action": "read", "resource": "x/" + "a" * 300,
               "pad": ["p" * 100] * 300}
        r = self.call(f, **big)
        self.assertIn(r.get("ok"), (True, False))
        self.assertNotEqual(r.get("error", {}).get("code"), "bad_request", r)
        self.assertTrue(self.call(f, op="ping")["ok"])

    def test_clear_text_gets_nothing(self):
        srv, port = self.server()
        raw = socket.create_connection(("127.0.0.1", port), timeout=ghtest.scaled(5))
        self.addCleanup(raw.close)
        raw.sendall(b'{"op":"ping"}\n')
        try:
            data = raw.recv(4096)
        except (ConnectionResetError, socket.timeout):
            data = b""
        self.assertNotIn(b'"ok"', data)
        # the server is still serving TLS clients
        s, f = self.tls_client(port)
        self.assertTrue(self.call(f, op="ping")["ok"])

    def test_wrong_ca_refused_by_the_client(self):
        srv, port = self.server()
        other = tempfile.mkdtemp(prefix="gh-tcp-tls-other-")
        self.addCleanup(shutil.rmtree, other, True)
        make_ca(other)
        ctx = ssl.create_default_context(cafile=os.path.join(other, "ca.pem"))
        raw = socket.create_connection(("127.0.0.1", port), timeout=ghtest.scaled(5))
        self.addCleanup(raw.close)
        with self.assertRaises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")

    def test_tls_needs_a_certificate(self):
        srv = self.start_server(config={"tcp_listen": "127.0.0.1:%d" % ghtest.free_port(),
                                        "tcp_tls": "yes"}, start=False, check_exit=False)
        srv.start(wait=False)
        code = srv.proc.wait(timeout=ghtest.scaled(20))
        self.assertNotEqual(code, 0)
        self.assertIn("tls_cert_file", srv.stderr_text())


if __name__ == "__main__":
    ghtest.main()
