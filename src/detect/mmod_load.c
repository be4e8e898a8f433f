/*
 * mmod_load.c: reads mmod_human_face_detector.dat (dlib's serialization of
 * loss_mmod<con<1,9,9,1,1, rcon5<rcon5<rcon5<downsampler<
 * input_rgb_image_pyramid<pyramid_down<6>>>>>>>>) into an fvi_mmod.
 *
 * dlib writes a network outside-in: add_loss_layer's version and loss
 * details, then each add_layer's version from the outermost layer down to
 * the one over the input layer, then the input layer, then every layer's
 * details and bookkeeping (flags and training tensors) from the innermost
 * layer back out.  The file is hostile: every layer type, every shape,
 * stride and padding is checked against the one network we can run, every
 * count against the bytes left (dlib_serial does that), and every weight
 * must be finite.  Batch-norm layers stored as bn_con2 are converted to
 * affine the way dlib's affine_(bn_) does, then folded into the preceding
 * convolution.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/fvi.h"
#include "detect/mmod_model.h"
#include "nn/dlib_serial.h"

/* The model file is ~730 KB; refuse anything absurd before reading it. */
#define MMOD_MAX_FILE_BYTES ((size_t)64 << 20)
/* Largest parameter tensor we accept (floats); the real one is 50,670. */
#define MMOD_MAX_PARAMS ((size_t)1 << 22)

/* Layers from the input up: 'c' conv, 'a' affine, 'r' relu. */
static const char LAYERS[] = "carcarcarcarcarcarc";
#define MMOD_NLAYERS 19

typedef struct {
    int out_c, in_c, k, stride, pad;
} conv_spec;

static const conv_spec CONVS[MMOD_NCONV] = {
    {16, 3, 5, 2, 0},  {32, 16, 5, 2, 0}, {32, 32, 5, 2, 0}, {45, 32, 5, 1, 2},
    {45, 45, 5, 1, 2}, {45, 45, 5, 1, 2}, {1, 45, 9, 1, 4},
};

/* Reads a resizable_tensor of exactly `want` floats (any 4-d shape) into a
 * fresh fvi_malloc buffer.  *nomem set on allocation failure. */
static float *read_tensor(fvi_dser *d, size_t want, int *nomem) {
    int64_t dims[4];
    size_t n;
    if (fvi_dser_tensor_header(d, dims, MMOD_MAX_PARAMS, &n)) return NULL;
    if (n != want) {
        fvi_dser_fail(d, "parameter tensor has the wrong size");
        return NULL;
    }
    float *p = fvi_malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        *nomem = 1;
        fvi_dser_fail(d, "out of memory");
        return NULL;
    }
    if (fvi_dser_raw_floats(d, p, n)) {
        fvi_free(p);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i])) {
            fvi_free(p);
            fvi_dser_fail(d, "non-finite parameter");
            return NULL;
        }
    return p;
}

/* con_4 / con_5: checks the layer is exactly `s` and takes its weights and
 * bias (into cv, owned by the model). */
