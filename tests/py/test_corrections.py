"""Corrections, "this face is not this person" (POST/GET/DELETE
/api/v1/subjects/{id}/not), against a live faceverifyd on SQLite and on
PostgreSQL (when FACEVERIFY_PG_URL names one), with the real model on LFW
photos.

The look-alike: Candie_Kung is enrolled with her _0003 photo; Ai
Sugiyama, never enrolled, is falsely matched to her (her _0004 photo lies
0.455 from that template, within the model's 0.6 and the FMR 1e-3
threshold 0.545; her _0002 photo 0.485).  Candie Kung's own _0002 photo
lies 0.244 from her template and 0.480 from the Ai Sugiyama photo used as
the correction (measured with `faceverify embed`, bench/corrections_lfw.py
for the protocol at scale)."""
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import CLI, DATA, need
from fvserver import Server, check, create_collection, daemon_cmd, new_db_url, two_collections

A_GALLERY = "Candie_Kung/Candie_Kung_0003.jpg"
A_PROBE = "Candie_Kung/Candie_Kung_0002.jpg"   # genuine: must keep matching
B_PROBE = "Ai_Sugiyama/Ai_Sugiyama_0004.jpg"   # the false match corrected
B_OTHER = "Ai_Sugiyama/Ai_Sugiyama_0002.jpg"   # another photo of the look-alike
OTHERS = {"clapton": "samples/openface/clapton-1.jpg", "lennon": "samples/openface/lennon-2.jpg"}


def lfw(rel: str) -> Path:
    return need(DATA / "lfw" / rel)


def photo(path: Path):
    return {"image": (path.name, path.read_bytes())}


