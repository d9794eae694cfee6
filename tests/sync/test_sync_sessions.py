#!/usr/bin/env python3
"""Sessions against a real upstream (issue 10), with a private slapd:

- an upstream group named like admin_group ("gatehouse-admins") is mirrored
  but never makes its members administrators (whoami admin false, the "auth"
  field raises nothing);
- deleting a user upstream (a tombstone in the mirror) ends the sessions it
  had: whoami answers invalid_token right after the mirror shows the user
  disabled, session.list is empty, and the token no longer gives the admin
  rights a *local* admin group gave it (the "auth" field of a non-admin
  peer answers invalid_token).

    GH_BUILDDIR=build GH_SRCDIR=. python3 tests/sync/test_sync_sessions.py
"""
import io
import os
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

SUFFIX = slapd.SUFFIX


def udn(login):
    return "uid=%s,ou=people,%s" % (login, SUFFIX)


@unittest.skipUnless(slapd.available(), "slapd or ldap-utils not installed")
class UpstreamSessions(ghtest.TestCase):
    # the delete test's user is an administrator through a local group
    ADMIN_GROUP = {"test_upstream_delete_ends_sessions": "local-admins"}

    def setUp(self):
        buf = io.StringIO()
        gen_ldif.generate(buf, 20, 2, 0)
        self.ldap = slapd.Slapd(ldif=buf.getvalue())
        self.addCleanup(self.ldap.close)
        # a group of the upstream's that happens to carry the admin group's name
        self.ldap.add("dn: cn=gatehouse-admins,ou=groups,%s\nobjectClass: top\n"
                      "objectClass: groupOfNames\ncn: gatehouse-admins\nmember: %s\n"
                      % (SUFFIX, udn("u00001")))
        up = {"uri": self.ldap.uri, "bind_dn": slapd.ADMIN_DN,
              "bind_password_file": self.ldap.pwfile, "base_dn": SUFFIX,
              "user_filter": "(objectClass=posixAccount)",
              "group_filter": "(objectClass=groupOfNames)", "login_attr": "uid",
              "member_attr": "member", "mode": "syncrepl-persist", "interval": 1,
              "timeout": 5, "bind_timeout": 2}
        self.srv = self.start_server(world_access=ghtest.is_root(), config={
            "server": {"peer_failure_threshold": 10000,
                       "admin_group": self.ADMIN_GROUP.get(self._testMethodName,
                                                           "gatehouse-admins")},
            "upstream:corp": up})
        self.c = self.client(self.srv)
        deadline = time.time() + ghtest.scaled(60)
        while self.c.call("sync.status")["upstreams"][0]["runs"] < 1:
            if time.time() > deadline:
                self.fail("no sync run")
            time.sleep(0.05)

    def test_upstream_admin_group_grants_nothing(self):
        g = self.assertOk(self.c.call("group.get", name="gatehouse-admins"))["group"]
        self.assertEqual(g["origin"], "corp")
        self.assertIn("u00001", g["effective_users"])
        tok = self.c.login("u00001", gen_ldif.password(1))
        self.assertIs(self.assertOk(self.c.call("whoami", token=tok))["admin"], False)
        if ghtest.is_root():
            with ghtest.UidClient(self.srv.socket_path, ghtest.NOBODY) as nobody:
                self.assertError(nobody.call("user.list", auth=tok), "permission_denied")

    def test_upstream_delete_ends_sessions(self):
        self.assertOk(self.c.call("group.add", name="local-admins"))
        self.assertOk(self.c.call("group.add_member", group="local-admins", user="u00002"))
        tok = self.c.login("u00002", gen_ldif.password(2))
        self.assertIs(self.assertOk(self.c.call("whoami", token=tok))["admin"], True)
        nobody = None
        if ghtest.is_root():  # a peer that is admin only through the token
            nobody = ghtest.UidClient(self.srv.socket_path, ghtest.NOBODY)
            self.addCleanup(nobody.close)
            self.assertOk(nobody.call("user.list", auth=tok))
        self.assertEqual(len(self.assertOk(
            self.c.call("session.list", user="u00002"))["sessions"]), 1)
        self.ldap.delete(udn("u00002"))
        deadline = time.time() + ghtest.scaled(10)
        while self.c.call("user.get", name="u00002")["user"]["state"] != "disabled":
            if time.time() > deadline:
                self.fail("upstream delete not mirrored")
            time.sleep(0.02)
        self.assertError(self.c.call("whoami", token=tok), "invalid_token")
        if nobody is not None:
            self.assertError(nobody.call("user.list", auth=tok), "invalid_token")
        self.assertEqual(self.assertOk(
            self.c.call("session.list", user="u00002"))["sessions"], [])
        # other upstream users keep theirs
        t3 = self.c.login("u00003", gen_ldif.password(3))
        self.assertOk(self.c.call("whoami", token=t3))


if __name__ == "__main__":
    ghtest.main()
