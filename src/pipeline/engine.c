/*
 * engine.c: the pipeline a caller sees, fv_verify and its parts.
 *
 * An engine owns the three loaded models (immutable after load) and the one
 * thread pool.  An image flows: detect (detect/policy.c decides which
 * detector runs on what: MMOD, Haar, or the whole image for
 * FV_DETECTOR_NONE) -> 5 landmarks per box (align/) -> 150x150 chip
 * (align/) -> 128-d embedding (embed/, or a trained model, model.c) ->
 * distance and decision (core/compare.c).  This file only strings those
 * steps together; no step's rules live here.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "detect/policy.h"
#include "core/paths.h"
#include "core/fvi.h"
#include "nn/nn.h"
#include "pipeline/pipeline.h"

#ifndef FV_CALIBRATED_THRESHOLD
#define FV_CALIBRATED_THRESHOLD 0.6f
#endif
#ifndef FV_CALIBRATED_THRESHOLD_FLIP_MEAN
#define FV_CALIBRATED_THRESHOLD_FLIP_MEAN 0.6f
#endif
#ifndef FV_CALIBRATED_THRESHOLD_FLIP_UNIT
#define FV_CALIBRATED_THRESHOLD_FLIP_UNIT 0.42f
#endif

static const char *const MODEL_DETECTOR = "mmod_human_face_detector.dat";
static const char *const MODEL_MTCNN = "mtcnn.bin"; /* optional: see fv_config */
static const char *const MODEL_LANDMARKS = "shape_predictor_5_face_landmarks.dat";
static const char *const MODEL_RESNET = "dlib_face_recognition_resnet_model_v1.dat";

void fv_config_init(fv_config *cfg) {
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    fv_limits_init(&cfg->limits);
}

void fv_verify_options_init(fv_verify_options *opt) {
    if (!opt) return;
    fv_detect_options_init(&opt->detect);
    opt->threshold = 0.0f;
    opt->strict = 0;
    opt->model = NULL;
    opt->fmr = 0.0;
}

/* Picks the models folder: the config, then $FACEVERIFY_MODELS, then the
 * build tree's or the install prefix's (core/paths.h states the order). */
static const char *models_dir(const fv_config *cfg) {
    return fvi_models_dir(cfg ? cfg->models_dir : NULL);
}

const char *fv_models_dir(const char *configured) {
    return fvi_models_dir(configured);
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
    if (cfg.jitters < 0 || cfg.jitters > FV_MAX_JITTERS) {
        fvi_free(eng);
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "jitters must be 0..%d",
                          FV_MAX_JITTERS);
    }
    eng->jitters = cfg.jitters;
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
        eng->haar_load.path = fvi_strdup(hp);
        if (cfg.mtcnn_model && *cfg.mtcnn_model)
            snprintf(hp, sizeof hp, "%s", cfg.mtcnn_model);
        else
            snprintf(hp, sizeof hp, "%s/%s", dir, MODEL_MTCNN);
        eng->mtcnn_load.path = fvi_strdup(hp);
        eng->lazy_lock_ok = pthread_mutex_init(&eng->lazy_lock, NULL) == 0;
        if (!eng->haar_load.path || !eng->mtcnn_load.path || !eng->lazy_lock_ok) {
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
        eng->pool = fvi_workers_create(threads);
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
    fvi_workers_destroy(eng->pool);
    fvi_mmod_destroy(eng->mmod);
    fvi_shape_predictor_destroy(eng->sp);
    fvi_resnet_destroy(eng->resnet);
    fvi_haar_destroy(eng->haar);
    fvi_mtcnn_destroy(eng->mtcnn);
    fvi_free(eng->haar_load.path);
    fvi_free(eng->mtcnn_load.path);
    if (eng->lazy_lock_ok) pthread_mutex_destroy(&eng->lazy_lock);
    fvi_free(eng);
}

float fv_engine_threshold(const fv_engine *eng) {
    return eng ? eng->threshold : 0.0f;
}

int fv_engine_threads(const fv_engine *eng) {
    return eng ? fvi_workers_size(eng->pool) : 0;
}

