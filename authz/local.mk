# authz/: the policy engine (owned by the authz work).
libghcore_la_SOURCES += authz/authz.h authz/authz-int.h \
	authz/authz.c authz/cache.c authz/compile.c authz/match.c authz/report.c authz/names.c
