#!/usr/bin/env python3
"""mtcnn_c.py: the C MTCNN (src/detect/mtcnn.c) against the spike's projection.

Issue 17's spike (bench/mtcnn_spike.py) projected MTCNN's one-thread C
time from its multiply-accumulates at 50% of sgemm peak plus resampling
measured with OpenCV.  This runs the C port on the same photos (the
labelled set of bench/derive_detect.py, up to --max-mp like the spike) as
`faceverify detect PHOTO --json --threads 1 --detector mtcnn
--no-rotations --max-side 0` (upright, full resolution: the spike's
setting; landmarks of the faces found included), takes the library's own
timings_ms.detect (model loading excluded), and reports per photo-size
bin the median measured ms next to the median projected ms (nets +
resampling) of the spike's JSON, their ratio, and the recall scored with
detect_bench.py's rules (IoU >= 0.4 or, for faces <= 32 px, centre
inside), which should equal the spike's.  --rounds N runs each photo N
times (interleaved: every photo once, then again) and keeps the minimum.

  .venv/bin/python bench/mtcnn_c.py --data /tmp/detbench-scales \\
      [--spike bench/results/mtcnn_spike_linear.json] [--rounds 2]

Writes bench/results/mtcnn_c.json (or --json).  Never part of the tests.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_bench import mp_bin, summarise  # noqa: E402
from machine import CLI, DATA, MODELS, REPO, machine, write_result  # noqa: E402


def detect(path):
    env = dict(os.environ, FACEVERIFY_MODELS=str(MODELS))
    p = subprocess.run([str(CLI), "detect", str(path), "--json", "--threads", "1", "--detector",
                        "mtcnn", "--no-rotations", "--max-side", "0"], capture_output=True,
                       env=env, timeout=600)
    d = json.loads(p.stdout or b"{}")
    if p.returncode != 0:
        return {"error": (d.get("error") or {}).get("code", "exit %d" % p.returncode),
                "boxes": [], "ms": None}
    return {"error": None, "ms": d["timings_ms"]["detect"],
            "boxes": [[f["box"][k] for k in ("left", "top", "right", "bottom")]
                      for f in d["faces"]]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/detbench-scales", help="derive_detect.py output")
    ap.add_argument("--spike", default=str(REPO / "bench/results/mtcnn_spike_linear.json"))
    ap.add_argument("--max-mp", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    t_start = time.time()
    data = Path(a.data)
    man = json.loads((data / "manifest.json").read_text())
    spike = json.loads(Path(a.spike).read_text())
    proj = spike["projection"]["std"]["per_photo"]
    items = [it for it in sorted(man["images"], key=lambda it: it["mp"])
             if it["mp"] <= a.max_mp and it["file"] in proj]
    runs = {}
    for rnd in range(a.rounds):
        for k, it in enumerate(items):
            path = data / it["file"]
            if not path.exists():
                path = DATA / it["file"] if (DATA / it["file"]).exists() else REPO / it["file"]
            r = detect(path)
            prev = runs.get(it["file"], {}).get("mtcnn_c")
            if prev and prev["ms"] is not None and (r["ms"] is None or prev["ms"] <= r["ms"]):
                r = prev
            runs[it["file"]] = {"mtcnn_c": r}
            print("%d.%d/%d %-40s %5.2f MP %3d faces %8.1f ms (projected %.1f)" % (
                rnd + 1, k + 1, len(items), it["file"], it["mp"], len(r["boxes"]), r["ms"] or -1,
                proj[it["file"]]["nn_ms"] + proj[it["file"]]["resample_ms"]), file=sys.stderr,
                flush=True)
    bins = {}
    for it in items:
        r, p = runs[it["file"]]["mtcnn_c"], proj[it["file"]]
        if r["ms"] is None:
            continue
        b = bins.setdefault(mp_bin(it["mp"]), {"c": [], "proj": [], "ratio": []})
        pj = p["nn_ms"] + p["resample_ms"]
        b["c"].append(r["ms"])
        b["proj"].append(pj)
        b["ratio"].append(r["ms"] / pj)
    by_bin = {k: {"photos": len(v["c"]), "c_median_ms": round(statistics.median(v["c"]), 1),
                  "projected_median_ms": round(statistics.median(v["proj"]), 1),
                  "c_over_projected_of_medians": round(statistics.median(v["c"]) /
                                                       statistics.median(v["proj"]), 2),
                  "c_over_projected_median": round(statistics.median(v["ratio"]), 2)}
              for k, v in bins.items()}
    summ = summarise(items, runs, "mtcnn_c")
    summ.pop("time_by_mp", None)
    res = {
        "what": "issue 17: the C MTCNN's one-thread detection time (timings_ms.detect of "
                "faceverify detect --detector mtcnn --no-rotations --max-side 0 --threads 1, "
                "landmarks included, model load excluded) against the spike's projection "
                "(nets at %s of sgemm peak + OpenCV resampling) on the same photos"
                % spike["projection"]["efficiency"],
        "spike": Path(a.spike).name,
        "set": {"data": "bench/derive_detect.py (seed %s)" % man.get("seed"),
                "photos": len(items), "max_mp": a.max_mp, "rounds": a.rounds},
        "by_bin": by_bin,
        "results": summ,
        "spike_results": spike["results"]["std"],
        "per_photo": {f: {"ms": r["mtcnn_c"]["ms"] and round(r["mtcnn_c"]["ms"], 1),
                          "faces": len(r["mtcnn_c"]["boxes"]), "error": r["mtcnn_c"]["error"],
                          "projected_ms": round(proj[f]["nn_ms"] + proj[f]["resample_ms"], 1)}
                      for f, r in runs.items()},
        "machine": machine("faceverify --threads 1 (OpenBLAS pinned to 1 thread)"),
        "wall_s": round(time.time() - t_start, 1),
        "command": "python bench/mtcnn_c.py " + " ".join(sys.argv[1:]),
    }
    dest = write_result("mtcnn_c.json", res, a.json)
    print("wrote", dest, file=sys.stderr)
    for k, v in by_bin.items():
        print("%-4s MP n=%-3d C %7.1f ms  projected %7.1f ms  C/projected %.2f" % (
            k, v["photos"], v["c_median_ms"], v["projected_median_ms"],
            v["c_over_projected_of_medians"]))
    print("recall by size:", {k: v["recall"] for k, v in summ["recall_by_size"].items()},
          "false/MP:", summ["false_per_mp_noface"])


if __name__ == "__main__":
    main()
