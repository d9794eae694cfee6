/*
 * memtrim.h: loop 0's timer that keeps the data file pages gatehoused has
 * mapped under map_resident_max (server/memtrim.c).
 *
 * The one thing to know: start and stop run on loop 0; stop closes the
 * timer and may be called more than once.
 */
#ifndef GH_MEMTRIM_H
#define GH_MEMTRIM_H

#include "server/server.h"

/* Trims once (the floor: file pages resident with the map unmapped) and
 * starts the timer; nothing when map_resident_max is 0. Returns 0. */
int gh__memtrim_start(gh_server *srv);
void gh__memtrim_stop(gh_server *srv);

#endif
