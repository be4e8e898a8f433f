#!/usr/bin/env bash
# bootstrap.sh: make a fresh Debian 12 machine ready to build and test.
#
#  1. installs the missing Debian packages (only when run as root; otherwise
#     prints the apt-get line to run and carries on),
#  2. creates .venv with the pinned test tooling (tests only),
#  3. fetches and verifies the model files (scripts/fetch_models.sh).
# Idempotent: a second run does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config
      libjpeg62-turbo-dev libpng-dev libwebp-dev libexif-dev libopenblas-dev
      libheif-dev libtiff-dev libgif-dev libheif-examples libnuma-dev
      libcmocka-dev libjansson-dev libmicrohttpd-dev libsodium-dev libsqlite3-dev
      libpq-dev postgresql clang-format cppcheck valgrind python3-venv
      libxml2-dev opencv-data chromium chromium-driver clang libfaiss-dev
      file adduser)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "bootstrap: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "bootstrap: missing packages: ${missing[*]}" >&2
        echo "bootstrap: run: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

if [ "${FV_SKIP_VENV:-0}" != 1 ]; then
    if [ ! -x .venv/bin/python ] || ! cmp -s requirements-test.txt .venv/.requirements; then
        echo "bootstrap: preparing .venv (test tooling)"
        python3 -m venv .venv
        .venv/bin/pip install -q --disable-pip-version-check -r requirements-test.txt
        cp requirements-test.txt .venv/.requirements
    fi
    if ! cmp -s requirements-peers.txt .venv/.requirements-peers; then
        echo "bootstrap: installing the peer tools (face_recognition, --no-deps)"
        .venv/bin/pip install -q --disable-pip-version-check --no-deps -r requirements-peers.txt
        cp requirements-peers.txt .venv/.requirements-peers
    fi
fi

scripts/fetch_models.sh
