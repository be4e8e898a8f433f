/*
 * policy.c: the detection policy (see policy.h), the rules stated in the
 * README:
 *  - the default detector (FV_DETECTOR_AUTO) is MTCNN when its weights
 *    load, else MMOD; with an upsampling level (0..2) it is MMOD's exact
 *    mode;
 *  - photos whose longer side exceeds opt->max_side (default 1600 px for
 *    MMOD and Haar, no limit for MTCNN) are
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
 *  - try_rotations (on by default): see the orientation section below.
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
#define FVI_ROTATION_CONFIDENT 0.9f /* an upright face this strong skips the turned passes */
#define FVI_WEAK_SCORE 0.5f
/* MTCNN faces below this O-Net probability are dropped (its own threshold
 * is 0.7).  Measured (bench/detect_bench.py's set): every labelled face,
 * 16-200 px, scored >= 0.997 and every false detection 0.70-0.75 (a 3 MP
 * and a 12 MP background), and on LFW View 2 no face of 7,700 scored under
 * 0.8 (2 under 0.9). */
#define FVI_MTCNN_MIN_SCORE 0.8f

/* The defaults the README states; NULL is a no-op. */
void fv_detect_options_init(fv_detect_options *opt) {
    if (!opt) return;
    opt->detector = FV_DETECTOR_AUTO;
    opt->upsample = -1;
    opt->max_side = -1;
    opt->min_score = 0.0f;
    opt->try_rotations = 1;
    opt->order = FV_ORDER_LARGEST;
    opt->haar_scale_factor = 1.1f;
    opt->haar_min_neighbors = 3;
    opt->haar_min_size = 0;
    opt->haar_max_size = 0;
    opt->precision = FV_PRECISION_EXACT;
}

static const char *const detector_names[] = {"mmod", "none", "haar", "mtcnn", "auto"};

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

fv_status fvi_resolve_detect_options(const fvi_detectors *d, fv_detect_options *opt, char *err,
                                     size_t errlen) {
    if (opt->detector == FV_DETECTOR_AUTO && opt->upsample >= 0) {
        opt->detector = FV_DETECTOR_MMOD; /* an upsampling level is MMOD's exact mode */
    } else if (opt->detector == FV_DETECTOR_AUTO) {
        const fvi_mtcnn *m = NULL;
        fv_status st = d->mtcnn ? d->mtcnn(d->mtcnn_ctx, &m, err, errlen) : FV_E_MODEL_MISSING;
        /* only a missing file means "not installed"; a corrupt one or a
         * failed allocation is an error to report, not a reason to run
         * another detector */
        if (st != FV_OK && st != FV_E_MODEL_MISSING) return st;
        opt->detector = st == FV_OK ? FV_DETECTOR_MTCNN : FV_DETECTOR_MMOD;
        if (err && errlen) err[0] = '\0';
    }
    if (opt->max_side < 0)
        opt->max_side = opt->detector == FV_DETECTOR_MTCNN ? 0 : FVI_DEFAULT_MAX_SIDE;
    return FV_OK;
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
    return fvi_mmod_detect(d->mmod, img, *(const int *)ctx, d->mmod_precision, d->pool, faces, n,
                           err, errlen);
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

/* box_fn for MTCNN; ctx: the model.  Its 20 px smallest face is in the
 * (possibly shrunk) image's pixels, as MMOD's. */
static fv_status mtcnn_run(const fvi_detectors *d, const fv_image *img, double scale,
                           const void *ctx, fv_face **faces, size_t *n, char *err, size_t errlen) {
    FVI_UNUSED(scale);
    fvi_mtcnn_params p;
    fvi_mtcnn_params_init(&p);
    if (d->mtcnn_min_face > 0) p.min_face = d->mtcnn_min_face;
    return fvi_mtcnn_detect(ctx, img, &p, d->pool, faces, n, err, errlen);
}

/* Runs MTCNN under the max_side policy, boxes in img's coordinates mapped
 * to dlib's box convention for the shape predictor. */
static fv_status mtcnn_boxes(const fvi_detectors *d, const fv_image *img,
                             const fv_detect_options *opt, fv_face **faces, size_t *n, char *err,
                             size_t errlen) {
    const fvi_mtcnn *m;
    if (!d->mtcnn)
        return fvi_seterr(err, errlen, FV_E_UNSUPPORTED, "detector 'mtcnn' is not available");
    fv_status st = d->mtcnn(d->mtcnn_ctx, &m, err, errlen);
    if (st != FV_OK) return st;
    st = detect_scaled(d, img, opt->max_side, mtcnn_run, m, faces, n, err, errlen);
    if (st != FV_OK) return st;
    /* keep O-Net's confident faces only, mapped to dlib's convention */
    size_t k = 0;
    for (size_t i = 0; i < *n; i++)
        if ((*faces)[i].score >= FVI_MTCNN_MIN_SCORE) {
            (*faces)[k] = (*faces)[i];
            fvi_mtcnn_box_to_dlib(&(*faces)[k++]);
        }
    *n = k;
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
    if (opt->detector != FV_DETECTOR_MMOD && opt->detector != FV_DETECTOR_HAAR &&
        opt->detector != FV_DETECTOR_MTCNN)
        return fvi_seterr(err, errlen, FV_E_UNSUPPORTED, "detector '%s' is not available",
                          fv_detector_name(opt->detector) ? fv_detector_name(opt->detector) : "?");
    if (opt->upsample < -1 || opt->upsample > 2)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "upsample must be -1..2");
    fv_status st;
    if (opt->detector == FV_DETECTOR_HAAR)
        st = haar_boxes(d, img, opt, faces, n, err, errlen);
    else if (opt->detector == FV_DETECTOR_MTCNN)
        st = mtcnn_boxes(d, img, opt, faces, n, err, errlen);
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
    fv_status st = fvi_image_oriented(img, o, &turned);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "cannot turn image");
    st = detect_boxes(d, turned, opt, faces, n, err, errlen);
    if (st == FV_OK)
        st = landmarks_for(d, turned, *faces, *n < want_lm ? *n : want_lm, err, errlen);
    if (st == FV_OK)
        for (size_t i = 0; i < *n; i++) unrotate_face(&(*faces)[i], o, img->width, img->height);
    fv_image_destroy(turned);
    return st;
}

