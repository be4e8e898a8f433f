/*
 * test_search_cluster.c: fvsearch_cluster (src/search/cluster.h) on
 * synthetic embeddings with known people: the right groups, numbered
 * largest first; faces far from everyone are noise; min_cluster_size
 * turns small groups into noise; one bridging face does not merge two
 * people (where single linkage does); the same labels whatever the thread
 * count; bad arguments and failed allocations are errors, never crashes;
 * and fvsearch_query_many answers as fvsearch_query does.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fvi.h"
#include "faceverify.h"
#include "search/cluster.h"
#include "search/search.h"

#define D FV_EMBED_DIM

static uint64_t rng = 88172645463325252ULL;
static double uniform(void) { /* xorshift64: [0, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* A random direction scaled to length len. */
static void direction(float *v, float len) {
    double n = 0;
    for (int i = 0; i < D; i++) {
        v[i] = (float)(uniform() - 0.5);
        n += (double)v[i] * v[i];
    }
    for (int i = 0; i < D; i++) v[i] = (float)(v[i] * len / sqrt(n));
}

/* count faces around centre c, each within about spread of it. */
static void around(float *out, const float *c, int count, float spread) {
    for (int k = 0; k < count; k++) {
        float d[D];
        direction(d, spread);
        for (int i = 0; i < D; i++) out[k * D + i] = c[i] + d[i];
    }
}

/* Three people (30, 10 and 20 faces, in that order of input) and 5
 * strangers, faces of a person within about 0.15 of its centre, centres
 * and strangers about 1.1 apart. */
enum { N = 65 };
static void people(float *emb, int *truth) {
    int sizes[3] = {30, 10, 20}, at = 0;
    for (int p = 0; p < 3; p++) {
        float c[D];
        direction(c, 0.8f);
        around(emb + at * D, c, sizes[p], 0.15f);
        for (int k = 0; k < sizes[p]; k++) truth[at + k] = p;
        at += sizes[p];
    }
    for (; at < N; at++) {
        direction(emb + at * D, 0.8f);
        truth[at] = -1;
    }
}

static void opts(fvsearch_cluster_opts *o) {
    fvsearch_cluster_opts_init(o);
    o->threshold = 0.5f;
}

/* The three people and strangers, with room for labels and the options. */
typedef struct scene {
    float emb[N * D];
    int truth[N];
    int32_t label[N];
    fvsearch_cluster_opts o;
} scene;

static scene *new_scene(void) {
    scene *sc = malloc(sizeof *sc);
    assert_non_null(sc);
    people(sc->emb, sc->truth);
    opts(&sc->o);
    return sc;
}

static void test_known_people(void **state) {
    (void)state;
    scene *sc = new_scene();
    float *emb = sc->emb;
    int *truth = sc->truth;
    int32_t *label = sc->label;
    fvsearch_cluster_opts o = sc->o;
    size_t nc = 99;
    char err[256] = "";
    assert_int_equal(fvsearch_cluster(emb, N, &o, label, &nc, err, sizeof err), 0);
    assert_int_equal(nc, 3);
    /* largest first: the 30 are cluster 0, the 20 cluster 1, the 10 cluster 2 */
    const int32_t want[3] = {0, 2, 1};
    for (int i = 0; i < N; i++) assert_int_equal(label[i], truth[i] < 0 ? -1 : want[truth[i]]);
    /* min_cluster_size 11: the person with 10 faces becomes noise */
    o.min_cluster_size = 11;
    assert_int_equal(fvsearch_cluster(emb, N, &o, label, &nc, err, sizeof err), 0);
    assert_int_equal(nc, 2);
    for (int i = 0; i < N; i++)
        assert_int_equal(label[i], truth[i] < 0 || truth[i] == 1 ? -1 : want[truth[i]]);
    free(sc);
}

