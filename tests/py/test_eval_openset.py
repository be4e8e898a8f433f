"""faceverify eval-openset: open-set identification on a small LFW subset
(40 people with 4..6 photos, 40 with one), the counts checked against the
protocol computed here from the folder, the rates against what real
faces give, and the argument errors.

The images are embedded once per session (eval-pairs --dump-embeddings
over every image of the subset) and kept in pytest's cache; every
eval-openset run takes them with --embeddings-from."""
import hashlib
import os
from pathlib import Path

import pytest

from conftest import MODELS, run_cli, run_json

N_MULTI, N_SINGLE, GALLERY = 40, 40, 30


def pick_people(lfw: Path):
    names = sorted(p.name for p in lfw.iterdir() if p.is_dir())
    count = {n: len([f for f in os.listdir(lfw / n) if f.endswith(".jpg")]) for n in names}
    multi = [n for n in names if 4 <= count[n] <= 6][:N_MULTI]
    single = [n for n in names if count[n] == 1][:N_SINGLE]
    return multi + single


@pytest.fixture(scope="module")
def subset(lfw, tmp_path_factory, pytestconfig):
    """(root of symlinks, embeddings file, {person: image count})."""
    people = pick_people(lfw)
    root = tmp_path_factory.mktemp("openset") / "people"
    root.mkdir()
    for n in people:
        (root / n).symlink_to(lfw / n)
    counts = {n: len(list((root / n).glob("*.jpg"))) for n in people}
    model = MODELS / "dlib_face_recognition_resnet_model_v1.dat"
    key = hashlib.sha256(("\n".join(people) + str(model.stat().st_mtime_ns)).encode())
    cache = Path(pytestconfig.cache.mkdir("faceverify-openset")) / (key.hexdigest()[:16] + ".csv")
    if not cache.exists():
        pairs = root.parent / "all.csv"
        rows = [f"{n}/{f.name},{n}/{f.name},1" for n in people for f in sorted((root / n).iterdir())]
        pairs.write_text("path_a,path_b,same\n" + "\n".join(rows) + "\n")
        tmp = cache.with_suffix(".tmp")
        run_cli("eval-pairs", "--pairs", pairs, "--root", root, "--jobs", "2",
                "--dump-embeddings", tmp, check=0, timeout=900)
        tmp.rename(cache)
    return root, cache, counts


def openset(subset, *args, check=0):
    root, emb, _ = subset
    return run_json("eval-openset", "--root", root, "--embeddings-from", emb, *args, check=check)


def expected_counts(j, counts, templates, per_person=None):
    cap = per_person or 10**9
    mated, gallery = set(j["mated_people"]), set(j["gallery_people"])
    mated_probes = sum(min(cap, counts[n] - templates) for n in mated)
    non_mated = sum(min(cap, counts[n]) for n in counts if n not in gallery)
    return mated_probes, non_mated


@pytest.mark.parametrize("templates,per_person", [(1, None), (3, None), (3, 1)])
def test_counts_follow_the_protocol_and_rates_are_sane(subset, templates, per_person):
    _, _, counts = subset
    extra = ["--max-probes-per-person", per_person] if per_person else []
    j = openset(subset, "--gallery", GALLERY, "--templates", templates, *extra)
    assert j["gallery"] == GALLERY and j["templates"] == templates
    candidates = [n for n, c in counts.items() if c >= templates + 1]
    assert j["mated_subjects"] == min(len(candidates), GALLERY // 2) == 15
    assert len(j["gallery_people"]) == GALLERY and len(set(j["gallery_people"])) == GALLERY
    assert set(j["mated_people"]) <= set(candidates)
    assert set(j["mated_people"]) <= set(j["gallery_people"])
    skipped = {r: sum(1 for s in j["skipped"] if s["role"] == r)
               for r in ("mated_probe", "non_mated_probe")}
    mp, nm = expected_counts(j, counts, templates, per_person)
    assert j["mated_probes"] + skipped["mated_probe"] == mp
    assert j["non_mated_probes"] + skipped["non_mated_probe"] == nm
    assert j["mated_probes"] > 0 and j["non_mated_probes"] >= 20

    # LFW faces of these people are told apart by the ResNet
    assert j["rank1"] >= 0.8
    pts = j["fnir_at_fpir"]
    assert [p["fpir"] for p in pts] == [1e-3, 1e-2, 5e-2]
    for p in pts:
        assert 0 <= p["fnir"] <= 1 and p["fpir_measured"] <= p["fpir"] + 1e-9
        assert p["measurable"] == (p["fpir"] * j["non_mated_probes"] >= 1)
    # a looser FPIR never misses more
    assert pts[2]["fnir"] <= pts[1]["fnir"] <= pts[0]["fnir"]
    assert pts[2]["threshold"] <= pts[1]["threshold"] <= pts[0]["threshold"]

    op = j["operating_point"]
    assert op["fpir"] == pytest.approx(0.01)
    assert 0 <= op["fpir_measured"] <= 1 and 0 <= op["fnir"] <= 1
    assert op["false_positives"] == round(op["fpir_measured"] * j["non_mated_probes"])
    assert op["misses"] == round(op["fnir"] * j["mated_probes"])
    # the calibrated rule at 1e-2 on ~100 unknown people: a handful at most
    assert op["false_positives"] <= 5
    assert j["images_from_file"] == j["images"]


def test_seed_changes_the_draw_and_fpir_the_operating_point(subset):
    a = openset(subset, "--gallery", GALLERY, "--seed", 1)
    b = openset(subset, "--gallery", GALLERY, "--seed", 2)
    again = openset(subset, "--gallery", GALLERY, "--seed", 1)
    assert a["mated_people"] != b["mated_people"]
    assert a["mated_people"] == again["mated_people"]
    assert a["fnir_at_fpir"] == again["fnir_at_fpir"]
    strict = openset(subset, "--gallery", GALLERY, "--seed", 1, "--fpir", "0.001")
    loose = openset(subset, "--gallery", GALLERY, "--seed", 1, "--fpir", "0.1")
    assert strict["operating_point"]["threshold"] > loose["operating_point"]["threshold"]
    assert strict["operating_point"]["fnir"] >= loose["operating_point"]["fnir"]
    assert strict["operating_point"]["false_positives"] <= loose["operating_point"]["false_positives"]


def test_human_output(subset):
    root, emb, _ = subset
    p = run_cli("eval-openset", "--root", root, "--embeddings-from", emb, "--gallery", GALLERY,
                check=0)
    assert "rank-1" in p.stdout and "FNIR at FPIR 0.01" in p.stdout
    assert "operating point   FPIR 0.01 (calibrated)" in p.stdout


@pytest.mark.parametrize("args,message", [
    (["--gallery", "1"], "--gallery takes"),
    (["--templates", "0"], "--templates takes"),
    (["--fpir", "0.5"], "--fpir takes"),
    (["--seed", "-3"], "--seed takes"),
    (["--seed", str(2**63)], "--seed takes"),
    (["--max-probes-per-person", "0"], "--max-probes-per-person takes"),
    (["--gallery", "500"], "needs more than 500 people"),
    (["--gallery", "30", "--templates", "9"], "at least one with 10+ images"),
])
def test_bad_arguments_exit_2_with_a_message(subset, args, message):
    root, emb, _ = subset
    p = run_cli("eval-openset", "--root", root, *args, "--json", check=2)
    assert message in p.stderr
    assert message in p.stdout  # --json: the error object
    p = run_cli("eval-openset", check=2)
    assert "needs --root" in p.stderr
    p = run_cli("eval-openset", "--root", root / "no-such-folder", check=2)
    assert "cannot open" in p.stderr
