/*
 * test_train.c: the training side (src/train/).
 *
 * Every layer's backward pass against central-difference gradients of
 * L = sum(out * R) for a fixed random R (parameters and the input), on tiny
 * networks so the suite stays fast under ASan; gradients independent of
 * the pool size (bitwise); semi-hard and batch-hard mining on a hand-made
 * batch whose right triplets are worked out in the comments; the triplet
 * loss's value and gradient; optimisers and schedules; model save/load
 * giving bitwise identical outputs, checkpoints, corrupt files; and a short
 * training run on synthetic identities that lowers the loss.
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

#include "core/fvi.h"
#include "core/workers.h"
#include "train/train.h"

#define L_(k, a_, b_, c_, d_)                                                                      \
    { .kind = (k), .a = (a_), .b = (b_), .c = (c_), .d = (d_) }

/* L = sum(out * R) after a training forward of the current input. */
static double loss_of(fvt_net *net, fvt_ws *ws, const float *in, size_t in_n, int n, const float *R,
                      fvi_workers *pool) {
    memcpy(fvt_ws_input(ws), in, sizeof(float) * in_n);
    const float *y = fvt_forward(net, ws, n, 1, pool);
    double s = 0;
    for (int k = 0; k < n * fvt_net_out_dim(net); k++) s += (double)y[k] * R[k];
    return s;
}

static int close_enough(double a, double b) {
    return fabs(a - b) <= 3e-2 * fmax(fabs(a), fabs(b)) + 3e-3;
}

/* A ReLU or max-pool kink inside [-eps, eps] makes the one-sided slopes
 * disagree; such a probe says nothing about the gradient and is skipped. */
static int kink(double lp, double l0, double lm, double eps) {
    return !close_enough((lp - l0) / eps, (l0 - lm) / eps);
}

typedef struct gc_probe {
    fvt_net *net;
    fvt_ws *ws;
    float *in;
    size_t in_n;
    int n;
    const float *R;
    double l0;
    int checked, skipped, bad;
} gc_probe;

/* Central difference of the loss in *slot against the analytic value. */
static void probe(gc_probe *p, float *slot, float analytic, const char *what, size_t k) {
    const float eps = 1e-3f;
    float keep = *slot;
    *slot = keep + eps;
    double lp = loss_of(p->net, p->ws, p->in, p->in_n, p->n, p->R, NULL);
    *slot = keep - eps;
    double lm = loss_of(p->net, p->ws, p->in, p->in_n, p->n, p->R, NULL);
    *slot = keep;
    double num = (lp - lm) / (2.0 * eps);
    if (kink(lp, p->l0, lm, eps)) {
        p->skipped++;
        return;
    }
    p->checked++;
    if (!close_enough(num, analytic)) {
        p->bad++;
        print_error("%s %zu: analytic %g numeric %g\n", what, k, analytic, num);
    }
}

