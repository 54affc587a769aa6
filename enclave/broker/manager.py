"""Request handling of the broker: authorisation, decryption, decoding, audit.

Every method here runs in a worker thread and opens its own catalog session.
The handlers in :mod:`enclave.broker.handlers` only translate HTTP.
"""

from __future__ import annotations

import logging
import threading
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from enclave.broker.config import BrokerConfig
from enclave.broker.decode import DecodedAsset, DecoderCache
from enclave.catalog.models import (
    Asset,
    DataKey,
    Dataset,
    DatasetItem,
    Grant,
    Project,
    ProjectMember,
)
from enclave.errors import AuditUnavailable, NotFound, PermissionDenied, ValidationError
from enclave.policy.logins import check_identity_rules
from enclave.projects import authorize_read
from enclave.vault import open_asset

if TYPE_CHECKING:
    from enclave.audit import AuditLog
    from enclave.catalog.db import Catalog
    from enclave.vault import Vault

__all__ = ["AUDIT_SOURCE", "DataManager", "ItemInfo", "Requester"]

log = logging.getLogger(__name__)

AUDIT_SOURCE = "broker"
OUTCOME_SUCCESS = "success"
OUTCOME_DENIED = "denied"


@dataclass(frozen=True)
class Requester:
    """The hub user behind a request and the process that sent it."""

    user: str
    uid: int
    pid: int


@dataclass(frozen=True)
class ItemInfo:
    """Shape and timing of one item, as the broker's decoder reports it."""

    frame_count: int
    height: int
    width: int
    fps: float
    timestamps: np.ndarray
    """Start time of each frame in seconds, float64."""


