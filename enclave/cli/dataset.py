"""The ``enclave dataset`` command: list published datasets."""

from __future__ import annotations

import argparse
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
