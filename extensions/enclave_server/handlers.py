"""Overrides of server routes that check the request before the upstream handler.

``/view/`` and ``/nbconvert/`` check the path against the download policy.
``POST /api/kernels``, ``POST /api/sessions`` and ``PATCH /api/sessions/ID``
reject a kernel spec outside the allow list with HTTP 403, where upstream
would respond with 500 (kernels) or 501 (sessions). ``/lab/extensions/`` serves
JupyterLab extensions only from folders the user cannot write. Handlers that
an extension adds are matched before the server's own, so these replace the
upstream handlers of the same patterns.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_core.paths import jupyter_path
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import FileFindHandler, JupyterHandler, path_regex
from jupyter_server.nbconvert.handlers import NbconvertFileHandler, _format_regex
from jupyter_server.services.kernels.handlers import MainKernelHandler
from jupyter_server.services.sessions.handlers import (
    SessionHandler,
    SessionRootHandler,
    _session_id_regex,
)
from jupyter_server.view.handlers import ViewHandler
from tornado import web

from .contents import EnclaveContentsManager, forbidden

__all__ = [
    "BlockingNbconvertFileHandler",
    "BlockingViewHandler",
    "CheckedKernelsHandler",
    "CheckedSessionHandler",
    "CheckedSessionsHandler",
    "route_handlers",
]


async def _check_download(handler: JupyterHandler, path: str, route: str) -> None:
    manager = handler.contents_manager
    if not isinstance(manager, EnclaveContentsManager):
        raise forbidden(
            "The enclave contents manager is not in use, so files are not served"
        )
    await manager.check_download(path, route=route)


class BlockingViewHandler(ViewHandler):
    """``/view/PATH``: refuse to render a page around a blocked file."""

    @web.authenticated
    @authorized
    async def get(self, path: str) -> None:  # type: ignore[override]
        """Render the view page of a file that may be downloaded."""
        await _check_download(self, path, "view")
        await super().get(path)


class BlockingNbconvertFileHandler(NbconvertFileHandler):
    """``/nbconvert/FORMAT/PATH``: refuse to convert a blocked file."""

    @web.authenticated
    @authorized
    async def get(self, format: str, path: str) -> None:  # type: ignore[override]  # noqa: A002
        """Convert a file that may be downloaded."""
        await _check_download(self, path, "nbconvert")
        await super().get(format, path)


def check_kernel_name(handler: JupyterHandler, kernel_name: Any) -> None:
    """Raise HTTP 403 if ``kernel_name`` is not an allowed kernel spec.

    None means the server's default kernel spec, which is always allowed.
    """
    if kernel_name is None:
        return
    if not isinstance(kernel_name, str):
        raise web.HTTPError(
            400, f"invalid kernel name {kernel_name!r}: expected a string"
        )
    allowed = sorted(handler.kernel_spec_manager.allowed_kernelspecs)
    if not allowed or kernel_name.lower() in {name.lower() for name in allowed}:
        return
    handler.log.warning("Rejected a request to start kernel spec %r", kernel_name)
    names = ", ".join(repr(name) for name in allowed)
    raise forbidden(
        f"Kernel spec {kernel_name!r} is not allowed on this server, because its "
        f"kernels would run with network access; start {names} instead"
    )


def _kernel_name_of(body: Any) -> Any:
    """Return ``body["kernel"]["name"]`` of a sessions request, or None."""
    if not isinstance(body, dict):
        return None
    kernel = body.get("kernel")
    return kernel.get("name") if isinstance(kernel, dict) else None


class CheckedKernelsHandler(MainKernelHandler):
    """``POST /api/kernels``: start only an allowed kernel spec."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Start a kernel after checking its spec name."""
        body = self.get_json_body()
        if isinstance(body, dict):
            check_kernel_name(self, body.get("name"))
        await super().post()


class CheckedSessionsHandler(SessionRootHandler):
    """``POST /api/sessions``: start a session only with an allowed kernel spec."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Create a session after checking the spec name of its new kernel."""
        check_kernel_name(self, _kernel_name_of(self.get_json_body()))
        await super().post()


class CheckedSessionHandler(SessionHandler):
    """``PATCH /api/sessions/ID``: switch a session only to an allowed kernel spec."""

    @web.authenticated
    @authorized
    async def patch(self, session_id: str) -> None:  # type: ignore[override]
        """Change a session after checking the spec name of its new kernel."""
        check_kernel_name(self, _kernel_name_of(self.get_json_body()))
        await super().patch(session_id)


def _writable_by_user(folder: str) -> bool:
    """Return True if this process can write ``folder`` or create it."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.access(path, os.W_OK)


def read_only_labextension_folders() -> list[str]:
    """Return the JupyterLab extension folders that the server's user cannot write.

    A folder the user can write, such as ``~/.local/share/jupyter/labextensions``,
    would let code in a kernel stage any file there for the browser to fetch,
    and plant JavaScript that the browser runs.
    """
    return [
        folder
        for folder in jupyter_path("labextensions")
        if not _writable_by_user(folder)
    ]


def route_handlers() -> list[tuple[Any, ...]]:
    """Return the URL patterns and handlers that the extension adds."""
    labextensions: dict[str, Any] = {
        "path": read_only_labextension_folders(),
        "no_cache_paths": [],
    }
    if hasattr(FileFindHandler, "follow_dir_symlinks"):
        labextensions["follow_dir_symlinks"] = True
    return [
        (r"/lab/extensions/(.*)", FileFindHandler, labextensions),
        (rf"/view{path_regex}", BlockingViewHandler),
        (rf"/nbconvert/{_format_regex}{path_regex}", BlockingNbconvertFileHandler),
        (r"/api/kernels", CheckedKernelsHandler),
        (r"/api/sessions", CheckedSessionsHandler),
        (rf"/api/sessions/{_session_id_regex}", CheckedSessionHandler),
    ]