static int read_conv(fvi_dser *d, const conv_spec *s, fvi_conv *cv, int *nomem) {
    char ver[16];
    if (fvi_dser_string(d, ver, sizeof ver)) return -1;
    int v5 = strcmp(ver, "con_5") == 0;
    if (!v5 && strcmp(ver, "con_4") != 0) return fvi_dser_fail(d, "expected a con_ layer");
    size_t nw = (size_t)s->out_c * s->in_c * s->k * s->k;
    int64_t dims[4];
    size_t np;
    /* The params tensor comes before use_bias, so read its size first and
     * the data once the layout is known. */
    if (fvi_dser_tensor_header(d, dims, MMOD_MAX_PARAMS, &np)) return -1;
    size_t data_off = d->off;
    d->off += 4 * np;
    if (fvi_dser_expect_int(d, s->out_c, "unexpected number of filters") ||
        fvi_dser_expect_int(d, s->k, "unexpected filter rows") ||
        fvi_dser_expect_int(d, s->k, "unexpected filter columns") ||
        fvi_dser_expect_int(d, s->stride, "unexpected stride") ||
        fvi_dser_expect_int(d, s->stride, "unexpected stride") ||
        fvi_dser_expect_int(d, s->pad, "unexpected padding") ||
        fvi_dser_expect_int(d, s->pad, "unexpected padding") ||
        fvi_dser_expect_alias(d, s->out_c, s->in_c, s->k, s->k))
        return -1;
    /* biases alias: (1, out_c, 1, 1) with a bias, empty without. */
    int64_t bv, bd[4];
    if (fvi_dser_int(d, &bv)) return -1;
    if (bv != 1) return fvi_dser_fail(d, "unsupported alias_tensor version");
    for (int i = 0; i < 4; i++)
        if (fvi_dser_int(d, &bd[i])) return -1;
    if (fvi_dser_skip_doubles(d, 4)) return -1;
    int use_bias = 1;
    if (v5 && fvi_dser_bool(d, &use_bias)) return -1;
    if (use_bias && (bd[0] != 1 || bd[1] != s->out_c || bd[2] != 1 || bd[3] != 1))
        return fvi_dser_fail(d, "unexpected bias shape");
    if (np != nw + (use_bias ? (size_t)s->out_c : 0))
        return fvi_dser_fail(d, "conv parameter count does not match its shape");

    size_t end = d->off;
    d->off = data_off;
    cv->out_c = s->out_c;
    cv->in_c = s->in_c;
    cv->kh = cv->kw = s->k;
    cv->stride_y = cv->stride_x = s->stride;
    cv->pad_y = cv->pad_x = s->pad;
    cv->weights = fvi_malloc(nw * sizeof(float));
    cv->bias = fvi_calloc((size_t)s->out_c, sizeof(float));
    if (!cv->weights || !cv->bias) {
        *nomem = 1;
        return fvi_dser_fail(d, "out of memory");
    }
    if (fvi_dser_raw_floats(d, cv->weights, nw)) return -1;
    if (use_bias && fvi_dser_raw_floats(d, cv->bias, (size_t)s->out_c)) return -1;
    for (size_t i = 0; i < nw; i++)
        if (!isfinite(cv->weights[i])) return fvi_dser_fail(d, "non-finite weight");
    for (int i = 0; i < s->out_c; i++)
        if (!isfinite(cv->bias[i])) return fvi_dser_fail(d, "non-finite bias");
    d->off = end;
    return 0;
}

/* affine_ / affine_2 / bn_con2 after a conv with k outputs: folds it into
 * cv.  bn_con2 becomes g = gamma / sqrt(running_var + eps),
 * b = beta - g * running_mean, computed in float as dlib does. */
static int read_affine(fvi_dser *d, int k, fvi_conv *cv, int *nomem) {
    char ver[16];
    int rc = -1;
    float *params = NULL, *rmean = NULL, *rvar = NULL;
    float *g = NULL;
    if (fvi_dser_string(d, ver, sizeof ver)) return -1;
    if (strcmp(ver, "bn_con2") == 0) {
        double eps;
        int64_t tmp;
        if (!(params = read_tensor(d, 2 * (size_t)k, nomem))) goto out;
        if (fvi_dser_expect_alias(d, 1, k, 1, 1) || fvi_dser_expect_alias(d, 1, k, 1, 1) ||
            fvi_dser_skip_tensor(d) || fvi_dser_skip_tensor(d))
            goto out;
        if (!(rmean = read_tensor(d, (size_t)k, nomem))) goto out;
        if (!(rvar = read_tensor(d, (size_t)k, nomem))) goto out;
        if (fvi_dser_int(d, &tmp) || fvi_dser_int(d, &tmp) || fvi_dser_skip_doubles(d, 4) ||
            fvi_dser_double(d, &eps))
            goto out;
        if (!(eps > 0) || !isfinite(eps)) {
            fvi_dser_fail(d, "bad batch-norm epsilon");
            goto out;
        }
        if (!(g = fvi_malloc(2 * (size_t)k * sizeof(float)))) {
            *nomem = 1;
            fvi_dser_fail(d, "out of memory");
            goto out;
        }
        for (int i = 0; i < k; i++) {
            float var = rvar[i] + (float)eps;
            if (!(var > 0)) {
                fvi_dser_fail(d, "negative batch-norm variance");
                goto out;
            }
            g[i] = params[i] / sqrtf(var);
            g[k + i] = params[k + i] - g[i] * rmean[i];
        }
    } else if (strcmp(ver, "affine_") == 0 || strcmp(ver, "affine_2") == 0) {
        int64_t mode;
        int disabled = 0;
        int64_t dims[4];
        size_t np;
        /* A disabled affine layer has no params and is the identity. */
        size_t at = d->off;
        if (fvi_dser_tensor_header(d, dims, MMOD_MAX_PARAMS, &np)) goto out;
        d->off = at;
        if (np == 0) {
            if (fvi_dser_skip_tensor(d)) goto out;
        } else if (!(params = read_tensor(d, 2 * (size_t)k, nomem))) {
            goto out;
        }
        /* gamma and beta aliases: shapes are checked through np. */
        for (int a = 0; a < 2; a++) {
            int64_t v, ad[4];
            if (fvi_dser_int(d, &v) || fvi_dser_int(d, &ad[0]) || fvi_dser_int(d, &ad[1]) ||
                fvi_dser_int(d, &ad[2]) || fvi_dser_int(d, &ad[3]))
                goto out;
            if (v != 1) {
                fvi_dser_fail(d, "unsupported alias_tensor version");
                goto out;
            }
        }
        if (fvi_dser_int(d, &mode)) goto out;
        if (mode != 0) {
            fvi_dser_fail(d, "affine layer is not in conv mode");
            goto out;
        }
        if (strcmp(ver, "affine_2") == 0 && fvi_dser_bool(d, &disabled)) goto out;
        if (disabled || !params) {
            if (!disabled) {
                fvi_dser_fail(d, "affine layer without parameters");
                goto out;
            }
            rc = 0; /* identity */
            goto out;
        }
        g = params;
        params = NULL;
    } else {
        fvi_dser_fail(d, "expected an affine or bn_con layer");
        goto out;
    }
    for (int i = 0; i < 2 * k; i++)
        if (!isfinite(g[i])) {
            fvi_dser_fail(d, "non-finite affine parameter");
            goto out;
        }
    if (fvi_conv_fold_affine(cv, g, g + k)) {
        *nomem = 1;
        fvi_dser_fail(d, "out of memory");
        goto out;
    }
    rc = 0;
out:
    fvi_free(params);
    fvi_free(rmean);
    fvi_free(rvar);
    fvi_free(g);
    return rc;
}

