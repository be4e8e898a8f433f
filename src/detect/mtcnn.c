/*
 * mtcnn.c: MTCNN face detection (see mtcnn.h), a C port of the numpy
 * pipeline in bench/mtcnn_spike.py.
 *
 * Loading: mtcnn.bin (scripts/mtcnn_convert.py documents the format) is
 * parsed against a fixed table of the 50 tensors of facenet-pytorch's three
 * nets: every tensor must appear once, with the table's shape and finite
 * values; anything else is FV_E_MODEL_CORRUPT.  P-Net's two 1x1 heads
 * (face softmax, box regression) are fused into one 6-channel convolution,
 * and R-/O-Net's dense layers are stored transposed (inputs x outputs, what
 * fvi_fc_no_bias takes) with their two heads fused likewise.
 *
 * Detection, as the spike:
 *  - pyramid: scales 12/min_face x factor^k while the shorter side stays
 *    >= 12 px; each level (ceil(h*s) x ceil(w*s)) is resampled bilinearly
 *    (half-pixel centres, edges clamped, in float, not rounded to 8 bits;
 *    the spike measured OpenCV's INTER_LINEAR with the same recall as
 *    INTER_AREA) and normalised to (x - 127.5) / 128, RGB;
 *  - P-Net (conv3x3 10, PReLU, max-pool 2/2, conv3x3 16, PReLU, conv3x3 32,
 *    PReLU, 1x1 heads) runs over each level in horizontal strips of
 *    PNET_ROWS output rows, so memory is bounded by the level's width; a
 *    strip of input rows [2*y0, 2*y0 + 2*n + 10) gives output rows
 *    y0..y0+n-1 with every pool window inside it, and the last strip runs
 *    to the bottom so that the ceil-mode pool's partial window is as on the
 *    whole level;
 *  - windows with face probability >= thresh[0] become 12/s boxes, NMS 0.5
 *    per level, NMS 0.7 over all levels, regression, squared;
 *  - R-Net on 24x24 crops (zero padded outside the photo, bilinear from the
 *    integer box floor(l), floor(t), ceil(r), ceil(b)), >= thresh[1], NMS
 *    0.7, regression, squared; O-Net on 48x48 crops, >= thresh[2],
 *    regression, NMS 0.7 over the smaller box's area.
 * Max-pools use ceil mode (PyTorch's ceil_mode=True: a last partial window
 * counts), convolutions are valid with stride 1 (im2col + sgemm through
 * nn/, split over the pool).  Boxes are continuous [l, r) coordinates in
 * double, as the spike's float64.  R- and O-Net run in batches of BATCH
 * crops.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "detect/mtcnn.h"
#include "core/fvi.h"
#include "nn/nn.h"

#define PNET_ROWS 64 /* output rows per P-Net strip */
#define BATCH 256    /* crops per R-/O-Net pass */
#define MAX_LEVEL_PX ((size_t)64 * 1024 * 1024)

/* ------------------------------------------------------------ model */

typedef struct spec {
    const char *name;
    int nd;
    int d[4];
} spec;

/* Every tensor of mtcnn.bin with its shape (torch's: conv out x in x kh x
 * kw, dense out x in).  Indexes below (T_...) follow this order. */
static const spec SPECS[] = {
    {"p.conv1.weight", 4, {10, 3, 3, 3}},
    {"p.conv1.bias", 1, {10}},
    {"p.prelu1.weight", 1, {10}},
    {"p.conv2.weight", 4, {16, 10, 3, 3}},
    {"p.conv2.bias", 1, {16}},
    {"p.prelu2.weight", 1, {16}},
    {"p.conv3.weight", 4, {32, 16, 3, 3}},
    {"p.conv3.bias", 1, {32}},
    {"p.prelu3.weight", 1, {32}},
    {"p.conv4_1.weight", 4, {2, 32, 1, 1}},
    {"p.conv4_1.bias", 1, {2}},
    {"p.conv4_2.weight", 4, {4, 32, 1, 1}},
    {"p.conv4_2.bias", 1, {4}},
    {"r.conv1.weight", 4, {28, 3, 3, 3}},
    {"r.conv1.bias", 1, {28}},
    {"r.prelu1.weight", 1, {28}},
    {"r.conv2.weight", 4, {48, 28, 3, 3}},
    {"r.conv2.bias", 1, {48}},
    {"r.prelu2.weight", 1, {48}},
    {"r.conv3.weight", 4, {64, 48, 2, 2}},
    {"r.conv3.bias", 1, {64}},
    {"r.prelu3.weight", 1, {64}},
    {"r.dense4.weight", 2, {128, 576}},
    {"r.dense4.bias", 1, {128}},
    {"r.prelu4.weight", 1, {128}},
    {"r.dense5_1.weight", 2, {2, 128}},
    {"r.dense5_1.bias", 1, {2}},
    {"r.dense5_2.weight", 2, {4, 128}},
    {"r.dense5_2.bias", 1, {4}},
    {"o.conv1.weight", 4, {32, 3, 3, 3}},
    {"o.conv1.bias", 1, {32}},
    {"o.prelu1.weight", 1, {32}},
    {"o.conv2.weight", 4, {64, 32, 3, 3}},
    {"o.conv2.bias", 1, {64}},
    {"o.prelu2.weight", 1, {64}},
    {"o.conv3.weight", 4, {64, 64, 3, 3}},
    {"o.conv3.bias", 1, {64}},
    {"o.prelu3.weight", 1, {64}},
    {"o.conv4.weight", 4, {128, 64, 2, 2}},
    {"o.conv4.bias", 1, {128}},
    {"o.prelu4.weight", 1, {128}},
    {"o.dense5.weight", 2, {256, 1152}},
    {"o.dense5.bias", 1, {256}},
    {"o.prelu5.weight", 1, {256}},
    {"o.dense6_1.weight", 2, {2, 256}},
    {"o.dense6_1.bias", 1, {2}},
    {"o.dense6_2.weight", 2, {4, 256}},
    {"o.dense6_2.bias", 1, {4}},
    {"o.dense6_3.weight", 2, {10, 256}},
    {"o.dense6_3.bias", 1, {10}},
};
#define NSPEC (sizeof SPECS / sizeof *SPECS)

