"""The ``enclave init`` command (placeholder until its module lands)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("init", help="not available yet")
    parser.set_defaults(func=lambda args: parser.error("'init' is not available yet"))
