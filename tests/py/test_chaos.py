"""Issue 16's chaos test: about a minute of its attacks, all at once,
against ONE real faceverifyd on loopback, while normal keyed clients verify
and identify against a small enrolled gallery (a few LFW people).

Phases: enrol the gallery; run the normal clients alone for UNLOADED_S
(their unloaded latency); run them again for ATTACK_S while an attacker
process (its own process, so that its Python does not share the clients'
interpreter lock) sends, from several threads:
  - trickled bodies and trickled header lines (slowloris), keyed and keyless;
  - keyless 12 MB nested-JSON bodies;
  - smuggling attempts (two Content-Lengths, Content-Length with chunked,
    `gzip, chunked`) whose hidden request DELETEs an enrolled subject;
  - NUL in paths and form values, repeated form fields, oversized metadata;
  - keyed 40 MP JPEGs (flat grey, under 1 MB) against the memory budget;
  - keyless request floods.
The attacker's sockets are bound to other loopback source addresses
(127.0.0.2 ... 127.0.0.9; Linux routes all of 127/8 to lo), so that the
per-IP connection cap, which an attacker on one address meets, does not
also count the normal clients' connections from 127.0.0.1.  The attack
rates are bounded (this runs on small shared CI machines): the point is
that the server sheds the attacks cheaply, not that a local process can
saturate the CPUs.

Asserted (the issue's criteria): the normal clients' success rate (200 with
the same answer as unloaded) >= 99% and their p95 latency within 3x of the
unloaded p95; every attack gets the refusal it should (never a 5xx other
than 503 overloaded, never a second answer on a smuggling connection); the
server's RSS, sampled and as VmHWM, stays under its RSS before the attack +
the memory budget + MARGIN (Release builds only: ASan's shadow and
quarantine change RSS); nothing stored is lost or corrupted (the same
subjects and face ids) and the index equals storage (identify of each
enrolled photo finds its own subject at distance ~0 among exactly the
enrolled templates); the server stops cleanly on SIGTERM (no sanitizer
report).
"""
import json
import multiprocessing
import threading
import time

import pytest

from attacks import asan_build, connect, jpeg, proc_kib, raw, read_all, req, status_of
from conftest import DATA, skip_or_fail
from fvserver import Server, check, create_collection, daemon_cmd, new_db_url

UNLOADED_S = 12
ATTACK_S = 60
BUDGET = 800_000_000  # one 40 MP upload (~450 MB estimated) and the clients'
# small photos fit under its 7/8, two 40 MP uploads do not (503 after 2 s)
MARGIN = 100_000_000  # request buffers, allocator slack, SQLite's cache
CLIENTS = 2
LARGE_EVERY = 12  # s between two bursts of two 40 MP uploads, at least
LARGE_DUTY = 5  # and at least 5x the time the last burst took: one 40 MP
# detection takes both cores for seconds (more under ASan), which any
# request sharing the CPUs with it feels
FLOOD_PAUSE = 0.02  # s between two keyless requests of the flood
PEOPLE = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder"]
ENROLLED = (1, 2)  # photo numbers enrolled per person; 3 and 4 are queries


def photo(person: str, n: int) -> bytes:
    return (DATA / "lfw" / person / f"{person}_{n:04d}.jpg").read_bytes()


# ------------------------------------------------------------ normal clients

def client_work(srv, key, people, i):
    """The i-th request of a normal client: a verify of two other photos of
    one person, or an identify of one; returns (status, answer's gist)."""
    person, sid = people[i % len(people)]
    if i % 2:
        r = srv.request("POST", "/api/v1/verify", key, timeout=30,
                        files={"image_a": ("a.jpg", photo(person, 3), "image/jpeg"),
                               "image_b": ("b.jpg", photo(person, 4), "image/jpeg")})
        gist = r.json().get("verified") if r.status_code == 200 else None
    else:
        r = srv.request("POST", "/api/v1/identify", key, timeout=30,
                        files={"image": ("q.jpg", photo(person, 3), "image/jpeg")})
        gist = ([(f["match"] or {}).get("id") for f in r.json()["faces"]]
                if r.status_code == 200 else None)
    return r.status_code, gist


