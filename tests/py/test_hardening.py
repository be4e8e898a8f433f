"""Issue 16's HTTP-layer attacks, replayed on raw sockets against a real
faceverifyd on loopback: slow bodies that held every request slot, keyless
JSON bodies parsed before the key was checked, request smuggling
(ambiguous framing), libmicrohttpd's own error lines, NUL bytes that cut
values short, and repeated form fields that were joined.  Every test is
bounded in time (small timeouts set through the environment)."""
import json
import os
import re
import time

import pytest

from attacks import connect, raw, req, status_of, vm
from conftest import DATA, need
from fvserver import Server, create_collection, daemon_cmd, new_db_url, two_collections

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture
def sqlite_db(tmp_path):
    url = new_db_url("sqlite", tmp_path)
    daemon_cmd("migrate", db_url=url)

    class Db:
        db_url = url
        a = create_collection(url, "alpha")
    return Db


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    return two_collections(request.param, tmp_path)


# ------------------------------------------------------------ 1. slow bodies

def test_trickled_bodies_hold_no_slot_and_are_cut_off(sqlite_db):
    """Issue 16.1: 16 sockets send the headers of a POST /detect and then a
    byte now and then.  The health check and keyed calls still answer 200
    meanwhile (no slot is taken before the body is complete), and the
    request deadline closes the trickling sockets even though each byte
    restarts the idle timeout."""
    srv = Server(sqlite_db.db_url, env={"FACEVERIFY_MAX_INFLIGHT": "4",
                                        "FACEVERIFY_CONN_TIMEOUT": "3",
                                        "FACEVERIFY_REQUEST_TIMEOUT": "4"})
    socks = []
    try:
        for i in range(16):
            s = connect(srv)
            key = sqlite_db.a if i % 2 else None  # keyed and keyless alike
            s.sendall(req("POST", "/api/v1/detect", key, ctype="application/json",
                          length=False, headers=["Content-Length: 1000"]) + b"{")
            socks.append(s)
        t0 = time.time()
        closed = set()
        while time.time() - t0 < 9 and len(closed) < len(socks):
            time.sleep(1)
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    s.sendall(b" ")
                except OSError:
                    closed.add(i)
            h = srv.request("GET", "/api/v1/health", timeout=5)
            assert h.status_code == 200, h.text
            k = srv.request("GET", "/api/v1/subjects", sqlite_db.a, timeout=5)
            assert k.status_code == 200, k.text
            for i, s in enumerate(socks):  # closed by the server: EOF (or a 408 first)
                if i in closed:
                    continue
                s.setblocking(False)
                try:
                    b = s.recv(65536)
                    if not b or b"408" in b[:16] or b"401" in b[:16]:
                        closed.add(i)
                except BlockingIOError:
                    pass
                except OSError:
                    closed.add(i)
                s.setblocking(True)
        elapsed = time.time() - t0
        assert len(closed) == len(socks), f"{len(socks) - len(closed)} trickling sockets still open"
        assert elapsed < 9, elapsed
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_connections_per_ip_capped(sqlite_db):
    """Issue 16.1: one address cannot take every connection: of 8 sockets
    that open a request and stall, at most the cap (4) stay open, the rest
    are closed at once; service returns when they go."""
    srv = Server(sqlite_db.db_url, env={"FACEVERIFY_MAX_CONNECTIONS_PER_IP": "4"})
    socks = []
    try:
        for _ in range(8):
            s = connect(srv)
            try:
                s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                pass
            socks.append(s)
        time.sleep(1.0)
        alive = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1):
                    alive += 1
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        assert 1 <= alive <= 4, alive
        for s in socks:
            s.close()
        socks = []
        time.sleep(0.5)
        assert srv.request("GET", "/api/v1/health", timeout=5).status_code == 200
    finally:
        for s in socks:
            s.close()
        srv.stop()


# ------------------------------------------------------------ 2. keyless JSON

