"""Overrides of the ``/view/`` and ``/nbconvert/`` routes that check the path first.

Handlers that an extension adds are matched before the server's own, so
these replace the upstream handlers of the same patterns.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler, path_regex
from jupyter_server.nbconvert.handlers import NbconvertFileHandler, _format_regex
from jupyter_server.view.handlers import ViewHandler
from tornado import web

from .contents import EnclaveContentsManager, forbidden

__all__ = ["BlockingNbconvertFileHandler", "BlockingViewHandler", "route_handlers"]


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


def route_handlers() -> list[tuple[str, type[JupyterHandler]]]:
    """Return the URL patterns and handlers that the extension adds."""
    return [
        (rf"/view{path_regex}", BlockingViewHandler),
        (rf"/nbconvert/{_format_regex}{path_regex}", BlockingNbconvertFileHandler),
    ]
