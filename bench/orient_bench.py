#!/usr/bin/env python3
"""orient_bench.py: what finding turned photos by default costs and buys.

Runs libfaceverify in this process (ctypes, the build's shared library),
one thread, fv_detect with the default options and try_rotations on
against off, interleaved per photo (off, on, off, on, ...), median of
--reps runs each:

  noface_time  the worst case: no face anywhere, so every turned pass
               runs (the upright pass, then three turned passes at a
               reduced scale); photos of 0.3, 1 and 12 MP made from
               bench/derive_detect.py's no-face backgrounds
  noface_false detections on every no-face photo of the detection set
               (bench/derive_detect.py, --set), rotations on and off:
               the false-detection rate must not rise
  turned       the set's turned photos (90/180/270 and +-30 degrees,
               pixels only): found (IoU >= 0.4 with the truth) on and off
  lfw          N LFW images (seeded draw) upright and turned 90/180/270
               (numpy rot90): with rotations, is the upright image's face
               unchanged (same box), and is each turned copy's face found
               upright (its 5 landmarks mapped back within 6 px of the
               upright image's)?  And the time of the upright images, on
               against off (the orientation check on a confident face).

Writes bench/results/orientation.json.  Never part of the test suite.

  FACEVERIFY_LIBRARY=build/lib/libfaceverify.so .venv/bin/python \\
      bench/orient_bench.py --set /tmp/detbench [--lfw 60] [--reps 5]
"""
import argparse
import json
import os
import random
import statistics
import sys
import time
from ctypes import byref, c_size_t, create_string_buffer
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import BUILD, DATA, REPO, machine, write_result  # noqa: E402

os.environ.setdefault("FACEVERIFY_LIBRARY", str(BUILD / "lib" / "libfaceverify.so"))
sys.path.insert(0, str(REPO / "python"))
from faceverify import _lib, api  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from fit_haar_mapping import iou  # noqa: E402


class Detector:
    def __init__(self):
        self.eng = api.Engine(threads=1)
        self.lib = self.eng._lib

    def __call__(self, arr, rot):
        """(faces as (ltrb box, score, 5x2 landmarks), seconds)."""
        opt = _lib.DetectOptions()
        self.lib.fv_detect_options_init(byref(opt))
        opt.try_rotations = rot
        faces = (_lib.Face * 256)()
        n = c_size_t(0)
        err = create_string_buffer(_lib.ERR_LEN)
        with api._Image(np.ascontiguousarray(arr)) as im:
            t = time.perf_counter()
            st = self.lib.fv_detect(self.eng._handle, im, byref(opt), faces, 256, byref(n), err,
                                    _lib.ERR_LEN)
            dt = time.perf_counter() - t
        if st != _lib.OK:
            raise RuntimeError(err.value.decode())
        out = [((f.left, f.top, f.right, f.bottom), f.score,
                np.array([(p.x, p.y) for p in f.landmarks])) for f in faces[:min(n.value, 256)]]
        return out, dt


def load(path):
    return np.asarray(Image.open(path).convert("RGB"))


def noface_time(det, setdir, reps):
    """ms on no-face photos of 0.3, 1 and 12 MP, off and on, interleaved."""
    out = {}
    for mp in ("0.3", "1", "12"):
        arr = load(setdir / ("noface_%smp_fill.jpg" % mp))
        off, on = [], []
        for _ in range(reps):
            off.append(det(arr, 0)[1] * 1e3)
            on.append(det(arr, 1)[1] * 1e3)
        mo, mn = statistics.median(off), statistics.median(on)
        out[mp] = {"width": arr.shape[1], "height": arr.shape[0], "off_ms": round(mo, 1),
                   "on_ms": round(mn, 1), "ratio": round(mn / mo, 2), "reps": reps}
        print("noface %s MP: off %.0f ms, on %.0f ms" % (mp, mo, mn), flush=True)
    return out


def set_images(setdir, kind):
    man = json.loads((setdir / "manifest.json").read_text())
    return [i for i in man["images"] if i["kind"] == kind]


