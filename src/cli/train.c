/*
 * train.c: `faceverify train`, triplet-loss training of an embedding
 * network on a folder per identity (the LFW layout).
 *
 * The flow: list identities and images (sorted, so runs are reproducible);
 * detect and align every image once with the library's pipeline and cache
 * the result next to the model (scratch: the chip downscaled to the
 * network's input; adapter: the ResNet embedding); hold out a seeded share
 * of identities for validation; then epochs of P identities x K images per
 * batch, online semi-hard (or batch-hard) mining, Adam or SGD with a
 * cosine / step schedule.  After each epoch: a progress line (loss,
 * fraction of active triplets), validation pair accuracy and ROC AUC on
 * the held-out identities (metrics.c), a checkpoint, and the best model so
 * far written to --out with its calibrated threshold.  Early stopping on
 * validation AUC.  Everything random comes from one splitmix64 state that
 * the checkpoint keeps, and the network's ops give the same numbers for any
 * thread count, so a seed gives one result, resumed or not.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "core/fvi.h"
#include "image/resize.h"
#include "cli/metrics.h"
#include "core/workers.h"
#include "train/train.h"

typedef struct topts {
    const char *data, *out, *resume, *people, *cache, *checkpoint;
    const char *test_pairs, *test_root, *test_cache;
    int adapter, epochs, stop_after, steps, P, K, input, width, patience, max_ids, min_images, json,
        threads;
    uint64_t seed;
    float margin, lr, weight_decay, val_fraction;
    fvt_mining mining;
    fvt_opt_kind optimizer;
    fvt_sched sched;
    cli_opts common;
} topts;

static void train_usage(FILE *f) {
    fputs("usage: faceverify train --data DIR --out MODEL [options]\n"
          "\n"
          "DIR holds one folder per identity with its images (the LFW layout).  Faces are\n"
          "detected, aligned and embedded by the ResNet once and cached in MODEL.cache\n"
          "(chips at the --input size and embeddings: one cache serves both modes).\n"
          "\n"
          "  --mode scratch|adapter  scratch: a compact CNN on aligned chips; adapter: a\n"
          "                          residual MLP on the frozen ResNet embedding (scratch)\n"
          "  --epochs N              epochs (10)\n"
          "  --steps-per-epoch N     batches per epoch (enough to see every identity once)\n"
          "  --seed S                random seed (1)\n"
          "  --resume CKPT           continue from a checkpoint (same options)\n"
          "  --stop-after N          stop after epoch N as if interrupted (the schedule\n"
          "                          still spans --epochs; --resume continues)\n"
          "  --checkpoint PATH       where to write checkpoints (MODEL.ckpt)\n"
          "  --cache PATH            face cache (MODEL.cache)\n"
          "  --test-pairs FILE       after training, evaluate the model and the plain ResNet\n"
          "                          on an LFW pairs file (images under --test-root, default\n"
          "                          --data; cached in --test-cache, default MODEL.test.cache)\n"
          "  --people FILE           only identities listed (LFW people*.txt format)\n"
          "  --max-identities N      at most N identities (after --people, sorted)\n"
          "  --min-images N          identities need N images (2)\n"
          "  --val-fraction F        identities held out for validation (0.1)\n"
          "  --identities-per-batch P  (16)   --images-per-identity K  (4)\n"
          "  --margin M              triplet margin on squared distances (0.2)\n"
          "  --mining semihard|hard  online negative mining (semihard)\n"
          "  --optimizer adam|sgd    (adam)   --lr LR (adam 0.001, sgd 0.05)\n"
          "  --weight-decay W        (0.0005)   --schedule cosine|step|const (cosine)\n"
          "  --patience N            stop after N epochs without a better val AUC (3)\n"
          "  --input N               scratch input side in pixels, 16..150 (64)\n"
          "  --width N               scratch base channels (16)\n"
          "  --json                  print a JSON summary on stdout\n"
          "and the detection options of the other commands (--detector, --pick, ...).\n",
          f);
}

/* ------------------------------------------------------------ options */

static int arg_int(const char *v, int lo, int hi, int *out, const char *name) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) {
        fprintf(stderr, "faceverify train: %s takes %d..%d\n", name, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int arg_float(const char *v, double lo, double hi, float *out, const char *name) {
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "faceverify train: %s takes %g..%g\n", name, lo, hi);
        return -1;
    }
    *out = (float)x;
    return 0;
}

