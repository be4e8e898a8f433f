/*
 * pipeline.h: what the pipeline's files share, private to src/pipeline/.
 *
 * The engine (engine.c) owns the loaded models and the thread pool; the
 * embed step (embed.c) runs the ResNet or a trained model (model.c) on
 * that pool, so the structs are shared here rather than behind accessors.  Nothing below the
 * pipeline sees an engine: the detection policy gets its detectors as an fvi_detectors, the
 * embedders get a pool.
 */
#ifndef FVI_PIPELINE_H
#define FVI_PIPELINE_H

#include <pthread.h>

#include "align/align.h"
#include "detect/haar.h"
#include "detect/mmod.h"
#include "embed/embed.h"
#include "faceverify.h"
#include "core/workers.h"
#include "train/train.h"

struct fv_engine {
    fvi_mmod *mmod;
    fvi_shape_predictor *sp;
    fvi_resnet *resnet;
    fvi_workers *pool;
    float threshold;
    fv_flip flip;
    fv_limits limits;
    /* Haar cascade, loaded on first use under haar_lock (so engines of
     * users who never ask for haar neither pay for nor fail on it); the
     * outcome, good or bad, is kept and reported on every haar request. */
    pthread_mutex_t haar_lock;
    int haar_lock_ok;
    int haar_tried;
    fv_status haar_status;
    char haar_err[256];
    char *haar_path;
    fvi_haar *haar;
};

struct fv_model {
    fvt_net *net;
    fvt_meta meta;
    int adapter;
};

/* Embeds n chips with model m, or with the engine's ResNet when m is NULL,
 * under the engine's flip policy (fv_config.flip) in both cases: the one
 * body behind fv_embed_chips and fv_model_embed_chips.  out holds
 * n * (m ? fv_model_dim(m) : FV_EMBED_DIM) floats.  Arguments are checked
 * by the caller. */
fv_status fvi_model_embed(const fv_engine *eng, const fv_model *m, const unsigned char *chips,
                          size_t n, float *out, char *err, size_t errlen);

#endif
