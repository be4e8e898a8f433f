"""Clustering faces into people: `faceverify cluster DIR` and POST
/api/v1/faces/cluster (src/search/cluster.c).

The CLI runs on a small real folder (LFW people whose photos group well,
a stranger, and a photo with two faces) and must put each person's
photos, and only them, in one cluster, largest first, with the others as
noise and the two-face photo's faces named by box.  The API gets the same
people as photos, known synthetic people as embeddings, and bad input:
a malformed embedding is 400, more than the limit is 413 naming it, a
bad option is 400.  Clustering writes nothing to storage, so SQLite
alone serves the server here."""
import json
import random
import shutil

import pytest

import fvserver
from conftest import DATA, need, run_cli, run_json
from fvserver import check, collection_server

# Photos whose faces lie well within the default link distance of each
# other (checked on the LFW embeddings) and far from everyone else's.
PEOPLE = {
    "Colin_Powell": [1, 2, 4, 5],
    "Junichiro_Koizumi": [1, 2, 3],
    "Serena_Williams": [1, 2, 4],
}
STRANGER = ("AJ_Cook", 1)


def lfw(person, n):
    return need(DATA / "lfw" / person / f"{person}_{n:04d}.jpg")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for person, nums in PEOPLE.items():
        (root / "people" / person).mkdir(parents=True)
        for n in nums:
            shutil.copy(lfw(person, n), root / "people" / person)
    shutil.copy(lfw(*STRANGER), root)
    shutil.copy(need(DATA / "samples" / "openface" / "longoria-cooper.jpg"), root / "two.jpg")
    (root / "notes.txt").write_text("not a photo")
    (root / ".hidden.jpg").write_bytes(b"never read")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def person_of(face):
    return face["image"].split("/")[-2] if "/people/" in face["image"] else face["image"]


def test_cli_groups_people(folder):
    res = run_json("cluster", folder, "--threads", "2")
    assert [len(c) for c in res["clusters"]] == [4, 3, 3]
    # each cluster is one person, complete; ties in size: walk order
    assert [{person_of(f) for f in c} for c in res["clusters"]] == [
        {"Colin_Powell"}, {"Junichiro_Koizumi"}, {"Serena_Williams"}]
    for f in (f for c in res["clusters"] for f in c):
        assert set(f) == {"image"}  # one face per photo: just its path
        assert f["image"].startswith(str(folder) + "/people/")
    # the stranger and both faces of the two-face photo are noise, the
    # latter named by face index and box
    noise = res["noise"]
    assert {"image": f"{folder}/AJ_Cook_0001.jpg"} in noise
    two = [f for f in noise if f["image"].endswith("/two.jpg")]
    assert sorted(f["face"] for f in two) == [0, 1]
    for f in two:
        assert f["box"]["right"] > f["box"]["left"] and f["box"]["bottom"] > f["box"]["top"]
    assert res["images"] == 13 and res["faces"] == 13
    assert [s["image"] for s in res["skipped"]] == [f"{folder}/broken.jpg"]
    assert res["operating_point"]["fmr"] == 3e-5
    assert 0.4 < res["operating_point"]["threshold"] < 0.5
    assert res["method"] == "chinese-whispers"


def test_cli_min_size_and_strictness(folder):
    # --min-size 4: only Powell's cluster is big enough
    res = run_json("cluster", folder, "--min-size", "4")
    assert [len(c) for c in res["clusters"]] == [4]
    assert len(res["noise"]) == 13 - 4
    # a link distance no pair is within: everything is noise
    res = run_json("cluster", folder, "--threshold", "0.01")
    assert res["clusters"] == [] and len(res["noise"]) == 13
    # text output names the clusters too
    p = run_cli("cluster", folder, "--min-cluster-size", "4", check=0)
    assert p.stdout.startswith("1 cluster of 13 faces in 13 photos")


def test_cli_errors(tmp_path):
    p = run_cli("cluster", tmp_path / "absent", "--json", check=2)
    assert json.loads(p.stdout)["error"]["code"] == "io_error"
    run_cli("cluster", tmp_path, "--fmr", "0.5", check=2)
    run_cli("cluster", tmp_path, "--min-size", "0", check=2)
    run_cli("cluster", check=2)
    # an empty folder: no clusters, exit 0
    assert run_json("cluster", tmp_path)["clusters"] == []


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv, key, _ = collection_server("sqlite", tmp_path_factory.mktemp("db"), "c",
                                    max_body=4_000_000)
    yield srv, key
    assert srv.stop() == 0


PATH = "/api/v1/faces/cluster"


