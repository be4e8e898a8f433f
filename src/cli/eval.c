/*
 * eval.c: `faceverify eval-pairs`, the "face verification metric measure"
 * of the original design, and `faceverify eval-lfw`, the LFW View 2
 * protocol on the same code path (read pairs, embed each distinct image
 * once, score pairs), plus the fold protocol and a failure fallback.
 *
 * Input: a CSV with header path_a,path_b,same (paths relative to --root),
 * or an LFW pairs file (pairs.txt, pairsDevTrain.txt: a count line, then
 * "name n1 n2" for a matched pair and "name1 n1 name2 n2" for a mismatched
 * one, mapped to name/name_%04d.jpg).  Every distinct image is decoded and
 * embedded once (the engine's pool spreads each embedding over the cores);
 * a pair whose image failed (no face, unreadable) is skipped and listed
 * with the reason.  Output: accuracy at the threshold, the best threshold,
 * ROC AUC, TAR at FAR 1e-2 / 1e-3 where there are enough different pairs,
 * distance summaries per class, and the operating points: what the
 * library's calibrated threshold for FMR 1e-2..1e-6 (at each pair's
 * quality) gives on these pairs, measured FMR and FNMR.
 *
 * eval-lfw: pairs.txt's header "10 300" makes 10 folds of 300 same + 300
 * different pairs.  Each fold is scored at the best threshold of the
 * other 9 (cli_metric_folds); ROC AUC and TAR@FAR use one global ranking.
 * An image where the detector finds no face is scored twice: as an error
 * (the pair counts as wrong), and with the fallback, the centre crop of
 * the image (FVI_FALLBACK_CROP of the shorter side, where LFW's 250x250
 * frames put the face) embedded with detector none.  The headline numbers
 * use the fallback; "failures_as_errors" has the other policy.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/metrics.h"

/* Side of the fallback centre crop as a fraction of the shorter image
 * side.  LFW's MMOD boxes are about 96 px (0.38) in the 250 px frame. */
#define FVI_FALLBACK_CROP 0.40

typedef cli_pair pair_t;

typedef cli_image image_t;

typedef cli_pair_list pair_list;

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
    p->fold = l->fold_size ? (int)(l->n / (size_t)l->fold_size) : -1;
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

