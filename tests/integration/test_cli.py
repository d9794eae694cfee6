"""The gatehouse CLI, run as a program against a real gatehoused.

Every verb goes through $GH_BUILDDIR/gatehouse; the tests check its --json
output against the server's state and its exit codes (0 ok, 1 denied / not
found, 2 usage, 3 unreachable, 4 permission denied, 5 other). The CLI runs in
a new session (no controlling terminal) unless a test gives it a pseudo
terminal to answer password and confirmation prompts. Import/export are
checked by a round trip through a second server, LDIF by OpenLDAP's
`slapadd -u` (dry run) with the stock schemas (--rfc2307) and with an
rfc2307bis schema (the default groupOfNames+posixGroup layout), and read
back by `import --format ldif`.
"""

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ghtest  # noqa: E402

PW = "s3cret-password"
# The bulk import's size. Under ThreadSanitizer every memcpy, compare and
# (wiping) free of the per-record work goes through its shadow memory, ~11x
# the normal cost for the same code paths: 20,000 records exercise the same
# batching and writer hand-over, with the time bound scaled to the count.
BULK_USERS = 20000 if ghtest.SANITIZED == "tsan" else 100000
HERE = os.path.dirname(os.path.abspath(__file__))


class Result:
    def __init__(self, rc, out, err):
        self.rc = rc
        self.out = out
        self.err = err

    @property
    def json(self):
        try:
            return json.loads(self.out)
        except ValueError as e:
            raise AssertionError("stdout is not JSON (%s):\n%s\nstderr:\n%s"
                                 % (e, self.out, self.err))

    def __repr__(self):
        return "Result(rc=%r, out=%r, err=%r)" % (self.rc, self.out[-2000:], self.err[-2000:])


def run(sock, *args, input=None, env=None, timeout=None):
    """The CLI without a controlling terminal (setsid)."""
    argv = [ghtest.cli_path()] + (["--socket", sock] if sock else []) + list(args)
    e = dict(os.environ)
    e.pop("GATEHOUSE_TOKEN", None)
    if env:
        e.update(env)
    if isinstance(input, str):
        input = input.encode("utf-8")
    cp = subprocess.run(argv, input=input if input is not None else b"",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                        start_new_session=True,
                        timeout=ghtest.scaled(120) if timeout is None else timeout)
    return Result(cp.returncode, cp.stdout.decode("utf-8", "replace"),
                  cp.stderr.decode("utf-8", "replace"))


def run_pty(argv, script, timeout=None):
    """Runs argv on a new pseudo terminal (its controlling terminal).
    script: [(expected prompt bytes, answer bytes)]. Returns (exit code,
    everything the terminal showed)."""
    timeout = ghtest.scaled(30) if timeout is None else timeout
    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + timeout

    def read_some():
        nonlocal out
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            return False
        try:
            data = os.read(fd, 4096)
        except OSError:
            return False
        if not data:
            return False
        out += data
        return True

    try:
        for prompt, answer in script:
            while prompt not in out:
                if not read_some():
                    raise AssertionError("no prompt %r; terminal showed %r" % (prompt, out))
            out_at = len(out)  # noqa: F841
            os.write(fd, answer)
        while read_some():
            pass
        _, status = os.waitpid(pid, 0)
        pid = None
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


class CliCase(ghtest.TestCase):

    def setUp(self):
        self.srv = self.start_server()
        self.sock = self.srv.socket_path

    def gh(self, *args, rc=0, **kw):
        r = run(self.sock, *args, **kw)
        if rc is not None and r.rc != rc:
            self.fail("gatehouse %s: expected exit %d, got %r" % (" ".join(args), rc, r))
        return r

    def ghj(self, *args, **kw):
        return self.gh("--json", *args, **kw).json

    def assertErr(self, r, rc, code):
        self.assertEqual(r.rc, rc, r)
        self.assertIn("gatehouse: %s: " % code, r.err, r)

    def add_user(self, name, *extra, password=PW):
        if password is None:
            return self.ghj("user", "add", name, "--no-password", *extra)
        return self.ghj("user", "add", name, "--password-stdin", *extra, input=password + "\n")


