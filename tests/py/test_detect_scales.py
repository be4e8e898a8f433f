"""The automatic detection scale policy (src/detect/scales.c) finds faces of
every size, at every photo size, in bounded memory.

Photos are made here from LFW: a face is cut around the box faceverify's
exact mode (--upsample 0, dlib's box) finds on the 250x250 original, scaled
so its box side is the target, and pasted with a soft edge into a no-face
sample photo (coffee) scaled to the frame.  Then `faceverify detect`, the
default policy, must find:
  - a group: one 200 px face and four 30 px faces in a 1600x1200 photo,
    all five and nothing else (small faces are looked for even when a
    large one is found);
  - a 96x54 thumbnail holding a 36 px face (two doublings' worth);
  - a 44 px face in a 1920x1080 frame (the issue's case);
  - 12 MP and 24 MP photos with a 40 px and a 300 px face: both found, and
    the process's peak memory stays under 700 MiB (no refusal);
and nothing in the no-face samples.  The exact mode keeps dlib's boxes
(test_detect_parity.py).
"""
import json
import os
import subprocess
import sys
import types

import pytest

from conftest import CLI, MODELS, REPO, need, run_json

sys.path.insert(0, str(REPO / "scripts"))
from fit_haar_mapping import iou  # noqa: E402  (ltrb boxes, as the detection bench)

Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")
ImageFilter = pytest.importorskip("PIL.ImageFilter")

PEOPLE = ["Tony_Blair", "George_W_Bush", "Colin_Powell", "Gerhard_Schroeder", "Ariel_Sharon"]


def ltrb(box):
    return [box["left"], box["top"], box["right"], box["bottom"]]


def matches(truth, det):
    """A detection is the truth face: IoU >= 0.4, or for a face of 32 px or
    less its centre inside the truth box and its side at most 3x."""
    if iou(truth, det) >= 0.4:
        return True
    side = truth[2] - truth[0]
    cx, cy = (det[0] + det[2]) / 2, (det[1] + det[3]) / 2
    return (side <= 32 and det[2] - det[0] <= 3 * side and truth[0] <= cx <= truth[2]
            and truth[1] <= cy <= truth[3])


@pytest.fixture(scope="module")
def faces(lfw):
    """[(PIL image, dlib box)] of LFW originals."""
    out = []
    for p in PEOPLE:
        path = need(lfw / p / ("%s_0001.jpg" % p))
        j = run_json("detect", path, "--upsample", "0")
        assert j["count"] >= 1, p
        out.append((Image.open(path).convert("RGB"), ltrb(j["faces"][0]["box"])))
    return out


@pytest.fixture(scope="module")
def coffee(samples):
    return Image.open(need(samples / "skimage/coffee.png")).convert("RGB")


def backdrop(src, w, h):
    s = max(w / src.width, h / src.height)
    im = src.resize((max(w, round(src.width * s)), max(h, round(src.height * s))), Image.BILINEAR)
    x, y = (im.width - w) // 2, (im.height - h) // 2
    return im.crop((x, y, x + w, y + h))


def paste(canvas, face, side, x, y):
    """Pastes face = (image, box) so its box side is `side` with the box's
    top-left at (x, y); returns the truth box."""
    img, (l, t, r, b) = face
    bs = ((r - l) + (b - t)) / 2
    m = 0.3 * bs
    crop = img.crop((int(l - m), int(t - m), int(r + m), int(b + m)))
    s = side / bs
    pw, ph = max(1, round(crop.width * s)), max(1, round(crop.height * s))
    patch = crop.resize((pw, ph), Image.LANCZOS)
    mask = Image.new("L", (pw, ph), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, pw - 1, ph - 1), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(max(1.0, pw / 14)))
    ox, oy = round(x - (l - int(l - m)) * s), round(y - (t - int(t - m)) * s)
    canvas.paste(patch, (ox, oy), mask)
    return [x, y, x + side, y + side]


# Runs a command as a grandchild and reports its own peak RSS: Linux keeps
# a process's peak RSS across exec, so a child forked straight from this
# (large) pytest process would report pytest's peak, not the detector's.
_PEAK_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, ru = os.wait4(pid, 0)
sys.stderr.write("\\nFV_PEAK_RSS_KB %d\\n" % ru.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def detect(path, *extra):
    """Default-policy boxes, and the detector process's own peak RSS (its
    ru_maxrss in KiB, from wait4 in a small wrapper process)."""
    env = dict(os.environ, FACEVERIFY_MODELS=str(MODELS))
    p = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, str(CLI), "detect", str(path),
                        "--json", *extra], capture_output=True, env=env, timeout=600)
    assert p.returncode == 0, (p.returncode, p.stderr)
    peak = [int(line.split()[1]) for line in p.stderr.decode().splitlines()
            if line.startswith("FV_PEAK_RSS_KB ")]
    assert len(peak) == 1, p.stderr
    j = json.loads(p.stdout)
    return [ltrb(f["box"]) for f in j["faces"]], types.SimpleNamespace(ru_maxrss=peak[0])


def assert_found_all(truth, dets):
    for t in truth:
        assert any(matches(t, d) for d in dets), (t, dets)


def test_group_small_faces_next_to_a_large_one(faces, coffee, tmp_path):
    img = backdrop(coffee, 1600, 1200)
    truth = [paste(img, faces[0], 200, 300, 400)]
    for i, (x, y) in enumerate([(900, 200), (1200, 500), (1000, 900), (200, 150)]):
        truth.append(paste(img, faces[1 + i], 30, x, y))
    path = tmp_path / "group.jpg"
    img.save(path, quality=92)
    dets, _ = detect(path)
    assert_found_all(truth, dets)
    assert len(dets) == len(truth), dets
    # the exact mode (one MMOD pass, dlib's) sees only the large face
    exact, _ = detect(path, "--upsample", "0")
    assert [d for d in exact if iou(truth[0], d) >= 0.4] and len(exact) == 1


def test_thumbnail_96x54_with_a_36px_face(faces, coffee, tmp_path):
    img = backdrop(coffee, 96, 54)
    truth = [paste(img, faces[2], 36, 30, 9)]
    path = tmp_path / "thumb.png"
    img.save(path)
    dets, _ = detect(path)
    assert_found_all(truth, dets)
    assert len(dets) == 1


def test_44px_face_in_a_1920x1080_frame(faces, coffee, tmp_path):
    img = backdrop(coffee, 1920, 1080)
    truth = [paste(img, faces[3], 44, 1500, 300)]
    path = tmp_path / "frame.jpg"
    img.save(path, quality=92)
    dets, _ = detect(path)
    assert_found_all(truth, dets)
    assert len(dets) == 1


@pytest.mark.parametrize("w,h", [(4000, 3000), (6000, 4000)])
def test_large_photo_small_and_large_face_bounded_memory(faces, coffee, tmp_path, w, h):
    img = backdrop(coffee, w, h)
    truth = [paste(img, faces[4], 300, w // 5, h // 3),
             paste(img, faces[1], 40, w * 3 // 4, h * 2 // 3)]
    path = tmp_path / "large.jpg"
    img.save(path, quality=90)
    dets, ru = detect(path, "--threads", "1")
    assert_found_all(truth, dets)
    assert len(dets) == 2, dets
    # decoded photo (3 bytes per pixel) + the policy's bounded passes
    assert ru.ru_maxrss / 1024 < 700, ru.ru_maxrss


def test_no_face_photos_give_no_face(samples):
    for name in ("coffee.png", "chelsea.png", "rocket.jpg"):
        dets, _ = detect(need(samples / "skimage" / name))
        assert dets == [], name
