"""Faults and misuse of faceverifyd: kill -9 during enrollments,
corrupt models, the database going away mid-request, two server processes
enrolling, deleting and searching at once, delete semantics, and a matrix
of one collection's key against another's data.  Real faceverifyd
processes on SQLite, and on PostgreSQL when FACEVERIFY_PG_URL names one
(the PostgreSQL cluster is shared: its outage is simulated with a TCP
proxy in front of it, never by stopping it)."""
import os
import select
import signal
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
import requests

from conftest import DATA, need
from fvserver import two_collections, PG_URL, Server, check, create_collection, daemon_cmd, new_db_url
from test_security import blobs, sql, windows

BACKENDS = ["sqlite", "postgres"]


def lfw_people(n, skip=0):
    """n LFW image paths of n different people (first image of each)."""
    root = need(DATA / "lfw")
    people = sorted(p for p in root.iterdir() if p.is_dir())[skip:skip + n]
    return [next(iter(sorted(p.glob("*.jpg")))) for p in people]


def img(path: Path):
    return {"image": (path.name, path.read_bytes())}


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    return two_collections(request.param, tmp_path)


def new_subject(srv, key, name):
    r = srv.request("POST", "/api/v1/subjects", key, json={"name": name})
    return check(r, "POST", "/api/v1/subjects", 201)["id"]


def enroll(srv, key, sid, path):
    # force: these tests are about crashes and storage, not the quality gate
    # (a few LFW photos fall under its default minimum, e.g. a pitched face)
    return srv.request("POST", f"/api/v1/subjects/{sid}/faces", key, files=img(path),
                       data={"face": "largest", "force": "true"})


def index_equals_storage(db, srv, key):
    """Every stored template of the collection is found by the server's
    index as its own subject at distance ~0, and the index holds exactly as
    many templates as the table."""
    coll = int(sql(db, "SELECT id FROM collections WHERE name = 'alpha'")[0][0])
    rows = sql(db, f"SELECT id, subject_id FROM faces WHERE collection_id = {coll} ORDER BY id")
    stored = blobs(db)
    vecs = [(int(sid), list(struct.unpack("<128f", stored[int(fid)]))) for fid, sid in rows]
    for i in range(0, len(vecs), 32):
        chunk = vecs[i:i + 32]
        r = srv.request("POST", "/api/v1/identify/embeddings", key,
                        json={"embeddings": [v for _, v in chunk], "top_k": 1, "k": 1})
        res = check(r, "POST", "/api/v1/identify/embeddings", 200)["results"]
        for (sid, _), one in zip(chunk, res):
            assert one["templates"] == len(vecs)
            top = one["candidates"][0]
            assert top["id"] == sid and top["distance"] < 1e-4, (sid, top)
    return len(vecs)


# ------------------------------------------------------------ kill -9

def test_kill9_during_enrollments(db):
    """Six clients enroll at once; the server is killed with SIGKILL in the
    middle.  Afterwards: every acknowledged face is stored, no face is half
    written (wrong size, no subject, twice), and after a restart the index
    equals storage and enrollment works."""
    paths = lfw_people(40)
    srv = Server(db.db_url)
    sids = [new_subject(srv, db.a, f"p{i}") for i in range(len(paths))]
    acked, lock, first = {}, threading.Lock(), threading.Event()

    def worker(w):
        for i in range(w, len(paths), 6):
            try:
                r = enroll(srv, db.a, sids[i], paths[i])
            except requests.RequestException:
                return
            if r.status_code == 201:
                with lock:
                    acked[sids[i]] = r.json()["id"]
                first.set()

    with ThreadPoolExecutor(6) as ex:
        futs = [ex.submit(worker, w) for w in range(6)]
        assert first.wait(120)
        time.sleep(1.0)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        for f in futs:
            f.result()
    assert srv.proc.returncode == -signal.SIGKILL
    assert 0 < len(acked) < len(paths), len(acked)  # killed mid-run

    rows = sql(db, "SELECT f.id, f.subject_id, s.id FROM faces f LEFT JOIN subjects s"
                   " ON s.id = f.subject_id")
    faces = {int(sid): int(fid) for fid, sid, _ in rows}
    assert all(s is not None and str(s) != "" for _, _, s in rows)  # no orphan
    assert len(faces) == len(rows)  # never two templates for one enrollment
    for sid, fid in acked.items():  # no acknowledged write lost
        assert faces.get(sid) == fid
    assert all(len(b) == 512 for b in blobs(db).values())

    srv2 = Server(db.db_url)
    try:
        assert srv2.request("GET", "/api/v1/health").status_code == 200
        assert index_equals_storage(db, srv2, db.a) == len(rows)
        missing = next(i for i, s in enumerate(sids) if s not in faces)
        assert enroll(srv2, db.a, sids[missing], paths[missing]).status_code == 201
        assert index_equals_storage(db, srv2, db.a) == len(rows) + 1
    finally:
        assert srv2.stop() == 0


