/*
 * model.c: the trained-model file (docs/model-format.md): writer, reader,
 * and the chips-to-tensor step a scratch model's input needs.  The public
 * fv_model (load, embed) is the pipeline's (src/pipeline/model.c), which
 * runs these nets beside the ResNet.
 *
 * A file is a text header (one "key values" line each, ending at "end\n")
 * followed by float32 little-endian arrays: parameters, BN running
 * statistics, then, in a checkpoint, the optimiser's two moment arrays.
 * The reader treats the file as hostile: size cap before reading, line and
 * token limits, every layer checked by fvt_net_create, and the counts in
 * the header must equal both what the architecture needs and the bytes
 * that follow.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fvi.h"
#include "image/resize.h"
#include "train/train.h"

#define MODEL_MAGIC "faceverify-model 1"
#define MAX_FILE (256u << 20)
#define MAX_HEADER (64u << 10)

static const char *const kind_names[FVT_KIND_COUNT_] = {
    "conv", "bn", "relu", "maxpool", "avgpool", "gap", "fc", "l2norm", "skip"};

void fvt_model_id(const fvt_net *net, const char *kind, char *out, size_t cap) {
    uint64_t h = 0xcbf29ce484222325ull;
    const unsigned char *p = (const unsigned char *)net->params;
    for (size_t i = 0; i < net->nparams * sizeof(float); i++) h = (h ^ p[i]) * 0x100000001b3ull;
    p = (const unsigned char *)net->state;
    for (size_t i = 0; i < net->nstate * sizeof(float); i++) h = (h ^ p[i]) * 0x100000001b3ull;
    snprintf(out, cap, "%s-%016llx", kind, (unsigned long long)h);
}

/* Text fields are one line of printable characters. */
static void clean_line(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 32 || (unsigned char)*s > 126) *s = ' ';
}

fv_status fvt_model_save(const char *path, const fvt_net *net, fvt_meta *meta, const fvt_optim *opt,
                         const fvt_ckpt *ck, char *err, size_t errlen) {
    if (!meta->id[0]) fvt_model_id(net, meta->kind[0] ? meta->kind : "model", meta->id, 64);
    clean_line(meta->id);
    clean_line(meta->kind);
    clean_line(meta->summary);
    size_t plen = strlen(path);
    char *tmp = fvi_malloc(plen + 5);
    if (!tmp) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        char eb[128];
        if (strerror_r(e, eb, sizeof eb) != 0) eb[0] = '\0'; /* XSI: int; thread-safe */
        fvi_free(tmp);
        return fvi_seterr(err, errlen, FV_E_IO, "cannot write %s: %s", path, eb);
    }
    fprintf(f, "%s\n", MODEL_MAGIC);
    fprintf(f, "id %s\nkind %s\n", meta->id, meta->kind[0] ? meta->kind : "model");
    fprintf(f, "input %d %d %d\n", net->in_c, net->in_h, net->in_w);
    fprintf(f, "norm %.9g %.9g\n", meta->norm_mean, meta->norm_std);
    fprintf(f, "embedding %d\n", fvt_net_out_dim(net));
    fprintf(f, "threshold %.9g\n", meta->threshold);
    fprintf(f, "val_accuracy %.9g\nval_auc %.9g\n", meta->val_accuracy, meta->val_auc);
    fprintf(f, "summary %s\n", meta->summary);
    fprintf(f, "layers %d\n", net->nlayers);
    for (int i = 0; i < net->nlayers; i++) {
        const fvt_layer *L = &net->layers[i];
        fprintf(f, "layer %s %d %d %d %d\n", kind_names[L->kind], L->a, L->b, L->c, L->d);
    }
    fprintf(f, "params %zu\nstate %zu\n", net->nparams, net->nstate);
    if (opt && ck) {
        fprintf(f, "optim %s %ld %zu %.9g %.9g %.9g %.9g %.9g %.9g\n",
                opt->kind == FVT_ADAM ? "adam" : "sgd", opt->step, opt->n, opt->lr, opt->momentum,
                opt->beta1, opt->beta2, opt->eps, opt->weight_decay);
        fprintf(f, "checkpoint %d %llu %.9g %d\n", ck->epoch, (unsigned long long)ck->rng,
                ck->best_metric, ck->bad_epochs);
    }
    fputs("end\n", f);
    int ok = fwrite(net->params, sizeof(float), net->nparams, f) == net->nparams &&
             fwrite(net->state, sizeof(float), net->nstate, f) == net->nstate;
    if (ok && opt && ck)
        ok = fwrite(opt->m, sizeof(float), opt->n, f) == opt->n &&
             fwrite(opt->v, sizeof(float), opt->n, f) == opt->n;
    ok = (fclose(f) == 0) && ok;
    if (ok) ok = rename(tmp, path) == 0;
    if (!ok) remove(tmp);
    fvi_free(tmp);
    if (!ok) return fvi_seterr(err, errlen, FV_E_IO, "cannot write %s", path);
    return FV_OK;
}

