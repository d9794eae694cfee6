#!/usr/bin/env python3
"""LDAP front-end with users mirrored from a real upstream slapd.

gatehoused mirrors a private slapd (tests/sync/slapd.py, gen_ldif fixture)
and serves the mirror over its own ldapi socket: a mirrored user appears like
a local one, binds through the upstream (pass-through, same as `auth`), a
wrong password is invalidCredentials, Password Modify of a mirrored user is
refused (the upstream owns the password), and with offline_auth a bind keeps
an offline verifier that answers while the upstream is down. Driven with
ldap-utils.
"""
import os
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("GH_SRCDIR", os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "integration"))
sys.path.insert(0, HERE)

import ghtest  # noqa: E402
import gen_ldif  # noqa: E402
import slapd  # noqa: E402
import io  # noqa: E402

GH_SUFFIX = "dc=gatehouse"


@unittest.skipUnless(slapd.available(), "slapd or ldap-utils not installed")
class LdapMirror(ghtest.TestCase):

    def tool(self, path, *args):
        env = dict(os.environ, LDAPCONF="/dev/null")
        return subprocess.run(["ldap" + args[0], "-x", "-H", "ldapi://" + path.replace("/", "%2F")]
                              + list(args[1:]), env=env, capture_output=True, text=True,
                              timeout=ghtest.scaled(30))

    def test_mirrored_user(self):
        buf = io.StringIO()
        gen_ldif.generate(buf, 20, 4, 0)
        up = slapd.Slapd(ldif=buf.getvalue())
        self.addCleanup(up.close)
        section = {"uri": up.uri, "bind_dn": slapd.ADMIN_DN, "bind_password_file": up.pwfile,
                   "base_dn": slapd.SUFFIX, "user_filter": "(objectClass=posixAccount)",
                   "group_filter": "(objectClass=groupOfNames)", "login_attr": "uid",
                   "member_attr": "member", "mode": "syncrepl-poll", "interval": 1,
                   "timeout": 5, "bind_timeout": 2, "offline_auth": "yes",
                   "offline_max_age": 3600}
        srv = self.start_server(config={"server": {"log_level": "debug"},
                                        "upstream:corp": section})
        c = self.client(srv)
        deadline = time.time() + ghtest.scaled(60)
        while time.time() < deadline:
            st = self.assertOk(c.call("sync.status"))["upstreams"][0]
            if st["runs"] >= 1:
                break
            time.sleep(0.05)
        self.assertOk(c.call("user.add", name="svc", password="svc-secret-123"))
        self.assertOk(c.call("role.add", name="ldap-reader",
                             allow=[{"action": "read", "resource": "ldap/directory"}]))
        self.assertOk(c.call("grant", role="ldap-reader", user="svc"))
        path = os.path.join(srv.state_dir, "ldapi")
        login = gen_ldif.login(3)
        dn = "uid=%s,ou=people,%s" % (login, GH_SUFFIX)

        # it appears like a local user, with its mirrored groups
        p = self.tool(path, "search", "-LLL", "-D", "uid=svc,ou=people," + GH_SUFFIX,
                      "-w", "svc-secret-123", "-b", GH_SUFFIX, "(uid=%s)" % login, "uid",
                      "uidNumber", "memberOf", "objectClass")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("dn: " + dn, p.stdout)
        self.assertIn("objectClass: posixAccount", p.stdout)
        self.assertIn("uidNumber: ", p.stdout)

        # binds go to the upstream
        p = self.tool(path, "whoami", "-D", dn, "-w", gen_ldif.password(3))
        self.assertEqual(p.returncode, 0, p.stderr + srv.stderr_text()[-2000:])
        self.assertEqual(p.stdout.strip(), "dn:" + dn)
        p = self.tool(path, "whoami", "-D", dn, "-w", "not-the-password")
        self.assertEqual(p.returncode, 49, p.stderr)

        # the upstream owns the password
        p = self.tool(path, "passwd", "-D", dn, "-w", gen_ldif.password(3),
                      "-a", gen_ldif.password(3), "-s", "a-new-password-1")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("(53)", p.stdout + p.stderr)

        # a group deleted upstream is a tombstone here: gone from LDAP, also
        # for a compare that reads only the group's hot value (cn, member)
        svc = ["-D", "uid=svc,ou=people," + GH_SUFFIX, "-w", "svc-secret-123"]
        gdn = "cn=%s,ou=groups,%s" % (gen_ldif.group_name(1), GH_SUFFIX)
        p = self.tool(path, "compare", *svc, gdn, "cn:" + gen_ldif.group_name(1))
        self.assertEqual(p.returncode, 6, p.stdout + p.stderr)  # compareTrue
        up.delete(gen_ldif.group_dn(1))
        gone = ghtest.wait_until(lambda: self.tool(
            path, "compare", *svc, gdn, "cn:" + gen_ldif.group_name(1)).returncode == 32,
            ghtest.scaled(20), 0.2)
        self.assertTrue(gone, "a tombstoned group still answered a compare")
        p = self.tool(path, "compare", *svc, gdn, "member:" + dn)
        self.assertEqual(p.returncode, 32, p.stdout + p.stderr)  # noSuchObject
        # the record is kept (a tombstone within delete_grace), not deleted
        self.assertOk(c.call("group.get", name=gen_ldif.group_name(1)))
        # a search that needs only groups' hot values (an indexed filter, cn)
        # does not return it either; a live group it does
        for j, want in ((1, 0), (2, 1)):
            p = self.tool(path, "search", "-LLL", *svc, "-b", "ou=groups," + GH_SUFFIX,
                          "(cn=%s)" % gen_ldif.group_name(j), "cn")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout.count("dn: "), want, p.stdout)
        p = self.tool(path, "compare", *svc, "cn=%s,ou=groups,%s" % (gen_ldif.group_name(2),
                                                                     GH_SUFFIX),
                      "cn:" + gen_ldif.group_name(2))
        self.assertEqual(p.returncode, 6, p.stdout + p.stderr)

        # upstream down: the offline verifier kept by the successful bind
        # answers for that user; a user who never bound gets unavailable
        up.stop()
        p = self.tool(path, "whoami", "-D", dn, "-w", gen_ldif.password(3))
        self.assertEqual(p.returncode, 0, p.stderr + srv.stderr_text()[-2000:])
        p = self.tool(path, "whoami", "-D", dn, "-w", "not-the-password")
        self.assertEqual(p.returncode, 49, p.stderr)
        other = "uid=%s,ou=people,%s" % (gen_ldif.login(4), GH_SUFFIX)
        p = self.tool(path, "whoami", "-D", other, "-w", gen_ldif.password(4))
        self.assertEqual(p.returncode, 52, p.stderr)

        # the upstream removed from the configuration: its users' binds are
        # answered at once (no upstream to ask), and the connection goes on
        with open(srv.config_path) as f:
            text = f.read()
        with open(srv.config_path, "w") as f:
            f.write(text.split("[upstream:corp]")[0])
        srv.restart()
        p = self.tool(path, "whoami", "-D", other, "-w", gen_ldif.password(4), "-e", "ppolicy")
        self.assertIn(p.returncode, (49, 52), p.stderr)
        p = self.tool(path, "search", "-LLL", "-D", "uid=svc,ou=people," + GH_SUFFIX,
                      "-w", "svc-secret-123", "-b", GH_SUFFIX, "(uid=svc)", "1.1")
        self.assertEqual(p.returncode, 0, p.stderr)
        c = ghtest.Client(srv.socket_path)
        self.addCleanup(c.close)
        self.assertTrue(ghtest.wait_until(
            lambda: self.assertOk(c.call("stats"))["ldap"]["connections"] == 0,
            ghtest.scaled(5)), "an LDAP connection was never freed")


if __name__ == "__main__":
    ghtest.main()
