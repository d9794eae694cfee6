#!/usr/bin/env python3
"""Active Directory incremental runs, against the stand-in of test_sync_ad.py
(slapd with AD attributes behind ldapproxy.py). What an incremental run must
not lose, each checked so that it fails if the feature breaks:
  - a group whose ranged retrieval fails keeps its members, the run reports
    it, and the uSN mark stays below it so the next incremental run reads it
    again (and then last_error clears); groups keep objectSid as origin_sid;
    the Show Deleted search is paged;
  - an accountExpires that passes between two runs disables the user at the
    next run, incremental included, and revokes its tokens;
  - one mark per domain controller: switching DCs keeps each DC's mark; a
    restored database (same DC, new invocationId) or a USN gone back forces a
    full run;
  - a mirror whose keys have the raw objectGUID byte order of older versions
    keeps every id (keys rewritten in place, no deletion-guard halt);
  - full_interval: a periodic full run finds what incremental runs cannot
    see (an entry that left the filter); an administrator's lock survives AD
    account flag changes, and an administrator's "active" does not open an
    AD-disabled account;
  - an empty space_replacement keeps skipping names with spaces.
Run by hand with

    GH_BUILDDIR=build GH_SRCDIR=. python3 tests/sync/test_sync_ad_incr.py
"""
import os
import sys
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_sync_ad as ad  # noqa: E402
import ghtest  # noqa: E402
import slapd  # noqa: E402
from test_sync_ad import BIG, SUFFIX, udn, rootdse, ntds, b64, guid_bytes  # noqa: E402

FULL = BIG + 3  # users and groups a full run reads


