# sync/: LDAP federation (upstream config, the workers, the mapping to
# records, pass-through binds). Its one public header is sync/sync.h; it
# includes nothing under server/ (the writer is injected by server/server.c).
# The sources go into libghcore with the server's.
libghcore_la_SOURCES += sync/sync.h sync/sync-int.h sync/sync.c sync/sync_worker.c \
	sync/sync_model.c sync/sync_apply.c sync/sync_auth.c sync/sync_ldap.c \
	sync/sync_config.c sync/sync_map.c
