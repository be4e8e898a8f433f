/*
 * engine.c: the pipeline a caller sees, fv_verify and its parts.
 *
 * An engine owns the three loaded models (immutable after load) and the one
 * thread pool.  An image flows: detect (detect/: MMOD, or the whole image
 * for FV_DETECTOR_NONE) -> 5 landmarks per box (align/) -> 150x150 chip
 * (align/) -> 128-d embedding (embed/) -> distance and decision (here).
 *
 * Detection policy (stated in the README):
 *  - photos whose longer side exceeds opt->max_side (default 1600 px) are
 *    downscaled with an area filter for MMOD only; boxes are mapped back and
 *    landmarks and chips are computed on the full-resolution image;
 *  - upsample -1 (auto) runs MMOD once at the given scale and, only when it
 *    finds nothing or only weak faces (score < FV_WEAK_SCORE) and doubling
 *    the image stays under FV_AUTO_UPSAMPLE_PIXELS, once more on the image
 *    doubled (finds faces down to ~40 px); the pass with the strongest face
 *    wins;
 *  - faces are ordered largest first (or nearest the image centre first with
 *    FV_ORDER_CENTER); the "face used" is the first;
 *  - try_rotations: see find_faces.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "align/align.h"
#include "detect/detect.h"
#include "detect/haar.h"
#include "embed/embed.h"
#include "fvi.h"
#include "image/image.h"
#include "image/resize.h"
#include "nn/nn.h"
#include "paths.h"
#include "pool.h"

#ifndef FV_CALIBRATED_THRESHOLD
#define FV_CALIBRATED_THRESHOLD 0.6f
#endif
#ifndef FV_CALIBRATED_THRESHOLD_FLIP_MEAN
#define FV_CALIBRATED_THRESHOLD_FLIP_MEAN 0.6f
#endif
#ifndef FV_CALIBRATED_THRESHOLD_FLIP_UNIT
#define FV_CALIBRATED_THRESHOLD_FLIP_UNIT 0.42f
#endif

#define FV_AUTO_UPSAMPLE_PIXELS (6u * 1000u * 1000u)
#define FV_DEFAULT_MAX_SIDE 1600
#define FV_ROTATION_CONFIDENT 0.9f
#define FV_WEAK_SCORE 0.5f

static const char *const MODEL_DETECTOR = "mmod_human_face_detector.dat";
static const char *const MODEL_LANDMARKS = "shape_predictor_5_face_landmarks.dat";
static const char *const MODEL_RESNET = "dlib_face_recognition_resnet_model_v1.dat";

struct fv_engine {
    fvi_mmod *mmod;
    fvi_shape_predictor *sp;
    fvi_resnet *resnet;
    fvi_pool *pool;
    float threshold;
    fv_flip flip;
    fv_limits limits;
    /* Haar cascade, loaded on first use under haar_lock (so engines of
     * users who never ask for haar neither pay for nor fail on it); the
     * outcome, good or bad, is kept and reported on every haar request. */
    pthread_mutex_t haar_lock;
    int haar_lock_ok;
    int haar_tried;
    fv_status haar_status;
    char haar_err[256];
    char *haar_path;
    fvi_haar *haar;
};

void fv_config_init(fv_config *cfg) {
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    fv_limits_init(&cfg->limits);
}

void fv_detect_options_init(fv_detect_options *opt) {
    if (!opt) return;
    opt->detector = FV_DETECTOR_MMOD;
    opt->upsample = -1;
    opt->max_side = FV_DEFAULT_MAX_SIDE;
    opt->min_score = 0.0f;
    opt->try_rotations = 0;
    opt->order = FV_ORDER_LARGEST;
    opt->haar_scale_factor = 1.1f;
    opt->haar_min_neighbors = 3;
    opt->haar_min_size = 0;
    opt->haar_max_size = 0;
}

void fv_verify_options_init(fv_verify_options *opt) {
    if (!opt) return;
    fv_detect_options_init(&opt->detect);
    opt->threshold = 0.0f;
    opt->strict = 0;
}

static const char *const detector_names[] = {"mmod", "none", "haar"};

const char *fv_detector_name(fv_detector d) {
    if ((int)d < 0 || (size_t)d >= sizeof detector_names / sizeof *detector_names) return NULL;
    return detector_names[d];
}

