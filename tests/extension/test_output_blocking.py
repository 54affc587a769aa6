"""Attacks that carry a file out inside outputs, text files and notebooks.

Each payload starts with a harmless byte, or encodes the file as text, so
that a check of the leading bytes alone would let it through.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from jupyterlab_server.workspaces_handler import slugify
from PIL import Image

from tests.extension.conftest import EnclaveServer
from tests.extension.kernel_client import ExecuteResult, KernelClient

NOTE = "[enclave] Output of the kernel was not sent because"


@pytest.fixture(scope="module")
def payloads(enclave_server: EnclaveServer) -> dict[str, Path]:
    """Write the payload files into the server's root folder, owned by its user."""
    root = enclave_server.root_dir
    video = (root / "clip.txt").read_bytes()
    image = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(image, format="PNG")
    files = {
        "padded-video.txt": b"x" + video,
        "base64-video.txt": b"notes: " + base64.b64encode(video),
        "hex-array.txt": (root / "frames.dat").read_bytes().hex().encode(),
        "raw-frames.bin": np.random.default_rng(7).integers(
            0, 256, (4, 32, 32, 3), dtype=np.uint8
        ).tobytes(),
        "plot.dat": image.getvalue(),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
        os.chown(root / name, enclave_server.user.uid, enclave_server.user.gid)
    return {name: root / name for name in files}


def kernel_blocks(server: EnclaveServer, kernel_id: str) -> list:
    return [
        event
        for event in server.audit_log.events(action="download.blocked")
        if event.detail["route"] == "kernel"
        and event.target.startswith(f"kernels/{kernel_id}/")
    ]


def received_text(result: ExecuteResult) -> str:
    return json.dumps([result.reply, *result.iopub], ensure_ascii=False)


def notes(result: ExecuteResult) -> list[str]:
    return [
        msg["content"]["text"]
        for msg in result.of_type("stream")
        if msg["content"]["text"].startswith(NOTE)
    ]


# The kernel reads the first 100 kB of the MP4, below the message size limit.
KERNEL_ATTACKS = {
    # name: (cell code, words of the reason)
    "stream raw bytes": (
        "print('x' + open({video!r}, 'rb').read(100_000).decode('latin-1'))",
        "MP4/MOV (ISO base media) (video) in characters that represent bytes",
    ),
    "stream base64": (
        "import base64\n"
        "print('x' + base64.b64encode(open({video!r}, 'rb').read(100_000)).decode())",
        "MP4/MOV (ISO base media) (video) encoded as base64",
    ),
    "stream bytes repr": (
        "print(open({video!r}, 'rb').read()[:4000])",
        "MP4/MOV (ISO base media) (video) encoded as Python bytes escapes",
    ),
    "execute_result hex": (
        "'x' + open({array!r}, 'rb').read().hex()",
        "NumPy array (array) encoded as hex",
    ),
    "display_data text": (
        "import base64\nfrom IPython.display import display\n"
        "data = base64.b64encode(open({video!r}, 'rb').read(100_000)).decode()\n"
        "display({{'text/plain': 'y' + data}}, raw=True)",
        "MP4/MOV (ISO base media) (video) encoded as base64",
    ),
    "display_data image": (
        "from IPython.display import Image, display\n"
        "display(Image(data=open({image!r}, 'rb').read(), format='png'))",
        "PNG (image) encoded as base64",
    ),
    "stream decimal bytes": (
        "print(list(open({video!r}, 'rb').read()[:64]))",
        "MP4/MOV (ISO base media) (video) as decimal byte values",
    ),
    "stream raw pixels base64": (
        "import base64\n"
        "print(base64.b64encode(open({pixels!r}, 'rb').read()).decode())",
        "binary data of no allowed format encoded as base64",
    ),
    "oversized stream": (
        "print('a' * 600_000)",
        "larger than the 524288 bytes the server scans",
    ),
}


@pytest.mark.parametrize("attack", sorted(KERNEL_ATTACKS))
def test_kernel_output_attack_blocked(
    enclave_server: EnclaveServer,
    payloads: dict[str, Path],
    kernel_id: str,
    client: KernelClient,
    attack: str,
) -> None:
    template, reason = KERNEL_ATTACKS[attack]
    code = template.format(
        video=str(payloads["padded-video.txt"].parent / "clip.txt"),
        array=str(payloads["padded-video.txt"].parent / "frames.dat"),
        image=str(payloads["plot.dat"]),
        pixels=str(payloads["raw-frames.bin"]),
    )
    before = len(kernel_blocks(enclave_server, kernel_id))

    result = client.execute(code)

    assert result.reply["content"]["status"] == "ok"
    [note] = notes(result)
    assert reason in note
    assert "request an export through the airlock" in note
    received = received_text(result)
    assert "ZnR5c" not in received, "base64 of the MP4 header reached the client"
    assert "66747970" not in received, "hex of the MP4 header reached the client"
    assert "iVBORw0KGgo" not in received, "base64 of a PNG reached the client"
    assert "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" not in received
    # The server posts the event after it sends the note.
    deadline = time.monotonic() + 10
    events = kernel_blocks(enclave_server, kernel_id)
    while len(events) == before and time.monotonic() < deadline:
        time.sleep(0.1)
        events = kernel_blocks(enclave_server, kernel_id)
    assert len(events) == before + 1
    assert reason in events[-1].detail["reason"]
    assert events[-1].actor == enclave_server.hub_user
    assert events[-1].outcome == "denied"


LEGITIMATE_CELLS = {
    "numbers": ("print(sum(range(10)), 3.25)", "45 3.25"),
    "table": (
        "import pandas as pd\n"
        "pd.DataFrame({'frame': range(30), 'mean': [i * 1.5 for i in range(30)]})",
        "<table",
    ),
    "array": (
        "import numpy as np\nnp.arange(200, dtype=np.uint8).reshape(10, 20)",
        "array([[",
    ),
    "digests": (
        "import hashlib\n"
        "for i in range(50): print(hashlib.sha256(str(i).encode()).hexdigest())",
        # SHA-256 of "0"
        "5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9",
    ),
    "traceback": ("1 / 0", "ZeroDivisionError"),
    "chinese": ("print('平均亮度', 12.5)", "平均亮度 12.5"),
}


@pytest.mark.parametrize("cell", sorted(LEGITIMATE_CELLS))
def test_analysis_outputs_still_sent(client: KernelClient, cell: str) -> None:
    code, expected = LEGITIMATE_CELLS[cell]

    result = client.execute(code)

    assert notes(result) == []
    assert expected in received_text(result)


def contents_events(server: EnclaveServer, path: str, route: str) -> list:
    return [
        event
        for event in server.audit_log.events(action="download.blocked")
        if event.target.startswith(path) and event.detail["route"] == route
    ]


FILE_ATTACKS = {
    "padded-video.txt": "MP4/MOV (ISO base media) (video) at byte 1",
    "base64-video.txt": "MP4/MOV (ISO base media) (video) encoded as base64",
    "hex-array.txt": "NumPy array (array) encoded as hex",
    "raw-frames.bin": "binary data of no allowed format",
    "plot.dat": "its content is PNG (image)",
}


@pytest.mark.parametrize("name", sorted(FILE_ATTACKS))
def test_file_attack_blocked_on_every_route(
    enclave_server: EnclaveServer, payloads: dict[str, Path], name: str
) -> None:
    reason = FILE_ATTACKS[name]
    responses = {
        "contents": enclave_server.get(
            f"/api/contents/{name}", params={"content": "1"}
        ),
        "contents base64": enclave_server.get(
            f"/api/contents/{name}",
            params={"content": "1", "format": "base64", "type": "file"},
        ),
        "files": enclave_server.get(f"/files/{name}"),
        "download": enclave_server.get(f"/files/{name}", params={"download": "1"}),
        "view": enclave_server.get(f"/view/{name}"),
    }

    for route, response in responses.items():
        assert response.status_code == 403, route
        assert reason in response.text, route
    for route in ("contents", "files", "view"):
        assert contents_events(enclave_server, name, route), route


def notebook_with_output(output: dict, source: str = "x") -> dict:
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": 1,
                "id": "c1",
                "metadata": {},
                "outputs": [output],
                "source": source,
            },
            {
                "cell_type": "code",
                "execution_count": 2,
                "id": "c2",
                "metadata": {},
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": "mean 3.5\n"}
                ],
                "source": "print('mean', 3.5)",
            },
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def test_saved_notebook_output_attack_blocked(
    enclave_server: EnclaveServer, payloads: dict[str, Path]
) -> None:
    video = (enclave_server.root_dir / "clip.txt").read_bytes()
    payload = "x" + base64.b64encode(video).decode()
    name = f"leak-{uuid.uuid4().hex[:8]}.ipynb"
    output = {
        "output_type": "execute_result",
        "execution_count": 1,
        "data": {"text/plain": payload},
        "metadata": {},
    }
    saved = enclave_server.put(
        f"/api/contents/{name}",
        {"type": "notebook", "content": notebook_with_output(output)},
    )
    assert saved.status_code in (200, 201), saved.text

    model = enclave_server.get(f"/api/contents/{name}", params={"content": "1"})
    raw = enclave_server.get(f"/files/{name}")
    converted = enclave_server.get(f"/nbconvert/html/{name}")
    script = enclave_server.get(f"/nbconvert/script/{name}", params={"download": "1"})

    assert model.status_code == 200
    cells = model.json()["content"]["cells"]
    [note] = cells[0]["outputs"]
    assert note["output_type"] == "stream"
    assert "This output was removed because its content contains MP4/MOV" in (
        note["text"]
    )
    assert cells[1]["outputs"][0]["text"] == "mean 3.5\n"
    assert payload[:40] not in model.text
    for response in (raw, converted, script):
        assert response.status_code == 403
        assert payload[:40] not in response.text
    assert contents_events(enclave_server, f"{name} (cell 1)", "contents")
    assert contents_events(enclave_server, name, "files")
    assert contents_events(enclave_server, name, "nbconvert")


