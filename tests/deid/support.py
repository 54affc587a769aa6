"""Helpers shared by the de-identification tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import Asset
from enclave.deid import derive
from enclave.ingest import ingest_file
from enclave.policy.logins import ACR_MFA, record_hub_login
from enclave.vault import Vault

if TYPE_CHECKING:
    from enclave.deid.derivation import Dataset

LOGIN_LIFETIME = dt.timedelta(hours=8)


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


def login(
    catalog: Catalog,
    username: str,
    groups: list[str],
    *,
    mfa: bool = True,
    at: dt.datetime | None = None,
) -> None:
    """Record a hub login of ``username``, as the hub does after sign-in."""
    with catalog.session() as session:
        record_hub_login(
            session,
            username,
            amr=["pwd", "otp"] if mfa else ["pwd"],
            acr=ACR_MFA if mfa else "urn:enclave:pwd",
            groups=groups,
            lifetime=LOGIN_LIFETIME,
            now=at,
        )
