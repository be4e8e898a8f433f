"""Turned photos over the API: found by default, "try_rotations": false
opts out.

clapton-1.jpg turned 180 degrees (pixels only, no EXIF), where MMOD alone
finds nothing: /detect finds the face by default with its landmarks
mapped back to the turned photo as sent (the eyes below the nose), and
not with try_rotations false (multipart text and JSON boolean); /verify
of the turned photo against clapton-2.jpg says the same person by
default; a value that is not a boolean is 400.  The CLI side, the
orientation check on faces MMOD finds lying on their side, and LFW
numbers: test_cli.py and bench/orient_bench.py.
"""
import base64
import io

import pytest

from conftest import DATA, need
from fvserver import check, collection_server


@pytest.fixture(scope="module")
def turned():
    from PIL import Image
    src = need(DATA / "samples" / "openface" / "clapton-1.jpg")
    buf = io.BytesIO()
    Image.open(src).convert("RGB").transpose(Image.ROTATE_180).save(buf, "JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv, key, _ = collection_server("sqlite", tmp_path_factory.mktemp("fvd"), "turned",
                                    max_body=4_000_000)
    yield srv, key
    assert srv.stop() == 0


def test_detect_turned_by_default(server, turned):
    srv, key = server
    img = {"image": ("t.jpg", turned)}
    body = check(srv.request("POST", "/api/v1/detect", key, files=img), "POST", "/api/v1/detect",
                 200)
    assert body["count"] == 1 and body["faces"][0]["score"] >= 0.9
    lm = body["faces"][0]["landmarks"]
    # upside down in the photo as sent: the nose base lies above the eyes
    assert lm[4][1] < min(lm[0][1], lm[2][1])
    r = srv.request("POST", "/api/v1/detect", key, files=img, data={"try_rotations": "false"})
    assert check(r, "POST", "/api/v1/detect", 200)["count"] == 0
    r = srv.request("POST", "/api/v1/detect", key,
                    json={"image": base64.b64encode(turned).decode(), "try_rotations": False})
    assert check(r, "POST", "/api/v1/detect", 200)["count"] == 0
    r = srv.request("POST", "/api/v1/detect", key, files=img, data={"try_rotations": "maybe"})
    body = check(r, "POST", "/api/v1/detect", 400)
    assert body["error"]["code"] == "validation_error" and "try_rotations" in \
        body["error"]["message"]


def test_verify_turned_by_default(server, turned):
    srv, key = server
    other = need(DATA / "samples" / "openface" / "clapton-2.jpg").read_bytes()
    files = {"image_a": ("t.jpg", turned), "image_b": ("c.jpg", other)}
    body = check(srv.request("POST", "/api/v1/verify", key, files=files), "POST",
                 "/api/v1/verify", 200)
    assert body["verified"] is True
    r = srv.request("POST", "/api/v1/verify", key, files=files, data={"try_rotations": "0"})
    body = check(r, "POST", "/api/v1/verify", 422)
    assert body["error"]["code"] == "no_face"
