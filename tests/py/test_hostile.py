"""Hostile input against a live faceverifyd: every malformed or malicious
request gets a typed 4xx error and leaves the server healthy.

Every case asserts the HTTP status and the JSON error code, and an autouse
fixture asserts afterwards that the server is still healthy.  Images are
generated here with Pillow, most from one sample portrait (clapton-1.jpg,
624x420): colour modes, bit depths, EXIF orientations, multi-frame files,
truncations, polyglots and decompression bombs.  Cases that
test_server.py covers already (a 50 MB Content-Length refused before the
body, chunked bodies past the limit, "{not json", "***not base64***", URL
fields, a text body named x.jpg) are not repeated.

Runs on SQLite, and on PostgreSQL when FACEVERIFY_PG_URL is set (the env
fixture of test_server.py, shared)."""
import base64
import io
import json
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import requests
from PIL import Image, ImageOps

from fvserver import check
from test_formats import heif_enc
from test_server import env, sample  # noqa: F401  (env: the module's server fixture)

PORTRAIT = "openface/clapton-1.jpg"
FAST = 5.0  # seconds: refusals on headers or limits must answer within this


@pytest.fixture(autouse=True)
def still_healthy(env):  # noqa: F811
    yield
    r = env.server.request("GET", "/api/v1/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text


def expect(r, method, path, status, code):
    body = check(r, method, path, status)
    assert body["error"]["code"] == code, body
    return body


def post_image(env, data: bytes, filename="x.jpg", ctype="application/octet-stream",  # noqa: F811
               path="/api/v1/detect"):
    return env.server.request("POST", path, env.a, files={"image": (filename, data, ctype)})


# ------------------------------------------------------------ image helpers

def portrait() -> Image.Image:
    return Image.open(sample(PORTRAIT)).convert("RGB")


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def png_chunk(t: bytes, d: bytes) -> bytes:
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))


def png_raw(w: int, h: int, depth: int, ctype: int, idat: bytes) -> bytes:
    return (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def png_rgb16(im: Image.Image) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    a = np.asarray(im, dtype=np.uint16) * 257
    rows = b"".join(b"\0" + a[y].astype(">u2").tobytes() for y in range(a.shape[0]))
    return png_raw(im.width, im.height, 16, 2, zlib.compress(rows))


def png_bomb(w: int, h: int) -> bytes:
    """A complete, valid PNG of w x h black RGB pixels: tiny on the wire."""
    z = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * w)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return png_raw(w, h, 8, 2, idat)


def jpeg_claiming(w: int, h: int) -> bytes:
    """A real small JPEG whose SOF0 header is rewritten to w x h."""
    b = bytearray(encode(Image.new("RGB", (32, 32), (90, 120, 150)), "JPEG"))
    i = b.find(b"\xff\xc0")
    struct.pack_into(">HH", b, i + 5, h, w)
    return bytes(b)


def heif_claiming(w: int, h: int, avif=False) -> bytes:
    """A real small HEIC/AVIF whose primary image's ispe says w x h."""
    b = bytearray(heif_bytes(Image.new("RGB", (64, 64), (90, 120, 150)), avif))
    i = b.find(b"ispe")
    struct.pack_into(">II", b, i + 8, w, h)
    return bytes(b)


def tiff_entries(b: bytes):
    """(offset, tag, type) of each entry of a little-endian TIFF's first IFD."""
    ifd = struct.unpack_from("<I", b, 4)[0]
    n = struct.unpack_from("<H", b, ifd)[0]
    return [(ifd + 2 + 12 * k, *struct.unpack_from("<HH", b, ifd + 2 + 12 * k)) for k in range(n)]


def tiff_claiming(w: int, h: int) -> bytes:
    """A real small TIFF whose ImageWidth/ImageLength tags say w x h."""
    b = bytearray(encode(Image.new("RGB", (32, 32), (90, 120, 150)), "TIFF"))
    for at, tag, typ in tiff_entries(b):
        if tag in (256, 257):
            struct.pack_into("<H" if typ == 3 else "<I", b, at + 8, w if tag == 256 else h)
    return bytes(b)


def gif_claiming(w: int, h: int) -> bytes:
    """A real small GIF whose logical screen says w x h."""
    b = bytearray(encode(Image.new("RGB", (32, 32), (90, 120, 150)), "GIF"))
    struct.pack_into("<HH", b, 6, w, h)
    return bytes(b)


# EXIF orientation o: the transpose that turns the stored pixels upright
# (as ImageOps.exif_transpose does), and its inverse, which makes the
# stored pixels from an upright picture.
T = Image.Transpose
UPRIGHT = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM,
           5: T.TRANSPOSE, 6: T.ROTATE_270, 7: T.TRANSVERSE, 8: T.ROTATE_90}
