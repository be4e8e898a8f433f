"""Face quality in the API's face objects, the enrolment quality gate and
the duplicate check at enrolment (issue 15), against a live faceverifyd
with the real model and real LFW photos.

The degraded faces are made here with PIL from an LFW photo: a heavy
Gaussian blur (the "blurred" reason) and the photo shrunk so the face is
about 30 px wide, on a grey canvas (the "too_small" reason).  Thresholds
come from the server's answers (the FMR table is provisional), never from
this file.
"""
import io
import sqlite3

import pytest

from conftest import DATA, need
from fvserver import Server, check, create_collection, daemon_cmd, new_db_url

BACKENDS = ["sqlite", "postgres"]
FACES = "/api/v1/subjects/{}/faces"
REASONS = {"too_small", "blurred", "dark", "overexposed", "low_contrast", "profile", "pitched",
           "low_confidence"}


def lfw(person: str, n: int):
    return need(DATA / "lfw" / person / f"{person}_{n:04d}.jpg")


def jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def blurred(path) -> bytes:
    from PIL import Image, ImageFilter
    return jpeg(Image.open(path).convert("RGB").filter(ImageFilter.GaussianBlur(4)))


def tiny(path) -> bytes:
    """The 250 px LFW photo (face about 96 px) shrunk to 78 px on a 250 px
    grey canvas: a face of about 30 px."""
    from PIL import Image
    small = Image.open(path).convert("RGB").resize((78, 78), Image.BILINEAR)
    canvas = Image.new("RGB", (250, 250), (128, 128, 128))
    canvas.paste(small, (86, 86))
    return jpeg(canvas)


def image(data: bytes, **fields):
    return {"files": {"image": ("face.jpg", data)}, "data": fields}


def assert_quality(q):
    assert 0.0 <= q["score"] <= 1.0
    assert set(q["reasons"]) <= REASONS
    assert q["size_px"] > 0 and 0.0 <= q["sharpness"] <= 1.0
    assert 0.0 <= q["brightness"] <= 255.0


