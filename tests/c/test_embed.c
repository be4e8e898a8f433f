/*
 * test_embed.c: the ResNet embedder (src/embed/) on the real model file:
 * loading, strict rejection of truncated, bit-flipped and padded copies
 * (FV_E_MODEL_CORRUPT, never a crash), a missing file, out-of-memory at
 * every allocation, a plausible embedding for a synthetic chip, and equal
 * results for concurrent calls and for any pool size.  Parity with dlib
 * itself is checked in tests/py/test_embed_parity.py.
 *
 * The model comes from FACEVERIFY_MODELS (ctest sets it), else
 * $FACEVERIFY_SOURCE/models; the tests skip when it is absent, unless
 * FACEVERIFY_REQUIRE_DATA=1.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed/embed.h"
#include "core/fvi.h"
#include "core/workers.h"

#define CHIP_BYTES ((size_t)FV_CHIP_SIZE * FV_CHIP_SIZE * 3)

static unsigned char *model;
static size_t model_len;
static char model_path[1100];

/* Reads the real model once for all tests; skips when it is absent. */
static int need_model(void) {
    if (model) return 1;
    const char *dir = getenv("FACEVERIFY_MODELS");
    char tmp[1024];
    const char *src = getenv("FACEVERIFY_SOURCE");
    if ((!dir || !*dir) && src && *src) {
        snprintf(tmp, sizeof tmp, "%s/models", src);
        dir = tmp;
    } else if (!dir || !*dir) {
        dir = "models";
    }
    snprintf(model_path, sizeof model_path, "%s/dlib_face_recognition_resnet_model_v1.dat", dir);
    FILE *f = fopen(model_path, "rb");
    if (!f) {
        const char *req = getenv("FACEVERIFY_REQUIRE_DATA");
        if (req && strcmp(req, "1") == 0) fail_msg("model %s missing", model_path);
        print_message("skipping: model %s missing\n", model_path);
        return 0;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    assert_true(n > 0);
    model = malloc((size_t)n);
    assert_non_null(model);
    assert_int_equal(fread(model, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    model_len = (size_t)n;
    return 1;
}

#define NEED_MODEL()                                                                               \
    do {                                                                                           \
        if (!need_model()) skip();                                                                 \
    } while (0)

/* A face-like synthetic chip: smooth shading with darker eyes and mouth. */
static void synthetic_chip(unsigned char *chip, int seed) {
    for (int y = 0; y < FV_CHIP_SIZE; y++)
        for (int x = 0; x < FV_CHIP_SIZE; x++) {
            int v = 150 + (x - 75) / 3 - (y - 75) / 4 + seed * 7;
            int eye = ((x - 50) * (x - 50) + (y - 60) * (y - 60) < 120) ||
                      ((x - 100) * (x - 100) + (y - 60) * (y - 60) < 120);
            int mouth = y > 105 && y < 115 && x > 55 && x < 95;
            if (eye || mouth) v -= 90;
            for (int c = 0; c < 3; c++) {
                int p = v - c * 15 + ((x * 7 + y * 13 + c + seed) % 5);
                chip[((size_t)y * FV_CHIP_SIZE + x) * 3 + c] = (unsigned char)(p < 0     ? 0
                                                                               : p > 255 ? 255
                                                                                         : p);
            }
        }
}

/* Loads a modified copy; returns the status, freeing any network. */
static fv_status load_copy(const unsigned char *data, size_t len) {
    fvi_resnet *net = NULL;
    char err[256] = "";
    fv_status st = fvi_resnet_load_mem(data, len, &net, err, sizeof err);
    if (st == FV_OK)
        assert_non_null(net);
    else {
        assert_null(net);
        assert_true(err[0] != 0);
    }
    fvi_resnet_destroy(net);
    return st;
}

static void test_load_real_model_and_embed(void **state) {
    (void)state;
    NEED_MODEL();
    fvi_resnet *net = NULL;
    char err[256];
    assert_int_equal(fvi_resnet_load(model_path, &net, err, sizeof err), FV_OK);
    unsigned char *chips = malloc(3 * CHIP_BYTES);
    for (int i = 0; i < 3; i++) synthetic_chip(chips + i * CHIP_BYTES, i);
    float out[3 * FV_EMBED_DIM];
    assert_int_equal(fvi_resnet_embed(net, chips, 3, NULL, out, err, sizeof err), FV_OK);
    for (int i = 0; i < 3; i++) {
        double norm = 0;
        for (int k = 0; k < FV_EMBED_DIM; k++) {
            assert_true(isfinite(out[i * FV_EMBED_DIM + k]));
            norm += (double)out[i * FV_EMBED_DIM + k] * out[i * FV_EMBED_DIM + k];
        }
        norm = sqrt(norm);
        /* dlib's descriptors of real faces have norms around 1.3-1.6 */
        assert_true(norm > 0.3 && norm < 5.0);
    }
    /* n == 0 is a no-op; NULL arguments are refused */
    assert_int_equal(fvi_resnet_embed(net, NULL, 0, NULL, NULL, err, sizeof err), FV_OK);
    assert_int_equal(fvi_resnet_embed(net, NULL, 1, NULL, out, err, sizeof err),
                     FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_resnet_embed(NULL, chips, 1, NULL, out, err, sizeof err),
                     FV_E_INVALID_ARGUMENT);
    free(chips);
    fvi_resnet_destroy(net);
    fvi_resnet_destroy(NULL);
}

static void test_missing_model(void **state) {
    (void)state;
    fvi_resnet *net = (fvi_resnet *)&net;
    char err[256];
    assert_int_equal(fvi_resnet_load("/nonexistent/dir/resnet.dat", &net, err, sizeof err),
                     FV_E_MODEL_MISSING);
    assert_null(net);
    assert_non_null(strstr(err, "/nonexistent/dir/resnet.dat"));
    assert_int_equal(fvi_resnet_load(NULL, &net, err, sizeof err), FV_E_INVALID_ARGUMENT);
    assert_int_equal(fvi_resnet_load_mem(NULL, 0, &net, err, sizeof err), FV_E_MODEL_CORRUPT);
}

static void test_truncated_model_is_corrupt(void **state) {
    (void)state;
    NEED_MODEL();
    /* every offset through the headers and the first weights, then spread
     * offsets through the whole file, then the last bytes */
    for (size_t cut = 0; cut < 3000; cut++)
        assert_int_equal(load_copy(model, cut), FV_E_MODEL_CORRUPT);
    for (int i = 1; i < 24; i++) {
        size_t cut = model_len / 24 * (size_t)i + (size_t)i * 7;
        assert_int_equal(load_copy(model, cut), FV_E_MODEL_CORRUPT);
    }
    for (size_t k = 1; k <= 16; k++)
        assert_int_equal(load_copy(model, model_len - k), FV_E_MODEL_CORRUPT);
    /* one byte too many is not this model either */
    unsigned char *longer = malloc(model_len + 1);
    memcpy(longer, model, model_len);
    longer[model_len] = 0;
    assert_int_equal(load_copy(longer, model_len + 1), FV_E_MODEL_CORRUPT);
    free(longer);
}

/* Offset of the first occurrence of s (as dlib writes a string) in the model. */
static size_t find_string(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 2; i + n <= model_len; i++)
        if (model[i - 1] == n && model[i - 2] == 0x01 && memcmp(model + i, s, n) == 0) return i;
    fail_msg("string %s not found in the model", s);
    return 0;
}

static void test_flipped_bytes_never_crash(void **state) {
    (void)state;
    NEED_MODEL();
    unsigned char *copy = malloc(model_len);
    memcpy(copy, model, model_len);
    /* structure: names, versions and shapes must be rejected */
    const char *names[] = {"loss_metric_2", "input_rgb_image_sized",
                           "con_4",         "affine_",
                           "max_pool_2",    "relu_",
                           "add_prev_",     "avg_pool_2",
                           "fc_2"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        size_t at = find_string(names[k]);
        for (size_t j = 0; j < strlen(names[k]); j++) {
            copy[at + j] ^= 0x20;
            assert_int_equal(load_copy(copy, model_len), FV_E_MODEL_CORRUPT);
            copy[at + j] = model[at + j];
        }
        copy[at - 1]++; /* the string's length */
        assert_int_equal(load_copy(copy, model_len), FV_E_MODEL_CORRUPT);
        copy[at - 1] = model[at - 1];
    }
    /* the stem conv's num_filters (32) follows its params tensor */
    size_t con = find_string("con_4");
    /* params tensor: version 2, dims 4736,1,1,1 then 4736 floats */
    const unsigned char hdr[] = {0x01, 0x02, 0x02, 0x80, 0x12, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01};
    assert_memory_equal(model + con + 5, hdr, sizeof hdr);
    size_t data = con + 5 + sizeof hdr;
    copy[data + 4736 * 4 + 1] = 33; /* num_filters 32 -> 33 */
    assert_int_equal(load_copy(copy, model_len), FV_E_MODEL_CORRUPT);
    copy[data + 4736 * 4 + 1] = model[data + 4736 * 4 + 1];
    /* a NaN weight */
    const unsigned char nan[4] = {0x00, 0x00, 0xc0, 0x7f};
    memcpy(copy + data + 8, nan, 4);
    assert_int_equal(load_copy(copy, model_len), FV_E_MODEL_CORRUPT);
    memcpy(copy + data + 8, model + data + 8, 4);
    /* every byte of the head, and bytes spread over the file: any status
     * but OK or CORRUPT (or a crash, under ASan) is a failure */
    for (size_t i = 0; i < 340; i++) {
        copy[i] ^= 0xFF;
        fv_status st = load_copy(copy, model_len);
        assert_true(st == FV_OK || st == FV_E_MODEL_CORRUPT);
        copy[i] = model[i];
    }
    uint32_t r = 777;
    for (int k = 0; k < 24; k++) {
        r = r * 1664525u + 1013904223u;
        size_t i = r % model_len;
        copy[i] ^= (unsigned char)(1u << (k % 8));
        fv_status st = load_copy(copy, model_len);
        assert_true(st == FV_OK || st == FV_E_MODEL_CORRUPT);
        copy[i] = model[i];
    }
    for (size_t i = model_len - 48; i < model_len; i++) {
        copy[i] ^= 0x81;
        fv_status st = load_copy(copy, model_len);
        assert_true(st == FV_OK || st == FV_E_MODEL_CORRUPT);
        copy[i] = model[i];
    }
    free(copy);
}

static void test_out_of_memory_everywhere(void **state) {
    (void)state;
    NEED_MODEL();
    fvi_resnet *net = NULL;
    char err[256];
    int ok = 0;
    for (long k = 0; k < 50 && !ok; k++) {
        fvi_alloc_fail_after(k);
        fv_status st = fvi_resnet_load_mem(model, model_len, &net, err, sizeof err);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK)
            ok = 1;
        else {
            assert_int_equal(st, FV_E_NO_MEMORY);
            assert_null(net);
        }
    }
    assert_true(ok);
    fvi_alloc_fail_after(0);
    fvi_resnet *net2 = NULL;
    assert_int_equal(fvi_resnet_load(model_path, &net2, err, sizeof err), FV_E_NO_MEMORY);
    fvi_alloc_fail_after(-1);
    unsigned char *chip = malloc(CHIP_BYTES);
    synthetic_chip(chip, 0);
    float out[FV_EMBED_DIM], want[FV_EMBED_DIM];
    ok = 0;
    for (long k = 0; k < 20 && !ok; k++) {
        fvi_alloc_fail_after(k);
        fv_status st = fvi_resnet_embed(net, chip, 1, NULL, out, err, sizeof err);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK)
            ok = 1;
        else
            assert_int_equal(st, FV_E_NO_MEMORY);
    }
    assert_true(ok);
    /* a fresh network gives the same after those failures */
    assert_int_equal(fvi_resnet_load_mem(model, model_len, &net2, err, sizeof err), FV_OK);
    assert_int_equal(fvi_resnet_embed(net2, chip, 1, NULL, want, err, sizeof err), FV_OK);
    assert_memory_equal(out, want, sizeof out);
    free(chip);
    fvi_resnet_destroy(net);
    fvi_resnet_destroy(net2);
}

