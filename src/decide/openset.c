/*
 * openset.c: open-set identification (fv_fuse_templates,
 * fv_openset_score, fv_openset_decide).
 *
 * The score of a subject is 1 - d / c, where d is the probe's distance to
 * the subject's fused template and c the mean distance to its cohort: the
 * FVI_OPENSET_COHORT nearest other subjects.  A probe that is close to
 * everyone (a poor photo, a common face) is close to its cohort too, so
 * its score does not rise with it; a known face stands out from the
 * gallery.  bench/openset_explore.py measured the alternatives on LFW View
 * 1 training people (the nearest distance alone, ratio to the second,
 * margin, test normalisation, a logistic model of six features); this one
 * had the lowest FNIR at FPIR 1e-2 but for the logistic model, which was
 * no better on the test people and needs more state.
 *
 * For an unknown probe the nearest of N subjects drifts further into the
 * tail as N grows, so the score threshold for an FPIR depends on N:
 * fpir_table.h (written by bench/calibrate_openset.py from LFW View 1
 * training people; never edit it by hand) holds it on a grid of gallery
 * sizes, interpolated in log N and extended past the last point along the
 * last segment.  Galleries too small for a cohort (under
 * FVI_FPIR_MIN_GALLERY subjects) decide on the distance alone at the 1:1
 * threshold for FMR fpir / N.  A match also needs its distance within the
 * 1:1 threshold at FMR FVI_OPENSET_FMR_GUARD, so that a far face in an
 * empty region of the space is never accepted on its ratio alone.
 */
#include <math.h>
#include <string.h>

#include "core/fvi.h"
#include "decide/fpir_table.h"

float fv_openset_score(const float *distances, size_t n, size_t j) {
    if (!distances || j >= n) return NAN;
    double sum = 0;
    size_t m = 0;
    for (size_t i = 0; i < n && m < FVI_OPENSET_COHORT; i++) {
        if (i == j) continue;
        sum += distances[i];
        m++;
    }
    if (m == 0 || !(sum > 0)) return -distances[j];
    return (float)(1.0 - distances[j] / (sum / (double)m));
}

fv_status fv_fuse_templates(const float *templates, size_t n, int dim, float *out) {
    if (!templates || !out || n == 0 || dim < 1 || dim > FV_EMBED_DIM) return FV_E_INVALID_ARGUMENT;
    double acc[FV_EMBED_DIM] = {0}, lensum = 0;
    for (size_t i = 0; i < n; i++) {
        const float *t = templates + i * (size_t)dim;
        double l = 0;
        for (int k = 0; k < dim; k++) l += (double)t[k] * t[k];
        l = sqrt(l);
        if (!(l > 0) || !isfinite(l)) return FV_E_INVALID_ARGUMENT;
        for (int k = 0; k < dim; k++) acc[k] += t[k] / l;
        lensum += l;
    }
    double l = 0;
    for (int k = 0; k < dim; k++) l += acc[k] * acc[k];
    l = sqrt(l);
    if (!(l > 0)) return FV_E_INVALID_ARGUMENT; /* templates cancel out */
    double scale = lensum / (double)n / l;
    for (int k = 0; k < dim; k++) out[k] = (float)(acc[k] * scale);
    return FV_OK;
}

/* Score threshold for grid FPIR point k at gallery size g: linear in
 * log10 g between grid sizes, along the last segment beyond them. */
static double grid_threshold(size_t g, int k) {
    double lg = log10((double)g);
    int i = 0;
    while (i + 2 < FVI_FPIR_SIZES && lg > log10((double)FVI_FPIR_GALLERY[i + 1])) i++;
    double a = log10((double)FVI_FPIR_GALLERY[i]), b = log10((double)FVI_FPIR_GALLERY[i + 1]);
    double f = (lg - a) / (b - a);
    if (f < 0) f = 0;
    return (1 - f) * FVI_FPIR_THRESHOLD[i][k] + f * FVI_FPIR_THRESHOLD[i + 1][k];
}

/* FPIR at score s for gallery g from the grid (log10 FPIR linear in the
 * score between grid points), clamped to [FV_FPIR_MIN, 1]. */
static double grid_fpir(size_t g, double s) {
    double prev = grid_threshold(g, 0);
    if (s <= prev) return 1.0;
    for (int k = 1; k < FVI_FPIR_POINTS; k++) {
        double t = grid_threshold(g, k);
        if (s <= t) {
            double f = t > prev ? (s - prev) / (t - prev) : 1.0;
            return pow(10.0, -FVI_FPIR_STEP * (k - 1 + f));
        }
        prev = t;
    }
    return FV_FPIR_MIN;
}

fv_status fv_openset_decide(const char *model_id, const float *distances, size_t n, size_t gallery,
                            double fpir, fv_openset_decision *out) {
    if (model_id && strcmp(model_id, FVI_FPIR_MODEL_ID) != 0) return FV_E_UNSUPPORTED;
    if (!distances || !out || n == 0 || gallery < n ||
        !(fpir >= FV_FPIR_MIN * (1 - 1e-9) && fpir <= FV_FPIR_MAX * (1 + 1e-9)))
        return FV_E_INVALID_ARGUMENT;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(distances[i]) || (i && distances[i] < distances[i - 1]))
            return FV_E_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    if (gallery < FVI_FPIR_MIN_GALLERY) {
        /* no cohort: the nearest distance against the 1:1 threshold that
         * gives this FPIR over `gallery` independent comparisons */
        double fmr = fpir / (double)gallery;
        if (fmr < FV_FMR_MIN) fmr = FV_FMR_MIN;
        float t;
        fv_status st = fv_fmr_threshold(model_id, fmr, 1.0f, &t);
        if (st != FV_OK) return st;
        double per = 0;
        st = fv_estimated_fmr(model_id, distances[0], 1.0f, &per);
        if (st != FV_OK) return st;
        out->distance_rule = 1;
        out->score = -distances[0];
        out->threshold = -t;
        out->estimated_fpir = per * (double)gallery > 1 ? 1 : per * (double)gallery;
        if (out->estimated_fpir < FV_FPIR_MIN) out->estimated_fpir = FV_FPIR_MIN;
        out->match = distances[0] <= t;
        return FV_OK;
    }
    out->score = fv_openset_score(distances, n, 0);
    double pos = -log10(fpir) / FVI_FPIR_STEP;
    int k = (int)floor(pos);
    if (k >= FVI_FPIR_POINTS - 1) k = FVI_FPIR_POINTS - 2;
    double f = pos - k;
    out->threshold =
        (float)((1 - f) * grid_threshold(gallery, k) + f * grid_threshold(gallery, k + 1));
    out->estimated_fpir = grid_fpir(gallery, out->score);
    float guard;
    fv_status st = fv_fmr_threshold(model_id, FVI_OPENSET_FMR_GUARD, 1.0f, &guard);
    if (st != FV_OK) return st;
    out->match = out->score >= out->threshold && distances[0] <= guard;
    return FV_OK;
}
