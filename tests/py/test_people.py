"""Unassigned faces and subject surgery (issue 19 part 3), against real
faceverifyd processes on SQLite and PostgreSQL.

- POST /faces stores faces without a subject (a photo's every face, the
  largest, or a bare embedding); GET /faces?unassigned=true lists them;
  DELETE /faces/{id} deletes any face of the collection.  Identify never
  matches an unassigned face.
- POST /faces/assign names faces into a new or an existing subject, moves
  a face between subjects and splits a subject; POST /subjects/{id}/merge
  folds one subject into another.  Identify answers follow each step.
- One transaction each: a request naming a face that is not the
  collection's moves nothing.  Another key can neither see nor move nor
  delete the collection's faces.
- Two processes on one database (an SQLite file, a PostgreSQL database;
  the second PostgreSQL node on LISTEN/NOTIFY sync): a move made through
  one is in the next identify answers of the other.
- Migration 8 on an SQLite file of schema 7 keeps every face, its id and
  the id counter (a deleted face's id is never handed out again).

Embeddings are random unit vectors (a probe is one of them plus a little
noise, far nearer to it than to any other), so storage and the index are
tested without the neural network; one test runs real photos through it.
"""
import random
import sqlite3
import time

import pytest
import requests

from conftest import DATA, need
from fvserver import Server, check, create_collection, daemon_cmd, new_db_url, two_collections

API = "/api/v1"
DBS = ["sqlite", "postgres"]


def unit(rnd):
    v = [rnd.gauss(0, 1) for _ in range(128)]
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


def near(v, rnd, eps=0.01):
    return [x + rnd.gauss(0, eps) for x in v]


def call(srv, method, path, key, status, **kw):
    """The request's answer, checked against openapi.json and status."""
    return check(srv.request(method, API + path, key, **kw), method, API + path, status)


def add_unassigned(srv, key, vec):
    body = call(srv, "POST", "/faces", key, 201, json={"embedding": vec})
    assert body["count"] == 1 and body["faces"][0]["quality"] is None, body
    return body["faces"][0]["face_id"]


def new_subject(srv, key, name, vecs=()):
    sid = call(srv, "POST", "/subjects", key, 201, json={"name": name})["id"]
    for v in vecs:
        call(srv, "POST", f"/subjects/{sid}/faces", key, 201, json={"embedding": v})
    return sid


def who(srv, key, probe):
    """The subject id identify matches probe to (k-NN vote at threshold
    0.3: the noisy copy of a stored vector is within 0.15 of it, any other
    random unit vector about 1.4 away), or None."""
    body = call(srv, "POST", "/identify/embeddings", key, 200,
                json={"embedding": probe, "threshold": 0.3, "k": 1})
    m = body["results"][0]["match"]
    return m["id"] if m else None


def unassigned(srv, key):
    body = call(srv, "GET", "/faces?unassigned=true&limit=1000", key, 200)
    assert body["total"] == len(body["faces"]), body
    assert all(f["subject_id"] is None for f in body["faces"]), body
    return [f["face_id"] for f in body["faces"]]


def audit(srv, key, action):
    rows = call(srv, "GET", "/audit?limit=200", key, 200)["results"]
    return [r for r in rows if r["action"] == action]


@pytest.fixture(params=DBS)
def one(request, tmp_path):
    """(server, key) on a fresh database of each backend."""
    url = new_db_url(request.param, tmp_path)
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "people")
    srv = Server(url)
    yield srv, key
    assert srv.stop() == 0


