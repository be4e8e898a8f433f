#!/usr/bin/env python3
"""detect_bench.py: face detection on real-size photos, next to the peers.

Runs, on the labelled set bench/derive_detect.py builds (derived here
first when OUT/manifest.json is missing), in ONE run and interleaved per
photo (every tool on a photo, then the next photo, so load from other
processes falls on all alike), one thread each (OMP_NUM_THREADS=1,
OPENBLAS_NUM_THREADS=1, faceverify --threads 1):

  faceverify   `faceverify detect PHOTO --json --threads 1`, its default
               policy (detector auto: MTCNN with models/mtcnn.bin), one
               process per photo (the CLI takes one image): the time is
               the process's wall time, model loading included, as a user
               gets it; its own timings_ms.total (decode + detect +
               quality) is reported too
  faceverify_mmod  the same with `--detector mmod`: MMOD's automatic
               scale policy, the default before MTCNN (and without
               mtcnn.bin)
  fr_hog       face_recognition.face_locations(img) with its defaults:
               HOG, number_of_times_to_upsample=1
  fr_cnn       face_recognition.face_locations(img, model="cnn"), upsample 1
  dlib_mmod    dlib directly: cnn_face_detection_model_v1 on our
               mmod_human_face_detector.dat, upsample 0 (the setting of
               our parity tests)

The Python tools run in one worker process each (load_image_file, then the
call, timed inside).  The CNN tools are slow on one core (dlib's MMOD is
about 8 us per pixel of the upsampled pyramid base), so they are run only
on photos up to --cnn-max-mp (fr_cnn: its upsampled base is 4x the photo)
and the JSON says which photos were skipped; skipped photos count in no
recall or time of that tool.

Matching: detections and truth boxes are paired greedily by IoU, highest
first; a pair counts when IoU >= 0.4, or, for a truth face of 32 px or
less, when the detection's centre lies inside the truth box and the
detection's side is at most 3x the truth's (boxes of tiny faces differ
by a few pixels between detectors' conventions, a large fraction of the
box).  Every other detection on a photo is a false detection.

Reports per tool:
  recall by face size (composites: single + group scenes), by scene, by
  turn angle, thumbnails; false detections per megapixel on the no-face
  photos (and unmatched detections on the composites, which may include
  bystanders' partial faces from LFW's frames); the samples scored by
  count (found on single-face photos, detections on group photos, false
  detections on no-face photos); median time per photo by photo size;
  failures (an error or refusal) by photo size; memory: faceverify's peak
  RSS per photo size (wait4 of each process), the workers' peak RSS over
  the run.

Writes bench/results/detect_bench.json (or --json).  Never part of the
test suite; tests/py/test_detect_bench.py runs --quick.

  .venv/bin/python bench/detect_bench.py [--quick] [--data-out /tmp/detbench]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import CLI, MODELS, REPO, machine, write_result  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from fit_haar_mapping import iou  # noqa: E402  (ltrb boxes, as bench/haar_lfw.py)

TOOLS = ("faceverify", "faceverify_mmod", "fr_hog", "fr_cnn", "dlib_mmod")
MP_BINS = ((0, 0.1, "<0.1"), (0.1, 0.6, "0.3"), (0.6, 2, "1"), (2, 6, "3"), (6, 18, "12"),
           (18, 1e9, "24"))
IOU_MIN = 0.4
TINY_PX = 32


def mp_bin(mp):
    return next(name for lo, hi, name in MP_BINS if lo <= mp < hi)


# ---------------------------------------------------------------- workers

def worker(tool):
    """A peer tool's loop: a photo path per stdin line, one JSON line back."""
    import face_recognition
    import dlib
    cnn = None
    if tool == "dlib_mmod":
        cnn = dlib.cnn_face_detection_model_v1(str(MODELS / "mmod_human_face_detector.dat"))
    for line in sys.stdin:
        path = line.rstrip("\n")
        t0 = time.perf_counter()
        try:
            img = face_recognition.load_image_file(path)
            if tool == "fr_hog":
                locs = face_recognition.face_locations(img)
            elif tool == "fr_cnn":
                locs = face_recognition.face_locations(img, model="cnn")
            else:
                locs = [(d.rect.top(), d.rect.right(), d.rect.bottom(), d.rect.left())
                        for d in cnn(img, 0)]
            # face_recognition's (top, right, bottom, left) -> ltrb
            boxes = [[l, t, r, b] for t, r, b, l in locs]
            res = {"boxes": boxes, "error": None}
        except (MemoryError, RuntimeError, OSError, ValueError) as e:
            res = {"boxes": [], "error": "%s: %s" % (type(e).__name__, e)}
        res["ms"] = (time.perf_counter() - t0) * 1e3
        print(json.dumps(res), flush=True)
    print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}),
          flush=True)


