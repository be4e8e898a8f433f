/*
 * scales.c: the automatic scale policy (see scales.h for the why).
 *
 * A photo of P pixels, longer side L, flows:
 *  1. base pass: when L > max_side, MMOD on the photo shrunk to max_side
 *     (area filter); else MMOD on the photo, doubled twice when that stays
 *     within FVI_WHOLE_UP_PIXELS (thumbnails up to 20 kpx).  It sees faces
 *     from base_min = FVI_MMOD_FACE / scale up: 20 px on a thumbnail,
 *     80 px on 1 MP, 200 px on a 12 MP photo shrunk to 1600 px;
 *  2. when base_min > FVI_SMALLEST_FACE: the Haar cascade (scale step 1.2,
 *     one neighbour, faces up to 1.3x base_min) on the photo, shrunk to
 *     FVI_HAAR_PIXELS when larger, so it sees faces from its 24 px window
 *     up, which is a dlib box of 20 px (a 25+ MP photo loses the smallest
 *     in proportion);
 *  3. for each weak base-pass face (score < FVI_WEAK_SCORE), then each
 *     proposal, strongest first, at most FVI_MAX_CROPS, that no
 *     face found so far and no earlier crop of a similar size covers: MMOD
 *     on a FVI_CROP_CONTEXT x side crop around it, doubled (0..3 times)
 *     and shrunk so the proposed face is about FVI_CROP_FACE px: ~240 px
 *     crops, ~60 kpx each, of which MMOD runs the first FVI_CROP_LEVELS
 *     pyramid levels (faces of ~80-140 px there); only faces scoring
 *     FVI_WEAK_SCORE or more count;
 *     when more proposals are open than FVI_MAX_CROPS (a crowd) and the
 *     photo doubled stays within FVI_CROWD_UP_PIXELS, one MMOD pass on the
 *     doubled photo runs first, and the crops cover what it left;
 *  4. the detections of all passes are merged: strongest first, one that
 *     overlaps a kept face (IoU > 0.3, or more than 70% of the smaller box
 *     inside the other) is dropped.
 * Cost, one thread, MMOD at ~0.7 us per pixel of its input: the base pass
 * is at most max(max_side^2 * 3/4, FVI_WHOLE_UP_PIXELS) pixels, each crop
 * ~60 kpx, Haar ~linear in the pixels it scans.  Memory: the base pass's
 * MMOD call (~103 bytes per pixel it runs on: ~200 MiB at 1600x1200), a
 * shrunk copy of the photo (3 bytes per pixel) and Haar's ~10 bytes per
 * pixel scanned (integral images), so a 24 MP photo needs ~400 MiB on top
 * of its decoded 72 MiB.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "detect/scales.h"
#include "core/fvi.h"
#include "image/image.h"
#include "image/resize.h"

/* Smallest face side (px, dlib box) MMOD finds reliably on the image it
 * runs on; measured on the detection bench (64 px: 4/6, 100 px: 5/5). */
#define FVI_MMOD_FACE 80.0
/* The smallest face the policy looks for. */
#define FVI_SMALLEST_FACE 20.0
/* Whole-photo upsampled base passes up to this many pixels after doubling
 * twice: thumbnails up to 20 kpx (160x120).  Larger ones take the
 * proposal path, which costs about 1.5x one plain pass: doubling a 250x250
 * LFW photo twice would make every such photo 16x dearer. */
#define FVI_WHOLE_UP_PIXELS (320u * 1000u)
/* The proposal pass scans a copy of the photo of at most this many pixels. */
#define FVI_HAAR_PIXELS (25.0e6)
#define FVI_HAAR_STEP 1.2
#define FVI_HAAR_NEIGHBORS 1
/* Proposals up to this times the base pass's smallest face. */
#define FVI_HAAR_REACH 1.3
/* A crop's side over the proposed face's, and the face's side in it. */
#define FVI_CROP_CONTEXT 2.4
#define FVI_CROP_FACE 100.0
#define FVI_MAX_CROPS 48
/* A crowd (more open proposals than FVI_MAX_CROPS) first gets the whole
 * photo doubled when that stays under this many pixels (the earlier
 * policy's auto-upsampling bound): a 9x9 grid of 60 px faces has 81. */
#define FVI_CROWD_UP_PIXELS (6.0e6)
#define FVI_CROP_MAX_UP 3
/* Pyramid levels a crop pass runs: level k holds faces of ~80 * 1.2^k px,
 * so the first FVI_CROP_LEVELS hold faces of 0.8x to ~1.4x FVI_CROP_FACE,
 * the spread of the proposals' sizes; the whole pyramid (down to the
 * 80 px window on the ~240 px crop) would cost ~1.5x as much. */
