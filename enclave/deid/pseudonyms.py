"""Keyed pseudonyms, the encrypted mapping and two-person re-identification.

The ``ai-diagnosis`` profile replaces each source identifier by
HMAC-SHA256(pseudonym key, identifier). The pseudonym key and the mapping key
are random 32-byte keys wrapped by the vault's master key. Each mapping entry
is sealed with AES-256-GCM, with its pseudonym bound as associated data.

Reading an entry back is a workflow of separate steps stored in the catalog
(:class:`Reidentification`): a person with the requester role requests
it with a reason, a different person with the approver role approves or
denies it, and the requester reveals the entry once, before the approval
expires. Roles are groups of the person's current hub login, which must have
used a second factor. Every step, granted or rejected, is written to the audit
trail before anything is decrypted, and the identity itself never is.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from enclave.catalog.models import (
    HubLogin,
    ReidentificationRequest,
    ReidentificationStatus,
    utcnow,
)
from enclave.errors import (
    ConfigurationError,
    EnclaveError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from enclave.policy.logins import used_second_factor

if TYPE_CHECKING:
    from enclave.audit.log import AuditLog
    from enclave.catalog.db import Catalog

__all__ = [
    "PseudonymStore",
    "Reidentification",
    "ReidentificationPolicy",
    "effective_status",
]

log = logging.getLogger(__name__)

KEY_SIZE = 32
NONCE_SIZE = 12
PSEUDONYM_HEX = 32
_KEYS_FILE = "keys.json"


class PseudonymStore:
    """Pseudonym keys and encrypted mapping entries in one owner-only folder.

    Parameters
    ----------
    root
        The folder (created with mode 0700), e.g. ``<home>/pseudonyms``.
    keyring
        The :class:`~enclave.vault.KeyRing` that wraps the two keys.
    create
        Create the folder and new keys where they are missing. Without it a
        missing key file raises :class:`~enclave.errors.NotFound`.
    """

    def __init__(
        self, root: str | os.PathLike[str], keyring: Any, *, create: bool = True
    ) -> None:
        self.root = Path(root)
        if not create and not (self.root / _KEYS_FILE).exists():
            raise NotFound(
                f"no pseudonym keys in {self.root}; the mapping is kept there only "
                "after an ai-diagnosis derivation, so check ENCLAVE_HOME"
            )
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._pseudonym_key, self._mapping_key = self._load_keys(keyring)

    def _load_keys(self, keyring: Any) -> tuple[bytes, bytes]:
        path = self.root / _KEYS_FILE
        if not path.exists():
            keys = {}
            for name in ("pseudonym", "mapping"):
                key_id, wrapped = keyring.wrap(secrets.token_bytes(KEY_SIZE))
                keys[name] = {"master_key_id": key_id, "wrapped": wrapped.hex()}
            _write_private(path, json.dumps(keys).encode())
        keys = json.loads(path.read_text())
        return tuple(  # type: ignore[return-value]
            keyring.unwrap(keys[n]["master_key_id"], bytes.fromhex(keys[n]["wrapped"]))
            for n in ("pseudonym", "mapping")
        )

    @property
    def pseudonym_key(self) -> bytes:
        """The HMAC key of the pseudonyms, for DICOM de-identification."""
        return self._pseudonym_key

    def pseudonym(self, identifier: str, *, namespace: str) -> str:
        """Return the keyed pseudonym of ``identifier`` within ``namespace``."""
        message = f"{namespace}\x00{identifier}".encode()
        return hmac.new(self._pseudonym_key, message, hashlib.sha256).hexdigest()[
            :PSEUDONYM_HEX
        ]

    def record(self, pseudonym: str, entry: dict[str, Any]) -> None:
        """Store the sealed mapping ``pseudonym -> entry``, replacing an older one."""
        _check_pseudonym(pseudonym)
        nonce = secrets.token_bytes(NONCE_SIZE)
        sealed = AESGCM(self._mapping_key).encrypt(
            nonce, json.dumps(entry, sort_keys=True).encode(), pseudonym.encode()
        )
        _write_private(_entry_path(self.root, pseudonym), nonce + sealed)

    def _open(self, pseudonym: str) -> dict[str, Any]:
        # Only Reidentification.reveal calls this, after its audit record commits.
        _check_pseudonym(pseudonym)
        path = _entry_path(self.root, pseudonym)
        if not path.exists():
            raise NotFound(f"pseudonym {pseudonym} has no mapping entry")
        blob = path.read_bytes()
        try:
            plain = AESGCM(self._mapping_key).decrypt(
                blob[:NONCE_SIZE], blob[NONCE_SIZE:], pseudonym.encode()
            )
        except InvalidTag as exc:
            raise IntegrityError(
                "a pseudonym mapping entry failed its integrity check"
            ) from exc
        return json.loads(plain)


def _entry_path(root: Path, pseudonym: str) -> Path:
    return root / f"{pseudonym}.bin"


def _check_pseudonym(pseudonym: str) -> None:
    if len(pseudonym) != PSEUDONYM_HEX or any(
        c not in "0123456789abcdef" for c in pseudonym
    ):
        raise ValidationError(
            f"pseudonym {pseudonym!r} is invalid; expected {PSEUDONYM_HEX} "
            "lower-case hex digits"
        )


def _write_private(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


PENDING_HOURS_DEFAULT = 7 * 24
REVEAL_HOURS_DEFAULT = 24
# Ten years, so ``now + lifetime`` stays far below datetime's year 9999 limit.
MAX_HOURS = 10 * 365 * 24
MAX_REASON_CHARS = 2000
MAX_USERNAME_CHARS = 128
_REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_USERNAME_RE = re.compile(r"^[^\s\x00-\x1f\x7f]+$")
_LOG_IN_AGAIN = "log in to the hub again with your second factor"
_OPEN_STATUSES = (ReidentificationStatus.PENDING, ReidentificationStatus.APPROVED)


@dataclass(frozen=True)
class ReidentificationPolicy:
    """Provider groups of the two roles, and the time limit of each step."""

    requester_group: str = "reid-requesters"
    """Group whose members may request a re-identification and reveal it."""
    approver_group: str = "reid-approvers"
    """Group whose members may approve or deny another person's request."""
    pending_lifetime: dt.timedelta = dt.timedelta(hours=PENDING_HOURS_DEFAULT)
    """How long a request waits for a decision before it expires."""
    reveal_window: dt.timedelta = dt.timedelta(hours=REVEAL_HOURS_DEFAULT)
    """How long after its approval a request may be revealed."""

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None
    ) -> ReidentificationPolicy:
        """Read the policy from ``ENCLAVE_REID_*`` environment variables.

        ``ENCLAVE_REID_REQUESTER_GROUP`` (default ``reid-requesters``),
        ``ENCLAVE_REID_APPROVER_GROUP`` (default ``reid-approvers``),
        ``ENCLAVE_REID_PENDING_HOURS`` (default 168) and
        ``ENCLAVE_REID_REVEAL_HOURS`` (default 24).

        Raises
        ------
        ConfigurationError
            If a group name is empty or a number of hours is not positive or
            exceeds ``MAX_HOURS``.
        """
        env = os.environ if environ is None else environ
        return cls(
            requester_group=_group_setting(
                env, "ENCLAVE_REID_REQUESTER_GROUP", cls.requester_group
            ),
            approver_group=_group_setting(
                env, "ENCLAVE_REID_APPROVER_GROUP", cls.approver_group
            ),
            pending_lifetime=_hours_setting(
                env, "ENCLAVE_REID_PENDING_HOURS", PENDING_HOURS_DEFAULT
            ),
            reveal_window=_hours_setting(
                env, "ENCLAVE_REID_REVEAL_HOURS", REVEAL_HOURS_DEFAULT
            ),
        )


