#!/usr/bin/env python3
"""Sync tests: gatehoused mirroring a real OpenLDAP slapd (tests/sync/slapd.py).

Each test starts its own slapd (fixture from gen_ldif.py, loaded with slapadd)
and its own gatehoused with an [upstream:corp] section, changes the upstream
with ldapadd/ldapmodify/ldapmodrdn/ldapdelete and watches the mirror through
the socket protocol. TAP through ghtest; run one test by hand with

    GH_BUILDDIR=build GH_SRCDIR=. python3 tests/sync/test_sync.py persist
"""
import io
import os
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("GH_SRCDIR", os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "integration"))
sys.path.insert(0, HERE)

import ghtest  # noqa: E402
import gen_ldif  # noqa: E402
import slapd  # noqa: E402

USERS, GROUPS = 2000, 100
SUFFIX = slapd.SUFFIX
_fixture = {}


def fixture(users=USERS, groups=GROUPS, big=0):
    k = (users, groups, big)
    if k not in _fixture:
        buf = io.StringIO()
        gen_ldif.generate(buf, users, groups, big)
        _fixture[k] = buf.getvalue()
    return _fixture[k]


def new_user_ldif(login, uid_number, mail=None):
    return "\n".join([
        "dn: uid=%s,ou=people,%s" % (login, SUFFIX),
        "objectClass: top", "objectClass: person", "objectClass: organizationalPerson",
        "objectClass: inetOrgPerson", "objectClass: posixAccount",
        "uid: " + login, "cn: New " + login, "sn: New", "uidNumber: %d" % uid_number,
        "gidNumber: 20000", "homeDirectory: /home/" + login,
        "mail: " + (mail or login + "@example.com"), "userPassword: pw-" + login,
    ]) + "\n"


def udn(login):
    return "uid=%s,ou=people,%s" % (login, SUFFIX)


def gdn(name):
    return "cn=%s,ou=groups,%s" % (name, SUFFIX)


@unittest.skipUnless(slapd.available(), "slapd or ldap-utils not installed")
class SyncTest(ghtest.TestCase):
    mode = "syncrepl-persist"

    def start_upstream(self, users=USERS, groups=GROUPS, big=0, sessionlog=0):
        s = slapd.Slapd(ldif=fixture(users, groups, big), sessionlog=sessionlog)
        self.addCleanup(s.close)
        return s

    def upstream_cfg(self, ldap, **kw):
        cfg = {"uri": ldap.uri, "bind_dn": slapd.ADMIN_DN, "bind_password_file": ldap.pwfile,
               "base_dn": SUFFIX, "user_filter": "(objectClass=posixAccount)",
               "group_filter": "(objectClass=groupOfNames)", "login_attr": "uid",
               "member_attr": "member", "mode": self.mode, "interval": 1, "timeout": 5,
               "bind_timeout": 2}
        cfg.update(kw)
        return cfg

    def start_gh(self, ldap, wait=True, **kw):
        srv = self.start_server(config={"server": {"log_level": "info"},
                                        "upstream:corp": self.upstream_cfg(ldap, **kw)})
        c = self.client(srv)
        if wait:
            self.wait_runs(c, 1)
        return srv, c

    def status(self, c):
        st = self.assertOk(c.call("sync.status"))
        self.assertEqual(len(st["upstreams"]), 1)
        return st["upstreams"][0]

    def wait_runs(self, c, n, timeout=60):
        deadline = time.time() + ghtest.scaled(timeout)
        while time.time() < deadline:
            u = self.status(c)
            if u["runs"] >= n:
                return u
            time.sleep(0.05)
        self.fail("sync did not complete %d run(s): %r" % (n, self.status(c)))

    def wait_for(self, pred, timeout, what):
        t0 = time.time()
        deadline = t0 + ghtest.scaled(timeout)
        while time.time() < deadline:
            v = pred()
            if v:
                return time.time() - t0
            time.sleep(0.02)
        self.fail("%s not seen within %ss" % (what, timeout))

    def user(self, c, name):
        r = c.call("user.get", name=name)
        return r.get("user") if r.get("ok") else None


