/*
 * index.h: the exact in-memory search index, one matrix of templates per
 * collection, derived from the store (the source of truth).
 *
 * Consistency across processes: each collection row carries a version
 * counter that every face insert/delete bumps in the same transaction.
 * Before each search the index reads that counter (one indexed lookup) and
 * reloads the collection's templates when it differs from the one it
 * loaded.  The counter is read *before* the templates, so a concurrent
 * write can only make the cache look older than it is (an extra reload),
 * never newer: an enrollment through one faceverifyd is seen by the next
 * search through any other, and a deleted face is never returned again.
 *
 * Only templates of FV_MODEL_ID are loaded: templates from another model
 * are never compared.
 */
#ifndef FVS_INDEX_H
#define FVS_INDEX_H

#include <jansson.h>

#include "store.h"

typedef struct fvs_index fvs_index;

#define FVS_TOP_K_MAX 100
#define FVS_K_MAX 100

fvs_index *fvs_index_create(fvs_store *st);
void fvs_index_destroy(fvs_index *ix);

/* Searches nq queries (nq x FV_EMBED_DIM floats) in collection coll.  Out:
 * a JSON array with one object per query: {"candidates": [...], "match":
 * {...} or null, "templates": n}.  Candidates are subjects ranked by their
 * nearest template (id, name, distance, similarity, votes), at most top_k;
 * votes are counted among the k nearest templates within threshold, and
 * match is the subject with most votes (ties: the nearer), null when no
 * template lies within threshold.  Thread-safe. */
int fvs_index_search(fvs_index *ix, int64_t coll, const float *queries, size_t nq, float threshold,
                     int top_k, int k, json_t **out, char *err, size_t errlen);

#endif
