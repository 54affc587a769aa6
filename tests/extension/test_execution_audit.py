"""Every cell is audited before it runs, over both protocols, and fails closed."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
import requests
from jupyter_server.services.kernels.connection.base import serialize_msg_to_ws_v1

from tests.extension.conftest import EnclaveServer
from tests.extension.kernel_client import KernelClient


def executed_events(server: EnclaveServer, marker: str) -> list:
    return [
        event
        for event in server.audit_log.events(action="cell.execute")
        if marker in event.detail["code"]
    ]


def test_cell_audited_with_user(
    enclave_server: EnclaveServer, kernel_id: str, client: KernelClient
) -> None:
    marker = uuid.uuid4().hex
    code = f"print('{marker}'[:4], 6 * 7)"

    result = client.execute(code, cell_id="cell-7")

    assert result.reply["content"]["status"] == "ok"
    assert result.stdout == f"{marker[:4]} 42\n"
    [event] = executed_events(enclave_server, marker)
    assert event.actor == enclave_server.hub_user
    assert event.source == "jupyter-server"
    assert event.outcome == "success"
    assert event.target == kernel_id
    assert event.detail["code"] == code
    assert event.detail["cell_id"] == "cell-7"
    assert event.detail["session_id"] == client.session_id
    assert event.detail["msg_id"] == result.reply["parent_header"]["msg_id"]
    assert event.detail["channel"] == "shell"
    assert enclave_server.audit_log.verify().ok


def test_control_channel_execute_audited(
    enclave_server: EnclaveServer, client: KernelClient
) -> None:
    # ipykernel also executes an execute_request that arrives on the control
    # channel, so that channel is audited as well.
    marker = uuid.uuid4().hex

    result = client.execute(f"x = '{marker}'", channel="control")

    assert result.reply["content"]["status"] == "ok"
    [event] = executed_events(enclave_server, marker)
    assert event.detail["channel"] == "control"


def test_cells_keep_their_order(
    enclave_server: EnclaveServer, client: KernelClient
) -> None:
    marker = uuid.uuid4().hex
    client.execute(f"order_{marker} = []")
    msg_ids = [
        client.send(
            "execute_request",
            {"code": f"order_{marker}.append({index})", "silent": False},
        )
        for index in range(5)
    ]
    for msg_id in msg_ids:
        client.wait_for(msg_id, "execute_reply")

    result = client.execute(f"print(order_{marker})")

    assert result.stdout == "[0, 1, 2, 3, 4]\n"
    assert len(executed_events(enclave_server, marker)) == 7


def test_cell_not_run_without_collector(
    enclave_server: EnclaveServer, client: KernelClient
) -> None:
    side_effect = enclave_server.root_dir / f"ran-{uuid.uuid4().hex}"
    code = f"open({str(side_effect)!r}, 'w').close()"
    enclave_server.collector.stop()
    try:
        result = client.execute(code, cell_id="cell-9")
    finally:
        enclave_server.collector.start()

    content = result.reply["content"]
    assert content["status"] == "error"
    assert content["ename"] == "AuditUnavailable"
    assert (
        "code was not run because the audit trail did not record" in content["evalue"]
    )
    assert "audit collector at" in content["evalue"]
    assert "is unreachable" in content["evalue"]
    [error] = result.of_type("error")
    assert error["content"]["ename"] == "AuditUnavailable"
    time.sleep(1)
    assert not side_effect.exists()
    assert executed_events(enclave_server, side_effect.name) == []

    # With the collector back, the same kernel runs cells again.
    assert client.execute(code).reply["content"]["status"] == "ok"
    assert side_effect.exists()


def test_oversized_cell_not_run(
    enclave_server: EnclaveServer, client: KernelClient
) -> None:
    # The server under test runs with EnclaveServerApp.max_code_size=65536.
    marker = uuid.uuid4().hex
    code = f"print('{marker}')\n" + "#" * 70_000

    result = client.execute(code)

    content = result.reply["content"]
    assert content["status"] == "error"
    assert "larger than the audit limit of 65536 bytes" in content["evalue"]
    assert marker not in result.stdout
    assert executed_events(enclave_server, marker) == []


def test_kernel_has_no_network(enclave_server: EnclaveServer, kernel_id: str) -> None:
    client = KernelClient(
        enclave_server.base_url, enclave_server.token, kernel_id, "v1"
    )
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        code = (
            "import os, socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
            "    print('connected')\n"
            "except OSError as exc:\n"
            "    print('failed', type(exc).__name__)\n"
            "print(sorted(name for _, name in socket.if_nameindex()))\n"
            "print(os.getuid())\n"
            # Unix sockets, the way to the broker, work across the namespace.
            "unix = socket.socket(socket.AF_UNIX)\n"
            f"unix.connect({str(enclave_server.collector.socket_path)!r})\n"
            "unix.sendall(b'GET /health HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n')\n"
            "print(unix.recv(12).decode())\n"
        )
        result = client.execute(code)
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()
    client.close()

    lines = result.stdout.splitlines()
    assert lines[0] == "failed ConnectionRefusedError"
    assert lines[1] == "['lo']"
    assert lines[2] == str(enclave_server.user.uid)
    assert lines[3] == "HTTP/1.1 200"


FORGE = """
import json, socket
forged = {
    "action": "cell.execute", "kernel_id": "forged-kernel", "session_id": None,
    "cell_id": None, "msg_id": "forged", "code": "@@CODE@@"[::-1],
    "at": "2026-12-04T15:00:00+00:00",
}
body = json.dumps(forged).encode()
sock = socket.socket(socket.AF_UNIX)
sock.connect("@@SOCKET@@")
sock.sendall(b"POST /v1/events HTTP/1.1\\r\\nHost: audit\\r\\n"
             b"Content-Type: application/json\\r\\nConnection: close\\r\\n"
             + f"Content-Length: {len(body)}\\r\\n\\r\\n".encode() + body)
