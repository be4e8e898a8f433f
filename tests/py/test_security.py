"""Security and load behaviour of faceverifyd: security headers, per-key
rate limits, load shedding, the audit log, encryption at rest of
templates, delete semantics and faults.  Each test starts real faceverifyd
processes (fvserver.Server) on SQLite, and on PostgreSQL when
FACEVERIFY_PG_URL names one."""
import base64
import json
import re
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from conftest import DATA, need
from fvserver import two_collections, Server, check, create_collection, daemon_cmd, new_db_url

BACKENDS = ["sqlite", "postgres"]


def sample(rel: str) -> Path:
    return need(DATA / "samples" / rel)


def image(rel="openface/clapton-2.jpg"):
    p = sample(rel)
    return {"image": (p.name, p.read_bytes())}


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    return two_collections(request.param, tmp_path)


@pytest.fixture
def sqlite_db(tmp_path):
    url = new_db_url("sqlite", tmp_path)
    daemon_cmd("migrate", db_url=url)

    class Db:
        backend = "sqlite"
        db_url = url
        a = create_collection(url, "alpha")
        b = create_collection(url, "beta")
        tmp = tmp_path
    return Db


# ------------------------------------------------------------ headers

API_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def test_security_headers_everywhere(sqlite_db):
    """Every answer (success, client error, too large, static page) carries
    the security headers; API answers are never cached and load nothing."""
    srv = Server(sqlite_db.db_url)
    try:
        key = sqlite_db.a
        answers = {
            "health": srv.request("GET", "/api/v1/health"),
            "list": srv.request("GET", "/api/v1/subjects", key),
            "create": srv.request("POST", "/api/v1/subjects", key, json={"name": "h"}),
            "401": srv.request("GET", "/api/v1/subjects"),
            "404": srv.request("GET", "/api/v1/nothing-here", key),
            "405": srv.request("PUT", "/api/v1/subjects", key),
            "400": srv.request("POST", "/api/v1/subjects", key, data=b"{", 
                               headers={"Content-Type": "application/json"}),
            "413": srv.request("POST", "/api/v1/detect", key, data=b"x" * 2_000_000),
            "openapi": srv.request("GET", "/api/openapi.json"),
            "docs": srv.request("GET", "/docs"),
        }
        assert answers["401"].status_code == 401 and answers["413"].status_code == 413
        assert answers["404"].status_code == 404 and answers["405"].status_code == 405
        ids = set()
        for name, r in answers.items():
            for h, v in API_HEADERS.items():
                assert r.headers.get(h) == v, (name, h, r.headers)
            csp = r.headers.get("Content-Security-Policy", "")
            assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, (name, csp)
            rid = r.headers.get("X-Request-Id", "")
            assert len(rid) == 32 and int(rid, 16) >= 0, (name, rid)
            ids.add(rid)
            if name not in ("docs", "openapi"):
                assert r.headers["Content-Type"] == "application/json", name
                assert r.headers.get("Cache-Control") == "no-store", name
                assert "script-src" not in csp, name
        assert len(ids) == len(answers)  # one fresh id per request
        assert answers["docs"].headers["Content-Type"].startswith("text/html")
        assert "connect-src 'self'" in answers["docs"].headers["Content-Security-Policy"]
    finally:
        assert srv.stop() == 0


# ------------------------------------------------------------ rate limits

