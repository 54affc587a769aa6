"""The ``enclave project`` command: create, review, terminate and list projects."""

from __future__ import annotations

import argparse
import getpass
import json
from typing import Any

from enclave.catalog.models import Project, ProjectStatus
from enclave.config import load_settings

__all__ = ["project_summary", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "project",
        help="create, review, terminate and list research projects",
        description=(
            "Research projects name a principal investigator, members, datasets "
            "and dates. A project starts as a draft, is submitted, and is approved "
            "by reviewers who are neither its principal investigator nor members. "
            "Every change is recorded in the audit trail."
        ),
    )
    commands = parser.add_subparsers(dest="project_command", required=True)

    create = commands.add_parser("create", help="create a draft project")
    create.add_argument("name", help="3-64 lowercase letters, digits and dashes")
    create.add_argument("--title", required=True, help="title of the project")
    create.add_argument("--purpose", required=True, help="what the data is used for")
    create.add_argument(
        "--pi", required=True, help="user name of the principal investigator"
    )
    create.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="USER",
        help="user name of a member (repeat for each)",
    )
    create.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME",
        required=True,
        help="dataset the project reads (repeat for each)",
    )
    create.add_argument(
        "--start", required=True, metavar="DATE", help="first day, YYYY-MM-DD"
    )
    create.add_argument(
        "--end", required=True, metavar="DATE", help="last day, YYYY-MM-DD"
    )
    create.add_argument(
        "--profile",
        default="baseline",
        help="de-identification profile (default: baseline)",
    )
    create.add_argument("--ethics", metavar="REF", help="ethics approval reference")
    create.add_argument("--consent", metavar="BASIS", help="legal basis of consent")
    _add_actor(create)
    create.set_defaults(func=_guarded, handler=_create)

    for name, help_text in (
        ("submit", "submit a draft project for review (principal investigator)"),
        ("approve", "approve a submitted project (reviewer)"),
        ("reject", "reject a submitted project (reviewer)"),
        ("terminate", "end a project now and revoke its access"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("name", help="project name")
        command.add_argument(
            "--reason",
            required=name in ("reject", "terminate"),
            help="why; required to reject or terminate, a comment when approving",
        )
        _add_actor(command)
        command.set_defaults(func=_guarded, handler=_decide, decision=name)

    listing = commands.add_parser("list", help="list projects")
    listing.add_argument(
        "--status",
        choices=[status.value for status in ProjectStatus],
        help="only projects with this status",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_guarded, handler=_list)


def _guarded(args: argparse.Namespace) -> int:
    from enclave.catalog.db import database_errors

    with database_errors(load_settings().db_url):
        return int(args.handler(args))


def _add_actor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as",
        dest="actor",
        metavar="USER",
        help="user recorded as acting (default: the OS user name)",
    )


def _open(args: argparse.Namespace) -> tuple[Any, Any, str]:
    from enclave.audit import AuditLog

    audit = AuditLog.from_settings(load_settings())
    return audit.catalog, audit, args.actor or getpass.getuser()


def _create(args: argparse.Namespace) -> int:
    from enclave.projects import create_project

    catalog, audit, actor = _open(args)
    with catalog.session(immediate=True) as session:
        project = create_project(
            session,
            name=args.name,
            title=args.title,
            purpose=args.purpose,
            pi=args.pi,
            members=args.member,
            datasets=args.dataset,
            starts_on=args.start,
            ends_on=args.end,
            created_by=actor,
            audit=audit,
            deid_profile=args.profile,
            ethics_ref=args.ethics,
            consent_basis=args.consent,
        )
        name = project.name
    print(f"created project {name} (draft)")
    print(f"submit it for review with: enclave project submit {name}")
    return 0


def _decide(args: argparse.Namespace) -> int:
    from enclave import projects

    catalog, audit, actor = _open(args)
    with catalog.session(immediate=True) as session:
        if args.decision == "submit":
            project = projects.submit_project(session, args.name, actor, audit=audit)
        elif args.decision == "approve":
            project = projects.approve_project(
                session, args.name, actor, audit=audit, comment=args.reason
            )
        elif args.decision == "reject":
            project = projects.reject_project(
                session, args.name, actor, audit=audit, reason=args.reason
            )
        else:
            project = projects.terminate_project(
                session, args.name, actor, audit=audit, reason=args.reason
            )
        status = project.status.value
        approvals = len(project.approvals)
        required = projects.required_approvals(session, project)

    line = f"project {args.name} is {status}"
    if args.decision == "approve" and status == ProjectStatus.SUBMITTED.value:
        line += f" ({approvals} of {required} approvals)"
    print(line)
    return 0


def project_summary(project: Project) -> dict[str, Any]:
    """Return the fields of ``project`` as JSON-serialisable values."""
    members = [m for m in project.members if m.removed_at is None]
    return {
        "name": project.name,
        "title": project.title,
        "purpose": project.purpose,
        "status": project.status.value,
        "pi": project.principal_investigator,
        "members": sorted(m.username for m in members if m.role != "pi"),
        "datasets": sorted(
            grant.dataset.name for grant in project.grants if grant.revoked_at is None
        ),
        "starts_on": project.starts_on.isoformat(),
        "ends_on": project.ends_on.isoformat(),
        "deid_profile": project.deid_profile,
        "ethics_ref": project.ethics_ref,
        "consent_basis": project.consent_basis,
        "created_by": project.created_by,
        "created_at": project.created_at.isoformat(),
        "approvals": sorted(a.approver for a in project.approvals),
        "approved_at": project.approved_at.isoformat() if project.approved_at else None,
        "ended_at": project.ended_at.isoformat() if project.ended_at else None,
        "end_reason": project.end_reason,
    }


def _list(args: argparse.Namespace) -> int:
    from enclave.catalog.db import Catalog
    from enclave.projects import list_projects

    catalog = Catalog(load_settings().db_url)
    with catalog.session() as session:
        summaries = [
            project_summary(p) for p in list_projects(session, status=args.status)
        ]

    if args.json:
        print(json.dumps(summaries, indent=2, ensure_ascii=False))
        return 0
    if not summaries:
        print("no projects")
        return 0
    print(f"{'NAME':<24} {'STATUS':<18} {'PI':<14} {'ENDS ON':<10}  DATASETS")
    for s in summaries:
        print(
            f"{s['name']:<24} {s['status']:<18} {s['pi']:<14} {s['ends_on']:<10}  "
            f"{', '.join(s['datasets'])}"
        )
    return 0