/* Loads l's model with load (into the engine, at dst) on the first call,
 * under the engine's lazy_lock (thread-safe).  A failed load is remembered
 * and reported on every call (except running out of memory: retried). */
static fv_status lazy_get(fv_engine *eng, fvi_lazy *l,
                          fv_status (*load)(fv_engine *eng, const char *path, char *e, size_t el),
                          char *err, size_t errlen) {
    pthread_mutex_lock(&eng->lazy_lock);
    if (!l->tried) {
        l->status = load(eng, l->path, l->err, sizeof l->err);
        l->tried = l->status != FV_E_NO_MEMORY;
    }
    fv_status st = l->status;
    pthread_mutex_unlock(&eng->lazy_lock);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "%s", l->err);
    return FV_OK;
}

static fv_status load_haar(fv_engine *eng, const char *path, char *err, size_t errlen) {
    return fvi_haar_load(path, &eng->haar, err, errlen);
}

static fv_status load_mtcnn(fv_engine *eng, const char *path, char *err, size_t errlen) {
    return fvi_mtcnn_load(path, &eng->mtcnn, err, errlen);
}

/* fvi_haar_get_fn for the policy: the engine's Haar cascade, loaded on the
 * first call.  ctx: the engine (only the lazily loaded models change). */
static fv_status engine_haar(void *ctx, const fvi_haar **out, char *err, size_t errlen) {
    fv_engine *eng = ctx;
    fv_status st = lazy_get(eng, &eng->haar_load, load_haar, err, errlen);
    *out = eng->haar;
    return st;
}

/* fvi_mtcnn_get_fn for the policy: the engine's MTCNN, loaded on the first
 * call.  ctx: the engine. */
static fv_status engine_mtcnn(void *ctx, const fvi_mtcnn **out, char *err, size_t errlen) {
    fv_engine *eng = ctx;
    fv_status st = lazy_get(eng, &eng->mtcnn_load, load_mtcnn, err, errlen);
    *out = eng->mtcnn;
    return st;
}

/* fvi_landmarks_fn for the policy: the shape predictor on the first k
 * faces.  ctx: the engine. */
static fv_status engine_landmarks(const void *ctx, const fv_image *img, fv_face *faces, size_t k,
                                  char *err, size_t errlen) {
    const fv_engine *eng = ctx;
    for (size_t i = 0; i < k; i++) {
        fv_status st = fvi_shape_predict(eng->sp, img, &faces[i], faces[i].landmarks);
        if (st != FV_OK) return fvi_seterr(err, errlen, st, "landmark prediction failed");
    }
    return FV_OK;
}

/* The engine's detectors for a call in precision p. */
static fvi_detectors detectors(const fv_engine *eng, int precision) {
    /* non-const context: the lazy getters may load a model into the
     * engine, the one thing that changes after creation (under lazy_lock) */
    fvi_detectors d = {eng->mmod, engine_haar, (void *)eng,  engine_landmarks, eng,
                       eng->pool, precision,   engine_mtcnn, (void *)eng,      0};
    return d;
}

fv_status fv_detect_options_resolve(const fv_engine *eng, fv_detect_options *opt, char *err,
                                    size_t errlen) {
    if (!eng || !opt) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    fvi_detectors d = detectors(eng, opt->precision);
    return fvi_resolve_detect_options(&d, opt, err, errlen);
}

/* Runs the detection policy with the engine's detectors (see
 * fvi_find_faces). */
static fv_status find_faces(const fv_engine *eng, const fv_image *img, const fv_detect_options *opt,
                            size_t want_lm, fv_face **faces, size_t *n, fv_timings *t, char *err,
                            size_t errlen) {
    fvi_detectors d = detectors(eng, opt->precision);
    return fvi_find_faces(&d, img, opt, want_lm, faces, n, t, err, errlen);
}

/* FV_OK for a usable image (pixels set, positive size). */
static fv_status check_image(const fv_image *img, char *err, size_t errlen) {
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "invalid image");
    return FV_OK;
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

