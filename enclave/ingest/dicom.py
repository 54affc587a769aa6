"""Probe a multi-frame DICOM object (ultrasound loop, cine) with pydicom."""

from __future__ import annotations

import logging
import warnings
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from enclave.catalog.models import MediaType
from enclave.errors import IngestError
from enclave.ingest.result import ProbeResult, check_resolution

__all__ = ["probe_dicom"]

log = logging.getLogger(__name__)


def probe_dicom(name: str, source: str | BinaryIO, size: int) -> ProbeResult:
    """Probe a DICOM file and check that its pixel data contains every frame.

    Parameters
    ----------
    name
        File name for error messages.
    source
        Path of the file, or a binary file object positioned at its start.
    size
        File size in bytes.

    Raises
    ------
    IngestError
        If the file does not parse, has no pixel data, exceeds the resolution
        limits, or its pixel data is shorter than its frame count requires.
    """
    dataset, truncated = _read(name, source)
    if "PixelData" not in dataset:
        if truncated:
            raise IngestError(
                f"{name}: the DICOM file ends before its pixel data is complete; "
                "the file is truncated, so export it again from its source"
            )
        raise IngestError(
            f"{name}: the DICOM object contains no pixel data (PixelData), so it "
            "is not an image or a loop; ingest the DICOM file that holds the frames"
        )

    rows = int(dataset.get("Rows", 0))
    columns = int(dataset.get("Columns", 0))
    check_resolution(name, columns, rows)
    frames = int(dataset.get("NumberOfFrames") or 1)
    if frames < 1:
        raise IngestError(f"{name}: invalid NumberOfFrames {frames}")
    transfer_syntax = dataset.file_meta.TransferSyntaxUID
    _check_pixel_data(
        name, dataset, frames, rows, columns, transfer_syntax.is_encapsulated
    )

    fps, fps_source = _frame_rate(dataset)
    return ProbeResult(
        media_type=MediaType.DICOM,
        container="dicom",
        video_codec=transfer_syntax.name[:64],
        width=columns,
        height=rows,
        fps=fps,
        duration_s=frames / fps if fps else 0.0,
        frame_count=frames,
        variable_frame_rate=_has_variable_frame_time(dataset),
        size=size,
        extra={
            "transfer_syntax_uid": str(transfer_syntax),
            "photometric_interpretation": str(
                dataset.get("PhotometricInterpretation", "")
            ),
            "samples_per_pixel": int(dataset.get("SamplesPerPixel", 1)),
            "bits_allocated": int(dataset.get("BitsAllocated", 0)),
            "modality": str(dataset.get("Modality", "")),
            "sop_class_uid": str(dataset.get("SOPClassUID", "")),
            "fps_source": fps_source,
        },
    )


def _read(name: str, source: str | BinaryIO) -> tuple[Dataset, bool]:
    """Parse the file; also return whether pydicom hit the end of the file early."""
    # pydicom warns, rather than raises, when the file ends inside an element
    # and then drops that element, so the warning is the sign of truncation.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = pydicom.dcmread(source)
        # pydicom raises many types on malformed input (struct.error,
        # TypeError, IndexError among them), and each means a damaged file.
        except Exception as exc:
            raise IngestError(
                f"{name}: the DICOM file cannot be parsed ({exc}); it is truncated "
                "or damaged, so export it again from its source"
            ) from exc
    truncated = any("End of file" in str(warning.message) for warning in caught)
    for warning in caught:
        log.debug("pydicom warning while probing %s: %s", name, warning.message)
    return dataset, truncated


def _check_pixel_data(
    name: str,
    dataset: Dataset,
    frames: int,
    rows: int,
    columns: int,
    encapsulated: bool,
) -> None:
    pixel_data = dataset.PixelData
    if encapsulated:
        try:
            found = sum(1 for _ in generate_frames(pixel_data, number_of_frames=frames))
        except Exception as exc:  # as in _read: any parse failure means damage
            raise IngestError(
                f"{name}: the encapsulated pixel data is damaged ({exc}); export "
                "the file again from its source"
            ) from exc
        if found < frames:
            raise IngestError(
                f"{name}: NumberOfFrames is {frames} but the pixel data contains "
                f"{found} frames; the file is truncated, so export it again"
            )
        return

    samples = int(dataset.get("SamplesPerPixel", 1))
    bits = int(dataset.get("BitsAllocated", 8))
    expected = (rows * columns * samples * frames * bits + 7) // 8
    if len(pixel_data) < expected:
        raise IngestError(
            f"{name}: the pixel data has {len(pixel_data)} bytes but {frames} frames "
            f"of {columns}x{rows} need {expected}; the file is truncated, so export "
            "it again"
        )


def _frame_rate(dataset: Dataset) -> tuple[float, str | None]:
    """Return frames per second and the attribute it came from (None if unknown)."""
    frame_time_ms = dataset.get("FrameTime")
    if frame_time_ms and float(frame_time_ms) > 0:
        return 1000.0 / float(frame_time_ms), "FrameTime"
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        value = dataset.get(keyword)
        if value and float(value) > 0:
            return float(value), keyword
    vector = _frame_time_vector(dataset)
    if vector:
        return 1000.0 * len(vector) / sum(vector), "FrameTimeVector"
    return 0.0, None


def _frame_time_vector(dataset: Dataset) -> list[float]:
    # The first entry of FrameTimeVector is 0 (the time of the first frame);
    # the others are the milliseconds since the previous frame.
    vector = dataset.get("FrameTimeVector")
    if not vector:
        return []
    return [float(value) for value in list(vector)[1:] if float(value) > 0]


def _has_variable_frame_time(dataset: Dataset) -> bool:
    vector = _frame_time_vector(dataset)
    return len(vector) > 1 and max(vector) - min(vector) > 0.02 * min(vector)
