"""The researcher-facing data API: datasets as xarray, Dask and torch objects.

Frames come from the data broker over a local socket; this process never
receives a key or an encrypted file.

Examples
--------
>>> import enclave
>>> tree = enclave.open_dataset("carphone-study")  # doctest: +SKIP
>>> tree["clips/0001"].frames.mean(("y", "x")).compute()  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from enclave.data.client import BrokerClient
from enclave.data.frames import ItemFrames
from enclave.data.tree import open_dataset

__all__ = ["BrokerClient", "ClipDataset", "ItemFrames", "open_dataset"]


def __getattr__(name: str) -> Any:
    # torch takes seconds to import, so only ClipDataset's users pay for it.
    if name == "ClipDataset":
        from enclave.data.torch import ClipDataset

        return ClipDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
