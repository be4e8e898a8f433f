"""Parity of our ResNet embedder (src/embed/) with dlib's own.

For face chips cut by dlib itself (get_face_chip, 150x150, padding 0.25)
from the sample photos and LFW, our probe_embed must give embeddings within
1e-4 (L2 norm of the difference) of dlib's compute_face_descriptor on the
exact same chip bytes.  Also: results are bitwise identical with 1 and 2
threads; embedding chips one at a time instead of in one batch changes the
GEMM tiling, so there we allow float rounding (<= 1e-6 per value).
"""
import json
import subprocess

import numpy as np
import pytest

from conftest import BUILD, MODELS

PROBE = BUILD / "bin" / "probe_embed"
RESNET = MODELS / "dlib_face_recognition_resnet_model_v1.dat"
TOLERANCE = 1e-4
MIN_CHIPS = 10


@pytest.fixture(scope="module")
def chips(dlib_oracle, samples, lfw, tmp_path_factory):
    """(path of a raw chip file, dlib's descriptors) for >= 10 faces."""
    dlib = dlib_oracle.dlib
    hog = dlib.get_frontal_face_detector()
    photos = sorted((samples / "openface").glob("*.jpg"))
    photos += sorted((samples / "facenet_pytorch").glob("*.jpg"))
    photos += [samples / "skimage" / "astronaut.jpg"]
    photos += sorted(lfw.glob("*/*_0001.jpg"))[:8]
    cut, refs = [], []
    for p in photos:
        if not p.exists():
            continue
        img = dlib.load_rgb_image(str(p))
        dets = hog(img, 1)
        rects = list(dets) or [d.rect for d in dlib_oracle.detector(img, 1)]
        for r in rects[:2]:
            shape = dlib_oracle.predictor(img, r)
            chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
            cut.append(np.ascontiguousarray(chip, dtype=np.uint8))
            refs.append(np.array(dlib_oracle.facerec.compute_face_descriptor(chip)))
    assert len(cut) >= MIN_CHIPS, f"only {len(cut)} chips cut"
    path = tmp_path_factory.mktemp("embed") / "chips.rgb"
    np.stack(cut).tofile(path)
    return path, np.stack(refs)


def probe(path, n, *opts):
    if not PROBE.exists():
        pytest.fail(f"{PROBE} not built")
    p = subprocess.run([str(PROBE), str(RESNET), str(path), str(n), *map(str, opts)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return np.array(json.loads(p.stdout), dtype=np.float64)


def test_parity_with_dlib(chips):
    path, refs = chips
    ours = probe(path, len(refs))
    assert ours.shape == refs.shape
    dev = np.linalg.norm(ours - refs, axis=1)
    print(f"\nembed parity: {len(refs)} chips, max L2 deviation {dev.max():.3e}, "
          f"mean {dev.mean():.3e} (budget {TOLERANCE:g})")
    assert dev.max() <= TOLERANCE
    # sanity: dlib's descriptors are far from zero and differ between people
    assert np.all(np.linalg.norm(refs, axis=1) > 0.5)


def test_deterministic_across_threads_and_batches(chips):
    path, refs = chips
    n = len(refs)
    one = probe(path, n, "--threads", 1)
    two = probe(path, n, "--threads", 2)
    single = probe(path, n, "--threads", 2, "--batch", 1)
    # the probe prints %.9g, which round-trips float32 exactly
    assert np.array_equal(one, two), np.abs(one - two).max()
    batch_dev = np.abs(one - single).max()
    print(f"\nbatch of {n} vs one at a time: max abs difference {batch_dev:.3e}")
    assert batch_dev <= 1e-6
