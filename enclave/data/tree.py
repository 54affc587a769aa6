"""``open_dataset``: a dataset as a lazy, Dask-backed xarray DataTree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from enclave.data.client import BrokerClient
from enclave.data.frames import ItemFrames
from enclave.errors import ValidationError

__all__ = [
    "DEFAULT_CHUNK_FRAMES",
    "dataset_attrs",
    "item_attrs",
    "item_dataset",
    "open_dataset",
    "time_coords",
]

DEFAULT_CHUNK_FRAMES = 16
DIMS = ("time", "y", "x", "channel")


def open_dataset(
    name: str,
    *,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    socket_path: str | Path | None = None,
) -> xr.DataTree:
    """Open a de-identified dataset of one of your approved projects.

    Nothing but the item list is read until you compute: each chunk of
    ``chunk_frames`` frames is fetched from the data broker when Dask needs
    it. Every fetch is recorded in the audit trail under your name.

    Parameters
    ----------
    name : str
        Dataset name, as listed by ``BrokerClient().list_datasets()``.
    chunk_frames : int
        Frames per Dask chunk along ``time``.
    socket_path : str or Path, optional
        Broker socket; default ``ENCLAVE_BROKER_SOCKET`` or the enclave settings.

    Returns
    -------
    xarray.DataTree
        One child node per item path (``tree["clips/0001"]``), each holding
        ``frames``: uint8 (time, y, x, channel) with ``time`` in seconds.

    Raises
    ------
    PermissionDenied
        If none of your current, approved projects has a grant of the dataset.
    NotFound
        If no dataset has this name.

    Examples
    --------
    >>> import enclave
    >>> tree = enclave.open_dataset("carphone-study")  # doctest: +SKIP
    >>> clip = tree["clips/0001"].frames  # doctest: +SKIP
    >>> clip.sizes  # doctest: +SKIP
    Frozen({'time': 120, 'y': 144, 'x': 176, 'channel': 3})
    >>> clip.isel(time=slice(0, 16)).mean(("y", "x")).compute()  # doctest: +SKIP
    """
    chunk_frames = _check_chunk_frames(chunk_frames)
    client = BrokerClient(socket_path)
    summary = client.describe(name)

    nodes: dict[str, Any] = {"/": xr.Dataset(attrs=dataset_attrs(summary))}
    for item in summary["items"]:
        nodes[item["path"]] = item_dataset(client, summary, item, chunk_frames)
    return xr.DataTree.from_dict(nodes, name=name)


def item_dataset(
    client: BrokerClient,
    summary: dict[str, Any],
    item: dict[str, Any],
    chunk_frames: int,
) -> xr.Dataset:
    """Build the Dask-backed ``xarray.Dataset`` of one item from its description."""
    frames = ItemFrames(client, summary["name"], item, summary["limits"])
    token = tokenize(
        str(client.socket_path), summary["name"], item["path"], item["asset_id"]
    )
    array = da.from_array(
        frames,
        chunks=(chunk_frames, *frames.shape[1:]),
        name=f"enclave-frames-{token}",
        lock=False,
        asarray=False,
        fancy=False,
        inline_array=True,
        meta=np.empty((0, 0, 0, 0), dtype=np.uint8),
    )
    attrs = item_attrs(summary, item)
    variable = xr.DataArray(array, dims=DIMS, attrs=attrs)
    return xr.Dataset({"frames": variable}, coords=time_coords(item), attrs=attrs)


def item_attrs(summary: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """Return the attributes of an item's ``frames``."""
    return {
        "dataset": summary["name"],
        "path": item["path"],
        "asset_id": item["asset_id"],
        "media_type": item["media_type"],
        "fps": float(item["fps"]),
        "frame_count": int(item["frame_count"]),
    }


def time_coords(item: dict[str, Any]) -> dict[str, Any]:
    """Return the ``time`` coordinate: each frame's start in seconds."""
    seconds = np.asarray(item["timestamps"], dtype=np.float64)
    return {"time": ("time", seconds, {"long_name": "frame start time", "units": "s"})}


def dataset_attrs(summary: dict[str, Any]) -> dict[str, Any]:
    """Return the attributes of a dataset's root node."""
    keys = ("name", "description", "category", "level", "profile", "project")
    return {key: summary[key] for key in keys if key in summary}


def _check_chunk_frames(chunk_frames: int) -> int:
    if isinstance(chunk_frames, bool) or not isinstance(
        chunk_frames, (int, np.integer)
    ):
        raise ValidationError(
            f"chunk_frames={chunk_frames!r} must be a positive integer"
        )
    if chunk_frames < 1:
        raise ValidationError(f"chunk_frames={chunk_frames} must be at least 1")
    return int(chunk_frames)
