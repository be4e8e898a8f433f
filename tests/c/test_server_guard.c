/*
 * test_server_guard.c: faceverifyd's admission and rate limits (guard.c)
 * and template sealing (crypto.c), the parts of the server that are pure
 * functions of their inputs.  No timing: token refill over time is
 * covered by tests/py/test_security.py against a live server.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sodium.h>
#include <string.h>
#include <time.h>

#include "server/crypto.h"
#include "server/guard.h"

static void test_admission_bound(void **state) {
    (void)state;
    fvs_guard *g = fvs_guard_create(2, 0, 0);
    assert_non_null(g);
    assert_int_equal(fvs_guard_enter(g), 0);
    assert_int_equal(fvs_guard_enter(g), 0);
    assert_int_equal(fvs_guard_inflight(g), 2);
    assert_int_equal(fvs_guard_enter(g), -1); /* past capacity: not counted */
    assert_int_equal(fvs_guard_inflight(g), 2);
    fvs_guard_leave(g);
    assert_int_equal(fvs_guard_enter(g), 0);
    fvs_guard_leave(g);
    fvs_guard_leave(g);
    assert_int_equal(fvs_guard_inflight(g), 0);
    fvs_guard_destroy(g);
    fvs_guard_destroy(NULL);
}

/* The memory budget: reservations add up to the budget and no further,
 * the last eighth stays for small requests, releases make room, and a
 * request larger than the whole budget is -2 at once. */
static void test_memory_budget(void **state) {
    (void)state;
    fvs_guard *g = fvs_guard_create(16, 0, 0);
    assert_non_null(g);
    const uint64_t B = 800;
    assert_int_equal(fvs_guard_mem_acquire(g, B, 300, 0), 0);
    assert_int_equal(fvs_guard_mem_acquire(g, B, 300, 0), 0);
    /* 600 held: a large one (> B/8) may only fill to 700 */
    assert_int_equal(fvs_guard_mem_acquire(g, B, 150, 0), -1);
    assert_int_equal(fvs_guard_mem_reserved(g), 600);
    /* small ones (<= B/8) may use the last eighth */
    assert_int_equal(fvs_guard_mem_acquire(g, B, 100, 0), 0);
    assert_int_equal(fvs_guard_mem_acquire(g, B, 100, 0), 0);
    assert_int_equal(fvs_guard_mem_acquire(g, B, 1, 0), -1);
    assert_int_equal(fvs_guard_mem_reserved(g), 800);
    assert_int_equal(fvs_guard_mem_acquire(g, B, 801, 0), -2);
    assert_int_equal(fvs_guard_mem_acquire(g, B, UINT64_MAX, 0), -2);
    /* a bounded wait that times out leaves nothing reserved */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(fvs_guard_mem_acquire(g, B, 50, 100), -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms >= 90 && ms < 5000);
    assert_int_equal(fvs_guard_mem_reserved(g), 800);
    fvs_guard_mem_release(g, 100);
    fvs_guard_mem_release(g, 100);
    fvs_guard_mem_release(g, 300);
    fvs_guard_mem_release(g, 300);
    assert_int_equal(fvs_guard_mem_reserved(g), 0);
    /* more than the rest of the budget but needing more than 7/8: alone */
    assert_int_equal(fvs_guard_mem_acquire(g, B, 750, 0), 0);
    assert_int_equal(fvs_guard_mem_acquire(g, B, 60, 0), -1);
    fvs_guard_mem_release(g, 750);
    fvs_guard_destroy(g);
}

typedef struct {
    fvs_guard *g;
    int rc;
} waiter;

static void *wait_main(void *v) {
    waiter *w = v;
    w->rc = fvs_guard_mem_acquire(w->g, 1000, 600, 10000);
    return NULL;
}

/* A waiter is admitted as soon as a release makes room, not at its
 * deadline. */
