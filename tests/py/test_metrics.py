"""GET /metrics (Prometheus text format 0.0.4) and the JSON request log,
against live faceverifyd processes on SQLite, and on PostgreSQL when
FACEVERIFY_PG_URL names one:

  - the exposition parses with Prometheus's own parser
    (prometheus_client.parser), with the documented families and types;
  - counters move with traffic: a detect raises requests_total for its
    route and status and the stage histograms' counts; a 401, a 404, a
    429 and a 503 overloaded are counted as such;
  - every histogram is cumulative and ends in +Inf equal to its _count;
  - the templates gauge follows enrolment and deletion, the index size
    follows a search;
  - --no-metrics (and FACEVERIFY_METRICS=off) answer 404; local mode
    answers a loopback client;
  - --log-format json writes one parsable line per request carrying the
    answer's X-Request-Id, and no key.
"""
import json
import math
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import DATA, need
from fvserver import Server, create_collection, daemon_cmd, new_db_url

CTYPE = "text/plain; version=0.0.4; charset=utf-8"
FAMILIES = {
    "faceverify_http_requests": "counter",
    "faceverify_http_request_duration_seconds": "histogram",
    "faceverify_stage_duration_seconds": "histogram",
    "faceverify_http_requests_in_flight": "gauge",
    "faceverify_http_requests_shed": "counter",
    "faceverify_http_requests_rate_limited": "counter",
    "faceverify_collections": "gauge",
    "faceverify_templates": "gauge",
    "faceverify_index_info": "gauge",
    "faceverify_index_size": "gauge",
    "faceverify_index_memory_bytes": "gauge",
    "faceverify_model_loaded": "gauge",
    "faceverify_process_resident_memory_bytes": "gauge",
    "faceverify_process_start_time_seconds": "gauge",
    "faceverify_build_info": "gauge",
    "faceverify_metrics_series_dropped": "counter",
}
STAGES = ["decode", "detect", "landmarks", "align", "embed", "search"]


def image(rel: str) -> bytes:
    return need(DATA / "samples" / rel).read_bytes()


def scrape(srv):
    """{family name: family} of one scrape, after checking its answer."""
    r = srv.request("GET", "/metrics")
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"] == CTYPE
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def value(fams, family, sample=None, **labels):
    """The value of the sample named sample (default: the family's own
    name, or name_total for a counter) with exactly these labels; 0 when
    absent (a series appears on first use)."""
    f = fams[family]
    if sample is None:
        sample = family + "_total" if f.type == "counter" else family
    for s in f.samples:
        if s.name == sample and s.labels == labels:
            return s.value
    return 0


def requests_total(fams, route, method, status):
    return value(fams, "faceverify_http_requests", route=route, method=method, status=str(status))


def stage_count(fams, stage):
    return value(fams, "faceverify_stage_duration_seconds",
                 "faceverify_stage_duration_seconds_count", stage=stage)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db(request, tmp_path_factory):
    url = new_db_url(request.param, tmp_path_factory.mktemp("metrics"))
    daemon_cmd("migrate", db_url=url)

    class Db:
        db_url = url
        a = create_collection(url, "alpha")
        b = create_collection(url, 'beta "quoted" \\ name')
    return Db


@pytest.fixture(scope="module")
def srv(db):
    s = Server(db.db_url, env={"FACEVERIFY_LOG_FORMAT": "json"})
    yield s
    assert s.stop() == 0


def test_exposition_parses_with_the_documented_families(srv, db):
    fams = scrape(srv)
    for name, kind in FAMILIES.items():
        assert name in fams, f"{name} missing"
        assert fams[name].type == kind, (name, fams[name].type)
    assert value(fams, "faceverify_build_info", version="0.1.0") == 1
    assert value(fams, "faceverify_model_loaded", model="dlib_resnet_v1") == 1
    assert value(fams, "faceverify_index_info", backend="exact") == 1
    assert value(fams, "faceverify_collections") == 2
    # a collection name with a quote and a backslash comes back unescaped
    assert value(fams, "faceverify_templates", collection='beta "quoted" \\ name') == 0
    # a scrape takes no request slot, so nothing is in flight
    assert value(fams, "faceverify_http_requests_in_flight") == 0
    rss = value(fams, "faceverify_process_resident_memory_bytes")
    assert 10e6 < rss < 4e9, rss
    start = value(fams, "faceverify_process_start_time_seconds")
    assert 1.7e9 < start < 4e9, start
    for stage in STAGES:
        assert any(s.labels.get("stage") == stage
                   for s in fams["faceverify_stage_duration_seconds"].samples), stage


