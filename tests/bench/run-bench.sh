#!/bin/sh
# run-bench.sh: the standard benchmark suite behind `make bench`.
#
# Runs from the build directory (make's working directory): starts its own
# gatehoused and slapd on temporary directories (gatehouse-bench kills both
# by pid when it ends, also on failure), runs every workload at the standard
# size (10,000 users), then a second, shorter pass at 100,000 users for the
# memory and start-up figures. Writes bench-results.md in the build
# directory and prints it. About 4 minutes on 2 cores.
#
# Environment: GH_BENCH_DURATION (seconds per run, default 5),
# GH_BENCH_ARGS (extra options for the first pass), GH_BENCH_OUT (report
# path, default ./bench-results.md), GH_BENCH_BIG_USERS (users of the second
# pass, default 100000; 0 skips it).
set -eu

builddir=$(pwd)
bench="$builddir/tests/bench/gatehouse-bench"
server="$builddir/gatehoused"
out=${GH_BENCH_OUT:-$builddir/bench-results.md}
duration=${GH_BENCH_DURATION:-5}
big=${GH_BENCH_BIG_USERS:-100000}

for f in "$bench" "$server"; do
    if [ ! -x "$f" ]; then
        echo "run-bench.sh: $f is missing: run make first" >&2
        exit 1
    fi
done

slapd_opt=
if [ -x /usr/sbin/slapd ] && [ -x /usr/sbin/slapadd ] && [ -f /usr/lib/ldap/back_mdb.so ] &&
    [ -f /usr/lib/ldap/argon2.so ]; then
    slapd_opt="--compare-slapd --ldap"  # and the LDAP front-end against slapd
else
    echo "run-bench.sh: slapd, slapadd or its back_mdb/argon2 modules are missing" \
        "(apt-get install slapd): the LDAP comparison is skipped" >&2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gh-run-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

start=$(date +%s)
echo "run-bench.sh: standard suite (10,000 users, $duration s per run)" >&2
# shellcheck disable=SC2086 # GH_BENCH_ARGS is a list of options
"$bench" --server-bin "$server" $slapd_opt --auth-storm --duration "$duration" \
    --markdown "$tmp/standard.md" ${GH_BENCH_ARGS:-} >/dev/null

{
    echo "# Gatehouse benchmark results"
    echo
    echo "Written by \`make bench\` (tests/bench/run-bench.sh); docs/PERFORMANCE.md explains"
    echo "the workloads, the targets and what limits each figure."
    echo
    cat "$tmp/standard.md"
} >"$out"

if [ "$big" -gt 0 ]; then
    echo "run-bench.sh: memory and start-up pass ($big users)" >&2
    "$bench" --server-bin "$server" --users "$big" --workload check --no-baselines \
        --duration 3 --markdown "$tmp/big.md" >/dev/null
    {
        echo
        echo "## Memory and start-up pass: $big users"
        echo
        # the second report's own title would repeat the first: drop it
        sed '1,2d' "$tmp/big.md"
    } >>"$out"
fi

end=$(date +%s)
echo >>"$out"
echo "Suite wall time: $((end - start)) s." >>"$out"
cat "$out"
echo "run-bench.sh: report written to $out" >&2
