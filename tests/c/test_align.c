/*
 * test_align.c: unit tests of the align module (src/align/).
 *
 * Most tests build their own tiny shape_predictor files with a small dlib
 * serialization writer, so the parser and the tree walk are checked with
 * known answers and need no data.  The real 5-point model (from
 * FACEVERIFY_MODELS, default <repo>/models) is used for loading, for
 * truncation / byte-flip robustness and for out-of-memory paths; those
 * tests skip when the file is absent, unless FACEVERIFY_REQUIRE_DATA=1.
 * Chips are checked on synthetic gradient images whose value at every
 * sampled point is known in closed form.  Parity with dlib itself is in
 * tests/py/test_align_parity.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "align/align.h"
#include "align/align_internal.h"
#include "core/fvi.h"

/* ------------------------------------------------------------ writer */

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

/* dlib integer: control byte (size | 0x80 if negative), LE magnitude. */
static void put_int(buf *b, int64_t v) {
    unsigned char tmp[9];
    uint64_t mag = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    unsigned n = 0;
    while (mag) {
        tmp[1 + n++] = (unsigned char)(mag & 0xFF);
        mag >>= 8;
    }
    tmp[0] = (unsigned char)(n | (v < 0 ? 0x80 : 0));
    put(b, tmp, 1 + n);
}

/* dlib float: int64 mantissa, int16 exponent (value = m * 2^e). */
static void put_float(buf *b, float f) {
    if (isnan(f)) {
        put_int(b, 0);
        put_int(b, 32002);
        return;
    }
    int e;
    double fr = frexp((double)f, &e);
    int64_t m = (int64_t)ldexp(fr, 24);
    put_int(b, m);
    put_int(b, e - 24);
}

/* Options for the synthetic 2-part model, to make it invalid on purpose. */
typedef struct synth {
    int version;
    int64_t split_idx2; /* feature index of the split's second pixel */
    int extra_leaf;     /* write one more leaf than splits+1 */
    float thresh;
    int64_t anchor1; /* anchor of feature 1 */
    int ndeltas;     /* deltas written for the cascade (normally 2) */
} synth;

static synth synth_ok(void) {
    return (synth){1, 1, 0, 10.0f, 1, 2};
}

/* A model with 2 parts at (0.25, 0.5) and (0.75, 0.5) of the box, one
 * cascade of one depth-1 tree: feature 0 is the pixel at part 0, feature 1
 * the pixel at part 1; if f0 - f1 > thresh both parts move +0.1 box widths
 * in x, else -0.1. */
static unsigned char *synth_model(synth s, size_t *len) {
    buf b = {0};
    put_int(&b, s.version);
    put_int(&b, -4), put_int(&b, -1); /* initial_shape 4x1 */
    const float init[4] = {0.25f, 0.5f, 0.75f, 0.5f};
    for (int i = 0; i < 4; i++) put_float(&b, init[i]);
    put_int(&b, 1); /* cascades */
    put_int(&b, 1); /* trees */
    put_int(&b, 1); /* splits */
    put_int(&b, 0), put_int(&b, s.split_idx2), put_float(&b, s.thresh);
    put_int(&b, 2 + s.extra_leaf); /* leaves */
    for (int l = 0; l < 2 + s.extra_leaf; l++) {
        put_int(&b, -4), put_int(&b, -1);
        const float dx = l == 0 ? 0.1f : -0.1f;
        put_float(&b, dx), put_float(&b, 0), put_float(&b, dx), put_float(&b, 0);
    }
    put_int(&b, 1), put_int(&b, 2), put_int(&b, 0), put_int(&b, s.anchor1); /* anchor_idx */
    put_int(&b, 1), put_int(&b, s.ndeltas);
    for (int i = 0; i < s.ndeltas; i++) put_float(&b, 0), put_float(&b, 0);
    *len = b.n;
    return b.p;
}

/* ------------------------------------------------------------ helpers */