/* The one body behind fv_embed_face and fv_model_embed_face (model m, NULL
 * for the ResNet): the policy's faces with landmarks for the face used
 * only, its chip, its embedding; every step timed, every error with a
 * message. */
fv_status fv_model_embed_face(const fv_engine *eng, const fv_model *m, const fv_image *img,
                              const fv_detect_options *given, int strict, fv_face_result *out,
                              char *err, size_t errlen) {
    fv_detect_options resolved;
    const fv_detect_options *opt = &resolved;
    if (!eng || !out) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    fv_status st = check_image(img, err, errlen);
    if (st != FV_OK) return st;
    if (given)
        resolved = *given;
    else
        fv_detect_options_init(&resolved);
    /* the detector in force, for the quality measure's score scale */
    st = fv_detect_options_resolve(eng, &resolved, err, errlen);
    if (st != FV_OK) return st;
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

    st = fvi_model_embed(eng, m, chip, 1, out->embedding, err, errlen);
    out->timings.embed_ms = fvi_now_ms() - t3;
    if (st == FV_OK) st = fv_face_quality(&out->face, opt->detector, chip, &out->quality);
    return st;
}

fv_status fv_embed_face(const fv_engine *eng, const fv_image *img, const fv_detect_options *opt,
                        int strict, fv_face_result *out, char *err, size_t errlen) {
    return fv_model_embed_face(eng, NULL, img, opt, strict, out, err, errlen);
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
    const fv_model *m = opt->model;
    out->model = m ? m->meta.id : FV_MODEL_ID;
    fv_detect_options detect = opt->detect;
    fv_status rst = fv_detect_options_resolve(eng, &detect, err, errlen);
    if (rst != FV_OK) return rst;
    out->detector = fv_detector_name(detect.detector);
    if (!out->detector) return fvi_seterr(err, errlen, FV_E_UNSUPPORTED, "unknown detector");
    if (opt->fmr != 0 && opt->threshold > 0)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT,
                          "give a threshold or an fmr, not both");
    /* the calibration's model: the ResNet's only without flip averaging
     * or jitter, which move distances (fv_fmr_threshold refuses other ids) */
    int tta = eng->flip != FV_FLIP_NONE || eng->jitters > 0;
    const char *cal_id = m ? m->meta.id : tta ? "dlib_resnet_v1+tta" : NULL;
    float probe;
    if (opt->fmr != 0) {
        fv_status cst = fv_fmr_threshold(cal_id, opt->fmr, 1.0f, &probe);
        if (cst == FV_E_UNSUPPORTED)
            return fvi_seterr(err, errlen, cst, "no false-match-rate calibration for model %s%s",
                              out->model, m ? "" : " with flip averaging or jitter");
        if (cst != FV_OK)
            return fvi_seterr(err, errlen, cst, "fmr %g outside %g..%g", opt->fmr, FV_FMR_MIN,
                              FV_FMR_MAX);
    }
    char sub[200];
    fv_status st = fv_model_embed_face(eng, m, a, &detect, opt->strict, &out->a, sub, sizeof sub);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "image a: %s", sub);
    st = fv_model_embed_face(eng, m, b, &detect, opt->strict, &out->b, sub, sizeof sub);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "image b: %s", sub);
    out->threshold = opt->threshold > 0 ? opt->threshold : m ? m->meta.threshold : eng->threshold;
    out->distance = fv_distance(out->a.embedding, out->b.embedding);
    float q = fv_pair_quality(out->a.quality.score, out->b.quality.score);
    out->fmr = opt->fmr;
    if (opt->fmr != 0 && fv_fmr_threshold(cal_id, opt->fmr, q, &out->threshold) != FV_OK)
        return fvi_seterr(err, errlen, FV_E_INTERNAL, "calibration lookup failed");
    if (fv_estimated_fmr(cal_id, out->distance, q, &out->estimated_fmr) != FV_OK)
        out->estimated_fmr = -1;
    out->similarity = fv_similarity(out->distance, out->threshold);
    out->verified = out->distance <= out->threshold;
    out->total_ms = fvi_now_ms() - t0;
    return FV_OK;
}