def test_notebook_source_attack_blocked(
    enclave_server: EnclaveServer, payloads: dict[str, Path]
) -> None:
    video = (enclave_server.root_dir / "clip.txt").read_bytes()
    name = f"source-{uuid.uuid4().hex[:8]}.ipynb"
    output = {"output_type": "stream", "name": "stdout", "text": "ok\n"}
    source = "# " + base64.b64encode(b"x" + video[:3000]).decode()
    notebook = notebook_with_output(output, source=source)
    path = enclave_server.root_dir / name
    path.write_text(json.dumps(notebook))
    os.chown(path, enclave_server.user.uid, enclave_server.user.gid)

    response = enclave_server.get(f"/api/contents/{name}", params={"content": "1"})

    assert response.status_code == 403
    assert "MP4/MOV (ISO base media) (video) encoded as base64" in (
        response.json()["message"]
    )


def test_ordinary_notebook_outputs_kept(enclave_server: EnclaveServer) -> None:
    name = f"plain-{uuid.uuid4().hex[:8]}.ipynb"
    output = {
        "output_type": "execute_result",
        "execution_count": 1,
        "data": {"text/plain": "   frame  mean\n0      0   1.5\n1      1   2.5"},
        "metadata": {},
    }
    saved = enclave_server.put(
        f"/api/contents/{name}",
        {"type": "notebook", "content": notebook_with_output(output)},
    )
    assert saved.status_code in (200, 201), saved.text

    model = enclave_server.get(f"/api/contents/{name}", params={"content": "1"})
    raw = enclave_server.get(f"/files/{name}")

    assert model.status_code == 200
    outputs = model.json()["content"]["cells"][0]["outputs"]
    assert outputs[0]["data"]["text/plain"].startswith("   frame  mean")
    assert raw.status_code == 200


