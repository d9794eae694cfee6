/*
 * memtrim.c: keeps the data file's pages that gatehoused has mapped under
 * map_resident_max (issue 11: RSS at 100,000 users).
 *
 * LMDB reads through a read-only shared map of data.mdb, and the kernel maps
 * a whole neighbourhood of page-cache pages around every read fault (64 KiB
 * or a large folio), so after a bulk import or a first pass over every user
 * most of the file is mapped and counted in VmRSS, although checks then read
 * a few MB of it. Once a second loop 0, and the writer after each commit,
 * read the process's resident file pages (/proc/self/statm); above
 * map_resident_max more than right after the previous trim (libraries and
 * what could not be unmapped), the whole map is unmapped (gh_store_trim_map).
 * The pages stay in the page cache: reads fault them back (~2 us a fault,
 * each mapping ~16 pages: ~0.15 us per 4 KiB page), and only those are
 * mapped again. A trim takes ~1.6 ms with 180 MB mapped.
 *
 * After a trim the next look comes sooner, so that bulk work (an import, a
 * first pass over every user) overshoots the bound by little: in 100 ms, or
 * in the time that refaulting what was unmapped at 512 MiB/s would take
 * (~2% of a CPU), whichever is longer. The second term caps the cost when
 * the pages that reads keep using exceed the bound (size map_resident_max
 * above them, or set it to 0).
 *
 * The one thing to know: this changes what VmRSS counts, not the machine's
 * memory use; the pages it unmaps are the kernel's page cache, reclaimable
 * and shared. It bounds the figure that monitoring, OOM scoring and the RSS
 * target read, at the cost of a few refaults after each trim.
 */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "schema/log.h"
#include "server/memtrim.h"
#include "server/writer.h"

/* Resident file-backed pages (statm's "shared": RssFile + RssShmem), or 0. */
static unsigned long file_pages(void)
{
    unsigned long size = 0, resident = 0, shared = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu %lu", &size, &resident, &shared) != 3)
        shared = 0;
    fclose(f);
    return shared;
}

/* The floor is shared by loop 0 and the writer thread. */
static unsigned long base_get(gh_server *srv)
{
    return __atomic_load_n(&srv->memtrim_base, __ATOMIC_RELAXED);
}

static void base_set(gh_server *srv, unsigned long v)
{
    __atomic_store_n(&srv->memtrim_base, v, __ATOMIC_RELAXED);
}

/* Trims when the file pages exceed the floor by more than the bound; returns
 * the bytes unmapped (0: no trim). Any thread holding no read snapshot. */
static uint64_t check(gh_server *srv)
{
    unsigned long now = file_pages(), base = base_get(srv);
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);

    if (now < base) { /* library pages reclaimed: a lower floor */
        base_set(srv, now);
        base = now;
    }
    if ((uint64_t)(now - base) * page <= srv->cfg->map_resident_max)
        return 0;
    if (gh_store_trim_map(srv->store) != 0)
        return 0;
    base = file_pages();
    base_set(srv, base);
    GH_LOGD("memtrim: %lu KiB of file pages resident, %lu KiB after the trim",
            (unsigned long)(now * page / 1024), (unsigned long)(base * page / 1024));
    return now > base ? (uint64_t)(now - base) * page : 0;
}

enum { IDLE_MS = 1000, BUSY_MS = 100, REFAULT_MIB_PER_S = 512 };

static void on_tick(uv_timer_t *t)
{
    uint64_t unmapped = check(t->data);
    uint64_t ms = unmapped * 1000 / ((uint64_t)REFAULT_MIB_PER_S << 20);

    if (unmapped == 0)
        ms = IDLE_MS;
    else if (ms < BUSY_MS)
        ms = BUSY_MS;
    uv_timer_start(t, on_tick, ms, 0);
}

/* The writer's own reads map most of the file during an import: it looks
 * after each commit, before the commit's ops are acknowledged. */
static void after_commit(void *arg)
{
    (void)check(arg);
}

int gh__memtrim_start(gh_server *srv)
{
    if (srv->cfg->map_resident_max == 0 || srv->have_memtrim)
        return 0;
    uv_timer_init(srv->loop, &srv->memtrim);
    srv->memtrim.data = srv;
    srv->have_memtrim = 1;
    /* the floor: what is resident with the map unmapped */
    if (gh_store_trim_map(srv->store) == 0)
        base_set(srv, file_pages());
    uv_timer_start(&srv->memtrim, on_tick, IDLE_MS, 0);
    if (srv->writer != NULL)
        gh_writer_set_commit_hook(srv->writer, after_commit, srv);
    return 0;
}

void gh__memtrim_stop(gh_server *srv)
{
    if (!srv->have_memtrim)
        return;
    uv_close((uv_handle_t *)&srv->memtrim, NULL);
    srv->have_memtrim = 0;
}
