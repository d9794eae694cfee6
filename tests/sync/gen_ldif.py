#!/usr/bin/env python3
"""gen_ldif.py: the LDIF fixture of the sync tests, and its expected mirror.

    python3 gen_ldif.py [--users N] [--groups N] [--big-group N] > fixture.ldif

The fixture (deterministic, no randomness):
  - N users uid=uNNNNN,ou=people (inetOrgPerson + posixAccount), uidNumber
    20000+i, password "pw-uNNNNN" stored as {SSHA};
  - one posixAccount whose uid holds LDAP filter metacharacters ("evil*)(uid=*")
    that Gatehouse must skip (not a valid login);
  - three contractors under ou=contractors that are inetOrgPerson only, so
    outside the user filter; some groups list them (skipped members);
  - G groups cn=gNNN,ou=groups (groupOfNames) of 20 users each; the last
    tenth also nest two earlier groups each (nested groups); one lists a DN
    outside the base;
  - with --big-group N, instead one group "big" with N member values.
expected(users, groups) returns the mirror the tests compare against.
"""
import argparse
import base64
import hashlib
import os
import sys

SUFFIX = "dc=example,dc=com"
HERE = os.path.dirname(os.path.abspath(__file__))
BASE_LDIF = os.path.join(HERE, "..", "..", "conf", "ldap", "base.ldif")
EVIL_UID = "evil*)(uid=*"


def ssha(password, salt):
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def login(i):
    return "u%05d" % i


def password(i):
    return "pw-" + login(i)


def user_dn(i):
    return "uid=%s,ou=people,%s" % (login(i), SUFFIX)


def group_name(j):
    return "g%03d" % j


def group_dn(j):
    return "cn=%s,ou=groups,%s" % (group_name(j), SUFFIX)


def user_entry(i, with_password=True):
    salt = (i % 65536).to_bytes(2, "big") + b"gh"
    lines = [
        "dn: " + user_dn(i),
        "objectClass: top",
        "objectClass: person",
        "objectClass: organizationalPerson",
        "objectClass: inetOrgPerson",
        "objectClass: posixAccount",
        "uid: " + login(i),
        "cn: User %d" % i,
        "sn: Number%d" % i,
        "displayName: User %d" % i,
        "mail: %s@example.com" % login(i),
        "uidNumber: %d" % (20000 + i),
        "gidNumber: 20000",
        "homeDirectory: /home/" + login(i),
    ]
    if with_password:
        lines.append("userPassword: " + ssha(password(i), salt))
    return "\n".join(lines) + "\n"


def group_members(j, users, groups):
    """Member DNs of group j (users, nested groups, out-of-scope ones)."""
    members = [user_dn(1 + (j * 20 + k) % users) for k in range(20)]
    if j >= groups - groups // 10:
        members.append(group_dn((j * 7) % (groups - groups // 10)))
        members.append(group_dn((j * 7 + 1) % (groups - groups // 10)))
    if j % 25 == 0:
        members.append("uid=c%d,ou=contractors,%s" % (j % 3, SUFFIX))
    if j == 1:
        members.append("uid=ghost,ou=people,dc=elsewhere,dc=org")
    return members


def expected(users, groups):
    """{"users": {login: (uid, mail)}, "groups": {name: (set users, set subgroups)},
    "skipped_members": n}"""
    u = {login(i): (20000 + i, "%s@example.com" % login(i)) for i in range(1, users + 1)}
    g = {}
    skipped = 0
    for j in range(groups):
        us, gs = set(), set()
        for m in group_members(j, users, groups):
            if m.startswith("uid=u"):
                us.add(m.split(",")[0][4:])
            elif m.startswith("cn=g"):
                gs.add(m.split(",")[0][3:])
            else:
                skipped += 1
        g[group_name(j)] = (us, gs)
    return {"users": u, "groups": g, "skipped_members": skipped}


def generate(out, users, groups, big_group=0):
    with open(BASE_LDIF) as f:
        out.write(f.read().rstrip("\n") + "\n\n")
    for i in range(1, users + 1):
        out.write(user_entry(i) + "\n")
    out.write("\n".join([
        "dn: cn=Evil,ou=people," + SUFFIX,
        "objectClass: top", "objectClass: person", "objectClass: organizationalPerson",
        "objectClass: inetOrgPerson", "objectClass: posixAccount",
        "uid: " + EVIL_UID, "cn: Evil", "sn: Evil",
        "uidNumber: 19999", "gidNumber: 20000", "homeDirectory: /home/evil",
        "userPassword: " + ssha("evil", b"ev"),
    ]) + "\n\n")
    for c in range(3):
        out.write("\n".join([
            "dn: uid=c%d,ou=contractors,%s" % (c, SUFFIX),
            "objectClass: top", "objectClass: person", "objectClass: organizationalPerson",
            "objectClass: inetOrgPerson", "uid: c%d" % c, "cn: Contractor %d" % c,
            "sn: C%d" % c,
        ]) + "\n\n")
    if big_group:
        out.write("dn: cn=big,ou=groups,%s\nobjectClass: top\nobjectClass: groupOfNames\n"
                  "cn: big\ndescription: everyone\n" % SUFFIX)
        for i in range(1, big_group + 1):
            out.write("member: %s\n" % user_dn(i))
        out.write("\n")
        return
    for j in range(groups):
        out.write("dn: %s\nobjectClass: top\nobjectClass: groupOfNames\ncn: %s\n"
                  "description: group %d\n" % (group_dn(j), group_name(j), j))
        for m in group_members(j, users, groups):
            out.write("member: %s\n" % m)
        out.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--big-group", type=int, default=0)
    a = ap.parse_args()
    generate(sys.stdout, a.users, a.groups, a.big_group)


if __name__ == "__main__":
    main()
