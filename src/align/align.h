/*
 * align.h: face alignment, the step between detection and embedding.
 *
 * Two pieces, both reimplementing dlib 19.24 so that our landmarks and
 * chips match what dlib's Python API produces for the same inputs:
 *
 *  - a shape predictor (Kazemi & Sullivan's ensemble of regression trees,
 *    dlib's shape_predictor) that loads dlib's .dat file and places the 5
 *    landmarks inside a face box;
 *  - the aligned face chip (dlib's get_face_chip_details + extract_image_chip):
 *    a similarity transform from a mean-face template to the landmarks,
 *    then bilinear resampling, through a 2x Gaussian pyramid when the face
 *    is much larger than the chip.
 *
 * A loaded predictor is immutable; every function here is thread-safe.
 */
#ifndef FVI_ALIGN_H
#define FVI_ALIGN_H

#include <stddef.h>

#include "faceverify.h"

typedef struct fvi_shape_predictor fvi_shape_predictor;

/* Loads a dlib shape_predictor file (shape_predictor_5_face_landmarks.dat
 * or any other dlib shape_predictor).  A missing or unreadable file gives
 * FV_E_MODEL_MISSING; one that fails validation FV_E_MODEL_CORRUPT.  The
 * caller owns *out (fvi_shape_predictor_destroy). */
fv_status fvi_shape_predictor_load(const char *path, fvi_shape_predictor **out, char *err,
                                   size_t errlen);

/* Same from a memory buffer (tests, fuzzing).  data is not retained. */
fv_status fvi_shape_predictor_load_mem(const void *data, size_t len, fvi_shape_predictor **out,
                                       char *err, size_t errlen);

/* Frees a predictor; NULL is a no-op. */
void fvi_shape_predictor_destroy(fvi_shape_predictor *sp);

/* Landmarks the model predicts (5 for the 5-point model). */
size_t fvi_shape_predictor_num_parts(const fvi_shape_predictor *sp);

/* Predicts landmarks for the face box and writes num_parts points to out.
 *
 * Box: fv_face convention (left/top inclusive, right/bottom exclusive,
 * float pixels).  dlib works on an integer rectangle with inclusive
 * right/bottom, so the box is converted the way dlib converts a drectangle
 * to a rectangle, round half up: l = floor(left + 0.5), t = floor(top + 0.5),
 * r = floor(right - 1 + 0.5), b = floor(bottom - 1 + 0.5).  For a box made
 * from a dlib rectangle (integers) this is exact.
 *
 * Output: like dlib, whose parts are integer `point`s, each landmark is
 * rounded half up to whole pixels (the values in out are integers stored
 * as floats).  Non-finite or absurd boxes (|coord| > 1e7) give
 * FV_E_INVALID_ARGUMENT.  Thread-safe; allocates one scratch buffer. */
fv_status fvi_shape_predict(const fvi_shape_predictor *sp, const fv_image *img, const fv_face *box,
                            fv_point *out);

/* dlib's get_face_chip_details(shape, size, padding) followed by
 * extract_image_chip with bilinear interpolation: writes size*size*3 RGB
 * bytes to chip (caller-owned).  Only 5-point shapes (dlib's 5-point
 * template).  Pixels sampled from outside the image are black, as in dlib.
 * Degenerate landmarks (all equal, non-finite, |coord| > 1e7) or size
 * outside 2..4096 or padding outside [0, 100] give FV_E_INVALID_ARGUMENT.
 * Thread-safe; allocates pyramid levels when the face is large. */
fv_status fvi_face_chip(const fv_image *img, const fv_point *landmarks5, int size, double padding,
                        unsigned char *chip);

#endif
