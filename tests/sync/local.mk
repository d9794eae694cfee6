# tests/sync: gatehoused mirroring a private OpenLDAP slapd (Debian's slapd and
# ldap-utils; back-mdb + syncprov). slapd.py starts and stops the upstream,
# gen_ldif.py writes the fixture; the tests speak TAP through ghtest.py and
# skip themselves when slapd is not installed.
SYNC_TESTS = tests/sync/test_sync.py tests/sync/test_sync_auth.py \
	tests/sync/test_sync_tls.py tests/sync/test_sync_state.py tests/sync/test_sync_ad.py \
	tests/sync/test_ldap_mirror.py tests/sync/test_sync_ad_incr.py
TESTS += $(SYNC_TESTS)
EXTRA_DIST += tests/sync/samba_dc.py
EXTRA_DIST += $(SYNC_TESTS) tests/sync/slapd.py tests/sync/gen_ldif.py tests/sync/bench_sync.py \
	tests/sync/ldapproxy.py tests/sync/ad-test.schema tests/sync/ds389.py tests/sync/bench_ad.py

# sessions against a real upstream (issue 10): upstream admin-named group,
# upstream delete ends sessions
TESTS += tests/sync/test_sync_sessions.py
EXTRA_DIST += tests/sync/test_sync_sessions.py
# issue 11: pass-through auth with loop_threads = 4 (the wrapper sets it)
TESTS += tests/sync/test_sync_auth_loops4.py
EXTRA_DIST += tests/sync/test_sync_auth_loops4.py
# issue 12: mirrored users through PAM (password managed upstream) and NSS
TESTS += tests/sync/test_sync_oslogin.py
EXTRA_DIST += tests/sync/test_sync_oslogin.py
tests/sync/test_sync_oslogin.log: libnss_gatehouse.la pam_gatehouse.la
