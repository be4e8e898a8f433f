#!/usr/bin/env python3
"""jpeg_scale.py: would decoding large JPEGs at a reduced scale pay?

libjpeg-turbo can decode a JPEG at 1/2, 1/4 or 1/8 of its size (DCT
scaling: the inverse DCT of each 8x8 block computes only the low
frequencies), far faster than a full decode.  faceverify decodes every
photo in full, then shrinks a copy to --max-side (1600 px) for detection
with an area filter, and cuts the chip from the full-size image.  Two
ways to use DCT scaling, measured here on LFW composites (faces pasted at
known sizes into a 4:3 frame, saved as JPEG quality 92):

  decode       ms to decode at 3, 12 and 24 MP: full size (our own
               decoder, `faceverify embed --json` timings_ms.decode, and
               Pillow's, the same libjpeg-turbo) and at 1/2, 1/4, 1/8
               (Pillow's Image.draft, which sets libjpeg's scale_denom),
               median of --reps, one thread
  shrink       ms of the detection copy's area downscale to 1600 px, which
               a DCT-scaled decode to about that size would replace;
               Pillow's box filter as a lower bound of ours (the difference
               of two whole fv_detect runs drowned in MMOD's time)
  parity       `faceverify embed` (largest face) of the full-size JPEG
               against the same photo decoded at 1/2 (Pillow draft, saved
               losslessly as PNG, so boxes come back at half scale): L2
               distance of the embeddings, per face size; the parity bar
               of earlier work is 0.02

Option A, detect on a scaled decode, then decode in full for the chips,
pays a scaled decode on top of today's full decode and saves the shrink:
a win only if the scaled decode costs less than the shrink.  Option B,
keep only a 1/2 decode for large photos, saves half or more of the decode
and the larger part of the shrink, if its chips keep parity.

Writes bench/results/jpeg_scale.json.  Never part of the test suite.

  .venv/bin/python bench/jpeg_scale.py [--reps 5] [--out /tmp/jpegscale]
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import CLI, DATA, MODELS, machine, write_result  # noqa: E402

MPS = (3, 12, 24)
FACES = (150, 300, 600)  # face side in the 12 MP composites (a phone portrait: 600-1500)


def dims(mp):
    h = int(round((mp * 1e6 * 3 / 4) ** 0.5 / 8)) * 8
    return int(round(h * 4 / 3 / 8)) * 8, h


def composite(out, mp, face, seed):
    """A 4:3 photo of mp MP with one LFW face of `face` px in a soft frame
    (the face's own frame enlarged), saved as JPEG q92."""
    people = sorted(p for p in (DATA / "lfw").iterdir() if p.is_dir())
    p = people[random.Random(seed).randrange(len(people))]
    src = Image.open(sorted(p.glob("*.jpg"))[0]).convert("RGB")
    w, h = dims(mp)
    s = face / 105.0  # LFW's centred face is ~105 px
    bg = src.resize((w, h), Image.BICUBIC)
    f = src.resize((round(250 * s), round(250 * s)), Image.LANCZOS)
    bg.paste(f, ((w - f.width) // 2, (h - f.height) // 2))
    path = out / ("comp_%dmp_%dpx.jpg" % (mp, face))
    bg.save(path, quality=92)
    return path


def pil_decode_ms(path, denom, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        im = Image.open(path)
        if denom > 1:
            im.draft("RGB", (im.width // denom, im.height // denom))
        im.load()
        ts.append((time.perf_counter() - t) * 1e3)
    return round(statistics.median(ts), 1), im.size


def cli_embed(path):
    p = subprocess.run([str(CLI), "embed", str(path), "--json", "--threads", "1",
                        "--no-rotations"], capture_output=True, text=True,
                       env=dict(os.environ, FACEVERIFY_MODELS=str(MODELS)))
    if p.returncode != 0:
        return None
    return json.loads(p.stdout)


def shrink_ms(path, reps):
    """ms of an area (box filter) downscale of the full decode to 1600 px,
    by Pillow (Image.reduce/BOX, SIMD): a lower bound for the shrink of
    src/image/resize.c, which does the same arithmetic in plain C."""
    full = Image.open(path).convert("RGB")
    s = 1600 / max(full.size)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        full.resize((round(full.width * s), round(full.height * s)), Image.BOX)
        ts.append((time.perf_counter() - t) * 1e3)
    return round(statistics.median(ts), 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="/tmp/jpegscale")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    res = {"what": "JPEG DCT-scaled decode: decode time, the shrink it would replace, and the "
                   "embedding parity of chips cut from a 1/2 decode",
           "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
           "machine": machine(), "decode": {}, "shrink": {}, "parity": []}
    for mp in MPS:
        path = composite(out, mp, 300, mp)
        row = {"width": dims(mp)[0], "height": dims(mp)[1]}
        j = [cli_embed(path) for _ in range(a.reps)]
        row["faceverify_full_ms"] = round(statistics.median(x["timings_ms"]["decode"]
                                                            for x in j if x), 1)
        for denom in (1, 2, 4, 8):
            ms, size = pil_decode_ms(path, denom, a.reps)
            row["pillow_1_%d_ms" % denom] = ms
            row["pillow_1_%d_size" % denom] = list(size)
        res["decode"][str(mp)] = row
        res["shrink"][str(mp)] = {"pillow_box_to_1600_ms": shrink_ms(path, a.reps)}
        print(mp, row, res["shrink"][str(mp)], flush=True)
    for mp in (12, 24):
        for face in FACES:
            path = composite(out, mp, face, 100 + face + mp)
            full = cli_embed(path)
            im = Image.open(path)
            im.draft("RGB", (im.width // 2, im.height // 2))
            half_path = path.with_suffix(".half.png")
            im.convert("RGB").save(half_path)
            half = cli_embed(half_path)
            row = {"mp": mp, "face_px": face, "found_full": full is not None,
                   "found_half": half is not None}
            if full and half:
                row["distance"] = round(float(np.linalg.norm(
                    np.array(full["embedding"]) - np.array(half["embedding"]))), 4)
            res["parity"].append(row)
            print(row, flush=True)
    res["wall_s"] = round(time.time() - t0, 1)
    print("->", write_result("jpeg_scale.json", res))


if __name__ == "__main__":
    main()
