"""Where the three dlib model files come from, and their SHA-256 check.

The files are those of the PyPI sdist face_recognition_models 0.3.0 (the
package's run-time dependency, which installs them), pinned by the same
SHA-256 sums as scripts/fetch_models.sh.  The folder is, in order:
the models_dir the caller gives, $FACEVERIFY_MODELS, or the models/ folder
of the installed face_recognition_models (found without importing it: its
__init__ imports pkg_resources, which a fresh venv may lack).  Every file
is checked before the engine loads it, once per folder per process, so a
corrupt or substituted file is refused with ModelError naming it.
"""
import hashlib
import importlib.util
import os
import threading
from pathlib import Path

from .errors import ModelError

SHA256 = {
    "dlib_face_recognition_resnet_model_v1.dat":
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    "mmod_human_face_detector.dat":
        "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
    "shape_predictor_5_face_landmarks.dat":
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
}

_checked = set()
_lock = threading.Lock()


def models_dir(configured=None) -> Path:
    """The folder to load from (see the module comment); ModelError when none."""
    if configured:
        return Path(configured)
    env = os.environ.get("FACEVERIFY_MODELS")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("model_unavailable", 7, "no model files: install face_recognition_models==0.3.0 "
                         "(pip install face_recognition_models==0.3.0) or set FACEVERIFY_MODELS "
                         "to a folder holding " + ", ".join(sorted(SHA256)))
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(folder: Path) -> None:
    """Checks the three files in folder against the pinned sums (once)."""
    key = str(folder.resolve())
    with _lock:
        if key in _checked:
            return
        for name, want in SHA256.items():
            path = folder / name
            if not path.is_file():
                raise ModelError("model_unavailable", 7, f"{path}: model file missing")
            got = _sha256(path)
            if got != want:
                raise ModelError("model_unavailable", 8, f"{path}: SHA-256 {got} is not the pinned {want} "
                                 "(face_recognition_models 0.3.0)")
        _checked.add(key)
