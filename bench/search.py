#!/usr/bin/env python3
"""1:N search scaling: exact float32, exact int8 and FAISS (flat, HNSW,
IVFPQ) on galleries of 1k..1M templates.  Writes bench/results/search.json.

Real LFW embeddings come first in each gallery and are padded with
synthetic random unit vectors up to the size.  Queries are second photos of
people whose first photo is in the gallery, so the true neighbour is a
real face.  Embeddings are read from a CSV (path,status,source,128 floats:
`faceverify eval-pairs --dump-embeddings` writes this) or computed with
`search_bench embed` (one process, Haar detector) and cached under a tmp
dir, never in the repository.

  nice -n 10 .venv/bin/python bench/search.py --embeddings-csv FILE \
      [--sizes 1000,10000,100000,1000000] [--queries 200]
"""
import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.environ.get("FACEVERIFY_BUILD", os.path.join(ROOT, "build"))
DATA = os.environ.get("FACEVERIFY_DATA", os.path.join(ROOT, "..", "shared", "data"))
BACKENDS = "exact,exact-int8,faiss-flat,faiss-hnsw,faiss-ivfpq"


def machine(threads):
    cpu = platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(),
            "blas": "OpenBLAS, 1 thread per sgemv (exact: one sgemv per 2048-row block)",
            "faiss": "Debian libfaiss-dev 1.7.3 (static, OpenMP), own C wrapper",
            "threads": threads,
            "int8_kernel": "AVX2" if avx2() else "portable C",
            "load_average_at_start": os.getloadavg(),
            "note": "shared 2-core machine; run under nice -n 10"}


def avx2():
    try:
        return any(" avx2" in l for l in open("/proc/cpuinfo") if l.startswith("flags"))
    except OSError:
        return False


def read_csv(path):
    rows = []
    for line in open(path):
        parts = line.rstrip("\n").split(",")
        if len(parts) != 131 or parts[1] != "ok":
            continue
        rows.append((parts[0], [float(x) for x in parts[3:]]))
    return rows


def embed(tmp):
    lfw = os.path.join(DATA, "lfw")
    people = sorted(p for p in os.listdir(lfw) if os.path.isdir(os.path.join(lfw, p)))
    paths = []
    for p in people[:2000]:
        for f in sorted(os.listdir(os.path.join(lfw, p)))[:2]:
            paths.append(os.path.join(lfw, p, f))
    lst = os.path.join(tmp, "list.txt")
    out = os.path.join(tmp, "lfw.f32")
    open(lst, "w").write("\n".join(paths) + "\n")
    subprocess.run([os.path.join(BUILD, "bin", "search_bench"), "embed", lst, out], check=True)
    names = open(out + ".txt").read().split()
    data = open(out, "rb").read()
    return [(os.path.relpath(n, lfw), list(struct.unpack_from("128f", data, i * 512)))
            for i, n in enumerate(names)]


def order(rows, nq):
    """Queries first: the second photo of people with two or more."""
    seen, queries, gallery = {}, [], []
    for name, v in rows:
        person = name.split("/")[0]
        if person in seen and len(queries) < nq and seen[person] == 1:
            queries.append(v)
        else:
            gallery.append(v)
        seen[person] = seen.get(person, 0) + 1
    return queries, gallery


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--embeddings-csv")
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--backends", default=BACKENDS)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2,
                    help="scan threads of the exact backends and FAISS's OpenMP threads")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "search.json"))
    ap.add_argument("--append", action="store_true",
                    help="keep the results of other sizes already in --out")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="fv_search_bench_")
    rows = read_csv(a.embeddings_csv) if a.embeddings_csv else embed(tmp)
    queries, gallery = order(rows, a.queries)
    emb = os.path.join(tmp, "ordered.f32")
    with open(emb, "wb") as f:
        for v in queries + gallery:
            f.write(struct.pack("128f", *v))
    # Passive OpenMP waits: spinning workers steal the cores of a shared
    # machine (and each other's) during FAISS builds.
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS="1",
               OMP_WAIT_POLICY="PASSIVE")
    t0 = time.time()
    # exact-int8 keeps its float32 rows in a file there, as faceverifyd
    # does in its index dir.
    out = subprocess.run([os.path.join(BUILD, "bin", "search_bench"), "run", emb, a.sizes,
                          a.backends, str(len(queries)), str(a.threads), tmp], env=env,
                         check=True, capture_output=True, text=True)
    results = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    for r in results:
        r["omp_threads"] = a.threads
        r["scan_threads"] = a.threads
    base = {r["templates"]: r for r in results if r["backend"] == "exact"}
    for r in results:
        b = base.get(r["templates"])
        if b:
            r["speedup_vs_exact"] = round(b["query_ms_median"] / max(r["query_ms_median"], 1e-6), 2)
    if a.append and os.path.exists(a.out):
        done = {(r["templates"], r["backend"]) for r in results}
        old = json.load(open(a.out))["results"]
        results = sorted([r for r in old if (r["templates"], r["backend"]) not in done] + results,
                         key=lambda r: (r["templates"], BACKENDS.split(",").index(r["backend"])))
    doc = {"machine": machine(a.threads),
           "method": {"real_lfw_embeddings": len(rows), "queries": len(queries),
                      "padding": "synthetic random unit vectors",
                      "k": 10, "recall_at_1": "top-1 id equal to exact's top-1"},
           "results": results, "wall_s": round(time.time() - t0, 1),
           "command": " ".join(["nice -n 10 python bench/search.py"] + sys.argv[1:])}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    json.dump(doc, open(a.out, "w"), indent=1)
    for r in results:
        print("%8d %-12s build %8.2fs mem %7.1f MB  median %8.3f ms  p95 %8.3f ms  recall@1 %.3f"
              % (r["templates"], r["backend"], r["build_s"], r["memory_bytes"] / 1e6,
                 r["query_ms_median"], r["query_ms_p95"], r["recall_at_1"]))


if __name__ == "__main__":
    main()
