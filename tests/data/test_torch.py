"""ClipDataset: fixed-length clips as uint8 tensors (T, C, H, W)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.fixtures.broker import DATASET, OsUser, RunningBroker, decord_frames, run_as

CLIPS = f"""
import torch
from torch.utils.data import DataLoader
from enclave.data.torch import ClipDataset
clips = ClipDataset({DATASET!r}, clip_frames=16, stride=16)
overlapping = ClipDataset({DATASET!r}, clip_frames=32, stride=8)
batch = next(iter(DataLoader(clips, batch_size=3, num_workers=2)))
result = {{
    "len": len(clips),
    "overlapping_len": len(overlapping),
    "sources": [clips.clip_source(i) for i in range(len(clips))],
    "dtype": str(clips[0].dtype),
    "clip2": clips[2].numpy(),
    "overlap3": overlapping[3].numpy(),
    "batch_shape": list(batch.shape),
    "batch0": batch[0].numpy(),
}}
"""


def test_clip_dataset(broker: RunningBroker, member: OsUser) -> None:
    expected = decord_frames(broker.enclave.plaintext(DATASET, "clips/0001"))
    as_tchw = expected.transpose(0, 3, 1, 2)

    outcome = run_as(member, broker.socket_path, CLIPS)

    assert outcome.error is None, outcome.message
    got = outcome.result
    # 120 frames of carphone give 7 clips, the ultrasound loop's 30 give 1.
    assert got["len"] == 8
    assert got["sources"][:2] == [["clips/0001", 0, 16], ["clips/0001", 16, 32]]
    assert got["sources"][-1] == ["loops/0001", 0, 16]
    assert got["overlapping_len"] == (120 - 32) // 8 + 1
    assert got["dtype"] == "torch.uint8"
    assert np.array_equal(got["clip2"], as_tchw[32:48])
    assert np.array_equal(got["overlap3"], as_tchw[24:56])
    assert got["batch_shape"] == [3, 16, 3, 144, 176]
    assert np.array_equal(got["batch0"], as_tchw[0:16])


@pytest.mark.parametrize("argument", ["clip_frames", "stride"])
def test_clip_dataset_rejects_bad_lengths(argument: str) -> None:
    from enclave.data.torch import ClipDataset
    from enclave.errors import ValidationError

    lengths = {"clip_frames": 16, "stride": 16, argument: 0}

    with pytest.raises(ValidationError, match=argument):
        ClipDataset(
            DATASET,
            clip_frames=lengths["clip_frames"],
            stride=lengths["stride"],
            socket_path="/nonexistent",
        )


def test_data_package_does_not_import_torch() -> None:
    import subprocess

    code = "import enclave.data, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert out.stdout.strip() == "False", out.stderr
