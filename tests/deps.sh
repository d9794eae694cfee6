#!/usr/bin/env bash
# Installs what Gatehouse needs to build and test on Debian 12, when missing.
# Shared by quickstart.sh, run-tests.sh and .ci/run.
set -euo pipefail
# the sync tests provision a Samba AD DC of their own (tests/sync/samba_dc.py)
SYNC_PKGS="samba samba-dsdb-modules samba-vfs-modules samba-ad-provision"
PKGS="build-essential autoconf automake libtool pkg-config
      liblmdb-dev lmdb-utils libsodium-dev libuv1-dev libjansson-dev libinih-dev libldap-dev
      libcmocka-dev slapd ldap-utils python3 util-linux procps openssl clang-format
      python3-pyasn1 python3-pyasn1-modules 389-ds-base python3-lib389"
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
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # Samba's packaged daemons are not the tests' DC
    for s in smbd nmbd samba-ad-dc; do $SUDO service $s stop >/dev/null 2>&1 || true; done

    # Debian's slapd package starts a system slapd; the tests run their own.
    $SUDO service slapd stop >/dev/null 2>&1 || true
fi