fv_status fv_detector_parse(const char *name, fv_detector *out) {
    if (!name || !out) return FV_E_INVALID_ARGUMENT;
    for (size_t i = 0; i < sizeof detector_names / sizeof *detector_names; i++)
        if (strcmp(name, detector_names[i]) == 0) {
            *out = (fv_detector)i;
            return FV_OK;
        }
    return FV_E_UNSUPPORTED;
}

/* Picks the models folder: the config, then $FACEVERIFY_MODELS, then the
 * build tree's or the install prefix's (core/paths.h states the order). */
static const char *models_dir(const fv_config *cfg) {
    return fvi_models_dir(cfg ? cfg->models_dir : NULL);
}

fv_status fv_engine_create(const fv_config *cfg_in, fv_engine **out, char *err, size_t errlen) {
    if (!out) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    fv_config cfg;
    if (cfg_in)
        cfg = *cfg_in;
    else
        fv_config_init(&cfg);
    if (cfg.threads < 0 || cfg.threads > 256)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "threads must be 0..256");
    const char *dir = models_dir(&cfg);
    char path[4096];
    fv_status st;
    fv_engine *eng = fvi_calloc(1, sizeof *eng);
    if (!eng) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
    eng->limits = cfg.limits;
    if (!eng->limits.max_input_bytes) eng->limits.max_input_bytes = FV_DEFAULT_MAX_INPUT_BYTES;
    if (!eng->limits.max_pixels) eng->limits.max_pixels = FV_DEFAULT_MAX_PIXELS;
    if (cfg.flip < FV_FLIP_NONE || cfg.flip > FV_FLIP_UNIT) {
        fvi_free(eng);
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "flip must be 0..2");
    }
    eng->flip = cfg.flip;
    /* each flip mode changes the distances, so each has its own calibration */
    eng->threshold = cfg.threshold > 0          ? cfg.threshold
                     : cfg.flip == FV_FLIP_MEAN ? FV_CALIBRATED_THRESHOLD_FLIP_MEAN
                     : cfg.flip == FV_FLIP_UNIT ? FV_CALIBRATED_THRESHOLD_FLIP_UNIT
                                                : FV_CALIBRATED_THRESHOLD;
    {
        char hp[4096];
        const char *cdir = getenv("FACEVERIFY_CASCADES");
        if (cfg.haar_cascade && *cfg.haar_cascade)
            snprintf(hp, sizeof hp, "%s", cfg.haar_cascade);
        else
            snprintf(hp, sizeof hp, "%s/haarcascade_frontalface_default.xml",
                     cdir && *cdir ? cdir : "/usr/share/opencv4/haarcascades");
        eng->haar_path = fvi_strdup(hp);
        eng->haar_lock_ok = pthread_mutex_init(&eng->haar_lock, NULL) == 0;
        if (!eng->haar_path || !eng->haar_lock_ok) {
            fv_engine_destroy(eng);
            return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
        }
    }

    fvi_nn_init();
    snprintf(path, sizeof path, "%s/%s", dir, MODEL_DETECTOR);
    st = fvi_mmod_load(path, &eng->mmod, err, errlen);
    if (st == FV_OK) {
        snprintf(path, sizeof path, "%s/%s", dir, MODEL_LANDMARKS);
        st = fvi_shape_predictor_load(path, &eng->sp, err, errlen);
    }
    if (st == FV_OK) {
        snprintf(path, sizeof path, "%s/%s", dir, MODEL_RESNET);
        st = fvi_resnet_load(path, &eng->resnet, err, errlen);
    }
    if (st == FV_OK) {
        int threads = cfg.threads;
        if (threads == 0) {
            long n = sysconf(_SC_NPROCESSORS_ONLN);
            threads = n < 1 ? 1 : n > 64 ? 64 : (int)n;
        }
        eng->pool = fvi_pool_create(threads);
        if (!eng->pool) st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "cannot start thread pool");
    }
    if (st != FV_OK) {
        fv_engine_destroy(eng);
        return st;
    }
    *out = eng;
    return FV_OK;
}

void fv_engine_destroy(fv_engine *eng) {
    if (!eng) return;
    fvi_pool_destroy(eng->pool);
    fvi_mmod_destroy(eng->mmod);
    fvi_shape_predictor_destroy(eng->sp);
    fvi_resnet_destroy(eng->resnet);
    fvi_haar_destroy(eng->haar);
    fvi_free(eng->haar_path);
    if (eng->haar_lock_ok) pthread_mutex_destroy(&eng->haar_lock);
    fvi_free(eng);
}

