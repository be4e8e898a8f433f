/*
 * openset.c: `faceverify eval-openset`, open-set identification ("who is
 * this, if anyone?") measured on a folder per person (LFW's layout:
 * DIR/<Person>/<image>.jpg), with the library's decision rule
 * (fv_openset_decide) and fused templates (fv_fuse_templates).
 *
 * Protocol (also in --help and the README): people with at least T+1
 * images are the candidates for mated subjects; they are shuffled with
 * the seed and the first N/2 enrol with their first T images (sorted by
 * name), their other images being the mated probes (at most P per person).
 * The gallery is filled to N subjects with other people, shuffled with
 * the same generator (T templates, or fewer when they have fewer images;
 * their other images are not used).  Everyone left out of the gallery
 * gives non-mated probes: all their images, at most P per person.  Each
 * probe is compared with every fused template (exactly; this is a
 * measurement, not the server's index), and its 21 nearest distances go
 * to fv_openset_decide.
 *
 * Reported: rank-1 rate of the mated probes; FNIR at FPIR 1e-3, 1e-2 and
 * 5e-2 with the score threshold measured on these non-mated probes (the
 * normalised score of the nearest subject, fv_openset_score); and the
 * product's operating point (--fpir, default FV_DEFAULT_FPIR) decided by
 * the library's calibrated rule, with its measured FPIR and FNIR.  A
 * mated probe is a miss when it is not matched or matched to the wrong
 * subject.  Images are embedded by the code eval-pairs uses
 * (cli_images_embed: --jobs, --embeddings-from, --dump-embeddings).
 */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"

/* Nearest subjects given to fv_openset_decide: the best and 20 cohort. */
#define OS_NEAREST 21

/* The empirical operating points reported, by FPIR. */
static const double OS_FPIRS[] = {1e-3, 1e-2, 5e-2};
#define OS_NFPIRS (sizeof OS_FPIRS / sizeof *OS_FPIRS)

typedef struct {
    char *name;
    char **files; /* "Person/file.jpg", sorted */
    size_t nfiles;
} person_t;

typedef struct {
    person_t *v;
    size_t n, cap;
} people_t;

enum { ROLE_NONE, ROLE_MATED, ROLE_FILL, ROLE_NONMATED };

/* One probe's outcome. */
typedef struct {
    int img;     /* index into the image set */
    int subject; /* the gallery subject it is of, -1 for non-mated */
    int nearest; /* the gallery subject it is nearest to */
    float score; /* fv_openset_score of the nearest */
    int match;   /* the calibrated decision (fv_openset_decide) */
} probe_t;

static void people_free(people_t *p) {
    for (size_t i = 0; i < p->n; i++) {
        for (size_t k = 0; k < p->v[i].nfiles; k++) free(p->v[i].files[k]);
        free(p->v[i].files);
        free(p->v[i].name);
    }
    free(p->v);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_person(const void *a, const void *b) {
    return strcmp(((const person_t *)a)->name, ((const person_t *)b)->name);
}

/* The image files of root/name, as "name/file", sorted.  -1 on no memory. */
static int list_person(const char *root, const char *name, person_t *p) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    DIR *d = opendir(dir);
    if (!d) return 0; /* a plain file: not a person */
    size_t cap = 0;
    int rc = 0;
    for (struct dirent *de; (de = readdir(d)) && !rc;) {
        if (!cli_is_image_name(de->d_name)) continue;
        if (p->nfiles == cap) {
            cap = cap ? 2 * cap : 8;
            char **v = realloc(p->files, cap * sizeof *v);
            if (!v) {
                rc = -1;
                break;
            }
            p->files = v;
        }
        size_t len = strlen(name) + strlen(de->d_name) + 2;
        char *f = malloc(len);
        if (!f) {
            rc = -1;
            break;
        }
        snprintf(f, len, "%s/%s", name, de->d_name);
        p->files[p->nfiles++] = f;
    }
    closedir(d);
    if (p->nfiles) qsort(p->files, p->nfiles, sizeof *p->files, cmp_str);
    return rc;
}

