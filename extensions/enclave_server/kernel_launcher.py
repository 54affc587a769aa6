"""Start an IPython kernel that has no network access.

The launcher moves itself into a new user namespace and a new network
namespace, then replaces itself with ``python -m ipykernel_launcher``. The
new network namespace has only a loopback interface of its own, so the
kernel cannot reach any host, including services listening on the host's
127.0.0.1. It still reaches its Jupyter server through the IPC (Unix socket)
transport and the broker through the broker's Unix socket, because
path-based Unix sockets do not belong to a network namespace.

The user namespace maps the user's uid and gid to themselves (not to root),
so files, and the peer credentials the broker reads, keep the user's ids.

If the namespaces cannot be created the kernel does not start. Setting
``ENCLAVE_KERNEL_ISOLATION=off`` in the server's environment starts kernels
with network access instead, for hosts without user namespaces.

Usage (from a kernel spec)::

    python -m enclave_server.kernel_launcher -f {connection_file}
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import sys
import tempfile
from collections.abc import Mapping

__all__ = ["ISOLATION_ENV", "IsolationError", "isolate_network", "main"]

ISOLATION_ENV = "ENCLAVE_KERNEL_ISOLATION"
"""Environment variable; the value ``off`` starts kernels without isolation."""

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


class IsolationError(RuntimeError):
    """The kernel's network namespace could not be set up."""


def _unshare(flags: int) -> None:
    if hasattr(os, "unshare"):  # Python 3.12 and later
        os.unshare(flags)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _write_proc(name: str, text: str) -> None:
    with open(f"/proc/self/{name}", "w", encoding="ascii") as file:
        file.write(text)


def _bring_up_loopback() -> None:
    # The namespace's own loopback starts down. Bringing it up lets the kernel
    # talk to its own child processes, such as a local Dask cluster. It is not
    # the host's loopback, so nothing outside the kernel becomes reachable.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))


def isolate_network() -> None:
    """Move this process into new user and network namespaces.

    Must run before the process starts a second thread: the kernel refuses
    to create a user namespace for a multi-threaded process.

    Raises
    ------
    IsolationError
        If a namespace cannot be created or the new network namespace has an
        interface other than loopback.
    """
    uid, gid = os.getuid(), os.getgid()
    try:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    except OSError as exc:
        hint = ""
        if exc.errno in (errno.EPERM, errno.ENOSPC, errno.EINVAL):
            hint = (
                "; allow unprivileged user namespaces (sysctl "
                "user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1, "
                "and no seccomp or AppArmor rule that denies unshare)"
            )
        raise IsolationError(f"unshare failed: {exc.strerror}{hint}") from exc

    try:
        # setgroups must be denied before an unprivileged process may write
        # its gid_map.
        _write_proc("setgroups", "deny")
        _write_proc("uid_map", f"{uid} {uid} 1\n")
        _write_proc("gid_map", f"{gid} {gid} 1\n")
        _bring_up_loopback()
    except OSError as exc:
        raise IsolationError(f"setting up the namespaces failed: {exc}") from exc

    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        raise IsolationError(
            f"the kernel's network namespace has interfaces {interfaces}, expected "
            "only lo"
        )


def main(argv: list[str] | None = None) -> int:
    """Isolate the network, then exec ``python -m ipykernel_launcher ARGV``."""
    args = sys.argv[1:] if argv is None else argv
    setting = os.environ.get(ISOLATION_ENV, "on").strip().lower()

    if setting == "off":
        print(
            f"enclave kernel: {ISOLATION_ENV}=off, so this kernel HAS network access",
            file=sys.stderr,
        )
    elif setting != "on":
        print(
            f"enclave kernel: invalid {ISOLATION_ENV}={setting!r}; use 'on' (the "
            "default) or 'off'. The kernel was not started.",
            file=sys.stderr,
        )
        return 2
    else:
        try:
            isolate_network()
        except IsolationError as exc:
            print(
                "enclave kernel: the kernel was not started because it could not be "
                f"cut off from the network: {exc}. To run kernels with network "
                f"access instead, set {ISOLATION_ENV}=off in the Jupyter server's "
                "environment.",
                file=sys.stderr,
            )
            return 1

    sys.stderr.flush()
    os.execve(
        sys.executable,
        [sys.executable, "-m", "ipykernel_launcher", *args],
        kernel_environment(os.environ),
    )
    return 0  # not reached: execve replaces the process


# Credentials of the user's server. Code in the kernel must not hold them: the
# server's API token opens the server's REST API (contents, kernels, files)
# without the browser's login and outlives a logout.
_SERVER_CREDENTIALS = ("JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN")


def kernel_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Return the kernel's environment: the server's, minus credentials and hooks.

    Startup code the user could have planted is switched off, so that nothing
    runs without passing through an audited cell. IPython reads its profile
    (startup files, configuration) from a new empty folder, and Python skips
    the user's site-packages, where a ``usercustomize`` or ``.pth`` file runs
    at start.
    """
    env = {
        key: value
        for key, value in environ.items()
        if key not in _SERVER_CREDENTIALS and not key.startswith("JUPYTERHUB_")
    }
    env["IPYTHONDIR"] = tempfile.mkdtemp(prefix="enclave-ipython-")
    env["PYTHONNOUSERSITE"] = "1"
    env.pop("PYTHONSTARTUP", None)
    env.pop("PYTHONPATH", None)
    return env


if __name__ == "__main__":
    raise SystemExit(main())
