/*
 * net.c: layers of a trainable network, forward and backward (train.h).
 *
 * Forward convolution is nn.h's fvi_conv_forward_cnhw (the engine's one
 * convolution).  Backward convolution works per sample: the sample's input
 * is unrolled by im2col (K = in_c*kh*kw rows, P = out_h*out_w columns);
 * dW_s = dY_s * cols^T and dcols = W^T * dY_s are two sgemm calls (dY_s is
 * the sample's columns of the CNHW output gradient, read with a leading
 * dimension of n*P), and col2im adds dcols into the input gradient.  The
 * per-sample dW_s are summed in sample order afterwards, so gradients are
 * the same for any pool size.
 */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "core/fvi.h"
#include "train/train.h"

struct fvt_ws {
    int max_n, threads;
    float *act[FVT_MAX_LAYERS + 1];  /* act[i]: input of layer i */
    float *dact[FVT_MAX_LAYERS + 1]; /* gradients of the same */
    float *bn_mean[FVT_MAX_LAYERS], *bn_istd[FVT_MAX_LAYERS];
    float *scratch; /* forward conv scratch, then per-worker backward scratch */
    size_t scratch_n, worker_n;
    float *dw_part; /* per-sample conv weight + bias gradients */
};

static size_t act_size(int c, int h, int w) {
    return (size_t)c * (size_t)h * (size_t)w;
}

