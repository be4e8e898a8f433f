"""The Haar cascade detector (src/detect/haar.c) against OpenCV, and the
pipeline on Haar boxes.

1. Parity: build/bin/probe_haar detects on an image and writes the grey
   image it used (--dump-gray); cv2.CascadeClassifier runs the same cascade
   with the same parameters on that very grey image, so decoder differences
   cannot hide or fake a mismatch.  Same number of boxes, each matched to one
   of ours within MAX_PX pixels per side or IoU >= 0.9.  (In practice the
   boxes are identical: the pyramid, the bit-exact resize, the window scan
   and groupRectangles follow OpenCV 4.x step by step.)
2. Through the CLI (`faceverify detect --detector haar`): a face in every
   frontal portrait and several in the group photos.  Nothing is asserted
   on the no-face images: Haar cascades do have false positives.
3. Verification on Haar boxes (which the engine maps to dlib's box
   convention before the shape predictor): every same-person and
   different-person portrait pair that MMOD gets right, Haar gets right too,
   and the landmarks on Haar boxes land close to those on MMOD boxes.

Needs opencv-python-headless (requirements-test.txt) for part 1 and the
cascades of Debian's opencv-data (FACEVERIFY_CASCADES or
/usr/share/opencv4/haarcascades).  Missing data, cv2 or cascades skip,
unless FACEVERIFY_REQUIRE_DATA=1.
"""
import csv
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BUILD, DATA, REQUIRE_DATA, need, run_json, skip_or_fail as _skip
from test_cli import PORTRAITS

PROBE = BUILD / "bin" / "probe_haar"
CASCADES = Path(os.environ.get("FACEVERIFY_CASCADES", "/usr/share/opencv4/haarcascades"))
DEFAULT = "haarcascade_frontalface_default.xml"
ALT2 = "haarcascade_frontalface_alt2.xml"
MAX_PX = 3

GROUPS = {"openface/longoria-cooper.jpg": 2, "facenet_pytorch/multiface.jpg": 3}


@pytest.fixture(scope="module")
def cv2():
    try:
        import cv2 as mod
    except ImportError as e:
        _skip(f"opencv-python-headless unavailable: {e}")
    return mod


@pytest.fixture(scope="module")
def cascades():
    for name in (DEFAULT, ALT2):
        if not (CASCADES / name).exists():
            _skip(f"cascade not installed: {CASCADES / name}")
    return CASCADES


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / (aw * ah + bw * bh - iw * ih)


def close(a, b):
    return max(abs(a[0] - b[0]), abs(a[1] - b[1]), abs(a[0] + a[2] - b[0] - b[2]),
               abs(a[1] + a[3] - b[1] - b[3])) <= MAX_PX or iou(a, b) >= 0.9


