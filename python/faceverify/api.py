"""face_recognition's functions, computed by libfaceverify.

Same names, arguments, defaults and return shapes as face_recognition 1.3
(api.py), so that code switches by changing its import.  Where the two
differ, it is because libfaceverify has one detector and one landmark
model:

- face_locations: both models run dlib's MMOD CNN detector; model picks
  how it looks at the image.
  - "hog" (face_recognition's default, its fast detector): with
    number_of_times_to_upsample >= 1, libfaceverify's automatic scale
    policy (the CLI's and server's default: MMOD on the photo as it is,
    then MMOD on small upsampled crops where OpenCV's Haar cascade proposes
    faces too small for that pass), which finds faces from about 20 px,
    what HOG needs upsample 2 for, at about 2.2x less time than upsampling
    the whole photo once (LFW, one thread: 60 ms against 135 ms).  Its
    limit: a face under ~80 px that the frontal cascade does not propose
    (a profile, a bystander cut by the frame) is not looked for.  With 0,
    one MMOD pass on the photo as it is (faces from ~80 px, as HOG's).
  - "cnn": MMOD on the image upsampled number_of_times_to_upsample times
    (clamped to 0..2), exactly as face_recognition's "cnn"
    (dlib.cnn_face_detection_model_v1): the same boxes, so encodings match
    face_recognition's cnn ones.
  Faces come largest first.  Boxes are dlib's rectangles, (top, right,
  bottom, left) with right and bottom inclusive, trimmed to the image as
  face_recognition trims them.
- face_landmarks: 5 points per face (dlib's 5-point model), returned as
  face_recognition's model="small" dict (nose_tip, left_eye, right_eye).
  model="large" (68 points) is not available: it warns and gives the same
  5-point dict.
- face_encodings: the 5-point alignment (face_recognition's model="small"
  aligns that way too, and "large" is accepted with the same result);
  num_jitters > 1 averages the embeddings of randomly mirrored and shifted
  copies of the aligned chip (seeded, so repeatable), close to but not
  identical with dlib's jitter.
- load_image_file: libfaceverify's decoder (JPEG, PNG, WebP, BMP, HEIC/HEIF,
  AVIF, TIFF, GIF, PBM/PGM/PPM, sniffed from the bytes, orientation
  applied), with its limits (10 MB of input, 40 megapixels); mode "RGB" or
  "L" as face_recognition allows.

Every function takes the module's default Engine (made on first use with
all cores, or FACEVERIFY_THREADS of them; configure() replaces it).  The
library is called through ctypes, which releases the GIL for each call:
the GIL is held only while the arrays are copied.
"""
import os
import threading
import warnings
from ctypes import byref, c_size_t, c_void_p, create_string_buffer, POINTER

import numpy as np

from . import _lib, _models
from .errors import FaceverifyError, ImageError, ModelError

_IMAGE_STATUSES = {_lib.E_IMAGE_FORMAT, _lib.E_IMAGE_CORRUPT, _lib.E_IMAGE_TOO_LARGE, _lib.E_IO}
_MODEL_STATUSES = {_lib.E_MODEL_MISSING, _lib.E_MODEL_CORRUPT}


def _raise(st: int, err=None, what: str = ""):
    msg = err.value.decode(errors="replace") if err is not None and err.value else ""
    msg = msg or _lib.strerror(st)
    if what:
        msg = f"{what}: {msg}"
    cls = ImageError if st in _IMAGE_STATUSES else ModelError if st in _MODEL_STATUSES \
        else FaceverifyError
    raise cls(_lib.status_name(st), st, msg)


