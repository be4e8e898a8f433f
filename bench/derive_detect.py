#!/usr/bin/env python3
"""derive_detect.py: the labelled detection set, built outside the repo.

LFW's 250x250 crops each hold one large centred face; real uploads are
0.3-24 MP photos with small, several, turned faces.  This builds photos
whose every face box is known, from data we have (FACEVERIFY_DATA):

  single   one LFW face per photo, its box side 16, 20, 24, 32, 48, 64,
           100 or 200 px, at a random place in a 0.3, 1 or 3 MP (4:3)
           background
  group    one face of every size in one photo (a group-like scene: small
           faces next to large ones), at 0.3 to 24 MP; a face that does
           not fit without overlap is left out
  turned   a 1 MP single photo with a 100 px face, turned 90/180/270
           degrees (pixels, no EXIF) and +-30 degrees in-plane
  thumb    thumbnails: 96x54 with a 36 px face, 160x90 with 40 px,
           128x96 with 48 px
  noface   backgrounds alone (precision): the samples' no-face photos and
           generated fills at 0.3-12 MP
  sample   the samples/ photos as they are (labels.csv: single faces,
           group photos, no-face photos, the turned and tiny derived ones);
           their boxes are not labelled, so they are scored by count

Ground truth: the face box of an LFW image is the dlib MMOD (CNN)
detector's box on the 250x250 original, upsample 0, the largest face (the
same network and box convention as faceverify's default detector; other
detectors' boxes differ in convention, which the matching rule in
detect_bench.py allows for).  The face is cut with a margin (1.6x the box
side), scaled so the box side is the target, and pasted with a feathered
elliptical edge so no hard seam is left.  Backgrounds: the no-face samples
(coffee, cat, rocket) scaled to cover, or a corner of an LFW frame (its
background, away from the face) enlarged and smoothed, with a gradient and
grain.  Faces of 100 and 200 px are upscaled from LFW's ~96 px boxes, so
they are softer than a real photo's.

Every random choice comes from one seed; reruns write the same files.
Writes OUT/*.jpg and OUT/manifest.json (every image, size and face box).

  .venv/bin/python bench/derive_detect.py --out /tmp/detbench [--quick]
"""
import argparse
import csv
import hashlib
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import DATA, MODELS  # noqa: E402

SIZES = (16, 20, 24, 32, 48, 64, 100, 200)
MPS = (0.3, 1, 3, 12, 24)
MARGIN = 1.6  # the pasted crop's side over the face box's side


def dims(mp):
    """A 4:3 frame of about mp megapixels, even sides."""
    h = int(round((mp * 1e6 * 3 / 4) ** 0.5 / 2)) * 2
    return int(round(h * 4 / 3 / 2)) * 2, h


def lfw_pool(n, seed):
    """n LFW images chosen by seed (different people), with their MMOD box."""
    import dlib
    det = dlib.cnn_face_detection_model_v1(str(MODELS / "mmod_human_face_detector.dat"))
    people = sorted(p.name for p in (DATA / "lfw").iterdir() if p.is_dir())
    r = random.Random(seed)
    r.shuffle(people)
    out = []
    for name in people:
        if len(out) == n:
            break
        path = DATA / "lfw" / name / ("%s_0001.jpg" % name)
        img = np.asarray(Image.open(path).convert("RGB"))
        dets = det(img, 0)
        if len(dets) != 1:  # bystanders or a miss: an unclear truth, skip
            continue
        b = dets[0].rect
        out.append({"src": "lfw/%s/%s" % (name, path.name),
                    "box": [b.left(), b.top(), b.right(), b.bottom()]})
    return out


def face_patch(entry, side):
    """The face of an LFW entry scaled so its box side is `side`: the RGB
    patch, its alpha mask and the box inside the patch."""
    img = Image.open(DATA / entry["src"]).convert("RGB")
    l, t, r_, b = entry["box"]
    bs = ((r_ - l) + (b - t)) / 2
    cx, cy = (l + r_) / 2, (t + b) / 2
    half = bs * MARGIN / 2
    crop = (int(max(0, cx - half)), int(max(0, cy - half)), int(min(img.width, cx + half)),
            int(min(img.height, cy + half)))
    s = side / bs
    patch = img.crop(crop)
    pw, ph = max(1, round(patch.width * s)), max(1, round(patch.height * s))
    patch = patch.resize((pw, ph), Image.LANCZOS)
    mask = Image.new("L", (pw, ph), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, pw - 1, ph - 1), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(max(1.0, pw / 14)))
    bx = (l - crop[0]) * s, (t - crop[1]) * s
    return patch, mask, [bx[0], bx[1], bx[0] + side, bx[1] + side]


