"""The Python package (python/): face_recognition's API on libfaceverify,
and faceverify.Client against a real faceverifyd.

The package is built as `pip install ./python` builds it (scikit-build-core
compiling libfaceverify from this tree into a wheel) once per tree: the
wheel and its install folder are kept in the temp folder under a key
hashed from the package's and the library's sources, so a re-run of an
unchanged tree reuses them.  The build is offline when the running Python
has scikit-build-core (requirements-test.txt), else pip fetches it from
PyPI into an isolated build environment.  The wheel is installed without
its dependencies (numpy is the test venv's; the models are
$FACEVERIFY_MODELS, which the package checks by SHA-256 like the
face_recognition_models files) and imported from its install folder.

What is held: distances agree with `faceverify verify --json` to 1e-4;
face_locations are the CLI's boxes in face_recognition's (top, right,
bottom, left) with inclusive right/bottom (model "hog", the default: the
CLI's `--detector mmod` automatic scale policy; "cnn": the CLI's --upsample N, dlib's own
upsampled pass); landmarks are the CLI's;
compare_faces is `distance <= tolerance`; the GIL is released while the
library works; the client's calls and its typed errors (401, 404, 400)
against a live server; and that it has a method for every API route.
"""
import contextlib
import fcntl
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import BUILD, DATA, MODELS, REPO, run_json
import fvserver

# What the wheel is built from: a change to any of these rebuilds it.
SOURCES = ["python", "src", "include", "cmake", "CMakeLists.txt", "config/faceverify.conf"]


def _tree_key() -> str:
    h = hashlib.sha256()
    for top in SOURCES:
        p = REPO / top
        files = [p] if p.is_file() else sorted(
            f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts
            and f.name != "build")
        for f in files:
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _build(cache: Path):
    """Builds the wheel into cache/wheel and installs it into cache/site."""
    wheel_dir = cache / "wheel"
    shutil.rmtree(wheel_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
           "-q", "-w", str(wheel_dir), str(REPO / "python"),
           "-C", f"build-dir={cache / 'cmake'}"]
    if importlib.util.find_spec("scikit_build_core") is not None:
        cmd.insert(4, "--no-build-isolation")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout + p.stderr
    wheels = list(wheel_dir.glob("faceverify-*.whl"))
    assert len(wheels) == 1, wheels
    site = cache / "site"
    shutil.rmtree(site, ignore_errors=True)
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                        "--disable-pip-version-check", "-q", "--target", str(site),
                        str(wheels[0])], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    (cache / "done").write_text(wheels[0].name)


@pytest.fixture(scope="module")
def fv():
    cache = Path(tempfile.gettempdir()) / f"faceverify-pytest-pkg-{_tree_key()}"
    cache.mkdir(exist_ok=True)
    with open(cache / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cache / "done").exists():
            _build(cache)
    site = str(cache / "site")
    sys.path.insert(0, site)
    try:
        import faceverify
        assert Path(faceverify.__file__).is_relative_to(site), faceverify.__file__
        faceverify.configure(models_dir=MODELS, threads=2)
        yield faceverify
    finally:
        sys.path.remove(site)


@pytest.fixture(scope="module")
def lfw_pairs(lfw):
    """Three same-person and three different-person LFW pairs."""
    people = sorted(d for d in lfw.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= 2)
    picks = people[:3]
    same = [tuple(sorted(d.glob("*.jpg"))[:2]) for d in picks]
    diff = [(sorted(picks[i].glob("*.jpg"))[0], sorted(picks[(i + 1) % 3].glob("*.jpg"))[1])
            for i in range(3)]
    return same + diff


def _css(box, shape):
    """The CLI's box (exclusive right/bottom) as face_recognition's tuple."""
    top, right = int(box["top"]), int(box["right"]) - 1
    bottom, left = int(box["bottom"]) - 1, int(box["left"])
    return max(top, 0), min(right, shape[1]), min(bottom, shape[0]), max(left, 0)


# ---------------------------------------------------------- face_recognition API

