"""The ``enclave broker`` command: run the data broker."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from enclave.broker.config import DECODE_THREADS, BrokerConfig
from enclave.config import load_settings
from enclave.errors import ValidationError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("broker", help="run the data broker service")
    commands = parser.add_subparsers(
        dest="broker_command", required=True, metavar="COMMAND"
    )

    serve = commands.add_parser(
        "serve",
        help="serve de-identified frames to hub users on a Unix socket",
        description=(
            "Serve de-identified frames to hub users on a Unix socket. Started as "
            "root, the broker binds the socket and then switches to the broker's "
            "OS user (ENCLAVE_BROKER_USER, default enclave-broker) before it reads "
            "any key."
        ),
    )
    serve.add_argument(
        "--socket",
        type=Path,
        default=None,
        help="path of the Unix socket (default: broker.sock in ENCLAVE_RUN_DIR)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=DECODE_THREADS,
        help=f"threads that decrypt and decode frames (default {DECODE_THREADS})",
    )
    serve.add_argument(
        "--run-as-root",
        action="store_true",
        help="keep running as root instead of switching to the broker's OS user "
        "(for tests on a machine without that account)",
    )
    serve.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    from enclave.audit import AuditLog, load_audit_key
    from enclave.broker.app import bind_socket, drop_privileges, run_broker
    from enclave.broker.manager import DataManager
    from enclave.catalog.db import Catalog
    from enclave.vault import KeyRing, Vault

    if args.threads < 1:
        raise ValidationError(f"--threads {args.threads} must be at least 1")
    settings = load_settings()
    socket_path = args.socket or settings.broker_socket
    config = BrokerConfig(socket_path=socket_path, decode_threads=args.threads)

    sock = bind_socket(socket_path)
    if os.geteuid() == 0 and not args.run_as_root:
        drop_privileges(settings.broker_user)

    # The key files are opened only now, after the switch to the broker's user.
    catalog = Catalog(settings.db_url)
    keyring = KeyRing.load(settings.master_key_path, vault_dir=settings.vault_dir)
    audit = AuditLog(catalog, load_audit_key(settings.audit_key_path))
    manager = DataManager(catalog, Vault(settings.vault_dir, keyring), audit, config)

    asyncio.run(run_broker(settings, manager, sock))
    return 0
