/*
 * bench_stages.c: time each stage of the pipeline on one image through the
 * public API, for bench/stages.py.  Never part of the test suite.
 *
 *   bench_stages IMAGE [--threads N] [--runs R] [--embed-only 1]
 *
 * Stages: decode (bytes already in memory), detect with MMOD (default
 * options: upsample auto, large photos downscaled) and with Haar, 5-point
 * landmarks on the face found, the 150x150 chip, the embedding of one
 * chip and of batches of 8 and 32 (time per face), and the distance of
 * two embeddings.  Models are loaded before any clock starts; each stage
 * is run R times after one warm-up run.  Prints one JSON object: per stage
 * median, p95 and n in ms; per embedding batch the GFLOP/s achieved (the
 * network's FLOPs over the median time).  --embed-only 1 runs the other stages once, untimed
 * (to get a chip), and times only the embedding: for perf record.
 *
 * The embedding is timed through the internal fvi_resnet_embed_profiled
 * (embed/embed.h) on the same network file and a pool of the same size as
 * the engine's, which also times every convolution (the library's
 * fv_embed_chips passes no profile and reads no clock per layer);
 * "embed_profile" reports, per batch size, the convolution layers alone
 * (their FLOPs over their time: im2col, sgemm, bias and fused relu) next to
 * the rest of the network (input, pooling, residual adds, fc), and a
 * per-layer table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed/embed.h"
#include "faceverify.h"
#include "core/fvi.h"
#include "core/paths.h"
#include "core/workers.h"

/* The fc layer's FLOPs (256 -> 128, no bias); the convolutions' come from
 * the profile, counted from the shapes actually run: after each down block
 * dlib's add_prev keeps the larger (pooled) shape, so the last levels run at
 * 4x4 and 1x1 (every tap counted, as im2col computes them): 0.5416 GFLOP
 * per chip.  (Before this profile the count assumed 3x3 there and gave
 * 0.5087 GFLOP, 6% low.) */
#define FC_FLOPS (2.0 * 256 * 128)

