"""bench/detect_bench.py --quick: the labelled detection benchmark runs end
to end (derive the set, every tool on every photo) and its JSON holds the
numbers the docs quote, with sane values; the set is reproducible; the
matching rule pairs boxes as documented."""
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BUILD, DATA, REPO, need, skip_or_fail

BENCH = REPO / "bench"
SIZES = ("16", "20", "24", "32", "48", "64", "100", "200")


def load_bench():
    spec = importlib.util.spec_from_file_location("detect_bench", BENCH / "detect_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_match_rule():
    m = load_bench()
    truth = [[100, 100, 200, 200], [10, 10, 26, 26]]
    # IoU 0.81 with the first; the second box is off by a few pixels (IoU
    # about 0.3) but its centre is inside a 16 px truth box
    hit, false = m.match(truth, [[105, 105, 205, 205], [14, 14, 34, 34]])
    assert hit == {0, 1} and false == 0
    # IoU below 0.4 on a large face is a miss and a false detection
    hit, false = m.match(truth[:1], [[150, 150, 250, 250]])
    assert hit == set() and false == 1
    # a huge box around a tiny face does not count (side > 3x)
    hit, false = m.match(truth[1:], [[0, 0, 60, 60]])
    assert hit == set() and false == 1
    # one detection matches one face: the duplicate is a false detection
    hit, false = m.match(truth[:1], [[100, 100, 200, 200], [102, 102, 202, 202]])
    assert hit == {0} and false == 1


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    need(DATA / "lfw")
    need(DATA / "samples")
    if not (BUILD / "bin" / "faceverify").exists():
        skip_or_fail("faceverify CLI not built")
    try:
        import face_recognition  # noqa: F401
    except ImportError as e:
        skip_or_fail(f"face_recognition unavailable: {e}")
    d = tmp_path_factory.mktemp("detbench")
    out = d / "result.json"
    p = subprocess.run([sys.executable, str(BENCH / "detect_bench.py"), "--quick",
                        "--data-out", str(d / "set"), "--json", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return d, json.loads(out.read_text())


def test_quick_run_structure_and_sanity(quick):
    d, res = quick
    man = json.loads((d / "set" / "manifest.json").read_text())
    assert res["set"]["quick"] is True and res["set"]["images"] == len(man["images"])
    assert 30 <= len(man["images"]) <= 60
    assert set(res["per_photo"]) == {i["file"] for i in man["images"]}
    r = res["results"]
    assert set(r) == {"faceverify", "faceverify_mmod", "fr_hog", "fr_cnn", "dlib_mmod"}
    # every labelled composite face: 2 single + 2 group photos per size;
    # dlib_mmod runs up to 0.35 MP in --quick: the 0.3 MP ones only
    for tool, n in (("faceverify", 4), ("faceverify_mmod", 4), ("fr_hog", 4), ("dlib_mmod", 2)):
        rs = r[tool]["recall_by_size"]
        assert tuple(rs) == SIZES
        assert all(rs[s]["total"] == n for s in SIZES), rs
        assert r[tool]["time_by_mp"]["0.3"]["median_ms"] > 0
        assert r[tool]["false_per_mp_noface"] is not None
    fv = r["faceverify"]
    # large faces are found by today's default policy; the truth boxes agree
    # with an independent detector (HOG) on them too
    for tool in ("faceverify", "faceverify_mmod", "fr_hog"):
        for s in ("100", "200"):
            assert r[tool]["recall_by_size"][s]["recall"] >= 0.95, (tool, s)
    # 16 px faces are below the exact single MMOD pass's reach: a benchmark
    # that "finds" them would be matching wrongly
    assert r["dlib_mmod"]["recall_by_size"]["16"]["recall"] == 0
    # the default (MTCNN) and MMOD's scale policy find small faces too (the
    # first policy: none under 32 px); a few faces per size in the quick set,
    # so one miss is let go
    for s in ("20", "24", "32", "48", "64"):
        assert fv["recall_by_size"][s]["recall"] >= 0.75, s
    for s in ("24", "32", "48", "64"):
        assert r["faceverify_mmod"]["recall_by_size"][s]["recall"] >= 0.75, s
    assert fv["false_per_mp_noface"] <= 0.5 and fv["noface_mp"] > 1
    assert fv["samples"]["single_found"] == fv["samples"]["single_total"] >= 10
    assert fv["samples"]["noface_false"] == 0
    assert fv["failures_by_mp"] == {}
    assert set(fv["recall_turned_by_angle"]) == {"-30", "30", "90", "180", "270"}
    assert fv["recall_thumbnails"]["96x54_36px"]["total"] == 1
    assert fv["time_by_mp"]["1"]["median_ms"] >= fv["internal_time_by_mp"]["1"]["median_ms"]
    assert res["faceverify_peak_rss_kb_by_mp"]["1"] > 10_000
    # the CNN peers run on the small photos only, and say so
    assert res["cnn_caps_mp"] == {"fr_cnn": pytest.approx(0.117), "dlib_mmod": 0.35}
    cnn = r["fr_cnn"]
    assert cnn["skipped_photos"] > 0 and cnn["time_by_mp"]["<0.1"]["median_ms"] > 0
    assert cnn["recall_thumbnails"]["96x54_36px"]["total"] == 1
    assert all(v > 0 for v in res["worker_peak_rss_kb"].values())


def test_quick_set_is_reproducible(quick, tmp_path):
    d, _ = quick
    p = subprocess.run([sys.executable, str(BENCH / "derive_detect.py"), "--quick", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    a = json.loads((d / "set" / "manifest.json").read_text())
    b = json.loads((tmp_path / "manifest.json").read_text())
    assert a["manifest_sha256"] == b["manifest_sha256"]
    for name in ("group_1mp_0.jpg", "turned_0_+30.jpg", "thumb_96x54_0.jpg"):
        assert (hashlib.sha256((d / "set" / name).read_bytes()).digest()
                == hashlib.sha256((tmp_path / name).read_bytes()).digest()), name
