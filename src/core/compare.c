/*
 * compare.c: distances between embeddings and the decision scale.
 *
 * The ground floor of comparison, used by the pipeline (fv_verify), the
 * search library and the server's index alike, so that a distance means
 * the same number wherever it is computed.  Pure arithmetic on caller
 * arrays: no model, no engine, no allocation.
 */
#include <math.h>
#include <string.h>

#include "core/fvi.h"

/* Euclidean distance over FV_EMBED_DIM floats, summed in double; NAN for a
 * NULL argument.  Thread-safe. */
float fv_distance(const float *a, const float *b) {
    if (!a || !b) return NAN;
    double s = 0;
    for (int i = 0; i < FV_EMBED_DIM; i++) {
        double d = (double)a[i] - b[i];
        s += d * d;
    }
    return (float)sqrt(s);
}

/* The logistic similarity of the header's contract: 0.5 at the threshold,
 * 0 for NAN, saturated outside +-80 steps of 0.05 (exp would overflow). */
float fv_similarity(float distance, float threshold) {
    if (isnan(distance)) return 0.0f;
    double z = ((double)distance - threshold) / 0.05;
    if (z > 80) return 0.0f;
    if (z < -80) return 1.0f;
    return (float)(1.0 / (1.0 + exp(z)));
}

/* Distance of two dim-long embeddings when their model ids agree (NULL
 * standing for FV_MODEL_ID); FV_E_MODEL_MISMATCH otherwise, since two
 * models' spaces are not comparable.  Thread-safe. */
fv_status fv_compare(const char *model_a, const float *a, const char *model_b, const float *b,
                     int dim, float *distance) {
    if (!a || !b || !distance || dim < 1) return FV_E_INVALID_ARGUMENT;
    if (strcmp(model_a ? model_a : FV_MODEL_ID, model_b ? model_b : FV_MODEL_ID) != 0)
        return FV_E_MODEL_MISMATCH;
    double s = 0;
    for (int k = 0; k < dim; k++) s += (double)(a[k] - b[k]) * (a[k] - b[k]);
    *distance = (float)sqrt(s);
    return FV_OK;
}
