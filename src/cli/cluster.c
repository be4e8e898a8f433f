/*
 * cluster.c: `faceverify cluster DIR`: who is in these photos?
 *
 * Walks DIR recursively (entries in byte order, hidden ones and symbolic
 * links to folders skipped, so a link cannot loop), detects every face of
 * every photo, embeds each, and groups the embeddings with
 * fvsearch_cluster (src/search/cluster.h: Chinese whispers over the
 * nearest-neighbour graph, strictness --fmr, --min-cluster-size).
 *
 * Output (--json; the text form lists the same): {"clusters": [[FACE,
 * ...], ...], "noise": [FACE, ...], "skipped": [{"image", "error"}],
 * "images", "faces", "operating_point": {"fmr", "threshold"}, "method"}.
 * Clusters come largest first; faces within one in walk order.  A FACE
 * is {"image": PATH} for a photo with one face, and {"image": PATH,
 * "face": I, "box": {left, top, right, bottom}} when the photo has
 * several (I: the detector's order, largest first); PATH is DIR joined
 * with the file's path below it.  A photo that cannot be read or decoded
 * is listed under skipped and the rest go on; a photo without a face adds
 * nothing.  Exit codes as every command (cli_exit_code): 0 done, 2 DIR
 * unreadable or a bad option, 3 models unavailable.
 */
#define _XOPEN_SOURCE 700 /* scandir, alphasort, fstatat */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "search/cluster.h"

/* Faces kept per photo (a crowd photo's further faces are dropped). */
#define MAX_FACES_PER_PHOTO 64
/* Folder depth the walk follows. */
#define MAX_DEPTH 32

typedef struct cface {
    size_t photo; /* index into paths */
    int index;    /* the detector's order in that photo */
    fv_face face;
} cface;

typedef struct walk {
    char **paths;
    size_t n, cap;
    int failed; /* out of memory or an unreadable folder */
} walk;

static int push_path(walk *w, char *p) {
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 256;
        char **v = realloc(w->paths, cap * sizeof *v);
        if (!v) return -1;
        w->paths = v;
        w->cap = cap;
    }
    w->paths[w->n++] = p;
    return 0;
}

static int no_hidden(const struct dirent *e) {
    return e->d_name[0] != '.';
}

/* Adds the photos under dir (depth levels deep) to w, in byte order. */
static void walk_dir(const cli_opts *o, const char *dir, int depth, walk *w) {
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, no_hidden, alphasort);
    if (n < 0) {
        cli_error(o, FV_E_IO, "cannot read folder %s", dir);
        w->failed = 1;
        return;
    }
    for (int i = 0; i < n; i++) {
        size_t len = strlen(dir) + strlen(ents[i]->d_name) + 2;
        char *p = malloc(len);
        struct stat lst, st;
        if (!p) {
            w->failed = 1;
        } else {
            snprintf(p, len, "%s/%s", dir, ents[i]->d_name);
            if (lstat(p, &lst) == 0 && S_ISDIR(lst.st_mode)) {
                if (depth < MAX_DEPTH) walk_dir(o, p, depth + 1, w);
                free(p);
                p = NULL;
            } else if (stat(p, &st) == 0 && S_ISREG(st.st_mode) &&
                       cli_is_image_name(ents[i]->d_name)) {
                if (push_path(w, p))
                    w->failed = 1;
                else
                    p = NULL;
            }
        }
        free(p);
        free(ents[i]);
    }
    free(ents);
}

typedef struct run {
    cface *faces;
    float *emb;
    size_t n, cap;
    json_t *skipped;
} run;

/* Room for one more face in r; -1 when out of memory or past the limit. */
static int grow(run *r) {
    if (r->n < r->cap) return 0;
    if (r->cap >= FVSEARCH_CLUSTER_MAX_N) return -1;
    size_t cap = r->cap ? 2 * r->cap : 256;
    cface *f = realloc(r->faces, cap * sizeof *f);
    if (f) r->faces = f;
    float *e = f ? realloc(r->emb, cap * FV_EMBED_DIM * sizeof *e) : NULL;
    if (e) r->emb = e;
    if (!f || !e) return -1;
    r->cap = cap;
    return 0;
}

/* Detects and embeds every face of photo p; a photo that fails goes to
 * r->skipped.  Returns FV_OK or a status that ends the run (memory). */
