#!/usr/bin/env python3
"""`gatehouse doctor`: a healthy server passes; each broken piece is named
with its fix (configuration refused with file:line, state directory
readable by others or owned by another user than the server, the map
nearly full, an unreachable upstream, a cheap Argon2 cost, the socket not
reachable); a caller that is not an admin is told so and still gets the
checks it may make. --json gives the same findings."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ghtest  # noqa: E402


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


if __name__ == "__main__":
    ghtest.main()