def test_distances_agree_with_cli(fv, lfw_pairs):
    for a, b in lfw_pairs:
        cli = run_json("verify", "--no-rotations", "--detector", "mmod", a, b, check=None)
        ea = fv.face_encodings(fv.load_image_file(a))
        eb = fv.face_encodings(fv.load_image_file(b))
        assert ea and eb, (a, b)
        assert ea[0].shape == (128,) and ea[0].dtype == np.float64
        d = fv.face_distance([ea[0]], eb[0])
        assert d.shape == (1,)
        assert abs(float(d[0]) - cli["distance"]) < 1e-4, (a, b, d, cli["distance"])
    # the same people are nearer than different ones (the pairs are ordered so)
    ds = [float(fv.face_distance(fv.face_encodings(fv.load_image_file(a)),
                                 fv.face_encodings(fv.load_image_file(b))[0])[0])
          for a, b in lfw_pairs]
    assert max(ds[:3]) < min(ds[3:]), ds


def test_locations_and_landmarks_match_cli(fv, lfw_pairs, samples):
    images = [lfw_pairs[0][0], lfw_pairs[1][0], samples / "openface" / "longoria-cooper.jpg",
              samples / "openface" / "clapton-1.jpg"]
    several = 0
    for path in images:
        cli = run_json("detect", "--no-rotations", "--detector", "mmod", path)
        img = fv.load_image_file(path)
        assert img.shape == (cli["image"]["height"], cli["image"]["width"], 3)
        got = fv.face_locations(img)
        assert got == [_css(f["box"], img.shape) for f in cli["faces"]], path
        assert all(isinstance(v, int) for loc in got for v in loc)
        # "cnn" is dlib's upsampled pass, the CLI's --upsample 1
        cnn = run_json("detect", "--no-rotations", "--upsample", "1", path)
        assert fv.face_locations(img, model="cnn") == \
            [_css(f["box"], img.shape) for f in cnn["faces"]], path
        marks = fv.face_landmarks(img, model="small")
        assert len(marks) == len(got)
        for m, f in zip(marks, cli["faces"]):
            p = [tuple(int(round(v)) for v in pt) for pt in f["landmarks"]]
            assert m == {"nose_tip": [p[4]], "left_eye": p[2:4], "right_eye": p[0:2]}
        several += len(got) > 1
    assert several >= 1, "no image with several faces among the checked ones"


def test_upsample_changes_boxes_like_cli(fv, lfw_pairs):
    path = lfw_pairs[0][0]
    img = fv.load_image_file(path)
    boxes = {}
    for n in (0, 1, 2):
        cli = run_json("detect", "--no-rotations", "--upsample", str(n), path)
        boxes[n] = [_css(f["box"], img.shape) for f in cli["faces"]]
        assert fv.face_locations(img, number_of_times_to_upsample=n, model="cnn") == boxes[n]
    assert len({tuple(b) for b in boxes.values()}) > 1, "upsampling changed no box"
    # beyond the detector's 0..2 is clamped to 2
    assert fv.face_locations(img, 5, model="cnn") == boxes[2]
    # "hog": 0 is the one plain pass; 1 and more the automatic policy
    assert fv.face_locations(img, 0) == boxes[0]
    auto = run_json("detect", "--no-rotations", "--detector", "mmod", path)
    for n in (1, 2, 5):
        assert fv.face_locations(img, n) == [_css(f["box"], img.shape) for f in auto["faces"]]


def test_hog_finds_small_faces_cheaply(fv, lfw_pairs):
    """The default ("hog": the automatic policy) finds a ~35 px face, far
    under the ~80 px one plain pass sees, as the CLI's default does; the
    cnn model needs the upsampled pass for it."""
    face = fv.load_image_file(lfw_pairs[0][0]).astype(np.float32)
    small = face[:249, :249].reshape(83, 3, 83, 3, 3).mean(axis=(1, 3))  # 3x3 box filter
    img = np.full((480, 640, 3), 128, np.uint8)
    img[300:383, 400:483] = np.round(small).astype(np.uint8)
    got = fv.face_locations(img)
    assert len(got) == 1, got
    top, right, bottom, left = got[0]
    assert 300 <= top and bottom < 383 and 400 <= left and right < 483, got
    assert 20 <= right - left <= 50, got
    assert fv.face_locations(img, 0, model="cnn") == []
    assert fv.face_locations(img, 0) == []

def test_known_locations(fv, lfw_pairs):
    img = fv.load_image_file(lfw_pairs[0][0])
    locs = fv.face_locations(img)
    enc = fv.face_encodings(img)
    given = fv.face_encodings(img, known_face_locations=locs)
    assert len(given) == len(enc) == 1
    # landmarks re-predicted on the same box: the same face
    assert float(fv.face_distance(given, enc[0])[0]) < 1e-3
    assert fv.face_encodings(img, known_face_locations=[]) == []
    assert fv.face_landmarks(img, face_locations=locs, model="small") == \
        fv.face_landmarks(img, model="small")


