/*
 * test_search_backends.c: which search backends a build offers, as the
 * server relies on it.  With FV_FAISS=ON every backend can be created,
 * used and saved; with FV_FAISS=OFF (FV_HAVE_FAISS=0, where test_search.c
 * is not built) exact and exact-int8 still work, and each FAISS backend is
 * refused at creation and at load with a message that says why, which
 * PATCH /api/v1/collection passes on in its validation error.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "faceverify.h"
#include "search.h"

#ifndef FV_HAVE_FAISS
#define FV_HAVE_FAISS 1
#endif

static int is_faiss(fvi_search_kind k) {
    return k == FVI_SEARCH_FAISS_FLAT || k == FVI_SEARCH_FAISS_HNSW || k == FVI_SEARCH_FAISS_IVFPQ;
}

/* One vector added and found again: the backend really works. */
static void check_usable(fvi_search *s) {
    float v[FV_EMBED_DIM] = {0};
    v[0] = 1.0f;
    int64_t id = 7;
    char err[256] = "";
    assert_int_equal(fvi_search_add(s, 1, &id, v, err, sizeof err), 0);
    fvi_hit hit;
    size_t n = 0;
    assert_int_equal(fvi_search_query(s, v, 1, &hit, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(hit.id, 7);
}

static void test_backends_of_this_build(void **state) {
    (void)state;
    for (int k = 0; k < FVI_SEARCH_KINDS; k++) {
        char err[256] = "";
        fvi_search *s = fvi_search_create((fvi_search_kind)k, err, sizeof err);
        if (!is_faiss((fvi_search_kind)k) || FV_HAVE_FAISS) {
            assert_non_null(s);
            check_usable(s);
            fvi_search_destroy(s);
            continue;
        }
        assert_null(s);
        assert_non_null(strstr(err, "not built with FAISS"));
        assert_non_null(strstr(err, "FV_FAISS"));
        /* a saved index of that kind cannot be loaded either */
        err[0] = 0;
        assert_null(fvi_search_load((fvi_search_kind)k, "/nonexistent.idx", err, sizeof err));
        assert_non_null(strstr(err, "not built with FAISS"));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backends_of_this_build),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
