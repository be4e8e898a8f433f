"""Shared fixtures for the Python tests (CLI, parity with dlib).

Paths come from the environment so the same tests run in a build tree, in
CI and against another build:
  FACEVERIFY_BUILD   build folder holding bin/ (default: <repo>/build)
  FACEVERIFY_MODELS  model folder (default: <repo>/models)
  FACEVERIFY_DATA    labelled photos (default: <repo>/../shared/data)
Tests that need the data skip when it is absent, and fail instead when
FACEVERIFY_REQUIRE_DATA=1 (CI).
"""
import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("FACEVERIFY_BUILD", REPO / "build"))
MODELS = Path(os.environ.get("FACEVERIFY_MODELS", REPO / "models"))
DATA = Path(os.environ.get("FACEVERIFY_DATA", REPO.parent / "shared" / "data"))
REQUIRE_DATA = os.environ.get("FACEVERIFY_REQUIRE_DATA") == "1"
CLI = BUILD / "bin" / "faceverify"


def skip_or_fail(reason: str):
    """Skips the test, or fails it under FACEVERIFY_REQUIRE_DATA=1 (CI)."""
    if REQUIRE_DATA:
        pytest.fail(reason + " (FACEVERIFY_REQUIRE_DATA=1)")
    pytest.skip(reason)


def need(path: Path) -> Path:
    """Returns path, or skips (fails under FACEVERIFY_REQUIRE_DATA=1) if absent."""
    if not path.exists():
        skip_or_fail(f"test data not found: {path}")
    return path


@pytest.fixture(scope="session")
def samples() -> Path:
    return need(DATA / "samples")


@pytest.fixture(scope="session")
def lfw() -> Path:
    return need(DATA / "lfw")


@pytest.fixture(scope="session")
def labels(samples):
    with open(samples / "labels.csv", newline="") as f:
        return {row["path"]: row["identity"] for row in csv.DictReader(f)}


@pytest.fixture(scope="session")
def dlib_oracle():
    """dlib itself with the same .dat files, or skip (fail in CI)."""
    try:
        import dlib  # noqa: F401
    except ImportError as e:
        if REQUIRE_DATA:
            pytest.fail(f"dlib oracle unavailable: {e}")
        pytest.skip(f"dlib oracle unavailable: {e}")
    import dlib

    class Oracle:
        detector = dlib.cnn_face_detection_model_v1(str(MODELS / "mmod_human_face_detector.dat"))
        predictor = dlib.shape_predictor(str(MODELS / "shape_predictor_5_face_landmarks.dat"))
        facerec = dlib.face_recognition_model_v1(
            str(MODELS / "dlib_face_recognition_resnet_model_v1.dat"))

    Oracle.dlib = dlib
    return Oracle


def run_cli(*args, check=None, timeout=300):
    """Runs the faceverify CLI; returns CompletedProcess (text mode)."""
    if not CLI.exists():
        pytest.fail(f"{CLI} not built")
    env = dict(os.environ, FACEVERIFY_MODELS=str(MODELS))
    p = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=env)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p


def run_json(*args, check=0, timeout=300):
    p = run_cli(*args, "--json", check=check, timeout=timeout)
    return json.loads(p.stdout)