fv_status fvt_net_create(const fvt_layer *spec, int nlayers, int in_c, int in_h, int in_w,
                         fvt_net **out, char *err, size_t errlen) {
    *out = NULL;
    if (nlayers < 1 || nlayers > FVT_MAX_LAYERS || in_c < 1 || in_h < 1 || in_w < 1 ||
        act_size(in_c, in_h, in_w) > (1u << 24))
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "bad network shape");
    fvt_net *net = fvi_calloc(1, sizeof(*net));
    if (!net) return FV_E_NO_MEMORY;
    net->nlayers = nlayers;
    net->in_c = in_c;
    net->in_h = in_h;
    net->in_w = in_w;
    int c = in_c, h = in_h, w = in_w, flat = in_h == 1 && in_w == 1;
    size_t np = 0, ns = 0;
    /* shapes of every activation, to check SKIP sources */
    int sc[FVT_MAX_LAYERS + 1], sh[FVT_MAX_LAYERS + 1], sw[FVT_MAX_LAYERS + 1],
        sf[FVT_MAX_LAYERS + 1];
    fv_status st = FV_OK;
    for (int i = 0; i < nlayers && st == FV_OK; i++) {
        fvt_layer *L = &net->layers[i];
        *L = spec[i];
        if ((int)L->kind < 0 || L->kind >= FVT_KIND_COUNT_) {
            st = fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "layer %d: unknown kind", i);
            break;
        }
        sc[i] = c, sh[i] = h, sw[i] = w, sf[i] = flat;
        L->in_c = c, L->in_h = h, L->in_w = w, L->flat_in = flat;
        L->nw = L->nb = 0;
        switch (L->kind) {
        case FVT_CONV: {
            if (flat || L->a < 1 || L->a > 4096 || L->b < 1 || L->b > 11 || L->c < 1 || L->c > 4 ||
                L->d < 0 || L->d >= L->b) {
                st = fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "layer %d: bad conv", i);
                break;
            }
            int oh = fvi_pool_out_dim(h, L->b, L->c, L->d),
                ow = fvi_pool_out_dim(w, L->b, L->c, L->d);
            if (oh < 1 || ow < 1) {
                st = fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "layer %d: conv too big", i);
                break;
            }
            L->nw = (size_t)L->a * c * L->b * L->b;
            L->nb = (size_t)L->a;
            c = L->a, h = oh, w = ow;
            break;
        }
        case FVT_BN:
            if (flat) {
                st = fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "layer %d: bn needs space", i);
                break;
            }
            L->nw = L->nb = (size_t)c;
            L->st_off = ns;
            ns += 2 * (size_t)c;
            break;
        case FVT_RELU:
        case FVT_L2NORM:
            if (L->kind == FVT_L2NORM && !flat)
                st = fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "layer %d: l2 needs flat", i);
            break;
        case FVT_MAXPOOL:
        case FVT_AVGPOOL: {
            if (flat || L->a < 1 || L->a > 8 || L->b < 1 || L->b > 8) {
                st = fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "layer %d: bad pool", i);
                break;
            }
            int oh = fvi_pool_out_dim(h, L->a, L->b, 0), ow = fvi_pool_out_dim(w, L->a, L->b, 0);
            if (oh < 1 || ow < 1) {
                st = fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "layer %d: pool too big", i);
                break;
            }
            h = oh, w = ow;
            break;
        }
        case FVT_GAP:
            if (flat) st = fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "layer %d: gap", i);
            h = w = 1, flat = 1;
            break;
        case FVT_FC:
            if (!flat || L->a < 1 || L->a > 8192) {
                st = fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "layer %d: bad fc", i);
                break;
            }
            L->nw = (size_t)c * L->a;
            L->nb = (size_t)L->a;
            c = L->a;
            break;
        case FVT_SKIP:
            if (L->a < 0 || L->a >= i || sc[L->a] != c || sh[L->a] != h || sw[L->a] != w ||
                sf[L->a] != flat)
                st = fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "layer %d: bad skip", i);
            break;
        default:
            break;
        }
        if (st != FV_OK) break;
        L->out_c = c, L->out_h = h, L->out_w = w;
        L->w_off = np;
        np += L->nw;
        L->b_off = np;
        np += L->nb;
        if (act_size(c, h, w) > (1u << 24) || np > (1u << 26))
            st = fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "layer %d: too large", i);
    }
    if (st == FV_OK && !flat)
        st = fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "the network must end flat");
    if (st == FV_OK) {
        net->nparams = np;
        net->nstate = ns;
        net->params = fvi_calloc(np ? np : 1, sizeof(float));
        net->grads = fvi_calloc(np ? np : 1, sizeof(float));
        net->state = fvi_calloc(ns ? ns : 1, sizeof(float));
        net->decay = fvi_calloc(np ? np : 1, 1);
        if (!net->params || !net->grads || !net->state || !net->decay) st = FV_E_NO_MEMORY;
    }
    if (st != FV_OK) {
        fvt_net_destroy(net);
        return st;
    }
    for (int i = 0; i < nlayers; i++) {
        const fvt_layer *L = &net->layers[i];
        if (L->kind == FVT_CONV || L->kind == FVT_FC) memset(net->decay + L->w_off, 1, L->nw);
    }
    *out = net;
    return FV_OK;
}

void fvt_net_destroy(fvt_net *net) {
    if (!net) return;
    fvi_free(net->params);
    fvi_free(net->grads);
    fvi_free(net->state);
    fvi_free(net->decay);
    fvi_free(net);
}

int fvt_net_out_dim(const fvt_net *net) {
    const fvt_layer *L = &net->layers[net->nlayers - 1];
    return L->out_c;
}

void fvt_net_zero_grad(fvt_net *net) {
    memset(net->grads, 0, net->nparams * sizeof(float));
}

void fvt_net_init(fvt_net *net, uint64_t seed) {
    uint64_t rng = seed ^ 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < net->nlayers; i++) {
        const fvt_layer *L = &net->layers[i];
        float *w = net->params + L->w_off, *b = net->params + L->b_off;
        if (L->kind == FVT_CONV || L->kind == FVT_FC) {
            size_t fan_in = L->kind == FVT_CONV ? (size_t)L->in_c * L->b * L->b : (size_t)L->in_c;
            float s = L->zero_init ? 0.0f : sqrtf(2.0f / (float)fan_in);
            for (size_t k = 0; k < L->nw; k++) w[k] = s * fvt_randn(&rng);
            memset(b, 0, L->nb * sizeof(float));
        } else if (L->kind == FVT_BN) {
            for (size_t k = 0; k < L->nw; k++) w[k] = 1.0f;
            memset(b, 0, L->nb * sizeof(float));
            float *rm = net->state + L->st_off, *rv = rm + L->in_c;
            for (int k = 0; k < L->in_c; k++) rm[k] = 0.0f, rv[k] = 1.0f;
        }
    }
}

