/*
 * test_nn.c: every NN op of src/nn/nn.h against a naive reference written
 * straight from dlib's semantics (double accumulation, no tiling), on random
 * data: convolution (NCHW and batched CNHW, stride, padding, odd kernels,
 * both CNHW tilings), affine folding, affine, relu, max and average pooling
 * with clipped edge windows, add_prev of unequal shapes, fc and global
 * average pooling, and the arena's measure pass.  Also checks that results
 * do not depend on the pool size (bitwise).
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
#include "nn/nn.h"
#include "core/workers.h"

/* Deterministic uniform floats in [-1, 1). */
static uint32_t rng_state = 12345u;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xFFFFFF) / (float)(1 << 23) - 1.0f;
}
static float *rand_buf(size_t n) {
    float *p = malloc(n * sizeof *p + 4);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

/* Index of (s, c, y, x) in NCHW or CNHW. */
static size_t idx(int cnhw, int n, int C, int H, int W, int s, int c, int y, int x) {
    if (cnhw) return (((size_t)c * n + s) * H + y) * W + x;
    return (((size_t)s * C + c) * H + y) * W + x;
}

/* Naive convolution with zero padding, dlib's output size. */
static void ref_conv(const fvi_conv *cv, int cnhw, int n, int H, int W, const float *in, float *out,
                     int relu) {
    int OH = 1 + (H + 2 * cv->pad_y - cv->kh) / cv->stride_y;
    int OW = 1 + (W + 2 * cv->pad_x - cv->kw) / cv->stride_x;
    for (int s = 0; s < n; s++)
        for (int o = 0; o < cv->out_c; o++)
            for (int y = 0; y < OH; y++)
                for (int x = 0; x < OW; x++) {
                    double acc = cv->bias ? cv->bias[o] : 0.0;
                    for (int c = 0; c < cv->in_c; c++)
                        for (int ky = 0; ky < cv->kh; ky++)
                            for (int kx = 0; kx < cv->kw; kx++) {
                                int iy = y * cv->stride_y - cv->pad_y + ky;
                                int ix = x * cv->stride_x - cv->pad_x + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                double w = cv->weights[(((size_t)o * cv->in_c + c) * cv->kh + ky) *
                                                           cv->kw +
                                                       kx];
                                acc += w * in[idx(cnhw, n, cv->in_c, H, W, s, c, iy, ix)];
                            }
                    if (relu && acc < 0) acc = 0;
                    out[idx(cnhw, n, cv->out_c, OH, OW, s, o, y, x)] = (float)acc;
                }
}

static void assert_close(const float *a, const float *b, size_t n, double tol) {
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > tol * (1.0 + fabs((double)b[i]))) fail_msg("value %zu: %g vs %g", i, a[i], b[i]);
    }
}

typedef struct {
    int in_c, out_c, kh, kw, sy, sx, py, px, n, h, w, bias;
} conv_case;

static const conv_case CONV_CASES[] = {
    {3, 8, 3, 3, 1, 1, 1, 1, 2, 9, 11, 1},   /* 3x3 same padding */
    {4, 6, 3, 3, 2, 2, 0, 0, 3, 17, 17, 1},  /* ResNet downsampling conv */
    {3, 5, 7, 7, 2, 2, 0, 0, 1, 30, 28, 1},  /* stem-like 7x7 */
    {2, 3, 5, 5, 1, 1, 2, 2, 2, 6, 7, 0},    /* 5x5, no bias */
    {5, 4, 1, 1, 1, 1, 0, 0, 2, 4, 3, 1},    /* 1x1 */
    {3, 4, 3, 5, 2, 1, 1, 2, 2, 8, 9, 1},    /* non-square kernel and stride */
    {2, 130, 3, 3, 1, 1, 1, 1, 2, 3, 3, 1},  /* CNHW row-split with a ragged row tile */
    {4, 16, 3, 3, 1, 1, 1, 1, 4, 56, 56, 1}, /* CNHW fused column tiles */
    {3, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},    /* 1x1 image, all taps but one padded */
    {45, 1, 9, 9, 1, 1, 4, 4, 1, 37, 21, 1}, /* one output channel: the detector's last layer */
    {3, 1, 5, 3, 1, 1, 0, 0, 2, 12, 13, 0},  /* one channel, unpadded, two samples, no bias */
    {2, 1, 3, 3, 1, 1, 1, 1, 3, 1, 1, 1},    /* one channel, 1x1 images */
    {4, 1, 3, 3, 2, 2, 1, 1, 2, 9, 10, 1},   /* one channel at stride 2: the GEMM path */
};

