#!/usr/bin/env python3
"""Integration tests of who may call what on the UNIX socket (SO_PEERCRED):
non-admin uids may only ping/auth/whoami/logout/check; root, the server's own
uid and members of admin_unix_group are admin; an "auth" token of a member of
gatehouse-admins makes any request admin. Needs root (to connect as other
uids through setpriv); skipped otherwise."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ghtest  # noqa: E402

OTHER = 65533   # a second unprivileged uid (no passwd entry needed)

# Admin operations of the core protocol, with valid arguments.
ADMIN_REQUESTS = [
    {"op": "user.add", "name": "intruder"},
    {"op": "user.get", "name": "alice"},
    {"op": "user.list"},
    {"op": "user.set", "name": "alice", "state": "locked"},
    {"op": "user.passwd", "name": "alice", "password": "hijacked-password"},
    {"op": "user.del", "name": "alice"},
    {"op": "group.add", "name": "intruders"},
    {"op": "group.get", "name": "staff"},
    {"op": "group.list"},
    {"op": "group.add_member", "group": "staff", "user": "alice"},
    {"op": "group.remove_member", "group": "gatehouse-admins", "user": "boss"},
    {"op": "group.del", "name": "staff"},
    {"op": "stats"},
    {"op": "audit"},
    {"op": "dump", "kind": "users"},
    {"op": "import", "records": [{"type": "user", "name": "intruder2"}]},
]


class PeerCred(ghtest.TestCase):

    def setUp(self):
        if not ghtest.is_root():
            self.skipTest("needs root to connect as other uids (setpriv)")

    def setup_server(self, **kw):
        srv = self.start_server(world_access=True, start=False, **kw)
        ghtest.init_admin(srv, "boss", "boss-password")
        srv.start()
        root = self.client(srv)
        self.assertOk(root.call("user.add", name="alice", password="alice-password"))
        self.assertOk(root.call("group.add", name="staff"))
        return srv, root

    def assert_unchanged(self, root):
        self.assertError(root.call("user.get", name="intruder"), "not_found")
        self.assertError(root.call("user.get", name="intruder2"), "not_found")
        self.assertError(root.call("group.get", name="intruders"), "not_found")
        u = self.assertOk(root.call("user.get", name="alice"))["user"]
        self.assertEqual((u["state"], u["groups"]), ("active", []))
        self.assertOk(root.call("auth", user="alice", password="alice-password"))
        g = self.assertOk(root.call("group.get", name="gatehouse-admins"))["group"]
        self.assertIn("boss", g["members"]["users"])
        self.assertOk(root.call("group.get", name="staff"))

    def test_nonadmin_may_ping_auth_whoami_logout(self):
        srv, root = self.setup_server()
        c = self.uid_client(srv, ghtest.NOBODY)
        r = self.assertOk(c.call("ping"))
        self.assertEqual(r["protocol"], 1)
        tok = c.login("alice", "alice-password")
        w = self.assertOk(c.call("whoami", token=tok))
        self.assertEqual((w["user"], w["admin"]), ("alice", False))
        self.assertError(c.call("auth", user="alice", password="wrong-password"),
                         "invalid_credentials")
        self.assertOk(c.call("logout", token=tok))
        self.assertError(c.call("whoami", token=tok), "invalid_token")

    def test_nonadmin_checks_only_its_own_token(self):
        # issue 10: a peer that is neither service nor admin asks about the
        # user whose token it holds, never about a named user (no
        # enumeration: the same refusal whether the user exists or not)
        srv, root = self.setup_server()
        c = self.uid_client(srv, ghtest.NOBODY)
        for name in ("alice", "ghost"):
            r = self.assertError(c.call("check", user=name, action="deploy",
                                        resource="service/billing"), "permission_denied")
            self.assertNotIn("not_found", str(r))
            self.assertError(c.call("check.batch", user=name, checks=[
                {"action": "read", "resource": "a"}]), "permission_denied")
            self.assertError(c.call("check", user=name, action="read", resource="a",
                                    explain=True), "permission_denied")
        tok = c.login("alice", "alice-password")
        r = self.assertOk(c.call("check", token=tok, action="deploy",
                                 resource="service/billing"))
        self.assertIs(r["allow"], False)
        r = self.assertOk(c.call("check.batch", token=tok, checks=[
            {"action": "read", "resource": "a"}, {"action": "write", "resource": "b"}]))
        self.assertEqual(r["results"], [False, False])
        r = self.assertOk(c.call("perms", token=tok))
        self.assertEqual(r["user"], "alice")

    def test_nonadmin_refused_admin_ops(self):
        srv, root = self.setup_server()
        c = self.uid_client(srv, ghtest.NOBODY)
        for req in ADMIN_REQUESTS:
            with self.subTest(op=req["op"]):
                r = self.assertError(c.request(req), "permission_denied")
                self.assertNotIn("users", r)
        self.assertOk(c.call("ping"))             # connection still usable
        self.assert_unchanged(root)
        # the same from a uid/gid pair unknown to the system
        c2 = self.uid_client(srv, OTHER)
        self.assertError(c2.call("user.list"), "permission_denied")
        self.assertError(c2.call("stats"), "permission_denied")
        self.assertError(c2.call("user.add", name="intruder"), "permission_denied")
        self.assert_unchanged(root)

    def test_root_is_admin(self):
        srv, root = self.setup_server()
        self.assertOk(root.call("stats"))
        self.assertOk(root.call("user.list"))
        self.assertOk(root.call("audit"))
        self.assertOk(root.call("user.add", name="byroot"))

    def test_admin_token_as_nobody(self):
        srv, root = self.setup_server()
        c = self.uid_client(srv, ghtest.NOBODY)
        tok = c.login("boss", "boss-password")
        self.assertIs(self.assertOk(c.call("whoami", token=tok))["admin"], True)
        admin = self.uid_client(srv, ghtest.NOBODY, auth=tok)
        u = self.assertOk(admin.call("user.add", name="carol"))["user"]
        self.assertEqual(u["name"], "carol")
        names = [x["name"] for x in self.assertOk(admin.call("user.list"))["users"]]
        self.assertEqual(names, ["alice", "boss", "carol"])
        self.assertOk(admin.call("stats"))
        self.assertOk(admin.call("group.add_member", group="staff", user="carol"))
        self.assertOk(root.call("user.get", name="carol"))
        # per request: the same connection without the token is not admin
        self.assertError(c.call("user.list"), "permission_denied")
        admin.auth = None
        self.assertError(admin.call("user.list"), "permission_denied")

    def test_nonadmin_token_gives_no_rights(self):
        srv, root = self.setup_server()
        c = self.uid_client(srv, ghtest.NOBODY)
        tok = c.login("alice", "alice-password")
        self.assertError(c.call("user.add", name="intruder", auth=tok), "permission_denied")
        self.assertError(c.call("stats", auth=tok), "permission_denied")
        # an unknown token is refused too
        self.assertError(c.call("user.add", name="intruder", auth="Z" * 43),
                         ("invalid_token", "permission_denied"))
        # a revoked admin token no longer works
        btok = c.login("boss", "boss-password")
        self.assertOk(c.call("user.list", auth=btok))
        self.assertOk(c.call("logout", token=btok))
        self.assertError(c.call("user.add", name="intruder", auth=btok),
                         ("invalid_token", "permission_denied"))
        self.assert_unchanged(root)

    def test_admin_membership_checked_per_request(self):
        srv, root = self.setup_server()
        c = self.uid_client(srv, ghtest.NOBODY)
        tok = c.login("alice", "alice-password")
        self.assertError(c.call("user.list", auth=tok), "permission_denied")
        self.assertOk(root.call("group.add_member", group="gatehouse-admins", user="alice"))
        self.assertOk(c.call("user.list", auth=tok))
        self.assertIs(self.assertOk(c.call("whoami", token=tok))["admin"], True)
        self.assertOk(root.call("group.remove_member", group="gatehouse-admins", user="alice"))
        self.assertError(c.call("user.list", auth=tok), "permission_denied")
        self.assertIs(self.assertOk(c.call("whoami", token=tok))["admin"], False)

    def test_admin_unix_group_primary(self):
        srv, root = self.setup_server(config={"admin_unix_group": "nogroup"})   # gid 65534
        primary = self.uid_client(srv, OTHER, gid=65534)
        self.assertOk(primary.call("user.list"))
        self.assertOk(primary.call("stats"))
        plain = self.uid_client(srv, OTHER, gid=OTHER)
        self.assertError(plain.call("user.list"), "permission_denied")

    def test_admin_unix_group_supplementary(self):
        # the peer process holds the group as a supplementary group (its
        # uid has no account: only the process's own credentials say so)
        srv, root = self.setup_server(config={"admin_unix_group": "nogroup"})
        supplementary = self.uid_client(srv, OTHER, gid=OTHER, groups=[65534])
        self.assertOk(supplementary.call("stats"))
        self.assertOk(supplementary.call("user.list"))

    def test_server_uid_is_admin(self):
        srv = self.start_server(world_access=True, run_as=(OTHER, OTHER))
        same = self.uid_client(srv, OTHER)
        self.assertOk(same.call("user.add", name="byowner"))
        self.assertOk(same.call("stats"))
        other = self.uid_client(srv, ghtest.NOBODY)
        self.assertError(other.call("user.list"), "permission_denied")
        root = self.client(srv)
        self.assertOk(root.call("user.get", name="byowner"))


if __name__ == "__main__":
    ghtest.main()
