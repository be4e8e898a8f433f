/*
 * haar.c: Viola-Jones detection with OpenCV Haar cascades (see haar.h).
 *
 * Loading: the XML is parsed with libxml2 (no network, no entity
 * expansion, no messages printed) and every count, index and rectangle is
 * checked before it is used, so a hostile file gives FV_E_MODEL_CORRUPT.
 * The cascade is flattened into arrays: stages -> trees -> nodes/leaves,
 * and features of 2 or 3 weighted rectangles inside the window.
 *
 * Detection follows OpenCV 4.x cascadedetect.cpp so that the boxes agree:
 *  - scales: factor = scale_factor^k from 1 while the rounded window fits
 *    in the image and max size; windows under min size are skipped;
 *  - per scale the grey image is resized to round(size / factor) with
 *    OpenCV's bit-exact bilinear filter (INTER_LINEAR_EXACT), and its integral and squared
 *    integral (32-bit, wrapping like OpenCV's CV_32S) are built;
 *  - windows at step 2 (1 once factor >= 2); one that fails the first stage
 *    skips the next position; a window's features are normalised by
 *    1/sqrt(area*sqsum - sum^2) over the window less a 1-pixel border, and
 *    flat windows (area/that >= 0.1) are rejected outright;
 *  - a hit at (x, y) is the box round(x*f), round(y*f), round(W*f) in
 *    single precision;
 *  - grouping as cv::groupRectangles with eps 0.2, then boxes are clipped
 *    to the image.
 * Rows of a scale are split over the engine's pool; each worker keeps its
 * own hit list, and grouping does not depend on hit order, so results do
 * not depend on the thread count.
 */
#include "detect/haar.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "core/fvi.h"

/* Limits on a cascade: generous for every file OpenCV ships, small enough
 * that a crafted file cannot ask for unbounded memory or time. */
#define MAX_WINDOW 512
#define MAX_STAGES 1000
#define MAX_TREES 1000000
#define MAX_NODES_PER_TREE 1024
#define MAX_FEATURES 1000000
#define MAX_RECTS 3
/* Raw hits kept before grouping; past this the image is refused. */
#define MAX_HITS 2000000

/* Haar box -> dlib MMOD box (see fvi_haar_box_to_dlib), relative to the
 * Haar box side s: centre shifted by (a*s, b*s), width c*s, height d*s.
 * Medians over the 377 of the first 400 distinct LFW pairsDevTrain.txt
 * images where MMOD found exactly one face and a Haar box overlapped it
 * (IoU >= 0.3); mean IoU with the MMOD box 0.702 raw -> 0.784 mapped (MMOD's
 * own boxes come in coarse steps, which bounds this).  Fitted by:
 *   scripts/fit_haar_mapping.py --build build --n 400
 * (default cascade, scale 1.1, min neighbours 3). */
static const double HAAR_TO_DLIB[4] = {-0.0364, 0.0000, 0.8421, 0.8407};

typedef struct hnode {
    int32_t feature;
    float threshold;
    int32_t left, right; /* > 0: node index in the tree; <= 0: leaf -value */
} hnode;

typedef struct htree {
    int32_t node_ofs, leaf_ofs, nnodes;
} htree;

typedef struct hstage {
    float threshold;
    int32_t first, ntrees;
} hstage;

typedef struct hfeature {
    int32_t nrects;
    int32_t r[MAX_RECTS][4]; /* x, y, w, h */
    float w[MAX_RECTS];
} hfeature;

struct fvi_haar {
    int win_w, win_h;
    int nstages, ntrees, nnodes, nleaves, nfeatures;
    hstage *stages;
    htree *trees;
    hnode *nodes;
    float *leaves;
    hfeature *features;
};

void fvi_haar_destroy(fvi_haar *h) {
    if (!h) return;
    fvi_free(h->stages);
    fvi_free(h->trees);
    fvi_free(h->nodes);
    fvi_free(h->leaves);
    fvi_free(h->features);
    fvi_free(h);
}

void fvi_haar_window(const fvi_haar *h, int *w, int *hgt) {
    if (w) *w = h ? h->win_w : 0;
    if (hgt) *hgt = h ? h->win_h : 0;
}

/* ------------------------------------------------------------ XML reading */

/* First element child of n named name, or NULL. */
static xmlNode *child(const xmlNode *n, const char *name) {
    if (!n) return NULL;
    for (xmlNode *c = n->children; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, name) == 0) return c;
    return NULL;
}

/* Number of element children of n (a sequence's items), capped at cap+1 so
 * that a huge sequence is reported as too long without counting it all. */
static long count_elements(const xmlNode *n, long cap) {
    long k = 0;
    if (!n) return 0;
    for (xmlNode *c = n->children; c && k <= cap; c = c->next)
        if (c->type == XML_ELEMENT_NODE) k++;
    return k;
}

static xmlNode *next_element(xmlNode *c) {
    while (c && c->type != XML_ELEMENT_NODE) c = c->next;
    return c;
}

/* Text and CDATA children carry an element's text; entity references are
 * never expanded (no entity can blow up), and nothing is allocated. */
