# tests/bench

# authz micro-benchmark: built by make, never run by make check.
# Run: tests/bench/authz_bench [decisions]  (see docs/PERFORMANCE.md)
noinst_PROGRAMS += tests/bench/authz_bench
tests_bench_authz_bench_SOURCES = tests/bench/authz_bench.c tests/bench/bench_data.c \
	tests/bench/bench_util.c
tests_bench_authz_bench_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS)
tests_bench_authz_bench_LDADD = libghcore.la $(DEP_LIBS)

# gatehouse-bench: the benchmark tool (issue 7). Built by `make`, run by
# `make bench` (tests/bench/run-bench.sh), never by `make check`. A plain
# client: it links no server code, only the client-side libraries.
noinst_PROGRAMS += tests/bench/gatehouse-bench
tests_bench_gatehouse_bench_SOURCES = tests/bench/gatehouse-bench.c tests/bench/bench_common.h \
	tests/bench/bench_util.c tests/bench/bench_data.c tests/bench/bench_gh.c \
	tests/bench/bench_ldap.c tests/bench/bench_base.c
tests_bench_gatehouse_bench_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(SODIUM_CFLAGS) $(LDAP_CFLAGS)
tests_bench_gatehouse_bench_LDADD = $(JANSSON_LIBS) $(SODIUM_LIBS) $(LDAP_LIBS) -lpthread -lm
EXTRA_DIST += tests/bench/run-bench.sh
# issue 11: loop_threads 1 vs 2 (docs/PERFORMANCE.md)
EXTRA_DIST += tests/bench/bench-loops.sh
# issue 11: request parsing, jansson today vs the per-thread arena
# (server/jarena.c). Built by make, never run by make check.
# Run: tests/bench/json_bench [iterations]; other parsers: see its header.
noinst_PROGRAMS += tests/bench/json_bench
tests_bench_json_bench_SOURCES = tests/bench/json_bench.c
tests_bench_json_bench_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS)
tests_bench_json_bench_LDADD = libghcore.la $(DEP_LIBS)
# issue 12: the OS login targets through glibc and Linux-PAM (by hand, as root)
EXTRA_DIST += tests/bench/bench_os_login.py
