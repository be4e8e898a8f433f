/*
 * ops.c: the NN ops of nn.h, with dlib's semantics.
 *
 * Convolution (fvi_conv_forward_cnhw, the one convolution of both networks):
 * the batch's output is cut into tiles chosen from the layer's shape alone
 * (never the thread count, so results are bitwise identical for any pool
 * size); each tile is unrolled by im2col into the worker's scratch and
 * multiplied by the (out_c x in_c*kh*kw) weight matrix with one sgemm.
 */
#include <cblas.h>
#include <float.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "fvi.h"
#include "nn.h"

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

/* Pools one plane; is_max selects max pooling (a constant at each call
 * site, so each variant compiles without the test).  Windows are clipped to
 * the image; avg divides by the clipped window's pixel count and max starts
 * from the window's first pixel, both as dlib's mean() and max() do. */
static inline void pool_plane(const float *ip, int ih, int iw, float *op, int oh, int ow, int kh,
                              int kw, int sy, int sx, int py, int px, int is_max) {
    for (int oy = 0; oy < oh; oy++) {
        int y0 = oy * sy - py, y1 = y0 + kh;
        if (y0 < 0) y0 = 0;
        if (y1 > ih) y1 = ih;
        for (int ox = 0; ox < ow; ox++) {
            int x0 = ox * sx - px, x1 = x0 + kw;
            if (x0 < 0) x0 = 0;
            if (x1 > iw) x1 = iw;
            float acc = 0.0f;
            if (y0 < y1 && x0 < x1) {
                if (is_max) {
                    acc = ip[(size_t)y0 * iw + x0];
                    for (int y = y0; y < y1; y++)
                        for (int x = x0; x < x1; x++) {
                            float v = ip[(size_t)y * iw + x];
                            acc = v > acc ? v : acc;
                        }
                } else {
                    for (int y = y0; y < y1; y++)
                        for (int x = x0; x < x1; x++) acc += ip[(size_t)y * iw + x];
                    acc /= (float)((y1 - y0) * (x1 - x0));
                }
            }
            op[(size_t)oy * ow + ox] = acc;
        }
    }
}

