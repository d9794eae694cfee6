"""libgatehouse against the real gatehoused (and a few fake servers).

Compiles tests/integration/lib_example.c against the build's libgatehouse
(-I$GH_SRCDIR/clients -L$GH_BUILDDIR/.libs) and runs its scenarios: typed
calls (auth, whoami, check, check.batch, logout), 5000 pipelined requests, the
generic call, transparent reconnection across a server restart; against fake
servers in this process: a write whose connection breaks after it was sent is
reported as connection_lost (never sent twice), a read is sent again, the
timeout and the receive limit. Then the library as installed: SONAME, only
gh_* exported, the header self-contained (C and C++), and the example of
docs/CLI.md compiled with `pkg-config --cflags --libs gatehouse` on a copy of
the install layout.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ghtest  # noqa: E402

PASSWORD = "correct horse 42"


def libdir():
    return os.path.join(ghtest.builddir(), ".libs")


def lib_sanitized():
    try:
        with open(os.path.join(libdir(), "libgatehouse.so"), "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def cc():
    return os.environ.get("CC") or shutil.which("cc") or "gcc"


def san_flags():
    return ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"] if lib_sanitized() else []


def jansson_flags(kind):
    try:
        return subprocess.run(["pkg-config", kind, "jansson"], stdout=subprocess.PIPE,
                              check=True).stdout.decode().split()
    except (OSError, subprocess.CalledProcessError):
        return [] if kind == "--cflags" else ["-ljansson"]


def run_env(sock):
    env = dict(os.environ)
    env["GATEHOUSE_SOCKET"] = sock
    env["LD_LIBRARY_PATH"] = libdir() + (":" + env["LD_LIBRARY_PATH"]
                                         if env.get("LD_LIBRARY_PATH") else "")
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    return env


_example_lock = threading.Lock()
_example_bin = None


def example_binary():
    """Compiles lib_example.c once per run."""
    global _example_bin
    with _example_lock:
        if _example_bin is None:
            out = os.path.join(tempfile.mkdtemp(prefix="gh-libex-"), "lib_example")
            src = os.path.join(ghtest.srcdir(), "tests", "integration", "lib_example.c")
            argv = ([cc(), "-std=c11", "-Wall", "-Wextra", "-Werror", "-g"] + san_flags()
                    + ["-I" + os.path.join(ghtest.srcdir(), "clients")]
                    + jansson_flags("--cflags") + [src, "-o", out, "-L" + libdir(),
                                                   "-lgatehouse"] + jansson_flags("--libs"))
            cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if cp.returncode != 0:
                raise AssertionError("compiling lib_example failed:\n%s\n%s"
                                     % (" ".join(argv), cp.stdout.decode()))
            _example_bin = out
        return _example_bin


class FakeServer:
    """A UNIX socket server in a thread. mode:
    drop-first: the first connection reads one line and closes; later ones
                answer every line ({"ok":true,...}).
    silent:     reads and never answers.
    huge:       answers every line with a 100 KB line.
    Records every line received in .lines."""

    def __init__(self, path, mode):
        self.path = path
        self.mode = mode
        self.lines = []
        self.conns = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.stop = False
        self.held = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self.serve, args=(conn, self.conns), daemon=True).start()

    def serve(self, conn, n):
        buf = b""
        f = conn
        try:
            while True:
                chunk = f.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self.lines.append((n, json.loads(line)))
                    if self.mode == "drop-first" and n == 1:
                        conn.close()
                        return
                    if self.mode == "silent":
                        self.held.append(conn)
                        continue
                    if self.mode == "huge":
                        conn.sendall(b'{"ok":true,"pad":"' + b"x" * 100000 + b'"}\n')
                        continue
                    req = json.loads(line)
                    resp = {"ok": True}
                    if req.get("op") == "ping":
                        resp.update(version="fake", protocol=1)
                    if req.get("op") == "user.get":
                        resp["user"] = {"name": req.get("name")}
                    conn.sendall(json.dumps(resp).encode() + b"\n")
        except OSError:
            return

    def close(self):
        self.stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        for c in self.held:
            try:
                c.close()
            except OSError:
                pass


class LibTest(ghtest.TestCase):

    def setup_server(self):
        s = self.start_server()
        c = self.client(s)
        self.assertOk(c.call("user.add", name="alice", password=PASSWORD))
        self.assertOk(c.call("role.add", name="deployer",
                             allow=[{"action": "deploy", "resource": "service/*"}],
                             deny=[{"action": "deploy", "resource": "service/payroll"}]))
        self.assertOk(c.call("grant", role="deployer", user="alice"))
        return s

    def run_example(self, sock, *args, timeout=None):
        cp = subprocess.run([example_binary()] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=run_env(sock),
                            timeout=ghtest.scaled(60) if timeout is None else timeout)
        out = cp.stdout.decode("utf-8", "replace")
        self.assertEqual(cp.returncode, 0, "lib_example %s failed:\n%s" % (" ".join(args), out))
        self.assertIn("PASSED", out)
        return out

    def fake(self, mode):
        d = tempfile.mkdtemp(prefix="gh-fake-")
        self.addCleanup(shutil.rmtree, d, True)
        f = FakeServer(os.path.join(d, "fake.sock"), mode)
        self.addCleanup(f.close)
        return f

    # -- against gatehoused

    def test_typed_pipelined_generic(self):
        s = self.setup_server()
        out = self.run_example(s.socket_path, "server", "alice", PASSWORD)
        self.assertIn("pipelined 5000 requests", out)

    def test_reconnect_after_restart(self):
        s = self.setup_server()
        p = subprocess.Popen([example_binary(), "restart", "alice"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=run_env(s.socket_path))
        try:
            for _ in range(2):
                line = p.stdout.readline().decode()
                self.assertEqual(line.strip(), "RESTART", line)
                s.restart()
                p.stdin.write(b"go\n")
                p.stdin.flush()
            out, _ = p.communicate(timeout=ghtest.scaled(30))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        out = out.decode()
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("reconnected", out)
        self.assertOk(s.call("group.get", name="after-restart"))

    def test_unreachable(self):
        self.run_example("/nonexistent/none.sock", "unreachable")

    # -- against fakes

    def test_lost_write_is_not_repeated(self):
        f = self.fake("drop-first")
        self.run_example(f.path, "lost-write")
        ops = [(n, r["op"]) for n, r in f.lines]
        # the write went out once, on the first connection; the ping on the second
        self.assertEqual(ops, [(1, "user.add"), (2, "ping")])

    def test_read_is_sent_again(self):
        f = self.fake("drop-first")
        self.run_example(f.path, "retried-read")
        self.assertEqual([(n, r["op"]) for n, r in f.lines], [(1, "user.get"), (2, "user.get")])

    def test_timeout(self):
        f = self.fake("silent")
        self.run_example(f.path, "timeout")

    def test_receive_limit(self):
        f = self.fake("huge")
        self.run_example(f.path, "too-long")

    # -- the library as shipped

    def test_soname_and_exports(self):
        so = os.path.join(libdir(), "libgatehouse.so")
        cp = subprocess.run(["objdump", "-p", so], stdout=subprocess.PIPE, check=True)
        m = re.search(rb"SONAME\s+(\S+)", cp.stdout)
        self.assertIsNotNone(m)
        self.assertEqual(m.group(1), b"libgatehouse.so.1")
        needed = re.findall(rb"NEEDED\s+(\S+)", cp.stdout)
        self.assertFalse([n for n in needed if re.match(rb"lib(lmdb|sodium|uv|ldap)", n)],
                         "libgatehouse must not link the server's libraries: %r" % needed)
        cp = subprocess.run(["nm", "-D", "--defined-only", so], stdout=subprocess.PIPE,
                            check=True)
        # names carry the version node of clients/libgatehouse.map (gh_call@@GATEHOUSE_1)
        syms = [l.split()[-1].split("@")[0] for l in cp.stdout.decode().splitlines()
                if len(l.split()) == 3 and l.split()[1] in "TDBR"]
        self.assertIn("gh_call", syms)
        self.assertIn("gh_check_batch", syms)
        self.assertEqual([s for s in syms if not s.startswith("gh_")], [])

    def test_header_self_contained(self):
        d = tempfile.mkdtemp(prefix="gh-hdr-")
        self.addCleanup(shutil.rmtree, d, True)
        inc = "-I" + os.path.join(ghtest.srcdir(), "clients")
        for compiler, ext, std in ((cc(), "c", "-std=c99"), ("c++", "cc", "-std=c++11")):
            if shutil.which(compiler) is None:
                continue
            src = os.path.join(d, "t." + ext)
            with open(src, "w") as f:
                f.write("#include <gatehouse.h>\n#include <gatehouse.h>\n"
                        "int f(gh_client *c);\nint f(gh_client *c) { return gh_ping(c, 0); }\n")
            cp = subprocess.run([compiler, std, "-Wall", "-Wextra", "-Werror", "-pedantic", inc]
                                + jansson_flags("--cflags") + ["-c", src, "-o", src + ".o"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.assertEqual(cp.returncode, 0, cp.stdout.decode())

    def test_docs_example_with_pkg_config(self):
        """The example of docs/CLI.md, built exactly as documented, on a copy
        of the installed layout (PREFIX/include, PREFIX/lib, the .pc)."""
        if shutil.which("pkg-config") is None:
            self.skipTest("pkg-config not installed")
        with open(os.path.join(ghtest.srcdir(), "docs", "CLI.md"), encoding="utf-8") as f:
            doc = f.read()
        m = re.search(r"<!-- example: check\.c -->\s*```c\n(.*?)```", doc, re.S)
        self.assertIsNotNone(m, "docs/CLI.md lost its check.c example")
        prefix = tempfile.mkdtemp(prefix="gh-prefix-")
        self.addCleanup(shutil.rmtree, prefix, True)
        for sub in ("include", "lib", "lib/pkgconfig"):
            os.makedirs(os.path.join(prefix, sub), exist_ok=True)
        shutil.copy(os.path.join(ghtest.srcdir(), "clients", "gatehouse.h"),
                    os.path.join(prefix, "include"))
        for name in os.listdir(libdir()):
            if name.startswith("libgatehouse.so"):
                shutil.copy(os.path.join(libdir(), name), os.path.join(prefix, "lib", name),
                            follow_symlinks=True)
        shutil.copy(os.path.join(ghtest.builddir(), "clients", "gatehouse.pc"),
                    os.path.join(prefix, "lib", "pkgconfig"))
        env = dict(os.environ)
        env["PKG_CONFIG_PATH"] = os.path.join(prefix, "lib", "pkgconfig")
        cp = subprocess.run(["pkg-config", "--define-variable=prefix=" + prefix, "--cflags",
                             "--libs", "gatehouse"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
        self.assertEqual(cp.returncode, 0, cp.stdout.decode())
        flags = cp.stdout.decode().split()
        self.assertIn("-I" + os.path.join(prefix, "include"), flags)
        self.assertIn("-L" + os.path.join(prefix, "lib"), flags)
        self.assertIn("-lgatehouse", flags)
        src = os.path.join(prefix, "check.c")
        with open(src, "w") as f:
            f.write(m.group(1))
        exe = os.path.join(prefix, "check")
        cp = subprocess.run([cc(), "-Wall", "-Wextra", "-Werror"] + san_flags()
                            + [src, "-o", exe] + flags,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertEqual(cp.returncode, 0, cp.stdout.decode())

        s = self.setup_server()
        env = run_env(s.socket_path)
        env["LD_LIBRARY_PATH"] = os.path.join(prefix, "lib")
        cp = subprocess.run([exe, "alice", "deploy", "service/billing"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, timeout=ghtest.scaled(20))
        self.assertEqual((cp.returncode, cp.stdout), (0, b"allow\n"))
        cp = subprocess.run([exe, "alice", "deploy", "service/payroll"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, timeout=ghtest.scaled(20))
        self.assertEqual((cp.returncode, cp.stdout), (1, b"deny\n"))
        cp = subprocess.run([exe, "mallory", "deploy", "service/billing"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            timeout=ghtest.scaled(20))
        self.assertEqual(cp.returncode, 1)
        self.assertIn(b"not_found", cp.stdout)


if __name__ == "__main__":
    ghtest.main()