# ------------------------------------------------------------ models

@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_model_503_no_crash(tmp_path, damage):
    """A corrupt model file: the server starts, says 503 model_unavailable
    on health and on image requests, keeps serving the rest, and stays up
    (no crash loop)."""
    url = new_db_url("sqlite", tmp_path)
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "alpha")
    models = tmp_path / "models"
    models.mkdir()
    src = Path(os.environ.get("FACEVERIFY_MODELS", Path(__file__).parents[2] / "models"))
    for f in src.glob("*.dat"):
        target = models / f.name
        if "recognition" in f.name:
            data = f.read_bytes()
            target.write_bytes({"truncated": data[:len(data) // 3],
                                "garbage": os.urandom(200_000), "empty": b""}[damage])
        else:
            target.symlink_to(f.resolve())
    srv = Server(url, env={"FACEVERIFY_MODELS": str(models)})
    try:
        for _ in range(3):
            r = srv.request("GET", "/api/v1/health")
            body = check(r, "GET", "/api/v1/health", 503)
            assert body["error"]["code"] == "model_unavailable" and not body["models_loaded"]
            r = srv.request("POST", "/api/v1/detect", key,
                            files=img(need(DATA / "samples" / "openface" / "adams.jpg")))
            assert check(r, "POST", "/api/v1/detect", 503)["error"]["code"] == \
                "model_unavailable"
        assert srv.request("GET", "/api/v1/subjects", key).status_code == 200
        assert srv.proc.poll() is None
        assert srv.output().count("models not loaded") == 1
    finally:
        assert srv.stop() == 0


# ------------------------------------------------------------ database outage

class TcpProxy:
    """A TCP relay from a local port to target; cut() closes every relayed
    connection and refuses new ones (the database is gone), restore()
    listens again on the same port."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.port = None
        self.conns = []
        self.lock = threading.Lock()
        self.listener = None
        self.restore()

    def restore(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port or 0))
        ls.listen(64)
        self.port = ls.getsockname()[1]
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls):
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, up]
            threading.Thread(target=self._pump, args=(c, up), daemon=True).start()

    def _pump(self, a, b):
        try:
            while True:
                r, _, _ = select.select([a, b], [], [], 1.0)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        try:  # wakes the accept() blocked in another thread (Linux)
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns = []

    def close(self):
        self.cut()


def test_database_outage_503_and_recovery(tmp_path):
    """PostgreSQL goes away (mid-request too): answers are 503 unavailable
    with Retry-After, quickly, never a 500 or a hang; when it comes back the
    same server process serves again without a restart."""
    url = new_db_url("postgres", tmp_path)
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "alpha")
    u = urlsplit(url)
    proxy = TcpProxy(u.hostname, u.port or 5432)
    via = urlunsplit(u._replace(netloc=f"{u.username}:{u.password}@127.0.0.1:{proxy.port}"))
    srv = Server(via)
    try:
        probe = img(need(DATA / "samples" / "openface" / "clapton-2.jpg"))
        sid = new_subject(srv, key, "clapton")
        assert srv.request("POST", f"/api/v1/subjects/{sid}/faces", key,
                           files=probe).status_code == 201
        assert srv.request("POST", "/api/v1/identify", key, files=probe).status_code == 200

        # Mid-request: the cut lands while the probe is being embedded.
        box = {}
        t = threading.Thread(target=lambda: box.update(
            r=srv.request("POST", "/api/v1/identify", key, files=probe, timeout=60)))
        t.start()
        time.sleep(0.15)
        proxy.cut()
        t.join(90)
        assert box["r"].status_code in (200, 503), box["r"].text
        if box["r"].status_code == 503:
            assert box["r"].json()["error"]["code"] == "unavailable"

        for method, path, kw in [("GET", "/api/v1/subjects", {}),
                                 ("POST", "/api/v1/identify", {"files": probe}),
                                 ("POST", "/api/v1/subjects", {"json": {"name": "x"}}),
                                 ("DELETE", f"/api/v1/subjects/{sid}", {})]:
            t0 = time.monotonic()
            r = srv.request(method, path, key, timeout=60, **kw)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.json()["error"]["code"] == "unavailable" and r.headers["Retry-After"]
            assert time.monotonic() - t0 < 30
        r = srv.request("GET", "/api/v1/health")
        assert r.status_code == 503 and r.json()["database_ok"] is False
        # Issue 16 point 15: neither the keyless health check nor any other
        # answer names the database's host or port; the server log does.
        leaks = (str(proxy.port), "127.0.0.1", "port", "connect")
        unknown = key[:-4] + ("AAAA" if key[-4:] != "AAAA" else "BBBB")  # looked up
        for path, k in (("/api/v1/health", None), ("/api/v1/subjects", key),
                        ("/api/v1/subjects", unknown)):
            r = srv.request("GET", path, k, timeout=60)
            assert r.status_code == 503, r.text
            msg = r.json()["error"]["message"]
            assert "unavailable" in msg and not any(w in msg for w in leaks), msg
        assert str(proxy.port) in srv.output()

        proxy.restore()
        deadline = time.time() + 30
        while time.time() < deadline:
            r = srv.request("GET", "/api/v1/subjects", key)
            if r.status_code == 200:
                break
            time.sleep(0.5)
        assert r.status_code == 200, r.text
        assert [s["id"] for s in r.json()["results"]] == [sid]  # the delete did not happen
        r = srv.request("POST", "/api/v1/identify", key, files=probe)
        assert check(r, "POST", "/api/v1/identify", 200)["faces"][0]["match"]["id"] == sid
        assert srv.request("GET", "/api/v1/health").status_code == 200
        assert srv.proc.poll() is None
    finally:
        proxy.close()
        assert srv.stop() == 0


# ------------------------------------------------------------ two processes

def test_two_processes_enroll_delete_identify(db):
    """Clients enroll, search and delete through two faceverifyd processes
    on one database at once: a fresh enrollment is found by the other
    process at once, a deleted subject is never returned again by either,
    no write is lost and no template duplicated."""
    s1, s2 = Server(db.db_url), Server(db.db_url)
    servers = [s1, s2]
    paths = lfw_people(12, skip=100)
    try:
        def worker(w):
            kept = []
            for j, path in enumerate(paths[w::4]):
                here, there = servers[(w + j) % 2], servers[(w + j + 1) % 2]
                sid = new_subject(here, db.a, f"w{w}-{j}")
                r = enroll(there, db.a, sid, path)
                assert r.status_code == 201, r.text
                for srv in servers:  # visible in both processes at once
                    r = srv.request("POST", "/api/v1/identify", db.a, files=img(path))
                    faces = check(r, "POST", "/api/v1/identify", 200)["faces"]
                    assert any(f["candidates"] and f["candidates"][0]["id"] == sid and
                               f["candidates"][0]["distance"] < 1e-4 for f in faces), faces
                if j % 3 == 2:
                    kept.append(sid)
                    continue
                r = here.request("DELETE", f"/api/v1/subjects/{sid}", db.a)
                assert r.status_code == 200
                for srv in servers:  # gone from both, at once
                    r = srv.request("POST", "/api/v1/identify", db.a, files=img(path))
                    faces = check(r, "POST", "/api/v1/identify", 200)["faces"]
                    assert all(sid not in {c["id"] for c in f["candidates"]} for f in faces)
            return kept

        with ThreadPoolExecutor(4) as ex:
            kept = [s for ks in ex.map(worker, range(4)) for s in ks]
        rows = sql(db, "SELECT subject_id, COUNT(*) FROM faces GROUP BY subject_id")
        assert {int(s): int(n) for s, n in rows} == {s: 1 for s in kept}
        subjects = {int(s) for (s,) in sql(db, "SELECT id FROM subjects")}
        assert subjects == set(kept)
        for srv in servers:
            assert index_equals_storage(db, srv, db.a) == len(kept)
    finally:
        assert s1.stop() == 0 and s2.stop() == 0


def test_delete_subject_erases_every_template(db):
    """Deleting a subject removes all of its templates with it (one
    transaction in store.c); on SQLite the bytes are gone from the file."""
    srv = Server(db.db_url)
    try:
        sid = new_subject(srv, db.a, "twice")
        for rel in ("clapton-1.jpg", "clapton-2.jpg"):
            assert enroll(srv, db.a, sid, need(DATA / "samples" / "openface" / rel)) \
                .status_code == 201
        before = blobs(db)
        assert len(before) == 2
        assert srv.request("DELETE", f"/api/v1/subjects/{sid}", db.a).status_code == 200
        assert sql(db, f"SELECT COUNT(*) FROM faces WHERE subject_id = {sid}")[0][0] in (0, "0")
        assert srv.request("GET", f"/api/v1/subjects/{sid}/faces", db.a).status_code == 404
        r = srv.request("POST", "/api/v1/identify", db.a,
                        files=img(need(DATA / "samples" / "openface" / "clapton-2.jpg")))
        assert r.json()["faces"][0]["candidates"] == []
    finally:
        assert srv.stop() == 0
    if db.backend == "sqlite":
        path = Path(db.db_url[len("sqlite://"):])
        raw = b"".join(f.read_bytes() for f in path.parent.glob(path.name + "*"))
        for b in before.values():
            assert not any(w in raw for w in windows(b))


def test_deleted_template_in_no_database_file_while_running(sqlite_db_faults):
    """Issue 16 point 4: right after DELETE of a face, and of a subject,
    returns, with the server still running, the template's 512 bytes are
    in none of the database's files (main, -wal, -shm): secure_delete
    zeroes the freed cells and a TRUNCATE checkpoint after each delete
    empties the WAL that still held the enrolled page."""
    db = sqlite_db_faults
    path = Path(db.db_url[len("sqlite://"):])
    rng = np.random.default_rng(16)

    def files():
        return {f.name: f.read_bytes() for f in path.parent.glob(path.name + "*")}

    srv = Server(db.db_url)
    try:
        stored = {}
        sids = []
        for name in ("face-delete", "subject-delete"):
            sid = new_subject(srv, db.a, name)
            sids.append(sid)
            v = rng.standard_normal(128).astype("<f4")
            r = srv.request("POST", f"/api/v1/subjects/{sid}/faces", db.a,
                            json={"embedding": [float(x) for x in v]})
            fid = check(r, "POST", "/api/v1/subjects/1/faces", 201)["id"]
            stored[fid] = blobs(db)[fid]
            assert stored[fid] == v.tobytes()
        # Enrolled: the bytes are on disk (WAL or main file).
        assert all(any(b in raw for raw in files().values()) for b in stored.values())
        (fid0, b0), (fid1, b1) = stored.items()
        r = srv.request("DELETE", f"/api/v1/subjects/{sids[0]}/faces/{fid0}", db.a)
        assert r.status_code == 200
        for name, raw in files().items():
            assert not any(w in raw for w in windows(b0)), f"face template left in {name}"
        r = srv.request("DELETE", f"/api/v1/subjects/{sids[1]}", db.a)
        assert r.status_code == 200
        for name, raw in files().items():
            assert not any(w in raw for w in windows(b1)), f"subject template left in {name}"
        assert srv.proc.poll() is None
    finally:
        assert srv.stop() == 0


@pytest.fixture
def sqlite_db_faults(tmp_path):
    return two_collections("sqlite", tmp_path)


# ------------------------------------------------------------ isolation

def test_isolation_matrix(db):
    """Collection beta's key against alpha's data, every route, ids guessed
    over the whole range: never a read, a match, an enrollment, a verify or
    a delete; alpha's data is untouched afterwards."""
    srv = Server(db.db_url)
    try:
        clapton = need(DATA / "samples" / "openface" / "clapton-1.jpg")
        sid = new_subject(srv, db.a, "clapton")
        fid = enroll(srv, db.a, sid, clapton).json()["id"]
        own = new_subject(srv, db.b, "mine")
        b = db.b
        for guess in range(1, max(sid, fid, own) + 4):
            if guess == own:
                continue
            for method, path, kw in [
                    ("GET", f"/api/v1/subjects/{guess}", {}),
                    ("GET", f"/api/v1/subjects/{guess}/faces", {}),
                    ("POST", f"/api/v1/subjects/{guess}/faces", {"files": img(clapton)}),
                    ("POST", f"/api/v1/subjects/{guess}/verify", {"files": img(clapton)}),
                    ("DELETE", f"/api/v1/subjects/{guess}/faces/{fid}", {}),
                    ("DELETE", f"/api/v1/subjects/{guess}", {})]:
                r = srv.request(method, path, b, **kw)
                assert r.status_code == 404, (method, path, r.status_code, r.text)
                assert r.json()["error"]["code"] == "not_found"
        # Own subject, alpha's face id: not found either.
        r = srv.request("DELETE", f"/api/v1/subjects/{own}/faces/{fid}", b)
        assert r.status_code == 404
        r = srv.request("GET", "/api/v1/subjects?limit=1000", b)
        assert [s["id"] for s in r.json()["results"]] == [own]
        r = srv.request("POST", "/api/v1/identify", b, files=img(clapton))
        assert r.json()["faces"][0]["candidates"] == [] and r.json()["faces"][0]["match"] is None
        stored = list(struct.unpack("<128f", blobs(db)[fid]))
        r = srv.request("POST", "/api/v1/identify/embeddings", b,
                        json={"embedding": stored, "threshold": 2.0})
        assert r.json()["results"][0]["candidates"] == []
        audit_b = srv.request("GET", "/api/v1/audit?limit=1000", b).json()["results"]
        assert {e["collection"] for e in audit_b} == {"beta"}
        # Alpha still has everything.
        r = srv.request("GET", f"/api/v1/subjects/{sid}/faces", db.a)
        assert [f["id"] for f in r.json()["results"]] == [fid]
        r = srv.request("POST", "/api/v1/identify", db.a,
                        files=img(need(DATA / "samples" / "openface" / "clapton-2.jpg")))
        assert r.json()["faces"][0]["match"]["id"] == sid
    finally:
        assert srv.stop() == 0
