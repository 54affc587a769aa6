"""The xarray backend ``engine="enclave"``: one dataset item as an xarray.Dataset."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from enclave.data.client import BrokerClient
from enclave.data.frames import ItemFrames
from enclave.data.tree import DEFAULT_CHUNK_FRAMES, DIMS, item_attrs, time_coords
from enclave.errors import NotFound, ValidationError

__all__ = ["EnclaveBackendArray", "EnclaveBackendEntrypoint", "parse_item_spec"]

URL_SCHEME = "enclave://"


class EnclaveBackendArray(BackendArray):
    """Frames of one item for xarray's lazy indexing; reads only what is selected."""

    def __init__(self, frames: ItemFrames) -> None:
        self.frames = frames
        self.shape = frames.shape
        self.dtype = frames.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        # BASIC: xarray turns outer and vectorised keys into slices and
        # integers for us, then applies the rest in memory.
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self.frames.__getitem__
        )


class EnclaveBackendEntrypoint(BackendEntrypoint):
    """Open ``"DATASET/ITEM_PATH"`` (or ``"enclave://DATASET/ITEM_PATH"``).

    Examples
    --------
    >>> import xarray as xr
    >>> spec = "carphone-study/clips/0001"
    >>> ds = xr.open_dataset(spec, engine="enclave")  # doctest: +SKIP
    >>> ds.frames.isel(time=0).shape  # doctest: +SKIP
    (144, 176, 3)

    With ``chunks={}`` the frames are a Dask array of ``chunk_frames`` frames
    per chunk.
    """

    description = (
        "Read frames of a de-identified dataset item through the enclave's data broker"
    )
    url = "https://xarray.pydata.org/en/stable/internals/how-to-add-new-backend.html"
    open_dataset_parameters = (
        "filename_or_obj",
        "drop_variables",
        "chunk_frames",
        "socket_path",
    )

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[str] | Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        socket_path: str | Path | None = None,
    ) -> xr.Dataset:
        dataset_name, path = parse_item_spec(filename_or_obj)
        client = BrokerClient(socket_path)
        summary = client.describe(dataset_name)
        item = _find_item(summary, path)

        frames = ItemFrames(client, dataset_name, item, summary["limits"])
        data = indexing.LazilyIndexedArray(EnclaveBackendArray(frames))
        attrs = item_attrs(summary, item)
        variable = xr.Variable(
            DIMS,
            data,
            attrs=attrs,
            encoding={"preferred_chunks": {"time": chunk_frames}},
        )
        ds = xr.Dataset({"frames": variable}, coords=time_coords(item), attrs=attrs)

        if drop_variables is not None:
            names = (
                [drop_variables]
                if isinstance(drop_variables, str)
                else list(drop_variables)
            )
            ds = ds.drop_vars(names, errors="ignore")
        ds.encoding["source"] = f"{URL_SCHEME}{dataset_name}/{path}"
        return ds

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return isinstance(filename_or_obj, str) and filename_or_obj.startswith(
            URL_SCHEME
        )


def parse_item_spec(spec: Any) -> tuple[str, str]:
    """Split ``"DATASET/ITEM_PATH"`` into the dataset name and the item path.

    Raises
    ------
    ValidationError
        If ``spec`` has no item path.
    """
    text = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if not isinstance(text, str):
        raise ValidationError(
            "engine='enclave' opens a 'DATASET/ITEM_PATH' string, "
            f"not {type(spec).__name__}"
        )
    text = text.removeprefix(URL_SCHEME).strip("/")
    dataset_name, _, path = text.partition("/")
    if not dataset_name or not path:
        raise ValidationError(
            f"{spec!r} names no item; pass 'DATASET/ITEM_PATH', "
            "for example 'carphone-study/clips/0001'"
        )
    return dataset_name, path


def _find_item(summary: dict[str, Any], path: str) -> dict[str, Any]:
    for item in summary["items"]:
        if item["path"] == path:
            return item
    known = ", ".join(repr(i["path"]) for i in summary["items"][:5]) or "none"
    raise NotFound(
        f"dataset {summary['name']!r} has no item {path!r}; its first items are {known}"
    )
