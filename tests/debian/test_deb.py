#!/usr/bin/env python3
"""The Debian packages, built and installed for real (slow: 46 s on 2 quiet
cores, 28 s build + 6 s lintian + 12 s install; 75-130 s on 2 cores shared
with other builds; so CI runs it as a step of its own,
GH_DEB_TEST=1 ./run-tests.sh, not from `make check`).

Builds the source tree with `dpkg-buildpackage -us -uc -b` in a temporary
copy, runs lintian (no error allowed), then, as root in a private mount
namespace, installs the packages into an overlay of the host's root (every
change lands in a temporary upper directory; the host is untouched) and
checks inside that chroot: the gatehouse account exists, the state
directory is private to it, gatehoused starts from the installed
configuration as that user without systemd, `gatehouse ping` and
`gatehouse user add` work on the installed socket, a simple bind works on
its LDAP front-end (ldapi); libnss-gatehouse and
libpam-gatehouse put their modules where glibc and Linux-PAM look and
pam-auth-update adds pam_gatehouse to common-*; with a test nsswitch.conf
bind-mounted over the chroot's, `getent passwd alice` and `id alice` go
through the installed NSS module to the installed server, and pamtester
logs alice in through the common-* stack; with the gatehouse-hbac profile
enabled as the README says, a role lets alice in and bob, whom no role
allows, is refused; with the server stopped, root
still passes the account stack; purging the two modules takes them and
their stack entries away. Purging gatehoused removes the configuration and
keeps the database and the account, a reinstall serves the kept database,
and purge with gatehoused/purge_data=true removes it.

    GH_SRCDIR=/path/to/checkout python3 tests/debian/test_deb.py
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import ghtest  # noqa: E402

_built = {}


def missing_tools():
    need = ["dpkg-buildpackage", "dh", "lintian", "unshare", "chroot", "git"]
    return [t for t in need if not shutil.which(t)]


def build():
    """(dir holding the .debs, the build log) of one build per process."""
    if _built:
        return _built["dir"], _built["log"]
    top = tempfile.mkdtemp(prefix="gh-deb-")
    src = os.path.join(top, "gatehouse-" + (ghtest.project_version() or "0"))
    os.makedirs(src)
    files = subprocess.run(["git", "-C", ghtest.srcdir(), "ls-files", "-co", "--exclude-standard",
                            "-z"], stdout=subprocess.PIPE, check=True).stdout.split(b"\0")
    for f in files:
        f = f.decode()
        if not f or f.startswith("build/") or not os.path.lexists(os.path.join(ghtest.srcdir(), f)):
            continue
        dst = os.path.join(src, f)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(ghtest.srcdir(), f), dst, follow_symlinks=False)
    env = dict(os.environ, DEB_BUILD_OPTIONS="parallel=%d nocheck" % min(os.cpu_count() or 1, 2))
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DESTDIR"):
        env.pop(k, None)
    cp = subprocess.run(["nice", "dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800)
    _built["dir"], _built["log"], _built["rc"] = top, cp.stdout.decode("utf-8", "replace"), \
        cp.returncode
    return top, _built["log"]


INNER = r"""
set -u
export DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo "man-db man-db/auto-update boolean false" | debconf-set-selections
cd /root/debs
step() { echo "== $1"; }
step install
dpkg -i libgatehouse1_*.deb gatehouse-cli_*.deb gatehoused_*.deb libgatehouse-dev_*.deb \
    libnss-gatehouse_*.deb libpam-gatehouse_*.deb \
    > /root/dpkg.log 2>&1 || { cat /root/dpkg.log; echo "dpkg failed"; exit 1; }
step os-files
for f in /lib/$MA/security/pam_gatehouse.so /usr/lib/$MA/libnss_gatehouse.so.2 \
    /usr/share/pam-configs/gatehouse /usr/share/pam-configs/gatehouse-hbac; do
    [ -f "$f" ] && echo "present $f" || echo "missing $f"
done
ldconfig -p | grep -qE "libnss_gatehouse\.so\.2 .*=> (/usr)?/lib/$MA/libnss_gatehouse\.so\.2$" \
    && echo "in the linker cache"
grep -l pam_gatehouse /etc/pam.d/common-auth /etc/pam.d/common-account \
    /etc/pam.d/common-password /etc/pam.d/common-session
