#!/usr/bin/env bash
# Runs every test: `make check` in a normal build, in an ASan+UBSan build and
# (`make check-tsan`, the same suite) in a ThreadSanitizer build, then prints
# one summary line ("N passed, N failed, N skipped"). GH_TSAN=0 skips the
# ThreadSanitizer pass. The test servers run with loop_threads = 1 in the
# normal and ThreadSanitizer passes and with loop_threads = 4 in the
# ASan+UBSan pass (GH_LOOP_THREADS; the *_loops4 files run 4 loops in
# every pass), so the whole suite passes with both.
set -uo pipefail
cd "$(dirname "$0")"
bash tests/deps.sh || exit 1
[ -x configure ] || autoreconf -fi >/dev/null || exit 1
jobs=$(nproc)
pass=0 fail=0 skip=0
run_build() {
    local name=$1 loops=$2; shift 2
    local target=check
    [ "$name" = tsan ] && target=check-tsan
    mkdir -p "build/$name"
    ( cd "build/$name" && { [ -f Makefile ] || ../../configure -q "$@"; } && make -j"$jobs" >/dev/null ) \
        || { echo "build $name failed"; fail=$((fail + 1)); return; }
    ( cd "build/$name" && GH_LOOP_THREADS=$loops make -j"$jobs" "$target" ) \
        > "build/$name-check.log" 2>&1
    grep -E '^(PASS|FAIL|ERROR|XPASS|SKIP|# )' "build/$name-check.log" | sed "s/^/[$name] /"
    for f in build/$name/tests/*/*.log; do
        case "$f" in *test-suite.log) continue;; esac
        grep -q '^not ok' "$f" 2>/dev/null && { echo "---- $f"; tail -n 60 "$f"; }
    done
    local p f e x s
    p=$(sed -n 's/^# PASS: *//p' "build/$name-check.log" | tail -1)
    f=$(sed -n 's/^# FAIL: *//p' "build/$name-check.log" | tail -1)
    e=$(sed -n 's/^# ERROR: *//p' "build/$name-check.log" | tail -1)
    x=$(sed -n 's/^# XPASS: *//p' "build/$name-check.log" | tail -1)
    s=$(sed -n 's/^# SKIP: *//p' "build/$name-check.log" | tail -1)
    if [ -z "$p" ]; then
        echo "[$name] make check produced no summary"; tail -n 40 "build/$name-check.log"
        fail=$((fail + 1)); return
    fi
    pass=$((pass + p)); fail=$((fail + ${f:-0} + ${e:-0} + ${x:-0})); skip=$((skip + ${s:-0}))
}
run_build normal 1
run_build sanitize 4 --enable-sanitizers
# ThreadSanitizer, the whole suite: 4m38s with its build on 2 shared cores
# (of 12m41s for GH_DEB_TEST=1 ./run-tests.sh from clean build directories;
# make check-tsan alone 3m06s-4m01s). GH_TSAN=0 skips it.
[ "${GH_TSAN:-1}" = 0 ] || run_build tsan 1 --enable-tsan

# The Debian packages: built, linted and installed in an overlay chroot
# (tests/debian/test_deb.py, 1-2 minutes, so CI only: .ci/run sets
# GH_DEB_TEST=1). Its TAP lines are counted into the same summary.
if [ "${GH_DEB_TEST:-0}" = 1 ]; then
    GH_SRCDIR=$PWD python3 tests/debian/test_deb.py > build/debian-check.log 2>&1
    sed -n 's/^\(ok\|not ok\) /[debian] &/p' build/debian-check.log
    dp=$(grep -E '^ok ' build/debian-check.log | grep -vc '# SKIP')
    ds=$(grep -E '^ok .*# SKIP' build/debian-check.log | wc -l)
    df=$(grep -c '^not ok' build/debian-check.log)
    grep -q '^not ok' build/debian-check.log && tail -n 80 build/debian-check.log
    if ! grep -q '^1\.\.' build/debian-check.log || [ $((dp + ds + df)) -eq 0 ]; then
        echo "[debian] no TAP plan"; tail -n 40 build/debian-check.log; df=$((df + 1))
    fi
    pass=$((pass + dp)); fail=$((fail + df)); skip=$((skip + ds))
fi
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
