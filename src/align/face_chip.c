/*
 * face_chip.c: the aligned face chip, as dlib's get_face_chip (Python
 * dlib.get_face_chip(img, shape, size, padding)) computes it.
 *
 * Steps, each as dlib 19.24 does them:
 *  1. get_face_chip_details: a least-squares similarity transform from
 *     dlib's 5-point mean-face template (scaled into the padded chip) to
 *     the landmarks, reduced to a rotation angle and an extraction
 *     rectangle of size*scale centred where the chip centre lands;
 *  2. extract_image_chip: if the rectangle is an unrotated, unscaled
 *     size x size window, a plain copy (black outside the image);
 *     otherwise the image region around the rotated rectangle is shrunk by
 *     dlib's pyramid_down<2> (5x5 binomial filter, integer arithmetic)
 *     as often as the rectangle stays larger than the chip area, and the
 *     chip is resampled from the chosen level with bilinear interpolation
 *     (double weights, truncated to 8 bits); samples whose 2x2
 *     neighbourhood leaves the region are black.
 *
 * Floating-point expressions keep dlib's operation order so results agree
 * bit for bit except where dlib's SVD/pseudo-inverse rounding differs from
 * the closed forms used here (~1e-16 relative, which can move a truncated
 * 8-bit value by one in rare cases).  All coordinates are range-checked
 * before any float -> integer conversion.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "align/align.h"
#include "align/align_internal.h"
#include "core/fvi.h"

#define CHIP_MAX_SIZE 4096
#define CHIP_MAX_COORD 1e7

/* Shared body of the two similarity functions (from/to differ in type). */
#define SIMILARITY_BODY()                                                                          \
    do {                                                                                           \
        if (n < 2) {                                                                               \
            m[0] = 1, m[1] = 0, m[2] = 0, m[3] = 1, b[0] = 0, b[1] = 0;                            \
            return;                                                                                \
        }                                                                                          \
        double mfx = 0, mfy = 0, mtx = 0, mty = 0;                                                 \
        for (size_t i = 0; i < n; i++) {                                                           \
            mfx += (double)from[2 * i], mfy += (double)from[2 * i + 1];                            \
            mtx += (double)to[2 * i], mty += (double)to[2 * i + 1];                                \
        }                                                                                          \
        mfx /= (double)n, mfy /= (double)n, mtx /= (double)n, mty /= (double)n;                    \
        double sf = 0, c00 = 0, c01 = 0, c10 = 0, c11 = 0;                                         \
        for (size_t i = 0; i < n; i++) {                                                           \
            const double fx = (double)from[2 * i] - mfx, fy = (double)from[2 * i + 1] - mfy;       \
            const double tx = (double)to[2 * i] - mtx, ty = (double)to[2 * i + 1] - mty;           \
            sf += fx * fx + fy * fy;                                                               \
            c00 += tx * fx, c01 += tx * fy, c10 += ty * fx, c11 += ty * fy;                        \
        }                                                                                          \
        sf /= (double)n;                                                                           \
        c00 /= (double)n, c01 /= (double)n, c10 /= (double)n, c11 /= (double)n;                    \
        /* Best proper rotation maximises cos*(c00+c11) + sin*(c10-c01); its                       \
         * maximum is Umeyama's trace(D S). */                                                     \
        const double p = c00 + c11, q = c10 - c01, tr = sqrt(p * p + q * q);                       \
        double ca = 1, sa = 0;                                                                     \
        if (tr > 0) ca = p / tr, sa = q / tr;                                                      \
        double s = 1;                                                                              \
        if (sf != 0) s = 1.0 / sf * tr;                                                            \
        m[0] = s * ca, m[1] = -(s * sa), m[2] = s * sa, m[3] = s * ca;                             \
        b[0] = mtx - (m[0] * mfx + m[1] * mfy);                                                    \
        b[1] = mty - (m[2] * mfx + m[3] * mfy);                                                    \
    } while (0)

void fvi_align_similarity(const double *from, const double *to, size_t n, double m[4],
                          double b[2]) {
    SIMILARITY_BODY();
}

void fvi_align_similarity_f(const float *from, const float *to, size_t n, double m[4],
                            double b[2]) {
    SIMILARITY_BODY();
}

/* dlib's drectangle: inclusive corners, empty when l > r or t > b. */
typedef struct drect {
    double l, t, r, b;
} drect;