static void test_deterministic(void **state) {
    (void)state;
    float emb[N * D];
    int truth[N];
    int32_t a[N], b[N];
    size_t na = 0, nb = 0;
    char err[256] = "";
    people(emb, truth);
    fvsearch_cluster_opts o;
    opts(&o);
    o.threshold = 0;
    o.fmr = 1e-3; /* through the calibration this time */
    assert_int_equal(fvsearch_cluster(emb, N, &o, a, &na, err, sizeof err), 0);
    o.threads = 3;
    o.k = 8;
    assert_int_equal(fvsearch_cluster(emb, N, &o, b, &nb, err, sizeof err), 0);
    o.k = 0;
    for (int run = 0; run < 3; run++) {
        assert_int_equal(fvsearch_cluster(emb, N, &o, b, &nb, err, sizeof err), 0);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, sizeof a);
    }
    assert_int_equal(na, 3);
}

/* Two people 0.9 apart (15 tight faces each) and one face halfway, 0.45
 * from both: within the link distance 0.5 of all 30.  Single linkage
 * merges the two people through it; Chinese whispers keeps them apart
 * (the bridge joins one of them). */
static void test_bridge_does_not_merge(void **state) {
    (void)state;
    enum { M = 31 };
    float emb[M * D], a[D], b[D], base[D];
    int32_t label[M];
    size_t nc = 0;
    char err[256] = "";
    direction(base, 0.6f);
    for (int i = 0; i < D; i++) a[i] = b[i] = base[i];
    a[0] += 0.45f;
    b[0] -= 0.45f;
    around(emb, a, 15, 0.05f);
    around(emb + 15 * D, b, 15, 0.05f);
    memcpy(emb + 30 * D, base, sizeof base);
    fvsearch_cluster_opts o;
    opts(&o);
    o.method = FVSEARCH_CLUSTER_COMPONENTS;
    assert_int_equal(fvsearch_cluster(emb, M, &o, label, &nc, err, sizeof err), 0);
    assert_int_equal(nc, 1);
    o.method = FVSEARCH_CLUSTER_WHISPERS;
    assert_int_equal(fvsearch_cluster(emb, M, &o, label, &nc, err, sizeof err), 0);
    assert_int_equal(nc, 2);
    for (int i = 1; i < 15; i++) assert_int_equal(label[i], label[0]);
    for (int i = 16; i < 30; i++) assert_int_equal(label[i], label[15]);
    assert_int_not_equal(label[0], label[15]);
    assert_true(label[30] == label[0] || label[30] == label[15]);
    assert_int_equal(label[30] == label[0] ? label[0] : label[15], 0); /* 16 faces: cluster 0 */
}