typedef struct {
    const fvi_resnet *net;
    const unsigned char *chips;
    float out[2 * FV_EMBED_DIM];
    fv_status st;
} embed_arg;

static void *embed_thread(void *p) {
    embed_arg *a = p;
    for (int r = 0; r < 2 && a->st == FV_OK; r++)
        a->st = fvi_resnet_embed(a->net, a->chips, 2, NULL, a->out, NULL, 0);
    return NULL;
}

static void test_concurrent_calls_and_pool_sizes(void **state) {
    (void)state;
    NEED_MODEL();
    fvi_resnet *net = NULL;
    char err[256];
    assert_int_equal(fvi_resnet_load_mem(model, model_len, &net, err, sizeof err), FV_OK);
    unsigned char *chips = malloc(2 * CHIP_BYTES);
    synthetic_chip(chips, 1);
    synthetic_chip(chips + CHIP_BYTES, 2);
    float ref[2 * FV_EMBED_DIM], got[2 * FV_EMBED_DIM];
    assert_int_equal(fvi_resnet_embed(net, chips, 2, NULL, ref, err, sizeof err), FV_OK);
    for (int threads = 2; threads <= 3; threads++) {
        fvi_workers *pool = fvi_workers_create(threads);
        assert_non_null(pool);
        assert_int_equal(fvi_resnet_embed(net, chips, 2, pool, got, err, sizeof err), FV_OK);
        assert_memory_equal(ref, got, sizeof ref);
        fvi_workers_destroy(pool);
    }
    embed_arg args[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        args[i].net = net;
        args[i].chips = chips;
        args[i].st = FV_OK;
        assert_int_equal(pthread_create(&th[i], NULL, embed_thread, &args[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].st, FV_OK);
        assert_memory_equal(ref, args[i].out, sizeof ref);
    }
    free(chips);
    fvi_resnet_destroy(net);
}

static int teardown(void **state) {
    (void)state;
    free(model);
    model = NULL;
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_real_model_and_embed),
        cmocka_unit_test(test_missing_model),
        cmocka_unit_test(test_truncated_model_is_corrupt),
        cmocka_unit_test(test_flipped_bytes_never_crash),
        cmocka_unit_test(test_out_of_memory_everywhere),
        cmocka_unit_test(test_concurrent_calls_and_pool_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