INVERSE = {None: None, T.ROTATE_90: T.ROTATE_270, T.ROTATE_270: T.ROTATE_90}


def with_orientation(im: Image.Image, o: int) -> bytes:
    t = UPRIGHT[o]
    stored = im.copy() if t is None else im.transpose(INVERSE.get(t, t))  # FLIP_LEFT_RIGHT == 0
    exif = Image.Exif()
    exif[0x0112] = o
    data = encode(stored, "JPEG", quality=92, exif=exif.tobytes())
    # Sanity check of the generator itself: Pillow reads it back upright.
    back = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert back.size == im.size
    return data


def box_center(face):
    b = face["box"]
    return ((b["left"] + b["right"]) / 2, (b["top"] + b["bottom"]) / 2)


@pytest.fixture(scope="module")
def reference(env):  # noqa: F811
    """The face box of the upright portrait (PNG, lossless)."""
    r = post_image(env, encode(portrait(), "PNG"), "p.png")
    body = check(r, "POST", "/api/v1/detect", 200)
    assert body["count"] == 1, body
    return body["faces"][0]


def assert_same_face(r, reference, tol=None):
    """The face found where the upright PNG's is: its centre within tol px
    (default 6% of the face's side, at least 12 px: JPEG and the detectors'
    box regression move a ~300 px face's box by a few percent, a wrongly
    turned photo by half a face or more)."""
    if tol is None:
        b = reference["box"]
        tol = max(12.0, 0.06 * (b["right"] - b["left"]))
    body = check(r, "POST", "/api/v1/detect", 200)
    assert body["count"] >= 1, body
    assert (body["image"]["width"], body["image"]["height"]) in ((624, 420), (600, 400))
    c = box_center(reference)
    best = min(body["faces"], key=lambda f: np.hypot(*np.subtract(box_center(f), c)))
    assert np.hypot(*np.subtract(box_center(best), c)) < tol, (best["box"], reference["box"])


# ------------------------------------------------------------ unreadable bytes

def heif_bytes(im: Image.Image, avif=False) -> bytes:
    """im as HEIC (or AVIF) by Debian's heif-enc, quality 80."""
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "in.png"
        im.save(src)
        out = heif_enc(src, Path(d) / ("o.avif" if avif else "o.heic"),
                       *(["-A"] if avif else []), "-q", "80")
        return out.read_bytes()


# The formats of issue 18 as their own encoders write the portrait.
NEW_FORMATS = {
    "heic": lambda im: heif_bytes(im),
    "avif": lambda im: heif_bytes(im, avif=True),
    "tiff": lambda im: encode(im, "TIFF", compression="tiff_lzw"),
    "gif": lambda im: encode(im, "GIF"),
    "ppm": lambda im: encode(im, "PPM"),
    "pgm": lambda im: encode(im.convert("L"), "PPM"),
}


def _truncations():
    im = portrait()
    out = []
    fmts = [("jpeg", lambda im: encode(im, "JPEG", quality=90)),
            ("png", lambda im: encode(im, "PNG")),
            ("webp", lambda im: encode(im, "WEBP", quality=80))] + list(NEW_FORMATS.items())
    for name, make in fmts:
        data = make(im)
        for frac in (0.1, 0.5, 0.9):
            out.append(pytest.param(data[: int(len(data) * frac)], id=f"{name}-{frac}"))
    return out


@pytest.mark.parametrize("data", [
    pytest.param(b"", id="zero-bytes"),
    pytest.param(bytes(np.random.default_rng(8).integers(0, 256, 4096, dtype=np.uint8)),
                 id="random-bytes"),
    pytest.param(b"\xff\xd8\xff" + bytes(np.random.default_rng(9).integers(0, 256, 2000,
                                                                            dtype=np.uint8)),
                 id="jpeg-magic-then-random"),
    pytest.param(b"Dear server,\nthis is a letter, not a photo.\n" * 20, id="text-as-jpg"),
])
def test_unreadable_bytes(env, data):  # noqa: F811
    r = post_image(env, data, "photo.jpg", "image/jpeg")
    expect(r, "POST", "/api/v1/detect", 400, "invalid_image")


@pytest.mark.parametrize("data", _truncations())
def test_truncated(env, data):  # noqa: F811
    r = post_image(env, data, "cut.img", "image/jpeg")
    expect(r, "POST", "/api/v1/detect", 400, "invalid_image")


