/*
 * test_mtcnn.c: the MTCNN loader and detector (src/detect/mtcnn.c).
 *
 * A well-formed mtcnn.bin is built in memory from the loader's own tensor
 * table (small deterministic weights), then broken one way at a time: every
 * truncation point of its header and first tensors and a spread of later
 * ones, a wrong magic, version, count, dims or shape, an unknown or
 * repeated tensor, a NaN, trailing bytes.  Each must give
 * FV_E_MODEL_CORRUPT without crashing or leaking (ASan and valgrind run
 * this).  Allocation failures are injected into loading and detection.
 * With the models (FACEVERIFY_MODELS, set by ctest; skipped without
 * mtcnn.bin unless FACEVERIFY_REQUIRE_DATA=1) the engine path is checked:
 * FV_DETECTOR_MTCNN finds no face in a flat image, and an engine whose
 * mtcnn.bin is missing still serves MMOD and reports FV_E_MODEL_MISSING
 * only when mtcnn is asked for.
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

#include "detect/mtcnn.h"
#include "core/fvi.h"
#include "core/workers.h"

typedef struct buf {
    unsigned char *d;
    size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->d = realloc(b->d, b->cap);
        assert_non_null(b->d);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void put_u32(buf *b, uint32_t v) {
    unsigned char p[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    put(b, p, 4);
}

static void put_f32(buf *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}

/* Offsets into a built file, for the corruption tests. */
typedef struct layout {
    size_t first_dims;  /* the first tensor's dim count */
    size_t first_data;  /* its first float */
    size_t second_name; /* the second tensor's name length */
} layout;

/* A valid mtcnn.bin: the loader's tensors, small weights.  skip: a tensor
 * index to leave out (or the count), dup: one to write twice (or the
 * count); count is written as the number of tensors written. */
static buf build(size_t skip, size_t dup, layout *lay) {
    buf b = {0};
    size_t nt = fvi_mtcnn_tensor_count(), written = 0;
    put(&b, "FVMTCNN\0", 8);
    put_u32(&b, 1);
    size_t count_at = b.n;
    put_u32(&b, 0);
    for (size_t i = 0; i < nt; i++) {
        for (int rep = 0; rep < (i == dup ? 2 : 1); rep++) {
            if (i == skip) continue;
            int nd, d[4];
            const char *name = fvi_mtcnn_tensor(i, &nd, d);
            assert_non_null(name);
            uint16_t nl = (uint16_t)strlen(name);
            if (written == 1 && lay) lay->second_name = b.n;
            unsigned char l2[2] = {(unsigned char)nl, (unsigned char)(nl >> 8)};
            put(&b, l2, 2);
            put(&b, name, nl);
            if (written == 0 && lay) lay->first_dims = b.n;
            put_u32(&b, (uint32_t)nd);
            size_t numel = 1;
            for (int k = 0; k < nd; k++) {
                put_u32(&b, (uint32_t)d[k]);
                numel *= (size_t)d[k];
            }
            if (written == 0 && lay) lay->first_data = b.n;
            for (size_t k = 0; k < numel; k++)
                put_f32(&b, (float)((k * 7 + i) % 13) * 0.01f - 0.06f);
            written++;
        }
    }
    b.d[count_at] = (unsigned char)written;
    return b;
}

static fv_status parse(const unsigned char *d, size_t n) {
    fvi_mtcnn *m = NULL;
    char err[256] = "";
    fv_status st = fvi_mtcnn_parse(d, n, &m, err, sizeof err);
    if (st == FV_OK)
        assert_non_null(m);
    else {
        assert_null(m);
        assert_true(err[0] != '\0');
    }
    fvi_mtcnn_destroy(m);
    return st;
}

