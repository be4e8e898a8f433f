"""The exceptions of the library side of the package (the client's are in
client.py): a failing libfaceverify call raises FaceverifyError carrying
the library's status as its stable name (fv_status_name, e.g.
"image_corrupt") and number."""


class FaceverifyError(RuntimeError):
    """A libfaceverify call failed: code is the status name, status its number."""

    def __init__(self, code: str, status: int, message: str):
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


class ImageError(FaceverifyError, ValueError):
    """Bytes that are not a supported image, are corrupt, or exceed the limits."""


class ModelError(FaceverifyError):
    """A model file is missing, unreadable, or not the pinned file."""
