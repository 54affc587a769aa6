"""xarray.open_dataset(..., engine="enclave") over the broker."""

from __future__ import annotations

import numpy as np
import pytest

from enclave.data.backend import (
    EnclaveBackendEntrypoint,
    parse_dataset_spec,
    parse_item_spec,
)
from enclave.errors import ValidationError
from tests.fixtures.broker import DATASET, OsUser, RunningBroker, decord_frames, run_as

OPEN_ITEM = f"""
import dask.array, xarray as xr
lazy = xr.open_dataset({DATASET!r} + "/clips/0001", engine="enclave")
url = "enclave://" + {DATASET!r} + "/clips/0001"
chunked = xr.open_dataset(url, engine="enclave", chunks={{}}, chunk_frames=8)
result = {{
    "loaded_on_open": lazy.frames.variable._in_memory,
    "sizes": dict(lazy.sizes),
    "source": lazy.encoding["source"],
    "window": lazy.frames.isel(time=slice(5, 9), y=slice(0, 50)).values,
    "time": lazy["time"].values,
    "chunks": [list(c) for c in chunked.frames.data.chunks],
    "is_dask": isinstance(chunked.frames.data, dask.array.Array),
    "mean": chunked.frames.isel(time=slice(0, 24)).mean(("y", "x")).values,
}}
try:
    xr.open_dataset({DATASET!r} + "/clips/0404", engine="enclave")
except Exception as exc:
    result["missing"] = [type(exc).__name__, str(exc)]
"""


def test_open_item_with_engine(broker: RunningBroker, member: OsUser) -> None:
    expected = decord_frames(broker.enclave.plaintext(DATASET, "clips/0001"))

    outcome = run_as(member, broker.socket_path, OPEN_ITEM)

    assert outcome.error is None, outcome.message
    got = outcome.result
    assert not got["loaded_on_open"]
    assert got["sizes"] == {"time": 120, "y": 144, "x": 176, "channel": 3}
    assert got["source"] == f"enclave://{DATASET}/clips/0001"
    assert np.array_equal(got["window"], expected[5:9, :50])
    assert got["time"][0] == 0.0
    assert len(got["time"]) == 120
    assert got["is_dask"]
    assert got["chunks"][0] == [8] * 15
    assert np.allclose(got["mean"], expected[:24].mean(axis=(1, 2)))
    assert got["missing"][0] == "NotFound"
    assert "has no item 'clips/0404'" in got["missing"][1]
    reads = broker.enclave.audit.events(
        actor=member.hub_name, action="data.read", outcome="success"
    )
    assert [5, 9] in [event.detail["frames"] for event in reads]


def test_engine_is_registered() -> None:
    import xarray as xr

    engines = xr.backends.list_engines()

    assert isinstance(engines["enclave"], EnclaveBackendEntrypoint)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("study/clips/0001", ("study", "clips/0001")),
        ("enclave://study/clips/0001", ("study", "clips/0001")),
        ("/study/loops/a/b", ("study", "loops/a/b")),
    ],
)
def test_parse_item_spec(spec: str, expected: tuple[str, str]) -> None:
    assert parse_item_spec(spec) == expected


@pytest.mark.parametrize("spec", ["study", "enclave://study/", "", 42])
def test_parse_item_spec_rejects(spec: object) -> None:
    with pytest.raises(ValidationError, match="DATASET/ITEM_PATH"):
        parse_item_spec(spec)


OPEN_TREE = f"""
import dask.array, xarray as xr
lazy = xr.open_datatree({DATASET!r}, engine="enclave")
chunked = xr.open_datatree("enclave://" + {DATASET!r}, engine="enclave", chunks={{}})
clip = lazy["clips/0001"].frames
result = {{
    "groups": sorted(node.path for node in lazy.subtree if "frames" in node.data_vars),
    "name": lazy.attrs["name"],
    "loaded_on_open": clip.variable._in_memory,
    "window": clip.isel(time=slice(60, 63)).values,
    "is_dask": isinstance(chunked["clips/0001"].frames.data, dask.array.Array),
    "chunks": list(chunked["clips/0001"].frames.data.chunks[0]),
}}
"""


def test_open_datatree_with_engine(broker: RunningBroker, member: OsUser) -> None:
    expected = decord_frames(broker.enclave.plaintext(DATASET, "clips/0001"))

    outcome = run_as(member, broker.socket_path, OPEN_TREE)

    assert outcome.error is None, outcome.message
    got = outcome.result
    assert got["groups"] == ["/clips/0001", "/loops/0001"]
    assert got["name"] == DATASET
    assert not got["loaded_on_open"]
    assert np.array_equal(got["window"], expected[60:63])
    assert got["is_dask"]
    assert got["chunks"] == [16] * 7 + [8]


@pytest.mark.parametrize("spec", ["study", "enclave://study", "/study/"])
def test_parse_dataset_spec(spec: str) -> None:
    assert parse_dataset_spec(spec) == "study"


@pytest.mark.parametrize("spec", ["study/clips/0001", "enclave://", "", 42])
def test_parse_dataset_spec_rejects(spec: object) -> None:
    with pytest.raises(ValidationError, match="DATASET"):
        parse_dataset_spec(spec)
