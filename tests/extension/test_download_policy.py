"""The download policy recognises video, DICOM, array and image files by content."""

from __future__ import annotations

import gzip
import pickle
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from enclave_server.download_policy import (
    BlockedFile,
    DownloadPolicy,
    FileKind,
    sniff_format,
)
from PIL import Image


def check_renamed(
    policy: DownloadPolicy, source: Path, folder: Path
) -> BlockedFile | None:
    """Copy ``source`` to a .txt name and check it by content."""
    renamed = folder / f"{source.stem}-renamed.txt"
    shutil.copyfile(source, renamed)
    return policy.check_file(renamed.name, str(renamed))


@pytest.mark.parametrize(
    ("suffix", "codec", "expected"),
    [
        (".mp4", "h264", "MP4/MOV"),
        (".mov", "h264", "MP4/MOV"),
        (".mkv", "h264", "Matroska/WebM"),
        (".avi", "mpeg4", "AVI"),
        (".ts", "h264", "MPEG transport stream"),
    ],
)
def test_video_containers_sniffed(
    make_video: Callable[..., Path],
    tmp_path: Path,
    suffix: str,
    codec: str,
    expected: str,
) -> None:
    video = make_video(f"clip{suffix}", codec=codec)

    blocked = check_renamed(DownloadPolicy(), video, tmp_path)

    assert blocked is not None
    assert expected in blocked.reason
    assert "(video)" in blocked.reason


def test_real_samples_sniffed(
    carphone_path: Path, ultrasound_path: Path, tmp_path: Path
) -> None:
    policy = DownloadPolicy()

    carphone = check_renamed(policy, carphone_path, tmp_path)
    ultrasound = check_renamed(policy, ultrasound_path, tmp_path)

    assert carphone is not None
    assert "(video)" in carphone.reason
    assert ultrasound is not None
    assert "DICOM" in ultrasound.reason


def write_arrays(folder: Path) -> dict[str, Path]:
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(folder / "a.npy", data)
    np.savez(folder / "b.npz", data=data)
    torch.save({"weights": torch.zeros(3)}, folder / "c.pt")
    (folder / "d.pkl").write_bytes(pickle.dumps(data, protocol=4))
    with gzip.open(folder / "e.gz", "wb") as file:
        file.write(data.tobytes())
    with zipfile.ZipFile(folder / "f.zip", "w") as archive:
        archive.writestr("frames.bin", data.tobytes())
    with tarfile.open(folder / "g.tar", "w") as archive:
        archive.add(folder / "a.npy", arcname="a.npy")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "h.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "i.jpg")
    return {path.stem: path for path in folder.iterdir()}


@pytest.mark.parametrize(
    ("stem", "kind"),
    [
        ("a", FileKind.ARRAY),
        ("b", FileKind.ARCHIVE),
        ("c", FileKind.ARCHIVE),
        ("d", FileKind.ARRAY),
        ("e", FileKind.ARCHIVE),
        ("f", FileKind.ARCHIVE),
        ("g", FileKind.ARCHIVE),
        ("h", FileKind.IMAGE),
        ("i", FileKind.IMAGE),
    ],
)
def test_arrays_archives_images_sniffed(
    tmp_path: Path, stem: str, kind: FileKind
) -> None:
    folder = tmp_path / "arrays"
    folder.mkdir()
    source = write_arrays(folder)[stem]

    blocked = check_renamed(DownloadPolicy(), source, tmp_path)

    assert blocked is not None
    assert f"({kind.value})" in blocked.reason


@pytest.mark.parametrize(
    "content",
    [
        b"frame,mean\n0,1.5\n",
        b'{"cells": [], "nbformat": 4}',
        b"import numpy as np\nprint(np.pi)\n",
        b"",
    ],
)
def test_text_files_allowed(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)

    assert DownloadPolicy().check_file("notes.txt", str(path)) is None


def test_names_blocked_in_any_component() -> None:
    policy = DownloadPolicy()

    assert policy.check_name("CLIP.MP4") is not None
    assert policy.check_name("store.zarr/0.0.0") is not None
    assert policy.check_name("results/table.csv") is None


def test_folders_are_listed(tmp_path: Path) -> None:
    folder = tmp_path / "store.zarr"
    folder.mkdir()

    assert DownloadPolicy().check_file("store.zarr", str(folder)) is None


def test_kinds_can_be_allowed(tmp_path: Path) -> None:
    path = tmp_path / "plot.dat"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="PNG")
    policy = DownloadPolicy(
        blocked_extensions=(".mp4",), blocked_kinds=("video", "array")
    )

    assert policy.check_file("plot.dat", str(path)) is None
    assert sniff_format(path.read_bytes()[:64]) is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"blocked_extensions": ("mp4",)}, "invalid blocked extension 'mp4'"),
        ({"blocked_kinds": ("movies",)}, "invalid blocked file kind 'movies'"),
    ],
)
def test_invalid_policy_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DownloadPolicy(**kwargs)