static void pool2d(const fvi_tensor *in, fvi_tensor *out, int kh, int kw, int sy, int sx, int py,
                   int px, int is_max) {
    const size_t planes = (size_t)in->n * in->c;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *ip = in->d + pl * in->h * in->w;
        float *op = out->d + pl * out->h * out->w;
        if (is_max)
            pool_plane(ip, in->h, in->w, op, out->h, out->w, kh, kw, sy, sx, py, px, 1);
        else
            pool_plane(ip, in->h, in->w, op, out->h, out->w, kh, kw, sy, sx, py, px, 0);
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

/* ---------------------------------------------------------------------------
 * Batched (CNHW) convolution.
 *
 * Columns of the unrolled input are p = (s*out_h + oy)*out_w + ox over the
 * whole batch, rows r = (c*kh + ky)*kw + kx, so output channel o of all
 * samples is one row of a (out_c x n*out_h*out_w) product, exactly the CNHW
 * output plane order.  Two tilings, picked from the shape alone:
 *  - many columns: column blocks sized to keep a K x block im2col panel in
 *    L2; each tile unrolls its block into the worker's scratch and runs one
 *    sgemm over all output channels (fused, cache-hot);
 *  - few columns (late layers): the whole input is unrolled once (in
 *    parallel by column block), then tiles of output-channel rows x column
 *    blocks each run one sgemm, so the pool still has work to share.
 * Bias and the optional relu are applied per tile while it is in cache.
 */

/* Target im2col panel per tile, in floats (256 KiB: half of this Zen 3's
 * 512 KiB L2 per core; 128K and 256K floats measured no faster). */
#define CNHW_PANEL_FLOATS ((size_t)1 << 16)
/* Fewer column blocks than this switches to the row-split tiling. */
#define CNHW_MIN_COL_TILES 4
/* Output-channel rows per tile in the row-split tiling. */
#define CNHW_ROW_TILE 64

typedef struct {
    size_t K, N; /* GEMM inner dim, total columns */
    size_t nb;   /* columns per block */
    int ncb;     /* column blocks */
    int mb;      /* rows per row tile (== out_c when fused) */
    int nmb;     /* row tiles */
    int fused;
} cnhw_plan;

static cnhw_plan cnhw_make_plan(const fvi_conv *cv, size_t N) {
    cnhw_plan pl;
    pl.K = (size_t)cv->in_c * cv->kh * cv->kw;
    pl.N = N;
    size_t want = CNHW_PANEL_FLOATS / (pl.K ? pl.K : 1);
    if (want < 64) want = 64;
    size_t ncb = (N + want - 1) / want;
    if (ncb < 1) ncb = 1;
    size_t nb = (N + ncb - 1) / ncb;
    nb = (nb + 15) & ~(size_t)15; /* whole SIMD rows per block */
    if (nb > N) nb = N;
    if (nb == 0) nb = 1;
    pl.nb = nb;
    pl.ncb = (int)((N + nb - 1) / nb);
    pl.fused = pl.ncb >= CNHW_MIN_COL_TILES;
    if (pl.fused) {
        pl.mb = cv->out_c;
        pl.nmb = 1;
    } else {
        pl.mb = cv->out_c < CNHW_ROW_TILE ? cv->out_c : CNHW_ROW_TILE;
        pl.nmb = (cv->out_c + pl.mb - 1) / pl.mb;
    }
    return pl;
}

size_t fvi_conv_cnhw_scratch(const fvi_conv *cv, int n, int in_h, int in_w, int threads) {
    size_t N = (size_t)n * fvi_conv_out_h(cv, in_h) * fvi_conv_out_w(cv, in_w);
    if (N == 0) return 0;
    cnhw_plan pl = cnhw_make_plan(cv, N);
    if (pl.fused) return pl.K * pl.nb * (size_t)(threads < 1 ? 1 : threads);
    return pl.K * pl.N;
}

typedef struct {
    const fvi_conv *cv;
    const float *in;
    float *out;
    float *scratch;
    int n, ih, iw, oh, ow, relu;
    cnhw_plan pl;
} cnhw_job;

/* Fills dst[0..run) with row srow sampled at ix0, ix0+stride, ... and zeros
 * where that falls outside [0, iw). */
static inline void im2col_run(float *restrict dst, const float *restrict srow, int ix0, int run,
                              int stride, int iw) {
    /* first and one-past-last r whose ix = ix0 + r*stride lies in the row */
    int lo, hi;
    if (stride == 1) {
        lo = ix0 < 0 ? -ix0 : 0;
        hi = iw - ix0;
    } else {
        lo = ix0 < 0 ? (-ix0 + stride - 1) / stride : 0;
        hi = ix0 < iw ? (iw - ix0 + stride - 1) / stride : 0;
    }
    if (lo > run) lo = run;
    if (hi > run) hi = run;
    if (hi < lo) hi = lo;
    for (int r = 0; r < lo; r++) dst[r] = 0.0f;
    if (stride == 1) {
        memcpy(dst + lo, srow + ix0 + lo, (size_t)(hi - lo) * sizeof(float));
    } else {
        const float *sp = srow + ix0 + (ptrdiff_t)lo * stride;
        int r = lo;
#if defined(__SSE2__)
        if (stride == 2) /* even lanes of two loads; reads stay below sp[2*(hi-lo)-2] */
            for (; r + 4 < hi; r += 4, sp += 8)
                _mm_storeu_ps(dst + r, _mm_shuffle_ps(_mm_loadu_ps(sp), _mm_loadu_ps(sp + 4),
                                                      _MM_SHUFFLE(2, 0, 2, 0)));
#endif
        for (; r < hi; r++, sp += stride) dst[r] = *sp;
    }
    for (int r = hi; r < run; r++) dst[r] = 0.0f;
}

/* Unrolls columns [p0, p1) into col (K rows, row stride ld).  The column
 * range is walked as runs along output rows; only the tile's start is
 * decomposed by division. */
static void cnhw_im2col(const cnhw_job *j, size_t p0, size_t p1, float *col, size_t ld) {
    const fvi_conv *cv = j->cv;
    const size_t ohw = (size_t)j->oh * j->ow;
    const size_t ihw = (size_t)j->ih * j->iw;
    const size_t s0 = p0 / ohw;
    const int oy0 = (int)((p0 % ohw) / (size_t)j->ow);
    const int ox0 = (int)((p0 % ohw) % (size_t)j->ow);
    size_t row = 0;
    for (int c = 0; c < cv->in_c; c++) {
        const float *cplane = j->in + (size_t)c * j->n * ihw;
        for (int ky = 0; ky < cv->kh; ky++) {
            for (int kx = 0; kx < cv->kw; kx++, row++) {
                float *dst = col + row * ld;
                size_t p = p0, s = s0;
                int oy = oy0, ox = ox0;
                while (p < p1) {
                    int run = j->ow - ox;
                    if ((size_t)run > p1 - p) run = (int)(p1 - p);
                    int iy = oy * cv->stride_y - cv->pad_y + ky;
                    if (iy < 0 || iy >= j->ih) {
                        memset(dst, 0, (size_t)run * sizeof(float));
                    } else {
                        const float *srow = cplane + s * ihw + (size_t)iy * j->iw;
                        im2col_run(dst, srow, ox * cv->stride_x - cv->pad_x + kx, run, cv->stride_x,
                                   j->iw);
                    }
                    dst += run;
                    p += (size_t)run;
                    ox = 0;
                    if (++oy == j->oh) {
                        oy = 0;
                        s++;
                    }
                }
            }
        }
    }
}

/* dst[i] = dst[i] > 0 ? dst[i] : 0, dlib's relu.  SSE's max(x, 0) gives the
 * same, +0 for either zero. */
static void relu_row(float *dst, size_t n) {
    size_t i = 0;
#if defined(__SSE2__)
    const __m128 zero = _mm_setzero_ps();
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(dst + i, _mm_max_ps(_mm_loadu_ps(dst + i), zero));
#endif
    for (; i < n; i++) dst[i] = dst[i] > 0.0f ? dst[i] : 0.0f;
}

/* One GEMM: rows [m0, m1) x columns [p0, p1) from col (row stride ldb).
 * The output tile is first filled with the bias and sgemm accumulates onto
 * it (beta = 1), which spares OpenBLAS's zeroing pass and a bias pass; the
 * relu then runs over the tile while it is in cache. */
static void cnhw_gemm(const cnhw_job *j, int m0, int m1, size_t p0, size_t p1, const float *col,
                      size_t ldb) {
    const fvi_conv *cv = j->cv;
    const size_t ncol = p1 - p0;
    float *c0 = j->out + (size_t)m0 * j->pl.N + p0;
    if (cv->bias) {
        for (int o = m0; o < m1; o++) {
            float *dst = j->out + (size_t)o * j->pl.N + p0;
            const float b = cv->bias[o];
            for (size_t i = 0; i < ncol; i++) dst[i] = b;
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m1 - m0, (int)ncol, (int)j->pl.K, 1.0f,
                cv->weights + (size_t)m0 * j->pl.K, (int)j->pl.K, col, (int)ldb,
                cv->bias ? 1.0f : 0.0f, c0, (int)j->pl.N);
    if (j->relu)
        for (int o = m0; o < m1; o++) relu_row(j->out + (size_t)o * j->pl.N + p0, ncol);
}

static void cnhw_fused_task(void *ctx, int begin, int end, int worker) {
    const cnhw_job *j = ctx;
    float *col = j->scratch + (size_t)worker * j->pl.K * j->pl.nb;
    for (int b = begin; b < end; b++) {
        size_t p0 = (size_t)b * j->pl.nb;
        size_t p1 = p0 + j->pl.nb;
        if (p1 > j->pl.N) p1 = j->pl.N;
        cnhw_im2col(j, p0, p1, col, p1 - p0);
        cnhw_gemm(j, 0, j->cv->out_c, p0, p1, col, p1 - p0);
    }
}

static void cnhw_unroll_task(void *ctx, int begin, int end, int worker) {
    const cnhw_job *j = ctx;
    FVI_UNUSED(worker);
    for (int b = begin; b < end; b++) {
        size_t p0 = (size_t)b * j->pl.nb;
        size_t p1 = p0 + j->pl.nb;
        if (p1 > j->pl.N) p1 = j->pl.N;
        cnhw_im2col(j, p0, p1, j->scratch + p0, j->pl.N);
    }
}

static void cnhw_tile_task(void *ctx, int begin, int end, int worker) {
    const cnhw_job *j = ctx;
    FVI_UNUSED(worker);
    for (int t = begin; t < end; t++) {
        int mi = t / j->pl.ncb, bi = t % j->pl.ncb;
        int m0 = mi * j->pl.mb;
        int m1 = m0 + j->pl.mb;
        if (m1 > j->cv->out_c) m1 = j->cv->out_c;
        size_t p0 = (size_t)bi * j->pl.nb;
        size_t p1 = p0 + j->pl.nb;
        if (p1 > j->pl.N) p1 = j->pl.N;
        cnhw_gemm(j, m0, m1, p0, p1, j->scratch + p0, j->pl.N);
    }
}

void fvi_conv_forward_cnhw(const fvi_conv *cv, const fvi_tensor *in, fvi_tensor *out, int relu,
                           float *scratch, fvi_pool *pool) {
    FV_ASSERT(in->c == cv->in_c && out->c == cv->out_c && out->n == in->n);
    FV_ASSERT(out->h == fvi_conv_out_h(cv, in->h) && out->w == fvi_conv_out_w(cv, in->w));
    cnhw_job j;
    j.cv = cv;
    j.in = in->d;
    j.out = out->d;
    j.scratch = scratch;
    j.n = in->n;
    j.ih = in->h;
    j.iw = in->w;
    j.oh = out->h;
    j.ow = out->w;
    j.relu = relu;
    size_t N = (size_t)in->n * out->h * out->w;
    if (N == 0) return;
    j.pl = cnhw_make_plan(cv, N);
    if (j.pl.fused) {
        fvi_pool_run(pool, j.pl.ncb, 1, cnhw_fused_task, &j);
    } else {
        fvi_pool_run(pool, j.pl.ncb, 1, cnhw_unroll_task, &j);
        fvi_pool_run(pool, j.pl.ncb * j.pl.nmb, 1, cnhw_tile_task, &j);
    }
}

/* dst[i] = a[i] + b[i] (optionally relu'd): the equal-shape case; dst may
 * be a or b (each element is read before it is written). */
static void add_rows(float *dst, const float *a, const float *b, size_t n, int relu) {
    size_t i = 0;
#if defined(__SSE2__)
    const __m128 zero = _mm_setzero_ps();
    for (; i + 4 <= n; i += 4) {
        __m128 v = _mm_add_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i));
        _mm_storeu_ps(dst + i, relu ? _mm_max_ps(v, zero) : v);
    }
#endif
    for (; i < n; i++) {
        float v = a[i] + b[i];
        dst[i] = (relu && !(v > 0.0f)) ? 0.0f : v;
    }
}

