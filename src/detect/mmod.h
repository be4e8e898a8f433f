/*
 * mmod.h: dlib's MMOD CNN face detector (mmod_human_face_detector.dat).
 *
 * The network is dlib's dnn_mmod_face_detection_ex:
 *   input_rgb_image_pyramid<pyramid_down<6>>  (tiled pyramid, mean-subtracted, /256)
 *   3 x [con 5x5 stride 2 (16, 32, 32 filters), affine, relu]   (the downsampler)
 *   3 x [con 5x5 stride 1 (45 filters), affine, relu]
 *   con 9x9 stride 1 (1 filter)  ->  loss_mmod (score > 0 is a detection)
 * The whole image pyramid is tiled into one big image and convolved in one
 * pass, so the cost grows with the pixel count; the per-call memory is sized
 * by a measure pass and bounded by FVI_MMOD_MAX_CALL_BYTES.
 *
 * Results follow dlib's python cnn_face_detection_model_v1(img, upsample)
 * to the pixel: the same pyramid_up, tiled pyramid, bilinear resampling,
 * box rounding, non-max suppression and rect_down.
 */
#ifndef FVI_MMOD_H
#define FVI_MMOD_H

#include <stddef.h>

#include "faceverify.h"
#include "core/workers.h"

/* Upper bound on the memory one fvi_mmod_detect call may use (tensors,
 * convolution scratch and upsampled copies of the image).  The tiled
 * pyramid is ~3.7x the (upsampled) image, and the two largest tensors take
 * 28 bytes per tiled pixel, so a call needs ~103 bytes per image pixel
 * after upsampling: 1 GiB allows ~10 megapixels, e.g. 1600x1200
 * upsampled once (7.7 MP, ~0.8 GiB) but not 1600x1600 upsampled once.
 * Larger requests get FV_E_IMAGE_TOO_LARGE before anything is allocated. */
#define FVI_MMOD_MAX_CALL_BYTES ((size_t)1 << 30)

/* Most times an image may be upsampled. */
#define FVI_MMOD_MAX_UPSAMPLE 4

typedef struct fvi_mmod fvi_mmod;

/* Loads the detector from a dlib .dat file.  FV_E_MODEL_MISSING when the
 * file cannot be opened, FV_E_MODEL_CORRUPT when it is not exactly the
 * expected network, FV_E_NO_MEMORY.  *out is owned by the caller. */
fv_status fvi_mmod_load(const char *path, fvi_mmod **out, char *err, size_t errlen);

/* As fvi_mmod_load, from a caller buffer (not kept after the call). */
fv_status fvi_mmod_load_mem(const void *data, size_t len, fvi_mmod **out, char *err, size_t errlen);

/* Frees a detector; NULL is a no-op. */
void fvi_mmod_destroy(fvi_mmod *det);

/* Detects faces.  upsample (0..FVI_MMOD_MAX_UPSAMPLE): times to pyramid_up
 * the image first, like dlib's python cnn_face_detection_model_v1(img,
 * upsample).  Boxes are in original pixels in the fv_face convention
 * (left/top inclusive, right/bottom exclusive), score = dlib's
 * detection_confidence, landmarks zero.  precision: FV_PRECISION_EXACT
 * (float32, dlib's results) or FV_PRECISION_FAST (the bf16 kernel for the
 * first six convolutions where the CPU has it, else exact).  *faces is allocated with
 * fvi_malloc (caller frees with fvi_free; NULL when *count is 0), sorted by
 * score descending.  Thread-safe: the model is immutable and scratch memory
 * is per call; pool may be NULL.  Images too small for the network give 0
 * faces; FV_E_IMAGE_TOO_LARGE above FVI_MMOD_MAX_CALL_BYTES. */
fv_status fvi_mmod_detect(const fvi_mmod *det, const fv_image *img, int upsample, int precision,
                          fvi_workers *pool, fv_face **faces, size_t *count, char *err,
                          size_t errlen);

/* fvi_mmod_detect on the first max_levels levels of the pyramid only (0:
 * all, which is fvi_mmod_detect): level k holds faces of about 80 *
 * (6/5)^k px of the (upsampled) image, so a caller that knows the size of
 * the face it looks for skips the levels that cannot hold it (the pyramid
 * is ~3.3x the image's pixels, its first three levels ~2.2x).  The
 * detections on those levels are dlib's. */
fv_status fvi_mmod_detect_levels(const fvi_mmod *det, const fv_image *img, int upsample,
                                 int max_levels, int precision, fvi_workers *pool, fv_face **faces,
                                 size_t *count, char *err, size_t errlen);

#endif
