#!/usr/bin/env python3
"""Integration tests of the core operations of docs/PROTOCOL.md: ping, users,
groups (nesting), id echo, pipelining, concurrent clients, stats, audit,
dump/import, and the documented error codes."""

import json
import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ghtest  # noqa: E402

NAME_RE_BAD = ["", "a b", "-lead", ".lead", "a/b", "a,b", "a=b", "a*b", "a(b", "a)b",
               "a\\b", "a+b", "a<b", "a>b", "a;b", 'a"b', "a#b", "a\tb", "a\nb", "x" * 65]


def all_pages(c, op, key, **fields):
    """Reads every page of a list/dump op; returns (items, pages)."""
    items, pages, after = [], 0, None
    while True:
        req = dict(fields)
        if after is not None:
            req["after"] = after
        r = c.call(op, **req)
        if r.get("ok") is not True:
            raise AssertionError("%s %r failed: %r" % (op, req, r))
        items.extend(r[key])
        pages += 1
        after = r.get("next")
        if after is None:
            return items, pages
        if pages > 10000:
            raise AssertionError("%s never ends" % op)


class Protocol(ghtest.TestCase):

    def setUp(self):
        self.srv = self.start_server(config={"uid_min": 20000, "password_min_length": 8})
        self.c = self.client(self.srv)

    # ---------------------------------------------------------------- ping
    def test_ping(self):
        r = self.assertOk(self.c.call("ping"))
        self.assertEqual(r["protocol"], 1)
        self.assertIsInstance(r["version"], str)
        want = ghtest.project_version()
        if want:
            self.assertEqual(r["version"], want)
        self.assertNotIn("error", r)

    # --------------------------------------------------------------- users
    def test_user_add_get(self):
        before = int(time.time())
        r = self.assertOk(self.c.call("user.add", name="alice", password="correct horse",
                                      uid=30001, display_name="Alice A.",
                                      mail="alice@example.com"))
        u = r["user"]
        after = int(time.time())
        self.assertEqual(u["name"], "alice")
        self.assertEqual(u["uid"], 30001)
        self.assertEqual(u["display_name"], "Alice A.")
        self.assertEqual(u["mail"], "alice@example.com")
        self.assertEqual(u["state"], "active")
        self.assertEqual(u["origin"], "local")
        self.assertIs(u["has_password"], True)
        self.assertIsInstance(u["id"], int)
        self.assertTrue(before - 1 <= u["created"] <= after + 1, u)
        self.assertTrue(before - 1 <= u["modified"] <= after + 1, u)
        for secret in ("password", "verifier"):
            self.assertNotIn(secret, u)
        self.assertNotIn("correct horse", json.dumps(r))

        g = self.assertOk(self.c.call("user.get", name="alice"))["user"]
        for k in ("id", "name", "uid", "display_name", "mail", "state", "origin",
                  "has_password", "created"):
            self.assertEqual(g[k], u[k], k)
        self.assertEqual(g["groups"], [])
        self.assertNotIn("verifier", g)
        self.assertNotIn("password", g)

        # a user without password
        n = self.assertOk(self.c.call("user.add", name="nopw"))["user"]
        self.assertIs(n["has_password"], False)
        self.assertNotEqual(n["id"], u["id"])

    def test_user_add_auto_uid(self):
        a = self.assertOk(self.c.call("user.add", name="auto1"))["user"]
        b = self.assertOk(self.c.call("user.add", name="auto2"))["user"]
        self.assertEqual(a["uid"], 20000)   # uid_min
        self.assertEqual(b["uid"], 20001)
        self.assertOk(self.c.call("user.add", name="fixed", uid=20002))
        c = self.assertOk(self.c.call("user.add", name="auto3"))["user"]
        self.assertGreaterEqual(c["uid"], 20003)
        uids = [x["uid"] for x in self.assertOk(self.c.call("user.list"))["users"]]
        self.assertEqual(len(uids), len(set(uids)), uids)

    def test_user_add_errors(self):
        self.assertOk(self.c.call("user.add", name="alice", uid=30001))
        self.assertError(self.c.call("user.add", name="alice"), "exists")
        self.assertError(self.c.call("user.add", name="other", uid=30001), "exists")
        self.assertError(self.c.call("user.add"), "invalid_argument")
        self.assertError(self.c.call("user.add", name=42), "invalid_argument")
        self.assertError(self.c.call("user.add", name="pw", password="short"),
                         "invalid_argument")
        self.assertError(self.c.call("user.add", name="pw2", password=12345678),
                         "invalid_argument")
        self.assertError(self.c.call("user.add", name="st", state="frozen"),
                         "invalid_argument")
        self.assertError(self.c.call("user.add", name="neg", uid=-5), "invalid_argument")
        self.assertError(self.c.call("user.add", name="big", uid=2 ** 32), "invalid_argument")
        self.assertError(self.c.call("user.add", name="struid", uid="30009"),
                         "invalid_argument")
        self.assertError(self.c.call("user.get", name="nobody-here"), "not_found")
        for op in ("pw", "pw2", "st", "neg", "big", "struid"):
            self.assertError(self.c.call("user.get", name=op), "not_found")

    def test_user_names(self):
        for bad in NAME_RE_BAD:
            with self.subTest(name=bad):
                self.assertError(self.c.call("user.add", name=bad), "invalid_argument")
        for good in ["x" * 64, "jos\u00e9", "a.b-c_d", "a@b", "Z9"]:
            with self.subTest(name=good):
                r = self.assertOk(self.c.call("user.add", name=good))
                self.assertEqual(r["user"]["name"], good)
                self.assertEqual(self.assertOk(self.c.call("user.get", name=good))
                                 ["user"]["name"], good)
        # 64 bytes of UTF-8 ok, 65 bytes (33 two-byte characters - 1) not
        self.assertOk(self.c.call("user.add", name="\u00e9" * 32))
        self.assertError(self.c.call("user.add", name="\u00e9" * 32 + "x"), "invalid_argument")

    def test_user_list_paging(self):
        names = ["u%03d" % i for i in range(25)]
        reqs = [{"op": "user.add", "name": n} for n in reversed(names)]
        reqs += [{"op": "user.add", "name": n} for n in ("a-first", "v-last", "u")]
        for r in self.c.pipeline(reqs):
            self.assertOk(r)

        r = self.assertOk(self.c.call("user.list", prefix="u0", limit=10))
        self.assertEqual([u["name"] for u in r["users"]], names[:10])
        self.assertEqual(r["next"], "u009")
        for u in r["users"]:
            self.assertNotIn("verifier", u)
        # after is exclusive
        r2 = self.assertOk(self.c.call("user.list", prefix="u0", limit=10, after=r["next"]))
        self.assertEqual([u["name"] for u in r2["users"]], names[10:20])
        r3 = self.assertOk(self.c.call("user.list", prefix="u0", limit=10, after=r2["next"]))
        self.assertEqual([u["name"] for u in r3["users"]], names[20:])
        self.assertIsNone(r3["next"])
        self.assertIn("next", r3)

        got, pages = all_pages(self.c, "user.list", "users", prefix="u0", limit=7)
        self.assertEqual([u["name"] for u in got], names)
        self.assertEqual(pages, 4)

        everything = self.assertOk(self.c.call("user.list"))
        for u in everything["users"]:
            self.assertNotIn("groups", u)   # user.get only
        self.assertEqual([u["name"] for u in everything["users"]],
                         sorted(names + ["a-first", "v-last", "u"]))
        self.assertIsNone(everything["next"])

        r = self.assertOk(self.c.call("user.list", prefix="zzz"))
        self.assertEqual(r["users"], [])
        self.assertIsNone(r["next"])
        r = self.assertOk(self.c.call("user.list", after="u024"))
        self.assertEqual([u["name"] for u in r["users"]], ["v-last"])

        self.assertError(self.c.call("user.list", limit="10"), "invalid_argument")
        self.assertError(self.c.call("user.list", limit=-1), "invalid_argument")
        self.assertError(self.c.call("user.list", prefix=5), "invalid_argument")

    def test_user_list_limits(self):
        res = self.assertOk(self.c.call("import", records=[
            {"type": "user", "name": "m%04d" % i} for i in range(1000)]))["results"]
        self.assertEqual([x.get("ok") for x in res], [True] * 1000)
        self.assertOk(self.c.call("user.add", name="m1000"))
        r = self.assertOk(self.c.call("user.list"))
        self.assertEqual(len(r["users"]), 100)      # default limit
        self.assertEqual(r["next"], "m0099")
        r = self.assertOk(self.c.call("user.list", limit=1000))
        self.assertEqual(len(r["users"]), 1000)
        self.assertEqual(r["next"], "m0999")
        r = self.assertOk(self.c.call("user.list", after="m0999", limit=1000))
        self.assertEqual([u["name"] for u in r["users"]], ["m1000"])
        self.assertIsNone(r["next"])
        # over the maximum: refused, or clamped to 1000
        r = self.c.call("user.list", limit=1001)
        if r.get("ok"):
            self.assertLessEqual(len(r["users"]), 1000)
        else:
            self.assertError(r, "invalid_argument")

    def test_user_set(self):
        u = self.assertOk(self.c.call("user.add", name="alice", uid=30001,
                                      password="password-one"))["user"]
        self.assertOk(self.c.call("user.add", name="bob", uid=30002))

        r = self.assertOk(self.c.call("user.set", name="alice", mail="a@new.example",
                                      display_name="Alice New"))["user"]
        self.assertEqual((r["mail"], r["display_name"], r["uid"]),
                         ("a@new.example", "Alice New", 30001))
        self.assertGreaterEqual(r["modified"], u["created"])
        g = self.assertOk(self.c.call("user.get", name="alice"))["user"]
        self.assertEqual((g["mail"], g["display_name"]), ("a@new.example", "Alice New"))

        for st in ("locked", "disabled", "active"):
            r = self.assertOk(self.c.call("user.set", name="alice", state=st))["user"]
            self.assertEqual(r["state"], st)
            self.assertEqual(self.assertOk(self.c.call("user.get", name="alice"))
                             ["user"]["state"], st)
        self.assertError(self.c.call("user.set", name="alice", state="frozen"),
                         "invalid_argument")
        # "" clears mail / display_name; fields not given are kept
        r = self.assertOk(self.c.call("user.set", name="alice", mail=""))["user"]
        self.assertEqual((r["mail"], r["display_name"]), ("", "Alice New"))
        self.assertOk(self.c.call("user.set", name="alice", mail="a@new.example"))

        self.assertError(self.c.call("user.set", name="alice", rename="bob"), "exists")
        self.assertError(self.c.call("user.set", name="alice", uid=30002), "exists")
        self.assertError(self.c.call("user.set", name="alice", rename="bad name"),
                         "invalid_argument")
        self.assertError(self.c.call("user.set", name="ghost", mail="x@y"), "not_found")

        r = self.assertOk(self.c.call("user.set", name="alice", rename="alicia"))["user"]
        self.assertEqual(r["name"], "alicia")
        self.assertEqual(r["id"], u["id"])
        self.assertEqual(r["uid"], 30001)
        self.assertError(self.c.call("user.get", name="alice"), "not_found")
        g = self.assertOk(self.c.call("user.get", name="alicia"))["user"]
        self.assertEqual((g["id"], g["mail"]), (u["id"], "a@new.example"))
        # the password moves with the rename
        self.assertOk(self.c.call("auth", user="alicia", password="password-one"))
        self.assertError(self.c.call("auth", user="alice", password="password-one"),
                         "invalid_credentials")
        # the old name is free again
        self.assertOk(self.c.call("user.add", name="alice"))

        r = self.assertOk(self.c.call("user.set", name="alicia", uid=30010))["user"]
        self.assertEqual(r["uid"], 30010)

    def test_user_passwd(self):
        self.assertOk(self.c.call("user.add", name="alice", password="password-one"))
        self.assertOk(self.c.call("auth", user="alice", password="password-one"))
        self.assertOk(self.c.call("user.passwd", name="alice", password="password-two"))
        self.assertError(self.c.call("auth", user="alice", password="password-one"),
                         "invalid_credentials")
        self.assertOk(self.c.call("auth", user="alice", password="password-two"))
        self.assertError(self.c.call("user.passwd", name="alice", password="short"),
                         "invalid_argument")
        self.assertError(self.c.call("user.passwd", name="ghost", password="long-enough-pw"),
                         "not_found")
        self.assertError(self.c.call("user.passwd", name="alice"), "invalid_argument")
        # setting a password on a user created without one
        self.assertOk(self.c.call("user.add", name="bob"))
        self.assertError(self.c.call("auth", user="bob", password="whatever-pw"),
                         "invalid_credentials")
        self.assertOk(self.c.call("user.passwd", name="bob", password="bob-password"))
        self.assertIs(self.assertOk(self.c.call("user.get", name="bob"))["user"]
                      ["has_password"], True)
        self.assertOk(self.c.call("auth", user="bob", password="bob-password"))

    def test_user_del(self):
        self.assertOk(self.c.call("user.add", name="alice", password="password-one",
                                  uid=30001))
        self.assertOk(self.c.call("group.add", name="staff"))
        self.assertOk(self.c.call("group.add_member", group="staff", user="alice"))
        tok = self.c.login("alice", "password-one")
        self.assertOk(self.c.call("whoami", token=tok))

        self.assertOk(self.c.call("user.del", name="alice"))
        self.assertError(self.c.call("user.get", name="alice"), "not_found")
        self.assertError(self.c.call("user.del", name="alice"), "not_found")
        self.assertError(self.c.call("whoami", token=tok), "invalid_token")
        g = self.assertOk(self.c.call("group.get", name="staff"))["group"]
        self.assertEqual(g["members"]["users"], [])
        self.assertEqual(g["effective_users"], [])
        self.assertError(self.c.call("auth", user="alice", password="password-one"),
                         "invalid_credentials")
        # the name and uid can be reused, and the new user has no groups
        u = self.assertOk(self.c.call("user.add", name="alice", uid=30001))["user"]
        self.assertEqual(self.assertOk(self.c.call("user.get", name="alice"))["user"]
                         ["groups"], [])
        self.assertIs(u["has_password"], False)

    # -------------------------------------------------------------- groups
    def test_group_add_get_list_del(self):
        g = self.assertOk(self.c.call("group.add", name="staff", gid=40001,
                                      description="All staff"))["group"]
        self.assertEqual((g["name"], g["gid"], g["description"], g["origin"]),
                         ("staff", 40001, "All staff", "local"))
        self.assertIsInstance(g["id"], int)
        self.assertIsInstance(g["created"], int)
        self.assertIsInstance(g["modified"], int)
        a = self.assertOk(self.c.call("group.add", name="auto"))["group"]
        self.assertIsInstance(a["gid"], int)
        self.assertNotEqual(a["gid"], 40001)

        self.assertError(self.c.call("group.add", name="staff"), "exists")
        self.assertError(self.c.call("group.add", name="other", gid=40001), "exists")
        self.assertError(self.c.call("group.add", name="bad name"), "invalid_argument")
        self.assertError(self.c.call("group.add"), "invalid_argument")
        self.assertError(self.c.call("group.get", name="nope"), "not_found")

        got = self.assertOk(self.c.call("group.get", name="staff"))["group"]
        self.assertEqual((got["name"], got["gid"], got["description"]),
                         ("staff", 40001, "All staff"))
        self.assertEqual(got["members"], {"users": [], "groups": []})
        self.assertEqual(got["effective_users"], [])

        for i in range(12):
            self.assertOk(self.c.call("group.add", name="team%02d" % i))
        r = self.assertOk(self.c.call("group.list", prefix="team", limit=5))
        self.assertEqual([x["name"] for x in r["groups"]], ["team%02d" % i for i in range(5)])
        self.assertEqual(r["next"], "team04")
        got, pages = all_pages(self.c, "group.list", "groups", prefix="team", limit=5)
        self.assertEqual([x["name"] for x in got], ["team%02d" % i for i in range(12)])
        self.assertEqual(pages, 3)
        r = self.assertOk(self.c.call("group.list"))
        self.assertEqual([x["name"] for x in r["groups"]],
                         sorted(["staff", "auto"] + ["team%02d" % i for i in range(12)]))
        self.assertIsNone(r["next"])

        self.assertOk(self.c.call("group.del", name="staff"))
        self.assertError(self.c.call("group.get", name="staff"), "not_found")
        self.assertError(self.c.call("group.del", name="staff"), "not_found")
        self.assertOk(self.c.call("group.add", name="staff", gid=40001))

    def test_group_members_nested(self):
        for u in ("alice", "bob", "carol"):
            self.assertOk(self.c.call("user.add", name=u))
        for g in ("eng", "backend", "staff", "other"):
            self.assertOk(self.c.call("group.add", name=g))
        # staff > eng > backend; alice in backend, bob in eng, carol in staff
        self.assertOk(self.c.call("group.add_member", group="backend", user="alice"))
        self.assertOk(self.c.call("group.add_member", group="eng", user="bob"))
        self.assertOk(self.c.call("group.add_member", group="eng", subgroup="backend"))
        self.assertOk(self.c.call("group.add_member", group="staff", subgroup="eng"))
        self.assertOk(self.c.call("group.add_member", group="staff", user="carol"))

        staff = self.assertOk(self.c.call("group.get", name="staff"))["group"]
        self.assertEqual(sorted(staff["members"]["users"]), ["carol"])
        self.assertEqual(sorted(staff["members"]["groups"]), ["eng"])
        self.assertEqual(sorted(staff["effective_users"]), ["alice", "bob", "carol"])
        eng = self.assertOk(self.c.call("group.get", name="eng"))["group"]
        self.assertEqual(sorted(eng["effective_users"]), ["alice", "bob"])
        alice = self.assertOk(self.c.call("user.get", name="alice"))["user"]
        self.assertEqual(sorted(alice["groups"]), ["backend", "eng", "staff"])
        self.assertEqual(alice["direct_groups"], ["backend"])
        self.assertEqual(sorted(self.assertOk(self.c.call("user.get", name="bob"))
                                ["user"]["groups"]), ["eng", "staff"])
        self.assertEqual(self.assertOk(self.c.call("user.get", name="carol"))
                         ["user"]["groups"], ["staff"])

        # errors
        self.assertError(self.c.call("group.add_member", group="eng", user="bob"), "exists")
        self.assertError(self.c.call("group.add_member", group="eng", subgroup="backend"),
                         "exists")
        self.assertError(self.c.call("group.add_member", group="backend", subgroup="staff"),
                         "cycle")
        self.assertError(self.c.call("group.add_member", group="eng", subgroup="eng"), "cycle")
        self.assertError(self.c.call("group.add_member", group="eng", user="ghost"),
                         "not_found")
        self.assertError(self.c.call("group.add_member", group="ghost", user="bob"),
                         "not_found")
        self.assertError(self.c.call("group.add_member", group="eng", subgroup="ghost"),
                         "not_found")
        self.assertError(self.c.call("group.add_member", group="eng"), "invalid_argument")
        self.assertError(self.c.call("group.remove_member", group="staff", user="alice"),
                         "not_found")   # only an indirect member
        self.assertError(self.c.call("group.remove_member", group="other", subgroup="eng"),
                         "not_found")
        # alice is still in the same groups after the refused cycle
        self.assertEqual(sorted(self.assertOk(self.c.call("user.get", name="alice"))
                                ["user"]["groups"]), ["backend", "eng", "staff"])

        # a user reachable twice is listed once
        self.assertOk(self.c.call("group.add_member", group="staff", user="alice"))
        staff = self.assertOk(self.c.call("group.get", name="staff"))["group"]
        self.assertEqual(sorted(staff["effective_users"]), ["alice", "bob", "carol"])
        self.assertEqual(sorted(self.assertOk(self.c.call("user.get", name="alice"))
                                ["user"]["groups"]), ["backend", "eng", "staff"])
        self.assertOk(self.c.call("group.remove_member", group="staff", user="alice"))

        # removing the eng -> backend link drops alice from eng and staff
        self.assertOk(self.c.call("group.remove_member", group="eng", subgroup="backend"))
        self.assertEqual(self.assertOk(self.c.call("user.get", name="alice"))
                         ["user"]["groups"], ["backend"])
        staff = self.assertOk(self.c.call("group.get", name="staff"))["group"]
        self.assertEqual(sorted(staff["effective_users"]), ["bob", "carol"])
        # now backend may contain staff (no cycle any more)
        self.assertOk(self.c.call("group.add_member", group="backend", subgroup="staff"))
        self.assertEqual(sorted(self.assertOk(self.c.call("user.get", name="carol"))
                                ["user"]["groups"]), ["backend", "staff"])

        # deleting a group removes it from its members' groups
        self.assertOk(self.c.call("group.del", name="staff"))
        self.assertEqual(self.assertOk(self.c.call("user.get", name="bob"))
                         ["user"]["groups"], ["eng"])
        self.assertEqual(self.assertOk(self.c.call("user.get", name="carol"))
                         ["user"]["groups"], [])
        backend = self.assertOk(self.c.call("group.get", name="backend"))["group"]
        self.assertEqual(backend["members"]["groups"], [])

    # ----------------------------------------------------------- id, order
    def test_id_echo(self):
        for ident in ["abc", "", 42, 0, -7, 2 ** 53, True, False, "\u00e9\u4e2d"]:
            with self.subTest(id=ident):
                r = self.assertOk(self.c.request({"op": "ping", "id": ident}))
                self.assertIn("id", r)
                self.assertEqual(r["id"], ident)
                self.assertIs(type(r["id"]), type(ident))
        r = self.assertOk(self.c.request({"op": "ping", "id": None}))
        self.assertIn("id", r)
        self.assertIsNone(r["id"])
        r = self.assertOk(self.c.request({"op": "ping"}))
        self.assertNotIn("id", r)
        # errors carry the id too
        r = self.assertError(self.c.request({"op": "user.get", "name": "ghost", "id": 7}),
                             "not_found")
        self.assertEqual(r["id"], 7)
        r = self.assertError(self.c.request({"op": "no.such.op", "id": "x1"}), "unknown_op")
        self.assertEqual(r["id"], "x1")
        # object and array ids are bad requests, and nothing was done
        self.assertError(self.c.request({"op": "user.add", "name": "objid", "id": {"a": 1}}),
                         "bad_request")
        self.assertError(self.c.request({"op": "user.add", "name": "arrid", "id": [1, 2]}),
                         "bad_request")
        self.assertError(self.c.call("user.get", name="objid"), "not_found")
        self.assertError(self.c.call("user.get", name="arrid"), "not_found")
        self.assertOk(self.c.call("ping"))

    def test_pipelining_order(self):
        # users that exist before the pipeline: reads and duplicate adds in
        # it do not depend on writes made inside the same pipeline
        res = self.assertOk(self.c.call("import", records=[
            {"type": "user", "name": "pre%03d" % i} for i in range(200)]))["results"]
        self.assertEqual([x.get("ok") for x in res], [True] * 200)
        reqs, expect = [], []
        for i in range(200):
            k = i % 8
            if k == 0:
                reqs.append({"id": i, "op": "ping"})
                expect.append(("ok", None))
            elif k == 1:
                reqs.append({"id": i, "op": "user.add", "name": "p%03d" % i})
                expect.append(("ok", "p%03d" % i))
            elif k == 2:
                reqs.append({"id": i, "op": "user.get", "name": "pre%03d" % i})
                expect.append(("ok", "pre%03d" % i))
            elif k == 3:
                reqs.append({"id": i, "op": "user.get", "name": "missing%d" % i})
                expect.append(("not_found", None))
            elif k == 4:
                reqs.append({"id": i, "op": "user.add", "name": "pre%03d" % i})
                expect.append(("exists", None))
            elif k == 5:
                reqs.append({"id": i, "op": "bogus"})
                expect.append(("unknown_op", None))
            elif k == 6:
                reqs.append({"id": i, "op": "group.add", "name": "pg%03d" % i})
                expect.append(("ok", None))
            else:
                reqs.append({"id": i, "op": "user.add", "name": "bad name"})
                expect.append(("invalid_argument", None))
        t0 = time.monotonic()
        resps = self.c.pipeline(reqs)
        self.assertLess(time.monotonic() - t0, ghtest.scaled(20))
        self.assertEqual([r.get("id") for r in resps], list(range(200)))
        for i, (r, (what, name)) in enumerate(zip(resps, expect)):
            if what == "ok":
                self.assertOk(r, "request %d %r" % (i, reqs[i]))
                if name is not None:
                    self.assertEqual(r["user"]["name"], name)
            else:
                self.assertError(r, what, "request %d %r" % (i, reqs[i]))
        # the same in one write, split at odd places, on a fresh connection
        c2 = self.client(self.srv)
        data = b"".join(json.dumps({"id": i, "op": "ping"}).encode() + b"\n" for i in range(50))
        for k in range(0, len(data), 37):
            c2.send_raw(data[k:k + 37])
        self.assertEqual([c2.recv()["id"] for _ in range(50)], list(range(50)))

    def test_concurrent_clients(self):
        errors = []
        acked = [[] for _ in range(8)]

        def worker(k):
            try:
                with ghtest.Client(self.srv.socket_path) as c:
                    for i in range(25):
                        r = c.call("user.add", name="c%d-%02d" % (k, i))
                        if r.get("ok") is not True:
                            errors.append(r)
                        else:
                            acked[k].append(r["user"])
                    r = c.call("user.list", prefix="c%d-" % k)
                    if [u["name"] for u in r.get("users", [])] != \
                            ["c%d-%02d" % (k, i) for i in range(25)]:
                        errors.append(("list", k, r))
            except Exception as e:
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(ghtest.scaled(60))
        self.assertEqual(errors, [])
        users = [u for a in acked for u in a]
        self.assertEqual(len(users), 200)
        self.assertEqual(len({u["uid"] for u in users}), 200, "duplicate uid assigned")
        self.assertEqual(len({u["id"] for u in users}), 200, "duplicate id assigned")
        got, _ = all_pages(self.c, "user.list", "users", prefix="c", limit=1000)
        self.assertEqual(len(got), 200)

    # ---------------------------------------------------------- admin ops
    def test_stats(self):
        s0 = self.assertOk(self.c.call("stats"))
        for k in ("uptime", "connections", "requests", "auth", "store", "changelog_seq"):
            self.assertIn(k, s0)
        for k in ("current", "total", "rejected"):
            self.assertIsInstance(s0["connections"][k], int)
        self.assertGreaterEqual(s0["connections"]["current"], 1)
        self.assertEqual(s0["store"]["users"], 0)
        self.assertEqual(s0["store"]["groups"], 0)
        self.assertIsInstance(s0["store"]["used_bytes"], int)
        self.assertGreater(s0["store"]["map_bytes"], 0)
        for k in ("success", "failure", "rate_limited"):
            self.assertIsInstance(s0["auth"][k], int)

        def req(s, op, k):
            return s["requests"].get(op, {}).get(k, 0)

        for _ in range(3):
            self.assertOk(self.c.call("ping"))
        self.assertOk(self.c.call("user.add", name="alice", password="password-one"))
        self.assertOk(self.c.call("group.add", name="g1"))
        self.assertError(self.c.call("user.get", name="ghost"), "not_found")
        self.assertOk(self.c.call("auth", user="alice", password="password-one"))
        self.assertError(self.c.call("auth", user="alice", password="wrong-password"),
                         "invalid_credentials")
        with ghtest.Client(self.srv.socket_path) as other:
            self.assertOk(other.call("ping"))
            s1 = self.assertOk(self.c.call("stats"))
            self.assertGreaterEqual(s1["connections"]["current"], 2)
        self.assertGreaterEqual(req(s1, "ping", "count") - req(s0, "ping", "count"), 4)
        self.assertEqual(req(s1, "user.add", "count") - req(s0, "user.add", "count"), 1)
        self.assertEqual(req(s1, "user.get", "errors") - req(s0, "user.get", "errors"), 1)
        self.assertEqual(req(s1, "user.get", "count") - req(s0, "user.get", "count"), 1)
        self.assertEqual(req(s1, "ping", "errors"), 0)
        for k in ("p50_us", "p99_us"):
            self.assertIsInstance(s1["requests"]["ping"][k], int)
        self.assertLessEqual(s1["requests"]["ping"]["p50_us"], s1["requests"]["ping"]["p99_us"])
        self.assertGreater(s1["connections"]["total"], s0["connections"]["total"])
        self.assertEqual(s1["auth"]["success"] - s0["auth"]["success"], 1)
        self.assertEqual(s1["auth"]["failure"] - s0["auth"]["failure"], 1)
        self.assertEqual(s1["store"]["users"], 1)
        self.assertEqual(s1["store"]["groups"], 1)
        self.assertGreaterEqual(s1["changelog_seq"] - s0["changelog_seq"], 2)
        self.assertGreaterEqual(s1["uptime"], s0["uptime"])

    def test_audit(self):
        secrets = ["first-secret-pw", "second-secret-pw"]
        self.assertOk(self.c.call("user.add", name="alice", password=secrets[0]))
        self.assertOk(self.c.call("group.add", name="staff"))
        self.assertOk(self.c.call("group.add_member", group="staff", user="alice"))
        self.assertOk(self.c.call("user.passwd", name="alice", password=secrets[1]))
        self.assertOk(self.c.call("user.set", name="alice", state="locked"))
        self.assertOk(self.c.call("user.del", name="alice"))
        self.assertError(self.c.call("user.add", name="bad name", password=secrets[0]),
                         "invalid_argument")
        r = self.assertOk(self.c.call("audit", since=0, limit=1000))
        text = json.dumps(r)
        for s in secrets:
            self.assertNotIn(s, text)
        self.assertNotIn("$argon2", text)
        entries = r["entries"]
        seqs = [e["seq"] for e in entries]
        self.assertEqual(seqs, sorted(set(seqs)), "seq must increase")
        self.assertEqual(r["last"], seqs[-1])
        now = time.time()
        for e in entries:
            for k in ("seq", "time", "actor", "op", "target"):
                self.assertIn(k, e)
            self.assertTrue(now - 60 <= e["time"] <= now + 5, e)
            self.assertIsInstance(e["actor"], str)
            self.assertTrue(e["actor"], e)
        ops = [(e["op"], e["target"]) for e in entries]
        want = [("user.add", "alice"), ("group.add", "staff"), ("user.passwd", "alice"),
                ("user.set", "alice"), ("user.del", "alice")]
        pos = []
        for w in want:
            self.assertIn(w, ops)
            pos.append(ops.index(w))
        self.assertEqual(pos, sorted(pos), "entries out of order: %r" % ops)
        self.assertTrue(any(op == "group.add_member" for op, _ in ops), ops)
        self.assertFalse(any(t == "bad name" for _, t in ops), "a refused write was logged")

        # since is exclusive; last is the newest seq of the log, not of the page
        mid = seqs[2]
        r2 = self.assertOk(self.c.call("audit", since=mid))
        self.assertEqual([e["seq"] for e in r2["entries"]], [s for s in seqs if s > mid])
        r3 = self.assertOk(self.c.call("audit", limit=2))
        self.assertEqual([e["seq"] for e in r3["entries"]], seqs[:2])
        self.assertEqual(r3["last"], r["last"])
        self.assertOk(self.c.call("user.add", name="zed"))
        r4 = self.assertOk(self.c.call("audit", since=r["last"]))
        self.assertEqual([(e["op"], e["target"]) for e in r4["entries"]
                          if e["seq"] > r["last"]], [("user.add", "zed")])
        self.assertGreater(r4["last"], r["last"])
        self.assertError(self.c.call("audit", limit="x"), "invalid_argument")

    def test_dump_import_round_trip(self):
        users = [("alice", "alice-password", 30001), ("bob", "bob-password", 30002),
                 ("carol", None, 30003)]
        for name, pw, uid in users:
            f = {"name": name, "uid": uid, "mail": name + "@example.com",
                 "display_name": name.title()}
            if pw:
                f["password"] = pw
            self.assertOk(self.c.call("user.add", **f))
        self.assertOk(self.c.call("user.set", name="bob", state="locked"))
        self.assertOk(self.c.call("group.add", name="staff", gid=40001))
        self.assertOk(self.c.call("group.add", name="eng", gid=40002))
        self.assertOk(self.c.call("group.add_member", group="staff", user="alice"))
        self.assertOk(self.c.call("group.add_member", group="staff", subgroup="eng"))
        self.assertOk(self.c.call("group.add_member", group="eng", user="carol"))

        recs, pages = all_pages(self.c, "dump", "records", kind="users", limit=2)
        self.assertEqual(pages, 2)
        self.assertEqual(sorted(r["name"] for r in recs), ["alice", "bob", "carol"])
        text = json.dumps(recs)
        for _, pw, _ in users:
            if pw:
                self.assertNotIn(pw, text)
        by = {r["name"]: r for r in recs}
        self.assertTrue(by["alice"]["verifier"].startswith("$argon2id$"), by["alice"])
        self.assertTrue(by["bob"]["verifier"].startswith("$argon2id$"), by["bob"])
        self.assertFalse(by["carol"].get("verifier"))
        self.assertNotIn("password", by["alice"])
        groups, _ = all_pages(self.c, "dump", "records", kind="groups")
        self.assertEqual(sorted(g["name"] for g in groups), ["eng", "staff"])

        # a fresh server imports the dump
        other = self.start_server()
        c2 = self.client(other)
        for r in recs:
            self.assertEqual(r["type"], "user")
        res = self.assertOk(c2.call("import", records=recs))["results"]
        self.assertEqual(len(res), 3)
        for x in res:
            self.assertOk(x)
        grecs, mrecs = [], []
        for g in groups:
            g = dict(g)
            # direct members as "users" and "subgroups" (ignored by import)
            self.assertEqual(g["type"], "group")
            grecs.append(g)
            mrecs += [{"type": "member", "group": g["name"], "user": u} for u in g["users"]]
            mrecs += [{"type": "member", "group": g["name"], "subgroup": s}
                      for s in g["subgroups"]]
        self.assertEqual(sorted((m["group"], m.get("user", ""), m.get("subgroup", ""))
                                for m in mrecs),
                         [("eng", "carol", ""), ("staff", "", "eng"), ("staff", "alice", "")])
        res = self.assertOk(c2.call("import", records=grecs + mrecs))["results"]
        self.assertEqual(len(res), 5)
        for x in res:
            self.assertOk(x)

        for name, pw, uid in users:
            u = self.assertOk(c2.call("user.get", name=name))["user"]
            self.assertEqual((u["uid"], u["mail"], u["display_name"]),
                             (uid, name + "@example.com", name.title()))
            self.assertEqual(u["has_password"], pw is not None)
        self.assertEqual(self.assertOk(c2.call("user.get", name="bob"))["user"]["state"],
                         "locked")
        self.assertEqual(sorted(self.assertOk(c2.call("user.get", name="carol"))
                                ["user"]["groups"]), ["eng", "staff"])
        self.assertEqual(self.assertOk(c2.call("group.get", name="staff"))["group"]["gid"],
                         40001)
        # the imported verifier checks the original password
        self.assertOk(c2.call("auth", user="alice", password="alice-password"))
        self.assertError(c2.call("auth", user="alice", password="bob-password"),
                         "invalid_credentials")
        self.assertError(c2.call("auth", user="bob", password="bob-password"),
                         "account_locked")

    def test_import_records(self):
        res = self.assertOk(self.c.call("import", records=[
            {"type": "user", "name": "imp1", "uid": 30100, "mail": "imp1@example.com"},
            {"type": "user", "name": "imp1"},                      # duplicate
            {"type": "user", "name": "imp2", "verifier": "not-a-hash"},
            {"type": "user", "name": "bad name"},
            {"type": "group", "name": "ig"},
            {"type": "member", "group": "ig", "user": "imp1"},
            {"type": "member", "group": "ig", "user": "ghost"},
            {"type": "frobnicator", "name": "x"},
        ]))["results"]
        self.assertEqual(len(res), 8)
        self.assertOk(res[0])
        self.assertError(res[1], "exists")
        self.assertError(res[2], "invalid_argument")
        self.assertError(res[3], "invalid_argument")
        self.assertOk(res[4])
        self.assertOk(res[5])
        self.assertError(res[6], "not_found")
        self.assertError(res[7], "invalid_argument")
        u = self.assertOk(self.c.call("user.get", name="imp1"))["user"]
        self.assertEqual((u["uid"], u["mail"], u["has_password"]),
                         (30100, "imp1@example.com", False))
        self.assertError(self.c.call("user.get", name="imp2"), "not_found")
        self.assertEqual(self.assertOk(self.c.call("user.get", name="imp1"))["user"]["groups"],
                         ["ig"])
        # at most 1000 records per request; nothing is applied
        recs = [{"type": "group", "name": "x%04d" % i} for i in range(1001)]
        self.assertError(self.c.call("import", records=recs), ("too_large", "invalid_argument"))
        self.assertError(self.c.call("group.get", name="x0000"), "not_found")
        self.assertError(self.c.call("import", records="nope"), "invalid_argument")
        self.assertError(self.c.call("dump", kind="stuff"), "invalid_argument")

    def test_import_verifier_auth(self):
        # a verifier exported by one server checks the original password on
        # another (a record carrying only name and verifier)
        self.assertOk(self.c.call("user.add", name="alice", password="alice-password"))
        recs = self.assertOk(self.c.call("dump", kind="users"))["records"]
        verifier = recs[0]["verifier"]
        self.assertTrue(verifier.startswith("$argon2id$"), verifier)
        other = self.start_server()
        c2 = self.client(other)
        res = self.assertOk(c2.call("import", records=[
            {"type": "user", "name": "alice", "verifier": verifier},
            {"type": "user", "name": "copy", "verifier": verifier}]))["results"]
        self.assertEqual([x.get("ok") for x in res], [True, True], res)
        self.assertIs(self.assertOk(c2.call("user.get", name="alice"))["user"]["has_password"],
                      True)
        self.assertOk(c2.call("auth", user="alice", password="alice-password"))
        self.assertOk(c2.call("auth", user="copy", password="alice-password"))
        self.assertError(c2.call("auth", user="alice", password="alice-passwort"),
                         "invalid_credentials")

    def test_import_refuses_passwords(self):
        # PROTOCOL.md: "A password field is refused: import takes verifiers"
        res = self.assertOk(self.c.call("import", records=[
            {"type": "user", "name": "imp", "password": "imported-pw"},
            {"type": "user", "name": "imp2"}]))["results"]
        self.assertError(res[0], "invalid_argument")
        self.assertOk(res[1])
        self.assertError(self.c.call("user.get", name="imp"), "not_found")

    def test_user_add_with_verifier(self):
        self.assertOk(self.c.call("user.add", name="alice", password="alice-password"))
        verifier = self.assertOk(self.c.call("dump", kind="users"))["records"][0]["verifier"]
        u = self.assertOk(self.c.call("user.add", name="twin", verifier=verifier))["user"]
        self.assertIs(u["has_password"], True)
        self.assertNotIn("verifier", u)
        self.assertOk(self.c.call("auth", user="twin", password="alice-password"))
        self.assertError(self.c.call("user.add", name="bad2", verifier="plaintext"),
                         "invalid_argument")
        self.assertError(self.c.call("user.get", name="bad2"), "not_found")

    def test_malformed_verifier_refused(self):
        # a verifier must be a well-formed Argon2id string, not just start
        # like one: otherwise the account silently can never log in
        for i, v in enumerate(("$argon2id$garbage", "$argon2id$v=19$m=64,t=1,p=1$",
                               "$argon2id$" + "A" * 80)):
            with self.subTest(verifier=v):
                self.assertError(self.c.call("user.add", name="bad%d" % i, verifier=v),
                                 "invalid_argument")
                res = self.assertOk(self.c.call("import", records=[
                    {"type": "user", "name": "imp%d" % i, "verifier": v}]))["results"]
                self.assertError(res[0], "invalid_argument")

    def test_pipelined_dependent_writes(self):
        # writes of one connection apply in order: each sees the ones before
        resps = self.c.pipeline([
            {"op": "group.add", "name": "g"},
            {"op": "user.add", "name": "a"},
            {"op": "group.add_member", "group": "g", "user": "a"},
            {"op": "user.set", "name": "a", "mail": "a@example.com"},
            {"op": "user.passwd", "name": "a", "password": "a-password"},
            {"op": "user.set", "name": "a", "rename": "b"},
            {"op": "user.del", "name": "b"},
            {"op": "user.add", "name": "b"},
            {"op": "group.del", "name": "g"},
        ])
        for i, r in enumerate(resps):
            self.assertOk(r, "request %d" % i)
        self.assertError(self.c.call("group.get", name="g"), "not_found")
        u = self.assertOk(self.c.call("user.get", name="b"))["user"]
        self.assertEqual((u["mail"], u["has_password"], u["groups"]), ("", False, []))

    def test_pipelined_writes_share_commits(self):
        # plain writes of one connection run behind each other without
        # waiting for each other's fsync: they share group commits
        s0 = self.assertOk(self.c.call("stats"))["writer"]
        resps = self.c.pipeline([{"op": "user.add", "name": "pw%03d" % i} for i in range(300)] +
                                [{"op": "user.get", "name": "pw299"}])
        for i, r in enumerate(resps):
            self.assertOk(r, "request %d" % i)
        s1 = self.assertOk(self.c.call("stats"))["writer"]
        ops, commits = s1["ops"] - s0["ops"], s1["commits"] - s0["commits"]
        self.assertGreaterEqual(ops, 300)
        self.assertLess(commits, ops / 5, "%d commits for %d writes" % (commits, ops))

    def test_errors_and_unknown_op(self):
        self.assertError(self.c.call("user.frobnicate"), "unknown_op")
        self.assertError(self.c.call("PING"), "unknown_op")
        self.assertError(self.c.call(""), "unknown_op")
        self.assertError(self.c.call("group.get", name="none"), "not_found")
        self.assertError(self.c.call("group.del", name="none"), "not_found")
        self.assertError(self.c.call("user.del", name="none"), "not_found")
        self.assertError(self.c.call("user.set", name="none", state="locked"), "not_found")
        self.assertError(self.c.call("user.get"), "invalid_argument")
        self.assertError(self.c.call("user.get", name=["a"]), "invalid_argument")
        r = self.c.call("user.get", name="none")
        self.assertIn("none", r["error"]["message"])
        self.assertOk(self.c.call("ping"))


if __name__ == "__main__":
    ghtest.main()
