#!/usr/bin/env python3
"""Backup and restore: `gatehouse backup FILE` while clients keep writing,
then `gatehoused --restore FILE` into a fresh state directory and a server
on it. Every write acknowledged before the backup began is in the copy and
served after the restore; the server kept answering writes during the
backup. Restore refuses a file that is not a Gatehouse database, refuses to
run beside a live server (found by LMDB's lock on the state directory, on
whatever socket it listens), installs atomically and keeps the previous
file; as root it gives the file to the state directory's owner.
The protocol: admin only, unknown ids, offsets, chunks read again, an
abandoned backup does not hold up a shutdown."""

import base64
import hashlib
import os
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ghtest  # noqa: E402


class Writers:
    """n threads on their own connections adding users in pipelined windows
    until stopped; acked is a list of (monotonic time of the ack, name)."""

    def __init__(self, srv, n=3, window=8, prefix="w"):
        self.srv = srv
        self.acked = []
        self.errors = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(k, window, prefix), daemon=True)
                        for k in range(n)]
        for t in self.threads:
            t.start()

    def run(self, k, window, prefix):
        seq = 0
        c = ghtest.Client(self.srv.socket_path, timeout=ghtest.scaled(30))
        try:
            while not self.stop.is_set():
                names = ["%s%d-%06d" % (prefix, k, seq + i) for i in range(window)]
                seq += window
                for n in names:
                    c.send({"op": "user.add", "name": n, "display_name": "x" * 40})
                for n in names:
                    r = c.recv()
                    now = time.monotonic()
                    with self.lock:
                        if r.get("ok") is True:
                            self.acked.append((now, n))
                        else:
                            self.errors.append((n, r))
        except Exception as e:
            with self.lock:
                self.errors.append(("connection", repr(e)))
        finally:
            c.close()

    def acked_before(self, t):
        with self.lock:
            return [n for (at, n) in self.acked if at < t]

    def count(self):
        with self.lock:
            return len(self.acked)

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(ghtest.scaled(30))


