/*
 * enrol.h: the rules every enrolment follows, whoever enrols: the API's
 * POST /subjects/{id}/faces (routes.c) and `faceverifyd import` (bulk.c).
 * The quality gate (a face poorer than the collection's min_quality, else
 * the server's --min-quality, is refused unless forced) and the duplicate
 * check (the face matches a template of another subject at FMR
 * FVS_DUP_FMR: a warning, or a refusal when asked).  Both callers map the
 * outcome to their own output (an HTTP answer, an import report line).
 */
#ifndef FVS_ENROL_H
#define FVS_ENROL_H

#include <stdint.h>

#include "faceverify.h"
#include "server/index.h"
#include "server/store.h"

#define FVS_DUP_FMR 1e-4

/* The enrolment gate in force: the collection's, else server_default. */
double fvs_enrol_gate(const fvs_collection *c, double server_default);

/* The nearest template of one subject to probe (fvs_templates' callback):
 * templates that do not open are counted and named in bad[]. */
typedef struct fvs_best {
    const float *probe;
    float best;
    int64_t best_face;
    double best_quality; /* the best match's stored quality; < 0: NULL */
    int n;
    int64_t bad[FVS_UNREADABLE_IDS_MAX];
    size_t nbad;
} fvs_best;
int fvs_best_row(void *ctx, int64_t face_id, int64_t subject_id, const char *name, const float *emb,
                 double quality);

/* A template of another subject the new face matches. */
typedef struct fvs_dup_hit {
    int64_t subject, face;
    char name[FVS_NAME_MAX + 1];
    float distance, threshold;
} fvs_dup_hit;

/* Looks for a template of a subject of c other than sid that emb (quality
 * q: the score, < 0 when unknown) matches at FVS_DUP_FMR, nearest first,
 * through the index.  0 (hit->subject 0 when none), or -1 with a database
 * message in err.  A model without an FMR calibration (trained models) is
 * not checked; neither is a collection whose templates do not open here.
 * Thread-safe as the store and the index are. */
int fvs_enrol_find_duplicate(fvs_store *st, fvs_index *ix, const fvs_collection *c, int64_t sid,
                             const float *emb, double q, fvs_dup_hit *hit, char *err,
                             size_t errlen);

/* The row that stores the face of fr (fvs_face_insert): made by model,
 * with the photo's keyed fingerprint mac and import fingerprint
 * import_fp (store.h; each may be NULL).  Points into fr. */
fvs_face_row fvs_enrol_row(const char *model, const fv_face_result *fr, const char *mac,
                           const char *import_fp);

#endif