@unittest.skipUnless(slapd.available() and ad.HAVE_PROXY, "slapd, ldap-utils or pyasn1 missing")
class AdIncremental(ad.ActiveDirectory):
    # the tests of the parent class run in test_sync_ad.py, not here
    test_active_directory_mirror = None
    test_incremental_runs_by_usn = None
    test_flavor_detected_from_the_rootdse = None

    def received(self, c):
        return self.status(c)["entries_received"]

    def usn(self, ldap, dn, usn, change=""):
        ldap.modify("dn: %s\nchangetype: modify\n%sreplace: uSNChanged\nuSNChanged: %d\n"
                    % (dn, change, usn))

    def test_range_failure_in_incremental_run(self):
        ldap, proxy, srv, c = self.start_ad(dse=rootdse(3000))
        # groups keep objectSid as origin_sid
        g = self.assertOk(c.call("group.get", name="domain_users"))["group"]
        self.assertEqual(g["origin_sid"], "S-1-5-21-1-2-3-501")
        u = self.run_once(c)
        self.assertEqual(u["entries_received"], FULL)  # incremental from here on
        big = "CN=Big Group,ou=groups," + SUFFIX
        self.usn(ldap, big, 5001, "delete: member\nmember: %s\n-\n" % udn(7))
        proxy.rootdse.update(rootdse(5001))
        proxy.fail_ranges = True
        u = self.run_once(c)
        self.assertEqual(u["entries_received"], FULL + 1)  # incremental: the group only
        self.assertIn("group 'big_group' not updated", u["last_error"])
        self.assertEqual(len(self.members(c, "big_group")["users"]), BIG)  # previous members
        # the next incremental run reads the group again
        proxy.fail_ranges = False
        u = self.run_once(c)
        self.assertEqual(u["entries_received"], FULL + 2)
        self.assertEqual(len(self.members(c, "big_group")["users"]), BIG - 1)
        self.assertIsNone(u["last_error"])
        u = self.run_once(c)
        self.assertEqual(u["entries_received"], FULL + 2)  # and then the mark moves on
        # the Show Deleted search is paged, like the main searches
        ldap.modrdn(udn(9), "CN=User 0009 DEL", "CN=Deleted Objects," + SUFFIX)
        self.usn(ldap, "CN=User 0009 DEL,CN=Deleted Objects," + SUFFIX, 5002,
                 "replace: isDeleted\nisDeleted: TRUE\n-\ndelete: objectCategory\n-\n")
        proxy.rootdse.update(rootdse(5002))
        paged = proxy.show_deleted_paged
        self.run_once(c)
        self.assertGreater(proxy.show_deleted_paged, paged)
        self.assertEqual(proxy.show_deleted_paged, proxy.show_deleted_requests)
        self.assertEqual(self.user(c, "aduser0009")["upstream_state"], ["deleted"])

    def test_expiry_passing_between_runs(self):
        ldap, proxy, srv, c = self.start_ad(dse=rootdse(3000))
        tok = c.login("aduser0010", "pw-10")
        exp = int(time.time()) + 8  # the next run must read it before it passes
        self.usn(ldap, udn(10), 5001, "replace: accountExpires\naccountExpires: %d\n-\n"
                 % ad.filetime(exp))
        proxy.rootdse.update(rootdse(5001))
        u = self.run_once(c)
        self.assertEqual(u["entries_received"], FULL + 1)
        s = self.user(c, "aduser0010")
        self.assertEqual((s["state"], s["upstream_state"]), ("active", []))
        self.assertEqual(s["upstream_expires"], exp)
        self.assertOk(c.call("whoami", token=tok))
        time.sleep(max(0, exp + 1 - time.time()))
        # nothing changed upstream: an incremental run that reads nothing
        u = self.run_once(c)
        self.assertEqual(u["entries_received"], FULL + 1)
        s = self.user(c, "aduser0010")
        self.assertEqual((s["state"], s["upstream_state"]), ("disabled", ["expired"]))
        self.assertError(c.call("whoami", token=tok), "invalid_token")
        self.assertError(c.call("auth", user="aduser0010", password="pw-10"),
                         ("account_disabled", "invalid_credentials"))

    def test_one_mark_per_dc_and_restores(self):
        ldap, proxy, srv, c = self.start_ad(dse=rootdse(3000, dc=1))
        n = FULL
        self.assertEqual(self.received(c), n)
        self.assertEqual(self.run_once(c)["entries_received"], n)  # DC1 incremental
        proxy.rootdse.update(rootdse(7000, dc=2))
        n += FULL
        self.assertEqual(self.run_once(c)["entries_received"], n)  # DC2: no mark yet
        proxy.rootdse.update(rootdse(3000, dc=1))
        self.assertEqual(self.run_once(c)["entries_received"], n)  # DC1's mark kept
        proxy.rootdse.update(rootdse(7000, dc=2))
        self.assertEqual(self.run_once(c)["entries_received"], n)  # DC2's too
        # a restored database: the same DC (dsServiceName), a new invocationId
        ldap.modify("dn: %s\nchangetype: modify\nreplace: invocationId\ninvocationId:: %s\n"
                    % (ntds(1), b64(guid_bytes(888001))))
        proxy.rootdse.update(rootdse(3000, dc=1))
        n += FULL
        self.assertEqual(self.run_once(c)["entries_received"], n)
        self.assertIn("restored database", srv.stderr_text())
        self.assertEqual(self.run_once(c)["entries_received"], n)  # its new mark
        # a USN gone back on that DC
        proxy.rootdse.update(rootdse(2500, dc=1))
        n += FULL
        self.assertEqual(self.run_once(c)["entries_received"], n)
        # and DC2 kept its mark through all that
        proxy.rootdse.update(rootdse(7000, dc=2))
        u = self.run_once(c)
        self.assertEqual(u["entries_received"], n)
        self.assertEqual((u["users"], u["tombstones"]), (BIG, 0))

    def test_raw_guid_keys_of_older_versions_keep_their_ids(self):
        ldap = slapd.Slapd(ldif=ad.fixture(), schemas=[ad.SCHEMA])
        self.addCleanup(ldap.close)
        proxy = ad.ldapproxy.LdapProxy("127.0.0.1", ldap.port)
        self.addCleanup(proxy.close)
        proxy.raw_guids = True  # keys as versions before AD's form stored them
        cfg = dict(ad.AD, uri=proxy.uri, bind_dn=slapd.ADMIN_DN,
                   bind_password_file=ldap.pwfile)
        srv = self.start_server(config={"server": {"log_level": "info"}, "upstream:ad": cfg})
        c = self.client(srv)
        self.wait_runs(c, 1)
        raw = self.user(c, "aduser0001")["origin_key"]
        self.assertEqual(raw, str(uuid.UUID(bytes=guid_bytes(1))))
        sample = ["aduser%04d" % i for i in range(1, BIG + 1, 37)]
        before = {x: self.user(c, x)["id"] for x in sample}
        gbefore = {x["name"]: x["id"] for x in
                   self.assertOk(c.call("group.list", limit=100))["groups"]}
        tok = c.login("aduser0001", "pw-1")
        c.close()
        srv.stop()
        proxy.raw_guids = False
        srv.start()
        c = self.client(srv)
        u = self.wait_runs(c, 1)
        self.assertNotEqual(u["state"], "halted", u["last_error"])
        self.assertEqual((u["users"], u["groups"], u["tombstones"]), (BIG, 3, 0))
        self.assertEqual(u["last_run"]["added"], 0)
        self.assertEqual(self.user(c, "aduser0001")["origin_key"], ad.guid_text(1))
        after = {x: self.user(c, x)["id"] for x in sample}
        gafter = {x["name"]: x["id"] for x in
                  self.assertOk(c.call("group.list", limit=100))["groups"]}
        self.assertEqual((after, gafter), (before, gbefore))
        self.assertOk(c.call("whoami", token=tok))
        self.assertEqual(len(self.members(c, "big_group")["users"]), BIG)
        self.assertIn("1603 entries kept their ids", srv.stderr_text())

    def test_full_interval_and_admin_state_apart_from_ad_flags(self):
        ldap, proxy, srv, c = self.start_ad(dse=rootdse(3000), full_interval=6)
        # an administrator's lock survives AD's 512 -> 514 -> 512
        self.assertOk(c.call("user.set", name="aduser0001", state="locked"))
        self.usn(ldap, udn(1), 5001, "replace: userAccountControl\nuserAccountControl: 514\n-\n")
        proxy.rootdse.update(rootdse(5001))
        self.run_once(c)
        s = self.user(c, "aduser0001")
        self.assertEqual((s["state"], s["admin_state"], s["upstream_state"]),
                         ("locked", "locked", ["disabled"]))
        self.usn(ldap, udn(1), 5002, "replace: userAccountControl\nuserAccountControl: 512\n-\n")
        proxy.rootdse.update(rootdse(5002))
        self.run_once(c)
        s = self.user(c, "aduser0001")
        self.assertEqual((s["state"], s["admin_state"], s["upstream_state"]),
                         ("locked", "locked", []))
        # and an administrator's "active" does not open an AD-disabled account
        self.assertOk(c.call("user.set", name="aduser0002", state="active"))
        self.run_once(c)
        s = self.user(c, "aduser0002")
        self.assertEqual((s["state"], s["admin_state"], s["upstream_state"]),
                         ("disabled", "active", ["disabled"]))
        # full_interval: an entry leaves the filter with no uSNChanged change
        # (nothing an incremental run can see); the periodic full run finds it
        u = self.assertOk(c.call("sync.run", upstream="ad", full=True))
        u = self.wait_runs(c, self.status(c)["runs"] + 1)
        t_full = time.time()
        n = u["entries_received"]
        ldap.modify("dn: %s\nchangetype: modify\nreplace: objectCategory\n"
                    "objectCategory: computer\n" % udn(11))
        u = self.run_once(c)
        if time.time() - t_full < 5:
            self.assertEqual(u["entries_received"], n)  # incremental
            self.assertEqual(self.user(c, "aduser0011")["upstream_state"], [])
        time.sleep(max(0, t_full + 7 - time.time()))
        u = self.run_once(c)
        self.assertEqual(u["entries_received"] - n, FULL - 1)  # a full run
        self.assertEqual(self.user(c, "aduser0011")["upstream_state"], ["deleted"])

    def test_empty_space_replacement_keeps_the_skip(self):
        ldap, proxy, srv, c = self.start_ad(space_replacement=None)
        u = self.status(c)
        # "Domain Users" and "Big Group" skipped and counted; "Nested" kept
        self.assertEqual(u["groups"], 1)
        self.assertGreaterEqual(u["last_run"]["skipped"], 2)
        self.assertIn("'domain users' is not a valid group name", srv.stderr_text())
        self.assertError(c.call("group.get", name="domain_users"), "not_found")
        self.assertError(c.call("group.get", name="domain users"), ("not_found", "invalid"))
        self.assertEqual(self.members(c, "nested")["groups"], [])


if __name__ == "__main__":
    ghtest.main()
