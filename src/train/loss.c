/*
 * loss.c: triplet mining and loss, optimisers, learning-rate schedules and
 * the seeded random numbers of training (train.h).
 *
 * Distances are squared Euclidean, as in FaceNet.  Mining is exact and
 * deterministic: ties go to the lowest index, so a hand-made batch has one
 * right answer (tests/c/test_train.c checks the indices).
 */
#include <math.h>
#include <string.h>

#include "core/fvi.h"
#include "train/train.h"

#define FVT_PI 3.14159265358979323846

static float sqdist(const float *a, const float *b, int dim) {
    float s = 0.0f;
    for (int k = 0; k < dim; k++) {
        float d = a[k] - b[k];
        s += d * d;
    }
    return s;
}

size_t fvt_mine(const float *emb, const int *labels, int n, int dim, fvt_mining mode,
                fvt_triplet *out, size_t cap) {
    size_t nt = 0;
    for (int a = 0; a < n; a++) {
        const float *ea = emb + (size_t)a * dim;
        if (mode == FVT_MINE_HARD) {
            int bp = -1, bn = -1;
            float dp = -1.0f, dn = INFINITY;
            for (int j = 0; j < n; j++) {
                if (j == a) continue;
                float d = sqdist(ea, emb + (size_t)j * dim, dim);
                if (labels[j] == labels[a]) {
                    if (d > dp) dp = d, bp = j;
                } else if (d < dn) {
                    dn = d, bn = j;
                }
            }
            if (bp >= 0 && bn >= 0 && nt < cap) out[nt++] = (fvt_triplet){a, bp, bn};
            continue;
        }
        for (int p = 0; p < n; p++) {
            if (p == a || labels[p] != labels[a]) continue;
            float dap = sqdist(ea, emb + (size_t)p * dim, dim);
            int semi = -1, far = -1;
            float dsemi = INFINITY, dfar = -1.0f;
            for (int j = 0; j < n; j++) {
                if (labels[j] == labels[a]) continue;
                float d = sqdist(ea, emb + (size_t)j * dim, dim);
                if (d > dap && d < dsemi) dsemi = d, semi = j;
                if (d > dfar) dfar = d, far = j;
            }
            int neg = semi >= 0 ? semi : far;
            if (neg >= 0 && nt < cap) out[nt++] = (fvt_triplet){a, p, neg};
        }
    }
    return nt;
}

float fvt_triplet_loss(const float *emb, int n, int dim, const fvt_triplet *t, size_t nt,
                       float margin, float *grad, size_t *active) {
    if (grad) memset(grad, 0, sizeof(float) * (size_t)n * dim);
    double loss = 0.0;
    size_t act = 0;
    float scale = nt ? 1.0f / (float)nt : 0.0f;
    for (size_t i = 0; i < nt; i++) {
        const float *ea = emb + (size_t)t[i].a * dim, *ep = emb + (size_t)t[i].p * dim,
                    *en = emb + (size_t)t[i].n * dim;
        float l = sqdist(ea, ep, dim) - sqdist(ea, en, dim) + margin;
        if (l <= 0.0f) continue;
        loss += l;
        act++;
        if (!grad) continue;
        float *ga = grad + (size_t)t[i].a * dim, *gp = grad + (size_t)t[i].p * dim,
              *gn = grad + (size_t)t[i].n * dim;
        for (int k = 0; k < dim; k++) {
            float dp = 2.0f * (ea[k] - ep[k]) * scale, dn = 2.0f * (ea[k] - en[k]) * scale;
            ga[k] += dp - dn;
            gp[k] -= dp;
            gn[k] += dn;
        }
    }
    if (active) *active = act;
    return nt ? (float)(loss / (double)nt) : 0.0f;
}

fv_status fvt_optim_init(fvt_optim *o, fvt_opt_kind kind, size_t nparams) {
    memset(o, 0, sizeof(*o));
    o->kind = kind;
    o->lr = kind == FVT_ADAM ? 1e-3f : 0.05f;
    o->momentum = 0.9f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->n = nparams;
    o->m = fvi_calloc(nparams ? nparams : 1, sizeof(float));
    o->v = fvi_calloc(nparams ? nparams : 1, sizeof(float));
    if (!o->m || !o->v) {
        fvt_optim_free(o);
        return FV_E_NO_MEMORY;
    }
    return FV_OK;
}

void fvt_optim_free(fvt_optim *o) {
    fvi_free(o->m);
    fvi_free(o->v);
    o->m = o->v = NULL;
}

void fvt_optim_step(fvt_optim *o, float *params, const float *grads, const unsigned char *decay,
                    float lr) {
    o->step++;
    if (o->kind == FVT_SGD) {
        for (size_t i = 0; i < o->n; i++) {
            float g = grads[i] + (decay[i] ? o->weight_decay * params[i] : 0.0f);
            o->m[i] = o->momentum * o->m[i] + g;
            params[i] -= lr * o->m[i];
        }
        return;
    }
    float c1 = 1.0f - powf(o->beta1, (float)o->step), c2 = 1.0f - powf(o->beta2, (float)o->step);
    for (size_t i = 0; i < o->n; i++) {
        float g = grads[i];
        o->m[i] = o->beta1 * o->m[i] + (1.0f - o->beta1) * g;
        o->v[i] = o->beta2 * o->v[i] + (1.0f - o->beta2) * g * g;
        float upd = (o->m[i] / c1) / (sqrtf(o->v[i] / c2) + o->eps);
        if (decay[i]) upd += o->weight_decay * params[i];
        params[i] -= lr * upd;
    }
}

float fvt_lr_at(fvt_sched s, float lr, long t, long total, long step) {
    switch (s) {
    case FVT_SCHED_STEP: {
        float f = lr;
        for (long k = step > 0 ? t / step : 0; k > 0; k--) f *= 0.1f;
        return f;
    }
    case FVT_SCHED_COSINE: {
        if (total <= 0) return lr;
        double p = (double)t / (double)total;
        if (p > 1.0) p = 1.0;
        double lo = lr * 0.01;
        return (float)(lo + 0.5 * (lr - lo) * (1.0 + cos(FVT_PI * p)));
    }
    default:
        return lr;
    }
}

uint64_t fvt_rand(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float fvt_randn(uint64_t *state) {
    /* Box-Muller from two 53-bit uniforms in (0, 1]. */
    double u1 = ((double)(fvt_rand(state) >> 11) + 1.0) / 9007199254740992.0;
    double u2 = (double)(fvt_rand(state) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * FVT_PI * u2));
}
