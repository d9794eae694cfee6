"""slapd.py: a private OpenLDAP slapd for the sync tests (Python 3, stdlib).

    with Slapd(ldif=text) as ldap:          # or ldap = Slapd(...); ldap.close()
        ldap.uri          # ldap://127.0.0.1:PORT
        ldap.ldapi_uri    # ldapi://<url-encoded socket path>
        ldap.add(ldif) / ldap.modify(ldif) / ldap.delete(dn) / ldap.modrdn(dn, rdn)
        ldap.stop() / ldap.start()          # same port and data: "upstream down"
        ldap.pause() / ldap.resume()        # SIGSTOP/SIGCONT: "upstream hangs"

The server runs from a temporary directory: slapd.conf from
conf/ldap/slapd.conf.in (back-mdb, syncprov, Debian's schemas and modules
from /usr/lib/ldap), the database loaded with slapadd before the first start,
slapd in the foreground (-d 0) as a child process listening on a free
loopback port and an ldapi socket. It is stopped by its pid: at close(), at
the end of a with block, and at interpreter exit (atexit), also on failure.
"""
import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

SLAPD = os.environ.get("SLAPD", "/usr/sbin/slapd")
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SUFFIX = "dc=example,dc=com"
ADMIN_DN = "cn=admin," + SUFFIX
ADMIN_PW = "secret-admin"
HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("GH_SRCDIR", os.path.join(HERE, "..", ".."))
TEMPLATE = os.path.join(SRCDIR, "conf", "ldap", "slapd.conf.in")
# Deadlines (not sleeps) for slapd to listen, stop or resume: generous, as a
# loaded machine (sanitizer builds of gatehoused beside it) delays it.
START_TIMEOUT = 90
STATE_TIMEOUT = 30

_live = set()


def _kill_all():
    for s in list(_live):
        s._kill()


atexit.register(_kill_all)


