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

#include <sodium.h>
#include <string.h>

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
        cmocka_unit_test(test_admission_bound), cmocka_unit_test(test_rate_buckets),
        cmocka_unit_test(test_headers),         cmocka_unit_test(test_seal_open),
        cmocka_unit_test(test_key_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