def test_rate_limit_per_key(sqlite_db):
    """A token bucket per key: the burst passes, the next request is 429
    rate_limited with Retry-After; another key is unaffected; after the
    wait the key works again."""
    srv = Server(sqlite_db.db_url, env={"FACEVERIFY_RATE_LIMIT": "1/s",
                                        "FACEVERIFY_RATE_BURST": "3"})
    try:
        a, b = sqlite_db.a, sqlite_db.b
        codes = [srv.request("GET", "/api/v1/subjects", a).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = srv.request("GET", "/api/v1/subjects", a)
        body = check(r, "GET", "/api/v1/subjects", 429)
        assert body["error"]["code"] == "rate_limited"
        wait = int(r.headers["Retry-After"])
        assert 1 <= wait <= 2
        assert srv.request("GET", "/api/v1/subjects", b).status_code == 200  # own bucket
        # Health and bad keys do not spend (or own) a bucket.
        assert srv.request("GET", "/api/v1/health").status_code == 200
        assert srv.request("GET", "/api/v1/subjects", "fvk_" + "A" * 43).status_code == 401
        time.sleep(wait + 0.1)
        assert srv.request("GET", "/api/v1/subjects", a).status_code == 200
    finally:
        assert srv.stop() == 0


def test_rate_limit_option_validation(sqlite_db):
    for bad in ("fast", "-1", "5/min", "1e9"):
        p = daemon_cmd("serve", "--rate-limit", bad, "--listen", "127.0.0.1:1",
                       db_url=sqlite_db.db_url, check=False)
        assert p.returncode == 2 and "bad option value" in p.stderr, (bad, p.stderr)


# ------------------------------------------------------------ load shedding

def test_load_shedding_503_retry_after(sqlite_db):
    """Past max_inflight the server answers 503 overloaded + Retry-After at
    once instead of queueing: many slow requests at a server bounded to 2."""
    srv = Server(sqlite_db.db_url, env={"FACEVERIFY_MAX_INFLIGHT": "2"})
    try:
        body = image()
        n = 10
        barrier = threading.Barrier(n)

        def one(_):
            barrier.wait()
            t0 = time.monotonic()
            r = srv.request("POST", "/api/v1/detect", sqlite_db.a, files=body)
            return r, time.monotonic() - t0

        with ThreadPoolExecutor(n) as ex:
            res = list(ex.map(one, range(n)))
        ok = [(r, t) for r, t in res if r.status_code == 200]
        shed = [(r, t) for r, t in res if r.status_code == 503]
        assert len(ok) + len(shed) == n, [r.status_code for r, _ in res]
        assert len(ok) >= 2 and len(shed) >= 1, [r.status_code for r, _ in res]
        for r, _ in shed:
            assert check(r, "POST", "/api/v1/detect")["error"]["code"] == "overloaded"
            assert r.headers["Retry-After"] == "1"
        # Shed answers come back before any admitted one finished its work.
        assert max(t for _, t in shed) < min(t for _, t in ok), \
            ([t for _, t in shed], [t for _, t in ok])
        # Below capacity again: served normally.
        r = srv.request("POST", "/api/v1/detect", sqlite_db.a, files=body)
        assert r.status_code == 200
    finally:
        assert srv.stop() == 0


def test_idle_connections_time_out(sqlite_db):
    """A client that opens connections and sends nothing (or trickles a
    header) is closed after the connection timeout and does not keep
    others out, even at the connection limit."""
    import socket

    srv = Server(sqlite_db.db_url, env={"FACEVERIFY_CONN_TIMEOUT": "2",
                                        "FACEVERIFY_MAX_CONNECTIONS": "8"})
    try:
        socks = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")  # never finished
            socks.append(s)
        time.sleep(3.5)
        for s in socks:  # closed by the server
            s.settimeout(2)
            assert s.recv(100) == b""
            s.close()
        assert srv.request("GET", "/api/v1/health", timeout=10).status_code == 200
    finally:
        assert srv.stop() == 0


# ------------------------------------------------------------ audit log

def audit(srv, key, **params):
    r = srv.request("GET", "/api/v1/audit", key, params=params)
    return check(r, "GET", "/api/v1/audit", 200)["results"]


def test_audit_log_records_actions_without_biometrics(db):
    """Enroll, search, verify and delete each leave one entry naming the
    collection, key prefix, ids, request id and outcome; no entry, and no
    line the server logs, holds an image, a template or a distance."""
    srv = Server(db.db_url)
    try:
        a = db.a
        r = srv.request("POST", "/api/v1/subjects", a, json={"name": "clapton",
                                                           "metadata": {"note": "secret-meta"}})
        sid = check(r, "POST", "/api/v1/subjects", 201)["id"]
        create_rid = r.headers["X-Request-Id"]
        img = image("openface/clapton-1.jpg")
        r = srv.request("POST", f"/api/v1/subjects/{sid}/faces", a, files=img)
        fid = check(r, "POST", "/api/v1/subjects/1/faces", 201)["id"]
        r = srv.request("POST", "/api/v1/identify", a, files=image())
        ident = check(r, "POST", "/api/v1/identify", 200)
        assert ident["faces"][0]["match"]["id"] == sid
        ident_rid = r.headers["X-Request-Id"]
        q = [0.0123456 + i * 1e-4 for i in range(128)]
        r = srv.request("POST", "/api/v1/identify/embeddings", a,
                        json={"embedding": q, "threshold": 2.0})
        assert r.status_code == 200
        r = srv.request("POST", f"/api/v1/subjects/{sid}/verify", a, files=image())
        assert check(r, "POST", "/api/v1/subjects/1/verify", 200)["verified"] is True
        r = srv.request("DELETE", f"/api/v1/subjects/{sid}/faces/999999", a)
        assert r.status_code == 404
        r = srv.request("DELETE", f"/api/v1/subjects/{sid}/faces/{fid}", a)
        assert r.status_code == 200
        r = srv.request("DELETE", f"/api/v1/subjects/{sid}", a)
        assert r.status_code == 200
        # Another collection's key and a bad key leave no trace in alpha's log.
        srv.request("GET", "/api/v1/subjects", db.b)
        srv.request("GET", "/api/v1/subjects", "fvk_" + "B" * 43)

        entries = audit(srv, a)
        got = [(e["action"], e["status"], e["outcome"], e["subject_id"], e["face_id"])
               for e in reversed(entries)]
        assert got == [
            ("subject.create", 201, "ok", sid, None),
            ("face.enroll", 201, "ok", sid, fid),
            ("identify", 200, "ok", None, None),
            ("identify.embeddings", 200, "ok", None, None),
            ("subject.verify", 200, "ok", sid, None),
            ("face.delete", 404, "not_found", sid, 999999),
            ("face.delete", 200, "ok", sid, fid),
            ("subject.delete", 200, "ok", sid, None),
        ], got
        by_action = {e["action"]: e for e in entries}
        for e in entries:
            assert e["collection"] == "alpha" and e["key_prefix"] == a[:12]
            # numbers about the request, never a template or an image: an
            # enrolment also records its face's quality score, whether it
            # was forced past the gate and which subject it duplicates
            assert set(e["detail"]) <= {"faces", "queries", "matches", "count", "verified",
                                        "quality", "forced", "duplicate_of"}
        assert by_action["subject.create"]["request_id"] == create_rid
        assert by_action["identify"]["request_id"] == ident_rid
        assert by_action["identify"]["detail"] == {"faces": 1, "matches": [sid]}
        assert by_action["identify.embeddings"]["detail"]["queries"] == 1
        assert by_action["subject.verify"]["detail"] == {"verified": True}
        # Only alpha's entries for alpha's key; beta sees its own only.
        assert {e["collection"] for e in audit(srv, db.b)} == {"beta"}
        # Paging back.
        older = audit(srv, a, before=entries[2]["id"], limit=2)
        assert [e["id"] for e in older] == [entries[3]["id"], entries[4]["id"]]

        # The command-line reader: JSON lines, newest first, one collection.
        p = daemon_cmd("audit", "alpha", "--limit", "3", db_url=db.db_url)
        lines = [json.loads(x) for x in p.stdout.splitlines()]
        assert len(lines) == 3 and all(x["collection"] == "alpha" for x in lines)
        assert lines[0]["id"] > lines[1]["id"] > lines[2]["id"]
        p = daemon_cmd("audit", db_url=db.db_url)
        assert {"alpha", "beta"} <= {json.loads(x)["collection"] for x in p.stdout.splitlines()}

        # Nothing biometric anywhere in the log or the server's output.
        text = p.stdout + json.dumps(entries)
        for word in ("distance", "similarity", "\"embedding", "secret-meta", "clapton", "box"):
            assert word not in text, word
        for v in q[:5] + [ident["faces"][0]["match"]["distance"]]:
            assert f"{v:.5f}"[:7] not in text
        assert not re.search(r"\d\.\d{5,}", text), text[:400]
    finally:
        assert srv.stop() == 0
    out = srv.output()
    raw = img["image"][1]
    assert base64.b64encode(raw[:300]).decode()[:200] not in out
    assert not re.search(r"\d\.\d{5,}", out), out[-2000:]
    assert len(out) < 2000, out[-2000:]  # no per-request dumps


# ------------------------------------------------------------ encryption at rest

def sql(db, query):
    """Rows of a query run straight on the database (as an operator or an
    attacker with a copy of it would)."""
    if db.backend == "sqlite":
        con = sqlite3.connect(db.db_url[len("sqlite://"):])
        try:
            rows = con.execute(query).fetchall()
            con.commit()
            return rows
        finally:
            con.close()
    p = subprocess.run(["psql", db.db_url, "-qAt", "-F", "\t", "-c", query], check=True,
                       capture_output=True, text=True, timeout=60)
    return [tuple(line.split("\t")) for line in p.stdout.splitlines() if line]


def blobs(db):
    """{face id: stored embedding bytes}."""
    if db.backend == "sqlite":
        return {i: bytes(b) for i, b in sql(db, "SELECT id, embedding FROM faces")}
    return {int(i): bytes.fromhex(h) for i, h in
            sql(db, "SELECT id, encode(embedding, 'hex') FROM faces")}


def windows(b, n=16):
    return {b[i:i + n] for i in range(0, len(b) - n + 1, 4)}


def enroll(srv, key, name, rel="openface/clapton-1.jpg"):
    r = srv.request("POST", "/api/v1/subjects", key, json={"name": name})
    sid = check(r, "POST", "/api/v1/subjects", 201)["id"]
    r = srv.request("POST", f"/api/v1/subjects/{sid}/faces", key, files=image(rel))
    return sid, check(r, "POST", "/api/v1/subjects/1/faces", 201)["id"]


def test_templates_encrypted_at_rest(db):
    """With FACEVERIFY_TEMPLATE_KEY, templates are stored sealed and still
    match; plaintext rows stay readable until encrypttemplates seals them;
    without the key, or with another, the collection is refused (503
    template_key_unavailable), never matched against garbage; a sealed
    template moved to another subject does not open."""
    key = daemon_cmd("genkey", db_url=db.db_url).stdout.strip()
    assert len(base64.b64decode(key)) == 32
    keyed = {"FACEVERIFY_TEMPLATE_KEY": key}
    gamma = create_collection(db.db_url, "gamma")  # never holds a template
    srv = Server(db.db_url)  # no key: plaintext, as before this feature
    try:
        sid_plain, fid_plain = enroll(srv, db.a, "plain")
        sid_b, _ = enroll(srv, db.b, "plain-b", "openface/adams.jpg")
    finally:
        assert srv.stop() == 0
    plain = blobs(db)[fid_plain]
    assert len(plain) == 512
    secret = windows(plain)

    srv = Server(db.db_url, env=keyed)
    try:
        sid_sealed, fid_sealed = enroll(srv, db.a, "sealed")
        sealed = blobs(db)[fid_sealed]
        assert len(sealed) == 556 and sealed[:4] == b"FVE1"
        assert not windows(sealed) & secret  # same face, no plaintext bytes
        r = srv.request("POST", "/api/v1/identify", db.a, files=image(),
                        data={"top_k": "5"})
        cands = {c["id"] for c in check(r, "POST", "/api/v1/identify", 200)
                 ["faces"][0]["candidates"]}
        assert cands == {sid_plain, sid_sealed}  # both kinds of row read
    finally:
        assert srv.stop() == 0

    # A process without the key holds beta's (plaintext) gallery in memory;
    # once encrypttemplates seals it, that process stops serving it.
    keyless = Server(db.db_url)
    try:
        probe_b = image("openface/adams.jpg")
        r = keyless.request("POST", "/api/v1/identify", db.b, files=probe_b)
        assert check(r, "POST", "/api/v1/identify", 200)["faces"][0]["match"]["id"] == sid_b
        p = daemon_cmd("encrypttemplates", db_url=db.db_url, env=keyed)
        assert "2 plaintext templates encrypted" in p.stdout, p.stdout
        r = keyless.request("POST", "/api/v1/identify", db.b, files=probe_b)
        assert check(r, "POST", "/api/v1/identify", 503)["error"]["code"] == \
            "template_key_unavailable"
    finally:
        assert keyless.stop() == 0
    p = daemon_cmd("encrypttemplates", db_url=db.db_url, env=keyed)
    assert "0 plaintext templates encrypted" in p.stdout, p.stdout
    stored = blobs(db)
    assert all(len(b) == 556 and b[:4] == b"FVE1" for b in stored.values())
    for b in stored.values():
        assert not windows(b) & secret
    if db.backend == "sqlite":  # the whole file: no stale copy in free pages
        path = Path(db.db_url[len("sqlite://"):])
        raw = b"".join(f.read_bytes() for f in path.parent.glob(path.name + "*"))
        assert not any(w in raw for w in secret)
    p = daemon_cmd("encrypttemplates", db_url=db.db_url, check=False,
                   env={"FACEVERIFY_TEMPLATE_KEY": ""})
    assert p.returncode == 2 and "FACEVERIFY_TEMPLATE_KEY" in p.stderr
    p = daemon_cmd("serve", db_url=db.db_url, check=False,
                   env={"FACEVERIFY_TEMPLATE_KEY": "c2hvcnQ="})
    assert p.returncode == 2 and "32 bytes" in p.stderr

    srv = Server(db.db_url, env=keyed)
    try:
        r = srv.request("POST", "/api/v1/identify", db.a, files=image())
        m = check(r, "POST", "/api/v1/identify", 200)["faces"][0]["match"]
        assert m["id"] in (sid_plain, sid_sealed) and m["distance"] < 0.6
        r = srv.request("POST", f"/api/v1/subjects/{sid_plain}/verify", db.a, files=image())
        assert check(r, "POST", "/api/v1/subjects/1/verify", 200)["verified"] is True
    finally:
        assert srv.stop() == 0

    other = daemon_cmd("genkey", db_url=db.db_url).stdout.strip()
    for env in ({"FACEVERIFY_TEMPLATE_KEY": ""}, {"FACEVERIFY_TEMPLATE_KEY": other}):
        srv = Server(db.db_url, env=env)
        try:
            r = srv.request("POST", "/api/v1/identify", db.a, files=image())
            body = check(r, "POST", "/api/v1/identify", 503)
            assert body["error"]["code"] == "template_key_unavailable", body
            r = srv.request("POST", f"/api/v1/subjects/{sid_plain}/verify", db.a,
                            files=image())
            assert check(r, "POST", "/api/v1/subjects/1/verify", 503)["error"]["code"] \
                == "template_key_unavailable"
            # Other collections (no sealed rows) are served.
            r = srv.request("POST", "/api/v1/identify/embeddings", gamma,
                            json={"embedding": [0.0] * 128})
            assert r.status_code == 200
        finally:
            assert srv.stop() == 0

    # A sealed row moved to another subject does not open, even with the
    # key: it is named, never matched; the collection's other rows are
    # served (issue 16 point 13).
    sql(db, f"UPDATE faces SET subject_id = {sid_sealed} WHERE id = {fid_plain}")
    srv = Server(db.db_url, env=keyed)
    try:
        r = srv.request("POST", "/api/v1/identify", db.a, files=image())
        body = check(r, "POST", "/api/v1/identify", 200)
        (w,) = body["warnings"]
        assert w["code"] == "unreadable_templates" and w["face_ids"] == [fid_plain]
        assert "altered or moved" in w["message"]
        assert body["faces"][0]["candidates"][0]["id"] == sid_sealed
        assert body["faces"][0]["templates"] == 1
    finally:
        assert srv.stop() == 0


def vector(seed):
    """A made-up 128-d embedding."""
    return [((seed * 7919 + i * 104729) % 1000) / 1000.0 - 0.5 for i in range(128)]


def enroll_vector(srv, key, sid, seed):
    """Enrols vector(seed) (no neural network); the raw answer."""
    return srv.request("POST", f"/api/v1/subjects/{sid}/faces", key,
                       json={"embedding": vector(seed)})


def subject_with_vector(srv, key, name, seed):
    """A new subject with vector(seed) enrolled: (subject id, face id)."""
    r = srv.request("POST", "/api/v1/subjects", key, json={"name": name})
    sid = check(r, "POST", "/api/v1/subjects", 201)["id"]
    fid = check(enroll_vector(srv, key, sid, seed), "POST", "/api/v1/subjects/1/faces",
                201)["id"]
    return sid, fid


def test_keyless_server_refuses_plaintext_into_sealed_collection(db):
    """Issue 16 point 12: a server started without FACEVERIFY_TEMPLATE_KEY
    on a collection that holds sealed templates answers 503
    template_key_unavailable to an enrolment instead of storing it in
    plaintext; a collection with no sealed template is written as before."""
    keyed = {"FACEVERIFY_TEMPLATE_KEY": daemon_cmd("genkey", db_url=db.db_url).stdout.strip()}
    srv = Server(db.db_url, env=keyed)
    try:
        sid, _ = subject_with_vector(srv, db.a, "sealed", 1)
    finally:
        assert srv.stop() == 0
    before = blobs(db)
    srv = Server(db.db_url)  # no key
    try:
        r = enroll_vector(srv, db.a, sid, 2)
        body = check(r, "POST", "/api/v1/subjects/1/faces", 503)
        assert body["error"]["code"] == "template_key_unavailable", body
        assert "plaintext" in body["error"]["message"]
        assert blobs(db) == before  # nothing written
        _, fid_b = subject_with_vector(srv, db.b, "plain", 3)
        assert len(blobs(db)[fid_b]) == 512
    finally:
        assert srv.stop() == 0


def test_unreadable_templates_named_and_purged(db):
    """Issue 16 point 13: templates sealed under another key no longer
    block the collection: identify and subject verify serve the readable
    ones and name the others in "warnings"; a subject with none readable
    is 503 template_key_unavailable; `faceverifyd purge-unreadable` lists
    (--dry-run) and deletes them, audited, and the warning goes away in the
    running server."""
    k1 = {"FACEVERIFY_TEMPLATE_KEY": daemon_cmd("genkey", db_url=db.db_url).stdout.strip()}
    k2 = {"FACEVERIFY_TEMPLATE_KEY": daemon_cmd("genkey", db_url=db.db_url).stdout.strip()}
    srv = Server(db.db_url, env=k1)  # the key that is later lost
    try:
        sid_old, fid_old = enroll(srv, db.a, "old")
        r = srv.request("POST", "/api/v1/subjects", db.a, json={"name": "mixed"})
        sid_mixed = check(r, "POST", "/api/v1/subjects", 201)["id"]
        r = srv.request("POST", f"/api/v1/subjects/{sid_mixed}/faces", db.a,
                        files=image("openface/clapton-1.jpg"))
        fid_mixed_old = check(r, "POST", "/api/v1/subjects/1/faces", 201)["id"]
    finally:
        assert srv.stop() == 0
    lost = sorted([fid_old, fid_mixed_old])
    srv = Server(db.db_url, env=k2)  # a new key; the old templates stay
    try:
        r = srv.request("POST", f"/api/v1/subjects/{sid_mixed}/faces", db.a,
                        files=image("openface/clapton-2.jpg"))
        check(r, "POST", "/api/v1/subjects/1/faces", 201)
        sid_new, fid_new = subject_with_vector(srv, db.a, "new", 7)
        probe = vector(7)
        r = srv.request("POST", "/api/v1/identify/embeddings", db.a, json={"embedding": probe})
        body = check(r, "POST", "/api/v1/identify/embeddings", 200)
        assert body["results"][0]["match"]["id"] == sid_new
        (w,) = body["warnings"]
        assert w["code"] == "unreadable_templates" and w["count"] == 2 and w["face_ids"] == lost
        r = srv.request("POST", "/api/v1/identify", db.a, files=image())
        body = check(r, "POST", "/api/v1/identify", 200)
        assert body["faces"][0]["match"]["id"] == sid_mixed
        assert body["warnings"][0]["face_ids"] == lost
        r = srv.request("POST", f"/api/v1/subjects/{sid_mixed}/verify", db.a, files=image())
        body = check(r, "POST", "/api/v1/subjects/1/verify", 200)
        assert body["verified"] is True and body["templates_compared"] == 1
        assert body["warnings"][0]["face_ids"] == [fid_mixed_old]
        r = srv.request("POST", f"/api/v1/subjects/{sid_old}/verify", db.a, files=image())
        assert check(r, "POST", "/api/v1/subjects/1/verify", 503)["error"]["code"] == \
            "template_key_unavailable"

        p = daemon_cmd("purge-unreadable", "alpha", "--dry-run", db_url=db.db_url, env=k2)
        listed = [json.loads(x)["face_id"] for x in p.stdout.splitlines() if x.startswith("{")]
        assert listed == lost and "2 unreadable templates found" in p.stdout, p.stdout
        assert set(lost) <= set(blobs(db))
        p = daemon_cmd("purge-unreadable", "alpha", db_url=db.db_url, env=k2)
        assert "2 unreadable templates deleted" in p.stdout, p.stdout
        assert not set(lost) & set(blobs(db)) and fid_new in blobs(db)
        r = srv.request("POST", "/api/v1/identify/embeddings", db.a, json={"embedding": probe})
        body = check(r, "POST", "/api/v1/identify/embeddings", 200)
        assert "warnings" not in body and body["results"][0]["templates"] == 2
        r = srv.request("GET", "/api/v1/audit?limit=50", db.a)
        purged = [e for e in check(r, "GET", "/api/v1/audit", 200)["results"]
                  if e["action"] == "face.purge_unreadable"]
        assert sorted(e["face_id"] for e in purged) == lost
    finally:
        assert srv.stop() == 0
    p = daemon_cmd("purge-unreadable", db_url=db.db_url, env=k2)
    assert "0 unreadable templates deleted" in p.stdout, p.stdout


def test_new_sqlite_database_files_are_0600(tmp_path):
    """Issue 16 point 11: whichever command creates the SQLite file (not
    only migrate), it is mode 0600, and so are its -wal and -shm files
    while the server runs, whatever the umask."""
    import os
    import stat

    path = tmp_path / "fresh.db"
    url = f"sqlite://{path}"
    p = daemon_cmd("createcollection", "x", db_url=url, check=False)  # before migrate
    assert p.returncode != 0 and path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "alpha")
    srv = Server(url)
    try:
        r = srv.request("POST", "/api/v1/subjects", key, json={"name": "n"})
        check(r, "POST", "/api/v1/subjects", 201)
        files = sorted(tmp_path.glob("fresh.db*"))
        assert {f.name for f in files} >= {"fresh.db", "fresh.db-wal", "fresh.db-shm"}
        for f in files:
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    finally:
        assert srv.stop() == 0


