#!/usr/bin/env python3
"""Account state of mirrored users: what the local administrator set and what
the upstream says are kept apart, so that neither overwrites the other.

`state` is the effective state (what auth and checks obey); `admin_state` is
the administrator's (user.set); `upstream_state` lists what the upstream says
(deleted, disabled, expired, locked). A user the administrator locked stays
locked when the upstream deletes it and brings it back, whether the same
entry returns (it left the filter and came back) or the login is re-created
under a new entryUUID. Run by hand with

    GH_BUILDDIR=build GH_SRCDIR=. python3 tests/sync/test_sync_state.py
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_sync  # noqa: E402  (sets up sys.path for ghtest)
import ghtest  # noqa: E402
import gen_ldif  # noqa: E402
from test_sync import udn  # noqa: E402


class AdminState(test_sync.SyncTest):
    mode = "syncrepl-persist"

    def describe(self, ldap, login, value):
        if value is None:
            ldap.modify("dn: %s\nchangetype: modify\ndelete: description\n" % udn(login))
        else:
            ldap.modify("dn: %s\nchangetype: modify\nreplace: description\ndescription: %s\n"
                        % (udn(login), value))

    def test_admin_state_survives_upstream_delete_and_return(self):
        ldap = self.start_upstream(users=30, groups=1)
        srv, c = self.start_gh(
            ldap, user_filter="(&(objectClass=posixAccount)(!(description=gone)))")
        self.assertOk(c.call("user.set", name="u00005", state="locked"))
        self.assertOk(c.call("user.set", name="u00006", state="disabled"))
        u = self.user(c, "u00005")
        self.assertEqual((u["state"], u["admin_state"], u["upstream_state"]),
                         ("locked", "locked", []))

        # the same entries leave the filter (a deletion for the mirror) ...
        for login in ("u00005", "u00006", "u00007"):
            self.describe(ldap, login, "gone")
        self.wait_for(lambda: self.user(c, "u00007")["state"] == "disabled", 3, "tombstoned")
        u = self.user(c, "u00005")
        self.assertEqual((u["state"], u["admin_state"], u["upstream_state"]),
                         ("locked", "locked", ["deleted"]))
        self.assertEqual(self.user(c, "u00007")["upstream_state"], ["deleted"])
        # an administrator may clear a lock while the user is gone upstream: the
        # user stays disabled until the upstream brings it back
        self.assertOk(c.call("user.set", name="u00006", state="active"))
        u = self.user(c, "u00006")
        self.assertEqual((u["state"], u["admin_state"]), ("disabled", "active"))
        self.assertOk(c.call("user.set", name="u00006", state="disabled"))

        # ... and come back: the administrator's state is what it was
        for login in ("u00005", "u00006", "u00007"):
            self.describe(ldap, login, None)
        self.wait_for(lambda: self.user(c, "u00007")["state"] == "active", 3, "returned")
        self.assertEqual(self.user(c, "u00005")["state"], "locked")
        self.assertEqual(self.user(c, "u00006")["state"], "disabled")
        self.assertEqual(self.user(c, "u00005")["upstream_state"], [])
        self.assertError(c.call("auth", user="u00005", password=gen_ldif.password(5)),
                         "account_locked")
        self.assertError(c.call("auth", user="u00006", password=gen_ldif.password(6)),
                         "account_disabled")
        self.assertTrue(c.login("u00007", gen_ldif.password(7)))

    def test_admin_lock_survives_recreation_under_a_new_key(self):
        ldap = self.start_upstream(users=30, groups=1)
        srv, c = self.start_gh(ldap)
        self.assertOk(c.call("user.set", name="u00008", state="locked"))
        before = self.user(c, "u00008")
        entry = ldap.search(udn("u00008"), attrs=["*"])
        ldap.delete(udn("u00008"))
        self.wait_for(lambda: self.user(c, "u00008")["upstream_state"] == ["deleted"], 3,
                      "tombstoned")
        ldap.add(entry)  # same DN and login, a new entryUUID
        self.wait_for(lambda: self.user(c, "u00008")["origin_key"] != before["origin_key"], 3,
                      "re-created")
        u = self.user(c, "u00008")
        self.assertNotEqual(u["id"], before["id"])  # a new identity (no bindings inherited)
        self.assertEqual((u["state"], u["admin_state"], u["upstream_state"]),
                         ("locked", "locked", []))
        self.assertError(c.call("auth", user="u00008", password=gen_ldif.password(8)),
                         "account_locked")


if __name__ == "__main__":
    ghtest.main()
