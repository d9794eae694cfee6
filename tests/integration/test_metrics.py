#!/usr/bin/env python3
"""Prometheus metrics (metrics_listen): off by default, loopback only unless
allowed, scraped with curl and validated with `promtool check metrics`
(Debian's prometheus package) and with a parser of the text format here;
the values follow what the server did (requests per op, latency histogram,
auth outcomes including rate_limited, user and peer lockouts, the Argon2
queue above 0 under a storm of auth requests, writer commits and the batch
size histogram (single writes alone, pipelined ones grouped), store,
upstreams from a real slapd and from an unreachable one: the cookie age
growing between polls, bind errors by kind). Scrapes run concurrently with
writes (the HTTP thread never touches the loop's state)."""

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "sync"))
import ghtest  # noqa: E402
import slapd  # noqa: E402

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(r"^(%s)(\{(.*)\})? (\S+)$" % NAME)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse(text, test):
    """The text format 0.0.4, checked strictly: every sample belongs to a
    family declared once by # TYPE before it; label syntax; float values;
    histograms cumulative with +Inf equal to _count. Returns
    {(name, frozenset(labels.items())): value} and {family: type}."""
    types, samples, seen_family = {}, {}, []
    test.assertTrue(text.endswith("\n"))
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, fam, typ = line.split(" ", 3)
            test.assertRegex(fam, "^%s$" % NAME)
            test.assertIn(typ, ("counter", "gauge", "histogram", "summary", "untyped"))
            test.assertNotIn(fam, types, "family %s declared twice" % fam)
            types[fam] = typ
            seen_family.append(fam)
            continue
        test.assertFalse(line.startswith("#"), line)
        m = SAMPLE.match(line)
        test.assertIsNotNone(m, "not a sample line: %r" % line)
        name, labels_text, value = m.group(1), m.group(3) or "", m.group(4)
        labels = {}
        pos = 0
        while pos < len(labels_text):
            lm = LABEL.match(labels_text, pos)
            test.assertIsNotNone(lm, "bad labels in %r" % line)
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] in types:
                fam = name[:-len(suffix)]
        test.assertEqual(fam, seen_family[-1], "%s outside its family block" % name)
        v = float(value)
        key = (name, frozenset(labels.items()))
        test.assertNotIn(key, samples, "duplicate sample %s" % line)
        samples[key] = v
    for fam, typ in types.items():
        if typ != "histogram":
            continue
        series = {}
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                d = dict(labels)
                le = d.pop("le")
                series.setdefault(frozenset(d.items()), []).append((float(le), v))
        for key, buckets in series.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            test.assertEqual(counts, sorted(counts), "%s buckets not cumulative" % fam)
            test.assertEqual(buckets[-1][0], float("inf"))
            test.assertEqual(buckets[-1][1], samples[(fam + "_count", key)])
            test.assertIn((fam + "_sum", key), samples)
    return samples, types


