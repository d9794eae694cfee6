#!/usr/bin/env python3
"""Active Directory and 389-ds federation, against stand-ins that behave like
them where it matters.

Windows' ranged answers cannot come from Samba (it returns every value
unless asked for a range), so slapd carries the AD and 389-ds attributes (tests/sync/ad-test.schema: objectGUID, objectSid,
userAccountControl, accountExpires, sAMAccountName, objectCategory,
nsAccountLock) and tests/sync/ldapproxy.py sits in front of it to answer like
Windows: members of a group over 1,500 come in ranges, and the RootDSE says
it is AD. The tests check:
  - a 1,600-member group comes complete through ranged retrieval, and a
    failed range leaves the group as it was (never a partial list);
  - objectGUID in AD's string form, objectSid kept as origin_sid;
  - ACCOUNTDISABLE and accountExpires make a user disabled, a change
    512 -> 514 arrives at the next run, and back;
  - computer accounts stay out with the documented filter;
  - "Domain Users" becomes domain_users with space_replacement, nesting
    through it works, a mapping that collides is refused and counted;
  - ForeignSecurityPrincipal members are counted, skipped, and leave
    last_error clear;
  - flavor detected from the RootDSE;
  - 389-ds: nsAccountLock makes a user disabled; a mirror keeps its ids
    when switched between syncrepl and search-poll, both ways (on slapd, and
    on a real 389 Directory Server made by tests/sync/ds389.py when running
    as root with Debian's 389-ds-base and python3-lib389: there the sync
    UUIDs differ from entryUUIDs; a deletion in persist names the right user);
  - a real Samba AD DC (tests/sync/samba_dc.py, root only): default AD
    content, Guest/krbtgt, GUID and SID as Samba prints them, binds,
    incremental runs.
Run by hand with

    GH_BUILDDIR=build GH_SRCDIR=. python3 tests/sync/test_sync_ad.py
"""
import base64
import io
import os
import struct
import sys
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_sync  # noqa: E402  (sets up sys.path for ghtest)
import ghtest  # noqa: E402
import gen_ldif  # noqa: E402
import slapd  # noqa: E402

try:
    import ldapproxy  # noqa: E402
    HAVE_PROXY = True
except ImportError:
    HAVE_PROXY = False

SUFFIX = slapd.SUFFIX
SCHEMA = os.path.join(HERE, "ad-test.schema")
BIG = 1600
FSP = "CN=S-1-5-11,CN=ForeignSecurityPrincipals," + SUFFIX


def guid_bytes(i):
    return uuid.UUID(int=(0x1c0ab7907e170546 << 64) | i).bytes


def guid_text(i):
    """AD's text form: the first three fields are little-endian."""
    return str(uuid.UUID(bytes_le=guid_bytes(i)))


def sid_bytes(rid):
    subs = [21, 1, 2, 3, rid]
    return struct.pack("<BB", 1, len(subs)) + (5).to_bytes(6, "big") + \
        b"".join(struct.pack("<I", s) for s in subs)


def b64(b):
    return base64.b64encode(b).decode()


def sam(i):
    return "ADUser%04d" % i


def udn(i):
    return "CN=User %04d,ou=people,%s" % (i, SUFFIX)


def user_ldif(i, uac=512, expires=None, computer=False, lockout=None):
    name = "WS%02d$" % i if computer else sam(i)
    lines = ["dn: " + (("CN=WS%02d,ou=people,%s" % (i, SUFFIX)) if computer else udn(i)),
             "objectClass: inetOrgPerson", "objectClass: user",
             "cn: " + (name if computer else "User %04d" % i), "sn: User",
             "sAMAccountName: " + name,
             "objectCategory: " + ("computer" if computer else "person"),
             "objectGUID:: " + b64(guid_bytes(i)),
             "objectSid:: " + b64(sid_bytes(1000 + i)),
             "userAccountControl: %d" % (4096 if computer else uac),
             "displayName: User %d" % i, "mail: u%d@example.com" % i,
             "userPassword: pw-%d" % i, "uSNChanged: %d" % (1000 + i)]
    if expires is not None:
        lines.append("accountExpires: %d" % expires)
    if lockout is not None:
        lines.append("lockoutTime: %d" % lockout)
    return "\n".join(lines) + "\n"


