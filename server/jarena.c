/*
 * jarena.c: jansson allocations served from a per-thread bump arena while a
 * request is parsed, so that json_loadb and json_delete stop costing a
 * malloc and a wiping free per value (issue 11, item 3).
 *
 * The one thing to know: the allocator pair installed in jansson is global,
 * so gh__jarena_free must recognise a pointer of any arena, from any thread,
 * without touching memory that might be gone. Arenas are therefore listed
 * in a static registry of [lo, hi) ranges read without a lock; a free that
 * falls in a range is counted and otherwise ignored, every other free is the
 * wiping free the server always had. An arena rewinds (and is wiped) only
 * when its count of live allocations is zero, so a value somebody kept can
 * never be overwritten under them (see jarena.h).
 *
 * Under AddressSanitizer the unused part of an arena is poisoned, every
 * block is followed by a poisoned red zone and a freed block is poisoned
 * again, so overflows and use after free are reported as with malloc.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "schema/error.h"
#include "schema/log.h"
#include "server/jarena.h"

#if defined(__SANITIZE_ADDRESS__)
#define JA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JA_ASAN 1
#endif
#endif

#ifdef JA_ASAN
#include <sanitizer/asan_interface.h>
#define JA_REDZONE 16u
#define ja_poison(p, n) __asan_poison_memory_region((p), (n))
#define ja_unpoison(p, n) __asan_unpoison_memory_region((p), (n))
#else
#define JA_REDZONE 0u
#define ja_poison(p, n) ((void)(p), (void)(n))
#define ja_unpoison(p, n) ((void)(p), (void)(n))
#endif

#define JA_ALIGN 16u

/* One registry entry. lo and hi change only under reg_mu (register: hi then
 * lo; unregister: lo then hi), and a reader accepts a range only when it
 * reads the same lo before and after hi, so it never sees a range made of
 * two different arenas. a is valid whenever a pointer lies in [lo, hi),
 * because freeing memory of a destroyed arena is the caller's bug. */
typedef struct slot {
    uintptr_t lo, hi;
    gh_jarena *a;
} slot;

static slot reg[GH_JARENA_MAX];
static unsigned nreg; /* slots in use so far (high-water mark), atomic */
/* Every arena that ever existed lies in [env_lo, env_hi): only widened, so
 * one comparison sends most heap pointers straight to the wiping free. */
static uintptr_t env_lo = UINTPTR_MAX, env_hi;
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;

static __thread gh_jarena *tl_cur; /* the arena begun on this thread */
static __thread int tl_slot = -1;  /* the slot of the last one: free's fast path */

static gh_jarena *slot_owns(int s, uintptr_t u)
{
    uintptr_t lo = __atomic_load_n(&reg[s].lo, __ATOMIC_ACQUIRE);
    if (lo == 0 || u < lo)
        return NULL;
    uintptr_t hi = __atomic_load_n(&reg[s].hi, __ATOMIC_ACQUIRE);
    if (u >= hi || __atomic_load_n(&reg[s].lo, __ATOMIC_ACQUIRE) != lo)
        return NULL;
    return __atomic_load_n(&reg[s].a, __ATOMIC_ACQUIRE);
}

static gh_jarena *find(const void *p)
{
    uintptr_t u = (uintptr_t)p;
    gh_jarena *a;

    if (u < __atomic_load_n(&env_lo, __ATOMIC_ACQUIRE) ||
        u >= __atomic_load_n(&env_hi, __ATOMIC_ACQUIRE))
        return NULL;
    if (tl_slot >= 0 && (a = slot_owns(tl_slot, u)) != NULL)
        return a;
    unsigned n = __atomic_load_n(&nreg, __ATOMIC_ACQUIRE);
    for (unsigned s = 0; s < n; s++)
        if ((int)s != tl_slot && (a = slot_owns((int)s, u)) != NULL)
            return a;
    return NULL;
}

int gh_jarena_owns(const void *p)
{
    return p != NULL && find(p) != NULL;
}

void *gh__jarena_malloc(size_t n)
{
    gh_jarena *a = tl_cur;

    if (a != NULL) {
        if (n <= a->big) {
            size_t need = ((n ? n : 1) + JA_ALIGN - 1) & ~(size_t)(JA_ALIGN - 1);
            if (need + JA_REDZONE <= a->size - a->used) {
                unsigned char *p = a->base + a->used;
                a->used += need + JA_REDZONE;
                a->nalloc++;
                ja_unpoison(p, n);
                return p;
            }
        }
        a->st_fallback++;
    }
    return malloc(n);
}

void gh__jarena_free(void *p)
{
    if (p == NULL)
        return;
    gh_jarena *a = find(p);
    if (a == NULL) {
        /* request strings (passwords) must not survive in freed heap */
        sodium_memzero(p, malloc_usable_size(p));
        free(p);
        return;
    }
#ifdef JA_ASAN
    /* the block ends at its red zone: poison it so a use after free shows */
    {
        unsigned char *end = a->base + a->size;
        void *first = __asan_region_is_poisoned(p, (size_t)(end - (unsigned char *)p));
        size_t len = first ? (size_t)((unsigned char *)first - (unsigned char *)p) : 0;
        ja_poison(p, len);
    }
#endif
    if (__atomic_load_n(&a->own, __ATOMIC_RELAXED) == (const void *)&tl_cur)
        a->nfree++;
    else
        __atomic_fetch_add(&a->nfree_foreign, 1, __ATOMIC_RELEASE);
}

