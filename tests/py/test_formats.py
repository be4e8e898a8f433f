"""Phone and legacy photo formats through the CLI and the API: HEIC, AVIF,
TIFF, GIF and PBM/PGM/PPM (issue 18, formats).

Every file is made at test time, into a temporary folder, from one LFW
photo by that format's own encoder: Debian's heif-enc (libheif with x265
and libaom) for HEIC and AVIF, tests/tools/make_heif (libheif's encoder
with an irot transform, what a phone writes) for the rotated HEIC, and
Pillow for TIFF, GIF and binary PGM/PPM.  Pillow writes no ASCII Netpbm
and no 16-bit PPM, so those few are written here from the same pixels
(the formats are a text header and the samples).

Each file must give the same face as the PNG of the same pixels: the
embedding distance is bounded per format by what its encoding loses
(measured values in the comments; the decision threshold is ~0.4-0.5, so
the bounds are far from changing a verdict).  Grey files are compared with
the grey PNG.  The CLI (`faceverify embed --json`) and the API
(`/api/v1/verify` against the PNG, `/api/v1/detect`) see every format.
"""
import io
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import BUILD, DATA, REPO, need, run_cli, run_json
from fvserver import check
from test_server import env  # noqa: F401  (the module's server fixture)

PHOTO = "lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg"
OTHER = "lfw/AJ_Cook/AJ_Cook_0001.jpg"
T = Image.Transpose


def dist(a, b) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def save(im: Image.Image, path, fmt=None, **kw):
    im.save(path, fmt, **kw)
    return path


def pnm_text(a: np.ndarray, maxval: int) -> bytes:
    """ASCII PGM (2-D) or PPM (3-D) of integer samples, with a comment."""
    h, w = a.shape[:2]
    magic = "P3" if a.ndim == 3 else "P2"
    rows = "\n".join(" ".join(str(v) for v in row.ravel()) for row in a)
    return f"{magic}\n# made by test_formats.py\n{w} {h}\n{maxval}\n{rows}\n".encode()


def pnm_16(a: np.ndarray) -> bytes:
    """Binary 16-bit PPM (maxval 65535, big-endian samples)."""
    h, w = a.shape[:2]
    return f"P6\n{w} {h}\n65535\n".encode() + a.astype(">u2").tobytes()


def heif_enc(src, out, *args):
    exe = shutil.which("heif-enc")
    if not exe:
        pytest.fail("heif-enc not installed (Debian libheif-examples; scripts/bootstrap.sh)")
    subprocess.run([exe, *args, "-o", str(out), str(src)], check=True, capture_output=True,
                   timeout=120)
    return out


def make_heif(src, out, fmt, orient, quality=90):
    # an ASan build of the tool: x265's own leaks are not ours (the file says)
    env = dict(os.environ, LSAN_OPTIONS=f"suppressions={REPO / 'tests/c/lsan_x265.supp'}")
    subprocess.run([str(BUILD / "bin" / "make_heif"), str(src), str(out), fmt, str(quality),
                    str(orient)], check=True, capture_output=True, timeout=120, env=env)
    return out


