"""`make install` and the paths it implies.

Installs the build into a temporary DESTDIR once and checks what lands there:
binaries, libgatehouse with only the public API exported (header, version
script, debian symbols file and library agree), the header naming the
installed socket, gatehouse.pc, the four man pages (rendered without
warnings), the installed configuration (every key commented out, the
installed paths), the systemd unit generated from configure's sbindir with
its hardening and the state and run directories compiled into the installed
gatehoused (for this build's prefix, and for Debian's /var and /run), the
sysusers.d and tmpfiles.d snippets.

Then, as root in a private mount namespace with a tmpfs over the install
prefix (so the host is untouched): the installed gatehoused reads the
installed configuration file, keeps its state in LOCALSTATEDIR/lib/gatehouse
and listens on RUNSTATEDIR/gatehouse/gatehoused.sock; the installed CLI finds
that socket by default; the build-tree gatehoused ignores the system
configuration and serves ./var, which the build-tree CLI finds by default.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ghtest  # noqa: E402

_inst = {}


def plain_make_env():
    """The environment without the outer make's flags (make check's TESTS=,
    its jobserver): the install is a make of its own."""
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DESTDIR"):
        env.pop(k, None)
    return env


def make_vars(*names):
    """Expanded make variables of the build directory (prefix, sbindir...)."""
    rules = "print-gh-vars:\n" + "".join("\t@echo '%s=$(%s)'\n" % (n, n) for n in names)
    cp = subprocess.run(["make", "-s", "--no-print-directory", "-C", ghtest.builddir(),
                         "-f", "Makefile", "-f", "-", "print-gh-vars"], input=rules.encode(),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=plain_make_env(),
                        timeout=60)
    if cp.returncode != 0:
        raise RuntimeError(cp.stderr.decode())
    out = {}
    for line in cp.stdout.decode().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def installed():
    """(destdir, vars) of one `make install DESTDIR=...` per test process."""
    if not _inst:
        d = tempfile.mkdtemp(prefix="gh-inst-")
        os.chmod(d, 0o755)
        cp = subprocess.run(["nice", "make", "-s", "--no-print-directory", "-C", ghtest.builddir(),
                             "install", "DESTDIR=" + d], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=plain_make_env(),
                            timeout=ghtest.scaled(300))
        if cp.returncode != 0:
            raise RuntimeError("make install failed:\n" + cp.stdout.decode()[-3000:])
        _inst["dir"] = d
        _inst["vars"] = make_vars("prefix", "bindir", "sbindir", "libdir", "includedir",
                                  "sysconfdir", "localstatedir", "runstatedir", "mandir",
                                  "systemdsystemunitdir", "sysusersdir", "tmpfilesdir", "pamlibdir")
    return _inst["dir"], _inst["vars"]


def render_unit(**dirs):
    """The unit make generates for other configure directories."""
    rules = "print-gh-unit:\n\t@$(gh_unit_subst) $(top_srcdir)/conf/gatehoused.service.in\n"
    cp = subprocess.run(["make", "-s", "--no-print-directory", "-C", ghtest.builddir(),
                         "-f", "Makefile", "-f", "-", "print-gh-unit"] +
                        ["%s=%s" % kv for kv in dirs.items()], input=rules.encode(),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=plain_make_env(),
                        timeout=60)
    if cp.returncode != 0:
        raise RuntimeError(cp.stderr.decode())
    return cp.stdout.decode()


def unit_writable_dirs(unit):
    """The directories a unit makes writable under ProtectSystem=strict."""
    out = set("/var/lib/" + m for m in re.findall(r"(?m)^StateDirectory=(\S+)", unit))
    out |= set("/run/" + m for m in re.findall(r"(?m)^RuntimeDirectory=(\S+)", unit))
    for line in re.findall(r"(?m)^ReadWritePaths=(.*)$", unit):
        out |= set(p.lstrip("-") for p in line.split())
    return out


def public_functions():
    with open(os.path.join(ghtest.srcdir(), "clients", "gatehouse.h")) as f:
        text = f.read()
    return sorted(set(re.findall(r"\b(gh_[a-z0-9_]+)\(", text)))


class Install(ghtest.TestCase):

    @classmethod
    def tearDownClass(cls):
        if _inst and not os.environ.get("GH_KEEP_TMP"):
            shutil.rmtree(_inst["dir"], ignore_errors=True)

    def path(self, var, *rest):
        d, v = installed()
        return os.path.join(d + v[var], *rest)

    def read(self, var, *rest):
        with open(self.path(var, *rest)) as f:
            return f.read()

    def test_files_in_place(self):
        for var, rel in [("sbindir", "gatehoused"), ("bindir", "gatehouse"),
                         ("libdir", "libgatehouse.so.1"), ("libdir", "libgatehouse.so"),
                         ("includedir", "gatehouse.h"), ("libdir", "pkgconfig/gatehouse.pc"),
                         ("sysconfdir", "gatehouse/gatehoused.conf"),
                         ("systemdsystemunitdir", "gatehoused.service"),
                         ("sysusersdir", "gatehouse.conf"), ("tmpfilesdir", "gatehouse.conf"),
                         ("mandir", "man1/gatehouse.1"), ("mandir", "man8/gatehoused.8"),
                         ("mandir", "man5/gatehoused.conf.5"), ("mandir", "man3/libgatehouse.3")]:
            self.assertTrue(os.path.exists(self.path(var, rel)), "%s/%s missing" % (var, rel))
        self.assertTrue(os.access(self.path("sbindir", "gatehoused"), os.X_OK))

    def test_library_exports_public_api_only(self):
        api = public_functions()
        self.assertIn("gh_client_new", api)
        nm = subprocess.run(["nm", "-D", "--defined-only", self.path("libdir", "libgatehouse.so.1")],
                            stdout=subprocess.PIPE, check=True).stdout.decode()
        exported = {}
        for line in nm.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TWDBRV":
                name, _, ver = parts[2].partition("@@")
                exported[name] = ver
        self.assertEqual(sorted(exported), api)
        self.assertEqual(set(exported.values()), {"GATEHOUSE_1"})
        with open(os.path.join(ghtest.srcdir(), "clients", "libgatehouse.map")) as f:
            mapped = re.findall(r"^\s+(gh_[a-z0-9_]+);", f.read(), re.M)
        self.assertEqual(sorted(mapped), api)
        sym = os.path.join(ghtest.srcdir(), "debian", "libgatehouse1.symbols")
        if os.path.exists(sym):
            with open(sym) as f:
                text = f.read()
            self.assertIn("libgatehouse.so.1 libgatehouse1", text)
            listed = sorted(m for m in re.findall(r"^ (gh_[a-z0-9_]+)@GATEHOUSE_1 ", text, re.M))
            self.assertEqual(listed, api)
        readelf = subprocess.run(["readelf", "-d", self.path("libdir", "libgatehouse.so.1")],
                                 stdout=subprocess.PIPE, check=True).stdout.decode()
        self.assertIn("[libgatehouse.so.1]", readelf)

    def test_header_and_pc_name_installed_paths(self):
        d, v = installed()
        sock = v["runstatedir"] + "/gatehouse/gatehoused.sock"
        self.assertIn('#define GH_CLIENT_DEFAULT_SOCKET "%s"' % sock,
                      self.read("includedir", "gatehouse.h"))
        pc = self.read("libdir", "pkgconfig/gatehouse.pc")
        self.assertRegex(pc, r"(?m)^Libs: .*-lgatehouse")
        self.assertRegex(pc, r"(?m)^Version: " + re.escape(ghtest.project_version()))

    def test_os_modules_name_installed_sockets(self):
        """libnss_gatehouse and pam_gatehouse default to the sockets under
        configure's runstatedir, as libgatehouse and gatehoused do."""
        d, v = installed()
        run = v["runstatedir"] + "/gatehouse/"
        for var, lib, sock in [("libdir", "libnss_gatehouse.so.2", "nss.sock"),
                               ("pamlibdir", "pam_gatehouse.so", "gatehoused.sock")]:
            with open(self.path(var, lib), "rb") as f:
                data = f.read()
            self.assertIn((run + sock).encode() + b"\0", data, lib)

    def test_config_commented_with_installed_paths(self):
        d, v = installed()
        text = self.read("sysconfdir", "gatehouse/gatehoused.conf")
        live = [l for l in text.splitlines() if l.strip() and not l.startswith(";")]
        self.assertEqual(live, ["[server]"])  # every key commented out
        self.assertIn("; state_dir = %s/lib/gatehouse\n" % v["localstatedir"], text)
        self.assertIn("; socket = %s/gatehouse/gatehoused.sock\n" % v["runstatedir"], text)
        self.assertNotIn("./var", text)
        # every key of the source checkout's reference file is there
        with open(os.path.join(ghtest.srcdir(), "conf", "gatehoused.conf")) as f:
            keys = re.findall(r"^([a-z][a-z0-9_]*) *=", f.read(), re.M)
        for k in keys:
            self.assertRegex(text, r"(?m)^; %s *=" % k)
        # and the installed server accepts it (uncommented, it is the defaults)
        st = tempfile.mkdtemp(prefix="gh-conf-")
        self.addCleanup(shutil.rmtree, st, True)
        conf = os.path.join(st, "c.conf")
        with open(os.path.join(ghtest.srcdir(), "conf", "gatehoused.conf")) as f:
            setting = set(l for l in f.read().splitlines() if re.match(r"[a-z][a-z0-9_]* *=", l))
        lines = []
        for l in text.splitlines():
            if l.startswith("; ") and (l[2:] in setting or l[2:].startswith(("state_dir =",
                                                                           "socket ="))):
                l = l[2:]
            lines.append(l)
        with open(conf, "w") as f:
            f.write("\n".join(lines).replace("argon2_opslimit = 2", "argon2_opslimit = 1")
                    .replace("argon2_memlimit = 64M", "argon2_memlimit = 64K") + "\n")
        cp = subprocess.run([self.path("sbindir", "gatehoused"), "--config", conf, "--state-dir",
                             os.path.join(st, "s"), "--init-admin", "boss"],
                            input=b"long enough password\n", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=ghtest.scaled(30))
        self.assertEqual(cp.returncode, 0, cp.stderr.decode())

    def test_systemd_unit(self):
        d, v = installed()
        unit = self.read("systemdsystemunitdir", "gatehoused.service")
        self.assertIn("ExecStart=%s/gatehoused --foreground\n" % v["sbindir"], unit)
        self.assertNotRegex(unit, r"@[a-z]+@")
        for line in ["User=gatehouse", "Group=gatehouse", "LimitNOFILE=", "ProtectSystem=strict",
                     "PrivateTmp=yes", "NoNewPrivileges=yes", "ProtectHome=yes",
                     "CapabilityBoundingSet=\n", "ExecReload=/bin/kill -HUP $MAINPID"]:
            self.assertIn(line, unit)
        if shutil.which("systemd-analyze"):
            cp = subprocess.run(["systemd-analyze", "verify", "--man=no",
                                 self.path("systemdsystemunitdir", "gatehoused.service")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            bad = [l for l in cp.stdout.decode().splitlines()
                   if "gatehoused.service" in l and "Command" not in l]
            self.assertEqual(bad, [])

    def test_systemd_unit_paths_are_the_binarys(self):
        """The directories the unit makes writable under ProtectSystem=strict
        are the ones compiled into the installed gatehoused (its
        --check-config), for this build's prefix; tmpfiles.d creates those
        systemd does not (StateDirectory= and RuntimeDirectory= reach only
        /var/lib and /run)."""
        d, v = installed()
        unit = self.read("systemdsystemunitdir", "gatehoused.service")
        st = tempfile.mkdtemp(prefix="gh-unit-")
        self.addCleanup(shutil.rmtree, st, True)
        empty = os.path.join(st, "empty.conf")
        open(empty, "w").close()
        cp = subprocess.run([self.path("sbindir", "gatehoused"), "--config", empty,
                             "--check-config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=ghtest.scaled(30))
        self.assertEqual(cp.returncode, 0, cp.stderr.decode())
        eff = dict(l.split(" = ", 1) for l in cp.stdout.decode().splitlines() if " = " in l)
        state, run = eff["state_dir"], os.path.dirname(eff["socket"])
        self.assertEqual(state, v["localstatedir"] + "/lib/gatehouse")
        self.assertEqual(run, v["runstatedir"] + "/gatehouse")
        self.assertEqual(os.path.dirname(eff["nss_socket"]), run)
        writable = unit_writable_dirs(unit)
        self.assertIn(state, writable, unit)
        self.assertIn(run, writable, unit)
        tmp = self.read("tmpfilesdir", "gatehouse.conf")
        for path in writable:
            self.assertIn("d %s " % path, tmp)
        # the same template for the packages' /var, /run, /etc: systemd's own
        deb = render_unit(localstatedir="/var", runstatedir="/run", sysconfdir="/etc")
        self.assertEqual(unit_writable_dirs(deb), {"/var/lib/gatehouse", "/run/gatehouse"})
        for line in ["StateDirectory=gatehouse\n", "StateDirectoryMode=0700\n",
                     "RuntimeDirectory=gatehouse\n", "ConfigurationDirectory=gatehouse\n"]:
            self.assertIn(line, deb)
        self.assertNotRegex(deb, r"(?m)^ReadWritePaths=")
        self.assertNotRegex(deb, r"(?m)^@")
        # and a split one: state under /var, the socket elsewhere
        mixed = render_unit(localstatedir="/var", runstatedir="/srv/run", sysconfdir="/opt/etc")
        self.assertEqual(unit_writable_dirs(mixed), {"/var/lib/gatehouse", "/srv/run/gatehouse"})
        self.assertNotRegex(mixed, r"(?m)^RuntimeDirectory=")
        self.assertNotRegex(mixed, r"(?m)^ConfigurationDirectory=")

    def test_sysusers_tmpfiles(self):
        d, v = installed()
        users = self.read("sysusersdir", "gatehouse.conf")
        self.assertRegex(users, r'(?m)^u gatehouse - "[^"]+" %s/lib/gatehouse '
                         % re.escape(v["localstatedir"]))
        tmp = self.read("tmpfilesdir", "gatehouse.conf")
        self.assertIn("d %s/lib/gatehouse 0700 gatehouse gatehouse -" % v["localstatedir"], tmp)
        self.assertIn("d %s/gatehouse 0755 gatehouse gatehouse -" % v["runstatedir"], tmp)

    def test_man_pages_render_cleanly(self):
        if not shutil.which("groff"):
            self.skipTest("groff not installed")
        for page in ["man1/gatehouse.1", "man8/gatehoused.8", "man5/gatehoused.conf.5",
                     "man3/libgatehouse.3"]:
            cp = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z",
                                 self.path("mandir", page)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            self.assertEqual((cp.returncode, cp.stderr.decode()), (0, ""), page)

    @ghtest.unittest.skipUnless(ghtest.is_root() and shutil.which("unshare"),
                                "needs root and unshare for a private mount namespace")
    def test_installed_and_build_tree_defaults(self):
        d, v = installed()
        prefix = v["prefix"]
        for k in ("sysconfdir", "localstatedir", "runstatedir"):
            if not v[k].startswith(prefix + "/") or prefix in ("/", "/usr"):
                self.skipTest("%s=%s outside a private prefix: cannot shadow it safely"
                              % (k, v[k]))
        if not os.path.isdir(prefix):
            self.skipTest("prefix %s does not exist to mount over" % prefix)
        work = tempfile.mkdtemp(prefix="gh-ns-")
        os.chmod(work, 0o755)
        self.addCleanup(shutil.rmtree, work, True)
        script = r"""
set -eu
pids=
trap 'for p in $pids; do kill -KILL $p 2>/dev/null || true; done' EXIT
mount -t tmpfs -o mode=0755 gh-test "$PREFIX"
mkdir -p "$SYSCONF/gatehouse" "$STATE/lib" "$RUN"  # no $RUN/gatehouse: the server makes it
printf '[server]\nadmin_group = ops-admins\nargon2_opslimit = 1\nargon2_memlimit = 64K\n' \
    > "$SYSCONF/gatehouse/gatehoused.conf"
export LD_LIBRARY_PATH="$DEST$LIBDIR"
echo "== init"
printf 'long enough password\n' | "$DEST$SBIN/gatehoused" --init-admin boss
"$DEST$SBIN/gatehoused" > "$WORK/installed.log" 2>&1 &
pid=$!; pids="$pids $pid"
for i in $(seq 1 200); do [ -S "$RUN/gatehouse/gatehoused.sock" ] && break; sleep 0.05; done
echo "== ping"
"$DEST$BIN/gatehouse" ping
echo "== add"
printf 'alice password 1\n' | "$DEST$BIN/gatehouse" user add alice --password-stdin
"$DEST$BIN/gatehouse" --json user list
kill -TERM $pid; wait $pid || echo "server exit $?"
echo "== state"
ls "$STATE/lib/gatehouse"
unset LD_LIBRARY_PATH
# the build tree: ./var, never the system configuration (made invalid here)
echo 'no_such_key = 1' >> "$SYSCONF/gatehouse/gatehoused.conf"
mkdir -p "$WORK/checkout" && cd "$WORK/checkout"
"$BUILD/gatehoused" > "$WORK/tree.log" 2>&1 &
pid=$!; pids="$pids $pid"
for i in $(seq 1 200); do [ -S ./var/gatehoused.sock ] && break; sleep 0.05; done
echo "== tree"
"$BUILD/gatehouse" ping
kill -TERM $pid; wait $pid || echo "server exit $?"
"""
        env = dict(os.environ, PREFIX=prefix, SYSCONF=v["sysconfdir"], STATE=v["localstatedir"],
                   RUN=v["runstatedir"], DEST=d, LIBDIR=v["libdir"], SBIN=v["sbindir"],
                   BIN=v["bindir"], WORK=work, BUILD=ghtest.builddir())
        env.pop("GATEHOUSE_SOCKET", None)
        cp = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            timeout=ghtest.scaled(60))
        out = cp.stdout.decode()
        logs = ""
        for n in ("installed.log", "tree.log"):
            try:
                with open(os.path.join(work, n)) as f:
                    logs += "\n--- %s\n%s" % (n, f.read())
            except OSError:
                pass
        self.assertEqual(cp.returncode, 0, out + logs)
        self.assertIn("admin user 'boss' is a member of 'ops-admins'", out, out)  # config read
        self.assertNotIn("server exit", out, out + logs)
        self.assertIn('"alice"', out.split("== add")[1])
        self.assertIn("data.mdb", out.split("== state")[1])
        self.assertIn("listening on %s/gatehouse/gatehoused.sock" % v["runstatedir"], logs)
        self.assertIn("listening on ./var/gatehoused.sock", logs)


if __name__ == "__main__":
    ghtest.main()