static fvi_conv make_conv(const conv_case *cc) {
    fvi_conv cv;
    memset(&cv, 0, sizeof cv);
    cv.in_c = cc->in_c;
    cv.out_c = cc->out_c;
    cv.kh = cc->kh;
    cv.kw = cc->kw;
    cv.stride_y = cc->sy;
    cv.stride_x = cc->sx;
    cv.pad_y = cc->py;
    cv.pad_x = cc->px;
    cv.weights = rand_buf((size_t)cc->out_c * cc->in_c * cc->kh * cc->kw);
    cv.bias = cc->bias ? rand_buf((size_t)cc->out_c) : NULL;
    return cv;
}

static void free_conv(fvi_conv *cv) {
    free(cv->weights);
    free(cv->bias);
}

/* Runs one conv case (CNHW) with a pool of `threads`. */
static float *run_conv(fvi_conv *cv, const conv_case *cc, int relu, const float *in, int threads) {
    fvi_workers *pool = threads > 1 ? fvi_workers_create(threads) : NULL;
    if (threads > 1) assert_non_null(pool);
    int OH = fvi_conv_out_h(cv, cc->h), OW = fvi_conv_out_w(cv, cc->w);
    size_t osz = (size_t)cc->n * cc->out_c * OH * OW;
    float *out = malloc(osz * sizeof *out + 4);
    size_t scr = fvi_conv_cnhw_scratch(cv, cc->n, cc->h, cc->w, threads);
    float *scratch = malloc((scr + 1) * sizeof *scratch);
    assert_non_null(out);
    assert_non_null(scratch);
    fvi_tensor ti = {cc->n, cc->in_c, cc->h, cc->w, (float *)in};
    fvi_tensor to = {cc->n, cc->out_c, OH, OW, out};
    fvi_conv_forward_cnhw(cv, &ti, &to, relu, scratch, pool);
    free(scratch);
    fvi_workers_destroy(pool);
    return out;
}

static void test_conv_against_reference(void **state) {
    (void)state;
    fvi_nn_init();
    for (size_t k = 0; k < sizeof CONV_CASES / sizeof *CONV_CASES; k++) {
        const conv_case *cc = &CONV_CASES[k];
        fvi_conv cv = make_conv(cc);
        int OH = fvi_conv_out_h(&cv, cc->h), OW = fvi_conv_out_w(&cv, cc->w);
        assert_int_equal(OH, 1 + (cc->h + 2 * cc->py - cc->kh) / cc->sy);
        assert_int_equal(OW, 1 + (cc->w + 2 * cc->px - cc->kw) / cc->sx);
        size_t isz = (size_t)cc->n * cc->in_c * cc->h * cc->w;
        size_t osz = (size_t)cc->n * cc->out_c * OH * OW;
        float *in = rand_buf(isz);
        float *ref = malloc(osz * sizeof *ref + 4);
        for (int relu = 0; relu <= 1; relu++) {
            ref_conv(&cv, 1, cc->n, cc->h, cc->w, in, ref, relu);
            float *o1 = run_conv(&cv, cc, relu, in, 1);
            float *o3 = run_conv(&cv, cc, relu, in, 3);
            assert_close(o1, ref, osz, 1e-4);
            assert_memory_equal(o1, o3, osz * sizeof *o1); /* pool size never matters */
            free(o1);
            free(o3);
        }
        free(in);
        free(ref);
        free_conv(&cv);
    }
}

static void test_fold_affine(void **state) {
    (void)state;
    /* one sample, where CNHW and NCHW coincide */
    conv_case cc = {3, 5, 3, 3, 1, 1, 1, 1, 1, 6, 6, 0};
    fvi_conv cv = make_conv(&cc);
    float *gamma = rand_buf(5), *beta = rand_buf(5);
    size_t isz = (size_t)3 * 36, osz = (size_t)5 * 36;
    float *in = rand_buf(isz);
    float *ref = malloc(osz * sizeof *ref);
    ref_conv(&cv, 1, 1, 6, 6, in, ref, 0);
    fvi_tensor t = {1, 5, 6, 6, ref};
    fvi_affine_inplace(&t, gamma, beta);
    assert_int_equal(fvi_conv_fold_affine(&cv, gamma, beta), 0); /* allocates the bias */
    assert_non_null(cv.bias);
    float *out = run_conv(&cv, &cc, 0, in, 1);
    assert_close(out, ref, osz, 1e-4);
    free(out);
    fvi_free(cv.bias);
    cv.bias = NULL;
    free_conv(&cv);
    free(gamma);
    free(beta);
    free(in);
    free(ref);
}

