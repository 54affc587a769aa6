"""The ``enclave ingest`` command: encrypt video and DICOM files into the vault."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from enclave.catalog.models import Category
from enclave.errors import AuditUnavailable, ConfigurationError, EnclaveError

if TYPE_CHECKING:
    from enclave.config import Settings

__all__ = ["register"]

log = logging.getLogger(__name__)

# Errors of the installation rather than of one file: the audit trail or the
# catalog cannot be written, the keys are unusable, or the disk is full.
_SYSTEM_ERRORS = (AuditUnavailable, ConfigurationError, SQLAlchemyError, OSError)

_EPILOG = """\
The asset id of each stored file is printed on a line of its own. For a file
that cannot be stored, 'enclave ingest: error: FILE: problem' goes to stderr
and the other files are still ingested. The exit status is then 1. Video of
levels 3 to 5 involves patients, so those levels require --consent.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from enclave.ingest import CONSENT_REQUIRED_FROM_LEVEL

    parser = subparsers.add_parser(
        "ingest",
        help="encrypt video or DICOM files into the vault and print their asset ids",
        description=(
            "Probe each FILE (MP4, MOV, MKV, AVI or multi-frame DICOM), encrypt "
            "it into the vault, record it in the catalog and the audit trail."
        ),
        epilog=_EPILOG,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="file to ingest")
    parser.add_argument(
        "--category",
        required=True,
        choices=[category.value for category in Category],
        help="scene that produced the video",
    )
    parser.add_argument(
        "--level",
        required=True,
        type=int,
        choices=range(1, 6),
        metavar="{1,2,3,4,5}",
        help=(
            "classification level: 1 public, 2 unlinkable, 3 re-identifiable, "
            "4 identifying, 5 restricted"
        ),
    )
    parser.add_argument(
        "--consent",
        metavar="REF",
        help=(
            "reference of the patient's consent; required for levels "
            f"{CONSENT_REQUIRED_FROM_LEVEL} to 5"
        ),
    )
    parser.add_argument(
        "--ethics", metavar="REF", help="reference of the ethics approval"
    )
    parser.add_argument(
        "--as",
        dest="actor",
        metavar="USER",
        help="user recorded in the audit trail (default: the invoking user)",
    )
    parser.set_defaults(func=_run, parser=parser)


def _run(args: argparse.Namespace) -> int:
    from enclave.audit import AuditLog, load_audit_key
    from enclave.catalog.db import Catalog
    from enclave.config import load_settings
    from enclave.ingest import CONSENT_REQUIRED_FROM_LEVEL, ingest_file
    from enclave.vault import KeyRing, Vault

    if args.level >= CONSENT_REQUIRED_FROM_LEVEL and not (args.consent or "").strip():
        args.parser.error(
            f"--consent is required for level {args.level}, because video of levels "
            f"{CONSENT_REQUIRED_FROM_LEVEL} to 5 involves patients; pass "
            "--consent REF with the reference of the patient's consent"
        )
    actor = args.actor or _invoking_user()

    settings = load_settings()
    keyring = KeyRing.load(settings.master_key_path, vault_dir=settings.vault_dir)
    vault = Vault(settings.vault_dir, keyring)
    catalog = Catalog(settings.db_url)
    audit = AuditLog(catalog, load_audit_key(settings.audit_key_path))

    failed = 0
    try:
        for position, file in enumerate(args.files):
            try:
                asset = ingest_file(
                    catalog,
                    vault,
                    audit,
                    file,
                    category=args.category,
                    level=args.level,
                    consent_ref=args.consent,
                    ethics_ref=args.ethics,
                    actor=actor,
                )
            except _SYSTEM_ERRORS as exc:
                # These would fail for every file alike, so stop here.
                _print_error(file, exc)
                remaining = len(args.files) - position - 1
                if remaining:
                    print(
                        f"enclave ingest: error: {remaining} more files not "
                        "ingested because of the error above",
                        file=sys.stderr,
                    )
                return 1
            except EnclaveError as exc:
                _print_error(file, exc)
                failed += 1
                continue
            print(asset.id, flush=True)
    finally:
        catalog.dispose()
        _hand_files_to_broker(settings)
    return 1 if failed else 0


def _print_error(file: str, error: BaseException) -> None:
    message = str(error)
    if not message.startswith(f"{file}:"):
        message = f"{file}: {message}"
    print(f"enclave ingest: error: {message}", file=sys.stderr, flush=True)


def _invoking_user() -> str:
    # Under sudo, record the person who ran the command rather than root.
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _hand_files_to_broker(settings: Settings) -> None:
    """Give the new blob files to the broker's OS user when running as root."""
    from enclave.system import fix_ownership

    try:
        fix_ownership(settings)
    except (EnclaveError, OSError, subprocess.CalledProcessError) as exc:
        raise ConfigurationError(
            f"cannot give the vault files to OS user {settings.broker_user!r} "
            f"({exc}); run 'enclave init' as root to repair the ownership"
        ) from exc