def test_image_fingerprint_is_keyed(sqlite_db):
    """Issue 16 point 11: the stored image_sha256 no longer confirms a known
    photo to whoever holds the database: with a template key it is a
    BLAKE2b-256 keyed with a subkey of that key (crypto_kdf, context
    "fvimgmac"), without one nothing is kept."""
    import hashlib

    photo = sample("openface/clapton-1.jpg").read_bytes()
    tkey = daemon_cmd("genkey", db_url=sqlite_db.db_url).stdout.strip()
    master = base64.b64decode(tkey)
    sub = hashlib.blake2b(b"", key=master, digest_size=32,
                          salt=(1).to_bytes(8, "little") + bytes(8),
                          person=b"fvimgmac" + bytes(8)).digest()
    want = hashlib.blake2b(photo, key=sub, digest_size=32).hexdigest()
    for env, expect in (({}, None), ({"FACEVERIFY_TEMPLATE_KEY": tkey}, want)):
        srv = Server(sqlite_db.db_url, env=env)
        try:
            sid, fid = enroll(srv, sqlite_db.a, f"fp-{bool(env)}")
            r = srv.request("GET", f"/api/v1/subjects/{sid}/faces", sqlite_db.a)
            (face,) = check(r, "GET", "/api/v1/subjects/1/faces", 200)["results"]
            assert face["image_sha256"] == expect
            assert hashlib.sha256(photo).hexdigest() not in json.dumps(face)
        finally:
            assert srv.stop() == 0
    stored = {v for (v,) in sql(sqlite_db, "SELECT image_sha256 FROM faces")}
    assert stored == {None, want}