static void conv_of(const fvt_net *net, const fvt_layer *L, fvi_conv *cv) {
    cv->out_c = L->a;
    cv->in_c = L->in_c;
    cv->kh = cv->kw = L->b;
    cv->stride_y = cv->stride_x = L->c;
    cv->pad_y = cv->pad_x = L->d;
    cv->weights = net->params + L->w_off;
    cv->bias = net->params + L->b_off;
}

fv_status fvt_ws_create(const fvt_net *net, int max_n, int threads, fvt_ws **out) {
    *out = NULL;
    if (max_n < 1 || max_n > 4096 || threads < 1) return FV_E_INVALID_ARGUMENT;
    fvt_ws *ws = fvi_calloc(1, sizeof(*ws));
    if (!ws) return FV_E_NO_MEMORY;
    ws->max_n = max_n;
    ws->threads = threads;
    fv_status st = FV_OK;
    size_t scratch = 0, worker = 0, dw = 0;
    for (int i = 0; i <= net->nlayers && st == FV_OK; i++) {
        size_t per;
        if (i < net->nlayers) {
            const fvt_layer *L = &net->layers[i];
            per = act_size(L->in_c, L->in_h, L->in_w);
            if (L->kind == FVT_CONV) {
                fvi_conv cv;
                conv_of(net, L, &cv);
                /* the conv's tiling depends on the batch size: size for every n */
                for (int bn = 1; bn <= max_n; bn++) {
                    size_t s = fvi_conv_cnhw_scratch(&cv, bn, L->in_h, L->in_w, threads);
                    if (s > scratch) scratch = s;
                }
                size_t K = (size_t)L->in_c * L->b * L->b, P = (size_t)L->out_h * L->out_w;
                if (2 * K * P > worker) worker = 2 * K * P;
                if ((L->nw + L->nb) * max_n > dw) dw = (L->nw + L->nb) * max_n;
            }
            if (L->kind == FVT_BN) {
                ws->bn_mean[i] = fvi_malloc(sizeof(float) * L->in_c);
                ws->bn_istd[i] = fvi_malloc(sizeof(float) * L->in_c);
                if (!ws->bn_mean[i] || !ws->bn_istd[i]) st = FV_E_NO_MEMORY;
            }
        } else {
            const fvt_layer *L = &net->layers[i - 1];
            per = act_size(L->out_c, L->out_h, L->out_w);
        }
        ws->act[i] = fvi_malloc_aligned(sizeof(float) * per * max_n);
        ws->dact[i] = fvi_malloc_aligned(sizeof(float) * per * max_n);
        if (!ws->act[i] || !ws->dact[i]) st = FV_E_NO_MEMORY;
    }
    if (worker * threads > scratch) scratch = worker * threads;
    ws->worker_n = worker;
    ws->scratch_n = scratch;
    if (st == FV_OK) {
        ws->scratch = fvi_malloc_aligned(sizeof(float) * (scratch ? scratch : 1));
        ws->dw_part = fvi_malloc_aligned(sizeof(float) * (dw ? dw : 1));
        if (!ws->scratch || !ws->dw_part) st = FV_E_NO_MEMORY;
    }
    if (st != FV_OK) {
        fvt_ws_destroy(ws);
        return st;
    }
    *out = ws;
    return FV_OK;
}

