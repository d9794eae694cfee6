# conf/gatehoused.conf -> the installed /etc/gatehouse/gatehoused.conf: a
# header for the installed file, every "key = value" commented out, the
# installed directories in place of the source checkout's ./var.
1,3c\
; gatehoused configuration, read at start when it exists (SIGHUP reloads\
; logging and limits). Every setting is shown commented out at its default;\
; uncomment a line to change it. Numbers are decimal (010 is ten), sizes\
; accept K, M and G suffixes. Unknown keys are refused at start with\
; file:line. See gatehoused.conf(5).
s|^state_dir = .*|state_dir = @localstatedir@/lib/gatehouse|
s|^; UNIX socket; empty means <state_dir>/gatehoused.sock.|; UNIX socket; empty means @runstatedir@/gatehouse/gatehoused.sock for the\
; default state_dir, <state_dir>/gatehoused.sock for any other.|
s|^socket =.*|socket = @runstatedir@/gatehouse/gatehoused.sock|
s|^\([a-z][a-z0-9_]* *=\)|; \1|