class HelpAndUsage(CliCase):

    def test_help_at_every_level(self):
        r = run(None, "--help")
        self.assertEqual(r.rc, 0, r)
        for word in ("user add", "group add-member", "role allow", "grant", "revoke", "check",
                     "who-can", "import", "export", "sync run", "Exit codes"):
            self.assertIn(word, r.out)
        for args in (["user", "--help"], ["group", "--help"], ["role", "--help"],
                     ["sync", "--help"], ["user", "add", "--help"], ["grant", "--help"],
                     ["export", "--help"], ["help", "role", "set"], ["-h"],
                     ["audit", "-h"]):
            r = run(None, *args)
            self.assertEqual(r.rc, 0, (args, r))
            self.assertIn("usage: gatehouse", r.out, args)
        self.assertIn("--display-name", run(None, "user", "add", "--help").out)
        self.assertIn("--with-verifiers", run(None, "export", "--help").out)

    def test_usage_errors_exit_2(self):
        for args in ([], ["frobnicate"], ["user"], ["user", "frob"], ["user", "add"],
                     ["user", "get", "a", "b"], ["user", "list", "--bogus"],
                     ["user", "add", "x", "--uid"], ["user", "add", "x", "--uid", "abc"],
                     ["check", "alice", "read"], ["user", "set", "alice"],
                     ["grant", "r"], ["revoke", "notanumber"],
                     ["bindings", "--user", "a", "--group", "b"],
                     ["user", "add", "x", "--state", "sleepy", "--no-password"],
                     ["group", "add-member", "g"], ["export", "--format", "xml"]):
            r = self.gh(*args, rc=2)
            self.assertIn("gatehouse: usage: ", r.err, args)

    def test_unreachable_exit_3(self):
        r = run("/nonexistent/gh.sock", "user", "list")
        self.assertErr(r, 3, "connect_failed")
        self.assertIn("/nonexistent/gh.sock", r.err)

    def test_socket_from_environment(self):
        r = run(None, "--json", "ping", env={"GATEHOUSE_SOCKET": self.sock})
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.json["protocol"], 1)
        r = run(None, "ping", env={"GATEHOUSE_SOCKET": "/nonexistent/x.sock"})
        self.assertErr(r, 3, "connect_failed")

    def test_global_options_anywhere(self):
        self.add_user("alice")
        a = self.gh("--json", "user", "list").json
        b = self.gh("user", "list", "--json").json
        c = self.gh("user", "--json", "list").json
        self.assertEqual(a, b)
        self.assertEqual(a, c)


class Users(CliCase):

    def test_user_lifecycle(self):
        u = self.add_user("alice", "--uid", "20001", "--gid", "500", "--display-name",
                          "Alice Liddell", "--mail", "alice@example.com")["user"]
        self.assertEqual((u["name"], u["uid"], u["gid"], u["display_name"], u["mail"],
                          u["state"], u["has_password"]),
                         ("alice", 20001, 500, "Alice Liddell", "alice@example.com", "active",
                          True))
        r = self.gh("user", "get", "alice")
        self.assertIn("Alice Liddell", r.out)
        self.assertIn("20001", r.out)
        self.assertFalse(self.add_user("bob", password=None)["user"]["has_password"])
        self.assertErr(self.gh("user", "add", "bob", "--no-password", rc=5), 5, "exists")

        lst = self.ghj("user", "list")
        self.assertEqual([x["name"] for x in lst["users"]], ["alice", "bob"])
        self.assertIsNone(lst["next"])
        human = self.gh("user", "list").out.splitlines()
        self.assertTrue(human[0].startswith("NAME"), human)
        self.assertEqual(len(human), 3)
        self.assertEqual(human[1].index("20001"), human[0].index("UID"))  # aligned
        self.assertEqual(len(self.ghj("user", "list", "--limit", "1")["users"]), 1)
        self.assertEqual([x["name"] for x in self.ghj("user", "list", "--prefix", "b")["users"]],
                         ["bob"])

        u = self.ghj("user", "set", "bob", "--display-name", "Bob B", "--mail", "b@x.org",
                     "--uid", "20002")["user"]
        self.assertEqual((u["display_name"], u["mail"], u["uid"]), ("Bob B", "b@x.org", 20002))
        u = self.ghj("user", "set", "bob", "--rename", "robert")["user"]
        self.assertEqual(u["name"], "robert")
        self.assertErr(self.gh("user", "get", "bob", rc=1), 1, "not_found")

        for verb, state in (("lock", "locked"), ("unlock", "active"), ("disable", "disabled"),
                            ("enable", "active")):
            self.assertEqual(self.ghj("user", verb, "robert")["user"]["state"], state, verb)
            self.assertEqual(self.srv.call("user.get", name="robert")["user"]["state"], state)
        self.gh("user", "lock", "alice")
        r = self.gh("auth", "alice", "--password-stdin", input=PW + "\n", rc=1)
        self.assertErr(r, 1, "account_locked")
        self.gh("user", "unlock", "alice")

        self.gh("user", "passwd", "alice", "--password-stdin", input="another-password\n")
        self.gh("auth", "alice", "--password-stdin", input=PW + "\n", rc=1)
        tok = self.gh("auth", "alice", "--password-stdin", input="another-password\n").out
        self.assertEqual(len(tok.strip()), 43)

        r = self.gh("user", "del", "robert", rc=2)  # no terminal, no --yes
        self.assertIn("--yes", r.err)
        self.assertOk(self.srv.call("user.get", name="robert"))
        self.assertEqual(self.ghj("user", "del", "robert", "--yes"), {"ok": True})
        self.assertErr(self.gh("user", "del", "robert", "--yes", rc=1), 1, "not_found")
        r = self.gh("--json", "user", "get", "robert", rc=1)
        self.assertEqual(r.json["error"]["code"], "not_found")

    def test_password_never_needed_on_the_command_line(self):
        r = self.gh("user", "add", "alice", rc=2)  # no terminal to ask on
        self.assertIn("--password-stdin", r.err)
        self.gh("user", "add", "alice", "--password-stdin", rc=2, input="")
        self.gh("user", "add", "alice", "--password-stdin", "--no-password", rc=2)
        self.assertError(self.srv.call("user.get", name="alice"), "not_found")
        r = self.gh("user", "add", "alice", "--password-stdin", input="short\n", rc=5)
        self.assertIn("invalid_argument", r.err)

    def test_invalid_values(self):
        r = self.gh("user", "add", "bad name", "--no-password", rc=5)
        self.assertIn("gatehouse: invalid_argument: ", r.err)
        self.gh("user", "add", b"caf\xe9".decode("latin-1"), "--no-password", rc=None)
        r = self.gh("user", "add", "x", "--uid", "-1", "--no-password", rc=2)


