"""Parity of the align module (src/align/) with dlib's Python API.

Both sides get the very same RGB pixels: images are decoded once by PIL
and handed to dlib as numpy arrays and to our probe (probe_align) as raw
RGB files, so decoder differences cannot hide or fake a mismatch.

* landmarks: dlib.shape_predictor and fvi_shape_predict on the same box
  (boxes from dlib's HOG detector, plus shifted / scaled / partly
  out-of-image variants of them); max point distance must be <= 0.5 px.
* chips: dlib.get_face_chip and fvi_face_chip on the same landmarks (dlib's
  landmarks plus synthetic ones: rotated, large enough to go through the
  image pyramid, partly outside the image); max abs difference per
  channel must be <= 1.

Environment: FACEVERIFY_BUILD (default <repo>/build) for bin/probe_align,
FACEVERIFY_DATA (default <repo>/../shared/data), FACEVERIFY_MODELS
(default <repo>/models).  Missing data, models or dlib skip, unless
FACEVERIFY_REQUIRE_DATA=1, which turns a skip into a failure.
"""
import csv
import json
import math
import os
import random
import subprocess
import tempfile

import pytest

from conftest import BUILD, DATA, MODELS, REQUIRE_DATA as REQUIRE, skip_or_fail as _skip

PROBE = str(BUILD / "bin" / "probe_align")
DATA = str(DATA)
MODELS = str(MODELS)
SP_MODEL = os.path.join(MODELS, "shape_predictor_5_face_landmarks.dat")

LFW_COUNT = 20
LANDMARK_TOL = 0.5
CHIP_TOL = 1


try:
    import dlib
    import numpy as np
    from PIL import Image
except ImportError as e:  # pragma: no cover - depends on the environment
    if REQUIRE:
        raise
    pytest.skip("dlib oracle unavailable: %s" % e, allow_module_level=True)


