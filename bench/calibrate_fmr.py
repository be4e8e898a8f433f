#!/usr/bin/env python3
"""Calibrates the FMR operating points (src/decide/fmr_table.h) and checks
them on people the calibration never saw.

Calibration: every cross-identity pair of a derived set of LFW View 1
*training* people (bench/derive_hard.py: clean, grey, small, blur, jpeg20,
turned, greysmall), binned by pair quality (the poorer face's
fv_quality.score).  For each bin the threshold at FMR 10^-k/4 is the
empirical quantile of its impostor distances.  Where a bin holds too few
pairs for a rate (fewer than MIN_EVENTS expected false matches), its
threshold is the next better bin's, shifted by the gap measured at the
bin's deepest reliable rate.  A poorer bin is never looser than a better
one.

Check (--check-emb/--check-quality): the same kind of set made from View 1
*test* people.  For each variant and each stated FMR: the measured FMR over
its impostor pairs with each pair's own quality threshold, with a 95%
Wilson interval, and the FNMR over its genuine pairs; the same for
a single table without quality bins, to show what the bins buy.

  .venv/bin/python bench/calibrate_fmr.py \\
      --emb hard_train_emb.csv --quality hard_train_q.csv \\
      --check-emb hard_test_emb.csv --check-quality hard_test_q.csv \\
      --write-table
"""
import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import REPO, RESULTS, machine  # noqa: E402

STEP = 0.25
POINTS = 25  # 10^0 .. 10^-6
BIN_EDGES = (0.0, 0.05, 0.2, 0.5, 0.8)  # lower edges of the pair-quality bins
MIN_EVENTS = 5
MODEL_ID = "dlib_resnet_v1"


def pair_quality(qa, qb):
    """The pair's quality: the mean of the two faces' scores (see
    fv_pair_quality)."""
    return 0.5 * (qa + qb)


PAIR = pair_quality
TABLE = REPO / "src" / "decide" / "fmr_table.h"


def load(emb_csv, q_csv):
    q = {}
    for line in Path(q_csv).read_text().splitlines()[1:]:
        f = line.split(",")
        q[f[0]] = float(f[2])
    paths, vecs, qual = [], [], []
    for line in Path(emb_csv).read_text().splitlines():
        f = line.split(",")
        if len(f) > 3 and f[2] == "detector" and f[0] in q:
            paths.append(f[0])
            vecs.append([float(x) for x in f[3:]])
            qual.append(q[f[0]])
    E = np.array(vecs, dtype=np.float32)
    variant = np.array([p.split("/")[0] for p in paths])
    person = np.array([p.split("/")[1] for p in paths])
    image = np.array(["/".join(p.split("/")[1:]) for p in paths])
    return E, np.array(qual, dtype=np.float32), variant, person, image


def pairs(E, Q, person, image):
    """Upper-triangle pair arrays: distance, pair quality, impostor flag,
    genuine flag (same person, different photo), index a, index b."""
    n = len(E)
    sq = (E.astype(np.float64) ** 2).sum(1)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * (E.astype(np.float64) @ E.T.astype(
        np.float64)), 0)).astype(np.float32)
    iu = np.triu_indices(n, 1)
    d = D[iu]
    del D
    q = PAIR(Q[iu[0]], Q[iu[1]])
    imp = person[iu[0]] != person[iu[1]]
    gen = (~imp) & (image[iu[0]] != image[iu[1]])
    return d, q, imp, gen, iu[0], iu[1]


def bin_of(q):
    return np.searchsorted(np.array(BIN_EDGES[1:]), q, side="right")


def grid():
    return [10 ** (-STEP * i) for i in range(POINTS)]


def quantiles(dist):
    s = np.sort(dist)
    out, reliable = [], []
    for f in grid():
        k = min(len(s) - 1, max(0, int(math.floor(f * len(s))) - 1))
        # threshold t with FMR(t) = fraction of impostors <= t ~ f
        out.append(float(s[k]) if f < 1 else float(s[-1]))
        reliable.append(f * len(s) >= MIN_EVENTS)
    return out, reliable