def test_unassigned_faces_are_stored_listed_deleted_and_never_matched(one):
    srv, key = one
    rnd = random.Random(1)
    named, loose = unit(rnd), [unit(rnd) for _ in range(3)]
    ann = new_subject(srv, key, "ann", [named])
    ids = [add_unassigned(srv, key, v) for v in loose]
    assert unassigned(srv, key) == ids
    everything = call(srv, "GET", "/faces", key, 200)
    assert everything["total"] == 4, everything
    assert {f["subject_id"] for f in everything["faces"]} == {ann, None}
    page = call(srv, "GET", "/faces?unassigned=true&limit=2&offset=1", key, 200)
    assert [f["face_id"] for f in page["faces"]] == ids[1:] and page["total"] == 3, page
    # Not matched, not even a candidate: the index holds ann's face only.
    for v in loose:
        res = call(srv, "POST", "/identify/embeddings", key, 200,
                   json={"embedding": near(v, rnd), "threshold": 0.3})["results"][0]
        assert res["match"] is None and res["templates"] == 1, res
        assert [c["id"] for c in res["candidates"]] == [ann], res
    assert who(srv, key, near(named, rnd)) == ann
    # A subject's own face list and count leave them out, and so does the
    # collection's template count.
    assert call(srv, "GET", f"/subjects/{ann}", key, 200)["faces"] == 1
    assert call(srv, "GET", "/collection", key, 200)["templates"] == 1
    # DELETE /faces/{id}: unassigned or not; then 404.
    call(srv, "DELETE", f"/faces/{ids[0]}", key, 200)
    call(srv, "DELETE", f"/faces/{ids[0]}", key, 404)
    assert unassigned(srv, key) == ids[1:]
    ann_face = call(srv, "GET", f"/subjects/{ann}/faces", key, 200)["results"][0]["id"]
    call(srv, "DELETE", f"/faces/{ann_face}", key, 200)
    assert who(srv, key, near(named, rnd)) is None
    added = audit(srv, key, "face.add")
    assert len(added) == 3 and added[-1]["face_id"] == ids[0], added
    assert added[-1]["detail"]["face_ids"] == [ids[0]], added
    assert [r["face_id"] for r in audit(srv, key, "face.remove") if r["outcome"] == "ok"] == [
        ann_face, ids[0]]


def test_assign_move_split_merge_follow_in_identify(one):
    srv, key = one
    rnd = random.Random(2)
    a1, a2, b0, b1 = (unit(rnd) for _ in range(4))
    bob = new_subject(srv, key, "bob", [b0])
    f_a1, f_a2, f_b1 = (add_unassigned(srv, key, v) for v in (a1, a2, b1))
    assert who(srv, key, near(a1, rnd)) is None

    # A cluster named into a new subject, with metadata.
    r = call(srv, "POST", "/faces/assign", key, 200,
             json={"face_ids": [f_a1, f_a2], "subject_name": "ann", "metadata": {"team": 7}})
    assert r["created"] is True and r["moved"] == 2, r
    ann = r["subject_id"]
    subj = call(srv, "GET", f"/subjects/{ann}", key, 200)
    assert subj["name"] == "ann" and subj["metadata"] == {"team": 7} and subj["faces"] == 2
    assert who(srv, key, near(a1, rnd)) == ann and who(srv, key, near(a2, rnd)) == ann
    # Into an existing subject, by name and by id; a face already there
    # is not counted.
    r = call(srv, "POST", "/faces/assign", key, 200,
             json={"face_ids": [f_b1], "subject_name": "bob"})
    assert r == {"subject_id": bob, "moved": 1, "created": False}, r
    r = call(srv, "POST", "/faces/assign", key, 200,
             json={"face_ids": [f_b1, f_b1], "subject_id": bob})
    assert r["moved"] == 0, r
    assert who(srv, key, near(b1, rnd)) == bob
    assert unassigned(srv, key) == []

    # Split: one of ann's faces to a new subject.
    r = call(srv, "POST", "/faces/assign", key, 200,
             json={"face_ids": [f_a2], "subject_name": "ann's sister"})
    sis = r["subject_id"]
    assert r["created"] and r["moved"] == 1 and sis not in (ann, bob), r
    assert who(srv, key, near(a2, rnd)) == sis and who(srv, key, near(a1, rnd)) == ann
    assert call(srv, "GET", f"/subjects/{ann}", key, 200)["faces"] == 1

    # Move one face from bob to ann.
    r = call(srv, "POST", "/faces/assign", key, 200, json={"face_ids": [f_b1], "subject_id": ann})
    assert r["moved"] == 1, r
    assert who(srv, key, near(b1, rnd)) == ann and who(srv, key, near(b0, rnd)) == bob

    # Merge: sis into ann; sis is gone and her face answers as ann.
    r = call(srv, "POST", f"/subjects/{ann}/merge", key, 200, json={"from_subject_id": sis})
    assert r == {"subject_id": ann, "from_subject_id": sis, "moved": 1}, r
    call(srv, "GET", f"/subjects/{sis}", key, 404)
    assert who(srv, key, near(a2, rnd)) == ann
    assert call(srv, "GET", f"/subjects/{ann}", key, 200)["faces"] == 3
    # Open-set identify (fused templates per subject) sees the merge too.
    res = call(srv, "POST", "/identify/embeddings", key, 200,
               json={"embedding": near(a2, rnd)})["results"][0]
    assert res["decision"] == "open_set" and res["candidates"][0]["id"] == ann, res
    assert all(c["id"] != sis for c in res["candidates"]), res
    # Verify against ann now accepts the moved faces' probes.
    names = {s["id"]: s["name"] for s in call(srv, "GET", "/subjects", key, 200)["results"]}
    assert names == {bob: "bob", ann: "ann"}, names

    # The audit log: who moved which faces where.
    assigns = audit(srv, key, "face.assign")
    assert [(a["subject_id"], a["detail"]["face_ids"], a["detail"]["moved"]) for a in assigns] == [
        (ann, [f_b1], 1), (sis, [f_a2], 1), (bob, [f_b1, f_b1], 0), (bob, [f_b1], 1),
        (ann, [f_a1, f_a2], 2)], assigns
    merges = audit(srv, key, "subject.merge")
    assert len(merges) == 1 and merges[0]["subject_id"] == ann, merges
    assert merges[0]["detail"] == {"from_subject_id": sis, "moved": 1}, merges