step user
getent passwd gatehouse
step dirs
stat -c '%U:%G %a %n' /var/lib/gatehouse /run/gatehouse /etc/gatehouse/gatehoused.conf
start() {
    setpriv --reuid=gatehouse --regid=gatehouse --init-groups /usr/sbin/gatehoused \
        >> /root/gatehoused.log 2>&1 &
    pid=$!
    for i in $(seq 1 200); do [ -S /run/gatehouse/gatehoused.sock ] && return 0; sleep 0.05; done
    echo "no socket"; cat /root/gatehoused.log; return 1
}
stop() { kill -TERM $pid; wait $pid; echo "server exit $?"; }
start || exit 1
step running-as
ps -o user= -p $pid
step ping
gatehouse ping
step add
gatehouse user add alice --no-password && gatehouse --json user get alice
step owner
stat -c '%U %a %n' /var/lib/gatehouse/data.mdb
# OS login through the installed modules: glibc with a test nsswitch.conf
# bind-mounted in this namespace, Linux-PAM with the stack pam-auth-update
# wrote (a test service that includes common-*)
mount --bind /root/nsswitch.conf /etc/nsswitch.conf
step nss
getent passwd alice; echo "getent rc $?"
id alice
step pam
printf 'a-long-passphrase-42\n' | gatehouse user passwd alice --password-stdin >/dev/null \
    && echo "password set"
# the LDAP front-end of the packaged server: a simple bind on its ldapi socket
if command -v ldapwhoami >/dev/null; then
    ldapwhoami -x -H ldapi://%2Fvar%2Flib%2Fgatehouse%2Fldapi -D uid=alice,ou=people,dc=gatehouse \
        -w a-long-passphrase-42 2>&1; echo "ldap rc $?"
fi
if command -v pamtester >/dev/null; then
    printf '@include common-auth\n@include common-account\n' > /etc/pam.d/gh-deb-test
    printf 'a-long-passphrase-42\n' | pamtester -v gh-deb-test alice authenticate acct_mgmt 2>&1
    echo "pam rc $?"
    printf 'not-the-passphrase\n' | pamtester gh-deb-test alice authenticate > /dev/null 2>&1
    echo "wrong password rc $?"
else
    echo "no pamtester"
fi
# roles decide who logs in here (README): a role for alice, the hbac profile
# on, and bob, whom no role allows, refused
step hbac
gatehouse role add login-here --allow "login=host/$(hostname)/*" > /dev/null \
    && gatehouse grant login-here --user alice > /dev/null && echo "role granted"
gatehouse user add bob --no-password > /dev/null && echo "bob added"
pam-auth-update --enable gatehouse-hbac && grep -c 'pam_gatehouse.so hbac' /etc/pam.d/common-account
if command -v pamtester >/dev/null; then
    pamtester -v gh-deb-test alice acct_mgmt 2>&1; echo "alice hbac rc $?"
    pamtester -v gh-deb-test bob acct_mgmt 2>&1; echo "bob hbac rc $?"
fi
gatehouse hbac-test bob "$(hostname)" gh-deb-test; echo "hbac-test rc $?"
stop
step down
getent passwd alice; echo "getent rc $?"
getent passwd root > /dev/null && echo "root resolved"
if command -v pamtester >/dev/null; then
    pamtester -v gh-deb-test root acct_mgmt 2>&1; echo "root account rc $?"
fi
step purge-os
dpkg --purge libpam-gatehouse libnss-gatehouse > /root/dpkg.log 2>&1 \
    || { cat /root/dpkg.log; echo "purge failed"; }
for f in /lib/$MA/security/pam_gatehouse.so /usr/lib/$MA/libnss_gatehouse.so.2 \
    /usr/share/pam-configs/gatehouse /usr/share/pam-configs/gatehouse-hbac \
    /usr/share/doc/libnss-gatehouse; do
    [ -e "$f" ] && echo "kept $f" || echo "gone $f"