static void test_affine_and_relu(void **state) {
    (void)state;
    const int n = 2, C = 3, H = 4, W = 5;
    size_t sz = (size_t)n * C * H * W;
    float *x = rand_buf(sz), *orig = malloc(sz * sizeof *orig);
    memcpy(orig, x, sz * sizeof *x);
    float g[3] = {0.5f, -2.0f, 1.25f}, b[3] = {0.1f, 0.0f, -3.0f};
    fvi_tensor t = {n, C, H, W, x};
    fvi_affine_inplace(&t, g, b);
    for (int s = 0; s < n; s++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < H * W; i++) {
                size_t k = ((size_t)s * C + c) * H * W + i;
                assert_float_equal(x[k], g[c] * orig[k] + b[c], 1e-6);
            }
    memcpy(x, orig, sz * sizeof *x);
    fvi_relu_inplace(&t);
    for (size_t k = 0; k < sz; k++) assert_true(x[k] == (orig[k] > 0 ? orig[k] : 0.0f));
    free(x);
    free(orig);
}

/* Naive dlib pooling: window rows oy*s-p .. +k-1 clipped to the image. */
static void ref_pool(const float *in, int planes, int H, int W, int k, int s, int p, int is_max,
                     float *out, int OH, int OW) {
    for (int pl = 0; pl < planes; pl++)
        for (int y = 0; y < OH; y++)
            for (int x = 0; x < OW; x++) {
                double acc = is_max ? -INFINITY : 0.0;
                int cnt = 0;
                for (int wy = y * s - p; wy < y * s - p + k; wy++)
                    for (int wx = x * s - p; wx < x * s - p + k; wx++) {
                        if (wy < 0 || wy >= H || wx < 0 || wx >= W) continue;
                        double v = in[((size_t)pl * H + wy) * W + wx];
                        if (is_max)
                            acc = v > acc ? v : acc;
                        else
                            acc += v;
                        cnt++;
                    }
                out[((size_t)pl * OH + y) * OW + x] = (float)(is_max ? acc : acc / cnt);
            }
}

static void test_pooling_edges(void **state) {
    (void)state;
    /* {H, W, k, stride, pad}: clipped windows at padded and ragged edges */
    const int cases[][5] = {{7, 7, 3, 2, 1}, {5, 5, 2, 2, 0}, {72, 72, 3, 2, 0},
                            {6, 9, 3, 1, 1}, {4, 4, 3, 2, 2}, {3, 3, 3, 3, 0}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int H = cases[k][0], W = cases[k][1], win = cases[k][2], st = cases[k][3], p = cases[k][4];
        int OH = fvi_pool_out_dim(H, win, st, p), OW = fvi_pool_out_dim(W, win, st, p);
        assert_int_equal(OH, 1 + (H + 2 * p - win) / st);
        const int n = 2, C = 3;
        float *in = rand_buf((size_t)n * C * H * W);
        size_t osz = (size_t)n * C * OH * OW;
        float *out = malloc(osz * sizeof *out), *ref = malloc(osz * sizeof *ref);
        fvi_tensor ti = {n, C, H, W, in}, to = {n, C, OH, OW, out};
        for (int is_max = 0; is_max <= 1; is_max++) {
            if (is_max)
                fvi_max_pool(&ti, &to, win, win, st, st, p, p);
            else
                fvi_avg_pool(&ti, &to, win, win, st, st, p, p);
            ref_pool(in, n * C, H, W, win, st, p, is_max, ref, OH, OW);
            assert_close(out, ref, osz, 1e-6);
        }
        free(in);
        free(out);
        free(ref);
    }
}

