/*
 * test_nn_bf16.c: the bf16 convolution of src/nn/conv_bf16.c against a
 * naive reference (double sums of the very bf16 values the kernel reads),
 * on random data: the detector's layer shapes and odd ones (1 to 48 output
 * channels, strides 1 and 2, 1x1 to 9x9 kernels, widths below, at and past
 * a wide tile with ragged tails, channel strides with padding channels),
 * both output forms (bf16 NHWC with a border, float NCHW), independence of
 * the pool size (bitwise), the NCHW -> NHWC conversion (vector and scalar
 * paths), bf16 rounding, and the packer's refusals.  The kernel tests skip
 * on CPUs without AVX-512 BF16 (the detector then never calls the kernel).
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

static uint32_t rng_state = 777u;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xFFFFFF) / (float)(1 << 23) - 1.0f;
}

typedef struct {
    int in_c, in_cs, out_c, k, stride, h, w, pad_in, pad_out, relu, bias;
} bcase;

static const bcase CASES[] = {
    /* the detector's six layers at small sizes (input border = its pad) */
    {3, 4, 16, 5, 2, 41, 77, 0, 0, 1, 1},
    {16, 16, 32, 5, 2, 19, 37, 0, 0, 1, 1},
    {32, 32, 32, 5, 2, 17, 29, 0, 2, 1, 1},
    {32, 32, 45, 5, 1, 9, 13, 2, 2, 1, 1},
    {45, 48, 45, 5, 1, 7, 30, 2, 2, 1, 1},
    {45, 48, 45, 5, 1, 11, 8, 2, 0, 1, 1},
    /* odd shapes: one pixel wide, widths around the wide tiles (8, 12, 16),
     * one output channel, 17 channels (two blocks), 9x9 and 1x1 kernels,
     * no bias, no relu, stride 2 with pad */
    {2, 2, 1, 3, 1, 5, 1, 1, 1, 0, 1},
    {6, 6, 17, 3, 1, 4, 7, 0, 3, 1, 0},
    {4, 4, 16, 1, 1, 3, 16, 0, 1, 0, 1},
    {4, 4, 16, 1, 1, 3, 17, 0, 0, 1, 1},
    {8, 8, 32, 3, 1, 5, 12, 1, 1, 0, 1},
    {8, 8, 32, 3, 1, 5, 25, 1, 0, 1, 1},
    {10, 12, 48, 9, 1, 3, 9, 4, 0, 1, 1},
    {10, 12, 40, 3, 2, 6, 21, 1, 2, 0, 1},
};

/* Input NHWC bf16, (h + 2*pad) x (w + 2*pad) x cs, border and padding
 * channels zero, the rest random. */
static fvi_bf16 *make_input(const bcase *c, int *ih, int *iw) {
    *ih = c->h + 2 * c->pad_in;
    *iw = c->w + 2 * c->pad_in;
    size_t n = (size_t)*ih * *iw * c->in_cs;
    fvi_bf16 *in = calloc(n + 2, sizeof *in);
    assert_non_null(in);
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++)
            for (int ch = 0; ch < c->in_c; ch++)
                in[(((size_t)y + c->pad_in) * *iw + x + c->pad_in) * c->in_cs + ch] =
                    fvi_to_bf16(frand());
    return in;
}

static fvi_conv make_conv(const bcase *c) {
    fvi_conv cv;
    memset(&cv, 0, sizeof cv);
    cv.in_c = c->in_c;
    cv.out_c = c->out_c;
    cv.kh = cv.kw = c->k;
    cv.stride_y = cv.stride_x = c->stride;
    size_t n = (size_t)c->out_c * c->in_c * c->k * c->k;
    cv.weights = malloc(n * sizeof *cv.weights);
    assert_non_null(cv.weights);
    for (size_t i = 0; i < n; i++) cv.weights[i] = frand();
    if (c->bias) {
        cv.bias = malloc((size_t)c->out_c * sizeof *cv.bias);
        assert_non_null(cv.bias);
        for (int o = 0; o < c->out_c; o++) cv.bias[o] = frand();
    }
    return cv;
}

/* Reference output (out_c x oh x ow, NCHW, double) and the sum of |terms|
 * per value (the scale of float32 accumulation error). */
