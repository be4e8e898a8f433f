/*
 * search.h: nearest-template search over FV_EMBED_DIM float32 embeddings,
 * with interchangeable backends.  Internal to the project (used by
 * faceverifyd, the C tests and bench/search_bench); built as the static
 * library fvsearch because its FAISS backends link Debian's static,
 * C++-only libfaiss (see faiss_wrap.h).
 *
 * Backends (fvi_search_kind):
 *   exact       float32 rows, one sgemv per query; the reference answer.
 *   exact-int8  rows quantised to int8 with one scale per row; the scan
 *               reads 4x fewer bytes and bounds each row's quantisation
 *               error, and every row that the bound cannot rule out of
 *               the k nearest is re-ranked in float32, so the answers
 *               equal exact's.  With fvi_search_spill the float32 rows
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
#ifndef FVI_SEARCH_H
#define FVI_SEARCH_H

#include <stddef.h>
#include <stdint.h>

typedef enum fvi_search_kind {
    FVI_SEARCH_EXACT = 0,
    FVI_SEARCH_INT8,
    FVI_SEARCH_FAISS_FLAT,
    FVI_SEARCH_FAISS_HNSW,
    FVI_SEARCH_FAISS_IVFPQ,
    FVI_SEARCH_KINDS
} fvi_search_kind;

typedef struct fvi_search fvi_search;

typedef struct fvi_hit {
    int64_t id;
    float distance; /* fv_distance(query, stored vector) */
} fvi_hit;

/* "exact", "exact-int8", "faiss-flat", "faiss-hnsw", "faiss-ivfpq".
 * Returns -1 for an unknown name. */
int fvi_search_kind_parse(const char *name, fvi_search_kind *out);
const char *fvi_search_kind_name(fvi_search_kind kind);

/* An empty index.  NULL with a message in err on failure. */
fvi_search *fvi_search_create(fvi_search_kind kind, char *err, size_t errlen);
void fvi_search_destroy(fvi_search *s); /* NULL: no-op */
fvi_search_kind fvi_search_kind_of(const fvi_search *s);

/* Adds n vectors (n x FV_EMBED_DIM) under ids.  An id already present is
 * an error (-1), and nothing of the batch is added.  The first batch added
 * to an empty faiss-ivfpq index trains it. */
int fvi_search_add(fvi_search *s, size_t n, const int64_t *ids, const float *vecs, char *err,
                   size_t errlen);
/* 0 removed, 1 no such id, -1 error. */
int fvi_search_remove(fvi_search *s, int64_t id, char *err, size_t errlen);
int fvi_search_contains(const fvi_search *s, int64_t id);
size_t fvi_search_count(const fvi_search *s); /* live ids */
/* Order-independent checksum of the live ids (for drift checks). */
uint64_t fvi_search_checksum(const fvi_search *s);
/* Bytes held by the index structures (vectors, codes, ids, graph). */
size_t fvi_search_memory(const fvi_search *s);

/* Scan threads for the exact backends (default 1).  The scan of a gallery
 * of 32768 rows or more is split over this many threads (a pool the index
 * owns, started once it is that big); smaller ones use the caller alone.
 * Same answers whatever the count. */
void fvi_search_set_threads(fvi_search *s, int threads);

/* exact-int8 only (0 and nothing done for other backends): moves the
 * float32 rows, needed only to re-rank a query's few candidates, out of
 * memory into an unlinked file created in dir, so the index holds just the
 * int8 codes (about 4x less memory than exact).  Re-ranking then reads
 * those rows with pread (from the page cache while memory allows).  -1
 * with a message when the file cannot be created or written. */
int fvi_search_spill(fvi_search *s, const char *dir, char *err, size_t errlen);

/* The k nearest live vectors to q, nearest first (ties: smaller id).
 * hits has room for k; *nhits = min(k, count) for exact backends, possibly
 * fewer for approximate ones. */
int fvi_search_query(fvi_search *s, const float *q, size_t k, fvi_hit *hits, size_t *nhits,
                     char *err, size_t errlen);

/* Writes the index to path (atomically: path.tmp, then rename). */
int fvi_search_save(fvi_search *s, const char *path, char *err, size_t errlen);
/* Reads an index of this kind written by fvi_search_save.  NULL with a
 * message when missing, truncated, corrupt, or of another kind. */
fvi_search *fvi_search_load(fvi_search_kind kind, const char *path, char *err, size_t errlen);

/* Order-independent checksum step, shared with callers that checksum ids
 * from storage. */
uint64_t fvi_search_id_hash(int64_t id);

#endif