static int is_text(const xmlNode *c) {
    return (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content;
}

/* Parses up to max finite numbers from the text of n into v; *count gets
 * how many there were (max+1 when there were more).  -1 when the text holds
 * something that is not a number.  Each text child is parsed on its own. */
static int numbers(const xmlNode *n, double *v, int max, int *count) {
    *count = 0;
    if (!n) return -1;
    int k = 0;
    for (const xmlNode *c = n->children; c; c = c->next) {
        if (c->type == XML_ELEMENT_NODE || c->type == XML_ENTITY_REF_NODE) return -1;
        if (!is_text(c)) continue;
        const char *s = (const char *)c->content;
        for (;;) {
            while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
            if (!*s) break;
            char *end = NULL;
            errno = 0;
            double d = strtod(s, &end);
            if (end == s || errno == ERANGE || !isfinite(d)) return -1;
            if (k >= max) {
                *count = max + 1;
                return 0;
            }
            v[k++] = d;
            s = end;
        }
    }
    *count = k;
    return 0;
}

/* One number from the text of n; -1 when absent or not exactly one. */
static int number(const xmlNode *n, double *v) {
    int k;
    if (numbers(n, v, 1, &k) != 0 || k != 1) return -1;
    return 0;
}

/* One integer in [lo, hi]. */
static int integer(const xmlNode *n, long lo, long hi, long *v) {
    double d;
    if (number(n, &d) != 0 || d != floor(d) || d < (double)lo || d > (double)hi) return -1;
    *v = (long)d;
    return 0;
}

/* Compares the trimmed text of n with s (a short keyword). */
static int text_is(const xmlNode *n, const char *s) {
    if (!n) return 0;
    char buf[64];
    size_t len = 0;
    for (const xmlNode *c = n->children; c; c = c->next) {
        if (c->type == XML_ELEMENT_NODE || c->type == XML_ENTITY_REF_NODE) return 0;
        if (!is_text(c)) continue;
        for (const char *t = (const char *)c->content; *t; t++) {
            if (*t == ' ' || *t == '\n' || *t == '\t' || *t == '\r') continue;
            if (len + 1 >= sizeof buf) return 0;
            buf[len++] = *t;
        }
    }
    buf[len] = 0;
    return strcmp(buf, s) == 0;
}

#define CORRUPT(...) fvi_seterr(err, errlen, FV_E_MODEL_CORRUPT, "haar cascade: " __VA_ARGS__)

/* Reads <stages>: fills stages, trees, nodes, leaves (allocated here). */
static fv_status read_stages(fvi_haar *h, xmlNode *stages_node, char *err, size_t errlen) {
    long nst = count_elements(stages_node, MAX_STAGES);
    if (nst < 1 || nst > MAX_STAGES) return CORRUPT("%ld stages (1..%d allowed)", nst, MAX_STAGES);
    /* first pass: count trees, nodes and leaves to size the arrays */
    long ntrees = 0, nnodes = 0, nleaves = 0;
    double buf[4 * MAX_NODES_PER_TREE + 2];
    int k;
    for (xmlNode *s = next_element(stages_node->children); s; s = next_element(s->next)) {
        xmlNode *weak = child(s, "weakClassifiers");
        long nw = count_elements(weak, MAX_TREES);
        if (nw < 1 || ntrees + nw > MAX_TREES) return CORRUPT("bad weak classifier count");
        ntrees += nw;
        for (xmlNode *t = next_element(weak->children); t; t = next_element(t->next)) {
            if (numbers(child(t, "internalNodes"), buf, 4 * MAX_NODES_PER_TREE, &k) != 0 || k < 4 ||
                k % 4 != 0 || k > 4 * MAX_NODES_PER_TREE)
                return CORRUPT("bad internalNodes in stage tree");
            nnodes += k / 4;
            int nl;
            if (numbers(child(t, "leafValues"), buf, MAX_NODES_PER_TREE + 1, &nl) != 0 ||
                nl != k / 4 + 1)
                return CORRUPT("leafValues must hold one more value than the tree has nodes");
            nleaves += nl;
        }
    }
    h->stages = fvi_calloc((size_t)nst, sizeof *h->stages);
    h->trees = fvi_calloc((size_t)ntrees, sizeof *h->trees);
    h->nodes = fvi_calloc((size_t)nnodes, sizeof *h->nodes);
    h->leaves = fvi_calloc((size_t)nleaves, sizeof *h->leaves);
    if (!h->stages || !h->trees || !h->nodes || !h->leaves)
        return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
    h->nstages = (int)nst;
    h->ntrees = (int)ntrees;
    h->nnodes = (int)nnodes;
    h->nleaves = (int)nleaves;
    /* second pass: fill */
    int si = 0, ti = 0, ni = 0, li = 0;
    for (xmlNode *s = next_element(stages_node->children); s; s = next_element(s->next), si++) {
        double thr;
        if (number(child(s, "stageThreshold"), &thr) != 0 || fabs(thr) > 1e30)
            return CORRUPT("stage %d: bad stageThreshold", si);
        hstage *st = &h->stages[si];
        /* OpenCV lowers every stage threshold by 1e-5 (in float) on load */
        st->threshold = (float)thr - 1e-5f;
        st->first = ti;
        xmlNode *weak = child(s, "weakClassifiers");
        for (xmlNode *t = next_element(weak->children); t; t = next_element(t->next), ti++) {
            numbers(child(t, "internalNodes"), buf, 4 * MAX_NODES_PER_TREE, &k);
            int nn = k / 4;
            htree *tr = &h->trees[ti];
            tr->node_ofs = ni;
            tr->leaf_ofs = li;
            tr->nnodes = nn;
            for (int j = 0; j < nn; j++) {
                double l = buf[4 * j], r = buf[4 * j + 1], f = buf[4 * j + 2], th = buf[4 * j + 3];
                /* children must come after their parent (no cycles) and
                 * leaves must exist */
                const double kids[2] = {l, r};
                for (int c = 0; c < 2; c++) {
                    double v = kids[c];
                    if (v != floor(v) || (v > 0 && (v <= j || v >= nn)) || (v <= 0 && -v > nn))
                        return CORRUPT("stage %d: tree node %d has a bad child index", si, j);
                }
                if (f != floor(f) || f < 0 || f > MAX_FEATURES || fabs(th) > 1e30)
                    return CORRUPT("stage %d: tree node %d is malformed", si, j);
                hnode *nd = &h->nodes[ni++];
                nd->left = (int32_t)l;
                nd->right = (int32_t)r;
                nd->feature = (int32_t)f;
                nd->threshold = (float)th;
            }
            int nl;
            numbers(child(t, "leafValues"), buf, MAX_NODES_PER_TREE + 1, &nl);
            for (int j = 0; j < nl; j++) {
                if (fabs(buf[j]) > 1e30) return CORRUPT("stage %d: leaf value out of range", si);
                h->leaves[li++] = (float)buf[j];
            }
        }
        st->ntrees = ti - st->first;
    }
    return FV_OK;
}

/* Reads <features>; every rectangle must lie inside the window. */
static fv_status read_features(fvi_haar *h, xmlNode *feats, char *err, size_t errlen) {
    long nf = count_elements(feats, MAX_FEATURES);
    if (nf < 1 || nf > MAX_FEATURES) return CORRUPT("%ld features", nf);
    h->features = fvi_calloc((size_t)nf, sizeof *h->features);
    if (!h->features) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
    h->nfeatures = (int)nf;
    int fi = 0;
    for (xmlNode *f = next_element(feats->children); f; f = next_element(f->next), fi++) {
        hfeature *hf = &h->features[fi];
        xmlNode *tl = child(f, "tilted");
        if (tl) {
            long tv;
            if (integer(tl, 0, 1, &tv) != 0) return CORRUPT("feature %d: bad tilted flag", fi);
            if (tv)
                return fvi_seterr(err, errlen, FV_E_UNSUPPORTED,
                                  "haar cascade: tilted features are not supported");
        }
        xmlNode *rects = child(f, "rects");
        long nr = count_elements(rects, MAX_RECTS);
        if (nr < 1 || nr > MAX_RECTS) return CORRUPT("feature %d: %ld rects (1..3)", fi, nr);
        hf->nrects = (int32_t)nr;
        int ri = 0;
        for (xmlNode *r = next_element(rects->children); r; r = next_element(r->next), ri++) {
            double v[5];
            int k;
            if (numbers(r, v, 5, &k) != 0 || k != 5) return CORRUPT("feature %d: bad rect", fi);
            for (int j = 0; j < 4; j++)
                if (v[j] != floor(v[j])) return CORRUPT("feature %d: rect not integral", fi);
            if (v[0] < 0 || v[1] < 0 || v[2] < 1 || v[3] < 1 || v[0] + v[2] > h->win_w ||
                v[1] + v[3] > h->win_h)
                return CORRUPT("feature %d: rect outside the %dx%d window", fi, h->win_w, h->win_h);
            if (fabs(v[4]) > 1e6) return CORRUPT("feature %d: weight out of range", fi);
            for (int j = 0; j < 4; j++) hf->r[ri][j] = (int32_t)v[j];
            hf->w[ri] = (float)v[4];
        }
    }
    /* every node must name an existing feature */
    for (int i = 0; i < h->nnodes; i++)
        if (h->nodes[i].feature >= h->nfeatures)
            return CORRUPT("node %d names feature %d of %d", i, (int)h->nodes[i].feature,
                           h->nfeatures);
    return FV_OK;
}

fv_status fvi_haar_parse(const void *xml, size_t len, fvi_haar **out, char *err, size_t errlen) {
    if (!out) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!xml || len == 0 || len > FVI_HAAR_MAX_FILE_BYTES || len > (size_t)INT32_MAX)
        return CORRUPT("empty or oversized file");
    /* No network, no entity substitution, no DTD loading, nothing printed. */
    xmlDoc *doc = xmlReadMemory(xml, (int)len, "cascade.xml", NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!doc) return CORRUPT("not well-formed XML");
    fv_status st = FV_OK;
    fvi_haar *h = fvi_calloc(1, sizeof *h);
    if (!h) {
        xmlFreeDoc(doc);
        return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
    }
    xmlNode *root = xmlDocGetRootElement(doc);
    xmlNode *c = root ? next_element(root->children) : NULL; /* OpenCV: first top-level node */
    long wv = 0, hv = 0;
    if (doc->intSubset || doc->extSubset) {
        st = CORRUPT("a DTD is not allowed in a cascade");
    } else if (!root || strcmp((const char *)root->name, "opencv_storage") != 0 || !c) {
        st = CORRUPT("no <opencv_storage> with a cascade in it");
    } else if (!child(c, "stageType")) {
        st = child(c, "stages") && !child(c, "features")
                 ? fvi_seterr(err, errlen, FV_E_UNSUPPORTED,
                              "haar cascade: old-format cascades are not supported")
                 : CORRUPT("no <stageType>");
    } else if (!text_is(child(c, "stageType"), "BOOST")) {
        st = CORRUPT("stageType is not BOOST");
    } else if (!child(c, "featureType")) {
        st = CORRUPT("no <featureType>");
    } else if (!text_is(child(c, "featureType"), "HAAR")) {
        st = fvi_seterr(err, errlen, FV_E_UNSUPPORTED,
                        "haar cascade: only HAAR features are supported");
    } else if (integer(child(c, "width"), 2, MAX_WINDOW, &wv) != 0 ||
               integer(child(c, "height"), 2, MAX_WINDOW, &hv) != 0 || wv < 3 || hv < 3) {
        st = CORRUPT("bad window size");
    } else {
        long cat = 0;
        xmlNode *fp = child(c, "featureParams");
        if (fp && child(fp, "maxCatCount") && integer(child(fp, "maxCatCount"), 0, 0, &cat) != 0)
            st = CORRUPT("maxCatCount must be 0 for HAAR");
        else if (!child(c, "stages") || !child(c, "features"))
            st = CORRUPT("no <stages> or <features>");
    }
    if (st == FV_OK) {
        h->win_w = (int)wv;
        h->win_h = (int)hv;
        st = read_stages(h, child(c, "stages"), err, errlen);
    }
    if (st == FV_OK) st = read_features(h, child(c, "features"), err, errlen);
    xmlFreeDoc(doc);
    if (st != FV_OK) {
        fvi_haar_destroy(h);
        return st;
    }
    *out = h;
    return FV_OK;
}

