#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and starts gatehoused on its
# embedded default: state in ./var, socket ./var/gatehoused.sock, no config.
set -euo pipefail
cd "$(dirname "$0")"
bash tests/deps.sh
[ -x configure ] || autoreconf -fi >/dev/null
mkdir -p build/normal
cd build/normal
[ -f Makefile ] || ../../configure -q
make -j"$(nproc)" >/dev/null
cd ../..
echo "gatehoused: state in ./var, socket ./var/gatehoused.sock (Ctrl-C to stop)"
exec build/normal/gatehoused "$@"
