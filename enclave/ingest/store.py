"""Store probed files in the vault and record them in the catalog and audit trail."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclave.catalog.models import Asset, AssetKind, Category, DataKey, new_id
from enclave.errors import AuditUnavailable, IngestError, NotFound, ValidationError
from enclave.ingest.probe import probe, probe_bytes
from enclave.ingest.result import ProbeResult
from enclave.policy import check_category, check_level
from enclave.vault import StoredBlob, Vault

if TYPE_CHECKING:
    from enclave.audit import AuditLog
    from enclave.catalog.db import Catalog

__all__ = ["CONSENT_REQUIRED_FROM_LEVEL", "check_consent", "ingest_file", "store_asset"]

log = logging.getLogger(__name__)

CONSENT_REQUIRED_FROM_LEVEL = 3
"""Lowest level whose source video involves patients and needs a consent reference."""


def check_consent(level: int, consent_ref: str | None) -> None:
    """Raise ValidationError if a source of ``level`` lacks a consent reference."""
    if level >= CONSENT_REQUIRED_FROM_LEVEL and not (consent_ref or "").strip():
        raise ValidationError(
            f"level {level} video involves patients, so it needs a consent "
            f"reference (levels {CONSENT_REQUIRED_FROM_LEVEL} to 5); pass "
            "consent_ref (--consent REF on the command line)"
        )


def ingest_file(
    catalog: Catalog,
    vault: Vault,
    audit: AuditLog,
    path: str | os.PathLike[str],
    *,
    category: Category | str,
    level: int,
    consent_ref: str | None = None,
    ethics_ref: str | None = None,
    actor: str,
    source: str = "cli",
) -> Asset:
    """Probe a source file, encrypt it into the vault and catalog it.

    The asset, its wrapped data key and the ``asset.ingest`` audit record are
    written in one transaction. If anything fails after the ciphertext is
    written, the blob is deleted again, so no partial asset remains.

    Parameters
    ----------
    catalog, vault, audit
        Where the asset is recorded, stored and audited.
    path
        The video or DICOM file. Only its base name is stored and audited.
    category
        diagnosis, nursing, monitoring or teaching.
    level
        1 to 5; levels 3 to 5 need ``consent_ref``.
    consent_ref, ethics_ref
        References to the patient's consent and the ethics approval.
    actor
        The user who ingests the file.
    source
        The process that records the audit event.

    Returns
    -------
    Asset
        The stored asset, detached from its session, with its data key loaded.

    Raises
    ------
    IngestError
        If the file is missing, not an accepted video or DICOM file,
        truncated or damaged, or changed while it was stored.
    ValidationError
        If the category, level or consent reference is invalid.
    AuditUnavailable
        If the audit record cannot be written; nothing was stored.
    """
    path = Path(path)
    category = check_category(category)
    level = check_level(level)
    check_consent(level, consent_ref)
    _check_actor(actor)

    try:
        result = probe(path)
    except IngestError as exc:
        _audit_rejection(audit, actor, source, path, exc)
        raise

    blob = vault.write(path)
    try:
        # The file was read twice, by the probe and by the vault: make sure
        # the stored bytes are the bytes that were probed.
        if blob.plaintext_sha256 != result.sha256:
            raise IngestError(
                f"{path}: the file changed while it was being stored; ingest it "
                "again once nothing writes to it"
            )
        return _record(
            catalog,
            audit,
            blob,
            result,
            vault=vault,
            kind=AssetKind.SOURCE,
            name=path.name,
            category=category,
            level=level,
            consent_ref=consent_ref,
            ethics_ref=ethics_ref,
            actor=actor,
            source=source,
        )
    except BaseException:
        vault.delete(blob.blob_id, missing_ok=True)
        raise


def store_asset(
    catalog: Catalog,
    vault: Vault,
    audit: AuditLog,
    data: bytes,
    *,
    name: str,
    kind: AssetKind | str = AssetKind.DERIVATIVE,
    category: Category | str,
    level: int,
    source_id: str | None,
    profile: str | None,
    deid_report: dict[str, Any] | None,
    actor: str,
    source: str = "cli",
) -> Asset:
    """Probe an in-memory file, such as a de-identified derivative, and store it.

    The derivative inherits the consent and ethics references of its source
    asset. The asset, its data key and its ``asset.ingest`` audit record are
    written in one transaction; on failure the blob is deleted again.

    Parameters
    ----------
    data
        The complete file.
    name
        File name; its extension must match the content (``clip.mp4``).
    kind
        ``derivative`` (the default) or ``source``.
    source_id
        Id of the asset the derivative was made from.
    profile, deid_report
        The de-identification profile and its report.

    Returns
    -------
    Asset
        The stored asset, detached from its session, with its data key loaded.
    """
    kind = AssetKind(kind)
    category = check_category(category)
    level = check_level(level)
    _check_actor(actor)
    result = probe_bytes(data, name)

    consent_ref = ethics_ref = None
    if source_id is not None:
        with catalog.session() as session:
            parent = session.get(Asset, source_id)
            if parent is None:
                raise NotFound(f"source asset {source_id} not found in the catalog")
            consent_ref, ethics_ref = parent.consent_ref, parent.ethics_ref

    blob = vault.write(data)
    try:
        return _record(
            catalog,
            audit,
            blob,
            result,
            vault=vault,
            kind=kind,
            name=name,
            category=category,
            level=level,
            consent_ref=consent_ref,
            ethics_ref=ethics_ref,
            actor=actor,
            source=source,
            source_id=source_id,
            profile=profile,
            deid_report=deid_report,
        )
    except BaseException:
        vault.delete(blob.blob_id, missing_ok=True)
        raise


def _record(
    catalog: Catalog,
    audit: AuditLog,
    blob: StoredBlob,
    result: ProbeResult,
    *,
    vault: Vault,
    kind: AssetKind,
    name: str,
    category: Category,
    level: int,
    consent_ref: str | None,
    ethics_ref: str | None,
    actor: str,
    source: str,
    source_id: str | None = None,
    profile: str | None = None,
    deid_report: dict[str, Any] | None = None,
) -> Asset:
    """Insert the asset and its data key and append the audit record, atomically."""
    asset = Asset(
        id=new_id(),
        kind=kind,
        category=category,
        level=level,
        original_name=name[:255],
        consent_ref=consent_ref,
        ethics_ref=ethics_ref,
        blob_id=blob.blob_id,
        plaintext_size=blob.plaintext_size,
        plaintext_sha256=blob.plaintext_sha256,
        chunk_size=blob.chunk_size,
        source_id=source_id,
        profile=profile,
        deid_report=deid_report,
        created_by=actor,
        **result.asset_fields(),
    )
    asset.data_key = DataKey(
        master_key_id=blob.master_key_id, wrapped_key=blob.wrapped_key
    )
    detail = {
        "asset_id": asset.id,
        "kind": kind.value,
        "name": name,
        "category": category.value,
        "level": level,
        "media_type": result.media_type.value,
        "plaintext_size": blob.plaintext_size,
        "plaintext_sha256": blob.plaintext_sha256,
        "stored_size": vault.path_of(blob.blob_id).stat().st_size,
        "probe": _probe_summary(result),
        "consent_ref": consent_ref,
        "ethics_ref": ethics_ref,
        "source_id": source_id,
        "profile": profile,
    }

    with catalog.session(immediate=True) as session:
        session.add(asset)
        audit.append(
            actor=actor,
            action="asset.ingest",
            outcome="success",
            source=source,
            target=asset.id,
            detail=detail,
            session=session,
        )
    log.info("stored %s asset %s (%d bytes)", kind.value, asset.id, blob.plaintext_size)
    return asset


def _probe_summary(result: ProbeResult) -> dict[str, Any]:
    return {
        "container": result.container,
        "video_codec": result.video_codec,
        "width": result.width,
        "height": result.height,
        "fps": round(result.fps, 3),
        "duration_s": round(result.duration_s, 3),
        "frame_count": result.frame_count,
        "rotation": result.rotation,
        "variable_frame_rate": result.variable_frame_rate,
        "has_audio": result.has_audio,
    }


def _audit_rejection(
    audit: AuditLog, actor: str, source: str, path: Path, error: IngestError
) -> None:
    # Record the refusal with the base name only: the folder of a source file
    # often names the patient.
    reason = str(error).replace(str(path), path.name)
    try:
        audit.append(
            actor=actor,
            action="asset.ingest",
            outcome="failure",
            source=source,
            detail={"name": path.name, "reason": reason},
        )
    except AuditUnavailable as exc:
        # Nothing was stored, so the file is still rejected.
        log.error("cannot audit the rejected ingest of %s: %s", path.name, exc)


def _check_actor(actor: str) -> None:
    if not isinstance(actor, str) or not actor.strip():
        raise ValidationError("actor is missing; pass the name of the user who acts")