def group_ldif(j, name, members):
    return "\n".join(["dn: CN=%s,ou=groups,%s" % (name, SUFFIX),
                      "objectClass: groupOfNames", "objectClass: group",
                      "cn: " + name, "sAMAccountName: " + name,
                      "objectCategory: group",
                      "objectGUID:: " + b64(guid_bytes(100000 + j)),
                      "objectSid:: " + b64(sid_bytes(500 + j)),
                      "uSNChanged: %d" % (900 + j)]
                     + ["member: " + m for m in members]) + "\n"


def filetime(unix):
    return (unix + 11644473600) * 10000000


def ad_fixture(users=BIG, big=BIG, extra_groups=0):
    """users ADUserNNNN, "Domain Users" (20 users and an FSP), "Big Group"
    (big members), "Nested", extra_groups more groups of 20 users each."""
    with open(gen_ldif.BASE_LDIF) as f:
        # the domain's lockout duration (30 min) lives on its root
        parts = [f.read().strip().replace(
            "objectClass: organization\n", "objectClass: organization\nobjectClass: ghAdDomain\n"
            "lockoutDuration: -18000000000\n", 1) + "\n"]
    now = int(time.time())
    for i in range(1, users + 1):
        kw = {}
        if i == 2:
            kw["uac"] = 514  # ACCOUNTDISABLE
        elif i == 3:
            kw["expires"] = filetime(now - 86400)
        elif i == 4:
            kw["expires"] = filetime(now + 86400 * 365)
        elif i == 5:
            kw["expires"] = 9223372036854775807  # never
        elif i == 6:
            kw["lockout"] = filetime(now - 60)  # locked out a minute ago
        elif i == 8:
            kw["lockout"] = filetime(now - 7200)  # past the 30 minutes
        parts.append(user_ldif(i, **kw))
    parts.append(user_ldif(1, computer=True))
    parts.append(group_ldif(1, "Domain Users", [udn(i) for i in range(1, 21)] + [FSP]))
    parts.append(group_ldif(2, "Big Group", [udn(i) for i in range(1, big + 1)]))
    parts.append(group_ldif(3, "Nested", ["CN=Domain Users,ou=groups," + SUFFIX]))
    for j in range(extra_groups):
        parts.append(group_ldif(10 + j, "Team %d" % j,
                                [udn(1 + (j * 20 + k) % users) for k in range(20)]))
    # where AD keeps tombstones, and two domain controllers' NTDS Settings
    parts.append("dn: CN=Deleted Objects,%s\nobjectClass: organizationalRole\n"
                 "cn: Deleted Objects\n" % SUFFIX)
    for dc in (1, 2):
        parts.append("dn: CN=DC%d,%s\nobjectClass: organizationalRole\ncn: DC%d\n"
                     % (dc, SUFFIX, dc))
        parts.append("dn: CN=NTDS Settings,CN=DC%d,%s\nobjectClass: organizationalRole\n"
                     "objectClass: nTDSDSA\ncn: NTDS Settings\ninvocationId:: %s\n"
                     % (dc, SUFFIX, b64(guid_bytes(777000 + dc))))
    return "\n".join(parts)


def ntds(dc):
    return "CN=NTDS Settings,CN=DC%d,%s" % (dc, SUFFIX)


def rootdse(usn, dc=1):
    return {"highestCommittedUSN": str(usn).encode(), "dsServiceName": ntds(dc).encode(),
            "defaultNamingContext": SUFFIX.encode()}


_fixture = []


def fixture():
    if not _fixture:
        _fixture.append(ad_fixture())
    return _fixture[0]


AD = {"flavor": "ad", "space_replacement": "_", "base_dn": SUFFIX, "interval": 60,
      "timeout": 10, "bind_timeout": 3, "uid_number_attr": "", "gid_number_attr": "",
      "page_size": 500}


