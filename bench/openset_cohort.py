#!/usr/bin/env python3
"""Can a cohort or a learned calibrator meet issue 15's open-set FNIR
targets?  Measured, same protocol as bench/calibrate_openset.py.

Today's score (src/decide/openset.c): fused templates, nearest subject's
score 1 - d1 / mean(d2..d6).  At gallery 1,000 it misses 0.30 (one
template) / 0.066 (three) of the enrolled people at FPIR 1e-2; the issue
asks for 0.20 / 0.05.  Tried here:

- probe-side cohort normalisation: a fixed cohort of COHORT_SIZE faces of
  people who are never enrolled nor probed (one photo each of View 1
  training people with a single photo), shipped as a table; the probe's
  nearest-subject distance d1 over the mean of its k nearest cohort
  distances, which is high for "hub" probes close to everyone;
- the candidate's side of the same (its fused template's k nearest cohort
  faces), and the two together (a symmetric normalisation);
- mixes of the gallery denominator (d2..d6) and the cohort one;
- a logistic calibrator on features (d1, d2, d1/d2, d1 - mean(d2..d6),
  the probe's and the candidate's cohort statistics, the embedding
  lengths as a quality proxy; the cache has no face quality), fitted on
  training people: on every probe, on the decision's tail only (probes
  above today's non-mated 10% point), with pairwise products (quadratic),
  and each of these pooled over one and three templates or per template
  count ("per-T");
- combinations of the above.

Protocol: every threshold (FPIR 1e-2 at a gallery size, pooled over one
and three templates as the shipped calibration does) and every
logistic coefficient comes from View 1 *training* people; FNIR and
measured FPIR are reported on View 1 *test* people as probes, whom no
fit saw.  The cohort's people are removed from every gallery and probe
set.  View 2 is not used.  Galleries of 100 and 1,000 only: without the
cohort, the training people (3,538 at K = 500) cannot fill a 5,000
gallery to fit on.  Also reported: the FNIR at the test set's own FPIR
1e-2 ("oracle": the score's separation alone, without calibration
transfer) and rank-1.

  .venv/bin/python bench/openset_cohort.py --emb lfw_clean.csv \
      --cohort-sizes 150,500,1500,2500 --sizes 100,1000
Writes bench/results/openset_cohort.json (--out).  The cohort's size
changes which people are left to draw galleries and probes from, so
today's score moves with it too: compare within one cohort size.
"""
import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import DATA, RESULTS, machine  # noqa: E402
from openset_explore import dists, index_people, load, people  # noqa: E402
from calibrate_openset import build, fuse  # noqa: E402

COHORT_SIZE = 500
TOPK = 20  # gallery and cohort distances kept per probe
FPIR = 1e-2


def features(E, g, probes, C, Tc):
    """Per probe: rank-1 subject and the raw statistics every score below
    is made of.  g: gallery [[idx]]; C: cohort embeddings; Tc: sorted
    distances of each fused template to the cohort (first TOPK)."""
    T = np.stack([fuse(E[idx]) for idx in g])
    P = E[probes]
    D = dists(P, T)
    k = min(TOPK, D.shape[1])
    part = np.argpartition(D, k - 1, axis=1)[:, :k]
    dv = np.take_along_axis(D, part, 1)
    o = np.argsort(dv, 1)
    idx = np.take_along_axis(part, o, 1)
    ds = np.take_along_axis(dv, o, 1)
    Dc = np.sort(dists(P, C), 1)
    top = idx[:, 0]
    # gallery-side: the candidate's distances to the other subjects
    Dt = dists(T[top], T)
    Dt[np.arange(len(top)), top] = np.inf
    Dt = np.sort(Dt, 1)[:, :TOPK]
    return {"top": top, "d": ds, "pc": Dc[:, :TOPK], "pc_all_mean": Dc.mean(1),
            "pc_all_std": Dc.std(1), "tc": Tc(T)[top], "tg": Dt,
            "pnorm": np.linalg.norm(P, axis=1), "tnorm": np.linalg.norm(T[top], axis=1),
            "pidx": np.asarray(probes), "tidx": np.array([g[t][0] for t in top], dtype=int)}


def scores(f):
    """Candidate scores, higher = more confident."""
    d = f["d"]
    d1 = d[:, 0]
    g5 = d[:, 1:6].mean(1)
    out = {"ratio_mean5 (today)": 1 - d1 / g5, "ratio_d2": 1 - d1 / d[:, 1],
           "distance": -d1}
    for k in (1, 5, 10, 20):
        pk = f["pc"][:, :k].mean(1)
        tk = f["tc"][:, :k].mean(1)
        out["probe_cohort%d" % k] = 1 - d1 / pk
        out["cand_cohort%d" % k] = 1 - d1 / tk
        out["sym_cohort%d" % k] = 1 - d1 / np.sqrt(pk * tk)
        for a in (0.25, 0.5, 0.75):
            out["mix%.2f_gallery5_probe_cohort%d" % (a, k)] = 1 - d1 / (a * g5 + (1 - a) * pk)
        out["gallery5_x_sym_cohort%d" % k] = 1 - d1 / np.cbrt(g5 * pk * tk)
    z = (f["pc_all_mean"] - d1) / f["pc_all_std"]
    out["znorm_probe_cohort"] = z
    return out


