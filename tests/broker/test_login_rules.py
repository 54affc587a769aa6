"""The broker applies the login rules of levels 4 and 5 to real hub logins.

One hub and OpenID provider record each login in the catalog of a broker
copy. ``alice`` (ultrasound, password only), ``uma`` (ultrasound, with a
second factor) and ``grace`` (IT security, with a second factor) are members
of one project that reads a level 4 ultrasound dataset and a level 3 dataset.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, text

from enclave.catalog.models import (
    AuditEvent,
    Category,
    Dataset,
    DatasetItem,
    HubLogin,
    utcnow,
)
from enclave.hub.accounts import Account, new_totp_secret
from enclave.hub.launch import Running
from enclave.policy.logins import ACR_MFA, record_hub_login
from tests.fixtures.broker import (
    DATASET,
    REVIEWERS,
    STEWARD,
    ChildResult,
    Enclave,
    OsUser,
    RunningBroker,
    copy_enclave,
    run_as,
    start_broker,
    stop_broker,
)
from tests.fixtures.hub import (
    LoginFailed,
    login,
    running_test_hub,
    unique_user_prefix,
)

IDENTIFYING = "carphone-identifying"
PROJECT = "identifying-study"
MEMBERS = ("alice", "uma", "grace")


def _read(dataset: str) -> str:
    return f"""
    from enclave.data import BrokerClient
    result = BrokerClient().read_frames({dataset!r}, "clips/0001", 0, 2).shape
    """


LIST = """
from enclave.data import BrokerClient
result = [d["name"] for d in BrokerClient().list_datasets()]
"""


@dataclass
class LoginEnclave:
    """A broker and a hub that share one catalog, and the members' OS users."""

    enclave: Enclave
    broker: RunningBroker
    hub: Running
    users: dict[str, OsUser]

    def read(self, user: str, dataset: str = IDENTIFYING) -> ChildResult:
        return run_as(self.users[user], self.broker.socket_path, _read(dataset))

    def denials(self, user: str) -> list[AuditEvent]:
        return self.enclave.audit.events(
            actor=user, action="data.read", outcome="denied"
        )


def _add_identifying_dataset(enclave: Enclave) -> None:
    with enclave.catalog.session() as session:
        item = session.scalars(
            select(DatasetItem)
            .join(Dataset)
            .where(Dataset.name == DATASET, DatasetItem.path == "clips/0001")
        ).one()
        dataset = Dataset(
            name=IDENTIFYING,
            category=Category.DIAGNOSIS,
            level=4,
            profile="baseline",
            department="ultrasound",
            created_by=STEWARD,
        )
        session.add(dataset)
        session.flush()
        session.add(
            DatasetItem(dataset_id=dataset.id, asset_id=item.asset_id, path=item.path)
        )


def _add_project(enclave: Enclave) -> None:
    from enclave.ethics.acceptance import accept_agreement
    from enclave.projects import approve_project, create_project, submit_project

    today = dt.date.today()
    audit = enclave.audit
    with enclave.catalog.session(immediate=True) as session:
        create_project(
            session,
            name=PROJECT,
            title="Sonographer hand movements",
            purpose="research",
            pi="alice",
            members=list(MEMBERS),
            datasets=[IDENTIFYING, DATASET],
            starts_on=today,
            ends_on=today + dt.timedelta(days=30),
            created_by="alice",
            audit=audit,
        )
    with enclave.catalog.session(immediate=True) as session:
        submit_project(session, PROJECT, "alice", audit=audit)
    for reviewer in REVIEWERS[:2]:
        with enclave.catalog.session(immediate=True) as session:
            approve_project(session, PROJECT, reviewer, audit=audit)
    for member in MEMBERS:
        with enclave.catalog.session(immediate=True) as session:
            accept_agreement(session, audit, PROJECT, username=member)


