#!/usr/bin/env bash
# Install everything the enclave needs into ./.venv and the hub's node_modules.
# Usage: scripts/install.sh [--test]   (--test adds the test tools and Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."

# Researchers' servers, kernels and the broker run as other OS users and
# import the package from this checkout, so every folder above it must be
# searchable by others (o+x). Nothing becomes listable or readable.
repo=$(pwd)
if ! su -s /bin/sh nobody -c "test -r '$repo/pyproject.toml'" 2>/dev/null; then
    folder=$repo
    while [[ "$folder" != "/" ]]; do
        chmod o+x "$folder"
        folder=$(dirname "$folder")
    done
    echo "install: made the folders above $repo searchable by other OS users (o+x)"
fi

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

# Researchers' servers and the broker run as other OS users, so the venv's
# interpreter and standard library must be readable by every user: Debian's
# /usr/bin/python3 is, an interpreter under /root (pyenv) is not.
python=${PYTHON:-/usr/bin/python3}
if ! su -s /bin/sh nobody -c "$python -c pass" 2>/dev/null; then
    echo "install: $python cannot be run by other OS users; set PYTHON to a system-wide Python 3.11+" >&2
    exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
.venv/bin/pip install --quiet --upgrade pip
# Pin torch first: an unpinned requirement would pull a multi-GB CUDA build.
.venv/bin/pip install --quiet torch==2.13.0
if (( want_test )); then
    .venv/bin/pip install --quiet -e '.[test]'
else
    .venv/bin/pip install --quiet -e .
fi

for dir in hub_config hub_config/oidc; do
    if [[ -f "$dir/package-lock.json" ]]; then
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
done

if (( want_test )); then
    packages=(chromium chromium-driver fonts-noto-cjk)
    missing=()
    for p in "${packages[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if (( ${#missing[@]} )); then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
fi