static void reference(const bcase *c, const fvi_conv *cv, const fvi_bf16 *in, int iw, int oh,
                      int ow, double *ref, double *mag) {
    for (int o = 0; o < c->out_c; o++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                double acc = cv->bias ? cv->bias[o] : 0.0, m = fabs(acc);
                for (int ch = 0; ch < c->in_c; ch++)
                    for (int ky = 0; ky < c->k; ky++)
                        for (int kx = 0; kx < c->k; kx++) {
                            double w = fvi_from_bf16(fvi_to_bf16(
                                cv->weights[(((size_t)o * c->in_c + ch) * c->k + ky) * c->k + kx]));
                            double v = fvi_from_bf16(in[(((size_t)y * c->stride + ky) * iw +
                                                         (size_t)x * c->stride + kx) *
                                                            c->in_cs +
                                                        ch]);
                            acc += w * v;
                            m += fabs(w * v);
                        }
                if (c->relu && acc < 0) acc = 0;
                ref[((size_t)o * oh + y) * ow + x] = acc;
                mag[((size_t)o * oh + y) * ow + x] = m;
            }
}

static void test_bf16_conv_against_reference(void **state) {
    (void)state;
    if (!fvi_cpu_bf16()) skip();
    fvi_workers *pool2 = fvi_workers_create(2);
    assert_non_null(pool2);
    for (size_t k = 0; k < sizeof CASES / sizeof *CASES; k++) {
        const bcase *c = &CASES[k];
        int ih, iw;
        fvi_bf16 *in = make_input(c, &ih, &iw);
        fvi_conv cv = make_conv(c);
        fvi_conv_bf16 p;
        assert_int_equal(fvi_conv_bf16_pack(&cv, c->in_cs, &p), 0);
        assert_int_equal(p.out_cs, (c->out_c + 15) / 16 * 16);
        const int oh = fvi_pool_out_dim(ih, c->k, c->stride, 0);
        const int ow = fvi_pool_out_dim(iw, c->k, c->stride, 0);
        const size_t nref = (size_t)c->out_c * oh * ow;
        double *ref = malloc(nref * sizeof *ref), *mag = malloc(nref * sizeof *mag);
        assert_non_null(ref);
        assert_non_null(mag);
        reference(c, &cv, in, iw, oh, ow, ref, mag);

        /* float NCHW output: float32 accumulation of exact bf16 products */
        float *of = malloc((nref + 1) * sizeof *of);
        assert_non_null(of);
        fvi_conv_bf16_forward(&p, in, ih, iw, c->relu, NULL, 0, of, NULL);
        for (size_t i = 0; i < nref; i++)
            if (fabs(of[i] - ref[i]) > 1e-5 * mag[i] + 1e-6)
                fail_msg("case %zu value %zu: %g vs %g", k, i, of[i], ref[i]);

        /* bf16 NHWC output with its border: the float result rounded */
        const int po = c->pad_out, OHp = oh + 2 * po, OWp = ow + 2 * po;
        const size_t nout = (size_t)OHp * OWp * p.out_cs;
        fvi_bf16 *ob = malloc(nout * sizeof *ob), *ob2 = malloc(nout * sizeof *ob2);
        assert_non_null(ob);
        assert_non_null(ob2);
        memset(ob, 0xAB, nout * sizeof *ob); /* the border must be written */
        memset(ob2, 0xCD, nout * sizeof *ob2);
        fvi_conv_bf16_forward(&p, in, ih, iw, c->relu, ob, po, NULL, NULL);
        fvi_conv_bf16_forward(&p, in, ih, iw, c->relu, ob2, po, NULL, pool2);
        assert_memory_equal(ob, ob2, nout * sizeof *ob); /* any pool size, same bits */
        for (int y = 0; y < OHp; y++)
            for (int x = 0; x < OWp; x++)
                for (int o = 0; o < p.out_cs; o++) {
                    const fvi_bf16 v = ob[((size_t)y * OWp + x) * p.out_cs + o];
                    const int inside = y >= po && y < po + oh && x >= po && x < po + ow;
                    if (!inside || o >= c->out_c) {
                        if (v != 0)
                            fail_msg("case %zu: border/padding (%d,%d,%d) = %#x", k, y, x, o, v);
                        continue;
                    }
                    const float f = of[((size_t)o * oh + (y - po)) * ow + (x - po)];
                    if (v != fvi_to_bf16(f))
                        fail_msg("case %zu (%d,%d,%d): %#x, rounded float %#x", k, y, x, o, v,
                                 fvi_to_bf16(f));
                }
        free(ob);
        free(ob2);
        free(of);
        free(ref);
        free(mag);
        fvi_conv_bf16_free(&p);
        free(cv.weights);
        free(cv.bias);
        free(in);
    }
    fvi_workers_destroy(pool2);
}