static fv_image *make_image(int w, int h) {
    fv_image *img = calloc(1, sizeof *img);
    assert_non_null(img);
    img->width = w;
    img->height = h;
    img->rgb = calloc((size_t)w * (size_t)h, 3);
    assert_non_null(img->rgb);
    return img;
}

static void free_image(fv_image *img) {
    if (!img) return;
    free(img->rgb);
    free(img);
}

/* Reads the real model into memory, or skips (fails under
 * FACEVERIFY_REQUIRE_DATA=1) when it is absent. */
static unsigned char *real_model(size_t *len, char *path, size_t pathlen) {
    const char *dir = getenv("FACEVERIFY_MODELS");
    char tmp[1024];
    const char *src = getenv("FACEVERIFY_SOURCE");
    if ((!dir || !*dir) && src && *src) {
        snprintf(tmp, sizeof tmp, "%s/models", src);
        dir = tmp;
    } else if (!dir || !*dir) {
        /* __FILE__ is <repo>/tests/c/test_align.c (absolute in CMake). */
        snprintf(tmp, sizeof tmp, "%s", __FILE__);
        char *s = strstr(tmp, "tests/c/test_align.c");
        if (s) *s = 0;
        snprintf(tmp + strlen(tmp), sizeof tmp - strlen(tmp), "%smodels", s == tmp ? "./" : "");
        dir = tmp;
    }
    snprintf(path, pathlen, "%s/shape_predictor_5_face_landmarks.dat", dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        const char *req = getenv("FACEVERIFY_REQUIRE_DATA");
        if (req && strcmp(req, "1") == 0) fail_msg("model %s missing", path);
        print_message("skipping: model %s missing\n", path);
        skip();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    assert_true(n > 0);
    unsigned char *p = malloc((size_t)n);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

/* ------------------------------------------------------------ loading */

static void test_synthetic_model_predicts(void **state) {
    (void)state;
    size_t len;
    unsigned char *m = synth_model(synth_ok(), &len);
    fvi_shape_predictor *sp = NULL;
    char err[256];
    assert_int_equal(fvi_shape_predictor_load_mem(m, len, &sp, err, sizeof err), FV_OK);
    assert_int_equal(fvi_shape_predictor_num_parts(sp), 2);

    /* Left half bright, right half dark: f0 - f1 = 200 > 10, move +0.1. */
    fv_image *img = make_image(120, 120);
    for (int y = 0; y < 120; y++)
        for (int x = 0; x < 60; x++) memset(img->rgb + ((size_t)y * 120 + x) * 3, 200, 3);
    /* dlib rectangle (10, 10, 110, 110): width 100 in normalised units. */
    fv_face box = {.left = 10, .top = 10, .right = 111, .bottom = 111};
    fv_point pts[2];
    assert_int_equal(fvi_shape_predict(sp, img, &box, pts), FV_OK);
    assert_true(pts[0].x == 45 && pts[0].y == 60); /* 10 + 100*0.35 */
    assert_true(pts[1].x == 95 && pts[1].y == 60);

    /* Mirror the image: the other leaf. */
    for (int y = 0; y < 120; y++)
        for (int x = 0; x < 120; x++)
            memset(img->rgb + ((size_t)y * 120 + x) * 3, x < 60 ? 0 : 200, 3);
    assert_int_equal(fvi_shape_predict(sp, img, &box, pts), FV_OK);
    assert_true(pts[0].x == 25 && pts[1].x == 75);

    /* Intensity is the integer mean of r, g, b: (255 + 0 + 1) / 3 = 85. */
    for (int y = 0; y < 120; y++)
        for (int x = 0; x < 120; x++) {
            unsigned char *p = img->rgb + ((size_t)y * 120 + x) * 3;
            p[0] = x < 60 ? 255 : 0, p[1] = 0, p[2] = x < 60 ? 1 : 0;
        }
    assert_int_equal(fvi_shape_predict(sp, img, &box, pts), FV_OK);
    assert_true(pts[0].x == 45); /* 85 - 0 > 10 */

    /* Box entirely outside: every feature reads 0, 0 - 0 <= 10: right leaf. */
    fv_face far = {.left = 1000, .top = 1000, .right = 1101, .bottom = 1101};
    assert_int_equal(fvi_shape_predict(sp, img, &far, pts), FV_OK);
    assert_true(pts[0].x == 1015 && pts[0].y == 1050);

    /* Fractional boxes round half up like dlib's drectangle -> rectangle. */
    fv_face frac = {.left = 9.5f, .top = 9.6f, .right = 110.6f, .bottom = 111.0f};
    fv_point p2[2];
    assert_int_equal(fvi_shape_predict(sp, img, &frac, p2), FV_OK);
    assert_true(p2[0].x == 45 && p2[0].y == 60);

    /* Invalid boxes and arguments. */
    fv_face bad = box;
    bad.left = NAN;
    assert_int_equal(fvi_shape_predict(sp, img, &bad, pts), FV_E_INVALID_ARGUMENT);
    bad = box;
    bad.right = 1e30f;
    assert_int_equal(fvi_shape_predict(sp, img, &bad, pts), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_shape_predict(NULL, img, &box, pts), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_shape_predict(sp, NULL, &box, pts), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_shape_predict(sp, img, NULL, pts), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_shape_predict(sp, img, &box, NULL), FV_E_INVALID_ARGUMENT);

    /* Allocation failure in predict. */
    fvi_alloc_fail_after(0);
    assert_int_equal(fvi_shape_predict(sp, img, &box, pts), FV_E_NO_MEMORY);
    fvi_alloc_fail_after(-1);

    free_image(img);
    fvi_shape_predictor_destroy(sp);
    fvi_shape_predictor_destroy(NULL);
    free(m);
}

static void expect_corrupt(synth s, const char *what) {
    size_t len;
    unsigned char *m = synth_model(s, &len);
    fvi_shape_predictor *sp = (fvi_shape_predictor *)m; /* must be reset */
    char err[256] = "";
    fv_status st = fvi_shape_predictor_load_mem(m, len, &sp, err, sizeof err);
    if (st != FV_E_MODEL_CORRUPT) fail_msg("%s: status %d (%s)", what, st, err);
    assert_null(sp);
    assert_true(strlen(err) > 0);
    free(m);
}

static void test_synthetic_model_invalid(void **state) {
    (void)state;
    synth s;
    s = synth_ok(), s.version = 2, expect_corrupt(s, "version");
    s = synth_ok(), s.split_idx2 = 2, expect_corrupt(s, "split index out of range");
    s = synth_ok(), s.extra_leaf = 1, expect_corrupt(s, "leaf count");
    s = synth_ok(), s.thresh = NAN, expect_corrupt(s, "NaN threshold");
    s = synth_ok(), s.anchor1 = 2, expect_corrupt(s, "anchor out of range");
    s = synth_ok(), s.ndeltas = 1, expect_corrupt(s, "delta count");
    s = synth_ok(), s.ndeltas = 3, expect_corrupt(s, "delta count");

    /* Every truncation of the small model fails cleanly. */
    size_t len;
    unsigned char *m = synth_model(synth_ok(), &len);
    for (size_t n = 0; n < len; n++) {
        fvi_shape_predictor *sp = NULL;
        unsigned char *copy = malloc(n ? n : 1);
        memcpy(copy, m, n);
        assert_int_equal(fvi_shape_predictor_load_mem(copy, n, &sp, NULL, 0), FV_E_MODEL_CORRUPT);
        assert_null(sp);
        free(copy);
    }
    /* Trailing bytes are ignored, as dlib does. */
    unsigned char *longer = malloc(len + 7);
    memcpy(longer, m, len);
    memset(longer + len, 0x55, 7);
    fvi_shape_predictor *sp = NULL;
    assert_int_equal(fvi_shape_predictor_load_mem(longer, len + 7, &sp, NULL, 0), FV_OK);
    fvi_shape_predictor_destroy(sp);
    free(longer);

    /* Every allocation failure of a load returns FV_E_NO_MEMORY, no leak. */
    int ok = 0;
    for (long k = 0; k < 50 && !ok; k++) {
        sp = NULL;
        fvi_alloc_fail_after(k);
        fv_status st = fvi_shape_predictor_load_mem(m, len, &sp, NULL, 0);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK) {
            ok = 1;
            fvi_shape_predictor_destroy(sp);
        } else {
            assert_int_equal(st, FV_E_NO_MEMORY);
            assert_null(sp);
        }
    }
    assert_true(ok);
    assert_int_equal(fvi_shape_predictor_load_mem(NULL, 0, &sp, NULL, 0), FV_E_MODEL_CORRUPT);
    assert_int_equal(fvi_shape_predictor_load_mem(m, len, NULL, NULL, 0), FV_E_INVALID_ARGUMENT);
    free(m);
}

static void test_missing_file(void **state) {
    (void)state;
    fvi_shape_predictor *sp = NULL;
    char err[256] = "";
    assert_int_equal(fvi_shape_predictor_load("/nonexistent/dir/sp.dat", &sp, err, sizeof err),
                     FV_E_MODEL_MISSING);
    assert_null(sp);
    assert_non_null(strstr(err, "/nonexistent/dir/sp.dat"));
    /* a directory is unreadable, FV_E_IO, as for every file (test_files.c) */
    assert_int_equal(fvi_shape_predictor_load("/", &sp, err, sizeof err), FV_E_IO);
    assert_int_equal(fvi_shape_predictor_load(NULL, &sp, err, sizeof err), FV_E_INVALID_ARGUMENT);
}

static void test_real_model(void **state) {
    (void)state;
    char path[1100];
    size_t len;
    unsigned char *m = real_model(&len, path, sizeof path);
    fvi_shape_predictor *sp = NULL;
    char err[256] = "";
    assert_int_equal(fvi_shape_predictor_load(path, &sp, err, sizeof err), FV_OK);
    assert_int_equal(fvi_shape_predictor_num_parts(sp), 5);

    /* A plausible box on a flat grey image gives 5 points inside it. */
    fv_image *img = make_image(200, 200);
    memset(img->rgb, 128, 200 * 200 * 3);
    fv_face box = {.left = 50, .top = 50, .right = 151, .bottom = 151};
    fv_point pts[5];
    assert_int_equal(fvi_shape_predict(sp, img, &box, pts), FV_OK);
    for (int i = 0; i < 5; i++) {
        assert_true(pts[i].x >= 50 && pts[i].x <= 150 && pts[i].y >= 50 && pts[i].y <= 150);
        assert_true(pts[i].x == floorf(pts[i].x)); /* whole pixels, like dlib */
    }
    /* dlib's order: right eye outer/inner (image left side is the
     * subject's right), left eye outer/inner, nose. */
    assert_true(pts[0].x > pts[1].x && pts[3].x > pts[2].x && pts[4].y > pts[0].y);

    /* The same from memory, and the load path under allocation failure. */
    fvi_shape_predictor *sp2 = NULL;
    assert_int_equal(fvi_shape_predictor_load_mem(m, len, &sp2, err, sizeof err), FV_OK);
    fv_point pts2[5];
    assert_int_equal(fvi_shape_predict(sp2, img, &box, pts2), FV_OK);
    assert_memory_equal(pts, pts2, sizeof pts);
    fvi_shape_predictor_destroy(sp2);
    int ok = 0;
    for (long k = 0; k < 20 && !ok; k++) {
        sp2 = NULL;
        fvi_alloc_fail_after(k);
        fv_status st = fvi_shape_predictor_load(path, &sp2, err, sizeof err);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK) {
            ok = 1;
            fvi_shape_predictor_destroy(sp2);
        } else {
            assert_int_equal(st, FV_E_NO_MEMORY);
            assert_null(sp2);
        }
    }
    assert_true(ok);
    free_image(img);
    fvi_shape_predictor_destroy(sp);
    free(m);
}

