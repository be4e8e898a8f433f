/*
 * shape_predictor.c: dlib's shape_predictor (an ensemble of regression
 * trees, Kazemi & Sullivan 2014), loaded from dlib's .dat file.
 *
 * File layout (dlib serialization, see dlib_serial.h):
 *   int version (= 1)
 *   matrix<float,0,1> initial_shape        2P values (x0,y0,x1,y1,...)
 *   vector<vector<regression_tree>> forests  C cascades of T trees; a tree
 *       is vector<split{ulong idx1, ulong idx2, float thresh}> then
 *       vector<matrix<float,0,1>> leaf_values (splits+1 leaves of 2P)
 *   vector<vector<ulong>> anchor_idx       per cascade, F feature anchors
 *   vector<vector<vector<float,2>>> deltas per cascade, F offsets
 *
 * Loading runs the same parser twice over the bytes: the first pass only
 * validates and counts, the second fills a handful of flat arrays sized by
 * the first.  So a model is ~8 allocations however many trees it has
 * (which keeps out-of-memory tests short), and nothing is allocated from
 * a count that was not first checked against the bytes left.
 *
 * Prediction follows dlib's operator() step by step, with float where
 * dlib uses float (shape, leaf values, the 2x2 shape-to-shape transform)
 * and double where it uses double (the box transform), and dlib's
 * round-half-up float->integer pixel conversion, so that landmarks match
 * dlib exactly in practice.
 */
#include "align/align.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "align/align_internal.h"
#include "core/fvi.h"
#include "nn/dlib_serial.h"

/* Sanity caps well above any real model; the byte-count checks are the
 * real guard, these keep index types small. */
#define SP_MAX_PARTS 4096
#define SP_MAX_CASCADES 1000
#define SP_MAX_DEPTH 20
#define SP_MAX_FILE ((size_t)512 * 1024 * 1024)
#define SP_MAX_BOX_COORD 1e7

typedef struct sp_split {
    uint32_t idx1, idx2;
    float thresh;
} sp_split;

typedef struct sp_tree {
    size_t split0;  /* first split in sp->splits */
    size_t nsplits; /* 2^depth - 1 */
    size_t leaf0;   /* first float of the first leaf in sp->leaves */
} sp_tree;

typedef struct sp_cascade {
    size_t tree0, ntrees; /* trees [tree0, tree0+ntrees) */
    size_t feat0, nfeat;  /* features [feat0, feat0+nfeat) */
} sp_cascade;

struct fvi_shape_predictor {
    size_t nparts;
    float *init; /* 2*nparts */
    size_t ncasc, ntrees, nsplits, nleaf, nfeat;
    sp_cascade *casc;
    sp_tree *trees;
    sp_split *splits;
    float *leaves;
    uint32_t *anchor;
    float *deltas;   /* 2*nfeat */
    size_t max_feat; /* largest nfeat of one cascade (scratch size) */
};

/* Running counters of one parse pass.  In the counting pass sp is NULL and
 * only the counters move; in the filling pass they index sp's arrays and
 * must never exceed the totals of the first pass. */
typedef struct sp_parse {
    fvi_dser d;
    fvi_shape_predictor *sp; /* NULL: count only */
    size_t nparts, ncasc, ntrees, nsplits, nleaf, nfeat, max_feat;
} sp_parse;

static int finite_float(fvi_dser *d, float *v) {
    if (fvi_dser_float(d, v)) return -1;
    if (!isfinite(*v)) return fvi_dser_fail(d, "non-finite value");
    return 0;
}

/* A float in a pass: decoded and checked when filling, only stepped over
 * (same encoding checks, no conversion) when counting, which halves the
 * load time; non-finite values are then caught by the filling pass. */
static int pass_float(const sp_parse *ps, fvi_dser *d, float *v) {
    if (ps->sp) return finite_float(d, v);
    int64_t mant, ex;
    *v = 0;
    return fvi_dser_int(d, &mant) || fvi_dser_int_range(d, -32768, 32767, &ex) ? -1 : 0;
}

