"""The ``enclave dataset`` command: list published datasets, set departments."""

from __future__ import annotations

import argparse
import getpass
import json

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="list published datasets")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list datasets with their items")
    listing.add_argument(
        "--json", action="store_true", help="print JSON instead of a table"
    )
    listing.set_defaults(func=_list)

    department = actions.add_parser(
        "set-department",
        help="set the department whose staff may read a level 4 dataset",
        description=(
            "Level 4 data is read only by members of the provider group "
            "dept-DEPARTMENT who logged in with a second factor. A level 4 "
            "dataset without a department is read by no one. The change is "
            "recorded in the audit trail."
        ),
    )
    department.add_argument("dataset", help="dataset name")
    department.add_argument(
        "department",
        help="department name without the 'dept-' prefix, such as ultrasound, "
        "or 'none' to clear it",
    )
    department.add_argument(
        "--as",
        dest="actor",
        metavar="USER",
        help="user recorded as acting (default: the OS user name)",
    )
    department.set_defaults(func=_set_department)


def dataset_rows(catalog) -> list[dict]:  # type: ignore[no-untyped-def]
    """Return one dict per dataset: name, category, level, profile, items."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from enclave.catalog.models import Dataset

    with catalog.session() as session:
        datasets = session.scalars(
            select(Dataset).options(selectinload(Dataset.items)).order_by(Dataset.name)
        ).all()
        return [
            {
                "name": d.name,
                "category": d.category.value,
                "level": d.level,
                "profile": d.profile,
                "department": d.department,
                "created_at": d.created_at.isoformat(timespec="seconds"),
                "created_by": d.created_by,
                "items": [{"path": i.path, "asset_id": i.asset_id} for i in d.items],
            }
            for d in datasets
        ]


def _list(args: argparse.Namespace) -> int:
    from enclave.catalog.db import Catalog
    from enclave.config import load_settings

    catalog = Catalog(load_settings().db_url)
    try:
        rows = dataset_rows(catalog)
    finally:
        catalog.dispose()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'NAME':<32} {'CATEGORY':<10} {'LEVEL':>5} {'PROFILE':<18} ITEMS")
    for row in rows:
        print(
            f"{row['name']:<32} {row['category']:<10} {row['level']:>5} "
            f"{row['profile']:<18} {len(row['items'])}"
        )
    return 0


def _set_department(args: argparse.Namespace) -> int:
    from enclave.audit import AuditLog
    from enclave.catalog.db import database_errors
    from enclave.config import load_settings
    from enclave.policy.logins import set_department

    settings = load_settings()
    department = None if args.department == "none" else args.department
    with database_errors(settings.db_url):
        audit = AuditLog.from_settings(settings)
        with audit.catalog.session(immediate=True) as session:
            dataset = set_department(
                session,
                audit,
                args.dataset,
                department,
                actor=args.actor or getpass.getuser(),
            )
            line = f"dataset {dataset.name} department: {dataset.department or 'none'}"
    print(line)
    return 0
