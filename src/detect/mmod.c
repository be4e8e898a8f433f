/*
 * mmod.c: runs the MMOD face detector the way dlib's python
 * cnn_face_detection_model_v1(img, upsample) does.
 *
 * An image flows:
 *  1. pyramid_up `upsample` times (dlib's pyramid_up with pyramid_down<2>:
 *     an (2h+1) x (2w+2) bilinear resize of the RGB8 image);
 *  2. the tiled pyramid: the image and its pyramid_down<6> levels (each 5/6
 *     of the previous, down to 5 rows) packed into one zero-padded float
 *     image, channels (v - mean)/256, each level a bilinear resize of the
 *     previous level (dlib's input_rgb_image_pyramid::to_tensor);
 *  3. seven convolutions (affine folded in at load time) with relu between,
 *     by nn.h's fvi_conv_forward_cnhw (for one sample CNHW is NCHW);
 *  4. every output pixel scoring > 0 is a detection: its position maps back
 *     through the strides and paddings to the tiled image, a window of the
 *     detector's size centred there maps back to the level it falls in, and
 *     to image pixels;
 *  5. greedy non-max suppression by score with dlib's test_box_overlap, then
 *     rect_down through the upsampling.
 * dlib rounds boxes to integer rectangles at the same two points we do
 * (after step 4 and after step 5), so boxes match it exactly when the
 * scores do.  The bilinear resizes copy dlib's arithmetic (its SIMD
 * path's float accumulation of x), so the pyramid matches bit for bit.
 *
 * Memory: the tiled pyramid and the activations live in one arena sized by
 * a measure pass, with ping-pong buffers (the input tensor and every other
 * activation share one buffer); the whole call is refused above
 * FVI_MMOD_MAX_CALL_BYTES before anything is allocated.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/fvi.h"
#include "detect/mmod_model.h"

/* Largest side we accept at any step (after upsampling). */
#define MMOD_MAX_SIDE 65536L
/* pyramid_down<6> levels: 5/6 per level down to 5 rows is < 60 levels for
 * MMOD_MAX_SIDE. */
#define MMOD_MAX_LEVELS 128
#define MMOD_MIN_LEVEL_HEIGHT 5

/* dlib's rectangle: inclusive integer bounds. */
typedef struct {
    long l, t, r, b;
} irect;

/* dlib's drectangle. */
typedef struct {
    double l, t, r, b;
} drect;

static long rect_w(const irect *a) {
    return a->r - a->l + 1;
}
static long rect_h(const irect *a) {
    return a->b - a->t + 1;
}

static double rect_area(const irect *a) {
    if (a->r < a->l || a->b < a->t) return 0;
    return (double)rect_w(a) * (double)rect_h(a);
}

static irect rect_intersect(const irect *a, const irect *b) {
    irect o = {a->l > b->l ? a->l : b->l, a->t > b->t ? a->t : b->t, a->r < b->r ? a->r : b->r,
               a->b < b->b ? a->b : b->b};
    return o;
}

/* dlib's drectangle -> rectangle conversion.  dlib 19.24's headers round
 * half up (floor(x + 0.5)); dlib 20 (the python oracle we match) rounds
 * half away from zero, which differs only for negative x.5 -- boxes that
 * stick out of the top or left edge, common since level-0 windows have
 * half-pixel edges.  We follow dlib 20. */
static long dround(double v) {
    return (long)round(v);
}

static irect drect_round(const drect *d) {
    irect o = {dround(d->l), dround(d->t), dround(d->r), dround(d->b)};
    return o;
}

/* ------------------------------------------------------------ pyramid */

typedef struct {
    irect rects[MMOD_MAX_LEVELS]; /* level i's place in the tiled image */
    int nrects;
    long nr, nc; /* tiled image size */
} tiled_layout;

/* dlib's impl::compute_tiled_image_pyramid_details for pyramid_down<6>:
 * level sizes floor(5/6 * previous) down to MMOD_MIN_LEVEL_HEIGHT rows,
 * the first column stacked top-down, the rest bottom-up along the right
 * edge while they do not hit the first level. */
