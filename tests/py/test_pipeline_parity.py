"""End-to-end parity with dlib: photo -> face -> embedding.

dlib's own pipeline (cnn_face_detection_model_v1, shape_predictor,
compute_face_descriptor with the same .dat files) is the reference.  Our
CLI runs the whole pipeline in C; the embeddings must agree within 0.02
(L2), which also checks decode, detection, landmarks and chip end to end.
"""
import numpy as np
import pytest

from conftest import run_json
from test_cli import PORTRAITS

LFW_PEOPLE = ["Aaron_Eckhart", "Serena_Williams", "George_W_Bush", "Angelina_Jolie",
              "Jennifer_Lopez", "Tony_Blair"]


def dlib_embedding(oracle, path):
    img = oracle.dlib.load_rgb_image(str(path))
    dets = oracle.detector(img, 0)
    assert len(dets) >= 1, path
    det = max(dets, key=lambda d: d.rect.width() * d.rect.height())
    shape = oracle.predictor(img, det.rect)
    r = det.rect
    box = (r.left(), r.top(), r.right() + 1, r.bottom() + 1)
    return np.array(oracle.facerec.compute_face_descriptor(img, shape)), box


def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def images(samples, lfw):
    out = [samples / p for p in PORTRAITS]
    out += [lfw / n / f"{n}_0001.jpg" for n in LFW_PEOPLE]
    return out


def test_end_to_end_embeddings_match_dlib(samples, lfw, dlib_oracle):
    worst = 0.0
    for path in images(samples, lfw):
        ref, ref_box = dlib_embedding(dlib_oracle, path)
        j = run_json("embed", path, "--upsample", "0")
        ours = np.array(j["embedding"])
        d = float(np.linalg.norm(ours - ref))
        worst = max(worst, d)
        print(f"{path.name}: L2 {d:.5f}, box IoU {iou(j['face']['box'], ref_box):.3f}")
        assert iou(j["face"]["box"], ref_box) >= 0.95, path
        assert d <= 0.02, (path, d)
    print(f"worst end-to-end L2 difference: {worst:.5f}")