/* fvi_parse_fn over fvi_haar_parse. */
static fv_status parse_haar(const void *data, size_t len, void *out, char *err, size_t errlen) {
    return fvi_haar_parse(data, len, out, err, errlen);
}

fv_status fvi_haar_load(const char *path, fvi_haar **out, char *err, size_t errlen) {
    if (!path || !out) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    *out = NULL;
    return fvi_load_model_file(path, FVI_HAAR_MAX_FILE_BYTES, "Haar cascade", parse_haar, out, err,
                               errlen);
}

/* ------------------------------------------------------------ image prep */

void fvi_haar_gray(const fv_image *img, unsigned char *gray) {
    size_t n = (size_t)img->width * (size_t)img->height;
    const unsigned char *p = img->rgb;
    for (size_t i = 0; i < n; i++, p += 3)
        gray[i] = (unsigned char)((p[0] * 9798u + p[1] * 19235u + p[2] * 3735u + 16384u) >> 15);
}

/* cvRound for float: round half to even, as the SSE conversion does. */
static int round_f(float v) {
    return (int)lrintf(v);
}

/* Bilinear taps of OpenCV's bit-exact linear resize along one axis: for
 * destination i, source index ofs[i] and weight c1[i] of ofs[i]+1 in 1/256
 * units; destinations before *lo take the first source pixel, those from
 * *hi on the last. */