def test_keyless_json_never_parsed_and_bounded_with_key(sqlite_db):
    """Issue 16.2: a 12 MB body {"a":[{},{},...]} without a key is answered
    401 without being stored or parsed (the server's peak RSS barely
    moves); with a key, the JSON's shape is refused before jansson builds
    the tree, and the heap is given back afterwards."""
    body = b'{"a":[' + b",".join([b"{}"] * 4_000_000) + b"]}"
    assert 11_000_000 < len(body) < 13_000_000
    srv = Server(sqlite_db.db_url, max_body=13_000_000)
    try:
        pid = srv.proc.pid
        before = vm(pid)
        a = raw(srv, req("POST", "/api/v1/detect", ctype="application/json", body=body,
                         headers=["Connection: close"]), timeout=30)
        assert status_of(a) == 401, a[:300]
        keyless = vm(pid)
        b = raw(srv, req("POST", "/api/v1/detect", sqlite_db.a, ctype="application/json",
                         body=body, headers=["Connection: close"]), timeout=30)
        assert status_of(b) == 400 and b"validation_error" in b, b[:300]
        time.sleep(0.2)
        keyed = vm(pid)
        print(f"\nRSS MB: start {before}, after keyless {keyless}, after keyed {keyed}")
        assert keyless["VmHWM"] - before["VmHWM"] < 48, (before, keyless)
        assert keyed["VmHWM"] - before["VmHWM"] < 96, (before, keyed)
        assert keyed["VmRSS"] - before["VmRSS"] < 48, (before, keyed)
    finally:
        srv.stop()


def test_keyless_expect_continue_refused_before_body(sqlite_db):
    """Issue 16.2: a keyless client that waits for 100 Continue gets its 401
    instead, and never has to send the body."""
    srv = Server(sqlite_db.db_url)
    try:
        with connect(srv, timeout=5) as s:
            s.sendall(req("POST", "/api/v1/detect", ctype="application/json", length=False,
                          headers=["Content-Length: 500000", "Expect: 100-continue"]))
            a = s.recv(65536)
            assert status_of(a) == 401, a[:300]
    finally:
        srv.stop()


def test_json_depth_and_count_limits(sqlite_db):
    """Issue 16.2: deep nesting and many values are a 400, a normal body
    goes on."""
    srv = Server(sqlite_db.db_url)
    try:
        for body in (b"[" * 100 + b"]" * 100, b'{"a":[' + b",".join([b"1"] * 70000) + b"]}"):
            a = raw(srv, req("POST", "/api/v1/subjects", sqlite_db.a, ctype="application/json",
                             body=body, headers=["Connection: close"]))
            assert status_of(a) == 400 and b"validation_error" in a, a[:300]
        ok = srv.request("POST", "/api/v1/subjects", sqlite_db.a, json={"name": "ok"})
        assert ok.status_code == 201, ok.text
    finally:
        srv.stop()


# ------------------------------------------------------------ 3. smuggling

def smuggled_delete(key, sid) -> bytes:
    return req("DELETE", f"/api/v1/subjects/{sid}", key, headers=["Connection: close"])


@pytest.mark.parametrize("framing", ["two_lengths", "length_and_chunked"])
def test_smuggled_request_never_runs(db, framing):
    """Issue 16.3: a body carrying a second request (a DELETE) behind an
    ambiguous length is answered 400 and the connection closed; the
    subject is still there afterwards."""
    srv = Server(db.db_url)
    try:
        key = db.a
        sid = srv.request("POST", "/api/v1/subjects", key, json={"name": "victim"}).json()["id"]
        inner = smuggled_delete(key, sid)
        if framing == "two_lengths":
            first = b'{"name":"x"}'
            body = first + inner
            head = req("POST", "/api/v1/subjects", key, ctype="application/json", length=False,
                       headers=[f"Content-Length: {len(first)}",
                                f"Content-Length: {len(body)}"])
        else:
            body = b"0\r\n\r\n" + inner
            head = req("POST", "/api/v1/subjects", key, ctype="application/json", length=False,
                       headers=[f"Content-Length: {len(body)}", "Transfer-Encoding: chunked"])
        a = raw(srv, head + body, timeout=5)
        assert a == b"" or status_of(a) == 400, a[:300]
        assert a.count(b"HTTP/1.1 ") <= 1, a  # no second answer: nothing ran after it
        time.sleep(0.3)
        got = srv.request("GET", f"/api/v1/subjects/{sid}", key)
        assert got.status_code == 200, got.text
    finally:
        srv.stop()


