/*
 * corrections.h: "this face is not this person" (issue 19).  A correction
 * is a template stored against a subject (store.h fvs_correction_*); a
 * probe near it must not be matched to that subject by identify or by
 * the subject's verify.
 *
 * The rule (measured by bench/corrections_lfw.py, docs/benchmarks.md):
 * a probe p is excluded from subject S when one of S's corrections c has
 *     d(p, c) <= radius   and   d(p, c) < d(p, S),
 * d(p, S) being the distance to S's nearest template: p lies within the
 * radius of the face S was told it is not, and nearer to that face than
 * to anything enrolled as S.  The radius is the calibrated threshold at
 * false-match rate FVS_CORRECTION_FMR (pair quality 1), so a probe that
 * would "match" the correction at that rate is taken to be that person;
 * the second condition keeps S's own photos, which lie nearer to S's
 * templates than to a look-alike's face, from being excluded.
 *
 * Corrections are read from the store per request, for the subjects a
 * probe could be matched to (fvs_corrections_load), so a correction added
 * through any faceverifyd is applied by the next request on every other
 * one, and the cost does not grow with the collection's corrections.
 */
#ifndef FVS_CORRECTIONS_H
#define FVS_CORRECTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "server/store.h"

/* The false-match rate whose calibrated threshold is the radius. */
#define FVS_CORRECTION_FMR 1e-3

typedef struct fvs_correction_set fvs_correction_set;

/* A correction that excludes a probe: its id and distance. */
typedef struct fvs_correction_hit {
    int64_t id;
    float distance;
} fvs_correction_hit;

/* Reads the corrections of the n subjects (at most
 * FVS_CORRECTION_SUBJECTS_MAX) of collection coll made by its model into
 * *out, which is NULL when there are none (no check to make); free with
 * fvs_corrections_free.  radius: the exclusion radius for the
 * collection's model (fvs_correction_radius).  Corrections that do not
 * open with the store's template key are left out and counted in
 * *unreadable, with why in why.  0, or -1 with a message. */
int fvs_corrections_load(fvs_store *st, const fvs_collection *coll, const int64_t *subjects,
                         size_t n, float radius, fvs_correction_set **out, size_t *unreadable,
                         char *why, size_t whylen, char *err, size_t errlen);
void fvs_corrections_free(fvs_correction_set *s);

/* The radius for model: the threshold at FVS_CORRECTION_FMR where the
 * model is calibrated, else fallback (the threshold in force). */
float fvs_correction_radius(const char *model, float fallback);

/* 1 when probe is excluded from subject (the rule above, near = d(p, S)),
 * with the deciding correction (the nearest) in *hit; 0 otherwise.  s
 * may be NULL (nothing excluded).  Thread-safe for a set not freed. */
int fvs_corrections_exclude(const fvs_correction_set *s, int64_t subject, const float *probe,
                            float near, fvs_correction_hit *hit);

/* What a search applies corrections with (index.h): the radius, and
 * (out) how many corrections did not open, and why. */
typedef struct fvs_correction_opts {
    float radius;
    size_t unreadable;
    char why[200];
} fvs_correction_opts;

/* The warning {"code": "unreadable_corrections", "message", "count"} for
 * n corrections that did not open; NULL when n is 0. */
json_t *fvs_corrections_warning(size_t n, const char *why);

#endif