def test_jitters_average_near_the_plain_encoding(fv, lfw_pairs):
    img = fv.load_image_file(lfw_pairs[0][0])
    plain = fv.face_encodings(img)[0]
    jit = fv.face_encodings(img, num_jitters=4)[0]
    d = float(fv.face_distance([jit], plain)[0])
    assert 0 < d < 0.15, d
    assert np.array_equal(jit, fv.face_encodings(img, num_jitters=4)[0])  # seeded


def test_compare_faces_and_distance_semantics(fv, lfw_pairs):
    (a1, a2), (b1, _) = lfw_pairs[0], lfw_pairs[1]
    ea1, ea2, eb1 = (fv.face_encodings(fv.load_image_file(p))[0] for p in (a1, a2, b1))
    known = [ea1, eb1, ea2]
    d = fv.face_distance(known, ea2)
    assert isinstance(d, np.ndarray) and d.shape == (3,)
    assert d[2] == 0.0
    assert np.allclose(d, [np.linalg.norm(k - ea2) for k in known])
    assert fv.compare_faces(known, ea2) == [bool(x <= 0.6) for x in d]
    assert fv.compare_faces(known, ea2) == [True, False, True]
    # tolerance is inclusive
    assert fv.compare_faces([ea1], ea2, tolerance=float(d[0]))[0]
    assert not fv.compare_faces([ea1], ea2, tolerance=float(d[0]) - 1e-9)[0]
    assert fv.face_distance([], ea1).shape == (0,)
    assert fv.compare_faces([], ea1) == []


def test_load_image_file(fv, samples):
    png = samples / "openface_aligned" / "adams.png"
    from PIL import Image
    ref = np.array(Image.open(png).convert("RGB"))
    img = fv.load_image_file(png)
    assert img.dtype == np.uint8 and np.array_equal(img, ref)
    with open(png, "rb") as f:
        assert np.array_equal(fv.load_image_file(f), ref)
    grey = fv.load_image_file(io.BytesIO(png.read_bytes()), mode="L")
    assert np.array_equal(grey, np.array(Image.open(png).convert("L")))
    # a grey array is accepted by the face functions
    assert len(fv.face_encodings(grey)) == len(fv.face_encodings(img))
    with pytest.raises(fv.ImageError) as e:
        fv.load_image_file(io.BytesIO(b"not an image at all"))
    assert e.value.code == "invalid_image"
    with pytest.raises(fv.ImageError) as e:
        fv.load_image_file(io.BytesIO(png.read_bytes()[:200]))
    assert e.value.code == "invalid_image"
    # the library's decoder, so its formats: a binary PPM of the same pixels
    ppm = b"P6\n%d %d\n255\n" % (ref.shape[1], ref.shape[0]) + ref.tobytes()
    assert np.array_equal(fv.load_image_file(io.BytesIO(ppm)), ref)
    with pytest.raises(FileNotFoundError):
        fv.load_image_file(samples / "no-such-file.jpg")
    with pytest.raises(ValueError):
        fv.load_image_file(png, mode="CMYK")


def test_bad_arguments_raise(fv, lfw_pairs):
    img = fv.load_image_file(lfw_pairs[0][0])
    with pytest.raises(ValueError):
        fv.face_locations(img.astype(np.float32))
    with pytest.raises(ValueError):
        fv.face_locations(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError):
        fv.face_locations(img, model="retina")
    with pytest.raises(ValueError):
        fv.face_landmarks(img, model="medium")
    with pytest.warns(UserWarning, match="5-point"):
        marks = fv.face_landmarks(img)  # face_recognition's default "large"
    assert set(marks[0]) == {"nose_tip", "left_eye", "right_eye"}
    assert fv.face_locations(np.zeros((40, 40, 3), np.uint8)) == []