static void test_good_and_detect(void **state) {
    (void)state;
    size_t nt = fvi_mtcnn_tensor_count();
    assert_int_equal(nt, 50);
    buf b = build(nt, nt, NULL);
    fvi_mtcnn *m = NULL;
    char err[256] = "";
    assert_int_equal(fvi_mtcnn_parse(b.d, b.n, &m, err, sizeof err), FV_OK);
    /* arbitrary weights on a small textured image: runs, boxes finite */
    enum { W = 97, H = 61 };
    unsigned char *rgb = malloc(W * H * 3);
    assert_non_null(rgb);
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (unsigned char)((i * 31) % 251);
    fv_image img = {W, H, rgb};
    fvi_mtcnn_params p;
    fvi_mtcnn_params_init(&p);
    p.thresh[0] = p.thresh[1] = p.thresh[2] = 0.0; /* keep every candidate */
    fvi_workers *pool = fvi_workers_create(2);
    assert_non_null(pool);
    fv_face *faces = NULL;
    size_t n = 0;
    assert_int_equal(fvi_mtcnn_detect(m, &img, &p, pool, &faces, &n, err, sizeof err), FV_OK);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
        assert_true(isfinite(faces[i].left) && isfinite(faces[i].bottom));
        assert_true(faces[i].score >= 0.0f && faces[i].score <= 1.0f);
    }
    fvi_free(faces);
    /* bad arguments */
    p.min_face = 5;
    assert_int_equal(fvi_mtcnn_detect(m, &img, &p, pool, &faces, &n, err, sizeof err),
                     FV_E_INVALID_ARGUMENT);
    fvi_mtcnn_params_init(&p);
    fv_image tiny = {5, 5, rgb};
    assert_int_equal(fvi_mtcnn_detect(m, &tiny, &p, pool, &faces, &n, err, sizeof err), FV_OK);
    assert_int_equal(n, 0);
    assert_null(faces);
    /* allocation failures: each a clean FV_E_NO_MEMORY */
    p.thresh[0] = p.thresh[1] = p.thresh[2] = 0.0;
    int failed = 0;
    for (long k = 0; k < 200; k++) {
        fvi_alloc_fail_after(k);
        fv_status st = fvi_mtcnn_detect(m, &img, &p, NULL, &faces, &n, err, sizeof err);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK) {
            fvi_free(faces);
            break;
        }
        assert_int_equal(st, FV_E_NO_MEMORY);
        assert_null(faces);
        failed++;
    }
    assert_true(failed > 5);
    fvi_workers_destroy(pool);
    free(rgb);
    fvi_mtcnn_destroy(m);
    free(b.d);
}

static void test_corrupt(void **state) {
    (void)state;
    size_t nt = fvi_mtcnn_tensor_count();
    layout lay;
    buf b = build(nt, nt, &lay);
    assert_int_equal(parse(b.d, b.n), FV_OK);
    /* every truncation of the header and first two tensors, then a spread */
    for (size_t n = 0; n < b.n; n += n < lay.second_name + 64 ? 1 : 997)
        assert_int_equal(parse(b.d, n), FV_E_MODEL_CORRUPT);
    assert_int_equal(parse(b.d, b.n - 1), FV_E_MODEL_CORRUPT);
    unsigned char *c = malloc(b.n + 4);
    assert_non_null(c);
    struct {
        size_t at;
        unsigned char v;
    } flips[] = {
        {0, 'X'},                   /* magic */
        {8, 2},                     /* version */
        {12, 49},                   /* count */
        {lay.first_dims, 3},        /* dims of p.conv1.weight */
        {lay.first_dims + 4, 11},   /* its out channels */
        {lay.second_name + 2, 'q'}, /* the second name: unknown */
        {lay.second_name, 200},     /* its length, past the name */
        {lay.second_name, 0},       /* empty name */
    };
    for (size_t i = 0; i < sizeof flips / sizeof *flips; i++) {
        memcpy(c, b.d, b.n);
        c[flips[i].at] = flips[i].v;
        assert_int_equal(parse(c, b.n), FV_E_MODEL_CORRUPT);
    }
    /* a NaN weight */
    memcpy(c, b.d, b.n);
    float nan = NAN;
    memcpy(c + lay.first_data + 8, &nan, 4);
    assert_int_equal(parse(c, b.n), FV_E_MODEL_CORRUPT);
    /* trailing bytes */
    memcpy(c, b.d, b.n);
    memset(c + b.n, 0, 4);
    assert_int_equal(parse(c, b.n + 4), FV_E_MODEL_CORRUPT);
    free(c);
    free(b.d);
    /* a tensor missing (count 49), or repeated (count 51 / replacing one) */
    b = build(7, nt, NULL);
    assert_int_equal(parse(b.d, b.n), FV_E_MODEL_CORRUPT);
    free(b.d);
    b = build(nt, 3, NULL);
    assert_int_equal(parse(b.d, b.n), FV_E_MODEL_CORRUPT);
    free(b.d);
    b = build(4, 3, NULL); /* 50 tensors, one twice */
    assert_int_equal(parse(b.d, b.n), FV_E_MODEL_CORRUPT);
    free(b.d);
    assert_int_equal(parse(NULL, 0), FV_E_MODEL_CORRUPT);
}