static int parse_train(int argc, char **argv, topts *t) {
    memset(t, 0, sizeof *t);
    t->epochs = 10, t->P = 16, t->K = 4, t->input = 64, t->width = 16, t->patience = 3;
    t->min_images = 2, t->seed = 1, t->margin = 0.2f, t->weight_decay = 5e-4f;
    t->val_fraction = 0.1f, t->sched = FVT_SCHED_COSINE, t->optimizer = FVT_ADAM;
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int nrest = 0, rc = 0;
    if (!rest) return -1;
    for (int i = 0; i < argc && rc == 0; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int iv;
        if (!strcmp(a, "--json")) {
            t->json = 1;
            continue;
        }
        if (!v || strncmp(a, "--", 2)) {
            rest[nrest++] = argv[i];
            continue;
        }
        i++;
        if (!strcmp(a, "--data"))
            t->data = v;
        else if (!strcmp(a, "--out"))
            t->out = v;
        else if (!strcmp(a, "--resume"))
            t->resume = v;
        else if (!strcmp(a, "--checkpoint"))
            t->checkpoint = v;
        else if (!strcmp(a, "--cache"))
            t->cache = v;
        else if (!strcmp(a, "--test-pairs"))
            t->test_pairs = v;
        else if (!strcmp(a, "--test-root"))
            t->test_root = v;
        else if (!strcmp(a, "--test-cache"))
            t->test_cache = v;
        else if (!strcmp(a, "--people"))
            t->people = v;
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "scratch") || !strcmp(v, "adapter"))
                t->adapter = !strcmp(v, "adapter");
            else
                rc = (fprintf(stderr, "faceverify train: --mode takes scratch or adapter\n"), -1);
        } else if (!strcmp(a, "--mining")) {
            if (!strcmp(v, "semihard") || !strcmp(v, "hard"))
                t->mining = !strcmp(v, "hard") ? FVT_MINE_HARD : FVT_MINE_SEMIHARD;
            else
                rc = (fprintf(stderr, "faceverify train: --mining takes semihard or hard\n"), -1);
        } else if (!strcmp(a, "--optimizer")) {
            if (!strcmp(v, "adam") || !strcmp(v, "sgd"))
                t->optimizer = !strcmp(v, "sgd") ? FVT_SGD : FVT_ADAM;
            else
                rc = (fprintf(stderr, "faceverify train: --optimizer takes adam or sgd\n"), -1);
        } else if (!strcmp(a, "--schedule")) {
            if (!strcmp(v, "cosine"))
                t->sched = FVT_SCHED_COSINE;
            else if (!strcmp(v, "step"))
                t->sched = FVT_SCHED_STEP;
            else if (!strcmp(v, "const"))
                t->sched = FVT_SCHED_CONST;
            else
                rc = (fprintf(stderr, "faceverify train: --schedule: cosine, step or const\n"), -1);
        } else if (!strcmp(a, "--seed")) {
            rc = arg_int(v, 0, 2000000000, &iv, a);
            t->seed = (uint64_t)iv;
        } else if (!strcmp(a, "--epochs"))
            rc = arg_int(v, 1, 10000, &t->epochs, a);
        else if (!strcmp(a, "--stop-after"))
            rc = arg_int(v, 1, 10000, &t->stop_after, a);
        else if (!strcmp(a, "--steps-per-epoch"))
            rc = arg_int(v, 1, 1000000, &t->steps, a);
        else if (!strcmp(a, "--identities-per-batch"))
            rc = arg_int(v, 2, 256, &t->P, a);
        else if (!strcmp(a, "--images-per-identity"))
            rc = arg_int(v, 2, 64, &t->K, a);
        else if (!strcmp(a, "--input"))
            rc = arg_int(v, 16, FV_CHIP_SIZE, &t->input, a);
        else if (!strcmp(a, "--width"))
            rc = arg_int(v, 4, 256, &t->width, a);
        else if (!strcmp(a, "--patience"))
            rc = arg_int(v, 1, 10000, &t->patience, a);
        else if (!strcmp(a, "--max-identities"))
            rc = arg_int(v, 2, 10000000, &t->max_ids, a);
        else if (!strcmp(a, "--min-images"))
            rc = arg_int(v, 2, 10000, &t->min_images, a);
        else if (!strcmp(a, "--margin"))
            rc = arg_float(v, 0.0, 4.0, &t->margin, a);
        else if (!strcmp(a, "--lr"))
            rc = arg_float(v, 1e-7, 10.0, &t->lr, a);
        else if (!strcmp(a, "--weight-decay"))
            rc = arg_float(v, 0.0, 1.0, &t->weight_decay, a);
        else if (!strcmp(a, "--val-fraction"))
            rc = arg_float(v, 0.01, 0.9, &t->val_fraction, a);
        else {
            rest[nrest++] = argv[i - 1];
            rest[nrest++] = argv[i];
        }
    }
    if (rc == 0 && cli_parse_common(nrest, rest, &t->common)) rc = -1;
    if (rc == 0 && t->common.npos) {
        fprintf(stderr, "faceverify train: unexpected argument '%s'\n", t->common.pos[0]);
        rc = -1;
    }
    if (rc == 0 && (!t->data || !t->out)) {
        fprintf(stderr, "faceverify train: needs --data DIR and --out MODEL (see --help)\n");
        rc = -1;
    }
    if (t->P * t->K > 1024) {
        fprintf(stderr, "faceverify train: P x K must be at most 1024\n");
        rc = -1;
    }
    if (rc == 0 && t->lr == 0.0f) t->lr = t->optimizer == FVT_ADAM ? 1e-3f : 0.05f;
    t->json = t->json || t->common.json;
    free(rest);
    return rc;
}

/* ------------------------------------------------------------ dataset */

typedef struct dataset {
    char **ids; /* identity names, sorted */
    int nids;
    char **paths; /* image paths relative to the data folder */
    int *label;   /* identity of each image */
    int nimg;
    int *ok;              /* face found */
    unsigned char *chips; /* scratch: input x input x 3 per image */
    float *emb;           /* adapter: 128 per image */
    int side;
} dataset;

static int cmp_strp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A growing, then sorted, list of names. */
typedef struct strvec {
    char **v;
    size_t n, cap;
    int failed;
} strvec;

static void strvec_push(strvec *sv, const char *s) {
    if (sv->failed) return;
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? 2 * sv->cap : 64;
        char **nv = realloc(sv->v, cap * sizeof *nv);
        if (!nv) {
            sv->failed = 1;
            return;
        }
        sv->v = nv, sv->cap = cap;
    }
    sv->v[sv->n] = strdup(s);
    if (sv->v[sv->n])
        sv->n++;
    else
        sv->failed = 1;
}

static void free_strs(char **v, int n) {
    for (int i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

/* Sorts sv and hands its array over (NULL after a failed allocation). */
static char **strvec_done(strvec *sv, int *n) {
    if (sv->failed) {
        free_strs(sv->v, (int)sv->n);
        *n = 0;
        return NULL;
    }
    if (!sv->v) sv->v = malloc(sizeof(char *));
    if (sv->v) qsort(sv->v, sv->n, sizeof *sv->v, cmp_strp);
    *n = (int)sv->n;
    return sv->v;
}

/* Sorted names in dir (entries starting with '.' skipped); dirs_only
 * selects sub-folders, else image files.  NULL on error. */
static char **list_dir(const char *dir, int dirs_only, int *n) {
    DIR *d = opendir(dir);
    *n = 0;
    if (!d) return NULL;
    strvec sv = {0};
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[4096];
        struct stat st;
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p || stat(p, &st))
            continue;
        if (dirs_only ? !S_ISDIR(st.st_mode)
                      : !(S_ISREG(st.st_mode) && cli_is_image_name(e->d_name)))
            continue;
        strvec_push(&sv, e->d_name);
    }
    closedir(d);
    return strvec_done(&sv, n);
}

/* Names from an LFW people file ("count" line, then "name count" lines). */
static char **read_people(const char *file, int *n) {
    FILE *f = fopen(file, "r");
    *n = 0;
    if (!f) return NULL;
    strvec sv = {0};
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char name[256];
        int cnt;
        if (sscanf(line, "%255s %d", name, &cnt) == 2) strvec_push(&sv, name);
    }
    fclose(f);
    return strvec_done(&sv, n);
}

