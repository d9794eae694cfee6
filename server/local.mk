# server/: gatehoused.
sbin_PROGRAMS += gatehoused
gatehoused_SOURCES = server/main.c
gatehoused_CFLAGS = $(AM_CFLAGS) $(DEP_CFLAGS)
gatehoused_LDADD = libghcore.la $(DEP_LIBS)
libghcore_la_SOURCES += server/config.h server/writer.h server/ops.h server/sync.h
