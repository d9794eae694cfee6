"""gatehoused as a process: configuration errors, the TCP listener, SIGHUP,
the --init-admin bootstrap and the command line."""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import ghtest


class TcpClient:
    """Line-delimited JSON over TCP (the UNIX-socket Client's subset)."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=ghtest.scaled(timeout))
        self.f = self.sock.makefile("rwb")

    def call(self, op, **fields):
        fields["op"] = op
        self.f.write(json.dumps(fields).encode() + b"\n")
        self.f.flush()
        line = self.f.readline()
        if not line:
            raise ghtest.ConnectionClosed("tcp peer closed")
        return json.loads(line)

    def close(self):
        self.f.close()
        self.sock.close()


class Server(ghtest.TestCase):
    def run_daemon(self, args, conf_text=None, input=None):
        d = tempfile.mkdtemp(prefix="gh-srv-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", d]))
        argv = [ghtest.gatehoused_path(), "--state-dir", os.path.join(d, "state"),
                "--socket", os.path.join(d, "gh.sock")] + list(args)
        if conf_text is not None:
            path = os.path.join(d, "bad.conf")
            with open(path, "w") as f:
                f.write(conf_text)
            argv += ["--config", path]
        p = subprocess.run(argv, input=input, capture_output=True, text=True,
                           timeout=ghtest.scaled(30))
        return p, d

    # ---- configuration ----

    def test_unknown_key_refused_with_file_and_line(self):
        p, d = self.run_daemon([], "[server]\nlog_level = info\n\nno_such_key = 1\n")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("bad.conf:4:", p.stderr)
        self.assertIn("no_such_key", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(d, "gh.sock")))

    def test_bad_values_refused(self):
        cases = [
            ("max_request = lots\n", "max_request"),
            ("socket_mode = 0999\n", "socket_mode"),
            ("log_level = chatty\n", "log_level"),
            ("argon2_opslimit = 0\n", "argon2_opslimit"),
            ("log_syslog = maybe\n", "log_syslog"),
            ("map_size = 1G\nmap_max = 64M\n", "map_max"),
        ]
        for text, word in cases:
            with self.subTest(text=text):
                p, _ = self.run_daemon([], "[server]\n" + text)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(word, p.stderr)

    def test_unknown_section_refused(self):
        # reported at the section's first key (inih calls back per key)
        p, _ = self.run_daemon([], "[server]\n[serevr]\nlog_level = info\n")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("bad.conf:3:", p.stderr)
        self.assertIn("serevr", p.stderr)

    def test_example_config_is_accepted(self):
        # conf/gatehoused.conf documents every key with its default; it must
        # parse (state_dir and socket are overridden on the command line)
        src = os.path.join(ghtest.srcdir(), "conf", "gatehoused.conf")
        with open(src) as f:
            text = f.read()
        text = text.replace("argon2_memlimit = 64M", "argon2_memlimit = 64K")
        text = text.replace("argon2_opslimit = 2", "argon2_opslimit = 1")
        srv = self.start_server(config=text, fast_argon2=False)
        self.assertOk(self.client(srv).call("ping"))

    def test_version_and_help(self):
        p = subprocess.run([ghtest.gatehoused_path(), "--version"], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn(ghtest.project_version(), p.stdout)
        p = subprocess.run([ghtest.gatehoused_path(), "--help"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn("--state-dir", p.stdout)
        p = subprocess.run([ghtest.gatehoused_path(), "--bogus"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)

    # ---- TCP ----

    def test_tcp_listener_non_admin_without_token(self):
        port = ghtest.free_port()
        srv = self.start_server(config={"tcp_listen": "127.0.0.1:%d" % port})
        admin = self.client(srv)
        self.assertOk(admin.call("user.add", name="root2", password="root2-password"))
        self.assertOk(admin.call("group.add", name="gatehouse-admins"))
        self.assertOk(admin.call("group.add_member", group="gatehouse-admins", user="root2"))
        self.assertOk(admin.call("user.add", name="plain", password="plain-password"))
        t = TcpClient(port)
        self.addCleanup(t.close)
        self.assertOk(t.call("ping"))
        # even from root's own machine, TCP is never admin without a token
        self.assertError(t.call("user.list"), "permission_denied")
        plain = self.assertOk(t.call("auth", user="plain", password="plain-password"))["token"]
        self.assertError(t.call("user.list", auth=plain), "permission_denied")
        tok = self.assertOk(t.call("auth", user="root2", password="root2-password"))["token"]
        r = self.assertOk(t.call("user.list", auth=tok))
        self.assertIn("plain", [u["name"] for u in r["users"]])
        self.assertError(t.call("user.list", auth="x" * 43), "invalid_token")
        # the write is attributed to the token's user in the change log
        self.assertOk(t.call("group.add", name="viatcp", auth=tok))
        entries = self.assertOk(admin.call("audit", limit=1000))["entries"]
        self.assertIn(("user:root2", "group.add", "viatcp"),
                      [(e["actor"], e["op"], e["target"]) for e in entries])

    def test_tcp_non_loopback_refused(self):
        srv = self.start_server(config={"tcp_listen": "0.0.0.0:%d" % ghtest.free_port()}, start=False,
                                check_exit=False)
        srv.start(wait=False)
        code = srv.proc.wait(timeout=ghtest.scaled(20))
        self.assertNotEqual(code, 0)
        self.assertIn("not a loopback address", srv.stderr_text())

    # ---- signals ----

    def test_sighup_reloads_log_level_and_survives_bad_config(self):
        srv = self.start_server(config={"log_level": "info"})
        c = self.client(srv)
        self.assertOk(c.call("ping"))
        self.assertNotIn(" debug ", srv.stderr_text())
        with open(srv.config_path) as f:
            good = f.read()
        with open(srv.config_path, "w") as f:
            f.write(good.replace("log_level = info", "log_level = debug"))
        os.kill(srv.pid, signal.SIGHUP)
        self.assertTrue(ghtest.wait_until(lambda: "reloaded" in srv.stderr_text(),
                                          ghtest.scaled(5)))
        self.assertOk(c.call("ping"))
        self.assertTrue(ghtest.wait_until(lambda: " debug " in srv.stderr_text(),
                                          ghtest.scaled(5)), srv.stderr_text()[-2000:])
        # a broken file on SIGHUP is reported and the running config is kept
        with open(srv.config_path, "w") as f:
            f.write(good + "\nbogus = 1\n")
        os.kill(srv.pid, signal.SIGHUP)
        self.assertTrue(ghtest.wait_until(
            lambda: "keeping the running configuration" in srv.stderr_text(), ghtest.scaled(5)))
        self.assertOk(c.call("ping"))

    def test_sigint_is_graceful(self):
        srv = self.start_server(check_exit=False)
        c = self.client(srv)
        self.assertOk(c.call("user.add", name="kept"))
        os.kill(srv.pid, signal.SIGINT)
        self.assertEqual(srv.proc.wait(timeout=ghtest.scaled(20)), 0, srv.stderr_text())
        self.assertFalse(os.path.exists(srv.socket_path))
        srv.start()
        self.assertOk(self.client(srv).call("user.get", name="kept"))

    def test_second_server_on_same_socket_refused(self):
        srv = self.start_server()
        p = subprocess.run([ghtest.gatehoused_path(), "--state-dir", srv.state_dir + "2",
                            "--socket", srv.socket_path], capture_output=True, text=True,
                           timeout=ghtest.scaled(20))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("another server is listening", p.stderr)
        self.assertOk(self.client(srv).call("ping"))

    # ---- bootstrap ----

    def test_init_admin(self):
        srv = self.start_server(start=False)
        p = ghtest.init_admin(srv, "boss", "boss-password-1")
        self.assertEqual(p.returncode, 0, p.stderr)
        srv.start()
        c = self.client(srv)
        u = self.assertOk(c.call("user.get", name="boss"))["user"]
        self.assertIn("gatehouse-admins", u["groups"])
        tok = self.assertOk(c.call("auth", user="boss", password="boss-password-1"))["token"]
        self.assertTrue(self.assertOk(c.call("whoami", token=tok))["admin"])
        # the password never went to argv: it came on stdin
        self.assertNotIn("boss-password-1", " ".join(srv.argv()))

    def test_init_admin_refuses_short_password_and_bad_name(self):
        srv = self.start_server(start=False)
        p = ghtest.init_admin(srv, "boss", "short", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"at least", p.stderr)
        p = ghtest.init_admin(srv, "bad/name", "long-enough-password", check=False)
        self.assertEqual(p.returncode, 2)


if __name__ == "__main__":
    ghtest.main()