@pytest.mark.parametrize("db", DBS)
def test_errors_and_collection_isolation(db, tmp_path):
    d = two_collections(db, tmp_path)
    srv = Server(d.db_url)
    try:
        rnd = random.Random(3)
        va, vb = unit(rnd), unit(rnd)
        a_subj = new_subject(srv, d.a, "ann")
        a_face = add_unassigned(srv, d.a, va)
        b_subj = new_subject(srv, d.b, "bea")
        b_face = add_unassigned(srv, d.b, vb)
        # Another key neither sees nor moves nor deletes the faces.
        assert unassigned(srv, d.b) == [b_face]
        call(srv, "POST", "/faces/assign", d.b, 404, json={"face_ids": [a_face],
                                                          "subject_id": b_subj})
        call(srv, "POST", "/faces/assign", d.b, 404, json={"face_ids": [b_face],
                                                          "subject_id": a_subj})
        call(srv, "POST", "/faces/assign", d.b, 404,
             json={"face_ids": [b_face, a_face], "subject_name": "stolen"})
        call(srv, "DELETE", f"/faces/{a_face}", d.b, 404)
        call(srv, "POST", f"/subjects/{b_subj}/merge", d.b, 404, json={"from_subject_id": a_subj})
        call(srv, "POST", f"/subjects/{a_subj}/merge", d.b, 404, json={"from_subject_id": b_subj})
        # ...and nothing of those moved or appeared: all or none.
        assert unassigned(srv, d.a) == [a_face] and unassigned(srv, d.b) == [b_face]
        names = [s["name"] for s in call(srv, "GET", "/subjects", d.b, 200)["results"]]
        assert names == ["bea"], names
        assert call(srv, "GET", f"/subjects/{a_subj}", d.a, 200)["faces"] == 0
        # Unknown face and subject: 404, and the known face stays put.
        e = call(srv, "POST", "/faces/assign", d.a, 404,
                 json={"face_ids": [a_face, 99999], "subject_id": a_subj})
        assert e["error"]["message"] == "no face 99999", e
        assert unassigned(srv, d.a) == [a_face]
        call(srv, "POST", "/faces/assign", d.a, 404, json={"face_ids": [a_face],
                                                          "subject_id": 99999})
        call(srv, "DELETE", "/faces/99999", d.a, 404)
        # A fixed path next to {face_id}: "assign" is no malformed face id,
        # whatever the order of the route table; a malformed id is a 404.
        r = srv.request("DELETE", API + "/faces/assign", d.a)
        assert r.status_code == 405 and r.headers["Allow"] == "POST", (r, r.headers)
        e = call(srv, "DELETE", "/faces/12x", d.a, 404)
        assert e["error"]["message"] == "no face 12x", e
        call(srv, "POST", "/subjects/99999/merge", d.a, 404, json={"from_subject_id": a_subj})
        # Bad requests: 400, nothing changed.
        for body in ({"face_ids": [], "subject_id": a_subj},
                     {"face_ids": [a_face]},
                     {"face_ids": [a_face], "subject_id": a_subj, "subject_name": "x"},
                     {"face_ids": [0], "subject_id": a_subj},
                     {"face_ids": ["1"], "subject_id": a_subj},
                     {"face_ids": a_face, "subject_id": a_subj},
                     {"face_ids": [a_face], "subject_name": ""},
                     {"face_ids": [a_face], "subject_id": a_subj, "metadata": {}},
                     {"face_ids": [a_face], "subject_name": "m", "metadata": [1]}):
            e = call(srv, "POST", "/faces/assign", d.a, 400, json=body)
            assert e["error"]["code"] == "validation_error", (body, e)
        e = call(srv, "POST", f"/subjects/{a_subj}/merge", d.a, 400,
                 json={"from_subject_id": a_subj})
        assert "itself" in e["error"]["message"], e
        call(srv, "POST", f"/subjects/{a_subj}/merge", d.a, 400, json={})
        call(srv, "GET", "/faces?unassigned=maybe", d.a, 400)
        call(srv, "POST", "/faces", d.a, 400, json={"embedding": [1, 2, 3]})
        call(srv, "POST", "/faces", d.a, 409, json={"embedding": va, "model": "other"})
        assert unassigned(srv, d.a) == [a_face]
        assert [s["name"] for s in call(srv, "GET", "/subjects", d.a, 200)["results"]] == ["ann"]
    finally:
        assert srv.stop() == 0


