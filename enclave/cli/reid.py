"""The ``enclave reid`` command: request, decide and reveal re-identifications."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
from typing import Any

from enclave.catalog.models import ReidentificationRequest, ReidentificationStatus
from enclave.config import load_settings

__all__ = ["register", "request_summary"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reid",
        help="re-identify an ai-diagnosis pseudonym under the two-person rule",
        description=(
            "Re-identification reads the encrypted mapping entry of a pseudonym "
            "that the ai-diagnosis profile wrote. A member of the requester group "
            "requests it with a reason, a different member of the approver group "
            "approves or denies it, and the requester reveals the entry once "
            "before the approval expires. Each person needs a current hub login "
            "with a second factor. Every step, granted or rejected, is recorded "
            "in the audit trail; the revealed identity never is. Groups and time "
            "limits are set by ENCLAVE_REID_REQUESTER_GROUP (default "
            "reid-requesters), ENCLAVE_REID_APPROVER_GROUP (default "
            "reid-approvers), ENCLAVE_REID_PENDING_HOURS (default 168) and "
            "ENCLAVE_REID_REVEAL_HOURS (default 24)."
        ),
    )
    commands = parser.add_subparsers(dest="reid_command", required=True)

    request = commands.add_parser(
        "request", help="request the mapping entry of a pseudonym (requester)"
    )
    subject = request.add_mutually_exclusive_group(required=True)
    subject.add_argument(
        "pseudonym",
        nargs="?",
        help="32 hex digits, such as the 'identifiers.subject' of a derivative",
    )
    subject.add_argument(
        "--dicom-uid",
        metavar="UID",
        help="a UID that the ai-diagnosis profile wrote into a DICOM derivative",
    )
    request.add_argument(
        "--reason", required=True, help="why the identity is needed; audited"
    )
    _add_actor(request)
    request.set_defaults(func=_guarded, handler=_request)

    approve = commands.add_parser(
        "approve", help="approve another person's pending request (approver)"
    )
    approve.add_argument("request_id", metavar="ID", help="request id")
    _add_actor(approve)
    approve.set_defaults(func=_guarded, handler=_approve)

    deny = commands.add_parser(
        "deny", help="deny another person's pending request (approver)"
    )
    deny.add_argument("request_id", metavar="ID", help="request id")
    deny.add_argument("--reason", required=True, help="why the request is denied")
    _add_actor(deny)
    deny.set_defaults(func=_guarded, handler=_deny)

    withdraw = commands.add_parser(
        "withdraw", help="withdraw your own pending or approved request"
    )
    withdraw.add_argument("request_id", metavar="ID", help="request id")
    _add_actor(withdraw)
    withdraw.set_defaults(func=_guarded, handler=_withdraw)

    reveal = commands.add_parser(
        "reveal",
        help="print the mapping entry of your approved request, once (requester)",
    )
    reveal.add_argument("request_id", metavar="ID", help="request id")
    _add_actor(reveal)
    reveal.set_defaults(func=_guarded, handler=_reveal)

    listing = commands.add_parser("list", help="list re-identification requests")
    listing.add_argument(
        "--status",
        choices=[status.value for status in ReidentificationStatus],
        help="only requests with this status",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_guarded, handler=_list)


def _add_actor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as",
        dest="actor",
        metavar="USER",
        help=(
            "hub user acting (default: the OS user name); the user's current hub "
            "login must carry the role's group and a second factor"
        ),
    )


def _guarded(args: argparse.Namespace) -> int:
    from enclave.catalog.db import database_errors

    with database_errors(load_settings().db_url):
        return int(args.handler(args))


def _workflow(*, with_keys: bool = False) -> Any:
    from enclave.audit import AuditLog
    from enclave.deid.pseudonyms import Reidentification, ReidentificationPolicy
    from enclave.vault import KeyRing

    settings = load_settings()
    policy = ReidentificationPolicy.from_environ()
    audit = AuditLog.from_settings(settings)
    # Of the workflow steps only a reveal decrypts, so only a reveal loads the
    # master key.
    keyring = (
        KeyRing.load(settings.master_key_path, vault_dir=settings.vault_dir)
        if with_keys
        else None
    )
    return Reidentification(
        audit.catalog,
        audit,
        settings.home / "pseudonyms",
        keyring,
        policy,
        source="cli",
        operator=getpass.getuser(),
    )


def _actor(args: argparse.Namespace) -> str:
    return args.actor or getpass.getuser()


def _request(args: argparse.Namespace) -> int:
    from enclave.errors import NotFound

    pseudonym = args.pseudonym
    if args.dicom_uid is not None:
        pseudonym = _dicom_uid_pseudonym(args.dicom_uid)
    try:
        request = _workflow().request(
            pseudonym, requester=_actor(args), reason=args.reason
        )
    except NotFound as exc:
        if args.dicom_uid is None:
            raise
        raise NotFound(
            f"DICOM UID {args.dicom_uid!r} has no mapping entry; pass a UID that "
            "the ai-diagnosis profile wrote into a derivative, not an original one"
        ) from exc
    print(
        f"requested re-identification {request.id} of pseudonym "
        f"{request.pseudonym}; it waits for a decision until "
        f"{_time(request.expires_at)}"
    )
    print(
        "a second person with the approver role approves it with: "
        f"enclave reid approve {request.id} --as USER"
    )
    return 0


def _dicom_uid_pseudonym(uid: str) -> str:
    # The mapping entry of a replaced UID is stored under the keyed pseudonym
    # of the replacement, so finding it needs the pseudonym key.
    from enclave.deid.pseudonyms import PseudonymStore
    from enclave.vault import KeyRing

    settings = load_settings()
    keyring = KeyRing.load(settings.master_key_path, vault_dir=settings.vault_dir)
    store = PseudonymStore(settings.home / "pseudonyms", keyring, create=False)
    return store.pseudonym(uid.strip(), namespace="dicom-uid")


def _approve(args: argparse.Namespace) -> int:
    request = _workflow().approve(args.request_id, approver=_actor(args))
    print(
        f"request {request.id} approved; {request.requester} may reveal it once "
        f"until {_time(request.expires_at)} with: enclave reid reveal "
        f"{request.id} --as {request.requester}"
    )
    return 0


def _deny(args: argparse.Namespace) -> int:
    request = _workflow().deny(
        args.request_id, approver=_actor(args), reason=args.reason
    )
    print(f"request {request.id} denied")
    return 0


def _withdraw(args: argparse.Namespace) -> int:
    request = _workflow().withdraw(args.request_id, requester=_actor(args))
    print(f"request {request.id} withdrawn")
    return 0


def _reveal(args: argparse.Namespace) -> int:
    entry = _workflow(with_keys=True).reveal(args.request_id, requester=_actor(args))
    print(json.dumps(entry, indent=2, sort_keys=True, ensure_ascii=False))
    return 0


def request_summary(
    request: ReidentificationRequest, status: ReidentificationStatus
) -> dict[str, Any]:
    """Return the fields of ``request`` as JSON values, with ``status`` as shown."""
    return {
        "id": request.id,
        "pseudonym": request.pseudonym,
        "status": status.value,
        "requester": request.requester,
        "reason": request.reason,
        "created_at": request.created_at.isoformat(),
        "expires_at": request.expires_at.isoformat(),
        "approver": request.approver,
        "decided_at": request.decided_at.isoformat() if request.decided_at else None,
        "decision_reason": request.decision_reason,
        "revealed_at": (
            request.revealed_at.isoformat() if request.revealed_at else None
        ),
    }


def _list(args: argparse.Namespace) -> int:
    from enclave.catalog.models import utcnow
    from enclave.deid.pseudonyms import effective_status

    status = ReidentificationStatus(args.status) if args.status else None
    requests = _workflow().list_requests(status)
    now = utcnow()
    summaries = [request_summary(r, effective_status(r, now)) for r in requests]

    if args.json:
        print(json.dumps(summaries, indent=2, ensure_ascii=False))
        return 0
    if not summaries:
        print("no re-identification requests")
        return 0
    print(
        f"{'ID':<32}  {'STATUS':<9}  {'PSEUDONYM':<32}  {'REQUESTER':<14}  "
        f"{'APPROVER':<14}  EXPIRES"
    )
    for summary, request in zip(summaries, requests, strict=True):
        print(
            f"{summary['id']:<32}  {summary['status']:<9}  "
            f"{summary['pseudonym']:<32}  {summary['requester']:<14}  "
            f"{summary['approver'] or '-':<14}  "
            f"{_time(request.expires_at)}"
        )
    return 0


def _time(moment: dt.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"
