/*
 * nn.h: the float32 inference engine shared by the ResNet embedder and the
 * MMOD detector.
 *
 * Tensors are NCHW float32 (dlib's layout: num_samples, k, nr, nc).  Ops are
 * plain functions over caller-provided tensors; memory comes from an arena
 * (fvi_arena) that a network sizes once with a measure pass, so a forward
 * pass allocates nothing.  Ops follow dlib's semantics exactly where they
 * differ from other frameworks:
 *  - conv/pool output size: 1 + (in + 2*pad - k) / stride;
 *  - dlib's default padding is k/2 when stride is 1 and 0 otherwise;
 *  - avg pooling divides by the count of in-image pixels of the window;
 *  - add_prev of tensors of different shapes gives the element-wise max
 *    shape, with missing values taken as zero.
 * Convolution is im2col + OpenBLAS sgemm, split over output columns by the
 * engine's pool with BLAS pinned to one thread (fvi_nn_init), so the pool
 * and OpenBLAS's own threads never fight.
 *
 * A reduced-precision convolution (bf16 inputs and weights, float
 * accumulation; conv_bf16.c) serves the detector's fast mode on CPUs with
 * AVX-512 BF16; callers check fvi_cpu_bf16() and keep the float path
 * otherwise.
 */
#ifndef FVI_NN_H
#define FVI_NN_H

#include <stddef.h>
#include <stdint.h>

#include "core/workers.h"

typedef struct fvi_tensor {
    int n, c, h, w;
    float *d;
} fvi_tensor;

static inline size_t fvi_tensor_size(const fvi_tensor *t) {
    return (size_t)t->n * (size_t)t->c * (size_t)t->h * (size_t)t->w;
}

/* Bump arena: sized once, reset per forward pass. */
typedef struct fvi_arena {
    float *base;
    size_t cap;    /* floats */
    size_t used;   /* floats */
    size_t peak;   /* floats; the measure pass reads this */
    int measuring; /* 1: base is NULL, only count */
} fvi_arena;

/* Starts a measure pass (no memory). */
void fvi_arena_measure(fvi_arena *a);
/* Allocates cap floats (64-byte aligned).  Returns 0 or -1. */
int fvi_arena_reserve(fvi_arena *a, size_t cap);
void fvi_arena_free(fvi_arena *a);
static inline void fvi_arena_reset(fvi_arena *a) {
    a->used = 0;
}
/* Returns n floats (64-byte aligned offsets), or NULL when measuring or
 * out of room (a bug: the measure pass sized it). */
float *fvi_arena_alloc(fvi_arena *a, size_t n);
/* Shapes a tensor and takes its memory from the arena. */
int fvi_arena_tensor(fvi_arena *a, fvi_tensor *t, int n, int c, int h, int w);

/* Pins OpenBLAS to one thread; call once before using conv (idempotent). */
void fvi_nn_init(void);

/* Convolution with bias (bias may be NULL).  weights: out_c x in_c x kh x kw
 * (dlib's filter layout). */
typedef struct fvi_conv {
    int out_c, in_c, kh, kw, stride_y, stride_x, pad_y, pad_x;
    float *weights;
    float *bias;
} fvi_conv;

int fvi_conv_out_h(const fvi_conv *cv, int in_h);
int fvi_conv_out_w(const fvi_conv *cv, int in_w);

/* Folds a following per-channel affine (y = g*x + b) into conv weights and
 * bias (allocating bias if NULL).  Returns 0 or -1 (no memory). */
int fvi_conv_fold_affine(fvi_conv *cv, const float *gamma, const float *beta);

/* Per-channel affine in place: x = g[c]*x + b[c]. */
void fvi_affine_inplace(fvi_tensor *t, const float *gamma, const float *beta);
void fvi_relu_inplace(fvi_tensor *t);

/* Pooling with dlib's semantics.  Output shape: see file comment. */
int fvi_pool_out_dim(int in, int k, int stride, int pad);
void fvi_max_pool(const fvi_tensor *in, fvi_tensor *out, int kh, int kw, int sy, int sx, int py,
                  int px);
void fvi_avg_pool(const fvi_tensor *in, fvi_tensor *out, int kh, int kw, int sy, int sx, int py,
                  int px);
/* Global average over h*w per channel: out shaped (n, c, 1, 1). */
void fvi_avg_pool_everything(const fvi_tensor *in, fvi_tensor *out);

/* dlib add_prev: out = a + b over the max shape, zero where a tensor has no
 * value.  out must be shaped max(a, b) per dimension (n equal).  out may
 * alias a or b only when that tensor already has the max shape. */
void fvi_add_prev(const fvi_tensor *a, const fvi_tensor *b, fvi_tensor *out);

/* Fully connected without bias: out[n][j] = sum_i in[n][i] * w[i][j]
 * (dlib's fc weights are (num_inputs x num_outputs), row-major). */
void fvi_fc_no_bias(const fvi_tensor *in, const float *w, int num_outputs, fvi_tensor *out);

