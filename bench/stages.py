#!/usr/bin/env python3
"""Per-stage timings of faceverify next to dlib's, same images, same run.

Stages: decode, detect (MMOD), landmarks (5-point), chip (150x150), embed
(ResNet).  Ours: the per-stage timings `faceverify embed --json` reports
(the models are loaded before the clock starts).  dlib: the same steps
through dlib's Python API (dlib-bin) with the same .dat files, timed
around each call.  Medians over --runs repetitions, at 1 thread and at the
machine's cores.  Writes bench/results/stages.json.

  .venv/bin/python bench/stages.py [--runs 15]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEVERIFY_DATA", REPO.parent / "shared" / "data"))
MODELS = Path(os.environ.get("FACEVERIFY_MODELS", REPO / "models"))
CLI = Path(os.environ.get("FACEVERIFY_BUILD", REPO / "build")) / "bin" / "faceverify"
STAGES = ["decode", "detect", "landmarks", "chip", "embed"]
IMAGES = {
    "lfw_250x250": DATA / "lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
    "photo_1400x1050": DATA / "samples/openface/lennon-1.jpg",
}


def ours(path, threads, runs):
    rows = []
    for _ in range(runs):
        p = subprocess.run([str(CLI), "embed", str(path), "--json", "--upsample", "0",
                            "--threads", str(threads)], capture_output=True, text=True,
                           check=True, env=dict(os.environ, FACEVERIFY_MODELS=str(MODELS)))
        rows.append(json.loads(p.stdout)["timings_ms"])
    return {s: statistics.median(r[s] for r in rows) for s in STAGES}


def dlib_times(path, runs):
    import dlib
    det = dlib.cnn_face_detection_model_v1(str(MODELS / "mmod_human_face_detector.dat"))
    sp = dlib.shape_predictor(str(MODELS / "shape_predictor_5_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(MODELS / "dlib_face_recognition_resnet_model_v1.dat"))
    rows = []
    for _ in range(runs):
        t = {}
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
        for name, a, b in zip(STAGES, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
            t[name] = (b - a) * 1e3
        rows.append(t)
    return {s: statistics.median(r[s] for r in rows) for s in STAGES}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    cores = os.cpu_count()
    out = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": cores,
                       "blas": "OpenBLAS (pinned to 1 thread; faceverify's pool splits work)"},
           "runs": args.runs, "unit": "ms (median)", "images": {}}
    for name, path in IMAGES.items():
        res = {}
        for threads in sorted({1, cores}):
            res[f"faceverify_{threads}t"] = ours(path, threads, args.runs)
        # dlib: 1 thread via OMP/OPENBLAS env in a child, and default
        for threads in sorted({1, cores}):
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
            p = subprocess.run([sys.executable, __file__, "--dlib-child", str(path),
                                str(args.runs)], capture_output=True, text=True, env=env,
                               check=True)
            res[f"dlib_{threads}t"] = json.loads(p.stdout)
        for threads in sorted({1, cores}):
            o, d = res[f"faceverify_{threads}t"], res[f"dlib_{threads}t"]
            res[f"speedup_{threads}t"] = {s: d[s] / o[s] if o[s] > 0 else None for s in STAGES}
        out["images"][name] = res
    dest = REPO / "bench/results/stages.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--dlib-child":
        print(json.dumps(dlib_times(Path(sys.argv[2]), int(sys.argv[3]))))
    else:
        main()