/* Every folder of root with at least one image, sorted by name (so the
 * draw does not depend on the file system's order).  -1 with a message. */
static int list_people(const cli_opts *o, const char *root, people_t *pp) {
    DIR *d = opendir(root);
    if (!d) {
        cli_error(o, FV_E_IO, "eval-openset: cannot open %s", root);
        return -1;
    }
    int rc = 0;
    for (struct dirent *de; (de = readdir(d)) && !rc;) {
        if (de->d_name[0] == '.') continue;
        person_t p = {.name = strdup(de->d_name)};
        if (!p.name || list_person(root, de->d_name, &p)) rc = -1;
        if (!rc && p.nfiles && pp->n == pp->cap) {
            size_t cap = pp->cap ? 2 * pp->cap : 64;
            person_t *v = realloc(pp->v, cap * sizeof *v);
            if (v) {
                pp->v = v;
                pp->cap = cap;
            } else {
                rc = -1;
            }
        }
        if (!rc && p.nfiles) {
            pp->v[pp->n++] = p;
        } else {
            for (size_t k = 0; k < p.nfiles; k++) free(p.files[k]);
            free(p.files);
            free(p.name);
        }
    }
    closedir(d);
    if (rc) fprintf(stderr, "faceverify: out of memory\n");
    if (!rc && pp->n) qsort(pp->v, pp->n, sizeof *pp->v, cmp_person);
    return rc;
}

/* splitmix64: a small, well-mixed generator, so a seed gives the same draw
 * on every platform (rand() does not). */
static uint64_t next_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void shuffle(size_t *v, size_t n, uint64_t *s) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(next_rand(s) % i);
        size_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* The draw: role[i] of each person.  Returns the number of gallery
 * subjects; *mated gets the number of mated ones. */
static size_t draw(const people_t *pp, const cli_opts *o, int *role, size_t *idx, size_t *mated) {
    uint64_t s = o->seed;
    size_t T = (size_t)o->templates, N = (size_t)o->gallery, nc = 0, no = 0;
    for (size_t i = 0; i < pp->n; i++)
        if (pp->v[i].nfiles >= T + 1) idx[nc++] = i;
    shuffle(idx, nc, &s);
    size_t nm = nc < N / 2 ? nc : N / 2;
    for (size_t i = 0; i < pp->n; i++) role[i] = ROLE_NONMATED;
    for (size_t k = 0; k < nm; k++) role[idx[k]] = ROLE_MATED;
    for (size_t i = 0; i < pp->n; i++)
        if (role[i] != ROLE_MATED) idx[no++] = i;
    shuffle(idx, no, &s);
    size_t nf = no < N - nm ? no : N - nm;
    for (size_t k = 0; k < nf; k++) role[idx[k]] = ROLE_FILL;
    *mated = nm;
    return nm + nf;
}

static size_t min_sz(size_t a, size_t b) {
    return a < b ? a : b;
}

/* The probes of person p: (first, count) of its files. */
static void probe_range(const person_t *p, int role, const cli_opts *o, size_t *first, size_t *n) {
    size_t T = (size_t)o->templates, P = o->max_probes > 0 ? (size_t)o->max_probes : SIZE_MAX;
    *first = role == ROLE_MATED ? T : 0;
    *n = role == ROLE_MATED      ? min_sz(p->nfiles - T, P)
         : role == ROLE_NONMATED ? min_sz(p->nfiles, P)
                                 : 0;
}

typedef struct {
    float d;
    int subject;
} near_t;

static int cmp_near(const void *a, const void *b) {
    float x = ((const near_t *)a)->d, y = ((const near_t *)b)->d;
    return (x > y) - (x < y);
}

/* Everything one run measures, and what it owns. */
typedef struct {
    people_t pp;
    int *role;
    size_t *idx;
    cli_image_set set;
    int *subject_person; /* gallery subject -> person */
    float *fused;        /* gallery x FV_EMBED_DIM */
    size_t gallery;
    probe_t *probes;
    size_t nprobes;
    float op_threshold; /* the calibrated score threshold at this gallery size */
    json_t *skipped;
} openset_t;