def test_genkey_out_file_0600_never_overwritten(tmp_path):
    """Issue 16 point 14: genkey --out FILE writes the key into a new file
    of mode 0600 (an environment file line) and refuses an existing file;
    without --out it prints the key and says how to keep it."""
    import stat

    out = tmp_path / "template.key"
    p = daemon_cmd("genkey", "--out", out, db_url="sqlite:///nonexistent")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    line = out.read_text()
    assert line.startswith("FACEVERIFY_TEMPLATE_KEY=") and line.endswith("\n")
    assert len(base64.b64decode(line.split("=", 1)[1].strip())) == 32
    assert line.split("=", 1)[1].strip() not in p.stdout + p.stderr  # never echoed
    p = daemon_cmd("genkey", "--out", out, db_url="sqlite:///nonexistent", check=False)
    assert p.returncode == 1 and "never overwritten" in p.stderr
    assert out.read_text() == line
    p = daemon_cmd("genkey", db_url="sqlite:///nonexistent")
    assert len(base64.b64decode(p.stdout.strip())) == 32 and "--out" in p.stderr


def test_rekeytemplates_reseals_under_new_key(db):
    """Issue 16 point 14: rekeytemplates re-seals every template from
    FACEVERIFY_TEMPLATE_KEY_OLD under FACEVERIFY_TEMPLATE_KEY (plaintext
    rows too); afterwards the new key reads all, the old none, and a re-run
    changes nothing."""
    old = daemon_cmd("genkey", db_url=db.db_url).stdout.strip()
    new = daemon_cmd("genkey", db_url=db.db_url).stdout.strip()
    srv = Server(db.db_url)  # one plaintext template in beta
    try:
        subject_with_vector(srv, db.b, "plain", 5)
    finally:
        assert srv.stop() == 0
    srv = Server(db.db_url, env={"FACEVERIFY_TEMPLATE_KEY": old})
    try:
        sids = [subject_with_vector(srv, db.a, f"s{i}", 10 + i)[0] for i in range(3)]
    finally:
        assert srv.stop() == 0
    before = blobs(db)
    p = daemon_cmd("rekeytemplates", db_url=db.db_url, check=False,
                   env={"FACEVERIFY_TEMPLATE_KEY": new})
    assert p.returncode == 2 and "FACEVERIFY_TEMPLATE_KEY_OLD" in p.stderr
    p = daemon_cmd("rekeytemplates", db_url=db.db_url,
                   env={"FACEVERIFY_TEMPLATE_KEY": new, "FACEVERIFY_TEMPLATE_KEY_OLD": old})
    assert "4 templates re-sealed" in p.stdout, p.stdout
    after = blobs(db)
    assert set(after) == set(before)
    assert all(len(b) == 556 and b[:4] == b"FVE1" and b != before[f] for f, b in after.items())
    p = daemon_cmd("rekeytemplates", db_url=db.db_url,
                   env={"FACEVERIFY_TEMPLATE_KEY": new, "FACEVERIFY_TEMPLATE_KEY_OLD": old})
    assert "0 templates re-sealed" in p.stdout, p.stdout
    assert blobs(db) == after
    for key, status in ((new, 200), (old, 503)):
        srv = Server(db.db_url, env={"FACEVERIFY_TEMPLATE_KEY": key})
        try:
            r = srv.request("POST", "/api/v1/identify/embeddings", db.a,
                            json={"embedding": vector(11), "top_k": 5})
            body = check(r, "POST", "/api/v1/identify/embeddings", status)
            if status == 200:
                assert body["results"][0]["match"]["id"] == sids[1]
                assert body["results"][0]["templates"] == 3 and "warnings" not in body
            else:
                assert body["error"]["code"] == "template_key_unavailable"
        finally:
            assert srv.stop() == 0