static fv_status embed_photo(const cli_opts *o, fv_engine *eng, const char *path, size_t p,
                             run *r) {
    char err[512] = "";
    fv_image *img = NULL;
    fv_face faces[MAX_FACES_PER_PHOTO];
    size_t n = 0;
    unsigned char *chips = NULL;
    float *emb = NULL;
    fv_status st = fv_image_load(path, &o->cfg.limits, &img, err, sizeof err);
    if (st == FV_OK)
        st =
            fv_detect(eng, img, &o->verify.detect, faces, MAX_FACES_PER_PHOTO, &n, err, sizeof err);
    if (n > MAX_FACES_PER_PHOTO) n = MAX_FACES_PER_PHOTO;
    if (st == FV_OK && n) {
        chips = malloc(n * FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
        emb = malloc(n * FV_EMBED_DIM * sizeof *emb);
        if (!chips || !emb) st = FV_E_NO_MEMORY;
        for (size_t i = 0; st == FV_OK && i < n; i++)
            st = fv_face_chip(eng, img, &faces[i], chips + i * FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
        if (st == FV_OK) st = fv_embed_chips(eng, chips, n, emb, err, sizeof err);
    }
    fv_status ret = FV_OK;
    if (st == FV_OK) {
        for (size_t i = 0; i < n && ret == FV_OK; i++) {
            if (grow(r)) {
                ret = cli_error(o, FV_E_NO_MEMORY, "out of memory after %zu faces (at most %d)",
                                r->n, FVSEARCH_CLUSTER_MAX_N);
                break;
            }
            r->faces[r->n] = (cface){p, (int)i, faces[i]};
            memcpy(r->emb + r->n * FV_EMBED_DIM, emb + i * FV_EMBED_DIM,
                   FV_EMBED_DIM * sizeof *emb);
            r->n++;
        }
    } else if (st == FV_E_NO_MEMORY) {
        ret = cli_error(o, st, "%s: out of memory", path);
    } else {
        fprintf(stderr, "faceverify: skipped %s: %s\n", path, err[0] ? err : fv_strerror(st));
        json_array_append_new(r->skipped, json_pack("{s:s, s:{s:s, s:s}}", "image", path, "error",
                                                    "code", fv_status_name(st), "message",
                                                    err[0] ? err : fv_strerror(st)));
    }
    free(chips);
    free(emb);
    fv_image_destroy(img);
    return ret;
}

/* FACE of the output (see the top of this file); several: the photo has
 * more than one face. */
static json_t *face_json(const walk *w, const cface *f, int several) {
    if (!several) return json_pack("{s:s}", "image", w->paths[f->photo]);
    return json_pack("{s:s, s:i, s:{s:f, s:f, s:f, s:f}}", "image", w->paths[f->photo], "face",
                     f->index, "box", "left", f->face.left, "top", f->face.top, "right",
                     f->face.right, "bottom", f->face.bottom);
}

static void print_face(const json_t *f) {
    json_t *box = json_object_get(f, "box");
    printf("  %s", json_string_value(json_object_get(f, "image")));
    if (box)
        printf("  face %d box %.0f,%.0f,%.0f,%.0f",
               (int)json_integer_value(json_object_get(f, "face")),
               json_real_value(json_object_get(box, "left")),
               json_real_value(json_object_get(box, "top")),
               json_real_value(json_object_get(box, "right")),
               json_real_value(json_object_get(box, "bottom")));
    putchar('\n');
}

static void print_text(const json_t *res) {
    json_t *clusters = json_object_get(res, "clusters"), *noise = json_object_get(res, "noise");
    printf("%zu cluster%s of %lld faces in %lld photos (fmr %g, link distance %.4f)\n",
           json_array_size(clusters), json_array_size(clusters) == 1 ? "" : "s",
           (long long)json_integer_value(json_object_get(res, "faces")),
           (long long)json_integer_value(json_object_get(res, "images")),
           json_real_value(json_object_get(json_object_get(res, "operating_point"), "fmr")),
           json_real_value(json_object_get(json_object_get(res, "operating_point"), "threshold")));
    for (size_t i = 0; i < json_array_size(clusters); i++) {
        const json_t *c = json_array_get(clusters, i);
        printf("cluster %zu (%zu faces)\n", i + 1, json_array_size(c));
        for (size_t j = 0; j < json_array_size(c); j++) print_face(json_array_get(c, j));
    }
    if (json_array_size(noise)) {
        printf("noise (%zu faces)\n", json_array_size(noise));
        for (size_t j = 0; j < json_array_size(noise); j++) print_face(json_array_get(noise, j));
    }
}

/* The answer: clusters largest first, noise, counts. */
static json_t *result_json(const walk *w, const run *r, const int32_t *label, size_t nc, double fmr,
                           float t, json_t *skipped) {
    /* faces per photo, to know which need their box */
    size_t *per = calloc(w->n ? w->n : 1, sizeof *per);
    json_t *clusters = json_array(), *noise = json_array();
    for (size_t c = 0; c < nc; c++) json_array_append_new(clusters, json_array());
    for (size_t i = 0; per && i < r->n; i++) per[r->faces[i].photo]++;
    for (size_t i = 0; per && i < r->n; i++) {
        json_t *fj = face_json(w, &r->faces[i], per[r->faces[i].photo] > 1);
        json_array_append_new(label[i] < 0 ? noise : json_array_get(clusters, (size_t)label[i]),
                              fj);
    }
    json_t *res =
        per ? json_pack("{s:o, s:o, s:O, s:I, s:I, s:{s:f, s:f}, s:s}", "clusters", clusters,
                        "noise", noise, "skipped", skipped, "images", (json_int_t)w->n, "faces",
                        (json_int_t)r->n, "operating_point", "fmr", fmr, "threshold", (double)t,
                        "method", fvsearch_cluster_method_name(FVSEARCH_CLUSTER_WHISPERS))
            : NULL;
    free(per);
    return res;
}

int cli_cluster(cli_opts *o) {
    if (o->npos != 1)
        return cli_exit_code(cli_error(o, FV_E_INVALID_ARGUMENT, "cluster needs one folder"));
    if (o->model)
        return cli_exit_code(cli_error(o, FV_E_INVALID_ARGUMENT,
                                       "cluster uses the ResNet's calibration: no --model"));
    struct stat st_dir;
    if (stat(o->pos[0], &st_dir) || !S_ISDIR(st_dir.st_mode))
        return cli_exit_code(cli_error(o, FV_E_IO, "%s is not a readable folder", o->pos[0]));
    fvsearch_cluster_opts co;
    fvsearch_cluster_opts_init(&co);
    if (o->verify.fmr > 0) co.fmr = o->verify.fmr;
    co.threshold = o->verify.threshold;
    if (o->min_cluster_size) co.min_cluster_size = (size_t)o->min_cluster_size;
    char err[512] = "";
    float t = 0;
    if (fvsearch_cluster_threshold(&co, &t, err, sizeof err))
        return cli_exit_code(cli_error(o, FV_E_INVALID_ARGUMENT, "%s", err));
    walk w = {0};
    run r = {0};
    r.skipped = json_array();
    fv_engine *eng = NULL;
    int32_t *label = NULL;
    size_t nc = 0;
    fv_status st = FV_OK;
    walk_dir(o, o->pos[0], 0, &w);
    if (w.failed) st = FV_E_IO;
    if (st == FV_OK) st = cli_engine(o, &eng);
    for (size_t p = 0; st == FV_OK && p < w.n; p++) st = embed_photo(o, eng, w.paths[p], p, &r);
    if (st == FV_OK) {
        co.threads = fv_engine_threads(eng);
        label = malloc((r.n ? r.n : 1) * sizeof *label);
        if (!label)
            st = cli_error(o, FV_E_NO_MEMORY, "out of memory");
        else if (fvsearch_cluster(r.emb, r.n, &co, label, &nc, err, sizeof err))
            st = cli_error(o, FV_E_NO_MEMORY, "%s", err);
    }
    if (st == FV_OK) {
        json_t *res = result_json(&w, &r, label, nc, co.threshold > 0 ? 0 : co.fmr, t, r.skipped);
        if (!res)
            st = cli_error(o, FV_E_NO_MEMORY, "out of memory");
        else if (o->json)
            cli_print_json(res);
        else {
            print_text(res);
            json_decref(res);
        }
    }
    for (size_t i = 0; i < w.n; i++) free(w.paths[i]);
    free(w.paths);
    free(r.faces);
    free(r.emb);
    free(label);
    json_decref(r.skipped);
    fv_engine_destroy(eng);
    return cli_exit_code(st);
}
