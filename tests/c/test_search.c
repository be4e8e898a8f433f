/*
 * test_search.c: the search backends of src/search/search.h on synthetic
 * face-like galleries: many identities (random unit centres), a few
 * templates each (the centre plus noise), queries that are fresh noisy
 * samples of an identity.  exact is the reference: exact-int8 must give
 * the same answers, the FAISS backends recall@1 >= 0.99 against it;
 * deletes, re-adds and save/load must be reflected by every backend.
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
#include <unistd.h>

#include "faceverify.h"
#include "search.h"

#define D FV_EMBED_DIM
#define IDS 1000
#define PER 3
#define N (IDS * PER)
#define NQ 200

static uint64_t rng = 88172645463325252ULL;
static double uniform(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double gauss(void) {
    double u = uniform() + 1e-12, v = uniform();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}
static void unit(float *x) {
    double s = 0;
    for (int i = 0; i < D; i++) s += (double)x[i] * x[i];
    for (int i = 0; i < D; i++) x[i] = (float)(x[i] / sqrt(s));
}
/* dlib embeddings have norm ~1 with same-person distances ~0.4 and
 * different-person ones ~0.9: scale the noise to match. */
static void sample(const float *centre, float *out) {
    for (int i = 0; i < D; i++) out[i] = centre[i] + (float)(0.035 * gauss());
    unit(out);
}

typedef struct fixture {
    float *centres, *gallery, *queries;
    int64_t *ids;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->centres = malloc(sizeof(float) * IDS * D);
    f->gallery = malloc(sizeof(float) * N * D);
    f->queries = malloc(sizeof(float) * NQ * D);
    f->ids = malloc(sizeof(int64_t) * N);
    for (int c = 0; c < IDS; c++) {
        for (int i = 0; i < D; i++) f->centres[c * D + i] = (float)gauss();
        unit(f->centres + c * D);
    }
    for (int r = 0; r < N; r++) {
        sample(f->centres + (r / PER) * D, f->gallery + r * D);
        f->ids[r] = 1000 + 7 * r; /* sparse, like face ids after deletes */
    }
    for (int q = 0; q < NQ; q++) sample(f->centres + ((q * 37) % IDS) * D, f->queries + q * D);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    free(f->centres);
    free(f->gallery);
    free(f->queries);
    free(f->ids);
    free(f);
    return 0;
}

