"""The broker process: identity, authorisation, audit, limits and decoding."""

from __future__ import annotations

import io
import os
import socket
import stat
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array
from sqlalchemy import text

from enclave.broker.identity import peer_credentials
from enclave.data import BrokerClient
from enclave.errors import ConfigurationError, PermissionDenied
from tests.fixtures.broker import (
    ARCHIVE_DATASET,
    CURRENT_PROJECT,
    DATASET,
    ENDED_PROJECT,
    OsUser,
    RunningBroker,
    decord_frames,
    run_as,
)

READ_ALL = f"""
from enclave.data import BrokerClient
result = BrokerClient().read_frames({DATASET!r}, "clips/0001", 0, 120)
"""


def test_member_reads_decoded_frames(broker: RunningBroker, member: OsUser) -> None:
    expected = decord_frames(broker.enclave.plaintext(DATASET, "clips/0001"))

    outcome = run_as(member, broker.socket_path, READ_ALL)

    assert outcome.error is None, outcome.message
    assert outcome.result.dtype == np.uint8
    assert outcome.result.shape == (120, 144, 176, 3)
    assert np.array_equal(outcome.result, expected)


def test_read_is_audited_with_frame_range(
    broker: RunningBroker, member: OsUser
) -> None:
    code = f"""
    from enclave.data import BrokerClient
    result = BrokerClient().read_frames({DATASET!r}, "clips/0001", 10, 26).shape
    """

    outcome = run_as(member, broker.socket_path, code)

    assert outcome.result == [16, 144, 176, 3]
    reads = broker.enclave.audit.events(
        actor=member.hub_name, action="data.read", outcome="success"
    )
    ranges = [event.detail["frames"] for event in reads]
    assert [10, 26] in ranges
    event = reads[ranges.index([10, 26])]
    assert event.outcome == "success"
    assert event.source == "broker"
    assert event.project == CURRENT_PROJECT
    assert event.dataset == DATASET
    assert event.detail["path"] == "clips/0001"
    assert broker.enclave.audit.verify().ok


def test_list_shows_only_current_datasets(
    broker: RunningBroker, member: OsUser
) -> None:
    code = """
    from enclave.data import BrokerClient
    result = [(d["name"], d["project"]) for d in BrokerClient().list_datasets()]
    """

    outcome = run_as(member, broker.socket_path, code)

    assert outcome.result == [[DATASET, CURRENT_PROJECT]]


def test_describe_lists_items(broker: RunningBroker, member: OsUser) -> None:
    code = f"""
    from enclave.data import BrokerClient
    result = BrokerClient().describe({DATASET!r})
    """

    summary = run_as(member, broker.socket_path, code).result

    items = {item["path"]: item for item in summary["items"]}
    assert sorted(items) == ["clips/0001", "loops/0001"]
    clip = items["clips/0001"]
    assert (clip["frame_count"], clip["height"], clip["width"], clip["channels"]) == (
        120,
        144,
        176,
        3,
    )
    assert clip["media_type"] == "video"
    assert clip["fps"] == pytest.approx(29.97, abs=0.01)
    assert len(clip["timestamps"]) == 120
    assert clip["timestamps"][0] == 0.0
    assert clip["timestamps"][30] == pytest.approx(30 / 29.97, abs=1e-3)
    assert summary["project"] == CURRENT_PROJECT
    assert summary["limits"]["max_frames_per_request"] == 256


