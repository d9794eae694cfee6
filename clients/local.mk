# clients/: libgatehouse (the installed C client library) and the gatehouse CLI.
# libgatehouse links jansson only: it must not drag the server's dependencies
# into applications, so it does not link libghcore, and its public names
# (gh_client_*, gh_auth, gh_check*, gh_whoami, gh_logout, gh_ping, gh_call,
# gh_send, gh_recv, gh_flush) are kept apart from libghcore's.
lib_LTLIBRARIES += libgatehouse.la
libgatehouse_la_SOURCES = clients/libgatehouse.c clients/gatehouse.h
libgatehouse_la_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
libgatehouse_la_LIBADD = $(JANSSON_LIBS)
libgatehouse_la_LDFLAGS = $(AM_LDFLAGS) -version-info $(GH_LT_VERSION) \
	-export-symbols-regex '^gh_[a-z]' -no-undefined
include_HEADERS += clients/gatehouse.h
pkgconfig_DATA += clients/gatehouse.pc

# The CLI talks to the server only through libgatehouse.
bin_PROGRAMS += gatehouse
gatehouse_SOURCES = clients/cli.c clients/cli-int.h clients/cli_term.c clients/cli_user.c \
	clients/cli_authz.c clients/cli_admin.c clients/cli_io.c clients/cli_ldif.c clients/cli_os.c
gatehouse_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
gatehouse_LDADD = libgatehouse.la $(JANSSON_LIBS)

dist_man_MANS += clients/gatehouse.1 clients/gatehoused.8
EXTRA_DIST += clients/gatehouse.pc.in
