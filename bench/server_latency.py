"""Latency of faceverifyd's verify and identify, next to the library's own
time for the same images (the CLI's in-process timings_ms.total, model loading
excluded).  Never part of the test suite.

  python bench/server_latency.py [--gallery 1000] [--probes 30] [--out FILE]

Starts a Release faceverifyd ($FACEVERIFY_BUILD, default build/) on a temp
SQLite database, enrolls one photo (_0001) of the first N LFW people with
exactly one detectable face, then times sequential requests from one
client: verify on LFW View-2 pairs, identify with the _0002 photo of
enrolled people (rank-1 accuracy reported too).  Writes JSON.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "py"))
os.environ.setdefault("FACEVERIFY_BUILD", str(REPO / "build"))
import fvserver  # noqa: E402

DATA = Path(os.environ.get("FACEVERIFY_DATA", REPO.parent / "shared" / "data"))
LFW = DATA / "lfw"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gallery", type=int, default=1000)
    ap.add_argument("--probes", type=int, default=30)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "server_latency.json"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite://{tmp}/bench.db"
    fvserver.daemon_cmd("migrate", db_url=url)
    key = fvserver.create_collection(url, "bench")
    srv = fvserver.Server(url)
    try:
        people = sorted(p.name for p in LFW.iterdir() if p.is_dir())
        multi = [p for p in people if (LFW / p / f"{p}_0002.jpg").exists()]
        # Enroll people with a second photo first, so that probes exist.
        order = multi[: a.gallery // 2] + [p for p in people if p not in set(multi)]
        enrolled = {}

        def enroll(person):
            r = srv.request("POST", "/api/v1/subjects", key, json={"name": person})
            sid = r.json()["id"]
            img = (LFW / person / f"{person}_0001.jpg").read_bytes()
            r = srv.request("POST", f"/api/v1/subjects/{sid}/faces", key,
                            files={"image": ("a.jpg", img)})
            if r.status_code != 201:
                srv.request("DELETE", f"/api/v1/subjects/{sid}", key)
                return person, None
            return person, sid

        t0 = time.time()
        it = iter(order)
        with ThreadPoolExecutor(2) as ex:
            while len(enrolled) < a.gallery:
                batch = [next(it) for _ in range(min(16, a.gallery - len(enrolled)))]
                for person, sid in ex.map(enroll, batch):
                    if sid:
                        enrolled[person] = sid
        enroll_s = time.time() - t0
        print(f"enrolled {len(enrolled)} in {enroll_s:.0f} s", flush=True)

        probes = [p for p in multi if p in enrolled][: a.probes]
        ident_rt, ident_srv, ident_search, ident_cli, correct = [], [], [], [], 0
        cli = Path(os.environ["FACEVERIFY_BUILD"]) / "bin" / "faceverify"
        for p in probes:
            img = (LFW / p / f"{p}_0002.jpg").read_bytes()
            t = time.perf_counter()
            r = srv.request("POST", "/api/v1/identify", key, files={"image": ("p.jpg", img)})
            ident_rt.append((time.perf_counter() - t) * 1e3)
            if r.status_code != 200:
                continue
            body = r.json()
            ident_srv.append(body["timings_ms"]["total"])
            if cli.exists():  # in-process: decode + detect + embed of the probe
                pr = subprocess.run([str(cli), "embed", str(LFW / p / f"{p}_0002.jpg"), "--json"],
                                    capture_output=True, text=True)
                try:
                    stages = json.loads(pr.stdout)["timings_ms"]
                    ident_cli.append(sum(v for k, v in stages.items() if k != "total"))
                except (ValueError, KeyError):
                    pass
            ident_search.append(body["timings_ms"]["search"])
            m = body["faces"][0]["match"]
            correct += bool(m and m["name"] == p)

        pairs = [ln.split("\t") for ln in (LFW / "pairs.txt").read_text().splitlines()[1:]]
        pairs = [x for x in pairs if len(x) == 3][: a.probes]
        ver_rt, ver_srv, ver_cli = [], [], []
        for name, i, j in pairs:
            pa = LFW / name / f"{name}_{int(i):04d}.jpg"
            pb = LFW / name / f"{name}_{int(j):04d}.jpg"
            t = time.perf_counter()
            r = srv.request("POST", "/api/v1/verify", key,
                            files={"image_a": ("a.jpg", pa.read_bytes()),
                                   "image_b": ("b.jpg", pb.read_bytes())})
            ver_rt.append((time.perf_counter() - t) * 1e3)
            if r.status_code == 200:
                ver_srv.append(r.json()["timings_ms"]["total"])
            if cli.exists():
                p = subprocess.run([str(cli), "verify", str(pa), str(pb), "--json"],
                                   capture_output=True, text=True)
                try:
                    ver_cli.append(json.loads(p.stdout)["timings_ms"]["total"])
                except (ValueError, KeyError):
                    pass
        med = lambda xs: round(statistics.median(xs), 1) if xs else None  # noqa: E731
        res = {
            "gallery": len(enrolled), "enroll_seconds": round(enroll_s, 1),
            "identify": {"n": len(ident_rt), "median_roundtrip_ms": med(ident_rt),
                         "median_server_total_ms": med(ident_srv),
                         "median_search_ms": med(ident_search),
                         "median_cli_inprocess_embed_ms": med(ident_cli),
                         "rank1_correct": correct},
            "verify": {"n": len(ver_rt), "median_roundtrip_ms": med(ver_rt),
                       "median_server_total_ms": med(ver_srv),
                       "median_cli_inprocess_total_ms": med(ver_cli)},
            "cpus": os.cpu_count(),
        }
        print(json.dumps(res, indent=1))
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