def _create_os_user(name: str, hub_name: str) -> OsUser:
    subprocess.run(
        ["useradd", "--create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam(name)
    return OsUser(name, hub_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


@pytest.fixture(scope="module")
def setup(
    enclave_template: Enclave, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LoginEnclave]:
    root = tmp_path_factory.mktemp("login-rules")
    enclave = copy_enclave(enclave_template, root / "enclave")
    enclave.settings = dataclasses.replace(
        enclave.settings, user_prefix=unique_user_prefix()
    )
    _add_identifying_dataset(enclave)
    _add_project(enclave)
    uma = Account(
        "uma",
        "Uma Sonographer",
        ("researchers", "dept-ultrasound"),
        secrets.token_urlsafe(12),
        totp_secret=new_totp_secret(),
    )
    socket_dir = Path(tempfile.mkdtemp(prefix="enclave-broker-test-"))

    try:
        with running_test_hub(
            enclave.settings, root / "hub-state", extra_accounts=[uma]
        ) as hub:
            # The hub's own cleanup removes these users, which its accounts name.
            users = {
                name: _create_os_user(enclave.settings.os_user(name), name)
                for name in MEMBERS
            }
            broker = start_broker(enclave, socket_dir)
            try:
                yield LoginEnclave(enclave, broker, hub, users)
            finally:
                stop_broker(broker)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_level4_rejects_password_login(setup: LoginEnclave) -> None:
    login(setup.hub, "alice")

    outcome = setup.read("alice")

    assert outcome.error == "PermissionDenied"
    assert "did not use one" in outcome.message
    assert "log in again with your second factor" in outcome.message


def test_password_login_reads_level3(setup: LoginEnclave) -> None:
    login(setup.hub, "alice")

    outcome = setup.read("alice", DATASET)

    assert outcome.error is None, outcome.message
    assert outcome.result == [2, 144, 176, 3]


def test_listing_hides_level4_from_password_login(setup: LoginEnclave) -> None:
    login(setup.hub, "alice")

    outcome = run_as(setup.users["alice"], setup.broker.socket_path, LIST)

    assert outcome.error is None, outcome.message
    assert IDENTIFYING not in outcome.result
    assert DATASET in outcome.result


def test_level4_allowed_after_second_factor(setup: LoginEnclave) -> None:
    before = setup.read("uma")
    login(setup.hub, "uma")

    after = setup.read("uma")

    assert before.error == "PermissionDenied"
    assert "no hub login of 'uma' is on record" in before.message
    assert after.error is None, after.message
    assert after.result == [2, 144, 176, 3]
    reads = setup.enclave.audit.events(
        actor="uma", action="data.read", outcome="success"
    )
    assert [event.dataset for event in reads] == [IDENTIFYING]


def test_level4_rejects_other_department(setup: LoginEnclave) -> None:
    login(setup.hub, "grace")
    with setup.enclave.catalog.session() as session:
        login_record = session.get(HubLogin, "grace")
        assert "otp" in login_record.amr

    outcome = setup.read("grace")

    assert outcome.error == "PermissionDenied"
    assert "department 'ultrasound'" in outcome.message
    assert "'dept-ultrasound'" in outcome.message


def test_rejections_are_audited(setup: LoginEnclave) -> None:
    login(setup.hub, "alice")
    setup.read("alice")

    denials = setup.denials("alice")

    assert denials, "no denied data.read event for alice"
    event = denials[-1]
    assert event.dataset == IDENTIFYING
    assert event.source == "broker"
    assert "second factor" in event.detail["reason"]
    assert event.detail["uid"] == setup.users["alice"].uid
    assert setup.enclave.audit.verify().ok


def test_expired_login_is_rejected(setup: LoginEnclave) -> None:
    login(setup.hub, "uma")
    with setup.enclave.catalog.session() as session:
        session.get(HubLogin, "uma").expires_at = utcnow() - dt.timedelta(minutes=1)

    outcome = setup.read("uma")

    assert outcome.error == "PermissionDenied"
    assert "expired at" in outcome.message
    assert "log in again with your second factor" in outcome.message


def test_failed_login_lookup_rejects(setup: LoginEnclave) -> None:
    with setup.enclave.catalog.session() as session:
        record_hub_login(
            session,
            "uma",
            amr=["pwd", "otp"],
            acr=ACR_MFA,
            groups=["researchers", "dept-ultrasound"],
            lifetime=dt.timedelta(hours=1),
        )
    engine = setup.enclave.catalog.engine
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE hub_logins RENAME TO hub_logins_moved"))
    try:
        outcome = setup.read("uma")
    finally:
        with engine.begin() as connection:
            connection.execute(
                text("ALTER TABLE hub_logins_moved RENAME TO hub_logins")
            )

    assert outcome.error == "PermissionDenied"
    assert "could not be looked up" in outcome.message
    reasons = [event.detail["reason"] for event in setup.denials("uma")]
    assert any("could not be looked up" in reason for reason in reasons)


def test_unrecorded_login_is_rejected(setup: LoginEnclave) -> None:
    engine = setup.enclave.catalog.engine
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE hub_logins RENAME TO hub_logins_moved"))
    try:
        with pytest.raises(LoginFailed) as failed:
            login(setup.hub, "alice")
    finally:
        with engine.begin() as connection:
            connection.execute(
                text("ALTER TABLE hub_logins_moved RENAME TO hub_logins")
            )

    assert failed.value.response.status_code == 503
    assert "could not record your login" in failed.value.response.text