@pytest.mark.parametrize("data,name", [
    (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" '
     b'height="100"><circle cx="50" cy="50" r="40"/></svg>', "SVG"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n",
     "PDF"),
    (b"\0\0\0\x18ftypisom\0\0\0\0isommp41" + b"\0" * 64, "MP4"),  # a video, not HEIF
    (b"P7\nWIDTH 2\nHEIGHT 1\nDEPTH 1\nMAXVAL 255\nENDHDR\n\0\0", "PAM"),
    (b"II+\0\x08\0\0\0" + b"\0" * 64, "BigTIFF"),
])
def test_outside_allowlist(env, data, name):  # noqa: F811
    r = post_image(env, data, "x." + name.lower(), "image/" + name.lower())
    body = expect(r, "POST", "/api/v1/detect", 400, "invalid_image")
    assert name in body["error"]["message"] and "not supported" in body["error"]["message"]


# ------------------------------------------------------------ lies and polyglots

def test_lying_content_type(env, reference):  # noqa: F811
    jpeg = sample(PORTRAIT).read_bytes()
    for filename, ctype in [("x.png", "image/png"), ("x.txt", "text/plain"),
                            ("x.svg", "image/svg+xml"), ("noext", "application/pdf")]:
        assert_same_face(post_image(env, jpeg, filename, ctype), reference)
    url = "data:image/gif;base64," + base64.b64encode(jpeg).decode()
    r = env.server.request("POST", "/api/v1/detect", env.a, json={"image": url})
    assert_same_face(r, reference)


def test_polyglots(env, reference):  # noqa: F811
    jpeg = sample(PORTRAIT).read_bytes()
    html = b"<html><script>alert(1)</script></html>"
    # A JPEG that is also an HTML page and a ZIP (data after EOI, a COM
    # segment with markup): decoded as the JPEG its signature says.
    com = b"\xff\xfe" + struct.pack(">H", len(html) + 2) + html
    poly = jpeg[:2] + com + jpeg[2:] + b"PK\x05\x06" + b"\0" * 18 + html
    assert_same_face(post_image(env, poly, "x.html", "text/html"), reference)
    # Markup or a PDF header first, a real image inside: refused.
    for data, name in [(b"<svg>" + jpeg, "SVG"), (b"%PDF-1.7\n" + jpeg, "PDF"),
                       (b"P6\n" + jpeg, "pnm"), (b"II*\0" + jpeg, "tiff")]:
        body = expect(post_image(env, data), "POST", "/api/v1/detect", 400, "invalid_image")
        assert name in body["error"]["message"]
    # a GIF signature on a PNG: its bytes read as a 20617 x 18254 screen
    body = expect(post_image(env, b"GIF89a" + encode(portrait(), "PNG")), "POST",
                  "/api/v1/detect", 413, "payload_too_large")
    assert "gif" in body["error"]["message"]


# ------------------------------------------------------------ sizes

@pytest.mark.parametrize("make", [
    pytest.param(lambda: png_bomb(8000, 8000), id="png-bomb-64MP"),
    pytest.param(lambda: png_raw(60000, 60000, 8, 2, zlib.compress(b"\0" * 4096)),
                 id="png-header-60000"),
    pytest.param(lambda: jpeg_claiming(60000, 60000), id="jpeg-header-60000"),
    pytest.param(lambda: heif_claiming(60000, 60000), id="heic-ispe-60000"),
    pytest.param(lambda: heif_claiming(60000, 60000, avif=True), id="avif-ispe-60000"),
    pytest.param(lambda: tiff_claiming(60000, 60000), id="tiff-tags-60000"),
    pytest.param(lambda: gif_claiming(60000, 60000), id="gif-screen-60000"),
    pytest.param(lambda: b"P6\n60000 60000\n255\n" + b"\0" * 1000, id="ppm-header-60000"),
    pytest.param(lambda: b"P2\n# 25 GP in ASCII\n200000 125000\n255\n0 0 0", id="pgm-header-25G"),
])
def test_huge_dimensions_refused_fast(env, make):  # noqa: F811
    data = make()
    assert len(data) < 300_000  # small on the wire
    t0 = time.monotonic()
    r = post_image(env, data)
    elapsed = time.monotonic() - t0
    body = expect(r, "POST", "/api/v1/detect", 413, "payload_too_large")
    assert "limit" in body["error"]["message"] or "large" in body["error"]["message"]
    assert elapsed < FAST, elapsed


