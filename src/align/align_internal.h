/*
 * align_internal.h: geometry shared by the two halves of the align module
 * (shape_predictor.c and face_chip.c).  Not for other modules.
 */
#ifndef FVI_ALIGN_INTERNAL_H
#define FVI_ALIGN_INTERNAL_H

#include <stddef.h>

/* dlib's find_similarity_transform (Umeyama's least-squares similarity)
 * from n points from[2i],from[2i+1] to to[...]: to ~ m * from + b, with m
 * row-major {m00, m01, m10, m11}.  The 2-D optimum is written in closed
 * form (rotation angle from the cross-covariance) instead of dlib's 2x2
 * SVD; both give the same rotation and scale, including dlib's choice of
 * a proper rotation when the best fit would be a reflection, and agree to
 * rounding (~1e-16 relative).  n == 1 gives the identity, like dlib's
 * find_tform_between_shapes. */
void fvi_align_similarity(const double *from, const double *to, size_t n, double m[4], double b[2]);

/* Same for float point lists (dlib's shape predictor shapes); the sums
 * are still in double, as in dlib. */
void fvi_align_similarity_f(const float *from, const float *to, size_t n, double m[4], double b[2]);

#endif