/* ---------------------------------------------------------------- orientation
 *
 * MMOD alone cannot tell which way up a face is: it finds many faces lying
 * on their side, and some upside down, with the score of an upright one
 * (on LFW, a face turned 90 degrees often scores 1.0 against 1.06
 * upright).  OpenCV's frontal Haar cascade is the opposite: trained on
 * upright faces only, it fires dozens of times on an upright face and
 * rarely on a turned one.  On 300 LFW faces cropped and scaled as below
 * (OpenCV's own detectMultiScale, bench-checked in Python): median 41 raw
 * hits upright against 2 for the best of the three turns; with the rule
 * below 1 upright face in 300 would be turned and 3 faces lying on their
 * side in 300 left as they are.  So the orientation is judged by the
 * cascade's raw hits on a small crop around a face (a few milliseconds),
 * and MMOD only proposes the faces.  Without the cascade file (opencv-data),
 * the judge falls back to MMOD's score and confident upright faces are
 * taken as they are. */

/* Face side (px) a judged crop is scaled to; the crop is twice that. */
#define FVI_JUDGE_SIDE 64
/* Faces smaller than this in the crop are not judged (the cascade's
 * window is 24 px). */
#define FVI_JUDGE_MIN_SIDE 30
/* A turn wins over upright with at least this many hits and more than
 * FVI_JUDGE_RATIO times upright's. */
#define FVI_JUDGE_MIN_HITS 3
#define FVI_JUDGE_RATIO 2
/* Upright with this many hits is taken as upright without judging the
 * turns (on LFW, 90% of upright faces have 16 or more; 1% of faces lying
 * on their side reach 10 upright, about as many as are misjudged anyway). */
#define FVI_JUDGE_SURE_HITS 10
/* MTCNN's smallest face in the turned passes (see find_turn). */
#define FVI_TURN_MTCNN_MIN_FACE 40
/* Pixel budget of each whole-photo turned pass (see find_turn). */
#define FVI_TURN_PIXELS (640u * 480u * 2u)

/* Maps a point of a w x h image to the image turned by orientation o (the
 * forward map of fvi_image_orient, continuous coordinates). */
