"""The installed tree works on its own (`make install PREFIX=DIR`).

The Release build ($FACEVERIFY_BUILD) is installed into a temporary prefix
with `cmake --install --prefix`, which is not the CMAKE_INSTALL_PREFIX
compiled in: so these tests also hold the run-time relocation
(src/core/paths.c, src/server/paths.c).  Every program runs with no
FACEVERIFY_* variable and from a working directory outside the repository:

- a C program built with `cc prog.c $(pkg-config --cflags --libs faceverify)`
  verifies two photos of one person (verified) and of two people (not);
- it loads PREFIX's models: with PREFIX/share/faceverify moved away it fails
  with FV_E_MODEL_MISSING naming that folder;
- the static library links with `pkg-config --static`;
- a CMake project using find_package(faceverify) builds against both
  faceverify::faceverify and faceverify::faceverify_static;
- the installed faceverifyd migrates its default database under
  PREFIX/var/lib/faceverify (0700 folder, 0600 file), starts, answers
  /api/v1/health and serves /api/openapi.json, / and /static/ from PREFIX's
  assets.
"""
import csv
import os
import re
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import BUILD, DATA, REPO, need

PROG = r"""
#include <stdio.h>
#include <faceverify.h>

/* prog A B: verifies two photos with the default engine; prints
 * "verified=V distance=D" (exit 0), or whether the failure is
 * FV_E_MODEL_MISSING, the status's text and the message (exit 3). */
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    char err[512] = "";
    fv_engine *eng = NULL;
    fv_image *a = NULL, *b = NULL;
    fv_verify_options opt;
    fv_verify_result res;
    fv_verify_options_init(&opt);
    fv_status st = fv_engine_create(NULL, &eng, err, sizeof err);
    if (st == FV_OK) st = fv_image_load(argv[1], NULL, &a, err, sizeof err);
    if (st == FV_OK) st = fv_image_load(argv[2], NULL, &b, err, sizeof err);
    if (st == FV_OK) st = fv_verify(eng, a, b, &opt, &res, err, sizeof err);
    if (st == FV_OK) printf("verified=%d distance=%.4f\n", res.verified, res.distance);
    else printf("model_missing=%d %s: %s\n", st == FV_E_MODEL_MISSING, fv_strerror(st), err);
    fv_image_destroy(a);
    fv_image_destroy(b);
    fv_engine_destroy(eng);
    return st == FV_OK ? 0 : 3;
}
"""

CONSUMER = """
cmake_minimum_required(VERSION 3.16)
project(consumer C)
find_package(faceverify 0.1 REQUIRED)
add_executable(app_shared prog.c)
target_link_libraries(app_shared PRIVATE faceverify::faceverify)
add_executable(app_static prog.c)
target_link_libraries(app_static PRIVATE faceverify::faceverify_static)
"""


