# tests/bench

# authz micro-benchmark: built by make, never run by make check.
# Run: tests/bench/authz_bench [decisions]  (see docs/PERFORMANCE.md)
noinst_PROGRAMS += tests/bench/authz_bench
tests_bench_authz_bench_SOURCES = tests/bench/authz_bench.c
tests_bench_authz_bench_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS)
tests_bench_authz_bench_LDADD = libghcore.la $(DEP_LIBS)
