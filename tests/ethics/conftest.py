"""Fixtures of the ethics tests: published datasets and a valid application."""

from __future__ import annotations

import datetime as dt

import pytest

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import Category, Dataset
from enclave.ethics.forms import Application

TODAY = dt.date.today()


def add_datasets(catalog: Catalog) -> None:
    """Publish ``ward-clips`` (level 3), ``teaching-clips`` (2), ``icu-level4`` (4)."""
    with catalog.session() as session:
        for name, level, category in (
            ("ward-clips", 3, Category.MONITORING),
            ("teaching-clips", 2, Category.TEACHING),
            ("icu-level4", 4, Category.MONITORING),
        ):
            session.add(
                Dataset(
                    name=name,
                    category=category,
                    level=level,
                    profile="baseline",
                    created_by="steward",
                )
            )


def make_application(**changes: object) -> Application:
    values: dict[str, object] = {
        "name": "gait-study",
        "title": "Gait of inpatients after hip surgery",
        "principal_investigator": "pi-wang",
        "use_scene": "research",
        "summary": "Measure walking speed from ward video.",
        "deid_profile": "clinical-research",
        "datasets": ("ward-clips",),
        "members": ("alice",),
        "starts_on": TODAY,
        "ends_on": TODAY + dt.timedelta(days=90),
        "ethics_ref": "EC-2026-041",
        "consent_basis": "written consent, form v3",
    }
    values.update(changes)
    return Application(**values)  # type: ignore[arg-type]


@pytest.fixture
def ethics_catalog(any_catalog: Catalog) -> Catalog:
    """A migrated catalog on each database, with three published datasets."""
    add_datasets(any_catalog)
    return any_catalog


@pytest.fixture
def ethics_audit(ethics_catalog: Catalog, any_audit_log: AuditLog) -> AuditLog:
    return any_audit_log