/* Reads a vector size that must be at most max and at most the bytes left
 * divided by min_bytes (the smallest encoding of one element). */
static int read_count(fvi_dser *d, size_t max, size_t min_bytes, size_t *n) {
    int64_t v;
    if (fvi_dser_int_range(d, 0, INT64_MAX, &v)) return -1;
    if ((uint64_t)v > max || (uint64_t)v > fvi_dser_left(d) / min_bytes)
        return fvi_dser_fail(d, "vector size out of range");
    *n = (size_t)v;
    return 0;
}

/* Reads a matrix<float,0,1> of exactly n values into out (out may be NULL
 * in the counting pass). */
static int read_column(const sp_parse *ps, fvi_dser *d, size_t n, float *out) {
    int64_t rows, cols;
    if (fvi_dser_matrix_header(d, &rows, &cols, n)) return -1;
    if ((size_t)rows != n || cols != 1) return fvi_dser_fail(d, "unexpected matrix shape");
    for (size_t i = 0; i < n; i++) {
        float v;
        if (pass_float(ps, d, &v)) return -1;
        if (out) out[i] = v;
    }
    return 0;
}

static int is_pow2(size_t x) {
    return x != 0 && (x & (x - 1)) == 0;
}

/* One regression tree: splits, then splits+1 leaves of 2P floats. */
static int parse_tree(sp_parse *ps) {
    fvi_dser *d = &ps->d;
    fvi_shape_predictor *sp = ps->sp;
    size_t ns, nl, dim = 2 * ps->nparts;
    if (read_count(d, ((size_t)1 << SP_MAX_DEPTH) - 1, 3, &ns)) return -1;
    if (!is_pow2(ns + 1)) return fvi_dser_fail(d, "tree is not complete");
    if (sp) {
        if (ps->ntrees >= sp->ntrees || ns > sp->nsplits - ps->nsplits ||
            (ns + 1) > (sp->nleaf - ps->nleaf) / dim)
            return fvi_dser_fail(d, "model changed between passes");
        sp->trees[ps->ntrees] = (sp_tree){ps->nsplits, ns, ps->nleaf};
    }
    for (size_t i = 0; i < ns; i++) {
        int64_t a, b;
        float t;
        if (fvi_dser_int_range(d, 0, UINT32_MAX, &a) || fvi_dser_int_range(d, 0, UINT32_MAX, &b) ||
            pass_float(ps, d, &t))
            return -1;
        if (sp) sp->splits[ps->nsplits + i] = (sp_split){(uint32_t)a, (uint32_t)b, t};
    }
    if (read_count(d, ns + 1, 2, &nl)) return -1;
    if (nl != ns + 1) return fvi_dser_fail(d, "leaf count does not match splits");
    for (size_t i = 0; i < nl; i++)
        if (read_column(ps, d, dim, sp ? sp->leaves + ps->nleaf + i * dim : NULL)) return -1;
    ps->ntrees++;
    ps->nsplits += ns;
    ps->nleaf += nl * dim;
    return 0;
}

/* The whole file; see the layout at the top.  Returns 0 or -1 (ps->d
 * holds the reason). */