float fv_engine_threshold(const fv_engine *eng) {
    return eng ? eng->threshold : 0.0f;
}

/* For the trained-model embedder (src/train/model.c), which runs on the
 * engine's pool like the ResNet does. */
fvi_pool *fvi_engine_pool(const fv_engine *eng) {
    return eng ? eng->pool : NULL;
}

int fv_engine_threads(const fv_engine *eng) {
    return eng ? fvi_pool_size(eng->pool) : 0;
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
typedef fv_status (*box_fn)(const fv_engine *eng, const fv_image *img, double scale,
                            const void *ctx, fv_face **faces, size_t *n, char *err, size_t errlen);

/* Runs fn on img, or, when img's longer side exceeds max_side (> 0), on a
 * copy shrunk to that side with an area filter, mapping the boxes back to
 * img's coordinates.  The one home of the large-photo policy. */
static fv_status detect_scaled(const fv_engine *eng, const fv_image *img, int max_side, box_fn fn,
                               const void *ctx, fv_face **faces, size_t *n, char *err,
                               size_t errlen) {
    int longer = img->width > img->height ? img->width : img->height;
    if (max_side <= 0 || longer <= max_side) return fn(eng, img, 1.0, ctx, faces, n, err, errlen);
    double s = (double)max_side / longer;
    int w = (int)lround(img->width * s), h = (int)lround(img->height * s);
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    fv_image *small = NULL;
    fv_status st = fvi_image_downscale(img, w, h, &small);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "cannot downscale image");
    st = fn(eng, small, s, ctx, faces, n, err, errlen);
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
static fv_status mmod_run(const fv_engine *eng, const fv_image *img, double scale, const void *ctx,
                          fv_face **faces, size_t *n, char *err, size_t errlen) {
    FVI_UNUSED(scale);
    return fvi_mmod_detect(eng->mmod, img, *(const int *)ctx, eng->pool, faces, n, err, errlen);
}

/* Runs MMOD at one upsampling level under the max_side policy. */
static fv_status mmod_boxes(const fv_engine *eng, const fv_image *img, int upsample, int max_side,
                            fv_face **faces, size_t *n, char *err, size_t errlen) {
    return detect_scaled(eng, img, max_side, mmod_run, &upsample, faces, n, err, errlen);
}

/* The engine's Haar cascade, loading it on the first call (thread-safe).
 * A failed load is remembered and reported on every call. */
static fv_status engine_haar(const fv_engine *ceng, const fvi_haar **out, char *err,
                             size_t errlen) {
    fv_engine *eng = (fv_engine *)ceng; /* only the lazily loaded cascade changes */
    pthread_mutex_lock(&eng->haar_lock);
    if (!eng->haar_tried) {
        eng->haar_status =
            fvi_haar_load(eng->haar_path, &eng->haar, eng->haar_err, sizeof eng->haar_err);
        eng->haar_tried = eng->haar_status != FV_E_NO_MEMORY; /* retry after OOM */
    }
    fv_status st = eng->haar_status;
    *out = eng->haar;
    pthread_mutex_unlock(&eng->haar_lock);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "%s", eng->haar_err);
    return FV_OK;
}

typedef struct {
    const fvi_haar *cascade;
    fvi_haar_params params;
} haar_ctx;

/* box_fn for Haar: face size limits shrink with the image. */
static fv_status haar_run(const fv_engine *eng, const fv_image *img, double scale, const void *ctx,
                          fv_face **faces, size_t *n, char *err, size_t errlen) {
    const haar_ctx *hc = ctx;
    fvi_haar_params p = hc->params;
    if (scale < 1.0) {
        p.min_size = (int)(p.min_size * scale);
        p.max_size = p.max_size > 0 ? (int)ceil(p.max_size * scale) : 0;
    }
    return fvi_haar_detect(hc->cascade, img, &p, eng->pool, faces, n, err, errlen);
}

/* Runs the Haar cascade under the max_side policy and returns boxes in
 * img's coordinates, mapped to dlib's box convention for the shape
 * predictor. */