static void tiled_pyramid_layout(long nr, long nc, long padding, long outer, int max_levels,
                                 tiled_layout *L) {
    L->nrects = 0;
    L->nr = L->nc = 0;
    if (nr <= 0 || nc <= 0) return;
    irect *R = L->rects;
    int n = 0;
    R[n++] = (irect){0, 0, nc - 1, nr - 1};
    const double rate = (6 - 1.0) / 6;
    for (;;) {
        nr = (long)floor(rate * (double)nr);
        nc = (long)floor(rate * (double)nc);
        if (nr * nc == 0 || nr < MMOD_MIN_LEVEL_HEIGHT || n == MMOD_MAX_LEVELS ||
            (max_levels > 0 && n == max_levels))
            break;
        R[n++] = (irect){0, 0, nc - 1, nr - 1};
    }
    long total_height = 0;
    for (int i = 0; i < n; i++) total_height += rect_h(&R[i]) + padding;
    total_height -= padding * 2;
    long height = 0, prev_width = 0;
    for (int i = 0; i < n; i++) {
        if (rect_w(&R[i]) <= rect_w(&R[0]) - prev_width - padding &&
            (height - rect_h(&R[0])) * 2 >= (total_height - rect_h(&R[0])))
            break;
        height += rect_h(&R[i]) + padding;
        prev_width = rect_w(&R[i]);
    }
    height -= padding;
    const long width = rect_w(&R[0]);
    L->nr = height + outer * 2;
    L->nc = width + outer * 2;

    long y = outer;
    int i = 0;
    while (y < height + outer && i < n) {
        long h = rect_h(&R[i]), w = rect_w(&R[i]);
        R[i] = (irect){outer, y, outer + w - 1, y + h - 1};
        y += h + padding;
        i++;
    }
    y -= padding;
    while (i < n) {
        long h = rect_h(&R[i]), w = rect_w(&R[i]);
        irect r = {outer + width - w, y - h, outer + width - 1, y - 1};
        irect x = rect_intersect(&R[0], &r);
        if (rect_area(&x) > 0) break;
        R[i] = r;
        y -= h + padding;
        i++;
    }
    L->nrects = i;
}

/* dlib's bilinear resize_image of one float plane (the grayscale SIMD
 * path): x advances by float steps of 4*x_scale in blocks of four, the
 * leftover columns in double. */
static void resize_plane(const float *src, long sstride, long snr, long snc, float *dst,
                         long dstride, long dnr, long dnc) {
    if (snr <= 0 || snc <= 0 || dnr <= 0 || dnc <= 0) return;
    const double xs = (double)(snc - 1) / (double)(dnc - 1 > 1 ? dnc - 1 : 1);
    const double ys = (double)(snr - 1) / (double)(dnr - 1 > 1 ? dnr - 1 : 1);
    double y = -ys;
    for (long r = 0; r < dnr; r++) {
        y += ys;
        long top = (long)floor(y);
        if (top > snr - 1) top = snr - 1;
        if (top < 0) top = 0;
        const long bottom = top + 1 < snr - 1 ? top + 1 : snr - 1;
        const double tb = y - (double)top;
        const float ftb = (float)tb, finv_tb = (float)(1 - tb);
        const float *rt = src + top * sstride, *rb = src + bottom * sstride;
        float *out = dst + r * dstride;
        double x = -4 * xs;
        float fx[4] = {(float)x, (float)(x + xs), (float)(x + 2 * xs), (float)(x + 3 * xs)};
        const float fxs4 = (float)(4 * xs);
        long c = 0;
        for (;; c += 4) {
            int32_t left[4];
            float lr[4];
            for (int k = 0; k < 4; k++) {
                fx[k] += fxs4;
                left[k] = (int32_t)fx[k];
                lr[k] = fx[k] - (float)left[k];
            }
            if (left[3] + 1 >= snc || c + 4 > dnc || left[0] < 0) break;
            for (int k = 0; k < 4; k++) {
                const float inv = 1 - lr[k];
                const float tlf = finv_tb * inv, trf = finv_tb * lr[k];
                const float blf = ftb * inv, brf = ftb * lr[k];
                const long a = left[k];
                out[c + k] = tlf * rt[a] + trf * rt[a + 1] + blf * rb[a] + brf * rb[a + 1];
            }
        }
        x = -xs + (double)c * xs;
        for (; c < dnc; c++) {
            x += xs;
            long left = (long)floor(x);
            if (left > snc - 1) left = snc - 1;
            if (left < 0) left = 0;
            const long right = left + 1 < snc - 1 ? left + 1 : snc - 1;
            const float lr = (float)(x - (double)left);
            const float tl = rt[left], tr = rt[right], bl = rb[left], br = rb[right];
            out[c] = (float)((1 - tb) * (double)((1 - lr) * tl + lr * tr) +
                             tb * (double)((1 - lr) * bl + lr * br));
        }
    }
}