/* Checks up to `per` parameters of each layer plus up to `per` inputs. */
static void grad_check(const fvt_layer *spec, int nl, int c, int h, int w, int n, int per) {
    fvt_net *net = NULL;
    char err[200] = "";
    assert_int_equal(fvt_net_create(spec, nl, c, h, w, &net, err, sizeof(err)), FV_OK);
    fvt_net_init(net, 7);
    uint64_t rng = 99;
    /* biases and BN shifts away from zero so their gradients matter */
    for (size_t k = 0; k < net->nparams; k++)
        if (!net->decay[k]) net->params[k] += 0.2f * fvt_randn(&rng);
    fvt_ws *ws = NULL;
    assert_int_equal(fvt_ws_create(net, n, 1, &ws), FV_OK);
    size_t in_n = (size_t)n * c * h * w;
    int od = fvt_net_out_dim(net);
    float *in = malloc(sizeof(float) * in_n), *R = malloc(sizeof(float) * n * od);
    float *state0 = malloc(sizeof(float) * (net->nstate + 1));
    for (size_t k = 0; k < in_n; k++) in[k] = fvt_randn(&rng);
    for (int k = 0; k < n * od; k++) R[k] = fvt_randn(&rng);
    memcpy(state0, net->state, sizeof(float) * net->nstate);

    loss_of(net, ws, in, in_n, n, R, NULL);
    fvt_net_zero_grad(net);
    fvt_backward(net, ws, n, R, NULL);
    float *g = malloc(sizeof(float) * (net->nparams + 1)), *gin = malloc(sizeof(float) * in_n);
    memcpy(g, net->grads, sizeof(float) * net->nparams);
    memcpy(gin, fvt_ws_dinput(ws), sizeof(float) * in_n);

    gc_probe pr = {net, ws, in, in_n, n, R, loss_of(net, ws, in, in_n, n, R, NULL), 0, 0, 0};
    for (int li = 0; li < nl; li++) {
        const fvt_layer *L = &net->layers[li];
        size_t cnt = L->nw + L->nb;
        for (int t = 0; t < per && cnt; t++) {
            size_t k = L->w_off + (size_t)(fvt_rand(&rng) % cnt);
            probe(&pr, net->params + k, g[k], "param", k);
        }
    }
    for (int t = 0; t < per; t++) {
        size_t k = (size_t)(fvt_rand(&rng) % in_n);
        probe(&pr, in + k, gin[k], "input", k);
    }
    int checked = pr.checked, skipped = pr.skipped, bad = pr.bad;
    assert_true(checked > 0);
    if (skipped * 4 > checked) print_error("checked %d skipped %d\n", checked, skipped);
    assert_true(skipped * 4 <= checked);
    assert_int_equal(bad, 0);
    /* training forwards moved the BN running statistics */
    if (net->nstate) assert_memory_not_equal(state0, net->state, sizeof(float) * net->nstate);
    free(in), free(R), free(g), free(gin), free(state0);
    fvt_ws_destroy(ws);
    fvt_net_destroy(net);
}

static void test_grad_conv(void **s) {
    (void)s;
    const fvt_layer a[] = {L_(FVT_CONV, 4, 3, 1, 1), L_(FVT_GAP, 0, 0, 0, 0)};
    grad_check(a, 2, 3, 6, 5, 2, 40);
    const fvt_layer b[] = {L_(FVT_CONV, 5, 3, 2, 1), L_(FVT_RELU, 0, 0, 0, 0),
                           L_(FVT_CONV, 3, 1, 1, 0), L_(FVT_GAP, 0, 0, 0, 0)};
    grad_check(b, 4, 2, 7, 7, 3, 30);
}

static void test_grad_bn_relu(void **s) {
    (void)s;
    const fvt_layer a[] = {L_(FVT_BN, 0, 0, 0, 0), L_(FVT_RELU, 0, 0, 0, 0),
                           L_(FVT_CONV, 3, 3, 1, 1), L_(FVT_GAP, 0, 0, 0, 0)};
    grad_check(a, 4, 3, 5, 5, 3, 30);
}

static void test_grad_pools(void **s) {
    (void)s;
    const fvt_layer a[] = {L_(FVT_CONV, 3, 3, 1, 1), L_(FVT_MAXPOOL, 2, 2, 0, 0),
                           L_(FVT_GAP, 0, 0, 0, 0)};
    grad_check(a, 3, 2, 6, 6, 2, 30);
    const fvt_layer b[] = {L_(FVT_CONV, 3, 3, 1, 1), L_(FVT_AVGPOOL, 3, 2, 0, 0),
                           L_(FVT_GAP, 0, 0, 0, 0)};
    grad_check(b, 3, 2, 7, 7, 2, 30);
}

static void test_grad_fc_l2_skip(void **s) {
    (void)s;
    const fvt_layer a[] = {L_(FVT_FC, 10, 0, 0, 0), L_(FVT_RELU, 0, 0, 0, 0),
                           L_(FVT_FC, 6, 0, 0, 0), L_(FVT_SKIP, 0, 0, 0, 0),
                           L_(FVT_L2NORM, 0, 0, 0, 0)};
    grad_check(a, 5, 6, 1, 1, 4, 40);
}

