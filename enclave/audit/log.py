"""The append-only, hash-chained audit trail in the catalog database.

Every record carries ``chain_hash = HMAC-SHA256(key, prev_hash || canonical
JSON of the record)``, where the canonical JSON contains every field of the
record including ``seq`` and the time. The key is kept in a file outside the
database, so someone who can rewrite the database but not read the key cannot
edit, delete, reorder or forge a record without :meth:`AuditLog.verify`
noticing. The single :class:`~enclave.catalog.models.AuditHead` row records
how long the chain is, tagged with the same key, so that removing records
from the end is noticed as well.

Appends are serialised by a lock on the head row: ``SELECT ... FOR UPDATE``
on PostgreSQL and MariaDB and a ``BEGIN IMMEDIATE`` write transaction on
SQLite. Several threads and processes can therefore append at once and the
chain never forks. If the record cannot be written, :meth:`AuditLog.append`
raises :class:`~enclave.errors.AuditUnavailable` and the caller must not go
on with the operation it was about to record.

What the trail records
----------------------
``actor`` is the hub or OS user who acted, ``action`` one of
:data:`ACTIONS`, ``outcome`` one of :data:`OUTCOMES`, ``source`` the process
that recorded the event (``cli``, ``broker``, ``collector``, ``hub``),
``target`` the id of the asset or the thing acted on, ``project`` and
``dataset`` their names. :data:`DETAIL_SCHEMAS` lists the keys of ``detail``
for each action. :data:`NOT_CAPTURED` lists what is never recorded; values
under the keys in :data:`SCRUBBED_KEYS` are replaced by ``"[scrubbed]"``
before anything is stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from enclave.catalog.models import AuditEvent, AuditHead, utcnow
from enclave.errors import AuditUnavailable, ConfigurationError, ValidationError

if TYPE_CHECKING:
    from enclave.catalog.db import Catalog
    from enclave.config import Settings

__all__ = [
    "ACTIONS",
    "DETAIL_SCHEMAS",
    "GENESIS_HASH",
    "KEY_SIZE",
    "NOT_CAPTURED",
    "OUTCOMES",
    "SCRUBBED_KEYS",
    "AuditLog",
    "VerifyReport",
    "create_audit_key",
    "ensure_audit_head",
    "load_audit_key",
    "scrub",
]

log = logging.getLogger(__name__)

KEY_SIZE = 32
"""Length in bytes of the audit key (the HMAC-SHA256 key)."""

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first record, and the head's hash while the trail is empty."""

HEAD_ID = 1

OUTCOMES = ("success", "denied", "failure")
"""``success``: done; ``denied``: refused by a rule; ``failure``: an error."""

DETAIL_SCHEMAS: dict[str, dict[str, str]] = {
    "asset.ingest": {
        "asset_id": "id of the stored asset",
        "kind": "source or derivative",
        "name": "base name of the ingested file, without its folder",
        "category": "diagnosis, nursing, monitoring or teaching",
        "level": "level 1 to 5",
        "media_type": "video or dicom",
        "plaintext_size": "size of the stored file in bytes",
        "plaintext_sha256": "SHA-256 of the stored file, hex",
        "stored_size": "size of the ciphertext in bytes",
        "probe": "container, codec, size, frame rate and duration found by the probe",
        "consent_ref": "consent reference, or None",
        "ethics_ref": "ethics approval reference, or None",
        "source_id": "id of the source asset of a derivative, or None",
        "profile": "de-identification profile of a derivative, or None",
    },
    "asset.destroy": {
        "blob_id": "id of the deleted ciphertext",
    },
    "asset.reclassify": {
        "old": "previous {'category': ..., 'level': ...}",
        "new": "new {'category': ..., 'level': ...}",
    },
    "dataset.derive": {
        "profile": "de-identification profile",
        "sources": "ids of the source assets",
        "items": "number of derivatives in the dataset",
        "derivatives": "ids of the derivative assets",
        "projects": "on denial: the projects that make the actor ineligible",
    },
    "dataset.update": {
        "old": "previous values of the changed fields, such as the department",
        "new": "new values of the changed fields",
    },
    "project.create": {
        "title": "project title",
        "pi": "principal investigator",
        "members": "user names of the other members",
        "datasets": "names of the requested datasets",
        "starts_on": "ISO date",
        "ends_on": "ISO date",
    },
    "project.submit": {"status": "status after the change"},
    "project.approve": {
        "status": "status after the change",
        "approvals": "number of approvals recorded so far",
        "required": "number of approvals the project's levels require",
    },
    "project.reject": {"status": "status after the change"},
    "project.terminate": {"status": "status after the change"},
    "data.list": {
        "datasets": "number of datasets listed",
        "items": "number of items of the dataset described",
    },
    "data.read": {
        "path": "item path inside the dataset, e.g. clips/0001",
        "frames": "[start, stop) of the frames that were sent",
    },
    "cell.execute": {
        "kernel_id": "kernel that ran the cell",
        "code": "the cell source",
        "code_sha256": "SHA-256 of the cell source, hex",
        "client_at": "time the researcher's server reported",
        "pid": "process id of the reporting server",
    },
    "level.update": {
        "old": "previous values of the changed fields",
        "new": "new values of the changed fields",
    },
}
"""Keys of ``detail`` for each action.

Every ``denied`` or ``failure`` record and every decision that needs one
also carries ``reason``, a short text. Keys not listed here are stored as
given, after scrubbing.
"""

