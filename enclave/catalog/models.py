"""SQLAlchemy models of the catalog: assets, datasets, projects and the audit trail.

Time stamps are timezone-aware UTC. Identifiers of assets and datasets are
random hex strings, so that an identifier never encodes a patient, a date or
a device.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Asset",
    "AssetKind",
    "AuditEvent",
    "AuditHead",
    "Base",
    "Category",
    "DataKey",
    "Dataset",
    "DatasetItem",
    "Grant",
    "HubLogin",
    "LevelRule",
    "MediaType",
    "Project",
    "ProjectApproval",
    "ProjectMember",
    "ProjectStatus",
    "ReidentificationRequest",
    "ReidentificationStatus",
    "new_id",
    "utcnow",
]


def new_id() -> str:
    """Return a random 32-character hex identifier."""
    return uuid.uuid4().hex


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A DateTime stored as naive UTC and read back as timezone-aware UTC.

    MariaDB and SQLite drop the offset, so the offset is normalised here once
    rather than at every call site.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):  # type: ignore[no-untyped-def]
        # MariaDB's DATETIME keeps whole seconds unless asked for microseconds;
        # the audit chain hashes the microseconds, so they must survive.
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(
                f"naive datetime {value!r}; pass a timezone-aware UTC time"
            )
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc)


class Category(str, enum.Enum):
    """The scene that produced a video."""

    DIAGNOSIS = "diagnosis"  # diagnosis and treatment: imaging, endoscopy, surgery
    NURSING = "nursing"  # nursing procedures and rehabilitation training
    MONITORING = "monitoring"  # ward, device and public-area cameras
    TEACHING = "teaching"  # teaching demonstrations and research observation


class AssetKind(str, enum.Enum):
    SOURCE = "source"  # as ingested, identifiable
    DERIVATIVE = "derivative"  # output of a de-identification profile


class MediaType(str, enum.Enum):
    VIDEO = "video"  # a container that FFmpeg and decord read
    DICOM = "dicom"  # a multi-frame DICOM object (ultrasound loop, cine)


class ProjectStatus(str, enum.Enum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"
    ENDED = "ended"


def _enum(cls: type[enum.Enum]) -> Enum:
    # Store the value ("diagnosis"), not the member name, and as a plain
    # string column so that adding a member needs no ALTER TYPE on PostgreSQL.
    return Enum(
        cls,
        values_callable=lambda members: [m.value for m in members],
        native_enum=False,
        length=32,
        validate_strings=True,
    )


class Base(DeclarativeBase):
    pass


class LevelRule(Base):
    """The handling rules of one of the five levels, editable by the institution."""

    __tablename__ = "level_rules"

    level: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    who_may_access: Mapped[str] = mapped_column(Text)
    deid_required: Mapped[bool] = mapped_column(Boolean)
    backup_interval_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    min_approvals: Mapped[int] = mapped_column(Integer, default=1)
    requires_mfa: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128), default="system")


class Asset(Base):
    """One stored, encrypted video or DICOM object: a source or a derivative."""

    __tablename__ = "assets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[AssetKind] = mapped_column(_enum(AssetKind))
    media_type: Mapped[MediaType] = mapped_column(_enum(MediaType))
    category: Mapped[Category] = mapped_column(_enum(Category))
    level: Mapped[int] = mapped_column(Integer, ForeignKey("level_rules.level"))
    original_name: Mapped[str] = mapped_column(String(255))
    consent_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ethics_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)

    # What the probe found.
    container: Mapped[str] = mapped_column(String(64))
    video_codec: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    fps: Mapped[float] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)
    frame_count: Mapped[int] = mapped_column(Integer)
    rotation: Mapped[int] = mapped_column(Integer, default=0)
    variable_frame_rate: Mapped[bool] = mapped_column(Boolean, default=False)
    has_audio: Mapped[bool] = mapped_column(Boolean, default=False)
    probe: Mapped[dict] = mapped_column(JSON, default=dict)

    # Where and how the ciphertext is stored.
    blob_id: Mapped[str] = mapped_column(String(32), unique=True)
    plaintext_size: Mapped[int] = mapped_column(Integer)
    plaintext_sha256: Mapped[str] = mapped_column(String(64))
    chunk_size: Mapped[int] = mapped_column(Integer)

    # Lineage of a derivative.
    source_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("assets.id"), nullable=True
    )
    profile: Mapped[str | None] = mapped_column(String(64), nullable=True)
    deid_report: Mapped[dict | None] = mapped_column(JSON, nullable=True)

    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    classified_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    """When the category and level were last set or confirmed; reviewed yearly."""
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    data_key: Mapped[DataKey | None] = relationship(
        back_populates="asset", uselist=False
    )


class DataKey(Base):
    """The wrapped data key of an asset; deleting the row destroys the asset."""

    __tablename__ = "data_keys"

    asset_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("assets.id"), primary_key=True
    )
    master_key_id: Mapped[str] = mapped_column(String(64))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary(512))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    asset: Mapped[Asset] = relationship(back_populates="data_key")


class Dataset(Base):
    """A named, published set of de-identified derivatives."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[Category] = mapped_column(_enum(Category))
    level: Mapped[int] = mapped_column(Integer, ForeignKey("level_rules.level"))
    profile: Mapped[str] = mapped_column(String(64))
    department: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """Department whose staff may read the dataset at level 4, such as ``ultrasound``.

    Readers must be in the hub group ``dept-<department>``. A level 4 dataset
    without a department is closed to everyone.
    """
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))

    items: Mapped[list[DatasetItem]] = relationship(
        back_populates="dataset", order_by="DatasetItem.path"
    )


