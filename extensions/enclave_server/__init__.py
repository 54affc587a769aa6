"""Jupyter Server extension of the enclave: execution audit and download blocking.

Enable it with ``--ServerApp.jpserver_extensions='{"enclave_server": True}'``
or the ``jupyter_server_config.d/enclave_server.json`` file shipped with it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EnclaveServerApp"]


def __getattr__(name: str) -> Any:
    # Imported lazily so that the kernel launcher, which runs in every kernel,
    # does not import Jupyter Server.
    if name == "EnclaveServerApp":
        from .app import EnclaveServerApp

        return EnclaveServerApp
    raise AttributeError(name)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import EnclaveServerApp

    return [{"module": "enclave_server", "app": EnclaveServerApp}]
