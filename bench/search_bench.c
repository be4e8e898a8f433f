/*
 * search_bench.c: the 1:N search benchmark's measuring program (driven by
 * bench/search.py, which records the machine and writes
 * bench/results/search.json).
 *
 *   search_bench embed LIST OUT.f32     embed the largest face of each image
 *                                       path in LIST (Haar detector, faces
 *                                       nearest the centre) into raw float32
 *                                       rows; one line per row in OUT.f32.txt
 *                                       gives the image it came from
 *   search_bench run EMB.f32 SIZES BACKENDS [QUERIES [THREADS [SPILLDIR]]]
 *                                       one JSON object per (size, backend)
 *
 * run: the first QUERIES rows of EMB are the queries (the caller orders the
 * file so that they are second photos of people whose first photo is in the
 * gallery); the gallery is the remaining real rows, padded with synthetic
 * random unit vectors up to each size.  Per backend: build time, bytes held
 * (fvsearch_memory) and the resident-set growth, per-query latency median
 * and p95, recall@1 against exact.  THREADS (default 1) is the exact
 * backends' scan threads (BLAS and OpenMP are pinned by the caller's
 * environment); with SPILLDIR, exact-int8 keeps its float32 rows in a file
 * there (fvsearch_spill), as faceverifyd does with an index dir.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "faceverify.h"
#include "search/search.h"

#define D FV_EMBED_DIM

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return res * 4;
}

/* The 1-minute load average while this backend ran (a busy shared machine
 * inflates every time). */
static double load1(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    double l = -1;
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmd_embed(const char *list, const char *out) {
    fv_config cfg;
    fv_config_init(&cfg);
    cfg.threads = 1;
    fv_engine *eng = NULL;
    char err[256];
    if (fv_engine_create(&cfg, &eng, err, sizeof err) != FV_OK) {
        fprintf(stderr, "search_bench: %s\n", err);
        return 1;
    }
    FILE *in = fopen(list, "r");
    char names[4096];
    snprintf(names, sizeof names, "%s.txt", out);
    FILE *fo = fopen(out, "wb"), *fn = fopen(names, "w");
    if (!in || !fo || !fn) {
        fprintf(stderr, "search_bench: cannot open files\n");
        return 1;
    }
    fv_detect_options opt;
    fv_detect_options_init(&opt);
    opt.detector = FV_DETECTOR_HAAR;
    opt.order = FV_ORDER_CENTER;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, in)) {
        line[strcspn(line, "\n")] = 0;
        fv_image *img = NULL;
        fv_face_result r;
        if (fv_image_load(line, NULL, &img, err, sizeof err) != FV_OK) continue;
        if (fv_embed_face(eng, img, &opt, 0, &r, err, sizeof err) == FV_OK) {
            fwrite(r.embedding, sizeof(float), D, fo);
            fprintf(fn, "%s\n", line);
            n++;
        }
        fv_image_destroy(img);
    }
    fclose(in);
    fclose(fo);
    fclose(fn);
    fv_engine_destroy(eng);
    fprintf(stderr, "search_bench: %d embeddings\n", n);
    return 0;
}

static uint64_t rng = 0x2545F4914F6CDD1DULL;
static double uniform(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}

static void synthetic(float *x) {
    double s = 0;
    for (int i = 0; i < D; i++) {
        double g = sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform());
        x[i] = (float)g;
        s += g * g;
    }
    for (int i = 0; i < D; i++) x[i] = (float)(x[i] / sqrt(s));
}