/* loss_mmod_ and its mmod_options. */
static int read_loss(fvi_dser *d, fvi_mmod *m) {
    int64_t v, nwin, wv, w, h;
    char label[64];
    if (fvi_dser_expect_string(d, "loss_mmod_")) return -1;
    if (fvi_dser_int_range(d, 1, 4, &v)) return -1;
    if (v == 1) {
        if (fvi_dser_int_range(d, 1, 100000, &w) || fvi_dser_int_range(d, 1, 100000, &h)) return -1;
    } else {
        /* One window: the last conv has one filter per window. */
        if (fvi_dser_int(d, &nwin)) return -1;
        if (nwin != 1) return fvi_dser_fail(d, "expected exactly one detector window");
        if (fvi_dser_int_range(d, 1, 2, &wv) || fvi_dser_int_range(d, 1, 100000, &w) ||
            fvi_dser_int_range(d, 1, 100000, &h))
            return -1;
        if (wv == 2 && fvi_dser_string(d, label, sizeof label)) return -1;
    }
    m->win_w = (long)w;
    m->win_h = (long)h;
    double fa, miss, match, ign_iou, ign_cover;
    if (fvi_dser_double(d, &fa) || fvi_dser_double(d, &miss) || fvi_dser_double(d, &match) ||
        fvi_dser_double(d, &m->nms_iou) || fvi_dser_double(d, &m->nms_cover) ||
        fvi_dser_double(d, &ign_iou) || fvi_dser_double(d, &ign_cover))
        return -1;
    if (!(m->nms_iou >= 0 && m->nms_iou <= 1) || !(m->nms_cover >= 0 && m->nms_cover <= 1))
        return fvi_dser_fail(d, "bad non-max suppression thresholds");
    if (v >= 3) {
        int64_t pyr;
        if (fvi_dser_int_range(d, 0, 1, &pyr)) return -1;
        if (pyr != 1) return fvi_dser_fail(d, "detector does not assume an image pyramid");
    }
    if (v >= 4) {
        int bbr;
        if (fvi_dser_bool(d, &bbr) || fvi_dser_double(d, &fa)) return -1;
        if (bbr) return fvi_dser_fail(d, "bounding box regression is not supported");
    }
    return 0;
}

