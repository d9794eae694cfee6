"""SSSD as a client of the LDAP front-end: sssd (id_provider = ldap,
auth_provider = ldap, rfc2307bis) over ldaps with a test CA, then glibc NSS
(`getent passwd`, `id` with nested groups) and PAM through pam_sss
(`pamtester`: right and wrong passwords, and a password change, which pam_sss
sends as a Password Modify; run as nobody, since pam_sss refuses root).

The host is never touched: everything runs as root in a private mount
namespace (unshare -m) where tmpfs hides /var/lib/sss and /run (empty caches,
no host sssd or nscd sockets) and the test's own sssd.conf, nsswitch.conf and
/etc/pam.d are bind-mounted over the real ones. Skipped unless root with
sssd, libnss-sss, libpam-sss and pamtester installed.
"""

import os
import shutil
import subprocess
import tempfile
import unittest

import ghtest
from test_ldap import make_ca

NEEDED = ("/usr/sbin/sssd", "/usr/bin/pamtester", "/usr/bin/unshare")
LIBS = ("/lib/x86_64-linux-gnu/libnss_sss.so.2", "/usr/lib/x86_64-linux-gnu/libnss_sss.so.2")
PAM_SSS = ("/lib/x86_64-linux-gnu/security/pam_sss.so",
           "/usr/lib/x86_64-linux-gnu/security/pam_sss.so")


def have_sssd():
    return (ghtest.is_root() and all(os.path.exists(p) for p in NEEDED)
            and any(os.path.exists(p) for p in LIBS) and any(os.path.exists(p) for p in PAM_SSS))


SCRIPT = r"""
set -u
T=%(tmp)s
mount --make-rprivate / 2>/dev/null || true
mount -t tmpfs -o mode=0755 tmpfs /var/lib/sss || exit 90
mkdir -p /var/lib/sss/db /var/lib/sss/pipes/private /var/lib/sss/mc /var/lib/sss/pubconf \
         /var/lib/sss/gpo_cache /var/lib/sss/keytabs /var/lib/sss/deskprofile
chmod 700 /var/lib/sss/db /var/lib/sss/pipes/private /var/lib/sss/keytabs
mount -t tmpfs -o mode=0755 tmpfs /run || exit 91
mkdir -p /var/log/sssd
mount --bind $T/etc-sssd /etc/sssd || exit 92
mount --bind $T/log /var/log/sssd || exit 93
mount --bind $T/nsswitch.conf /etc/nsswitch.conf || exit 94
mount --bind $T/pam.d /etc/pam.d || exit 95
/usr/sbin/sssd -i --logger=files > $T/sssd.out 2>&1 &
SSSD=$!
for i in $(seq 1 200); do
    [ -S /var/lib/sss/pipes/nss ] && [ -S /var/lib/sss/pipes/pam ] && break
    sleep 0.1
done
echo "== getent"
getent passwd alice; echo "rc=$?"
echo "== getent-missing"
getent passwd nosuchuser; echo "rc=$?"
echo "== getent-group"
getent group eng; echo "rc=$?"
echo "== id"
id alice; echo "rc=$?"
echo "== pam-good"
printf '%%s\n' '%(alice_pw)s' | pamtester ghtest alice authenticate; echo "rc=$?"
echo "== pam-bad"
printf '%%s\n' 'not-the-password' | pamtester ghtest alice authenticate; echo "rc=$?"
echo "== pam-good-again"
printf '%%s\n' '%(alice_pw)s' | pamtester ghtest alice authenticate acct_mgmt; echo "rc=$?"
echo "== chauthtok"
printf '%%s\n%%s\n%%s\n' '%(alice_pw)s' 'alice-Changed-2' 'alice-Changed-2' | setpriv --reuid=65534 --regid=65534 --clear-groups pamtester ghtest alice chauthtok; echo "rc=$?"
echo "== pam-new"
printf '%%s\n' 'alice-Changed-2' | pamtester ghtest alice authenticate; echo "rc=$?"
echo "== end"
kill $SSSD 2>/dev/null
wait $SSSD 2>/dev/null
"""


