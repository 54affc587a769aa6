"""De-identification of hospital video and DICOM: profiles, masking, reports.

A profile (``baseline``, ``education``, ``clinical-research``,
``new-tech-research``, ``ai-diagnosis``) lists the steps to run. Every run ends
with a residual check on the output; when it finds a face or identity text the
run raises :class:`~enclave.errors.ResidualCheckFailed` and publishes nothing.
"""

from __future__ import annotations

from typing import Any

from enclave.deid.result import DeidResult

__all__ = ["DeidResult", "deidentify_bytes", "deidentify_file", "derive"]


def deidentify_bytes(
    data: bytes, name: str, profile: str, **options: Any
) -> DeidResult:
    """De-identify a video or DICOM file in memory; see :mod:`enclave.deid.api`."""
    from enclave.deid.api import deidentify_bytes as _deidentify_bytes

    return _deidentify_bytes(data, name, profile, **options)


def deidentify_file(input, output, profile, report_path=None, **options):  # type: ignore[no-untyped-def]
    """De-identify one file outside the vault; see :mod:`enclave.deid.api`."""
    from enclave.deid.api import deidentify_file as _deidentify_file

    return _deidentify_file(input, output, profile, report_path, **options)


def derive(
    catalog, vault, audit, asset_ids, *, profile, dataset_name, actor, **options
):  # type: ignore[no-untyped-def]
    """Publish a dataset from vault assets; see :mod:`enclave.deid.derivation`."""
    from enclave.deid.derivation import derive as _derive

    return _derive(
        catalog,
        vault,
        audit,
        asset_ids,
        profile=profile,
        dataset_name=dataset_name,
        actor=actor,
        **options,
    )