class Config(SyncTest):
    def test_bad_upstream_sections_refused_at_start(self):
        good = {"uri": "ldap://127.0.0.1:1", "base_dn": SUFFIX}
        fd, pw = tempfile.mkstemp(suffix=".pw")  # an empty password file
        os.close(fd)
        self.addCleanup(os.unlink, pw)
        cases = [
            ({"base_dn": SUFFIX}, "uri is required"),
            ({"uri": "ldap://127.0.0.1:1"}, "base_dn is required"),
            (dict(good, mode="sometimes"), "mode"),
            (dict(good, colour="blue"), "unknown key 'colour'"),
            (dict(good, interval="0"), "interval"),
            (dict(good, max_delete_ratio="1.5"), "max_delete_ratio"),
            (dict(good, user_filter="objectClass=person"), "user_filter"),
            (dict(good, bind_dn="cn=x," + SUFFIX), "bind_password_file"),
            (dict(good, bind_dn="cn=x," + SUFFIX, bind_password_file="/nonexistent/pw"),
             "/nonexistent/pw"),
            (dict(good, bind_dn="cn=x," + SUFFIX, bind_password_file=pw), "empty"),
            (dict(good, key_attr="objectGUID"), "search-poll"),
            (dict(good, login_attr="uid)(x"), "login_attr"),
            (dict(good, collision="rename"), "collision"),
        ]
        for section, needle in cases:
            srv = self.start_server(config={"server": {}, "upstream:corp": section},
                                    start=False, check_exit=False)
            with self.assertRaises(ghtest.ServerError, msg=needle) as cm:
                srv.start()
            self.assertIn(needle, str(cm.exception), section)
        srv = self.start_server(config={"server": {}, "upstream:bad name": good},
                                start=False, check_exit=False)
        self.assertRaises(ghtest.ServerError, srv.start)


class InitialSync(SyncTest):
    def test_initial_sync_matches_fixture(self):
        ldap = self.start_upstream()
        t0 = time.time()
        srv, c = self.start_gh(ldap)
        elapsed = time.time() - t0
        print("# full sync of %d users, %d groups: %.2f s (server start included)"
              % (USERS, GROUPS, elapsed))
        exp = gen_ldif.expected(USERS, GROUPS)
        u = self.status(c)
        self.assertEqual(u["users"], USERS)
        self.assertEqual(u["groups"], GROUPS)
        self.assertEqual(u["last_run"]["added"], USERS + GROUPS)
        # the metacharacter login, and member DNs outside the base or filter
        self.assertEqual(u["last_run"]["skipped"], 1 + exp["skipped_members"])
        self.assertEqual(u["entries_received"], USERS + 1 + GROUPS)
        self.assertIsNotNone(u["cookie"])
        # every user, exactly
        seen, after = {}, None
        while True:
            kw = {"limit": 1000}
            if after:
                kw["after"] = after
            r = self.assertOk(c.call("user.list", **kw))
            for x in r["users"]:
                seen[x["name"]] = x
            after = r["next"]
            if after is None:
                break
        self.assertEqual(set(seen), set(exp["users"]))
        for name, (uid, mail) in exp["users"].items():
            self.assertEqual((seen[name]["uid"], seen[name]["mail"], seen[name]["origin"]),
                             (uid, mail, "corp"), name)
        # every group, its direct members and nested groups
        r = self.assertOk(c.call("group.list", limit=1000))
        self.assertEqual({g["name"] for g in r["groups"]}, set(exp["groups"]))
        for name, (users, subgroups) in exp["groups"].items():
            g = self.assertOk(c.call("group.get", name=name))["group"]
            self.assertEqual(set(g["members"]["users"]), users, name)
            self.assertEqual(set(g["members"]["groups"]), subgroups, name)
        # nested: a member of g000 is an effective member of the groups nesting it
        nesting = [n for n, (_, gs) in exp["groups"].items() if "g000" in gs]
        self.assertTrue(nesting)
        self.assertTrue(set(nesting) <= set(self.user(c, "u00001")["groups"]))