static void exact_taps(int src, int dst, int *ofs, int *c1, int *lo, int *hi) {
    double scale = 1.0 / ((double)dst / src);
    *lo = 0;
    *hi = dst;
    for (int i = 0; i < dst; i++) {
        double f = scale * ((double)i + 0.5) - 0.5;
        int iv = (int)floor(f);
        ofs[i] = 0;
        c1[i] = 0;
        if (iv >= 0 && src > 1) {
            if (iv < src - 1) {
                ofs[i] = iv;
                c1[i] = (int)lrint((f - iv) * 256.0);
            } else {
                ofs[i] = src - 1;
                if (i < *hi) *hi = i;
            }
        } else if (i + 1 > *lo) {
            *lo = i + 1;
        }
    }
}

/* One source row filtered horizontally into 8.8 fixed point. */
static void exact_hline(const unsigned char *row, int dw, const int *ofs, const int *c1, int lo,
                        int hi, uint32_t *out) {
    int i = 0;
    for (; i < lo && i < dw; i++) out[i] = (uint32_t)row[0] << 8;
    for (; i < hi; i++)
        out[i] = (uint32_t)row[ofs[i]] * (uint32_t)(256 - c1[i]) +
                 (uint32_t)row[ofs[i] + 1] * (uint32_t)c1[i];
    for (; i < dw; i++) out[i] = (uint32_t)row[ofs[dw - 1]] << 8;
}

void fvi_haar_resize(const unsigned char *src, int sw, int sh, unsigned char *dst, int dw, int dh) {
    if (sw == dw && sh == dh) {
        memcpy(dst, src, (size_t)sw * (size_t)sh);
        return;
    }
    double scale_x = 1.0 / ((double)dw / sw), scale_y = 1.0 / ((double)dh / sh);
    if (lrint(scale_x) == 2 && lrint(scale_y) == 2 && fabs(scale_x - 2) < 2.220446049250313e-16 &&
        fabs(scale_y - 2) < 2.220446049250313e-16) {
        /* OpenCV switches exact 2x shrinking to its area filter */
        for (int y = 0; y < dh; y++)
            for (int x = 0; x < dw; x++) {
                const unsigned char *s = src + (size_t)(2 * y) * sw + 2 * x;
                dst[(size_t)y * dw + x] =
                    (unsigned char)((s[0] + s[1] + s[sw] + s[sw + 1] + 2) >> 2);
            }
        return;
    }
    int *xo = fvi_malloc((size_t)dw * sizeof *xo), *xc = fvi_malloc((size_t)dw * sizeof *xc);
    int *yo = fvi_malloc((size_t)dh * sizeof *yo), *yc = fvi_malloc((size_t)dh * sizeof *yc);
    uint32_t *h0 = fvi_malloc((size_t)dw * sizeof *h0), *h1 = fvi_malloc((size_t)dw * sizeof *h1);
    if (!xo || !xc || !yo || !yc || !h0 || !h1) {
        /* only reachable under allocation-failure injection: nearest pixel */
        for (int y = 0; y < dh; y++)
            for (int x = 0; x < dw; x++)
                dst[(size_t)y * dw + x] = src[(size_t)y * sh / dh * sw + (size_t)x * sw / dw];
        goto done;
    }
    int xlo, xhi, ylo, yhi;
    exact_taps(sw, dw, xo, xc, &xlo, &xhi);
    exact_taps(sh, dh, yo, yc, &ylo, &yhi);
    for (int y = 0; y < dh; y++) {
        unsigned char *d = dst + (size_t)y * dw;
        if (y < ylo || y >= yhi) {
            exact_hline(src + (size_t)(y < ylo ? 0 : sh - 1) * sw, dw, xo, xc, xlo, xhi, h0);
            for (int x = 0; x < dw; x++) d[x] = (unsigned char)((h0[x] + 128) >> 8);
            continue;
        }
        exact_hline(src + (size_t)yo[y] * sw, dw, xo, xc, xlo, xhi, h0);
        exact_hline(src + (size_t)(yo[y] + 1) * sw, dw, xo, xc, xlo, xhi, h1);
        uint32_t b0 = (uint32_t)(256 - yc[y]), b1 = (uint32_t)yc[y];
        for (int x = 0; x < dw; x++) {
            uint32_t v = (h0[x] * b0 + h1[x] * b1 + 32768u) >> 16;
            d[x] = (unsigned char)(v > 255 ? 255 : v);
        }
    }
done:
    fvi_free(xo);
    fvi_free(xc);
    fvi_free(yo);
    fvi_free(yc);
    fvi_free(h0);
    fvi_free(h1);
}

