"""The ``enclave`` command line.

Each sub-command lives in its own module with a ``register(subparsers)``
function that adds its parser and sets ``func`` to the handler. A handler
takes the parsed arguments and returns the process exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from enclave.errors import EnclaveError

__all__ = ["main"]

COMMAND_MODULES = [
    "enclave.cli.init",
    "enclave.cli.ingest",
    "enclave.cli.derive",
    "enclave.cli.deid",
    "enclave.cli.dataset",
    "enclave.cli.project",
    "enclave.cli.audit",
    "enclave.cli.levels",
    "enclave.cli.broker",
    "enclave.cli.demo",
    "enclave.cli.ethics",
    "enclave.cli.reid",
]

# Commands that write to the vault or the catalog. Run by root, they leave
# files owned by root, which the broker could not read; they are handed over.
OWNERSHIP_COMMANDS = {"ingest", "derive", "project", "levels", "ethics", "reid"}


def _requested_modules(argv: list[str] | None) -> list[str]:
    """Return the modules to import: the named command's, or all of them.

    Importing every sub-command loads SQLAlchemy, pydicom and more, which
    takes up to a second, so a named command imports only its own module.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    while words and words[0].startswith("--log-level"):
        words = words[1:] if "=" in words[0] else words[2:]
    if words:
        module = f"enclave.cli.{words[0]}"
        if module in COMMAND_MODULES:
            return [module]
    return COMMAND_MODULES


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enclave",
        description="Secure research enclave for hospital video.",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _requested_modules(argv):
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except EnclaveError as exc:
        print(f"enclave {args.command}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.command in OWNERSHIP_COMMANDS:
            _give_files_to_broker()


def _give_files_to_broker() -> None:
    from enclave.config import load_settings
    from enclave.system import fix_ownership

    fix_ownership(load_settings())


if __name__ == "__main__":
    sys.exit(main())
