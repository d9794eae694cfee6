#!/bin/sh
# bench-loops.sh: check throughput with loop_threads = 1 and = 2, in one run.
#
# Runs from the build directory. Starts gatehoused on one temporary state
# directory, loads the standard data set once (gatehouse-bench), then
# restarts the server alternately with loop_threads = 1 and = 2 and measures
# `check` with 4 connections x 64 requests in flight against each, ROUNDS
# times, so both settings see the same data and the same (busy or quiet)
# machine. Prints one line per run and the ratio of the medians. The server
# is stopped by pid, also on failure. Never run by make check.
#
# Environment: GH_BENCH_DURATION (seconds per run, default 5), ROUNDS
# (default 3), GH_BENCH_CONNS (4), GH_BENCH_DEPTH (64).
set -eu

builddir=$(pwd)
bench="$builddir/tests/bench/gatehouse-bench"
server="$builddir/gatehoused"
duration=${GH_BENCH_DURATION:-5}
rounds=${ROUNDS:-3}
conns=${GH_BENCH_CONNS:-4}
depth=${GH_BENCH_DEPTH:-64}

for f in "$bench" "$server"; do
    if [ ! -x "$f" ]; then
        echo "bench-loops.sh: $f is missing: run make first" >&2
        exit 1
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gh-bench-loops.XXXXXX")
chmod 700 "$tmp"
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

start_server() {
    cat >"$tmp/gatehoused.conf" <<EOF
[server]
state_dir = $tmp/state
socket = $tmp/gh.sock
log_level = warn
idle_timeout = 0
max_request = 4M
max_output = 16M
argon2_opslimit = 1
argon2_memlimit = 65536
lockout_threshold = 1000000
peer_failure_threshold = 1000000
map_size = 128M
loop_threads = $1
EOF
    "$server" --config "$tmp/gatehoused.conf" >>"$tmp/gatehoused.log" 2>&1 &
    pid=$!
    i=0
    while [ ! -S "$tmp/gh.sock" ] && [ $i -lt 200 ]; do
        sleep 0.05
        i=$((i + 1))
    done
}

stop_server() {
    kill -TERM "$pid"
    wait "$pid" || { echo "bench-loops.sh: gatehoused exited non-zero" >&2; exit 1; }
    pid=
}

# one measured run: prints the pipelined check's ops/s
measure() {
    "$bench" --socket "$tmp/gh.sock" --server-pid "$pid" --workload check --conns "$conns" \
        --depth "$depth" --no-baselines --duration "$duration" $1 \
        --markdown "$tmp/run.md" >/dev/null 2>>"$tmp/bench.log"
    awk -F'|' -v d="$depth" '$3 ~ /check/ && $5 + 0 == d { gsub(/ /, "", $6); print $6 }' \
        "$tmp/run.md"
}

start_server 1
measure "" >/dev/null # loads the data set (and warms the page cache)
stop_server

: >"$tmp/r1"
: >"$tmp/r2"
r=1
while [ $r -le "$rounds" ]; do
    for n in 1 2; do
        start_server $n
        v=$(measure --skip-load)
        stop_server
        echo "round $r: loop_threads = $n: check ${conns}x${depth}: $v ops/s"
        echo "$v" >>"$tmp/r$n"
    done
    r=$((r + 1))
done
m1=$(sort -n "$tmp/r1" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
m2=$(sort -n "$tmp/r2" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
echo "median: loop_threads = 1: $m1 ops/s, loop_threads = 2: $m2 ops/s, ratio $(echo "$m2 $m1" | awk '{ printf "%.2f", $1 / $2 }')"
echo "machine: $(nproc) CPUs, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