#define FVI_CROP_LEVELS 3
/* A base-pass face below this score (often a face just under MMOD's
 * window, boxed loosely) is looked at again through a crop; a crop's face
 * below it is dropped (the proposals lead MMOD to face-like places, where
 * upsampled background gives weak false faces: 0.13 on a 12 MP no-face
 * photo, while the bench's true faces score 1.0 and more in crops). */
#define FVI_WEAK_SCORE 0.5f

/* A growable list of faces (fvi_malloc'ed). */
typedef struct {
    fv_face *f;
    size_t n, cap;
} face_list;

/* Appends src[0..k-1] to l; FV_E_NO_MEMORY on failure (l unchanged). */
static fv_status list_add(face_list *l, const fv_face *src, size_t k) {
    if (k == 0) return FV_OK;
    if (l->n + k > l->cap) {
        size_t cap = l->cap ? l->cap : 16, bytes;
        while (cap < l->n + k) cap *= 2;
        if (fvi_size_mul(cap, sizeof *l->f, &bytes) != 0) return FV_E_NO_MEMORY;
        fv_face *g = fvi_realloc(l->f, bytes);
        if (!g) return FV_E_NO_MEMORY;
        l->f = g;
        l->cap = cap;
    }
    memcpy(l->f + l->n, src, k * sizeof *src);
    l->n += k;
    return FV_OK;
}

/* Maps boxes found in an image that is the region (ox, oy) of the photo
 * scaled by s (image px = photo px * s) back to photo pixels. */
static void map_back(fv_face *f, size_t n, double s, double ox, double oy) {
    for (size_t i = 0; i < n; i++) {
        f[i].left = (float)(f[i].left / s + ox);
        f[i].right = (float)(f[i].right / s + ox);
        f[i].top = (float)(f[i].top / s + oy);
        f[i].bottom = (float)(f[i].bottom / s + oy);
    }
}

/* img shrunk by s (< 1) with the area filter, at least 1x1; *out owned by
 * the caller. */
static fv_status shrink(const fv_image *img, double s, fv_image **out, char *err, size_t errlen) {
    int w = (int)lround(img->width * s), h = (int)lround(img->height * s);
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    fv_status st = fvi_image_downscale(img, w, h, out);
    return st == FV_OK ? FV_OK : fvi_seterr(err, errlen, st, "cannot downscale image");
}

/* MMOD on img scaled by s (<= 1: shrunk first) and doubled `up` times,
 * its first `levels` pyramid levels (0: all);
 * the boxes scoring min_score or more, mapped to img pixels plus (ox, oy),
 * are appended to l. */
static fv_status mmod_pass(const fvi_detectors *d, const fv_image *img, double s, int up,
                           int levels, double ox, double oy, float min_score, face_list *l,
                           char *err, size_t errlen) {
    fv_image *small = NULL;
    const fv_image *run = img;
    fv_status st = FV_OK;
    if (s < 1.0) {
        st = shrink(img, s, &small, err, errlen);
        if (st != FV_OK) return st;
        run = small;
    }
    fv_face *f = NULL;
    size_t n = 0;
    st = fvi_mmod_detect_levels(d->mmod, run, up, levels, d->mmod_precision, d->pool, &f, &n, err,
                                errlen);
    if (st == FV_OK) {
        map_back(f, n, s < 1.0 ? (double)run->width / img->width : 1.0, ox, oy);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (f[i].score >= min_score) f[k++] = f[i];
        st = list_add(l, f, k);
        if (st != FV_OK) fvi_seterr(err, errlen, st, "out of memory");
    }
    fvi_free(f);
    fv_image_destroy(small);
    return st;
}

static double side(const fv_face *f) {
    return 0.5 * ((f->right - f->left) + (f->bottom - f->top));
}

static int inside(const fv_face *f, double x, double y) {
    return x >= f->left && x < f->right && y >= f->top && y < f->bottom;
}

/* Haar proposals for faces up to max_face px on img (dlib box convention,
 * photo pixels), strongest first.  *out fvi_malloc'ed.  FV_E_UNSUPPORTED
 * (no message) when no cascade is available; FV_E_NO_MEMORY when loading
 * it ran out of memory (the engine retries on the next call). */