static void test_real_model_truncated_and_flipped(void **state) {
    (void)state;
    char path[1100];
    size_t len;
    unsigned char *m = real_model(&len, path, sizeof path);
    unsigned char *copy = malloc(len);
    assert_non_null(copy);
    fvi_shape_predictor *sp = NULL;

    /* Truncations: every offset in the header region, then spread out. */
    size_t cuts[200];
    int nc = 0;
    for (size_t n = 0; n < 96; n++) cuts[nc++] = n;
    for (int i = 1; i <= 24; i++) cuts[nc++] = len / 25 * (size_t)i + (size_t)i * 7;
    cuts[nc++] = len - 1;
    for (int i = 0; i < nc; i++) {
        memcpy(copy, m, cuts[i]);
        fv_status st = fvi_shape_predictor_load_mem(copy, cuts[i], &sp, NULL, 0);
        if (st != FV_E_MODEL_CORRUPT) fail_msg("truncated at %zu: status %d", cuts[i], st);
        assert_null(sp);
    }

    /* Byte flips: either a clean failure or a model that still predicts
     * without touching memory it should not. */
    fv_image *img = make_image(64, 64);
    for (size_t i = 0; i < (size_t)64 * 64 * 3; i++) img->rgb[i] = (unsigned char)(i * 37);
    fv_face box = {.left = 8, .top = 8, .right = 56, .bottom = 56};
    srand(7);
    int loaded = 0, rejected = 0;
    for (int k = 0; k < 24; k++) {
        memcpy(copy, m, len);
        size_t off = k < 12 ? (size_t)(rand() % 128) : (size_t)rand() % len;
        copy[off] ^= (unsigned char)(1u << (rand() % 8));
        fv_status st = fvi_shape_predictor_load_mem(copy, len, &sp, NULL, 0);
        if (st == FV_OK) {
            fv_point pts[64];
            if (fvi_shape_predictor_num_parts(sp) <= 64)
                (void)fvi_shape_predict(sp, img, &box, pts);
            fvi_shape_predictor_destroy(sp);
            sp = NULL;
            loaded++;
        } else {
            assert_int_equal(st, FV_E_MODEL_CORRUPT);
            assert_null(sp);
            rejected++;
        }
    }
    print_message("byte flips: %d loaded, %d rejected\n", loaded, rejected);
    assert_true(rejected > 0);
    free_image(img);
    free(copy);
    free(m);
}

