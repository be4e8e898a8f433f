/*
 * conv_bf16.c: the reduced-precision convolution of nn.h (the detector's
 * FV_PRECISION_FAST path): bfloat16 inputs and weights, float32
 * accumulation, with AVX-512 BF16's vdpbf16ps (two products per lane).
 *
 * Why a direct convolution and not im2col + GEMM: the detector's layers
 * have few output channels (16, 32, 45) and a huge pixel count, so the
 * im2col panel (K = 75..1125 rows) is mostly memory traffic and OpenBLAS
 * ships no bf16 GEMM here.  Activations are kept NHWC (channels innermost,
 * channel stride a multiple of 16 after the first layer), so the K terms of
 * one output pixel at one tap (ky, kx) are one contiguous run of channel
 * pairs: the kernel broadcasts an input pair and multiplies it with a zmm of
 * 16 output channels' weight pairs.  A tile of R output pixels x NB blocks
 * of 16 channels keeps R*NB accumulators in registers (<= 24 of the 32 zmm)
 * and reuses each weight load R times; no im2col buffer exists.
 *
 * The input carries its zero border (the producer writes it), so the inner
 * loops never test bounds; each layer's output is written with the border
 * the next layer needs, or as float32 NCHW planes for a following fp32
 * layer (the detector's 9x9 one-channel layer).
 *
 * Dispatch: everything using AVX-512 is compiled with function target
 * attributes (the build needs no -mavx512 flag) and is only reached after
 * fvi_cpu_bf16() says the CPU and the OS support it; elsewhere the caller
 * keeps the float32 path.  Rows are split over the pool; every output value
 * is computed by one tile in a fixed order, so results do not depend on the
 * pool size.
 */
#include <stdint.h>
#include <string.h>

#include "core/fvi.h"
#include "nn/nn.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FV_NO_BF16)
#define HAVE_BF16_KERNEL 1
#include <cpuid.h>
#include <immintrin.h>
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define ALWAYS_INLINE inline __attribute__((always_inline))
/* the tile loops have constant trip counts: unrolled, acc[] lives in zmm */
#define UNROLL _Pragma("GCC unroll 32")
#else
#define HAVE_BF16_KERNEL 0
#endif

fvi_bf16 fvi_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7F800000u) == 0x7F800000u) /* inf/nan: truncate, keep nan quiet */
        return (fvi_bf16)((u >> 16) | ((u & 0xFFFFu) ? 0x40u : 0u));
    u += 0x7FFFu + ((u >> 16) & 1u); /* round to nearest even */
    return (fvi_bf16)(u >> 16);
}

float fvi_from_bf16(fvi_bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* 1 when CPUID reports AVX-512 F, BW and VL and XCR0 says the OS saves
 * the zmm and opmask state. */
int fvi_cpu_avx512(void) {
#if HAVE_BF16_KERNEL
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1u)) return 0; /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xE6u) != 0xE6u) return 0; /* SSE, AVX, opmask, zmm state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return ((b >> 16) & 1u) && ((b >> 30) & 1u) && ((b >> 31) & 1u); /* F, BW, VL */
#else
    return 0;
#endif
}

/* ... and AVX512_BF16 (CPUID leaf 7 subleaf 1, EAX bit 5). */
int fvi_cpu_bf16(void) {
#if HAVE_BF16_KERNEL
    unsigned a, b, c, d;
    if (!fvi_cpu_avx512() || !__get_cpuid_count(7, 0, &a, &b, &c, &d) || a < 1) return 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (int)((a >> 5) & 1u);
#else
    return 0;
#endif
}