static fv_point turn_point(fv_point p, int o, int w, int h) {
    switch (o) {
    case 6:
        return (fv_point){(float)h - p.y, p.x};
    case 8:
        return (fv_point){p.y, (float)w - p.x};
    case 3:
        return (fv_point){(float)w - p.x, (float)h - p.y};
    default:
        return p;
    }
}

/* A copy of img's rectangle [x0,x1) x [y0,y1) (inside img) into *out. */
static fv_status crop_image(const fv_image *img, int x0, int y0, int x1, int y1, fv_image **out) {
    fv_status st = fvi_image_alloc(x1 - x0, y1 - y0, out);
    if (st != FV_OK) return st;
    for (int y = y0; y < y1; y++)
        memcpy((*out)->rgb + (size_t)(y - y0) * (size_t)(x1 - x0) * 3,
               img->rgb + ((size_t)y * (size_t)img->width + (size_t)x0) * 3, (size_t)(x1 - x0) * 3);
    return FV_OK;
}

/* The orientation judge (see the section comment): for each turns[i],
 * hits[i] = the cascade's raw hits centred near face f of img on a crop
 * twice f's side, scaled so f is about FVI_JUDGE_SIDE px, turned by
 * turns[i] (1: upright).  *judged = 0 (hits untouched) when the face is
 * too small to judge. */
static fv_status judge_face(const fvi_haar *cascade, const fv_image *img, const fv_face *f,
                            const int *turns, size_t nt, int *hits, int *judged, fvi_workers *pool,
                            char *err, size_t errlen) {
    *judged = 0;
    float side = fmaxf(f->right - f->left, f->bottom - f->top);
    double s = side > FVI_JUDGE_SIDE ? FVI_JUDGE_SIDE / (double)side : 1.0;
    if (!(side * s >= FVI_JUDGE_MIN_SIDE)) return FV_OK;
    float cx = (f->left + f->right) / 2, cy = (f->top + f->bottom) / 2;
    int x0 = (int)fmaxf(0, floorf(cx - side)), y0 = (int)fmaxf(0, floorf(cy - side));
    int x1 = (int)fminf((float)img->width, ceilf(cx + side));
    int y1 = (int)fminf((float)img->height, ceilf(cy + side));
    if (x1 <= x0 || y1 <= y0) return FV_OK;
    fv_image *crop = NULL, *small = NULL;
    fv_status st = crop_image(img, x0, y0, x1, y1, &crop);
    int cw = (int)lround((x1 - x0) * s), ch = (int)lround((y1 - y0) * s);
    if (st == FV_OK && s < 1.0) {
        st = fvi_image_downscale(crop, cw < 1 ? 1 : cw, ch < 1 ? 1 : ch, &small);
        fv_image_destroy(crop);
        crop = small;
    }
    if (st != FV_OK) {
        fv_image_destroy(crop);
        return fvi_seterr(err, errlen, st, "cannot crop image");
    }
    float fs = side * (float)s;
    fvi_haar_params p = {1.15, 0, (int)(fs * 0.6f), (int)ceilf(fs * 1.5f)};
    fv_point c = {(float)((cx - x0) * s), (float)((cy - y0) * s)};
    for (size_t i = 0; st == FV_OK && i < nt; i++) {
        fv_image *t = NULL;
        fv_face *hf = NULL;
        size_t hn = 0;
        st = fvi_image_oriented(crop, turns[i], &t);
        if (st == FV_OK) st = fvi_haar_detect(cascade, t, &p, pool, &hf, &hn, err, errlen);
        fv_point tc = turn_point(c, turns[i], crop->width, crop->height);
        hits[i] = 0;
        for (size_t k = 0; st == FV_OK && k < hn; k++)
            if (fabsf((hf[k].left + hf[k].right) / 2 - tc.x) < fs / 2 &&
                fabsf((hf[k].top + hf[k].bottom) / 2 - tc.y) < fs / 2)
                hits[i]++;
        fvi_free(hf);
        fv_image_destroy(t);
    }
    fv_image_destroy(crop);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "orientation check failed");
    *judged = 1;
    return FV_OK;
}

