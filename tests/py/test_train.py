"""`faceverify train` end to end on a few LFW identities, and serving the
trained model through the CLI.

One module-scoped run builds a small folder-per-identity dataset (links to
the first images of ten LFW people) and trains the scratch CNN for a few
short epochs; the tests read its JSON summary:
  - training lowers the triplet loss on the training identities and
    separates them better than the untrained network (ROC AUC on pairs of
    training images, before and after);
  - the same seed gives the same model (id = hash of the weights), and a
    run resumed from the first epoch's checkpoint ends with the same model
    as the uninterrupted run;
  - the model serves `verify` and `embed` through `--model`, with its id
    in the output, and `compare` refuses templates of different models;
  - the adapter trains on the cached ResNet embeddings and is scored next
    to the plain ResNet on the same pairs;
  - bad arguments and a corrupt model file are typed errors.
"""
import json
import os

import pytest

from conftest import run_cli

PEOPLE = ["Abdullah_Gul", "Adrien_Brody", "Alejandro_Toledo", "Alvaro_Uribe", "Amelie_Mauresmo",
          "Andre_Agassi", "Andy_Roddick", "Angelina_Jolie", "Ann_Veneman", "Anna_Kournikova"]
PER_PERSON = 6
SHORT = ["--mode", "scratch", "--input", "32", "--width", "8", "--epochs", "4",
         "--steps-per-epoch", "12", "--identities-per-batch", "6", "--images-per-identity", "4",
         "--val-fraction", "0.2", "--patience", "10", "--pick", "center", "--seed", "5",
         "--lr", "0.003"]