static fv_status proposals(const fvi_detectors *d, const fv_image *img, double max_face,
                           fv_face **out, size_t *n, char *err, size_t errlen) {
    const fvi_haar *cascade = NULL;
    *out = NULL;
    *n = 0;
    fv_status hs = d->haar ? d->haar(d->haar_ctx, &cascade, err, errlen) : FV_E_UNSUPPORTED;
    if (hs == FV_E_NO_MEMORY) return hs; /* transient: the call fails, as any allocation */
    if (hs != FV_OK) {
        if (err && errlen) err[0] = '\0'; /* no cascade is not an error of this call */
        return FV_E_UNSUPPORTED;
    }
    double px = (double)img->width * img->height;
    double s = px > FVI_HAAR_PIXELS ? sqrt(FVI_HAAR_PIXELS / px) : 1.0;
    int ww, wh;
    fvi_haar_window(cascade, &ww, &wh);
    /* a Haar box is ~1/0.84 of the dlib box of the same face */
    int max_size = (int)ceil(max_face * s / 0.84);
    if (max_size < ww || max_size < wh) return FV_OK;
    fv_image *small = NULL;
    const fv_image *run = img;
    if (s < 1.0) {
        fv_status st = shrink(img, s, &small, err, errlen);
        if (st != FV_OK) return st;
        run = small;
    }
    fvi_haar_params p = {FVI_HAAR_STEP, FVI_HAAR_NEIGHBORS, 0, max_size};
    fv_status st = fvi_haar_detect(cascade, run, &p, d->pool, out, n, err, errlen);
    if (st == FV_OK) {
        for (size_t i = 0; i < *n; i++) fvi_haar_box_to_dlib(&(*out)[i]);
        map_back(*out, *n, s < 1.0 ? (double)run->width / img->width : 1.0, 0, 0);
    }
    fv_image_destroy(small);
    return st;
}

static int cmp_score_desc(const void *a, const void *b) {
    float x = ((const fv_face *)a)->score, y = ((const fv_face *)b)->score;
    return (x < y) - (x > y);
}

/* A crop already run: its region and the face size it was scaled for. */
typedef struct {
    double l, t, r, b, face;
} crop_done;

/* Whether proposal p is covered: its centre inside a confident face found,
 * or inside an earlier crop's inner half that was scaled for a face within
 * 1.5x of p's size. */
static int covered(const fv_face *p, const face_list *found, const crop_done *crops, size_t nc) {
    double cx = (p->left + p->right) / 2, cy = (p->top + p->bottom) / 2, s = side(p);
    for (size_t i = 0; i < found->n; i++)
        if (found->f[i].score >= FVI_WEAK_SCORE && inside(&found->f[i], cx, cy)) return 1;
    for (size_t i = 0; i < nc; i++) {
        const crop_done *c = &crops[i];
        double mx = (c->r - c->l) / 4, my = (c->b - c->t) / 4;
        if (s < c->face * 1.5 && s > c->face / 1.5 && cx >= c->l + mx && cx < c->r - mx &&
            cy >= c->t + my && cy < c->b - my)
            return 1;
    }
    return 0;
}

/* Runs MMOD on the crop around proposal p (see the file comment); the
 * faces found are appended to l in photo pixels, the crop to *done. */
static fv_status crop_pass(const fvi_detectors *d, const fv_image *img, const fv_face *p,
                           face_list *l, crop_done *done, char *err, size_t errlen) {
    double s = side(p), cx = (p->left + p->right) / 2, cy = (p->top + p->bottom) / 2;
    double half = FVI_CROP_CONTEXT * s / 2;
    int x0 = (int)floor(cx - half), y0 = (int)floor(cy - half);
    int x1 = (int)ceil(cx + half), y1 = (int)ceil(cy + half);
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > img->width) x1 = img->width;
    if (y1 > img->height) y1 = img->height;
    *done = (crop_done){x0, y0, x1, y1, s};
    if (s < 4 || x1 - x0 < 2 || y1 - y0 < 2) return FV_OK; /* nothing MMOD could confirm */
    int up = 0;
    while (up < FVI_CROP_MAX_UP && s * (1 << up) < FVI_CROP_FACE) up++;
    double shrink_by = FVI_CROP_FACE / (s * (1 << up));
    fv_image *crop = NULL;
    fv_status st = fvi_image_alloc(x1 - x0, y1 - y0, &crop);
    if (st != FV_OK) return fvi_seterr(err, errlen, st, "out of memory");
    for (int y = y0; y < y1; y++)
        memcpy(crop->rgb + (size_t)(y - y0) * (size_t)crop->width * 3,
               img->rgb + ((size_t)y * (size_t)img->width + (size_t)x0) * 3,
               (size_t)crop->width * 3);
    st = mmod_pass(d, crop, shrink_by, up, FVI_CROP_LEVELS, x0, y0, FVI_WEAK_SCORE, l, err, errlen);
    fv_image_destroy(crop);
    return st;
}

