/*
 * sgemm_peak.c: the machine's measured single-precision GEMM rate, the
 * yardstick for the embedding's GFLOP/s (bench/stages.py).  Never part of
 * the test suite.
 *
 *   sgemm_peak [--threads N] [--seconds S]
 *
 * OpenBLAS cblas_sgemm, row-major, at the shapes our convolutions hand it
 * for one 150x150 chip (M = output channels, N = output pixels, K = input
 * channels x 3 x 3; see fvi_conv_forward_cnhw) and at large square products
 * (1024 and 2048, where OpenBLAS's packing is a negligible share), with
 * openblas_set_num_threads(N).  Each shape runs for about S
 * seconds after a warm-up; prints GFLOP/s per shape and the best as the
 * peak, as one JSON object.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fvi.h"

void openblas_set_num_threads(int);

typedef struct {
    const char *name;
    int m, n, k;
} shape;

static const shape SHAPES[] = {
    {"conv32_35x35", 32, 1225, 288},        {"conv64_17x17", 64, 289, 576},
    {"conv128_8x8", 128, 64, 1152},         {"conv256_3x3", 256, 9, 2304},
    {"conv32_35x35_batch8", 32, 9800, 288}, {"square1024", 1024, 1024, 1024},
    {"square2048", 2048, 2048, 2048},
};

int main(int argc, char **argv) {
    int threads = 1;
    double seconds = 1.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
    }
    if (threads < 1 || threads > 256 || !(seconds > 0 && seconds < 600)) return 2;
    openblas_set_num_threads(threads);
    size_t cap = (size_t)1024 * 9800; /* the largest operand, also > 2048 x 2048 */
    float *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b), *c = malloc(cap * sizeof *c);
    if (!a || !b || !c) return 3;
    for (size_t i = 0; i < cap; i++) {
        a[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
        b[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    }
    double best = 0;
    printf("{\"threads\":%d,\"shapes\":{", threads);
    for (size_t s = 0; s < sizeof SHAPES / sizeof *SHAPES; s++) {
        const shape *sh = &SHAPES[s];
        double flop = 2.0 * sh->m * sh->n * sh->k;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, sh->m, sh->n, sh->k, 1.0f, a, sh->k,
                    b, sh->n, 0.0f, c, sh->n);
        long reps = 0;
        double t0 = fvi_now_ms(), el = 0;
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, sh->m, sh->n, sh->k, 1.0f, a,
                        sh->k, b, sh->n, 0.0f, c, sh->n);
            reps++;
            el = fvi_now_ms() - t0;
        } while (el < seconds * 1e3);
        double gf = flop * (double)reps / (el * 1e-3) / 1e9;
        if (gf > best) best = gf;
        printf("%s\"%s\":{\"m\":%d,\"n\":%d,\"k\":%d,\"gflops\":%.4g}", s ? "," : "", sh->name,
               sh->m, sh->n, sh->k, gf);
    }
    printf("},\"peak_gflops\":%.4g}\n", best);
    free(a);
    free(b);
    free(c);
    return 0;
}