/* input_rgb_image_pyramid (version 1 or 2). */
static int read_input(fvi_dser *d, fvi_mmod *m) {
    char ver[32];
    if (fvi_dser_string(d, ver, sizeof ver)) return -1;
    int v2 = strcmp(ver, "input_rgb_image_pyramid2") == 0;
    if (!v2 && strcmp(ver, "input_rgb_image_pyramid") != 0)
        return fvi_dser_fail(d, "expected input_rgb_image_pyramid");
    for (int i = 0; i < 3; i++) {
        if (fvi_dser_float(d, &m->avg[i])) return -1;
        if (!(m->avg[i] >= 0 && m->avg[i] <= 255)) return fvi_dser_fail(d, "bad input mean");
    }
    m->pyr_padding = 10;
    m->pyr_outer_padding = 11;
    if (v2) {
        int64_t p, o;
        if (fvi_dser_int_range(d, 0, 1000, &p) || fvi_dser_int_range(d, 0, 1000, &o)) return -1;
        m->pyr_padding = (long)p;
        m->pyr_outer_padding = (long)o;
    }
    return 0;
}

/* Parses the whole network; returns FV_OK or a status with d->what set. */
static fv_status parse(fvi_dser *d, fvi_mmod *m) {
    int nomem = 0;
    int64_t versions[MMOD_NLAYERS];
    if (fvi_dser_int_range(d, 1, 1, &versions[0]) || read_loss(d, m)) goto bad;
    /* add_layer versions, outermost (index MMOD_NLAYERS-1) first. */
    for (int i = MMOD_NLAYERS - 1; i >= 0; i--) {
        int64_t lo = i == 0 ? 2 : 1, hi = i == 0 ? 3 : 2;
        if (fvi_dser_int_range(d, lo, hi, &versions[i])) goto bad;
    }
    if (read_input(d, m)) goto bad;
    int ci = 0;
    for (int i = 0; i < MMOD_NLAYERS; i++) {
        switch (LAYERS[i]) {
        case 'c':
            if (read_conv(d, &CONVS[ci], &m->conv[ci], &nomem)) goto bad;
            ci++;
            break;
        case 'a':
            if (read_affine(d, CONVS[ci - 1].out_c, &m->conv[ci - 1], &nomem)) goto bad;
            break;
        default:
            if (fvi_dser_expect_string(d, "relu_")) goto bad;
            break;
        }
        if (fvi_dser_add_layer_trailer(d, versions[i], i == 0)) goto bad;
    }
    return FV_OK;
bad:
    if (!d->failed) fvi_dser_fail(d, "parse error");
    return nomem ? FV_E_NO_MEMORY : FV_E_MODEL_CORRUPT;
}

/* Packs the first six convolutions for the bf16 kernel (the fast mode)
 * when this CPU has one; the input's three channels are stored as four (an
 * even stride), every later input has the previous layer's stride.
 * Returns 0, or -1 out of memory. */
static int pack_fast(fvi_mmod *m) {
    if (!fvi_cpu_bf16()) return 0;
    int cs = 4;
    for (int i = 0; i < MMOD_NCONV - 1; i++) {
        if (fvi_conv_bf16_pack(&m->conv[i], cs, &m->fast[i])) return -1;
        cs = m->fast[i].out_cs;
    }
    m->has_fast = 1;
    return 0;
}

void fvi_mmod_destroy(fvi_mmod *det) {
    if (!det) return;
    for (int i = 0; i < MMOD_NCONV; i++) {
        fvi_free(det->conv[i].weights);
        fvi_free(det->conv[i].bias);
    }
    for (int i = 0; i < MMOD_NCONV - 1; i++) fvi_conv_bf16_free(&det->fast[i]);
    fvi_free(det);
}

fv_status fvi_mmod_load_mem(const void *data, size_t len, fvi_mmod **out, char *err,
                            size_t errlen) {
    if (!out) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!data && len) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "data is NULL");
    fvi_mmod *m = fvi_calloc(1, sizeof *m);
    if (!m) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory loading detector");
    fvi_dser d;
    fvi_dser_init(&d, data, len);
    fv_status st = parse(&d, m);
    if (st != FV_OK) {
        fvi_mmod_destroy(m);
        return fvi_seterr(err, errlen, st, "MMOD detector model: %s", d.what);
    }
    if (pack_fast(m)) {
        fvi_mmod_destroy(m);
        return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory loading detector");
    }
    fvi_nn_init();
    *out = m;
    return FV_OK;
}

/* fvi_parse_fn over fvi_mmod_load_mem. */
static fv_status parse_mmod(const void *data, size_t len, void *out, char *err, size_t errlen) {
    return fvi_mmod_load_mem(data, len, out, err, errlen);
}

fv_status fvi_mmod_load(const char *path, fvi_mmod **out, char *err, size_t errlen) {
    if (!out || !path) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    *out = NULL;
    return fvi_load_model_file(path, MMOD_MAX_FILE_BYTES, "MMOD detector", parse_mmod, out, err,
                               errlen);
}
