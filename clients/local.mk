# clients/: libgatehouse and the gatehouse CLI (owned by the clients work).
EXTRA_DIST += clients/gatehouse.pc.in