def wait_for(fn, want, seconds=10.0):
    """fn() once it equals want, else its last value after seconds."""
    t0 = time.monotonic()
    got = fn()
    while got != want and time.monotonic() - t0 < seconds:
        time.sleep(0.05)
        got = fn()
    return got


@pytest.mark.parametrize("db", DBS)
def test_two_processes_follow_each_others_moves(db, tmp_path):
    """Node A makes every change; node B has its index loaded before each
    and answers with the new subject at once (SQLite: request sync, a
    version check before each search) or within the NOTIFY delay
    (PostgreSQL, B on --index-sync notify)."""
    url = new_db_url(db, tmp_path)
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "two")
    a = Server(url)
    b = Server(url, env={"FACEVERIFY_INDEX_SYNC": "notify"} if db == "postgres" else None)
    try:
        rnd = random.Random(4)
        v1, v2, v3 = unit(rnd), unit(rnd), unit(rnd)
        p1, p2, p3 = (near(v, rnd) for v in (v1, v2, v3))
        bob = new_subject(a, key, "bob", [v3])
        f1, f2 = add_unassigned(a, key, v1), add_unassigned(a, key, v2)
        assert wait_for(lambda: who(b, key, p3), bob) == bob
        assert who(b, key, p1) is None

        ann = call(a, "POST", "/faces/assign", key, 200,
                   json={"face_ids": [f1, f2], "subject_name": "ann"})["subject_id"]
        assert wait_for(lambda: (who(b, key, p1), who(b, key, p2)), (ann, ann)) == (ann, ann)
        # Split, then move, then merge: B follows each.
        sis = call(a, "POST", "/faces/assign", key, 200,
                   json={"face_ids": [f2], "subject_name": "sis"})["subject_id"]
        assert wait_for(lambda: (who(b, key, p1), who(b, key, p2)), (ann, sis)) == (ann, sis)
        bob_face = call(a, "GET", f"/subjects/{bob}/faces", key, 200)["results"][0]["id"]
        call(a, "POST", "/faces/assign", key, 200, json={"face_ids": [bob_face], "subject_id": sis})
        assert wait_for(lambda: who(b, key, p3), sis) == sis
        call(a, "POST", f"/subjects/{ann}/merge", key, 200, json={"from_subject_id": sis})
        assert wait_for(lambda: (who(b, key, p2), who(b, key, p3)), (ann, ann)) == (ann, ann)
        # B's open-set answer: sis's fused template is gone with her.
        res = call(b, "POST", "/identify/embeddings", key, 200,
                   json={"embedding": p2})["results"][0]
        assert res["candidates"][0]["id"] == ann, res
        assert all(c["id"] != sis for c in res["candidates"]), res
        # A deletes a moved face: B stops matching it.
        call(a, "DELETE", f"/faces/{f2}", key, 200)
        assert wait_for(lambda: who(b, key, p2), None) is None
        assert who(b, key, p1) == ann
        # And B's changes reach A the same way.
        f4 = add_unassigned(b, key, v2)
        call(b, "POST", "/faces/assign", key, 200, json={"face_ids": [f4], "subject_id": bob})
        assert wait_for(lambda: who(a, key, p2), bob) == bob
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def test_photo_faces_unassigned_then_named(tmp_path):
    """Real photos through the network: every face of a two-person photo,
    or the largest; faces named from unassigned photos are who identify
    then finds."""
    s = need(DATA / "samples" / "openface")
    url = new_db_url("sqlite", tmp_path)
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "photos")
    srv = Server(url)

    def photo(name):
        return {"image": (name, (s / name).read_bytes())}

    try:
        detected = call(srv, "POST", "/detect", key, 200, files=photo("longoria-cooper.jpg"))
        two = call(srv, "POST", "/faces", key, 201, files=photo("longoria-cooper.jpg"))
        assert two["count"] == len(detected["faces"]) == 2, (two, detected)
        assert all(0 <= f["quality"]["score"] <= 1 for f in two["faces"]), two
        big = call(srv, "POST", "/faces", key, 201, files=photo("longoria-cooper.jpg"),
                   data={"pick": "largest"})
        area = [(f["box"]["right"] - f["box"]["left"]) * (f["box"]["bottom"] - f["box"]["top"])
                for f in two["faces"]]
        assert big["count"] == 1 and big["faces"][0]["box"] == two["faces"][area.index(
            max(area))]["box"], (big, two)
        clapton = call(srv, "POST", "/faces", key, 201, files=photo("clapton-1.jpg"))
        lennon = call(srv, "POST", "/faces", key, 201, files=photo("lennon-1.jpg"))
        listed = call(srv, "GET", "/faces?unassigned=true", key, 200)
        assert listed["total"] == 5, listed
        assert all(f["quality"]["score"] >= 0 for f in listed["faces"]), listed

        def match(name):
            faces = call(srv, "POST", "/identify", key, 200, files=photo(name))["faces"]
            m = faces[0]["match"]
            return m["name"] if m else None

        assert match("clapton-2.jpg") is None  # nothing named yet
        call(srv, "POST", "/faces/assign", key, 200,
             json={"face_ids": [clapton["faces"][0]["face_id"]], "subject_name": "clapton"})
        assert match("clapton-2.jpg") == "clapton"
        assert match("lennon-2.jpg") is None
        call(srv, "POST", "/faces/assign", key, 200,
             json={"face_ids": [lennon["faces"][0]["face_id"]], "subject_name": "lennon"})
        assert match("lennon-2.jpg") == "lennon"
        assert match("clapton-2.jpg") == "clapton"
    finally:
        assert srv.stop() == 0