/* dlib's bilinear resize_image for RGB8 -> RGB8 (its SIMD rgb path):
 * weights as in resize_plane, results truncated toward zero. */
static void resize_rgb(const unsigned char *src, long snr, long snc, unsigned char *dst, long dnr,
                       long dnc) {
    const double xs = (double)(snc - 1) / (double)(dnc - 1 > 1 ? dnc - 1 : 1);
    const double ys = (double)(snr - 1) / (double)(dnr - 1 > 1 ? dnr - 1 : 1);
    double y = -ys;
    for (long r = 0; r < dnr; r++) {
        y += ys;
        long top = (long)floor(y);
        if (top > snr - 1) top = snr - 1;
        if (top < 0) top = 0;
        const long bottom = top + 1 < snr - 1 ? top + 1 : snr - 1;
        const double tb = y - (double)top;
        const float ftb = (float)tb, finv_tb = (float)(1 - tb);
        const unsigned char *rt = src + (size_t)top * snc * 3, *rb = src + (size_t)bottom * snc * 3;
        unsigned char *out = dst + (size_t)r * dnc * 3;
        double x = -4 * xs;
        float fx[4] = {(float)x, (float)(x + xs), (float)(x + 2 * xs), (float)(x + 3 * xs)};
        const float fxs4 = (float)(4 * xs);
        long c = 0;
        for (;; c += 4) {
            int32_t left[4];
            float lr[4];
            for (int k = 0; k < 4; k++) {
                fx[k] += fxs4;
                left[k] = (int32_t)fx[k];
                lr[k] = fx[k] - (float)left[k];
            }
            if (left[3] + 1 >= snc || c + 4 > dnc || left[0] < 0) break;
            for (int k = 0; k < 4; k++) {
                const float inv = 1 - lr[k];
                const float tlf = finv_tb * inv, trf = finv_tb * lr[k];
                const float blf = ftb * inv, brf = ftb * lr[k];
                const size_t a = (size_t)left[k] * 3, a1 = a + 3;
                for (int ch = 0; ch < 3; ch++) {
                    float v = tlf * (float)rt[a + ch] + trf * (float)rt[a1 + ch] +
                              blf * (float)rb[a + ch] + brf * (float)rb[a1 + ch];
                    out[(size_t)(c + k) * 3 + ch] = (unsigned char)(int32_t)v;
                }
            }
        }
        x = -xs + (double)c * xs;
        for (; c < dnc; c++) {
            x += xs;
            long left = (long)floor(x);
            if (left > snc - 1) left = snc - 1;
            if (left < 0) left = 0;
            const long right = left + 1 < snc - 1 ? left + 1 : snc - 1;
            const double lr = x - (double)left;
            for (int ch = 0; ch < 3; ch++) {
                double tl = rt[left * 3 + ch], tr = rt[right * 3 + ch];
                double bl = rb[left * 3 + ch], br = rb[right * 3 + ch];
                double v = (1 - tb) * ((1 - lr) * tl + lr * tr) + tb * ((1 - lr) * bl + lr * br);
                out[(size_t)c * 3 + ch] = (unsigned char)v;
            }
        }
    }
}

