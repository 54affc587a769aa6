"""Helpers shared by the extension and collector tests: OS users, the collector."""

from __future__ import annotations

import base64
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

SYSTEM_PYTHON = "/usr/bin/python3"
"""Interpreter that every OS user can run; posters use only its standard library."""

# Posts each base64-encoded body read from stdin (a JSON list) to the collector
# socket given in argv[1] and prints [[status, body], ...] as JSON.
POSTER = r"""
import base64, json, socket, sys
results = []
for body in json.load(sys.stdin):
    raw = base64.b64decode(body)
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(20)
    sock.connect(sys.argv[1])
    head = ("POST /v1/events HTTP/1.1\r\nHost: audit\r\nContent-Type: application/json"
            "\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(raw))
    sock.sendall(head.encode() + raw)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    status_line, _, rest = data.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2].decode()
    results.append([int(status_line.split()[1]), body])
print(json.dumps(results))
"""


@dataclass(frozen=True)
class OSUser:
    """An OS user created for one test module."""

    name: str
    uid: int
    gid: int
    home: Path


@contextmanager
def os_user(prefix: str = "enc-t") -> Iterator[OSUser]:
    """Create an OS user named ``prefix`` plus random hex; delete it afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating OS users needs root")
    name = f"{prefix}{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        entry = pwd.getpwnam(name)
        yield OSUser(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", "--remove", name], capture_output=True)


def runnable_by(user: OSUser, python: str) -> bool:
    """Return True if ``user`` can start ``python``."""
    result = subprocess.run(
        [python, "-c", "pass"],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        capture_output=True,
        cwd="/",
    )
    return result.returncode == 0


def python_for(user: OSUser) -> tuple[str, dict[str, str]]:
    """Return an interpreter with this environment's packages that ``user`` can run.

    The second item contains extra environment variables for that interpreter.
    """
    if runnable_by(user, sys.executable):
        return sys.executable, {}

    # NOTE: a venv built from an interpreter under /root (pyenv) cannot be run
    # by other users. The system interpreter of the same minor version loads
    # the same compiled packages, so it replaces the venv's interpreter. The
    # venv's packages and the source folders go on PYTHONPATH because .pth
    # files are not read from there.
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not (os.path.exists(system) and runnable_by(user, system)):
        pytest.skip(
            f"{sys.executable} cannot be run by other OS users and there is no "
            f"{system}; rebuild the venv from a system-wide Python "
            "(scripts/install.sh)"
        )
    paths = [
        sysconfig.get_paths()["purelib"],
        str(REPO_ROOT),
        str(REPO_ROOT / "extensions"),
    ]
    return system, {"PYTHONPATH": os.pathsep.join(paths)}


@contextmanager
def shared_folder() -> Iterator[Path]:
    """Yield a folder under /tmp that every user can enter.

    pytest's tmp_path is mode 0700, so other users cannot reach files in it.
    """
    folder = Path(tempfile.mkdtemp(prefix="enc-test-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def post_as(
    user: OSUser, socket_path: Path, bodies: list[bytes], *, isolated: bool = False
) -> list[tuple[int, dict]]:
    """Post raw ``bodies`` to the collector as ``user``; return (status, JSON) pairs.

    With ``isolated``, the poster runs in a user and network namespace of its
    own, as an enclave kernel does.
    """
    encoded = json.dumps([base64.b64encode(body).decode() for body in bodies])
    prefix = ["unshare", "--user", "--net", "--map-current-user"] if isolated else []
    result = subprocess.run(
        [*prefix, SYSTEM_PYTHON, "-c", POSTER, str(socket_path)],
        input=encoded,
        text=True,
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        capture_output=True,
        cwd="/",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [(status, json.loads(body)) for status, body in json.loads(result.stdout)]


def wait_for_path(path: Path, process: subprocess.Popen, timeout: float = 30) -> None:
    """Wait until ``path`` exists, failing early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"process exited with {process.returncode}:\n{output}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


class Collector:
    """A running audit collector process (``enclave audit serve``)."""

    def __init__(self, env: Mapping[str, str], run_dir: Path) -> None:
        self.env = dict(env)
        self.env["ENCLAVE_RUN_DIR"] = str(run_dir)
        self.socket_path = run_dir / "audit.sock"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from enclave.cli import main; raise SystemExit(main())",
                "--log-level=INFO",
                "audit",
                "serve",
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for_path(self.socket_path, self.process)

    def stop(self) -> str:
        """Send SIGTERM, wait for the exit and return the process output."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            output, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        return output or ""


@contextmanager
def running_collector(env: Mapping[str, str], run_dir: Path) -> Iterator[Collector]:
    """Start a collector with ``env`` listening in ``run_dir``; stop it afterwards."""
    collector = Collector(env, run_dir)
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()
