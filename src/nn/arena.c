/*
 * arena.c: the bump arena behind every forward pass (see nn.h).
 *
 * A network runs once in measure mode (no memory, only the peak is
 * recorded), reserves that many floats, and from then on each pass resets
 * and re-walks the same allocations, so inference never calls malloc.
 * Offsets are rounded to 16 floats (64 bytes) for SIMD and BLAS.
 */
#include "nn/nn.h"

#include <cblas.h>

#include "core/fvi.h"

void fvi_arena_measure(fvi_arena *a) {
    a->base = NULL;
    a->cap = 0;
    a->used = 0;
    a->peak = 0;
    a->measuring = 1;
}

int fvi_arena_reserve(fvi_arena *a, size_t cap) {
    size_t bytes;
    if (fvi_size_mul(cap, sizeof(float), &bytes)) return -1;
    a->base = fvi_malloc_aligned(bytes);
    if (!a->base) return -1;
    a->cap = cap;
    a->used = 0;
    a->peak = 0;
    a->measuring = 0;
    return 0;
}

void fvi_arena_free(fvi_arena *a) {
    if (!a) return;
    fvi_free_aligned(a->base);
    a->base = NULL;
    a->cap = a->used = a->peak = 0;
}

float *fvi_arena_alloc(fvi_arena *a, size_t n) {
    size_t rounded, end;
    if (fvi_size_add(n, 15, &rounded)) return NULL;
    rounded &= ~(size_t)15;
    if (fvi_size_add(a->used, rounded, &end)) return NULL;
    if (a->measuring) {
        a->used = end;
        if (end > a->peak) a->peak = end;
        return NULL;
    }
    if (end > a->cap) return NULL;
    float *p = a->base + a->used;
    a->used = end;
    if (end > a->peak) a->peak = end;
    return p;
}

int fvi_arena_tensor(fvi_arena *a, fvi_tensor *t, int n, int c, int h, int w) {
    size_t sz;
    t->n = n;
    t->c = c;
    t->h = h;
    t->w = w;
    t->d = NULL;
    if (n < 0 || c < 0 || h < 0 || w < 0) return -1;
    if (fvi_size_mul((size_t)n, (size_t)c, &sz) || fvi_size_mul(sz, (size_t)h, &sz) ||
        fvi_size_mul(sz, (size_t)w, &sz))
        return -1;
    t->d = fvi_arena_alloc(a, sz);
    if (!t->d && !a->measuring) return -1;
    return 0;
}

void fvi_nn_init(void) {
    /* The engine's pool provides the parallelism; OpenBLAS's own threads
     * would oversubscribe the cores and make results depend on timing. */
    openblas_set_num_threads(1);
}