def restore(state_dir, sock, path, check=True):
    cp = subprocess.run([ghtest.gatehoused_path(), "--state-dir", state_dir, "--socket", sock,
                         "--restore", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        timeout=ghtest.scaled(60))
    out = (cp.stdout + cp.stderr).decode("utf-8", "replace")
    if check and cp.returncode != 0:
        raise AssertionError("restore failed (%d): %s" % (cp.returncode, out))
    return cp.returncode, out


class Backup(ghtest.TestCase):

    def backup_cli(self, srv, path, *extra):
        return subprocess.run([ghtest.cli_path(), "--socket", srv.socket_path, "backup", path]
                              + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=ghtest.scaled(120))

    def seed(self, c, n, prefix="seed"):
        reqs = [{"op": "user.add", "name": "%s%05d" % (prefix, i), "display_name": "y" * 60}
                for i in range(n)]
        for r in c.pipeline(reqs):
            self.assertOk(r)

    def test_backup_under_writes_then_restore(self):
        srv = self.start_server()
        c = self.client(srv)
        self.seed(c, 4000)  # a copy that takes a moment
        self.assertOk(c.call("group.add", name="ops"))
        self.assertOk(c.call("group.add_member", group="ops", user="seed00001"))
        w = Writers(srv)
        ghtest.wait_until(lambda: w.count() > 200, ghtest.scaled(20))
        out = os.path.join(srv.dir, "backup.mdb")
        began = time.monotonic()
        before = w.acked_before(began)
        at_start = w.count()
        cp = self.backup_cli(srv, out)
        ended = w.count()
        time.sleep(0.2)
        w.join()
        self.assertEqual(cp.returncode, 0, cp.stderr.decode())
        self.assertEqual(w.errors, [])
        self.assertGreater(len(before), 200)
        # the server kept acknowledging writes while the backup ran
        self.assertGreater(ended, at_start, "no write was acknowledged during the backup")
        st = os.stat(out)
        self.assertEqual(st.st_mode & 0o777, 0o600)
        self.assertIn("sha256", cp.stdout.decode())
        with open(out, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        self.assertIn(digest, cp.stdout.decode())
        self.assertFalse(os.path.exists(out + ".partial"))

        # restore into a fresh directory, serve it
        target = self.start_server(start=False)
        rc, text = restore(target.state_dir, target.socket_path, out)
        self.assertRegex(text, r"restored .*: schema \d+, \d+ users, 1 groups")
        target.start()
        tc = self.client(target)
        names = ["seed00000", "seed03999"] + before
        got = tc.pipeline([{"op": "user.get", "name": n} for n in names])
        missing = [n for n, r in zip(names, got) if r.get("ok") is not True]
        self.assertEqual(missing, [], "acknowledged before the backup, missing after restore")
        users = self.assertOk(tc.call("stats"))["store"]["users"]
        self.assertGreaterEqual(users, 4000 + len(before))
        self.assertLessEqual(users, 4000 + len(w.acked))
        g = self.assertOk(tc.call("group.get", name="ops"))
        self.assertIn("seed00001", str(g))
        # the restored server takes writes
        self.assertOk(tc.call("user.add", name="after-restore"))

    def test_copy_runs_off_the_loop(self):
        """Writes are acknowledged while the copy itself runs (between the
        backup request and its answer, which comes when the copy is done):
        more acknowledgements than the writers can have in flight, so they
        were not already queued before it began. Acks come back through
        loop 0, where backup runs."""
        srv = self.start_server()
        c = self.client(srv)
        self.seed(c, 6000)  # a copy that takes a moment
        w = Writers(srv)
        in_flight = 3 * 8  # Writers' connections x window
        ghtest.wait_until(lambda: w.count() > 200, ghtest.scaled(20))
        during = []
        for attempt in range(5):
            at_start = w.count()
            t0 = time.monotonic()
            c.send({"op": "backup"})
            r = c.recv(timeout=ghtest.scaled(60))
            took = time.monotonic() - t0
            during.append((w.count() - at_start, round(took, 3)))
            bid = self.assertOk(r)["backup"]
            # fetch it all (one backup at a time), then again
            got = 0
            while got < r["size"]:
                got += len(base64.b64decode(self.assertOk(
                    c.call("backup", backup=bid, offset=got))["data"]))
            if during[-1][0] > 2 * in_flight:
                break
        w.join()
        self.assertEqual(w.errors, [])
        self.assertGreater(max(n for n, _ in during), 2 * in_flight,
                           "writes acknowledged during the copy (acks, seconds): %s" % during)

    def test_restore_checks_and_atomic_install(self):
        srv = self.start_server()
        c = self.client(srv)
        self.assertOk(c.call("user.add", name="old-one"))
        out = os.path.join(srv.dir, "b1.mdb")
        self.assertEqual(self.backup_cli(srv, out).returncode, 0)
        self.assertOk(c.call("user.add", name="newer-one"))
        # an existing file is kept unless --force
        cp = self.backup_cli(srv, out)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn(b"--force", cp.stderr)
        # not while the server runs
        rc, text = restore(srv.state_dir, srv.socket_path, out, check=False)
        self.assertEqual(rc, 1, text)
        self.assertIn("stop it first", text)
        # nor beside a server on another socket (or still starting): the
        # state directory's LMDB lock names it, the socket probe cannot
        rc, text = restore(srv.state_dir, os.path.join(srv.dir, "elsewhere.sock"), out,
                           check=False)
        self.assertEqual(rc, 1, text)
        self.assertIn("process %d has the database" % srv.pid, text)
        self.assertOk(c.call("user.get", name="newer-one"))  # untouched
        srv.stop()
        data = os.path.join(srv.state_dir, "data.mdb")
        with open(data, "rb") as f:
            before = f.read()
        # garbage and truncated copies are refused; the state is untouched
        junk = os.path.join(srv.dir, "junk")
        with open(junk, "wb") as f:
            f.write(os.urandom(70000))
        trunc = os.path.join(srv.dir, "trunc")
        with open(out, "rb") as f, open(trunc, "wb") as g:
            g.write(f.read()[:4096])
        for bad in (junk, trunc, os.path.join(srv.dir, "absent")):
            rc, text = restore(srv.state_dir, srv.socket_path, bad, check=False)
            self.assertEqual(rc, 1, text)
            with open(data, "rb") as f:
                self.assertEqual(f.read(), before, "a refused restore changed data.mdb")
            self.assertEqual(sorted(n for n in os.listdir(srv.state_dir)
                                    if n.startswith(".restore")), [])
        rc, text = restore(srv.state_dir, srv.socket_path, out)
        self.assertIn("data.mdb.pre-restore", text)
        with open(os.path.join(srv.state_dir, "data.mdb.pre-restore"), "rb") as f:
            self.assertEqual(f.read(), before)
        srv.start()
        c = self.client(srv)
        self.assertOk(c.call("user.get", name="old-one"))
        self.assertError(c.call("user.get", name="newer-one"), "not_found")
        self.assertOk(c.call("user.add", name="newer-one"))

    @ghtest.unittest.skipUnless(ghtest.is_root(), "needs root to restore for another owner")
    def test_restore_as_root_keeps_the_owner(self):
        """Run as root (as the README says), restore gives the database to
        the state directory's owner, the service account."""
        srv = self.start_server()
        c = self.client(srv)
        self.assertOk(c.call("user.add", name="kept"))
        out = os.path.join(srv.dir, "b.mdb")
        self.assertEqual(self.backup_cli(srv, out).returncode, 0)
        srv.stop()
        for root, dirs, files in os.walk(srv.state_dir):
            for n in [root] + [os.path.join(root, f) for f in files]:
                os.chown(n, ghtest.NOBODY, ghtest.NOBODY)
        rc, text = restore(srv.state_dir, srv.socket_path, out)
        st = os.stat(os.path.join(srv.state_dir, "data.mdb"))
        self.assertEqual((st.st_uid, st.st_gid), (ghtest.NOBODY, ghtest.NOBODY), text)
        self.assertEqual(st.st_mode & 0o777, 0o600)
        srv.start()
        self.assertOk(self.client(srv).call("user.get", name="kept"))

    def test_protocol(self):
        srv = self.start_server(world_access=True)
        c = self.client(srv)
        self.seed(c, 3000)
        r = self.assertOk(c.call("backup"))
        bid, size, sha = r["backup"], r["size"], r["sha256"]
        self.assertEqual(len(bid), 32)
        self.assertGreater(size, r["chunk"])  # more than one chunk
        # one backup at a time
        self.assertError(c.call("backup"), "unavailable")
        self.assertError(c.call("backup", backup="0" * 32, offset=0), "not_found")
        self.assertError(c.call("backup", backup=bid), "invalid_argument")
        self.assertError(c.call("backup", backup=bid, offset=size), "invalid_argument")
        self.assertError(c.call("backup", backup=bid, offset=-1), "invalid_argument")
        if ghtest.is_root():
            nobody = self.uid_client(srv, ghtest.NOBODY)
            self.assertError(nobody.call("backup"), "permission_denied")
            self.assertError(nobody.call("backup", backup=bid, offset=0), "permission_denied")
        first = self.assertOk(c.call("backup", backup=bid, offset=0))
        again = self.assertOk(c.call("backup", backup=bid, offset=0))
        self.assertEqual(first["data"], again["data"])  # a chunk may be fetched again
        self.assertIs(first["done"], False)
        blob = b""
        while len(blob) < size:
            r = self.assertOk(c.call("backup", backup=bid, offset=len(blob)))
            self.assertEqual(r["offset"], len(blob))
            blob += base64.b64decode(r["data"])
        self.assertIs(r["done"], True)
        self.assertEqual(len(blob), size)
        self.assertEqual(hashlib.sha256(blob).hexdigest(), sha)
        self.assertEqual(blob[16:20], b"\xde\xc0\xef\xbe")  # LMDB's meta page magic
        # fetched: gone; a new one may start
        self.assertError(c.call("backup", backup=bid, offset=0), "not_found")
        self.assertOk(c.call("backup"))

    def test_abandoned_backup_does_not_block_shutdown(self):
        srv = self.start_server()
        c = self.client(srv)
        self.seed(c, 500)
        self.assertOk(c.call("backup"))
        c.close()
        t0 = time.monotonic()
        self.assertEqual(srv.stop(), 0)
        self.assertLess(time.monotonic() - t0, ghtest.scaled(5))
        # nothing left in the state directory by the spool
        self.assertEqual([n for n in os.listdir(srv.state_dir) if n.startswith(".backup")], [])


if __name__ == "__main__":
    ghtest.main()
