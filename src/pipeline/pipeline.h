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
#include "detect/mtcnn.h"
#include "embed/embed.h"
#include "faceverify.h"
#include "core/workers.h"
#include "train/train.h"

/* A model loaded on first use: where from, and how the load went. */
typedef struct fvi_lazy {
    char *path;
    int tried;
    fv_status status;
    char err[256];
} fvi_lazy;

struct fv_engine {
    fvi_mmod *mmod;
    fvi_shape_predictor *sp;
    fvi_resnet *resnet;
    fvi_workers *pool;
    float threshold;
    fv_flip flip;
    int jitters; /* fv_config.jitters */
    fv_limits limits;
    /* The optional detectors' models (Haar cascade, MTCNN), each loaded on
     * first use under lazy_lock (so engines of users who never ask for
     * them neither pay for nor fail on them); the outcome, good or bad, is
     * kept and reported on every request for that detector. */
    pthread_mutex_t lazy_lock;
    int lazy_lock_ok;
    fvi_lazy haar_load, mtcnn_load;
    fvi_haar *haar;
    fvi_mtcnn *mtcnn;
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