void gh_jarena_install(void)
{
    json_set_alloc_funcs(gh__jarena_malloc, gh__jarena_free);
}

int gh_jarena_init(gh_jarena *a, size_t size)
{
    long page = sysconf(_SC_PAGESIZE);
    int s = -1;

    memset(a, 0, sizeof(*a));
    a->slot = -1;
    if (size == 0)
        size = GH_JARENA_DEFAULT_SIZE;
    if (page <= 0)
        page = 4096;
    size = (size + (size_t)page - 1) & ~((size_t)page - 1);
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return GH_ENOMEM;
#ifdef MADV_DONTDUMP
    (void)madvise(m, size, MADV_DONTDUMP); /* request bytes stay out of core files */
#endif
    a->base = m;
    a->size = size;
    a->big = size / 4;
    ja_poison(a->base, a->size);

    pthread_mutex_lock(&reg_mu);
    for (unsigned i = 0; i < GH_JARENA_MAX; i++) {
        if (__atomic_load_n(&reg[i].lo, __ATOMIC_RELAXED) == 0) {
            s = (int)i;
            break;
        }
    }
    if (s >= 0) {
        if ((uintptr_t)a->base < __atomic_load_n(&env_lo, __ATOMIC_RELAXED))
            __atomic_store_n(&env_lo, (uintptr_t)a->base, __ATOMIC_RELEASE);
        if ((uintptr_t)a->base + a->size > __atomic_load_n(&env_hi, __ATOMIC_RELAXED))
            __atomic_store_n(&env_hi, (uintptr_t)a->base + a->size, __ATOMIC_RELEASE);
        __atomic_store_n(&reg[s].a, a, __ATOMIC_RELEASE);
        __atomic_store_n(&reg[s].hi, (uintptr_t)a->base + a->size, __ATOMIC_RELEASE);
        __atomic_store_n(&reg[s].lo, (uintptr_t)a->base, __ATOMIC_RELEASE);
        if ((unsigned)s >= __atomic_load_n(&nreg, __ATOMIC_RELAXED))
            __atomic_store_n(&nreg, (unsigned)s + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&reg_mu);
    if (s < 0) {
        ja_unpoison(a->base, a->size);
        munmap(a->base, a->size);
        memset(a, 0, sizeof(*a));
        a->slot = -1;
        return GH_EFULL;
    }
    a->slot = s;
    return 0;
}

void gh_jarena_free(gh_jarena *a)
{
    if (a->base == NULL)
        return;
    GH_ASSERT(!a->active);
    if (gh_jarena_live(a) != 0) {
        /* unmapping would turn the kept value into a wild pointer */
        GH_LOGE("json arena freed with %llu values still live: leaking it",
                (unsigned long long)gh_jarena_live(a));
        return;
    }
    pthread_mutex_lock(&reg_mu);
    __atomic_store_n(&reg[a->slot].lo, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&reg[a->slot].hi, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&reg[a->slot].a, NULL, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&reg_mu);
    ja_unpoison(a->base, a->size);
    sodium_memzero(a->base, a->used);
    munmap(a->base, a->size);
    if (tl_slot == a->slot)
        tl_slot = -1;
    memset(a, 0, sizeof(*a));
    a->slot = -1;
}

int gh_jarena_begin(gh_jarena *a)
{
    if (tl_cur != NULL || a->base == NULL)
        return GH_EINVAL;
    if (__atomic_exchange_n(&a->active, 1, __ATOMIC_ACQUIRE) != 0)
        return GH_EINVAL; /* begun on another thread */
    __atomic_store_n(&a->own, (const void *)&tl_cur, __ATOMIC_RELAXED);
    tl_cur = a;
    tl_slot = a->slot;
    return 0;
}

void gh_jarena_end(gh_jarena *a)
{
    GH_ASSERT(tl_cur == a);
    tl_cur = NULL;
    __atomic_store_n(&a->active, 0, __ATOMIC_RELEASE);
}

uint64_t gh_jarena_live(const gh_jarena *a)
{
    return a->nalloc - a->nfree - __atomic_load_n(&a->nfree_foreign, __ATOMIC_ACQUIRE);
}

int gh_jarena_reset(gh_jarena *a)
{
    if (__atomic_load_n(&a->active, __ATOMIC_RELAXED))
        return GH_EINVAL;
    if (a->used == 0)
        return 0; /* the request took another path (nothing was allocated) */
    if (gh_jarena_live(a) != 0) {
        a->st_busy++;
        return GH_EINUSE;
    }
    ja_unpoison(a->base, a->used);
    sodium_memzero(a->base, a->used);
    ja_poison(a->base, a->used);
    a->used = 0;
    a->nalloc = 0;
    a->nfree = 0;
    __atomic_store_n(&a->nfree_foreign, 0, __ATOMIC_RELAXED);
    return 0;
}
