#!/usr/bin/env python3
"""ROC curve and same/different distance histograms from eval dumps.

Input: one or more per-pair CSVs written by `faceverify eval-lfw --dump`
(or eval-pairs --dump): fold,same,distance,failed,fallback,path_a,path_b.
Output: PNGs next to the results, for docs/benchmarks.md.

  .venv/bin/python bench/plots.py --out bench/results/lfw_view2 \
      flip=/tmp/v2_flip.csv plain=/tmp/v2_plain.csv
writes lfw_view2_roc.png and lfw_view2_hist.png (one curve / panel per
label=CSV argument).
"""
import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    same, diff = [], []
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["failed"] == "1":
                continue
            (same if r["same"] == "1" else diff).append(float(r["distance"]))
    return same, diff


def roc(same, diff):
    """(FAR, TAR) points over every threshold, lowest distance first."""
    pts = sorted([(d, 1) for d in same] + [(d, 0) for d in diff])
    far, tar, fa, ta = [0.0], [0.0], 0, 0
    for i, (d, s) in enumerate(pts):
        ta += s
        fa += 1 - s
        if i + 1 < len(pts) and pts[i + 1][0] == d:
            continue
        far.append(fa / len(diff))
        tar.append(ta / len(same))
    return far, tar


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="output prefix (no extension)")
    ap.add_argument("--title", default="LFW View 2 (6,000 pairs)")
    ap.add_argument("dumps", nargs="+", help="label=path.csv")
    args = ap.parse_args()
    runs = [(d.split("=", 1)[0], read(d.split("=", 1)[1])) for d in args.dumps]

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, (same, diff) in runs:
        far, tar = roc(same, diff)
        ax.plot(far, tar, label=label)
    ax.set_xscale("log")
    ax.set_xlim(1 / max(len(r[1][1]) for r in runs) / 2, 1)
    ax.set_ylim(0.85, 1.001)
    for x in (1e-3, 1e-2):
        ax.axvline(x, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("false accept rate (different pairs accepted)")
    ax.set_ylabel("true accept rate (same pairs accepted)")
    ax.set_title("ROC, " + args.title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out + "_roc.png", dpi=100)

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.8), squeeze=False)
    for ax, (label, (same, diff)) in zip(axes[0], runs):
        bins = [i * 0.02 for i in range(0, 71)]
        ax.hist(same, bins=bins, alpha=0.6, label="same person (%d)" % len(same))
        ax.hist(diff, bins=bins, alpha=0.6, label="different people (%d)" % len(diff))
        ax.set_xlabel("distance")
        ax.set_ylabel("pairs")
        ax.set_title(label)
        ax.legend()
    fig.suptitle("Distances, " + args.title)
    fig.tight_layout()
    fig.savefig(args.out + "_hist.png", dpi=100)
    print("wrote", args.out + "_roc.png", args.out + "_hist.png")


if __name__ == "__main__":
    main()