def test_models_checked_by_sha256(fv, tmp_path):
    for name in ("mmod_human_face_detector.dat", "shape_predictor_5_face_landmarks.dat"):
        (tmp_path / name).symlink_to((MODELS / name).resolve())
    with pytest.raises(fv.ModelError) as e:
        fv.Engine(models_dir=tmp_path, threads=1)
    assert e.value.code == "model_unavailable" and "missing" in str(e.value)
    resnet = "dlib_face_recognition_resnet_model_v1.dat"
    data = bytearray((MODELS / resnet).read_bytes())
    data[1000] ^= 1
    (tmp_path / resnet).write_bytes(bytes(data))
    with pytest.raises(fv.ModelError) as e:
        fv.Engine(models_dir=tmp_path, threads=1)
    assert "SHA-256" in str(e.value)
    with fv.Engine(models_dir=MODELS, threads=1) as eng:
        assert eng.threads == 1 and 0.3 < eng.threshold < 0.8
    with pytest.raises(ValueError, match="closed"):
        eng.face_locations(np.zeros((40, 40, 3), np.uint8))


def test_gil_released_during_library_calls(fv, samples):
    img = fv.load_image_file(samples / "openface" / "longoria-cooper.jpg")
    eng = fv.Engine(models_dir=MODELS, threads=1)
    state = {"started": False, "done": False}

    def work():
        state["started"] = True
        eng.face_encodings(img, num_jitters=3)
        state["done"] = True

    t = threading.Thread(target=work)
    t.start()
    while not state["started"]:
        time.sleep(0)
    spins = 0
    t0 = time.perf_counter()
    while not state["done"]:
        spins += 1
    elapsed = time.perf_counter() - t0
    t.join()
    eng.close()
    # Had the call held the GIL, this loop could not have run while it worked.
    assert elapsed > 0.05 and spins > 10000, (elapsed, spins)


@pytest.mark.skipif(os.environ.get("FACEVERIFY_TEST_PIP_INSTALL") != "1",
                    reason="set FACEVERIFY_TEST_PIP_INSTALL=1 (needs PyPI: the build backend, "
                    "numpy and the 100 MB face_recognition_models sdist)")