static int scan_data(const topts *t, dataset *ds) {
    int nd = 0, np = 0;
    char **dirs = list_dir(t->data, 1, &nd), **people = NULL;
    if (!dirs) {
        fprintf(stderr, "faceverify train: cannot read %s: %s\n", t->data, strerror(errno));
        return -1;
    }
    if (t->people && !(people = read_people(t->people, &np))) {
        fprintf(stderr, "faceverify train: cannot read %s\n", t->people);
        free_strs(dirs, nd);
        return -1;
    }
    size_t cap = 1024;
    ds->ids = calloc((size_t)nd + 1, sizeof *ds->ids);
    ds->paths = malloc(cap * sizeof *ds->paths);
    ds->label = malloc(cap * sizeof *ds->label);
    int rc = ds->ids && ds->paths && ds->label ? 0 : -1;
    for (int i = 0; i < nd && rc == 0; i++) {
        if (t->max_ids && ds->nids >= t->max_ids) break;
        if (people && !bsearch(&dirs[i], people, (size_t)np, sizeof *people, cmp_strp)) continue;
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", t->data, dirs[i]);
        int nf = 0;
        char **files = list_dir(sub, 0, &nf);
        if (files && nf >= t->min_images) {
            for (int j = 0; j < nf && rc == 0; j++) {
                if ((size_t)ds->nimg == cap) {
                    cap *= 2;
                    char **np2 = realloc(ds->paths, cap * sizeof *ds->paths);
                    int *nl = np2 ? realloc(ds->label, cap * sizeof *ds->label) : NULL;
                    if (np2) ds->paths = np2;
                    if (nl) ds->label = nl;
                    if (!np2 || !nl) rc = -1;
                }
                if (rc) break;
                size_t len = strlen(dirs[i]) + strlen(files[j]) + 2;
                ds->paths[ds->nimg] = malloc(len);
                if (!ds->paths[ds->nimg]) {
                    rc = -1;
                    break;
                }
                snprintf(ds->paths[ds->nimg], len, "%s/%s", dirs[i], files[j]);
                ds->label[ds->nimg++] = ds->nids;
            }
            ds->ids[ds->nids] = strdup(dirs[i]);
            if (!ds->ids[ds->nids]) rc = -1;
            ds->nids++;
        }
        free_strs(files, nf);
    }
    free_strs(dirs, nd);
    free_strs(people, np);
    if (rc == 0 && ds->nids < 4) {
        fprintf(stderr, "faceverify train: %s: need at least 4 identities with %d+ images\n",
                t->data, t->min_images);
        rc = -1;
    }
    return rc;
}

static void free_dataset(dataset *ds) {
    free_strs(ds->ids, ds->nids);
    free_strs(ds->paths, ds->nimg);
    free(ds->label);
    free(ds->ok);
    free(ds->chips);
    free(ds->emb);
}

#define CACHE_MAGIC "faceverify-train-cache 2"

/* A cache record: the chip at the scratch input size, then the ResNet
 * embedding, so one detection pass serves both modes. */
static size_t chip_bytes(const dataset *ds) {
    return (size_t)ds->side * ds->side * 3;
}

/* Loads the cache if it holds exactly this image list and chip size. */
static int load_cache(const char *path, dataset *ds) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char line[4200];
    int ok = fgets(line, sizeof line, f) && !strncmp(line, CACHE_MAGIC, strlen(CACHE_MAGIC));
    int side = -1, n = -1;
    if (ok) ok = fgets(line, sizeof line, f) && sscanf(line, "%d %d", &side, &n) == 2;
    ok = ok && side == ds->side && n == ds->nimg;
    const size_t cb = chip_bytes(ds), eb = FV_EMBED_DIM * sizeof(float);
    for (int i = 0; ok && i < n; i++) {
        ok = fgets(line, sizeof line, f) != NULL;
        size_t l = ok ? strlen(line) : 0;
        if (ok && l && line[l - 1] == '\n') line[--l] = '\0';
        ok = ok && !strcmp(line, ds->paths[i]);
        unsigned char flag = 0;
        ok = ok && fread(&flag, 1, 1, f) == 1 && fread(ds->chips + cb * i, 1, cb, f) == cb &&
             fread(ds->emb + (size_t)FV_EMBED_DIM * i, 1, eb, f) == eb;
        ds->ok[i] = flag == 1;
    }
    fclose(f);
    return ok ? 0 : -1;
}

static int save_cache(const char *path, dataset *ds) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fprintf(f, "%s\n%d %d\n", CACHE_MAGIC, ds->side, ds->nimg);
    const size_t cb = chip_bytes(ds), eb = FV_EMBED_DIM * sizeof(float);
    int ok = 1;
    for (int i = 0; ok && i < ds->nimg; i++) {
        unsigned char flag = ds->ok[i] ? 1 : 0;
        ok = fprintf(f, "%s\n", ds->paths[i]) > 0 && fwrite(&flag, 1, 1, f) == 1 &&
             fwrite(ds->chips + cb * i, 1, cb, f) == cb &&
             fwrite(ds->emb + (size_t)FV_EMBED_DIM * i, 1, eb, f) == eb;
    }
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Detect, align, downscale and embed every image once (root/paths[i]). */
static int build_faces(const topts *t, const char *root, dataset *ds, fv_engine **eng,
                       const char *cache) {
    const size_t cb = chip_bytes(ds);
    ds->ok = calloc((size_t)ds->nimg + 1, sizeof *ds->ok);
    ds->chips = calloc((size_t)ds->nimg + 1, cb);
    ds->emb = calloc(((size_t)ds->nimg + 1) * FV_EMBED_DIM, sizeof(float));
    if (!ds->ok || !ds->chips || !ds->emb) return -1;
    if (load_cache(cache, ds) == 0) return 0;
    cli_opts common = t->common; /* cli_engine resolves its detector */
    if (!*eng && cli_engine(&common, eng) != FV_OK) return -1;
    unsigned char *chip = malloc((size_t)FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
    if (!chip) return -1;
    double t0 = fvi_now_ms();
    int found = 0;
    for (int i = 0; i < ds->nimg; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", root, ds->paths[i]);
        fv_image *img = NULL, *src = NULL, *small = NULL;
        fv_face faces[8];
        size_t count = 0;
        fv_status st = fv_image_load(path, &t->common.cfg.limits, &img, NULL, 0);
        if (st == FV_OK)
            st = fv_detect(*eng, img, &t->common.verify.detect, faces, 8, &count, NULL, 0);
        if (st == FV_OK && count > 0) st = fv_face_chip(*eng, img, &faces[0], chip);
        if (st == FV_OK && count > 0)
            st = fv_embed_chips(*eng, chip, 1, ds->emb + (size_t)i * FV_EMBED_DIM, NULL, 0);
        if (st == FV_OK && count > 0)
            st = fv_image_from_rgb(chip, FV_CHIP_SIZE, FV_CHIP_SIZE, &src);
        if (st == FV_OK && count > 0 && ds->side != FV_CHIP_SIZE)
            st = fvi_image_downscale(src, ds->side, ds->side, &small);
        if (st == FV_OK && count > 0) {
            memcpy(ds->chips + cb * i, (small ? small : src)->rgb, cb);
            ds->ok[i] = 1;
            found++;
        }
        fv_image_destroy(small);
        fv_image_destroy(src);
        fv_image_destroy(img);
        if ((i + 1) % 200 == 0 || i + 1 == ds->nimg)
            fprintf(stderr, "faces: %d/%d images, %d faces, %.1f s\n", i + 1, ds->nimg, found,
                    (fvi_now_ms() - t0) / 1e3);
    }
    free(chip);
    if (save_cache(cache, ds))
        fprintf(stderr, "faceverify train: warning: cannot write cache %s\n", cache);
    return 0;
}

/* ------------------------------------------------------------ networks */

static int scratch_spec(int width, fvt_layer *L) {
    int n = 0, c = width;
    for (int stage = 0; stage < 4; stage++, c *= 2) {
        L[n++] = (fvt_layer){.kind = FVT_CONV, .a = c, .b = 3, .c = 1, .d = 1};
        L[n++] = (fvt_layer){.kind = FVT_BN};
        L[n++] = (fvt_layer){.kind = FVT_RELU};
        if (stage < 3) L[n++] = (fvt_layer){.kind = FVT_MAXPOOL, .a = 2, .b = 2};
    }
    L[n++] = (fvt_layer){.kind = FVT_GAP};
    L[n++] = (fvt_layer){.kind = FVT_FC, .a = FV_EMBED_DIM};
    L[n++] = (fvt_layer){.kind = FVT_L2NORM};
    return n;
}

/* x -> L2(x + FC(ReLU(FC(x)))), the second FC zero-initialised so the
 * untrained adapter is the plain (normalised) ResNet embedding. */
static int adapter_spec(fvt_layer *L) {
    L[0] = (fvt_layer){.kind = FVT_FC, .a = 256};
    L[1] = (fvt_layer){.kind = FVT_RELU};
    L[2] = (fvt_layer){.kind = FVT_FC, .a = FV_EMBED_DIM, .zero_init = 1};
    L[3] = (fvt_layer){.kind = FVT_SKIP, .a = 0};
    L[4] = (fvt_layer){.kind = FVT_L2NORM};
    return 5;
}

#define NORM_MEAN 0.5f
#define NORM_STD 0.25f

/* Writes images idx[0..n) into the net's input; flip[i] mirrors image i. */
static void fill_input(const dataset *ds, int adapter, const int *idx, const unsigned char *flip,
                       int n, float *dst) {
    if (adapter) {
        for (int s = 0; s < n; s++)
            memcpy(dst + (size_t)s * FV_EMBED_DIM, ds->emb + (size_t)idx[s] * FV_EMBED_DIM,
                   FV_EMBED_DIM * sizeof(float));
        return;
    }
    const int side = ds->side;
    const size_t plane = (size_t)side * side;
    for (int s = 0; s < n; s++) {
        const unsigned char *px = ds->chips + (size_t)idx[s] * plane * 3;
        for (int c = 0; c < 3; c++) {
            float *d = dst + ((size_t)c * n + s) * plane;
            for (int y = 0; y < side; y++)
                for (int x = 0; x < side; x++) {
                    int sx = flip && flip[s] ? side - 1 - x : x;
                    d[y * side + x] =
                        ((float)px[((size_t)y * side + sx) * 3 + c] / 255.0f - NORM_MEAN) /
                        NORM_STD;
                }
        }
    }
}

/* ------------------------------------------------------------ evaluation */

typedef struct pairset {
    int *img, nimg; /* images to embed */
    int (*pair)[3]; /* (i, j, same) as indices into img */
    int npairs;
    float *emb;
} pairset;

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void shuffle(int *v, int n, uint64_t *rng) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(fvt_rand(rng) % (uint64_t)(i + 1)), tmp = v[i];
        v[i] = v[j], v[j] = tmp;
    }
}

