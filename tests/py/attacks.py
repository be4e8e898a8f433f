"""Issue 16's attack helpers, shared by the tests that replay them
(test_hardening, test_memory_budget, test_chaos): raw HTTP/1.1 requests
written byte for byte on sockets (so that framing the requests library would
never send can be sent), the server's memory as /proc reports it, and a
large, mostly flat JPEG made with Pillow.  A socket may be bound to another
loopback source address (127.0.0.2 ... on Linux), so that an attacker's
connections count against another address than a normal client's."""
import io
import socket
from pathlib import Path

from PIL import Image

from conftest import DATA, need
from fvserver import DAEMON


def connect(srv, timeout=5.0, source=None) -> socket.socket:
    """A connection to srv on 127.0.0.1, from the loopback address source
    (e.g. "127.0.0.2") when given."""
    return socket.create_connection(("127.0.0.1", srv.port), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def read_all(s: socket.socket) -> bytes:
    """What the server sends until it closes (or resets) the connection or
    the socket's timeout passes."""
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (ConnectionResetError, socket.timeout):
        pass
    return out


def raw(srv, data: bytes, timeout=5.0, source=None) -> bytes:
    """Sends data on a new connection and returns all the server answers."""
    with connect(srv, timeout, source) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_all(s)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def req(method, path, key=None, headers=(), body=b"", ctype=None, length=True) -> bytes:
    """The bytes of one request: request line, Host, the key, Content-Type
    and Content-Length when asked, the extra header lines, the body."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if key:
        lines.append(f"X-API-Key: {key}")
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    lines += list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def vm(pid: int) -> dict:
    """VmRSS and VmHWM of pid, in MB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    return out


def proc_kib(pid: int, field: str) -> int:
    """One field of /proc/pid/status (VmRSS, VmHWM...), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def asan_build() -> bool:
    """ASan's shadow memory and quarantine change RSS: bounds on the peak
    are checked on Release builds only (the statuses on every build)."""
    return b"AddressSanitizer" in DAEMON.read_bytes()


def jpeg(w: int, h: int) -> bytes:
    """A w x h JPEG, flat grey with one face (skimage's astronaut) pasted in
    the middle: a 40 MP one is under 1 MB."""
    canvas = Image.new("RGB", (w, h), (128, 128, 128))
    face = Image.open(need(DATA / "samples" / "skimage" / "astronaut.jpg")).convert("RGB")
    canvas.paste(face, ((w - face.width) // 2, (h - face.height) // 2))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=85)
    return buf.getvalue()