@unittest.skipUnless(slapd.available() and HAVE_PROXY, "slapd, ldap-utils or pyasn1 missing")
class ActiveDirectory(test_sync.SyncTest):
    mode = "search-poll"

    def start_ad(self, dse=None, **kw):
        ldap = slapd.Slapd(ldif=fixture(), schemas=[SCHEMA])
        self.addCleanup(ldap.close)
        proxy = ldapproxy.LdapProxy("127.0.0.1", ldap.port)
        if dse:
            proxy.rootdse.update(dse)
        self.addCleanup(proxy.close)
        cfg = dict(AD, uri=proxy.uri, bind_dn=slapd.ADMIN_DN, bind_password_file=ldap.pwfile)
        cfg.update(kw)
        cfg = {k: v for k, v in cfg.items() if v is not None}
        srv = self.start_server(config={"server": {"log_level": "info"}, "upstream:ad": cfg})
        c = self.client(srv)
        self.wait_runs(c, 1)
        return ldap, proxy, srv, c

    def run_once(self, c):
        n = self.status(c)["runs"]
        self.assertOk(c.call("sync.run", upstream="ad"))
        return self.wait_runs(c, n + 1, timeout=30)

    def members(self, c, name):
        return self.assertOk(c.call("group.get", name=name))["group"]["members"]

    def test_active_directory_mirror(self):
        ldap, proxy, srv, c = self.start_ad()
        u = self.status(c)
        self.assertEqual(u["users"], BIG)  # the computer account stays out
        self.assertEqual(u["groups"], 3)
        self.assertEqual(u["last_run"]["foreign"], 1)
        self.assertEqual(u["last_run"]["skipped"], 0)
        self.assertIsNone(u["last_error"])  # FSPs are not an error
        self.assertIsNone(self.user(c, "ws01$"))
        # keys and names as AD tools show them
        x = self.user(c, "aduser0001")
        self.assertEqual(x["origin_key"], guid_text(1))
        self.assertNotEqual(guid_text(1), str(uuid.UUID(bytes=guid_bytes(1))))
        self.assertEqual(x["origin_sid"], "S-1-5-21-1-2-3-1001")
        self.assertEqual(x["origin_dn"].lower(), udn(1).lower())
        # account state owned by AD
        states = {i: self.user(c, sam(i).lower()) for i in (1, 2, 3, 4, 5)}
        self.assertEqual({i: (s["state"], s["upstream_state"]) for i, s in states.items()},
                         {1: ("active", []), 2: ("disabled", ["disabled"]),
                          3: ("disabled", ["expired"]), 4: ("active", []), 5: ("active", [])})
        # an AD lockout is shown, and left to AD's bind (it ends by time)
        self.assertEqual((self.user(c, "aduser0006")["upstream_state"],
                          self.user(c, "aduser0006")["state"]), (["locked"], "active"))
        self.assertEqual(self.user(c, "aduser0008")["upstream_state"], [])
        self.assertError(c.call("auth", user="aduser0002", password="pw-2"),
                         ("account_disabled", "invalid_credentials"))
        # ranged retrieval: 1,600 members through 0-1499 and 1500-*
        self.assertGreaterEqual(proxy.ranged_requests, 1)
        self.assertEqual(len(self.members(c, "big_group")["users"]), BIG)
        # names with spaces, and nesting through them
        self.assertEqual(len(self.members(c, "domain_users")["users"]), 20)
        self.assertEqual(self.members(c, "nested")["groups"], ["domain_users"])
        self.assertIn("nested", self.user(c, "aduser0007")["groups"])

        # 512 -> 514 upstream arrives at the next run, and back
        ldap.modify("dn: %s\nchangetype: modify\nreplace: userAccountControl\n"
                    "userAccountControl: 514\n" % udn(1))
        self.run_once(c)
        self.assertEqual(self.user(c, "aduser0001")["state"], "disabled")
        ldap.modify("dn: %s\nchangetype: modify\nreplace: userAccountControl\n"
                    "userAccountControl: 512\n" % udn(1))
        self.run_once(c)
        self.assertEqual(self.user(c, "aduser0001")["state"], "active")

        # a range that cannot be read: the group keeps its members
        ldap.modify("dn: CN=Big Group,ou=groups,%s\nchangetype: modify\ndelete: member\n"
                    "member: %s\n" % (SUFFIX, udn(7)))
        proxy.fail_ranges = True
        u = self.run_once(c)
        self.assertEqual(len(self.members(c, "big_group")["users"]), BIG)
        self.assertIn("not updated", u["last_error"])
        self.assertEqual(u["groups"], 3)  # not deleted either
        proxy.fail_ranges = False
        self.run_once(c)
        self.assertEqual(len(self.members(c, "big_group")["users"]), BIG - 1)

        # a name that maps onto one already taken: refused and counted
        ldap.add(group_ldif(4, "Domain_Users", [udn(9)]))
        u = self.run_once(c)
        self.assertEqual(u["last_run"]["skipped"], 1)
        self.assertIn("collides", u["last_error"])
        self.assertEqual(len(self.members(c, "domain_users")["users"]), 20)  # never merged

    def test_incremental_runs_by_usn(self):
        ldap, proxy, srv, c = self.start_ad(dse=rootdse(3000))
        u = self.status(c)
        self.assertEqual(u["entries_received"], BIG + 3)  # the first run is full
        # nothing changed: an incremental run reads nothing
        u = self.run_once(c)
        self.assertEqual(u["entries_received"], BIG + 3)
        self.assertGreaterEqual(proxy.show_deleted_requests, 1)
        # ten changes, one deletion as AD makes it (a tombstone in Deleted
        # Objects, objectCategory gone), one membership change
        for k in range(10):
            ldap.modify("dn: %s\nchangetype: modify\nreplace: mail\nmail: new%d@example.com\n-\n"
                        "replace: uSNChanged\nuSNChanged: %d\n" % (udn(20 + k), k, 5001 + k))
        ldap.modrdn(udn(9), "CN=User 0009 DEL", "CN=Deleted Objects," + SUFFIX)
        ldap.modify("dn: CN=User 0009 DEL,CN=Deleted Objects,%s\nchangetype: modify\n"
                    "replace: isDeleted\nisDeleted: TRUE\n-\ndelete: objectCategory\n-\n"
                    "replace: uSNChanged\nuSNChanged: 5011\n" % SUFFIX)
        ldap.modify("dn: CN=Domain Users,ou=groups,%s\nchangetype: modify\ndelete: member\n"
                    "member: %s\n-\nreplace: uSNChanged\nuSNChanged: 5012\n" % (SUFFIX, udn(3)))
        proxy.rootdse.update(rootdse(5012))
        u = self.run_once(c)
        self.assertLessEqual(u["entries_received"] - (BIG + 3), 100)
        self.assertEqual(u["entries_received"] - (BIG + 3), 11)  # ten users, one group
        self.assertEqual(self.user(c, "aduser0021")["mail"], "new1@example.com")
        self.assertEqual(self.user(c, "aduser0009")["upstream_state"], ["deleted"])
        self.assertNotIn("aduser0003", self.members(c, "domain_users")["users"])
        self.assertEqual(u["last_run"]["disabled"], 1)
        # after a restart the first run is full (primary groups are learnt
        # from it), and the stored mark is used again by the next
        c.close()
        srv.stop()
        srv.start()
        c = self.client(srv)
        u = self.wait_runs(c, 1)
        self.assertEqual(u["entries_received"], BIG - 1 + 3)
        u = self.run_once(c)
        self.assertEqual(u["entries_received"], BIG - 1 + 3)
        # another DC (or a restored database): a full run
        proxy.rootdse.update(rootdse(5012, dc=2))
        u = self.run_once(c)
        self.assertEqual(u["entries_received"], 2 * (BIG - 1 + 3))
        self.assertEqual(u["users"], BIG - 1)

    def test_flavor_detected_from_the_rootdse(self):
        ldap = slapd.Slapd(ldif=fixture(), schemas=[SCHEMA])
        self.addCleanup(ldap.close)
        proxy = ldapproxy.LdapProxy("127.0.0.1", ldap.port)
        proxy.ad_rootdse = True
        self.addCleanup(proxy.close)
        cfg = dict(AD, uri=proxy.uri, bind_dn=slapd.ADMIN_DN, bind_password_file=ldap.pwfile,
                   mode="search-poll", key_attr="objectGUID", login_attr="sAMAccountName",
                   group_name_attr="sAMAccountName", display_name_attr="displayName",
                   user_filter="(&(objectCategory=person)(objectClass=user))",
                   group_filter="(objectClass=group)")
        del cfg["flavor"]
        srv = self.start_server(config={"server": {"log_level": "info"}, "upstream:ad": cfg})
        c = self.client(srv)
        self.wait_runs(c, 1)
        self.assertEqual(self.user(c, "aduser0002")["state"], "disabled")
        self.assertEqual(self.user(c, "aduser0001")["origin_sid"], "S-1-5-21-1-2-3-1001")
        self.assertEqual(len(self.members(c, "big_group")["users"]), BIG)
        self.assertIn("Active Directory", srv.stderr_text())