def probe(image, cascade, gray_out, min_neighbors=3, scale=1.1):
    if not PROBE.exists():
        pytest.fail(f"{PROBE} not built")
    p = subprocess.run([str(PROBE), "--threads", "2", "--cascade", str(cascade), "--scale",
                        str(scale), "--min-neighbors", str(min_neighbors), "--dump-gray",
                        gray_out, str(image)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


PARITY_CASES = [(DEFAULT, path) for path in
                PORTRAITS + list(GROUPS) + ["skimage/rocket.jpg", "skimage/coffee.png",
                                            "derived/carell_rot90.jpg",
                                            "derived/lennon-1_small_in_1280x960.jpg"]]
PARITY_CASES += [(ALT2, path) for path in PORTRAITS[:6] + list(GROUPS)]
PARITY_CASES += [(DEFAULT, "openface/clapton-2.jpg#raw")]  # min neighbours 0: every raw hit


@pytest.mark.parametrize("cascade,path", PARITY_CASES)
def test_boxes_match_opencv(cv2, cascades, samples, cascade, path):
    raw = path.endswith("#raw")
    path = path.removesuffix("#raw")
    mn = 0 if raw else 3
    with tempfile.TemporaryDirectory() as tmp:
        gray_path = os.path.join(tmp, "g.pgm")
        ours = [tuple(r[:4]) for r in probe(samples / path, cascades / cascade, gray_path, mn)["rects"]]
        gray = cv2.imread(gray_path, cv2.IMREAD_UNCHANGED)
    assert gray is not None and gray.ndim == 2
    cc = cv2.CascadeClassifier(str(cascades / cascade))
    assert not cc.empty()
    ref = [tuple(int(v) for v in r) for r in cc.detectMultiScale(gray, 1.1, mn)]
    assert len(ours) == len(ref), (sorted(ours), sorted(ref))
    unmatched = one_to_one(ref, ours)
    assert not unmatched, f"OpenCV boxes {unmatched} have no counterpart in {sorted(ours)}"


def one_to_one(ref, ours):
    """OpenCV boxes left without a counterpart under the best one-to-one
    matching (augmenting paths).  A greedy first-close pick depends on the
    order the boxes come in, which OpenCV's threads vary: with raw hits
    (min neighbours 0) near-duplicate boxes could steal each other's match."""
    owner = {}  # index in ours -> index in ref

    def augment(i, seen):
        for j, o in enumerate(ours):
            if j in seen or not close(o, ref[i]):
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    return [r for i, r in enumerate(ref) if not augment(i, set())]


def test_grey_matches_opencv(cv2, cascades, samples):
    """Our grey is cv2.cvtColor(RGB2GRAY) of our decoded pixels: check it on
    the PNG samples, whose decoding is exact in both libraries."""
    for path in ["skimage/coffee.png", "skimage/chelsea.png", "openface_aligned/adams.png"]:
        with tempfile.TemporaryDirectory() as tmp:
            gray_path = os.path.join(tmp, "g.pgm")
            probe(samples / path, CASCADES / DEFAULT, gray_path)
            ours = cv2.imread(gray_path, cv2.IMREAD_UNCHANGED)
        bgr = cv2.imread(str(samples / path), cv2.IMREAD_COLOR)
        ref = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        assert ours.shape == ref.shape
        assert (ours == ref).all(), path


def detect_haar(image, *extra):
    return run_json("detect", image, "--detector", "haar", *extra)


@pytest.mark.parametrize("path", PORTRAITS)
def test_finds_frontal_portraits(cascades, samples, path):
    j = detect_haar(samples / path)
    assert j["detector"] == "haar"
    assert j["count"] >= 1, path
    f = j["faces"][0]
    w = f["box"]["right"] - f["box"]["left"]
    assert w >= 40 and f["score"] >= 4  # min neighbours 3: at least 4 hits


@pytest.mark.parametrize("path,least", list(GROUPS.items()))
def test_finds_several_in_group_photos(cascades, samples, path, least):
    assert detect_haar(samples / path)["count"] >= least


def test_haar_options(cascades, samples):
    img = samples / "openface/clapton-2.jpg"
    alt2 = detect_haar(img, "--cascade", CASCADES / ALT2, "--min-neighbors", "5",
                       "--scale-factor", "1.2")
    assert alt2["count"] == 1
    big_only = detect_haar(img, "--min-size", "400")
    assert big_only["count"] == 0
    from conftest import run_cli
    bad = run_cli("detect", img, "--detector", "haar", "--cascade", "/nonexistent.xml")
    assert bad.returncode == 3 and "cascade" in bad.stderr
    assert run_cli("detect", img, "--detector", "haar", "--scale-factor", "1.0").returncode == 2
    # an engine whose cascade is missing still serves MMOD
    assert run_cli("detect", img, "--cascade", "/nonexistent.xml").returncode == 0


@pytest.fixture(scope="module")
def embeddings(cascades, samples):
    out = {}
    for det in ("mmod", "haar"):
        for path in PORTRAITS:
            out[det, path] = run_json("embed", samples / path, "--detector", det)
    return out


def test_landmarks_on_haar_boxes_match_mmod(embeddings):
    worst = 0.0
    for path in PORTRAITS:
        m, h = embeddings["mmod", path]["face"], embeddings["haar", path]["face"]
        side = m["box"]["right"] - m["box"]["left"]
        err = sum(((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5
                  for a, b in zip(m["landmarks"], h["landmarks"])) / 5 / side
        worst = max(worst, err)
        assert err < 0.06, (path, err)
    print(f"worst mean landmark offset, haar vs mmod boxes: {worst:.4f} of the face width")


def test_verification_verdicts_match_mmod(samples, embeddings):
    threshold = run_json("verify", samples / "openface/clapton-1.jpg",
                         samples / "openface/clapton-2.jpg", "--detector", "haar")["threshold"]
    with open(samples / "pairs.csv", newline="") as f:
        pairs = [(r["path_a"], r["path_b"], r["same"] == "1") for r in csv.DictReader(f)
                 if r["path_a"] in PORTRAITS and r["path_b"] in PORTRAITS]
    assert len(pairs) >= 40 and any(s for _, _, s in pairs)

    def dist(det, a, b):
        ea, eb = embeddings[det, a]["embedding"], embeddings[det, b]["embedding"]
        return sum((x - y) ** 2 for x, y in zip(ea, eb)) ** 0.5

    for a, b, same in pairs:
        mm = dist("mmod", a, b) <= threshold
        hh = dist("haar", a, b) <= threshold
        if mm == same:
            assert hh == same, (a, b, same, dist("haar", a, b))
