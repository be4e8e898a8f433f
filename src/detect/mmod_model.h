/*
 * mmod_model.h: the loaded MMOD detector, shared by the loader (mmod_load.c) and
 * the detector (mmod.c).  Private to src/detect/.
 *
 * The seven convolutions carry their following affine layer folded in
 * (w' = g*w, b' = g*b + beta), so a forward pass is conv (+relu) x 7.
 * On CPUs with AVX-512 BF16 the first six are also packed for the bf16
 * kernel (FV_PRECISION_FAST); the last (45 -> 1, 9x9) always runs in
 * float32.
 */
#ifndef FVI_MMOD_MODEL_H
#define FVI_MMOD_MODEL_H

#include "detect/mmod.h"
#include "nn/nn.h"

#define MMOD_NCONV 7

struct fvi_mmod {
    fvi_conv conv[MMOD_NCONV];          /* affine folded in; relu after all but the last */
    float avg[3];                       /* input means (r, g, b), subtracted before /256 */
    long pyr_padding;                   /* pixels between pyramid levels */
    long pyr_outer_padding;             /* pixels around the tiled pyramid */
    long win_w, win_h;                  /* the one detector window, in pyramid pixels */
    double nms_iou;                     /* overlaps_nms: IoU above this suppresses */
    double nms_cover;                   /* ... or either box covered above this */
    fvi_conv_bf16 fast[MMOD_NCONV - 1]; /* conv[0..5] packed, when has_fast */
    int has_fast;                       /* 1: this CPU runs the bf16 kernel */
};

#endif