/* Up to per images of each identity in ids (those with 2+ faces), all
 * their positive pairs, and as many negative pairs drawn at random. */
static int make_pairset(const dataset *ds, const int *ids, int nids, int per, uint64_t *rng,
                        pairset *ps) {
    memset(ps, 0, sizeof *ps);
    ps->img = malloc(sizeof(int) * (size_t)nids * per);
    ps->pair = malloc(sizeof(*ps->pair) * (size_t)nids * per * per * 2 + 1);
    ps->emb = malloc(sizeof(float) * (size_t)nids * per * FV_EMBED_DIM + 1);
    int *lab = malloc(sizeof(int) * (size_t)nids * per + 1);
    if (!ps->img || !ps->pair || !ps->emb || !lab) {
        free(lab);
        return -1;
    }
    for (int k = 0; k < nids; k++) {
        int start = ps->nimg, got = 0;
        for (int i = 0; i < ds->nimg && got < per; i++)
            if (ds->label[i] == ids[k] && ds->ok[i])
                lab[ps->nimg] = k, ps->img[ps->nimg++] = i, got++;
        if (got < 2) {
            ps->nimg = start;
            continue;
        }
        for (int a = start; a < ps->nimg; a++)
            for (int b = a + 1; b < ps->nimg; b++)
                ps->pair[ps->npairs][0] = a, ps->pair[ps->npairs][1] = b,
                ps->pair[ps->npairs++][2] = 1;
    }
    int pos = ps->npairs;
    for (int tries = 0; ps->npairs < 2 * pos && tries < 100 * pos && ps->nimg > 1; tries++) {
        int a = (int)(fvt_rand(rng) % (uint64_t)ps->nimg),
            b = (int)(fvt_rand(rng) % (uint64_t)ps->nimg);
        if (lab[a] == lab[b]) continue;
        ps->pair[ps->npairs][0] = a, ps->pair[ps->npairs][1] = b, ps->pair[ps->npairs++][2] = 0;
    }
    free(lab);
    return pos > 0 ? 0 : -1;
}

static void free_pairset(pairset *ps) {
    free(ps->img);
    free(ps->pair);
    free(ps->emb);
}

typedef struct evalres {
    double acc, auc, thr, loss;
} evalres;

/* Embeds the set (eval mode), then pair accuracy at the best threshold,
 * ROC AUC, and the semi-hard triplet loss over the set's images. */
static int evaluate(fvt_net *net, fvt_ws *ws, int bs, const dataset *ds, int adapter, pairset *ps,
                    float margin, fvi_workers *pool, evalres *r) {
    for (int b = 0; b < ps->nimg; b += bs) {
        int n = ps->nimg - b < bs ? ps->nimg - b : bs;
        fill_input(ds, adapter, ps->img + b, NULL, n, fvt_ws_input(ws));
        const float *y = fvt_forward(net, ws, n, 0, pool);
        memcpy(ps->emb + (size_t)b * FV_EMBED_DIM, y, sizeof(float) * (size_t)n * FV_EMBED_DIM);
    }
    fv_pair_score *sc = malloc(sizeof *sc * (size_t)ps->npairs);
    int *lab = malloc(sizeof(int) * (size_t)ps->nimg);
    size_t cap = (size_t)ps->nimg * ps->nimg;
    fvt_triplet *tr = malloc(sizeof *tr * (cap ? cap : 1));
    if (!sc || !lab || !tr) {
        free(sc), free(lab), free(tr);
        return -1;
    }
    for (int k = 0; k < ps->npairs; k++) {
        sc[k].distance = fv_distance(ps->emb + (size_t)ps->pair[k][0] * FV_EMBED_DIM,
                                     ps->emb + (size_t)ps->pair[k][1] * FV_EMBED_DIM);
        sc[k].same = ps->pair[k][2];
    }
    cli_metric_best_threshold(sc, (size_t)ps->npairs, &r->thr, &r->acc);
    r->auc = cli_metric_roc_auc(sc, (size_t)ps->npairs);
    for (int i = 0; i < ps->nimg; i++) lab[i] = ds->label[ps->img[i]];
    size_t nt = fvt_mine(ps->emb, lab, ps->nimg, FV_EMBED_DIM, FVT_MINE_SEMIHARD, tr, cap);
    r->loss = fvt_triplet_loss(ps->emb, ps->nimg, FV_EMBED_DIM, tr, nt, margin, NULL, NULL);
    free(sc), free(lab), free(tr);
    return 0;
}