def clean_env(**extra) -> dict:
    """The environment without any FACEVERIFY_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEVERIFY_")}
    env.update(extra)
    return env


def sh(cmd: str, cwd: Path, env=None, timeout=120) -> str:
    p = subprocess.run(cmd, shell=True, cwd=cwd, env=env or clean_env(), capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, (cmd, p.stdout, p.stderr)
    return p.stdout


@pytest.fixture(scope="module")
def photos():
    """(same_a, same_b, other): two photos of one person and one of another,
    from the samples' pairs.csv."""
    samples = need(DATA / "samples")
    same = diff = None
    with open(need(samples / "pairs.csv"), newline="") as f:
        for row in csv.DictReader(f):
            # plain photos (derived/ holds rotated ones, *_aligned/ chips)
            if not (row["path_a"].startswith("openface/") and
                    row["path_b"].startswith("openface/")):
                continue
            if row["same"] == "1" and not same:
                same = row
            if row["same"] == "0" and not diff:
                diff = row
    assert same and diff
    return (samples / same["path_a"], samples / same["path_b"],
            samples / (diff["path_b"] if diff["path_a"] == same["path_a"] else diff["path_a"]))


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    """The Release build installed into a fresh temporary prefix."""
    if not (BUILD / "CMakeCache.txt").exists():
        pytest.fail(f"{BUILD} is not a configured build")
    root = tmp_path_factory.mktemp("install")
    pre = root / "prefix"
    sh(f"cmake --install {BUILD} --prefix {pre}", cwd=root)
    if not list((pre / "share" / "faceverify").glob("*.dat")):
        pytest.fail(f"no models installed: run `make models` before installing")
    return pre


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A working directory outside the repository, holding prog.c."""
    w = tmp_path_factory.mktemp("consumer")
    assert REPO not in w.parents
    (w / "prog.c").write_text(PROG)
    return w


def pc_env(prefix: Path) -> dict:
    return clean_env(PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))


def check_verifies(exe: Path, cwd: Path, photos, env=None):
    a, b, other = photos
    env = env or clean_env()
    same = subprocess.run([str(exe), str(a), str(b)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert same.returncode == 0 and "verified=1" in same.stdout, (same.stdout, same.stderr)
    diff = subprocess.run([str(exe), str(a), str(other)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert diff.returncode == 0 and "verified=0" in diff.stdout, (diff.stdout, diff.stderr)


def compiled_in_prefix() -> Path:
    m = re.search(r"^CMAKE_INSTALL_PREFIX:PATH=(.*)$", (BUILD / "CMakeCache.txt").read_text(),
                  re.M)
    return Path(m.group(1))


def test_installed_files(prefix):
    for rel in ["include/faceverify.h", "lib/libfaceverify.a", "lib/libfaceverify.so",
                "lib/pkgconfig/faceverify.pc", "lib/cmake/faceverify/faceverifyConfig.cmake",
                "lib/cmake/faceverify/faceverifyConfigVersion.cmake", "bin/faceverify",
                "bin/faceverifyd", "share/faceverify/faceverify.conf",
                "share/faceverify/mmod_human_face_detector.dat",
                "share/faceverify/server/openapi.json", "share/faceverify/server/docs.html",
                "share/faceverify/server/static/index.html"]:
        assert (prefix / rel).exists(), rel


def test_pkg_config_program_verifies(prefix, work, photos):
    env = pc_env(prefix)
    sh("cc prog.c $(pkg-config --cflags --libs faceverify) -o prog", cwd=work, env=env)
    run_env = clean_env(LD_LIBRARY_PATH=str(prefix / "lib"))
    check_verifies(work / "prog", work, photos, run_env)

    # The models came from PREFIX: without them the engine names PREFIX's
    # folder, not the repository's models/.
    if (compiled_in_prefix() / "share/faceverify/mmod_human_face_detector.dat").exists():
        pytest.skip("models installed at the compiled-in prefix would be used instead")
    share = prefix / "share" / "faceverify"
    away = prefix / "share" / "faceverify.away"
    share.rename(away)
    try:
        p = subprocess.run([str(work / "prog"), str(photos[0]), str(photos[1])], cwd=work,
                           env=run_env, capture_output=True, text=True, timeout=120)
    finally:
        away.rename(share)
    assert p.returncode == 3, (p.stdout, p.stderr)
    assert p.stdout.startswith("model_missing=1 ") and str(share) in p.stdout, p.stdout


def test_pkg_config_static(prefix, work, photos):
    env = pc_env(prefix)
    flags = sh("pkg-config --static --cflags --libs faceverify", cwd=work, env=env).split()
    assert "-lfaceverify" in flags and "-lopenblas" in flags
    # -l:libfaceverify.a takes the archive even though the .so sits beside it
    flags = ["-l:libfaceverify.a" if f == "-lfaceverify" else f for f in flags]
    # a program installed in PREFIX/bin finds PREFIX/share/faceverify
    exe = prefix / "bin" / "prog_static"
    sh(f"cc prog.c {' '.join(flags)} -o {exe}", cwd=work, env=env)
    needed = sh(f"readelf -d {exe}", cwd=work)
    assert "libfaceverify" not in needed
    try:
        check_verifies(exe, work, photos)
    finally:
        exe.unlink()


def test_cmake_package(prefix, work, photos):
    (work / "CMakeLists.txt").write_text(CONSUMER)
    b = work / "build"
    sh(f"cmake -S . -B {b} -DCMAKE_PREFIX_PATH={prefix} -DCMAKE_BUILD_TYPE=Release", cwd=work)
    sh(f"cmake --build {b}", cwd=work)
    # the shared one runs through the build's RPATH to PREFIX/lib
    check_verifies(b / "app_shared", work, photos)
    assert "libfaceverify" not in sh(f"readelf -d {b / 'app_static'}", cwd=work)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_installed_daemon(prefix, work):
    daemon = prefix / "bin" / "faceverifyd"
    p = subprocess.run([str(daemon), "migrate"], cwd=work, env=clean_env(), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, (p.stdout, p.stderr)
    db = prefix / "var" / "lib" / "faceverify" / "faceverify.db"
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert db.stat().st_size > 0  # migrated
    port = free_port()
    srv = subprocess.Popen([str(daemon), "serve", "--listen", f"127.0.0.1:{port}"], cwd=work,
                           env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = requests.get(base + "/api/v1/health", timeout=5)
                break
            except requests.ConnectionError:
                assert srv.poll() is None, srv.communicate()
                assert time.monotonic() < deadline, "faceverifyd did not start"
                time.sleep(0.2)
        assert r.status_code == 200, r.text
        assets = prefix / "share" / "faceverify" / "server"
        r = requests.get(base + "/api/openapi.json", timeout=5)
        assert r.status_code == 200 and r.content == (assets / "openapi.json").read_bytes()
        # without --demo, / is the installed "demo is off" page (with a 404)
        r = requests.get(base + "/", timeout=5)
        assert r.status_code == 404
        assert r.content == (assets / "static" / "demo-off.html").read_bytes()
        r = requests.get(base + "/static/app.css", timeout=5)
        assert r.status_code == 200 and r.content == (assets / "static" / "app.css").read_bytes()
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.communicate()