static int cmd_run(const char *emb, const char *sizes, const char *backends, int nq, int threads,
                   const char *spill) {
    FILE *f = fopen(emb, "rb");
    if (!f) return 1;
    fseek(f, 0, SEEK_END);
    size_t nreal = (size_t)ftell(f) / (D * sizeof(float));
    fseek(f, 0, SEEK_SET);
    float *real = malloc(nreal * D * sizeof(float));
    if (!real || fread(real, D * sizeof(float), nreal, f) != nreal) return 1;
    fclose(f);
    if ((size_t)nq >= nreal) return 1;
    const float *queries = real;
    char sz[256];
    snprintf(sz, sizeof sz, "%s", sizes);
    char err[256];
    for (char *tok = strtok(sz, ","); tok; tok = strtok(NULL, ",")) {
        size_t n = (size_t)atol(tok);
        float *gal = malloc(n * D * sizeof(float));
        int64_t *ids = malloc(n * sizeof(int64_t));
        size_t nr = nreal - (size_t)nq < n ? nreal - (size_t)nq : n;
        memcpy(gal, real + (size_t)nq * D, nr * D * sizeof(float));
        for (size_t i = nr; i < n; i++) synthetic(gal + i * D);
        for (size_t i = 0; i < n; i++) ids[i] = (int64_t)i + 1;
        int64_t *truth = malloc((size_t)nq * sizeof(int64_t));
        double *lat = malloc((size_t)nq * sizeof(double));
        char bk[256];
        snprintf(bk, sizeof bk, "%s", backends);
        char *save = NULL;
        int have_truth = 0;
        for (char *b = strtok_r(bk, ",", &save); b; b = strtok_r(NULL, ",", &save)) {
            fvsearch_kind kind;
            if (fvsearch_kind_parse(b, &kind)) continue;
            long rss0 = rss_kb();
            double t0 = now_ms();
            fvsearch *s = fvsearch_create(kind, err, sizeof err);
            if (s) fvsearch_set_threads(s, threads);
            if (!s || (spill && fvsearch_spill(s, spill, err, sizeof err)) ||
                fvsearch_add(s, n, ids, gal, err, sizeof err)) {
                fprintf(stderr, "search_bench: %s\n", err);
                return 1;
            }
            double build = now_ms() - t0;
            long rss1 = rss_kb();
            int agree = 0;
            for (int q = 0; q < nq; q++) {
                fvsearch_hit h[10];
                size_t nh = 0;
                double a = now_ms();
                fvsearch_query(s, queries + (size_t)q * D, 10, h, &nh, err, sizeof err);
                lat[q] = now_ms() - a;
                int64_t top = nh ? h[0].id : -1;
                if (kind == FVSEARCH_EXACT) truth[q] = top;
                agree += (have_truth || kind == FVSEARCH_EXACT) && top == truth[q];
            }
            if (kind == FVSEARCH_EXACT) have_truth = 1;
            qsort(lat, (size_t)nq, sizeof *lat, cmp_double);
            printf("{\"templates\": %zu, \"backend\": \"%s\", \"build_s\": %.3f, "
                   "\"memory_bytes\": %zu, \"rss_growth_bytes\": %ld, \"query_ms_median\": %.4f, "
                   "\"query_ms_p95\": %.4f, \"recall_at_1\": %s%.4f, \"queries\": %d, "
                   "\"load_1min\": %.2f}\n",
                   n, b, build / 1e3, fvsearch_memory(s), (rss1 - rss0) * 1024L, lat[nq / 2],
                   lat[(nq * 95) / 100], have_truth ? "" : "-", agree / (double)nq, nq, load1());
            fflush(stdout);
            fvsearch_destroy(s);
        }
        free(gal);
        free(ids);
        free(truth);
        free(lat);
    }
    free(real);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "embed") == 0) return cmd_embed(argv[2], argv[3]);
    if (argc >= 5 && argc <= 8 && strcmp(argv[1], "run") == 0)
        return cmd_run(argv[2], argv[3], argv[4], argc >= 6 ? atoi(argv[5]) : 200,
                       argc >= 7 ? atoi(argv[6]) : 1, argc == 8 ? argv[7] : NULL);
    fprintf(stderr,
            "usage: search_bench embed LIST OUT.f32 | run EMB.f32 SIZES BACKENDS [Q [T [DIR]]]\n");
    return 2;
}