def background(w, h, r, kind):
    """A face-free w x h background of the given kind."""
    if kind in ("coffee", "chelsea", "rocket"):
        src = next((DATA / "samples" / "skimage").glob(kind + ".*"))
        im = Image.open(src).convert("RGB")
        s = max(w / im.width, h / im.height)
        im = im.resize((max(w, round(im.width * s)), max(h, round(im.height * s))), Image.BICUBIC)
        x, y = (im.width - w) // 2, (im.height - h) // 2
        return im.crop((x, y, x + w, y + h))
    # an LFW frame's corner (background, not the face) enlarged and
    # smoothed, then a gradient and grain: like an out-of-focus backdrop
    people = sorted(p.name for p in (DATA / "lfw").iterdir() if p.is_dir())
    name = people[r.randrange(len(people))]
    im = Image.open(DATA / "lfw" / name / ("%s_0001.jpg" % name)).convert("RGB")
    corner = im.crop((0, 0, 48, 48) if r.random() < 0.5 else (202, 0, 250, 48))
    small = corner.resize((64, 48), Image.BICUBIC).filter(ImageFilter.GaussianBlur(4))
    base = np.asarray(small.resize((w, h), Image.BICUBIC), dtype=np.int16)
    grad = np.linspace(-25, 25, w, dtype=np.int16)[None, :, None]
    rng = np.random.default_rng(r.randrange(2 ** 32))
    grain = rng.integers(-6, 7, size=(h, w, 1), dtype=np.int16)
    return Image.fromarray(np.clip(base + grad + grain, 0, 255).astype(np.uint8))


def place(w, h, sides, r, tries=200):
    """Non-overlapping positions (of the crops, MARGIN x the face) for faces
    of the given sides in a w x h frame; a face that cannot be placed is
    returned as None."""
    taken, out = [], []
    for side in sides:
        c = int(side * MARGIN) + 4
        pos = None
        for _ in range(tries):
            if c >= w or c >= h:
                break
            x, y = r.randrange(0, w - c), r.randrange(0, h - c)
            if all(x + c <= a or a + ac <= x or y + c <= b or b + ac <= y for a, b, ac in taken):
                pos = (x, y)
                taken.append((x, y, c))
                break
        out.append(pos)
    return out


def compose(w, h, faces, sides, r, bg):
    """A w x h photo with faces[i] pasted at side sides[i]; returns the image
    and the truth list."""
    img = background(w, h, r, bg)
    truth = []
    for entry, side, pos in zip(faces, sides, place(w, h, sides, r)):
        if pos is None:
            continue
        patch, mask, box = face_patch(entry, side)
        # the crop's corner so that the face box lands inside the slot
        c = int(side * MARGIN) + 4
        ox = pos[0] + (c - patch.width) // 2
        oy = pos[1] + (c - patch.height) // 2
        img.paste(patch, (ox, oy), mask)
        truth.append({"box": [round(box[0] + ox, 1), round(box[1] + oy, 1),
                              round(box[2] + ox, 1), round(box[3] + oy, 1)],
                      "size": side, "src": entry["src"]})
    return img, truth


def turn(img, truth, angle):
    """img turned by angle degrees counter-clockwise about its centre (90,
    180, 270: the pixels transposed, no EXIF; others: expanded canvas); the
    truth boxes keep their side, their centres move with the turn."""
    w, h = img.size
    if angle in (90, 180, 270):
        out = img.transpose({90: Image.ROTATE_90, 180: Image.ROTATE_180,
                             270: Image.ROTATE_270}[angle])
    else:
        out = img.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=(96, 96, 96))
    W, H = out.size
    a = np.deg2rad(angle)
    t2 = []
    for f in truth:
        l, t, r_, b = f["box"]
        x, y = (l + r_) / 2 - w / 2, (t + b) / 2 - h / 2
        # counter-clockwise on screen (y down)
        nx, ny = x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)
        nx, ny, s = nx + W / 2, ny + H / 2, f["size"] / 2
        t2.append(dict(f, box=[round(nx - s, 1), round(ny - s, 1), round(nx + s, 1),
                               round(ny + s, 1)], turned=angle))
    return out, t2


