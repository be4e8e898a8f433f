#!/usr/bin/env python3
"""DET plot (FNMR against FMR, log-log) from eval-pairs / eval-lfw dumps.

Input: per-pair CSVs written by `faceverify eval-pairs --dump` (or eval-lfw
--dump): fold,same,distance,failed,fallback,path_a,path_b, one labelled
curve each; optionally, per label, the `--json` output of the same run,
whose operating_points (the calibrated thresholds at FMR 1e-2, 1e-3, ...,
each pair decided at its own quality) are marked on that curve's colour as
(measured FMR, FNMR).  Output: bench/results/<name>_det.png (--out-dir).

  faceverify eval-pairs --pairs pairsDevTest.txt --root LFW --json \
      --dump /tmp/devtest.csv > /tmp/devtest.json
  .venv/bin/python bench/det_plot.py --name lfw_devtest \
      plain=/tmp/devtest.csv --ops plain=/tmp/devtest.json
"""
import argparse
import csv
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plots  # noqa: E402


def read(path):
    """Same and different distances of the scored pairs of a dump."""
    same, diff = plots.read(path)
    if not same or not diff:
        raise SystemExit(f"det_plot: {path} needs both same and different pairs")
    return same, diff


def det(same, diff):
    """(FMR, FNMR) at every threshold t (a pair matches when distance <= t),
    lowest distance first; points where either rate is 0 cannot sit on log
    axes and are left out."""
    pts = sorted([(d, 1) for d in same] + [(d, 0) for d in diff])
    fmr, fnmr, fm, tm = [], [], 0, 0
    for i, (d, s) in enumerate(pts):
        tm += s
        fm += 1 - s
        if i + 1 < len(pts) and pts[i + 1][0] == d:
            continue
        a, b = fm / len(diff), (len(same) - tm) / len(same)
        if a > 0 and b > 0:
            fmr.append(a)
            fnmr.append(b)
    return fmr, fnmr


def operating_points(path):
    """(stated FMR, measured FMR, FNMR) of an eval-pairs --json output."""
    with open(path) as f:
        j = json.load(f)
    return [(op["fmr"], op["fmr_measured"], op["fnmr"]) for op in j.get("operating_points") or []
            if op.get("fmr_measured") is not None and op.get("fnmr") is not None]


def labelled(args, what):
    out = []
    for a in args:
        if "=" not in a:
            raise SystemExit(f"det_plot: {what} arguments are label=path, not {a!r}")
        out.append(tuple(a.split("=", 1)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True, help="writes <out-dir>/<name>_det.png")
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--title", default="DET: false non-match rate against false-match rate")
    ap.add_argument("--ops", action="append", default=[],
                    help="label=eval.json: mark that run's calibrated operating points")
    ap.add_argument("dumps", nargs="+", help="label=per-pair.csv")
    args = ap.parse_args(argv)
    runs = [(label, read(path)) for label, path in labelled(args.dumps, "dump")]
    ops = dict(labelled(args.ops, "--ops"))
    unknown = set(ops) - {label for label, _ in runs}
    if unknown:
        raise SystemExit(f"det_plot: --ops for unknown label(s) {sorted(unknown)}")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    lo = 1.0
    for label, (same, diff) in runs:
        fmr, fnmr = det(same, diff)
        line, = ax.plot(fmr, fnmr, label=f"{label} ({len(same)} same, {len(diff)} different)")
        lo = min(lo, 0.5 / len(diff), 0.5 / len(same))
        if label in ops:
            for stated, measured, fn in operating_points(ops[label]):
                if measured <= 0 or fn <= 0:
                    continue  # off the log axes; the JSON has it
                ax.plot([measured], [fn], "o", color=line.get_color(), markersize=5)
                ax.annotate(f"{stated:.0e}", (measured, fn), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color=line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1)
    ax.set_xlabel("false-match rate (FMR)")
    ax.set_ylabel("false non-match rate (FNMR)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="dots: calibrated operating points (stated FMR)",
              title_fontsize=7)
    os.makedirs(args.out_dir, exist_ok=True)
    out = os.path.join(args.out_dir, f"{args.name}_det.png")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)
    return out


if __name__ == "__main__":
    main()
