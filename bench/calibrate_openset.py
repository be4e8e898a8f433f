#!/usr/bin/env python3
"""Calibrates open-set identification (src/decide/fpir_table.h) and checks
it on people the calibration never saw.

Score (as src/decide/openset.c): subjects are compared through fused
templates (mean of unit-length templates at their mean length); the
nearest subject's score is 1 - d1 / mean(d2..d6), its distance over the
mean distance to the next COHORT subjects.

Calibration, LFW View 1 *training* people only: galleries of N subjects
(N on GALLERY_GRID; T = 1 and 3 templates; several seeded draws), up to
N/2 of them mated (people with T+1 or more photos: the rest of their
photos are mated probes), the rest filler; every photo of a training
person outside the gallery is a non-mated probe.  The score threshold for
FPIR f at N is the (1 - f) quantile of the non-mated probes' scores.

Check, View 1 *test* people as probes (never seen by the calibration):
galleries of 100, 1,000 and 5,000 subjects (mated test people, filled with
other people, training people included since LFW has only 5,749), T = 1
and 3; measured FPIR at stated 1e-3, 1e-2, 5e-2 (within 2x is the target),
FNIR at FPIR 1e-2 with the calibrated threshold, rank-1, and today's rule
(nearest template within the fixed threshold 0.6166) for comparison.

  .venv/bin/python bench/calibrate_openset.py --emb lfw_clean.csv --write-table
(lfw_clean.csv: `faceverify eval-pairs --dump-embeddings` over every LFW
image, --pick center.)  Writes bench/results/openset.json.
"""
import argparse
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import DATA, REPO, RESULTS, machine  # noqa: E402
from openset_explore import dists, index_people, load, people  # noqa: E402

COHORT = 5
MIN_GALLERY = 6
FMR_GUARD = 0.1
STEP = 0.25
POINTS = 13  # FPIR 10^0 .. 10^-3
GALLERY_GRID = (6, 10, 30, 100, 300, 1000, 3000)
MIN_NONMATED = 20000
MIN_EVENTS = 25
OLD_THRESHOLD = 0.6166
TABLE = REPO / "src" / "decide" / "fpir_table.h"


def fuse(v):
    n = np.linalg.norm(v, axis=1, keepdims=True)
    m = (v / n).sum(0)
    return m / np.linalg.norm(m) * n.mean()


