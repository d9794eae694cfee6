"""ghtest: the integration-test harness of Gatehouse (Python 3, stdlib only).

Every test file under tests/integration is a unittest module that starts the
real `gatehoused` on a temporary directory and talks to it over its UNIX
socket as a client would. It ends with

    if __name__ == "__main__":
        ghtest.main()

which prints TAP (`1..N`, `ok K - name`, `not ok K - name` followed by the
traceback as `# ` lines, `ok K - name # SKIP reason`) for automake's TAP
driver and exits non-zero when a test failed. Run a file by hand with

    GH_BUILDDIR=/path/to/build python3 tests/integration/test_protocol.py [NAME...]

(NAME filters tests by substring). Environment:

    GH_BUILDDIR     build directory holding `gatehoused` and `gatehouse`
                    (set by `make check`; default: the current directory)
    GH_SRCDIR       source directory (set by `make check`)
    GH_TIME_SCALE   multiply every timeout and timing bound by this factor;
                    default 6 when gatehoused is built with TSan, 3 with ASan,
                    else 1 (use `ghtest.SCALE` / `ghtest.scaled(x)` in tests)
    GH_TEST_TIMEOUT seconds one test may take before it is failed (default
                    60, scaled); a hard watchdog bails out at twice that
    GH_KEEP_TMP=1   keep the temporary directories (for debugging)

Main pieces
-----------
ghtest.TestCase (a unittest.TestCase) -- use it as the base class:
    self.start_server(**kw)  -> Server (same arguments as Server); stopped,
                               checked and removed at cleanup, even on failure
    self.client(server)      -> Client closed at cleanup
    self.assertOk(resp)      -> resp; fails with the error when ok is not true
    self.assertError(resp, code) -> resp; fails unless ok is false with that
                               error code. `code` may be a tuple of codes.
    On a failure the tail of every server's stderr is added to the TAP output.

Server(tmpdir=None, config=None, extra_args=(), env=None, start=True,
       fast_argon2=True, world_access=False, run_as=None, check_exit=True)
    Layout:  TMP/state (the --state-dir), TMP/gh.sock (the --socket),
             TMP/gatehoused.conf (--config, when config is given or
             fast_argon2), TMP/stderr.log (server stdout+stderr).
    config:  a dict {"server": {key: value}, "upstream:x": {...}}, a flat
             dict {key: value} (taken as the [server] section), or raw INI
             text. Values are written with str(); give modes as strings
             ("0666"). With fast_argon2 (default) argon2_opslimit=1 and
             argon2_memlimit=65536 are added unless the config sets them.
             loop_threads is added unless the config sets it: the value of
             the environment variable GH_LOOP_THREADS, else 1 (make check
             runs some files again with GH_LOOP_THREADS=4).
    world_access: socket_mode=0666 and TMP chmod 0711, so that clients
             running under another uid (see as_uid / UidClient) can connect.
    run_as:  (uid, gid): start the server through setpriv as that user
             (TMP is chowned to it).
    .start() / .stop(timeout) -> exit code (SIGTERM, then waits) /
    .kill9() / .restart() / .wait_ready() / .close() (kills by pid, removes
    TMP) / .client(**kw) -> Client / .stderr_text() / .rss_kib() (VmRSS) /
    .pid / .proc / .socket_path / .state_dir / .config_path / .dir.
    A server that does not answer `ping` within 20 s (scaled) of its start
    raises ServerError carrying its stderr. Every Server is also killed by
    pid (and its directory removed) at interpreter exit (atexit) and when
    the test process gets SIGTERM or SIGHUP. At TestCase cleanup the server gets
    SIGTERM; the test fails when it then exits non-zero (check_exit=False
    turns this off) or when its stderr holds a sanitizer report.

Client(path, timeout=10 (scaled), auth=None)
    .call(op, **fields) -> response dict (one request line, one response
                line); `auth` given to the constructor is added to every call
    .request(dict) -> dict; .send(dict); .recv() -> dict
    .pipeline([dict, ...]) -> [dict, ...] (sends everything from a thread
                while reading, so large batches cannot deadlock)
    .send_raw(bytes); .recv_line(timeout=None) -> bytes without the newline,
                or None at end of stream; .wait_closed(timeout) -> True when
                the server closed the connection (lines read meanwhile are
                kept in .drained)
    .login(user, password) -> token (asserts success); admin_token = login
    .close()
    Responses are parsed with json; a line that is not a JSON object raises
    ProtocolError. End of stream while waiting for a response raises
    ConnectionClosed.

UidClient(path, uid, gid=None, groups=None, timeout=..., auth=None)
    Same interface as Client, but the socket is opened by a small relay
    process running under another uid/gid (setpriv), so SO_PEERCRED on the
    server side shows that uid. Needs root and a server with world_access.

foreign_program(path) -> argv prefix running a build program (gatehoused,
    the CLI) from a world-readable copy, for use after setpriv_prefix: the
    checkout may be unreadable by other uids (a clone under /root).
as_uid(uid, argv, gid=None, groups=None, **subprocess_run_kwargs)
    subprocess.run(argv) under `setpriv --reuid --regid --clear-groups` (or
    --groups=...); setpriv_prefix(uid, gid, groups) gives the argv prefix.
init_admin(server, name, password, check=True)
    runs `gatehoused --init-admin NAME --state-dir DIR [--config FILE]` with
    the password on stdin (stops and restarts the server around it when it
    is running); returns the CompletedProcess.
run_cli(server, args, input=None, uid=None, ...) -> CompletedProcess
    runs $GH_BUILDDIR/gatehouse --socket SOCK ARGS (under uid: from
    foreign_program's copy).
Helpers: gatehoused_path(), cli_path(), is_root(), NOBODY (65534),
    scaled(seconds), wait_until(pred, timeout, interval), project_version()
    (from configure.ac), SANITIZED (gatehoused has ASan), SCALE.
"""

