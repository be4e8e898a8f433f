"""Starts real faceverifyd processes for the integration tests.

A Server runs `faceverifyd migrate`, `createcollection` and `serve` on a free
127.0.0.1 port against a given database URL: a temporary SQLite file, or
the PostgreSQL named by FACEVERIFY_PG_URL (whose faceverifyd tables are
dropped first, so every run starts from an empty schema).  The binary comes
from $FACEVERIFY_BUILD/bin (an ASan build works too: its reports on stderr
fail the test that stops the server).

Responses are checked against the OpenAPI document the server serves
(src/server/openapi.json) with jsonschema (OpenAPI 3.1 schemas are JSON
Schema 2020-12).
"""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("FACEVERIFY_BUILD", REPO / "build"))
MODELS = Path(os.environ.get("FACEVERIFY_MODELS", REPO / "models"))
DAEMON = BUILD / "bin" / "faceverifyd"
PG_URL = os.environ.get("FACEVERIFY_PG_URL")
MAX_BODY = 1_000_000
SPEC_PATH = REPO / "src" / "server" / "openapi.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_cmd(*args, db_url, env=None, check=True, timeout=120):
    if not DAEMON.exists():
        pytest.fail(f"{DAEMON} not built")
    e = dict(os.environ, FACEVERIFY_DATABASE_URL=db_url, FACEVERIFY_MODELS=str(MODELS))
    e.update(env or {})
    p = subprocess.run([str(DAEMON), *map(str, args)], capture_output=True, text=True,
                       env=e, timeout=timeout)
    if check:
        assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
    return p


def reset_pg(url: str):
    """Drops faceverifyd's tables so that migrations start from empty."""
    sql = ("DROP TABLE IF EXISTS audit_log, face_changes, corrections, faces, subjects, collections, store_secrets, schema_migrations CASCADE;")
    subprocess.run(["psql", url, "-qAtc", sql], check=True, capture_output=True, timeout=60)


def new_db_url(backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        fd, path = tempfile.mkstemp(suffix=".db", dir=tmp)
        os.close(fd)
        os.unlink(path)
        return f"sqlite://{path}"
    if not PG_URL:
        if os.environ.get("FACEVERIFY_REQUIRE_PG") == "1":
            pytest.fail("FACEVERIFY_PG_URL is not set")
        pytest.skip("FACEVERIFY_PG_URL not set: no PostgreSQL to test against")
    reset_pg(PG_URL)
    return PG_URL


def create_collection(db_url: str, name: str, *extra) -> str:
    p = daemon_cmd("createcollection", name, *extra, db_url=db_url)
    return p.stdout.strip().splitlines()[-1]


def two_collections(backend: str, tmp: Path):
    """A migrated, empty database with collections alpha (key .a) and beta
    (key .b): what the isolation, security and fault tests start from."""
    url = new_db_url(backend, tmp)
    daemon_cmd("migrate", db_url=url)

    class Db:
        db_url = url
        a = create_collection(url, "alpha")
        b = create_collection(url, "beta")
    Db.backend = backend
    Db.tmp = tmp
    return Db


def collection_server(backend: str, tmp: Path, name: str, **server_args):
    """A migrated, empty database with one collection `name`, and a
    faceverifyd on it (Server's keyword arguments): (server, key, url).
    The caller stops the server."""
    url = new_db_url(backend, tmp)
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, name)
    return Server(url, **server_args), key, url


class Server:
    def __init__(self, db_url: str, env=None, max_body=MAX_BODY, args=()):
        self.db_url = db_url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        e = dict(os.environ, FACEVERIFY_DATABASE_URL=db_url, FACEVERIFY_MODELS=str(MODELS),
                 ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
                 UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
        e.update(env or {})
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [str(DAEMON), "serve", "--listen", f"127.0.0.1:{self.port}", "--max-body",
             str(max_body), "--http-threads", "4", *args],
            stdout=self.log, stderr=subprocess.STDOUT, env=e)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"faceverifyd exited {self.proc.returncode}: {self.output()}")
            try:
                requests.get(self.base + "/api/v1/health", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("faceverifyd did not start")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout=60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        out = self.output()
        assert not re.search(r"ERROR: \w*Sanitizer|runtime error:", out), out
        return self.proc.returncode

    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method, path, key=None, **kw):
        headers = kw.pop("headers", {})
        if key:
            headers["X-API-Key"] = key
        kw.setdefault("timeout", 120)
        return requests.request(method, self.url(path), headers=headers, **kw)


# ------------------------------------------------------------------ OpenAPI

_spec = None


def spec() -> dict:
    global _spec
    if _spec is None:
        _spec = json.loads(SPEC_PATH.read_text())
    return _spec


def _match_path(path: str):
    """Finds the OpenAPI path template for a concrete path."""
    path = path.split("?")[0]
    parts = path.strip("/").split("/")
    for tmpl in spec()["paths"]:
        tparts = tmpl.strip("/").split("/")
        if len(tparts) != len(parts):
            continue
        if all(t == p or (t.startswith("{") and t.endswith("}")) for t, p in zip(tparts, parts)):
            return tmpl
    return None


def check(resp, method: str, path: str, status: int = None):
    """Asserts the status (when given) and validates the JSON body against
    the OpenAPI response schema of (path, method, status).  Returns the body."""
    import jsonschema

    if status is not None:
        assert resp.status_code == status, (resp.status_code, resp.text[:500])
    body = resp.json()
    tmpl = _match_path(path)
    assert tmpl, f"{path} is not in the OpenAPI document"
    op = spec()["paths"][tmpl].get(method.lower())
    assert op, f"{method} {tmpl} is not in the OpenAPI document"
    responses = op["responses"]
    r = responses.get(str(resp.status_code)) or responses.get("default")
    assert r, f"{method} {tmpl}: status {resp.status_code} is not documented"
    if "$ref" in r:
        r = spec()["components"]["responses"][r["$ref"].split("/")[-1]]
    schema = dict(r["content"]["application/json"]["schema"])
    schema["components"] = spec()["components"]
    jsonschema.Draft202012Validator(schema).validate(body)
    if resp.status_code >= 400:
        assert set(body) >= {"error"} and set(body["error"]) >= {"code", "message"}, body
    return body
