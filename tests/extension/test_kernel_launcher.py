"""The kernel launcher isolates the network or refuses to start the kernel."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from enclave_server import kernel_launcher


@pytest.fixture
def exec_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append(argv))
    return calls


def test_kernel_environment_drops_credentials() -> None:
    server = {
        "JUPYTERHUB_API_TOKEN": "secret",
        "JPY_API_TOKEN": "secret",
        "JUPYTERHUB_USER": "alice",
        "PYTHONSTARTUP": "/home/alice/evil.py",
        "ENCLAVE_BROKER_SOCKET": "/run/enclave/broker.sock",
    }

    env = kernel_launcher.kernel_environment(server)

    assert "JUPYTERHUB_API_TOKEN" not in env
    assert "JPY_API_TOKEN" not in env
    assert "JUPYTERHUB_USER" not in env
    assert "PYTHONSTARTUP" not in env
    assert env["PYTHONNOUSERSITE"] == "1"
    assert os.listdir(env["IPYTHONDIR"]) == []
    assert env["ENCLAVE_BROKER_SOCKET"] == "/run/enclave/broker.sock"


def test_unshare_failure_stops_kernel(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exec_calls: list[list[str]],
) -> None:
    def fail(flags: int) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.delenv(kernel_launcher.ISOLATION_ENV, raising=False)
    monkeypatch.setattr(kernel_launcher, "_unshare", fail)

    status = kernel_launcher.main(["-f", "kernel.json"])

    assert status == 1
    assert exec_calls == []
    error = capsys.readouterr().err
    assert "the kernel was not started" in error
    assert "unshare failed: Operation not permitted" in error
    assert "ENCLAVE_KERNEL_ISOLATION=off" in error


def test_isolation_off_starts_kernel(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exec_calls: list[list[str]],
) -> None:
    monkeypatch.setenv(kernel_launcher.ISOLATION_ENV, "off")

    status = kernel_launcher.main(["-f", "kernel.json"])

    assert status == 0
    assert exec_calls == [
        [sys.executable, "-m", "ipykernel_launcher", "-f", "kernel.json"]
    ]
    assert "HAS network access" in capsys.readouterr().err


def test_invalid_setting_stops_kernel(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exec_calls: list[list[str]],
) -> None:
    monkeypatch.setenv(kernel_launcher.ISOLATION_ENV, "maybe")

    status = kernel_launcher.main(["-f", "kernel.json"])

    assert status == 2
    assert exec_calls == []
    assert "invalid ENCLAVE_KERNEL_ISOLATION='maybe'" in capsys.readouterr().err


def test_isolated_process_has_only_loopback() -> None:
    code = (
        "import socket\n"
        "from enclave_server.kernel_launcher import isolate_network\n"
        "isolate_network()\n"
        "print(sorted(name for _, name in socket.if_nameindex()))\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 5432), timeout=3)\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["['lo']", "ConnectionRefusedError"]


def test_isolated_process_cannot_read_parent_memory() -> None:
    # The server is outside the kernel's user namespace, so the kernel cannot
    # ptrace it or read its memory, although both run as the same OS user.
    code = (
        "import subprocess, time\n"
        "from enclave_server.kernel_launcher import isolate_network\n"
        "outside = subprocess.Popen(['sleep', '30'])\n"
        "time.sleep(0.2)\n"
        "start = int(open(f'/proc/{outside.pid}/maps').readline().split('-')[0], 16)\n"
        "def read():\n"
        "    try:\n"
        "        with open(f'/proc/{outside.pid}/mem', 'rb') as mem:\n"
        "            mem.seek(start)\n"
        "            mem.read(16)\n"
        "        return 'read'\n"
        "    except PermissionError:\n"
        "        return 'denied'\n"
        "before = read()\n"
        "isolate_network()\n"
        "print(before, read())\n"
        "outside.kill()\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["read", "denied"]
