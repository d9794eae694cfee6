# tests/unit

# store tests
if HAVE_CMOCKA
check_PROGRAMS += tests/unit/test_store tests/unit/test_schema
TESTS += tests/unit/test_store tests/unit/test_schema
tests_unit_test_store_SOURCES = tests/unit/test_store.c
tests_unit_test_store_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_store_LDADD = libghcore.la $(DEP_LIBS) $(CMOCKA_LIBS)
tests_unit_test_schema_SOURCES = tests/unit/test_schema.c
tests_unit_test_schema_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_schema_LDADD = libghcore.la $(DEP_LIBS) $(CMOCKA_LIBS)
endif

# authz tests
if HAVE_CMOCKA
check_PROGRAMS += tests/unit/test_authz
TESTS += tests/unit/test_authz
tests_unit_test_authz_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_authz_LDADD = libghcore.la $(DEP_LIBS) $(CMOCKA_LIBS)
endif

# server unit tests
if HAVE_CMOCKA
check_PROGRAMS += tests/unit/test_server
TESTS += tests/unit/test_server
tests_unit_test_server_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_server_LDADD = libghcore.la $(DEP_LIBS) $(CMOCKA_LIBS)
check_PROGRAMS += tests/unit/test_freq
TESTS += tests/unit/test_freq
tests_unit_test_freq_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_freq_LDADD = libghcore.la $(DEP_LIBS) $(CMOCKA_LIBS)
endif

# the client's status enum against the server's error table
if HAVE_CMOCKA
check_PROGRAMS += tests/unit/test_errors
TESTS += tests/unit/test_errors
tests_unit_test_errors_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_errors_LDADD = libghcore.la libgatehouse.la $(DEP_LIBS) $(CMOCKA_LIBS)
endif

# sessions and bounds (issue 10): store revocation, token/admin resolution
if HAVE_CMOCKA
check_PROGRAMS += tests/unit/test_sessions
TESTS += tests/unit/test_sessions
tests_unit_test_sessions_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_sessions_LDADD = libghcore.la $(DEP_LIBS) $(CMOCKA_LIBS)
endif

# ldap protocol core and the TLS layer
if HAVE_CMOCKA
check_PROGRAMS += tests/unit/test_ldap tests/unit/test_tls
TESTS += tests/unit/test_ldap tests/unit/test_tls
tests_unit_test_ldap_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_ldap_LDADD = libghcore.la $(DEP_LIBS) $(CMOCKA_LIBS)
tests_unit_test_tls_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_tls_LDADD = libghcore.la $(DEP_LIBS) $(CMOCKA_LIBS)
endif

# the sync module without an upstream (issue 11): config keys and the key
# engine shared with [server], the map, the model, apply into a store
if HAVE_CMOCKA
check_PROGRAMS += tests/unit/test_sync
TESTS += tests/unit/test_sync
tests_unit_test_sync_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_sync_LDADD = libghcore.la $(DEP_LIBS) $(CMOCKA_LIBS)
endif

# the per-thread jansson arena (issue 11): parse, no-op free, fallback, wipe
if HAVE_CMOCKA
check_PROGRAMS += tests/unit/test_jarena
TESTS += tests/unit/test_jarena
tests_unit_test_jarena_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_jarena_LDADD = libghcore.la $(DEP_LIBS) $(CMOCKA_LIBS)
endif

# lockout tables and the rehash write-back (issue 10 audit: G1, G7)
if HAVE_CMOCKA
check_PROGRAMS += tests/unit/test_lockout
TESTS += tests/unit/test_lockout
tests_unit_test_lockout_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_test_lockout_LDADD = libghcore.la $(DEP_LIBS) $(CMOCKA_LIBS)
endif