static fvi_search *build(fixture *f, fvi_search_kind kind) {
    char err[256];
    fvi_search *s = fvi_search_create(kind, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(fvi_search_add(s, N, f->ids, f->gallery, err, sizeof err), 0);
    assert_int_equal(fvi_search_count(s), N);
    return s;
}

static void test_names(void **state) {
    (void)state;
    for (int k = 0; k < FVI_SEARCH_KINDS; k++) {
        fvi_search_kind out;
        assert_int_equal(fvi_search_kind_parse(fvi_search_kind_name((fvi_search_kind)k), &out), 0);
        assert_int_equal(out, k);
    }
    fvi_search_kind out;
    assert_int_equal(fvi_search_kind_parse("faiss", &out), -1);
    assert_int_equal(fvi_search_kind_parse(NULL, &out), -1);
}

/* The exact backend against a naive scan with fv_distance. */
static void test_exact_matches_naive(void **state) {
    fixture *f = *state;
    fvi_search *s = build(f, FVI_SEARCH_EXACT);
    char err[256];
    for (int q = 0; q < 20; q++) {
        const float *qv = f->queries + q * D;
        int best = 0;
        float bd = INFINITY;
        for (int r = 0; r < N; r++) {
            float d = fv_distance(qv, f->gallery + r * D);
            if (d < bd) bd = d, best = r;
        }
        fvi_hit hits[5];
        size_t nh = 0;
        assert_int_equal(fvi_search_query(s, qv, 5, hits, &nh, err, sizeof err), 0);
        assert_int_equal(nh, 5);
        assert_int_equal(hits[0].id, f->ids[best]);
        assert_true(hits[0].distance == bd);
        for (size_t i = 1; i < nh; i++) assert_true(hits[i - 1].distance <= hits[i].distance);
    }
    fvi_search_destroy(s);
}

static void test_int8_equals_exact(void **state) {
    fixture *f = *state;
    fvi_search *a = build(f, FVI_SEARCH_EXACT), *b = build(f, FVI_SEARCH_INT8);
    assert_true(fvi_search_memory(b) > 0);
    char err[256];
    for (int q = 0; q < NQ; q++) {
        fvi_hit ha[10], hb[10];
        size_t na, nb;
        assert_int_equal(fvi_search_query(a, f->queries + q * D, 10, ha, &na, err, sizeof err), 0);
        assert_int_equal(fvi_search_query(b, f->queries + q * D, 10, hb, &nb, err, sizeof err), 0);
        assert_int_equal(na, nb);
        for (size_t i = 0; i < na; i++) {
            assert_int_equal(ha[i].id, hb[i].id);
            assert_true(ha[i].distance == hb[i].distance);
        }
    }
    fvi_search_destroy(a);
    fvi_search_destroy(b);
}

static void check_recall(fixture *f, fvi_search_kind kind) {
    fvi_search *a = build(f, FVI_SEARCH_EXACT), *b = build(f, kind);
    char err[256];
    int agree = 0;
    for (int q = 0; q < NQ; q++) {
        fvi_hit ha[1], hb[1];
        size_t na, nb;
        assert_int_equal(fvi_search_query(a, f->queries + q * D, 1, ha, &na, err, sizeof err), 0);
        assert_int_equal(fvi_search_query(b, f->queries + q * D, 1, hb, &nb, err, sizeof err), 0);
        assert_int_equal(na, 1);
        if (nb == 1 && hb[0].id == ha[0].id) {
            agree++;
            assert_true(hb[0].distance == ha[0].distance); /* exact re-rank */
        }
    }
    print_message("%s recall@1 = %.3f\n", fvi_search_kind_name(kind), agree / (double)NQ);
    assert_true(agree >= 0.99 * NQ);
    fvi_search_destroy(a);
    fvi_search_destroy(b);
}

static void test_faiss_flat_recall(void **state) {
    check_recall(*state, FVI_SEARCH_FAISS_FLAT);
}
static void test_faiss_hnsw_recall(void **state) {
    check_recall(*state, FVI_SEARCH_FAISS_HNSW);
}
static void test_faiss_ivfpq_recall(void **state) {
    check_recall(*state, FVI_SEARCH_FAISS_IVFPQ);
}

/* Remove the nearest template of each query: it is never returned again;
 * re-adding it (same id, new vector) makes it findable at its new place. */
static void test_remove_and_readd(void **state) {
    fixture *f = *state;
    char err[256];
    for (int k = 0; k < FVI_SEARCH_KINDS; k++) {
        fvi_search *s = build(f, (fvi_search_kind)k);
        uint64_t sum0 = fvi_search_checksum(s);
        for (int q = 0; q < 30; q++) {
            const float *qv = f->queries + q * D;
            fvi_hit h[3];
            size_t nh;
            assert_int_equal(fvi_search_query(s, qv, 3, h, &nh, err, sizeof err), 0);
            assert_true(nh >= 1);
            int64_t gone = h[0].id;
            assert_int_equal(fvi_search_remove(s, gone, err, sizeof err), 0);
            assert_int_equal(fvi_search_remove(s, gone, err, sizeof err), 1);
            assert_false(fvi_search_contains(s, gone));
            assert_int_equal(fvi_search_query(s, qv, 3, h, &nh, err, sizeof err), 0);
            for (size_t i = 0; i < nh; i++) assert_true(h[i].id != gone);
            /* Back under the same id, now exactly at the query. */
            assert_int_equal(fvi_search_add(s, 1, &gone, qv, err, sizeof err), 0);
            assert_int_equal(fvi_search_query(s, qv, 1, h, &nh, err, sizeof err), 0);
            assert_int_equal(nh, 1);
            assert_int_equal(h[0].id, gone);
            assert_true(h[0].distance == 0.0f);
        }
        assert_int_equal(fvi_search_count(s), N);
        assert_true(fvi_search_checksum(s) == sum0);
        int64_t dup = f->ids[5];
        assert_int_equal(fvi_search_add(s, 1, &dup, f->gallery, err, sizeof err), -1);
        fvi_search_destroy(s);
    }
}

/* Save, load, same answers; a truncated or foreign file is refused. */
static void test_save_load(void **state) {
    fixture *f = *state;
    char err[256], path[64], other[64];
    snprintf(path, sizeof path, "/tmp/fv_search_test_%d.idx", (int)getpid());
    snprintf(other, sizeof other, "/tmp/fv_search_test_%d.bad", (int)getpid());
    for (int k = 0; k < FVI_SEARCH_KINDS; k++) {
        fvi_search *s = build(f, (fvi_search_kind)k);
        assert_int_equal(fvi_search_remove(s, f->ids[0], err, sizeof err), 0);
        assert_int_equal(fvi_search_save(s, path, err, sizeof err), 0);
        fvi_search *t = fvi_search_load((fvi_search_kind)k, path, err, sizeof err);
        assert_non_null(t);
        assert_int_equal(fvi_search_count(t), fvi_search_count(s));
        assert_true(fvi_search_checksum(t) == fvi_search_checksum(s));
        assert_false(fvi_search_contains(t, f->ids[0]));
        for (int q = 0; q < 20; q++) {
            fvi_hit ha[5], hb[5];
            size_t na, nb;
            assert_int_equal(fvi_search_query(s, f->queries + q * D, 5, ha, &na, err, sizeof err),
                             0);
            assert_int_equal(fvi_search_query(t, f->queries + q * D, 5, hb, &nb, err, sizeof err),
                             0);
            assert_int_equal(na, nb);
            for (size_t i = 0; i < na; i++) assert_int_equal(ha[i].id, hb[i].id);
        }
        /* Wrong kind: exact files name their kind, FAISS files their type. */
        fvi_search_kind wrong = k == FVI_SEARCH_EXACT ? FVI_SEARCH_INT8 : FVI_SEARCH_EXACT;
        assert_null(fvi_search_load(wrong, path, err, sizeof err));
        /* Truncated. */
        FILE *in = fopen(path, "rb"), *out = fopen(other, "wb");
        char buf[1000];
        size_t got = fread(buf, 1, sizeof buf, in);
        fwrite(buf, 1, got / 2, out);
        fclose(in);
        fclose(out);
        assert_null(fvi_search_load((fvi_search_kind)k, other, err, sizeof err));
        assert_null(fvi_search_load((fvi_search_kind)k, "/nonexistent/x.idx", err, sizeof err));
        fvi_search_destroy(s);
        fvi_search_destroy(t);
    }
    remove(path);
    remove(other);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_exact_matches_naive),
        cmocka_unit_test(test_int8_equals_exact),
        cmocka_unit_test(test_faiss_flat_recall),
        cmocka_unit_test(test_faiss_hnsw_recall),
        cmocka_unit_test(test_faiss_ivfpq_recall),
        cmocka_unit_test(test_remove_and_readd),
        cmocka_unit_test(test_save_load),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
