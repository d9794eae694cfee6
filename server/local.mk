# server/: gatehoused. Everything but main() goes into libghcore so the
# tests and tools link the same code the server runs.
sbin_PROGRAMS += gatehoused
gatehoused_SOURCES = server/main.c
gatehoused_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS)
gatehoused_LDADD = libghcore.la $(DEP_LIBS)
libghcore_la_SOURCES += server/config.h server/writer.h server/ops.h \
	server/server.h server/server.c server/config.c server/writer.c server/conn.c server/dispatch.c \
	server/ops_util.c server/auth.c server/ops_core.c server/ops_user.c \
	server/ops_authz.c server/ops_io.c server/reply.h server/reply.c \
	server/ops_nss.c server/ops_passwd.c \
	server/ops_backup.c \
	server/metrics.h server/metrics.c server/freq.h server/freq.c
# LDAP listeners and TLS
libghcore_la_SOURCES += server/ldap_conn.c server/tls.c server/tls.h
# the sync.* ops (the module itself is sync/local.mk's) and sessions
libghcore_la_SOURCES += server/ops_sync.c server/ops_session.c
# issue 11: loop threads (loop_threads) and the posts between them
libghcore_la_SOURCES += server/loop.c
# issue 11: jansson's per-thread request arena (no libuv)
libghcore_la_SOURCES += server/jarena.c server/jarena.h
# issue 11: the mapped data file's pages kept under map_resident_max
libghcore_la_SOURCES += server/memtrim.c server/memtrim.h