class DatasetItem(Base):
    """One derivative inside a dataset, addressed by a path such as ``clips/0001``."""

    __tablename__ = "dataset_items"
    __table_args__ = (UniqueConstraint("dataset_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(String(32), ForeignKey("datasets.id"))
    asset_id: Mapped[str] = mapped_column(String(32), ForeignKey("assets.id"))
    path: Mapped[str] = mapped_column(String(255))

    dataset: Mapped[Dataset] = relationship(back_populates="items")
    asset: Mapped[Asset] = relationship()


class Project(Base):
    """A research project: members, datasets, a purpose and an end date."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    title: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(Text)
    principal_investigator: Mapped[str] = mapped_column(String(128))
    status: Mapped[ProjectStatus] = mapped_column(
        _enum(ProjectStatus), default=ProjectStatus.DRAFT
    )
    deid_profile: Mapped[str] = mapped_column(String(64), default="baseline")
    starts_on: Mapped[dt.date] = mapped_column(Date)
    ends_on: Mapped[dt.date] = mapped_column(Date)
    ethics_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    consent_basis: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    approved_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    """Row version for optimistic locking: concurrent decisions change state once."""

    members: Mapped[list[ProjectMember]] = relationship(back_populates="project")
    grants: Mapped[list[Grant]] = relationship(back_populates="project")
    approvals: Mapped[list[ProjectApproval]] = relationship(back_populates="project")

    __mapper_args__ = {"version_id_col": version}


class ProjectMember(Base):
    __tablename__ = "project_members"
    __table_args__ = (UniqueConstraint("project_id", "username"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(32), ForeignKey("projects.id"))
    username: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32), default="member")
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    project: Mapped[Project] = relationship(back_populates="members")


class ProjectApproval(Base):
    """One reviewer's approval; the level rules set how many a project needs."""

    __tablename__ = "project_approvals"
    __table_args__ = (UniqueConstraint("project_id", "approver"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(32), ForeignKey("projects.id"))
    approver: Mapped[str] = mapped_column(String(128))
    approved_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)

    project: Mapped[Project] = relationship(back_populates="approvals")


class Grant(Base):
    """A project's right to read a dataset, until revoked or the project ends."""

    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("project_id", "dataset_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(32), ForeignKey("projects.id"))
    dataset_id: Mapped[str] = mapped_column(String(32), ForeignKey("datasets.id"))
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    granted_by: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    project: Mapped[Project] = relationship(back_populates="grants")
    dataset: Mapped[Dataset] = relationship()


class AuditEvent(Base):
    """One append-only, hash-chained audit record.

    ``chain_hash`` is an HMAC-SHA256 over the previous record's hash and this
    record's canonical fields, keyed by the audit key outside the database, so
    an edit, deletion or reordering of rows is detected by verification.
    """

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    project: Mapped[str | None] = mapped_column(String(128), nullable=True)
    dataset: Mapped[str | None] = mapped_column(String(128), nullable=True)
    source: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    chain_hash: Mapped[str] = mapped_column(String(64), unique=True)


class HubLogin(Base):
    """The latest hub login of a user: how it was authenticated and the groups.

    The hub writes this row at each login; the broker reads it to apply the
    second-factor rule of levels 4 and 5 and the department rule of level 4.
    Researchers cannot write the catalog, so they cannot forge it.
    """

    __tablename__ = "hub_logins"

    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    logged_in_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    """End of the hub login cookie's lifetime; after it the login counts for nothing."""
    amr: Mapped[list] = mapped_column(JSON, default=list)
    """Authentication methods from the ID token, such as ``["pwd", "otp"]``."""
    acr: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """Authentication context class from the ID token, such as ``urn:enclave:mfa``."""
    groups: Mapped[list] = mapped_column(JSON, default=list)
    """Groups the provider gave at this login, such as ``dept-ultrasound``."""


class ReidentificationStatus(str, enum.Enum):
    """State of a re-identification request in its workflow."""

    PENDING = "pending"  # waiting for a second person's decision
    APPROVED = "approved"  # the requester may reveal the entry once
    DENIED = "denied"
    REVEALED = "revealed"  # the entry was shown, so the request is used up
    EXPIRED = "expired"  # not decided, or not revealed, in time
    WITHDRAWN = "withdrawn"  # withdrawn by the requester


class ReidentificationRequest(Base):
    """A request to read the mapping entry of one pseudonym, decided by a second person.

    ``expires_at`` is the deadline of the next step: the decision while the
    request is pending, the reveal once it is approved.
    """

    __tablename__ = "reidentification_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    pseudonym: Mapped[str] = mapped_column(String(32), index=True)
    requester: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[ReidentificationStatus] = mapped_column(
        _enum(ReidentificationStatus), default=ReidentificationStatus.PENDING
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    approver: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """The second person who approved or denied the request."""
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    revealed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    """Row version for optimistic locking, so concurrent decisions change it once."""

    __mapper_args__ = {"version_id_col": version}


class AuditHead(Base):
    """The single row that serialises appends and records the chain's tip."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    chain_hash: Mapped[str] = mapped_column(String(64))


# The ethics review's tables share this metadata, so Alembic and
# ``Base.metadata`` see them; imported last because they refer to the models above.
from enclave.ethics import models as _ethics_models  # noqa: E402, F401
