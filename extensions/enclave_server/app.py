"""The enclave_server Jupyter Server extension: execution audit and download blocking.

When the extension is linked, before the server creates its managers, it
sets the server settings that the audit and the blocking depend on. These
values replace any from the user's own configuration files: the audited kernel websocket
connection, the blocking contents manager, IPC transport for kernels, the
locked-down kernel spec as the only kernel spec, and no terminals.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.serverapp import ServerApp
from traitlets import Float, Int, List, Unicode, default, validate
from traitlets.config import Config

from enclave.config import load_settings

from .audit_client import AuditClient
from .contents import EnclaveContentsManager
from .download_policy import (
    DEFAULT_BLOCKED_EXTENSIONS,
    DEFAULT_BLOCKED_KINDS,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    DownloadPolicy,
)
from .handlers import route_handlers
from .kernel_connection import (
    AUDIT_CLIENT_SETTING,
    DOWNLOAD_POLICY_SETTING,
    MAX_CODE_BYTES_SETTING,
    AuditedKernelWebsocketConnection,
)
from .kernelspecs import EnclaveKernelSpecManager
from .response_filter import make_response_filter

__all__ = ["EnclaveServerApp"]

AUDIT_SOCKET_ENV = "ENCLAVE_AUDIT_SOCKET"


class EnclaveServerApp(ExtensionApp):
    """Audit every executed cell and block downloads of video and array files."""

    name = "enclave_server"
    load_other_extensions = True

    audit_socket = Unicode(
        config=True,
        help=(
            "Path of the audit collector's Unix socket. Defaults to "
            f"${AUDIT_SOCKET_ENV}, else to the audit socket of the enclave settings "
            "(ENCLAVE_RUN_DIR/audit.sock)."
        ),
    )

    @default("audit_socket")
    def _default_audit_socket(self) -> str:
        return os.environ.get(AUDIT_SOCKET_ENV) or str(load_settings().audit_socket)

    audit_timeout = Float(
        5.0,
        config=True,
        help=(
            "Seconds to wait for the audit collector to store an event. A cell "
            "whose event is not stored in this time is not run."
        ),
    )

    max_code_size = Int(
        1024 * 1024,
        config=True,
        help=(
            "Largest cell, in bytes of UTF-8, that is audited and run. A larger "
            "cell is not run; the collector's own limit must not be smaller."
        ),
    )

    blocked_extensions = List(
        Unicode(),
        default_value=list(DEFAULT_BLOCKED_EXTENSIONS),
        config=True,
        help=(
            "File name endings (with the dot, case-insensitive) whose content the "
            "server does not send: video, DICOM, arrays, archives and images by "
            "default. A path with any component ending so is blocked."
        ),
    )

    blocked_kinds = List(
        Unicode(),
        default_value=list(DEFAULT_BLOCKED_KINDS),
        config=True,
        help=(
            "Kinds of content that the server does not send, wherever they appear "
            "in a file, a notebook or a kernel output, raw or encoded as text: "
            "any of video, dicom, array, archive, image, binary (bytes of no "
            "recognised format)."
        ),
    )

    max_download_size = Int(
        DEFAULT_MAX_FILE_BYTES,
        config=True,
        help=(
            "Largest file, in bytes, that the server scans and sends. A larger "
            "file is blocked."
        ),
    )

    max_output_size = Int(
        DEFAULT_MAX_MESSAGE_BYTES,
        config=True,
        help=(
            "Largest kernel message, in bytes, that the server scans and sends to "
            "the browser. A larger one is replaced by a note."
        ),
    )

    kernel_spec_name = Unicode(
        "enclave-python",
        config=True,
        help=(
            "The only kernel spec the server may start, and its default. The "
            "enclave-python spec runs each kernel without network access. An empty "
            "string leaves the kernel specs as configured elsewhere."
        ),
    )

    @validate("max_code_size", "audit_timeout", "max_download_size", "max_output_size")
    def _validate_positive(self, proposal: dict[str, Any]) -> Any:
        if proposal["value"] <= 0:
            raise ValueError(
                f"invalid {proposal['trait'].name} {proposal['value']!r}: "
                "must be positive"
            )
        return proposal["value"]

    def _link_jupyter_server_extension(self, serverapp: ServerApp) -> None:
        super()._link_jupyter_server_extension(serverapp)
        try:
            self._lock_down(serverapp)
        except Exception:
            # The extension manager logs and skips an extension that raises,
            # which would leave the server running without the audit.
            self.log.critical(
                "Stopping: the enclave server settings could not be applied",
                exc_info=True,
            )
            raise SystemExit(1) from None

    def _lock_down(self, serverapp: ServerApp) -> None:
        """Set the server settings the audit and blocking rely on."""
        # Set without reading the current value: the trait's default depends
        # on the gateway settings, which do not exist before the server
        # creates its managers.
        serverapp.kernel_websocket_connection_class = AuditedKernelWebsocketConnection
        serverapp.kernel_spec_manager_class = EnclaveKernelSpecManager
        if not issubclass(serverapp.contents_manager_class, EnclaveContentsManager):
            serverapp.contents_manager_class = EnclaveContentsManager

        # A terminal runs commands that no kernel message carries, so they
        # would escape the execution audit.
        serverapp.terminals_enabled = False

        kernel_config: dict[str, Any] = {"KernelManager": {"transport": "ipc"}}
        if self.kernel_spec_name:
            kernel_config["KernelSpecManager"] = {
                "allowed_kernelspecs": {self.kernel_spec_name}
            }
            kernel_config["MappingKernelManager"] = {
                "default_kernel_name": self.kernel_spec_name
            }
        serverapp.update_config(Config(kernel_config))

    def _check_locked_down(self) -> None:
        """Stop the server if another component replaced the audited classes."""
        problems = []
        manager = self.serverapp.contents_manager
        if not isinstance(manager, EnclaveContentsManager):
            problems.append(f"the contents manager is {type(manager).__name__}")
        spec_manager = self.serverapp.kernel_spec_manager
        if self.kernel_spec_name and not isinstance(
            spec_manager, EnclaveKernelSpecManager
        ):
            problems.append(f"the kernel spec manager is {type(spec_manager).__name__}")
        connection_class = self.serverapp.web_app.settings.get(
            "kernel_websocket_connection_class"
        )
        if not (
            isinstance(connection_class, type)
            and issubclass(connection_class, AuditedKernelWebsocketConnection)
        ):
            problems.append(
                f"the kernel websocket connection class is {connection_class}"
            )
        if problems:
            self.log.critical(
                "Stopping: cells would not be audited or downloads not checked, "
                "because %s",
                " and ".join(problems),
            )
            raise SystemExit(1)

    def initialize_settings(self) -> None:
        """Give the handlers and the contents manager the audit client and policy."""
        self._check_locked_down()
        client = AuditClient(self.audit_socket, timeout=self.audit_timeout)
        policy = DownloadPolicy(
            blocked_extensions=tuple(self.blocked_extensions),
            blocked_kinds=tuple(self.blocked_kinds),
            max_file_bytes=self.max_download_size,
            max_message_bytes=self.max_output_size,
        )
        self.settings[AUDIT_CLIENT_SETTING] = client
        self.settings[MAX_CODE_BYTES_SETTING] = self.max_code_size
        self.settings[DOWNLOAD_POLICY_SETTING] = policy

        manager = self.serverapp.contents_manager
        manager.download_policy = policy
        manager.audit_client = client
        # Insert the filter first so that it scans the body before compression.
        self.serverapp.web_app.transforms.insert(
            0, make_response_filter(policy, client, self.serverapp.base_url)
        )
        self.log.info(
            "enclave_server: auditing cells through %s; blocking %d extensions and "
            "kinds %s",
            self.audit_socket,
            len(policy.blocked_extensions),
            ", ".join(policy.blocked_kinds),
        )

    def initialize_handlers(self) -> None:
        """Add the checking handlers of the /view/ and /nbconvert/ routes."""
        self.handlers.extend(route_handlers())