@pytest.mark.parametrize("headers", [
    ["Transfer-Encoding: gzip, chunked"],
    ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
    ["Host: evil.example"],
    ["X-API-Key: fv_other"],
])
def test_ambiguous_headers_refused(sqlite_db, headers):
    """Issue 16.3: an unknown transfer coding (which used to hang holding a
    slot), or a repeated Host or X-API-Key header, is a 400 at once."""
    srv = Server(sqlite_db.db_url)
    try:
        chunked = any("Transfer-Encoding" in h for h in headers)
        t0 = time.time()
        a = raw(srv, req("POST", "/api/v1/subjects", sqlite_db.a, ctype="application/json",
                         body=b"0\r\n\r\n" if chunked else b'{"name":"x"}', length=not chunked,
                         headers=headers + ["Connection: close"]), timeout=5)
        assert status_of(a) == 400 and b"validation_error" in a, a[:300]
        assert time.time() - t0 < 3
        assert srv.request("GET", "/api/v1/subjects", sqlite_db.a).json()["count"] == 0
    finally:
        srv.stop()


# ------------------------------------------------------------ 7. MHD's errors

@pytest.mark.parametrize("bad", [
    b"POST /api/v1/subjects HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"POST /api/v1/subjects HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /api/v1/health HTTP/7.1\r\nHost: x\r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_mhd_errors_write_nothing_to_stderr(sqlite_db, bad):
    """Issue 16.7: libmicrohttpd's own refusals no longer write a line per
    request to the server's output (an attacker could fill the log)."""
    srv = Server(sqlite_db.db_url)
    try:
        before = srv.output()
        a = raw(srv, bad, timeout=3)
        assert a == b"" or 400 <= status_of(a) < 600, a[:300]
        assert srv.request("GET", "/api/v1/health").status_code == 200
        time.sleep(0.2)
        assert srv.output() == before, srv.output()[len(before):]
    finally:
        srv.stop()


# ------------------------------------------------------------ the gate

def trickled_header_socket(srv):
    s = connect(srv)
    s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return s


def test_trickled_header_lines_cut_off(sqlite_db):
    """Issue 16.1, the header half: 8 sockets send a request line and then
    a header line one byte a second.  libmicrohttpd restarted its idle
    timeout on every byte and never saw a complete request, so they stayed
    open for good; the gate closes each at --request-timeout (3 s) from the
    accept, answering 408, while /health keeps answering 200."""
    srv = Server(sqlite_db.db_url, env={"FACEVERIFY_REQUEST_TIMEOUT": "3"})
    socks = []
    try:
        t0 = time.time()
        socks = [trickled_header_socket(srv) for _ in range(8)]
        closed, answers = {}, {}
        line = b"X-Slow: " + b"a" * 40
        k = 0
        while time.time() - t0 < 8 and len(closed) < len(socks):
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    s.sendall(line[k % len(line):k % len(line) + 1])
                except OSError:
                    closed[i] = time.time() - t0
                    continue
                s.setblocking(False)
                try:
                    b = s.recv(65536)
                    answers[i] = answers.get(i, b"") + b
                    if not b:
                        closed[i] = time.time() - t0
                except BlockingIOError:
                    pass
                except OSError:
                    closed[i] = time.time() - t0
                s.setblocking(True)
            k += 1
            h = srv.request("GET", "/api/v1/health", timeout=5)
            assert h.status_code == 200, h.text
            time.sleep(1)
        assert len(closed) == len(socks), f"{len(socks) - len(closed)} trickling sockets open"
        assert max(closed.values()) < 5.5, closed
        got = [a for a in answers.values() if a]
        assert got and all(status_of(a) == 408 and b"request_timeout" in a for a in got), got
    finally:
        for s in socks:
            s.close()
        srv.stop()


HEX32 = re.compile(rb"\r\nX-Request-Id: [0-9a-f]{32}\r\n")


def assert_json_error(a: bytes, status: int, code: str):
    """a is one whole JSON error answer in the API's shape, with the
    security headers and Connection: close, and nothing after it."""
    assert status_of(a) == status, a[:400]
    assert a.count(b"HTTP/1.1 ") == 1, a
    head, _, body = a.partition(b"\r\n\r\n")
    h = head.lower()
    for line in (b"content-type: application/json", b"x-content-type-options: nosniff",
                 b"x-frame-options: deny", b"referrer-policy: no-referrer",
                 b"cache-control: no-store", b"connection: close",
                 b"content-security-policy: default-src 'none'"):
        assert b"\r\n" + line in h, (line, head)
    assert HEX32.search(head + b"\r\n"), head
    assert json.loads(body)["error"]["code"] == code, body
    length = int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))
    assert length == len(body), (length, body)