/* Pair metrics of one embedding table: accuracy at thr, the best
 * accuracy over thresholds, ROC AUC. */
static json_t *pair_metrics(const cli_pair_list *pl, const int *ok, const float *emb, double thr,
                            fv_pair_score *sc, const char *label) {
    size_t n = 0;
    for (size_t k = 0; k < pl->n; k++) {
        const cli_pair *p = &pl->v[k];
        if (!ok[p->ia] || !ok[p->ib]) continue;
        sc[n].distance =
            fv_distance(emb + (size_t)p->ia * FV_EMBED_DIM, emb + (size_t)p->ib * FV_EMBED_DIM);
        sc[n++].same = p->same;
    }
    double best_t = 0, best_acc = 0;
    cli_metric_best_threshold(sc, n, &best_t, &best_acc);
    double acc = cli_metric_accuracy(sc, n, thr), auc = cli_metric_roc_auc(sc, n);
    fprintf(stderr, "test %-8s accuracy %.4f at threshold %.4f, best %.4f at %.4f, ROC AUC %.4f\n",
            label, acc, thr, best_acc, best_t, auc);
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f}", "pairs", (json_int_t)n, "accuracy", acc,
                     "threshold", thr, "best_accuracy", best_acc, "best_threshold", best_t,
                     "roc_auc", auc);
}

/* The trained net and the plain ResNet on the same pairs (the images go
 * through the same detection + alignment, cached like the training set). */
static json_t *test_eval(const topts *t, fvt_net *net, fvt_ws *ws, int bs, fvi_workers *pool,
                         fv_engine **eng, float thr) {
    cli_pair_list pl = {0};
    dataset td = {0};
    json_t *res = NULL;
    float *emb = NULL;
    int *idx = NULL;
    fv_pair_score *sc = NULL;
    char cache[4096];
    const char *root = t->test_root ? t->test_root : t->data;
    if (t->test_cache)
        snprintf(cache, sizeof cache, "%s", t->test_cache);
    else
        snprintf(cache, sizeof cache, "%s.test.cache", t->out);
    if (cli_read_pairs(t->test_pairs, &pl)) goto out;
    td.side = t->input;
    td.paths = malloc(sizeof(char *) * 2 * pl.n);
    td.label = calloc(2 * pl.n, sizeof(int));
    if (!td.paths || !td.label) goto out;
    for (size_t k = 0; k < pl.n; k++) td.paths[2 * k] = pl.v[k].a, td.paths[2 * k + 1] = pl.v[k].b;
    qsort(td.paths, 2 * pl.n, sizeof(char *), cmp_strp);
    int u = 0;
    for (size_t k = 0; k < 2 * pl.n; k++)
        if (u == 0 || strcmp(td.paths[u - 1], td.paths[k])) td.paths[u++] = td.paths[k];
    td.nimg = u;
    for (size_t k = 0; k < pl.n; k++) {
        char **a = bsearch(&pl.v[k].a, td.paths, (size_t)u, sizeof(char *), cmp_strp);
        char **b = bsearch(&pl.v[k].b, td.paths, (size_t)u, sizeof(char *), cmp_strp);
        pl.v[k].ia = (int)(a - td.paths), pl.v[k].ib = (int)(b - td.paths);
    }
    if (build_faces(t, root, &td, eng, cache)) goto out;
    cli_opts common = t->common; /* cli_engine resolves its detector */
    if (!*eng && cli_engine(&common, eng) != FV_OK) goto out;
    emb = calloc((size_t)u * FV_EMBED_DIM, sizeof(float));
    idx = malloc(sizeof(int) * (size_t)u);
    sc = malloc(sizeof *sc * (pl.n + 1));
    if (!emb || !idx || !sc) goto out;
    int m = 0;
    for (int i = 0; i < u; i++)
        if (td.ok[i]) idx[m++] = i;
    for (int b = 0; b < m; b += bs) {
        int n = m - b < bs ? m - b : bs;
        fill_input(&td, t->adapter, idx + b, NULL, n, fvt_ws_input(ws));
        const float *y = fvt_forward(net, ws, n, 0, pool);
        for (int s = 0; s < n; s++)
            memcpy(emb + (size_t)idx[b + s] * FV_EMBED_DIM, y + (size_t)s * FV_EMBED_DIM,
                   FV_EMBED_DIM * sizeof(float));
    }
    json_t *mj = pair_metrics(&pl, td.ok, emb, thr, sc, "model");
    json_t *rj = pair_metrics(&pl, td.ok, td.emb, fv_engine_threshold(*eng), sc, "resnet");
    res =
        json_pack("{s:s,s:I,s:I,s:i,s:o,s:o}", "pairs_file", t->test_pairs, "pairs_total",
                  (json_int_t)pl.n, "images", (json_int_t)u, "faces", m, "model", mj, "resnet", rj);
out:
    for (size_t k = 0; k < pl.n; k++) free(pl.v[k].a), free(pl.v[k].b);
    free(pl.v);
    free(td.paths); /* the strings were the pair list's */
    td.paths = NULL, td.nimg = 0;
    free_dataset(&td);
    free(emb), free(idx), free(sc);
    return res;
}

/* ------------------------------------------------------------ training */

static json_t *eval_json(const evalres *v, const evalres *tr) {
    return json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "val_accuracy", v->acc, "val_auc", v->auc,
                     "val_threshold", v->thr, "train_accuracy", tr->acc, "train_auc", tr->auc,
                     "train_eval_loss", tr->loss);
}

/* One training run's state, filled step by step by cli_train's parts
 * (load_data, split_identities, build_network, train_epochs, save_model,
 * report) and released once by trainer_free. */
