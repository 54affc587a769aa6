"""The identity rules of levels 4 and 5, checked against the user's hub login.

Level 4 and 5 data is read only by a user whose current hub login used a
second factor. Level 4 data identifies a natural person, so it is read only
by staff of the dataset's department, that is members of the provider group
``dept-<department>``.

The hub records each login in the catalog (:func:`record_hub_login`): the
``amr`` and ``acr`` claims of the ID token and the groups the provider gave.
A hub logout expires the record (:func:`expire_hub_login`).
The broker checks that record (:func:`check_identity_rules`). A researcher
cannot write the catalog, so the record cannot be forged from a notebook.
A record that is missing, expired, malformed or unreadable rejects the read.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from enclave.catalog.models import Dataset, HubLogin, utcnow
from enclave.errors import NotFound, PermissionDenied, ValidationError
from enclave.policy.levels import rules_for

if TYPE_CHECKING:
    from enclave.audit.log import AuditLog

__all__ = [
    "ACR_MFA",
    "DEPARTMENT_LEVELS",
    "MFA_METHOD",
    "check_identity_rules",
    "department_group",
    "expire_hub_login",
    "record_hub_login",
    "set_department",
    "used_second_factor",
]

log = logging.getLogger(__name__)

MFA_METHOD = "otp"
"""The ``amr`` value of a one-time code, the enclave's second factor."""
ACR_MFA = "urn:enclave:mfa"
"""The ``acr`` value the enclave's provider issues after a second factor."""
DEPARTMENT_LEVELS = frozenset({4})
"""Levels whose data is read only by staff of the dataset's department."""
DEPARTMENT_GROUP_PREFIX = "dept-"
DEPARTMENT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

_LOG_IN_AGAIN = "log in again with your second factor"


def department_group(department: str) -> str:
    """Return the provider group of a department's staff, ``dept-<department>``."""
    return f"{DEPARTMENT_GROUP_PREFIX}{department}"


def used_second_factor(amr: object, acr: object) -> bool:
    """Return whether a login's ``amr`` and ``acr`` claims show a second factor.

    Both claims must agree, so a record with only one of them, or with
    values of the wrong type, counts as a login without a second factor.
    """
    if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr):
        return False
    return MFA_METHOD in amr and acr == ACR_MFA


def record_hub_login(
    session: Session,
    username: str,
    *,
    amr: Iterable[str],
    acr: str | None,
    groups: Iterable[str],
    lifetime: dt.timedelta,
    now: dt.datetime | None = None,
) -> HubLogin:
    """Store ``username``'s latest hub login, replacing the one before.

    Parameters
    ----------
    session
        Open catalog session; the caller commits.
    username
        Hub user name.
    amr, acr
        The ID token's authentication methods and context class.
    groups
        The groups the provider gave at this login.
    lifetime
        How long the hub's login cookie is valid; the record expires with it.
    now
        Time of the login; the current time by default.
    """
    now = now or utcnow()
    login = session.get(HubLogin, username)
    if login is None:
        login = HubLogin(username=username)
        session.add(login)

    login.logged_in_at = now
    login.expires_at = now + lifetime
    login.amr = sorted(set(amr))
    login.acr = acr
    login.groups = sorted(set(groups))
    session.flush()
    return login


def expire_hub_login(
    session: Session, username: str, *, now: dt.datetime | None = None
) -> bool:
    """End ``username``'s hub login record at ``now``, as a hub logout does.

    From then on the record counts for nothing, so level 4 and 5 reads are
    rejected until the next login with a second factor. The caller commits.

    Returns
    -------
    bool
        True if a current record was expired, False if there was none or it
        had already expired.
    """
    now = now or utcnow()
    login = session.get(HubLogin, username)
    if login is None or login.expires_at <= now:
        return False
    login.expires_at = now
    session.flush()
    return True


