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

# authz tests
TESTS += tests/integration/test_authz.py
EXTRA_DIST += tests/integration/test_authz.py