def test_api_photos(server):
    srv, key = server
    files = {}
    for person in ("Colin_Powell", "Junichiro_Koizumi"):
        for i, n in enumerate(PEOPLE[person][:3]):
            files[f"image{len(files) + 1}"] = (f"{person}{n}.jpg", lfw(person, n).read_bytes())
    files["image7"] = ("two.jpg", need(DATA / "samples" / "openface" / "longoria-cooper.jpg")
                       .read_bytes())
    files["image8"] = ("bad.jpg", b"not an image")
    body = check(srv.request("POST", PATH, key, files=files, data={"min_cluster_size": "2"}),
                 "POST", PATH, 200)
    groups = [sorted(f["image"] for f in c) for c in body["clusters"]]
    assert groups == [["image1", "image2", "image3"], ["image4", "image5", "image6"]]
    for f in body["clusters"][0]:
        assert f["face"] == 0 and set(f["box"]) == {"left", "top", "right", "bottom"}
        assert 0 <= f["quality"]["score"] <= 1
    assert sorted(f["face"] for f in body["noise"] if f["image"] == "image7") == [0, 1]
    assert [s["image"] for s in body["skipped"]] == ["image8"]
    assert body["skipped"][0]["status"] == 400
    assert body["count"] == 8 and body["images"] == 8


def synthetic_people(sizes, seed=5):
    """Embeddings of len(sizes) made-up people, about 0.2 apart within a
    person and 1.1 across, in a shuffled order; and each one's person."""
    r = random.Random(seed)

    def unit(scale):
        v = [r.gauss(0, 1) for _ in range(128)]
        n = sum(x * x for x in v) ** 0.5
        return [x * scale / n for x in v]
    items = []
    for p, size in enumerate(sizes):
        c = unit(0.8)
        items += [([a + b for a, b in zip(c, unit(0.2))], p) for _ in range(size)]
    r.shuffle(items)
    return [e for e, _ in items], [p for _, p in items]


def test_api_embeddings(server):
    srv, key = server
    embs, truth = synthetic_people([6, 4, 1])
    body = check(srv.request("POST", PATH, key, json={"embeddings": embs}), "POST", PATH, 200)
    got = [sorted(f["embedding"] for f in c) for c in body["clusters"]]
    want = [sorted(i for i, p in enumerate(truth) if p == q) for q in (0, 1)]
    assert got == want
    assert [f["embedding"] for f in body["noise"]] == [truth.index(2)]
    assert body["operating_point"]["fmr"] == 3e-5 and body["method"] == "chinese-whispers"
    # min_cluster_size 5 and a query-string fmr
    body = check(srv.request("POST", PATH + "?fmr=1e-3", key,
                             json={"embeddings": embs, "min_cluster_size": 5}),
                 "POST", PATH, 200)
    assert [len(c) for c in body["clusters"]] == [6] and len(body["noise"]) == 5
    assert body["operating_point"]["fmr"] == 1e-3
    # none at all: no clusters
    body = check(srv.request("POST", PATH, key, json={"embeddings": []}), "POST", PATH, 200)
    assert body["clusters"] == [] and body["noise"] == []


def test_api_errors(server):
    srv, key = server
    embs, _ = synthetic_people([2])

    def err(resp, status):
        body = check(resp, "POST", PATH, status)
        return body["error"]["message"]
    assert "embeddings[1]" in err(srv.request(
        "POST", PATH, key, json={"embeddings": [embs[0], embs[1][:127]]}), 400)
    assert "embeddings[0][3]" in err(srv.request(
        "POST", PATH, key, json={"embeddings": [embs[0][:3] + ["x"] + embs[0][4:]]}), 400)
    assert "embeddings[0][0]" in err(srv.request(
        "POST", PATH, key, json={"embeddings": [[1e300] + embs[0][1:]]}), 400)
    assert "array" in err(srv.request("POST", PATH, key, json={"embeddings": 3}), 400)
    too_many = json.dumps({"embeddings": [[0] * 128] * 501}, separators=(",", ":"))
    msg = err(srv.request("POST", PATH, key, data=too_many,
                          headers={"Content-Type": "application/json"}), 413)
    assert "501 sent" in msg and "at most 500" in msg
    assert "fmr" in err(srv.request("POST", PATH, key, json={"embeddings": embs, "fmr": 0.5}),
                        400)
    assert "min_cluster_size" in err(srv.request(
        "POST", PATH, key, json={"embeddings": embs, "min_cluster_size": 1.5}), 400)
    assert "source" in err(srv.request("POST", PATH, key, json={"source": "nowhere"}), 400)
    assert "image1" in err(srv.request("POST", PATH, key, json={}), 400)
    assert err(srv.request("POST", PATH, key, json={"embeddings": embs, "model": "other"}),
               409)
    check(srv.request("POST", PATH, None, json={"embeddings": embs}), "POST", PATH, 401)
    # audited like every route
    audit = srv.request("GET", "/api/v1/audit?limit=5", key).json()
    assert any(e.get("action") == "face.cluster" for e in audit.get("results", audit.get("entries", [])))
