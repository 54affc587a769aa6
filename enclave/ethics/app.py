"""The ethics service: a tornado application that JupyterHub runs as a service.

The hub starts it with ``enclave ethics serve`` and passes, as for every
managed service, ``JUPYTERHUB_SERVICE_URL`` (where to listen),
``JUPYTERHUB_SERVICE_PREFIX`` (``/services/ethics/``), ``JUPYTERHUB_API_URL``,
``JUPYTERHUB_API_TOKEN`` and ``JUPYTERHUB_CLIENT_ID``. Users sign in through
the hub's OAuth. The page uses the hub's style sheet from the jupyterhub
package and speaks Chinese to browsers that prefer Chinese.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub._data import DATA_FILES_PATH
from jupyterhub.services.auth import HubOAuth
from tornado import locale, web

from enclave.audit import AuditLog, load_audit_key
from enclave.catalog.db import Catalog
from enclave.config import Settings
from enclave.errors import ConfigurationError
from enclave.ethics.handlers import ROUTES
from enclave.lifecycle.hub_client import HubClient
from enclave.lifecycle.revocation import RevocationLoop, run_revocation

__all__ = ["EthicsContext", "make_app", "serve"]

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).parent
TEMPLATE_DIR = PACKAGE_DIR / "templates"
TRANSLATION_DIR = PACKAGE_DIR / "translations"
HUB_STATIC_DIR = Path(DATA_FILES_PATH) / "static"
DEFAULT_PREFIX = "/services/ethics/"


@dataclass
class EthicsContext:
    """State shared by every request handler of the service."""

    catalog: Catalog
    audit: AuditLog
    hub_auth: HubOAuth
    prefix: str = DEFAULT_PREFIX
    hub: HubClient | None = None
    revocation: RevocationLoop | None = None


def load_translations() -> None:
    """Load the page translations (tornado CSV files) and make English the default."""
    locale.load_translations(str(TRANSLATION_DIR))
    locale.set_default_locale("en_US")


def make_app(
    context: EthicsContext, *, cookie_secret: bytes | None = None, **settings: object
) -> web.Application:
    """Build the tornado application of the service below ``context.prefix``.

    Parameters
    ----------
    cookie_secret
        Key that signs the login and XSRF cookies; a random one by default,
        so that users sign in again through the hub after a restart.
    **settings
        Further tornado application settings.
    """
    if not context.prefix.startswith("/") or not context.prefix.endswith("/"):
        raise ConfigurationError(
            f"invalid service prefix {context.prefix!r}; it starts and ends with '/', "
            f"e.g. {DEFAULT_PREFIX}"
        )
    if not HUB_STATIC_DIR.is_dir():
        raise ConfigurationError(
            f"the hub's static files are missing at {HUB_STATIC_DIR}; reinstall "
            "jupyterhub"
        )
    load_translations()

    prefix = context.prefix
    routes: list[tuple[str, type[web.RequestHandler], dict[str, object]]] = [
        (prefix + path, handler, {"context": context}) for path, handler in ROUTES
    ]
    routes.append(
        (prefix.rstrip("/"), web.RedirectHandler, {"url": prefix})  # type: ignore[arg-type]
    )
    return web.Application(
        routes,  # type: ignore[arg-type]
        template_path=str(TEMPLATE_DIR),
        static_path=str(HUB_STATIC_DIR),
        static_url_prefix=f"{prefix}static/",
        xsrf_cookies=True,
        cookie_secret=cookie_secret or secrets.token_bytes(32),
        autoescape="xhtml_escape",
        **settings,
    )


def _listen_address(environ: dict[str, str] | os._Environ[str]) -> tuple[str, int]:
    url = environ.get("JUPYTERHUB_SERVICE_URL", "")
    if not url:
        raise ConfigurationError(
            "JUPYTERHUB_SERVICE_URL is not set; run the ethics service as a hub "
            "service, or pass --port"
        )
    parsed = urlparse(url)
    if parsed.port is None:
        raise ConfigurationError(
            f"JUPYTERHUB_SERVICE_URL {url!r} has no port; give the service a URL "
            "like http://127.0.0.1:10101"
        )
    return parsed.hostname or "127.0.0.1", parsed.port


def build_context(settings: Settings, *, prefix: str | None = None) -> EthicsContext:
    """Open the catalog and audit trail of ``settings`` and the hub client."""
    catalog = Catalog(settings.db_url)
    audit = AuditLog(catalog, load_audit_key(settings.audit_key_path))
    hub = None
    if os.environ.get("JUPYTERHUB_API_TOKEN"):
        hub = HubClient.from_environment()
    return EthicsContext(
        catalog=catalog,
        audit=audit,
        hub_auth=HubOAuth(cache_max_age=60),
        prefix=prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or DEFAULT_PREFIX,
        hub=hub,
    )


async def serve(
    settings: Settings,
    *,
    ip: str | None = None,
    port: int | None = None,
    sweep_interval: float | None = None,
) -> None:
    """Run the service until SIGTERM or SIGINT, sweeping revocations periodically.

    Parameters
    ----------
    ip, port
        Where to listen; by default the host and port of
        ``JUPYTERHUB_SERVICE_URL``.
    sweep_interval
        Seconds between revocation sweeps; 30 by default.
    """
    if ip is None or port is None:
        env_ip, env_port = _listen_address(os.environ)
        ip, port = ip or env_ip, port or env_port
    context = build_context(settings)
    if context.hub is None:
        log.warning(
            "JUPYTERHUB_API_TOKEN is not set: access is closed in the catalog, but "
            "hub groups, servers and tokens are not revoked"
        )

    async def sweep() -> None:
        report = await run_revocation(context.catalog, context.audit, context.hub)
        for line in report.lines():
            if line != "nothing to revoke":
                log.info("revocation: %s", line)

    loop_kwargs = {} if sweep_interval is None else {"interval": sweep_interval}
    context.revocation = RevocationLoop(sweep, **loop_kwargs)
    app = make_app(context)
    server = app.listen(port, address=ip, xheaders=True)
    context.revocation.start()
    log.info("ethics service listening on http://%s:%d%s", ip, port, context.prefix)

    stop = asyncio.Event()
    running_loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        running_loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    log.info("ethics service stopping")
    server.stop()
    await context.revocation.stop()
    context.catalog.dispose()