class Persist(SyncTest):
    mode = "syncrepl-persist"

    def test_persist_add_modify_rename_delete(self):
        ldap = self.start_upstream(users=200, groups=10)
        srv, c = self.start_gh(ldap)
        base = self.status(c)["entries_received"]

        ldap.add(new_user_ldif("newbie", 30001))
        lag = self.wait_for(lambda: self.user(c, "newbie"), 2, "added user")
        print("# persist lag, add: %.3f s" % lag)
        self.assertEqual(self.user(c, "newbie")["uid"], 30001)

        ldap.modify("dn: %s\nchangetype: modify\nreplace: mail\nmail: changed@example.com\n"
                    % udn("u00007"))
        lag = self.wait_for(lambda: self.user(c, "u00007")["mail"] == "changed@example.com", 2,
                            "modified mail")
        print("# persist lag, modify: %.3f s" % lag)

        before = self.user(c, "u00005")
        ldap.modrdn(udn("u00005"), "uid=renamed5")
        self.wait_for(lambda: self.user(c, "renamed5"), 2, "renamed user")
        after = self.user(c, "renamed5")
        self.assertEqual(after["id"], before["id"])  # identity kept (entryUUID)
        self.assertEqual(after["origin_dn"], udn("renamed5"))
        self.assertIsNone(self.user(c, "u00005"))

        ldap.modify("dn: %s\nchangetype: modify\nadd: member\nmember: %s\n"
                    % (gdn("g001"), udn("newbie")))
        self.wait_for(lambda: "newbie" in self.assertOk(c.call("group.get", name="g001"))
                      ["group"]["members"]["users"], 2, "new member")

        ldap.delete(udn("u00009"))
        self.wait_for(lambda: self.user(c, "u00009")["state"] == "disabled", 2,
                      "deleted user disabled")
        self.assertError(c.call("auth", user="u00009", password=gen_ldif.password(9)),
                         ("invalid_credentials", "account_disabled"))
        # counted in the store just after the commit that the user shows
        self.wait_for(lambda: self.status(c)["tombstones"] == 1, 2, "tombstone counted")
        u = self.status(c)
        self.assertEqual(u["entries_received"] - base, 4)  # add, modify, rename, group
        self.assertEqual(u["totals"]["disabled"], 1)
        self.assertGreaterEqual(u["totals"]["renamed"], 1)
        self.assertEqual(u["state"], "persisting")
        # lag_s is whole seconds since the worker last knew the mirror current
        # (it notes that every 250 ms while persisting): a read just past a
        # second boundary says 1, and a worker thread starved for a moment on
        # a loaded sanitizer run says more, so wait for a current reading
        self.wait_for(lambda: self.status(c)["lag_s"] <= 1, 5, "a persisting mirror current")


class Poll(SyncTest):
    mode = "syncrepl-poll"

    def test_poll_mirrors_at_next_poll(self):
        ldap = self.start_upstream(users=200, groups=10)
        srv, c = self.start_gh(ldap, interval=2)
        ldap.add(new_user_ldif("polled", 30002))
        ldap.delete(udn("u00011"))
        ldap.modrdn(udn("u00012"), "uid=moved12")
        n = self.status(c)["runs"]
        self.wait_runs(c, n + 2, timeout=10)
        self.assertIsNotNone(self.user(c, "polled"))
        self.assertEqual(self.user(c, "u00011")["state"], "disabled")
        self.assertIsNotNone(self.user(c, "moved12"))
        u = self.status(c)
        self.assertEqual(u["totals"]["disabled"], 1)
        self.assertEqual(u["totals"]["renamed"], 1)

    def test_restart_resumes_from_cookie(self):
        ldap = self.start_upstream()
        srv, c = self.start_gh(ldap, interval=60)
        self.assertEqual(self.status(c)["entries_received"], USERS + 1 + GROUPS)
        c.close()
        srv.stop()
        ldap.modify("dn: %s\nchangetype: modify\nreplace: mail\nmail: offline@example.com\n"
                    % udn("u00042"))
        ldap.delete(udn("u00043"))
        srv.start()
        c = self.client(srv)
        u = self.wait_runs(c, 1)
        # only the changed entry travelled; the deletion came by difference
        self.assertEqual(u["entries_received"], 1)
        self.assertEqual(u["last_run"]["added"], 0)
        self.assertEqual(u["last_run"]["modified"], 1)
        self.assertEqual(u["last_run"]["disabled"], 1)
        self.assertEqual(self.user(c, "u00042")["mail"], "offline@example.com")
        self.assertEqual(self.user(c, "u00043")["state"], "disabled")
        # and a restart with nothing new transfers nothing
        c.close()
        srv.stop()
        srv.start()
        c = self.client(srv)
        u = self.wait_runs(c, 1)
        self.assertEqual(u["entries_received"], 0)
        self.assertEqual(u["users"], USERS - 1)


