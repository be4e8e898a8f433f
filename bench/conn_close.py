#!/usr/bin/env python3
"""What `Connection: close` on every answer costs a client on loopback.

The connection gate (src/server/gate.c) checks each request's header block
before libmicrohttpd sees it, so faceverifyd closes the connection after
every answer: a client that would keep the connection alive reconnects for
each request instead.  This times GET /api/v1/health from one client, N
times, on one http.client.HTTPConnection (which reuses the connection
while the server keeps it open, and reconnects when it does not), and on a
new connection per request, for each server binary given (e.g. main's
build, without the gate, and this tree's).  Never part of the test suite.

  .venv/bin/python bench/conn_close.py --build before=../old-tree/build --build after=build
Writes bench/results/conn_close.json: per build and mode, the median, p95
and mean in ms, and how many requests needed a new TCP connection.
"""
import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "py"))
import fvserver  # noqa: E402


def timed(port, n, reuse):
    """n GET /health; per request seconds and new connections made."""
    out, connects = [], 0
    conn = None
    for _ in range(n):
        t0 = time.perf_counter()
        if conn is None or not reuse or conn.sock is None:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.connect()
            connects += 1
        conn.request("GET", "/api/v1/health")
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"/health answered {r.status}")
        if r.will_close:
            conn.close()
        out.append(time.perf_counter() - t0)
    if conn is not None:
        conn.close()
    return out, connects


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", action="append", required=True, help="LABEL=BUILD_DIR")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "conn_close.json"))
    a = ap.parse_args()
    res = {"requests": a.n, "builds": {}}
    for spec in a.build:
        label, _, build = spec.partition("=")
        fvserver.DAEMON = Path(build).resolve() / "bin" / "faceverifyd"
        tmp = Path(tempfile.mkdtemp())
        url = f"sqlite://{tmp}/bench.db"
        fvserver.daemon_cmd("migrate", db_url=url)
        srv = fvserver.Server(url)
        try:
            timed(srv.port, 200, True)  # warm-up
            row = {}
            for mode, reuse in (("reuse_connection", True), ("new_connection", False)):
                xs, connects = timed(srv.port, a.n, reuse)
                row[mode] = {"median_ms": round(statistics.median(xs) * 1e3, 4),
                             "p95_ms": round(sorted(xs)[int(0.95 * len(xs))] * 1e3, 4),
                             "mean_ms": round(statistics.fmean(xs) * 1e3, 4),
                             "connects": connects}
            res["builds"][label] = {"build": build, **row}  # as given: no machine paths
            print(label, json.dumps(row))
        finally:
            srv.stop()
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
