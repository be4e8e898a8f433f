/*
 * test_quality.c: fv_face_quality on synthetic chips whose defects are
 * known by construction (flat, dark, smooth, tiny box, turned head, an
 * unsure detector), and fv_quality_reason_name.  The chips are plain
 * arithmetic, so what each factor should say follows from quality.c's
 * ramps without a model or a photo.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "faceverify.h"

#define CHIP_BYTES (FV_CHIP_SIZE * FV_CHIP_SIZE * 3)

/* A frontal 100 px face: eyes level (interocular 45 px), the nose base centred below them at
 * 0.71 interocular distances (quality.c's frontal geometry). */
static fv_face frontal(float score) {
    fv_face f;
    memset(&f, 0, sizeof f);
    f.left = 50;
    f.top = 50;
    f.right = 150;
    f.bottom = 150;
    f.score = score;
    const fv_point lm[FV_NUM_LANDMARKS] = {
        {70, 90}, {85, 90}, {130, 90}, {115, 90}, {100, 121.95f}};
    memcpy(f.landmarks, lm, sizeof lm);
    return f;
}

/* Deterministic noise in [0, 1): an LCG, so the test needs no seed. */
static float noise(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / (float)(1u << 24);
}

/* Grey chip: per-pixel noise of amplitude amp around mean. */
static void noisy_chip(unsigned char *chip, float mean, float amp) {
    uint32_t s = 12345;
    for (int i = 0; i < FV_CHIP_SIZE * FV_CHIP_SIZE; i++) {
        float v = mean + amp * (noise(&s) - 0.5f) * 2;
        unsigned char c = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
        chip[i * 3] = chip[i * 3 + 1] = chip[i * 3 + 2] = c;
    }
}

/* Grey chip of a slow sine (period 60 px): contrast without fine detail. */
static void smooth_chip(unsigned char *chip) {
    for (int y = 0; y < FV_CHIP_SIZE; y++)
        for (int x = 0; x < FV_CHIP_SIZE; x++) {
            float v = 128 + 70 * sinf((float)(x + y) * 6.2831853f / 60);
            unsigned char *p = chip + ((size_t)y * FV_CHIP_SIZE + x) * 3;
            p[0] = p[1] = p[2] = (unsigned char)v;
        }
}

static fv_quality measure(const fv_face *f, fv_detector d, const unsigned char *chip) {
    fv_quality q;
    assert_int_equal(fv_face_quality(f, d, chip, &q), FV_OK);
    assert_true(q.score >= 0.0f && q.score <= 1.0f);
    assert_true(q.reasons < (1u << FV_QUALITY_REASON_COUNT));
    return q;
}

static void test_good_face(void **state) {
    (void)state;
    unsigned char chip[CHIP_BYTES];
    noisy_chip(chip, 128, 80);
    fv_face f = frontal(1.0f);
    fv_quality q = measure(&f, FV_DETECTOR_MMOD, chip);
    assert_int_equal(q.reasons, 0);
    assert_float_equal(q.size_px, 100.0f, 1e-3);
    assert_float_equal(q.yaw, 0.0f, 0.5);
    assert_float_equal(q.pitch, 0.0f, 0.5);
    assert_float_equal(q.brightness, 128.0f, 3.0);
    assert_true(q.score > 0.9f);
}

static void test_flat_chip(void **state) {
    (void)state;
    unsigned char chip[CHIP_BYTES];
    memset(chip, 128, sizeof chip);
    fv_face f = frontal(1.0f);
    fv_quality q = measure(&f, FV_DETECTOR_MMOD, chip);
    assert_true(q.reasons & FV_QUALITY_LOW_CONTRAST);
    assert_float_equal(q.contrast, 0.0f, 1e-3);
    assert_false(q.reasons & (FV_QUALITY_DARK | FV_QUALITY_OVEREXPOSED));
    assert_true(q.score < 0.1f);
}

static void test_dark_chip(void **state) {
    (void)state;
    unsigned char chip[CHIP_BYTES];
    noisy_chip(chip, 12, 10);
    fv_face f = frontal(1.0f);
    fv_quality q = measure(&f, FV_DETECTOR_MMOD, chip);
    assert_true(q.reasons & FV_QUALITY_DARK);
    assert_false(q.reasons & FV_QUALITY_OVEREXPOSED);
    assert_true(q.score < 0.1f);
}