typedef struct trainer {
    const topts *t;
    char cache[4096], ckpt[4096];
    dataset ds;
    fv_engine *eng;
    int faces;      /* images with a face */
    double cache_s; /* seconds spent detecting and caching faces */
    uint64_t rng;   /* the one random state: split, pairs, batches (checkpointed) */
    int *ids;       /* identities with 2+ faces: nval validation ones, then ntrain */
    int nval, ntrain, train_images;
    pairset val, trs; /* validation pairs; a sample of training pairs */
    int *pool_imgs;   /* scratch: one identity's images, for sampling */
    fvt_net *net;
    fvt_ws *ws;
    fvi_workers *pool;
    fvt_optim opt;
    fvt_ckpt ck;
    fvt_meta meta; /* the best epoch's threshold and validation numbers */
    int threads, bs;
    int *batch, *labels;
    unsigned char *flip;
    float *grad, *best_params, *best_state;
    fvt_triplet *trip;
    json_t *history, *initial;
    int epoch, best_epoch;
    evalres last_v;
    double train_s;
} trainer;

static void trainer_free(trainer *tr) {
    free_dataset(&tr->ds);
    free_pairset(&tr->val);
    free_pairset(&tr->trs);
    free(tr->ids), free(tr->batch), free(tr->labels), free(tr->flip), free(tr->grad);
    free(tr->trip), free(tr->best_params), free(tr->best_state), free(tr->pool_imgs);
    json_decref(tr->history);
    json_decref(tr->initial);
    fvt_optim_free(&tr->opt);
    fvt_ws_destroy(tr->ws);
    fvt_net_destroy(tr->net);
    fvi_workers_destroy(tr->pool);
    fv_engine_destroy(tr->eng);
}

/* Lists the data and detects, aligns and caches every face (or reads the
 * cache).  Returns an exit code. */
static int load_data(trainer *tr) {
    const topts *t = tr->t;
    snprintf(tr->cache, sizeof tr->cache, "%s", t->cache ? t->cache : "");
    if (!t->cache) snprintf(tr->cache, sizeof tr->cache, "%s.cache", t->out);
    snprintf(tr->ckpt, sizeof tr->ckpt, "%s", t->checkpoint ? t->checkpoint : "");
    if (!t->checkpoint) snprintf(tr->ckpt, sizeof tr->ckpt, "%s.ckpt", t->out);
    tr->ds.side = t->input;
    if (scan_data(t, &tr->ds)) return CLI_EXIT_INPUT;
    double tc0 = fvi_now_ms();
    if (build_faces(t, t->data, &tr->ds, &tr->eng, tr->cache)) return CLI_EXIT_FAILURE;
    tr->cache_s = (fvi_now_ms() - tc0) / 1e3;
    for (int i = 0; i < tr->ds.nimg; i++) tr->faces += tr->ds.ok[i];
    return CLI_EXIT_OK;
}

/* Keeps the identities with 2+ faces, splits them by a seeded shuffle into
 * validation and training identities, and draws the pairs each is scored
 * on.  Returns an exit code. */
static int split_identities(trainer *tr) {
    const topts *t = tr->t;
    const dataset *ds = &tr->ds;
    tr->rng = t->seed * 0x2545f4914f6cdd1dull + 1;
    int *cnt = calloc((size_t)ds->nids, sizeof *cnt);
    tr->ids = malloc(sizeof(int) * (size_t)ds->nids);
    if (!cnt || !tr->ids) {
        free(cnt);
        return CLI_EXIT_FAILURE;
    }
    for (int i = 0; i < ds->nimg; i++) cnt[ds->label[i]] += ds->ok[i];
    int nuse = 0;
    for (int k = 0; k < ds->nids; k++)
        if (cnt[k] >= 2) tr->ids[nuse++] = k;
    if (nuse < 4) {
        fprintf(stderr, "faceverify train: only %d identities have 2+ faces; need 4\n", nuse);
        free(cnt);
        return CLI_EXIT_INPUT;
    }
    shuffle(tr->ids, nuse, &tr->rng);
    tr->nval = (int)((float)nuse * t->val_fraction + 0.5f);
    if (tr->nval < 2) tr->nval = 2;
    tr->ntrain = nuse - tr->nval;
    const int *tr_ids = tr->ids + tr->nval;
    if (tr->ntrain < 2) {
        fprintf(stderr, "faceverify train: too few identities left for training\n");
        free(cnt);
        return CLI_EXIT_INPUT;
    }
    for (int k = 0; k < tr->ntrain; k++) tr->train_images += cnt[tr_ids[k]];
    free(cnt);
    if (make_pairset(ds, tr->ids, tr->nval, 4, &tr->rng, &tr->val) ||
        make_pairset(ds, tr_ids, tr->ntrain < 100 ? tr->ntrain : 100, 3, &tr->rng, &tr->trs)) {
        fprintf(stderr, "faceverify train: cannot build validation pairs\n");
        return CLI_EXIT_FAILURE;
    }
    tr->pool_imgs = malloc(sizeof(int) * (size_t)ds->nimg);
    return tr->pool_imgs ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}

/* Creates the network and optimiser (or resumes them from --resume, with
 * the best model so far from --out), the thread pool, the workspace and
 * the batch buffers.  Returns an exit code. */