/* Reads the next header line into line (NUL-terminated, without the
 * newline); advances *pos.  -1 at the end of the header area. */
static int next_line(const char *buf, size_t len, size_t *pos, char *line, size_t cap) {
    size_t i = *pos, k = 0;
    while (i < len && buf[i] != '\n') {
        if (k + 1 >= cap) return -1;
        line[k++] = buf[i++];
    }
    if (i >= len) return -1;
    line[k] = '\0';
    *pos = i + 1;
    return 0;
}

static int parse_kind(const char *s) {
    for (int k = 0; k < FVT_KIND_COUNT_; k++)
        if (strcmp(s, kind_names[k]) == 0) return k;
    return -1;
}

static fv_status load_buf(const char *buf, size_t len, const char *path, fvt_net **out,
                          fvt_meta *meta, fvt_optim *opt, fvt_ckpt *ck, char *err, size_t errlen) {
    char line[1024];
    size_t pos = 0;
    memset(meta, 0, sizeof(*meta));
    if (next_line(buf, len, &pos, line, sizeof(line)) != 0 || strcmp(line, MODEL_MAGIC) != 0)
        return fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: not a faceverify model", path);
    fvt_layer spec[FVT_MAX_LAYERS];
    int nl = -1, got = 0, in_c = 0, in_h = 0, in_w = 0, emb = 0, ended = 0, has_opt = 0;
    size_t np = 0, ns = 0, on = 0;
    char okind[16] = "";
    long ostep = 0;
    float ov[6] = {0};
    memset(spec, 0, sizeof(spec));
    while (pos < MAX_HEADER && next_line(buf, len, &pos, line, sizeof(line)) == 0) {
        char key[32], rest[1024];
        rest[0] = '\0';
        if (sscanf(line, "%31s %1023[^\n]", key, rest) < 1) goto bad;
        int ok = 1;
        if (strcmp(key, "end") == 0) {
            ended = 1;
            break;
        } else if (strcmp(key, "id") == 0) {
            ok = sscanf(rest, "%63s", meta->id) == 1;
        } else if (strcmp(key, "kind") == 0) {
            ok = sscanf(rest, "%15s", meta->kind) == 1;
        } else if (strcmp(key, "input") == 0) {
            ok = sscanf(rest, "%d %d %d", &in_c, &in_h, &in_w) == 3;
        } else if (strcmp(key, "norm") == 0) {
            ok = sscanf(rest, "%f %f", &meta->norm_mean, &meta->norm_std) == 2 &&
                 meta->norm_std > 0.0f && isfinite(meta->norm_mean);
        } else if (strcmp(key, "embedding") == 0) {
            ok = sscanf(rest, "%d", &emb) == 1;
        } else if (strcmp(key, "threshold") == 0) {
            ok = sscanf(rest, "%f", &meta->threshold) == 1 && isfinite(meta->threshold);
        } else if (strcmp(key, "val_accuracy") == 0) {
            ok = sscanf(rest, "%f", &meta->val_accuracy) == 1;
        } else if (strcmp(key, "val_auc") == 0) {
            ok = sscanf(rest, "%f", &meta->val_auc) == 1;
        } else if (strcmp(key, "summary") == 0) {
            size_t sl = strlen(rest);
            if (sl >= sizeof(meta->summary)) sl = sizeof(meta->summary) - 1;
            memcpy(meta->summary, rest, sl);
            meta->summary[sl] = '\0';
        } else if (strcmp(key, "layers") == 0) {
            ok = nl < 0 && sscanf(rest, "%d", &nl) == 1 && nl >= 1 && nl <= FVT_MAX_LAYERS;
        } else if (strcmp(key, "layer") == 0) {
            char kn[16];
            fvt_layer *L = &spec[got];
            ok = nl > 0 && got < nl &&
                 sscanf(rest, "%15s %d %d %d %d", kn, &L->a, &L->b, &L->c, &L->d) == 5;
            int k = ok ? parse_kind(kn) : -1;
            ok = ok && k >= 0;
            if (ok) L->kind = (fvt_kind)k, got++;
        } else if (strcmp(key, "params") == 0) {
            ok = sscanf(rest, "%zu", &np) == 1;
        } else if (strcmp(key, "state") == 0) {
            ok = sscanf(rest, "%zu", &ns) == 1;
        } else if (strcmp(key, "optim") == 0) {
            ok = sscanf(rest, "%15s %ld %zu %f %f %f %f %f %f", okind, &ostep, &on, &ov[0], &ov[1],
                        &ov[2], &ov[3], &ov[4], &ov[5]) == 9 &&
                 ostep >= 0;
            has_opt |= ok;
        } else if (strcmp(key, "checkpoint") == 0) {
            fvt_ckpt tmp;
            unsigned long long rng;
            ok = sscanf(rest, "%d %llu %f %d", &tmp.epoch, &rng, &tmp.best_metric,
                        &tmp.bad_epochs) == 4;
            tmp.rng = rng;
            if (ok && ck) *ck = tmp;
            has_opt |= ok ? 2 : 0;
        } /* unknown keys are ignored: later versions may add metadata */
        if (!ok) goto bad;
    }
    if (!ended || nl < 1 || got != nl)
        return fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: incomplete header", path);
    fvt_net *net = NULL;
    char e2[200];
    if (fvt_net_create(spec, nl, in_c, in_h, in_w, &net, e2, sizeof(e2)) != FV_OK)
        return fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: %s", path, e2);
    size_t need = (np + ns) * sizeof(float);
    int want_opt = opt && ck;
    if (want_opt && has_opt == 3) need += 2 * on * sizeof(float);
    if (net->nparams != np || net->nstate != ns || fvt_net_out_dim(net) != emb ||
        len - pos != need || (want_opt && (has_opt != 3 || on != np))) {
        fvt_net_destroy(net);
        return fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: sizes disagree", path);
    }
    memcpy(net->params, buf + pos, np * sizeof(float));
    memcpy(net->state, buf + pos + np * sizeof(float), ns * sizeof(float));
    for (size_t i = 0; i < np; i++)
        if (!isfinite(net->params[i])) {
            fvt_net_destroy(net);
            return fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: non-finite weight", path);
        }
    if (want_opt) {
        fvt_opt_kind k = strcmp(okind, "adam") == 0 ? FVT_ADAM : FVT_SGD;
        if (fvt_optim_init(opt, k, np) != FV_OK) {
            fvt_net_destroy(net);
            return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "%s: out of memory", path);
        }
        opt->step = ostep;
        opt->lr = ov[0], opt->momentum = ov[1], opt->beta1 = ov[2], opt->beta2 = ov[3];
        opt->eps = ov[4], opt->weight_decay = ov[5];
        const char *p = buf + pos + (np + ns) * sizeof(float);
        memcpy(opt->m, p, np * sizeof(float));
        memcpy(opt->v, p + np * sizeof(float), np * sizeof(float));
    }
    *out = net;
    return FV_OK;