/* ------------------------------------------------------------ scanning */

typedef struct hit_list {
    fvi_haar_rect *v;
    size_t n, cap;
    int full; /* allocation failed or the cap was reached */
} hit_list;

/* A tree node with its feature laid out for one integral stride: the 12
 * corner offsets from the window origin and the 3 weights, so evaluating a
 * node touches one place in memory. */
typedef struct onode {
    int32_t o[12];
    float w[3];
    float threshold;
    int32_t left, right;
} onode;

typedef struct scan_ctx {
    const fvi_haar *h;
    const onode *nodes;
    const uint32_t *sum, *sq; /* integrals of the current scale, row stride `stride` */
    size_t stride;
    size_t nofs[4]; /* corners of the normalisation rectangle */
    double area;
    int ystep, xcount; /* positions x in [0, xcount) */
    float scale;
    int out_w, out_h;
    hit_list *lists; /* one per worker */
    size_t cap_per_list;
} scan_ctx;

static inline int32_t rect_sum(const uint32_t *p, const int32_t *o) {
    /* 32-bit wrapping like OpenCV's CV_32S integrals: the difference is exact */
    return (int32_t)(p[o[0]] - p[o[1]] - p[o[2]] + p[o[3]]);
}

/* Runs the cascade on the window whose integral origin is p (and q for the
 * squares).  Returns 1 for a face, -1 for a flat window, and -k (0 for
 * k = 0) when stage k rejects it, as OpenCV's runAt does. */
static int run_at(const scan_ctx *c, size_t at) {
    const uint32_t *p = c->sum + at, *q = c->sq + at;
    int32_t valsum = (int32_t)(p[c->nofs[0]] - p[c->nofs[1]] - p[c->nofs[2]] + p[c->nofs[3]]);
    uint32_t valsq = q[c->nofs[0]] - q[c->nofs[1]] - q[c->nofs[2]] + q[c->nofs[3]];
    double nf = c->area * valsq - (double)valsum * valsum;
    if (!(nf > 0.)) return -1;
    float vnf = (float)(1. / sqrt(nf));
    if (!(c->area * vnf < 1e-1)) return -1;
    const fvi_haar *h = c->h;
    for (int si = 0; si < h->nstages; si++) {
        const hstage *st = &h->stages[si];
        double acc = 0;
        for (int t = st->first; t < st->first + st->ntrees; t++) {
            const htree *tr = &h->trees[t];
            int idx = 0;
            do {
                const onode *nd = &c->nodes[tr->node_ofs + idx];
                float v =
                    nd->w[0] * (float)rect_sum(p, nd->o) + nd->w[1] * (float)rect_sum(p, nd->o + 4);
                if (nd->w[2] != 0.0f) v += nd->w[2] * (float)rect_sum(p, nd->o + 8);
                v *= vnf;
                idx = v < nd->threshold ? nd->left : nd->right;
            } while (idx > 0);
            acc += h->leaves[tr->leaf_ofs - idx];
        }
        if (acc < st->threshold) return -si;
    }
    return 1;
}

static void push_hit(hit_list *l, size_t cap, fvi_haar_rect r) {
    if (l->full) return;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 256;
        if (nc > cap) nc = cap;
        if (l->n >= nc) {
            l->full = 1;
            return;
        }
        fvi_haar_rect *v = fvi_realloc(l->v, nc * sizeof *v);
        if (!v) {
            l->full = 1;
            return;
        }
        l->v = v;
        l->cap = nc;
    }
    l->v[l->n++] = r;
}

/* Pool task: scans rows [begin, end) (in units of ystep) of one scale. */
static void scan_rows(void *ctx, int begin, int end, int worker) {
    const scan_ctx *c = ctx;
    hit_list *l = &c->lists[worker];
    for (int r = begin; r < end; r++) {
        int y = r * c->ystep;
        for (int x = 0; x < c->xcount; x += c->ystep) {
            int res = run_at(c, (size_t)y * c->stride + (size_t)x);
            if (res > 0) {
                fvi_haar_rect hr = {round_f((float)x * c->scale), round_f((float)y * c->scale),
                                    c->out_w, c->out_h, 1};
                push_hit(l, c->cap_per_list, hr);
            }
            if (res == 0) x += c->ystep; /* failed the first stage: skip a position */
        }
    }
}