static void test_grad_whole_cnn(void **s) {
    (void)s;
    const fvt_layer a[] = {L_(FVT_CONV, 4, 3, 1, 1), L_(FVT_BN, 0, 0, 0, 0),
                           L_(FVT_RELU, 0, 0, 0, 0), L_(FVT_MAXPOOL, 2, 2, 0, 0),
                           L_(FVT_CONV, 6, 3, 1, 1), L_(FVT_BN, 0, 0, 0, 0),
                           L_(FVT_RELU, 0, 0, 0, 0), L_(FVT_GAP, 0, 0, 0, 0),
                           L_(FVT_FC, 5, 0, 0, 0),   L_(FVT_L2NORM, 0, 0, 0, 0)};
    grad_check(a, 10, 3, 8, 8, 4, 25);
}

/* Gradients do not depend on the pool size (per-sample partials are summed
 * in sample order). */
static void test_grads_thread_independent(void **s) {
    (void)s;
    const fvt_layer a[] = {L_(FVT_CONV, 8, 3, 1, 1), L_(FVT_BN, 0, 0, 0, 0),
                           L_(FVT_RELU, 0, 0, 0, 0), L_(FVT_CONV, 8, 3, 2, 1),
                           L_(FVT_GAP, 0, 0, 0, 0),  L_(FVT_FC, 4, 0, 0, 0)};
    fvt_net *net = NULL;
    assert_int_equal(fvt_net_create(a, 6, 3, 12, 12, &net, NULL, 0), FV_OK);
    fvt_net_init(net, 3);
    const int n = 6;
    size_t in_n = (size_t)n * 3 * 144;
    float *in = malloc(sizeof(float) * in_n), R[6 * 4];
    uint64_t rng = 5;
    for (size_t k = 0; k < in_n; k++) in[k] = fvt_randn(&rng);
    for (int k = 0; k < n * 4; k++) R[k] = fvt_randn(&rng);
    float *g1 = malloc(sizeof(float) * net->nparams);
    for (int threads = 1; threads <= 2; threads++) {
        fvi_workers *pool = fvi_workers_create(threads);
        fvt_ws *ws = NULL;
        assert_int_equal(fvt_ws_create(net, n, threads, &ws), FV_OK);
        memcpy(fvt_ws_input(ws), in, sizeof(float) * in_n);
        fvt_forward(net, ws, n, 1, pool);
        fvt_net_zero_grad(net);
        fvt_backward(net, ws, n, R, pool);
        if (threads == 1)
            memcpy(g1, net->grads, sizeof(float) * net->nparams);
        else
            assert_memory_equal(g1, net->grads, sizeof(float) * net->nparams);
        fvt_ws_destroy(ws);
        fvi_workers_destroy(pool);
    }
    free(in), free(g1);
    fvt_net_destroy(net);
}

/* 1-d embeddings; labels 0 0 1 1 2 2; squared distances worked out by hand:
 *   e = 0.0 1.0 | 1.5 3.0 | 0.5 5.0
 * semi-hard (closest negative with d_an > d_ap, else the farthest):
 *   a0 p1 d_ap=1     negs 2:2.25 3:9 4:0.25 5:25       -> 2
 *   a1 p0 d_ap=1     negs 2:0.25 3:4 4:0.25 5:16       -> 3
 *   a2 p3 d_ap=2.25  negs 0:2.25 1:0.25 4:1 5:12.25    -> 5 (0 is not farther)
 *   a3 p2 d_ap=2.25  negs 0:9 1:4 4:6.25 5:4           -> 1 (tie with 5: lower index)
 *   a4 p5 d_ap=20.25 negs 0:.25 1:.25 2:1 3:6.25       -> none farther: 3 (farthest)
 *   a5 p4 d_ap=20.25 negs 0:25 1:16 2:12.25 3:4        -> 0
 * batch-hard (farthest positive, closest negative):
 *   a0 -> (1, 4)  a1 -> (0, 2)  a2 -> (3, 1)  a3 -> (2, 1)  a4 -> (5, 0)  a5 -> (4, 3) */
