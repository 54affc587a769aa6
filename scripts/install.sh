#!/usr/bin/env bash
# Install everything the enclave needs into ./.venv and the hub's node_modules.
# Usage: scripts/install.sh [--test]   (--test adds the test tools and Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

python=${PYTHON:-python3}
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