def _lying_offsets():
    def tiff_far_strip():
        b = bytearray(encode(portrait(), "TIFF"))
        for at, tag, typ in tiff_entries(b):
            if tag == 273:  # StripOffsets: an array, or the one value inline
                n = struct.unpack_from("<I", b, at + 4)[0]
                arr = struct.unpack_from("<I", b, at + 8)[0] if n > 1 else at + 8
                struct.pack_into("<I", b, arr, 0x7FFFFFF0)
        return bytes(b)

    def heic_far_extent():
        """The primary item's data (iloc base_offset) past the end."""
        b = bytearray(heif_bytes(portrait()))
        i = b.find(b"iloc")
        assert b[i + 4] == 0, "heif-enc writes iloc version 0"
        offset_size, base_size = b[i + 8] >> 4, b[i + 9] >> 4
        assert base_size == 4 or offset_size == 4
        at = i + 12 + 2 + 2  # after item_count: item_ID, data_reference_index
        if base_size == 4:
            struct.pack_into(">I", b, at, 0x7FFFFFF0)
        else:  # no base offset: the first extent's offset
            struct.pack_into(">I", b, at + 2, 0x7FFFFFF0)
        return bytes(b)

    def gif_frame_overflow():
        b = bytearray(encode(portrait(), "GIF"))
        i = b.find(b"\x2c", 13 + 3 * 256)  # the image descriptor
        struct.pack_into("<HHHH", b, i + 1, 65000, 65000, 65535, 65535)
        return bytes(b)

    return [
        pytest.param(tiff_far_strip, id="tiff-strip-offset-past-end"),
        pytest.param(heic_far_extent, id="heic-iloc-past-end"),
        pytest.param(gif_frame_overflow, id="gif-frame-off-screen-huge"),
        pytest.param(lambda: b"P5\n4000 4000\n255\n" + b"\0" * 1000, id="pgm-raster-missing"),
        pytest.param(lambda: b"P3\n2 1\n255\n1 2 3 4 5 300\n", id="ppm-sample-above-maxval"),
        pytest.param(lambda: b"P5\n1 1\n99999999999999999999\n\0", id="pgm-maxval-overflow"),
    ]


@pytest.mark.parametrize("make", _lying_offsets())
def test_lying_offsets(env, make):  # noqa: F811
    """Files of the new formats whose offsets or sizes lie inside the limits:
    400 invalid_image, quickly, nothing allocated for the claimed size."""
    t0 = time.monotonic()
    r = post_image(env, make())
    body = check(r, "POST", "/api/v1/detect")
    # the GIF frame is clipped to the screen and refused as too large a frame
    assert (r.status_code, body["error"]["code"]) in ((400, "invalid_image"),
                                                      (413, "payload_too_large")), body
    if "gif" not in body["error"]["message"]:
        assert r.status_code == 400, body
    assert time.monotonic() - t0 < FAST


def test_upload_limit_multipart(env):  # noqa: F811
    """A multipart upload whose Content-Length is past the limit: 413 after
    the headers, with the client still holding most of the body."""
    s = env.server
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"big.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    total = len(head) + 5_000_000
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
        c.sendall((f"POST /api/v1/detect HTTP/1.1\r\nHost: x\r\nX-API-Key: {env.a}\r\n"
                   f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                   f"Content-Length: {total}\r\n\r\n").encode() + head + b"\xff\xd8\xff")
        data = b""
        while not data.rstrip().endswith(b"}"):
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    assert time.monotonic() - t0 < FAST
    head_, _, body = data.partition(b"\r\n\r\n")
    assert head_.startswith(b"HTTP/1.1 413"), data[:200]
    assert json.loads(body)["error"]["code"] == "payload_too_large"


# ------------------------------------------------------------ formats that must work

