#!/usr/bin/env python3
"""Why HNSW misses its 1M target here: recall and latency of FAISS HNSW and
IVFPQ (faceverify's parameters) against efSearch / nprobe, on the same 1M
gallery as bench/search.py (real LFW embeddings padded to size) and on a
second padding drawn from a Gaussian fitted to the real embeddings ("face"
padding: synthetic faces that sit among the real ones).

An analysis tool, not a benchmark of faceverify: it uses PyPI's faiss-cpu
(AVX2 kernels; builds ~7x faster than Debian's libfaiss 1.7.3, which
faceverify links) so that 1M graphs can be built in minutes and swept.
Recall depends on the graph and parameters, not on the SIMD kernels; the
latencies are faiss-cpu's, one query at a time on one thread.

  python -m venv /tmp/fenv && /tmp/fenv/bin/pip install faiss-cpu numpy
  /tmp/fenv/bin/python bench/ann_padding.py --embeddings-csv EMB.csv \
      --index hnsw|ivfpq --pad unit|face [--size 1000000] --out X.json
"""
import argparse
import json
import os
import sys
import time

import faiss
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import search  # noqa: E402  (bench/search.py: the same gallery and queries)

# faceverify's parameters (src/search/faiss_wrap.cpp; M was 32 before the 1M runs).
HNSW_M, HNSW_EF_CONSTRUCTION = 64, 80
IVF_NLIST, PQ_M, PQ_BITS, IVF_TRAIN = 1024, 16, 8, 100000


def split(path, nq):
    """Queries and gallery exactly as bench/search.py."""
    queries, gallery = search.order(search.read_csv(path), nq)
    return np.array(queries, np.float32), np.array(gallery, np.float32)


def pad(real, n, kind, seed):
    rng = np.random.default_rng(seed)
    m = n - len(real)
    if kind == "unit":  # as bench/search_bench.c: isotropic unit vectors
        p = rng.standard_normal((m, real.shape[1])).astype(np.float32)
        p /= np.linalg.norm(p, axis=1, keepdims=True)
    else:
        p = rng.multivariate_normal(real.mean(0), np.cov(real.T), size=m,
                                    method="cholesky").astype(np.float32)
    return np.vstack([real, p])


def sweep(index, queries, truth, settings, apply):
    out = []
    for s in settings:
        apply(s)
        lat, hit = [], 0
        for i in range(len(queries)):
            t = time.perf_counter()
            _, ids = index.search(queries[i:i + 1], 10)
            lat.append(time.perf_counter() - t)
            hit += int(ids[0, 0] == truth[i, 0])
        row = dict(s, recall_at_1=hit / len(queries), query_ms_median=1e3 * float(np.median(lat)))
        print(row, flush=True)
        out.append(row)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--embeddings-csv", required=True)
    ap.add_argument("--index", choices=["hnsw", "ivfpq"], required=True)
    ap.add_argument("--pad", choices=["unit", "face"], required=True)
    ap.add_argument("--size", type=int, default=1000000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hnsw-m", type=int, default=HNSW_M)
    ap.add_argument("--ef-construction", type=int, default=HNSW_EF_CONSTRUCTION)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    queries, real = split(a.embeddings_csv, a.queries)
    x = pad(real, a.size, a.pad, a.seed)
    faiss.omp_set_num_threads(2)
    flat = faiss.IndexFlatL2(x.shape[1])
    flat.add(x)
    _, truth = flat.search(queries, 1)
    t = time.time()
    if a.index == "hnsw":
        index = faiss.IndexHNSWFlat(x.shape[1], a.hnsw_m)
        index.hnsw.efConstruction = a.ef_construction
        index.add(x)
    else:
        ivf = faiss.IndexIVFPQ(faiss.IndexFlatL2(x.shape[1]), x.shape[1], IVF_NLIST, PQ_M, PQ_BITS)
        ivf.train(x[:IVF_TRAIN])
        index = faiss.IndexRefineFlat(ivf)
        index.add(x)
    build = time.time() - t
    faiss.omp_set_num_threads(1)
    if a.index == "hnsw":
        settings = [{"ef_search": e} for e in (64, 128, 256, 512, 1024, 2048, 4096)]
        rows = sweep(index, queries, truth, settings,
                     lambda s: setattr(index.hnsw, "efSearch", s["ef_search"]))
    else:
        settings = [{"nprobe": p, "k_factor": k} for p in (32, 64, 128) for k in (8, 32)]

        def apply(s):
            ivf.nprobe = s["nprobe"]
            index.k_factor = s["k_factor"]
        rows = sweep(index, queries, truth, settings, apply)
    res = {"faiss": "faiss-cpu " + faiss.__version__ + " (PyPI, " +
           faiss.get_compile_options().strip() + ")", "index": a.index, "pad": a.pad,
           "templates": a.size, "real": len(real), "queries": len(queries),
           "build_s": round(build, 1), "build_threads": 2, "query_threads": 1, "sweep": rows}
    if a.index == "hnsw":
        res.update(hnsw_m=a.hnsw_m, ef_construction=a.ef_construction)
    json.dump(res, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
