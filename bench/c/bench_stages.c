/*
 * bench_stages.c: time each stage of the pipeline on one image through the
 * public API, for bench/stages.py.  Never part of the test suite.
 *
 *   bench_stages IMAGE [--threads N] [--runs R]
 *
 * Stages: decode (bytes already in memory), detect with MMOD (default
 * options: upsample auto, large photos downscaled) and with Haar, 5-point
 * landmarks on the face found, the 150x150 chip, the embedding of one
 * chip and of batches of 8 and 32 (time per face), and the distance of
 * two embeddings.  Models are loaded before any clock starts; each stage
 * is run R times after one warm-up run.  Prints one JSON object: per stage
 * median, p95 and n in ms; per embedding batch the GFLOP/s achieved, from
 * RESNET_FLOPS below.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faceverify.h"
#include "fvi.h"

/* Multiply-adds x 2 of dlib's face ResNet on a 150x150 chip, by layer
 * (dlib pads a strided convolution by 0 and a stride-1 3x3 by 1):
 * stem 7x7/2 3->32 at 72x72; 6 convs 3x3 32->32 at 35x35; 32->64/2 and
 * 7 convs 64->64 at 17x17; 64->128/2 and 5 convs 128->128 at 8x8;
 * 128->256/2 and 5 convs 256->256 at 3x3; 256->256/2 and one 256->256 at
 * 1x1 (all 9 taps counted, as im2col computes them); fc 256->128. */
#define CONV(h, cin, cout, k) (2.0 * (h) * (h) * (cout) * (cin) * (k) * (k))
static double resnet_flops(void) {
    return CONV(72, 3, 32, 7) + 6 * CONV(35, 32, 32, 3) + CONV(17, 32, 64, 3) +
           7 * CONV(17, 64, 64, 3) + CONV(8, 64, 128, 3) + 5 * CONV(8, 128, 128, 3) +
           CONV(3, 128, 256, 3) + 5 * CONV(3, 256, 256, 3) + 2 * CONV(1, 256, 256, 3) +
           2.0 * 256 * 128;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Prints "name":{median,p95,n} from v[0..n) (sorted in place). */
static void emit(const char *name, double *v, int n, double per, int *first) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
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
    int threads = 1, runs = 15;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
    }
    if (threads < 1 || threads > 256 || runs < 1 || runs > 100000) return 2;
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
    enum { BIG = 32, CAP = 64 };
    double *t = malloc(sizeof *t * (size_t)(runs + 1));
    unsigned char *chips = malloc((size_t)BIG * FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
    float *emb = malloc(sizeof *emb * BIG * FV_EMBED_DIM);
    fv_face faces[CAP];
    fv_image *img = NULL;
    size_t nf = 0;
    int rc = 3, first = 1;
    if (!t || !chips || !emb) goto done;
    fv_detect_options mm, hr;
    fv_detect_options_init(&mm);
    fv_detect_options_init(&hr);
    hr.detector = FV_DETECTOR_HAAR;

    printf("{\"image\":\"%s\",\"threads\":%d,\"runs\":%d,\"resnet_gflop\":%.6g,\"stages\":{",
           argv[1], threads, runs, resnet_flops() / 1e9);
    /* decode */
    for (int r = 0; r <= runs; r++) {
        fv_image_destroy(img);
        img = NULL;
        double t0 = fvi_now_ms();
        if (fv_image_decode(bytes, len, NULL, &img, err, sizeof err) != FV_OK) goto done;
        t[r > 0 ? r - 1 : 0] = fvi_now_ms() - t0;
    }
    emit("decode", t, runs, 1, &first);
    /* detect, each detector; the MMOD result is used from here on */
    for (int d = 1; d >= 0; d--) {
        for (int r = 0; r <= runs; r++) {
            double t0 = fvi_now_ms();
            fv_status st = fv_detect(eng, img, d ? &hr : &mm, faces, CAP, &nf, err, sizeof err);
            t[r > 0 ? r - 1 : 0] = fvi_now_ms() - t0;
            if (st != FV_OK) {
                fprintf(stderr, "bench_stages: detect: %s\n", err);
                goto done;
            }
        }
        emit(d ? "detect_haar" : "detect_mmod", t, runs, 1, &first);
    }
    if (nf == 0) {
        fprintf(stderr, "bench_stages: no face in %s\n", argv[1]);
        goto done;
    }
    for (int r = 0; r <= runs; r++) {
        double t0 = fvi_now_ms();
        fv_face_landmarks(eng, img, &faces[0]);
        t[r > 0 ? r - 1 : 0] = fvi_now_ms() - t0;
    }
    emit("landmarks", t, runs, 1, &first);
    for (int r = 0; r <= runs; r++) {
        double t0 = fvi_now_ms();
        fv_face_chip(eng, img, &faces[0], chips);
        t[r > 0 ? r - 1 : 0] = fvi_now_ms() - t0;
    }
    emit("chip", t, runs, 1, &first);
    for (int i = 1; i < BIG; i++)
        memcpy(chips + (size_t)i * FV_CHIP_SIZE * FV_CHIP_SIZE * 3, chips,
               (size_t)FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
    static const int batches[] = {1, 8, 32};
    double gflops[3];
    for (int b = 0; b < 3; b++) {
        int n = batches[b], rr = n == 32 ? (runs + 3) / 4 : runs;
        for (int r = 0; r <= rr; r++) {
            double t0 = fvi_now_ms();
            if (fv_embed_chips(eng, chips, (size_t)n, emb, err, sizeof err) != FV_OK) goto done;
            t[r > 0 ? r - 1 : 0] = fvi_now_ms() - t0;
        }
        char name[32];
        snprintf(name, sizeof name, "embed_batch%d_per_face", n);
        emit(name, t, rr, n, &first);
        gflops[b] = resnet_flops() * n / (t[rr / 2] * 1e-3) / 1e9; /* t is sorted */
    }
    enum { NCMP = 100000 };
    volatile float sink = 0;
    for (int r = 0; r <= runs; r++) {
        double t0 = fvi_now_ms();
        for (int i = 0; i < NCMP; i++) sink += fv_distance(emb, emb + FV_EMBED_DIM * (i & 1));
        t[r > 0 ? r - 1 : 0] = fvi_now_ms() - t0;
    }
    emit("compare", t, runs, NCMP, &first);
    printf("},\"image_size\":[%d,%d],\"faces\":%zu,\"embed_gflops\":{\"batch1\":%.4g,\"batch8\":%."
           "4g,\"batch32\":%.4g}}\n",
           img->width, img->height, nf, gflops[0], gflops[1], gflops[2]);
    rc = 0;
done:
    fv_image_destroy(img);
    fv_engine_destroy(eng);
    free(t);
    free(chips);
    free(emb);
    free(bytes);
    return rc;
}