@pytest.fixture(scope="module")
def data(lfw, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    d = root / "people"
    for p in PEOPLE:
        src = lfw / p
        if not src.is_dir():
            pytest.skip(f"{src} missing")
        (d / p).mkdir(parents=True)
        for f in sorted(os.listdir(src))[:PER_PERSON]:
            os.symlink(src / f, d / p / f)
    return root


def train(data, name, *extra, check=0):
    out = data / name
    p = run_cli("train", "--data", data / "people", "--out", out, "--cache",
                data / "faces.cache", "--json", *SHORT, *extra, check=check, timeout=900)
    return out, (json.loads(p.stdout) if check == 0 else p)


@pytest.fixture(scope="module")
def trained(data):
    return train(data, "a.fvm")


def test_training_lowers_loss_and_separates_identities(trained):
    _, r = trained
    first, last = r["initial"], r["epochs"][-1]
    assert r["identities"] == len(PEOPLE) and r["images"] == len(PEOPLE) * PER_PERSON
    assert r["faces"] >= r["images"] - 2
    assert len(r["epochs"]) == 4
    # numbers from the run: triplet loss over the training identities'
    # images (eval mode, semi-hard mining) and their pair ROC AUC
    assert last["train_eval_loss"] < 0.8 * first["train_eval_loss"], (first, last)
    assert last["train_auc"] > first["train_auc"] + 0.1, (first, last)
    assert 0 < r["epochs"][-1]["active_fraction"] <= 1
    assert r["threshold"] > 0


def test_same_seed_same_model_and_resume_matches(data, trained):
    out, r = trained
    _, again = train(data, "b.fvm")
    assert again["id"] == r["id"]
    # stop after one epoch, then resume from its checkpoint
    first, one = train(data, "c.fvm", "--stop-after", "1")
    assert one["epochs_run"] == 1
    ckpt = str(first) + ".ckpt"
    assert os.path.exists(ckpt)
    resumed_out = data / "c.fvm"
    p = run_cli("train", "--data", data / "people", "--out", resumed_out, "--cache",
                data / "faces.cache", "--json", *SHORT, "--resume", ckpt, check=0, timeout=900)
    resumed = json.loads(p.stdout)
    assert resumed["epochs_run"] == 4
    assert resumed["id"] == r["id"]


def test_trained_model_serves_verify_and_embed(data, trained, lfw):
    model, r = trained
    a = lfw / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"
    b = lfw / "Abdullah_Gul" / "Abdullah_Gul_0002.jpg"
    p = run_cli("verify", a, b, "--model", model, "--pick", "center", "--json")
    assert p.returncode in (0, 1), p.stderr
    v = json.loads(p.stdout)
    assert v["model"] == r["id"]
    assert v["threshold"] == pytest.approx(r["threshold"], rel=1e-6)
    assert (p.returncode == 0) == v["verified"]
    ea = data / "ea.json"
    eb = data / "eb.json"
    ea.write_text(run_cli("embed", a, "--model", model, "--pick", "center", "--json",
                          check=0).stdout)
    eb.write_text(run_cli("embed", b, "--model", model, "--pick", "center", "--json",
                          check=0).stdout)
    ja = json.loads(ea.read_text())
    assert ja["model"] == r["id"] and len(ja["embedding"]) == 128
    assert sum(x * x for x in ja["embedding"]) == pytest.approx(1.0, abs=1e-4)
    c = json.loads(run_cli("compare", ea, eb, "--json", check=0).stdout)
    assert c["distance"] == pytest.approx(v["distance"], abs=1e-5)
    assert c["model"] == r["id"]


def test_flip_leaves_a_scratch_model_alone(data, trained, lfw):
    """A scratch model embeds the chip alone, so --flip neither moves its
    embedding nor renames its space: compare accepts the two."""
    model, r = trained
    a = lfw / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"
    out = {}
    for name, extra in {"plain": [], "flip": ["--flip"]}.items():
        out[name] = data / f"scratch_{name}.json"
        out[name].write_text(run_cli("embed", a, "--model", model, "--pick", "center", "--json",
                                     *extra, check=0).stdout)
    plain, flip = (json.loads(out[k].read_text()) for k in ("plain", "flip"))
    assert plain["model"] == flip["model"] == r["id"]
    assert flip["embedding"] == pytest.approx(plain["embedding"], abs=1e-6)
    c = json.loads(run_cli("compare", out["plain"], out["flip"], "--json", check=0).stdout)
    assert c["distance"] == pytest.approx(0, abs=1e-5)


def test_eval_pairs_with_model(data, trained):
    model, r = trained
    lines = ["1", "Abdullah_Gul\t1\t2", "Abdullah_Gul\t1\tAndre_Agassi\t1"]
    (data / "eval_pairs.txt").write_text("\n".join(lines) + "\n")
    e = json.loads(run_cli("eval-pairs", "--pairs", data / "eval_pairs.txt", "--root",
                           data / "people", "--model", model, "--pick", "center", "--json",
                           check=0).stdout)
    assert e["model"] == r["id"]
    assert e["pairs"] == 2
    assert e["threshold"] == pytest.approx(r["threshold"], rel=1e-6)


def test_mixed_models_are_refused(data, trained, lfw):
    model, _ = trained
    a = lfw / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"
    mine = data / "mine.json"
    resnet = data / "resnet.json"
    mine.write_text(run_cli("embed", a, "--model", model, "--pick", "center", "--json",
                            check=0).stdout)
    resnet.write_text(run_cli("embed", a, "--pick", "center", "--json", check=0).stdout)
    p = run_cli("compare", mine, resnet, check=2)
    assert "model_mismatch" in p.stderr


def test_adapter_trains_and_is_scored_next_to_resnet(data, lfw):
    lines = ["2", "Abdullah_Gul\t1\t2", "Andre_Agassi\t1\t3",
             "Abdullah_Gul\t1\tAndre_Agassi\t1", "Adrien_Brody\t2\tAngelina_Jolie\t3"]
    (data / "pairs.txt").write_text("\n".join(lines) + "\n")
    model, r = train(data, "adapter.fvm", "--mode", "adapter", "--epochs", "2",
                     "--test-pairs", data / "pairs.txt", "--test-root", data / "people",
                     "--test-cache", data / "test.cache")
    assert r["mode"] == "adapter" and r["id"].startswith("adapter-")
    assert r["parameters"] == 128 * 256 + 256 + 256 * 128 + 128
    t = r["test"]
    # both scored on the same four pairs of the same detected faces
    assert t["model"]["pairs"] == t["resnet"]["pairs"] == 4
    assert t["resnet"]["roc_auc"] == 1.0
    a = lfw / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"
    e = json.loads(run_cli("embed", a, "--model", model, "--pick", "center", "--json",
                           check=0).stdout)
    assert e["model"] == r["id"]


def test_bad_arguments_are_input_errors(data):
    p = run_cli("train", "--out", data / "x.fvm", check=2)
    assert "--data" in p.stderr
    p = run_cli("train", "--data", data / "people", "--out", data / "x.fvm", "--mode", "nope",
                check=2)
    assert "--mode" in p.stderr
    p = run_cli("train", "--data", data / "nowhere", "--out", data / "x.fvm", check=2)
    assert "cannot read" in p.stderr
    bad = data / "bad.fvm"
    bad.write_text("faceverify-model 1\nlayers 99\nend\n")
    p = run_cli("embed", data / "people" / PEOPLE[0] / os.listdir(data / "people" / PEOPLE[0])[0],
                "--model", bad, check=3)
    assert "model" in p.stderr
