"""The CLI under valgrind: no invalid access and no leak on the full
pipeline (decode, MMOD, landmarks, chip, ResNet, two threads) and on an
input-error path.  Small LFW images at upsample 0 keep the run short.
Skipped when valgrind is not installed (make test installs it).
tests/valgrind.supp names the blocks libraries allocate before main
(libheif's HEVC plugin and libgomp, at load) and keep to exit; everything
else must be freed."""
import re
import shutil
import subprocess

import pytest

from conftest import CLI, MODELS, REPO, skip_or_fail

SUPP = REPO / "tests" / "valgrind.supp"


def _valgrind(*args):
    return subprocess.run(["valgrind", "--leak-check=full", "--error-exitcode=99",
                           "--errors-for-leak-kinds=definite,indirect", f"--suppressions={SUPP}", str(CLI),
                           *map(str, args), "--models", str(MODELS)],
                          capture_output=True, text=True, timeout=900)


def all_freed(stderr):
    """Every block freed, apart from the suppressed library ones."""
    if "All heap blocks were freed" in stderr:
        return True
    kinds = dict(re.findall(r"(definitely lost|indirectly lost|possibly lost|still reachable): "
                            r"([\d,]+) bytes", stderr))
    return len(kinds) == 4 and all(v == "0" for v in kinds.values())


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_cli_pipeline_clean_under_valgrind(lfw):
    p = _valgrind("verify", lfw / "Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
                  lfw / "Tony_Blair/Tony_Blair_0001.jpg", "--upsample", "0", "--threads", "2")
    assert p.returncode == 1, p.stderr[-3000:]
    assert "ERROR SUMMARY: 0 errors" in p.stderr
    assert all_freed(p.stderr), p.stderr[-3000:]


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_cli_error_path_clean_under_valgrind(lfw, tmp_path):
    bad = tmp_path / "truncated.jpg"
    data = (lfw / "Aaron_Eckhart/Aaron_Eckhart_0001.jpg").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    p = _valgrind("verify", bad, lfw / "Tony_Blair/Tony_Blair_0001.jpg")
    assert p.returncode == 2, p.stderr[-3000:]
    assert "ERROR SUMMARY: 0 errors" in p.stderr
    assert all_freed(p.stderr), p.stderr[-3000:]


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_cli_mtcnn_clean_under_valgrind(lfw):
    """The opt-in MTCNN detector (P-Net strips, R-/O-Net batches, the lazy
    load) on the same pair, try_rotations' turned passes included."""
    if not (MODELS / "mtcnn.bin").exists():
        skip_or_fail(f"MTCNN weights not found: {MODELS / 'mtcnn.bin'}")
    p = _valgrind("verify", lfw / "Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
                  lfw / "Tony_Blair/Tony_Blair_0001.jpg", "--detector", "mtcnn", "--threads", "2")
    assert p.returncode == 1, p.stderr[-3000:]
    assert "ERROR SUMMARY: 0 errors" in p.stderr
    assert all_freed(p.stderr), p.stderr[-3000:]
