# conf/: what make install puts beside the programs so that the result runs
# as a service: the configuration (every key commented out at its installed
# default), the systemd unit, the sysusers.d and tmpfiles.d snippets, the
# configuration's man page. Files naming directories are generated here, by
# make, so that they carry configure's expanded paths (@sbindir@ ...).
gatehouseconfdir = $(sysconfdir)/gatehouse
gatehouseconf_DATA = conf/gen/gatehoused.conf
systemdsystemunit_DATA = conf/gen/gatehoused.service
sysusers_DATA = conf/gen/sysusers/gatehouse.conf
tmpfiles_DATA = conf/gen/tmpfiles/gatehouse.conf
dist_man_MANS += conf/gatehoused.conf.5 clients/libgatehouse.3
EXTRA_DIST += conf/gatehoused.service.in conf/gatehouse.sysusers.in conf/gatehouse.tmpfiles.in \
	conf/install-config.sed clients/libgatehouse.map
CLEANFILES += conf/gen/gatehoused.conf conf/gen/gatehoused.service conf/gen/sysusers/gatehouse.conf \
	conf/gen/tmpfiles/gatehouse.conf

gh_subst = sed -e 's|[@]sbindir[@]|$(sbindir)|g' -e 's|[@]sysconfdir[@]|$(sysconfdir)|g' \
	-e 's|[@]localstatedir[@]|$(localstatedir)|g' -e 's|[@]runstatedir[@]|$(runstatedir)|g'

# The unit's @var@/@novar@, @run@/@norun@ and @etc@/@noetc@ lines are kept
# or dropped by whether configure's directories are systemd's own (/var,
# /run, /etc): the unit names the directories the binary has compiled in.
gh_unit_pick = -e "$$(if test '$(2)' = '$(3)'; then echo 's|^@$(1)@||; /^@no$(1)@/d'; \
	else echo '/^@$(1)@/d; s|^@no$(1)@||'; fi)"
gh_unit_subst = $(gh_subst) $(call gh_unit_pick,var,$(localstatedir),/var) \
	$(call gh_unit_pick,run,$(runstatedir),/run) $(call gh_unit_pick,etc,$(sysconfdir),/etc)
conf/gen/gatehoused.service: $(top_srcdir)/conf/gatehoused.service.in Makefile
	$(AM_V_GEN)$(MKDIR_P) conf/gen && $(gh_unit_subst) $(top_srcdir)/conf/gatehoused.service.in > $@
conf/gen/sysusers/gatehouse.conf: $(top_srcdir)/conf/gatehouse.sysusers.in Makefile
	$(AM_V_GEN)$(MKDIR_P) conf/gen/sysusers && $(gh_subst) $(top_srcdir)/conf/gatehouse.sysusers.in > $@
conf/gen/tmpfiles/gatehouse.conf: $(top_srcdir)/conf/gatehouse.tmpfiles.in Makefile
	$(AM_V_GEN)$(MKDIR_P) conf/gen/tmpfiles && $(gh_subst) $(top_srcdir)/conf/gatehouse.tmpfiles.in > $@
# conf/gatehoused.conf documents every key for the source checkout; the
# installed copy has each key commented out and the installed paths.
conf/gen/gatehoused.conf: $(top_srcdir)/conf/gatehoused.conf $(top_srcdir)/conf/install-config.sed Makefile
	$(AM_V_GEN)$(MKDIR_P) conf/gen && sed -f $(top_srcdir)/conf/install-config.sed \
		$(top_srcdir)/conf/gatehoused.conf | $(gh_subst) > $@

# The installed gatehouse.h names the installed default socket.
install-data-hook: gh-install-header
gh-install-header:
	sed -i 's|^#define GH_CLIENT_DEFAULT_SOCKET .*|#define GH_CLIENT_DEFAULT_SOCKET "$(runstatedir)/gatehouse/gatehoused.sock"|' \
		'$(DESTDIR)$(includedir)/gatehouse.h'
.PHONY: gh-install-header
# issue 12: the pam-auth-update profiles (installed by the Debian package)
EXTRA_DIST += conf/pam-configs/gatehouse conf/pam-configs/gatehouse-hbac
