"""Frame brightness of vault assets, decoded without the broker."""

from __future__ import annotations

import io

import decord
import numpy as np
import pydicom

from enclave.catalog.models import Asset, MediaType
from enclave.vault import Vault, open_asset


def frame_means(vault: Vault, asset: Asset, count: int | None = None) -> list[float]:
    """Return the mean brightness of the first ``count`` frames (all by default)."""
    data = open_asset(vault, asset).readall()
    if asset.media_type == MediaType.VIDEO:
        reader = decord.VideoReader(io.BytesIO(data))
        indices = range(len(reader) if count is None else count)
        frames = reader.get_batch(list(indices)).asnumpy()
    else:
        # pydicom 3 returns YBR pixel data converted to RGB.
        frames = pydicom.dcmread(io.BytesIO(data)).pixel_array[:count]
        if frames.ndim == 3:
            frames = np.stack([frames] * 3, axis=-1)
    return frames.mean(axis=(1, 2, 3)).tolist()