static int parse_model(sp_parse *ps) {
    fvi_dser *d = &ps->d;
    fvi_shape_predictor *sp = ps->sp;
    int64_t version, rows, cols;
    size_t nc, n;

    if (fvi_dser_int(d, &version)) return -1;
    if (version != 1) return fvi_dser_fail(d, "unsupported shape_predictor version");

    if (fvi_dser_matrix_header(d, &rows, &cols, 2 * SP_MAX_PARTS)) return -1;
    if (cols != 1 || rows < 2 || rows % 2 != 0) return fvi_dser_fail(d, "bad initial shape");
    ps->nparts = (size_t)rows / 2;
    if (sp && ps->nparts != sp->nparts) return fvi_dser_fail(d, "model changed between passes");
    for (int64_t i = 0; i < rows; i++) {
        float v;
        if (pass_float(ps, d, &v)) return -1;
        if (sp) sp->init[i] = v;
    }

    /* forests */
    if (read_count(d, SP_MAX_CASCADES, 1, &nc)) return -1;
    if (sp && nc != sp->ncasc) return fvi_dser_fail(d, "model changed between passes");
    ps->ncasc = nc;
    for (size_t c = 0; c < nc; c++) {
        if (read_count(d, SIZE_MAX, 2, &n)) return -1;
        if (sp) {
            sp->casc[c].tree0 = ps->ntrees;
            sp->casc[c].ntrees = n;
        }
        for (size_t t = 0; t < n; t++)
            if (parse_tree(ps)) return -1;
    }

    /* anchor_idx */
    if (read_count(d, SP_MAX_CASCADES, 1, &n)) return -1;
    if (n != nc) return fvi_dser_fail(d, "anchor list count does not match cascades");
    size_t feat0 = ps->nfeat;
    for (size_t c = 0; c < nc; c++) {
        if (read_count(d, UINT32_MAX, 1, &n)) return -1;
        if (sp) {
            if (n > sp->nfeat - ps->nfeat) return fvi_dser_fail(d, "model changed between passes");
            sp->casc[c].feat0 = ps->nfeat;
            sp->casc[c].nfeat = n;
        }
        for (size_t i = 0; i < n; i++) {
            int64_t a;
            if (fvi_dser_int_range(d, 0, (int64_t)ps->nparts - 1, &a)) return -1;
            if (sp) sp->anchor[ps->nfeat + i] = (uint32_t)a;
        }
        ps->nfeat += n;
        if (n > ps->max_feat) ps->max_feat = n;
    }

    /* deltas: same counts as anchor_idx */
    if (read_count(d, SP_MAX_CASCADES, 1, &n)) return -1;
    if (n != nc) return fvi_dser_fail(d, "delta list count does not match cascades");
    size_t f = feat0;
    for (size_t c = 0; c < nc; c++) {
        size_t expect = sp ? sp->casc[c].nfeat : 0;
        if (read_count(d, UINT32_MAX, 4, &n)) return -1;
        if (sp && n != expect) return fvi_dser_fail(d, "delta count does not match anchors");
        for (size_t i = 0; i < n; i++) {
            float x, y;
            if (pass_float(ps, d, &x) || pass_float(ps, d, &y)) return -1;
            if (sp) {
                sp->deltas[2 * (f + i)] = x;
                sp->deltas[2 * (f + i) + 1] = y;
            }
        }
        f += n;
    }
    if (f != ps->nfeat) return fvi_dser_fail(d, "delta count does not match anchors");
    return 0;
}

/* Checks that every split of cascade c reads features that exist. */
static int check_split_indices(const fvi_shape_predictor *sp) {
    for (size_t c = 0; c < sp->ncasc; c++) {
        const sp_cascade *cs = &sp->casc[c];
        for (size_t t = cs->tree0; t < cs->tree0 + cs->ntrees; t++) {
            const sp_tree *tr = &sp->trees[t];
            for (size_t s = tr->split0; s < tr->split0 + tr->nsplits; s++)
                if (sp->splits[s].idx1 >= cs->nfeat || sp->splits[s].idx2 >= cs->nfeat) return -1;
        }
    }
    return 0;
}

void fvi_shape_predictor_destroy(fvi_shape_predictor *sp) {
    if (!sp) return;
    fvi_free(sp->init);
    fvi_free(sp->casc);
    fvi_free(sp->trees);
    fvi_free(sp->splits);
    fvi_free(sp->leaves);
    fvi_free(sp->anchor);
    fvi_free(sp->deltas);
    fvi_free(sp);
}

/* Allocates n elements of size sz (at least one, so a zero-count array is
 * still a valid pointer); NULL on overflow or failure. */
