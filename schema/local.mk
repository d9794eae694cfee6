# schema/: data model, validation, LMDB store, change log.
libghcore_la_SOURCES += \
	schema/error.c schema/error.h \
	schema/log.c schema/log.h \
	schema/schema.h schema/store.h