/* Integral and squared integral of a w x hgt image into rows of `stride`
 * (stride >= w+1), with a zero first row and column. */
static void integrals(const unsigned char *img, int w, int hgt, size_t stride, uint32_t *sum,
                      uint32_t *sq) {
    memset(sum, 0, (size_t)(w + 1) * sizeof *sum);
    memset(sq, 0, (size_t)(w + 1) * sizeof *sq);
    for (int y = 0; y < hgt; y++) {
        const unsigned char *s = img + (size_t)y * w;
        uint32_t *d = sum + (size_t)(y + 1) * stride, *dq = sq + (size_t)(y + 1) * stride;
        const uint32_t *u = d - stride, *uq = dq - stride;
        uint32_t rs = 0, rq = 0;
        d[0] = dq[0] = 0;
        for (int x = 0; x < w; x++) {
            rs += s[x];
            rq += (uint32_t)s[x] * s[x];
            d[x + 1] = u[x + 1] + rs;
            dq[x + 1] = uq[x + 1] + rq;
        }
    }
}

/* --- grouping, as cv::groupRectangles --- */

static int uf_find(int *parent, int i) {
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

static int similar(const fvi_haar_rect *a, const fvi_haar_rect *b, double eps) {
    double delta = eps * ((a->w < b->w ? a->w : b->w) + (a->h < b->h ? a->h : b->h)) * 0.5;
    return abs(a->x - b->x) <= delta && abs(a->y - b->y) <= delta &&
           abs(a->x + a->w - b->x - b->w) <= delta && abs(a->y + a->h - b->y - b->h) <= delta;
}

typedef struct xkey {
    int x, i;
} xkey;

static int cmp_xkey(const void *a, const void *b) {
    const xkey *p = a, *q = b;
    if (p->x != q->x) return (p->x > q->x) - (p->x < q->x);
    return (p->i > q->i) - (p->i < q->i);
}

static int clamp_round(double v) {
    if (v >= 2147483647.0) return INT32_MAX;
    if (v <= -2147483648.0) return INT32_MIN;
    return (int)lrint(v);
}

/* Groups r[0..n) in place into *m rectangles (neighbours set); returns
 * FV_E_NO_MEMORY on allocation failure.  Equivalence classes are the
 * connected components of `similar`, so hit order does not matter. */
static fv_status group(fvi_haar_rect *r, size_t n, int thr, double eps, size_t *m) {
    *m = n;
    if (thr <= 0 || n == 0) return FV_OK;
    int *parent = fvi_malloc(n * sizeof *parent);
    xkey *order = fvi_malloc(n * sizeof *order);
    int *label = fvi_malloc(n * sizeof *label);
    int64_t *acc = NULL;
    fv_status st = FV_OK;
    if (!parent || !order || !label) {
        st = FV_E_NO_MEMORY;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        parent[i] = (int)i;
        order[i].x = r[i].x;
        order[i].i = (int)i;
    }
    /* hits are sorted by x; a pair can only be similar when their x differ
     * by at most eps*(w+h)/2 of the left one, which bounds the inner loop. */
    qsort(order, n, sizeof *order, cmp_xkey);
    for (size_t a = 0; a < n; a++) {
        const fvi_haar_rect *ra = &r[order[a].i];
        double bound = eps * (ra->w + ra->h) * 0.5;
        for (size_t b = a + 1; b < n && order[b].x - ra->x <= bound; b++) {
            if (!similar(ra, &r[order[b].i], eps)) continue;
            int pa = uf_find(parent, order[a].i), pb = uf_find(parent, order[b].i);
            if (pa != pb) parent[pa > pb ? pa : pb] = pa < pb ? pa : pb;
        }
    }
    size_t nc = 0;
    for (size_t i = 0; i < n; i++) label[i] = -1;
    for (size_t i = 0; i < n; i++) {
        int root = uf_find(parent, (int)i);
        if (label[root] < 0) label[root] = (int)nc++;
        label[i] = label[root];
    }
    acc = fvi_calloc(nc * 5, sizeof *acc);
    if (!acc) {
        st = FV_E_NO_MEMORY;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t *a = acc + (size_t)label[i] * 5;
        a[0] += r[i].x, a[1] += r[i].y, a[2] += r[i].w, a[3] += r[i].h, a[4]++;
    }
    fvi_haar_rect *cls = fvi_malloc(nc * sizeof *cls);
    if (!cls) {
        st = FV_E_NO_MEMORY;
        goto done;
    }
    for (size_t i = 0; i < nc; i++) {
        const int64_t *a = acc + i * 5;
        float s = 1.f / (float)a[4];
        cls[i].x = clamp_round((float)a[0] * s);
        cls[i].y = clamp_round((float)a[1] * s);
        cls[i].w = clamp_round((float)a[2] * s);
        cls[i].h = clamp_round((float)a[3] * s);
        cls[i].neighbors = (int)a[4];
    }
    size_t k = 0;
    for (size_t i = 0; i < nc; i++) {
        const fvi_haar_rect *r1 = &cls[i];
        int n1 = r1->neighbors;
        if (n1 <= thr) continue;
        size_t j;
        /* drop small boxes inside a box backed by more hits */
        for (j = 0; j < nc; j++) {
            const fvi_haar_rect *r2 = &cls[j];
            int n2 = r2->neighbors;
            if (j == i || n2 <= thr) continue;
            int dx = clamp_round(r2->w * eps), dy = clamp_round(r2->h * eps);
            if (r1->x >= r2->x - dx && r1->y >= r2->y - dy && r1->x + r1->w <= r2->x + r2->w + dx &&
                r1->y + r1->h <= r2->y + r2->h + dy && (n2 > (n1 > 3 ? n1 : 3) || n1 < 3))
                break;
        }
        if (j == nc) r[k++] = *r1;
    }
    *m = k;
    fvi_free(cls);
done:
    fvi_free(parent);
    fvi_free(order);
    fvi_free(label);
    fvi_free(acc);
    return st;
}

fv_status fvi_haar_detect_gray(const fvi_haar *h, const unsigned char *gray, int w, int hgt,
                               const fvi_haar_params *p, fvi_workers *pool, fvi_haar_rect **out,
                               size_t *n, char *err, size_t errlen) {
    if (!out || !n) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    *out = NULL;
    *n = 0;
    if (!h || !gray || !p || w <= 0 || hgt <= 0)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument or empty image");
    if (!(p->scale_factor >= 1.01 && p->scale_factor <= 10.0))
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "haar scale factor must be 1.01..10");
    if (p->min_neighbors < 0 || p->min_neighbors > 1000 || p->min_size < 0 || p->max_size < 0)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT,
                          "haar min neighbours must be 0..1000 and sizes >= 0");
    if ((uint64_t)w * (uint64_t)hgt > ((uint64_t)1 << 28))
        return fvi_seterr(err, errlen, FV_E_IMAGE_TOO_LARGE, "image too large for haar");

    /* the scales OpenCV would scan */
    float scales[4096];
    int nscales = 0;
    int maxw = p->max_size > 0 ? p->max_size : w, maxh = p->max_size > 0 ? p->max_size : hgt;
    for (double f = 1; nscales < (int)(sizeof scales / sizeof *scales); f *= p->scale_factor) {
        long ww = lrint(h->win_w * f), wh = lrint(h->win_h * f);
        if (ww > maxw || wh > maxh || ww > w || wh > hgt) break;
        if (ww < p->min_size || wh < p->min_size) continue;
        scales[nscales++] = (float)f;
    }
    if (nscales == 0) return FV_OK;

    int sw0 = round_f((float)w / scales[0]), sh0 = round_f((float)hgt / scales[0]);
    size_t stride = (size_t)sw0 + 1, ipx;
    int nworkers = fvi_workers_size(pool);
    fv_status st = FV_OK;
    unsigned char *small = NULL;
    uint32_t *sum = NULL, *sq = NULL;
    onode *onodes = NULL;
    hit_list *lists = NULL;
    fvi_haar_rect *all = NULL;
    /* window offsets are int32: the window's rows must span < 2^31 */
    if (stride > (size_t)INT32_MAX / ((size_t)h->win_h + 1) ||
        fvi_size_mul(stride, (size_t)sh0 + 1, &ipx) != 0)
        return fvi_seterr(err, errlen, FV_E_IMAGE_TOO_LARGE, "image too large");
    small = fvi_malloc((size_t)sw0 * (size_t)sh0);
    sum = fvi_malloc(ipx * sizeof *sum);
    sq = fvi_malloc(ipx * sizeof *sq);
    onodes = fvi_malloc((size_t)h->nnodes * sizeof *onodes);
    lists = fvi_calloc((size_t)nworkers, sizeof *lists);
    if (!small || !sum || !sq || !onodes || !lists) {
        st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
        goto done;
    }
    /* feature corners as offsets from the window origin (fixed stride) */
    for (int i = 0; i < h->nnodes; i++) {
        onode *on = &onodes[i];
        const hnode *nd = &h->nodes[i];
        const hfeature *f = &h->features[nd->feature];
        int32_t *o = on->o;
        on->threshold = nd->threshold;
        on->left = nd->left;
        on->right = nd->right;
        for (int k = 0; k < MAX_RECTS; k++) on->w[k] = k < f->nrects ? f->w[k] : 0.0f;
        for (int k = 0; k < MAX_RECTS; k++) {
            if (k >= f->nrects) {
                o[4 * k] = o[4 * k + 1] = o[4 * k + 2] = o[4 * k + 3] = 0;
                continue;
            }
            int32_t x = f->r[k][0], y = f->r[k][1], rw = f->r[k][2], rh = f->r[k][3];
            int32_t s = (int32_t)stride;
            o[4 * k] = x + y * s;
            o[4 * k + 1] = x + rw + y * s;
            o[4 * k + 2] = x + (y + rh) * s;
            o[4 * k + 3] = x + rw + (y + rh) * s;
        }
    }
    scan_ctx c;
    memset(&c, 0, sizeof c);
    c.h = h;
    c.sum = sum;
    c.sq = sq;
    c.stride = stride;
    c.nodes = onodes;
    c.nofs[0] = 1 + stride;
    c.nofs[1] = (size_t)h->win_w - 1 + stride;
    c.nofs[2] = 1 + ((size_t)h->win_h - 1) * stride;
    c.nofs[3] = (size_t)h->win_w - 1 + ((size_t)h->win_h - 1) * stride;
    c.area = (double)(h->win_w - 2) * (h->win_h - 2);
    c.lists = lists;
    c.cap_per_list = MAX_HITS / (size_t)nworkers;
    int nstripes = (sw0 + 1 - h->win_w + 31) / 32; /* cvCeil(width / 32.) of scale 0 */
    if (nstripes < 1) nstripes = 1;
    for (int si = 0; si < nscales; si++) {
        float sc = scales[si];
        int sw = round_f((float)w / sc), sh = round_f((float)hgt / sc);
        if (sw > sw0) sw = sw0;
        if (sh > sh0) sh = sh0;
        if (sw < h->win_w || sh < h->win_h) continue;
        fvi_haar_resize(gray, w, hgt, small, sw, sh);
        integrals(small, sw, sh, stride, sum, sq);
        c.scale = sc;
        c.ystep = sc >= 2 ? 1 : 2;
        c.xcount = sw + 1 - h->win_w;
        c.out_w = round_f((float)h->win_w * sc);
        c.out_h = round_f((float)h->win_h * sc);
        int ycount = sh + 1 - h->win_h;
        /* OpenCV splits rows into nstripes stripes of a whole number of
         * steps rounded from ycount / ystep downwards, which can leave the
         * last row position unscanned; do the same. */
        int stripe = ((ycount / c.ystep + nstripes - 1) / nstripes);
        if (stripe < 1) stripe = 1;
        stripe *= c.ystep;
        if ((long)stripe * nstripes < ycount) ycount = stripe * nstripes;
        int rows = (ycount + c.ystep - 1) / c.ystep;
        fvi_workers_run(pool, rows, 4, scan_rows, &c);
    }
    size_t total = 0;
    for (int i = 0; i < nworkers; i++) {
        if (lists[i].full) {
            st = lists[i].n >= c.cap_per_list
                     ? fvi_seterr(err, errlen, FV_E_IMAGE_TOO_LARGE,
                                  "too many haar candidate windows")
                     : fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
            goto done;
        }
        total += lists[i].n;
    }
    if (total == 0) goto done;
    all = fvi_malloc(total * sizeof *all);
    if (!all) {
        st = fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
        goto done;
    }
    size_t at = 0;
    for (int i = 0; i < nworkers; i++) {
        if (lists[i].n) memcpy(all + at, lists[i].v, lists[i].n * sizeof *all);
        at += lists[i].n;
    }
    size_t m = 0;
    st = group(all, total, p->min_neighbors, 0.2, &m);
    if (st != FV_OK) {
        st = fvi_seterr(err, errlen, st, "out of memory");
        goto done;
    }
    /* clip to the image, dropping empty boxes (cv::CascadeClassifier) */
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        fvi_haar_rect r = all[i];
        int x0 = r.x > 0 ? r.x : 0, y0 = r.y > 0 ? r.y : 0;
        int x1 = r.x + r.w < w ? r.x + r.w : w, y1 = r.y + r.h < hgt ? r.y + r.h : hgt;
        if (x1 <= x0 || y1 <= y0) continue;
        r.x = x0, r.y = y0, r.w = x1 - x0, r.h = y1 - y0;
        all[k++] = r;
    }
    if (k == 0) {
        fvi_free(all);
        all = NULL;
    }
    *out = all;
    *n = k;
    all = NULL;