static void test_mining_hand_made(void **s) {
    (void)s;
    const float e[6] = {0.0f, 1.0f, 1.5f, 3.0f, 0.5f, 5.0f};
    const int lab[6] = {0, 0, 1, 1, 2, 2};
    fvt_triplet t[64];
    size_t nt = fvt_mine(e, lab, 6, 1, FVT_MINE_SEMIHARD, t, 64);
    const int semi[6][3] = {{0, 1, 2}, {1, 0, 3}, {2, 3, 5}, {3, 2, 1}, {4, 5, 3}, {5, 4, 0}};
    assert_int_equal(nt, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(t[i].a, semi[i][0]);
        assert_int_equal(t[i].p, semi[i][1]);
        assert_int_equal(t[i].n, semi[i][2]);
    }
    /* margin 0.5: only (4,5,3) is active: 20.25 - 6.25 + 0.5 = 14.5 */
    size_t active = 0;
    float loss = fvt_triplet_loss(e, 6, 1, t, nt, 0.5f, NULL, &active);
    assert_int_equal(active, 1);
    assert_float_equal(loss, 14.5f / 6.0f, 1e-5);

    nt = fvt_mine(e, lab, 6, 1, FVT_MINE_HARD, t, 64);
    const int hard[6][3] = {{0, 1, 4}, {1, 0, 2}, {2, 3, 1}, {3, 2, 1}, {4, 5, 0}, {5, 4, 3}};
    assert_int_equal(nt, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(t[i].a, hard[i][0]);
        assert_int_equal(t[i].p, hard[i][1]);
        assert_int_equal(t[i].n, hard[i][2]);
    }
    /* the cap is respected */
    assert_int_equal(fvt_mine(e, lab, 6, 1, FVT_MINE_SEMIHARD, t, 2), 2);
}

static void test_triplet_loss_gradient(void **s) {
    (void)s;
    enum { N = 6, D = 3 };
    float e[N * D], g[N * D];
    const int lab[N] = {0, 0, 1, 1, 2, 2};
    uint64_t rng = 11;
    for (int k = 0; k < N * D; k++) e[k] = 0.5f * fvt_randn(&rng);
    fvt_triplet t[64];
    size_t nt = fvt_mine(e, lab, N, D, FVT_MINE_SEMIHARD, t, 64);
    size_t active;
    fvt_triplet_loss(e, N, D, t, nt, 1.0f, g, &active);
    assert_true(active > 0);
    for (int k = 0; k < N * D; k++) {
        float keep = e[k];
        e[k] = keep + 1e-3f;
        double lp = fvt_triplet_loss(e, N, D, t, nt, 1.0f, NULL, NULL);
        e[k] = keep - 1e-3f;
        double lm = fvt_triplet_loss(e, N, D, t, nt, 1.0f, NULL, NULL);
        e[k] = keep;
        assert_true(close_enough((lp - lm) / 2e-3, g[k]));
    }
}

static void test_optimisers_and_schedules(void **s) {
    (void)s;
    /* minimise 0.5*|p - target|^2 */
    const float target[3] = {1.0f, -2.0f, 0.5f};
    const unsigned char decay[3] = {0, 0, 0};
    for (int kind = FVT_SGD; kind <= FVT_ADAM; kind++) {
        fvt_optim o;
        assert_int_equal(fvt_optim_init(&o, (fvt_opt_kind)kind, 3), FV_OK);
        float p[3] = {0, 0, 0}, g[3];
        for (int it = 0; it < 2000; it++) {
            for (int k = 0; k < 3; k++) g[k] = p[k] - target[k];
            fvt_optim_step(&o, p, g, decay, kind == FVT_SGD ? 0.05f : 0.01f);
        }
        for (int k = 0; k < 3; k++) assert_float_equal(p[k], target[k], 1e-2);
        fvt_optim_free(&o);
    }
    /* weight decay pulls a parameter with zero gradient towards 0 */
    fvt_optim o;
    assert_int_equal(fvt_optim_init(&o, FVT_SGD, 1), FV_OK);
    o.weight_decay = 0.1f;
    o.momentum = 0.0f;
    float p = 1.0f, g = 0.0f;
    const unsigned char d1 = 1;
    fvt_optim_step(&o, &p, &g, &d1, 1.0f);
    assert_float_equal(p, 0.9f, 1e-6);
    fvt_optim_free(&o);
    assert_float_equal(fvt_lr_at(FVT_SCHED_COSINE, 0.1f, 0, 10, 0), 0.1f, 1e-6);
    assert_float_equal(fvt_lr_at(FVT_SCHED_COSINE, 0.1f, 10, 10, 0), 0.001f, 1e-6);
    assert_float_equal(fvt_lr_at(FVT_SCHED_COSINE, 0.1f, 5, 10, 0), 0.0505f, 1e-6);
    assert_float_equal(fvt_lr_at(FVT_SCHED_STEP, 0.1f, 25, 100, 10), 0.001f, 1e-7);
    assert_float_equal(fvt_lr_at(FVT_SCHED_CONST, 0.1f, 25, 100, 10), 0.1f, 0);
}