@pytest.fixture(scope="module")
def embeddings():
    """The CLI's embeddings of the four photos (the server embeds the same
    way: one face each, the ResNet)."""
    out = {}
    for rel in (A_GALLERY, A_PROBE, B_PROBE, B_OTHER):
        p = subprocess.run([str(CLI), "embed", str(lfw(rel)), "--json"], capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        out[rel] = json.loads(p.stdout)["embedding"]
    return out


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def env(request, tmp_path_factory):
    """Collections alpha (.a) and beta (.b) and one running server."""
    db = two_collections(request.param, tmp_path_factory.mktemp("corr"))
    db.server = Server(db.db_url)
    yield db
    assert db.server.stop() == 0


@pytest.fixture(scope="module")
def gallery(env):
    """Candie_Kung (one photo) and two others in collection alpha; one
    subject in beta."""
    ids = {}
    for name, path in [("Candie_Kung", lfw(A_GALLERY))] + [
            (n, need(DATA / p)) for n, p in OTHERS.items()]:
        r = env.server.request("POST", "/api/v1/subjects", env.a, json={"name": name})
        ids[name] = check(r, "POST", "/api/v1/subjects", 201)["id"]
        r = env.server.request("POST", f"/api/v1/subjects/{ids[name]}/faces", env.a,
                               files=photo(path))
        check(r, "POST", "/api/v1/subjects/1/faces", 201)
    r = env.server.request("POST", "/api/v1/subjects", env.b, json={"name": "beta-one"})
    ids["beta"] = check(r, "POST", "/api/v1/subjects", 201)["id"]
    return ids


def identify(srv, key, rel, **data):
    """The one face's result of /identify on an LFW photo."""
    r = srv.request("POST", "/api/v1/identify", key, files=photo(lfw(rel)), data=data)
    body = check(r, "POST", "/api/v1/identify", 200)
    assert body["count"] == 1
    return body["faces"][0]


def identify_emb(srv, key, emb, **kw):
    r = srv.request("POST", "/api/v1/identify/embeddings", key, json=dict(embedding=emb, **kw))
    return check(r, "POST", "/api/v1/identify/embeddings", 200)["results"][0]


def matched(res):
    return res["match"]["id"] if res["match"] else None


def excluded(res, sid):
    """The candidate entry of sid when it is marked excluded, else None."""
    for c in res["candidates"]:
        if c["id"] == sid and c.get("excluded") == "correction":
            return c
    return None


def verify(srv, key, sid, rel):
    r = srv.request("POST", f"/api/v1/subjects/{sid}/verify", key, files=photo(lfw(rel)))
    return check(r, "POST", "/api/v1/subjects/1/verify", 200)


def add(srv, key, sid, status=201, **kw):
    r = srv.request("POST", f"/api/v1/subjects/{sid}/not", key, **kw)
    return check(r, "POST", "/api/v1/subjects/1/not", status)


def test_false_match_removed_then_restored(env, gallery):
    s, a = env.server, gallery["Candie_Kung"]
    # The false match, in both decisions, and in the subject's verify.
    for mode in ({}, {"k": "3"}):
        assert matched(identify(s, env.a, B_PROBE, **mode)) == a, mode
        assert matched(identify(s, env.a, B_OTHER, **mode)) == a, mode
    assert verify(s, env.a, a, B_PROBE)["verified"] is True

    body = add(s, env.a, a, files=photo(lfw(B_PROBE)))
    assert body["subject_id"] == a and body["source"] == "image"
    assert body["radius"] == pytest.approx(0.5369, abs=1e-4) and body["fmr"] == 1e-3
    assert body["quality"]["score"] > 0.5
    cid = body["correction_id"]

    for mode in ({}, {"k": "3"}):
        res = identify(s, env.a, B_PROBE, **mode)
        assert matched(res) is None, (mode, res)  # no one else is near her
        x = excluded(res, a)
        assert x and x["correction_id"] == cid and x["correction_distance"] < 1e-4, res
        # Her other photo: within the radius of the correction and nearer
        # to it than to Candie Kung's template.
        res = identify(s, env.a, B_OTHER, **mode)
        assert matched(res) != a and excluded(res, a)["correction_distance"] < 0.45, res
        # Candie Kung herself still matches, and is not marked.
        res = identify(s, env.a, A_PROBE, **mode)
        assert matched(res) == a and excluded(res, a) is None, res

    v = verify(s, env.a, a, B_PROBE)
    assert v["verified"] is False and v["reason"] == "correction"
    assert v["correction"]["correction_id"] == cid and v["distance"] < v["threshold"]
    v = verify(s, env.a, a, A_PROBE)
    assert v["verified"] is True and "reason" not in v

    r = s.request("GET", f"/api/v1/subjects/{a}/not", env.a)
    body = check(r, "GET", f"/api/v1/subjects/{a}/not", 200)
    assert body["count"] == 1 and body["subject_id"] == a
    (c,) = body["corrections"]
    assert c["correction_id"] == cid and c["source"] == "image" and c["face_id"] is None
    assert "embedding" not in c

    r = s.request("DELETE", f"/api/v1/subjects/{a}/not/{cid}", env.a)
    assert check(r, "DELETE", "/api/v1/subjects/1/not/1", 200)["deleted"] is True
    assert matched(identify(s, env.a, B_PROBE)) == a
    assert verify(s, env.a, a, B_PROBE)["verified"] is True
    r = s.request("GET", f"/api/v1/subjects/{a}/not", env.a)
    assert check(r, "GET", "/api/v1/subjects/1/not", 200)["corrections"] == []


def test_embedding_and_stored_face(env, gallery, embeddings):
    s, a = env.server, gallery["Candie_Kung"]
    b = embeddings[B_PROBE]
    assert matched(identify_emb(s, env.a, b, k=3)) == a
    cid = add(s, env.a, a, json={"embedding": b})["correction_id"]
    res = identify_emb(s, env.a, b, k=3)
    assert matched(res) is None and excluded(res, a)["correction_id"] == cid
    assert matched(identify_emb(s, env.a, embeddings[A_PROBE])) == a
    s.request("DELETE", f"/api/v1/subjects/{a}/not/{cid}", env.a)

    # A stored face of another subject: the look-alike enrolled by mistake
    # under her own name is "not Candie Kung".
    r = s.request("POST", "/api/v1/subjects", env.a, json={"name": "Ai_Sugiyama"})
    other = check(r, "POST", "/api/v1/subjects", 201)["id"]
    r = s.request("POST", f"/api/v1/subjects/{other}/faces", env.a,
                  json={"embedding": embeddings[B_OTHER]})
    fid = check(r, "POST", "/api/v1/subjects/1/faces", 201)["id"]
    body = add(s, env.a, a, json={"face_id": fid})
    assert body["source"] == "face" and body["face_id"] == fid
    s.request("DELETE", f"/api/v1/subjects/{other}", env.a)
    # The correction keeps its own copy of the template.
    res = identify_emb(s, env.a, b, k=3)
    assert matched(res) is None and excluded(res, a)["correction_id"] == body["correction_id"]
    s.request("DELETE", f"/api/v1/subjects/{a}/not/{body['correction_id']}", env.a)

    # One of the subject's own faces: delete it instead (409).
    r = s.request("GET", f"/api/v1/subjects/{a}/faces", env.a)
    own = r.json()["results"][0]["id"]
    assert add(s, env.a, a, 409, json={"face_id": own})["error"]["code"] == "conflict"
    assert add(s, env.a, a, 404, json={"face_id": 10 ** 12})["error"]["code"] == "not_found"


def test_errors_and_isolation(env, gallery, embeddings):
    s, a, beta = env.server, gallery["Candie_Kung"], gallery["beta"]
    b = embeddings[B_PROBE]
    for body in ({"embedding": b[:100]}, {"embedding": ["x"] * 128}, {"embedding": None},
                 {"embedding": b, "face_id": 1}, {"face_id": "1"}, {"face_id": 0}, {},
                 {"embedding": b, "model": "another"}):
        r = s.request("POST", f"/api/v1/subjects/{a}/not", env.a, json=body)
        code = 409 if body.get("model") else 400
        assert check(r, "POST", "/api/v1/subjects/1/not", code)["error"]["code"] in (
            "validation_error", "model_mismatch"), body
    for method, path in (("POST", f"/api/v1/subjects/{10 ** 12}/not"),
                         ("GET", f"/api/v1/subjects/{10 ** 12}/not"),
                         ("DELETE", f"/api/v1/subjects/{10 ** 12}/not/1"),
                         ("DELETE", f"/api/v1/subjects/{a}/not/{10 ** 12}"),
                         ("DELETE", f"/api/v1/subjects/{a}/not/abc")):
        r = s.request(method, path, env.a, json={"embedding": b} if method == "POST" else None)
        assert check(r, method, path.replace("abc", "1"), 404)["error"]["code"] == "not_found"
    # Another collection's subject and corrections are not there at all.
    cid = add(s, env.a, a, json={"embedding": b})["correction_id"]
    for method, path in (("POST", f"/api/v1/subjects/{a}/not"),
                         ("GET", f"/api/v1/subjects/{a}/not"),
                         ("DELETE", f"/api/v1/subjects/{a}/not/{cid}"),
                         ("DELETE", f"/api/v1/subjects/{beta}/not/{cid}")):
        r = s.request(method, path, env.b, json={"embedding": b} if method == "POST" else None)
        assert check(r, method, path, 404)["error"]["code"] == "not_found", (method, path)
    # ... and a correction in alpha changes nothing in beta's answers.
    r = s.request("POST", f"/api/v1/subjects/{beta}/faces", env.b, json={"embedding": b})
    check(r, "POST", "/api/v1/subjects/1/faces", 201)
    res = identify_emb(s, env.b, b, k=3)
    assert matched(res) == beta and not any("excluded" in c for c in res["candidates"])
    r = s.request("DELETE", f"/api/v1/subjects/{a}/not/{cid}", env.a)
    assert r.status_code == 200


def test_audit(env, gallery, embeddings):
    s, a = env.server, gallery["Candie_Kung"]
    b = embeddings[B_PROBE]
    cid = add(s, env.a, a, json={"embedding": b})["correction_id"]
    identify_emb(s, env.a, b, k=3)
    s.request("GET", f"/api/v1/subjects/{a}/not", env.a)
    s.request("DELETE", f"/api/v1/subjects/{a}/not/{cid}", env.a)
    r = s.request("GET", "/api/v1/audit", env.a, params={"limit": 4})
    entries = check(r, "GET", "/api/v1/audit", 200)["results"]
    acts = [(e["action"], e["subject_id"], e["status"]) for e in entries]
    assert acts == [("correction.delete", a, 200), ("correction.list", a, 200),
                    ("identify.embeddings", None, 200), ("correction.create", a, 201)], acts
    assert entries[0]["detail"]["correction_id"] == cid
    assert entries[1]["detail"]["count"] == 1
    assert entries[2]["detail"] == {"queries": 1, "matches": [None], "excluded": 1}
    assert entries[3]["detail"] == {"correction_id": cid, "source": "embedding"}
    # Never the template nor a distance: ids, counts and names only.
    for e in entries:
        for v in e["detail"].values():
            assert not isinstance(v, float) and (not isinstance(v, list) or len(v) < 128), e


def test_two_processes(env, gallery):
    """A correction stored through one faceverifyd is applied by another on
    the same database at its next request, and its delete too."""
    other = Server(env.db_url)
    try:
        s1, s2, a = env.server, other, gallery["Candie_Kung"]
        assert matched(identify(s2, env.a, B_PROBE)) == a  # s2 loads its index
        cid = add(s1, env.a, a, files=photo(lfw(B_PROBE)))["correction_id"]
        res = identify(s2, env.a, B_PROBE)
        assert matched(res) is None and excluded(res, a)["correction_id"] == cid
        assert verify(s2, env.a, a, B_PROBE)["reason"] == "correction"
        r = s2.request("DELETE", f"/api/v1/subjects/{a}/not/{cid}", env.a)
        assert r.status_code == 200
        assert matched(identify(s1, env.a, B_PROBE)) == a
    finally:
        assert other.stop() == 0


def test_sealed_with_template_key(env, embeddings, tmp_path):
    """A correction stored without a key is plaintext until encrypttemplates
    seals it, with a key it is stored sealed (never the floats),
    rekeytemplates re-seals it, it is applied all along, and it goes with
    its subject."""
    if env.backend != "sqlite":
        pytest.skip("the sealing is backend-independent; the rows are read with sqlite3")
    url = new_db_url("sqlite", tmp_path)
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "sealed")
    k1 = daemon_cmd("genkey", db_url=url).stdout.strip()
    k2 = daemon_cmd("genkey", db_url=url).stdout.strip()
    b = embeddings[B_PROBE]
    con = sqlite3.connect(url[len("sqlite://"):])

    def blob(cid):
        return con.execute("SELECT embedding FROM corrections WHERE id = ?", (cid,)).fetchone()[0]

    def applied(tkey, cid):
        srv = Server(url, env={"FACEVERIFY_TEMPLATE_KEY": tkey})
        try:
            res = identify_emb(srv, key, b, k=3)
            assert matched(res) is None and excluded(res, a)["correction_id"] == cid, res
            return srv
        except BaseException:
            srv.stop()
            raise

    srv = Server(url)
    try:
        r = srv.request("POST", "/api/v1/subjects", key, json={"name": "Candie_Kung"})
        a = r.json()["id"]
        r = srv.request("POST", f"/api/v1/subjects/{a}/faces", key,
                        json={"embedding": embeddings[A_GALLERY]})
        assert r.status_code == 201
        plain = add(srv, key, a, json={"embedding": b})["correction_id"]
    finally:
        assert srv.stop() == 0
    assert len(blob(plain)) == 512
    p = daemon_cmd("encrypttemplates", db_url=url, env={"FACEVERIFY_TEMPLATE_KEY": k1})
    assert blob(plain)[:4] == b"FVE1" and len(blob(plain)) == 556, p.stdout
    srv = applied(k1, plain)
    try:
        cid = add(srv, key, a, json={"embedding": b})["correction_id"]
        assert blob(cid)[:4] == b"FVE1"
        srv.request("DELETE", f"/api/v1/subjects/{a}/not/{plain}", key)
    finally:
        assert srv.stop() == 0
    daemon_cmd("rekeytemplates", db_url=url,
               env={"FACEVERIFY_TEMPLATE_KEY": k2, "FACEVERIFY_TEMPLATE_KEY_OLD": k1})
    srv = applied(k2, cid)
    try:
        srv.request("DELETE", f"/api/v1/subjects/{a}", key)
        assert con.execute("SELECT COUNT(*) FROM corrections").fetchone()[0] == 0
    finally:
        assert srv.stop() == 0
        con.close()