# ------------------------------------------------------------ privileges

def test_user_drops_root_after_binding(sqlite_db):
    """serve --user NAME started as root binds, then runs as NAME; a
    non-root start with another user, or a root target, is refused."""
    import os
    import pwd

    if os.geteuid() != 0:
        p = daemon_cmd("serve", "--user", "root", "--listen", "127.0.0.1:0",
                       db_url=sqlite_db.db_url, check=False, timeout=60)
        assert p.returncode == 1 and "needs to start as root" in p.stderr
        pytest.skip("not root: only the refusal can be checked")
    nobody = pwd.getpwnam("nobody")
    os.chmod(sqlite_db.tmp, 0o777)
    for f in sqlite_db.tmp.iterdir():
        os.chmod(f, 0o666)
    srv = Server(sqlite_db.db_url, env={"FACEVERIFY_USER": "nobody"})
    try:
        status = Path(f"/proc/{srv.proc.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert {int(u) for u in uids} == {nobody.pw_uid}, uids
        gids = next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1:]
        assert {int(g) for g in gids} == {nobody.pw_gid}, gids
        assert srv.request("GET", "/api/v1/subjects", sqlite_db.a).status_code == 200
        assert "running as user nobody" in srv.output()
    finally:
        assert srv.stop() == 0
    p = daemon_cmd("serve", "--user", "root", "--listen", "127.0.0.1:0",
                   db_url=sqlite_db.db_url, check=False, timeout=60)
    assert p.returncode == 1 and "is root" in p.stderr, p.stderr
    p = daemon_cmd("serve", "--user", "no-such-user-xyz", "--listen", "127.0.0.1:0",
                   db_url=sqlite_db.db_url, check=False, timeout=60)
    assert p.returncode == 1 and "no such user" in p.stderr
