"""The ``enclave derive`` command (placeholder until its module lands)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("derive", help="not available yet")
    parser.set_defaults(func=lambda args: parser.error("'derive' is not available yet"))