class SessionLog(SyncTest):
    """With syncprov's session log the provider sends deletions as syncIdSet
    messages (refreshDeletes) instead of the present list."""
    mode = "syncrepl-poll"

    def test_restart_with_delete_idset(self):
        ldap = self.start_upstream(users=100, groups=5, sessionlog=1000)
        srv, c = self.start_gh(ldap, interval=60)
        c.close()
        srv.stop()
        ldap.delete(udn("u00050"), udn("u00051"))
        ldap.add(new_user_ldif("late", 30010))
        srv.start()
        c = self.client(srv)
        u = self.wait_runs(c, 1)
        self.assertEqual(u["entries_received"], 1)
        self.assertEqual((u["last_run"]["added"], u["last_run"]["disabled"]), (1, 2))
        self.assertEqual(self.user(c, "u00050")["state"], "disabled")
        self.assertEqual(self.user(c, "u00051")["state"], "disabled")
        self.assertEqual(self.user(c, "u00052")["state"], "active")
        self.assertEqual(u["users"], 99)


class SearchPoll(SyncTest):
    mode = "search-poll"

    def test_search_poll_finds_deletions(self):
        ldap = self.start_upstream(users=300, groups=10)
        # no poll of its own in the test's time: the one run after the first
        # is the sync.run below (with interval 1 a poll already under way
        # when the upstream changed could end as run n + 1 without them)
        srv, c = self.start_gh(ldap, page_size=50, interval=60)
        u = self.status(c)
        self.assertEqual((u["users"], u["groups"]), (300, 10))
        ldap.delete(udn("u00020"), udn("u00021"))
        ldap.modify("dn: %s\nchangetype: modify\nreplace: mail\nmail: sp@example.com\n"
                    % udn("u00022"))
        n = u["runs"]
        self.assertOk(c.call("sync.run", upstream="corp"))
        u = self.wait_runs(c, n + 1, timeout=10)
        self.assertEqual(self.user(c, "u00020")["state"], "disabled")
        self.assertEqual(self.user(c, "u00021")["state"], "disabled")
        self.assertEqual(self.user(c, "u00022")["mail"], "sp@example.com")
        self.assertEqual(u["users"], 298)
        self.assertError(c.call("sync.run", upstream="nope"), "not_found")

    def test_delete_ratio_guard_and_grace(self):
        ldap = self.start_upstream(users=100, groups=5)
        srv, c = self.start_gh(ldap, delete_grace=1)
        # a filter that suddenly matches a tenth of the users: refused
        ldap.delete(*[udn(gen_ldif.login(i)) for i in range(1, 31)])
        n = self.status(c)["runs"]
        self.assertOk(c.call("sync.run", upstream="corp"))
        self.wait_for(lambda: self.status(c)["state"] == "halted", 10, "halted state")
        u = self.status(c)
        self.assertIn("refusing to delete 30", u["last_error"])
        self.assertEqual(self.user(c, "u00001")["state"], "active")
        # during the halt sync.status counts what the store holds
        live = [x for x in self.assertOk(c.call("user.list", limit=1000))["users"]
                if x["origin"] == "corp" and "tombstone" not in x]
        self.assertEqual((u["users"], u["tombstones"]), (len(live), 0))
        # forced: applied, then purged after the grace. The polls go on
        # every second (the purge needs them), so "runs > n" may be a poll
        # that ended before the deletions: wait for the forced run's effect,
        # which only it can have (every unforced run halts)
        self.assertEqual(u["totals"]["disabled"], 0)
        self.assertOk(c.call("sync.run", upstream="corp", force=True))
        self.wait_for(lambda: (self.user(c, "u00001") or {}).get("state") == "disabled", 10,
                      "forced run")
        self.wait_for(lambda: self.status(c)["totals"]["disabled"] == 30, 10,
                      "the forced run's 30 deletions counted")
        self.wait_for(lambda: self.status(c)["runs"] > n, 10, "forced run ended")
        self.wait_for(lambda: self.user(c, "u00001") is None, 8, "purge after grace")
        # counted in the store just after the commit that removed them
        self.wait_for(lambda: self.status(c)["tombstones"] == 0, 2, "purge counted")


