#!/usr/bin/env python3
"""Corrections ("this face is not this person", POST /api/v1/subjects/{id}/not)
on LFW look-alikes: the specific false match goes, other photos of the same
look-alike mostly go with it, and the subject's own photos still match.

Protocol (seeded): people with 2+ detected photos (at most --max-per-person
each) are split in two halves.  Gallery half: each person is a subject
enrolled with their first photo; their other photos are genuine probes.
Other half: never enrolled; every photo is an impostor probe.  A live
faceverifyd (temporary SQLite, embeddings sent as JSON) identifies every
probe; each impostor probe b of person B that it matches to a subject A is
a look-alike false match.  For each such event, one at a time:

  POST /subjects/A/not {"embedding": b}; identify b, B's other photos and
  A's genuine probes; DELETE the correction.

Reported per decision (the open-set default and the k-NN vote at the
model's threshold; at most --max-events false matches each, a seeded
sample): how often the specific false match is gone, how many of
B's other photos that matched A before no longer do (and how many of them
were matched elsewhere instead), and the FNIR of A's genuine probes before
and after (a miss: not matched to A).  Next to it, the same events scored
offline for other rules (radius at FMR 1e-4/1e-3/1e-2, with and without
"nearer to the correction than to S's templates") on the nearest-template
distances, which is why the server uses its rule (src/server/corrections.h).

  .venv/bin/python bench/corrections_lfw.py --emb lfw_clean.csv

The embedding file is `faceverify eval-pairs --dump-embeddings` over every
LFW image (--pick center; docs/operating-points.md, "Reproduce", makes it): path,status,source,e0..e127.  Never part of the
test suite.  Writes bench/results/corrections_lfw.json.
"""
import argparse
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "py"))
from machine import REPO, machine, write_result  # noqa: E402

os.environ.setdefault("FACEVERIFY_BUILD", str(REPO / "build"))
import fvserver  # noqa: E402

FMR_TABLE = REPO / "src" / "decide" / "fmr_table.h"
BATCH = 64  # identify/embeddings takes up to 64 queries