void fvt_ws_destroy(fvt_ws *ws) {
    if (!ws) return;
    for (int i = 0; i <= FVT_MAX_LAYERS; i++) {
        fvi_free_aligned(ws->act[i]);
        fvi_free_aligned(ws->dact[i]);
    }
    for (int i = 0; i < FVT_MAX_LAYERS; i++) {
        fvi_free(ws->bn_mean[i]);
        fvi_free(ws->bn_istd[i]);
    }
    fvi_free_aligned(ws->scratch);
    fvi_free_aligned(ws->dw_part);
    fvi_free(ws);
}

float *fvt_ws_input(fvt_ws *ws) {
    return ws->act[0];
}

const float *fvt_ws_dinput(const fvt_ws *ws) {
    return ws->dact[0];
}

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f

static void bn_forward(fvt_net *net, fvt_ws *ws, int li, int n, int train) {
    const fvt_layer *L = &net->layers[li];
    const float *g = net->params + L->w_off, *b = net->params + L->b_off;
    float *rm = net->state + L->st_off, *rv = rm + L->in_c;
    size_t M = (size_t)n * L->in_h * L->in_w;
    for (int c = 0; c < L->in_c; c++) {
        const float *x = ws->act[li] + c * M;
        float *y = ws->act[li + 1] + c * M;
        float mean, istd;
        if (train) {
            double s = 0, s2 = 0;
            for (size_t k = 0; k < M; k++) s += x[k];
            double mu = s / (double)M;
            for (size_t k = 0; k < M; k++) s2 += (x[k] - mu) * (x[k] - mu);
            double var = s2 / (double)M;
            mean = (float)mu;
            istd = (float)(1.0 / sqrt(var + BN_EPS));
            ws->bn_mean[li][c] = mean;
            ws->bn_istd[li][c] = istd;
            rm[c] = (1 - BN_MOMENTUM) * rm[c] + BN_MOMENTUM * mean;
            float unb = M > 1 ? (float)(var * (double)M / (double)(M - 1)) : (float)var;
            rv[c] = (1 - BN_MOMENTUM) * rv[c] + BN_MOMENTUM * unb;
        } else {
            mean = rm[c];
            istd = 1.0f / sqrtf(rv[c] + BN_EPS);
        }
        float sc = g[c] * istd, sh = b[c] - mean * sc;
        for (size_t k = 0; k < M; k++) y[k] = x[k] * sc + sh;
    }
}

static void bn_backward(fvt_net *net, fvt_ws *ws, int li, int n) {
    const fvt_layer *L = &net->layers[li];
    const float *g = net->params + L->w_off;
    float *gg = net->grads + L->w_off, *gb = net->grads + L->b_off;
    size_t M = (size_t)n * L->in_h * L->in_w;
    for (int c = 0; c < L->in_c; c++) {
        const float *x = ws->act[li] + c * M, *dy = ws->dact[li + 1] + c * M;
        float *dx = ws->dact[li] + c * M;
        float mean = ws->bn_mean[li][c], istd = ws->bn_istd[li][c];
        double sdy = 0, sdyx = 0;
        for (size_t k = 0; k < M; k++) {
            float xh = (x[k] - mean) * istd;
            sdy += dy[k];
            sdyx += dy[k] * xh;
        }
        gg[c] += (float)sdyx;
        gb[c] += (float)sdy;
        float a = g[c] * istd, mdy = (float)(sdy / (double)M), mdyx = (float)(sdyx / (double)M);
        for (size_t k = 0; k < M; k++) {
            float xh = (x[k] - mean) * istd;
            dx[k] += a * (dy[k] - mdy - xh * mdyx);
        }
    }
}

