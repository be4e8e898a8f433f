/*
 * corrections.c: the per-request set of a collection's corrections and
 * the exclusion rule (see corrections.h).
 *
 * A set is the corrections of a few subjects of one collection and model
 * (those a probe's nearest templates belong to, or the one subject of a
 * verify), read from the store when a request needs them, sorted by
 * subject (by the query), so that "is this probe excluded from subject
 * S?" is a binary search and a distance per correction of S.  Nothing is
 * cached between requests: every process reads what any process wrote, at
 * the price of one indexed query per probe (and the opening of each
 * correction read, about a microsecond each, when a template key is set).
 */
#include "server/corrections.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/crypto.h"

struct fvs_correction_set {
    size_t n, cap;
    int64_t *id, *subject; /* sorted by subject, then id */
    float *emb;            /* n x FV_EMBED_DIM */
    float radius;
    size_t unreadable;
};

void fvs_corrections_free(fvs_correction_set *s) {
    if (!s) return;
    free(s->id);
    free(s->subject);
    free(s->emb);
    free(s);
}

/* Row of fvs_corrections_each: appended (the store gives them sorted by
 * subject, then id). */
static int set_row(void *ctx, int64_t id, int64_t subject, const float *embedding) {
    fvs_correction_set *s = ctx;
    if (!embedding) {
        s->unreadable++;
        return 0;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        if (cap > SIZE_MAX / (FV_EMBED_DIM * sizeof(float))) return 1;
        int64_t *ids = realloc(s->id, cap * sizeof *ids);
        if (!ids) return 1;
        s->id = ids;
        int64_t *subj = realloc(s->subject, cap * sizeof *subj);
        if (!subj) return 1;
        s->subject = subj;
        float *emb = realloc(s->emb, cap * FV_EMBED_DIM * sizeof *emb);
        if (!emb) return 1;
        s->emb = emb;
        s->cap = cap;
    }
    s->id[s->n] = id;
    s->subject[s->n] = subject;
    memcpy(s->emb + s->n * FV_EMBED_DIM, embedding, FV_EMBED_DIM * sizeof(float));
    s->n++;
    return 0;
}

int fvs_corrections_load(fvs_store *st, const fvs_collection *coll, const int64_t *subjects,
                         size_t n, float radius, fvs_correction_set **out, size_t *unreadable,
                         char *why, size_t whylen, char *err, size_t errlen) {
    *out = NULL;
    *unreadable = 0;
    if (whylen) why[0] = 0;
    fvs_correction_set *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->radius = radius;
    int rc = fvs_corrections_each(st, coll->id, subjects, n, coll->model, set_row, s, err, errlen);
    if (rc) {
        fvs_corrections_free(s);
        return -1;
    }
    if (err[0] && whylen) snprintf(why, whylen, "%s", err);
    if (errlen) err[0] = 0;
    *unreadable = s->unreadable;
    if (s->n == 0) {
        fvs_corrections_free(s);
        return 0;
    }
    *out = s;
    return 0;
}

float fvs_correction_radius(const char *model, float fallback) {
    float t = 0;
    if (fv_fmr_threshold(model, FVS_CORRECTION_FMR, 1.0f, &t) == FV_OK && t > 0) return t;
    return fallback;
}

int fvs_corrections_exclude(const fvs_correction_set *s, int64_t subject, const float *probe,
                            float near, fvs_correction_hit *hit) {
    if (!s) return 0;
    size_t lo = 0, hi = s->n;
    while (lo < hi) { /* the first correction of subject */
        size_t mid = lo + (hi - lo) / 2;
        if (s->subject[mid] < subject)
            lo = mid + 1;
        else
            hi = mid;
    }
    int found = 0;
    for (size_t i = lo; i < s->n && s->subject[i] == subject; i++) {
        float d = fv_distance(probe, s->emb + i * FV_EMBED_DIM);
        if (!found || d < hit->distance) *hit = (fvs_correction_hit){s->id[i], d};
        found = 1;
    }
    return found && hit->distance <= s->radius && hit->distance < near;
}

json_t *fvs_corrections_warning(size_t n, const char *why) {
    if (n == 0) return NULL;
    return json_pack("{s:s, s:s, s:I}", "code", "unreadable_corrections", "message",
                     why && *why ? why : FVS_TKEY_ERROR "stored corrections do not decrypt",
                     "count", (json_int_t)n);
}