ACTIONS = tuple(DETAIL_SCHEMAS)
"""The actions the enclave records; other ``noun.verb`` names are accepted too."""

NOT_CAPTURED = (
    "passwords, OAuth and API tokens, cookies and session secrets",
    "key material: master keys, data keys (wrapped or not), the audit key",
    "patient identifiers as fields: names, medical record numbers, national id "
    "numbers, dates of birth, addresses, phone numbers",
    "video frames, images and the contents of files",
)
"""Kinds of data the audit trail does not record.

Fields named in :data:`SCRUBBED_KEYS` are scrubbed here, whichever component
writes. Frames and file contents are never passed to :meth:`AuditLog.append`.
"""
# NOTE: free text is stored as given: file names, reasons, cell sources. A
# patient's name typed into one of them reaches the trail.

SCRUBBED_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "cookie",
        "authorization",
        "api_key",
        "private_key",
        "master_key",
        "data_key",
        "wrapped_key",
        "audit_key",
        "patient_id",
        "patient_name",
        "patient_birth_date",
        "birth_date",
        "date_of_birth",
        "medical_record_number",
        "mrn",
        "national_id",
        "id_number",
        "phone",
        "address",
    }
)
"""``detail`` keys whose values are never stored.

A key matches when, lower-cased and with ``-`` read as ``_``, it equals an
entry or ends with ``_`` and an entry (``access_token``, ``user_password``).
"""

SCRUBBED_VALUE = "[scrubbed]"

_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_FIELD_LIMITS = {
    "actor": 128,
    "action": 64,
    "outcome": 16,
    "source": 64,
    "target": 255,
    "project": 128,
    "dataset": 128,
}
_HEAD_TAG_PREFIX = b"enclave-audit-head\x00"
_EVENTS = cast(Table, AuditEvent.__table__)
_HEAD = cast(Table, AuditHead.__table__)