def _modes():
    def rgba(im):
        a = im.convert("RGBA")
        a.putalpha(Image.linear_gradient("L").resize(im.size).point(lambda v: 128 + v // 2))
        return a
    return [
        pytest.param(lambda im: encode(im.convert("CMYK"), "JPEG", quality=92), id="jpeg-cmyk"),
        pytest.param(lambda im: encode(im.convert("L"), "JPEG", quality=92), id="jpeg-gray"),
        pytest.param(lambda im: encode(im, "JPEG", quality=92, progressive=True),
                     id="jpeg-progressive"),
        pytest.param(lambda im: encode(im.convert("L"), "PNG"), id="png-gray"),
        pytest.param(lambda im: encode(Image.fromarray(
            np.asarray(im.convert("L"), dtype=np.uint16) * 257), "PNG"), id="png-gray16"),
        pytest.param(png_rgb16, id="png-rgb16"),
        pytest.param(lambda im: encode(im.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
                     id="png-palette"),
        pytest.param(lambda im: encode(rgba(im), "PNG"), id="png-rgba"),
        pytest.param(lambda im: encode(im.convert("LA"), "PNG"), id="png-gray-alpha"),
        pytest.param(lambda im: encode(rgba(im), "WEBP", quality=90), id="webp-alpha"),
        pytest.param(lambda im: encode(im, "WEBP", lossless=True), id="webp-lossless"),
        pytest.param(lambda im: encode(im.convert("P", palette=Image.Palette.ADAPTIVE), "BMP"),
                     id="bmp-palette"),
        # 32-bit BMP: cropped to stay under the test server's 1 MB body limit
        pytest.param(lambda im: encode(rgba(im).crop((0, 0, 600, 400)), "BMP"), id="bmp-32"),
    ]


@pytest.mark.parametrize("make", _modes())
def test_modes_find_the_face(env, reference, make):  # noqa: F811
    assert_same_face(post_image(env, make(portrait()), "x"), reference)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(env, reference, orientation):  # noqa: F811
    data = with_orientation(portrait(), orientation)
    assert_same_face(post_image(env, data), reference)


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_multi_frame_first_frame(env, reference, fmt):  # noqa: F811
    """Animated WebP and APNG: the first frame is used."""
    im = portrait()
    frames = [Image.new("RGB", im.size, (20, 20, 20)), im.transpose(T.FLIP_TOP_BOTTOM)]
    data = encode(im, fmt, save_all=True, append_images=frames, duration=100, loop=0,
                  **({"lossless": True} if fmt == "WEBP" else {}))
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert_same_face(post_image(env, data), reference)


# ------------------------------------------------------------ multipart

def raw_post(env, path, body: bytes, ctype: str, extra_headers=""):  # noqa: F811
    return env.server.request("POST", path, env.a, data=body,
                              headers={"Content-Type": ctype} | (extra_headers or {}))


def part(name, value: bytes, filename=None, headers=b""):
    disp = f'Content-Disposition: form-data; name="{name}"'
    if filename:
        disp += f'; filename="{filename}"'
    return disp.encode() + b"\r\n" + headers + b"\r\n" + value


def multipart(parts, boundary="xYz"):
    b = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return b + b"--" + boundary.encode() + b"--\r\n"


def test_multipart_missing_boundary(env):  # noqa: F811
    body = multipart([part("name", b"ada")])
    r = raw_post(env, "/api/v1/subjects", body, "multipart/form-data")
    expect(r, "POST", "/api/v1/subjects", 400, "validation_error")
    r = raw_post(env, "/api/v1/detect", multipart([part("image", b"x", "a.jpg")]),
                 "multipart/form-data; boundary=")
    expect(r, "POST", "/api/v1/detect", 400, "validation_error")


def test_multipart_wrong_boundary_and_unterminated(env):  # noqa: F811
    jpeg = sample(PORTRAIT).read_bytes()
    r = raw_post(env, "/api/v1/detect", multipart([part("image", jpeg, "a.jpg")], "other"),
                 "multipart/form-data; boundary=xYz")
    expect(r, "POST", "/api/v1/detect", 400, "validation_error")
    cut = multipart([part("image", b"\xff\xd8\xff\xe0junk", "a.jpg")])[:-9]
    r = raw_post(env, "/api/v1/detect", cut, "multipart/form-data; boundary=xYz")
    expect(r, "POST", "/api/v1/detect", 400, "invalid_image")


def test_multipart_nested(env):  # noqa: F811
    """multipart/mixed inside a form part: no field 'image' comes out of it."""
    inner = multipart([part("image", b"\xff\xd8\xffnot really", "a.jpg")], "inner")
    outer = multipart([part("files", inner, headers=b"Content-Type: multipart/mixed; "
                                                    b"boundary=inner\r\n")])
    r = raw_post(env, "/api/v1/detect", outer, "multipart/form-data; boundary=xYz")
    body = check(r, "POST", "/api/v1/detect")
    assert r.status_code == 400 and body["error"]["code"] in ("validation_error",
                                                              "invalid_image"), body


def test_multipart_huge_part_headers(env):  # noqa: F811
    pad = b"X-Pad: " + b"p" * 200_000 + b"\r\n"
    body = multipart([part("image", b"\xff\xd8\xff", "a.jpg", headers=pad)])
    r = raw_post(env, "/api/v1/detect", body, "multipart/form-data; boundary=xYz")
    expect(r, "POST", "/api/v1/detect", 400, "validation_error")
    long_name = multipart([part("n" * 5000, b"1")])
    r = raw_post(env, "/api/v1/subjects", long_name, "multipart/form-data; boundary=xYz")
    expect(r, "POST", "/api/v1/subjects", 400, "validation_error")


def test_huge_http_header(env):  # noqa: F811
    """Request headers past the gate's 16 KiB: 431 as JSON with the
    security headers (libmicrohttpd used to send its own HTML page)."""
    r = env.server.request("GET", "/api/v1/subjects", env.a, headers={"X-Pad": "h" * 200_000})
    assert r.status_code == 431, (r.status_code, r.text[:200])
    assert r.json()["error"]["code"] == "header_fields_too_large", r.text
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Connection"] == "close"


def test_multipart_thousands_of_parts(env):  # noqa: F811
    body = multipart([part(f"f{i}", b"1") for i in range(5000)])
    r = raw_post(env, "/api/v1/subjects", body, "multipart/form-data; boundary=xYz")
    body_ = expect(r, "POST", "/api/v1/subjects", 400, "validation_error")
    assert "too many" in body_["error"]["message"]
    same = multipart([part("name", b"a") for _ in range(5000)])  # one field, appended
    r = raw_post(env, "/api/v1/subjects", same, "multipart/form-data; boundary=xYz")
    expect(r, "POST", "/api/v1/subjects", 400, "validation_error")  # 5000 bytes > name limit


# ------------------------------------------------------------ JSON, base64, data URLs

@pytest.mark.parametrize("body", [
    b"", b"[1, 2]", b'"image"', b"5", b"null", b'{"image": "abc', b'{"a": 1} trailing',
    b"[" * 100_000, b'{"name": "x", "name": "y"}', b'{"image": "\xff\xfe"}',
    b'{"image": "ok"', b"{'image': 'single quotes'}", b'{"image": NaN}',
    b'{"name": "\\u0\xda\x9a"}',  # jansson's message quotes these bytes (was a 500)
])
def test_malformed_json(env, body):  # noqa: F811
    r = raw_post(env, "/api/v1/detect", body, "application/json")
    expect(r, "POST", "/api/v1/detect", 400, "validation_error")


@pytest.mark.parametrize("image,code", [
    (12345, "validation_error"), ({}, "validation_error"), ([], "validation_error"),
    (True, "validation_error"), ("", "invalid_image"), ("QUJD", "invalid_image"),
    ("QUJD====", "validation_error"), ("data:image/jpeg,rawbytes", "validation_error"),
    ("data:image/jpeg;base64", "validation_error"), ("data:;base64,!!!!", "validation_error"),
    ("data:image/jpeg;base64,", "invalid_image"), ("data:,;base64", "validation_error"),
    ("file:///etc/passwd", "validation_error"), ("ftp://example.com/x.jpg", "validation_error"),
    ("//example.com/x.jpg", "validation_error"), ("\u00e9\u00e9\u00e9\u00e9", "validation_error"),
])
def test_bad_base64_and_data_urls(env, image, code):  # noqa: F811
    r = env.server.request("POST", "/api/v1/detect", env.a, json={"image": image})
    expect(r, "POST", "/api/v1/detect", 400, code)


@pytest.mark.parametrize("path,payload", [
    ("/api/v1/detect", {"img": "QUJD"}),
    ("/api/v1/detect", {"Image": "QUJD"}),
    ("/api/v1/verify", {"image1": "QUJD", "image2": "QUJD"}),
    ("/api/v1/identify", {"images": ["QUJD"]}),
    ("/api/v1/verify/embeddings", {"embeddings_a": [0.0] * 128, "embeddings_b": [0.0] * 128}),
    ("/api/v1/identify/embeddings", {"vector": [0.0] * 128}),
    ("/api/v1/identify/embeddings", {"embedding": [0.0] * 128, "embeddings": [[0.0] * 128]}),
    ("/api/v1/subjects", {"Name": "ada"}),
])
def test_wrong_field_names(env, path, payload):  # noqa: F811
    r = env.server.request("POST", path, env.a, json=payload)
    expect(r, "POST", path, 400, "validation_error")


def test_wrong_field_names_multipart(env):  # noqa: F811
    jpeg = sample(PORTRAIT).read_bytes()
    r = env.server.request("POST", "/api/v1/detect", env.a, files={"photo": ("a.jpg", jpeg)})
    body = expect(r, "POST", "/api/v1/detect", 400, "validation_error")
    assert "image" in body["error"]["message"]


# ------------------------------------------------------------ absurd numbers

ABSURD = [-1, 0, 10**12, 2**63, -2**63, 1.5, "abc", "nan", "inf", "-inf", "1e999", "", " ",
          True, [], {}, "5; DROP TABLE subjects"]


@pytest.mark.parametrize("name", ["top_k", "k", "threshold"])
@pytest.mark.parametrize("value", ABSURD, ids=repr)
def test_absurd_search_params(env, name, value):  # noqa: F811
    if name == "threshold" and value == 1.5:
        pytest.skip("1.5 is a valid threshold")
    r = env.server.request("POST", "/api/v1/identify/embeddings", env.a,
                           json={"embedding": [0.01] * 128, name: value})
    expect(r, "POST", "/api/v1/identify/embeddings", 400, "validation_error")


@pytest.mark.parametrize("query", [
    "limit=0", "limit=-1", "limit=1001", "limit=1e10", "limit=abc", "limit=1.5",
    "limit=99999999999999999999999999", "offset=-1", "offset=1e20", "offset=abc",
    "offset=0.5", "limit=nan", "limit=", "offset=%00", "limit=%ff",
])
def test_absurd_pagination(env, query):  # noqa: F811
    r = env.server.request("GET", f"/api/v1/subjects?{query}", env.a)
    expect(r, "GET", "/api/v1/subjects", 400, "validation_error")


def test_pagination_far_past_the_end(env):  # noqa: F811
    r = env.server.request("GET", "/api/v1/subjects?limit=1000&offset=1000000000", env.a)
    body = check(r, "GET", "/api/v1/subjects", 200)
    assert body["results"] == [] and body["offset"] == 1000000000


@pytest.mark.parametrize("embedding", [
    [0.0] * 127, [0.0] * 129, ["0"] * 128, [None] * 128, [1e300] * 128, [[0.0]] * 128,
    "0" * 128, {"0": 0},
], ids=["127", "129", "strings", "nulls", "huge", "nested", "string", "object"])
def test_absurd_embeddings(env, embedding):  # noqa: F811
    r = env.server.request("POST", "/api/v1/verify/embeddings", env.a,
                           json={"embedding_a": embedding, "embedding_b": [0.0] * 128})
    expect(r, "POST", "/api/v1/verify/embeddings", 400, "validation_error")
    r = env.server.request("POST", "/api/v1/identify/embeddings", env.a,
                           json={"embeddings": [embedding] * 65})
    expect(r, "POST", "/api/v1/identify/embeddings", 400, "validation_error")


# ------------------------------------------------------------ unknown ids

@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v1/subjects/999999999"), ("GET", "/api/v1/subjects/0"),
    ("GET", "/api/v1/subjects/-1"), ("GET", "/api/v1/subjects/1e3"),
    ("GET", "/api/v1/subjects/abc"), ("GET", "/api/v1/subjects/99999999999999999999999"),
    ("GET", "/api/v1/subjects/9223372036854775807"), ("DELETE", "/api/v1/subjects/999999999"),
    ("GET", "/api/v1/subjects/999999999/faces"), ("POST", "/api/v1/subjects/999999999/faces"),
    ("POST", "/api/v1/subjects/999999999/verify"),
    ("DELETE", "/api/v1/subjects/999999999/faces/1"),
    ("DELETE", "/api/v1/subjects/1/faces/abc"),
    ("GET", "/api/v1/subjects/%ff%fe"),
])
def test_unknown_ids(env, method, path):  # noqa: F811
    r = env.server.request(method, path, env.a)
    expect(r, method, path, 404, "not_found")


def test_nul_id_refused(env):  # noqa: F811
    """A NUL byte in the URL is refused before routing (issue 16.8)."""
    r = env.server.request("GET", "/api/v1/subjects/%00", env.a)
    expect(r, "GET", "/api/v1/subjects/%00", 400, "validation_error")


@pytest.mark.parametrize("path", ["/api/v1/%ff%fe", "/api/%c0%af", "/%ed%a0%80x"])
def test_unknown_routes_with_bad_bytes(env, path):  # noqa: F811
    """The path is quoted in the error message: not UTF-8 must not make it
    a 500 (jansson refuses such strings)."""
    r = env.server.request("GET", path, env.a)
    assert r.status_code == 404, r.text[:300]
    assert r.json()["error"]["code"] == "not_found"


# ------------------------------------------------------------ names and metadata

def create(env, payload=None, **kw):  # noqa: F811
    return env.server.request("POST", "/api/v1/subjects", env.b, json=payload, **kw)


def test_name_lengths(env):  # noqa: F811
    r = create(env, {"name": "n" * 200})
    sid = check(r, "POST", "/api/v1/subjects", 201)["id"]
    env.server.request("DELETE", f"/api/v1/subjects/{sid}", env.b)
    for n in (201, 100_000):
        expect(create(env, {"name": "n" * n}), "POST", "/api/v1/subjects", 400,
               "validation_error")
    expect(create(env, {"name": "n" * 2_000_000}), "POST", "/api/v1/subjects", 413,
           "payload_too_large")


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"a\xc0\xafb", b"\xed\xa0\x80", b"ok\x80",
                                 b"\xf4\x90\x80\x80"])
