"""The download policy recognises video, DICOM, array and image files by content."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
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


def padded_payloads(video: bytes) -> dict[str, bytes]:
    """Return the video hidden in ways that a leading-bytes check misses."""
    framed = b"x" + video
    return {
        "one byte in front": framed,
        "base64": b"result: " + base64.b64encode(framed),
        "wrapped base64": base64.encodebytes(video[:6000]),
        "URL-safe base64": base64.urlsafe_b64encode(framed[:6000]),
        "base64 of base64": base64.b64encode(base64.b64encode(framed[:3000])),
        "hex": framed[:6000].hex().encode(),
        "spaced hex": framed[:600].hex(" ").encode(),
        "0x hex": ", ".join(f"0x{byte:02x}" for byte in framed[:300]).encode(),
        "bytes repr": repr(framed[:3000]).encode(),
        "decimal list": str(list(framed[:200])).encode(),
        "latin-1 text as UTF-8": framed[:3000].decode("latin-1").encode("utf-8"),
    }


@pytest.mark.parametrize(
    "name", sorted(padded_payloads(b"\x00\x00\x00\x18ftypisom"))
)
def test_embedded_video_blocked(carphone_path: Path, name: str) -> None:
    data = padded_payloads(carphone_path.read_bytes())[name]

    blocked = DownloadPolicy().check_content("notes.txt", data)

    assert blocked is not None
    assert "MP4/MOV (ISO base media) (video)" in blocked.reason


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "its content is PNG (image)"),
        (b"ab\x93NUMPY\x01\x00v\x00{'descr'", "NumPy array (array) at byte 2"),
        (b"x" + gzip.compress(b"frames" * 100), "gzip (archive) at byte 1"),
        (bytes(range(256)) * 4, "binary data of no allowed format"),
        (base64.b64encode(bytes(range(256)) * 4), "binary data of no allowed format"),
    ],
)
def test_content_findings(data: bytes, expected: str) -> None:
    blocked = DownloadPolicy().check_content("notes.txt", data)

    assert blocked is not None
    assert expected in blocked.reason


@pytest.mark.parametrize(
    "content",
    [
        "frame,mean\n" + "".join(f"{i},{i * 1.5:f}\n" for i in range(5000)),
        "\n".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(300)),
        "-" * 3000,
        "帧,平均亮度\n0,12.5\n" * 200,
        base64.b64encode(b"a plain text note about frame 12. " * 40).decode(),
        "Traceback (most recent call last):\n  File \"/usr/lib/python3/x.py\"\n" * 50,
        str(list(range(256))),
        "deadbeefcafe1234 " * 2000,
        " ".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(300)),
    ],
)
def test_analysis_text_allowed(content: str) -> None:
    assert DownloadPolicy().check_content("out.txt", content.encode()) is None


def test_gbk_text_allowed() -> None:
    data = ("帧,平均亮度\n0,12.5\n" * 200).encode("gb18030")

    assert DownloadPolicy().check_content("out.csv", data) is None


def test_allowed_kind_still_scanned_inside(carphone_path: Path) -> None:
    image = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image, format="PNG")
    policy = DownloadPolicy(blocked_kinds=("video", "array", "binary"))
    smuggled = image.getvalue() + carphone_path.read_bytes()[:4000]

    assert policy.check_content("plot.dat", image.getvalue()) is None
    blocked = policy.check_content("plot.dat", smuggled)
    assert blocked is not None
    assert "MP4/MOV" in blocked.reason


def test_size_limits() -> None:
    policy = DownloadPolicy(max_file_bytes=100, max_message_bytes=50)

    file_blocked = policy.check_content("a.txt", b"a" * 101)
    message_blocked = policy.check_message("kernels/k/stream", [{}], [], 51)

    assert file_blocked is not None
    assert "larger than the 100 bytes" in file_blocked.reason
    assert message_blocked is not None
    assert "larger than the 50 bytes" in message_blocked.reason
    assert policy.check_message("kernels/k/stream", [{"text": "ok"}], [], 50) is None


def test_message_buffers_scanned() -> None:
    policy = DownloadPolicy()
    parts = [{"msg_type": "comm_msg"}, {}, {}, {"data": {"method": "update"}}]

    buffers = [b"x\x89PNG\r\n\x1a\n"]

    blocked = policy.check_message("kernels/k/comm_msg", parts, buffers, 9)

    assert blocked is not None
    assert "PNG (image)" in blocked.reason


def test_notebook_outputs_replaced(carphone_path: Path) -> None:
    payload = base64.b64encode(b"x" + carphone_path.read_bytes()[:3000]).decode()
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "source": "print(1)",
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": payload},
                    {"output_type": "stream", "name": "stdout", "text": "1\n"},
                ],
            }
        ],
        "metadata": {},
    }
    model = {"type": "notebook", "content": notebook}

    blocked = DownloadPolicy().check_model("a.ipynb", model)

    assert blocked is None
    outputs = notebook["cells"][0]["outputs"]
    assert "This output was removed because" in outputs[0]["text"]
    assert outputs[1]["text"] == "1\n"
    [removed] = model["enclave_removed_outputs"]
    assert removed.path == "a.ipynb (cell 1)"
    assert "MP4/MOV" in removed.reason


def test_notebook_attachments_removed() -> None:
    image = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image, format="PNG")
    encoded = base64.b64encode(image.getvalue()).decode()
    cell = {
        "cell_type": "markdown",
        "source": "![frame](attachment:frame.png)",
        "attachments": {"frame.png": {"image/png": encoded}},
    }
    model = {"type": "notebook", "content": {"cells": [cell], "metadata": {}}}

    blocked = DownloadPolicy().check_model("a.ipynb", model)

    assert blocked is None
    assert cell["attachments"] == {}
    [removed] = model["enclave_removed_outputs"]
    assert removed.path == "a.ipynb (cell 1) frame.png"
    assert "PNG (image)" in removed.reason
