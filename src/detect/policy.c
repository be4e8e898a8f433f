/*
 * policy.c: the detection policy (see policy.h), the rules stated in the
 * README:
 *  - photos whose longer side exceeds opt->max_side (default 1600 px) are
 *    downscaled with an area filter for detection only; boxes are mapped
 *    back, and landmarks and chips are computed on the full-resolution
 *    image;
 *  - upsample -1 (auto): the scale policy of scales.h, which looks for
 *    faces of every size (down to ~20 px) in every photo, not only when
 *    the first pass finds nothing;
 *  - upsample 0..2 (exact): one MMOD pass at that level, dlib's boxes (the
 *    parity tests' mode), under the max_side downscale above;
 *  - faces below opt->min_score are dropped, the rest are ordered largest
 *    first (or nearest the image centre first with FV_ORDER_CENTER); the
 *    "face used" is the first;
 *  - try_rotations: see fvi_find_faces below.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "detect/policy.h"
#include "detect/scales.h"
#include "core/fvi.h"
#include "image/image.h"
#include "image/resize.h"

#define FVI_DEFAULT_MAX_SIDE 1600
#define FVI_ROTATION_CONFIDENT 0.9f

/* The defaults the README states; NULL is a no-op. */
void fv_detect_options_init(fv_detect_options *opt) {
    if (!opt) return;
    opt->detector = FV_DETECTOR_MMOD;
    opt->upsample = -1;
    opt->max_side = FVI_DEFAULT_MAX_SIDE;
    opt->min_score = 0.0f;
    opt->try_rotations = 0;
    opt->order = FV_ORDER_LARGEST;
    opt->haar_scale_factor = 1.1f;
    opt->haar_min_neighbors = 3;
    opt->haar_min_size = 0;
    opt->haar_max_size = 0;
}

static const char *const detector_names[] = {"mmod", "none", "haar"};

/* Static name of d; NULL for a value outside the enum. */
const char *fv_detector_name(fv_detector d) {
    if ((int)d < 0 || (size_t)d >= sizeof detector_names / sizeof *detector_names) return NULL;
    return detector_names[d];
}

/* Inverse of fv_detector_name; FV_E_UNSUPPORTED for an unknown name. */
fv_status fv_detector_parse(const char *name, fv_detector *out) {
    if (!name || !out) return FV_E_INVALID_ARGUMENT;
    for (size_t i = 0; i < sizeof detector_names / sizeof *detector_names; i++)
        if (strcmp(name, detector_names[i]) == 0) {
            *out = (fv_detector)i;
            return FV_OK;
        }
    return FV_E_UNSUPPORTED;
}

static float face_area(const fv_face *f) {
    return (f->right - f->left) * (f->bottom - f->top);
}

static int cmp_area_desc(const void *a, const void *b) {
    float x = face_area(a), y = face_area(b);
    return (x < y) - (x > y);
}

/* Orders faces by the option's policy: largest first, or nearest the
 * centre (cx, cy) first (stable for equal keys: largest first). */
static void order_faces(fv_face *f, size_t n, int order, float cx, float cy) {
    if (n < 2) return;
    qsort(f, n, sizeof *f, cmp_area_desc);
    if (order != FV_ORDER_CENTER) return;
    for (size_t i = 1; i < n; i++) { /* insertion sort keeps area order on ties */
        fv_face key = f[i];
        float kd = hypotf((key.left + key.right) / 2 - cx, (key.top + key.bottom) / 2 - cy);
        size_t j = i;
        while (j > 0 && hypotf((f[j - 1].left + f[j - 1].right) / 2 - cx,
                               (f[j - 1].top + f[j - 1].bottom) / 2 - cy) > kd) {
            f[j] = f[j - 1];
            j--;
        }
        f[j] = key;
    }
}

static float best_score(const fv_face *f, size_t n) {
    float b = -INFINITY;
    for (size_t i = 0; i < n; i++) b = fmaxf(b, f[i].score);
    return b;
}

/* A detector run on an image that detect_scaled may have shrunk by
 * `scale` (<= 1); boxes come back in that image's coordinates. */
typedef fv_status (*box_fn)(const fvi_detectors *d, const fv_image *img, double scale,
                            const void *ctx, fv_face **faces, size_t *n, char *err, size_t errlen);

/* Runs fn on img, or, when img's longer side exceeds max_side (> 0), on a
 * copy shrunk to that side with an area filter, mapping the boxes back to
 * img's coordinates.  The one home of the large-photo policy. */