static void openset_free(openset_t *r) {
    people_free(&r->pp);
    free(r->role);
    free(r->idx);
    cli_images_free(&r->set);
    free(r->subject_person);
    free(r->fused);
    free(r->probes);
    json_decref(r->skipped);
}

static void skip(openset_t *r, const cli_image *im, const char *role) {
    json_array_append_new(r->skipped, json_pack("{s:s,s:s,s:s}", "image", im->path, "reason",
                                                fv_status_name(im->st), "role", role));
}

/* Fuses each gallery person's templates into r->fused; a person none of
 * whose templates has a face is left out of the gallery (and listed). */
static int enrol(openset_t *r, const cli_opts *o) {
    size_t T = (size_t)o->templates;
    float tpl[100 * FV_EMBED_DIM];
    for (size_t i = 0; i < r->pp.n; i++) {
        if (r->role[i] != ROLE_MATED && r->role[i] != ROLE_FILL) continue;
        const person_t *p = &r->pp.v[i];
        size_t nt = 0;
        for (size_t k = 0; k < min_sz(T, p->nfiles); k++) {
            const cli_image *im = &r->set.imgs[cli_images_find(&r->set, p->files[k])];
            const float *e = cli_image_embedding(im, 0);
            if (!e) {
                skip(r, im, "template");
                continue;
            }
            memcpy(tpl + nt++ * FV_EMBED_DIM, e, sizeof(float) * FV_EMBED_DIM);
        }
        if (nt == 0) {
            r->role[i] = ROLE_NONE; /* not enrolled; its images are no probes */
            continue;
        }
        float *out = r->fused + r->gallery * FV_EMBED_DIM;
        if (fv_fuse_templates(tpl, nt, FV_EMBED_DIM, out) != FV_OK) {
            r->role[i] = ROLE_NONE;
            continue;
        }
        r->subject_person[r->gallery++] = (int)i;
    }
    return r->gallery ? 0 : -1;
}

/* Scores one probe embedding against the gallery (near: scratch of
 * r->gallery entries).  *st: fv_openset_decide's status. */
static void score_probe(openset_t *r, const char *id, double fpir, const float *e, near_t *near,
                        probe_t *pr, fv_status *st) {
    for (size_t g = 0; g < r->gallery; g++) {
        near[g].d = fv_distance(e, r->fused + g * FV_EMBED_DIM);
        near[g].subject = (int)g;
    }
    qsort(near, r->gallery, sizeof *near, cmp_near);
    size_t n = min_sz(OS_NEAREST, r->gallery);
    float d[OS_NEAREST];
    for (size_t k = 0; k < n; k++) d[k] = near[k].d;
    pr->nearest = near[0].subject;
    pr->score = fv_openset_score(d, n, 0);
    fv_openset_decision dec = {0};
    *st = fv_openset_decide(id, d, n, r->gallery, fpir, &dec);
    pr->match = *st == FV_OK && dec.match;
    if (*st == FV_OK) r->op_threshold = dec.threshold;
}

/* Scores every probe of every mated or non-mated person.  *dec_st: the
 * last fv_openset_decide status (FV_E_UNSUPPORTED: no calibration). */
static int score_probes(openset_t *r, const cli_opts *o, const char *id, double fpir,
                        fv_status *dec_st) {
    size_t cap = 0;
    for (size_t i = 0; i < r->pp.n; i++) {
        size_t first, n;
        probe_range(&r->pp.v[i], r->role[i], o, &first, &n);
        cap += n;
    }
    r->probes = calloc(cap ? cap : 1, sizeof *r->probes);
    near_t *near = malloc(r->gallery * sizeof *near);
    int *subject_of = malloc(r->pp.n * sizeof *subject_of);
    if (!r->probes || !near || !subject_of) {
        free(near);
        free(subject_of);
        return -1;
    }
    for (size_t i = 0; i < r->pp.n; i++) subject_of[i] = -1;
    for (size_t g = 0; g < r->gallery; g++) subject_of[r->subject_person[g]] = (int)g;
    *dec_st = FV_OK;
    for (size_t i = 0; i < r->pp.n; i++) {
        size_t first, n;
        probe_range(&r->pp.v[i], r->role[i], o, &first, &n);
        for (size_t k = first; k < first + n; k++) {
            int ii = cli_images_find(&r->set, r->pp.v[i].files[k]);
            const float *e = cli_image_embedding(&r->set.imgs[ii], 0);
            if (!e) {
                skip(r, &r->set.imgs[ii],
                     r->role[i] == ROLE_MATED ? "mated_probe" : "non_mated_probe");
                continue;
            }
            probe_t *pr = &r->probes[r->nprobes++];
            pr->img = ii;
            pr->subject = r->role[i] == ROLE_MATED ? subject_of[i] : -1;
            score_probe(r, id, fpir, e, near, pr, dec_st);
        }
    }
    free(near);
    free(subject_of);
    return 0;
}