def write_as_user(server: EnclaveServer, path: Path, text: str) -> None:
    """Write ``text`` to ``path`` under the user's home, as code in a kernel could."""
    home = server.user.home
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    for part in [path, *path.parents]:
        if part == home:
            break
        os.chown(part, server.user.uid, server.user.gid)


def test_user_config_routes_scanned(enclave_server: EnclaveServer) -> None:
    # Workspaces, lab settings and frontend config are JSON files in the
    # user's home that the browser can fetch, so a kernel could stage a file
    # there.
    video = (enclave_server.root_dir / "clip.txt").read_bytes()
    payload = "x" + base64.b64encode(video[:5000]).decode()
    config = enclave_server.user.home / ".jupyter"
    themes = "@jupyterlab/apputils-extension/themes.jupyterlab-settings"
    staged = {
        config / "nbconfig" / "leak.json": json.dumps({"a": payload}),
        config / "lab" / "workspaces" / f"{slugify('leak')}.jupyterlab-workspace": (
            json.dumps({"data": {"note": payload}, "metadata": {"id": "/leak"}})
        ),
        config / "lab" / "user-settings" / themes: "// " + payload + "\n{}\n",
    }
    for path, text in staged.items():
        write_as_user(enclave_server, path, text)
    try:
        responses = {
            "config": enclave_server.get("/api/config/leak"),
            "workspace": enclave_server.get("/lab/api/workspaces/leak"),
            "settings": enclave_server.get(
                "/lab/api/settings/@jupyterlab/apputils-extension:themes"
            ),
        }
    finally:
        for path in staged:
            path.unlink()

    for route, response in responses.items():
        assert response.status_code == 403, route
        assert "MP4/MOV (ISO base media) (video) encoded as base64" in (
            response.json()["message"]
        ), route
        assert payload[:40] not in response.text, route
    # The server posts the event after it sends the response.
    deadline = time.monotonic() + 10
    while not contents_events(enclave_server, "/api/config/leak", "api"):
        assert time.monotonic() < deadline, "the blocked response was not audited"
        time.sleep(0.1)


def test_lab_settings_still_served(enclave_server: EnclaveServer) -> None:
    settings = enclave_server.get("/lab/api/settings")
    config = enclave_server.get("/api/config/notebook")

    assert settings.status_code == 200
    assert settings.json()["settings"]
    assert config.status_code == 200


def test_user_lab_extension_not_served(enclave_server: EnclaveServer) -> None:
    # A lab extension folder in the user's home would serve any file a kernel
    # puts there, and JavaScript there would run in the browser.
    folder = enclave_server.user.home / ".local/share/jupyter/labextensions/stage"
    write_as_user(enclave_server, folder / "static" / "clip.js", "staged video")

    staged = enclave_server.get("/lab/extensions/stage/static/clip.js")
    installed = enclave_server.get("/lab/extensions/jupyterlab_pygments/package.json")

    assert staged.status_code == 404
    assert "staged video" not in staged.text
    assert installed.status_code == 200