def _rgb_array(img) -> np.ndarray:
    """img as a C-contiguous HxWx3 uint8 array (a 2-D array is grey)."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (load_image_file gives that), not {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 RGB or HxW grey, not shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image is empty: shape {a.shape}")
    return np.ascontiguousarray(a)


class _Image:
    """An fv_image copied from a numpy array, freed on exit."""

    def __init__(self, img):
        self.array = _rgb_array(img)
        self.ptr = POINTER(_lib.Image)()

    def __enter__(self):
        h, w = self.array.shape[:2]
        st = _lib.lib().fv_image_from_rgb(self.array.ctypes.data, w, h, byref(self.ptr))
        if st != _lib.OK:
            _raise(st, what="image")
        return self.ptr

    def __exit__(self, *exc):
        _lib.lib().fv_image_destroy(self.ptr)


def _check_locations_model(model: str):
    if model not in ("hog", "cnn"):
        raise ValueError(f"unknown face detection model {model!r}: 'hog' or 'cnn' "
                         "(both run faceverify's MMOD CNN detector, see the module's help)")


def _check_landmark_model(model: str):
    if model not in ("small", "large"):
        raise ValueError("Invalid landmarks model type. Supported models are ['small', 'large'].")


def _css(face, shape):
    """A face's box as face_recognition's trimmed (top, right, bottom, left):
    fv_face's right and bottom are exclusive, dlib's inclusive."""
    top, right = int(round(face.top)), int(round(face.right)) - 1
    bottom, left = int(round(face.bottom)) - 1, int(round(face.left))
    return max(top, 0), min(right, shape[1]), min(bottom, shape[0]), max(left, 0)


def _face_from_css(css):
    f = _lib.Face()
    top, right, bottom, left = (int(v) for v in css)
    f.left, f.top, f.right, f.bottom = left, top, right + 1, bottom + 1
    return f


class Engine:
    """The loaded models and worker pool (an fv_engine): immutable, shared
    by threads.  models_dir: see _models.models_dir; threads: 0 = all
    cores.  close() frees it (also done when it is collected); no call on
    it may be running then."""

    def __init__(self, models_dir=None, threads: int = 0):
        folder = _models.models_dir(models_dir)
        _models.verify(folder)
        lib = _lib.lib()
        self._lib = lib
        cfg = _lib.Config()
        lib.fv_config_init(byref(cfg))
        self._models_dir = str(folder).encode()
        cfg.models_dir = self._models_dir
        cfg.threads = int(threads)
        self._ptr = c_void_p()
        err = create_string_buffer(_lib.ERR_LEN)
        st = lib.fv_engine_create(byref(cfg), byref(self._ptr), err, _lib.ERR_LEN)
        if st != _lib.OK:
            self._ptr = None
            _raise(st, err)
        self.models_dir = folder

    def close(self):
        if getattr(self, "_ptr", None):
            self._lib.fv_engine_destroy(self._ptr)
            self._ptr = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def _handle(self):
        if not getattr(self, "_ptr", None):
            raise ValueError("the engine is closed")
        return self._ptr

    @property
    def threshold(self) -> float:
        """The calibrated decision threshold on face_distance (Euclidean)."""
        return float(self._lib.fv_engine_threshold(self._handle))

    @property
    def threads(self) -> int:
        return int(self._lib.fv_engine_threads(self._handle))

    def _detect(self, im, upsample: int, model: str = "hog"):
        """The faces of the fv_image im (boxes and landmarks), largest first;
        model "hog" or "cnn" as the module's help says."""
        opt = _lib.DetectOptions()
        self._lib.fv_detect_options_init(byref(opt))
        opt.detector = _lib.DETECTOR_MMOD
        upsample = min(max(int(upsample), 0), 2)
        if model == "hog" and upsample > 0:
            upsample = _lib.UPSAMPLE_AUTO
        opt.upsample = upsample
        opt.try_rotations = 0  # face_recognition's semantics: the image as given
        cap, count = 16, c_size_t(0)
        err = create_string_buffer(_lib.ERR_LEN)
        while True:
            faces = (_lib.Face * cap)()
            st = self._lib.fv_detect(self._handle, im, byref(opt), faces, cap, byref(count), err,
                                     _lib.ERR_LEN)
            if st != _lib.OK:
                _raise(st, err, "detect")
            if count.value <= cap:
                return list(faces[:count.value])
            cap = count.value

    def _faces(self, im, locations, upsample: int = 1):
        """Faces with landmarks: detected, or at the given css boxes."""
        if locations is None:
            return self._detect(im, upsample)
        faces = []
        for css in locations:
            f = _face_from_css(css)
            st = self._lib.fv_face_landmarks(self._handle, im, byref(f))
            if st != _lib.OK:
                _raise(st, what="landmarks")
            faces.append(f)
        return faces

    def face_locations(self, img, number_of_times_to_upsample=1, model="hog"):
        _check_locations_model(model)
        with _Image(img) as im:
            faces = self._detect(im, number_of_times_to_upsample, model)
        shape = np.shape(img)
        return [_css(f, shape) for f in faces]

    def face_landmarks(self, face_image, face_locations=None, model="large"):
        _check_landmark_model(model)
        if model == "large":
            warnings.warn("faceverify has the 5-point landmark model only: model='large' gives "
                          "the 5-point dict (nose_tip, left_eye, right_eye)", stacklevel=3)
        with _Image(face_image) as im:
            faces = self._faces(im, face_locations)
        out = []
        for f in faces:
            p = [(int(round(pt.x)), int(round(pt.y))) for pt in f.landmarks]
            out.append({"nose_tip": [p[4]], "left_eye": p[2:4], "right_eye": p[0:2]})
        return out

    def _embed(self, chips: np.ndarray) -> np.ndarray:
        n = chips.shape[0]
        out = np.zeros((n, _lib.EMBED_DIM), dtype=np.float32)
        if n == 0:
            return out
        chips = np.ascontiguousarray(chips, dtype=np.uint8)
        err = create_string_buffer(_lib.ERR_LEN)
        st = self._lib.fv_embed_chips(self._handle, chips.ctypes.data, n, out.ctypes.data, err,
                                      _lib.ERR_LEN)
        if st != _lib.OK:
            _raise(st, err, "embed")
        return out

    def face_encodings(self, face_image, known_face_locations=None, num_jitters=1,
                       model="small"):
        _check_landmark_model(model)
        num_jitters = int(num_jitters)
        with _Image(face_image) as im:
            faces = self._faces(im, known_face_locations)
            s = _lib.CHIP_SIZE
            chips = np.zeros((len(faces), s, s, 3), dtype=np.uint8)
            for i, f in enumerate(faces):
                st = self._lib.fv_face_chip(self._handle, im, byref(f), chips[i].ctypes.data)
                if st != _lib.OK:
                    _raise(st, what="chip")
        if num_jitters <= 1:
            return [e.astype(np.float64) for e in self._embed(chips)]
        rng = np.random.default_rng(0)
        return [self._embed(_jitter(c, num_jitters, rng)).mean(axis=0).astype(np.float64)
                for c in chips]