/* Max pool (no padding): the window's first maximum, as fvi_max_pool. */
static void pool_backward(const fvt_layer *L, const float *x, const float *dy, float *dx, int n,
                          int is_max) {
    int k = L->a, s = L->b, ih = L->in_h, iw = L->in_w, oh = L->out_h, ow = L->out_w;
    size_t planes = (size_t)n * L->in_c;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *ip = x + pl * ih * iw, *gp = dy + pl * oh * ow;
        float *dp = dx + pl * ih * iw;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                int y0 = oy * s, x0 = ox * s, y1 = y0 + k, x1 = x0 + k;
                if (y1 > ih) y1 = ih;
                if (x1 > iw) x1 = iw;
                float gv = gp[oy * ow + ox];
                if (is_max) {
                    int by = y0, bx = x0;
                    float best = ip[y0 * iw + x0];
                    for (int y = y0; y < y1; y++)
                        for (int xx = x0; xx < x1; xx++)
                            if (ip[y * iw + xx] > best) best = ip[y * iw + xx], by = y, bx = xx;
                    dp[by * iw + bx] += gv;
                } else {
                    float share = gv / (float)((y1 - y0) * (x1 - x0));
                    for (int y = y0; y < y1; y++)
                        for (int xx = x0; xx < x1; xx++) dp[y * iw + xx] += share;
                }
            }
    }
}

typedef struct conv_bw_ctx {
    const fvt_net *net;
    const fvt_layer *L;
    fvt_ws *ws;
    const float *x, *dy;
    float *dx;
    int n;
} conv_bw_ctx;

/* im2col of sample s of a CNHW tensor into cols (K x P). */
static void im2col_sample(const fvt_layer *L, const float *x, int n, int s, float *cols) {
    int k = L->b, st = L->c, pad = L->d, ih = L->in_h, iw = L->in_w, oh = L->out_h, ow = L->out_w;
    size_t P = (size_t)oh * ow;
    for (int c = 0; c < L->in_c; c++) {
        const float *xp = x + ((size_t)c * n + s) * ih * iw;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = cols + (((size_t)c * k + ky) * k + kx) * P;
                for (int oy = 0; oy < oh; oy++) {
                    int y = oy * st - pad + ky;
                    for (int ox = 0; ox < ow; ox++) {
                        int xx = ox * st - pad + kx;
                        row[oy * ow + ox] =
                            (y >= 0 && y < ih && xx >= 0 && xx < iw) ? xp[y * iw + xx] : 0.0f;
                    }
                }
            }
    }
}

static void col2im_sample(const fvt_layer *L, const float *cols, int n, int s, float *dx) {
    int k = L->b, st = L->c, pad = L->d, ih = L->in_h, iw = L->in_w, oh = L->out_h, ow = L->out_w;
    size_t P = (size_t)oh * ow;
    for (int c = 0; c < L->in_c; c++) {
        float *dp = dx + ((size_t)c * n + s) * ih * iw;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *row = cols + (((size_t)c * k + ky) * k + kx) * P;
                for (int oy = 0; oy < oh; oy++) {
                    int y = oy * st - pad + ky;
                    if (y < 0 || y >= ih) continue;
                    for (int ox = 0; ox < ow; ox++) {
                        int xx = ox * st - pad + kx;
                        if (xx >= 0 && xx < iw) dp[y * iw + xx] += row[oy * ow + ox];
                    }
                }
            }
    }
}

static void conv_bw_task(void *vctx, int begin, int end, int worker) {
    conv_bw_ctx *C = vctx;
    const fvt_layer *L = C->L;
    int K = L->in_c * L->b * L->b, P = L->out_h * L->out_w, O = L->a, n = C->n;
    float *cols = C->ws->scratch + (size_t)worker * C->ws->worker_n;
    float *dcols = cols + (size_t)K * P;
    const float *W = C->net->params + L->w_off;
    for (int s = begin; s < end; s++) {
        float *dw = C->ws->dw_part + (size_t)s * (L->nw + L->nb), *db = dw + L->nw;
        const float *dys = C->dy + (size_t)s * P; /* row o at dys + o*n*P */
        im2col_sample(L, C->x, n, s, cols);
        /* dW_s (O x K) = dY_s (O x P) * cols^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, O, K, P, 1.0f, dys, n * P, cols, P,
                    0.0f, dw, K);
        for (int o = 0; o < O; o++) {
            const float *r = dys + (size_t)o * n * P;
            float acc = 0.0f;
            for (int p = 0; p < P; p++) acc += r[p];
            db[o] = acc;
        }
        /* dcols (K x P) = W^T (K x O) * dY_s */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, O, 1.0f, W, K, dys, n * P, 0.0f,
                    dcols, P);
        col2im_sample(L, dcols, n, s, C->dx);
    }
}