def noface_false(det, setdir):
    res = {"photos": 0, "mp": 0.0, "off": 0, "on": 0, "per_photo": {}}
    for item in set_images(setdir, "noface"):
        arr = load(setdir / item["file"])
        a, _ = det(arr, 0)
        b, _ = det(arr, 1)
        res["photos"] += 1
        res["mp"] += item["mp"]
        res["off"] += len(a)
        res["on"] += len(b)
        res["per_photo"][item["file"]] = [len(a), len(b)]
    res["mp"] = round(res["mp"], 3)
    print("noface false detections: off %d, on %d on %.1f MP" % (res["off"], res["on"], res["mp"]),
          flush=True)
    return res


def turned(det, setdir):
    res = {}
    for item in set_images(setdir, "turned"):
        arr = load(setdir / item["file"])
        truth = item["faces"][0]["box"]
        row = {}
        for name, rot in (("off", 0), ("on", 1)):
            faces, dt = det(arr, rot)
            row[name] = any(iou(f[0], truth) >= 0.4 for f in faces)
            row[name + "_ms"] = round(dt * 1e3, 1)
        res[item["file"]] = dict(row, angle=item["angle"])
        print("turned", item["file"], row, flush=True)
    by = {}
    for v in res.values():
        b = by.setdefault(str(v["angle"]), {"total": 0, "off": 0, "on": 0})
        b["total"] += 1
        b["off"] += v["off"]
        b["on"] += v["on"]
    return {"by_angle": by, "per_photo": res}


def back(q, k, w, h):
    """Landmarks of np.rot90(img, k) mapped back to img (w x h)."""
    if k == 1:
        return np.stack([w - 1 - q[:, 1], q[:, 0]], 1)
    if k == 2:
        return np.stack([w - 1 - q[:, 0], h - 1 - q[:, 1]], 1)
    return np.stack([q[:, 1], h - 1 - q[:, 0]], 1)


def lfw(det, n, seed):
    people = sorted(p for p in (DATA / "lfw").iterdir() if p.is_dir())
    random.Random(seed).shuffle(people)
    res = {"images": 0, "upright_changed": [], "turned_right": {"90": 0, "180": 0, "270": 0},
           "turned_wrong": [], "upright_off_ms": [], "upright_on_ms": []}
    for p in people[:n]:
        arr = load(sorted(p.glob("*.jpg"))[0])
        ref, toff = det(arr, 0)
        if not ref:
            continue
        got, ton = det(arr, 1)
        res["images"] += 1
        res["upright_off_ms"].append(toff * 1e3)
        res["upright_on_ms"].append(ton * 1e3)
        if not got or got[0][0] != ref[0][0]:
            res["upright_changed"].append(p.name)
        h, w = arr.shape[:2]
        for k, a in ((1, "90"), (2, "180"), (3, "270")):
            faces, _ = det(np.rot90(arr, k), 1)
            ok = bool(faces) and np.abs(back(faces[0][2], k, w, h) - ref[0][2]).max() < 6
            if ok:
                res["turned_right"][a] += 1
            else:
                res["turned_wrong"].append("%s %s" % (p.name, a))
    mo = statistics.median(res.pop("upright_off_ms"))
    mn = statistics.median(res.pop("upright_on_ms"))
    res["upright_median_ms"] = {"off": round(mo, 1), "on": round(mn, 1), "ratio": round(mn / mo, 2)}
    print("lfw", res, flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="/tmp/detbench", help="bench/derive_detect.py's output")
    ap.add_argument("--lfw", type=int, default=60)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    setdir = Path(a.set)
    if not (setdir / "manifest.json").exists():
        sys.exit("no detection set at %s: run bench/derive_detect.py --out %s" % (setdir, setdir))
    det = Detector()
    t0 = time.time()
    out = {"what": "try_rotations on (the default) against off: cost and what it finds",
           "threads": 1, "machine": machine()}
    out["noface_time_ms"] = noface_time(det, setdir, a.reps)
    out["noface_false_detections"] = noface_false(det, setdir)
    out["turned_set"] = turned(det, setdir)
    out["lfw"] = dict(lfw(det, a.lfw, a.seed), n_drawn=a.lfw, seed=a.seed)
    out["wall_s"] = round(time.time() - t0, 1)
    print("->", write_result("orientation.json", out, a.json))


if __name__ == "__main__":
    main()