import atexit
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

__all__ = [
    "TestCase", "Server", "Client", "UidClient", "ServerError", "ProtocolError",
    "ConnectionClosed", "as_uid", "setpriv_prefix", "foreign_program", "init_admin", "run_cli",
    "main",
    "gatehoused_path", "cli_path", "is_root", "NOBODY", "SCALE", "SANITIZED", "scaled",
    "wait_until", "project_version", "free_port",
]

NOBODY = 65534

FAST_ARGON2 = {"argon2_opslimit": "1", "argon2_memlimit": "65536"}


def loop_threads():
    """The loop_threads test servers run with (GH_LOOP_THREADS, default 1)."""
    return int(os.environ.get("GH_LOOP_THREADS") or "1")


# ---------------------------------------------------------------- environment

def builddir():
    return os.environ.get("GH_BUILDDIR") or os.getcwd()


def srcdir():
    d = os.environ.get("GH_SRCDIR")
    if d:
        return d
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def gatehoused_path():
    return os.path.join(builddir(), "gatehoused")


def cli_path():
    return os.path.join(builddir(), "gatehouse")


def is_root():
    return os.geteuid() == 0


def _detect_sanitized():
    path = gatehoused_path()
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            if head == b"#!":  # a libtool wrapper: look at the real binary
                alt = os.path.join(builddir(), ".libs", "gatehoused")
                f.close()
                with open(alt, "rb") as g:
                    data = g.read()
            else:
                data = head + f.read()
    except OSError:
        return False
    if b"__tsan_init" in data:
        return "tsan"
    return "asan" if b"__asan_init" in data else False


SANITIZED = _detect_sanitized()
try:
    SCALE = float(os.environ["GH_TIME_SCALE"])
except (KeyError, ValueError):
    # ThreadSanitizer slows the server more than ASan does (every memory
    # access and lock is checked), and the sync tests' upstream timeouts with it
    SCALE = {"tsan": 6.0, "asan": 3.0}.get(SANITIZED, 1.0)


def scaled(seconds):
    """A timeout or timing bound, stretched for slow (sanitizer) builds."""
    return seconds * SCALE


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout, interval=0.05):
    """Calls pred() until it returns a true value (returned) or timeout
    seconds pass (returns the last false value)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def project_version():
    """The version in AC_INIT of configure.ac, or None."""
    try:
        with open(os.path.join(srcdir(), "configure.ac"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"AC_INIT\(\[[^\]]*\],\s*\[([^\]]+)\]", text)
    return m.group(1) if m else None


# ------------------------------------------------------------------- errors

class ServerError(Exception):
    """The server failed to start or behaved outside the harness's model."""


