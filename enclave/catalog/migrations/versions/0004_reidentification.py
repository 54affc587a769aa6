"""Create the table of re-identification requests.

Revision ID: 0004_reidentification
Revises: 0003_identity_rules
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004_reidentification"
down_revision: str | None = "0003_identity_rules"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp() -> sa.types.TypeEngine:
    # UTC without offset, with microseconds on MariaDB as in the first revision.
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "reidentification_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("pseudonym", sa.String(length=32), nullable=False),
        sa.Column("requester", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "approved",
                "denied",
                "revealed",
                "expired",
                "withdrawn",
                name="reidentificationstatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=False),
        sa.Column("approver", sa.String(length=128), nullable=True),
        sa.Column("decided_at", _timestamp(), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("revealed_at", _timestamp(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_reidentification_requests_pseudonym",
        "reidentification_requests",
        ["pseudonym"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_reidentification_requests_pseudonym",
        table_name="reidentification_requests",
    )
    op.drop_table("reidentification_requests")
