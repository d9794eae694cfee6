# schema/: data model, validation, LMDB store, change log.
libghcore_la_SOURCES += \
	schema/error.c schema/error.h \
	schema/log.c schema/log.h \
	schema/confkey.c schema/confkey.h \
	schema/schema.h schema/store.h schema/store-int.h \
	schema/validate.c schema/role.c schema/record.c \
	schema/store.c schema/store_user.c schema/store_group.c \
	schema/store_role.c schema/store_misc.c schema/migrate.c \
	schema/store_hot.c \
	schema/store_backup.c \
	schema/posix.c schema/store_fold.c
