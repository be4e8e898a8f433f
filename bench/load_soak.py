"""Bounded load run of faceverifyd on 127.0.0.1 (issue 8, "Load").

Starts its own faceverifyd on a temporary SQLite database with
--max-inflight M, enrolls a small LFW gallery, then:

1. soak: C clients (C <= M, the configured concurrency) send a mix of
   identify (image), identify/embeddings and subject listings for
   --seconds; every answer must be 2xx.  The server's RSS is sampled every
   second; "flat" compares the median of the second quarter of the run
   (after warm-up) with the median of the last quarter.
2. overload: 4 x M clients send identify (image) for --overload-seconds;
   past capacity the server must answer 503 `overloaded` with Retry-After,
   much faster than it serves a request (medians of both are reported).

Not part of the test suite.  Writes bench/results/load_soak.json.

    .venv/bin/python bench/load_soak.py --seconds 120
"""
import argparse
import json
import os
import random
import statistics
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "py"))
os.environ.setdefault("FACEVERIFY_BUILD", str(REPO / "build"))
os.environ.setdefault("FACEVERIFY_MODELS", str(REPO / "models"))
import fvserver  # noqa: E402

DATA = Path(os.environ.get("FACEVERIFY_DATA", REPO.parent / "shared" / "data"))


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--overload-seconds", type=float, default=15)
    ap.add_argument("--max-inflight", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=0, help="default: max-inflight")
    ap.add_argument("--gallery", type=int, default=30)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "load_soak.json"))
    args = ap.parse_args()
    conc = args.concurrency or args.max_inflight

    tmp = Path(tempfile.mkdtemp(prefix="fv-soak-"))
    url = f"sqlite://{tmp}/soak.db"
    fvserver.daemon_cmd("migrate", db_url=url)
    key = fvserver.create_collection(url, "soak")
    srv = fvserver.Server(url, env={"FACEVERIFY_MAX_INFLIGHT": str(args.max_inflight)})
    pid = srv.proc.pid
    people = sorted(p for p in (DATA / "lfw").iterdir() if p.is_dir())
    people = [p for p in people if len(list(p.glob("*.jpg"))) >= 2][:args.gallery]
    probes = []
    for p in people:
        imgs = sorted(p.glob("*.jpg"))
        sid = srv.request("POST", "/api/v1/subjects", key, json={"name": p.name}).json()["id"]
        r = srv.request("POST", f"/api/v1/subjects/{sid}/faces", key,
                        files={"image": (imgs[0].name, imgs[0].read_bytes())},
                        data={"face": "largest"})
        assert r.status_code == 201, r.text
        probes.append((sid, imgs[1].read_bytes()))
    print(f"gallery: {len(probes)} subjects; soak {args.seconds}s at concurrency {conc} "
          f"(max-inflight {args.max_inflight})", flush=True)

    lock = threading.Lock()
    stats = {"requests": 0, "errors": 0, "by_kind": {}, "error_samples": []}
    lat = {"identify": [], "identify_embeddings": [], "list": []}
    rss = []
    stop = threading.Event()

    def sampler():
        t0 = time.monotonic()
        while not stop.is_set():
            rss.append((time.monotonic() - t0, rss_kb(pid)))
            stop.wait(1.0)

    def client(i):
        rng = random.Random(i)
        sess = requests.Session()
        sess.headers["X-API-Key"] = key
        while not stop.is_set():
            kind = rng.choice(["identify", "identify", "identify_embeddings", "list"])
            t0 = time.monotonic()
            try:
                if kind == "identify":
                    sid, body = rng.choice(probes)
                    r = sess.post(srv.url("/api/v1/identify"), files={"image": ("p.jpg", body)},
                                  timeout=120)
                elif kind == "identify_embeddings":
                    q = [rng.uniform(-0.1, 0.1) for _ in range(128)]
                    r = sess.post(srv.url("/api/v1/identify/embeddings"),
                                  json={"embedding": q}, timeout=120)
                else:
                    r = sess.get(srv.url("/api/v1/subjects?limit=100"), timeout=120)
                ok, code, text = 200 <= r.status_code < 300, r.status_code, r.text[:200]
            except requests.RequestException as e:
                ok, code, text = False, 0, str(e)[:200]
            dt = (time.monotonic() - t0) * 1000
            with lock:
                stats["requests"] += 1
                stats["by_kind"][kind] = stats["by_kind"].get(kind, 0) + 1
                if ok:
                    lat[kind].append(dt)
                else:
                    stats["errors"] += 1
                    if len(stats["error_samples"]) < 5:
                        stats["error_samples"].append([code, text])

    threads = [threading.Thread(target=sampler)] + \
        [threading.Thread(target=client, args=(i,)) for i in range(conc)]
    t_start = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    soak_s = time.monotonic() - t_start

    n = len(rss)
    q2 = [v for _, v in rss[n // 4:n // 2]] or [rss[0][1]]
    q4 = [v for _, v in rss[3 * n // 4:]] or [rss[-1][1]]
    rss_mid, rss_end = statistics.median(q2), statistics.median(q4)

    # Overload: 4 x max-inflight clients of the slowest request.
    over = {"200": [], "503": [], "other": [], "retry_after_missing": 0}
    stop2 = threading.Event()

    def heavy(i):
        rng = random.Random(1000 + i)
        while not stop2.is_set():
            _, body = rng.choice(probes)
            t0 = time.monotonic()
            try:
                r = requests.post(srv.url("/api/v1/identify"), headers={"X-API-Key": key},
                                  files={"image": ("p.jpg", body)}, timeout=120)
                code = r.status_code
            except requests.RequestException:
                code, r = 0, None
            dt = (time.monotonic() - t0) * 1000
            with lock:
                if code == 200:
                    over["200"].append(dt)
                elif code == 503 and r.json()["error"]["code"] == "overloaded":
                    over["503"].append(dt)
                    if not r.headers.get("Retry-After"):
                        over["retry_after_missing"] += 1
                else:
                    over["other"].append([code, dt])
            if code == 503:
                time.sleep(0.05)  # a polite client would wait Retry-After; this one hammers

    hv = [threading.Thread(target=heavy, args=(i,)) for i in range(4 * args.max_inflight)]
    for t in hv:
        t.start()
    time.sleep(args.overload_seconds)
    stop2.set()
    for t in hv:
        t.join()
    rss_after = rss_kb(pid)
    assert srv.stop() == 0

    res = {
        "benchmark": "load_soak",
        "host": os.uname().nodename,
        "cpus": os.cpu_count(),
        "note": "2-core development VM shared with other jobs; latencies are noisy",
        "command": " ".join(["bench/load_soak.py"] + sys.argv[1:]),
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
        "max_inflight": args.max_inflight,
        "concurrency": conc,
        "gallery": len(probes),
        "soak": {
            "seconds": round(soak_s, 1),
            "requests": stats["requests"],
            "errors": stats["errors"],
            "error_samples": stats["error_samples"],
            "by_kind": stats["by_kind"],
            "throughput_rps": round(stats["requests"] / soak_s, 2),
            "latency_ms": {k: {"median": round(statistics.median(v), 1),
                               "p95": round(pct(v, 0.95), 1), "n": len(v)}
                           for k, v in lat.items() if v},
            "rss_mb": {"start": round(rss[0][1] / 1024, 1),
                       "second_quarter_median": round(rss_mid / 1024, 1),
                       "last_quarter_median": round(rss_end / 1024, 1),
                       "max": round(max(v for _, v in rss) / 1024, 1),
                       "growth_mid_to_end_pct": round(100 * (rss_end - rss_mid) / rss_mid, 2),
                       "series_every_10s": [round(v / 1024, 1) for _, v in rss[::10]]},
        },
        "overload": {
            "clients": 4 * args.max_inflight,
            "seconds": args.overload_seconds,
            "ok": len(over["200"]),
            "shed_503": len(over["503"]),
            "other": over["other"][:5],
            "retry_after_missing": over["retry_after_missing"],
            "ok_median_ms": round(statistics.median(over["200"]), 1) if over["200"] else None,
            "shed_median_ms": round(statistics.median(over["503"]), 2) if over["503"] else None,
            "shed_p95_ms": round(pct(over["503"], 0.95), 2) if over["503"] else None,
            "rss_mb_after": round(rss_after / 1024, 1),
        },
    }
    res["pass"] = bool(res["soak"]["errors"] == 0 and
                       abs(res["soak"]["rss_mb"]["growth_mid_to_end_pct"]) < 10 and
                       res["overload"]["shed_503"] > 0 and not res["overload"]["other"] and
                       res["overload"]["retry_after_missing"] == 0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
