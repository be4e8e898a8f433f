/*
 * embed.c: the embed step of the pipeline, one body for every model.
 *
 * fvi_model_embed turns aligned chips into embeddings with the engine's
 * ResNet (model NULL) or a trained fv_model; fv_embed_chips,
 * fv_model_embed_chips and, through fv_model_embed_face, fv_embed_face and
 * fv_verify all come here, so a model is a parameter, never a second copy
 * of the pipeline.  The engine's flip policy (fv_config.flip) belongs to
 * the ResNet's embedding and is applied here, whoever asked: also when the
 * ResNet feeds an adapter, so an adapter sees at inference what
 * `faceverify train` gave it (it embeds through fv_embed_chips).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/fvi.h"
#include "pipeline/pipeline.h"

#define EMBED_BATCH 32

/* Test-time augmentation: a face and its mirror image, or the face
 * slightly turned, scaled or shifted, are the same person, so averaging
 * their embeddings cancels part of the network's noise.  Each pass is the
 * chip resampled under a similarity transform: the identity, the mirror
 * (fv_config.flip), then fv_config.jitters fixed small transforms
 * (rotation within 3 degrees, scale 0.96 to 1.0, shift within 2% of the
 * chip, every other one mirrored).  The transforms come from a fixed seed,
 * so one photo always gets the same embedding. */
typedef struct chip_xf {
    double ca, sa, tx, ty;
    int mirror;
} chip_xf;

static double unit_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static chip_xf jitter_at(int i) {
    uint64_t s = 0x6a09e667f3bcc909ULL + (uint64_t)i * 0x100000001b3ULL;
    double ang = (unit_rand(&s) * 2 - 1) * 3.0 * 3.14159265358979323846 / 180.0;
    double k = 0.96 + 0.04 * unit_rand(&s);
    chip_xf x = {k * cos(ang), k * sin(ang), (unit_rand(&s) * 2 - 1) * 0.02 * FV_CHIP_SIZE,
                 (unit_rand(&s) * 2 - 1) * 0.02 * FV_CHIP_SIZE, i & 1};
    return x;
}

/* dst = chip under transform x: each output pixel samples the chip
 * bilinearly at c + t + kR(p - c), edges clamped.  The plain mirror lands
 * on whole pixels, so it is an exact copy. */
static void transform_chip(const unsigned char *chip, chip_xf x, unsigned char *dst) {
    const double c = (FV_CHIP_SIZE - 1) / 2.0;
    const int n = FV_CHIP_SIZE;
    for (int v = 0; v < n; v++)
        for (int u = 0; u < n; u++) {
            double px = (x.mirror ? n - 1 - u : u) - c, py = v - c;
            double sx = c + x.tx + x.ca * px - x.sa * py, sy = c + x.ty + x.sa * px + x.ca * py;
            if (sx < 0) sx = 0;
            if (sy < 0) sy = 0;
            if (sx > n - 1) sx = n - 1;
            if (sy > n - 1) sy = n - 1;
            int x0 = (int)sx, y0 = (int)sy;
            int x1 = x0 + 1 < n ? x0 + 1 : x0, y1 = y0 + 1 < n ? y0 + 1 : y0;
            double fx = sx - x0, fy = sy - y0;
            const unsigned char *a = chip + ((size_t)y0 * n + x0) * 3,
                                *b = chip + ((size_t)y0 * n + x1) * 3,
                                *cc = chip + ((size_t)y1 * n + x0) * 3,
                                *d = chip + ((size_t)y1 * n + x1) * 3;
            unsigned char *o = dst + ((size_t)v * n + u) * 3;
            for (int ch = 0; ch < 3; ch++) {
                double val = (1 - fy) * ((1 - fx) * a[ch] + fx * b[ch]) +
                             fy * ((1 - fx) * cc[ch] + fx * d[ch]);
                o[ch] = (unsigned char)(val + 0.5);
            }
        }
}

/* Embeds one chip into emb under the engine's flip and jitter policy:
 * every pass goes through the network as one batch, and emb is the mean of
 * their embeddings (rescaled to unit length for FV_FLIP_UNIT). */
