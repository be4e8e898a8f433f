/*
 * index.h: faceverifyd's search index, one fvsearch (src/search/) per
 * collection, derived from the store (the source of truth).
 *
 * Backend: a collection's own index_backend (PATCH /api/v1/collection,
 * createcollection --index-backend), else FACEVERIFY_INDEX_BACKEND /
 * --index-backend (exact, exact-int8, faiss-flat, faiss-hnsw,
 * faiss-ivfpq).  A collection whose backend changes is reloaded with the
 * new one on its next search.
 *
 * Persistence: with an index dir, each collection's index is saved there
 * (after a build from storage and at shutdown) and loaded at the next
 * start instead of being rebuilt -- unless its count and id checksum
 * differ from the faces in storage (drift), in which case it is rebuilt
 * from storage.  File names carry a hash of the database URL, so two
 * databases never share a file.
 *
 * Consistency across processes: every face insert/delete writes a row in
 * face_changes and bumps collections.version in the same transaction (and
 * on PostgreSQL sends NOTIFY faceverify_faces).  The index applies the
 * change log incrementally (add or remove the faces named):
 *   - sync "request" (the default): before each search it reads the
 *     version (one indexed lookup) and applies changes when it moved, so a
 *     write through any node is seen by the next search on every node;
 *   - sync "notify": searches never touch the database; a thread LISTENs
 *     on its own PostgreSQL connection and applies changes when notified.
 * Either way the thread also reconciles every reconcile_s seconds, a
 * backstop against lost notifications, and then trims each collection's
 * change log to its newest changes_keep rows, leaving a marker: a node
 * that was further behind than that finds the marker and rebuilds the
 * collection from storage instead of missing changes.
 *
 * Models: one index per (collection, model); a search uses the one of the
 * collection's current model (collections.model), so templates of other
 * models are never searched.  Entries of a model a collection left stay
 * (in sync) in case it switches back.
 */
#ifndef FVS_INDEX_H
#define FVS_INDEX_H

#include <jansson.h>

#include "search/search.h"
#include "server/corrections.h"
#include "server/store.h"

typedef struct fvs_index fvs_index;

#define FVS_TOP_K_MAX 100
#define FVS_K_MAX 100

typedef struct fvs_index_config {
    fvsearch_kind backend;
    const char *dir;        /* NULL: indexes live in memory only */
    const char *db_url;     /* LISTEN connection; names the index files */
    int sync_notify;        /* 0: check the version per search; 1: rely on NOTIFY */
    int reconcile_s;        /* periodic change-log reconcile; 0: none */
    long long changes_keep; /* change-log rows kept per collection at each
                             * reconcile; 0: never pruned */
} fvs_index_config;

fvs_index *fvs_index_create(fvs_store *st, const fvs_index_config *cfg);
/* Loads (or rebuilds, on drift) every collection's index and starts the
 * sync thread.  Optional: collections otherwise load on first search. */
int fvs_index_start(fvs_index *ix, char *err, size_t errlen);
/* Stops the thread and saves indexes changed since they were saved. */
void fvs_index_destroy(fvs_index *ix);

/* Told of each collection rebuilt, with the backend it was rebuilt with
 * (its own index_backend, else the server's). */
typedef void (*fvs_index_report_fn)(void *ctx, const fvs_collection *c, const char *backend);

/* Rebuilds one collection's index (coll > 0) or all (coll 0) from storage
 * and saves it.  *built: how many; report (optional) hears of each. */
int fvs_index_rebuild(fvs_index *ix, int64_t coll, fvs_index_report_fn report, void *rctx,
                      int *built, char *err, size_t errlen);

/* The name of the backend a collection whose index_backend setting is
 * coll_backend ("" or NULL: none) is searched with. */
const char *fvs_index_backend_in_force(const fvs_index *ix, const char *coll_backend);

/* Calls fn(ctx, backend, templates, bytes) for each loaded index (one per
 * collection and model): its backend, live templates and the bytes its
 * structures hold (fvsearch_count, fvsearch_memory), for /metrics.  Waits
 * for an index being loaded or searched.  Thread-safe. */
typedef void (*fvs_index_size_fn)(void *ctx, fvsearch_kind backend, size_t templates, size_t bytes);
void fvs_index_sizes(fvs_index *ix, fvs_index_size_fn fn, void *ctx);

/* Searches nq queries (nq x FV_EMBED_DIM floats) among the templates of
 * collection coll->id made by coll->model, with coll->index_backend.  Out:
 * a JSON array with one object per query: {"candidates": [...], "match":
 * {...} or null, "templates": n, "decision": d}.
 *
 * fpir 0: the k-NN vote (d "knn_vote").  Candidates are subjects ranked
 * by their nearest template (id, name, distance, similarity, votes), at
 * most top_k; votes are counted among the k nearest templates within
 * threshold, and match is the subject with most votes (ties: the nearer),
 * null when no template lies within threshold.
 *
 * fpir > 0: open set at that rate (d "open_set"; the model must have an
 * FPIR calibration, fv_openset_decide).  The subjects of the nearest
 * templates are ranked by the distance to their fused template
 * (fv_fuse_templates); candidates (id, name, distance, score, templates),
 * at most top_k; match (with score and estimated_fpir) is the nearest
 * when its score passes the threshold for the gallery's size (subjects
 * with a readable template), else null; "operating_point": {"fpir",
 * "score_threshold", "gallery_size"}.
 *
 * *warning: NULL, or (when some of the
 * collection's templates do not open here: no key, another key, an
 * altered row) an "unreadable_templates" warning object naming them, the
 * caller's to free; the others are searched.  When none opens, -1 with
 * the reason (starting with FVS_TKEY_ERROR) in err.  Thread-safe. */
int fvs_index_search(fvs_index *ix, const fvs_collection *coll, const float *queries, size_t nq,
                     float threshold, int top_k, int k, double fpir, json_t **out, json_t **warning,
                     char *err, size_t errlen);

/* fvs_index_search with corrections (corrections.h; co NULL: none): for
 * each query the corrections of the subjects of its nearest templates are
 * read from the store, and a probe excluded from a subject by one of them
 * is searched as if the subject were not in the gallery (never its match,
 * not in the vote nor among the open-set cohort); the subject is listed
 * among the candidates, in distance order, with "excluded": "correction",
 * "correction_id" and "correction_distance" (such entries come on top of
 * top_k).  The subject's distance to the probe for the rule is that of
 * its nearest template among the HEAD nearest.  co->unreadable and
 * co->why say how many corrections read did not open, and why. */
int fvs_index_search_corrected(fvs_index *ix, const fvs_collection *coll, const float *queries,
                               size_t nq, float threshold, int top_k, int k, double fpir,
                               fvs_correction_opts *co, json_t **out, json_t **warning, char *err,
                               size_t errlen);

/* Most face ids a warning names (its count says how many in all). */
#define FVS_UNREADABLE_IDS_MAX 100
/* The warning {"code": "unreadable_templates", "message": why, "count": n,
 * "face_ids": [the first FVS_UNREADABLE_IDS_MAX of faces]}; NULL when out
 * of memory. */
json_t *fvs_unreadable_warning(const int64_t *faces, size_t n, const char *why);

#endif
