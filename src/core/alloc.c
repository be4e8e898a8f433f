/*
 * alloc.c: the one allocator wrapper of the library (see fvi.h).
 *
 * The failure-injection counter is a plain global by design: it exists only
 * for single-threaded out-of-memory tests and is inert (-1) otherwise.
 */
#include <stdlib.h>
#include <string.h>

#include "core/fvi.h"

static long fail_after = -1;

void fvi_alloc_fail_after(long n) {
    fail_after = n;
}

/* Returns 1 when this allocation should fail by injection. */
static int injected_failure(void) {
    if (fail_after < 0) return 0;
    if (fail_after == 0) return 1;
    fail_after--;
    return 0;
}

void *fvi_malloc(size_t n) {
    if (injected_failure()) return NULL;
    return malloc(n ? n : 1);
}

void *fvi_calloc(size_t count, size_t size) {
    if (injected_failure()) return NULL;
    if (count == 0 || size == 0) return calloc(1, 1);
    return calloc(count, size);
}

void *fvi_realloc(void *p, size_t n) {
    if (injected_failure()) return NULL;
    return realloc(p, n ? n : 1);
}

void fvi_free(void *p) {
    free(p);
}

void *fvi_malloc_aligned(size_t n) {
    if (injected_failure()) return NULL;
    size_t rounded;
    if (fvi_size_add(n ? n : 1, 63, &rounded)) return NULL;
    rounded &= ~(size_t)63;
    return aligned_alloc(64, rounded);
}

void fvi_free_aligned(void *p) {
    free(p);
}

char *fvi_strdup(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = fvi_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