done:
    fvi_free(all);
    if (lists)
        for (int i = 0; i < nworkers; i++) fvi_free(lists[i].v);
    fvi_free(lists);
    fvi_free(small);
    fvi_free(sum);
    fvi_free(sq);
    fvi_free(onodes);
    return st;
}

fv_status fvi_haar_detect(const fvi_haar *h, const fv_image *img, const fvi_haar_params *p,
                          fvi_workers *pool, fv_face **faces, size_t *n, char *err, size_t errlen) {
    if (!faces || !n) return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "NULL argument");
    *faces = NULL;
    *n = 0;
    if (!h || !img || !img->rgb || img->width <= 0 || img->height <= 0)
        return fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "invalid image or cascade");
    size_t px;
    if (fvi_size_mul((size_t)img->width, (size_t)img->height, &px) != 0)
        return fvi_seterr(err, errlen, FV_E_IMAGE_TOO_LARGE, "image too large");
    unsigned char *gray = fvi_malloc(px);
    if (!gray) return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
    fvi_haar_gray(img, gray);
    fvi_haar_rect *r = NULL;
    size_t m = 0;
    fv_status st =
        fvi_haar_detect_gray(h, gray, img->width, img->height, p, pool, &r, &m, err, errlen);
    fvi_free(gray);
    if (st != FV_OK || m == 0) {
        fvi_free(r);
        return st;
    }
    fv_face *f = fvi_calloc(m, sizeof *f);
    if (!f) {
        fvi_free(r);
        return fvi_seterr(err, errlen, FV_E_NO_MEMORY, "out of memory");
    }
    for (size_t i = 0; i < m; i++) {
        f[i].left = (float)r[i].x;
        f[i].top = (float)r[i].y;
        f[i].right = (float)(r[i].x + r[i].w);
        f[i].bottom = (float)(r[i].y + r[i].h);
        f[i].score = (float)r[i].neighbors;
    }
    fvi_free(r);
    *faces = f;
    *n = m;
    return FV_OK;
}

void fvi_haar_box_to_dlib(fv_face *f) {
    float s = f->right - f->left;
    float cx = 0.5f * (f->left + f->right) + (float)HAAR_TO_DLIB[0] * s;
    float cy = 0.5f * (f->top + f->bottom) + (float)HAAR_TO_DLIB[1] * s;
    float hw = 0.5f * (float)HAAR_TO_DLIB[2] * s, hh = 0.5f * (float)HAAR_TO_DLIB[3] * s;
    f->left = cx - hw;
    f->right = cx + hw;
    f->top = cy - hh;
    f->bottom = cy + hh;
}