static fv_status detect_scaled(const fvi_detectors *d, const fv_image *img, int max_side, box_fn fn,
                               const void *ctx, fv_face **faces, size_t *n, char *err,
                               size_t errlen) {
    int longer = img->width > img->height ? img->width : img->height;
    if (max_side <= 0 || longer <= max_side) return fn(d, img, 1.0, ctx, faces, n, err, errlen);
    double s = (double)max_side / longer;
    int w = (int)lround(img->width * s), h = (int)lround(img->height * s);
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    fv_image *small = NULL;
    fv_status st = fvi_image_downscale(img, w, h, &small);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "cannot downscale image");
    st = fn(d, small, s, ctx, faces, n, err, errlen);
    fv_image_destroy(small);
    if (st != FV_OK) return st;
    double sx = (double)img->width / w, sy = (double)img->height / h;
    for (size_t i = 0; i < *n; i++) {
        fv_face *f = &(*faces)[i];
        f->left = (float)(f->left * sx);
        f->right = (float)(f->right * sx);
        f->top = (float)(f->top * sy);
        f->bottom = (float)(f->bottom * sy);
    }
    return FV_OK;
}

/* box_fn for MMOD; ctx: the int upsampling level. */
static fv_status mmod_run(const fvi_detectors *d, const fv_image *img, double scale,
                          const void *ctx, fv_face **faces, size_t *n, char *err, size_t errlen) {
    FVI_UNUSED(scale);
    return fvi_mmod_detect(d->mmod, img, *(const int *)ctx, d->pool, faces, n, err, errlen);
}

/* Runs MMOD at one upsampling level under the max_side policy. */
static fv_status mmod_boxes(const fvi_detectors *d, const fv_image *img, int upsample, int max_side,
                            fv_face **faces, size_t *n, char *err, size_t errlen) {
    return detect_scaled(d, img, max_side, mmod_run, &upsample, faces, n, err, errlen);
}

typedef struct {
    const fvi_haar *cascade;
    fvi_haar_params params;
} haar_ctx;

/* box_fn for Haar: face size limits shrink with the image. */
static fv_status haar_run(const fvi_detectors *d, const fv_image *img, double scale,
                          const void *ctx, fv_face **faces, size_t *n, char *err, size_t errlen) {
    const haar_ctx *hc = ctx;
    fvi_haar_params p = hc->params;
    if (scale < 1.0) {
        p.min_size = (int)(p.min_size * scale);
        p.max_size = p.max_size > 0 ? (int)ceil(p.max_size * scale) : 0;
    }
    return fvi_haar_detect(hc->cascade, img, &p, d->pool, faces, n, err, errlen);
}

/* Runs the Haar cascade under the max_side policy and returns boxes in
 * img's coordinates, mapped to dlib's box convention for the shape
 * predictor. */
static fv_status haar_boxes(const fvi_detectors *d, const fv_image *img,
                            const fv_detect_options *opt, fv_face **faces, size_t *n, char *err,
                            size_t errlen) {
    haar_ctx hc;
    if (!d->haar)
        return fvi_seterr(err, errlen, FV_E_UNSUPPORTED, "detector 'haar' is not available");
    fv_status st = d->haar(d->haar_ctx, &hc.cascade, err, errlen);
    if (st != FV_OK) return st;
    /* the option is a float; round it to 6 decimals so that 1.1f scans
     * exactly the pyramid of OpenCV's (double) 1.1 */
    hc.params = (fvi_haar_params){round((double)opt->haar_scale_factor * 1e6) / 1e6,
                                  opt->haar_min_neighbors, opt->haar_min_size, opt->haar_max_size};
    st = detect_scaled(d, img, opt->max_side, haar_run, &hc, faces, n, err, errlen);
    if (st != FV_OK) return st;
    for (size_t i = 0; i < *n; i++) fvi_haar_box_to_dlib(&(*faces)[i]);
    return FV_OK;
}

/* Detects boxes (no landmarks) per the policy in the file comment.  *faces
 * is fvi_malloc'ed (NULL when none). */
static fv_status detect_boxes(const fvi_detectors *d, const fv_image *img,
                              const fv_detect_options *opt, fv_face **faces, size_t *n, char *err,
                              size_t errlen) {
    *faces = NULL;
    *n = 0;
    if (opt->detector == FV_DETECTOR_NONE) {
        fv_face *f = fvi_calloc(1, sizeof *f);
        if (!f) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
        f->right = (float)img->width;
        f->bottom = (float)img->height;
        *faces = f;
        *n = 1;
        return FV_OK;
    }
    if (opt->detector != FV_DETECTOR_MMOD && opt->detector != FV_DETECTOR_HAAR)
        return fvi_seterr(err, errlen, FV_E_UNSUPPORTED, "detector '%s' is not available",
                          fv_detector_name(opt->detector) ? fv_detector_name(opt->detector) : "?");
    if (opt->upsample < -1 || opt->upsample > 2)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "upsample must be -1..2");
    fv_status st;
    if (opt->detector == FV_DETECTOR_HAAR)
        st = haar_boxes(d, img, opt, faces, n, err, errlen);
    else if (opt->upsample < 0)
        st = fvi_detect_auto(d, img, opt, faces, n, err, errlen);
    else
        st = mmod_boxes(d, img, opt->upsample, opt->max_side, faces, n, err, errlen);
    if (st != FV_OK) return st;
    /* drop low scores in place */
    size_t k = 0;
    for (size_t i = 0; i < *n; i++)
        if ((*faces)[i].score >= opt->min_score) (*faces)[k++] = (*faces)[i];
    *n = k;
    order_faces(*faces, *n, opt->order, img->width / 2.0f, img->height / 2.0f);
    return FV_OK;
}

