"""open_dataset: a dataset as a lazy DataTree whose chunks come from the broker."""

from __future__ import annotations

import numpy as np
import pytest

from enclave.data import open_dataset
from enclave.errors import ValidationError
from tests.fixtures.broker import DATASET, OsUser, RunningBroker, decord_frames, run_as

OPEN_TREE = f"""
import enclave, dask
tree = enclave.open_dataset({DATASET!r}, chunk_frames=16)
clip = tree["clips/0001"]
frames = clip.frames
result = {{
    "children": sorted(tree["clips"].children),
    "root_attrs": dict(tree.attrs),
    "dims": list(frames.dims),
    "dtype": str(frames.dtype),
    "is_dask": isinstance(frames.data, dask.array.Array),
    "chunks": [list(c) for c in frames.data.chunks],
    "attrs": dict(frames.attrs),
    "time": frames["time"].values,
    "all": frames.compute().values,
    "slice": frames.isel(time=slice(37, 53)).compute().values,
    "loop_shape": list(tree["loops/0001"].frames.shape),
}}
"""


@pytest.fixture(scope="module")
def opened(broker: RunningBroker, member: OsUser) -> dict:
    outcome = run_as(member, broker.socket_path, OPEN_TREE)
    assert outcome.error is None, outcome.message
    return outcome.result


def test_tree_has_one_node_per_item(opened: dict) -> None:
    assert opened["children"] == ["0001"]
    assert opened["loop_shape"] == [30, 240, 320, 3]
    assert opened["root_attrs"]["name"] == DATASET
    assert opened["root_attrs"]["project"] == "carphone-current"


def test_frames_are_lazy_uint8(opened: dict) -> None:
    assert opened["dims"] == ["time", "y", "x", "channel"]
    assert opened["dtype"] == "uint8"
    assert opened["is_dask"]
    assert opened["chunks"] == [[16] * 7 + [8], [144], [176], [3]]


def test_frames_attrs_and_time(opened: dict) -> None:
    attrs = opened["attrs"]

    assert attrs["dataset"] == DATASET
    assert attrs["path"] == "clips/0001"
    assert attrs["media_type"] == "video"
    assert attrs["frame_count"] == 120
    assert attrs["fps"] == pytest.approx(29.97, abs=0.01)
    assert len(attrs["asset_id"]) == 32
    assert opened["time"].dtype == np.float64
    assert opened["time"][0] == 0.0
    assert np.allclose(np.diff(opened["time"]), 1 / 29.97, atol=1e-3)


def test_compute_equals_decord(broker: RunningBroker, opened: dict) -> None:
    expected = decord_frames(broker.enclave.plaintext(DATASET, "clips/0001"))

    assert np.array_equal(opened["all"], expected)
    assert np.array_equal(opened["slice"], expected[37:53])


def test_reads_are_audited_per_chunk(
    broker: RunningBroker, member: OsUser, opened: dict
) -> None:
    reads = broker.enclave.audit.events(
        actor=member.hub_name, action="data.read", outcome="success"
    )
    ranges = {tuple(event.detail["frames"]) for event in reads}

    assert {(start, min(start + 16, 120)) for start in range(0, 120, 16)} <= ranges


INDEXING = f"""
from enclave.data import BrokerClient, ItemFrames
client = BrokerClient()
summary = client.describe({DATASET!r})
item = [i for i in summary["items"] if i["path"] == "clips/0001"][0]
frames = ItemFrames(client, {DATASET!r}, item, summary["limits"])
frames.frames_per_request = 7  # force several requests per read
result = {{
    "int": frames[5],
    "negative": frames[-1],
    "step": frames[3:40:9],
    "reverse": frames[30:20:-3],
    "ellipsis": frames[..., 1],
    "crop": frames[10:12, 20:30, 40:50],
    "empty": frames[50:50],
}}
try:
    frames[120]
except IndexError as exc:
    result["out_of_range"] = str(exc)
"""


def test_item_frames_indexing(broker: RunningBroker, member: OsUser) -> None:
    expected = decord_frames(broker.enclave.plaintext(DATASET, "clips/0001"))

    got = run_as(member, broker.socket_path, INDEXING).result

    assert np.array_equal(got["int"], expected[5])
    assert np.array_equal(got["negative"], expected[-1])
    assert np.array_equal(got["step"], expected[3:40:9])
    assert np.array_equal(got["reverse"], expected[30:20:-3])
    assert np.array_equal(got["ellipsis"], expected[..., 1])
    assert np.array_equal(got["crop"], expected[10:12, 20:30, 40:50])
    assert got["empty"].shape == (0, 144, 176, 3)
    assert got["out_of_range"] == "frame 120 is out of range for 120 frames"


def test_denied_user_cannot_open(broker: RunningBroker, outsider: OsUser) -> None:
    code = f"""
    import enclave
    result = enclave.open_dataset({DATASET!r})
    """

    outcome = run_as(outsider, broker.socket_path, code)

    assert outcome.error == "PermissionDenied"
    assert "no current project" in outcome.message


@pytest.mark.parametrize("chunk_frames", [0, -4, 2.5, True])
def test_invalid_chunk_frames(chunk_frames: object) -> None:
    with pytest.raises(ValidationError, match="chunk_frames"):
        open_dataset(DATASET, chunk_frames=chunk_frames, socket_path="/nonexistent")  # type: ignore[arg-type]
