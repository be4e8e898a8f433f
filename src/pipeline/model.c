/*
 * model.c: the public fv_model, a network trained by `faceverify train`
 * (src/train/, docs/model-format.md), run in the pipeline beside the
 * engine's ResNet.  A "scratch" model embeds aligned chips itself; an
 * "adapter" maps the ResNet's embedding, so it runs on the engine's ResNet
 * first.  Loading validates that the net fits one of those two shapes.
 */
#include <string.h>

#include "fvi.h"
#include "pipeline/pipeline.h"

fv_status fv_model_load(const char *path, fv_model **out, char *err, size_t errlen) {
    if (!path || !out) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    *out = NULL;
    fv_model *m = fvi_calloc(1, sizeof(*m));
    if (!m) return FV_E_NO_MEMORY;
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

#define EMBED_BATCH 32

fv_status fv_model_embed_chips(const fv_engine *eng, const fv_model *m, const unsigned char *chips,
                               size_t n, float *out, char *err, size_t errlen) {
    if (!eng || !m || (n && (!chips || !out)))
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    if (n == 0) return FV_OK;
    fvi_pool *pool = fvi_engine_pool(eng);
    fvt_ws *ws = NULL;
    int max_n = n < EMBED_BATCH ? (int)n : EMBED_BATCH; /* buffers for what is asked */
    fv_status st = fvt_ws_create(m->net, max_n, fv_engine_threads(eng), &ws);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "model: no memory for a batch");
    int dim = fvt_net_out_dim(m->net);
    const size_t chip = (size_t)FV_CHIP_SIZE * FV_CHIP_SIZE * 3;
    for (size_t b = 0; b < n && st == FV_OK; b += EMBED_BATCH) {
        int bn = (int)(n - b < EMBED_BATCH ? n - b : EMBED_BATCH);
        if (m->adapter)
            st = fv_embed_chips(eng, chips + b * chip, (size_t)bn, fvt_ws_input(ws), err, errlen);
        else
            st = fvt_chips_to_input(chips + b * chip, bn, FV_CHIP_SIZE, m->net->in_h,
                                    m->meta.norm_mean, m->meta.norm_std, fvt_ws_input(ws));
        if (st != FV_OK) break;
        /* train == 0 reads the net only, so sharing m across threads is safe */
        const float *y = fvt_forward(m->net, ws, bn, 0, pool);
        memcpy(out + b * dim, y, sizeof(float) * (size_t)bn * dim);
    }
    fvt_ws_destroy(ws);
    return st;
}

#define MAX_FACES 16

fv_status fv_model_embed_face(const fv_engine *eng, const fv_model *m, const fv_image *img,
                              const fv_detect_options *opt, int strict, fv_face_result *out,
                              char *err, size_t errlen) {
    if (!eng || !m || !img || !out)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    memset(out, 0, sizeof(*out));
    fv_face faces[MAX_FACES];
    size_t count = 0;
    double t0 = fvi_now_ms();
    fv_status st = fv_detect(eng, img, opt, faces, MAX_FACES, &count, err, errlen);
    double t1 = fvi_now_ms();
    out->timings.detect_ms = t1 - t0;
    if (st != FV_OK) return st;
    out->faces = count;
    if (count == 0) return fvi_seterr(err, errlen, FV_E_NO_FACE, "no face found");
    if (strict && count > 1)
        return fvi_seterr(err, errlen, FV_E_MULTIPLE_FACES, "%zu faces found", count);
    out->face = faces[0];
    unsigned char *chip = fvi_malloc((size_t)FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
    if (!chip) return FV_E_NO_MEMORY;
    st = fv_face_chip(eng, img, &out->face, chip);
    double t2 = fvi_now_ms();
    out->timings.chip_ms = t2 - t1;
    if (st == FV_OK) st = fv_model_embed_chips(eng, m, chip, 1, out->embedding, err, errlen);
    out->timings.embed_ms = fvi_now_ms() - t2;
    fvi_free(chip);
    return st;
}
