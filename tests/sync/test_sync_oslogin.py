#!/usr/bin/env python3
"""OS login with users mirrored from a real OpenLDAP slapd (issue 12).

The one thing to know: a mirrored user's password lives upstream, so
passwd.change refuses it (permission_denied, "managed by upstream") and
pam_gatehouse's chauthtok answers PAM_AUTHTOK_ERR with that message, while
its POSIX fields come from the upstream (home_attr = homeDirectory) through
user.get and nss.getpwnam. PAM runs through pamtester as in
tests/integration/test_os_login.py (a mount namespace as root, cwrap's
libpam_wrapper otherwise).
"""
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("GH_SRCDIR", os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRCDIR, "tests", "integration"))
sys.path.insert(0, HERE)

import ghtest  # noqa: E402
import gen_ldif  # noqa: E402
import test_os_login as tol  # noqa: E402
from test_sync import SyncTest  # noqa: E402


class MirroredOsLogin(SyncTest):
    mode = "syncrepl-poll"

    def test_posix_fields_and_password_managed_upstream(self):
        ldap = self.start_upstream(users=20, groups=2)
        srv = self.start_server(config={"server": {"log_level": "info"},
                                        "upstream:corp": self.upstream_cfg(ldap, interval=60)},
                                world_access=True)
        c = self.client(srv)
        self.wait_runs(c, 1)
        pw = gen_ldif.password(3)
        self.assertEqual(self.user(c, "u00003")["home"], "/home/u00003")  # homeDirectory
        p = self.assertOk(c.call("nss.getpwnam", name="u00003"))["passwd"]
        self.assertEqual((p["uid"], p["home"]), (20003, "/home/u00003"))
        r = self.assertError(c.call("passwd.change", user="u00003", old_password=pw,
                                    new_password="a-new-passphrase-1"), "permission_denied")
        self.assertIn("managed by upstream", r["error"]["message"])
        # through PAM: PAM_AUTHTOK_ERR, with the server's message shown
        cwrap = not ghtest.is_root()
        if shutil.which("pamtester") is None or not os.path.exists(tol.pam_module()):
            self.skipTest("pamtester or pam_gatehouse.so missing")
        if cwrap and not (tol.cwrap_lib("libnss_wrapper.so") and tol.cwrap_lib("libpam_wrapper.so")):
            self.skipTest("cwrap packages not installed")
        tmp = tempfile.mkdtemp(prefix="gh-os-")
        self.addCleanup(shutil.rmtree, tmp, True)
        env = tol.OsEnv(srv, tmp, cwrap)
        rc, out = env.pam("u00003", "chauthtok",
                          input=pw + "\na-new-passphrase-1\na-new-passphrase-1\n")
        self.assertNotEqual(rc, 0, out)
        self.assertIn(tol.PAM_MSG["authtok"], out)
        self.assertIn("managed by upstream", out)
        # the upstream password still logs in, through PAM too
        rc, out = env.pam("u00003", "authenticate", input=pw + "\n")
        self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    ghtest.main()
