"""Create the ethics review tables and the working copies of projects.

Revision ID: 0002_ethics
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002_ethics"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp() -> sa.types.TypeEngine:
    # UTC without offset, with microseconds on MariaDB as in the first revision.
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=32)


_CAUSE = ("ended", "terminated", "suspended")


def upgrade() -> None:
    op.create_table(
        "ethics_applications",
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("review_round", sa.Integer(), nullable=False),
        sa.Column("submitted_at", _timestamp(), nullable=False),
        sa.Column("submitted_by", sa.String(length=128), nullable=False),
        sa.Column("conditions", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("project_id"),
    )
    op.create_table(
        "ethics_amendments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column(
            "status",
            _enum(
                "amendmentstatus",
                "submitted",
                "changes_requested",
                "approved",
                "rejected",
                "withdrawn",
            ),
            nullable=False,
        ),
        sa.Column("add_members", sa.JSON(), nullable=False),
        sa.Column("add_datasets", sa.JSON(), nullable=False),
        sa.Column("new_ends_on", sa.Date(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("review_round", sa.Integer(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("decided_at", _timestamp(), nullable=True),
        sa.Column("conditions", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "ethics_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=32), nullable=False),
        sa.Column("review_round", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=128), nullable=False),
        sa.Column(
            "decision",
            _enum(
                "reviewdecision",
                "approve",
                "approve_with_conditions",
                "request_changes",
                "reject",
            ),
            nullable=False,
        ),
        sa.Column("conditions", sa.Text(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "subject", "review_round", "reviewer"),
    )
    op.create_table(
        "ethics_agreement_acceptances",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("agreement_version", sa.String(length=32), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("text_sha256", sa.String(length=64), nullable=False),
        sa.Column("accepted_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "username", "agreement_version"),
    )
    op.create_table(
        "ethics_notices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("cause", _enum("closurecause", *_CAUSE), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("dismissed_at", _timestamp(), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ethics_notices_username", "ethics_notices", ["username"])
    op.create_table(
        "ethics_access_closures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("cause", _enum("closurecause", *_CAUSE), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("hub_revoked_at", _timestamp(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("reopened_at", _timestamp(), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "working_copies",
        sa.Column("asset_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("destroyed_at", _timestamp(), nullable=True),
        sa.Column("destroyed_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"]),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("asset_id"),
    )


def downgrade() -> None:
    op.drop_table("working_copies")
    op.drop_table("ethics_access_closures")
    op.drop_index("ix_ethics_notices_username", table_name="ethics_notices")
    op.drop_table("ethics_notices")
    op.drop_table("ethics_agreement_acceptances")
    op.drop_table("ethics_reviews")
    op.drop_table("ethics_amendments")
    op.drop_table("ethics_applications")
