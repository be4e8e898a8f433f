/*
 * ops.c: the NN ops of nn.h, with dlib's semantics.
 *
 * Convolution (fvi_conv_forward_cnhw, the one convolution of both networks):
 * the batch's output is cut into tiles chosen from the layer's shape alone
 * (never the thread count, so results are bitwise identical for any pool
 * size); each tile is unrolled by im2col (from a zero-padded copy of the
 * input when the layer pads) into the worker's scratch and multiplied by the
 * (out_c x in_c*kh*kw) weight matrix with one sgemm (sgemv for a single
 * column).
 */
#include <cblas.h>
#include <float.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "core/fvi.h"
#include "nn/nn.h"

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
 * A padded convolution first copies its input once into a zero-bordered
 * buffer at the start of the scratch, so that im2col never tests bounds:
 * each run along an output row is a plain (strided) copy.
 */

/* Target im2col panel per tile, in floats (256 KiB: half of this Zen 3's
 * 512 KiB L2 per core; 128K and 256K floats measured no faster). */
#define CNHW_PANEL_FLOATS ((size_t)1 << 16)
/* Fewer column blocks than this switches to the row-split tiling. */
#define CNHW_MIN_COL_TILES 4
/* Output-channel rows per tile in the row-split tiling. */
#define CNHW_ROW_TILE 64
/* Columns per block are at least this many times the output channels:
 * every sgemm call packs the whole (out_c x K) weight matrix again, so a
 * block narrower than a few out_c spends more on that copy than on its own
 * panel (perf: sgemm_oncopy 6-7% of the embedding with 64-column blocks in
 * the 8x8 and 4x4 layers; per-layer minimum times 5-10% lower there). */
#define CNHW_COLS_PER_ROW 4

static size_t round_up16(size_t n) {
    return (n + 15) & ~(size_t)15;
}

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
    if (want < (size_t)CNHW_COLS_PER_ROW * cv->out_c) want = (size_t)CNHW_COLS_PER_ROW * cv->out_c;
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

/* Floats of the zero-padded copy of the input (none without padding). */
static size_t cnhw_padded_size(const fvi_conv *cv, int n, int in_h, int in_w) {
    if (cv->pad_y == 0 && cv->pad_x == 0) return 0;
    return (size_t)cv->in_c * n * (size_t)(in_h + 2 * cv->pad_y) * (size_t)(in_w + 2 * cv->pad_x);
}

/* One output channel at stride 1 (the detector's last layer: 45 -> 1,
 * 9x9) is not a GEMM worth the name: im2col would unroll in_c*kh*kw rows
 * (3,645 there) for a one-row product, ~80x the memory of the input, and
 * ran at ~3 GFLOP/s.  It is computed directly instead (cnhw_single_task). */
static int cnhw_single(const fvi_conv *cv) {
    return cv->out_c == 1 && cv->stride_y == 1 && cv->stride_x == 1;
}

size_t fvi_conv_cnhw_scratch(const fvi_conv *cv, int n, int in_h, int in_w, int threads) {
    size_t N = (size_t)n * fvi_conv_out_h(cv, in_h) * fvi_conv_out_w(cv, in_w);
    if (N == 0) return 0;
    if (cnhw_single(cv)) /* the padded copy, then the output at the padded width */
        return round_up16(cnhw_padded_size(cv, n, in_h, in_w)) +
               (size_t)n * fvi_conv_out_h(cv, in_h) * (size_t)(in_w + 2 * cv->pad_x);
    cnhw_plan pl = cnhw_make_plan(cv, N);
    size_t padded = round_up16(cnhw_padded_size(cv, n, in_h, in_w));
    if (pl.fused) return padded + pl.K * pl.nb * (size_t)(threads < 1 ? 1 : threads);
    return padded + pl.K * pl.N;
}

typedef struct {
    const fvi_conv *cv;
    const float *in;  /* the caller's input */
    const float *src; /* what im2col reads: in, or its zero-padded copy */
    float *out;
    float *scratch; /* im2col panels, after the padded copy */
    float *padded;
    int n, ih, iw, oh, ow, relu;
    int ph, pw; /* src's plane: in_h/in_w plus padding on both sides */
    int avx512; /* the one-channel layer may use single_row_taps_avx512 */
    cnhw_plan pl;
} cnhw_job;

