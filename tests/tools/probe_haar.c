/*
 * probe_haar.c: runs the Haar detector on images for the parity tests and
 * benchmarks, printing one JSON line per image:
 *   {"path": P, "width": W, "height": H, "ms": T, "rects": [[x,y,w,h,n], ...]}
 * Options: --cascade PATH (default: haarcascade_frontalface_default.xml in
 * $FACEVERIFY_CASCADES or /usr/share/opencv4/haarcascades), --scale F,
 * --min-neighbors N, --min-size N, --max-size N, --threads N,
 * --dump-gray FILE.pgm (grey of the last image, as the detector sees it),
 * --resize W H FILE.pgm (the grey resized as each pyramid level is).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detect/haar.h"
#include "core/fvi.h"
#include "core/workers.h"

static int write_pgm(const char *path, const unsigned char *g, int w, int h) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fprintf(f, "P5\n%d %d\n255\n", w, h);
    size_t n = (size_t)w * (size_t)h;
    int ok = fwrite(g, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *cascade = NULL, *dump = NULL, *rs_path = NULL;
    int rs_w = 0, rs_h = 0, threads = 1;
    fvi_haar_params p = {1.1, 3, 0, 0};
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (!strcmp(argv[i], "--cascade") && i + 1 < argc)
            cascade = argv[++i];
        else if (!strcmp(argv[i], "--scale") && i + 1 < argc)
            p.scale_factor = atof(argv[++i]);
        else if (!strcmp(argv[i], "--min-neighbors") && i + 1 < argc)
            p.min_neighbors = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--min-size") && i + 1 < argc)
            p.min_size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-size") && i + 1 < argc)
            p.max_size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dump-gray") && i + 1 < argc)
            dump = argv[++i];
        else if (!strcmp(argv[i], "--resize") && i + 3 < argc) {
            rs_w = atoi(argv[++i]);
            rs_h = atoi(argv[++i]);
            rs_path = argv[++i];
        } else {
            fprintf(stderr, "probe_haar: bad option %s\n", argv[i]);
            return 2;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "usage: probe_haar [options] IMAGE...\n");
        return 2;
    }
    char path[4096];
    if (!cascade) {
        const char *dir = getenv("FACEVERIFY_CASCADES");
        snprintf(path, sizeof path, "%s/haarcascade_frontalface_default.xml",
                 dir && *dir ? dir : "/usr/share/opencv4/haarcascades");
        cascade = path;
    }
    char err[256];
    fvi_haar *h = NULL;
    fv_status st = fvi_haar_load(cascade, &h, err, sizeof err);
    if (st != FV_OK) {
        fprintf(stderr, "probe_haar: %s\n", err);
        return 1;
    }
    fvi_workers *pool = threads > 1 ? fvi_workers_create(threads) : NULL;
    int rc = 0;
    for (; i < argc; i++) {
        fv_image *img = NULL;
        st = fv_image_load(argv[i], NULL, &img, err, sizeof err);
        if (st != FV_OK) {
            fprintf(stderr, "probe_haar: %s: %s\n", argv[i], err);
            rc = 1;
            continue;
        }
        size_t px = (size_t)img->width * (size_t)img->height;
        unsigned char *g = malloc(px);
        if (!g) return 1;
        fvi_haar_gray(img, g);
        if (dump && write_pgm(dump, g, img->width, img->height) != 0) rc = 1;
        if (rs_path) {
            unsigned char *d = malloc((size_t)rs_w * (size_t)rs_h);
            if (!d) return 1;
            fvi_haar_resize(g, img->width, img->height, d, rs_w, rs_h);
            if (write_pgm(rs_path, d, rs_w, rs_h) != 0) rc = 1;
            free(d);
        }
        fvi_haar_rect *r = NULL;
        size_t n = 0;
        double t0 = fvi_now_ms();
        st = fvi_haar_detect_gray(h, g, img->width, img->height, &p, pool, &r, &n, err, sizeof err);
        double ms = fvi_now_ms() - t0;
        if (st != FV_OK) {
            fprintf(stderr, "probe_haar: %s: %s\n", argv[i], err);
            rc = 1;
        } else {
            printf("{\"path\": \"%s\", \"width\": %d, \"height\": %d, \"ms\": %.3f, \"rects\": [",
                   argv[i], img->width, img->height, ms);
            for (size_t k = 0; k < n; k++)
                printf("%s[%d, %d, %d, %d, %d]", k ? ", " : "", r[k].x, r[k].y, r[k].w, r[k].h,
                       r[k].neighbors);
            printf("]}\n");
        }
        fvi_free(r);
        free(g);
        fv_image_destroy(img);
    }
    fvi_workers_destroy(pool);
    fvi_haar_destroy(h);
    return rc;
}
