"""A PyTorch ``Dataset`` of fixed-length clips read through the data broker.

Importing this module imports torch; :mod:`enclave.data` itself does not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from enclave.data.client import BrokerClient
from enclave.data.frames import ItemFrames
from enclave.errors import ValidationError

__all__ = ["ClipDataset"]


class ClipDataset(Dataset):
    """Fixed-length clips of every item of a dataset, as uint8 tensors (T, C, H, W).

    Clips start every ``stride`` frames and never run past an item's end, so
    an item of ``n`` frames gives ``(n - clip_frames) // stride + 1`` clips
    (none if it is shorter than ``clip_frames``). The object holds only the
    socket path, so it works with ``DataLoader(num_workers > 0)``.

    Parameters
    ----------
    name : str
        Dataset name.
    clip_frames : int
        Frames per clip (T).
    stride : int
        Frames between the starts of consecutive clips.
    transform : callable, optional
        Applied to each clip tensor before it is returned.
    socket_path : str or Path, optional
        Broker socket; default ``ENCLAVE_BROKER_SOCKET`` or the enclave settings.

    Examples
    --------
    >>> from torch.utils.data import DataLoader
    >>> from enclave.data.torch import ClipDataset
    >>> clips = ClipDataset("carphone-study", clip_frames=16)  # doctest: +SKIP
    >>> clips[0].shape  # doctest: +SKIP
    torch.Size([16, 3, 144, 176])
    >>> batch = next(iter(DataLoader(clips, batch_size=4)))  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        clip_frames: int = 16,
        stride: int = 16,
        *,
        transform: Callable[[torch.Tensor], Any] | None = None,
        socket_path: str | Path | None = None,
    ) -> None:
        for label, value in (("clip_frames", clip_frames), ("stride", stride)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValidationError(f"{label}={value!r} must be a positive integer")
        self.name = name
        self.clip_frames = clip_frames
        self.stride = stride
        self.transform = transform

        client = BrokerClient(socket_path)
        summary = client.describe(name)
        self.items = [
            ItemFrames(client, name, item, summary["limits"])
            for item in summary["items"]
        ]
        self.index = [
            (number, start)
            for number, frames in enumerate(self.items)
            for start in range(0, frames.shape[0] - clip_frames + 1, stride)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip {index} is out of range for {len(self)} clips")
        number, start = self.index[index]
        frames = self.items[number].read(start, start + self.clip_frames)
        clip = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
        return self.transform(clip) if self.transform else clip

    def clip_source(self, index: int) -> tuple[str, int, int]:
        """Return the item path and frame range ``[start, stop)`` of clip ``index``."""
        number, start = self.index[index]
        return self.items[number].path, start, start + self.clip_frames
