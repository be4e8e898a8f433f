/*
 * mmod_model.h: the loaded MMOD detector, shared by the loader (mmod_load.c) and
 * the detector (mmod.c).  Private to src/detect/.
 *
 * The seven convolutions carry their following affine layer folded in
 * (w' = g*w, b' = g*b + beta), so a forward pass is conv (+relu) x 7.
 */
#ifndef FVI_MMOD_MODEL_H
#define FVI_MMOD_MODEL_H

#include "detect/mmod.h"
#include "nn/nn.h"

#define MMOD_NCONV 7

struct fvi_mmod {
    fvi_conv conv[MMOD_NCONV]; /* affine folded in; relu after all but the last */
    float avg[3];              /* input means (r, g, b), subtracted before /256 */
    long pyr_padding;          /* pixels between pyramid levels */
    long pyr_outer_padding;    /* pixels around the tiled pyramid */
    long win_w, win_h;         /* the one detector window, in pyramid pixels */
    double nms_iou;            /* overlaps_nms: IoU above this suppresses */
    double nms_cover;          /* ... or either box covered above this */
};

#endif
