/*
 * test_search.c: the search backends of src/search/search.h on synthetic
 * face-like galleries: many identities (random unit centres), a few
 * templates each (the centre plus noise), queries that are fresh noisy
 * samples of an identity.  exact is the reference: exact-int8 must give
 * the same answers, the FAISS backends recall@1 >= 0.99 against it;
 * deletes, re-adds and save/load must be reflected by every backend.
 * exact-int8 is also run with its float32 rows spilled to a file, on
 * adversarial near-ties, and with its scan split over two threads.
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
#include "search/kernels.h"
#include "search/search.h"

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

static fvsearch *build(fixture *f, fvsearch_kind kind) {
    char err[256];
    fvsearch *s = fvsearch_create(kind, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(fvsearch_add(s, N, f->ids, f->gallery, err, sizeof err), 0);
    assert_int_equal(fvsearch_count(s), N);
    return s;
}

/* exact-int8 with its float32 rows in a spill file under /tmp. */
static fvsearch *build_spilled(fixture *f) {
    char err[256];
    fvsearch *s = fvsearch_create(FVSEARCH_INT8, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(fvsearch_spill(s, "/tmp", err, sizeof err), 0);
    assert_int_equal(fvsearch_add(s, N, f->ids, f->gallery, err, sizeof err), 0);
    return s;
}

/* Variant v of the index under test: the backends, then spilled int8. */
#define VARIANTS (FVSEARCH_KINDS + 1)
static fvsearch *build_variant(fixture *f, int v) {
    return v < FVSEARCH_KINDS ? build(f, (fvsearch_kind)v) : build_spilled(f);
}
static fvsearch_kind variant_kind(int v) {
    return v < FVSEARCH_KINDS ? (fvsearch_kind)v : FVSEARCH_INT8;
}

/* The k nearest by a naive scan with fv_distance (ties: smaller id). */
static void naive_knn(const float *gal, const int64_t *ids, size_t n, const float *q, size_t k,
                      fvsearch_hit *out) {
    for (size_t j = 0; j < k; j++) out[j] = (fvsearch_hit){INT64_MAX, INFINITY};
    for (size_t r = 0; r < n; r++) {
        fvsearch_hit h = {ids[r], fv_distance(q, gal + r * D)};
        size_t at = k;
        while (at > 0 && (h.distance < out[at - 1].distance ||
                          (h.distance == out[at - 1].distance && h.id < out[at - 1].id)))
            at--;
        if (at == k) continue;
        memmove(out + at + 1, out + at, (k - at - 1) * sizeof *out);
        out[at] = h;
    }
}

/* The AVX2 kernel (where the CPU has it) against the portable loop, with
 * the extreme codes and a row count that leaves a tail. */
static void test_dots_kernel(void **state) {
    (void)state;
    enum { ROWS = 37 };
    int8_t q[D], codes[ROWS * D];
    for (int j = 0; j < D; j++) q[j] = (int8_t)(j % 3 == 0 ? 127 : j % 3 == 1 ? -127 : j - 64);
    for (int i = 0; i < ROWS * D; i++)
        codes[i] = (int8_t)(i % 5 == 0 ? -127 : i % 7 == 0 ? 127 : (int)(uniform() * 255) - 127);
    int32_t a[ROWS], b[ROWS];
    fvsearch_dots_i8(q, codes, ROWS, a);
    fvsearch_dots_i8_portable(q, codes, ROWS, b);
    for (int i = 0; i < ROWS; i++) assert_int_equal(a[i], b[i]);
    int32_t sum = 0; /* row 0 by hand */
    for (int j = 0; j < D; j++) sum += q[j] * codes[j];
    assert_int_equal(a[0], sum);
    print_message("int8 kernel: %s\n", fvsearch_dots_i8_simd() ? "AVX2" : "portable");
}

/* Near-ties that int8 cannot tell apart: copies of one vector moved by far
 * less than a quantisation step (so most share its code), exact
 * duplicates (equal distances: the smaller id wins), and queries right
 * next to them.  Spilled int8 must return exactly the naive answer. */
static void test_int8_near_ties(void **state) {
    (void)state;
    enum { M = 3000, K = 20 };
    float *gal = malloc(sizeof(float) * M * D), base[D], q[D];
    int64_t *ids = malloc(sizeof(int64_t) * M);
    for (int i = 0; i < D; i++) base[i] = (float)gauss();
    unit(base);
    for (int r = 0; r < M; r++) {
        ids[r] = 5 + 3 * (M - r); /* ids descending in row order */
        for (int i = 0; i < D; i++)
            gal[r * D + i] = r < 1000   ? base[i] + (float)(1e-4 * gauss())
                             : r < 1100 ? base[i]
                                        : (float)gauss() / 11.0f;
    }
    char err[256];
    fvsearch *s = fvsearch_create(FVSEARCH_INT8, err, sizeof err);
    assert_int_equal(fvsearch_spill(s, "/tmp", err, sizeof err), 0);
    assert_int_equal(fvsearch_add(s, M, ids, gal, err, sizeof err), 0);
    for (int t = 0; t < 20; t++) {
        for (int i = 0; i < D; i++) q[i] = base[i] + (float)((t < 10 ? 1e-4 : 0.05) * gauss());
        fvsearch_hit want[K], got[K];
        size_t ng = 0;
        naive_knn(gal, ids, M, q, K, want);
        assert_int_equal(fvsearch_query(s, q, K, got, &ng, err, sizeof err), 0);
        assert_int_equal(ng, K);
        for (int j = 0; j < K; j++) {
            assert_int_equal(got[j].id, want[j].id);
            assert_true(got[j].distance == want[j].distance);
        }
    }
    fvsearch_destroy(s);
    free(gal);
    free(ids);
}

/* A gallery big enough to be split: two scan threads give the same
 * answers as one, for exact and for spilled int8. */
static void test_split_scan(void **state) {
    (void)state;
    enum { M = 40000, K = 10, Q = 10 };
    float *gal = malloc(sizeof(float) * M * D);
    int64_t *ids = malloc(sizeof(int64_t) * M);
    for (int r = 0; r < M; r++) {
        for (int i = 0; i < D; i++) gal[r * D + i] = (float)gauss();
        unit(gal + r * D);
        ids[r] = r + 1;
    }
    char err[256];
    fvsearch *one = fvsearch_create(FVSEARCH_EXACT, err, sizeof err);
    fvsearch *two = fvsearch_create(FVSEARCH_EXACT, err, sizeof err);
    fvsearch *i8 = fvsearch_create(FVSEARCH_INT8, err, sizeof err);
    fvsearch_set_threads(two, 2);
    fvsearch_set_threads(i8, 2);
    assert_int_equal(fvsearch_spill(i8, "/tmp", err, sizeof err), 0);
    assert_int_equal(fvsearch_add(one, M, ids, gal, err, sizeof err), 0);
    assert_int_equal(fvsearch_add(two, M, ids, gal, err, sizeof err), 0);
    assert_int_equal(fvsearch_add(i8, M, ids, gal, err, sizeof err), 0);
    for (int t = 0; t < Q; t++) {
        const float *q = gal + (size_t)(t * 3989) * D; /* a gallery row: distance 0 */
        fvsearch_hit want[K], a[K], b[K], c[K];
        size_t na, nb, nc;
        naive_knn(gal, ids, M, q, K, want);
        assert_int_equal(fvsearch_query(one, q, K, a, &na, err, sizeof err), 0);
        assert_int_equal(fvsearch_query(two, q, K, b, &nb, err, sizeof err), 0);
        assert_int_equal(fvsearch_query(i8, q, K, c, &nc, err, sizeof err), 0);
        assert_int_equal(na, K);
        assert_int_equal(nb, K);
        assert_int_equal(nc, K);
        for (int j = 0; j < K; j++) {
            assert_int_equal(a[j].id, want[j].id);
            assert_int_equal(b[j].id, want[j].id);
            assert_int_equal(c[j].id, want[j].id);
            assert_true(c[j].distance == want[j].distance);
        }
    }
    fvsearch_destroy(one);
    fvsearch_destroy(two);
    fvsearch_destroy(i8);
    free(gal);
    free(ids);
}

static void test_names(void **state) {
    (void)state;
    for (int k = 0; k < FVSEARCH_KINDS; k++) {
        fvsearch_kind out;
        assert_int_equal(fvsearch_kind_parse(fvsearch_kind_name((fvsearch_kind)k), &out), 0);
        assert_int_equal(out, k);
    }
    fvsearch_kind out;
    assert_int_equal(fvsearch_kind_parse("faiss", &out), -1);
    assert_int_equal(fvsearch_kind_parse(NULL, &out), -1);
}

/* The exact backend against a naive scan with fv_distance. */
static void test_exact_matches_naive(void **state) {
    fixture *f = *state;
    fvsearch *s = build(f, FVSEARCH_EXACT);
    char err[256];
    for (int q = 0; q < 20; q++) {
        const float *qv = f->queries + q * D;
        int best = 0;
        float bd = INFINITY;
        for (int r = 0; r < N; r++) {
            float d = fv_distance(qv, f->gallery + r * D);
            if (d < bd) bd = d, best = r;
        }
        fvsearch_hit hits[5];
        size_t nh = 0;
        assert_int_equal(fvsearch_query(s, qv, 5, hits, &nh, err, sizeof err), 0);
        assert_int_equal(nh, 5);
        assert_int_equal(hits[0].id, f->ids[best]);
        assert_true(hits[0].distance == bd);
        for (size_t i = 1; i < nh; i++) assert_true(hits[i - 1].distance <= hits[i].distance);
    }
    fvsearch_destroy(s);
}

static void test_int8_equals_exact(void **state) {
    fixture *f = *state;
    fvsearch *a = build(f, FVSEARCH_EXACT), *b = build(f, FVSEARCH_INT8);
    fvsearch *c = build_spilled(f);
    assert_true(fvsearch_memory(b) > 0);
    /* Spilled, the index holds the codes only: under a third of exact. */
    assert_true(fvsearch_memory(c) * 3 < fvsearch_memory(a));
    char err[256];
    for (int q = 0; q < NQ; q++) {
        fvsearch_hit ha[10], hb[10], hc[10];
        size_t na, nb, nc;
        assert_int_equal(fvsearch_query(a, f->queries + q * D, 10, ha, &na, err, sizeof err), 0);
        assert_int_equal(fvsearch_query(b, f->queries + q * D, 10, hb, &nb, err, sizeof err), 0);
        assert_int_equal(fvsearch_query(c, f->queries + q * D, 10, hc, &nc, err, sizeof err), 0);
        assert_int_equal(na, nb);
        assert_int_equal(na, nc);
        for (size_t i = 0; i < na; i++) {
            assert_int_equal(ha[i].id, hb[i].id);
            assert_true(ha[i].distance == hb[i].distance);
            assert_int_equal(ha[i].id, hc[i].id);
            assert_true(ha[i].distance == hc[i].distance);
        }
    }
    fvsearch_destroy(a);
    fvsearch_destroy(b);
    fvsearch_destroy(c);
}

static void check_recall(fixture *f, fvsearch_kind kind) {
    fvsearch *a = build(f, FVSEARCH_EXACT), *b = build(f, kind);
    char err[256];
    int agree = 0;
    for (int q = 0; q < NQ; q++) {
        fvsearch_hit ha[1], hb[1];
        size_t na, nb;
        assert_int_equal(fvsearch_query(a, f->queries + q * D, 1, ha, &na, err, sizeof err), 0);
        assert_int_equal(fvsearch_query(b, f->queries + q * D, 1, hb, &nb, err, sizeof err), 0);
        assert_int_equal(na, 1);
        if (nb == 1 && hb[0].id == ha[0].id) {
            agree++;
            assert_true(hb[0].distance == ha[0].distance); /* exact re-rank */
        }
    }
    print_message("%s recall@1 = %.3f\n", fvsearch_kind_name(kind), agree / (double)NQ);
    assert_true(agree >= 0.99 * NQ);
    fvsearch_destroy(a);
    fvsearch_destroy(b);
}

static void test_faiss_flat_recall(void **state) {
    check_recall(*state, FVSEARCH_FAISS_FLAT);
}
static void test_faiss_hnsw_recall(void **state) {
    check_recall(*state, FVSEARCH_FAISS_HNSW);
}
static void test_faiss_ivfpq_recall(void **state) {
    check_recall(*state, FVSEARCH_FAISS_IVFPQ);
}

/* Remove the nearest template of each query: it is never returned again;
 * re-adding it (same id, new vector) makes it findable at its new place. */
static void test_remove_and_readd(void **state) {
    fixture *f = *state;
    char err[256];
    for (int k = 0; k < VARIANTS; k++) {
        fvsearch *s = build_variant(f, k);
        uint64_t sum0 = fvsearch_checksum(s);
        for (int q = 0; q < 30; q++) {
            const float *qv = f->queries + q * D;
            fvsearch_hit h[3];
            size_t nh;
            assert_int_equal(fvsearch_query(s, qv, 3, h, &nh, err, sizeof err), 0);
            assert_true(nh >= 1);
            int64_t gone = h[0].id;
            assert_int_equal(fvsearch_remove(s, gone, err, sizeof err), 0);
            assert_int_equal(fvsearch_remove(s, gone, err, sizeof err), 1);
            assert_false(fvsearch_contains(s, gone));
            assert_int_equal(fvsearch_query(s, qv, 3, h, &nh, err, sizeof err), 0);
            for (size_t i = 0; i < nh; i++) assert_true(h[i].id != gone);
            /* Back under the same id, now exactly at the query. */
            assert_int_equal(fvsearch_add(s, 1, &gone, qv, err, sizeof err), 0);
            assert_int_equal(fvsearch_query(s, qv, 1, h, &nh, err, sizeof err), 0);
            assert_int_equal(nh, 1);
            assert_int_equal(h[0].id, gone);
            assert_true(h[0].distance == 0.0f);
        }
        assert_int_equal(fvsearch_count(s), N);
        assert_true(fvsearch_checksum(s) == sum0);
        int64_t dup = f->ids[5];
        assert_int_equal(fvsearch_add(s, 1, &dup, f->gallery, err, sizeof err), -1);
        fvsearch_destroy(s);
    }
}

/* Save, load, same answers; a truncated or foreign file is refused. */
static void test_save_load(void **state) {
    fixture *f = *state;
    char err[256], path[64], other[64];
    snprintf(path, sizeof path, "/tmp/fv_search_test_%d.idx", (int)getpid());
    snprintf(other, sizeof other, "/tmp/fv_search_test_%d.bad", (int)getpid());
    for (int v = 0; v < VARIANTS; v++) {
        fvsearch_kind k = variant_kind(v);
        fvsearch *s = build_variant(f, v);
        assert_int_equal(fvsearch_remove(s, f->ids[0], err, sizeof err), 0);
        assert_int_equal(fvsearch_save(s, path, err, sizeof err), 0);
        fvsearch *t = fvsearch_load(k, path, err, sizeof err);
        assert_non_null(t);
        assert_int_equal(fvsearch_count(t), fvsearch_count(s));
        assert_true(fvsearch_checksum(t) == fvsearch_checksum(s));
        assert_false(fvsearch_contains(t, f->ids[0]));
        for (int q = 0; q < 20; q++) {
            fvsearch_hit ha[5], hb[5];
            size_t na, nb;
            assert_int_equal(fvsearch_query(s, f->queries + q * D, 5, ha, &na, err, sizeof err), 0);
            assert_int_equal(fvsearch_query(t, f->queries + q * D, 5, hb, &nb, err, sizeof err), 0);
            assert_int_equal(na, nb);
            for (size_t i = 0; i < na; i++) assert_int_equal(ha[i].id, hb[i].id);
        }
        /* Wrong kind: exact files name their kind, FAISS files their type. */
        fvsearch_kind wrong = k == FVSEARCH_EXACT ? FVSEARCH_INT8 : FVSEARCH_EXACT;
        assert_null(fvsearch_load(wrong, path, err, sizeof err));
        /* Truncated. */
        FILE *in = fopen(path, "rb"), *out = fopen(other, "wb");
        char buf[1000];
        size_t got = fread(buf, 1, sizeof buf, in);
        fwrite(buf, 1, got / 2, out);
        fclose(in);
        fclose(out);
        assert_null(fvsearch_load(k, other, err, sizeof err));
        assert_null(fvsearch_load(k, "/nonexistent/x.idx", err, sizeof err));
        fvsearch_destroy(s);
        fvsearch_destroy(t);
    }
    remove(path);
    remove(other);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_exact_matches_naive),
        cmocka_unit_test(test_int8_equals_exact),
        cmocka_unit_test(test_dots_kernel),
        cmocka_unit_test(test_int8_near_ties),
        cmocka_unit_test(test_split_scan),
        cmocka_unit_test(test_faiss_flat_recall),
        cmocka_unit_test(test_faiss_hnsw_recall),
        cmocka_unit_test(test_faiss_ivfpq_recall),
        cmocka_unit_test(test_remove_and_readd),
        cmocka_unit_test(test_save_load),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
