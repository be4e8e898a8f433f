/*
 * test_core.c: the status table, comparison functions, detector names,
 * the thread pool, the dlib deserializer primitives, the downscaler and the
 * allocator's failure injection.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "core/fvi.h"
#include "image/image.h"
#include "image/resize.h"
#include "nn/dlib_serial.h"
#include "core/workers.h"

static void test_strerror_covers_every_status(void **state) {
    (void)state;
    for (int s = 0; s < FV_STATUS_COUNT_; s++) {
        assert_string_not_equal(fv_strerror((fv_status)s), "unknown status");
        assert_string_not_equal(fv_status_name((fv_status)s), "unknown");
    }
    assert_string_equal(fv_strerror(FV_STATUS_COUNT_), "unknown status");
    assert_string_equal(fv_strerror((fv_status)-1), "unknown status");
    assert_string_equal(fv_status_name(FV_E_NO_FACE), "no_face");
    assert_string_equal(fv_status_name(FV_E_MULTIPLE_FACES), "multiple_faces");
}

static void test_distance_and_similarity(void **state) {
    (void)state;
    float a[FV_EMBED_DIM] = {0}, b[FV_EMBED_DIM] = {0};
    a[0] = 3.0f;
    b[1] = 4.0f;
    assert_float_equal(fv_distance(a, b), 5.0f, 1e-6);
    assert_float_equal(fv_distance(a, a), 0.0f, 0);
    assert_float_equal(fv_similarity(0.6f, 0.6f), 0.5f, 1e-6);
    /* strictly decreasing, in [0, 1] */
    float prev = 1.1f;
    for (float d = 0; d < 2.0f; d += 0.01f) {
        float s = fv_similarity(d, 0.6f);
        assert_true(s >= 0.0f && s <= 1.0f);
        assert_true(s <= prev);
        prev = s;
    }
    assert_true(fv_similarity(0.4f, 0.6f) > 0.95f);
    assert_true(fv_similarity(0.8f, 0.6f) < 0.05f);
}

static void test_detector_names(void **state) {
    (void)state;
    fv_detector d;
    assert_int_equal(fv_detector_parse("mmod", &d), FV_OK);
    assert_int_equal(d, FV_DETECTOR_MMOD);
    assert_int_equal(fv_detector_parse("none", &d), FV_OK);
    assert_int_equal(d, FV_DETECTOR_NONE);
    assert_int_equal(fv_detector_parse("bogus", &d), FV_E_UNSUPPORTED);
    assert_string_equal(fv_detector_name(FV_DETECTOR_MMOD), "mmod");
    assert_null(fv_detector_name((fv_detector)99));
}

typedef struct {
    int *hits;
    int *worker_of;
} pool_ctx;

static void mark(void *ctx, int begin, int end, int worker) {
    pool_ctx *c = ctx;
    for (int i = begin; i < end; i++) {
        c->hits[i]++;
        c->worker_of[i] = worker;
    }
}

static void test_pool_covers_range_once(void **state) {
    (void)state;
    for (int threads = 1; threads <= 4; threads++) {
        fvi_workers *p = fvi_workers_create(threads);
        assert_non_null(p);
        assert_int_equal(fvi_workers_size(p), threads);
        for (int n = 0; n < 50; n += 7) {
            int hits[64] = {0}, wk[64] = {0};
            pool_ctx c = {hits, wk};
            fvi_workers_run(p, n, 1, mark, &c);
            for (int i = 0; i < n; i++) assert_int_equal(hits[i], 1);
            for (int i = n; i < 64; i++) assert_int_equal(hits[i], 0);
        }
        fvi_workers_destroy(p);
    }
    fvi_workers_destroy(NULL);
}