def available():
    return os.access(SLAPD, os.X_OK) and shutil.which("ldapmodify") is not None


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A loopback TCP port nobody listens on, below the kernel's ephemeral
    range: no outgoing connection of any process can take it between this
    call and slapd's bind, nor between a stop() and the start() that must
    find the same port again (a port the kernel hands out for bind(0) could)."""
    high = min(_ephemeral_low(), 65536) - 1
    low = max(1024, high - 12000)
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlapdError(Exception):
    pass


class Slapd:
    def __init__(self, ldif=None, sessionlog=0, tmpdir=None, start=True, tls=False,
                 tls_files=None, schemas=()):
        """tls: a self-signed certificate for 127.0.0.1 (ca_file is it).
        tls_files: (ca, cert, key) made by the caller; slapd then also
        listens for ldaps:// on ldaps_port (ldaps_uri)."""
        self.dir = tmpdir or tempfile.mkdtemp(prefix="gh-slapd-")
        self.proc = None
        self.sock = os.path.join(self.dir, "ldapi")
        self.ldapi_uri = "ldapi://" + urllib.parse.quote(self.sock, safe="")
        self._tls_ports = bool(tls_files)
        self._pick_ports()
        self.pwfile = os.path.join(self.dir, "admin.pw")
        with open(self.pwfile, "w") as f:
            f.write(ADMIN_PW)
        os.chmod(self.pwfile, 0o600)
        os.makedirs(os.path.join(self.dir, "db"), exist_ok=True)
        extra = "syncprov-sessionlog %d" % sessionlog if sessionlog else ""
        with open(TEMPLATE) as f:
            conf = f.read()
        self.ca_file = None
        if tls:
            self.ca_file = self._make_cert()
            conf = ("TLSCACertificateFile %s\nTLSCertificateFile %s\nTLSCertificateKeyFile %s\n"
                    % (self.ca_file, self.ca_file, os.path.join(self.dir, "key.pem"))) + conf
        elif tls_files:
            self.ca_file, cert, key = tls_files
            conf = ("TLSCACertificateFile %s\nTLSCertificateFile %s\nTLSCertificateKeyFile %s\n"
                    % (self.ca_file, cert, key)) + conf
        for path in schemas:  # after Debian's, before the database
            conf = conf.replace("\nmodulepath", "\ninclude         %s\nmodulepath" % path, 1)
        conf = (conf.replace("@DIR@", self.dir).replace("@ROOTPW@", ADMIN_PW)
                .replace("@SYNCPROV_EXTRA@", extra))
        self.conf = os.path.join(self.dir, "slapd.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        if ldif is not None:
            self.load(ldif)
        _live.add(self)
        if start:
            # nobody has seen the ports yet: one taken meanwhile by another
            # test's listener is replaced, not a failure
            for attempt in range(5):
                try:
                    self.start()
                    break
                except SlapdError:
                    if attempt == 4 or not self._ports_taken():
                        self.close()
                        raise
                    self._pick_ports()

    def _ports_taken(self):
        """True when another process holds one of our TCP ports (slapd logs
        nothing at -d 0 when its bind fails)."""
        for port in (self.port, self.ldaps_port):
            if port is None:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return True
        return False

    def _pick_ports(self):
        self.port = free_port()
        self.uri = "ldap://127.0.0.1:%d" % self.port
        self.ldaps_port = self.ldaps_uri = None
        if self._tls_ports:
            self.ldaps_port = free_port()
            self.ldaps_uri = "ldaps://127.0.0.1:%d" % self.ldaps_port

    def _make_cert(self):
        """A self-signed certificate for 127.0.0.1 (its own CA)."""
        cert = os.path.join(self.dir, "cert.pem")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", os.path.join(self.dir, "key.pem"), "-out", cert,
                            "-days", "2", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise SlapdError("openssl failed: " + r.stdout[-1000:])
        return cert

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def load(self, ldif):
        """Offline bulk load (slapadd -q), before the first start."""
        path = os.path.join(self.dir, "fixture.ldif")
        with open(path, "w") as f:
            f.write(ldif)
        r = subprocess.run([SLAPADD, "-q", "-f", self.conf, "-l", path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise SlapdError("slapadd failed: " + r.stdout[-2000:])

    def start(self, timeout=START_TIMEOUT):
        """Starts slapd and returns once it accepts connections on its TCP
        port and its ldapi socket exists; SlapdError (with its log) if it
        exits first or is not listening by the deadline."""
        if self.proc is not None:
            return
        self.log = open(os.path.join(self.dir, "slapd.log"), "ab")
        self.log.write(b"---- start\n")
        self.log.flush()
        urls = "ldap://127.0.0.1:%d/ %s" % (self.port, self.ldapi_uri)
        if self.ldaps_uri:
            urls += " %s/" % self.ldaps_uri
        self.proc = subprocess.Popen([SLAPD, "-h", urls, "-f", self.conf, "-d", "0"],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                self.log.close()
                raise SlapdError("slapd exited at start (status %s): %s"
                                 % (rc, self.log_text().rsplit("---- start\n", 1)[-1][-2000:]))
            if self._listening():
                return
            time.sleep(0.05)
        self._kill()
        self.log.close()
        raise SlapdError("slapd did not listen within %ss: %s"
                         % (timeout, self.log_text().rsplit("---- start\n", 1)[-1][-2000:]))

    def _listening(self):
        """Every listener accepts a connection (a stale ldapi socket file
        left by a killed slapd does not)."""
        try:
            for port in (self.port, self.ldaps_port):
                if port is not None:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        pass
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as u:
                u.settimeout(1)
                u.connect(self.sock)
            return True
        except OSError:
            return False

    def stop(self):
        """SIGTERM by pid, then SIGKILL; the data stays for start()."""
        p, self.proc = self.proc, None
        if p is None:
            return
        try:
            p.send_signal(signal.SIGCONT)  # a paused slapd handles SIGTERM only then
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        self.log.close()

    def _thread_states(self):
        """The state letter of each of slapd's threads (/proc/PID/task)."""
        states = []
        base = "/proc/%d/task" % self.proc.pid
        for tid in os.listdir(base):
            try:
                with open(os.path.join(base, tid, "stat")) as f:
                    # "tid (comm) S ...": comm may hold spaces or parentheses
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except (OSError, IndexError):
                pass  # a thread that just ended
        return states

    def _wait_states(self, pred, what, timeout=STATE_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            states = self._thread_states()
            if pred(states):
                return
            if time.monotonic() >= deadline:
                raise SlapdError("slapd did not %s within %ss (thread states %s)"
                                 % (what, timeout, "".join(states)))
            time.sleep(0.005)

    def pause(self):
        """SIGSTOP: the port still accepts connections, nothing answers.
        kill() only asks for the stop; each thread stops when it is next
        scheduled, which on a loaded machine can be after the test's next
        request reached slapd: so this returns once every thread is stopped."""
        self.proc.send_signal(signal.SIGSTOP)
        self._wait_states(lambda st: st and all(s in "tT" for s in st), "stop")

    def resume(self):
        """SIGCONT, and returns once no thread is stopped any more."""
        self.proc.send_signal(signal.SIGCONT)
        self._wait_states(lambda st: not any(s in "tT" for s in st), "resume")

    def _kill(self):
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass

    def close(self):
        try:
            self.stop()
        finally:
            self._kill()
            _live.discard(self)
            if os.environ.get("GH_KEEP_TMP") != "1":
                shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "slapd.log"), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # ---- changes through the ldap-utils clients (over ldapi) ----

    def _tool(self, argv, input_text=None):
        cmd = argv + ["-H", self.ldapi_uri, "-x", "-D", ADMIN_DN, "-y", self.pwfile]
        r = subprocess.run(cmd, input=input_text, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        if r.returncode != 0:
            raise SlapdError("%s failed (%d): %s" % (argv[0], r.returncode, r.stdout[-2000:]))
        return r.stdout

    def add(self, ldif):
        return self._tool(["ldapadd"], ldif)

    def modify(self, ldif):
        return self._tool(["ldapmodify"], ldif)

    def delete(self, *dns):
        return self._tool(["ldapdelete"] + list(dns))

    def modrdn(self, dn, newrdn, newsuperior=None):
        argv = ["ldapmodrdn", "-r"]
        if newsuperior:
            argv += ["-s", newsuperior]
        return self._tool(argv + [dn, newrdn])

    def search(self, base, filt="(objectClass=*)", attrs=()):
        return self._tool(["ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-b", base, filt]
                          + list(attrs))

    def bind_ok(self, dn, password):
        r = subprocess.run(["ldapwhoami", "-H", self.ldapi_uri, "-x", "-D", dn, "-w", password],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return r.returncode == 0


if __name__ == "__main__":
    import sys
    sys.path.insert(0, HERE)
    import gen_ldif
    import io
    buf = io.StringIO()
    gen_ldif.generate(buf, 20, 5)
    with Slapd(ldif=buf.getvalue()) as s:
        print(s.uri, s.ldapi_uri)
        print(s.search(SUFFIX, "(uid=u00001)", ["entryUUID", "uid"]))
