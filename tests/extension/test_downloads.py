"""Video, array and renamed files are not served; every block is audited."""

from __future__ import annotations

import base64
import html
import os
import threading

import pytest
import requests

from tests.extension.conftest import EnclaveServer

BLOCKED = {
    # path: expected words of the reason
    "clip.mp4": "files ending in .mp4 are blocked",
    "clip.txt": "its content is MP4/MOV (ISO base media) (video)",
    "frames.npy": "files ending in .npy are blocked",
    "frames.dat": "its content is NumPy array (array)",
}
ALLOWED = {"table.csv": "frame,mean", "results.ipynb": '"nbformat": 4'}


def blocked_events(server: EnclaveServer, path: str, route: str) -> list:
    return [
        event
        for event in server.audit_log.events(action="download.blocked")
        if event.target == path and event.detail["route"] == route
    ]


@pytest.mark.parametrize("path", sorted(BLOCKED))
def test_files_route_blocks(enclave_server: EnclaveServer, path: str) -> None:
    before = len(blocked_events(enclave_server, path, "files"))

    response = enclave_server.get(f"/files/{path}")
    download = enclave_server.get(f"/files/{path}", params={"download": "1"})
    head = requests.head(
        f"{enclave_server.base_url}/files/{path}",
        headers={"Authorization": f"token {enclave_server.token}"},
        timeout=60,
    )

    assert response.status_code == 403
    assert download.status_code == 403
    assert head.status_code == 403
    page = html.unescape(response.text)
    assert f"Download of {path!r} is blocked" in page
    assert BLOCKED[path] in page
    events = blocked_events(enclave_server, path, "files")
    assert len(events) == before + 3
    assert events[-1].actor == enclave_server.hub_user
    assert events[-1].outcome == "denied"
    assert events[-1].detail["reason"] == BLOCKED[path]


@pytest.mark.parametrize("path", sorted(BLOCKED))
def test_contents_api_blocks(enclave_server: EnclaveServer, path: str) -> None:
    for params in ({"content": "1", "format": "base64"}, {"content": "1"}):
        response = enclave_server.get(f"/api/contents/{path}", params=params)

        assert response.status_code == 403
        assert BLOCKED[path] in response.json()["message"]
    assert len(blocked_events(enclave_server, path, "contents")) >= 2


@pytest.mark.parametrize("path", sorted(BLOCKED))
def test_view_and_nbconvert_block(enclave_server: EnclaveServer, path: str) -> None:
    view = enclave_server.get(f"/view/{path}")
    convert = enclave_server.get(f"/nbconvert/html/{path}")

    assert view.status_code == 403
    assert convert.status_code == 403
    assert blocked_events(enclave_server, path, "view")
    assert blocked_events(enclave_server, path, "nbconvert")


def test_metadata_still_listed(enclave_server: EnclaveServer) -> None:
    listing = enclave_server.get("/api/contents/")
    model = enclave_server.get("/api/contents/clip.mp4", params={"content": "0"})

    assert listing.status_code == 200
    names = {item["name"] for item in listing.json()["content"]}
    assert set(BLOCKED) <= names
    assert model.status_code == 200
    assert model.json()["content"] is None


@pytest.mark.parametrize("path", sorted(ALLOWED))
def test_ordinary_files_served(enclave_server: EnclaveServer, path: str) -> None:
    files = enclave_server.get(f"/files/{path}")
    contents = enclave_server.get(f"/api/contents/{path}", params={"content": "1"})
    encoded = enclave_server.get(
        f"/api/contents/{path}",
        params={"content": "1", "format": "base64", "type": "file"},
    )

    assert files.status_code == 200
    assert ALLOWED[path] in files.text
    assert contents.status_code == 200
    assert encoded.status_code == 200
    assert ALLOWED[path] in base64.b64decode(encoded.json()["content"]).decode()


def test_notebook_converts(enclave_server: EnclaveServer) -> None:
    response = enclave_server.get("/nbconvert/html/results.ipynb")

    assert response.status_code == 200
    assert "Results" in response.text


def test_copy_of_blocked_file_rejected(enclave_server: EnclaveServer) -> None:
    response = enclave_server.post("/api/contents/", {"copy_from": "clip.mp4"})

    assert response.status_code == 403
    copies = [path for path in enclave_server.root_dir.iterdir() if "Copy" in path.name]
    assert copies == []


def test_files_route_swap_race_never_sends_video(
    enclave_server: EnclaveServer,
) -> None:
    # A cell could swap a video into place between the check of a harmless
    # file and the read that sends it. The bytes sent must be those checked.
    root = enclave_server.root_dir
    video = (root / "clip.txt").read_bytes()
    harmless = b"frame,mean\n" * 1000
    target = root / "race.txt"
    target.write_bytes(harmless)
    os.chown(target, enclave_server.user.uid, enclave_server.user.gid)
    stop = threading.Event()

    def swap() -> None:
        staged = [root / "race-a.tmp", root / "race-b.tmp"]
        staged[0].write_bytes(harmless)
        staged[1].write_bytes(video)
        index = 0
        while not stop.is_set():
            copy = root / f"race-{index % 2}.swap"
            copy.write_bytes(staged[index % 2].read_bytes())
            os.replace(copy, target)
            index += 1

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        statuses = []
        for _ in range(150):
            response = enclave_server.get("/files/race.txt")
            statuses.append(response.status_code)
            if response.status_code == 200:
                assert not response.content.startswith(video[:12])
                assert response.content == harmless
    finally:
        stop.set()
        swapper.join(timeout=10)

    assert set(statuses) <= {200, 403, 404}