def get(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


class Metrics(ghtest.TestCase):

    def scrape(self, port, path="/metrics", head=False):
        argv = ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]
        if head:
            argv.append("-I")
        cp = subprocess.run(argv + ["http://127.0.0.1:%d%s" % (port, path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=ghtest.scaled(20))
        self.assertEqual(cp.returncode, 0, cp.stderr.decode())
        body, _, code = cp.stdout.decode().rpartition("\n")
        return int(code), body

    def promtool(self, text):
        if not shutil.which("promtool"):
            return None
        cp = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(cp.returncode, 0, cp.stdout.decode())
        return True

    def start_metrics(self, **extra):
        port = ghtest.free_port()
        cfg = {"metrics_listen": "127.0.0.1:%d" % port}
        cfg.update(extra)
        return self.start_server(config=cfg), port

    @unittest.skipUnless(shutil.which("curl"), "curl not installed")
    def test_scrape_values_and_format(self):
        srv, port = self.start_metrics(lockout_threshold=2, lockout_base_delay=60)
        self.assertIn("metrics on http://127.0.0.1:%d/metrics" % port, srv.stderr_text())
        c = self.client(srv)
        for i in range(5):
            self.assertOk(c.call("user.add", name="u%d" % i, password="password-%d" % i))
        self.assertOk(c.call("group.add", name="g"))
        self.assertOk(c.call("auth", user="u1", password="password-1"))
        for _ in range(3):
            c.call("auth", user="u2", password="wrong-password")
        self.assertError(c.call("user.get", name="nobody-here"), "not_found")
        code, text = self.scrape(port)
        self.assertEqual(code, 200, text)
        s, types = parse(text, self)
        if self.promtool(text) is None:
            sys.stdout.write("# promtool not installed: format checked by the parser only\n")
        self.assertEqual(get(s, "gatehouse_build_info", version=ghtest.project_version()), 1)
        self.assertEqual(get(s, "gatehouse_requests_total", op="user.add"), 5)
        self.assertEqual(get(s, "gatehouse_requests_total", op="user.get"), 1)
        self.assertEqual(get(s, "gatehouse_request_errors_total", op="user.get"), 1)
        self.assertEqual(get(s, "gatehouse_request_duration_seconds_count", op="user.add"), 5)
        self.assertEqual(get(s, "gatehouse_request_duration_seconds_bucket", op="user.add",
                             le="+Inf"), 5)
        self.assertGreater(get(s, "gatehouse_request_duration_seconds_sum", op="user.add"), 0)
        self.assertEqual(types["gatehouse_request_duration_seconds"], "histogram")
        self.assertEqual(get(s, "gatehouse_auth_total", outcome="success"), 1)
        self.assertGreaterEqual(get(s, "gatehouse_auth_total", outcome="failure"), 2)
        self.assertGreaterEqual(get(s, "gatehouse_lockouts", kind="user"), 1)
        self.assertEqual(get(s, "gatehouse_argon2_queue_depth"), 0)
        self.assertEqual(get(s, "gatehouse_argon2_queue_max"), 64)
        self.assertGreaterEqual(get(s, "gatehouse_writer_commits_total"), 1)
        self.assertGreaterEqual(get(s, "gatehouse_writer_ops_total"), 6)
        self.assertEqual(get(s, "gatehouse_users"), 5)
        self.assertEqual(get(s, "gatehouse_groups"), 1)
        self.assertGreater(get(s, "gatehouse_store_map_bytes"), 0)
        self.assertGreater(get(s, "gatehouse_store_used_bytes"), 0)
        self.assertEqual(get(s, "gatehouse_connections"), 1)
        self.assertGreaterEqual(get(s, "gatehouse_connections_total"), 1)
        # a scrape sees the state of its moment, not a stale copy
        self.assertOk(c.call("user.add", name="u-late"))
        s2, _ = parse(self.scrape(port)[1], self)
        self.assertEqual(get(s2, "gatehouse_users"), 6)
        self.assertEqual(get(s2, "gatehouse_requests_total", op="user.add"), 6)
        # only /metrics, only GET and HEAD
        self.assertEqual(self.scrape(port, "/")[0], 404)
        self.assertEqual(self.scrape(port, "/metrics/x")[0], 404)
        code, _ = self.scrape(port, head=True)
        self.assertEqual(code, 200)
        cp = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                             "--data", "x=1", "http://127.0.0.1:%d/metrics" % port],
                            stdout=subprocess.PIPE, timeout=ghtest.scaled(20))
        self.assertIn(cp.stdout.decode(), ("405", "000"))

    @unittest.skipUnless(shutil.which("curl"), "curl not installed")
    def test_argon2_queue_depth_under_a_storm(self):
        """The queue gauge follows the jobs: above 0 while a storm of auth
        requests waits for the two hashing threads, back to 0 after."""
        port = ghtest.free_port()
        srv = self.start_server(config={
            "metrics_listen": "127.0.0.1:%d" % port, "argon2_opslimit": 1,
            "argon2_memlimit": "16M", "threadpool_size": 2, "peer_failure_threshold": 1000000},
            fast_argon2=False)
        seen = []
        for storm in range(5):
            def auth_storm(k):
                c = ghtest.Client(srv.socket_path, timeout=ghtest.scaled(60))
                try:
                    # unknown logins: each still costs one hash (the dummy verifier)
                    c.pipeline([{"op": "auth", "user": "ghost%d-%d-%d" % (storm, k, i),
                                 "password": "not this one"} for i in range(6)])
                finally:
                    c.close()

            threads = [threading.Thread(target=auth_storm, args=(k,), daemon=True)
                       for k in range(2)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                s, _ = parse(self.scrape(port)[1], self)
                seen.append(get(s, "gatehouse_argon2_queue_depth"))
                if seen[-1] > 0:
                    break
            for t in threads:
                t.join(ghtest.scaled(60))
            if max(seen) > 0:
                break
        self.assertGreater(max(seen), 0, seen)
        self.assertLessEqual(max(seen), 12)
        s, _ = parse(self.scrape(port)[1], self)
        self.assertEqual(get(s, "gatehouse_argon2_queue_depth"), 0)
        self.assertGreaterEqual(get(s, "gatehouse_auth_total", outcome="failure"), 12)
        self.assertEqual(get(s, "gatehouse_auth_total", outcome="rate_limited"), 0)

    @unittest.skipUnless(shutil.which("curl"), "curl not installed")
    def test_rate_limited_and_peer_lockout(self):
        """A client that fails with many logins is locked out as a peer
        (not per user); its next attempts count as rate_limited."""
        srv, port = self.start_metrics(peer_failure_threshold=3, lockout_threshold=100,
                                       lockout_base_delay=60)
        c = self.client(srv)
        s, _ = parse(self.scrape(port)[1], self)
        self.assertEqual(get(s, "gatehouse_lockouts", kind="peer"), 0)
        self.assertEqual(get(s, "gatehouse_auth_total", outcome="rate_limited"), 0)
        for i in range(3):
            self.assertError(c.call("auth", user="spray%d" % i, password="guess"),
                             "invalid_credentials")
        s, _ = parse(self.scrape(port)[1], self)
        self.assertEqual(get(s, "gatehouse_lockouts", kind="peer"), 1)
        self.assertEqual(get(s, "gatehouse_lockouts", kind="user"), 0)
        self.assertEqual(get(s, "gatehouse_auth_total", outcome="failure"), 3)
        for i in range(2):
            self.assertError(c.call("auth", user="spray-more%d" % i, password="guess"),
                             "rate_limited")
        s, _ = parse(self.scrape(port)[1], self)
        self.assertEqual(get(s, "gatehouse_auth_total", outcome="rate_limited"), 2)
        self.assertEqual(get(s, "gatehouse_auth_total", outcome="failure"), 3)
        self.assertEqual(get(s, "gatehouse_lockouts", kind="peer"), 1)

    @unittest.skipUnless(shutil.which("curl"), "curl not installed")
    def test_writer_batch_size_histogram(self):
        """One write at a time commits alone (le=1); pipelined writes from
        several connections share commits (some batch above 1)."""
        srv, port = self.start_metrics()
        c = self.client(srv)
        s0, types = parse(self.scrape(port)[1], self)
        self.assertEqual(types["gatehouse_writer_batch_size"], "histogram")
        ones0 = get(s0, "gatehouse_writer_batch_size_bucket", le="1")
        for i in range(5):
            self.assertOk(c.call("user.add", name="seq%d" % i))
        s1, _ = parse(self.scrape(port)[1], self)
        self.assertEqual(get(s1, "gatehouse_writer_batch_size_bucket", le="1") - ones0, 5)
        self.assertEqual(get(s1, "gatehouse_writer_batch_size_count") -
                         get(s0, "gatehouse_writer_batch_size_count"), 5)

        def burst(k):
            cc = ghtest.Client(srv.socket_path)
            try:
                rs = cc.pipeline([{"op": "user.add", "name": "b%d-%d" % (k, i)}
                                  for i in range(200)])
                self.assertTrue(all(r.get("ok") is True for r in rs))
            finally:
                cc.close()

        threads = [threading.Thread(target=burst, args=(k,), daemon=True) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(ghtest.scaled(60))
        s2, _ = parse(self.scrape(port)[1], self)
        count = get(s2, "gatehouse_writer_batch_size_count")
        self.assertEqual(count, get(s2, "gatehouse_writer_commits_total"))
        self.assertEqual(get(s2, "gatehouse_writer_batch_size_sum"),
                         get(s2, "gatehouse_writer_ops_total"))
        self.assertEqual(get(s2, "gatehouse_writer_batch_size_sum") -
                         get(s1, "gatehouse_writer_batch_size_sum"), 800)
        grouped = count - get(s2, "gatehouse_writer_batch_size_bucket", le="1")
        self.assertGreater(grouped, 0, "800 pipelined writes, every commit alone")
        self.assertLess(count - get(s1, "gatehouse_writer_batch_size_count"), 800)
        self.promtool(self.scrape(port)[1])

    @unittest.skipUnless(shutil.which("curl"), "curl not installed")
    def test_concurrent_scrapes_while_writing(self):
        srv, port = self.start_metrics()
        stop = threading.Event()
        errors = []

        def write(k):
            c = ghtest.Client(srv.socket_path)
            i = 0
            try:
                while not stop.is_set():
                    r = c.call("user.add", name="w%d-%d" % (k, i))
                    if r.get("ok") is not True:
                        errors.append(r)
                    i += 1
            finally:
                c.close()

        writers = [threading.Thread(target=write, args=(k,), daemon=True) for k in range(2)]
        for t in writers:
            t.start()
        results = []

        def scrape_many():
            for _ in range(15):
                results.append(self.scrape(port))

        scrapers = [threading.Thread(target=scrape_many, daemon=True) for _ in range(3)]
        for t in scrapers:
            t.start()
        for t in scrapers:
            t.join(ghtest.scaled(60))
        stop.set()
        for t in writers:
            t.join(ghtest.scaled(20))
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 45)
        last = 0
        for code, text in results:
            self.assertEqual(code, 200)
            s, _ = parse(text, self)
            self.assertIsNotNone(get(s, "gatehouse_users"))
            last = max(last, get(s, "gatehouse_users"))
        self.assertGreater(last, 0)
        self.promtool(results[-1][1])
        self.assertEqual(srv.stop(), 0)  # the listener stops with the server

    def test_off_by_default_and_loopback_only(self):
        srv = self.start_server()
        self.assertNotIn("metrics on", srv.stderr_text())
        srv.stop()
        port = ghtest.free_port()
        bad = self.start_server(config={"metrics_listen": "0.0.0.0:%d" % port}, start=False,
                                check_exit=False)
        with self.assertRaises(ghtest.ServerError) as e:
            bad.start()
        self.assertIn("metrics_allow_non_loopback", str(e.exception))
        for spec in ("localhost", "127.0.0.1:", "127.0.0.1:99999", "example.org:80"):
            bad = self.start_server(config={"metrics_listen": spec}, start=False,
                                    check_exit=False)
            with self.assertRaises(ghtest.ServerError) as e:
                bad.start()
            self.assertIn("metrics_listen", str(e.exception))
        # allowed when told so (bound to every address, scraped on loopback)
        srv, port = self.start_metrics(metrics_listen="0.0.0.0:%d" % ghtest.free_port(),
                                       metrics_allow_non_loopback="yes")
        self.assertIn("metrics on http://0.0.0.0:", srv.stderr_text())

    @unittest.skipUnless(shutil.which("curl"), "curl not installed")
    def test_upstreams(self):
        port = ghtest.free_port()
        sections = {"server": {"metrics_listen": "127.0.0.1:%d" % port},
                    "upstream:gone": {"uri": "ldap://127.0.0.1:1", "base_dn": slapd.SUFFIX,
                                      "mode": "search-poll", "interval": 1, "timeout": 1}}
        real = None
        if slapd.available():
            real = slapd.Slapd(ldif=LDIF)
            self.addCleanup(real.close)
            sections["upstream:corp"] = {
                "uri": real.uri, "bind_dn": slapd.ADMIN_DN, "bind_password_file": real.pwfile,
                "base_dn": slapd.SUFFIX, "user_filter": "(objectClass=posixAccount)",
                "group_filter": "(objectClass=groupOfNames)", "login_attr": "uid",
                "member_attr": "member", "mode": "syncrepl-persist", "timeout": 5}
            # polled once an hour: its cookie ages between runs
            sections["upstream:hourly"] = {
                "uri": real.uri, "bind_dn": slapd.ADMIN_DN, "bind_password_file": real.pwfile,
                "base_dn": slapd.SUFFIX, "user_filter": "(uid=nobody-matches)",
                "group_filter": "(cn=nobody-matches)", "login_attr": "uid",
                "member_attr": "member", "mode": "search-poll", "interval": 3600,
                "timeout": 5}
        srv = self.start_server(config=sections)

        def state():
            s, _ = parse(self.scrape(port)[1], self)
            return s

        ghtest.wait_until(lambda: get(state(), "gatehouse_upstream_error", upstream="gone") == 1,
                          ghtest.scaled(20))
        s = state()
        self.promtool(self.scrape(port)[1])
        self.assertEqual(get(s, "gatehouse_upstream_connected", upstream="gone"), 0)
        self.assertEqual(get(s, "gatehouse_upstream_last_success_timestamp_seconds",
                             upstream="gone"), 0)
        states = {dict(k[1])["state"]: v for k, v in s.items()
                  if k[0] == "gatehouse_upstream_state" and dict(k[1])["upstream"] == "gone"}
        self.assertEqual(sum(states.values()), 1)
        self.assertIn(states.get("down", 0) + states.get("connecting", 0)
                      + states.get("running", 0), (1,))
        if real is None:
            sys.stdout.write("# slapd not installed: the reachable upstream is not checked\n")
            return
        ghtest.wait_until(lambda: get(state(), "gatehouse_upstream_users", upstream="corp") == 2,
                          ghtest.scaled(30))
        s = state()
        self.assertEqual(get(s, "gatehouse_upstream_connected", upstream="corp"), 1)
        self.assertEqual(get(s, "gatehouse_upstream_groups", upstream="corp"), 1)
        self.assertGreater(get(s, "gatehouse_upstream_last_success_timestamp_seconds",
                               upstream="corp"), 1.7e9)
        self.assertGreaterEqual(get(s, "gatehouse_upstream_entries_received_total",
                                    upstream="corp"), 3)
        self.assertEqual(get(s, "gatehouse_upstream_error", upstream="corp"), 0)
        self.assertEqual(get(s, "gatehouse_upstream_state", upstream="corp", state="persisting"),
                         1)
        # cookie age: near 0 while persisting (the persist loop marks the
        # mirror current on every pass, about once a second); growing second
        # by second between polls
        self.assertLessEqual(get(s, "gatehouse_upstream_lag_seconds", upstream="corp"),
                             ghtest.scaled(2))
        ghtest.wait_until(lambda: get(state(), "gatehouse_upstream_runs_total",
                                      upstream="hourly") >= 1, ghtest.scaled(30))
        lag1 = get(state(), "gatehouse_upstream_lag_seconds", upstream="hourly")
        time.sleep(2.2)
        s = state()
        lag2 = get(s, "gatehouse_upstream_lag_seconds", upstream="hourly")
        self.assertGreaterEqual(lag2, lag1 + 2, (lag1, lag2))
        self.assertLess(lag2, 3600)
        c = self.client(srv)
        status = {u["name"]: u for u in self.assertOk(c.call("sync.status"))["upstreams"]}
        self.assertLessEqual(abs(status["hourly"]["lag_s"] - lag2), 1)
        # bind errors per upstream and kind: none yet; the upstream gone, an
        # auth of its user is a network error
        for kind in ("network", "other"):
            self.assertEqual(get(s, "gatehouse_upstream_bind_errors_total", upstream="corp",
                                 kind=kind), 0)
        real.stop()
        r = c.call("auth", user="ann", password="whatever it is")
        self.assertFalse(r.get("ok"), r)
        s = state()
        self.assertEqual(get(s, "gatehouse_upstream_bind_errors_total", upstream="corp",
                             kind="network"), 1)
        self.assertEqual(get(s, "gatehouse_upstream_bind_errors_total", upstream="corp",
                             kind="other"), 0)
        self.assertEqual(get(s, "gatehouse_upstream_bind_errors_total", upstream="gone",
                             kind="network"), 0)
        self.promtool(self.scrape(port)[1])


def _ldif():
    with open(os.path.join(HERE, "..", "..", "conf", "ldap", "base.ldif")) as f:
        base = f.read().rstrip("\n") + "\n\n"
    entries = []
    for n, (login, num) in enumerate([("ann", 20001), ("bob", 20002)]):
        entries.append("\n".join([
            "dn: uid=%s,ou=people,%s" % (login, slapd.SUFFIX), "objectClass: top",
            "objectClass: person", "objectClass: organizationalPerson",
            "objectClass: inetOrgPerson", "objectClass: posixAccount", "uid: " + login,
            "cn: " + login, "sn: " + login, "uidNumber: %d" % num, "gidNumber: 20000",
            "homeDirectory: /home/" + login]))
    entries.append("\n".join([
        "dn: cn=staff,ou=groups," + slapd.SUFFIX, "objectClass: top", "objectClass: groupOfNames",
        "cn: staff", "member: uid=ann,ou=people," + slapd.SUFFIX]))
    return base + "\n\n".join(entries) + "\n"


LDIF = _ldif()


if __name__ == "__main__":
    ghtest.main()
