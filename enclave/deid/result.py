"""The value every de-identification function returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeidResult"]


@dataclass(frozen=True)
class DeidResult:
    """De-identified bytes and the report that says what was done to them.

    ``report`` is JSON-serialisable: the profile, each step with its settings
    and counts, the model files with their SHA-256, the residual check and the
    software versions. It never contains an identifier of the source.
    """

    data: bytes
    report: dict[str, Any] = field(default_factory=dict)
    media_type: str = "video"
    """``"video"`` or ``"dicom"``, the catalog's media type of ``data``."""
    suffix: str = ".mp4"
    """File name suffix that matches the container of ``data``."""