int fvi_conv_bf16_pack(const fvi_conv *cv, int in_cs, fvi_conv_bf16 *out) {
    memset(out, 0, sizeof *out);
    if (in_cs < cv->in_c || in_cs % 2 || cv->out_c < 1 || cv->out_c > 48) return -1;
    const int out_cs = (cv->out_c + 15) / 16 * 16;
    size_t n;
    if (fvi_size_mul((size_t)cv->kh * cv->kw, (size_t)in_cs, &n) ||
        fvi_size_mul(n, (size_t)out_cs, &n))
        return -1;
    out->w = fvi_calloc(n, sizeof *out->w);
    out->bias = fvi_calloc((size_t)out_cs, sizeof *out->bias);
    if (!out->w || !out->bias) {
        fvi_conv_bf16_free(out);
        return -1;
    }
    out->out_c = cv->out_c;
    out->in_c = cv->in_c;
    out->kh = cv->kh;
    out->kw = cv->kw;
    out->stride_y = cv->stride_y;
    out->stride_x = cv->stride_x;
    out->in_cs = in_cs;
    out->out_cs = out_cs;
    /* w[((ky*kw + kx)*in_cs/2 + c/2)*out_cs*2 + o*2 + c%2] = weight (o, c, ky, kx) */
    for (int o = 0; o < cv->out_c; o++) {
        out->bias[o] = cv->bias ? cv->bias[o] : 0.0f;
        for (int c = 0; c < cv->in_c; c++)
            for (int ky = 0; ky < cv->kh; ky++)
                for (int kx = 0; kx < cv->kw; kx++) {
                    const float v =
                        cv->weights[(((size_t)o * cv->in_c + c) * cv->kh + ky) * cv->kw + kx];
                    const size_t pair = ((size_t)ky * cv->kw + kx) * (size_t)(in_cs / 2) + c / 2;
                    out->w[(pair * out_cs + o) * 2 + c % 2] = fvi_to_bf16(v);
                }
    }
    return 0;
}

void fvi_conv_bf16_free(fvi_conv_bf16 *cv) {
    if (!cv) return;
    fvi_free(cv->w);
    fvi_free(cv->bias);
    cv->w = NULL;
    cv->bias = NULL;
}

typedef struct {
    const fvi_conv_bf16 *cv;
    const fvi_bf16 *in;
    int iw; /* input width including its border */
    int oh, ow, relu;
    fvi_bf16 *out; /* NHWC with border pad, or NULL */
    int pad;
    float *out_f;       /* NCHW float planes, or NULL */
    const float *src_f; /* fvi_bf16_from_nchw's input */
    int c;              /* its channels */
} bf16_job;

#if HAVE_BF16_KERNEL

/* One tile: R output pixels of row oy from column ox, NB blocks of 16
 * output channels (R and NB are constants at every call: the compiler keeps
 * acc[][] in registers). */
BF16_TARGET static ALWAYS_INLINE void tile(const bf16_job *j, int oy, int ox, const int NB,
                                           const int R) {
    const fvi_conv_bf16 *cv = j->cv;
    const int cs = cv->in_cs, pairs = cs / 2, ocs = cv->out_cs;
    const size_t row = (size_t)j->iw * cs;
    const size_t pstep = (size_t)cv->stride_x * cs; /* elements between pixels */
    const fvi_bf16 *ip = j->in + (size_t)oy * cv->stride_y * row + (size_t)ox * pstep;
    const fvi_bf16 *wp = cv->w;
    __m512 acc[24];
    UNROLL
    for (int i = 0; i < R * NB; i++) acc[i] = _mm512_setzero_ps();
    for (int ky = 0; ky < cv->kh; ky++)
        for (int kx = 0; kx < cv->kw; kx++) {
            const fvi_bf16 *tap = ip + (size_t)ky * row + (size_t)kx * cs;
            for (int q = 0; q < pairs; q++, wp += (size_t)ocs * 2) {
                __m512bh w[3];
                UNROLL
                for (int b = 0; b < NB; b++) w[b] = (__m512bh)_mm512_loadu_si512(wp + b * 32);
                UNROLL
                for (int r = 0; r < R; r++) {
                    int32_t x;
                    memcpy(&x, tap + r * pstep + 2 * q, sizeof x);
                    const __m512bh xb = (__m512bh)_mm512_set1_epi32(x);
                    UNROLL
                    for (int b = 0; b < NB; b++)
                        acc[r * NB + b] = _mm512_dpbf16_ps(acc[r * NB + b], w[b], xb);
                }
            }
        }
    const __m512 zero = _mm512_setzero_ps();
    UNROLL
    for (int r = 0; r < R; r++) UNROLL
    for (int b = 0; b < NB; b++) {
        __m512 v = _mm512_add_ps(acc[r * NB + b], _mm512_loadu_ps(cv->bias + b * 16));
        if (j->relu) v = _mm512_max_ps(v, zero);
        if (j->out) {
            const size_t ow_p = (size_t)j->ow + 2 * (size_t)j->pad;
            fvi_bf16 *o =
                j->out + (((size_t)oy + j->pad) * ow_p + (size_t)(ox + r + j->pad)) * ocs + b * 16;
            _mm256_storeu_si256((__m256i *)o, (__m256i)_mm512_cvtneps_pbh(v));
        } else {
            float lanes[16];
            _mm512_storeu_ps(lanes, v);
            const size_t plane = (size_t)j->oh * j->ow;
            for (int l = 0; l < 16 && b * 16 + l < cv->out_c; l++)
                j->out_f[(size_t)(b * 16 + l) * plane + (size_t)oy * j->ow + ox + r] = lanes[l];
        }
    }
}