def test_migration_8_keeps_faces_ids_and_the_id_counter(tmp_path):
    """An SQLite file of schema 7 (faces.subject_id NOT NULL), whose last
    face was deleted: migrate keeps every face with its id and subject,
    makes subject_id nullable, and the next face gets a new id, never the
    deleted one's."""
    url = new_db_url("sqlite", tmp_path)
    path = url[len("sqlite://"):]
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "old")
    srv = Server(url)
    rnd = random.Random(5)
    vecs = [unit(rnd) for _ in range(3)]
    try:
        sid = new_subject(srv, key, "ann", vecs)
        faces = call(srv, "GET", f"/subjects/{sid}/faces", key, 200)["results"]
        call(srv, "DELETE", f"/subjects/{sid}/faces/{faces[-1]['id']}", key, 200)
    finally:
        assert srv.stop() == 0
    # Back to schema 7's faces table (NOT NULL subject_id), as a database
    # made before migration 8 has it.
    with sqlite3.connect(path) as c:
        cols = ("id, collection_id, subject_id, model, embedding, box_left, box_top, box_right, "
                "box_bottom, score, image_sha256, created_at, quality, import_fp")
        c.executescript(f"""
            PRAGMA foreign_keys=OFF;
            CREATE TABLE f7 (id INTEGER PRIMARY KEY AUTOINCREMENT,
              collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
              subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
              model TEXT NOT NULL, embedding BLOB NOT NULL, box_left REAL, box_top REAL,
              box_right REAL, box_bottom REAL, score REAL, image_sha256 TEXT,
              created_at INTEGER NOT NULL, quality REAL, import_fp TEXT);
            INSERT INTO f7 ({cols}) SELECT {cols} FROM faces;
            DELETE FROM sqlite_sequence WHERE name = 'f7';
            INSERT INTO sqlite_sequence (name, seq)
              SELECT 'f7', seq FROM sqlite_sequence WHERE name = 'faces';
            DROP TABLE faces;
            ALTER TABLE f7 RENAME TO faces;
            CREATE INDEX faces_collection_model ON faces(collection_id, model);
            CREATE INDEX faces_subject ON faces(subject_id);
            CREATE INDEX faces_import_fp ON faces(collection_id, import_fp);
            CREATE INDEX faces_image_sha256 ON faces(collection_id, image_sha256);
            DELETE FROM schema_migrations WHERE version = 8;
        """)
        notnull = [r[3] for r in c.execute("PRAGMA table_info(faces)") if r[1] == "subject_id"]
        assert notnull == [1]
    out = daemon_cmd("migrate", db_url=url).stdout
    assert "(1 migration applied)" in out, out  # 8 alone: the later ones are in
    with sqlite3.connect(path) as c:
        notnull = [r[3] for r in c.execute("PRAGMA table_info(faces)") if r[1] == "subject_id"]
        assert notnull == [0]
        assert c.execute("PRAGMA foreign_key_check").fetchall() == []
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    srv = Server(url)
    try:
        kept = call(srv, "GET", f"/subjects/{sid}/faces", key, 200)["results"]
        assert [f["id"] for f in kept] == [f["id"] for f in faces[:2]], (kept, faces)
        assert who(srv, key, near(vecs[0], rnd)) == sid
        new = add_unassigned(srv, key, vecs[2])
        assert new > faces[-1]["id"], (new, faces)
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("db", DBS)
def test_sealed_templates_move_with_the_key_only(db, tmp_path):
    """With FACEVERIFY_TEMPLATE_KEY a template is sealed for its place
    (collection, subject): an assigned or merged face is sealed again for
    its new subject, so it still opens and matches, also after a restart
    reads it from storage.  A process without the key cannot move a sealed
    template: 503 template_key_unavailable, nothing moved."""
    url = new_db_url(db, tmp_path)
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "sealed")
    tkey = {"FACEVERIFY_TEMPLATE_KEY": daemon_cmd("genkey", db_url=url).stdout.strip()}
    rnd = random.Random(6)
    v1, v2 = unit(rnd), unit(rnd)
    srv = Server(url, env=tkey)
    try:
        f1, f2 = add_unassigned(srv, key, v1), add_unassigned(srv, key, v2)
        res = call(srv, "POST", "/faces/cluster", key, 200,
                   json={"source": "unassigned", "min_cluster_size": 1})
        assert sorted(c[0]["face_id"] for c in res["clusters"]) == [f1, f2], res
        ann = call(srv, "POST", "/faces/assign", key, 200,
                   json={"face_ids": [f1], "subject_name": "ann"})["subject_id"]
        bob = call(srv, "POST", "/faces/assign", key, 200,
                   json={"face_ids": [f2], "subject_name": "bob"})["subject_id"]
        assert who(srv, key, near(v1, rnd)) == ann and who(srv, key, near(v2, rnd)) == bob
        add_unassigned(srv, key, unit(rnd))
    finally:
        assert srv.stop() == 0
    keyless = Server(url)
    try:
        e = call(keyless, "POST", "/faces/cluster", key, 503, json={"source": "unassigned"})
        assert e["error"]["code"] == "template_key_unavailable", e
        e = call(keyless, "POST", f"/subjects/{ann}/merge", key, 503,
                 json={"from_subject_id": bob})
        assert e["error"]["code"] == "template_key_unavailable", e
        e = call(keyless, "POST", "/faces/assign", key, 503,
                 json={"face_ids": [f2], "subject_name": "carl"})
        assert e["error"]["code"] == "template_key_unavailable", e
        names = [s["name"] for s in call(keyless, "GET", "/subjects", key, 200)["results"]]
        assert names == ["ann", "bob"], names
    finally:
        assert keyless.stop() == 0
    srv = Server(url, env=tkey)  # a fresh index, read from storage
    try:
        assert who(srv, key, near(v1, rnd)) == ann and who(srv, key, near(v2, rnd)) == bob
        call(srv, "POST", f"/subjects/{ann}/merge", key, 200, json={"from_subject_id": bob})
        assert who(srv, key, near(v2, rnd)) == ann
    finally:
        assert srv.stop() == 0
    srv = Server(url, env=tkey)
    try:
        assert who(srv, key, near(v1, rnd)) == ann and who(srv, key, near(v2, rnd)) == ann
        res = call(srv, "POST", "/identify/embeddings", key, 200,
                   json={"embedding": v2, "threshold": 0.3})
        assert "warnings" not in res, res  # every template opened
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("db", DBS)
def test_a_large_cluster_moves_in_one_call_on_both_nodes(db, tmp_path):
    """150 faces named, 100 of them split off, then merged back, each in
    one call through node A: storage moves them in a few set-based
    statements, and node B applies the 150 relabels of the change log in
    one pass over the templates (more than RELABEL_BULK, index.c)."""
    url = new_db_url(db, tmp_path)
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "crowd")
    a, b = Server(url), Server(url)
    try:
        rnd = random.Random(7)
        vecs = [unit(rnd) for _ in range(150)]
        ids = [add_unassigned(a, key, v) for v in vecs]
        assert who(b, key, near(vecs[0], rnd)) is None
        crowd = call(a, "POST", "/faces/assign", key, 200,
                     json={"face_ids": ids, "subject_name": "crowd"})
        assert crowd["moved"] == 150, crowd
        probes = [0, 99, 100, 149]
        assert [who(b, key, near(vecs[i], rnd)) for i in probes] == [crowd["subject_id"]] * 4
        half = call(a, "POST", "/faces/assign", key, 200,
                    json={"face_ids": ids[:100], "subject_name": "half"})["subject_id"]
        assert [who(b, key, near(vecs[i], rnd)) for i in probes] == \
            [half, half, crowd["subject_id"], crowd["subject_id"]]
        res = call(b, "POST", "/identify/embeddings", key, 200,
                   json={"embedding": vecs[5]})["results"][0]
        assert res["templates"] == 150 and res["candidates"][0]["id"] == half, res
        r = call(a, "POST", f"/subjects/{crowd['subject_id']}/merge", key, 200,
                 json={"from_subject_id": half})
        assert r["moved"] == 100, r
        assert [who(b, key, near(vecs[i], rnd)) for i in probes] == [crowd["subject_id"]] * 4
        assert call(b, "GET", f"/subjects/{crowd['subject_id']}", key, 200)["faces"] == 150
        call(a, "DELETE", f"/subjects/{crowd['subject_id']}", key, 200)
        assert [who(b, key, near(vecs[i], rnd)) for i in probes] == [None] * 4
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