static void *alloc_array(size_t n, size_t sz) {
    size_t bytes;
    if (fvi_size_mul(n ? n : 1, sz, &bytes)) return NULL;
    return fvi_malloc(bytes);
}

fv_status fvi_shape_predictor_load_mem(const void *data, size_t len, fvi_shape_predictor **out,
                                       char *err, size_t errlen) {
    if (!out || (!data && len))
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "shape predictor: NULL argument");
    *out = NULL;

    sp_parse count = {0};
    fvi_dser_init(&count.d, data, len);
    if (parse_model(&count))
        return fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "shape predictor: %s", count.d.what);

    fvi_shape_predictor *sp = fvi_calloc(1, sizeof *sp);
    if (!sp) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "shape predictor: out of memory");
    sp->nparts = count.nparts;
    sp->ncasc = count.ncasc;
    sp->ntrees = count.ntrees;
    sp->nsplits = count.nsplits;
    sp->nleaf = count.nleaf;
    sp->nfeat = count.nfeat;
    sp->max_feat = count.max_feat;
    sp->init = alloc_array(2 * sp->nparts, sizeof(float));
    sp->casc = alloc_array(sp->ncasc, sizeof(sp_cascade));
    sp->trees = alloc_array(sp->ntrees, sizeof(sp_tree));
    sp->splits = alloc_array(sp->nsplits, sizeof(sp_split));
    sp->leaves = alloc_array(sp->nleaf, sizeof(float));
    sp->anchor = alloc_array(sp->nfeat, sizeof(uint32_t));
    sp->deltas = alloc_array(2 * sp->nfeat, sizeof(float));
    if (!sp->init || !sp->casc || !sp->trees || !sp->splits || !sp->leaves || !sp->anchor ||
        !sp->deltas) {
        fvi_shape_predictor_destroy(sp);
        return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "shape predictor: out of memory");
    }

    sp_parse fill = {0};
    fill.sp = sp;
    fvi_dser_init(&fill.d, data, len);
    /* The second pass also checks what the first could not without
     * storage (per-cascade delta counts), so a failure here is corruption. */
    if (parse_model(&fill)) {
        fv_status s =
            fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "shape predictor: %s", fill.d.what);
        fvi_shape_predictor_destroy(sp);
        return s;
    }
    if (fill.ntrees != sp->ntrees || fill.nsplits != sp->nsplits || fill.nleaf != sp->nleaf ||
        fill.nfeat != sp->nfeat) {
        fvi_shape_predictor_destroy(sp);
        return fvi_seterr(err, errlen, FV_E_INTERNAL, "shape predictor: second pass disagrees");
    }
    if (check_split_indices(sp)) {
        fvi_shape_predictor_destroy(sp);
        return fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT,
                          "shape predictor: split feature index out of range");
    }
    *out = sp;
    return FV_OK;
}

/* fvi_parse_fn over fvi_shape_predictor_load_mem. */
static fv_status parse_sp(const void *data, size_t len, void *out, char *err, size_t errlen) {
    return fvi_shape_predictor_load_mem(data, len, out, err, errlen);
}

fv_status fvi_shape_predictor_load(const char *path, fvi_shape_predictor **out, char *err,
                                   size_t errlen) {
    if (!path || !out)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "shape predictor: NULL argument");
    *out = NULL;
    return fvi_load_model_file(path, SP_MAX_FILE, "shape predictor", parse_sp, out, err, errlen);
}

size_t fvi_shape_predictor_num_parts(const fvi_shape_predictor *sp) {
    return sp ? sp->nparts : 0;
}

/* dlib's get_pixel_intensity for an rgb_pixel: the integer mean. */
static inline float intensity(const unsigned char *p) {
    return (float)(((unsigned)p[0] + p[1] + p[2]) / 3u);
}

