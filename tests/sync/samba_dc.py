"""samba_dc.py: a private Samba Active Directory domain controller for the
sync tests (root only).

    dc = SambaDC()                       # provisions and starts (~15 s)
    dc.uri, dc.base, dc.admin_dn, dc.pwfile
    dc.tool("user", "create", "alice", "Pw-1!")  # samba-tool on the DC's database
    dc.show("user", "alice")            # samba-tool ... show: {"objectGUID": ...}
    dc.close()                           # stops samba by pid, removes everything

`samba-tool domain provision --targetdir` keeps the domain's state in the
test directory; the pid, ncalrpc and log paths are moved there too, so
nothing outside it is written. samba runs in the foreground (`samba -i`,
single process model) with only its LDAP service on 127.0.0.1:389 (AD has
no other port), and `ldap server require strong auth = no` so that plain
simple binds work on loopback, as the tests' binds are. samba-tool edits the
directory through the same database while the server runs.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REALM = "CORP.EXAMPLE.COM"
DOMAIN = "CORP"
BASE = "DC=corp,DC=example,DC=com"
ADMIN_PW = "Secret-Adm1n!"


def available():
    """None when a DC can be made here, else why not."""
    if os.geteuid() != 0:
        return "a Samba AD DC needs root (it listens on port 389)"
    if shutil.which("samba") is None and not os.path.exists("/usr/sbin/samba"):
        return "samba not installed (samba, samba-dsdb-modules, samba-vfs-modules)"
    if not os.path.exists("/usr/lib/x86_64-linux-gnu/samba/vfs/acl_xattr.so") and \
            not any(os.path.exists(os.path.join(d, "samba/vfs/acl_xattr.so"))
                    for d in ("/usr/lib", "/usr/lib64")):
        return "samba-vfs-modules not installed (provisioning needs acl_xattr)"
    if port_taken() and os.environ.get("GH_CI") != "1":
        # CI (.ci/run sets GH_CI=1) runs the test anyway: it then fails
        # saying so, rather than skip
        return "port 389 is taken on 127.0.0.1"
    return None


def port_taken():
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", 389)) == 0


class SambaError(Exception):
    pass


class SambaDC:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="gh-samba-", dir="/tmp")
        self.conf = os.path.join(self.dir, "etc", "smb.conf")
        self.uri = "ldap://127.0.0.1"
        self.base = BASE
        self.admin_dn = "CN=Administrator,CN=Users," + BASE
        self.pwfile = os.path.join(self.dir, "admin.pw")
        with open(self.pwfile, "w") as f:
            f.write(ADMIN_PW)
        os.chmod(self.pwfile, 0o600)
        self.proc = None
        if port_taken():
            shutil.rmtree(self.dir, ignore_errors=True)
            raise SambaError("port 389 is taken on 127.0.0.1 (AD's LDAP port, which the DC "
                             "needs): stop what listens there")
        try:
            self._provision()
            self.start()
        except Exception:
            self.close()
            raise

    def _run(self, argv, timeout=120):
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise SambaError("%s failed (%d): %s" % (" ".join(argv[:3]), r.returncode,
                                                    r.stdout[-2000:]))
        return r.stdout

    def _provision(self):
        d = self.dir
        opts = {"interfaces": "lo", "bind interfaces only": "yes",
                "ldap server require strong auth": "no", "pid directory": d + "/run",
                "ncalrpc dir": d + "/ncalrpc", "log file": d + "/log.%m",
                "winbindd socket directory": d + "/winbindd",
                "ntp signd socket directory": d + "/ntp_signd"}
        os.makedirs(d + "/run")
        argv = ["samba-tool", "domain", "provision", "--targetdir=" + d, "--realm=" + REALM,
                "--domain=" + DOMAIN, "--adminpass=" + ADMIN_PW, "--server-role=dc",
                "--dns-backend=NONE", "--use-rfc2307", "--host-name=dc1",
                "--host-ip=127.0.0.1"]
        argv += ["--option=%s=%s" % kv for kv in opts.items()]
        self._run(argv, timeout=300)
        # only the LDAP service: no smbd, winbindd, kdc... to start or wait for
        with open(self.conf) as f:
            lines = f.read().splitlines()
        with open(self.conf, "w") as f:
            for line in lines:
                if line.strip().startswith("server services"):
                    line = "\tserver services = ldap"
                f.write(line + "\n")
                if line.strip() == "[global]":
                    f.write("\tldap server require strong auth = no\n")

    def start(self, timeout=60):
        self.log = open(os.path.join(self.dir, "samba.log"), "ab")
        self.proc = subprocess.Popen(["samba", "-i", "-M", "single", "-s", self.conf],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SambaError("samba exited at start: " + self.log_text()[-2000:])
            r = subprocess.run(["ldapsearch", "-x", "-H", self.uri, "-b", "", "-s", "base",
                                "highestCommittedUSN"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise SambaError("samba did not answer within %ss" % timeout)

    def log_text(self):
        try:
            with open(os.path.join(self.dir, "samba.log"), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def tool(self, *args):
        return self._run(["samba-tool"] + list(args)
                         + ["-H", os.path.join(self.dir, "private", "sam.ldb"), "-s", self.conf])

    def populate(self, users, groups):
        """users: {name: password}; groups: {name: [member names]} (users or
        groups), created in one process through Samba's Python API."""
        code = r'''
import sys
sys.path.append("/usr/lib/python3/dist-packages")
from samba.param import LoadParm
from samba.auth import system_session
from samba.samdb import SamDB
import json
spec = json.loads(sys.argv[1])
lp = LoadParm()
lp.load(sys.argv[2])
db = SamDB(url=sys.argv[3], session_info=system_session(), lp=lp)
for name, pw in spec["users"].items():
    db.newuser(name, pw)
for name in spec["groups"]:
    db.newgroup(name)
for name, members in spec["groups"].items():
    db.add_remove_group_members(name, members, add_members_operation=True)
'''
        import json
        self._run(["/usr/bin/python3", "-c", code, json.dumps({"users": users, "groups": groups}),
                   self.conf, os.path.join(self.dir, "private", "sam.ldb")])

    def show(self, kind, name):
        """The attributes samba-tool prints, in Samba's own text forms."""
        out = {}
        for line in self.tool(kind, "show", name).splitlines():
            k, sep, v = line.partition(": ")
            if sep and k not in out:
                out[k] = v
        return out

    def close(self):
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if os.environ.get("GH_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