def test_dicom_frames_are_rgb(broker: RunningBroker, member: OsUser) -> None:
    plaintext = broker.enclave.plaintext(DATASET, "loops/0001")
    dataset = pydicom.dcmread(io.BytesIO(plaintext))
    assert dataset.PhotometricInterpretation.startswith("YBR")
    expected = pixel_array(dataset)  # converted from YBR to RGB
    code = f"""
    from enclave.data import BrokerClient
    client = BrokerClient()
    items = client.describe({DATASET!r})["items"]
    item = [i for i in items if i["path"] == "loops/0001"][0]
    result = {{"frames": client.read_frames({DATASET!r}, "loops/0001", 0, 30),
               "fps": item["fps"], "media_type": item["media_type"]}}
    """

    outcome = run_as(member, broker.socket_path, code)

    assert outcome.error is None, outcome.message
    assert outcome.result["media_type"] == "dicom"
    assert outcome.result["fps"] == pytest.approx(30.0, abs=0.01)
    assert outcome.result["frames"].shape == (30, 240, 320, 3)
    assert np.array_equal(outcome.result["frames"], expected)


def test_outsider_is_denied_and_audited(
    broker: RunningBroker, outsider: OsUser
) -> None:
    code = f"""
    from enclave.data import BrokerClient
    result = BrokerClient().read_frames({DATASET!r}, "clips/0001", 0, 4)
    """

    outcome = run_as(outsider, broker.socket_path, code)

    assert outcome.error == "PermissionDenied"
    assert f"dataset {DATASET!r} does not exist or no current project" in (
        outcome.message
    )
    denied = broker.enclave.audit.events(actor=outsider.hub_name, outcome="denied")
    assert [event.action for event in denied] == ["data.read"]
    assert denied[0].dataset == DATASET
    assert "not a member" in denied[0].detail["reason"]


PROBE = """
import http.client, json, socket
result = {}
for name in ("@@NAME@@", "no-such-dataset"):
    frames = f"/v1/datasets/{name}/items/clips/0001/frames?start=0&stop=1"
    for path in (f"/v1/datasets/{name}", frames):
        connection = http.client.HTTPConnection("localhost")
        connection.sock = socket.socket(socket.AF_UNIX)
        connection.sock.connect("@@SOCKET@@")
        connection.request("GET", path)
        response = connection.getresponse()
        body = json.loads(response.read())
        kind = "frames" if "frames" in path else "describe"
        result[f"{name} {kind}"] = [response.status, body["error"], body["message"]]
"""


def test_dataset_names_cannot_be_probed(
    broker: RunningBroker, outsider: OsUser
) -> None:
    # An existing dataset that the user may not read and a name that does not
    # exist get the same status and message, apart from the name itself.
    code = PROBE.replace("@@NAME@@", DATASET).replace(
        "@@SOCKET@@", str(broker.socket_path)
    )

    responses = run_as(outsider, broker.socket_path, code).result

    for kind in ("describe", "frames"):
        existing = responses[f"{DATASET} {kind}"]
        unknown = responses[f"no-such-dataset {kind}"]
        assert existing[0] == 403
        assert unknown[0] == 403
        assert existing[1] == "permission_denied"
        assert unknown[1] == "permission_denied"
        assert existing[2].replace(DATASET, "NAME") == unknown[2].replace(
            "no-such-dataset", "NAME"
        )
        assert "does not exist or no current project" in unknown[2]
    for name, reason in ((DATASET, "not a member"), ("no-such-dataset", "not found")):
        denied = broker.enclave.audit.events(
            actor=outsider.hub_name, dataset=name, outcome="denied"
        )
        assert {event.action for event in denied} >= {"data.list", "data.read"}
        assert all(reason in event.detail["reason"] for event in denied)
    assert (
        broker.enclave.audit.events(
            actor=outsider.hub_name, action="data.read", outcome="success"
        )
        == []
    )


def test_outsider_lists_nothing(broker: RunningBroker, outsider: OsUser) -> None:
    code = """
    from enclave.data import BrokerClient
    result = BrokerClient().list_datasets()
    """

    assert run_as(outsider, broker.socket_path, code).result == []


