/*
 * kernels.c: int8 dot products for the exact-int8 scan (see kernels.h).
 *
 * AVX2 has no signed x signed 8-bit multiply-add, only unsigned x signed
 * (vpmaddubsw).  So the query is split into |q| (unsigned) and its signs,
 * which are moved onto the codes (vpsignb): |q_j| * (c_j * sign q_j) =
 * q_j * c_j.  Each 16-bit pair sum is at most 2 * 127 * 127 = 32258, so it
 * never saturates as long as no value is -128 (the quantiser emits
 * [-127, 127]).  vpmaddwd with ones widens the pairs to int32, four rows
 * are reduced together with vphaddd.  Only the kernel function is built
 * for AVX2 (a target attribute), so the rest of the project keeps the
 * baseline instruction set and this file builds with any compiler flags.
 */
#include "search/kernels.h"

#define DIM FV_EMBED_DIM

void fvsearch_dots_i8_portable(const int8_t *q, const int8_t *codes, size_t n, int32_t *out) {
    for (size_t i = 0; i < n; i++) {
        const int8_t *c = codes + i * DIM;
        int32_t s = 0;
        for (int j = 0; j < DIM; j++) s += (int32_t)q[j] * c[j];
        out[i] = s;
    }
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) &&     \
    DIM % 32 == 0
#include <immintrin.h>

#define CHUNKS (DIM / 32)

/* The four 32-lane chunks of one row against the prepared query, as eight
 * int32 partial sums. */
__attribute__((target("avx2"))) static inline __m256i row_avx2(const __m256i *qa, const __m256i *qs,
                                                               const int8_t *c) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    for (int j = 0; j < CHUNKS; j++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(c + 32 * j));
        __m256i p = _mm256_maddubs_epi16(qa[j], _mm256_sign_epi8(v, qs[j]));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
    }
    return acc;
}

__attribute__((target("avx2"))) static void dots_avx2(const int8_t *q, const int8_t *codes,
                                                      size_t n, int32_t *out) {
    __m256i qa[CHUNKS], qs[CHUNKS];
    for (int j = 0; j < CHUNKS; j++) {
        qs[j] = _mm256_loadu_si256((const __m256i *)(const void *)(q + 32 * j));
        qa[j] = _mm256_abs_epi8(qs[j]);
    }
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const int8_t *c = codes + i * DIM;
        __m256i a0 = row_avx2(qa, qs, c), a1 = row_avx2(qa, qs, c + DIM);
        __m256i a2 = row_avx2(qa, qs, c + 2 * DIM), a3 = row_avx2(qa, qs, c + 3 * DIM);
        /* After two hadds each 128-bit half holds rows 0..3's partial sums
         * of its half of the lanes. */
        __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        _mm_storeu_si128((__m128i *)(void *)(out + i), s);
    }
    if (i < n) fvsearch_dots_i8_portable(q, codes + i * DIM, n - i, out + i);
}

int fvsearch_dots_i8_simd(void) {
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}

void fvsearch_dots_i8(const int8_t *q, const int8_t *codes, size_t n, int32_t *out) {
    if (__builtin_cpu_supports("avx2"))
        dots_avx2(q, codes, n, out);
    else
        fvsearch_dots_i8_portable(q, codes, n, out);
}

#else

int fvsearch_dots_i8_simd(void) {
    return 0;
}

void fvsearch_dots_i8(const int8_t *q, const int8_t *codes, size_t n, int32_t *out) {
    fvsearch_dots_i8_portable(q, codes, n, out);
}

#endif
