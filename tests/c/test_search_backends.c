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
#include "search/search.h"

#ifndef FV_HAVE_FAISS
#define FV_HAVE_FAISS 1
#endif

static int is_faiss(fvsearch_kind k) {
    return k == FVSEARCH_FAISS_FLAT || k == FVSEARCH_FAISS_HNSW || k == FVSEARCH_FAISS_IVFPQ;
}

/* One vector added and found again: the backend really works. */
static void check_usable(fvsearch *s) {
    float v[FV_EMBED_DIM] = {0};
    v[0] = 1.0f;
    int64_t id = 7;
    char err[256] = "";
    assert_int_equal(fvsearch_add(s, 1, &id, v, err, sizeof err), 0);
    fvsearch_hit hit;
    size_t n = 0;
    assert_int_equal(fvsearch_query(s, v, 1, &hit, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(hit.id, 7);
}

static void test_backends_of_this_build(void **state) {
    (void)state;
    for (int k = 0; k < FVSEARCH_KINDS; k++) {
        char err[256] = "";
        fvsearch *s = fvsearch_create((fvsearch_kind)k, err, sizeof err);
        if (!is_faiss((fvsearch_kind)k) || FV_HAVE_FAISS) {
            assert_non_null(s);
            check_usable(s);
            fvsearch_destroy(s);
            continue;
        }
        assert_null(s);
        assert_non_null(strstr(err, "not built with FAISS"));
        assert_non_null(strstr(err, "FV_FAISS"));
        /* a saved index of that kind cannot be loaded either */
        err[0] = 0;
        assert_null(fvsearch_load((fvsearch_kind)k, "/nonexistent.idx", err, sizeof err));
        assert_non_null(strstr(err, "not built with FAISS"));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backends_of_this_build),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