def set_department(
    session: Session,
    audit: AuditLog,
    dataset_name: str,
    department: str | None,
    *,
    actor: str,
    source: str = "cli",
) -> Dataset:
    """Set or clear the department whose staff may read a level 4 dataset.

    The change and its ``dataset.update`` audit record commit together.

    Raises
    ------
    NotFound
        If there is no dataset ``dataset_name``.
    ValidationError
        If ``department`` is not a lowercase name such as ``ultrasound``.
    """
    if department is not None and not DEPARTMENT_RE.match(department):
        raise ValidationError(
            f"invalid department {department!r}; use lowercase letters, digits and "
            "dashes as in the provider group after 'dept-', such as 'ultrasound'"
        )
    dataset = session.scalars(
        select(Dataset).where(Dataset.name == dataset_name)
    ).one_or_none()
    if dataset is None:
        raise NotFound(f"dataset {dataset_name!r} not found")

    old = dataset.department
    dataset.department = department
    session.flush()
    audit.append(
        actor=actor,
        action="dataset.update",
        outcome="success",
        source=source,
        dataset=dataset.name,
        detail={"old": {"department": old}, "new": {"department": department}},
        session=session,
    )
    log.info(
        "department of dataset %s set to %s by %s", dataset.name, department, actor
    )
    return dataset


def check_identity_rules(
    session: Session, username: str, dataset: Dataset, now: dt.datetime | None = None
) -> None:
    """Check the second-factor and department rules of ``dataset``'s level.

    Levels whose rule sets ``requires_mfa`` need a current hub login with a
    second factor. Levels in :data:`DEPARTMENT_LEVELS` also need the login's
    groups to include ``dept-<department>`` of the dataset.

    Raises
    ------
    PermissionDenied
        If a rule is not met or cannot be checked. The message names the rule
        and what to do next.
    """
    rule = rules_for(session, dataset.level)
    needs_department = dataset.level in DEPARTMENT_LEVELS
    if not rule.requires_mfa and not needs_department:
        return

    login = _current_login(session, username, dataset, now or utcnow())
    if rule.requires_mfa and not used_second_factor(login.amr, login.acr):
        raise PermissionDenied(
            f"level {dataset.level} data such as dataset {dataset.name!r} may be "
            f"read only after a login with a second factor, and the current hub "
            f"login of {username!r} did not use one; {_LOG_IN_AGAIN}"
        )
    if needs_department:
        _check_department(login, username, dataset)


def _current_login(
    session: Session, username: str, dataset: Dataset, now: dt.datetime
) -> HubLogin:
    try:
        login = session.get(HubLogin, username)
    except SQLAlchemyError as exc:
        # Fail closed: a login that cannot be looked up counts as no login.
        log.error("looking up the hub login of %s failed: %s", username, exc)
        raise PermissionDenied(
            f"the hub login of {username!r} could not be looked up, so the login "
            f"rules of level {dataset.level} dataset {dataset.name!r} cannot be "
            f"checked; {_LOG_IN_AGAIN}, and if this persists ask the administrator "
            "to check the catalog"
        ) from exc
    if login is None:
        raise PermissionDenied(
            f"no hub login of {username!r} is on record, so the login rules of "
            f"level {dataset.level} dataset {dataset.name!r} cannot be checked; "
            f"{_LOG_IN_AGAIN}"
        )
    if login.expires_at <= now:
        raise PermissionDenied(
            f"the hub login of {username!r} expired at "
            f"{login.expires_at:%Y-%m-%d %H:%M} UTC, so the login rules of level "
            f"{dataset.level} dataset {dataset.name!r} cannot be checked; "
            f"{_LOG_IN_AGAIN}"
        )
    return login


def _check_department(login: HubLogin, username: str, dataset: Dataset) -> None:
    if not dataset.department:
        # Without a department no group can qualify, so the data stays closed.
        raise PermissionDenied(
            f"level {dataset.level} dataset {dataset.name!r} has no department, "
            "so no one may read it; ask a data steward to set its department"
        )

    group = department_group(dataset.department)
    groups = login.groups if isinstance(login.groups, list) else []
    if group not in groups:
        raise PermissionDenied(
            f"level {dataset.level} dataset {dataset.name!r} may be read only by "
            f"staff of department {dataset.department!r} (group {group!r}), and "
            f"the current hub login of {username!r} is not in that group"
        )