/* Positions in SPECS of each net's first tensor. */
#define T_P 0
#define T_R 13
#define T_O 29

size_t fvi_mtcnn_tensor_count(void) {
    return NSPEC;
}

const char *fvi_mtcnn_tensor(size_t i, int *nd, int dims[4]) {
    if (i >= NSPEC) return NULL;
    *nd = SPECS[i].nd;
    memcpy(dims, SPECS[i].d, sizeof SPECS[i].d);
    return SPECS[i].name;
}

/* A dense layer: w is inputs x outputs (row-major), b outputs. */
typedef struct dense {
    int in, out;
    float *w, *b;
} dense;

/* One conv + optional PReLU + optional max-pool (k x k, stride 2). */
typedef struct layer {
    const fvi_conv *cv;
    const float *alpha; /* NULL: no PReLU */
    int pool;           /* 0: none */
} layer;

struct fvi_mtcnn {
    float *t[NSPEC]; /* the file's tensors, by SPECS index */
    fvi_conv pc[4], rc[3], oc[4];
    float *phead_w, *phead_b; /* P-Net's fused 1x1 heads: 6 x 32, 6 */
    dense rd, rh, od, oh;     /* trunk dense layers and fused heads */
    layer pl[4], rl[3], ol[4];
};

void fvi_mtcnn_destroy(fvi_mtcnn *m) {
    if (!m) return;
    for (size_t i = 0; i < NSPEC; i++) fvi_free(m->t[i]);
    fvi_free(m->phead_w);
    fvi_free(m->phead_b);
    dense *d[] = {&m->rd, &m->rh, &m->od, &m->oh};
    for (size_t i = 0; i < 4; i++) {
        fvi_free(d[i]->w);
        fvi_free(d[i]->b);
    }
    fvi_free(m);
}

