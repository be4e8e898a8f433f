"""faceverifyd serving trained models per collection, on SQLite
and on PostgreSQL when FACEVERIFY_PG_URL names one.

Two models are trained once for the module with test_train's helper on its
LFW identities: an adapter (on top of the ResNet embedding, good enough to
tell people apart) and the small scratch CNN.  One faceverifyd serves them
from --models-dir (FACEVERIFY_MODELS_DIR) next to the default ResNet, with
three collections: "tuned" (the adapter, created by file name), "tiny"
(the scratch model, created by id) and "plain" (the default model).

  - /verify in a collection gives the same distance, threshold and model id
    as `faceverify verify --model FILE` on the same two photos (both models);
  - faces enrolled in "tuned" keep the adapter's id, and identify finds the
    right person among three;
  - switching "tuned" to the ResNet reports exactly how many templates need
    re-enrolment; identify then searches none of them, a subject verify
    against them is 409 model_mismatch, and so are embeddings tagged with
    the old model; re-enrolling under the new model works, and switching
    back counts the other side;
  - an unknown model name is a typed 400 and changes nothing, on the API
    and on `createcollection --model`;
  - "plain" on the same server is untouched throughout (isolation);
  - a server without the model file answers 503 model_unavailable for the
    collections that need it and serves the others.
"""
import json
import os

import pytest

from conftest import run_cli
from fvserver import Server, check, create_collection, daemon_cmd, new_db_url
from test_train import data, train  # noqa: F401  (module fixture and helper)

BACKENDS = ["sqlite", "postgres"]
ENROL = ["Abdullah_Gul", "Andre_Agassi", "Angelina_Jolie"]


def photo(lfw, person, n):
    return lfw / person / f"{person}_{n:04d}.jpg"


def image(path):
    return {"image": (path.name, path.read_bytes())}


@pytest.fixture(scope="module")
def models(data):  # noqa: F811
    """A models dir holding the adapter as tuned-adapter.fvm and the
    scratch model as tiny.fvm; their training summaries."""
    adapter, ra = train(data, "adapter.fvm", "--mode", "adapter", "--epochs", "2")
    scratch, rs = train(data, "scratch.fvm")
    d = data / "served"
    d.mkdir()
    os.symlink(adapter, d / "tuned-adapter.fvm")
    os.symlink(scratch, d / "tiny.fvm")
    (d / "notes.txt").write_text("not a model: ignored\n")

    class M:
        dir = d
        adapter_path = adapter
        scratch_path = scratch
        adapter_id = ra["id"]
        scratch_id = rs["id"]
        adapter_threshold = ra["threshold"]
        scratch_threshold = rs["threshold"]
    return M


