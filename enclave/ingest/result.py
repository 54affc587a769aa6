"""Probe results of media files, and the frame size limits of ingest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from enclave.catalog.models import MediaType
from enclave.errors import IngestError

__all__ = ["MAX_DIMENSION", "MAX_PIXELS", "ProbeResult", "check_resolution"]

# Decoding allocates whole frames, so a forged or oversized header could
# exhaust memory. The limits admit 8K UHD (7680x4320, 33.2 megapixels) and
# large DICOM images with a margin. One 40-megapixel RGB frame takes 120 MB.
MAX_DIMENSION = 8192
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class ProbeResult:
    """Stream properties of one video or multi-frame DICOM file.

    ``rotation`` is the clockwise angle in degrees (0, 90, 180 or 270) that a
    player applies to show the frames upright, as in the legacy ``rotate``
    tag of MP4 files. ``fps`` is 0.0 when a DICOM object records no frame
    timing.
    """

    media_type: MediaType
    container: str
    video_codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    frame_count: int
    rotation: int = 0
    variable_frame_rate: bool = False
    has_audio: bool = False
    size: int = 0
    """File size in bytes."""
    sha256: str = ""
    """SHA-256 of the file, hex; ingest checks that the stored bytes match it."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Container-specific details, such as the DICOM transfer syntax."""

    def asset_fields(self) -> dict[str, Any]:
        """Column values of :class:`~enclave.catalog.models.Asset` from this probe."""
        return {
            "media_type": self.media_type,
            "container": self.container,
            "video_codec": self.video_codec,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "duration_s": self.duration_s,
            "frame_count": self.frame_count,
            "rotation": self.rotation,
            "variable_frame_rate": self.variable_frame_rate,
            "has_audio": self.has_audio,
            "probe": self.summary(),
        }

    def summary(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field."""
        data = asdict(self)
        data["media_type"] = self.media_type.value
        return data


def check_resolution(name: str, width: int, height: int) -> None:
    """Raise IngestError if a frame is larger than the ingest limits."""
    if width <= 0 or height <= 0:
        raise IngestError(f"{name}: invalid frame size {width}x{height}")
    if width > MAX_DIMENSION or height > MAX_DIMENSION:
        raise IngestError(
            f"{name}: frame size {width}x{height} exceeds the maximum of "
            f"{MAX_DIMENSION} pixels per side; scale the video down before ingest"
        )
    if width * height > MAX_PIXELS:
        raise IngestError(
            f"{name}: frame size {width}x{height} ({width * height / 1e6:.1f} "
            f"megapixels) exceeds the maximum of {MAX_PIXELS / 1e6:g} megapixels; "
            "scale the video down before ingest"
        )
