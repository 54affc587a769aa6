"""Identity of the process on the other end of a Unix socket connection.

The kernel records the credentials of the process that connected (SO_PEERCRED),
so a client cannot claim another identity the way it could with a header.
"""

from __future__ import annotations

import pwd
import socket
import struct
from dataclasses import dataclass

from enclave.config import Settings
from enclave.errors import PermissionDenied

__all__ = ["PeerCredentials", "peer_credentials", "resolve_hub_user"]

# struct ucred from <sys/socket.h>: pid_t pid, uid_t uid, gid_t gid.
_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class PeerCredentials:
    """Process, user and group id of the peer of a Unix socket."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """Read the credentials of the process that connected to ``sock``.

    Raises
    ------
    PermissionDenied
        If ``sock`` is not a Unix socket, so the peer cannot be identified.
    """
    if sock.family != socket.AF_UNIX:
        raise PermissionDenied("the broker identifies callers only on a Unix socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def resolve_hub_user(settings: Settings, uid: int) -> str:
    """Map a peer's uid to the hub user it runs for.

    Raises
    ------
    PermissionDenied
        If the uid has no account, or its account is not a hub user's
        (its name lacks ``settings.user_prefix``).
    """
    try:
        os_user = pwd.getpwuid(uid).pw_name
    except KeyError:
        raise PermissionDenied(f"uid {uid} has no OS account") from None

    hub_user = settings.hub_user(os_user)
    if not hub_user:
        raise PermissionDenied(
            f"OS user {os_user!r} is not a hub user; only accounts named "
            f"{settings.user_prefix!r} + hub user name may read data"
        )
    return hub_user