static int build_network(trainer *tr) {
    const topts *t = tr->t;
    char err[512] = "";
    fvt_layer spec[FVT_MAX_LAYERS];
    int nl = t->adapter ? adapter_spec(spec) : scratch_spec(t->width, spec);
    tr->ck = (fvt_ckpt){0, tr->rng, -1.0f, 0};
    if (t->resume) {
        fv_status st =
            fvt_model_load(t->resume, &tr->net, &tr->meta, &tr->opt, &tr->ck, err, sizeof err);
        if (st != FV_OK) {
            fprintf(stderr, "faceverify train: cannot resume: %s\n", err);
            return CLI_EXIT_INPUT;
        }
        if (strcmp(tr->meta.kind, t->adapter ? "adapter" : "scratch") ||
            (!t->adapter && tr->net->in_h != t->input)) {
            fprintf(stderr, "faceverify train: %s is a %s checkpoint of another shape\n", t->resume,
                    tr->meta.kind);
            return CLI_EXIT_INPUT;
        }
        tr->rng = tr->ck.rng;
        fprintf(stderr, "resuming after epoch %d\n", tr->ck.epoch);
    } else {
        int in_c = t->adapter ? FV_EMBED_DIM : 3, side = t->adapter ? 1 : t->input;
        if (fvt_net_create(spec, nl, in_c, side, side, &tr->net, err, sizeof err) != FV_OK) {
            fprintf(stderr, "faceverify train: %s\n", err);
            return CLI_EXIT_FAILURE;
        }
        fvt_net_init(tr->net, t->seed);
        if (fvt_optim_init(&tr->opt, t->optimizer, tr->net->nparams) != FV_OK)
            return CLI_EXIT_FAILURE;
        tr->opt.weight_decay = t->weight_decay;
    }
    fvt_net *net = tr->net;
    tr->threads = t->common.cfg.threads > 0 ? t->common.cfg.threads : 0;
    if (tr->threads == 0) tr->threads = tr->eng ? fv_engine_threads(tr->eng) : 2;
    fvi_nn_init(); /* BLAS on one thread; the pool splits the work */
    tr->pool = fvi_workers_create(tr->threads);
    const int bs = tr->bs = t->P * t->K;
    if (!tr->pool || fvt_ws_create(net, bs, tr->threads, &tr->ws) != FV_OK) return CLI_EXIT_FAILURE;
    tr->batch = malloc(sizeof(int) * bs);
    tr->labels = malloc(sizeof(int) * bs);
    tr->flip = malloc((size_t)bs);
    tr->grad = malloc(sizeof(float) * (size_t)bs * FV_EMBED_DIM);
    tr->trip = malloc(sizeof *tr->trip * (size_t)bs * bs);
    tr->best_params = malloc(sizeof(float) * (net->nparams + 1));
    tr->best_state = malloc(sizeof(float) * (net->nstate + 1));
    if (!tr->batch || !tr->labels || !tr->flip || !tr->grad || !tr->trip || !tr->best_params ||
        !tr->best_state)
        return CLI_EXIT_FAILURE;
    memcpy(tr->best_params, net->params, sizeof(float) * net->nparams);
    memcpy(tr->best_state, net->state, sizeof(float) * net->nstate);
    if (t->resume) { /* the best model so far is the one in --out */
        fvt_net *bn = NULL;
        fvt_meta bm;
        if (fvt_model_load(t->out, &bn, &bm, NULL, NULL, NULL, 0) == FV_OK &&
            bn->nparams == net->nparams && bn->nstate == net->nstate) {
            memcpy(tr->best_params, bn->params, sizeof(float) * net->nparams);
            memcpy(tr->best_state, bn->state, sizeof(float) * net->nstate);
            tr->meta = bm;
        }
        fvt_net_destroy(bn);
    }
    return CLI_EXIT_OK;
}

/* The metadata every saved file carries; the threshold and validation
 * numbers are the best epoch's. */
static fvt_meta file_meta(const trainer *tr) {
    fvt_meta m = {0};
    snprintf(m.kind, sizeof m.kind, "%s", tr->t->adapter ? "adapter" : "scratch");
    m.norm_mean = NORM_MEAN, m.norm_std = NORM_STD;
    m.threshold = tr->meta.threshold, m.val_accuracy = tr->meta.val_accuracy;
    m.val_auc = tr->meta.val_auc;
    return m;
}

/* One epoch of steps batches: P identities x K images (random mirror
 * each), mining, loss, backward pass, optimiser step.  The order depends
 * on the rng state alone, so a resumed run repeats it.  Returns the mean
 * loss and active fraction over the mined triplets, and the last rate. */
static void run_epoch(trainer *tr, int steps, long total, double *loss, double *active,
                      float *lr_out) {
    const topts *t = tr->t;
    const dataset *ds = &tr->ds;
    int *tr_ids = tr->ids + tr->nval;
    const int bs = tr->bs, ntrain = tr->ntrain;
    qsort(tr_ids, (size_t)ntrain, sizeof *tr_ids, cmp_int);
    shuffle(tr_ids, ntrain, &tr->rng);
    double loss_sum = 0, act_sum = 0, trip_sum = 0;
    float lr = t->lr;
    for (int step = 0; step < steps; step++) {
        int n = 0;
        for (int p = 0; p < t->P && p < ntrain; p++) {
            int id = tr_ids[((long)step * t->P + p) % ntrain], m = 0;
            for (int i = 0; i < ds->nimg; i++)
                if (ds->label[i] == id && ds->ok[i]) tr->pool_imgs[m++] = i;
            shuffle(tr->pool_imgs, m, &tr->rng);
            for (int k = 0; k < t->K && k < m; k++) {
                tr->batch[n] = tr->pool_imgs[k], tr->labels[n] = id;
                tr->flip[n] = (unsigned char)(fvt_rand(&tr->rng) & 1);
                n++;
            }
        }
        if (n < 3) continue;
        fill_input(ds, t->adapter, tr->batch, tr->flip, n, fvt_ws_input(tr->ws));
        const float *y = fvt_forward(tr->net, tr->ws, n, 1, tr->pool);
        size_t nt = fvt_mine(y, tr->labels, n, FV_EMBED_DIM, t->mining, tr->trip, (size_t)bs * bs),
               act;
        float l = fvt_triplet_loss(y, n, FV_EMBED_DIM, tr->trip, nt, t->margin, tr->grad, &act);
        fvt_net_zero_grad(tr->net);
        fvt_backward(tr->net, tr->ws, n, tr->grad, tr->pool);
        lr = fvt_lr_at(t->sched, t->lr, (long)tr->epoch * steps + step, total, (long)steps * 4);
        fvt_optim_step(&tr->opt, tr->net->params, tr->net->grads, tr->net->decay, lr);
        loss_sum += l * (double)nt;
        act_sum += (double)act;
        trip_sum += (double)nt;
    }
    *loss = trip_sum > 0 ? loss_sum / trip_sum : 0;
    *active = trip_sum > 0 ? act_sum / trip_sum : 0;
    *lr_out = lr;
}

/* Scores the untrained network, then runs epochs until --epochs,
 * --patience epochs without a better validation AUC, or --stop-after.
 * After each: a progress line, a history entry, the best weights kept
 * with their calibrated threshold, and a checkpoint.  Returns an exit
 * code. */
