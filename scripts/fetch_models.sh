#!/usr/bin/env bash
# fetch_models.sh: put dlib's three model files into models/ and verify them.
#
# The files come from the PyPI source distribution face_recognition_models
# 0.3.0 (the only registry we may reach); both the archive and each extracted
# file are checked against pinned SHA-256 sums, so a corrupted or substituted
# download is refused.  Files already present with the right sums are kept.
#
# From a source tree it fills models/ (make models, the bootstrap).  Installed
# (share/faceverify/fetch_models.sh, run by `faceverifyd fetch-models`) it
# fills $FACEVERIFY_MODELS.  Settings:
#   FACEVERIFY_MODELS        the folder to fill (default: models/ of the tree)
#   FACEVERIFY_MODELS_SDIST  a copy of the sdist already on this machine: it
#                            is checked like a download, and nothing is fetched
#   FACEVERIFY_MODELS_CACHE  where the download is kept (default: DEST/.cache)
#
# Then the MTCNN weights of the default detector (auto, issue 17): the
# facenet-pytorch 2.6.0 wheel from PyPI (MIT licence; 2 MB of weights in
# a wheel of a few MB), checked against its pinned SHA-256, converted by
# mtcnn_convert.py (beside this script; needs python3 with numpy) into
# DEST/mtcnn.bin, whose SHA-256 is pinned too.  Without it the default
# detector falls back to MMOD (slower, see the README's detection policy)
# and only an explicit `--detector mtcnn` fails, so a failure here is a
# warning, unless FACEVERIFY_REQUIRE_DATA=1 (CI), where it is an error.
#   FACEVERIFY_MTCNN_WHEEL   a copy of the wheel already on this machine
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${FACEVERIFY_MODELS:-$root/models}
umask 022
mkdir -p "$dest"

SDIST=face_recognition_models-0.3.0.tar.gz
SDIST_SHA=b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf
declare -A SHA=(
  [dlib_face_recognition_resnet_model_v1.dat]=55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30
  [mmod_human_face_detector.dat]=4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6
  [shape_predictor_5_face_landmarks.dat]=c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888
)

ok() { [ -f "$dest/$1" ] && echo "${SHA[$1]}  $dest/$1" | sha256sum -c --status; }

# the project's venv has a pip and numpy even where the system python has none
py=python3
[ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python

fetch_dlib() {
need=0
for f in "${!SHA[@]}"; do ok "$f" || need=1; done
[ $need = 0 ] && return 0

cache=${FACEVERIFY_MODELS_CACHE:-$dest/.cache}
src=$cache/$SDIST
if [ -n "${FACEVERIFY_MODELS_SDIST:-}" ]; then
    src=$FACEVERIFY_MODELS_SDIST
    echo "$SDIST_SHA  $src" | sha256sum -c --status 2>/dev/null || {
        echo "fetch_models: $src is not $SDIST (SHA-256 differs)" >&2; exit 1; }
elif ! echo "$SDIST_SHA  $src" | sha256sum -c --status 2>/dev/null; then
    echo "fetch_models: downloading $SDIST from PyPI (100 MB, once)"
    mkdir -p "$cache"
    rm -f "$src"
    "$py" -m pip --version >/dev/null 2>&1 || {
        echo "fetch_models: needs pip to download from PyPI (apt-get install python3-pip)," \
             "or FACEVERIFY_MODELS_SDIST=FILE naming a copy of $SDIST" >&2; exit 1; }
    "$py" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        face_recognition_models==0.3.0 -d "$cache"
    echo "$SDIST_SHA  $src" | sha256sum -c --status || {
        echo "fetch_models: $SDIST failed its SHA-256 check" >&2; exit 1; }
fi
for f in "${!SHA[@]}"; do
    tar -xzf "$src" -O "face_recognition_models-0.3.0/face_recognition_models/models/$f" > "$dest/$f.tmp"
    mv "$dest/$f.tmp" "$dest/$f"
    ok "$f" || { echo "fetch_models: $f failed its SHA-256 check" >&2; exit 1; }
done
echo "fetch_models: models ready in $dest"
}

WHEEL=facenet_pytorch-2.6.0-py3-none-any.whl
WHEEL_SHA=ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca
MTCNN_SHA=54dd87aa99ad2c92924a5a661d2263feb22bf6b4102e5cd555e7b59fab47db3b

# Fetches and converts the MTCNN weights; returns 1 with a message on
# failure (the caller decides whether that is fatal).
fetch_mtcnn() {
    echo "$MTCNN_SHA  $dest/mtcnn.bin" | sha256sum -c --status 2>/dev/null && return 0
    local cache=${FACEVERIFY_MODELS_CACHE:-$dest/.cache}
    local whl=${FACEVERIFY_MTCNN_WHEEL:-$cache/$WHEEL}
    local conv
    conv=$(dirname "$0")/mtcnn_convert.py
    [ -f "$conv" ] || { echo "fetch_models: $conv not found" >&2; return 1; }
    "$py" -c 'import numpy' 2>/dev/null || {
        echo "fetch_models: converting the MTCNN weights needs numpy for $py" >&2; return 1; }
    if ! echo "$WHEEL_SHA  $whl" | sha256sum -c --status 2>/dev/null; then
        [ -n "${FACEVERIFY_MTCNN_WHEEL:-}" ] && {
            echo "fetch_models: $whl is not $WHEEL (SHA-256 differs)" >&2; return 1; }
        echo "fetch_models: downloading $WHEEL from PyPI (MTCNN weights, optional)"
        mkdir -p "$cache"
        rm -f "$whl"
        "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: \
            facenet-pytorch==2.6.0 -d "$cache" || {
            echo "fetch_models: could not download facenet-pytorch 2.6.0" >&2; return 1; }
        echo "$WHEEL_SHA  $whl" | sha256sum -c --status || {
            echo "fetch_models: $WHEEL failed its SHA-256 check" >&2; return 1; }
    fi
    "$py" "$conv" --wheel "$whl" "$dest/mtcnn.bin.new" >/dev/null || {
        rm -f "$dest/mtcnn.bin.new"; echo "fetch_models: converting $WHEEL failed" >&2; return 1; }
    echo "$MTCNN_SHA  $dest/mtcnn.bin.new" | sha256sum -c --status || {
        rm -f "$dest/mtcnn.bin.new"
        echo "fetch_models: mtcnn.bin failed its SHA-256 check" >&2; return 1; }
    mv "$dest/mtcnn.bin.new" "$dest/mtcnn.bin"
    echo "fetch_models: MTCNN weights ready in $dest/mtcnn.bin"
}

fetch_dlib
if ! fetch_mtcnn; then
    if [ "${FACEVERIFY_REQUIRE_DATA:-}" = 1 ]; then
        echo "fetch_models: the MTCNN weights are required (FACEVERIFY_REQUIRE_DATA=1)" >&2
        exit 1
    fi
    echo "fetch_models: WARNING: no MTCNN weights; the default detector falls back to MMOD" \
        "(slower on real-size photos) and --detector mtcnn fails" >&2
fi