static fv_status embed_chip(const fv_engine *eng, const unsigned char *chip, float *emb, char *err,
                            size_t errlen) {
    enum { CHIP = FV_CHIP_SIZE * FV_CHIP_SIZE * 3 };
    const chip_xf mirror = {1, 0, 0, 0, 1};
    int flip = eng->flip != FV_FLIP_NONE, n = 1 + flip + eng->jitters;
    unsigned char *buf = fvi_malloc((size_t)n * CHIP);
    float *e = fvi_malloc((size_t)n * FV_EMBED_DIM * sizeof *e);
    fv_status st = FV_OK;
    if (!buf || !e) {
        st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
        goto done;
    }
    memcpy(buf, chip, CHIP);
    if (flip) transform_chip(chip, mirror, buf + CHIP);
    for (int i = 0; i < eng->jitters; i++)
        transform_chip(chip, jitter_at(i), buf + (size_t)(1 + flip + i) * CHIP);
    st = fvi_resnet_embed(eng->resnet, buf, (size_t)n, eng->pool, e, err, errlen);
    if (st != FV_OK) goto done;
    double norm = 0;
    for (int k = 0; k < FV_EMBED_DIM; k++) {
        double acc = 0;
        for (int i = 0; i < n; i++) acc += e[(size_t)i * FV_EMBED_DIM + k];
        emb[k] = (float)(acc / n);
        norm += (double)emb[k] * emb[k];
    }
    if (eng->flip == FV_FLIP_UNIT && norm > 0) {
        float inv = (float)(1.0 / sqrt(norm));
        for (int k = 0; k < FV_EMBED_DIM; k++) emb[k] *= inv;
    }
done:
    fvi_free(buf);
    fvi_free(e);
    return st;
}

/* n chips through the ResNet under the flip and jitter policy.  With
 * neither the n chips go as one batch (the network batches internally);
 * else each chip's passes are a batch. */
static fv_status resnet_embed(const fv_engine *eng, const unsigned char *chips, size_t n,
                              float *out, char *err, size_t errlen) {
    if (eng->flip == FV_FLIP_NONE && eng->jitters == 0)
        return fvi_resnet_embed(eng->resnet, chips, n, eng->pool, out, err, errlen);
    const size_t chip = (size_t)FV_CHIP_SIZE * FV_CHIP_SIZE * 3;
    for (size_t i = 0; i < n; i++) {
        fv_status st = embed_chip(eng, chips + i * chip, out + i * FV_EMBED_DIM, err, errlen);
        if (st != FV_OK) return st;
    }
    return FV_OK;
}

fv_status fvi_model_embed(const fv_engine *eng, const fv_model *m, const unsigned char *chips,
                          size_t n, float *out, char *err, size_t errlen) {
    if (n == 0) return FV_OK;
    if (!m) return resnet_embed(eng, chips, n, out, err, errlen);
    fvt_ws *ws = NULL;
    int max_n = n < EMBED_BATCH ? (int)n : EMBED_BATCH; /* buffers for what is asked */
    fv_status st = fvt_ws_create(m->net, max_n, fv_engine_threads(eng), &ws);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "model: no memory for a batch");
    int dim = fvt_net_out_dim(m->net);
    const size_t chip = (size_t)FV_CHIP_SIZE * FV_CHIP_SIZE * 3;
    for (size_t b = 0; b < n && st == FV_OK; b += EMBED_BATCH) {
        int bn = (int)(n - b < EMBED_BATCH ? n - b : EMBED_BATCH);
        if (m->adapter) {
            st = resnet_embed(eng, chips + b * chip, (size_t)bn, fvt_ws_input(ws), err, errlen);
        } else {
            st = fvt_chips_to_input(chips + b * chip, bn, FV_CHIP_SIZE, m->net->in_h,
                                    m->meta.norm_mean, m->meta.norm_std, fvt_ws_input(ws));
            if (st != FV_OK) fvi_seterr(err, errlen, st, "model: cannot scale chips to its input");
        }
        if (st != FV_OK) break;
        /* train == 0 reads the net only, so sharing m across threads is safe */
        const float *y = fvt_forward(m->net, ws, bn, 0, eng->pool);
        memcpy(out + b * dim, y, sizeof(float) * (size_t)bn * dim);
    }
    fvt_ws_destroy(ws);
    return st;
}

fv_status fv_model_embed_chips(const fv_engine *eng, const fv_model *m, const unsigned char *chips,
                               size_t n, float *out, char *err, size_t errlen) {
    if (!eng || (n && (!chips || !out)))
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    return fvi_model_embed(eng, m, chips, n, out, err, errlen);
}

fv_status fv_embed_chips(const fv_engine *eng, const unsigned char *chips, size_t n, float *out,
                         char *err, size_t errlen) {
    return fv_model_embed_chips(eng, NULL, chips, n, out, err, errlen);
}