class Auth(SyncTest):
    mode = "syncrepl-poll"

    def test_upstream_auth(self):
        ldap = self.start_upstream(users=50, groups=3)
        srv, c = self.start_gh(ldap, interval=60)
        tok = c.login("u00010", gen_ldif.password(10))
        self.assertTrue(tok)
        self.assertError(c.call("auth", user="u00010", password="wrong"), "invalid_credentials")
        self.assertError(c.call("auth", user="u00010", password=""),
                         ("invalid_credentials", "invalid_argument"))
        # filter metacharacters never reach the upstream as a filter or a DN
        for login in ["*", "u0001*", "u00010)(uid=*", "evil*)(uid=*", "u00010,ou=people",
                      "*)(objectClass=*"]:
            self.assertError(c.call("auth", user=login, password=gen_ldif.password(10)),
                             ("invalid_credentials", "invalid_argument", "rate_limited"), login)
        # another user's password never works
        self.assertError(c.call("auth", user="u00011", password=gen_ldif.password(10)),
                         "invalid_credentials")

    def test_offline_verifier(self):
        ldap = self.start_upstream(users=50, groups=3)
        srv, c = self.start_gh(ldap, interval=60, offline_auth="yes", offline_max_age=4,
                               bind_timeout=1)
        self.assertTrue(c.login("u00003", gen_ldif.password(3)))
        t_ok = time.time()
        # a hung upstream (accepts, never answers): bounded by bind_timeout
        ldap.pause()
        t0 = time.time()
        self.assertTrue(c.login("u00003", gen_ldif.password(3)))
        self.assertLess(time.time() - t0, ghtest.scaled(2.5))
        ldap.resume()
        ldap.stop()
        t0 = time.time()
        self.assertTrue(c.login("u00003", gen_ldif.password(3)))
        self.assertLess(time.time() - t0, ghtest.scaled(2.5))  # bounded by bind_timeout
        self.assertError(c.call("auth", user="u00003", password="wrong"), "invalid_credentials")
        # a user who never logged in has no verifier
        self.assertError(c.call("auth", user="u00004", password=gen_ldif.password(4)),
                         ("unavailable", "invalid_credentials"))
        time.sleep(max(0.0, t_ok + 5 - time.time()))
        self.assertError(c.call("auth", user="u00003", password=gen_ldif.password(3)),
                         ("unavailable", "invalid_credentials"))
        u = self.status(c)
        self.assertEqual(u["users"], 50)  # the mirror keeps serving
        ldap.start()
        self.assertTrue(c.login("u00003", gen_ldif.password(3)))