def people_bootstrap(dist, pa, pb, rows, boot, conf, seed):
    """Lowers quantile rows (quantiles(dist)) to a one-sided lower
    confidence bound over resampled people.

    An impostor tail at 1e-4 is made by few pairs of look-alike people,
    each contributing many image pairs (up to 4 photos x 7 variants each
    side), so a threshold read off one set of people is optimistic for
    the next set.  Each of `boot` Poisson bootstrap draws weighs every
    person by w ~ Poisson(1) and each pair by w_a * w_b; the threshold at
    rate f is the weighted f-quantile.  The row keeps the (1 - conf)
    quantile of the draws (never above the plain quantile): the threshold
    that holds the rate for `conf` of resampled populations."""
    order = np.argsort(dist, kind="stable")
    s, a, b = dist[order], pa[order], pb[order]
    n_people = int(max(a.max(), b.max())) + 1
    rng = np.random.default_rng(seed)
    fs = np.array(grid())
    draws = np.empty((boot, len(fs)))
    for r in range(boot):
        w = rng.poisson(1.0, n_people).astype(np.float64)
        c = np.cumsum(w[a] * w[b])
        idx = np.searchsorted(c, fs * c[-1], side="left")
        draws[r] = s[np.minimum(idx, len(s) - 1)]
    low = np.quantile(draws, 1 - conf, axis=0)
    out = [min(v, float(lo)) if i > 0 else v for i, (v, lo) in enumerate(zip(rows, low))]
    return out


def calibrate(d, q, imp, pa=None, pb=None, boot=0, conf=0.8, seed=15):
    b = bin_of(q)
    tables, counts = [], []
    for k in range(len(BIN_EDGES)):
        m = imp & (b == k)
        counts.append(int(m.sum()))
        if not m.sum():
            tables.append(None)
            continue
        rows, rel = quantiles(d[m])
        if boot:
            rows = people_bootstrap(d[m], pa[m], pb[m], rows, boot, conf, seed + k)
        tables.append((rows, rel))
    # best bin first: it has the most pairs; fill and clamp poorer ones
    final = [None] * len(BIN_EDGES)
    top = len(BIN_EDGES) - 1
    while tables[top] is None:
        top -= 1
    t, rel = tables[top]
    final[top] = t
    for k in range(top - 1, -1, -1):
        better = final[k + 1] if final[k + 1] is not None else final[top]
        if tables[k] is None:
            final[k] = list(better)
            continue
        t, rel = tables[k]
        last = max((i for i in range(POINTS) if rel[i]), default=None)
        row = []
        for i in range(POINTS):
            v = t[i] if rel[i] else (better[i] + (t[last] - better[last]) if last is not None
                                     else better[i])
            row.append(min(v, better[i]))
        final[k] = row
    for k in range(top + 1, len(BIN_EDGES)):
        final[k] = list(final[top])
    # thresholds fall as the rate falls
    for row in final:
        for i in range(1, POINTS):
            row[i] = min(row[i], row[i - 1])
    return final, counts


def threshold(table, fmr, q):
    b = bin_of(np.atleast_1d(q))
    pos = -math.log10(fmr) / STEP
    i = min(int(math.floor(pos)), POINTS - 2)
    f = pos - i
    rows = np.array(table)
    return (1 - f) * rows[b, i] + f * rows[b, i + 1]


def wilson(k, n, z=1.96):
    """95% Wilson score interval of a rate k/n (no scipy in the test venv)."""
    if n == 0:
        return None, None
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def check(table, flat, E, Q, variant, person, image):
    d, q, imp, gen, ia, ib = pairs(E, Q, person, image)
    out = {}
    # a pair belongs to a variant's check when both faces are of it; "all"
    # mixes every variant (enrolled clean vs probe degraded and so on)
    groups = {"all": np.ones(len(d), bool)}
    for v in sorted(set(variant)):
        groups[v] = (variant[ia] == v) & (variant[ib] == v)
    for g, m in groups.items():
        rows = {}
        for fmr in (1e-2, 1e-3, 1e-4):
            ti = m & imp
            tg = m & gen
            thr = threshold(table, fmr, q[ti])
            k = int((d[ti] <= thr).sum())
            n = int(ti.sum())
            thr_flat = threshold(flat, fmr, np.ones(1))[0]
            k_flat = int((d[ti] <= thr_flat).sum())
            thr_g = threshold(table, fmr, q[tg])
            lo, hi = wilson(k, n)
            rows["%g" % fmr] = {
                "impostor_pairs": n, "false_matches": k, "measured_fmr": k / n if n else None,
                "ci95": [lo, hi], "ratio_to_stated": (k / n) / fmr if n else None,
                "genuine_pairs": int(tg.sum()),
                "fnmr": float((d[tg] > thr_g).mean()) if tg.sum() else None,
                "no_quality_bins": {"measured_fmr": k_flat / n if n else None,
                                    "fnmr": float((d[tg] > thr_flat).mean()) if tg.sum()
                                    else None}}
        out[g] = rows
    return out