@unittest.skipUnless(slapd.available(), "slapd or ldap-utils not installed")
class Ds389(test_sync.SyncTest):
    """389-ds specifics on slapd: nsAccountLock, and one key per entry in
    every mode (entryUUID)."""

    def test_nsaccountlock_and_mode_switch_keeps_ids(self):
        ldap = slapd.Slapd(ldif=test_sync.fixture(40, 2), schemas=[SCHEMA])
        self.addCleanup(ldap.close)
        ldap.modify("dn: %s\nchangetype: modify\nadd: objectClass\nobjectClass: "
                    "nsAccountLockable\n-\nadd: nsAccountLock\nnsAccountLock: TRUE\n"
                    % test_sync.udn("u00004"))
        ids = None
        srv = None
        for mode in ("syncrepl-persist", "search-poll", "syncrepl-poll", "syncrepl-persist"):
            cfg = self.upstream_cfg(ldap, mode=mode, flavor="389ds", interval=60)
            if srv is None:
                srv = self.start_server(config={"server": {"log_level": "info"},
                                                "upstream:corp": cfg})
            else:
                srv.stop()
                with open(srv.config_path, "w") as f:
                    f.write(ghtest.render_config({"server": {"log_level": "info"},
                                                  "upstream:corp": cfg}))
                srv.start()
            c = self.client(srv)
            u = self.wait_runs(c, 1)
            self.assertEqual((u["users"], u["tombstones"], u["state"] != "halted"),
                             (40, 0, True), mode)
            self.assertEqual(u["last_run"]["disabled"], 0, mode)
            r = self.assertOk(c.call("user.list", limit=1000))["users"]
            now = {x["name"]: (x["id"], x["origin_key"]) for x in r}
            if ids is not None:
                self.assertEqual(now, ids, mode)
            ids = now
            self.assertEqual(self.user(c, "u00004")["state"], "disabled", mode)
            self.assertEqual(self.user(c, "u00004")["upstream_state"], ["disabled"], mode)
            self.assertEqual(self.user(c, "u00005")["state"], "active", mode)
            c.close()


