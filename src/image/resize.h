/*
 * resize.h: downscaling for the detector's large-photo policy.
 */
#ifndef FVI_IMAGE_RESIZE_H
#define FVI_IMAGE_RESIZE_H

#include "faceverify.h"

/* Shrinks src to w x h (w <= src->width, h <= src->height) by averaging the
 * source pixels each destination pixel covers (box filter with fractional
 * edge weights), which avoids the aliasing of point sampling.  *out is a
 * new image owned by the caller. */
fv_status fvi_image_downscale(const fv_image *src, int w, int h, fv_image **out);

#endif