class DataManager:
    """Serves the frames of granted datasets and records every access.

    Parameters
    ----------
    catalog : enclave.catalog.db.Catalog
        Catalog of datasets, projects and keys.
    vault : enclave.vault.Vault
        Encrypted store of the assets.
    audit : enclave.audit.AuditLog
        Audit trail; a read whose record cannot be written is not served.
    config : BrokerConfig
        Request limits and cache sizes.
    """

    def __init__(
        self, catalog: Catalog, vault: Vault, audit: AuditLog, config: BrokerConfig
    ) -> None:
        self.catalog = catalog
        self.vault = vault
        self.audit = audit
        self.config = config
        self.cache = DecoderCache(
            config.decoder_cache_entries, config.decoder_cache_bytes
        )
        self._item_info: dict[str, ItemInfo] = {}
        # One append at a time from this process: the chain head is a single
        # row, and SQLite fails parallel writers with "database is locked".
        self._audit_lock = threading.Lock()

    def list_datasets(self, requester: Requester) -> list[dict[str, Any]]:
        """Return the datasets ``requester`` may read today, with their project."""
        readable = []
        with self.catalog.session() as session:
            names = session.scalars(select(Dataset.name).order_by(Dataset.name)).all()
            for name in names:
                try:
                    project, dataset = authorize_read(session, requester.user, name)
                    check_identity_rules(session, requester.user, dataset)
                except PermissionDenied:
                    continue
                readable.append(_dataset_summary(dataset, project.name))

        self._record(
            requester, "data.list", OUTCOME_SUCCESS, detail={"datasets": len(readable)}
        )
        return readable

    def describe(self, requester: Requester, dataset_name: str) -> dict[str, Any]:
        """Return a dataset's items with their shape and frame times.

        Raises
        ------
        PermissionDenied, NotFound
            After recording the refusal in the audit trail.
        """
        with self.catalog.session() as session:
            project, dataset = self._authorize(
                session, requester, "data.list", dataset_name
            )
            items = []
            for item in dataset.items:
                if not _is_readable(item):
                    continue
                info = self._info(item)
                items.append(_item_summary(item, info))
            summary = _dataset_summary(dataset, project.name)
            project_name = project.name

        summary["items"] = items
        summary["limits"] = {
            "max_frames_per_request": self.config.max_frames_per_request,
            "max_bytes_per_request": self.config.max_bytes_per_request,
        }
        self._record(
            requester,
            "data.list",
            OUTCOME_SUCCESS,
            project=project_name,
            dataset=dataset_name,
            detail={"items": len(items)},
        )
        return summary

    def read_frames(
        self, requester: Requester, dataset_name: str, path: str, start: int, stop: int
    ) -> np.ndarray:
        """Decode frames ``[start, stop)`` of one item and record the read.

        The ``data.read`` audit record is written before the frames are
        returned; if it cannot be written, :class:`AuditUnavailable` is
        raised and nothing is returned.

        Raises
        ------
        ValidationError
            If the range is empty, reversed, past the item's end or over a limit.
        PermissionDenied, NotFound
            After recording the refusal in the audit trail.
        AuditUnavailable
            If the read cannot be recorded.
        """
        self._check_range_size(start, stop)

        with self.catalog.session() as session:
            project, dataset = self._authorize(
                session, requester, "data.read", dataset_name
            )
            item = self._find_item(session, dataset, path)
            entry = self._open(item)
            project_name = project.name
            asset_id = item.asset_id

        source = entry.source
        self._check_range_bounds(
            source.frame_count, source.height, source.width, start, stop
        )
        with entry.lock:
            frames = source.read(start, stop)

        self._record(
            requester,
            "data.read",
            OUTCOME_SUCCESS,
            project=project_name,
            dataset=dataset_name,
            target=asset_id,
            detail={"path": path, "frames": [start, stop]},
        )
        return frames

    def _authorize(
        self, session: Session, requester: Requester, action: str, dataset_name: str
    ) -> tuple[Project, Dataset]:
        """Return the project and dataset ``requester`` may read, or raise.

        An unknown dataset and one that no project of the requester is granted
        get the same PermissionDenied, so that the error does not reveal
        which dataset names exist. The audit record keeps the real reason.
        """
        try:
            project, dataset = authorize_read(session, requester.user, dataset_name)
            # The login rules of levels 4 and 5 come after the project's, so
            # that a non-member learns nothing about the dataset's department.
            check_identity_rules(session, requester.user, dataset)
            return project, dataset
        except (PermissionDenied, NotFound) as exc:
            # Probing for dataset names is recorded like any other refusal.
            self._record(
                requester,
                action,
                OUTCOME_DENIED,
                dataset=dataset_name,
                detail={"reason": str(exc)},
            )
            if isinstance(exc, NotFound) or not _is_granted_to_member(
                session, requester.user, dataset_name
            ):
                raise PermissionDenied(
                    f"dataset {dataset_name!r} does not exist or no current project "
                    f"of {requester.user!r} is granted it; check the name with "
                    "list_datasets() or ask your project owner for a grant"
                ) from None
            raise

    def _open(self, item: DatasetItem) -> DecodedAsset:
        asset = item.asset

        def load() -> tuple[str, bytes, float]:
            with closing(open_asset(self.vault, asset)) as reader:
                plaintext = reader.read()
            return asset.media_type.value, plaintext, float(asset.fps or 0.0)

        return self.cache.get_or_open(asset.id, load)

    def _info(self, item: DatasetItem) -> ItemInfo:
        info = self._item_info.get(item.asset_id)
        if info is None:
            source = self._open(item).source
            info = ItemInfo(
                frame_count=source.frame_count,
                height=source.height,
                width=source.width,
                fps=source.fps,
                timestamps=np.asarray(source.timestamps, dtype=np.float64),
            )
            self._item_info[item.asset_id] = info
        return info

    def _check_range_size(self, start: int, stop: int) -> None:
        if start < 0:
            raise ValidationError(f"start={start} is negative; the first frame is 0")
        if stop <= start:
            raise ValidationError(
                f"empty frame range [{start}, {stop}); stop must be greater than start"
            )
        limit = self.config.max_frames_per_request
        if stop - start > limit:
            raise ValidationError(
                f"{stop - start} frames requested; one request may read at most "
                f"{limit}, so split the range"
            )

    def _check_range_bounds(
        self, frame_count: int, height: int, width: int, start: int, stop: int
    ) -> None:
        if stop > frame_count:
            raise ValidationError(
                f"stop={stop} is past the end of the item, "
                f"which has {frame_count} frames"
            )
        size = (stop - start) * height * width * 3
        limit = self.config.max_bytes_per_request
        if size > limit:
            per_request = max(1, limit // (height * width * 3))
            raise ValidationError(
                f"{stop - start} frames of {width}x{height} are {size} bytes; one "
                f"request may read at most {limit} bytes ({per_request} such frames)"
            )

    def _record(
        self, requester: Requester, action: str, outcome: str, **fields: Any
    ) -> None:
        detail = dict(fields.pop("detail", None) or {})
        detail.update(uid=requester.uid, pid=requester.pid)
        self.append_audit(
            actor=requester.user,
            action=action,
            outcome=outcome,
            detail=detail,
            **fields,
        )

    def evict_destroyed(self) -> int:
        """Drop destroyed assets from memory; return how many were dropped.

        A destroyed asset is never served again because every request checks
        its data key, but its plaintext would stay in the cache until
        evicted. The server calls this periodically.
        """
        cached = self.cache.asset_ids()
        if not cached:
            return 0
        with self.catalog.session() as session:
            readable = set(
                session.scalars(
                    select(Asset.id)
                    .join(DataKey, DataKey.asset_id == Asset.id)
                    .where(Asset.id.in_(cached), Asset.destroyed_at.is_(None))
                )
            )
        destroyed = [asset_id for asset_id in cached if asset_id not in readable]
        for asset_id in destroyed:
            self._forget(asset_id)
        if destroyed:
            log.info("dropped %d destroyed assets from memory", len(destroyed))
        return len(destroyed)

    def _find_item(self, session: Session, dataset: Dataset, path: str) -> DatasetItem:
        item = session.scalars(
            select(DatasetItem).where(
                DatasetItem.dataset_id == dataset.id, DatasetItem.path == path
            )
        ).one_or_none()
        if item is not None and not _is_readable(item):
            self._forget(item.asset_id)
            item = None
        if item is None:
            raise NotFound(f"dataset {dataset.name!r} has no item {path!r}")
        return item

    def _forget(self, asset_id: str) -> None:
        self.cache.discard(asset_id)
        self._item_info.pop(asset_id, None)

    def append_audit(self, **fields: Any) -> None:
        """Append one broker event to the audit trail, or raise AuditUnavailable."""
        try:
            with self._audit_lock:
                self.audit.append(source=AUDIT_SOURCE, **fields)
        except AuditUnavailable:
            raise
        except (SQLAlchemyError, OSError) as exc:
            # Fail closed: whatever stops the record stops the response.
            log.error("audit append of %s failed: %s", fields.get("action"), exc)
            raise AuditUnavailable("the audit trail cannot be written") from exc


def _is_granted_to_member(session: Session, username: str, dataset_name: str) -> bool:
    """Return True if a project that ``username`` belongs to has a grant of the dataset.

    The grant may be revoked and the project may have ended. Such a user has
    seen the dataset through the project, so the detailed PermissionDenied is raised.
    """
    query = (
        select(Grant.id)
        .join(Dataset, Grant.dataset_id == Dataset.id)
        .join(ProjectMember, ProjectMember.project_id == Grant.project_id)
        .where(
            Dataset.name == dataset_name,
            ProjectMember.username == username,
            ProjectMember.removed_at.is_(None),
        )
        .limit(1)
    )
    return session.scalars(query).first() is not None


def _is_readable(item: DatasetItem) -> bool:
    # A destroyed asset keeps its catalog row but has lost its data key.
    return item.asset.destroyed_at is None and item.asset.data_key is not None


def _dataset_summary(dataset: Dataset, project: str) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "description": dataset.description,
        "category": dataset.category.value,
        "level": dataset.level,
        "profile": dataset.profile,
        "department": dataset.department,
        "project": project,
    }


def _item_summary(item: DatasetItem, info: ItemInfo) -> dict[str, Any]:
    return {
        "path": item.path,
        "asset_id": item.asset_id,
        "media_type": item.asset.media_type.value,
        "frame_count": info.frame_count,
        "height": info.height,
        "width": info.width,
        "channels": 3,
        "fps": info.fps,
        "timestamps": info.timestamps.tolist(),
    }