void fvi_add_cnhw(const fvi_tensor *a, const fvi_tensor *b, fvi_tensor *out, int relu) {
    FV_ASSERT(a->n == b->n && out->n == a->n);
    const int n = out->n;
    if (a->c == b->c && a->h == b->h && a->w == b->w) {
        add_rows(out->d, a->d, b->d, fvi_tensor_size(out), relu);
        return;
    }
    for (int c = 0; c < out->c; c++)
        for (int s = 0; s < n; s++)
            for (int y = 0; y < out->h; y++) {
                float *dst = out->d + (((size_t)c * n + s) * out->h + y) * out->w;
                const float *ra =
                    (c < a->c && y < a->h) ? a->d + (((size_t)c * n + s) * a->h + y) * a->w : NULL;
                const float *rb =
                    (c < b->c && y < b->h) ? b->d + (((size_t)c * n + s) * b->h + y) * b->w : NULL;
                int wa = ra ? a->w : 0, wb = rb ? b->w : 0;
                for (int x = 0; x < out->w; x++) {
                    float v1 = x < wa ? ra[x] : 0.0f;
                    float v2 = x < wb ? rb[x] : 0.0f;
                    float v = v1 + v2;
                    dst[x] = (relu && v < 0.0f) ? 0.0f : v;
                }
            }
}

void fvi_avg_pool_everything_cnhw(const fvi_tensor *in, float *out) {
    const size_t plane = (size_t)in->h * in->w;
    for (int c = 0; c < in->c; c++)
        for (int s = 0; s < in->n; s++) {
            const float *ip = in->d + ((size_t)c * in->n + s) * plane;
            float acc = 0.0f;
            for (size_t i = 0; i < plane; i++) acc += ip[i];
            out[(size_t)s * in->c + c] = plane ? acc / (float)plane : 0.0f;
        }
}