/* Keeps the strongest of overlapping faces (see the file comment), in place. */
static void merge(face_list *l) {
    if (l->n < 2) return; /* nothing to merge (and qsort must not see NULL) */
    qsort(l->f, l->n, sizeof *l->f, cmp_score_desc);
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        const fv_face *a = &l->f[i];
        double aa = (double)(a->right - a->left) * (a->bottom - a->top);
        int keep = 1;
        for (size_t j = 0; j < k && keep; j++) {
            const fv_face *b = &l->f[j];
            double iw = fmin(a->right, b->right) - fmax(a->left, b->left);
            double ih = fmin(a->bottom, b->bottom) - fmax(a->top, b->top);
            if (iw <= 0 || ih <= 0) continue;
            double inter = iw * ih, ba = (double)(b->right - b->left) * (b->bottom - b->top);
            if (inter / (aa + ba - inter) > 0.3 || inter / fmin(aa, ba) > 0.7) keep = 0;
        }
        if (keep) l->f[k++] = *a;
    }
    l->n = k;
}

fv_status fvi_detect_auto(const fvi_detectors *d, const fv_image *img, const fv_detect_options *opt,
                          fv_face **faces, size_t *n, char *err, size_t errlen) {
    face_list l = {NULL, 0, 0};
    *faces = NULL;
    *n = 0;
    int longer = img->width > img->height ? img->width : img->height;
    double px = (double)img->width * img->height, scale = 1.0;
    int up = 0;
    if (opt->max_side > 0 && longer > opt->max_side) {
        scale = (double)opt->max_side / longer;
    } else {
        /* doubled twice, the base pass alone sees 20 px faces; doubled once
         * it would still need the proposals, which cost less than 4x */
        if (px * 16 <= FVI_WHOLE_UP_PIXELS) up = 2;
    }
    fv_status st = mmod_pass(d, img, scale, up, 0, 0, 0, -INFINITY, &l, err, errlen);
    double base_min = FVI_MMOD_FACE / (scale * (1 << up));
    if (st == FV_OK && base_min > FVI_SMALLEST_FACE) {
        fv_face *prop = NULL;
        size_t np = 0;
        st = proposals(d, img, base_min * FVI_HAAR_REACH, &prop, &np, err, errlen);
        if (st == FV_E_UNSUPPORTED) st = FV_OK; /* no cascade: the base pass only */
        if (st == FV_OK && np > 1) qsort(prop, np, sizeof *prop, cmp_score_desc);
        /* weak base faces first, then the proposals, strongest first */
        face_list todo = {NULL, 0, 0};
        for (size_t i = 0; i < l.n && st == FV_OK; i++)
            if (l.f[i].score < FVI_WEAK_SCORE) st = list_add(&todo, &l.f[i], 1);
        if (st == FV_OK) st = list_add(&todo, prop, np);
        if (st == FV_E_NO_MEMORY) fvi_seterr(err, errlen, st, "out of memory");
        /* a crowd: more places to look at than crops; one pass on the
         * whole photo doubled (faces from 40 px) is cheaper than the crops
         * and bounded, so it runs first and the crops cover what is left */
        size_t open = 0;
        for (size_t i = 0; i < todo.n && st == FV_OK; i++)
            if (!covered(&todo.f[i], &l, NULL, 0)) open++;
        if (st == FV_OK && open > FVI_MAX_CROPS && up == 0 && scale == 1.0 &&
            px * 4 <= FVI_CROWD_UP_PIXELS)
            st = mmod_pass(d, img, 1.0, 1, 0, 0, 0, -INFINITY, &l, err, errlen);
        crop_done done[FVI_MAX_CROPS];
        size_t nd = 0;
        for (size_t i = 0; i < todo.n && nd < FVI_MAX_CROPS && st == FV_OK; i++) {
            if (covered(&todo.f[i], &l, done, nd)) continue;
            st = crop_pass(d, img, &todo.f[i], &l, &done[nd], err, errlen);
            nd++;
        }
        fvi_free(todo.f);
        fvi_free(prop);
    }
    if (st != FV_OK) {
        fvi_free(l.f);
        return st;
    }
    merge(&l);
    if (l.n == 0) {
        fvi_free(l.f);
        l.f = NULL;
    }
    *faces = l.f;
    *n = l.n;
    return FV_OK;
}