# name -> (maker(dir, upright RGB image, paths) -> path, reference, bound).
# Bounds on the distance to the PNG's embedding.  Lossless files give the
# PNG's exact pixels: distance 0 (measured), bound 1e-5.  Lossy ones were
# measured on this photo at quality 90: HEIC 0.033-0.037, AVIF 0.038-0.052,
# JPEG-in-TIFF 0.037, GIF (256 colours) 0.076; their bounds leave ~50 %
# margin and stay well under what a wrong orientation gives (the stored
# pixels of the rotated cases: 0.66; of the mirrored one: 0.17).
def _cases():
    def stored(im, o):
        """Pixels that orientation o turns into im (the EXIF/TIFF table)."""
        inv = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM,
               5: T.TRANSPOSE, 6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}[o]
        return im if inv is None else im.transpose(inv)

    return {
        "heic": (lambda d, im, p: heif_enc(p["png"], d / "a.heic", "-q", "90"), "rgb", 0.08),
        "avif": (lambda d, im, p: heif_enc(p["png"], d / "a.avif", "-A", "-q", "90"), "rgb",
                 0.08),
        "heic-rotated-6": (lambda d, im, p: make_heif(
            save(stored(im, 6), d / "s6.png"), d / "r6.heic", "heic", 6), "rgb", 0.08),
        "heic-rotated-8": (lambda d, im, p: make_heif(
            save(stored(im, 8), d / "s8.png"), d / "r8.heic", "heic", 8), "rgb", 0.08),
        "avif-mirrored-2": (lambda d, im, p: make_heif(
            save(stored(im, 2), d / "s2.png"), d / "m2.avif", "avif", 2), "rgb", 0.08),
        "tiff": (lambda d, im, p: save(im, d / "a.tif"), "rgb", 1e-5),
        "tiff-lzw": (lambda d, im, p: save(im, d / "lzw.tif", compression="tiff_lzw"), "rgb",
                     1e-5),
        "tiff-deflate": (lambda d, im, p: save(im, d / "zip.tif", compression="tiff_adobe_deflate"),
                         "rgb", 1e-5),
        "tiff-jpeg": (lambda d, im, p: save(im, d / "jpg.tif", compression="jpeg", quality=90),
                      "rgb", 0.08),
        "tiff-grey": (lambda d, im, p: save(im.convert("L"), d / "g.tif"), "grey", 1e-5),
        "tiff-rotated-6": (lambda d, im, p: save(stored(im, 6), d / "r6.tif",
                                                 tiffinfo={274: 6}), "rgb", 1e-5),
        "tiff-rotated-5": (lambda d, im, p: save(stored(im, 5), d / "r5.tif",
                                                 tiffinfo={274: 5}), "rgb", 1e-5),
        "tiff-multipage": (lambda d, im, p: save(
            im, d / "multi.tif", save_all=True,
            append_images=[Image.open(need(DATA / OTHER)), Image.new("RGB", (64, 64))]),
            "rgb", 1e-5),
        # GIF: 256 colours (Pillow's quantiser); a real loss.
        "gif": (lambda d, im, p: save(im, d / "a.gif"), "rgb", 0.12),
        "gif-grey": (lambda d, im, p: save(im.convert("L"), d / "g.gif"), "grey", 1e-5),
        "ppm": (lambda d, im, p: save(im, d / "a.ppm"), "rgb", 1e-5),
        "pgm": (lambda d, im, p: save(im.convert("L"), d / "a.pgm"), "grey", 1e-5),
        "pgm-16": (lambda d, im, p: save(Image.fromarray(
            np.asarray(im.convert("L"), dtype=np.uint16) * 257), d / "g16.pgm"), "grey", 1e-5),
        "ppm-16": (lambda d, im, p: _write(d / "c16.ppm", pnm_16(
            np.asarray(im, dtype=np.uint16) * 257)), "rgb", 1e-5),
        "ppm-ascii": (lambda d, im, p: _write(d / "t.ppm", pnm_text(np.asarray(im), 255)),
                      "rgb", 1e-5),
        "pgm-ascii-16": (lambda d, im, p: _write(d / "t16.pgm", pnm_text(
            np.asarray(im.convert("L"), dtype=np.uint32) * 257, 65535)), "grey", 1e-5),
    }


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


CASES = _cases()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Every case's file, and the reference PNGs (colour and grey)."""
    d = tmp_path_factory.mktemp("formats")
    im = Image.open(need(DATA / PHOTO)).convert("RGB")
    paths = {"png": save(im, d / "ref.png"), "grey": save(im.convert("L"), d / "ref-grey.png")}
    out = dict(paths)
    for name, (maker, _, _) in CASES.items():
        out[name] = maker(d, im, paths)
    return out


@pytest.fixture(scope="module")
def ref_embeddings(made):
    return {k: run_json("embed", made["png" if k == "rgb" else "grey"])["embedding"]
            for k in ("rgb", "grey")}


@pytest.mark.parametrize("name", list(CASES))
def test_cli_embeds_like_png(made, ref_embeddings, name):
    _, ref, bound = CASES[name]
    j = run_json("embed", made[name])
    d = dist(j["embedding"], ref_embeddings[ref])
    assert d < bound, (name, d)


@pytest.mark.parametrize("name", ["heic", "avif", "heic-rotated-6", "tiff-rotated-5",
                                  "tiff-multipage", "gif", "pgm-16", "ppm-ascii"])
def test_cli_detect_sizes(made, name):
    """Upright, first page: the decoded size is the PNG's (250 x 250 LFW
    crops are square, so the rotated cases check it by the face)."""
    j = run_json("detect", made[name])
    assert (j["image"]["width"], j["image"]["height"]) == (250, 250), j["image"]
    assert len(j["faces"]) == 1, j


def test_cli_verify_across_formats(made):
    """HEIC against AVIF: the same person (exit 0); against another person:
    different (exit 1)."""
    j = run_json("verify", made["heic"], made["avif"])
    assert j["verified"] is True and j["distance"] < 0.1, j
    other = need(DATA / OTHER)
    j = run_json("verify", made["tiff"], other, check=1)
    assert j["verified"] is False


@pytest.mark.parametrize("name", list(CASES))
def test_api_verify_against_png(env, made, name):  # noqa: F811
    _, ref, bound = CASES[name]
    r = env.server.request("POST", "/api/v1/verify", env.a, files={
        "image_a": (made[name].name, made[name].read_bytes(), "application/octet-stream"),
        "image_b": ("ref.png", made["png" if ref == "rgb" else "grey"].read_bytes())})
    body = check(r, "POST", "/api/v1/verify", 200)
    assert body["verified"] is True and body["distance"] < bound, (name, body["distance"])


