/*
 * eval.c: `faceverify eval-pairs`, the "face verification metric measure"
 * of the original design.
 *
 * Input: a CSV with header path_a,path_b,same (paths relative to --root),
 * or an LFW pairs file (pairs.txt, pairsDevTrain.txt: a count line, then
 * "name n1 n2" for a matched pair and "name1 n1 name2 n2" for a mismatched
 * one, mapped to name/name_%04d.jpg).  Every distinct image is decoded and
 * embedded once (the engine's pool spreads each embedding over the cores);
 * a pair whose image failed (no face, unreadable) is skipped and listed
 * with the reason.  Output: accuracy at the threshold, the best threshold,
 * ROC AUC, TAR at FAR 1e-2 / 1e-3 where there are enough different pairs,
 * and distance summaries per class.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fvi.h"
#include "metrics.h"

typedef fv_cli_pair pair_t;

typedef struct {
    char *path;
    fv_status st;
    float emb[FV_EMBED_DIM];
} image_t;

typedef fv_cli_pair_list pair_list;

static int push_pair(pair_list *l, const char *a, const char *b, int same) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        pair_t *v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    pair_t *p = &l->v[l->n];
    p->a = strdup(a);
    p->b = strdup(b);
    p->same = same;
    if (!p->a || !p->b) {
        free(p->a);
        free(p->b);
        return -1;
    }
    l->n++;
    return 0;
}

/* Splits line in place on any of seps; returns the field count (<= max). */
static int split(char *line, const char *seps, char **f, int max) {
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, seps, &save); t && n < max; t = strtok_r(NULL, seps, &save))
        f[n++] = t;
    return n;
}

static int lfw_path(char *out, size_t cap, const char *name, const char *num) {
    char *end;
    long k = strtol(num, &end, 10);
    if (*end || k < 1 || k > 9999) return -1;
    int w = snprintf(out, cap, "%s/%s_%04ld.jpg", name, name, k);
    return w < 0 || (size_t)w >= cap ? -1 : 0;
}

int fv_cli_read_pairs(const char *file, pair_list *l) {
    FILE *f = fopen(file, "r");
    if (!f) {
        fprintf(stderr, "faceverify: cannot open %s\n", file);
        return -1;
    }
    char line[4096];
    int lineno = 0, csv = -1, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        if (csv < 0) {
            csv = strncmp(line, "path_a", 6) == 0;
            if (csv) continue;
            char *end;
            strtol(line, &end, 10);
            if (end != line) continue; /* LFW count line */
            csv = 0;
        }
        char *fld[5];
        char pa[1024], pb[1024];
        int n = split(line, csv ? "," : "\t ", fld, 5);
        if (csv && n == 3) {
            int same = !strcmp(fld[2], "1") || !strcmp(fld[2], "true") || !strcmp(fld[2], "True");
            if (push_pair(l, fld[0], fld[1], same)) rc = -1;
        } else if (!csv && n == 3 && !lfw_path(pa, sizeof pa, fld[0], fld[1]) &&
                   !lfw_path(pb, sizeof pb, fld[0], fld[2])) {
            if (push_pair(l, pa, pb, 1)) rc = -1;
        } else if (!csv && n == 4 && !lfw_path(pa, sizeof pa, fld[0], fld[1]) &&
                   !lfw_path(pb, sizeof pb, fld[2], fld[3])) {
            if (push_pair(l, pa, pb, 0)) rc = -1;
        } else {
            fprintf(stderr, "faceverify: %s:%d: not a pair line\n", file, lineno);
            rc = -1;
        }
        if (rc) break;
    }
    fclose(f);
    if (!rc && l->n == 0) {
        fprintf(stderr, "faceverify: %s: no pairs\n", file);
        rc = -1;
    }
    return rc;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Index of path in the sorted name table. */
static int find_image(char **sorted, size_t n, const char *path) {
    char **hit = bsearch(&path, sorted, n, sizeof *sorted, cmp_str);
    return hit ? (int)(hit - sorted) : -1;
}

