/*
 * probe_embed.c: runs our ResNet embedder on raw chips for the Python parity
 * tests and for timing.
 *
 *   probe_embed MODEL CHIPS N [--threads T] [--batch B] [--bench R]
 *   probe_embed --layers B [--threads T]
 *
 * CHIPS holds N raw 150x150x3 RGB8 chips back to back.  Prints one JSON
 * array of N arrays of 128 floats (printed with %.9g, so they round-trip).
 * --batch B embeds the chips B at a time (default: all in one call).
 * --bench R instead embeds them R times and prints a JSON object with the
 * median and minimum wall time per pass over the chips in milliseconds, and
 * the median process CPU time (all threads), which a busy shared machine
 * disturbs far less than wall time.
 * --layers B times each conv layer shape of the network alone (batch of B,
 * random data) and a large square sgemm, and prints their GFLOP/s (from
 * process CPU time) as JSON: the conv layers' share of the machine's sgemm
 * peak.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "embed/embed.h"
#include "core/fvi.h"
#include "nn/nn.h"
#include "core/workers.h"

static double cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of r CPU-time measurements of fn, in ms. */
typedef void (*bench_fn)(void *ctx);
static double median_cpu(bench_fn fn, void *ctx, int r) {
    double t[32];
    if (r > 32) r = 32;
    fn(ctx); /* warm-up */
    for (int i = 0; i < r; i++) {
        double c0 = cpu_ms();
        fn(ctx);
        t[i] = cpu_ms() - c0;
    }
    qsort(t, (size_t)r, sizeof *t, cmp_double);
    return t[r / 2];
}

typedef struct {
    fvi_conv cv;
    fvi_tensor in, out;
    float *scratch;
    fvi_workers *pool;
} conv_bench;

static void run_conv_bench(void *p) {
    conv_bench *b = p;
    fvi_conv_forward_cnhw(&b->cv, &b->in, &b->out, 1, b->scratch, b->pool);
}

typedef struct {
    int n;
    float *a, *b, *c;
} gemm_bench;

static void run_gemm_bench(void *p) {
    gemm_bench *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->n, g->n, g->n, 1.0f, g->a, g->n, g->b,
                g->n, 0.0f, g->c, g->n);
}

