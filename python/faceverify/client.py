"""faceverify.Client: a typed client for faceverifyd's HTTP/JSON API.

One method per API route (src/server/routes.c; the spec is
src/server/openapi.json, also served at /api/openapi.json), standard
library only (urllib).  Images go as JSON base64 strings (the API accepts
them in the same field names as multipart files), except in the batch
enrolment, which takes photos as multipart parts only; an image argument
is a path, bytes, or a binary file object.  Optional arguments left at None are
not sent, so the server's defaults apply.  Answers are the API's JSON
objects as dicts.

Every error answer raises an APIError subclass chosen by the API's error
code (unauthorized -> AuthenticationError, not_found -> NotFoundError,
validation_error -> ValidationError, ...), carrying code, message, the
HTTP status, the X-Request-Id and the whole error object.  Failing to
reach the server at all raises urllib's URLError, as urllib does.
"""
import base64
import json
import os
import uuid
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, Union

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, BinaryIO]
Embedding = Sequence[float]
JSON = Dict[str, Any]


class APIError(Exception):
    """An error answer of faceverifyd: code (the API's error code, e.g.
    "no_face"), message, status (HTTP), request_id, error (the whole error
    object, with reasons/quality/subject where the API gives them)."""

    def __init__(self, code: str, message: str, status: int, request_id: Optional[str],
                 error: Optional[JSON] = None):
        super().__init__(f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        self.error = error or {}


class AuthenticationError(APIError):
    """401 unauthorized: a missing or wrong API key."""


class ForbiddenError(APIError):
    """403: refused (a demo token from another site)."""


class NotFoundError(APIError):
    """404 not_found: no such subject, face, or route."""


class ValidationError(APIError):
    """400 validation_error: a parameter out of range or malformed."""


class InvalidImageError(APIError):
    """400 invalid_image: bytes that are not a supported, intact image."""


class FaceError(APIError):
    """422 no_face / multiple_faces / low_quality / no_templates: the photo
    cannot be used as asked."""


class ConflictError(APIError):
    """409 conflict / duplicate / model_mismatch."""


class PayloadTooLargeError(APIError):
    """413 payload_too_large: the body is above the server's --max-body."""


class RateLimitedError(APIError):
    """429 rate_limited."""


class UnavailableError(APIError):
    """503 unavailable / overloaded / model_unavailable, or 408 request_timeout."""


class ServerError(APIError):
    """500 internal_error, or an answer that is not the API's error shape."""


_BY_CODE = {
    "unauthorized": AuthenticationError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "validation_error": ValidationError,
    "invalid_image": InvalidImageError,
    "no_face": FaceError,
    "multiple_faces": FaceError,
    "low_quality": FaceError,
    "no_templates": FaceError,
    "conflict": ConflictError,
    "duplicate": ConflictError,
    "model_mismatch": ConflictError,
    "unknown_model": ValidationError,
    "payload_too_large": PayloadTooLargeError,
    "rate_limited": RateLimitedError,
    "unavailable": UnavailableError,
    "overloaded": UnavailableError,
    "model_unavailable": UnavailableError,
    "template_key_unavailable": UnavailableError,
    "request_timeout": UnavailableError,
    "internal_error": ServerError,
}
_BY_STATUS = {400: ValidationError, 401: AuthenticationError, 403: ForbiddenError,
              404: NotFoundError, 409: ConflictError, 413: PayloadTooLargeError,
              422: FaceError, 429: RateLimitedError, 408: UnavailableError,
              503: UnavailableError}


def _error_from(status: int, body: bytes, request_id: Optional[str]) -> APIError:
    try:
        err = json.loads(body.decode("utf-8"))["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        err, code = None, "http_error"
        message = body[:200].decode("utf-8", errors="replace") or f"HTTP {status}"
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or ServerError
    return cls(code, message, status, request_id, err)


def _image_bytes(image: ImageInput) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if hasattr(image, "read"):
        return image.read()
    with open(image, "rb") as f:
        return f.read()


def _image_b64(image: ImageInput) -> str:
    return base64.b64encode(_image_bytes(image)).decode("ascii")


def _multipart(fields: JSON, files: Dict[str, bytes]):
    """(body, content type) of a multipart/form-data form (RFC 7578)."""
    boundary = "fv" + uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out += [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                .encode(), str(value).encode(), b"\r\n"]
    for name, data in files.items():
        out += [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                .encode(), data, b"\r\n"]
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def _drop_none(**fields) -> JSON:
    return {k: v for k, v in fields.items() if v is not None}


def _embedding(e: Embedding) -> List[float]:
    return [float(x) for x in e]


class Client:
    """A faceverifyd at url (e.g. "http://127.0.0.1:8000") for the
    collection whose API key is api_key.  timeout: seconds per request."""

    def __init__(self, url: str, api_key: Optional[str] = None, timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.last_request_id: Optional[str] = None

    # ------------------------------------------------------------ transport

    def _request(self, method: str, path: str, body: Optional[JSON] = None,
                 query: Optional[JSON] = None, auth: bool = True, raw: bool = False,
                 form: Optional[tuple] = None):
        url = self.url + path
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            if q:
                url += "?" + urllib.parse.urlencode(q)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif form is not None:
            data, headers["Content-Type"] = _multipart(*form)
        if auth and self.api_key is not None:
            headers["X-API-Key"] = self.api_key
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                self.last_request_id = resp.headers.get("X-Request-Id")
                payload = resp.read()
        except urllib.error.HTTPError as e:
            rid = e.headers.get("X-Request-Id") if e.headers else None
            self.last_request_id = rid
            raise _error_from(e.code, e.read(), rid) from None
        if raw:
            return payload.decode("utf-8")
        return json.loads(payload.decode("utf-8")) if payload else {}

    @staticmethod
    def _id(value: Union[int, str]) -> str:
        return urllib.parse.quote(str(value), safe="")

    # ------------------------------------------------------- service level

    def health(self) -> JSON:
        """GET /api/v1/health (no key): status, models, database."""
        return self._request("GET", "/api/v1/health", auth=False)

    def openapi(self) -> JSON:
        """GET /api/openapi.json: the API's OpenAPI document."""
        return self._request("GET", "/api/openapi.json", auth=False)

    def metrics(self) -> str:
        """GET /metrics: Prometheus text exposition."""
        return self._request("GET", "/metrics", auth=False, raw=True)

    def models(self) -> JSON:
        """GET /api/v1/models: the embedding models the server offers."""
        return self._request("GET", "/api/v1/models")

    def collection(self) -> JSON:
        """GET /api/v1/collection: this key's collection and its settings."""
        return self._request("GET", "/api/v1/collection")

    def update_collection(self, **settings: Any) -> JSON:
        """PATCH /api/v1/collection with the settings given (model,
        index_backend, fmr, fpir, min_quality; None sends null, which
        resets a setting to the server's default)."""
        return self._request("PATCH", "/api/v1/collection", body=dict(settings))

    def audit(self, limit: Optional[int] = None, before: Optional[int] = None) -> JSON:
        """GET /api/v1/audit: the collection's audit log, newest first."""
        return self._request("GET", "/api/v1/audit", query=_drop_none(limit=limit, before=before))

    # ------------------------------------------------------------ images

    def detect(self, image: ImageInput, detector: Optional[str] = None,
               return_chips: Optional[bool] = None) -> JSON:
        """POST /api/v1/detect: the faces in image (boxes, landmarks, quality)."""
        return self._request("POST", "/api/v1/detect", body=_drop_none(
            image=_image_b64(image), detector=detector, return_chips=return_chips))

    def verify(self, image_a: ImageInput, image_b: ImageInput,
               threshold: Optional[float] = None, fmr: Optional[float] = None,
               detector: Optional[str] = None, return_chips: Optional[bool] = None) -> JSON:
        """POST /api/v1/verify: is the face in image_a the person in image_b?"""
        return self._request("POST", "/api/v1/verify", body=_drop_none(
            image_a=_image_b64(image_a), image_b=_image_b64(image_b), threshold=threshold,
            fmr=fmr, detector=detector, return_chips=return_chips))

    def verify_embeddings(self, embedding_a: Embedding, embedding_b: Embedding,
                          threshold: Optional[float] = None, fmr: Optional[float] = None,
                          model: Optional[str] = None) -> JSON:
        """POST /api/v1/verify/embeddings: the same decision for two embeddings."""
        return self._request("POST", "/api/v1/verify/embeddings", body=_drop_none(
            embedding_a=_embedding(embedding_a), embedding_b=_embedding(embedding_b),
            threshold=threshold, fmr=fmr, model=model))

    def identify(self, image: ImageInput, top_k: Optional[int] = None,
                 threshold: Optional[float] = None, k: Optional[int] = None,
                 fpir: Optional[float] = None, detector: Optional[str] = None,
                 return_chips: Optional[bool] = None) -> JSON:
        """POST /api/v1/identify: who, among the enrolled subjects, is in image?"""
        return self._request("POST", "/api/v1/identify", body=_drop_none(
            image=_image_b64(image), top_k=top_k, threshold=threshold, k=k, fpir=fpir,
            detector=detector, return_chips=return_chips))

    def identify_embeddings(self, embedding: Optional[Embedding] = None,
                            embeddings: Optional[Sequence[Embedding]] = None,
                            top_k: Optional[int] = None, threshold: Optional[float] = None,
                            k: Optional[int] = None, fpir: Optional[float] = None,
                            model: Optional[str] = None) -> JSON:
        """POST /api/v1/identify/embeddings: identify one embedding or up to 64."""
        return self._request("POST", "/api/v1/identify/embeddings", body=_drop_none(
            embedding=None if embedding is None else _embedding(embedding),
            embeddings=None if embeddings is None else [_embedding(e) for e in embeddings],
            top_k=top_k, threshold=threshold, k=k, fpir=fpir, model=model))

    # ------------------------------------------------------------ subjects

    def create_subject(self, name: str, metadata: Optional[JSON] = None) -> JSON:
        """POST /api/v1/subjects: a new subject (person) of the collection."""
        return self._request("POST", "/api/v1/subjects",
                             body=_drop_none(name=name, metadata=metadata))

    def list_subjects(self, limit: Optional[int] = None, offset: Optional[int] = None) -> JSON:
        """GET /api/v1/subjects: a page of subjects."""
        return self._request("GET", "/api/v1/subjects",
                             query=_drop_none(limit=limit, offset=offset))

    def get_subject(self, subject_id: Union[int, str]) -> JSON:
        """GET /api/v1/subjects/{id}."""
        return self._request("GET", f"/api/v1/subjects/{self._id(subject_id)}")

    def delete_subject(self, subject_id: Union[int, str]) -> JSON:
        """DELETE /api/v1/subjects/{id}: the subject and its faces."""
        return self._request("DELETE", f"/api/v1/subjects/{self._id(subject_id)}")

    def enroll(self, subject_id: Union[int, str], image: ImageInput, face: Optional[str] = None,
               detector: Optional[str] = None, force: Optional[bool] = None,
               on_duplicate: Optional[str] = None) -> JSON:
        """POST /api/v1/subjects/{id}/faces with a photo: enrols its face."""
        return self._request("POST", f"/api/v1/subjects/{self._id(subject_id)}/faces",
                             body=_drop_none(image=_image_b64(image), face=face,
                                             detector=detector, force=force,
                                             on_duplicate=on_duplicate))

    def enroll_embedding(self, subject_id: Union[int, str], embedding: Embedding,
                         model: Optional[str] = None,
                         on_duplicate: Optional[str] = None) -> JSON:
        """POST /api/v1/subjects/{id}/faces with a precomputed embedding."""
        return self._request("POST", f"/api/v1/subjects/{self._id(subject_id)}/faces",
                             body=_drop_none(embedding=_embedding(embedding), model=model,
                                             on_duplicate=on_duplicate))

    def enroll_batch(self, subject_id: Union[int, str], images: Sequence[ImageInput],
                     face: Optional[str] = None, detector: Optional[str] = None,
                     force: Optional[bool] = None, on_duplicate: Optional[str] = None) -> JSON:
        """POST /api/v1/subjects/{id}/faces/batch with photos (multipart parts
        image1, image2, ...; the server takes at most 16 form fields and
        --max-body bytes): 200 with one result per photo, in order, each
        with its own status (201, or the single enrolment's error)."""
        fields = _drop_none(face=face, detector=detector, on_duplicate=on_duplicate,
                            force=None if force is None else ("true" if force else "false"))
        files = {f"image{i + 1}": _image_bytes(im) for i, im in enumerate(images)}
        return self._request("POST", f"/api/v1/subjects/{self._id(subject_id)}/faces/batch",
                             form=(fields, files))

    def enroll_embeddings(self, subject_id: Union[int, str], embeddings: Sequence[Embedding],
                          model: Optional[str] = None,
                          on_duplicate: Optional[str] = None) -> JSON:
        """POST /api/v1/subjects/{id}/faces/batch with up to 1000 embeddings."""
        return self._request("POST", f"/api/v1/subjects/{self._id(subject_id)}/faces/batch",
                             body=_drop_none(embeddings=[_embedding(e) for e in embeddings],
                                             model=model, on_duplicate=on_duplicate))

    def list_faces(self, subject_id: Union[int, str]) -> JSON:
        """GET /api/v1/subjects/{id}/faces: the subject's enrolled faces."""
        return self._request("GET", f"/api/v1/subjects/{self._id(subject_id)}/faces")

    def delete_face(self, subject_id: Union[int, str], face_id: Union[int, str]) -> JSON:
        """DELETE /api/v1/subjects/{id}/faces/{face_id}."""
        return self._request(
            "DELETE", f"/api/v1/subjects/{self._id(subject_id)}/faces/{self._id(face_id)}")

    def verify_subject(self, subject_id: Union[int, str], image: ImageInput,
                       threshold: Optional[float] = None, fmr: Optional[float] = None,
                       detector: Optional[str] = None) -> JSON:
        """POST /api/v1/subjects/{id}/verify: is the face in image this subject?"""
        return self._request("POST", f"/api/v1/subjects/{self._id(subject_id)}/verify",
                             body=_drop_none(image=_image_b64(image), threshold=threshold,
                                             fmr=fmr, detector=detector))

    # ------------------------------------------------- unassigned faces, naming, merging

    def add_faces(self, image: ImageInput, pick: Optional[str] = None,
                  detector: Optional[str] = None) -> JSON:
        """POST /api/v1/faces with a photo: stores its faces (every one, or
        the largest with pick="largest") without a subject, to be named
        later; 201 with their face_id, box and quality."""
        return self._request("POST", "/api/v1/faces", body=_drop_none(
            image=_image_b64(image), pick=pick, detector=detector))

    def add_face_embedding(self, embedding: Embedding, model: Optional[str] = None) -> JSON:
        """POST /api/v1/faces with a precomputed embedding, stored without a
        subject."""
        return self._request("POST", "/api/v1/faces", body=_drop_none(
            embedding=_embedding(embedding), model=model))

    def collection_faces(self, unassigned: Optional[bool] = None, limit: Optional[int] = None,
                         offset: Optional[int] = None) -> JSON:
        """GET /api/v1/faces: a page of the collection's faces (unassigned=True:
        only those without a subject) and their total."""
        flag = None if unassigned is None else ("true" if unassigned else "false")
        return self._request("GET", "/api/v1/faces",
                             query=_drop_none(unassigned=flag, limit=limit, offset=offset))

    def remove_face(self, face_id: Union[int, str]) -> JSON:
        """DELETE /api/v1/faces/{face_id}: any face of the collection."""
        return self._request("DELETE", f"/api/v1/faces/{self._id(face_id)}")

    def assign_faces(self, face_ids: Sequence[int], subject_id: Optional[int] = None,
                     subject_name: Optional[str] = None,
                     metadata: Optional[JSON] = None) -> JSON:
        """POST /api/v1/faces/assign: moves the faces (unassigned or of any
        subject) to subject_id, or to the subject called subject_name (made,
        with metadata, when there is none), in one transaction."""
        return self._request("POST", "/api/v1/faces/assign", body=_drop_none(
            face_ids=[int(f) for f in face_ids], subject_id=subject_id,
            subject_name=subject_name, metadata=metadata))

    def merge_subjects(self, subject_id: Union[int, str], from_subject_id: int) -> JSON:
        """POST /api/v1/subjects/{id}/merge: every face of from_subject_id
        moves to subject_id, and from_subject_id is deleted."""
        return self._request("POST", f"/api/v1/subjects/{self._id(subject_id)}/merge",
                             body={"from_subject_id": int(from_subject_id)})

    # ------------------------------------------------- clustering, corrections

    def cluster(self, images: Optional[Sequence[ImageInput]] = None,
                embeddings: Optional[Sequence[Embedding]] = None, unassigned: bool = False,
                fmr: Optional[float] = None, min_cluster_size: Optional[int] = None,
                model: Optional[str] = None, detector: Optional[str] = None) -> JSON:
        """POST /api/v1/faces/cluster: groups faces into people.  Exactly one
        source: images (every face of every photo, multipart image1..N),
        embeddings (at most 500), or unassigned=True (the collection's faces
        without a subject).  fmr is the strictness (lower: fewer merges),
        min_cluster_size the smallest group kept (others are noise)."""
        if sum((images is not None, embeddings is not None, bool(unassigned))) != 1:
            raise ValueError("cluster: pass exactly one of images, embeddings, unassigned=True")
        if images is not None:
            fields = _drop_none(fmr=fmr, min_cluster_size=min_cluster_size, detector=detector)
            files = {f"image{i + 1}": _image_bytes(im) for i, im in enumerate(images)}
            return self._request("POST", "/api/v1/faces/cluster",
                                 form=({k: str(v) for k, v in fields.items()}, files))
        body = _drop_none(fmr=fmr, min_cluster_size=min_cluster_size, model=model)
        if embeddings is not None:
            body["embeddings"] = [_embedding(e) for e in embeddings]
        else:
            body["source"] = "unassigned"
        return self._request("POST", "/api/v1/faces/cluster", body=body)

    def add_correction(self, subject_id: Union[int, str], image: Optional[ImageInput] = None,
                       embedding: Optional[Embedding] = None, face_id: Optional[int] = None,
                       model: Optional[str] = None) -> JSON:
        """POST /api/v1/subjects/{id}/not: records that this face (a photo's
        largest face, an embedding, or a stored face of another subject) is
        NOT this subject; identify and verify stop matching it, and faces
        very close to it, to the subject.  Exactly one of the three."""
        if sum(x is not None for x in (image, embedding, face_id)) != 1:
            raise ValueError("add_correction: pass exactly one of image, embedding, face_id")
        path = f"/api/v1/subjects/{self._id(subject_id)}/not"
        if image is not None:
            return self._request("POST", path, form=({}, {"image": _image_bytes(image)}))
        if embedding is not None:
            return self._request("POST", path, body=_drop_none(
                embedding=_embedding(embedding), model=model))
        return self._request("POST", path, body={"face_id": int(face_id)})

    def list_corrections(self, subject_id: Union[int, str]) -> JSON:
        """GET /api/v1/subjects/{id}/not: the subject's corrections (never
        their templates)."""
        return self._request("GET", f"/api/v1/subjects/{self._id(subject_id)}/not")

    def delete_correction(self, subject_id: Union[int, str],
                          correction_id: Union[int, str]) -> JSON:
        """DELETE /api/v1/subjects/{id}/not/{correction_id}."""
        return self._request(
            "DELETE",
            f"/api/v1/subjects/{self._id(subject_id)}/not/{self._id(correction_id)}")


# Which method serves each API route (method, path as routes.c spells it);
# tests/py/test_python_package.py holds it against `faceverifyd routes`.
ROUTES = {
    ("GET", "/api/v1/health"): Client.health,
    ("GET", "/api/openapi.json"): Client.openapi,
    ("GET", "/metrics"): Client.metrics,
    ("GET", "/api/v1/models"): Client.models,
    ("GET", "/api/v1/collection"): Client.collection,
    ("PATCH", "/api/v1/collection"): Client.update_collection,
    ("GET", "/api/v1/audit"): Client.audit,
    ("POST", "/api/v1/detect"): Client.detect,
    ("POST", "/api/v1/verify"): Client.verify,
    ("POST", "/api/v1/verify/embeddings"): Client.verify_embeddings,
    ("POST", "/api/v1/identify"): Client.identify,
    ("POST", "/api/v1/identify/embeddings"): Client.identify_embeddings,
    ("POST", "/api/v1/subjects"): Client.create_subject,
    ("GET", "/api/v1/subjects"): Client.list_subjects,
    ("GET", "/api/v1/subjects/{id}"): Client.get_subject,
    ("DELETE", "/api/v1/subjects/{id}"): Client.delete_subject,
    ("POST", "/api/v1/subjects/{id}/faces"): Client.enroll,
    ("POST", "/api/v1/subjects/{id}/faces/batch"): Client.enroll_batch,
    ("GET", "/api/v1/subjects/{id}/faces"): Client.list_faces,
    ("DELETE", "/api/v1/subjects/{id}/faces/{face_id}"): Client.delete_face,
    ("POST", "/api/v1/subjects/{id}/verify"): Client.verify_subject,
    ("POST", "/api/v1/subjects/{id}/merge"): Client.merge_subjects,
    ("POST", "/api/v1/faces"): Client.add_faces,
    ("GET", "/api/v1/faces"): Client.collection_faces,
    ("DELETE", "/api/v1/faces/{face_id}"): Client.remove_face,
    ("POST", "/api/v1/faces/assign"): Client.assign_faces,
    ("POST", "/api/v1/faces/cluster"): Client.cluster,
    ("POST", "/api/v1/subjects/{id}/not"): Client.add_correction,
    ("GET", "/api/v1/subjects/{id}/not"): Client.list_corrections,
    ("DELETE", "/api/v1/subjects/{id}/not/{correction_id}"): Client.delete_correction,
}
