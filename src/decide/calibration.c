/*
 * calibration.c: operating points by false-match rate (fv_fmr_threshold,
 * fv_estimated_fmr).
 *
 * The table (fmr_table.h, written by bench/calibrate_fmr.py; never edit it
 * by hand) holds, per pair-quality bin, the distance threshold at each
 * false-match rate 10^0, 10^-0.25, ..., 10^-6: the empirical quantiles of
 * the impostor distances of LFW View 1 training people, clean and in the
 * derived hard variants, binned by pair quality (fv_pair_quality).
 * Between grid points log10(FMR) is linear in the distance.  Within a bin
 * the thresholds fall as the rate falls; across bins a poorer bin is never
 * looser than a better one at the same rate (the script enforces both).
 */
#include <math.h>
#include <string.h>

#include "core/fvi.h"
#include "decide/fmr_table.h"

/* The bin of a quality score: the last whose lower edge it reaches. */
static const fvi_fmr_bin *bin_for(float quality) {
    size_t n = sizeof FVI_FMR_BINS / sizeof FVI_FMR_BINS[0];
    const fvi_fmr_bin *b = &FVI_FMR_BINS[0];
    for (size_t i = 1; i < n; i++)
        if (quality >= FVI_FMR_BINS[i].quality_min) b = &FVI_FMR_BINS[i];
    return b;
}

static fv_status check(const char *model_id, float quality) {
    if (model_id && strcmp(model_id, FVI_FMR_MODEL_ID) != 0) return FV_E_UNSUPPORTED;
    if (!(quality >= 0.0f && quality <= 1.0f)) return FV_E_INVALID_ARGUMENT;
    return FV_OK;
}

float fv_pair_quality(float quality_a, float quality_b) {
    float a = quality_a >= 0 && quality_a <= 1 ? quality_a : 1.0f;
    float b = quality_b >= 0 && quality_b <= 1 ? quality_b : 1.0f;
    return 0.5f * (a + b);
}

fv_status fv_fmr_threshold(const char *model_id, double fmr, float quality, float *threshold) {
    fv_status st = check(model_id, quality);
    if (st != FV_OK) return st;
    if (!threshold || !(fmr >= FV_FMR_MIN * (1 - 1e-9) && fmr <= FV_FMR_MAX * (1 + 1e-9)))
        return FV_E_INVALID_ARGUMENT;
    const fvi_fmr_bin *b = bin_for(quality);
    double pos = -log10(fmr) / FVI_FMR_STEP; /* grid index, fractional */
    int i = (int)floor(pos);
    if (i >= FVI_FMR_POINTS - 1) i = FVI_FMR_POINTS - 2;
    if (i < 0) i = 0;
    double f = pos - i;
    *threshold = (float)((1 - f) * b->threshold[i] + f * b->threshold[i + 1]);
    return FV_OK;
}

fv_status fv_estimated_fmr(const char *model_id, float distance, float quality, double *fmr) {
    fv_status st = check(model_id, quality);
    if (st != FV_OK) return st;
    if (!fmr || isnan(distance)) return FV_E_INVALID_ARGUMENT;
    const fvi_fmr_bin *b = bin_for(quality);
    const float *t = b->threshold;
    if (distance >= t[0]) {
        *fmr = 1.0;
        return FV_OK;
    }
    double lg = -FVI_FMR_STEP * (FVI_FMR_POINTS - 1);
    for (int i = 0; i + 1 < FVI_FMR_POINTS; i++) {
        if (distance >= t[i + 1]) {
            double span = (double)t[i] - t[i + 1];
            double f = span > 0 ? ((double)t[i] - distance) / span : 1.0;
            lg = -FVI_FMR_STEP * (i + f);
            break;
        }
    }
    *fmr = pow(10.0, lg);
    if (*fmr < FV_FMR_MIN) *fmr = FV_FMR_MIN;
    return FV_OK;
}