static uint32_t rd_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float rd_f32(const unsigned char *p) {
    uint32_t u = rd_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* A conv of the SPECS tensors at w (weight) and w + 1 (bias). */
static void set_conv(fvi_conv *cv, float *const *t, size_t w) {
    const spec *s = &SPECS[w];
    *cv = (fvi_conv){s->d[0], s->d[1], s->d[2], s->d[3], 1, 1, 0, 0, t[w], t[w + 1]};
}

/* Fills d with the transposes of the dense layers at SPECS w1 (and w2 when
 * not 0: a second head appended after the first's outputs).  -1: no memory. */
static int set_dense(dense *d, float *const *t, size_t w1, size_t w2) {
    int o1 = SPECS[w1].d[0], in = SPECS[w1].d[1], o2 = w2 ? SPECS[w2].d[0] : 0;
    d->in = in;
    d->out = o1 + o2;
    d->w = fvi_malloc((size_t)in * (size_t)d->out * sizeof(float));
    d->b = fvi_malloc((size_t)d->out * sizeof(float));
    if (!d->w || !d->b) return -1;
    for (int j = 0; j < d->out; j++) {
        size_t src = j < o1 ? w1 : w2;
        int r = j < o1 ? j : j - o1;
        for (int i = 0; i < in; i++) d->w[(size_t)i * d->out + j] = t[src][(size_t)r * in + i];
        d->b[j] = t[src + 1][r];
    }
    return 0;
}

/* Builds the nets from the parsed tensors.  -1: no memory. */
static int build(fvi_mtcnn *m) {
    float *const *t = m->t;
    for (int i = 0; i < 3; i++) set_conv(&m->pc[i], t, T_P + 3 * (size_t)i);
    m->phead_w = fvi_malloc(6 * 32 * sizeof(float));
    m->phead_b = fvi_malloc(6 * sizeof(float));
    if (!m->phead_w || !m->phead_b) return -1;
    memcpy(m->phead_w, t[T_P + 9], 2 * 32 * sizeof(float));
    memcpy(m->phead_w + 2 * 32, t[T_P + 11], 4 * 32 * sizeof(float));
    memcpy(m->phead_b, t[T_P + 10], 2 * sizeof(float));
    memcpy(m->phead_b + 2, t[T_P + 12], 4 * sizeof(float));
    m->pc[3] = (fvi_conv){6, 32, 1, 1, 1, 1, 0, 0, m->phead_w, m->phead_b};
    for (int i = 0; i < 3; i++) set_conv(&m->rc[i], t, T_R + 3 * (size_t)i);
    for (int i = 0; i < 4; i++) set_conv(&m->oc[i], t, T_O + 3 * (size_t)i);
    if (set_dense(&m->rd, t, T_R + 9, 0) || set_dense(&m->rh, t, T_R + 12, T_R + 14) ||
        set_dense(&m->od, t, T_O + 12, 0) || set_dense(&m->oh, t, T_O + 15, T_O + 17))
        return -1;
    static const int ppool[3] = {2, 0, 0}, rpool[3] = {3, 3, 0}, opool[4] = {3, 3, 2, 0};
    for (int i = 0; i < 3; i++) m->pl[i] = (layer){&m->pc[i], t[T_P + 3 * i + 2], ppool[i]};
    m->pl[3] = (layer){&m->pc[3], NULL, 0};
    for (int i = 0; i < 3; i++) m->rl[i] = (layer){&m->rc[i], t[T_R + 3 * i + 2], rpool[i]};
    for (int i = 0; i < 4; i++) m->ol[i] = (layer){&m->oc[i], t[T_O + 3 * i + 2], opool[i]};
    return 0;
}

fv_status fvi_mtcnn_parse(const void *data, size_t len, fvi_mtcnn **out, char *err, size_t errlen) {
    if (!out) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!data && len) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "data is NULL");
    const unsigned char *p = data, *end = p + len;
    if (len < 16 || memcmp(p, "FVMTCNN\0", 8) != 0)
        return fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "not an mtcnn.bin (bad magic)");
    if (rd_u32(p + 8) != 1)
        return fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "unsupported version %u",
                          (unsigned)rd_u32(p + 8));
    uint32_t count = rd_u32(p + 12);
    if (count != NSPEC)
        return fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%u tensors, expected %u",
                          (unsigned)count, (unsigned)NSPEC);
    p += 16;
    fvi_mtcnn *m = fvi_calloc(1, sizeof *m);
    if (!m) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
    fv_status st = FV_OK;
    for (uint32_t k = 0; k < count && st == FV_OK; k++) {
        if (end - p < 2) {
            st = fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "truncated at tensor %u", (unsigned)k);
            break;
        }
        size_t nl = (size_t)p[0] | (size_t)p[1] << 8;
        p += 2;
        if (nl < 1 || nl > 63 || (size_t)(end - p) < nl + 4) {
            st = fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "bad or truncated name at tensor %u",
                            (unsigned)k);
            break;
        }
        size_t idx = NSPEC;
        for (size_t i = 0; i < NSPEC; i++)
            if (strlen(SPECS[i].name) == nl && memcmp(SPECS[i].name, p, nl) == 0) idx = i;
        if (idx == NSPEC || m->t[idx]) {
            st = fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s tensor '%.*s'",
                            idx == NSPEC ? "unknown" : "repeated", (int)nl, (const char *)p);
            break;
        }
        p += nl;
        const spec *s = &SPECS[idx];
        uint32_t nd = rd_u32(p);
        p += 4;
        if (nd != (uint32_t)s->nd || (size_t)(end - p) < 4 * (size_t)nd) {
            st =
                fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: wrong or truncated dims", s->name);
            break;
        }
        size_t numel = 1;
        for (int i = 0; i < s->nd; i++) {
            if (rd_u32(p + 4 * (size_t)i) != (uint32_t)s->d[i]) {
                st = fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: wrong shape", s->name);
                break;
            }
            numel *= (size_t)s->d[i]; /* table sizes: no overflow */
        }
        if (st != FV_OK) break;
        p += 4 * (size_t)nd;
        if ((size_t)(end - p) / 4 < numel) {
            st = fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: truncated data", s->name);
            break;
        }
        m->t[idx] = fvi_malloc(numel * sizeof(float));
        if (!m->t[idx]) {
            st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
            break;
        }
        for (size_t i = 0; i < numel; i++) {
            float v = rd_f32(p + 4 * i);
            if (!isfinite(v)) {
                st = fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: non-finite value", s->name);
                break;
            }
            m->t[idx][i] = v;
        }
        p += 4 * numel;
    }
    if (st == FV_OK && p != end)
        st = fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%zu trailing bytes", (size_t)(end - p));
    if (st == FV_OK && build(m) != 0) st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
    if (st != FV_OK) {
        fvi_mtcnn_destroy(m);
        return st;
    }
    *out = m;
    return FV_OK;
}

static fv_status parse_cb(const void *data, size_t len, void *out, char *err, size_t errlen) {
    return fvi_mtcnn_parse(data, len, out, err, errlen);
}

fv_status fvi_mtcnn_load(const char *path, fvi_mtcnn **out, char *err, size_t errlen) {
    if (!path || !out) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "path or out NULL");
    *out = NULL;
    return fvi_load_model_file(path, FVI_MTCNN_MAX_FILE_BYTES, "MTCNN model", parse_cb, out, err,
                               errlen);
}

void fvi_mtcnn_params_init(fvi_mtcnn_params *p) {
    p->min_face = 20;
    p->factor = 0.709;
    p->thresh[0] = 0.6;
    p->thresh[1] = 0.7;
    p->thresh[2] = 0.7;
}

/* ------------------------------------------------------------ layers */

/* Ceil-mode pool output size (PyTorch's ceil_mode=True, no padding). */
static int pool_out(int in, int k) {
    return in < k ? 0 : (in - k + 1) / 2 + 1;
}

