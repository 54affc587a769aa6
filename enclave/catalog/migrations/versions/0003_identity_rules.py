"""Add the department of datasets and the record of each user's hub login.

Revision ID: 0003_identity_rules
Revises: 0002_ethics
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003_identity_rules"
down_revision: str | None = "0002_ethics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp() -> sa.types.TypeEngine:
    # UTC without offset, with microseconds on MariaDB as in the first revision.
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("department", sa.String(length=64), nullable=True))
    op.create_table(
        "hub_logins",
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("logged_in_at", _timestamp(), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=False),
        sa.Column("amr", sa.JSON(), nullable=False),
        sa.Column("acr", sa.String(length=128), nullable=True),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("username"),
    )


def downgrade() -> None:
    op.drop_table("hub_logins")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("department")
