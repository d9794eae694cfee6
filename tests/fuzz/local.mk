# tests/fuzz: fuzz targets for the untrusted inputs (protocol lines, names and
# patterns, the configuration file). `make check` links each target with
# driver.c and replays its corpus (tests/fuzz/corpus/<target>/) as a TAP
# test; `make fuzz` builds them with clang's libFuzzer and fuzzes each for
# FUZZ_SECONDS (see tests/fuzz/README.md).
FUZZ_TARGETS = tests/fuzz/fuzz_request tests/fuzz/fuzz_schema tests/fuzz/fuzz_config \
	tests/fuzz/fuzz_reply tests/fuzz/fuzz_sync tests/fuzz/fuzz_ldap tests/fuzz/fuzz_freq
check_PROGRAMS += $(FUZZ_TARGETS)
TESTS += $(FUZZ_TARGETS)

tests_fuzz_fuzz_request_SOURCES = tests/fuzz/fuzz_request.c tests/fuzz/driver.c
tests_fuzz_fuzz_request_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS)
tests_fuzz_fuzz_request_LDADD = libghcore.la $(DEP_LIBS)
tests_fuzz_fuzz_schema_SOURCES = tests/fuzz/fuzz_schema.c tests/fuzz/driver.c
tests_fuzz_fuzz_schema_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS)
tests_fuzz_fuzz_schema_LDADD = libghcore.la $(DEP_LIBS)
tests_fuzz_fuzz_config_SOURCES = tests/fuzz/fuzz_config.c tests/fuzz/driver.c
tests_fuzz_fuzz_config_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS)
tests_fuzz_fuzz_config_LDADD = libghcore.la $(DEP_LIBS)
tests_fuzz_fuzz_reply_SOURCES = tests/fuzz/fuzz_reply.c tests/fuzz/driver.c
tests_fuzz_fuzz_reply_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS)
tests_fuzz_fuzz_reply_LDADD = libghcore.la $(DEP_LIBS)
tests_fuzz_fuzz_sync_SOURCES = tests/fuzz/fuzz_sync.c tests/fuzz/driver.c
tests_fuzz_fuzz_sync_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS)
tests_fuzz_fuzz_sync_LDADD = libghcore.la $(DEP_LIBS)
tests_fuzz_fuzz_freq_SOURCES = tests/fuzz/fuzz_freq.c tests/fuzz/driver.c
tests_fuzz_fuzz_freq_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS)
tests_fuzz_fuzz_freq_LDADD = libghcore.la $(DEP_LIBS)
tests_fuzz_fuzz_ldap_SOURCES = tests/fuzz/fuzz_ldap.c tests/fuzz/driver.c
tests_fuzz_fuzz_ldap_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS)
tests_fuzz_fuzz_ldap_LDADD = libghcore.la $(DEP_LIBS)
# libnss_gatehouse's reply decoding (its sources are included by the target)
FUZZ_TARGETS += tests/fuzz/fuzz_nss
tests_fuzz_fuzz_nss_SOURCES = tests/fuzz/fuzz_nss.c tests/fuzz/driver.c
tests_fuzz_fuzz_nss_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_fuzz_fuzz_nss_LDADD = $(JANSSON_LIBS)

EXTRA_DIST += tests/fuzz/README.md tests/fuzz/build-libfuzzer.sh tests/fuzz/corpus

# The libFuzzer build compiles libghcore's own sources again with clang and
# the fuzzer's instrumentation (it cannot reuse gcc's objects).
FUZZ_SECONDS = 60
FUZZ_DIR = $(abs_top_builddir)/fuzz-out
.PHONY: fuzz
fuzz:
	GH_SRCDIR='$(abs_top_srcdir)' GH_BUILDDIR='$(abs_top_builddir)' \
	GH_FUZZ_OUT='$(FUZZ_DIR)' GH_FUZZ_SECONDS='$(FUZZ_SECONDS)' \
	GH_FUZZ_SOURCES='$(filter %.c,$(libghcore_la_SOURCES))' \
	GH_FUZZ_DEP_CFLAGS='$(DEP_CFLAGS)' GH_FUZZ_DEP_LIBS='$(DEP_LIBS)' \
	$(SHELL) $(top_srcdir)/tests/fuzz/build-libfuzzer.sh