/* ------------------------------------------------------------ geometry */

static void test_similarity(void **state) {
    (void)state;
    /* to = 2 * R(30 deg) * from + (5, -3), exactly recovered. */
    const double from[10] = {0, 0, 10, 0, 0, 10, 10, 10, 3, 7};
    double to[10];
    const double a = 0.5235987755982988, s = 2; /* 30 degrees */
    for (int i = 0; i < 5; i++) {
        to[2 * i] = s * (cos(a) * from[2 * i] - sin(a) * from[2 * i + 1]) + 5;
        to[2 * i + 1] = s * (sin(a) * from[2 * i] + cos(a) * from[2 * i + 1]) - 3;
    }
    double m[4], b[2];
    fvi_align_similarity(from, to, 5, m, b);
    assert_true(fabs(m[0] - s * cos(a)) < 1e-12 && fabs(m[1] + s * sin(a)) < 1e-12);
    assert_true(fabs(m[2] - s * sin(a)) < 1e-12 && fabs(m[3] - s * cos(a)) < 1e-12);
    assert_true(fabs(b[0] - 5) < 1e-12 && fabs(b[1] + 3) < 1e-12);

    /* A mirrored target still gets a proper rotation (det > 0). */
    double mir[10];
    for (int i = 0; i < 5; i++) mir[2 * i] = -from[2 * i], mir[2 * i + 1] = from[2 * i + 1];
    fvi_align_similarity(from, mir, 5, m, b);
    assert_true(m[0] * m[3] - m[1] * m[2] >= 0);

    /* One point: identity, as dlib's find_tform_between_shapes. */
    const float f1[2] = {1, 2}, t1[2] = {5, 9};
    fvi_align_similarity_f(f1, t1, 1, m, b);
    assert_true(m[0] == 1 && m[1] == 0 && m[2] == 0 && m[3] == 1 && b[0] == 0 && b[1] == 0);
}

