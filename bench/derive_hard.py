#!/usr/bin/env python3
"""Harder face sets derived from LFW, for calibrating and checking decisions.

LFW's 250x250 crops are clean, large, colour news photos; our users'
photos are not.  This writes degraded copies of a fixed, seeded selection
of LFW images into OUT/<variant>/<Person>/<file> (never into the repo):

  clean     the image as it is (so every set has the same people)
  grey      luma only, as from a grey scan or a night camera
  small     downscaled so the face is 40-60 px (the image 105-155 px)
  blur      Gaussian blur, sigma 1.6-2.6 px
  jpeg20    re-encoded at JPEG quality 20
  turned    rotated by 20-30 degrees either way (in-plane)
  greysmall grey and small together (the "grey low-resolution set")

People come from a people file (peopleDevTrain.txt for calibration,
peopleDevTest.txt for checking: disjoint people).  Each chosen person
contributes up to --per-person images, people with 2+ images first, until
--images images are chosen; the selection and every random parameter are
seeded per file name, so reruns write the same bytes.

  .venv/bin/python bench/derive_hard.py --people peopleDevTrain.txt \
      --images 1000 --out /tmp/fv-hard/train

Also writes OUT/pairs.csv (every chosen image paired with itself, the
input `faceverify eval-pairs` needs to embed each once) and
OUT/selection.json.
"""
import argparse
import hashlib
import io
import json
import random
import sys
from pathlib import Path

from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import DATA  # noqa: E402

VARIANTS = ("clean", "grey", "small", "blur", "jpeg20", "turned", "greysmall")
LFW_FACE_PX = 96  # MMOD's box side on LFW's 250x250 frames


def rng_for(name, variant):
    h = hashlib.sha256(("%s|%s" % (name, variant)).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def small(img, r):
    face = r.uniform(40, 60)
    s = face / LFW_FACE_PX
    return img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))),
                      Image.BILINEAR)


def grey(img):
    return img.convert("L").convert("RGB")


def derive(img, variant, r):
    if variant == "clean":
        return img
    if variant == "grey":
        return grey(img)
    if variant == "small":
        return small(img, r)
    if variant == "blur":
        return img.filter(ImageFilter.GaussianBlur(r.uniform(1.6, 2.6)))
    if variant == "jpeg20":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=20)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if variant == "turned":
        angle = r.uniform(20, 30) * r.choice((-1, 1))
        return img.rotate(angle, resample=Image.BILINEAR)
    if variant == "greysmall":
        return small(grey(img), r)
    raise ValueError(variant)


def people(file):
    out = []
    for line in Path(file).read_text().splitlines()[1:]:
        f = line.split("\t")
        if len(f) == 2:
            out.append((f[0], int(f[1])))
    return out


def select(plist, n_images, per_person, seed):
    r = random.Random(seed)
    multi = [p for p in plist if p[1] >= 2]
    single = [p for p in plist if p[1] == 1]
    r.shuffle(multi)
    r.shuffle(single)
    chosen = []
    for name, count in multi + single:
        k = min(count, per_person)
        for i in range(1, k + 1):
            chosen.append("%s/%s_%04d.jpg" % (name, name, i))
            if len(chosen) >= n_images:
                return chosen
    return chosen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", required=True, help="people file in the LFW folder")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--per-person", type=int, default=4)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    lfw = DATA / "lfw"
    sel = select(people(lfw / args.people), args.images, args.per_person, args.seed)
    out = Path(args.out)
    variants = args.variants.split(",")
    for v in variants:
        for rel in sel:
            dest = out / v / rel
            if dest.exists():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            img = Image.open(lfw / rel).convert("RGB")
            # q95 keeps what the variant did (jpeg20's artefacts included)
            derive(img, v, rng_for(rel, v)).save(dest, "JPEG", quality=95)
    with open(out / "pairs.csv", "w") as f:
        f.write("path_a,path_b,same\n")
        for v in variants:
            for rel in sel:
                f.write("%s/%s,%s/%s,1\n" % (v, rel, v, rel))
    (out / "selection.json").write_text(json.dumps(
        {"people_file": args.people, "images": len(sel), "variants": variants,
         "seed": args.seed, "per_person": args.per_person}, indent=1) + "\n")
    print("%d images x %d variants in %s" % (len(sel), len(variants), out))


if __name__ == "__main__":
    main()