def test_pip_install_in_fresh_venv(tmp_path, lfw_pairs):
    """`pip install ./python` in a fresh venv, as the README says, with the
    models from face_recognition_models (FACEVERIFY_MODELS unset)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    p = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        str(REPO / "python")], capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout + p.stderr
    (a, b) = lfw_pairs[0]
    code = ("import sys, faceverify as fv\n"
            "e = [fv.face_encodings(fv.load_image_file(p))[0] for p in sys.argv[1:]]\n"
            "print(fv.default_engine().models_dir)\n"
            "print(float(fv.face_distance([e[0]], e[1])[0]))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("FACEVERIFY_MODELS", "PYTHONPATH")}
    p = subprocess.run([str(py), "-c", code, str(a), str(b)], capture_output=True, text=True,
                       timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    models_dir, dist = p.stdout.split()
    assert "face_recognition_models" in models_dir
    cli = run_json("verify", "--no-rotations", "--detector", "mmod", a, b, check=None)
    assert abs(float(dist) - cli["distance"]) < 1e-4


# ------------------------------------------------------------------ the client

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = fvserver.two_collections("sqlite", tmp_path_factory.mktemp("pkgdb"))
    srv = fvserver.Server(db.db_url)
    srv.key = db.a
    yield srv
    assert srv.stop() == 0


def test_client_every_route_has_a_method(fv):
    p = subprocess.run([str(BUILD / "bin" / "faceverifyd"), "routes"], capture_output=True,
                       text=True, timeout=60, check=True)
    routes = {(r["method"], r["path"]) for r in map(json.loads, p.stdout.splitlines())}
    api = {r for r in routes if r[0] != "HEAD" and (r[1].startswith("/api/v1/") or r[1] in (
        "/api/openapi.json", "/metrics"))}
    assert api == set(fv.client.ROUTES), api ^ set(fv.client.ROUTES)


def test_client_against_server(fv, server, lfw_pairs):
    c = fv.Client(server.base, server.key)
    assert c.health()["status"] == "ok"
    assert c.openapi()["openapi"].startswith("3.")
    assert "faceverify_" in c.metrics()
    assert c.models()["results"][0]["id"] == "dlib_resnet_v1"
    assert c.collection()["name"] == "alpha"
    (a1, a2), (b1, b2) = lfw_pairs[0], lfw_pairs[1]

    alice = c.create_subject("pkg-alice", metadata={"team": "a"})
    bob = c.create_subject("pkg-bob")
    assert alice["name"] == "pkg-alice" and alice["metadata"] == {"team": "a"}
    face = c.enroll(alice["id"], a1)
    c.enroll(bob["id"], open(b1, "rb"))
    assert [f["id"] for f in c.list_faces(alice["id"])["results"]] == [face["id"]]
    assert c.get_subject(alice["id"])["name"] == "pkg-alice"
    assert {s["name"] for s in c.list_subjects(limit=10)["results"]} == {"pkg-alice", "pkg-bob"}

    same = c.verify_subject(alice["id"], a2)
    other = c.verify_subject(alice["id"], b2)
    assert same["verified"] is True and other["verified"] is False
    assert same["distance"] < other["distance"]
    who = c.identify(a2.read_bytes(), top_k=2)
    assert who["faces"][0]["match"]["id"] == alice["id"], who

    # the API's distance of the package's encodings is the package's distance
    ea = fv.face_encodings(fv.load_image_file(a1))[0]
    eb = fv.face_encodings(fv.load_image_file(b1))[0]
    v = c.verify_embeddings(ea, eb)
    assert abs(v["distance"] - float(fv.face_distance([ea], eb)[0])) < 1e-4
    assert c.identify_embeddings(embedding=ea)["results"][0]["match"]["id"] == alice["id"]
    pair = c.verify(a1, a2)
    assert pair["verified"] is True
    assert c.detect(a1)["count"] == 1
    assert c.audit(limit=5)["results"][0]["action"] == "detect"
    assert c.update_collection(min_quality=0.2)["min_quality"] == 0.2
    assert c.update_collection(min_quality=None)["min_quality"] is None

    assert c.delete_face(alice["id"], face["id"])["deleted"] is True
    c.enroll_embedding(alice["id"], ea)
    assert c.list_faces(alice["id"])["count"] == 1
    c.delete_subject(bob["id"])
    with pytest.raises(fv.NotFoundError) as e:
        c.get_subject(bob["id"])
    assert (e.value.code, e.value.status) == ("not_found", 404)
    assert e.value.request_id and e.value.request_id == c.last_request_id

    # batch enrolment: photos as multipart parts, each with its own outcome
    batch = c.enroll_batch(alice["id"], [a2, np_png(np.zeros((64, 64, 3), np.uint8))],
                           force=True)
    assert (batch["count"], batch["enrolled"], batch["failed"]) == (2, 1, 1), batch
    assert [r["status"] for r in batch["results"]] == [201, 422]
    assert batch["results"][1]["error"]["code"] == "no_face"
    emb = c.enroll_embeddings(alice["id"], [eb, ea])
    assert (emb["count"], emb["enrolled"]) == (2, 2), emb
    assert c.list_faces(alice["id"])["count"] == 4


def test_client_unassigned_faces_assign_merge(fv, server, lfw_pairs):
    """Faces stored without a subject, named, moved and merged through the
    package's Client; identify follows."""
    c = fv.Client(server.base, server.key)
    (a1, a2), (b1, b2) = lfw_pairs[2], lfw_pairs[1]
    # pick="largest": the default policy also finds the small faces in some
    # LFW photos' backgrounds, and every one would be stored
    added = c.add_faces(a1, pick="largest")
    assert added["count"] == 1 and added["faces"][0]["quality"]["score"] > 0, added
    fa = added["faces"][0]["face_id"]
    fb = c.add_face_embedding(fv.face_encodings(fv.load_image_file(b1))[0])["faces"][0]["face_id"]
    listed = c.collection_faces(unassigned=True)
    assert [f["face_id"] for f in listed["faces"]] == [fa, fb] and listed["total"] == 2, listed
    carol = c.assign_faces([fa], subject_name="pkg-carol")
    assert carol["created"] is True and carol["moved"] == 1, carol
    dave = c.assign_faces([fb], subject_name="pkg-dave")["subject_id"]
    assert c.verify_subject(carol["subject_id"], a2)["verified"] is True
    assert c.verify_subject(carol["subject_id"], b2)["verified"] is False
    assert c.merge_subjects(carol["subject_id"], dave)["moved"] == 1
    assert c.verify_subject(carol["subject_id"], b2)["verified"] is True
    assert c.remove_face(fb)["deleted"] is True
    assert c.collection_faces(unassigned=True)["total"] == 0
    with pytest.raises(fv.NotFoundError):
        c.assign_faces([fb], subject_id=carol["subject_id"])
    with pytest.raises(fv.ValidationError):
        c.merge_subjects(dave, dave)