static double prof_conv_flop(const fvi_embed_profile *p) {
    double s = 0;
    for (int i = 0; i < FVI_RESNET_CONVS; i++) s += p->conv_flop[i];
    return s;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double prof_conv_ms(const fvi_embed_profile *p) {
    double s = 0;
    for (int i = 0; i < FVI_RESNET_CONVS; i++) s += p->conv_ms[i];
    return s;
}

/* Prints one batch's "batchN":{...} of embed_profile: the convolutions'
 * and the rest's median ms per face over the runs (cm, om) and the
 * per-layer table (mean over the runs, from p). */
static void emit_profile(const fvi_embed_profile *p, int n, double cm, double om, int runs,
                         int first) {
    const double faces = (double)n * runs;
    const double flop = prof_conv_flop(p) / faces;
    printf("%s\"batch%d\":{\"conv_gflop_per_face\":%.6g,\"conv_ms_per_face\":%.6g,"
           "\"other_ms_per_face\":%.6g,\"conv_share\":%.4g,\"conv_gflops\":%.4g,\"layers\":[",
           first ? "" : ",", n, flop / 1e9, cm, om, cm / (cm + om), flop / (cm * 1e-3) / 1e9);
    for (int i = 0; i < FVI_RESNET_CONVS; i++) {
        const int *sh = p->conv_shape[i];
        double ms = p->conv_ms[i] / faces, fl = p->conv_flop[i] / faces;
        printf("%s{\"conv\":%d,\"in_c\":%d,\"out_c\":%d,\"k\":%d,\"stride\":%d,\"out\":%d,"
               "\"batch\":%d,\"ms_per_face\":%.5g,\"gflops\":%.4g}",
               i ? "," : "", i, sh[0], sh[1], sh[2], sh[3], sh[4], sh[5], ms,
               fl / (ms * 1e-3) / 1e9);
    }
    printf("]}");
}

/* Prints "name":{median,p95,n} from v[0..n) (sorted in place). */
static void emit(const char *name, double *v, int n, double per, int *first) {
    double med = median_of(v, n); /* sorts v */
    double p95 = v[(int)(0.95 * (n - 1) + 0.999)];
    printf("%s\"%s\":{\"median_ms\":%.6g,\"p95_ms\":%.6g,\"n\":%d}", *first ? "" : ",", name,
           med / per, p95 / per, n);
    *first = 0;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) &&
            fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *len = n > 0 ? (size_t)n : 0;
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_stages IMAGE [--threads N] [--runs R]\n");
        return 2;
    }
    int threads = 1, runs = 15, embed_only = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--embed-only")) embed_only = atoi(argv[i + 1]);
    }
    if (threads < 1 || threads > 256 || runs < 1 || runs > 100000) return 2;
    /* the stages before the embedding run once, untimed, with --embed-only */
    const int sruns = embed_only ? 0 : runs;
    size_t len = 0;
    unsigned char *bytes = read_file(argv[1], &len);
    if (!bytes) {
        fprintf(stderr, "bench_stages: cannot read %s\n", argv[1]);
        return 2;
    }
    fv_config cfg;
    fv_config_init(&cfg);
    cfg.threads = threads;
    fv_engine *eng = NULL;
    char err[256] = "";
    if (fv_engine_create(&cfg, &eng, err, sizeof err) != FV_OK) {
        fprintf(stderr, "bench_stages: %s\n", err);
        free(bytes);
        return 3;
    }
    /* the embedding's own network and pool (the engine's are private) */
    char path[4096];
    snprintf(path, sizeof path, "%s/dlib_face_recognition_resnet_model_v1.dat",
             fvi_models_dir(cfg.models_dir));
    fvi_resnet *net = NULL;
    fvi_workers *pool = fvi_workers_create(threads);
    if (!pool || fvi_resnet_load(path, &net, err, sizeof err) != FV_OK) {
        fprintf(stderr, "bench_stages: %s\n", pool ? err : "cannot start thread pool");
        fvi_workers_destroy(pool);
        fv_engine_destroy(eng);
        free(bytes);
        return 3;
    }
    enum { BIG = 32, CAP = 64 };
    double *t = malloc(sizeof *t * (size_t)(runs + 1));
    double *tc = malloc(sizeof *tc * (size_t)(runs + 1));
    double *to = malloc(sizeof *to * (size_t)(runs + 1));
    unsigned char *chips = malloc((size_t)BIG * FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
    float *emb = malloc(sizeof *emb * BIG * FV_EMBED_DIM);
    fv_face faces[CAP];
    fv_image *img = NULL;
    size_t nf = 0;
    int rc = 3, first = 1;
    if (!t || !tc || !to || !chips || !emb) goto done;
    fv_detect_options mm, hr;
    fv_detect_options_init(&mm);
    fv_detect_options_init(&hr);
    hr.detector = FV_DETECTOR_HAAR;

    printf("{\"image\":\"%s\",\"threads\":%d,\"runs\":%d,\"stages\":{", argv[1], threads, runs);
    /* decode */
    for (int r = 0; r <= sruns; r++) {
        fv_image_destroy(img);
        img = NULL;
        double t0 = fvi_now_ms();
        if (fv_image_decode(bytes, len, NULL, &img, err, sizeof err) != FV_OK) goto done;
        t[r > 0 ? r - 1 : 0] = fvi_now_ms() - t0;
    }
    if (sruns) emit("decode", t, runs, 1, &first);
    /* detect, each detector; the MMOD result is used from here on */
    for (int d = 1; d >= 0; d--) {
        for (int r = 0; r <= sruns; r++) {
            double t0 = fvi_now_ms();
            fv_status st = fv_detect(eng, img, d ? &hr : &mm, faces, CAP, &nf, err, sizeof err);
            t[r > 0 ? r - 1 : 0] = fvi_now_ms() - t0;
            if (st != FV_OK) {
                fprintf(stderr, "bench_stages: detect: %s\n", err);
                goto done;
            }
        }
        if (sruns) emit(d ? "detect_haar" : "detect_mmod", t, runs, 1, &first);
    }
    if (nf == 0) {
        fprintf(stderr, "bench_stages: no face in %s\n", argv[1]);
        goto done;
    }
    for (int r = 0; r <= sruns; r++) {
        double t0 = fvi_now_ms();
        fv_face_landmarks(eng, img, &faces[0]);
        t[r > 0 ? r - 1 : 0] = fvi_now_ms() - t0;
    }
    if (sruns) emit("landmarks", t, runs, 1, &first);
    for (int r = 0; r <= sruns; r++) {
        double t0 = fvi_now_ms();
        fv_face_chip(eng, img, &faces[0], chips);
        t[r > 0 ? r - 1 : 0] = fvi_now_ms() - t0;
    }
    if (sruns) emit("chip", t, runs, 1, &first);
    for (int i = 1; i < BIG; i++)
        memcpy(chips + (size_t)i * FV_CHIP_SIZE * FV_CHIP_SIZE * 3, chips,
               (size_t)FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
    static const int batches[] = {1, 8, 32};
    double gflops[3], conv_med[3], other_med[3], resnet_flop = 0;
    int nruns[3];
    fvi_embed_profile prof[3], cur;
    for (int b = 0; b < 3; b++) {
        int n = batches[b], rr = n == 32 ? (runs + 3) / 4 : runs;
        for (int r = 0; r <= rr; r++) {
            if (r <= 1) memset(&cur, 0, sizeof cur); /* again after the warm-up */
            double c0 = prof_conv_ms(&cur), f0 = cur.forward_ms;
            double t0 = fvi_now_ms();
            if (fvi_resnet_embed_profiled(net, chips, (size_t)n, pool, &cur, emb, err,
                                          sizeof err) != FV_OK)
                goto done;
            t[r > 0 ? r - 1 : 0] = fvi_now_ms() - t0;
            tc[r > 0 ? r - 1 : 0] = prof_conv_ms(&cur) - c0;
            to[r > 0 ? r - 1 : 0] = cur.forward_ms - f0 - tc[r > 0 ? r - 1 : 0];
        }
        prof[b] = cur;
        nruns[b] = rr;
        conv_med[b] = median_of(tc, rr) / n;
        other_med[b] = median_of(to, rr) / n;
        char name[32];
        snprintf(name, sizeof name, "embed_batch%d_per_face", n);
        emit(name, t, rr, n, &first);
        resnet_flop = prof_conv_flop(&prof[b]) / ((double)n * rr) + FC_FLOPS;
        gflops[b] = resnet_flop * n / (median_of(t, rr) * 1e-3) / 1e9;
    }
    enum { NCMP = 100000 };
    volatile float sink = 0;
    for (int r = 0; r <= sruns; r++) {
        double t0 = fvi_now_ms();
        for (int i = 0; i < NCMP; i++) sink += fv_distance(emb, emb + FV_EMBED_DIM * (i & 1));
        t[r > 0 ? r - 1 : 0] = fvi_now_ms() - t0;
    }
    if (sruns) emit("compare", t, runs, NCMP, &first);
    printf("},\"resnet_gflop\":%.6g,\"image_size\":[%d,%d],\"faces\":%zu,\"embed_gflops\":{"
           "\"batch1\":%.4g,\"batch8\":%."
           "4g,\"batch32\":%.4g},\"embed_profile\":{",
           resnet_flop / 1e9, img->width, img->height, nf, gflops[0], gflops[1], gflops[2]);
    for (int b = 0; b < 3; b++)
        emit_profile(&prof[b], batches[b], conv_med[b], other_med[b], nruns[b], b == 0);
    printf("}}\n");
    rc = 0;
done:
    fv_image_destroy(img);
    fvi_resnet_destroy(net);
    fvi_workers_destroy(pool);
    fv_engine_destroy(eng);
    free(t);
    free(tc);
    free(to);
    free(chips);
    free(emb);
    free(bytes);
    return rc;
}