class ProtocolError(Exception):
    """A response line that is not a JSON object."""


class ConnectionClosed(ProtocolError):
    """End of stream where a response was expected."""


# ------------------------------------------------------------------- clients

def _encode(obj):
    if isinstance(obj, (bytes, bytearray)):
        data = bytes(obj)
        return data if data.endswith(b"\n") else data + b"\n"
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def _decode(line):
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError("response is not JSON (%s): %r" % (e, line[:500]))
    if not isinstance(obj, dict):
        raise ProtocolError("response is not a JSON object: %r" % (line[:500],))
    return obj


class _LineClient:
    """Line framing and the request helpers over an abstract byte stream."""

    def __init__(self, timeout=None, auth=None):
        self.timeout = scaled(10) if timeout is None else timeout
        self.auth = auth
        self._buf = b""
        self._eof = False
        self.drained = []

    # transport, supplied by subclasses
    def _write(self, data):
        raise NotImplementedError

    def _read(self, timeout):
        """Returns bytes (b"" at end of stream); raises socket.timeout."""
        raise NotImplementedError

    def close(self):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # framing
    def send_raw(self, data):
        self._write(bytes(data))

    def recv_line(self, timeout=None):
        """The next line without its newline; None at end of stream.
        Raises socket.timeout when nothing complete arrives in time."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line, self._buf = self._buf[:i], self._buf[i + 1:]
                return line
            if self._eof:
                if self._buf:
                    line, self._buf = self._buf, b""
                    return line
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no complete response line within %.1fs (partial: %r)"
                                     % (timeout, self._buf[:200]))
            chunk = self._read(left)
            if not chunk:
                self._eof = True
            else:
                self._buf += chunk

    def recv(self, timeout=None):
        line = self.recv_line(timeout)
        if line is None:
            raise ConnectionClosed("connection closed by the server")
        return _decode(line)

    def send(self, obj):
        self._write(_encode(obj))

    def _with_auth(self, obj):
        if self.auth is not None and isinstance(obj, dict) and "auth" not in obj:
            obj = dict(obj)
            obj["auth"] = self.auth
        return obj

    def request(self, obj, timeout=None):
        self.send(self._with_auth(obj))
        return self.recv(timeout)

    def call(self, op, **fields):
        req = {"op": op}
        req.update(fields)
        return self.request(req)

    def pipeline(self, requests, timeout=None):
        """Sends every request (dicts, or bytes lines) then reads as many
        responses, in order. The send runs in a thread so that a batch larger
        than the socket buffers cannot deadlock against our own reading."""
        data = b"".join(_encode(self._with_auth(r)) for r in requests)
        err = []

        def sender():
            try:
                self._write(data)
            except Exception as e:  # reported after the reads
                err.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        out = []
        try:
            for _ in requests:
                out.append(self.recv(timeout))
        finally:
            t.join(self.timeout)
        if err:
            raise err[0]
        return out

    def wait_closed(self, timeout=None):
        """True when the server ends the stream within timeout; the lines it
        sends meanwhile are appended to self.drained."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                line = self.recv_line(left)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if line is None:
                return True
            self.drained.append(line)

    def login(self, user, password, **fields):
        resp = self.call("auth", user=user, password=password, **fields)
        if resp.get("ok") is not True:
            raise AssertionError("auth as %r failed: %r" % (user, resp))
        return resp["token"]

    admin_token = login