def build(rng, by, pool, fill, n, t, cap=None):
    avail = [p for p in pool if len(by.get(p, [])) >= t + 1]
    rng.shuffle(avail)
    mated = avail[:min(len(avail), n // 2)]
    used = set(mated)
    filler = [p for p in fill if p not in used and by.get(p)]
    rng.shuffle(filler)
    filler = filler[:n - len(mated)]
    gallery, mp = [], []
    for p in mated + filler:
        imgs = list(by[p])
        rng.shuffle(imgs)
        gallery.append(imgs[:t])
        if p in used:
            mp += [(i, len(gallery) - 1) for i in imgs[t:][:cap]]
    used |= set(filler)
    nm = [i for p in pool if p not in used for i in by.get(p, [])[:cap]]
    return gallery, mp, nm


def score_rows(D):
    """Nearest subject, its score, its distance, per probe row of D."""
    k = min(D.shape[1], COHORT + 1)
    part = np.partition(D, k - 1, axis=1)[:, :k] if D.shape[1] > k else D
    s = np.sort(part, 1)
    top = np.argmin(D, 1)
    d1 = s[:, 0]
    if D.shape[1] < MIN_GALLERY:
        return top, -d1, d1
    return top, 1 - d1 / s[:, 1:].mean(1), d1


def one(E, by, pool, fill, n, t, seed, cap=None):
    g, mp, nm = build(random.Random(seed), by, pool, fill, n, t, cap)
    T = np.stack([fuse(E[idx]) for idx in g])
    truth = np.array([s for _, s in mp], dtype=int)
    tm, sm, dm = score_rows(dists(E[[i for i, _ in mp]], T)) if mp else (
        np.zeros(0, int), np.zeros(0), np.zeros(0))
    _, sn, dn = score_rows(dists(E[nm], T))
    # today's rule: nearest single template within the fixed threshold
    rows = [i for idx in g for i in idx]
    subj = np.array([s for s, idx in enumerate(g) for _ in idx])
    Dn_raw = dists(E[nm], E[rows])
    old_fp = float((Dn_raw.min(1) <= OLD_THRESHOLD).mean())
    Dm_raw = dists(E[[i for i, _ in mp]], E[rows]) if mp else None
    old_ok = (subj[Dm_raw.argmin(1)] == truth) & (Dm_raw.min(1) <= OLD_THRESHOLD) if mp \
        else np.zeros(0, bool)
    return {"ok": tm == truth, "sm": sm, "dm": dm, "sn": sn, "dn": dn, "old_fpir": old_fp,
            "old_fnir": float(1 - old_ok.mean()) if mp else None}


def calibrate(E, by, train):
    table = []
    for n in GALLERY_GRID:
        sn = []
        seed = 0
        while sum(len(x) for x in sn) < MIN_NONMATED and seed < 40:
            for t in (1, 3):
                sn.append(one(E, by, train, train, n, t, 1000 * n + seed)["sn"])
            seed += 1
        s = np.sort(np.concatenate(sn))[::-1]
        row = []
        for k in range(POINTS):
            f = 10 ** (-STEP * k)
            i = min(len(s) - 1, int(math.floor(f * len(s))))
            row.append(float(s[i]) if f < 1 else float(s[-1]))
        table.append((n, len(s), row))
    # The tail of a row with too few non-mated scores for a rate (fewer
    # than MIN_EVENTS expected false positives) follows the previous row's
    # shape from its last reliable rate.  Not monotone in N: a small
    # gallery's cohort is small and its scores noisy, so its thresholds can
    # be higher than a larger one's.  Within a row, a stricter rate never
    # has a lower threshold.
    for j, (n, cnt, row) in enumerate(table):
        last = max(k for k in range(POINTS) if 10 ** (-STEP * k) * cnt >= MIN_EVENTS)
        if j > 0:
            prev = table[j - 1][2]
            for k in range(last + 1, POINTS):
                row[k] = row[last] + (prev[k] - prev[last])
    for n, cnt, row in table:
        for k in range(1, POINTS):
            row[k] = max(row[k], row[k - 1])
    return table


def threshold(table, n, fpir, guard):
    """Score threshold (as openset.c) at gallery n."""
    sizes = [r[0] for r in table]
    pos = -math.log10(fpir) / STEP
    k = min(int(math.floor(pos)), POINTS - 2)
    f = pos - k

    def grid(kk):
        lg = math.log10(n)
        i = 0
        while i + 2 < len(sizes) and lg > math.log10(sizes[i + 1]):
            i += 1
        a, b = math.log10(sizes[i]), math.log10(sizes[i + 1])
        w = max(0.0, (lg - a) / (b - a))
        return (1 - w) * table[i][2][kk] + w * table[i + 1][2][kk]
    return (1 - f) * grid(k) + f * grid(k + 1)


def check(E, by, test, train, table, guard):
    out = []
    for n in (100, 1000, 5000):
        for t in (1, 3):
            runs = [one(E, by, test, train + test, n, t, 7 + s) for s in range(3)]
            ok = np.concatenate([r["ok"] for r in runs])
            sm = np.concatenate([r["sm"] for r in runs])
            dm = np.concatenate([r["dm"] for r in runs])
            sn = np.concatenate([r["sn"] for r in runs])
            dn = np.concatenate([r["dn"] for r in runs])
            row = {"gallery": n, "templates": t, "mated_probes": int(len(sm)),
                   "nonmated_probes": int(len(sn)), "rank1": float(ok.mean()),
                   "today_rule_threshold_0.6166": {
                       "fpir": float(np.mean([r["old_fpir"] for r in runs])),
                       "fnir": float(np.mean([r["old_fnir"] for r in runs]))},
                   "stated": {}}
            for fpir in (1e-3, 1e-2, 5e-2):
                th = threshold(table, n, fpir, guard)
                acc_n = (sn >= th) & (dn <= guard)
                acc_m = ok & (sm >= th) & (dm <= guard)
                row["stated"]["%g" % fpir] = {
                    "score_threshold": th, "measured_fpir": float(acc_n.mean()),
                    "ratio_to_stated": float(acc_n.mean() / fpir),
                    "fnir": float(1 - acc_m.mean())}
            srt = np.sort(sn)[::-1]
            emp = srt[min(len(srt) - 1, int(0.01 * len(srt)))]
            row["fnir_at_empirical_fpir_1e-2"] = float(1 - (ok & (sm > emp)).mean())
            out.append(row)
            print(json.dumps({k: row[k] for k in ("gallery", "templates", "rank1")}),
                  {k: (round(v["measured_fpir"], 4), round(v["fnir"], 3))
                   for k, v in row["stated"].items()}, row["today_rule_threshold_0.6166"])
    return out


def write_table(table):
    lines = [
        "/*",
        " * fpir_table.h: open-set score thresholds of the dlib ResNet, generated",
        " * by bench/calibrate_openset.py (do not edit by hand; rerun it) from",
        " * LFW View 1 training people.  Row: a gallery size; column k: the",
        " * score threshold at FPIR 10^(-%.2f*k)." % STEP,
        " */",
        "#ifndef FVI_FPIR_TABLE_H",
        "#define FVI_FPIR_TABLE_H",
        "",
        '#define FVI_FPIR_MODEL_ID "dlib_resnet_v1"',
        "#define FVI_OPENSET_COHORT %d" % COHORT,
        "#define FVI_FPIR_MIN_GALLERY %d" % MIN_GALLERY,
        "#define FVI_OPENSET_FMR_GUARD %g" % FMR_GUARD,
        "#define FVI_FPIR_STEP %.2f" % STEP,
        "#define FVI_FPIR_POINTS %d" % POINTS,
        "#define FVI_FPIR_SIZES %d" % len(table),
        "",
        "static const unsigned FVI_FPIR_GALLERY[FVI_FPIR_SIZES] = {%s};" % ", ".join(
            str(r[0]) for r in table),
        "/* non-mated probe scores behind each row: %s */" % ", ".join(
            "%d: %d" % (r[0], r[1]) for r in table),
        "static const float FVI_FPIR_THRESHOLD[FVI_FPIR_SIZES][FVI_FPIR_POINTS] = {",
    ]
    for _, _, row in table:
        lines.append("    {%s}," % ", ".join("%.5ff" % v for v in row))
    lines += ["};", "", "#endif", ""]
    TABLE.write_text("\n".join(lines))
    subprocess.run(["clang-format", "-i", str(TABLE)], check=False)


def fmr_guard():
    """The 1:1 threshold at FMR FMR_GUARD for quality 1 (the best bin), as
    fv_fmr_threshold gives it to openset.c: from the run of
    bench/calibrate_fmr.py that wrote fmr_table.h."""
    cal = json.loads((RESULTS / "fmr_calibration.json").read_text())["calibration"]
    return round(cal["thresholds"]["%g" % FMR_GUARD][-1], 4)  # as the header prints it


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--emb", required=True)
    ap.add_argument("--write-table", action="store_true")
    args = ap.parse_args()
    names, E = load(args.emb)
    by = index_people(names)
    lfw = DATA / "lfw"
    train, test = people(lfw / "peopleDevTrain.txt"), people(lfw / "peopleDevTest.txt")
    table = calibrate(E, by, train)
    res = {"machine": machine(), "score": "1 - d1 / mean(d2..d%d), fused templates" %
           (COHORT + 1), "calibration": {"people": "peopleDevTrain.txt", "grid": [
               {"gallery": n, "nonmated_scores": c, "threshold_at_fpir": {
                   "%g" % (10 ** (-STEP * k)): v for k, v in enumerate(row)}}
               for n, c, row in table]},
           "fmr_guard": fmr_guard(),
           "check": check(E, by, test, train, table, fmr_guard())}
    if args.write_table:
        write_table(table)
    (RESULTS / "openset.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