/* The three-plane -> four-channel conversion (vector path, 16 pixels per
 * step plus a tail) equals the scalar rounding, and other strides too. */
static void test_bf16_from_nchw(void **state) {
    (void)state;
    const int shapes[][3] = {{3, 5, 37}, {3, 2, 16}, {3, 3, 1}, {5, 4, 9}};
    const int strides[] = {4, 4, 4, 8};
    fvi_workers *pool2 = fvi_workers_create(2);
    assert_non_null(pool2);
    for (int s = 0; s < 4; s++) {
        const int c = shapes[s][0], h = shapes[s][1], w = shapes[s][2], cs = strides[s];
        const size_t plane = (size_t)h * w;
        float *in = malloc(plane * c * sizeof *in);
        fvi_bf16 *out = malloc(plane * cs * sizeof *out);
        assert_non_null(in);
        assert_non_null(out);
        for (size_t i = 0; i < plane * c; i++) in[i] = frand() * 0.6f;
        memset(out, 0xEE, plane * cs * sizeof *out);
        fvi_bf16_from_nchw(in, c, h, w, cs, out, s % 2 ? pool2 : NULL);
        for (size_t px = 0; px < plane; px++)
            for (int ch = 0; ch < cs; ch++) {
                const fvi_bf16 want = ch < c ? fvi_to_bf16(in[(size_t)ch * plane + px]) : 0;
                if (out[px * cs + ch] != want)
                    fail_msg("shape %d pixel %zu channel %d: %#x vs %#x", s, px, ch,
                             out[px * cs + ch], want);
            }
        free(in);
        free(out);
    }
    fvi_workers_destroy(pool2);
}

static float bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void test_bf16_rounding(void **state) {
    (void)state;
    assert_int_equal(fvi_to_bf16(1.0f), 0x3F80);
    assert_int_equal(fvi_to_bf16(-2.0f), 0xC000);
    assert_int_equal(fvi_to_bf16(bits(0x3F808000u)), 0x3F80); /* tie: to even (down) */
    assert_int_equal(fvi_to_bf16(bits(0x3F818000u)), 0x3F82); /* tie: to even (up) */
    assert_int_equal(fvi_to_bf16(bits(0x3F808001u)), 0x3F81); /* above the tie */
    assert_int_equal(fvi_to_bf16(bits(0x7F7FFFFFu)), 0x7F80); /* FLT_MAX rounds to inf */
    assert_int_equal(fvi_to_bf16(INFINITY), 0x7F80);
    assert_true(isnan(fvi_from_bf16(fvi_to_bf16(NAN))));
    assert_true(fvi_from_bf16(fvi_to_bf16(0.1f)) == bits(0x3DCD0000u));
}

static void test_bf16_pack_refusals(void **state) {
    (void)state;
    bcase c = {3, 4, 16, 3, 1, 1, 1, 0, 0, 0, 0};
    fvi_conv cv = make_conv(&c);
    fvi_conv_bf16 p;
    assert_int_equal(fvi_conv_bf16_pack(&cv, 3, &p), -1); /* odd stride */
    assert_null(p.w);
    assert_int_equal(fvi_conv_bf16_pack(&cv, 2, &p), -1); /* below in_c */
    cv.out_c = 49;
    assert_int_equal(fvi_conv_bf16_pack(&cv, 4, &p), -1); /* more than 48 outputs */
    cv.out_c = 16;
    assert_int_equal(fvi_conv_bf16_pack(&cv, 4, &p), 0);
    /* weight (o=5, c=2, ky=1, kx=0): pair (ky*kw+kx)*cs/2 + c/2 = 7, lane o*2 + c%2 */
    assert_int_equal(p.w[(7 * 16 + 5) * 2 + 0], fvi_to_bf16(cv.weights[((5 * 3 + 2) * 3 + 1) * 3]));
    fvi_conv_bf16_free(&p);
    fvi_conv_bf16_free(&p); /* emptied: a second free is a no-op */
    free(cv.weights);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_conv_against_reference),
        cmocka_unit_test(test_bf16_from_nchw),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_bf16_pack_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
