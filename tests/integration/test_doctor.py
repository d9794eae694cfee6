#!/usr/bin/env python3
"""`gatehouse doctor`: a healthy server passes; each broken piece is named
with its fix (configuration refused with file:line, state directory
readable by others or owned by another user than the server, the map
nearly full, an unreachable upstream, a cheap Argon2 cost, the socket not
reachable); a caller that is not an admin is told so and still gets the
checks it may make; NSS and PAM (in a private mount namespace with a test
nsswitch.conf and /etc/pam.d): the modules installed where glibc and
Linux-PAM look, configured, and using this server's sockets. --json gives
the same findings."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "sync"))
import ghtest  # noqa: E402
import slapd  # noqa: E402
from test_metrics import LDIF  # noqa: E402  (two users and a group)


class Doctor(ghtest.TestCase):

    def server(self, extra=None, **kw):
        d = tempfile.mkdtemp(prefix="gh-doc-", dir="/tmp")
        cfg = {"state_dir": os.path.join(d, "state"), "socket": os.path.join(d, "gh.sock")}
        cfg.update(extra or {})
        return self.start_server(tmpdir=d, config=cfg, **kw)

    def doctor(self, srv, *args, uid=None, env=None, socket=None):
        prog = [ghtest.cli_path()]
        e = dict(os.environ)
        e.pop("GATEHOUSE_TOKEN", None)
        if uid is not None:
            prog = ghtest.setpriv_prefix(uid) + ghtest.foreign_program(ghtest.cli_path())
            # the server's parser, from a copy nobody can run
            e["GATEHOUSED"] = ghtest.foreign_program(ghtest.gatehoused_path())[-1]
        if env:
            e.update(env)
        sock = socket or srv.socket_path
        cp = subprocess.run(prog + ["--socket", sock, "--json", "doctor"] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                            timeout=ghtest.scaled(60))
        try:
            out = json.loads(cp.stdout.decode())
        except ValueError:
            self.fail("doctor printed no JSON (rc %d): %s %s" % (cp.returncode, cp.stdout,
                                                                 cp.stderr))
        return cp.returncode, out

    def find(self, out, check):
        return [c for c in out["checks"] if c["check"] == check]

    def status(self, out, check):
        found = self.find(out, check)
        self.assertTrue(found, "no %s check in %s" % (check, json.dumps(out, indent=1)))
        return found[0]["status"]

    def test_healthy_server(self):
        # a cost well inside the 10 ms - 1 s band on any machine CI runs on
        srv = self.server({"argon2_opslimit": "3", "argon2_memlimit": "48M"}, fast_argon2=False)
        rc, out = self.doctor(srv, "--config", srv.config_path)
        self.assertEqual(rc, 0, out)
        self.assertTrue(out["ok"])
        for check in ("config", "socket", "peer", "state_dir", "map", "argon2"):
            self.assertEqual(self.status(out, check), "ok", json.dumps(out, indent=1))
        self.assertIn("is an admin", self.find(out, "peer")[0]["message"])
        self.assertIn(srv.state_dir, self.find(out, "state_dir")[0]["message"])
        self.assertEqual(self.status(out, "upstreams"), "info")
        # the human form says the same
        cp = subprocess.run([ghtest.cli_path(), "--socket", srv.socket_path, "doctor", "--config",
                             srv.config_path], stdout=subprocess.PIPE, timeout=ghtest.scaled(60))
        self.assertEqual(cp.returncode, 0)
        self.assertIn(b"0 failed", cp.stdout)

    def test_cheap_argon2_is_flagged(self):
        srv = self.server()  # the tests' fast Argon2: opslimit 1, 64 KiB
        rc, out = self.doctor(srv, "--config", srv.config_path)
        self.assertEqual(self.status(out, "argon2"), "warn")
        self.assertIn("raise argon2", self.find(out, "argon2")[0]["fix"])
        self.assertEqual(rc, 0)  # a warning is not a failure

    def test_bad_config(self):
        srv = self.server()
        bad = os.path.join(srv.dir, "bad.conf")
        with open(bad, "w") as f:
            f.write("[server]\nmax_request = lots\n")
        rc, out = self.doctor(srv, "--config", bad)
        self.assertEqual(rc, 5)
        c = self.find(out, "config")[0]
        self.assertEqual(c["status"], "fail")
        self.assertIn("bad.conf:2:", c["message"])
        self.assertIn("max_request", c["message"])

    def test_state_dir_permissions_and_owner(self):
        srv = self.server()
        os.chmod(srv.state_dir, 0o755)
        rc, out = self.doctor(srv, "--config", srv.config_path)
        self.assertEqual(rc, 5)
        c = self.find(out, "state_dir")[0]
        self.assertEqual(c["status"], "fail")
        self.assertIn("chmod 0700 " + srv.state_dir, c["fix"])
        os.chmod(srv.state_dir, 0o700)
        if ghtest.is_root():
            os.chown(os.path.join(srv.state_dir, "data.mdb"), ghtest.NOBODY, ghtest.NOBODY)
            self.addCleanup(os.chown, os.path.join(srv.state_dir, "data.mdb"), 0, 0)
            rc, out = self.doctor(srv, "--config", srv.config_path)
            c = self.find(out, "state_dir")[0]
            self.assertEqual(c["status"], "fail", c)
            self.assertIn("chown", c["fix"])

    def test_unreachable(self):
        srv = self.server()
        rc, out = self.doctor(srv, "--config", srv.config_path,
                              socket=os.path.join(srv.dir, "nothing.sock"))
        self.assertEqual(rc, 3)
        c = self.find(out, "socket")[0]
        self.assertEqual(c["status"], "fail")
        self.assertIn("does not exist", c["message"])
        self.assertIn("start the server", c["fix"])

    @ghtest.unittest.skipUnless(ghtest.is_root(), "needs root to run the CLI as another uid")
    def test_not_admin(self):
        srv = self.server(world_access=True)
        os.chmod(srv.config_path, 0o644)
        rc, out = self.doctor(srv, "--config", srv.config_path, uid=ghtest.NOBODY)
        self.assertEqual(self.status(out, "socket"), "ok", out)
        c = self.find(out, "peer")[0]
        self.assertEqual(c["status"], "info")
        self.assertIn("not an admin", c["message"])
        self.assertIn("GATEHOUSE_TOKEN", c["fix"])
        self.assertEqual(self.find(out, "map"), [])  # needs stats
        self.assertEqual(self.status(out, "state_dir"), "ok")  # its mode shows from outside
        self.assertEqual(rc, 0)

    def test_map_nearly_full(self):
        srv = self.server({"map_size": "1M", "map_max": "2M"})
        c = self.client(srv)
        i = 0
        while True:
            used = self.assertOk(c.call("stats"))["store"]["used_bytes"]
            if used > 0.8 * 2 * 1048576:
                break
            rs = c.pipeline([{"op": "user.add", "name": "fill%06d" % (i + k),
                              "display_name": "z" * 200} for k in range(200)])
            i += 200
            if any(r.get("ok") is not True for r in rs):
                break
        rc, out = self.doctor(srv, "--config", srv.config_path)
        self.assertIn(self.status(out, "map"), ("warn", "fail"), out)
        self.assertIn("map_max", self.find(out, "map")[0]["fix"])

    def test_unreachable_upstream(self):
        srv = self.server()
        with open(srv.config_path, "a") as f:
            f.write("\n[upstream:gone]\nuri = ldap://127.0.0.1:1\nbase_dn = dc=example,dc=com\n"
                    "mode = search-poll\ninterval = 1\ntimeout = 1\n")
        srv.restart()

        def down():
            return self.doctor(srv, "--config", srv.config_path)[1]

        ghtest.wait_until(lambda: any(c["status"] == "fail" for c in
                                      self.find(down(), "upstream:gone")), ghtest.scaled(20))
        rc, out = self.doctor(srv, "--config", srv.config_path)
        self.assertEqual(rc, 5)
        found = self.find(out, "upstream:gone")
        self.assertEqual(found[0]["status"], "fail")
        self.assertIn("ldap://127.0.0.1:1", found[0]["message"])
        self.assertTrue(any("plain LDAP" in c["message"] for c in found))

    def test_healthy_upstream_last_sync_and_tls(self):
        if not slapd.available():
            self.skipTest("slapd not installed")
        real = slapd.Slapd(ldif=LDIF, tls=True)
        self.addCleanup(real.close)
        srv = self.server()
        with open(srv.config_path, "a") as f:
            f.write("\n[upstream:corp]\nuri = %s\nstarttls = yes\nca_file = %s\n"
                    "bind_dn = %s\nbind_password_file = %s\nbase_dn = %s\n"
                    "user_filter = (objectClass=posixAccount)\n"
                    "group_filter = (objectClass=groupOfNames)\nlogin_attr = uid\n"
                    "member_attr = member\nmode = syncrepl-persist\ntimeout = 5\n"
                    % (real.uri, real.ca_file, slapd.ADMIN_DN, real.pwfile, slapd.SUFFIX))
        srv.restart()
        c = self.client(srv)
        ghtest.wait_until(lambda: self.assertOk(c.call("sync.status"))["upstreams"][0]["runs"]
                          >= 1, ghtest.scaled(30))
        st = self.assertOk(c.call("sync.status"))["upstreams"][0]
        self.assertEqual(st["tls"], "starttls")
        rc, out = self.doctor(srv, "--config", srv.config_path)
        found = self.find(out, "upstream:corp")
        dump = json.dumps(out, indent=1)
        self.assertEqual([f["status"] for f in found], ["ok", "ok"], dump)
        m = re.search(r"is (\w+); last sync (\d+) s ago, lag (\d+) s", found[0]["message"])
        self.assertTrue(m, found[0]["message"])
        self.assertIn(m.group(1), ("persisting", "refreshing", "idle", "running"))
        self.assertLess(int(m.group(2)), ghtest.scaled(60))
        self.assertIn("StartTLS", found[1]["message"])
        self.assertIn("certificate is verified", found[1]["message"])
        self.assertNotIn("plain LDAP", dump)
        self.assertEqual(rc, 0, dump)

    def os_login_doctor(self, srv, nsswitch, pam_lines, env):
        """doctor in a private mount namespace where a test nsswitch.conf
        and a test /etc/pam.d (one service file) stand in for the host's."""
        tmp = tempfile.mkdtemp(prefix="gh-doc-os-", dir="/tmp")
        self.addCleanup(shutil.rmtree, tmp, True)
        nss = os.path.join(tmp, "nsswitch.conf")
        with open(nss, "w") as f:
            f.write(nsswitch)
        pamd = os.path.join(tmp, "pam.d")
        os.mkdir(pamd)
        with open(os.path.join(pamd, "gh-doctor-test"), "w") as f:
            f.write("\n".join(pam_lines) + "\n")
        with open(os.path.join(pamd, "other"), "w") as f:
            f.write("# not ours\nauth required pam_deny.so\n")
        # the CLI without its libtool wrapper, whose LD_LIBRARY_PATH (the
        # build's .libs) would hand glibc the build's NSS module too
        bindir = os.path.join(tmp, "bin")
        os.mkdir(bindir)
        libs = os.path.join(ghtest.builddir(), ".libs")
        shutil.copy(os.path.join(libs, "gatehouse"), bindir)
        shutil.copy(os.path.join(libs, "libgatehouse.so.1"), bindir)
        e = dict(os.environ)
        for k in ("GATEHOUSE_TOKEN", "GATEHOUSE_NSS_SOCKET", "LD_LIBRARY_PATH"):
            e.pop(k, None)
        e.update(env)
        e["LD_LIBRARY_PATH"] = ":".join(p for p in (bindir, env.get("LD_LIBRARY_PATH")) if p)
        e["GATEHOUSED"] = ghtest.gatehoused_path()  # the server's parser, from the build
        script = ('mount --bind "$1" /etc/nsswitch.conf && mount --bind "$2" /etc/pam.d && '
                  'shift 2 && exec "$@"')
        cp = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", nss, pamd,
                             os.path.join(bindir, "gatehouse"), "--socket", srv.socket_path,
                             "--json", "doctor", "--config", srv.config_path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                            timeout=ghtest.scaled(60))
        try:
            return cp.returncode, json.loads(cp.stdout.decode())
        except ValueError:
            self.fail("doctor printed no JSON (rc %d): %s %s" % (cp.returncode, cp.stdout,
                                                                 cp.stderr))

    @ghtest.unittest.skipUnless(ghtest.is_root() and shutil.which("unshare"),
                                "needs root for unshare -m and bind mounts over /etc")
    def test_nss_pam_point_at_this_server(self):
        srv = self.server()
        libs = os.path.join(ghtest.builddir(), ".libs")
        pam_mod = os.path.join(libs, "pam_gatehouse.so")
        nss_sock = os.path.join(srv.dir, "nss.sock")  # the server's: beside gh.sock
        both = "passwd: files gatehouse\ngroup: files gatehouse\nhosts: files\n"

        # right: the build's modules, the server's sockets
        rc, out = self.os_login_doctor(
            srv, both, ["auth [success=1 default=ignore] %s socket=%s try_first_pass"
                        % (pam_mod, srv.socket_path),
                        "account required %s socket=%s" % (pam_mod, srv.socket_path)],
            {"LD_LIBRARY_PATH": libs, "GATEHOUSE_NSS_SOCKET": nss_sock})
        dump = json.dumps(out, indent=1)
        self.assertEqual([c["status"] for c in self.find(out, "nss")], ["ok"], dump)
        self.assertIn(nss_sock, self.find(out, "nss")[0]["message"])
        self.assertIn("passwd and group", self.find(out, "nss")[0]["message"])
        self.assertEqual([c["status"] for c in self.find(out, "pam")], ["ok"], dump)
        self.assertIn("gh-doctor-test", self.find(out, "pam")[0]["message"])
        self.assertEqual(rc, 0, dump)

        # wrong sockets: the modules' compiled-in defaults are not this
        # server's (and nss_socket = none on the server would be named too)
        rc, out = self.os_login_doctor(
            srv, both, ["auth required %s" % pam_mod,
                        "password required %s socket=%s" % (pam_mod,
                                                            os.path.join(srv.dir, "old.sock"))],
            {"LD_LIBRARY_PATH": libs})
        dump = json.dumps(out, indent=1)
        self.assertEqual(rc, 5, dump)
        nss = self.find(out, "nss")
        self.assertEqual(nss[0]["status"], "fail", dump)
        self.assertIn("not this server's NSS socket " + nss_sock, nss[0]["message"])
        self.assertIn("nss_socket", nss[0]["fix"])
        self.assertIn("gets no answer", nss[-1]["message"])  # the module was asked
        pam = self.find(out, "pam")
        self.assertEqual(sorted(c["status"] for c in pam), ["fail", "fail"], dump)
        self.assertTrue(all("not this server's socket " + srv.socket_path in c["message"]
                            for c in pam), dump)
        self.assertTrue(any("old.sock" in c["message"] for c in pam), dump)
        self.assertTrue(all("socket=" + srv.socket_path in c["fix"] for c in pam), dump)

        # wrong modules: none installed where glibc and Linux-PAM look, and
        # NSS only half configured
        host_has = any(os.path.exists(p) for p in
                       ["/lib/x86_64-linux-gnu/libnss_gatehouse.so.2",
                        "/usr/lib/x86_64-linux-gnu/libnss_gatehouse.so.2",
                        "/lib/x86_64-linux-gnu/security/pam_gatehouse.so"])
        if host_has:
            return  # this host has the packages: "not installed" cannot be shown
        rc, out = self.os_login_doctor(
            srv, "passwd: files gatehouse\ngroup: files\n",
            ["auth required pam_gatehouse.so socket=%s" % srv.socket_path],
            {"GATEHOUSE_NSS_SOCKET": nss_sock})
        dump = json.dumps(out, indent=1)
        self.assertEqual(rc, 5, dump)
        nss = self.find(out, "nss")
        self.assertEqual([c["status"] for c in nss], ["warn", "fail"], dump)
        self.assertIn("group", nss[0]["fix"])
        self.assertIn("cannot load libnss_gatehouse.so.2", nss[1]["message"])
        pam = self.find(out, "pam")
        self.assertEqual([c["status"] for c in pam], ["fail"], dump)
        self.assertIn("is not installed", pam[0]["message"])


if __name__ == "__main__":
    ghtest.main()
