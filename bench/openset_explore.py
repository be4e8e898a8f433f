#!/usr/bin/env python3
"""Which open-set identification rule to ship: measured, not guessed.

Reads per-image embeddings (`faceverify eval-pairs --dump-embeddings`) of
all LFW, builds galleries of N enrolled people (T templates each) from the
View 1 training people, and for several normalised scores measures FNIR at
FPIR 1e-2 (threshold from the training people), then checks the same
thresholds on View 1 test people.  Writes bench/results/openset_explore.json.

  .venv/bin/python bench/openset_explore.py --emb lfw_clean.csv
"""
import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import DATA, RESULTS  # noqa: E402


def load(path):
    names, vecs = [], []
    for line in Path(path).read_text().splitlines():
        f = line.split(",")
        if len(f) > 3 and f[2] == "detector":
            names.append(f[0])
            vecs.append([float(x) for x in f[3:]])
    return names, np.array(vecs, dtype=np.float32)


def index_people(names):
    """Row indices of each person's images (the folder of the path)."""
    by = {}
    for i, nme in enumerate(names):
        by.setdefault(nme.split("/")[0], []).append(i)
    return by


def people(file):
    return [l.split("\t")[0] for l in Path(file).read_text().splitlines()[1:]
            if len(l.split("\t")) == 2]


def build(rng, by_person, pool, fill_pool, n, t):
    """Gallery of n subjects: mated (>= t+1 images) from pool, up to n/2,
    then filler from fill_pool.  Returns gallery [(person, [idx])], mated
    probes [(idx, gallery position)], non-mated probes [idx]."""
    avail = [p for p in pool if len(by_person.get(p, [])) >= t + 1]
    rng.shuffle(avail)
    mated = avail[:min(len(avail), n // 2)]
    used = set(mated)
    filler = [p for p in fill_pool if p not in used and len(by_person.get(p, [])) >= 1]
    rng.shuffle(filler)
    filler = filler[:n - len(mated)]
    gallery, mp = [], []
    for p in mated:
        imgs = list(by_person[p])
        rng.shuffle(imgs)
        gallery.append((p, imgs[:t]))
        mp += [(i, len(gallery) - 1) for i in imgs[t:]]
    for p in filler:
        imgs = list(by_person[p])
        rng.shuffle(imgs)
        gallery.append((p, imgs[:t]))
    used |= set(filler)
    nm = [i for p in pool if p not in used for i in by_person.get(p, [])]
    return gallery, mp, nm


def templates(E, gallery, fuse):
    if fuse == "mean":
        return np.stack([E[idx].mean(0) for _, idx in gallery]), None
    if fuse == "unit":
        out = []
        for _, idx in gallery:
            v = E[idx]
            nrm = np.linalg.norm(v, axis=1, keepdims=True)
            m = (v / nrm).mean(0)
            out.append(m / np.linalg.norm(m) * nrm.mean())
        return np.stack(out), None
    # min: every template, with its subject
    rows, subj = [], []
    for s, (_, idx) in enumerate(gallery):
        rows += list(idx)
        subj += [s] * len(idx)
    return E[rows], np.array(subj)


def dists(P, T):
    """Euclidean distances of every row of P to every row of T."""
    pp = (P.astype(np.float64) ** 2).sum(1)[:, None]
    tt = (T.astype(np.float64) ** 2).sum(1)[None, :]
    return np.sqrt(np.maximum(pp + tt - 2 * (P.astype(np.float64) @ T.T.astype(np.float64)), 0))


def subject_dists(E, probes, tmpl, subj, nsub):
    """Probe x subject distance (min over a subject's templates)."""
    d = dists(E[probes], tmpl)
    if subj is None:
        return d
    out = np.full((len(probes), nsub), np.inf, dtype=np.float32)
    for s in range(nsub):
        out[:, s] = d[:, subj == s].min(1)
    return out


COHORT = 20


def scores(D):
    """Per probe: rank-1 subject and several candidate scores (higher = more
    confident).  D: probe x subject distances."""
    order = np.argsort(D, 1)
    top = order[:, 0]
    s = np.take_along_axis(D, order[:, :COHORT + 1], 1)
    d1, d2 = s[:, 0], s[:, 1] if s.shape[1] > 1 else s[:, 0] + 1
    coh = s[:, 1:]
    mu, sd = coh.mean(1), coh.std(1) + 1e-6
    return top, {
        "distance": -d1,
        "ratio": -(d1 / d2),
        "margin": d2 - d1,
        "ratio_mean5": -(d1 / s[:, 1:6].mean(1)),
        "tnorm": (mu - d1) / sd,
        "tnorm_d2": (d2 - d1) / sd,
        "hybrid": (mu - d1) / sd - 8 * np.maximum(d1 - 0.55, 0),
    }


def run(E, by_person, pool, fill, n, t, fuse, seed):
    gallery, mp, nm = build(random.Random(seed), by_person, pool, fill, n, t)
    tm, subj = templates(E, gallery, fuse)
    mi = [i for i, _ in mp]
    truth = np.array([g for _, g in mp])
    Dm = subject_dists(E, mi, tm, subj, len(gallery))
    Dn = subject_dists(E, nm, tm, subj, len(gallery))
    tm_, sm = scores(Dm)
    _, sn = scores(Dn)
    return {k: (sm[k], sn[k], tm_ == truth) for k in sm}


def thr_at(sn, fpir):
    s = np.sort(sn)[::-1]
    k = int(np.floor(fpir * len(s)))
    return s[k] if k < len(s) else s[-1] - 1e-6  # accept strictly above


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--emb", required=True)
    ap.add_argument("--fuse", default="mean,unit,min")
    args = ap.parse_args()
    names, E = load(args.emb)
    lfw = DATA / "lfw"
    by_person = index_people(names)
    train, test = people(lfw / "peopleDevTrain.txt"), people(lfw / "peopleDevTest.txt")
    norms = np.linalg.norm(E, axis=1)
    res = {"images": len(names), "norm_median": float(np.median(norms)), "runs": []}
    for fuse in args.fuse.split(","):
        for t in (1, 3):
            for n in (100, 1000, 3000):
                r_tr = run(E, by_person, train, train, n, t, fuse, 1)
                r_te = run(E, by_person, test, train + test, n if n < 3000 else 1000, t, fuse, 2)
                for k in r_tr:
                    sm, sn, ok = r_tr[k]
                    th = thr_at(sn, 1e-2)
                    sm2, sn2, ok2 = r_te[k]
                    row = {"fuse": fuse, "templates": t, "n": n, "score": k,
                           "train_fnir@1e-2": float(1 - np.mean(ok & (sm > th))),
                           "test_fpir_at_train_thr": float(np.mean(sn2 > th)),
                           "test_fnir": float(1 - np.mean(ok2 & (sm2 > th))),
                           "rank1_train": float(np.mean(ok)),
                           "nonmated_train": len(sn), "mated_train": len(sm)}
                    res["runs"].append(row)
                    print(json.dumps(row))
    (RESULTS / "openset_explore.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
