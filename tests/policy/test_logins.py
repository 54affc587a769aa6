"""The login rules of levels 4 and 5, checked against recorded hub logins."""

from __future__ import annotations

import datetime as dt

import pytest

from enclave.audit import AuditLog
from enclave.catalog.db import Catalog
from enclave.catalog.models import Category, Dataset, HubLogin, utcnow
from enclave.cli import main
from enclave.errors import PermissionDenied
from enclave.policy.logins import (
    ACR_MFA,
    check_identity_rules,
    expire_hub_login,
    record_hub_login,
    used_second_factor,
)

HOURS_8 = dt.timedelta(hours=8)
MFA = {"amr": ["pwd", "otp"], "acr": ACR_MFA}
PASSWORD = {"amr": ["pwd"], "acr": "urn:enclave:pwd"}


def _dataset(level: int, department: str | None = "ultrasound") -> Dataset:
    return Dataset(
        name=f"level-{level}",
        category=Category.DIAGNOSIS,
        level=level,
        profile="baseline",
        department=department,
        created_by="erin",
    )


def _check(catalog: Catalog, dataset: Dataset, user: str = "uma") -> None:
    with catalog.session() as session:
        session.add(dataset)
        session.flush()
        check_identity_rules(session, user, dataset)


def _login(catalog: Catalog, groups: list[str], **claims: object) -> None:
    with catalog.session() as session:
        record_hub_login(session, "uma", groups=groups, lifetime=HOURS_8, **claims)


@pytest.mark.parametrize(
    ("amr", "acr", "expected"),
    [
        (["pwd", "otp"], ACR_MFA, True),
        (["otp", "pwd"], ACR_MFA, True),
        (["pwd"], "urn:enclave:pwd", False),
        (["pwd"], ACR_MFA, False),
        (["pwd", "otp"], "urn:enclave:pwd", False),
        (["pwd", "otp"], None, False),
        ("pwd otp", ACR_MFA, False),
        (None, ACR_MFA, False),
        ([1, "otp"], ACR_MFA, False),
    ],
)
def test_second_factor_needs_both_claims(
    amr: object, acr: object, expected: bool
) -> None:
    assert used_second_factor(amr, acr) is expected


def test_levels_1_to_3_need_no_login(catalog: Catalog) -> None:
    for level in (1, 2, 3):
        _check(catalog, _dataset(level, department=None))


def test_level5_rejects_password_login(catalog: Catalog) -> None:
    _login(catalog, ["researchers"], **PASSWORD)

    with pytest.raises(PermissionDenied, match="log in again with your second"):
        _check(catalog, _dataset(5, department=None))


def test_level5_needs_no_department(catalog: Catalog) -> None:
    _login(catalog, ["researchers"], **MFA)

    _check(catalog, _dataset(5, department=None))


def test_level4_needs_department_group(catalog: Catalog) -> None:
    _login(catalog, ["researchers", "dept-cardiology"], **MFA)

    with pytest.raises(PermissionDenied, match="'dept-ultrasound'"):
        _check(catalog, _dataset(4))


def test_level4_allows_department_staff(catalog: Catalog) -> None:
    _login(catalog, ["researchers", "dept-ultrasound"], **MFA)

    _check(catalog, _dataset(4))


def test_level4_without_department_is_closed(catalog: Catalog) -> None:
    _login(catalog, ["researchers", "dept-ultrasound"], **MFA)

    with pytest.raises(PermissionDenied, match="has no department"):
        _check(catalog, _dataset(4, department=None))


def test_missing_login_is_rejected(catalog: Catalog) -> None:
    with pytest.raises(PermissionDenied, match="no hub login of 'uma' is on record"):
        _check(catalog, _dataset(4))


def test_expired_login_is_rejected(catalog: Catalog) -> None:
    _login(catalog, ["dept-ultrasound"], **MFA)
    with catalog.session() as session:
        session.get(HubLogin, "uma").expires_at = utcnow() - dt.timedelta(seconds=1)

    with pytest.raises(PermissionDenied, match="expired at"):
        _check(catalog, _dataset(4))


def test_expired_record_rejects_mfa_login(catalog: Catalog) -> None:
    _login(catalog, ["dept-ultrasound"], **MFA)
    _check(catalog, _dataset(5))

    with catalog.session() as session:
        first = expire_hub_login(session, "uma")
    with catalog.session() as session:
        again = expire_hub_login(session, "uma")
        unknown = expire_hub_login(session, "nobody")

    assert first is True
    assert again is False
    assert unknown is False
    later = _dataset(5)
    later.name = "level-5-later"
    with pytest.raises(PermissionDenied, match="expired at"):
        _check(catalog, later)


def test_later_login_replaces_earlier(catalog: Catalog) -> None:
    _login(catalog, ["dept-ultrasound"], **MFA)
    _login(catalog, ["dept-ultrasound"], **PASSWORD)

    with pytest.raises(PermissionDenied, match="did not use one"):
        _check(catalog, _dataset(4))
    with catalog.session() as session:
        login = session.get(HubLogin, "uma")
        assert login.amr == ["pwd"]
        assert login.expires_at - login.logged_in_at == HOURS_8


def test_malformed_groups_are_no_groups(catalog: Catalog) -> None:
    _login(catalog, [], **MFA)
    with catalog.session() as session:
        session.get(HubLogin, "uma").groups = "dept-ultrasound"

    with pytest.raises(PermissionDenied, match="not in that group"):
        _check(catalog, _dataset(4))


def test_cli_sets_department_and_audits(
    catalog: Catalog, audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    with catalog.session() as session:
        session.add(_dataset(4, department=None))

    status = main(
        ["dataset", "set-department", "level-4", "ultrasound", "--as", "erin"]
    )

    assert status == 0
    assert "department: ultrasound" in capsys.readouterr().out
    with catalog.session() as session:
        assert session.get(Dataset, _dataset_id(session)).department == "ultrasound"
    (event,) = audit_log.events(action="dataset.update")
    assert event.actor == "erin"
    assert event.dataset == "level-4"
    assert event.detail["old"] == {"department": None}
    assert event.detail["new"] == {"department": "ultrasound"}


def test_cli_rejects_invalid_department(
    catalog: Catalog, audit_log: AuditLog, capsys: pytest.CaptureFixture[str]
) -> None:
    with catalog.session() as session:
        session.add(_dataset(4, department="ultrasound"))

    status = main(["dataset", "set-department", "level-4", "Dept Ultrasound"])

    assert status != 0
    assert "invalid department 'Dept Ultrasound'" in capsys.readouterr().err
    with catalog.session() as session:
        assert session.get(Dataset, _dataset_id(session)).department == "ultrasound"
    assert audit_log.events(action="dataset.update") == []


def _dataset_id(session) -> str:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    return session.scalars(select(Dataset.id).where(Dataset.name == "level-4")).one()
