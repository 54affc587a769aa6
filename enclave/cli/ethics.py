"""The ``enclave ethics`` command: the ethics service, revocation and the agreement."""

from __future__ import annotations

import argparse
import asyncio

from enclave.config import load_settings

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ethics",
        help="run the ethics review service, revoke ended projects, show the agreement",
        description=(
            "The ethics committee's review page (a JupyterHub service), the "
            "revocation of access when a project ends, and the data use agreement."
        ),
    )
    commands = parser.add_subparsers(
        dest="ethics_command", required=True, metavar="ACTION"
    )

    serve = commands.add_parser(
        "serve",
        help="run the review page as a hub service (revokes every 30 s)",
        description=(
            "Serve the review page below JUPYTERHUB_SERVICE_PREFIX at the address of "
            "JUPYTERHUB_SERVICE_URL, and every 30 seconds end projects whose end "
            "date passed and revoke their members' hub access."
        ),
    )
    serve.add_argument(
        "--ip", help="address to listen on (default: from JUPYTERHUB_SERVICE_URL)"
    )
    serve.add_argument(
        "--port",
        type=int,
        help="port to listen on (default: from JUPYTERHUB_SERVICE_URL)",
    )
    serve.add_argument(
        "--sweep-interval",
        type=float,
        default=None,
        help="seconds between revocation sweeps (default 30)",
    )
    serve.set_defaults(func=_serve)

    revoke = commands.add_parser(
        "revoke-expired",
        help="end projects whose end date passed and revoke access now",
        description=(
            "Run one revocation sweep: mark approved projects whose end date passed "
            "as ended, close the access of ended, terminated and suspended "
            "projects (notices, working copies destroyed by key destruction, audit "
            "events) and, when JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN are set, "
            "remove their members from the hub group, stop their servers and revoke "
            "their tokens."
        ),
    )
    revoke.set_defaults(func=_revoke_expired)

    agreement = commands.add_parser(
        "agreement",
        help="print the current data use agreement with its version and SHA-256",
    )
    agreement.add_argument(
        "--language", default="en", choices=("en", "zh_CN"), help="language of the text"
    )
    agreement.set_defaults(func=_agreement)


def _serve(args: argparse.Namespace) -> int:
    from enclave.ethics.app import serve

    asyncio.run(
        serve(
            load_settings(),
            ip=args.ip,
            port=args.port,
            sweep_interval=args.sweep_interval,
        )
    )
    return 0


def _revoke_expired(args: argparse.Namespace) -> int:
    import os

    from enclave.audit import AuditLog, load_audit_key
    from enclave.catalog.db import Catalog
    from enclave.lifecycle.hub_client import HubClient
    from enclave.lifecycle.revocation import run_revocation

    settings = load_settings()
    catalog = Catalog(settings.db_url)
    audit = AuditLog(catalog, load_audit_key(settings.audit_key_path))
    hub = (
        HubClient.from_environment() if os.environ.get("JUPYTERHUB_API_TOKEN") else None
    )
    try:
        report = asyncio.run(run_revocation(catalog, audit, hub, actor="cli"))
    finally:
        catalog.dispose()

    for line in report.lines():
        print(line)
    if hub is None and report.pending:
        print(
            "hub steps pending: set JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN, or "
            "let the ethics service's next sweep revoke them"
        )
    return 1 if report.errors else 0


def _agreement(args: argparse.Namespace) -> int:
    from enclave.ethics.agreement import current_agreement

    agreement = current_agreement()
    print(f"version {agreement.version}, effective {agreement.effective.isoformat()}")
    print(f"sha256 {agreement.sha256(args.language)}")
    print()
    print(agreement.text(args.language), end="")
    return 0
