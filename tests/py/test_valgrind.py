"""The CLI under valgrind: no invalid access and no leak on the full
pipeline (decode, MMOD, landmarks, chip, ResNet, threads) and on an error
path.  Skipped when valgrind is not installed (make test installs it)."""
import shutil
import subprocess

import pytest

from conftest import CLI, MODELS


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
@pytest.mark.parametrize("args,code", [
    (["verify", "openface/clapton-2.jpg", "skimage/astronaut.jpg", "--threads", "2"], 1),
    (["verify", "skimage/coffee.png", "openface/clapton-2.jpg"], 2),
])
def test_cli_clean_under_valgrind(samples, args, code):
    argv = [samples / a if a.endswith((".jpg", ".png")) else a for a in args]
    p = subprocess.run(["valgrind", "--leak-check=full", "--error-exitcode=99",
                        "--errors-for-leak-kinds=definite,indirect", str(CLI), *map(str, argv),
                        "--models", str(MODELS)], capture_output=True, text=True, timeout=900)
    assert p.returncode == code, p.stderr[-3000:]
    assert "ERROR SUMMARY: 0 errors" in p.stderr
    assert "definitely lost" not in p.stderr or "definitely lost: 0 bytes" in p.stderr
