# tests/unit

# authz tests
if HAVE_CMOCKA
check_PROGRAMS += tests/unit/test_authz
TESTS += tests/unit/test_authz
tests_unit_test_authz_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_authz_LDADD = libghcore.la $(DEP_LIBS) $(CMOCKA_LIBS)
endif
