"""The ``enclave levels`` command (placeholder until its module lands)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("levels", help="not available yet")
    parser.set_defaults(func=lambda args: parser.error("'levels' is not available yet"))