@pytest.mark.parametrize("db", DBS)
def test_cluster_the_unassigned_faces_then_name_a_cluster(db, tmp_path):
    """POST /faces/cluster {"source": "unassigned"} groups the collection's
    faces without a subject (never another collection's, never a
    subject's), each as {"face_id", "box"}; a cluster's face ids named
    through POST /faces/assign leave the next clustering."""
    d = two_collections(db, tmp_path)
    srv = Server(d.db_url)
    try:
        rnd = random.Random(8)
        p, q, lone, named = unit(rnd), unit(rnd), unit(rnd), unit(rnd)
        new_subject(srv, d.a, "ann", [near(named, rnd), near(named, rnd)])
        fp = [add_unassigned(srv, d.a, near(p, rnd)) for _ in range(3)]
        fq = [add_unassigned(srv, d.a, near(q, rnd)) for _ in range(4)]
        fl = add_unassigned(srv, d.a, lone)
        add_unassigned(srv, d.b, near(p, rnd))  # another collection's
        add_unassigned(srv, d.b, near(p, rnd))
        res = call(srv, "POST", "/faces/cluster", d.a, 200, json={"source": "unassigned"})
        clusters = [sorted(f["face_id"] for f in c) for c in res["clusters"]]
        assert clusters == [fq, fp], res  # largest first
        assert [f["face_id"] for f in res["noise"]] == [fl], res
        assert all(set(f) >= {"face_id", "box"} for c in res["clusters"] for f in c), res
        assert res["operating_point"]["fmr"] > 0, res
        named_q = call(srv, "POST", "/faces/assign", d.a, 200,
                       json={"face_ids": [f["face_id"] for f in res["clusters"][0]],
                             "subject_name": "q"})
        assert named_q["moved"] == 4, named_q
        assert who(srv, d.a, near(q, rnd)) == named_q["subject_id"]
        res = call(srv, "POST", "/faces/cluster", d.a, 200,
                   json={"source": "unassigned", "min_cluster_size": 4})
        assert res["clusters"] == [] and sorted(f["face_id"] for f in res["noise"]) == \
            sorted(fp + [fl]), res
        # The other collection sees its own two only.
        res = call(srv, "POST", "/faces/cluster", d.b, 200, json={"source": "unassigned"})
        assert [len(c) for c in res["clusters"]] == [2] and res["noise"] == [], res
        e = call(srv, "POST", "/faces/cluster", d.a, 400, json={"source": "everything"})
        assert e["error"]["code"] == "validation_error", e
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("sealed", [False, True])
@pytest.mark.parametrize("db", DBS)
def test_merge_carries_the_corrections(db, sealed, tmp_path):
    """A correction of the subject merged away ("this face is not bob")
    becomes the merged subject's: listed under it, still excluding the
    face it names, with sealed corrections sealed again for their new
    subject."""
    url = new_db_url(db, tmp_path)
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "corr")
    env = {"FACEVERIFY_TEMPLATE_KEY": daemon_cmd("genkey", db_url=url).stdout.strip()} \
        if sealed else None
    srv = Server(url, env=env)
    try:
        rnd = random.Random(9)
        va, vb = unit(rnd), unit(rnd)
        ann = new_subject(srv, key, "ann", [va])
        bob = new_subject(srv, key, "bob", [vb])
        wrong = near(vb, rnd)
        assert who(srv, key, wrong) == bob
        call(srv, "POST", f"/subjects/{bob}/not", key, 201, json={"embedding": wrong})
        assert who(srv, key, wrong) is None
        call(srv, "POST", f"/subjects/{ann}/merge", key, 200, json={"from_subject_id": bob})
        assert len(call(srv, "GET", f"/subjects/{ann}/not", key, 200)["corrections"]) == 1
        assert who(srv, key, wrong) is None  # bob's face is ann's now, and so is the correction
        assert who(srv, key, near(va, rnd)) == ann
    finally:
        assert srv.stop() == 0
