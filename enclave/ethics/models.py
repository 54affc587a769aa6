"""Tables of the ethics review: reviews, amendments, agreements, notices, closures.

They live on the catalog's declarative ``Base`` so that the catalog's Alembic
migrations create them next to the projects they refer to.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    JSON,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from enclave.catalog.models import Asset, Base, Project, UTCDateTime, _enum, utcnow

__all__ = [
    "AccessClosure",
    "AccessNotice",
    "AgreementAcceptance",
    "Amendment",
    "AmendmentStatus",
    "ClosureCause",
    "EthicsApplication",
    "Review",
    "ReviewDecision",
    "WorkingCopy",
]


class ReviewDecision(enum.StrEnum):
    """One committee member's decision on an application or amendment."""

    APPROVE = "approve"
    APPROVE_WITH_CONDITIONS = "approve_with_conditions"
    REQUEST_CHANGES = "request_changes"
    REJECT = "reject"


class AmendmentStatus(enum.StrEnum):
    SUBMITTED = "submitted"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class ClosureCause(enum.StrEnum):
    """The cause of the end of a project's access."""

    ENDED = "ended"  # the end date passed
    TERMINATED = "terminated"  # stopped for good before the end date
    SUSPENDED = "suspended"  # stopped until a security administrator resumes it


class EthicsApplication(Base):
    """The parts of a project application that the catalog's project row lacks."""

    __tablename__ = "ethics_applications"

    project_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("projects.id"), primary_key=True
    )
    summary: Mapped[str] = mapped_column(Text, default="")
    """The applicant's description of the study and why it needs the video."""
    review_round: Mapped[int] = mapped_column(Integer, default=1)
    """Raised on every resubmission; only votes of the current round count."""
    submitted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_by: Mapped[str] = mapped_column(String(128))
    conditions: Mapped[str] = mapped_column(Text, default="")
    """Conditions attached by the approving committee members, one per line."""

    project: Mapped[Project] = relationship()


class Amendment(Base):
    """A requested change of an approved project's scope, reviewed like an application.

    Until the committee approves it, the project keeps its approved members,
    datasets and end date.
    """

    __tablename__ = "ethics_amendments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(32), ForeignKey("projects.id"))
    status: Mapped[AmendmentStatus] = mapped_column(
        _enum(AmendmentStatus), default=AmendmentStatus.SUBMITTED
    )
    add_members: Mapped[list] = mapped_column(JSON, default=list)
    add_datasets: Mapped[list] = mapped_column(JSON, default=list)
    new_ends_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    review_round: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    conditions: Mapped[str] = mapped_column(Text, default="")

    project: Mapped[Project] = relationship()


class Review(Base):
    """One committee member's vote on an application or an amendment in one round."""

    __tablename__ = "ethics_reviews"
    __table_args__ = (
        UniqueConstraint("project_id", "subject", "review_round", "reviewer"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(32), ForeignKey("projects.id"))
    subject: Mapped[str] = mapped_column(String(32))
    """``application`` or ``amendment:<id>``."""
    review_round: Mapped[int] = mapped_column(Integer)
    reviewer: Mapped[str] = mapped_column(String(128))
    decision: Mapped[ReviewDecision] = mapped_column(_enum(ReviewDecision))
    conditions: Mapped[str] = mapped_column(Text, default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AgreementAcceptance(Base):
    """A member's acceptance of one version of the data use agreement for a project."""

    __tablename__ = "ethics_agreement_acceptances"
    __table_args__ = (UniqueConstraint("project_id", "username", "agreement_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(32), ForeignKey("projects.id"))
    username: Mapped[str] = mapped_column(String(128))
    agreement_version: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(16))
    text_sha256: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the exact agreement text shown to the member, in hex."""
    accepted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AccessNotice(Base):
    """A message telling a member why their access to a project ended."""

    __tablename__ = "ethics_notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(128), index=True)
    project_id: Mapped[str] = mapped_column(String(32), ForeignKey("projects.id"))
    cause: Mapped[ClosureCause] = mapped_column(_enum(ClosureCause))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    dismissed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    project: Mapped[Project] = relationship()


class AccessClosure(Base):
    """The end of a project's access, and how far its revocation in the hub has come.

    A closure is created once per suspension, termination or end of a
    project. The revocation sweep retries the hub steps (group membership,
    servers, tokens) until ``hub_revoked_at`` is set.
    """

    __tablename__ = "ethics_access_closures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(32), ForeignKey("projects.id"))
    cause: Mapped[ClosureCause] = mapped_column(_enum(ClosureCause))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    members: Mapped[list] = mapped_column(JSON, default=list)
    """Hub user names whose access this closure revokes."""
    hub_revoked_at: Mapped[dt.datetime | None] = mapped_column(
        UTCDateTime, nullable=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    reopened_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """Set when a suspended project is resumed."""

    project: Mapped[Project] = relationship()


class WorkingCopy(Base):
    """An asset that a project made for its own work, destroyed when the project ends.

    A working copy is an ordinary encrypted asset (for example a re-encoded
    clip or a derived dataset) recorded here with the project that owns it.
    Destroying it deletes its :class:`~enclave.catalog.models.DataKey` row,
    which leaves the ciphertext unreadable.
    """

    __tablename__ = "working_copies"

    asset_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("assets.id"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(String(32), ForeignKey("projects.id"))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    destroyed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)

    asset: Mapped[Asset] = relationship()
    project: Mapped[Project] = relationship()