def run_clients(srv, key, people, seconds, expected=None):
    """CLIENTS threads send requests back to back for `seconds`.  Returns
    [(i, latency s, status, gist)]; with expected (i mod 2*len(people) ->
    gist), a 200 with another answer counts as a failure (status 0)."""
    out, lock = [], threading.Lock()
    end = time.monotonic() + seconds

    def loop(c):
        i = c
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                status, gist = client_work(srv, key, people, i)
            except Exception as e:  # a timeout or a reset is a failure too
                status, gist = -1, repr(e)
            dt = time.monotonic() - t0
            slot = i % (2 * len(people))
            if expected is not None and status == 200 and expected.get(slot) != gist:
                status = 0
            with lock:
                out.append((slot, dt, status, gist))
            i += CLIENTS

    threads = [threading.Thread(target=loop, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.95 * len(xs)))]


# ------------------------------------------------------------ the attacker

def attacker(port, key, sids, big_jpeg, seconds, queue):
    """Runs in its own process: the attack threads for `seconds`, then puts
    {attack: {status: count}} and the unexpected answers on queue.  A thread
    still waiting on the server at the end is abandoned (the process exits,
    closing its sockets)."""
    srv = type("Target", (), {"port": port})
    end = time.monotonic() + seconds
    counts, bad, lock = {}, [], threading.Lock()

    def note(name, answer, allowed):
        st = status_of(answer) if answer else 0  # 0: closed without an answer
        with lock:
            counts.setdefault(name, {}).setdefault(st, 0)
            counts[name][st] += 1
            if st not in allowed or answer.count(b"HTTP/1.1 ") > 1:
                bad.append((name, answer[:300]))

    def trickle(name, src, head, byte, keyed_too):
        """Keeps 8 sockets that send `head` and then one `byte` a second;
        reopens those the server closes (counted as status 0)."""
        socks = []
        n = 0
        while time.monotonic() < end:
            while len(socks) < 8:
                k = key if keyed_too and n % 2 else None
                n += 1
                try:
                    s = connect(srv, 5, src)
                    s.sendall(head(k))
                    socks.append(s)
                    with lock:
                        counts.setdefault(name, {}).setdefault("opened", 0)
                        counts[name]["opened"] += 1
                except OSError:
                    note(name, b"", {0})
            time.sleep(1)
            for s in list(socks):
                try:
                    s.sendall(byte)
                except OSError:
                    socks.remove(s)
                    s.close()
                    note(name, b"", {0})
        for s in socks:
            s.close()

    def slow_bodies():
        trickle("slow_bodies", "127.0.0.2",
                lambda k: req("POST", "/api/v1/detect", k, ctype="application/json",
                              length=False, headers=["Content-Length: 100000"]) + b"{",
                b" ", True)

    def slow_headers():
        trickle("slow_headers", "127.0.0.3",
                lambda k: b"GET /api/v1/subjects HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                b"X-a: b\r\n", False)

    def nested_json():
        body = b'{"a":[' + b",".join([b"{}"] * 4_000_000) + b"]}"
        while time.monotonic() < end:
            a = raw(srv, req("POST", "/api/v1/identify", ctype="application/json", body=body,
                             headers=["Connection: close"]), 10, "127.0.0.4")
            note("nested_json", a, {0, 401})
            time.sleep(0.5)

    def smuggling():
        i = 0
        while time.monotonic() < end:
            inner = req("DELETE", f"/api/v1/subjects/{sids[i % len(sids)]}", key,
                        headers=["Connection: close"])
            first = b'{"name":"x"}'
            kind = i % 3
            if kind == 0:
                body = first + inner
                hs = [f"Content-Length: {len(first)}", f"Content-Length: {len(body)}"]
            elif kind == 1:
                body = b"0\r\n\r\n" + inner
                hs = [f"Content-Length: {len(body)}", "Transfer-Encoding: chunked"]
            else:
                body = b"0\r\n\r\n" + inner
                hs = ["Transfer-Encoding: gzip, chunked"]
            a = raw(srv, req("POST", "/api/v1/subjects", key, ctype="application/json",
                             length=False, headers=hs) + body, 5, "127.0.0.5")
            note("smuggling", a, {0, 400})
            i += 1
            time.sleep(0.3)

    def malformed():
        form = "application/x-www-form-urlencoded"
        meta = json.dumps({"name": "big", "metadata": {"x": "m" * 20000}}).encode()
        attempts = [
            req("GET", f"/api/v1/subjects/{sids[0]}%00/../../{sids[1]}", key, length=False),
            req("POST", "/api/v1/subjects", key, ctype=form, body=b"name=url%00enc"),
            req("POST", "/api/v1/subjects", key, ctype=form, body=b"name=a&name=b"),
            req("POST", "/api/v1/subjects", key, ctype="application/json", body=meta),
        ]
        i = 0
        while time.monotonic() < end:
            a = raw(srv, attempts[i % len(attempts)].replace(
                b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1), 5, "127.0.0.6")
            note("malformed", a, {400})
            i += 1
            time.sleep(0.2)

    burst = threading.Barrier(2)

    def large_images(src):
        """Two threads send a 40 MP upload at the same moment every
        LARGE_EVERY s, or LARGE_DUTY times as long as the last one took
        (on slow builds): the budget admits one, the other waits 2 s and
        gets 503 overloaded."""
        def go():
            head = (b"--xYz\r\nContent-Disposition: form-data; name=\"image\"; "
                    b"filename=\"big.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n")
            body = head + big_jpeg + b"\r\n--xYz--\r\n"
            while time.monotonic() < end - LARGE_EVERY / 2:
                t0 = time.monotonic()
                try:
                    burst.wait(timeout=120)
                except threading.BrokenBarrierError:
                    return
                a = raw(srv, req("POST", "/api/v1/detect", key, body=body,
                                 ctype="multipart/form-data; boundary=xYz",
                                 headers=["Connection: close"]), 120, src)
                note("large_images", a, {200, 503})
                took = time.monotonic() - t0
                with lock:
                    c = counts["large_images"]
                    c["max_s"] = round(max(c.get("max_s", 0), took), 1)
                time.sleep(max(LARGE_EVERY, LARGE_DUTY * took) - took)
        return go

    def flood():
        # One request a connection: every answer says Connection: close
        # (each request passes the gate), so keep-alive buys nothing.
        while time.monotonic() < end:
            try:
                with connect(srv, 5, "127.0.0.8") as s:
                    s.sendall(req("GET", "/api/v1/subjects", length=False))
                    note("flood", read_all(s), {401})
            except OSError:
                note("flood", b"", {0})
            time.sleep(FLOOD_PAUSE)

    threads = [threading.Thread(target=f, daemon=True) for f in (
        slow_bodies, slow_headers, nested_json, smuggling, malformed, flood,
        large_images("127.0.0.7"), large_images("127.0.0.9"))]
    for t in threads:
        t.start()
    time.sleep(seconds)
    with lock:
        queue.put((counts, bad))


# ------------------------------------------------------------ the test

@pytest.fixture
def gallery_db(tmp_path):
    for p in PEOPLE:
        for n in ENROLLED + (3, 4):
            if not (DATA / "lfw" / p / f"{p}_{n:04d}.jpg").exists():
                skip_or_fail(f"LFW photos of {p} not found under {DATA / 'lfw'}")
    url = new_db_url("sqlite", tmp_path)
    daemon_cmd("migrate", db_url=url)
    return url, create_collection(url, "alpha")


def test_chaos(gallery_db):
    url, key = gallery_db
    big = jpeg(6320, 6320)
    srv = Server(url, max_body=13_000_000,
                 env={"FACEVERIFY_REQUEST_TIMEOUT": "5", "FACEVERIFY_MEMORY_BUDGET": str(BUDGET)})
    try:
        # The gallery: its subject and face ids, checked again at the end.
        stored = {}
        for p in PEOPLE:
            sid = check(srv.request("POST", "/api/v1/subjects", key, json={"name": p}),
                        "POST", "/api/v1/subjects", 201)["id"]
            stored[sid] = (p, [])
            for n in ENROLLED:
                r = srv.request("POST", f"/api/v1/subjects/{sid}/faces", key,
                                files={"image": ("f.jpg", photo(p, n), "image/jpeg")},
                                data={"face": "largest"})
                stored[sid][1].append(check(r, "POST", "/api/v1/subjects/1/faces", 201)["id"])
        people = [(p, sid) for sid, (p, _) in stored.items()]
        pid = srv.proc.pid

        unloaded = run_clients(srv, key, people, UNLOADED_S)
        assert all(s == 200 for _, _, s, _ in unloaded), unloaded
        expected = {slot: gist for slot, _, _, gist in unloaded}
        assert len(expected) == 2 * len(PEOPLE), "too few unloaded requests to know every answer"

        rss0 = proc_kib(pid, "VmRSS") * 1024
        peak, sampling = [rss0], threading.Event()

        def sample():
            while not sampling.wait(0.2):
                peak[0] = max(peak[0], proc_kib(pid, "VmRSS") * 1024)

        sampler = threading.Thread(target=sample)
        sampler.start()
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        attack = ctx.Process(target=attacker, args=(srv.port, key, list(stored), big,
                                                    ATTACK_S, queue))
        attack.start()
        try:
            loaded = run_clients(srv, key, people, ATTACK_S, expected)
            counts, bad = queue.get(timeout=60)
        finally:
            attack.join(10)
            if attack.is_alive():
                attack.kill()
            sampling.set()
            sampler.join()
        hwm = proc_kib(pid, "VmHWM") * 1024

        ok = sum(s == 200 for _, _, s, _ in loaded)
        rate = ok / len(loaded)
        p_un, p_lo = p95([d for _, d, _, _ in unloaded]), p95([d for _, d, _, _ in loaded])
        print(f"\nchaos: {len(unloaded)} unloaded requests, p95 {p_un:.3f} s; "
              f"{len(loaded)} under attack, success {rate:.2%}, p95 {p_lo:.3f} s "
              f"(x{p_lo / p_un:.2f}); RSS before {rss0 / 1e6:.0f} MB, peak sampled "
              f"{peak[0] / 1e6:.0f} MB, VmHWM {hwm / 1e6:.0f} MB, bound "
              f"{(rss0 + BUDGET + MARGIN) / 1e6:.0f} MB; attacks {counts}")
        assert not bad, bad[:10]
        assert all(counts.get(a) for a in ("slow_bodies", "slow_headers", "nested_json",
                                           "smuggling", "malformed", "flood")), counts
        # the request deadline cut every trickled body and every trickled
        # header block (the gate's deadline from accept) off, again and again
        assert counts["slow_bodies"].get(0, 0) >= 8, counts
        assert counts["slow_headers"].get(0, 0) >= 8, counts
        assert rate >= 0.99, [x for x in loaded if x[2] != 200][:10]
        assert p_lo <= 3 * p_un, (p_un, p_lo)
        if not asan_build():
            assert max(peak[0], hwm) < rss0 + BUDGET + MARGIN, (rss0, peak[0], hwm)

        # Nothing lost or corrupted; the index equals storage.
        got = check(srv.request("GET", "/api/v1/subjects?limit=100", key), "GET",
                    "/api/v1/subjects", 200)
        assert {s["id"]: s["name"] for s in got["results"]} == \
            {sid: p for sid, (p, _) in stored.items()}
        templates = sum(len(f) for _, f in stored.values())
        for sid, (p, faces) in stored.items():
            got = check(srv.request("GET", f"/api/v1/subjects/{sid}/faces", key), "GET",
                        "/api/v1/subjects/1/faces", 200)
            assert sorted(f["id"] for f in got["results"]) == sorted(faces), (p, got)
            for n in ENROLLED:
                # k given: the k-NN vote, whose match is the nearest
                # template itself (open set compares fused templates)
                r = check(srv.request("POST", "/api/v1/identify", key,
                                      files={"image": ("q.jpg", photo(p, n), "image/jpeg")},
                                      data={"k": "3"}),
                          "POST", "/api/v1/identify", 200)
                best = max(r["faces"], key=lambda f: (f["box"]["right"] - f["box"]["left"])
                           * (f["box"]["bottom"] - f["box"]["top"]))
                assert best["templates"] == templates, r
                assert best["match"]["id"] == sid and best["match"]["distance"] < 1e-3, (p, n, r)
    finally:
        assert srv.stop() == 0