def _is_scrubbed(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return name in SCRUBBED_KEYS or any(
        name.endswith("_" + entry) for entry in SCRUBBED_KEYS
    )


def scrub(value: Any) -> Any:
    """Return a copy of ``value`` with the values of :data:`SCRUBBED_KEYS` replaced.

    Dictionaries and lists are scrubbed recursively; other values are returned
    as they are.
    """
    if isinstance(value, Mapping):
        return {
            str(key): SCRUBBED_VALUE if _is_scrubbed(str(key)) else scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    return value


def _canonical_json(value: Any) -> bytes:
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


def _format_time(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _record_fields(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": _format_time(event.at),
        "actor": event.actor,
        "action": event.action,
        "outcome": event.outcome,
        "target": event.target,
        "project": event.project,
        "dataset": event.dataset,
        "source": event.source,
        "detail": event.detail,
    }


def _chain_hash(key: bytes, prev_hash: str, event: AuditEvent) -> str:
    message = prev_hash.encode("ascii") + _canonical_json(_record_fields(event))
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _head_tag(key: bytes, seq: int, tip_hash: str) -> str:
    message = _HEAD_TAG_PREFIX + f"{seq}:{tip_hash}".encode("ascii")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class VerifyReport:
    """Result of checking the audit chain."""

    ok: bool
    """True when every record and the head check out."""
    count: int
    """Number of records that checked out before the first bad one."""
    first_bad_seq: int | None = None
    """Sequence number of the first record that failed, or None."""
    reason: str | None = None
    """Description of the failure, or None."""
    head_seq: int | None = None
    """Chain length that the head row records."""

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain ok: {self.count} records"
        return (
            f"audit chain broken at seq {self.first_bad_seq}: {self.reason} "
            f"({self.count} records checked out before it)"
        )


class AuditLog:
    """Append to and verify the hash-chained audit trail.

    Parameters
    ----------
    catalog
        The catalog whose ``audit_events`` and ``audit_head`` tables hold the
        trail; :meth:`Catalog.upgrade` must have run.
    key
        The audit key, :data:`KEY_SIZE` random bytes from
        :func:`load_audit_key`.

    Examples
    --------
    >>> audit = AuditLog(catalog, load_audit_key(settings.audit_key_path))
    >>> event = audit.append(
    ...     actor="alice", action="data.list", outcome="success", source="broker"
    ... )
    >>> audit.verify().ok
    True
    """

    def __init__(self, catalog: Catalog, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < KEY_SIZE:
            raise ConfigurationError(
                f"the audit key must be at least {KEY_SIZE} bytes; "
                "create one with create_audit_key() or 'enclave init'"
            )
        self.catalog = catalog
        self._key = key

    def __repr__(self) -> str:
        return f"AuditLog({self.catalog!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditLog:
        """Open the trail of the installation described by ``settings``."""
        from enclave.catalog.db import Catalog

        return cls(Catalog(settings.db_url), load_audit_key(settings.audit_key_path))

    def append(
        self,
        *,
        actor: str,
        action: str,
        outcome: str,
        source: str,
        target: str | None = None,
        project: str | None = None,
        dataset: str | None = None,
        detail: Mapping[str, Any] | None = None,
        session: Session | None = None,
    ) -> AuditEvent:
        """Append one record to the chain and commit it.

        Parameters
        ----------
        actor, action, outcome, source, target, project, dataset
            Fields of the record; see the module documentation.
        detail
            JSON-serialisable mapping; keys listed in :data:`SCRUBBED_KEYS`
            are scrubbed first.
        session
            When given, the record is written inside this session's
            transaction, so it commits or rolls back together with the change
            it records. On SQLite open that session with
            ``catalog.session(immediate=True)``.

        Returns
        -------
        AuditEvent
            The stored record, detached from any session.

        Raises
        ------
        ValidationError
            If a field is missing, too long or not JSON-serialisable.
        AuditUnavailable
            If the record cannot be written; nothing was appended.
        """
        event = AuditEvent(
            actor=actor,
            action=action,
            outcome=outcome,
            source=source,
            target=target,
            project=project,
            dataset=dataset,
            detail=scrub(dict(detail or {})),
        )
        _validate(event)

        if session is not None:
            session.flush()
        try:
            if session is not None:
                self._append_on(session.connection(), event)
            else:
                with self._write_connection() as connection:
                    self._append_on(connection, event)
        except SQLAlchemyError as exc:
            log.error(
                "cannot write audit event %s by %s: %s",
                action,
                actor,
                type(exc).__name__,
            )
            raise AuditUnavailable(
                f"the audit trail cannot be written, so {action!r} was not "
                "performed; check that the catalog database is reachable"
            ) from exc

        log.debug("audit seq %d: %s %s %s", event.seq, actor, action, outcome)
        return event

    @contextmanager
    def _write_connection(self) -> Iterator[Connection]:
        with self.catalog.engine.connect() as connection:
            connection = connection.execution_options(sqlite_begin="IMMEDIATE")
            with connection.begin():
                yield connection

    def _append_on(self, connection: Connection, event: AuditEvent) -> None:
        head_table = _HEAD
        events_table = _EVENTS
        if connection.dialect.name == "sqlite":
            # A write takes SQLite's database lock at once, also inside a
            # deferred transaction, so no other writer can interleave.
            connection.execute(
                update(head_table)
                .where(head_table.c.id == HEAD_ID)
                .values(seq=head_table.c.seq)
            )
        head = connection.execute(
            select(head_table.c.seq, head_table.c.chain_hash)
            .where(head_table.c.id == HEAD_ID)
            .with_for_update()
        ).one_or_none()
        if head is None:
            raise AuditUnavailable(
                "the audit trail has no head row; run 'enclave init' to create it"
            )

        prev_hash = self._tip_hash(connection, head.seq, head.chain_hash)
        event.seq = head.seq + 1
        event.at = utcnow()
        event.prev_hash = prev_hash
        event.chain_hash = _chain_hash(self._key, prev_hash, event)

        connection.execute(
            events_table.insert().values(
                seq=event.seq,
                at=event.at,
                actor=event.actor,
                action=event.action,
                outcome=event.outcome,
                target=event.target,
                project=event.project,
                dataset=event.dataset,
                source=event.source,
                detail=event.detail,
                prev_hash=event.prev_hash,
                chain_hash=event.chain_hash,
            )
        )
        connection.execute(
            update(head_table)
            .where(head_table.c.id == HEAD_ID)
            .values(
                seq=event.seq,
                chain_hash=_head_tag(self._key, event.seq, event.chain_hash),
            )
        )

    def _tip_hash(self, connection: Connection, head_seq: int, head_hash: str) -> str:
        # Refuse to extend a chain whose head was altered: appending would
        # re-tag the head and hide the damage from verify().
        if head_seq == 0 and head_hash == GENESIS_HASH:
            return GENESIS_HASH
        events_table = _EVENTS
        tip = connection.execute(
            select(events_table.c.chain_hash).where(events_table.c.seq == head_seq)
        ).scalar_one_or_none()
        if tip is None or not hmac.compare_digest(
            head_hash, _head_tag(self._key, head_seq, tip)
        ):
            log.error("audit head at seq %d does not match the chain", head_seq)
            raise AuditUnavailable(
                "the audit chain's head does not match its records; run "
                "'enclave audit verify' and restore the audit trail"
            )
        return tip

    def verify(self, *, batch_size: int = 1000) -> VerifyReport:
        """Check every record's hash, the links between them and the head.

        Detects an edited field, a deleted, reordered or inserted record and
        records removed from the end of the chain.

        Raises
        ------
        AuditUnavailable
            If the trail cannot be read.
        """
        try:
            with self.catalog.engine.connect() as connection:
                if connection.dialect.name != "sqlite":
                    # One snapshot, so appends during the check are not seen.
                    connection = connection.execution_options(
                        isolation_level="REPEATABLE READ"
                    )
                with connection.begin():
                    return self._verify_on(connection, batch_size)
        except SQLAlchemyError as exc:
            raise AuditUnavailable(
                "the audit trail cannot be read; check that the catalog database "
                "is reachable"
            ) from exc

    def _verify_on(self, connection: Connection, batch_size: int) -> VerifyReport:
        head = connection.execute(
            select(AuditHead.seq, AuditHead.chain_hash).where(AuditHead.id == HEAD_ID)
        ).one_or_none()
        if head is None:
            return VerifyReport(False, 0, 1, "the head row is missing")

        count = 0
        prev_hash = GENESIS_HASH
        for row in _iter_events(connection, batch_size):
            expected_seq = count + 1
            report = self._check_record(row, expected_seq, prev_hash, count, head.seq)
            if report is not None:
                return report
            prev_hash = row.chain_hash
            count += 1

        if head.seq != count:
            return VerifyReport(
                False,
                count,
                min(head.seq, count) + 1,
                f"the head records {head.seq} records but the chain has {count}; "
                "records were removed from or added to the end",
                head.seq,
            )
        # NOTE: deleting every record and resetting the head to the genesis
        # hash leaves a valid empty chain. Only a copy of the head kept
        # outside the database, such as a backup, shows such a wipe.
        expected_head = (
            GENESIS_HASH if count == 0 else _head_tag(self._key, count, prev_hash)
        )
        if not hmac.compare_digest(head.chain_hash, expected_head):
            return VerifyReport(
                False,
                count,
                count,
                "the head does not match the last record; the head row was edited "
                "or the end of the chain was replaced",
                head.seq,
            )
        return VerifyReport(True, count, None, None, head.seq)

    def _check_record(
        self,
        row: AuditEvent,
        expected_seq: int,
        prev_hash: str,
        count: int,
        head_seq: int,
    ) -> VerifyReport | None:
        if row.seq != expected_seq:
            return VerifyReport(
                False,
                count,
                expected_seq,
                f"record {expected_seq} is missing (the next record is {row.seq})",
                head_seq,
            )
        if row.prev_hash != prev_hash:
            return VerifyReport(
                False,
                count,
                row.seq,
                f"record {row.seq} does not link to record {row.seq - 1}; "
                "records were deleted, inserted or reordered",
                head_seq,
            )
        try:
            expected_hash = _chain_hash(self._key, prev_hash, row)
        except (TypeError, ValueError):
            expected_hash = ""
        if not hmac.compare_digest(row.chain_hash, expected_hash):
            return VerifyReport(
                False,
                count,
                row.seq,
                f"record {row.seq} does not match its hash; a field was edited or "
                "the record was forged",
                head_seq,
            )
        return None

    def events(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        project: str | None = None,
        dataset: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Return the records that match every given filter, oldest first.

        Parameters
        ----------
        actor, action, outcome, project, dataset
            Exact values to match.
        since
            Only records at or after this timezone-aware time.
        limit
            Only the newest ``limit`` records that match.

        Raises
        ------
        AuditUnavailable
            If the trail cannot be read.
        """
        if limit is not None and limit < 1:
            raise ValidationError(f"invalid limit {limit!r}; pass a positive number")
        query = select(AuditEvent).order_by(AuditEvent.seq.desc())
        for column, value in (
            (AuditEvent.actor, actor),
            (AuditEvent.action, action),
            (AuditEvent.outcome, outcome),
            (AuditEvent.project, project),
            (AuditEvent.dataset, dataset),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(AuditEvent.at >= since)
        if limit is not None:
            query = query.limit(limit)

        try:
            with self.catalog.session() as session:
                found = list(session.scalars(query))
        except SQLAlchemyError as exc:
            raise AuditUnavailable(
                "the audit trail cannot be read; check that the catalog database "
                "is reachable"
            ) from exc
        found.reverse()
        return found


def _iter_events(connection: Connection, batch_size: int) -> Iterator[Any]:
    table = _EVENTS
    last_seq = 0
    while True:
        rows = connection.execute(
            select(table)
            .where(table.c.seq > last_seq)
            .order_by(table.c.seq)
            .limit(batch_size)
        ).all()
        if not rows:
            return
        yield from rows
        last_seq = rows[-1].seq


def _validate(event: AuditEvent) -> None:
    for name in ("actor", "action", "outcome", "source"):
        value = getattr(event, name)
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(
                f"audit field {name!r} is missing; pass a non-empty string"
            )
    for name, limit in _FIELD_LIMITS.items():
        value = getattr(event, name)
        if value is not None and len(value) > limit:
            raise ValidationError(
                f"audit field {name!r} is {len(value)} characters long; the "
                f"maximum is {limit}"
            )
    if not _ACTION_RE.match(event.action):
        raise ValidationError(
            f"invalid audit action {event.action!r}; use a dotted lower-case name "
            f"such as {', '.join(ACTIONS[:3])}"
        )
    if event.outcome not in OUTCOMES:
        raise ValidationError(
            f"invalid audit outcome {event.outcome!r}; use one of {', '.join(OUTCOMES)}"
        )
    try:
        _canonical_json(event.detail)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"audit detail of {event.action!r} is not JSON-serialisable ({exc}); "
            "pass strings, numbers, booleans, None, lists and dicts"
        ) from exc


def ensure_audit_head(session: Session) -> bool:
    """Create the audit chain's head row if it is missing; return True if created."""
    if session.get(AuditHead, HEAD_ID) is not None:
        return False
    session.add(AuditHead(id=HEAD_ID, seq=0, chain_hash=GENESIS_HASH))
    session.flush()
    return True


def create_audit_key(path: str | os.PathLike[str]) -> Path:
    """Write a new random audit key to ``path`` with mode 0600.

    Raises
    ------
    ConfigurationError
        If ``path`` already exists (a key is never overwritten, because the
        existing trail can only be verified with it) or cannot be written.
    """
    path = Path(path)
    key = os.urandom(KEY_SIZE)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise ConfigurationError(
            f"audit key {path} already exists; it is never overwritten because "
            "the audit trail can only be verified with the key that wrote it"
        ) from exc
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the audit key {path}: {exc.strerror}"
        ) from exc
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("created audit key %s", path)
    return path


def load_audit_key(path: str | os.PathLike[str]) -> bytes:
    """Read the audit key from ``path``.

    Raises
    ------
    ConfigurationError
        If the file is missing, unreadable, accessible by group or others, or
        not :data:`KEY_SIZE` bytes long.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"audit key {path} not found; run 'enclave init' to create it"
        ) from exc
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the audit key {path}: {exc.strerror}; run as its owner"
        ) from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_IMODE(mode) & 0o077:
            raise ConfigurationError(
                f"audit key {path} has mode {stat.S_IMODE(mode):04o}, which lets "
                f"group or others access it; run 'chmod 600 {path}'"
            )
        key = os.read(fd, KEY_SIZE + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_SIZE:
        raise ConfigurationError(
            f"audit key {path} is {len(key)} bytes long; expected {KEY_SIZE}"
        )
    return key
