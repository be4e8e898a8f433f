#!/usr/bin/env python3
"""mmod_precision.py: MMOD's fast mode (bf16 convolutions) against exact.

Quality: on LFW (--lfw N images, every k-th of the sorted list) and on
the photos of bench/derive_detect.py's set (derived first when the folder
has no manifest; --quick for its quick set, which holds the sample photos
too), runs
`faceverify detect PHOTO --json --threads 1` with --precision exact and
with --precision fast (interleaved, the order alternating), the default
policy otherwise.  Reports: exact faces that fast finds with IoU >= 0.95
(and >= 0.5), faces only one mode finds, score differences on the
matched pairs (max, p99, median), and recall against the derived set's
truth for both modes (bench/detect_bench.py's matching).

Speed: MMOD alone (tests/tools/probe_detect, upsample 0, one thread, the
model loaded once, --repeat R) on a 250x250 LFW photo and on a sample
group photo (SPEED_SOURCE) resized to 0.3 MP and 1 MP, exact and fast interleaved in
rounds; medians and the exact/fast ratio.

Writes bench/results/mmod_precision.json (or --json).  Never part of the
test suite.

  .venv/bin/python bench/mmod_precision.py [--lfw 500] [--quick]
      [--data-out /tmp/detbench-quick] [--rounds 5]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("FACEVERIFY_BUILD", ROOT / "build"))
CLI = BUILD / "bin" / "faceverify"
PROBE = BUILD / "bin" / "probe_detect"
DATA = Path(os.environ.get("FACEVERIFY_DATA", ROOT.parent / "shared" / "data"))
MODELS = os.environ.get("FACEVERIFY_MODELS", str(ROOT / "models"))
sys.path.insert(0, str(ROOT / "bench"))
from detect_bench import iou, match  # noqa: E402
import machine  # noqa: E402

MODES = ("exact", "fast")
SPEED_SOURCE = "samples/facenet_pytorch/multiface.jpg"  # a group photo, resized


def detect(path, mode):
    env = dict(os.environ, FACEVERIFY_MODELS=MODELS, OPENBLAS_NUM_THREADS="1")
    p = subprocess.run([str(CLI), "detect", str(path), "--json", "--threads", "1",
                        "--precision", mode], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        return {"error": p.stderr.strip()[-200:]}
    d = json.loads(p.stdout)
    return {"boxes": [[f["box"][k] for k in ("left", "top", "right", "bottom")] for f in d["faces"]],
            "scores": [f["score"] for f in d["faces"]],
            "detect_ms": d["timings_ms"]["detect"]}


def compare(ex, fa):
    """Greedy IoU pairing of exact and fast faces: pairs (iou, |score diff|)
    and the unpaired counts of each side."""
    cand = sorted(((iou(a, b), i, j) for i, a in enumerate(ex["boxes"])
                   for j, b in enumerate(fa["boxes"])), reverse=True)
    used_i, used_j, pairs = set(), set(), []
    for v, i, j in cand:
        if v < 0.5 or i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        pairs.append((v, abs(ex["scores"][i] - fa["scores"][j]), ex["scores"][i]))
    return pairs, len(ex["boxes"]) - len(pairs), len(fa["boxes"]) - len(pairs)


def quality(items, label):
    tot = {"photos": 0, "exact_faces": 0, "fast_faces": 0, "iou_ge_095": 0, "iou_ge_05": 0,
           "only_exact": 0, "only_fast": 0, "errors": 0}
    diffs, ious, details = [], [], []
    truth_n = {m: 0 for m in MODES}
    truth_hit = {m: 0 for m in MODES}
    times = {m: [] for m in MODES}
    for k, it in enumerate(items):
        order = MODES if k % 2 == 0 else MODES[::-1]
        r = {m: detect(it["path"], m) for m in order}
        if any("error" in r[m] for m in MODES):
            tot["errors"] += 1
            details.append({"photo": it["name"], "error": [r[m].get("error") for m in MODES]})
            continue
        tot["photos"] += 1
        for m in MODES:
            times[m].append(r[m]["detect_ms"])
        pairs, oe, of = compare(r["exact"], r["fast"])
        tot["exact_faces"] += len(r["exact"]["boxes"])
        tot["fast_faces"] += len(r["fast"]["boxes"])
        tot["iou_ge_05"] += len(pairs)
        tot["iou_ge_095"] += sum(1 for p in pairs if p[0] >= 0.95)
        tot["only_exact"] += oe
        tot["only_fast"] += of
        diffs += [p[1] for p in pairs]
        ious += [p[0] for p in pairs]
        if oe or of or any(p[0] < 0.95 for p in pairs):
            details.append({"photo": it["name"], "exact": r["exact"], "fast": r["fast"]})
        if it.get("truth") is not None:
            for m in MODES:
                hit, _ = match(it["truth"], r[m]["boxes"])
                truth_n[m] += len(it["truth"])
                truth_hit[m] += len(hit)
        if (k + 1) % 50 == 0:
            print("%s %d/%d" % (label, k + 1, len(items)), file=sys.stderr, flush=True)
    diffs.sort()
    out = dict(tot)
    out["score_abs_diff"] = {
        "max": max(diffs) if diffs else None,
        "p99": diffs[int(0.99 * (len(diffs) - 1))] if diffs else None,
        "median": statistics.median(diffs) if diffs else None}
    out["iou_min"] = min(ious) if ious else None
    if any(truth_n.values()):
        out["recall"] = {m: truth_hit[m] / truth_n[m] for m in MODES}
        out["truth_faces"] = truth_n["exact"]
    out["detect_ms_median"] = {m: statistics.median(times[m]) if times[m] else None for m in MODES}
    out["disagreements"] = details[:40]
    return out


def lfw_items(n):
    paths = sorted((DATA / "lfw").glob("*/*.jpg"))
    step = max(1, len(paths) // n) if n else 1
    return [{"path": p, "name": str(p.relative_to(DATA))} for p in paths[::step][:n]]


def derived_items(out, quick):
    if not (out / "manifest.json").exists():
        cmd = [sys.executable, str(ROOT / "bench" / "derive_detect.py"), "--out", str(out)]
        subprocess.run(cmd + (["--quick"] if quick else []), check=True)
    man = json.loads((out / "manifest.json").read_text())
    return [{"path": it.get("path") or str(out / it["file"]), "name": it["file"],
             "truth": None if it["faces"] is None else [f["box"] for f in it["faces"]]}
            for it in man["images"]]


def speed(rounds, repeat):
    from PIL import Image
    lfw = DATA / "lfw" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"
    src_path = DATA / SPEED_SOURCE
    src = Image.open(src_path).convert("RGB")
    tmp = Path(tempfile.mkdtemp(prefix="mmod_precision_"))
    photos = {"250x250": {"path": str(lfw), "source": str(lfw.relative_to(DATA))}}
    for name, mp in (("0.3MP", 0.3e6), ("1MP", 1.0e6)):
        s = (mp / (src.size[0] * src.size[1])) ** 0.5
        im = src.resize((round(src.size[0] * s), round(src.size[1] * s)), Image.BILINEAR)
        p = tmp / ("%s.png" % name)
        im.save(p)
        photos[name] = {"path": str(p), "size": list(im.size),
                        "source": str(src_path.relative_to(DATA)) + " resized"}
    env = dict(os.environ, FACEVERIFY_MODELS=MODELS, OPENBLAS_NUM_THREADS="1")
    res = {}
    for name, ph in photos.items():
        ms = {m: [] for m in MODES}
        faces = {}
        for r in range(rounds):
            for m in (MODES if r % 2 == 0 else MODES[::-1]):
                p = subprocess.run([str(PROBE), "--precision", m, "--repeat", str(repeat),
                                    "--threads", "1", ph["path"]], capture_output=True, text=True,
                                   env=env, check=True)
                d = json.loads(p.stdout)
                ms[m] += d["ms"][1:]  # the first run of a process warms caches and pages
                faces[m] = d["faces"]
        med = {m: statistics.median(ms[m]) for m in MODES}
        res[name] = {"source": ph["source"], "size": [d["width"], d["height"]],
                     "median_ms": med, "runs": len(ms["exact"]),
                     "exact_over_fast": med["exact"] / med["fast"],
                     "faces": {m: len(faces[m]) for m in MODES}}
        print(name, res[name], file=sys.stderr, flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="derive_detect.py's quick set")
    ap.add_argument("--data-out", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--json", default=None, help="default bench/results/mmod_precision.json")
    a = ap.parse_args()
    res = {"machine": machine.machine(),
           "what": "MMOD --precision fast (bf16 convolutions, float accumulation) vs exact "
                   "(float32, dlib parity)"}
    if not a.skip_quality:
        out = Path(a.data_out or ("/tmp/detbench-quick" if a.quick else "/tmp/detbench"))
        res["quality"] = {
            "lfw": quality(lfw_items(a.lfw), "lfw"),
            "detect_bench" + ("_quick" if a.quick else ""): quality(derived_items(out, a.quick),
                                                                    "derived"),
        }
    res["speed_mmod_1thread"] = speed(a.rounds, a.repeat)
    machine.write_result("mmod_precision.json", res, a.json)
    print(json.dumps({k: v for k, v in res.items() if k != "quality"}, indent=1))
    for k, v in res.get("quality", {}).items():
        print(k, json.dumps({x: y for x, y in v.items() if x != "disagreements"}))


if __name__ == "__main__":
    main()