static const fvt_layer small_cnn[] = {L_(FVT_CONV, 6, 3, 1, 1), L_(FVT_BN, 0, 0, 0, 0),
                                      L_(FVT_RELU, 0, 0, 0, 0), L_(FVT_MAXPOOL, 2, 2, 0, 0),
                                      L_(FVT_CONV, 8, 3, 1, 1), L_(FVT_BN, 0, 0, 0, 0),
                                      L_(FVT_RELU, 0, 0, 0, 0), L_(FVT_GAP, 0, 0, 0, 0),
                                      L_(FVT_FC, 8, 0, 0, 0),   L_(FVT_L2NORM, 0, 0, 0, 0)};

static void tmp_path(char *buf, size_t cap, const char *tag) {
    snprintf(buf, cap, "/tmp/fv_test_train_%ld_%s.fvm", (long)getpid(), tag);
}

static void test_model_roundtrip(void **s) {
    (void)s;
    fvt_net *net = NULL, *back = NULL;
    assert_int_equal(fvt_net_create(small_cnn, 10, 3, 8, 8, &net, NULL, 0), FV_OK);
    fvt_net_init(net, 21);
    fvt_ws *ws = NULL;
    assert_int_equal(fvt_ws_create(net, 4, 1, &ws), FV_OK);
    uint64_t rng = 8;
    size_t in_n = 4 * 3 * 64;
    float *in = malloc(sizeof(float) * in_n), out1[32], out2[32];
    for (size_t k = 0; k < in_n; k++) in[k] = fvt_randn(&rng);
    memcpy(fvt_ws_input(ws), in, sizeof(float) * in_n);
    fvt_forward(net, ws, 4, 1, NULL); /* moves BN running stats */
    memcpy(fvt_ws_input(ws), in, sizeof(float) * in_n);
    memcpy(out1, fvt_forward(net, ws, 4, 0, NULL), sizeof(out1));

    char path[128], err[256] = "";
    tmp_path(path, sizeof(path), "model");
    fvt_meta meta = {0};
    snprintf(meta.kind, sizeof(meta.kind), "scratch");
    meta.norm_mean = 0.5f, meta.norm_std = 0.25f, meta.threshold = 0.75f;
    meta.val_accuracy = 0.8f, meta.val_auc = 0.9f;
    snprintf(meta.summary, sizeof(meta.summary), "unit test\nsecond line");
    assert_int_equal(fvt_model_save(path, net, &meta, NULL, NULL, err, sizeof(err)), FV_OK);
    char id[64];
    fvt_model_id(net, "scratch", id, sizeof(id));
    assert_string_equal(meta.id, id);

    fvt_meta m2;
    assert_int_equal(fvt_model_load(path, &back, &m2, NULL, NULL, err, sizeof(err)), FV_OK);
    assert_string_equal(m2.id, id);
    assert_string_equal(m2.kind, "scratch");
    assert_float_equal(m2.threshold, 0.75f, 0);
    assert_float_equal(m2.val_auc, 0.9f, 0);
    assert_string_equal(m2.summary, "unit test second line");
    fvt_ws *ws2 = NULL;
    assert_int_equal(fvt_ws_create(back, 4, 1, &ws2), FV_OK);
    memcpy(fvt_ws_input(ws2), in, sizeof(float) * in_n);
    memcpy(out2, fvt_forward(back, ws2, 4, 0, NULL), sizeof(out2));
    assert_memory_equal(out1, out2, sizeof(out1));

    /* the public embedder reads the same file */
    fv_model *pm = NULL;
    assert_int_equal(fv_model_load(path, &pm, err, sizeof(err)), FV_OK);
    assert_string_equal(fv_model_id(pm), id);
    assert_int_equal(fv_model_dim(pm), 8);
    assert_string_equal(fv_model_kind(pm), "scratch");
    fv_model_destroy(pm);

    /* truncated file, bad magic, missing file */
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz);
    assert_int_equal(fread(buf, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    f = fopen(path, "wb");
    fwrite(buf, 1, (size_t)sz - 4, f);
    fclose(f);
    fvt_net *bad = NULL;
    assert_int_equal(fvt_model_load(path, &bad, &m2, NULL, NULL, err, sizeof(err)),
                     FV_E_MODEL_CORRUPT);
    assert_null(bad);
    buf[0] = 'X';
    f = fopen(path, "wb");
    fwrite(buf, 1, (size_t)sz, f);
    fclose(f);
    assert_int_equal(fvt_model_load(path, &bad, &m2, NULL, NULL, err, sizeof(err)),
                     FV_E_MODEL_CORRUPT);
    remove(path);
    assert_int_equal(fvt_model_load(path, &bad, &m2, NULL, NULL, err, sizeof(err)),
                     FV_E_MODEL_MISSING); /* as for every model file (test_files.c) */
    free(buf), free(in);
    fvt_ws_destroy(ws), fvt_ws_destroy(ws2);
    fvt_net_destroy(net), fvt_net_destroy(back);
}

static void test_checkpoint_roundtrip(void **s) {
    (void)s;
    fvt_net *net = NULL, *back = NULL;
    assert_int_equal(fvt_net_create(small_cnn, 10, 3, 8, 8, &net, NULL, 0), FV_OK);
    fvt_net_init(net, 4);
    fvt_optim o, o2;
    assert_int_equal(fvt_optim_init(&o, FVT_ADAM, net->nparams), FV_OK);
    for (size_t k = 0; k < net->nparams; k++) net->grads[k] = 0.01f * (float)(k % 7);
    fvt_optim_step(&o, net->params, net->grads, net->decay, 1e-3f);
    fvt_ckpt ck = {3, 123456789012345ull, 0.75f, 1}, ck2;
    fvt_meta meta = {0}, m2;
    snprintf(meta.kind, sizeof(meta.kind), "scratch");
    meta.norm_std = 1.0f;
    char path[128], err[256];
    tmp_path(path, sizeof(path), "ckpt");
    assert_int_equal(fvt_model_save(path, net, &meta, &o, &ck, err, sizeof(err)), FV_OK);
    assert_int_equal(fvt_model_load(path, &back, &m2, &o2, &ck2, err, sizeof(err)), FV_OK);
    assert_int_equal(o2.kind, FVT_ADAM);
    assert_int_equal(o2.step, 1);
    assert_memory_equal(o.m, o2.m, sizeof(float) * o.n);
    assert_memory_equal(o.v, o2.v, sizeof(float) * o.n);
    assert_int_equal(ck2.epoch, 3);
    assert_true(ck2.rng == ck.rng);
    assert_int_equal(ck2.bad_epochs, 1);
    assert_memory_equal(net->params, back->params, sizeof(float) * net->nparams);
    /* a plain model is not a checkpoint */
    fvt_net_destroy(back);
    back = NULL;
    assert_int_equal(fvt_model_save(path, net, &meta, NULL, NULL, err, sizeof(err)), FV_OK);
    fvt_optim o3;
    assert_int_equal(fvt_model_load(path, &back, &m2, &o3, &ck2, err, sizeof(err)),
                     FV_E_MODEL_CORRUPT);
    remove(path);
    fvt_optim_free(&o), fvt_optim_free(&o2);
    fvt_net_destroy(net);
}

static void test_compare_refuses_mixed_models(void **s) {
    (void)s;
    float a[4] = {0, 0, 0, 0}, b[4] = {3, 4, 0, 0}, d = -1;
    assert_int_equal(fv_compare("scratch-1", a, "scratch-1", b, 4, &d), FV_OK);
    assert_float_equal(d, 5.0f, 1e-6);
    assert_int_equal(fv_compare("scratch-1", a, "adapter-2", b, 4, &d), FV_E_MODEL_MISMATCH);
    assert_int_equal(fv_compare(NULL, a, FV_MODEL_ID, b, 4, &d), FV_OK);
    assert_int_equal(fv_compare(NULL, a, "scratch-1", b, 4, &d), FV_E_MODEL_MISMATCH);
    assert_string_equal(fv_status_name(FV_E_MODEL_MISMATCH), "model_mismatch");
}

/* Synthetic identities: each a fixed random 8x8x3 pattern plus noise.  A
 * few hundred steps of semi-hard triplet training lower the loss, and
 * identities separate better than with the initial weights. */
static double separation(fvt_net *net, fvt_ws *ws, const float *protos, int ids, uint64_t seed) {
    /* mean distance between identities minus mean within, fresh samples */
    const int per = 4, n = ids * per;
    uint64_t rng = seed;
    float *in = fvt_ws_input(ws);
    for (int s = 0; s < n; s++)
        for (int k = 0; k < 192; k++)
            in[((size_t)(k / 64) * n + s) * 64 + k % 64] =
                protos[(s / per) * 192 + k] + 0.7f * fvt_randn(&rng);
    const float *y = fvt_forward(net, ws, n, 0, NULL);
    double win = 0, btw = 0;
    int nw = 0, nb = 0;
    int d = fvt_net_out_dim(net);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double s2 = 0;
            for (int k = 0; k < d; k++)
                s2 += (y[i * d + k] - y[j * d + k]) * (y[i * d + k] - y[j * d + k]);
            if (i / per == j / per)
                win += sqrt(s2), nw++;
            else
                btw += sqrt(s2), nb++;
        }
    return btw / nb - win / nw;
}