@pytest.fixture(scope="module", params=BACKENDS)
def env(request, models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fvd_models")
    url = new_db_url(request.param, tmp)
    daemon_cmd("migrate", db_url=url)
    menv = {"FACEVERIFY_MODELS_DIR": str(models.dir)}

    def create(name, *extra):
        p = daemon_cmd("createcollection", name, *extra, db_url=url, env=menv)
        return p.stdout.strip().splitlines()[-1]

    keys = {"tuned": create("tuned", "--model", "tuned-adapter"),
            "tiny": create("tiny", "--model", models.scratch_id),
            "plain": create("plain")}
    srv = Server(url, env=menv)

    class Env:
        backend = request.param
        db_url = url
        server = srv
        key = keys
        model_env = menv
    yield Env
    assert srv.stop() == 0


def get_collection(env, name):
    r = env.server.request("GET", "/api/v1/collection", env.key[name])
    return check(r, "GET", "/api/v1/collection", 200)


def test_models_listed_and_collections_use_them(env, models):
    r = env.server.request("GET", "/api/v1/models", env.key["tuned"])
    body = check(r, "GET", "/api/v1/models", 200)
    by_id = {m["id"]: m for m in body["results"]}
    assert set(by_id) == {"dlib_resnet_v1", models.adapter_id, models.scratch_id}
    assert by_id[models.adapter_id]["name"] == "tuned-adapter"
    assert by_id[models.adapter_id]["kind"] == "adapter"
    assert by_id[models.scratch_id]["name"] == "tiny"
    assert by_id[models.scratch_id]["kind"] == "scratch"
    assert body["collection_model"] == models.adapter_id
    c = get_collection(env, "tuned")
    assert c["name"] == "tuned" and c["model"] == models.adapter_id
    # no threshold of its own: the model file's calibrated one
    assert c["threshold_override"] is None
    assert c["threshold"] == pytest.approx(models.adapter_threshold, rel=1e-6)
    assert get_collection(env, "tiny")["model"] == models.scratch_id
    assert c["operating_point"] == {"fmr": None, "threshold": pytest.approx(c["threshold"])}
    plain = get_collection(env, "plain")
    assert plain["model"] == "dlib_resnet_v1"
    # the ResNet has a false-match-rate calibration: the collection decides
    # at the server's default rate, not at the model's fixed threshold
    # (which /models still lists)
    assert by_id["dlib_resnet_v1"]["threshold"] > 0
    assert plain["operating_point"]["fmr"] == pytest.approx(1e-3)
    assert plain["threshold"] == pytest.approx(plain["operating_point"]["threshold"])


@pytest.mark.parametrize("coll,which", [("tuned", "adapter"), ("tiny", "scratch")])
def test_api_verify_matches_cli_with_model(env, models, lfw, coll, which):
    path = getattr(models, f"{which}_path")
    mid = getattr(models, f"{which}_id")
    for a, b in [(photo(lfw, "Abdullah_Gul", 1), photo(lfw, "Abdullah_Gul", 2)),
                 (photo(lfw, "Abdullah_Gul", 1), photo(lfw, "Andre_Agassi", 1))]:
        p = run_cli("verify", a, b, "--model", path, "--json")
        assert p.returncode in (0, 1), p.stderr
        cli = json.loads(p.stdout)
        r = env.server.request("POST", "/api/v1/verify", env.key[coll],
                               files={"image_a": (a.name, a.read_bytes()),
                                      "image_b": (b.name, b.read_bytes())})
        api = check(r, "POST", "/api/v1/verify", 200)
        assert api["model"] == cli["model"] == mid
        assert api["distance"] == pytest.approx(cli["distance"], abs=1e-5)
        assert api["threshold"] == pytest.approx(cli["threshold"], rel=1e-6)
        assert api["verified"] == cli["verified"]
        # no false-match-rate calibration for a trained model: its own
        # threshold decides, and asking for a rate is refused, never ignored
        assert api["operating_point"] == cli["operating_point"] == {
            "fmr": None, "threshold": pytest.approx(api["threshold"])}
        assert api["estimated_fmr"] is None and cli["estimated_fmr"] is None
    r = env.server.request("POST", "/api/v1/verify", env.key[coll],
                           files={"image_a": (a.name, a.read_bytes()),
                                  "image_b": (b.name, b.read_bytes())}, data={"fmr": "1e-3"})
    err = check(r, "POST", "/api/v1/verify", 400)["error"]
    assert err["code"] == "validation_error" and mid in err["message"]
    r = env.server.request("PATCH", "/api/v1/collection", env.key[coll], json={"fmr": 1e-3})
    err = check(r, "PATCH", "/api/v1/collection", 400)["error"]
    assert err["code"] == "validation_error" and mid in err["message"]
    p = daemon_cmd("createcollection", f"{coll}-fmr", "--model", path, "--fmr", "1e-3",
                   db_url=env.db_url, env=env.model_env, check=False)
    assert p.returncode == 2 and "calibration" in p.stderr


def enrol(env, coll, lfw, person, numbers):
    s = env.server
    r = s.request("POST", "/api/v1/subjects", env.key[coll], json={"name": person})
    sid = check(r, "POST", "/api/v1/subjects", 201)["id"]
    faces = []
    for n in numbers:
        r = s.request("POST", f"/api/v1/subjects/{sid}/faces", env.key[coll],
                      files=image(photo(lfw, person, n)), data={"face": "largest"})
        faces.append(check(r, "POST", "/api/v1/subjects/1/faces", 201))
    return sid, faces


def identify(env, coll, path):
    r = env.server.request("POST", "/api/v1/identify", env.key[coll], files=image(path))
    return check(r, "POST", "/api/v1/identify", 200)


def test_enrol_identify_and_switch_models(env, models, lfw):
    s = env.server
    ids = {}
    for person in ENROL:
        sid, faces = enrol(env, "tuned", lfw, person, [1, 2])
        assert all(f["model"] == models.adapter_id for f in faces)
        ids[person] = sid
    plain_ids = {p: enrol(env, "plain", lfw, p, [1])[0] for p in ENROL}
    for person in ENROL:
        res = identify(env, "tuned", photo(lfw, person, 4))
        assert res["model"] == models.adapter_id
        top = res["faces"][0]
        assert top["match"] and top["match"]["id"] == ids[person], (person, top)
        assert top["templates"] == 2 * len(ENROL)
        # no FPIR calibration for a trained model: the k-NN vote
        assert res["decision"] == "knn_vote" and top["decision"] == "knn_vote"
    r = s.request("POST", "/api/v1/identify", env.key["tuned"],
                  files=image(photo(lfw, ENROL[0], 4)), data={"fpir": "0.01"})
    err = check(r, "POST", "/api/v1/identify", 400)["error"]
    assert err["code"] == "validation_error" and models.adapter_id in err["message"], err
    r = s.request("POST", f"/api/v1/subjects/{ids['Andre_Agassi']}/verify", env.key["tuned"],
                  files=image(photo(lfw, "Andre_Agassi", 3)))
    v = check(r, "POST", "/api/v1/subjects/1/verify", 200)
    assert v["verified"] and v["model"] == models.adapter_id
    assert get_collection(env, "tuned")["templates_needing_reenrolment"] == 0

    # back to the ResNet: every template of the adapter needs re-enrolment
    r = s.request("PATCH", "/api/v1/collection", env.key["tuned"],
                  json={"model": "dlib_resnet_v1"})
    sw = check(r, "PATCH", "/api/v1/collection", 200)
    assert sw["model"] == "dlib_resnet_v1" and sw["previous_model"] == models.adapter_id
    assert sw["templates"] == sw["templates_needing_reenrolment"] == 2 * len(ENROL)
    c = get_collection(env, "tuned")
    assert c["model"] == "dlib_resnet_v1" and c["templates_needing_reenrolment"] == 6
    # identify no longer searches them
    res = identify(env, "tuned", photo(lfw, "Abdullah_Gul", 4))
    assert res["model"] == "dlib_resnet_v1"
    assert res["faces"][0]["templates"] == 0 and res["faces"][0]["match"] is None
    # a verify against the old faces is refused, never a cross-model distance
    r = s.request("POST", f"/api/v1/subjects/{ids['Abdullah_Gul']}/verify", env.key["tuned"],
                  files=image(photo(lfw, "Abdullah_Gul", 3)))
    assert check(r, "POST", "/api/v1/subjects/1/verify", 409)["error"]["code"] == \
        "model_mismatch"
    q = [0.0] * 128
    q[0] = 1.0
    for path, body in [("/api/v1/identify/embeddings", {"embedding": q}),
                       ("/api/v1/verify/embeddings", {"embedding_a": q, "embedding_b": q}),
                       (f"/api/v1/subjects/{ids['Abdullah_Gul']}/faces", {"embedding": q})]:
        r = s.request("POST", path, env.key["tuned"], json=dict(body, model=models.adapter_id))
        assert check(r, "POST", path, 409)["error"]["code"] == "model_mismatch", path

    # unknown names are typed errors and change nothing
    for bad in [{"model": "no-such-model"}, {"model": ""}, {"model": 5},
                {"model": "dlib_resnet_v1", "colour": "red"}, {}]:
        r = s.request("PATCH", "/api/v1/collection", env.key["tuned"], json=bad)
        err = check(r, "PATCH", "/api/v1/collection", 400)["error"]["code"]
        assert err == ("unknown_model" if bad == {"model": "no-such-model"}
                       else "validation_error"), bad
    assert get_collection(env, "tuned") == c

    # re-enrolment under the ResNet is searched; switching back counts it
    r = s.request("POST", f"/api/v1/subjects/{ids['Abdullah_Gul']}/faces", env.key["tuned"],
                  files=image(photo(lfw, "Abdullah_Gul", 1)), data={"face": "largest"})
    assert check(r, "POST", "/api/v1/subjects/1/faces", 201)["model"] == "dlib_resnet_v1"
    res = identify(env, "tuned", photo(lfw, "Abdullah_Gul", 4))
    assert res["faces"][0]["templates"] == 1
    assert res["faces"][0]["match"]["id"] == ids["Abdullah_Gul"]
    c = get_collection(env, "tuned")
    assert (c["templates"], c["templates_needing_reenrolment"]) == (7, 6)
    r = s.request("PATCH", "/api/v1/collection", env.key["tuned"], json={"model": "tuned-adapter"})
    sw = check(r, "PATCH", "/api/v1/collection", 200)
    assert sw["model"] == models.adapter_id and sw["templates_needing_reenrolment"] == 1
    res = identify(env, "tuned", photo(lfw, "Andre_Agassi", 4))
    assert res["faces"][0]["templates"] == 6
    assert res["faces"][0]["match"]["id"] == ids["Andre_Agassi"]

    # the default-model collection on the same server saw none of it
    c = get_collection(env, "plain")
    assert c["model"] == "dlib_resnet_v1"
    assert (c["templates"], c["templates_needing_reenrolment"]) == (3, 0)
    for person in ENROL:
        res = identify(env, "plain", photo(lfw, person, 4))
        assert res["model"] == "dlib_resnet_v1" and res["faces"][0]["templates"] == 3
        assert res["faces"][0]["match"]["id"] == plain_ids[person], person
    r = s.request("GET", "/api/v1/audit?limit=50", env.key["tuned"])
    actions = [e["action"] for e in check(r, "GET", "/api/v1/audit", 200)["results"]]
    assert "collection.update" in actions


def test_createcollection_unknown_model(env, models):
    p = daemon_cmd("createcollection", "nope", "--model", "no-such-model", db_url=env.db_url,
                   env=env.model_env, check=False)
    assert p.returncode == 2 and "no model named 'no-such-model'" in p.stderr
    p = daemon_cmd("createcollection", "nope", "--if-missing", db_url=env.db_url,
                   env=env.model_env)
    assert "created collection 'nope'" in p.stdout  # the failed attempt made nothing
    # rotatekey replaces the key only: a model or backend given to it is refused, not ignored.
    for extra in (("--model", "dlib_resnet_v1"), ("--index-backend", "exact-int8")):
        p = daemon_cmd("rotatekey", "nope", *extra, db_url=env.db_url, env=env.model_env,
                       check=False)
        assert p.returncode == 2 and "PATCH /api/v1/collection" in p.stderr, p.stderr


def test_missing_model_file_is_unavailable_not_wrong(env, models, lfw):
    """Started without the models dir: collections on a trained model answer
    503 model_unavailable; the default-model collection is served."""
    other = Server(env.db_url)
    try:
        a = photo(lfw, "Abdullah_Gul", 1)
        for path, f in [("/api/v1/identify", image(a)),
                        ("/api/v1/verify", {"image_a": (a.name, a.read_bytes()),
                                            "image_b": (a.name, a.read_bytes())})]:
            r = other.request("POST", path, env.key["tuned"], files=f)
            assert check(r, "POST", path, 503)["error"]["code"] == "model_unavailable"
            r = other.request("POST", path, env.key["plain"], files=f)
            assert r.status_code == 200, r.text
        r = other.request("GET", "/api/v1/models", env.key["plain"])
        assert [m["id"] for m in check(r, "GET", "/api/v1/models", 200)["results"]] == \
            ["dlib_resnet_v1"]
        r = other.request("PATCH", "/api/v1/collection", env.key["plain"],
                          json={"model": "tuned-adapter"})
        assert check(r, "PATCH", "/api/v1/collection", 400)["error"]["code"] == "unknown_model"
    finally:
        assert other.stop() == 0


def test_collection_reports_the_threshold_in_force(env, models):
    """GET /api/v1/collection reports the threshold that decides: the
    model's calibrated one where the model is loaded.  On a server without
    the models dir the model is not loaded: the threshold is null and
    model_available false, never the engine's (which means nothing in the
    trained model's space); the default-model collection is unaffected."""
    tiny = get_collection(env, "tiny")
    assert tiny["model_available"] is True
    assert tiny["threshold"] == pytest.approx(models.scratch_threshold, rel=1e-6)
    plain = get_collection(env, "plain")
    assert plain["model_available"] is True
    other = Server(env.db_url)
    try:
        r = other.request("GET", "/api/v1/collection", env.key["tiny"])
        c = check(r, "GET", "/api/v1/collection", 200)
        assert c["model"] == models.scratch_id and c["model_available"] is False
        assert c["threshold"] is None and c["threshold_override"] is None
        r = other.request("GET", "/api/v1/collection", env.key["plain"])
        c = check(r, "GET", "/api/v1/collection", 200)
        assert c["model_available"] is True
        assert c["threshold"] == pytest.approx(plain["threshold"])
    finally:
        assert other.stop() == 0


def test_per_collection_index_backend(env, models, lfw):
    """A collection's own search backend (PATCH index_backend, or
    createcollection --index-backend) is used for its searches with the
    same answers; the server's --index-backend stays the default."""
    s = env.server
    c = get_collection(env, "tuned")
    assert c["index_backend"] is None and c["index_backend_in_force"] == "exact"
    probe = photo(lfw, "Angelina_Jolie", 4)
    before = identify(env, "tuned", probe)["faces"][0]
    r = s.request("PATCH", "/api/v1/collection", env.key["tuned"],
                  json={"index_backend": "exact-int8"})
    body = check(r, "PATCH", "/api/v1/collection", 200)
    assert body["index_backend"] == body["index_backend_in_force"] == "exact-int8"
    assert body["model"] == c["model"]  # only what was sent changes
    after = identify(env, "tuned", probe)["faces"][0]
    # exact-int8 re-ranks in float32: the same candidates and distances
    assert [x["id"] for x in after["candidates"]] == [x["id"] for x in before["candidates"]]
    for x, y in zip(after["candidates"], before["candidates"]):
        assert x["distance"] == pytest.approx(y["distance"], abs=1e-6)
    assert after["templates"] == before["templates"]
    for bad in [{"index_backend": "nope"}, {"index_backend": 3},
                {"index_backend": "exact", "model": "no-such-model"}]:
        r = s.request("PATCH", "/api/v1/collection", env.key["tuned"], json=bad)
        assert check(r, "PATCH", "/api/v1/collection", 400)["error"]["code"] in \
            ("validation_error", "unknown_model"), bad
    assert get_collection(env, "tuned")["index_backend"] == "exact-int8"
    assert get_collection(env, "plain")["index_backend_in_force"] == "exact"
    r = s.request("PATCH", "/api/v1/collection", env.key["tuned"], json={"index_backend": None})
    body = check(r, "PATCH", "/api/v1/collection", 200)
    assert body["index_backend"] is None and body["index_backend_in_force"] == "exact"
    assert identify(env, "tuned", probe)["faces"][0]["match"]["id"] == before["match"]["id"]

    key = create_collection(env.db_url, "hnsw", "--index-backend", "faiss-hnsw")
    r = s.request("GET", "/api/v1/collection", key)
    assert check(r, "GET", "/api/v1/collection", 200)["index_backend"] == "faiss-hnsw"
    r = s.request("POST", "/api/v1/subjects", key, json={"name": "one"})
    sid = check(r, "POST", "/api/v1/subjects", 201)["id"]
    q = [0.0] * 128
    q[3] = 1.0
    r = s.request("POST", f"/api/v1/subjects/{sid}/faces", key, json={"embedding": q})
    check(r, "POST", "/api/v1/subjects/1/faces", 201)
    r = s.request("POST", "/api/v1/identify/embeddings", key, json={"embedding": q})
    res = check(r, "POST", "/api/v1/identify/embeddings", 200)["results"][0]
    assert res["match"]["id"] == sid and res["match"]["distance"] == pytest.approx(0, abs=1e-6)


def test_index_files_per_model(env, models, lfw, tmp_path):
    """With --index-dir, a collection on a trained model persists its index
    under a name carrying the model id (the ResNet's keep their names), and
    a restart loads it and answers the same."""
    d = tmp_path / "idx"
    menv = dict(env.model_env, FACEVERIFY_INDEX_DIR=str(d))
    probe = photo(lfw, "Andre_Agassi", 4)
    answers = []
    for _ in range(2):
        srv = Server(env.db_url, env=menv)
        try:
            res = srv.request("POST", "/api/v1/identify", env.key["tuned"], files=image(probe))
            answers.append(check(res, "POST", "/api/v1/identify", 200)["faces"][0])
        finally:
            assert srv.stop() == 0
    assert answers[0]["match"] and answers[0] == answers[1]
    names = os.listdir(d)
    assert any(n.endswith(f"-{models.adapter_id}.exact.idx") for n in names), names
    assert any(n.endswith(f"-{models.scratch_id}.exact.idx") for n in names), names