static int train_epochs(trainer *tr) {
    const topts *t = tr->t;
    const int steps = t->steps ? t->steps : (tr->ntrain + t->P - 1) / t->P;
    const long total = (long)steps * t->epochs;
    char err[512] = "";
    evalres v0, t0r;
    if (evaluate(tr->net, tr->ws, tr->bs, &tr->ds, t->adapter, &tr->val, t->margin, tr->pool,
                 &v0) ||
        evaluate(tr->net, tr->ws, tr->bs, &tr->ds, t->adapter, &tr->trs, t->margin, tr->pool, &t0r))
        return CLI_EXIT_FAILURE;
    fprintf(stderr,
            "%s: %d identities (%d train, %d val), %d images, %d faces; %d val pairs; "
            "untrained: val acc %.4f auc %.4f, train auc %.4f\n",
            t->adapter ? "adapter" : "scratch", tr->ds.nids, tr->ntrain, tr->nval, tr->ds.nimg,
            tr->faces, tr->val.npairs, v0.acc, v0.auc, t0r.auc);
    tr->initial = eval_json(&v0, &t0r);
    fvt_ckpt *ck = &tr->ck;
    if (ck->best_metric < 0) {
        ck->best_metric = (float)v0.auc;
        tr->meta.threshold = (float)v0.thr, tr->meta.val_accuracy = (float)v0.acc;
        tr->meta.val_auc = (float)v0.auc;
    }
    double train_t0 = fvi_now_ms();
    tr->best_epoch = tr->epoch = ck->epoch;
    tr->last_v = v0;
    fvt_net *net = tr->net;
    while (tr->epoch < t->epochs && ck->bad_epochs < t->patience &&
           !(t->stop_after && tr->epoch >= t->stop_after)) {
        double te = fvi_now_ms(), loss, active;
        float lr;
        run_epoch(tr, steps, total, &loss, &active, &lr);
        tr->epoch++;
        evalres v, trv;
        if (evaluate(net, tr->ws, tr->bs, &tr->ds, t->adapter, &tr->val, t->margin, tr->pool, &v) ||
            evaluate(net, tr->ws, tr->bs, &tr->ds, t->adapter, &tr->trs, t->margin, tr->pool, &trv))
            return CLI_EXIT_FAILURE;
        tr->last_v = v;
        double secs = (fvi_now_ms() - te) / 1e3;
        int better = v.auc > ck->best_metric;
        fprintf(stderr,
                "epoch %d/%d  loss %.4f  active %.1f%%  lr %.2g  val acc %.4f auc %.4f  "
                "train auc %.4f  %.1f s%s\n",
                tr->epoch, t->epochs, loss, 100 * active, lr, v.acc, v.auc, trv.auc, secs,
                better ? "  *" : "");
        json_t *ej = eval_json(&v, &trv);
        json_object_set_new(ej, "epoch", json_integer(tr->epoch));
        json_object_set_new(ej, "loss", json_real(loss));
        json_object_set_new(ej, "active_fraction", json_real(active));
        json_object_set_new(ej, "seconds", json_real(secs));
        json_array_append_new(tr->history, ej);
        if (better) {
            ck->best_metric = (float)v.auc, ck->bad_epochs = 0, tr->best_epoch = tr->epoch;
            memcpy(tr->best_params, net->params, sizeof(float) * net->nparams);
            memcpy(tr->best_state, net->state, sizeof(float) * net->nstate);
            tr->meta.threshold = (float)v.thr, tr->meta.val_accuracy = (float)v.acc;
            tr->meta.val_auc = (float)v.auc;
        } else {
            ck->bad_epochs++;
        }
        ck->epoch = tr->epoch, ck->rng = tr->rng;
        fvt_meta cm = file_meta(tr);
        if (fvt_model_save(tr->ckpt, net, &cm, &tr->opt, ck, err, sizeof err) != FV_OK)
            fprintf(stderr, "faceverify train: warning: %s\n", err);
    }
    tr->train_s = (fvi_now_ms() - train_t0) / 1e3;
    return CLI_EXIT_OK;
}

/* Writes the best epoch's weights to --out with its calibrated threshold
 * and a summary of the run; *out gets the saved metadata (and id).
 * Returns an exit code. */
static int save_model(trainer *tr, fvt_meta *out) {
    const topts *t = tr->t;
    fvt_net *net = tr->net;
    char err[512] = "";
    memcpy(net->params, tr->best_params, sizeof(float) * net->nparams);
    memcpy(net->state, tr->best_state, sizeof(float) * net->nstate);
    *out = file_meta(tr);
    snprintf(out->summary, sizeof out->summary,
             "data=%s identities=%d train_identities=%d train_images=%d val_identities=%d "
             "epochs=%d best_epoch=%d P=%d K=%d margin=%g mining=%s optimizer=%s lr=%g "
             "weight_decay=%g schedule=%d seed=%llu input=%d width=%d train_seconds=%.1f",
             t->data, tr->ds.nids, tr->ntrain, tr->train_images, tr->nval, tr->epoch,
             tr->best_epoch, t->P, t->K, t->margin,
             t->mining == FVT_MINE_HARD ? "hard" : "semihard",
             t->optimizer == FVT_ADAM ? "adam" : "sgd", t->lr, t->weight_decay, (int)t->sched,
             (unsigned long long)t->seed, t->adapter ? 0 : t->input, t->width, tr->train_s);
    if (fvt_model_save(t->out, net, out, NULL, NULL, err, sizeof err) != FV_OK) {
        fprintf(stderr, "faceverify train: %s\n", err);
        return CLI_EXIT_FAILURE;
    }
    fprintf(stderr, "wrote %s (id %s, best epoch %d, val acc %.4f auc %.4f, threshold %.4f)\n",
            t->out, out->id, tr->best_epoch, out->val_accuracy, out->val_auc, out->threshold);
    return CLI_EXIT_OK;
}

/* Scores the saved model on --test-pairs when given, and prints the JSON
 * summary under --json.  Returns an exit code. */
static int report(trainer *tr, const fvt_meta *out) {
    const topts *t = tr->t;
    json_t *test = NULL;
    if (t->test_pairs &&
        !(test = test_eval(t, tr->net, tr->ws, tr->bs, tr->pool, &tr->eng, out->threshold))) {
        fprintf(stderr, "faceverify train: the test evaluation failed\n");
        return CLI_EXIT_FAILURE;
    }
    if (t->json) {
        cli_print_json(json_pack(
            "{s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:f,s:f,s:f,s:O,s:O,"
            "s:f,s:I,s:o*}",
            "model", t->out, "id", out->id, "mode", out->kind, "identities", tr->ds.nids,
            "train_identities", tr->ntrain, "val_identities", tr->nval, "images", tr->ds.nimg,
            "faces", tr->faces, "val_pairs", tr->val.npairs, "epochs_run", tr->epoch, "best_epoch",
            tr->best_epoch, "threads", tr->threads, "val_accuracy", (double)out->val_accuracy,
            "val_auc", (double)out->val_auc, "threshold", (double)out->threshold, "cache_seconds",
            tr->cache_s, "train_seconds", tr->train_s, "initial", tr->initial, "epochs",
            tr->history, "last_val_auc", tr->last_v.auc, "parameters", (json_int_t)tr->net->nparams,
            "test", test));
    } else {
        json_decref(test);
    }
    return CLI_EXIT_OK;
}

int cli_train(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            train_usage(stdout);
            return CLI_EXIT_OK;
        }
    topts t;
    if (parse_train(argc, argv, &t)) return CLI_EXIT_INPUT;
    trainer tr = {.t = &t, .history = json_array()};
    fvt_meta out;
    int code = tr.history ? load_data(&tr) : CLI_EXIT_FAILURE;
    if (code == CLI_EXIT_OK) code = split_identities(&tr);
    if (code == CLI_EXIT_OK) code = build_network(&tr);
    if (code == CLI_EXIT_OK) code = train_epochs(&tr);
    if (code == CLI_EXIT_OK) code = save_model(&tr, &out);
    if (code == CLI_EXIT_OK) code = report(&tr, &out);
    trainer_free(&tr);
    return code;
}
