#!/bin/sh
# build-libfuzzer.sh: builds the fuzz targets with clang's libFuzzer, ASan and
# UBSan, then fuzzes each for GH_FUZZ_SECONDS (0: build only).
#
# `make fuzz` runs it with the exact libghcore source list; by hand, from a
# configured build directory (for gh-config.h):
#   GH_FUZZ_SECONDS=300 GH_FUZZ_TARGETS=request sh /path/to/tests/fuzz/build-libfuzzer.sh
# Environment: GH_SRCDIR (default: this script's ../..), GH_BUILDDIR (default
# .), GH_FUZZ_OUT (default $GH_BUILDDIR/fuzz-out), GH_FUZZ_TARGETS (request
# schema config reply sync), GH_FUZZ_SOURCES, GH_FUZZ_DEP_CFLAGS / _LIBS (default from
# pkg-config), CLANG (default clang), GH_FUZZ_ARGS (extra libFuzzer flags).
#
# Fuzzing never writes into the source tree: new inputs go to
# $GH_FUZZ_OUT/corpus/<target>, crashes to $GH_FUZZ_OUT/artifacts/. Copy the
# ones worth keeping into tests/fuzz/corpus/<target>/ by hand.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=${GH_SRCDIR:-$(cd "$here/../.." && pwd)}
build=${GH_BUILDDIR:-$(pwd)}
out=${GH_FUZZ_OUT:-$build/fuzz-out}
seconds=${GH_FUZZ_SECONDS:-60}
targets=${GH_FUZZ_TARGETS:-request schema config reply sync ldap nss freq}
cc=${CLANG:-clang}

if [ ! -f "$build/gh-config.h" ]; then
    echo "build-libfuzzer.sh: no gh-config.h in $build: run it from a configured build directory" >&2
    exit 2
fi
if [ -z "${GH_FUZZ_SOURCES:-}" ]; then
    GH_FUZZ_SOURCES=$(cd "$src" && ls schema/*.c authz/*.c ldap/*.c sync/*.c server/*.c | grep -v '^server/main\.c$')
fi
deps_cflags=${GH_FUZZ_DEP_CFLAGS:-$(pkg-config --cflags lmdb libsodium libuv jansson inih libssl libcjson libmicrohttpd)}
deps_libs=${GH_FUZZ_DEP_LIBS:-$(pkg-config --libs lmdb libsodium libuv jansson inih libssl libcrypto libcjson libmicrohttpd) -lldap -llber}

cflags="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
cflags="$cflags -D_GNU_SOURCE -I$src -I$build $deps_cflags -pthread"

mkdir -p "$out/obj" "$out/artifacts"
objs=""
for f in $GH_FUZZ_SOURCES; do
    o="$out/obj/$(echo "$f" | tr / _).o"
    objs="$objs $o"
    if [ ! -f "$o" ] || [ "$src/$f" -nt "$o" ] || [ -n "$(find "$src" -name '*.h' -newer "$o" | head -1)" ]; then
        echo "  CLANG    $f"
        # shellcheck disable=SC2086
        $cc $cflags -fsanitize=fuzzer-no-link -c "$src/$f" -o "$o"
    fi
done

for t in $targets; do
    echo "  LINK     fuzz_$t"
    # shellcheck disable=SC2086
    $cc $cflags -fsanitize=fuzzer "$src/tests/fuzz/fuzz_$t.c" $objs $deps_libs -o "$out/fuzz_$t"
done

[ "$seconds" -gt 0 ] || exit 0

ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS UBSAN_OPTIONS
status=0
for t in $targets; do
    mkdir -p "$out/corpus/$t"
    case $t in
    request) extra="-max_len=12000 -dict=$here/request.dict" ;;
    config) extra="-max_len=4096" ;;
    *) extra="-max_len=1024" ;;
    esac
    echo "  FUZZ     fuzz_$t for ${seconds}s (log: $out/fuzz_$t.log)"
    # shellcheck disable=SC2086
    if ! "$out/fuzz_$t" -max_total_time="$seconds" -timeout=30 -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/$t-" $extra ${GH_FUZZ_ARGS:-} \
        "$out/corpus/$t" "$src/tests/fuzz/corpus/$t" >"$out/fuzz_$t.log" 2>&1; then
        echo "  FAIL     fuzz_$t: see $out/fuzz_$t.log and $out/artifacts/" >&2
        status=1
    fi
    grep -E '^stat::number_of_executed_units' "$out/fuzz_$t.log" || true
done
exit $status
