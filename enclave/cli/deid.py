"""The ``enclave deid`` command: de-identify one file outside the vault."""

from __future__ import annotations

import argparse
import ast
import sys
from typing import Any

__all__ = ["register"]

_EPILOG = """\
OUTPUT is written only when the residual check passes: the file is written
next to OUTPUT under a temporary name and renamed at the end. When a face or
text remains after masking the exit status is 1 and OUTPUT is not created.
Profile options are NAME=VALUE pairs with Python literal values, for example
--option keep_ranges='[(0, 10)]' --option audio_mode=mcadams.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from enclave.deid.profiles import PROFILE_NAMES

    parser = subparsers.add_parser(
        "deid",
        help="de-identify one video or DICOM file outside the vault",
        description=(
            "Mask faces and burned-in text, remove audio and metadata of INPUT "
            "following a profile, check the result and write OUTPUT."
        ),
        epilog=_EPILOG,
    )
    parser.add_argument("input", metavar="INPUT", help="video or DICOM file to read")
    parser.add_argument(
        "output", metavar="OUTPUT", help="file to write (.mp4 for video)"
    )
    parser.add_argument(
        "--profile",
        required=True,
        choices=PROFILE_NAMES,
        help="de-identification profile",
    )
    parser.add_argument(
        "--report", metavar="FILE.json", help="write the JSON report to this file"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="profile option such as encode_crf=20 or keep_ranges='[(0, 10)]'; "
        "repeatable",
    )
    parser.set_defaults(func=_run, parser=parser)


def parse_options(pairs: list[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Parse ``NAME=VALUE`` pairs; values are Python literals or plain strings."""
    options: dict[str, Any] = {}
    for pair in pairs:
        name, separator, text = pair.partition("=")
        if not separator or not name:
            parser.error(f"option {pair!r} is invalid; use NAME=VALUE")
        try:
            value: Any = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        options[name] = value
    return options


def _run(args: argparse.Namespace) -> int:
    from enclave.deid import deidentify_file
    from enclave.errors import ResidualCheckFailed

    options = parse_options(args.option, args.parser)
    _reject_vault_path(args.output)
    if args.profile == "ai-diagnosis" and _is_dicom_file(args.input):
        options["pseudonym_key"] = _pseudonym_key()
    try:
        result = deidentify_file(
            args.input, args.output, args.profile, args.report, **options
        )
    except ResidualCheckFailed as exc:
        print(
            f"enclave deid: error: {exc}; {args.output} was not written",
            file=sys.stderr,
        )
        return 1
    residual = result.report.get("residual_check", {})
    print(
        f"{args.output}: profile {args.profile}, residual check "
        f"{'passed' if residual.get('passed', True) else 'failed'}"
    )
    return 0


def _is_dicom_file(path: str) -> bool:
    from enclave.deid.api import is_dicom

    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return is_dicom(head, path)


def _pseudonym_key() -> bytes:
    # Keyed DICOM pseudonyms must match those of 'enclave derive', so they use
    # the installation's pseudonym key, which the master key unwraps.
    from enclave.config import load_settings
    from enclave.deid.pseudonyms import PseudonymStore
    from enclave.vault import KeyRing

    settings = load_settings()
    keyring = KeyRing.load(settings.master_key_path, vault_dir=settings.vault_dir)
    return PseudonymStore(settings.home / "pseudonyms", keyring).pseudonym_key


def _reject_vault_path(output: str) -> None:
    # The vault holds only ciphertext written by the enclave; a plaintext file
    # there would be readable by whoever can read the vault folder.
    from pathlib import Path

    from enclave.config import load_settings
    from enclave.errors import ValidationError
    from enclave.system import is_within

    vault_dir = load_settings().vault_dir
    if is_within(Path(output).absolute(), vault_dir):
        raise ValidationError(
            f"output {output!r} is inside the vault folder {vault_dir}; "
            "write the de-identified file outside the vault"
        )
