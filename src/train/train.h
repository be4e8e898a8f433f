/*
 * train.h: training of compact embedding networks (the training side of
 * the inference engine in nn/).
 *
 * A network (fvt_net) is a chain of layers with one flat parameter array,
 * one gradient array of the same layout, and BN running statistics.  Work
 * buffers for a batch (activations, their gradients, scratch) live in a
 * separate fvt_ws, so one loaded network can serve many threads, each with
 * its own workspace, while training owns one.
 *
 * Layouts: spatial activations are CNHW (nn.h), so convolution runs through
 * fvi_conv_forward_cnhw, batch norm sees each channel as one contiguous
 * block, and pooling works plane by plane; after global average pooling
 * (GAP) activations are flat, row-major (n x c).  A network whose input is
 * 1x1 (the adapter, fed ResNet embeddings) is flat from the start.
 *
 * Backward passes accumulate (+=) into the input gradient, so a skip
 * connection (SKIP: out = in + act[from]) adds its gradient to an earlier
 * activation's before that layer's own backward runs.  Convolution's
 * backward is im2col + sgemm per sample, run over the pool, with per-sample
 * weight-gradient partials summed in sample order: the result does not
 * depend on the thread count.
 */
#ifndef FVT_TRAIN_H
#define FVT_TRAIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "faceverify.h"
#include "nn/nn.h"

typedef enum fvt_kind {
    FVT_CONV = 0, /* a = out channels, b = kernel, c = stride, d = pad */
    FVT_BN,       /* batch norm over (n, h, w) per channel, spatial only */
    FVT_RELU,
    FVT_MAXPOOL, /* a = kernel, b = stride (no padding) */
    FVT_AVGPOOL, /* a = kernel, b = stride (no padding) */
    FVT_GAP,     /* global average: spatial -> flat (n x c) */
    FVT_FC,      /* a = outputs; with bias; weights (in x out) as nn.h's fc */
    FVT_L2NORM,  /* rows scaled to unit length */
    FVT_SKIP,    /* out = in + act[a] (same shape; a < this layer's index) */
    FVT_KIND_COUNT_
} fvt_kind;

#define FVT_MAX_LAYERS 64

typedef struct fvt_layer {
    fvt_kind kind;
    int a, b, c, d;
    int zero_init; /* FC: start weights at zero (a residual branch = identity) */
    /* shapes (per sample) */
    int in_c, in_h, in_w, out_c, out_h, out_w;
    int flat_in; /* 1: input is flat row-major */
    /* parameter offsets into net->params (and grads), counts */
    size_t w_off, nw, b_off, nb;
    size_t st_off; /* BN running mean (c) then var (c) in net->state */
} fvt_layer;

typedef struct fvt_net {
    int nlayers;
    fvt_layer layers[FVT_MAX_LAYERS];
    int in_c, in_h, in_w;
    size_t nparams, nstate;
    float *params, *grads, *state;
    unsigned char *decay; /* 1 where weight decay applies (conv/fc weights) */
} fvt_net;

/* Builds a network from a layer spec: kinds and a..d/zero_init of each
 * layer are read from spec[0..nlayers-1]; shapes and parameter offsets are
 * filled in.  Parameters are zero; see fvt_net_init.  FV_E_INVALID_ARGUMENT
 * (with a message) for an inconsistent spec, FV_E_NO_MEMORY. */
fv_status fvt_net_create(const fvt_layer *spec, int nlayers, int in_c, int in_h, int in_w,
                         fvt_net **out, char *err, size_t errlen);
void fvt_net_destroy(fvt_net *net);
/* He-normal weights from the seed, zero biases, BN gamma 1 / beta 0,
 * running mean 0 / var 1. */
void fvt_net_init(fvt_net *net, uint64_t seed);
/* Output size per sample (the embedding dimension). */
int fvt_net_out_dim(const fvt_net *net);

/* Per-batch buffers, for up to max_n samples. */
typedef struct fvt_ws fvt_ws;
fv_status fvt_ws_create(const fvt_net *net, int max_n, int threads, fvt_ws **out);
void fvt_ws_destroy(fvt_ws *ws);
/* The input buffer to fill before forward: CNHW (spatial) or n x c (flat). */
float *fvt_ws_input(fvt_ws *ws);

/* Forward for n <= max_n samples already in fvt_ws_input.  train != 0 uses
 * batch statistics in BN and updates the running ones (net->state);
 * train == 0 leaves the net untouched (thread-safe over a shared net).
 * Returns the output (n x out_dim, row-major), owned by ws. */
const float *fvt_forward(fvt_net *net, fvt_ws *ws, int n, int train, fvi_workers *pool);
/* Backward from dout (n x out_dim) after a training forward of the same n:
 * adds the parameter gradients into net->grads (zero them first with
 * fvt_net_zero_grad).  Input gradients are computed too (fvt_ws_dinput). */
