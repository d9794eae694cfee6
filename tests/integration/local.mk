# tests/integration: the real gatehoused driven over its socket by Python 3
# (stdlib only) through ghtest.py, which prints TAP for the TAP driver.
INTEGRATION_TESTS = \
	tests/integration/test_protocol.py \
	tests/integration/test_auth.py \
	tests/integration/test_badinput.py \
	tests/integration/test_durability.py \
	tests/integration/test_peercred.py \
	tests/integration/test_limits.py
TESTS += $(INTEGRATION_TESTS)
EXTRA_DIST += tests/integration/ghtest.py $(INTEGRATION_TESTS)
$(INTEGRATION_TESTS:.py=.log): gatehoused

# authz tests
TESTS += tests/integration/test_authz.py
EXTRA_DIST += tests/integration/test_authz.py

# clients tests: the gatehouse CLI and libgatehouse (test_lib.py compiles
# lib_example.c against the build's libgatehouse; test_cli.py checks LDIF
# with slapadd and rfc2307bis-test.schema).
CLIENT_TESTS = \
	tests/integration/test_cli.py \
	tests/integration/test_lib.py
TESTS += $(CLIENT_TESTS)
EXTRA_DIST += $(CLIENT_TESTS) tests/integration/lib_example.c \
	tests/integration/rfc2307bis-test.schema
$(CLIENT_TESTS:.py=.log): gatehouse gatehoused libgatehouse.la

# issue 10's defences in the request core (lockout, peer classes, bounds, secrets)
TESTS += tests/integration/test_security.py
EXTRA_DIST += tests/integration/test_security.py

# TLS on the JSON TCP listener (tcp_tls; a test CA made with openssl)
TESTS += tests/integration/test_tcp_tls.py
EXTRA_DIST += tests/integration/test_tcp_tls.py
tests/integration/test_tcp_tls.log: gatehoused

# server process tests (configuration, TCP, signals, bootstrap)
TESTS += tests/integration/test_server.py
EXTRA_DIST += tests/integration/test_server.py

# make install into a DESTDIR, installed paths, exports, unit, man pages
TESTS += tests/integration/test_install.py
EXTRA_DIST += tests/integration/test_install.py
tests/integration/test_install.log: gatehouse gatehoused libgatehouse.la

# sessions, write re-runs and bounds (issue 10)
TESTS += tests/integration/test_sessions.py
EXTRA_DIST += tests/integration/test_sessions.py
tests/integration/test_sessions.log: gatehoused gatehouse

# issue 11: loop threads; and a second pass of the request-path tests with
# loop_threads = 4 (each wrapper sets GH_LOOP_THREADS and runs the original)
LOOPS4_TESTS = \
	tests/integration/test_protocol_loops4.py \
	tests/integration/test_auth_loops4.py \
	tests/integration/test_security_loops4.py \
	tests/integration/test_sessions_loops4.py \
	tests/integration/test_limits_loops4.py
TESTS += tests/integration/test_loops.py $(LOOPS4_TESTS)
EXTRA_DIST += tests/integration/test_loops.py $(LOOPS4_TESTS)
tests/integration/test_loops.log $(LOOPS4_TESTS:.py=.log): gatehoused
tests/integration/test_sessions_loops4.log: gatehouse
# issue 11: the mapped data file kept under map_resident_max
TESTS += tests/integration/test_memtrim.py
EXTRA_DIST += tests/integration/test_memtrim.py
tests/integration/test_memtrim.log: gatehoused
# backup under concurrent writes, restore
TESTS += tests/integration/test_backup.py
EXTRA_DIST += tests/integration/test_backup.py
tests/integration/test_backup.log: gatehouse gatehoused

# Prometheus metrics (curl, promtool from Debian's prometheus package)
TESTS += tests/integration/test_metrics.py
EXTRA_DIST += tests/integration/test_metrics.py
tests/integration/test_metrics.log: gatehoused

# gatehouse doctor
TESTS += tests/integration/test_doctor.py
EXTRA_DIST += tests/integration/test_doctor.py
tests/integration/test_doctor.log: gatehouse gatehoused

# LDAP front-end with real clients (ldap-utils, python3-ldap)
LDAP_TESTS = tests/integration/test_ldap.py tests/integration/test_ldap_python.py \
	tests/integration/test_ldap_sssd.py tests/integration/test_ldap_limits.py
TESTS += $(LDAP_TESTS)
EXTRA_DIST += $(LDAP_TESTS)
$(LDAP_TESTS:.py=.log): gatehoused

# OS login (issue 12): libnss_gatehouse through glibc (getent, id) and
# pam_gatehouse through Linux-PAM (pamtester), in a private mount namespace
# as root and through cwrap's nss_wrapper / pam_wrapper.
TESTS += tests/integration/test_os_login.py
EXTRA_DIST += tests/integration/test_os_login.py tests/integration/nss_stress.c
tests/integration/test_os_login.log: gatehoused gatehouse libnss_gatehouse.la pam_gatehouse.la

# threads meeting on shared state (LDAP binds on loop 0, JSON auths on every
# loop): counters add up, and make check-tsan sees no race
TESTS += tests/integration/test_threads.py
EXTRA_DIST += tests/integration/test_threads.py
tests/integration/test_threads.log: gatehoused
