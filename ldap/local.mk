# ldap/: the LDAPv3 front-end's protocol core (no libuv; see ldap/ldap.h).
libghcore_la_SOURCES += ldap/ldap.h ldap/ldap-int.h \
	ldap/decode.c ldap/encode.c ldap/dit.c ldap/search.c