class Client(_LineClient):
    """A connection to the server's UNIX socket."""

    def __init__(self, path, timeout=None, auth=None):
        super().__init__(timeout, auth)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(self.timeout)
            self.sock.connect(path)
        except Exception:
            self.sock.close()
            raise

    def _write(self, data):
        self.sock.sendall(data)

    def _read(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# The relay run under another uid: connects, says "#connected", then copies
# stdin -> socket and socket -> stdout until either side ends.
_RELAY = r"""
import os, select, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    sys.stderr.write("relay: connect %s: %s\n" % (sys.argv[1], e))
    sys.exit(3)
os.write(1, b"#connected\n")
fds = [0, s.fileno()]
while True:
    r, _, _ = select.select(fds, [], [])
    if 0 in r:
        d = os.read(0, 65536)
        if not d:
            break
        try:
            s.sendall(d)
        except OSError:
            break
    if s.fileno() in r:
        try:
            d = s.recv(65536)
        except OSError:
            d = b""
        if not d:
            break
        v = memoryview(d)
        while v:
            n = os.write(1, v)
            v = v[n:]
"""


_foreign_copies = {}


def foreign_program(path):
    """argv prefix that runs build program `path` from a copy any uid can
    execute. The checkout may live where other uids cannot reach it (a clone
    under /root is mode 0700), so a program started under another uid runs
    from a world-readable temporary directory: the ELF itself, or for a
    libtool wrapper its real program from .libs/ plus the build's shared
    libraries (lib*.so*), with LD_LIBRARY_PATH pointing at the copy. The
    copies are made once per test process and removed at exit."""
    path = os.path.abspath(path)
    if path in _foreign_copies:
        return list(_foreign_copies[path])
    d = tempfile.mkdtemp(prefix="gh-bin-", dir=_short_tmp())
    _foreign_dirs.append(d)
    os.chmod(d, 0o755)
    name = os.path.basename(path)
    real = path
    libs = []
    with open(path, "rb") as f:
        wrapper = f.read(2) == b"#!"
    if wrapper:
        libdir = os.path.join(os.path.dirname(path), ".libs")
        for cand in ("lt-" + name, name):
            if os.path.isfile(os.path.join(libdir, cand)):
                real = os.path.join(libdir, cand)
                break
        else:
            raise ServerError("%s is a script without a program in %s" % (path, libdir))
        libs = [os.path.join(libdir, n) for n in sorted(os.listdir(libdir))
                if n.startswith("lib") and ".so" in n]
    dst = os.path.join(d, name)
    shutil.copyfile(real, dst)
    os.chmod(dst, 0o755)
    for lib in libs:
        out = os.path.join(d, os.path.basename(lib))
        shutil.copyfile(lib, out)  # follows symlinks: libx.so.1 becomes a file
        os.chmod(out, 0o755)
    argv = [dst]
    if libs:
        ld = d + (":" + os.environ["LD_LIBRARY_PATH"] if os.environ.get("LD_LIBRARY_PATH")
                  else "")
        argv = ["env", "LD_LIBRARY_PATH=" + ld, dst]
    _foreign_copies[path] = argv
    return list(argv)


def _short_tmp():
    # sun_path is 108 bytes, and the directory must be reachable by other uids
    return "/tmp" if len(tempfile.gettempdir()) > 60 else None


_foreign_dirs = []


@atexit.register
def _remove_foreign_copies():
    for d in _foreign_dirs:
        shutil.rmtree(d, ignore_errors=True)


def setpriv_prefix(uid, gid=None, groups=None):
    """argv prefix running a command as uid/gid (supplementary groups:
    none, or the list given)."""
    gid = uid if gid is None else gid
    argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid]
    if groups:
        argv.append("--groups=" + ",".join(str(g) for g in groups))
    else:
        argv.append("--clear-groups")
    return argv


def as_uid(uid, argv, gid=None, groups=None, **kwargs):
    """subprocess.run(argv) as uid/gid through setpriv; kwargs go to run
    (a timeout of 30 s, scaled, unless given)."""
    kwargs.setdefault("timeout", scaled(30))
    return subprocess.run(setpriv_prefix(uid, gid, groups) + list(argv), **kwargs)


