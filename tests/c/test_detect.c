/*
 * test_detect.c: unit tests of the MMOD face detector (src/detect/).
 *
 * The real model (FACEVERIFY_MODELS, default <repo>/models) is loaded, then
 * attacked: every prefix near the start and a spread of prefixes through
 * the file must give FV_E_MODEL_CORRUPT, flipped bytes must give a status
 * (never a crash; ASan builds check memory), failed allocations must give
 * FV_E_NO_MEMORY at every point of loading and detecting.  Detection is
 * checked on images with known answers: blank, tiny (too small for the
 * network), too large (refused before allocating), and, when the data set
 * is present (FACEVERIFY_DATA, default <repo>/../shared/data), a real LFW
 * face with dlib's box.  Model-dependent tests skip when the model is
 * absent, unless FACEVERIFY_REQUIRE_DATA=1.  Exact parity with dlib on
 * many photos is tests/py/test_detect_parity.py.
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

#include "detect/mmod.h"
#include "core/fvi.h"
#include "core/workers.h"

static char model_path[4096];
static unsigned char *model_buf;
static size_t model_len;
static fvi_mmod *model;

static int require_data(void) {
    const char *r = getenv("FACEVERIFY_REQUIRE_DATA");
    return r && strcmp(r, "1") == 0;
}

/* Reads the whole model file into model_buf; 0 when absent. */
static int load_model_bytes(void) {
    const char *dir = getenv("FACEVERIFY_MODELS");
    snprintf(model_path, sizeof model_path, "%s/mmod_human_face_detector.dat",
             dir ? dir : "models");
    FILE *f = fopen(model_path, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    model_buf = malloc((size_t)n);
    model_len = fread(model_buf, 1, (size_t)n, f);
    fclose(f);
    return model_len == (size_t)n;
}

static int setup(void **state) {
    (void)state;
    if (load_model_bytes()) {
        char err[256];
        if (fvi_mmod_load_mem(model_buf, model_len, &model, err, sizeof err) != FV_OK) {
            fprintf(stderr, "cannot load %s: %s\n", model_path, err);
            return -1;
        }
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    fvi_mmod_destroy(model);
    free(model_buf);
    return 0;
}

#define NEED_MODEL()                                                                               \
    do {                                                                                           \
        if (!model) {                                                                              \
            if (require_data()) fail_msg("model %s missing", model_path);                          \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static fv_image *make_image(int w, int h, unsigned char v) {
    fv_image *img = NULL;
    unsigned char *px = malloc((size_t)w * h * 3);
    memset(px, v, (size_t)w * h * 3);
    assert_int_equal(fv_image_from_rgb(px, w, h, &img), FV_OK);
    free(px);
    return img;
}

/* ------------------------------------------------------------ loading */

static void test_load_file(void **state) {
    (void)state;
    NEED_MODEL();
    fvi_mmod *m = NULL;
    char err[256];
    assert_int_equal(fvi_mmod_load(model_path, &m, err, sizeof err), FV_OK);
    assert_non_null(m);
    fvi_mmod_destroy(m);
    fvi_mmod_destroy(NULL);
}

static void test_load_missing(void **state) {
    (void)state;
    fvi_mmod *m = (fvi_mmod *)&m;
    char err[256] = "";
    assert_int_equal(fvi_mmod_load("/nonexistent/dir/mmod.dat", &m, err, sizeof err),
                     FV_E_MODEL_MISSING);
    assert_null(m);
    assert_non_null(strstr(err, "/nonexistent/dir/mmod.dat"));
    assert_int_equal(fvi_mmod_load(NULL, &m, err, sizeof err), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_mmod_load_mem("", 0, NULL, err, sizeof err), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_mmod_load_mem("", 0, &m, err, sizeof err), FV_E_MODEL_CORRUPT);
}

/* Loads a private copy of the first n bytes (so ASan sees over-reads). */
static fv_status load_prefix(const unsigned char *src, size_t n) {
    unsigned char *copy = malloc(n ? n : 1);
    memcpy(copy, src, n);
    fvi_mmod *m = NULL;
    char err[256];
    fv_status st = fvi_mmod_load_mem(copy, n, &m, err, sizeof err);
    if (st == FV_OK)
        assert_non_null(m);
    else
        assert_null(m);
    fvi_mmod_destroy(m);
    free(copy);
    return st;
}

static void test_truncated(void **state) {
    (void)state;
    NEED_MODEL();
    /* Every prefix of the header and first layers, then a spread through
     * the weights, then every prefix near the end. */
    for (size_t n = 0; n < model_len; n++) {
        int probe = n < 6000 || n + 600 > model_len || n % 2999 == 0;
        if (!probe) continue;
        fv_status st = load_prefix(model_buf, n);
        if (st != FV_E_MODEL_CORRUPT) fail_msg("prefix of %zu bytes gave status %d", n, st);
    }
    assert_int_equal(load_prefix(model_buf, model_len), FV_OK);
}

static void test_byte_flips(void **state) {
    (void)state;
    NEED_MODEL();
    unsigned char *copy = malloc(model_len);
    uint32_t rng = 12345;
    int corrupt = 0;
    for (int i = 0; i < 600; i++) {
        memcpy(copy, model_buf, model_len);
        rng = rng * 1664525u + 1013904223u;
        /* Bias toward the structure: a third of the flips in the header
         * (loss options, input layer), a third in the first layers. */
        size_t span = i % 3 == 0 ? 160 : i % 3 == 1 ? 6000 : model_len;
        size_t at = (rng >> 8) % span;
        copy[at] ^= (unsigned char)(1u << (rng & 7));
        fvi_mmod *m = NULL;
        char err[256];
        fv_status st = fvi_mmod_load_mem(copy, model_len, &m, err, sizeof err);
        if (st != FV_OK && st != FV_E_MODEL_CORRUPT) fail_msg("flip at %zu gave status %d", at, st);
        if (st == FV_OK) {
            /* Whatever the weights became, detection must stay safe. */
            fv_image *img = make_image(40, 40, 90);
            fv_face *faces = NULL;
            size_t n = 0;
            fv_status ds =
                fvi_mmod_detect(m, img, 0, FV_PRECISION_EXACT, NULL, &faces, &n, err, sizeof err);
            assert_int_equal(ds, FV_OK);
            fvi_free(faces);
            fv_image_destroy(img);
        } else {
            corrupt++;
        }
        fvi_mmod_destroy(m);
    }
    /* The structure checks do catch flips (about 1 in 10 here). */
    if (corrupt < 25) fail_msg("only %d of 600 flips detected", corrupt);
    free(copy);
}

static void test_load_oom(void **state) {
    (void)state;
    NEED_MODEL();
    int saw_nomem = 0;
    for (long n = 0;; n++) {
        fvi_mmod *m = NULL;
        char err[256];
        fvi_alloc_fail_after(n);
        fv_status st = fvi_mmod_load_mem(model_buf, model_len, &m, err, sizeof err);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK) {
            fvi_mmod_destroy(m);
            break;
        }
        assert_int_equal(st, FV_E_NO_MEMORY);
        assert_null(m);
        saw_nomem = 1;
        assert_true(n < 10000);
    }
    assert_true(saw_nomem);
}

/* ------------------------------------------------------------ detection */

static void test_blank_and_tiny(void **state) {
    (void)state;
    NEED_MODEL();
    const int sizes[][2] = {{200, 150}, {1, 1}, {3, 3}, {2, 40}, {40, 2}, {30, 30}, {60, 61}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        for (int up = 0; up <= 1; up++) {
            fv_image *img = make_image(sizes[i][0], sizes[i][1], 128);
            fv_face *faces = (fv_face *)&faces;
            size_t n = 99;
            char err[256];
            assert_int_equal(fvi_mmod_detect(model, img, up, FV_PRECISION_EXACT, NULL, &faces, &n,
                                             err, sizeof err),
                             FV_OK);
            assert_int_equal(n, 0);
            assert_null(faces);
            fv_image_destroy(img);
        }
}

static void test_bad_arguments(void **state) {
    (void)state;
    NEED_MODEL();
    fv_image *img = make_image(20, 20, 0);
    fv_face *faces = NULL;
    size_t n = 0;
    char err[256];
    assert_int_equal(
        fvi_mmod_detect(model, img, -1, FV_PRECISION_EXACT, NULL, &faces, &n, err, sizeof err),
        FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_mmod_detect(model, img, FVI_MMOD_MAX_UPSAMPLE + 1, FV_PRECISION_EXACT,
                                     NULL, &faces, &n, err, sizeof err),
                     FV_E_INVALID_ARGUMENT);
    assert_int_equal(
        fvi_mmod_detect(NULL, img, 0, FV_PRECISION_EXACT, NULL, &faces, &n, err, sizeof err),
        FV_E_INVALID_ARGUMENT);
    assert_int_equal(
        fvi_mmod_detect(model, NULL, 0, FV_PRECISION_EXACT, NULL, &faces, &n, err, sizeof err),
        FV_E_INVALID_ARGUMENT);
    assert_int_equal(
        fvi_mmod_detect(model, img, 0, FV_PRECISION_EXACT, NULL, NULL, &n, err, sizeof err),
        FV_E_INVALID_ARGUMENT);
    fv_image bad = {0, 10, img->rgb};
    assert_int_equal(
        fvi_mmod_detect(model, &bad, 0, FV_PRECISION_EXACT, NULL, &faces, &n, err, sizeof err),
        FV_E_INVALID_ARGUMENT);
    fv_image_destroy(img);
}

/* A huge image is refused from its size alone: the pixels behind this
 * fv_image are a few bytes and must never be read. */
static void test_too_large(void **state) {
    (void)state;
    NEED_MODEL();
    unsigned char px[3] = {0, 0, 0};
    fv_image big = {12000, 9000, px};
    fv_face *faces = NULL;
    size_t n = 0;
    char err[256];
    assert_int_equal(
        fvi_mmod_detect(model, &big, 0, FV_PRECISION_EXACT, NULL, &faces, &n, err, sizeof err),
        FV_E_IMAGE_TOO_LARGE);
    fv_image mid = {2000, 1500, px};
    assert_int_equal(
        fvi_mmod_detect(model, &mid, 2, FV_PRECISION_EXACT, NULL, &faces, &n, err, sizeof err),
        FV_E_IMAGE_TOO_LARGE);
    fv_image tall = {10, 70000, px};
    assert_int_equal(
        fvi_mmod_detect(model, &tall, 0, FV_PRECISION_EXACT, NULL, &faces, &n, err, sizeof err),
        FV_E_IMAGE_TOO_LARGE);
    assert_null(faces);
}

/* Returns the LFW test image, or NULL (skip / fail per env). */
static fv_image *lfw_image(void) {
    const char *root = getenv("FACEVERIFY_DATA");
    char path[4096];
    const char *src = getenv("FACEVERIFY_SOURCE");
    if (root)
        snprintf(path, sizeof path, "%s/lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg", root);
    else
        snprintf(path, sizeof path, "%s/../shared/data/lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
                 src ? src : ".");
    fv_image *img = NULL;
    char err[256];
    if (fv_image_load(path, NULL, &img, err, sizeof err) != FV_OK) {
        if (require_data()) fail_msg("%s: %s", path, err);
        return NULL;
    }
    return img;
}

/* fvi_mmod_detect_levels runs the first levels of the pyramid only: all
 * levels (0) are fvi_mmod_detect's answer; a face too large for the levels
 * run (doubled, ~200 px, found about 4 levels down) is not found. */
static void test_levels(void **state) {
    (void)state;
    NEED_MODEL();
    fv_image *img = lfw_image();
    if (!img) skip();
    fv_face *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    char err[256];
    for (int up = 0; up < 2; up++) {
        assert_int_equal(
            fvi_mmod_detect(model, img, up, FV_PRECISION_EXACT, NULL, &a, &na, err, sizeof err),
            FV_OK);
        assert_int_equal(fvi_mmod_detect_levels(model, img, up, 0, FV_PRECISION_EXACT, NULL, &b,
                                                &nb, err, sizeof err),
                         FV_OK);
        assert_int_equal(na, 1);
        assert_int_equal(nb, 1);
        assert_memory_equal(a, b, sizeof *a);
        fvi_free(a);
        fvi_free(b);
    }
    /* the ~96 px face lies on the first levels: same box with 3 levels */
    assert_int_equal(
        fvi_mmod_detect(model, img, 0, FV_PRECISION_EXACT, NULL, &a, &na, err, sizeof err), FV_OK);
    assert_int_equal(fvi_mmod_detect_levels(model, img, 0, 3, FV_PRECISION_EXACT, NULL, &b, &nb,
                                            err, sizeof err),
                     FV_OK);
    assert_int_equal(nb, 1);
    assert_true(fabsf(a[0].left - b[0].left) <= 1 && fabsf(a[0].top - b[0].top) <= 1);
    assert_true(fabsf(a[0].score - b[0].score) < 0.01f);
    fvi_free(a);
    fvi_free(b);
    /* doubled, the face needs deeper levels than the first one */
    assert_int_equal(fvi_mmod_detect_levels(model, img, 1, 1, FV_PRECISION_EXACT, NULL, &b, &nb,
                                            err, sizeof err),
                     FV_OK);
    assert_int_equal(nb, 0);
    assert_int_equal(fvi_mmod_detect_levels(model, img, 0, -1, FV_PRECISION_EXACT, NULL, &b, &nb,
                                            err, sizeof err),
                     FV_E_INVALID_ARGUMENT);
    fv_image_destroy(img);
}

static void test_real_face(void **state) {
    (void)state;
    NEED_MODEL();
    fv_image *img = lfw_image();
    if (!img) skip();
    fvi_workers *pool = fvi_workers_create(2);
    assert_non_null(pool);
    fv_face *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    char err[256];
    assert_int_equal(
        fvi_mmod_detect(model, img, 0, FV_PRECISION_EXACT, NULL, &a, &na, err, sizeof err), FV_OK);
    assert_int_equal(
        fvi_mmod_detect(model, img, 0, FV_PRECISION_EXACT, pool, &b, &nb, err, sizeof err), FV_OK);
    assert_int_equal(na, 1);
    assert_int_equal(nb, 1);
    /* Same answer with and without the pool. */
    assert_memory_equal(a, b, sizeof *a);
    /* dlib: (72, 67, 168, 163) score 1.0396 (this JPEG decoded by
     * libjpeg-turbo; another decoder may shift it a pixel). */
    assert_true(fabsf(a[0].left - 72) <= 2 && fabsf(a[0].top - 67) <= 2);
    assert_true(fabsf(a[0].right - 168) <= 2 && fabsf(a[0].bottom - 163) <= 2);
    assert_true(fabsf(a[0].score - 1.0396f) < 0.05f);
    fvi_free(a);
    fvi_free(b);
    /* Upsampled once: dlib gives (66, 72, 166, 171) score 1.069. */
    assert_int_equal(
        fvi_mmod_detect(model, img, 1, FV_PRECISION_EXACT, pool, &a, &na, err, sizeof err), FV_OK);
    assert_int_equal(na, 1);
    assert_true(fabsf(a[0].left - 66) <= 2 && fabsf(a[0].top - 72) <= 2);
    assert_true(fabsf(a[0].right - 166) <= 2 && fabsf(a[0].bottom - 171) <= 2);
    assert_true(fabsf(a[0].score - 1.069f) < 0.05f);
    fvi_free(a);
    fvi_workers_destroy(pool);
    fv_image_destroy(img);
}

/* Fast mode (bf16 where the CPU has it, else exact) on the LFW face: the
 * same box as exact here, the score within 0.01 (bench/mmod_precision.py:
 * 0.005 at most on 500 LFW photos), the same bits with and without the
 * pool; a precision outside the enum is refused. */
static void test_real_face_fast(void **state) {
    (void)state;
    NEED_MODEL();
    fv_image *img = lfw_image();
    if (!img) skip();
    fvi_workers *pool = fvi_workers_create(2);
    assert_non_null(pool);
    fv_face *e = NULL, *a = NULL, *b = NULL;
    size_t ne = 0, na = 0, nb = 0;
    char err[256];
    assert_int_equal(
        fvi_mmod_detect(model, img, 0, FV_PRECISION_EXACT, pool, &e, &ne, err, sizeof err), FV_OK);
    assert_int_equal(
        fvi_mmod_detect(model, img, 0, FV_PRECISION_FAST, NULL, &a, &na, err, sizeof err), FV_OK);
    assert_int_equal(
        fvi_mmod_detect(model, img, 0, FV_PRECISION_FAST, pool, &b, &nb, err, sizeof err), FV_OK);
    assert_int_equal(ne, 1);
    assert_int_equal(na, 1);
    assert_int_equal(nb, 1);
    assert_memory_equal(a, b, sizeof *a);
    assert_true(a[0].left == e[0].left && a[0].top == e[0].top);
    assert_true(a[0].right == e[0].right && a[0].bottom == e[0].bottom);
    assert_true(fabsf(a[0].score - e[0].score) < 0.01f);
    fvi_free(e);
    fvi_free(a);
    fvi_free(b);
    assert_int_equal(fvi_mmod_detect(model, img, 0, 2, pool, &a, &na, err, sizeof err),
                     FV_E_INVALID_ARGUMENT);
    assert_null(a);
    fvi_workers_destroy(pool);
    fv_image_destroy(img);
}

/* Fails every allocation of a detect call in turn.  The LFW face at
 * upsample 0 reaches the detection and output allocations; a small blank
 * image at upsample 2 reaches both upsampling buffers cheaply. */
static void detect_oom_case(fv_image *img, int upsample, int precision) {
    int saw_nomem = 0;
    for (long n = 0;; n++) {
        fv_face *faces = NULL;
        size_t cnt = 0;
        char err[256];
        fvi_alloc_fail_after(n);
        fv_status st =
            fvi_mmod_detect(model, img, upsample, precision, NULL, &faces, &cnt, err, sizeof err);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK) {
            fvi_free(faces);
            break;
        }
        assert_int_equal(st, FV_E_NO_MEMORY);
        assert_null(faces);
        assert_int_equal(cnt, 0);
        saw_nomem = 1;
        assert_true(n < 1000);
    }
    assert_true(saw_nomem);
}

static void test_detect_oom(void **state) {
    (void)state;
    NEED_MODEL();
    fv_image *img = make_image(50, 40, 100);
    detect_oom_case(img, 2, FV_PRECISION_EXACT);
    fv_image_destroy(img);
    img = lfw_image();
    if (img) {
        detect_oom_case(img, 0, FV_PRECISION_EXACT);
        detect_oom_case(img, 0, FV_PRECISION_FAST);
    }
    fv_image_destroy(img);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_file),     cmocka_unit_test(test_load_missing),
        cmocka_unit_test(test_truncated),     cmocka_unit_test(test_byte_flips),
        cmocka_unit_test(test_load_oom),      cmocka_unit_test(test_blank_and_tiny),
        cmocka_unit_test(test_bad_arguments), cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_real_face),     cmocka_unit_test(test_real_face_fast),
        cmocka_unit_test(test_levels),        cmocka_unit_test(test_detect_oom),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
