"""LDAP front-end with real clients: OpenLDAP's ldap-utils (ldapsearch,
ldapwhoami, ldapcompare, ldappasswd) over ldapi, ldap, StartTLS and ldaps
with a test CA made by openssl, and the literal login filters of Gitea,
Grafana, Nextcloud and Jellyfin.

One server for the whole file (started in setUpClass): the fixtures are
read-only but for the password change, which uses its own user.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import unittest

import ghtest

SUFFIX = "dc=example,dc=org"
PW = {"alice": "alice-secret-1", "bob": "bob-secret-12", "svc": "svc-secret-123",
      "root": "root-secret-1234", "dave": "dave-secret-1", "MixedCase": "mixed-secret-1",
      "Twin": "twin-secret-upper", "twin": "twin-secret-lower"}
# every password a test sends; none may reach the server's log
NEW_PW = ("dave-new-pass-2", "x-new-pass-3", "another-pass-4", "mixed-new-pass-5",
          "never-stored-6")
UTILS = shutil.which("ldapsearch") is not None
NUSERS = 36  # users in LdapUtils' fixture


def make_ca(d):
    """A test CA and a server certificate for 127.0.0.1 and localhost."""
    def run(*args):
        subprocess.run(args, cwd=d, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=gh test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    for name in ("ca.pem", "server.pem", "server.key"):
        os.chmod(os.path.join(d, name), 0o644)


@unittest.skipUnless(UTILS, "ldap-utils not installed")
class LdapUtils(ghtest.TestCase):
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.tls = tempfile.mkdtemp(prefix="gh-ldap-tls-")
        make_ca(cls.tls)
        cls.port = ghtest.free_port()
        cls.sport = ghtest.free_port()
        base = tempfile.mkdtemp(prefix="gh-ldap-")
        cls.base = base
        cls.ldapi = os.path.join(base, "ldapi")
        cfg = {
            "ldap_listen": "ldapi://%s ldap://127.0.0.1:%d ldaps://127.0.0.1:%d"
                           % (cls.ldapi, cls.port, cls.sport),
            "ldap_suffix": SUFFIX,
            "ldap_bind_by_uid": "yes",
            "tls_cert_file": os.path.join(cls.tls, "server.pem"),
            "tls_key_file": os.path.join(cls.tls, "server.key"),
            "lockout_threshold": "100",
            "peer_failure_threshold": "1000",
            "log_level": "debug",
            "home_template": "/export/%u.%U",
            "default_shell": "/bin/zsh",
        }
        cls.srv = ghtest.Server(config=cfg)
        c = cls.srv.client()
        for name, extra in (("alice", {"display_name": "Alice Liddell",
                                       "mail": "alice@example.org"}),
                            ("bob", {"mail": "bob@example.org"}),
                            ("svc", {}), ("root", {}), ("dave", {})):
            r = c.call("user.add", name=name, password=PW[name], **extra)
            assert r["ok"], r
        c.call("user.add", name="carol")  # no password
        # POSIX fields of their own, and none (the server's defaults)
        assert c.call("group.add", name="devs", gid=43210)["ok"]
        assert c.call("user.add", name="posixown", gid=43210, home="/srv/posixown",
                      shell="/bin/bash", gecos="Pat Own,Room 1")["ok"]
        assert c.call("user.add", name="posixdef", display_name="Dee Fault")["ok"]
        # logins with capitals (uid is caseIgnore), two differing only in case
        for name in ("MixedCase", "Twin", "twin"):
            assert c.call("user.add", name=name, password=PW[name])["ok"]
        assert c.call("group.add", name="QA-Team")["ok"]
        assert c.call("group.add_member", group="QA-Team", user="MixedCase")["ok"]
        for g in ("git", "eng", "staff", "gatehouse-admins"):
            assert c.call("group.add", name=g)["ok"]
        for g, u in (("git", "alice"), ("staff", "bob"), ("gatehouse-admins", "root")):
            assert c.call("group.add_member", group=g, user=u)["ok"]
        assert c.call("group.add_member", group="eng", subgroup="git")["ok"]
        assert c.call("role.add", name="ldap-reader",
                      allow=[{"action": "read", "resource": "ldap/directory"}])["ok"]
        assert c.call("grant", role="ldap-reader", user="svc")["ok"]
        for i in range(25):
            assert c.call("user.add", name="u%02d" % i)["ok"]
        c.close()

    @classmethod
    def tearDownClass(cls):
        if cls.srv:
            rc = cls.srv.stop()
            err = cls.srv.stderr_text()
            cls.srv.close()
            assert rc == 0, err[-3000:]
            assert "AddressSanitizer" not in err and "LeakSanitizer" not in err \
                and "runtime error" not in err, err
            for pw in list(PW.values()) + list(NEW_PW):
                assert pw not in err, "a password was logged"
        shutil.rmtree(cls.tls, ignore_errors=True)
        shutil.rmtree(cls.base, ignore_errors=True)

    # ---- helpers

    def uri(self, kind="ldapi"):
        if kind == "ldapi":
            return "ldapi://" + self.ldapi.replace("/", "%2F")
        if kind == "ldaps":
            return "ldaps://127.0.0.1:%d" % self.sport
        return "ldap://127.0.0.1:%d" % self.port

    def tool(self, prog, *args, kind="ldapi", user=None, starttls=False, check=True, stdin=None):
        env = dict(os.environ, LDAPTLS_CACERT=os.path.join(self.tls, "ca.pem"),
                   LDAPTLS_REQCERT="demand", LDAPCONF="/dev/null")
        argv = [prog, "-H", self.uri(kind)]
        if prog != "ldappasswd" or user is None:
            argv.append("-x")
        else:
            argv.append("-x")
        if starttls:
            argv.append("-ZZ")
        if user:
            argv += ["-D", "uid=%s,ou=people,%s" % (user, SUFFIX), "-w", PW[user]]
        argv += list(args)
        p = subprocess.run(argv, env=env, capture_output=True, text=True, input=stdin,
                           timeout=ghtest.scaled(30))
        if check and p.returncode != 0:
            self.fail("%s exited %d: %s\n%s\n--- server:\n%s" % (
                " ".join(argv), p.returncode, p.stdout, p.stderr, self.srv.stderr_text()[-2000:]))
        return p

    def search(self, *args, **kw):
        p = self.tool("ldapsearch", "-LLL", "-o", "ldif-wrap=no", *args, **kw)
        return p.stdout

    @staticmethod
    def dns(ldif):
        return [line[4:] for line in ldif.splitlines() if line.startswith("dn: ")]

    # ---- RootDSE and schema, anonymously

    def test_rootdse(self):
        out = self.search("-s", "base", "-b", "", "+", "*")
        self.assertIn("namingContexts: " + SUFFIX, out)
        self.assertIn("supportedControl: 1.2.840.113556.1.4.319", out)
        self.assertIn("supportedExtension: 1.3.6.1.4.1.4203.1.11.3", out)
        self.assertIn("supportedExtension: 1.3.6.1.4.1.4203.1.11.1", out)
        self.assertIn("supportedExtension: 1.3.6.1.4.1.1466.20037", out)
        self.assertIn("supportedLDAPVersion: 3", out)
        self.assertIn("subschemaSubentry: cn=Subschema", out)
        self.assertIn("vendorName: Gatehouse", out)
        self.assertTrue(out.startswith("dn:\n"), out)
        self.assertEqual(out.count("\ndn:"), 0)

    def test_rootdse_sssd_style(self):
        # SSSD's first request: "*" plus names, some undefined here
        out = self.search("-s", "base", "-b", "", "(objectclass=*)", "*", "altServer",
                          "namingContexts", "supportedControl", "supportedExtension",
                          "supportedFeatures", "supportedLDAPVersion",
                          "supportedSASLMechanisms", "defaultNamingContext", "lastUSN",
                          "highestCommittedUSN")
        self.assertEqual(out.count("dn:"), 1)
        self.assertIn("namingContexts: " + SUFFIX, out)

    def test_schema(self):
        out = self.search("-s", "base", "-b", "cn=Subschema", "(objectClass=subschema)",
                          "objectClasses", "attributeTypes")
        self.assertIn("NAME 'posixAccount'", out)
        self.assertIn("NAME 'groupOfNames'", out)
        self.assertIn("NAME 'memberOf'", out)
        self.assertIn("NAME 'uidNumber'", out)

    def test_anonymous_sees_no_entries(self):
        out = self.search("-b", SUFFIX, "(uid=alice)")
        self.assertEqual(self.dns(out), [])

    # ---- binds, whoami

    def test_whoami_all_transports(self):
        expect = "dn:uid=alice,ou=people," + SUFFIX
        for kind, tls in (("ldapi", False), ("ldap", False), ("ldap", True), ("ldaps", False)):
            p = self.tool("ldapwhoami", kind=kind, user="alice", starttls=tls)
            self.assertEqual(p.stdout.strip(), expect, (kind, tls))

    def test_search_and_compare_all_transports(self):
        """ldapsearch (RootDSE, paged, the nested-group filter) and ldapcompare
        over ldapi, ldap, StartTLS and ldaps with the test CA."""
        eng = "cn=eng,ou=groups," + SUFFIX
        for kind, tls in (("ldapi", False), ("ldap", False), ("ldap", True), ("ldaps", False)):
            ctx = (kind, tls)
            out = self.search("-s", "base", "-b", "", "+", kind=kind, starttls=tls)
            self.assertIn("namingContexts: " + SUFFIX, out, ctx)
            p = self.tool("ldapsearch", "-LLL", "-b", "ou=people," + SUFFIX, "-E",
                          "pr=10/noprompt", "(objectClass=posixAccount)", "1.1", kind=kind,
                          starttls=tls, user="svc")
            self.assertEqual(len(set(self.dns(p.stdout))), NUSERS, ctx)
            out = self.search("-b", SUFFIX, "(memberOf:1.2.840.113556.1.4.1941:=%s)" % eng,
                              "1.1", kind=kind, starttls=tls, user="svc")
            self.assertEqual(sorted(self.dns(out)), ["cn=git,ou=groups," + SUFFIX,
                                                     "uid=alice,ou=people," + SUFFIX], ctx)
            for who, rc in (("alice", 6), ("bob", 5)):
                p = self.tool("ldapcompare", "cn=git,ou=groups," + SUFFIX,
                              "member:uid=%s,ou=people,%s" % (who, SUFFIX), kind=kind,
                              starttls=tls, user="svc", check=False)
                self.assertEqual(p.returncode, rc, (ctx, who, p.stdout + p.stderr))

    def test_whoami_anonymous(self):
        p = self.tool("ldapwhoami")
        self.assertEqual(p.stdout.strip(), "anonymous")

    def test_bind_wrong_password(self):
        p = self.tool("ldapwhoami", "-D", "uid=alice,ou=people," + SUFFIX, "-w", "wrong",
                      check=False)
        self.assertEqual(p.returncode, 49, p.stderr)
        p = self.tool("ldapwhoami", "-D", "uid=nobody,ou=people," + SUFFIX, "-w", "wrong",
                      check=False)
        self.assertEqual(p.returncode, 49, p.stderr)
        p = self.tool("ldapwhoami", "-D", "uid=carol,ou=people," + SUFFIX, "-w", "whatever",
                      check=False)
        self.assertEqual(p.returncode, 49, p.stderr)

    def test_bind_bare_login(self):
        p = self.tool("ldapwhoami", "-D", "alice", "-w", PW["alice"])
        self.assertEqual(p.stdout.strip(), "dn:uid=alice,ou=people," + SUFFIX)

    def test_bind_dn_case_and_spaces(self):
        p = self.tool("ldapwhoami", "-D", "UID=alice, OU=People, DC=Example,dc=ORG",
                      "-w", PW["alice"])
        self.assertEqual(p.stdout.strip(), "dn:uid=alice,ou=people," + SUFFIX)

    def test_tls_wrong_ca_refused(self):
        env = dict(os.environ, LDAPTLS_CACERT="/etc/ssl/certs/ca-certificates.crt",
                   LDAPTLS_REQCERT="demand", LDAPCONF="/dev/null")
        p = subprocess.run(["ldapwhoami", "-x", "-H", self.uri("ldaps")], env=env,
                           capture_output=True, text=True, timeout=ghtest.scaled(30))
        self.assertNotEqual(p.returncode, 0)
        # and the server still serves
        self.tool("ldapwhoami", kind="ldaps", user="alice")

    # ---- access

    def test_user_sees_self_and_groups_only(self):
        out = self.search("-b", SUFFIX, "(objectClass=*)", "dn", user="alice")
        dns = self.dns(out)
        self.assertIn("uid=alice,ou=people," + SUFFIX, dns)
        self.assertIn("cn=git,ou=groups," + SUFFIX, dns)
        self.assertIn("cn=eng,ou=groups," + SUFFIX, dns)  # nested: alice is in eng via git
        self.assertNotIn("uid=bob,ou=people," + SUFFIX, dns)
        self.assertNotIn("cn=staff,ou=groups," + SUFFIX, dns)

    def test_service_account_sees_everything(self):
        out = self.search("-b", "ou=people," + SUFFIX, "-s", "one", "(objectClass=posixAccount)",
                          "uid", user="svc")
        self.assertEqual(len(self.dns(out)), NUSERS)
        out = self.search("-b", SUFFIX, "(uid=bob)", user="root")  # admin group
        self.assertEqual(self.dns(out), ["uid=bob,ou=people," + SUFFIX])

    def test_user_entry_attributes(self):
        out = self.search("-b", SUFFIX, "(uid=alice)", "*", "+", "userPassword", user="svc")
        for line in ("objectClass: inetOrgPerson", "objectClass: posixAccount",
                     "uid: alice", "cn: alice", "displayName: Alice Liddell", "sn: Liddell",
                     "mail: alice@example.org", "loginShell: /bin/zsh",
                     "memberOf: cn=git,ou=groups," + SUFFIX,
                     "entryDN: uid=alice,ou=people," + SUFFIX):
            self.assertIn(line + "\n", out)
        for attr in ("uidNumber: ", "gidNumber: ", "entryUUID: ", "createTimestamp: ",
                     "modifyTimestamp: "):
            self.assertIn(attr, out)
        self.assertNotIn("userPassword", out)
        self.assertNotIn("argon2", out)
        # "*" alone: no operational attributes; "1.1": none at all
        out = self.search("-b", SUFFIX, "(uid=alice)", user="svc")
        self.assertNotIn("entryUUID", out)
        out = self.search("-b", SUFFIX, "(uid=alice)", "1.1", user="svc")
        self.assertEqual(out.strip(), "dn: uid=alice,ou=people," + SUFFIX)

    def test_posix_attributes_same_as_nss(self):
        """homeDirectory, loginShell, gecos and gidNumber over LDAP are what
        libnss_gatehouse serves (nss.getpwnam): the user's own fields, else
        home_template, default_shell, the display name and, with
        user_private_groups (the default), the uid as primary gid."""
        c = self.srv.client()
        self.addCleanup(c.close)
        seen = {}
        for name in ("posixown", "posixdef", "alice", "bob"):
            pw = self.assertOk(c.call("nss.getpwnam", name=name))["passwd"]
            out = self.search("-b", SUFFIX, "(uid=%s)" % name, "homeDirectory", "loginShell",
                              "gecos", "gidNumber", "uidNumber", user="svc")
            attrs = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
            self.assertEqual(attrs.get("homeDirectory"), pw["home"], name)
            self.assertEqual(attrs.get("loginShell"), pw["shell"], name)
            self.assertEqual(attrs.get("gecos", ""), pw["gecos"], name)
            self.assertEqual(int(attrs["gidNumber"]), pw["gid"], name)
            self.assertEqual(int(attrs["uidNumber"]), pw["uid"], name)
            seen[name] = attrs
        own, dflt = seen["posixown"], seen["posixdef"]
        self.assertEqual((own["homeDirectory"], own["loginShell"], own["gecos"], own["gidNumber"]),
                         ("/srv/posixown", "/bin/bash", "Pat Own,Room 1", "43210"))
        self.assertEqual(dflt["homeDirectory"], "/export/posixdef.%s" % dflt["uidNumber"])
        self.assertEqual((dflt["loginShell"], dflt["gecos"]), ("/bin/zsh", "Dee Fault"))
        self.assertEqual(dflt["gidNumber"], dflt["uidNumber"])  # user-private group
        self.assertNotIn("gecos", seen["bob"])  # no gecos, no display name: none, as NSS's ""
        # filters see the same values
        self.assertEqual(self.dns(self.search("-b", SUFFIX, "(&(loginShell=/bin/bash)"
                                              "(homeDirectory=/srv/*))", "1.1", user="svc")),
                         ["uid=posixown,ou=people," + SUFFIX])

    def test_names_ignore_case(self):
        """uid and cn are caseIgnore: a login with capitals is found by any
        spelling, through the index (uid=, cn=, DNs, binds) as through a scan;
        two logins differing only in case both match an equality filter, and
        a DN spelled like neither names neither."""
        mixed = "uid=MixedCase,ou=people," + SUFFIX
        def found(flt, base=SUFFIX, *extra):
            return sorted(self.dns(self.search("-b", base, *extra, flt, "1.1", user="svc")))
        for flt in ("(uid=mixedcase)", "(uid=MIXEDCASE)", "(cn=mixedCase)", "(uid=mixed*)",
                    "(&(objectClass=posixAccount)(uid=mixedcase))",
                    "(entryDN=uid=mixedcase,ou=people,%s)" % SUFFIX,
                    "(memberOf=cn=qa-team,ou=groups,%s)" % SUFFIX):
            self.assertEqual(found(flt), [mixed], flt)
        self.assertEqual(found("(cn=qa-team)"), ["cn=QA-Team,ou=groups," + SUFFIX])
        self.assertEqual(found("(member=uid=MIXEDCASE,ou=people,%s)" % SUFFIX),
                         ["cn=QA-Team,ou=groups," + SUFFIX])
        self.assertEqual(found("(objectClass=*)", "uid=mixedcase,ou=people," + SUFFIX,
                               "-s", "base"), [mixed])
        twins = ["uid=Twin,ou=people," + SUFFIX, "uid=twin,ou=people," + SUFFIX]
        for flt in ("(uid=twin)", "(uid=TWIN)", "(uid=tWiN)", "(uid=twi*)",
                    "(|(uid=twin)(uid=nobody))"):
            self.assertEqual(found(flt), twins, flt)
        # binds: any spelling of a login with capitals; the exact spelling of
        # a twin; a third spelling of the twins is nobody's
        for dn in ("uid=mixedcase,ou=people," + SUFFIX, "UID=MIXEDCASE,OU=PEOPLE," + SUFFIX,
                   "mixedcase"):
            p = self.tool("ldapwhoami", "-D", dn, "-w", PW["MixedCase"])
            self.assertEqual(p.stdout.strip(), "dn:" + mixed, dn)
        for name in ("Twin", "twin"):
            p = self.tool("ldapwhoami", "-D", "uid=%s,ou=people,%s" % (name, SUFFIX),
                          "-w", PW[name])
            self.assertEqual(p.stdout.strip(), "dn:uid=%s,ou=people,%s" % (name, SUFFIX))
        p = self.tool("ldapwhoami", "-D", "uid=TWIN,ou=people," + SUFFIX, "-w", PW["twin"],
                      check=False)
        self.assertEqual(p.returncode, 49)
        # Password Modify names its target by DN too
        env = dict(os.environ, LDAPCONF="/dev/null")
        p = subprocess.run(["ldappasswd", "-x", "-H", self.uri("ldapi"), "-D",
                            "uid=root,ou=people," + SUFFIX, "-w", PW["root"],
                            "-s", "mixed-new-pass-5", "uid=mixedcase,ou=people," + SUFFIX],
                           env=env, capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.tool("ldapwhoami", "-D", mixed, "-w", "mixed-new-pass-5")
        p = subprocess.run(["ldappasswd", "-x", "-H", self.uri("ldapi"), "-D",
                            "uid=root,ou=people," + SUFFIX, "-w", PW["root"],
                            "-s", PW["MixedCase"], mixed], env=env, capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_group_entry_attributes(self):
        out = self.search("-b", SUFFIX, "(cn=eng)", user="svc")
        self.assertIn("objectClass: posixGroup", out)
        self.assertIn("objectClass: groupOfNames", out)
        self.assertIn("member: cn=git,ou=groups," + SUFFIX, out)
        self.assertIn("gidNumber: ", out)
        out = self.search("-b", SUFFIX, "(cn=git)", "memberUid", "member", user="svc")
        self.assertIn("memberUid: alice", out)
        self.assertIn("member: uid=alice,ou=people," + SUFFIX, out)

    # ---- filters

    def test_filters(self):
        def found(flt, base=SUFFIX):
            return sorted(self.dns(self.search("-b", base, flt, "1.1", user="svc")))
        alice = "uid=alice,ou=people," + SUFFIX
        bob = "uid=bob,ou=people," + SUFFIX
        self.assertEqual(found("(uid=ALICE)"), [alice])
        self.assertEqual(found("(mail=Bob@Example.org)"), [bob])
        self.assertEqual(found("(&(uid=a*)(objectClass=person))"), [alice])
        self.assertEqual(found("(|(uid=alice)(uid=bob))"), [alice, bob])
        self.assertEqual(found("(&(objectClass=posixAccount)(!(uid=u*))(!(uid=alice)))"),
                         sorted([bob] + ["uid=%s,ou=people,%s" % (n, SUFFIX)
                                         for n in ("carol", "dave", "root", "svc", "posixown",
                                                   "posixdef", "MixedCase", "Twin", "twin")]))
        self.assertEqual(found("(uid~=alice)"), [alice])
        self.assertEqual(found("(displayName=*lid*)"), [alice])
        self.assertEqual(found("(nosuchattr=1)"), [])
        self.assertEqual(found("(!(nosuchattr=1))"), [])
        self.assertEqual(found("(userPassword=*)"), [])
        uid = self.search("-b", SUFFIX, "(uid=alice)", "uidNumber", user="svc")
        n = int(uid.split("uidNumber: ")[1].split()[0])
        self.assertEqual(found("(uidNumber=%d)" % n), [alice])
        self.assertIn(alice, found("(&(uidNumber>=%d)(uidNumber<=%d))" % (n, n)))
        self.assertEqual(found("(member=uid=alice,ou=people,%s)" % SUFFIX),
                         ["cn=git,ou=groups," + SUFFIX])
        self.assertEqual(found("(memberOf=cn=git,ou=groups,%s)" % SUFFIX), [alice])
        self.assertEqual(found("(memberOf=CN=Git, OU=Groups, %s)" % SUFFIX.upper()), [alice])
        self.assertEqual(found("(objectClass=sudoRole)"), [])

    def test_nested_group_in_chain(self):
        eng = "cn=eng,ou=groups," + SUFFIX
        out = self.search("-b", SUFFIX,
                          "(memberOf:1.2.840.113556.1.4.1941:=%s)" % eng, "1.1", user="svc")
        self.assertEqual(sorted(self.dns(out)),
                         ["cn=git,ou=groups," + SUFFIX, "uid=alice,ou=people," + SUFFIX])
        out = self.search("-b", SUFFIX, "(memberOf=%s)" % eng, "1.1", user="svc")
        self.assertEqual(self.dns(out), ["cn=git,ou=groups," + SUFFIX])
        out = self.search("-b", SUFFIX, "(member:1.2.840.113556.1.4.1941:=uid=alice,ou=people,%s)"
                          % SUFFIX, "1.1", user="svc")
        self.assertEqual(sorted(self.dns(out)), ["cn=eng,ou=groups," + SUFFIX,
                                                 "cn=git,ou=groups," + SUFFIX])

    def test_scopes_and_missing_base(self):
        out = self.search("-b", SUFFIX, "-s", "one", "(objectClass=*)", "1.1", user="svc")
        self.assertEqual(sorted(self.dns(out)), ["ou=groups," + SUFFIX, "ou=people," + SUFFIX])
        out = self.search("-b", "uid=bob,ou=people," + SUFFIX, "-s", "base", "1.1", user="svc")
        self.assertEqual(self.dns(out), ["uid=bob,ou=people," + SUFFIX])
        p = self.tool("ldapsearch", "-b", "uid=nobody,ou=people," + SUFFIX, "-s", "base",
                      user="svc", check=False)
        self.assertEqual(p.returncode, 32)
        p = self.tool("ldapsearch", "-b", "dc=elsewhere", user="svc", check=False)
        self.assertEqual(p.returncode, 32)
        # a user asking for someone else's entry gets nothing either
        p = self.tool("ldapsearch", "-b", "uid=bob,ou=people," + SUFFIX, "-s", "base",
                      user="alice", check=False)
        self.assertEqual(p.returncode, 32)

    def test_size_limit(self):
        p = self.tool("ldapsearch", "-b", SUFFIX, "-z", "3", "(uid=u*)", "1.1", user="svc",
                      check=False)
        self.assertEqual(p.returncode, 4)
        self.assertEqual(p.stdout.count("dn: "), 3)

    def test_paged(self):
        p = self.tool("ldapsearch", "-LLL", "-b", "ou=people," + SUFFIX, "-E", "pr=10/noprompt",
                      "(objectClass=posixAccount)", "1.1", user="svc")
        dns = self.dns(p.stdout)
        self.assertEqual(len(dns), NUSERS)
        self.assertEqual(len(set(dns)), NUSERS)
        # with paging, over TLS too
        p = self.tool("ldapsearch", "-LLL", "-b", SUFFIX, "-E", "pr=7/noprompt",
                      "(uid=u*)", "1.1", kind="ldaps", user="svc")
        self.assertEqual(len(self.dns(p.stdout)), 25)

    def test_hot_path_same_as_full_decode(self):
        """Searches whose filter needs only a user's hot value (uid, uidNumber,
        gidNumber, mail, displayName, objectClass, entryDN, memberOf) skip
        decoding records; their entries and attributes must be those of the
        full-decode path: the same filter ANDed with an always-true test on
        createTimestamp (which forces a decode) asking for everything,
        projected onto the attributes asked."""
        def entries(ldif):
            out = []
            for block in ldif.strip().split("\n\n"):
                lines = [l for l in block.splitlines() if l and not l.startswith("#")]
                if not lines:
                    continue
                attrs = {}
                for line in lines[1:]:
                    name, _, _ = line.partition(":")
                    attrs.setdefault(name.lower(), []).append(line)
                out.append((lines[0], {k: sorted(v) for k, v in attrs.items()}))
            return out
        n = int(self.search("-b", SUFFIX, "(uid=alice)", "uidNumber",
                            user="svc").split("uidNumber: ")[1].split()[0])
        people = "ou=people," + SUFFIX
        filters = ["(objectClass=inetOrgPerson)", "(uid=a*)", "(uid=*)", "(uid=ALICE)",
                   "(&(objectClass=posixAccount)(!(uid=u*)))", "(uidNumber>=%d)" % (n + 2),
                   "(|(uid=carol)(uidNumber=%d))" % n, "(memberOf=cn=git,ou=groups,%s)" % SUFFIX,
                   "(entryDN=uid=bob,%s)" % people, "(!(nosuchattr=1))", "(entryUUID=*)",
                   "(mail=BOB@example.org)", "(displayName=*lid*)", "(sn=Liddell)",
                   "(&(gidNumber>=1)(!(mail=*)))", "(|(mail=*)(displayName=alice*))"]
        attr_lists = [["uid"], ["1.1"], ["uid", "uidNumber", "objectClass", "entryUUID",
                                          "memberOf", "entryDN", "cn"],
                      ["uid", "mail", "displayName", "sn", "gidNumber"],
                      ["cn", "gecos", "homeDirectory", "createTimestamp"]]
        for flt in filters:
            full = entries(self.search("-b", SUFFIX, "(&%s(|(createTimestamp=*)(!(createTimestamp=*))))" % flt,
                                       "*", "+", user="svc"))
            self.assertTrue(full or flt == "(!(nosuchattr=1))", flt)
            for attrs in attr_lists:
                want = [(dn, {k: v for k, v in a.items() if k in [x.lower() for x in attrs]})
                        for dn, a in full]
                got = entries(self.search("-b", SUFFIX, flt, *attrs, user="svc"))
                self.assertEqual(got, want, "%s %s" % (flt, attrs))
                # paged, one level under ou=people: the same users in the same order
                got = entries(self.search("-b", people, "-s", "one", "-E", "pr=3/noprompt",
                                          flt, *attrs, user="svc"))
                self.assertEqual(got, [e for e in want if e[0].endswith("," + people)],
                                 "paged %s %s" % (flt, attrs))
        # a user bound as itself still sees only its own entry through the hot path
        got = entries(self.search("-b", SUFFIX, "(objectClass=inetOrgPerson)", "uid",
                                  user="alice"))
        self.assertEqual(got, [("dn: uid=alice,%s" % people, {"uid": ["uid: alice"]})])

    def test_unknown_critical_control(self):
        p = self.tool("ldapsearch", "-b", SUFFIX, "-e", "!1.2.3.4.5", "(uid=alice)",
                      user="svc", check=False)
        self.assertEqual(p.returncode, 12, p.stderr)
        # non-critical unknown controls are ignored (SSSD's ppolicy request)
        p = self.tool("ldapsearch", "-b", SUFFIX, "-e", "1.2.3.4.5", "(uid=alice)", "1.1",
                      user="svc")
        self.assertIn("uid=alice", p.stdout)

    def test_compare(self):
        dn = "cn=git,ou=groups," + SUFFIX
        p = self.tool("ldapcompare", dn, "member:uid=alice,ou=people," + SUFFIX, user="svc",
                      check=False)
        self.assertEqual(p.returncode, 6, p.stdout + p.stderr)
        p = self.tool("ldapcompare", dn, "member:uid=bob,ou=people," + SUFFIX, user="svc",
                      check=False)
        self.assertEqual(p.returncode, 5, p.stdout + p.stderr)
        p = self.tool("ldapcompare", "uid=bob,ou=people," + SUFFIX, "mail:BOB@example.org",
                      user="svc", check=False)
        self.assertEqual(p.returncode, 6)
        p = self.tool("ldapcompare", "uid=bob,ou=people," + SUFFIX, "mail:bob@example.org",
                      user="alice", check=False)
        self.assertEqual(p.returncode, 32)

    def test_writes_refused(self):
        ldif = "dn: uid=x,ou=people,%s\nchangetype: delete\n" % SUFFIX
        p = self.tool("ldapmodify", user="root", stdin=ldif, check=False)
        self.assertEqual(p.returncode, 53, p.stderr)

    def test_passwd(self):
        # self-service with the old password (over StartTLS), then admin reset
        env = dict(os.environ, LDAPTLS_CACERT=os.path.join(self.tls, "ca.pem"), LDAPCONF="/dev/null")
        dn = "uid=dave,ou=people," + SUFFIX
        c = self.srv.client()
        self.addCleanup(c.close)
        # a password change ends every session, in the same transaction, as
        # user.passwd and passwd.change do
        tok = c.login("dave", PW["dave"])
        self.assertOk(c.call("whoami", token=tok))
        p = subprocess.run(["ldappasswd", "-x", "-ZZ", "-H", self.uri("ldap"), "-D", dn,
                            "-w", PW["dave"], "-a", PW["dave"], "-s", "dave-new-pass-2"],
                           env=env, capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertError(c.call("whoami", token=tok), "invalid_token")
        tok = c.login("dave", "dave-new-pass-2")
        p = self.tool("ldapwhoami", "-D", dn, "-w", "dave-new-pass-2")
        p = self.tool("ldapwhoami", "-D", dn, "-w", PW["dave"], check=False)
        self.assertEqual(p.returncode, 49)
        # a wrong old password
        p = subprocess.run(["ldappasswd", "-x", "-H", self.uri("ldapi"), "-D", dn,
                            "-w", "dave-new-pass-2", "-a", "not-the-old", "-s", "x-new-pass-3"],
                           env=env, capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        # someone else's password: refused for alice, allowed for the admin
        p = subprocess.run(["ldappasswd", "-x", "-H", self.uri("ldapi"), "-D",
                            "uid=alice,ou=people," + SUFFIX, "-w", PW["alice"],
                            "-s", "another-pass-4", dn], env=env, capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("(50)", p.stdout + p.stderr)
        p = subprocess.run(["ldappasswd", "-x", "-H", self.uri("ldapi"), "-D",
                            "uid=root,ou=people," + SUFFIX, "-w", PW["root"],
                            "-s", PW["dave"], dn], env=env, capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertError(c.call("whoami", token=tok), "invalid_token")  # an admin reset too
        self.tool("ldapwhoami", "-D", dn, "-w", PW["dave"])

    def test_small_paths(self):
        env = dict(os.environ, LDAPCONF="/dev/null")
        alice = "uid=alice,ou=people," + SUFFIX
        # Password Modify of oneself without the old password: 53
        p = subprocess.run(["ldappasswd", "-x", "-H", self.uri("ldapi"), "-D", alice,
                            "-w", PW["alice"], "-s", "never-stored-6"], env=env,
                           capture_output=True, text=True)
        self.assertIn("(53)", p.stdout + p.stderr)
        self.tool("ldapwhoami", user="alice")  # unchanged
        # compare on userPassword: insufficientAccessRights (50)
        p = self.tool("ldapcompare", alice, "userPassword:" + PW["alice"], user="svc",
                      check=False)
        self.assertEqual(p.returncode, 50, p.stdout + p.stderr)
        # a group's entryUUID finds the group, and is not a user's
        out = self.search("-b", SUFFIX, "(cn=git)", "entryUUID", user="svc")
        uuid = out.split("entryUUID: ")[1].split()[0]
        self.assertEqual(self.dns(self.search("-b", SUFFIX, "(entryUUID=%s)" % uuid, "1.1",
                                              user="svc")), ["cn=git,ou=groups," + SUFFIX])
        self.assertEqual(self.dns(self.search("-b", "ou=people," + SUFFIX,
                                              "(entryUUID=%s)" % uuid, "1.1", user="svc")), [])

    # ---- applications' literal login filters

    def test_gitea_filter(self):
        flt = ("(&(objectClass=posixAccount)(uid=%s)(memberOf=cn=git,ou=groups,%s))"
               % ("alice", SUFFIX))
        out = self.search("-b", "ou=people," + SUFFIX, flt, "uid", "mail", "sn", user="svc")
        self.assertEqual(self.dns(out), ["uid=alice,ou=people," + SUFFIX])
        flt = ("(&(objectClass=posixAccount)(uid=%s)(memberOf=cn=git,ou=groups,%s))"
               % ("bob", SUFFIX))
        self.assertEqual(self.dns(self.search("-b", "ou=people," + SUFFIX, flt, user="svc")), [])

    def test_grafana_filter(self):
        out = self.search("-b", SUFFIX, "(uid=bob)", "dn", "givenName", "sn", "email",
                          "uid", "memberOf", user="svc")
        self.assertEqual(self.dns(out), ["uid=bob,ou=people," + SUFFIX])
        # Grafana's group lookup
        out = self.search("-b", "ou=groups," + SUFFIX,
                          "(&(objectClass=posixGroup)(memberUid=alice))", "cn", user="svc")
        self.assertEqual(self.dns(out), ["cn=git,ou=groups," + SUFFIX])

    def test_nextcloud_filter_paged(self):
        flt = "(&(|(objectclass=inetOrgPerson))(|(uid=%s)(mail=%s)))"
        for who in ("alice", "alice@example.org"):
            p = self.tool("ldapsearch", "-LLL", "-b", SUFFIX, "-E", "pr=500/noprompt",
                          flt % (who, who), "dn", "uid", "displayname", user="svc")
            self.assertEqual(self.dns(p.stdout), ["uid=alice,ou=people," + SUFFIX])
        p = self.tool("ldapsearch", "-LLL", "-b", SUFFIX, "-E", "pr=10/noprompt",
                      "(|(objectclass=inetOrgPerson))", "dn", user="svc")
        self.assertEqual(len(self.dns(p.stdout)), NUSERS)

    def test_jellyfin_filter(self):
        # jellyfin-plugin-ldapauth, as it runs: (1) bound as the service
        # account, LdapSearchFilter alone over the base (attributes uid, mail),
        # the user name matched in memory; (2) bound as the user, a base-scope
        # search of its own DN with the admin filter
        out = self.search("-b", SUFFIX, "(memberof=cn=git,ou=groups,%s)" % SUFFIX, "uid",
                          "mail", user="svc")
        self.assertIn("uid: alice", out)
        self.assertEqual(self.dns(out), ["uid=alice,ou=people," + SUFFIX])
        admin_filter = "(memberof=cn=gatehouse-admins,ou=groups,%s)" % SUFFIX
        for who, want in (("root", 1), ("alice", 0)):
            dn = "uid=%s,ou=people,%s" % (who, SUFFIX)
            out = self.search("-b", dn, "-s", "base", admin_filter, "uid", user=who)
            self.assertEqual(len(self.dns(out)), want, who)
        # a plain user's own memberOf is visible to itself
        out = self.search("-b", "uid=alice,ou=people," + SUFFIX, "-s", "base",
                          "(memberof=cn=git,ou=groups,%s)" % SUFFIX, "1.1", user="alice")
        self.assertEqual(self.dns(out), ["uid=alice,ou=people," + SUFFIX])

    def test_sssd_style_queries(self):
        out = self.search("-b", SUFFIX,
                          "(&(uid=alice)(objectClass=posixAccount)(uid=*)"
                          "(&(uidNumber=*)(!(uidNumber=0))))",
                          "uid", "userPassword", "uidNumber", "krbPrincipalName",
                          "userCertificate;binary", "modifyTimestamp", "modifyTimestamp",
                          user="svc")
        self.assertEqual(self.dns(out), ["uid=alice,ou=people," + SUFFIX])
        self.assertIn("modifyTimestamp: ", out)
        out = self.search("-b", SUFFIX, "(&(member=UID=Alice,OU=People,%s)"
                          "(objectClass=posixGroup)(cn=*))" % SUFFIX.upper(), "cn", user="svc")
        self.assertEqual(self.dns(out), ["cn=git,ou=groups," + SUFFIX])

    def test_stats(self):
        """Every operation and its result code is counted in stats.ldap and
        logged at debug level (never a password: tearDownClass)."""
        c = self.srv.client()
        self.addCleanup(c.close)

        def stats():
            r = self.assertOk(c.call("stats"))["ldap"]
            return r, r["ops"], r["results"]
        before, ops0, res0 = stats()
        self.tool("ldapwhoami", user="alice")                             # bind, extended, unbind
        self.tool("ldapwhoami", "-D", "uid=alice,ou=people," + SUFFIX, "-w", "wrong",
                  check=False)                                            # invalidCredentials
        dn = "cn=git,ou=groups," + SUFFIX
        self.tool("ldapcompare", dn, "member:uid=alice,ou=people," + SUFFIX, user="svc",
                  check=False)                                            # compareTrue
        self.tool("ldapcompare", dn, "member:uid=bob,ou=people," + SUFFIX, user="svc",
                  check=False)                                            # compareFalse
        self.tool("ldapmodify", user="root", check=False,
                  stdin="dn: uid=x,ou=people,%s\nchangetype: delete\n" % SUFFIX)  # 53
        self.tool("ldapsearch", "-b", "uid=nobody,ou=people," + SUFFIX, "-s", "base",
                  user="svc", check=False)                                # noSuchObject
        s = socket.socket(socket.AF_UNIX)                                 # abandon (no reply)
        s.settimeout(ghtest.scaled(10))
        s.connect(self.ldapi)
        s.sendall(bytes.fromhex("300602010250 0101".replace(" ", "")))
        s.sendall(bytes.fromhex("30050201034200"))                        # unbind
        self.assertEqual(s.recv(100), b"")
        s.close()
        after, ops1, res1 = stats()

        def grew(table0, table1, key, by=1):
            self.assertGreaterEqual(table1.get(key, 0) - table0.get(key, 0), by, (key, table1))
        for op, n in (("bind", 4), ("extended", 1), ("unbind", 5), ("compare", 2),
                      ("delete", 1), ("search", 1), ("abandon", 1)):
            grew(ops0, ops1, op, n)
        for code in ("success", "invalidCredentials", "compareTrue", "compareFalse",
                     "unwillingToPerform", "noSuchObject"):
            grew(res0, res1, code)
        self.assertGreaterEqual(after["binds_ok"] - before["binds_ok"], 4)
        self.assertGreaterEqual(after["binds_failed"] - before["binds_failed"], 1)
        self.assertGreater(after["connections_total"], before["connections_total"])
        log = self.srv.stderr_text()
        self.assertRegex(log, r"ldap ldapi:uid=\d+: bind #1 -> invalidCredentials")
        self.assertRegex(log, r"ldap ldapi:uid=\d+: compare #2 cn=git,ou=groups,%s -> compareTrue"
                         % SUFFIX)
        self.assertRegex(log, r"ldap ldapi:uid=\d+: delete #2 .*-> unwillingToPerform")
        self.assertRegex(log, r"ldap ldapi:uid=\d+: abandon #2 -> success")


class LdapConfig(ghtest.TestCase):
    """ldap_listen: the default ldapi socket, off, and what is refused at start."""

    def test_default_ldapi_in_state_dir(self):
        srv = self.start_server()
        path = os.path.join(srv.state_dir, "ldapi")
        self.assertTrue(ghtest.wait_until(lambda: os.path.exists(path), ghtest.scaled(5)))
        p = subprocess.run(["ldapwhoami", "-x", "-H", "ldapi://" + path.replace("/", "%2F")],
                           env=dict(os.environ, LDAPCONF="/dev/null"), capture_output=True,
                           text=True, timeout=ghtest.scaled(30))
        self.assertEqual(p.stdout.strip(), "anonymous", p.stderr)

    def test_off(self):
        srv = self.start_server(config={"ldap_listen": ""})
        self.assertFalse(os.path.exists(os.path.join(srv.state_dir, "ldapi")))

    def test_tls_ca_file_checks_client_certificates_and_grants_nothing(self):
        d = tempfile.mkdtemp(prefix="gh-ldap-ca-")
        self.addCleanup(shutil.rmtree, d, True)
        make_ca(d)

        def run(*args, cwd=d):
            subprocess.run(args, cwd=cwd, check=True, capture_output=True)

        def client_cert(ca_dir, name):  # a client certificate signed by ca_dir's CA
            run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj",
                "/CN=" + name)
            run("openssl", "x509", "-req", "-in", name + ".csr", "-CA",
                os.path.join(ca_dir, "ca.pem"), "-CAkey", os.path.join(ca_dir, "ca.key"),
                "-CAcreateserial", "-out", name + ".pem", "-days", "2")
        other = os.path.join(d, "other")
        os.mkdir(other)
        make_ca(other)
        client_cert(d, "good")
        client_cert(other, "stranger")
        port = ghtest.free_port()
        srv = self.start_server(config={
            "ldap_listen": "ldaps://127.0.0.1:%d" % port,
            "tls_cert_file": os.path.join(d, "server.pem"),
            "tls_key_file": os.path.join(d, "server.key"),
            "tls_ca_file": os.path.join(d, "ca.pem")})

        def whoami(cert=None):
            env = dict(os.environ, LDAPTLS_CACERT=os.path.join(d, "ca.pem"),
                       LDAPTLS_REQCERT="demand", LDAPCONF="/dev/null")
            if cert:
                env.update(LDAPTLS_CERT=os.path.join(d, cert + ".pem"),
                           LDAPTLS_KEY=os.path.join(d, cert + ".key"))
            return subprocess.run(["ldapwhoami", "-x", "-H", "ldaps://127.0.0.1:%d" % port],
                                  env=env, capture_output=True, text=True,
                                  timeout=ghtest.scaled(30))
        p = whoami()  # none: fine
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "anonymous"), p.stderr)
        p = whoami("good")  # verified, and still anonymous: it grants nothing
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "anonymous"), p.stderr)
        p = whoami("stranger")  # from another CA: the handshake fails
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(whoami().returncode, 0)  # and the server still serves

    def test_non_loopback_allowed(self):
        port = ghtest.free_port()
        self.start_server(config={"ldap_listen": "ldap://0.0.0.0:%d" % port,
                                  "ldap_allow_non_loopback": "yes"})
        p = subprocess.run(["ldapwhoami", "-x", "-H", "ldap://127.0.0.1:%d" % port],
                           env=dict(os.environ, LDAPCONF="/dev/null"), capture_output=True,
                           text=True, timeout=ghtest.scaled(30))
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "anonymous"), p.stderr)

    def test_refused_at_start(self):
        port = ghtest.free_port()
        for cfg, words in (
                ({"ldap_listen": "ldap://0.0.0.0:%d" % port}, "ldap_allow_non_loopback"),
                ({"ldap_listen": "ldaps://127.0.0.1:%d" % port}, "tls_cert_file"),
                ({"ldap_listen": "http://127.0.0.1:%d" % port}, "not ldapi://"),
                ({"ldap_listen": "ldapi://", "ldap_suffix": "not a dn"}, "ldap_suffix"),
                ({"ldap_listen": "ldaps://127.0.0.1:%d" % port,
                  "tls_cert_file": "/nonexistent.pem", "tls_key_file": "/nonexistent.key"},
                 "tls_cert_file")):
            with self.assertRaises(ghtest.ServerError) as cm:
                srv = ghtest.Server(config=cfg)
                srv.close()
            self.assertIn(words, str(cm.exception), cfg)


if __name__ == "__main__":
    ghtest.main()