/* Max-pool k x k, stride 2, ceil mode, over every plane of in (CNHW or
 * NCHW alike): windows cut by the edge take the max of what is inside.
 * (A plain comparison, not fmaxf: no NaN reaches here, and it inlines.) */
static void max_pool_ceil(const fvi_tensor *in, fvi_tensor *out, int k) {
    size_t planes = (size_t)in->n * (size_t)in->c;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *s = in->d + pl * (size_t)in->h * in->w;
        float *d = out->d + pl * (size_t)out->h * out->w;
        for (int y = 0; y < out->h; y++) {
            int y1 = 2 * y + k < in->h ? 2 * y + k : in->h;
            float *row = d + (size_t)y * out->w;
            if (k == 2 && y1 == 2 * y + 2) { /* P-Net's pool: two full rows */
                const float *a = s + (size_t)(2 * y) * in->w, *b = a + in->w;
                int full = in->w / 2; /* windows with both columns inside */
                for (int x = 0; x < full; x++) {
                    float m0 = a[2 * x] > a[2 * x + 1] ? a[2 * x] : a[2 * x + 1];
                    float m1 = b[2 * x] > b[2 * x + 1] ? b[2 * x] : b[2 * x + 1];
                    row[x] = m0 > m1 ? m0 : m1;
                }
                if (full < out->w)
                    row[full] = a[2 * full] > b[2 * full] ? a[2 * full] : b[2 * full];
                continue;
            }
            const float *r0 = s + (size_t)(2 * y) * in->w;
            for (int x = 0; x < out->w; x++) row[x] = r0[2 * x];
            for (int yy = 2 * y; yy < y1; yy++) {
                const float *r = s + (size_t)yy * in->w;
                for (int x = 0; x < out->w; x++) {
                    int x1 = 2 * x + k < in->w ? 2 * x + k : in->w;
                    float m = row[x];
                    for (int xx = 2 * x; xx < x1; xx++) m = r[xx] > m ? r[xx] : m;
                    row[x] = m;
                }
            }
        }
    }
}

/* PReLU in place on a CNHW tensor: channel c's planes are c*n .. c*n+n-1. */
static void prelu_cnhw(fvi_tensor *t, const float *alpha) {
    size_t plane = (size_t)t->h * t->w;
    for (int c = 0; c < t->c; c++) {
        float a = alpha[c];
        float *p = t->d + (size_t)c * t->n * plane;
        /* a select, vectorised under -fno-trapping-math (CMakeLists.txt) */
        for (size_t i = 0; i < (size_t)t->n * plane; i++) p[i] = p[i] < 0 ? p[i] * a : p[i];
    }
}

/* Sizes of a layer stack run on n samples of h x w: the largest activation
 * (floats), the largest conv scratch, and the output's h x w.  -1 when a
 * size does not fit (or the input is too small for the stack). */
static int stack_plan(const layer *L, int nl, int n, int h, int w, int threads, size_t *act,
                      size_t *scr, int *oh, int *ow) {
    *act = *scr = 0;
    for (int i = 0; i < nl; i++) {
        const fvi_conv *cv = L[i].cv;
        size_t s = fvi_conv_cnhw_scratch(cv, n, h, w, threads);
        h = fvi_conv_out_h(cv, h);
        w = fvi_conv_out_w(cv, w);
        if (h < 1 || w < 1) return -1;
        size_t a;
        if (fvi_size_mul((size_t)n * (size_t)cv->out_c, (size_t)h * (size_t)w, &a)) return -1;
        if (a > *act) *act = a;
        if (s > *scr) *scr = s;
        if (L[i].pool) {
            h = pool_out(h, L[i].pool);
            w = pool_out(w, L[i].pool);
            if (h < 1 || w < 1) return -1;
        }
    }
    *oh = h;
    *ow = w;
    return 0;
}

/* Runs a stack on x (CNHW), ping-ponging between A and B (each holding the
 * planned largest activation); *out is the result (in A or B). */
static void stack_run(const layer *L, int nl, const fvi_tensor *x, float *A, float *B, float *scr,
                      fvi_workers *pool, fvi_tensor *out) {
    fvi_tensor cur = *x;
    float *buf[2] = {A, B};
    int b = 0;
    for (int i = 0; i < nl; i++) {
        const fvi_conv *cv = L[i].cv;
        fvi_tensor o = {cur.n, cv->out_c, fvi_conv_out_h(cv, cur.h), fvi_conv_out_w(cv, cur.w),
                        buf[b]};
        fvi_conv_forward_cnhw(cv, &cur, &o, 0, scr, pool);
        if (L[i].alpha) prelu_cnhw(&o, L[i].alpha);
        b ^= 1;
        if (L[i].pool) {
            fvi_tensor q = {o.n, o.c, pool_out(o.h, L[i].pool), pool_out(o.w, L[i].pool), buf[b]};
            max_pool_ceil(&o, &q, L[i].pool);
            b ^= 1;
            o = q;
        }
        cur = o;
    }
    *out = cur;
}

/* Activation and scratch buffers of stack_run, grown to fit each call
 * (a conv's scratch depends on its column count through its tiling plan,
 * so a smaller batch or strip may need more scratch than a larger one). */
typedef struct bufs {
    float *A, *B, *S, *X; /* X: the input (P-Net's strip) */
    size_t act, scr, xcap;
} bufs;