static void test_overexposed_chip(void **state) {
    (void)state;
    unsigned char chip[CHIP_BYTES];
    noisy_chip(chip, 245, 10);
    fv_face f = frontal(1.0f);
    fv_quality q = measure(&f, FV_DETECTOR_MMOD, chip);
    assert_true(q.reasons & FV_QUALITY_OVEREXPOSED);
    assert_false(q.reasons & FV_QUALITY_DARK);
}

static void test_blurred_chip(void **state) {
    (void)state;
    unsigned char sharp[CHIP_BYTES], smooth[CHIP_BYTES];
    noisy_chip(sharp, 128, 80);
    smooth_chip(smooth);
    fv_face f = frontal(1.0f);
    fv_quality qs = measure(&f, FV_DETECTOR_MMOD, sharp);
    fv_quality qb = measure(&f, FV_DETECTOR_MMOD, smooth);
    assert_true(qb.reasons & FV_QUALITY_BLURRED);
    /* well exposed: the blur alone is named */
    assert_false(qb.reasons & (FV_QUALITY_LOW_CONTRAST | FV_QUALITY_DARK));
    assert_true(qb.sharpness < qs.sharpness);
    assert_true(qb.score < 0.1f);
}

static void test_small_turned_unsure(void **state) {
    (void)state;
    unsigned char chip[CHIP_BYTES];
    noisy_chip(chip, 128, 80);
    fv_face f = frontal(1.0f);
    f.right = f.left + 20;
    f.bottom = f.top + 20;
    assert_true(measure(&f, FV_DETECTOR_MMOD, chip).reasons & FV_QUALITY_TOO_SMALL);

    f = frontal(1.0f);
    f.landmarks[4].x += 40; /* the nose far to one side: a head in profile */
    fv_quality q = measure(&f, FV_DETECTOR_MMOD, chip);
    assert_true(q.reasons & FV_QUALITY_PROFILE);
    assert_true(fabsf(q.yaw) > 55.0f);

    f = frontal(1.0f);
    f.landmarks[4].y += 40; /* the nose far below the eyes: pitched */
    assert_true(measure(&f, FV_DETECTOR_MMOD, chip).reasons & FV_QUALITY_PITCHED);

    f = frontal(-0.5f);
    q = measure(&f, FV_DETECTOR_MMOD, chip);
    assert_true(q.reasons & FV_QUALITY_LOW_CONFIDENCE);
    assert_float_equal(q.detector_factor, 0.5f, 1e-6); /* doubt halves, no more */
    /* no detector, no confidence to doubt */
    f.score = 0;
    assert_false(measure(&f, FV_DETECTOR_NONE, chip).reasons & FV_QUALITY_LOW_CONFIDENCE);
}

static void test_null_arguments(void **state) {
    (void)state;
    unsigned char chip[CHIP_BYTES];
    memset(chip, 0, sizeof chip);
    fv_face f = frontal(1.0f);
    fv_quality q;
    assert_int_equal(fv_face_quality(NULL, FV_DETECTOR_MMOD, chip, &q), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fv_face_quality(&f, FV_DETECTOR_MMOD, NULL, &q), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fv_face_quality(&f, FV_DETECTOR_MMOD, chip, NULL), FV_E_INVALID_ARGUMENT);
}

static void test_reason_names(void **state) {
    (void)state;
    static const char *const want[FV_QUALITY_REASON_COUNT] = {
        "too_small",    "blurred", "dark",    "overexposed",
        "low_contrast", "profile", "pitched", "low_confidence"};
    for (int i = 0; i < FV_QUALITY_REASON_COUNT; i++)
        assert_string_equal(fv_quality_reason_name(1u << i), want[i]);
    assert_int_equal(FV_QUALITY_LOW_CONFIDENCE, 1u << (FV_QUALITY_REASON_COUNT - 1));
    assert_null(fv_quality_reason_name(0));
    assert_null(fv_quality_reason_name(FV_QUALITY_TOO_SMALL | FV_QUALITY_BLURRED));
    assert_null(fv_quality_reason_name(1u << FV_QUALITY_REASON_COUNT));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_face),      cmocka_unit_test(test_flat_chip),
        cmocka_unit_test(test_dark_chip),      cmocka_unit_test(test_overexposed_chip),
        cmocka_unit_test(test_blurred_chip),   cmocka_unit_test(test_small_turned_unsure),
        cmocka_unit_test(test_null_arguments), cmocka_unit_test(test_reason_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