void fvt_backward(fvt_net *net, fvt_ws *ws, int n, const float *dout, fvi_workers *pool);
const float *fvt_ws_dinput(const fvt_ws *ws);
void fvt_net_zero_grad(fvt_net *net);

/* ---- triplet loss (FaceNet, Schroff et al. 2015) ----
 * Squared Euclidean distances; for every anchor-positive pair (a, p) of the
 * batch (a != p, same label) one negative is mined:
 *   SEMIHARD: the closest negative farther than the positive
 *             (d_an > d_ap); if none, the farthest negative (an easy one,
 *             which then contributes no loss) as in FaceNet's online mining;
 *   HARD:     batch-hard (Hermans et al. 2017): one triplet per anchor, the
 *             farthest positive and the closest negative.
 * loss = mean over triplets of max(0, d_ap - d_an + margin). */
typedef enum { FVT_MINE_SEMIHARD = 0, FVT_MINE_HARD = 1 } fvt_mining;

typedef struct fvt_triplet {
    int a, p, n;
} fvt_triplet;

/* Mines triplets from n embeddings (n x dim) with labels; writes up to cap
 * triplets, returns how many (at most n*(n-1)). */
size_t fvt_mine(const float *emb, const int *labels, int n, int dim, fvt_mining mode,
                fvt_triplet *out, size_t cap);
/* Loss over the triplets; grad (n x dim) is overwritten with d loss / d emb
 * (may be NULL).  *active: triplets with a positive loss. */
float fvt_triplet_loss(const float *emb, int n, int dim, const fvt_triplet *t, size_t nt,
                       float margin, float *grad, size_t *active);

/* ---- optimisers ---- */
typedef enum { FVT_SGD = 0, FVT_ADAM = 1 } fvt_opt_kind;

typedef struct fvt_optim {
    fvt_opt_kind kind;
    float lr, momentum, beta1, beta2, eps, weight_decay;
    long step;
    size_t n;
    float *m, *v; /* SGD: m = velocity; Adam: first and second moments */
} fvt_optim;

fv_status fvt_optim_init(fvt_optim *o, fvt_opt_kind kind, size_t nparams);
void fvt_optim_free(fvt_optim *o);
/* One update of params from grads at learning rate lr.  SGD: L2 weight
 * decay added to the gradient, then momentum; Adam: decoupled weight decay
 * (AdamW).  decay[i] == 0 exempts a parameter (biases, BN). */
void fvt_optim_step(fvt_optim *o, float *params, const float *grads, const unsigned char *decay,
                    float lr);

typedef enum { FVT_SCHED_CONST = 0, FVT_SCHED_STEP = 1, FVT_SCHED_COSINE = 2 } fvt_sched;
/* Learning rate at progress t of total (steps or epochs): STEP multiplies
 * by 0.1 every `step` units, COSINE goes from lr to lr/100 on a half cosine. */
float fvt_lr_at(fvt_sched s, float lr, long t, long total, long step);

/* Deterministic random numbers (splitmix64). */
uint64_t fvt_rand(uint64_t *state);
float fvt_randn(uint64_t *state);

/* ---- model file (docs/model-format.md) ---- */
typedef struct fvt_meta {
    char id[64];
    char kind[16]; /* "scratch" or "adapter" */
    float norm_mean, norm_std;
    float threshold;
    float val_accuracy, val_auc;
    char summary[512]; /* one line of training facts */
} fvt_meta;

/* Optimiser state and progress kept by a checkpoint. */
typedef struct fvt_ckpt {
    int epoch;
    uint64_t rng;
    float best_metric;
    int bad_epochs;
} fvt_ckpt;

/* Writes the network and metadata (and, when opt/ck are not NULL, a
 * checkpoint's optimiser state).  The id is computed from the weights when
 * meta->id is empty.  FV_E_IO on a write failure. */
fv_status fvt_model_save(const char *path, const fvt_net *net, fvt_meta *meta, const fvt_optim *opt,
                         const fvt_ckpt *ck, char *err, size_t errlen);
/* Reads a model (treating the file as hostile).  opt/ck may be NULL; when
 * given and the file has no optimiser state, FV_E_MODEL_CORRUPT. */
fv_status fvt_model_load(const char *path, fvt_net **net, fvt_meta *meta, fvt_optim *opt,
                         fvt_ckpt *ck, char *err, size_t errlen);
/* A model id from the weights: "<kind>-<16 hex digits of FNV-1a 64>". */
void fvt_model_id(const fvt_net *net, const char *kind, char *out, size_t cap);

/* Packs n RGB chips (side x side x 3 bytes) into a CNHW input, scaled to
 * the net's input size by box-filter downscaling, normalised
 * (v/255 - mean) / std.  FV_E_NO_MEMORY. */
fv_status fvt_chips_to_input(const unsigned char *chips, int n, int side, int out_side, float mean,
                             float std, float *dst);

#endif
