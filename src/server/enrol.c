/*
 * enrol.c: the enrolment rules shared by the API and the bulk import (see
 * enrol.h).  The duplicate check asks the index for the nearest subjects
 * within the loosest threshold the new face can have, then checks each
 * candidate's nearest template at the pair's own quality-dependent
 * threshold (a poorer stored face is stricter).
 */
#include "server/enrol.h"

#include <stdio.h>
#include <string.h>

#include "server/crypto.h"

/* Other subjects examined: the nearest few, since the index ranks by the
 * threshold for the new face alone and a poorer stored one is stricter. */
#define DUP_CANDIDATES 5

double fvs_enrol_gate(const fvs_collection *c, double server_default) {
    return c->min_quality >= 0 ? c->min_quality : server_default;
}

int fvs_best_row(void *ctx, int64_t face_id, int64_t subject_id, const char *name, const float *emb,
                 double quality) {
    (void)subject_id;
    (void)name;
    fvs_best *b = ctx;
    if (!emb) { /* named in the answer's warning; the count goes on */
        if (b->nbad < FVS_UNREADABLE_IDS_MAX) b->bad[b->nbad] = face_id;
        b->nbad++;
        return 0;
    }
    float d = fv_distance(b->probe, emb);
    if (b->n == 0 || d < b->best) {
        b->best = d;
        b->best_face = face_id;
        b->best_quality = quality;
    }
    b->n++;
    return 0;
}

/* Whether candidate subject cid's nearest template is within the
 * FVS_DUP_FMR threshold for the pair of q (the new face's quality) and its
 * stored quality (none: 1).  1 with *hit filled, 0 no, -1 after a
 * database error in err. */
static int dup_candidate(fvs_store *st, const fvs_collection *c, int64_t cid, const char *name,
                         const float *emb, float q, fvs_dup_hit *hit, char *err, size_t errlen) {
    fvs_best b;
    memset(&b, 0, sizeof b);
    b.probe = emb;
    if (fvs_templates(st, c->id, cid, c->model, fvs_best_row, &b, err, errlen)) return -1;
    double sq = b.best_quality;
    float t = 0, pq = fv_pair_quality(q, (float)sq);
    if (b.n == 0 || fv_fmr_threshold(c->model, FVS_DUP_FMR, pq, &t) != FV_OK || b.best > t)
        return 0;
    hit->subject = cid;
    hit->face = b.best_face;
    snprintf(hit->name, sizeof hit->name, "%s", name ? name : "");
    hit->distance = b.best;
    hit->threshold = t;
    return 1;
}

int fvs_enrol_find_duplicate(fvs_store *st, fvs_index *ix, const fvs_collection *c, int64_t sid,
                             const float *emb, double q, fvs_dup_hit *hit, char *err,
                             size_t errlen) {
    memset(hit, 0, sizeof *hit);
    /* the search radius: the loosest pair threshold this face can have
     * (with a stored face of quality 1); dup_candidate then checks the
     * pair's own */
    float t = 0;
    if (fv_fmr_threshold(c->model, FVS_DUP_FMR, fv_pair_quality((float)q, 1.0f), &t) != FV_OK)
        return 0;
    json_t *res = NULL, *warning = NULL;
    if (fvs_index_search(ix, c, emb, 1, t, DUP_CANDIDATES + 1, 1, 0, &res, &warning, err, errlen)) {
        /* No template opens here (no or another template key): nothing to
         * compare with; storing it is the insert's to allow or refuse. */
        if (strncmp(err, FVS_TKEY_ERROR, strlen(FVS_TKEY_ERROR)) == 0) return 0;
        return -1;
    }
    json_decref(warning);
    json_t *cands = json_object_get(json_array_get(res, 0), "candidates");
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < json_array_size(cands); i++) {
        json_t *cj = json_array_get(cands, i);
        int64_t cid = (int64_t)json_integer_value(json_object_get(cj, "id"));
        if (cid == sid) continue;
        if (json_real_value(json_object_get(cj, "distance")) > (double)t) break;
        rc = dup_candidate(st, c, cid, json_string_value(json_object_get(cj, "name")), emb,
                           (float)q, hit, err, errlen);
    }
    json_decref(res);
    return rc < 0 ? -1 : 0;
}

fvs_face_row fvs_enrol_row(const char *model, const fv_face_result *fr, const char *mac,
                           const char *import_fp) {
    fvs_face_row row = {model,
                        fr->embedding,
                        fr->face.left,
                        fr->face.top,
                        fr->face.right,
                        fr->face.bottom,
                        fr->face.score,
                        mac,
                        fr->quality.score,
                        import_fp,
                        0};
    return row;
}
