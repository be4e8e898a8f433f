#!/usr/bin/env python3
"""Clustering faces into people: quality on LFW, time and memory at scale.

Quality: every LFW person with 2+ photos (1,680 people, 9,164 photos),
each photo's centre face (the labelled person; a bystander's identity is
unknown), clustered by build/bin/cluster_bench (src/search/cluster.c, the
code `faceverify cluster` and POST /api/v1/faces/cluster run) at several
strictness settings and with single linkage (connected components of the
same graph) for comparison.  Scores, noise counting as a singleton each:

  pairwise precision  of the pairs put in one cluster, the fraction that
                      are one person
  pairwise recall     of the pairs of one person, the fraction put in one
                      cluster
  BCubed P, R, F      per photo: of its cluster, the fraction that is its
                      person; of its person, the fraction in its cluster;
                      averaged over photos; F their harmonic mean
  people_split        people whose photos land in more than one cluster
                      (or in noise)
  people_merged       people who share a cluster with someone else
  noise               photos in no cluster

The same on a derived hard version: every one of those photos degraded by
one of bench/derive_hard.py's variants small, grey, blur, greysmall,
chosen per file by a seeded hash (derive_hard.rng_for(path,
"cluster-hard")), written under --hard-dir and embedded there with
`faceverify eval-pairs --pick center --dump-embeddings`.

Scale: time (fvsearch_cluster alone, --threads threads) and peak
resident memory (the whole cluster_bench process, from wait4) at 10,000
faces (the first 10,000 LFW embeddings by path) and 100,000 (all 13,233
LFW embeddings plus 86,767 synthetic ones: a random real embedding plus
Gaussian noise of norm about 0.3, seeded: "more photos of the same
people", which makes a dense graph, the harder case for the method).

  .venv/bin/python bench/cluster_lfw.py --emb lfw_clean.csv \\
      --hard-emb /tmp/fv-cluster-hard/hard_emb.csv

--derive-hard DIR writes the hard photos and DIR/hard_pairs.csv (then run
the printed eval-pairs command to embed them).  Writes
bench/results/cluster_lfw.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import BUILD, DATA, RESULTS, machine  # noqa: E402

BENCH = BUILD / "bin" / "cluster_bench"
HARD_VARIANTS = ("small", "grey", "blur", "greysmall")


def people_2plus():
    """Relative paths of every photo of every LFW person with 2+ photos."""
    rels = []
    for line in (DATA / "lfw" / "lfw-names.txt").read_text().splitlines():
        f = line.split()
        if len(f) == 2 and int(f[1]) >= 2:
            rels += ["%s/%s_%04d.jpg" % (f[0], f[0], i) for i in range(1, int(f[1]) + 1)]
    return rels


def derive_hard(out):
    from PIL import Image
    from derive_hard import derive, rng_for
    out = Path(out)
    rels = people_2plus()
    with open(out / "hard_pairs.csv", "w") as fp:
        fp.write("path_a,path_b,same\n")
        for rel in rels:
            v = HARD_VARIANTS[rng_for(rel, "cluster-hard").randrange(len(HARD_VARIANTS))]
            dest = out / "hard" / rel
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                img = Image.open(DATA / "lfw" / rel).convert("RGB")
                derive(img, v, rng_for(rel, v)).save(dest, "JPEG", quality=95)
            fp.write("%s,%s,1\n" % (rel, rel))
    print("%d photos; embed them with:\n  build/bin/faceverify eval-pairs --pairs %s "
          "--root %s --pick center --jobs 2 --dump-embeddings %s" %
          (len(rels), out / "hard_pairs.csv", out / "hard", out / "hard_emb.csv"))


def load(csv):
    """{relative path: embedding} of the rows with a detector face."""
    emb = {}
    for line in open(csv):
        f = line.rstrip("\n").split(",")
        if len(f) == 3 + 128 and f[1] == "ok" and f[2] == "detector":
            emb[f[0]] = np.array(f[3:], dtype=np.float32)
    return emb


def run_bench(x, strict, min_size=2, k=32, threads=2, method="chinese-whispers"):
    """Labels, the bench's JSON line and the peak RSS (MB) of one run."""
    with tempfile.TemporaryDirectory() as d:
        ef, lf = Path(d) / "emb.f32", Path(d) / "labels.i32"
        np.ascontiguousarray(x, dtype=np.float32).tofile(ef)
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        p = subprocess.Popen([str(BENCH), str(ef), str(lf), str(strict), str(min_size), str(k),
                              str(threads), method], stdout=subprocess.PIPE, text=True, env=env)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            raise SystemExit("cluster_bench failed (%d)" % p.returncode)
        info = json.loads(out)
        info["peak_rss_mb"] = round(ru.ru_maxrss / 1024, 1)
        return np.fromfile(lf, dtype=np.int32), info