def _image_paths():
    """Single-face sample photos (labels.csv) and the first LFW images."""
    paths = []
    labels = os.path.join(DATA, "samples", "labels.csv")
    with open(labels, newline="") as f:
        for row in csv.DictReader(f):
            if row["identity"] in ("multi", "noface"):
                continue
            paths.append(os.path.join(DATA, "samples", row["path"]))
    lfw = os.path.join(DATA, "lfw")
    people = sorted(os.listdir(lfw))
    for name in people[:: max(1, len(people) // LFW_COUNT)][:LFW_COUNT]:
        p = os.path.join(lfw, name, name + "_0001.jpg")
        if os.path.exists(p):
            paths.append(p)
    return paths


@pytest.fixture(scope="module")
def env():
    if not os.path.isdir(DATA) or not os.path.exists(os.path.join(DATA, "samples", "labels.csv")):
        _skip("data folder %s not found" % DATA)
    if not os.path.exists(SP_MODEL):
        _skip("model %s not found" % SP_MODEL)
    if not os.access(PROBE, os.X_OK):
        _skip("probe %s not built" % PROBE)
    tmp = tempfile.mkdtemp(prefix="fv_align_")
    images = []
    for p in _image_paths():
        img = np.ascontiguousarray(np.array(Image.open(p).convert("RGB")))
        raw = os.path.join(tmp, "%d.rgb" % len(images))
        img.tofile(raw)
        images.append((os.path.relpath(p, DATA), img, raw))
    return {
        "tmp": tmp,
        "images": images,
        "sp": dlib.shape_predictor(SP_MODEL),
        "det": dlib.get_frontal_face_detector(),
    }


def _raw_args(img, raw):
    h, w = img.shape[:2]
    return ["--raw", str(w), str(h), raw]


def _probe(args):
    r = subprocess.run([PROBE] + args, capture_output=True, text=True)
    assert r.returncode == 0, "probe_align %s failed: %s" % (args[:2], r.stderr)
    return r.stdout


def _boxes(env, img):
    """dlib rectangles: detections plus perturbed and off-image variants."""
    h, w = img.shape[:2]
    dets = list(env["det"](img, 1))
    out = []
    rng = random.Random(1234 + w * 7 + h)
    for d in dets:
        out.append(dlib.rectangle(d.left(), d.top(), d.right(), d.bottom()))
        for _ in range(3):
            s = rng.uniform(0.8, 1.25)
            cw, ch = d.width() * s, d.height() * s
            cx = d.center().x + rng.uniform(-0.15, 0.15) * d.width()
            cy = d.center().y + rng.uniform(-0.15, 0.15) * d.height()
            out.append(dlib.rectangle(int(cx - cw / 2), int(cy - ch / 2), int(cx + cw / 2), int(cy + ch / 2)))
        # pushed half out of the image: features sampled outside are 0
        out.append(dlib.rectangle(d.left() - d.width() // 2 - 5, d.top(), d.right() - d.width() // 2 - 5, d.bottom()))
    if not dets:  # still compare on an arbitrary box
        out.append(dlib.rectangle(w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    return dets, out


def test_landmarks_match_dlib(env):
    worst, n = 0.0, 0
    for name, img, raw in env["images"]:
        _, boxes = _boxes(env, img)
        args = ["landmarks", SP_MODEL] + _raw_args(img, raw)
        for r in boxes:
            args += [str(r.left()), str(r.top()), str(r.right() + 1), str(r.bottom() + 1)]
        lines = _probe(args).strip().splitlines()
        assert len(lines) == len(boxes)
        for r, line in zip(boxes, lines):
            ours = json.loads(line)["points"]
            theirs = env["sp"](img, r)
            assert theirs.num_parts == len(ours) == 5
            d = max(
                math.hypot(ours[i][0] - theirs.part(i).x, ours[i][1] - theirs.part(i).y) for i in range(5)
            )
            assert d <= LANDMARK_TOL, "%s box %s: landmark deviation %.3f px" % (name, r, d)
            worst = max(worst, d)
            n += 1
    print("\nlandmarks: %d boxes on %d images, max deviation %.3f px" % (n, len(env["images"]), worst))
    assert n >= len(env["images"])


def _template_landmarks(rng, w, h):
    """A plausible 5-point face: dlib's template under a random similarity."""
    tmpl = [(0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677),
            (0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242),
            (0.4901123135679, 0.6277975316475)]
    size = rng.choice([rng.uniform(20, 80), rng.uniform(80, 300), rng.uniform(300, 900)])
    ang = rng.uniform(-1.2, 1.2)
    cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
    pts = []
    for x, y in tmpl:
        x, y = (x - 0.5) * size, (y - 0.5) * size
        jx, jy = rng.uniform(-0.03, 0.03) * size, rng.uniform(-0.03, 0.03) * size
        pts.append((int(round(cx + math.cos(ang) * x - math.sin(ang) * y + jx)),
                    int(round(cy + math.sin(ang) * x + math.cos(ang) * y + jy))))
    return pts


def test_chips_match_dlib(env):
    worst, n, differing = 0, 0, 0
    rng = random.Random(99)
    out = os.path.join(env["tmp"], "chips.rgb")
    for name, img, raw in env["images"]:
        h, w = img.shape[:2]
        dets, _ = _boxes(env, img)
        shapes = [[(s.part(i).x, s.part(i).y) for i in range(5)] for s in (env["sp"](img, d) for d in dets)]
        shapes += [_template_landmarks(rng, w, h) for _ in range(3)]
        args = ["chip"] + _raw_args(img, raw) + [out, "150", "0.25"]
        for pts in shapes:
            args += [str(v) for p in pts for v in p]
        _probe(args)
        ours = np.fromfile(out, dtype=np.uint8).reshape(len(shapes), 150, 150, 3)
        for k, pts in enumerate(shapes):
            det = dlib.full_object_detection(
                dlib.rectangle(0, 0, w - 1, h - 1), [dlib.point(x, y) for x, y in pts])
            theirs = dlib.get_face_chip(img, det, size=150, padding=0.25)
            diff = np.abs(ours[k].astype(int) - theirs.astype(int))
            assert diff.max() <= CHIP_TOL, "%s landmarks %s: chip deviation %d" % (name, pts, diff.max())
            worst = max(worst, int(diff.max()))
            differing += int((diff > 0).sum())
            n += 1
    print("\nchips: %d chips on %d images, max abs deviation %d, %d differing channel values"
          % (n, len(env["images"]), worst, differing))


def test_timing_report(env):
    """Median times of one landmark prediction and one chip (informative)."""
    for name, img, raw in env["images"][:3]:
        dets = list(env["det"](img, 1))
        if not dets:
            continue
        r = dets[0]
        args = ["time", SP_MODEL] + _raw_args(img, raw) + [
            str(r.left()), str(r.top()), str(r.right() + 1), str(r.bottom() + 1), "300"]
        t = json.loads(_probe(args))
        print("\n%s (%dx%d): landmarks %.1f us, chip %.1f us (median of %d)"
              % (name, img.shape[1], img.shape[0], t["landmarks_us"], t["chip_us"], t["n"]))
