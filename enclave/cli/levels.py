"""The ``enclave levels`` command: show and edit level rules, classify assets."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
from typing import Any

from enclave.catalog.models import Category
from enclave.config import load_settings
from enclave.errors import ValidationError

__all__ = ["register"]

RULE_OPTIONS = (
    "backup_interval_minutes",
    "retention_days",
    "min_approvals",
    "requires_mfa",
    "deid_required",
    "who_may_access",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "levels",
        help="show and edit the rules of the five levels; reclassify assets",
        description=(
            "Each level has handling rules: who may access it, whether video must "
            "be de-identified, how often it is backed up, how long it is kept, how "
            "many approvals a project needs and whether multi-factor login is "
            "required. Changes are recorded in the audit trail."
        ),
    )
    commands = parser.add_subparsers(dest="levels_command", required=True)

    show = commands.add_parser(
        "show", help="show the rules of each level and the categories"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_guarded, handler=_show)

    edit = commands.add_parser(
        "set",
        help="change the rules of one level",
        description=(
            "Change the rules of one level; options left out keep their value. "
            "Values that break the standard are rejected: levels 3 to 5 are "
            "backed up at least every hour and de-identified before release, "
            "levels 4 and 5 require multi-factor login, and level 5 is kept 15 "
            "to 30 years (5479 to 10957 days)."
        ),
    )
    edit.add_argument("level", type=int, choices=range(1, 6), help="level 1 to 5")
    # Options left out keep their value, so each defaults to "absent".
    edit.add_argument(
        "--backup-interval",
        dest="backup_interval_minutes",
        type=_optional_int,
        default=argparse.SUPPRESS,
        metavar="MINUTES",
        help="minutes between backups, or 'none'",
    )
    edit.add_argument(
        "--retention-days",
        type=_optional_int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="days the video is kept, or 'none'",
    )
    edit.add_argument(
        "--min-approvals",
        type=int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="approvals a project needs",
    )
    edit.add_argument(
        "--requires-mfa",
        type=_yes_no,
        default=argparse.SUPPRESS,
        metavar="yes|no",
        help="whether multi-factor login is required",
    )
    edit.add_argument(
        "--deid-required",
        type=_yes_no,
        default=argparse.SUPPRESS,
        metavar="yes|no",
        help="whether video is de-identified before release",
    )
    edit.add_argument(
        "--who-may-access",
        default=argparse.SUPPRESS,
        metavar="TEXT",
        help="who may access the level's video",
    )
    _add_actor(edit)
    edit.set_defaults(func=_guarded, handler=_set)

    reclassify = commands.add_parser(
        "reclassify",
        help="change or confirm the category and level of an asset",
    )
    reclassify.add_argument("asset", help="asset id")
    reclassify.add_argument(
        "--level", type=int, choices=range(1, 6), help="new level (default: unchanged)"
    )
    reclassify.add_argument(
        "--category",
        choices=[c.value for c in Category],
        help="new category (default: unchanged)",
    )
    reclassify.add_argument(
        "--reason", required=True, help="why it changed or was confirmed"
    )
    _add_actor(reclassify)
    reclassify.set_defaults(func=_guarded, handler=_reclassify)

    review = commands.add_parser(
        "review", help="list assets whose classification is due for its yearly review"
    )
    review.add_argument(
        "--date", metavar="DATE", help="date of the check (default: today)"
    )
    review.add_argument("--json", action="store_true", help="print JSON")
    review.set_defaults(func=_guarded, handler=_review)


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


def _yes_no(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("yes", "y", "true"):
        return True
    if lowered in ("no", "n", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid value {value!r}; use yes or no")


def _optional_int(value: str) -> int | None:
    if value.strip().lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid number {value!r}; use a whole number or 'none'"
        ) from None


def _rule_json(rule: Any) -> dict[str, Any]:
    return {
        "level": rule.level,
        "name": rule.name,
        "description": rule.description,
        "who_may_access": rule.who_may_access,
        "deid_required": rule.deid_required,
        "backup_interval_minutes": rule.backup_interval_minutes,
        "retention_days": rule.retention_days,
        "min_approvals": rule.min_approvals,
        "requires_mfa": rule.requires_mfa,
        "updated_at": rule.updated_at.isoformat(),
        "updated_by": rule.updated_by,
    }


def _show(args: argparse.Namespace) -> int:
    from enclave.catalog.db import Catalog
    from enclave.policy import categories, rules_for

    catalog = Catalog(load_settings().db_url)
    with catalog.session() as session:
        rules = [_rule_json(rules_for(session, level)) for level in range(1, 6)]
    described = [
        {
            "category": info.category.value,
            "name": info.name,
            "description": info.description,
        }
        for info in categories().values()
    ]

    if args.json:
        print(json.dumps({"levels": rules, "categories": described}, indent=2))
        return 0
    for rule in rules:
        backup = rule["backup_interval_minutes"]
        backup_text = f"every {backup} minutes" if backup else "no schedule"
        retention = rule["retention_days"]
        retention_text = f"{retention} days" if retention else "no fixed period"
        print(f"level {rule['level']} ({rule['name']}): {rule['description']}")
        print(f"  who may access:  {rule['who_may_access']}")
        print(f"  de-identify:     {'yes' if rule['deid_required'] else 'no'}")
        print(f"  backup:          {backup_text}")
        print(f"  retention:       {retention_text}")
        print(f"  approvals:       {rule['min_approvals']}")
        print(f"  multi-factor:    {'required' if rule['requires_mfa'] else 'no'}")
        print(f"  last changed:    {rule['updated_at'][:19]} by {rule['updated_by']}")
    print("categories:")
    for entry in described:
        print(f"  {entry['category']:<11} {entry['name']}: {entry['description']}")
    return 0


def _set(args: argparse.Namespace) -> int:
    from enclave.audit import AuditLog
    from enclave.policy import set_rule

    changes = {
        name: getattr(args, name) for name in RULE_OPTIONS if hasattr(args, name)
    }
    if not changes:
        raise ValidationError(
            "nothing to change; pass at least one option such as --backup-interval 60"
        )

    audit = AuditLog.from_settings(load_settings())
    actor = args.actor or getpass.getuser()
    with audit.catalog.session(immediate=True) as session:
        rule = set_rule(session, args.level, actor, audit=audit, **changes)
        summary = _rule_json(rule)
    print(
        f"level {args.level} rules now: "
        + ", ".join(f"{k}={summary[k]}" for k in changes)
    )
    return 0


def _reclassify(args: argparse.Namespace) -> int:
    from enclave.audit import AuditLog
    from enclave.policy import reclassify

    audit = AuditLog.from_settings(load_settings())
    actor = args.actor or getpass.getuser()
    with audit.catalog.session(immediate=True) as session:
        asset = reclassify(
            session,
            audit,
            args.asset,
            level=args.level,
            category=args.category,
            actor=actor,
            reason=args.reason,
        )
        line = f"asset {asset.id} is level {asset.level}, {asset.category.value}"
    print(line)
    return 0


def _review(args: argparse.Namespace) -> int:
    from enclave.catalog.db import Catalog
    from enclave.policy import due_for_review
    from enclave.projects import parse_date

    today = parse_date(args.date, "date") if args.date else dt.date.today()
    catalog = Catalog(load_settings().db_url)
    with catalog.session() as session:
        due: list[dict[str, Any]] = [
            {
                "asset": asset.id,
                "level": asset.level,
                "category": asset.category.value,
                "classified_at": asset.classified_at.isoformat(),
            }
            for asset in due_for_review(session, today)
        ]

    if args.json:
        print(json.dumps(due, indent=2, ensure_ascii=False))
        return 0
    if not due:
        print(f"no classification is due for review on {today.isoformat()}")
        return 0
    for entry in due:
        print(
            f"{entry['asset']}  level {entry['level']}  {entry['category']:<11} "
            f"classified {entry['classified_at'][:10]}"
        )
    return 0
