/*
 * faiss_wrap.h: the few FAISS calls the search layer needs, as plain C.
 *
 * Debian's libfaiss-dev (1.7.3) ships the C API's headers but not its
 * library (libfaiss_c), and libfaiss itself only as a static C++ archive.
 * So this project compiles its own minimal C-compatible wrapper
 * (faiss_wrap.cpp, C++) over the C++ API: every entry point catches FAISS
 * exceptions and turns them into a -1/NULL return with the message in err.
 *
 * Every index is an IndexIDMap2 (ids are our face ids, and reconstruct by
 * id gives back the stored vector) around one of:
 *   FVSEARCH_FAISS_INDEX_FLAT   IndexFlatL2 (brute force; the baseline)
 *   FVSEARCH_FAISS_INDEX_HNSW   IndexHNSWFlat, M = 64, efConstruction 80, efSearch 256
 *   FVSEARCH_FAISS_INDEX_IVFPQ  IndexRefineFlat(IndexIVFPQ): coarse lists + 16-byte PQ
 *                    codes, re-ranked on the flat vectors (k_factor 8)
 * Not thread-safe for writes; concurrent searches are safe.
 */
#ifndef FVSEARCH_FAISS_WRAP_H
#define FVSEARCH_FAISS_WRAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fvsearch_faiss fvsearch_faiss;

/* 0 when this build has FAISS (faiss_wrap.cpp); -1 with the reason in err
 * when it was configured with FV_FAISS=OFF (faiss_none.c, whose other
 * entry points then fail the same way). */
int fvsearch_faiss_available(char *err, size_t errlen);

enum {
    FVSEARCH_FAISS_INDEX_FLAT = 0,
    FVSEARCH_FAISS_INDEX_HNSW = 1,
    FVSEARCH_FAISS_INDEX_IVFPQ = 2
};

/* New empty index of dimension dim.  IVFPQ is trained on the ntrain
 * vectors in train (ntrain >= 256 needed; the caller falls back to FLAT
 * below that). */
fvsearch_faiss *fvsearch_faiss_create(int kind, int dim, size_t ntrain, const float *train,
                                      char *err, size_t errlen);
void fvsearch_faiss_destroy(fvsearch_faiss *f);
int fvsearch_faiss_add(fvsearch_faiss *f, size_t n, const float *x, const int64_t *ids, char *err,
                       size_t errlen);
/* k nearest of one query: squared L2 distances and ids, -1 ids where fewer
 * than k exist. */
int fvsearch_faiss_search(fvsearch_faiss *f, const float *q, size_t k, float *d2, int64_t *ids,
                          char *err, size_t errlen);
/* Stored vector of id (exact for FLAT and HNSW; the refine store's copy for
 * IVFPQ).  -1 when absent. */
int fvsearch_faiss_reconstruct(const fvsearch_faiss *f, int64_t id, float *out);
size_t fvsearch_faiss_count(const fvsearch_faiss *f);
/* Copies the ids held (fvsearch_faiss_count of them) into out. */
void fvsearch_faiss_ids(const fvsearch_faiss *f, int64_t *out);
/* Bytes held by vectors, codes, graph links and id maps (an estimate from
 * the structures' sizes). */
size_t fvsearch_faiss_memory(const fvsearch_faiss *f);
int fvsearch_faiss_kind(const fvsearch_faiss *f);
int fvsearch_faiss_write(const fvsearch_faiss *f, const char *path, char *err, size_t errlen);
/* Reads an index written by fvsearch_faiss_write; NULL with a message if the file
 * is missing, corrupt, or not an IDMap2 of the expected kind. */
fvsearch_faiss *fvsearch_faiss_read(const char *path, int kind, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
