/*
 * policy.h: the detection policy, which detector runs on which image.
 *
 * The detectors themselves (mmod.h, haar.h) find boxes in one image at one
 * scale.  The policy decides, per fv_detect_options, which detector runs
 * (MMOD, Haar, or none: the whole image), on what (large photos shrunk to
 * max_side; with upsample auto, the scale policy of scales.h: a base pass
 * and MMOD on crops around Haar proposals for small faces; turned copies
 * with try_rotations, on by default), which scores survive, and in what
 * order faces come.  The Haar getter also serves the scale policy's
 * proposals and try_rotations' orientation check; it may fail (no cascade
 * file), and those are then skipped.
 *
 * The policy owns no model: the caller (the pipeline) hands it the loaded
 * detectors in an fvi_detectors, so detect/ never depends on the pipeline.
 * Landmarks are the caller's too (align/ sits beside detect/, not below
 * it): with try_rotations the landmarks of a turned image must be found
 * before the faces are turned back, so the policy calls the caller's
 * landmarks function at that point.
 */
#ifndef FVI_DETECT_POLICY_H
#define FVI_DETECT_POLICY_H

#include <stddef.h>

#include "detect/haar.h"
#include "detect/mmod.h"
#include "detect/mtcnn.h"
#include "faceverify.h"
#include "core/workers.h"

/* Returns the Haar cascade (loading it on first use); may fail, with a
 * message, when the cascade file is missing or bad. */
typedef fv_status (*fvi_haar_get_fn)(void *ctx, const fvi_haar **out, char *err, size_t errlen);

/* Returns the MTCNN model (loading it on first use); may fail, with a
 * message, when mtcnn.bin is missing or bad. */
typedef fv_status (*fvi_mtcnn_get_fn)(void *ctx, const fvi_mtcnn **out, char *err, size_t errlen);

/* Fills faces[0..k-1].landmarks for boxes found in img. */
typedef fv_status (*fvi_landmarks_fn)(const void *ctx, const fv_image *img, fv_face *faces,
                                      size_t k, char *err, size_t errlen);

/* What the policy may run.  mmod and landmarks are required; haar (and mtcnn) may be
 * NULL (FV_DETECTOR_HAAR then gives FV_E_UNSUPPORTED); pool may be NULL. */
typedef struct fvi_detectors {
    const fvi_mmod *mmod;
    fvi_haar_get_fn haar;
    void *haar_ctx;
    fvi_landmarks_fn landmarks;
    const void *landmarks_ctx;
    fvi_workers *pool;
    int mmod_precision;     /* fv_detect_options.precision of this call */
    fvi_mtcnn_get_fn mtcnn; /* may be NULL: FV_DETECTOR_MTCNN then FV_E_UNSUPPORTED */
    void *mtcnn_ctx;
    int mtcnn_min_face; /* MTCNN's smallest face (px); 0: its default, 20 */
} fvi_detectors;

/* Replaces opt's defaults by what d will run (fv_detect_options_resolve):
 * FV_DETECTOR_AUTO by MTCNN when d's getter loads it, by MMOD when its
 * file is missing (any other failure is returned, opt untouched); max_side
 * -1 by the detector's own. */
fv_status fvi_resolve_detect_options(const fvi_detectors *d, fv_detect_options *opt, char *err,
                                     size_t errlen);

/* Finds the faces in img per opt (see policy.c for the rules), with
 * landmarks for the first want_lm faces in the policy's order.  On FV_OK
 * *faces is fvi_malloc'ed (NULL when none; the caller frees it) and *n is
 * the count; t->detect_ms and t->landmarks_ms are set (for a turned image,
 * landmarks are counted in detect_ms).  Thread-safe when d's functions are. */
fv_status fvi_find_faces(const fvi_detectors *d, const fv_image *img, const fv_detect_options *opt,
                         size_t want_lm, fv_face **faces, size_t *n, fv_timings *t, char *err,
                         size_t errlen);

#endif
