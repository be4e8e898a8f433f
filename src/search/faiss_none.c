/*
 * faiss_none.c: faiss_wrap.h for a build configured with FV_FAISS=OFF.
 *
 * It lets the search library build with its exact and exact-int8 backends
 * alone: fvi_faiss_available, fvi_faiss_create and fvi_faiss_read fail with
 * one message, so fvi_search_create (and fvi_search_load) refuse a FAISS
 * backend up front, and the server answers a collection set to one with a
 * validation error that says why.  No fvi_faiss handle can exist in such a
 * build, so the functions taking one are never reached with a live handle.
 */
#include <stdio.h>

#include "faiss_wrap.h"

#define NOT_BUILT "not built with FAISS (configured with -DFV_FAISS=OFF)"

int fvi_faiss_available(char *err, size_t errlen) {
    if (err && errlen) snprintf(err, errlen, "%s", NOT_BUILT);
    return -1;
}

fvi_faiss *fvi_faiss_create(int kind, int dim, size_t ntrain, const float *train, char *err,
                            size_t errlen) {
    (void)kind, (void)dim, (void)ntrain, (void)train;
    fvi_faiss_available(err, errlen);
    return NULL;
}

fvi_faiss *fvi_faiss_read(const char *path, int kind, char *err, size_t errlen) {
    (void)path, (void)kind;
    fvi_faiss_available(err, errlen);
    return NULL;
}

void fvi_faiss_destroy(fvi_faiss *f) {
    (void)f;
}

int fvi_faiss_add(fvi_faiss *f, size_t n, const float *x, const int64_t *ids, char *err,
                  size_t errlen) {
    (void)f, (void)n, (void)x, (void)ids;
    return fvi_faiss_available(err, errlen);
}

int fvi_faiss_search(fvi_faiss *f, const float *q, size_t k, float *d2, int64_t *ids, char *err,
                     size_t errlen) {
    (void)f, (void)q, (void)k, (void)d2, (void)ids;
    return fvi_faiss_available(err, errlen);
}

int fvi_faiss_reconstruct(const fvi_faiss *f, int64_t id, float *out) {
    (void)f, (void)id, (void)out;
    return -1;
}

size_t fvi_faiss_count(const fvi_faiss *f) {
    (void)f;
    return 0;
}

void fvi_faiss_ids(const fvi_faiss *f, int64_t *out) {
    (void)f, (void)out;
}

size_t fvi_faiss_memory(const fvi_faiss *f) {
    (void)f;
    return 0;
}

int fvi_faiss_kind(const fvi_faiss *f) {
    (void)f;
    return -1;
}

int fvi_faiss_write(const fvi_faiss *f, const char *path, char *err, size_t errlen) {
    (void)f, (void)path;
    return fvi_faiss_available(err, errlen);
}
