"""Helpers shared by the de-identification tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import Asset
from enclave.deid import derive
from enclave.ingest import ingest_file
from enclave.vault import Vault

if TYPE_CHECKING:
    from enclave.deid.derivation import Dataset


def ingest_and_derive(
    catalog: Catalog,
    vault: Vault,
    audit_log: AuditLog,
    path: Path,
    *,
    profile: str,
    dataset_name: str,
) -> tuple[Asset, Dataset]:
    """Ingest ``path`` as a level 2 diagnosis asset and derive one dataset from it.

    Return the source asset and the derived dataset.
    """
    source = ingest_file(
        catalog,
        vault,
        audit_log,
        path,
        category="diagnosis",
        level=2,
        actor="steward",
    )
    dataset = derive(
        catalog,
        vault,
        audit_log,
        [source.id],
        profile=profile,
        dataset_name=dataset_name,
        actor="steward",
    )
    return source, dataset
