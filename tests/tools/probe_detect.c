/*
 * probe_detect: runs the MMOD detector on one image and prints the boxes
 * and scores as JSON, for the Python parity test against dlib and for
 * timing.
 *
 *   probe_detect [--model FILE] [--upsample N] [--threads N] [--repeat N]
 *                [--precision exact|fast] (--raw W H FILE.rgb | IMAGE)
 *
 * --raw reads packed RGB8 bytes (so the test can feed dlib and us the very
 * same pixels, whatever the decoders do); IMAGE is decoded by the library.
 * --repeat runs the detection N times and reports every time and the
 * median in milliseconds.  Exit status 0 on success, 1 on a library error
 * (the message on stderr), 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detect/mmod.h"
#include "core/fvi.h"
#include "core/workers.h"

static int usage(void) {
    fprintf(stderr, "usage: probe_detect [--model FILE] [--upsample N] [--threads N] "
                    "[--repeat N] [--precision exact|fast] (--raw W H FILE.rgb | IMAGE)\n");
    return 2;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Reads exactly n bytes of a file into a malloc'd buffer. */
static unsigned char *read_exact(const char *path, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = malloc(n ? n : 1);
    if (buf && fread(buf, 1, n, f) != n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    const char *model = NULL, *raw = NULL, *image = NULL;
    int upsample = 0, threads = 1, repeat = 1, rw = 0, rh = 0, precision = FV_PRECISION_EXACT;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--upsample") && i + 1 < argc)
            upsample = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
            const char *v = argv[++i];
            if (strcmp(v, "exact") && strcmp(v, "fast")) return usage();
            precision = strcmp(v, "fast") ? FV_PRECISION_EXACT : FV_PRECISION_FAST;
        } else if (!strcmp(argv[i], "--raw") && i + 3 < argc) {
            rw = atoi(argv[++i]);
            rh = atoi(argv[++i]);
            raw = argv[++i];
        } else if (argv[i][0] != '-' && !image)
            image = argv[i];
        else
            return usage();
    }
    if ((!raw && !image) || threads < 1 || repeat < 1) return usage();
    char path[4096];
    if (!model) {
        const char *dir = getenv("FACEVERIFY_MODELS");
        snprintf(path, sizeof path, "%s/mmod_human_face_detector.dat", dir ? dir : "models");
        model = path;
    }
    char err[512];
    fv_image *img = NULL;
    fv_status st;
    if (raw) {
        if (rw <= 0 || rh <= 0) return usage();
        unsigned char *px = read_exact(raw, (size_t)rw * (size_t)rh * 3);
        if (!px) {
            fprintf(stderr, "cannot read %d x %d x 3 bytes from %s\n", rw, rh, raw);
            return 1;
        }
        st = fv_image_from_rgb(px, rw, rh, &img);
        free(px);
        if (st != FV_OK) {
            fprintf(stderr, "fv_image_from_rgb: %s\n", fv_strerror(st));
            return 1;
        }
    } else {
        st = fv_image_load(image, NULL, &img, err, sizeof err);
        if (st != FV_OK) {
            fprintf(stderr, "%s: %s\n", image, err);
            return 1;
        }
    }
    fvi_mmod *det = NULL;
    st = fvi_mmod_load(model, &det, err, sizeof err);
    if (st != FV_OK) {
        fprintf(stderr, "%s\n", err);
        fv_image_destroy(img);
        return 1;
    }
    fvi_workers *pool = threads > 1 ? fvi_workers_create(threads) : NULL;
    double *ms = calloc((size_t)repeat, sizeof *ms);
    fv_face *faces = NULL;
    size_t n = 0;
    for (int r = 0; r < repeat && st == FV_OK; r++) {
        fvi_free(faces);
        faces = NULL;
        double t0 = fvi_now_ms();
        st = fvi_mmod_detect(det, img, upsample, precision, pool, &faces, &n, err, sizeof err);
        ms[r] = fvi_now_ms() - t0;
    }
    if (st != FV_OK) {
        fprintf(stderr, "detect: %s (%s)\n", err, fv_status_name(st));
    } else {
        printf("{\"width\": %d, \"height\": %d, \"upsample\": %d, \"threads\": %d, "
               "\"precision\": \"%s\", \"ms\": [",
               img->width, img->height, upsample, threads,
               precision == FV_PRECISION_FAST ? "fast" : "exact");
        for (int r = 0; r < repeat; r++) printf("%s%.3f", r ? ", " : "", ms[r]);
        qsort(ms, (size_t)repeat, sizeof *ms, cmp_double);
        printf("], \"median_ms\": %.3f, \"faces\": [", ms[repeat / 2]);
        for (size_t i = 0; i < n; i++)
            printf("%s{\"left\": %.1f, \"top\": %.1f, \"right\": %.1f, \"bottom\": %.1f, "
                   "\"score\": %.6f}",
                   i ? ", " : "", faces[i].left, faces[i].top, faces[i].right, faces[i].bottom,
                   faces[i].score);
        printf("]}\n");
    }
    fvi_free(faces);
    free(ms);
    fvi_workers_destroy(pool);
    fvi_mmod_destroy(det);
    fv_image_destroy(img);
    return st == FV_OK ? 0 : 1;
}
