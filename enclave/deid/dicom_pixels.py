"""Clean burned-in text from DICOM pixel data (the Clean Pixel Data option).

Every frame is decoded with pydicom's pixel handlers, searched for text with
:mod:`enclave.deid.text`, masked with a solid fill in the stored pixel values
and checked again on every frame. The cleaned pixels are then encoded with a
transfer syntax that matches the input where an encoder is available:

- uncompressed input stays uncompressed;
- RLE Lossless is encoded again with pydicom's RLE encoder;
- 8-bit JPEG Baseline is encoded again with Pillow (a second lossy generation);
- any other compressed input that can be decoded is stored as Explicit VR
  Little Endian, and the report notes the change.

Pixel data whose text cannot be checked is quarantined: the functions raise
:class:`~enclave.errors.DeidentificationError` and nothing is released.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEGBaseline8Bit,
    RLELossless,
)

from enclave.deid.text import (
    TextDetector,
    TextRegion,
    default_detector,
    find_static_text,
    mask_text,
    residual_text,
)
from enclave.errors import DeidentificationError, ResidualCheckFailed

__all__ = ["SUPPORTED_PHOTOMETRIC", "clean_pixel_data", "quarantine"]

logger = logging.getLogger(__name__)

# JPEG 2000 decoders return YBR_ICT and YBR_RCT data as RGB, and pydicom
# converts the other YCbCr interpretations to RGB while decoding.
SUPPORTED_PHOTOMETRIC = (
    "MONOCHROME1",
    "MONOCHROME2",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
)

# Attributes whose content is an image or a document that OCR cannot check
# when it is not stored as Pixel Data.
_UNCHECKED_CONTENT = ("FloatPixelData", "DoubleFloatPixelData", "EncapsulatedDocument")

# After the first masking, frames with residual text are masked again and
# rechecked this many times before the file is quarantined.
_RESIDUAL_ROUNDS = 2

# Quality of the JPEG Baseline re-encoding, on Pillow's 1-95 scale.
_JPEG_QUALITY = 95


def quarantine(reason: str) -> DeidentificationError:
    """Return the error that quarantines a file, with ``reason`` in its message."""
    return DeidentificationError(
        f"DICOM file quarantined, nothing was released: {reason}"
    )


def clean_pixel_data(
    ds: Dataset,
    *,
    detector: TextDetector | None = None,
    residual_threshold: float = 0.4,
) -> dict[str, Any]:
    """Mask burned-in text on every frame of ``ds`` and store the pixels again.

    ``ds`` is changed in place: Pixel Data, the Image Pixel attributes that the
    new encoding needs and, when the transfer syntax changes, the file meta
    information.

    Parameters
    ----------
    ds
        A dataset read with its file meta information.
    detector
        The text detector; defaults to the shared one at threshold 0.5.
    residual_threshold
        Recognition confidence that counts as remaining text in the check on
        every masked frame.

    Returns
    -------
    dict
        Counts and encodings for the report; ``{"pixel_data": False}`` when
        the dataset has no Pixel Data.

    Raises
    ------
    DeidentificationError
        If the pixel data cannot be decoded, uses an unsupported photometric
        interpretation or bit depth, or the OCR engine fails (quarantined).
    ResidualCheckFailed
        If text remains after masking (quarantined).
    """
    if "PixelData" not in ds:
        for keyword in _UNCHECKED_CONTENT:
            if keyword in ds:
                raise quarantine(
                    f"it contains {keyword}, which cannot be checked for "
                    "identifying text"
                )
        return {"pixel_data": False}

    frames, details = _decode(ds)
    detector = detector or default_detector()
    masked, text_report = _mask_frames(frames, details, detector, residual_threshold)
    encoding = _encode(ds, masked, details)

    return {
        "pixel_data": True,
        "frames": int(frames.shape[0]),
        "rows": int(frames.shape[1]),
        "columns": int(frames.shape[2]),
        "photometric_interpretation_in": details["photometric"],
        "photometric_interpretation_out": str(ds.PhotometricInterpretation),
        "text": text_report,
        **encoding,
    }


def _decode(ds: Dataset) -> tuple[np.ndarray, dict[str, Any]]:
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None)
    if syntax is None:
        raise quarantine(
            "its Transfer Syntax UID is missing, so the pixel data cannot be "
            "decoded; write the file with file meta information"
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise quarantine(
            f"photometric interpretation {photometric!r} is not supported for "
            f"text checks; supported: {', '.join(SUPPORTED_PHOTOMETRIC)}"
        )
    bits_allocated = int(ds.get("BitsAllocated", 0))
    if bits_allocated not in (8, 16, 32):
        raise quarantine(
            f"Bits Allocated {bits_allocated} is not supported for text checks; "
            "use 8, 16 or 32"
        )
    if not syntax.is_little_endian:
        raise quarantine(
            f"transfer syntax {syntax.name} is big endian, which is not "
            "supported; convert the file to Explicit VR Little Endian first"
        )

    try:
        # pydicom converts YCbCr pixel data to RGB here (as_rgb is its default).
        array = ds.pixel_array
    except Exception as exc:
        raise quarantine(
            f"its {syntax.name} pixel data could not be decoded "
            f"({type(exc).__name__}), so burned-in text cannot be checked"
        ) from exc

    samples = int(ds.get("SamplesPerPixel", 1))
    frame_count = int(ds.get("NumberOfFrames", 1) or 1)
    frame_ndim = 3 if samples > 1 else 2
    frames = array if array.ndim == frame_ndim + 1 else array[np.newaxis]
    if frames.shape[0] != frame_count:
        raise quarantine(
            f"it declares {frame_count} frames but {frames.shape[0]} were decoded"
        )

    details = {
        "syntax": syntax,
        "photometric": photometric,
        "color": samples > 1,
        "bits_stored": int(ds.get("BitsStored", bits_allocated)),
        "had_number_of_frames": "NumberOfFrames" in ds,
    }
    return frames, details


class _DisplayFrames(Sequence):
    """Frames as the detector should see them: bright text on dark ground."""

    def __init__(self, frames: np.ndarray, photometric: str) -> None:
        self._frames = frames
        self._invert = photometric == "MONOCHROME1"

    def __len__(self) -> int:
        return int(self._frames.shape[0])

    def __getitem__(self, index):  # type: ignore[override]
        frame = self._frames[index]
        if not self._invert:
            return frame
        # MONOCHROME1 shows its lowest value as white; inverting keeps text
        # contrast the same way round as on a MONOCHROME2 display.
        return frame.max() - frame


def _fill_value(frames: np.ndarray, photometric: str) -> int | float:
    # Black on the display: the lowest value for MONOCHROME2 and RGB (pydicom
    # already converted YCbCr to RGB), the highest for MONOCHROME1.
    if photometric == "MONOCHROME1":
        return frames.max().item()
    if photometric.startswith("MONOCHROME"):
        return frames.min().item()
    return 0


def _mask_frames(
    frames: np.ndarray,
    details: dict[str, Any],
    detector: TextDetector,
    residual_threshold: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    photometric = details["photometric"]
    total = frames.shape[0]
    counts_before = detector.counts
    # Every frame is checked in the residual pass, so the static search only
    # needs a handful of samples to find the overlays that stay in place.
    sample_every = max(1, total // 6)
    regions = find_static_text(
        _DisplayFrames(frames, photometric),
        sample_every=sample_every,
        detector=detector,
    )

    fill = _fill_value(frames, photometric)
    masked = np.empty_like(frames)
    for index in range(total):
        masked[index] = mask_text(frames[index], regions, index, fill=fill)

    extra: list[TextRegion] = []
    to_check = list(range(total))
    for _round in range(_RESIDUAL_ROUNDS + 1):
        hits = _residual_hits(
            masked, photometric, to_check, residual_threshold, detector
        )
        if not hits:
            break
        if _round == _RESIDUAL_ROUNDS:
            raise ResidualCheckFailed(
                f"DICOM file quarantined, nothing was released: text remained on "
                f"{len({hit.frame_index for hit in hits})} frame(s) after "
                f"{_RESIDUAL_ROUNDS + 1} rounds of masking"
            )
        new = [TextRegion(hit.box, hit.frame_index, hit.frame_index) for hit in hits]
        extra.extend(new)
        to_check = sorted({hit.frame_index for hit in hits})
        for index in to_check:
            masked[index] = mask_text(masked[index], new, index, fill=fill)

    masked_frames = {
        index
        for region in [*regions, *extra]
        for index in range(region.first_frame, region.last_frame + 1)
    }
    report = {
        "static_regions": len(regions),
        "frame_regions": len(extra),
        "frames_masked": len(masked_frames),
        "sample_every": sample_every,
        "residual_threshold": residual_threshold,
        "residual_frames_checked": total,
        "residual_hits": 0,
        # The detector is shared, so its counters are reported as differences.
        "detector": {
            name: value - counts_before.get(name, 0)
            for name, value in detector.counts.items()
        },
    }
    logger.debug(
        "masked %d static and %d single-frame text regions on %d of %d frames",
        len(regions),
        len(extra),
        len(masked_frames),
        total,
    )
    return masked, report


def _residual_hits(
    masked: np.ndarray,
    photometric: str,
    indices: list[int],
    threshold: float,
    detector: TextDetector,
) -> list:
    display = _DisplayFrames(masked[indices], photometric)
    hits = residual_text(display, threshold, detector=detector, passes=1)
    # residual_text numbers frames within the subset; map back to the file.
    return [
        type(hit)(frame_index=indices[hit.frame_index], box=hit.box, score=hit.score)
        for hit in hits
    ]


def _encode(ds: Dataset, masked: np.ndarray, details: dict[str, Any]) -> dict[str, Any]:
    syntax = details["syntax"]
    single = masked.shape[0] == 1 and not details["had_number_of_frames"]
    array = masked[0] if single else masked

    if not syntax.is_compressed:
        _set_native(ds, array, details)
        encoding = "native"
    elif syntax == RLELossless:
        _set_native(ds, array, details)
        ds.compress(RLELossless, array, generate_instance_uid=False)
        encoding = "rle-lossless"
    elif syntax == JPEGBaseline8Bit and masked.dtype == np.uint8:
        _set_jpeg_baseline(ds, masked, details)
        encoding = "jpeg-baseline-pillow"
    else:
        _set_native(ds, array, details)
        encoding = "decompressed"

    if details["had_number_of_frames"] and "NumberOfFrames" not in ds:
        # set_pixel_data drops Number of Frames for one frame; keep the input's.
        ds.NumberOfFrames = masked.shape[0]
    out_syntax = ds.file_meta.TransferSyntaxUID
    report = {
        "transfer_syntax_in": str(syntax),
        "transfer_syntax_out": str(out_syntax),
        "encoding": encoding,
    }
    if encoding == "decompressed":
        report["note"] = (
            f"no encoder for {syntax.name}; the pixel data is stored as "
            f"{out_syntax.name}"
        )
    if encoding == "jpeg-baseline-pillow":
        report["note"] = (
            "JPEG Baseline pixel data was decoded and encoded again with Pillow "
            f"at quality {_JPEG_QUALITY}, a second lossy generation"
        )
    return report


def _set_native(ds: Dataset, array: np.ndarray, details: dict[str, Any]) -> None:
    photometric = "RGB" if details["color"] else details["photometric"]
    if array.dtype.itemsize <= 2:
        ds.set_pixel_data(
            array, photometric, details["bits_stored"], generate_instance_uid=False
        )
        return
    # set_pixel_data accepts 8 and 16-bit arrays only; 32-bit data (RT Dose)
    # keeps its Image Pixel attributes and gets its values written directly.
    ds.PixelData = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
    ds.PhotometricInterpretation = photometric
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        from pydicom.uid import ExplicitVRLittleEndian

        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds["PixelData"].is_undefined_length = False


def _set_jpeg_baseline(
    ds: Dataset, masked: np.ndarray, details: dict[str, Any]
) -> None:
    from PIL import Image

    encoded = []
    for frame in masked:
        buffer = io.BytesIO()
        image = Image.fromarray(frame, mode="RGB" if details["color"] else "L")
        # subsampling=1 is 4:2:2, which YBR_FULL_422 declares for colour frames.
        image.save(buffer, format="JPEG", quality=_JPEG_QUALITY, subsampling=1)
        encoded.append(buffer.getvalue())

    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if details["color"]:
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
    ds.LossyImageCompression = "01"
    methods = ds.get("LossyImageCompressionMethod", None) or []
    methods = [methods] if isinstance(methods, str) else list(methods)
    if "ISO_10918_1" not in methods:
        methods.append("ISO_10918_1")
    ds.LossyImageCompressionMethod = methods
