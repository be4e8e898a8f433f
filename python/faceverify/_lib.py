"""ctypes declarations of the part of include/faceverify.h the package uses.

The structs mirror the header field by field (same order, same C types);
the library's own *_init functions fill every default, so Python never
guesses a default.  ctypes releases the GIL for the length of each foreign
call, so Python threads run while the library detects and embeds; the GIL
is held only while arrays are copied in and out.

The shared library is the libfaceverify.so that scikit-build-core put next
to this file; FACEVERIFY_LIBRARY names another one (a build tree's
build/lib/libfaceverify.so, for instance).
"""
import ctypes
import os
from ctypes import (POINTER, Structure, c_char_p, c_float, c_int, c_size_t, c_uint64, c_ubyte,
                    c_void_p)
from pathlib import Path

EMBED_DIM = 128
CHIP_SIZE = 150
NUM_LANDMARKS = 5
ERR_LEN = 512

# fv_status values the Python side tells apart (the header's enum).
OK = 0
E_INVALID_ARGUMENT = 1
E_NO_MEMORY = 2
E_IO = 3
E_IMAGE_FORMAT = 4
E_IMAGE_CORRUPT = 5
E_IMAGE_TOO_LARGE = 6
E_MODEL_MISSING = 7
E_MODEL_CORRUPT = 8

DETECTOR_MMOD = 0
UPSAMPLE_AUTO = -1  # fv_detect_options.upsample: the automatic scale policy


class Limits(Structure):
    _fields_ = [("max_input_bytes", c_size_t), ("max_pixels", c_uint64)]


class Image(Structure):
    _fields_ = [("width", c_int), ("height", c_int), ("rgb", POINTER(c_ubyte))]


class Config(Structure):
    _fields_ = [("models_dir", c_char_p), ("threads", c_int), ("limits", Limits),
                ("threshold", c_float), ("haar_cascade", c_char_p), ("flip", c_int),
                ("mtcnn_model", c_char_p), ("jitters", c_int)]


class Point(Structure):
    _fields_ = [("x", c_float), ("y", c_float)]


class Face(Structure):
    _fields_ = [("left", c_float), ("top", c_float), ("right", c_float), ("bottom", c_float),
                ("score", c_float), ("landmarks", Point * NUM_LANDMARKS)]


class DetectOptions(Structure):
    _fields_ = [("detector", c_int), ("upsample", c_int), ("max_side", c_int),
                ("min_score", c_float), ("try_rotations", c_int), ("order", c_int),
                ("haar_scale_factor", c_float), ("haar_min_neighbors", c_int),
                ("haar_min_size", c_int), ("haar_max_size", c_int), ("precision", c_int)]


def _path() -> str:
    env = os.environ.get("FACEVERIFY_LIBRARY")
    if env:
        return env
    return str(Path(__file__).resolve().parent / "libfaceverify.so")


def _declare(lib):
    image_pp = POINTER(POINTER(Image))
    sigs = {
        "fv_strerror": (c_char_p, [c_int]),
        "fv_status_name": (c_char_p, [c_int]),
        "fv_limits_init": (None, [POINTER(Limits)]),
        "fv_image_decode": (c_int, [c_void_p, c_size_t, POINTER(Limits), image_pp, c_char_p,
                                    c_size_t]),
        "fv_image_from_rgb": (c_int, [c_void_p, c_int, c_int, image_pp]),
        "fv_image_destroy": (None, [POINTER(Image)]),
        "fv_config_init": (None, [POINTER(Config)]),
        "fv_engine_create": (c_int, [POINTER(Config), POINTER(c_void_p), c_char_p, c_size_t]),
        "fv_engine_destroy": (None, [c_void_p]),
        "fv_engine_threshold": (c_float, [c_void_p]),
        "fv_engine_threads": (c_int, [c_void_p]),
        "fv_detect_options_init": (None, [POINTER(DetectOptions)]),
        "fv_detect": (c_int, [c_void_p, POINTER(Image), POINTER(DetectOptions), POINTER(Face),
                              c_size_t, POINTER(c_size_t), c_char_p, c_size_t]),
        "fv_face_landmarks": (c_int, [c_void_p, POINTER(Image), POINTER(Face)]),
        "fv_face_chip": (c_int, [c_void_p, POINTER(Image), POINTER(Face), c_void_p]),
        "fv_embed_chips": (c_int, [c_void_p, c_void_p, c_size_t, c_void_p, c_char_p, c_size_t]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    return lib


_lib = None


def lib():
    """The loaded library (loaded on first use, once)."""
    global _lib
    if _lib is None:
        _lib = _declare(ctypes.CDLL(_path()))
    return _lib


def status_name(st: int) -> str:
    return lib().fv_status_name(st).decode()


def strerror(st: int) -> str:
    return lib().fv_strerror(st).decode()