def design(f):
    """Logistic calibrator's inputs."""
    d = f["d"]
    d1, d2 = d[:, 0], d[:, 1]
    g5 = d[:, 1:6].mean(1)
    p10 = f["pc"][:, :10].mean(1)
    t10 = f["tc"][:, :10].mean(1)
    cols = {"d1": d1, "d2": d2, "d1/d2": d1 / d2, "d1-mean(d2..d6)": d1 - g5,
            "d1/mean(d2..d6)": d1 / g5, "d1/probe_cohort10": d1 / p10,
            "probe_cohort1": f["pc"][:, 0], "probe_cohort10": p10,
            "probe_cohort_std": f["pc_all_std"], "d1/cand_cohort10": d1 / t10,
            "cand_gallery5": f["tg"][:, :5].mean(1), "probe_norm": f["pnorm"],
            "cand_norm": f["tnorm"]}
    return list(cols), np.stack(list(cols.values()), 1)


def fit_logistic(X, y, w, l2=1e-3, iters=50):
    """Weighted L2 logistic regression by Newton steps; X standardised
    inside, coefficients returned on the raw scale (w0, w)."""
    mu, sd = X.mean(0), X.std(0) + 1e-12
    Z = np.hstack([np.ones((len(X), 1)), (X - mu) / sd])
    b = np.zeros(Z.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(Z @ b, -30, 30)))
        g = Z.T @ (w * (p - y)) + l2 * np.r_[0, b[1:]]
        H = (Z * (w * p * (1 - p))[:, None]).T @ Z + l2 * np.eye(len(b))
        step = np.linalg.solve(H, g)
        b -= step
        if np.abs(step).max() < 1e-9:
            break
    coef = b[1:] / sd
    return b[0] - (coef * mu).sum(), coef


def runs(E, by, pool, fill, n, seeds, C, Tc):
    out = []
    for t in (1, 3):
        for s in seeds:
            g, mp, nm = build(random.Random(s), by, pool, fill, n, t)
            fm = features(E, g, [i for i, _ in mp], C, Tc)
            fn = features(E, g, nm, C, Tc)
            out.append((t, fm, np.array([s for _, s in mp]) == fm["top"], fn))
    return out


def cat(fs):
    return {k: np.concatenate([f[k] for f in fs]) for k in fs[0]}


def thr(sn, fpir):
    s = np.sort(sn)[::-1]
    return s[min(len(s) - 1, int(np.floor(fpir * len(s))))]


def fit_models(tr, design=design):
    """Logistic calibrators fitted on training runs tr.  Positives are
    correct rank-1 mated probes, negatives non-mated ones, each class
    weighted to the same total.  Returns (scores of a feature dict, FPIR
    1e-2 threshold of each score on tr's non-mated probes, coefficients)."""
    names_x, Xm = design(cat([r[1] for r in tr]))
    okm = np.concatenate([r[2] for r in tr])
    _, Xn = design(cat([r[3] for r in tr]))
    X = np.vstack([Xm[okm], Xn])
    y = np.r_[np.ones(okm.sum()), np.zeros(len(Xn))]
    w = np.r_[np.full(okm.sum(), 0.5 / okm.sum()), np.full(len(Xn), 0.5 / len(Xn))] * len(y)
    w0, coef = fit_logistic(X, y, w)
    # the same, fitted only where the decision is made: probes whose
    # today's score is above the non-mated 10% point
    r5 = 1 - X[:, names_x.index("d1/mean(d2..d6)")]
    tail = r5 >= thr(r5[y == 0], 0.1)
    yt = y[tail]
    wt = np.where(yt == 1, 0.5 / (yt == 1).sum(), 0.5 / (yt == 0).sum()) * len(yt)
    t0, tcoef = fit_logistic(X[tail], yt, wt)
    # pairwise products of the standardised inputs (a quadratic model)
    mu, sd = X.mean(0), X.std(0) + 1e-12

    def quad(Z):
        Z = (Z - mu) / sd
        iu = np.triu_indices(Z.shape[1])
        return np.hstack([Z, (Z[:, :, None] * Z[:, None, :])[:, iu[0], iu[1]]])
    q0, qcoef = fit_logistic(quad(X), y, w, l2=1e-2)

    def score_of(f):
        s = scores(f)
        x = design(f)[1]
        s["logistic"] = w0 + x @ coef
        s["logistic_tail"] = t0 + x @ tcoef
        s["logistic_quadratic"] = q0 + quad(x) @ qcoef
        return s
    sn = {}
    for r in tr:
        for k, v in score_of(r[3]).items():
            sn.setdefault(k, []).append(v)
    th = {k: thr(np.concatenate(v), FPIR) for k, v in sn.items()}
    info = {"inputs": names_x, "intercept": float(w0), "coef": [float(c) for c in coef],
            "tail": {"intercept": float(t0), "coef": [float(c) for c in tcoef]}}
    return score_of, th, info