static int drect_empty(drect a) {
    return a.t > a.b || a.l > a.r;
}
static double drect_area(drect a) {
    return drect_empty(a) ? 0 : (a.r - a.l + 1) * (a.b - a.t + 1);
}
/* Union of a rectangle and a point (drectangle += point). */
static drect drect_add(drect a, double x, double y) {
    if (drect_empty(a)) return (drect){x, y, x, y};
    return (drect){fmin(a.l, x), fmin(a.t, y), fmax(a.r, x), fmax(a.b, y)};
}
/* pyramid_down<2>::rect_down: both corners through p/2 - (1.25, 0.75),
 * then the rectangle spanning the two points. */
static drect rect_down(drect a) {
    const double x1 = a.l / 2.0 - 1.25, y1 = a.t / 2.0 - 0.75;
    const double x2 = a.r / 2.0 - 1.25, y2 = a.b / 2.0 - 0.75;
    drect e = {0, 0, -1, -1};
    return drect_add(drect_add(e, x1, y1), x2, y2);
}
/* rotate_point(center, p, angle) with precomputed sin/cos. */
static void rotate(double cx, double cy, double px, double py, double sa, double ca, double *ox,
                   double *oy) {
    const double dx = px - cx, dy = py - cy;
    const double x = ca * dx - sa * dy;
    const double y = sa * dx + ca * dy;
    *ox = x + cx;
    *oy = y + cy;
}

/* A read-only RGB view: w x h pixels, rows `stride` bytes apart. */
typedef struct view {
    const unsigned char *p;
    long w, h;
    size_t stride;
} view;

/* dlib's pyramid_down<2> for rgb -> rgb: filter rows with [1 4 6 4 1]
 * keeping every other column, then columns likewise, /256 truncated.
 * Output ((h-3)/2) x ((w-3)/2); images of 8 or fewer rows or columns give
 * an empty level (dlib clears it).  *out owns its pixels (fvi_free). */
static fv_status pyr_down(view in, view *out, unsigned char **owned) {
    *owned = NULL;
    *out = (view){NULL, 0, 0, 0};
    if (in.h <= 8 || in.w <= 8) return FV_OK;
    const long tw = (in.w - 3) / 2, oh = (in.h - 3) / 2;
    size_t tn, on;
    if (fvi_size_mul((size_t)in.h, (size_t)tw * 3, &tn) ||
        fvi_size_mul((size_t)oh, (size_t)tw * 3, &on))
        return FV_E_NO_MEMORY;
    size_t tbytes;
    if (fvi_size_mul(tn, sizeof(uint16_t), &tbytes)) return FV_E_NO_MEMORY;
    uint16_t *tmp = fvi_malloc(tbytes);
    unsigned char *o = fvi_malloc(on);
    if (!tmp || !o) {
        fvi_free(tmp);
        fvi_free(o);
        return FV_E_NO_MEMORY;
    }
    for (long r = 0; r < in.h; r++) {
        const unsigned char *s = in.p + (size_t)r * in.stride;
        uint16_t *d = tmp + (size_t)r * tw * 3;
        for (long c = 0; c < tw; c++) {
            const unsigned char *q = s + (size_t)c * 6;
            for (int k = 0; k < 3; k++)
                d[3 * c + k] =
                    (uint16_t)(q[k] + 4 * q[3 + k] + 6 * q[6 + k] + 4 * q[9 + k] + q[12 + k]);
        }
    }
    long dr = 0;
    for (long r = 2; r < in.h - 2; r += 2, dr++) {
        const size_t row = (size_t)tw * 3;
        const uint16_t *a = tmp + (size_t)(r - 2) * row;
        unsigned char *d = o + (size_t)dr * row;
        for (size_t i = 0; i < row; i++) {
            const unsigned v = (unsigned)a[i] + 4u * a[i + row] + 6u * a[i + 2 * row] +
                               4u * a[i + 3 * row] + a[i + 4 * row];
            /* dlib stores the sum in a uint16 first; 16*16*255 fits. */
            d[i] = (unsigned char)((uint16_t)v / 256);
        }
    }
    fvi_free(tmp);
    *owned = o;
    *out = (view){o, tw, oh, (size_t)tw * 3};
    return FV_OK;
}