/* Copies planes [begin, end) (plane = c*n + s) of the input into the
 * padded copy, zeros around. */
static void cnhw_pad_task(void *ctx, int begin, int end, int worker) {
    const cnhw_job *j = ctx;
    FVI_UNUSED(worker);
    const int py = j->cv->pad_y, px = j->cv->pad_x;
    for (int pl = begin; pl < end; pl++) {
        const float *ip = j->in + (size_t)pl * j->ih * j->iw;
        float *op = j->padded + (size_t)pl * j->ph * j->pw;
        memset(op, 0, (size_t)py * j->pw * sizeof(float));
        op += (size_t)py * j->pw;
        for (int y = 0; y < j->ih; y++, op += j->pw, ip += j->iw) {
            memset(op, 0, (size_t)px * sizeof(float));
            memcpy(op + px, ip, (size_t)j->iw * sizeof(float));
            memset(op + px + j->iw, 0, (size_t)px * sizeof(float));
        }
        memset(op, 0, (size_t)py * j->pw * sizeof(float));
    }
}

/* dst[r] = src[r * stride] for r < run. */
static inline void copy_run(float *restrict dst, const float *restrict src, int run, int stride) {
    int r = 0;
    if (stride == 1) {
#if defined(__SSE2__)
        for (; r + 8 <= run; r += 8) {
            _mm_storeu_ps(dst + r, _mm_loadu_ps(src + r));
            _mm_storeu_ps(dst + r + 4, _mm_loadu_ps(src + r + 4));
        }
        for (; r + 4 <= run; r += 4) _mm_storeu_ps(dst + r, _mm_loadu_ps(src + r));
#endif
        for (; r < run; r++) dst[r] = src[r];
        return;
    }
#if defined(__SSE2__)
    if (stride == 2) /* even lanes of two loads; reads stay below src[2*run-2] */
        for (; r + 4 < run; r += 4)
            _mm_storeu_ps(dst + r,
                          _mm_shuffle_ps(_mm_loadu_ps(src + 2 * r), _mm_loadu_ps(src + 2 * r + 4),
                                         _MM_SHUFFLE(2, 0, 2, 0)));
#endif
    for (; r < run; r++) dst[r] = src[(ptrdiff_t)r * stride];
}

/* Unrolls columns [p0, p1) into col (K rows, row stride ld) from j->src,
 * which has every tap of every output pixel inside it (padding is in the
 * copy), so each run along an output row is a plain strided copy.  Only
 * the tile's start is decomposed by division. */
