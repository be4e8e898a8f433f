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
 *   FVI_FAISS_FLAT   IndexFlatL2 (brute force; the baseline)
 *   FVI_FAISS_HNSW   IndexHNSWFlat, M = 64, efConstruction 80, efSearch 256
 *   FVI_FAISS_IVFPQ  IndexRefineFlat(IndexIVFPQ): coarse lists + 16-byte PQ
 *                    codes, re-ranked on the flat vectors (k_factor 8)
 * Not thread-safe for writes; concurrent searches are safe.
 */
#ifndef FVI_FAISS_WRAP_H
#define FVI_FAISS_WRAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fvi_faiss fvi_faiss;

/* 0 when this build has FAISS (faiss_wrap.cpp); -1 with the reason in err
 * when it was configured with FV_FAISS=OFF (faiss_none.c, whose other
 * entry points then fail the same way). */
int fvi_faiss_available(char *err, size_t errlen);

enum { FVI_FAISS_FLAT = 0, FVI_FAISS_HNSW = 1, FVI_FAISS_IVFPQ = 2 };

/* New empty index of dimension dim.  IVFPQ is trained on the ntrain
 * vectors in train (ntrain >= 256 needed; the caller falls back to FLAT
 * below that). */
fvi_faiss *fvi_faiss_create(int kind, int dim, size_t ntrain, const float *train, char *err,
                            size_t errlen);
void fvi_faiss_destroy(fvi_faiss *f);
int fvi_faiss_add(fvi_faiss *f, size_t n, const float *x, const int64_t *ids, char *err,
                  size_t errlen);
/* k nearest of one query: squared L2 distances and ids, -1 ids where fewer
 * than k exist. */
int fvi_faiss_search(fvi_faiss *f, const float *q, size_t k, float *d2, int64_t *ids, char *err,
                     size_t errlen);
/* Stored vector of id (exact for FLAT and HNSW; the refine store's copy for
 * IVFPQ).  -1 when absent. */
int fvi_faiss_reconstruct(const fvi_faiss *f, int64_t id, float *out);
size_t fvi_faiss_count(const fvi_faiss *f);
/* Copies the ids held (fvi_faiss_count of them) into out. */
void fvi_faiss_ids(const fvi_faiss *f, int64_t *out);
/* Bytes held by vectors, codes, graph links and id maps (an estimate from
 * the structures' sizes). */
size_t fvi_faiss_memory(const fvi_faiss *f);
int fvi_faiss_kind(const fvi_faiss *f);
int fvi_faiss_write(const fvi_faiss *f, const char *path, char *err, size_t errlen);
/* Reads an index written by fvi_faiss_write; NULL with a message if the file
 * is missing, corrupt, or not an IDMap2 of the expected kind. */
fvi_faiss *fvi_faiss_read(const char *path, int kind, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
