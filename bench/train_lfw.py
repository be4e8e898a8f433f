#!/usr/bin/env python3
"""train_lfw.py: `faceverify train` on LFW's development split.

Trains on the people of peopleDevTrain.txt (those with 2+ images, by
default the first 400 alphabetically: detection + alignment of every image
dominates the time on the shared 2-core machine; 10% of them held out for
validation and early stopping) and evaluates on
pairsDevTest.txt (1000 pairs of other people):
  scratch   the compact CNN from aligned chips (--input px), its accuracy at
            the threshold calibrated on the validation identities, its best
            accuracy over thresholds and ROC AUC, and the training time;
  adapter   the residual MLP on the frozen ResNet embedding, next to the plain
            ResNet embedding on the same pairs (same detection + alignment).
The face cache (detect + align + ResNet once per image) is shared by both
runs and timed separately.  Runs under `nice -n 10` with --threads (the
machine is shared).  Writes bench/results/train_lfw.json with the exact
commands.  Never part of the test suite.

usage: bench/train_lfw.py [--build DIR] [--lfw DIR] [--work DIR] [--output JSON]
                          [--scratch-epochs N] [--adapter-epochs N] [--threads N]
                          [--max-identities N] [--patience N] [--adapter-lr LR]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import write_result  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}")
    return json.loads(r.stdout), time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--lfw", default=os.environ.get(
        "FACEVERIFY_DATA", os.path.join(REPO, "..", "shared", "data")) + "/lfw")
    ap.add_argument("--work", default="/tmp/fv_train_lfw")
    ap.add_argument("--scratch-epochs", type=int, default=10)
    ap.add_argument("--max-identities", type=int, default=400,
                    help="first N people of peopleDevTrain (2+ images, sorted); 0 = all")
    ap.add_argument("--adapter-epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--input", type=int, default=64)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--adapter-lr", type=float, default=1e-3)
    ap.add_argument("--output", default=os.path.join(REPO, "bench", "results",
                                                     "train_lfw.json"))
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    cli = os.path.join(a.build, "bin", "faceverify")
    common = ["--data", a.lfw, "--people", os.path.join(a.lfw, "peopleDevTrain.txt"),
              "--test-pairs", os.path.join(a.lfw, "pairsDevTest.txt"),
              "--cache", os.path.join(a.work, "devtrain.cache"),
              "--test-cache", os.path.join(a.work, "devtest.cache"),
              "--pick", "center", "--input", str(a.input), "--threads", str(a.threads),
              "--seed", "1", "--patience", str(a.patience), "--json"]
    if a.max_identities:
        common += ["--max-identities", str(a.max_identities)]
    runs = {}
    for mode, epochs in (("scratch", a.scratch_epochs), ("adapter", a.adapter_epochs)):
        cmd = ["nice", "-n", "10", cli, "train", "--mode", mode, "--epochs", str(epochs),
               "--out", os.path.join(a.work, mode + ".fvm")] + common
        if mode == "adapter":
            cmd += ["--lr", str(a.adapter_lr)]
        out, wall = run(cmd)
        out["command"] = " ".join(cmd)
        out["wall_seconds"] = wall
        runs[mode] = out
    res = {
        "machine": {"cpu": platform.machine(), "cores": os.cpu_count(),
                    "note": "shared 2-core machine, runs under nice -n 10"},
        "train_people": "peopleDevTrain.txt (identities with 2+ images, the first %s "
                        "alphabetically; 10%% held out)" % (a.max_identities or "all"),
        "test_pairs": "pairsDevTest.txt",
        "runs": runs,
        "summary": {
            mode: {
                "test_accuracy_at_val_threshold": r["test"]["model"]["accuracy"],
                "test_best_accuracy": r["test"]["model"]["best_accuracy"],
                "test_roc_auc": r["test"]["model"]["roc_auc"],
                "resnet_test_accuracy": r["test"]["resnet"]["accuracy"],
                "resnet_test_roc_auc": r["test"]["resnet"]["roc_auc"],
                "epochs_run": r["epochs_run"],
                "train_seconds": r["train_seconds"],
                "cache_seconds": r["cache_seconds"],
            } for mode, r in runs.items()
        },
    }
    res["bench_command"] = " ".join(sys.argv)
    write_result(os.path.basename(a.output), res, a.output)
    print(json.dumps(res["summary"], indent=2))


if __name__ == "__main__":
    main()
