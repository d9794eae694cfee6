#!/usr/bin/env bash
# Installs what Gatehouse needs to build and test on Debian 12, when missing.
# Shared by quickstart.sh, run-tests.sh and .ci/run.
set -euo pipefail
# the sync tests provision a Samba AD DC of their own (tests/sync/samba_dc.py)
SYNC_PKGS="samba samba-dsdb-modules samba-vfs-modules samba-ad-provision"
PKGS="build-essential autoconf automake libtool pkg-config
      liblmdb-dev lmdb-utils libsodium-dev libuv1-dev libjansson-dev libcjson-dev libinih-dev libldap-dev
      libcmocka-dev slapd ldap-utils python3 util-linux procps openssl clang-format
      python3-pyasn1 python3-pyasn1-modules 389-ds-base python3-lib389
      libmicrohttpd-dev prometheus curl groff-base
      libssl-dev python3-ldap
      libpam0g-dev pamtester libnss-wrapper libpam-wrapper libuid-wrapper"
# the Debian packaging test (CI: GH_DEB_TEST=1) builds and lints packages
[ "${GH_DEB_TEST:-0}" = 1 ] && PKGS="$PKGS debhelper lintian dpkg-dev fakeroot"
missing=""
for p in $PKGS $SYNC_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # no daemon starts at install (samba, slapd, 389-ds, prometheus): the
    # tests run their own; policy-rc.d answers "not now" to the packages'
    # invoke-rc.d, as for SSSD below
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    rc=0
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null || rc=$?
    [ -n "$own_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || exit "$rc"
    # a host whose policy-rc.d lets daemons start: Samba's packaged daemons
    # are not the tests' DC
    for s in smbd nmbd samba-ad-dc; do $SUDO service $s stop >/dev/null 2>&1 || true; done

    # Debian's slapd package starts a system slapd; the tests run their own.
    $SUDO service slapd stop >/dev/null 2>&1 || true
    # prometheus is here for promtool (tests/integration/test_metrics.py)
    $SUDO service prometheus stop >/dev/null 2>&1 || true
fi

# SSSD for tests/integration/test_ldap_sssd.py. libnss-sss and libpam-sss add
# "sss" to /etc/nsswitch.conf and pam_sss to /etc/pam.d/common-* in their
# maintainer scripts, and sssd would start as a service: install them with
# services held back and the host's files put back as they were.
SSSD_PKGS="sssd-ldap libnss-sss libpam-sss pamtester"
missing=""
for p in $SSSD_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing:$missing"
    keep=$(mktemp -d)
    $SUDO cp -a /etc/nsswitch.conf /etc/pam.d "$keep"/
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null || true
    [ -n "$own_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d
    $SUDO cp -a "$keep"/nsswitch.conf /etc/nsswitch.conf
    for f in "$keep"/pam.d/*; do $SUDO cp -a "$f" /etc/pam.d/; done
    $SUDO rm -rf "$keep"
    $SUDO service sssd stop >/dev/null 2>&1 || true
fi
