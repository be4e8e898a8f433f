/*
 * embed.h: the 128-d face embedding, dlib's face recognition ResNet
 * (dlib_face_recognition_resnet_model_v1.dat) run by our own inference code.
 *
 * A 150x150 RGB chip (dlib's get_face_chip output) goes in, dlib's 128
 * floats come out, within float rounding of dlib's own
 * compute_face_descriptor.  The network is parsed strictly from dlib's
 * serialization (every name, version and tensor shape must be what the
 * architecture implies), its affine layers are folded into the preceding
 * convolutions, and it is immutable after loading: several threads may embed
 * with one network at once.
 */
#ifndef FVI_EMBED_H
#define FVI_EMBED_H

#include <stddef.h>

#include "faceverify.h"
#include "core/workers.h"

typedef struct fvi_resnet fvi_resnet;

/* Loads the model file at path.  FV_E_MODEL_MISSING when the file does not
 * exist, FV_E_IO when it cannot be read, FV_E_MODEL_CORRUPT when it fails
 * validation, FV_E_NO_MEMORY.  *out is owned by the caller
 * (fvi_resnet_destroy). */
fv_status fvi_resnet_load(const char *path, fvi_resnet **out, char *err, size_t errlen);

/* Loads the model from a buffer holding the file's bytes (not kept). */
fv_status fvi_resnet_load_mem(const void *data, size_t len, fvi_resnet **out, char *err,
                              size_t errlen);

/* Frees the network; NULL is a no-op.  No embed call may be in progress. */
void fvi_resnet_destroy(fvi_resnet *net);

/* Embeds n chips (each FV_CHIP_SIZE*FV_CHIP_SIZE*3 RGB8 bytes, packed one
 * after another) into out (n*FV_EMBED_DIM floats, caller-owned).  Chips are
 * run in batches; scratch memory comes from an arena taken from the
 * network's mutex-protected free list (allocated on first use), so
 * concurrent calls are safe.  pool may be NULL (single thread).  Results are
 * bitwise identical for any pool size; the same chip embedded in a batch of
 * a different size may differ by float rounding (~1e-7) since the GEMM
 * tiling follows the batch's shape. */
fv_status fvi_resnet_embed(const fvi_resnet *net, const unsigned char *chips, size_t n,
                           fvi_workers *pool, float *out, char *err, size_t errlen);

/* Convolutions of the network: the stem, then two per residual block. */
#define FVI_RESNET_CONVS 29

/* Per-layer timing of the forward pass, for bench/c/bench_stages.c.  Sums
 * over forward passes until the caller zeroes it.  A conv's time covers
 * everything fvi_conv_forward_cnhw does (bias, im2col, sgemm, the fused
 * relu); "other" is the input conversion, pooling, residual adds, global
 * average and fc. */
typedef struct {
    double conv_ms[FVI_RESNET_CONVS];
    double conv_flop[FVI_RESNET_CONVS];  /* 2 x multiply-adds computed */
    int conv_shape[FVI_RESNET_CONVS][6]; /* in_c, out_c, k, stride, out side, batch */
    double other_ms;
    double forward_ms;
    long passes;
} fvi_embed_profile;

/* fvi_resnet_embed that also adds the time of each layer to *prof when
 * prof is not NULL (the caller owns it and zeroes it; one profile per
 * calling thread).  With NULL it is fvi_resnet_embed and reads no clock. */
fv_status fvi_resnet_embed_profiled(const fvi_resnet *net, const unsigned char *chips, size_t n,
                                    fvi_workers *pool, fvi_embed_profile *prof, float *out,
                                    char *err, size_t errlen);

#endif