/* Makes b->X hold n floats (kept when it does already).  -1: no memory. */
static int bufs_input(bufs *b, size_t n) {
    if (n <= b->xcap && b->X) return 0;
    fvi_free_aligned(b->X);
    b->X = fvi_malloc_aligned(n * sizeof(float));
    b->xcap = b->X ? n : 0;
    return b->X ? 0 : -1;
}

/* Makes b fit a stack run of n samples of h x w.  FV_E_NO_MEMORY, or
 * FV_E_INTERNAL when the input is too small for the stack (a bug). */
static fv_status bufs_fit(bufs *b, const layer *L, int nl, int n, int h, int w, fvi_workers *pool) {
    size_t act, scr;
    int oh, ow;
    if (stack_plan(L, nl, n, h, w, fvi_workers_size(pool), &act, &scr, &oh, &ow))
        return FV_E_INTERNAL;
    if (act > b->act) {
        fvi_free_aligned(b->A);
        fvi_free_aligned(b->B);
        b->A = fvi_malloc_aligned(act * sizeof(float));
        b->B = fvi_malloc_aligned(act * sizeof(float));
        b->act = b->A && b->B ? act : 0;
        if (!b->act) return FV_E_NO_MEMORY;
    }
    if (scr > b->scr || !b->S) {
        fvi_free_aligned(b->S);
        b->S = fvi_malloc_aligned((scr ? scr : 1) * sizeof(float));
        b->scr = b->S ? scr : 0;
        if (!b->S) return FV_E_NO_MEMORY;
    }
    return FV_OK;
}

static void bufs_free(bufs *b) {
    fvi_free_aligned(b->X);
    fvi_free_aligned(b->A);
    fvi_free_aligned(b->B);
    fvi_free_aligned(b->S);
}

static float face_prob(float a0, float a1) {
    float m = fmaxf(a0, a1), e0 = expf(a0 - m), e1 = expf(a1 - m);
    return e1 / (e0 + e1);
}

/* ------------------------------------------------------------ boxes */

typedef struct cand {
    double b[4]; /* l, t, r, b */
    double score;
    double reg[4];
} cand;

typedef struct cands {
    cand *v;
    size_t n, cap;
} cands;

static int cands_push(cands *c, const cand *x) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256, bytes;
        if (fvi_size_mul(cap, sizeof *c->v, &bytes)) return -1;
        cand *v = fvi_realloc(c->v, bytes);
        if (!v) return -1;
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = *x;
    return 0;
}

/* Greedy NMS over c (highest score first; a box is dropped when its overlap
 * with a kept one, over the union or with by_min over the smaller area,
 * exceeds thr).  Keeps the survivors in c, in that order.  -1: no memory. */
static int nms(cands *c, double thr, int by_min) {
    size_t n = c->n;
    if (n == 0) return 0;
    size_t *ord = fvi_malloc(n * sizeof *ord);
    unsigned char *gone = fvi_calloc(n, 1);
    cand *kept = fvi_malloc(n * sizeof *kept);
    if (!ord || !gone || !kept) {
        fvi_free(ord);
        fvi_free(gone);
        fvi_free(kept);
        return -1;
    }
    for (size_t i = 0; i < n; i++) ord[i] = i;
    {
        /* stable merge sort of ord by score (descending), thread-safe */
        size_t *tmp = fvi_malloc(n * sizeof *tmp);
        if (!tmp) {
            fvi_free(ord);
            fvi_free(gone);
            fvi_free(kept);
            return -1;
        }
        for (size_t width = 1; width < n; width *= 2) {
            for (size_t lo = 0; lo < n; lo += 2 * width) {
                size_t mid = lo + width < n ? lo + width : n;
                size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
                size_t i = lo, j = mid, k = lo;
                while (i < mid && j < hi)
                    tmp[k++] = c->v[ord[j]].score > c->v[ord[i]].score ? ord[j++] : ord[i++];
                while (i < mid) tmp[k++] = ord[i++];
                while (j < hi) tmp[k++] = ord[j++];
            }
            memcpy(ord, tmp, n * sizeof *ord);
        }
        fvi_free(tmp);
    }
    size_t nk = 0;
    for (size_t a = 0; a < n; a++) {
        if (gone[a]) continue;
        const cand *p = &c->v[ord[a]];
        kept[nk++] = *p;
        double pa = fmax(p->b[2] - p->b[0], 0) * fmax(p->b[3] - p->b[1], 0);
        for (size_t q = a + 1; q < n; q++) {
            if (gone[q]) continue;
            const cand *o = &c->v[ord[q]];
            double iw = fmax(0, fmin(p->b[2], o->b[2]) - fmax(p->b[0], o->b[0]));
            double ih = fmax(0, fmin(p->b[3], o->b[3]) - fmax(p->b[1], o->b[1]));
            double inter = iw * ih;
            double oa = fmax(o->b[2] - o->b[0], 0) * fmax(o->b[3] - o->b[1], 0);
            double den = by_min ? fmin(pa, oa) : pa + oa - inter;
            if (inter / fmax(den, 1e-9) > thr) gone[q] = 1;
        }
    }
    memcpy(c->v, kept, nk * sizeof *kept);
    c->n = nk;
    fvi_free(ord);
    fvi_free(gone);
    fvi_free(kept);
    return 0;
}

/* Box regression (offsets in units of the box's width/height), then, when
 * sq, the square of side max(w, h) around the centre. */
