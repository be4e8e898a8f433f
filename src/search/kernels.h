/*
 * kernels.h: the inner loop of the exact-int8 scan.
 *
 * fvsearch_dots_i8 runs an AVX2 kernel on x86 CPUs that have AVX2 (chosen at run
 * time with __builtin_cpu_supports, so the project still builds for, and
 * runs on, any x86-64 or other CPU) and a portable C loop elsewhere.  Both
 * compute exact int32 sums, so the choice never changes a result.
 */
#ifndef FVSEARCH_KERNELS_H
#define FVSEARCH_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "faceverify.h"

/* out[i] = sum over j < FV_EMBED_DIM of q[j] * codes[i * FV_EMBED_DIM + j],
 * for i < n.  Every value of q and codes must lie in [-127, 127] (the AVX2
 * kernel's 16-bit pair sums rely on it).  Thread-safe. */
void fvsearch_dots_i8(const int8_t *q, const int8_t *codes, size_t n, int32_t *out);

/* The portable loop alone (the reference the tests compare against). */
void fvsearch_dots_i8_portable(const int8_t *q, const int8_t *codes, size_t n, int32_t *out);

/* 1 when fvsearch_dots_i8 uses the AVX2 kernel on this CPU. */
int fvsearch_dots_i8_simd(void);

#endif