def _jitter(chip: np.ndarray, n: int, rng) -> np.ndarray:
    """n copies of chip, each mirrored with probability 1/2 and shifted by
    up to 3 pixels each way (edges repeated)."""
    out = np.empty((n,) + chip.shape, dtype=np.uint8)
    s = chip.shape[0]
    pad = 3
    padded = np.pad(chip, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    for i in range(n):
        dy, dx = rng.integers(-pad, pad + 1, size=2)
        c = padded[pad + dy:pad + dy + s, pad + dx:pad + dx + s]
        out[i] = c[:, ::-1] if rng.random() < 0.5 else c
    return out


_default = None
_default_lock = threading.Lock()


def configure(models_dir=None, threads=None) -> Engine:
    """Replaces the default engine used by the module's functions (threads:
    None = FACEVERIFY_THREADS, else all cores) and returns it."""
    global _default
    if threads is None:
        threads = int(os.environ.get("FACEVERIFY_THREADS", "0") or 0)
    eng = Engine(models_dir=models_dir, threads=threads)
    with _default_lock:
        _default = eng
    # The old engine is not closed here: a thread may be inside one of its
    # calls.  It is freed when the last reference to it goes.
    return eng


def default_engine() -> Engine:
    """The engine the module's functions use (made on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            threads = int(os.environ.get("FACEVERIFY_THREADS", "0") or 0)
            _default = Engine(threads=threads)
        return _default


# ------------------------------------------------- face_recognition's API

def load_image_file(file, mode="RGB"):
    """Decodes an image file (a path or a binary file object) into a numpy
    uint8 array: HxWx3 for mode "RGB", HxW for "L" (luma as Pillow computes
    it: ITU-R 601-2)."""
    if mode not in ("RGB", "L"):
        raise ValueError("mode must be 'RGB' or 'L'")
    if hasattr(file, "read"):
        data = file.read()
    else:
        with open(file, "rb") as f:
            data = f.read()
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("file must be opened in binary mode")
    lib = _lib.lib()
    lim = _lib.Limits()
    lib.fv_limits_init(byref(lim))
    img = POINTER(_lib.Image)()
    err = create_string_buffer(_lib.ERR_LEN)
    st = lib.fv_image_decode(bytes(data), len(data), byref(lim), byref(img), err, _lib.ERR_LEN)
    if st != _lib.OK:
        _raise(st, err)
    try:
        h, w = img.contents.height, img.contents.width
        rgb = np.ctypeslib.as_array(img.contents.rgb, shape=(h, w, 3)).copy()
    finally:
        lib.fv_image_destroy(img)
    if mode == "L":
        r, g, b = (rgb[:, :, i].astype(np.uint32) for i in range(3))
        return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)
    return rgb


def face_locations(img, number_of_times_to_upsample=1, model="hog"):
    """Boxes of the faces in img: a list of (top, right, bottom, left)."""
    return default_engine().face_locations(img, number_of_times_to_upsample, model)


def face_landmarks(face_image, face_locations=None, model="large"):
    """5 landmarks per face, as {"nose_tip": [..], "left_eye": [..], "right_eye": [..]}."""
    return default_engine().face_landmarks(face_image, face_locations, model)


def face_encodings(face_image, known_face_locations=None, num_jitters=1, model="small"):
    """One 128-d float64 encoding per face (those found, or at the boxes given)."""
    return default_engine().face_encodings(face_image, known_face_locations, num_jitters, model)


def face_distance(face_encodings, face_to_compare):
    """Euclidean distance of each encoding to face_to_compare (numpy array)."""
    if len(face_encodings) == 0:
        return np.empty((0))
    return np.linalg.norm(np.asarray(face_encodings) - face_to_compare, axis=1)


def compare_faces(known_face_encodings, face_encoding_to_check, tolerance=0.6):
    """True for each known encoding within tolerance of the one to check."""
    return list(face_distance(known_face_encodings, face_encoding_to_check) <= tolerance)
