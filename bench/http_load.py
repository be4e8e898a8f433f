#!/usr/bin/env python3
"""HTTP load on faceverifyd with wrk: verify and identify at 1, 4 and 16
connections, next to the library's in-process time for the same images.

Starts faceverifyd like `make run` does (migrate, createcollection, serve
on 127.0.0.1 at a free port, a temp SQLite database; Release build from
$FACEVERIFY_BUILD), enrolls --gallery LFW people, then runs wrk (Debian:
`apt-get install wrk`) with bench/wrk_post.lua posting one fixed multipart
body: verify = two photos of one person, identify = a second photo of an
enrolled person.  Per run: requests/s, latency p50/p95/p99 (wrk --latency),
errors (connect/read/write/timeout/non-2xx), and the server's RSS sampled
every 0.1 s.  In-process, two references for the same images: warm
(bench_stages: decode + MMOD + landmarks + chip + embed medians in one
long-lived process, like the server's) and cold (`faceverify verify
--json` / `faceverify embed --json` timings_ms.total in a fresh process,
which also pays first-use allocation).  Server overhead is p50 at 1
connection against the warm reference.  Writes bench/results/http_load.json.

  .venv/bin/python bench/http_load.py [--duration 10] [--gallery 20]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "py"))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("FACEVERIFY_BUILD", str(REPO / "build"))
import fvserver  # noqa: E402
from machine import CLI, DATA, MODELS, machine, write_result  # noqa: E402

LFW = DATA / "lfw"
LUA = REPO / "bench" / "wrk_post.lua"


def rss_sampler(pid, stop, out):
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]) / 1024.0)
        except OSError:
            return
        time.sleep(0.1)


def wrk(url, body_file, ctype, key, conns, duration, pid):
    env = dict(os.environ, FV_BODY=str(body_file), FV_CT=ctype, FV_KEY=key)
    rss, stop = [], threading.Event()
    th = threading.Thread(target=rss_sampler, args=(pid, stop, rss))
    th.start()
    p = subprocess.run(["wrk", "-t", str(min(conns, 4)), "-c", str(conns), "-d", f"{duration}s",
                        "--timeout", "30s", "--latency", "-s", str(LUA), url],
                       capture_output=True, text=True, env=env)
    stop.set()
    th.join()
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("FVJSON ")), None)
    if line is None:
        raise RuntimeError("wrk: " + p.stdout + p.stderr)
    r = json.loads(line[7:])
    for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"):
        r[k] = r[k] / 1000.0  # wrk reports microseconds
    r["requests_per_s"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = sum(r["errors_" + k] for k in ("connect", "read", "write", "status", "timeout"))
    r["rss_mb"] = {"start": rss[0] if rss else None, "max": max(rss) if rss else None,
                   "end": rss[-1] if rss else None, "samples": len(rss)}
    r["connections"] = conns
    return r


def multipart(files):
    req = requests.Request("POST", "http://x/", files=files).prepare()
    return req.body, req.headers["Content-Type"]


def inproc(args, runs, key):
    env = dict(os.environ, FACEVERIFY_MODELS=str(MODELS))
    v = []
    for _ in range(runs):
        p = subprocess.run([str(CLI), *map(str, args), "--json"], capture_output=True, text=True,
                           env=env)
        j = json.loads(p.stdout)
        v.append(key(j))
    return statistics.median(v)


def warm(path, runs):
    p = subprocess.run([str(CLI.parent / "bench_stages"), str(path), "--threads",
                        str(os.cpu_count()), "--runs", str(runs)], capture_output=True, text=True,
                       check=True, env=dict(os.environ, FACEVERIFY_MODELS=str(MODELS)))
    st = json.loads(p.stdout)["stages"]
    return sum(st[k]["median_ms"] for k in ("decode", "detect_mmod", "landmarks", "chip",
                                             "embed_batch1_per_face"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--gallery", type=int, default=20)
    ap.add_argument("--inproc", type=int, default=5)
    ap.add_argument("--conns", default="1,4,16")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite://{tmp}/bench.db"
    fvserver.daemon_cmd("migrate", db_url=url)
    key = fvserver.create_collection(url, "bench")
    srv = fvserver.Server(url, max_body=12_000_000)
    out = {"machine": machine("faceverifyd: --http-threads 4; OpenBLAS pinned to 1 thread"),
           "tool": subprocess.run(["wrk", "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0:1],
           "duration_s": a.duration, "gallery": a.gallery, "runs": {},
           "command": "python bench/http_load.py --duration %d --gallery %d --inproc %d" % (
               a.duration, a.gallery, a.inproc)}
    try:
        people = sorted(p.name for p in LFW.iterdir()
                        if p.is_dir() and (p / f"{p.name}_0002.jpg").exists())[: a.gallery]
        for person in people:
            sid = srv.request("POST", "/api/v1/subjects", key, json={"name": person}).json()["id"]
            srv.request("POST", f"/api/v1/subjects/{sid}/faces", key,
                        files={"image": ("a.jpg", (LFW / person / f"{person}_0001.jpg")
                                         .read_bytes())})
        pa = LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
        pb = LFW / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg"
        probe = LFW / people[0] / f"{people[0]}_0002.jpg"
        bodies = {
            "verify": ("/api/v1/verify", multipart({"image_a": ("a.jpg", pa.read_bytes()),
                                                    "image_b": ("b.jpg", pb.read_bytes())})),
            "identify": ("/api/v1/identify", multipart({"image": ("p.jpg", probe.read_bytes())})),
        }
        # sanity: one request each must succeed
        for name, (path, (body, ctype)) in bodies.items():
            r = requests.post(srv.url(path), data=body, headers={"Content-Type": ctype,
                                                                 "X-API-Key": key}, timeout=60)
            assert r.status_code == 200, (name, r.status_code, r.text)
        out["inprocess_ms"] = {
            "verify": warm(pa, a.inproc) + warm(pb, a.inproc),
            "identify_embed": warm(probe, a.inproc),
            "cold_process_verify": inproc(["verify", pa, pb], a.inproc,
                                          lambda j: j["timings_ms"]["total"]),
            "cold_process_identify_embed": inproc(["embed", probe], a.inproc,
                                                  lambda j: j["timings_ms"]["total"]),
        }
        for name, (path, (body, ctype)) in bodies.items():
            bf = tmp / f"{name}.body"
            bf.write_bytes(body)
            out["runs"][name] = []
            for c in [int(x) for x in a.conns.split(",")]:
                r = wrk(srv.url(path), bf, ctype, key, c, a.duration, srv.proc.pid)
                print(name, c, json.dumps(r), flush=True)
                out["runs"][name].append(r)
        base = {"verify": out["inprocess_ms"]["verify"],
                "identify": out["inprocess_ms"]["identify_embed"]}
        out["server_overhead_1conn"] = {
            k: (out["runs"][k][0]["p50_ms"] - base[k]) / base[k] for k in base}
    finally:
        srv.stop()
    dest = write_result("http_load.json", out)
    print("wrote", dest)


if __name__ == "__main__":
    main()