class Prompts(CliCase):
    """Passwords and confirmations through a pseudo terminal."""

    def cli(self, *args):
        return [ghtest.cli_path(), "--socket", self.sock] + list(args)

    def test_add_asks_twice_without_echo(self):
        rc, shown = run_pty(self.cli("user", "add", "alice"),
                            [(b"Password for alice: ", PW.encode() + b"\n"),
                             (b"Repeat the password: ", PW.encode() + b"\n")])
        self.assertEqual(rc, 0, shown)
        self.assertNotIn(PW, shown)  # echo was off
        self.assertIn("name:", shown)
        tok = self.srv.client().login("alice", PW)
        self.assertEqual(len(tok), 43)

    def test_mismatch_is_refused(self):
        rc, shown = run_pty(self.cli("user", "add", "alice"),
                            [(b"Password for alice: ", b"first-password\n"),
                             (b"Repeat the password: ", b"second-password\n")])
        self.assertEqual(rc, 2, shown)
        self.assertIn("do not match", shown)
        self.assertError(self.srv.call("user.get", name="alice"), "not_found")

    def test_passwd_and_auth_prompt(self):
        self.add_user("alice")
        rc, shown = run_pty(self.cli("user", "passwd", "alice"),
                            [(b"New password for alice: ", b"brand-new-pass\n"),
                             (b"Repeat the password: ", b"brand-new-pass\n")])
        self.assertEqual(rc, 0, shown)
        self.assertNotIn("brand-new-pass", shown)
        rc, shown = run_pty(self.cli("auth", "alice"),
                            [(b"Password for alice: ", b"brand-new-pass\n")])
        self.assertEqual(rc, 0, shown)
        token = shown.strip().splitlines()[-1].strip()
        self.assertEqual(self.srv.call("whoami", token=token)["user"], "alice")
        rc, shown = run_pty(self.cli("auth", "alice"), [(b"Password for alice: ", b"nope\n")])
        self.assertEqual(rc, 1, shown)
        self.assertIn("invalid_credentials", shown)

    def test_confirmation(self):
        self.add_user("alice", password=None)
        rc, shown = run_pty(self.cli("user", "del", "alice"),
                            [(b"Delete user 'alice'", b"n\n")])
        self.assertEqual(rc, 1, shown)
        self.assertOk(self.srv.call("user.get", name="alice"))
        rc, shown = run_pty(self.cli("user", "del", "alice"),
                            [(b"[y/N]", b"y\n")])
        self.assertEqual(rc, 0, shown)
        self.assertError(self.srv.call("user.get", name="alice"), "not_found")

    def test_progress_bar_on_a_terminal(self):
        d = tempfile.mkdtemp(prefix="gh-imp-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "u.jsonl")
        with open(path, "w") as f:
            for i in range(3000):
                f.write(json.dumps({"type": "user", "name": "p%05d" % i}) + "\n")
        rc, shown = run_pty(self.cli("import", path), [])
        self.assertEqual(rc, 0, shown)
        self.assertIn("importing [", shown)
        self.assertIn("100%", shown)
        self.assertIn("imported 3000 records, rejected 0", shown)


class Groups(CliCase):

    def test_groups_and_members(self):
        self.add_user("alice", password=None)
        self.add_user("bob", password=None)
        g = self.ghj("group", "add", "staff", "--gid", "7000", "--description", "All staff")
        self.assertEqual((g["group"]["gid"], g["group"]["description"]), (7000, "All staff"))
        self.ghj("group", "add", "eng")
        self.gh("group", "add-member", "staff", "alice")
        self.gh("group", "add-member", "eng", "bob")
        self.gh("group", "add-member", "staff", "--group", "eng")
        self.assertErr(self.gh("group", "add-member", "staff", "alice", rc=5), 5, "exists")
        self.assertErr(self.gh("group", "add-member", "eng", "--group", "staff", rc=5), 5,
                       "cycle")
        self.assertErr(self.gh("group", "add-member", "staff", "nobody", rc=1), 1, "not_found")
        self.gh("group", "add-member", "staff", "alice", "--group", "eng", rc=2)
        g = self.ghj("group", "get", "staff")["group"]
        self.assertEqual(g["members"], {"users": ["alice"], "groups": ["eng"]})
        self.assertEqual(sorted(g["effective_users"]), ["alice", "bob"])
        self.assertIn("effective users:", self.gh("group", "get", "staff").out)
        self.assertEqual([x["name"] for x in self.ghj("group", "list")["groups"]],
                         ["eng", "staff"])
        self.assertIn("All staff", self.gh("group", "list").out)
        self.gh("group", "remove-member", "staff", "--group", "eng")
        self.gh("group", "remove-member", "staff", "alice")
        self.assertErr(self.gh("group", "remove-member", "staff", "alice", rc=1), 1,
                       "not_found")
        self.assertEqual(self.ghj("group", "get", "staff")["group"]["members"],
                         {"users": [], "groups": []})
        self.gh("group", "del", "eng", rc=2)
        self.gh("group", "del", "eng", "--yes")
        self.assertErr(self.gh("group", "get", "eng", rc=1), 1, "not_found")


class Authz(CliCase):

    def setup_roles(self):
        self.add_user("alice")
        self.add_user("bob", password=None)
        self.ghj("group", "add", "staff")
        self.gh("group", "add-member", "staff", "alice")
        r = self.ghj("role", "add", "deployer", "--description", "deploys things",
                     "--allow", "deploy=service/*", "--allow", "read=docs/**")["role"]
        self.assertEqual(r["allow"], [{"action": "deploy", "resource": "service/*"},
                                      {"action": "read", "resource": "docs/**"}])
        r = self.ghj("role", "add", "ops", "--parent", "deployer",
                     "--deny", "deploy=service/payroll")["role"]
        self.assertEqual((r["parents"], r["deny"]),
                         (["deployer"], [{"action": "deploy", "resource": "service/payroll"}]))

    def test_roles(self):
        self.setup_roles()
        self.gh("role", "add", "x", "--allow", "no-equals-sign", rc=2)
        self.assertErr(self.gh("role", "add", "x", "--allow", "read=a/**/b", rc=5), 5,
                       "invalid_argument")
        self.assertErr(self.gh("role", "add", "x", "--parent", "ghost", rc=1), 1, "not_found")
        r = self.ghj("role", "allow", "ops", "restart", "service/*")["role"]
        self.assertEqual(r["allow"], [{"action": "restart", "resource": "service/*"}])
        r = self.ghj("role", "deny", "ops", "restart", "service/db")["role"]
        self.assertEqual(len(r["deny"]), 2)
        before = self.srv.call("role.get", name="ops")["role"]
        r = self.gh("role", "allow", "ops", "restart", "service/*")  # already there
        self.assertIn("already", r.out)
        self.assertEqual(self.srv.call("role.get", name="ops")["role"]["modified"],
                         before["modified"])
        self.ghj("role", "add", "reader", "--allow", "read=wiki/**")
        self.assertEqual(self.ghj("role", "inherit", "ops", "reader")["role"]["parents"],
                         ["deployer", "reader"])
        self.assertErr(self.gh("role", "inherit", "deployer", "ops", rc=5), 5, "cycle")
        self.assertEqual([x["name"] for x in self.ghj("role", "list")["roles"]],
                         ["deployer", "ops", "reader"])
        out = self.gh("role", "get", "ops").out
        self.assertIn("deny    deploy", out)
        self.assertIn("reader", out)

        # a set that only adds needs no confirmation; one that removes does
        self.ghj("role", "set", "ops", "--description", "on call")
        self.ghj("role", "set", "ops", "--parent", "reader", "--parent", "deployer")
        r = self.gh("role", "set", "ops", "--no-deny", rc=2)
        self.assertIn("--yes", r.err)
        self.assertEqual(len(self.srv.call("role.get", name="ops")["role"]["deny"]), 2)
        r = self.ghj("role", "set", "ops", "--no-deny", "--allow", "deploy=service/x", "--yes")
        self.assertEqual((r["role"]["deny"], r["role"]["allow"], r["role"]["description"]),
                         ([], [{"action": "deploy", "resource": "service/x"}], "on call"))
        self.gh("role", "set", "ops", "--no-deny", "--deny", "a=b", rc=2)

        self.gh("grant", "ops", "--user", "bob")
        self.assertErr(self.gh("role", "del", "ops", "--yes", rc=5), 5, "in_use")
        self.gh("role", "del", "ops", rc=2)  # no terminal
        self.assertEqual(self.ghj("role", "del", "ops", "--force", "--yes"), {"ok": True})
        self.assertEqual(self.ghj("bindings")["bindings"], [])

    def test_grants_and_decisions(self):
        self.setup_roles()
        b1 = self.ghj("grant", "ops", "--group", "staff")["binding"]
        b2 = self.ghj("grant", "deployer", "--user", "bob", "--scope", "service/billing")
        b2 = b2["binding"]
        self.assertIn("binding", self.gh("grant", "deployer", "--user", "alice",
                                         "--scope", "docs/**").out)
        self.assertErr(self.gh("grant", "ops", "--group", "staff", rc=5), 5, "exists")
        self.assertErr(self.gh("grant", "ghost", "--user", "bob", rc=1), 1, "not_found")
        self.gh("grant", "ops", "--user", "bob", "--group", "staff", rc=2)

        allb = self.ghj("bindings")["bindings"]
        self.assertEqual(len(allb), 3)
        self.assertEqual([b["id"] for b in self.ghj("bindings", "--group", "staff")["bindings"]],
                         [b1])
        self.assertEqual([b["role"] for b in self.ghj("bindings", "--user", "bob")["bindings"]],
                         ["deployer"])
        self.assertEqual(len(self.ghj("bindings", "--role", "deployer")["bindings"]), 2)
        out = self.gh("bindings").out
        self.assertIn("group:staff", out)
        self.assertIn("service/billing", out)

        r = self.gh("check", "alice", "deploy", "service/web")
        self.assertEqual(r.out.strip(), "allow")
        r = self.gh("check", "alice", "deploy", "service/payroll", rc=1)
        self.assertEqual(r.out.strip(), "deny")
        r = self.gh("--json", "check", "alice", "deploy", "service/payroll", "--explain", rc=1)
        ex = r.json["explain"]
        self.assertEqual((r.json["allow"], ex["decision"], ex["reason"]),
                         (False, "deny", "deny_rule"))
        r = self.gh("check", "alice", "deploy", "service/web", "--explain")
        self.assertIn("group staff", r.out)
        self.gh("check", "bob", "deploy", "service/web", rc=1)  # scoped to service/billing
        self.gh("check", "bob", "deploy", "service/billing")
        self.assertErr(self.gh("check", "nobody", "read", "x", rc=1), 1, "not_found")
        self.assertErr(self.gh("check", "bob", "read", "a//b", rc=5), 5, "invalid_argument")

        perms = self.ghj("perms", "alice")
        self.assertEqual(perms["user"], "alice")
        self.assertIn({"effect": "deny", "action": "deploy", "resource": "service/payroll"},
                      [{k: p[k] for k in ("effect", "action", "resource")}
                       for p in perms["rules"]])
        self.assertIn("group:staff", self.gh("perms", "alice").out)
        wc = self.ghj("who-can", "deploy", "service/billing")
        self.assertEqual(sorted(u["name"] for u in wc["users"]), ["alice", "bob"])
        self.assertEqual([g["name"] for g in wc["groups"]], ["staff"])
        self.assertIn("staff", self.gh("who-can", "deploy", "service/billing").out)

        self.gh("revoke", str(b2), rc=2)  # no terminal, no --yes
        self.assertEqual(self.ghj("revoke", str(b2), "--yes")["binding"], b2)
        self.assertErr(self.gh("revoke", str(b2), "--yes", rc=1), 1, "not_found")
        self.gh("revoke", "deployer", "--user", "alice", "--yes", rc=1)  # scope differs
        self.gh("revoke", "deployer", "--user", "alice", "--scope", "docs/**", "--yes")
        self.gh("revoke", "ops", "--group", "staff", "--yes")
        self.assertEqual(self.ghj("bindings")["bindings"], [])
        self.gh("check", "alice", "deploy", "service/web", rc=1)


class Tokens(CliCase):

    def test_auth_whoami_logout(self):
        self.add_user("alice")
        r = self.gh("--json", "auth", "alice", "--password-stdin", "--ttl", "60",
                    input=PW + "\n")
        tok = r.json["token"]
        self.assertEqual(r.json["user"], "alice")
        self.assertLessEqual(r.json["expires_at"], time.time() + 61)
        # never in argv (ps shows it to every local user): stdin or GATEHOUSE_TOKEN
        # ("--": a token may begin with "-", which would read as an option)
        r = self.gh("whoami", "--", tok, rc=2)
        self.assertIn("GATEHOUSE_TOKEN", r.err)
        self.assertNotIn(tok, r.err)
        self.gh("logout", "--", tok, rc=2)
        self.gh("whoami", rc=2)  # no token at all
        env = {"GATEHOUSE_TOKEN": tok}
        self.assertEqual(self.ghj("whoami", "-", input=tok + "\n")["user"], "alice")
        self.assertEqual(self.ghj("whoami", env=env)["user"], "alice")
        self.assertIn("alice", self.gh("whoami", env=env).out)
        self.gh("logout", "-", input=tok + "\n")
        self.assertErr(self.gh("whoami", "-", input=tok + "\n", rc=1), 1, "invalid_token")
        self.assertErr(self.gh("auth", "alice", "--password-stdin", input="wrong-pass\n", rc=1),
                       1, "invalid_credentials")
        self.assertErr(self.gh("auth", "ghost", "--password-stdin", input="wrong-pass\n",
                               rc=1), 1, "invalid_credentials")
        self.gh("auth", "alice", rc=2)  # no terminal, no --password-stdin

    @ghtest.unittest.skipUnless(ghtest.is_root(), "needs root to run the CLI as another uid")
    def test_non_admin_and_admin_token(self):
        srv = self.start_server(world_access=True)
        ghtest.init_admin(srv, "root-admin", PW)
        run(srv.socket_path, "user", "add", "carol", "--password-stdin", input=PW + "\n")
        # from a world-readable copy: the checkout may be unreadable by nobody
        argv = (ghtest.setpriv_prefix(ghtest.NOBODY) + ghtest.foreign_program(ghtest.cli_path())
                + ["--socket", srv.socket_path])
        env = dict(os.environ)
        env.pop("GATEHOUSE_TOKEN", None)

        def as_nobody(*args, extra_env=None, input=b""):
            e = dict(env)
            if extra_env:
                e.update(extra_env)
            cp = subprocess.run(argv + list(args), input=input, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=e, start_new_session=True,
                                timeout=ghtest.scaled(30))
            return Result(cp.returncode, cp.stdout.decode(), cp.stderr.decode())

        self.assertErr(as_nobody("user", "list"), 4, "permission_denied")
        # not a service peer: may not ask about a named user (issue 10)
        self.assertErr(as_nobody("check", "carol", "read", "x"), 4, "permission_denied")
        r = as_nobody("auth", "root-admin", "--password-stdin", input=(PW + "\n").encode())
        self.assertEqual(r.rc, 0, r)
        r = as_nobody("--json", "user", "list", extra_env={"GATEHOUSE_TOKEN": r.out.strip()})
        self.assertEqual(r.rc, 0, r)
        self.assertIn("carol", [u["name"] for u in r.json["users"]])


class Admin(CliCase):

    def test_stats(self):
        self.gh("ping")
        st = self.ghj("stats")
        self.assertIn("ping", st["requests"])
        self.assertIn("connections", st)
        out = self.gh("stats").out
        self.assertIn("P99_US", out)
        self.assertIn("uptime", out)

    def test_audit(self):
        for n in ("a1", "a2", "a3"):
            self.add_user(n, password=None)
        a = self.ghj("audit")
        ops = [(e["op"], e["target"]) for e in a["entries"]]
        self.assertEqual([o for o in ops if o[0] == "user.add"],
                         [("user.add", "a1"), ("user.add", "a2"), ("user.add", "a3")])
        seqs = [e["seq"] for e in a["entries"]]
        self.assertEqual(seqs, sorted(set(seqs)))
        later = self.ghj("audit", "--since", str(seqs[0]))["entries"]
        self.assertEqual([e["seq"] for e in later], seqs[1:])
        self.assertEqual(len(self.ghj("audit", "--limit", "2")["entries"]), 2)
        self.assertIn("user.add", self.gh("audit").out)

    def test_audit_follow(self):
        p = subprocess.Popen([ghtest.cli_path(), "--socket", self.sock, "--json", "audit",
                              "--follow", "--interval", "1"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        try:
            time.sleep(0.5)
            self.add_user("followed", password=None)
            seen = []
            deadline = time.monotonic() + ghtest.scaled(15)
            while time.monotonic() < deadline:
                r, _, _ = select.select([p.stdout], [], [], 0.5)
                if r:
                    line = p.stdout.readline()
                    if not line:
                        break
                    seen.append(json.loads(line))
                    if any(e["target"] == "followed" for e in seen):
                        break
            self.assertTrue(any(e["op"] == "user.add" and e["target"] == "followed"
                                for e in seen), seen)
            os.kill(p.pid, signal.SIGINT)
            self.assertEqual(p.wait(ghtest.scaled(10)), 0)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()

    def test_sync_without_upstreams(self):
        st = self.ghj("sync", "status")
        self.assertEqual(st["upstreams"], [])
        self.assertIn("NAME", self.gh("sync", "status").out)
        self.assertErr(self.gh("sync", "run", "nowhere", rc=1), 1, "not_found")
        self.assertIn("no upstream", self.gh("sync", "run").out)


def slapadd_check(test, ldif_path, base_dn, schema):
    """slapadd -u (dry run) with back-mdb and the given last schema file."""
    slapadd = shutil.which("slapadd") or ("/usr/sbin/slapadd"
                                          if os.path.exists("/usr/sbin/slapadd") else None)
    if slapadd is None or not os.path.isdir("/etc/ldap/schema"):
        test.skipTest("OpenLDAP (slapd) is not installed")
    d = tempfile.mkdtemp(prefix="gh-slap-")
    test.addCleanup(shutil.rmtree, d, True)
    os.mkdir(os.path.join(d, "db"))
    modpath = next((p for p in ("/usr/lib/ldap", "/usr/lib64/openldap", "/usr/lib/openldap")
                    if os.path.exists(os.path.join(p, "back_mdb.so"))), None)
    conf = os.path.join(d, "slapd.conf")
    with open(conf, "w") as f:
        for s in ("core", "cosine", "inetorgperson"):
            f.write("include /etc/ldap/schema/%s.schema\n" % s)
        f.write("include %s\n" % schema)
        if modpath:
            f.write("modulepath %s\nmoduleload back_mdb\n" % modpath)
        f.write('database mdb\nsuffix "%s"\ndirectory %s\n' % (base_dn, os.path.join(d, "db")))
    cp = subprocess.run([slapadd, "-f", conf, "-u", "-l", ldif_path], stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, timeout=ghtest.scaled(60))
    return cp.returncode, cp.stdout.decode("utf-8", "replace")


class ImportExport(CliCase):

    def populate(self):
        self.add_user("alice", "--display-name", "Alice Liddell", "--mail", "alice@example.com")
        # a primary gid names an existing group (issue 12): staff first
        self.ghj("group", "add", "staff", "--gid", "7000", "--description", "  leading spaces")
        self.add_user("bob", "--uid", "30000", "--gid", "7000", password=None)
        self.add_user("chloé", "--display-name", "Chloé Zoë")
        self.gh("user", "lock", "bob")
        self.ghj("group", "add", "eng")
        self.ghj("group", "add", "empty")
        self.gh("group", "add-member", "staff", "alice")
        self.gh("group", "add-member", "staff", "--group", "eng")
        self.gh("group", "add-member", "eng", "bob")
        self.gh("group", "add-member", "eng", "chloé")
        # roles whose names sort before their parents
        self.ghj("role", "add", "zeta", "--allow", "read=docs/**")
        self.ghj("role", "add", "alpha", "--parent", "zeta", "--deny", "write=docs/secret")
        self.gh("grant", "alpha", "--group", "staff")
        self.gh("grant", "zeta", "--user", "bob", "--scope", "docs/public/**")

    def tmp(self):
        d = tempfile.mkdtemp(prefix="gh-io-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    @staticmethod
    def strip(lines):
        out = []
        for line in lines:
            rec = json.loads(line)
            for k in ("id", "created", "modified"):
                rec.pop(k, None)
            out.append(rec)
        return out

    def test_jsonl_round_trip(self):
        self.populate()
        exp1 = self.gh("export").out.splitlines()
        types = [json.loads(l)["type"] for l in exp1]
        self.assertEqual(types, ["user"] * 3 + ["group"] * 3 + ["member"] * 4 + ["role"] * 2
                         + ["binding"] * 2)
        roles = [json.loads(l)["name"] for l in exp1 if json.loads(l)["type"] == "role"]
        self.assertEqual(roles, ["zeta", "alpha"])  # parents first
        self.assertTrue(json.loads(exp1[0])["verifier"].startswith("$argon2id$"))
        path = os.path.join(self.tmp(), "dump.jsonl")
        with open(path, "w") as f:
            f.write("\n".join(exp1) + "\n")

        other = self.start_server()
        r = run(other.socket_path, "import", path)
        self.assertEqual(r.rc, 0, r)
        self.assertIn("imported 14 records, rejected 0", r.out)
        exp2 = run(other.socket_path, "export").out.splitlines()
        self.assertEqual(self.strip(exp1), self.strip(exp2))
        # the verifier came along: the password still works
        self.assertEqual(len(other.client().login("alice", PW)), 43)
        self.assertEqual(other.call("user.get", name="bob")["user"]["state"], "locked")
        self.assertEqual(other.call("check", user="alice", action="read",
                                    resource="docs/x")["allow"], True)
        # importing again: everything exists, every line reported, exit 1
        r = run(other.socket_path, "--json", "import", "-", input="\n".join(exp1) + "\n")
        self.assertEqual(r.rc, 1, r)
        self.assertEqual(r.json["imported"], 0)
        self.assertEqual(len(r.json["rejected"]), 14)
        self.assertEqual(r.err.count("gatehouse: line "), 14)

    def test_rejected_lines_are_reported(self):
        lines = [
            '{"type":"user","name":"ok1"}',
            'not json at all',
            '',
            '[1,2]',
            '{"name":"notype"}',
            '{"type":"user","name":"bad name"}',
            '{"type":"user","name":"pw","password":"secret-pass"}',
            '{"type":"user","name":"ok1"}',
            '{"type":"member","group":"nogroup","user":"ok1"}',
            '{"type":"group","name":"g1"}',
            '{"type":"member","group":"g1","user":"ok1"}',
            '{"type":"user","name":"ok2","verifier":"$2y$10$bcrypt.is.not.argon2id"}',
        ]
        r = self.gh("--json", "import", "-", input="\n".join(lines) + "\n", rc=1)
        rejected = {x["line"]: x["error"]["code"] for x in r.json["rejected"]}
        self.assertEqual(sorted(rejected), [2, 4, 5, 6, 7, 8, 9, 12], r)
        self.assertEqual(rejected[2], "bad_request")
        self.assertEqual(rejected[8], "exists")
        self.assertEqual(rejected[9], "not_found")
        self.assertEqual(r.json["imported"], 3)
        for n in (2, 4, 5, 6, 7, 8, 9, 12):
            self.assertIn("gatehouse: line %d: " % n, r.err)
        # nothing half-applied
        self.assertError(self.srv.call("user.get", name="pw"), "not_found")
        self.assertError(self.srv.call("user.get", name="ok2"), "not_found")
        self.assertEqual(self.srv.call("group.get", name="g1")["group"]["members"]["users"],
                         ["ok1"])

    def test_import_100k_users(self):
        verifier = None
        self.add_user("template")
        for line in self.gh("export").out.splitlines():
            verifier = json.loads(line).get("verifier")
        path = os.path.join(self.tmp(), "big.jsonl")
        n = BULK_USERS
        with open(path, "w") as f:
            for i in range(n):
                f.write(json.dumps({"type": "user", "name": "user%06d" % i, "uid": 100000 + i,
                                    "display_name": "User Number %d" % i,
                                    "mail": "user%06d@example.com" % i,
                                    "verifier": verifier}) + "\n")
            f.write('{"type":"user","name":"user000007"}\n')  # one duplicate
        t0 = time.monotonic()
        r = self.gh("import", path, rc=1, timeout=ghtest.scaled(300))
        secs = time.monotonic() - t0
        self.assertIn("imported %d records, rejected 1" % n, r.out)
        self.assertIn("gatehouse: line %d: exists: " % (n + 1), r.err)
        self.assertLess(secs, ghtest.scaled(120) * n / 100000,
                        "import of %d users took %.1fs" % (n, secs))
        sys.stdout.write("# import of %d users: %.1fs\n" % (n, secs))
        self.assertEqual(self.srv.call("stats")["store"]["users"], n + 1)
        self.assertEqual(len(self.srv.client().login("user%06d" % (n - 1), PW)), 43)

    def export_ldif(self, *args):
        path = os.path.join(self.tmp(), "out.ldif")
        r = self.gh("export", "--format", "ldif", *args)
        with open(path, "w") as f:
            f.write(r.out)
        return path, r.out

    def test_ldif_is_valid_for_slapadd(self):
        self.populate()
        schema_bis = os.path.join(HERE, "rfc2307bis-test.schema")
        path, text = self.export_ldif()
        self.assertNotIn("userPassword", text)
        self.assertIn("dn: uid=alice,ou=people,dc=example,dc=com", text)
        self.assertIn("objectClass: groupOfNames", text)
        self.assertIn("member: cn=eng,ou=groups,dc=example,dc=com", text)
        self.assertIn("description::", text)  # leading spaces: base64
        rc, out = slapadd_check(self, path, "dc=example,dc=com", schema_bis)
        self.assertEqual(rc, 0, out + "\n" + text)

        path, text = self.export_ldif("--with-verifiers", "--base-dn", "dc=gatehouse,dc=test")
        self.assertRegex(text, r"userPassword: \{ARGON2\}\$argon2id\$")
        self.assertIn("dn: cn=empty,ou=groups,dc=gatehouse,dc=test", text)
        rc, out = slapadd_check(self, path, "dc=gatehouse,dc=test", schema_bis)
        self.assertEqual(rc, 0, out + "\n" + text)

        # stock nis.schema: groupOfNames+posixGroup is refused, --rfc2307 is valid
        path, text = self.export_ldif("--rfc2307", "--with-verifiers")
        self.assertNotIn("groupOfNames", text)
        self.assertIn("memberUid: bob", text)  # staff's nested member, flattened
        rc, out = slapadd_check(self, path, "dc=example,dc=com", "/etc/ldap/schema/nis.schema")
        self.assertEqual(rc, 0, out + "\n" + text)
        path, text = self.export_ldif()
        rc, out = slapadd_check(self, path, "dc=example,dc=com", "/etc/ldap/schema/nis.schema")
        self.assertNotEqual(rc, 0)
        self.assertIn("structural object class chain", out)

    def test_ldif_round_trip(self):
        self.populate()
        path, text = self.export_ldif("--with-verifiers")
        other = self.start_server()
        r = run(other.socket_path, "import", path)
        self.assertEqual(r.rc, 0, r)
        self.assertIn("imported 10 records, rejected 0", r.out)  # 3 users, 3 groups, 4 members
        a = self.srv.call("user.get", name="chloé")["user"]
        b = other.call("user.get", name="chloé")["user"]
        self.assertEqual((a["uid"], a["display_name"]), (b["uid"], b["display_name"]))
        self.assertEqual(other.call("group.get", name="staff")["group"]["members"],
                         {"users": ["alice"], "groups": ["eng"]})
        self.assertEqual(other.call("group.get", name="staff")["group"]["description"],
                         "  leading spaces")
        self.assertEqual(other.call("group.get", name="empty")["group"]["members"],
                         {"users": [], "groups": []})
        self.assertEqual(len(other.client().login("alice", PW)), 43)

    def test_ldif_from_another_directory(self):
        ldif = (
            "version: 1\n\n"
            "dn: dc=corp,dc=test\nobjectClass: dcObject\nobjectClass: organization\n"
            "dc: corp\no: Corp\n\n"
            "# a comment\n"
            "dn: uid=dave,ou=users,dc=corp,dc=test\nobjectClass: inetOrgPerson\n"
            "objectClass: posixAccount\nuid: dave\ncn: Dave\nsn: D\n"
            "displayName:: RGF2w6kgRMOpdg==\nuidNumber: 4000\ngidNumber: 4000\n"
            "homeDirectory: /home/dave\nuserPassword: {SSHA}abcdef\n"
            "mail: dave@corp.\n test\n\n"
            "dn: uid=erin,ou=users,dc=corp,dc=test\nobjectClass: account\n"
            "objectClass: posixAccount\nuid: erin\ncn: Erin\nuidNumber: 4001\n"
            "gidNumber: 4000\nhomeDirectory: /home/erin\n\n"
            "dn: cn=devs,ou=groups,dc=corp,dc=test\nobjectClass: groupOfUniqueNames\n"
            "cn: devs\nuniqueMember: uid=dave,ou=users,dc=corp,dc=test#'0101'B\n\n"
            "dn: cn=all,ou=groups,dc=corp,dc=test\nobjectClass: posixGroup\ncn: all\n"
            "gidNumber: 4000\nmemberUid: dave\nmemberUid: erin\n\n"
            "dn: cn=broken,dc=corp,dc=test\nobjectClass: posixGroup\ncn broken\n"
        )
        r = self.gh("import", "--format", "ldif", "-", input=ldif, rc=1)
        self.assertIn("imported 7 records, rejected 1", r.out)  # 2 users, 2 groups, 3 members
        self.assertIn("{SSHA}", r.err)
        u = self.srv.call("user.get", name="dave")["user"]
        self.assertEqual((u["uid"], u["gid"], u["display_name"], u["mail"], u["has_password"]),
                         (4000, 4000, "Davé Dév", "dave@corp.test", False))
        self.assertEqual(self.srv.call("group.get", name="devs")["group"]["members"]["users"],
                         ["dave"])
        self.assertEqual(sorted(self.srv.call("group.get", name="all")["group"]["members"]
                                ["users"]), ["dave", "erin"])


if __name__ == "__main__":
    ghtest.main()
