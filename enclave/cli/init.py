"""The ``enclave init`` command: folders, keys and catalog of a new installation."""

from __future__ import annotations

import argparse

from enclave.config import load_settings

__all__ = ["initialize", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "init",
        help="create the folders, master key, audit key and catalog",
        description=(
            "Create the data, key and socket folders, a master key and an audit "
            "key (each only if missing), and bring the catalog to the newest "
            "schema. Safe to run again."
        ),
    )
    parser.set_defaults(func=_run)


def initialize() -> list[str]:
    """Set up the installation named by the environment; return what was created."""
    from enclave.audit import create_audit_key
    from enclave.catalog.db import Catalog
    from enclave.system import fix_ownership, prepare_folders
    from enclave.vault import KeyRing

    settings = load_settings()
    created = []

    prepare_folders(settings)
    if not settings.master_key_path.exists():
        KeyRing.create(settings.master_key_path)
        created.append(f"master key {settings.master_key_path}")
    if not settings.audit_key_path.exists():
        create_audit_key(settings.audit_key_path)
        created.append(f"audit key {settings.audit_key_path}")

    Catalog(settings.db_url).upgrade()
    fix_ownership(settings)
    return created


def _run(args: argparse.Namespace) -> int:
    settings = load_settings()
    for line in initialize():
        print(f"created {line}")
    print(f"catalog ready at {settings.db_url.split('://', 1)[0]}; data in {settings.home}")
    return 0
