"""Operating points by false-match rate (FMR) on the verify endpoints, the
collection policy and the CLI.

One faceverifyd on a fresh SQLite database (and PostgreSQL when
FACEVERIFY_PG_URL names one) with four collections: "plain"
(the server's default operating point, --default-fmr 1e-3), "strict"
(createcollection --fmr 1e-5), "fixed" (--threshold 0.5) and "patched"
(changed by PATCH in the tests).  The calibration table is regenerated
by bench/calibrate_fmr.py, so no threshold is written here: each is asked of the library (the CLI's
`faceverify verify --json` on the same photos) or checked for consistency
and order (a stricter rate is a smaller threshold; a smaller distance is
a smaller estimated FMR).

Real photos from LFW: Colin Powell 1 and 2 (same person), Colin Powell 1
and George W Bush 1 (different people).
"""
import base64
import json
import random
import subprocess

import pytest

from conftest import CLI, DATA, MODELS, need
from fvserver import Server, check, create_collection, daemon_cmd, new_db_url

SAME = ("Colin_Powell/Colin_Powell_0001.jpg", "Colin_Powell/Colin_Powell_0002.jpg")
OTHER = ("Colin_Powell/Colin_Powell_0001.jpg", "George_W_Bush/George_W_Bush_0001.jpg")
VERIFY = "/api/v1/verify"
EMB = "/api/v1/verify/embeddings"
SUBJ = "/api/v1/subjects/1/verify"
COLL = "/api/v1/collection"


def lfw(rel):
    return need(DATA / "lfw" / rel)


def b64(path):
    return base64.b64encode(path.read_bytes()).decode()