static int cmp_float_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* FNIR at FPIR fpir with the score threshold taken from these non-mated
 * probes: the (floor(fpir * M) + 1)-th highest non-mated score, a probe
 * matching when its score is above it.  ns: the M non-mated scores, sorted
 * descending. */
static json_t *empirical_point(const openset_t *r, const float *ns, size_t m, double fpir) {
    size_t k = (size_t)floor(fpir * (double)m);
    float thr = k < m ? ns[k] : -INFINITY;
    size_t fp = 0, mated = 0, miss = 0;
    for (size_t i = 0; i < m; i++) fp += ns[i] > thr;
    for (size_t i = 0; i < r->nprobes; i++) {
        const probe_t *p = &r->probes[i];
        if (p->subject < 0) continue;
        mated++;
        miss += !(p->score > thr && p->nearest == p->subject);
    }
    return json_pack("{s:f,s:o,s:f,s:o,s:b}", "fpir", fpir, "threshold",
                     isfinite(thr) ? json_real(thr) : json_null(), "fpir_measured",
                     (double)fp / (double)m, "fnir",
                     mated ? json_real((double)miss / (double)mated) : json_null(), "measurable",
                     (double)m * fpir >= 1.0);
}

/* The calibrated decision's measured error rates. */
static json_t *calibrated_point(const openset_t *r, double fpir) {
    size_t fp = 0, m = 0, mated = 0, miss = 0, wrong = 0;
    for (size_t i = 0; i < r->nprobes; i++) {
        const probe_t *p = &r->probes[i];
        if (p->subject < 0) {
            m++;
            fp += (size_t)p->match;
        } else {
            mated++;
            miss += !(p->match && p->nearest == p->subject);
            wrong += p->match && p->nearest != p->subject;
        }
    }
    return json_pack(
        "{s:f,s:f,s:o,s:I,s:o,s:I,s:I}", "fpir", fpir, "threshold", (double)r->op_threshold,
        "fpir_measured", m ? json_real((double)fp / (double)m) : json_null(), "false_positives",
        (json_int_t)fp, "fnir", mated ? json_real((double)miss / (double)mated) : json_null(),
        "misses", (json_int_t)miss, "wrong_subject", (json_int_t)wrong);
}

static json_t *names_json(const openset_t *r, int role) {
    json_t *a = json_array();
    for (size_t g = 0; g < r->gallery; g++) {
        int i = r->subject_person[g];
        if (role == ROLE_NONE || r->role[i] == role)
            json_array_append_new(a, json_string(r->pp.v[i].name));
    }
    return a;
}

static const char PROTOCOL[] =
    "people with >= T+1 images are mated candidates; shuffled with the seed, up to N/2 enrol "
    "with their first T images (the rest are mated probes, <= P each); the gallery is filled "
    "to N with other people (<= T templates); people outside the gallery give the non-mated "
    "probes (<= P each); templates fused; the 21 nearest fused templates decide";

/* The report: counts, rank-1, the empirical FNIR@FPIR points and the
 * calibrated operating point (null, with a reason, without calibration). */