static void cnhw_im2col(const cnhw_job *j, size_t p0, size_t p1, float *col, size_t ld) {
    const fvi_conv *cv = j->cv;
    const size_t ohw = (size_t)j->oh * j->ow;
    const size_t plane = (size_t)j->ph * j->pw;
    const size_t ystep = (size_t)cv->stride_y * j->pw;
    const int sx = cv->stride_x;
    const size_t s0 = p0 / ohw;
    const int oy0 = (int)((p0 % ohw) / (size_t)j->ow);
    const int ox0 = (int)((p0 % ohw) % (size_t)j->ow);
    /* offset in src of tap (0, 0) of column p0 */
    const size_t start = s0 * plane + (size_t)oy0 * ystep + (size_t)ox0 * sx;
    size_t row = 0;
    for (int c = 0; c < cv->in_c; c++) {
        const float *cplane = j->src + (size_t)c * j->n * plane;
        for (int ky = 0; ky < cv->kh; ky++) {
            for (int kx = 0; kx < cv->kw; kx++, row++) {
                float *dst = col + row * ld;
                const float *base = cplane + (size_t)ky * j->pw + kx;
                size_t p = p0, off = start, rowoff = start - (size_t)ox0 * sx;
                int oy = oy0, run = j->ow - ox0;
                while (p < p1) {
                    if ((size_t)run > p1 - p) run = (int)(p1 - p);
                    copy_run(dst, base + off, run, sx);
                    dst += run;
                    p += (size_t)run;
                    run = j->ow;
                    if (++oy == j->oh) {
                        oy = 0;
                        rowoff += plane - (size_t)(j->oh - 1) * ystep;
                    } else {
                        rowoff += ystep;
                    }
                    off = rowoff;
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
    const float beta = cv->bias ? 1.0f : 0.0f;
    if (ncol == 1) /* one column (a 1x1 output of one chip): sgemv reads the
                    * weights once where sgemm would first copy them all into
                    * its packed layout for a single dot product per row */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, m1 - m0, (int)j->pl.K, 1.0f,
                    cv->weights + (size_t)m0 * j->pl.K, (int)j->pl.K, col, (int)ldb, beta, c0,
                    (int)j->pl.N);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m1 - m0, (int)ncol, (int)j->pl.K,
                    1.0f, cv->weights + (size_t)m0 * j->pl.K, (int)j->pl.K, col, (int)ldb, beta, c0,
                    (int)j->pl.N);
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

/* Output rows per task of the one-channel convolution. */
#define SINGLE_ROWS 8

/* acc[i] += sum over kx of w[kx] * src[i + kx], i < len. */
static inline void single_row_taps(float *restrict acc, const float *restrict src, const float *w,
                                   int kw, size_t len) {
    size_t i = 0;
#if defined(__SSE2__)
    for (; i + 8 <= len; i += 8) {
        __m128 a0 = _mm_loadu_ps(acc + i), a1 = _mm_loadu_ps(acc + i + 4);
        for (int kx = 0; kx < kw; kx++) {
            const __m128 wv = _mm_set1_ps(w[kx]);
            a0 = _mm_add_ps(a0, _mm_mul_ps(wv, _mm_loadu_ps(src + i + kx)));
            a1 = _mm_add_ps(a1, _mm_mul_ps(wv, _mm_loadu_ps(src + i + kx + 4)));
        }
        _mm_storeu_ps(acc + i, a0);
        _mm_storeu_ps(acc + i + 4, a1);
    }
#endif
    for (; i < len; i++) {
        float a = acc[i];
        for (int kx = 0; kx < kw; kx++) a += w[kx] * src[i + kx];
        acc[i] = a;
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FV_NO_BF16)
#define HAVE_AVX512_TAPS 1
#include <immintrin.h>
/* single_row_taps with 16-lane vectors for the bulk (the same per-element
 * multiply then add, never fused: -std=c11 keeps GCC from contracting, so
 * results are bitwise those of the SSE loop; the dlib parity tests hold
 * that), the rest by single_row_taps. */
__attribute__((target("avx512f"))) static void single_row_taps_avx512(float *restrict acc,
                                                                      const float *restrict src,
                                                                      const float *w, int kw,
                                                                      size_t len) {
    size_t i = 0;
    for (; i + 32 <= len; i += 32) {
        __m512 a0 = _mm512_loadu_ps(acc + i), a1 = _mm512_loadu_ps(acc + i + 16);
        for (int kx = 0; kx < kw; kx++) {
            const __m512 wv = _mm512_set1_ps(w[kx]);
            a0 = _mm512_add_ps(a0, _mm512_mul_ps(wv, _mm512_loadu_ps(src + i + kx)));
            a1 = _mm512_add_ps(a1, _mm512_mul_ps(wv, _mm512_loadu_ps(src + i + kx + 16)));
        }
        _mm512_storeu_ps(acc + i, a0);
        _mm512_storeu_ps(acc + i + 16, a1);
    }
    single_row_taps(acc + i, src + i, w, kw, len - i);
}
#else
#define HAVE_AVX512_TAPS 0
#endif

/* Tasks = samples x blocks of SINGLE_ROWS output rows.  Each output is
 * accumulated over (c, ky, kx) in that order by one task, so results do
 * not depend on the pool size.  Accumulation runs over the padded width
 * (pw): then every (c, ky) term reads one contiguous run of the padded
 * input, and the columns past ow are dropped when the rows are written. */
static void cnhw_single_task(void *ctx, int begin, int end, int worker) {
    const cnhw_job *j = ctx;
    FVI_UNUSED(worker);
    const fvi_conv *cv = j->cv;
    const int blocks = (j->oh + SINGLE_ROWS - 1) / SINGLE_ROWS;
    const float b = cv->bias ? cv->bias[0] : 0.0f;
    for (int t = begin; t < end; t++) {
        const int s = t / blocks, y0 = (t % blocks) * SINGLE_ROWS;
        const int y1 = y0 + SINGLE_ROWS < j->oh ? y0 + SINGLE_ROWS : j->oh;
        /* the last row stops at ow: the reads then end at the plane's end */
        const size_t len = (size_t)(y1 - y0 - 1) * j->pw + (size_t)j->ow;
        float *acc = j->scratch + ((size_t)s * j->oh + y0) * j->pw;
        memset(acc, 0, len * sizeof *acc);
        for (int c = 0; c < cv->in_c; c++) {
            const float *plane =
                j->src + ((size_t)c * j->n + s) * j->ph * j->pw + (size_t)y0 * j->pw;
            const float *w = cv->weights + (size_t)c * cv->kh * cv->kw;
            for (int ky = 0; ky < cv->kh; ky++) {
#if HAVE_AVX512_TAPS
                if (j->avx512) {
                    single_row_taps_avx512(acc, plane + (size_t)ky * j->pw, w + (size_t)ky * cv->kw,
                                           cv->kw, len);
                    continue;
                }
#endif
                single_row_taps(acc, plane + (size_t)ky * j->pw, w + (size_t)ky * cv->kw, cv->kw,
                                len);
            }
        }
        float *o = j->out + (size_t)s * j->oh * j->ow;
        for (int y = y0; y < y1; y++)
            for (int x = 0; x < j->ow; x++) {
                float v = acc[(size_t)(y - y0) * j->pw + x] + b;
                o[(size_t)y * j->ow + x] = (j->relu && !(v > 0.0f)) ? 0.0f : v;
            }
    }
}

void fvi_conv_forward_cnhw(const fvi_conv *cv, const fvi_tensor *in, fvi_tensor *out, int relu,
                           float *scratch, fvi_workers *pool) {
    FVI_ASSERT(in->c == cv->in_c && out->c == cv->out_c && out->n == in->n);
    FVI_ASSERT(out->h == fvi_conv_out_h(cv, in->h) && out->w == fvi_conv_out_w(cv, in->w));
    cnhw_job j;
    j.cv = cv;
    j.in = in->d;
    j.src = in->d;
    j.out = out->d;
    j.padded = scratch;
    j.ph = in->h + 2 * cv->pad_y;
    j.pw = in->w + 2 * cv->pad_x;
    j.scratch = scratch + round_up16(cnhw_padded_size(cv, in->n, in->h, in->w));
    j.n = in->n;
    j.ih = in->h;
    j.iw = in->w;
    j.oh = out->h;
    j.ow = out->w;
    j.relu = relu;
    j.avx512 = 0;
    size_t N = (size_t)in->n * out->h * out->w;
    if (N == 0) return;
    j.pl = cnhw_make_plan(cv, N);
    if (cnhw_padded_size(cv, in->n, in->h, in->w)) {
        fvi_workers_run(pool, in->c * in->n, 1, cnhw_pad_task, &j);
        j.src = j.padded;
    }
    if (cnhw_single(cv)) {
        j.avx512 = fvi_cpu_avx512();
        fvi_workers_run(pool, in->n * ((out->h + SINGLE_ROWS - 1) / SINGLE_ROWS), 1,
                        cnhw_single_task, &j);
    } else if (j.pl.fused) {
        fvi_workers_run(pool, j.pl.ncb, 1, cnhw_fused_task, &j);
    } else {
        fvi_workers_run(pool, j.pl.ncb, 1, cnhw_unroll_task, &j);
        fvi_workers_run(pool, j.pl.ncb * j.pl.nmb, 1, cnhw_tile_task, &j);
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
    FVI_ASSERT(a->n == b->n && out->n == a->n);
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
