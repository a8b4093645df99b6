/* thpalign: an LD_PRELOAD experiment for bench/ (bench/thpalign.py builds it).

   Why: under the service's malloc settings (MALLOC_MMAP_THRESHOLD_=65536,
   GLIBC_TUNABLES=glibc.malloc.hugetlb=1) every onnxruntime activation of
   2 MiB or more is a fresh mmap that glibc advises MADV_HUGEPAGE, but glibc
   sizes the mapping as request + header rounded to 4 KiB, and Linux puts
   only mappings whose length is a multiple of 2 MiB on a 2 MiB boundary.
   So each block's first and last partial 2 MiB come in 4 KiB pages: of the
   ~520 MB one 1024-px run maps, ~150 MB fault 4 KiB at a time (~38,000
   minor faults per run).

   What: blocks of THPALIGN_MIN bytes (default 2 MiB) or more get their own
   mapping of a 2 MiB multiple, which Linux >= 6.7 places on a 2 MiB
   boundary; the whole 2 MiB pages the block covers are advised
   MADV_HUGEPAGE, the tail past the last whole one stays in 4 KiB pages (so
   no resident page holds more than the block needs). free() unmaps at once,
   as glibc does for its mmap'd blocks: nothing is kept between runs, so the
   peak is the same. Everything smaller goes to glibc unchanged. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define HUGE_BYTES (2UL << 20)
#define PAGE_BYTES 4096UL
#define SLOTS 4096 /* live big blocks at most; more go to glibc */

/* Open addressing: block address -> mapping length; 0 is an empty slot. */
static uintptr_t slot_address[SLOTS];
static size_t slot_length[SLOTS];
static size_t live_blocks;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t min_bytes = HUGE_BYTES;

static size_t home(uintptr_t address) { return (address >> 21) % SLOTS; }

/* A fork (gunicorn's master making a worker) never copies the table mid-change. */
static void lock_table(void) { pthread_mutex_lock(&table_lock); }
static void unlock_table(void) { pthread_mutex_unlock(&table_lock); }

__attribute__((constructor)) static void configure(void) {
    pthread_atfork(lock_table, unlock_table, unlock_table);
    const char *given = getenv("THPALIGN_MIN");
    if (given && strtoul(given, NULL, 10) >= PAGE_BYTES) min_bytes = strtoul(given, NULL, 10);
}

static void *map_block(size_t size) {
    if (size > SIZE_MAX - HUGE_BYTES) return NULL;
    size_t length = (size + HUGE_BYTES - 1) & ~(HUGE_BYTES - 1);
    void *block = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED) return NULL;
    /* A kernel that does not align (before 6.7): glibc's block instead, since
       free() tells ours by their 2 MiB alignment (and `alignment` <= 2 MiB). */
    if ((uintptr_t)block & (HUGE_BYTES - 1)) {
        munmap(block, length);
        return NULL;
    }
    size_t whole = size & ~(HUGE_BYTES - 1);
    if (whole) madvise(block, whole, MADV_HUGEPAGE);
    pthread_mutex_lock(&table_lock);
    if (live_blocks >= SLOTS / 2) {
        pthread_mutex_unlock(&table_lock);
        munmap(block, length);
        return NULL;
    }
    size_t i = home((uintptr_t)block);
    while (slot_address[i]) i = (i + 1) % SLOTS;
    slot_address[i] = (uintptr_t)block;
    slot_length[i] = length;
    live_blocks++;
    pthread_mutex_unlock(&table_lock);
    return block;
}

/* The mapping length of one of our blocks (removed from the table if
   `forget`), or 0 for glibc's. */
static size_t find(void *pointer, int forget) {
    uintptr_t address = (uintptr_t)pointer;
    if (!address || (address & (HUGE_BYTES - 1)) != 0) return 0; /* ours are 2 MiB-aligned */
    size_t length = 0;
    pthread_mutex_lock(&table_lock);
    size_t i = home(address);
    while (slot_address[i] && slot_address[i] != address) i = (i + 1) % SLOTS;
    if (slot_address[i] == address) {
        length = slot_length[i];
        if (forget) { /* delete, then re-place the rest of the run (backward shift) */
            slot_address[i] = 0;
            live_blocks--;
            for (size_t j = (i + 1) % SLOTS; slot_address[j]; j = (j + 1) % SLOTS) {
                uintptr_t moved = slot_address[j];
                size_t moved_length = slot_length[j];
                slot_address[j] = 0;
                size_t k = home(moved);
                while (slot_address[k]) k = (k + 1) % SLOTS;
                slot_address[k] = moved;
                slot_length[k] = moved_length;
            }
        }
    }
    pthread_mutex_unlock(&table_lock);
    return length;
}

void *malloc(size_t size) {
    void *block = size >= min_bytes ? map_block(size) : NULL;
    return block ? block : __libc_malloc(size);
}

void free(void *pointer) {
    size_t length = find(pointer, 1);
    if (length) munmap(pointer, length);
    else __libc_free(pointer);
}

void *calloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) { errno = ENOMEM; return NULL; }
    void *block = count * size >= min_bytes ? map_block(count * size) : NULL;
    return block ? block : __libc_calloc(count, size); /* fresh mappings are zero */
}

size_t malloc_usable_size(void *pointer) {
    size_t length = find(pointer, 0);
    if (length) return length;
    static size_t (*glibc_usable)(void *);
    if (!glibc_usable) glibc_usable = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
    return glibc_usable(pointer);
}

void *realloc(void *pointer, size_t size) {
    size_t length = find(pointer, 0);
    if (!length && size < min_bytes) return __libc_realloc(pointer, size);
    if (!pointer) return malloc(size);
    if (size == 0) { free(pointer); return NULL; }
    size_t old = length ? length : malloc_usable_size(pointer);
    void *moved = malloc(size);
    if (!moved) return NULL;
    memcpy(moved, pointer, old < size ? old : size);
    free(pointer);
    return moved;
}

void *memalign(size_t alignment, size_t size) {
    void *block = (size >= min_bytes && alignment <= HUGE_BYTES) ? map_block(size) : NULL;
    return block ? block : __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) { return memalign(alignment, size); }

int posix_memalign(void **out, size_t alignment, size_t size) {
    if (alignment < sizeof(void *) || (alignment & (alignment - 1))) return EINVAL;
    void *block = memalign(alignment, size);
    if (!block) return ENOMEM;
    *out = block;
    return 0;
}