def pairs(counts):
    return sum(c * (c - 1) // 2 for c in counts)


def score(labels, truth):
    """Pairwise and BCubed scores; noise (-1) is a singleton each."""
    n = len(labels)
    pred = [("c", l) if l >= 0 else ("n", i) for i, l in enumerate(labels)]
    joint = Counter(zip(pred, truth))
    psize, tsize = Counter(pred), Counter(truth)
    same = pairs(joint.values())
    p_pairs, t_pairs = pairs(psize.values()), pairs(tsize.values())
    bp = sum(joint[(pred[i], truth[i])] / psize[pred[i]] for i in range(n)) / n
    br = sum(joint[(pred[i], truth[i])] / tsize[truth[i]] for i in range(n)) / n
    groups_of = defaultdict(set)
    people_of = defaultdict(set)
    for (g, t) in joint:
        groups_of[t].add(g)
        people_of[g].add(t)
    merged = {t for g, ts in people_of.items() if len(ts) > 1 for t in ts}
    return {
        "faces": n,
        "people": len(tsize),
        "clusters": len({l for l in labels if l >= 0}),
        "noise": int(sum(1 for l in labels if l < 0)),
        "pairwise_precision": round(same / p_pairs, 4) if p_pairs else None,
        "pairwise_recall": round(same / t_pairs, 4),
        "bcubed_precision": round(bp, 4),
        "bcubed_recall": round(br, 4),
        "bcubed_f": round(2 * bp * br / (bp + br), 4),
        "people_split": sum(1 for t in tsize if len(groups_of[t]) > 1),
        "people_merged": len(merged),
        "clusters_mixed": sum(1 for g, ts in people_of.items() if len(ts) > 1),
    }


def quality(emb, settings, threads):
    rels = [r for r in people_2plus() if r in emb]
    x = np.stack([emb[r] for r in rels])
    truth = [r.split("/")[0] for r in rels]
    rows = []
    for strict, method in settings:
        labels, info = run_bench(x, strict, threads=threads, method=method)
        row = {"strictness": strict, "method": method, "threshold": info["threshold"],
               "seconds": info["seconds"]}
        row.update(score(labels.tolist(), truth))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows, len(people_2plus()) - len(rels)


def scale(emb, threads, sizes):
    keys = sorted(emb)
    real = np.stack([emb[k] for k in keys])
    rng = np.random.default_rng(19)
    out = []
    for n in sizes:
        if n <= len(real):
            x, how = real[:n], "first %d LFW embeddings by path" % n
        else:
            extra = n - len(real)
            base = real[rng.integers(0, len(real), extra)]
            noise = rng.standard_normal((extra, 128)).astype(np.float32) * (0.3 / np.sqrt(128))
            x = np.concatenate([real, base + noise])
            how = ("all %d LFW embeddings + %d synthetic (a random real one + Gaussian noise of "
                   "norm ~0.3, seed 19)" % (len(real), extra))
        labels, info = run_bench(x, "3e-5", threads=threads)
        row = {"faces": n, "data": how, "threads": threads, "seconds": info["seconds"],
               "peak_rss_mb": info["peak_rss_mb"], "clusters": info["clusters"],
               "noise": int((labels < 0).sum()),
               "input_mb": round(x.nbytes / 1e6, 1)}
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--emb", help="dump-embeddings CSV of LFW (paths relative to lfw/)")
    ap.add_argument("--hard-emb", help="the same for the hard photos")
    ap.add_argument("--derive-hard", metavar="DIR")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--out", default=str(RESULTS / "cluster_lfw.json"))
    args = ap.parse_args()
    if args.derive_hard:
        derive_hard(args.derive_hard)
        return
    t0 = time.time()
    settings = [("1e-4", "chinese-whispers"), ("3e-5", "chinese-whispers"),
                ("1e-5", "chinese-whispers"), ("3e-5", "components"),
                ("1e-5", "components")]
    emb = load(args.emb)
    res = {"machine": machine(), "method": __doc__.split("\n\n")[1:4],
           "command": " ".join(sys.argv)}
    res["lfw"], res["lfw_without_face"] = quality(emb, settings, args.threads)
    if args.hard_emb:
        res["hard"], res["hard_without_face"] = quality(load(args.hard_emb), settings,
                                                        args.threads)
        res["hard_variants"] = list(HARD_VARIANTS)
    res["scale"] = scale(emb, args.threads, [int(s) for s in args.sizes.split(",")])
    res["wall_s"] = round(time.time() - t0, 1)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