/* Index of the strongest face (n > 0). */
static size_t strongest(const fv_face *f, size_t n) {
    size_t b = 0;
    for (size_t i = 1; i < n; i++)
        if (f[i].score > f[b].score) b = i;
    return b;
}

/* The cascade, or NULL (with no error) when it cannot be had. */
static const fvi_haar *judge_cascade(const fvi_detectors *d) {
    const fvi_haar *h = NULL;
    if (!d->haar || d->haar(d->haar_ctx, &h, NULL, 0) != FV_OK) return NULL;
    return h;
}

/* Decides whether img is turned, from the upright pass's faces: *turn is
 * the EXIF orientation that makes it upright (6, 8 or 3), or 0.
 *  - A confident upright face (score >= FVI_ROTATION_CONFIDENT): the
 *    judge looks at the strongest one in all four orientations, and a
 *    turn wins only with clearly more hits than upright; without the
 *    cascade, upright stands.  A few milliseconds.
 *  - No face or only weak ones: the photo is turned 90, 270 and 180
 *    degrees at a reduced scale (at most FVI_TURN_PIXELS, one MMOD pass,
 *    no upsampling) and each turn's strongest face is judged upright in
 *    its turned copy, as is upright's own weak face; the most hits win
 *    (at least FVI_JUDGE_MIN_HITS, which also keeps MMOD's rare false
 *    detections on faceless photos from turning a photo).  Without the
 *    cascade, the strongest MMOD face wins, as before.  This is the
 *    bounded worst case: three passes of at most FVI_TURN_PIXELS each.
 *    They run MMOD in FV_PRECISION_FAST (bf16, about half the time where
 *    the CPU has AVX-512 BF16, exact elsewhere) whatever the call's
 *    precision (and MTCNN from FVI_TURN_MTCNN_MIN_FACE px): they only
 *    point the judge at a face and decide the turn;
 *    the faces returned come from the policy run again on the turned
 *    photo, in the call's precision (so exact stays dlib's). */