/* Reads either pairs format into l; prints the offending line on error. */
int cli_read_pairs(const char *file, pair_list *l) {
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
            char *end, *end2;
            long folds = strtol(line, &end, 10);
            if (end != line) { /* LFW header: "N" (View 1) or "F N" (View 2) */
                long per = strtol(end, &end2, 10);
                if (end2 != end && folds >= 2 && folds <= 100 && per >= 1 && per <= 100000) {
                    l->folds = (int)folds;
                    l->fold_size = (int)(2 * per);
                }
                csv = 0;
                continue;
            }
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
    if (!rc && l->folds && l->n != (size_t)l->folds * (size_t)l->fold_size) {
        fprintf(stderr, "faceverify: %s: %zu pairs, the header promises %d folds of %d\n", file,
                l->n, l->folds, l->fold_size);
        rc = -1;
    }
    return rc;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int cli_images_find(const cli_image_set *s, const char *path) {
    char **hit = s->nimg ? bsearch(&path, s->names, s->nimg, sizeof *s->names, cmp_str) : NULL;
    return hit ? (int)(hit - s->names) : -1;
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

/* One evaluation: the pairs and their distinct images (whose path
 * strings belong to pl). */
typedef struct {
    pair_list pl;
    cli_image_set s;
} eval_t;

double cli_images_ms_per_image(const cli_image_set *s) {
    size_t n = s->nimg - (size_t)s->cached;
    return n ? s->elapsed_ms / (double)n : 0.0;
}

void cli_images_free(cli_image_set *s) {
    free(s->names);
    free(s->imgs);
    fv_model_destroy(s->model);
    fv_engine_destroy(s->eng);
    memset(s, 0, sizeof *s);
}

static void eval_free(eval_t *e) {
    for (size_t i = 0; i < e->pl.n; i++) {
        free(e->pl.v[i].a);
        free(e->pl.v[i].b);
    }
    free(e->pl.v);
    cli_images_free(&e->s);
}

float cli_pair_quality(const cli_image *a, const cli_image *b) {
    float qa = a->st == FV_OK && !a->cached ? a->quality.score : 1.0f;
    float qb = b->st == FV_OK && !b->cached ? b->quality.score : 1.0f;
    return 0.5f * (qa + qb);
}

/* The fallback for an image without a detected face: its centre crop
 * embedded with detector none.  Returns the status of that attempt. */
static fv_status embed_fallback(const cli_opts *o, const fv_engine *eng, const fv_model *model,
                                const fv_image *img, float *emb) {
    int side = (int)(FVI_FALLBACK_CROP * (img->width < img->height ? img->width : img->height));
    if (side < 16) return FV_E_NO_FACE;
    int x0 = (img->width - side) / 2, y0 = (img->height - side) / 2;
    unsigned char *crop = malloc((size_t)side * (size_t)side * 3);
    if (!crop) return FV_E_NO_MEMORY;
    for (int y = 0; y < side; y++)
        memcpy(crop + (size_t)y * side * 3, img->rgb + ((size_t)(y0 + y) * img->width + x0) * 3,
               (size_t)side * 3);
    fv_image *c = NULL;
    fv_status st = fv_image_from_rgb(crop, side, side, &c);
    free(crop);
    if (st != FV_OK) return st;
    fv_detect_options d = o->verify.detect;
    d.detector = FV_DETECTOR_NONE;
    fv_face_result r;
    st = fv_model_embed_face(eng, model, c, &d, 0, &r, NULL, 0); /* model NULL: ResNet */
    if (st == FV_OK) memcpy(emb, r.embedding, sizeof r.embedding);
    fv_image_destroy(c);
    return st;
}

/* Embeds image i of e (and its fallback when asked). */
static void embed_one(const cli_opts *o, cli_image_set *e, size_t i, int fallback) {
    char path[4096];
    fv_image *img = NULL;
    fv_face_result r;
    image_t *im = &e->imgs[i];
    im->fallback_st = FV_E_NO_FACE;
    if (im->cached) return;
    snprintf(path, sizeof path, "%s/%s", o->root, e->names[i]);
    im->st = fv_image_load(path, &o->cfg.limits, &img, NULL, 0);
    if (im->st == FV_OK) {
        im->st = fv_model_embed_face(e->eng, e->model, img, &o->verify.detect, o->verify.strict, &r,
                                     NULL, 0);
        if (im->st == FV_OK) {
            memcpy(im->emb, r.embedding, sizeof r.embedding);
            im->quality = r.quality;
        }
        if (im->st == FV_E_NO_FACE && fallback)
            im->fallback_st = embed_fallback(o, e->eng, e->model, img, im->fallback);
    }
    fv_image_destroy(img);
}

/* --jobs: images are handed out one at a time to the worker threads, so
 * detection (single-threaded per image) runs on several cores; the engine
 * is shared (its models are immutable, its pool serialises). */
typedef struct {
    const cli_opts *o;
    cli_image_set *e;
    int fallback;
    pthread_mutex_t mu;
    size_t next, done;
} embed_work;

static void *embed_worker(void *arg) {
    embed_work *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        size_t i = w->next++;
        pthread_mutex_unlock(&w->mu);
        if (i >= w->e->nimg) break;
        embed_one(w->o, w->e, i, w->fallback);
        pthread_mutex_lock(&w->mu);
        progress(++w->done, w->e->nimg);
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

/* --embeddings-from: takes the embeddings of images whose face the
 * detector found from an earlier --dump-embeddings file (made with the same
 * options and models: the caller's responsibility), so an evaluation need
 * not recompute images it shares with an earlier one.  Rows for images not
 * in this evaluation, or without a detector embedding, are ignored.
 * Returns the number of images taken, or -1 when the file is unreadable or
 * malformed. */
static long load_embeddings(const char *file, cli_image_set *e) {
    FILE *f = fopen(file, "r");
    if (!f) {
        fprintf(stderr, "faceverify: cannot open %s\n", file);
        return -1;
    }
    char line[8192];
    long taken = 0;
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        char *save = NULL, *path = strtok_r(line, ",", &save);
        char *status = strtok_r(NULL, ",", &save), *source = strtok_r(NULL, ",", &save);
        if (!path || !status || !source) {
            fprintf(stderr, "faceverify: %s:%d: not an embeddings line\n", file, lineno);
            fclose(f);
            return -1;
        }
        int i = cli_images_find(e, path);
        if (i < 0 || strcmp(source, "detector")) continue;
        float v[FV_EMBED_DIM];
        int k = 0;
        for (char *t = strtok_r(NULL, ",", &save); t && k < FV_EMBED_DIM;
             t = strtok_r(NULL, ",", &save)) {
            char *end;
            v[k++] = strtof(t, &end);
            if (*end) k = FV_EMBED_DIM + 1;
        }
        if (k != FV_EMBED_DIM || strtok_r(NULL, ",", &save)) {
            fprintf(stderr, "faceverify: %s:%d: expected %d numbers\n", file, lineno, FV_EMBED_DIM);
            fclose(f);
            return -1;
        }
        memcpy(e->imgs[i].emb, v, sizeof v);
        e->imgs[i].st = FV_OK;
        taken += !e->imgs[i].cached;
        e->imgs[i].cached = 1;
    }
    fclose(f);
    return taken;
}

int cli_images_embed(cli_opts *o, char **names, size_t n, int fallback, cli_image_set *e) {
    memset(e, 0, sizeof *e);
    e->names = names;
    qsort(e->names, n, sizeof *e->names, cmp_str);
    for (size_t i = 0; i < n; i++)
        if (e->nimg == 0 || strcmp(e->names[e->nimg - 1], e->names[i]))
            e->names[e->nimg++] = e->names[i];
    e->imgs = calloc(e->nimg ? e->nimg : 1, sizeof *e->imgs);
    if (!e->imgs) goto oom;
    for (size_t i = 0; i < e->nimg; i++) e->imgs[i].path = e->names[i];
    if (o->embeddings_from) {
        e->cached = load_embeddings(o->embeddings_from, e);
        if (e->cached < 0) return CLI_EXIT_INPUT;
    }
    if (cli_model(o, &e->model) != FV_OK || cli_engine(o, &e->eng) != FV_OK)
        return CLI_EXIT_FAILURE;
    double t0 = cli_now_ms();
    embed_work w = {.o = o, .e = e, .fallback = fallback};
    int jobs = o->jobs > 1 ? o->jobs : 1;
    pthread_t tid[64];
    int started = 0;
    if (pthread_mutex_init(&w.mu, NULL)) goto oom;
    for (; started < jobs - 1; started++)
        if (pthread_create(&tid[started], NULL, embed_worker, &w)) break;
    embed_worker(&w); /* the calling thread works too */
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    pthread_mutex_destroy(&w.mu);
    e->elapsed_ms = cli_now_ms() - t0;
    return CLI_EXIT_OK;
oom:
    fprintf(stderr, "faceverify: out of memory\n");
    return CLI_EXIT_FAILURE;
}

/* Reads the pairs file, then embeds its distinct images (cli_images_embed).
 * Returns an exit code; e is filled (and must be freed) either way. */
static int eval_prepare(cli_opts *o, const char *pairs, int fallback, eval_t *e) {
    memset(e, 0, sizeof *e);
    if (cli_read_pairs(pairs, &e->pl)) return CLI_EXIT_INPUT;
    pair_list *pl = &e->pl;
    char **names = malloc(2 * pl->n * sizeof *names);
    if (!names) {
        fprintf(stderr, "faceverify: out of memory\n");
        return CLI_EXIT_FAILURE;
    }
    for (size_t i = 0; i < pl->n; i++) {
        names[2 * i] = pl->v[i].a;
        names[2 * i + 1] = pl->v[i].b;
    }
    int code = cli_images_embed(o, names, 2 * pl->n, fallback, &e->s);
    for (size_t i = 0; i < pl->n && e->s.imgs; i++) {
        pl->v[i].ia = cli_images_find(&e->s, pl->v[i].a);
        pl->v[i].ib = cli_images_find(&e->s, pl->v[i].b);
    }
    return code;
}

const float *cli_image_embedding(const cli_image *im, int use_fallback) {
    if (im->st == FV_OK) return im->emb;
    if (use_fallback && im->fallback_st == FV_OK) return im->fallback;
    return NULL;
}

/* Scores every pair into s (same order as e->pl); a pair with an image
 * that has no embedding gets failed = 1.  Returns the failed count. */
static size_t score_pairs(const eval_t *e, int use_fallback, fv_pair_score *s) {
    size_t failed = 0;
    for (size_t i = 0; i < e->pl.n; i++) {
        const pair_t *p = &e->pl.v[i];
        const float *a = cli_image_embedding(&e->s.imgs[p->ia], use_fallback);
        const float *b = cli_image_embedding(&e->s.imgs[p->ib], use_fallback);
        s[i].same = p->same;
        s[i].fold = p->fold;
        s[i].failed = !a || !b;
        s[i].distance = s[i].failed ? 0.0 : fv_distance(a, b);
        failed += (size_t)s[i].failed;
    }
    return failed;
}

/* Moves the scored pairs to the front of s; returns their count. */
static size_t compact_scored(fv_pair_score *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!s[i].failed) s[k++] = s[i];
    return k;
}

/* --dump: one CSV line per pair, in file order. */
static int dump_pairs(const char *file, const eval_t *e, const fv_pair_score *s, int use_fallback) {
    FILE *f = fopen(file, "w");
    if (!f) {
        fprintf(stderr, "faceverify: cannot write %s\n", file);
        return -1;
    }
    fputs("fold,same,distance,failed,fallback,path_a,path_b\n", f);
    for (size_t i = 0; i < e->pl.n; i++) {
        const pair_t *p = &e->pl.v[i];
        int fb = use_fallback && (e->s.imgs[p->ia].st != FV_OK || e->s.imgs[p->ib].st != FV_OK);
        if (s[i].failed)
            fprintf(f, "%d,%d,,1,%d,%s,%s\n", p->fold, p->same, fb, p->a, p->b);
        else
            fprintf(f, "%d,%d,%.7f,0,%d,%s,%s\n", p->fold, p->same, s[i].distance, fb, p->a, p->b);
    }
    return fclose(f) ? -1 : 0;
}

/* --dump-embeddings: path,status,source,e0..e127 per distinct image. */
int cli_images_dump_embeddings(const char *file, const cli_image_set *e, int use_fallback) {
    FILE *f = fopen(file, "w");
    if (!f) {
        fprintf(stderr, "faceverify: cannot write %s\n", file);
        return -1;
    }
    for (size_t i = 0; i < e->nimg; i++) {
        const image_t *im = &e->imgs[i];
        const float *v = cli_image_embedding(im, use_fallback);
        fprintf(f, "%s,%s,%s", im->path, fv_status_name(im->st),
                !v             ? "none"
                : v == im->emb ? "detector"
                               : "fallback");
        for (int k = 0; v && k < FV_EMBED_DIM; k++) fprintf(f, ",%.9g", v[k]);
        fputc('\n', f);
    }
    return fclose(f) ? -1 : 0;
}

/* --dump-quality: path,status,score,size_px,sharpness,brightness,
 * contrast,yaw,pitch,detector_score,reasons (bits) per distinct image
 * whose face the detector found here (not cached). */
int cli_images_dump_quality(const char *file, const cli_image_set *e) {
    FILE *f = fopen(file, "w");
    if (!f) {
        fprintf(stderr, "faceverify: cannot write %s\n", file);
        return -1;
    }
    fputs("path,status,score,size_px,sharpness,brightness,contrast,yaw,pitch,detector_score,"
          "reasons\n",
          f);
    for (size_t i = 0; i < e->nimg; i++) {
        const image_t *im = &e->imgs[i];
        const fv_quality *q = &im->quality;
        if (im->st != FV_OK || im->cached) continue;
        fprintf(f, "%s,ok,%.5f,%.2f,%.5f,%.2f,%.2f,%.2f,%.2f,%.4f,%u\n", im->path, q->score,
                q->size_px, q->sharpness, q->brightness, q->contrast, q->yaw, q->pitch,
                q->detector_score, q->reasons);
    }
    return fclose(f) ? -1 : 0;
}

static const char *flip_name(fv_flip f) {
    return f == FV_FLIP_MEAN ? "mean" : f == FV_FLIP_UNIT ? "unit" : "none";
}

static const double FARS[] = {1e-2, 1e-3};
static const char *const FAR_KEYS[] = {"0.01", "0.001"};
#define NFARS (sizeof FARS / sizeof *FARS)

/* TAR at each FAR of FARS over n scored pairs, as a JSON object keyed by
 * FAR (null where too few different pairs); tars[] and thrs[] get the
 * values (-1 when not measurable). */
static json_t *tar_json(const fv_pair_score *s, size_t n, double *tars, double *thrs) {
    json_t *tar = json_object();
    for (size_t k = 0; k < NFARS; k++) {
        thrs[k] = 0;
        tars[k] = cli_metric_tar_at_far(s, n, FARS[k], &thrs[k]);
        json_object_set_new(tar, FAR_KEYS[k], tars[k] < 0 ? json_null() : json_real(tars[k]));
    }
    return tar;
}

/* The threshold-free metrics over n scored pairs: one global ranking. */
typedef struct {
    double auc;
    double tars[NFARS], tthr[NFARS];
    json_t *tar; /* new reference, keyed by FAR */
    fv_dist_summary same, diff;
} global_metrics;

static void global_metrics_of(const fv_pair_score *s, size_t n, global_metrics *g) {
    g->auc = cli_metric_roc_auc(s, n);
    g->tar = tar_json(s, n, g->tars, g->tthr);
    cli_metric_summary(s, n, 1, &g->same);
    cli_metric_summary(s, n, 0, &g->diff);
}

static void print_tars(const global_metrics *g) {
    for (size_t k = 0; k < NFARS; k++) {
        if (g->tars[k] < 0)
            printf("TAR at FAR %-6s n/a (too few different pairs)\n", FAR_KEYS[k]);
        else
            printf("TAR at FAR %-6s %.4f (threshold %.4f)\n", FAR_KEYS[k], g->tars[k], g->tthr[k]);
    }
}

/* The false-match rates eval-pairs reports operating points at; the
 * last two only where there are 10/fmr different pairs to measure them. */
static const double OP_FMRS[] = {1e-2, 1e-3, 1e-4, 1e-5, 1e-6};
#define NOP_FMRS (sizeof OP_FMRS / sizeof *OP_FMRS)
#define OP_ALWAYS 3

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One operating point over the scored pairs of e: each pair decided at
 * the library's threshold for fmr at its pair quality (cli_pair_quality),
 * as verify --fmr decides it.  thr is scratch for e->pl.n doubles.
 * Returns NULL with *why set when the model has no calibration. */
static json_t *operating_point(const char *id, double fmr, const eval_t *e, const fv_pair_score *s,
                               double *thr, const char **why) {
    size_t n = 0, same = 0, diff = 0, fm = 0, fnm = 0;
    for (size_t i = 0; i < e->pl.n; i++) {
        if (s[i].failed) continue;
        const pair_t *p = &e->pl.v[i];
        float t = 0, q = cli_pair_quality(&e->s.imgs[p->ia], &e->s.imgs[p->ib]);
        fv_status st = fv_fmr_threshold(id, fmr, q, &t);
        if (st != FV_OK) {
            *why = st == FV_E_UNSUPPORTED ? "no FMR calibration for this model" : fv_strerror(st);
            return NULL;
        }
        thr[n++] = t;
        int match = s[i].distance <= t;
        same += s[i].same != 0;
        diff += s[i].same == 0;
        fm += !s[i].same && match;
        fnm += s[i].same && !match;
    }
    if (n == 0) return NULL;
    qsort(thr, n, sizeof *thr, cmp_double);
    return json_pack("{s:f,s:f,s:f,s:f,s:o,s:I,s:I,s:o,s:I,s:I}", "fmr", fmr, "threshold",
                     thr[n / 2], "threshold_min", thr[0], "threshold_max", thr[n - 1],
                     "fmr_measured", diff ? json_real((double)fm / (double)diff) : json_null(),
                     "false_matches", (json_int_t)fm, "different_pairs", (json_int_t)diff, "fnmr",
                     same ? json_real((double)fnm / (double)same) : json_null(),
                     "false_non_matches", (json_int_t)fnm, "same_pairs", (json_int_t)same);
}

/* operating_points: the calibrated thresholds of OP_FMRS measured on these
 * pairs.  Empty, with *why, for a model without calibration (--model, or
 * --flip's embedding space). */
static json_t *operating_points(const cli_opts *o, const eval_t *e, const fv_pair_score *s,
                                size_t ndiff, const char **why) {
    char id[160];
    cli_model_id(o, e->s.model, id, sizeof id);
    json_t *ops = json_array();
    double *thr = malloc((e->pl.n ? e->pl.n : 1) * sizeof *thr);
    *why = thr ? NULL : "out of memory";
    for (size_t k = 0; thr && k < NOP_FMRS && !*why; k++) {
        if (k >= OP_ALWAYS && (double)ndiff < 10.0 / OP_FMRS[k]) break;
        json_t *op = operating_point(id, OP_FMRS[k], e, s, thr, why);
        if (op) json_array_append_new(ops, op);
    }
    free(thr);
    if (*why) json_array_clear(ops);
    return ops;
}

/* The human table: one line per operating point, counts in brackets. */
static void print_operating_points(const json_t *ops, const char *why) {
    if (why) {
        printf("operating points  none (%s)\n", why);
        return;
    }
    printf("operating points  calibrated threshold at each pair's quality (median shown)\n");
    printf("  FMR     threshold  measured FMR          FNMR\n");
    for (size_t i = 0; i < json_array_size(ops); i++) {
        const json_t *op = json_array_get(ops, i);
        json_int_t fm = json_integer_value(json_object_get(op, "false_matches"));
        json_int_t nd = json_integer_value(json_object_get(op, "different_pairs"));
        json_int_t fnm = json_integer_value(json_object_get(op, "false_non_matches"));
        json_int_t ns = json_integer_value(json_object_get(op, "same_pairs"));
        char mf[64], mn[64];
        if (nd)
            snprintf(mf, sizeof mf, "%.4f (%lld/%lld)", (double)fm / (double)nd, (long long)fm,
                     (long long)nd);
        else
            snprintf(mf, sizeof mf, "n/a");
        if (ns)
            snprintf(mn, sizeof mn, "%.4f (%lld/%lld)", (double)fnm / (double)ns, (long long)fnm,
                     (long long)ns);
        else
            snprintf(mn, sizeof mn, "n/a");
        printf("  %-7.0e %-10.4f %-21s %s\n", json_real_value(json_object_get(op, "fmr")),
               json_real_value(json_object_get(op, "threshold")), mf, mn);
    }
}

int cli_eval_pairs(cli_opts *o) {
    if (!o->pairs || !o->root) {
        fprintf(stderr, "faceverify eval-pairs: needs --pairs FILE and --root DIR\n");
        return CLI_EXIT_INPUT;
    }
    eval_t e;
    fv_pair_score *scores = NULL;
    json_t *skipped = json_array(), *ops = NULL;
    int code = eval_prepare(o, o->pairs, 0, &e);
    if (code != CLI_EXIT_OK) goto done;
    const pair_list *pl = &e.pl;
    scores = calloc(pl->n, sizeof *scores);
    if (!scores) {
        fprintf(stderr, "faceverify: out of memory\n");
        code = CLI_EXIT_FAILURE;
        goto done;
    }
    score_pairs(&e, 0, scores);
    if ((o->dump && dump_pairs(o->dump, &e, scores, 0)) ||
        (o->dump_embeddings && cli_images_dump_embeddings(o->dump_embeddings, &e.s, 0)) ||
        (o->dump_quality && cli_images_dump_quality(o->dump_quality, &e.s))) {
        code = CLI_EXIT_FAILURE;
        goto done;
    }
    for (size_t i = 0; i < pl->n; i++) {
        const pair_t *p = &pl->v[i];
        const image_t *ia = &e.s.imgs[p->ia], *ib = &e.s.imgs[p->ib];
        if (!scores[i].failed) continue;
        const image_t *bad = ia->st != FV_OK ? ia : ib;
        json_array_append_new(skipped, json_pack("{s:s,s:s,s:b,s:s,s:s}", "path_a", p->a, "path_b",
                                                 p->b, "same", p->same, "image", bad->path,
                                                 "reason", fv_status_name(bad->st)));
    }
    size_t ndiff = 0;
    for (size_t i = 0; i < pl->n; i++) ndiff += !scores[i].failed && !scores[i].same;
    const char *op_why = NULL;
    ops = operating_points(o, &e, scores, ndiff, &op_why);
    size_t nscored = compact_scored(scores, pl->n);
    if (nscored == 0) {
        fprintf(stderr, "faceverify: no pair could be evaluated (%zu skipped)\n", pl->n);
        code = CLI_EXIT_INPUT;
        goto done;
    }
    size_t pos = 0, neg = 0;
    for (size_t i = 0; i < nscored; i++) {
        pos += scores[i].same != 0;
        neg += scores[i].same == 0;
    }
    float thr = o->verify.threshold > 0 ? o->verify.threshold
                : e.s.model             ? fv_model_threshold(e.s.model)
                                        : fv_engine_threshold(e.s.eng);
    double acc = cli_metric_accuracy(scores, nscored, thr);
    double best_t = 0, best_acc = 0;
    cli_metric_best_threshold(scores, nscored, &best_t, &best_acc);
    global_metrics g;
    global_metrics_of(scores, nscored, &g);
    size_t nskipped = json_array_size(skipped);
    if (o->json) {
        cli_print_json(json_pack(
            "{s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:o*,s:o,s:{s:o,s:o},s:s,s:s,s:s,s:I,s:I,s:f,s:O,s:O,"
            "s:s*"
            "}",
            "pairs", (json_int_t)nscored, "pairs_total", (json_int_t)pl->n, "same_pairs",
            (json_int_t)pos, "different_pairs", (json_int_t)neg, "threshold", (double)thr,
            "accuracy", acc, "best_threshold", best_t, "best_accuracy", best_acc, "roc_auc",
            g.auc == g.auc ? json_real(g.auc) : json_null(), "tar_at_far", g.tar, "distances",
            "same", summary_json(&g.same), "different", summary_json(&g.diff), "model",
            e.s.model ? fv_model_id(e.s.model) : FV_MODEL_ID, "detector",
            fv_detector_name(o->verify.detect.detector), "flip", flip_name(o->cfg.flip), "jitters",
            (json_int_t)o->cfg.jitters, "images", (json_int_t)e.s.nimg, "ms_per_image",
            cli_images_ms_per_image(&e.s), "skipped", skipped, "operating_points", ops,
            "operating_points_reason", op_why));
    } else {
        json_decref(g.tar);
        printf("pairs evaluated   %zu of %zu (%zu same, %zu different), %zu skipped\n", nscored,
               pl->n, pos, neg, nskipped);
        printf("accuracy          %.4f at threshold %.4f\n", acc, thr);
        printf("best accuracy     %.4f at threshold %.4f\n", best_acc, best_t);
        printf("ROC AUC           %.4f\n", g.auc);
        print_tars(&g);
        print_operating_points(ops, op_why);
        printf("same distances    median %.4f  [%.4f .. %.4f]\n", g.same.median, g.same.min,
               g.same.max);
        printf("diff distances    median %.4f  [%.4f .. %.4f]\n", g.diff.median, g.diff.min,
               g.diff.max);
        for (size_t i = 0; i < nskipped; i++) {
            json_t *s = json_array_get(skipped, i);
            printf("skipped: %s, %s (%s: %s)\n", json_string_value(json_object_get(s, "path_a")),
                   json_string_value(json_object_get(s, "path_b")),
                   json_string_value(json_object_get(s, "image")),
                   json_string_value(json_object_get(s, "reason")));
        }
    }
    code = CLI_EXIT_OK;
done:
    eval_free(&e);
    free(scores);
    json_decref(skipped);
    json_decref(ops);
    return code;
}

static json_t *doubles_json(const double *v, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

/* The fold protocol over s (all pairs, failed ones flagged) as JSON:
 * mean/std/standard error of the fold accuracies and their thresholds. */
static json_t *folds_json(const fv_pair_score *s, size_t n, int folds, double *mean) {
    double acc[100], thr[100], std;
    if (cli_metric_folds(s, n, folds, acc, thr)) return NULL;
    cli_metric_mean_std(acc, (size_t)folds, mean, &std);
    return json_pack("{s:f,s:f,s:f,s:o,s:o}", "mean_accuracy", *mean, "std_accuracy", std,
                     "standard_error", std / sqrt((double)folds), "fold_accuracies",
                     doubles_json(acc, (size_t)folds), "fold_thresholds",
                     doubles_json(thr, (size_t)folds));
}

int cli_eval_lfw(cli_opts *o) {
    if (!o->root) {
        fprintf(stderr, "faceverify eval-lfw: needs --root LFW_DIR (with pairs.txt)\n");
        return CLI_EXIT_INPUT;
    }
    char pairs[4096];
    snprintf(pairs, sizeof pairs, "%s/pairs.txt", o->root);
    const char *pfile = o->pairs ? o->pairs : pairs;
    eval_t e;
    fv_pair_score *fb = NULL, *er = NULL;
    json_t *out = NULL, *as_errors = NULL;
    int code = eval_prepare(o, pfile, 1, &e);
    if (code != CLI_EXIT_OK) goto done;
    const pair_list *pl = &e.pl;
    if (pl->folds < 2) {
        fprintf(stderr, "faceverify eval-lfw: %s has no fold header (\"10 300\")\n", pfile);
        code = CLI_EXIT_INPUT;
        goto done;
    }
    code = CLI_EXIT_FAILURE;
    fb = calloc(pl->n, sizeof *fb);
    er = calloc(pl->n, sizeof *er);
    if (!fb || !er) goto oom;
    size_t failed_fb = score_pairs(&e, 1, fb);
    size_t failed_er = score_pairs(&e, 0, er);
    if ((o->dump && dump_pairs(o->dump, &e, fb, 1)) ||
        (o->dump_embeddings && cli_images_dump_embeddings(o->dump_embeddings, &e.s, 1)) ||
        (o->dump_quality && cli_images_dump_quality(o->dump_quality, &e.s)))
        goto done;

    double mean_fb, mean_er;
    out = folds_json(fb, pl->n, pl->folds, &mean_fb);
    as_errors = folds_json(er, pl->n, pl->folds, &mean_er);
    if (!out || !as_errors) {
        fprintf(stderr, "faceverify eval-lfw: a fold has no scored pairs\n");
        code = CLI_EXIT_INPUT;
        goto done;
    }
    /* failures, by image */
    json_t *list = json_array();
    size_t bad_images = 0, bad_fallback = 0;
    for (size_t i = 0; i < e.s.nimg; i++) {
        const image_t *im = &e.s.imgs[i];
        if (im->st == FV_OK) continue;
        bad_images++;
        int fb_ok = im->st == FV_E_NO_FACE && im->fallback_st == FV_OK;
        bad_fallback += !fb_ok;
        json_array_append_new(list, json_pack("{s:s,s:s,s:s}", "image", im->path, "reason",
                                              fv_status_name(im->st), "fallback",
                                              fb_ok ? "centre_crop" : "failed"));
    }
    size_t nfb = compact_scored(fb, pl->n);
    size_t ner = compact_scored(er, pl->n);
    global_metrics g;
    global_metrics_of(fb, nfb, &g);
    double auc_er = cli_metric_roc_auc(er, ner);
    json_object_set_new(as_errors, "pairs_scored", json_integer((json_int_t)ner));
    json_object_set_new(as_errors, "roc_auc_scored_pairs",
                        auc_er == auc_er ? json_real(auc_er) : json_null());
    char policy[256];
    snprintf(policy, sizeof policy,
             "headline: an image without a detected face is embedded from its centre crop "
             "(%.0f%% of the shorter side) with detector none; failures_as_errors: such pairs "
             "count as wrong",
             100 * FVI_FALLBACK_CROP);
    json_t *rest = json_pack(
        "{s:s,s:s,s:I,s:I,s:I,s:o*,s:o,s:{s:f,s:f},s:{s:I,s:I,s:I,s:I,s:s,s:o},"
        "s:o,s:{s:o,s:o},s:s,s:s,s:s,s:I,s:i,s:I,s:f}",
        "protocol", "LFW View 2: each fold scored at the best threshold of the other folds",
        "pairs_file", pfile, "pairs", (json_int_t)pl->n, "pairs_scored", (json_int_t)nfb, "folds",
        (json_int_t)pl->folds, "roc_auc", g.auc == g.auc ? json_real(g.auc) : json_null(),
        "tar_at_far", g.tar, "tar_thresholds", FAR_KEYS[0], g.tthr[0], FAR_KEYS[1], g.tthr[1],
        "failures", "images", (json_int_t)bad_images, "images_fallback_failed",
        (json_int_t)bad_fallback, "pairs", (json_int_t)failed_er, "pairs_unscored_after_fallback",
        (json_int_t)failed_fb, "policy", policy, "list", list, "failures_as_errors", as_errors,
        "distances", "same", summary_json(&g.same), "different", summary_json(&g.diff), "model",
        e.s.model ? fv_model_id(e.s.model) : FV_MODEL_ID, "detector",
        fv_detector_name(o->verify.detect.detector), "flip", flip_name(o->cfg.flip), "jitters",
        (json_int_t)o->cfg.jitters, "threads", fv_engine_threads(e.s.eng), "images",
        (json_int_t)e.s.nimg, "ms_per_image", cli_images_ms_per_image(&e.s));
    if (rest && o->embeddings_from)
        json_object_set_new(rest, "images_from_file", json_integer((json_int_t)e.s.cached));
    as_errors = NULL; /* json_pack's "o" took it */
    if (!rest || json_object_update(out, rest)) {
        json_decref(rest);
        goto oom;
    }
    json_decref(rest);
    if (o->json) {
        cli_print_json(json_incref(out));
    } else {
        json_t *fe = json_object_get(out, "failures_as_errors");
        printf("LFW View 2        %zu pairs in %d folds, %zu images (flip %s, detector %s)\n",
               pl->n, pl->folds, e.s.nimg, flip_name(o->cfg.flip),
               fv_detector_name(o->verify.detect.detector));
        printf("mean accuracy     %.4f +- %.4f (std over folds)\n", mean_fb,
               json_real_value(json_object_get(out, "std_accuracy")));
        printf("ROC AUC           %.5f\n", g.auc);
        print_tars(&g);
        printf("no face found     %zu images in %zu pairs; centre-crop fallback failed for %zu\n",
               bad_images, failed_er, bad_fallback);
        printf("failures as errors: mean accuracy %.4f +- %.4f\n", mean_er,
               json_real_value(json_object_get(fe, "std_accuracy")));
    }
    code = CLI_EXIT_OK;
    goto done;
oom:
    fprintf(stderr, "faceverify: out of memory\n");
done:
    eval_free(&e);
    free(fb);
    free(er);
    json_decref(out);
    json_decref(as_errors);
    return code;
}
