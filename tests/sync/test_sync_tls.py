#!/usr/bin/env python3
"""Upstream transport: certificate checking that nothing outside the
upstream's own section can weaken, and no clear-text binds to remote hosts.

A test CA made here with openssl signs slapd's certificate (for IP
127.0.0.1 only); slapd serves ldap:// (StartTLS) and ldaps:// on loopback.
One gatehoused runs one upstream per case, with LDAPCONF pointing at an
ldap.conf that says TLS_REQCERT never and trusts the right CA (file and
directory), and LDAPTLS_REQCERT=never in its environment: a case must be
refused or accepted by the upstream's own settings only. Run by hand with

    GH_BUILDDIR=build GH_SRCDIR=. python3 tests/sync/test_sync_tls.py
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_sync  # noqa: E402  (sets up sys.path for ghtest)
import ghtest  # noqa: E402
import gen_ldif  # noqa: E402
import slapd  # noqa: E402


def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise AssertionError("openssl %s: %s" % (args[0], r.stdout[-1000:]))


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", name + "-key.pem",
            "-out", name + ".pem", "-days", "2", "-subj", "/CN=Gatehouse test CA " + name,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return os.path.join(d, name + ".pem")


def make_server_cert(d, ca, name, san):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + "-key.pem",
            "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n" % san)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + "-key.pem",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext",
            cwd=d)
    return os.path.join(d, name + ".pem"), os.path.join(d, name + "-key.pem")


@unittest.skipUnless(slapd.available() and shutil.which("openssl"),
                     "slapd, ldap-utils or openssl not installed")
class Transport(test_sync.SyncTest):
    mode = "search-poll"

    def setUp(self):
        super().setUp()
        self.pki = tempfile.mkdtemp(prefix="gh-pki-")
        self.addCleanup(shutil.rmtree, self.pki, True)
        self.ca = make_ca(self.pki, "ca")
        self.other_ca = make_ca(self.pki, "other")
        cert, key = make_server_cert(self.pki, "ca", "server", "IP:127.0.0.1")
        self.ldap = slapd.Slapd(ldif=test_sync.fixture(40, 1), tls_files=(self.ca, cert, key))
        self.addCleanup(self.ldap.close)
        # what a careless or hostile ldap.conf could say
        cadir = os.path.join(self.pki, "cadir")
        os.mkdir(cadir)
        shutil.copy(self.ca, os.path.join(cadir, "ca.pem"))
        subprocess.run(["openssl", "rehash", cadir], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        self.ldapconf = os.path.join(self.pki, "ldap.conf")
        with open(self.ldapconf, "w") as f:
            f.write("TLS_REQCERT never\nTLS_CACERT %s\nTLS_CACERTDIR %s\n" % (self.ca, cadir))

    def cfg(self, uri, uid_prefix, **kw):
        c = self.upstream_cfg(self.ldap, uri=uri, interval=60, timeout=3, bind_timeout=3,
                              group_filter="(cn=none)",
                              user_filter="(&(objectClass=posixAccount)(uid=%s*))" % uid_prefix)
        c.update(kw)
        return c

    def test_certificates_checked_whatever_ldap_conf_says(self):
        ldaps = self.ldap.ldaps_uri
        ldap = self.ldap.uri
        ldaps_name = "ldaps://localhost:%d" % self.ldap.ldaps_port  # cert is for 127.0.0.1
        ldap_name = "ldap://localhost:%d" % self.ldap.port
        cases = {
            # name: (section, mirrored?)
            "ok_ldaps": (self.cfg(ldaps, "u0001", ca_file=self.ca), True),
            "ok_starttls": (self.cfg(ldap, "u0002", starttls="yes", ca_file=self.ca), True),
            "wrongca_ldaps": (self.cfg(ldaps, "u0003", ca_file=self.other_ca), False),
            "wrongca_starttls": (self.cfg(ldap, "u0003", starttls="yes",
                                          ca_file=self.other_ca), False),
            "host_ldaps": (self.cfg(ldaps_name, "u0003", ca_file=self.ca), False),
            "host_starttls": (self.cfg(ldap_name, "u0003", starttls="yes", ca_file=self.ca),
                              False),
            # no ca_file: the system store, which does not hold the test CA
            "system_ldaps": (self.cfg(ldaps, "u0003"), False),
            "system_starttls": (self.cfg(ldap, "u0003", starttls="yes"), False),
        }
        config = {"server": {"log_level": "info"}}
        for name, (section, _) in cases.items():
            config["upstream:" + name] = section
        srv = self.start_server(config=config, env={"LDAPCONF": self.ldapconf,
                                                    "LDAPTLS_REQCERT": "never",
                                                    "LDAPTLS_CACERT": self.ca})
        c = self.client(srv)

        def ups():
            return {u["name"]: u for u in self.assertOk(c.call("sync.status"))["upstreams"]}

        def settled():
            u = ups()
            return all((u[n]["runs"] >= 1) if good else (u[n]["state"] == "down")
                       for n, (_, good) in cases.items())
        self.wait_for(settled, 30, "every upstream connected or refused")
        u = ups()
        for name, (_, good) in cases.items():
            if good:
                self.assertEqual(u[name]["users"], 10, name)
                self.assertIsNone(u[name]["last_error"], name)
            else:
                self.assertEqual((u[name]["users"], u[name]["runs"]), (0, 0), name)
                self.assertTrue(u[name]["last_error"], name)
        # the logins of both good upstreams bind over TLS too
        self.assertTrue(c.login("u00013", gen_ldif.password(13)))
        self.assertTrue(c.login("u00024", gen_ldif.password(24)))
        self.assertIn("StartTLS", u["wrongca_starttls"]["last_error"])
        self.assertIn("certificate", u["wrongca_ldaps"]["last_error"])

    def test_clear_text_to_a_remote_host_refused_at_start(self):
        base = {"base_dn": slapd.SUFFIX}
        for uri in ["ldap://ldap.example.com", "ldap://192.0.2.10:389",
                    "ldap://127.0.0.1:389 ldap://ldap.example.com"]:
            srv = self.start_server(config={"server": {}, "upstream:corp": dict(base, uri=uri)},
                                    start=False, check_exit=False)
            with self.assertRaises(ghtest.ServerError) as cm:
                srv.start()
            msg = str(cm.exception)
            self.assertIn("gatehoused.conf:", msg, uri)
            self.assertIn("starttls = yes", msg, uri)
            self.assertIn("clear text", msg, uri)
        # StartTLS, ldaps://, loopback and ldapi:// start
        for section in [dict(base, uri="ldap://ldap.example.com", starttls="yes"),
                        dict(base, uri="ldaps://ldap.example.com"),
                        dict(base, uri="ldap://127.0.0.1:1"),
                        dict(base, uri="ldap://localhost:1"),
                        dict(base, uri="ldap://[::1]:1"),
                        dict(base, uri="ldapi://%2Frun%2Fslapd%2Fldapi")]:
            srv = self.start_server(config={"server": {}, "upstream:corp": section})
            self.assertOk(self.client(srv).call("ping"))
            srv.stop()


if __name__ == "__main__":
    ghtest.main()