static fv_status find_turn(const fvi_detectors *d, const fv_image *img,
                           const fv_detect_options *opt, const fv_face *faces, size_t n, int *turn,
                           char *err, size_t errlen) {
    static const int all[] = {1, 6, 8, 3};
    const fvi_haar *cascade = judge_cascade(d);
    int hits[4] = {0, 0, 0, 0}, judged = 0;
    *turn = 0;
    if (n > 0 && best_score(faces, n) >= FVI_ROTATION_CONFIDENT) {
        if (!cascade) return FV_OK;
        /* upright first: most upright faces are plainly so, and the three
         * turns are judged only when upright is in doubt */
        const fv_face *f = &faces[strongest(faces, n)];
        fv_status st = judge_face(cascade, img, f, all, 1, hits, &judged, d->pool, err, errlen);
        if (st != FV_OK || !judged || hits[0] >= FVI_JUDGE_SURE_HITS) return st;
        st = judge_face(cascade, img, f, all + 1, 3, hits + 1, &judged, d->pool, err, errlen);
        if (st != FV_OK || !judged) return st;
        int win = 0;
        for (int i = 1; i < 4; i++)
            if (hits[i] >= FVI_JUDGE_MIN_HITS && hits[i] > FVI_JUDGE_RATIO * hits[0] &&
                hits[i] > hits[win])
                win = i;
        *turn = win ? all[win] : 0;
        return FV_OK;
    }
    /* reduced copy for the turned passes */
    uint64_t px = (uint64_t)img->width * (uint64_t)img->height;
    double s = px > FVI_TURN_PIXELS ? sqrt((double)FVI_TURN_PIXELS / (double)px) : 1.0;
    int longer = img->width > img->height ? img->width : img->height;
    if (opt->max_side > 0 && longer * s > opt->max_side) s = (double)opt->max_side / longer;
    fv_image *small = NULL;
    fv_status st = FV_OK;
    if (s < 1.0) {
        int w = (int)lround(img->width * s), h = (int)lround(img->height * s);
        st = fvi_image_downscale(img, w < 1 ? 1 : w, h < 1 ? 1 : h, &small);
        if (st != FV_OK) return fvi_seterr(err, errlen, st, "cannot downscale image");
    }
    const fv_image *base = small ? small : img;
    fv_detect_options cheap = *opt;
    cheap.upsample = opt->upsample < 0 ? 0 : opt->upsample;
    cheap.max_side = 0;
    fvi_detectors quick = *d;
    quick.mmod_precision = FV_PRECISION_FAST;
    /* MTCNN's cost grows as 1 / min_face^2: like MMOD's pass without
     * upsampling, the turned passes look only for the larger faces (a
     * quarter of the work), enough to point the judge at a face */
    quick.mtcnn_min_face = FVI_TURN_MTCNN_MIN_FACE;
    float best[4] = {n > 0 ? best_score(faces, n) : -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    if (cascade && n > 0) {
        st = judge_face(cascade, img, &faces[strongest(faces, n)], all, 1, hits, &judged, d->pool,
                        err, errlen);
        if (!judged) hits[0] = 0;
    }
    for (int i = 1; st == FV_OK && i < 4; i++) {
        fv_image *t = NULL;
        fv_face *tf = NULL;
        size_t tn = 0;
        st = fvi_image_oriented(base, all[i], &t);
        if (st != FV_OK) {
            fvi_seterr(err, errlen, st, "cannot turn image");
            break;
        }
        st = detect_boxes(&quick, t, &cheap, &tf, &tn, err, errlen);
        if (st == FV_OK && tn > 0) {
            best[i] = best_score(tf, tn);
            if (cascade) {
                st = judge_face(cascade, t, &tf[strongest(tf, tn)], all, 1, &hits[i], &judged,
                                d->pool, err, errlen);
                if (!judged) hits[i] = 0;
            }
        }
        fvi_free(tf);
        fv_image_destroy(t);
    }
    fv_image_destroy(small);
    if (st != FV_OK) return st;
    int win = 0;
    for (int i = 1; i < 4; i++) {
        if (best[i] == -INFINITY) continue;
        int better =
            cascade ? hits[i] >= FVI_JUDGE_MIN_HITS && hits[i] > hits[win] : best[i] > best[win];
        if (better) win = i;
    }
    *turn = win ? all[win] : 0;
    return FV_OK;
}

/* Finds faces per the detection policy, with landmarks for the first
 * want_lm faces (in the policy's order).  With try_rotations (the
 * default), find_turn decides from the upright pass whether the photo is
 * turned; if so, the policy runs again on the photo turned upright, its
 * faces win when it finds any, and their boxes and landmarks are mapped
 * back (so the chip comes out upright).  On failure *faces is freed.
 * Times go to t->detect_ms and t->landmarks_ms (for turned images,
 * landmarks are counted in detect_ms). */
fv_status fvi_find_faces(const fvi_detectors *d, const fv_image *img,
                         const fv_detect_options *given, size_t want_lm, fv_face **faces, size_t *n,
                         fv_timings *t, char *err, size_t errlen) {
    fv_detect_options resolved = *given;
    const fv_detect_options *opt = &resolved;
    *faces = NULL;
    *n = 0;
    fv_status st0 = fvi_resolve_detect_options(d, &resolved, err, errlen);
    if (st0 != FV_OK) return st0;
    double t0 = fvi_now_ms();
    fv_status st = detect_boxes(d, img, opt, faces, n, err, errlen);
    int turn = 0;
    if (st == FV_OK && opt->try_rotations && opt->detector != FV_DETECTOR_NONE)
        st = find_turn(d, img, opt, *faces, *n, &turn, err, errlen);
    if (st == FV_OK && turn) {
        fv_face *tf = NULL;
        size_t tn = 0;
        st = detect_turned(d, img, turn, opt, want_lm, &tf, &tn, err, errlen);
        if (st == FV_OK && tn > 0) {
            fvi_free(*faces);
            *faces = tf;
            *n = tn;
            t->detect_ms = fvi_now_ms() - t0;
            t->landmarks_ms = 0;
            return FV_OK;
        }
        fvi_free(tf);
    }
    if (st != FV_OK) {
        fvi_free(*faces);
        *faces = NULL;
        *n = 0;
        return st;
    }
    double t1 = fvi_now_ms();
    t->detect_ms = t1 - t0;
    st = landmarks_for(d, img, *faces, *n < want_lm ? *n : want_lm, err, errlen);
    t->landmarks_ms = fvi_now_ms() - t1;
    return st;
}