/* ------------------------------------------------------------ chips */

static const double TPL[5][2] = {
    {0.8595674595992, 0.2134981538014}, {0.6460604764104, 0.2289674387677},
    {0.1205750620789, 0.2137274526848}, {0.3340850613712, 0.2290642403242},
    {0.4901123135679, 0.6277975316475},
};

/* Landmarks: the padded chip template (size 150, padding 0.25) under
 * x -> s R(a) x + (tx, ty). */
static void place_template(double s, double a, double tx, double ty, fv_point *lm) {
    for (int i = 0; i < 5; i++) {
        const double x = (0.25 + TPL[i][0]) / 1.5 * 150, y = (0.25 + TPL[i][1]) / 1.5 * 150;
        lm[i].x = (float)(s * (cos(a) * x - sin(a) * y) + tx);
        lm[i].y = (float)(s * (sin(a) * x + cos(a) * y) + ty);
    }
}

static void test_chip_known_transform(void **state) {
    (void)state;
    /* R = x, G = y, B = 77: bilinear interpolation of a linear ramp is the
     * ramp, so each chip value must be the truncated sample position. */
    fv_image *img = make_image(256, 256);
    for (int y = 0; y < 256; y++)
        for (int x = 0; x < 256; x++) {
            unsigned char *p = img->rgb + ((size_t)y * 256 + x) * 3;
            p[0] = (unsigned char)x, p[1] = (unsigned char)y, p[2] = 77;
        }
    unsigned char chip[150 * 150 * 3];
    fv_point lm[5];
    const double a = 0.3, tx = 60, ty = 40;
    place_template(1.0, a, tx, ty, lm);
    assert_int_equal(fvi_face_chip(img, lm, 150, 0.25, chip), FV_OK);
    /* Scale 1: chip pixel (c, r) samples centre + R(a) (c - 74.5, r - 74.5),
     * the centre being where the chip's (75, 75) maps. */
    const double cx = cos(a) * 75 - sin(a) * 75 + tx, cy = sin(a) * 75 + cos(a) * 75 + ty;
    double worst = 0;
    for (int r = 0; r < 150; r++)
        for (int c = 0; c < 150; c++) {
            const double dx = c - 74.5, dy = r - 74.5;
            const double X = cx + cos(a) * dx - sin(a) * dy, Y = cy + sin(a) * dx + cos(a) * dy;
            const unsigned char *p = chip + ((size_t)r * 150 + c) * 3;
            worst = fmax(worst, fabs(p[0] - floor(X)));
            worst = fmax(worst, fabs(p[1] - floor(Y)));
            assert_int_equal(p[2], 77);
        }
    assert_true(worst <= 1.0);

    /* Unrotated, unscaled, integer offset: a plain copy (dlib's fast path
     * or bilinear at whole-pixel positions, either way within 1). */
    place_template(1.0, 0.0, 30, 50, lm);
    assert_int_equal(fvi_face_chip(img, lm, 150, 0.25, chip), FV_OK);
    for (int r = 0; r < 150; r += 7)
        for (int c = 0; c < 150; c += 7) {
            const unsigned char *p = chip + ((size_t)r * 150 + c) * 3;
            assert_true(abs(p[0] - (30 + c)) <= 1 && abs(p[1] - (50 + r)) <= 1);
        }

    /* Partly outside the image: those pixels are black. */
    place_template(1.0, 0.0, -100, -100, lm);
    assert_int_equal(fvi_face_chip(img, lm, 150, 0.25, chip), FV_OK);
    assert_true(chip[0] == 0 && chip[1] == 0 && chip[2] == 0);
    const unsigned char *last = chip + ((size_t)149 * 150 + 149) * 3;
    assert_true(last[2] == 77 && abs(last[0] - 49) <= 1);

    /* Large face (scale 4): goes through the pyramid; a linear ramp stays
     * close to linear (dlib's pyramid shifts by a fraction of a pixel). */
    fv_image *big = make_image(1024, 1024);
    for (int y = 0; y < 1024; y++)
        for (int x = 0; x < 1024; x++) {
            unsigned char *p = big->rgb + ((size_t)y * 1024 + x) * 3;
            p[0] = (unsigned char)(x / 4), p[1] = (unsigned char)(y / 4), p[2] = 200;
        }
    place_template(4.0, 0.0, 200, 180, lm);
    assert_int_equal(fvi_face_chip(big, lm, 150, 0.25, chip), FV_OK);
    for (int r = 5; r < 145; r += 10)
        for (int c = 5; c < 145; c += 10) {
            const unsigned char *p = chip + ((size_t)r * 150 + c) * 3;
            const double X = 200 + 4 * (c + 0.5), Y = 180 + 4 * (r + 0.5);
            assert_true(fabs(p[0] - X / 4) <= 2.5 && fabs(p[1] - Y / 4) <= 2.5);
            assert_true(abs(p[2] - 200) <= 1);
        }
    /* ... and its allocations fail cleanly. */
    for (long k = 0; k < 3; k++) {
        fvi_alloc_fail_after(k);
        fv_status st = fvi_face_chip(big, lm, 150, 0.25, chip);
        fvi_alloc_fail_after(-1);
        assert_true(st == FV_E_NO_MEMORY || st == FV_OK);
        if (k == 0) assert_int_equal(st, FV_E_NO_MEMORY);
    }
    free_image(big);

    /* Invalid input. */
    fv_point same[5];
    for (int i = 0; i < 5; i++) same[i] = (fv_point){10, 10};
    assert_int_equal(fvi_face_chip(img, same, 150, 0.25, chip), FV_E_INVALID_ARGUMENT);
    place_template(1.0, 0.0, 0, 0, lm);
    lm[2].x = NAN;
    assert_int_equal(fvi_face_chip(img, lm, 150, 0.25, chip), FV_E_INVALID_ARGUMENT);
    place_template(1.0, 0.0, 0, 0, lm);
    lm[2].y = 1e20f;
    assert_int_equal(fvi_face_chip(img, lm, 150, 0.25, chip), FV_E_INVALID_ARGUMENT);
    place_template(1.0, 0.0, 0, 0, lm);
    assert_int_equal(fvi_face_chip(img, lm, 1, 0.25, chip), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_face_chip(img, lm, 150, -1, chip), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_face_chip(NULL, lm, 150, 0.25, chip), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_face_chip(img, NULL, 150, 0.25, chip), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_face_chip(img, lm, 150, 0.25, NULL), FV_E_INVALID_ARGUMENT);

    /* Far away landmarks: an all-black chip, no crash. */
    place_template(0.5, 1.0, 1e6, -1e6, lm);
    assert_int_equal(fvi_face_chip(img, lm, 150, 0.25, chip), FV_OK);
    for (size_t i = 0; i < sizeof chip; i++) assert_int_equal(chip[i], 0);

    /* Tiny image (pyramid levels of <= 8 pixels are empty in dlib). */
    fv_image *tiny = make_image(9, 9);
    memset(tiny->rgb, 99, 9 * 9 * 3);
    place_template(20.0, 0.2, -300, -300, lm);
    assert_int_equal(fvi_face_chip(tiny, lm, 150, 0.25, chip), FV_OK);
    free_image(tiny);
    free_image(img);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synthetic_model_predicts),
        cmocka_unit_test(test_synthetic_model_invalid),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_real_model),
        cmocka_unit_test(test_real_model_truncated_and_flipped),
        cmocka_unit_test(test_similarity),
        cmocka_unit_test(test_chip_known_transform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