static fv_status haar_boxes(const fv_engine *eng, const fv_image *img, const fv_detect_options *opt,
                            fv_face **faces, size_t *n, char *err, size_t errlen) {
    haar_ctx hc;
    fv_status st = engine_haar(eng, &hc.cascade, err, errlen);
    if (st != FV_OK) return st;
    /* the option is a float; round it to 6 decimals so that 1.1f scans
     * exactly the pyramid of OpenCV's (double) 1.1 */
    hc.params = (fvi_haar_params){round((double)opt->haar_scale_factor * 1e6) / 1e6,
                                  opt->haar_min_neighbors, opt->haar_min_size, opt->haar_max_size};
    st = detect_scaled(eng, img, opt->max_side, haar_run, &hc, faces, n, err, errlen);
    if (st != FV_OK) return st;
    for (size_t i = 0; i < *n; i++) fvi_haar_box_to_dlib(&(*faces)[i]);
    return FV_OK;
}

/* Detects boxes (no landmarks) per the policy in the file comment.  *faces
 * is fvi_malloc'ed (NULL when none). */
static fv_status detect_boxes(const fv_engine *eng, const fv_image *img,
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
    int up = opt->upsample < 0 ? 0 : opt->upsample;
    fv_status st = opt->detector == FV_DETECTOR_HAAR
                       ? haar_boxes(eng, img, opt, faces, n, err, errlen)
                       : mmod_boxes(eng, img, up, opt->max_side, faces, n, err, errlen);
    if (st == FV_OK && opt->detector == FV_DETECTOR_MMOD && opt->upsample < 0 &&
        (*n == 0 || best_score(*faces, *n) < FV_WEAK_SCORE)) {
        uint64_t px = (uint64_t)img->width * (uint64_t)img->height * 4u;
        int longer = img->width > img->height ? img->width : img->height;
        if (px <= FV_AUTO_UPSAMPLE_PIXELS && (opt->max_side <= 0 || longer <= opt->max_side)) {
            fv_face *uf = NULL;
            size_t un = 0;
            st = mmod_boxes(eng, img, 1, 0, &uf, &un, err, errlen);
            if (st == FV_OK && un > 0 && (*n == 0 || best_score(uf, un) > best_score(*faces, *n))) {
                fvi_free(*faces);
                *faces = uf;
                *n = un;
            } else {
                fvi_free(uf);
            }
        }
    }
    if (st != FV_OK) return st;
    /* drop low scores in place */
    size_t k = 0;
    for (size_t i = 0; i < *n; i++)
        if ((*faces)[i].score >= opt->min_score) (*faces)[k++] = (*faces)[i];
    *n = k;
    order_faces(*faces, *n, opt->order, img->width / 2.0f, img->height / 2.0f);
    return FV_OK;
}

static fv_status check_image(const fv_image *img, char *err, size_t errlen) {
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "invalid image");
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

/* Predicts landmarks for the first k faces. */
static fv_status landmarks_for(const fv_engine *eng, const fv_image *img, fv_face *faces, size_t k,
                               char *err, size_t errlen) {
    for (size_t i = 0; i < k; i++) {
        fv_status st = fvi_shape_predict(eng->sp, img, &faces[i], faces[i].landmarks);
        if (st != FV_OK) return fvi_seterr(err, errlen, st, "landmark prediction failed");
    }
    return FV_OK;
}

/* Detects in img turned by orientation o; on success the faces (with
 * landmarks for the first want_lm) are in original coordinates. */
static fv_status detect_turned(const fv_engine *eng, const fv_image *img, int o,
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
    st = detect_boxes(eng, turned, opt, faces, n, err, errlen);
    if (st == FV_OK)
        st = landmarks_for(eng, turned, *faces, *n < want_lm ? *n : want_lm, err, errlen);
    if (st == FV_OK)
        for (size_t i = 0; i < *n; i++) unrotate_face(&(*faces)[i], o, img->width, img->height);
    fv_image_destroy(turned);
    return st;
}

/* Finds faces per the detection policy, with landmarks for the first
 * want_lm faces (largest first).  With try_rotations, when the upright pass
 * finds nothing or only weak faces (score below FV_ROTATION_CONFIDENT: a
 * face lying on its side often gives a weak upright detection), the turned
 * images are tried too and the orientation with the strongest face wins.
 * *faces is fvi_malloc'ed; times go to t->detect_ms and t->landmarks_ms
 * (for turned images, landmarks are counted in detect_ms). */
