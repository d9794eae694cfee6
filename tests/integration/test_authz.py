#!/usr/bin/env python3
"""Integration tests of the Authorization operations of docs/PROTOCOL.md
through the real gatehoused: roles, grants, bindings, check / check.batch
(by user and by token), explain, perms, who_can, the error codes, who may
call what, and that every kind of write is seen by the very next check.

The one thing to know: each test starts its own server and builds the same
small world through the socket (setUp), so tests do not depend on order."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ghtest  # noqa: E402

ROLES = [
    dict(name="reader", allow=[{"action": "read", "resource": "docs/**"}]),
    dict(name="deployer", allow=[{"action": "deploy", "resource": "service/*/prod"},
                                 {"action": "deploy", "resource": "service/billing/**"}]),
    dict(name="ops", description="on-call",
         allow=[{"action": "restart", "resource": "service/*"}],
         deny=[{"action": "deploy", "resource": "service/payroll/**"}],
         parents=["deployer", "reader"]),
    dict(name="admin", allow=[{"action": "*", "resource": "**"}]),
    dict(name="auditor", allow=[{"action": "audit:*", "resource": "**"}],
         deny=[{"action": "audit:delete", "resource": "**"}]),
    dict(name="editor", allow=[{"action": "edit", "resource": "project/*/docs/**"},
                               {"action": "read", "resource": "project/**"}]),
    dict(name="blocker", deny=[{"action": "*", "resource": "secret/**"}]),
]

# (user, action, resource, allowed)
TABLE = [
    ("alice", "restart", "service/web", True),
    ("alice", "restart", "service/web/x", False),
    ("alice", "deploy", "service/web/prod", True),
    ("alice", "deploy", "service/billing", True),
    ("alice", "deploy", "service/payroll/prod", False),
    ("alice", "read", "docs", True),
    ("alice", "write", "docs/x", False),
    ("bob", "deploy", "service/web/prod", True),
    ("bob", "deploy", "service/payroll/prod", True),
    ("bob", "restart", "service/web", False),
    ("carol", "read", "docs/x", True),
    ("carol", "edit", "project/42/docs/readme", True),
    ("carol", "edit", "project/43/docs/readme", False),
    ("carol", "read", "project/42", True),
    ("carol", "read", "project/7", False),
    ("dave", "read", "docs/x", False),
    ("frank", "read", "docs/x", False),
    ("gina", "launch", "rockets/1", True),
    ("gina", "read", "secret/plans", False),
    ("gina", "read", "secrets/x", True),
    ("hank", "audit:read", "logs/1", True),
    ("hank", "audit:delete", "logs/1", False),
    ("hank", "audit", "logs/1", False),
]
USERS = ["alice", "bob", "carol", "dave", "frank", "gina", "hank"]
PASSWORD = "correct horse battery"


class Authz(ghtest.TestCase):

    def setUp(self):
        self.srv = self.start_server(config={"password_min_length": 8})
        self.c = self.client(self.srv)
        ok = self.assertOk
        for r in ROLES:
            ok(self.c.call("role.add", **r))
        for u in USERS:
            ok(self.c.call("user.add", name=u, password=PASSWORD,
                           state="locked" if u == "dave" else "active"))
        for g in ("devs", "eng", "team-a"):
            ok(self.c.call("group.add", name=g))
        ok(self.c.call("group.add_member", group="devs", user="bob"))
        ok(self.c.call("group.add_member", group="eng", subgroup="team-a"))
        ok(self.c.call("group.add_member", group="team-a", user="carol"))
        self.b_alice = ok(self.c.call("grant", role="ops", user="alice"))["binding"]
        self.b_devs = ok(self.c.call("grant", role="deployer", group="devs"))["binding"]
        self.b_eng = ok(self.c.call("grant", role="reader", group="eng"))["binding"]
        ok(self.c.call("grant", role="editor", group="team-a", scope="project/42/**"))
        ok(self.c.call("grant", role="admin", user="dave"))
        ok(self.c.call("grant", role="admin", user="gina"))
        ok(self.c.call("grant", role="blocker", user="gina"))
        ok(self.c.call("grant", role="auditor", user="hank"))

    def check(self, user, action, resource, **kw):
        r = self.assertOk(self.c.call("check", user=user, action=action, resource=resource, **kw))
        self.assertIsInstance(r["allow"], bool)
        return r

    # ------------------------------------------------------------ decisions
    def test_table(self):
        for user, action, resource, want in TABLE:
            with self.subTest(user=user, action=action, resource=resource):
                self.assertIs(self.check(user, action, resource)["allow"], want)

    def test_check_batch_matches_check(self):
        for user in USERS:
            cases = [(a, r) for u, a, r, _ in TABLE if u == user] + [("read", "docs/x")]
            resp = self.assertOk(self.c.call(
                "check.batch", user=user,
                checks=[{"action": a, "resource": r} for a, r in cases]))
            want = [self.check(user, a, r)["allow"] for a, r in cases]
            self.assertEqual(resp["results"], want, user)
        self.assertEqual(self.assertOk(self.c.call("check.batch", user="alice",
                                                   checks=[]))["results"], [])

    def test_check_batch_limits(self):
        big = [{"action": "read", "resource": "docs/%d" % i} for i in range(1000)]
        r = self.assertOk(self.c.call("check.batch", user="alice", checks=big))
        self.assertEqual(r["results"], [True] * 1000)
        big.append({"action": "read", "resource": "docs/x"})
        self.assertError(self.c.call("check.batch", user="alice", checks=big), "too_large")
        r = self.assertError(self.c.call("check.batch", user="alice", checks=[
            {"action": "read", "resource": "docs/x"},
            {"action": "read", "resource": "a//b"}]), "invalid_argument")
        self.assertIn("checks[1]", r["error"]["message"])
        self.assertError(self.c.call("check.batch", user="alice", checks=[{"action": "read"}]),
                         "invalid_argument")
        self.assertError(self.c.call("check.batch", user="alice", checks="x"),
                         "invalid_argument")

    def test_check_by_token(self):
        tok = self.c.login("alice", PASSWORD)
        r = self.assertOk(self.c.call("check", token=tok, action="deploy",
                                      resource="service/web/prod"))
        self.assertIs(r["allow"], True)
        r = self.assertOk(self.c.call("check", token=tok, action="deploy",
                                      resource="service/payroll/prod"))
        self.assertIs(r["allow"], False)
        r = self.assertOk(self.c.call("check.batch", token=tok, checks=[
            {"action": "read", "resource": "docs"}, {"action": "write", "resource": "docs"}]))
        self.assertEqual(r["results"], [True, False])
        self.assertError(self.c.call("check", token="x" * 43, action="read", resource="docs"),
                         "invalid_token")
        self.assertOk(self.c.call("logout", token=tok))
        self.assertError(self.c.call("check", token=tok, action="read", resource="docs"),
                         "invalid_token")

    def test_check_errors(self):
        self.assertError(self.c.call("check", user="nobody", action="read", resource="docs"),
                         "not_found")
        self.assertError(self.c.call("check", action="read", resource="docs"),
                         "invalid_argument")
        self.assertError(self.c.call("check", user="alice", token="t", action="read",
                                     resource="docs"), "invalid_argument")
        for action, resource in [("*", "docs"), ("a:*", "docs"), ("", "docs"), ("re ad", "docs"),
                                 ("read", ""), ("read", "a//b"), ("read", "/a"),
                                 ("read", "a/*"), ("read", "a/**"), ("read", "x" * 513),
                                 (7, "docs"), ("read", None)]:
            with self.subTest(action=action, resource=resource):
                r = self.assertError(self.c.call("check", user="alice", action=action,
                                                 resource=resource), "invalid_argument")
                self.assertTrue(r["error"]["message"])
        self.assertError(self.c.call("check", user="alice", action="read", resource="docs",
                                     explain="yes"), "invalid_argument")

    # -------------------------------------------------------------- explain
    def test_explain(self):
        r = self.check("carol", "read", "docs/x", explain=True)
        self.assertIs(r["allow"], True)
        ex = r["explain"]
        self.assertEqual(ex["decision"], "allow")
        self.assertEqual(ex["reason"], "allow_rule")
        self.assertEqual([(s["type"], s.get("name")) for s in ex["path"]],
                         [("user", "carol"), ("group", "team-a"), ("group", "eng"),
                          ("binding", None), ("role", "reader"), ("rule", None)])
        self.assertEqual(ex["path"][3]["id"], self.b_eng)
        self.assertEqual(ex["rule"]["via"], {"group": "eng"})
        self.assertEqual(ex["rule"]["resource"], "docs/**")
        self.assertIn("group team-a -> group eng", ex["summary"])

        ex = self.check("alice", "deploy", "service/payroll/prod", explain=True)["explain"]
        self.assertEqual(ex["reason"], "deny_rule")
        self.assertEqual(ex["rule"]["role"], "ops")
        self.assertEqual(ex["overrides"]["role"], "deployer")
        self.assertEqual(ex["overrides"]["roles"], ["ops", "deployer"])

        ex = self.check("frank", "read", "docs/x", explain=True)["explain"]
        self.assertEqual(ex["reason"], "default_deny")
        self.assertNotIn("rule", ex)
        ex = self.check("dave", "read", "docs/x", explain=True)["explain"]
        self.assertEqual(ex["reason"], "account_locked")
        self.assertEqual(ex["state"], "locked")
        r = self.check("bob", "deploy", "service/web/prod", explain=False)
        self.assertNotIn("explain", r)

    # ---------------------------------------------------- perms and who_can
    def test_perms(self):
        r = self.assertOk(self.c.call("perms", user="alice"))
        self.assertEqual(r["user"], "alice")
        self.assertEqual(r["state"], "active")
        got = sorted((x["effect"], x["action"], x["resource"], x["role"]) for x in r["rules"])
        self.assertEqual(got, sorted([
            ("allow", "restart", "service/*", "ops"),
            ("deny", "deploy", "service/payroll/**", "ops"),
            ("allow", "deploy", "service/*/prod", "deployer"),
            ("allow", "deploy", "service/billing/**", "deployer"),
            ("allow", "read", "docs/**", "reader")]))
        for x in r["rules"]:
            self.assertEqual(x["binding"], self.b_alice)
            self.assertEqual(x["via"], {"user": "alice"})
            self.assertIsNone(x["scope"])
        carol = self.assertOk(self.c.call("perms", user="carol"))["rules"]
        scoped = [x for x in carol if x["role"] == "editor"]
        self.assertEqual(len(scoped), 2)
        self.assertTrue(all(x["scope"] == "project/42/**" and x["via"] == {"group": "team-a"}
                            for x in scoped))
        self.assertEqual(self.assertOk(self.c.call("perms", user="frank"))["rules"], [])
        self.assertEqual(self.assertOk(self.c.call("perms", user="dave"))["state"], "locked")
        self.assertError(self.c.call("perms", user="nobody"), "not_found")

    def test_who_can(self):
        pairs = sorted({(a, r) for _, a, r, _ in TABLE})
        for action, resource in pairs:
            with self.subTest(action=action, resource=resource):
                r = self.assertOk(self.c.call("who_can", action=action, resource=resource))
                names = [u["name"] for u in r["users"]]
                self.assertEqual(names, sorted(names))
                want = [u for u in USERS if self.check(u, action, resource)["allow"]]
                self.assertEqual(sorted(names), want)
        r = self.assertOk(self.c.call("who_can", action="read", resource="docs/x"))
        self.assertEqual([(g["name"], g["role"], g["binding"]) for g in r["groups"]],
                         [("eng", "reader", self.b_eng)])
        self.assertError(self.c.call("who_can", action="read", resource="a//b"),
                         "invalid_argument")

    # ---------------------------------------------------------------- roles
    def test_role_objects(self):
        r = self.assertOk(self.c.call("role.get", name="ops"))["role"]
        self.assertEqual(r["name"], "ops")
        self.assertEqual(r["description"], "on-call")
        self.assertEqual(r["allow"], [{"action": "restart", "resource": "service/*"}])
        self.assertEqual(r["deny"], [{"action": "deploy", "resource": "service/payroll/**"}])
        self.assertEqual(r["parents"], ["deployer", "reader"])
        self.assertIsInstance(r["created"], int)
        names = [x["name"] for x in self.assertOk(self.c.call("role.list"))["roles"]]
        self.assertEqual(sorted(names), sorted(x["name"] for x in ROLES))
        self.assertError(self.c.call("role.get", name="nope"), "not_found")
        self.assertError(self.c.call("role.add", name="ops"), "exists")
        self.assertError(self.c.call("role.add", name="x", parents=["nope"]), "not_found")
        self.assertError(self.c.call("role.add", name="x", parents=["x"]), "cycle")

    def test_bad_patterns(self):
        cases = [
            ({"allow": [{"action": "read", "resource": "a//b"}]}, "allow[0].resource",
             "empty segment"),
            ({"deny": [{"action": "read", "resource": "ok"},
                       {"action": "read", "resource": "a/**/b"}]}, "deny[1].resource", "last"),
            ({"allow": [{"action": "read", "resource": "a*b"}]}, "allow[0].resource", "*"),
            ({"allow": [{"action": "de ploy", "resource": "a"}]}, "allow[0].action",
             "character"),
            ({"allow": [{"action": "x*", "resource": "a"}]}, "allow[0].action", "*"),
            ({"allow": [{"action": "read"}]}, "allow[0]", "resource"),
            ({"allow": [{"action": "read", "resource": "a", "extra": 1}]}, "allow[0]", ""),
            ({"allow": "read a"}, "allow", "array"),
            ({"parents": ["bad name"]}, "parents[0]", ""),
        ]
        for fields, where, word in cases:
            with self.subTest(fields=fields):
                r = self.assertError(self.c.call("role.add", name="bad", **fields),
                                     "invalid_argument")
                self.assertIn(where, r["error"]["message"])
                self.assertIn(word, r["error"]["message"])
        self.assertError(self.c.call("role.get", name="bad"), "not_found")
        r = self.assertError(self.c.call("grant", role="reader", user="frank", scope="a/**/b"),
                             "invalid_argument")
        self.assertIn("scope", r["error"]["message"])

    def test_role_set_replaces_given_fields(self):
        self.assertIs(self.check("bob", "deploy", "service/web/prod")["allow"], True)
        r = self.assertOk(self.c.call("role.set", name="deployer", description="narrower"))
        self.assertEqual(r["role"]["description"], "narrower")
        self.assertEqual(len(r["role"]["allow"]), 2)  # kept
        r = self.assertOk(self.c.call("role.set", name="deployer", allow=[
            {"action": "deploy", "resource": "service/billing/**"}]))
        self.assertEqual(r["role"]["description"], "narrower")
        self.assertEqual(r["role"]["allow"], [{"action": "deploy",
                                               "resource": "service/billing/**"}])
        self.assertIs(self.check("bob", "deploy", "service/web/prod")["allow"], False)
        self.assertIs(self.check("bob", "deploy", "service/billing/x")["allow"], True)
        # a parent link added, then a loop refused
        self.assertOk(self.c.call("role.set", name="deployer", parents=["reader"]))
        self.assertIs(self.check("bob", "read", "docs/a")["allow"], True)
        self.assertError(self.c.call("role.set", name="reader", parents=["ops"]), "cycle")
        self.assertOk(self.c.call("role.set", name="deployer", allow=[], parents=[]))
        self.assertIs(self.check("bob", "deploy", "service/billing/x")["allow"], False)
        self.assertError(self.c.call("role.set", name="nope", description="x"), "not_found")

    def test_role_del(self):
        self.assertError(self.c.call("role.del", name="deployer"), "in_use")  # parent of ops
        self.assertError(self.c.call("role.del", name="auditor"), "in_use")   # bound
        self.assertIs(self.check("hank", "audit:read", "logs/1")["allow"], True)
        self.assertOk(self.c.call("role.del", name="auditor", force=True))
        self.assertIs(self.check("hank", "audit:read", "logs/1")["allow"], False)
        self.assertEqual(self.assertOk(self.c.call("bindings", user="hank"))["bindings"], [])
        self.assertOk(self.c.call("role.del", name="deployer", force=True))
        self.assertIs(self.check("alice", "deploy", "service/web/prod")["allow"], False)
        self.assertIs(self.check("bob", "deploy", "service/web/prod")["allow"], False)
        self.assertIs(self.check("alice", "restart", "service/web")["allow"], True)
        self.assertEqual(self.assertOk(self.c.call("role.get", name="ops"))["role"]["parents"],
                         ["reader"])
        self.assertError(self.c.call("role.del", name="deployer"), "not_found")

    # ------------------------------------------------------------- bindings
    def test_grant_revoke_bindings(self):
        self.assertError(self.c.call("grant", role="ops", user="alice"), "exists")
        self.assertError(self.c.call("grant", role="nope", user="alice"), "not_found")
        self.assertError(self.c.call("grant", role="ops", user="nobody"), "not_found")
        self.assertError(self.c.call("grant", role="ops", group="nogroup"), "not_found")
        self.assertError(self.c.call("grant", role="ops"), "invalid_argument")
        self.assertError(self.c.call("grant", role="ops", user="alice", group="devs"),
                         "invalid_argument")

        b = self.assertOk(self.c.call("grant", role="reader", user="frank",
                                      scope="docs/public/**"))["binding"]
        bl = self.assertOk(self.c.call("bindings", user="frank"))["bindings"]
        self.assertEqual(len(bl), 1)
        self.assertEqual(bl[0]["id"], b)
        self.assertEqual(bl[0]["role"], "reader")
        self.assertEqual(bl[0]["user"], "frank")
        self.assertEqual(bl[0]["scope"], "docs/public/**")
        self.assertIsInstance(bl[0]["created"], int)
        self.assertIs(self.check("frank", "read", "docs/public/a")["allow"], True)
        self.assertIs(self.check("frank", "read", "docs/private/a")["allow"], False)
        # same role, other scope: a different grant
        b2 = self.assertOk(self.c.call("grant", role="reader", user="frank"))["binding"]
        self.assertNotEqual(b, b2)
        self.assertIs(self.check("frank", "read", "docs/private/a")["allow"], True)

        byrole = self.assertOk(self.c.call("bindings", role="reader"))["bindings"]
        self.assertEqual(sorted(x["id"] for x in byrole), sorted([self.b_eng, b, b2]))
        grp = self.assertOk(self.c.call("bindings", group="eng"))["bindings"]
        self.assertEqual(grp, [x for x in byrole if x["id"] == self.b_eng])
        self.assertEqual(grp[0]["group"], "eng")
        self.assertIsNone(grp[0]["scope"])
        every = self.assertOk(self.c.call("bindings"))["bindings"]
        self.assertEqual(len(every), 10)
        self.assertError(self.c.call("bindings", user="frank", role="reader"),
                         "invalid_argument")
        self.assertError(self.c.call("bindings", user="nobody"), "not_found")
        self.assertError(self.c.call("bindings", role="nope"), "not_found")

        # revoke by fields (unscoped) then by id
        r = self.assertOk(self.c.call("revoke", role="reader", user="frank"))
        self.assertEqual(r["binding"], b2)
        self.assertIs(self.check("frank", "read", "docs/private/a")["allow"], False)
        self.assertIs(self.check("frank", "read", "docs/public/a")["allow"], True)
        self.assertOk(self.c.call("revoke", binding=b))
        self.assertIs(self.check("frank", "read", "docs/public/a")["allow"], False)
        self.assertError(self.c.call("revoke", binding=b), "not_found")
        self.assertError(self.c.call("revoke", role="reader", user="frank"), "not_found")
        self.assertError(self.c.call("revoke", binding="7"), "invalid_argument")

    # ------------------------------------------ every write seen at once
    def test_writes_seen_by_next_check(self):
        def allow(u, a="deploy", r="service/web/prod"):
            return self.check(u, a, r)["allow"]

        stats0 = self.assertOk(self.c.call("stats"))["authz_cache"]
        self.assertTrue(allow("bob"))
        self.assertTrue(allow("bob"))  # from the cache
        # membership
        self.assertOk(self.c.call("group.remove_member", group="devs", user="bob"))
        self.assertFalse(allow("bob"))
        self.assertOk(self.c.call("group.add_member", group="devs", user="bob"))
        self.assertTrue(allow("bob"))
        # nested membership
        self.assertTrue(allow("carol", "read", "docs/x"))
        self.assertOk(self.c.call("group.remove_member", group="eng", subgroup="team-a"))
        self.assertFalse(allow("carol", "read", "docs/x"))
        # user state
        self.assertOk(self.c.call("user.set", name="bob", state="locked"))
        self.assertFalse(allow("bob"))
        self.assertOk(self.c.call("user.set", name="bob", state="active"))
        self.assertTrue(allow("bob"))
        # binding removed and added
        self.assertOk(self.c.call("revoke", binding=self.b_devs))
        self.assertFalse(allow("bob"))
        self.assertOk(self.c.call("grant", role="deployer", user="bob"))
        self.assertTrue(allow("bob"))
        # role rules
        self.assertOk(self.c.call("role.set", name="deployer",
                                  deny=[{"action": "deploy", "resource": "service/web/**"}]))
        self.assertFalse(allow("bob"))
        # group and user deleted
        self.assertOk(self.c.call("group.del", name="devs"))
        self.assertOk(self.c.call("user.del", name="bob"))
        self.assertError(self.c.call("check", user="bob", action="deploy",
                                     resource="service/web/prod"), "not_found")
        stats1 = self.assertOk(self.c.call("stats"))["authz_cache"]
        self.assertGreater(stats1["flushes"], stats0["flushes"])
        self.assertGreater(stats1["hits"], stats0["hits"])

    def test_names_follow_renames_and_deletes(self):
        # a check naming its user resolves the name through the loop's name
        # map: a rename, a delete and a new user of an old name must be seen
        def check(u):
            return self.c.call("check", user=u, action="deploy", resource="service/web/prod")

        for _ in range(3):  # resolved once, then from the map
            self.assertTrue(self.assertOk(check("bob"))["allow"])
        self.assertOk(self.c.call("user.set", name="bob", rename="rob"))
        self.assertError(check("bob"), "not_found")
        self.assertTrue(self.assertOk(check("rob"))["allow"])
        self.assertOk(self.c.call("user.add", name="bob", password=PASSWORD))
        self.assertFalse(self.assertOk(check("bob"))["allow"])  # a new user, no bindings
        self.assertOk(self.c.call("user.del", name="rob"))
        self.assertError(check("rob"), "not_found")
        self.assertOk(self.c.call("user.del", name="bob"))
        self.assertError(check("bob"), "not_found")
        # a name added after a miss is found (misses are not kept)
        self.assertError(check("newbie"), "not_found")
        self.assertOk(self.c.call("user.add", name="newbie", password=PASSWORD))
        self.assertOk(self.c.call("group.add_member", group="devs", user="newbie"))
        self.assertTrue(self.assertOk(check("newbie"))["allow"])

    def test_survives_restart(self):
        self.srv.restart()
        c = self.client(self.srv)
        for user, action, resource, want in TABLE:
            r = self.assertOk(c.call("check", user=user, action=action, resource=resource))
            self.assertIs(r["allow"], want, (user, action, resource))

    # ------------------------------------------------------- who may call
    def test_non_admin_peer(self):
        if not ghtest.is_root():
            self.skipTest("needs root to connect as another uid")
        srv = self.start_server(world_access=True)
        admin = self.client(srv)
        self.assertOk(admin.call("role.add", name="reader",
                                 allow=[{"action": "read", "resource": "docs/**"}]))
        self.assertOk(admin.call("user.add", name="alice", password=PASSWORD))
        self.assertOk(admin.call("grant", role="reader", user="alice"))
        c = self.uid_client(srv, ghtest.NOBODY)
        self.assertError(c.call("check", user="alice", action="read", resource="docs/a"),
                         "permission_denied")
        tok = c.login("alice", PASSWORD)
        r = self.assertOk(c.call("check", token=tok, action="read", resource="docs/a"))
        self.assertIs(r["allow"], True)
        r = self.assertOk(c.call("check", token=tok, action="read", resource="docs/a",
                                 explain=True))
        self.assertEqual(r["explain"]["decision"], "allow")
        r = self.assertOk(c.call("check.batch", token=tok,
                                 checks=[{"action": "read", "resource": "docs/a"}]))
        self.assertEqual(r["results"], [True])
        for op, fields in [("role.add", {"name": "x"}), ("role.get", {"name": "reader"}),
                           ("role.list", {}), ("role.set", {"name": "reader"}),
                           ("role.del", {"name": "reader"}),
                           ("grant", {"role": "reader", "user": "alice"}),
                           ("revoke", {"binding": 1}), ("bindings", {}),
                           ("perms", {"user": "alice"}),
                           ("who_can", {"action": "read", "resource": "docs/a"})]:
            with self.subTest(op=op):
                self.assertError(c.call(op, **fields), "permission_denied")
        self.assertOk(admin.call("role.get", name="reader"))


if __name__ == "__main__":
    ghtest.main()
