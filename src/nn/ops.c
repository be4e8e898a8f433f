/*
 * ops.c: the NN ops of nn.h, with dlib's semantics.
 *
 * Convolution: per sample, output pixels are cut into fixed-size column
 * blocks (the size depends only on the layer shape, never on the thread
 * count, so results are bitwise identical for any pool size).  Each block is
 * unrolled by im2col into the worker's scratch and multiplied by the
 * (out_c x in_c*kh*kw) weight matrix with one sgemm into the strided output.
 */
#include <cblas.h>
#include <float.h>
#include <string.h>

#include "fvi.h"
#include "nn.h"

/* Target size of one im2col block, in floats (2 MiB per worker). */
#define CONV_BLOCK_FLOATS ((size_t)1 << 19)

int fvi_conv_out_h(const fvi_conv *cv, int in_h) {
    return fvi_pool_out_dim(in_h, cv->kh, cv->stride_y, cv->pad_y);
}

int fvi_conv_out_w(const fvi_conv *cv, int in_w) {
    return fvi_pool_out_dim(in_w, cv->kw, cv->stride_x, cv->pad_x);
}

int fvi_pool_out_dim(int in, int k, int stride, int pad) {
    long span = (long)in + 2L * pad - k;
    if (span < 0 || stride < 1) return 0;
    return (int)(1 + span / stride);
}

/* Columns per im2col block for a layer with K rows of unrolled input. */
static size_t conv_block_cols(size_t K, size_t total) {
    size_t cols = CONV_BLOCK_FLOATS / (K ? K : 1);
    if (cols < 64) cols = 64;
    cols &= ~(size_t)15;
    if (cols > total) cols = total;
    return cols ? cols : 1;
}

size_t fvi_conv_scratch(const fvi_conv *cv, int in_h, int in_w, int threads) {
    size_t K = (size_t)cv->in_c * cv->kh * cv->kw;
    size_t total = (size_t)fvi_conv_out_h(cv, in_h) * fvi_conv_out_w(cv, in_w);
    size_t per = K * conv_block_cols(K, total);
    return per * (size_t)(threads < 1 ? 1 : threads);
}

typedef struct {
    const fvi_conv *cv;
    const float *in; /* one sample, c x h x w */
    float *out;      /* one sample, out_c x oh x ow */
    float *scratch;
    int ih, iw, oh, ow;
    size_t K, block, total;
} conv_job;

/* Unrolls output pixels [p0, p1) into col (K rows x (p1-p0) columns). */
static void im2col_block(const conv_job *j, size_t p0, size_t p1, float *col) {
    const fvi_conv *cv = j->cv;
    size_t ncol = p1 - p0;
    size_t row = 0;
    for (int c = 0; c < cv->in_c; c++) {
        const float *plane = j->in + (size_t)c * j->ih * j->iw;
        for (int ky = 0; ky < cv->kh; ky++) {
            for (int kx = 0; kx < cv->kw; kx++, row++) {
                float *dst = col + row * ncol;
                size_t p = p0;
                while (p < p1) {
                    int oy = (int)(p / (size_t)j->ow);
                    int ox = (int)(p % (size_t)j->ow);
                    int run = j->ow - ox;
                    if ((size_t)run > p1 - p) run = (int)(p1 - p);
                    int iy = oy * cv->stride_y - cv->pad_y + ky;
                    if (iy < 0 || iy >= j->ih) {
                        memset(dst, 0, (size_t)run * sizeof(float));
                    } else {
                        const float *srow = plane + (size_t)iy * j->iw;
                        int ix = ox * cv->stride_x - cv->pad_x + kx;
                        if (cv->stride_x == 1 && ix >= 0 && ix + run <= j->iw) {
                            memcpy(dst, srow + ix, (size_t)run * sizeof(float));
                        } else {
                            for (int r = 0; r < run; r++, ix += cv->stride_x)
                                dst[r] = (ix >= 0 && ix < j->iw) ? srow[ix] : 0.0f;
                        }
                    }
                    dst += run;
                    p += (size_t)run;
                }
            }
        }
    }
}

static void conv_task(void *ctx, int begin, int end, int worker) {
    const conv_job *j = ctx;
    const fvi_conv *cv = j->cv;
    float *col = j->scratch + (size_t)worker * j->K * j->block;
    for (int b = begin; b < end; b++) {
        size_t p0 = (size_t)b * j->block;
        size_t p1 = p0 + j->block;
        if (p1 > j->total) p1 = j->total;
        size_t ncol = p1 - p0;
        im2col_block(j, p0, p1, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cv->out_c, (int)ncol, (int)j->K,
                    1.0f, cv->weights, (int)j->K, col, (int)ncol, 0.0f, j->out + p0,
                    (int)j->total);
        if (cv->bias) {
            for (int o = 0; o < cv->out_c; o++) {
                float bv = cv->bias[o];
                float *dst = j->out + (size_t)o * j->total + p0;
                for (size_t i = 0; i < ncol; i++) dst[i] += bv;
            }
        }
    }
}

void fvi_conv_forward(const fvi_conv *cv, const fvi_tensor *in, fvi_tensor *out, float *scratch,
                      fvi_pool *pool) {
    FV_ASSERT(in->c == cv->in_c && out->c == cv->out_c && out->n == in->n);
    conv_job j;
    j.cv = cv;
    j.ih = in->h;
    j.iw = in->w;
    j.oh = out->h;
    j.ow = out->w;
    j.K = (size_t)cv->in_c * cv->kh * cv->kw;
    j.total = (size_t)out->h * out->w;
    j.block = conv_block_cols(j.K, j.total);
    j.scratch = scratch;
    if (j.total == 0) return;
    int nblocks = (int)((j.total + j.block - 1) / j.block);
    for (int s = 0; s < in->n; s++) {
        j.in = in->d + (size_t)s * in->c * in->h * in->w;
        j.out = out->d + (size_t)s * out->c * j.total;
        fvi_pool_run(pool, nblocks, 1, conv_task, &j);
    }
}

