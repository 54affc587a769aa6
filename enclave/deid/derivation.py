"""Publish a de-identified dataset from source assets in the vault.

Every source is read into memory, de-identified with one profile and stored
as a derivative; the dataset and its items (``clips/0001``, ``clips/0002``,
...) are created only when every source passed. If any source fails, the
derivatives written so far are deleted and no dataset exists.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from enclave.catalog.models import (
    Asset,
    AssetKind,
    Dataset,
    DatasetItem,
    Grant,
    MediaType,
    Project,
    ProjectMember,
)
from enclave.deid.profiles import load_profile
from enclave.errors import EnclaveError, NotFound, PermissionDenied, ValidationError

__all__ = ["derive", "projects_using_output"]

log = logging.getLogger(__name__)

DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
ITEM_PREFIX = "clips"


def derive(
    catalog: Any,
    vault: Any,
    audit: Any,
    asset_ids: Sequence[str],
    *,
    profile: str,
    dataset_name: str,
    actor: str,
    source: str = "cli",
    **options: Any,
) -> Dataset:
    """De-identify source assets and publish them as one dataset.

    Parameters
    ----------
    catalog, vault, audit
        The installation's :class:`~enclave.catalog.db.Catalog`,
        :class:`~enclave.vault.Vault` and :class:`~enclave.audit.AuditLog`.
    asset_ids
        Ids of source assets, in the order of the items ``clips/0001``, ...
    profile
        The de-identification profile, e.g. ``"baseline"``.
    dataset_name
        Name of the new dataset: lower-case letters, digits, ``.``, ``_``, ``-``.
    actor
        The data steward who runs the derivation. A steward who is a member of
        a project that holds the dataset may not prepare it.
    **options
        Profile options, e.g. ``keep_ranges=[(0, 10)]``.

    Returns
    -------
    Dataset
        The published dataset with its items, detached from the session.

    Raises
    ------
    ValidationError
        If the name, profile or options are invalid, the name is taken, an
        asset is not a source or the sources differ in category.
    NotFound
        If an asset does not exist or was destroyed.
    PermissionDenied
        If ``actor`` is a member of a project that uses the dataset (audited).
    ResidualCheckFailed, DeidentificationError
        If a source cannot be de-identified; nothing is published.
    """
    resolved = load_profile(profile, **options)
    _check_request(asset_ids, dataset_name, actor)
    sources = _load_sources(catalog, asset_ids, dataset_name)
    _check_separation(catalog, audit, actor, dataset_name, asset_ids, profile, source)

    stored: list[Asset] = []
    try:
        # _derive_all appends each derivative as soon as it is stored, so
        # that a failure part-way still finds them here to delete.
        _derive_all(
            catalog,
            vault,
            audit,
            sources,
            resolved,
            dataset_name,
            actor,
            source,
            options,
            stored,
        )
        dataset = _publish(
            catalog, audit, sources, stored, resolved.name, dataset_name, actor, source
        )
    except BaseException as exc:
        _discard(catalog, vault, stored)
        _audit_failure(audit, actor, dataset_name, profile, asset_ids, exc, source)
        raise
    log.info(
        "derived dataset %s with %d items (profile %s)",
        dataset_name,
        len(stored),
        profile,
    )
    return dataset


def _check_request(asset_ids: Sequence[str], dataset_name: str, actor: str) -> None:
    if isinstance(asset_ids, str) or not asset_ids:
        raise ValidationError(
            "no asset ids given; pass the ids of one or more source assets"
        )
    if len(set(asset_ids)) != len(asset_ids):
        raise ValidationError("an asset id is given twice; pass each source once")
    if not DATASET_NAME.match(dataset_name or ""):
        raise ValidationError(
            f"dataset name {dataset_name!r} is invalid; use 1-128 lower-case letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )
    if not actor or not actor.strip():
        raise ValidationError(
            "the actor is missing; pass the user who runs the derivation"
        )


def _load_sources(
    catalog: Any, asset_ids: Sequence[str], dataset_name: str
) -> list[dict[str, Any]]:
    with catalog.session() as session:
        if session.scalars(select(Dataset).where(Dataset.name == dataset_name)).first():
            raise ValidationError(
                f"dataset {dataset_name!r} already exists; choose another name"
            )
        sources = []
        for asset_id in asset_ids:
            asset = session.get(Asset, asset_id)
            if asset is None:
                raise NotFound(
                    f"asset {asset_id!r} not found; check the id with 'enclave ingest'"
                )
            if asset.destroyed_at is not None or asset.data_key is None:
                raise NotFound(f"asset {asset_id} has been destroyed")
            if asset.kind != AssetKind.SOURCE:
                raise ValidationError(
                    f"asset {asset_id} is a derivative; derive datasets from "
                    "source assets"
                )
            sources.append(
                {
                    "asset": asset,
                    "id": asset.id,
                    "category": asset.category,
                    "level": asset.level,
                    "media_type": asset.media_type,
                }
            )
            session.expunge(asset)
    categories = {s["category"] for s in sources}
    if len(categories) > 1:
        names = ", ".join(sorted(c.value for c in categories))
        raise ValidationError(
            f"the assets span several categories ({names}); derive one dataset "
            "per category"
        )
    return sources


def projects_using_output(
    session: Any, actor: str, dataset_name: str, source_ids: Sequence[str] = ()
) -> list[str]:
    """Return the projects with member ``actor`` that would use this derivation.

    Those are the projects that hold dataset ``dataset_name``, and those that
    hold another dataset derived from one of ``source_ids``. A project holds a
    dataset through a grant that is not revoked; removed members do not count.
    """
    member_of = (
        select(Project.name)
        .join(ProjectMember, ProjectMember.project_id == Project.id)
        .join(Grant, Grant.project_id == Project.id)
        .join(Dataset, Dataset.id == Grant.dataset_id)
        .where(
            ProjectMember.username == actor,
            ProjectMember.removed_at.is_(None),
            Grant.revoked_at.is_(None),
        )
    )
    names = set(session.scalars(member_of.where(Dataset.name == dataset_name)))
    if source_ids:
        same_sources = (
            member_of.join(DatasetItem, DatasetItem.dataset_id == Dataset.id)
            .join(Asset, Asset.id == DatasetItem.asset_id)
            .where(Asset.source_id.in_(list(source_ids)))
        )
        names.update(session.scalars(same_sources))
    return sorted(names)


def _check_separation(
    catalog: Any,
    audit: Any,
    actor: str,
    dataset_name: str,
    asset_ids: Sequence[str],
    profile: str,
    source: str,
) -> None:
    # Separation of duties: whoever prepares a dataset must not be able to
    # read it as a researcher, so that one person cannot both see identifiable
    # sources and analyse the output.
    with catalog.session() as session:
        projects = projects_using_output(session, actor, dataset_name, asset_ids)
    if not projects:
        return
    audit.append(
        actor=actor,
        action="dataset.derive",
        outcome="denied",
        source=source,
        dataset=dataset_name,
        detail={
            "profile": profile,
            "reason": "actor is a member of a project using it",
            "projects": projects,
        },
    )
    raise PermissionDenied(
        f"{actor!r} is a member of project(s) {', '.join(projects)} that use "
        f"dataset {dataset_name!r} or data derived from the same sources; a data "
        "steward who is not a member must run the derivation"
    )


def _derive_all(
    catalog: Any,
    vault: Any,
    audit: Any,
    sources: list[dict[str, Any]],
    resolved: Any,
    dataset_name: str,
    actor: str,
    source: str,
    options: dict[str, Any],
    stored: list[Asset],
) -> None:
    from enclave.deid.api import deidentify_bytes
    from enclave.deid.identifiers import IdentifierPolicy
    from enclave.ingest import store_asset
    from enclave.vault import open_asset

    identifiers = IdentifierPolicy.for_profile(resolved, vault)
    uid_map: dict[str, str] = {}
    order = list(sources)
    if identifiers.mode != "none":
        # Without a link back, the item order must not follow the order of
        # the sources either.
        secrets.SystemRandom().shuffle(order)
    for number, item in enumerate(order, start=1):
        with open_asset(vault, item["asset"]) as reader:
            data = reader.read()
        name = "source.dcm" if item["media_type"] == MediaType.DICOM else "source.mp4"
        result = deidentify_bytes(
            data,
            name,
            resolved.name,
            uid_map=uid_map,
            pseudonym_key=identifiers.pseudonym_key,
            **options,
        )
        del data

        report = dict(result.report)
        report["identifiers"] = identifiers.describe(item["id"], dataset_name)
        identifiers.scrub_report(report)
        asset = store_asset(
            catalog,
            vault,
            audit,
            result.data,
            name=f"{dataset_name}-{number:04d}{result.suffix}",
            kind=AssetKind.DERIVATIVE,
            category=item["category"],
            level=item["level"],
            source_id=identifiers.source_link(item["id"]),
            profile=resolved.name,
            deid_report=report,
            actor=actor,
            source=source,
        )
        stored.append(asset)
    identifiers.finish(uid_map)


def _publish(
    catalog: Any,
    audit: Any,
    sources: list[dict[str, Any]],
    stored: list[Asset],
    profile: str,
    dataset_name: str,
    actor: str,
    source: str,
) -> Dataset:
    # NOTE: the dataset keeps the highest level of its sources; a profile
    # could justify a lower one, which the level rules do not define yet.
    level = max(s["level"] for s in sources)
    # The trail records which derivative came from which source only for
    # profiles that keep the link.
    linked = {}
    if all(asset.source_id is not None for asset in stored):
        linked = {"derivatives": [a.id for a in stored]}
    with catalog.session(immediate=True) as session:
        dataset = Dataset(
            name=dataset_name,
            category=sources[0]["category"],
            level=level,
            profile=profile,
            created_by=actor,
            description=f"{len(stored)} clips de-identified with profile {profile}",
        )
        session.add(dataset)
        for number, asset in enumerate(stored, start=1):
            session.add(
                DatasetItem(
                    dataset=dataset,
                    asset_id=asset.id,
                    path=f"{ITEM_PREFIX}/{number:04d}",
                )
            )
        session.flush()
        audit.append(
            actor=actor,
            action="dataset.derive",
            outcome="success",
            source=source,
            target=dataset.id,
            dataset=dataset_name,
            detail={
                "profile": profile,
                "sources": sorted(s["id"] for s in sources),
                "items": len(stored),
                **linked,
            },
            session=session,
        )
        session.flush()
        items = list(dataset.items)
        for entry in items:
            session.expunge(entry)
        session.expunge(dataset)
    return dataset


def _discard(catalog: Any, vault: Any, stored: list[Asset]) -> None:
    """Delete the derivatives of a failed run: rows, data keys and blobs."""
    if not stored:
        return
    from enclave.catalog.models import DataKey

    with catalog.session() as session:
        for asset in stored:
            key = session.get(DataKey, asset.id)
            if key is not None:
                session.delete(key)
            row = session.get(Asset, asset.id)
            if row is not None:
                session.delete(row)
    for asset in stored:
        vault.delete(asset.blob_id, missing_ok=True)
    log.warning("deleted %d derivatives of a failed derivation", len(stored))


def _audit_failure(
    audit: Any,
    actor: str,
    dataset_name: str,
    profile: str,
    asset_ids: Sequence[str],
    exc: BaseException,
    source: str,
) -> None:
    if isinstance(exc, PermissionDenied):
        return
    try:
        audit.append(
            actor=actor,
            action="dataset.derive",
            outcome="failure",
            source=source,
            dataset=dataset_name,
            detail={
                "profile": profile,
                "sources": list(asset_ids),
                "error": type(exc).__name__,
            },
        )
    except EnclaveError:
        log.error(
            "cannot record the failed derivation of %s in the audit trail", dataset_name
        )