def test_client_cluster_and_corrections(fv, server, lfw_pairs):
    """Clustering (photos, embeddings) and "not this person" corrections
    through the package's Client."""
    c = fv.Client(server.base, server.key)
    (a1, _), (b1, b2) = lfw_pairs[3], lfw_pairs[4]
    a, b = open(a1, "rb").read(), open(b1, "rb").read()
    got = c.cluster(images=[a, b, a, b])
    groups = sorted(sorted(f["image"] for f in cl) for cl in got["clusters"])
    assert groups == [["image1", "image3"], ["image2", "image4"]], got
    assert got["noise"] == [] and got["operating_point"]["threshold"] > 0, got
    ea = fv.face_encodings(fv.load_image_file(a1))[0]
    eb = fv.face_encodings(fv.load_image_file(b1))[0]
    got = c.cluster(embeddings=[ea, eb, ea, eb], min_cluster_size=2)
    assert sorted(sorted(f["embedding"] for f in cl) for cl in got["clusters"]) == [[0, 2], [1, 3]]
    with pytest.raises(ValueError):
        c.cluster()
    with pytest.raises(fv.APIError) as e:
        c.cluster(embeddings=[[0.0] * 5])
    assert e.value.status == 400

    subj = c.create_subject("pkg-erin")
    c.enroll_embedding(subj["id"], ea)
    corr = c.add_correction(subj["id"], embedding=eb)
    assert corr["subject_id"] == subj["id"] and corr["source"] == "embedding", corr
    photo = c.add_correction(subj["id"], image=b2)
    assert photo["source"] == "image", photo
    listed = c.list_corrections(subj["id"])["corrections"]
    assert {x["correction_id"] for x in listed} == {corr["correction_id"], photo["correction_id"]}
    c.delete_correction(subj["id"], corr["correction_id"])
    c.delete_correction(subj["id"], photo["correction_id"])
    assert c.list_corrections(subj["id"])["corrections"] == []
    with pytest.raises(fv.NotFoundError):
        c.delete_correction(subj["id"], corr["correction_id"])


def test_client_errors(fv, server, lfw_pairs):
    with pytest.raises(fv.AuthenticationError) as e:
        fv.Client(server.base, "fv_wrong_key").collection()
    assert (e.value.code, e.value.status) == ("unauthorized", 401)
    assert e.value.request_id and e.value.message
    assert isinstance(e.value, fv.APIError)
    c = fv.Client(server.base, server.key)
    with pytest.raises(fv.NotFoundError) as e:
        c.get_subject(987654)
    assert (e.value.code, e.value.status) == ("not_found", 404)
    with pytest.raises(fv.ValidationError) as e:
        c.create_subject("")
    assert (e.value.code, e.value.status) == ("validation_error", 400)
    with pytest.raises(fv.ValidationError) as e:
        c.verify(lfw_pairs[0][0], lfw_pairs[0][1], threshold=5)
    assert e.value.code == "validation_error"
    with pytest.raises(fv.InvalidImageError) as e:
        c.detect(b"definitely not an image")
    assert (e.value.code, e.value.status) == ("invalid_image", 400)
    with pytest.raises(fv.FaceError) as e:
        c.verify(np_png(np.zeros((64, 64, 3), np.uint8)), lfw_pairs[0][0])
    assert (e.value.code, e.value.status) == ("no_face", 422)


def np_png(arr) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ the README

def _readme_examples():
    """The ```python blocks after a `<!-- pkg-example -->` comment."""
    text = (REPO / "README.md").read_text()
    parts = text.split("<!-- pkg-example -->\n```python\n")[1:]
    return [p.split("\n```", 1)[0] for p in parts]


def test_readme_examples_run(fv, server):
    blocks = _readme_examples()
    assert len(blocks) == 2
    for block in blocks:
        code = (block.replace("../shared/data", str(DATA))
                .replace("http://127.0.0.1:8000", server.base)
                .replace("YOUR_API_KEY", server.key))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})
        printed = out.getvalue().splitlines()
        expected = [line.split("# ", 1)[1] for line in block.splitlines()
                    if line.startswith("print(") or line.startswith("    print(")]
        assert len(printed) == len(expected), (printed, expected)
        for got, want in zip(printed, expected):
            # the comment shows the output up to ":" or "..." (ids vary)
            want = want.split(":")[0].split("...")[0].strip()
            assert got.startswith(want), (got, want)