done
grep -l pam_gatehouse /etc/pam.d/common-* || echo "no common-* names pam_gatehouse"
getent passwd root > /dev/null && echo "root resolved"
umount /etc/nsswitch.conf
step log
cat /root/gatehoused.log
step purge
dpkg --purge gatehoused > /root/dpkg.log 2>&1 || { cat /root/dpkg.log; echo "purge failed"; }
[ -e /etc/gatehouse ] && echo "etc kept" || echo "etc gone"
[ -e /var/lib/gatehouse/data.mdb ] && echo "data kept" || echo "data gone"
getent passwd gatehouse > /dev/null && echo "user kept" || echo "user gone"
[ -e /usr/sbin/gatehoused ] && echo "binary kept" || echo "binary gone"
step reinstall
dpkg -i gatehoused_*.deb > /root/dpkg.log 2>&1 || { cat /root/dpkg.log; echo "dpkg failed"; }
start || exit 1
gatehouse user get alice > /dev/null && echo "alice served"
stop
step purge-data
echo "gatehoused gatehoused/purge_data boolean true" | debconf-set-selections
dpkg --purge gatehoused > /root/dpkg.log 2>&1 || { cat /root/dpkg.log; echo "purge failed"; }
[ -e /var/lib/gatehouse ] && echo "data kept" || echo "data gone"
step end
"""

OUTER = r"""
set -eu
mount -t overlay gh-deb -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$T/merged"
M="$T/merged"
mount -t proc proc "$M/proc"
mount --bind /dev "$M/dev"
mount -t tmpfs tmpfs "$M/run"
mount -t tmpfs tmpfs "$M/tmp"
mkdir -p "$M/root/debs"
cp "$DEBS"/*.deb "$M/root/debs/"
rm -f "$M"/root/debs/*-dbgsym_*.deb
printf 'passwd: files gatehouse\ngroup: files gatehouse\nshadow: files\nhosts: files\n' \
    > "$M/root/nsswitch.conf"
exec chroot "$M" /bin/bash -c "$INNER"
"""


def sections(out):
    parts, cur = {}, None
    for line in out.splitlines():
        if line.startswith("== "):
            cur = line[3:].strip()
            parts[cur] = []
        elif cur is not None:
            parts[cur].append(line)
    return {k: "\n".join(v) for k, v in parts.items()}


@unittest.skipIf(missing_tools(), "missing tools: %s (apt-get install debhelper lintian)"
                 % " ".join(missing_tools()))
class Debian(ghtest.TestCase):

    @classmethod
    def tearDownClass(cls):
        if _built and not os.environ.get("GH_KEEP_TMP"):
            shutil.rmtree(_built["dir"], ignore_errors=True)

    def debs(self):
        top, log = build()
        self.assertEqual(_built["rc"], 0, "dpkg-buildpackage failed:\n" + log[-4000:])
        return top

    def test_0_build_depends(self):
        # every Debian package configure.ac demands is a Build-Depends (the
        # build host may have it installed anyway, so the build alone would
        # not notice a missing one)
        src = ghtest.srcdir()
        with open(os.path.join(src, "configure.ac")) as f:
            ac = f.read()
        need = set(re.findall(r"GH_NEED_PKG\(\[\w+\],\s*\[[^]]*\],\s*\[([\w.+-]+)\]\)", ac))
        need |= set(re.findall(r"install the Debian package ([a-z0-9][\w.+-]*[\w+])", ac))
        self.assertIn("libssl-dev", need)  # the patterns still match configure.ac
        with open(os.path.join(src, "debian", "control")) as f:
            control = f.read()
        m = re.search(r"^Build-Depends:(.*?)^\S", control, re.M | re.S)
        have = {re.split(r"[\s(\[<]", d.strip())[0] for d in m.group(1).split(",") if d.strip()}
        self.assertEqual(sorted(need - have), [], "configure.ac needs these, debian/control "
                         "lacks them in Build-Depends")

    def test_1_build(self):
        top = self.debs()
        names = sorted(os.path.basename(p).split("_")[0] for p in glob.glob(top + "/*.deb"))
        for pkg in ("gatehoused", "gatehouse-cli", "libgatehouse1", "libgatehouse-dev",
                    "libpam-gatehouse", "libnss-gatehouse"):
            self.assertIn(pkg, names)
        # no dpkg-shlibdeps or symbols complaints
        self.assertNotIn("dpkg-gensymbols: warning", _built["log"])
        self.assertNotIn("dh_missing: warning", _built["log"])
        # built out of the source tree (debian/build): the checkout that
        # built its packages still configures out of tree (README's
        # ./run-tests.sh and ./quickstart.sh); automake refuses a source
        # directory holding config.status
        src = glob.glob(top + "/gatehouse-*/")[0]
        for f in ("config.status", "Makefile", "gh-config.h", "libtool"):
            self.assertFalse(os.path.exists(os.path.join(src, f)), f + " left in the source tree")
        self.assertIn("debian/build", _built["log"])

    def test_2_lintian(self):
        top = self.debs()
        changes = glob.glob(top + "/*.changes")
        self.assertEqual(len(changes), 1)
        cp = subprocess.run(["lintian", "--fail-on", "error", "--no-tag-display-limit"] + changes,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        out = cp.stdout.decode("utf-8", "replace")
        errors = [l for l in out.splitlines() if l.startswith("E:")]
        for l in out.splitlines():
            if l[:2] in ("W:", "E:"):
                sys.stdout.write("# lintian %s\n" % l)
        self.assertEqual(errors, [])
        self.assertEqual(cp.returncode, 0, out)

    @unittest.skipUnless(ghtest.is_root(), "needs root (mount namespace, overlay, chroot)")
    def test_3_install_start_purge(self):
        top = self.debs()
        probe = subprocess.run(["getent", "passwd", "gatehouse"], stdout=subprocess.PIPE)
        if probe.returncode == 0 or os.path.exists("/etc/gatehouse"):
            self.skipTest("this host already has a gatehouse account or /etc/gatehouse")
        t = tempfile.mkdtemp(prefix="gh-ovl-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, t, True)
        for d in ("upper", "work", "merged"):
            os.makedirs(os.path.join(t, d))
        ma = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, check=True).stdout.strip()
        env = dict(os.environ, T=t, DEBS=top, INNER=INNER, MA=ma)
        cp = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", OUTER],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            timeout=ghtest.scaled(300))
        out = cp.stdout.decode("utf-8", "replace")
        if "gh-deb" in out and "overlay" in out and "== install" not in out:
            self.skipTest("no overlay filesystem here: " + out.strip()[-300:])
        s = sections(out)
        self.assertIn("end", s, out)
        self.assertRegex(s["user"], r"^gatehouse:x:\d+:\d+:[^:]*:/var/lib/gatehouse:", out)
        self.assertIn("gatehouse:gatehouse 700 /var/lib/gatehouse", s["dirs"], out)
        self.assertIn("gatehouse:gatehouse 755 /run/gatehouse", s["dirs"], out)
        self.assertIn("root:root 644 /etc/gatehouse/gatehoused.conf", s["dirs"], out)
        self.assertEqual(s["running-as"].strip(), "gatehouse", out)
        self.assertIn("protocol 1", s["ping"], out)
        self.assertIn('"name": "alice"', s["add"], out)
        self.assertIn("gatehouse 600 /var/lib/gatehouse/data.mdb", s["owner"], out)
        self.assertIn("server exit 0", out)
        # the modules where Linux-PAM and glibc look, the profile registered
        ma = env["MA"]
        for f in ("/lib/%s/security/pam_gatehouse.so" % ma, "/usr/lib/%s/libnss_gatehouse.so.2" % ma,
                  "/usr/share/pam-configs/gatehouse", "/usr/share/pam-configs/gatehouse-hbac"):
            self.assertIn("present " + f, s["os-files"], out)
        self.assertIn("in the linker cache", s["os-files"], out)
        for f in ("auth", "account", "password", "session"):
            self.assertIn("/etc/pam.d/common-" + f, s["os-files"], out)
        # getent and id through the installed NSS module and server
        self.assertRegex(s["nss"], r"(?m)^alice:\*:(\d+):\1:[^:]*:/home/alice:/", out)
        self.assertIn("getent rc 0", s["nss"], out)
        self.assertRegex(s["nss"], r"uid=\d+\(alice\) gid=\d+\(alice\)", out)
        self.assertIn("password set", s["pam"], out)
        if shutil.which("ldapwhoami"):
            self.assertIn("dn:uid=alice,ou=people,dc=gatehouse", s["pam"], out)
            self.assertIn("ldap rc 0", s["pam"], out)
        if "no pamtester" not in s["pam"]:
            self.assertIn("successfully authenticated", s["pam"], out)
            self.assertIn("pam rc 0", s["pam"], out)
            self.assertRegex(s["pam"], r"wrong password rc [1-9]", out)
        # HBAC as the README turns it on: alice's role lets her in, bob is refused
        self.assertIn("role granted", s["hbac"], out)
        self.assertRegex(s["hbac"], r"(?m)^1$", out)  # one hbac line in common-account
        if "no pamtester" not in s["pam"]:
            self.assertIn("alice hbac rc 0", s["hbac"], out)
            self.assertIn("Permission denied", s["hbac"], out)
            self.assertRegex(s["hbac"], r"bob hbac rc [1-9]", out)
        self.assertIn("hbac-test rc 1", s["hbac"], out)
        # server down: NSS says "not found" (exit 2), files still answer,
        # and local accounts still pass the account stack
        self.assertIn("getent rc 2", s["down"], out)
        self.assertIn("root resolved", s["down"], out)
        if "no pamtester" not in s["pam"]:
            self.assertIn("root account rc 0", s["down"], out)
        # purge takes the modules, the profile and the stack entries away
        for f in ("/lib/%s/security/pam_gatehouse.so" % ma, "/usr/lib/%s/libnss_gatehouse.so.2" % ma,
                  "/usr/share/pam-configs/gatehouse", "/usr/share/pam-configs/gatehouse-hbac",
                  "/usr/share/doc/libnss-gatehouse"):
            self.assertIn("gone " + f, s["purge-os"], out)
        self.assertIn("no common-* names pam_gatehouse", s["purge-os"], out)
        self.assertIn("root resolved", s["purge-os"], out)
        self.assertIn("listening on /run/gatehouse/gatehoused.sock", s["log"], out)
        self.assertIn("state /var/lib/gatehouse", s["log"], out)
        for want in ("etc gone", "data kept", "user kept", "binary gone"):
            self.assertIn(want, s["purge"], out)
        self.assertIn("alice served", s["reinstall"], out)
        self.assertIn("data gone", s["purge-data"], out)


if __name__ == "__main__":
    os.environ.setdefault("GH_TEST_TIMEOUT", "1200")  # the package build alone takes minutes
    ghtest.main()
