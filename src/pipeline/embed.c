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
#include <stdlib.h>
#include <string.h>

#include "core/fvi.h"
#include "pipeline/pipeline.h"

#define EMBED_BATCH 32

/* Embeds one chip into emb under the engine's flip policy: with a flip
 * mode the chip and its horizontal mirror go through the network as one
 * batch of 2 and their embeddings are averaged (and, for FV_FLIP_UNIT,
 * rescaled to unit length).  A face and its mirror image are the same
 * person, so averaging cancels part of the network's left/right noise. */
static fv_status embed_chip(const fv_engine *eng, const unsigned char *chip, float *emb, char *err,
                            size_t errlen) {
    if (eng->flip == FV_FLIP_NONE)
        return fvi_resnet_embed(eng->resnet, chip, 1, eng->pool, emb, err, errlen);
    enum { ROW = FV_CHIP_SIZE * 3, CHIP = FV_CHIP_SIZE * ROW };
    unsigned char *two = fvi_malloc(2 * CHIP);
    if (!two) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
    memcpy(two, chip, CHIP);
    for (int y = 0; y < FV_CHIP_SIZE; y++)
        for (int x = 0; x < FV_CHIP_SIZE; x++)
            memcpy(two + CHIP + y * ROW + x * 3, chip + y * ROW + (FV_CHIP_SIZE - 1 - x) * 3, 3);
    float e[2 * FV_EMBED_DIM];
    fv_status st = fvi_resnet_embed(eng->resnet, two, 2, eng->pool, e, err, errlen);
    fvi_free(two);
    if (st != FV_OK) return st;
    double norm = 0;
    for (int i = 0; i < FV_EMBED_DIM; i++) {
        emb[i] = 0.5f * (e[i] + e[FV_EMBED_DIM + i]);
        norm += (double)emb[i] * emb[i];
    }
    if (eng->flip == FV_FLIP_UNIT && norm > 0) {
        float inv = (float)(1.0 / sqrt(norm));
        for (int i = 0; i < FV_EMBED_DIM; i++) emb[i] *= inv;
    }
    return FV_OK;
}

/* Test-time jitter (fv_config.jitters): the chip resampled under small
 * fixed similarity transforms (rotation within 3 degrees, scale 0.96 to
 * 1.0, shift within 2% of the chip), every other one mirrored, each
 * embedded and the embeddings averaged with the chip's own (and its
 * mirror's under a flip mode).  The transforms come from a fixed seed, so
 * one photo always gets the same embedding. */
typedef struct jitter_xf {
    double ca, sa, tx, ty;
    int mirror;
} jitter_xf;

static double unit_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static jitter_xf jitter_at(int i) {
    uint64_t s = 0x6a09e667f3bcc909ULL + (uint64_t)i * 0x100000001b3ULL;
    double ang = (unit_rand(&s) * 2 - 1) * 3.0 * 3.14159265358979323846 / 180.0;
    double k = 0.96 + 0.04 * unit_rand(&s);
    jitter_xf x = {k * cos(ang), k * sin(ang), (unit_rand(&s) * 2 - 1) * 0.02 * FV_CHIP_SIZE,
                   (unit_rand(&s) * 2 - 1) * 0.02 * FV_CHIP_SIZE, i & 1};
    return x;
}

/* dst = chip under transform x: each output pixel samples the chip
 * bilinearly at c + t + kR(p - c), edges clamped. */
static void jitter_chip(const unsigned char *chip, jitter_xf x, unsigned char *dst) {
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

/* emb (the chip's embedding under the flip policy) averaged with those of
 * eng->jitters jittered copies; the mean is over every network pass. */
static fv_status add_jitters(const fv_engine *eng, const unsigned char *chip, float *emb, char *err,
                             size_t errlen) {
    enum { CHIP = FV_CHIP_SIZE * FV_CHIP_SIZE * 3 };
    int n = eng->jitters;
    unsigned char *buf = fvi_malloc((size_t)n * CHIP);
    float *e = fvi_malloc((size_t)n * FV_EMBED_DIM * sizeof *e);
    fv_status st = FV_OK;
    if (!buf || !e) {
        st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) jitter_chip(chip, jitter_at(i), buf + (size_t)i * CHIP);
    st = fvi_resnet_embed(eng->resnet, buf, (size_t)n, eng->pool, e, err, errlen);
    if (st != FV_OK) goto done;
    double base = eng->flip == FV_FLIP_NONE ? 1 : 2;
    double norm = 0;
    for (int k = 0; k < FV_EMBED_DIM; k++) {
        double acc = emb[k] * base;
        for (int i = 0; i < n; i++) acc += e[(size_t)i * FV_EMBED_DIM + k];
        emb[k] = (float)(acc / (base + n));
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

/* n chips through the ResNet under the flip policy.  Without flip the n
 * chips go as one batch (the network batches internally); with flip each
 * chip and its mirror are a batch of 2. */
static fv_status resnet_embed(const fv_engine *eng, const unsigned char *chips, size_t n,
                              float *out, char *err, size_t errlen) {
    if (eng->flip == FV_FLIP_NONE && eng->jitters == 0)
        return fvi_resnet_embed(eng->resnet, chips, n, eng->pool, out, err, errlen);
    const size_t chip = (size_t)FV_CHIP_SIZE * FV_CHIP_SIZE * 3;
    for (size_t i = 0; i < n; i++) {
        fv_status st = embed_chip(eng, chips + i * chip, out + i * FV_EMBED_DIM, err, errlen);
        if (st == FV_OK && eng->jitters > 0)
            st = add_jitters(eng, chips + i * chip, out + i * FV_EMBED_DIM, err, errlen);
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