static void test_memory_budget_wakeup(void **state) {
    (void)state;
    fvs_guard *g = fvs_guard_create(16, 0, 0);
    assert_non_null(g);
    assert_int_equal(fvs_guard_mem_acquire(g, 1000, 600, 0), 0);
    waiter w = {g, 99};
    pthread_t t;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(pthread_create(&t, NULL, wait_main, &w), 0);
    struct timespec nap = {0, 50 * 1000 * 1000};
    nanosleep(&nap, NULL);
    fvs_guard_mem_release(g, 600);
    pthread_join(t, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(w.rc, 0);
    assert_true(t1.tv_sec - t0.tv_sec < 5);
    assert_int_equal(fvs_guard_mem_reserved(g), 600);
    fvs_guard_mem_release(g, 600);
    fvs_guard_destroy(g);
}

/* The estimate follows the measured figures (guard.c): a 40 MP photo is
 * decoded in full and detected at 1600 px; a faceless 1.5 MP one may be
 * detected doubled, and costs more; verify counts one detection. */
static void test_image_cost(void **state) {
    (void)state;
    int w40[1] = {6320}, h40[1] = {6320};
    uint64_t c40 = fvs_guard_images_cost(w40, h40, NULL, 1, FV_DETECTOR_MMOD, 1600);
    assert_true(c40 > 420u * 1000 * 1000 && c40 < 500u * 1000 * 1000);
    int w15[1] = {1224}, h15[1] = {1224};
    uint64_t c15 = fvs_guard_images_cost(w15, h15, NULL, 1, FV_DETECTOR_MMOD, 1600);
    assert_true(c15 > 700u * 1000 * 1000 && c15 < 800u * 1000 * 1000);
    int w2[2] = {6320, 6320}, h2[2] = {6320, 6320};
    uint64_t c2 = fvs_guard_images_cost(w2, h2, NULL, 2, FV_DETECTOR_MMOD, 1600);
    assert_true(c2 > 540u * 1000 * 1000 && c2 < c40 * 2);
    /* max_side 0: never downscaled, so the whole image is detected */
    assert_true(fvs_guard_images_cost(w40, h40, NULL, 1, FV_DETECTOR_MMOD, 0) > c40 * 5);
    /* MTCNN, the default detector, runs on the photo as it is, at a few
     * bytes a pixel: a 24 MP photo costs 250-300 MB (measured 190 MB) */
    int w24[1] = {5656}, h24[1] = {4242};
    uint64_t m24 = fvs_guard_images_cost(w24, h24, NULL, 1, FV_DETECTOR_MTCNN, 0);
    assert_true(m24 > 250u * 1000 * 1000 && m24 < 300u * 1000 * 1000);
    /* an AVIF's codec holds its own planes: 13 more bytes a pixel */
    unsigned avif[1] = {16}, low[1] = {1};
    uint64_t c40_avif = fvs_guard_images_cost(w40, h40, avif, 1, FV_DETECTOR_MMOD, 1600);
    assert_true(c40_avif > c40 + 500u * 1000 * 1000 && c40_avif < c40 + 540u * 1000 * 1000);
    assert_true(fvs_guard_images_cost(w40, h40, low, 1, FV_DETECTOR_MMOD, 1600) ==
                c40); /* never under 3 */
    int w0[1] = {0}, h0[1] = {5};
    assert_true(fvs_guard_images_cost(w0, h0, NULL, 1, FV_DETECTOR_MMOD, 1600) <
                100u * 1000 * 1000);
    assert_true(fvs_guard_default_budget() >= 16u * 1000 * 1000);
    assert_true(fvs_guard_default_budget() <= 3ull * 1024 * 1024 * 1024);
}

static void test_rate_buckets(void **state) {
    (void)state;
    int wait = 0;
    fvs_guard *g = fvs_guard_create(8, 1.0, 3);
    for (int i = 0; i < 3; i++) assert_int_equal(fvs_guard_rate(g, 7, &wait), 0);
    assert_int_equal(fvs_guard_rate(g, 7, &wait), 1);
    assert_int_equal(wait, 1);
    assert_int_equal(fvs_guard_rate(g, 8, &wait), 0); /* another key: own bucket */
    fvs_guard_destroy(g);

    g = fvs_guard_create(8, 0.25, 1); /* one token, then 4 s per token */
    assert_int_equal(fvs_guard_rate(g, 1, &wait), 0);
    assert_int_equal(fvs_guard_rate(g, 1, &wait), 1);
    assert_true(wait >= 3 && wait <= 4);
    fvs_guard_destroy(g);

    g = fvs_guard_create(8, 0, 0); /* no limit */
    for (int i = 0; i < 1000; i++) assert_int_equal(fvs_guard_rate(g, 1, &wait), 0);
    fvs_guard_destroy(g);
}

static void test_headers(void **state) {
    (void)state;
    const char *const *h = fvs_security_headers();
    int nosniff = 0, deny = 0, noref = 0;
    for (int i = 0; h[i]; i += 2) {
        nosniff |= strcmp(h[i], "X-Content-Type-Options") == 0 && strcmp(h[i + 1], "nosniff") == 0;
        deny |= strcmp(h[i], "X-Frame-Options") == 0 && strcmp(h[i + 1], "DENY") == 0;
        noref |= strcmp(h[i], "Referrer-Policy") == 0 && strcmp(h[i + 1], "no-referrer") == 0;
    }
    assert_true(nosniff && deny && noref);
    assert_non_null(strstr(fvs_csp(0), "default-src 'none'"));
    assert_null(strstr(fvs_csp(0), "script-src"));
    assert_non_null(strstr(fvs_csp(1), "frame-ancestors 'none'"));
    assert_string_equal(fvs_cache_control(0), "no-store");
}

static void fill(float *e) {
    for (int i = 0; i < FV_EMBED_DIM; i++) e[i] = 0.01f * (float)(i - 64);
}

static void test_seal_open(void **state) {
    (void)state;
    unsigned char key[FVS_TKEY_BYTES], other[FVS_TKEY_BYTES];
    randombytes_buf(key, sizeof key);
    randombytes_buf(other, sizeof other);
    float emb[FV_EMBED_DIM], out[FV_EMBED_DIM];
    fill(emb);
    unsigned char a[FVS_TEMPLATE_SEALED_BYTES], b[FVS_TEMPLATE_SEALED_BYTES];
    fvs_template_seal(key, 3, 9, emb, a);
    fvs_template_seal(key, 3, 9, emb, b);
    assert_true(fvs_template_is_sealed(a, sizeof a));
    assert_memory_not_equal(a, b, sizeof a);    /* random nonces */
    for (size_t i = 0; i + 16 <= sizeof a; i++) /* no plaintext window */
        for (size_t j = 0; j + 16 <= sizeof emb; j += 4)
            assert_memory_not_equal(a + i, (const unsigned char *)emb + j, 16);
    char err[256] = "";
    assert_int_equal(fvs_template_open(key, 3, 9, a, sizeof a, out, err, sizeof err), 0);
    assert_memory_equal(out, emb, sizeof emb);
    /* Another subject, collection or key, no key, a flipped bit: refused. */
    memset(out, 0, sizeof out);
    assert_int_equal(fvs_template_open(key, 3, 10, a, sizeof a, out, err, sizeof err), -1);
    assert_int_equal(strncmp(err, FVS_TKEY_ERROR, strlen(FVS_TKEY_ERROR)), 0);
    assert_int_equal(fvs_template_open(key, 4, 9, a, sizeof a, out, err, sizeof err), -1);
    assert_int_equal(fvs_template_open(other, 3, 9, a, sizeof a, out, err, sizeof err), -1);
    assert_int_equal(fvs_template_open(NULL, 3, 9, a, sizeof a, out, err, sizeof err), -1);
    assert_non_null(strstr(err, "not set"));
    a[100] ^= 1;
    assert_int_equal(fvs_template_open(key, 3, 9, a, sizeof a, out, err, sizeof err), -1);
    float zero[FV_EMBED_DIM] = {0};
    assert_memory_equal(out, zero, sizeof zero); /* never unauthenticated bytes */
    /* Plaintext rows pass through; other sizes are not templates. */
    assert_int_equal(fvs_template_open(NULL, 3, 9, emb, sizeof emb, out, err, sizeof err), 0);
    assert_memory_equal(out, emb, sizeof emb);
    assert_int_equal(fvs_template_open(key, 3, 9, emb, 100, out, err, sizeof err), 1);
}

static void test_key_parse(void **state) {
    (void)state;
    char b64[64], err[256];
    unsigned char key[FVS_TKEY_BYTES];
    fvs_tkey_generate(b64, sizeof b64);
    assert_int_equal(fvs_tkey_parse(b64, key, err, sizeof err), 0);
    assert_int_equal(fvs_tkey_parse("c2hvcnQ=", key, err, sizeof err), -1); /* 5 bytes */
    assert_non_null(strstr(err, "32 bytes"));
    assert_int_equal(fvs_tkey_parse("", key, err, sizeof err), -1);
    assert_int_equal(fvs_tkey_parse("!!!!", key, err, sizeof err), -1);
    /* URL-safe, unpadded: 32 bytes of 0xff. */
    assert_int_equal(
        fvs_tkey_parse("__________________________________________8", key, err, sizeof err), 0);
    for (int i = 0; i < FVS_TKEY_BYTES; i++) assert_int_equal(key[i], 0xff);
}

int main(void) {
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admission_bound),
        cmocka_unit_test(test_rate_buckets),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_seal_open),
        cmocka_unit_test(test_key_parse),
        cmocka_unit_test(test_memory_budget),
        cmocka_unit_test(test_memory_budget_wakeup),
        cmocka_unit_test(test_image_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