/* dlib's interpolate_bilinear on rgb, black outside, into dst[3]. */
static void bilinear(const view *v, double x, double y, unsigned char *dst) {
    /* floor(x) >= 0 and floor(x) + 1 < w, tested in double before casts */
    if (!(x >= 0 && y >= 0 && x < (double)(v->w - 1) && y < (double)(v->h - 1))) {
        dst[0] = dst[1] = dst[2] = 0;
        return;
    }
    const long left = (long)floor(x), top = (long)floor(y);
    const double lr = x - (double)left, tb = y - (double)top;
    const unsigned char *tl = v->p + (size_t)top * v->stride + (size_t)left * 3;
    const unsigned char *tr = tl + 3, *bl = tl + v->stride, *br = bl + 3;
    for (int k = 0; k < 3; k++) {
        const double val =
            (1 - tb) * ((1 - lr) * tl[k] + lr * tr[k]) + tb * ((1 - lr) * bl[k] + lr * br[k]);
        dst[k] = (unsigned char)val; /* val is in [0, 255 + tiny]; truncation as in dlib */
    }
}

/* dlib's 5-point mean face (get_face_chip_details). */
static const double TEMPLATE5[5][2] = {
    {0.8595674595992, 0.2134981538014}, {0.6460604764104, 0.2289674387677},
    {0.1205750620789, 0.2137274526848}, {0.3340850613712, 0.2290642403242},
    {0.4901123135679, 0.6277975316475},
};

/* Rounds as dlib's drectangle -> rectangle conversion; v is range-checked
 * by the callers (|v| far below LONG_MAX). */
static long round_half_up(double v) {
    return (long)floor(v + 0.5);
}

