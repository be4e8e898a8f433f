#!/usr/bin/env python3
"""mtcnn_spike.py: would MTCNN meet issue 17's recall and speed targets?

A measurement spike, not product code.  Runs MTCNN (the P-/R-/O-Net
cascade of Zhang et al. 2016) written here in numpy, on the weights that
ship in the facenet-pytorch 2.6.0 wheel (MIT licence), over the labelled
detection set of bench/derive_detect.py, and reports:

  - recall by face size, on group/turned/thumbnail photos and false
    detections per megapixel on the no-face photos, scored with
    bench/detect_bench.py's own summarise()/match() (IoU >= 0.4, or for
    faces <= 32 px centre-inside and side <= 3x), for the standard
    thresholds 0.6/0.7/0.7 and for a low variant (default 0.6/0.6/0.6,
    as a proposal stage that an MMOD check on crops would follow);
  - how MTCNN boxes sit against the truth boxes (dlib MMOD convention):
    median IoU, median side ratio and centre offset (in truth sides), and
    the recall again with that median mapping applied (fitted on the same
    photos: an upper bound for a mapping fitted elsewhere);
  - the work: multiply-accumulates of P-Net over the pyramid and of R-/O-Net
    (candidates x MACs per candidate) per photo, projected to one C thread
    at a fraction (default 50%) of the measured one-thread sgemm peak
    (bench/results/stages.json), plus the pyramid and crop resampling
    measured here with OpenCV on one thread (INTER_AREA, and INTER_LINEAR
    timed alongside; --resample picks which one feeds P-Net; a sensitivity
    table gives 50% and 25% of peak with either); and the end-to-end time this
    projects next to face_recognition's per photo (bench/results/
    e2e_speed.json: same photos, face_recognition's measured ms,
    faceverify's measured decode ms and its embedding ms per face).

The weights are read without torch: facenet-pytorch's .pt files are
torch's legacy (pre-zip) serialisation, a sequence of pickles (magic,
protocol, system info, the state dict whose tensors refer to storages by
persistent id, the storage keys) followed by each storage's raw bytes,
each behind an 8-byte element count.  The zip format (`*/data.pkl` +
`*/data/N`) is read too.

Pipeline (own code; facenet-pytorch's source was read only for the layer
layout, RGB input, the (W, H, C) flatten order before the dense layers and
the box regression being in units of the box side): pyramid from
min face 20 px, factor 0.709, each level resized with OpenCV INTER_AREA;
P-Net (12x12 window, stride 2) -> boxes, NMS 0.5 per level, NMS 0.7 over
levels, regression, squared; R-Net on 24x24 crops (zero padded outside
the photo) -> threshold, NMS 0.7, regression, squared; O-Net on 48x48
crops -> threshold, landmarks, regression, NMS 0.7 on the smaller area.
Boxes are continuous [l, t, r, b) coordinates (not MATLAB's 1-based +1).

  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 \\
    .venv/bin/python bench/mtcnn_spike.py --weights /tmp \\
      --wheel /tmp/fnp/facenet_pytorch-2.6.0-py3-none-any.whl \\
      --data /tmp/detbench-scales [--max-mp 30] [--lfw 20] \
      [--resample linear --json bench/results/mtcnn_spike_linear.json]
"""
import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_bench import MP_BINS, match, mp_bin, summarise  # noqa: E402
from fit_haar_mapping import iou  # noqa: E402  (detect_bench put scripts/ on the path)
from machine import DATA, REPO, machine, write_result  # noqa: E402
from mtcnn_convert import load_state_dict  # noqa: E402,F401  (scripts/)

cv2.setNumThreads(1)

# ------------------------------------------------------------ weights


# load_state_dict: scripts/mtcnn_convert.py (the loader moved there).


# ------------------------------------------------------------ layers

MACS = {"p": 0, "r": 0, "o": 0}


