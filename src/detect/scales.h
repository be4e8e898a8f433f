/*
 * scales.h: the automatic scale policy (upsample -1), which finds faces of
 * every size in a photo of any size at a bounded cost.
 *
 * MMOD alone needs a face of about 80 px at the scale it runs on, and
 * costs the same per pixel wherever faces are, so "upsample until the
 * smallest face is 80 px" does not scale: a 20 px face in a 12 MP photo
 * would need MMOD on 192 MP.  The policy therefore splits the size range:
 *  - a base pass: MMOD on the whole photo at most max_side long (one
 *    bounded call; large faces), or doubled when the photo is small enough
 *    for the doubled pass to fit a small pixel budget;
 *  - a proposal pass: the Haar cascade, cheap per pixel, with a low
 *    neighbour count, on the photo at a budgeted scale, looking only for
 *    faces smaller than the base pass sees;
 *  - MMOD on a small crop around each proposal, scaled so the face is
 *    about 100 px: MMOD decides, so the proposals' false hits cost time,
 *    not precision.
 * The detections of all passes are merged by overlap.  See scales.c for the
 * budgets, and the README's detection policy section for their costs.
 */
#ifndef FVI_DETECT_SCALES_H
#define FVI_DETECT_SCALES_H

#include <stddef.h>

#include "detect/policy.h"
#include "faceverify.h"

/* Detects boxes (no landmarks) with the automatic scale policy: MMOD
 * passes as above, honouring opt->max_side for the base pass (0: the whole
 * photo, which MMOD may refuse as too large).  The Haar proposals need
 * d->haar; without a cascade the policy falls back to the base pass (and
 * the whole-photo upsampled pass for small photos).  Boxes are in img's
 * pixels, unordered, every score kept; *faces is fvi_malloc'ed (NULL when
 * none).  Thread-safe when d's functions are. */
fv_status fvi_detect_auto(const fvi_detectors *d, const fv_image *img, const fv_detect_options *opt,
                          fv_face **faces, size_t *n, char *err, size_t errlen);

#endif