fv_status fvi_shape_predict(const fvi_shape_predictor *sp, const fv_image *img, const fv_face *box,
                            fv_point *out) {
    if (!sp || !img || !img->rgb || img->width <= 0 || img->height <= 0 || !box || !out)
        return FV_E_INVALID_ARGUMENT;
    const float bc[4] = {box->left, box->top, box->right, box->bottom};
    for (int i = 0; i < 4; i++)
        if (!isfinite(bc[i]) || fabsf(bc[i]) > SP_MAX_BOX_COORD) return FV_E_INVALID_ARGUMENT;

    /* dlib rectangle (inclusive), rounded as drectangle -> rectangle. */
    const double l = floor((double)box->left + 0.5), t = floor((double)box->top + 0.5);
    const double r = floor((double)box->right - 1.0 + 0.5),
                 b = floor((double)box->bottom - 1.0 + 0.5);
    /* unnormalizing_tform: (0,0) -> (l,t), (1,1) -> (r,b). */
    const double sx = r - l, sy = b - t;

    const size_t dim = 2 * sp->nparts;
    size_t nscratch;
    if (fvi_size_add(dim, sp->max_feat, &nscratch)) return FV_E_NO_MEMORY;
    float *scratch = alloc_array(nscratch, sizeof(float));
    if (!scratch) return FV_E_NO_MEMORY;
    float *cur = scratch, *feat = scratch + dim;
    memcpy(cur, sp->init, dim * sizeof(float));

    const double W = img->width, H = img->height;
    const size_t stride = (size_t)img->width * 3;
    for (size_t c = 0; c < sp->ncasc; c++) {
        const sp_cascade *cs = &sp->casc[c];
        /* Only the 2x2 part of the initial->current similarity, in float. */
        double m[4], tb[2];
        fvi_align_similarity_f(sp->init, cur, sp->nparts, m, tb);
        const float m00 = (float)m[0], m01 = (float)m[1], m10 = (float)m[2], m11 = (float)m[3];
        for (size_t i = 0; i < cs->nfeat; i++) {
            const float *dl = &sp->deltas[2 * (cs->feat0 + i)];
            const uint32_t a = sp->anchor[cs->feat0 + i];
            float fx = m00 * dl[0];
            fx += m01 * dl[1];
            float fy = m10 * dl[0];
            fy += m11 * dl[1];
            fx = fx + cur[2 * a];
            fy = fy + cur[2 * a + 1];
            /* dlib: point p = tform_to_img(...) rounds with floor(v + 0.5);
             * p is inside iff 0 <= p < size, tested before any cast. */
            const double px = sx * (double)fx + l + 0.5, py = sy * (double)fy + t + 0.5;
            if (px >= 0 && px < W && py >= 0 && py < H) {
                const size_t xi = (size_t)floor(px), yi = (size_t)floor(py);
                feat[i] = intensity(img->rgb + yi * stride + xi * 3);
            } else {
                feat[i] = 0;
            }
        }
        for (size_t k = cs->tree0; k < cs->tree0 + cs->ntrees; k++) {
            const sp_tree *tr = &sp->trees[k];
            const sp_split *sl = sp->splits + tr->split0;
            size_t n = 0;
            while (n < tr->nsplits) {
                const sp_split *s = &sl[n];
                n = (feat[s->idx1] - feat[s->idx2] > s->thresh) ? 2 * n + 1 : 2 * n + 2;
            }
            const float *leaf = sp->leaves + tr->leaf0 + (n - tr->nsplits) * dim;
            for (size_t j = 0; j < dim; j++) cur[j] += leaf[j];
        }
    }
    fv_status st = FV_OK;
    for (size_t i = 0; i < sp->nparts; i++) {
        const double x = floor(sx * (double)cur[2 * i] + l + 0.5);
        const double y = floor(sy * (double)cur[2 * i + 1] + t + 0.5);
        if (!isfinite(x) || !isfinite(y)) st = FV_E_INTERNAL;
        out[i].x = (float)x;
        out[i].y = (float)y;
    }
    fvi_free(scratch);
    return st;
}