def _group_setting(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip()
    if not value or not _USERNAME_RE.match(value):
        raise ConfigurationError(
            f"{name}={env.get(name)!r} is not a group name; set it to the provider "
            f"group of the role, such as {default!r}, or unset it"
        )
    return value


def _hours_setting(env: Mapping[str, str], name: str, default: int) -> dt.timedelta:
    raw = env.get(name)
    if raw is None:
        return dt.timedelta(hours=default)
    try:
        hours = float(raw)
    except ValueError:
        hours = float("nan")
    if not 0 < hours <= MAX_HOURS:
        raise ConfigurationError(
            f"{name}={raw!r} is not a number of hours above 0 and at most "
            f"{MAX_HOURS}; set it to e.g. {default} or unset it"
        )
    return dt.timedelta(hours=hours)


def effective_status(
    request: ReidentificationRequest, now: dt.datetime
) -> ReidentificationStatus:
    """Return the request's status, with ``expired`` once its deadline has passed.

    A stored status is set to ``expired`` only at the next step on the request.
    """
    if request.status in _OPEN_STATUSES and request.expires_at <= now:
        return ReidentificationStatus.EXPIRED
    return request.status


class _Rejection(Exception):
    """A step rejected by a rule: audited as ``denied``, then ``error`` is raised."""

    def __init__(self, error: EnclaveError, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


def _denied(message: str, reason: str) -> _Rejection:
    return _Rejection(PermissionDenied(message), reason)


class Reidentification:
    """The two-person re-identification workflow over the catalog and audit trail.

    Each step runs in one catalog transaction that locks the request row
    (``SELECT ... FOR UPDATE`` on PostgreSQL and MariaDB, ``BEGIN IMMEDIATE``
    on SQLite), so concurrent steps on one request change its state once. The
    step's audit record is written in the same transaction, so a step whose
    record cannot be written changes nothing. A rejected step is audited as
    ``denied`` and then raised.

    Parameters
    ----------
    catalog, audit
        The catalog that stores the requests and the trail that records each step.
    pseudonyms_dir
        Folder of the :class:`PseudonymStore`, ``<home>/pseudonyms``.
    keyring
        The :class:`~enclave.vault.KeyRing` that unwraps the mapping key.
    policy
        Groups of the two roles and the time limits.
    source
        Component recorded in the audit events, such as ``cli``.
    operator
        OS user running the command, recorded next to the person named as
        acting, because a name given on the command line is only a claim.
    clock
        Returns the current UTC time; tests pass a fixed one.
    """

    def __init__(
        self,
        catalog: Catalog,
        audit: AuditLog,
        pseudonyms_dir: str | os.PathLike[str],
        keyring: Any,
        policy: ReidentificationPolicy | None = None,
        *,
        source: str = "cli",
        operator: str | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.catalog = catalog
        self.audit = audit
        self.pseudonyms_dir = Path(pseudonyms_dir)
        self.keyring = keyring
        self.policy = policy or ReidentificationPolicy()
        self.source = source
        self.operator = operator
        self._clock = clock

    def request(
        self, pseudonym: str, *, requester: str, reason: str
    ) -> ReidentificationRequest:
        """Record ``requester``'s request to read the entry of ``pseudonym``.

        Raises
        ------
        PermissionDenied
            If ``requester`` does not have the requester role at a current
            hub login with a second factor.
        ValidationError
            If the pseudonym is malformed or the reason is empty or too long.
        NotFound
            If the pseudonym has no mapping entry.
        AuditUnavailable
            If the step cannot be audited; nothing is stored.
        """
        _check_username(requester, "requester")
        detail: dict[str, Any] = {}
        rejection: _Rejection | None = None
        with self.catalog.session(immediate=True) as session:
            now = self._clock()
            try:
                _check_pseudonym(pseudonym)
            except ValidationError as exc:
                # The malformed value may be anything a person typed, such as
                # a patient's name, so it is left out of the trail.
                rejection = _Rejection(exc, "malformed pseudonym")
            if rejection is None:
                detail = {
                    "pseudonym": pseudonym,
                    "request_reason": reason[:MAX_REASON_CHARS],
                }
                try:
                    self._check_request(session, pseudonym, requester, reason, now)
                except _Rejection as exc:
                    rejection = exc
            if rejection is not None:
                self._record(
                    session,
                    "request",
                    requester,
                    None,
                    {**detail, "reason": rejection.reason},
                    outcome="denied",
                )
            else:
                record = ReidentificationRequest(
                    pseudonym=pseudonym,
                    requester=requester,
                    reason=reason.strip(),
                    status=ReidentificationStatus.PENDING,
                    created_at=now,
                    expires_at=now + self.policy.pending_lifetime,
                )
                session.add(record)
                session.flush()
                self._record(
                    session,
                    "request",
                    requester,
                    record.id,
                    {**detail, "expires_at": record.expires_at.isoformat()},
                )
        if rejection is not None:
            raise rejection.error
        log.info("re-identification request %s by %s", record.id, requester)
        return record

    def _check_request(
        self,
        session: Session,
        pseudonym: str,
        requester: str,
        reason: str,
        now: dt.datetime,
    ) -> None:
        self._check_role(session, requester, "requester", now)
        if not reason or not reason.strip():
            raise _Rejection(
                ValidationError(
                    "a re-identification request needs a reason; pass --reason "
                    "with why the identity is needed"
                ),
                "no reason given",
            )
        if len(reason) > MAX_REASON_CHARS:
            raise _Rejection(
                ValidationError(
                    f"the reason has {len(reason)} characters; shorten it to at "
                    f"most {MAX_REASON_CHARS}"
                ),
                "reason too long",
            )
        if not _entry_path(self.pseudonyms_dir, pseudonym).exists():
            raise _Rejection(
                NotFound(
                    f"pseudonym {pseudonym} has no mapping entry in "
                    f"{self.pseudonyms_dir}; copy the pseudonym from the "
                    "'identifiers.subject' field of an ai-diagnosis derivative"
                ),
                "pseudonym has no mapping entry",
            )

    def approve(self, request_id: str, *, approver: str) -> ReidentificationRequest:
        """Approve a pending request as a second person with the approver role.

        The approved request may be revealed until ``reveal_window`` has passed.

        Raises
        ------
        PermissionDenied
            If ``approver`` made the request, does not have the approver role,
            or the request is not pending or has expired.
        NotFound, ValidationError
            If the request id is unknown or malformed.
        AuditUnavailable
            If the step cannot be audited; nothing changes.
        """

        def decide(
            session: Session, request: ReidentificationRequest, now: dt.datetime
        ) -> dict[str, Any]:
            self._check_decision(session, request, approver, "approve", now)
            request.status = ReidentificationStatus.APPROVED
            request.approver = approver
            request.decided_at = now
            request.expires_at = now + self.policy.reveal_window
            return {"expires_at": request.expires_at.isoformat()}

        return self._step("approve", approver, request_id, decide)

    def deny(
        self, request_id: str, *, approver: str, reason: str
    ) -> ReidentificationRequest:
        """Deny a pending request as a second person with the approver role.

        Raises
        ------
        PermissionDenied, NotFound, ValidationError, AuditUnavailable
            As for :meth:`approve`; also ValidationError if the reason is empty.
        """

        def decide(
            session: Session, request: ReidentificationRequest, now: dt.datetime
        ) -> dict[str, Any]:
            self._check_decision(session, request, approver, "deny", now)
            if not reason or not reason.strip():
                raise _Rejection(
                    ValidationError(
                        f"denying request {request.id} needs a reason; pass --reason"
                    ),
                    "no reason given",
                )
            request.status = ReidentificationStatus.DENIED
            request.approver = approver
            request.decided_at = now
            request.decision_reason = reason.strip()[:MAX_REASON_CHARS]
            return {"reason": request.decision_reason}

        return self._step("deny", approver, request_id, decide)

    def withdraw(self, request_id: str, *, requester: str) -> ReidentificationRequest:
        """Withdraw a pending or approved request. Only its requester may do so.

        Raises
        ------
        PermissionDenied
            If ``requester`` did not make the request or it is already closed.
        NotFound, ValidationError, AuditUnavailable
            As for :meth:`approve`.
        """

        def close(
            session: Session, request: ReidentificationRequest, now: dt.datetime
        ) -> dict[str, Any]:
            self._check_requester(request, requester, "withdraw")
            self._check_open(request, "withdrawn", _OPEN_STATUSES)
            request.status = ReidentificationStatus.WITHDRAWN
            request.decided_at = request.decided_at or now
            return {}

        return self._step("withdraw", requester, request_id, close)

    def reveal(self, request_id: str, *, requester: str) -> dict[str, Any]:
        """Return the mapping entry of an approved request, once, to its requester.

        The request is marked revealed and the step audited in one committed
        transaction before the entry is decrypted, so a step that cannot be
        audited reveals nothing. If decryption then fails, the request stays
        used up and a ``failure`` record is added.

        Raises
        ------
        PermissionDenied
            If ``requester`` did not make the request or no longer has the
            role, or the request is not approved, was revealed, or has expired.
        NotFound, ValidationError
            If the request id is unknown or malformed, or the entry is gone.
        IntegrityError
            If the stored entry was altered.
        AuditUnavailable
            If the step cannot be audited; nothing is decrypted.
        """

        def use(
            session: Session, request: ReidentificationRequest, now: dt.datetime
        ) -> dict[str, Any]:
            self._check_requester(request, requester, "reveal")
            self._check_role(session, requester, "requester", now)
            self._check_open(request, "revealed", (ReidentificationStatus.APPROVED,))
            request.status = ReidentificationStatus.REVEALED
            request.revealed_at = now
            return {}

        request = self._step("reveal", requester, request_id, use)
        try:
            store = PseudonymStore(self.pseudonyms_dir, self.keyring, create=False)
            entry = store._open(request.pseudonym)
        except EnclaveError as exc:
            self._record_failure(request, requester, exc)
            raise
        log.info(
            "pseudonym %s re-identified by %s with approval of %s (request %s)",
            request.pseudonym,
            requester,
            request.approver,
            request.id,
        )
        return entry

    def list_requests(
        self, status: ReidentificationStatus | None = None
    ) -> list[ReidentificationRequest]:
        """Return the requests, newest first, optionally only those with ``status``.

        ``status`` is compared with :func:`effective_status`.
        """
        with self.catalog.session() as session:
            requests = list(
                session.scalars(
                    select(ReidentificationRequest).order_by(
                        ReidentificationRequest.created_at.desc()
                    )
                )
            )
        if status is None:
            return requests
        now = self._clock()
        return [r for r in requests if effective_status(r, now) == status]

    def _step(
        self,
        step: str,
        actor: str,
        request_id: str,
        change: Callable[
            [Session, ReidentificationRequest, dt.datetime], dict[str, Any]
        ],
    ) -> ReidentificationRequest:
        """Lock the request, apply ``change`` and audit it, or audit its rejection."""
        _check_username(actor, "user")
        rejection: _Rejection | None = None
        with self.catalog.session(immediate=True) as session:
            now = self._clock()
            request: ReidentificationRequest | None = None
            target: str | None = None
            detail: dict[str, Any] = {}
            try:
                request = self._load(session, request_id)
                target = request.id
                detail = {
                    "pseudonym": request.pseudonym,
                    "requester": request.requester,
                }
                if effective_status(request, now) != request.status:
                    # The deadline passed: record it, and reject below.
                    request.status = ReidentificationStatus.EXPIRED
                detail.update(change(session, request, now))
            except _Rejection as exc:
                rejection = exc
            if rejection is not None:
                self._record(
                    session,
                    step,
                    actor,
                    target,
                    {**detail, "reason": rejection.reason},
                    outcome="denied",
                )
            else:
                assert request is not None
                self._record(
                    session,
                    step,
                    actor,
                    target,
                    {**detail, "status": request.status.value},
                )
        if rejection is not None:
            raise rejection.error
        assert request is not None
        log.info("re-identification request %s: %s by %s", request.id, step, actor)
        return request

    def _load(self, session: Session, request_id: str) -> ReidentificationRequest:
        if not isinstance(request_id, str) or not _REQUEST_ID_RE.match(request_id):
            raise _Rejection(
                ValidationError(
                    f"request id {request_id!r} is invalid; expected 32 lower-case "
                    "hex digits as shown by 'enclave reid list'"
                ),
                "malformed request id",
            )
        # Reload what another transaction committed while this one waited.
        query = (
            select(ReidentificationRequest)
            .where(ReidentificationRequest.id == request_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        request = session.scalars(query).one_or_none()
        if request is None:
            raise _Rejection(
                NotFound(
                    f"re-identification request {request_id} not found; list the "
                    "requests with 'enclave reid list'"
                ),
                f"request {request_id} not found",
            )
        return request

    def _check_role(
        self, session: Session, username: str, role: str, now: dt.datetime
    ) -> None:
        """Reject unless ``username``'s current hub login used MFA and has the role."""
        if role == "approver":
            group = self.policy.approver_group
        else:
            group = self.policy.requester_group
        role_text = f"the re-identification {role} role (group {group!r})"
        login = session.get(HubLogin, username)
        if login is None:
            raise _denied(
                f"{username!r} has no hub login on record, so {role_text} cannot "
                f"be checked; {_LOG_IN_AGAIN}",
                "no hub login on record",
            )
        if login.expires_at <= now:
            raise _denied(
                f"the hub login of {username!r} expired at "
                f"{login.expires_at:%Y-%m-%d %H:%M} UTC, so {role_text} cannot be "
                f"checked; {_LOG_IN_AGAIN}",
                "hub login expired",
            )
        if not used_second_factor(login.amr, login.acr):
            raise _denied(
                f"the current hub login of {username!r} did not use a second "
                f"factor, which {role_text} requires; {_LOG_IN_AGAIN}",
                "hub login without a second factor",
            )
        groups = login.groups if isinstance(login.groups, list) else []
        if group not in groups:
            raise _denied(
                f"{username!r} does not have {role_text} at the current hub login; "
                "the institution's identity administrators add designated staff "
                "to that group, after which the person logs in to the hub again",
                f"not in group {group}",
            )

    def _check_decision(
        self,
        session: Session,
        request: ReidentificationRequest,
        approver: str,
        verb: str,
        now: dt.datetime,
    ) -> None:
        if _same_person(approver, request.requester):
            raise _denied(
                f"{approver!r} made request {request.id} and so cannot {verb} it; "
                "a second person with the approver role must decide",
                "the requester cannot decide their own request",
            )
        self._check_role(session, approver, "approver", now)
        target_status = "approved" if verb == "approve" else "denied"
        self._check_open(request, target_status, (ReidentificationStatus.PENDING,))

    def _check_requester(
        self, request: ReidentificationRequest, actor: str, verb: str
    ) -> None:
        if not _same_person(actor, request.requester):
            raise _denied(
                f"request {request.id} was made by {request.requester!r}, so "
                f"{actor!r} cannot {verb} it; only the requester may",
                "only the requester may " + verb,
            )

    def _check_open(
        self,
        request: ReidentificationRequest,
        target_status: str,
        allowed: tuple[ReidentificationStatus, ...],
    ) -> None:
        status = request.status
        if status in allowed:
            return
        if status == ReidentificationStatus.EXPIRED:
            hint = "its deadline passed; make a new request"
        elif status == ReidentificationStatus.PENDING:
            hint = "it has not been approved yet; ask a second person to approve it"
        elif status == ReidentificationStatus.REVEALED:
            hint = "it was already revealed, and a request reveals once"
        elif status == ReidentificationStatus.APPROVED:
            hint = f"it was already approved by {request.approver!r}"
        else:
            hint = "it is closed; make a new request if still needed"
        raise _denied(
            f"request {request.id} is {status.value} and cannot be "
            f"{target_status}: {hint}",
            f"request is {status.value}",
        )

    def _record(
        self,
        session: Session | None,
        step: str,
        actor: str,
        target: str | None,
        detail: dict[str, Any],
        *,
        outcome: str = "success",
    ) -> None:
        if self.operator is not None:
            detail = {**detail, "os_user": self.operator}
        self.audit.append(
            actor=actor,
            action=f"reidentification.{step}",
            outcome=outcome,
            source=self.source,
            target=target,
            detail=detail,
            session=session,
        )

    def _record_failure(
        self, request: ReidentificationRequest, actor: str, error: Exception
    ) -> None:
        log.error(
            "revealing request %s failed after it was audited: %s",
            request.id,
            type(error).__name__,
        )
        detail = {
            "pseudonym": request.pseudonym,
            "requester": request.requester,
            "reason": f"decryption failed: {type(error).__name__}",
        }
        # Written without a session, because the reveal step has committed already.
        self._record(None, "reveal", actor, request.id, detail, outcome="failure")


def _same_person(first: str, second: str) -> bool:
    return first.strip().casefold() == second.strip().casefold()


def _check_username(username: str, role: str) -> None:
    # A name that the audit trail cannot store cannot be audited, so it is
    # rejected before any step.
    if (
        not isinstance(username, str)
        or not 0 < len(username) <= MAX_USERNAME_CHARS
        or not _USERNAME_RE.match(username)
    ):
        raise ValidationError(
            f"{role} name {username!r} is invalid; pass the hub user name with --as "
            f"(1 to {MAX_USERNAME_CHARS} characters without spaces)"
        )