static void test_short_training_separates(void **s) {
    (void)s;
    enum { IDS = 6, P = 4, K = 3, N = P * K };
    fvt_net *net = NULL;
    assert_int_equal(fvt_net_create(small_cnn, 10, 3, 8, 8, &net, NULL, 0), FV_OK);
    fvt_net_init(net, 1);
    fvt_ws *ws = NULL;
    assert_int_equal(fvt_ws_create(net, IDS * 4, 1, &ws), FV_OK);
    float protos[IDS * 192];
    uint64_t rng = 77;
    for (int k = 0; k < IDS * 192; k++) protos[k] = fvt_randn(&rng);
    double sep0 = separation(net, ws, protos, IDS, 1000);
    fvt_optim o;
    assert_int_equal(fvt_optim_init(&o, FVT_ADAM, net->nparams), FV_OK);
    int labels[N];
    float grad[N * 8];
    fvt_triplet t[N * N];
    double first = 0, last = 0;
    for (int step = 0; step < 150; step++) {
        float *in = fvt_ws_input(ws);
        for (int i = 0; i < N; i++) {
            int id = (int)((step * P + i / K) % IDS);
            labels[i] = id;
            for (int k = 0; k < 192; k++)
                in[((size_t)(k / 64) * N + i) * 64 + k % 64] =
                    protos[id * 192 + k] + 0.7f * fvt_randn(&rng);
        }
        const float *y = fvt_forward(net, ws, N, 1, NULL);
        size_t nt = fvt_mine(y, labels, N, 8, FVT_MINE_SEMIHARD, t, N * N), act;
        float loss = fvt_triplet_loss(y, N, 8, t, nt, 0.2f, grad, &act);
        if (step < 10) first += loss;
        if (step >= 140) last += loss;
        fvt_net_zero_grad(net);
        fvt_backward(net, ws, N, grad, NULL);
        fvt_optim_step(&o, net->params, net->grads, net->decay, 3e-3f);
    }
    double sep1 = separation(net, ws, protos, IDS, 1000);
    print_message("loss %.4f -> %.4f, separation %.4f -> %.4f\n", first / 10, last / 10, sep0,
                  sep1);
    assert_true(last < 0.5 * first);
    assert_true(sep1 > sep0 + 0.1);
    fvt_optim_free(&o);
    fvt_ws_destroy(ws);
    fvt_net_destroy(net);
}