/* Tiles per channel-block count: R*NB <= 24 accumulators, the rest of the
 * 32 zmm hold the weights and the broadcast input. */
#define ROWS_DEF(NB, R)                                                                            \
    BF16_TARGET static void tile_##NB##_##R(const bf16_job *j, int oy, int ox) {                   \
        tile(j, oy, ox, NB, R);                                                                    \
    }
ROWS_DEF(1, 16)
ROWS_DEF(1, 4)
ROWS_DEF(1, 1)
ROWS_DEF(2, 12)
ROWS_DEF(2, 4)
ROWS_DEF(2, 1)
ROWS_DEF(3, 8)
ROWS_DEF(3, 4)
ROWS_DEF(3, 1)

typedef void (*tile_fn)(const bf16_job *j, int oy, int ox);

/* Output rows [begin, end): wide tiles, the last one moved left to end at
 * the row's end (recomputing a few pixels to the same values: each pixel's
 * sum runs in one order whatever its tile), which is much cheaper than
 * narrow tail tiles that reload the weights for one or four pixels; rows
 * narrower than a wide tile use 4- and 1-pixel tiles.  Then the row's share
 * of the output border. */
static void conv_rows_task(void *ctx, int begin, int end, int worker) {
    const bf16_job *j = ctx;
    FVI_UNUSED(worker);
    static const tile_fn fns[3][3] = {{tile_1_16, tile_1_4, tile_1_1},
                                      {tile_2_12, tile_2_4, tile_2_1},
                                      {tile_3_8, tile_3_4, tile_3_1}};
    static const int wide[3] = {16, 12, 8};
    const int nb = j->cv->out_cs / 16;
    FVI_ASSERT(nb >= 1 && nb <= 3);
    const tile_fn *f = fns[nb - 1];
    for (int oy = begin; oy < end; oy++) {
        const int R = wide[nb - 1];
        int ox = 0;
        for (; ox + R <= j->ow; ox += R) f[0](j, oy, ox);
        if (ox < j->ow && j->ow >= R) {
            f[0](j, oy, j->ow - R);
            ox = j->ow;
        }
        for (; ox + 4 <= j->ow; ox += 4) f[1](j, oy, ox);
        for (; ox < j->ow; ox++) f[2](j, oy, ox);
        if (j->out && j->pad) {
            const size_t ocs = (size_t)j->cv->out_cs, ow_p = (size_t)j->ow + 2 * (size_t)j->pad;
            fvi_bf16 *r = j->out + ((size_t)oy + j->pad) * ow_p * ocs;
            memset(r, 0, (size_t)j->pad * ocs * sizeof *r);
            memset(r + (ow_p - (size_t)j->pad) * ocs, 0, (size_t)j->pad * ocs * sizeof *r);
            if (oy == 0) /* the top border rows */
                memset(j->out, 0, (size_t)j->pad * ow_p * ocs * sizeof *r);
            if (oy == j->oh - 1) /* the bottom ones */
                memset(r + ow_p * ocs, 0, (size_t)j->pad * ow_p * ocs * sizeof *r);
        }
    }
}

/* Rows [begin, end) of fvi_bf16_from_nchw for three planes into a stride
 * of four (the detector's input): 16 pixels per step, each plane rounded
 * by vcvtneps2bf16, then (r | g << 16, b) pairs interleaved into 64-bit
 * pixels; the row's tail as the scalar task does. */