bad:
    return fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "%s: bad header line \"%.60s\"", path, line);
}

fv_status fvt_model_load(const char *path, fvt_net **net, fvt_meta *meta, fvt_optim *opt,
                         fvt_ckpt *ck, char *err, size_t errlen) {
    *net = NULL;
    unsigned char *buf = NULL;
    size_t len = 0;
    fv_status st = fvi_read_model_file(path, MAX_FILE, "model", &buf, &len, err, errlen);
    if (st == FV_OK) st = load_buf((const char *)buf, len, path, net, meta, opt, ck, err, errlen);
    fvi_free(buf);
    return st;
}

fv_status fvt_chips_to_input(const unsigned char *chips, int n, int side, int out_side, float mean,
                             float std, float *dst) {
    size_t plane = (size_t)out_side * out_side, chip = (size_t)side * side * 3;
    for (int s = 0; s < n; s++) {
        fv_image *src = NULL, *small = NULL;
        fv_status st = fv_image_from_rgb(chips + chip * s, side, side, &src);
        if (st == FV_OK && out_side != side)
            st = fvi_image_downscale(src, out_side, out_side, &small);
        if (st != FV_OK) {
            fv_image_destroy(src);
            return st;
        }
        const unsigned char *px = (small ? small : src)->rgb;
        for (int c = 0; c < 3; c++) {
            float *d = dst + ((size_t)c * n + s) * plane;
            for (size_t i = 0; i < plane; i++) d[i] = ((float)px[i * 3 + c] / 255.0f - mean) / std;
        }
        fv_image_destroy(small);
        fv_image_destroy(src);
    }
    return FV_OK;
}
