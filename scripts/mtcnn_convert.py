#!/usr/bin/env python3
"""mtcnn_convert.py: facenet-pytorch's MTCNN weights -> models/mtcnn.bin.

The facenet-pytorch 2.6.0 wheel (PyPI, MIT licence) ships the P-, R- and
O-Net weights of MTCNN as facenet_pytorch/data/{pnet,rnet,onet}.pt, in
torch's legacy (pre-zip) serialisation.  They are read here without torch
(load_state_dict, also used by bench/mtcnn_spike.py) and written in a small
format of our own that src/detect/mtcnn.c reads:

  offset  size  field
  0       8     magic "FVMTCNN\\0"
  8       4     version, uint32 little-endian (1)
  12      4     tensor count, uint32
  then per tensor:
          2     name length L (1..63), uint16
          L     name, ASCII, "<net>.<layer>.<param>" with net p, r or o
                (for example "p.conv1.weight", "o.dense6_1.bias")
          4     dims D (1..4), uint32
          4*D   dims, uint32 each (torch's shape: conv weights out x in x kh
                x kw, dense weights out x in)
          4*N   data, float32 little-endian, N = product of the dims,
                row-major (C order)

Tensors are written in the state dicts' order, P-Net, R-Net, O-Net; the C
loader looks them up by name and checks every shape.

The legacy .pt layout: a sequence of pickles (magic number, protocol,
system info, the state dict whose tensors refer to storages by persistent
id, the storage keys), then each storage's raw bytes behind an 8-byte
element count.  The zip format (`*/data.pkl` + `*/data/N`) is read too.

  scripts/mtcnn_convert.py DIR_WITH_PT_FILES models/mtcnn.bin
  scripts/mtcnn_convert.py --wheel facenet_pytorch-2.6.0-py3-none-any.whl models/mtcnn.bin
"""
import argparse
import collections
import io
import os
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

MAGIC = b"FVMTCNN\0"
VERSION = 1
NETS = ("p", "r", "o")


class _Storage:
    def __init__(self, key, dtype):
        self.key, self.dtype = key, dtype


class _LazyTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}


class _Unpickler(pickle.Unpickler):
    """Maps torch's rebuild functions and storage types to plain records;
    refuses every other class (the file is not trusted)."""

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return lambda st, off, size, stride, *rest: _LazyTensor(st, off, size, stride)
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *rest: data
        if module == "torch" and name in _DTYPES:
            return name
        raise pickle.UnpicklingError("unexpected class %s.%s" % (module, name))

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        return _Storage(str(pid[2]), _DTYPES[pid[1]])


def _materialise(t, raw):
    flat = np.frombuffer(raw[t.storage.key], dtype=t.storage.dtype)
    item = flat.itemsize
    return np.lib.stride_tricks.as_strided(flat[t.offset:], shape=tuple(t.size),
                                           strides=tuple(s * item for s in t.stride)).copy()


def load_state_dict(path, data=None):
    """{name: float32 ndarray} from a torch .pt state dict, without torch
    (data: the file's bytes, when already read)."""
    if data is None:
        data = Path(path).read_bytes()
    raw = {}
    if data[:2] == b"PK":
        z = zipfile.ZipFile(io.BytesIO(data))
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        root = pkl[:-len("data.pkl")]
        sd = _Unpickler(io.BytesIO(z.read(pkl))).load()
        for n in z.namelist():
            if n.startswith(root + "data/"):
                raw[n[len(root + "data/"):]] = z.read(n)
    else:
        f = io.BytesIO(data)
        magic = pickle.load(f)
        if magic != 0x1950A86A20F9469CFC6C:
            raise ValueError("%s: not a torch legacy file" % path)
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info
        sd = _Unpickler(f).load()
        keys = pickle.load(f)
        for k in keys:
            n = struct.unpack("<q", f.read(8))[0]
            dt = next(t.storage.dtype for t in sd.values() if t.storage.key == k)
            raw[k] = f.read(n * np.dtype(dt).itemsize)
    return {k: _materialise(v, raw).astype(np.float32) for k, v in sd.items()}


def load_nets(folder=None, wheel=None):
    """{"p"|"r"|"o": state dict} from a folder of {p,r,o}net.pt or a wheel."""
    if wheel:
        z = zipfile.ZipFile(wheel)
        return {k: load_state_dict("%snet.pt" % k,
                                   z.read("facenet_pytorch/data/%snet.pt" % k)) for k in NETS}
    return {k: load_state_dict(Path(folder) / ("%snet.pt" % k)) for k in NETS}


def write_bin(nets, dest):
    """Writes nets in the format of the file comment (atomically)."""
    tensors = [("%s.%s" % (k, n), a) for k in NETS for n, a in nets[k].items()]
    out = io.BytesIO()
    out.write(MAGIC + struct.pack("<II", VERSION, len(tensors)))
    for name, a in tensors:
        nb = name.encode("ascii")
        out.write(struct.pack("<H", len(nb)) + nb + struct.pack("<I", a.ndim))
        out.write(struct.pack("<%dI" % a.ndim, *a.shape))
        out.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
    tmp = Path(str(dest) + ".tmp")
    tmp.write_bytes(out.getvalue())
    os.replace(tmp, dest)
    return len(tensors)


def read_bin(path):
    """{"p"|"r"|"o": {name: float32 ndarray}} from an mtcnn.bin (the inverse
    of write_bin; bench and tests run the numpy reference on it)."""
    data = Path(path).read_bytes()
    if data[:8] != MAGIC or struct.unpack_from("<I", data, 8)[0] != VERSION:
        raise ValueError("%s: not an mtcnn.bin of version %d" % (path, VERSION))
    count = struct.unpack_from("<I", data, 12)[0]
    off, nets = 16, {k: collections.OrderedDict() for k in NETS}
    for _ in range(count):
        nl = struct.unpack_from("<H", data, off)[0]
        name = data[off + 2:off + 2 + nl].decode("ascii")
        off += 2 + nl
        nd = struct.unpack_from("<I", data, off)[0]
        dims = struct.unpack_from("<%dI" % nd, data, off + 4)
        off += 4 + 4 * nd
        n = int(np.prod(dims))
        a = np.frombuffer(data, "<f4", n, off).reshape(dims).astype(np.float32)
        off += 4 * n
        net, layer = name.split(".", 1)
        nets[net][layer] = a
    if off != len(data):
        raise ValueError("%s: %d trailing bytes" % (path, len(data) - off))
    return nets


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", nargs="?", help="folder with pnet.pt, rnet.pt, onet.pt")
    ap.add_argument("dest", help="the mtcnn.bin to write")
    ap.add_argument("--wheel", help="read the .pt files from this facenet-pytorch wheel")
    args = ap.parse_args()
    if not args.src and not args.wheel:
        ap.error("give a folder of .pt files or --wheel")
    n = write_bin(load_nets(args.src, args.wheel), args.dest)
    print("mtcnn_convert: %d tensors -> %s" % (n, args.dest))


if __name__ == "__main__":
    sys.exit(main())