static json_t *report(const openset_t *r, const cli_opts *o, size_t mated_subjects, double fpir,
                      const char *id, fv_status dec_st) {
    size_t m = 0, nm = 0, rank1 = 0;
    float *ns = malloc((r->nprobes ? r->nprobes : 1) * sizeof *ns);
    if (!ns) return NULL;
    for (size_t i = 0; i < r->nprobes; i++) {
        const probe_t *p = &r->probes[i];
        if (p->subject < 0) {
            ns[nm++] = p->score;
        } else {
            m++;
            rank1 += p->nearest == p->subject;
        }
    }
    qsort(ns, nm, sizeof *ns, cmp_float_desc);
    json_t *pts = json_array();
    for (size_t k = 0; k < OS_NFPIRS && nm; k++)
        json_array_append_new(pts, empirical_point(r, ns, nm, OS_FPIRS[k]));
    free(ns);
    json_t *op = dec_st == FV_OK ? calibrated_point(r, fpir) : json_null();
    json_t *j = json_pack(
        "{s:s,s:I,s:I,s:i,s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:s*,s:o,s:o,s:O,s:s,s:I,s:f}", "protocol",
        PROTOCOL, "gallery", (json_int_t)r->gallery, "gallery_requested", (json_int_t)o->gallery,
        "templates", o->templates, "seed", (json_int_t)o->seed, "mated_subjects",
        (json_int_t)mated_subjects, "mated_probes", (json_int_t)m, "non_mated_probes",
        (json_int_t)nm, "rank1", m ? json_real((double)rank1 / (double)m) : json_null(),
        "fnir_at_fpir", pts, "operating_point", op, "operating_point_reason",
        dec_st == FV_OK              ? NULL
        : dec_st == FV_E_UNSUPPORTED ? "no open-set calibration for this model"
                                     : fv_status_name(dec_st),
        "gallery_people", names_json(r, ROLE_NONE), "mated_people", names_json(r, ROLE_MATED),
        "skipped", r->skipped, "model", id, "images", (json_int_t)r->set.nimg, "ms_per_image",
        cli_images_ms_per_image(&r->set));
    if (j && o->embeddings_from)
        json_object_set_new(j, "images_from_file", json_integer((json_int_t)r->set.cached));
    return j;
}

static void print_report(const json_t *j) {
    const json_t *op = json_object_get(j, "operating_point");
    printf("gallery           %lld subjects (%lld mated), %lld templates each\n",
           (long long)json_integer_value(json_object_get(j, "gallery")),
           (long long)json_integer_value(json_object_get(j, "mated_subjects")),
           (long long)json_integer_value(json_object_get(j, "templates")));
    printf("probes            %lld mated, %lld non-mated, %zu images skipped\n",
           (long long)json_integer_value(json_object_get(j, "mated_probes")),
           (long long)json_integer_value(json_object_get(j, "non_mated_probes")),
           json_array_size(json_object_get(j, "skipped")));
    printf("rank-1            %.4f\n", json_real_value(json_object_get(j, "rank1")));
    const json_t *pts = json_object_get(j, "fnir_at_fpir");
    for (size_t i = 0; i < json_array_size(pts); i++) {
        const json_t *p = json_array_get(pts, i);
        printf("FNIR at FPIR %-5g %.4f (score threshold %.4f, measured FPIR %.4f%s)\n",
               json_real_value(json_object_get(p, "fpir")),
               json_real_value(json_object_get(p, "fnir")),
               json_real_value(json_object_get(p, "threshold")),
               json_real_value(json_object_get(p, "fpir_measured")),
               json_is_true(json_object_get(p, "measurable")) ? "" : "; too few non-mated probes");
    }
    if (json_is_object(op))
        printf("operating point   FPIR %g (calibrated): measured FPIR %.4f, FNIR %.4f\n",
               json_real_value(json_object_get(op, "fpir")),
               json_real_value(json_object_get(op, "fpir_measured")),
               json_real_value(json_object_get(op, "fnir")));
    else
        printf("operating point   none (%s)\n",
               json_string_value(json_object_get(j, "operating_point_reason")));
}

