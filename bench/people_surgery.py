#!/usr/bin/env python3
"""What naming, splitting and merging cost at scale (issue 19 part 3).

For each database (SQLite file; PostgreSQL when FACEVERIFY_PG_URL is set),
two faceverifyd processes A and B on one database, B on the default
request sync.  N unassigned faces (random unit embeddings, POST /faces)
are stored through A, and B's index is loaded.  Then, timed:

  assign   POST /faces/assign of all N faces into a new subject (one
           transaction: every row re-read, moved and logged for the index);
  b_first  B's first identify after it: B applies N relabel rows of the
           change log before answering (no vector is re-added);
  split    half of them into a second subject;
  merge    POST /subjects/{id}/merge of that half back;
  b_steady B's identify once current (the median of 20), for comparison.

Each is run once per database (a one-off operation, not a loop); the
machine is shared, so read the numbers as orders of magnitude.  Never part
of the test suite.

  FACEVERIFY_PG_URL=... .venv/bin/python bench/people_surgery.py [-n 10000] [--pg-n 2000]
Writes bench/results/people_surgery.json.
"""
import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "py"))
sys.path.insert(0, str(REPO / "bench"))
import fvserver  # noqa: E402
from machine import machine, write_result  # noqa: E402

API = "/api/v1"


def unit(rnd):
    v = [rnd.gauss(0, 1) for _ in range(128)]
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


def post(s, srv, key, path, body, status=200):
    r = s.post(srv.url(API + path), json=body, headers={"X-API-Key": key}, timeout=600)
    if r.status_code != status:
        raise SystemExit(f"{path}: {r.status_code} {r.text[:300]}")
    return r.json()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(backend, n, tmp):
    if backend == "sqlite":
        url = f"sqlite://{tmp}/bench.db"
    else:
        fvserver.reset_pg(fvserver.PG_URL)
        url = fvserver.PG_URL
    fvserver.daemon_cmd("migrate", db_url=url)
    key = fvserver.create_collection(url, "bench")
    a, b = fvserver.Server(url), fvserver.Server(url)
    rnd = random.Random(19)
    vecs = [unit(rnd) for _ in range(n)]
    try:
        with requests.Session() as s:
            t0 = time.perf_counter()
            ids = [post(s, a, key, "/faces", {"embedding": v}, 201)["faces"][0]["face_id"]
                   for v in vecs]
            add_s = time.perf_counter() - t0

            def who(v):
                res = post(s, b, key, "/identify/embeddings",
                           {"embedding": v, "threshold": 0.3, "k": 1})["results"][0]
                return res["match"]["id"] if res["match"] else None

            if who(vecs[0]) is not None:
                raise SystemExit("an unassigned face was matched")
            assign_s, r = timed(lambda: post(s, a, key, "/faces/assign",
                                             {"face_ids": ids, "subject_name": "all"}))
            sid = r["subject_id"]
            b_first_s, got = timed(lambda: who(vecs[-1]))
            if got != sid:
                raise SystemExit(f"B answered {got}, not {sid}")
            half = ids[: n // 2]
            split_s, r = timed(lambda: post(s, a, key, "/faces/assign",
                                            {"face_ids": half, "subject_name": "half"}))
            half_id = r["subject_id"]
            b_split_s, got = timed(lambda: who(vecs[0]))
            if got != half_id:
                raise SystemExit(f"B answered {got} after the split, not {half_id}")
            merge_s, r = timed(lambda: post(s, a, key, f"/subjects/{sid}/merge",
                                            {"from_subject_id": half_id}))
            if r["moved"] != len(half):
                raise SystemExit(f"merge moved {r['moved']}")
            b_merge_s, got = timed(lambda: who(vecs[0]))
            if got != sid:
                raise SystemExit(f"B answered {got} after the merge, not {sid}")
            steady = [timed(lambda: who(vecs[i]))[0] for i in range(20)]
    finally:
        a.stop()
        b.stop()
    row = {"faces": n,
           "add_unassigned_per_face_ms": round(add_s / n * 1e3, 3),
           "assign_all_s": round(assign_s, 3),
           "b_first_identify_after_assign_s": round(b_first_s, 3),
           "split_half_s": round(split_s, 3),
           "b_first_identify_after_split_s": round(b_split_s, 3),
           "merge_half_back_s": round(merge_s, 3),
           "b_first_identify_after_merge_s": round(b_merge_s, 3),
           "b_steady_identify_median_ms": round(statistics.median(steady) * 1e3, 3)}
    print(backend, row, flush=True)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--pg-n", type=int, default=None,
                    help="faces on PostgreSQL (default: -n; each stored face costs a round trip)")
    a = ap.parse_args()
    backends = ["sqlite"] + (["postgres"] if os.environ.get("FACEVERIFY_PG_URL") else [])
    res = {"machine": machine(), "results": {}}
    for backend in backends:
        n = a.pg_n if backend == "postgres" and a.pg_n else a.n
        res["results"][backend] = run(backend, n, Path(tempfile.mkdtemp()))
    print("wrote", write_result("people_surgery.json", res))


if __name__ == "__main__":
    main()
