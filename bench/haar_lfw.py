#!/usr/bin/env python3
"""haar_lfw.py: the Haar cascade detector next to MMOD on LFW View 1 images.

For the first --n distinct images of pairsDevTest.txt (default 500) runs
`faceverify detect IMG --json` with --detector mmod and --detector haar
(one thread each, so the numbers are per core) and reports per detector:
  detection rate     images with at least one face
  extra boxes        faces beyond the first on these single-subject images
                     (suspected false positives; LFW photos do contain
                     bystanders, so this is an upper bound)
  haar boxes that overlap no MMOD box (IoU < 0.3): likelier false positives
  median / mean detect time per image (the CLI's timings_ms.detect, model
  loading excluded)
With --eval also runs `faceverify eval-pairs` on pairsDevTest.txt (1000
pairs) with each detector and records the accuracy (several minutes).
Writes bench/results/haar_lfw.json.  Never part of the test suite.

usage: bench/haar_lfw.py [--build DIR] [--lfw DIR] [--n N] [--eval]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
from fit_haar_mapping import iou, lfw_images  # noqa: E402


def ltrb(box):
    """The CLI's (and API's) box object as [left, top, right, bottom]."""
    return [box["left"], box["top"], box["right"], box["bottom"]]


def detect(cli, path, det, threads):
    r = subprocess.run([cli, "detect", path, "--json", "--detector", det, "--threads",
                        str(threads)], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("FACEVERIFY_BUILD", os.path.join(REPO, "build")))
    ap.add_argument("--lfw", default=os.path.join(os.environ.get("FACEVERIFY_DATA", os.path.join(REPO, "..", "shared", "data")), "lfw"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval", action="store_true")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "haar_lfw.json"))
    a = ap.parse_args()
    cli = os.path.join(a.build, "bin", "faceverify")
    paths = lfw_images(a.lfw, "pairsDevTest.txt", a.n)
    res = {d: {} for d in ("mmod", "haar")}
    for p in paths:
        for d in res:
            res[d][p] = detect(cli, p, d, a.threads)
    out = {"images": len(paths), "source": "LFW View 1 pairsDevTest.txt, distinct images in file order",
           "threads": a.threads, "host_cpus": os.cpu_count(), "detectors": {}}
    for d, r in res.items():
        ok = [j for j in r.values() if j]
        found = [j for j in ok if j["count"] >= 1]
        times = [j["timings_ms"]["detect"] for j in ok]
        out["detectors"][d] = {
            "errors": len(paths) - len(ok),
            "detection_rate": len(found) / len(paths),
            "images_with_several_faces": sum(1 for j in ok if j["count"] > 1),
            "extra_boxes": sum(j["count"] - 1 for j in found),
            "median_detect_ms": statistics.median(times) if times else None,
            "mean_detect_ms": statistics.mean(times) if times else None,
        }
    # Haar boxes (already mapped to dlib's convention) that match no MMOD box
    lonely = both = agree = 0
    for p in paths:
        m, h = res["mmod"][p], res["haar"][p]
        if not m or not h:
            continue
        mb = [ltrb(f["box"]) for f in m["faces"]]
        for f in h["faces"]:
            if not any(iou(ltrb(f["box"]), b) >= 0.3 for b in mb):
                lonely += 1
        if m["faces"] and h["faces"]:
            both += 1
            agree += iou(ltrb(m["faces"][0]["box"]), ltrb(h["faces"][0]["box"])) >= 0.5
    out["haar_boxes_overlapping_no_mmod_box"] = lonely
    out["images_both_found"] = both
    out["largest_faces_agree_iou_0_5"] = agree
    if a.eval:
        out["eval_pairs_dev_test"] = {}
        for d in ("mmod", "haar"):
            t0 = time.time()
            r = subprocess.run([cli, "eval-pairs", "--pairs", os.path.join(a.lfw, "pairsDevTest.txt"),
                                "--root", a.lfw, "--detector", d, "--json"], capture_output=True, text=True)
            j = json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr.strip()}
            out["eval_pairs_dev_test"][d] = {k: j.get(k) for k in (
                "pairs", "pairs_total", "accuracy", "threshold", "best_accuracy", "roc_auc", "error")}
            out["eval_pairs_dev_test"][d]["skipped"] = len(j.get("skipped", []))
            out["eval_pairs_dev_test"][d]["wall_s"] = time.time() - t0
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
