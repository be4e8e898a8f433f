/*
 * search.h: nearest-template search over FV_EMBED_DIM float32 embeddings,
 * with interchangeable backends.  Internal to the project (used by
 * faceverifyd, the C tests and bench/search_bench); built as the static
 * library fvsearch because its FAISS backends link Debian's static,
 * C++-only libfaiss (see faiss_wrap.h).
 *
 * Backends (fvsearch_kind):
 *   exact       float32 rows, one sgemv per query; the reference answer.
 *   exact-int8  rows quantised to int8 with one scale per row; the scan
 *               reads 4x fewer bytes and bounds each row's quantisation
 *               error, and every row that the bound cannot rule out of
 *               the k nearest is re-ranked in float32, so the answers
 *               equal exact's.  With fvsearch_spill the float32 rows
 *               live in a file, not in memory.
 *   faiss-flat  FAISS IndexFlatL2 (a baseline for the benchmarks).
 *   faiss-hnsw  FAISS HNSW graph: sub-millisecond, approximate.
 *   faiss-ivfpq FAISS IVF + product quantisation + flat refine;
 *               collections under 256 templates are served flat until a
 *               rebuild with more (PQ cannot train on fewer).
 *
 * Every backend returns its hits with the exact float32 distance of
 * fv_distance, so reported numbers match /verify whatever found them.
 * Ids are caller-chosen int64 (face ids), unique within one index.
 *
 * Deletes take effect at once.  The FAISS graph/lists cannot drop a vector
 * cheaply, so a removed id goes into a tombstone set that queries filter
 * out (fetching more candidates to compensate); when tombstones pass 10%
 * of the index it is compacted (rebuilt from its own stored vectors).
 *
 * Thread-safety: none inside; the caller serialises writes against
 * queries (faceverifyd holds a per-collection mutex).  Queries on one
 * index may run concurrently with each other.
 */
#ifndef FVSEARCH_H
#define FVSEARCH_H

#include <stddef.h>
#include <stdint.h>

typedef enum fvsearch_kind {
    FVSEARCH_EXACT = 0,
    FVSEARCH_INT8,
    FVSEARCH_FAISS_FLAT,
    FVSEARCH_FAISS_HNSW,
    FVSEARCH_FAISS_IVFPQ,
    FVSEARCH_KINDS
} fvsearch_kind;

typedef struct fvsearch fvsearch;

typedef struct fvsearch_hit {
    int64_t id;
    float distance; /* fv_distance(query, stored vector) */
} fvsearch_hit;

/* "exact", "exact-int8", "faiss-flat", "faiss-hnsw", "faiss-ivfpq".
 * Returns -1 for an unknown name. */
int fvsearch_kind_parse(const char *name, fvsearch_kind *out);
const char *fvsearch_kind_name(fvsearch_kind kind);

/* An empty index.  NULL with a message in err on failure. */
fvsearch *fvsearch_create(fvsearch_kind kind, char *err, size_t errlen);
void fvsearch_destroy(fvsearch *s); /* NULL: no-op */
fvsearch_kind fvsearch_kind_of(const fvsearch *s);

/* Adds n vectors (n x FV_EMBED_DIM) under ids.  An id already present is
 * an error (-1), and nothing of the batch is added.  The first batch added
 * to an empty faiss-ivfpq index trains it. */
int fvsearch_add(fvsearch *s, size_t n, const int64_t *ids, const float *vecs, char *err,
                 size_t errlen);
/* 0 removed, 1 no such id, -1 error. */
int fvsearch_remove(fvsearch *s, int64_t id, char *err, size_t errlen);
int fvsearch_contains(const fvsearch *s, int64_t id);
size_t fvsearch_count(const fvsearch *s); /* live ids */
/* Order-independent checksum of the live ids (for drift checks). */
uint64_t fvsearch_checksum(const fvsearch *s);
/* Bytes held by the index structures (vectors, codes, ids, graph). */
size_t fvsearch_memory(const fvsearch *s);

/* Scan threads for the exact backends (default 1).  The scan of a gallery
 * of 32768 rows or more is split over this many threads (a pool the index
 * owns, started once it is that big); smaller ones use the caller alone.
 * Same answers whatever the count. */
void fvsearch_set_threads(fvsearch *s, int threads);

/* exact-int8 only (0 and nothing done for other backends): moves the
 * float32 rows, needed only to re-rank a query's few candidates, out of
 * memory into an unlinked file created in dir, so the index holds just the
 * int8 codes (about 4x less memory than exact).  Re-ranking then reads
 * those rows with pread (from the page cache while memory allows).  -1
 * with a message when the file cannot be created or written. */
int fvsearch_spill(fvsearch *s, const char *dir, char *err, size_t errlen);

/* The k nearest live vectors to q, nearest first (ties: smaller id).
 * hits has room for k; *nhits = min(k, count) for exact backends, possibly
 * fewer for approximate ones. */
int fvsearch_query(fvsearch *s, const float *q, size_t k, fvsearch_hit *hits, size_t *nhits,
                   char *err, size_t errlen);

/* The k nearest of each of the nq queries q (nq x FV_EMBED_DIM): query i's
 * hits go to hits[i * k ...] (room for nq * k), their number to nhits[i];
 * the answers are fvsearch_query's.  For many queries at once (all faces
 * against all, as clustering asks): the exact backend batches them into
 * matrix products, reading each stored row once per 64 queries instead of
 * once per query; the others query one by one.  Calls on disjoint query
 * sets may run concurrently, as queries may. */
int fvsearch_query_many(fvsearch *s, size_t nq, const float *q, size_t k, fvsearch_hit *hits,
                        size_t *nhits, char *err, size_t errlen);

/* Writes the index to path (atomically: path.tmp, then rename). */
int fvsearch_save(fvsearch *s, const char *path, char *err, size_t errlen);
/* Reads an index of this kind written by fvsearch_save.  NULL with a
 * message when missing, truncated, corrupt, or of another kind. */
fvsearch *fvsearch_load(fvsearch_kind kind, const char *path, char *err, size_t errlen);

/* Order-independent checksum step, shared with callers that checksum ids
 * from storage. */
uint64_t fvsearch_id_hash(int64_t id);

#endif