@pytest.mark.parametrize("name,bad,status,code", [
    ("bad_length", b"POST /api/v1/subjects HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
     400, "validation_error"),
    ("no_colon", b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
     400, "validation_error"),
    ("space_before_colon", b"GET /api/v1/health HTTP/1.1\r\nHost : x\r\n\r\n",
     400, "validation_error"),
    ("obs_fold", b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
     400, "validation_error"),
    ("http_2", b"GET /api/v1/health HTTP/2.0\r\nHost: x\r\n\r\n",
     505, "http_version_not_supported"),
    ("http_9", b"GET /api/v1/health HTTP/9.9\r\nHost: x\r\n\r\n",
     505, "http_version_not_supported"),
    ("big_head", b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-Pad-%d: " % i + b"a" * 1000 + b"\r\n" for i in range(20)) + b"\r\n",
     431, "header_fields_too_large"),
    ("long_uri", b"GET /api/v1/health?" + b"a" * 10240 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
     414, "uri_too_long"),
    ("nul_in_key", b"GET /api/v1/subjects HTTP/1.1\r\nHost: 127.0.0.1\r\n"
     b"X-API-Key: KEY\0junk\r\n\r\n", 400, "validation_error"),
    ("nul_in_host", b"GET /api/v1/subjects HTTP/1.1\r\nHost: 127.0.0.1\0junk\r\n"
     b"X-API-Key: KEY\r\n\r\n", 400, "validation_error"),
    ("bare_cr", b"GET /api/v1/subjects HTTP/1.1\r\nHost: 127.0.0.1\rX-API-Key: KEY\r\n\r\n",
     400, "validation_error"),
    ("chunked", b"POST /api/v1/subjects HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: KEY\r\n"
     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"c\r\n{\"name\":\"x\"}\r\n0\r\n\r\n", 411, "length_required"),
])
def test_gate_answers_json(sqlite_db, name, bad, status, code):
    """Issue 16.7 and 16.8: what libmicrohttpd answered itself (HTML, no
    security headers, `Content-Length: abc` twice) or cut at a NUL (a key
    or Host with a NUL and junk after it passed) is refused by the gate
    with one JSON error in the API's shape, with the security headers and
    Connection: close; a chunked body is refused with 411 length_required
    and not stored."""
    srv = Server(sqlite_db.db_url)
    try:
        before = srv.output()
        a = raw(srv, bad.replace(b"KEY", sqlite_db.a.encode()), timeout=5)
        assert_json_error(a, status, code)
        assert srv.request("GET", "/api/v1/subjects", sqlite_db.a).json()["count"] == 0
        time.sleep(0.2)
        assert srv.output() == before, srv.output()[len(before):]
    finally:
        srv.stop()


