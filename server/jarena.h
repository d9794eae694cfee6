/*
 * jarena.h: a per-thread bump arena for jansson, so that parsing a request
 * costs no malloc per value (issue 11, item 3).
 *
 * The one thing to know: jansson's allocator is process-wide, so
 * gh_jarena_install() replaces it once with a pair that serves jansson from
 * the arena begun on the calling thread (gh_jarena_begin .. gh_jarena_end)
 * and from malloc everywhere else. A free inside any arena is a no-op; a free
 * outside is the wiping free (the block is zeroed before free()). Arena
 * memory is wiped and rewound by gh_jarena_reset, and only once every value
 * allocated in it has been freed: a value that is still referenced (a
 * json_incref'd request id, a tree handed to another loop) keeps the arena
 * from rewinding, reset answers GH_EINUSE, and later allocations fall back
 * to malloc once the arena is full. So a kept value stays valid, but it pins
 * the unwiped bytes of every request parsed since: never keep an arena value
 * past the request, copy what must outlive it (json_deep_copy outside the
 * arena, or the C value).
 *
 * Threads: begin, end and reset run on one thread at a time (the loop that
 * owns the arena); values may be freed on any thread. No libuv here.
 *
 * How the server uses it: one arena per loop (gh_loop), made with the loop
 * and freed with it; decode() brackets json_loadb alone with begin/end (a
 * refused begin just parses on malloc), so handlers and replies allocate
 * on malloc as before; the request id that outlives the request is copied
 * (json_deep_copy after end); reset runs once the request's tree is
 * decref'd.
 */
#ifndef GH_JARENA_H
#define GH_JARENA_H

#include <stddef.h>
#include <stdint.h>

/* Default arena size: a check or whoami line takes well under 1 KiB of it. */
#define GH_JARENA_DEFAULT_SIZE (64u * 1024u)
/* At most this many arenas exist at once (one per loop thread, plus tests). */
#define GH_JARENA_MAX 256

typedef struct gh_jarena {
    unsigned char *base; /* mmap'd, page aligned, excluded from core dumps */
    size_t size;
    size_t used;            /* bump offset: [0, used) may hold request bytes */
    size_t big;             /* a request larger than this goes to malloc directly */
    int slot;               /* index in the registry of arenas (free lookup) */
    int active;             /* between gh_jarena_begin and gh_jarena_end */
    const void *own;        /* the thread that last began it (address of a TLS var) */
    uint64_t nalloc;        /* arena allocations since the last rewind */
    uint64_t nfree;         /* their frees on the owning thread */
    uint64_t nfree_foreign; /* their frees on other threads (atomic) */
    /* statistics, for tests and the bench */
    uint64_t st_fallback; /* allocations that went to malloc while active */
    uint64_t st_busy;     /* resets refused because values were still live */
} gh_jarena;

/* jansson's allocator for the whole process: call once before any JSON is
 * parsed or built (gh__server_open, in place of json_set_alloc_funcs(malloc,
 * wiping_free)); with no arena begun it is that same wiping free.
 * Idempotent. */
void gh_jarena_install(void);

/* A new arena of size bytes (0: GH_JARENA_DEFAULT_SIZE, rounded up to
 * pages). 0, GH_ENOMEM, or GH_EFULL when GH_JARENA_MAX arenas exist. */
int gh_jarena_init(gh_jarena *a, size_t size);

/* Wipes and unmaps; a must be ended (GH_ASSERT'd). If a value allocated in
 * it is still live, logs an error and leaks the arena instead (unmapping
 * would leave the value pointing into nothing). */
void gh_jarena_free(gh_jarena *a);

/* From now on jansson allocations on this thread come from a (those that do
 * not fit go to malloc). 0, or GH_EINVAL when this thread already has an
 * arena begun (no nesting) or a is active on another thread. */
int gh_jarena_begin(gh_jarena *a);

/* Stops serving this thread's jansson allocations from a. Values allocated
 * in it stay valid until the next successful reset. */
void gh_jarena_end(gh_jarena *a);

/* When every value allocated in a since the last rewind has been freed:
 * wipes [0, used) with sodium_memzero, rewinds, returns 0. Otherwise touches
 * nothing and returns GH_EINUSE (something kept an arena value: a bug in the
 * caller, which should log it). GH_EINVAL while a is active. */
int gh_jarena_reset(gh_jarena *a);

/* Allocations from a not yet freed (diagnostics; exact on a's own thread). */
uint64_t gh_jarena_live(const gh_jarena *a);

/* Whether p lies inside an arena that exists (what a free treats as no-op). */
int gh_jarena_owns(const void *p);

/* The installed pair, exposed for tests and the bench. */
void *gh__jarena_malloc(size_t n);
void gh__jarena_free(void *p);

#endif