/* ---- Batched ops (CNHW layout) ----
 * A batch of n samples may also be stored channel-major ("CNHW"): element
 * (s, c, y, x) at ((c*n + s)*h + y)*w + x.  A whole batch's convolution is
 * then one im2col + GEMM with n*out_h*out_w columns, which keeps sgemm's N
 * large for the small late layers of a ResNet.  For n == 1 CNHW and NCHW
 * coincide.  fvi_relu_inplace, fvi_max_pool and fvi_avg_pool work plane by
 * plane (the same plane order in and out), so they accept either layout.
 *
 * The work of a batched convolution is cut into tiles (column blocks, and
 * row blocks for layers with few columns) chosen from the layer's shape
 * alone; each output value is computed by the same sgemm call shape whatever
 * the pool size, so results are bitwise identical for any thread count. */

/* Scratch floats needed by fvi_conv_forward_cnhw for a batch of n samples of
 * in_h x in_w with `threads` workers (threads >= the pool size): the im2col
 * panels and, for a padded layer, a zero-bordered copy of the input. */
size_t fvi_conv_cnhw_scratch(const fvi_conv *cv, int n, int in_h, int in_w, int threads);
/* in: CNHW (n, in_c, in_h, in_w); out: CNHW shaped (n, out_c, out_h,
 * out_w).  relu != 0 applies max(0, .) after the bias (a fused relu layer). */
void fvi_conv_forward_cnhw(const fvi_conv *cv, const fvi_tensor *in, fvi_tensor *out, int relu,
                           float *scratch, fvi_workers *pool);
/* dlib add_prev on CNHW tensors (zero where a tensor has no value), then an
 * optional relu.  out shaped max(a, b) per dimension (n equal); out may not
 * alias a or b unless all three have the same shape. */
void fvi_add_cnhw(const fvi_tensor *a, const fvi_tensor *b, fvi_tensor *out, int relu);
/* Global average of a CNHW tensor: out[s*c + k] (n x c, row-major, the
 * layout fvi_fc_no_bias takes).  Same summation order as dlib's mean(). */
void fvi_avg_pool_everything_cnhw(const fvi_tensor *in, float *out);

/* ---- bf16 convolution (conv_bf16.c) ----
 * Activations are NHWC bfloat16 (the upper half of a float32), channel
 * stride cs (even; a layer's output stride is out_c rounded up to 16, the
 * padding channels zero).  Padding is not computed: a padded layer's input
 * carries its zero border, written by the layer before it (out_pad). */
typedef uint16_t fvi_bf16;

/* Round to nearest even (as the CPU's vcvtneps2bf16), and back (exact). */
fvi_bf16 fvi_to_bf16(float f);
float fvi_from_bf16(fvi_bf16 h);

/* 1 when the CPU and OS run AVX-512 F/BW/VL (cpuid + xgetbv); 0 elsewhere
 * and in builds for other architectures. */
int fvi_cpu_avx512(void);

/* 1 when the CPU and OS run AVX-512 F/BW/VL with BF16 (cpuid + xgetbv),
 * the only machines fvi_conv_bf16_forward may run on; 0 elsewhere and in
 * builds for other architectures. */
int fvi_cpu_bf16(void);

typedef struct fvi_conv_bf16 {
    int out_c, in_c, kh, kw, stride_y, stride_x;
    int in_cs;   /* channel stride of the input (>= in_c, even) */
    int out_cs;  /* of the output: out_c rounded up to 16 (16..48) */
    fvi_bf16 *w; /* [kh*kw][in_cs/2][out_cs][2]: channel pairs interleaved */
    float *bias; /* out_cs, zero past out_c */
} fvi_conv_bf16;

/* Packs cv's float weights (and bias, NULL = zero) for inputs of channel
 * stride in_cs.  Returns 0, or -1 (out of memory, in_cs odd or < in_c, or
 * more than 48 output channels); *out is then empty.  Free with
 * fvi_conv_bf16_free (also on an empty one). */
int fvi_conv_bf16_pack(const fvi_conv *cv, int in_cs, fvi_conv_bf16 *out);
void fvi_conv_bf16_free(fvi_conv_bf16 *cv);

/* Valid convolution of in (NHWC, in_h x in_w including any border, channel
 * stride cv->in_cs) into oh x ow = fvi_pool_out_dim(in, k, stride, 0):
 * bias, then relu when relu != 0.  Output either NHWC bf16 into out,
 * shaped (oh + 2*out_pad) x (ow + 2*out_pad) x cv->out_cs with its zero
 * border written, or, when out_nchw is not NULL, float planes (out_c x oh x
 * ow; out is then unused).  Only when fvi_cpu_bf16().  Results do not
 * depend on the pool size. */
void fvi_conv_bf16_forward(const fvi_conv_bf16 *cv, const fvi_bf16 *in, int in_h, int in_w,
                           int relu, fvi_bf16 *out, int out_pad, float *out_nchw,
                           fvi_workers *pool);

/* NCHW float planes (c x h x w) -> NHWC bf16 of channel stride cs >= c
 * (extra channels zero), no border.  Any CPU. */
void fvi_bf16_from_nchw(const float *in, int c, int h, int w, int cs, fvi_bf16 *out,
                        fvi_workers *pool);

#endif
