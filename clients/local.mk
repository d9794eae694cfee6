# clients/: libgatehouse (the installed C client library) and the gatehouse CLI.
# libgatehouse links jansson only: it must not drag the server's dependencies
# into applications, so it does not link libghcore, and its public names
# (gh_client_*, gh_auth, gh_check*, gh_whoami, gh_logout, gh_ping, gh_call,
# gh_send, gh_recv, gh_flush) are kept apart from libghcore's.
lib_LTLIBRARIES += libgatehouse.la
libgatehouse_la_SOURCES = clients/libgatehouse.c clients/gatehouse.h
libgatehouse_la_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
libgatehouse_la_LIBADD = $(JANSSON_LIBS)
libgatehouse_la_LDFLAGS = $(AM_LDFLAGS) -version-info $(GH_LT_VERSION) -no-undefined \
	-Wl,--version-script=$(top_srcdir)/clients/libgatehouse.map
libgatehouse_la_DEPENDENCIES = $(top_srcdir)/clients/libgatehouse.map
include_HEADERS += clients/gatehouse.h
pkgconfig_DATA += clients/gatehouse.pc

# The CLI talks to the server only through libgatehouse.
bin_PROGRAMS += gatehouse
gatehouse_SOURCES = clients/cli.c clients/cli-int.h clients/cli_term.c clients/cli_user.c \
	clients/cli_authz.c clients/cli_admin.c clients/cli_io.c clients/cli_ldif.c \
	clients/cli_backup.c clients/cli_doctor.c clients/cli_os.c
gatehouse_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(SODIUM_CFLAGS) -DGH_SBINDIR='"$(sbindir)"'
gatehouse_LDADD = libgatehouse.la $(JANSSON_LIBS) $(SODIUM_LIBS)

dist_man_MANS += clients/gatehouse.1 clients/gatehoused.8
EXTRA_DIST += clients/gatehouse.pc.in

# OS login (issue 12): the NSS and PAM modules. They run inside other
# programs: built without sanitizers (GH_MOD_CFLAGS), hidden visibility, and
# a version script so that only the module entry points are exported. Their
# small socket client (os_client.c) is a PIC convenience library linked in,
# and so is jansson (libjansson.a, JANSSON_MOD_LIBS): linked dynamically, a
# host program exporting json_* symbols of its own would take the modules'
# calls over. --exclude-libs keeps the archive's symbols out of the dynamic
# table even without the version scripts. Debian builds libjansson.a as PIE
# code, and its one reference to a glibc data symbol (stdin, in json_loadf,
# which the modules never call) cannot go into a shared object: the modules
# link a copy with that reference renamed to a hidden NULL of os_client.c.
clients/libjansson-mod.a: $(JANSSON_MOD_LIBS)
	$(AM_V_GEN)$(MKDIR_P) clients && \
	$(OBJCOPY) --redefine-sym stdin=gh_os_jansson_stdin $(JANSSON_MOD_LIBS) $@
CLEANFILES += clients/libjansson-mod.a
noinst_LTLIBRARIES += libghos.la
libghos_la_SOURCES = clients/os_client.c clients/os_client.h
libghos_la_CFLAGS = $(GH_MOD_CFLAGS) -pthread $(JANSSON_CFLAGS)

nsslibdir = $(libdir)
nsslib_LTLIBRARIES = libnss_gatehouse.la
libnss_gatehouse_la_SOURCES = clients/nss_gatehouse.c
libnss_gatehouse_la_CFLAGS = $(GH_MOD_CFLAGS) -pthread $(JANSSON_CFLAGS)
libnss_gatehouse_la_LIBADD = libghos.la clients/libjansson-mod.a
libnss_gatehouse_la_LDFLAGS = -module -avoid-version -shrext .so.2 -no-undefined -pthread \
	-Wl,--exclude-libs,ALL \
	-Wl,--version-script=$(top_srcdir)/clients/nss_gatehouse.map
EXTRA_libnss_gatehouse_la_DEPENDENCIES = clients/nss_gatehouse.map clients/libjansson-mod.a

pamlib_LTLIBRARIES = pam_gatehouse.la
pam_gatehouse_la_SOURCES = clients/pam_gatehouse.c
pam_gatehouse_la_CFLAGS = $(GH_MOD_CFLAGS) $(JANSSON_CFLAGS)
pam_gatehouse_la_LIBADD = libghos.la clients/libjansson-mod.a $(PAM_LIBS)
pam_gatehouse_la_LDFLAGS = -module -avoid-version -no-undefined -Wl,--exclude-libs,ALL \
	-Wl,--version-script=$(top_srcdir)/clients/pam_gatehouse.map
EXTRA_pam_gatehouse_la_DEPENDENCIES = clients/pam_gatehouse.map clients/libjansson-mod.a
EXTRA_DIST += clients/nss_gatehouse.map clients/pam_gatehouse.map
dist_man_MANS += clients/pam_gatehouse.8 clients/nss_gatehouse.5

# libtool's .la files are of no use for modules loaded by glibc and PAM
install-data-hook: install-os-modules-hook
install-os-modules-hook:
	rm -f $(DESTDIR)$(nsslibdir)/libnss_gatehouse.la $(DESTDIR)$(pamlibdir)/pam_gatehouse.la
uninstall-hook: uninstall-os-modules-hook
uninstall-os-modules-hook:
	rm -f $(DESTDIR)$(nsslibdir)/libnss_gatehouse.so.2 $(DESTDIR)$(pamlibdir)/pam_gatehouse.so
.PHONY: install-os-modules-hook uninstall-os-modules-hook

# The NSS and PAM modules' default sockets follow configure's runstatedir
# (--with-nss-socket, --with-pam-socket: RUNSTATEDIR/gatehouse/...), for the
# modules and for gatehouse doctor, which checks that they name the server's
# sockets and looks for pam_gatehouse.so where make install puts it.
gh_os_sockets = -DGH_NSS_SOCKET_DEFAULT='"$(nss_socket)"' -DGH_PAM_SOCKET_DEFAULT='"$(pam_socket)"'
libnss_gatehouse_la_CFLAGS += $(gh_os_sockets)
pam_gatehouse_la_CFLAGS += $(gh_os_sockets)
gatehouse_CFLAGS += $(gh_os_sockets) -DGH_PAMLIBDIR='"$(pamlibdir)"'