import ds389  # noqa: E402


@unittest.skipIf(ds389.available() is not None, ds389.available() or "")
class Real389(test_sync.SyncTest):
    """A real 389 Directory Server (2.3, Debian's package) made by the test:
    its sync UUIDs are nsUniqueIds, not entryUUIDs, so this is where one key
    per entry in every mode is really at stake."""

    @classmethod
    def setUpClass(cls):
        # made before the test's own time limit starts (10-40 s, with load)
        super().setUpClass()
        cls.ds = ds389.Ds389(slapd.free_port())

    @classmethod
    def tearDownClass(cls):
        cls.ds.close()
        super().tearDownClass()

    def test_389ds_keys_and_nsaccountlock(self):
        ds = self.ds
        self.assertEqual(ds.listen_addresses(), {"127.0.0.1"})  # loopback only
        buf = io.StringIO()
        gen_ldif.generate(buf, 30, 2)
        ds.add(buf.getvalue())
        ds.modify("dn: %s\nchangetype: modify\nadd: nsAccountLock\nnsAccountLock: true\n"
                  % test_sync.udn("u00004"))
        ids = srv = None
        # a filter long enough that 389's cookie (which carries it) passes 159 bytes
        longf = "(&(objectClass=posixAccount)%s)" % "".join(
            "(!(uid=no-such-login-%02d))" % k for k in range(4))
        # first as a generic server: the syncrepl keys are then 389's sync
        # UUIDs, as versions before one key per entry stored them
        for flavor, mode in (("generic", "syncrepl-persist"), (None, "syncrepl-persist"),
                             (None, "search-poll"), (None, "syncrepl-poll"),
                             (None, "syncrepl-persist")):
            # flavor unset: 389-ds is recognised from its RootDSE
            cfg = {"uri": ds.uri, "bind_dn": ds389.ADMIN_DN, "bind_password_file": ds.pwfile,
                   "base_dn": SUFFIX, "mode": mode, "interval": 60, "timeout": 10,
                   "user_filter": longf}
            if flavor:
                cfg["flavor"] = flavor
            conf = {"server": {"log_level": "info"}, "upstream:corp": cfg}
            if srv is None:
                srv = self.start_server(config=conf)
            else:
                srv.stop()
                with open(srv.config_path, "w") as f:
                    f.write(ghtest.render_config(conf))
                srv.start()
            c = self.client(srv)
            u = self.wait_runs(c, 1)
            self.assertEqual((u["users"], u["tombstones"], u["state"] != "halted"),
                             (30, 0, True), (mode, u))
            r = self.assertOk(c.call("user.list", limit=1000))["users"]
            now = {x["name"]: x["id"] for x in r}
            keys = {x["name"]: x["origin_key"] for x in r}
            if ids is not None:
                self.assertEqual(now, ids, mode)
            ids = now
            if flavor == "generic":
                generic_keys = keys
                c.close()
                continue
            # the sync UUIDs of the generic run became entryUUIDs in place
            self.assertNotEqual(keys, generic_keys)
            self.assertEqual(self.user(c, "u00004")["upstream_state"], ["disabled"], mode)
            self.assertEqual(self.user(c, "u00005")["state"], "active", mode)
            if mode == "syncrepl-persist":
                # the cookie shown whole, never cut at 159 bytes
                cookie = u["cookie"].split(" groups:")[0]
                self.assertTrue(cookie.startswith("users:"), cookie)
                self.assertGreater(len(cookie), 159 + len("users:"), cookie)
                self.assertIn(longf, cookie)
                self.assertNotIn("blake2b", cookie)
            c.close()
        self.assertIn("389-ds sync UUIDs", srv.stderr_text())
        # persist again: a deletion arrives by sync UUID, and must name the right user
        c = self.client(srv)
        ds.modify("dn: %s\nchangetype: delete\n" % test_sync.udn("u00007"))
        self.wait_for(lambda: self.user(c, "u00007")["upstream_state"] == ["deleted"], 5,
                      "deletion through the sync UUID")
        self.assertIn("389 Directory Server", srv.stderr_text())


