"""faceverifyd's route table (routes.c's ROUTES, printed by `faceverifyd
routes`) against what users read and what the server does:

  - the table and openapi.json list the same operations, both ways, with
    the same authentication (no key vs X-API-Key/X-Demo-Token);
  - a live server answers each route from the table: a keyed route without
    a key is 401, an open one is not, and a method the path lacks is 405
    with an Allow header naming the table's methods for that path;
  - the asset files are served whole or not at all: an unreadable or
    oversized file is a JSON 5xx, never a 200 with part of it;
  - only http.c speaks libmicrohttpd (handlers see http.h only).
"""
import json
import re
import subprocess
from pathlib import Path

import pytest
import requests

import fvserver
from fvserver import Server, daemon_cmd, new_db_url

REPO = Path(__file__).resolve().parents[2]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def table():
    if not fvserver.DAEMON.exists():
        pytest.fail(f"{fvserver.DAEMON} not built")
    p = subprocess.run([str(fvserver.DAEMON), "routes"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def operations():
    """(METHOD, path) -> the operation's effective security list."""
    spec = fvserver.spec()
    ops = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                ops[(method.upper(), path)] = op.get("security", spec.get("security", []))
    return ops


def concrete(path: str) -> str:
    return (path.replace("{id}", "1").replace("{face_id}", "1").replace("{correction_id}", "1")
            .replace("{name}", "app.js"))


def test_table_matches_openapi_both_ways():
    rows = table()
    ops = operations()
    keys = [(r["method"], r["path"]) for r in rows]
    assert len(keys) == len(set(keys)), "a route is listed twice"
    assert set(keys) - set(ops) == set(), "routes missing from openapi.json"
    assert set(ops) - set(keys) == set(), "openapi.json operations the server does not route"
    for r in rows:
        security = ops[(r["method"], r["path"])]
        if r["auth"] == "none":
            assert security == [], r
            assert r["audit"] is None, r  # only authenticated requests are logged
        else:
            assert r["auth"] == "api_key", r
            assert {"ApiKey": []} in security and {"DemoToken": []} in security, r
            assert r["audit"], r
    audited = [r["audit"] for r in rows if r["audit"]]
    assert len(audited) == len(set(audited)), "two routes share an audit action"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    url = new_db_url("sqlite", tmp_path_factory.mktemp("routes"))
    daemon_cmd("migrate", db_url=url)
    srv = Server(url)
    yield srv
    assert srv.stop() == 0


def test_server_answers_from_the_table(server):
    rows = table()
    by_path = {}
    for r in rows:
        by_path.setdefault(r["path"], set()).add(r["method"])
    for r in rows:
        if r["method"] == "HEAD":
            continue
        resp = server.request(r["method"], concrete(r["path"]), timeout=60)
        if r["auth"] == "api_key":
            assert resp.status_code == 401, (r, resp.status_code)
            assert resp.json()["error"]["code"] == "unauthorized"
        else:
            assert resp.status_code != 401, r
    for path, methods in by_path.items():
        resp = server.request("PUT", concrete(path), timeout=60)
        assert resp.status_code == 405, (path, resp.status_code, resp.text[:200])
        assert resp.json()["error"]["code"] == "method_not_allowed"
        assert set(resp.headers["Allow"].split(", ")) == methods, (path, resp.headers)


def test_assets_served_whole_or_not_at_all(tmp_path):
    """docs.html that cannot be read (a folder) and an openapi.json over the
    2 MiB cap answer a JSON 503, not a 200 with a truncated or empty body;
    a missing file is a 404."""
    assets = tmp_path / "assets"
    (assets / "docs.html").mkdir(parents=True)
    (assets / "openapi.json").write_bytes(b"{" + b" " * (2 * 1024 * 1024) + b"}")
    (assets / "static").mkdir()
    (assets / "static" / "app.js").write_text("let x = 1;\n")
    url = new_db_url("sqlite", tmp_path)
    daemon_cmd("migrate", db_url=url)
    srv = Server(url, env={"FACEVERIFY_ASSETS": str(assets)})
    try:
        for path in ("/docs", "/api/openapi.json"):
            r = requests.get(srv.url(path), timeout=60)
            assert r.status_code == 503, (path, r.status_code)
            assert r.headers["Content-Type"] == "application/json"
            assert r.json()["error"]["code"] == "unavailable", r.text
        r = requests.get(srv.url("/static/app.js"), timeout=60)
        assert r.status_code == 200 and r.text == "let x = 1;\n"
        r = requests.get(srv.url("/static/app.css"), timeout=60)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    finally:
        assert srv.stop() == 0


def test_only_http_c_speaks_libmicrohttpd():
    server = REPO / "src" / "server"
    http_h = (server / "http.h").read_text()
    assert not re.search(r"#\s*include\s*[<\"]microhttpd\.h", http_h)
    for f in sorted(server.glob("*.[ch]")):
        if f.name in ("http.c", "http_mhd.h"):
            continue
        code = re.sub(r"/\*.*?\*/", "", f.read_text(), flags=re.S)  # comments may name it
        assert not re.search(r"\bMHD_\w+\s*\(", code), f"{f.name} calls libmicrohttpd"
        assert "microhttpd.h" not in code, f.name