def test_ended_project_is_refused(broker: RunningBroker, member: OsUser) -> None:
    code = f"""
    from enclave.data import BrokerClient
    result = BrokerClient().read_frames({ARCHIVE_DATASET!r}, "clips/0001", 0, 4)
    """

    outcome = run_as(member, broker.socket_path, code)

    assert outcome.error == "PermissionDenied"
    assert f"project {ENDED_PROJECT!r} ended on" in outcome.message
    denied = broker.enclave.audit.events(
        actor=member.hub_name, dataset=ARCHIVE_DATASET, outcome="denied"
    )
    assert denied, "the refusal was not audited"


def test_headers_do_not_change_identity(
    broker: RunningBroker, member: OsUser, outsider: OsUser
) -> None:
    code = f"""
    import http.client, json, socket
    connection = http.client.HTTPConnection("localhost")
    connection.sock = socket.socket(socket.AF_UNIX)
    connection.sock.connect({str(broker.socket_path)!r})
    connection.request(
        "GET",
        "/v1/datasets/{DATASET}/items/clips/0001/frames?start=0&stop=1",
        headers={{"X-Enclave-User": {member.hub_name!r},
                  "X-Forwarded-User": {member.hub_name!r},
                  "Authorization": "token " + {member.hub_name!r}}},
    )
    response = connection.getresponse()
    result = [response.status, json.loads(response.read())["error"]]
    """

    outcome = run_as(outsider, broker.socket_path, code)

    assert outcome.result == [403, "permission_denied"]


def test_root_is_not_a_hub_user(broker: RunningBroker) -> None:
    client = BrokerClient(broker.socket_path)

    with pytest.raises(PermissionDenied, match="'root' is not a hub user"):
        client.list_datasets()


BAD_REQUESTS = f"""
from enclave.data import BrokerClient
client = BrokerClient()
result = {{}}
cases = {{
    "past_end": ({DATASET!r}, "clips/0001", 100, 121),
    "empty": ({DATASET!r}, "clips/0001", 5, 5),
    "reversed": ({DATASET!r}, "clips/0001", 9, 3),
    "negative": ({DATASET!r}, "clips/0001", -1, 3),
    "too_many": ({DATASET!r}, "clips/0001", 0, 257),
    "unknown_item": ({DATASET!r}, "clips/9999", 0, 1),
    "unknown_dataset": ("no-such-dataset", "clips/0001", 0, 1),
}}
for label, args in cases.items():
    try:
        client.read_frames(*args)
        result[label] = ["no error", ""]
    except Exception as exc:
        result[label] = [type(exc).__name__, str(exc)]
try:
    client._get("/v1/datasets/{DATASET}/items/clips/0001/frames?start=a&stop=3")
except Exception as exc:
    result["not_integer"] = [type(exc).__name__, str(exc)]
try:
    client._get("/v1/datasets/{DATASET}/items/clips/0001/frames?start=0")
except Exception as exc:
    result["missing_stop"] = [type(exc).__name__, str(exc)]
"""


def test_bad_requests_get_clear_errors(broker: RunningBroker, member: OsUser) -> None:
    outcome = run_as(member, broker.socket_path, BAD_REQUESTS)
    errors = outcome.result

    assert errors["past_end"] == [
        "ValidationError",
        "stop=121 is past the end of the item, which has 120 frames",
    ]
    assert errors["empty"][0] == "ValidationError"
    assert "stop must be greater than start" in errors["empty"][1]
    assert errors["reversed"][0] == "ValidationError"
    assert errors["negative"][0] == "ValidationError"
    assert "start=-1 is negative" in errors["negative"][1]
    assert errors["too_many"][0] == "ValidationError"
    assert "at most 256" in errors["too_many"][1]
    assert errors["unknown_item"] == [
        "NotFound",
        f"dataset {DATASET!r} has no item 'clips/9999'",
    ]
    assert errors["unknown_dataset"][0] == "PermissionDenied"
    assert "'no-such-dataset' does not exist or no current project" in (
        errors["unknown_dataset"][1]
    )
    assert errors["not_integer"][0] == "ValidationError"
    assert "start='a' is not an integer" in errors["not_integer"][1]
    assert errors["missing_stop"][0] == "ValidationError"
    assert "missing query parameter 'stop'" in errors["missing_stop"][1]


