"""Rewrite environment.yml from the requirements in pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
requirements = list(project["dependencies"])
for extra in project["optional-dependencies"].values():
    requirements += [r for r in extra if r not in requirements]

lines = [
    "# Generated from pyproject.toml by scripts/sync-environment.py; a test keeps",
    "# the two in step. Node.js 20 (for the identity provider and the proxy) and",
    "# Debian's chromium (for page tests) come from the system.",
    "name: enclave",
    "channels:",
    "  - conda-forge",
    "dependencies:",
    "  - python=3.11",
    "  - nodejs=20",
    "  - pip",
    "  - pip:",
]
lines += [f'      - "{r}"' for r in sorted(requirements, key=str.lower)]
(ROOT / "environment.yml").write_text("\n".join(lines) + "\n")