class Local(SyncTest):
    mode = "syncrepl-persist"

    def test_owned_attributes_refused(self):
        ldap = self.start_upstream(users=20, groups=2)
        srv, c = self.start_gh(ldap)
        for field, value in [("mail", "x@y.z"), ("display_name", "X"), ("uid", 40000),
                             ("rename", "other")]:
            r = self.assertError(c.call("user.set", name="u00001", **{field: value}),
                                 "permission_denied", field)
            self.assertIn("corp", r["error"]["message"])
        # local state is not owned: an administrator may lock an upstream user
        self.assertOk(c.call("user.set", name="u00001", state="locked"))

    def test_local_grants_survive_resync(self):
        ldap = self.start_upstream(users=20, groups=3)
        srv, c = self.start_gh(ldap)
        self.assertOk(c.call("role.add", name="deployer",
                             allow=[{"action": "deploy", "resource": "service/*"}]))
        b1 = self.assertOk(c.call("grant", role="deployer", user="u00002"))["binding"]
        b2 = self.assertOk(c.call("grant", role="deployer", group="g001"))["binding"]
        uid_before = self.user(c, "u00002")["id"]
        ldap.modify("dn: %s\nchangetype: modify\nreplace: mail\nmail: m@example.com\n"
                    % udn("u00002"))
        ldap.modrdn(udn("u00002"), "uid=u2renamed")
        ldap.modify("dn: %s\nchangetype: modify\nreplace: description\ndescription: new\n"
                    % gdn("g001"))
        self.wait_for(lambda: self.user(c, "u2renamed"), 2, "rename")
        n = self.status(c)["runs"]
        self.assertOk(c.call("sync.run", upstream="corp", full=True))
        self.wait_runs(c, n + 1, timeout=10)
        self.assertEqual(self.user(c, "u2renamed")["id"], uid_before)
        ids = {b["id"] for b in self.assertOk(c.call("bindings", role="deployer"))["bindings"]}
        self.assertEqual(ids, {b1, b2})
        r = self.assertOk(c.call("check", user="u2renamed", action="deploy",
                                 resource="service/web"))
        self.assertTrue(r["allow"])

    def test_name_collision_refused(self):
        ldap = self.start_upstream(users=20, groups=2)
        ldap.stop()  # the local user comes first
        srv, c = self.start_gh(ldap, wait=False)
        self.assertOk(c.call("user.add", name="u00003", password="local-password-1"))
        local_id = self.user(c, "u00003")["id"]
        ldap.start()
        u = self.wait_runs(c, 1, timeout=20)
        self.assertEqual(self.user(c, "u00003")["origin"], "local")
        self.assertEqual(self.user(c, "u00003")["id"], local_id)
        self.assertIn("u00003", u["last_error"])
        self.assertEqual(u["last_run"]["added"], 19 + 2)
        self.assertGreaterEqual(u["last_run"]["skipped"], 1)


class MemberUid(SyncTest):
    mode = "syncrepl-poll"

    def test_member_uid_groups(self):
        ldap = self.start_upstream(users=20, groups=1)
        for name, gid, members in [("pg1", 5001, ["u00001", "u00002", "nobody"]),
                                   ("pg2", 5002, ["u00003"])]:
            ldap.add("dn: cn=%s,ou=groups,%s\nobjectClass: top\nobjectClass: posixGroup\n"
                     "cn: %s\ngidNumber: %d\n%s\n"
                     % (name, SUFFIX, name, gid, "\n".join("memberUid: " + m for m in members)))
        srv, c = self.start_gh(ldap, interval=1, group_filter="(objectClass=posixGroup)",
                               member_attr="memberUid")
        u = self.status(c)
        self.assertEqual(u["groups"], 2)
        g = self.assertOk(c.call("group.get", name="pg1"))["group"]
        self.assertEqual(g["gid"], 5001)
        self.assertEqual(set(g["members"]["users"]), {"u00001", "u00002"})
        self.assertGreaterEqual(u["last_run"]["skipped"], 2)  # evil + "nobody"
        # a member that appears later is linked when it comes
        ldap.add(new_user_ldif("nobody", 30009))
        n = u["runs"]
        self.wait_runs(c, n + 2, timeout=10)
        g = self.assertOk(c.call("group.get", name="pg1"))["group"]
        self.assertEqual(set(g["members"]["users"]), {"u00001", "u00002", "nobody"})


class Tls(SyncTest):
    mode = "syncrepl-poll"

    @unittest.skipUnless(slapd.shutil.which("openssl"), "openssl not installed")
    def test_starttls_verifies_the_certificate(self):
        ldap = slapd.Slapd(ldif=fixture(20, 2), tls=True)
        self.addCleanup(ldap.close)
        srv, c = self.start_gh(ldap, starttls="yes", ca_file=ldap.ca_file)
        self.assertEqual(self.status(c)["users"], 20)
        self.assertTrue(c.login("u00004", gen_ldif.password(4)))  # auth over StartTLS too
        # another CA: the certificate is refused, nothing falls back to clear text
        other = slapd.Slapd(ldif=fixture(20, 2), tls=True)
        self.addCleanup(other.close)
        srv2 = self.start_server(config={"server": {"log_level": "info"},
                                         "upstream:corp": self.upstream_cfg(
                                             ldap, starttls="yes", ca_file=other.ca_file)})
        c2 = self.client(srv2)
        self.wait_for(lambda: self.status(c2)["state"] == "down", 10, "TLS refused")
        self.assertIn("StartTLS", self.status(c2)["last_error"])
        self.assertEqual(self.status(c2)["users"], 0)