int fvi_conv_fold_affine(fvi_conv *cv, const float *gamma, const float *beta) {
    size_t K = (size_t)cv->in_c * cv->kh * cv->kw;
    if (!cv->bias) {
        cv->bias = fvi_calloc((size_t)cv->out_c, sizeof(float));
        if (!cv->bias) return -1;
    }
    for (int o = 0; o < cv->out_c; o++) {
        float *w = cv->weights + (size_t)o * K;
        for (size_t i = 0; i < K; i++) w[i] *= gamma[o];
        cv->bias[o] = cv->bias[o] * gamma[o] + beta[o];
    }
    return 0;
}

void fvi_affine_inplace(fvi_tensor *t, const float *gamma, const float *beta) {
    size_t plane = (size_t)t->h * t->w;
    for (int s = 0; s < t->n; s++)
        for (int c = 0; c < t->c; c++) {
            float *p = t->d + ((size_t)s * t->c + c) * plane;
            float g = gamma[c], b = beta[c];
            for (size_t i = 0; i < plane; i++) p[i] = g * p[i] + b;
        }
}

void fvi_relu_inplace(fvi_tensor *t) {
    size_t n = fvi_tensor_size(t);
    for (size_t i = 0; i < n; i++)
        if (t->d[i] < 0.0f) t->d[i] = 0.0f;
}

/* Shared pooling walk; max != 0 selects max pooling.  Windows are clipped to
 * the image; avg divides by the clipped window's pixel count. */
static void pool2d(const fvi_tensor *in, fvi_tensor *out, int kh, int kw, int sy, int sx, int py,
                   int px, int max) {
    for (int s = 0; s < in->n; s++)
        for (int c = 0; c < in->c; c++) {
            const float *ip = in->d + ((size_t)s * in->c + c) * in->h * in->w;
            float *op = out->d + ((size_t)s * out->c + c) * out->h * out->w;
            for (int oy = 0; oy < out->h; oy++)
                for (int ox = 0; ox < out->w; ox++) {
                    int y0 = oy * sy - py, x0 = ox * sx - px;
                    int y1 = y0 + kh, x1 = x0 + kw;
                    if (y0 < 0) y0 = 0;
                    if (x0 < 0) x0 = 0;
                    if (y1 > in->h) y1 = in->h;
                    if (x1 > in->w) x1 = in->w;
                    float acc = max ? -FLT_MAX : 0.0f;
                    int cnt = 0;
                    for (int y = y0; y < y1; y++)
                        for (int x = x0; x < x1; x++) {
                            float v = ip[(size_t)y * in->w + x];
                            if (max) {
                                if (v > acc) acc = v;
                            } else {
                                acc += v;
                            }
                            cnt++;
                        }
                    if (!max) acc = cnt ? acc / (float)cnt : 0.0f;
                    else if (!cnt) acc = 0.0f;
                    op[(size_t)oy * out->w + ox] = acc;
                }
        }
}

void fvi_max_pool(const fvi_tensor *in, fvi_tensor *out, int kh, int kw, int sy, int sx, int py,
                  int px) {
    pool2d(in, out, kh, kw, sy, sx, py, px, 1);
}

void fvi_avg_pool(const fvi_tensor *in, fvi_tensor *out, int kh, int kw, int sy, int sx, int py,
                  int px) {
    pool2d(in, out, kh, kw, sy, sx, py, px, 0);
}

void fvi_avg_pool_everything(const fvi_tensor *in, fvi_tensor *out) {
    size_t plane = (size_t)in->h * in->w;
    for (int s = 0; s < in->n; s++)
        for (int c = 0; c < in->c; c++) {
            const float *ip = in->d + ((size_t)s * in->c + c) * plane;
            float acc = 0.0f;
            for (size_t i = 0; i < plane; i++) acc += ip[i];
            out->d[(size_t)s * in->c + c] = plane ? acc / (float)plane : 0.0f;
        }
}

/* Value of t at (s,c,y,x), zero outside its shape. */
static inline float at_or_zero(const fvi_tensor *t, int s, int c, int y, int x) {
    if (c >= t->c || y >= t->h || x >= t->w) return 0.0f;
    return t->d[(((size_t)s * t->c + c) * t->h + y) * t->w + x];
}

void fvi_add_prev(const fvi_tensor *a, const fvi_tensor *b, fvi_tensor *out) {
    int same = a->c == b->c && a->h == b->h && a->w == b->w;
    if (same) {
        size_t n = fvi_tensor_size(out);
        for (size_t i = 0; i < n; i++) out->d[i] = a->d[i] + b->d[i];
        return;
    }
    /* Walk backwards so out may alias whichever input has the max shape. */
    for (int s = out->n - 1; s >= 0; s--)
        for (int c = out->c - 1; c >= 0; c--)
            for (int y = out->h - 1; y >= 0; y--)
                for (int x = out->w - 1; x >= 0; x--)
                    out->d[(((size_t)s * out->c + c) * out->h + y) * out->w + x] =
                        at_or_zero(a, s, c, y, x) + at_or_zero(b, s, c, y, x);
}

void fvi_fc_no_bias(const fvi_tensor *in, const float *w, int num_outputs, fvi_tensor *out) {
    int num_inputs = in->c * in->h * in->w;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, in->n, num_outputs, num_inputs, 1.0f,
                in->d, num_inputs, w, num_outputs, 0.0f, out->d, num_outputs);
}