def conv(x, w, b, stage):
    """Valid 2-D convolution, stride 1. x (N, C, H, W), w (O, C, kh, kw)."""
    o, c, kh, kw = w.shape
    n, _, h, wd = x.shape
    ho, wo = h - kh + 1, wd - kw + 1
    MACS[stage] += n * o * c * kh * kw * ho * wo
    if kh == 1 and kw == 1:
        y = np.tensordot(w[:, :, 0, 0], x, axes=([1], [1]))
    else:
        v = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
        y = np.tensordot(w, v, axes=([1, 2, 3], [1, 4, 5]))  # (O, N, ho, wo)
    y = np.moveaxis(y, 0, 1)
    return y + b[None, :, None, None]


def prelu(x, a):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return np.where(x > 0, x, x * a.reshape(shape))


def maxpool(x, k, s):
    """Max-pool with PyTorch's ceil_mode=True (no padding)."""
    n, c, h, w = x.shape
    ho = -(-(h - k) // s) + 1
    wo = -(-(w - k) // s) + 1
    hp, wp = (ho - 1) * s + k, (wo - 1) * s + k
    if hp > h or wp > w:
        p = np.full((n, c, hp, wp), -np.inf, dtype=x.dtype)
        p[:, :, :h, :w] = x
        x = p
    out = None
    for i in range(k):
        for j in range(k):
            v = x[:, :, i:i + (ho - 1) * s + 1:s, j:j + (wo - 1) * s + 1:s]
            out = v if out is None else np.maximum(out, v)
    return out


def dense(x, w, b, stage):
    MACS[stage] += x.shape[0] * w.shape[0] * w.shape[1]
    return x @ w.T + b


def softmax_face(x, axis):
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    return np.take(e / e.sum(axis=axis, keepdims=True), 1, axis=axis)


def flatten_whc(x):
    """(N, C, H, W) -> (N, W*H*C) in the order the dense weights expect."""
    return np.ascontiguousarray(x.transpose(0, 3, 2, 1)).reshape(x.shape[0], -1)


def conv_stack(W, x, stage, pools):
    """conv{i} + prelu{i} for i = 1.., each followed by a max-pool of that
    size (stride 2) where pools[i-1] is not None."""
    for i, pool in enumerate(pools, 1):
        x = prelu(conv(x, W["conv%d.weight" % i], W["conv%d.bias" % i], stage),
                  W["prelu%d.weight" % i])
        if pool:
            x = maxpool(x, pool, 2)
    return x


def head(W, x, name, stage):
    return dense(x, W[name + ".weight"], W[name + ".bias"], stage)


def pnet(P, x):
    """x (1, 3, H, W) -> face prob (H', W'), regression (4, H', W')."""
    x = conv_stack(P, x, "p", (2, None, None))
    a = conv(x, P["conv4_1.weight"], P["conv4_1.bias"], "p")
    b = conv(x, P["conv4_2.weight"], P["conv4_2.bias"], "p")
    return softmax_face(a, 1)[0], b[0]


def pnet_strips(P, x, rows=48):
    """P-Net over a level in horizontal strips (bounded memory), same result:
    a strip of input rows [2*y0, 2*y0 + 2*n + 10) yields output rows
    y0..y0+n-1 with every pool window full; the last strip runs to the
    bottom so that ceil mode's partial window is the same as on the whole."""
    h = x.shape[2]
    hout = -(-(h - 2 - 2) // 2) + 1 - 4
    if hout <= 0:
        return np.zeros((0, 0), np.float32), np.zeros((4, 0, 0), np.float32)
    probs, regs = [], []
    y0 = 0
    while y0 < hout:
        n = min(rows, hout - y0)
        end = h if y0 + n >= hout else 2 * y0 + 2 * n + 10
        p, r = pnet(P, x[:, :, 2 * y0:end])
        probs.append(p[:n])
        regs.append(r[:, :n])
        y0 += n
    return np.concatenate(probs, 0), np.concatenate(regs, 1)


def refine_trunk(W, x, stage, pools):
    """R-/O-Net body: the conv stack, then the dense layer after it (+ PReLU)
    on the (W, H, C) flatten."""
    x = conv_stack(W, x, stage, pools)
    n = len(pools) + 1
    return prelu(head(W, flatten_whc(x), "dense%d" % n, stage), W["prelu%d.weight" % n])


def rnet(R, x):
    x = refine_trunk(R, x, "r", (3, 3, None))
    return softmax_face(head(R, x, "dense5_1", "r"), 1), head(R, x, "dense5_2", "r")


def onet(O, x):
    x = refine_trunk(O, x, "o", (3, 3, 2, None))
    return (softmax_face(head(O, x, "dense6_1", "o"), 1), head(O, x, "dense6_2", "o"),
            head(O, x, "dense6_3", "o"))


def macs_per_candidate(nets):
    """MACs of one R-Net (24x24) and one O-Net (48x48) pass."""
    out = {}
    for key, fn, side in (("r", rnet, 24), ("o", onet, 48)):
        before = MACS[key]
        fn(nets[key], np.zeros((1, 3, side, side), np.float32))
        out[key] = MACS[key] - before
        MACS[key] = before
    return out


# ------------------------------------------------------------ pipeline


def nms(boxes, scores, thr, by_min=False):
    """Indices kept by greedy NMS, highest score first."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        den = np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(den, 1e-9) <= thr]
    return np.array(keep, np.int64)


def regress(boxes, reg):
    """Box regression: offsets in units of the box's width/height."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes[:, :4] + reg * np.concatenate([w, h, w, h], 1)


def square(b):
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    cx, cy = b[:, 0] + w / 2, b[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


def crops(img, boxes, side, resize=None):
    """(N, 3, side, side) normalised crops, zero padded outside the photo
    (resize: as detect's)."""
    h, w = img.shape[:2]
    out = np.zeros((len(boxes), 3, side, side), np.float32)
    for k, (l, t, r, b) in enumerate(boxes):
        l, t = int(math.floor(l)), int(math.floor(t))
        r, b = int(math.ceil(r)), int(math.ceil(b))
        if r - l < 2 or b - t < 2:
            continue
        patch = np.zeros((b - t, r - l, 3), np.uint8)
        sl, st, sr, sb = max(l, 0), max(t, 0), min(r, w), min(b, h)
        if sr <= sl or sb <= st:
            continue
        patch[st - t:sb - t, sl - l:sr - l] = img[st:sb, sl:sr]
        z = (resize(patch, (side, side)) if resize else
             cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA))
        out[k] = (z.astype(np.float32).transpose(2, 0, 1) - 127.5) * 0.0078125
    return out


def batched(fn, net, x, n=256):
    outs = [fn(net, x[i:i + n]) for i in range(0, len(x), n)]
    return [np.concatenate(v, 0) for v in zip(*outs)]


def detect(nets, img, min_face=20, factor=0.709, p_thr=0.6, variants=((0.7, 0.7),),
           resample=cv2.INTER_AREA, resize=None):
    """MTCNN on an RGB uint8 image.  P-Net and the candidate lists are shared;
    R-/O-Net run once on the union and each (r_thr, o_thr) variant picks its
    own survivors.  Returns {variant: (boxes (N,5), points (N,5,2))}, stats.
    resize: None, or f(uint8 HxWx3, (w, h)) -> float HxWx3 used for the
    pyramid and the crops instead of OpenCV (tests/py/test_mtcnn.py passes
    the C port's bilinear resampling)."""
    for k in MACS:
        MACS[k] = 0
    h, w = img.shape[:2]
    stats = {"resize_ms": 0.0, "resize_linear_ms": 0.0}
    t0 = time.perf_counter()
    scales, s, minl = [], 12.0 / min_face, min(h, w) * 12.0 / min_face
    while minl >= 12:
        scales.append(s)
        s *= factor
        minl *= factor
    cands = []
    pyr_px = 0
    for s in scales:
        hs, ws = int(math.ceil(h * s)), int(math.ceil(w * s))
        tr = time.perf_counter()
        lvl = cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA)
        stats["resize_ms"] += (time.perf_counter() - tr) * 1e3
        tr = time.perf_counter()
        lin = cv2.resize(img, (ws, hs), interpolation=cv2.INTER_LINEAR)
        stats["resize_linear_ms"] += (time.perf_counter() - tr) * 1e3
        if resample == cv2.INTER_LINEAR:
            lvl = lin
        if resize:
            lvl = resize(img, (ws, hs))
        pyr_px += hs * ws
        x = (lvl.astype(np.float32).transpose(2, 0, 1)[None] - 127.5) * 0.0078125
        prob, reg = pnet_strips(nets["p"], x)
        ys, xs = np.nonzero(prob >= p_thr)
        if len(ys) == 0:
            continue
        b = np.stack([2 * xs / s, 2 * ys / s, (2 * xs + 12) / s, (2 * ys + 12) / s,
                      prob[ys, xs]], 1)
        r = reg[:, ys, xs].T
        keep = nms(b, b[:, 4], 0.5)
        cands.append(np.concatenate([b[keep], r[keep]], 1))
    stats["pyramid_levels"] = len(scales)
    stats["pyramid_px"] = pyr_px
    stats["pnet_ms"] = (time.perf_counter() - t0) * 1e3 - stats["resize_ms"] - \
        stats["resize_linear_ms"]
    empty = {v: (np.zeros((0, 5)), np.zeros((0, 5, 2))) for v in variants}
    stats.update(p_candidates=0, r_candidates=0, o_candidates={}, rnet_ms=0.0, onet_ms=0.0,
                 crop_ms=0.0)
    stats["macs"] = dict(MACS)
    if not cands:
        return empty, stats
    c = np.concatenate(cands, 0)
    c = c[nms(c, c[:, 4], 0.7)]
    boxes = square(regress(c, c[:, 5:9]))
    stats["p_candidates"] = stats["r_candidates"] = len(boxes)
    t1 = time.perf_counter()
    x = crops(img, boxes, 24, resize)
    t2 = time.perf_counter()
    rprob, rreg = batched(rnet, nets["r"], x)
    t3 = time.perf_counter()
    stats["crop_ms"] += (t2 - t1) * 1e3
    stats["rnet_ms"] = (t3 - t2) * 1e3
    # R survivors per variant, then one O-Net pass on their union
    r_sets = {}
    for v in variants:
        idx = np.nonzero(rprob >= v[0])[0]
        bb = np.concatenate([boxes[idx], rprob[idx, None]], 1)
        k = nms(bb, bb[:, 4], 0.7)
        r_sets[v] = square(regress(bb[k], rreg[idx[k]]))
    allb = np.concatenate(list(r_sets.values()), 0).reshape(-1, 4)
    if len(allb):
        uniq, inv = np.unique(np.round(allb, 3), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
    else:
        uniq, inv = allb, np.zeros(0, np.int64)
    stats["o_candidates"] = {"%.2f/%.2f" % v: len(r_sets[v]) for v in variants}
    stats["o_candidates_union"] = len(uniq)
    stats["macs"] = dict(MACS)
    if len(uniq) == 0:
        return empty, stats
    t4 = time.perf_counter()
    x = crops(img, uniq, 48, resize)
    t5 = time.perf_counter()
    oprob, oreg, opts = batched(onet, nets["o"], x)
    t6 = time.perf_counter()
    stats["crop_ms"] += (t5 - t4) * 1e3
    stats["onet_ms"] = (t6 - t5) * 1e3
    res, off = {}, 0
    for v in variants:
        n = len(r_sets[v])
        ui = inv[off:off + n]
        off += n
        sel = ui[oprob[ui] >= v[1]]
        b = uniq[sel]
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        pts = np.stack([b[:, None, 0] + bw[:, None] * opts[sel, :5],
                        b[:, None, 1] + bh[:, None] * opts[sel, 5:]], 2)
        fb = np.concatenate([regress(b, oreg[sel]), oprob[sel, None]], 1)
        k = nms(fb, fb[:, 4], 0.7, by_min=True)
        res[v] = (fb[k], pts[k])
    stats["macs"] = dict(MACS)
    return res, stats


# ------------------------------------------------------------ checks


def lfw_check(nets, n):
    """The centred face of LFW 250x250 photos with 5 sensible landmarks."""
    people = sorted(p for p in (DATA / "lfw").iterdir() if p.is_dir())
    step = max(1, len(people) // n)
    rows, ok = [], 0
    for person in people[::step][:n]:
        f = sorted(person.glob("*.jpg"))[0]
        img = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        res, _ = detect(nets, img)
        boxes, pts = res[(0.7, 0.7)]
        row = {"file": str(f.relative_to(DATA)), "faces": len(boxes)}
        if len(boxes):
            cx = (boxes[:, 0] + boxes[:, 2]) / 2 - 125
            cy = (boxes[:, 1] + boxes[:, 3]) / 2 - 125
            i = int(np.argmin(cx ** 2 + cy ** 2))
            p = pts[i]  # left eye, right eye, nose, mouth left, mouth right (x, y)
            eyes_y = max(p[0, 1], p[1, 1])
            sensible = bool(p[0, 0] < p[1, 0] and eyes_y < p[2, 1] < min(p[3, 1], p[4, 1])
                            and p[3, 0] < p[4, 0])
            centred = bool(abs(cx[i]) < 30 and abs(cy[i]) < 30)
            row.update(box=[round(float(v), 1) for v in boxes[i, :4]],
                       score=round(float(boxes[i, 4]), 4),
                       points=[[round(float(a), 1) for a in q] for q in p],
                       centred=centred, landmarks_sensible=sensible)
            ok += centred and sensible
        rows.append(row)
    return {"photos": len(rows), "centred_face_with_sensible_landmarks": ok, "rows": rows}


# ------------------------------------------------------------ report


def box_fit(items, runs, tool):
    """IoU and median mapping of detection boxes onto the truth boxes."""
    ious, side, dx, dy = [], [], [], []
    for it in items:
        r = runs[it["file"]].get(tool)
        if not it["faces"] or r is None:
            continue
        for t in (f["box"] for f in it["faces"]):
            best = max(r["boxes"], key=lambda d: iou(t, d), default=None)
            if best is None or iou(t, best) < 0.3:
                continue
            ts = t[2] - t[0]
            ious.append(iou(t, best))
            side.append(math.sqrt((best[2] - best[0]) * (best[3] - best[1])) / ts)
            dx.append(((best[0] + best[2]) - (t[0] + t[2])) / 2 / ts)
            dy.append(((best[1] + best[3]) - (t[1] + t[3])) / 2 / ts)
    if not ious:
        return None
    return {"pairs": len(ious), "median_iou": round(statistics.median(ious), 3),
            "median_side_ratio": round(statistics.median(side), 3),
            "median_dx_sides": round(statistics.median(dx), 3),
            "median_dy_sides": round(statistics.median(dy), 3),
            "note": "pairs: each truth face with its best-IoU detection, IoU >= 0.3; "
                    "mapped = centre shifted by -(dx, dy)*side, side divided by the ratio"}


def mapped(box, fit):
    side = math.sqrt((box[2] - box[0]) * (box[3] - box[1])) / fit["median_side_ratio"]
    cx = (box[0] + box[2]) / 2 - fit["median_dx_sides"] * side
    cy = (box[1] + box[3]) / 2 - fit["median_dy_sides"] * side
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def projection(items, runs, key, okey, macs_cand, gmacs_per_s, e2e, resize_key):
    """Projected one-thread C times per photo and the end-to-end ratio per bin,
    for the variant whose detections are runs[file][key] and whose O-Net
    candidates are stats["o_candidates"][okey]."""
    per = {}
    for it in items:
        st = runs[it["file"]]["stats"]
        m_p = st["macs"]["p"]
        m_r = st["r_candidates"] * macs_cand["r"]
        m_o = st["o_candidates"].get(okey, 0) * macs_cand["o"]
        nn_ms = (m_p + m_r + m_o) / gmacs_per_s / 1e6
        per[it["file"]] = {"macs_p": m_p, "macs_r": m_r, "macs_o": m_o, "nn_ms": nn_ms,
                           "resample_ms": st[resize_key] + st["crop_ms"],
                           "faces": len(runs[it["file"]][key]["boxes"])}
    bins = {}
    for row in e2e["per_photo"]:
        p = per.get(row["file"])
        if p is None:
            continue
        fv = row["faceverify"]
        load_ms = fv["stage_ms"][0]
        per_face = fv["stage_ms"][2] / fv["faces"] if fv["faces"] else 20.0
        total = load_ms + p["nn_ms"] + p["resample_ms"] + per_face * p["faces"]
        b = bins.setdefault(row["bin"], {"fr": [], "proj": [], "nn": [], "resample": [],
                                         "macs_p_per_px": [], "ratio": [], "proj_rot": []})
        b["proj_rot"].append(total if p["faces"] else
                             load_ms + 4 * (p["nn_ms"] + p["resample_ms"]))
        b["fr"].append(row["face_recognition"]["ms"])
        b["proj"].append(total)
        b["nn"].append(p["nn_ms"])
        b["resample"].append(p["resample_ms"])
        b["macs_p_per_px"].append(p["macs_p"] / (row["mp"] * 1e6))
        b["ratio"].append(row["face_recognition"]["ms"] / total)
        if p["faces"] == 0:
            # nothing upright: three more orientations, each a full detection
            rot = load_ms + 4 * (p["nn_ms"] + p["resample_ms"])
            nf = bins[row["bin"]].setdefault("noface4", {"fr": [], "proj": []})
            nf["fr"].append(row["face_recognition"]["ms"])
            nf["proj"].append(rot)
    out = {}
    for k, b in bins.items():
        fr, pj = statistics.median(b["fr"]), statistics.median(b["proj"])
        out[k] = {"photos": len(b["fr"]), "face_recognition_median_ms": round(fr, 1),
                  "projected_median_ms": round(pj, 1),
                  "projected_nn_median_ms": round(statistics.median(b["nn"]), 1),
                  "measured_resample_median_ms": round(statistics.median(b["resample"]), 1),
                  "pnet_macs_per_photo_px": round(statistics.median(b["macs_p_per_px"]), 0),
                  "ratio_of_medians": round(fr / pj, 2),
                  "median_of_ratios": round(statistics.median(b["ratio"]), 2),
                  "ratio_of_medians_with_rotation_tries": round(
                      fr / statistics.median(b["proj_rot"]), 2)}
        if "noface4" in b:
            nf = b["noface4"]
            fr4, pj4 = statistics.median(nf["fr"]), statistics.median(nf["proj"])
            out[k]["no_face_photos_4_orientations"] = {
                "photos": len(nf["fr"]), "face_recognition_median_ms": round(fr4, 1),
                "projected_median_ms": round(pj4, 1), "ratio_of_medians": round(fr4 / pj4, 2),
                "note": "photos where MTCNN found nothing upright, detection repeated for "
                        "90/180/270 (rotating the pixels not counted)"}
    return {"by_bin": out, "per_photo": {k: {kk: (round(vv, 2) if isinstance(vv, float) else vv)
                                             for kk, vv in v.items()} for k, v in per.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default="/tmp", help="folder with pnet.pt, rnet.pt, onet.pt")
    ap.add_argument("--wheel", default=None, help="the facenet-pytorch wheel (SHA-256 recorded)")
    ap.add_argument("--data", default="/tmp/detbench-scales", help="derive_detect.py output")
    ap.add_argument("--max-mp", type=float, default=30.0, help="skip photos above this size")
    ap.add_argument("--low", default="0.6,0.6", help="R,O thresholds of the low variant")
    ap.add_argument("--lfw", type=int, default=20, help="LFW photos for the sanity check")
    ap.add_argument("--efficiency", type=float, default=0.5, help="fraction of sgemm peak")
    ap.add_argument("--resample", choices=("area", "linear"), default="area",
                    help="how pyramid levels are resized (both are timed)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t_start = time.time()

    nets = {k: load_state_dict(Path(args.weights) / ("%snet.pt" % k)) for k in "pro"}
    shapes = {k: {n: list(a.shape) for n, a in v.items()} for k, v in nets.items()}
    for k, v in shapes.items():
        print("%snet:" % k, ", ".join("%s %s" % (n, "x".join(map(str, s))) for n, s in v.items()))
    macs_cand = macs_per_candidate(nets)
    print("MACs per candidate: R-Net %d, O-Net %d" % (macs_cand["r"], macs_cand["o"]))

    lfw = lfw_check(nets, args.lfw) if args.lfw else None
    if lfw:
        print("LFW: %d/%d centred face with sensible landmarks" %
              (lfw["centred_face_with_sensible_landmarks"], lfw["photos"]))

    resample = cv2.INTER_AREA if args.resample == "area" else cv2.INTER_LINEAR
    data = Path(args.data)
    manifest = json.loads((data / "manifest.json").read_text())
    items = sorted(manifest["images"], key=lambda it: it["mp"])  # big photos last
    std = (0.7, 0.7)
    low = tuple(float(v) for v in args.low.split(","))
    variants = (std, low)
    vkey = {std: "std", low: "low"}
    runs, skipped = {}, []
    for it in items:
        if it["mp"] > args.max_mp:
            skipped.append(it["file"])
            continue
        path = data / it["file"]
        if not path.exists():
            path = DATA / it["file"] if (DATA / it["file"]).exists() else REPO / it["file"]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            skipped.append(it["file"])
            continue
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        t0 = time.perf_counter()
        res, st = detect(nets, img, variants=variants, resample=resample)
        ms = (time.perf_counter() - t0) * 1e3
        entry = {"stats": st, "numpy_ms": round(ms, 1)}
        for v in variants:
            b = res[v][0]
            entry[vkey[v]] = {"error": None, "ms": ms,
                              "boxes": [[round(float(q), 1) for q in row[:4]] for row in b],
                              "scores": [round(float(row[4]), 4) for row in b]}
        runs[it["file"]] = entry
        print("%-48s %6.2f MP  std %2d low %2d  P %5d O %4d  %8.0f ms" % (
            it["file"], it["mp"], len(res[std][0]), len(res[low][0]), st["p_candidates"],
            st.get("o_candidates_union", 0), ms), flush=True)

    scored = [it for it in items if it["file"] in runs]
    summary, fits = {}, {}
    for v in variants:
        k = vkey[v]
        summary[k] = summarise(scored, runs, k)
        summary[k].pop("time_by_mp", None)
        fits[k] = box_fit(scored, runs, k)
    # recall again with the standard variant's median box mapping applied
    fit = fits["std"]
    if fit:
        for v in variants:
            k = vkey[v]
            for f, r in runs.items():
                r[k + "_mapped"] = dict(r[k], boxes=[mapped(b, fit) for b in r[k]["boxes"]])
            s = summarise(scored, runs, k + "_mapped")
            s.pop("time_by_mp", None)
            summary[k + "_mapped"] = s
            for r in runs.values():
                r.pop(k + "_mapped")

    stages = json.loads((REPO / "bench/results/stages.json").read_text())
    peak = stages["sgemm"]["1t"]["peak_gflops"]
    gmacs = peak / 2 * args.efficiency
    e2e = json.loads((REPO / "bench/results/e2e_speed.json").read_text())
    rkey = "resize_ms" if args.resample == "area" else "resize_linear_ms"
    proj = {vkey[v]: projection(scored, runs, vkey[v], "%.2f/%.2f" % v, macs_cand, gmacs, e2e,
                                rkey) for v in variants}
    # sensitivity: sgemm efficiency and the pyramid's resampling (both timed every run)
    sens = {}
    for eff in (0.5, 0.25):
        for rk in ("resize_ms", "resize_linear_ms"):
            p = projection(scored, runs, "std", "0.70/0.70", macs_cand, peak / 2 * eff, e2e, rk)
            sens["eff%.2f_%s" % (eff, "area" if rk == "resize_ms" else "linear")] = {
                b: {"projected_median_ms": v["projected_median_ms"],
                    "ratio_of_medians": v["ratio_of_medians"],
                    "median_of_ratios": v["median_of_ratios"]} for b, v in p["by_bin"].items()}
    numpy_ms = {}
    for it in scored:
        numpy_ms.setdefault(mp_bin(it["mp"]), []).append(runs[it["file"]]["numpy_ms"])
    wheel_sha = None
    if args.wheel:
        wheel_sha = hashlib.sha256(Path(args.wheel).read_bytes()).hexdigest()
    out = {
        "what": "issue 17 spike: MTCNN (numpy, facenet-pytorch 2.6.0 weights) on the "
                "derive_detect.py set, scored as detect_bench.py; projected C time",
        "weights": {"source": "facenet-pytorch 2.6.0 wheel (PyPI, MIT licence), "
                              "facenet_pytorch/data/{pnet,rnet,onet}.pt",
                    "wheel": Path(args.wheel).name if args.wheel else None,
                    "wheel_sha256": wheel_sha,
                    "pt_sha256": {k: hashlib.sha256((Path(args.weights) / ("%snet.pt" % k))
                                                    .read_bytes()).hexdigest() for k in "pro"},
                    "state_dict_shapes": shapes},
        "settings": {"min_face_px": 20, "factor": 0.709, "thresholds_std": [0.6, 0.7, 0.7],
                     "thresholds_low": [0.6, low[0], low[1]], "nms": [0.5, 0.7, 0.7, "0.7 min"],
                     "input": "RGB, (x - 127.5) / 128",
                     "pyramid_resample": "OpenCV INTER_%s" % args.resample.upper(),
                     "crop_resample": "OpenCV INTER_AREA",
                     "crops": "zero padded outside the photo", "max_mp": args.max_mp},
        "set": {"data": "bench/derive_detect.py (seed %s)" % manifest.get("seed"),
                "manifest_sha256": manifest.get("manifest_sha256"), "photos": len(scored),
                "skipped": skipped},
        "lfw_check": lfw,
        "macs_per_candidate": macs_cand,
        "results": summary,
        "box_fit": fits,
        "projection": {
            "sgemm_peak_gflops_1t": peak, "efficiency": args.efficiency,
            "gmacs_per_s": round(gmacs, 2),
            "end_to_end": "faceverify's measured decode ms (e2e_speed.json) + projected MTCNN "
                          "nets + measured OpenCV resampling (one thread) + faceverify's "
                          "measured embedding ms per face x faces MTCNN found (20 ms/face where "
                          "faceverify found none); ratio = face_recognition ms / that",
            "std": proj["std"], "low": proj["low"],
            "sensitivity_std": sens},
        "numpy_ms_median_by_mp": {k: round(statistics.median(v), 1) for k, v in numpy_ms.items()},
        "per_photo": {f: {"numpy_ms": r["numpy_ms"], "stats": r["stats"],
                          "std": {"boxes": r["std"]["boxes"], "scores": r["std"]["scores"]},
                          "low_faces": len(r["low"]["boxes"])} for f, r in runs.items()},
        "machine": machine("numpy + OpenBLAS, OMP/OPENBLAS_NUM_THREADS=1, cv2.setNumThreads(1)"),
        "wall_s": round(time.time() - t_start, 1),
        "command": " ".join(sys.argv),
    }
    dest = write_result("mtcnn_spike.json", out, args.json)
    print("wrote", dest)
    for k in ("std", "low", "std_mapped", "low_mapped"):
        if k in summary:
            s = summary[k]
            print(k, "recall by size:", {a: b["recall"] for a, b in s["recall_by_size"].items()},
                  "false/MP:", s["false_per_mp_noface"],
                  "turned:", {a: b["recall"] for a, b in s["recall_turned_by_angle"].items()},
                  "thumbs:", {a: b["recall"] for a, b in s["recall_thumbnails"].items()})
    print("box fit:", fits["std"])
    for k in ("std", "low"):
        print(k, "projection:", json.dumps(proj[k]["by_bin"]))
    print("sensitivity:", json.dumps(sens))


if __name__ == "__main__":
    main()