@unittest.skipUnless(have_sssd(), "needs root, sssd-ldap, libnss-sss, libpam-sss and pamtester")
class Sssd(ghtest.TestCase):

    def test_sssd_nss_and_pam(self):
        tmp = tempfile.mkdtemp(prefix="gh-sssd-")
        self.addCleanup(shutil.rmtree, tmp, True)
        make_ca(tmp)
        port = ghtest.free_port()
        srv = self.start_server(config={
            "ldap_listen": "ldaps://127.0.0.1:%d" % port,
            "tls_cert_file": os.path.join(tmp, "server.pem"),
            "tls_key_file": os.path.join(tmp, "server.key"),
            "log_level": "debug",
        })
        c = self.client(srv)
        for name, pw in (("alice", "alice-Secret-1"), ("svc", "svc-Secret-12")):
            self.assertOk(c.call("user.add", name=name, password=pw, display_name=name.title()))
        for g in ("git", "eng", "staff"):
            self.assertOk(c.call("group.add", name=g))
        self.assertOk(c.call("group.add_member", group="git", user="alice"))
        self.assertOk(c.call("group.add_member", group="eng", subgroup="git"))
        self.assertOk(c.call("role.add", name="ldap-reader",
                             allow=[{"action": "read", "resource": "ldap/directory"}]))
        self.assertOk(c.call("grant", role="ldap-reader", user="svc"))
        uid = c.call("user.get", name="alice")["user"]["uid"]

        for d in ("etc-sssd", "log", "pam.d"):
            os.makedirs(os.path.join(tmp, d))
        conf = os.path.join(tmp, "etc-sssd", "sssd.conf")
        with open(conf, "w") as f:
            f.write("""[sssd]
services = nss, pam
domains = gh

[nss]
[pam]

[domain/gh]
id_provider = ldap
auth_provider = ldap
chpass_provider = ldap
ldap_uri = ldaps://127.0.0.1:%d
ldap_tls_cacert = %s
ldap_tls_reqcert = demand
ldap_search_base = dc=gatehouse
ldap_schema = rfc2307bis
ldap_group_member = member
ldap_default_bind_dn = uid=svc,ou=people,dc=gatehouse
ldap_default_authtok_type = password
ldap_default_authtok = svc-Secret-12
cache_credentials = false
enumerate = false
entry_cache_timeout = 1
""" % (port, os.path.join(tmp, "ca.pem")))
        os.chmod(conf, 0o600)
        with open(os.path.join(tmp, "nsswitch.conf"), "w") as f:
            f.write("passwd: files sss\ngroup: files sss\nshadow: files\n"
                    "hosts: files\n")
        with open(os.path.join(tmp, "pam.d", "ghtest"), "w") as f:
            f.write("auth required pam_sss.so\naccount required pam_sss.so\n"
                    "password required pam_sss.so\nsession required pam_permit.so\n")
        script = os.path.join(tmp, "run.sh")
        with open(script, "w") as f:
            f.write(SCRIPT % {"tmp": tmp, "alice_pw": "alice-Secret-1"})
        p = subprocess.run(["unshare", "-m", "bash", script], capture_output=True, text=True,
                           timeout=ghtest.scaled(90))
        out = p.stdout
        logs = ""
        for name in sorted(os.listdir(os.path.join(tmp, "log"))):
            with open(os.path.join(tmp, "log", name), errors="replace") as f:
                logs += "--- %s\n%s" % (name, f.read()[-3000:])
        ctx = "%s\n%s\n%s" % (out, p.stderr, logs[-6000:])
        sections = {}
        for block in out.split("== ")[1:]:
            head, _, body = block.partition("\n")
            sections[head.strip()] = body
        self.assertIn("end", sections, ctx)
        self.assertIn("alice:*:%d:" % uid, sections["getent"], ctx)
        self.assertIn("rc=0", sections["getent"], ctx)
        self.assertIn("rc=2", sections["getent-missing"], ctx)
        self.assertIn("eng:", sections["getent-group"], ctx)
        self.assertIn("alice", sections["getent-group"], ctx)  # nested through git
        idl = sections["id"]
        self.assertIn("uid=%d(alice)" % uid, idl, ctx)
        self.assertIn("(git)", idl, ctx)
        self.assertIn("(eng)", idl, ctx)  # nested group
        self.assertNotIn("(staff)", idl, ctx)
        self.assertIn("successfully authenticated", sections["pam-good"], ctx)
        self.assertIn("rc=0", sections["pam-good"], ctx)
        self.assertNotIn("rc=0", sections["pam-bad"], ctx)
        self.assertIn("rc=0", sections["pam-good-again"], ctx)
        # a password change through pam_sss is a Password Modify over ldaps
        self.assertIn("rc=0", sections["chauthtok"], ctx)
        self.assertIn("successfully authenticated", sections["pam-new"], ctx)
        # the host's files are untouched
        self.assertNotIn(tmp, open("/proc/self/mountinfo").read())


if __name__ == "__main__":
    ghtest.main()