class Peer:
    def __init__(self, tool):
        self.tool = tool
        self.p = subprocess.Popen([sys.executable, __file__, "--worker", tool],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def detect(self, path):
        self.p.stdin.write(path + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            return {"boxes": [], "error": "worker exited", "ms": None}
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        last = self.p.stdout.readline()
        self.p.wait()
        return json.loads(last)["maxrss_kb"] if last else None


# our tools: the CLI's extra options
OURS = {"faceverify": [], "faceverify_mmod": ["--detector", "mmod"]}


def faceverify(path, extra=()):
    """One `faceverify detect` process on path (with the extra options):
    boxes, wall time, peak RSS (wait4 of the process) and the error code
    when it refuses."""
    env = dict(os.environ, FACEVERIFY_MODELS=str(MODELS))
    t0 = time.perf_counter()
    p = subprocess.Popen([str(CLI), "detect", path, "--json", "--threads", "1", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = p.stdout.read()  # the JSON; stderr carries one short line at most
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    ms = (time.perf_counter() - t0) * 1e3
    res = {"ms": ms, "maxrss_kb": ru.ru_maxrss, "error": None, "boxes": []}
    try:
        d = json.loads(out or b"{}")
    except ValueError:
        d = {}
    if p.returncode != 0:
        res["error"] = (d.get("error") or {}).get("code") or err.decode(errors="replace")[:200]
        return res
    res["boxes"] = [[f["box"]["left"], f["box"]["top"], f["box"]["right"], f["box"]["bottom"]]
                    for f in d["faces"]]
    res["internal_ms"] = d["timings_ms"]["total"]
    return res


# ---------------------------------------------------------------- scoring

def tiny_match(t, d):
    side_t = t[2] - t[0]
    side_d = max(d[2] - d[0], d[3] - d[1])
    cx, cy = (d[0] + d[2]) / 2, (d[1] + d[3]) / 2
    return side_t <= TINY_PX and side_d <= 3 * side_t and t[0] <= cx <= t[2] and t[1] <= cy <= t[3]


def match(truth, dets):
    """Indices of matched truth faces and the number of unmatched detections."""
    cand = []
    for i, t in enumerate(truth):
        for j, d in enumerate(dets):
            v = iou(t, d)
            if v >= IOU_MIN or tiny_match(t, d):
                cand.append((v, i, j))
    cand.sort(reverse=True)
    ti, dj = set(), set()
    for _, i, j in cand:
        if i not in ti and j not in dj:
            ti.add(i)
            dj.add(j)
    return ti, len(dets) - len(dj)


def ratio(found, total):
    return {"found": found, "total": total, "recall": round(found / total, 4) if total else None}


def summarise(items, runs, tool):
    """The per-tool numbers from the per-photo results."""
    by_size, by_scene, by_angle, thumbs = {}, {}, {}, {}
    noface_false, noface_mp, comp_false, comp_mp = 0, 0.0, 0, 0.0
    times, fails, internal = {}, {}, {}
    samples = {"single_found": 0, "single_total": 0, "group_detections": {},
               "noface_false": 0}
    skipped = []
    for it in items:
        r = runs[it["file"]].get(tool)
        if r is None:
            skipped.append(it["file"])
            continue
        b = mp_bin(it["mp"])
        if r["error"]:
            fails.setdefault(b, {}).setdefault(r["error"], 0)
            fails[b][r["error"]] += 1
        else:
            times.setdefault(b, []).append(r["ms"])
            if "internal_ms" in r:
                internal.setdefault(b, []).append(r["internal_ms"])
        if it["kind"] == "sample":
            n = len(r["boxes"])
            sk = it["sample_kind"]
            if sk == "single":
                samples["single_total"] += 1
                samples["single_found"] += n >= 1
            elif sk == "group":
                samples["group_detections"][it["file"]] = n
            else:
                samples["noface_false"] += n
            continue
        truth = [f["box"] for f in it["faces"]]
        hit, false = match(truth, r["boxes"])
        if it["kind"] == "noface":
            noface_false += false
            noface_mp += it["mp"]
            continue
        comp_false += false
        comp_mp += it["mp"]
        for i, f in enumerate(it["faces"]):
            found = i in hit
            if it["kind"] in ("single", "group"):
                for key, d in ((f["size"], by_size), ((it["kind"], f["size"]), by_scene)):
                    d.setdefault(key, [0, 0])
                    d[key][0] += found
                    d[key][1] += 1
            elif it["kind"] == "turned":
                by_angle.setdefault(it["angle"], [0, 0])
                by_angle[it["angle"]][0] += found
                by_angle[it["angle"]][1] += 1
            else:
                k = "%dx%d_%dpx" % (it["width"], it["height"], f["size"])
                thumbs.setdefault(k, [0, 0])
                thumbs[k][0] += found
                thumbs[k][1] += 1
    med = {k: {"median_ms": round(statistics.median(v), 1), "n": len(v)}
           for k, v in sorted(times.items(), key=lambda kv: [n for _, _, n in MP_BINS].index(kv[0]))}
    out = {
        "recall_by_size": {str(k): ratio(*v) for k, v in sorted(by_size.items())},
        "recall_by_scene_and_size": {"%s_%d" % k: ratio(*v) for k, v in sorted(by_scene.items())},
        "recall_turned_by_angle": {str(k): ratio(*v) for k, v in sorted(by_angle.items())},
        "recall_thumbnails": {k: ratio(*v) for k, v in sorted(thumbs.items())},
        "false_per_mp_noface": round(noface_false / noface_mp, 3) if noface_mp else None,
        "false_noface": noface_false, "noface_mp": round(noface_mp, 3),
        "unmatched_per_mp_composites": round(comp_false / comp_mp, 3) if comp_mp else None,
        "samples": samples,
        "time_by_mp": med,
        "failures_by_mp": fails,
        "skipped_photos": len(skipped),
    }
    if internal:
        out["internal_time_by_mp"] = {k: {"median_ms": round(statistics.median(v), 1),
                                          "n": len(v)} for k, v in internal.items()}
    return out


def plot(res, dest):
    """Recall by face size, one line per tool, as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.2, 4.2), dpi=100)
    for t, s in res["results"].items():
        pts = [(int(k), v["recall"]) for k, v in s["recall_by_size"].items()
               if v["recall"] is not None]
        if pts:
            cap = res.get("cnn_caps_mp", {}).get(t)
            ax.plot(*zip(*pts), marker="o",
                    label=t + (" (photos <= %g MP only)" % cap if cap else ""))
    ax.set_xscale("log")
    first = next(iter(res["results"].values()))
    ax.set_xticks([int(k) for k in first["recall_by_size"]] or [16, 200])
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("face box side (px)")
    ax.set_ylabel("recall")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Detection recall by face size (%d photos)" % res["set"]["images"])
    fig.tight_layout()
    fig.savefig(dest)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick set (a few dozen photos)")
    ap.add_argument("--data-out", help="where the labelled set is (built when missing); "
                    "default /tmp/detbench or /tmp/detbench-quick")
    ap.add_argument("--json", help="result file (default bench/results/detect_bench.json)")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--cnn-max-mp", type=float, default=None,
                    help="run dlib_mmod only on photos up to this size, fr_cnn up to a third "
                         "of it, as it upsamples (default 1.1 MP, --quick 0.35 MP)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker)
    out = Path(a.data_out or ("/tmp/detbench-quick" if a.quick else "/tmp/detbench"))
    if not (out / "manifest.json").exists():
        cmd = [sys.executable, str(Path(__file__).with_name("derive_detect.py")), "--out", str(out)]
        subprocess.run(cmd + (["--quick"] if a.quick else []), check=True)
    man = json.loads((out / "manifest.json").read_text())
    if man["quick"] != a.quick:
        sys.exit("%s holds the %s set; use another --data-out" % (out, "quick" if man["quick"]
                                                                   else "full"))
    tools = a.tools.split(",")
    cnn_mp = a.cnn_max_mp if a.cnn_max_mp is not None else 0.35 if a.quick else 1.1
    caps = {"fr_cnn": round(cnn_mp / 3, 3), "dlib_mmod": cnn_mp}
    peers = {t: Peer(t) for t in tools if t not in OURS}
    items = man["images"]
    runs = {}
    t_start = time.perf_counter()
    for k, it in enumerate(items):
        path = it.get("path") or str(out / it["file"])
        runs[it["file"]] = r = {}
        for t in tools:
            if t in caps and it["mp"] > caps[t]:
                continue
            r[t] = faceverify(path, OURS[t]) if t in OURS else peers[t].detect(path)
        print("%d/%d %s %s" % (k + 1, len(items), it["file"],
                               " ".join("%s=%d" % (t, len(v["boxes"])) for t, v in r.items())),
              file=sys.stderr, flush=True)
    worker_rss = {t: p.close() for t, p in peers.items()}
    rss = {}
    for it in items:
        r = runs[it["file"]].get("faceverify")
        if r is not None:
            b = mp_bin(it["mp"])
            rss[b] = max(rss.get(b, 0), r["maxrss_kb"])
    res = {
        "what": "face detection on labelled real-size photos (bench/derive_detect.py), "
                "every tool on each photo in turn, one thread each",
        "set": {"quick": man["quick"], "seed": man["seed"], "images": len(items),
                "faces": sum(len(i["faces"] or []) for i in items),
                "manifest_sha256": man["manifest_sha256"], "truth": man["truth"],
                "kinds": {k: sum(i["kind"] == k for i in items)
                          for k in ("single", "group", "turned", "thumb", "noface", "sample")}},
        "tools": {
            "faceverify": "faceverify detect PHOTO --json --threads 1 (default policy: detector "
                          "auto, MTCNN), one process per photo; time = process wall time incl. "
                          "model load",
            "fr_hog": "face_recognition 1.3.0 face_locations(img): HOG, upsample 1 (defaults)",
            "fr_cnn": "face_recognition 1.3.0 face_locations(img, model='cnn'): upsample 1",
            "dlib_mmod": "dlib-bin cnn_face_detection_model_v1(mmod_human_face_detector.dat)"
                         "(img, 0)",
            "faceverify_mmod": "faceverify detect PHOTO --json --threads 1 --detector mmod (the "
                               "MMOD scale policy, the default before MTCNN)",
        },
        "match_rule": "greedy by IoU; a match is IoU >= %.1f, or for truth faces <= %d px the "
                      "detection's centre inside the truth box with a side <= 3x the truth's"
                      % (IOU_MIN, TINY_PX),
        "cnn_caps_mp": {t: caps[t] for t in tools if t in caps},
        "cnn_caps_note": "the CNN peers run only on photos up to these sizes (one core: about "
                         "8 us per pixel of the upsampled base); larger photos are skipped for "
                         "them and count in none of their numbers",
        "results": {t: summarise(items, runs, t) for t in tools},
        "faceverify_peak_rss_kb_by_mp": rss,
        "faceverify_rss_note": "the largest peak RSS of one faceverify detect process in each "
                               "photo-size bin (wait4)",
        "worker_peak_rss_kb": worker_rss,
        "worker_rss_note": "the peers' peak RSS over the whole run (Python, numpy, dlib and "
                           "the largest photo they ran), not per photo",
        "wall_s": round(time.perf_counter() - t_start, 1),
        "machine": machine(),
        "per_photo": {f: {t: {"n": len(v["boxes"]), "ms": v["ms"] and round(v["ms"], 1),
                              "error": v["error"]} for t, v in r.items()}
                      for f, r in runs.items()},
    }
    dest = write_result("detect_bench.json", res, a.json)
    plot(res, dest.with_name(dest.stem + "_recall.png"))
    print("wrote %s (%.0f s)" % (dest, res["wall_s"]), file=sys.stderr)
    for t in tools:
        s = res["results"][t]
        print("%-10s recall %s | false/MP %s | time %s" % (
            t, " ".join("%s:%s" % (k, v["recall"]) for k, v in s["recall_by_size"].items()),
            s["false_per_mp_noface"],
            " ".join("%s:%.0f" % (k, v["median_ms"]) for k, v in s["time_by_mp"].items())))


if __name__ == "__main__":
    main()