def thumb(entry, w, h, side, r):
    """A w x h thumbnail of an LFW photo scaled so the face box is side px."""
    img = Image.open(DATA / entry["src"]).convert("RGB")
    l, t, r_, b = entry["box"]
    s = side / (((r_ - l) + (b - t)) / 2)
    im = img.resize((round(250 * s), round(250 * s)), Image.LANCZOS)
    cx, cy = (l + r_) / 2 * s, (t + b) / 2 * s
    x = int(min(max(0, cx - w / 2 + r.uniform(-0.1, 0.1) * w), im.width - w))
    y = int(min(max(0, cy - h / 2), im.height - h))
    canvas = Image.new("RGB", (w, h), (110, 110, 110))
    canvas.paste(im.crop((x, y, min(im.width, x + w), min(im.height, y + h))), (0, 0))
    box = [l * s - x, t * s - y, l * s - x + side, t * s - y + side]
    return canvas, [{"box": [round(v, 1) for v in box], "size": side, "src": entry["src"]}]


def build(out, quick, seed):
    out.mkdir(parents=True, exist_ok=True)
    r = random.Random(seed)
    pool = lfw_pool(24 if quick else 64, seed)
    items = []
    nxt = iter(pool * 8)
    bgs = ("coffee", "chelsea", "rocket", "fill")

    def save(name, img, kind, truth, **extra):
        img.save(out / name, quality=92)
        items.append(dict({"file": name, "kind": kind, "width": img.width, "height": img.height,
                           "mp": round(img.width * img.height / 1e6, 3), "faces": truth}, **extra))

    single_mps = (0.3, 1) if quick else (0.3, 1, 3)
    for mp in single_mps:
        w, h = dims(mp)
        for side in SIZES:
            img, truth = compose(w, h, [next(nxt)], [side], r, bgs[r.randrange(4)])
            save("single_%gmp_%dpx.jpg" % (mp, side), img, "single", truth, target_mp=mp)
    group_mps = (0.3, 1) if quick else MPS
    for mp in group_mps:
        w, h = dims(mp)
        for k in range(1 if quick else 2):
            faces = [next(nxt) for _ in SIZES]
            sides = list(SIZES)
            r.shuffle(sides)
            img, truth = compose(w, h, faces, sorted(sides, reverse=True), r, bgs[r.randrange(4)])
            save("group_%gmp_%d.jpg" % (mp, k), img, "group", truth, target_mp=mp)
    w, h = dims(1)
    for k in range(1 if quick else 2):
        base, truth = compose(w, h, [next(nxt)], [100], r, "fill")
        for angle in (90, 180, 270, 30, -30):
            img, t2 = turn(base, truth, angle)
            save("turned_%d_%+d.jpg" % (k, angle), img, "turned", t2, target_mp=1, angle=angle)
    for tw, th, side in ((96, 54, 36), (160, 90, 40), (128, 96, 48)):
        for k in range(1 if quick else 2):
            img, truth = thumb(next(nxt), tw, th, side, r)
            save("thumb_%dx%d_%d.jpg" % (tw, th, k), img, "thumb", truth)
    for mp in ((0.3, 1) if quick else MPS):
        w, h = dims(mp)
        for bg in (("fill", "coffee") if quick else ("fill",) if mp > 12 else bgs):
            save("noface_%gmp_%s.jpg" % (mp, bg), background(w, h, r, bg), "noface", [],
                 target_mp=mp)
    with open(DATA / "samples" / "labels.csv") as f:
        for row in csv.DictReader(f):
            if "_aligned/" in row["path"]:
                continue  # 96/160 px aligned crops: not photos
            src = DATA / "samples" / row["path"]
            img = Image.open(src)
            kind = {"multi": "group", "noface": "noface"}.get(row["identity"], "single")
            items.append({"file": "samples/" + row["path"], "path": str(src), "kind": "sample",
                          "sample_kind": kind, "width": img.width, "height": img.height,
                          "mp": round(img.width * img.height / 1e6, 3),
                          "expected_faces": {"single": 1, "noface": 0}.get(kind),
                          "faces": None})
    man = {"seed": seed, "quick": quick, "sizes": list(SIZES), "margin": MARGIN,
           "truth": "dlib MMOD box on the LFW 250x250 original, upsample 0, scaled",
           "images": items}
    digest = hashlib.sha256(json.dumps(man, sort_keys=True).encode()).hexdigest()
    man["manifest_sha256"] = digest
    (out / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
    return man


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/detbench")
    ap.add_argument("--quick", action="store_true", help="a few dozen images, up to 1 MP")
    ap.add_argument("--seed", type=int, default=17)
    a = ap.parse_args()
    man = build(Path(a.out), a.quick, a.seed)
    faces = sum(len(i["faces"] or []) for i in man["images"])
    print("%d images, %d labelled faces -> %s" % (len(man["images"]), faces, a.out))


if __name__ == "__main__":
    main()