static void test_dser_integers_and_floats(void **state) {
    (void)state;
    /* 300 = 0x012C: control 0x02, bytes 2C 01; -5: control 0x81, 05;
     * 0: control 0x00; float 1.5 = mantissa 3, exponent -1. */
    const uint8_t buf[] = {0x02, 0x2C, 0x01, 0x81, 0x05, 0x00, 0x01, 0x03, 0x81, 0x01, '1'};
    fvi_dser d;
    int64_t v;
    float f;
    int b;
    fvi_dser_init(&d, buf, sizeof buf);
    assert_int_equal(fvi_dser_int(&d, &v), 0);
    assert_int_equal(v, 300);
    assert_int_equal(fvi_dser_int(&d, &v), 0);
    assert_int_equal(v, -5);
    assert_int_equal(fvi_dser_int(&d, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(fvi_dser_float(&d, &f), 0);
    assert_float_equal(f, 1.5f, 0);
    assert_int_equal(fvi_dser_bool(&d, &b), 0);
    assert_int_equal(b, 1);
    assert_int_equal(fvi_dser_left(&d), 0);
    /* reading past the end fails and sticks */
    assert_int_equal(fvi_dser_int(&d, &v), -1);
    assert_true(d.failed);
    assert_int_equal(fvi_dser_bool(&d, &b), -1);
}

static void test_dser_rejects_hostile_sizes(void **state) {
    (void)state;
    /* a string claiming 2^40 bytes */
    const uint8_t s1[] = {0x06, 0, 0, 0, 0, 0, 1, 'a'};
    char buf[16];
    fvi_dser d;
    fvi_dser_init(&d, s1, sizeof s1);
    assert_int_equal(fvi_dser_string(&d, buf, sizeof buf), -1);
    /* a control byte with stray bits */
    const uint8_t s2[] = {0x31, 0x01};
    int64_t v;
    fvi_dser_init(&d, s2, sizeof s2);
    assert_int_equal(fvi_dser_int(&d, &v), -1);
    /* a tensor header claiming 2^31 x 2^31 elements */
    const uint8_t s3[] = {0x01, 0x02, 0x04, 0xff, 0xff, 0xff, 0x7f, 0x04,
                          0xff, 0xff, 0xff, 0x7f, 0x01, 0x01, 0x01, 0x01};
    int64_t dims[4];
    size_t count;
    fvi_dser_init(&d, s3, sizeof s3);
    assert_int_equal(fvi_dser_tensor_header(&d, dims, (size_t)1 << 30, &count), -1);
    /* expect_string mismatch */
    const uint8_t s4[] = {0x01, 0x03, 'a', 'b', 'c'};
    fvi_dser_init(&d, s4, sizeof s4);
    assert_int_equal(fvi_dser_expect_string(&d, "abd"), -1);
}

static void test_downscale_averages(void **state) {
    (void)state;
    fv_image *src = NULL, *dst = NULL;
    assert_int_equal(fvi_image_alloc(4, 2, &src), FV_OK);
    /* left half black, right half white */
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 4; x++) memset(src->rgb + ((size_t)y * 4 + x) * 3, x < 2 ? 0 : 200, 3);
    assert_int_equal(fvi_image_downscale(src, 2, 1, &dst), FV_OK);
    assert_int_equal(dst->width, 2);
    assert_int_equal(dst->height, 1);
    assert_int_equal(dst->rgb[0], 0);
    assert_int_equal(dst->rgb[3], 200);
    fv_image_destroy(dst);
    /* 4 -> 3 columns: the middle column straddles the edge */
    assert_int_equal(fvi_image_downscale(src, 3, 2, &dst), FV_OK);
    assert_int_equal(dst->rgb[3], 100);
    fv_image_destroy(dst);
    assert_int_equal(fvi_image_downscale(src, 5, 2, &dst), FV_E_INVALID_ARGUMENT);
    /* allocation failures are reported, not crashed on */
    for (long k = 0; k < 12; k++) {
        fvi_alloc_fail_after(k);
        dst = NULL;
        fv_status st = fvi_image_downscale(src, 3, 1, &dst);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK)
            fv_image_destroy(dst);
        else
            assert_int_equal(st, FV_E_NO_MEMORY);
    }
    fv_image_destroy(src);
}

static void test_engine_missing_models(void **state) {
    (void)state;
    fv_config cfg;
    fv_config_init(&cfg);
    cfg.models_dir = "/nonexistent/faceverify-models";
    fv_engine *eng = (fv_engine *)1;
    char err[256] = "";
    assert_int_equal(fv_engine_create(&cfg, &eng, err, sizeof err), FV_E_MODEL_MISSING);
    assert_null(eng);
    assert_non_null(strstr(err, "mmod_human_face_detector.dat"));
    fv_engine_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_covers_every_status),
        cmocka_unit_test(test_distance_and_similarity),
        cmocka_unit_test(test_detector_names),
        cmocka_unit_test(test_pool_covers_range_once),
        cmocka_unit_test(test_dser_integers_and_floats),
        cmocka_unit_test(test_dser_rejects_hostile_sizes),
        cmocka_unit_test(test_downscale_averages),
        cmocka_unit_test(test_engine_missing_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
