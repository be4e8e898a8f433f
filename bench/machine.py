"""What every bench/results/*.json records about the machine it ran on.

CPU model and cores from /proc/cpuinfo, the BLAS the faceverify binary is
linked against (from ldd) and how its threads are set: faceverify pins
OpenBLAS to 1 thread (src/nn/arena.c) and splits work over its own pool.
"""
import os
import platform
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEVERIFY_DATA", REPO.parent / "shared" / "data"))
MODELS = Path(os.environ.get("FACEVERIFY_MODELS", REPO / "models"))
BUILD = Path(os.environ.get("FACEVERIFY_BUILD", REPO / "build"))
CLI = BUILD / "bin" / "faceverify"
RESULTS = REPO / "bench" / "results"


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_library(binary=CLI):
    """The BLAS shared object the binary loads, resolved to its real file."""
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    for line in out.splitlines():
        m = re.search(r"(\S*blas\S*) => (\S+)", line)
        if m:
            return os.path.realpath(m.group(2))
    return "none found by ldd"


def machine(threads_note="faceverify: OpenBLAS pinned to 1 thread, work split by its own pool"):
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "blas": blas_library(),
        "blas_threads": threads_note,
        "load_average_at_start": os.getloadavg(),
    }


def _portable(v, repo):
    """Paths under this checkout (or its ../shared) written relative to the
    repo root, so that results name no directory of the machine that ran
    them."""
    if isinstance(v, dict):
        return {k: _portable(x, repo) for k, x in v.items()}
    if isinstance(v, list):
        return [_portable(x, repo) for x in v]
    if isinstance(v, str):
        return v.replace(str(repo.parent / "shared") + "/", "../shared/").replace(
            str(repo) + "/", "")
    return v


def write_result(name, obj, dest=None):
    """Writes obj as JSON to bench/results/NAME (or dest)."""
    dest = Path(dest) if dest else RESULTS / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(__import__("json").dumps(_portable(obj, REPO), indent=2) + "\n")
    return dest
