/*
 * faiss_wrap.cpp: the C-compatible wrapper over FAISS's C++ API described
 * in faiss_wrap.h.  Kept minimal on purpose: the search logic (ids,
 * tombstones, exact re-ranking) lives in search.c; this file only
 * translates calls and exceptions.
 */
#include "search/faiss_wrap.h"

#include <cstdio>
#include <exception>
#include <memory>

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexRefine.h>
#include <faiss/index_io.h>

struct fvsearch_faiss {
    int kind;
    faiss::IndexIDMap2 *map; /* owns its inner index (own_fields) */
};

/* HNSW: M links per node, efConstruction and efSearch.  M was 32 until the
 * 1M benchmark: there recall@1 fell to 0.635 (docs/scaling.md), and no
 * efSearch lifted it past 0.83, because the graph did not reach every part
 * of a small cluster of real faces among far-away padding.  With M = 64
 * the same 1M gallery gives recall@1 1.000 from efSearch 128 (PyPI
 * faiss-cpu, bench/ann_padding.py), for 256 more bytes of links per
 * template and a ~1.6x longer build.  efSearch 256 is the margin found at
 * 100k (the sweep in docs/scaling.md).  The build is the slow part on
 * Debian's FAISS, which lacks SIMD distance kernels.  A query for more
 * than efSearch neighbours widens it to k (FAISS does), so faceverifyd's
 * 256-neighbour searches explore at least 256.  Saved indexes keep the M
 * they were built with until rebuilt. */
enum { HNSW_M = 64, HNSW_EF_CONSTRUCTION = 80, HNSW_EF_SEARCH = 256 };

static void set_err(char *err, size_t errlen, const char *what) {
    if (err && errlen) std::snprintf(err, errlen, "faiss: %s", what);
}

static faiss::Index *make_inner(int kind, int dim, size_t ntrain, const float *train) {
    switch (kind) {
    case FVSEARCH_FAISS_INDEX_FLAT:
        return new faiss::IndexFlatL2(dim);
    case FVSEARCH_FAISS_INDEX_HNSW: {
        auto *h = new faiss::IndexHNSWFlat(dim, HNSW_M);
        h->hnsw.efConstruction = HNSW_EF_CONSTRUCTION;
        h->hnsw.efSearch = HNSW_EF_SEARCH;
        return h;
    }
    case FVSEARCH_FAISS_INDEX_IVFPQ: {
        /* nlist ~ 4 sqrt(n), at least 39 training points per list; PQ with
         * 8-bit codes needs 256 points per sub-quantiser. */
        size_t nlist = 1;
        while (nlist * nlist < 16 * ntrain && nlist * 2 * 39 <= ntrain && nlist < 1024) nlist *= 2;
        /* k-means cost grows with the sample: 100k points train 1024 lists
         * and 16 x 256 PQ centroids well. */
        if (ntrain > 100000) ntrain = 100000;
        auto *quant = new faiss::IndexFlatL2(dim);
        /* 8-bit codes want 256 x 39 training points; smaller sets get
         * smaller codebooks rather than a poorly trained one. */
        size_t nbits = ntrain >= 9984 ? 8 : ntrain >= 2496 ? 6 : 4;
        auto *pq = new faiss::IndexIVFPQ(quant, dim, nlist, 16, nbits);
        pq->own_fields = true;
        pq->nprobe = nlist < 32 ? nlist : 32;
        pq->train((faiss::Index::idx_t)ntrain, train);
        auto *refine = new faiss::IndexRefineFlat(pq);
        refine->own_fields = true;
        refine->k_factor = 8;
        return refine;
    }
    default:
        return nullptr;
    }
}

extern "C" int fvsearch_faiss_available(char *, size_t) {
    return 0;
}

extern "C" fvsearch_faiss *fvsearch_faiss_create(int kind, int dim, size_t ntrain, const float *train,
                                       char *err, size_t errlen) {
    try {
        std::unique_ptr<faiss::Index> inner(make_inner(kind, dim, ntrain, train));
        if (!inner) {
            set_err(err, errlen, "unknown index kind");
            return nullptr;
        }
        auto *map = new faiss::IndexIDMap2(inner.get());
        inner.release();
        map->own_fields = true;
        return new fvsearch_faiss{kind, map};
    } catch (const std::exception &e) {
        set_err(err, errlen, e.what());
        return nullptr;
    }
}

extern "C" void fvsearch_faiss_destroy(fvsearch_faiss *f) {
    if (!f) return;
    delete f->map;
    delete f;
}

extern "C" int fvsearch_faiss_add(fvsearch_faiss *f, size_t n, const float *x, const int64_t *ids, char *err,
                             size_t errlen) {
    try {
        f->map->add_with_ids((faiss::Index::idx_t)n, x,
                             reinterpret_cast<const faiss::Index::idx_t *>(ids));
        return 0;
    } catch (const std::exception &e) {
        set_err(err, errlen, e.what());
        return -1;
    }
}