/* A workspace sized for max_n serves every smaller batch (the conv's tiling
 * changes with n; ASan watches the scratch), and in eval mode a sample's
 * embedding does not depend on its batch. */
static void test_partial_batches(void **s) {
    (void)s;
    enum { MAXN = 24, SIDE = 16 };
    fvt_net *net = NULL;
    assert_int_equal(fvt_net_create(small_cnn, 10, 3, SIDE, SIDE, &net, NULL, 0), FV_OK);
    fvt_net_init(net, 2);
    fvi_workers *pool = fvi_workers_create(2);
    fvt_ws *ws = NULL;
    assert_int_equal(fvt_ws_create(net, MAXN, 2, &ws), FV_OK);
    const size_t plane = SIDE * SIDE;
    float *img = malloc(sizeof(float) * 3 * plane), first[8];
    uint64_t rng = 4;
    for (size_t k = 0; k < 3 * plane; k++) img[k] = fvt_randn(&rng);
    for (int n = 1; n <= MAXN; n++) {
        float *in = fvt_ws_input(ws);
        for (int smp = 0; smp < n; smp++)
            for (int c = 0; c < 3; c++)
                memcpy(in + ((size_t)c * n + smp) * plane, img + c * plane, sizeof(float) * plane);
        const float *y = fvt_forward(net, ws, n, 0, pool);
        if (n == 1) memcpy(first, y, sizeof(first));
        for (int smp = 0; smp < n; smp++)
            for (int k = 0; k < 8; k++) assert_float_equal(y[smp * 8 + k], first[k], 1e-5);
    }
    free(img);
    fvt_ws_destroy(ws);
    fvi_workers_destroy(pool);
    fvt_net_destroy(net);
}

