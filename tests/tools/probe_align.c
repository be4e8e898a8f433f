/*
 * probe_align.c: a small CLI over the align module for the dlib parity
 * test (tests/py/test_align_parity.py) and for timing.
 *
 * An IMAGE argument is either a file path (decoded by fv_image_load) or
 * `--raw W H FILE` naming packed 8-bit RGB pixels, which the parity test
 * prefers: both sides then see the very same pixels, with no JPEG decoder
 * difference in between.
 *
 *   probe_align landmarks MODEL IMAGE L T R B [L T R B ...]
 *       boxes in fv_face convention (right/bottom exclusive); prints one
 *       line {"points": [[x,y], ...]} per box
 *   probe_align chip IMAGE OUT.rgb SIZE PADDING x0 y0 .. x4 y4 [x0 .. y4 ...]
 *       writes SIZE*SIZE*3 bytes per landmark set, concatenated
 *   probe_align time MODEL IMAGE L T R B [N]
 *       runs both N times (default 200); prints median microseconds
 *
 * Exit status: 0 ok, 1 library error (message on stderr), 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "align/align.h"
#include "faceverify.h"
#include "core/fvi.h"

static int usage(void) {
    fprintf(stderr, "usage: probe_align landmarks MODEL IMAGE L T R B [L T R B ...]\n"
                    "       probe_align chip IMAGE OUT.rgb SIZE PADDING x0 y0 .. x4 y4 [...]\n"
                    "       probe_align time MODEL IMAGE L T R B [N]\n"
                    "IMAGE: a path, or --raw W H FILE (packed RGB)\n");
    return 2;
}

/* Parses IMAGE at argv[*i], advancing *i; returns 0 and a new image. */
static int load_image(int argc, char **argv, int *i, fv_image **img) {
    char err[256] = "";
    if (*i < argc && strcmp(argv[*i], "--raw") == 0) {
        if (*i + 3 >= argc) return -1;
        int w = atoi(argv[*i + 1]), h = atoi(argv[*i + 2]);
        const char *path = argv[*i + 3];
        *i += 4;
        if (w <= 0 || h <= 0 || w > 100000 || h > 100000) return -1;
        size_t n = (size_t)w * (size_t)h * 3;
        unsigned char *buf = malloc(n);
        FILE *f = fopen(path, "rb");
        if (!buf || !f || fread(buf, 1, n, f) != n) {
            fprintf(stderr, "cannot read %zu bytes from %s\n", n, path);
            free(buf);
            if (f) fclose(f);
            return -1;
        }
        fclose(f);
        fv_status st = fv_image_from_rgb(buf, w, h, img);
        free(buf);
        if (st != FV_OK) fprintf(stderr, "fv_image_from_rgb: %s\n", fv_strerror(st));
        return st == FV_OK ? 0 : -1;
    }
    if (*i >= argc) return -1;
    fv_status st = fv_image_load(argv[*i], NULL, img, err, sizeof err);
    (*i)++;
    if (st != FV_OK) fprintf(stderr, "fv_image_load: %s\n", err);
    return st == FV_OK ? 0 : -1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    const char *cmd = argv[1];
    char err[256] = "";
    int rc = 1;
    fv_image *img = NULL;
    fvi_shape_predictor *sp = NULL;

    if (strcmp(cmd, "landmarks") == 0 || strcmp(cmd, "time") == 0) {
        if (argc < 4) return usage();
        int i = 3;
        if (load_image(argc, argv, &i, &img)) return img ? 1 : usage();
        if (argc - i < 4) goto bad_usage;
        fv_face box = {0};
        box.left = strtof(argv[i], NULL);
        box.top = strtof(argv[i + 1], NULL);
        box.right = strtof(argv[i + 2], NULL);
        box.bottom = strtof(argv[i + 3], NULL);
        int n = (argc - i > 4) ? atoi(argv[i + 4]) : 200;
        if (n < 1) n = 1;
        fv_status st = fvi_shape_predictor_load(argv[2], &sp, err, sizeof err);
        if (st != FV_OK) {
            fprintf(stderr, "load: %s\n", err);
            goto done;
        }
        fv_point pts[64];
        size_t np = fvi_shape_predictor_num_parts(sp);
        if (np > 64) {
            fprintf(stderr, "model has %zu parts; probe handles 64\n", np);
            goto done;
        }
        if (strcmp(cmd, "landmarks") == 0) {
            if ((argc - i) % 4 != 0) goto bad_usage;
            for (int j = i; j < argc; j += 4) {
                box.left = strtof(argv[j], NULL);
                box.top = strtof(argv[j + 1], NULL);
                box.right = strtof(argv[j + 2], NULL);
                box.bottom = strtof(argv[j + 3], NULL);
                st = fvi_shape_predict(sp, img, &box, pts);
                if (st != FV_OK) {
                    fprintf(stderr, "predict: %s\n", fv_strerror(st));
                    goto done;
                }
                printf("{\"points\": [");
                for (size_t k = 0; k < np; k++)
                    printf("%s[%.3f, %.3f]", k ? ", " : "", (double)pts[k].x, (double)pts[k].y);
                printf("]}\n");
            }
            rc = 0;
            goto done;
        }
        /* time */
        double *tl = malloc(sizeof(double) * (size_t)n), *tc = malloc(sizeof(double) * (size_t)n);
        unsigned char *chip = malloc(FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
        if (!tl || !tc || !chip || np != 5) {
            free(tl), free(tc), free(chip);
            goto done;
        }
        for (int k = 0; k < n && st == FV_OK; k++) {
            double t0 = fvi_now_ms();
            st = fvi_shape_predict(sp, img, &box, pts);
            double t1 = fvi_now_ms();
            if (st == FV_OK) st = fvi_face_chip(img, pts, FV_CHIP_SIZE, 0.25, chip);
            double t2 = fvi_now_ms();
            tl[k] = (t1 - t0) * 1000.0;
            tc[k] = (t2 - t1) * 1000.0;
        }
        if (st == FV_OK) {
            printf("{\"landmarks_us\": %.1f, \"chip_us\": %.1f, \"n\": %d}\n", median(tl, n),
                   median(tc, n), n);
            rc = 0;
        } else {
            fprintf(stderr, "time: %s\n", fv_strerror(st));
        }
        free(tl), free(tc), free(chip);
        goto done;
    }
    if (strcmp(cmd, "chip") == 0) {
        int i = 2;
        if (load_image(argc, argv, &i, &img)) return img ? 1 : usage();
        if (argc - i < 13 || (argc - i - 3) % 10 != 0) goto bad_usage;
        const char *outp = argv[i];
        int size = atoi(argv[i + 1]);
        double pad = strtod(argv[i + 2], NULL);
        if (size < 2 || size > 4096) goto bad_usage;
        size_t bytes = (size_t)size * (size_t)size * 3;
        unsigned char *chip = malloc(bytes);
        FILE *f = fopen(outp, "wb");
        if (!chip || !f) {
            fprintf(stderr, "cannot write %s\n", outp);
            free(chip);
            if (f) fclose(f);
            goto done;
        }
        rc = 0;
        for (int j = i + 3; j < argc && rc == 0; j += 10) {
            fv_point lm[5];
            for (int k = 0; k < 5; k++) {
                lm[k].x = strtof(argv[j + 2 * k], NULL);
                lm[k].y = strtof(argv[j + 2 * k + 1], NULL);
            }
            fv_status st = fvi_face_chip(img, lm, size, pad, chip);
            if (st != FV_OK) {
                fprintf(stderr, "chip: %s\n", fv_strerror(st));
                rc = 1;
            } else if (fwrite(chip, 1, bytes, f) != bytes) {
                fprintf(stderr, "cannot write %s\n", outp);
                rc = 1;
            }
        }
        if (fclose(f) != 0) rc = 1;
        free(chip);
        goto done;
    }
bad_usage:
    rc = usage();
done:
    fvi_shape_predictor_destroy(sp);
    fv_image_destroy(img);
    return rc;
}