@pytest.mark.parametrize("name", ["heic", "avif", "tiff", "gif", "ppm", "pgm"])
def test_api_detect(env, made, name):  # noqa: F811
    data = made[name].read_bytes()
    r = env.server.request("POST", "/api/v1/detect", env.a,
                           files={"image": ("upload.bin", data, "application/octet-stream")})
    body = check(r, "POST", "/api/v1/detect", 200)
    assert body["count"] == 1 and (body["image"]["width"], body["image"]["height"]) == (250, 250)


def test_first_frame_of_animated_gif(env, made):  # noqa: F811
    """An animated GIF: the first frame is the face, later frames are not."""
    im = Image.open(made["png"])
    b = io.BytesIO()
    im.save(b, "GIF", save_all=True, append_images=[Image.new("RGB", im.size, (0, 0, 0)),
                                                    Image.new("RGB", im.size, (255, 0, 0))],
            duration=100, loop=0)
    assert Image.open(io.BytesIO(b.getvalue())).n_frames == 3
    r = env.server.request("POST", "/api/v1/detect", env.a,
                           files={"image": ("a.gif", b.getvalue())})
    assert check(r, "POST", "/api/v1/detect", 200)["count"] == 1
    # and a blank first frame hides the face of the second
    b = io.BytesIO()
    Image.new("RGB", im.size, (0, 0, 0)).save(b, "GIF", save_all=True, append_images=[im])
    r = env.server.request("POST", "/api/v1/detect", env.a,
                           files={"image": ("b.gif", b.getvalue())})
    assert check(r, "POST", "/api/v1/detect", 200)["count"] == 0


def test_first_page_of_tiff(env, made):  # noqa: F811
    """A multi-page TIFF whose first page is blank: no face, though the
    second page has one (only the first page is read)."""
    b = io.BytesIO()
    Image.new("RGB", (250, 250), (0, 0, 0)).save(b, "TIFF", save_all=True,
                                                  append_images=[Image.open(made["png"])])
    assert Image.open(io.BytesIO(b.getvalue())).n_frames == 2
    r = env.server.request("POST", "/api/v1/detect", env.a,
                           files={"image": ("b.tif", b.getvalue())})
    assert check(r, "POST", "/api/v1/detect", 200)["count"] == 0


@pytest.mark.parametrize("name", ["heic", "avif", "tiff-lzw", "tiff-jpeg", "gif", "ppm-ascii",
                                  "pgm-16"])
def test_cli_truncated_one_message(made, tmp_path, name):
    """A cut file: exit 2, the API's invalid_image error, and one line on
    stderr (the libraries' own messages never reach it)."""
    data = made[name].read_bytes()
    cut = tmp_path / ("cut-" + made[name].name)
    cut.write_bytes(data[: len(data) // 2])
    p = run_cli("detect", cut, check=2)
    assert p.stdout == "" and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.startswith("faceverify: "), p.stderr
    j = run_json("detect", cut, check=2)
    assert j["error"]["code"] == "invalid_image", j


def test_api_enrol_identify_subject_verify(env, made):  # noqa: F811
    """The other image endpoints: enrol a HEIC photo, identify with the
    AVIF, TIFF and PPM of the same photo (the same subject, at a distance
    under the two formats' bounds added: measured 0.041, 0.036, 0.036),
    verify the subject with a GIF, and a different person's photo as PPM is
    no match."""
    s = env.server

    def upload(name):
        return {"image": (made[name].name, made[name].read_bytes())}

    r = s.request("POST", "/api/v1/subjects", env.b, json={"name": "eckhart"})
    sid = check(r, "POST", "/api/v1/subjects", 201)["id"]
    r = s.request("POST", f"/api/v1/subjects/{sid}/faces", env.b, files=upload("heic"))
    check(r, "POST", "/api/v1/subjects/1/faces", 201)
    for name in ["avif", "tiff-lzw", "ppm-ascii"]:
        r = s.request("POST", "/api/v1/identify", env.b, files=upload(name))
        face = check(r, "POST", "/api/v1/identify", 200)["faces"][0]
        assert face["match"] is not None and face["match"]["id"] == sid, (name, face)
        bound = CASES["heic"][2] + CASES[name][2]  # both against the PNG
        assert face["candidates"][0]["distance"] < bound, (name, face["candidates"][0])
    r = s.request("POST", f"/api/v1/subjects/{sid}/verify", env.b, files=upload("gif"))
    assert check(r, "POST", "/api/v1/subjects/1/verify", 200)["verified"] is True
    other = Image.open(need(DATA / OTHER)).convert("RGB")
    b = io.BytesIO()
    other.save(b, "PPM")
    r = s.request("POST", "/api/v1/identify", env.b, files={"image": ("o.ppm", b.getvalue())})
    assert check(r, "POST", "/api/v1/identify", 200)["faces"][0]["match"] is None