static void test_bad_specs(void **s) {
    (void)s;
    fvt_net *net = NULL;
    char err[200];
    const fvt_layer no_flat[] = {L_(FVT_CONV, 4, 3, 1, 1)};
    assert_int_equal(fvt_net_create(no_flat, 1, 3, 8, 8, &net, err, sizeof(err)),
                     FV_E_INVALID_ARGUMENT);
    const fvt_layer bad_skip[] = {L_(FVT_FC, 5, 0, 0, 0), L_(FVT_SKIP, 0, 0, 0, 0)};
    assert_int_equal(fvt_net_create(bad_skip, 2, 4, 1, 1, &net, err, sizeof(err)),
                     FV_E_INVALID_ARGUMENT);
    const fvt_layer huge_pool[] = {L_(FVT_MAXPOOL, 8, 2, 0, 0), L_(FVT_GAP, 0, 0, 0, 0)};
    assert_int_equal(fvt_net_create(huge_pool, 2, 3, 4, 4, &net, err, sizeof(err)),
                     FV_E_INVALID_ARGUMENT);
    assert_null(net);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_conv),
        cmocka_unit_test(test_grad_bn_relu),
        cmocka_unit_test(test_grad_pools),
        cmocka_unit_test(test_grad_fc_l2_skip),
        cmocka_unit_test(test_grad_whole_cnn),
        cmocka_unit_test(test_grads_thread_independent),
        cmocka_unit_test(test_mining_hand_made),
        cmocka_unit_test(test_triplet_loss_gradient),
        cmocka_unit_test(test_optimisers_and_schedules),
        cmocka_unit_test(test_model_roundtrip),
        cmocka_unit_test(test_checkpoint_roundtrip),
        cmocka_unit_test(test_compare_refuses_mixed_models),
        cmocka_unit_test(test_short_training_separates),
        cmocka_unit_test(test_partial_batches),
        cmocka_unit_test(test_bad_specs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