static void regress(cand *c, int sq) {
    double w = c->b[2] - c->b[0], h = c->b[3] - c->b[1];
    double b[4] = {c->b[0] + c->reg[0] * w, c->b[1] + c->reg[1] * h, c->b[2] + c->reg[2] * w,
                   c->b[3] + c->reg[3] * h};
    if (sq) {
        double bw = b[2] - b[0], bh = b[3] - b[1], side = fmax(bw, bh);
        double cx = b[0] + bw / 2, cy = b[1] + bh / 2;
        b[0] = cx - side / 2;
        b[1] = cy - side / 2;
        b[2] = cx + side / 2;
        b[3] = cy + side / 2;
    }
    memcpy(c->b, b, sizeof b);
}

/* ------------------------------------------------------------ resampling */

/* Source position and weight of destination index i for a bilinear resize
 * of sn -> dn samples (half-pixel centres, clamped at the edges). */
static void lin_coord(int i, int sn, int dn, int *i0, int *i1, float *a) {
    double f = (i + 0.5) * ((double)sn / dn) - 0.5;
    if (f < 0) f = 0;
    int k = (int)f;
    if (k >= sn - 1) {
        *i0 = *i1 = sn - 1;
        *a = 0;
        return;
    }
    *i0 = k;
    *i1 = k + 1;
    *a = (float)(f - k);
}

/* Bilinear resample of the region [x0, x0+sw) x [y0, y0+sh) of img (pixels
 * outside the image read as 0) to dw x dh, normalised ((v - 127.5) / 128)
 * into planes dst[c][y][x] with plane stride ps and row stride dw.  The
 * column positions are computed once (xc: 2*dw ints, xa: dw floats,
 * scratch of the caller). */
static void resample(const fv_image *img, long x0, long y0, int sw, int sh, int dw, int dh,
                     float *dst, size_t ps, int *xc, float *xa) {
    int inside = 1;
    for (int x = 0; x < dw; x++) {
        lin_coord(x, sw, dw, &xc[2 * x], &xc[2 * x + 1], &xa[x]);
        for (int j = 0; j < 2; j++) {
            long rx = x0 + xc[2 * x + j];
            inside &= rx >= 0 && rx < img->width;
        }
    }
    for (int y = 0; y < dh; y++) {
        int ya, yb;
        float ay;
        lin_coord(y, sh, dh, &ya, &yb, &ay);
        long ry[2] = {y0 + ya, y0 + yb};
        const unsigned char *row[2];
        for (int i = 0; i < 2; i++)
            row[i] = ry[i] >= 0 && ry[i] < img->height
                         ? img->rgb + (size_t)ry[i] * (size_t)img->width * 3
                         : NULL;
        for (int x = 0; x < dw; x++) {
            long rx[2] = {x0 + xc[2 * x], x0 + xc[2 * x + 1]};
            float ax = xa[x], v[2][2][3];
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++) {
                    const unsigned char *px =
                        row[i] && (inside || (rx[j] >= 0 && rx[j] < img->width))
                            ? row[i] + (size_t)rx[j] * 3
                            : NULL;
                    for (int c = 0; c < 3; c++) v[i][j][c] = px ? px[c] : 0.0f;
                }
            for (int c = 0; c < 3; c++) {
                float top = v[0][0][c] + (v[0][1][c] - v[0][0][c]) * ax;
                float bot = v[1][0][c] + (v[1][1][c] - v[1][0][c]) * ax;
                float r = top + (bot - top) * ay;
                dst[c * ps + (size_t)y * dw + x] = (r - 127.5f) * 0.0078125f;
            }
        }
    }
}

/* ------------------------------------------------------------ stages */

/* P-Net over one pyramid level (planes lv: 3 x h x w), appending windows of
 * face probability >= thr as boxes in image pixels (scale s) with their
 * regression to out.  bf: buffers kept from level to level (the first,
 * largest level sizes them). */
static fv_status pnet_level(const fvi_mtcnn *m, const float *lv, int h, int w, double s, float thr,
                            fvi_workers *pool, bufs *bf, cands *out) {
    int hout = pool_out(h - 2, 2) - 4, wout = pool_out(w - 2, 2) - 4;
    if (h < 12 || w < 12 || hout < 1 || wout < 1) return FV_OK;
    int rows_in = 2 * PNET_ROWS + 11; /* the last strip may take one more row */
    size_t in_sz;
    if (fvi_size_mul(3 * (size_t)w, (size_t)(rows_in < h ? rows_in : h), &in_sz))
        return FV_E_NO_MEMORY;
    if (bufs_input(bf, in_sz)) return FV_E_NO_MEMORY;
    float *X = bf->X;
    fv_status st = FV_OK;
    for (int y0 = 0; st == FV_OK && y0 < hout; y0 += PNET_ROWS) {
        int n = hout - y0 < PNET_ROWS ? hout - y0 : PNET_ROWS;
        int end = y0 + n >= hout ? h : 2 * y0 + 2 * n + 10;
        int rows = end - 2 * y0;
        FVI_ASSERT(rows <= rows_in && rows <= h);
        st = bufs_fit(bf, m->pl, 4, 1, rows, w, pool);
        if (st != FV_OK) break;
        for (int c = 0; c < 3; c++)
            memcpy(X + (size_t)c * rows * w, lv + ((size_t)c * h + 2 * (size_t)y0) * w,
                   (size_t)rows * w * sizeof(float));
        fvi_tensor x = {1, 3, rows, w, X}, o;
        stack_run(m->pl, 4, &x, bf->A, bf->B, bf->S, pool, &o);
        size_t plane = (size_t)o.h * o.w;
        for (int yy = 0; yy < n; yy++)
            for (int xx = 0; xx < o.w; xx++) {
                size_t k = (size_t)yy * o.w + xx;
                float pr = face_prob(o.d[k], o.d[plane + k]);
                if (!(pr >= thr)) continue;
                int gy = y0 + yy;
                cand c = {{2.0 * xx / s, 2.0 * gy / s, (2.0 * xx + 12) / s, (2.0 * gy + 12) / s},
                          pr,
                          {o.d[2 * plane + k], o.d[3 * plane + k], o.d[4 * plane + k],
                           o.d[5 * plane + k]}};
                if (cands_push(out, &c)) st = FV_E_NO_MEMORY;
            }
    }
    return st;
}