static fv_status find_faces(const fv_engine *eng, const fv_image *img, const fv_detect_options *opt,
                            size_t want_lm, fv_face **faces, size_t *n, fv_timings *t, char *err,
                            size_t errlen) {
    double t0 = fvi_now_ms();
    fv_status st = detect_boxes(eng, img, opt, faces, n, err, errlen);
    if (st != FV_OK) return st;
    if (opt->try_rotations && opt->detector != FV_DETECTOR_NONE &&
        (*n == 0 || best_score(*faces, *n) < FV_ROTATION_CONFIDENT)) {
        static const int turns[] = {6, 8, 3};
        int winner = 0;
        for (size_t r = 0; r < sizeof turns / sizeof *turns; r++) {
            fv_face *tf = NULL;
            size_t tn = 0;
            st = detect_turned(eng, img, turns[r], opt, want_lm, &tf, &tn, err, errlen);
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
    st = landmarks_for(eng, img, *faces, *n < want_lm ? *n : want_lm, err, errlen);
    t->landmarks_ms = fvi_now_ms() - t1;
    return st;
}

fv_status fv_detect(const fv_engine *eng, const fv_image *img, const fv_detect_options *opt,
                    fv_face *faces, size_t cap, size_t *count, char *err, size_t errlen) {
    fv_detect_options defaults;
    if (!eng || !count || (cap && !faces))
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    fv_status st = check_image(img, err, errlen);
    if (st != FV_OK) return st;
    if (!opt) {
        fv_detect_options_init(&defaults);
        opt = &defaults;
    }
    fv_face *found = NULL;
    size_t n = 0;
    fv_timings t;
    st = find_faces(eng, img, opt, cap, &found, &n, &t, err, errlen);
    if (st == FV_OK)
        for (size_t i = 0; i < n && i < cap; i++) faces[i] = found[i];
    fvi_free(found);
    *count = st == FV_OK ? n : 0;
    return st;
}

fv_status fv_face_landmarks(const fv_engine *eng, const fv_image *img, fv_face *face) {
    if (!eng || !face || check_image(img, NULL, 0) != FV_OK) return FV_E_INVALID_ARGUMENT;
    return fvi_shape_predict(eng->sp, img, face, face->landmarks);
}

fv_status fv_face_chip(const fv_engine *eng, const fv_image *img, const fv_face *face,
                       unsigned char *chip) {
    if (!eng || !face || !chip || check_image(img, NULL, 0) != FV_OK) return FV_E_INVALID_ARGUMENT;
    return fvi_face_chip(img, face->landmarks, FV_CHIP_SIZE, 0.25, chip);
}

fv_status fv_embed_chips(const fv_engine *eng, const unsigned char *chips, size_t n, float *out,
                         char *err, size_t errlen) {
    if (!eng || (n && (!chips || !out)))
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    if (n == 0) return FV_OK;
    return fvi_resnet_embed(eng->resnet, chips, n, eng->pool, out, err, errlen);
}

/* Embeds one chip into emb under the engine's flip policy: with a flip
 * mode the chip and its horizontal mirror go through the network as one
 * batch of 2 and their embeddings are averaged (and, for FV_FLIP_UNIT,
 * rescaled to unit length).  A face and its mirror image are the same
 * person, so averaging cancels part of the network's left/right noise. */
static fv_status embed_chip(const fv_engine *eng, const unsigned char *chip, float *emb, char *err,
                            size_t errlen) {
    if (eng->flip == FV_FLIP_NONE)
        return fvi_resnet_embed(eng->resnet, chip, 1, eng->pool, emb, err, errlen);
    enum { ROW = FV_CHIP_SIZE * 3, CHIP = FV_CHIP_SIZE * ROW };
    unsigned char *two = fvi_malloc(2 * CHIP);
    if (!two) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
    memcpy(two, chip, CHIP);
    for (int y = 0; y < FV_CHIP_SIZE; y++)
        for (int x = 0; x < FV_CHIP_SIZE; x++)
            memcpy(two + CHIP + y * ROW + x * 3, chip + y * ROW + (FV_CHIP_SIZE - 1 - x) * 3, 3);
    float e[2 * FV_EMBED_DIM];
    fv_status st = fvi_resnet_embed(eng->resnet, two, 2, eng->pool, e, err, errlen);
    fvi_free(two);
    if (st != FV_OK) return st;
    double norm = 0;
    for (int i = 0; i < FV_EMBED_DIM; i++) {
        emb[i] = 0.5f * (e[i] + e[FV_EMBED_DIM + i]);
        norm += (double)emb[i] * emb[i];
    }
    if (eng->flip == FV_FLIP_UNIT && norm > 0) {
        float inv = (float)(1.0 / sqrt(norm));
        for (int i = 0; i < FV_EMBED_DIM; i++) emb[i] *= inv;
    }
    return FV_OK;
}

fv_status fv_embed_face(const fv_engine *eng, const fv_image *img, const fv_detect_options *opt,
                        int strict, fv_face_result *out, char *err, size_t errlen) {
    fv_detect_options defaults;
    if (!eng || !out) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    fv_status st = check_image(img, err, errlen);
    if (st != FV_OK) return st;
    if (!opt) {
        fv_detect_options_init(&defaults);
        opt = &defaults;
    }
    memset(out, 0, sizeof *out); /* decode_ms is the caller's to fill */

    fv_face *found = NULL;
    size_t n = 0;
    st = find_faces(eng, img, opt, 1, &found, &n, &out->timings, err, errlen);
    out->faces = n;
    if (st != FV_OK) {
        fvi_free(found);
        return st;
    }
    if (n == 0) {
        fvi_free(found);
        return fvi_seterr(err, errlen, FV_E_NO_FACE, "no face found");
    }
    if (n > 1 && strict) {
        fvi_free(found);
        return fvi_seterr(err, errlen, FV_E_MULTIPLE_FACES, "%zu faces found, strict mode", n);
    }
    out->face = found[0]; /* largest first, with landmarks */
    fvi_free(found);

    double t2 = fvi_now_ms();
    unsigned char chip[FV_CHIP_SIZE * FV_CHIP_SIZE * 3];
    st = fvi_face_chip(img, out->face.landmarks, FV_CHIP_SIZE, 0.25, chip);
    double t3 = fvi_now_ms();
    out->timings.chip_ms = t3 - t2;
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "chip extraction failed");

    st = embed_chip(eng, chip, out->embedding, err, errlen);
    out->timings.embed_ms = fvi_now_ms() - t3;
    return st;
}

float fv_distance(const float *a, const float *b) {
    if (!a || !b) return NAN;
    double s = 0;
    for (int i = 0; i < FV_EMBED_DIM; i++) {
        double d = (double)a[i] - b[i];
        s += d * d;
    }
    return (float)sqrt(s);
}

float fv_similarity(float distance, float threshold) {
    if (isnan(distance)) return 0.0f;
    double z = ((double)distance - threshold) / 0.05;
    if (z > 80) return 0.0f;
    if (z < -80) return 1.0f;
    return (float)(1.0 / (1.0 + exp(z)));
}

fv_status fv_verify(const fv_engine *eng, const fv_image *a, const fv_image *b,
                    const fv_verify_options *opt, fv_verify_result *out, char *err, size_t errlen) {
    fv_verify_options defaults;
    if (!eng || !out) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    if (!opt) {
        fv_verify_options_init(&defaults);
        opt = &defaults;
    }
    double t0 = fvi_now_ms();
    memset(out, 0, sizeof *out);
    out->model = FV_MODEL_ID;
    out->detector = fv_detector_name(opt->detect.detector);
    if (!out->detector) return fvi_seterr(err, errlen, FV_E_UNSUPPORTED, "unknown detector");
    char sub[200];
    fv_status st = fv_embed_face(eng, a, &opt->detect, opt->strict, &out->a, sub, sizeof sub);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "image a: %s", sub);
    st = fv_embed_face(eng, b, &opt->detect, opt->strict, &out->b, sub, sizeof sub);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "image b: %s", sub);
    out->threshold = opt->threshold > 0 ? opt->threshold : eng->threshold;
    out->distance = fv_distance(out->a.embedding, out->b.embedding);
    out->similarity = fv_similarity(out->distance, out->threshold);
    out->verified = out->distance <= out->threshold;
    out->total_ms = fvi_now_ms() - t0;
    return FV_OK;
}
