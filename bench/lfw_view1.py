#!/usr/bin/env python3
"""Choosing the flip setting on LFW View 1 only (never on View 2).

Reads the per-image embeddings written by
  faceverify eval-pairs --pairs pairsDevTrain.txt --flip-mode mean --dump-embeddings F
(and the same for pairsDevTest.txt), derives the unit-length variant
(FV_FLIP_UNIT = the mean rescaled to length 1) from the same vectors, and
for each variant reports on the training pairs the best threshold, its
accuracy, ROC AUC and TAR@FAR; then the test pairs at the training
threshold.  Writes bench/results/lfw_view1_flip.json.

  .venv/bin/python bench/lfw_view1.py --train-emb T.csv --test-emb S.csv
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lfw_metrics import best_threshold, roc_auc  # noqa: E402
from machine import DATA, RESULTS, machine  # noqa: E402


def load_emb(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        f = line.split(",")
        out[f[0]] = np.array([float(x) for x in f[3:]]) if len(f) > 3 else None
    return out


def pairs(file):
    out = []
    for line in Path(file).read_text().splitlines()[1:]:
        f = line.split("\t")
        if len(f) == 3:
            out.append(("%s/%s_%04d.jpg" % (f[0], f[0], int(f[1])),
                        "%s/%s_%04d.jpg" % (f[0], f[0], int(f[2])), 1))
        elif len(f) == 4:
            out.append(("%s/%s_%04d.jpg" % (f[0], f[0], int(f[1])),
                        "%s/%s_%04d.jpg" % (f[2], f[2], int(f[3])), 0))
    return out


def tar_at_far(scored, far):
    neg = sorted(d for d, s in scored if not s)
    pos = [d for d, s in scored if s]
    if len(neg) < 1 / far:
        return None
    allowed = int(far * len(neg) + 1e-9)
    t = neg[allowed] if allowed < len(neg) else float("inf")  # strictly below this
    return sum(1 for d in pos if d < t) / len(pos)


def score(pl, emb, unit):
    out = []
    for a, b, same in pl:
        ea, eb = emb.get(a), emb.get(b)
        if ea is None or eb is None:
            continue
        if unit:
            ea, eb = ea / np.linalg.norm(ea), eb / np.linalg.norm(eb)
        out.append((float(np.linalg.norm(ea - eb)), same))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-emb", required=True)
    ap.add_argument("--test-emb")
    args = ap.parse_args()
    lfw = DATA / "lfw"
    train_p, test_p = pairs(lfw / "pairsDevTrain.txt"), pairs(lfw / "pairsDevTest.txt")
    tr = load_emb(args.train_emb)
    te = load_emb(args.test_emb) if args.test_emb else None
    m = machine()
    m.pop("load_average_at_start")  # accuracy only: computed here from dumped vectors
    res = {"machine": m, "protocol": "View 1: threshold chosen on pairsDevTrain.txt, "
           "applied to pairsDevTest.txt; the View 2 run uses the winner", "variants": {}}
    for name, unit in (("flip_mean", False), ("flip_unit", True)):
        s = score(train_p, tr, unit)
        t, acc = best_threshold(s)
        v = {"train": {"pairs": len(s), "best_threshold": t, "best_accuracy": acc,
                       "roc_auc": roc_auc(s), "tar_at_far": {"0.01": tar_at_far(s, 1e-2),
                                                              "0.001": tar_at_far(s, 1e-3)}}}
        if te:
            st = score(test_p, te, unit)
            v["test"] = {"pairs": len(st), "threshold": t,
                         "accuracy": sum(1 for d, y in st if (d <= t) == bool(y)) / len(st),
                         "roc_auc": roc_auc(st)}
        res["variants"][name] = v
    plain = RESULTS / "lfw_view1_train.json"
    if plain.exists():
        p = json.loads(plain.read_text())
        res["variants"]["plain (bench/results/lfw_view1_train.json)"] = {
            "train": {"pairs": p["pairs"], "best_threshold": p["best_threshold"],
                      "best_accuracy": p["best_accuracy"], "roc_auc": p["roc_auc"],
                      "tar_at_far": p["tar_at_far"]}}
    dest = RESULTS / "lfw_view1_flip.json"
    dest.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["variants"], indent=1))


if __name__ == "__main__":
    main()