/* Size after one dlib pyramid_up (pyramid_down<2>::rect_up of the image
 * rectangle, rounded): rows 2h+1, columns 2w+2. */
static void upsampled_size(long h, long w, long *oh, long *ow) {
    *oh = dround((h - 1 + 0.75) * 2) + 1;
    *ow = dround((w - 1 + 1.25) * 2) + 1;
}

typedef struct {
    const fvi_mmod *m;
    const unsigned char *rgb;
    long h, w;
    const tiled_layout *L;
    float *t; /* 3 x nr x nc */
} pyramid_job;

/* Builds one channel of the tiled pyramid (levels depend on each other, so
 * channels are the unit of parallel work). */
static void pyramid_task(void *ctx, int begin, int end, int worker) {
    (void)worker;
    const pyramid_job *j = ctx;
    const tiled_layout *L = j->L;
    const size_t plane = (size_t)L->nr * (size_t)L->nc;
    for (int ch = begin; ch < end; ch++) {
        float *p = j->t + (size_t)ch * plane;
        const float avg = j->m->avg[ch];
        const irect *r0 = &L->rects[0];
        for (long y = 0; y < j->h; y++) {
            float *row = p + (size_t)(r0->t + y) * L->nc + r0->l;
            const unsigned char *src = j->rgb + (size_t)y * j->w * 3 + ch;
            for (long x = 0; x < j->w; x++) row[x] = (float)(((float)src[x * 3] - avg) / 256.0);
        }
        for (int i = 1; i < L->nrects; i++) {
            const irect *a = &L->rects[i - 1], *b = &L->rects[i];
            resize_plane(p + (size_t)a->t * L->nc + a->l, L->nc, rect_h(a), rect_w(a),
                         p + (size_t)b->t * L->nc + b->l, L->nc, rect_h(b), rect_w(b));
        }
    }
}

/* ------------------------------------------------------------ detections */

typedef struct {
    irect rect;
    double score;
    size_t order; /* scan order, to break score ties deterministically */
} mmod_det;