@pytest.fixture(scope="module", params=BACKENDS)
def env(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fvq")
    url = new_db_url(request.param, tmp)
    daemon_cmd("migrate", db_url=url)
    key = create_collection(url, "quality")
    srv = Server(url)

    class Env:
        backend = request.param
        db_url = url
        server = srv
        k = key

    yield Env
    assert srv.stop() == 0


def subject(env, name: str) -> int:
    r = env.server.request("POST", "/api/v1/subjects", env.k, json={"name": name})
    return check(r, "POST", "/api/v1/subjects", 201)["id"]


def enrol(env, sid: int, data: bytes, status=None, **fields):
    r = env.server.request("POST", FACES.format(sid), env.k, **image(data, **fields))
    return check(r, "POST", FACES.format(sid), status)


def test_detect_faces_carry_quality(env):
    r = env.server.request("POST", "/api/v1/detect", env.k,
                           files={"image": ("a.jpg", lfw("Colin_Powell", 1).read_bytes())})
    body = check(r, "POST", "/api/v1/detect", 200)
    assert body["count"] >= 1
    for f in body["faces"]:
        assert_quality(f["quality"])
    assert max(f["quality"]["score"] for f in body["faces"]) > 0.5
    assert body["timings_ms"]["quality"] >= 0


def test_detect_quality_names_the_blur(env):
    r = env.server.request("POST", "/api/v1/detect", env.k,
                           files={"image": ("b.jpg", blurred(lfw("Aaron_Peirsol", 3)))})
    body = check(r, "POST", "/api/v1/detect", 200)
    assert body["count"] >= 1
    assert "blurred" in body["faces"][0]["quality"]["reasons"]


def test_verify_faces_carry_quality(env):
    files = {"image_a": ("a.jpg", lfw("Colin_Powell", 1).read_bytes()),
             "image_b": ("b.jpg", lfw("Colin_Powell", 2).read_bytes())}
    body = check(env.server.request("POST", "/api/v1/verify", env.k, files=files),
                 "POST", "/api/v1/verify", 200)
    assert body["verified"] is True
    for side in ("a", "b"):
        assert_quality(body["faces"][side]["quality"])


def test_low_quality_refused_then_forced(env):
    sid = subject(env, "blurry")
    for data, reason in ((blurred(lfw("Aaron_Peirsol", 3)), "blurred"),
                         (tiny(lfw("Aaron_Peirsol", 3)), "too_small")):
        err = enrol(env, sid, data, 422)["error"]
        assert err["code"] == "low_quality"
        assert reason in err["reasons"], err
        assert err["reasons"] == err["quality"]["reasons"]
        assert err["quality"]["score"] < 0.25  # the documented default gate
        face = enrol(env, sid, data, 201, force="true")
        assert face["forced"] is True
        assert face["quality"]["score"] == pytest.approx(err["quality"]["score"], abs=1e-4)
        assert face["quality_score"] == pytest.approx(face["quality"]["score"], abs=1e-4)
    faces = check(env.server.request("GET", FACES.format(sid), env.k), "GET",
                  FACES.format(sid), 200)["results"]
    assert len(faces) == 2 and all(f["quality_score"] < 0.25 for f in faces)
    audit = check(env.server.request("GET", "/api/v1/audit", env.k), "GET", "/api/v1/audit",
                  200)["results"]
    outcomes = [a["outcome"] for a in audit if a["action"] == "face.enroll" and
                a.get("subject_id") == sid]
    assert outcomes.count("low_quality") == 2 and outcomes.count("ok") == 2


def test_good_face_passes_and_stores_quality(env):
    sid = subject(env, "good")
    face = enrol(env, sid, lfw("Serena_Williams", 1).read_bytes(), 201)
    assert face["forced"] is False and face["quality"]["score"] >= face["min_quality"]
    assert face["quality_score"] == pytest.approx(face["quality"]["score"], abs=1e-4)
    assert "warnings" not in face


def test_bare_embedding_has_no_quality(env):
    sid = subject(env, "bare")
    face = check(env.server.request("POST", FACES.format(sid), env.k,
                                    json={"embedding": [0.01 * i for i in range(128)]}),
                 "POST", FACES.format(sid), 201)
    assert face["quality_score"] is None


def test_collection_gate_overrides_the_server_default(env):
    if env.backend != "sqlite":
        pytest.skip("sets collections.min_quality in the SQLite file")
    sid = subject(env, "lenient")
    data = blurred(lfw("Aaron_Peirsol", 3))
    with sqlite3.connect(env.db_url[len("sqlite://"):]) as db:
        db.execute("UPDATE collections SET min_quality = 0 WHERE name = 'quality'")
    try:
        face = enrol(env, sid, data, 201)
        assert face["min_quality"] == 0 and face["forced"] is False
    finally:
        with sqlite3.connect(env.db_url[len("sqlite://"):]) as db:
            db.execute("UPDATE collections SET min_quality = NULL WHERE name = 'quality'")


def test_duplicate_warns_then_rejects(env):
    first = subject(env, "Colin Powell")
    enrol(env, first, lfw("Colin_Powell", 1).read_bytes(), 201)
    # The same person again under his own subject is no duplicate.
    face = enrol(env, first, lfw("Colin_Powell", 4).read_bytes(), 201)
    assert not [w for w in face.get("warnings", []) if w["code"] == "duplicate"]
    second = subject(env, "Colin again")
    again = lfw("Colin_Powell", 2).read_bytes()
    err = enrol(env, second, again, 409, on_duplicate="reject")["error"]
    assert err["code"] == "duplicate"
    assert err["subject"] == {"id": first, "name": "Colin Powell"}
    assert err["distance"] <= err["threshold"]
    face = enrol(env, second, again, 201)
    dup = [w for w in face["warnings"] if w["code"] == "duplicate"]
    assert len(dup) == 1 and dup[0]["subject"]["id"] == first
    assert dup[0]["fmr"] == pytest.approx(1e-4)
    audit = check(env.server.request("GET", "/api/v1/audit", env.k), "GET", "/api/v1/audit",
                  200)["results"]
    mine = [a for a in audit if a["action"] == "face.enroll" and a.get("subject_id") == second]
    assert [a["outcome"] for a in mine].count("duplicate") == 1


def test_different_people_no_warning(env):
    sid = subject(env, "Tony Blair")
    face = enrol(env, sid, lfw("Tony_Blair", 1).read_bytes(), 201)
    assert not [w for w in face.get("warnings", []) if w["code"] == "duplicate"]


def test_bad_on_duplicate_and_force_values(env):
    sid = subject(env, "bad values")
    data = lfw("Serena_Williams", 2).read_bytes()
    for fields in ({"on_duplicate": "ignore"}, {"force": "maybe"}):
        err = enrol(env, sid, data, 400, **fields)["error"]
        assert err["code"] == "validation_error"
        assert list(fields)[0] in err["message"]


def test_server_min_quality_option(env):
    """--min-quality (here FACEVERIFY_MIN_QUALITY) is the gate of a
    collection without its own; out of [0, 1] the server refuses to start."""
    if env.backend != "sqlite":
        pytest.skip("a second server on the same SQLite file")
    p = daemon_cmd("serve", "--min-quality", "1.5", "--listen", "127.0.0.1:1",
                   db_url=env.db_url, check=False)
    assert p.returncode == 2 and "--min-quality" in p.stderr
    lenient = Server(env.db_url, env={"FACEVERIFY_MIN_QUALITY": "0"})
    try:
        r = lenient.request("POST", "/api/v1/subjects", env.k, json={"name": "lenient server"})
        sid = check(r, "POST", "/api/v1/subjects", 201)["id"]
        r = lenient.request("POST", FACES.format(sid), env.k,
                            **image(tiny(lfw("Aaron_Peirsol", 3))))
        face = check(r, "POST", FACES.format(sid), 201)
        assert face["min_quality"] == 0 and face["forced"] is False
    finally:
        assert lenient.stop() == 0


def test_identify_faces_carry_quality(env):
    r = env.server.request("POST", "/api/v1/identify", env.k,
                           files={"image": ("p.jpg", lfw("Colin_Powell", 5).read_bytes())},
                           data={"return_chips": "1"})
    body = check(r, "POST", "/api/v1/identify", 200)
    assert body["count"] >= 1
    for f in body["faces"]:
        assert_quality(f["quality"])
        assert f["chip"].startswith("data:image/png;base64,")
