/*
 * resize.c: area-averaging downscale (see resize.h).
 *
 * Separable: each destination column is a weighted sum of the source
 * columns it covers (weights are overlap lengths), then the same for rows.
 * Weights are computed once per axis; the intermediate is float.
 */
#include "image/resize.h"

#include <math.h>

#include "core/fvi.h"
#include "image/image.h"

/* For each of dn destination positions: the first source index, the count
 * of source indices it overlaps, and their weights (normalised to sum 1),
 * at stride *maxc in the returned array.  NULL on allocation failure. */
static float *axis_weights(int sn, int dn, int **first, int **count, int *maxc) {
    double scale = (double)sn / dn;
    int mc = (int)ceil(scale) + 1;
    size_t n;
    if (fvi_size_mul((size_t)dn, (size_t)mc, &n)) return NULL;
    float *w = fvi_calloc(n, sizeof(float));
    *first = fvi_calloc((size_t)dn, sizeof(int));
    *count = fvi_calloc((size_t)dn, sizeof(int));
    if (!w || !*first || !*count) {
        fvi_free(w);
        fvi_free(*first);
        fvi_free(*count);
        *first = *count = NULL;
        return NULL;
    }
    for (int d = 0; d < dn; d++) {
        double a = d * scale, b = (d + 1) * scale;
        int s0 = (int)floor(a), s1 = (int)ceil(b);
        if (s1 > sn) s1 = sn;
        if (s1 - s0 > mc) s1 = s0 + mc;
        (*first)[d] = s0;
        (*count)[d] = s1 - s0;
        double total = 0;
        for (int s = s0; s < s1; s++) {
            double lo = s < a ? a : s, hi = s + 1 > b ? b : s + 1;
            double ov = hi - lo;
            if (ov < 0) ov = 0;
            w[(size_t)d * mc + (s - s0)] = (float)ov;
            total += ov;
        }
        for (int s = s0; s < s1; s++)
            w[(size_t)d * mc + (s - s0)] = (float)(w[(size_t)d * mc + (s - s0)] / total);
    }
    *maxc = mc;
    return w;
}

fv_status fvi_image_downscale(const fv_image *src, int w, int h, fv_image **out) {
    if (!src || !out || w <= 0 || h <= 0 || w > src->width || h > src->height)
        return FV_E_INVALID_ARGUMENT;
    int *xf = NULL, *xc = NULL, *yf = NULL, *yc = NULL, mx = 0, my = 0;
    float *xw = axis_weights(src->width, w, &xf, &xc, &mx);
    float *yw = xw ? axis_weights(src->height, h, &yf, &yc, &my) : NULL;
    size_t tmpn = 0;
    float *tmp = NULL;
    fv_image *dst = NULL;
    fv_status st = FV_E_NO_MEMORY;
    if (!yw) goto done;
    if (fvi_size_mul((size_t)w * 3, (size_t)src->height, &tmpn)) goto done;
    tmp = fvi_malloc(tmpn * sizeof(float));
    if (!tmp) goto done;
    st = fvi_image_alloc(w, h, &dst);
    if (st != FV_OK) goto done;
    /* horizontal pass: src rows -> tmp (height x w x 3) */
    for (int y = 0; y < src->height; y++) {
        const unsigned char *row = src->rgb + (size_t)y * src->width * 3;
        float *trow = tmp + (size_t)y * w * 3;
        for (int x = 0; x < w; x++) {
            float r = 0, g = 0, b = 0;
            const float *wt = xw + (size_t)x * mx;
            for (int i = 0; i < xc[x]; i++) {
                const unsigned char *p = row + (size_t)(xf[x] + i) * 3;
                r += wt[i] * p[0];
                g += wt[i] * p[1];
                b += wt[i] * p[2];
            }
            trow[3 * x] = r;
            trow[3 * x + 1] = g;
            trow[3 * x + 2] = b;
        }
    }
    /* vertical pass: tmp -> dst */
    for (int y = 0; y < h; y++) {
        unsigned char *drow = dst->rgb + (size_t)y * w * 3;
        const float *wt = yw + (size_t)y * my;
        for (int x = 0; x < w * 3; x++) {
            float v = 0;
            for (int i = 0; i < yc[y]; i++) v += wt[i] * tmp[(size_t)(yf[y] + i) * w * 3 + x];
            int q = (int)lrintf(v);
            drow[x] = (unsigned char)(q < 0 ? 0 : q > 255 ? 255 : q);
        }
    }
    *out = dst;
    dst = NULL;
    st = FV_OK;
done:
    fvi_free(xw);
    fvi_free(yw);
    fvi_free(xf);
    fvi_free(xc);
    fvi_free(yf);
    fvi_free(yc);
    fvi_free(tmp);
    fv_image_destroy(dst);
    return st;
}