def det_plot(table, E, Q, variant, person, image, dest):
    """DET curves (FNMR against FMR, log-log) per variant of the check set,
    each with its calibrated operating points at FMR 1e-2..1e-4 marked
    where they landed (measured FMR, FNMR)."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    d, q, imp, gen, ia, ib = pairs(E, Q, person, image)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for v in sorted(set(variant)):
        m = (variant[ia] == v) & (variant[ib] == v)
        di, dg = np.sort(d[m & imp]), np.sort(d[m & gen])
        ts = np.quantile(di, np.logspace(-5, -0.5, 60))
        fmr = np.searchsorted(di, ts, side="right") / len(di)
        fnmr = 1 - np.searchsorted(dg, ts, side="right") / len(dg)
        line, = ax.plot(fmr, np.maximum(fnmr, 1e-4), label=v)
        for f in (1e-2, 1e-3, 1e-4):
            thr_i = threshold(table, f, q[m & imp])
            thr_g = threshold(table, f, q[m & gen])
            ax.plot([(d[m & imp] <= thr_i).mean()], [max((d[m & gen] > thr_g).mean(), 1e-4)],
                    "o", color=line.get_color(), ms=4)
    for f in (1e-2, 1e-3, 1e-4):
        ax.axvline(f, color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false-match rate (FMR)")
    ax.set_ylabel("false non-match rate (FNMR)")
    ax.set_title("DET, LFW View 1 test people by variant; dots: operating points\n"
                 "FMR 1e-2, 1e-3, 1e-4 where they landed (dotted: as stated)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(dest, dpi=110)


def fnmr_by_quality(table, E, Q, person, image):
    d, q, imp, gen, _, _ = pairs(E, Q, person, image)
    edges = (0, 0.15, 0.35, 0.6, 0.8, 1.01)
    out = []
    flat_thr = threshold(table, 1e-3, np.ones(1))[0]
    for lo, hi in zip(edges, edges[1:]):
        m = gen & (q >= lo) & (q < hi)
        if m.sum():
            out.append({"pair_quality": [lo, min(hi, 1.0)], "genuine_pairs": int(m.sum()),
                        "fnmr_at_fixed_threshold_fmr1e-3_top_bin": float((d[m] > flat_thr)
                                                                         .mean()),
                        "median_genuine_distance": float(np.median(d[m]))})
    return out


def write_table(table, counts, source):
    lines = [
        "/*",
        " * fmr_table.h: FMR operating points of the dlib ResNet, generated by",
        " * bench/calibrate_fmr.py (do not edit by hand; rerun it).",
        " * Source: %s." % source,
        " * Impostor pairs per quality bin: %s." % ", ".join(
            "q>=%.2f: %d" % (e, c) for e, c in zip(BIN_EDGES, counts)),
        " * Row i of a bin: the distance threshold at FMR 10^(-%.2f*i)." % STEP,
        " */",
        "#ifndef FVI_FMR_TABLE_H",
        "#define FVI_FMR_TABLE_H",
        "",
        '#define FVI_FMR_MODEL_ID "%s"' % MODEL_ID,
        "#define FVI_FMR_STEP %.2f" % STEP,
        "#define FVI_FMR_POINTS %d" % POINTS,
        "",
        "typedef struct fvi_fmr_bin {",
        "    float quality_min; /* pair quality (fv_pair_quality) from here */",
        "    float threshold[FVI_FMR_POINTS];",
        "} fvi_fmr_bin;",
        "",
        "static const fvi_fmr_bin FVI_FMR_BINS[] = {",
    ]
    for e, row in zip(BIN_EDGES, table):
        vals = ", ".join("%.4ff" % v for v in row)
        lines.append("    {%.2ff, {%s}}," % (e, vals))
    lines += ["};", "", "#endif", ""]
    TABLE.write_text("\n".join(lines))
    subprocess.run(["clang-format", "-i", str(TABLE)], check=False)


def main():
    global PAIR, BIN_EDGES
    ap = argparse.ArgumentParser()
    ap.add_argument("--emb", required=True)
    ap.add_argument("--quality", required=True)
    ap.add_argument("--check-emb")
    ap.add_argument("--check-quality")
    ap.add_argument("--write-table", action="store_true")
    ap.add_argument("--pair", choices=("mean", "min"), default="mean")
    ap.add_argument("--bootstrap", type=int, default=0, metavar="B",
                    help="people-bootstrap draws for conservative thresholds (0: plain quantiles)")
    ap.add_argument("--confidence", type=float, default=0.8,
                    help="with --bootstrap: the share of resampled populations the rate holds for")
    ap.add_argument("--out", default=str(RESULTS / "fmr_calibration.json"))
    ap.add_argument("--edges", help="lower bin edges, comma-separated (default %s)" %
                    ",".join(map(str, BIN_EDGES)))
    args = ap.parse_args()
    if args.pair == "min":
        PAIR = np.minimum
    if args.edges:
        BIN_EDGES = tuple(float(x) for x in args.edges.split(","))
    E, Q, variant, person, image = load(args.emb, args.quality)
    d, q, imp, gen, ia, ib = pairs(E, Q, person, image)
    pid = np.unique(person, return_inverse=True)[1]
    pa, pb = pid[ia], pid[ib]
    del ia, ib
    table, counts = calibrate(d, q, imp, pa, pb, args.bootstrap, args.confidence)
    flat, _ = calibrate(d, np.ones_like(q), imp, pa, pb, args.bootstrap, args.confidence)
    del pa, pb
    flat = [flat[-1]] * len(BIN_EDGES)
    res = {"machine": machine(), "model": MODEL_ID,
           "calibration": {"set": "bench/derive_hard.py on peopleDevTrain.txt",
                           "images": len(E), "impostor_pairs": int(imp.sum()),
                           "impostor_pairs_per_bin": dict(zip(map(str, BIN_EDGES), counts)),
                           "bin_edges": BIN_EDGES,
                           "method": ("per-bin impostor quantiles, lowered to the %g lower "
                                      "confidence bound of %d people-bootstrap draws" %
                                      (1 - args.confidence, args.bootstrap)
                                      if args.bootstrap else "per-bin impostor quantiles"),
                           "thresholds": {"%g" % f: [threshold(table, f, e)[0] for e in
                                                     BIN_EDGES]
                                          for f in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)},
                           "images_per_variant": {v: int((variant == v).sum())
                                                  for v in sorted(set(variant))},
                           "median_quality_per_variant": {
                               v: float(np.median(Q[variant == v])) for v in sorted(set(variant))}}}
    del d, q, imp, gen
    if args.check_emb:
        E2, Q2, v2, p2, i2 = load(args.check_emb, args.check_quality)
        res["check"] = {"set": "bench/derive_hard.py on peopleDevTest.txt (disjoint people)",
                        "images": len(E2), "per_variant": check(table, flat, E2, Q2, v2, p2, i2),
                        "fnmr_by_pair_quality": fnmr_by_quality(table, E2, Q2, p2, i2),
                        "median_quality_per_variant": {
                            v: float(np.median(Q2[v2 == v])) for v in sorted(set(v2))}}
        det_plot(table, E2, Q2, v2, p2, i2, Path(args.out).with_name("fmr_det.png"))
    if args.write_table:
        write_table(table, counts, "%d images of LFW View 1 training people in 7 variants" %
                    len(E))
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res.get("check", {}).get("per_variant", {}), indent=None)[:6000])


if __name__ == "__main__":
    main()
