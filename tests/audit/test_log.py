"""Appending to and verifying the hash-chained audit trail, on every database."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import delete, select, update

from enclave.audit import AuditLog
from enclave.audit.log import GENESIS_HASH
from enclave.catalog.db import Catalog
from enclave.catalog.models import AuditEvent, AuditHead
from enclave.errors import AuditUnavailable, ValidationError


def _append_many(audit: AuditLog, count: int) -> list[AuditEvent]:
    return [
        audit.append(
            actor=f"user{i}",
            action="data.read",
            outcome="success",
            source="broker",
            dataset="carphone-study",
            detail={"path": f"clips/{i:04d}", "frames": [0, 10]},
        )
        for i in range(count)
    ]


def test_append_links_records(any_audit_log: AuditLog) -> None:
    first, second = _append_many(any_audit_log, 2)

    assert first.seq == 1
    assert second.seq == 2
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.chain_hash


def test_append_stores_fields(any_audit_log: AuditLog) -> None:
    stored = any_audit_log.append(
        actor="steward",
        action="asset.ingest",
        outcome="success",
        source="cli",
        target="a" * 32,
        detail={"level": 4, "category": "diagnosis", "name": "检查"},
    )

    (event,) = any_audit_log.events()
    assert event.seq == stored.seq
    assert event.at == stored.at
    assert event.detail == {"level": 4, "category": "diagnosis", "name": "检查"}
    assert event.target == "a" * 32


def test_verify_accepts_intact_chain(any_audit_log: AuditLog) -> None:
    _append_many(any_audit_log, 5)

    report = any_audit_log.verify()

    assert report.ok, report
    assert report.count == 5
    assert report.head_seq == 5


def test_verify_accepts_empty_chain(any_audit_log: AuditLog) -> None:
    report = any_audit_log.verify()

    assert report.ok
    assert report.count == 0