def test_every_answer_closes_and_keyed_routes_work(sqlite_db):
    """Every answer carries Connection: close, so that a second request
    cannot reach libmicrohttpd on a kept-alive connection without passing
    the gate: two pipelined requests get one answer.  Keyed detect and
    verify still work through the gate."""
    photo = need(DATA / "samples" / "openface" / "clapton-2.jpg").read_bytes()
    srv = Server(sqlite_db.db_url)
    try:
        for r in (srv.request("GET", "/api/v1/health"),
                  srv.request("GET", "/api/v1/subjects", sqlite_db.a),
                  srv.request("GET", "/api/v1/subjects"),
                  srv.request("POST", "/api/v1/detect", sqlite_db.a,
                              files={"image": ("a.jpg", photo, "image/jpeg")}),
                  srv.request("POST", "/api/v1/verify", sqlite_db.a,
                              files={"image_a": ("a.jpg", photo, "image/jpeg"),
                                     "image_b": ("b.jpg", photo, "image/jpeg")})):
            assert r.headers.get("Connection") == "close", (r.url, r.headers)
            assert r.status_code in (200, 401), (r.url, r.text)
        assert r.json()["verified"] is True and r.json()["distance"] < 1e-3, r.json()
        one = req("GET", "/api/v1/subjects", sqlite_db.a, length=False)
        a = raw(srv, one + req("DELETE", "/api/v1/subjects/1", sqlite_db.a, length=False))
        assert status_of(a) == 200 and a.count(b"HTTP/1.1 ") == 1, a
    finally:
        srv.stop()


# ------------------------------------------------------------ 8. NUL bytes

def test_nul_in_path_refused(sqlite_db):
    """Issue 16.8: /api/v1/subjects/1%00/../../3 used to read subject 1."""
    srv = Server(sqlite_db.db_url)
    try:
        srv.request("POST", "/api/v1/subjects", sqlite_db.a, json={"name": "one"})
        for path in ("/api/v1/subjects/1%00/../../3", "/api/v1/subjects?limit=1%00x"):
            a = raw(srv, req("GET", path, sqlite_db.a, length=False,
                             headers=["Connection: close"]))
            assert status_of(a) == 400 and b"validation_error" in a, (path, a[:300])
    finally:
        srv.stop()


def post_form(srv, key, path, body: bytes, ctype="application/x-www-form-urlencoded") -> bytes:
    return raw(srv, req("POST", path, key, body=body, ctype=ctype,
                        headers=["Connection: close"]))


def image_parts(sizes, name="image_a") -> bytes:
    """A multipart body (boundary xYz) with one file part of random bytes per
    size, all under the same field name."""
    parts = b"".join(
        b"--xYz\r\nContent-Disposition: form-data; name=\"" + name.encode()
        + b"\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n" + os.urandom(n)
        + b"\r\n" for n in sizes)
    return parts + b"--xYz--\r\n"


def test_nul_in_form_value_refused(sqlite_db):
    """Issue 16.8: a form name=url%00enc used to store "url"; a file part's
    bytes may hold NULs."""
    srv = Server(sqlite_db.db_url)
    try:
        a = post_form(srv, sqlite_db.a, "/api/v1/subjects", b"name=url%00enc")
        assert status_of(a) == 400 and b"NUL byte" in a, a[:300]
        assert srv.request("GET", "/api/v1/subjects", sqlite_db.a).json()["count"] == 0
        a = post_form(srv, sqlite_db.a, "/api/v1/detect", image_parts([1000], "image"),
                      "multipart/form-data; boundary=xYz")
        assert status_of(a) == 400 and b"NUL byte" not in a, a[:300]
    finally:
        srv.stop()


# ------------------------------------------------------------ 9. repeated fields

def test_repeated_form_fields_refused(sqlite_db):
    """Issue 16.9: name=a&name=b used to store "ab", and two image_a parts
    were concatenated; one large part (handed over in pieces) still
    passes."""
    srv = Server(sqlite_db.db_url)
    try:
        a = post_form(srv, sqlite_db.a, "/api/v1/subjects", b"name=a&name=b")
        assert status_of(a) == 400 and b"more than once" in a, a[:300]
        assert srv.request("GET", "/api/v1/subjects", sqlite_db.a).json()["count"] == 0
        a = post_form(srv, sqlite_db.a, "/api/v1/verify", image_parts([1000, 1000]),
                      "multipart/form-data; boundary=xYz")
        assert status_of(a) == 400 and b"more than once" in a, a[:300]
        a = post_form(srv, sqlite_db.a, "/api/v1/detect", image_parts([600_000], "image"),
                      "multipart/form-data; boundary=xYz")
        assert status_of(a) == 400 and b"invalid_image" in a, a[:300]
    finally:
        srv.stop()