def load(path):
    """{person: [(file, embedding), ...]} of the detected faces."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split(",")
            if len(parts) < 131 or parts[1] != "ok":
                continue
            out.setdefault(parts[0].split("/")[0], []).append(
                (parts[0], np.array(parts[3:131], dtype=np.float32)))
    for v in out.values():
        v.sort(key=lambda x: x[0])
    return out


def fmr_radius(fmr):
    """The calibrated threshold at fmr for pair quality 1 (the best bin of
    fmr_table.h), as fvs_correction_radius takes it."""
    text = FMR_TABLE.read_text()
    step = float(re.search(r"FVI_FMR_STEP ([0-9.]+)", text).group(1))
    rows = re.findall(r"\{([0-9.]+)f, \{([^}]*)\}\}", text)
    last = [float(x.strip().rstrip("f")) for x in rows[-1][1].split(",") if x.strip()]
    return last[int(round(-np.log10(fmr) / step))]


class Api:
    def __init__(self, srv, key):
        self.srv, self.key = srv, key

    def call(self, method, path, status, **kw):
        r = self.srv.request(method, path, self.key, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text[:300])
        return r.json()

    def identify(self, embs, params):
        """The matched subject id (or None) of each embedding."""
        out = []
        for i in range(0, len(embs), BATCH):
            body = dict(params, embeddings=[e.tolist() for e in embs[i:i + BATCH]])
            res = self.call("POST", "/api/v1/identify/embeddings", 200, json=body)["results"]
            out += [r["match"]["id"] if r["match"] else None for r in res]
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--emb", required=True,
                    help="every LFW image's embedding (eval-pairs --dump-embeddings)")
    ap.add_argument("--max-per-person", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-events", type=int, default=300,
                    help="false matches corrected per decision (a seeded sample of them)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t0 = time.time()
    ppl = {p: v[:a.max_per_person] for p, v in load(a.emb).items() if len(v) >= 2}
    names = sorted(ppl)
    random.Random(a.seed).shuffle(names)
    gallery, outsiders = names[: len(names) // 2], names[len(names) // 2:]

    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite://{tmp}/bench.db"
    fvserver.daemon_cmd("migrate", db_url=url)
    api = Api(fvserver.Server(url), fvserver.create_collection(url, "corrections"))
    try:
        sid, tmpl = {}, {}
        for p in gallery:
            sid[p] = api.call("POST", "/api/v1/subjects", 201, json={"name": p})["id"]
            api.call("POST", f"/api/v1/subjects/{sid[p]}/faces", 201,
                     json={"embedding": ppl[p][0][1].tolist()})
            tmpl[sid[p]] = ppl[p][0][1]
        genuine = {sid[p]: [e for _, e in ppl[p][1:]] for p in gallery}
        modes = {"open_set": {}, "knn_vote": {"k": 3}}
        results = {}
        for mode, params in modes.items():
            results[mode] = run_mode(api, params, ppl, outsiders, genuine, tmpl, a.max_events,
                                     a.seed)
            print(mode, results[mode]["events"], "events", file=sys.stderr)
        cost = latency(api, ppl, outsiders, sorted(sid.values()), a.seed)
    finally:
        api.srv.stop()
    obj = {
        "what": "corrections (POST /api/v1/subjects/{id}/not) on LFW look-alike false matches",
        "data": {"embeddings": Path(a.emb).name, "people_2plus": len(names), "gallery_subjects": len(gallery),
                 "genuine_probes": sum(len(v) for v in genuine.values()),
                 "outsider_people": len(outsiders),
                 "impostor_probes": sum(len(ppl[p]) for p in outsiders),
                 "max_per_person": a.max_per_person, "seed": a.seed},
        "rule": {"server": "excluded when d(p, c) <= radius and d(p, c) < d(p, S)",
                 "radius_fmr": 1e-3, "radius": fmr_radius(1e-3)},
        "results": results,
        "identify_latency_ms": cost,
        "seconds": round(time.time() - t0, 1),
        "machine": machine(),
    }
    print(__import__("json").dumps(obj["results"], indent=1))
    write_result("corrections_lfw.json", obj, a.out)


def run_mode(api, params, ppl, outsiders, genuine, tmpl, max_events, seed):
    imp = [(p, i, e) for p in outsiders for i, (_, e) in enumerate(ppl[p])]
    match = api.identify([e for _, _, e in imp], params)
    events = [(p, i, m) for (p, i, _), m in zip(imp, match) if m is not None]
    found = len(events)
    if len(events) > max_events:
        events = random.Random(seed).sample(events, max_events)
    base_of = {(p, i): m for (p, i, _), m in zip(imp, match)}
    gen_base = {}
    for s, probes in genuine.items():
        gen_base[s] = api.identify(probes, params) if probes else []
    total = {"impostor_probes": len(imp), "false_matches": found,
             "false_match_rate": round(found / len(imp), 4) if imp else None,
             "events": len(events), "specific_removed": 0, "specific_rematched_elsewhere": 0,
             "b_other_photos": 0, "b_other_matched_to_a_before": 0,
             "b_other_matched_to_a_after": 0, "b_other_moved_to_another_subject": 0,
             "a_genuine_probes": 0, "a_genuine_missed_before": 0,
             "a_genuine_missed_after": 0, "events_with_a_genuine_loss": 0}
    offline = []  # per event: distances for the rule variants
    for p, i, a_id in events:
        b = ppl[p][i][1]
        others = [e for j, (_, e) in enumerate(ppl[p]) if j != i]
        cid = api.call("POST", f"/api/v1/subjects/{a_id}/not", 201,
                       json={"embedding": b.tolist()})["correction_id"]
        after = api.identify([b] + others + genuine[a_id], params)
        api.call("DELETE", f"/api/v1/subjects/{a_id}/not/{cid}", 200)
        total["specific_removed"] += after[0] != a_id
        total["specific_rematched_elsewhere"] += after[0] not in (None, a_id)
        ob = [base_of[(p, j)] for j in range(len(ppl[p])) if j != i]
        oa = after[1:1 + len(others)]
        total["b_other_photos"] += len(others)
        total["b_other_matched_to_a_before"] += sum(m == a_id for m in ob)
        total["b_other_matched_to_a_after"] += sum(m == a_id for m in oa)
        total["b_other_moved_to_another_subject"] += sum(
            x == a_id and y not in (None, a_id) for x, y in zip(ob, oa))
        gb, ga = gen_base[a_id], after[1 + len(others):]
        total["a_genuine_probes"] += len(gb)
        total["a_genuine_missed_before"] += sum(m != a_id for m in gb)
        total["a_genuine_missed_after"] += sum(m != a_id for m in ga)
        total["events_with_a_genuine_loss"] += sum(m != a_id for m in ga) > sum(
            m != a_id for m in gb)
        t = tmpl[a_id]
        offline.append({
            "b_other": [(float(np.linalg.norm(o - b)), float(np.linalg.norm(o - t)), x == a_id)
                        for o, x in zip(others, ob)],
            "a_genuine": [(float(np.linalg.norm(g - b)), float(np.linalg.norm(g - t)), x == a_id)
                          for g, x in zip(genuine[a_id], gb)]})
    t = total
    rate = lambda n, d: round(n / d, 4) if d else None  # noqa: E731
    t["specific_removed_rate"] = rate(t["specific_removed"], t["events"])
    t["b_other_removed_rate"] = rate(t["b_other_matched_to_a_before"] - t["b_other_matched_to_a_after"],
                                     t["b_other_matched_to_a_before"])
    t["a_genuine_fnir_before"] = rate(t["a_genuine_missed_before"], t["a_genuine_probes"])
    t["a_genuine_fnir_after"] = rate(t["a_genuine_missed_after"], t["a_genuine_probes"])
    if t["a_genuine_probes"]:
        t["a_genuine_fnir_rise"] = round(
            (t["a_genuine_missed_after"] - t["a_genuine_missed_before"]) / t["a_genuine_probes"], 4)
    t["rule_variants_offline"] = variants(offline)
    return t


def latency(api, ppl, outsiders, subjects, seed, rounds=7, per_round=30):
    """What reading the corrections per request costs: /identify/embeddings
    (one query, open set) with 0, 100 and 1,000 corrections in the
    collection, measured interleaved; medians of per-round medians."""
    rng = random.Random(seed)
    embs = [e for p in outsiders for _, e in ppl[p]]
    probes = [embs[rng.randrange(len(embs))] for _ in range(per_round)]
    made, times = [], {0: [], 100: [], 1000: []}

    def ensure(n):
        while len(made) < n:
            s = subjects[rng.randrange(len(subjects))]
            e = embs[rng.randrange(len(embs))]
            cid = api.call("POST", f"/api/v1/subjects/{s}/not", 201,
                           json={"embedding": e.tolist()})["correction_id"]
            made.append((s, cid))
        while len(made) > n:
            s, cid = made.pop()
            api.call("DELETE", f"/api/v1/subjects/{s}/not/{cid}", 200)

    for _ in range(rounds):
        for n in (0, 100, 1000):
            ensure(n)
            one = []
            for q in probes:
                t = time.perf_counter()
                api.call("POST", "/api/v1/identify/embeddings", 200, json={"embedding": q.tolist()})
                one.append((time.perf_counter() - t) * 1e3)
            times[n].append(float(np.median(one)))
    ensure(0)
    return {str(n): round(float(np.median(v)), 3) for n, v in times.items()} | {
        "rounds": rounds, "requests_per_round": per_round,
        "note": "median over rounds of the per-round median; the 0/100/1000 states interleaved"}


def variants(offline):
    """The same events scored for other exclusion rules, on distances: of
    B's other photos that matched A, the share a rule excludes; of A's
    genuine probes that matched A, the share it excludes (each a new miss)."""
    out = []
    for fmr in (1e-4, 1e-3, 1e-2):
        r = fmr_radius(fmr)
        for nearer in (False, True):
            def excl(dc, ds):
                return dc <= r and (not nearer or dc < ds)
            bo = [excl(dc, ds) for e in offline for dc, ds, m in e["b_other"] if m]
            ag = [excl(dc, ds) for e in offline for dc, ds, m in e["a_genuine"] if m]
            out.append({"radius_fmr": fmr, "radius": r, "nearer_than_subject": nearer,
                        "b_other_excluded": round(sum(bo) / len(bo), 4) if bo else None,
                        "b_other_n": len(bo),
                        "a_genuine_excluded": round(sum(ag) / len(ag), 4) if ag else None,
                        "a_genuine_n": len(ag)})
    return out


if __name__ == "__main__":
    main()
