# tests/sync: gatehoused mirroring a private OpenLDAP slapd (Debian's slapd and
# ldap-utils; back-mdb + syncprov). slapd.py starts and stops the upstream,
# gen_ldif.py writes the fixture; the tests speak TAP through ghtest.py and
# skip themselves when slapd is not installed.
SYNC_TESTS = tests/sync/test_sync.py
TESTS += $(SYNC_TESTS)
EXTRA_DIST += $(SYNC_TESTS) tests/sync/slapd.py tests/sync/gen_ldif.py tests/sync/bench_sync.py

# sessions against a real upstream (issue 10): upstream admin-named group,
# upstream delete ends sessions
TESTS += tests/sync/test_sync_sessions.py
EXTRA_DIST += tests/sync/test_sync_sessions.py
