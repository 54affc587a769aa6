"""Appending to and verifying the hash-chained audit trail, on every database."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import delete, update

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


def test_append_scrubs_secrets(any_audit_log: AuditLog) -> None:
    any_audit_log.append(
        actor="alice",
        action="cell.execute",
        outcome="success",
        source="collector",
        detail={
            "code": "x = 1",
            "access_token": "abc",
            "Patient-ID": "12345",
            "nested": [{"password": "pw", "frames": 3}],
        },
    )

    (event,) = any_audit_log.events()
    assert event.detail == {
        "code": "x = 1",
        "access_token": "[scrubbed]",
        "Patient-ID": "[scrubbed]",
        "nested": [{"password": "[scrubbed]", "frames": 3}],
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"actor": ""}, "audit field 'actor' is missing"),
        ({"action": "Read"}, "invalid audit action 'Read'"),
        ({"outcome": "ok"}, "invalid audit outcome 'ok'"),
        ({"target": "x" * 256}, "'target' is 256 characters long; the maximum is 255"),
        ({"detail": {"at": dt.date(2027, 1, 1)}}, "not JSON-serialisable"),
        ({"detail": {"ratio": float("nan")}}, "not JSON-serialisable"),
    ],
)
def test_append_rejects_invalid_fields(
    any_audit_log: AuditLog, changes: dict, message: str
) -> None:
    fields = dict(actor="alice", action="data.read", outcome="success", source="broker")
    fields.update(changes)

    with pytest.raises(ValidationError, match=message):
        any_audit_log.append(**fields)
    assert any_audit_log.events() == []


def test_events_filters(any_audit_log: AuditLog) -> None:
    _append_many(any_audit_log, 4)
    any_audit_log.append(
        actor="user1", action="data.list", outcome="denied", source="broker"
    )

    assert [e.seq for e in any_audit_log.events(actor="user1")] == [2, 5]
    assert [e.seq for e in any_audit_log.events(action="data.list")] == [5]
    assert [e.seq for e in any_audit_log.events(outcome="denied")] == [5]
    assert [e.seq for e in any_audit_log.events(limit=2)] == [4, 5]
    assert [e.seq for e in any_audit_log.events(dataset="carphone-study")] == [
        1,
        2,
        3,
        4,
    ]
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert any_audit_log.events(since=future) == []


def test_events_rejects_bad_limit(any_audit_log: AuditLog) -> None:
    with pytest.raises(ValidationError, match="invalid limit 0"):
        any_audit_log.events(limit=0)


# Tampering: each edit below is what someone with write access to the
# database but without the audit key could do.


def _execute(catalog: Catalog, *statements) -> None:  # type: ignore[no-untyped-def]
    with catalog.engine.begin() as connection:
        for statement in statements:
            connection.execute(statement)


EVENTS = AuditEvent.__table__
HEAD = AuditHead.__table__


def test_verify_detects_edited_field(any_audit_log: AuditLog) -> None:
    _append_many(any_audit_log, 5)
    _execute(
        any_audit_log.catalog,
        update(EVENTS).where(EVENTS.c.seq == 3).values(actor="mallory"),
    )

    report = any_audit_log.verify()

    assert not report.ok
    assert report.first_bad_seq == 3
    assert report.count == 2
    assert "does not match its hash" in report.reason


def test_verify_detects_edited_detail(any_audit_log: AuditLog) -> None:
    _append_many(any_audit_log, 5)
    _execute(
        any_audit_log.catalog,
        update(EVENTS).where(EVENTS.c.seq == 4).values(detail={"path": "clips/9999"}),
    )

    report = any_audit_log.verify()

    assert not report.ok
    assert report.first_bad_seq == 4


def test_verify_detects_edited_time(any_audit_log: AuditLog) -> None:
    events = _append_many(any_audit_log, 3)
    earlier = events[1].at - dt.timedelta(microseconds=1)
    _execute(
        any_audit_log.catalog,
        update(EVENTS).where(EVENTS.c.seq == 2).values(at=earlier),
    )

    report = any_audit_log.verify()

    assert not report.ok
    assert report.first_bad_seq == 2


def test_verify_detects_deleted_record(any_audit_log: AuditLog) -> None:
    _append_many(any_audit_log, 5)
    _execute(any_audit_log.catalog, delete(EVENTS).where(EVENTS.c.seq == 3))

    report = any_audit_log.verify()

    assert not report.ok
    assert report.first_bad_seq == 3
    assert "record 3 is missing" in report.reason


def test_verify_detects_reordered_records(any_audit_log: AuditLog) -> None:
    _append_many(any_audit_log, 5)
    _execute(
        any_audit_log.catalog,
        update(EVENTS).where(EVENTS.c.seq == 2).values(seq=-2),
        update(EVENTS).where(EVENTS.c.seq == 3).values(seq=2),
        update(EVENTS).where(EVENTS.c.seq == -2).values(seq=3),
    )

    report = any_audit_log.verify()

    assert not report.ok
    assert report.first_bad_seq == 2


def test_verify_detects_inserted_record(any_audit_log: AuditLog) -> None:
    events = _append_many(any_audit_log, 5)
    # Move records 4 and 5 up by one and forge a record 4 that links to 3.
    _execute(
        any_audit_log.catalog,
        update(EVENTS).where(EVENTS.c.seq == 5).values(seq=6),
        update(EVENTS).where(EVENTS.c.seq == 4).values(seq=5),
        EVENTS.insert().values(
            seq=4,
            at=events[2].at,
            actor="mallory",
            action="data.read",
            outcome="success",
            source="broker",
            detail={},
            prev_hash=events[2].chain_hash,
            chain_hash="ab" * 32,
        ),
        update(HEAD).values(seq=6),
    )

    report = any_audit_log.verify()

    assert not report.ok
    assert report.first_bad_seq == 4
    assert report.count == 3


def test_verify_detects_record_forged_with_other_key(any_audit_log: AuditLog) -> None:
    _append_many(any_audit_log, 3)
    forger = AuditLog(any_audit_log.catalog, b"f" * 32)
    # The forger cannot tag the head, so only the record hash is checked here.
    _execute(any_audit_log.catalog, update(HEAD).values(chain_hash="0" * 64, seq=0))
    _execute(any_audit_log.catalog, delete(EVENTS))
    forger.append(actor="mallory", action="data.read", outcome="success", source="cli")

    report = any_audit_log.verify()

    assert not report.ok
    assert report.first_bad_seq == 1


def test_verify_detects_truncated_tail(any_audit_log: AuditLog) -> None:
    _append_many(any_audit_log, 5)
    _execute(any_audit_log.catalog, delete(EVENTS).where(EVENTS.c.seq >= 4))

    report = any_audit_log.verify()

    assert not report.ok
    assert report.first_bad_seq == 4
    assert "the head records 5 records but the chain has 3" in report.reason


def test_verify_detects_truncation_with_head_rewritten(any_audit_log: AuditLog) -> None:
    events = _append_many(any_audit_log, 5)
    _execute(
        any_audit_log.catalog,
        delete(EVENTS).where(EVENTS.c.seq >= 4),
        update(HEAD).values(seq=3, chain_hash=events[2].chain_hash),
    )

    report = any_audit_log.verify()

    assert not report.ok
    assert "the head does not match the last record" in report.reason


def test_verify_detects_appended_without_head(any_audit_log: AuditLog) -> None:
    _append_many(any_audit_log, 2)
    _execute(any_audit_log.catalog, update(HEAD).values(seq=1))

    report = any_audit_log.verify()

    assert not report.ok
    assert report.first_bad_seq == 2


def test_verify_detects_wiped_chain_with_stale_head(any_audit_log: AuditLog) -> None:
    _append_many(any_audit_log, 2)
    _execute(any_audit_log.catalog, delete(EVENTS))

    report = any_audit_log.verify()

    assert not report.ok
    assert report.first_bad_seq == 1


def test_verify_with_wrong_key_fails(any_audit_log: AuditLog) -> None:
    _append_many(any_audit_log, 2)

    report = AuditLog(any_audit_log.catalog, b"k" * 32).verify()

    assert not report.ok
    assert report.first_bad_seq == 1


def test_append_after_head_tampering_fails_closed(any_audit_log: AuditLog) -> None:
    _append_many(any_audit_log, 3)
    _execute(any_audit_log.catalog, update(HEAD).values(seq=2))

    with pytest.raises(AuditUnavailable, match="head does not match"):
        _append_many(any_audit_log, 1)
    assert [e.seq for e in any_audit_log.events()] == [1, 2, 3]


def test_append_without_head_row_fails_closed(any_audit_log: AuditLog) -> None:
    _execute(any_audit_log.catalog, delete(HEAD))

    with pytest.raises(AuditUnavailable, match="no head row"):
        _append_many(any_audit_log, 1)


def test_append_without_tables_fails_closed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    audit = AuditLog(Catalog(f"sqlite:///{tmp_path / 'empty.sqlite'}"), b"k" * 32)

    with pytest.raises(AuditUnavailable, match="'data.read' was not performed"):
        _append_many(audit, 1)
    with pytest.raises(AuditUnavailable, match="cannot be read"):
        audit.verify()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:1/enclave",
        "mysql://root@127.0.0.1:1/enclave",
    ],
)
def test_append_to_unreachable_server_fails_closed(url: str) -> None:
    audit = AuditLog(Catalog(url), b"k" * 32)

    with pytest.raises(AuditUnavailable):
        _append_many(audit, 1)


def test_append_in_session_rolls_back_together(any_catalog: Catalog) -> None:
    audit = AuditLog(any_catalog, b"k" * 32)

    with pytest.raises(RuntimeError):
        with any_catalog.session(immediate=True) as session:
            audit.append(
                actor="alice",
                action="data.read",
                outcome="success",
                source="broker",
                session=session,
            )
            raise RuntimeError("the change failed after the event was written")

    assert audit.events() == []
    assert audit.verify().ok
    assert _append_many(audit, 1)[0].seq == 1
