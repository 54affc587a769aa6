"""Ingest: probe video and DICOM files, encrypt them into the vault, catalog them."""

from __future__ import annotations

from enclave.ingest.probe import probe, probe_bytes
from enclave.ingest.result import MAX_DIMENSION, MAX_PIXELS, ProbeResult
from enclave.ingest.store import (
    CONSENT_REQUIRED_FROM_LEVEL,
    check_consent,
    ingest_file,
    store_asset,
)

__all__ = [
    "CONSENT_REQUIRED_FROM_LEVEL",
    "MAX_DIMENSION",
    "MAX_PIXELS",
    "ProbeResult",
    "check_consent",
    "ingest_file",
    "probe",
    "probe_bytes",
    "store_asset",
]