static void progress(size_t done, size_t total) {
    if (!isatty(2)) return;
    int width = 40, filled = (int)(width * done / (total ? total : 1));
    fprintf(stderr, "\r[%.*s%*s] %zu/%zu images", filled,
            "########################################", width - filled, "", done, total);
    if (done == total) fputc('\n', stderr);
}

static json_t *summary_json(const fv_dist_summary *s) {
    if (!s->count) return json_null();
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f}", "count", (json_int_t)s->count, "min", s->min,
                     "p05", s->p05, "median", s->median, "mean", s->mean, "p95", s->p95, "max",
                     s->max);
}

int fv_cli_eval_pairs(fv_cli_opts *o) {
    if (!o->pairs || !o->root) {
        fprintf(stderr, "faceverify eval-pairs: needs --pairs FILE and --root DIR\n");
        return FV_EXIT_INPUT;
    }
    pair_list pl = {0};
    char **names = NULL;
    image_t *imgs = NULL;
    fv_pair_score *scores = NULL;
    fv_engine *eng = NULL;
    fv_model *model = NULL;
    json_t *skipped = json_array();
    size_t nimg = 0, nscored = 0;
    int code = FV_EXIT_INPUT;
    if (fv_cli_read_pairs(o->pairs, &pl)) goto done;

    /* distinct images */
    names = malloc(2 * pl.n * sizeof *names);
    if (!names) goto oom;
    for (size_t i = 0; i < pl.n; i++) {
        names[2 * i] = pl.v[i].a;
        names[2 * i + 1] = pl.v[i].b;
    }
    qsort(names, 2 * pl.n, sizeof *names, cmp_str);
    for (size_t i = 0; i < 2 * pl.n; i++)
        if (nimg == 0 || strcmp(names[nimg - 1], names[i])) names[nimg++] = names[i];
    imgs = calloc(nimg, sizeof *imgs);
    scores = calloc(pl.n, sizeof *scores);
    if (!imgs || !scores) goto oom;
    for (size_t i = 0; i < pl.n; i++) {
        pl.v[i].ia = find_image(names, nimg, pl.v[i].a);
        pl.v[i].ib = find_image(names, nimg, pl.v[i].b);
    }

    code = FV_EXIT_FAILURE;
    if (fv_cli_model(o, &model) != FV_OK || fv_cli_engine(o, &eng) != FV_OK) goto done;
    double t0 = fvi_now_ms();
    for (size_t i = 0; i < nimg; i++) {
        char path[4096];
        fv_image *img = NULL;
        fv_face_result r;
        imgs[i].path = names[i];
        snprintf(path, sizeof path, "%s/%s", o->root, names[i]);
        imgs[i].st = fv_image_load(path, &o->cfg.limits, &img, NULL, 0);
        if (imgs[i].st == FV_OK) {
            imgs[i].st = fv_cli_embed(eng, model, img, o, &r, NULL, 0);
            if (imgs[i].st == FV_OK) memcpy(imgs[i].emb, r.embedding, sizeof r.embedding);
        }
        fv_image_destroy(img);
        progress(i + 1, nimg);
    }
    double elapsed = fvi_now_ms() - t0;

    float thr = o->verify.threshold > 0 ? o->verify.threshold
                : model                 ? fv_model_threshold(model)
                                        : fv_engine_threshold(eng);
    size_t pos = 0, neg = 0;
    for (size_t i = 0; i < pl.n; i++) {
        const pair_t *p = &pl.v[i];
        const image_t *ia = &imgs[p->ia], *ib = &imgs[p->ib];
        if (ia->st != FV_OK || ib->st != FV_OK) {
            const image_t *bad = ia->st != FV_OK ? ia : ib;
            json_array_append_new(skipped, json_pack("{s:s,s:s,s:b,s:s,s:s}", "path_a", p->a,
                                                     "path_b", p->b, "same", p->same, "image",
                                                     bad->path, "reason", fv_status_name(bad->st)));
            continue;
        }
        scores[nscored].distance = fv_distance(ia->emb, ib->emb);
        scores[nscored].same = p->same;
        pos += p->same != 0;
        neg += p->same == 0;
        nscored++;
    }
    if (nscored == 0) {
        fprintf(stderr, "faceverify: no pair could be evaluated (%zu skipped)\n", pl.n);
        code = FV_EXIT_INPUT;
        goto done;
    }
    double acc = fv_metric_accuracy(scores, nscored, thr);
    double best_t = 0, best_acc = 0;
    fv_metric_best_threshold(scores, nscored, &best_t, &best_acc);
    double auc = fv_metric_roc_auc(scores, nscored);
    static const double fars[] = {1e-2, 1e-3};
    static const char *const far_keys[] = {"0.01", "0.001"};
    json_t *tar = json_object();
    double tars[2];
    for (int k = 0; k < 2; k++) {
        tars[k] = fv_metric_tar_at_far(scores, nscored, fars[k], NULL);
        json_object_set_new(tar, far_keys[k], tars[k] < 0 ? json_null() : json_real(tars[k]));
    }
    fv_dist_summary ss, sd;
    fv_metric_summary(scores, nscored, 1, &ss);
    fv_metric_summary(scores, nscored, 0, &sd);
    size_t nskipped = json_array_size(skipped);
    if (o->json) {
        fv_cli_print_json(
            json_pack("{s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:o*,s:o,s:{s:o,s:o},s:s,s:s,s:I,s:f,s:O}",
                      "pairs", (json_int_t)nscored, "pairs_total", (json_int_t)pl.n, "same_pairs",
                      (json_int_t)pos, "different_pairs", (json_int_t)neg, "threshold", (double)thr,
                      "accuracy", acc, "best_threshold", best_t, "best_accuracy", best_acc,
                      "roc_auc", auc == auc ? json_real(auc) : json_null(), "tar_at_far", tar,
                      "distances", "same", summary_json(&ss), "different", summary_json(&sd),
                      "model", model ? fv_model_id(model) : FV_MODEL_ID, "detector",
                      fv_detector_name(o->verify.detect.detector), "images", (json_int_t)nimg,
                      "ms_per_image", elapsed / (double)nimg, "skipped", skipped));
    } else {
        json_decref(tar);
        printf("pairs evaluated   %zu of %zu (%zu same, %zu different), %zu skipped\n", nscored,
               pl.n, pos, neg, nskipped);
        printf("accuracy          %.4f at threshold %.4f\n", acc, thr);
        printf("best accuracy     %.4f at threshold %.4f\n", best_acc, best_t);
        printf("ROC AUC           %.4f\n", auc);
        for (int k = 0; k < 2; k++) {
            if (tars[k] < 0)
                printf("TAR at FAR %-6s n/a (too few different pairs)\n", far_keys[k]);
            else
                printf("TAR at FAR %-6s %.4f\n", far_keys[k], tars[k]);
        }
        printf("same distances    median %.4f  [%.4f .. %.4f]\n", ss.median, ss.min, ss.max);
        printf("diff distances    median %.4f  [%.4f .. %.4f]\n", sd.median, sd.min, sd.max);
        for (size_t i = 0; i < nskipped; i++) {
            json_t *s = json_array_get(skipped, i);
            printf("skipped: %s, %s (%s: %s)\n", json_string_value(json_object_get(s, "path_a")),
                   json_string_value(json_object_get(s, "path_b")),
                   json_string_value(json_object_get(s, "image")),
                   json_string_value(json_object_get(s, "reason")));
        }
    }
    code = FV_EXIT_OK;
    goto done;
oom:
    fprintf(stderr, "faceverify: out of memory\n");
    code = FV_EXIT_FAILURE;
done:
    for (size_t i = 0; i < pl.n; i++) {
        free(pl.v[i].a);
        free(pl.v[i].b);
    }
    free(pl.v);
    free(names);
    free(imgs);
    free(scores);
    json_decref(skipped);
    fv_model_destroy(model);
    fv_engine_destroy(eng);
    return code;
}