/* Maps a point of an image turned by EXIF orientation o back to the
 * original image of size w x h (the inverse of fvi_image_orient). */
static fv_point unrotate(fv_point p, int o, int w, int h) {
    fv_point q;
    switch (o) {
    case 6:
        q.x = p.y;
        q.y = (float)(h - 1) - p.x;
        break;
    case 8:
        q.x = (float)(w - 1) - p.y;
        q.y = p.x;
        break;
    default:
        q.x = (float)(w - 1) - p.x;
        q.y = (float)(h - 1) - p.y;
        break; /* 3 */
    }
    return q;
}

/* Maps a face (box and landmarks) found in the turned image back. */
static void unrotate_face(fv_face *f, int o, int w, int h) {
    fv_point a = unrotate((fv_point){f->left, f->top}, o, w, h);
    fv_point b = unrotate((fv_point){f->right - 1, f->bottom - 1}, o, w, h);
    f->left = fminf(a.x, b.x);
    f->top = fminf(a.y, b.y);
    f->right = fmaxf(a.x, b.x) + 1;
    f->bottom = fmaxf(a.y, b.y) + 1;
    for (int i = 0; i < FV_NUM_LANDMARKS; i++) f->landmarks[i] = unrotate(f->landmarks[i], o, w, h);
}

/* Predicts landmarks for the first k faces through the caller's function. */
static fv_status landmarks_for(const fvi_detectors *d, const fv_image *img, fv_face *faces,
                               size_t k, char *err, size_t errlen) {
    if (k == 0) return FV_OK;
    return d->landmarks(d->landmarks_ctx, img, faces, k, err, errlen);
}

/* Detects in img turned by orientation o; on success the faces (with
 * landmarks for the first want_lm) are in original coordinates. */
static fv_status detect_turned(const fvi_detectors *d, const fv_image *img, int o,
                               const fv_detect_options *opt, size_t want_lm, fv_face **faces,
                               size_t *n, char *err, size_t errlen) {
    fv_image *turned = NULL;
    *faces = NULL;
    *n = 0;
    fv_status st = fv_image_from_rgb(img->rgb, img->width, img->height, &turned);
    if (st == FV_OK) st = fvi_image_orient(&turned, o);
    if (st != FV_OK) {
        fv_image_destroy(turned);
        return fvi_seterr(err, errlen, st, "cannot turn image");
    }
    st = detect_boxes(d, turned, opt, faces, n, err, errlen);
    if (st == FV_OK)
        st = landmarks_for(d, turned, *faces, *n < want_lm ? *n : want_lm, err, errlen);
    if (st == FV_OK)
        for (size_t i = 0; i < *n; i++) unrotate_face(&(*faces)[i], o, img->width, img->height);
    fv_image_destroy(turned);
    return st;
}

/* Finds faces per the detection policy, with landmarks for the first
 * want_lm faces (in the policy's order).  With try_rotations, when the upright pass
 * finds nothing or only weak faces (score below FVI_ROTATION_CONFIDENT: a
 * face lying on its side often gives a weak upright detection), the turned
 * images are tried too and the orientation with the strongest face wins.
 * *faces is fvi_malloc'ed; times go to t->detect_ms and t->landmarks_ms
 * (for turned images, landmarks are counted in detect_ms). */
fv_status fvi_find_faces(const fvi_detectors *d, const fv_image *img, const fv_detect_options *opt,
                         size_t want_lm, fv_face **faces, size_t *n, fv_timings *t, char *err,
                         size_t errlen) {
    double t0 = fvi_now_ms();
    fv_status st = detect_boxes(d, img, opt, faces, n, err, errlen);
    if (st != FV_OK) return st;
    if (opt->try_rotations && opt->detector != FV_DETECTOR_NONE &&
        (*n == 0 || best_score(*faces, *n) < FVI_ROTATION_CONFIDENT)) {
        static const int turns[] = {6, 8, 3};
        int winner = 0;
        for (size_t r = 0; r < sizeof turns / sizeof *turns; r++) {
            fv_face *tf = NULL;
            size_t tn = 0;
            st = detect_turned(d, img, turns[r], opt, want_lm, &tf, &tn, err, errlen);
            if (st != FV_OK) return st;
            if (tn > 0 && (*n == 0 || best_score(tf, tn) > best_score(*faces, *n))) {
                fvi_free(*faces);
                *faces = tf;
                *n = tn;
                winner = turns[r];
            } else {
                fvi_free(tf);
            }
        }
        if (winner) {
            t->detect_ms = fvi_now_ms() - t0;
            t->landmarks_ms = 0;
            return FV_OK;
        }
    }
    double t1 = fvi_now_ms();
    t->detect_ms = t1 - t0;
    st = landmarks_for(d, img, *faces, *n < want_lm ? *n : want_lm, err, errlen);
    t->landmarks_ms = fvi_now_ms() - t1;
    return st;
}