static void conv_backward(fvt_net *net, fvt_ws *ws, int li, int n, fvi_workers *pool) {
    const fvt_layer *L = &net->layers[li];
    conv_bw_ctx C = {net, L, ws, ws->act[li], ws->dact[li + 1], ws->dact[li], n};
    fvi_workers_run(pool, n, 1, conv_bw_task, &C);
    size_t per = L->nw + L->nb;
    float *g = net->grads + L->w_off; /* weights then bias: contiguous */
    for (int s = 0; s < n; s++) {
        const float *p = ws->dw_part + (size_t)s * per;
        for (size_t k = 0; k < per; k++) g[k] += p[k];
    }
}

const float *fvt_forward(fvt_net *net, fvt_ws *ws, int n, int train, fvi_workers *pool) {
    FVI_ASSERT(n >= 1 && n <= ws->max_n);
    for (int i = 0; i < net->nlayers; i++) {
        const fvt_layer *L = &net->layers[i];
        float *x = ws->act[i], *y = ws->act[i + 1];
        size_t in_n = act_size(L->in_c, L->in_h, L->in_w) * n;
        size_t out_n = act_size(L->out_c, L->out_h, L->out_w) * n;
        switch (L->kind) {
        case FVT_CONV: {
            fvi_conv cv;
            conv_of(net, L, &cv);
            fvi_tensor ti = {n, L->in_c, L->in_h, L->in_w, x};
            fvi_tensor to = {n, L->out_c, L->out_h, L->out_w, y};
            fvi_conv_forward_cnhw(&cv, &ti, &to, 0, ws->scratch, pool);
            break;
        }
        case FVT_BN:
            bn_forward(net, ws, i, n, train);
            break;
        case FVT_RELU:
            for (size_t k = 0; k < in_n; k++) y[k] = x[k] > 0.0f ? x[k] : 0.0f;
            break;
        case FVT_MAXPOOL:
        case FVT_AVGPOOL: {
            /* planes of CNHW in order; the op only needs their count */
            fvi_tensor ti = {L->in_c, n, L->in_h, L->in_w, x};
            fvi_tensor to = {L->in_c, n, L->out_h, L->out_w, y};
            if (L->kind == FVT_MAXPOOL)
                fvi_max_pool(&ti, &to, L->a, L->a, L->b, L->b, 0, 0);
            else
                fvi_avg_pool(&ti, &to, L->a, L->a, L->b, L->b, 0, 0);
            break;
        }
        case FVT_GAP: {
            fvi_tensor ti = {n, L->in_c, L->in_h, L->in_w, x};
            fvi_avg_pool_everything_cnhw(&ti, y);
            break;
        }
        case FVT_FC: {
            const float *W = net->params + L->w_off, *b = net->params + L->b_off;
            for (int s = 0; s < n; s++) memcpy(y + (size_t)s * L->a, b, sizeof(float) * L->a);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, L->a, L->in_c, 1.0f, x,
                        L->in_c, W, L->a, 1.0f, y, L->a);
            break;
        }
        case FVT_L2NORM:
            for (int s = 0; s < n; s++) {
                const float *xr = x + (size_t)s * L->in_c;
                float *yr = y + (size_t)s * L->in_c;
                double ss = 0;
                for (int k = 0; k < L->in_c; k++) ss += (double)xr[k] * xr[k];
                float inv = (float)(1.0 / sqrt(ss + 1e-12));
                for (int k = 0; k < L->in_c; k++) yr[k] = xr[k] * inv;
            }
            break;
        case FVT_SKIP: {
            const float *z = ws->act[L->a];
            for (size_t k = 0; k < out_n; k++) y[k] = x[k] + z[k];
            break;
        }
        default:
            break;
        }
    }
    return ws->act[net->nlayers];
}