def test_detect_moves_requests_and_stage_histograms(srv, db):
    before = scrape(srv)
    r = srv.request("POST", "/api/v1/detect", db.a,
                    files={"image": ("c.jpg", image("openface/clapton-1.jpg"))})
    assert r.status_code == 200, r.text[:300]
    timings = r.json()["timings_ms"]
    after = scrape(srv)
    route = "/api/v1/detect"
    assert requests_total(after, route, "POST", 200) == requests_total(before, route, "POST", 200) + 1
    dur = "faceverify_http_request_duration_seconds"
    assert (value(after, dur, dur + "_count", route=route)
            == value(before, dur, dur + "_count", route=route) + 1)
    # detect reports decode and detect: exactly those stages moved
    for stage in STAGES:
        moved = stage_count(after, stage) - stage_count(before, stage)
        assert moved == (1 if stage in ("decode", "detect") else 0), (stage, moved)
    # the stage sum grew by the answer's own milliseconds
    sname = "faceverify_stage_duration_seconds_sum"
    grew = (value(after, "faceverify_stage_duration_seconds", sname, stage="detect")
            - value(before, "faceverify_stage_duration_seconds", sname, stage="detect"))
    assert grew == pytest.approx(timings["detect"] / 1000, rel=1e-3, abs=1e-6)


def test_verify_moves_every_stage_but_search(srv, db):
    before = scrape(srv)
    r = srv.request("POST", "/api/v1/verify", db.a,
                    files={"image_a": ("a.jpg", image("openface/clapton-1.jpg")),
                           "image_b": ("b.jpg", image("openface/clapton-2.jpg"))})
    assert r.status_code == 200, r.text[:300]
    timings = r.json()["timings_ms"]
    after = scrape(srv)
    # timings_ms.chip is the "align" stage
    for stage, key in zip(STAGES, ["decode", "detect", "landmarks", "chip", "embed", None]):
        moved = stage_count(after, stage) - stage_count(before, stage)
        assert moved == (0 if key is None else 1), (stage, moved)
        if key:
            sname = "faceverify_stage_duration_seconds_sum"
            grew = (value(after, "faceverify_stage_duration_seconds", sname, stage=stage)
                    - value(before, "faceverify_stage_duration_seconds", sname, stage=stage))
            assert grew == pytest.approx(timings[key] / 1000, rel=1e-3, abs=1e-6), stage


def test_refusals_are_counted_by_status(srv, db):
    before = scrape(srv)
    assert srv.request("POST", "/api/v1/detect", None,
                       files={"image": ("c.jpg", b"x")}).status_code == 401
    assert srv.request("GET", "/api/v1/subjects/12x", db.a).status_code == 404
    assert srv.request("GET", "/no/such/path").status_code == 404
    assert srv.request("PUT", "/api/v1/health").status_code == 405
    after = scrape(srv)
    for route, method, status in [("/api/v1/detect", "POST", 401),
                                  ("/api/v1/subjects/{id}", "GET", 404),
                                  ("unmatched", "GET", 404),
                                  ("/api/v1/health", "PUT", 405)]:
        assert (requests_total(after, route, method, status)
                == requests_total(before, route, method, status) + 1), (route, method, status)
    # no raw URL becomes a label
    labels = {s.labels.get("route") for s in after["faceverify_http_requests"].samples}
    assert "/no/such/path" not in labels and "/api/v1/subjects/12x" not in labels


def test_histograms_are_cumulative_and_end_in_inf(srv, db):
    srv.request("GET", "/api/v1/health")
    fams = scrape(srv)
    checked = 0
    for name in ("faceverify_http_request_duration_seconds", "faceverify_stage_duration_seconds"):
        series = {}
        for s in fams[name].samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, {"buckets": []})
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
            elif s.name.endswith("_sum"):
                series[key]["sum"] = s.value
        for key, h in series.items():
            les = [le for le, _ in h["buckets"]]
            counts = [c for _, c in h["buckets"]]
            assert les == sorted(les) and les[-1] == math.inf, (key, les)
            assert les[0] == 0.001 and les[-2] == 10, (key, les)
            assert counts == sorted(counts), (key, counts)  # cumulative
            assert counts[-1] == h["count"], key
            assert h["sum"] >= 0
            checked += 1
    assert checked >= len(STAGES) + 2


