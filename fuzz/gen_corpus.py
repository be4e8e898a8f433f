#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/.

Every seed is generated here (Pillow for images, Debian's heif-enc for
HEIC and AVIF, small hand-made HTTP bodies); none is a copy of the test
photos.  Without heif-enc (scripts/bootstrap.sh installs it) the HEIF
seeds are left out, with a note.  Files are named by the SHA-1
of their content, as libFuzzer names the inputs it adds, so re-running
this script and `make fuzz-merge` never duplicate a seed.  The model seeds
are prefixes of the model files in models/ (fetched by
scripts/fetch_models.sh) and a small synthetic Haar cascade; without
models/ only the synthetic ones are written.

usage: gen_corpus.py [OUT_DIR]   (default: fuzz/corpus next to this file)
"""
import base64
import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def write(out: Path, target: str, data: bytes):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


# ------------------------------------------------------------ images

def pattern(mode: str, size=(24, 16)) -> Image.Image:
    """A small picture with edges and a gradient, converted to mode."""
    im = Image.new("RGB", size)
    px = im.load()
    for y in range(size[1]):
        for x in range(size[0]):
            px[x, y] = (x * 10 % 256, y * 15 % 256, (x + y) * 7 % 256)
    ImageDraw.Draw(im).ellipse((4, 3, 14, 12), fill=(230, 190, 160))
    if mode == "RGB":
        return im
    if mode == "P":
        return im.convert("P", palette=Image.ADAPTIVE, colors=16)
    if mode == "I;16":
        return im.convert("L").convert("I;16")
    return im.convert(mode)


def save(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def exif_orientation(o: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = o
    return exif.tobytes()


def png_chunk(t: bytes, d: bytes) -> bytes:
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))


def png_claiming(w: int, h: int, idat: bytes) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def jpeg_claiming(w: int, h: int) -> bytes:
    """A real JPEG whose SOF0 frame header is rewritten to w x h."""
    b = bytearray(save(pattern("RGB"), "JPEG", quality=80))
    i = b.find(b"\xff\xc0")
    struct.pack_into(">HH", b, i + 5, h, w)
    return bytes(b)


def heif(im: Image.Image, avif: bool, *args) -> bytes:
    """im encoded by heif-enc (x265 or libaom through libheif), or b"" when
    heif-enc is missing."""
    exe = shutil.which("heif-enc")
    if not exe:
        return b""
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.png", Path(d) / ("o.avif" if avif else "o.heic")
        im.save(src)
        subprocess.run([exe, *(["-A"] if avif else []), *args, "-o", str(dst), str(src)],
                       check=True, capture_output=True, timeout=120)
        return dst.read_bytes()


def tiff_with(im: Image.Image, **kw) -> bytes:
    # a copy: Pillow keeps a save's encoder settings on the image object
    return save(im.copy(), "TIFF", **kw)


def new_formats():
    """HEIC/AVIF, TIFF, GIF and Netpbm seeds (issue 18), each small."""
    out = []
    p = pattern("RGB")
    small = p.resize((16, 16))
    for avif in (False, True):
        out.append(heif(small, avif, "-q", "50"))
    out.append(heif(pattern("RGBA").resize((16, 16)), False, "-q", "50"))  # alpha
    out.append(heif(small, False, "-L", "-p", "chroma=444"))  # lossless 4:4:4
    out = [d for d in out if d]
    if not out:
        print("gen_corpus.py: heif-enc not found: no HEIC/AVIF seeds", file=sys.stderr)
    for mode in ["RGB", "L", "P", "1", "I;16", "RGBA", "CMYK"]:
        out.append(tiff_with(pattern(mode)))
    for comp in ["tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg"]:
        out.append(tiff_with(p, compression=comp))
    out.append(tiff_with(pattern("1"), compression="group4"))
    out.append(tiff_with(p, tiffinfo={274: 6}))
    out.append(tiff_with(p, save_all=True, append_images=[pattern("L")]))  # two pages
    for mode in ["RGB", "L", "P", "1"]:
        out.append(save(pattern(mode), "GIF"))
    out.append(save(pattern("L"), "GIF", transparency=3, interlace=True))
    out.append(save(pattern("RGB"), "GIF", save_all=True, append_images=[pattern("L")],
                    duration=50))
    out.append(save(pattern("L"), "PPM"))  # P5
    out.append(save(p, "PPM"))  # P6
    out.append(save(pattern("1"), "PPM"))  # P4
    out.append(save(pattern("I;16"), "PPM"))  # P5, maxval 65535
    out += [b"P1\n# c\n3 2\n1 0 1\n0 1 0\n", b"P2 2 2 65535\n0 65535 32768 1\n",
            b"P3\n2 1\n15\n1 2 3 15 14 13\n", b"P6 1 1 1000\n\x03\xe8\x01\xf4\x00\x00"]
    return out


def images():
    out = []
    for mode in ["RGB", "L", "CMYK"]:
        out.append(save(pattern(mode), "JPEG", quality=85))
    out.append(save(pattern("RGB"), "JPEG", quality=85, progressive=True))
    out.append(save(pattern("RGB"), "JPEG", quality=85, subsampling=0))
    for o in range(1, 9):
        out.append(save(pattern("RGB"), "JPEG", quality=70, exif=exif_orientation(o)))
    for mode in ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"]:
        out.append(save(pattern(mode), "PNG"))
    p = pattern("P")
    p.info["transparency"] = 0
    out.append(save(p, "PNG"))
    out.append(save(pattern("RGB"), "PNG", exif=exif_orientation(6)))
    frames = [pattern("RGB"), pattern("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    out.append(save(frames[0], "PNG", save_all=True, append_images=frames[1:]))  # APNG
    out.append(save(pattern("RGB"), "WEBP", quality=80))
    out.append(save(pattern("RGB"), "WEBP", lossless=True))
    out.append(save(pattern("RGBA"), "WEBP", quality=80))
    out.append(save(pattern("RGB"), "WEBP", quality=80, exif=exif_orientation(3)))
    out.append(save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100))
    for mode in ["RGB", "RGBA", "P", "L", "1"]:
        out.append(save(pattern(mode), "BMP"))
    out += new_formats()
    # Truncated variants of every format, and header-only lies.
    out += [d[: len(d) // 2] for d in list(out)]
    out += [png_claiming(60000, 60000, zlib.compress(b"\0" * 64)),
            png_claiming(3000, 3000, zlib.compress(b"\0" * (3000 * 3001 * 3), 9)),  # bomb
            jpeg_claiming(60000, 60000), jpeg_claiming(0, 16),
            b"P6\n60000 60000\n255\n\0\0\0", b"P5 5000 5000 255\n\0"]
    g = bytearray(save(pattern("RGB"), "GIF"))
    struct.pack_into("<HH", g, 6, 60000, 60000)
    out.append(bytes(g))
    # Outside the allowlist, and junk.
    out += [b"\0\0\0\x18ftypisom\0\0\0\0isommp41", b"P7\nWIDTH 1\nENDHDR\n",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
            b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n",
            b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBPVP8 ", b"BM",
            b"GIF89a", b"II*\0", b"MM\0*", b"P6\n", b"\0\0\0\x14ftypheic\0\0\0\0mif1"]
    return out


# ------------------------------------------------------------ models

def haar_xml(stages: int = 1) -> bytes:
    """A minimal OpenCV (new format) cascade: one stump per stage."""
    st = "".join(
        "<_><maxWeakCount>1</maxWeakCount><stageThreshold>-1.0</stageThreshold>"
        "<weakClassifiers><_><internalNodes>0 -1 0 0.5</internalNodes>"
        "<leafValues>-1.0 1.0</leafValues></_></weakClassifiers></_>" for _ in range(stages))
    return ("<?xml version=\"1.0\"?>\n<opencv_storage>\n<cascade type_id=\"opencv-cascade-classifier\">"
            "<stageType>BOOST</stageType><featureType>HAAR</featureType>"
            "<height>24</height><width>24</width>"
            "<stageParams><maxWeakCount>1</maxWeakCount></stageParams>"
            "<featureParams><maxCatCount>0</maxCatCount></featureParams>"
            f"<stageNum>{stages}</stageNum><stages>{st}</stages>"
            "<features><_><rects><_>0 0 12 24 -1.</_><_>12 0 12 24 2.</_></rects></_></features>"
            "</cascade>\n</opencv_storage>\n").encode()


def models():
    out = []
    names = ["mmod_human_face_detector.dat", "shape_predictor_5_face_landmarks.dat",
             "dlib_face_recognition_resnet_model_v1.dat"]
    for sel, name in enumerate(names):
        path = REPO / "models" / name
        if not path.exists():
            continue
        with open(path, "rb") as f:
            head = f.read(4096)
        for n in (0, 16, 64, 256, 1024, 4096):
            out.append(bytes([sel]) + head[:n])
    xml = haar_xml(2)
    out += [b"\x03" + xml, b"\x03" + xml[: len(xml) // 2], b"\x03" + haar_xml(1)]
    return out


# ------------------------------------------------------------ HTTP bodies

def multipart(parts, boundary="fz"):
    b = b""
    for headers, body in parts:
        b += f"--{boundary}\r\n".encode() + headers + b"\r\n\r\n" + body + b"\r\n"
    return b + f"--{boundary}--\r\n".encode()


def field(name, value: bytes, filename=None, ctype=None):
    h = f'Content-Disposition: form-data; name="{name}"'
    if filename:
        h += f'; filename="{filename}"'
    if ctype:
        h += f"\r\nContent-Type: {ctype}"
    return (h.encode(), value)


def multiparts():
    jpg = save(pattern("RGB"), "JPEG", quality=60)
    ct = b"multipart/form-data; boundary=fz\n"
    out = []
    for route in range(5):
        r = bytes([route])
        out.append(r + ct + multipart([field("name", b"ada"), field("threshold", b"0.5")]))
        out.append(r + ct + multipart([field("image", jpg, "a.jpg", "image/jpeg"),
                                       field("top_k", b"3"), field("k", b"1")]))
    out += [
        b"\x00multipart/form-data\n" + multipart([field("threshold", b"0.4")]),  # no boundary
        b'\x01multipart/form-data; boundary="q b"\n' + multipart([field("name", b"x")], "q b"),
        b"\x01" + ct + multipart([field("name", b"x")])[:-8],  # no closing boundary
        b"\x01" + ct + multipart([(b'Content-Disposition: form-data; name="name"\r\n'
                                   b"Content-Type: multipart/mixed; boundary=in",
                                   multipart([field("inner", b"1")], "in"))]),
        b"\x01" + ct + multipart([(b"X-Big: " + b"h" * 3000, b"v")]),
        b"\x01" + ct + multipart([field(f"f{i}", b"1") for i in range(40)]),
        b"\x01" + ct + multipart([field("name", b"\xff\xfe\x00bad utf8")]),
        b"\x01application/x-www-form-urlencoded\nname=ada&threshold=0.5&face=largest",
        b"\x01application/x-www-form-urlencoded\nname=%ff%00&&=&x",
        b"\x00multipart/form-data; boundary=fz\n",
    ]
    return out


def jsons():
    emb = [round(0.01 * i, 3) for i in range(128)]
    data_url = "data:image/jpeg;base64," + base64.b64encode(save(pattern("RGB"), "JPEG")).decode()
    bodies = [
        (0, {"embedding_a": emb, "embedding_b": emb[::-1], "threshold": 0.6}),
        (0, {"embedding_a": emb[:127], "embedding_b": emb}),
        (1, {"embedding": emb, "top_k": 5, "k": 3}),
        (1, {"embeddings": [emb, emb], "top_k": 1e9, "k": -1}),
        (2, {"name": "ada", "metadata": {"dept": "x", "n": [1, 2, {"a": None}]}}),
        (2, {"name": "\u00e9\u4e2d\U0001f600", "metadata": None}),
        (3, {"limit": 10, "offset": 0}),
        (4, {"image": data_url, "detector": "haar"}),
        (5, {"image": base64.urlsafe_b64encode(b"\xff\xd8\xff\xe0 junk").decode().rstrip("=")}),
        (4, {"image": "data:image/png,notbase64", "image_a": "http://x/y.jpg"}),
        (0, {"threshold": "1e400", "top_k": "0x10", "k": True}),
        (6, {"model": "dlib_resnet_v1", "index_backend": "exact-int8"}),
        (6, {"model": "no-such-model"}),
        (6, {"index_backend": None}),
        (6, {"index_backend": "faiss-hnsw", "colour": [1]}),
        (1, {"embedding": emb, "model": "scratch-0123456789abcdef"}),
        (7, {"embedding": emb}),
        (7, {"image": data_url, "pick": "largest"}),
        (8, {"face_ids": [1, 2, 2], "subject_name": "ann", "metadata": {"team": [1]}}),
        (8, {"face_ids": [0, "1", 1e30, None], "subject_id": 1, "subject_name": ""}),
        (9, {"from_subject_id": 1}),
        (9, {"from_subject_id": "2x"}),
        (10, {"unassigned": "true", "limit": 5, "offset": 1}),
    ]
    out = [bytes([r]) + json.dumps(b).encode() for r, b in bodies]
    out += [b"\x02" + b"[" * 300 + b"]" * 300, b'\x02{"name": "a\\u0000b"}',
            b'\x02{"name": "x", "name": "y"}', b"\x00{", b"\x02" + b'{"name":"\xff\xfe"}']
    return out


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "corpus"
    for target, seeds in [("fuzz_image", images()), ("fuzz_model", models()),
                          ("fuzz_multipart", multiparts()), ("fuzz_json", jsons())]:
        for s in seeds:
            write(out, target, s)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