static void test_alloc_failures_load(void **state) {
    (void)state;
    size_t nt = fvi_mtcnn_tensor_count();
    buf b = build(nt, nt, NULL);
    int failed = 0;
    for (long k = 0; k < 500; k++) {
        fvi_alloc_fail_after(k);
        fv_status st = parse(b.d, b.n);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK) break;
        assert_int_equal(st, FV_E_NO_MEMORY);
        failed++;
    }
    assert_true(failed > 50);
    free(b.d);
}

static int require_data(void) {
    const char *r = getenv("FACEVERIFY_REQUIRE_DATA");
    return r && strcmp(r, "1") == 0;
}

static void test_load_missing_file(void **state) {
    (void)state;
    fvi_mtcnn *m = NULL;
    char err[256] = "";
    assert_int_equal(fvi_mtcnn_load("/nonexistent/mtcnn.bin", &m, err, sizeof err),
                     FV_E_MODEL_MISSING);
    assert_null(m);
    assert_non_null(strstr(err, "/nonexistent/mtcnn.bin"));
}

static void test_engine_mtcnn(void **state) {
    (void)state;
    const char *dir = getenv("FACEVERIFY_MODELS");
    char path[1024];
    snprintf(path, sizeof path, "%s/mtcnn.bin", dir ? dir : "models");
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (require_data()) fail_msg("%s missing and FACEVERIFY_REQUIRE_DATA=1", path);
        skip();
    }
    fclose(f);
    unsigned char *rgb = malloc(320 * 240 * 3);
    assert_non_null(rgb);
    memset(rgb, 128, 320 * 240 * 3);
    fv_image *img = NULL;
    assert_int_equal(fv_image_from_rgb(rgb, 320, 240, &img), FV_OK);
    fv_detect_options opt;
    fv_detect_options_init(&opt);
    fv_face faces[4];
    size_t n = 99;
    char err[256] = "";
    for (int missing = 0; missing < 2; missing++) {
        fv_config cfg;
        fv_config_init(&cfg);
        cfg.threads = 2;
        cfg.mtcnn_model = missing ? "/nonexistent/mtcnn.bin" : NULL;
        fv_engine *eng = NULL;
        fv_status st = fv_engine_create(&cfg, &eng, err, sizeof err);
        if (st != FV_OK) {
            if (require_data()) fail_msg("engine: %s", err);
            skip();
        }
        opt.detector = FV_DETECTOR_MTCNN;
        for (int twice = 0; twice < 2; twice++) { /* the outcome of the load is kept */
            st = fv_detect(eng, img, &opt, faces, 4, &n, err, sizeof err);
            assert_int_equal(st, missing ? FV_E_MODEL_MISSING : FV_OK);
            if (!missing) assert_int_equal(n, 0);
        }
        opt.detector = FV_DETECTOR_MMOD;
        assert_int_equal(fv_detect(eng, img, &opt, faces, 4, &n, err, sizeof err), FV_OK);
        fv_engine_destroy(eng);
    }
    assert_string_equal(fv_detector_name(FV_DETECTOR_MTCNN), "mtcnn");
    fv_detector d;
    assert_int_equal(fv_detector_parse("mtcnn", &d), FV_OK);
    assert_int_equal(d, FV_DETECTOR_MTCNN);
    fv_image_destroy(img);
    free(rgb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_and_detect),     cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_alloc_failures_load), cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_engine_mtcnn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