def test_templates_gauge_follows_enrol_and_delete(srv, db):
    def templates():
        return value(scrape(srv), "faceverify_templates", collection="alpha")

    start = templates()
    r = srv.request("POST", "/api/v1/subjects", db.a, json={"name": "clapton"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    r = srv.request("POST", f"/api/v1/subjects/{sid}/faces", db.a,
                    files={"image": ("c.jpg", image("openface/clapton-1.jpg"))})
    assert r.status_code == 201, r.text[:300]
    fid = r.json()["id"]
    assert value(scrape(srv), "faceverify_templates", collection="alpha") == start + 1
    # a search loads the change into the index: its size is the stored count
    before = scrape(srv)
    r = srv.request("POST", "/api/v1/identify", db.a,
                    files={"image": ("c.jpg", image("openface/clapton-2.jpg"))})
    assert r.status_code == 200, r.text[:300]
    fams = scrape(srv)
    assert value(fams, "faceverify_index_size", backend="exact") == start + 1
    assert value(fams, "faceverify_index_memory_bytes", backend="exact") > 0
    for stage in ("decode", "detect", "embed", "search"):
        assert stage_count(fams, stage) == stage_count(before, stage) + 1, stage
    r = srv.request("DELETE", f"/api/v1/subjects/{sid}/faces/{fid}", db.a)
    assert r.status_code == 200, r.text
    assert templates() == start


def test_json_log_lines_carry_the_request_id(srv, db):
    r = srv.request("GET", "/api/v1/collection", db.a)
    assert r.status_code == 200
    rid = r.headers["X-Request-Id"]
    r404 = srv.request("GET", "/nope")
    out = srv.output()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines, out[-2000:]
    mine = [x for x in lines if x["request_id"] == rid]
    assert len(mine) == 1, mine
    x = mine[0]
    assert set(x) == {"time", "level", "request_id", "method", "route", "status",
                      "duration_ms", "remote"}
    assert (x["method"], x["route"], x["status"], x["level"]) == (
        "GET", "/api/v1/collection", 200, "info")
    assert x["remote"] == "127.0.0.1"
    assert 0 < x["duration_ms"] < 60000
    assert x["time"].endswith("Z") and x["time"][:4].isdigit()
    nf = [x for x in lines if x["request_id"] == r404.headers["X-Request-Id"]]
    assert nf and nf[0]["route"] is None and nf[0]["status"] == 404 and nf[0]["level"] == "warn"
    assert db.a not in out and db.a[:12] not in out  # no key, not even its prefix


@pytest.fixture(scope="module")
def limited(db):
    """One request at a time (--max-inflight 1) and 0.5 requests/s per key
    with a burst of 4."""
    s = Server(db.db_url, env={"FACEVERIFY_MAX_INFLIGHT": "1", "FACEVERIFY_RATE_LIMIT": "0.5",
                                "FACEVERIFY_RATE_BURST": "4"})
    yield s
    assert s.stop() == 0


def test_rate_limited_requests_are_counted(limited, db):
    before = scrape(limited)
    codes = [limited.request("GET", "/api/v1/collection", db.b).status_code for _ in range(7)]
    limited_n = codes.count(429)
    assert limited_n >= 2, codes
    after = scrape(limited)
    assert (value(after, "faceverify_http_requests_rate_limited")
            == value(before, "faceverify_http_requests_rate_limited") + limited_n)
    assert (requests_total(after, "/api/v1/collection", "GET", 429)
            == requests_total(before, "/api/v1/collection", "GET", 429) + limited_n)


def test_shed_requests_are_counted(limited, db):
    img = image("openface/clapton-1.jpg")
    before = scrape(limited)
    shed = busy_scrapes = 0
    for _ in range(3):  # up to three rounds of four at once; one round sheds in practice
        codes = []

        def go():
            r = limited.request("POST", "/api/v1/detect", db.a, files={"image": ("c.jpg", img)})
            codes.append((r.status_code, r.json().get("error", {}).get("code")))

        threads = [threading.Thread(target=go) for _ in range(4)]
        for t in threads:
            t.start()
        # Scrapes while the one slot is taken are answered all the same.
        while any(t.is_alive() for t in threads):
            busy_scrapes += value(scrape(limited), "faceverify_http_requests_in_flight") >= 1
        for t in threads:
            t.join()
        assert all(c in ((200, None), (503, "overloaded"), (429, "rate_limited"))
                   for c in codes), codes
        shed += codes.count((503, "overloaded"))
        if shed:
            break
    assert shed >= 1, "four concurrent detects never exceeded --max-inflight 1"
    assert busy_scrapes >= 1, "no scrape came while a detect held the slot"
    after = scrape(limited)
    assert (value(after, "faceverify_http_requests_shed")
            == value(before, "faceverify_http_requests_shed") + shed)
    assert (requests_total(after, "/api/v1/detect", "POST", 503)
            == requests_total(before, "/api/v1/detect", "POST", 503) + shed)


@pytest.mark.parametrize("how", [{"args": ["--no-metrics"]},
                                 {"env": {"FACEVERIFY_METRICS": "off"}}])
def test_metrics_off_answers_404(db, how):
    s = Server(db.db_url, **how)
    try:
        r = s.request("GET", "/metrics")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
        assert s.request("GET", "/api/v1/health").status_code == 200
    finally:
        assert s.stop() == 0


def test_metrics_local_only_answers_loopback(db):
    s = Server(db.db_url, args=["--metrics-local-only"])
    try:
        assert "faceverify_http_requests" in scrape(s)
    finally:
        assert s.stop() == 0


def test_bad_metrics_and_log_values_are_refused(db):
    for args in (["--metrics", "maybe"], ["--log-format", "xml"]):
        p = daemon_cmd("serve", "--listen", "127.0.0.1:1", *args, db_url=db.db_url, check=False)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert args[0] in p.stderr
    p = daemon_cmd("--help", db_url=db.db_url)
    for flag in ("--no-metrics", "--metrics-local-only", "--metrics MODE", "--log-format"):
        assert flag in p.stdout, flag