static void test_add_prev_unequal_shapes(void **state) {
    (void)state;
    const int n = 2;
    fvi_tensor a = {n, 3, 4, 5, rand_buf((size_t)n * 3 * 4 * 5)};
    fvi_tensor b = {n, 5, 3, 6, rand_buf((size_t)n * 5 * 3 * 6)};
    const int C = 5, H = 4, W = 6;
    size_t osz = (size_t)n * C * H * W;
    float *out = malloc(osz * sizeof *out);
    for (int cnhw = 0; cnhw <= 1; cnhw++)
        for (int relu = 0; relu <= cnhw; relu++) {
            fvi_tensor o = {n, C, H, W, out};
            if (cnhw)
                fvi_add_cnhw(&a, &b, &o, relu);
            else
                fvi_add_prev(&a, &b, &o);
            for (int s = 0; s < n; s++)
                for (int c = 0; c < C; c++)
                    for (int y = 0; y < H; y++)
                        for (int x = 0; x < W; x++) {
                            float va = (c < a.c && y < a.h && x < a.w)
                                           ? a.d[idx(cnhw, n, a.c, a.h, a.w, s, c, y, x)]
                                           : 0.0f;
                            float vb = (c < b.c && y < b.h && x < b.w)
                                           ? b.d[idx(cnhw, n, b.c, b.h, b.w, s, c, y, x)]
                                           : 0.0f;
                            float want = va + vb;
                            if (relu && want < 0) want = 0;
                            assert_true(out[idx(cnhw, n, C, H, W, s, c, y, x)] == want);
                        }
        }
    /* equal shapes, output aliasing an input */
    fvi_tensor c2 = {n, 3, 4, 5, rand_buf((size_t)n * 3 * 4 * 5)};
    float *keep = malloc((size_t)n * 60 * sizeof *keep);
    memcpy(keep, c2.d, (size_t)n * 60 * sizeof *keep);
    fvi_add_prev(&a, &c2, &c2);
    for (size_t i = 0; i < (size_t)n * 60; i++) assert_true(c2.d[i] == a.d[i] + keep[i]);
    free(keep);
    free(c2.d);
    free(a.d);
    free(b.d);
    free(out);
}

static void test_fc_and_global_average(void **state) {
    (void)state;
    fvi_nn_init();
    const int n = 3, C = 4, H = 2, W = 3, NO = 5;
    float *in = rand_buf((size_t)n * C * H * W);
    float *w = rand_buf((size_t)C * H * W * NO);
    float *out = malloc((size_t)n * NO * sizeof *out);
    fvi_tensor ti = {n, C, H, W, in}, to = {n, NO, 1, 1, out};
    fvi_fc_no_bias(&ti, w, NO, &to);
    for (int s = 0; s < n; s++)
        for (int j = 0; j < NO; j++) {
            double acc = 0;
            for (int i = 0; i < C * H * W; i++)
                acc += (double)in[(size_t)s * C * H * W + i] * w[(size_t)i * NO + j];
            assert_float_equal(out[s * NO + j], acc, 1e-5);
        }
    float avg[12], avg2[12];
    fvi_tensor ta = {n, C, 1, 1, avg};
    fvi_avg_pool_everything(&ti, &ta);
    fvi_avg_pool_everything_cnhw(&ti, avg2); /* same buffer read as CNHW */
    for (int s = 0; s < n; s++)
        for (int c = 0; c < C; c++) {
            double m = 0, m2 = 0;
            for (int i = 0; i < H * W; i++) {
                m += in[((size_t)s * C + c) * H * W + i];
                m2 += in[((size_t)c * n + s) * H * W + i];
            }
            assert_float_equal(avg[s * C + c], m / (H * W), 1e-6);
            assert_float_equal(avg2[s * C + c], m2 / (H * W), 1e-6);
        }
    free(in);
    free(w);
    free(out);
}

static void test_arena_measure_then_reserve(void **state) {
    (void)state;
    fvi_arena a;
    fvi_tensor t1, t2;
    fvi_arena_measure(&a);
    assert_int_equal(fvi_arena_tensor(&a, &t1, 1, 3, 5, 7), 0);
    assert_null(fvi_arena_alloc(&a, 10));
    size_t need = a.peak;
    assert_true(need >= 105 + 10);
    assert_int_equal(fvi_arena_reserve(&a, need), 0);
    assert_int_equal(fvi_arena_tensor(&a, &t1, 1, 3, 5, 7), 0);
    float *p = fvi_arena_alloc(&a, 10);
    assert_non_null(p);
    assert_int_equal(((uintptr_t)p) % 64, 0);
    assert_null(fvi_arena_alloc(&a, 1000)); /* beyond what was measured */
    fvi_arena_reset(&a);
    assert_int_equal(fvi_arena_tensor(&a, &t2, 1, 3, 5, 7), 0);
    assert_ptr_equal(t1.d, t2.d);
    fvi_arena_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_against_reference),
        cmocka_unit_test(test_fold_affine),
        cmocka_unit_test(test_affine_and_relu),
        cmocka_unit_test(test_pooling_edges),
        cmocka_unit_test(test_add_prev_unequal_shapes),
        cmocka_unit_test(test_fc_and_global_average),
        cmocka_unit_test(test_arena_measure_then_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
