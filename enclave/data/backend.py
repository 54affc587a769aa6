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
from enclave.data.tree import (
    DEFAULT_CHUNK_FRAMES,
    DIMS,
    dataset_attrs,
    item_attrs,
    time_coords,
)
from enclave.errors import NotFound, ValidationError

__all__ = [
    "EnclaveBackendArray",
    "EnclaveBackendEntrypoint",
    "parse_dataset_spec",
    "parse_item_spec",
]

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
    """Open ``"DATASET/ITEM_PATH"`` as a Dataset, or ``"DATASET"`` as a DataTree.

    Either may start with ``enclave://``.

    Examples
    --------
    >>> import xarray as xr
    >>> spec = "carphone-study/clips/0001"
    >>> ds = xr.open_dataset(spec, engine="enclave")  # doctest: +SKIP
    >>> ds.frames.isel(time=0).shape  # doctest: +SKIP
    (144, 176, 3)
    >>> tree = xr.open_datatree("carphone-study", engine="enclave")  # doctest: +SKIP

    With ``chunks={}`` the frames are a Dask array of ``chunk_frames`` frames
    per chunk.
    """

    supports_groups = True

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
        return _lazy_item_dataset(client, summary, item, chunk_frames, drop_variables)

    def open_groups_as_dict(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[str] | Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        socket_path: str | Path | None = None,
    ) -> dict[str, xr.Dataset]:
        dataset_name = parse_dataset_spec(filename_or_obj)
        client = BrokerClient(socket_path)
        summary = client.describe(dataset_name)

        groups = {"/": xr.Dataset(attrs=dataset_attrs(summary))}
        for item in summary["items"]:
            groups[f"/{item['path']}"] = _lazy_item_dataset(
                client, summary, item, chunk_frames, drop_variables
            )
        return groups

    def open_datatree(  # type: ignore[override]
        self,
        filename_or_obj: str | os.PathLike[str] | Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        socket_path: str | Path | None = None,
    ) -> xr.DataTree:
        groups = self.open_groups_as_dict(
            filename_or_obj,
            drop_variables=drop_variables,
            chunk_frames=chunk_frames,
            socket_path=socket_path,
        )
        return xr.DataTree.from_dict(groups, name=parse_dataset_spec(filename_or_obj))

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return isinstance(filename_or_obj, str) and filename_or_obj.startswith(
            URL_SCHEME
        )


def _lazy_item_dataset(
    client: BrokerClient,
    summary: dict[str, Any],
    item: dict[str, Any],
    chunk_frames: int,
    drop_variables: str | Iterable[str] | None,
) -> xr.Dataset:
    frames = ItemFrames(client, summary["name"], item, summary["limits"])
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
    ds.encoding["source"] = f"{URL_SCHEME}{summary['name']}/{item['path']}"
    return ds


def parse_dataset_spec(spec: Any) -> str:
    """Return the dataset name of ``"DATASET"`` or ``"enclave://DATASET"``.

    Raises
    ------
    ValidationError
        If ``spec`` is not a string or names an item as well.
    """
    text = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if not isinstance(text, str):
        raise ValidationError(
            "engine='enclave' opens a 'DATASET' string as a tree, "
            f"not {type(spec).__name__}"
        )
    name = text.removeprefix(URL_SCHEME).strip("/")
    if not name or "/" in name:
        raise ValidationError(
            f"{spec!r} is not a dataset name; pass 'DATASET', for example "
            "'carphone-study', or open one item with xarray.open_dataset"
        )
    return name


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