import samba_dc  # noqa: E402


@unittest.skipIf(samba_dc.available() is not None, samba_dc.available() or "")
class RealSambaAD(test_sync.SyncTest):
    """A real Samba 4.17 AD DC provisioned by the test (samba_dc.py)."""

    @classmethod
    def setUpClass(cls):
        # provisioned before the test's own time limit starts (15-40 s)
        super().setUpClass()
        cls.dc = samba_dc.SambaDC()

    @classmethod
    def tearDownClass(cls):
        cls.dc.close()
        super().tearDownClass()

    def test_samba_ad_dc(self):
        dc = self.dc
        dc.populate({"alice": "Alice-Passw0rd!", "bob": "Bob-Passw0rd!"},
                    {"Team One": ["alice", "bob"], "All Teams": ["Team One"]})
        cfg = {"uri": dc.uri, "bind_dn": dc.admin_dn, "bind_password_file": dc.pwfile,
               "base_dn": dc.base, "flavor": "ad", "space_replacement": "_",
               "uid_number_attr": "", "gid_number_attr": "", "interval": 60}
        srv = self.start_server(config={"server": {"log_level": "info"}, "upstream:ad": cfg})
        c = self.client(srv)
        u = self.wait_runs(c, 1, timeout=60)
        names = {x["name"] for x in self.assertOk(c.call("user.list", limit=1000))["users"]}
        # people only: the DC's computer account (dc1$) stays out
        self.assertEqual(names, {"administrator", "guest", "krbtgt", "dns-dc1", "alice", "bob"})
        self.assertGreaterEqual(u["last_run"]["foreign"], 1)  # built-in groups' FSPs
        # default AD content, 31 groups with spaces included: a clean run
        self.assertEqual((u["last_error"], u["last_run"]["skipped"]), (None, 0))
        self.assertGreaterEqual(u["groups"], 35)
        # Guest and krbtgt are disabled in AD
        for name in ("guest", "krbtgt"):
            self.assertEqual(self.user(c, name)["upstream_state"], ["disabled"], name)
        # keys as Samba's own tools print them
        shown = dc.show("user", "alice")
        alice = self.user(c, "alice")
        self.assertEqual(alice["origin_key"], shown["objectGUID"].lower())
        self.assertEqual(alice["origin_sid"], shown["objectSid"])
        # names with spaces, and nesting through them
        g = self.assertOk(c.call("group.get", name="team_one"))["group"]
        self.assertEqual(set(g["members"]["users"]), {"alice", "bob"})
        self.assertIn("all_teams", alice["groups"])
        g = self.assertOk(c.call("group.get", name="domain_admins"))["group"]
        self.assertIn("administrator", g["members"]["users"])
        # groups keep their objectSid too (Domain Admins is ...-512)
        self.assertEqual(g["origin_sid"], dc.show("group", "Domain Admins")["objectSid"])
        self.assertTrue(g["origin_sid"].endswith("-512"), g["origin_sid"])
        # primary groups (primaryGroupID: not in the member attribute)
        g = self.assertOk(c.call("group.get", name="domain_users"))["group"]
        self.assertEqual(set(g["members"]["users"]),
                         {"administrator", "krbtgt", "dns-dc1", "alice", "bob"})
        g = self.assertOk(c.call("group.get", name="domain_guests"))["group"]
        self.assertEqual(g["members"]["users"], ["guest"])
        # logins bind to the DC
        self.assertTrue(c.login("alice", "Alice-Passw0rd!"))
        self.assertError(c.call("auth", user="alice", password="wrong"), "invalid_credentials")
        # incremental runs: a disable, and a deletion through Show Deleted
        before = u["entries_received"]
        dc.tool("user", "disable", "alice")
        dc.tool("user", "delete", "bob")
        n = u["runs"]
        self.assertOk(c.call("sync.run", upstream="ad"))
        u = self.wait_runs(c, n + 1)
        self.assertLessEqual(u["entries_received"] - before, 10)
        self.assertEqual(self.user(c, "alice")["upstream_state"], ["disabled"])
        self.assertError(c.call("auth", user="alice", password="Alice-Passw0rd!"),
                         ("account_disabled", "invalid_credentials"))
        self.assertEqual(self.user(c, "bob")["upstream_state"], ["deleted"])
        self.assertEqual(self.user(c, "bob")["state"], "disabled")
        dc.tool("user", "enable", "alice")
        dc.populate({"carol": "Carol-Passw0rd!"}, {})
        self.assertOk(c.call("sync.run", upstream="ad"))
        self.wait_runs(c, n + 2)
        self.assertEqual(self.user(c, "alice")["state"], "active")
        # a new user joins its primary group in an incremental run
        self.assertIn("domain_users", self.user(c, "carol")["groups"])


if __name__ == "__main__":
    ghtest.main()