def test_audit_failure_sends_no_frames(
    private_broker: RunningBroker, member: OsUser
) -> None:
    code = f"""
    from enclave.data import BrokerClient
    result = BrokerClient().read_frames({DATASET!r}, "clips/0001", 0, 8).shape
    """
    assert run_as(member, private_broker.socket_path, code).result == [8, 144, 176, 3]
    with private_broker.enclave.catalog.engine.begin() as connection:
        connection.execute(text("DROP TABLE audit_events"))

    outcome = run_as(member, private_broker.socket_path, code)

    assert outcome.error == "AuditUnavailable"
    assert "audit trail cannot be written" in outcome.message
    assert outcome.result is None


def test_socket_is_open_to_all_users(broker: RunningBroker) -> None:
    socket_mode = stat.S_IMODE(os.stat(broker.socket_path).st_mode)
    folder_mode = stat.S_IMODE(os.stat(broker.socket_path.parent).st_mode)

    assert stat.S_ISSOCK(os.stat(broker.socket_path).st_mode)
    assert socket_mode == 0o666
    assert folder_mode == 0o755


def test_user_cannot_read_vault_or_keys(broker: RunningBroker, member: OsUser) -> None:
    settings = broker.enclave.settings
    blobs = sorted(str(p) for p in settings.vault_dir.rglob("*") if p.is_file())
    paths = [str(settings.master_key_path), str(settings.audit_key_path), *blobs]
    assert blobs, "the vault holds no blob to try"
    code = f"""
    result = {{}}
    for path in {paths!r}:
        try:
            open(path, "rb").read(1)
            result[path] = "read"
        except PermissionError:
            result[path] = "permission denied"
    """

    outcome = run_as(member, broker.socket_path, code)

    assert outcome.result == {path: "permission denied" for path in paths}


def test_health_needs_no_identity(broker: RunningBroker) -> None:
    assert BrokerClient(broker.socket_path).health() == {"status": "ok"}


def test_peer_credentials_of_socketpair() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        peer = peer_credentials(left)

    assert peer.pid == os.getpid()
    assert peer.uid == os.getuid()
    assert peer.gid == os.getgid()


def test_peer_credentials_need_unix_socket() -> None:
    with socket.socket(socket.AF_INET) as tcp:
        with pytest.raises(PermissionDenied, match="only on a Unix socket"):
            peer_credentials(tcp)


CONCURRENT_READS = f"""
import random
from concurrent.futures import ThreadPoolExecutor
from enclave.data import BrokerClient
client = BrokerClient()
rng = random.Random(7)
ranges = []
for _ in range(24):
    start = rng.randrange(0, 119)
    ranges.append((start, min(120, start + rng.randrange(1, 40))))
with ThreadPoolExecutor(8) as pool:
    arrays = list(pool.map(
        lambda r: client.read_frames({DATASET!r}, "clips/0001", *r), ranges
    ))
result = {{"ranges": ranges, "arrays": arrays}}
"""


def test_concurrent_reads_are_exact(broker: RunningBroker, member: OsUser) -> None:
    expected = decord_frames(broker.enclave.plaintext(DATASET, "clips/0001"))

    outcome = run_as(member, broker.socket_path, CONCURRENT_READS)

    assert outcome.error is None, outcome.message
    for (start, stop), frames in zip(
        outcome.result["ranges"], outcome.result["arrays"], strict=True
    ):
        assert np.array_equal(frames, expected[start:stop]), (start, stop)


def test_missing_socket_names_the_fix(tmp_path: Path) -> None:
    client = BrokerClient(tmp_path / "absent.sock")

    with pytest.raises(
        ConfigurationError, match="no data broker socket at .*absent.sock"
    ):
        client.list_datasets()