extern "C" int fvsearch_faiss_search(fvsearch_faiss *f, const float *q, size_t k, float *d2, int64_t *ids,
                                char *err, size_t errlen) {
    try {
        f->map->search(1, q, (faiss::Index::idx_t)k, d2,
                       reinterpret_cast<faiss::Index::idx_t *>(ids));
        return 0;
    } catch (const std::exception &e) {
        set_err(err, errlen, e.what());
        return -1;
    }
}

extern "C" int fvsearch_faiss_reconstruct(const fvsearch_faiss *f, int64_t id, float *out) {
    try {
        f->map->reconstruct((faiss::Index::idx_t)id, out);
        return 0;
    } catch (const std::exception &) {
        return -1;
    }
}

extern "C" size_t fvsearch_faiss_count(const fvsearch_faiss *f) {
    return (size_t)f->map->ntotal;
}

extern "C" void fvsearch_faiss_ids(const fvsearch_faiss *f, int64_t *out) {
    for (size_t i = 0; i < f->map->id_map.size(); i++) out[i] = f->map->id_map[i];
}

extern "C" size_t fvsearch_faiss_memory(const fvsearch_faiss *f) {
    const faiss::Index *inner = f->map->index;
    size_t n = (size_t)f->map->ntotal, d = (size_t)f->map->d;
    /* id_map (8 B) + rev_map (an unordered_map node, ~40 B) per id. */
    size_t bytes = n * 48;
    if (auto *fl = dynamic_cast<const faiss::IndexFlat *>(inner)) bytes += fl->codes.size();
    if (auto *h = dynamic_cast<const faiss::IndexHNSW *>(inner)) {
        bytes += h->hnsw.neighbors.size() * sizeof(h->hnsw.neighbors[0]) +
                 h->hnsw.offsets.size() * sizeof(h->hnsw.offsets[0]) +
                 h->hnsw.levels.size() * sizeof(h->hnsw.levels[0]);
        if (auto *st = dynamic_cast<const faiss::IndexFlat *>(h->storage))
            bytes += st->codes.size();
    }
    if (auto *r = dynamic_cast<const faiss::IndexRefine *>(inner)) {
        if (auto *st = dynamic_cast<const faiss::IndexFlat *>(r->refine_index))
            bytes += st->codes.size();
        if (auto *ivf = dynamic_cast<const faiss::IndexIVFPQ *>(r->base_index))
            bytes += n * (ivf->code_size + sizeof(faiss::Index::idx_t)) +
                     ivf->nlist * d * sizeof(float) + ivf->pq.centroids.size() * sizeof(float);
    }
    return bytes;
}

extern "C" int fvsearch_faiss_kind(const fvsearch_faiss *f) {
    return f->kind;
}

extern "C" int fvsearch_faiss_write(const fvsearch_faiss *f, const char *path, char *err, size_t errlen) {
    try {
        faiss::write_index(f->map, path);
        return 0;
    } catch (const std::exception &e) {
        set_err(err, errlen, e.what());
        return -1;
    }
}

extern "C" fvsearch_faiss *fvsearch_faiss_read(const char *path, int kind, char *err, size_t errlen) {
    try {
        std::unique_ptr<faiss::Index> idx(faiss::read_index(path));
        auto *map = dynamic_cast<faiss::IndexIDMap2 *>(idx.get());
        if (!map) {
            set_err(err, errlen, "not an IDMap2 index");
            return nullptr;
        }
        faiss::Index *inner = map->index;
        bool ok = (kind == FVSEARCH_FAISS_INDEX_FLAT && dynamic_cast<faiss::IndexFlat *>(inner)) ||
                  (kind == FVSEARCH_FAISS_INDEX_HNSW && dynamic_cast<faiss::IndexHNSW *>(inner)) ||
                  (kind == FVSEARCH_FAISS_INDEX_IVFPQ && (dynamic_cast<faiss::IndexRefine *>(inner) ||
                                               dynamic_cast<faiss::IndexFlat *>(inner)));
        if (!ok) {
            set_err(err, errlen, "index file holds another kind of index");
            return nullptr;
        }
        if (auto *h = dynamic_cast<faiss::IndexHNSW *>(inner)) h->hnsw.efSearch = HNSW_EF_SEARCH;
        /* An IVFPQ index too small to train is stored flat. */
        int actual = dynamic_cast<faiss::IndexFlat *>(inner) ? FVSEARCH_FAISS_INDEX_FLAT : kind;
        idx.release();
        return new fvsearch_faiss{actual, map};
    } catch (const std::exception &e) {
        set_err(err, errlen, e.what());
        return nullptr;
    }
}