/* Runs R-Net (side 24) or O-Net (side 48) on crops of the boxes in c and
 * sets each one's score (face probability) and regression. */
static fv_status refine(const fvi_mtcnn *m, const fv_image *img, int onet, cands *c,
                        fvi_workers *pool) {
    const layer *L = onet ? m->ol : m->rl;
    int nl = onet ? 4 : 3, side = onet ? 48 : 24;
    const dense *d1 = onet ? &m->od : &m->rd, *d2 = onet ? &m->oh : &m->rh;
    const float *a1 = m->t[onet ? T_O + 14 : T_R + 11]; /* prelu5 / prelu4 */
    bufs bf = {0};
    float *X = bufs_input(&bf, (size_t)BATCH * 3 * side * side) ? NULL : bf.X;
    float *F = fvi_malloc((size_t)BATCH * d1->in * sizeof(float));
    float *H = fvi_malloc((size_t)BATCH * d1->out * sizeof(float));
    float *Y = fvi_malloc((size_t)BATCH * d2->out * sizeof(float));
    fv_status st = X && F && H && Y ? FV_OK : FV_E_NO_MEMORY;
    for (size_t b0 = 0; st == FV_OK && b0 < c->n; b0 += BATCH) {
        int n = c->n - b0 < BATCH ? (int)(c->n - b0) : BATCH;
        st = bufs_fit(&bf, L, nl, n, side, side, pool);
        if (st != FV_OK) break;
        size_t ps = (size_t)n * side * side; /* CNHW: channel plane of the batch */
        memset(X, 0, (size_t)n * 3 * side * side * sizeof(float));
        for (int s = 0; s < n; s++) {
            const double *bx = c->v[b0 + s].b;
            int ok = 1;
            for (int i = 0; i < 4; i++) ok &= isfinite(bx[i]) && fabs(bx[i]) < 1e8;
            if (!ok) continue;
            long l = (long)floor(bx[0]), t = (long)floor(bx[1]);
            long r = (long)ceil(bx[2]), bt = (long)ceil(bx[3]);
            if (r - l < 2 || bt - t < 2) continue;
            if (fmin(r, img->width) <= fmax(l, 0) || fmin(bt, img->height) <= fmax(t, 0)) continue;
            if (r - l > INT32_MAX / 4 || bt - t > INT32_MAX / 4) continue;
            int xc[2 * 48];
            float xa[48];
            resample(img, l, t, (int)(r - l), (int)(bt - t), side, side,
                     X + (size_t)s * side * side, ps, xc, xa);
        }
        fvi_tensor x = {n, 3, side, side, X}, o;
        stack_run(L, nl, &x, bf.A, bf.B, bf.S, pool, &o);
        FVI_ASSERT((size_t)o.h * o.w * o.c == (size_t)d1->in);
        /* flatten each sample in (W, H, C) order, the dense weights' */
        for (int s = 0; s < n; s++)
            for (int xx = 0; xx < o.w; xx++)
                for (int yy = 0; yy < o.h; yy++)
                    for (int ch = 0; ch < o.c; ch++)
                        F[(size_t)s * d1->in + ((size_t)xx * o.h + yy) * o.c + ch] =
                            o.d[(((size_t)ch * n + s) * o.h + yy) * o.w + xx];
        fvi_tensor fi = {n, d1->in, 1, 1, F}, fo = {n, d1->out, 1, 1, H};
        fvi_fc_no_bias(&fi, d1->w, d1->out, &fo);
        for (int s = 0; s < n; s++)
            for (int j = 0; j < d1->out; j++) {
                float v = H[(size_t)s * d1->out + j] + d1->b[j];
                H[(size_t)s * d1->out + j] = v < 0 ? v * a1[j] : v;
            }
        fvi_tensor gi = {n, d1->out, 1, 1, H}, go = {n, d2->out, 1, 1, Y};
        fvi_fc_no_bias(&gi, d2->w, d2->out, &go);
        for (int s = 0; s < n; s++) {
            const float *y = Y + (size_t)s * d2->out;
            cand *cd = &c->v[b0 + s];
            cd->score = face_prob(y[0] + d2->b[0], y[1] + d2->b[1]);
            for (int i = 0; i < 4; i++) cd->reg[i] = y[2 + i] + d2->b[2 + i];
        }
    }
    bufs_free(&bf);
    fvi_free(F);
    fvi_free(H);
    fvi_free(Y);
    return st;
}

