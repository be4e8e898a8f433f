#!/usr/bin/env python3
"""fit_haar_mapping.py: fit the Haar -> dlib box mapping used in src/detect/haar.c.

The 5-point shape predictor was trained on boxes drawn by dlib's detectors;
OpenCV's Haar cascade draws its box differently (higher, wider crop).  On LFW
View 1 training images where both detectors find the face, this script
measures, relative to the Haar box side s:

    dlib_cx = haar_cx + a*s,  dlib_cy = haar_cy + b*s,
    dlib_w  = c*s,            dlib_h  = d*s

and prints the medians (a, b, c, d) to paste into HAAR_TO_DLIB in haar.c.
Boxes: MMOD from `faceverify detect --json --detector mmod` (the product's
own detector, dlib's parity), Haar raw boxes from build/bin/probe_haar
(OpenCV's rectangles, before any mapping).  Bounded: --n images (default 400).

usage: scripts/fit_haar_mapping.py [--build DIR] [--lfw DIR] [--n N] [--json OUT]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lfw_images(lfw, pairs_file, n):
    """Unique image paths of an LFW pairs file, in file order, first n."""
    seen, out = set(), []
    with open(os.path.join(lfw, pairs_file)) as f:
        next(f)
        for line in f:
            p = line.split()
            if len(p) == 3:
                items = [(p[0], int(p[1])), (p[0], int(p[2]))]
            elif len(p) == 4:
                items = [(p[0], int(p[1])), (p[2], int(p[3]))]
            else:
                continue
            for name, k in items:
                path = os.path.join(lfw, name, "%s_%04d.jpg" % (name, k))
                if path not in seen:
                    seen.add(path)
                    out.append(path)
    return out[:n]


def mmod_boxes(build, paths):
    """path -> (list of [l, t, r, b], detect ms) from the CLI."""
    out = {}
    for p in paths:
        r = subprocess.run([os.path.join(build, "bin", "faceverify"), "detect", p, "--json",
                            "--detector", "mmod", "--threads", "1"], capture_output=True, text=True)
        if r.returncode != 0:
            out[p] = ([], None)
            continue
        j = json.loads(r.stdout)
        boxes = [[f["box"][k] for k in ("left", "top", "right", "bottom")] for f in j["faces"]]
        out[p] = (boxes, j.get("timings_ms", {}).get("detect"))
    return out


def haar_boxes(build, paths, extra=()):
    """path -> (list of [l, t, r, b], ms) of raw Haar rectangles."""
    out = {}
    for i in range(0, len(paths), 100):
        chunk = paths[i:i + 100]
        r = subprocess.run([os.path.join(build, "bin", "probe_haar"), "--threads", "1", *extra,
                            *chunk], capture_output=True, text=True, check=True)
        for line in r.stdout.splitlines():
            j = json.loads(line)
            out[j["path"]] = ([[x, y, x + w, y + h] for x, y, w, h, _ in j["rects"]], j["ms"])
    return out


def iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def apply(m, h):
    s = h[2] - h[0]
    cx = (h[0] + h[2]) / 2 + m[0] * s
    cy = (h[1] + h[3]) / 2 + m[1] * s
    return [cx - m[2] * s / 2, cy - m[3] * s / 2, cx + m[2] * s / 2, cy + m[3] * s / 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("FACEVERIFY_BUILD", os.path.join(REPO, "build")))
    ap.add_argument("--lfw", default=os.path.join(os.environ.get("FACEVERIFY_DATA", os.path.join(REPO, "..", "shared", "data")), "lfw"))
    ap.add_argument("--pairs", default="pairsDevTrain.txt")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--json", help="also write the matched boxes here")
    a = ap.parse_args()
    paths = lfw_images(a.lfw, a.pairs, a.n)
    mm = mmod_boxes(a.build, paths)
    hb = haar_boxes(a.build, paths)
    rows = []
    for p in paths:
        m, h = mm[p][0], hb[p][0]
        if len(m) != 1 or not h:
            continue
        best = max(h, key=lambda r: iou(r, m[0]))
        if iou(best, m[0]) < 0.3:
            continue
        rows.append((p, m[0], best))
    if not rows:
        sys.exit("no image where both detectors found the face")
    dx, dy, kw, kh = [], [], [], []
    for _, m, h in rows:
        s = h[2] - h[0]
        dx.append(((m[0] + m[2]) - (h[0] + h[2])) / 2 / s)
        dy.append(((m[1] + m[3]) - (h[1] + h[3])) / 2 / s)
        kw.append((m[2] - m[0]) / s)
        kh.append((m[3] - m[1]) / s)
    fit = [statistics.median(v) for v in (dx, dy, kw, kh)]
    before = statistics.mean(iou(h, m) for _, m, h in rows)
    after = statistics.mean(iou(apply(fit, h), m) for _, m, h in rows)
    print("images: %d, both found the face: %d" % (len(paths), len(rows)))
    print("HAAR_TO_DLIB = {%.4f, %.4f, %.4f, %.4f}" % tuple(fit))
    print("mean IoU with the MMOD box: raw Haar %.3f, mapped %.3f" % (before, after))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"fit": fit, "images": len(paths), "matched": len(rows),
                       "mean_iou_raw": before, "mean_iou_mapped": after}, f, indent=1)


if __name__ == "__main__":
    main()
