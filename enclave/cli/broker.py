"""The ``enclave broker`` command (placeholder until its module lands)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("broker", help="not available yet")
    parser.set_defaults(func=lambda args: parser.error("'broker' is not available yet"))
