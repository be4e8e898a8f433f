/*
 * model.c: the public fv_model, a network trained by `faceverify train`
 * (src/train/, docs/model-format.md), run in the pipeline beside the
 * engine's ResNet.  A "scratch" model embeds aligned chips itself; an
 * "adapter" maps the ResNet's embedding, so it runs on the engine's ResNet
 * first.  Loading validates that the net fits one of those two shapes.
 */
#include <string.h>

#include "core/fvi.h"
#include "pipeline/pipeline.h"

fv_status fv_model_load(const char *path, fv_model **out, char *err, size_t errlen) {
    if (!path || !out) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    *out = NULL;
    fv_model *m = fvi_calloc(1, sizeof(*m));
    if (!m) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
    fv_status st = fvt_model_load(path, &m->net, &m->meta, NULL, NULL, err, errlen);
    if (st == FV_OK) {
        const fvt_net *n = m->net;
        m->adapter = strcmp(m->meta.kind, "adapter") == 0;
        if (m->adapter && (n->in_c != FV_EMBED_DIM || n->in_h != 1 || n->in_w != 1))
            st = fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: adapter input must be 128", path);
        else if (!m->adapter && (n->in_c != 3 || n->in_h != n->in_w || n->in_h > FV_CHIP_SIZE ||
                                 n->in_h < 8 || m->meta.norm_std <= 0.0f))
            st = fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT,
                            "%s: input must be RGB, square, 8..150 px", path);
        else if (fvt_net_out_dim(n) > FV_EMBED_DIM)
            st = fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: embedding above %d values", path,
                            FV_EMBED_DIM);
        else if (!m->meta.id[0])
            st = fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: no model id", path);
    }
    if (st != FV_OK) {
        fv_model_destroy(m);
        return st;
    }
    *out = m;
    return FV_OK;
}

void fv_model_destroy(fv_model *m) {
    if (!m) return;
    fvt_net_destroy(m->net);
    fvi_free(m);
}

const char *fv_model_id(const fv_model *m) {
    return m ? m->meta.id : NULL;
}

const char *fv_model_kind(const fv_model *m) {
    return m ? (m->adapter ? "adapter" : "scratch") : NULL;
}

int fv_model_dim(const fv_model *m) {
    return m ? fvt_net_out_dim(m->net) : 0;
}

float fv_model_threshold(const fv_model *m) {
    return m ? m->meta.threshold : 0.0f;
}
