"""De-identify one file: video or DICOM, in memory or on disk outside the vault."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from enclave.deid.profiles import load_profile
from enclave.deid.report import build_report
from enclave.deid.result import DeidResult
from enclave.errors import ResidualCheckFailed, ValidationError

__all__ = ["deidentify_bytes", "deidentify_file", "is_dicom"]

log = logging.getLogger(__name__)

OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mp4"}


def is_dicom(data: bytes, name: str = "") -> bool:
    """Return whether ``data`` is a DICOM Part 10 file (``DICM`` after the preamble)."""
    return data[128:132] == b"DICM" or name.lower().endswith(".dcm")


def deidentify_bytes(
    data: bytes,
    name: str,
    profile: str,
    *,
    uid_map: dict[str, str] | None = None,
    pseudonym_key: bytes | None = None,
    **options: Any,
) -> DeidResult:
    """De-identify a video or DICOM file held in memory.

    Parameters
    ----------
    data
        The file's bytes.
    name
        The file name, used only to recognise DICOM files without a preamble;
        it is never copied into the output or the report.
    profile
        A profile name (``baseline``, ``education``, ``clinical-research``,
        ``new-tech-research``, ``ai-diagnosis``).
    uid_map
        DICOM only: original UID -> replacement UID, shared by the files of
        one dataset so that studies and series stay linked.
    pseudonym_key
        DICOM with ``ai-diagnosis`` only: the HMAC key of the pseudonyms, from
        :class:`~enclave.deid.pseudonyms.PseudonymStore`.
    **options
        Profile options such as ``keep_ranges=[(0.0, 5.0)]`` or
        ``audio_mode="mcadams"``; see :mod:`enclave.deid.profiles`.

    Returns
    -------
    DeidResult
        The de-identified file and its report.

    Raises
    ------
    ValidationError
        If the profile, an option or the input is invalid.
    ResidualCheckFailed
        If a face or text remains after masking; nothing is returned.
    DeidentificationError
        If a step cannot run.
    """
    options = _normalise_options(options)
    resolved = load_profile(profile, **options)
    if is_dicom(data, name):
        from enclave.deid.dicom import deidentify_dicom

        result = deidentify_dicom(
            data,
            profile,
            uid_map={} if uid_map is None else uid_map,
            pseudonym_key=pseudonym_key,
        )
        report = build_report(
            resolved, dict(result.report), data, result.data, media_type="dicom"
        )
        return DeidResult(result.data, report, "dicom", ".dcm")

    from enclave.deid.video import deidentify_video

    try:
        result = deidentify_video(data, resolved)
    except ResidualCheckFailed as exc:
        # The report of a failed run travels on the exception, so that
        # deidentify_file can still write it; it has no output digest.
        details = getattr(exc, "report", None) or {}
        exc.report = build_report(resolved, details, data, b"")  # type: ignore[attr-defined]
        exc.report.pop("output_sha256")  # type: ignore[attr-defined]
        raise
    report = build_report(resolved, result.report, data, result.data)
    return DeidResult(result.data, report, result.media_type, result.suffix)


def _normalise_options(options: dict[str, Any]) -> dict[str, Any]:
    # A None value means "not given" (argparse defaults, keyword pass-through),
    # so it leaves the profile's setting in place.
    return {key: value for key, value in options.items() if value is not None}


def deidentify_file(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    profile: str,
    report_path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> DeidResult:
    """De-identify the file ``input`` into ``output``.

    The result is written to a temporary file next to ``output`` and renamed
    only after the residual check passed, so a failed run leaves no
    ``output``. The report is written to ``report_path`` when given, also
    when the residual check fails, so the steward can see what remained.

    Raises
    ------
    ValidationError
        If ``input`` is missing or ``output`` has an unsupported suffix.
    ResidualCheckFailed
        If a face or text remains after masking; ``output`` is not written.
    """
    source = Path(input)
    target = Path(output)
    if not source.is_file():
        raise ValidationError(f"input file {str(source)!r} not found; check the path")
    if source.resolve() == target.resolve():
        raise ValidationError(
            "the output must differ from the input; pass a new file name"
        )
    data = source.read_bytes()
    if not is_dicom(data, source.name) and target.suffix.lower() not in OUTPUT_FORMATS:
        raise ValidationError(
            f"output suffix {target.suffix!r} is not supported for video; use .mp4"
        )

    try:
        result = deidentify_bytes(data, source.name, profile, **options)
    except ResidualCheckFailed as exc:
        failed_report = getattr(exc, "report", None)
        if report_path is not None and failed_report:
            _write_atomically(
                Path(report_path), json.dumps(failed_report, indent=2).encode() + b"\n"
            )
        raise

    _write_atomically(target, result.data)
    if report_path is not None:
        _write_atomically(
            Path(report_path), json.dumps(result.report, indent=2).encode() + b"\n"
        )
    log.info("de-identified one file with profile %s", profile)
    return result


def _write_atomically(target: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", dir=target.parent or "."
    )
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
