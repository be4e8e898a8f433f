/*
 * mtcnn.h: MTCNN face detection (the P-/R-/O-Net cascade of Zhang et al.
 * 2016) with the weights of facenet-pytorch 2.6.0, converted by
 * scripts/mtcnn_convert.py into models/mtcnn.bin (format in that script).
 *
 * A cheaper detector than MMOD for small faces (issue 17): P-Net, fully
 * convolutional, scans an image pyramid from the smallest face side (20
 * px) down by 0.709 per level; R-Net and O-Net re-score and refine the
 * candidates on 24x24 and 48x48 crops.  The reference is the numpy
 * pipeline of bench/mtcnn_spike.py (tests/py/test_mtcnn.py holds the two
 * together).
 *
 * Thread-safety: a loaded model is read-only; detection allocates its own
 * scratch, so one model may serve several threads (the pool serialises
 * their convolutions).
 */
#ifndef FVI_MTCNN_H
#define FVI_MTCNN_H

#include <stddef.h>

#include "faceverify.h"
#include "core/workers.h"

typedef struct fvi_mtcnn fvi_mtcnn;

/* Refuse mtcnn.bin files above this before reading them (the real one is
 * 2 MB). */
#define FVI_MTCNN_MAX_FILE_BYTES ((size_t)16 * 1024 * 1024)

/* Loads models/mtcnn.bin.  FV_E_MODEL_MISSING when absent, FV_E_IO when
 * unreadable, FV_E_MODEL_CORRUPT when it fails validation (magic, version,
 * truncation, an unknown, repeated or missing tensor, a wrong shape, a
 * non-finite value). */
fv_status fvi_mtcnn_load(const char *path, fvi_mtcnn **out, char *err, size_t errlen);

/* Parses the bytes of an mtcnn.bin; as fvi_mtcnn_load. */
fv_status fvi_mtcnn_parse(const void *data, size_t len, fvi_mtcnn **out, char *err, size_t errlen);

/* Frees a model; NULL is a no-op. */
void fvi_mtcnn_destroy(fvi_mtcnn *m);

/* The tensors an mtcnn.bin must hold: the count, and the name and shape
 * (*nd dims into dims[4]) of tensor i < count (NULL beyond).  For tests
 * that build model files. */
size_t fvi_mtcnn_tensor_count(void);
const char *fvi_mtcnn_tensor(size_t i, int *nd, int dims[4]);

typedef struct fvi_mtcnn_params {
    int min_face;     /* smallest face side in pixels (>= 12); 20 */
    double factor;    /* pyramid shrink per level (0.1..0.95); 0.709 */
    double thresh[3]; /* P-, R-, O-Net face probability; 0.6, 0.7, 0.7 */
} fvi_mtcnn_params;

/* The defaults above. */
void fvi_mtcnn_params_init(fvi_mtcnn_params *p);

/* Detects faces in an RGB image.  Boxes are MTCNN's own (continuous
 * [left, right) coordinates, O-Net's regression, not squared), score the
 * O-Net face probability; no landmarks.  *faces is fvi_malloc'ed (NULL when
 * none), *n its length.  pool may be NULL. */
fv_status fvi_mtcnn_detect(const fvi_mtcnn *m, const fv_image *img, const fvi_mtcnn_params *p,
                           fvi_workers *pool, fv_face **faces, size_t *n, char *err, size_t errlen);

/* Maps an MTCNN box in place to the box dlib's MMOD detector would draw
 * around the same face (what the 5-point shape predictor was trained on):
 * side / 1.082, centre moved by -(0.02, 0.015) x side, the median fit on
 * the detection set (bench/results/mtcnn_spike.json, box_fit.std). */
void fvi_mtcnn_box_to_dlib(fv_face *f);

#endif
