/*
 * haar.h: Viola-Jones face detection with OpenCV's Haar cascade files.
 *
 * A cascade (OpenCV's "new" XML format: <cascade> with stageType BOOST,
 * featureType HAAR, stages of boosted trees over Haar features) is parsed
 * with libxml2 into an immutable fvi_haar, then scanned over a grey image
 * the way OpenCV's CascadeClassifier::detectMultiScale does: one bilinear
 * downscale of the image per scale factor, a fixed window scanned with step
 * 2 (1 from scale 2 on), variance normalisation per window, and the hits
 * grouped like cv::groupRectangles (eps 0.2, min neighbours).  The aim is
 * OpenCV's boxes within a pixel or two on the same grey image.
 *
 * Thread-safety: a loaded cascade is read-only; detection allocates its own
 * scratch, so one cascade may serve several threads.
 */
#ifndef FVI_HAAR_H
#define FVI_HAAR_H

#include <stddef.h>
#include <stdint.h>

#include "faceverify.h"
#include "core/workers.h"

typedef struct fvi_haar fvi_haar;

/* Refuse cascade files above this before reading them. */
#define FVI_HAAR_MAX_FILE_BYTES ((size_t)64 * 1024 * 1024)

typedef struct fvi_haar_params {
    double scale_factor; /* > 1; OpenCV's default 1.1 */
    int min_neighbors;   /* >= 0; 0 returns the raw, ungrouped hits */
    int min_size;        /* smallest face side in pixels; 0: the cascade window */
    int max_size;        /* largest face side; 0: the image */
} fvi_haar_params;

/* One grouped detection in image pixels: x, y, w, h (OpenCV's cv::Rect)
 * and the number of raw hits that formed it. */
typedef struct fvi_haar_rect {
    int x, y, w, h;
    int neighbors;
} fvi_haar_rect;

/* Loads a cascade XML file.  FV_E_MODEL_MISSING when it cannot be opened,
 * FV_E_MODEL_CORRUPT when it fails validation, FV_E_UNSUPPORTED for a
 * well-formed cascade of a kind not handled (LBP, tilted Haar features,
 * the old pre-2.x format). */
fv_status fvi_haar_load(const char *path, fvi_haar **out, char *err, size_t errlen);

/* Parses a cascade from memory (the bytes of an XML file); as fvi_haar_load. */
fv_status fvi_haar_parse(const void *xml, size_t len, fvi_haar **out, char *err, size_t errlen);

/* Frees a cascade; NULL is a no-op. */
void fvi_haar_destroy(fvi_haar *h);

/* The cascade's window (for example 24x24). */
void fvi_haar_window(const fvi_haar *h, int *w, int *hgt);

/* Grey as OpenCV 4's cvtColor RGB2GRAY computes it: fixed point
 * (9798 R + 19235 G + 3735 B + 16384) >> 15 (0.299, 0.587, 0.114).
 * gray: width*height bytes. */
void fvi_haar_gray(const fv_image *img, unsigned char *gray);

/* OpenCV's resize(INTER_LINEAR_EXACT) of an 8-bit grey image (what its
 * cascade detector uses), bit for bit.  Exposed for the parity probe. */
void fvi_haar_resize(const unsigned char *src, int sw, int sh, unsigned char *dst, int dw, int dh);

/* Detects with cascade h on a grey image (w x hgt, rows packed).  *out is
 * fvi_malloc'ed (NULL when none); n set to its length.  pool may be NULL. */
fv_status fvi_haar_detect_gray(const fvi_haar *h, const unsigned char *gray, int w, int hgt,
                               const fvi_haar_params *p, fvi_workers *pool, fvi_haar_rect **out,
                               size_t *n, char *err, size_t errlen);

/* Detects faces in an RGB image: boxes are OpenCV's rectangles (left=x,
 * top=y, right=x+w, bottom=y+h), score = neighbours.  *faces fvi_malloc'ed. */
fv_status fvi_haar_detect(const fvi_haar *h, const fv_image *img, const fvi_haar_params *p,
                          fvi_workers *pool, fv_face **faces, size_t *n, char *err, size_t errlen);

/* Maps a Haar box (as fvi_haar_detect gives it) in place to the box dlib's
 * MMOD detector would draw around the same face, which is what the 5-point
 * shape predictor was trained on.  The mapping was fitted on LFW (see
 * haar.c for the numbers and the command). */
void fvi_haar_box_to_dlib(fv_face *f);

#endif
