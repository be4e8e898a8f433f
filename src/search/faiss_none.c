/*
 * faiss_none.c: faiss_wrap.h for a build configured with FV_FAISS=OFF.
 *
 * It lets the search library build with its exact and exact-int8 backends
 * alone: fvsearch_faiss_available, fvsearch_faiss_create and fvsearch_faiss_read fail with
 * one message, so fvsearch_create (and fvsearch_load) refuse a FAISS
 * backend up front, and the server answers a collection set to one with a
 * validation error that says why.  No fvsearch_faiss handle can exist in such a
 * build, so the functions taking one are never reached with a live handle.
 */
#include <stdio.h>

#include "search/faiss_wrap.h"

#define NOT_BUILT "not built with FAISS (configured with -DFV_FAISS=OFF)"

int fvsearch_faiss_available(char *err, size_t errlen) {
    if (err && errlen) snprintf(err, errlen, "%s", NOT_BUILT);
    return -1;
}

fvsearch_faiss *fvsearch_faiss_create(int kind, int dim, size_t ntrain, const float *train,
                                      char *err, size_t errlen) {
    (void)kind, (void)dim, (void)ntrain, (void)train;
    fvsearch_faiss_available(err, errlen);
    return NULL;
}

fvsearch_faiss *fvsearch_faiss_read(const char *path, int kind, char *err, size_t errlen) {
    (void)path, (void)kind;
    fvsearch_faiss_available(err, errlen);
    return NULL;
}

void fvsearch_faiss_destroy(fvsearch_faiss *f) {
    (void)f;
}

int fvsearch_faiss_add(fvsearch_faiss *f, size_t n, const float *x, const int64_t *ids, char *err,
                       size_t errlen) {
    (void)f, (void)n, (void)x, (void)ids;
    return fvsearch_faiss_available(err, errlen);
}

int fvsearch_faiss_search(fvsearch_faiss *f, const float *q, size_t k, float *d2, int64_t *ids,
                          char *err, size_t errlen) {
    (void)f, (void)q, (void)k, (void)d2, (void)ids;
    return fvsearch_faiss_available(err, errlen);
}

int fvsearch_faiss_reconstruct(const fvsearch_faiss *f, int64_t id, float *out) {
    (void)f, (void)id, (void)out;
    return -1;
}

size_t fvsearch_faiss_count(const fvsearch_faiss *f) {
    (void)f;
    return 0;
}

void fvsearch_faiss_ids(const fvsearch_faiss *f, int64_t *out) {
    (void)f, (void)out;
}

size_t fvsearch_faiss_memory(const fvsearch_faiss *f) {
    (void)f;
    return 0;
}

int fvsearch_faiss_kind(const fvsearch_faiss *f) {
    (void)f;
    return -1;
}

int fvsearch_faiss_write(const fvsearch_faiss *f, const char *path, char *err, size_t errlen) {
    (void)f, (void)path;
    return fvsearch_faiss_available(err, errlen);
}