def cli_verify(a, b, *extra):
    """`faceverify verify A B --json` and its exit code."""
    p = subprocess.run([str(CLI), "verify", str(a), str(b), "--json", *extra],
                       capture_output=True, text=True, timeout=300,
                       env={"FACEVERIFY_MODELS": str(MODELS), "PATH": "/usr/bin:/bin"})
    return p.returncode, json.loads(p.stdout)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def env(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fvd_fmr")
    url = new_db_url(request.param, tmp)
    daemon_cmd("migrate", db_url=url)

    class Env:
        db_url = url
        plain = create_collection(url, "plain")
        strict = create_collection(url, "strict", "--fmr", "1e-5")
        fixed = create_collection(url, "fixed", "--threshold", "0.5")
        patched = create_collection(url, "patched", "--fpir", "0.01", "--min-quality", "0.25")
        server = Server(url)
    yield Env
    assert Env.server.stop() == 0


def emb_pair(distance_scale):
    """Two embeddings distance_scale * sqrt(128) apart."""
    rng = random.Random(7)
    a = [rng.uniform(-0.1, 0.1) for _ in range(128)]
    return a, [x + distance_scale for x in a]


def post_emb(env, key, scale, **extra):
    a, b = emb_pair(scale)
    return env.server.request("POST", EMB, key, json={"embedding_a": a, "embedding_b": b, **extra})


def assert_consistent(body):
    """The decision fields agree with each other."""
    op = body["operating_point"]
    assert op["threshold"] == pytest.approx(body["threshold"])
    assert body["verified"] == (body["distance"] <= body["threshold"])
    assert (body["similarity"] > 0.5) == (body["distance"] < body["threshold"])


# ------------------------------------------------------------ validation

@pytest.mark.parametrize("path", [VERIFY, EMB, SUBJ])
def test_fmr_and_threshold_together_is_400(env, path):
    r = env.server.request("POST", path, env.plain, json={"fmr": 1e-3, "threshold": 0.5})
    err = check(r, "POST", path, 400)["error"]
    assert err["code"] == "validation_error"
    assert "fmr" in err["message"] and "threshold" in err["message"]


@pytest.mark.parametrize("path", [VERIFY, EMB, SUBJ])
@pytest.mark.parametrize("fmr", [0, 1e-7, 0.5, "x", True])
def test_fmr_out_of_range_is_400(env, path, fmr):
    r = env.server.request("POST", path, env.plain, json={"fmr": fmr})
    err = check(r, "POST", path, 400)["error"]
    assert err["code"] == "validation_error" and err["message"].startswith("fmr")


def test_fmr_in_a_form_field(env):
    a, b = lfw(SAME[0]), lfw(SAME[1])
    r = env.server.request("POST", VERIFY, env.plain,
                           files={"image_a": ("a.jpg", a.read_bytes()),
                                  "image_b": ("b.jpg", b.read_bytes())},
                           data={"fmr": "1e-4"})
    body = check(r, "POST", VERIFY, 200)
    assert body["operating_point"]["fmr"] == pytest.approx(1e-4)
    assert_consistent(body)
    r = env.server.request("POST", VERIFY, env.plain,
                           files={"image_a": ("a.jpg", a.read_bytes()),
                                  "image_b": ("b.jpg", b.read_bytes())},
                           data={"fmr": "0.2"})
    assert check(r, "POST", VERIFY, 400)["error"]["code"] == "validation_error"


# ------------------------------------------------------------ /verify

def test_verify_default_is_fmr_1e3_and_matches_the_cli(env):
    """Same person verified at the default, different people not; the
    threshold and estimated FMR are the library's (the CLI's) for the pair."""
    for pair, same in ((SAME, True), (OTHER, False)):
        a, b = lfw(pair[0]), lfw(pair[1])
        r = env.server.request("POST", VERIFY, env.plain,
                               json={"image_a": b64(a), "image_b": b64(b)})
        body = check(r, "POST", VERIFY, 200)
        assert body["verified"] is same
        assert body["operating_point"]["fmr"] == pytest.approx(1e-3)
        assert_consistent(body)
        code, cli = cli_verify(a, b)
        assert code == (0 if same else 1)
        assert cli["operating_point"] == {"fmr": pytest.approx(1e-3),
                                          "threshold": pytest.approx(body["threshold"], abs=1e-6)}
        assert cli["distance"] == pytest.approx(body["distance"], abs=1e-5)
        assert cli["estimated_fmr"] == pytest.approx(body["estimated_fmr"], rel=1e-4)
        # a decision at FMR f means the pair's own estimated FMR is <= f
        assert (body["estimated_fmr"] <= 1e-3) is same
        assert 1e-6 <= body["estimated_fmr"] <= 1


def test_verify_threshold_and_stricter_fmr(env):
    a, b = lfw(SAME[0]), lfw(SAME[1])
    base = {"image_a": b64(a), "image_b": b64(b)}
    r = env.server.request("POST", VERIFY, env.plain, json={**base, "threshold": 0.3})
    body = check(r, "POST", VERIFY, 200)
    assert body["operating_point"] == {"fmr": None, "threshold": pytest.approx(0.3)}
    assert body["verified"] is False and body["estimated_fmr"] is not None
    loose = check(env.server.request("POST", VERIFY, env.plain, json={**base, "fmr": 1e-2}),
                  "POST", VERIFY, 200)
    tight = check(env.server.request("POST", VERIFY, env.plain, json={**base, "fmr": 1e-6}),
                  "POST", VERIFY, 200)
    assert tight["threshold"] < loose["threshold"]
    assert tight["distance"] == pytest.approx(loose["distance"])
    # the estimate is the pair's, whatever the operating point
    assert tight["estimated_fmr"] == pytest.approx(loose["estimated_fmr"])
    for body in (loose, tight):
        assert_consistent(body)


# ------------------------------------------------------------ /verify/embeddings

def test_embeddings_operating_points(env):
    """Quality 1 for caller-held vectors: stricter rates give smaller
    thresholds; a nearer pair has a smaller estimated FMR."""
    thresholds = []
    for fmr in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        body = check(post_emb(env, env.plain, 0.05, fmr=fmr), "POST", EMB, 200)
        assert body["operating_point"]["fmr"] == pytest.approx(fmr)
        assert_consistent(body)
        thresholds.append(body["threshold"])
    assert thresholds == sorted(thresholds, reverse=True) and len(set(thresholds)) == 6
    estimates = []
    for scale in (0.01, 0.03, 0.045, 0.055, 0.07, 0.12):
        body = check(post_emb(env, env.plain, scale), "POST", EMB, 200)
        assert body["distance"] == pytest.approx(scale * 128 ** 0.5, rel=1e-4)
        assert body["operating_point"]["fmr"] == pytest.approx(1e-3)
        assert_consistent(body)
        estimates.append(body["estimated_fmr"])
    assert estimates == sorted(estimates) and estimates[0] < estimates[-1]
    assert estimates[0] == pytest.approx(1e-6) and estimates[-1] == pytest.approx(1.0)
    # the default threshold sits where the estimate crosses 1e-3
    t = check(post_emb(env, env.plain, 0.01), "POST", EMB, 200)["threshold"]
    below = check(post_emb(env, env.plain, t / 128 ** 0.5 - 1e-4), "POST", EMB, 200)
    above = check(post_emb(env, env.plain, t / 128 ** 0.5 + 1e-4), "POST", EMB, 200)
    assert below["verified"] is True and below["estimated_fmr"] <= 1e-3 * 1.01
    assert above["verified"] is False and above["estimated_fmr"] >= 1e-3 * 0.99


# ------------------------------------------------------------ precedence

def test_precedence(env):
    """request threshold > request fmr > collection threshold > collection
    fmr > the server's --default-fmr."""
    def op(key, **extra):
        return check(post_emb(env, key, 0.05, **extra), "POST", EMB, 200)["operating_point"]

    t_1e5 = op(env.plain, fmr=1e-5)["threshold"]
    assert op(env.plain)["fmr"] == pytest.approx(1e-3)
    assert op(env.strict) == {"fmr": pytest.approx(1e-5), "threshold": pytest.approx(t_1e5)}
    assert op(env.strict, fmr=1e-2)["fmr"] == pytest.approx(1e-2)
    assert op(env.strict, threshold=0.7) == {"fmr": None, "threshold": pytest.approx(0.7)}
    assert op(env.fixed) == {"fmr": None, "threshold": pytest.approx(0.5)}
    assert op(env.fixed, fmr=1e-5) == {"fmr": pytest.approx(1e-5),
                                       "threshold": pytest.approx(t_1e5)}
    assert op(env.fixed, threshold=0.7)["threshold"] == pytest.approx(0.7)


def test_collection_reports_its_policy(env):
    s = env.server
    plain = check(s.request("GET", COLL, env.plain), "GET", COLL, 200)
    assert plain["fmr"] is None and plain["fpir"] is None and plain["min_quality"] is None
    assert plain["operating_point"]["fmr"] == pytest.approx(1e-3)
    assert plain["threshold"] == pytest.approx(plain["operating_point"]["threshold"])
    strict = check(s.request("GET", COLL, env.strict), "GET", COLL, 200)
    assert strict["fmr"] == pytest.approx(1e-5)
    assert strict["operating_point"]["fmr"] == pytest.approx(1e-5)
    assert strict["operating_point"]["threshold"] < plain["operating_point"]["threshold"]
    fixed = check(s.request("GET", COLL, env.fixed), "GET", COLL, 200)
    assert fixed["operating_point"] == {"fmr": None, "threshold": pytest.approx(0.5)}
    assert fixed["threshold_override"] == pytest.approx(0.5)
    patched = check(s.request("GET", COLL, env.patched), "GET", COLL, 200)
    assert patched["fpir"] == pytest.approx(0.01) and patched["min_quality"] == pytest.approx(0.25)


def test_default_fmr_option(env, tmp_path):
    """--default-fmr (FACEVERIFY_DEFAULT_FMR) moves the server's default;
    0 keeps the ResNet's fixed threshold (what /models lists)."""
    other = {}
    for value in ("1e-2", "0"):
        srv = Server(env.db_url, env={"FACEVERIFY_DEFAULT_FMR": value})
        try:
            a, b = emb_pair(0.05)
            r = srv.request("POST", EMB, env.plain, json={"embedding_a": a, "embedding_b": b})
            other[value] = check(r, "POST", EMB, 200)["operating_point"]
            models = srv.request("GET", "/api/v1/models", env.plain).json()["results"]
        finally:
            assert srv.stop() == 0
    ref = check(post_emb(env, env.plain, 0.05, fmr=1e-2), "POST", EMB, 200)["operating_point"]
    assert other["1e-2"] == ref
    resnet = [m for m in models if m["kind"] == "resnet"][0]
    assert other["0"] == {"fmr": None, "threshold": pytest.approx(resnet["threshold"])}
    p = daemon_cmd("serve", "--default-fmr", "0.5", db_url=env.db_url, check=False)
    assert p.returncode == 2


# ------------------------------------------------------------ PATCH

@pytest.mark.parametrize("body", [
    {"fmr": 0}, {"fmr": 0.5}, {"fmr": 1e-7}, {"fmr": "1e-3"}, {"fmr": True},
    {"fpir": 0.5}, {"fpir": 1e-5}, {"fpir": "x"},
    {"min_quality": 1.5}, {"min_quality": -0.1}, {"min_quality": "high"},
    {"threshold": 0.5}, {},
])
def test_patch_validation(env, body):
    before = env.server.request("GET", COLL, env.patched).json()
    r = env.server.request("PATCH", COLL, env.patched, json=body)
    err = check(r, "PATCH", COLL, 400)["error"]
    assert err["code"] == "validation_error"
    if body:
        assert err["message"].startswith(next(iter(body)))
    assert env.server.request("GET", COLL, env.patched).json() == before


def test_patch_policy(env, tmp_path):
    s = env.server
    r = s.request("PATCH", COLL, env.patched, json={"fmr": 1e-4, "min_quality": None})
    body = check(r, "PATCH", COLL, 200)
    assert body["fmr"] == pytest.approx(1e-4) and body["min_quality"] is None
    assert body["fpir"] == pytest.approx(0.01)  # untouched
    assert body["operating_point"]["fmr"] == pytest.approx(1e-4)
    op = check(post_emb(env, env.patched, 0.05), "POST", EMB, 200)["operating_point"]
    assert op["fmr"] == pytest.approx(1e-4)
    body = check(s.request("PATCH", COLL, env.patched, json={"fmr": None, "fpir": None}),
                 "PATCH", COLL, 200)
    assert body["fmr"] is None and body["fpir"] is None
    assert body["operating_point"]["fmr"] == pytest.approx(1e-3)
    # an fmr replaces a collection's own threshold, which would outrank it
    key = create_collection(env.db_url, "fixed2", "--threshold", "0.45")
    body = check(s.request("PATCH", COLL, key, json={"fmr": 1e-2}), "PATCH", COLL, 200)
    assert body["threshold_override"] is None
    assert body["operating_point"]["fmr"] == pytest.approx(1e-2)
    op = check(post_emb(env, key, 0.05), "POST", EMB, 200)["operating_point"]
    assert op["fmr"] == pytest.approx(1e-2)


def test_createcollection_policy_options(env):
    for extra in (["--fmr", "1e-3", "--threshold", "0.5"], ["--fmr", "0.5"], ["--fmr", "x"],
                  ["--fpir", "0.5"], ["--min-quality", "2"]):
        p = daemon_cmd("createcollection", "bad", *extra, db_url=env.db_url, check=False)
        assert p.returncode == 2, (extra, p.stdout, p.stderr)
    p = daemon_cmd("rotatekey", "plain", "--fmr", "1e-3", db_url=env.db_url, check=False)
    assert p.returncode == 2


# ------------------------------------------------------------ subject verify

def test_subject_verify_operating_point(env):
    """The pair's quality is min(probe, stored template): the threshold is
    the one the CLI finds for the enrolment photo and the probe."""
    s = env.server
    enrol, probe = lfw(SAME[0]), lfw(SAME[1])
    sid = check(s.request("POST", "/api/v1/subjects", env.plain, json={"name": "powell"}),
                "POST", "/api/v1/subjects", 201)["id"]
    r = s.request("POST", f"/api/v1/subjects/{sid}/faces", env.plain,
                  files={"image": ("e.jpg", enrol.read_bytes())})
    check(r, "POST", "/api/v1/subjects/1/faces", 201)
    r = s.request("POST", f"/api/v1/subjects/{sid}/verify", env.plain,
                  files={"image": ("p.jpg", probe.read_bytes())})
    body = check(r, "POST", SUBJ, 200)
    assert body["verified"] is True and body["operating_point"]["fmr"] == pytest.approx(1e-3)
    assert_consistent(body)
    _, cli = cli_verify(enrol, probe)
    assert body["threshold"] == pytest.approx(cli["threshold"], abs=1e-6)
    assert body["estimated_fmr"] == pytest.approx(cli["estimated_fmr"], rel=1e-3)
    r = s.request("POST", f"/api/v1/subjects/{sid}/verify", env.plain,
                  files={"image": ("o.jpg", lfw(OTHER[1]).read_bytes())}, data={"fmr": "1e-2"})
    body = check(r, "POST", SUBJ, 200)
    assert body["verified"] is False and body["operating_point"]["fmr"] == pytest.approx(1e-2)
    assert body["estimated_fmr"] > 1e-2
    # a template enrolled as a bare embedding has no quality: it counts as 1
    sid2 = check(s.request("POST", "/api/v1/subjects", env.plain, json={"name": "vector"}),
                 "POST", "/api/v1/subjects", 201)["id"]
    r = s.request("POST", f"/api/v1/subjects/{sid2}/faces", env.plain,
                  json={"embedding": emb_pair(0)[0]})
    check(r, "POST", "/api/v1/subjects/1/faces", 201)
    r = s.request("POST", f"/api/v1/subjects/{sid2}/verify", env.plain,
                  files={"image": ("p.jpg", probe.read_bytes())})
    assert_consistent(check(r, "POST", SUBJ, 200))


# ------------------------------------------------------------ CLI

def test_cli_fmr():
    a, b = lfw(SAME[0]), lfw(SAME[1])
    code, j = cli_verify(a, b, "--fmr", "1e-5")
    assert j["operating_point"]["fmr"] == pytest.approx(1e-5)
    assert j["verified"] == (j["distance"] <= j["threshold"]) and code == (0 if j["verified"] else 1)
    _, loose = cli_verify(a, b, "--fmr", "1e-2")
    assert loose["threshold"] > j["threshold"]
    _, fixed = cli_verify(a, b, "--threshold", "0.5")
    assert fixed["operating_point"] == {"fmr": None, "threshold": pytest.approx(0.5)}
    # --flip has no calibration: its own threshold by default, --fmr refused
    _, flip = cli_verify(a, b, "--flip")
    assert flip["operating_point"]["fmr"] is None and flip["estimated_fmr"] is None
    for extra in (["--fmr", "1e-3", "--threshold", "0.5"], ["--fmr", "0.5"], ["--fmr", "0"],
                  ["--flip", "--fmr", "1e-3"]):
        code, j = cli_verify(a, b, *extra)
        assert code == 2 and j["error"]["code"] in ("invalid_argument", "unsupported"), extra
    p = subprocess.run([str(CLI), "verify", str(a), str(b)], capture_output=True, text=True,
                       timeout=300, env={"FACEVERIFY_MODELS": str(MODELS)})
    assert p.returncode == 0 and "false-match rate 1e-03" in p.stdout