reply = b""
while chunk := sock.recv(65536):
    reply += chunk
print(reply.split(b"\\r\\n", 1)[0].decode())
print(json.loads(reply.partition(b"\\r\\n\\r\\n")[2])["message"])
"""


def test_kernel_cannot_forge_cell_events(
    enclave_server: EnclaveServer, kernel_id: str
) -> None:
    # Code in a kernel runs as the same OS user as the server, so the
    # collector's peer uid alone would accept its events as the user's own.
    marker = uuid.uuid4().hex
    forged_code = f"print('{marker}')"
    code = FORGE.replace("@@CODE@@", forged_code[::-1]).replace(
        "@@SOCKET@@", str(enclave_server.collector.socket_path)
    )
    client = KernelClient(
        enclave_server.base_url, enclave_server.token, kernel_id, "v1"
    )

    result = client.execute(code)
    client.close()

    lines = result.stdout.splitlines()
    assert lines[0] == "HTTP/1.1 403 Forbidden"
    assert "accepted only from the Jupyter server" in lines[1]
    events = enclave_server.audit_log.events(action="cell.execute")
    assert [event for event in events if event.target == "forged-kernel"] == []
    assert [event for event in events if event.detail["code"] == forged_code] == []
    [attack] = [event for event in events if marker[::-1] in event.detail["code"]]
    assert attack.target == kernel_id
    rejected = enclave_server.audit_log.events(action="audit.event_rejected")
    assert rejected[-1].actor == enclave_server.hub_user
    assert rejected[-1].target == "cell.execute"


def test_kernel_holds_no_server_token(
    enclave_server: EnclaveServer, kernel_id: str
) -> None:
    client = KernelClient(
        enclave_server.base_url, enclave_server.token, kernel_id, "v1"
    )
    code = (
        "import os, sys, IPython\n"
        "print(sorted(k for k in os.environ if 'TOKEN' in k or k.startswith('JUPYTERHUB_')))\n"
        "startup = os.path.join(IPython.paths.get_ipython_dir(), 'profile_default', 'startup')\n"
        "print(sorted(f for f in os.listdir(startup) if f.endswith(('.py', '.ipy'))) if os.path.isdir(startup) else [])\n"
        "print(IPython.paths.get_ipython_dir().startswith(os.path.expanduser('~')))\n"
        "print(sys.flags.no_user_site, os.environ.get('PYTHONNOUSERSITE'))\n"
    )

    result = client.execute(code)
    client.close()

    lines = result.stdout.splitlines()
    assert lines[0] == "[]", "the kernel can read the server's credentials"
    assert lines[1] == "[]", "the kernel runs planted IPython startup files"
    assert lines[2] == "False", "IPython reads its profile from the user's home"
    assert lines[3].endswith("1"), "the kernel loads the user's site-packages"


def test_only_enclave_kernel_spec(enclave_server: EnclaveServer) -> None:
    specs = enclave_server.get("/api/kernelspecs").json()

    assert specs["default"] == "enclave-python"
    assert list(specs["kernelspecs"]) == ["enclave-python"]


def test_plain_python_kernel_rejected(enclave_server: EnclaveServer) -> None:
    before = enclave_server.get("/api/kernels").json()
    kernel = enclave_server.post("/api/kernels", {"name": "python3"})
    session = enclave_server.post(
        "/api/sessions",
        {"path": "a.ipynb", "type": "notebook", "kernel": {"name": "python3"}},
    )
    after = enclave_server.get("/api/kernels").json()

    for response in (kernel, session):
        assert response.status_code == 403
        message = response.json()["message"]
        assert "Kernel spec 'python3' is not allowed" in message
        assert "start 'enclave-python' instead" in message
    assert after == before


def test_session_switch_to_plain_kernel_rejected(
    enclave_server: EnclaveServer,
) -> None:
    created = enclave_server.post(
        "/api/sessions",
        {"path": "b.ipynb", "type": "notebook", "kernel": {"name": "enclave-python"}},
    )
    assert created.status_code == 201, created.text
    session_id = created.json()["id"]

    switched = requests.patch(
        f"{enclave_server.base_url}/api/sessions/{session_id}",
        headers={"Authorization": f"token {enclave_server.token}"},
        data=json.dumps({"kernel": {"name": "python3"}}),
        timeout=60,
    )
    session = enclave_server.get(f"/api/sessions/{session_id}").json()

    assert switched.status_code == 403
    assert "Kernel spec 'python3' is not allowed" in switched.json()["message"]
    assert session["kernel"]["name"] == "enclave-python"


def test_terminals_disabled(enclave_server: EnclaveServer) -> None:
    assert enclave_server.get("/api/terminals").status_code == 404


def test_isolated_kernel_interrupt_and_restart(
    enclave_server: EnclaveServer, kernel_id: str
) -> None:
    # The server signals the kernel across the user namespace boundary.
    client = KernelClient(
        enclave_server.base_url, enclave_server.token, kernel_id, "v1"
    )
    msg_id = client.send("execute_request", {"code": "import time; time.sleep(60)"})
    time.sleep(2)

    interrupt = enclave_server.post(f"/api/kernels/{kernel_id}/interrupt", {})
    interrupted = client.wait_for(msg_id, "execute_reply", timeout=30)
    restart = enclave_server.post(f"/api/kernels/{kernel_id}/restart", {})
    client.close()

    assert interrupt.status_code == 204
    assert interrupted.reply["content"]["ename"] == "KeyboardInterrupt"
    assert restart.status_code == 200
    client = KernelClient(
        enclave_server.base_url, enclave_server.token, kernel_id, "v1"
    )
    result = client.execute("import socket; print(len(socket.if_nameindex()))")
    client.close()
    assert result.stdout == "1\n"


def test_malformed_request_dropped(
    enclave_server: EnclaveServer, client: KernelClient
) -> None:
    side_effect = enclave_server.root_dir / f"ran-{uuid.uuid4().hex}"
    header = {"msg_type": "execute_request", "session": client.session_id}
    content = {"code": f"open({str(side_effect)!r}, 'w').close()", "silent": False}
    if client.protocol == "v1":
        parts = [json.dumps(part).encode() for part in (header, {}, {}, content)]
        client.ws.send_binary(serialize_msg_to_ws_v1(parts, "shell"))
    else:
        message = {"header": header, "parent_header": {}, "metadata": {}}
        client.ws.send(json.dumps({**message, "content": content, "channel": "shell"}))

    # A well-formed request after it still runs, and the dropped one did not.
    assert client.execute("print('after')").stdout == "after\n"
    time.sleep(1)
    assert not side_effect.exists()
    assert "Dropped a malformed message" in enclave_server.server_log()
