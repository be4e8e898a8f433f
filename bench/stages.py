#!/usr/bin/env python3
"""Per-stage timings of faceverify next to dlib's, same images, same run.

Ours: build/bin/bench_stages (bench/c/bench_stages.c) through the public
API, models loaded before the clock: decode, detect (MMOD and Haar),
landmarks, chip, embed (one chip; per face in batches of 8 and 32),
compare; median and p95 over --runs, at 1 thread and at 2.  The embedding's
GFLOP/s is set against the machine's measured sgemm rate
(build/bin/sgemm_peak, OpenBLAS at our convolution shapes, same thread
count, measured right before each of our runs).  dlib: the same steps through dlib's Python API (dlib-bin, the
same .dat files), timed around each call, in a child process with
OMP/OPENBLAS_NUM_THREADS set to the thread count.  Images: a 250x250 LFW
image and a 1400x1050 (1.5 MP) photo from samples.  Writes
bench/results/stages.json.

The convolution layers alone: bench_stages times each convolution of the
embedding (a bench-only build of src/embed/embed.c), and their GFLOP/s
(conv FLOPs over the time in the conv layers: im2col, sgemm, bias, fused
relu) is set against the same sgemm peak as conv_gflops and
conv_vs_sgemm_peak per batch, with a per-layer table in embed_profile.  The
peak is measured right before and right after each of our runs; the higher
of the two is the yardstick (the machine is shared: the lower one is the
one a neighbour slowed down).

  .venv/bin/python bench/stages.py [--runs 15] [--threads 1,2]
  .venv/bin/python bench/stages.py --embed-only [--threads 1]

--embed-only times only the embedding of the LFW chip (ours and dlib's,
same run) and merges it into the existing stages.json, leaving the other
stages' numbers as they were.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import BUILD, DATA, MODELS, RESULTS, machine, write_result  # noqa: E402

STAGES = ["decode", "detect", "landmarks", "chip", "embed"]
IMAGES = {
    "lfw_250x250": DATA / "lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
    "photo_1400x1050": DATA / "samples/openface/lennon-1.jpg",
}


def ours(path, threads, runs, embed_only=False):
    """bench_stages between two sgemm peak measurements; adds the ratios."""
    g0 = sgemm(threads)
    p = subprocess.run([str(BUILD / "bin" / "bench_stages"), str(path), "--threads", str(threads),
                        "--runs", str(runs), "--embed-only", "1" if embed_only else "0"],
                       capture_output=True, text=True, check=True,
                       env=dict(os.environ, FACEVERIFY_MODELS=str(MODELS)))
    g1 = sgemm(threads)
    o = json.loads(p.stdout)
    peak = max(g0["peak_gflops"], g1["peak_gflops"])
    o["sgemm_peak_gflops_before_after"] = [g0["peak_gflops"], g1["peak_gflops"]]
    o["sgemm_peak_gflops"] = peak
    o["embed_vs_sgemm_peak"] = {k: v / peak for k, v in o["embed_gflops"].items()}
    o["conv_gflops"] = {k: v["conv_gflops"] for k, v in o["embed_profile"].items()}
    o["conv_vs_sgemm_peak"] = {k: v / peak for k, v in o["conv_gflops"].items()}
    return o, (g0 if g0["peak_gflops"] >= g1["peak_gflops"] else g1)


def sgemm(threads):
    p = subprocess.run([str(BUILD / "bin" / "sgemm_peak"), "--threads", str(threads),
                        "--seconds", "1"], capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def summary(v):
    v = sorted(v)
    return {"median_ms": statistics.median(v),
            "p95_ms": v[min(len(v) - 1, int(0.95 * (len(v) - 1) + 0.999))], "n": len(v)}


def dlib_embed_times(path, runs):
    """dlib's compute_face_descriptor alone, on the chip of the largest face."""
    import dlib
    det = dlib.cnn_face_detection_model_v1(str(MODELS / "mmod_human_face_detector.dat"))
    sp = dlib.shape_predictor(str(MODELS / "shape_predictor_5_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(MODELS / "dlib_face_recognition_resnet_model_v1.dat"))
    img = dlib.load_rgb_image(str(path))
    rect = max(det(img, 0), key=lambda d: d.rect.area()).rect
    chip = dlib.get_face_chip(img, sp(img, rect), size=150, padding=0.25)
    rows = []
    for r in range(runs + 1):
        t0 = time.perf_counter()
        rec.compute_face_descriptor(chip)
        if r:  # the first is a warm-up, as bench_stages does
            rows.append((time.perf_counter() - t0) * 1e3)
    return {"embed": summary(rows)}


def dlib_child(path, runs, embed_only, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    p = subprocess.run([sys.executable, __file__, "--dlib-child", str(path), str(runs),
                        "embed" if embed_only else "all"],
                       capture_output=True, text=True, env=env, check=True)
    return json.loads(p.stdout)


EMBED_KEYS = ["sgemm_peak_gflops", "sgemm_peak_gflops_before_after", "embed_gflops",
              "embed_vs_sgemm_peak", "conv_gflops", "conv_vs_sgemm_peak", "embed_profile",
              "resnet_gflop", "runs"]


def embed_only(args, threads):
    """Times the embedding alone and merges it into the existing stages.json."""
    dest = RESULTS / "stages.json"
    out = json.loads(dest.read_text())
    res = out["images"]["lfw_250x250"]
    path = IMAGES["lfw_250x250"]
    for t in threads:
        o, g = ours(path, t, args.runs, embed_only=True)
        out["sgemm"][f"{t}t"] = g
        mine = res.setdefault(f"faceverify_{t}t", {"stages": {}})
        for k, v in o["stages"].items():
            mine["stages"][k] = v
        for k in EMBED_KEYS:
            mine[k] = o[k]
        mine.pop("sgemm_peak_gflops_just_before", None)  # the older single measurement
        d = dlib_child(path, args.runs, True, t)
        res.setdefault(f"dlib_{t}t", {})["embed"] = d["embed"]
        sp = res.setdefault(f"speedup_vs_dlib_{t}t", {})
        sp["embed"] = d["embed"]["median_ms"] / o["stages"]["embed_batch1_per_face"]["median_ms"]
        print("lfw_250x250", t, "embed vs dlib %.2fx" % sp["embed"],
              "conv/peak", json.dumps(o["conv_vs_sgemm_peak"]), flush=True)
    out["embed_rerun"] = {"command": "python bench/stages.py --embed-only --runs %d --threads %s"
                          % (args.runs, args.threads), "machine": machine(),
                          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print("wrote", write_result("stages.json", out))


def dlib_times(path, runs):
    import dlib
    det = dlib.cnn_face_detection_model_v1(str(MODELS / "mmod_human_face_detector.dat"))
    sp = dlib.shape_predictor(str(MODELS / "shape_predictor_5_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(MODELS / "dlib_face_recognition_resnet_model_v1.dat"))
    rows = {s: [] for s in STAGES}
    for r in range(runs + 1):
        t0 = time.perf_counter()
        img = dlib.load_rgb_image(str(path))
        t1 = time.perf_counter()
        dets = det(img, 0)
        t2 = time.perf_counter()
        rect = max(dets, key=lambda d: d.rect.area()).rect
        shape = sp(img, rect)
        t3 = time.perf_counter()
        chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
        t4 = time.perf_counter()
        rec.compute_face_descriptor(chip)
        t5 = time.perf_counter()
        if r == 0:
            continue  # warm-up, as bench_stages does
        for name, a, b in zip(STAGES, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
            rows[name].append((b - a) * 1e3)
    return {s: summary(v) for s, v in rows.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--embed-only", action="store_true",
                    help="time only the embedding and merge it into the existing stages.json")
    args = ap.parse_args()
    threads = [int(x) for x in args.threads.split(",")]
    if args.embed_only:
        return embed_only(args, threads)
    out = {"machine": machine(), "runs": args.runs, "unit": "ms", "images": {},
           "sgemm": {}, "command": "python bench/stages.py --runs %d" % args.runs}
    for t in threads:
        out["sgemm"][f"{t}t"] = sgemm(t)
    for name, path in IMAGES.items():
        res = {}
        for t in threads:
            # the sgemm yardstick is measured again around our run, so that
            # both see the same machine (it is shared; its load changes by the minute)
            o, _ = ours(path, t, args.runs)
            res[f"faceverify_{t}t"] = o
            # dlib on a megapixel photo takes seconds per detection: fewer runs
            druns = args.runs if "lfw" in name else max(2, args.runs // 5)
            d = dlib_child(path, druns, False, t)
            res[f"dlib_{t}t"] = d
            st = o["stages"]
            mine = {"decode": st["decode"], "detect": st["detect_mmod"],
                    "landmarks": st["landmarks"], "chip": st["chip"],
                    "embed": st["embed_batch1_per_face"]}
            res[f"speedup_vs_dlib_{t}t"] = {
                s: d[s]["median_ms"] / mine[s]["median_ms"] for s in STAGES}
            print(name, t, json.dumps(res[f"speedup_vs_dlib_{t}t"]), flush=True)
        out["images"][name] = res
    dest = write_result("stages.json", out)
    print("wrote", dest)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--dlib-child":
        fn = dlib_embed_times if sys.argv[4] == "embed" else dlib_times
        print(json.dumps(fn(Path(sys.argv[2]), int(sys.argv[3]))))
    else:
        main()
