"""The ``enclave demo`` command: the whole enclave on one machine."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from enclave.config import load_settings

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="start the whole enclave on this machine with demo accounts",
        description=(
            "Initialise the installation, ingest and de-identify the sample "
            "videos, approve a demo project for 'alice', then start the "
            "OpenID provider, JupyterHub, the broker and the audit collector "
            "on 127.0.0.1 until interrupted."
        ),
    )
    parser.add_argument(
        "--hub-port", type=int, default=8000, help="port of the hub (default 8000)"
    )
    parser.add_argument(
        "--idp-port",
        type=int,
        default=9443,
        help="port of the OpenID provider (default 9443)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/enclave-hub"),
        help="folder of the hub's database, secrets and logs (default /var/lib/enclave-hub)",
    )
    parser.add_argument(
        "--home-root",
        type=Path,
        default=Path("/home/enclave"),
        help="folder of the researchers' home folders (default /home/enclave)",
    )
    parser.add_argument(
        "--no-serve",
        action="store_true",
        help="prepare the data and project, then exit without starting the hub",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from enclave.cli.init import initialize
    from enclave.demo import prepare_demo_data
    from enclave.hub.launch import print_logins, start_enclave, wait_for_stop_signal

    settings = load_settings()
    logging.getLogger("enclave").setLevel(logging.INFO)

    for line in initialize():
        print(f"created {line}")
    print("preparing the demo dataset (ingest, de-identification, project)...")
    data = prepare_demo_data(settings)
    initialize()  # hands the files written above to the broker's OS user
    state = "prepared" if data.created else "already present"
    print(f"dataset {data.dataset!r} and approved project {data.project!r}: {state}")
    if args.no_serve:
        return 0

    running = start_enclave(
        settings,
        state_dir=args.state_dir,
        hub_port=args.hub_port,
        idp_port=args.idp_port,
        home_root=args.home_root,
    )
    with running:
        print_logins(running)
        print(
            "Log in as alice, accept the data use agreement of "
            f"{data.project!r} on the ethics page ({running.hub_url}/services/ethics/), "
            "then run notebooks/01-quickstart.ipynb. Ctrl-C stops."
        )
        received = wait_for_stop_signal()
        log.info("stopping on %s", received.name)
    return 0