class Down(SyncTest):
    mode = "syncrepl-persist"

    def test_upstream_down_and_back(self):
        ldap = self.start_upstream(users=30, groups=2)
        srv, c = self.start_gh(ldap)
        ldap.stop()
        self.wait_for(lambda: self.status(c)["state"] in ("down", "connecting"), 5, "down")
        u = self.status(c)
        self.assertFalse(u["connected"])
        self.assertTrue(u["last_error"])
        self.assertIsNotNone(self.user(c, "u00001"))  # still serving the mirror
        ldap.start()
        self.wait_for(lambda: self.status(c)["state"] == "persisting", 15, "reconnected")
        ldap.add(new_user_ldif("afterdown", 30003))
        self.wait_for(lambda: self.user(c, "afterdown"), 2, "change after reconnect")


class Robust(SyncTest):
    mode = "syncrepl-persist"

    def test_stop_and_kill_during_initial_sync(self):
        ldap = self.start_upstream(users=10000, groups=50)
        # SIGTERM in the middle of the first refresh: a clean exit
        srv = self.start_server(config={"server": {"log_level": "info"},
                                        "upstream:corp": self.upstream_cfg(ldap)})
        self.assertEqual(srv.stop(), 0)
        # kill -9 in the middle, then restart: the refresh starts again from
        # the last stored cookie and ends with exactly the directory
        srv.start()
        time.sleep(0.05)
        srv.kill9()
        srv.start()
        c = self.client(srv)
        u = self.wait_runs(c, 1)
        self.assertEqual((u["users"], u["groups"]), (10000, 50))
        r = self.assertOk(c.call("stats"))
        self.assertEqual(r["store"]["users"], 10000)
        self.assertEqual(r["store"]["groups"], 50)


class StorageFull(SyncTest):
    mode = "syncrepl-poll"

    def test_storage_full_stops_the_run_not_the_server(self):
        ldap = self.start_upstream(users=10000, groups=5)
        srv = self.start_server(config={"server": {"log_level": "info", "map_size": "1M",
                                                   "map_max": "2M"},
                                        "upstream:corp": self.upstream_cfg(ldap)})
        c = self.client(srv)
        self.wait_for(lambda: "storage full" in (self.status(c)["last_error"] or ""), 10,
                      "storage full reported")
        u = self.status(c)
        self.assertIn(u["state"], ("down", "connecting", "running"))  # retried with backoff
        self.assertIsNone(u["cookie"])  # nothing claims to cover what was not written
        self.assertOk(c.call("ping"))


class Hung(SyncTest):
    mode = "syncrepl-poll"

    def test_hung_upstream_times_out(self):
        ldap = self.start_upstream(users=30, groups=2)
        srv, c = self.start_gh(ldap, timeout=1, interval=60)
        ldap.pause()  # accepts connections, answers nothing
        n = self.status(c)["runs"]
        self.assertOk(c.call("sync.run", upstream="corp"))
        self.wait_for(lambda: self.status(c)["state"] == "down", 6, "timed out")
        self.assertIsNotNone(self.user(c, "u00001"))
        ldap.resume()
        self.assertOk(c.call("sync.run", upstream="corp"))
        self.wait_runs(c, n + 1, timeout=10)


class BigGroup(SyncTest):
    mode = "syncrepl-persist"

    def test_group_of_10000_members(self):
        ldap = self.start_upstream(users=10000, groups=0, big=10000)
        t0 = time.time()
        srv, c = self.start_gh(ldap)
        print("# 10,000 users and one 10,000-member group: %.2f s" % (time.time() - t0))
        g = self.assertOk(c.call("group.get", name="big"))["group"]
        self.assertEqual(len(g["members"]["users"]), 10000)
        ldap.modify("dn: %s\nchangetype: modify\ndelete: member\nmember: %s\n"
                    % (gdn("big"), udn("u00001")))
        self.wait_for(lambda: "big" not in self.user(c, "u00001").get("groups", []), 5,
                      "member removed")


if __name__ == "__main__":
    ghtest.main()
