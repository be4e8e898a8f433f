"""faceverify: face verification on libfaceverify.

- face_recognition's functions with the same names and shapes, so that
  code switches by changing its import (see api.py for what differs):
  load_image_file, face_locations, face_landmarks, face_encodings,
  compare_faces, face_distance.  Engine, configure() and default_engine()
  choose the models folder and threads.
- Client(url, api_key): a client for faceverifyd's HTTP API, raising
  APIError subclasses that carry the API's error code.
"""
from .api import (Engine, compare_faces, configure, default_engine, face_distance,
                  face_encodings, face_landmarks, face_locations, load_image_file)
from .client import (APIError, AuthenticationError, Client, ConflictError, FaceError,
                     ForbiddenError, InvalidImageError, NotFoundError, PayloadTooLargeError,
                     RateLimitedError, ServerError, UnavailableError, ValidationError)
from .errors import FaceverifyError, ImageError, ModelError

__version__ = "0.1.0"

__all__ = [
    "load_image_file", "face_locations", "face_landmarks", "face_encodings", "compare_faces",
    "face_distance", "Engine", "configure", "default_engine", "Client", "APIError",
    "AuthenticationError", "ForbiddenError", "NotFoundError", "ValidationError",
    "InvalidImageError", "FaceError", "ConflictError", "PayloadTooLargeError",
    "RateLimitedError", "UnavailableError", "ServerError", "FaceverifyError", "ImageError",
    "ModelError",
]