static int det_cmp(const void *pa, const void *pb) {
    const mmod_det *a = pa, *b = pb;
    if (a->score > b->score) return -1;
    if (a->score < b->score) return 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* dlib's test_box_overlap (the "union" is the bounding box of the two). */
static int boxes_overlap(const fvi_mmod *m, const irect *a, const irect *b) {
    irect in = rect_intersect(a, b);
    const double inner = rect_area(&in);
    if (inner == 0) return 0;
    irect u = {a->l < b->l ? a->l : b->l, a->t < b->t ? a->t : b->t, a->r > b->r ? a->r : b->r,
               a->b > b->b ? a->b : b->b};
    const double outer = rect_area(&u);
    return inner / outer > m->nms_iou || inner / rect_area(a) > m->nms_cover ||
           inner / rect_area(b) > m->nms_cover;
}

/* dlib's nearest_rect: the first level containing p, else the closest. */
static int nearest_level(const tiled_layout *L, long px, long py) {
    int best = 0;
    double best_d = INFINITY;
    for (int i = 0; i < L->nrects; i++) {
        const irect *r = &L->rects[i];
        if (r->l <= px && px <= r->r && r->t <= py && py <= r->b) return i;
        double nx = px < r->l ? (double)r->l : px > r->r ? (double)r->r : (double)px;
        double ny = py < r->t ? (double)r->t : py > r->b ? (double)r->b : (double)py;
        double d =
            sqrt((nx - (double)px) * (nx - (double)px) + (ny - (double)py) * (ny - (double)py));
        if (d < best_d) {
            best_d = d;
            best = i;
        }
    }
    return best;
}

/* Output pixel (c, r) -> detection rectangle in the (upsampled) image:
 * dlib's output_tensor_to_input_tensor, centered_drect and
 * tiled_pyramid_to_image, rounded as intermediate_detection does. */
static irect output_to_image(const fvi_mmod *m, const tiled_layout *L, long c, long r) {
    double px = (double)c, py = (double)r;
    for (int i = MMOD_NCONV - 1; i >= 0; i--) {
        const fvi_conv *cv = &m->conv[i];
        px = px * cv->stride_x - cv->pad_x + cv->kw / 2;
        py = py * cv->stride_y - cv->pad_y + cv->kh / 2;
    }
    const double hw = (double)(m->win_w - 1) / 2, hh = (double)(m->win_h - 1) / 2;
    drect d = {px - hw, py - hh, px + hw, py + hh};
    int lvl = nearest_level(L, dround((d.l + d.r) / 2), dround((d.t + d.b) / 2));
    const irect *o = &L->rects[lvl];
    d.l -= (double)o->l;
    d.r -= (double)o->l;
    d.t -= (double)o->t;
    d.b -= (double)o->t;
    const double ratio = 6 / (6 - 1.0);
    for (int i = 0; i < lvl; i++) {
        d.l = d.l * ratio + 0.3;
        d.t = d.t * ratio + 0.3;
        d.r = d.r * ratio + 0.3;
        d.b = d.b * ratio + 0.3;
    }
    return drect_round(&d);
}

/* ------------------------------------------------------------ forward */

typedef struct {
    long in_h, in_w; /* image after upsampling */
    tiled_layout L;
    int oh[MMOD_NCONV + 1], ow[MMOD_NCONV + 1]; /* [0]: tiled image */
    int runnable;                               /* 0: too small for the network, no faces */
} plan;

/* Works out every size of a call.  Returns 0, or -1 when a size does not
 * fit an int (the caller reports FV_E_IMAGE_TOO_LARGE). */
static int make_plan(const fvi_mmod *m, long h, long w, int max_levels, plan *P) {
    P->in_h = h;
    P->in_w = w;
    P->runnable = 0;
    tiled_pyramid_layout(h, w, m->pyr_padding, m->pyr_outer_padding, max_levels, &P->L);
    if (P->L.nrects == 0) return 0;
    if (P->L.nr > INT32_MAX / 4 || P->L.nc > INT32_MAX / 4) return -1;
    P->oh[0] = (int)P->L.nr;
    P->ow[0] = (int)P->L.nc;
    for (int i = 0; i < MMOD_NCONV; i++) {
        const fvi_conv *cv = &m->conv[i];
        /* dlib requires the filter to fit the padded input. */
        if ((long)P->oh[i] + 2L * cv->pad_y < cv->kh || (long)P->ow[i] + 2L * cv->pad_x < cv->kw)
            return 0;
        P->oh[i + 1] = fvi_conv_out_h(cv, P->oh[i]);
        P->ow[i + 1] = fvi_conv_out_w(cv, P->ow[i]);
        if (P->oh[i + 1] < 1 || P->ow[i + 1] < 1) return 0;
    }
    P->runnable = 1;
    return 0;
}

/* Channel stride, border and bf16 element count of the fast path's input
 * to layer i (0..5): the tiled image as four channels, then each layer's
 * output with the border the next layer pads by. */
static int fast_cs(const fvi_mmod *m, int i) {
    return i == 0 ? 4 : m->fast[i - 1].out_cs;
}

static int fast_input_size(const fvi_mmod *m, const plan *P, int i, size_t *n) {
    const size_t h = (size_t)P->oh[i] + 2 * (size_t)m->conv[i].pad_y;
    const size_t w = (size_t)P->ow[i] + 2 * (size_t)m->conv[i].pad_x;
    return fvi_size_mul(h, w, n) || fvi_size_mul(*n, (size_t)fast_cs(m, i), n);
}

/* The arena walk, run once measuring and once for real.  Exact: buffer A
 * holds the input and the even activations, B the odd ones, then conv
 * scratch.  Fast (bf16): A holds the tiled image (and the last output), H0
 * and H1 the bf16 inputs of layers 0, 2, 4 and 1, 3, 5, B layer 5's float
 * output, scratch the last layer's. */
static int arena_walk(const fvi_mmod *m, const plan *P, int threads, int fast, fvi_arena *a,
                      float **A, float **B, float **scratch, fvi_bf16 **H0, fvi_bf16 **H1) {
    size_t sa = 0, sb = 0, ss = 0, sh[2] = {0, 0};
    for (int i = 0; i <= MMOD_NCONV; i++) {
        int ch = i == 0 ? 3 : m->conv[i - 1].out_c;
        size_t n;
        if (fvi_size_mul((size_t)ch, (size_t)P->oh[i], &n) || fvi_size_mul(n, (size_t)P->ow[i], &n))
            return -1;
        /* float tensors: exact, every one; fast, the image, layer 5's
         * output and the score map */
        if (!fast || i == 0 || i >= MMOD_NCONV - 1) {
            size_t *s = (fast ? i != MMOD_NCONV - 1 : i % 2 == 0) ? &sa : &sb;
            *s = n > *s ? n : *s;
        }
        if (fast && i < MMOD_NCONV - 1) { /* bf16 input of layer i */
            if (fast_input_size(m, P, i, &n)) return -1;
            n = n / 2 + 1; /* in floats */
            sh[i % 2] = n > sh[i % 2] ? n : sh[i % 2];
        }
        if (i < MMOD_NCONV && (!fast || i == MMOD_NCONV - 1)) {
            size_t s = fvi_conv_cnhw_scratch(&m->conv[i], 1, P->oh[i], P->ow[i], threads);
            ss = s > ss ? s : ss;
        }
    }
    *A = fvi_arena_alloc(a, sa);
    *B = fvi_arena_alloc(a, sb);
    *scratch = fvi_arena_alloc(a, ss);
    *H0 = *H1 = NULL;
    if (fast) {
        /* arena memory has no declared type: it may hold bf16 */
        void *h0 = fvi_arena_alloc(a, sh[0]), *h1 = fvi_arena_alloc(a, sh[1]);
        *H0 = h0;
        *H1 = h1;
    }
    if (!a->measuring && (!*A || !*B || (ss && !*scratch) || (fast && (!*H0 || !*H1)))) return -1;
    return 0;
}

/* The network on the tiled image in A; returns the score map.  Exact: seven
 * float32 convolutions.  Fast: the first six with the bf16 kernel (NHWC,
 * each output written with the next layer's zero border), the last in
 * float32 on layer 5's float output. */
static fvi_tensor run_network(const fvi_mmod *det, const plan *P, int fast, float *A, float *B,
                              float *scratch, fvi_bf16 *H0, fvi_bf16 *H1, fvi_workers *pool) {
    fvi_tensor t = {1, 3, P->oh[0], P->ow[0], A};
    if (!fast) {
        for (int i = 0; i < MMOD_NCONV; i++) {
            fvi_tensor o = {1, det->conv[i].out_c, P->oh[i + 1], P->ow[i + 1], i % 2 == 0 ? B : A};
            /* one sample: CNHW is NCHW */
            fvi_conv_forward_cnhw(&det->conv[i], &t, &o, i < MMOD_NCONV - 1, scratch, pool);
            t = o;
        }
        return t;
    }
    fvi_bf16 *H[2] = {H0, H1};
    fvi_bf16_from_nchw(A, 3, P->oh[0], P->ow[0], fast_cs(det, 0), H0, pool);
    const int last = MMOD_NCONV - 2; /* the last bf16 layer, float output */
    for (int i = 0; i <= last; i++) {
        const int ih = P->oh[i] + 2 * det->conv[i].pad_y, iw = P->ow[i] + 2 * det->conv[i].pad_x;
        fvi_conv_bf16_forward(&det->fast[i], H[i % 2], ih, iw, 1, H[(i + 1) % 2],
                              det->conv[i + 1].pad_y, i == last ? B : NULL, pool);
    }
    fvi_tensor f = {1, det->conv[last].out_c, P->oh[last + 1], P->ow[last + 1], B};
    fvi_tensor o = {1, 1, P->oh[MMOD_NCONV], P->ow[MMOD_NCONV], A};
    fvi_conv_forward_cnhw(&det->conv[MMOD_NCONV - 1], &f, &o, 0, scratch, pool);
    return o;
}

/* Upsamples `times` times into a fresh buffer (*out, fvi_malloc).  With
 * times 0 *out is NULL and the caller uses the image itself. */
static fv_status upsample_image(const fv_image *img, int times, unsigned char **out, long *oh,
                                long *ow) {
    unsigned char *cur = NULL;
    const unsigned char *src = img->rgb;
    long h = img->height, w = img->width;
    *out = NULL;
    for (int i = 0; i < times; i++) {
        long nh, nw;
        upsampled_size(h, w, &nh, &nw);
        unsigned char *next = fvi_malloc((size_t)nh * (size_t)nw * 3);
        if (!next) {
            fvi_free(cur);
            return FV_E_NO_MEMORY;
        }
        resize_rgb(src, h, w, next, nh, nw);
        fvi_free(cur);
        cur = next;
        src = cur;
        h = nh;
        w = nw;
    }
    *out = cur;
    *oh = h;
    *ow = w;
    return FV_OK;
}

fv_status fvi_mmod_detect(const fvi_mmod *det, const fv_image *img, int upsample, int precision,
                          fvi_workers *pool, fv_face **faces, size_t *count, char *err,
                          size_t errlen) {
    return fvi_mmod_detect_levels(det, img, upsample, 0, precision, pool, faces, count, err,
                                  errlen);
}

fv_status fvi_mmod_detect_levels(const fvi_mmod *det, const fv_image *img, int upsample,
                                 int max_levels, int precision, fvi_workers *pool, fv_face **faces,
                                 size_t *count, char *err, size_t errlen) {
    if (!faces || !count) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL output");
    *faces = NULL;
    *count = 0;
    if (!det || !img) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    if (img->width <= 0 || img->height <= 0 || !img->rgb)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "invalid image");
    if (upsample < 0 || upsample > FVI_MMOD_MAX_UPSAMPLE)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "upsample must be 0..%d",
                          FVI_MMOD_MAX_UPSAMPLE);
    if (max_levels < 0) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "max_levels < 0");
    if (precision != FV_PRECISION_EXACT && precision != FV_PRECISION_FAST)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "precision must be exact or fast");
    const int fast = precision == FV_PRECISION_FAST && det->has_fast;

    /* Sizes and the memory bound, before any allocation. */
    long h = img->height, w = img->width;
    size_t up_bytes = 0;
    for (int i = 0; i < upsample; i++) {
        size_t prev = (size_t)h * (size_t)w * 3;
        if (h > MMOD_MAX_SIDE || w > MMOD_MAX_SIDE) break;
        upsampled_size(h, w, &h, &w);
        up_bytes = prev * (i > 0) + (size_t)h * (size_t)w * 3; /* peak: two copies */
    }
    if (h > MMOD_MAX_SIDE || w > MMOD_MAX_SIDE)
        return fvi_seterr(err, errlen, FV_E_IMAGE_TOO_LARGE,
                          "image too large for the detector (%ldx%ld after upsampling)", w, h);
    plan P;
    if (make_plan(det, h, w, max_levels, &P))
        return fvi_seterr(err, errlen, FV_E_IMAGE_TOO_LARGE, "image too large for the detector");
    if (!P.runnable) return FV_OK; /* too small to hold a face */
    const int threads = fvi_workers_size(pool);
    fvi_arena arena;
    float *A, *B, *scratch;
    fvi_bf16 *H0, *H1;
    fvi_arena_measure(&arena);
    size_t bytes;
    if (arena_walk(det, &P, threads, fast, &arena, &A, &B, &scratch, &H0, &H1) ||
        fvi_size_mul(arena.peak, sizeof(float), &bytes) || fvi_size_add(bytes, up_bytes, &bytes) ||
        bytes > FVI_MMOD_MAX_CALL_BYTES)
        return fvi_seterr(err, errlen, FV_E_IMAGE_TOO_LARGE,
                          "image too large for the detector (%ldx%ld after upsampling needs "
                          "more than %zu MiB)",
                          w, h, FVI_MMOD_MAX_CALL_BYTES >> 20);

    fv_status st = FV_OK;
    unsigned char *up = NULL;
    mmod_det *dets = NULL;
    fv_face *out = NULL;
    size_t ndets = 0, cap = 0;
    long uh = img->height, uw = img->width;
    if (upsample_image(img, upsample, &up, &uh, &uw) != FV_OK) {
        st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory upsampling the image");
        goto done;
    }
    FVI_ASSERT(uh == h && uw == w);
    size_t peak = arena.peak;
    if (fvi_arena_reserve(&arena, peak)) {
        st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory for detector tensors");
        goto done;
    }
    if (arena_walk(det, &P, threads, fast, &arena, &A, &B, &scratch, &H0, &H1)) {
        st = fvi_seterr(err, errlen, FV_E_INTERNAL, "detector arena too small");
        goto done;
    }

    /* The tiled pyramid. */
    fvi_tensor t = {1, 3, P.oh[0], P.ow[0], A};
    memset(A, 0, fvi_tensor_size(&t) * sizeof(float));
    pyramid_job pj = {det, up ? up : img->rgb, h, w, &P.L, A};
    fvi_workers_run(pool, 3, 1, pyramid_task, &pj);

    t = run_network(det, &P, fast, A, B, scratch, H0, H1, pool);

    /* Scores > 0 become detections. */
    for (int r = 0; r < t.h; r++)
        for (int c = 0; c < t.w; c++) {
            const float s = t.d[(size_t)r * t.w + c];
            if (!((double)s > 0)) continue;
            if (ndets == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                mmod_det *nd = fvi_realloc(dets, ncap * sizeof *nd);
                if (!nd) {
                    st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
                    goto done;
                }
                dets = nd;
                cap = ncap;
            }
            dets[ndets].rect = output_to_image(det, &P.L, c, r);
            dets[ndets].score = (double)s;
            dets[ndets].order = ndets;
            ndets++;
        }
    fvi_arena_free(&arena);
    if (ndets == 0) goto done;
    qsort(dets, ndets, sizeof *dets, det_cmp);

    /* Greedy NMS: keep a detection unless it overlaps a kept one. */
    size_t kept = 0;
    for (size_t i = 0; i < ndets; i++) {
        int hit = 0;
        for (size_t k = 0; k < kept && !hit; k++)
            hit = boxes_overlap(det, &dets[k].rect, &dets[i].rect);
        if (!hit) dets[kept++] = dets[i];
    }
    out = fvi_calloc(kept, sizeof *out);
    if (!out) {
        st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < kept; i++) {
        /* Back through the upsampling: pyramid_down<2>::rect_down. */
        drect d = {(double)dets[i].rect.l, (double)dets[i].rect.t, (double)dets[i].rect.r,
                   (double)dets[i].rect.b};
        for (int u = 0; u < upsample; u++) {
            d.l = d.l / 2.0 - 1.25;
            d.r = d.r / 2.0 - 1.25;
            d.t = d.t / 2.0 - 0.75;
            d.b = d.b / 2.0 - 0.75;
        }
        irect ir = drect_round(&d);
        out[i].left = (float)ir.l;
        out[i].top = (float)ir.t;
        out[i].right = (float)(ir.r + 1);
        out[i].bottom = (float)(ir.b + 1);
        out[i].score = (float)dets[i].score;
    }
    *faces = out;
    *count = kept;
    out = NULL;
done:
    fvi_arena_free(&arena);
    fvi_free(up);
    fvi_free(dets);
    fvi_free(out);
    return st;
}