BF16_TARGET static void rgb_to_bf16_task(void *ctx, int begin, int end, int worker) {
    const bf16_job *j = ctx;
    FVI_UNUSED(worker);
    const size_t plane = (size_t)j->oh * j->ow;
    const __m512i first = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i second =
        _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    for (int y = begin; y < end; y++) {
        const float *r = j->src_f + (size_t)y * j->ow, *g = r + plane, *b = g + plane;
        fvi_bf16 *o = j->out + (size_t)y * j->ow * 4;
        int x = 0;
        for (; x + 16 <= j->ow; x += 16) {
            const __m512i R =
                _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r + x)));
            const __m512i G =
                _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(g + x)));
            const __m512i B =
                _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(b + x)));
            const __m512i rg = _mm512_or_si512(R, _mm512_slli_epi32(G, 16));
            _mm512_storeu_si512(o + (size_t)x * 4, _mm512_permutex2var_epi32(rg, first, B));
            _mm512_storeu_si512(o + (size_t)x * 4 + 32, _mm512_permutex2var_epi32(rg, second, B));
        }
        for (; x < j->ow; x++) {
            fvi_bf16 *p = o + (size_t)x * 4;
            p[0] = fvi_to_bf16(r[x]);
            p[1] = fvi_to_bf16(g[x]);
            p[2] = fvi_to_bf16(b[x]);
            p[3] = 0;
        }
    }
}

#endif

/* Rows [begin, end) of fvi_bf16_from_nchw: one output pixel's channels
 * gathered from the planes, rounded, the padding channels zero. */
static void from_nchw_task(void *ctx, int begin, int end, int worker) {
    const bf16_job *j = ctx;
    FVI_UNUSED(worker);
    const size_t plane = (size_t)j->oh * j->ow, cs = (size_t)j->cv->in_cs;
    for (int y = begin; y < end; y++) {
        fvi_bf16 *o = j->out + (size_t)y * j->ow * cs;
        for (int x = 0; x < j->ow; x++, o += cs) {
            for (int c = 0; c < j->c; c++)
                o[c] = fvi_to_bf16(j->src_f[(size_t)c * plane + (size_t)y * j->ow + x]);
            for (size_t c = (size_t)j->c; c < cs; c++) o[c] = 0;
        }
    }
}

void fvi_conv_bf16_forward(const fvi_conv_bf16 *cv, const fvi_bf16 *in, int in_h, int in_w,
                           int relu, fvi_bf16 *out, int out_pad, float *out_nchw,
                           fvi_workers *pool) {
    bf16_job j;
    memset(&j, 0, sizeof j);
    j.cv = cv;
    j.in = in;
    j.iw = in_w;
    j.oh = fvi_pool_out_dim(in_h, cv->kh, cv->stride_y, 0);
    j.ow = fvi_pool_out_dim(in_w, cv->kw, cv->stride_x, 0);
    j.relu = relu;
    j.out = out_nchw ? NULL : out;
    j.pad = out_nchw ? 0 : out_pad;
    j.out_f = out_nchw;
    FVI_ASSERT(j.out || j.out_f);
#if HAVE_BF16_KERNEL
    if (j.oh > 0 && j.ow > 0) fvi_workers_run(pool, j.oh, 1, conv_rows_task, &j);
#else
    FVI_UNUSED(pool);
    FVI_ASSERT(!"fvi_conv_bf16_forward without AVX-512 BF16 support");
#endif
}

void fvi_bf16_from_nchw(const float *in, int c, int h, int w, int cs, fvi_bf16 *out,
                        fvi_workers *pool) {
    fvi_conv_bf16 shape;
    memset(&shape, 0, sizeof shape);
    shape.in_cs = cs;
    bf16_job j;
    memset(&j, 0, sizeof j);
    j.cv = &shape;
    j.src_f = in;
    j.c = c;
    j.oh = h;
    j.ow = w;
    j.out = out;
    FVI_ASSERT(cs >= c);
#if HAVE_BF16_KERNEL
    if (c == 3 && cs == 4 && fvi_cpu_bf16()) {
        fvi_workers_run(pool, h, 1, rgb_to_bf16_task, &j);
        return;
    }
#endif
    fvi_workers_run(pool, h, 1, from_nchw_task, &j);
}