void fvt_backward(fvt_net *net, fvt_ws *ws, int n, const float *dout, fvi_workers *pool) {
    for (int i = 0; i < net->nlayers; i++) {
        const fvt_layer *L = &net->layers[i];
        memset(ws->dact[i], 0, sizeof(float) * act_size(L->in_c, L->in_h, L->in_w) * n);
    }
    const fvt_layer *last = &net->layers[net->nlayers - 1];
    memcpy(ws->dact[net->nlayers], dout, sizeof(float) * (size_t)n * last->out_c);
    for (int i = net->nlayers - 1; i >= 0; i--) {
        const fvt_layer *L = &net->layers[i];
        const float *x = ws->act[i], *y = ws->act[i + 1], *dy = ws->dact[i + 1];
        float *dx = ws->dact[i];
        size_t in_n = act_size(L->in_c, L->in_h, L->in_w) * n;
        switch (L->kind) {
        case FVT_CONV:
            conv_backward(net, ws, i, n, pool);
            break;
        case FVT_BN:
            bn_backward(net, ws, i, n);
            break;
        case FVT_RELU:
            for (size_t k = 0; k < in_n; k++) dx[k] += x[k] > 0.0f ? dy[k] : 0.0f;
            break;
        case FVT_MAXPOOL:
        case FVT_AVGPOOL:
            pool_backward(L, x, dy, dx, n, L->kind == FVT_MAXPOOL);
            break;
        case FVT_GAP: {
            size_t P = (size_t)L->in_h * L->in_w;
            for (int c = 0; c < L->in_c; c++)
                for (int s = 0; s < n; s++) {
                    float g = dy[(size_t)s * L->in_c + c] / (float)P;
                    float *d = dx + ((size_t)c * n + s) * P;
                    for (size_t k = 0; k < P; k++) d[k] += g;
                }
            break;
        }
        case FVT_FC: {
            const float *W = net->params + L->w_off;
            float *gW = net->grads + L->w_off, *gb = net->grads + L->b_off;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L->in_c, L->a, n, 1.0f, x, L->in_c,
                        dy, L->a, 1.0f, gW, L->a);
            for (int s = 0; s < n; s++)
                for (int o = 0; o < L->a; o++) gb[o] += dy[(size_t)s * L->a + o];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, L->in_c, L->a, 1.0f, dy, L->a,
                        W, L->a, 1.0f, dx, L->in_c);
            break;
        }
        case FVT_L2NORM:
            for (int s = 0; s < n; s++) {
                const float *xr = x + (size_t)s * L->in_c, *yr = y + (size_t)s * L->in_c,
                            *gr = dy + (size_t)s * L->in_c;
                float *dr = dx + (size_t)s * L->in_c;
                double ss = 0, dot = 0;
                for (int k = 0; k < L->in_c; k++) {
                    ss += (double)xr[k] * xr[k];
                    dot += (double)yr[k] * gr[k];
                }
                float inv = (float)(1.0 / sqrt(ss + 1e-12));
                for (int k = 0; k < L->in_c; k++) dr[k] += (gr[k] - yr[k] * (float)dot) * inv;
            }
            break;
        case FVT_SKIP: {
            float *dz = ws->dact[L->a];
            for (size_t k = 0; k < in_n; k++) {
                dx[k] += dy[k];
                dz[k] += dy[k];
            }
            break;
        }
        default:
            break;
        }
    }
}