static float *rand_floats(size_t n) {
    float *p = malloc(n * sizeof *p + 4);
    for (size_t i = 0; p && i < n; i++) p[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    return p;
}

/* The conv layer shapes of the ResNet: in_c, out_c, k, stride, input side,
 * and how many layers have that shape. */
static const int LAYERS[][6] = {
    {3, 32, 7, 2, 150, 1},  {32, 32, 3, 1, 35, 6},  {32, 64, 3, 2, 35, 1},  {64, 64, 3, 1, 17, 7},
    {64, 128, 3, 2, 17, 1}, {128, 128, 3, 1, 8, 5}, {128, 256, 3, 2, 8, 1}, {256, 256, 3, 1, 3, 1},
    {256, 256, 3, 1, 4, 4}, {256, 256, 3, 2, 4, 1}, {256, 256, 3, 1, 1, 1},
};

static int layer_bench(int batch, int threads) {
    fvi_nn_init();
    fvi_workers *pool = threads > 1 ? fvi_workers_create(threads) : NULL;
    gemm_bench g = {1024, rand_floats(1 << 20), rand_floats(1 << 20), rand_floats(1 << 20)};
    double gms = median_cpu(run_gemm_bench, &g, 9);
    double peak = 2.0 * 1024 * 1024 * 1024 / gms / 1e6;
    printf("{\"sgemm_1024_gflops\": %.1f, \"batch\": %d, \"threads\": %d, \"layers\": [\n", peak,
           batch, threads);
    double tot_ms = 0, tot_flop = 0;
    for (size_t i = 0; i < sizeof LAYERS / sizeof *LAYERS; i++) {
        const int *L = LAYERS[i];
        conv_bench b;
        memset(&b, 0, sizeof b);
        b.cv.in_c = L[0];
        b.cv.out_c = L[1];
        b.cv.kh = b.cv.kw = L[2];
        b.cv.stride_y = b.cv.stride_x = L[3];
        b.cv.pad_y = b.cv.pad_x = L[3] == 1 ? L[2] / 2 : 0;
        b.cv.weights = rand_floats((size_t)L[0] * L[1] * L[2] * L[2]);
        b.cv.bias = rand_floats((size_t)L[1]);
        int side = L[4], os = fvi_conv_out_h(&b.cv, side);
        b.in =
            (fvi_tensor){batch, L[0], side, side, rand_floats((size_t)batch * L[0] * side * side)};
        b.out = (fvi_tensor){batch, L[1], os, os, rand_floats((size_t)batch * L[1] * os * os)};
        b.scratch = rand_floats(fvi_conv_cnhw_scratch(&b.cv, batch, side, side, threads) + 1);
        b.pool = pool;
        double ms = median_cpu(run_conv_bench, &b, 15);
        double flop = 2.0 * L[1] * L[0] * L[2] * L[2] * (double)os * os * batch;
        tot_ms += ms * L[5];
        tot_flop += flop * L[5];
        printf("  {\"in_c\": %d, \"out_c\": %d, \"k\": %d, \"stride\": %d, \"side\": %d, "
               "\"count\": %d, \"cpu_ms\": %.3f, \"gflops\": %.1f}%s\n",
               L[0], L[1], L[2], L[3], side, L[5], ms, flop / ms / 1e6,
               i + 1 < sizeof LAYERS / sizeof *LAYERS ? "," : "");
        free(b.cv.weights);
        free(b.cv.bias);
        free(b.in.d);
        free(b.out.d);
        free(b.scratch);
    }
    printf("], \"conv_cpu_ms_per_chip\": %.3f, \"conv_gflops\": %.1f, \"share_of_peak\": %.2f}\n",
           tot_ms / batch, tot_flop / tot_ms / 1e6, tot_flop / tot_ms / 1e6 / peak);
    free(g.a);
    free(g.b);
    free(g.c);
    fvi_workers_destroy(pool);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--layers") == 0) {
        int threads = argc >= 5 && strcmp(argv[3], "--threads") == 0 ? atoi(argv[4]) : 1;
        int batch = atoi(argv[2]);
        if (batch < 1 || batch > 64 || threads < 1 || threads > 64) return 2;
        return layer_bench(batch, threads);
    }
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL CHIPS N [--threads T] [--batch B] [--bench R]\n", argv[0]);
        return 2;
    }
    const char *model = argv[1], *chips_path = argv[2];
    long n = strtol(argv[3], NULL, 10);
    int threads = 1, bench = 0;
    long batch = 0;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = strtol(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--bench") == 0)
            bench = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (n < 1 || n > 100000 || threads < 1) {
        fprintf(stderr, "bad N or threads\n");
        return 2;
    }
    if (batch <= 0 || batch > n) batch = n;
    size_t chip_bytes = (size_t)FV_CHIP_SIZE * FV_CHIP_SIZE * 3;
    unsigned char *chips = malloc(chip_bytes * (size_t)n);
    float *out = malloc(sizeof(float) * FV_EMBED_DIM * (size_t)n);
    FILE *f = fopen(chips_path, "rb");
    if (!chips || !out || !f || fread(chips, chip_bytes, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %ld chips from %s\n", n, chips_path);
        return 1;
    }
    fclose(f);
    char err[256];
    fvi_resnet *net = NULL;
    fv_status st = fvi_resnet_load(model, &net, err, sizeof err);
    if (st != FV_OK) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    fvi_workers *pool = threads > 1 ? fvi_workers_create(threads) : NULL;
    int reps = bench > 0 ? bench : 1;
    double *ms = malloc(sizeof(double) * (size_t)reps);
    double *cpu = malloc(sizeof(double) * (size_t)reps);
    if (bench > 0) { /* warm-up: first-touch of the arena and BLAS buffers */
        st = fvi_resnet_embed(net, chips, (size_t)batch, pool, out, err, sizeof err);
    }
    for (int r = 0; r < reps && st == FV_OK; r++) {
        double t0 = fvi_now_ms(), c0 = cpu_ms();
        for (long done = 0; done < n && st == FV_OK; done += batch) {
            long nb = n - done < batch ? n - done : batch;
            st = fvi_resnet_embed(net, chips + chip_bytes * (size_t)done, (size_t)nb, pool,
                                  out + (size_t)FV_EMBED_DIM * done, err, sizeof err);
        }
        ms[r] = fvi_now_ms() - t0;
        cpu[r] = cpu_ms() - c0;
    }
    if (st != FV_OK) {
        fprintf(stderr, "embed: %s\n", err);
        return 1;
    }
    if (bench > 0) {
        qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
        qsort(cpu, (size_t)reps, sizeof *cpu, cmp_double);
        printf("{\"chips\": %ld, \"batch\": %ld, \"threads\": %d, \"runs\": %d, "
               "\"median_ms\": %.3f, \"min_ms\": %.3f, \"median_ms_per_chip\": %.3f, "
               "\"median_cpu_ms\": %.3f}\n",
               n, batch, threads, reps, ms[reps / 2], ms[0], ms[reps / 2] / (double)n,
               cpu[reps / 2]);
    } else {
        printf("[");
        for (long i = 0; i < n; i++) {
            printf(i ? ",\n[" : "[");
            for (int k = 0; k < FV_EMBED_DIM; k++)
                printf(k ? ",%.9g" : "%.9g", (double)out[(size_t)i * FV_EMBED_DIM + k]);
            printf("]");
        }
        printf("]\n");
    }
    free(ms);
    free(cpu);
    fvi_workers_destroy(pool);
    fvi_resnet_destroy(net);
    free(chips);
    free(out);
    return 0;
}
