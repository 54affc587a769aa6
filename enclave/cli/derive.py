"""The ``enclave derive`` command: publish a de-identified dataset from vault assets."""

from __future__ import annotations

import argparse
import getpass
import os

__all__ = ["register"]

_EPILOG = """\
Prints the dataset name, then one line per item: its path (clips/0001, ...)
and the id of the derivative asset. If any asset fails de-identification,
nothing is published and the exit status is 1.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from enclave.deid.profiles import PROFILE_NAMES

    parser = subparsers.add_parser(
        "derive",
        help="make a de-identified dataset from vault assets",
        description=(
            "De-identify source ASSETs with a profile and publish them as a dataset."
        ),
        epilog=_EPILOG,
    )
    parser.add_argument(
        "assets", nargs="+", metavar="ASSET", help="id of a source asset"
    )
    parser.add_argument(
        "--profile",
        required=True,
        choices=PROFILE_NAMES,
        help="de-identification profile",
    )
    parser.add_argument(
        "--dataset", required=True, metavar="NAME", help="name of the new dataset"
    )
    parser.add_argument(
        "--as",
        dest="actor",
        metavar="USER",
        help="data steward recorded in the audit trail (default: the invoking user)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="profile option, e.g. keep_ranges='[(0, 10)]'; repeatable",
    )
    parser.set_defaults(func=_run, parser=parser)


def _run(args: argparse.Namespace) -> int:
    from enclave.audit import AuditLog, load_audit_key
    from enclave.catalog.db import Catalog
    from enclave.cli.deid import parse_options
    from enclave.config import load_settings
    from enclave.deid import derive
    from enclave.system import fix_ownership
    from enclave.vault import KeyRing, Vault

    options = parse_options(args.option, args.parser)
    actor = args.actor or os.environ.get("SUDO_USER") or getpass.getuser()
    settings = load_settings()
    keyring = KeyRing.load(settings.master_key_path, vault_dir=settings.vault_dir)
    vault = Vault(settings.vault_dir, keyring)
    catalog = Catalog(settings.db_url)
    audit = AuditLog(catalog, load_audit_key(settings.audit_key_path))
    try:
        dataset = derive(
            catalog,
            vault,
            audit,
            args.assets,
            profile=args.profile,
            dataset_name=args.dataset,
            actor=actor,
            **options,
        )
    finally:
        catalog.dispose()
        fix_ownership(settings)
    print(dataset.name)
    for item in dataset.items:
        print(f"{item.path} {item.asset_id}")
    return 0