def measure(E, by, train, test, k, sizes, nseeds, design=design, quiet=False):
    """Every score at each gallery size with a cohort of k faces: rows
    (one per gallery size, template count and score) and the logistic
    coefficients."""
    single = sorted(p for p in train if len(by[p]) == 1)
    cohort = set(random.Random(99).sample(single, k))
    C = E[[by[p][0] for p in sorted(cohort)]]
    train = [p for p in train if p not in cohort]

    def Tc(T):
        return np.sort(dists(T, C), 1)[:, :TOPK]

    rows, logistic = [], {}
    for n in sizes:
        seeds = range(nseeds)
        tr = runs(E, by, train, train, n, [1000 + s for s in seeds], C, Tc)
        te = runs(E, by, test, train + test, n, [7 + s for s in seeds], C, Tc)
        # thresholds and fits pooled over one and three templates (as the
        # shipped table), and the logistic models also fitted per template
        # count ("per-T", threshold from that count's non-mated probes)
        pooled = fit_models(tr, design)
        per_t = {t: fit_models([r for r in tr if r[0] == t], design) for t in (1, 3)}
        logistic[str(n)] = {"pooled": pooled[2], "per_templates": {
            str(t): per_t[t][2] for t in per_t}}
        for t in (1, 3):
            sel = [r for r in te if r[0] == t]
            ok = np.concatenate([r[2] for r in sel])
            for (score_of, th, _), suffix, keys in ((pooled, "", None),
                                                    (per_t[t], " per-T", "logistic")):
                sm = [score_of(r[1]) for r in sel]
                sn = [score_of(r[3]) for r in sel]
                for key in th:
                    if keys and not key.startswith(keys):
                        continue
                    m = np.concatenate([x[key] for x in sm])
                    u = np.concatenate([x[key] for x in sn])
                    rows.append({
                        "cohort": k, "gallery": n, "templates": t, "score": key + suffix,
                        "test_fpir_at_train_threshold": float((u >= th[key]).mean()),
                        "test_fnir": float(1 - (ok & (m >= th[key])).mean()),
                        "test_fnir_oracle": float(1 - (ok & (m > thr(u, FPIR))).mean()),
                        "rank1": float(ok.mean()), "mated": int(len(m)),
                        "nonmated": int(len(u))})
        for r in sorted((r for r in rows if r["gallery"] == n and not quiet),
                        key=lambda r: (r["templates"], r["test_fnir"])):
            print("%4d %5d %d %-40s fpir %.4f fnir %.3f oracle %.3f" % (
                k, r["gallery"], r["templates"], r["score"], r["test_fpir_at_train_threshold"],
                r["test_fnir"], r["test_fnir_oracle"]))
        sys.stdout.flush()
    return rows, logistic


def summary(rows):
    """Per cohort size and cell: today's score, and the lowest test FNIR
    of any attempt."""
    out = []
    for k, n, t in sorted({(r["cohort"], r["gallery"], r["templates"]) for r in rows}):
        cell = [r for r in rows if (r["cohort"], r["gallery"], r["templates"]) == (k, n, t)]
        today = next(r for r in cell if r["score"].startswith("ratio_mean5"))
        best = min(cell, key=lambda r: r["test_fnir"])
        out.append({"cohort": k, "gallery": n, "templates": t, "rank1": today["rank1"],
                    "today_fnir": today["test_fnir"],
                    "today_fpir": today["test_fpir_at_train_threshold"],
                    "best_score": best["score"], "best_fnir": best["test_fnir"],
                    "best_fpir": best["test_fpir_at_train_threshold"]})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--emb", required=True)
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cohort-sizes", default=str(COHORT_SIZE))
    ap.add_argument("--out", default=str(RESULTS / "openset_cohort.json"))
    args = ap.parse_args()
    names, E = load(args.emb)
    by = index_people(names)
    lfw = DATA / "lfw"
    train = [p for p in people(lfw / "peopleDevTrain.txt") if by.get(p)]
    test = [p for p in people(lfw / "peopleDevTest.txt") if by.get(p)]
    res = {"machine": machine(), "cohort": "one photo each of K View 1 training people with "
           "a single photo (seed 99), removed from every gallery and probe set; K per row",
           "protocol": "thresholds and logistic fits on View 1 training people (seeds "
           "1000..), reported on View 1 test people as probes (seeds 7..), FPIR 1e-2",
           "rows": [], "logistic": {}}
    for k in [int(x) for x in args.cohort_sizes.split(",")]:
        rows, logistic = measure(E, by, train, test, k, [int(x) for x in args.sizes.split(",")],
                                 args.seeds)
        res["rows"] += rows
        res["logistic"][str(k)] = logistic
    res["summary"] = summary(res["rows"])
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
