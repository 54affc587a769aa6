"""A lazily read, numpy-indexable view of one dataset item's frames."""

from __future__ import annotations

from typing import Any

import numpy as np

from enclave.data.client import BrokerClient
from enclave.errors import ValidationError

__all__ = ["ItemFrames"]


class ItemFrames:
    """The frames of one item, read from the broker when indexed.

    Supports basic indexing (integers and slices, with ``...``) over the
    axes (time, y, x, channel). Only the frames the time index selects are
    requested, in as many requests as the broker's per-request limits need.

    Parameters
    ----------
    client : BrokerClient
        Connection settings of the broker.
    dataset : str
        Dataset name.
    item : dict
        The item's entry from :meth:`BrokerClient.describe`.
    limits : dict
        The ``limits`` entry of the same response.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(
        self,
        client: BrokerClient,
        dataset: str,
        item: dict[str, Any],
        limits: dict[str, int],
    ) -> None:
        self.client = client
        self.dataset = dataset
        self.path = str(item["path"])
        self.shape = (
            int(item["frame_count"]),
            int(item["height"]),
            int(item["width"]),
            3,
        )
        frame_bytes = max(1, self.shape[1] * self.shape[2] * 3)
        self.frames_per_request = max(
            1,
            min(
                int(limits["max_frames_per_request"]),
                int(limits["max_bytes_per_request"]) // frame_bytes,
            ),
        )

    def __repr__(self) -> str:
        return f"ItemFrames({self.dataset!r}, {self.path!r}, shape={self.shape})"

    def read(self, start: int, stop: int) -> np.ndarray:
        """Read frames ``[start, stop)`` as a uint8 array (n, height, width, 3)."""
        if not 0 <= start <= stop <= self.shape[0]:
            raise ValidationError(
                f"frame range [{start}, {stop}) is outside {self.path!r}, "
                f"which has {self.shape[0]} frames"
            )
        if start == stop:
            return np.empty((0, *self.shape[1:]), dtype=np.uint8)

        parts = []
        for first in range(start, stop, self.frames_per_request):
            last = min(stop, first + self.frames_per_request)
            parts.append(self.client.read_frames(self.dataset, self.path, first, last))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __getitem__(self, key: Any) -> np.ndarray:
        time_key, rest = _split_key(key, self.ndim)

        if isinstance(time_key, (int, np.integer)):
            index = int(time_key) + self.shape[0] if time_key < 0 else int(time_key)
            if not 0 <= index < self.shape[0]:
                raise IndexError(
                    f"frame {time_key} is out of range for {self.shape[0]} frames"
                )
            return self.read(index, index + 1)[(0, *rest)]

        if not isinstance(time_key, slice):
            raise TypeError(
                "frames are indexed by integers and slices, "
                f"not {type(time_key).__name__}"
            )
        frame_numbers = range(*time_key.indices(self.shape[0]))
        if len(frame_numbers) == 0:
            return np.empty((0, *self.shape[1:]), dtype=np.uint8)[(slice(None), *rest)]

        first, last = min(frame_numbers), max(frame_numbers)
        frames = self.read(first, last + 1)
        if frame_numbers.step != 1:
            frames = frames[np.asarray(frame_numbers) - first]
        return frames[(slice(None), *rest)]


def _split_key(key: Any, ndim: int) -> tuple[Any, tuple[Any, ...]]:
    # Expand `...` and pad with full slices, then separate the time axis.
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = (slice(None),) * (ndim - len(key) + 1)
        key = key[:at] + fill + key[at + 1 :]
    if len(key) > ndim:
        raise IndexError(f"too many indices ({len(key)}) for {ndim}-dimensional frames")
    key = key + (slice(None),) * (ndim - len(key))
    return key[0], tuple(key[1:])
