"""Bulk enrolment and moving a collection (faceverifyd import / export, POST
/api/v1/subjects/{id}/faces/batch), on SQLite and, when FACEVERIFY_PG_URL
names one, PostgreSQL.

A folder tree is built in tmp from LFW people plus the rejects the report
must name (a photo without a face, a truncated JPEG, a group photo, a file
outside any person folder); the import runs while a server is up, which
must then find the people.  Round trips enrol known embeddings through the
batch endpoint, so that the export file can be searched for their bytes and
the moved templates compared by their search distances."""
import base64
import json
import os
import random
import shutil
import stat
import struct
import subprocess

import pytest

import fvserver
from conftest import DATA, need
from fvserver import (Server, check, create_collection, daemon_cmd, new_db_url,
                      reset_pg)

BACKENDS = ["sqlite", "postgres"]
PEOPLE = ["Colin_Powell", "George_W_Bush", "Tony_Blair"]
REJECTS_EXIT = 3


def lfw(person: str, n: int):
    return need(DATA / "lfw" / person / f"{person}_{n:04d}.jpg")


def sample(rel: str):
    return need(DATA / "samples" / rel)


def build_tree(root):
    """3 people x 3 LFW photos, and four photos that must be rejected."""
    for p in PEOPLE:
        (root / p).mkdir(parents=True)
        for i in (1, 2, 3):
            shutil.copy(lfw(p, i), root / p)
    shutil.copy(sample("skimage/coffee.png"), root / "Tony_Blair" / "coffee.png")
    shutil.copy(sample("openface/longoria-cooper.jpg"), root / "Colin_Powell" / "group.jpg")
    data = lfw("George_W_Bush", 4).read_bytes()
    (root / "George_W_Bush" / "broken.jpg").write_bytes(data[: len(data) // 3])
    shutil.copy(sample("skimage/coffee.png"), root / "stray.png")
    (root / "Tony_Blair" / "deeper").mkdir()  # not read: one level only
    shutil.copy(lfw("Tony_Blair", 9), root / "Tony_Blair" / "deeper")


def run_import(url, *args, env=None):
    return daemon_cmd("import", *args, db_url=url, env=env, check=False, timeout=600)


def import_json(url, coll, tree, env=None):
    p = run_import(url, coll, tree, "--json", env=env)
    assert p.returncode in (0, REJECTS_EXIT), (p.returncode, p.stderr)
    return p.returncode, json.loads(p.stdout)


def subjects(srv, key):
    r = srv.request("GET", "/api/v1/subjects?limit=100", key)
    return {s["name"]: s for s in check(r, "GET", "/api/v1/subjects", 200)["results"]}


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    url = new_db_url(request.param, tmp_path)
    daemon_cmd("migrate", db_url=url)
    return url


def test_folder_import_is_idempotent_and_reports_rejects(db, tmp_path):
    tree = tmp_path / "tree"
    build_tree(tree)
    key = create_collection(db, "people")
    srv = Server(db)
    try:
        rc, rep = import_json(db, "people", tree)
        assert rc == REJECTS_EXIT
        assert (rep["photos"], rep["enrolled"], rep["skipped"], rep["rejected"]) == (13, 9, 0, 4)
        assert rep["subjects_created"] == 3 and rep["collection"] == "people"
        reasons = {os.path.basename(r["path"]): r["reason"] for r in rep["rejects"]}
        assert reasons == {"group.jpg": "multiple_faces", "broken.jpg": "invalid_image",
                           "coffee.png": "no_face", "stray.png": "no_subject_folder"}
        subs = subjects(srv, key)
        assert {n: s["faces"] for n, s in subs.items()} == {p: 3 for p in PEOPLE}
        # The running server sees the new faces: a photo not enrolled is found.
        probe = lfw("Tony_Blair", 5)
        r = srv.request("POST", "/api/v1/identify", key,
                        files={"image": (probe.name, probe.read_bytes())})
        face = check(r, "POST", "/api/v1/identify", 200)["faces"][0]
        assert face["match"] is not None and face["match"]["name"] == "Tony_Blair"

        # A re-run adds nothing and says so.
        rc, rep = import_json(db, "people", tree)
        assert (rc, rep["enrolled"], rep["skipped"], rep["rejected"]) == (REJECTS_EXIT, 0, 9, 4)
        assert rep["subjects_created"] == 0

        # One new photo: exactly one more face.
        shutil.copy(lfw("Tony_Blair", 6), tree / "Tony_Blair")
        rc, rep = import_json(db, "people", tree)
        assert (rep["enrolled"], rep["skipped"], rep["rejected"]) == (1, 9, 4)
        assert subjects(srv, key)["Tony_Blair"]["faces"] == 4

        # Without the rejects, everything is in or skipped: exit 0, and the
        # text report.
        for f in ("Tony_Blair/coffee.png", "Colin_Powell/group.jpg", "George_W_Bush/broken.jpg",
                  "stray.png"):
            (tree / f).unlink()
        p = run_import(db, "people", tree)
        assert p.returncode == 0, p.stderr
        assert "10 photos: 0 enrolled, 10 skipped (already enrolled), 0 rejected" in p.stdout

        # --largest enrols the group photo's largest face instead.
        shutil.copy(sample("openface/longoria-cooper.jpg"), tree / "Colin_Powell" / "group.jpg")
        p = run_import(db, "people", tree)
        assert p.returncode == REJECTS_EXIT and "group.jpg: multiple_faces" in p.stdout
        p = run_import(db, "people", tree, "--largest", "--json")
        rep = json.loads(p.stdout)
        assert p.returncode == 0 and (rep["enrolled"], rep["skipped"]) == (1, 10)

        r = srv.request("GET", "/api/v1/audit?limit=100", key)
        actions = [e["action"] for e in check(r, "GET", "/api/v1/audit", 200)["results"]]
        assert actions.count("face.import") == 6
    finally:
        assert srv.stop() == 0


def test_import_usage_and_missing_collection(db, tmp_path):
    p = run_import(db, "nobody", tmp_path)
    assert p.returncode == 1 and "no collection 'nobody'" in p.stderr
    p = run_import(db, "x")
    assert p.returncode == 2
    create_collection(db, "c")
    p = run_import(db, "c", tmp_path / "absent")
    assert p.returncode == 1 and "absent" in p.stderr


def test_quality_gate_and_force(db, tmp_path):
    """A gate above every face rejects all as low_quality; --force enrols."""
    tree = tmp_path / "t"
    (tree / "Tony_Blair").mkdir(parents=True)
    shutil.copy(lfw("Tony_Blair", 1), tree / "Tony_Blair")
    create_collection(db, "q", "--min-quality", "1")
    p = run_import(db, "q", tree, "--json")
    rep = json.loads(p.stdout)
    assert p.returncode == REJECTS_EXIT and rep["rejects"][0]["reason"] == "low_quality"
    p = run_import(db, "q", tree, "--min-quality", "0.1", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["enrolled"] == 1


# ------------------------------------------------------------ batch endpoint

def unit(rng):
    v = [rng.gauss(0, 1) for _ in range(128)]
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


def test_batch_endpoint_typed_per_item(db):
    key = create_collection(db, "b")
    srv = Server(db)
    try:
        r = srv.request("POST", "/api/v1/subjects", key, json={"name": "Tony_Blair"})
        sid = check(r, "POST", "/api/v1/subjects", 201)["id"]
        path = f"/api/v1/subjects/{sid}/faces/batch"
        broken = lfw("George_W_Bush", 4).read_bytes()[:4000]
        parts = {"image1": ("a.jpg", lfw("Tony_Blair", 1).read_bytes()),
                 "image2": ("c.png", sample("skimage/coffee.png").read_bytes()),
                 "image3": ("b.jpg", broken),
                 "image4": ("g.jpg", sample("openface/longoria-cooper.jpg").read_bytes()),
                 "image5": ("d.jpg", lfw("Tony_Blair", 2).read_bytes())}
        body = check(srv.request("POST", path, key, files=parts), "POST", path, 200)
        assert (body["count"], body["enrolled"], body["failed"]) == (5, 2, 3)
        got = [(x["index"], x["field"], x["status"],
                x["error"]["code"] if "error" in x else None) for x in body["results"]]
        assert got == [(0, "image1", 201, None), (1, "image2", 422, "no_face"),
                       (2, "image3", 400, "invalid_image"), (3, "image4", 422, "multiple_faces"),
                       (4, "image5", 201, None)]
        assert body["results"][0]["face"]["subject_id"] == sid
        r = srv.request("GET", f"/api/v1/subjects/{sid}/faces", key)
        assert check(r, "GET", "/api/v1/subjects/1/faces", 200)["count"] == 2

        rng = random.Random(7)
        embs = [unit(rng), [0.0] * 127, unit(rng)]
        body = check(srv.request("POST", path, key, json={"embeddings": embs}), "POST", path, 200)
        assert [x["status"] for x in body["results"]] == [201, 400, 201]
        assert body["results"][1]["error"]["code"] == "validation_error"
        assert "embeddings[1]" in body["results"][1]["error"]["message"]

        # Request-wide problems are the request's own status.
        check(srv.request("POST", "/api/v1/subjects/999/faces/batch", key,
                          json={"embeddings": embs[:1]}), "POST", path, 404)
        check(srv.request("POST", path, key, json={"embeddings": []}), "POST", path, 400)
        check(srv.request("POST", path, key, files={"other": ("x", b"x")}), "POST", path, 400)
        check(srv.request("POST", path, json={"embeddings": embs[:1]}), "POST", path, 401)
        r = srv.request("GET", "/api/v1/audit?limit=5", key)
        e = [e for e in check(r, "GET", "/api/v1/audit", 200)["results"]
             if e["action"] == "face.enroll_batch" and e["status"] == 200][0]
        assert e["detail"]["items"] == 3 and len(e["detail"]["face_ids"]) == 2
    finally:
        assert srv.stop() == 0


# ------------------------------------------------------------ export / import

def fresh_db(backend_url, tmp_path, name):
    """Another empty, migrated database: a new SQLite file, or the same
    PostgreSQL database emptied (the server on it must be stopped)."""
    if backend_url.startswith("sqlite"):
        url = f"sqlite://{tmp_path / name}"
    else:
        reset_pg(backend_url)
        url = backend_url
    daemon_cmd("migrate", db_url=url)
    return url


def distances(srv, key, probes):
    out = []
    for q in probes:
        r = srv.request("POST", "/api/v1/identify/embeddings", key,
                        json={"embedding": q, "threshold": 2.0, "k": 7, "top_k": 10})
        res = check(r, "POST", "/api/v1/identify/embeddings", 200)["results"][0]
        out.append([(c["name"], round(c["distance"], 5)) for c in res["candidates"]])
    return out


def faces_of(srv, key):
    out = {}
    for name, s in subjects(srv, key).items():
        r = srv.request("GET", f"/api/v1/subjects/{s['id']}/faces", key)
        fl = check(r, "GET", "/api/v1/subjects/1/faces", 200)["results"]
        out[name] = [(f["model"], f["box"], f["score"], f["quality_score"], f["created_at"])
                     for f in fl]
    return out


def strip(doc):
    """An export without what legitimately differs between two exports
    (the time; sealed templates' random nonces)."""
    doc = json.loads(json.dumps(doc))
    doc.pop("exported_at")
    doc["collection"].pop("name")
    if doc["templates"]["encoding"] == "sealed":
        for s in doc["subjects"]:
            for f in s["faces"]:
                f.pop("template")
    return doc


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_export_import_round_trip(db, tmp_path, sealed):
    k1 = daemon_cmd("genkey", db_url=db).stdout.strip()
    k2 = daemon_cmd("genkey", db_url=db).stdout.strip()
    env = {"FACEVERIFY_TEMPLATE_KEY": k1} if sealed else {}
    key = create_collection(db, "src", "--fmr", "1e-4", "--fpir", "0.01",
                            "--min-quality", "0.3")
    rng = random.Random(11)
    embs = {}
    srv = Server(db, env=env)
    try:
        for i, name in enumerate(["ada", "bob", "cy"]):
            r = srv.request("POST", "/api/v1/subjects", key,
                            json={"name": name, "metadata": {"n": i, "tag": name.upper()}})
            sid = check(r, "POST", "/api/v1/subjects", 201)["id"]
            embs[name] = [unit(rng) for _ in range(i + 1)]
            path = f"/api/v1/subjects/{sid}/faces/batch"
            body = check(srv.request("POST", path, key, json={"embeddings": embs[name]}),
                         "POST", path, 200)
            assert body["enrolled"] == i + 1
        # one real photo too: a box, score and quality to carry over
        probe = lfw("Tony_Blair", 1)
        r = srv.request("POST", f"/api/v1/subjects/{sid}/faces", key,
                        files={"image": (probe.name, probe.read_bytes())})
        check(r, "POST", "/api/v1/subjects/1/faces", 201)
        probes = [unit(rng)] + [e for v in embs.values() for e in v]
        before_d = distances(srv, key, probes)
        before_f = faces_of(srv, key)
        before_s = {n: s["metadata"] for n, s in subjects(srv, key).items()}
        before_c = check(srv.request("GET", "/api/v1/collection", key), "GET",
                         "/api/v1/collection", 200)
    finally:
        assert srv.stop() == 0

    out = tmp_path / "src.json"
    p = daemon_cmd("export", "src", out, db_url=db, env=env)
    assert "PLAINTEXT" in p.stdout if not sealed else "sealed" in p.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    raw = out.read_bytes()
    doc = json.loads(raw)
    assert doc["format"] == "faceverify-export" and doc["version"] == 1
    assert doc["templates"]["encoding"] == ("sealed" if sealed else "plain")
    first = struct.pack("<128f", *embs["ada"][0])
    in_file = first in raw or base64.b64encode(first) in raw
    stored = base64.b64decode(doc["subjects"][0]["faces"][0]["template"])
    if sealed:
        assert not in_file and first not in stored and len(stored) == 556
    else:
        assert in_file and stored == first
    # an export never overwrites
    p = daemon_cmd("export", "src", out, db_url=db, env=env, check=False)
    assert p.returncode == 1 and "never overwrites" in p.stderr

    url2 = fresh_db(db, tmp_path, "moved.db")
    if sealed:
        # No key, or another key: refused, nothing written.
        for bad_env, why in (({}, "sealed"), ({"FACEVERIFY_TEMPLATE_KEY": k2}, "decrypt")):
            p = daemon_cmd("import", "dst", "--from", out, db_url=url2, env=bad_env,
                           check=False)
            assert p.returncode == 1 and why in p.stderr, p.stderr
        p = daemon_cmd("createcollection", "probe", db_url=url2)
        p = daemon_cmd("import", "probe", "--from", out, db_url=url2, env=env, check=False)
        assert p.returncode == 1 and "--merge" in p.stderr
    p = daemon_cmd("import", "dst", "--from", out, db_url=url2, env=env)
    key2 = p.stdout.strip().splitlines()[-2]
    assert key2.startswith("fvk_"), p.stdout
    assert "3 subjects (3 new), 7 faces" in p.stdout

    srv = Server(url2, env=env)
    try:
        assert distances(srv, key2, probes) == before_d
        assert faces_of(srv, key2) == before_f
        assert {n: s["metadata"] for n, s in subjects(srv, key2).items()} == before_s
        after_c = check(srv.request("GET", "/api/v1/collection", key2), "GET",
                        "/api/v1/collection", 200)
        for k in ("model", "fmr", "fpir", "min_quality", "threshold_override", "templates"):
            assert after_c[k] == before_c[k], k
    finally:
        assert srv.stop() == 0

    # Exporting the copy gives the same document: nothing was lost.
    out2 = tmp_path / "dst.json"
    daemon_cmd("export", "dst", out2, db_url=url2, env=env)
    assert strip(json.loads(out2.read_bytes())) == strip(doc)

    # --merge into an existing collection: subjects matched by name.
    p = daemon_cmd("import", "dst", "--from", out, "--merge", db_url=url2, env=env)
    assert "3 subjects (0 new), 7 faces" in p.stdout
    audit = daemon_cmd("audit", "dst", db_url=url2).stdout
    assert audit.count('"collection.import"') == 2 and '"collection.export"' in audit


def test_import_refuses_a_bad_file(db, tmp_path):
    bad = tmp_path / "bad.json"
    for text, why in (("{", "line"), ('{"format": "other", "version": 1}', "not a faceverify"),
                      ('{"format": "faceverify-export", "version": 2}', "version"),
                      (json.dumps({"format": "faceverify-export", "version": 1,
                                   "templates": {"encoding": "plain"},
                                   "collection": {"model": "dlib_resnet_v1"},
                                   "subjects": [{"name": "a", "metadata": None, "faces": [
                                       {"model": "dlib_resnet_v1", "template": "AAAA",
                                        "box": {"left": 0, "top": 0, "right": 1, "bottom": 1},
                                        "score": 1, "quality": None, "created_at": 1}]}]}),
                       "subjects[0].faces[0]: template"),
                      (json.dumps({"format": "faceverify-export", "version": 1,
                                   "templates": {"encoding": "plain"},
                                   "collection": {"model": "dlib_resnet_v1"},
                                   "subjects": [{"name": "a", "faces": [],
                                                 "metadata": {"d": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}}]}),
                       "nested deeper than 16"),
                      (json.dumps({"format": "faceverify-export", "version": 1,
                                   "templates": {"encoding": "plain"},
                                   "collection": {"model": "dlib_resnet_v1"},
                                   "subjects": [{"name": "a", "faces": []},
                                                {"name": "a", "faces": []}]}),
                       "subjects[1]: expected")):
        bad.write_text(text)
        p = daemon_cmd("import", "x", "--from", bad, db_url=db, check=False)
        assert p.returncode == 1 and why in p.stderr, (text, p.stderr)
    p = daemon_cmd("audit", db_url=db)
    assert p.stdout == ""  # nothing was made


def test_duplicate_warning_and_progress_bar(db, tmp_path):
    """Another photo of an enrolled person under a second name is enrolled
    with a duplicate warning naming the first (the API's on_duplicate=warn);
    on a terminal the run draws a progress bar on stderr."""
    tree = tmp_path / "t"
    (tree / "Tony_Blair").mkdir(parents=True)
    for i in (1, 2):
        shutil.copy(lfw("Tony_Blair", i), tree / "Tony_Blair")
    create_collection(db, "d")
    assert run_import(db, "d", tree).returncode == 0
    (tree / "Blair_Again").mkdir()
    shutil.copy(lfw("Tony_Blair", 7), tree / "Blair_Again")
    p = run_import(db, "d", tree, "--json")
    rep = json.loads(p.stdout)
    assert p.returncode == 0 and rep["enrolled"] == 1 and rep["duplicate_warnings"] == 1
    w = rep["warnings"][0]
    assert w["subject"] == "Blair_Again" and w["matches"]["name"] == "Tony_Blair"
    if not shutil.which("script"):
        pytest.skip("script(1) is not installed: no terminal to test the progress bar on")
    cmd = " ".join(map(str, [fvserver.DAEMON, "import", "d", tree]))
    env = dict(os.environ, FACEVERIFY_DATABASE_URL=db, FACEVERIFY_MODELS=str(fvserver.MODELS))
    out = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True,
                         env=env, timeout=300).stdout
    assert "[##############################] 3/3  enrolled 0  skipped 3  rejected 0" in out
