# authz/: the policy engine (owned by the authz work).
libghcore_la_SOURCES += authz/authz.h
