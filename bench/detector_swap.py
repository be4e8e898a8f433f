#!/usr/bin/env python3
"""Does the calibration survive a change of detector?  (issue 17)

The FMR table (src/decide/fmr_table.h) was calibrated on embeddings of
chips aligned from MMOD's boxes.  The default detector is now MTCNN, whose
boxes differ (the shape predictor starts from them), so the chips and the
embeddings move a little.  This compares two `faceverify eval-lfw
--dump-embeddings` runs on the same images (View 2's 7,701), one per
detector:

  - per-image drift: the distance between an image's two embeddings;
  - measured FMR at the table's thresholds (quality bin >= 0.5, where most
    LFW pairs fall) for 1e-2, 1e-3 and 1e-4, over every cross-identity pair
    of those images (29.6 million; View 2's people, never used to
    calibrate);
  - the View 2 protocol's accuracy from each run's --json output.

  faceverify eval-lfw --root LFW --pick center --json --jobs 2 --threads 1 \\
      --detector mtcnn --dump-embeddings mtcnn_emb.csv > mtcnn.json
  (and --detector mmod)
  python bench/detector_swap.py --a mmod=mmod_emb.csv,mmod.json \\
      --b mtcnn=mtcnn_emb.csv,mtcnn.json --out bench/results/detector_swap.json \\
      --quality mmod_q.csv,mtcnn_q.csv --quality-eval mmod_v1.json,mtcnn_v1.json

--quality: the face quality of each run on View 1's test images
(`faceverify eval-pairs --pairs pairsDevTest.txt --pick center --detector D
--json --dump-quality D_q.csv > D_v1.json`): the share under the
enrolment gate's default (0.3) and 0.5, and the pitch estimate, which
depends on where the shape predictor puts the landmarks from each box.
"""
import argparse
import csv
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import machine, write_result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = os.path.join(HERE, "..", "src", "decide", "fmr_table.h")


def table_thresholds(qmin=0.5):
    """FMR 1e-2, 1e-3, 1e-4 thresholds of the table's bin starting at qmin."""
    text = open(TABLE).read()
    step = float(re.search(r"FVI_FMR_STEP ([0-9.]+)", text).group(1))
    for m in re.finditer(r"\{([0-9.]+)f, \{([^}]*)\}\}", text):
        if abs(float(m.group(1)) - qmin) < 1e-6:
            row = [float(v.strip().rstrip("f")) for v in m.group(2).split(",") if v.strip()]
            return {f"{10 ** -e:g}": row[int(round(e / step))] for e in (2, 3, 4)}
    raise SystemExit(f"no bin {qmin} in {TABLE}")


def load(path):
    out = {}
    with open(path) as f:
        for r in csv.reader(f):
            if len(r) >= 131 and r[1] == "ok":
                out[r[0]] = np.array(r[3:131], dtype=np.float64)
    return out


def fmr_at(E, ids, thresholds):
    sq = (E * E).sum(1)
    hits = {k: 0 for k in thresholds}
    total = 0
    for i0 in range(0, len(E), 1000):
        D = np.sqrt(np.maximum(sq[i0:i0 + 1000, None] + sq[None, :] - 2 * E[i0:i0 + 1000] @ E.T, 0))
        imp = ids[i0:i0 + 1000, None] != ids[None, :]
        total += int(imp.sum())
        for k, t in thresholds.items():
            hits[k] += int(((D <= t) & imp).sum())
    return {k: hits[k] / total for k in thresholds}, total // 2


def quality(args, names):
    def rows(p):
        with open(p) as f:
            return {r["path"]: r for r in csv.DictReader(f) if r["status"] == "ok"}
    qa, qb = (rows(p) for p in args.quality.split(","))
    keys = sorted(set(qa) & set(qb))
    out = {"images_both": len(keys)}
    evals = args.quality_eval.split(",") if args.quality_eval else [None, None]
    for name, q, ev in zip(names, (qa, qb), evals):
        sc = np.array([float(q[k]["score"]) for k in keys])
        pitch = np.abs(np.array([float(q[k]["pitch"]) for k in keys]))
        o = {"score_median": float(np.median(sc)), "under_0.3": float((sc < 0.3).mean()),
             "under_0.5": float((sc < 0.5).mean()), "abs_pitch_median": float(np.median(pitch)),
             "abs_pitch_over_30": float((pitch > 30).mean())}
        if ev:
            j = json.load(open(ev))
            o["view1_test_accuracy"] = j.get("accuracy")
            o["view1_test_roc_auc"] = j.get("roc_auc")
        out[name] = o
    d = np.abs(np.array([float(qa[k]["pitch"]) - float(qb[k]["pitch"]) for k in keys]))
    out["pitch_difference"] = {"median": float(np.median(d)), "p90": float(np.percentile(d, 90)),
                               "p99": float(np.percentile(d, 99))}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="NAME=EMB.csv,EVAL.json (the reference)")
    ap.add_argument("--b", required=True, help="NAME=EMB.csv,EVAL.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quality", help="A_q.csv,B_q.csv (--dump-quality, View 1 test)")
    ap.add_argument("--quality-eval", help="A.json,B.json (those runs' eval-pairs --json)")
    args = ap.parse_args()
    runs = []
    for spec in (args.a, args.b):
        name, files = spec.split("=", 1)
        emb, ev = files.split(",")
        runs.append((name, load(emb), json.load(open(ev))))
    keys = sorted(set(runs[0][1]) & set(runs[1][1]))
    ids = np.array([k.split("/")[0] for k in keys])
    drift = np.array([np.linalg.norm(runs[0][1][k] - runs[1][1][k]) for k in keys])
    th = table_thresholds()
    res = {"images_both": len(keys), "thresholds_bin_q0.5": th,
           "drift": {"median": float(np.median(drift)), "p90": float(np.percentile(drift, 90)),
                     "p99": float(np.percentile(drift, 99)), "max": float(drift.max())},
           "runs": {}}
    for name, emb, ev in runs:
        fmr, pairs = fmr_at(np.stack([emb[k] for k in keys]), ids, th)
        res["runs"][name] = {
            "detector": ev.get("detector"), "view2_mean_accuracy": ev.get("mean_accuracy"),
            "view2_std": ev.get("std_accuracy"), "roc_auc": ev.get("roc_auc"),
            "tar_at_far": ev.get("tar_at_far"), "images_without_face": ev["failures"]["images"],
            "ms_per_image": ev.get("ms_per_image"),
            "measured_fmr_at_table_thresholds": fmr, "impostor_pairs": pairs}
    if args.quality:
        res["quality_view1_test"] = quality(args, [r[0] for r in runs])
    res["machine"] = machine()
    # the inputs are scratch files of the runs above: their names, not this
    # machine's folders
    res["command"] = "python bench/detector_swap.py " + re.sub(r"(?<![^ ,=])/[^ ,=]*/", "",
                                                               " ".join(sys.argv[1:]))
    write_result("detector_swap.json", res, args.out)
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