fv_status fvi_face_chip(const fv_image *img, const fv_point *lm, int size, double padding,
                        unsigned char *chip) {
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0 || !lm || !chip)
        return FV_E_INVALID_ARGUMENT;
    if (size < 2 || size > CHIP_MAX_SIZE || !(padding >= 0 && padding <= 100))
        return FV_E_INVALID_ARGUMENT;
    for (int i = 0; i < 5; i++)
        if (!isfinite(lm[i].x) || !isfinite(lm[i].y) || fabsf(lm[i].x) > CHIP_MAX_COORD ||
            fabsf(lm[i].y) > CHIP_MAX_COORD)
            return FV_E_INVALID_ARGUMENT;

    /* 1. get_face_chip_details */
    double from[10], to[10];
    for (int i = 0; i < 5; i++) {
        from[2 * i] = (padding + TEMPLATE5[i][0]) / (2 * padding + 1) * (double)size;
        from[2 * i + 1] = (padding + TEMPLATE5[i][1]) / (2 * padding + 1) * (double)size;
        to[2 * i] = lm[i].x;
        to[2 * i + 1] = lm[i].y;
    }
    double m[4], tb[2];
    fvi_align_similarity(from, to, 5, m, tb);
    const double angle = atan2(m[2], m[0]);
    const double scale = sqrt(m[0] * m[0] + m[2] * m[2]);
    if (!(scale > 1e-6)) return FV_E_INVALID_ARGUMENT; /* all landmarks (nearly) equal */
    const double half = (double)size / 2.0;
    const double cx = m[0] * half + m[1] * half + tb[0];
    const double cy = m[2] * half + m[3] * half + tb[1];
    const double wd = (double)size * scale - 1, ht = (double)size * scale - 1;
    const drect rect = {cx - wd / 2, cy - ht / 2, cx + wd / 2, cy + ht / 2};
    const long rows = size, cols = size;
    const double chip_area = (double)rows * (double)cols;
    const view whole = {img->rgb, img->width, img->height, (size_t)img->width * 3};

    /* 2a. unrotated, unscaled: a plain copy of the rounded rectangle. */
    if (angle == 0 && (double)rows == rect.b - rect.t + 1 && (double)cols == rect.r - rect.l + 1) {
        const long l = round_half_up(rect.l), t = round_half_up(rect.t);
        for (long r = 0; r < rows; r++)
            for (long c = 0; c < cols; c++) {
                unsigned char *d = chip + ((size_t)r * cols + c) * 3;
                const long x = l + c, y = t + r;
                if (x >= 0 && y >= 0 && x < whole.w && y < whole.h)
                    memcpy(d, whole.p + (size_t)y * whole.stride + (size_t)x * 3, 3);
                else
                    d[0] = d[1] = d[2] = 0;
            }
        return FV_OK;
    }

    /* 2b. pyramid depth and the image region it needs */
    const double sa = sin(angle), ca = cos(angle);
    long depth = 0;
    double grow = 2;
    drect dr = rect_down(rect);
    while (drect_area(dr) > chip_area) {
        dr = rect_down(dr);
        ++depth;
        grow = grow * 2 + 2;
    }
    const double rcx = (rect.l + rect.r) / 2.0, rcy = (rect.t + rect.b) / 2.0;
    drect rot = {0, 0, -1, -1};
    double x, y;
    rotate(rcx, rcy, rect.l, rect.t, sa, ca, &x, &y), rot = drect_add(rot, x, y);
    rotate(rcx, rcy, rect.r, rect.t, sa, ca, &x, &y), rot = drect_add(rot, x, y);
    rotate(rcx, rcy, rect.l, rect.b, sa, ca, &x, &y), rot = drect_add(rot, x, y);
    rotate(rcx, rcy, rect.r, rect.b, sa, ca, &x, &y), rot = drect_add(rot, x, y);
    /* grow, intersect with the image, round to an integer rectangle */
    const drect g = {fmax(rot.l - grow, 0), fmax(rot.t - grow, 0),
                     fmin(rot.r + grow, (double)(whole.w - 1)),
                     fmin(rot.b + grow, (double)(whole.h - 1))};
    long bl = 0, bt = 0, br = -1, bb = -1; /* dlib's empty rectangle */
    if (fabs(g.l) < 1e15 && fabs(g.t) < 1e15 && fabs(g.r) < 1e15 && fabs(g.b) < 1e15) {
        const long l = round_half_up(g.l), t = round_half_up(g.t);
        const long r = round_half_up(g.r), b = round_half_up(g.b);
        if (!(t > b || l > r)) bl = l, bt = t, br = r, bb = b;
    }
    view region = {NULL, 0, 0, whole.stride};
    if (br >= bl && bb >= bt) {
        region.p = whole.p + (size_t)bt * whole.stride + (size_t)bl * 3;
        region.w = br - bl + 1;
        region.h = bb - bt + 1;
    }

    /* 2c. which level to sample from (dlib recomputes it on the rectangle
     * relative to the region) */
    drect rr = {rect.l + (double)-bl, rect.t + (double)-bt, rect.r + (double)-bl,
                rect.b + (double)-bt};
    long level = -1;
    while (drect_area(rect_down(rr)) > chip_area) {
        ++level;
        rr = rect_down(rr);
    }
    if (level >= depth) level = depth - 1; /* cannot happen; keeps the index in range */

    view src = region;
    unsigned char *owned = NULL; /* pixels of src when it is a pyramid level */
    for (long i = 0; i <= level; i++) {
        view next;
        unsigned char *buf;
        fv_status st = pyr_down(src, &next, &buf);
        fvi_free(owned);
        owned = buf;
        if (st != FV_OK) return st;
        src = next;
    }
    if (!src.p) src.w = src.h = 0;

    /* 2d. chip corners (0,0), (cols-1,0), (0,rows-1) to the rotated rectangle
     * corners: the affine map dlib fits with a pseudo-inverse, exactly. */
    const double ccx = (rr.l + rr.r) / 2.0, ccy = (rr.t + rr.b) / 2.0;
    double tlx, tly, trx, try_, blx, bly;
    rotate(ccx, ccy, rr.l, rr.t, sa, ca, &tlx, &tly);
    rotate(ccx, ccy, rr.r, rr.t, sa, ca, &trx, &try_);
    rotate(ccx, ccy, rr.l, rr.b, sa, ca, &blx, &bly);
    const double a00 = (trx - tlx) / (double)(cols - 1), a01 = (blx - tlx) / (double)(rows - 1);
    const double a10 = (try_ - tly) / (double)(cols - 1), a11 = (bly - tly) / (double)(rows - 1);
    for (long r = 0; r < rows; r++)
        for (long c = 0; c < cols; c++) {
            double sx = a00 * (double)c;
            sx += a01 * (double)r;
            double sy = a10 * (double)c;
            sy += a11 * (double)r;
            bilinear(&src, sx + tlx, sy + tly, chip + ((size_t)r * cols + c) * 3);
        }
    fvi_free(owned);
    return FV_OK;
}
