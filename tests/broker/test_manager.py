"""DataManager in this process: reads, refusals and destroyed assets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, select

from enclave.broker.config import BrokerConfig
from enclave.broker.manager import DataManager, Requester
from enclave.catalog.models import Asset, DataKey, Dataset, DatasetItem, utcnow
from enclave.errors import NotFound, PermissionDenied, ValidationError
from tests.fixtures.broker import DATASET, Enclave, OsUser, copy_enclave, decord_frames


@pytest.fixture
def enclave(enclave_template: Enclave, tmp_path: Path) -> Enclave:
    return copy_enclave(enclave_template, tmp_path / "enclave")


@pytest.fixture
def manager(enclave: Enclave, tmp_path: Path) -> DataManager:
    config = BrokerConfig(socket_path=tmp_path / "unused.sock")
    return DataManager(enclave.catalog, enclave.vault, enclave.audit, config)


@pytest.fixture
def reader(member: OsUser) -> Requester:
    return Requester(user=member.hub_name, uid=member.uid, pid=1)


def destroy(enclave: Enclave, dataset: str, path: str) -> str:
    """Crypto-shred an item's asset the way destruction does: drop its data key."""
    with enclave.catalog.session() as session:
        asset = session.scalars(
            select(Asset)
            .join(DatasetItem, DatasetItem.asset_id == Asset.id)
            .join(Dataset)
            .where(Dataset.name == dataset, DatasetItem.path == path)
        ).one()
        session.execute(delete(DataKey).where(DataKey.asset_id == asset.id))
        asset.destroyed_at = utcnow()
        return asset.id


def test_read_matches_decord(
    manager: DataManager, enclave: Enclave, reader: Requester
) -> None:
    expected = decord_frames(enclave.plaintext(DATASET, "clips/0001"))

    frames = manager.read_frames(reader, DATASET, "clips/0001", 40, 72)

    assert np.array_equal(frames, expected[40:72])


def test_destroyed_asset_is_not_served(
    manager: DataManager, enclave: Enclave, reader: Requester
) -> None:
    manager.read_frames(reader, DATASET, "clips/0001", 0, 4)
    asset_id = destroy(enclave, DATASET, "clips/0001")

    with pytest.raises(NotFound, match="has no item 'clips/0001'"):
        manager.read_frames(reader, DATASET, "clips/0001", 0, 4)

    assert asset_id not in manager.cache.asset_ids()
    paths = [item["path"] for item in manager.describe(reader, DATASET)["items"]]
    assert paths == ["loops/0001"]


def test_evict_destroyed_drops_plaintext(
    manager: DataManager, enclave: Enclave, reader: Requester
) -> None:
    manager.read_frames(reader, DATASET, "clips/0001", 0, 4)
    manager.read_frames(reader, DATASET, "loops/0001", 0, 4)
    asset_id = destroy(enclave, DATASET, "clips/0001")

    dropped = manager.evict_destroyed()

    assert dropped == 1
    assert asset_id not in manager.cache.asset_ids()
    assert len(manager.cache.asset_ids()) == 1
    assert manager.evict_destroyed() == 0


def test_bytes_limit_names_frames_that_fit(
    enclave: Enclave, reader: Requester, tmp_path: Path
) -> None:
    frame_bytes = 144 * 176 * 3
    config = BrokerConfig(
        socket_path=tmp_path / "unused.sock", max_bytes_per_request=10 * frame_bytes
    )
    manager = DataManager(enclave.catalog, enclave.vault, enclave.audit, config)

    with pytest.raises(ValidationError, match=r"at most \d+ bytes \(10 such frames\)"):
        manager.read_frames(reader, DATASET, "clips/0001", 0, 11)

    assert manager.read_frames(reader, DATASET, "clips/0001", 0, 10).shape[0] == 10


def test_denial_is_audited_before_raising(
    manager: DataManager, enclave: Enclave
) -> None:
    stranger = Requester(user="nobody-here", uid=4242, pid=7)

    with pytest.raises(PermissionDenied):
        manager.describe(stranger, DATASET)

    denied = enclave.audit.events(actor="nobody-here", outcome="denied")
    assert [event.action for event in denied] == ["data.list"]
    assert denied[0].detail["uid"] == 4242
    assert denied[0].detail["pid"] == 7
