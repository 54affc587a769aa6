"""The ``enclave audit`` command: verify and list the audit trail, run the collector."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from enclave.config import load_settings
from enclave.errors import ValidationError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="verify and list the audit trail, or run the audit collector",
        description=(
            "The audit trail is a hash chain keyed by the audit key; 'verify' "
            "checks every record and exits with status 1 if any was edited, "
            "deleted, reordered or forged."
        ),
    )
    commands = parser.add_subparsers(dest="audit_command", required=True)

    verify = commands.add_parser("verify", help="check the hash chain")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=_guarded, handler=_verify)

    listing = commands.add_parser("list", help="list audit records, oldest first")
    listing.add_argument("--actor", help="only records of this user")
    listing.add_argument("--action", help="only this action, e.g. data.read")
    listing.add_argument("--outcome", help="only success, denied or failure")
    listing.add_argument("--project", help="only records of this project")
    listing.add_argument("--dataset", help="only records of this dataset")
    listing.add_argument(
        "--since",
        metavar="TIME",
        help="only records at or after this ISO date or time (UTC)",
    )
    listing.add_argument(
        "--limit", type=int, default=50, help="show the newest N records (default: 50)"
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_guarded, handler=_list)

    serve = commands.add_parser(
        "serve",
        help="run the audit collector that researchers' processes send events to",
    )
    serve.add_argument(
        "--socket",
        metavar="PATH",
        help="Unix socket to listen on (default: from settings)",
    )
    serve.set_defaults(func=_serve)


def _guarded(args: argparse.Namespace) -> int:
    from enclave.catalog.db import database_errors

    with database_errors(load_settings().db_url):
        return int(args.handler(args))


def _audit_log() -> Any:
    from enclave.audit import AuditLog

    return AuditLog.from_settings(load_settings())


def _verify(args: argparse.Namespace) -> int:
    report = _audit_log().verify()
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "count": report.count,
                    "first_bad_seq": report.first_bad_seq,
                    "reason": report.reason,
                    "head_seq": report.head_seq,
                }
            )
        )
    else:
        print(report, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _parse_since(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        since = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"invalid --since {value!r}; use an ISO date or time such as 2026-12-01 "
            "or 2026-12-01T08:00"
        ) from None
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    return since


def _event_json(event: Any) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "outcome": event.outcome,
        "source": event.source,
        "target": event.target,
        "project": event.project,
        "dataset": event.dataset,
        "detail": event.detail,
    }


def _list(args: argparse.Namespace) -> int:
    events = _audit_log().events(
        actor=args.actor,
        action=args.action,
        outcome=args.outcome,
        project=args.project,
        dataset=args.dataset,
        since=_parse_since(args.since),
        limit=args.limit,
    )
    if args.json:
        print(
            json.dumps([_event_json(e) for e in events], indent=2, ensure_ascii=False)
        )
        return 0
    for event in events:
        scope = " ".join(
            f"{name}={value}"
            for name, value in (
                ("project", event.project),
                ("dataset", event.dataset),
                ("target", event.target),
            )
            if value
        )
        print(
            f"{event.seq:>6} {event.at:%Y-%m-%d %H:%M:%S} {event.actor:<14} "
            f"{event.action:<18} {event.outcome:<8} {scope}".rstrip()
        )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from enclave.audit import service

    service.serve(load_settings(), args.socket)
    return 0