/* Keeps the candidates scoring >= thr (as float, the spike's float32). */
static void keep_above(cands *c, double thr) {
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].score >= (float)thr) c->v[k++] = c->v[i];
    c->n = k;
}

/* The pyramid and P-Net: all levels' candidates after the per-level and
 * the global NMS, regressed and squared, into *all. */
static fv_status pnet_stage(const fvi_mtcnn *m, const fv_image *img, const fvi_mtcnn_params *p,
                            fvi_workers *pool, cands *all) {
    double s = 12.0 / p->min_face, minl = fmin(img->width, img->height) * s;
    fv_status st = FV_OK;
    cands lvc = {0};
    float *lv = NULL;
    int *xc = NULL; /* resample's column table */
    bufs bf = {0};
    float *xa = NULL;
    while (st == FV_OK && minl >= 12) {
        int hs = (int)ceil(img->height * s), ws = (int)ceil(img->width * s);
        size_t px;
        if (fvi_size_mul((size_t)hs, (size_t)ws, &px) || px > MAX_LEVEL_PX) {
            st = FV_E_IMAGE_TOO_LARGE;
            break;
        }
        if (!lv) { /* the first level is the largest: its buffers serve all */
            lv = fvi_malloc(3 * px * sizeof(float));
            xc = fvi_malloc((size_t)ws * 2 * sizeof(int));
            xa = fvi_malloc((size_t)ws * sizeof(float));
            if (!lv || !xc || !xa) {
                st = FV_E_NO_MEMORY;
                break;
            }
        }
        resample(img, 0, 0, img->width, img->height, ws, hs, lv, px, xc, xa);
        lvc.n = 0;
        st = pnet_level(m, lv, hs, ws, s, (float)p->thresh[0], pool, &bf, &lvc);
        if (st == FV_OK && nms(&lvc, 0.5, 0)) st = FV_E_NO_MEMORY;
        for (size_t i = 0; st == FV_OK && i < lvc.n; i++)
            if (cands_push(all, &lvc.v[i])) st = FV_E_NO_MEMORY;
        s *= p->factor;
        minl *= p->factor;
    }
    fvi_free(lv);
    fvi_free(xc);
    fvi_free(xa);
    bufs_free(&bf);
    fvi_free(lvc.v);
    if (st == FV_OK && nms(all, 0.7, 0)) st = FV_E_NO_MEMORY;
    for (size_t i = 0; st == FV_OK && i < all->n; i++) regress(&all->v[i], 1);
    return st;
}

fv_status fvi_mtcnn_detect(const fvi_mtcnn *m, const fv_image *img, const fvi_mtcnn_params *p,
                           fvi_workers *pool, fv_face **faces, size_t *n, char *err,
                           size_t errlen) {
    if (!faces || !n) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "faces or n NULL");
    *faces = NULL;
    *n = 0;
    if (!m || !img || !img->rgb || img->width < 1 || img->height < 1 || !p)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "bad MTCNN arguments");
    if (p->min_face < 12 || !(p->factor >= 0.1 && p->factor <= 0.95))
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT,
                          "MTCNN min_face must be >= 12, factor 0.1..0.95");
    cands c = {0};
    fv_status st = pnet_stage(m, img, p, pool, &c);
    if (st == FV_OK) st = refine(m, img, 0, &c, pool);
    if (st == FV_OK) {
        keep_above(&c, p->thresh[1]);
        if (nms(&c, 0.7, 0)) st = FV_E_NO_MEMORY;
    }
    for (size_t i = 0; st == FV_OK && i < c.n; i++) regress(&c.v[i], 1);
    if (st == FV_OK) st = refine(m, img, 1, &c, pool);
    if (st == FV_OK) {
        keep_above(&c, p->thresh[2]);
        for (size_t i = 0; i < c.n; i++) regress(&c.v[i], 0);
        if (nms(&c, 0.7, 1)) st = FV_E_NO_MEMORY;
    }
    if (st == FV_OK && c.n) {
        *faces = fvi_calloc(c.n, sizeof **faces);
        if (!*faces) st = FV_E_NO_MEMORY;
        for (size_t i = 0; st == FV_OK && i < c.n; i++) {
            fv_face *f = &(*faces)[i];
            f->left = (float)c.v[i].b[0];
            f->top = (float)c.v[i].b[1];
            f->right = (float)c.v[i].b[2];
            f->bottom = (float)c.v[i].b[3];
            f->score = (float)c.v[i].score;
        }
        if (st == FV_OK) *n = c.n;
    }
    fvi_free(c.v);
    if (st != FV_OK)
        return fvi_seterr(err, errlen, st, "MTCNN detection failed (%s)", fv_strerror(st));
    return FV_OK;
}

void fvi_mtcnn_box_to_dlib(fv_face *f) {
    double w = f->right - f->left, h = f->bottom - f->top;
    double side = sqrt(fmax(w, 0) * fmax(h, 0)) / 1.082;
    double cx = (f->left + f->right) / 2.0 - 0.02 * side;
    double cy = (f->top + f->bottom) / 2.0 - 0.015 * side;
    f->left = (float)(cx - side / 2);
    f->right = (float)(cx + side / 2);
    f->top = (float)(cy - side / 2);
    f->bottom = (float)(cy + side / 2);
}
