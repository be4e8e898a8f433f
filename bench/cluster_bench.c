/*
 * cluster_bench.c: the clustering benchmark's measuring program (driven
 * by bench/cluster_lfw.py, which records the machine, scores the labels
 * and writes bench/results/cluster_lfw.json).
 *
 *   cluster_bench EMB.f32 LABELS.i32 [fmr|t=DIST] [MIN_SIZE [K [THREADS [METHOD]]]]
 *
 * EMB.f32 holds n raw float32 rows of FV_EMBED_DIM; LABELS.i32 receives n
 * int32 labels (fvsearch_cluster's: -1 noise, 0 the largest cluster).
 * The second argument's strictness is an FMR, or t=DIST for a link
 * distance given directly.  METHOD: chinese-whispers (default) or
 * components.  Prints one JSON object: n, clusters, threshold and the
 * wall-clock seconds of fvsearch_cluster alone (reading the file aside);
 * the caller measures the peak resident set of the whole process.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "faceverify.h"
#include "search/cluster.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr,
                "usage: cluster_bench EMB.f32 LABELS.i32 [fmr|t=DIST] [MIN_SIZE [K [THREADS "
                "[METHOD]]]]\n");
        return 2;
    }
    fvsearch_cluster_opts o;
    fvsearch_cluster_opts_init(&o);
    if (argc > 3) {
        if (strncmp(argv[3], "t=", 2) == 0)
            o.threshold = strtof(argv[3] + 2, NULL);
        else
            o.fmr = strtod(argv[3], NULL);
    }
    if (argc > 4) o.min_cluster_size = strtoul(argv[4], NULL, 10);
    if (argc > 5) o.k = strtoul(argv[5], NULL, 10);
    if (argc > 6) o.threads = atoi(argv[6]);
    if (argc > 7 && strcmp(argv[7], "components") == 0) o.method = FVSEARCH_CLUSTER_COMPONENTS;
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    size_t n = (size_t)bytes / (FV_EMBED_DIM * sizeof(float));
    float *emb = malloc(n * FV_EMBED_DIM * sizeof *emb + 1);
    int32_t *label = malloc(n * sizeof *label + 1);
    if (!emb || !label || fread(emb, sizeof *emb * FV_EMBED_DIM, n, f) != n) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    fclose(f);
    char err[256];
    float t = 0;
    size_t nc = 0;
    double t0 = now_s();
    if (fvsearch_cluster_threshold(&o, &t, err, sizeof err) ||
        fvsearch_cluster(emb, n, &o, label, &nc, err, sizeof err)) {
        fprintf(stderr, "cluster_bench: %s\n", err);
        return 1;
    }
    double secs = now_s() - t0;
    FILE *out = fopen(argv[2], "wb");
    if (!out || fwrite(label, sizeof *label, n, out) != n || fclose(out)) {
        fprintf(stderr, "cannot write %s\n", argv[2]);
        return 2;
    }
    printf("{\"n\": %zu, \"clusters\": %zu, \"threshold\": %.4f, \"method\": \"%s\", "
           "\"k\": %zu, \"threads\": %d, \"seconds\": %.3f}\n",
           n, nc, (double)t, fvsearch_cluster_method_name(o.method), o.k, o.threads, secs);
    free(emb);
    free(label);
    return 0;
}