/* The images the draw uses: templates of the gallery people and probes. */
static char **used_images(const openset_t *r, const cli_opts *o, size_t *n) {
    size_t cap = 0;
    for (size_t i = 0; i < r->pp.n; i++) cap += r->pp.v[i].nfiles;
    char **names = malloc((cap ? cap : 1) * sizeof *names);
    if (!names) return NULL;
    *n = 0;
    for (size_t i = 0; i < r->pp.n; i++) {
        const person_t *p = &r->pp.v[i];
        size_t first, np;
        if (r->role[i] == ROLE_MATED || r->role[i] == ROLE_FILL)
            for (size_t k = 0; k < min_sz((size_t)o->templates, p->nfiles); k++)
                names[(*n)++] = p->files[k];
        probe_range(p, r->role[i], o, &first, &np);
        for (size_t k = first; k < first + np; k++) names[(*n)++] = p->files[k];
    }
    return names;
}

int cli_eval_openset(cli_opts *o) {
    if (!o->root)
        return cli_exit_code(cli_error(o, FV_E_INVALID_ARGUMENT,
                                       "eval-openset needs --root DIR (a folder per person)"));
    if (o->gallery == 0) o->gallery = 100;
    if (o->templates == 0) o->templates = 1;
    double fpir = o->fpir > 0 ? o->fpir : FV_DEFAULT_FPIR;
    openset_t r = {.skipped = json_array()};
    int code = CLI_EXIT_FAILURE;
    if (list_people(o, o->root, &r.pp)) {
        code = CLI_EXIT_INPUT;
        goto done;
    }
    r.role = calloc(r.pp.n ? r.pp.n : 1, sizeof *r.role);
    r.idx = calloc(r.pp.n ? r.pp.n : 1, sizeof *r.idx);
    if (!r.role || !r.idx) goto oom;
    size_t mated = 0, g = draw(&r.pp, o, r.role, r.idx, &mated);
    if (mated == 0 || g < (size_t)o->gallery || g >= r.pp.n) {
        size_t nc = 0;
        for (size_t i = 0; i < r.pp.n; i++) nc += r.pp.v[i].nfiles > (size_t)o->templates;
        cli_error(o, FV_E_INVALID_ARGUMENT,
                  "eval-openset: %s has %zu people, %zu with %d+ images; --gallery %d "
                  "--templates %d needs more than %d people, at least one with %d+ images",
                  o->root, r.pp.n, nc, o->templates + 1, o->gallery, o->templates, o->gallery,
                  o->templates + 1);
        code = CLI_EXIT_INPUT;
        goto done;
    }
    size_t nnames = 0;
    char **names = used_images(&r, o, &nnames);
    if (!names) goto oom;
    code = cli_images_embed(o, names, nnames, 0, &r.set); /* the set owns names now */
    if (code != CLI_EXIT_OK) goto done;
    if (o->dump_embeddings && cli_images_dump_embeddings(o->dump_embeddings, &r.set, 0)) {
        code = CLI_EXIT_FAILURE;
        goto done;
    }
    r.subject_person = malloc(g * sizeof *r.subject_person);
    r.fused = malloc(g * FV_EMBED_DIM * sizeof *r.fused);
    if (!r.subject_person || !r.fused) goto oom;
    if (enrol(&r, o)) {
        fprintf(stderr, "faceverify eval-openset: no gallery template has a face\n");
        code = CLI_EXIT_INPUT;
        goto done;
    }
    char id[160];
    cli_model_id(o, r.set.model, id, sizeof id);
    mated = 0; /* those enrolled */
    for (size_t k = 0; k < r.gallery; k++) mated += r.role[r.subject_person[k]] == ROLE_MATED;
    fv_status dec_st = FV_OK;
    if (score_probes(&r, o, id, fpir, &dec_st)) goto oom;
    json_t *j = report(&r, o, mated, fpir, id, dec_st);
    if (!j) goto oom;
    if (o->json)
        cli_print_json(j);
    else {
        print_report(j);
        json_decref(j);
    }
    code = CLI_EXIT_OK;
    goto done;
oom:
    fprintf(stderr, "faceverify: out of memory\n");
    code = CLI_EXIT_FAILURE;
done:
    openset_free(&r);
    return code;
}