def test_non_utf8_names(env, raw):  # noqa: F811
    """Form fields are raw bytes: a name that is not UTF-8 is refused (it
    could be neither stored as text nor answered in JSON)."""
    s = env.server
    body = multipart([part("name", raw)])
    r = raw_post(env, "/api/v1/subjects", body, "multipart/form-data; boundary=xYz")
    expect(r, "POST", "/api/v1/subjects", 400, "validation_error")
    enc = "".join(f"%{c:02x}" for c in raw)
    r = s.request("POST", "/api/v1/subjects", env.b, data=f"name={enc}",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    expect(r, "POST", "/api/v1/subjects", 400, "validation_error")
    r = raw_post(env, "/api/v1/subjects", b'{"name": "' + raw + b'"}', "application/json")
    expect(r, "POST", "/api/v1/subjects", 400, "validation_error")


def test_nul_in_name(env):  # noqa: F811
    expect(create(env, {"name": "a\u0000b"}), "POST", "/api/v1/subjects", 400,
           "validation_error")


def test_unicode_name_and_metadata_round_trip(env):  # noqa: F811
    name = "\u00c9lodie \u4e2d\u6587 \u05e9\u05dc\u05d5\u05dd \U0001f600"
    meta = {"note": "\u202eevil rtl\u202c", "deep": [[[[{"k": "v"}]]]], "n": 1.25,
            "quote": "'; DROP TABLE subjects; --"}
    r = create(env, {"name": name, "metadata": meta})
    body = check(r, "POST", "/api/v1/subjects", 201)
    r = env.server.request("GET", f"/api/v1/subjects/{body['id']}", env.b)
    got = check(r, "GET", "/api/v1/subjects/1", 200)
    assert got["name"] == name and got["metadata"] == meta
    env.server.request("DELETE", f"/api/v1/subjects/{body['id']}", env.b)


@pytest.mark.parametrize("meta", [
    {"nul": "a\u0000b"}, {"\u0000key": 1}, {"big": "m" * 900_000},
    {"nested": json.loads("[" * 400 + "]" * 400)},
], ids=["nul-value", "nul-key", "big", "deep"])
def test_awkward_metadata(env, meta):  # noqa: F811
    """Stored and read back exactly, or refused with a 4xx; never a 5xx."""
    r = create(env, {"name": "meta", "metadata": meta})
    body = check(r, "POST", "/api/v1/subjects")
    if r.status_code == 201:
        r = env.server.request("GET", f"/api/v1/subjects/{body['id']}", env.b)
        assert check(r, "GET", "/api/v1/subjects/1", 200)["metadata"] == meta
        env.server.request("DELETE", f"/api/v1/subjects/{body['id']}", env.b)
    else:
        assert r.status_code in (400, 413), r.text[:300]
        assert body["error"]["code"] in ("validation_error", "payload_too_large"), body


@pytest.mark.parametrize("meta", ["string", 5, [1, 2], True])
def test_metadata_not_an_object(env, meta):  # noqa: F811
    expect(create(env, {"name": "m", "metadata": meta}), "POST", "/api/v1/subjects", 400,
           "validation_error")


# ------------------------------------------------------------ slow clients

def test_slowloris_does_not_stall_others(env):  # noqa: F811
    """N connections trickle header bytes; normal requests still complete."""
    s = env.server
    n_slow = 64
    stop = threading.Event()
    socks = []
    for _ in range(n_slow):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        socks.append(c)

    def trickle():
        while not stop.is_set():
            for c in socks:
                try:
                    c.sendall(b"X-Slow: a\r\n")
                except OSError:
                    pass
            stop.wait(0.5)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        for _ in range(5):
            t0 = time.monotonic()
            r = s.request("GET", "/api/v1/subjects?limit=1", env.a, timeout=FAST)
            check(r, "GET", "/api/v1/subjects", 200)
            r = s.request("POST", "/api/v1/verify/embeddings", env.a, timeout=FAST,
                          json={"embedding_a": [0.0] * 128, "embedding_b": [0.0] * 128})
            check(r, "POST", "/api/v1/verify/embeddings", 200)
            assert time.monotonic() - t0 < FAST
            time.sleep(0.3)
    finally:
        stop.set()
        t.join()
        for c in socks:
            c.close()


def test_unauthenticated_garbage_never_500(env):  # noqa: F811
    """Bad input without a key is a JSON 401: the body is never parsed
    before the key is checked (issue 16.2)."""
    s = env.server
    r = requests.post(s.url("/api/v1/detect"), data=b"\xff" * 100,
                      headers={"Content-Type": "application/json"}, timeout=30)
    expect(r, "POST", "/api/v1/detect", 401, "unauthorized")
    r = requests.post(s.url("/api/v1/detect"), data=b"{}",
                      headers={"Content-Type": "application/json", "X-API-Key": "\u00e9x"},
                      timeout=30)
    expect(r, "POST", "/api/v1/detect", 401, "unauthorized")