class UidClient(_LineClient):
    """Like Client, but connected from a relay process running as uid."""

    def __init__(self, path, uid, gid=None, groups=None, timeout=None, auth=None):
        super().__init__(timeout, auth)
        self.uid = uid
        self.proc = subprocess.Popen(
            setpriv_prefix(uid, gid, groups) + [sys.executable, "-I", "-c", _RELAY, path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        _live_procs.add(self.proc)
        try:
            first = self.recv_line(scaled(10))
        except socket.timeout:
            first = None
        if first != b"#connected":
            err = self._relay_stderr()
            self.close()
            raise ConnectionRefusedError("relay as uid %d could not connect to %s: %s"
                                         % (uid, path, err.strip() or first))

    def _relay_stderr(self):
        try:
            self.proc.wait(scaled(2))
            return self.proc.stderr.read().decode("utf-8", "replace")
        except Exception:
            return ""

    def _write(self, data):
        try:
            v = memoryview(data)
            while v:
                n = os.write(self.proc.stdin.fileno(), v)
                v = v[n:]
        except BrokenPipeError:
            raise ConnectionClosed("relay ended (server closed the connection)")

    def _read(self, timeout):
        fd = self.proc.stdout.fileno()
        r, _, _ = select.select([fd], [], [], max(timeout, 0))
        if not r:
            raise socket.timeout("relay read timed out")
        return os.read(fd, 65536)

    def close(self):
        p = self.proc
        if p.poll() is None:
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(scaled(2))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in (p.stdin, p.stdout, p.stderr):
            try:
                f.close()
            except OSError:
                pass
        _live_procs.discard(p)


# -------------------------------------------------------------------- server

_live_procs = set()
_live_servers = set()


@atexit.register
def _kill_everything():
    for s in list(_live_servers):
        try:
            s.close()
        except Exception:
            s._hard_kill()
    for p in list(_live_procs):
        try:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        except Exception:
            pass


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "WARNING: ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


def _ini_value(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


def render_config(config, fast_argon2=True):
    """INI text for a Server's config argument (see the module docstring)."""
    if config is None:
        config = {}
    defaults = dict(FAST_ARGON2) if fast_argon2 else {}
    defaults["loop_threads"] = str(loop_threads())
    if isinstance(config, str):
        text = config
        extra = "".join("%s = %s\n" % (k, v) for k, v in defaults.items()
                        if not re.search(r"^\s*%s\s*=" % k, text, re.M))
        # keys before any section header belong to [server]
        text = extra + text
        return text if text.endswith("\n") or not text else text + "\n"
    if config and all(isinstance(v, dict) for v in config.values()):
        sections = {k: dict(v) for k, v in config.items()}
    else:
        sections = {"server": dict(config)}
    server = sections.setdefault("server", {})
    for k, v in defaults.items():
        server.setdefault(k, v)
    out = []
    for name in ["server"] + [n for n in sections if n != "server"]:
        out.append("[%s]\n" % name)
        for k, v in sections[name].items():
            out.append("%s = %s\n" % (k, _ini_value(v)))
        out.append("\n")
    return "".join(out)


class Server:
    """One gatehoused process on a private temporary directory."""

    def __init__(self, tmpdir=None, config=None, extra_args=(), env=None, start=True,
                 fast_argon2=True, world_access=False, run_as=None, check_exit=True):
        self.owns_dir = tmpdir is None
        if tmpdir is None:
            base = None
            if len(tempfile.gettempdir()) > 60:  # sun_path is 108 bytes
                base = "/tmp"
            tmpdir = tempfile.mkdtemp(prefix="gh-it-", dir=base)
        self.dir = tmpdir
        self.state_dir = os.path.join(tmpdir, "state")
        self.socket_path = os.path.join(tmpdir, "gh.sock")
        self.log_path = os.path.join(tmpdir, "stderr.log")
        self.extra_args = list(extra_args)
        self.env = env
        self.run_as = run_as
        self.check_exit = check_exit
        self.world_access = world_access
        self.proc = None
        self.pid = None
        self.exit_codes = []
        self._stderr_cache = ""
        self._clients = []
        self._closed = False
        self.config_path = None

        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        if world_access:
            if isinstance(config, str):
                config = "socket_mode = 0666\n" + config
            else:
                cfg = dict(config or {})
                if cfg and all(isinstance(v, dict) for v in cfg.values()):
                    cfg["server"] = dict(cfg.get("server", {}))
                    cfg["server"].setdefault("socket_mode", "0666")
                else:
                    cfg.setdefault("socket_mode", "0666")
                config = cfg
            os.chmod(tmpdir, 0o711)
        if config is not None or fast_argon2 or os.environ.get("GH_LOOP_THREADS"):
            self.config_path = os.path.join(tmpdir, "gatehoused.conf")
            with open(self.config_path, "w", encoding="utf-8") as f:
                f.write(render_config(config, fast_argon2))
            os.chmod(self.config_path, 0o644)
        if run_as is not None:
            for root, dirs, files in os.walk(tmpdir):
                for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                    os.chown(n, run_as[0], run_as[1])
        _live_servers.add(self)
        if start:
            self.start()

    # -- process control
    def argv(self):
        prog = [gatehoused_path()]
        if self.run_as is not None:
            prog = (setpriv_prefix(self.run_as[0], self.run_as[1])
                    + foreign_program(gatehoused_path()))
        argv = prog + ["--foreground", "--state-dir", self.state_dir, "--socket",
                       self.socket_path]
        if self.config_path:
            argv += ["--config", self.config_path]
        argv += self.extra_args
        return argv

    def _env(self):
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        return env

    def start(self, wait=True):
        if self.running():
            raise ServerError("server already running (pid %d)" % self.pid)
        if not os.access(gatehoused_path(), os.X_OK):
            raise ServerError("no executable %s (set GH_BUILDDIR)" % gatehoused_path())
        log = open(self.log_path, "ab")
        try:
            log.write(("---- start %s\n" % time.strftime("%H:%M:%S")).encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, env=self._env())
        finally:
            log.close()
        self.pid = self.proc.pid
        if wait:
            self.wait_ready()
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=None):
        """Waits until a ping on the socket answers ok."""
        timeout = max(20.0, scaled(10)) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._note_exit(code)
                raise ServerError("gatehoused exited with %s during start-up; argv %s\n"
                                  "stderr:\n%s" % (code, self.argv(), self.stderr_text()))
            try:
                c = Client(self.socket_path, timeout=2)
                try:
                    r = c.call("ping")
                finally:
                    c.close()
                if r.get("ok") is True:
                    return
                last = "ping answered %r" % (r,)
            except (OSError, ProtocolError) as e:
                last = "%s: %s" % (type(e).__name__, e)
            time.sleep(0.05)
        stderr = self.stderr_text()
        self._hard_kill()
        raise ServerError("gatehoused did not answer ping within %.0fs (last: %s)\nstderr:\n%s"
                          % (timeout, last, stderr))

    def _note_exit(self, code):
        self.exit_codes.append(code)

    def stop(self, timeout=None):
        """SIGTERM, wait; returns the exit code (negative: killed by that
        signal). Kills with SIGKILL after timeout (default 15 s, scaled) and
        raises ServerError then."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            timeout = scaled(15) if timeout is None else timeout
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._hard_kill()
                raise ServerError("gatehoused (pid %d) did not exit within %.0fs of SIGTERM"
                                  % (self.pid, timeout))
            self._note_exit(self.proc.returncode)
        self._close_clients()
        return self.proc.returncode

    def kill9(self):
        """SIGKILL by pid; returns after the process is reaped."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
            self._note_exit(self.proc.returncode)
        self._close_clients()

    def _hard_kill(self):
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def restart(self):
        """stop() (when running) then start(); returns the stop exit code."""
        code = self.stop() if self.running() else None
        self.start()
        return code

    def close(self):
        """Kills the server if it still runs and removes its directory."""
        if self._closed:
            return
        self._closed = True
        self._close_clients()
        self._hard_kill()
        self._stderr_cache = self.stderr_text()
        _live_servers.discard(self)
        if self.owns_dir and not os.environ.get("GH_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def _close_clients(self):
        for c in self._clients:
            c.close()
        self._clients = []

    # -- talking to it
    def client(self, **kw):
        c = Client(self.socket_path, **kw)
        self._clients.append(c)
        return c

    def uid_client(self, uid, **kw):
        c = UidClient(self.socket_path, uid, **kw)
        self._clients.append(c)
        return c

    def call(self, op, **fields):
        """One request on a fresh connection."""
        with Client(self.socket_path) as c:
            return c.call(op, **fields)

    # -- inspection
    def stderr_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return self._stderr_cache

    def sanitizer_report(self):
        text = self.stderr_text()
        for m in SANITIZER_MARKERS:
            i = text.find(m)
            if i >= 0:
                return text[max(0, i - 200):i + 4000]
        return None

    def rss_kib(self):
        """VmRSS of the server in KiB (None when not running)."""
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (OSError, TypeError):
            return None
        return None


def init_admin(server, name, password, check=True, timeout=None):
    """Bootstraps admin user NAME (member of gatehouse-admins) with
    `gatehoused --init-admin`; stops/restarts a running server around it."""
    was_running = server.running()
    if was_running:
        server.stop()
    prog = [gatehoused_path()]
    if server.run_as is not None:
        prog = (setpriv_prefix(server.run_as[0], server.run_as[1])
                + foreign_program(gatehoused_path()))
    argv = prog + ["--init-admin", name, "--state-dir", server.state_dir]
    if server.config_path:
        argv += ["--config", server.config_path]
    cp = subprocess.run(argv, input=(password + "\n").encode("utf-8"), stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, env=server._env(),
                        timeout=scaled(30) if timeout is None else timeout)
    if check and cp.returncode != 0:
        raise ServerError("%s exited %d\nstdout:\n%s\nstderr:\n%s"
                          % (" ".join(argv), cp.returncode, cp.stdout.decode("utf-8", "replace"),
                             cp.stderr.decode("utf-8", "replace")))
    if was_running:
        server.start()
    return cp


def run_cli(server, args, input=None, uid=None, gid=None, env=None, timeout=None):
    """Runs the gatehouse CLI against server's socket (as uid when given)."""
    prog = [cli_path()]
    if uid is not None:
        prog = setpriv_prefix(uid, gid) + foreign_program(cli_path())
    argv = prog + ["--socket", server.socket_path] + list(args)
    e = dict(os.environ)
    if env:
        e.update(env)
    if isinstance(input, str):
        input = input.encode("utf-8")
    return subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=e, timeout=scaled(30) if timeout is None else timeout)


# ----------------------------------------------------------------- test case

class TestCase(unittest.TestCase):
    """unittest.TestCase with server fixtures and protocol assertions."""

    def start_server(self, **kw):
        kw_check = kw.get("check_exit", True)
        start = kw.pop("start", True)
        s = Server(start=False, **kw)
        self._gh_servers = getattr(self, "_gh_servers", [])
        self._gh_servers.append(s)
        self.addCleanup(self._finish_server, s, kw_check)
        if start:
            s.start()
        return s

    def _finish_server(self, s, check_exit):
        try:
            code = None
            if s.running():
                code = s.stop()
            report = s.sanitizer_report()
        finally:
            s.close()
        if report:
            raise AssertionError("sanitizer report in gatehoused's stderr:\n" + report)
        if check_exit and code not in (None, 0):
            raise AssertionError("gatehoused exited with %s on SIGTERM at teardown\nstderr tail:\n%s"
                                 % (code, _tail(s.stderr_text(), 40)))

    def client(self, server, **kw):
        c = Client(server.socket_path, **kw)
        self.addCleanup(c.close)
        return c

    def uid_client(self, server, uid, **kw):
        c = UidClient(server.socket_path, uid, **kw)
        self.addCleanup(c.close)
        return c

    def assertOk(self, resp, msg=None):
        if not isinstance(resp, dict) or resp.get("ok") is not True:
            self.fail("expected ok:true, got %r%s" % (resp, "" if msg is None else " (%s)" % msg))
        return resp

    def assertError(self, resp, code, msg=None):
        codes = (code,) if isinstance(code, str) else tuple(code)
        got = None
        if isinstance(resp, dict) and resp.get("ok") is False:
            err = resp.get("error")
            if isinstance(err, dict):
                got = err.get("code")
                if not isinstance(err.get("message"), str):
                    self.fail("error without a message string: %r" % (resp,))
        if got not in codes:
            self.fail("expected error %s, got %r%s" % ("|".join(codes), resp,
                                                       "" if msg is None else " (%s)" % msg))
        return resp


def _tail(text, n):
    lines = text.splitlines()
    return "\n".join(lines[-n:])


# ---------------------------------------------------------------- TAP runner

class TestTimeout(Exception):
    pass


class _TapResult(unittest.TestResult):
    def __init__(self, out, timeout):
        super().__init__()
        self.out = out
        self.n = 0
        self.timeout = timeout
        self._started = None
        self._bad = False
        self._diag = []
        self._directive = ""

    def _emit(self, text):
        self.out.write(text + "\n")
        self.out.flush()

    def _comment(self, text):
        for line in text.rstrip("\n").splitlines():
            self._emit("# " + line)

    def startTest(self, test):
        super().startTest(test)
        self._bad = False
        self._diag = []
        self._directive = ""
        self._started = time.monotonic()
        _watchdog.arm(test, self.timeout)
        signal.alarm(int(self.timeout) + 1)

    def stopTest(self, test):
        signal.alarm(0)
        _watchdog.disarm()
        self.n += 1
        name = _test_name(test)
        secs = time.monotonic() - self._started
        if self._bad:
            self._emit("not ok %d - %s%s" % (self.n, name, self._directive))
        else:
            self._emit("ok %d - %s%s" % (self.n, name, self._directive))
        for d in self._diag:
            self._comment(d)
        if secs > 5:
            self._comment("%s took %.1fs" % (name, secs))
        super().stopTest(test)

    def _server_tails(self, test):
        out = []
        for s in getattr(test, "_gh_servers", []):
            out.append("gatehoused (dir %s) stderr tail:\n%s" % (s.dir, _tail(s.stderr_text(), 30)))
        return out

    def addError(self, test, err):
        super().addError(test, err)
        if isinstance(test, unittest.case._SubTest):
            test = test.test_case
        if not isinstance(test, unittest.TestCase):  # a class/module fixture
            self.n += 1
            self._emit("not ok %d - %s" % (self.n, test))
            self._comment(self._exc_info_to_string(err, test))
            return
        self._bad = True
        self._diag.append(self._exc_info_to_string(err, test))
        self._diag.extend(self._server_tails(test))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._bad = True
        self._diag.append(self._exc_info_to_string(err, test))
        self._diag.extend(self._server_tails(test))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._bad = True
            self._diag.append("%s:\n%s" % (subtest._subDescription(),
                                           self._exc_info_to_string(err, test)))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._directive = " # SKIP " + reason.replace("\n", " ")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._bad = True
        self._directive = " # TODO expected failure"
        self._diag.append(self._exc_info_to_string(err, test))

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._directive = " # TODO unexpected success"


def _test_name(test):
    return "%s.%s" % (type(test).__name__, getattr(test, "_testMethodName", str(test)))


class _Watchdog:
    """Bails out of the whole file when one test overruns twice its timeout
    (a hang that SIGALRM could not interrupt, e.g. in a fixture)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.deadline = None
        self.test = None
        self.thread = None

    def arm(self, test, timeout):
        with self.lock:
            self.test = test
            self.deadline = time.monotonic() + 2 * timeout + 5
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def disarm(self):
        with self.lock:
            self.deadline = None

    def _run(self):
        while True:
            time.sleep(1)
            with self.lock:
                if self.deadline is not None and time.monotonic() > self.deadline:
                    sys.stdout.write("Bail out! %s hung\n" % _test_name(self.test))
                    sys.stdout.flush()
                    _kill_everything()
                    os._exit(2)


_watchdog = _Watchdog()


def _terminated(signum, frame):
    sys.stdout.write("Bail out! terminated by signal %d\n" % signum)
    sys.stdout.flush()
    _kill_everything()
    os._exit(128 + signum)


def _alarm(signum, frame):
    raise TestTimeout("test exceeded its time limit (GH_TEST_TIMEOUT)")


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def main(module="__main__"):
    """Runs the TestCases of module (default: the script) and prints TAP."""
    mod = sys.modules[module] if isinstance(module, str) else module
    filters = [a for a in sys.argv[1:] if not a.startswith("-")]
    tests = list(_flatten(unittest.defaultTestLoader.loadTestsFromModule(mod)))
    if filters:
        tests = [t for t in tests if any(f in _test_name(t) for f in filters)]
    try:
        timeout = float(os.environ.get("GH_TEST_TIMEOUT", "60"))
    except ValueError:
        timeout = 60.0
    timeout = scaled(timeout)
    signal.signal(signal.SIGALRM, _alarm)
    # killed from outside (make, timeout): still reap the servers (atexit)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminated)
    # a test's children must not inherit an ignored SIGPIPE surprise: keep
    # Python's default (ignored, so writes raise BrokenPipeError instead)
    out = sys.stdout
    out.write("1..%d\n" % len(tests))
    if not os.access(gatehoused_path(), os.X_OK):
        out.write("# no gatehoused at %s: set GH_BUILDDIR\n" % gatehoused_path())
    if SCALE != 1:
        out.write("# timing scale %.1f%s\n" % (SCALE, " (sanitizer build)" if SANITIZED else ""))
    out.flush()
    result = _TapResult(out, timeout)
    suite = unittest.TestSuite(tests)
    suite.run(result)
    _kill_everything()
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    sys.exit(1 if failed else 0)