static void test_bad_arguments(void **state) {
    (void)state;
    float emb[2 * D] = {0};
    int32_t label[2];
    size_t nc = 0;
    char err[256] = "";
    fvsearch_cluster_opts o;
    fvsearch_cluster_opts_init(&o);
    assert_int_equal(fvsearch_cluster(emb, 2, NULL, label, &nc, err, sizeof err), -1);
    assert_int_equal(fvsearch_cluster(NULL, 2, &o, label, &nc, err, sizeof err), -1);
    assert_int_equal(fvsearch_cluster(emb, 2, &o, NULL, &nc, err, sizeof err), -1);
    o.fmr = 0.5; /* above FV_FMR_MAX */
    assert_int_equal(fvsearch_cluster(emb, 2, &o, label, &nc, err, sizeof err), -1);
    assert_non_null(strstr(err, "fmr"));
    fvsearch_cluster_opts_init(&o);
    o.k = FVSEARCH_CLUSTER_MAX_K + 1;
    assert_int_equal(fvsearch_cluster(emb, 2, &o, label, &nc, err, sizeof err), -1);
    fvsearch_cluster_opts_init(&o);
    o.threads = 300;
    assert_int_equal(fvsearch_cluster(emb, 2, &o, label, &nc, err, sizeof err), -1);
    fvsearch_cluster_opts_init(&o);
    o.threshold = NAN;
    assert_int_equal(fvsearch_cluster(emb, 2, &o, label, &nc, err, sizeof err), -1);
    fvsearch_cluster_opts_init(&o);
    o.method = FVSEARCH_CLUSTER_METHODS;
    assert_int_equal(fvsearch_cluster(emb, 2, &o, label, &nc, err, sizeof err), -1);
    assert_int_equal(
        fvsearch_cluster(emb, FVSEARCH_CLUSTER_MAX_N + 1, &o, label, &nc, err, sizeof err), -1);
    /* no faces: no clusters; two identical faces: one cluster */
    fvsearch_cluster_opts_init(&o);
    assert_int_equal(fvsearch_cluster(NULL, 0, &o, NULL, &nc, err, sizeof err), 0);
    assert_int_equal(nc, 0);
    assert_int_equal(fvsearch_cluster(emb, 2, &o, label, &nc, err, sizeof err), 0);
    assert_int_equal(nc, 1);
    assert_int_equal(label[0], 0);
    assert_int_equal(label[1], 0);
    /* the default link distance is the calibration's at 3e-5 */
    float t = 0, t3 = 0;
    assert_int_equal(fvsearch_cluster_threshold(&o, &t, err, sizeof err), 0);
    assert_int_equal(fv_fmr_threshold(NULL, 3e-5, 1.0f, &t3), FV_OK);
    assert_true(t == t3 && t > 0.4f && t < 0.6f);
}

/* Every allocation failing in turn: an error, no leak (ASan), never a
 * crash; then it succeeds. */
static void test_allocation_failures(void **state) {
    (void)state;
    scene *sc = new_scene();
    size_t nc = 0;
    char err[256] = "";
    int failed = 0;
    for (long k = 0; k < 200; k++) {
        fvi_alloc_fail_after(k);
        int rc = fvsearch_cluster(sc->emb, N, &sc->o, sc->label, &nc, err, sizeof err);
        fvi_alloc_fail_after(-1);
        if (rc == 0) break;
        failed++;
    }
    assert_true(failed > 3);
    assert_int_equal(fvsearch_cluster(sc->emb, N, &sc->o, sc->label, &nc, err, sizeof err), 0);
    assert_int_equal(nc, 3);
    free(sc);
}

static void test_query_many_matches_query(void **state) {
    (void)state;
    enum { R = 300, K = 7 };
    float *emb = malloc(R * D * sizeof *emb);
    int64_t ids[R];
    assert_non_null(emb);
    for (int i = 0; i < R; i++) {
        direction(emb + i * D, 1.0f);
        ids[i] = 1000 + i;
    }
    char err[256] = "";
    for (int kind = FVSEARCH_EXACT; kind <= FVSEARCH_INT8; kind++) {
        fvsearch *s = fvsearch_create((fvsearch_kind)kind, err, sizeof err);
        assert_non_null(s);
        assert_int_equal(fvsearch_add(s, R, ids, emb, err, sizeof err), 0);
        fvsearch_hit many[R * K], one[K];
        size_t nmany[R], none = 0;
        assert_int_equal(fvsearch_query_many(s, R, emb, K, many, nmany, err, sizeof err), 0);
        for (int q = 0; q < R; q++) {
            assert_int_equal(fvsearch_query(s, emb + q * D, K, one, &none, err, sizeof err), 0);
            assert_int_equal(nmany[q], none);
            assert_int_equal(many[q * K].id, 1000 + q); /* itself first */
            for (size_t h = 0; h < none; h++) {
                assert_int_equal(many[q * K + h].id, one[h].id);
                assert_float_equal(many[q * K + h].distance, one[h].distance, 1e-6);
            }
        }
        fvsearch_destroy(s);
    }
    free(emb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_people),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_bridge_does_not_merge),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_query_many_matches_query),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
